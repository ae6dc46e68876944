/* test_study_spec.c — a study's expansion: merge patches (RFC 7386's own examples), config
 * paths, grid and random cells, seeds, the study's teacher, matched baselines (same steps,
 * shared when equal, distinct when budgets differ), and every validation error with its
 * path. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "study_spec.h"

/* A tiny synthetic student; arms patch it. */
#define BASE                                                                                          \
  "\"base\": {\"dataset\": {\"name\": \"synthetic\", \"train_size\": 512, \"val_size\": 64},"         \
  "  \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 16, \"name\": \"fc1\"}, {\"type\": \"relu\"}," \
  "                          {\"type\": \"linear\", \"out\": 10}]},"                                  \
  "  \"batch_size\": 64, \"stages\": [{\"name\": \"main\", \"epochs\": 3}]}"
#define TEACHER_CONFIG                                                                                \
  "\"teacher\": {\"config\": {\"dataset\": {\"name\": \"synthetic\", \"train_size\": 512, \"val_size\": 64}," \
  "  \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 32, \"name\": \"fc1\"}, {\"type\": \"relu\"},"  \
  "                          {\"type\": \"linear\", \"out\": 10}]}, \"epochs\": 2}"
#define KD_ARM                                                                                        \
  "\"kd\": {\"temperature\": {\"schedule\": \"constant\", \"start\": 4},"                             \
  "        \"stages\": [{\"name\": \"main\", \"epochs\": 3, \"task_weight\": 0.7, \"distill_weight\": 0.3}]}"

static json_t *parse(const char *text) {
  json_error_t error;
  json_t *value = json_loads(text, 0, &error);
  if (value == NULL) fprintf(stderr, "test JSON: %s at %d:%d\n", error.text, error.line, error.column);
  return value;
}

/* Expands `text`; returns the plan (NULL when invalid, the errors in `errors`). */
static study_plan_t *expand(const char *text, cfg_errors_t *errors) {
  json_t *spec = parse(text);
  study_plan_t *plan = NULL;
  int result = study_spec_expand(spec, &plan, errors);
  CHECK((result == 0) == (plan != NULL));
  json_decref(spec);
  return plan;
}

/* The error at `path`, or NULL. */
static const char *error_at(const cfg_errors_t *errors, const char *path) {
  for (int i = 0; i < errors->count && i < CFG_MAX_ERRORS; i++)
    if (strcmp(errors->items[i].path, path) == 0) return errors->items[i].message;
  for (int i = 0; i < errors->count && i < CFG_MAX_ERRORS; i++)
    fprintf(stderr, "  (have %s: %s)\n", errors->items[i].path, errors->items[i].message);
  return NULL;
}

static void check_invalid(const char *text, const char *path, const char *needle) {
  cfg_errors_t errors;
  study_plan_t *plan = expand(text, &errors);
  CHECK(plan == NULL);
  const char *message = error_at(&errors, path);
  if (message == NULL) fprintf(stderr, "expected an error at \"%s\" for %s\n", path, text);
  CHECK_CONTAINS(message, needle);
  study_plan_free(plan);
}

// ---------------------------------------------------------------------------------------

