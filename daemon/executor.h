/* executor.h — between the queue and the processes: a run plan, resolved once, and the
 * executors that start it.
 *
 * The scheduler (scheduler.c) decides which experiment runs next and resolves its plan:
 * the stored config parsed once, the teacher's checkpoint filled in and checked, where
 * its checkpoints go, the checkpoint it resumes from, how many attempts it may have. An
 * executor starts a worker for the plan somewhere:
 *   local  — a child process of the daemon (executor_local.c, `mapsaged --executor local`);
 *   slurm  — a batch job on a Slurm cluster (slurm.c, `mapsaged --executor slurm`), whose
 *            worker posts its events over HTTP like any remote worker (docs/slurm.md).
 * Both end a run through the scheduler, which alone writes outcomes. */
#ifndef MAPSAGE_EXECUTOR_H
#define MAPSAGE_EXECUTOR_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef enum { EXECUTOR_LOCAL, EXECUTOR_SLURM } executor_kind_t;

typedef struct {
  int64_t experiment_id;
  char *config_json;           /* what the worker is given: the teacher's checkpoint filled in */
  cfg_experiment_t *config;    /* the same, parsed (resources, epochs, max_attempts) */
  int planned_epochs;          /* all stages: a checkpoint beyond them is refused */
  int max_attempts;            /* starts allowed for a run whose worker dies */
  size_t memory_limit;         /* the worker's --memory-limit in bytes; 0: none */
  char checkpoint_dir[PATH_MAX]; /* <data_dir>/experiments/<id>, created */
  char resume[PATH_MAX];       /* the checked checkpoint it goes on from; "" to start over */
  char resume_refused[PATH_MAX + 256]; /* why the latest checkpoint is not resumed from; "" */
} exec_plan_t;

void exec_plan_free(exec_plan_t *plan);

#endif
