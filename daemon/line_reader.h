/* line_reader.h — splits a byte stream into lines (a worker's stdout, its protocol events,
 * and its stderr, the run's log), whatever pieces the reads deliver, holding at most
 * `limit` bytes of one line: a worker that prints an endless line or garbage costs bounded
 * memory. A line longer than the limit is reported once, by its first `limit` bytes
 * (whatever the reads), and the rest of it is dropped up to its newline. Lines are given without their newline; a whole line
 * inside one read is given in place, without a copy (the common case). */
#ifndef MAPSAGE_LINE_READER_H
#define MAPSAGE_LINE_READER_H

#include <stddef.h>

typedef struct {
  char *data;     /* the line begun in an earlier read, NUL-terminated */
  size_t length;
  int overlong;   /* the current line passed the limit: the rest of it is dropped */
} line_reader_t;

/* A line (`length` bytes, no newline); only valid during the call. */
typedef void (*line_reader_cb)(void *context, const char *line, size_t length);
/* A line that passed the limit: `begun` is its first `length` (= limit) bytes. */
typedef void (*line_reader_overlong_cb)(void *context, const char *begun, size_t length);

void line_reader_feed(line_reader_t *reader, const char *data, size_t length, size_t limit, line_reader_cb on_line,
                      line_reader_overlong_cb on_overlong, void *context);
/* The end of the stream: a last line without its newline is given too. */
void line_reader_finish(line_reader_t *reader, line_reader_cb on_line, void *context);
void line_reader_free(line_reader_t *reader);

#endif
