/* sse.c — Server-Sent Events over suspended libmicrohttpd connections (see sse.h).
 *
 * Each subscriber owns a byte queue. MHD pulls from it through a content-reader callback;
 * when the queue is empty the reader suspends the connection (returning 0 without
 * suspending would make MHD spin), and whoever appends resumes it and wakes MHD (see
 * http_wake). While a subscriber replays history it ignores live events: the replay reads
 * the database after flushing the batch, so it sees everything published so far, and the
 * cursor then filters what is published twice. A subscriber that falls behind the workers
 * (its queue past SSE_LIVE_QUEUE_LIMIT) goes back to replaying: it reads on from the
 * database, so memory stays bounded and it loses nothing. One whose queue still passes
 * SSE_QUEUE_LIMIT (pings and status to a client that never reads) is dropped; it can
 * reconnect with its Last-Event-ID and lose nothing. A subscriber is freed when both MHD's
 * response free callback and the request's completion have run. */
#include "sse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/socket.h>

#include "json_text.h"
#include "util.h"

#define SSE_QUEUE_LIMIT (8u << 20)   /* bytes queued for a client before it is dropped */
#define SSE_LIVE_QUEUE_LIMIT 131072  /* past this a client gets live events from the database */
/* What MHD asks for and sends in one write: one worker's read of events (64 KiB of lines)
 * makes about this much of a stream, so a client keeps pace in one write per loop turn. */
#define SSE_WRITE_SIZE 65536
#define SSE_REPLAY_LOW_WATER 65536   /* refill from the database below this */
#define SSE_REPLAY_WINDOW 256        /* steps per database read while replaying */

typedef struct sse_subscriber sse_subscriber_t;

struct sse_subscriber {
  sse_hub_t *hub;
  sse_subscriber_t *prev, *next;
  struct MHD_Connection *connection;
  char client[NI_MAXHOST]; /* the client's address, numeric: its streams count together */
  double last_event;      /* util_monotonic() when it was opened or last got an event */
  int64_t experiment_id;  /* SSE_ALL_EXPERIMENTS, or -1 for a study's stream */
  int64_t study_id;       /* a study's stream: its changes only */
  char *queue;
  size_t queue_start, queue_end, queue_capacity;
  int64_t cursor_step;   /* the last event queued: (step, phase) */
  int cursor_phase;
  int replaying;
  int ending;            /* the end event is queued: finish once the queue drains */
  int dropped;           /* too slow, or the daemon is stopping: end with an error */
  int suspended;
  int references;        /* response free callback + request completion */
};

struct sse_hub {
  uv_loop_t *loop;
  db_t *db;
  http_server_t *server;
  uv_timer_t heartbeat, liveness;
  sse_subscriber_t *subscribers;
  int count;
  int destroying;
  int timers_closed;
  sse_counters_t counters;
};

static void on_heartbeat(uv_timer_t *timer);
static void on_liveness(uv_timer_t *timer);

int sse_hub_create(uv_loop_t *loop, db_t *db, sse_hub_t **out) {
  sse_hub_t *hub = calloc(1, sizeof *hub);
  if (hub == NULL) return -ENOMEM;
  hub->loop = loop;
  hub->db = db;
  uv_timer_init(loop, &hub->heartbeat);
  hub->heartbeat.data = hub;
  uv_timer_start(&hub->heartbeat, on_heartbeat, SSE_HEARTBEAT_MS, SSE_HEARTBEAT_MS);
  uv_timer_init(loop, &hub->liveness);
  hub->liveness.data = hub;
  uv_timer_start(&hub->liveness, on_liveness, SSE_LIVENESS_MS, SSE_LIVENESS_MS);
  *out = hub;
  return 0;
}

void sse_hub_set_server(sse_hub_t *hub, http_server_t *server) { hub->server = server; }
int sse_subscriber_count(const sse_hub_t *hub) { return hub->count; }
sse_counters_t sse_counters(const sse_hub_t *hub) { return hub->counters; }

// ---------------------------------------------------------------------------------------
// the queue

