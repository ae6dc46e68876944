/* scheduler.h — the queue and the workers: which experiment runs next, the executor that
 * starts its worker (executor.h: local processes, or Slurm jobs), and what their events mean.
 *
 * An experiment's life:  queued ──▶ running ──▶ succeeded | failed | cancelled
 *                          ▲           │
 *                          └─ interrupted (the daemon stopped or died while it ran)
 * The scheduler starts up to max_workers `mapsage-worker` processes (uv_spawn: config on
 * stdin, events on stdout, stderr kept as the run's log), highest priority first, then
 * oldest. Events go to the database batch and, at once, to live streams. The outcome is
 * decided when the process has exited and both its pipes are drained, never before. */
#ifndef MAPSAGE_SCHED_H
#define MAPSAGE_SCHED_H

#include <stdint.h>

#include <uv.h>

#include "db.h"
#include "executor.h"
#include "slurm.h"
#include "sse.h"

#define SCHED_FLUSH_MS 25          /* the batch is committed at least this often */
#define SCHED_FLUSH_ROWS 8192      /* or as soon as it holds this many rows */
#define SCHED_BATCH_LIMIT 1000000  /* rows held while the database refuses them; then workers wait */
#define SCHED_START_RETRY_MS 1000  /* a worker that could not start (EMFILE…): first try again after */
#define SCHED_START_RETRY_MAX_MS 30000
#define SCHED_START_GIVE_UP_S 600  /* failing to start for this long fails the run */

typedef struct sched sched_t;

/* What the scheduler tells its observer (the daemon's studies) about an experiment. */
typedef enum {
  SCHED_STATUS_CHANGED,  /* its status changed (queued → running → an end, or interrupted) */
  SCHED_EPOCH_ENDED,     /* an epoch's evaluations were stored */
} sched_observation_t;

typedef struct {
  uv_loop_t *loop;
  db_t *db;
  sse_hub_t *hub;
  int max_workers;
  int threads_per_worker;
  const char *worker_bin;
  const char *dataset_dir;
  const char *data_dir;          /* checkpoints go under <data_dir>/experiments/<id>/ */
  unsigned cancel_grace_ms;      /* a cancel: SIGTERM, then SIGKILL after this long */
  unsigned stop_grace_ms;        /* the daemon stopping: workers checkpoint, so longer */
  unsigned remote_timeout_s;     /* a remote run silent this long is interrupted */
  size_t max_worker_memory;      /* --max-worker-memory: caps each worker's --memory-limit (0: none) */
  size_t teacher_cache_budget;   /* the workers' MAPSAGE_TEACHER_CACHE_MB, in bytes */
  executor_kind_t executor;      /* --executor: local processes, or Slurm jobs (executor.h) */
  slurm_settings_t slurm;        /* --slurm-*, with EXECUTOR_SLURM */
  const char *server_url;        /* where a job's worker posts: read at each submission */
  /* Called after each observation, on the loop, when set. It may call sched_cancel. */
  void (*observe)(void *observer, int64_t experiment_id, sched_observation_t what);
  void *observer;
} sched_options_t;

/* -errno with why in `error` when the executor cannot start. */
int sched_create(const sched_options_t *options, sched_t **out, char *error, size_t error_size);
/* Starts whatever can start now. Call after anything that may free a slot or queue work. */
void sched_kick(sched_t *sched);
int sched_running(const sched_t *sched);

/* What the workers have done since the daemon started (GET /metrics). */
typedef struct {
  uint64_t started;         /* worker processes started */
  uint64_t crashes;         /* of those, how many died without a result (signal, exit) */
  uint64_t events;          /* protocol events received */
  uint64_t rejected_lines;  /* stdout lines that were not protocol events (kept in the log) */
} sched_counters_t;
sched_counters_t sched_counters(const sched_t *sched);
int sched_max_workers(const sched_t *sched);

/* Cancels a queued experiment at once (returns 0, *running = 0) or asks a running one to
 * stop (returns 0, *running = 1). `reason` becomes its error ("cancelled" when NULL).
 * -ENOENT when there is no such experiment, -EALREADY when it has already ended. */
int sched_cancel(sched_t *sched, int64_t id, const char *reason, int *running);

/* Events of a run whose worker runs elsewhere (POST /api/experiments/{id}/events): one
 * protocol line each in `body`, as a local worker prints them. Every line is checked first:
 * -EINVAL with post->errors ([{"line", "message"}]) when one is not a protocol event, and
 * then none is applied. The first post claims a queued or interrupted experiment (it
 * becomes running, attempt + 1, and no local worker is started for it) and gets the
 * attempt's secret in post->secret; every later post must carry it as `secret` (NULL when
 * the request had none). A Slurm job's worker was given its secret beforehand (slurm.h):
 * its first post must carry it too, and no other post claims that run. A `finished` event
 * ends it. A checkpoint event whose path is not
 * a regular file in <data_dir>/experiments/<id>/, or whose epoch is beyond the config's,
 * is refused and never stored: post->refused says which line and why; the others apply.
 * -ENOENT: no such experiment; -EBUSY: a local worker runs it, or it runs elsewhere
 * unclaimed; -EALREADY: it has ended (cancelled, say), or the attempt `secret` was given
 * for has; -EACCES: it is claimed and `secret` is missing or not its attempt's: the
 * message says which (-EBUSY, -EALREADY, -EACCES: post->message); -ESHUTDOWN: the
 * scheduler is stopping. */
#define SCHED_SECRET_BYTES 32 /* from getrandom(2); hex in sched_post_t.secret */
typedef struct {
  int accepted;       /* events applied */
  json_t *errors;     /* -EINVAL: what was wrong, line by line; the caller's to free */
  json_t *refused;    /* 0: events refused ([{"line", "message"}]) or NULL; the caller's to free */
  char message[256];  /* -EBUSY, -EALREADY, -EACCES: why */
  char status[32];    /* the experiment's status after the post */
  char secret[2 * SCHED_SECRET_BYTES + 1]; /* this post claimed the run: its secret; else "" */
} sched_post_t;
int sched_post_events(sched_t *sched, int64_t id, const char *body, size_t length, const char *secret,
                      sched_post_t *post);

/* An experiment ended without success: the runs waiting for it as their teacher fail,
 * saying why. */
void sched_teacher_ended(sched_t *sched, int64_t teacher_id, const char *status, const char *error);

/* Stops every worker (SIGTERM, SIGKILL after the grace period); their experiments become
 * interrupted, to run again on the next start. Calls `done` when all have exited and the
 * batch is flushed; then frees the scheduler. */
void sched_stop(sched_t *sched, void (*done)(void *data), void *data);

#endif
