/* study_statistics.c — a study's statistics from its runs' outcomes (see
 * study_statistics.h). One query reads every run of the study with its outcomes; the
 * grouping, pairing and tests are done here in C (stats.c), since SQLite has no t
 * distribution. Runs are few (at most STUDY_MAX_RUNS), so clarity wins over cleverness:
 * groups are found by linear search. */
#include "study_statistics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"
#include "study_spec.h"
#include "util.h"

const char *const study_outcome_names[OUTCOME_COUNT] = {"test_accuracy", "best_val_accuracy", "test_loss",
                                                        "agreement", "wall_time_s"};

/* Outcomes a distilling arm is compared with its baseline on: the baseline has no teacher
 * (no agreement) and the wall time of a teacherless run says nothing of distillation. */
static const study_outcome_t compared[] = {OUTCOME_TEST_ACCURACY, OUTCOME_BEST_VAL_ACCURACY, OUTCOME_TEST_LOSS};

/* Every run of the study in every role, with what it achieved. Ordered by experiment id:
 * the order the study created them, arm by arm within each seed. */
#define OUTCOMES_SQL                                                                                     \
  "SELECT r.experiment_id, r.role, r.arm, r.cell, r.seed, r.stopped_epoch, e.status, coalesce(e.step, 0), " \
  "  (SELECT value FROM evals v WHERE v.experiment_id = e.id AND v.split = 'test' AND v.name = 'accuracy' " \
  "     ORDER BY v.epoch DESC LIMIT 1), "                                                                 \
  "  (SELECT max(value) FROM evals v WHERE v.experiment_id = e.id AND v.split = 'val' "                  \
  "     AND v.name = 'accuracy'), "                                                                       \
  "  (SELECT value FROM evals v WHERE v.experiment_id = e.id AND v.split = 'test' AND v.name = 'loss' "   \
  "     ORDER BY v.epoch DESC LIMIT 1), "                                                                 \
  "  (SELECT value FROM evals v WHERE v.experiment_id = e.id AND v.split = 'test' "                      \
  "     AND v.name = 'agreement' ORDER BY v.epoch DESC LIMIT 1), "                                        \
  "  (julianday(e.finished_at) - julianday(e.started_at)) * 86400.0 "                                     \
  "FROM study_runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.study_id = ?1 "                \
  "ORDER BY r.experiment_id, r.arm, r.cell"

typedef struct {
  int64_t experiment_id, seed, steps;
  char *arm, *cell;
  char role[16];
  int counts;                       /* succeeded and not stopped early */
  int stopped;
  double outcomes[OUTCOME_COUNT];   /* NaN where the run has none */
} run_row_t;

typedef struct {
  const char *arm, *cell, *role;
  int *rows;                        /* indexes into the rows */
  int n_rows;
} group_t;

typedef struct {
  run_row_t *rows;
  int n_rows;
  group_t *groups;
  int n_groups;
} study_data_t;

static void free_data(study_data_t *data) {
  for (int i = 0; i < data->n_rows; i++) {
    free(data->rows[i].arm);
    free(data->rows[i].cell);
  }
  for (int i = 0; i < data->n_groups; i++) free(data->groups[i].rows);
  free(data->rows);
  free(data->groups);
}

static double column_or_nan(sqlite3_stmt *statement, int column) {
  return sqlite3_column_type(statement, column) == SQLITE_NULL ? NAN : sqlite3_column_double(statement, column);
}

