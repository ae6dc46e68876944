/* scheduler.c — the queue, the worker processes and their event pipes (see scheduler.h).
 *
 * A worker is a child process with three pipes. Its stdout carries protocol lines, its
 * stderr the run's log; both are split into lines by a line_reader_t (line_reader.h)
 * that never holds more than EV_LINE_MAX bytes, so a worker that prints an endless line or
 * garbage costs bounded memory and ends up, marked, in the log. The outcome of a run is decided in
 * finish_worker() once three things have happened, in any order: the process exited and
 * both pipes reached end-of-file. Deciding at exit alone would lose the last events still
 * in the pipe. A worker that runs elsewhere posts the same lines over HTTP instead
 * (sched_post_events): a remote run, claimed by its first post and ended by its `finished`
 * event; both kinds share run_t and apply_event_line().
 *
 * What a worker says is not trusted with the daemon's files: a checkpoint it reports is
 * recorded only if it is a regular file in the experiment's directory under the data dir,
 * at an epoch the config plans, and checked again before it is handed to a worker
 * (--resume, a student's teacher), since the file may have been replaced meanwhile. A
 * remote run's later posts must carry the secret its claim was answered with
 * (docs/security.md, "Remote workers"). */
#include "scheduler.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "event.h"
#include "line_reader.h"
#include "util.h"

#define READ_BUFFER_SIZE 65536
#define LOG_TAIL_LINES 5     /* stderr lines quoted when a worker dies */
#define LOG_TAIL_WIDTH 240

typedef struct worker worker_t;

/* How a run ended, waiting to be written when the database refused it (locked, full):
 * retried after each successful flush, so an outcome is never lost while the daemon runs. */
typedef struct outcome {
  struct outcome *next;
  int64_t experiment_id;
  const char *status;     /* one of the DB_* constants */
  char *error, *summary;  /* owned; may be NULL */
  int retry;              /* a crash that will be tried again (db_experiment_retry) */
} outcome_t;

/* What a run's events act on, whether they come from a local worker's stdout or, from a
 * worker elsewhere, over HTTP (POST /api/experiments/{id}/events: a remote run). */
typedef struct {
  sched_t *sched;
  int64_t experiment_id;
  int attempt;
  int planned_epochs;   /* all stages' epochs: a checkpoint beyond them is refused; 0 = unknown */
  int64_t log_lines;
  char *finished_status, *finished_error, *summary_json; /* from its `finished` event */
} run_t;

/* A run whose worker posts its events over HTTP: claimed by its first post, ended by its
 * `finished` event or a cancel. */
typedef struct remote {
  run_t run;
  struct remote *next;
  double last_post; /* util_monotonic(): a run silent for options.remote_timeout_s is given up */
  /* Given to the claiming worker only, kept only here: a daemon restart interrupts the run
   * anyway, and a database copy must not let anyone post for it. */
  char secret[2 * SCHED_SECRET_BYTES + 1];
} remote_t;

struct worker {
  run_t run;
  worker_t *next;
  uv_process_t process;
  uv_pipe_t input, output, errors;
  uv_timer_t kill_timer;
  uv_write_t write_request;
  char *config_json;
  int open_handles;
  line_reader_t output_lines, error_lines;
  char read_buffer[READ_BUFFER_SIZE];
  int exited, output_done, errors_done;
  int64_t exit_status;
  int term_signal;
  int cancel_requested, stop_requested;
  char cancel_reason[512];   /* the error a cancelled run ends with */
  char log_tail[LOG_TAIL_LINES][LOG_TAIL_WIDTH]; /* the last non-empty stderr lines, a ring */
  int log_tail_next;
  int max_attempts;        /* from the config: starts allowed for a worker that crashes */
  int waiting_turn;        /* had its read this loop iteration: resumed by sched->turns */
};

struct sched {
  sched_options_t options;
  worker_t *workers;
  int running;
  int alive;               /* worker structs not yet freed (some may be closing) */
  int reading;             /* workers' pipes are read (0 while the batch is over its limit) */
  int flush_failing;       /* the last flush failed: retried by the timer, said once */
  outcome_t *pending;      /* outcomes not yet written */
  remote_t *remotes;       /* runs whose workers post their events over HTTP */
  int stopping;
  uv_timer_t flush_timer;
  uv_check_t turns;        /* gives workers that had their read this iteration the next one */
  uv_timer_t remote_timer; /* looks for remote runs gone silent, while there are any */
  uv_timer_t start_timer;  /* after a worker could not start: when to try again */
  unsigned start_delay_ms; /* the next pause before trying again */
  double start_failing_since; /* util_monotonic() of the first of consecutive failed starts; 0: none */
  int open_handles;        /* flush_timer, turns, remote_timer and start_timer, until all are closed */
  void (*stopped)(void *data);
  void *stopped_data;
  sched_counters_t counters;
};

static void flush_batch(sched_t *sched);
static void record_outcome(sched_t *sched, const outcome_t *outcome);
static void set_reading(sched_t *sched, int reading);
static void on_turns(uv_check_t *check);

static void on_flush_timer(uv_timer_t *timer) { flush_batch(timer->data); }

static void on_start_timer(uv_timer_t *timer) { sched_kick(timer->data); }

/* Every change of an experiment's status goes through here: its streams and the observer
 * (studies) learn it at once. */
static void status_changed(sched_t *sched, int64_t id) {
  sse_publish_status(sched->options.hub, id);
  if (sched->options.observe) sched->options.observe(sched->options.observer, id, SCHED_STATUS_CHANGED);
}

