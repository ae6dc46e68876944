/* db_replay.c — the reads behind the curves API and the stream's replay (see db.h): a
 * run's curves as columns, its events again from a step on, the next step with rows, and
 * its log. Part of the SQLite layer: it runs on db.c's connection through its statement
 * cache (db_internal.h). */
#include "db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db_internal.h"
#include "json_text.h"
#include "util.h"

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
  if (db_cached_statement(db,
                       "SELECT m.name, m.step, m.value FROM series s CROSS JOIN metrics m "
                       "ON m.experiment_id = s.experiment_id AND m.name = s.name "
                       "WHERE s.experiment_id = ?1 AND m.step > ?2 "
                       "AND (?3 IS NULL OR instr(',' || ?3 || ',', ',' || s.name || ',') > 0) "
                       "ORDER BY s.name, m.step",
                       &metrics) != 0 ||
      db_cached_statement(db,
                       "SELECT split || '/' || name AS full_name, step, value, epoch FROM evals "
                       "WHERE experiment_id = ?1 AND step > ?2 "
                       "AND (?3 IS NULL OR instr(',' || ?3 || ',', ',' || full_name || ',') > 0) "
                       "ORDER BY full_name, epoch",
                       &evals) != 0) {
    db_fail_sql(db, "metrics");
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
    if (!failed && code != SQLITE_DONE) failed = db_fail_sql(db, "metrics") != 0;
  }
  json_text_literal(&out, "}");
done:
  db_release_statement(db, metrics);
  db_release_statement(db, evals);
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

/* An event's values, gathered from its rows: names are copied (a column's text lasts until
 * the next step) into `names` at `name_at`, and pointed to once the event is whole. The
 * arrays grow by doubling and serve every event of one replay. */
typedef struct {
  ev_value_t *values;
  size_t *name_at, count, capacity;
  char *names;
  size_t names_used, names_capacity;
} replay_values_t;

static int replay_values_add(replay_values_t *gathered, const char *name, double value) {
  size_t length = strlen(name) + 1;
  if (gathered->count == gathered->capacity || gathered->names_used + length > gathered->names_capacity) {
    size_t capacity = gathered->capacity ? gathered->capacity * 2 : 64;
    size_t names_size = gathered->names_capacity ? gathered->names_capacity * 2 : 4096;
    while (gathered->names_used + length > names_size) names_size *= 2;
    ev_value_t *more_values = realloc(gathered->values, capacity * sizeof *gathered->values);
    if (more_values) gathered->values = more_values;
    size_t *more_at = realloc(gathered->name_at, capacity * sizeof *gathered->name_at);
    if (more_at) gathered->name_at = more_at;
    char *more_names = realloc(gathered->names, names_size);
    if (more_names) gathered->names = more_names;
    if (!more_values || !more_at || !more_names) return -ENOMEM;
    gathered->capacity = capacity;
    gathered->names_capacity = names_size;
  }
  memcpy(gathered->names + gathered->names_used, name, length);
  gathered->name_at[gathered->count] = gathered->names_used;
  gathered->names_used += length;
  gathered->values[gathered->count++].value = value;
  return 0;
}

/* The two queries of a replay, bound: the metrics of (step, last_step], and the evaluations
 * and stage starts after (step, phase). */
static int replay_queries(db_t *db, int64_t id, int64_t step, int phase, int64_t last_step, sqlite3_stmt **metrics,
                          sqlite3_stmt **evals) {
  /* Series first (CROSS JOIN fixes the order): one index range per curve, then a sort of
   * the window's rows by step. */
  if (db_cached_statement(db,
                          "SELECT m.step, m.epoch, m.stage, m.name, m.value FROM series s CROSS JOIN metrics m "
                          "ON m.experiment_id = s.experiment_id AND m.name = s.name "
                          "WHERE s.experiment_id = ?1 AND m.step > ?2 AND m.step <= ?3 ORDER BY m.step",
                          metrics) != 0 ||
      db_cached_statement(db,
                          "SELECT step, epoch, stage, name, value, split_order + 1 AS phase FROM evals "
                          "WHERE experiment_id = ?1 AND (step, split_order + 1) > (?2, ?4) AND step <= ?3 "
                          "UNION ALL "
                          "SELECT step, epoch, stage, name, NULL, ?5 FROM stage_starts "
                          "WHERE experiment_id = ?1 AND (step, ?5) > (?2, ?4) AND step <= ?3 "
                          "ORDER BY step, phase",
                          evals) != 0)
    return db_fail_sql(db, "replay");
  sqlite3_bind_int64(*metrics, 1, id);
  sqlite3_bind_int64(*metrics, 2, step);
  sqlite3_bind_int64(*metrics, 3, last_step);
  sqlite3_bind_int64(*evals, 1, id);
  sqlite3_bind_int64(*evals, 2, step);
  sqlite3_bind_int64(*evals, 3, last_step);
  sqlite3_bind_int(*evals, 4, phase);
  sqlite3_bind_int(*evals, 5, EV_PHASE_STAGE);
  return 0;
}

