/* executor_local.c — the local executor: a run's worker as a child process of the daemon,
 * with three pipes (executor.h; the scheduler's state in scheduler_internal.h).
 *
 * The config goes to its stdin. Its stdout carries protocol lines, its stderr the run's
 * log; both are split into lines by a line_reader_t (line_reader.h) that never holds more
 * than EV_LINE_MAX bytes, so a worker that prints an endless line or garbage costs bounded
 * memory and ends up, marked, in the log. The outcome of a run is decided in
 * finish_worker() once three things have happened, in any order: the process exited and
 * both pipes reached end-of-file. Deciding at exit alone would lose the last events still
 * in the pipe. */
#include "scheduler_internal.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "event.h"
#include "line_reader.h"
#include "util.h"

#define READ_BUFFER_SIZE 65536
#define LOG_TAIL_LINES 5     /* stderr lines quoted when a worker dies */
#define LOG_TAIL_WIDTH 240

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

static void on_turns(uv_check_t *check);

static worker_t *find_worker(sched_t *sched, int64_t id) {
  for (worker_t *w = sched->workers; w; w = w->next)
    if (w->run.experiment_id == id) return w;
  return NULL;
}

static void handle_event_line(worker_t *worker, const char *line, size_t length) {
  char refusal[PATH_MAX + 256]; /* said in the run's log already */
  sched_apply_event_line(&worker->run, line, length, refusal, sizeof refusal);
}

