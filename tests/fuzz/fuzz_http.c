/* fuzz_http.c — libFuzzer target for the daemon's HTTP handling, in process, over real TCP.
 *
 * LLVMFuzzerInitialize assembles the daemon the way daemon/main.c does — a database in a
 * temporary directory (db_open), the stream hub, a scheduler that never starts a worker
 * (max_workers 0), the SQL endpoint, and the HTTP server on 127.0.0.1:0 with api_routes and
 * the dashboard's files as fallback — on a libuv loop this file drives. Each input is raw
 * bytes written to one fresh loopback connection (one request, several pipelined, or
 * garbage); the write side is then shut, and the loop runs until the server has closed the
 * connection or gone quiet, within a time budget. The connection is then reset.
 *
 * What is checked, besides the sanitizers (and libFuzzer's per-input time limit, which a
 * request that hangs the loop trips):
 * - every FUZZ_ALIVE_EVERY inputs, GET /api/health on a fresh connection answers 200;
 * - the SQL endpoint wrote nothing: a canary table keeps its row, the schema keeps its
 *   size, no file appears beside the database or at the paths the seeds try to write;
 * - no answer carries the secret file that sits beside the web root (a symbolic link in the
 *   web root points at it): static files never leak what is outside their root;
 * - no answer is the daemon's own 500 ("internal error"): client input must not make a
 *   handler fail;
 * - the loop does not spin: once the server has gone quiet, MHD does not ask to be run
 *   again and again (what it does when a handler returns without answering).
 * The database grows as inputs submit experiments; it is deleted at exit. */
#define _GNU_SOURCE /* memmem, nftw */

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>
#include <uv.h>

#include "api.h"
#include "db.h"
#include "event.h"
#include "http.h"
#include "scheduler.h"
#include "sql.h"
#include "sse.h"
#include "static.h"
#include "util.h"

#include "fuzz.h"

#define FUZZ_ALIVE_EVERY 100        /* inputs between health checks */
#define FUZZ_SHUT_AFTER_MS 2        /* the request is sent and the server silent: shut writing */
#define FUZZ_QUIET_MS 25            /* a server silent this long has said all it will */
#define FUZZ_QUIET_SQL_MS 300       /* … unless a query may still run (sql timeout_ms below) */
#define FUZZ_BUDGET_MS 1000         /* the most one input may take */
#define FUZZ_HEALTH_BUDGET_MS 5000  /* for the health check: generous on a loaded machine */
#define FUZZ_SPIN_MS 200            /* the loop busy this long with nothing to show … */
#define FUZZ_SPIN_RUNS 1000         /* … and for this many runs of it: it spins */
#define FUZZ_SQL_TIMEOUT_MS 250
#define FUZZ_RESPONSE_KEEP 65536    /* response bytes kept for the checks */
#define FUZZ_SECRET "MAPSAGE-FUZZ-SECRET-7f3a9c"
#define FUZZ_ESCAPE "/tmp/mapsage-fuzz-escape" /* where the SQL seeds try to write */

static struct {
  uv_loop_t loop;
  char dir[PATH_MAX];       /* the temporary directory holding everything below */
  char db_path[PATH_MAX], data_dir[PATH_MAX], web_dir[PATH_MAX];
  api_t api;
  http_server_t *http;
  int port;
  int schema_objects;       /* rows of sqlite_master at the start */
  unsigned inputs;
  char response[FUZZ_RESPONSE_KEEP + 1];
  size_t response_length;
} fuzz;

/* The files the temporary directory may hold; anything else was written by a request. */
static const char *const expected_files[] = {"mapsage.db", "mapsage.db-wal", "mapsage.db-shm", "data", "web",
                                             "secret.txt", "outside.ckpt", NULL};

static double now_ms(void) { return util_monotonic() * 1000.0; }

// ---------------------------------------------------------------------------------------
// setting up and tearing down

static void write_file(const char *dir, const char *name, const char *text) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FUZZ_CHECK(util_write_file_atomic(path, text, strlen(text)) == 0, "cannot write %s", path);
}

