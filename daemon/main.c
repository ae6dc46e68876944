/* main.c — mapsaged: reads its settings (flags, each also an environment variable), opens
 * the database, starts the scheduler, the streams and the HTTP server on one libuv loop,
 * and stops them in order on SIGTERM or SIGINT. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "api.h"
#include "db.h"
#include "http.h"
#include "options.h"
#include "scheduler.h"
#include "sql.h"
#include "sse.h"
#include "static.h"
#include "study.h"
#include "token.h"
#include "util.h"
#include "version.h"

/* SIGTERM to a worker, then SIGKILL after this long. Stopping, a worker finishes its step
 * (or an epoch's evaluation, seconds for a CNN) and writes a checkpoint; the systemd unit
 * allows 30 s (TimeoutStopSec) for all of it. */
#define CANCEL_GRACE_MS 5000
#define SHUTDOWN_GRACE_MS 20000
#define MAX_ALLOWED_HOSTS 32

typedef struct {
  const char *listen, *db_path, *data_dir, *worker_bin, *dataset_dir, *token_file, *web_dir;
  const char *datasets_dir;  /* the registry's files (dataset.h); NULL: <data dir>/datasets */
  int workers;
  unsigned sql_timeout_ms, sql_max_rows, request_timeout_s, remote_timeout_s;
  size_t max_worker_memory;  /* bytes; a run estimated above it is refused at submission */
  const char *allowed_hosts[MAX_ALLOWED_HOSTS]; /* --allowed-host, each flag or comma-separated name */
  size_t n_allowed_hosts;
} settings_t;

typedef struct {
  uv_loop_t *loop;
  settings_t settings;
  api_t api;
  http_server_t *http;
  uv_signal_t sigterm, sigint;
  uv_timer_t drain_timer;
  int stopping;
  char *token;
} daemon_t;

/* The options, their --help and their parsing in one table (common/options.h). To add a
 * flag: a key below, a row in daemon_options, a case in parse_settings. */
enum {
  OPTION_LISTEN = 256, OPTION_DB, OPTION_DATA_DIR, OPTION_WORKERS, OPTION_WORKER_BIN, OPTION_DATASET_DIR,
  OPTION_TOKEN_FILE, OPTION_ALLOWED_HOST, OPTION_SQL_TIMEOUT, OPTION_SQL_ROWS, OPTION_REQUEST_TIMEOUT,
  OPTION_REMOTE_TIMEOUT, OPTION_MAX_WORKER_MEMORY, OPTION_WEB_DIR, OPTION_VERSION, OPTION_DATASETS_DIR,
};

static const option_t daemon_options[] = {
  {OPTION_LISTEN, "listen", 0, "HOST:PORT", "where to serve HTTP (MAPSAGE_LISTEN; default 127.0.0.1:8787;\n"
   "port 0 picks a free one). A non-loopback address needs a token."},
  {OPTION_DB, "db", 0, "PATH", "the SQLite database (MAPSAGE_DB; default ./mapsage.db)"},
  {OPTION_DATA_DIR, "data-dir", 0, "DIR", "checkpoints and run files (MAPSAGE_DATA_DIR; default ./mapsage-data)"},
  {OPTION_WORKERS, "workers", 0, "N", "experiments run at once (MAPSAGE_WORKERS; default one per two cores)"},
  {OPTION_WORKER_BIN, "worker-bin", 0, "PATH", "the worker program (MAPSAGE_WORKER_BIN; default mapsage-worker\n"
   "beside mapsaged, else from PATH)"},
  {OPTION_DATASET_DIR, "dataset-dir", 0, "DIR", "Fashion-MNIST's .gz files (MAPSAGE_DATASET_DIR;\n"
   "default /usr/share/datasets/fashion-mnist)"},
  {OPTION_DATASETS_DIR, "datasets-dir", 0, "DIR", "registered datasets' files (MAPSAGE_DATASETS_DIR; default\n"
   "DATA_DIR/datasets)"},
  {OPTION_TOKEN_FILE, "token-file", 0, "FILE", "require \"Authorization: Bearer <token>\" on every request that\n"
   "changes something (MAPSAGE_TOKEN_FILE); the file must be readable\nby its owner only (chmod 600)"},
  {OPTION_ALLOWED_HOST, "allowed-host", 0, "NAME[:PORT]", "answer requests for this name too (a reverse proxy's, a DNS\n"
   "name of this machine); without a port, on any port. Repeat it, or\n"
   "separate names with commas (MAPSAGE_ALLOWED_HOST). Other names are\n"
   "refused: a page of another site could use them (DNS rebinding)"},
  {OPTION_SQL_TIMEOUT, "sql-timeout-ms", 0, "MS", "interrupt a POST /api/sql query after this long\n"
   "(MAPSAGE_SQL_TIMEOUT_MS; default 5000)"},
  {OPTION_SQL_ROWS, "sql-max-rows", 0, "N", "return at most this many rows from one query (MAPSAGE_SQL_MAX_ROWS;\n"
   "default 10000)"},
  {OPTION_REQUEST_TIMEOUT, "request-timeout", 0, "S", "drop a client whose request has not arrived whole after S\n"
   "seconds (MAPSAGE_REQUEST_TIMEOUT; default 30)"},
  {OPTION_REMOTE_TIMEOUT, "remote-timeout", 0, "S", "interrupt a run whose remote worker (mapsage-worker --server)\n"
   "has posted nothing for S seconds, to run again\n(MAPSAGE_REMOTE_TIMEOUT; default 600)"},
  {OPTION_MAX_WORKER_MEMORY, "max-worker-memory", 0, "SIZE", "refuse at submission a run estimated to need more memory\n"
   "than this (bytes, or with K, M, G: 4G, 512M), and limit each worker\n"
   "to about its estimate (MAPSAGE_MAX_WORKER_MEMORY; default 80% of the\n"
   "machine's memory divided among --workers; docs/config.md, Memory)"},
  {OPTION_WEB_DIR, "web-dir", 0, "DIR", "serve the dashboard from DIR (web/ of a source tree) instead of the\n"
   "copy built in, while developing it (MAPSAGE_WEB_DIR)"},
  {'h', "help", 'h', NULL, "show this help"},
  {OPTION_VERSION, "version", 0, NULL, "print the version and exit"},
};

