/* scheduler.c — the queue (see scheduler.h): which experiment runs next, its run plan,
 * the executor it goes to, and how runs end.
 *
 * Three files share the scheduler's state (scheduler_internal.h): this one (the queue, the
 * plans, the batch, outcomes, the events every kind of run sends), executor_local.c (the
 * local executor: worker processes and their pipes) and scheduler_remote.c (runs whose
 * worker posts its events over HTTP: a remote worker, or a Slurm job's). The Slurm executor
 * is slurm.c, told about runs through slurm.h.
 *
 * What a worker says is not trusted with the daemon's files: a checkpoint it reports is
 * recorded only if it is a regular file in the experiment's directory under the data dir,
 * at an epoch the config plans, and checked again before it is handed to a worker
 * (--resume, a student's teacher), since the file may have been replaced meanwhile. */
#include "scheduler_internal.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "event.h"
#include "line_reader.h"
#include "util.h"

static void on_flush_timer(uv_timer_t *timer) { sched_flush_batch(timer->data); }

static void on_start_timer(uv_timer_t *timer) { sched_kick(timer->data); }

/* Every change of an experiment's status goes through here: its streams and the observer
 * (studies) learn it at once. */
void sched_status_changed(sched_t *sched, int64_t id) {
  sse_publish_status(sched->options.hub, id);
  if (sched->options.observe) sched->options.observe(sched->options.observer, id, SCHED_STATUS_CHANGED);
}

static int write_outcome(sched_t *sched, const outcome_t *outcome);

void sched_flush_batch(sched_t *sched) {
  uv_timer_stop(&sched->flush_timer);
  int result = db_flush(sched->options.db);
  for (outcome_t **link = &sched->pending; result == 0 && *link;) {
    outcome_t *outcome = *link;
    if (write_outcome(sched, outcome) != 0) break;
    *link = outcome->next;
    free(outcome->error);
    free(outcome->summary);
    free(outcome);
  }
  if (sched->pending && result == 0) result = -EBUSY; /* keep the retry timer going */
  size_t rows = db_batch_rows(sched->options.db);
  /* The batch is kept on failure (a full disk, a reader's lock): try again every second.
   * Past SCHED_BATCH_LIMIT rows the workers' pipes stop being read, so the daemon's memory
   * stays bounded and the workers block on their writes until the database takes rows
   * again. Nothing is dropped. */
  if (result != 0 && !sched->flush_failing)
    fprintf(stderr, "mapsaged: the database refused the batch (%s); %zu rows kept, retrying every second\n",
            strerror(-result), rows);
  sched->flush_failing = result != 0;
  if (result != 0 || rows > 0)
    uv_timer_start(&sched->flush_timer, on_flush_timer, result != 0 ? 1000 : SCHED_FLUSH_MS, 0);
  local_set_reading(sched, rows < SCHED_BATCH_LIMIT);
}

/* Called after rows were added to the batch. */
void sched_batch_grew(sched_t *sched) {
  size_t rows = db_batch_rows(sched->options.db);
  if (rows >= SCHED_BATCH_LIMIT) local_set_reading(sched, 0); /* the retry timer is already set */
  else if (rows >= SCHED_FLUSH_ROWS && !sched->flush_failing) sched_flush_batch(sched);
  else if (!uv_is_active((uv_handle_t *)&sched->flush_timer))
    uv_timer_start(&sched->flush_timer, on_flush_timer, SCHED_FLUSH_MS, 0);
}

static void on_job_ended(void *context, int64_t id, const char *status, const char *error, int retry);
static void on_job_changed(void *context, int64_t id) {
  sched_t *sched = context;
  sse_publish_status(sched->options.hub, id);
}
static void on_job_room(void *context) { sched_kick(context); }