static int write_outcome(sched_t *sched, const outcome_t *outcome);

static void flush_batch(sched_t *sched) {
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
  set_reading(sched, rows < SCHED_BATCH_LIMIT);
}

/* Called after rows were added to the batch. */
static void batch_grew(sched_t *sched) {
  size_t rows = db_batch_rows(sched->options.db);
  if (rows >= SCHED_BATCH_LIMIT) set_reading(sched, 0); /* the retry timer is already set */
  else if (rows >= SCHED_FLUSH_ROWS && !sched->flush_failing) flush_batch(sched);
  else if (!uv_is_active((uv_handle_t *)&sched->flush_timer))
    uv_timer_start(&sched->flush_timer, on_flush_timer, SCHED_FLUSH_MS, 0);
}

int sched_create(const sched_options_t *options, sched_t **out) {
  sched_t *sched = calloc(1, sizeof *sched);
  if (sched == NULL) return -ENOMEM;
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
  sched->open_handles = 4;
  *out = sched;
  return 0;
}

sched_counters_t sched_counters(const sched_t *sched) { return sched->counters; }

int sched_running(const sched_t *sched) { return sched->running; }
int sched_max_workers(const sched_t *sched) { return sched->options.max_workers; }

static worker_t *find_worker(sched_t *sched, int64_t id) {
  for (worker_t *w = sched->workers; w; w = w->next)
    if (w->run.experiment_id == id) return w;
  return NULL;
}

static remote_t *find_remote(sched_t *sched, int64_t id) {
  for (remote_t *r = sched->remotes; r; r = r->next)
    if (r->run.experiment_id == id) return r;
  return NULL;
}

static void free_run(run_t *run) {
  free(run->finished_status);
  free(run->finished_error);
  free(run->summary_json);
}

static void forget_remote(sched_t *sched, remote_t *remote) {
  for (remote_t **link = &sched->remotes; *link; link = &(*link)->next) {
    if (*link == remote) {
      *link = remote->next;
      break;
    }
  }
  free_run(&remote->run);
  free(remote);
}

// ---------------------------------------------------------------------------------------
// the run's log

static void log_line(run_t *run, const char *line, size_t length) {
  db_batch_log(run->sched->options.db, run->experiment_id, run->attempt, ++run->log_lines, line, length);
  batch_grew(run->sched);
}