static void usage(FILE *out) {
  fputs("usage: mapsaged [options]\n"
        "\n"
        "Runs the MapSage daemon: the HTTP API and its live streams, the experiment queue and\n"
        "the workers that train. Every option also reads an environment variable.\n"
        "\n"
        "Options:\n",
        out);
  options_print_help(daemon_options, ARRAY_SIZE(daemon_options), out);
}

static const char *env_or(const char *name, const char *fallback) {
  const char *value = getenv(name);
  return value && value[0] ? value : fallback;
}

static int parse_count(const char *flag, const char *text, unsigned minimum, unsigned maximum, unsigned *out) {
  char *end;
  errno = 0;
  unsigned long value = strtoul(text, &end, 10);
  if (errno || end == text || *end != '\0' || text[0] == '-' || value < minimum || value > maximum) {
    fprintf(stderr, "mapsaged: %s: must be an integer from %u to %u, not \"%s\"\n", flag, minimum, maximum, text);
    return -EINVAL;
  }
  *out = (unsigned)value;
  return 0;
}

/* Adds the comma-separated names of `list` (an argument or the environment's, which lives
 * as long as the process) to --allowed-host. */
static int add_allowed_hosts(settings_t *settings, char *list) {
  for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
    name += strspn(name, " ");
    if (name[0] == '\0') continue;
    if (settings->n_allowed_hosts == MAX_ALLOWED_HOSTS) {
      fprintf(stderr, "mapsaged: --allowed-host: at most %d names\n", MAX_ALLOWED_HOSTS);
      return -E2BIG;
    }
    settings->allowed_hosts[settings->n_allowed_hosts++] = name;
  }
  return 0;
}

