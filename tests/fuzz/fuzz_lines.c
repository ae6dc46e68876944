/* fuzz_lines.c — libFuzzer target for the line reader (daemon/line_reader.c) that cuts a
 * worker's stdout and stderr into protocol lines and log lines.
 *
 * Each input is read twice with a small limit (so that overlong lines are common): in one
 * piece, and in chunks of 1 to 13 bytes drawn from the input, the way pipes deliver. Besides
 * the sanitizers' verdict it checks that both give the same lines and the same overlong
 * reports, that no line holds a newline or passes the limit, and that what the reader holds
 * between reads never passes it either.
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "line_reader.h"

#include "fuzz.h"

#define LIMIT 40

typedef struct {
  char *text; /* every line and report, each followed by a NUL and a kind byte */
  size_t length;
} record_t;

static void append(record_t *record, const char *bytes, size_t length, char kind) {
  char *grown = realloc(record->text, record->length + length + 2);
  FUZZ_CHECK(grown != NULL, "out of memory");
  record->text = grown;
  memcpy(record->text + record->length, bytes, length);
  record->text[record->length + length] = '\0';
  record->text[record->length + length + 1] = kind;
  record->length += length + 2;
}

static void on_line(void *context, const char *line, size_t length) {
  FUZZ_CHECK(length <= LIMIT, "a line of %zu bytes, over the limit %d", length, LIMIT);
  FUZZ_CHECK(memchr(line, '\n', length) == NULL, "a line holds a newline");
  append(context, line, length, 'L');
}

static void on_overlong(void *context, const char *begun, size_t length) {
  FUZZ_CHECK(length == LIMIT, "an overlong line reported by %zu bytes, not its first %d", length, LIMIT);
  append(context, begun, length, 'O');
}

static void read_all(const uint8_t *data, size_t size, const uint8_t *cuts, record_t *record) {
  line_reader_t reader = {0};
  for (size_t at = 0, cut = 0; at < size;) {
    size_t piece = cuts ? 1 + cuts[cut++ % size] % 13 : size;
    if (piece > size - at) piece = size - at;
    line_reader_feed(&reader, (const char *)data + at, piece, LIMIT, on_line, on_overlong, record);
    FUZZ_CHECK(reader.length <= LIMIT, "the reader holds %zu bytes between reads", reader.length);
    at += piece;
  }
  line_reader_finish(&reader, on_line, record);
  line_reader_free(&reader);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  record_t whole = {0}, pieces = {0};
  read_all(data, size, NULL, &whole);
  read_all(data, size, data, &pieces);
  FUZZ_CHECK(whole.length == pieces.length && (whole.length == 0 || memcmp(whole.text, pieces.text, whole.length) == 0),
             "the lines differ in chunks (%zu bytes of lines against %zu)", pieces.length, whole.length);
  free(whole.text);
  free(pieces.text);
  return 0;
}
