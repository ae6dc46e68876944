/* report.c — a run's analysis from what the database holds (see report.h). Everything is
 * derived from the stored curves with a few small queries, so a report is as current as
 * the last flushed batch and costs milliseconds; nothing is stored. The baseline a run is
 * judged against is its matched one, by the rule studies use (study_spec.h). */
#include "report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "study_spec.h"

#define DOMINANT_SHARE 0.8      /* a non-task term above this share of the gradient (or loss) dominates */
#define IMITATION_CHANGE -0.2   /* a distillation term fell by more than 20 %… */
#define VAL_GAIN 0.002          /* …while validation accuracy gained less than 0.2 points: the paradox */
#define CONFLICT_COSINE -0.05   /* task and another term's gradients point against each other on average */
#define GATE_CONCENTRATED 0.2   /* effective fraction of the batch the gate weights */
#define DISC_WINS 0.95          /* discriminator accuracy: the student's features are obvious */
#define OVERFIT_GAP 0.05        /* train accuracy above test accuracy by this much */

static void add_finding(json_t *findings, const char *severity, const char *stage, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static void add_finding(json_t *findings, const char *severity, const char *stage, const char *format, ...) {
  char message[512];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  json_array_append_new(findings, json_pack("{s:s, s:s?, s:s}", "severity", severity, "stage", stage, "message",
                                            message));
}

static double number(const json_t *object, const char *key) {
  const json_t *value = json_object_get(object, key);
  return json_is_number(value) ? json_number_value(value) : NAN;
}

/* Each stage's mean gradient share (grad_share/<term>: the term's weighted gradient norm on
 * the student over the sum of all of them) and mean task–term cosine (grad_cos/task_<term>),
 * as "gradient_share" and "gradient_cosine". Runs without them (no teacher, older runs)
 * get neither. */
static void add_gradients(db_t *db, int64_t id, json_t *stages) {
  json_t *rows = db_select(db,
                           "SELECT stage, name, avg(value) AS mean FROM metrics WHERE experiment_id = ?1 "
                           "AND (name LIKE 'grad_share/%' OR name LIKE 'grad_cos/task_%') GROUP BY stage, name",
                           id, 0);
  size_t index;
  json_t *row;
  json_array_foreach(rows, index, row) {
    const char *name = json_string_value(json_object_get(row, "name"));
    const int share = strncmp(name, "grad_share/", 11) == 0;
    for (size_t i = 0; i < json_array_size(stages); i++) {
      json_t *stage = json_array_get(stages, i);
      if (json_integer_value(json_object_get(stage, "stage")) != json_integer_value(json_object_get(row, "stage")))
        continue;
      const char *key = share ? "gradient_share" : "gradient_cosine";
      if (json_object_get(stage, key) == NULL) json_object_set_new(stage, key, json_object());
      json_object_set_new(json_object_get(stage, key), name + (share ? 11 : 14), json_real(number(row, "mean")));
    }
  }
  json_decref(rows);
}

/* Each stage's validation accuracy before it (the last epoch of the stage before, or its own
 * first) and at its end, as "val_accuracy": {"before", "end", "change"}: whether the stage
 * made the student better at the task on examples it does not train on. */
static void add_validation(db_t *db, int64_t id, json_t *stages) {
  json_t *rows = db_select(db,
                           "SELECT s.stage, "
                           "  (SELECT value FROM evals v WHERE v.experiment_id = ?1 AND v.split = 'val' "
                           "     AND v.name = 'accuracy' AND v.epoch = max(s.first - 1, 1)) AS before, "
                           "  (SELECT value FROM evals v WHERE v.experiment_id = ?1 AND v.split = 'val' "
                           "     AND v.name = 'accuracy' AND v.epoch = s.last) AS end "
                           "FROM (SELECT stage, min(epoch) AS first, max(epoch) AS last FROM evals "
                           "      WHERE experiment_id = ?1 AND split = 'val' AND name = 'accuracy' GROUP BY stage) s",
                           id, 0);
  size_t index;
  json_t *row;
  json_array_foreach(rows, index, row) {
    for (size_t i = 0; i < json_array_size(stages); i++) {
      json_t *stage = json_array_get(stages, i);
      if (json_integer_value(json_object_get(stage, "stage")) != json_integer_value(json_object_get(row, "stage")))
        continue;
      const double before = number(row, "before"), end = number(row, "end");
      if (isfinite(before) && isfinite(end))
        json_object_set_new(stage, "val_accuracy",
                            json_pack("{s:f, s:f, s:f}", "before", before, "end", end, "change", end - before));
    }
  }
  json_decref(rows);
}

/* A stage's findings. A term dominates by its share of the gradient on the student, which
 * is what moves it (a feature MSE of ~1000 beside a cross-entropy of ~2 need not, once
 * weighted); by its share of the loss only where the run has no gradient shares. The
 * paradox of the users' report — imitation improves, the task does not — is judged on
 * validation accuracy, not on training loss, which the distillation terms also move. */
static void find_in_stage(const json_t *stage, json_t *findings) {
  const char *stage_name = json_string_value(json_object_get(stage, "name"));
  const json_t *gradient = json_object_get(stage, "gradient_share");
  const char *term;
  json_t *share;
  json_object_foreach((json_t *)(gradient ? gradient : json_object_get(stage, "share")), term, share) {
    if (strcmp(term, "task") != 0 && json_real_value(share) > DOMINANT_SHARE)
      add_finding(findings, "warning", stage_name,
                  "the %s term takes %.0f%% of the %s: it dominates the task; lower its weight%s", term,
                  100 * json_real_value(share), gradient ? "gradient on the student" : "total loss",
                  strcmp(term, "feature") == 0 ? " or normalise the features" : "");
  }
  json_t *cosine;
  json_object_foreach(json_object_get(stage, "gradient_cosine"), term, cosine) {
    if (json_real_value(cosine) < CONFLICT_COSINE)
      add_finding(findings, "warning", stage_name,
                  "the task's and the %s term's gradients point against each other (mean cosine %.2f): the "
                  "objectives conflict, and each step trades one for the other",
                  term, json_real_value(cosine));
  }
  const json_t *val = json_object_get(stage, "val_accuracy");
  json_t *terms = json_object_get(stage, "terms"), *other;
  json_object_foreach(terms, term, other) {
    if (strcmp(term, "loss/task") == 0 || strcmp(term, "loss/total") == 0 || val == NULL) continue;
    const double change = number(other, "change"), gain = number(val, "change");
    if (change < IMITATION_CHANGE && gain < VAL_GAIN)
      add_finding(findings, "warning", stage_name,
                  "%s fell by %.0f%% while validation accuracy %s (%+.2f points): the student imitates the teacher "
                  "without getting better at the task",
                  term, -100 * change, gain < 0 ? "fell" : "barely moved", 100 * gain);
  }
}

/* {"stage", "name", "first_step", "last_step", "weights", "terms", "share"} for each stage
 * that ran, and the findings about it. */
static json_t *analyse_stages(db_t *db, int64_t id, const json_t *config, json_t *findings) {
  json_t *stages = json_array();
  json_t *rows = db_select(db,
                           "SELECT stage, stage_name, name, first_step, last_step, start_value, end_value, mean_value "
                           "FROM stage_summary WHERE experiment_id = ?1 ORDER BY stage, name",
                           id, 0);
  json_t *shares = db_select(db,
                             "SELECT w.stage, substr(w.name, 10) AS term, avg(w.value / t.value) AS share "
                             "FROM metrics w JOIN metrics t ON t.experiment_id = w.experiment_id "
                             "AND t.step = w.step AND t.name = 'loss/total' "
                             "WHERE w.experiment_id = ?1 AND w.name LIKE 'weighted/%' AND t.value > 0 "
                             "GROUP BY w.stage, w.name",
                             id, 0);
  size_t index;
  json_t *row;
  json_t *current = NULL;
  json_array_foreach(rows, index, row) {
    int64_t stage = json_integer_value(json_object_get(row, "stage"));
    if (current == NULL || json_integer_value(json_object_get(current, "stage")) != stage) {
      json_t *spec = json_array_get(json_object_get(config, "stages"), (size_t)stage);
      current = json_pack("{s:I, s:O, s:O, s:O, s:{s:O, s:O, s:O, s:O}, s:{}, s:{}}", "stage", (json_int_t)stage,
                          "name", json_object_get(row, "stage_name"), "first_step", json_object_get(row, "first_step"),
                          "last_step", json_object_get(row, "last_step"), "weights", "task",
                          json_object_get(spec, "task_weight"), "distill", json_object_get(spec, "distill_weight"),
                          "feature", json_object_get(spec, "feature_weight"), "adversarial",
                          json_object_get(spec, "adversarial_weight"), "terms", "share");
      json_array_append_new(stages, current);
    }
    const char *name = json_string_value(json_object_get(row, "name"));
    if (strncmp(name, "loss/", 5) != 0) continue;
    double start = number(row, "start_value"), end = number(row, "end_value");
    double change = start != 0 ? (end - start) / fabs(start) : 0;
    json_object_set_new(json_object_get(current, "terms"), name,
                        json_pack("{s:f, s:f, s:f, s:f}", "start", start, "end", end, "mean", number(row, "mean_value"),
                                  "change", change));
  }
  json_array_foreach(shares, index, row) {
    json_t *stage = json_array_get(stages, 0);
    for (size_t i = 0; i < json_array_size(stages); i++)
      if (json_integer_value(json_object_get(json_array_get(stages, i), "stage")) ==
          json_integer_value(json_object_get(row, "stage")))
        stage = json_array_get(stages, i);
    if (stage)
      json_object_set_new(json_object_get(stage, "share"), json_string_value(json_object_get(row, "term")),
                          json_real(number(row, "share")));
  }
  json_decref(rows);
  json_decref(shares);

  add_gradients(db, id, stages);
  add_validation(db, id, stages);
  json_t *stage;
  json_array_foreach(stages, index, stage) find_in_stage(stage, findings);
  return stages;
}

/* Diagnostics of the last stage that has them: a gate that concentrates, a discriminator
 * that wins. */
static void analyse_diagnostics(db_t *db, int64_t id, json_t *findings) {
  json_t *rows = db_select(db,
                           "SELECT name, avg(value) AS mean FROM metrics WHERE experiment_id = ?1 "
                           "AND name IN ('gate/effective_fraction', 'disc/accuracy') "
                           "AND stage = (SELECT max(stage) FROM metrics WHERE experiment_id = ?1) GROUP BY name",
                           id, 0);
  size_t index;
  json_t *row;
  json_array_foreach(rows, index, row) {
    const char *name = json_string_value(json_object_get(row, "name"));
    double mean = number(row, "mean");
    if (strcmp(name, "gate/effective_fraction") == 0 && mean < GATE_CONCENTRATED)
      add_finding(findings, "warning", NULL,
                  "the selective gate puts its weight on %.0f%% of each batch: it concentrates on a few examples",
                  100 * mean);
    if (strcmp(name, "disc/accuracy") == 0 && mean > DISC_WINS)
      add_finding(findings, "info", NULL,
                  "the discriminator tells teacher from student features %.0f%% of the time: the adversarial term "
                  "has not made them alike",
                  100 * mean);
  }
  json_decref(rows);
}

/* A config with what does not change training taken out: the name, the priority, how often
 * it checkpoints and reports gradient norms, how often it may be retried. Two configs equal
 * after this train the same way. */
static json_t *training_part(const json_t *config) {
  static const char *const bookkeeping[] = {"name", "priority", "checkpoint_every", "checkpoint_keep", "max_attempts",
                                            "grad_norm_every"};
  json_t *copy = json_deep_copy(config);
  for (size_t i = 0; i < sizeof bookkeeping / sizeof bookkeeping[0]; i++) json_object_del(copy, bookkeeping[i]);
  return copy;
}

/* The run's matched baseline, by the rule studies use (study_spec_baseline): the run's own
 * config without the teacher and the distillation terms, the same seed and number of steps.
 * Its study's baseline when it is part of one; else the latest succeeded run whose config
 * trains exactly that way. A run of the same student that differs (another length, another
 * seed) is named, never compared: a difference of budget is not an effect of distillation. */
static void compare_with_baseline(db_t *db, int64_t id, const json_t *config, double test, json_t *report,
                                  json_t *findings) {
  json_t *wanted_config = study_spec_baseline(config), *wanted = training_part(wanted_config);
  json_t *candidates = db_select(
      db,
      "SELECT b.id, b.name, b.config, b.planned_epochs, "
      "  (SELECT value FROM evals v WHERE v.experiment_id = b.id AND v.split = 'test' AND v.name = 'accuracy' "
      "     ORDER BY v.epoch DESC LIMIT 1) AS test_accuracy, "
      "  EXISTS (SELECT 1 FROM study_runs mine JOIN study_runs theirs ON theirs.study_id = mine.study_id "
      "            AND theirs.arm = mine.arm || '/baseline' AND theirs.cell = mine.cell AND theirs.seed = mine.seed "
      "           WHERE mine.experiment_id = ?1 AND mine.role = 'arm' AND theirs.experiment_id = b.id) AS in_study "
      "FROM experiments b, experiments me WHERE me.id = ?1 AND b.id != me.id AND b.status = 'succeeded' "
      "AND json_extract(b.config, '$.teacher') IS NULL "
      "AND json_extract(b.config, '$.model') = json_extract(me.config, '$.model') "
      "AND json_extract(b.config, '$.dataset') = json_extract(me.config, '$.dataset') "
      "ORDER BY in_study DESC, b.id DESC LIMIT 500",
      id, 0);
  json_t *matched = NULL, *unmatched = NULL;
  size_t index;
  json_t *candidate;
  json_array_foreach(candidates, index, candidate) {
    json_t *parsed = json_loads(json_string_value(json_object_get(candidate, "config")), 0, NULL);
    json_t *theirs = training_part(parsed);
    if (json_equal(theirs, wanted) && matched == NULL) matched = candidate;
    else if (unmatched == NULL) unmatched = candidate;
    json_decref(theirs);
    json_decref(parsed);
  }
  if (matched) {
    double base = number(matched, "test_accuracy");
    json_object_set_new(report, "baseline",
                        json_pack("{s:O, s:O, s:O, s:o, s:b, s:b}", "id", json_object_get(matched, "id"), "name",
                                  json_object_get(matched, "name"), "test_accuracy",
                                  json_object_get(matched, "test_accuracy"), "gain",
                                  isfinite(base) && isfinite(test) ? json_real(test - base) : json_null(), "matched", 1,
                                  "in_study", (int)json_integer_value(json_object_get(matched, "in_study"))));
    if (isfinite(base) && isfinite(test))
      add_finding(findings, test > base ? "info" : "warning", NULL,
                  "distillation %s test accuracy by %.2f points against its matched baseline, experiment %lld "
                  "(%.2f%%: the same student, data, seed and steps without the teacher); one seed says little: "
                  "a study over seeds says how sure that is",
                  test >= base ? "raised" : "lowered", 100 * fabs(test - base),
                  (long long)json_integer_value(json_object_get(matched, "id")), 100 * base);
  } else {
    json_object_set_new(report, "baseline", json_null());
    json_object_set_new(report, "baseline_config", json_incref(wanted_config));
    if (unmatched)
      add_finding(findings, "info", NULL,
                  "no matched baseline: experiment %lld trains the same student without a teacher but differs in "
                  "more than the teacher (%lld epochs, or another seed or schedule), so it is not compared; submit "
                  "this report's baseline_config, or run a study",
                  (long long)json_integer_value(json_object_get(unmatched, "id")),
                  (long long)json_integer_value(json_object_get(unmatched, "planned_epochs")));
    else
      add_finding(findings, "info", NULL,
                  "no matched baseline yet: submit this report's baseline_config (the same run without the teacher) "
                  "to see what distillation added, or run a study");
  }
  json_decref(candidates);
  json_decref(wanted);
  json_decref(wanted_config);
}

json_t *report_build(db_t *db, int64_t id) {
  json_t *experiment = db_experiment_get(db, id, 1);
  if (experiment == NULL) return NULL;
  json_t *config = json_object_get(experiment, "config");
  json_t *findings = json_array();
  json_t *report = json_pack("{s:I, s:O, s:O, s:O, s:O}", "id", (json_int_t)id, "name",
                             json_object_get(experiment, "name"), "status", json_object_get(experiment, "status"),
                             "error", json_object_get(experiment, "error"), "teacher", json_null());
  json_object_set_new(report, "stages", analyse_stages(db, id, config, findings));
  analyse_diagnostics(db, id, findings);

  json_t *final_rows = db_select(
      db,
      "SELECT (SELECT value FROM evals WHERE experiment_id = ?1 AND split = 'test' AND name = 'accuracy' "
      "        ORDER BY epoch DESC LIMIT 1) AS test_accuracy, "
      "       (SELECT value FROM evals WHERE experiment_id = ?1 AND split = 'train' AND name = 'accuracy' "
      "        ORDER BY epoch DESC LIMIT 1) AS train_accuracy, "
      "       (SELECT max(value) FROM evals WHERE experiment_id = ?1 AND split = 'val' "
      "        AND name = 'accuracy') AS best_val_accuracy, "
      "       (SELECT value FROM evals WHERE experiment_id = ?1 AND split = 'test' AND name = 'agreement' "
      "        ORDER BY epoch DESC LIMIT 1) AS agreement, "
      "       (SELECT value FROM evals WHERE experiment_id = ?1 AND split = 'teacher' "
      "        AND name = 'test/accuracy' LIMIT 1) AS teacher_accuracy",
      id, 0);
  json_t *final = json_incref(json_array_get(final_rows, 0));
  json_decref(final_rows);
  double test = number(final, "test_accuracy"), train = number(final, "train_accuracy");
  json_object_set_new(report, "final", json_pack("{s:O, s:O, s:O, s:O}", "test_accuracy",
                                                 json_object_get(final, "test_accuracy"), "train_accuracy",
                                                 json_object_get(final, "train_accuracy"), "best_val_accuracy",
                                                 json_object_get(final, "best_val_accuracy"), "agreement",
                                                 json_object_get(final, "agreement")));
  if (isfinite(train) && isfinite(test) && train - test > OVERFIT_GAP)
    add_finding(findings, "info", NULL, "train accuracy is %.1f points above test accuracy: it overfits", 100 * (train - test));
  double teacher_accuracy = number(final, "teacher_accuracy");
  if (!json_is_null(json_object_get(experiment, "teacher")) || isfinite(teacher_accuracy))
    json_object_set_new(report, "teacher",
                        json_pack("{s:O, s:O, s:o}", "id", json_object_get(experiment, "teacher"), "test_accuracy",
                                  json_object_get(final, "teacher_accuracy"), "gap",
                                  isfinite(teacher_accuracy) && isfinite(test) ? json_real(teacher_accuracy - test)
                                                                               : json_null()));

  if (json_is_object(json_object_get(config, "teacher"))) /* only a student has a baseline */
    compare_with_baseline(db, id, config, test, report, findings);
  else
    json_object_set_new(report, "baseline", json_null());
  const char *error = json_string_value(json_object_get(experiment, "error"));
  if (error && strstr(error, "diverged"))
    add_finding(findings, "warning", NULL, "%s: lower the learning rate or a loss weight", error);
  json_object_set_new(report, "findings", findings);
  json_decref(final);
  json_decref(experiment);
  return report;
}
