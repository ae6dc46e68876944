/* db_experiments.c — the experiments' rows (see db.h): inserting one, its JSON for the API
 * (with the page's detail arrays, cached), the list with its filters, columns and sorts, and
 * the life of a run: next, start/unstart, set_worker, finish, retry, dependents,
 * checkpoints, counts. Part of the SQLite layer: it runs on db.c's connection through its
 * statement cache (db_internal.h). */
#include "db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db_internal.h"
#include "json_text.h"
#include "util.h"

static const char *const terminal_statuses[] = {DB_SUCCEEDED, DB_FAILED, DB_CANCELLED};

int db_status_is_terminal(const char *status) {
  for (size_t i = 0; i < ARRAY_SIZE(terminal_statuses); i++)
    if (strcmp(status, terminal_statuses[i]) == 0) return 1;
  return 0;
}

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

void db_forget_details(db_t *db, int64_t id) {
  cached_details_t *details = find_details(db, id);
  if (details == NULL) return;
  free(details->text);
  *details = (cached_details_t){0};
}

void db_forget_experiment(db_t *db, int64_t id) {
  /* The `seen` set may keep the deleted run's curve names: ids are never given again, so
   * they only hold a slot until the set is next emptied. */
  db_forget_details(db, id);
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
  if (db_cached_statement(db, text, &statement) != 0) return db_fail_sql(db, text);
  if (text_parameter) sqlite3_bind_text(statement, 1, text_parameter, -1, SQLITE_STATIC);
  else sqlite3_bind_int64(statement, 1, id);
  int code = sqlite3_step(statement);
  int64_t value = code == SQLITE_ROW ? sqlite3_column_int64(statement, 0) : fallback;
  if (code != SQLITE_ROW && code != SQLITE_DONE) value = db_fail_sql(db, text);
  db_release_statement(db, statement);
  return value;
}

