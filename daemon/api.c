/* api.c — one handler per route of the HTTP API (docs/api.md). Handlers check their input
 * and answer with a JSON error naming the parameter and the reason; the work itself is in
 * db.c, sched.c and sse.c. */
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "export.h"
#include "report.h"
#include "util.h"
#include "version.h"


static api_t *app(const http_request_t *request) { return http_app(request); }

int api_query_integer(http_request_t *request, const char *key, long long minimum, long long maximum,
                         long long *out) {
  const char *text = http_query(request, key);
  if (text == NULL) return 0;
  char *end;
  errno = 0;
  long long value = strtoll(text, &end, 10);
  if (errno || end == text || *end != '\0' || value < minimum || value > maximum) {
    int result = http_respond_error(request, MHD_HTTP_BAD_REQUEST,
                                    "%s: must be an integer between %lld and %lld, not \"%s\"", key, minimum,
                                    maximum, text);
    return result == 0 ? 1 : result;
  }
  *out = value;
  return 0;
}

int api_respond_stopping(http_request_t *request) {
  return http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE, "the daemon is shutting down: try again once it is back");
}

static int respond_no_experiment(http_request_t *request) {
  return http_respond_error(request, MHD_HTTP_NOT_FOUND, "no experiment %lld", (long long)http_path_id(request));
}

// ---------------------------------------------------------------------------------------

/* A client's teacher checkpoint: it must resolve to a regular file inside the data
 * directory (the worker reads it: nothing else on the machine is any client's business).
 * Stored resolved; the scheduler checks it again when it hands it to a worker. */
static void check_teacher_checkpoint(api_t *api, cfg_experiment_t *config, cfg_errors_t *errors) {
  char directory[PATH_MAX], file[PATH_MAX], joined[PATH_MAX * 2];
  const char *path = config->teacher.checkpoint;
  const char *field = config->teacher.kind == CFG_TEACHER_SAFETENSORS ? "teacher.safetensors" : "teacher.checkpoint";
  struct stat info;
  if (path[0] != '/') { /* relative to the data directory */
    snprintf(joined, sizeof joined, "%s/%s", api->data_dir, path);
    path = joined;
  }
  if (realpath(api->data_dir, directory) == NULL || realpath(path, file) == NULL) {
    cfg_add_error(errors, field, "%s: %s", config->teacher.checkpoint, strerror(errno));
    return;
  }
  size_t length = strlen(directory);
  if (strncmp(file, directory, length) != 0 || file[length] != '/') {
    cfg_add_error(errors, field, "must be inside the daemon's data directory (%s)", directory);
    return;
  }
  if (stat(file, &info) != 0 || !S_ISREG(info.st_mode)) { /* a FIFO would hang the worker */
    cfg_add_error(errors, field, "%s: not a regular file", config->teacher.checkpoint);
    return;
  }
  util_strlcpy(config->teacher.checkpoint, file, sizeof config->teacher.checkpoint);
}

/* What only the daemon can check: that an experiment teacher exists, can still succeed,
 * trains without a teacher and has the layers the feature pairs name; that a checkpoint
 * teacher is a regular file inside the data directory. An experiment teacher may come
 * with a checkpoint too (a remote student reads it from its config, since the daemon fills
 * one in only for its own workers): it is checked the same way, never taken on trust. */
