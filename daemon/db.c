/* db.c — the daemon's SQLite layer (see db.h): schema, experiments, the write batch, and
 * the reads behind the curves API and the stream's replay.
 *
 * The write batch. Workers report a metric event per step, each with several values; the
 * daemon turns them into rows and keeps them here until db_flush() commits them in one
 * transaction with prepared statements (INSERT OR REPLACE, so a repeated step overwrites;
 * metric rows 64 to a statement).
 * Row names live in one growing text arena so a row costs no allocation of its own. A
 * failed flush keeps the batch: nothing acknowledged to a subscriber is lost because the
 * disk was briefly full or a reader held a lock. */
#include "db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "json_text.h"
#include "util.h"

extern const unsigned char schema_sql[];
extern const size_t schema_sql_len;

#define SCHEMA_VERSION 5

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

/* Every query of this file, prepared once and kept (see cached_statement()). */
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
 * the JSON written for them. They change only when this file writes a stage start, an
 * evaluation, a new curve's name or a checkpoint, and each of those forgets the
 * experiment's entry (forget_details): a GET then reads the experiment's row alone, which
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

static const char *const terminal_statuses[] = {DB_SUCCEEDED, DB_FAILED, DB_CANCELLED};

int db_status_is_terminal(const char *status) {
  for (size_t i = 0; i < ARRAY_SIZE(terminal_statuses); i++)
    if (strcmp(status, terminal_statuses[i]) == 0) return 1;
  return 0;
}

static int fail_sql(db_t *db, const char *what) {
  fprintf(stderr, "mapsaged: database: %s: %s\n", what, sqlite3_errmsg(db->sql));
  int code = sqlite3_errcode(db->sql);
  if (code == SQLITE_FULL) return -ENOSPC;
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED) return -EBUSY;
  if (code == SQLITE_NOMEM) return -ENOMEM;
  return -EIO;
}

static int prepare(db_t *db, sqlite3_stmt **statement, const char *text) {
  if (sqlite3_prepare_v3(db->sql, text, -1, SQLITE_PREPARE_PERSISTENT, statement, NULL) != SQLITE_OK)
    return fail_sql(db, text);
  return 0;
}

static uint64_t hash_text(const char *text) {
  uint64_t hash = 1469598103934665603ull;
  for (const char *c = text; *c; c++) hash = (hash ^ (unsigned char)*c) * 1099511628211ull;
  return hash;
}

/* The prepared statement for `text`, found again by its text: preparing costs more than
 * running most of these one-row queries (a GET of an experiment prepared five per request).
 * One in use further up the stack (busy) is not shared: a second copy is prepared. Give it
 * back with release_statement(). Returns 0, or nonzero with the error in sqlite3_errmsg. */