int sched_create(const sched_options_t *options, sched_t **out, char *error, size_t error_size) {
  sched_t *sched = calloc(1, sizeof *sched);
  if (sched == NULL) return util_error(error, error_size, -ENOMEM, "out of memory");
  if (options->executor == EXECUTOR_SLURM) {
    slurm_options_t slurm = {.loop = options->loop, .db = options->db, .settings = options->slurm,
                             .worker_bin = options->worker_bin, .dataset_dir = options->dataset_dir,
                             .data_dir = options->data_dir, .threads = options->threads_per_worker,
                             .server_url = options->server_url,
                             .events = {sched, on_job_ended, on_job_changed, on_job_room}};
    int result = slurm_create(&slurm, &sched->slurm, error, error_size);
    if (result != 0) {
      free(sched);
      return result;
    }
  }
  sched->options = *options;
  sched->reading = 1;
  uv_timer_init(options->loop, &sched->flush_timer);
  sched->flush_timer.data = sched;
  uv_check_init(options->loop, &sched->turns);
  sched->turns.data = sched;
  uv_timer_init(options->loop, &sched->remote_timer);
  sched->remote_timer.data = sched;
  uv_timer_init(options->loop, &sched->start_timer);
  sched->start_timer.data = sched;
  sched->start_delay_ms = SCHED_START_RETRY_MS;
  sched->open_handles = 4 + (sched->slurm != NULL);
  *out = sched;
  return 0;
}

sched_counters_t sched_counters(const sched_t *sched) { return sched->counters; }

int sched_running(const sched_t *sched) { return sched->running; }
int sched_max_workers(const sched_t *sched) { return sched->options.max_workers; }

void sched_free_run(run_t *run) {
  free(run->finished_status);
  free(run->finished_error);
  free(run->summary_json);
}

// ---------------------------------------------------------------------------------------
// the run's log

void sched_log_line(run_t *run, const char *line, size_t length) {
  db_batch_log(run->sched->options.db, run->experiment_id, run->attempt, ++run->log_lines, line, length);
  sched_batch_grew(run->sched);
}

void sched_log_printf(run_t *run, const char *format, ...) {
  char line[1024];
  va_list args;
  va_start(args, format);
  int length = vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (length < 0) return;
  /* A longer line is cut, between characters: half a character would make the stored
   * line invalid UTF-8 for every reader of the log. */
  sched_log_line(run, line, length < (int)sizeof line ? (size_t)length : util_utf8_boundary(line, sizeof line - 1));
}

// ---------------------------------------------------------------------------------------
// events from the worker

static void replace_string(char **slot, const char *value) {
  free(*slot);
  *slot = value ? strdup(value) : NULL;
}

/* Whether `path` is a checkpoint a worker may be given: it resolves (every symlink
 * followed) to a regular file inside `directory`. A worker opens what it is given, so a
 * path elsewhere would make it read any file the daemon can, and a FIFO would hang it.
 * Returns 0 with the resolved path in `resolved`, or -errno with why in `reason`. */
int sched_check_checkpoint_file(const char *directory, const char *path, char *resolved, size_t resolved_size,
                                 char *reason, size_t reason_size) {
  char inside[PATH_MAX], file[PATH_MAX];
  struct stat info;
  if (realpath(directory, inside) == NULL)
    return util_error(reason, reason_size, -errno, "%s: %s", directory, strerror(errno));
  if (realpath(path, file) == NULL) return util_error(reason, reason_size, -errno, "%s: %s", path, strerror(errno));
  size_t length = strlen(inside);
  if (strncmp(file, inside, length) != 0 || file[length] != '/')
    return util_error(reason, reason_size, -EPERM, "%s is not inside %s/", path, inside);
  /* realpath() followed every link, so stat() sees the file itself (and never opens it). */
  if (stat(file, &info) != 0) return util_error(reason, reason_size, -errno, "%s: %s", path, strerror(errno));
  if (!S_ISREG(info.st_mode)) return util_error(reason, reason_size, -EPERM, "%s is not a regular file", path);
  if (util_strlcpy(resolved, file, resolved_size) != 0)
    return util_error(reason, reason_size, -ENAMETOOLONG, "%s: path too long", path);
  return 0;
}

/* <data_dir>/experiments/<id>: where an experiment's checkpoints must be. */
void sched_experiment_directory(const sched_t *sched, int64_t id, char *out, size_t size) {
  snprintf(out, size, "%s/experiments/%lld", sched->options.data_dir, (long long)id);
}

/* The epochs a stored config plans, all stages together; 0 when it cannot be read. */
int sched_planned_epochs(const json_t *config_json) {
  cfg_experiment_t *config = malloc(sizeof *config); /* ~10 KiB: not on the stack */
  cfg_errors_t *errors = malloc(sizeof *errors);
  int epochs = 0;
  if (config && errors && cfg_from_json(config_json, config, errors) == 0) epochs = cfg_total_epochs(config);
  free(config);
  free(errors);
  return epochs;
}

