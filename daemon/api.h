/* api.h — the HTTP API's handlers and route table (docs/api.md is their contract). */
#ifndef MAPSAGE_API_H
#define MAPSAGE_API_H

#include <stddef.h>

#include "config.h"
#include "dataset.h"
#include "db.h"
#include "http.h"
#include "scheduler.h"
#include "sql.h"
#include "sse.h"

/* What every handler reaches through http_app(). */
typedef struct {
  db_t *db;
  sched_t *sched;
  sse_hub_t *hub;
  sql_t *sql;
  const char *data_dir;  /* checkpoints given as teachers must be inside it */
  double started_at;   /* util_monotonic() at start */
  size_t max_worker_memory;     /* --max-worker-memory in bytes; 0 = no check */
  size_t teacher_cache_budget;  /* the workers' teacher cache budget (MAPSAGE_TEACHER_CACHE_MB) */
  dataset_registry_t *datasets; /* the dataset registry (dataset.h); NULL: built-in datasets only */
} api_t;

extern const http_route_t api_routes[];
extern const size_t api_route_count;

/* --- shared by the handlers of api.c and api_study.c ----------------------------------- */

/* Parses an optional integer query parameter in [minimum, maximum]. Returns 0 when it is
 * absent or fine, 1 when it is not (the 400 is answered: the handler returns 0), or a
 * negative errno when even that answer failed (the handler returns it). */
int api_query_integer(http_request_t *request, const char *key, long long minimum, long long maximum,
                      long long *out);
/* Once the scheduler has stopped (the daemon is shutting down), what needs it waits. */
int api_respond_stopping(http_request_t *request);
/* What only the daemon can check of a config's teacher (see api.c); errors are added. */
void api_check_teacher(api_t *api, cfg_experiment_t *config, cfg_errors_t *errors);
/* Refuses a run whose memory estimate (cfg_memory_estimate) exceeds --max-worker-memory: one
 * error at `prefix` + the path of the largest share. `teacher` is the teacher's config when
 * the caller has it (a study's trained teacher); NULL looks up an experiment teacher in the
 * database, and leaves a checkpoint teacher's share out (the estimate says so). */
void api_check_memory(api_t *api, const cfg_experiment_t *config, const cfg_experiment_t *teacher,
                      const char *prefix, cfg_errors_t *errors);
/* The teacher's config for a run whose teacher is an experiment (0), else -ENOENT. */
int api_teacher_config(db_t *db, const cfg_experiment_t *config, cfg_experiment_t *out);
/* MAPSAGE_TEACHER_CACHE_MB as the workers will read it, in bytes. */
size_t api_teacher_cache_budget(void);

/* Studies (api_study.c; docs/api.md). */
int api_submit_study(http_request_t *request);
int api_list_studies(http_request_t *request);
int api_get_study(http_request_t *request);
int api_cancel_study(http_request_t *request);
int api_get_study_stream(http_request_t *request);
int api_get_study_curves(http_request_t *request);

#endif
