/* study_curves.c — each arm's mean curve over its seeds (see study_curves.h). SQLite does
 * the grouping and the sums (mean and mean of squares per arm, cell and x); the band is the
 * t interval of the mean, as the arm table's. */
#include "study_curves.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"
#include "util.h"

static const char *const splits[] = {"train", "val", "test", "teacher"};

/* Evaluations: one point per epoch. */
#define EVAL_CURVE_SQL                                                                                    \
  "SELECT r.arm, r.cell, r.role, v.epoch, count(*), avg(v.value), avg(v.value * v.value) "               \
  "FROM evals v JOIN study_runs r ON r.experiment_id = v.experiment_id "                                 \
  "WHERE r.study_id = ?1 AND r.stopped_epoch IS NULL AND v.split = ?2 AND v.name = ?3 "                  \
  "GROUP BY r.arm, r.cell, v.epoch ORDER BY min(r.experiment_id), r.arm, r.cell, v.epoch"

/* Metrics: each run's mean over a bucket of ?3 steps, then the runs' mean per bucket, at the
 * bucket's last step. */
#define METRIC_CURVE_SQL                                                                                  \
  "WITH per_run AS (SELECT r.arm, r.cell, r.role, m.experiment_id, (m.step - 1) / ?3 AS bucket, "         \
  "                        max(m.step) AS step, avg(m.value) AS value "                                  \
  "                   FROM metrics m JOIN study_runs r ON r.experiment_id = m.experiment_id "            \
  "                  WHERE r.study_id = ?1 AND r.stopped_epoch IS NULL AND m.name = ?2 "                 \
  "                  GROUP BY r.arm, r.cell, m.experiment_id, bucket) "                                  \
  "SELECT arm, cell, role, max(step), count(*), avg(value), avg(value * value) FROM per_run "            \
  "GROUP BY arm, cell, bucket ORDER BY min(experiment_id), arm, cell, bucket"

#define LAST_STEP_SQL                                                                                     \
  "SELECT max(m.step) FROM metrics m JOIN study_runs r ON r.experiment_id = m.experiment_id "            \
  "WHERE r.study_id = ?1 AND m.name = ?2"

static json_t *number_or_null(double value) { return isfinite(value) ? json_real(value) : json_null(); }

/* Reads the rows of a curve statement into series, one per (arm, cell). */
static json_t *read_series(db_t *db, sqlite3_stmt *statement) {
  json_t *series = json_array(), *current = NULL;
  int code;
  while ((code = sqlite3_step(statement)) == SQLITE_ROW) {
    const char *arm = (const char *)sqlite3_column_text(statement, 0);
    const char *cell = (const char *)sqlite3_column_text(statement, 1);
    if (current == NULL || strcmp(json_string_value(json_object_get(current, "arm")), arm) != 0 ||
        strcmp(json_string_value(json_object_get(current, "cell_text")), cell) != 0) {
      json_t *parsed = json_loads(cell, 0, NULL);
      current = json_pack("{s:s, s:s, s:o, s:s, s:[], s:[], s:[], s:[], s:[]}", "arm", arm, "cell_text", cell, "cell",
                          parsed ? parsed : json_object(), "role", (const char *)sqlite3_column_text(statement, 2),
                          "x", "mean", "low", "high", "n");
      json_array_append_new(series, current);
    }
    const int n = sqlite3_column_int(statement, 4);
    const double mean = sqlite3_column_double(statement, 5), squares = sqlite3_column_double(statement, 6);
    /* The sample sd from the two sums; rounding can make the variance a hair below 0. */
    const double variance = n > 1 ? fmax(0.0, (squares - mean * mean) * n / (n - 1)) : NAN;
    const double half = n > 1 ? stats_t_quantile(0.975, n - 1) * sqrt(variance / n) : 0.0;
    json_array_append_new(json_object_get(current, "x"), json_integer(sqlite3_column_int64(statement, 3)));
    json_array_append_new(json_object_get(current, "mean"), number_or_null(mean));
    json_array_append_new(json_object_get(current, "low"), number_or_null(mean - half));
    json_array_append_new(json_object_get(current, "high"), number_or_null(mean + half));
    json_array_append_new(json_object_get(current, "n"), json_integer(n));
  }
  if (code != SQLITE_DONE) {
    db_failure(db, "study curve");
    json_decref(series);
    return NULL;
  }
  size_t i;
  json_t *item;
  json_array_foreach(series, i, item) json_object_del(item, "cell_text");
  return series;
}

static json_t *eval_curve(db_t *db, int64_t study_id, const char *split, const char *name) {
  sqlite3_stmt *statement = db_statement(db, EVAL_CURVE_SQL);
  if (statement == NULL) return NULL;
  sqlite3_bind_int64(statement, 1, study_id);
  sqlite3_bind_text(statement, 2, split, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 3, name, -1, SQLITE_STATIC);
  json_t *series = read_series(db, statement);
  db_release(db, statement);
  return series ? json_pack("{s:s, s:o}", "x", "epoch", "series", series) : NULL;
}

static json_t *metric_curve(db_t *db, int64_t study_id, const char *name, int points) {
  sqlite3_stmt *statement = db_statement(db, LAST_STEP_SQL);
  if (statement == NULL) return NULL;
  sqlite3_bind_int64(statement, 1, study_id);
  sqlite3_bind_text(statement, 2, name, -1, SQLITE_STATIC);
  int64_t last = sqlite3_step(statement) == SQLITE_ROW ? sqlite3_column_int64(statement, 0) : 0;
  db_release(db, statement);
  const int64_t bucket = last > points ? (last + points - 1) / points : 1;
  if ((statement = db_statement(db, METRIC_CURVE_SQL)) == NULL) return NULL;
  sqlite3_bind_int64(statement, 1, study_id);
  sqlite3_bind_text(statement, 2, name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(statement, 3, bucket);
  json_t *series = read_series(db, statement);
  db_release(db, statement);
  return series ? json_pack("{s:s, s:I, s:o}", "x", "step", "bucket", (json_int_t)bucket, "series", series) : NULL;
}

json_t *study_curves(db_t *db, int64_t study_id, const char *names, int points) {
  json_t *curves = json_object();
  char copy[512];
  util_strlcpy(copy, names, sizeof copy);
  int count = 0;
  for (char *save, *name = strtok_r(copy, ",", &save); name && count < STUDY_CURVES_MAX_NAMES;
       name = strtok_r(NULL, ",", &save), count++) {
    json_t *curve = NULL;
    const char *slash = strchr(name, '/');
    for (size_t s = 0; s < ARRAY_SIZE(splits) && slash && !curve; s++)
      if ((size_t)(slash - name) == strlen(splits[s]) && strncmp(name, splits[s], (size_t)(slash - name)) == 0)
        curve = eval_curve(db, study_id, splits[s], slash + 1);
    if (curve == NULL) curve = metric_curve(db, study_id, name, points);
    if (curve == NULL) {
      json_decref(curves);
      return NULL;
    }
    json_object_set_new(curves, name, curve);
  }
  return curves;
}
