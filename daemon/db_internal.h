/* db_internal.h — what the files of the daemon's SQLite layer share and nothing else
 * includes: the connection's state (struct db: the statement cache, the write batch, the
 * caches of the experiments' pages and lists) and the helpers they all use. db.c holds the
 * core (open/close, schema, statements, transactions), db_experiments.c the experiments'
 * rows, db_batch.c the write batch, db_replay.c the reads behind the curves and the replay;
 * db_organise.c needs only db.h. Callers outside the layer use db.h alone. */
#ifndef MAPSAGE_DB_INTERNAL_H
#define MAPSAGE_DB_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "db.h"

/* What the config plans, from its JSON text: stored with the experiment so that showing one
 * does not parse its config (that was a third of the time of a GET). */
#define PLANNED_EPOCHS_SQL(config) "(SELECT sum(json_extract(value, '$.epochs')) FROM json_each(" config ", '$.stages'))"
#define PLANNED_STAGES_SQL(config) "json_array_length(" config ", '$.stages')"
#define NOW_SQL "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
/* A new experiment's id: past every one there is and every one deleted (deleted_ids), so
 * that a deleted run's id never names another. */
#define NEXT_EXPERIMENT_ID_SQL                                                                   \
  "(SELECT max(coalesce((SELECT max(id) FROM experiments), 0), "                                \
  "            coalesce((SELECT last_id FROM deleted_ids WHERE table_name = 'experiments'), 0)) + 1)"

typedef enum { ROW_METRIC, ROW_EVAL, ROW_STAGE, ROW_LOG } row_kind_t;

/* Metric rows go in statements of this many: running a statement costs about as much as
 * inserting a row, and a flush writes thousands (measured: 64 rows a statement took the
 * flush from ~350k to ~500k rows/s). */
#define METRICS_PER_INSERT 64
#define METRICS_INSERT "INSERT OR REPLACE INTO metrics (experiment_id, name, step, epoch, stage, value) VALUES "

typedef struct {
  row_kind_t kind;
  int split;            /* eval */
  int64_t experiment_id;
  int64_t step;         /* log: the attempt */
  int64_t epoch;        /* log: the line number */
  int64_t stage;
  double value;
  size_t text;          /* offset of the name (or log line) in the arena */
  size_t text_length;
} row_t;

typedef struct {
  int64_t experiment_id, step, epoch, stage;
} progress_t;

/* (experiment, metric name) pairs already in `series`, so a flush inserts each only once. */
#define SEEN_SLOTS 4096
typedef struct {
  uint64_t hash;
  int64_t experiment_id;
  char *name;
} seen_t;

/* Every query of the layer, prepared once and kept (see db_cached_statement()). */
#define STATEMENT_CACHE_SIZE 64
typedef struct {
  const char *text; /* as the caller passed it: callers pass string literals */
  uint64_t hash;    /* of the text */
  sqlite3_stmt *statement;
} cached_statement_t;

/* The experiment list's queries, whose text depends on the columns, conditions and sort asked
 * for, kept by their text (the dashboard asks the same one again and again). Preparing one
 * cost about as much as answering it: measured with Python's sqlite3 on 300 experiments, a
 * list of 100 took 0.79 ms prepared each time against 0.50 ms prepared once. */
#define LIST_STATEMENTS 8
typedef struct {
  char *text; /* NULL: empty */
  sqlite3_stmt *statement;
  unsigned used;
} list_statement_t;

/* The page's detail arrays (EXPERIMENT_DETAIL_COLUMNS) of recently shown experiments, as
 * the JSON written for them. They change only when the layer writes a stage start, an
 * evaluation, a new curve's name or a checkpoint, and each of those forgets the
 * experiment's entry (db_forget_details): a GET then reads the experiment's row alone, which
 * took a third of the time of reading the arrays too. */
#define DETAILS_CACHE_SIZE 16
typedef struct {
  int64_t experiment_id; /* 0: empty */
  char *text;
  size_t length;
} cached_details_t;

struct db {
  sqlite3 *sql;
  sqlite3_stmt *insert_metric, *insert_eval, *insert_stage, *insert_log, *insert_series, *update_progress;
  sqlite3_stmt *insert_metrics; /* METRICS_PER_INSERT rows at once */
  cached_statement_t statements[STATEMENT_CACHE_SIZE];
  int n_statements;
  row_t *rows;
  size_t n_rows, rows_capacity;
  char *arena;
  size_t arena_used, arena_capacity;
  progress_t progress[64];
  int n_progress;
  seen_t seen[SEEN_SLOTS];
  int n_seen;
  db_counters_t counters;
  cached_details_t details[DETAILS_CACHE_SIZE];
  unsigned next_details; /* the slot the next one takes (the oldest) */
  list_statement_t lists[LIST_STATEMENTS];
  unsigned list_clock; /* counts list queries: a slot's `used` says how recently */
};

/* SQLite's error on `what`, logged and turned into -errno (-ENOSPC, -EBUSY, -ENOMEM, -EIO). */
int db_fail_sql(db_t *db, const char *what);
/* Prepares `text` into `*statement` for the connection's life; 0 or db_fail_sql's -errno. */
int db_prepare(db_t *db, sqlite3_stmt **statement, const char *text);
/* FNV-1a of a NUL-terminated text. */
uint64_t db_hash_text(const char *text);
/* The statement cache (db.c says how it finds and shares them). */
int db_cached_statement(db_t *db, const char *text, sqlite3_stmt **out);
void db_release_statement(db_t *db, sqlite3_stmt *done);
/* Drops the cached detail arrays of experiment `id` (db_experiments.c): call when its
 * stage starts, evaluations, curve names or checkpoints change. */
void db_forget_details(db_t *db, int64_t id);

#endif
