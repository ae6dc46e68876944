/* study.h — studies in the daemon: stored from a plan (study_spec.h) in one transaction,
 * followed as their runs change, shown by the API and their streams.
 *
 * A study's life:  queued ──▶ running ──▶ succeeded | failed | cancelled
 * It runs once one of its runs has started, and ends when every run has ended: succeeded
 * when none failed, failed (with the statistics over the rest) when one did, cancelled
 * when a person cancelled it. Runs stopped early by the median rule are neither: they are
 * shown, and left out of the statistics. The statistics (study_statistics.h) are
 * recomputed each time one of the study's runs ends, so they grow as the study runs.
 *
 * The runs are ordinary experiments: the scheduler runs them and knows nothing of studies.
 * It tells the daemon when an experiment's status changed or one of its epochs was stored;
 * study_observe() turns that into the study's status, statistics, early stopping and
 * stream events. */
#ifndef MAPSAGE_STUDY_H
#define MAPSAGE_STUDY_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "scheduler.h"
#include "sse.h"
#include "study_spec.h"

/* Stores the study and its experiments, teachers first so that students can wait for them.
 * Returns 0 with its id, or a negative errno (nothing is stored then). */
int study_create(db_t *db, const study_plan_t *plan, const json_t *spec, int64_t *id);

/* GET /api/studies/{id} as JSON text the caller frees: the study, its status counts, its
 * runs and its statistics. -ENOENT when there is none. */
int study_text(db_t *db, int64_t id, char **text, size_t *length);

/* The study as its stream's "study" events show it (the list's fields), as JSON text the
 * caller frees, and whether it has ended (every run ended). -ENOENT when there is none. */
int study_state_text(db_t *db, int64_t id, char **text, int *ended);

/* GET /api/studies: newest first, `limit` of them below id `before` (0: from the newest). */
/* `archived`: 0 those not archived, 1 those archived, 2 all. */
char *study_list_text(db_t *db, int64_t before, int limit, int archived, size_t *length);

/* What the scheduler says about an experiment (its status changed, or an epoch ended), for
 * the study it belongs to, if any: one indexed look-up when it belongs to none. */
void study_observe(db_t *db, sse_hub_t *hub, sched_t *sched, int64_t experiment_id, sched_observation_t what);

/* Cancels the study: queued runs at once, running ones asked to stop. Returns 0 (with how
 * many runs it cancelled or stopped), -ENOENT, or -EALREADY when the study has ended. */
int study_cancel(db_t *db, sse_hub_t *hub, sched_t *sched, int64_t id, int *cancelled);

/* At start-up: brings every unfinished study's status and statistics up to date with its
 * runs (a daemon that died between a run's end and its study's update), and computes
 * again the statistics of a study that an older daemon computed. */
void study_refresh_all(db_t *db);

#endif