static int parse_settings(int argc, char **argv, settings_t *settings) {
  static char worker_bin[PATH_MAX];
  settings->listen = env_or("MAPSAGE_LISTEN", "127.0.0.1:8787");
  settings->db_path = env_or("MAPSAGE_DB", "./mapsage.db");
  settings->data_dir = env_or("MAPSAGE_DATA_DIR", "./mapsage-data");
  settings->dataset_dir = env_or("MAPSAGE_DATASET_DIR", "/usr/share/datasets/fashion-mnist");
  settings->token_file = env_or("MAPSAGE_TOKEN_FILE", NULL);
  settings->datasets_dir = env_or("MAPSAGE_DATASETS_DIR", NULL);
  settings->worker_bin = env_or("MAPSAGE_WORKER_BIN", NULL);
  settings->web_dir = env_or("MAPSAGE_WEB_DIR", NULL);
  const char *workers = env_or("MAPSAGE_WORKERS", NULL);
  const char *sql_timeout = env_or("MAPSAGE_SQL_TIMEOUT_MS", "5000");
  const char *sql_rows = env_or("MAPSAGE_SQL_MAX_ROWS", "10000");
  const char *request_timeout = env_or("MAPSAGE_REQUEST_TIMEOUT", "30");
  const char *remote_timeout = env_or("MAPSAGE_REMOTE_TIMEOUT", "600");
  const char *max_worker_memory = env_or("MAPSAGE_MAX_WORKER_MEMORY", NULL);
  char *allowed_hosts = getenv("MAPSAGE_ALLOWED_HOST");
  /* The flags replace the environment's names, as every other flag does. */
  int allowed_hosts_given = 0;

  options_t parser;
  options_init(&parser, daemon_options, ARRAY_SIZE(daemon_options), argc, argv);
  parser.abbreviations = 1; /* getopt_long's rule, which mapsaged had first */
  int option;
  while ((option = options_next(&parser)) != OPTIONS_END) {
    const char *value = parser.value;
    switch (option) {
    case OPTION_LISTEN: settings->listen = value; break;
    case OPTION_DB: settings->db_path = value; break;
    case OPTION_DATA_DIR: settings->data_dir = value; break;
    case OPTION_WORKERS: workers = value; break;
    case OPTION_WORKER_BIN: settings->worker_bin = value; break;
    case OPTION_DATASET_DIR: settings->dataset_dir = value; break;
    case OPTION_DATASETS_DIR: settings->datasets_dir = value; break;
    case OPTION_TOKEN_FILE: settings->token_file = value; break;
    case OPTION_SQL_TIMEOUT: sql_timeout = value; break;
    case OPTION_SQL_ROWS: sql_rows = value; break;
    case OPTION_WEB_DIR: settings->web_dir = value; break;
    case OPTION_REQUEST_TIMEOUT: request_timeout = value; break;
    case OPTION_REMOTE_TIMEOUT: remote_timeout = value; break;
    case OPTION_MAX_WORKER_MEMORY: max_worker_memory = value; break;
    case OPTION_ALLOWED_HOST:
      if (!allowed_hosts_given) settings->n_allowed_hosts = 0;
      allowed_hosts_given = 1;
      if (add_allowed_hosts(settings, (char *)value) != 0) return -EINVAL;
      break;
    case 'h': usage(stdout); exit(0);
    case OPTION_VERSION: printf("mapsaged %s\n", MAPSAGE_VERSION); exit(0);
    case OPTIONS_ARGUMENT:
      fprintf(stderr, "mapsaged: unexpected argument \"%s\"\n", value);
      return -EINVAL;
    default:
      fprintf(stderr, "mapsaged: %s\nTry 'mapsaged --help' for more.\n", parser.error);
      return -EINVAL;
    }
  }
  if (!allowed_hosts_given && allowed_hosts && add_allowed_hosts(settings, allowed_hosts) != 0) return -EINVAL;
  int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (cores < 1) cores = 1;
  settings->workers = cores / 2 > 0 ? cores / 2 : 1;
  if (workers) {
    char *end;
    long value = strtol(workers, &end, 10);
    if (*end != '\0' || end == workers || value < 0 || value > 256) {
      fprintf(stderr, "mapsaged: --workers: must be an integer from 0 to 256, not \"%s\"\n", workers);
      return -EINVAL;
    }
    settings->workers = (int)value;
  }
  if (parse_count("--sql-timeout-ms", sql_timeout, 1, 3600000, &settings->sql_timeout_ms) != 0 ||
      parse_count("--sql-max-rows", sql_rows, 1, 10000000, &settings->sql_max_rows) != 0 ||
      parse_count("--request-timeout", request_timeout, 1, 3600, &settings->request_timeout_s) != 0 ||
      parse_count("--remote-timeout", remote_timeout, 1, 86400, &settings->remote_timeout_s) != 0)
    return -EINVAL;
  /* Default: 80% of the machine's memory shared among the workers that run at once. The
   * other 20% is the daemon's, SQLite's, the page cache's (the dataset files, checkpoints)
   * and the system's; a run's estimate is already above its peak (docs/config.md). */
  const double machine = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
  settings->max_worker_memory = (size_t)(machine * 0.8 / (settings->workers > 0 ? settings->workers : 1));
  if (max_worker_memory && util_parse_size(max_worker_memory, &settings->max_worker_memory) != 0) {
    fprintf(stderr, "mapsaged: --max-worker-memory: expected a size such as 4G, 512M or a number of bytes, "
                    "not \"%s\"\n", max_worker_memory);
    return -EINVAL;
  }
  if (settings->worker_bin == NULL) {
    /* Beside our own executable first, so a build tree runs its own worker. */
    size_t size = sizeof worker_bin;
    settings->worker_bin = "mapsage-worker";
    if (uv_exepath(worker_bin, &size) == 0) {
      char *slash = strrchr(worker_bin, '/');
      if (slash && (size_t)(slash - worker_bin) + sizeof "/mapsage-worker" < sizeof worker_bin) {
        strcpy(slash, "/mapsage-worker");
        if (access(worker_bin, X_OK) == 0) settings->worker_bin = worker_bin;
      }
    }
  }
  return 0;
}

