/* sse_parser.c — the incremental text/event-stream parser described in sse_parser.h.
 * Bytes go into a line buffer until a line ending; each complete line is interpreted at
 * once, so memory holds one line and one event, never the stream. */
#include "sse_parser.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void sse_parser_init(sse_parser_t *parser, sse_event_cb on_event, void *user_data) {
  memset(parser, 0, sizeof *parser);
  parser->on_event = on_event;
  parser->user_data = user_data;
  parser->line.limit = SSE_PARSER_LIMIT;
  parser->data.limit = SSE_PARSER_LIMIT;
  parser->type.limit = SSE_PARSER_LIMIT;
  parser->id.limit = SSE_PARSER_LIMIT;
  parser->last_event_id.limit = SSE_PARSER_LIMIT;
  parser->retry_ms = -1;
  parser->first_line = 1;
}

static int sse_parser_dispatch(sse_parser_t *parser) {
  buffer_clear(&parser->last_event_id);
  int result = buffer_append(&parser->last_event_id, buffer_text(&parser->id), parser->id.length);
  if (result != 0) return result;
  if (parser->data.length == 0) {
    buffer_clear(&parser->type);
    return 0;
  }
  /* Every data line appended a "\n"; the event's data has none at the end. */
  parser->data.data[--parser->data.length] = '\0';
  sse_event_t event = {
    .type = parser->type.length != 0 ? parser->type.data : "message",
    .data = parser->data.data,
    .data_length = parser->data.length,
    .id = buffer_text(&parser->last_event_id),
  };
  result = parser->on_event(&event, parser->user_data);
  buffer_clear(&parser->data);
  buffer_clear(&parser->type);
  return result;
}

static int sse_parser_field(sse_parser_t *parser, const char *field, size_t field_length,
                            const char *value, size_t value_length) {
#define SSE_FIELD_IS(name) (field_length == sizeof(name) - 1 && memcmp(field, name, field_length) == 0)
  if (SSE_FIELD_IS("data")) {
    int result = buffer_append(&parser->data, value, value_length);
    return result != 0 ? result : buffer_append(&parser->data, "\n", 1);
  }
  if (SSE_FIELD_IS("event")) {
    buffer_clear(&parser->type);
    return buffer_append(&parser->type, value, value_length);
  }
  if (SSE_FIELD_IS("id")) {
    if (memchr(value, '\0', value_length) != NULL) return 0;
    buffer_clear(&parser->id);
    return buffer_append(&parser->id, value, value_length);
  }
  if (SSE_FIELD_IS("retry")) {
    long retry = 0;
    if (value_length == 0) return 0;
    for (size_t i = 0; i < value_length; i++) {
      if (value[i] < '0' || value[i] > '9') return 0;
      if (retry < 100000000) retry = retry * 10 + (value[i] - '0'); /* cap, never overflow */
    }
    parser->retry_ms = retry;
    return 0;
  }
#undef SSE_FIELD_IS
  return 0; /* unknown fields are ignored, as the spec says */
}

static int sse_parser_line(sse_parser_t *parser) {
  const char *line = buffer_text(&parser->line);
  size_t length = parser->line.length;
  if (parser->first_line) {
    parser->first_line = 0;
    if (length >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
      line += 3;
      length -= 3;
    }
  }
  int result;
  if (length == 0) {
    result = sse_parser_dispatch(parser);
  } else if (line[0] == ':') {
    result = 0; /* a comment: the server's keep-alive */
  } else {
    const char *colon = memchr(line, ':', length);
    size_t field_length = colon != NULL ? (size_t)(colon - line) : length;
    const char *value = colon != NULL ? colon + 1 : line + length;
    size_t value_length = length - (size_t)(value - line);
    if (value_length > 0 && value[0] == ' ') {
      value++;
      value_length--;
    }
    result = sse_parser_field(parser, line, field_length, value, value_length);
  }
  buffer_clear(&parser->line);
  return result;
}

int sse_parser_feed(sse_parser_t *parser, const char *bytes, size_t length) {
  size_t start = 0;
  for (size_t i = 0; i < length; i++) {
    char c = bytes[i];
    if (c != '\r' && c != '\n') {
      parser->after_cr = 0;
      continue;
    }
    if (c == '\n' && parser->after_cr && i == start && parser->line.length == 0) {
      /* The LF of a CRLF whose CR ended the previous line. */
      parser->after_cr = 0;
      start = i + 1;
      continue;
    }
    int result = buffer_append(&parser->line, bytes + start, i - start);
    if (result == 0) result = sse_parser_line(parser);
    if (result != 0) return result;
    parser->after_cr = c == '\r';
    start = i + 1;
  }
  return buffer_append(&parser->line, bytes + start, length - start);
}

void sse_parser_reconnect(sse_parser_t *parser) {
  buffer_clear(&parser->id);
  buffer_append(&parser->id, buffer_text(&parser->last_event_id), parser->last_event_id.length);
  buffer_clear(&parser->line);
  buffer_clear(&parser->data);
  buffer_clear(&parser->type);
  parser->after_cr = 0;
  parser->first_line = 1;
}

const char *sse_parser_last_event_id(const sse_parser_t *parser) {
  return buffer_text(&parser->last_event_id);
}

void sse_parser_free(sse_parser_t *parser) {
  buffer_free(&parser->last_event_id);
  buffer_free(&parser->line);
  buffer_free(&parser->data);
  buffer_free(&parser->type);
  buffer_free(&parser->id);
}
