/* db.c — the core of the daemon's SQLite layer (see db.h): opening and closing the
 * connection, applying schema.sql and the migrations, the statement cache every query of the
 * layer goes through, and transactions for the daemon's other tables. The rest of the layer
 * shares struct db through db_internal.h: db_experiments.c (the experiments' rows),
 * db_batch.c (the write batch), db_replay.c (the curves and the stream's replay). */
#include "db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db_internal.h"

extern const unsigned char schema_sql[];
extern const size_t schema_sql_len;

#define SCHEMA_VERSION 5

int db_fail_sql(db_t *db, const char *what) {
  fprintf(stderr, "mapsaged: database: %s: %s\n", what, sqlite3_errmsg(db->sql));
  int code = sqlite3_errcode(db->sql);
  if (code == SQLITE_FULL) return -ENOSPC;
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED) return -EBUSY;
  if (code == SQLITE_NOMEM) return -ENOMEM;
  return -EIO;
}

int db_prepare(db_t *db, sqlite3_stmt **statement, const char *text) {
  if (sqlite3_prepare_v3(db->sql, text, -1, SQLITE_PREPARE_PERSISTENT, statement, NULL) != SQLITE_OK)
    return db_fail_sql(db, text);
  return 0;
}

uint64_t db_hash_text(const char *text) {
  uint64_t hash = 1469598103934665603ull;
  for (const char *c = text; *c; c++) hash = (hash ^ (unsigned char)*c) * 1099511628211ull;
  return hash;
}

/* The prepared statement for `text`, found again by its text: preparing costs more than
 * running most of these one-row queries (a GET of an experiment prepared five per request).
 * One in use further up the stack (busy) is not shared: a second copy is prepared. Give it
 * back with db_release_statement(). Returns 0, or nonzero with the error in sqlite3_errmsg. */
int db_cached_statement(db_t *db, const char *text, sqlite3_stmt **out) {
  /* The same literal again: found by its address, without hashing a long text. */
  for (int i = 0; i < db->n_statements; i++) {
    cached_statement_t *cached = &db->statements[i];
    if (cached->text == text && !sqlite3_stmt_busy(cached->statement) &&
        strcmp(sqlite3_sql(cached->statement), text) == 0) {
      *out = cached->statement;
      return 0;
    }
  }
  uint64_t hash = db_hash_text(text);
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

/* Resets a statement from db_cached_statement() for its next use, ending its read
 * transaction and dropping its bindings (which may point into the caller's memory); one
 * the cache had no room for is finalized. NULL is ignored. */
void db_release_statement(db_t *db, sqlite3_stmt *done) {
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
  if (db_prepare(db, &db->insert_metric, METRICS_INSERT "(?1, ?2, ?3, ?4, ?5, ?6)") ||
      db_prepare(db, &db->insert_metrics, insert_metrics) ||
      db_prepare(db, &db->insert_eval,
              "INSERT OR REPLACE INTO evals (experiment_id, split, split_order, name, epoch, step, stage, value) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)") ||
      db_prepare(db, &db->insert_stage,
              "INSERT OR REPLACE INTO stage_starts (experiment_id, stage, name, epoch, step) "
              "VALUES (?1, ?2, ?3, ?4, ?5)") ||
      db_prepare(db, &db->insert_log,
              "INSERT OR REPLACE INTO logs (experiment_id, attempt, line_number, at, line) "
              "VALUES (?1, ?2, ?3, " NOW_SQL ", ?4)") ||
      db_prepare(db, &db->insert_series, "INSERT OR IGNORE INTO series (experiment_id, name) VALUES (?1, ?2)") ||
      db_prepare(db, &db->update_progress,
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
// for the daemon's other tables

sqlite3_stmt *db_statement(db_t *db, const char *text) {
  sqlite3_stmt *statement = NULL;
  if (db_cached_statement(db, text, &statement) != 0) {
    db_fail_sql(db, text);
    return NULL;
  }
  return statement;
}

void db_release(db_t *db, sqlite3_stmt *statement) { db_release_statement(db, statement); }

int db_failure(db_t *db, const char *what) { return db_fail_sql(db, what); }

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
