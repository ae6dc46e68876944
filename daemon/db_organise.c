/* db_organise.c — what a user does to keep runs in order (docs/api.md, "Organising"): the
 * name, note, tags and archive mark of an experiment or a study, and deleting an
 * experiment with its rows. The checks that refuse a deletion are here too, so that the
 * API and the database agree on them; the checkpoint files are the caller's (api_organise.c),
 * which knows the data directory. Everything runs on the event loop, on db.c's connection,
 * through its statement cache. */
#include "db.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* The statements of one kind of thing (experiments or studies), literal so that the cache
 * keeps them. */
typedef struct {
  const char *rename, *rename_config, *note, *archive, *unarchive, *clear_tags, *add_tag, *remove_tag, *exists;
} organise_sql_t;

static const organise_sql_t experiment_sql = {
    .rename = "UPDATE experiments SET name = ?2 WHERE id = ?1",
    /* The config keeps the name it is shown with: "edit as new" and a remote worker read it. */
    .rename_config = "UPDATE experiments SET config = json_set(config, '$.name', ?2) WHERE id = ?1",
    .note = "UPDATE experiments SET note = ?2 WHERE id = ?1",
    .archive = "UPDATE experiments SET archived_at = coalesce(archived_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) "
               "WHERE id = ?1",
    .unarchive = "UPDATE experiments SET archived_at = NULL WHERE id = ?1",
    .clear_tags = "DELETE FROM experiment_tags WHERE experiment_id = ?1",
    .add_tag = "INSERT OR IGNORE INTO experiment_tags (experiment_id, tag) VALUES (?1, ?2)",
    .remove_tag = "DELETE FROM experiment_tags WHERE experiment_id = ?1 AND tag = ?2",
    .exists = "SELECT 1 FROM experiments WHERE id = ?1",
};

static const organise_sql_t study_sql = {
    .rename = "UPDATE studies SET name = ?2 WHERE id = ?1",
    .rename_config = NULL,
    .note = "UPDATE studies SET note = ?2 WHERE id = ?1",
    .archive = "UPDATE studies SET archived_at = coalesce(archived_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) "
               "WHERE id = ?1",
    .unarchive = "UPDATE studies SET archived_at = NULL WHERE id = ?1",
    .clear_tags = "DELETE FROM study_tags WHERE study_id = ?1",
    .add_tag = "INSERT OR IGNORE INTO study_tags (study_id, tag) VALUES (?1, ?2)",
    .remove_tag = "DELETE FROM study_tags WHERE study_id = ?1 AND tag = ?2",
    .exists = "SELECT 1 FROM studies WHERE id = ?1",
};

/* Runs `text` about `id`, with text ?2 when it has one. Returns 0 or a negative errno. */
static int run(db_t *db, const char *text, int64_t id, const char *value) {
  sqlite3_stmt *statement = db_statement(db, text);
  if (statement == NULL) return -EIO;
  sqlite3_bind_int64(statement, 1, id);
  if (sqlite3_bind_parameter_count(statement) >= 2) sqlite3_bind_text(statement, 2, value, -1, SQLITE_STATIC);
  int result = sqlite3_step(statement);
  db_release(db, statement);
  if (result == SQLITE_ROW) return 0;
  if (result != SQLITE_DONE) return db_failure(db, text);
  return 0;
}

static int exists(db_t *db, const char *text, int64_t id) {
  sqlite3_stmt *statement = db_statement(db, text);
  if (statement == NULL) return -EIO;
  sqlite3_bind_int64(statement, 1, id);
  int result = sqlite3_step(statement);
  db_release(db, statement);
  return result == SQLITE_ROW ? 0 : result == SQLITE_DONE ? -ENOENT : db_failure(db, text);
}

static int each_tag(db_t *db, const char *text, int64_t id, const json_t *tags) {
  size_t i;
  json_t *tag;
  json_array_foreach(tags, i, tag) {
    int result = run(db, text, id, json_string_value(tag));
    if (result != 0) return result;
  }
  return 0;
}

