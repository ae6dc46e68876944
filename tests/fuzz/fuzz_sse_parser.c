/* fuzz_sse_parser.c — libFuzzer target for the command line's Server-Sent Events parser
 * (cli/sse_parser.c), which reads whatever a server — or anything listening where the
 * user pointed `mapsage watch` — sends.
 *
 * Each input is a byte stream parsed twice: in one piece, and cut into chunks of sizes
 * drawn from the input itself (a network delivers any split, a CRLF across two reads
 * included). Besides the sanitizers' verdict it checks that both give the very same events
 * and the same last event id — the parser's whole promise of being incremental — and that
 * every event has a type and NUL-terminated data of the length it says.
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse_parser.h"

#include "fuzz.h"

/* Every event as type, data and id, each followed by a NUL; data is counted, so a NUL
 * inside it stays visible. */
static int record(const sse_event_t *event, void *user_data) {
  buffer_t *log = user_data;
  FUZZ_CHECK(event->type != NULL && event->data != NULL && event->id != NULL, "an event without its parts");
  FUZZ_CHECK(event->data[event->data_length] == '\0', "the data is not NUL-terminated at its length");
  buffer_append(log, event->type, strlen(event->type) + 1);
  buffer_append(log, event->data, event->data_length + 1);
  buffer_append(log, event->id, strlen(event->id) + 1);
  return 0;
}

/* Parses `size` bytes in pieces (`cuts` NULL: in one), into `log`; returns the last id. */
static char *parse(const uint8_t *data, size_t size, const uint8_t *cuts, size_t n_cuts, buffer_t *log, int *result) {
  sse_parser_t parser;
  sse_parser_init(&parser, record, log);
  *result = 0;
  size_t at = 0, cut = 0;
  while (at < size && *result == 0) {
    size_t piece = cuts ? 1 + cuts[cut++ % n_cuts] % 7 : size;
    if (piece > size - at) piece = size - at;
    *result = sse_parser_feed(&parser, (const char *)data + at, piece);
    at += piece;
  }
  char *last = strdup(sse_parser_last_event_id(&parser));
  sse_parser_free(&parser);
  return last;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  buffer_t whole = {0}, pieces = {0};
  int whole_result, pieces_result;
  char *whole_id = parse(data, size, NULL, 0, &whole, &whole_result);
  char *pieces_id = parse(data, size, size ? data : NULL, size, &pieces, &pieces_result);
  FUZZ_CHECK(whole_result == pieces_result, "in one piece %d, in chunks %d", whole_result, pieces_result);
  if (whole_result == 0) {
    FUZZ_CHECK(whole.length == pieces.length && (whole.length == 0 || memcmp(whole.data, pieces.data, whole.length) == 0),
               "the events differ in chunks (%zu bytes of events against %zu)", pieces.length, whole.length);
    FUZZ_CHECK(strcmp(whole_id, pieces_id) == 0, "last event id \"%s\" in one piece, \"%s\" in chunks", whole_id,
               pieces_id);
  }
  free(whole_id);
  free(pieces_id);
  buffer_free(&whole);
  buffer_free(&pieces);
  return 0;
}
