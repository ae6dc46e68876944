/* study_curves.h — GET /api/studies/{id}/curves: each arm's mean curve with its 95% band,
 * over the seeds, for the dashboard's study page. Per-epoch evaluations ("val/accuracy")
 * are averaged epoch by epoch; per-step metrics ("loss/task") in buckets of steps, so that a
 * study of hundreds of runs of thousands of steps answers in at most `points` points per
 * arm. Runs stopped early are left out, as they are from the statistics. */
#ifndef MAPSAGE_STUDY_CURVES_H
#define MAPSAGE_STUDY_CURVES_H

#include <stdint.h>

#include <jansson.h>

#include "db.h"

#define STUDY_CURVES_MAX_NAMES 8

/* {name: {"x": "epoch"|"step", "series": [{"arm", "cell", "role", "x": […], "mean": […],
 * "low": […], "high": […], "n": […]}]}} for the comma-separated `names`; NULL when the
 * database failed. The caller owns the reference. */
json_t *study_curves(db_t *db, int64_t study_id, const char *names, int points);

#endif