/* Whether --listen's host is a loopback address: parsed as a number ("127.0.0.1.evil.com"
 * is a name, which DNS may point anywhere), or the one name localhost. */
static int is_loopback(const char *listen) {
  char host[256];
  const char *colon = strrchr(listen, ':');
  size_t length = colon ? (size_t)(colon - listen) : strlen(listen);
  if (length >= 2 && listen[0] == '[' && listen[length - 1] == ']') {
    listen++;
    length -= 2;
  }
  if (length == 0 || length >= sizeof host) return 0;
  memcpy(host, listen, length);
  host[length] = '\0';
  return http_is_loopback_host(host);
}


// ---------------------------------------------------------------------------------------
// stopping, in order: workers (their runs become interrupted, the batch is flushed), then
// the streams, then HTTP, then the database.

static void on_handle_closed_noop(uv_handle_t *handle) { (void)handle; }

static void on_http_stopped(void *data) {
  daemon_t *daemon = data;
  sse_hub_destroy(daemon->api.hub);
  uv_close((uv_handle_t *)&daemon->sigterm, on_handle_closed_noop);
  uv_close((uv_handle_t *)&daemon->sigint, on_handle_closed_noop);
  uv_close((uv_handle_t *)&daemon->drain_timer, on_handle_closed_noop);
}

static void on_streams_drained(uv_timer_t *timer) {
  daemon_t *daemon = timer->data;
  http_stop(daemon->http, on_http_stopped, daemon);
}

static void on_scheduler_stopped(void *data) {
  daemon_t *daemon = data;
  daemon->api.sched = NULL;
  /* No stream or query may start from here on; those under way end or finish. */
  http_drain(daemon->http);
  /* Let streams send their last events and end before the connections are closed. */
  sse_end_all(daemon->api.hub);
  http_wake(daemon->http);
  uv_timer_start(&daemon->drain_timer, on_streams_drained, 200, 0);
}

/* The scheduler's news about an experiment, for the study it may belong to. */
static void on_observation(void *observer, int64_t experiment_id, sched_observation_t what) {
  api_t *api = observer;
  study_observe(api->db, api->hub, api->sched, experiment_id, what);
}

static void on_signal(uv_signal_t *handle, int signal_number) {
  daemon_t *daemon = handle->data;
  if (daemon->stopping) {
    fprintf(stderr, "mapsaged: %s again: exiting now\n", strsignal(signal_number));
    db_close(daemon->api.db); /* flushes what it can */
    _exit(1);
  }
  daemon->stopping = 1;
  fprintf(stderr, "mapsaged: %s: stopping workers and closing\n", strsignal(signal_number));
  sched_stop(daemon->api.sched, on_scheduler_stopped, daemon);
}

