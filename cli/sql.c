/* sql.c — `mapsage sql`: one read-only statement over the history (POST /api/sql,
 * docs/sql.md), printed as an aligned table for people, as RFC 4180 CSV, or as the server's
 * JSON laid out to read. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* ---------------------------------------------------------------------------------------
 * sql: one read-only statement over the history (POST /api/sql, docs/sql.md), printed as
 * an aligned table for people, as RFC 4180 CSV, or as the server's JSON laid out to read.
 * The table is for eyes: numbers to 6 significant digits, NULL empty, control characters
 * escaped, long text cut. CSV and JSON carry every value as the server sent it. */

/* Well above the daemon's 64 KiB statement limit, so the daemon words the refusal. */
#define SQL_FILE_LIMIT (16u << 20)
/* Table cells (and headers) wider than this are cut with "…": one JSON config would
 * otherwise push every other column off the screen. */
#define SQL_CELL_COLUMNS 80

/* A --param: a JSON number, true, false or null goes as that value; a JSON string literal
 * ("\"42\"") as the string inside it, so text that looks like a number can be forced;
 * anything else as the text itself. NULL when the text is not valid UTF-8. */
static json_t *sql_param_value(const char *text) {
  json_t *value = json_loads(text, JSON_DECODE_ANY, NULL);
  if (json_is_number(value) || json_is_boolean(value) || json_is_null(value) || json_is_string(value))
    return value;
  json_decref(value);
  return json_string(text);
}

/* A REAL with every digit it has: the fewest significant digits (15 to 17) that read back
 * as the same double, with ".0" kept on whole numbers so a REAL still looks like one. */
static void sql_format_real(double value, char *out, size_t size) {
  for (int precision = 15; precision <= 17; precision++) {
    snprintf(out, size, "%.*g", precision, value);
    if (strtod(out, NULL) == value) break;
  }
  if (strspn(out, "-0123456789") == strlen(out) && strlen(out) + 2 < size) strcat(out, ".0");
}

/* Appends `length` bytes of `text` with control characters written as escapes (\n, \t,
 * \r, \x00, \x1b, \u009b): a logged line must neither break the table's rows nor move the
 * cursor or recolour the terminal. */
static int sql_append_escaped(buffer_t *buffer, const char *text, size_t length) {
  const unsigned char *end = (const unsigned char *)text + length;
  for (const unsigned char *p = (const unsigned char *)text; p < end; p++) {
    int result;
    if (*p == '\n') result = buffer_append_text(buffer, "\\n");
    else if (*p == '\t') result = buffer_append_text(buffer, "\\t");
    else if (*p == '\r') result = buffer_append_text(buffer, "\\r");
    else if (*p < 0x20 || *p == 0x7f) result = buffer_printf(buffer, "\\x%02x", *p);
    else if (*p == 0xc2 && p + 1 < end && p[1] >= 0x80 && p[1] <= 0x9f) result = buffer_printf(buffer, "\\u%04x", *++p);
    else result = buffer_append(buffer, p, 1);
    if (result != 0) return result;
  }
  return 0;
}

/* A value as the table shows it, appended to `cell` (escaped and cut). */
static int sql_table_cell(buffer_t *cell, buffer_t *scratch, const json_t *value) {
  char number[64];
  const char *text;
  size_t length;
  if (value == NULL || json_is_null(value)) return 0;
  if (json_is_number(value)) {
    /* 6 significant digits, and a whole REAL still looks like a REAL (1.0, not 1). */
    format_number(value, number, sizeof number);
    if (json_is_real(value) && json_real_value(value) == floor(json_real_value(value)) &&
        strspn(number, "-0123456789") == strlen(number))
      strcat(number, ".0");
    text = number;
    length = strlen(number);
  } else if (json_is_boolean(value)) {
    text = json_is_true(value) ? "true" : "false";
    length = strlen(text);
  } else if (json_is_string(value)) {
    text = json_string_value(value);
    length = json_string_length(value); /* text may hold NULs */
  } else {
    return format_append_cut(cell, "?", SQL_CELL_COLUMNS);
  }
  buffer_clear(scratch);
  int result = buffer_append_text(scratch, "");
  if (result == 0) result = sql_append_escaped(scratch, text, length);
  if (result == 0) result = format_append_cut(cell, buffer_text(scratch), SQL_CELL_COLUMNS);
  return result;
}