static int queue_append(sse_subscriber_t *subscriber, const char *text, size_t length) {
  size_t used = subscriber->queue_end - subscriber->queue_start;
  if (used + length > SSE_QUEUE_LIMIT) {
    if (!subscriber->dropped) subscriber->hub->counters.dropped++;
    subscriber->dropped = 1;
    return -ENOBUFS;
  }
  if (subscriber->queue_end + length > subscriber->queue_capacity) {
    if (used > 0) memmove(subscriber->queue, subscriber->queue + subscriber->queue_start, used);
    subscriber->queue_start = 0;
    subscriber->queue_end = used;
    if (used + length > subscriber->queue_capacity) {
      size_t capacity = subscriber->queue_capacity ? subscriber->queue_capacity : 16384;
      while (capacity < used + length) capacity *= 2;
      char *grown = realloc(subscriber->queue, capacity);
      if (grown == NULL) {
        subscriber->dropped = 1;
        return -ENOMEM;
      }
      subscriber->queue = grown;
      subscriber->queue_capacity = capacity;
    }
  }
  memcpy(subscriber->queue + subscriber->queue_end, text, length);
  subscriber->queue_end += length;
  return 0;
}

/* "id: …\nevent: …\ndata: …\n\n" (without the id line when `id` is NULL), allocated. */
static char *format_frame(const char *id, const char *type, const char *data, size_t *length) {
  size_t size = strlen(data) + 128;
  char *frame = malloc(size);
  if (frame == NULL) return NULL;
  int n = id ? snprintf(frame, size, "id: %s\nevent: %s\ndata: %s\n\n", id, type, data)
             : snprintf(frame, size, "event: %s\ndata: %s\n\n", type, data);
  if (n < 0 || (size_t)n >= size) {
    free(frame);
    return NULL;
  }
  *length = (size_t)n;
  return frame;
}

static void queue_event(sse_subscriber_t *subscriber, const char *id, const char *type, const char *data) {
  subscriber->last_event = util_monotonic();
  size_t length;
  char *frame = format_frame(id, type, data, &length);
  if (frame == NULL) subscriber->dropped = 1;
  else queue_append(subscriber, frame, length);
  free(frame);
}

static void wake(sse_subscriber_t *subscriber) {
  if (!subscriber->suspended) return;
  subscriber->suspended = 0;
  MHD_resume_connection(subscriber->connection);
  if (subscriber->hub->server) http_wake(subscriber->hub->server);
}

// ---------------------------------------------------------------------------------------
// events

static int event_phase(const ev_t *event) {
  return event->type == EV_STAGE ? EV_PHASE_STAGE : event->type == EV_EVAL ? 1 + (int)event->split : EV_PHASE_METRIC;
}

static const char *event_name(ev_type_t type) {
  return type == EV_STAGE ? "stage" : type == EV_EVAL ? "eval" : "metric";
}

/* The event as a stream frame ("id: …\nevent: …\ndata: {…}\n\n"), allocated; live and
 * replayed streams send the same bytes. Formatted once however many streams get it, and
 * written directly: this runs for every event a worker reports. Values are written as
 * reals whatever the worker wrote, as the database keeps them. */
static char *format_stream_event(const ev_t *event, size_t *length) {
  json_text_t text;
  json_text_init(&text);
  json_text_literal(&text, "id: ");
  json_text_integer(&text, event->step);
  if (event->type != EV_METRIC) {
    json_text_literal(&text, ".");
    json_text_integer(&text, event_phase(event));
  }
  json_text_literal(&text, "\nevent: ");
  json_text_literal(&text, event_name(event->type));
  json_text_literal(&text, "\ndata: {\"step\":");
  json_text_integer(&text, event->step);
  json_text_literal(&text, ",\"epoch\":");
  json_text_integer(&text, event->epoch);
  json_text_literal(&text, ",\"stage\":");
  json_text_integer(&text, event->stage);
  if (event->type == EV_STAGE) {
    json_text_literal(&text, ",\"name\":");
    json_text_string(&text, event->name);
  } else {
    if (event->type == EV_EVAL) {
      json_text_literal(&text, ",\"split\":");
      json_text_string(&text, ev_split_name(event->split));
    }
    json_text_literal(&text, ",\"values\":{");
    for (int i = 0; i < event->n_values; i++) {
      if (i > 0) json_text_literal(&text, ",");
      json_text_string(&text, event->values[i].name);
      json_text_literal(&text, ":");
      json_text_real(&text, event->values[i].value);
    }
    json_text_literal(&text, "}");
  }
  json_text_literal(&text, "}\n\n");
  return json_text_take(&text, length);
}

