/* db.h — the daemon's SQLite layer: the only code that writes the database.
 *
 * Everything here runs on the event loop thread, which owns the one writable connection,
 * so no locking is needed. Metric, eval and log rows are not written one by one: they are
 * appended to an in-memory batch that db_flush() commits in one transaction (the caller
 * flushes on a short timer or when db_batch_rows() grows large). Functions return 0 or a
 * negative errno-style code; SQLite's own message is logged. */
#ifndef MAPSAGE_DB_H
#define MAPSAGE_DB_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "event.h"

typedef struct db db_t;

/* Statuses as stored. */
#define DB_QUEUED "queued"
#define DB_RUNNING "running"
#define DB_SUCCEEDED "succeeded"
#define DB_FAILED "failed"
#define DB_CANCELLED "cancelled"
#define DB_INTERRUPTED "interrupted"
int db_status_is_terminal(const char *status);

/* Opens (creating if needed) the database at `path`, in WAL mode, and applies schema.sql.
 * On failure `error` says why. */
int db_open(const char *path, db_t **out, char *error, size_t error_size);
void db_close(db_t *db);
/* The writable connection, for a module with a table of its own (daemon/dataset.c): on the
 * loop thread only, like everything here. */
sqlite3 *db_sqlite(db_t *db);

/* --- experiments ----------------------------------------------------------------------- */

/* `teacher_id` is the experiment it waits for (0: none). */
int db_experiment_insert(db_t *db, const char *name, int priority, int64_t teacher_id, const char *config_json,
                         int64_t *id);

/* The experiment as the API shows it (docs/api.md), as JSON text the caller frees. With
 * `with_config`, also its config, the worker's start report, its stage starts, curve
 * names and checkpoints. Returns 0, -ENOENT when there is none, or another error. */
int db_experiment_text(db_t *db, int64_t id, int with_config, char **text, size_t *length);
/* The same, parsed; NULL when there is none (or on error). */
json_t *db_experiment_get(db_t *db, int64_t id, int with_config);

/* Its status ("queued", …) into `status`; -ENOENT when there is no such experiment. */
int db_experiment_status(db_t *db, int64_t id, char *status, size_t size);

typedef struct {
  const char *statuses;  /* comma-separated, or NULL for all */
  const char *name;      /* substring, or NULL */
  int64_t before;        /* only ids below it; 0 for no bound */
  int limit;
} db_list_filter_t;
/* {"experiments": […], "next_before": id|null}, newest first, as JSON text the caller
 * frees; NULL when the database failed. */
char *db_experiment_list(db_t *db, const db_list_filter_t *filter, size_t *length);

/* The next experiment to run: queued or interrupted, whose teacher (if any) has succeeded,
 * highest priority first, then oldest. Returns 0 with its id and config (caller frees),
 * -ENOENT when there is none. */
int db_experiment_next(db_t *db, int64_t *id, char **config_json);

/* A worker starts on it: status running, attempts + 1, started_at now. Returns the attempt. */
int db_experiment_start(db_t *db, int64_t id, int *attempt);
/* Its worker could not be started after db_experiment_start: it waits again as it did
 * (interrupted when it had run before, else queued), that attempt not counted, `error`
 * saying why it waits. */
int db_experiment_unstart(db_t *db, int64_t id, const char *error);
int db_experiment_set_worker(db_t *db, int64_t id, const char *worker_json);

/* Ends it: status (succeeded, failed, cancelled or interrupted), error (or NULL), summary
 * JSON (or NULL). Interrupted experiments get no finished_at: they will run again. */
int db_experiment_finish(db_t *db, int64_t id, const char *status, const char *error, const char *summary_json);

/* A worker crashed and the run will be tried again: status interrupted, crashes + 1,
 * `error` saying what happened. */
int db_experiment_retry(db_t *db, int64_t id, const char *error);
/* How many times its workers crashed so far. */
int db_experiment_crashes(db_t *db, int64_t id);

/* At start-up: experiments left running by a daemon that died become interrupted. Returns
 * how many, or a negative code. */
int db_mark_running_interrupted(db_t *db);