/* Whether a checkpoint event may be recorded: a plausible epoch (one the config plans:
 * a forged later one would pin the checkpoint as the newest) and a regular file in the
 * experiment's directory. Returns 0 with the resolved path, or -errno with why. */
static int check_checkpoint_event(const run_t *run, const ev_t *event, char *resolved, size_t resolved_size,
                                  char *reason, size_t reason_size) {
  if (run->planned_epochs <= 0)
    return util_error(reason, reason_size, -EINVAL, "the config's planned epochs are unknown");
  if (event->epoch < 0 || event->epoch > run->planned_epochs)
    return util_error(reason, reason_size, -ERANGE, "epoch %lld: the config plans epochs 0 to %d",
                      (long long)event->epoch, run->planned_epochs);
  char directory[PATH_MAX];
  sched_experiment_directory(run->sched, run->experiment_id, directory, sizeof directory);
  return sched_check_checkpoint_file(directory, event->path, resolved, resolved_size, reason, reason_size);
}

/* One protocol line of a run's worker: stored, published, recorded, or kept in its log.
 * Returns 0, or -EPERM when it was a checkpoint event refused (why in `refusal`, and in the
 * run's log). */
int sched_apply_event_line(run_t *run, const char *line, size_t length, char *refusal, size_t refusal_size) {
  sched_t *sched = run->sched;
  ev_t event;
  char error[256];
  int result = 0;
  if (ev_parse(line, length, &event, error, sizeof error) != 0) {
    sched->counters.rejected_lines++;
    sched_log_printf(run, "[mapsaged] not a protocol event (%s): %.*s", error,
               (int)util_utf8_boundary(line, length > 300 ? 300 : length), line);
    return 0;
  }
  sched->counters.events++;
  switch (event.type) {
  case EV_METRIC:
  case EV_EVAL:
    if (db_batch_event(sched->options.db, run->experiment_id, &event) != 0) {
      sched_log_printf(run, "[mapsaged] out of memory: an event was not stored");
      break;
    }
    sse_publish_event(sched->options.hub, run->experiment_id, &event);
    sched_batch_grew(sched);
    if (event.type == EV_EVAL && event.split == EV_SPLIT_TEST) { /* the last evaluation of an epoch */
      sched_flush_batch(sched);
      sse_publish_experiment(sched->options.hub, run->experiment_id);
      if (sched->options.observe)
        sched->options.observe(sched->options.observer, run->experiment_id, SCHED_EPOCH_ENDED);
    }
    break;
  case EV_STAGE:
    if (db_batch_event(sched->options.db, run->experiment_id, &event) != 0) {
      sched_log_printf(run, "[mapsaged] out of memory: a stage start was not stored");
      break;
    }
    sse_publish_event(sched->options.hub, run->experiment_id, &event);
    sched_batch_grew(sched);
    break;
  case EV_STARTED: {
    json_object_del(event.root, "event");
    char *text = json_dumps(event.root, JSON_COMPACT);
    if (text) db_experiment_set_worker(sched->options.db, run->experiment_id, text);
    free(text);
    break;
  }
  case EV_FINISHED: {
    replace_string(&run->finished_status, event.status);
    replace_string(&run->finished_error, event.error);
    json_t *summary = json_object_get(event.root, "summary");
    free(run->summary_json);
    run->summary_json = json_is_object(summary) ? json_dumps(summary, JSON_COMPACT) : NULL;
    break;
  }
  case EV_LOG: {
    const char *level = json_string_value(json_object_get(event.root, "level"));
    sched_log_printf(run, "[%s] %s", level ? level : "info", json_string_value(json_object_get(event.root, "message")));
    break;
  }
  case EV_CHECKPOINT: {
    char resolved[PATH_MAX];
    if (check_checkpoint_event(run, &event, resolved, sizeof resolved, refusal, refusal_size) != 0) {
      sched_log_printf(run, "[mapsaged] checkpoint refused, not recorded: %s", refusal);
      fprintf(stderr, "mapsaged: experiment %lld: checkpoint refused: %s\n", (long long)run->experiment_id, refusal);
      result = -EPERM;
      break;
    }
    /* Written at once, not batched: a restart must find it even if the batch is lost. */
    sched_flush_batch(sched);
    if (db_checkpoint_add(sched->options.db, run->experiment_id, event.epoch, event.step, resolved, event.bytes) != 0)
      sched_log_printf(run, "[mapsaged] could not record the checkpoint %s", resolved);
    else if (sched->slurm)
      slurm_checkpoint_recorded(sched->slurm, run->experiment_id, resolved);
    break;
  }
  case EV_UNKNOWN:
    sched_log_printf(run, "[mapsaged] unknown event kept as is: %.*s", (int)util_utf8_boundary(line, length > 300 ? 300 : length),
               line);
    break;
  }
  ev_release(&event);
  return result;
}