void api_check_teacher(api_t *api, cfg_experiment_t *config, cfg_errors_t *errors) {
  if (config->teacher.kind == CFG_TEACHER_EXPERIMENT) {
    int64_t id = config->teacher.experiment;
    json_t *teacher = db_experiment_get(api->db, id, 1);
    if (teacher == NULL) {
      cfg_add_error(errors, "teacher.experiment", "there is no experiment %lld", (long long)id);
      return;
    }
    const char *status = json_string_value(json_object_get(teacher, "status"));
    if (strcmp(status, DB_FAILED) == 0 || strcmp(status, DB_CANCELLED) == 0) {
      const char *error = json_string_value(json_object_get(teacher, "error"));
      cfg_add_error(errors, "teacher.experiment", "experiment %lld %s%s%s: it cannot teach", (long long)id,
                    strcmp(status, DB_FAILED) == 0 ? "failed" : "was cancelled", error ? ": " : "", error ? error : "");
    } else {
      cfg_experiment_t *teacher_config = malloc(sizeof *teacher_config);
      cfg_errors_t *ignored = malloc(sizeof *ignored);
      if (teacher_config && ignored && cfg_from_json(json_object_get(teacher, "config"), teacher_config, ignored) == 0)
        cfg_check_teacher(config, teacher_config, errors);
      free(teacher_config);
      free(ignored);
    }
    json_decref(teacher);
  }
  if (config->teacher.kind != CFG_TEACHER_NONE && config->teacher.checkpoint[0])
    check_teacher_checkpoint(api, config, errors);
  if (config->teacher.kind == CFG_TEACHER_SAFETENSORS) { /* its layers against the feature pairs */
    cfg_experiment_t *teacher_config = malloc(sizeof *teacher_config);
    if (teacher_config) {
      cfg_safetensors_teacher(config, teacher_config);
      cfg_check_teacher(config, teacher_config, errors);
    }
    free(teacher_config);
  }
}


size_t api_teacher_cache_budget(void) {
  const char *text = getenv(CFG_TEACHER_CACHE_ENV);
  double mb = CFG_TEACHER_CACHE_DEFAULT_MB;
  if (text && text[0]) {
    char *end;
    double value = strtod(text, &end);
    /* A bad value makes every distilling worker fail at start, saying why; estimate with
     * the default meanwhile. */
    if (*end == '\0' && value >= 0.0 && value <= 1e9) mb = value;
  }
  return (size_t)(mb * 1048576.0);
}

int api_teacher_config(db_t *db, const cfg_experiment_t *config, cfg_experiment_t *out) {
  if (config->teacher.kind != CFG_TEACHER_EXPERIMENT) return -ENOENT;
  json_t *teacher = db_experiment_get(db, config->teacher.experiment, 1);
  if (teacher == NULL) return -ENOENT;
  cfg_errors_t *ignored = malloc(sizeof *ignored);
  int result = ignored && cfg_from_json(json_object_get(teacher, "config"), out, ignored) == 0 ? 0 : -ENOENT;
  free(ignored);
  json_decref(teacher);
  return result;
}

void api_check_memory(api_t *api, const cfg_experiment_t *config, const cfg_experiment_t *teacher,
                      const char *prefix, cfg_errors_t *errors) {
  if (api->max_worker_memory == 0) return;
  cfg_experiment_t *found = NULL;
  if (teacher == NULL && config->teacher.kind == CFG_TEACHER_EXPERIMENT) {
    found = malloc(sizeof *found);
    if (found && api_teacher_config(api->db, config, found) == 0) teacher = found;
  }
  cfg_memory_t memory;
  if (cfg_memory_estimate(config, teacher, api->teacher_cache_budget, &memory) == 0 &&
      memory.total > api->max_worker_memory) {
    char text[512];
    const char *path = cfg_memory_describe(&memory, config, text, sizeof text);
    const double GiB = 1024.0 * 1024.0 * 1024.0;
    char at[CFG_TITLE_MAX + 64];
    snprintf(at, sizeof at, "%s%s%s", prefix, prefix[0] ? "." : "", path);
    cfg_add_error(errors, at, "this run needs %s, more than --max-worker-memory %.1f GiB", text,
                  (double)api->max_worker_memory / GiB);
  }
  free(found);
}

