/* json_text.c — JSON written straight into a growing buffer (see json_text.h).
 *
 * Numbers are where the time went: printf's "%.9g" works digit by digit in arbitrary
 * precision, a few hundred nanoseconds a number. Nine significant digits of a double fit
 * in a long double product exactly enough to decide them directly: the value times a
 * power of ten (exact in a long double up to 10^27) is off by less than 1e-10 of a unit,
 * so rounding it to an integer gives printf's digits unless the fraction lies within 1e-6
 * of one half. Such near-ties, and values too small or too large for the table, go to
 * printf itself. */
#include "json_text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void json_text_init(json_text_t *text) { memset(text, 0, sizeof *text); }

void json_text_free(json_text_t *text) {
  free(text->data);
  json_text_init(text);
}

void json_text_clear(json_text_t *text) {
  text->length = 0;
  if (text->data) text->data[0] = '\0';
}

static int reserve(json_text_t *text, size_t extra) {
  if (text->failed) return -1;
  if (text->length + extra + 1 <= text->capacity) return 0;
  size_t capacity = text->capacity ? text->capacity : 256;
  while (capacity < text->length + extra + 1) capacity *= 2;
  char *grown = realloc(text->data, capacity);
  if (grown == NULL) {
    text->failed = 1;
    return -1;
  }
  text->data = grown;
  text->capacity = capacity;
  return 0;
}

void json_text_raw(json_text_t *text, const char *data, size_t length) {
  if (length == 0 || reserve(text, length) != 0) return;
  memcpy(text->data + text->length, data, length);
  text->length += length;
  text->data[text->length] = '\0';
}

void json_text_append(json_text_t *text, const json_text_t *other) {
  if (other->failed) text->failed = 1;
  else json_text_raw(text, other->data, other->length);
}

void json_text_literal(json_text_t *text, const char *literal) { json_text_raw(text, literal, strlen(literal)); }

void json_text_string(json_text_t *text, const char *value) {
  size_t length = strlen(value);
  /* The longest escape, \u001f, is six bytes for one. */
  if (reserve(text, 6 * length + 2) != 0) return;
  char *out = text->data + text->length;
  *out++ = '"';
  for (const unsigned char *c = (const unsigned char *)value; *c;) {
    if (*c >= 0x80) { /* bytes that are not UTF-8 (a worker's stderr) become '?': the text stays JSON */
      size_t sequence = util_utf8_sequence(c);
      if (sequence == 0) {
        *out++ = '?';
        c++;
      } else {
        memcpy(out, c, sequence);
        out += sequence;
        c += sequence;
      }
      continue;
    }
    if (*c >= 0x20 && *c != '"' && *c != '\\') {
      *out++ = (char)*c++;
      continue;
    }
    *out++ = '\\';
    switch (*c) {
    case '"': *out++ = '"'; break;
    case '\\': *out++ = '\\'; break;
    case '\b': *out++ = 'b'; break;
    case '\f': *out++ = 'f'; break;
    case '\n': *out++ = 'n'; break;
    case '\r': *out++ = 'r'; break;
    case '\t': *out++ = 't'; break;
    default: out += sprintf(out, "u%04X", *c); break;
    }
    c++;
  }
  *out++ = '"';
  *out = '\0';
  text->length = (size_t)(out - text->data);
}