static int load_rows(db_t *db, int64_t study_id, study_data_t *data) {
  sqlite3_stmt *statement = db_statement(db, OUTCOMES_SQL);
  if (statement == NULL) return -EIO;
  sqlite3_bind_int64(statement, 1, study_id);
  int code, capacity = 0, result = 0;
  while ((code = sqlite3_step(statement)) == SQLITE_ROW) {
    if (data->n_rows == capacity) {
      capacity = capacity ? capacity * 2 : 64;
      run_row_t *rows = realloc(data->rows, (size_t)capacity * sizeof *rows);
      if (rows == NULL) {
        result = -ENOMEM;
        break;
      }
      data->rows = rows;
    }
    run_row_t *row = &data->rows[data->n_rows++];
    *row = (run_row_t){.experiment_id = sqlite3_column_int64(statement, 0),
                       .arm = strdup((const char *)sqlite3_column_text(statement, 2)),
                       .cell = strdup((const char *)sqlite3_column_text(statement, 3)),
                       .seed = sqlite3_column_int64(statement, 4),
                       .stopped = sqlite3_column_type(statement, 5) != SQLITE_NULL,
                       .steps = sqlite3_column_int64(statement, 7)};
    snprintf(row->role, sizeof row->role, "%s", (const char *)sqlite3_column_text(statement, 1));
    row->counts = !row->stopped && strcmp((const char *)sqlite3_column_text(statement, 6), DB_SUCCEEDED) == 0;
    for (int o = 0; o < OUTCOME_COUNT; o++) row->outcomes[o] = column_or_nan(statement, 8 + o);
    if (row->arm == NULL || row->cell == NULL) result = -ENOMEM;
  }
  if (code != SQLITE_ROW && code != SQLITE_DONE) result = db_failure(db, "study outcomes");
  db_release(db, statement);
  return result;
}

static group_t *find_group(study_data_t *data, const char *arm, const char *cell) {
  for (int g = 0; g < data->n_groups; g++)
    if (strcmp(data->groups[g].arm, arm) == 0 && strcmp(data->groups[g].cell, cell) == 0) return &data->groups[g];
  return NULL;
}

/* Where a group is listed: the teacher first, then each arm in the order the study made
 * it (cell by cell), each followed by its matched baseline. */
static int group_rank(const study_data_t *data, const group_t *group) {
  if (strcmp(group->role, "teacher") == 0) return -1;
  size_t length = strlen(group->arm);
  const int baseline = strcmp(group->role, "baseline") == 0;
  if (baseline && length > 9) length -= 9; /* "<arm>/baseline" */
  for (int g = 0; g < data->n_groups; g++) {
    const group_t *arm = &data->groups[g];
    if (strcmp(arm->role, "arm") == 0 && strlen(arm->arm) == length && strncmp(arm->arm, group->arm, length) == 0 &&
        strcmp(arm->cell, group->cell) == 0)
      return g * 2 + baseline;
  }
  return 2 * data->n_groups + baseline;
}

static int make_groups(study_data_t *data) {
  data->groups = calloc((size_t)data->n_rows + 1, sizeof *data->groups);
  if (data->groups == NULL) return -ENOMEM;
  for (int i = 0; i < data->n_rows; i++) {
    run_row_t *row = &data->rows[i];
    group_t *group = find_group(data, row->arm, row->cell);
    if (group == NULL) {
      group = &data->groups[data->n_groups++];
      *group = (group_t){.arm = row->arm, .cell = row->cell, .role = row->role};
      if ((group->rows = malloc((size_t)data->n_rows * sizeof *group->rows)) == NULL) return -ENOMEM;
    }
    group->rows[group->n_rows++] = i;
  }
  /* Insertion sort by rank: stable, and groups are few. */
  int *ranks = malloc(((size_t)data->n_groups + 1) * sizeof *ranks);
  if (ranks == NULL) return -ENOMEM;
  for (int g = 0; g < data->n_groups; g++) ranks[g] = group_rank(data, &data->groups[g]);
  for (int g = 1; g < data->n_groups; g++) {
    group_t moving = data->groups[g];
    int rank = ranks[g], h = g - 1;
    for (; h >= 0 && ranks[h] > rank; h--) {
      data->groups[h + 1] = data->groups[h];
      ranks[h + 1] = ranks[h];
    }
    data->groups[h + 1] = moving;
    ranks[h + 1] = rank;
  }
  free(ranks);
  return 0;
}