static int submit_experiment(http_request_t *request) {
  size_t length;
  const char *body = http_body(request, &length);
  cfg_experiment_t config;
  cfg_errors_t errors;
  /* A registered dataset's files, checksum and shape go into the config first (dataset.h). */
  json_t *root = json_loadb(body, length, JSON_REJECT_DUPLICATES, NULL);
  if (json_is_object(root)) dataset_fill_config(app(request)->datasets, root);
  if ((json_is_object(root) ? cfg_from_json(root, &config, &errors) : cfg_parse(body, length, &config, &errors)) == 0) {
    dataset_check_config(app(request)->datasets, &config, "", &errors);
    api_check_teacher(app(request), &config, &errors);
  }
  json_decref(root);
  if (errors.count == 0) api_check_memory(app(request), &config, NULL, "", &errors);
  if (errors.count > 0) {
    json_t *answer = json_pack("{s:s, s:o}", "error", "invalid config", "errors", cfg_errors_to_json(&errors));
    return http_respond_json(request, MHD_HTTP_BAD_REQUEST, answer);
  }
  json_t *normalized = cfg_to_json(&config);
  /* Fifteen digits: 0.05 is stored as 0.05, not 0.050000000000000003. */
  char *text = json_dumps(normalized, JSON_COMPACT | JSON_REAL_PRECISION(15));
  json_decref(normalized);
  if (text == NULL) return -ENOMEM;
  int64_t id;
  int64_t teacher_id = config.teacher.kind == CFG_TEACHER_EXPERIMENT ? config.teacher.experiment : 0;
  int result = db_experiment_insert(app(request)->db, config.name, config.priority, teacher_id, text, &id);
  free(text);
  if (result != 0)
    return http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE, "the experiment could not be stored: %s",
                              strerror(-result));
  sse_publish_experiment(app(request)->hub, id);
  if (app(request)->sched) sched_kick(app(request)->sched); /* else it runs at the next start */
  char status[32] = DB_QUEUED;
  db_experiment_status(app(request)->db, id, status, sizeof status);
  char location[64];
  snprintf(location, sizeof location, "/api/experiments/%lld", (long long)id);
  return http_respond_created(request, location, json_pack("{s:I, s:s}", "id", (json_int_t)id, "status", status));
}

static int list_experiments(http_request_t *request) {
  static const char *const statuses[] = {DB_QUEUED, DB_RUNNING, DB_SUCCEEDED, DB_FAILED, DB_CANCELLED, DB_INTERRUPTED};
  static api_list_query_t query; /* 12 KiB of paths: the loop thread's alone, off its stack */
  query = (api_list_query_t){0};
  db_list_filter_t *filter_options = &query.filter;
  filter_options->statuses = http_query(request, "status");
  filter_options->name = http_query(request, "name");
  long long limit = 100, before = 0;
  int bad = api_list_query(request, &query);
  if (bad) return bad > 0 ? 0 : bad;
  db_list_filter_t filter = *filter_options;
  bad = api_query_integer(request, "limit", 1, 500, &limit);
  if (bad == 0) bad = api_query_integer(request, "before", 1, INT64_MAX, &before);
  if (bad) return bad > 0 ? 0 : bad;
  filter.limit = (int)limit;
  filter.before = before;
  if (filter.statuses) { /* every listed status must exist: a typo must not list nothing */
    char copy[256];
    util_strlcpy(copy, filter.statuses, sizeof copy);
    for (char *save, *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
      int known = 0;
      for (size_t i = 0; i < ARRAY_SIZE(statuses); i++) known |= strcmp(item, statuses[i]) == 0;
      if (!known)
        return http_respond_error(request, MHD_HTTP_BAD_REQUEST,
                                  "status: \"%s\" is not a status (queued, running, succeeded, failed, cancelled, "
                                  "interrupted)",
                                  item);
    }
  }
  size_t length = 0;
  char *list = db_experiment_list(app(request)->db, &filter, &length);
  if (list == NULL) return -EIO;
  return http_respond_text(request, MHD_HTTP_OK, "application/json", list, length);
}