static int remove_entry(const char *path, const struct stat *info, int flag, struct FTW *ftw) {
  (void)info;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

static void cleanup(void) {
  if (fuzz.dir[0]) nftw(fuzz.dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Feeds one event line into the database as the scheduler would. */
static void store_event(int64_t id, const char *line) {
  ev_t event;
  char error[256];
  FUZZ_CHECK(ev_parse(line, strlen(line), &event, error, sizeof error) == 0, "%s: %s", line, error);
  FUZZ_CHECK(db_batch_event(fuzz.api.db, id, &event) == 0, "db_batch_event");
  ev_release(&event);
}

/* Three experiments the seeds refer to: 1 succeeded with curves and a checkpoint, 2 queued,
 * 3 failed. */
static void add_history(void) {
  static const char config[] =
      "{\"name\":\"seed\",\"model\":{\"layers\":[{\"type\":\"linear\",\"out\":10}]},\"stages\":[{\"name\":\"train\","
      "\"epochs\":2}]}";
  db_t *db = fuzz.api.db;
  int64_t id;
  FUZZ_CHECK(db_experiment_insert(db, "teacher", 0, 0, config, &id) == 0 && id == 1, "experiment 1");
  for (int step = 1; step <= 40; step++) {
    char line[256];
    snprintf(line, sizeof line,
             "{\"event\":\"metric\",\"step\":%d,\"epoch\":%d,\"stage\":0,\"values\":{\"loss/total\":%g,\"lr\":0.05}}",
             step, step <= 20 ? 1 : 2, 2.0 / step);
    store_event(1, line);
  }
  store_event(1, "{\"event\":\"eval\",\"step\":20,\"epoch\":1,\"stage\":0,\"split\":\"test\","
                 "\"values\":{\"accuracy\":0.5}}");
  store_event(1, "{\"event\":\"stage\",\"step\":20,\"epoch\":2,\"stage\":1,\"name\":\"kd\"}");
  store_event(1, "{\"event\":\"eval\",\"step\":40,\"epoch\":2,\"stage\":0,\"split\":\"val\","
                 "\"values\":{\"accuracy\":0.7}}");
  FUZZ_CHECK(db_batch_log(db, 1, 1, 1, "hello from the worker", 21) == 0, "log");
  FUZZ_CHECK(db_flush(db) == 0, "flush");
  char checkpoint[PATH_MAX];
  snprintf(checkpoint, sizeof checkpoint, "%s/experiments/1/final.ckpt", fuzz.data_dir);
  FUZZ_CHECK(db_checkpoint_add(db, 1, 2, 40, checkpoint, 4) == 0, "checkpoint");
  FUZZ_CHECK(db_experiment_finish(db, 1, DB_SUCCEEDED, NULL, "{\"test_accuracy\":0.7}") == 0, "finish 1");
  FUZZ_CHECK(db_experiment_insert(db, "queued", 5, 1, config, &id) == 0 && id == 2, "experiment 2");
  FUZZ_CHECK(db_experiment_insert(db, "failed", 0, 0, config, &id) == 0 && id == 3, "experiment 3");
  FUZZ_CHECK(db_experiment_finish(db, 3, DB_FAILED, "diverged at step 3", NULL) == 0, "finish 3");
}

/* A table no request may touch, read back by check_untouched(). */
static void add_canary(void) {
  sqlite3 *sql = NULL;
  FUZZ_CHECK(sqlite3_open(fuzz.db_path, &sql) == SQLITE_OK, "open");
  sqlite3_busy_timeout(sql, 1000);
  FUZZ_CHECK(sqlite3_exec(sql, "CREATE TABLE fuzz_canary (x TEXT); INSERT INTO fuzz_canary VALUES ('intact');", NULL,
                          NULL, NULL) == SQLITE_OK,
             "canary: %s", sqlite3_errmsg(sql));
  sqlite3_stmt *statement = NULL;
  sqlite3_prepare_v2(sql, "SELECT count(*) FROM sqlite_master", -1, &statement, NULL);
  FUZZ_CHECK(sqlite3_step(statement) == SQLITE_ROW, "sqlite_master");
  fuzz.schema_objects = sqlite3_column_int(statement, 0);
  sqlite3_finalize(statement);
  sqlite3_close(sql);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  signal(SIGPIPE, SIG_IGN);
  const char *tmp = getenv("TMPDIR");
  snprintf(fuzz.dir, sizeof fuzz.dir, "%s/mapsage-fuzz-http-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
  FUZZ_CHECK(mkdtemp(fuzz.dir) != NULL, "mkdtemp %s: %s", fuzz.dir, strerror(errno));
  atexit(cleanup);
  snprintf(fuzz.db_path, sizeof fuzz.db_path, "%s/mapsage.db", fuzz.dir);
  snprintf(fuzz.data_dir, sizeof fuzz.data_dir, "%s/data", fuzz.dir);
  snprintf(fuzz.web_dir, sizeof fuzz.web_dir, "%s/web", fuzz.dir);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/experiments/1", fuzz.data_dir);
  FUZZ_CHECK(util_make_directories(path) == 0, "mkdir %s", path);
  write_file(path, "final.ckpt", "ckpt");
  snprintf(path, sizeof path, "%s/js", fuzz.web_dir);
  FUZZ_CHECK(util_make_directories(path) == 0, "mkdir %s", path);
  write_file(fuzz.web_dir, "index.html", "<!doctype html><title>MapSage</title>\n");
  write_file(path, "app.js", "export const app = 1;\n");
  write_file(fuzz.dir, "secret.txt", FUZZ_SECRET "\n");
  write_file(fuzz.dir, "outside.ckpt", "ckpt");
  snprintf(path, sizeof path, "%s/leak.txt", fuzz.web_dir);
  FUZZ_CHECK(symlink("../secret.txt", path) == 0, "symlink %s", path);
  snprintf(path, sizeof path, "%s/up", fuzz.web_dir);
  FUZZ_CHECK(symlink("..", path) == 0, "symlink %s", path);

  char error[512] = "";
  FUZZ_CHECK(uv_loop_init(&fuzz.loop) == 0, "uv_loop_init");
  fuzz.api.started_at = util_monotonic();
  fuzz.api.data_dir = fuzz.data_dir;
  FUZZ_CHECK(db_open(fuzz.db_path, &fuzz.api.db, error, sizeof error) == 0, "db_open: %s", error);
  add_history();
  add_canary();
  FUZZ_CHECK(sse_hub_create(&fuzz.loop, fuzz.api.db, &fuzz.api.hub) == 0, "sse_hub_create");
  sched_options_t scheduler = {
      .loop = &fuzz.loop,
      .db = fuzz.api.db,
      .hub = fuzz.api.hub,
      .max_workers = 0, /* queued experiments stay queued: nothing is spawned */
      .threads_per_worker = 1,
      .worker_bin = "/nonexistent/mapsage-worker",
      .dataset_dir = "/nonexistent",
      .data_dir = fuzz.data_dir,
      .cancel_grace_ms = 100,
  };
  FUZZ_CHECK(sched_create(&scheduler, &fuzz.api.sched, error, sizeof error) == 0, "sched_create: %s", error);
  sql_options_t sql = {.loop = &fuzz.loop, .db_path = fuzz.db_path, .timeout_ms = FUZZ_SQL_TIMEOUT_MS, .max_rows = 200};
  FUZZ_CHECK(sql_create(&sql, &fuzz.api.sql) == 0, "sql_create");
  /* The dashboard from a directory, falling back to the built-in table: both paths of
   * static.c run, and the directory has links that lead out of it. */
  FUZZ_CHECK(static_set_dir(fuzz.web_dir, error, sizeof error) == 0, "static_set_dir: %s", error);
  /* "fuzz" as --allowed-host gives: the Host check runs on every input both ways. */
  static const char *const allowed_hosts[] = {"fuzz"};
  http_options_t http = {.listen = "127.0.0.1:0", .routes = api_routes, .n_routes = api_route_count,
                         .fallback = static_serve, .app = &fuzz.api, .request_timeout_s = 1,
                         .allowed_hosts = allowed_hosts, .n_allowed_hosts = 1};
  FUZZ_CHECK(http_start(&fuzz.loop, &http, &fuzz.http, error, sizeof error) == 0, "http_start: %s", error);
  sse_hub_set_server(fuzz.api.hub, fuzz.http);
  fuzz.port = http_port(fuzz.http);
  FUZZ_CHECK(fuzz.port > 0, "no port");
  return 0;
}

// ---------------------------------------------------------------------------------------
// one exchange

/* Runs what the loop has ready, then waits up to `wait_ms` for the loop or `fd`. */
static void pump(int fd, int wait_ms) {
  uv_run(&fuzz.loop, UV_RUN_NOWAIT);
  int timeout = uv_backend_timeout(&fuzz.loop);
  if (timeout < 0 || timeout > wait_ms) timeout = wait_ms;
  struct pollfd fds[2] = {{.fd = uv_backend_fd(&fuzz.loop), .events = POLLIN}, {.fd = fd, .events = POLLIN}};
  poll(fds, fd >= 0 ? 2 : 1, timeout);
  uv_run(&fuzz.loop, UV_RUN_NOWAIT);
}

static int connect_client(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fuzz.port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int result = connect(fd, (struct sockaddr *)&address, sizeof address);
  FUZZ_CHECK(result == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
  return fd;
}

/* Sends `data`, then shuts the write side once the server has been quiet for a moment,
 * and keeps what the server answers until it closes the connection or stays quiet for
 * `quiet_ms`. Returns 1 when the server closed it. The pause before the shutdown matters:
 * MHD's epoll is edge-triggered, so an end-of-file that arrives with the request is only
 * noticed at the next event, and the connection would stay open until a timeout. */
static int exchange(int fd, const uint8_t *data, size_t size, double quiet_ms, double budget_ms) {
  double start = now_ms(), last = start;
  size_t sent = 0;
  int closed = 0, shut = 0;
  fuzz.response_length = 0;
  while (!closed && now_ms() - start < budget_ms) {
    if (sent < size) {
      ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += (size_t)n;
        last = now_ms();
      } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN) {
        sent = size; /* the server hung up mid-request: read what it said */
      }
    } else if (!shut && now_ms() - last > FUZZ_SHUT_AFTER_MS) {
      shutdown(fd, SHUT_WR);
      shut = 1;
      last = now_ms();
    }
    pump(fd, 1);
    for (;;) {
      char buffer[16384];
      ssize_t n = recv(fd, buffer, sizeof buffer, 0);
      if (n > 0) {
        size_t keep = FUZZ_RESPONSE_KEEP - fuzz.response_length;
        if ((size_t)n < keep) keep = (size_t)n;
        memcpy(fuzz.response + fuzz.response_length, buffer, keep);
        fuzz.response_length += keep;
        last = now_ms();
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN)) closed = 1;
      break;
    }
    if (shut && now_ms() - last > quiet_ms) break;
  }
  fuzz.response[fuzz.response_length] = '\0';
  return closed;
}

/* Closes with a reset, so the server sees the client go at once. */
static void abort_connection(int fd) {
  struct linger linger = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
  close(fd);
  pump(-1, 0);
}

/* MHD asks to be run again at once (the loop's timeout is 0) although nothing happens: a
 * request it keeps offering to a handler that answered nothing. The loop spins at 100% CPU
 * until the client leaves. */
static void check_not_spinning(const uint8_t *data, size_t size) {
  double start = now_ms();
  for (int runs = 0; uv_backend_timeout(&fuzz.loop) == 0; runs++) {
    FUZZ_CHECK(now_ms() - start < FUZZ_SPIN_MS || runs < FUZZ_SPIN_RUNS,
               "the loop spins (nothing answered the request?) on the input:\n%.*s", (int)(size < 2000 ? size : 2000),
               (const char *)data);
    pump(-1, 0);
  }
}

static const char *find_bytes(const char *haystack, size_t length, const char *needle) {
  return memmem(haystack, length, needle, strlen(needle));
}

static void check_response(const uint8_t *data, size_t size) {
  /* An answer may echo the request (a 404 names the path it did not find): the secret only
   * counts when the request did not carry it. */
  FUZZ_CHECK(memmem(data, size, FUZZ_SECRET, strlen(FUZZ_SECRET)) != NULL ||
                 !find_bytes(fuzz.response, fuzz.response_length, FUZZ_SECRET),
             "a file outside the web root was served; the answer:\n%s", fuzz.response);
  const char *internal = find_bytes(fuzz.response, fuzz.response_length, "{\"error\":\"internal error");
  FUZZ_CHECK(internal == NULL, "the daemon failed a request (500) on the input:\n%.*s\nthe answer:\n%s",
             (int)(size < 2000 ? size : 2000), (const char *)data, fuzz.response);
  if (fuzz.response_length > 0)
    FUZZ_CHECK(strncmp(fuzz.response, "HTTP/1.", 7) == 0, "an answer that is not HTTP:\n%.200s", fuzz.response);
}

// ---------------------------------------------------------------------------------------
// the daemon's health, and what must not change

static void check_alive(void) {
  static const char request[] = "GET /api/health HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";
  int fd = connect_client();
  /* Generous: the loop may first have to catch up with streams, timers, a slow query. */
  int closed = exchange(fd, (const uint8_t *)request, sizeof request - 1, FUZZ_HEALTH_BUDGET_MS, FUZZ_HEALTH_BUDGET_MS);
  abort_connection(fd);
  FUZZ_CHECK(strncmp(fuzz.response, "HTTP/1.1 200", 12) == 0, "GET /api/health after %u inputs (closed %d):\n%s",
             fuzz.inputs, closed, fuzz.response);
}

static void check_untouched(void) {
  sqlite3 *sql = NULL;
  FUZZ_CHECK(sqlite3_open_v2(fuzz.db_path, &sql, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open");
  sqlite3_busy_timeout(sql, 1000);
  sqlite3_stmt *statement = NULL;
  static const char query[] =
      "SELECT (SELECT group_concat(x) FROM fuzz_canary), (SELECT count(*) FROM sqlite_master)";
  FUZZ_CHECK(sqlite3_prepare_v2(sql, query, -1, &statement, NULL) == SQLITE_OK,
             "the canary table is gone: %s", sqlite3_errmsg(sql));
  FUZZ_CHECK(sqlite3_step(statement) == SQLITE_ROW, "canary: %s", sqlite3_errmsg(sql));
  const char *canary = (const char *)sqlite3_column_text(statement, 0);
  FUZZ_CHECK(canary && strcmp(canary, "intact") == 0, "the canary table holds \"%s\"", canary ? canary : "(null)");
  FUZZ_CHECK(sqlite3_column_int(statement, 1) == fuzz.schema_objects, "the schema has %d objects, not %d",
             sqlite3_column_int(statement, 1), fuzz.schema_objects);
  sqlite3_finalize(statement);
  sqlite3_close(sql);

  DIR *dir = opendir(fuzz.dir);
  FUZZ_CHECK(dir != NULL, "opendir %s", fuzz.dir);
  for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
    if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
    int known = 0;
    for (const char *const *name = expected_files; *name; name++) known |= strcmp(entry->d_name, *name) == 0;
    FUZZ_CHECK(known, "a request wrote %s/%s", fuzz.dir, entry->d_name);
  }
  closedir(dir);
  FUZZ_CHECK(access(FUZZ_ESCAPE, F_OK) != 0, "a request wrote %s", FUZZ_ESCAPE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (fuzz.inputs++ % FUZZ_ALIVE_EVERY == 0) {
    check_alive();
    check_untouched();
  }
  int fd = connect_client();
  /* A query may run up to its time limit before it answers. */
  double quiet = memmem(data, size, "/api/sql", 8) ? FUZZ_QUIET_SQL_MS : FUZZ_QUIET_MS;
  if (!exchange(fd, data, size, quiet, FUZZ_BUDGET_MS)) check_not_spinning(data, size);
  abort_connection(fd);
  check_response(data, size);
  return 0;
}
