/* study_spec.h — a study as a researcher submits it (POST /api/studies): parsed, validated
 * and expanded into the experiments it stands for. Pure: no database, no I/O; the daemon
 * stores the plan (study.c), the API answers a dry run with it.
 *
 * A study is a base config, named arms (JSON merge patches, RFC 7386, on the base), an
 * optional grid (config path → values, every combination) and random search (config path →
 * distribution, `count` draws from its own seed), and seeds. Each arm × cell × seed is one
 * run. Every arm that learns from the teacher gets a matched baseline per cell and seed:
 * the arm's own config without the teacher and the distillation terms (see
 * study_spec_baseline), so the two sides have the same student, data, split, seed,
 * optimizer, schedules and number of steps by construction. Baselines that come out the
 * same for several arms are one run, linked to each arm it serves. The teacher is an
 * existing experiment or checkpoint, or a config the study trains once or once per seed. */
#ifndef MAPSAGE_STUDY_SPEC_H
#define MAPSAGE_STUDY_SPEC_H

#include <stdint.h>

#include <jansson.h>

#include "config.h"

#define STUDY_MAX_RUNS 2000   /* experiments one study may create */
#define STUDY_MAX_ARMS 64
#define STUDY_MAX_SEEDS 100
#define STUDY_MAX_AXES 6      /* grid and random paths together */

typedef enum { STUDY_ROLE_TEACHER, STUDY_ROLE_ARM, STUDY_ROLE_BASELINE } study_role_t;
const char *study_role_name(study_role_t role);

/* One experiment the study creates. */
typedef struct {
  json_t *config;          /* as it will be stored: every default filled in (cfg_to_json) */
  char name[CFG_TITLE_MAX];
  int64_t seed;
  int teacher_run;         /* index of the study's teacher run it waits for, or -1 */
  int64_t steps;           /* optimizer steps it plans */
  int distills;            /* it learns from the teacher */
} study_run_t;

/* One row of study_runs: a run in the role it plays for one arm and cell. A baseline serving
 * several arms has a link for each. */
typedef struct {
  int run;                 /* index into runs */
  study_role_t role;
  char arm[CFG_TITLE_MAX]; /* the arm; "<arm>/baseline" for its matched baseline; "teacher" */
  json_t *cell;            /* {path: value, …} of the arm's cell; {} without grid or random */
} study_link_t;

typedef struct {
  char name[CFG_TITLE_MAX];
  int n_runs, n_links;
  study_run_t *runs;
  study_link_t *links;
  int n_arms;
  char arms[STUDY_MAX_ARMS][CFG_TITLE_MAX]; /* in the order submitted */
  int n_seeds;
  int64_t total_steps;
  int64_t teacher_experiment;   /* the study's teacher is this existing experiment; 0 if not */
  struct {
    int enabled;
    int min_epochs;             /* no run is stopped before it has this many evaluations */
  } early_stopping;
} study_plan_t;

/* Validates `spec` and expands it. Returns 0 with the plan (free it with study_plan_free),
 * or -EINVAL with every problem in `errors`, each with its JSON path in the study
 * ("arms.kd-weighted.stages[0].epochs", "grid.temperature.start[1]"), or -ENOMEM. What
 * needs the database (an existing teacher) is checked by the caller. */
int study_spec_expand(const json_t *spec, study_plan_t **out, cfg_errors_t *errors);
void study_plan_free(study_plan_t *plan);

/* The matched baseline of a distilling config (both in cfg_to_json's form): the same config
 * without teacher, temperature, feature pairs and discriminator, every stage training on the
 * task loss alone at full weight. NULL when out of memory. */
json_t *study_spec_baseline(const json_t *config);

/* RFC 7386: `patch` applied to `target` (a reference it takes; may be NULL); returns the
 * result as a new reference. Objects merge key by key, null deletes, anything else
 * (arrays included) replaces. */
json_t *study_spec_merge_patch(json_t *target, const json_t *patch);

/* Sets `value` (not taken) at a config path like "stages[1].distill_weight" inside `root`,
 * creating missing objects (a list item must exist). Returns 0, or -EINVAL with `why`. */
int study_spec_set_path(json_t *root, const char *path, json_t *value, char *why, size_t why_size);

/* Optimizer steps `config` plans: its epochs times the batches of an epoch. */
int64_t study_spec_steps(const cfg_experiment_t *config);

/* The dry run's answer: the runs, their count and their cost in steps. */
json_t *study_plan_to_json(const study_plan_t *plan);

#endif