// ---------------------------------------------------------------------------------------
// JSON

static json_t *number_or_null(double value) { return isfinite(value) ? json_real(value) : json_null(); }

static json_t *summary_json(const stats_summary_t *summary) {
  return json_pack("{s:i, s:o, s:o, s:[o, o]}", "n", summary->n, "mean", number_or_null(summary->mean), "sd",
                   number_or_null(summary->sd), "ci", number_or_null(summary->ci_low),
                   number_or_null(summary->ci_high));
}

static json_t *cell_json(const char *cell) {
  json_t *parsed = json_loads(cell, 0, NULL);
  return parsed ? parsed : json_object();
}

/* The values of outcome `o` of the group's runs that count. */
static int group_values(const study_data_t *data, const group_t *group, study_outcome_t o, double *out) {
  int n = 0;
  for (int i = 0; i < group->n_rows; i++) {
    const run_row_t *row = &data->rows[group->rows[i]];
    if (row->counts && isfinite(row->outcomes[o])) out[n++] = row->outcomes[o];
  }
  return n;
}

static json_t *arms_json(const study_data_t *data, double *scratch) {
  json_t *arms = json_array();
  for (int g = 0; g < data->n_groups; g++) {
    const group_t *group = &data->groups[g];
    json_t *runs = json_array(), *stopped = json_array(), *outcomes = json_object();
    for (int i = 0; i < group->n_rows; i++) {
      const run_row_t *row = &data->rows[group->rows[i]];
      json_array_append_new(runs, json_integer(row->experiment_id));
      if (row->stopped) json_array_append_new(stopped, json_integer(row->experiment_id));
    }
    for (int o = 0; o < OUTCOME_COUNT; o++) {
      int n = group_values(data, group, o, scratch);
      if (n == 0 && o == OUTCOME_AGREEMENT) continue; /* a teacherless run has none */
      stats_summary_t summary = stats_describe(scratch, n);
      json_object_set_new(outcomes, study_outcome_names[o], summary_json(&summary));
    }
    json_array_append_new(arms, json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "name", group->arm, "role", group->role,
                                          "cell", cell_json(group->cell), "runs", runs, "stopped", stopped,
                                          "outcomes", outcomes));
  }
  return arms;
}

/* The row of `group` run with `seed` that counts, or NULL. */
static const run_row_t *row_for_seed(const study_data_t *data, const group_t *group, int64_t seed) {
  for (int i = 0; i < group->n_rows; i++) {
    const run_row_t *row = &data->rows[group->rows[i]];
    if (row->seed == seed && row->counts) return row;
  }
  return NULL;
}