static void sched_part_closed(sched_t *sched);
static void on_sched_closed(uv_handle_t *handle) { sched_part_closed(handle->data); }
static void on_slurm_stopped(void *data) { sched_part_closed(data); }

static void sched_part_closed(sched_t *sched) {
  if (--sched->open_handles > 0) return;
  while (sched->pending) { /* still refused at exit: the next start marks these runs interrupted */
    outcome_t *outcome = sched->pending;
    sched->pending = outcome->next;
    fprintf(stderr, "mapsaged: could not record that experiment %lld %s\n", (long long)outcome->experiment_id,
            outcome->status);
    free(outcome->error);
    free(outcome->summary);
    free(outcome);
  }
  void (*done)(void *) = sched->stopped;
  void *data = sched->stopped_data;
  free(sched);
  if (done) done(data);
}

/* Every worker is gone: write what is left and free the scheduler (once its handles have
 * closed, since their memory is the scheduler's). */
void sched_stop_finished(sched_t *sched) {
  sched_flush_batch(sched);
  /* Remote runs stay `running` in the database; the next start marks them interrupted. */
  while (sched->remotes) sched_forget_remote(sched, sched->remotes);
  uv_timer_stop(&sched->flush_timer);
  uv_close((uv_handle_t *)&sched->flush_timer, on_sched_closed);
  uv_close((uv_handle_t *)&sched->turns, on_sched_closed);
  uv_close((uv_handle_t *)&sched->remote_timer, on_sched_closed);
  uv_close((uv_handle_t *)&sched->start_timer, on_sched_closed);
  if (sched->slurm) slurm_stop(sched->slurm, on_slurm_stopped, sched);
}

/* Writes how a run ended or, while the database refuses it, keeps it to be written after
 * a later flush: an outcome is never lost while the daemon runs. */
void sched_record_outcome(sched_t *sched, const outcome_t *outcome) {
  if (write_outcome(sched, outcome) == 0) return;
  outcome_t *kept = calloc(1, sizeof *kept);
  if (kept) {
    *kept = *outcome;
    kept->error = outcome->error ? strdup(outcome->error) : NULL;
    kept->summary = outcome->summary ? strdup(outcome->summary) : NULL;
    kept->next = sched->pending;
    sched->pending = kept;
  }
  uv_timer_start(&sched->flush_timer, on_flush_timer, 1000, 0);
}

/* Writes how a run ended, then tells its streams and, if it cannot teach any more, the
 * runs waiting for it. Returns 0, or the database's refusal (the caller keeps it). */
static int write_outcome(sched_t *sched, const outcome_t *outcome) {
  db_t *db = sched->options.db;
  int64_t id = outcome->experiment_id;
  int result = outcome->retry ? db_experiment_retry(db, id, outcome->error)
                              : db_experiment_finish(db, id, outcome->status, outcome->error, outcome->summary);
  if (result != 0 && result != -ENOENT) return result;
  sched_status_changed(sched, id);
  if (strcmp(outcome->status, DB_FAILED) == 0 || strcmp(outcome->status, DB_CANCELLED) == 0)
    sched_teacher_ended(sched, id, outcome->status, outcome->error);
  return 0;
}

static void on_dependent_failed(void *context, int64_t id) {
  sched_t *sched = context;
  sched_status_changed(sched, id);
}