static void queue_stream_frame(sse_subscriber_t *subscriber, const ev_t *event, const char *frame, size_t length) {
  if (frame == NULL) {
    subscriber->dropped = 1;
    return;
  }
  queue_append(subscriber, frame, length);
  subscriber->last_event = util_monotonic();
  subscriber->cursor_step = event->step;
  subscriber->cursor_phase = event_phase(event);
}

static void queue_stream_event(sse_subscriber_t *subscriber, const ev_t *event) {
  size_t length = 0;
  char *frame = format_stream_event(event, &length);
  queue_stream_frame(subscriber, event, frame, length);
  free(frame);
}

/* Queues the experiment's status and, when `may_end`, the end of the stream if the
 * experiment has ended. */
static void queue_status(sse_subscriber_t *subscriber, int may_end) {
  json_t *experiment = db_experiment_get(subscriber->hub->db, subscriber->experiment_id, 0);
  if (experiment == NULL) {
    subscriber->dropped = 1;
    return;
  }
  const char *status = json_string_value(json_object_get(experiment, "status"));
  json_t *data = json_pack("{s:O, s:s, s:O, s:O}", "id", json_object_get(experiment, "id"), "status", status,
                           "error", json_object_get(experiment, "error"), "attempts",
                           json_object_get(experiment, "attempts"));
  char *text = json_dumps(data, JSON_COMPACT);
  if (text) queue_event(subscriber, NULL, "status", text);
  free(text);
  if (may_end && db_status_is_terminal(status)) {
    json_object_del(data, "id");
    json_object_del(data, "attempts");
    char *end = json_dumps(data, JSON_COMPACT);
    if (end) queue_event(subscriber, NULL, "end", end);
    free(end);
    subscriber->ending = 1;
  }
  json_decref(data);
  json_decref(experiment);
}

static void on_replayed(void *context, const ev_t *event) { queue_stream_event(context, event); }

/* Reads the next window of history into the queue; leaves replay mode when caught up. */
static void replay_some(sse_subscriber_t *subscriber) {
  db_t *db = subscriber->hub->db;
  /* Whatever was published but sits in the batch must be readable first. If the flush
   * fails (the disk is full, a reader holds the lock) the rows stay in the batch: the
   * replay waits, or it would call itself caught up and skip them. The heartbeat wakes the
   * stream to try again. */
  if (db_flush(db) != 0) return;
  int64_t last = db_max_step(db, subscriber->experiment_id);
  if (last < 0) return; /* the database failed: try again on the next wake, as above */
  int caught_up = 0;
  while (!caught_up && !subscriber->dropped &&
         subscriber->queue_end - subscriber->queue_start < SSE_REPLAY_LOW_WATER) {
    /* Not cursor + window > last: a Last-Event-ID near INT64_MAX would overflow and loop. */
    int64_t until =
        last - subscriber->cursor_step > SSE_REPLAY_WINDOW ? subscriber->cursor_step + SSE_REPLAY_WINDOW : last;
    int emitted = db_replay(db, subscriber->experiment_id, subscriber->cursor_step, subscriber->cursor_phase, until,
                            on_replayed, subscriber);
    if (emitted < 0) {
      subscriber->dropped = 1;
      return;
    }
    if (emitted == 0 && until < last) {
      /* A gap in the steps (a worker may report any step): jump to the next stored one
       * rather than walk a window at a time, which a step of 10^12 would make endless. */
      int64_t next = db_next_step(db, subscriber->experiment_id, until);
      if (next > until + 1) until = next - 1 < last ? next - 1 : last;
    }
    /* Steps before the newest have had all their events (a worker writes them in stream
     * order). The newest may still get its evaluations or a stage start (at step 0: a
     * teacher's eval and the first stage, before any metric): there the cursor stays at the
     * last event replayed (queue_stream_event moved it), so that live ones after it pass. */
    if (until < last) {
      subscriber->cursor_step = until;
      subscriber->cursor_phase = EV_PHASE_LAST;
    } else {
      caught_up = 1;
    }
  }
  if (caught_up) {
    subscriber->replaying = 0;
    queue_status(subscriber, 1);
  }
}