static int get_experiment(http_request_t *request) {
  char *experiment;
  size_t length;
  int result = db_experiment_text(app(request)->db, http_path_id(request), 1, &experiment, &length);
  if (result == -ENOENT) return respond_no_experiment(request);
  if (result != 0) return result;
  /* A run given to a cluster: its latest job, {id, state, reason, node, script} (slurm.h). */
  char *job = slurm_job_text(app(request)->db, http_path_id(request));
  if (job && length > 0 && experiment[length - 1] == '}') {
    const size_t joined_length = length + strlen(job) + 8;
    char *joined = malloc(joined_length);
    if (joined && snprintf(joined, joined_length, "%.*s,\"job\":%s}", (int)(length - 1), experiment, job) > 0) {
      free(experiment);
      experiment = joined;
      length = strlen(joined);
    } else {
      free(joined);
    }
  }
  free(job);
  return http_respond_text(request, MHD_HTTP_OK, "application/json", experiment, length);
}

static int cancel_experiment(http_request_t *request) {
  int64_t id = http_path_id(request);
  int running = 0;
  if (app(request)->sched == NULL) return api_respond_stopping(request);
  int result = sched_cancel(app(request)->sched, id, NULL, &running);
  if (result == -ENOENT) return respond_no_experiment(request);
  if (result == -EALREADY) {
    char status[32] = "";
    db_experiment_status(app(request)->db, id, status, sizeof status);
    return http_respond_error(request, MHD_HTTP_CONFLICT, "experiment %lld has already ended (%s)", (long long)id,
                              status);
  }
  if (result != 0) return result;
  if (running)
    return http_respond_json(request, MHD_HTTP_ACCEPTED,
                             json_pack("{s:I, s:s, s:b}", "id", (json_int_t)id, "status", DB_RUNNING,
                                       "cancel_requested", 1));
  return http_respond_json(request, MHD_HTTP_OK, json_pack("{s:I, s:s}", "id", (json_int_t)id, "status", DB_CANCELLED));
}

static int experiment_exists(http_request_t *request) {
  char status[32];
  return db_experiment_status(app(request)->db, http_path_id(request), status, sizeof status) == 0;
}

static int get_metrics(http_request_t *request) {
  if (!experiment_exists(request)) return respond_no_experiment(request);
  long long since_step = -1; /* all: a teacher's evaluation is stored at step 0 */
  int bad = api_query_integer(request, "since_step", -1, INT64_MAX, &since_step);
  if (bad) return bad > 0 ? 0 : bad;
  /* Rows still in the batch would be missing from the answer: write them first. */
  db_flush(app(request)->db);
  size_t length = 0;
  char *curves =
      db_metrics(app(request)->db, http_path_id(request), http_query(request, "names"), since_step, &length);
  if (curves == NULL) return -EIO;
  return http_respond_text(request, MHD_HTTP_OK, "application/json", curves, length);
}

/* Events from a worker that runs elsewhere: the protocol's lines (NDJSON), as a local
 * worker prints them on stdout. The claiming post's answer carries the run's secret, which
 * later posts send back in X-MapSage-Run-Secret (docs/security.md, "Remote workers"). */
static int post_events(http_request_t *request) {
  size_t length = 0;
  const char *body = http_body(request, &length);
  sched_post_t post;
  if (app(request)->sched == NULL) return api_respond_stopping(request);
  int result = sched_post_events(app(request)->sched, http_path_id(request), body ? body : "", length,
                                 http_header(request, "X-MapSage-Run-Secret"), &post);
  switch (result) {
  case 0: {
    json_t *answer = json_pack("{s:i, s:s}", "accepted", post.accepted, "status", post.status);
    if (post.secret[0]) json_object_set_new(answer, "secret", json_string(post.secret));
    if (post.refused) json_object_set_new(answer, "refused", post.refused);
    return http_respond_json(request, MHD_HTTP_OK, answer);
  }
  case -EINVAL:
    return http_respond_json(
        request, MHD_HTTP_BAD_REQUEST,
        json_pack("{s:s, s:o}", "error", "invalid events: none was applied", "errors", post.errors));
  case -ENOENT: return respond_no_experiment(request);
  case -EBUSY:
  case -EALREADY: return http_respond_error(request, MHD_HTTP_CONFLICT, "%s", post.message);
  case -EACCES: return http_respond_error(request, MHD_HTTP_FORBIDDEN, "%s", post.message);
  case -ESHUTDOWN: return api_respond_stopping(request);
  default: return result;
  }
}