void sched_teacher_ended(sched_t *sched, int64_t teacher_id, const char *status, const char *error) {
  char reason[1200];
  /* The teacher's error is quoted up to what the line has room for, cut between characters. */
  const size_t quoted = error ? util_utf8_boundary(error, strlen(error) < 1000 ? strlen(error) : 1000) : 0;
  snprintf(reason, sizeof reason, "its teacher, experiment %lld, %s%s%.*s", (long long)teacher_id,
           strcmp(status, DB_CANCELLED) == 0 ? "was cancelled" : "failed", error && error[0] ? ": " : "", (int)quoted,
           error ? error : "");
  db_fail_dependents(sched->options.db, teacher_id, reason, on_dependent_failed, sched);
}

/* A run that cannot start fails, saying why, and the runs waiting for it as their teacher
 * fail with it, naming it: none waits for ever for a teacher that will never run. */
void sched_fail_before_start(sched_t *sched, int64_t id, const char *error) {
  fprintf(stderr, "mapsaged: experiment %lld failed: %s\n", (long long)id, error);
  db_experiment_finish(sched->options.db, id, DB_FAILED, error, NULL);
  sched_status_changed(sched, id);
  sched_teacher_ended(sched, id, DB_FAILED, error);
}

/* The student `id` cannot start: it fails, saying why. Returns NULL for config_for_worker. */
static char *fail_student(sched_t *sched, int64_t id, json_t *config, char *config_json, const char *error) {
  sched_fail_before_start(sched, id, error);
  json_decref(config);
  free(config_json);
  return NULL;
}

/* The config the worker gets: the stored one, with an experiment teacher's final
 * checkpoint filled in. Either teacher's checkpoint is checked here, as it is handed over,
 * to be a regular file inside the data directory (an experiment teacher's: inside its own
 * directory there), since it may have been replaced by a link or a FIFO since it was
 * recorded or submitted. Returns NULL (and fails the experiment, saying why) when the
 * teacher has no such checkpoint. */
static char *config_for_worker(sched_t *sched, int64_t id, char *config_json) {
  json_t *config = json_loads(config_json, 0, NULL);
  json_t *teacher = json_object_get(config, "teacher");
  json_t *teacher_id = json_object_get(teacher, "experiment");
  const char *key = json_object_get(teacher, "safetensors") ? "safetensors" : "checkpoint"; /* the file it reads */
  const char *given = json_string_value(json_object_get(teacher, key));
  char path[4096], directory[4096], resolved[PATH_MAX], reason[PATH_MAX + 256], error[PATH_MAX + 512];
  if (json_is_integer(teacher_id)) {
    if (db_checkpoint_latest(sched->options.db, json_integer_value(teacher_id), path, sizeof path) != 0) {
      snprintf(error, sizeof error, "its teacher, experiment %lld, left no checkpoint to learn from",
               (long long)json_integer_value(teacher_id));
      return fail_student(sched, id, config, config_json, error);
    }
    sched_experiment_directory(sched, json_integer_value(teacher_id), directory, sizeof directory);
  } else if (given) {
    util_strlcpy(path, given, sizeof path);
    util_strlcpy(directory, sched->options.data_dir, sizeof directory);
  } else {
    json_decref(config);
    return config_json;
  }
  if (sched_check_checkpoint_file(directory, path, resolved, sizeof resolved, reason, sizeof reason) != 0) {
    snprintf(error, sizeof error, "its teacher's checkpoint cannot be given to a worker: %s", reason);
    return fail_student(sched, id, config, config_json, error);
  }
  json_object_set_new(teacher, key, json_string(resolved));
  char *checked = json_dumps(config, JSON_COMPACT);
  json_decref(config);
  free(config_json);
  return checked;
}

/* A worker that could not be started. Out of descriptors, processes or memory (EMFILE,
 * ENFILE, EAGAIN, ENOMEM) is the machine's passing state, not the run's fault: the run goes
 * back to waiting as it was, and starting is tried again after a pause that doubles up to
 * SCHED_START_RETRY_MAX_MS — failing every queued run in one pass, as a loop of starts
 * would, loses a study to a moment of pressure. After SCHED_START_GIVE_UP_S of nothing but
 * failures, or on any other error (the worker program missing), the run fails, saying why.
 * Returns nonzero when the pass of starts should stop. */
