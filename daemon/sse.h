/* sse.h — live streams of an experiment's events (Server-Sent Events).
 *
 * A subscriber first gets the experiment's status, then every stored event after its
 * cursor (the Last-Event-ID it sent), read from the database in windows, then live events
 * as workers report them, then "end" once the experiment has ended. Metric events have id
 * "<step>", eval events "<step>.<1+split>"; the cursor makes replay and live meet exactly,
 * without gaps or duplicates. A stage event ("<step>.5") marks where a stage begins. */
#ifndef MAPSAGE_SSE_H
#define MAPSAGE_SSE_H

#include <stdint.h>

#include <uv.h>

#include "db.h"
#include "event.h"
#include "http.h"

#define SSE_MAX_SUBSCRIBERS 256  /* open streams; a new one ends the idlest of whoever holds most */
#define SSE_MAX_PER_CLIENT 64    /* open streams of one client address; its next ends its idlest */
#define SSE_HEARTBEAT_MS 15000
#define SSE_LIVENESS_MS 2000  /* how often suspended streams are checked for a client gone */

typedef struct sse_hub sse_hub_t;

int sse_hub_create(uv_loop_t *loop, db_t *db, sse_hub_t **out);
void sse_hub_set_server(sse_hub_t *hub, http_server_t *server);
/* Ends every stream (their clients see the end of the response); the hub stays usable. */
void sse_end_all(sse_hub_t *hub);
int sse_subscriber_count(const sse_hub_t *hub);

/* What the streams have done since the daemon started (GET /metrics). */
typedef struct {
  uint64_t delivered;    /* live events queued to a stream */
  uint64_t fell_behind;  /* times a stream fell behind the workers and read on from the database */
  uint64_t dropped;      /* streams ended for not reading at all (SSE_QUEUE_LIMIT) */
  uint64_t evicted;      /* streams ended to make room for a new one (SSE_MAX_*) */
} sse_counters_t;
sse_counters_t sse_counters(const sse_hub_t *hub);
/* Closes the hub's timer and frees it once every stream has ended. */
void sse_hub_destroy(sse_hub_t *hub);

/* Parses a Last-Event-ID ("" or NULL: from the start). Returns 0 or -EINVAL. */
int sse_parse_cursor(const char *text, int64_t *step, int *phase);

/* Answers `request` with the experiment's stream, starting after the cursor; with
 * SSE_ALL_EXPERIMENTS, with the stream of every experiment's changes ("experiment" events
 * carrying the experiment as GET /api/experiments lists it), live only. */
#define SSE_ALL_EXPERIMENTS 0
int sse_subscribe(sse_hub_t *hub, http_request_t *request, int64_t experiment_id, int64_t step, int phase);

/* Answers `request` with the stream of a study's changes: first a "study" event with
 * `current` (the study now, JSON), then the events study.c publishes with
 * sse_publish_study; with `ended`, "end" at once after the first. */
int sse_subscribe_study(sse_hub_t *hub, http_request_t *request, int64_t study_id, const char *current, int ended);
/* Queues an event of `type` with JSON `data` to the study's streams; with `end`, ends them
 * after it. */
void sse_publish_study(sse_hub_t *hub, int64_t study_id, const char *type, const char *data, int end);

/* A metric or eval event a worker just reported (already in the database batch). */
void sse_publish_event(sse_hub_t *hub, int64_t experiment_id, const ev_t *event);
/* The experiment's status changed: tells its streams (ending them if it has ended) and the
 * streams of all experiments. */
void sse_publish_status(sse_hub_t *hub, int64_t experiment_id);
/* The experiment was created or made progress (an epoch ended): tells the streams of all
 * experiments. Reads the database, so call it at most once per epoch, not per step. */
void sse_publish_experiment(sse_hub_t *hub, int64_t experiment_id);
/* The experiment was deleted: a `deleted` event, {"id": N}, to the streams of all
 * experiments (the lists drop its row). */
void sse_publish_deleted(sse_hub_t *hub, int64_t experiment_id);

#endif