/* Adds one row of `values` (a JSON array, or the column names) to the table; a row shorter
 * than the header is padded with NULLs. */
static int sql_add_row(table_t *table, const json_t *values, buffer_t *cells, buffer_t *scratch,
                       size_t *offsets, const char **pointers) {
  buffer_clear(cells);
  for (size_t column = 0; column < table->columns; column++) {
    offsets[column] = cells->length;
    int result = sql_table_cell(cells, scratch, json_array_get(values, column));
    if (result == 0) result = buffer_append(cells, "", 1); /* each cell ends with its NUL */
    if (result != 0) return result;
  }
  for (size_t column = 0; column < table->columns; column++) pointers[column] = cells->data + offsets[column];
  return table_add_row(table, pointers);
}

static int sql_print_table(const json_t *columns, const json_t *rows) {
  size_t n_columns = json_array_size(columns);
  if (n_columns == 0) return CLI_EXIT_OK; /* a statement without a result, nothing to draw */
  table_align_t *align = calloc(n_columns, sizeof *align);
  size_t *offsets = calloc(n_columns, sizeof *offsets);
  const char **pointers = calloc(n_columns, sizeof *pointers);
  buffer_t cells = {0}, scratch = {0};
  table_t table = {0};
  int exit_code = CLI_EXIT_FAILED;
  if (align == NULL || offsets == NULL || pointers == NULL) goto out_of_memory;

  /* A column is right-aligned when what it holds is numbers (NULLs aside): SQLite's
   * columns have no type of their own, so look at the values. */
  for (size_t column = 0; column < n_columns; column++) {
    int numbers = 0, others = 0;
    size_t i;
    const json_t *row;
    json_array_foreach(rows, i, row) {
      const json_t *value = json_array_get(row, column);
      if (json_is_number(value)) numbers++;
      else if (value != NULL && !json_is_null(value)) others++;
    }
    align[column] = numbers > 0 && others == 0 ? TABLE_RIGHT : TABLE_LEFT;
  }

  table_init(&table, n_columns, align);
  table.rule = 1;
  if (sql_add_row(&table, columns, &cells, &scratch, offsets, pointers) != 0) goto out_of_memory;
  size_t i;
  const json_t *row;
  json_array_foreach(rows, i, row) {
    if (sql_add_row(&table, row, &cells, &scratch, offsets, pointers) != 0) goto out_of_memory;
  }
  table_print(&table, stdout);
  exit_code = CLI_EXIT_OK;
  goto done;
out_of_memory:
  exit_code = cli_out_of_memory();
done:
  table_free(&table);
  buffer_free(&cells);
  buffer_free(&scratch);
  free(pointers);
  free(offsets);
  free(align);
  return exit_code;
}

/* One CSV field (RFC 4180). NULL is an empty field and the empty string a quoted one (""),
 * as PostgreSQL's COPY writes them, so the two stay apart for readers that care. */
static void sql_csv_field(const json_t *value, FILE *out) {
  char number[64];
  if (value == NULL || json_is_null(value)) return;
  if (json_is_integer(value)) {
    fprintf(out, "%lld", (long long)json_integer_value(value));
  } else if (json_is_real(value)) {
    sql_format_real(json_real_value(value), number, sizeof number);
    fputs(number, out);
  } else if (json_is_boolean(value)) {
    fputs(json_is_true(value) ? "true" : "false", out);
  } else if (json_is_string(value)) {
    const char *text = json_string_value(value);
    size_t length = json_string_length(value); /* the bytes as they are, NULs included */
    int quote = length == 0;
    for (size_t i = 0; i < length && !quote; i++) quote = strchr(",\"\r\n", text[i]) != NULL && text[i] != '\0';
    if (!quote) {
      fwrite(text, 1, length, out);
      return;
    }
    fputc('"', out);
    for (size_t i = 0; i < length; i++) {
      if (text[i] == '"') fputc('"', out);
      fputc(text[i], out);
    }
    fputc('"', out);
  }
}