static json_t *comparisons_json(const study_data_t *data, double *a, double *b) {
  json_t *comparisons = json_array();
  for (int g = 0; g < data->n_groups; g++) {
    const group_t *group = &data->groups[g];
    if (strcmp(group->role, "arm") != 0) continue;
    char baseline_arm[CFG_TITLE_MAX + 16];
    snprintf(baseline_arm, sizeof baseline_arm, "%s/baseline", group->arm);
    const group_t *baseline = find_group((study_data_t *)data, baseline_arm, group->cell);
    if (baseline == NULL) continue; /* an arm without a teacher: nothing to match */
    for (size_t c = 0; c < ARRAY_SIZE(compared); c++) {
      const study_outcome_t o = compared[c];
      json_t *pairs = json_array();
      int n = 0, matched = 1;
      for (int i = 0; i < group->n_rows; i++) {
        const run_row_t *mine = &data->rows[group->rows[i]];
        const run_row_t *theirs = mine->counts ? row_for_seed(data, baseline, mine->seed) : NULL;
        if (theirs == NULL || !isfinite(mine->outcomes[o]) || !isfinite(theirs->outcomes[o])) continue;
        matched &= mine->steps == theirs->steps;
        a[n] = mine->outcomes[o];
        b[n] = theirs->outcomes[o];
        n++;
        json_array_append_new(pairs, json_pack("{s:I, s:I, s:I}", "seed", (json_int_t)mine->seed, "arm",
                                               (json_int_t)mine->experiment_id, "baseline",
                                               (json_int_t)theirs->experiment_id));
      }
      stats_paired_t test = stats_paired(a, b, n);
      if (!matched) test.p = NAN; /* shown, never tested: a budget difference is not an effect */
      json_array_append_new(
          comparisons,
          json_pack("{s:s, s:o, s:s, s:s, s:i, s:o, s:[o, o], s:o, s:o, s:o, s:b, s:o}", "arm", group->arm, "cell",
                    cell_json(group->cell), "baseline", baseline_arm, "outcome", study_outcome_names[o], "n", n,
                    "mean_diff", number_or_null(test.mean_diff), "ci", number_or_null(test.ci_low),
                    number_or_null(test.ci_high), "t", number_or_null(test.t), "p", number_or_null(test.p),
                    "p_holm", json_null(), "matched", matched, "pairs", pairs));
    }
  }
  /* Holm over the study's comparisons of each outcome: the family a researcher scans. */
  size_t count = json_array_size(comparisons);
  for (size_t c = 0; c < ARRAY_SIZE(compared); c++) {
    const char *outcome = study_outcome_names[compared[c]];
    int n = 0;
    for (size_t i = 0; i < count; i++) {
      json_t *comparison = json_array_get(comparisons, i);
      if (strcmp(json_string_value(json_object_get(comparison, "outcome")), outcome) != 0) continue;
      json_t *p = json_object_get(comparison, "p");
      a[n++] = json_is_number(p) ? json_number_value(p) : NAN;
    }
    stats_holm(a, n, b);
    n = 0;
    for (size_t i = 0; i < count; i++) {
      json_t *comparison = json_array_get(comparisons, i);
      if (strcmp(json_string_value(json_object_get(comparison, "outcome")), outcome) != 0) continue;
      json_object_set_new(comparison, "p_holm", number_or_null(b[n++]));
    }
  }
  return comparisons;
}

/* For each arm run over several cells: the cell with the best mean validation accuracy (the
 * test set stays out of the choice), and each axis's values with the mean outcomes of every
 * counted run that had it. */
