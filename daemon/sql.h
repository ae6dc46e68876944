/* sql.h — POST /api/sql: read-only SQL over the history, off the event loop.
 *
 * Each query runs on the libuv thread pool with its own connection, opened read-only,
 * with an authorizer that allows only reads and a reader's functions, one statement per
 * request, and limits on time, rows and the bytes of one answer. The answer is written
 * as JSON in the thread pool too; the HTTP connection is suspended meanwhile, so neither
 * a slow query nor a large answer stalls the loop, live streams or other requests. */
#ifndef MAPSAGE_SQL_H
#define MAPSAGE_SQL_H

#include <uv.h>

#include "http.h"

#define SQL_MAX_RUNNING 4          /* queries at once: the thread pool's default size */
#define SQL_TEXT_LIMIT (64 * 1024) /* longest statement accepted */
/* Bytes of JSON in one answer: rows past it are not sent ("truncated": true). */
#define SQL_ANSWER_LIMIT (32 * 1024 * 1024)

typedef struct sql sql_t;

typedef struct {
  uv_loop_t *loop;
  const char *db_path;
  unsigned timeout_ms;   /* a query running longer is interrupted with an error */
  unsigned max_rows;     /* rows past this are not returned: "truncated": true */
} sql_options_t;

int sql_create(const sql_options_t *options, sql_t **out);
void sql_destroy(sql_t *sql);

/* The handler of POST /api/sql; `sql` is found through the request's app. */
int sql_handle(sql_t *sql, http_request_t *request);

#endif