static int get_stream(http_request_t *request) {
  if (!experiment_exists(request)) return respond_no_experiment(request);
  const char *cursor = http_header(request, "Last-Event-ID");
  if (cursor == NULL) cursor = http_query(request, "last_event_id");
  int64_t step;
  int phase;
  if (sse_parse_cursor(cursor, &step, &phase) != 0)
    return http_respond_error(request, MHD_HTTP_BAD_REQUEST,
                              "Last-Event-ID: \"%s\" is not an event id of this stream (\"<step>\" or "
                              "\"<step>.<n>\")",
                              cursor);
  return sse_subscribe(app(request)->hub, request, http_path_id(request), step, phase);
}

static int get_all_events(http_request_t *request) {
  return sse_subscribe(app(request)->hub, request, SSE_ALL_EXPERIMENTS, 0, 0);
}

static int get_report(http_request_t *request) {
  db_flush(app(request)->db); /* the report reads the curves: include what is in the batch */
  json_t *report = report_build(app(request)->db, http_path_id(request));
  return report ? http_respond_json(request, MHD_HTTP_OK, report) : respond_no_experiment(request);
}

static int get_log(http_request_t *request) {
  if (!experiment_exists(request)) return respond_no_experiment(request);
  db_flush(app(request)->db);
  size_t length = 0;
  char *text = db_log_text(app(request)->db, http_path_id(request), &length);
  if (text == NULL) return -EIO;
  return http_respond_text(request, MHD_HTTP_OK, "text/plain; charset=utf-8", text, length);
}

static int run_sql(http_request_t *request) { return sql_handle(app(request)->sql, request); }

static int get_health(http_request_t *request) {
  api_t *api = app(request);
  return http_respond_json(
      request, MHD_HTTP_OK,
      json_pack("{s:s, s:s, s:f, s:{s:i, s:i}, s:i, s:i, s:b}", "status", "ok", "version", MAPSAGE_VERSION,
                "uptime_s", util_monotonic() - api->started_at, "workers", "running",
                api->sched ? sched_running(api->sched) : 0, "max", api->sched ? sched_max_workers(api->sched) : 0,
                "queued", db_count_status(api->db, DB_QUEUED), "streams",
                sse_subscriber_count(api->hub), "sql", api->sql != NULL));
}

/* A figure of /proc/self/status in bytes ("VmRSS", "VmHWM"); -1 when unknown. */
static long long process_status_bytes(const char *field) {
  FILE *status = fopen("/proc/self/status", "r");
  if (status == NULL) return -1;
  char line[256];
  long long kib = -1;
  size_t length = strlen(field);
  while (fgets(line, sizeof line, status))
    if (strncmp(line, field, length) == 0 && line[length] == ':') kib = strtoll(line + length + 1, NULL, 10);
  fclose(status);
  return kib < 0 ? -1 : kib * 1024;
}

/* One sample with its HELP and TYPE lines (Prometheus text format 0.0.4). */
static void expose(FILE *out, const char *name, const char *type, const char *help, double value) {
  fprintf(out, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, value);
}