int sched_start_failed(sched_t *sched, int64_t id, int code) {
  char error[4200];
  snprintf(error, sizeof error, "cannot start the worker %s: %s", sched->options.worker_bin, uv_strerror(code));
  const int transient = code == UV_EMFILE || code == UV_ENFILE || code == UV_EAGAIN || code == UV_ENOMEM;
  const double now = util_monotonic();
  if (sched->start_failing_since == 0) sched->start_failing_since = now;
  if (!transient || now - sched->start_failing_since >= SCHED_START_GIVE_UP_S) {
    sched_fail_before_start(sched, id, error);
    return 0; /* the next run may start */
  }
  char waiting[4300];
  snprintf(waiting, sizeof waiting, "%s; waiting, tried again in %u ms", error, sched->start_delay_ms);
  fprintf(stderr, "mapsaged: experiment %lld: %s\n", (long long)id, waiting);
  if (db_experiment_unstart(sched->options.db, id, waiting) != 0) {
    sched_fail_before_start(sched, id, error);
    return 0;
  }
  sched_status_changed(sched, id);
  uv_timer_start(&sched->start_timer, on_start_timer, sched->start_delay_ms, 0);
  sched->start_delay_ms = sched->start_delay_ms * 2 < SCHED_START_RETRY_MAX_MS ? sched->start_delay_ms * 2
                                                                              : SCHED_START_RETRY_MAX_MS;
  return -EAGAIN;
}

/* The worker's --memory-limit for a config: max(estimate × 1.5, estimate + 256 MiB + 128 MiB
 * per OpenBLAS thread), or 0 (none) when the estimate is incomplete (a checkpoint teacher's
 * config is inside the file) or there is no --max-worker-memory. RLIMIT_DATA counts
 * reserved address space, not resident pages: OpenBLAS mallocs a 128 MiB buffer per thread
 * and glibc reserves its own; measured VmData peaks ran 207–251 MiB above the peak RSS at
 * 2 threads (docs/config.md). Not capped by --max-worker-memory, which is about the RSS the
 * estimate predicts: the cap would refuse the reservations, not the runs. */
static size_t memory_limit(const sched_t *sched, const cfg_experiment_t *config) {
  const sched_options_t *options = &sched->options;
  if (options->max_worker_memory == 0) return 0;
  cfg_experiment_t *teacher = malloc(sizeof *teacher);
  cfg_errors_t *errors = malloc(sizeof *errors);
  size_t limit = 0;
  if (!teacher || !errors) goto done;
  int have_teacher = 0;
  if (config->teacher.kind == CFG_TEACHER_EXPERIMENT) {
    json_t *row = db_experiment_get(options->db, config->teacher.experiment, 1);
    have_teacher = row && cfg_from_json(json_object_get(row, "config"), teacher, errors) == 0;
    json_decref(row);
  }
  if (config->teacher.kind != CFG_TEACHER_NONE && !have_teacher) goto done;
  cfg_memory_t memory;
  if (cfg_memory_estimate(config, have_teacher ? teacher : NULL, options->teacher_cache_budget, &memory) != 0)
    goto done;
  const size_t reserved = ((size_t)256 << 20) + (size_t)options->threads_per_worker * ((size_t)128 << 20);
  limit = memory.total + memory.total / 2 > memory.total + reserved ? memory.total + memory.total / 2
                                                                   : memory.total + reserved;
done:
  free(teacher);
  free(errors);
  return limit;
}

void exec_plan_free(exec_plan_t *plan) {
  free(plan->config_json);
  free(plan->config);
  plan->config_json = NULL;
  plan->config = NULL;
}

/* Resolves what experiment `id` runs with, taking `config_json` (its stored config): the
 * config parsed once, the teacher's checkpoint filled in and checked, its directory made,
 * and, for a run that ran before, the checkpoint it goes on from if that is still a
 * regular file in its directory (it may have been replaced, by a link out or a FIFO, since
 * it was recorded). Returns 0, or -ENOENT when the run cannot start: it has failed, saying
 * why, and the next one may start. */