void sse_publish_event(sse_hub_t *hub, int64_t experiment_id, const ev_t *event) {
  int phase = event_phase(event);
  char *frame = NULL;
  size_t length = 0;
  for (sse_subscriber_t *s = hub->subscribers; s; s = s->next) {
    if (s->experiment_id != experiment_id || s->replaying || s->ending || s->dropped) continue;
    if (event->step < s->cursor_step || (event->step == s->cursor_step && phase <= s->cursor_phase)) continue;
    if (s->queue_end - s->queue_start > SSE_LIVE_QUEUE_LIMIT) {
      /* A client slower than the workers: it goes on from the database once it has read
       * what it has, instead of holding the events in memory (the event is in the batch,
       * which the replay flushes first). */
      s->replaying = 1;
      hub->counters.fell_behind++;
      continue;
    }
    if (frame == NULL) frame = format_stream_event(event, &length);
    queue_stream_frame(s, event, frame, length);
    hub->counters.delivered++;
    wake(s);
  }
  free(frame);
}

void sse_publish_experiment(sse_hub_t *hub, int64_t experiment_id) {
  char *text = NULL;
  for (sse_subscriber_t *s = hub->subscribers; s; s = s->next) {
    if (s->experiment_id != SSE_ALL_EXPERIMENTS || s->ending || s->dropped) continue;
    size_t length;
    if (text == NULL && db_experiment_text(hub->db, experiment_id, 0, &text, &length) != 0)
      return; /* read only when someone listens */
    queue_event(s, NULL, "experiment", text);
    wake(s);
  }
  free(text);
}

void sse_publish_deleted(sse_hub_t *hub, int64_t experiment_id) {
  char data[48];
  snprintf(data, sizeof data, "{\"id\":%lld}", (long long)experiment_id);
  for (sse_subscriber_t *s = hub->subscribers; s; s = s->next) {
    if (s->experiment_id != SSE_ALL_EXPERIMENTS || s->ending || s->dropped) continue;
    queue_event(s, NULL, "deleted", data);
    wake(s);
  }
}

void sse_publish_status(sse_hub_t *hub, int64_t experiment_id) {
  for (sse_subscriber_t *s = hub->subscribers; s; s = s->next) {
    if (s->experiment_id != experiment_id || s->replaying || s->ending || s->dropped) continue;
    queue_status(s, 1);
    wake(s);
  }
  sse_publish_experiment(hub, experiment_id);
}

// ---------------------------------------------------------------------------------------
// MHD side

static ssize_t on_read(void *cls, uint64_t position, char *buffer, size_t max) {
  (void)position;
  sse_subscriber_t *subscriber = cls;
  if (subscriber->dropped) return MHD_CONTENT_READER_END_WITH_ERROR;
  if (subscriber->queue_start == subscriber->queue_end && subscriber->replaying) replay_some(subscriber);
  size_t available = subscriber->queue_end - subscriber->queue_start;
  if (available > 0) {
    size_t n = available < max ? available : max;
    memcpy(buffer, subscriber->queue + subscriber->queue_start, n);
    subscriber->queue_start += n;
    return (ssize_t)n;
  }
  if (subscriber->ending) return MHD_CONTENT_READER_END_OF_STREAM;
  if (subscriber->dropped) return MHD_CONTENT_READER_END_WITH_ERROR;
  MHD_suspend_connection(subscriber->connection);
  subscriber->suspended = 1;
  return 0;
}

