/* fuzz_study.c — libFuzzer target for a study's parsing and expansion (daemon/study_spec.c).
 *
 * Every input is handed to study_spec_expand() as a submitted study. Besides the
 * sanitizers' verdict, it checks what the daemon relies on when it stores the plan:
 * - the errors always serialise, a refusal names at least one error, and the count agrees;
 * - an accepted plan has at most STUDY_MAX_RUNS runs, every link names a run, and a run's
 *   teacher comes before it (study.c stores runs in order and needs the teacher's id);
 * - every run's config is valid as stored (the worker parses it) and keeps its seed;
 * - a baseline link's run trains as many steps as the arm run it is matched to, has no
 *   teacher, and the same seed;
 * - the dry run's answer serialises and counts what it lists.
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "study_spec.h"

#include "fuzz.h"

static cfg_experiment_t parsed;
static cfg_errors_t errors, config_errors;

static void check_errors(int result) {
  json_t *list = cfg_errors_to_json(&errors);
  FUZZ_CHECK(json_is_array(list), "cfg_errors_to_json returned %p", (void *)list);
  char *text = json_dumps(list, JSON_COMPACT);
  FUZZ_CHECK(text != NULL, "the errors do not serialise");
  free(text);
  json_decref(list);
  FUZZ_CHECK((result == 0) == (errors.count == 0), "study_spec_expand returned %d with %d errors", result,
             errors.count);
}

/* The arm run a baseline link is matched to: same arm name before "/baseline", same cell,
 * same seed. */
static const study_run_t *arm_run_of(const study_plan_t *plan, const study_link_t *baseline) {
  size_t length = strlen(baseline->arm) - strlen("/baseline");
  for (int l = 0; l < plan->n_links; l++) {
    const study_link_t *link = &plan->links[l];
    if (link->role == STUDY_ROLE_ARM && strlen(link->arm) == length && strncmp(link->arm, baseline->arm, length) == 0 &&
        json_equal(link->cell, baseline->cell) && plan->runs[link->run].seed == plan->runs[baseline->run].seed)
      return &plan->runs[link->run];
  }
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *spec = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
  if (spec == NULL) return 0; /* the daemon answers malformed JSON before expanding */
  study_plan_t *plan = NULL;
  int result = study_spec_expand(spec, &plan, &errors);
  FUZZ_CHECK(result == 0 || result == -22, "study_spec_expand returned %d", result);
  check_errors(result);
  FUZZ_CHECK((result == 0) == (plan != NULL), "result %d with plan %p", result, (void *)plan);
  if (plan == NULL) {
    json_decref(spec);
    return 0;
  }
  FUZZ_CHECK(plan->n_runs >= 1 && plan->n_runs <= STUDY_MAX_RUNS, "%d runs", plan->n_runs);
  FUZZ_CHECK(plan->n_links >= plan->n_runs, "%d links for %d runs", plan->n_links, plan->n_runs);
  int64_t steps = 0;
  for (int r = 0; r < plan->n_runs; r++) {
    const study_run_t *run = &plan->runs[r];
    FUZZ_CHECK(run->teacher_run < r, "run %d waits for run %d", r, run->teacher_run);
    FUZZ_CHECK(cfg_from_json(run->config, &parsed, &config_errors) == 0, "run %d's config is refused: %s: %s", r,
               config_errors.items[0].path, config_errors.items[0].message);
    FUZZ_CHECK((int64_t)parsed.seed == run->seed, "run %d has seed %lld in its config, %lld in the plan", r,
               (long long)parsed.seed, (long long)run->seed);
    FUZZ_CHECK(study_spec_steps(&parsed) == run->steps, "run %d: %lld steps planned, %lld counted", r,
               (long long)study_spec_steps(&parsed), (long long)run->steps);
    steps += run->steps;
  }
  FUZZ_CHECK(steps == plan->total_steps, "%lld steps in all, %lld counted", (long long)plan->total_steps,
             (long long)steps);
  for (int l = 0; l < plan->n_links; l++) {
    const study_link_t *link = &plan->links[l];
    FUZZ_CHECK(link->run >= 0 && link->run < plan->n_runs, "link %d names run %d", l, link->run);
    FUZZ_CHECK(json_is_object(link->cell), "link %d has no cell", l);
    if (link->role != STUDY_ROLE_BASELINE) continue;
    const study_run_t *baseline = &plan->runs[link->run], *arm = arm_run_of(plan, link);
    FUZZ_CHECK(arm != NULL, "baseline link %d (%s) matches no arm run", l, link->arm);
    FUZZ_CHECK(arm->steps == baseline->steps, "%s: %lld steps against the arm's %lld", link->arm,
               (long long)baseline->steps, (long long)arm->steps);
    FUZZ_CHECK(json_object_get(baseline->config, "teacher") == NULL, "%s has a teacher", link->arm);
  }
  json_t *dry = study_plan_to_json(plan);
  char *text = json_dumps(dry, JSON_COMPACT);
  FUZZ_CHECK(text != NULL, "the dry run does not serialise");
  FUZZ_CHECK(json_integer_value(json_object_get(dry, "count")) == plan->n_runs, "the dry run counts otherwise");
  free(text);
  json_decref(dry);
  study_plan_free(plan);
  json_decref(spec);
  return 0;
}