static void handle_error_line(worker_t *worker, const char *line, size_t length) {
  sched_log_line(&worker->run, line, length);
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
  sched_log_printf(&worker->run, "[mapsaged] a line longer than %d bytes was cut; it began: %.*s", EV_LINE_MAX, (int)quoted,
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

void local_set_reading(sched_t *sched, int reading) {
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

static void on_worker_handle_closed(uv_handle_t *handle) {
  worker_t *worker = handle->data;
  if (--worker->open_handles > 0) return;
  sched_t *sched = worker->run.sched;
  line_reader_free(&worker->output_lines);
  line_reader_free(&worker->error_lines);
  sched_free_run(&worker->run);
  free(worker->config_json);
  free(worker);
  sched->alive--;
  if (sched->stopping && sched->alive == 0) sched_stop_finished(sched);
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

static void finish_worker(worker_t *worker) {
  if (!worker->exited || !worker->output_done || !worker->errors_done) return;
  sched_t *sched = worker->run.sched;
  db_t *db = sched->options.db;
  const char *status;
  char error[2048];
  int crashed = decide_outcome(worker, &status, error, sizeof error);
  sched->counters.crashes += crashed;
  if (worker->term_signal || worker->exit_status)
    sched_log_printf(&worker->run, "[mapsaged] worker exited (status %lld, signal %d): %s", (long long)worker->exit_status,
               worker->term_signal, status);
  sched_flush_batch(sched);
  int crashes = crashed ? db_experiment_crashes(db, worker->run.experiment_id) : 0;
  outcome_t outcome = {.experiment_id = worker->run.experiment_id,
                       .status = status,
                       .error = error[0] ? error : NULL,
                       .summary = strcmp(status, DB_SUCCEEDED) == 0 ? worker->run.summary_json : NULL};
  char retry[2200];
  if (crashed && crashes + 1 < worker->max_attempts) {
    snprintf(retry, sizeof retry, "attempt %d: %s; trying again (%d of max_attempts %d)", worker->run.attempt, error,
             crashes + 2, worker->max_attempts);
    sched_log_printf(&worker->run, "[mapsaged] %s", retry);
    outcome =
        (outcome_t){.experiment_id = worker->run.experiment_id, .status = DB_INTERRUPTED, .error = retry, .retry = 1};
  }
  fprintf(stderr, "mapsaged: experiment %lld %s%s%s\n", (long long)worker->run.experiment_id, outcome.status,
          outcome.error ? ": " : "", outcome.error ? outcome.error : "");
  sched_record_outcome(sched, &outcome);

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

static void on_input_written(uv_write_t *request, int status) {
  worker_t *worker = request->data;
  if (status < 0 && status != UV_ECANCELED)
    sched_log_printf(&worker->run, "[mapsaged] could not hand the config to the worker: %s", uv_strerror(status));
  free(worker->config_json);
  worker->config_json = NULL;
  if (!uv_is_closing((uv_handle_t *)&worker->input)) uv_close((uv_handle_t *)&worker->input, on_worker_handle_closed);
}

/* The local executor: starts a worker process on the plan, taking it. */
int local_start(sched_t *sched, exec_plan_t *plan) {
  const sched_options_t *options = &sched->options;
  const int64_t id = plan->experiment_id;
  worker_t *worker = calloc(1, sizeof *worker);
  if (worker == NULL) {
    exec_plan_free(plan);
    return -ENOMEM;
  }
  worker->run.sched = sched;
  worker->run.experiment_id = id;
  worker->config_json = plan->config_json; /* the worker's now, freed once written to it */
  plan->config_json = NULL;
  worker->max_attempts = plan->max_attempts;
  worker->run.planned_epochs = plan->planned_epochs;
  int result = db_experiment_start(options->db, id, &worker->run.attempt);
  if (result != 0) {
    free(worker->config_json);
    free(worker);
    exec_plan_free(plan);
    return result;
  }

  char id_text[32], threads_text[16], parent_text[24], limit_text[32];
  snprintf(limit_text, sizeof limit_text, "%zu", plan->memory_limit);
  snprintf(id_text, sizeof id_text, "%lld", (long long)id);
  snprintf(parent_text, sizeof parent_text, "%ld", (long)getpid()); /* it stops if we die */
  snprintf(threads_text, sizeof threads_text, "%d", options->threads_per_worker);
  const int resuming = plan->resume[0] != '\0';
  char *arguments[] = {(char *)options->worker_bin, "--experiment", id_text, "--threads", threads_text,
                       "--dataset-dir", (char *)options->dataset_dir, "--checkpoint-dir", plan->checkpoint_dir,
                       "--parent-pid", parent_text, NULL, NULL, NULL, NULL, NULL};
  int argument = 11;
  if (plan->memory_limit) {
    arguments[argument++] = "--memory-limit";
    arguments[argument++] = limit_text;
  }
  if (resuming) {
    arguments[argument++] = "--resume";
    arguments[argument++] = plan->resume;
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
    exec_plan_free(plan);
    return sched_start_failed(sched, id, result);
  }
  sched->start_failing_since = 0;
  sched->start_delay_ms = SCHED_START_RETRY_MS;
  worker->next = sched->workers;
  sched->workers = worker;
  sched->running++;
  sched->counters.started++;
  fprintf(stderr, "mapsaged: experiment %lld started (attempt %d, pid %d%s%s)\n", (long long)id, worker->run.attempt,
          worker->process.pid, resuming ? ", resuming from " : "", resuming ? plan->resume : "");
  if (resuming) sched_log_printf(&worker->run, "[mapsaged] resuming from %s", plan->resume);
  if (plan->resume_refused[0])
    sched_log_printf(&worker->run, "[mapsaged] the latest checkpoint cannot be resumed from (%s): starting over",
               plan->resume_refused);
  sched_status_changed(sched, id);
  exec_plan_free(plan);

  update_reading(worker);
  uv_buf_t buffer = uv_buf_init(worker->config_json, (unsigned)strlen(worker->config_json));
  if (uv_write(&worker->write_request, (uv_stream_t *)&worker->input, &buffer, 1, on_input_written) != 0)
    on_input_written(&worker->write_request, UV_EPIPE);
  return 0;
}

static void on_kill_timer(uv_timer_t *timer) {
  worker_t *worker = timer->data;
  if (!worker->exited) {
    sched_log_printf(&worker->run, "[mapsaged] the worker did not stop after SIGTERM; sending SIGKILL");
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

int local_cancel(sched_t *sched, int64_t id, const char *reason) {
  worker_t *worker = find_worker(sched, id);
  if (worker == NULL) return 0;
  worker->cancel_requested = 1;
  snprintf(worker->cancel_reason, sizeof worker->cancel_reason, "%s", reason);
  sched_log_printf(&worker->run, "[mapsaged] cancel requested: %s", reason);
  terminate(worker, sched->options.cancel_grace_ms);
  return 1;
}

void local_stop_all(sched_t *sched) {
  for (worker_t *w = sched->workers; w; w = w->next) {
    w->stop_requested = 1;
    terminate(w, sched->options.stop_grace_ms);
  }
}

int local_pid(sched_t *sched, int64_t id) {
  const worker_t *worker = find_worker(sched, id);
  return worker ? worker->process.pid : 0;
}
