/* json_text.h — JSON written straight into a growing buffer, for the daemon's hot paths.
 *
 * Live streams format every metric event a worker reports, and the curves API answers with
 * tens of thousands of numbers: building a jansson tree for each and dumping it cost more
 * than the database did. The text is the same as jansson's json_dumps with JSON_COMPACT
 * and JSON_REAL_PRECISION(9) (nine significant digits: what a float32 needs to come back
 * unchanged), so clients cannot tell the two apart; tests/test_json_text.c checks this
 * number for number. */
#ifndef MAPSAGE_JSON_TEXT_H
#define MAPSAGE_JSON_TEXT_H

#include <stddef.h>
#include <stdint.h>

#define JSON_TEXT_REAL_DIGITS 9
#define JSON_TEXT_REAL_MAX 32 /* bytes json_text_format_real writes at most, with the NUL */

typedef struct {
  char *data;
  size_t length, capacity;
  int failed; /* out of memory: later appends do nothing, json_text_take returns NULL */
} json_text_t;

/* An empty text (a zeroed json_text_t is one too). */
void json_text_init(json_text_t *text);
void json_text_free(json_text_t *text);
/* Empties the text, keeping its memory for what comes next. */
void json_text_clear(json_text_t *text);

void json_text_raw(json_text_t *text, const char *data, size_t length);
/* Appends what `other` holds (JSON written apart, such as one column of a table). */
void json_text_append(json_text_t *text, const json_text_t *other);
/* Appends a literal piece of JSON: json_text_literal(&text, "{\"step\":"). */
void json_text_literal(json_text_t *text, const char *literal);
/* Appends `value` as a quoted, escaped JSON string; bytes that are not UTF-8 become '?'. */
void json_text_string(json_text_t *text, const char *value);
void json_text_integer(json_text_t *text, int64_t value);
/* Appends a number as jansson writes a real: nine significant digits, always with a '.'
 * or an exponent; null for an infinity or NaN, which JSON cannot carry. */
void json_text_real(json_text_t *text, double value);

/* Formats a finite `value` as json_text_real does into `out` (JSON_TEXT_REAL_MAX bytes);
 * returns its length. */
int json_text_format_real(double value, char out[JSON_TEXT_REAL_MAX]);

/* The NUL-terminated text, now the caller's to free (its length in *length when not
 * NULL); NULL if an append ran out of memory. The json_text_t is empty again. */
char *json_text_take(json_text_t *text, size_t *length);

#endif