static int resolve_plan(sched_t *sched, int64_t id, char *config_json, exec_plan_t *plan) {
  const sched_options_t *options = &sched->options;
  memset(plan, 0, sizeof *plan);
  plan->experiment_id = id;
  if ((plan->config_json = config_for_worker(sched, id, config_json)) == NULL) return -ENOENT;
  char error[PATH_MAX + 512];
  cfg_errors_t *errors = malloc(sizeof *errors);
  json_t *parsed = json_loads(plan->config_json, 0, NULL);
  plan->config = malloc(sizeof *plan->config); /* ~10 KiB: not on the stack */
  int valid = errors && plan->config && cfg_from_json(parsed, plan->config, errors) == 0;
  if (!valid)
    snprintf(error, sizeof error, "its stored config cannot be read: %s%s%s",
             errors && errors->count ? errors->items[0].path : "out of memory",
             errors && errors->count ? ": " : "", errors && errors->count ? errors->items[0].message : "");
  json_decref(parsed);
  free(errors);
  if (!valid) {
    sched_fail_before_start(sched, id, error);
    exec_plan_free(plan);
    return -ENOENT;
  }
  plan->planned_epochs = cfg_total_epochs(plan->config);
  plan->max_attempts = plan->config->max_attempts;
  plan->memory_limit = memory_limit(sched, plan->config);
  sched_experiment_directory(sched, id, plan->checkpoint_dir, sizeof plan->checkpoint_dir);
  int result = util_make_directories(plan->checkpoint_dir);
  if (result != 0) {
    snprintf(error, sizeof error, "cannot create the checkpoint directory %s: %s", plan->checkpoint_dir,
             strerror(-result));
    sched_fail_before_start(sched, id, error);
    exec_plan_free(plan);
    return -ENOENT;
  }
  char status[32] = "", recorded[4096] = "", reason[sizeof plan->resume_refused];
  db_experiment_status(options->db, id, status, sizeof status);
  if (strcmp(status, DB_INTERRUPTED) == 0 && db_checkpoint_latest(options->db, id, recorded, sizeof recorded) == 0 &&
      sched_check_checkpoint_file(plan->checkpoint_dir, recorded, plan->resume, sizeof plan->resume, reason,
                            sizeof reason) != 0) {
    plan->resume[0] = '\0';
    util_strlcpy(plan->resume_refused, reason, sizeof plan->resume_refused);
    fprintf(stderr, "mapsaged: experiment %lld: the latest checkpoint cannot be resumed from (%s): starting over\n",
            (long long)id, reason);
  }
  return 0;
}

/* The Slurm executor: the plan becomes a batch job (slurm.c); the run stays queued, with
 * its job's state, until the job's worker claims it with its first post. */
static int submit_job(sched_t *sched, exec_plan_t *plan) {
  char error[PATH_MAX + 512];
  const int64_t id = plan->experiment_id;
  if (slurm_submit(sched->slurm, plan, error, sizeof error) != 0) sched_fail_before_start(sched, id, error);
  else sse_publish_status(sched->options.hub, id);
  return 0;
}

static int executor_has_room(const sched_t *sched) {
  return sched->slurm ? slurm_has_room(sched->slurm) : sched->running < sched->options.max_workers;
}

void sched_kick(sched_t *sched) {
  /* After a failed start, the retry timer decides when to try again. */
  if (uv_is_active((uv_handle_t *)&sched->start_timer)) return;
  while (!sched->stopping && executor_has_room(sched)) {
    int64_t id;
    char *config_json;
    exec_plan_t plan;
    if (db_experiment_next(sched->options.db, &id, &config_json) != 0) return;
    if (resolve_plan(sched, id, config_json, &plan) != 0) continue; /* failed, said why */
    if ((sched->slurm ? submit_job(sched, &plan) : local_start(sched, &plan)) != 0) return;
  }
}

