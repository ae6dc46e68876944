/* db_batch.c — the write batch of the daemon's SQLite layer (see db.h, db_internal.h).
 * Workers report a metric event per step, each with several values; the daemon turns them
 * into rows and keeps them here until db_flush() commits them in one transaction with
 * prepared statements (INSERT OR REPLACE, so a repeated step overwrites; metric rows 64 to
 * a statement).
 * Row names live in one growing text arena so a row costs no allocation of its own. A
 * failed flush keeps the batch: nothing acknowledged to a subscriber is lost because the
 * disk was briefly full or a reader held a lock. */
#include "db.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db_internal.h"
#include "util.h"

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
  uint64_t hash = db_hash_text(name) ^ ((uint64_t)id * 0x9e3779b97f4a7c15ull);
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
  return code == SQLITE_DONE ? 0 : db_fail_sql(db, "writing the batch");
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
      db_forget_details(db, row->experiment_id);
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
    return db_fail_sql(db, "begin batch");
  }
  int result = write_metrics(db);
  for (size_t i = 0; i < db->n_rows && result == 0; i++) {
    const row_t *row = &db->rows[i];
    const char *text = db->arena + row->text;
    sqlite3_stmt *statement;
    switch (row->kind) {
    case ROW_METRIC: break; /* written above */
    case ROW_EVAL:
      db_forget_details(db, row->experiment_id); /* its name may be a new curve */
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
      db_forget_details(db, row->experiment_id);
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
  if (result == 0 && sqlite3_exec(db->sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) result = db_fail_sql(db, "commit");
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