/* The daemon's figures for Prometheus (or anything that reads its text format). */
static int get_prometheus_metrics(http_request_t *request) {
  api_t *api = app(request);
  char *text = NULL;
  size_t length = 0;
  FILE *out = open_memstream(&text, &length);
  if (out == NULL) return -ENOMEM;
  fprintf(out, "# HELP mapsage_build_info The running mapsaged.\n# TYPE mapsage_build_info gauge\n"
               "mapsage_build_info{version=\"%s\"} 1\n", MAPSAGE_VERSION);
  expose(out, "mapsage_uptime_seconds", "gauge", "Seconds since mapsaged started.",
         util_monotonic() - api->started_at);
  static const char *const statuses[] = {DB_QUEUED, DB_RUNNING, DB_SUCCEEDED, DB_FAILED, DB_CANCELLED, DB_INTERRUPTED};
  fprintf(out, "# HELP mapsage_experiments Experiments in the database by status.\n"
               "# TYPE mapsage_experiments gauge\n");
  for (size_t i = 0; i < ARRAY_SIZE(statuses); i++)
    fprintf(out, "mapsage_experiments{status=\"%s\"} %d\n", statuses[i], db_count_status(api->db, statuses[i]));
  const sched_counters_t workers = api->sched ? sched_counters(api->sched) : (sched_counters_t){0};
  expose(out, "mapsage_workers_running", "gauge", "Worker processes running.",
         api->sched ? sched_running(api->sched) : 0);
  expose(out, "mapsage_workers_max", "gauge", "Worker processes allowed at once (--workers).",
         api->sched ? sched_max_workers(api->sched) : 0);
  expose(out, "mapsage_workers_started_total", "counter", "Worker processes started.", (double)workers.started);
  expose(out, "mapsage_worker_crashes_total", "counter", "Workers that died without a result (retried or failed).",
         (double)workers.crashes);
  expose(out, "mapsage_worker_events_total", "counter", "Protocol events received from workers.",
         (double)workers.events);
  expose(out, "mapsage_worker_rejected_lines_total", "counter",
         "Lines on a worker's stdout that were not protocol events (kept in the run's log).",
         (double)workers.rejected_lines);
  const db_counters_t batch = db_counters(api->db);
  expose(out, "mapsage_batch_rows", "gauge", "Rows waiting in the write batch.", (double)db_batch_rows(api->db));
  expose(out, "mapsage_db_rows_written_total", "counter", "Metric, eval, stage and log rows committed.",
         (double)batch.rows_written);
  expose(out, "mapsage_db_flushes_total", "counter", "Batch transactions committed.", (double)batch.flushes);
  expose(out, "mapsage_db_flush_failures_total", "counter",
         "Batch transactions the database refused (the batch is kept and retried).", (double)batch.flush_failures);
  expose(out, "mapsage_db_flush_seconds_total", "counter", "Seconds spent committing batches.", batch.flush_seconds);
  const sse_counters_t streams = sse_counters(api->hub);
  expose(out, "mapsage_streams", "gauge", "Open event streams (SSE).", sse_subscriber_count(api->hub));
  expose(out, "mapsage_stream_events_total", "counter", "Live events queued to streams.", (double)streams.delivered);
  expose(out, "mapsage_streams_fell_behind_total", "counter",
         "Times a stream fell behind the workers and read on from the database.", (double)streams.fell_behind);
  expose(out, "mapsage_streams_dropped_total", "counter", "Streams ended because their client stopped reading.",
         (double)streams.dropped);
  expose(out, "mapsage_streams_evicted_total", "counter",
         "Streams ended to make room for a new viewer (the idlest of the client holding the most).",
         (double)streams.evicted);
  fprintf(out, "# HELP mapsage_http_responses_total HTTP answers by status class.\n"
               "# TYPE mapsage_http_responses_total counter\n");
  for (unsigned status_class = 1; status_class <= 5; status_class++)
    fprintf(out, "mapsage_http_responses_total{code=\"%uxx\"} %llu\n", status_class,
            (unsigned long long)http_responses(http_server_of(request), status_class));
  const long long resident = process_status_bytes("VmRSS"), peak = process_status_bytes("VmHWM");
  if (resident >= 0)
    expose(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", (double)resident);
  if (peak >= 0)
    expose(out, "mapsage_resident_memory_peak_bytes", "gauge", "The most resident memory mapsaged has used.",
           (double)peak);
  if (fclose(out) != 0 || text == NULL) {
    free(text);
    return -ENOMEM;
  }
  return http_respond_text(request, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, length);
}

/* The dataset registry's routes (dataset.h): 503 while a daemon runs without one. */
static int with_datasets(http_request_t *request, int (*handler)(dataset_registry_t *, http_request_t *)) {
  if (!app(request)->datasets) return http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE, "no dataset registry");
  return handler(app(request)->datasets, request);
}
static int register_dataset(http_request_t *request) { return with_datasets(request, dataset_handle_register); }
static int list_datasets(http_request_t *request) { return with_datasets(request, dataset_handle_list); }
static int get_dataset(http_request_t *request) { return with_datasets(request, dataset_handle_get); }
static int get_dataset_samples(http_request_t *request) { return with_datasets(request, dataset_handle_samples); }
static int delete_dataset(http_request_t *request) { return with_datasets(request, dataset_handle_delete); }