void json_text_integer(json_text_t *text, int64_t value) {
  char digits[24];
  char *start = digits + sizeof digits;
  /* Negated as unsigned, so INT64_MIN does not overflow. */
  uint64_t magnitude = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
  do {
    *--start = (char)('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude > 0);
  if (value < 0) *--start = '-';
  json_text_raw(text, start, (size_t)(digits + sizeof digits - start));
}

/* jansson's finish of printf's "%.9g": a '.' or an exponent always (so the value reads
 * back as a real), no '+' and no leading zeros in the exponent. */
static int finish_like_jansson(char *out, int length) {
  char *exponent = strchr(out, 'e');
  if (exponent == NULL) {
    if (strchr(out, '.') == NULL) {
      memcpy(out + length, ".0", 3);
      length += 2;
    }
    return length;
  }
  char *digits = exponent + 1;
  if (*digits == '+') memmove(digits, digits + 1, strlen(digits)); /* with the NUL */
  else if (*digits == '-') digits++;
  size_t zeros = strspn(digits, "0");
  if (zeros > 0 && digits[zeros] != '\0') memmove(digits, digits + zeros, strlen(digits + zeros) + 1);
  return (int)strlen(out);
}

static int format_with_printf(double value, char *out) {
  int length = snprintf(out, JSON_TEXT_REAL_MAX - 3, "%.*g", JSON_TEXT_REAL_DIGITS, value);
  return finish_like_jansson(out, length);
}

static const long double powers_of_ten[] = {
    1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,  1e8L,  1e9L,  1e10L, 1e11L, 1e12L, 1e13L,
    1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L, 1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};

static long double scale(double magnitude, int shift) {
  return shift >= 0 ? (long double)magnitude * powers_of_ten[shift] : (long double)magnitude / powers_of_ten[-shift];
}

int json_text_format_real(double value, char out[JSON_TEXT_REAL_MAX]) {
  double magnitude = fabs(value);
  if (!(magnitude >= 1e-9 && magnitude < 1e18)) return format_with_printf(value, out); /* and 0, NaN */
  /* The decimal exponent of the first digit; log10 may be one off near powers of ten. */
  int exponent = (int)floor(log10(magnitude));
  long double scaled = scale(magnitude, JSON_TEXT_REAL_DIGITS - 1 - exponent);
  if (scaled < powers_of_ten[JSON_TEXT_REAL_DIGITS - 1]) scaled = scale(magnitude, JSON_TEXT_REAL_DIGITS - 1 - --exponent);
  else if (scaled >= powers_of_ten[JSON_TEXT_REAL_DIGITS])
    scaled = scale(magnitude, JSON_TEXT_REAL_DIGITS - 1 - ++exponent);
  long double whole = floorl(scaled);
  long double fraction = scaled - whole;
  if (fabsl(fraction - 0.5L) < 1e-6L) return format_with_printf(value, out);
  uint64_t significand = (uint64_t)whole + (fraction > 0.5L);
  if (significand == 1000000000u) { /* 9.999999996 rounds up to 10.0000000 */
    significand = 100000000u;
    exponent++;
  }
  char digits[JSON_TEXT_REAL_DIGITS];
  for (int i = JSON_TEXT_REAL_DIGITS - 1; i >= 0; i--) {
    digits[i] = (char)('0' + significand % 10);
    significand /= 10;
  }
  int count = JSON_TEXT_REAL_DIGITS; /* significant digits, without trailing zeros */
  while (count > 1 && digits[count - 1] == '0') count--;

  char *at = out;
  if (value < 0) *at++ = '-';
  if (exponent < -4 || exponent >= JSON_TEXT_REAL_DIGITS) { /* printf's %g switches to 1.5e-05 */
    *at++ = digits[0];
    if (count > 1) {
      *at++ = '.';
      memcpy(at, digits + 1, (size_t)count - 1);
      at += count - 1;
    }
    at += sprintf(at, "e%d", exponent);
  } else if (exponent >= 0) {
    int integer_digits = exponent + 1;
    memcpy(at, digits, (size_t)integer_digits);
    at += integer_digits;
    *at++ = '.';
    if (count > integer_digits) {
      memcpy(at, digits + integer_digits, (size_t)(count - integer_digits));
      at += count - integer_digits;
    } else {
      *at++ = '0'; /* jansson's ".0" */
    }
  } else {
    *at++ = '0';
    *at++ = '.';
    for (int i = -1; i > exponent; i--) *at++ = '0';
    memcpy(at, digits, (size_t)count);
    at += count;
  }
  *at = '\0';
  return (int)(at - out);
}

void json_text_real(json_text_t *text, double value) {
  if (!isfinite(value)) {
    json_text_literal(text, "null");
    return;
  }
  char number[JSON_TEXT_REAL_MAX];
  int length = json_text_format_real(value, number);
  json_text_raw(text, number, (size_t)length);
}

char *json_text_take(json_text_t *text, size_t *length) {
  char *data = text->failed ? NULL : text->data;
  if (data == NULL && !text->failed) data = calloc(1, 1); /* nothing was appended: "" */
  if (text->failed) free(text->data);
  if (length) *length = data ? text->length : 0;
  json_text_init(text);
  return data;
}