/* The header, then the rows; lines end with CRLF, as RFC 4180 says. */
static void sql_print_csv(const json_t *columns, const json_t *rows) {
  size_t n_columns = json_array_size(columns);
  for (size_t column = 0; column < n_columns; column++) {
    if (column > 0) fputc(',', stdout);
    sql_csv_field(json_array_get(columns, column), stdout);
  }
  fputs("\r\n", stdout);
  size_t i;
  const json_t *row;
  json_array_foreach(rows, i, row) {
    for (size_t column = 0; column < n_columns; column++) {
      if (column > 0) fputc(',', stdout);
      sql_csv_field(json_array_get(row, column), stdout);
    }
    fputs("\r\n", stdout);
  }
}

static void sql_newline(int depth, FILE *out) {
  fputc('\n', out);
  for (int i = 0; i < depth; i++) fputs("  ", out);
}

/* Writes the server's answer (`text`, known to be a JSON object) laid out for reading: one
 * member of the object a line and one row a line, every token exactly as the server wrote
 * it, so numbers keep their digits and strings their escapes. Only the layout changes. */
static void sql_print_json(const char *text, size_t length, FILE *out) {
  int depth = 0;
  int broken[3] = {0}; /* whether the containers at depths 1 and 2 put a member a line */
  int rows_key = 0;    /* whether the last string seen in the top object was "rows" */
  for (size_t i = 0; i < length; i++) {
    char c = text[i];
    if (c == '"') {
      size_t start = i;
      for (i++; i < length && text[i] != '"'; i++)
        if (text[i] == '\\') i++;
      fwrite(text + start, 1, i - start + 1, out);
      if (depth == 1) rows_key = i - start == 5 && memcmp(text + start, "\"rows", 5) == 0;
    } else if (c == '{' || c == '[') {
      size_t next = i + 1 + strspn(text + i + 1, " \t\r\n");
      int empty = next < length && (text[next] == '}' || text[next] == ']');
      fputc(c, out);
      depth++;
      int breaks = !empty && (depth == 1 || (depth == 2 && c == '[' && rows_key));
      if (depth < 3) broken[depth] = breaks;
      if (breaks) sql_newline(depth, out);
    } else if (c == '}' || c == ']') {
      if (depth > 0 && depth < 3 && broken[depth]) sql_newline(depth - 1, out);
      fputc(c, out);
      depth--;
    } else if (c == ',') {
      fputc(',', out);
      if (depth > 0 && depth < 3 && broken[depth]) sql_newline(depth, out);
      else fputc(' ', out);
    } else if (c == ':') {
      fputs(": ", out);
    } else if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
      fputc(c, out);
    }
  }
  fputc('\n', out);
}

