/* slurm.h — the Slurm executor: each runnable experiment becomes one batch job whose
 * worker (`mapsage-worker --server URL --experiment N`) posts its events to this daemon.
 *
 * sbatch, squeue and scancel run as child processes (uv_spawn) whose machine-readable
 * output is parsed on the loop; nothing here blocks it. Jobs are polled with squeue on a
 * timer while any may still run. A job is remembered in the `jobs` table (schema.sql), so
 * a restarted daemon reattaches to the jobs Slurm still knows and resubmits those that
 * vanished. What each Slurm state becomes: docs/slurm.md. */
#ifndef MAPSAGE_SLURM_H
#define MAPSAGE_SLURM_H

#include <stdint.h>

#include <uv.h>

#include "db.h"
#include "executor.h"

#define SLURM_POLL_MS 5000    /* squeue this often by default (--slurm-poll-ms) */
#define SLURM_OUTPUT_LIMIT (4 << 20) /* bytes kept of a command's stdout or stderr */

/* In events.ended's `retry`: the job had been requeued. If its run has not been claimed
 * since, this end is the requeued attempt's, said and counted with the requeue. */
#define SLURM_AFTER_REQUEUE 2

typedef struct slurm slurm_t;

/* What mapsaged's --slurm-* flags say. */
typedef struct {
  const char *partition;   /* --slurm-partition: the default partition, NULL: the cluster's */
  const char *account;     /* --slurm-account */
  const char *extra;       /* --slurm-extra: more sbatch options, split at spaces */
  int max_jobs;            /* --slurm-max-jobs: jobs pending or running at once */
  unsigned poll_ms;        /* --slurm-poll-ms */
  const char *token_file;  /* the daemon's token file: its jobs' workers send the token */
} slurm_settings_t;

/* How the executor tells the scheduler what happened to a job. */
typedef struct {
  void *context;
  /* The job ended, or was requeued, without the run's own `finished`: the run becomes
   * `status` (interrupted: it runs again from its last checkpoint when `retry`, within
   * max_attempts), `error` saying why in Slurm's words; SLURM_AFTER_REQUEUE may be or'ed
   * into `retry`. */
  void (*ended)(void *context, int64_t id, const char *status, const char *error, int retry);
  /* Its job's state, reason or node changed: for the streams. */
  void (*changed)(void *context, int64_t id);
  /* A slot is free: the queue may submit more. */
  void (*room)(void *context);
} slurm_events_t;

typedef struct {
  uv_loop_t *loop;
  db_t *db;
  slurm_settings_t settings;
  const char *worker_bin, *dataset_dir, *data_dir;
  int threads;
  const char *server_url;  /* read at each submission: set once the daemon listens */
  slurm_events_t events;
} slurm_options_t;

/* Loads the jobs that may still run (a restart) and starts polling them. */
int slurm_create(const slurm_options_t *options, slurm_t **out, char *error, size_t error_size);
/* Whether one more job may be submitted (--slurm-max-jobs). */
int slurm_has_room(const slurm_t *slurm);
/* Submits the plan's job, taking the plan. Returns 0 (sbatch runs; a refusal fails the
 * run, saying why, through events.ended) or -errno with why in `error`, nothing submitted. */
int slurm_submit(slurm_t *slurm, exec_plan_t *plan, char *error, size_t error_size);
/* scancel of the experiment's job, if it has one that may still run. */
void slurm_cancel(slurm_t *slurm, int64_t id);
/* The secret the experiment's job was given, or NULL when it has none: its worker's
 * first post claims the run with it. */
const char *slurm_secret(const slurm_t *slurm, int64_t id);
/* The run recorded a checkpoint: a requeued job goes on from it. */
void slurm_checkpoint_recorded(slurm_t *slurm, int64_t id, const char *path);
/* Stops polling; calls `done` once every child process has exited, then frees it. Jobs go
 * on running: the next start reattaches to them. */
void slurm_stop(slurm_t *slurm, void (*done)(void *data), void *data);

/* The experiment's latest job as the API shows it, {"id", "state", "reason", "node",
 * "script"} as JSON text the caller frees; NULL when it has none. */
char *slurm_job_text(db_t *db, int64_t id);

#endif
