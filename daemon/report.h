/* report.h — GET /api/experiments/{id}/report: the run's analysis, for a researcher who
 * asks "did distillation help, and if not, why?". Per stage, how each loss term moved and
 * what share of the total each weighted term took; the run against its teacher and its
 * matched baseline (the same student, data, seed and steps without the teacher: its
 * study's, or a run that trains exactly that way); and
 * findings in words: a term that dominates, a task loss that stalls while imitation
 * improves (the symptom in the users' report), a gate that concentrates, a discriminator
 * that wins, overfitting, divergence. */
#ifndef MAPSAGE_REPORT_H
#define MAPSAGE_REPORT_H

#include <jansson.h>

#include "db.h"

/* The report, or NULL when there is no such experiment. The caller owns the reference. */
json_t *report_build(db_t *db, int64_t id);

#endif