static json_t *grid_json(const study_data_t *data, double *scratch) {
  json_t *grid = json_array();
  for (int g = 0; g < data->n_groups; g++) {
    const group_t *first = &data->groups[g];
    if (strcmp(first->role, "arm") != 0 || find_group((study_data_t *)data, first->arm, first->cell) != first)
      continue;
    int cells = 0, seen_before = 0;
    for (int h = 0; h < data->n_groups; h++) {
      if (strcmp(data->groups[h].arm, first->arm) != 0) continue;
      if (h < g) seen_before = 1;
      cells++;
    }
    if (cells < 2 || seen_before) continue;
    json_t *best = json_null(), *axes = json_object();
    double best_val = -INFINITY;
    for (int h = 0; h < data->n_groups; h++) {
      const group_t *group = &data->groups[h];
      if (strcmp(group->arm, first->arm) != 0) continue;
      int n = group_values(data, group, OUTCOME_BEST_VAL_ACCURACY, scratch);
      stats_summary_t val = stats_describe(scratch, n);
      stats_summary_t test = stats_describe(scratch, group_values(data, group, OUTCOME_TEST_ACCURACY, scratch));
      if (n > 0 && val.mean > best_val) {
        best_val = val.mean;
        json_decref(best);
        best = json_pack("{s:o, s:i, s:o, s:o}", "cell", cell_json(group->cell), "n", n, "best_val_accuracy",
                         number_or_null(val.mean), "test_accuracy", number_or_null(test.mean));
      }
      json_t *cell = cell_json(group->cell);
      const char *path;
      json_t *value;
      json_object_foreach(cell, path, value) {
        json_t *axis = json_object_get(axes, path);
        if (axis == NULL) json_object_set_new(axes, path, axis = json_array());
        json_t *entry = NULL;
        size_t i;
        json_t *item;
        json_array_foreach(axis, i, item) if (json_equal(json_object_get(item, "value"), value)) entry = item;
        if (entry == NULL) {
          entry = json_pack("{s:O, s:i, s:f, s:f, s:i}", "value", value, "n", 0, "val_sum", 0.0, "test_sum", 0.0,
                            "test_n", 0);
          json_array_append_new(axis, entry);
        }
        for (int r = 0; r < group->n_rows; r++) {
          const run_row_t *row = &data->rows[group->rows[r]];
          if (!row->counts) continue;
          if (isfinite(row->outcomes[OUTCOME_BEST_VAL_ACCURACY])) {
            json_object_set_new(entry, "n", json_integer(json_integer_value(json_object_get(entry, "n")) + 1));
            json_object_set_new(entry, "val_sum", json_real(json_real_value(json_object_get(entry, "val_sum")) +
                                                            row->outcomes[OUTCOME_BEST_VAL_ACCURACY]));
          }
          if (isfinite(row->outcomes[OUTCOME_TEST_ACCURACY])) {
            json_object_set_new(entry, "test_n",
                                json_integer(json_integer_value(json_object_get(entry, "test_n")) + 1));
            json_object_set_new(entry, "test_sum", json_real(json_real_value(json_object_get(entry, "test_sum")) +
                                                             row->outcomes[OUTCOME_TEST_ACCURACY]));
          }
        }
      }
      json_decref(cell);
    }
    /* Sums to means, in the form the API shows. */
    json_t *axes_list = json_array();
    const char *path;
    json_t *axis;
    json_object_foreach(axes, path, axis) {
      json_t *values = json_array();
      size_t i;
      json_t *entry;
      json_array_foreach(axis, i, entry) {
        json_int_t n = json_integer_value(json_object_get(entry, "n")), test_n =
                                                                            json_integer_value(json_object_get(entry, "test_n"));
        json_array_append_new(
            values, json_pack("{s:O, s:I, s:o, s:o}", "value", json_object_get(entry, "value"), "n", n,
                              "best_val_accuracy",
                              number_or_null(n ? json_real_value(json_object_get(entry, "val_sum")) / (double)n : NAN),
                              "test_accuracy",
                              number_or_null(test_n ? json_real_value(json_object_get(entry, "test_sum")) / (double)test_n
                                                    : NAN)));
      }
      json_array_append_new(axes_list, json_pack("{s:s, s:o}", "path", path, "values", values));
    }
    json_decref(axes);
    json_array_append_new(grid, json_pack("{s:s, s:s, s:o, s:o}", "arm", first->arm, "selected_by",
                                          "best_val_accuracy", "best", best, "axes", axes_list));
  }
  return grid;
}

/* Each distilling arm's mean share of the gradient per loss term and mean cosine between the
 * task's gradient and each other term's, over every diagnosed step of its runs; and the
 * findings they make: a term that takes most of the gradient on the student dominates the
 * task (judged by gradient, not by loss: a feature MSE of ~1000 beside a cross-entropy of ~2
 * need not dominate once weighted), gradients that point against the task's conflict.
 * The metric names are read as index ranges of the metrics table's key. */
#define GRADIENT_DOMINANT_SHARE 0.8
#define GRADIENT_CONFLICT_COSINE -0.05
#define GRADIENTS_SQL                                                                                        "SELECT r.arm, r.cell, m.name, avg(m.value) FROM study_runs r JOIN metrics m "                              "  ON m.experiment_id = r.experiment_id "                                                                  "  AND ((m.name >= 'grad_share/' AND m.name < 'grad_share0') "                                             "    OR (m.name >= 'grad_cos/task_' AND m.name < 'grad_cos/task`')) "                                       "WHERE r.study_id = ?1 AND r.role = 'arm' AND r.stopped_epoch IS NULL GROUP BY r.arm, r.cell, m.name"

