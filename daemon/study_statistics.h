/* study_statistics.h — what a study's runs say, computed by the daemon each time one of them
 * ends: per arm (and grid cell) and outcome, n, mean, sd and 95% interval; per distilling
 * arm against its matched baseline, the paired difference over seeds with its interval, a
 * paired t-test and the Holm–Bonferroni adjusted p over the study's comparisons; each
 * distilling arm's mean share of the gradient per loss term and cosine with the task's, with
 * findings (a term that dominates, objectives that conflict); for a grid, the best cell
 * (chosen on validation, never on test) and each axis's marginal means.
 *
 * Only runs that succeeded and were not stopped early count; a pair counts when both sides
 * count. A comparison whose two sides trained different numbers of steps is marked
 * unmatched and gets no p-value: a difference of budget is not an effect of distillation. */
#ifndef MAPSAGE_STUDY_STATISTICS_H
#define MAPSAGE_STUDY_STATISTICS_H

#include <stdint.h>

#include <jansson.h>

#include "db.h"

/* What the statistics hold changes with the daemon: a study whose stored statistics carry
 * another version is computed again at start-up (study_refresh_all). */
#define STUDY_STATISTICS_VERSION 2

/* The outcomes, by the names the API, the views and the dashboard use. */
typedef enum {
  OUTCOME_TEST_ACCURACY,      /* final test accuracy */
  OUTCOME_BEST_VAL_ACCURACY,  /* best validation accuracy over the epochs */
  OUTCOME_TEST_LOSS,          /* final test loss */
  OUTCOME_AGREEMENT,          /* final teacher–student top-1 agreement on test (distilling runs) */
  OUTCOME_WALL_TIME,          /* seconds from the latest attempt's start to the end */
  OUTCOME_COUNT
} study_outcome_t;
extern const char *const study_outcome_names[OUTCOME_COUNT];

/* {"version", "arms": […], "comparisons": […], "grid": […], "findings": […]} for the study, from the database as it is
 * now; NULL when the database failed. The caller owns the reference. */
json_t *study_statistics_compute(db_t *db, int64_t study_id);

/* Rewrites the study's rows of study_arm_statistics and study_comparison_statistics from
 * `statistics` (study_statistics_compute's answer). Inside the caller's transaction. */
int study_statistics_store(db_t *db, int64_t study_id, const json_t *statistics);

#endif