static void release(sse_subscriber_t *subscriber) {
  if (--subscriber->references > 0) return;
  sse_hub_t *hub = subscriber->hub;
  if (subscriber->prev) subscriber->prev->next = subscriber->next;
  else hub->subscribers = subscriber->next;
  if (subscriber->next) subscriber->next->prev = subscriber->prev;
  hub->count--;
  free(subscriber->queue);
  free(subscriber);
  if (hub->destroying && hub->count == 0) free(hub);
}

static void on_response_freed(void *cls) { release(cls); }
static void on_request_done(void *data) { release(data); }

int sse_parse_cursor(const char *text, int64_t *step, int *phase) {
  *step = 0;
  *phase = 0;
  if (text == NULL || text[0] == '\0') return 0;
  char *end;
  errno = 0;
  long long value = strtoll(text, &end, 10);
  if (errno || end == text || value < 0 || text[0] == '-' || text[0] == '+') return -EINVAL;
  *step = value;
  if (*end == '.') {
    char *after;
    long split = strtol(end + 1, &after, 10);
    if (after == end + 1 || *after != '\0' || split < 1 || split > EV_PHASE_LAST) return -EINVAL;
    *phase = (int)split;
  } else if (*end != '\0') {
    return -EINVAL;
  }
  return 0;
}

void sse_publish_study(sse_hub_t *hub, int64_t study_id, const char *type, const char *data, int end) {
  for (sse_subscriber_t *s = hub->subscribers; s; s = s->next) {
    if (s->study_id != study_id || s->ending || s->dropped) continue;
    queue_event(s, NULL, type, data);
    s->ending = end;
    wake(s);
  }
}

/* Room for a new viewer, never a refusal: streams are few per person, and whoever holds
 * the most can give one up. When the new stream's address already has
 * SSE_MAX_PER_CLIENT, its own stream that has gone longest without an event ends; when
 * every slot is taken, that of the address holding the most does. The stream ended this
 * way sees its response end with an error, and a browser's EventSource comes back when it
 * is still wanted; a client that opens streams in a loop only ends its own. */
static void make_room(sse_hub_t *hub, const char *client) {
  int live = 0, mine = 0;
  for (sse_subscriber_t *s = hub->subscribers; s; s = s->next) {
    if (s->dropped || s->ending) continue;
    live++;
    mine += strcmp(s->client, client) == 0;
  }
  const char *from = NULL;
  if (mine >= SSE_MAX_PER_CLIENT) {
    from = client;
  } else if (live >= SSE_MAX_SUBSCRIBERS) {
    int most = 0; /* the address with the most live streams: quadratic, over at most 256 */
    for (sse_subscriber_t *s = hub->subscribers; s; s = s->next) {
      if (s->dropped || s->ending) continue;
      int count = 0;
      for (sse_subscriber_t *t = hub->subscribers; t; t = t->next)
        count += !t->dropped && !t->ending && strcmp(t->client, s->client) == 0;
      if (count > most) {
        most = count;
        from = s->client;
      }
    }
  }
  if (from == NULL) return;
  sse_subscriber_t *idlest = NULL;
  for (sse_subscriber_t *s = hub->subscribers; s; s = s->next)
    if (!s->dropped && !s->ending && strcmp(s->client, from) == 0 && (!idlest || s->last_event < idlest->last_event))
      idlest = s;
  if (idlest == NULL) return;
  idlest->dropped = 1;
  hub->counters.evicted++;
  wake(idlest);
}

