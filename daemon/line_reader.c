/* line_reader.c — a byte stream cut into lines of bounded length (see line_reader.h). */
#include "line_reader.h"

#include <stdlib.h>
#include <string.h>

void line_reader_feed(line_reader_t *reader, const char *data, size_t length, size_t limit, line_reader_cb on_line,
                      line_reader_overlong_cb on_overlong, void *context) {
  while (length > 0) {
    const char *newline = memchr(data, '\n', length);
    size_t chunk = newline ? (size_t)(newline - data) : length;
    if (!reader->overlong) {
      if (reader->length + chunk > limit) {
        /* Its first `limit` bytes, however the reads cut it: what was held, and as much of
         * this read as fits. Within the bound held lines have anyway. */
        const size_t take = limit - reader->length;
        char *grown = realloc(reader->data, limit + 1);
        if (grown) {
          reader->data = grown;
          memcpy(reader->data + reader->length, data, take);
          reader->data[limit] = '\0';
          on_overlong(context, reader->data, limit);
        }
        reader->overlong = 1;
        reader->length = 0;
      } else if (newline && reader->length == 0) {
        on_line(context, data, chunk); /* the common case: a whole line in one read, no copy */
      } else {
        char *grown = realloc(reader->data, reader->length + chunk + 1);
        if (grown == NULL) { /* out of memory: this line is lost, not the stream */
          reader->overlong = 1;
          reader->length = 0;
        } else {
          reader->data = grown;
          memcpy(reader->data + reader->length, data, chunk);
          reader->length += chunk;
          reader->data[reader->length] = '\0';
          if (newline) {
            on_line(context, reader->data, reader->length);
            reader->length = 0;
          }
        }
      }
    }
    if (!newline) break;
    reader->overlong = 0;
    data = newline + 1;
    length -= chunk + 1;
  }
}

void line_reader_finish(line_reader_t *reader, line_reader_cb on_line, void *context) {
  if (reader->length > 0 && !reader->overlong) on_line(context, reader->data, reader->length);
  reader->length = 0;
  reader->overlong = 0;
}

void line_reader_free(line_reader_t *reader) {
  free(reader->data);
  *reader = (line_reader_t){0};
}
