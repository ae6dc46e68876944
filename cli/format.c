/* format.c — turning the API's values into text for people: times, ages, durations,
 * numbers, tables aligned by what a terminal shows rather than by bytes (experiment names
 * are often Chinese, two columns a character), and the live line the watch commands keep
 * rewriting. Nothing here talks to the server or decides an exit code. */
#include "cli.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/ioctl.h>
#include <unistd.h>

int format_parse_time(const char *text, double *seconds) {
  if (text == NULL) return -EINVAL;
  struct tm fields = {0};
  int consumed = 0;
  if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &fields.tm_year, &fields.tm_mon, &fields.tm_mday,
             &fields.tm_hour, &fields.tm_min, &fields.tm_sec, &consumed) != 6)
    return -EINVAL;
  double fraction = 0;
  const char *rest = text + consumed;
  if (*rest == '.') {
    char *end;
    fraction = strtod(rest, &end);
    rest = end;
  }
  if (*rest != 'Z' && *rest != '\0') return -EINVAL; /* the API only speaks UTC */
  fields.tm_year -= 1900;
  fields.tm_mon -= 1;
  time_t whole = timegm(&fields);
  if (whole == (time_t)-1) return -EINVAL;
  *seconds = (double)whole + fraction;
  return 0;
}

void format_duration(double seconds, char *out, size_t size) {
  if (!(seconds >= 0)) seconds = 0; /* clocks of two machines may disagree a little */
  long long s = (long long)seconds;
  if (seconds < 1 && seconds != 0)
    snprintf(out, size, "%.2fs", seconds);
  else if (seconds < 10 && seconds != (double)s)
    snprintf(out, size, "%.1fs", seconds);
  else if (s < 60)
    snprintf(out, size, "%llds", s);
  else if (s < 3600)
    snprintf(out, size, "%lldm%02llds", s / 60, s % 60);
  else if (s < 86400)
    snprintf(out, size, "%lldh%02lldm", s / 3600, s % 3600 / 60);
  else
    snprintf(out, size, "%lldd%lldh", s / 86400, s % 86400 / 3600);
}

void format_age(double seconds, char *out, size_t size) {
  if (!(seconds >= 0)) seconds = 0;
  long long s = (long long)seconds;
  if (s < 60)
    snprintf(out, size, "%llds", s);
  else if (s < 3600)
    snprintf(out, size, "%lldm", s / 60);
  else if (s < 86400)
    snprintf(out, size, "%lldh", s / 3600);
  else
    snprintf(out, size, "%lldd", s / 86400);
}

void format_local_time(double seconds, char *out, size_t size) {
  time_t whole = (time_t)seconds;
  struct tm fields;
  if (localtime_r(&whole, &fields) == NULL || strftime(out, size, "%Y-%m-%d %H:%M:%S", &fields) == 0)
    snprintf(out, size, "?");
}

void format_number(const json_t *value, char *out, size_t size) {
  if (json_is_integer(value))
    snprintf(out, size, "%lld", (long long)json_integer_value(value));
  else if (json_is_real(value))
    snprintf(out, size, "%.6g", json_real_value(value));
  else
    snprintf(out, size, "-");
}

const char *format_json_string(const json_t *object, const char *key) {
  return json_string_value(json_object_get(object, key));
}

int format_json_integer(const json_t *object, const char *key, long long *value) {
  const json_t *field = json_object_get(object, key);
  if (json_is_integer(field)) {
    *value = json_integer_value(field);
    return 0;
  }
  if (json_is_real(field) && json_real_value(field) == floor(json_real_value(field))) {
    *value = (long long)json_real_value(field);
    return 0;
  }
  return -ENOENT;
}

int format_json_number(const json_t *object, const char *key, double *value) {
  const json_t *field = json_object_get(object, key);
  if (!json_is_number(field)) return -ENOENT;
  *value = json_number_value(field);
  return 0;
}

/* ---------------------------------------------------------------------------------------
 * Display width. Decodes UTF-8 by hand (the client must not depend on the user's locale
 * being UTF-8) and counts the East Asian wide ranges as two columns. Combining marks and
 * other zero-width characters count one: slightly wide, never too narrow to align. */

/* Decodes one character at `text`; returns its length in bytes (1 for an invalid byte). */
static size_t format_decode(const unsigned char *text, uint32_t *code_point) {
  unsigned char c = text[0];
  size_t length = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (length == 0) {
    *code_point = 0xfffd;
    return 1;
  }
  uint32_t value = length == 1 ? c : c & (0x7f >> length);
  for (size_t i = 1; i < length; i++) {
    if ((text[i] & 0xc0) != 0x80) {
      *code_point = 0xfffd;
      return 1;
    }
    value = value << 6 | (text[i] & 0x3f);
  }
  *code_point = value;
  return length;
}

static int format_is_wide(uint32_t c) {
  return (c >= 0x1100 && c <= 0x115f) || (c >= 0x2e80 && c <= 0x303e) ||
         (c >= 0x3041 && c <= 0x33ff) || (c >= 0x3400 && c <= 0x4dbf) ||
         (c >= 0x4e00 && c <= 0x9fff) || (c >= 0xa000 && c <= 0xa4cf) ||
         (c >= 0xac00 && c <= 0xd7a3) || (c >= 0xf900 && c <= 0xfaff) ||
         (c >= 0xfe30 && c <= 0xfe4f) || (c >= 0xff00 && c <= 0xff60) ||
         (c >= 0xffe0 && c <= 0xffe6) || (c >= 0x1f300 && c <= 0x1f64f) ||
         (c >= 0x1f900 && c <= 0x1f9ff) || (c >= 0x20000 && c <= 0x3fffd);
}