static int subscribe(sse_hub_t *hub, http_request_t *request, int64_t experiment_id, int64_t study_id, int64_t step,
                     int phase, sse_subscriber_t **out) {
  *out = NULL;
  char client[NI_MAXHOST] = "?";
  const union MHD_ConnectionInfo *info =
      MHD_get_connection_info(http_connection(request), MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (info && info->client_addr)
    getnameinfo(info->client_addr,
                info->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in),
                client, sizeof client, NULL, 0, NI_NUMERICHOST);
  make_room(hub, client);
  /* Ended streams hold their slot until their client has read the end: a bound on those. */
  if (hub->count >= 2 * SSE_MAX_SUBSCRIBERS)
    return http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE,
                              "too many streams are still closing (%d); retry in a moment", hub->count);
  sse_subscriber_t *subscriber = calloc(1, sizeof *subscriber);
  if (subscriber == NULL) return -ENOMEM;
  snprintf(subscriber->client, sizeof subscriber->client, "%s", client);
  subscriber->last_event = util_monotonic();
  subscriber->hub = hub;
  subscriber->connection = http_connection(request);
  subscriber->experiment_id = experiment_id;
  subscriber->study_id = study_id;
  subscriber->cursor_step = step;
  subscriber->cursor_phase = phase;
  subscriber->replaying = 1;
  subscriber->references = 2;
  struct MHD_Response *response =
      MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_WRITE_SIZE, on_read, subscriber, on_response_freed);
  if (response == NULL) {
    free(subscriber);
    return -ENOMEM;
  }
  subscriber->next = hub->subscribers;
  if (hub->subscribers) hub->subscribers->prev = subscriber;
  hub->subscribers = subscriber;
  hub->count++;
  http_on_complete(request, on_request_done, subscriber);
  if (experiment_id == SSE_ALL_EXPERIMENTS || experiment_id < 0) {
    subscriber->replaying = 0; /* no history: clients list the experiments first */
    queue_append(subscriber, ": connected\n\n", 13);
  } else {
    queue_status(subscriber, 0); /* first, so a client knows where the run stands */
  }
  *out = subscriber;
  MHD_add_response_header(response, "Content-Type", "text/event-stream");
  MHD_add_response_header(response, "X-Accel-Buffering", "no");
  return http_respond(request, MHD_HTTP_OK, response);
}

int sse_subscribe(sse_hub_t *hub, http_request_t *request, int64_t experiment_id, int64_t step, int phase) {
  sse_subscriber_t *subscriber;
  return subscribe(hub, request, experiment_id, 0, step, phase, &subscriber);
}

int sse_subscribe_study(sse_hub_t *hub, http_request_t *request, int64_t study_id, const char *current, int ended) {
  /* Of no experiment (-1 matches none), like the stream of all experiments. */
  sse_subscriber_t *subscriber;
  int result = subscribe(hub, request, -1, study_id, 0, 0, &subscriber);
  if (subscriber == NULL) return result;
  queue_event(subscriber, NULL, "study", current);
  if (ended) {
    queue_event(subscriber, NULL, "end", "{}");
    subscriber->ending = 1;
  }
  return result;
}

/* MHD takes a suspended socket out of its epoll set, so it cannot see the client leave:
 * peek at each one; end-of-file means the client has gone. */
static void on_liveness(uv_timer_t *timer) {
  sse_hub_t *hub = timer->data;
  for (sse_subscriber_t *s = hub->subscribers; s; s = s->next) {
    if (!s->suspended) continue;
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(s->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    char byte;
    if (info && recv(info->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
      s->dropped = 1;
      wake(s);
    }
  }
}

static void on_heartbeat(uv_timer_t *timer) {
  sse_hub_t *hub = timer->data;
  /* Also how a client that left is found: suspended sockets are out of MHD's sight until a
   * write to them fails. */
  for (sse_subscriber_t *s = hub->subscribers; s; s = s->next) {
    if (s->queue_start != s->queue_end || s->ending) continue;
    queue_append(s, ": ping\n\n", 8);
    wake(s);
  }
}

void sse_end_all(sse_hub_t *hub) {
  /* A clean end of the response, without an "end" event: clients know the experiment has
   * not ended and reconnect with their Last-Event-ID. */
  for (sse_subscriber_t *s = hub->subscribers; s; s = s->next) {
    s->ending = 1;
    s->replaying = 0;
    wake(s);
  }
}

static void on_timer_closed(uv_handle_t *handle) {
  sse_hub_t *hub = handle->data;
  if (++hub->timers_closed < 2) return;
  if (hub->count == 0) free(hub);
  else hub->destroying = 1;
}

void sse_hub_destroy(sse_hub_t *hub) {
  sse_end_all(hub);
  uv_close((uv_handle_t *)&hub->heartbeat, on_timer_closed);
  uv_close((uv_handle_t *)&hub->liveness, on_timer_closed);
}