/* Fails every experiment still waiting for `teacher_id` with `error`; calls `each` with
 * the id of each. Returns how many, or a negative code. */
int db_fail_dependents(db_t *db, int64_t teacher_id, const char *error, void (*each)(void *context, int64_t id),
                       void *context);

/* Checkpoints: record one the worker wrote; the latest one's path (-ENOENT: none). */
int db_checkpoint_add(db_t *db, int64_t id, int64_t epoch, int64_t step, const char *path, int64_t bytes);
int db_checkpoint_latest(db_t *db, int64_t id, char *path, size_t size);

/* Counts experiments with `status`. */
int db_count_status(db_t *db, const char *status);

/* The highest metric step stored for the experiment (0 when none), or a negative errno. */
int64_t db_max_step(db_t *db, int64_t id);

/* --- the batch ------------------------------------------------------------------------- */

/* Appends a metric or eval event's values, a stage start, a log line, or progress. Nothing
 * is written until db_flush. */
int db_batch_event(db_t *db, int64_t id, const ev_t *event);
int db_batch_log(db_t *db, int64_t id, int attempt, int64_t line_number, const char *line, size_t length);
size_t db_batch_rows(const db_t *db);

/* What the batch has done since the database was opened (GET /metrics). */
typedef struct {
  uint64_t flushes, flush_failures; /* transactions committed; refused (kept and retried) */
  uint64_t rows_written;            /* metric, eval, stage and log rows committed */
  double flush_seconds;             /* time spent committing */
} db_counters_t;
db_counters_t db_counters(const db_t *db);
/* Commits the batch in one transaction. On failure the batch is kept for the next try. */
int db_flush(db_t *db);

/* --- reading curves -------------------------------------------------------------------- */

/* Columnar curves as JSON text: {name: {"step": […], "value": […] (, "epoch": […])}} for
 * the names in the comma-separated `names` (NULL for all), steps above `since_step`. The
 * caller frees it; NULL when the database failed. */
char *db_metrics(db_t *db, int64_t id, const char *names, int64_t since_step, size_t *length);

/* The stream's replay: calls `emit` for each stored event after the cursor (`step`,
 * `phase`, see EV_PHASE_*) up to and including step `last_step`, in stream order. The
 * event passed is EV_METRIC or EV_EVAL (step, epoch, stage, split, values) or EV_STAGE
 * (step, epoch, stage, name); it is only valid during the call. Returns how many events
 * it emitted, or a negative code. */
typedef void (*db_replay_cb)(void *context, const ev_t *event);
int db_replay(db_t *db, int64_t id, int64_t step, int phase, int64_t last_step, db_replay_cb emit, void *context);
/* The first step after `after` that has any stored event, or -ENOENT: lets a replay jump a
 * gap in the steps instead of walking it window by window. */
int64_t db_next_step(db_t *db, int64_t id, int64_t after);

/* Rows of a read-only query with up to two integer parameters (?1, ?2) as an array of
 * objects keyed by column name; an empty array when the query fails (logged). For the
 * daemon's own reports, never for user SQL (that is sql.c, off the loop). */
json_t *db_select(db_t *db, const char *sql, int64_t first, int64_t second);

/* The run's log as text: "attempt N | line\n" for every line. Caller frees. */
char *db_log_text(db_t *db, int64_t id, size_t *length);

/* --- for the daemon's other tables (study.c) ------------------------------------------- */

/* The prepared statement for `text` (a string literal), from the cache db.c keeps for its
 * own queries; NULL when it does not prepare (logged). Give it back with db_release, which
 * resets it and clears its bindings. */
sqlite3_stmt *db_statement(db_t *db, const char *text);
void db_release(db_t *db, sqlite3_stmt *statement);
/* Logs the database's message about `what` and returns it as a negative errno. */
int db_failure(db_t *db, const char *what);
/* BEGIN IMMEDIATE, COMMIT, ROLLBACK: several writes as one. The batch is flushed first so
 * that its own transaction never nests in one of these. Returns 0 or a negative errno. */
int db_begin(db_t *db);
int db_commit(db_t *db);
void db_rollback(db_t *db);
/* The rowid of the last INSERT. */
int64_t db_last_id(db_t *db);

#endif