int db_experiment_insert(db_t *db, const char *name, int priority, int64_t teacher_id, const char *config_json,
                         int64_t *id) {
  sqlite3_stmt *statement = NULL;
  if (db_cached_statement(db,
                       "INSERT INTO experiments (id, name, priority, config, teacher_id, planned_epochs, "
                       "planned_stages) VALUES (" NEXT_EXPERIMENT_ID_SQL ", ?1, ?2, ?3, ?4, "
                       PLANNED_EPOCHS_SQL("?3") ", " PLANNED_STAGES_SQL("?3") ")",
                       &statement) != 0)
    return db_fail_sql(db, "insert experiment");
  sqlite3_bind_text(statement, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_int(statement, 2, priority);
  sqlite3_bind_text(statement, 3, config_json, -1, SQLITE_STATIC);
  if (teacher_id > 0) sqlite3_bind_int64(statement, 4, teacher_id);
  int result = sqlite3_step(statement) == SQLITE_DONE ? 0 : db_fail_sql(db, "insert experiment");
  db_release_statement(db, statement);
  if (result == 0) *id = sqlite3_last_insert_rowid(db->sql);
  return result;
}

/* The rows of `text` (parameters ?1 and ?2 bound to `first` and `second` when it has them)
 * as a JSON array of objects keyed by column name. */
static int write_rows(db_t *db, json_text_t *out, const char *text, int64_t first, int64_t second) {
  sqlite3_stmt *statement = NULL;
  if (db_cached_statement(db, text, &statement) != 0) return db_fail_sql(db, text);
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
  int result = code == SQLITE_DONE ? 0 : db_fail_sql(db, text);
  db_release_statement(db, statement);
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
  if (db_cached_statement(db,
                       with_config && !details
                           ? "SELECT " EXPERIMENT_COLUMNS EXPERIMENT_DETAIL_COLUMNS " FROM experiments WHERE id = ?1"
                           : "SELECT " EXPERIMENT_COLUMNS " FROM experiments WHERE id = ?1",
                       &statement) != 0)
    return db_fail_sql(db, "get experiment");
  sqlite3_bind_int64(statement, 1, id);
  json_text_t out;
  json_text_init(&out);
  int code = sqlite3_step(statement);
  int result = code == SQLITE_ROW ? 0 : code == SQLITE_DONE ? -ENOENT : db_fail_sql(db, "get experiment");
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
  db_release_statement(db, statement);
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
  if (db_cached_statement(db, "SELECT status FROM experiments WHERE id = ?1", &statement) != 0)
    return db_fail_sql(db, "experiment status");
  sqlite3_bind_int64(statement, 1, id);
  int result = -ENOENT;
  if (sqlite3_step(statement) == SQLITE_ROW) {
    util_strlcpy(status, (const char *)sqlite3_column_text(statement, 0), size);
    result = 0;
  }
  db_release_statement(db, statement);
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
    db_fail_sql(db, "list experiments");
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
  if (failed) db_fail_sql(db, "list experiments");
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
  if (db_cached_statement(db,
                       "SELECT id, config FROM experiments e WHERE status IN ('queued', 'interrupted') "
                       "AND (teacher_id IS NULL OR "
                       "     (SELECT status FROM experiments t WHERE t.id = e.teacher_id) = 'succeeded') "
                       /* a cluster job that may still run it (daemon/slurm.c) */
                       "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.experiment_id = e.id AND j.ended_at IS NULL) "
                       "ORDER BY priority DESC, id LIMIT 1",
                       &statement) != 0)
    return db_fail_sql(db, "next experiment");
  int result = -ENOENT;
  if (sqlite3_step(statement) == SQLITE_ROW) {
    *id = sqlite3_column_int64(statement, 0);
    *config_json = strdup((const char *)sqlite3_column_text(statement, 1));
    result = *config_json ? 0 : -ENOMEM;
  }
  db_release_statement(db, statement);
  return result;
}

/* Runs one UPDATE with up to three text parameters (?2…) about experiment ?1. */
static int update_experiment(db_t *db, const char *text, int64_t id, const char *a, const char *b, const char *c) {
  sqlite3_stmt *statement = NULL;
  if (db_cached_statement(db, text, &statement) != 0) return db_fail_sql(db, text);
  sqlite3_bind_int64(statement, 1, id);
  const char *texts[] = {a, b, c};
  for (int i = 0; i < 3 && i + 2 <= sqlite3_bind_parameter_count(statement); i++)
    sqlite3_bind_text(statement, i + 2, texts[i], -1, SQLITE_STATIC);
  int result = sqlite3_step(statement) == SQLITE_DONE ? 0 : db_fail_sql(db, text);
  db_release_statement(db, statement);
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
  if (db_cached_statement(db,
                       "UPDATE experiments SET status = 'failed', error = ?2, finished_at = " NOW_SQL
                       " WHERE teacher_id = ?1 AND status IN ('queued', 'interrupted') RETURNING id",
                       &statement) != 0)
    return db_fail_sql(db, "fail dependents");
  sqlite3_bind_int64(statement, 1, teacher_id);
  sqlite3_bind_text(statement, 2, error, -1, SQLITE_STATIC);
  int count = 0, code;
  int64_t ids[256];
  while ((code = sqlite3_step(statement)) == SQLITE_ROW)
    if (count < (int)ARRAY_SIZE(ids)) ids[count++] = sqlite3_column_int64(statement, 0);
  db_release_statement(db, statement);
  if (code != SQLITE_DONE) return db_fail_sql(db, "fail dependents");
  /* Told only once the statement is finished: the callback may read the database. */
  for (int i = 0; i < count; i++) each(context, ids[i]);
  return count;
}

int db_checkpoint_add(db_t *db, int64_t id, int64_t epoch, int64_t step, const char *path, int64_t bytes) {
  sqlite3_stmt *statement = NULL;
  db_forget_details(db, id);
  if (db_cached_statement(db,
                       "INSERT OR REPLACE INTO checkpoints (experiment_id, epoch, step, path, bytes) "
                       "VALUES (?1, ?2, ?3, ?4, ?5)",
                       &statement) != 0)
    return db_fail_sql(db, "checkpoint");
  sqlite3_bind_int64(statement, 1, id);
  sqlite3_bind_int64(statement, 2, epoch);
  sqlite3_bind_int64(statement, 3, step);
  sqlite3_bind_text(statement, 4, path, -1, SQLITE_STATIC);
  sqlite3_bind_int64(statement, 5, bytes);
  int result = sqlite3_step(statement) == SQLITE_DONE ? 0 : db_fail_sql(db, "checkpoint");
  db_release_statement(db, statement);
  if (result != 0) return result;
  /* An epoch's own checkpoint supersedes what the worker then deletes (train.c,
   * train__forget_old_checkpoints): the partial ones of earlier epochs and, with the
   * config's checkpoint_keep, the epoch checkpoints older than the newest that many of those
   * due (every checkpoint_every epochs, and the last). Their rows go by the same rule. */
  if (db_cached_statement(db,
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
    return db_fail_sql(db, "superseded checkpoints");
  sqlite3_bind_int64(statement, 1, id);
  sqlite3_bind_int64(statement, 2, epoch);
  sqlite3_bind_text(statement, 3, path, -1, SQLITE_STATIC);
  result = sqlite3_step(statement) == SQLITE_DONE ? 0 : db_fail_sql(db, "superseded checkpoints");
  db_release_statement(db, statement);
  return result;
}

int db_checkpoint_latest(db_t *db, int64_t id, char *path, size_t size) {
  sqlite3_stmt *statement = NULL;
  if (db_cached_statement(db, "SELECT path FROM checkpoints WHERE experiment_id = ?1 ORDER BY epoch DESC LIMIT 1",
                       &statement) != 0)
    return db_fail_sql(db, "latest checkpoint");
  sqlite3_bind_int64(statement, 1, id);
  int result = -ENOENT;
  if (sqlite3_step(statement) == SQLITE_ROW)
    result = util_strlcpy(path, (const char *)sqlite3_column_text(statement, 0), size) == 0 ? 0 : -ENAMETOOLONG;
  db_release_statement(db, statement);
  return result;
}

int db_count_status(db_t *db, const char *status) {
  return (int)select_integer(db, "SELECT count(*) FROM experiments WHERE status = ?1", 0, status, 0);
}

int64_t db_max_step(db_t *db, int64_t id) {
  return select_integer(db, "SELECT coalesce(max(step), 0) FROM experiments WHERE id = ?1", id, NULL, 0);
}