static int add_gradients(db_t *db, int64_t study_id, json_t *arms, json_t *findings) {
  sqlite3_stmt *statement = db_statement(db, GRADIENTS_SQL);
  if (statement == NULL) return -EIO;
  sqlite3_bind_int64(statement, 1, study_id);
  int code;
  while ((code = sqlite3_step(statement)) == SQLITE_ROW) {
    const char *arm = (const char *)sqlite3_column_text(statement, 0);
    json_t *cell = cell_json((const char *)sqlite3_column_text(statement, 1));
    const char *name = (const char *)sqlite3_column_text(statement, 2);
    const double mean = sqlite3_column_double(statement, 3);
    const int share = strncmp(name, "grad_share/", 11) == 0;
    const char *term = name + (share ? 11 : 14);
    size_t i;
    json_t *entry;
    json_array_foreach(arms, i, entry) {
      if (strcmp(json_string_value(json_object_get(entry, "name")), arm) != 0 ||
          !json_equal(json_object_get(entry, "cell"), cell))
        continue;
      json_t *gradients = json_object_get(entry, "gradients");
      if (gradients == NULL) json_object_set_new(entry, "gradients", gradients = json_pack("{s:{}, s:{}}", "share", "cosine"));
      json_object_set_new(json_object_get(gradients, share ? "share" : "cosine"), term, json_real(mean));
    }
    char message[300];
    if (share && strcmp(term, "task") != 0 && mean > GRADIENT_DOMINANT_SHARE)
      snprintf(message, sizeof message, "the %s term takes %.0f%% of the gradient on the student: it dominates the task",
               term, 100 * mean);
    else if (!share && mean < GRADIENT_CONFLICT_COSINE)
      snprintf(message, sizeof message,
               "the task's and the %s term's gradients point against each other (mean cosine %.2f): the objectives "
               "conflict", term, mean);
    else
      message[0] = '\0';
    if (message[0])
      json_array_append_new(findings, json_pack("{s:s, s:O, s:s}", "arm", arm, "cell", cell, "message", message));
    json_decref(cell);
  }
  int result = code == SQLITE_DONE ? 0 : db_failure(db, "study gradients");
  db_release(db, statement);
  return result;
}

json_t *study_statistics_compute(db_t *db, int64_t study_id) {
  study_data_t data = {0};
  json_t *statistics = NULL;
  double *a = NULL, *b = NULL;
  if (load_rows(db, study_id, &data) != 0 || make_groups(&data) != 0) goto done;
  a = malloc(((size_t)data.n_rows + 1) * sizeof *a);
  b = malloc(((size_t)data.n_rows + 1) * sizeof *b);
  if (a == NULL || b == NULL) goto done;
  json_t *arms = arms_json(&data, a), *findings = json_array();
  if (add_gradients(db, study_id, arms, findings) != 0) {
    json_decref(arms);
    json_decref(findings);
    goto done;
  }
  statistics = json_pack("{s:i, s:o, s:o, s:o, s:o}", "version", STUDY_STATISTICS_VERSION, "arms", arms,
                         "comparisons", comparisons_json(&data, a, b), "grid", grid_json(&data, a), "findings", findings);
done:
  free(a);
  free(b);
  free_data(&data);
  return statistics;
}

// ---------------------------------------------------------------------------------------
// rows for SQL

static void bind_number(sqlite3_stmt *statement, int column, const json_t *value) {
  if (json_is_number(value)) sqlite3_bind_double(statement, column, json_number_value(value));
  else sqlite3_bind_null(statement, column);
}

static int run_statement(db_t *db, sqlite3_stmt *statement, const char *what) {
  int result = sqlite3_step(statement) == SQLITE_DONE ? 0 : db_failure(db, what);
  sqlite3_reset(statement);
  sqlite3_clear_bindings(statement);
  return result;
}