int command_sql(const cli_global_t *global, int argc, char **argv) {
  const char *statement = NULL;
  int csv = 0, json = global->json;
  char *text = NULL, *body = NULL;
  json_t *params = json_array(), *request = NULL, *answer = NULL;
  client_t client = {0};
  client_response_t response = {0};
  int exit_code = CLI_EXIT_FAILED;
  if (params == NULL) return cli_out_of_memory();

  options_t parser;
  cli_options_init(&parser, "sql", argc, argv);
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    if (key == CLI_OPTION_PARAM) {
      json_t *param = sql_param_value(parser.value);
      if (param == NULL) {
        exit_code = cli_usage_error("sql", "--param %zu: the value is not valid UTF-8", json_array_size(params) + 1);
        goto done;
      }
      if (json_array_append_new(params, param) != 0) {
        exit_code = cli_out_of_memory();
        goto done;
      }
    } else if (key == CLI_OPTION_CSV) {
      csv = 1;
    } else if (key == CLI_OPTION_JSON) {
      json = 1;
    } else if (key == OPTIONS_ARGUMENT && statement != NULL) {
      exit_code = cli_usage_error("sql", "one statement at a time; quote it as one argument: "
                                  "mapsage sql \"SELECT …\"");
      goto done;
    } else if (key == OPTIONS_ARGUMENT) {
      statement = parser.value;
    } else {
      exit_code = cli_options_default(&parser, "sql", key);
      goto done;
    }
  }
  if (csv && json) {
    exit_code = cli_usage_error("sql", "--csv or --json, not both");
    goto done;
  }
  if (statement == NULL) {
    exit_code = cli_usage_error("sql", "which statement? give it in quotes, or - to read it from standard input");
    goto done;
  }

  if (strcmp(statement, "-") == 0) {
    if (isatty(STDIN_FILENO))
      fprintf(stderr, "mapsage: reading the statement from standard input (end it with Ctrl-D)\n");
    size_t length = 0;
    int result = util_read_file("-", SQL_FILE_LIMIT, &text, &length);
    if (result != 0) {
      fprintf(stderr, "mapsage: cannot read standard input: %s\n",
              result == -EFBIG ? "larger than 16 MiB, so not a statement" : strerror(-result));
      exit_code = CLI_EXIT_USAGE;
      goto done;
    }
    if (strlen(text) != length) {
      fprintf(stderr, "mapsage: the statement on standard input contains a NUL byte\n");
      exit_code = CLI_EXIT_USAGE;
      goto done;
    }
    statement = text;
  }
  json_t *sql_text = json_string(statement);
  if (sql_text == NULL) {
    exit_code = cli_usage_error("sql", "the statement is not valid UTF-8");
    goto done;
  }
  request = json_pack("{s:o, s:O}", "sql", sql_text, "params", params);
  body = request != NULL ? json_dumps(request, JSON_COMPACT) : NULL;
  if (body == NULL) {
    exit_code = cli_out_of_memory();
    goto done;
  }

  exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "POST", "/api/sql", body, strlen(body), &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code != CLI_EXIT_OK) goto done;
  /* Not client_parse: SQLite text may hold NUL characters, which JSON carries as \u0000. */
  json_error_t parse_error;
  answer = json_loadb(buffer_text(&response.body), response.body.length, JSON_ALLOW_NUL, &parse_error);
  if (!json_is_object(answer)) {
    fprintf(stderr, "mapsage: the server's answer to POST /api/sql is not a JSON object%s%s\n",
            answer == NULL ? ": " : "", answer == NULL ? parse_error.text : "");
    exit_code = CLI_EXIT_FAILED;
    goto done;
  }
  const json_t *columns = json_object_get(answer, "columns"), *rows = json_object_get(answer, "rows");
  if (!json_is_array(columns) || !json_is_array(rows)) {
    fprintf(stderr, "mapsage: the server's answer to POST /api/sql has no \"columns\" and \"rows\" arrays\n");
    exit_code = CLI_EXIT_FAILED;
    goto done;
  }

  if (json) {
    sql_print_json(buffer_text(&response.body), response.body.length, stdout);
  } else if (csv) {
    sql_print_csv(columns, rows);
  } else {
    exit_code = sql_print_table(columns, rows);
    if (exit_code != CLI_EXIT_OK) goto done;
    size_t count = json_array_size(rows);
    double elapsed = 0;
    format_json_number(answer, "elapsed_ms", &elapsed);
    fflush(stdout); /* the footer comes after the table on a terminal that shows both */
    fprintf(stderr, "(%zu row%s, %.*f ms)\n", count, count == 1 ? "" : "s", elapsed < 1 ? 2 : 1, elapsed);
  }
  /* Whatever the format: a cut answer must not pass for a whole one, and a value marked by
   * the server (text that was not UTF-8) must not pass for what was stored. The server's
   * warning says which limit cut it and which columns were marked. */
  const char *warning = format_json_string(answer, "warning");
  if (warning != NULL || json_is_true(json_object_get(answer, "truncated"))) {
    fflush(stdout);
    if (warning != NULL) fprintf(stderr, "mapsage: %s\n", warning);
    else fprintf(stderr, "(truncated after %zu rows)\n", json_array_size(rows));
  }
  /* A row with fewer values than there are columns was shown padded with NULLs. */
  size_t i;
  const json_t *row;
  json_array_foreach(rows, i, row) {
    if (json_array_size(row) != json_array_size(columns)) {
      fprintf(stderr, "mapsage: row %zu of the answer has %zu values for %zu columns\n", i + 1,
              json_array_size(row), json_array_size(columns));
      break;
    }
  }

done:
  free(text);
  free(body);
  json_decref(params);
  json_decref(request);
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}