static void log_printf(run_t *run, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void log_printf(run_t *run, const char *format, ...) {
  char line[1024];
  va_list args;
  va_start(args, format);
  int length = vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (length < 0) return;
  /* A longer line is cut, between characters: half a character would make the stored
   * line invalid UTF-8 for every reader of the log. */
  log_line(run, line, length < (int)sizeof line ? (size_t)length : util_utf8_boundary(line, sizeof line - 1));
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
static int check_checkpoint_file(const char *directory, const char *path, char *resolved, size_t resolved_size,
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
static void experiment_directory(const sched_t *sched, int64_t id, char *out, size_t size) {
  snprintf(out, size, "%s/experiments/%lld", sched->options.data_dir, (long long)id);
}

/* The epochs a stored config plans, all stages together; 0 when it cannot be read. */
static int planned_epochs(const json_t *config_json) {
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
  experiment_directory(run->sched, run->experiment_id, directory, sizeof directory);
  return check_checkpoint_file(directory, event->path, resolved, resolved_size, reason, reason_size);
}

/* One protocol line of a run's worker: stored, published, recorded, or kept in its log.
 * Returns 0, or -EPERM when it was a checkpoint event refused (why in `refusal`, and in the
 * run's log). */
static int apply_event_line(run_t *run, const char *line, size_t length, char *refusal, size_t refusal_size) {
  sched_t *sched = run->sched;
  ev_t event;
  char error[256];
  int result = 0;
  if (ev_parse(line, length, &event, error, sizeof error) != 0) {
    sched->counters.rejected_lines++;
    log_printf(run, "[mapsaged] not a protocol event (%s): %.*s", error,
               (int)util_utf8_boundary(line, length > 300 ? 300 : length), line);
    return 0;
  }
  sched->counters.events++;
  switch (event.type) {
  case EV_METRIC:
  case EV_EVAL:
    if (db_batch_event(sched->options.db, run->experiment_id, &event) != 0) {
      log_printf(run, "[mapsaged] out of memory: an event was not stored");
      break;
    }
    sse_publish_event(sched->options.hub, run->experiment_id, &event);
    batch_grew(sched);
    if (event.type == EV_EVAL && event.split == EV_SPLIT_TEST) { /* the last evaluation of an epoch */
      flush_batch(sched);
      sse_publish_experiment(sched->options.hub, run->experiment_id);
      if (sched->options.observe)
        sched->options.observe(sched->options.observer, run->experiment_id, SCHED_EPOCH_ENDED);
    }
    break;
  case EV_STAGE:
    if (db_batch_event(sched->options.db, run->experiment_id, &event) != 0) {
      log_printf(run, "[mapsaged] out of memory: a stage start was not stored");
      break;
    }
    sse_publish_event(sched->options.hub, run->experiment_id, &event);
    batch_grew(sched);
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
    log_printf(run, "[%s] %s", level ? level : "info", json_string_value(json_object_get(event.root, "message")));
    break;
  }
  case EV_CHECKPOINT: {
    char resolved[PATH_MAX];
    if (check_checkpoint_event(run, &event, resolved, sizeof resolved, refusal, refusal_size) != 0) {
      log_printf(run, "[mapsaged] checkpoint refused, not recorded: %s", refusal);
      fprintf(stderr, "mapsaged: experiment %lld: checkpoint refused: %s\n", (long long)run->experiment_id, refusal);
      result = -EPERM;
      break;
    }
    /* Written at once, not batched: a restart must find it even if the batch is lost. */
    flush_batch(sched);
    if (db_checkpoint_add(sched->options.db, run->experiment_id, event.epoch, event.step, resolved, event.bytes) != 0)
      log_printf(run, "[mapsaged] could not record the checkpoint %s", resolved);
    break;
  }
  case EV_UNKNOWN:
    log_printf(run, "[mapsaged] unknown event kept as is: %.*s", (int)util_utf8_boundary(line, length > 300 ? 300 : length),
               line);
    break;
  }
  ev_release(&event);
  return result;
}

static void handle_event_line(worker_t *worker, const char *line, size_t length) {
  char refusal[PATH_MAX + 256]; /* said in the run's log already */
  apply_event_line(&worker->run, line, length, refusal, sizeof refusal);
}

static void handle_error_line(worker_t *worker, const char *line, size_t length) {
  log_line(&worker->run, line, length);
  if (length > 0) {
    char *slot = worker->log_tail[worker->log_tail_next];
    worker->log_tail_next = (worker->log_tail_next + 1) % LOG_TAIL_LINES;
    size_t kept = length < LOG_TAIL_WIDTH - 1 ? length : LOG_TAIL_WIDTH - 1;
    memcpy(slot, line, kept);
    slot[kept] = '\0';
  }
}

/* "; log tail: a | b | c", oldest first, or "" when the worker wrote nothing. */
static void format_log_tail(const worker_t *worker, char *out, size_t size) {
  size_t used = 0;
  out[0] = '\0';
  for (int i = 0; i < LOG_TAIL_LINES; i++) {
    const char *line = worker->log_tail[(worker->log_tail_next + i) % LOG_TAIL_LINES];
    if (!line[0]) continue;
    int n = snprintf(out + used, size - used, "%s%s", used ? " | " : "; log tail: ", line);
    if (n < 0 || (size_t)n >= size - used) break;
    used += (size_t)n;
  }
}

/* The line reader's callbacks, for a worker's two pipes. */
static void on_event_line(void *context, const char *line, size_t length) { handle_event_line(context, line, length); }
static void on_error_line(void *context, const char *line, size_t length) { handle_error_line(context, line, length); }

static void on_overlong_line(void *context, const char *begun, size_t length) {
  worker_t *worker = context;
  /* Quote its first 200 bytes, or fewer, so that the quote ends between characters. */
  size_t quoted = util_utf8_boundary(begun, length < 200 ? length : 200);
  log_printf(&worker->run, "[mapsaged] a line longer than %d bytes was cut; it began: %.*s", EV_LINE_MAX, (int)quoted,
             begun);
}

// ---------------------------------------------------------------------------------------
// the process

static void finish_worker(worker_t *worker);

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buffer) {
  (void)suggested;
  worker_t *worker = handle->data;
  *buffer = uv_buf_init(worker->read_buffer, sizeof worker->read_buffer);
}

static void on_output(uv_stream_t *stream, ssize_t n, const uv_buf_t *buffer);
static void on_errors(uv_stream_t *stream, ssize_t n, const uv_buf_t *buffer);

/* Reads a worker's pipes when the batch has room and, for its events, when it has not had
 * its read this loop iteration. */
static void update_reading(worker_t *worker) {
  int reading = worker->run.sched->reading;
  if (!worker->output_done) {
    if (reading && !worker->waiting_turn) uv_read_start((uv_stream_t *)&worker->output, on_alloc, on_output);
    else uv_read_stop((uv_stream_t *)&worker->output);
  }
  if (!worker->errors_done) {
    if (reading) uv_read_start((uv_stream_t *)&worker->errors, on_alloc, on_errors);
    else uv_read_stop((uv_stream_t *)&worker->errors);
  }
}

/* One read (READ_BUFFER_SIZE bytes) of events per worker per loop iteration. libuv reads a
 * busy pipe up to 32 times in a row, and eight workers streaming flat out then kept the
 * loop from serving HTTP and live streams for seconds. */
static void end_turn(worker_t *worker) {
  worker->waiting_turn = 1;
  update_reading(worker);
  uv_check_start(&worker->run.sched->turns, on_turns);
}

static void on_turns(uv_check_t *check) {
  sched_t *sched = check->data;
  uv_check_stop(check);
  for (worker_t *w = sched->workers; w; w = w->next) {
    if (!w->waiting_turn) continue;
    w->waiting_turn = 0;
    update_reading(w);
  }
}

static void on_output(uv_stream_t *stream, ssize_t n, const uv_buf_t *buffer) {
  worker_t *worker = stream->data;
  if (n > 0) {
    line_reader_feed(&worker->output_lines, buffer->base, (size_t)n, EV_LINE_MAX, on_event_line, on_overlong_line,
                     worker);
    end_turn(worker);
  } else if (n < 0) {
    line_reader_finish(&worker->output_lines, on_event_line, worker); /* a last line without its newline */
    uv_read_stop(stream);
    worker->output_done = 1;
    finish_worker(worker);
  }
}

static void on_errors(uv_stream_t *stream, ssize_t n, const uv_buf_t *buffer) {
  worker_t *worker = stream->data;
  if (n > 0) {
    line_reader_feed(&worker->error_lines, buffer->base, (size_t)n, EV_LINE_MAX, on_error_line, on_overlong_line,
                     worker);
  } else if (n < 0) {
    line_reader_finish(&worker->error_lines, on_error_line, worker);
    uv_read_stop(stream);
    worker->errors_done = 1;
    finish_worker(worker);
  }
}

static void set_reading(sched_t *sched, int reading) {
  if (sched->reading == reading) return;
  sched->reading = reading;
  if (!reading)
    fprintf(stderr, "mapsaged: %zu rows wait for the database: reading workers' events paused\n",
            db_batch_rows(sched->options.db));
  for (worker_t *w = sched->workers; w; w = w->next) update_reading(w);
}

static void on_process_exit(uv_process_t *process, int64_t exit_status, int term_signal) {
  worker_t *worker = process->data;
  worker->exited = 1;
  worker->exit_status = exit_status;
  worker->term_signal = term_signal;
  uv_timer_stop(&worker->kill_timer);
  finish_worker(worker);
}

static void on_sched_closed(uv_handle_t *handle) {
  sched_t *sched = handle->data;
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
static void stop_finished(sched_t *sched) {
  flush_batch(sched);
  /* Remote runs stay `running` in the database; the next start marks them interrupted. */
  while (sched->remotes) forget_remote(sched, sched->remotes);
  uv_timer_stop(&sched->flush_timer);
  uv_close((uv_handle_t *)&sched->flush_timer, on_sched_closed);
  uv_close((uv_handle_t *)&sched->turns, on_sched_closed);
  uv_close((uv_handle_t *)&sched->remote_timer, on_sched_closed);
  uv_close((uv_handle_t *)&sched->start_timer, on_sched_closed);
}

static void on_worker_handle_closed(uv_handle_t *handle) {
  worker_t *worker = handle->data;
  if (--worker->open_handles > 0) return;
  sched_t *sched = worker->run.sched;
  line_reader_free(&worker->output_lines);
  line_reader_free(&worker->error_lines);
  free_run(&worker->run);
  free(worker->config_json);
  free(worker);
  sched->alive--;
  if (sched->stopping && sched->alive == 0) stop_finished(sched);
}

static void close_worker_handles(worker_t *worker) {
  uv_handle_t *handles[] = {(uv_handle_t *)&worker->process, (uv_handle_t *)&worker->input,
                            (uv_handle_t *)&worker->output, (uv_handle_t *)&worker->errors,
                            (uv_handle_t *)&worker->kill_timer};
  for (size_t i = 0; i < ARRAY_SIZE(handles); i++)
    if (!uv_is_closing(handles[i])) uv_close(handles[i], on_worker_handle_closed);
}

/* The outcome of a run, in words a researcher can act on. Returns 1 when the worker
 * crashed (a signal, or an exit without a result): worth another attempt from the last
 * checkpoint. A run that reported its own failure (divergence, a bad teacher) is not. */
static int decide_outcome(worker_t *worker, const char **status, char *error, size_t error_size) {
  char tail[LOG_TAIL_LINES * (LOG_TAIL_WIDTH + 3) + 16];
  format_log_tail(worker, tail, sizeof tail);
  error[0] = '\0';
  if (worker->stop_requested) {
    *status = DB_INTERRUPTED;
    snprintf(error, error_size, "the daemon stopped while it ran; it will run again");
  } else if (worker->cancel_requested) {
    *status = DB_CANCELLED;
    snprintf(error, error_size, "%s", worker->cancel_reason);
  } else if (worker->term_signal) {
    *status = DB_FAILED;
    snprintf(error, error_size, "the worker was killed by signal %d (%s)%s", worker->term_signal,
             strsignal(worker->term_signal), tail);
    return 1;
  } else if (worker->run.finished_status && strcmp(worker->run.finished_status, "succeeded") == 0 &&
             worker->exit_status == 0) {
    *status = DB_SUCCEEDED;
  } else if (worker->run.finished_status && worker->run.finished_error) {
    *status = DB_FAILED;
    snprintf(error, error_size, "%s", worker->run.finished_error);
  } else {
    *status = DB_FAILED;
    if (worker->exit_status != 0)
      snprintf(error, error_size, "the worker exited with status %lld without reporting a result%s",
               (long long)worker->exit_status, tail);
    else
      snprintf(error, error_size, "the worker exited without reporting a result%s", tail);
    return 1;
  }
  return 0;
}

/* Writes how a run ended or, while the database refuses it, keeps it to be written after
 * a later flush: an outcome is never lost while the daemon runs. */
static void record_outcome(sched_t *sched, const outcome_t *outcome) {
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

static void finish_worker(worker_t *worker) {
  if (!worker->exited || !worker->output_done || !worker->errors_done) return;
  sched_t *sched = worker->run.sched;
  db_t *db = sched->options.db;
  const char *status;
  char error[2048];
  int crashed = decide_outcome(worker, &status, error, sizeof error);
  sched->counters.crashes += crashed;
  if (worker->term_signal || worker->exit_status)
    log_printf(&worker->run, "[mapsaged] worker exited (status %lld, signal %d): %s", (long long)worker->exit_status,
               worker->term_signal, status);
  flush_batch(sched);
  int crashes = crashed ? db_experiment_crashes(db, worker->run.experiment_id) : 0;
  outcome_t outcome = {.experiment_id = worker->run.experiment_id,
                       .status = status,
                       .error = error[0] ? error : NULL,
                       .summary = strcmp(status, DB_SUCCEEDED) == 0 ? worker->run.summary_json : NULL};
  char retry[2200];
  if (crashed && crashes + 1 < worker->max_attempts) {
    snprintf(retry, sizeof retry, "attempt %d: %s; trying again (%d of max_attempts %d)", worker->run.attempt, error,
             crashes + 2, worker->max_attempts);
    log_printf(&worker->run, "[mapsaged] %s", retry);
    outcome =
        (outcome_t){.experiment_id = worker->run.experiment_id, .status = DB_INTERRUPTED, .error = retry, .retry = 1};
  }
  fprintf(stderr, "mapsaged: experiment %lld %s%s%s\n", (long long)worker->run.experiment_id, outcome.status,
          outcome.error ? ": " : "", outcome.error ? outcome.error : "");
  record_outcome(sched, &outcome);

  for (worker_t **link = &sched->workers; *link; link = &(*link)->next) {
    if (*link == worker) {
      *link = worker->next;
      break;
    }
  }
  sched->running--;
  close_worker_handles(worker);
  sched_kick(sched);
}

/* Writes how a run ended, then tells its streams and, if it cannot teach any more, the
 * runs waiting for it. Returns 0, or the database's refusal (the caller keeps it). */
static int write_outcome(sched_t *sched, const outcome_t *outcome) {
  db_t *db = sched->options.db;
  int64_t id = outcome->experiment_id;
  int result = outcome->retry ? db_experiment_retry(db, id, outcome->error)
                              : db_experiment_finish(db, id, outcome->status, outcome->error, outcome->summary);
  if (result != 0 && result != -ENOENT) return result;
  status_changed(sched, id);
  if (strcmp(outcome->status, DB_FAILED) == 0 || strcmp(outcome->status, DB_CANCELLED) == 0)
    sched_teacher_ended(sched, id, outcome->status, outcome->error);
  return 0;
}

static void on_dependent_failed(void *context, int64_t id) {
  sched_t *sched = context;
  status_changed(sched, id);
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
static void fail_before_start(sched_t *sched, int64_t id, const char *error) {
  fprintf(stderr, "mapsaged: experiment %lld failed: %s\n", (long long)id, error);
  db_experiment_finish(sched->options.db, id, DB_FAILED, error, NULL);
  status_changed(sched, id);
  sched_teacher_ended(sched, id, DB_FAILED, error);
}

/* The student `id` cannot start: it fails, saying why. Returns NULL for config_for_worker. */
static char *fail_student(sched_t *sched, int64_t id, json_t *config, char *config_json, const char *error) {
  fail_before_start(sched, id, error);
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
    experiment_directory(sched, json_integer_value(teacher_id), directory, sizeof directory);
  } else if (given) {
    util_strlcpy(path, given, sizeof path);
    util_strlcpy(directory, sched->options.data_dir, sizeof directory);
  } else {
    json_decref(config);
    return config_json;
  }
  if (check_checkpoint_file(directory, path, resolved, sizeof resolved, reason, sizeof reason) != 0) {
    snprintf(error, sizeof error, "its teacher's checkpoint cannot be given to a worker: %s", reason);
    return fail_student(sched, id, config, config_json, error);
  }
  json_object_set_new(teacher, key, json_string(resolved));
  char *checked = json_dumps(config, JSON_COMPACT);
  json_decref(config);
  free(config_json);
  return checked;
}

static void on_input_written(uv_write_t *request, int status) {
  worker_t *worker = request->data;
  if (status < 0 && status != UV_ECANCELED)
    log_printf(&worker->run, "[mapsaged] could not hand the config to the worker: %s", uv_strerror(status));
  free(worker->config_json);
  worker->config_json = NULL;
  if (!uv_is_closing((uv_handle_t *)&worker->input)) uv_close((uv_handle_t *)&worker->input, on_worker_handle_closed);
}

/* A worker that could not be started. Out of descriptors, processes or memory (EMFILE,
 * ENFILE, EAGAIN, ENOMEM) is the machine's passing state, not the run's fault: the run goes
 * back to waiting as it was, and starting is tried again after a pause that doubles up to
 * SCHED_START_RETRY_MAX_MS — failing every queued run in one pass, as a loop of starts
 * would, loses a study to a moment of pressure. After SCHED_START_GIVE_UP_S of nothing but
 * failures, or on any other error (the worker program missing), the run fails, saying why.
 * Returns nonzero when the pass of starts should stop. */
static int start_failed(sched_t *sched, int64_t id, int code) {
  char error[4200];
  snprintf(error, sizeof error, "cannot start the worker %s: %s", sched->options.worker_bin, uv_strerror(code));
  const int transient = code == UV_EMFILE || code == UV_ENFILE || code == UV_EAGAIN || code == UV_ENOMEM;
  const double now = util_monotonic();
  if (sched->start_failing_since == 0) sched->start_failing_since = now;
  if (!transient || now - sched->start_failing_since >= SCHED_START_GIVE_UP_S) {
    fail_before_start(sched, id, error);
    return 0; /* the next run may start */
  }
  char waiting[4300];
  snprintf(waiting, sizeof waiting, "%s; waiting, tried again in %u ms", error, sched->start_delay_ms);
  fprintf(stderr, "mapsaged: experiment %lld: %s\n", (long long)id, waiting);
  if (db_experiment_unstart(sched->options.db, id, waiting) != 0) {
    fail_before_start(sched, id, error);
    return 0;
  }
  status_changed(sched, id);
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
static size_t memory_limit(const sched_t *sched, const char *config_json) {
  const sched_options_t *options = &sched->options;
  if (options->max_worker_memory == 0) return 0;
  cfg_experiment_t *config = malloc(sizeof *config), *teacher = malloc(sizeof *teacher);
  cfg_errors_t *errors = malloc(sizeof *errors);
  json_t *parsed = json_loads(config_json, 0, NULL);
  size_t limit = 0;
  if (!config || !teacher || !errors || !parsed || cfg_from_json(parsed, config, errors) != 0) goto done;
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
  json_decref(parsed);
  free(config);
  free(teacher);
  free(errors);
  return limit;
}

/* Starts a worker on experiment `id`, taking ownership of `config_json`. */
static int start_worker(sched_t *sched, int64_t id, char *config_json) {
  const sched_options_t *options = &sched->options;
  config_json = config_for_worker(sched, id, config_json);
  if (config_json == NULL) return 0; /* failed, said why; the next one may start */
  worker_t *worker = calloc(1, sizeof *worker);
  if (worker == NULL) {
    free(config_json);
    return -ENOMEM;
  }
  worker->run.sched = sched;
  worker->run.experiment_id = id;
  worker->config_json = config_json;
  json_t *parsed = json_loads(config_json, 0, NULL);
  json_t *max_attempts = json_object_get(parsed, "max_attempts");
  worker->max_attempts = json_is_integer(max_attempts) ? (int)json_integer_value(max_attempts) : 2;
  worker->run.planned_epochs = planned_epochs(parsed);
  json_decref(parsed);
  int result = db_experiment_start(options->db, id, &worker->run.attempt);
  if (result != 0) {
    free(config_json);
    free(worker);
    return result;
  }

  char id_text[32], threads_text[16], checkpoint_dir[4096], parent_text[24], limit_text[32];
  const size_t limit = memory_limit(sched, config_json);
  snprintf(limit_text, sizeof limit_text, "%zu", limit);
  snprintf(id_text, sizeof id_text, "%lld", (long long)id);
  snprintf(parent_text, sizeof parent_text, "%ld", (long)getpid()); /* it stops if we die */
  snprintf(threads_text, sizeof threads_text, "%d", options->threads_per_worker);
  snprintf(checkpoint_dir, sizeof checkpoint_dir, "%s/experiments/%lld", options->data_dir, (long long)id);
  if ((result = util_make_directories(checkpoint_dir)) != 0) {
    char error[4200];
    snprintf(error, sizeof error, "cannot create the checkpoint directory %s: %s", checkpoint_dir, strerror(-result));
    fail_before_start(sched, id, error);
    free(config_json);
    free(worker);
    return 0;
  }
  /* A run that was interrupted goes on from its last checkpoint if it is still a regular
   * file in the run's directory: it may have been replaced (by a link out, a FIFO) since
   * it was recorded. */
  char recorded[4096] = "", resume[PATH_MAX] = "", reason[PATH_MAX + 256];
  int resuming = worker->run.attempt > 1 && db_checkpoint_latest(options->db, id, recorded, sizeof recorded) == 0;
  if (resuming && check_checkpoint_file(checkpoint_dir, recorded, resume, sizeof resume, reason, sizeof reason) != 0) {
    log_printf(&worker->run, "[mapsaged] the latest checkpoint cannot be resumed from (%s): starting over", reason);
    resuming = 0;
  }
  char *arguments[] = {(char *)options->worker_bin, "--experiment", id_text, "--threads", threads_text,
                       "--dataset-dir", (char *)options->dataset_dir, "--checkpoint-dir", checkpoint_dir,
                       "--parent-pid", parent_text, NULL, NULL, NULL, NULL, NULL};
  int argument = 11;
  if (limit) {
    arguments[argument++] = "--memory-limit";
    arguments[argument++] = limit_text;
  }
  if (resuming) {
    arguments[argument++] = "--resume";
    arguments[argument++] = resume;
  }

  uv_loop_t *loop = options->loop;
  uv_pipe_init(loop, &worker->input, 0);
  uv_pipe_init(loop, &worker->output, 0);
  uv_pipe_init(loop, &worker->errors, 0);
  uv_timer_init(loop, &worker->kill_timer);
  worker->input.data = worker->output.data = worker->errors.data = worker->kill_timer.data = worker;
  worker->process.data = worker->write_request.data = worker;
  worker->open_handles = 5;
  sched->alive++;

  uv_stdio_container_t stdio[3] = {
      {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&worker->input},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&worker->output},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&worker->errors},
  };
  uv_process_options_t process_options = {
      .exit_cb = on_process_exit, .file = options->worker_bin, .args = arguments, .stdio_count = 3, .stdio = stdio};
  result = uv_spawn(loop, &worker->process, &process_options);
  if (result != 0) {
    /* The process handle is closed too: uv_spawn leaves it initialised on failure. */
    close_worker_handles(worker);
    return start_failed(sched, id, result);
  }
  sched->start_failing_since = 0;
  sched->start_delay_ms = SCHED_START_RETRY_MS;
  worker->next = sched->workers;
  sched->workers = worker;
  sched->running++;
  sched->counters.started++;
  fprintf(stderr, "mapsaged: experiment %lld started (attempt %d, pid %d%s%s)\n", (long long)id, worker->run.attempt,
          worker->process.pid, resuming ? ", resuming from " : "", resuming ? resume : "");
  if (resuming) log_printf(&worker->run, "[mapsaged] resuming from %s", resume);
  status_changed(sched, id);

  update_reading(worker);
  uv_buf_t buffer = uv_buf_init(worker->config_json, (unsigned)strlen(worker->config_json));
  if (uv_write(&worker->write_request, (uv_stream_t *)&worker->input, &buffer, 1, on_input_written) != 0)
    on_input_written(&worker->write_request, UV_EPIPE);
  return 0;
}

void sched_kick(sched_t *sched) {
  /* After a failed start, the retry timer decides when to try again. */
  if (uv_is_active((uv_handle_t *)&sched->start_timer)) return;
  while (!sched->stopping && sched->running < sched->options.max_workers) {
    int64_t id;
    char *config_json;
    if (db_experiment_next(sched->options.db, &id, &config_json) != 0) return;
    if (start_worker(sched, id, config_json) != 0) return;
  }
}

static void on_kill_timer(uv_timer_t *timer) {
  worker_t *worker = timer->data;
  if (!worker->exited) {
    log_printf(&worker->run, "[mapsaged] the worker did not stop after SIGTERM; sending SIGKILL");
    uv_process_kill(&worker->process, SIGKILL);
  }
}

/* SIGTERM, and SIGKILL if the worker has not exited after `grace_ms`. */
static void terminate(worker_t *worker, unsigned grace_ms) {
  if (worker->exited) return;
  uv_process_kill(&worker->process, SIGTERM);
  if (!uv_is_active((uv_handle_t *)&worker->kill_timer))
    uv_timer_start(&worker->kill_timer, on_kill_timer, grace_ms, 0);
}

int sched_cancel(sched_t *sched, int64_t id, const char *reason, int *running) {
  worker_t *worker = find_worker(sched, id);
  if (reason == NULL) reason = "cancelled";
  if (worker) {
    *running = 1;
    worker->cancel_requested = 1;
    snprintf(worker->cancel_reason, sizeof worker->cancel_reason, "%s", reason);
    log_printf(&worker->run, "[mapsaged] cancel requested: %s", reason);
    terminate(worker, sched->options.cancel_grace_ms);
    return 0;
  }
  remote_t *remote = find_remote(sched, id);
  if (remote) { /* its worker learns it from the answer to its next post (409) */
    *running = 0;
    log_printf(&remote->run, "[mapsaged] cancel requested: the remote worker is refused from now on");
    flush_batch(sched);
    record_outcome(sched, &(outcome_t){.experiment_id = id, .status = DB_CANCELLED, .error = (char *)reason});
    forget_remote(sched, remote);
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
    status_changed(sched, id);
    sched_teacher_ended(sched, id, DB_CANCELLED, NULL);
  }
  return result;
}

void sched_stop(sched_t *sched, void (*done)(void *data), void *data) {
  sched->stopping = 1;
  sched->stopped = done;
  sched->stopped_data = data;
  if (sched->alive == 0) {
    stop_finished(sched);
    return;
  }
  for (worker_t *w = sched->workers; w; w = w->next) {
    w->stop_requested = 1;
    terminate(w, sched->options.stop_grace_ms);
  }
}

// ---------------------------------------------------------------------------------------
// remote runs: events over HTTP

/* A remote worker that stopped posting (its node died, the cluster killed its job) would
 * leave its run `running` for ever: after options.remote_timeout_s of silence the run is
 * interrupted, to run again (here, or for the next worker that posts). */
static void on_remote_timer(uv_timer_t *timer) {
  sched_t *sched = timer->data;
  const double now = util_monotonic();
  for (remote_t *remote = sched->remotes, *next; remote; remote = next) {
    next = remote->next;
    if (now - remote->last_post < sched->options.remote_timeout_s) continue;
    char error[256];
    snprintf(error, sizeof error, "no events from its remote worker for %u s; it will run again",
             sched->options.remote_timeout_s);
    log_printf(&remote->run, "[mapsaged] %s", error);
    fprintf(stderr, "mapsaged: experiment %lld interrupted: %s\n", (long long)remote->run.experiment_id, error);
    flush_batch(sched);
    record_outcome(sched, &(outcome_t){.experiment_id = remote->run.experiment_id, .status = DB_INTERRUPTED,
                                       .error = error});
    forget_remote(sched, remote);
  }
  if (sched->remotes == NULL) uv_timer_stop(timer);
  sched_kick(sched);
}

/* Calls `each` with every non-empty line of `body` (a final '\r' taken off) and its
 * 1-based number; stops when it returns nonzero. */
static void for_each_line(const char *body, size_t length,
                          int (*each)(void *context, const char *line, size_t length, int number), void *context) {
  int number = 0;
  for (size_t at = 0; at < length;) {
    const char *end = memchr(body + at, '\n', length - at);
    size_t line_length = end ? (size_t)(end - (body + at)) : length - at;
    number++;
    size_t kept = line_length > 0 && body[at + line_length - 1] == '\r' ? line_length - 1 : line_length;
    if (kept > 0 && each(context, body + at, kept, number)) return;
    at += line_length + 1;
  }
}

typedef struct {
  sched_post_t *post;
  run_t *run;
} post_context_t;

static int check_line(void *context, const char *line, size_t length, int number) {
  sched_post_t *post = ((post_context_t *)context)->post;
  ev_t event;
  char error[256];
  if (length > EV_LINE_MAX)
    snprintf(error, sizeof error, "longer than %d bytes", EV_LINE_MAX);
  else if (ev_parse(line, length, &event, error, sizeof error) == 0) {
    ev_release(&event);
    return 0;
  }
  if (post->errors == NULL) post->errors = json_array();
  json_array_append_new(post->errors, json_pack("{s:i, s:s}", "line", number, "message", error));
  return json_array_size(post->errors) >= 100; /* enough to fix the sender */
}

static int apply_line(void *context, const char *line, size_t length, int number) {
  post_context_t *post_context = context;
  sched_post_t *post = post_context->post;
  char refusal[PATH_MAX + 256];
  if (apply_event_line(post_context->run, line, length, refusal, sizeof refusal) != 0) {
    if (post->refused == NULL) post->refused = json_array();
    json_array_append_new(post->refused, json_pack("{s:i, s:s}", "line", number, "message", refusal));
    return 0;
  }
  post->accepted++;
  return 0;
}

/* SCHED_SECRET_BYTES from getrandom(2), in hex. */
static int make_secret(char *out) {
  unsigned char bytes[SCHED_SECRET_BYTES];
  size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    got += (size_t)n;
  }
  for (size_t i = 0; i < sizeof bytes; i++) snprintf(out + 2 * i, 3, "%02x", bytes[i]);
  return 0;
}

/* Compares in time that depends on the length only: a poster learns nothing from how long
 * a wrong guess took. */
static int secrets_equal(const char *given, const char *expected) {
  size_t length = strlen(expected);
  if (strlen(given) != length) return 0;
  unsigned char difference = 0;
  for (size_t i = 0; i < length; i++) difference |= (unsigned char)(given[i] ^ expected[i]);
  return difference == 0;
}

int sched_post_events(sched_t *sched, int64_t id, const char *body, size_t length, const char *secret,
                      sched_post_t *post) {
  memset(post, 0, sizeof *post);
  if (sched->stopping) return -ESHUTDOWN;
  db_t *db = sched->options.db;
  int result = db_experiment_status(db, id, post->status, sizeof post->status);
  if (result != 0) return result;
  worker_t *worker = find_worker(sched, id);
  if (worker) {
    snprintf(post->message, sizeof post->message, "experiment %lld runs on a worker of this daemon (pid %d)",
             (long long)id, worker->process.pid);
    return -EBUSY;
  }
  remote_t *remote = find_remote(sched, id);
  if (remote == NULL && db_status_is_terminal(post->status)) {
    snprintf(post->message, sizeof post->message, "experiment %lld has ended (%s): stop its worker", (long long)id,
             post->status);
    return -EALREADY;
  }
  if (remote == NULL && strcmp(post->status, DB_RUNNING) == 0) {
    snprintf(post->message, sizeof post->message, "experiment %lld is running and its events come from elsewhere",
             (long long)id);
    return -EBUSY;
  }
  /* A secret names a claimed attempt. With none claimed, the attempt it was given for has
   * ended (interrupted: timed out, or the daemon restarted): its worker must stop rather
   * than claim the run again behind the back of whoever runs it next. */
  if (remote == NULL && secret) {
    snprintf(post->message, sizeof post->message,
             "experiment %lld is %s: the attempt this X-MapSage-Run-Secret was given for has ended; stop",
             (long long)id, post->status);
    return -EALREADY;
  }
  if (remote && (secret == NULL || !secrets_equal(secret, remote->secret))) {
    snprintf(post->message, sizeof post->message,
             secret ? "experiment %lld, attempt %d: the X-MapSage-Run-Secret is not this attempt's (it was claimed "
                      "by another worker, or this one's attempt ended)"
                    : "experiment %lld, attempt %d, is claimed by a worker: its posts must carry the "
                      "X-MapSage-Run-Secret its first post was answered with",
             (long long)id, remote->run.attempt);
    return -EACCES;
  }
  /* Every line is checked before any is applied: a post is taken whole or not at all. */
  post_context_t context = {post, NULL};
  for_each_line(body, length, check_line, &context);
  if (post->errors) return -EINVAL;
  if (remote == NULL) { /* queued or interrupted: the first post claims it */
    if ((remote = calloc(1, sizeof *remote)) == NULL) return -ENOMEM;
    remote->run.sched = sched;
    remote->run.experiment_id = id;
    json_t *experiment = db_experiment_get(db, id, 1);
    remote->run.planned_epochs = planned_epochs(json_object_get(experiment, "config"));
    json_decref(experiment);
    if ((result = make_secret(remote->secret)) != 0 ||
        (result = db_experiment_start(db, id, &remote->run.attempt)) != 0) {
      free(remote);
      return result;
    }
    /* Where its checkpoints must be: the worker writes there when the data directory is
     * shared storage it sees at the same path. */
    char directory[PATH_MAX];
    experiment_directory(sched, id, directory, sizeof directory);
    util_make_directories(directory);
    util_strlcpy(post->secret, remote->secret, sizeof post->secret);
    remote->next = sched->remotes;
    sched->remotes = remote;
    if (!uv_is_active((uv_handle_t *)&sched->remote_timer))
      uv_timer_start(&sched->remote_timer, on_remote_timer, 1000, 1000);
    fprintf(stderr, "mapsaged: experiment %lld started (attempt %d, remote: events over HTTP)\n", (long long)id,
            remote->run.attempt);
    status_changed(sched, id);
  }
  context.run = &remote->run;
  remote->last_post = util_monotonic();
  for_each_line(body, length, apply_line, &context);
  if (remote->run.finished_status) {
    int succeeded = strcmp(remote->run.finished_status, "succeeded") == 0;
    outcome_t outcome = {.experiment_id = id,
                         .status = succeeded ? DB_SUCCEEDED : DB_FAILED,
                         .error = succeeded                    ? NULL
                                  : remote->run.finished_error ? remote->run.finished_error
                                                               : "the worker reported a failure without saying why",
                         .summary = succeeded ? remote->run.summary_json : NULL};
    flush_batch(sched);
    record_outcome(sched, &outcome);
    fprintf(stderr, "mapsaged: experiment %lld %s (remote)\n", (long long)id, outcome.status);
    forget_remote(sched, remote);
    sched_kick(sched);
  }
  db_experiment_status(db, id, post->status, sizeof post->status);
  return 0;
}