static int cached_statement(db_t *db, const char *text, sqlite3_stmt **out) {
  /* The same literal again: found by its address, without hashing a long text. */
  for (int i = 0; i < db->n_statements; i++) {
    cached_statement_t *cached = &db->statements[i];
    if (cached->text == text && !sqlite3_stmt_busy(cached->statement) &&
        strcmp(sqlite3_sql(cached->statement), text) == 0) {
      *out = cached->statement;
      return 0;
    }
  }
  uint64_t hash = hash_text(text);
  for (int i = 0; i < db->n_statements; i++) {
    cached_statement_t *cached = &db->statements[i];
    if (cached->hash == hash && !sqlite3_stmt_busy(cached->statement) &&
        strcmp(sqlite3_sql(cached->statement), text) == 0) {
      *out = cached->statement;
      return 0;
    }
  }
  if (sqlite3_prepare_v3(db->sql, text, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK) return -1;
  if (db->n_statements < STATEMENT_CACHE_SIZE)
    db->statements[db->n_statements++] = (cached_statement_t){text, hash, *out};
  return 0;
}

/* Resets a statement from cached_statement() for its next use, ending its read
 * transaction and dropping its bindings (which may point into the caller's memory); one
 * the cache had no room for is finalized. NULL is ignored. */
static void release_statement(db_t *db, sqlite3_stmt *done) {
  if (done == NULL) return;
  for (int i = 0; i < db->n_statements; i++) {
    if (db->statements[i].statement == done) {
      sqlite3_reset(done);
      sqlite3_clear_bindings(done);
      return;
    }
  }
  sqlite3_finalize(done);
}

/* → 4: the dataset a run trained on and its checksum (daemon/dataset.c), on the
 * experiments table of any earlier database, decided by the table itself: run after
 * schema.sql, which creates the table without them. */
static int add_dataset_columns(db_t *db, char **message) {
  sqlite3_stmt *statement = NULL;
  int missing = 0;
  if (sqlite3_prepare_v2(db->sql, "SELECT count(*) = 0 FROM pragma_table_info('experiments') "
                         "WHERE name = 'dataset_checksum'", -1, &statement, NULL) != SQLITE_OK)
    return SQLITE_ERROR;
  if (sqlite3_step(statement) == SQLITE_ROW) missing = sqlite3_column_int(statement, 0);
  sqlite3_finalize(statement);
  if (missing && sqlite3_exec(db->sql,
                              "ALTER TABLE experiments ADD COLUMN dataset TEXT; "
                              "ALTER TABLE experiments ADD COLUMN dataset_checksum TEXT; "
                              "UPDATE experiments SET dataset = coalesce(json_extract(config, '$.dataset.name'), "
                              "'fashion-mnist');",
                              NULL, NULL, message) != SQLITE_OK)
    return SQLITE_ERROR;
  /* Every insert, an experiment's or a study's runs', records its data: the name and the
   * checksum in its config (a registered dataset's, filled in at submission), else the
   * registry's (Fashion-MNIST's once it has been read). */
  return sqlite3_exec(db->sql,
                      "CREATE TRIGGER IF NOT EXISTS experiments_dataset AFTER INSERT ON experiments BEGIN "
                      "UPDATE experiments SET dataset = coalesce(json_extract(NEW.config, '$.dataset.name'), "
                      "'fashion-mnist'), dataset_checksum = coalesce(json_extract(NEW.config, '$.dataset.checksum'), "
                      "(SELECT checksum FROM datasets WHERE name = coalesce(json_extract(NEW.config, "
                      "'$.dataset.name'), 'fashion-mnist'))) WHERE id = NEW.id; END;",
                      NULL, NULL, message);
}

sqlite3 *db_sqlite(db_t *db) { return db->sql; }

/* Whether `table` exists without `column`: a migration that adds the column is due. Decided
 * by the table itself (pragma_table_info), not the version, so that migrations made on
 * parallel branches compose whatever numbers they end up with. -1 when SQLite fails. */
static int column_missing(db_t *db, const char *table, const char *column) {
  sqlite3_stmt *statement = NULL;
  if (sqlite3_prepare_v2(db->sql,
                         "SELECT count(*) > 0 AND sum(name = ?2) = 0 FROM pragma_table_info(?1)", -1, &statement,
                         NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_text(statement, 1, table, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 2, column, -1, SQLITE_STATIC);
  int missing = sqlite3_step(statement) == SQLITE_ROW ? sqlite3_column_int(statement, 0) : -1;
  sqlite3_finalize(statement);
  return missing;
}

static int apply_schema(db_t *db, char *error, size_t error_size) {
  sqlite3_stmt *statement = NULL;
  int version = 0;
  if (sqlite3_prepare_v2(db->sql, "PRAGMA user_version", -1, &statement, NULL) != SQLITE_OK) goto sql_fail;
  if (sqlite3_step(statement) == SQLITE_ROW) version = sqlite3_column_int(statement, 0);
  sqlite3_finalize(statement);
  if (version > SCHEMA_VERSION) {
    snprintf(error, error_size, "the database has schema version %d, newer than this mapsaged (%d)", version,
             SCHEMA_VERSION);
    return -EPROTO;
  }
  /* Tables are created only if missing and views made again: running it on a current
   * database changes no data. Migrations of released tables go first, by version. */
  char *message = NULL;
  char set_version[64];
  snprintf(set_version, sizeof set_version, "PRAGMA user_version = %d", SCHEMA_VERSION);
  /* 1 → 2: the plan's epochs and stages stored with each experiment. Decided by the table
   * itself, since a database made with sqlite3 and schema.sql has no version. */
  const char *to_version_2 = "";
  if (sqlite3_prepare_v2(db->sql,
                         "SELECT count(*) = 1 FROM pragma_table_info('experiments') WHERE name = 'config' "
                         "AND NOT EXISTS (SELECT 1 FROM pragma_table_info('experiments') "
                         "                WHERE name = 'planned_epochs')",
                         -1, &statement, NULL) != SQLITE_OK)
    goto sql_fail;
  if (sqlite3_step(statement) == SQLITE_ROW && sqlite3_column_int(statement, 0))
    to_version_2 = "ALTER TABLE experiments ADD COLUMN planned_epochs INTEGER; "
                   "ALTER TABLE experiments ADD COLUMN planned_stages INTEGER; "
                   "UPDATE experiments SET planned_epochs = " PLANNED_EPOCHS_SQL("config") ", "
                   "planned_stages = " PLANNED_STAGES_SQL("config") ";";
  sqlite3_finalize(statement);
  /* → 5: the user's note and archive date on experiments and on studies (tags are tables
   * of their own, made by schema.sql). */
  int experiments_unnoted = column_missing(db, "experiments", "note");
  int studies_unnoted = column_missing(db, "studies", "note");
  if (experiments_unnoted < 0 || studies_unnoted < 0) goto sql_fail;
  const char *to_version_4_experiments =
      experiments_unnoted ? "ALTER TABLE experiments ADD COLUMN note TEXT NOT NULL DEFAULT ''; "
                            "ALTER TABLE experiments ADD COLUMN archived_at TEXT;"
                          : "";
  const char *to_version_4_studies = studies_unnoted ? "ALTER TABLE studies ADD COLUMN note TEXT NOT NULL DEFAULT ''; "
                                                       "ALTER TABLE studies ADD COLUMN archived_at TEXT;"
                                                     : "";
  if (sqlite3_exec(db->sql, "BEGIN IMMEDIATE", NULL, NULL, &message) != SQLITE_OK ||
      sqlite3_exec(db->sql, to_version_2, NULL, NULL, &message) != SQLITE_OK ||
      sqlite3_exec(db->sql, to_version_4_experiments, NULL, NULL, &message) != SQLITE_OK ||
      sqlite3_exec(db->sql, to_version_4_studies, NULL, NULL, &message) != SQLITE_OK ||
      sqlite3_exec(db->sql, (const char *)schema_sql, NULL, NULL, &message) != SQLITE_OK ||
      add_dataset_columns(db, &message) != SQLITE_OK ||
      sqlite3_exec(db->sql, set_version, NULL, NULL, &message) != SQLITE_OK ||
      sqlite3_exec(db->sql, "COMMIT", NULL, NULL, &message) != SQLITE_OK) {
    snprintf(error, error_size, "applying schema.sql: %s", message ? message : sqlite3_errmsg(db->sql));
    sqlite3_free(message);
    sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
    return -EIO;
  }
  return 0;
sql_fail:
  snprintf(error, error_size, "%s", sqlite3_errmsg(db->sql));
  return -EIO;
}

int db_open(const char *path, db_t **out, char *error, size_t error_size) {
  db_t *db = calloc(1, sizeof *db);
  if (db == NULL) return -ENOMEM;
  int result = -EIO;
  if (sqlite3_open_v2(path, &db->sql, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
      SQLITE_OK) {
    snprintf(error, error_size, "cannot open %s: %s", path, db->sql ? sqlite3_errmsg(db->sql) : "out of memory");
    goto fail;
  }
  /* A reader (sqlite3 in a terminal) may briefly hold a lock; wait rather than fail. But
   * never long: this connection runs on the event loop. */
  sqlite3_busy_timeout(db->sql, 200);
  char *message = NULL;
  if (sqlite3_exec(db->sql,
                   "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                   NULL, NULL, &message) != SQLITE_OK) {
    snprintf(error, error_size, "cannot set up %s: %s", path, message ? message : "?");
    sqlite3_free(message);
    goto fail;
  }
  if ((result = apply_schema(db, error, error_size)) != 0) goto fail;
  result = -EIO;
  char insert_metrics[sizeof METRICS_INSERT + METRICS_PER_INSERT * sizeof ", (?, ?, ?, ?, ?, ?)"] = METRICS_INSERT;
  for (int i = 0; i < METRICS_PER_INSERT; i++) strcat(insert_metrics, i ? ", (?, ?, ?, ?, ?, ?)" : "(?, ?, ?, ?, ?, ?)");
  if (prepare(db, &db->insert_metric, METRICS_INSERT "(?1, ?2, ?3, ?4, ?5, ?6)") ||
      prepare(db, &db->insert_metrics, insert_metrics) ||
      prepare(db, &db->insert_eval,
              "INSERT OR REPLACE INTO evals (experiment_id, split, split_order, name, epoch, step, stage, value) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)") ||
      prepare(db, &db->insert_stage,
              "INSERT OR REPLACE INTO stage_starts (experiment_id, stage, name, epoch, step) "
              "VALUES (?1, ?2, ?3, ?4, ?5)") ||
      prepare(db, &db->insert_log,
              "INSERT OR REPLACE INTO logs (experiment_id, attempt, line_number, at, line) "
              "VALUES (?1, ?2, ?3, " NOW_SQL ", ?4)") ||
      prepare(db, &db->insert_series, "INSERT OR IGNORE INTO series (experiment_id, name) VALUES (?1, ?2)") ||
      prepare(db, &db->update_progress,
              "UPDATE experiments SET step = max(coalesce(step, 0), ?2), epoch = ?3, stage = ?4 WHERE id = ?1")) {
    snprintf(error, error_size, "preparing statements: %s", sqlite3_errmsg(db->sql));
    goto fail;
  }
  *out = db;
  return 0;
fail:
  db_close(db);
  return result;
}

void db_close(db_t *db) {
  if (db == NULL) return;
  if (db->sql) db_flush(db);
  sqlite3_finalize(db->insert_metric);
  sqlite3_finalize(db->insert_metrics);
  sqlite3_finalize(db->insert_eval);
  sqlite3_finalize(db->insert_stage);
  sqlite3_finalize(db->insert_log);
  sqlite3_finalize(db->insert_series);
  sqlite3_finalize(db->update_progress);
  for (int i = 0; i < db->n_statements; i++) sqlite3_finalize(db->statements[i].statement);
  for (int i = 0; i < DETAILS_CACHE_SIZE; i++) free(db->details[i].text);
  for (int i = 0; i < LIST_STATEMENTS; i++) {
    sqlite3_finalize(db->lists[i].statement);
    free(db->lists[i].text);
  }
  sqlite3_close(db->sql);
  for (int i = 0; i < SEEN_SLOTS; i++) free(db->seen[i].name);
  free(db->rows);
  free(db->arena);
  free(db);
}

// ---------------------------------------------------------------------------------------
// experiments

/* The columns every experiment query selects, in the order write_experiment reads. */
#define EXPERIMENT_COLUMNS                                                                      \
  "id, name, status, priority, created_at, started_at, finished_at, attempts, error, epoch, "   \
  "step, stage, summary, "                                                                      \
  "planned_epochs, planned_stages, teacher_id, config, worker, note, archived_at, "              \
  "(SELECT json_group_array(tag) FROM (SELECT tag FROM experiment_tags "                         \
  "                                    WHERE experiment_id = experiments.id ORDER BY tag)), "    \
  "dataset, dataset_checksum"

#define EXPERIMENT_COLUMN_COUNT 23

/* What the experiment's page needs beyond the list row, as JSON arrays SQLite builds in the
 * same statement (one read transaction instead of four): where each stage began, the names
 * of its curves, its checkpoints. */
#define EXPERIMENT_DETAIL_COLUMNS                                                                         \
  ", (SELECT json_group_array(json_object('stage', stage, 'name', name, 'epoch', epoch, 'step', step)) "  \
  "   FROM (SELECT * FROM stage_starts WHERE experiment_id = experiments.id ORDER BY stage)), "            \
  "(SELECT json_group_array(name) FROM (SELECT name FROM series WHERE experiment_id = experiments.id "     \
  "   UNION SELECT split || '/' || name FROM evals WHERE experiment_id = experiments.id ORDER BY 1)), "   \
  "(SELECT json_group_array(json_object('epoch', epoch, 'step', step, 'path', path, 'bytes', bytes, "    \
  "                                     'created_at', created_at)) "                                      \
  "   FROM (SELECT * FROM checkpoints WHERE experiment_id = experiments.id ORDER BY epoch))"

/* A column's value as JSON: integers, reals (null if infinite: JSON has no infinity),
 * text as strings, NULL as null. */
static void write_column(json_text_t *out, sqlite3_stmt *statement, int column) {
  switch (sqlite3_column_type(statement, column)) {
  case SQLITE_INTEGER: json_text_integer(out, sqlite3_column_int64(statement, column)); break;
  case SQLITE_FLOAT: json_text_real(out, sqlite3_column_double(statement, column)); break;
  case SQLITE_NULL: json_text_literal(out, "null"); break;
  default: json_text_string(out, (const char *)sqlite3_column_text(statement, column)); break;
  }
}

/* A column holding JSON the daemon wrote itself (summary, config, the worker's report),
 * spliced as it is: parsing and dumping it again was most of a GET's time. */
static void write_json_column(json_text_t *out, sqlite3_stmt *statement, int column) {
  const char *text = (const char *)sqlite3_column_text(statement, column);
  json_text_literal(out, text && text[0] ? text : "null");
}

/* One experiment row (EXPERIMENT_COLUMNS) as the API shows it (docs/api.md). */
static void write_experiment(json_text_t *out, sqlite3_stmt *row, int with_config) {
  static const struct {
    const char *key;
    int column;
  } fields[] = {{"{\"id\":", 0},          {",\"name\":", 1},       {",\"status\":", 2},
                {",\"priority\":", 3},    {",\"created_at\":", 4}, {",\"started_at\":", 5},
                {",\"finished_at\":", 6}, {",\"attempts\":", 7},   {",\"error\":", 8},
                {",\"progress\":{\"epoch\":", 9}, {",\"epochs\":", 13},  {",\"step\":", 10},
                {",\"stage\":", 11},      {",\"stages\":", 14}};
  for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
    json_text_literal(out, fields[i].key);
    write_column(out, row, fields[i].column);
  }
  json_text_literal(out, "},\"summary\":");
  write_json_column(out, row, 12);
  json_text_literal(out, ",\"teacher\":");
  write_column(out, row, 15);
  if (with_config) {
    json_text_literal(out, ",\"config\":");
    write_json_column(out, row, 16);
    json_text_literal(out, ",\"worker\":");
    write_json_column(out, row, 17);
  }
  json_text_literal(out, ",\"note\":");
  write_column(out, row, 18);
  json_text_literal(out, ",\"tags\":");
  write_json_column(out, row, 20);
  json_text_literal(out, ",\"archived_at\":");
  write_column(out, row, 19);
  /* The data it trained on and the checksum recorded at submission (issue 16), so that a
   * result says which data it came from. */
  json_text_literal(out, ",\"dataset\":");
  write_column(out, row, 21);
  json_text_literal(out, ",\"dataset_checksum\":");
  write_column(out, row, 22);
}

/* EXPERIMENT_DETAIL_COLUMNS of a row, after write_experiment's fields. */
static void write_details(json_text_t *out, sqlite3_stmt *row) {
  json_text_literal(out, ",\"stages\":");
  write_json_column(out, row, EXPERIMENT_COLUMN_COUNT);
  json_text_literal(out, ",\"series\":");
  write_json_column(out, row, EXPERIMENT_COLUMN_COUNT + 1);
  json_text_literal(out, ",\"checkpoints\":");
  write_json_column(out, row, EXPERIMENT_COLUMN_COUNT + 2);
}

static cached_details_t *find_details(db_t *db, int64_t id) {
  for (int i = 0; i < DETAILS_CACHE_SIZE; i++)
    if (db->details[i].experiment_id == id) return &db->details[i];
  return NULL;
}

static void forget_details(db_t *db, int64_t id) {
  cached_details_t *details = find_details(db, id);
  if (details == NULL) return;
  free(details->text);
  *details = (cached_details_t){0};
}

void db_forget_experiment(db_t *db, int64_t id) {
  /* The `seen` set may keep the deleted run's curve names: ids are never given again, so
   * they only hold a slot until the set is next emptied. */
  forget_details(db, id);
}

static void remember_details(db_t *db, int64_t id, const char *text, size_t length) {
  char *copy = malloc(length);
  if (copy == NULL) return; /* shown without the cache, then */
  memcpy(copy, text, length);
  cached_details_t *slot = &db->details[db->next_details++ % DETAILS_CACHE_SIZE];
  free(slot->text);
  *slot = (cached_details_t){id, copy, length};
}

/* The first column of `text`'s first row as an integer, `fallback` when it has no row; ?1
 * bound to `text_parameter`, or to `id` when that is NULL. A negative errno when the
 * database fails. For the one-figure questions (attempts, crashes, counts, steps). */
static int64_t select_integer(db_t *db, const char *text, int64_t id, const char *text_parameter, int64_t fallback) {
  sqlite3_stmt *statement = NULL;
  if (cached_statement(db, text, &statement) != 0) return fail_sql(db, text);
  if (text_parameter) sqlite3_bind_text(statement, 1, text_parameter, -1, SQLITE_STATIC);
  else sqlite3_bind_int64(statement, 1, id);
  int code = sqlite3_step(statement);
  int64_t value = code == SQLITE_ROW ? sqlite3_column_int64(statement, 0) : fallback;
  if (code != SQLITE_ROW && code != SQLITE_DONE) value = fail_sql(db, text);
  release_statement(db, statement);
  return value;
}

int db_experiment_insert(db_t *db, const char *name, int priority, int64_t teacher_id, const char *config_json,
                         int64_t *id) {
  sqlite3_stmt *statement = NULL;
  if (cached_statement(db,
                       "INSERT INTO experiments (id, name, priority, config, teacher_id, planned_epochs, "
                       "planned_stages) VALUES (" NEXT_EXPERIMENT_ID_SQL ", ?1, ?2, ?3, ?4, "
                       PLANNED_EPOCHS_SQL("?3") ", " PLANNED_STAGES_SQL("?3") ")",
                       &statement) != 0)
    return fail_sql(db, "insert experiment");
  sqlite3_bind_text(statement, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_int(statement, 2, priority);
  sqlite3_bind_text(statement, 3, config_json, -1, SQLITE_STATIC);
  if (teacher_id > 0) sqlite3_bind_int64(statement, 4, teacher_id);
  int result = sqlite3_step(statement) == SQLITE_DONE ? 0 : fail_sql(db, "insert experiment");
  release_statement(db, statement);
  if (result == 0) *id = sqlite3_last_insert_rowid(db->sql);
  return result;
}

/* The rows of `text` (parameters ?1 and ?2 bound to `first` and `second` when it has them)
 * as a JSON array of objects keyed by column name. */
static int write_rows(db_t *db, json_text_t *out, const char *text, int64_t first, int64_t second) {
  sqlite3_stmt *statement = NULL;
  if (cached_statement(db, text, &statement) != 0) return fail_sql(db, text);
  if (sqlite3_bind_parameter_count(statement) >= 1) sqlite3_bind_int64(statement, 1, first);
  if (sqlite3_bind_parameter_count(statement) >= 2) sqlite3_bind_int64(statement, 2, second);
  json_text_literal(out, "[");
  int code, rows = 0;
  while ((code = sqlite3_step(statement)) == SQLITE_ROW) {
    if (rows++ > 0) json_text_literal(out, ",");
    for (int i = 0; i < sqlite3_column_count(statement); i++) {
      json_text_literal(out, i == 0 ? "{" : ",");
      json_text_string(out, sqlite3_column_name(statement, i));
      json_text_literal(out, ":");
      write_column(out, statement, i);
    }
    json_text_literal(out, sqlite3_column_count(statement) > 0 ? "}" : "{}");
  }
  json_text_literal(out, "]");
  int result = code == SQLITE_DONE ? 0 : fail_sql(db, text);
  release_statement(db, statement);
  return result;
}

/* JSON text the daemon just wrote, as a jansson value (NULL when it could not be made). */
static json_t *parse_own_text(json_text_t *text) {
  size_t length = 0;
  char *data = json_text_take(text, &length);
  json_t *value = data ? json_loadb(data, length, 0, NULL) : NULL;
  free(data);
  return value;
}

json_t *db_select(db_t *db, const char *text, int64_t first, int64_t second) {
  json_text_t rows;
  json_text_init(&rows);
  json_t *parsed = write_rows(db, &rows, text, first, second) == 0 ? parse_own_text(&rows) : NULL;
  json_text_free(&rows);
  return parsed ? parsed : json_array();
}

int db_experiment_text(db_t *db, int64_t id, int with_config, char **text, size_t *length) {
  sqlite3_stmt *statement = NULL;
  const cached_details_t *details = with_config ? find_details(db, id) : NULL;
  if (cached_statement(db,
                       with_config && !details
                           ? "SELECT " EXPERIMENT_COLUMNS EXPERIMENT_DETAIL_COLUMNS " FROM experiments WHERE id = ?1"
                           : "SELECT " EXPERIMENT_COLUMNS " FROM experiments WHERE id = ?1",
                       &statement) != 0)
    return fail_sql(db, "get experiment");
  sqlite3_bind_int64(statement, 1, id);
  json_text_t out;
  json_text_init(&out);
  int code = sqlite3_step(statement);
  int result = code == SQLITE_ROW ? 0 : code == SQLITE_DONE ? -ENOENT : fail_sql(db, "get experiment");
  if (result == 0) write_experiment(&out, statement, with_config);
  if (result == 0 && with_config) {
    if (details) {
      json_text_raw(&out, details->text, details->length);
    } else {
      size_t start = out.length;
      write_details(&out, statement);
      if (!out.failed) remember_details(db, id, out.data + start, out.length - start);
    }
  }
  release_statement(db, statement);
  json_text_literal(&out, "}");
  if (result == 0 && (*text = json_text_take(&out, length)) == NULL) result = -ENOMEM;
  json_text_free(&out);
  return result;
}

json_t *db_experiment_get(db_t *db, int64_t id, int with_config) {
  char *text;
  size_t length;
  if (db_experiment_text(db, id, with_config, &text, &length) != 0) return NULL;
  json_t *experiment = json_loadb(text, length, 0, NULL);
  free(text);
  return experiment;
}

int db_experiment_status(db_t *db, int64_t id, char *status, size_t size) {
  sqlite3_stmt *statement = NULL;
  if (cached_statement(db, "SELECT status FROM experiments WHERE id = ?1", &statement) != 0)
    return fail_sql(db, "experiment status");
  sqlite3_bind_int64(statement, 1, id);
  int result = -ENOENT;
  if (sqlite3_step(statement) == SQLITE_ROW) {
    util_strlcpy(status, (const char *)sqlite3_column_text(statement, 0), size);
    result = 0;
  }
  release_statement(db, statement);
  return result;
}

/* The list's sort keys by name, and what they sort by. */
static const struct {
  const char *name, *sql;
} list_sort_keys[] = {
    {"id", "id"},
    {"name", "lower(name)"},
    {"status", "status"},
    {"priority", "priority"},
    {"teacher", "teacher_id"},
    {"created_at", "created_at"},
    {"started_at", "started_at"},
    {"finished_at", "finished_at"},
    {"attempts", "attempts"},
    {"progress", "CAST(coalesce(epoch, 0) AS REAL) / max(1, coalesce(planned_epochs, 1))"},
    {"step", "step"},
    {"duration", "julianday(coalesce(finished_at, " NOW_SQL ")) - julianday(started_at)"},
    {"archived_at", "archived_at"},
};

const char *db_list_sort_key(size_t index) {
  return index < ARRAY_SIZE(list_sort_keys) ? list_sort_keys[index].name : NULL;
}

/* json_extract of the field's column ("config" or "summary") at parameter ?N. */
static void write_field_sql(json_text_t *sql, const db_field_t *field, int parameter) {
  char text[64];
  snprintf(text, sizeof text, "json_extract(%s, ?%d)", field->source == DB_FIELD_SUMMARY ? "summary" : "config",
           parameter);
  json_text_literal(sql, text);
}

/* The SELECT for a filter, with its parameters numbered in the order bind_list binds them:
 * the fixed filters ?1–?7, then each shown column's path, each condition's path and value,
 * the sort field's path. */
static void write_list_sql(json_text_t *sql, const db_list_filter_t *filter) {
  static const char *const operators[] = DB_OPERATORS;
  json_text_literal(sql, "SELECT " EXPERIMENT_COLUMNS);
  int parameter = 8;
  for (int i = 0; i < filter->n_columns; i++) {
    json_text_literal(sql, ", ");
    write_field_sql(sql, &filter->columns[i], parameter++);
  }
  json_text_literal(sql, " FROM experiments "
                         "WHERE (?1 IS NULL OR instr(',' || ?1 || ',', ',' || status || ',') > 0) "
                         "  AND (?2 IS NULL OR instr(lower(name), lower(?2)) > 0) "
                         "  AND (?3 = 0 OR id < ?3) "
                         "  AND (?4 = 2 OR (archived_at IS NOT NULL) = ?4) "
                         "  AND (?5 IS NULL OR EXISTS (SELECT 1 FROM experiment_tags t WHERE t.experiment_id = "
                         "       experiments.id AND instr(',' || ?5 || ',', ',' || t.tag || ',') > 0))");
  for (int i = 0; i < filter->n_conditions; i++) {
    json_text_literal(sql, " AND ");
    write_field_sql(sql, &filter->conditions[i].field, parameter++);
    char text[32];
    int op = filter->conditions[i].op;
    snprintf(text, sizeof text, " %s ?%d", operators[op >= 0 && op < (int)ARRAY_SIZE(operators) ? op : 0], parameter++);
    json_text_literal(sql, text);
  }
  json_text_literal(sql, " ORDER BY ");
  if (filter->sort_field) {
    json_text_literal(sql, "(");
    write_field_sql(sql, filter->sort_field, parameter);
    json_text_literal(sql, ") IS NULL, ");
    write_field_sql(sql, filter->sort_field, parameter);
  } else if (filter->sort_key > 0 && (size_t)filter->sort_key < ARRAY_SIZE(list_sort_keys)) {
    /* Runs without the value (not started, not ended) last, whichever the direction. */
    json_text_literal(sql, "(");
    json_text_literal(sql, list_sort_keys[filter->sort_key].sql);
    json_text_literal(sql, ") IS NULL, ");
    json_text_literal(sql, list_sort_keys[filter->sort_key].sql);
  } else {
    json_text_literal(sql, "id");
  }
  json_text_literal(sql, filter->ascending ? " ASC, id DESC LIMIT ?6 OFFSET ?7" : " DESC, id DESC LIMIT ?6 OFFSET ?7");
}

static void bind_list(sqlite3_stmt *statement, const db_list_filter_t *filter) {
  sqlite3_bind_text(statement, 1, filter->statuses, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 2, filter->name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(statement, 3, filter->before);
  sqlite3_bind_int(statement, 4, filter->archived);
  sqlite3_bind_text(statement, 5, filter->tags, -1, SQLITE_STATIC);
  sqlite3_bind_int(statement, 6, filter->limit + 1); /* one more tells whether a next page exists */
  sqlite3_bind_int64(statement, 7, filter->offset);
  int parameter = 8;
  for (int i = 0; i < filter->n_columns; i++)
    sqlite3_bind_text(statement, parameter++, filter->columns[i].path, -1, SQLITE_STATIC);
  for (int i = 0; i < filter->n_conditions; i++) {
    const db_condition_t *condition = &filter->conditions[i];
    sqlite3_bind_text(statement, parameter++, condition->field.path, -1, SQLITE_STATIC);
    if (condition->is_number) sqlite3_bind_double(statement, parameter++, condition->number);
    else sqlite3_bind_text(statement, parameter++, condition->text, -1, SQLITE_STATIC);
  }
  if (filter->sort_field) sqlite3_bind_text(statement, parameter, filter->sort_field->path, -1, SQLITE_STATIC);
}

/* The shown columns of a row, as {"<name>": value, …}, after its other fields. */
static void write_list_columns(json_text_t *out, sqlite3_stmt *row, const db_list_filter_t *filter) {
  if (filter->n_columns == 0) return;
  json_text_literal(out, ",\"columns\":{");
  for (int i = 0; i < filter->n_columns; i++) {
    if (i > 0) json_text_literal(out, ",");
    json_text_string(out, filter->column_names[i]);
    json_text_literal(out, ":");
    /* A value that is itself an object or array comes back from json_extract as JSON text. */
    if (sqlite3_column_type(row, EXPERIMENT_COLUMN_COUNT + i) == SQLITE_TEXT) {
      const char *text = (const char *)sqlite3_column_text(row, EXPERIMENT_COLUMN_COUNT + i);
      if (text[0] == '{' || text[0] == '[') {
        json_text_literal(out, text);
        continue;
      }
    }
    write_column(out, row, EXPERIMENT_COLUMN_COUNT + i);
  }
  json_text_literal(out, "}");
}

/* The prepared list query of `text` (LIST_STATEMENTS kept, the least recently used given
 * up); NULL when it does not prepare. The statement stays the cache's. */
static sqlite3_stmt *list_statement(db_t *db, json_text_t *text) {
  list_statement_t *slot = &db->lists[0];
  for (int i = 0; i < LIST_STATEMENTS; i++) {
    list_statement_t *candidate = &db->lists[i];
    if (candidate->text && strcmp(candidate->text, text->data) == 0) {
      candidate->used = ++db->list_clock;
      return candidate->statement;
    }
    if (candidate->used < slot->used) slot = candidate;
  }
  sqlite3_stmt *statement = NULL;
  if (sqlite3_prepare_v2(db->sql, text->data, (int)text->length, &statement, NULL) != SQLITE_OK) return NULL;
  sqlite3_finalize(slot->statement);
  free(slot->text);
  *slot = (list_statement_t){json_text_take(text, NULL), statement, ++db->list_clock};
  if (slot->text == NULL) { /* out of memory: used this once */
    slot->statement = NULL;
    slot->used = 0;
    return statement; /* finalized by the caller, see below */
  }
  return statement;
}

char *db_experiment_list(db_t *db, const db_list_filter_t *filter, size_t *length) {
  json_text_t sql;
  json_text_init(&sql);
  write_list_sql(&sql, filter);
  sqlite3_stmt *statement = sql.failed ? NULL : list_statement(db, &sql);
  /* A statement prepared but not kept (no memory for its text) is this call's to finalize. */
  int owned = statement != NULL;
  for (int i = 0; i < LIST_STATEMENTS && owned; i++) owned = db->lists[i].statement != statement;
  json_text_free(&sql);
  if (statement == NULL) {
    fail_sql(db, "list experiments");
    return NULL;
  }
  bind_list(statement, filter);
  json_text_t out;
  json_text_init(&out);
  json_text_literal(&out, "{\"experiments\":[");
  int64_t last_id = 0;
  int count = 0, more = 0, step;
  while ((step = sqlite3_step(statement)) == SQLITE_ROW) {
    if (count == filter->limit) {
      more = 1;
      break;
    }
    if (count++ > 0) json_text_literal(&out, ",");
    last_id = sqlite3_column_int64(statement, 0);
    write_experiment(&out, statement, 0);
    write_list_columns(&out, statement, filter);
    json_text_literal(&out, "}");
  }
  int failed = step != SQLITE_ROW && step != SQLITE_DONE;
  if (failed) fail_sql(db, "list experiments");
  if (owned) sqlite3_finalize(statement);
  else {
    sqlite3_reset(statement);
    sqlite3_clear_bindings(statement);
  }
  /* next_before pages by id, which only the default order follows; next_offset pages any. */
  json_text_literal(&out, "],\"next_before\":");
  if (more && filter->sort_key == 0 && filter->sort_field == NULL && !filter->ascending)
    json_text_integer(&out, last_id);
  else json_text_literal(&out, "null");
  json_text_literal(&out, ",\"next_offset\":");
  if (more) json_text_integer(&out, filter->offset + count);
  else json_text_literal(&out, "null");
  json_text_literal(&out, "}");
  if (failed) {
    json_text_free(&out);
    return NULL;
  }
  return json_text_take(&out, length);
}

int db_experiment_next(db_t *db, int64_t *id, char **config_json) {
  sqlite3_stmt *statement = NULL;
  /* Two index range scans, one per runnable status, merged: the queue index serves both. */
  if (cached_statement(db,
                       "SELECT id, config FROM experiments e WHERE status IN ('queued', 'interrupted') "
                       "AND (teacher_id IS NULL OR "
                       "     (SELECT status FROM experiments t WHERE t.id = e.teacher_id) = 'succeeded') "
                       /* a cluster job that may still run it (daemon/slurm.c) */
                       "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.experiment_id = e.id AND j.ended_at IS NULL) "
                       "ORDER BY priority DESC, id LIMIT 1",
                       &statement) != 0)
    return fail_sql(db, "next experiment");
  int result = -ENOENT;
  if (sqlite3_step(statement) == SQLITE_ROW) {
    *id = sqlite3_column_int64(statement, 0);
    *config_json = strdup((const char *)sqlite3_column_text(statement, 1));
    result = *config_json ? 0 : -ENOMEM;
  }
  release_statement(db, statement);
  return result;
}

/* Runs one UPDATE with up to three text parameters (?2…) about experiment ?1. */
static int update_experiment(db_t *db, const char *text, int64_t id, const char *a, const char *b, const char *c) {
  sqlite3_stmt *statement = NULL;
  if (cached_statement(db, text, &statement) != 0) return fail_sql(db, text);
  sqlite3_bind_int64(statement, 1, id);
  const char *texts[] = {a, b, c};
  for (int i = 0; i < 3 && i + 2 <= sqlite3_bind_parameter_count(statement); i++)
    sqlite3_bind_text(statement, i + 2, texts[i], -1, SQLITE_STATIC);
  int result = sqlite3_step(statement) == SQLITE_DONE ? 0 : fail_sql(db, text);
  release_statement(db, statement);
  if (result == 0 && sqlite3_changes(db->sql) == 0) result = -ENOENT;
  return result;
}

int db_experiment_start(db_t *db, int64_t id, int *attempt) {
  int result = update_experiment(db,
                                 "UPDATE experiments SET status = 'running', attempts = attempts + 1, "
                                 "started_at = " NOW_SQL ", finished_at = NULL, error = NULL WHERE id = ?1",
                                 id, NULL, NULL, NULL);
  if (result != 0) return result;
  int64_t attempts = select_integer(db, "SELECT attempts FROM experiments WHERE id = ?1", id, NULL, 1);
  if (attempts < 0) return (int)attempts;
  *attempt = (int)attempts;
  return 0;
}

int db_experiment_unstart(db_t *db, int64_t id, const char *error) {
  return update_experiment(db,
                           "UPDATE experiments SET status = CASE WHEN attempts > 1 THEN 'interrupted' ELSE 'queued' END, "
                           "attempts = attempts - 1, error = ?2 WHERE id = ?1 AND status = 'running'",
                           id, error, NULL, NULL);
}

int db_experiment_set_worker(db_t *db, int64_t id, const char *worker_json) {
  /* A run on Fashion-MNIST submitted before the registry had read it has no checksum yet:
   * its worker reports the one of the files it read. */
  return update_experiment(db,
                           "UPDATE experiments SET worker = ?2, dataset_checksum = coalesce(dataset_checksum, "
                           "json_extract(?2, '$.dataset.checksum')) WHERE id = ?1",
                           id, worker_json, NULL, NULL);
}

int db_experiment_finish(db_t *db, int64_t id, const char *status, const char *error, const char *summary_json) {
  if (strcmp(status, DB_INTERRUPTED) == 0)
    return update_experiment(db, "UPDATE experiments SET status = ?2, error = ?3 WHERE id = ?1", id, status, error,
                             NULL);
  return update_experiment(db,
                           "UPDATE experiments SET status = ?2, error = ?3, summary = coalesce(?4, summary), "
                           "finished_at = " NOW_SQL " WHERE id = ?1",
                           id, status, error, summary_json);
}

int db_experiment_retry(db_t *db, int64_t id, const char *error) {
  return update_experiment(db, "UPDATE experiments SET status = 'interrupted', error = ?2, crashes = crashes + 1 "
                               "WHERE id = ?1",
                           id, error, NULL, NULL);
}

int db_experiment_crashes(db_t *db, int64_t id) {
  return (int)select_integer(db, "SELECT crashes FROM experiments WHERE id = ?1", id, NULL, 0);
}

int db_mark_running_interrupted(db_t *db) {
  char *message = NULL;
  if (sqlite3_exec(db->sql,
                   "UPDATE experiments SET status = 'interrupted', "
                   "error = 'the daemon stopped while it ran; it will run again' WHERE status = 'running'",
                   NULL, NULL, &message) != SQLITE_OK) {
    fprintf(stderr, "mapsaged: database: marking interrupted runs: %s\n", message);
    sqlite3_free(message);
    return -EIO;
  }
  return sqlite3_changes(db->sql);
}

int db_fail_dependents(db_t *db, int64_t teacher_id, const char *error, void (*each)(void *context, int64_t id),
                       void *context) {
  sqlite3_stmt *statement = NULL;
  if (cached_statement(db,
                       "UPDATE experiments SET status = 'failed', error = ?2, finished_at = " NOW_SQL
                       " WHERE teacher_id = ?1 AND status IN ('queued', 'interrupted') RETURNING id",
                       &statement) != 0)
    return fail_sql(db, "fail dependents");
  sqlite3_bind_int64(statement, 1, teacher_id);
  sqlite3_bind_text(statement, 2, error, -1, SQLITE_STATIC);
  int count = 0, code;
  int64_t ids[256];
  while ((code = sqlite3_step(statement)) == SQLITE_ROW)
    if (count < (int)ARRAY_SIZE(ids)) ids[count++] = sqlite3_column_int64(statement, 0);
  release_statement(db, statement);
  if (code != SQLITE_DONE) return fail_sql(db, "fail dependents");
  /* Told only once the statement is finished: the callback may read the database. */
  for (int i = 0; i < count; i++) each(context, ids[i]);
  return count;
}

int db_checkpoint_add(db_t *db, int64_t id, int64_t epoch, int64_t step, const char *path, int64_t bytes) {
  sqlite3_stmt *statement = NULL;
  forget_details(db, id);
  if (cached_statement(db,
                       "INSERT OR REPLACE INTO checkpoints (experiment_id, epoch, step, path, bytes) "
                       "VALUES (?1, ?2, ?3, ?4, ?5)",
                       &statement) != 0)
    return fail_sql(db, "checkpoint");
  sqlite3_bind_int64(statement, 1, id);
  sqlite3_bind_int64(statement, 2, epoch);
  sqlite3_bind_int64(statement, 3, step);
  sqlite3_bind_text(statement, 4, path, -1, SQLITE_STATIC);
  sqlite3_bind_int64(statement, 5, bytes);
  int result = sqlite3_step(statement) == SQLITE_DONE ? 0 : fail_sql(db, "checkpoint");
  release_statement(db, statement);
  if (result != 0) return result;
  /* An epoch's own checkpoint supersedes what the worker then deletes (train.c,
   * train__forget_old_checkpoints): the partial ones of earlier epochs and, with the
   * config's checkpoint_keep, the epoch checkpoints older than the newest that many of those
   * due (every checkpoint_every epochs, and the last). Their rows go by the same rule. */
  if (cached_statement(db,
                       "WITH plan AS (SELECT coalesce(json_extract(config, '$.checkpoint_keep'), 0) AS keep, "
                       "                     coalesce(json_extract(config, '$.checkpoint_every'), 1) AS every, "
                       "                     planned_epochs AS last FROM experiments WHERE id = ?1), "
                       "kept AS (SELECT epoch FROM checkpoints, plan WHERE experiment_id = ?1 AND epoch <= ?2 "
                       "           AND path NOT LIKE '%-partial.ckpt' "
                       "           AND (epoch = last OR (every > 0 AND epoch % every = 0)) "
                       "         ORDER BY epoch DESC LIMIT (SELECT keep FROM plan)) "
                       "DELETE FROM checkpoints WHERE experiment_id = ?1 AND epoch < ?2 "
                       "AND ?3 NOT LIKE '%-partial.ckpt' AND (path LIKE '%-partial.ckpt' OR "
                       "  ((SELECT keep FROM plan) > 0 AND epoch NOT IN (SELECT epoch FROM kept)))",
                       &statement) != 0)
    return fail_sql(db, "superseded checkpoints");
  sqlite3_bind_int64(statement, 1, id);
  sqlite3_bind_int64(statement, 2, epoch);
  sqlite3_bind_text(statement, 3, path, -1, SQLITE_STATIC);
  result = sqlite3_step(statement) == SQLITE_DONE ? 0 : fail_sql(db, "superseded checkpoints");
  release_statement(db, statement);
  return result;
}

int db_checkpoint_latest(db_t *db, int64_t id, char *path, size_t size) {
  sqlite3_stmt *statement = NULL;
  if (cached_statement(db, "SELECT path FROM checkpoints WHERE experiment_id = ?1 ORDER BY epoch DESC LIMIT 1",
                       &statement) != 0)
    return fail_sql(db, "latest checkpoint");
  sqlite3_bind_int64(statement, 1, id);
  int result = -ENOENT;
  if (sqlite3_step(statement) == SQLITE_ROW)
    result = util_strlcpy(path, (const char *)sqlite3_column_text(statement, 0), size) == 0 ? 0 : -ENAMETOOLONG;
  release_statement(db, statement);
  return result;
}

int db_count_status(db_t *db, const char *status) {
  return (int)select_integer(db, "SELECT count(*) FROM experiments WHERE status = ?1", 0, status, 0);
}

int64_t db_max_step(db_t *db, int64_t id) {
  return select_integer(db, "SELECT coalesce(max(step), 0) FROM experiments WHERE id = ?1", id, NULL, 0);
}

// ---------------------------------------------------------------------------------------
// the batch

static int arena_append(db_t *db, const char *text, size_t length, size_t *offset) {
  if (db->arena_used + length + 1 > db->arena_capacity) {
    size_t capacity = db->arena_capacity ? db->arena_capacity : 65536;
    while (db->arena_used + length + 1 > capacity) capacity *= 2;
    char *grown = realloc(db->arena, capacity);
    if (grown == NULL) return -ENOMEM;
    db->arena = grown;
    db->arena_capacity = capacity;
  }
  *offset = db->arena_used;
  memcpy(db->arena + db->arena_used, text, length);
  db->arena[db->arena_used + length] = '\0';
  db->arena_used += length + 1;
  return 0;
}

static row_t *append_row(db_t *db) {
  if (db->n_rows == db->rows_capacity) {
    size_t capacity = db->rows_capacity ? db->rows_capacity * 2 : 4096;
    row_t *grown = realloc(db->rows, capacity * sizeof *grown);
    if (grown == NULL) return NULL;
    db->rows = grown;
    db->rows_capacity = capacity;
  }
  return &db->rows[db->n_rows++];
}

static void note_progress(db_t *db, int64_t id, int64_t step, int64_t epoch, int64_t stage) {
  for (int i = 0; i < db->n_progress; i++) {
    if (db->progress[i].experiment_id == id) {
      if (step >= db->progress[i].step) db->progress[i] = (progress_t){id, step, epoch, stage};
      return;
    }
  }
  if (db->n_progress < (int)ARRAY_SIZE(db->progress)) db->progress[db->n_progress++] = (progress_t){id, step, epoch, stage};
}

int db_batch_event(db_t *db, int64_t id, const ev_t *event) {
  if (event->type == EV_STAGE) {
    size_t offset, length = strlen(event->name);
    if (arena_append(db, event->name, length, &offset) != 0) return -ENOMEM;
    row_t *row = append_row(db);
    if (row == NULL) return -ENOMEM;
    *row = (row_t){.kind = ROW_STAGE, .experiment_id = id, .step = event->step, .epoch = event->epoch,
                   .stage = event->stage, .text = offset, .text_length = length};
    return 0;
  }
  for (int i = 0; i < event->n_values; i++) {
    const char *name = event->values[i].name;
    size_t offset, length = strlen(name);
    if (arena_append(db, name, length, &offset) != 0) return -ENOMEM;
    row_t *row = append_row(db);
    if (row == NULL) return -ENOMEM;
    *row = (row_t){.kind = event->type == EV_EVAL ? ROW_EVAL : ROW_METRIC,
                   .split = event->split,
                   .experiment_id = id,
                   .step = event->step,
                   .epoch = event->epoch,
                   .stage = event->stage,
                   .value = event->values[i].value,
                   .text = offset,
                   .text_length = length};
  }
  note_progress(db, id, event->step, event->epoch, event->stage);
  return 0;
}

int db_batch_log(db_t *db, int64_t id, int attempt, int64_t line_number, const char *line, size_t length) {
  size_t offset;
  if (arena_append(db, line, length, &offset) != 0) return -ENOMEM;
  row_t *row = append_row(db);
  if (row == NULL) return -ENOMEM;
  *row = (row_t){.kind = ROW_LOG, .experiment_id = id, .step = attempt, .epoch = line_number, .text = offset,
                 .text_length = length};
  return 0;
}

size_t db_batch_rows(const db_t *db) { return db->n_rows; }

static uint64_t hash_series(int64_t id, const char *name) {
  uint64_t hash = hash_text(name) ^ ((uint64_t)id * 0x9e3779b97f4a7c15ull);
  return hash ? hash : 1;
}

/* Whether (id, name) was already put in `series`; remembers it if not. When the table is
 * nearly full it is simply cleared: forgetting costs one INSERT OR IGNORE, never a row. */
static int series_seen(db_t *db, int64_t id, const char *name) {
  uint64_t hash = hash_series(id, name);
  for (size_t i = hash % SEEN_SLOTS;; i = (i + 1) % SEEN_SLOTS) {
    seen_t *slot = &db->seen[i];
    if (slot->hash == 0) {
      if (db->n_seen >= SEEN_SLOTS / 2) {
        for (int j = 0; j < SEEN_SLOTS; j++) free(db->seen[j].name);
        memset(db->seen, 0, sizeof db->seen);
        db->n_seen = 0;
        return series_seen(db, id, name);
      }
      char *copy = strdup(name);
      if (copy == NULL) return 0;
      *slot = (seen_t){hash, id, copy};
      db->n_seen++;
      return 0;
    }
    if (slot->hash == hash && slot->experiment_id == id && strcmp(slot->name, name) == 0) return 1;
  }
}

static int step_done(db_t *db, sqlite3_stmt *statement) {
  int code = sqlite3_step(statement);
  sqlite3_reset(statement);
  return code == SQLITE_DONE ? 0 : fail_sql(db, "writing the batch");
}

/* Binds a metric row to the six parameters of `statement` from `first` (1-based) on. */
static void bind_metric(const db_t *db, sqlite3_stmt *statement, int first, const row_t *row) {
  sqlite3_bind_int64(statement, first, row->experiment_id);
  sqlite3_bind_text(statement, first + 1, db->arena + row->text, (int)row->text_length, SQLITE_STATIC);
  sqlite3_bind_int64(statement, first + 2, row->step);
  sqlite3_bind_int64(statement, first + 3, row->epoch);
  sqlite3_bind_int64(statement, first + 4, row->stage);
  sqlite3_bind_double(statement, first + 5, row->value);
}

/* The batch's metric rows, in their order (a repeated key: the later row wins), by
 * METRICS_PER_INSERT, the rest one by one; and each new curve's name in `series`. */
static int write_metrics(db_t *db) {
  size_t chunk[METRICS_PER_INSERT];
  int in_chunk = 0, result = 0;
  for (size_t i = 0; i < db->n_rows && result == 0; i++) {
    const row_t *row = &db->rows[i];
    if (row->kind != ROW_METRIC) continue;
    if (!series_seen(db, row->experiment_id, db->arena + row->text)) {
      forget_details(db, row->experiment_id);
      sqlite3_bind_int64(db->insert_series, 1, row->experiment_id);
      sqlite3_bind_text(db->insert_series, 2, db->arena + row->text, (int)row->text_length, SQLITE_STATIC);
      result = step_done(db, db->insert_series);
    }
    chunk[in_chunk++] = i;
    if (in_chunk == METRICS_PER_INSERT) {
      for (int r = 0; r < in_chunk; r++) bind_metric(db, db->insert_metrics, 1 + 6 * r, &db->rows[chunk[r]]);
      if (result == 0) result = step_done(db, db->insert_metrics);
      in_chunk = 0;
    }
  }
  for (int r = 0; r < in_chunk && result == 0; r++) {
    bind_metric(db, db->insert_metric, 1, &db->rows[chunk[r]]);
    result = step_done(db, db->insert_metric);
  }
  return result;
}

int db_flush(db_t *db) {
  if (db->n_rows == 0 && db->n_progress == 0) return 0;
  const double started = util_monotonic();
  if (sqlite3_exec(db->sql, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    db->counters.flush_failures++;
    return fail_sql(db, "begin batch");
  }
  int result = write_metrics(db);
  for (size_t i = 0; i < db->n_rows && result == 0; i++) {
    const row_t *row = &db->rows[i];
    const char *text = db->arena + row->text;
    sqlite3_stmt *statement;
    switch (row->kind) {
    case ROW_METRIC: break; /* written above */
    case ROW_EVAL:
      forget_details(db, row->experiment_id); /* its name may be a new curve */
      statement = db->insert_eval;
      sqlite3_bind_int64(statement, 1, row->experiment_id);
      sqlite3_bind_text(statement, 2, ev_split_name(row->split), -1, SQLITE_STATIC);
      sqlite3_bind_int(statement, 3, row->split);
      sqlite3_bind_text(statement, 4, text, (int)row->text_length, SQLITE_STATIC);
      sqlite3_bind_int64(statement, 5, row->epoch);
      sqlite3_bind_int64(statement, 6, row->step);
      sqlite3_bind_int64(statement, 7, row->stage);
      sqlite3_bind_double(statement, 8, row->value);
      result = step_done(db, statement);
      break;
    case ROW_STAGE:
      forget_details(db, row->experiment_id);
      statement = db->insert_stage;
      sqlite3_bind_int64(statement, 1, row->experiment_id);
      sqlite3_bind_int64(statement, 2, row->stage);
      sqlite3_bind_text(statement, 3, text, (int)row->text_length, SQLITE_STATIC);
      sqlite3_bind_int64(statement, 4, row->epoch);
      sqlite3_bind_int64(statement, 5, row->step);
      result = step_done(db, statement);
      break;
    case ROW_LOG:
      statement = db->insert_log;
      sqlite3_bind_int64(statement, 1, row->experiment_id);
      sqlite3_bind_int64(statement, 2, row->step);
      sqlite3_bind_int64(statement, 3, row->epoch);
      sqlite3_bind_text(statement, 4, text, (int)row->text_length, SQLITE_STATIC);
      result = step_done(db, statement);
      break;
    }
  }
  for (int i = 0; i < db->n_progress && result == 0; i++) {
    sqlite3_stmt *statement = db->update_progress;
    sqlite3_bind_int64(statement, 1, db->progress[i].experiment_id);
    sqlite3_bind_int64(statement, 2, db->progress[i].step);
    sqlite3_bind_int64(statement, 3, db->progress[i].epoch);
    sqlite3_bind_int64(statement, 4, db->progress[i].stage);
    result = step_done(db, statement);
  }
  if (result == 0 && sqlite3_exec(db->sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) result = fail_sql(db, "commit");
  if (result != 0) {
    sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
    /* The series cache may now name rows that were rolled back: forget it. */
    for (int j = 0; j < SEEN_SLOTS; j++) free(db->seen[j].name);
    memset(db->seen, 0, sizeof db->seen);
    db->n_seen = 0;
    db->counters.flush_failures++;
    return result;
  }
  db->counters.flushes++;
  db->counters.rows_written += db->n_rows;
  db->counters.flush_seconds += util_monotonic() - started;
  db->n_rows = 0;
  db->arena_used = 0;
  db->n_progress = 0;
  return 0;
}

db_counters_t db_counters(const db_t *db) { return db->counters; }

// ---------------------------------------------------------------------------------------
// reading curves

/* A curve's columns, written apart while its rows come, then joined into the answer. */
typedef enum { COLUMN_STEP, COLUMN_VALUE, COLUMN_EPOCH, COLUMN_COUNT } curve_column_t;

static void write_curve(json_text_t *out, int *curves, const char *name, json_text_t columns[COLUMN_COUNT],
                        int with_epoch) {
  if ((*curves)++ > 0) json_text_literal(out, ",");
  json_text_string(out, name);
  json_text_literal(out, ":{\"step\":[");
  json_text_append(out, &columns[COLUMN_STEP]);
  json_text_literal(out, "],\"value\":[");
  json_text_append(out, &columns[COLUMN_VALUE]);
  if (with_epoch) {
    json_text_literal(out, "],\"epoch\":[");
    json_text_append(out, &columns[COLUMN_EPOCH]);
  }
  json_text_literal(out, "]}");
  for (int c = 0; c < COLUMN_COUNT; c++) json_text_clear(&columns[c]);
}

char *db_metrics(db_t *db, int64_t id, const char *names, int64_t since_step, size_t *length) {
  sqlite3_stmt *metrics = NULL, *evals = NULL;
  json_text_t out, columns[COLUMN_COUNT];
  json_text_init(&out);
  for (int c = 0; c < COLUMN_COUNT; c++) json_text_init(&columns[c]);
  char *current = NULL; /* the name of the curve being read */
  int failed = 0;
  /* `names` is matched as a comma-separated list inside SQL, so the statement stays fixed.
   * The answer is written as the rows come, without a jansson tree: a curve of 10,000
   * points out of a large database is asked for at every page load. */
  if (cached_statement(db,
                       "SELECT m.name, m.step, m.value FROM series s CROSS JOIN metrics m "
                       "ON m.experiment_id = s.experiment_id AND m.name = s.name "
                       "WHERE s.experiment_id = ?1 AND m.step > ?2 "
                       "AND (?3 IS NULL OR instr(',' || ?3 || ',', ',' || s.name || ',') > 0) "
                       "ORDER BY s.name, m.step",
                       &metrics) != 0 ||
      cached_statement(db,
                       "SELECT split || '/' || name AS full_name, step, value, epoch FROM evals "
                       "WHERE experiment_id = ?1 AND step > ?2 "
                       "AND (?3 IS NULL OR instr(',' || ?3 || ',', ',' || full_name || ',') > 0) "
                       "ORDER BY full_name, epoch",
                       &evals) != 0) {
    fail_sql(db, "metrics");
    failed = 1;
    goto done;
  }
  json_text_literal(&out, "{");
  int curves = 0;
  sqlite3_stmt *statements[2] = {metrics, evals};
  for (int s = 0; s < 2 && !failed; s++) {
    sqlite3_stmt *statement = statements[s];
    int with_epoch = statement == evals;
    sqlite3_bind_int64(statement, 1, id);
    sqlite3_bind_int64(statement, 2, since_step);
    sqlite3_bind_text(statement, 3, names, -1, SQLITE_STATIC);
    int code, points = 0;
    while ((code = sqlite3_step(statement)) == SQLITE_ROW) {
      const char *name = (const char *)sqlite3_column_text(statement, 0);
      if (current == NULL || strcmp(current, name) != 0) {
        if (current) write_curve(&out, &curves, current, columns, with_epoch);
        free(current);
        if ((current = strdup(name)) == NULL) {
          failed = 1;
          break;
        }
        points = 0;
      }
      if (points++ > 0)
        for (int c = 0; c < COLUMN_COUNT; c++) json_text_literal(&columns[c], ",");
      json_text_integer(&columns[COLUMN_STEP], sqlite3_column_int64(statement, 1));
      json_text_real(&columns[COLUMN_VALUE], sqlite3_column_double(statement, 2));
      if (with_epoch) json_text_integer(&columns[COLUMN_EPOCH], sqlite3_column_int64(statement, 3));
    }
    if (current) write_curve(&out, &curves, current, columns, with_epoch);
    free(current);
    current = NULL;
    if (!failed && code != SQLITE_DONE) failed = fail_sql(db, "metrics") != 0;
  }
  json_text_literal(&out, "}");
done:
  release_statement(db, metrics);
  release_statement(db, evals);
  free(current);
  for (int c = 0; c < COLUMN_COUNT; c++) json_text_free(&columns[c]);
  if (failed) {
    json_text_free(&out);
    return NULL;
  }
  return json_text_take(&out, length);
}

static ev_split_t event_split_of_phase(int phase) {
  return phase >= 1 && phase <= EV_SPLIT_COUNT ? (ev_split_t)(phase - 1) : EV_SPLIT_TRAIN;
}

int db_replay(db_t *db, int64_t id, int64_t step, int phase, int64_t last_step, db_replay_cb emit, void *context) {
  sqlite3_stmt *metrics = NULL, *evals = NULL;
  int result = 0;
  /* An event's values, gathered from its rows: names are copied (a column's text lasts
   * until the next step) into `names` at `name_at`, and pointed to once the event is whole. */
  ev_value_t *values = NULL;
  size_t *name_at = NULL, values_capacity = 0;
  char *names = NULL;
  size_t names_used = 0, names_capacity = 0;
  /* Series first (CROSS JOIN fixes the order): one index range per curve, then a sort of
   * the window's rows by step. */
  if (cached_statement(db,
                       "SELECT m.step, m.epoch, m.stage, m.name, m.value FROM series s CROSS JOIN metrics m "
                       "ON m.experiment_id = s.experiment_id AND m.name = s.name "
                       "WHERE s.experiment_id = ?1 AND m.step > ?2 AND m.step <= ?3 ORDER BY m.step",
                       &metrics) != 0 ||
      cached_statement(db,
                       "SELECT step, epoch, stage, name, value, split_order + 1 AS phase FROM evals "
                       "WHERE experiment_id = ?1 AND (step, split_order + 1) > (?2, ?4) AND step <= ?3 "
                       "UNION ALL "
                       "SELECT step, epoch, stage, name, NULL, ?5 FROM stage_starts "
                       "WHERE experiment_id = ?1 AND (step, ?5) > (?2, ?4) AND step <= ?3 "
                       "ORDER BY step, phase",
                       &evals) != 0) {
    result = fail_sql(db, "replay");
    goto done;
  }
  sqlite3_bind_int64(metrics, 1, id);
  sqlite3_bind_int64(metrics, 2, step);
  sqlite3_bind_int64(metrics, 3, last_step);
  sqlite3_bind_int64(evals, 1, id);
  sqlite3_bind_int64(evals, 2, step);
  sqlite3_bind_int64(evals, 3, last_step);
  sqlite3_bind_int(evals, 4, phase);
  sqlite3_bind_int(evals, 5, EV_PHASE_STAGE);

  int emitted = 0;
  /* Merge the two ordered streams by (step, phase), grouping rows into events: a metric
   * event per step, an eval event per (step, split), a stage event per row. */
  int have_metric = sqlite3_step(metrics) == SQLITE_ROW;
  int have_eval = sqlite3_step(evals) == SQLITE_ROW;
  while (have_metric || have_eval) {
    int64_t metric_step = have_metric ? sqlite3_column_int64(metrics, 0) : INT64_MAX;
    int64_t eval_step = have_eval ? sqlite3_column_int64(evals, 0) : INT64_MAX;
    int take_metric = metric_step <= eval_step; /* a step's metrics precede its evals */
    sqlite3_stmt *statement = take_metric ? metrics : evals;
    int row_phase = take_metric ? EV_PHASE_METRIC : sqlite3_column_int(statement, 5);
    ev_t event = {.type = take_metric ? EV_METRIC : row_phase == EV_PHASE_STAGE ? EV_STAGE : EV_EVAL,
                  .step = sqlite3_column_int64(statement, 0),
                  .epoch = sqlite3_column_int64(statement, 1),
                  .stage = sqlite3_column_int64(statement, 2),
                  .split = event_split_of_phase(row_phase)};
    if (event.type == EV_STAGE) {
      char name[EV_NAME_MAX];
      util_strlcpy(name, (const char *)sqlite3_column_text(statement, 3), sizeof name);
      event.name = name;
      have_eval = sqlite3_step(statement) == SQLITE_ROW;
      emit(context, &event);
      emitted++;
      continue;
    }
    int *have = take_metric ? &have_metric : &have_eval;
    size_t count = 0;
    names_used = 0;
    while (*have && sqlite3_column_int64(statement, 0) == event.step &&
           (take_metric || sqlite3_column_int(statement, 5) == row_phase)) {
      const char *name = (const char *)sqlite3_column_text(statement, 3);
      size_t length = strlen(name) + 1;
      if (count == values_capacity || names_used + length > names_capacity) {
        size_t capacity = values_capacity ? values_capacity * 2 : 64;
        size_t names_size = names_capacity ? names_capacity * 2 : 4096;
        while (names_used + length > names_size) names_size *= 2;
        ev_value_t *more_values = realloc(values, capacity * sizeof *values);
        if (more_values) values = more_values;
        size_t *more_at = realloc(name_at, capacity * sizeof *name_at);
        if (more_at) name_at = more_at;
        char *more_names = realloc(names, names_size);
        if (more_names) names = more_names;
        if (!more_values || !more_at || !more_names) {
          result = -ENOMEM;
          goto done;
        }
        values_capacity = capacity;
        names_capacity = names_size;
      }
      memcpy(names + names_used, name, length);
      name_at[count] = names_used;
      names_used += length;
      values[count++].value = sqlite3_column_double(statement, 4);
      *have = sqlite3_step(statement) == SQLITE_ROW;
    }
    for (size_t i = 0; i < count; i++) values[i].name = names + name_at[i];
    event.values = values;
    event.n_values = (int)count;
    emit(context, &event);
    emitted++;
  }
  result = emitted;
done:
  free(values);
  free(name_at);
  free(names);
  release_statement(db, metrics);
  release_statement(db, evals);
  return result;
}

int64_t db_next_step(db_t *db, int64_t id, int64_t after) {
  sqlite3_stmt *statement = NULL;
  /* One index probe per curve, per eval split and in stage_starts: cheap however far the
   * next step is. */
  if (cached_statement(db,
                       "SELECT min(step) FROM ("
                       "  SELECT (SELECT min(m.step) FROM metrics m WHERE m.experiment_id = s.experiment_id "
                       "          AND m.name = s.name AND m.step > ?2) AS step "
                       "    FROM series s WHERE s.experiment_id = ?1 "
                       "  UNION ALL SELECT min(step) FROM evals WHERE experiment_id = ?1 AND step > ?2 "
                       "  UNION ALL SELECT min(step) FROM stage_starts WHERE experiment_id = ?1 AND step > ?2)",
                       &statement) != 0)
    return fail_sql(db, "next step");
  sqlite3_bind_int64(statement, 1, id);
  sqlite3_bind_int64(statement, 2, after);
  int64_t next = sqlite3_step(statement) == SQLITE_ROW && sqlite3_column_type(statement, 0) != SQLITE_NULL
                     ? sqlite3_column_int64(statement, 0)
                     : -ENOENT;
  release_statement(db, statement);
  return next;
}

char *db_log_text(db_t *db, int64_t id, size_t *length) {
  sqlite3_stmt *statement = NULL;
  if (cached_statement(db, "SELECT attempt, line FROM logs WHERE experiment_id = ?1 ORDER BY attempt, line_number",
                       &statement) != 0) {
    fail_sql(db, "log");
    return NULL;
  }
  sqlite3_bind_int64(statement, 1, id);
  char *text = NULL;
  size_t size = 0;
  FILE *out = open_memstream(&text, &size);
  if (out == NULL) {
    release_statement(db, statement);
    return NULL;
  }
  while (sqlite3_step(statement) == SQLITE_ROW)
    fprintf(out, "attempt %d | %s\n", sqlite3_column_int(statement, 0), (const char *)sqlite3_column_text(statement, 1));
  fclose(out);
  release_statement(db, statement);
  *length = size;
  return text;
}

// ---------------------------------------------------------------------------------------
// for the daemon's other tables

sqlite3_stmt *db_statement(db_t *db, const char *text) {
  sqlite3_stmt *statement = NULL;
  if (cached_statement(db, text, &statement) != 0) {
    fail_sql(db, text);
    return NULL;
  }
  return statement;
}

void db_release(db_t *db, sqlite3_stmt *statement) { release_statement(db, statement); }

int db_failure(db_t *db, const char *what) { return fail_sql(db, what); }

static int run_verb(db_t *db, const char *verb) {
  char *message = NULL;
  if (sqlite3_exec(db->sql, verb, NULL, NULL, &message) == SQLITE_OK) return 0;
  fprintf(stderr, "mapsaged: database: %s: %s\n", verb, message ? message : sqlite3_errmsg(db->sql));
  sqlite3_free(message);
  return -EIO;
}

int db_begin(db_t *db) {
  int result = db_flush(db);
  return result != 0 ? result : run_verb(db, "BEGIN IMMEDIATE");
}

int db_commit(db_t *db) { return run_verb(db, "COMMIT"); }

void db_rollback(db_t *db) {
  if (!sqlite3_get_autocommit(db->sql)) run_verb(db, "ROLLBACK");
}

int64_t db_last_id(db_t *db) { return sqlite3_last_insert_rowid(db->sql); }
