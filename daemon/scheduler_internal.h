/* scheduler_internal.h — the scheduler's state and helpers, shared by the files that make
 * it up (scheduler.c, executor_local.c, scheduler_remote.c) and by nothing else. */
#ifndef MAPSAGE_SCHEDULER_INTERNAL_H
#define MAPSAGE_SCHEDULER_INTERNAL_H

#include "scheduler.h"

#include <jansson.h>

typedef struct worker worker_t; /* executor_local.c's */

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
  slurm_t *slurm;          /* --executor slurm: runs become batch jobs; NULL: local workers */
};


/* --- scheduler.c ------------------------------------------------------------------------ */

/* Every change of an experiment's status goes through here: its streams and the observer. */
void sched_status_changed(sched_t *sched, int64_t id);
/* Commits the batch now and writes the outcomes waiting; rows added: sched_batch_grew. */
void sched_flush_batch(sched_t *sched);
void sched_batch_grew(sched_t *sched);
/* Writes how a run ended or keeps it to be written after a later flush. */
void sched_record_outcome(sched_t *sched, const outcome_t *outcome);
/* A run that cannot start fails, saying why, and so do the runs waiting for it to teach. */
void sched_fail_before_start(sched_t *sched, int64_t id, const char *error);
/* A worker that could not be started: wait and try again, or fail it (see scheduler.c). */
int sched_start_failed(sched_t *sched, int64_t id, int code);
/* Every worker is gone: write what is left and free the scheduler. */
void sched_stop_finished(sched_t *sched);
/* The run's log. */
void sched_log_line(run_t *run, const char *line, size_t length);
void sched_log_printf(run_t *run, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* One protocol line of a run's worker: stored, published, recorded, or kept in its log.
 * Returns 0, or -EPERM when it was a checkpoint event refused (why in `refusal`). */
int sched_apply_event_line(run_t *run, const char *line, size_t length, char *refusal, size_t refusal_size);
void sched_free_run(run_t *run);
/* <data_dir>/experiments/<id>: where an experiment's checkpoints must be. */
void sched_experiment_directory(const sched_t *sched, int64_t id, char *out, size_t size);
/* The epochs a stored config plans, all stages together; 0 when it cannot be read. */
int sched_planned_epochs(const json_t *config_json);

/* --- executor_local.c: worker processes of this daemon ----------------------------------- */

/* Starts a worker process on the plan, taking it. */
int local_start(sched_t *sched, exec_plan_t *plan);
/* Asks the worker running experiment `id` to stop (SIGTERM, then SIGKILL): 1, or 0 when no
 * local worker runs it. */
int local_cancel(sched_t *sched, int64_t id, const char *reason);
/* The daemon stops: every worker is asked to checkpoint and stop. */
void local_stop_all(sched_t *sched);
/* The pid of the worker running experiment `id`, 0 when none. */
int local_pid(sched_t *sched, int64_t id);
/* Reads the workers' pipes, or pauses them while the batch is over its limit. */
void local_set_reading(sched_t *sched, int reading);

/* --- scheduler_remote.c: runs whose worker posts over HTTP -------------------------------- */

remote_t *sched_find_remote(sched_t *sched, int64_t id);
void sched_forget_remote(sched_t *sched, remote_t *remote);

#endif