size_t format_text_width(const char *text) {
  size_t width = 0;
  const unsigned char *p = (const unsigned char *)text;
  while (*p != '\0') {
    uint32_t c;
    p += format_decode(p, &c);
    width += format_is_wide(c) ? 2 : 1;
  }
  return width;
}

int format_append_cut(buffer_t *buffer, const char *text, size_t columns) {
  if (format_text_width(text) <= columns) return buffer_append_text(buffer, text);
  if (columns == 0) return 0;
  size_t width = 0;
  const unsigned char *p = (const unsigned char *)text;
  while (*p != '\0') {
    uint32_t c;
    size_t length = format_decode(p, &c);
    size_t w = format_is_wide(c) ? 2 : 1;
    if (width + w > columns - 1) break; /* one column for the ellipsis */
    int result = buffer_append(buffer, p, length);
    if (result != 0) return result;
    width += w;
    p += length;
  }
  return buffer_append_text(buffer, "…");
}

/* ---------------------------------------------------------------------------------------
 * table_ */

void table_init(table_t *table, size_t columns, const table_align_t *align) {
  assert(columns >= 1);
  memset(table, 0, sizeof *table);
  table->columns = columns;
  table->align = align;
}

int table_add_row(table_t *table, const char *const *cells) {
  if (table->widths == NULL) {
    table->widths = calloc(table->columns, sizeof *table->widths);
    if (table->widths == NULL) return -ENOMEM;
  }
  if (table->rows == table->capacity) {
    size_t capacity = table->capacity != 0 ? table->capacity * 2 : 16;
    if (capacity > SIZE_MAX / sizeof(char *) / table->columns) return -ENOMEM;
    char **grown = realloc(table->cells, capacity * table->columns * sizeof(char *));
    if (grown == NULL) return -ENOMEM;
    table->cells = grown;
    table->capacity = capacity;
  }
  char **row = table->cells + table->rows * table->columns;
  for (size_t column = 0; column < table->columns; column++) {
    row[column] = strdup(cells[column] != NULL ? cells[column] : "");
    if (row[column] == NULL) {
      while (column > 0) free(row[--column]);
      return -ENOMEM;
    }
  }
  /* Widths only once the whole row is in, so a failed row leaves them as they were. */
  for (size_t column = 0; column < table->columns; column++) {
    size_t width = format_text_width(row[column]);
    if (width > table->widths[column]) table->widths[column] = width;
  }
  table->rows++;
  return 0;
}

void table_print(const table_t *table, FILE *out) {
  for (size_t row = 0; row < table->rows; row++) {
    for (size_t column = 0; column < table->columns; column++) {
      const char *cell = table->cells[row * table->columns + column];
      size_t padding = table->widths[column] - format_text_width(cell);
      int last = column + 1 == table->columns;
      if (table->align[column] == TABLE_RIGHT) fprintf(out, "%*s", (int)padding, "");
      fputs(cell, out);
      if (table->align[column] == TABLE_LEFT && !last) fprintf(out, "%*s", (int)padding, "");
      fputs(last ? "\n" : "   ", out);
    }
    if (row == 0 && table->rule) {
      for (size_t column = 0; column < table->columns; column++) {
        for (size_t i = 0; i < table->widths[column]; i++) fputc('-', out);
        fputs(column + 1 == table->columns ? "\n" : "   ", out);
      }
    }
  }
}

void table_free(table_t *table) {
  for (size_t i = 0; i < table->rows * table->columns; i++) free(table->cells[i]);
  free(table->cells);
  free(table->widths);
  memset(table, 0, sizeof *table);
}

/* ---------------------------------------------------------------------------------------
 * the live line */

static int live_line_columns(void) {
  struct winsize size;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

void live_line_erase(live_line_t *live) {
  if (!live->tty || !live->shown) return;
  fputs("\r\033[K", stdout);
  fflush(stdout);
  live->shown = 0;
  live->dirty = 1;
}

void live_line_say(live_line_t *live, const char *text) {
  if (live->json) return; /* stdout carries the events as JSON lines instead */
  live_line_erase(live);
  fputs(text, stdout);
  fputc('\n', stdout);
  fflush(stdout);
}

void live_line_notice(live_line_t *live, const char *text) {
  live_line_erase(live);
  fprintf(stderr, "mapsage: %s\n", text);
}

void live_line_draw(live_line_t *live, const char *text) {
  live->dirty = 0;
  if (!live->tty) return;
  const int columns = live_line_columns();
  buffer_clear(&live->line);
  if (format_append_cut(&live->line, text, (size_t)(columns > 1 ? columns - 1 : 1)) != 0) return;
  fputs("\r", stdout);
  fputs(buffer_text(&live->line), stdout);
  fputs("\033[K", stdout);
  fflush(stdout);
  live->shown = 1;
}

void live_line_close(live_line_t *live) {
  if (live->tty && live->shown) fputc('\n', stdout);
  live->shown = 0;
  buffer_free(&live->line);
}
