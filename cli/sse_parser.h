/* sse_parser.h — an incremental parser for Server-Sent Events (text/event-stream), fed
 * whatever chunks the network delivers and calling back once per complete event.
 *
 * It follows the WHATWG HTML "event stream interpretation" rules:
 *  - lines end in CRLF, LF or CR (a CRLF split across two chunks is still one ending);
 *    one leading byte-order mark is ignored;
 *  - a line starting with ':' is a comment (the server's `: ping`);
 *  - `field: value` loses one space after the colon; a line without a colon is a field with
 *    an empty value; unknown fields are ignored;
 *  - `data` lines accumulate, joined by "\n"; `event` names the type ("message" if none);
 *    `id` sets the event id (kept for the events after it; an id containing NUL is
 *    ignored); `retry` sets the reconnection delay when it is all digits;
 *  - an empty line dispatches the event and makes its id the last event id, the one a
 *    reconnection sends as Last-Event-ID; with no data, nothing is dispatched and the type
 *    is forgotten, but the id still becomes the last event id;
 *  - an event cut off by the end of a connection is never dispatched, and its id, never
 *    confirmed, is forgotten too: resuming from it would skip the event.
 * Lines and events are capped (SSE_PARSER_LIMIT) so a broken server cannot exhaust memory. */
#ifndef MAPSAGE_SSE_PARSER_H
#define MAPSAGE_SSE_PARSER_H

#include <stddef.h>

#include "cli.h"

#define SSE_PARSER_LIMIT (16u << 20)

typedef struct sse_event {
  const char *type; /* "message" when the stream named none */
  const char *data; /* the data lines joined by "\n", NUL-terminated */
  size_t data_length;
  const char *id;   /* the last event id in effect ("" if none yet) */
} sse_event_t;

/* Returns 0 to go on, anything else to stop: sse_parser_feed() then returns that value. */
typedef int (*sse_event_cb)(const sse_event_t *event, void *user_data);

typedef struct {
  sse_event_cb on_event;
  void *user_data;
  buffer_t line;          /* the line being received */
  buffer_t data;          /* the event's data so far */
  buffer_t type;          /* the event's type so far */
  buffer_t id;            /* the id of the event being received */
  buffer_t last_event_id; /* the id of the last event dispatched */
  long retry_ms;          /* the server's `retry`, or -1 */
  int after_cr;           /* the last line ended in CR: a following LF belongs to it */
  int first_line;         /* the next line is the stream's first (may carry a BOM) */
} sse_parser_t;

void sse_parser_init(sse_parser_t *parser, sse_event_cb on_event, void *user_data);

/* Parses `length` bytes. Returns 0, -ENOMEM, -E2BIG (a line or event over the limit), or
 * the callback's non-zero value (the rest of the chunk is then left unparsed). */
int sse_parser_feed(sse_parser_t *parser, const char *bytes, size_t length);

/* The last event id: what to send as Last-Event-ID when reconnecting ("" if none). */
const char *sse_parser_last_event_id(const sse_parser_t *parser);

/* Forgets a partial line and event before reading a new connection; keeps the last event id
 * and retry, which is what the reconnection needs. */
void sse_parser_reconnect(sse_parser_t *parser);

void sse_parser_free(sse_parser_t *parser);

#endif