/* RFC 7386, appendix A: every example. */
static void test_merge_patch(void) {
  static const char *const cases[][3] = {
      {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
      {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
      {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
      {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
      {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
      {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
      {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
      {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
      {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
      {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
      {"{\"a\":\"foo\"}", "null", "null"},
      {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
      {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
      {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
      {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_t *target = json_loads(cases[i][0], JSON_DECODE_ANY, NULL);
    json_t *patch = json_loads(cases[i][1], JSON_DECODE_ANY, NULL);
    json_t *expected = json_loads(cases[i][2], JSON_DECODE_ANY, NULL);
    json_t *result = study_spec_merge_patch(target, patch);
    if (!json_equal(result, expected)) fprintf(stderr, "RFC 7386 case %zu: %s + %s\n", i, cases[i][0], cases[i][1]);
    CHECK(json_equal(result, expected));
    json_decref(result);
    json_decref(patch);
    json_decref(expected);
  }
}

static void test_set_path(void) {
  json_t *config = parse("{\"stages\": [{\"epochs\": 1}, {\"epochs\": 2}]}");
  char why[200];
  json_t *value = json_real(0.3);
  CHECK_INT(0, study_spec_set_path(config, "stages[1].distill_weight", value, why, sizeof why));
  CHECK_NEAR(0.3, json_real_value(json_object_get(json_array_get(json_object_get(config, "stages"), 1),
                                                  "distill_weight")), 0);
  CHECK_INT(0, study_spec_set_path(config, "temperature.start", value, why, sizeof why)); /* created */
  CHECK(json_is_real(json_object_get(json_object_get(config, "temperature"), "start")));
  CHECK_INT(-EINVAL, study_spec_set_path(config, "stages[2].epochs", value, why, sizeof why));
  CHECK_CONTAINS(why, "2 items");
  CHECK_INT(-EINVAL, study_spec_set_path(config, "features[0].student", value, why, sizeof why));
  CHECK_CONTAINS(why, "no list");
  CHECK_INT(-EINVAL, study_spec_set_path(config, "a..b", value, why, sizeof why));
  CHECK_INT(-EINVAL, study_spec_set_path(config, "stages[x]", value, why, sizeof why));
  CHECK_INT(-EINVAL, study_spec_set_path(config, "", value, why, sizeof why));
  json_decref(value);
  json_decref(config);
}

/* Arms × cells × seeds, seed by seed; the grid's last path varies fastest. */
static void test_grid(void) {
  cfg_errors_t errors;
  study_plan_t *plan = expand("{\"name\": \"g\", \"seeds\": [7, 9], " BASE ", \"arms\": {\"a\": {}, \"b\": "
                              "{\"optimizer\": {\"type\": \"adam\"}}}, \"grid\": {\"optimizer.lr\": [0.01, 0.1], "
                              "\"batch_size\": [32, 64, 128]}}",
                              &errors);
  CHECK(plan != NULL);
  if (plan == NULL) return;
  CHECK_INT(2 * 6 * 2, plan->n_runs); /* no teacher: no baselines */
  CHECK_INT(plan->n_runs, plan->n_links);
  CHECK_INT(2, plan->n_arms);
  CHECK_INT(7, plan->runs[0].seed);
  CHECK_INT(9, plan->runs[12].seed);
  const json_t *cell = plan->links[1].cell;
  CHECK_NEAR(0.01, json_number_value(json_object_get(cell, "optimizer.lr")), 1e-12);
  CHECK_INT(64, json_integer_value(json_object_get(cell, "batch_size")));
  /* The cell's values are in the run's config, the seed too. */
  const json_t *config = plan->runs[5].config;
  CHECK_NEAR(0.1, json_number_value(json_object_get(json_object_get(config, "optimizer"), "lr")), 1e-12);
  CHECK_INT(128, json_integer_value(json_object_get(config, "batch_size")));
  CHECK_INT(7, json_integer_value(json_object_get(config, "seed")));
  CHECK_STR("a", plan->links[5].arm);
  CHECK_STR("b", plan->links[6].arm);
  CHECK_STR("adam", json_string_value(json_object_get(json_object_get(plan->runs[6].config, "optimizer"), "type")));
  /* Steps: (512 − 64) examples in batches of 128 = 4 batches × 3 epochs. */
  CHECK_INT(12, plan->runs[5].steps);
  int64_t total = 0;
  for (int i = 0; i < plan->n_runs; i++) total += plan->runs[i].steps;
  CHECK_INT(total, plan->total_steps);
  json_t *dry = study_plan_to_json(plan);
  CHECK_INT(24, json_integer_value(json_object_get(dry, "count")));
  CHECK_INT(total, json_integer_value(json_object_get(dry, "steps")));
  CHECK_INT(24, json_array_size(json_object_get(dry, "runs")));
  json_decref(dry);
  study_plan_free(plan);
}

/* Draws are reproducible from random.seed, inside their ranges, and rounded. */
static void test_random(void) {
  const char *text = "{\"seeds\": 1, " BASE ", \"random\": {\"count\": 20, \"seed\": 3, \"params\": {"
                     "\"optimizer.lr\": {\"log_uniform\": [0.001, 0.1]}, \"optimizer.momentum\": {\"uniform\": "
                     "[0.5, 0.9]}, \"batch_size\": {\"choice\": [32, 64]}}}}";
  cfg_errors_t errors;
  study_plan_t *first = expand(text, &errors), *second = expand(text, &errors);
  CHECK(first != NULL && second != NULL);
  if (first == NULL || second == NULL) return;
  CHECK_INT(20, first->n_runs);
  int choices[2] = {0, 0}, distinct_lr = 0;
  double previous_lr = -1;
  for (int i = 0; i < first->n_runs; i++) {
    const json_t *cell = first->links[i].cell;
    CHECK(json_equal(cell, second->links[i].cell));
    double lr = json_number_value(json_object_get(cell, "optimizer.lr"));
    double momentum = json_number_value(json_object_get(cell, "optimizer.momentum"));
    CHECK(lr >= 0.001 && lr <= 0.1);
    CHECK(momentum >= 0.5 && momentum <= 0.9);
    distinct_lr += lr != previous_lr;
    previous_lr = lr;
    int batch = (int)json_integer_value(json_object_get(cell, "batch_size"));
    CHECK(batch == 32 || batch == 64);
    choices[batch == 64]++;
    char text_value[64];
    snprintf(text_value, sizeof text_value, "%.4g", lr);
    CHECK_NEAR(strtod(text_value, NULL), lr, 1e-15); /* four significant digits */
  }
  CHECK(distinct_lr > 15);
  CHECK(choices[0] > 0 && choices[1] > 0);
  study_plan_free(first);
  study_plan_free(second);
}

/* A teacher the study trains, per seed; each distilling arm with its matched baseline; two
 * arms with the same budget share one baseline run per seed; an arm with a longer plan gets
 * its own, with its own number of steps. */
static void test_teacher_and_baselines(void) {
  cfg_errors_t errors;
  study_plan_t *plan = expand(
      "{\"name\": \"kd\", \"seeds\": 2, " BASE ", " TEACHER_CONFIG ", \"per_seed\": true}, \"arms\": {" KD_ARM ", "
      "\"kd-features\": {\"temperature\": {\"schedule\": \"constant\", \"start\": 2}, \"features\": [{\"student\": "
      "\"fc1\", \"teacher\": \"fc1\"}], \"stages\": [{\"name\": \"main\", \"epochs\": 3, \"task_weight\": 0.6, "
      "\"distill_weight\": 0.3, \"feature_weight\": 0.1}]}, "
      "\"kd-long\": {\"temperature\": {\"schedule\": \"constant\", \"start\": 4}, \"stages\": [{\"name\": \"task\", "
      "\"epochs\": 2}, {\"name\": \"main\", \"epochs\": 3, \"task_weight\": 0.7, \"distill_weight\": 0.3}]}, "
      "\"plain\": {}}}",
      &errors);
  CHECK(plan != NULL);
  if (plan == NULL) {
    error_at(&errors, "?");
    return;
  }
  /* Per seed: teacher, kd, baseline-1 (shared with kd-features), kd-features, kd-long,
   * baseline-2, plain. */
  CHECK_INT(2 * 7, plan->n_runs);
  int teachers = 0, baselines = 0, arms = 0;
  for (int i = 0; i < plan->n_runs; i++) {
    const study_run_t *run = &plan->runs[i];
    if (run->teacher_run >= 0) {
      CHECK(run->distills);
      CHECK_INT(run->seed, plan->runs[run->teacher_run].seed); /* its own seed's teacher */
      CHECK(run->teacher_run < i);
    }
  }
  for (int l = 0; l < plan->n_links; l++) {
    const study_link_t *link = &plan->links[l];
    teachers += link->role == STUDY_ROLE_TEACHER;
    baselines += link->role == STUDY_ROLE_BASELINE;
    arms += link->role == STUDY_ROLE_ARM;
  }
  CHECK_INT(2, teachers);
  CHECK_INT(2 * 4, arms);
  CHECK_INT(2 * 3, baselines); /* a link per distilling arm; runs: two per seed */
  /* Each baseline link: the arm's own steps, seed, student and optimizer, no teacher. */
  int baseline_runs[64], n_baseline_runs = 0;
  for (int l = 0; l < plan->n_links; l++) {
    const study_link_t *link = &plan->links[l];
    if (link->role != STUDY_ROLE_BASELINE) continue;
    char arm_name[CFG_TITLE_MAX];
    snprintf(arm_name, sizeof arm_name, "%.*s", (int)(strlen(link->arm) - strlen("/baseline")), link->arm);
    const study_run_t *baseline = &plan->runs[link->run];
    const study_run_t *arm = NULL;
    for (int k = 0; k < plan->n_links; k++)
      if (plan->links[k].role == STUDY_ROLE_ARM && strcmp(plan->links[k].arm, arm_name) == 0 &&
          plan->runs[plan->links[k].run].seed == baseline->seed)
        arm = &plan->runs[plan->links[k].run];
    CHECK(arm != NULL);
    if (arm == NULL) continue;
    CHECK_INT(arm->steps, baseline->steps);
    CHECK(json_object_get(baseline->config, "teacher") == NULL);
    CHECK(json_object_get(baseline->config, "temperature") == NULL);
    CHECK(json_object_get(baseline->config, "features") == NULL);
    CHECK(json_equal(json_object_get(arm->config, "model"), json_object_get(baseline->config, "model")));
    CHECK(json_equal(json_object_get(arm->config, "optimizer"), json_object_get(baseline->config, "optimizer")));
    CHECK(json_equal(json_object_get(arm->config, "dataset"), json_object_get(baseline->config, "dataset")));
    CHECK_INT(json_integer_value(json_object_get(arm->config, "seed")),
              json_integer_value(json_object_get(baseline->config, "seed")));
    size_t s;
    json_t *stage;
    json_array_foreach(json_object_get(baseline->config, "stages"), s, stage) {
      CHECK_NEAR(1.0, json_number_value(json_object_get(stage, "task_weight")), 0);
      CHECK_NEAR(0.0, json_number_value(json_object_get(stage, "distill_weight")), 0);
      CHECK_NEAR(0.0, json_number_value(json_object_get(stage, "feature_weight")), 0);
    }
    int seen = 0;
    for (int k = 0; k < n_baseline_runs; k++) seen |= baseline_runs[k] == link->run;
    if (!seen) baseline_runs[n_baseline_runs++] = link->run;
  }
  CHECK_INT(4, n_baseline_runs); /* two distinct baselines × two seeds */
  CHECK_STR("kd/baseline-1", plan->runs[2].name);
  study_plan_free(plan);
}

/* Baselines that train the same way share a run, however their stages are split and named:
 * kd-progressive's (3 task-only epochs, then 2 of distillation) and a one-stage arm's. */
static void test_baselines_of_equal_training_are_one_run(void) {
  cfg_errors_t errors;
  study_plan_t *plan = expand(
      "{\"seeds\": 1, " BASE ", \"teacher\": {\"experiment\": 4}, \"arms\": {"
      "\"one\": {\"temperature\": {\"schedule\": \"constant\", \"start\": 4}, \"stages\": [{\"name\": \"all\", "
      "\"epochs\": 5, \"task_weight\": 0.7, \"distill_weight\": 0.3}]}, "
      "\"two\": {\"temperature\": {\"schedule\": \"constant\", \"start\": 4}, \"stages\": [{\"name\": \"task\", "
      "\"epochs\": 3}, {\"name\": \"kd\", \"epochs\": 2, \"task_weight\": 0.7, \"distill_weight\": 0.3}]}, "
      "\"slower\": {\"temperature\": {\"schedule\": \"constant\", \"start\": 4}, \"stages\": [{\"epochs\": 3}, "
      "{\"epochs\": 2, \"lr\": 0.01, \"distill_weight\": 0.3}]}}}",
      &errors);
  CHECK(plan != NULL);
  if (plan == NULL) return;
  /* one, its baseline (shared by two), two, slower, its own baseline (another lr). */
  CHECK_INT(5, plan->n_runs);
  int baseline_of_one = -1, baseline_of_two = -1, baseline_of_slower = -1;
  for (int l = 0; l < plan->n_links; l++) {
    if (strcmp(plan->links[l].arm, "one/baseline") == 0) baseline_of_one = plan->links[l].run;
    if (strcmp(plan->links[l].arm, "two/baseline") == 0) baseline_of_two = plan->links[l].run;
    if (strcmp(plan->links[l].arm, "slower/baseline") == 0) baseline_of_slower = plan->links[l].run;
  }
  CHECK(baseline_of_one >= 0 && baseline_of_slower >= 0);
  CHECK_INT(baseline_of_one, baseline_of_two);
  CHECK(baseline_of_slower != baseline_of_one);
  study_plan_free(plan);
}

/* A study's teacher given as an existing experiment: every distilling run names it. */
static void test_existing_teacher(void) {
  cfg_errors_t errors;
  study_plan_t *plan = expand("{\"seeds\": 2, " BASE ", \"teacher\": {\"experiment\": 12}, \"arms\": {" KD_ARM "}}",
                              &errors);
  CHECK(plan != NULL);
  if (plan == NULL) return;
  CHECK_INT(12, plan->teacher_experiment);
  CHECK_INT(4, plan->n_runs); /* kd and its baseline per seed */
  CHECK_INT(12, json_integer_value(json_object_get(json_object_get(plan->runs[0].config, "teacher"), "experiment")));
  CHECK_INT(-1, plan->runs[0].teacher_run);
  study_plan_free(plan);
}

static void test_errors(void) {
  check_invalid("[1]", "", "JSON object");
  check_invalid("{\"arms\": {}}", "base", "is required");
  check_invalid("{" BASE ", \"bogus\": 1}", "bogus", "is not a field of a study");
  check_invalid("{" BASE ", \"arms\": {}}", "arms", "1 to 64");
  check_invalid("{" BASE ", \"arms\": {\"a\": 3}}", "arms.a", "merge patch");
  check_invalid("{" BASE ", \"arms\": {\"a/b\": {}}}", "arms.a/b", "no '/'");
  check_invalid("{" BASE ", \"arms\": {\"a\": {\"teacher\": {\"experiment\": 1}}}}", "arms.a", "once");
  check_invalid("{" BASE ", \"arms\": {\"a\": {\"stages\": [{\"epochs\": 0}]}}}", "arms.a.stages[0].epochs",
                "between 1 and");
  check_invalid("{" BASE ", \"arms\": {" KD_ARM "}}", "arms.kd", "no \"teacher\"");
  check_invalid("{" BASE ", \"seeds\": 0}", "seeds", "count from 1");
  check_invalid("{" BASE ", \"seeds\": [1, 1]}", "seeds[1]", "already");
  check_invalid("{" BASE ", \"seeds\": [-1]}", "seeds[0]", "non-negative");
  check_invalid("{" BASE ", \"grid\": {\"optimizer.lr\": []}}", "grid.optimizer.lr", "1 to 100");
  check_invalid("{" BASE ", \"grid\": {\"a..b\": [1]}}", "grid.a..b", "config path");
  check_invalid("{" BASE ", \"grid\": {\"stages[4].epochs\": [1]}}", "grid.stages[4].epochs", "1 items");
  check_invalid("{" BASE ", \"grid\": {\"optimizer.lr\": [0.1, -1]}}", "arms.base.optimizer.lr", "optimizer.lr=-1");
  check_invalid("{" BASE ", \"random\": {\"count\": 3, \"params\": {\"optimizer.lr\": {\"log_uniform\": [0, 1]}}}}",
                "random.params.optimizer.lr", "above 0");
  check_invalid("{" BASE ", \"random\": {\"count\": 3, \"params\": {\"optimizer.lr\": {\"normal\": [0, 1]}}}}",
                "random.params.optimizer.lr", "uniform");
  check_invalid("{" BASE ", \"random\": {\"count\": 0, \"params\": {\"optimizer.lr\": {\"uniform\": [0, 1]}}}}",
                "random.count", "1 to 1000");
  check_invalid("{" BASE ", \"seeds\": 100, \"grid\": {\"optimizer.lr\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, "
                "13, 14, 15, 16, 17, 18, 19, 20, 21]}}",
                "", "more than the 2000");
  check_invalid("{" BASE ", \"teacher\": {\"experiment\": 1, \"checkpoint\": \"x\"}}", "teacher", "exactly one");
  check_invalid("{" BASE ", \"teacher\": {\"config\": {\"epochs\": 0}}}", "teacher.config.epochs", "between 1");
  check_invalid("{" BASE ", \"teacher\": {\"experiment\": 1, \"per_seed\": true}}", "teacher.per_seed",
                "only with");
  check_invalid("{" BASE ", \"early_stopping\": {\"rule\": \"asha\"}}", "early_stopping.rule", "median");
  check_invalid("{" BASE ", \"baselines\": 1}", "baselines", "true");
  /* A student that cannot align with the study's teacher is refused at submission. */
  check_invalid("{" BASE ", " TEACHER_CONFIG "}, \"arms\": {\"f\": {\"features\": [{\"student\": \"fc1\", "
                "\"teacher\": \"nope\"}], \"stages\": [{\"epochs\": 1, \"feature_weight\": 0.5}]}}}",
                "arms.f.features[0].teacher", "no layer named");
}

int main(void) {
  test_merge_patch();
  test_set_path();
  test_grid();
  test_random();
  test_teacher_and_baselines();
  test_existing_teacher();
  test_baselines_of_equal_training_are_one_run();
  test_errors();
  return check_summary();
}
