/* api.h — the HTTP API's handlers and route table (docs/api.md is their contract). */
#ifndef MAPSAGE_API_H
#define MAPSAGE_API_H

#include <stddef.h>

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
} api_t;

extern const http_route_t api_routes[];
extern const size_t api_route_count;

#endif