/* A job ended, or was requeued, without its run's own `finished` (slurm.h). */
static void on_job_ended(void *context, int64_t id, const char *status, const char *error, int retry) {
  sched_t *sched = context;
  char current[32] = "";
  if (db_experiment_status(sched->options.db, id, current, sizeof current) != 0 || db_status_is_terminal(current)) {
    sched_kick(sched);
    return;
  }
  remote_t *remote = sched_find_remote(sched, id);
  if ((retry & SLURM_AFTER_REQUEUE) && remote == NULL &&
      (strcmp(current, DB_INTERRUPTED) == 0 || strcmp(current, DB_QUEUED) == 0)) {
    /* Not claimed since its job was requeued: the requeued attempt's end, counted with the
     * requeue. Its job has ended, so the run is submitted again and resumes from its last
     * checkpoint. */
    fprintf(stderr, "mapsaged: experiment %lld stays interrupted (its job was requeued before): %s\n",
            (long long)id, error);
    sched_kick(sched);
    return;
  }
  retry &= ~SLURM_AFTER_REQUEUE;
  outcome_t outcome = {.experiment_id = id, .status = status, .error = (char *)error};
  char message[2400];
  /* A run that ran before and whose job ended without claiming it again (its worker gave
   * up on a daemon that was down, say) is tried again too, as a crash is. */
  const int unclaimed_rerun = !remote && strcmp(current, DB_INTERRUPTED) == 0 && strcmp(status, DB_FAILED) == 0;
  if ((strcmp(status, DB_INTERRUPTED) == 0 && retry) || unclaimed_rerun) {
    if (remote == NULL && strcmp(current, DB_QUEUED) == 0) { /* never ran: its job runs later, or again */
      sched_kick(sched);
      return;
    }
    json_t *experiment = db_experiment_get(sched->options.db, id, 1);
    json_t *attempts = json_object_get(json_object_get(experiment, "config"), "max_attempts");
    const int max_attempts = json_is_integer(attempts) ? (int)json_integer_value(attempts) : 2;
    json_decref(experiment);
    const int crashes = db_experiment_crashes(sched->options.db, id);
    if (crashes + 1 < max_attempts) {
      snprintf(message, sizeof message, "%s%s (%d of max_attempts %d)", error,
               unclaimed_rerun ? "; it runs again" : "", crashes + 2, max_attempts);
      outcome = (outcome_t){.experiment_id = id, .status = DB_INTERRUPTED, .error = message, .retry = 1};
    } else {
      snprintf(message, sizeof message, "%s; but it has had its max_attempts (%d)", error, max_attempts);
      outcome = (outcome_t){.experiment_id = id, .status = DB_FAILED, .error = message};
    }
  }
  if (remote) {
    sched_log_printf(&remote->run, "[mapsaged] %s", outcome.error);
    sched_forget_remote(sched, remote);
  }
  sched_flush_batch(sched);
  fprintf(stderr, "mapsaged: experiment %lld %s: %s\n", (long long)id, outcome.status, outcome.error);
  sched_record_outcome(sched, &outcome);
  sched_kick(sched);
}

static int cancel_run(sched_t *sched, int64_t id, const char *reason, int *running);

int sched_cancel(sched_t *sched, int64_t id, const char *reason, int *running) {
  int result = cancel_run(sched, id, reason, running);
  /* Its job, pending or running, is cancelled in Slurm too: scancel. */
  if (result == 0 && sched->slurm) slurm_cancel(sched->slurm, id);
  return result;
}

static int cancel_run(sched_t *sched, int64_t id, const char *reason, int *running) {
  if (reason == NULL) reason = "cancelled";
  if (local_cancel(sched, id, reason)) {
    *running = 1;
    return 0;
  }
  remote_t *remote = sched_find_remote(sched, id);
  if (remote) { /* its worker learns it from the answer to its next post (409) */
    *running = 0;
    sched_log_printf(&remote->run, "[mapsaged] cancel requested: the remote worker is refused from now on");
    sched_flush_batch(sched);
    sched_record_outcome(sched, &(outcome_t){.experiment_id = id, .status = DB_CANCELLED, .error = (char *)reason});
    sched_forget_remote(sched, remote);
    sched_kick(sched);
    return 0;
  }
  *running = 0;
  char status[32];
  int result = db_experiment_status(sched->options.db, id, status, sizeof status);
  if (result != 0) return result;
  if (db_status_is_terminal(status)) return -EALREADY;
  char before[300];
  snprintf(before, sizeof before, "%s before it ran", reason);
  result = db_experiment_finish(sched->options.db, id, DB_CANCELLED, before, NULL);
  if (result == 0) {
    sched_status_changed(sched, id);
    sched_teacher_ended(sched, id, DB_CANCELLED, NULL);
  }
  return result;
}

void sched_stop(sched_t *sched, void (*done)(void *data), void *data) {
  sched->stopping = 1;
  sched->stopped = done;
  sched->stopped_data = data;
  if (sched->alive == 0) {
    sched_stop_finished(sched);
    return;
  }
  local_stop_all(sched);
}