int study_statistics_store(db_t *db, int64_t study_id, const json_t *statistics) {
  static const char *const clear[] = {"DELETE FROM study_arm_statistics WHERE study_id = ?1",
                                      "DELETE FROM study_comparison_statistics WHERE study_id = ?1"};
  int result = 0;
  for (size_t i = 0; i < ARRAY_SIZE(clear) && result == 0; i++) {
    sqlite3_stmt *statement = db_statement(db, clear[i]);
    if (statement == NULL) return -EIO;
    sqlite3_bind_int64(statement, 1, study_id);
    result = run_statement(db, statement, clear[i]);
    db_release(db, statement);
  }
  sqlite3_stmt *arm_row = db_statement(db, "INSERT INTO study_arm_statistics (study_id, arm, cell, role, outcome, n, "
                                           "mean, sd, ci_low, ci_high) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
  sqlite3_stmt *comparison_row =
      db_statement(db, "INSERT INTO study_comparison_statistics (study_id, arm, cell, baseline, outcome, n, mean_diff, "
                       "ci_low, ci_high, p, p_holm, matched) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
  if (arm_row == NULL || comparison_row == NULL) result = -EIO;
  size_t i;
  json_t *arm;
  json_array_foreach(json_object_get(statistics, "arms"), i, arm) {
    if (result != 0) break;
    char *cell = json_dumps(json_object_get(arm, "cell"), JSON_COMPACT | JSON_REAL_PRECISION(15));
    const char *outcome;
    json_t *summary;
    json_object_foreach(json_object_get(arm, "outcomes"), outcome, summary) {
      sqlite3_bind_int64(arm_row, 1, study_id);
      sqlite3_bind_text(arm_row, 2, json_string_value(json_object_get(arm, "name")), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(arm_row, 3, cell ? cell : "{}", -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(arm_row, 4, json_string_value(json_object_get(arm, "role")), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(arm_row, 5, outcome, -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(arm_row, 6, json_integer_value(json_object_get(summary, "n")));
      bind_number(arm_row, 7, json_object_get(summary, "mean"));
      bind_number(arm_row, 8, json_object_get(summary, "sd"));
      bind_number(arm_row, 9, json_array_get(json_object_get(summary, "ci"), 0));
      bind_number(arm_row, 10, json_array_get(json_object_get(summary, "ci"), 1));
      if ((result = run_statement(db, arm_row, "study arm statistics")) != 0) break;
    }
    free(cell);
  }
  json_t *comparison;
  json_array_foreach(json_object_get(statistics, "comparisons"), i, comparison) {
    if (result != 0) break;
    char *cell = json_dumps(json_object_get(comparison, "cell"), JSON_COMPACT | JSON_REAL_PRECISION(15));
    sqlite3_bind_int64(comparison_row, 1, study_id);
    sqlite3_bind_text(comparison_row, 2, json_string_value(json_object_get(comparison, "arm")), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(comparison_row, 3, cell ? cell : "{}", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(comparison_row, 4, json_string_value(json_object_get(comparison, "baseline")), -1,
                      SQLITE_TRANSIENT);
    sqlite3_bind_text(comparison_row, 5, json_string_value(json_object_get(comparison, "outcome")), -1,
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(comparison_row, 6, json_integer_value(json_object_get(comparison, "n")));
    bind_number(comparison_row, 7, json_object_get(comparison, "mean_diff"));
    bind_number(comparison_row, 8, json_array_get(json_object_get(comparison, "ci"), 0));
    bind_number(comparison_row, 9, json_array_get(json_object_get(comparison, "ci"), 1));
    bind_number(comparison_row, 10, json_object_get(comparison, "p"));
    bind_number(comparison_row, 11, json_object_get(comparison, "p_holm"));
    sqlite3_bind_int(comparison_row, 12, json_is_true(json_object_get(comparison, "matched")));
    result = run_statement(db, comparison_row, "study comparison statistics");
    free(cell);
  }
  db_release(db, arm_row);
  db_release(db, comparison_row);
  return result;
}