int main(int argc, char **argv) {
  daemon_t daemon = {0};
  char error[512] = "";
  if (parse_settings(argc, argv, &daemon.settings) != 0) return 2;
  settings_t *settings = &daemon.settings;
  if (!is_loopback(settings->listen) && settings->token_file == NULL) {
    fprintf(stderr, "mapsaged: refusing to listen on %s without --token-file: anyone who can reach it could run "
                    "and cancel experiments\n", settings->listen);
    return 2;
  }
  if (settings->token_file && token_read(settings->token_file, &daemon.token, error, sizeof error) != 0) {
    fprintf(stderr, "mapsaged: --token-file %s: %s\n", settings->token_file, error);
    return 2;
  }
  if (static_set_dir(settings->web_dir, error, sizeof error) != 0) {
    fprintf(stderr, "mapsaged: %s\n", error);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a client or worker that goes away is an error code, not a death */

  char probe[PATH_MAX];
  snprintf(probe, sizeof probe, "%s/train-images-idx3-ubyte.gz", settings->dataset_dir);
  if (access(probe, R_OK) != 0)
    fprintf(stderr, "mapsaged: warning: %s is missing: fashion-mnist experiments will fail (apt-get install "
                    "dataset-fashion-mnist, or --dataset-dir)\n", probe);

  int result = util_make_directories(settings->data_dir);
  if (result != 0) {
    fprintf(stderr, "mapsaged: --data-dir %s: %s\n", settings->data_dir, strerror(-result));
    return 1;
  }
  daemon.loop = uv_default_loop();
  daemon.api.started_at = util_monotonic();
  daemon.api.data_dir = settings->data_dir;
  daemon.api.max_worker_memory = settings->max_worker_memory;
  daemon.api.teacher_cache_budget = api_teacher_cache_budget();
  result = db_open(settings->db_path, &daemon.api.db, error, sizeof error);
  if (result != 0) {
    fprintf(stderr, "mapsaged: %s\n", error);
    return 1;
  }
  int interrupted = db_mark_running_interrupted(daemon.api.db);
  if (interrupted > 0)
    fprintf(stderr, "mapsaged: %d experiment(s) were running when the daemon last stopped; queued again\n",
            interrupted);
  study_refresh_all(daemon.api.db);

  if (sse_hub_create(daemon.loop, daemon.api.db, &daemon.api.hub) != 0) return 1;
  int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
  sched_options_t scheduler = {
      .loop = daemon.loop,
      .db = daemon.api.db,
      .hub = daemon.api.hub,
      .max_workers = settings->workers,
      .threads_per_worker = settings->workers > 0 && cores / settings->workers > 1 ? cores / settings->workers : 1,
      .worker_bin = settings->worker_bin,
      .dataset_dir = settings->dataset_dir,
      .data_dir = settings->data_dir,
      .cancel_grace_ms = CANCEL_GRACE_MS,
      .stop_grace_ms = SHUTDOWN_GRACE_MS,
      .remote_timeout_s = settings->remote_timeout_s,
      .max_worker_memory = settings->max_worker_memory,
      .teacher_cache_budget = daemon.api.teacher_cache_budget,
      .observe = on_observation,
      .observer = &daemon.api,
  };
  if (sched_create(&scheduler, &daemon.api.sched) != 0) return 1;
  sql_options_t sql = {.loop = daemon.loop, .db_path = settings->db_path, .timeout_ms = settings->sql_timeout_ms,
                       .max_rows = settings->sql_max_rows};
  if (sql_create(&sql, &daemon.api.sql) != 0) return 1;
  char datasets_dir[PATH_MAX];
  snprintf(datasets_dir, sizeof datasets_dir, "%s/datasets", settings->data_dir);
  if ((result = dataset_registry_create(daemon.loop, daemon.api.db, settings->datasets_dir ? settings->datasets_dir
                                                                                           : datasets_dir,
                                        settings->dataset_dir, &daemon.api.datasets, error, sizeof error)) != 0) {
    fprintf(stderr, "mapsaged: %s\n", error);
    return 1;
  }

  http_options_t http = {.listen = settings->listen, .routes = api_routes, .n_routes = api_route_count,
                         .fallback = static_serve, .token = daemon.token, .app = &daemon.api,
                         .request_timeout_s = settings->request_timeout_s,
                         .allowed_hosts = settings->allowed_hosts, .n_allowed_hosts = settings->n_allowed_hosts};
  if ((result = http_start(daemon.loop, &http, &daemon.http, error, sizeof error)) != 0) {
    fprintf(stderr, "mapsaged: %s\n", error);
    return 1;
  }
  sse_hub_set_server(daemon.api.hub, daemon.http);

  uv_signal_init(daemon.loop, &daemon.sigterm);
  uv_signal_init(daemon.loop, &daemon.sigint);
  uv_timer_init(daemon.loop, &daemon.drain_timer);
  daemon.sigterm.data = daemon.sigint.data = daemon.drain_timer.data = &daemon;
  uv_signal_start(&daemon.sigterm, on_signal, SIGTERM);
  uv_signal_start(&daemon.sigint, on_signal, SIGINT);

  /* Tests and scripts read this line to learn the port (with --listen …:0). */
  char host[256];
  util_strlcpy(host, settings->listen, sizeof host);
  char *colon = strrchr(host, ':');
  if (colon) *colon = '\0';
  printf("mapsaged listening on http://%s:%d\n", host, http_port(daemon.http));
  fflush(stdout);
  fprintf(stderr, "mapsaged: database %s, %d worker(s) of %d thread(s), worker %s, dataset %s\n", settings->db_path,
          settings->workers, scheduler.threads_per_worker, settings->worker_bin, settings->dataset_dir);

  sched_kick(daemon.api.sched);
  uv_run(daemon.loop, UV_RUN_DEFAULT);

  db_close(daemon.api.db);
  sql_destroy(daemon.api.sql);
  dataset_registry_free(daemon.api.datasets);
  uv_loop_close(daemon.loop);
  free(daemon.token);
  fprintf(stderr, "mapsaged: stopped\n");
  return 0;
}