static int apply_changes(db_t *db, const organise_sql_t *sql, int64_t id, const db_changes_t *changes) {
  int result = exists(db, sql->exists, id);
  if (result == 0 && changes->name) result = run(db, sql->rename, id, changes->name);
  if (result == 0 && changes->name && sql->rename_config) result = run(db, sql->rename_config, id, changes->name);
  if (result == 0 && changes->note) result = run(db, sql->note, id, changes->note);
  if (result == 0 && changes->archived >= 0)
    result = run(db, changes->archived ? sql->archive : sql->unarchive, id, NULL);
  if (result == 0 && changes->tags) {
    result = run(db, sql->clear_tags, id, NULL);
    if (result == 0) result = each_tag(db, sql->add_tag, id, changes->tags);
  }
  if (result == 0 && changes->add_tags) result = each_tag(db, sql->add_tag, id, changes->add_tags);
  if (result == 0 && changes->remove_tags) result = each_tag(db, sql->remove_tag, id, changes->remove_tags);
  return result;
}

/* All of the changes or none. */
static int update(db_t *db, const organise_sql_t *sql, int64_t id, const db_changes_t *changes) {
  int result = db_begin(db);
  if (result != 0) return result;
  result = apply_changes(db, sql, id, changes);
  if (result == 0) result = db_commit(db);
  if (result != 0) db_rollback(db);
  return result;
}

int db_experiment_update(db_t *db, int64_t id, const db_changes_t *changes) {
  return update(db, &experiment_sql, id, changes);
}

int db_study_update(db_t *db, int64_t id, const db_changes_t *changes) {
  return update(db, &study_sql, id, changes);
}

/* The first row's integer, 0 when there is none, or a negative errno. ?1 is `id`, ?2 the
 * text `value` when the query has it. */
static int64_t first_integer(db_t *db, const char *text, int64_t id, const char *value) {
  sqlite3_stmt *statement = db_statement(db, text);
  if (statement == NULL) return -EIO;
  sqlite3_bind_int64(statement, 1, id);
  if (sqlite3_bind_parameter_count(statement) >= 2) sqlite3_bind_text(statement, 2, value, -1, SQLITE_STATIC);
  int code = sqlite3_step(statement);
  int64_t found = code == SQLITE_ROW ? sqlite3_column_int64(statement, 0) : 0;
  if (code != SQLITE_ROW && code != SQLITE_DONE) found = db_failure(db, text);
  db_release(db, statement);
  return found;
}

int db_experiment_deletable(db_t *db, int64_t id, const char *checkpoint_dir, char *reason, size_t reason_size) {
  char status[32];
  int result = db_experiment_status(db, id, status, sizeof status);
  if (result != 0) return result;
  if (strcmp(status, DB_RUNNING) == 0) {
    snprintf(reason, reason_size, "experiment %lld is running: cancel it first, then delete it", (long long)id);
    return -EBUSY;
  }
  /* A student that names it as teacher, by id or by a checkpoint file of its directory. */
  int64_t student = first_integer(db,
                                  "SELECT id FROM experiments WHERE teacher_id = ?1 OR "
                                  "substr(json_extract(config, '$.teacher.checkpoint'), 1, length(?2) + 1) = ?2 || '/' "
                                  "ORDER BY id LIMIT 1",
                                  id, checkpoint_dir);
  if (student < 0) return (int)student;
  if (student > 0) {
    snprintf(reason, reason_size,
             "experiment %lld is the teacher of experiment %lld: delete that one first (or archive this one)",
             (long long)id, (long long)student);
    return -EBUSY;
  }
  /* A study's run: its statistics are computed over its runs, which would no longer add up. */
  int64_t study = first_integer(db, "SELECT study_id FROM study_runs WHERE experiment_id = ?1 LIMIT 1", id, NULL);
  if (study < 0) return (int)study;
  if (study > 0) {
    snprintf(reason, reason_size, "experiment %lld is a run of study %lld: archive it instead", (long long)id,
             (long long)study);
    return -EBUSY;
  }
  return 0;
}

int db_experiment_delete(db_t *db, int64_t id) {
  int result = db_begin(db);
  if (result != 0) return result;
  /* The rows of metrics, evals, logs, series, stages, checkpoints and tags go with it (ON
   * DELETE CASCADE); its id is remembered so that no later run is given it. */
  result = run(db,
               "INSERT INTO deleted_ids (table_name, last_id) VALUES ('experiments', ?1) "
               "ON CONFLICT (table_name) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
               id, NULL);
  if (result == 0) result = run(db, "DELETE FROM experiments WHERE id = ?1", id, NULL);
  if (result == 0) result = db_commit(db);
  if (result != 0) db_rollback(db);
  if (result == 0) db_forget_experiment(db, id);
  return result;
}