static int download_checkpoint(http_request_t *request) { return export_handle_checkpoint(app(request)->db, request); }
static int export_model(http_request_t *request) { return export_handle_export(app(request)->db, request); }

/* What a body may be: a cross-site form or "simple" request can only claim text/plain,
 * multipart/form-data or application/x-www-form-urlencoded, so none of these passes. */
#define JSON "application/json"
#define EVENTS "application/x-ndjson application/json" /* a remote worker's lines of events */

const http_route_t api_routes[] = {
    {"POST", "/api/experiments", submit_experiment, JSON},
    {"GET", "/api/experiments", list_experiments, NULL},
    {"GET", "/api/experiments/{id}", get_experiment, NULL},
    {"PATCH", "/api/experiments/{id}", api_patch_experiment, JSON},
    {"DELETE", "/api/experiments/{id}", api_delete_experiment, NULL},
    {"POST", "/api/experiments/{id}/cancel", cancel_experiment, JSON},
    {"POST", "/api/experiments/{id}/events", post_events, EVENTS},
    {"GET", "/api/experiments/{id}/metrics", get_metrics, NULL},
    {"GET", "/api/experiments/{id}/stream", get_stream, NULL},
    {"GET", "/api/experiments/{id}/log", get_log, NULL},
    {"GET", "/api/experiments/{id}/report", get_report, NULL},
    {"GET", "/api/experiments/{id}/checkpoints/{name}", download_checkpoint, NULL},
    {"GET", "/api/experiments/{id}/export", export_model, NULL},
    {"GET", "/api/events", get_all_events, NULL},
    {"POST", "/api/studies", api_submit_study, JSON},
    {"GET", "/api/studies", api_list_studies, NULL},
    {"GET", "/api/studies/{id}", api_get_study, NULL},
    {"PATCH", "/api/studies/{id}", api_patch_study, JSON},
    {"POST", "/api/studies/{id}/cancel", api_cancel_study, JSON},
    {"GET", "/api/studies/{id}/stream", api_get_study_stream, NULL},
    {"GET", "/api/studies/{id}/curves", api_get_study_curves, NULL},
    {"POST", "/api/datasets", register_dataset, JSON},
    {"GET", "/api/datasets", list_datasets, NULL},
    {"GET", "/api/datasets/{name}", get_dataset, NULL},
    {"GET", "/api/datasets/{name}/samples", get_dataset_samples, NULL},
    {"DELETE", "/api/datasets/{name}", delete_dataset, NULL},
    {"POST", "/api/sql", run_sql, JSON},
    {"GET", "/api/health", get_health, NULL},
    {"GET", "/metrics", get_prometheus_metrics, NULL},
};
const size_t api_route_count = ARRAY_SIZE(api_routes);
#undef JSON
#undef EVENTS
