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

/* Organising (api_organise.c; docs/api.md, "Organising"). */
int api_patch_experiment(http_request_t *request);
int api_delete_experiment(http_request_t *request);
int api_patch_study(http_request_t *request);

/* The experiment list's options beyond status, name, limit and before: archived, tag,
 * where, columns, sort, order, offset. The filter points into the struct's own storage. */
#define API_LIST_CONDITIONS 8
#define API_LIST_COLUMNS 16
#define API_FIELD_PATH_MAX 256
typedef struct {
  db_list_filter_t filter;
  db_condition_t conditions[API_LIST_CONDITIONS];
  char condition_paths[API_LIST_CONDITIONS][API_FIELD_PATH_MAX];
  char condition_values[API_LIST_CONDITIONS][API_FIELD_PATH_MAX];
  db_field_t columns[API_LIST_COLUMNS];
  char column_paths[API_LIST_COLUMNS][API_FIELD_PATH_MAX];
  char column_names[API_LIST_COLUMNS][API_FIELD_PATH_MAX];
  const char *names[API_LIST_COLUMNS];
  db_field_t sort;
  char sort_path[API_FIELD_PATH_MAX];
} api_list_query_t;
/* Reads those options into query->filter: 0, or 1 when a 400 was answered (the handler
 * returns 0), or a negative errno. */
int api_list_query(http_request_t *request, api_list_query_t *query);

/* Studies (api_study.c; docs/api.md). */
int api_submit_study(http_request_t *request);
int api_list_studies(http_request_t *request);
int api_get_study(http_request_t *request);
int api_cancel_study(http_request_t *request);
int api_get_study_stream(http_request_t *request);
int api_get_study_curves(http_request_t *request);

#endif