int db_replay(db_t *db, int64_t id, int64_t step, int phase, int64_t last_step, db_replay_cb emit, void *context) {
  sqlite3_stmt *metrics = NULL, *evals = NULL;
  replay_values_t gathered = {0};
  int result = replay_queries(db, id, step, phase, last_step, &metrics, &evals);
  if (result != 0) goto done;

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
    gathered.count = 0;
    gathered.names_used = 0;
    while (*have && sqlite3_column_int64(statement, 0) == event.step &&
           (take_metric || sqlite3_column_int(statement, 5) == row_phase)) {
      if ((result = replay_values_add(&gathered, (const char *)sqlite3_column_text(statement, 3),
                                      sqlite3_column_double(statement, 4))) != 0)
        goto done;
      *have = sqlite3_step(statement) == SQLITE_ROW;
    }
    for (size_t i = 0; i < gathered.count; i++) gathered.values[i].name = gathered.names + gathered.name_at[i];
    event.values = gathered.values;
    event.n_values = (int)gathered.count;
    emit(context, &event);
    emitted++;
  }
  result = emitted;
done:
  free(gathered.values);
  free(gathered.name_at);
  free(gathered.names);
  db_release_statement(db, metrics);
  db_release_statement(db, evals);
  return result;
}

int64_t db_next_step(db_t *db, int64_t id, int64_t after) {
  sqlite3_stmt *statement = NULL;
  /* One index probe per curve, per eval split and in stage_starts: cheap however far the
   * next step is. */
  if (db_cached_statement(db,
                       "SELECT min(step) FROM ("
                       "  SELECT (SELECT min(m.step) FROM metrics m WHERE m.experiment_id = s.experiment_id "
                       "          AND m.name = s.name AND m.step > ?2) AS step "
                       "    FROM series s WHERE s.experiment_id = ?1 "
                       "  UNION ALL SELECT min(step) FROM evals WHERE experiment_id = ?1 AND step > ?2 "
                       "  UNION ALL SELECT min(step) FROM stage_starts WHERE experiment_id = ?1 AND step > ?2)",
                       &statement) != 0)
    return db_fail_sql(db, "next step");
  sqlite3_bind_int64(statement, 1, id);
  sqlite3_bind_int64(statement, 2, after);
  int64_t next = sqlite3_step(statement) == SQLITE_ROW && sqlite3_column_type(statement, 0) != SQLITE_NULL
                     ? sqlite3_column_int64(statement, 0)
                     : -ENOENT;
  db_release_statement(db, statement);
  return next;
}

char *db_log_text(db_t *db, int64_t id, size_t *length) {
  sqlite3_stmt *statement = NULL;
  if (db_cached_statement(db, "SELECT attempt, line FROM logs WHERE experiment_id = ?1 ORDER BY attempt, line_number",
                       &statement) != 0) {
    db_fail_sql(db, "log");
    return NULL;
  }
  sqlite3_bind_int64(statement, 1, id);
  char *text = NULL;
  size_t size = 0;
  FILE *out = open_memstream(&text, &size);
  if (out == NULL) {
    db_release_statement(db, statement);
    return NULL;
  }
  while (sqlite3_step(statement) == SQLITE_ROW)
    fprintf(out, "attempt %d | %s\n", sqlite3_column_int(statement, 0), (const char *)sqlite3_column_text(statement, 1));
  fclose(out);
  db_release_statement(db, statement);
  *length = size;
  return text;
}
