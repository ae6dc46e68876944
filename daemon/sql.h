/* sql.h — POST /api/sql: read-only SQL over the history, off the event loop.
 *
 * Each query runs on the libuv thread pool with its own connection, opened read-only,
 * with an authorizer that allows only reads and a reader's functions, one statement per
 * request, and limits on time, rows, the length of one value, the memory of one query and
 * the bytes of one answer. The answer is written as JSON in the thread pool too; the HTTP
 * connection is suspended meanwhile, so neither a slow query nor a large answer stalls
 * the loop, live streams or other requests. docs/security.md says why each limit is what
 * it is. */
#ifndef MAPSAGE_SQL_H
#define MAPSAGE_SQL_H

#include <uv.h>

#include "http.h"

#define SQL_MAX_RUNNING 4          /* queries at once: the thread pool's default size */
#define SQL_TEXT_LIMIT (64 * 1024) /* longest statement accepted */
/* Longest TEXT or BLOB a query may make (SQLITE_LIMIT_LENGTH; SQLite's default is 1e9).
 * It bounds the work of a single step of SQLite's machine, which the time limit cannot
 * interrupt: making a 16 MiB value took 35 ms on the 2-core test machine. The longest
 * stored values are log lines (1 MiB at most) and configs (kilobytes); a curve of 100000
 * steps joined with group_concat() is about 2 MB. */
#define SQL_VALUE_LIMIT (16 * 1024 * 1024)
/* SQLite heap one query may add, checked by the progress handler (every 100 steps of
 * SQLite's machine) and at each row. Sorts and recursive queries spill to temporary
 * files past SQLite's page cache, so a reader's query stays far below it. */
#define SQL_MEMORY_LIMIT (128 * 1024 * 1024)
/* Between two checks a single step can hold more (a row of many large values is built
 * without one). A hard ceiling on all of SQLite's heap in the daemon catches that: every
 * running query at its limit, plus room for the daemon's own connection (a few MB of
 * page cache and statements). Past it SQLite's allocations fail, the daemon's writes
 * included, which keep their batch and retry every second. */
#define SQL_HEAP_LIMIT ((long long)SQL_MAX_RUNNING * SQL_MEMORY_LIMIT + 256LL * 1024 * 1024)
/* Bytes of JSON in one answer: rows past it are not sent ("truncated": true). */
#define SQL_ANSWER_LIMIT (32 * 1024 * 1024)
/* Deepest expression: each level is a recursion of SQLite's parser and code generator on a
 * thread pool thread's stack; no analysis query nests a tenth as deep. */
#define SQL_EXPRESSION_DEPTH 250

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
