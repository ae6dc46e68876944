/* bench_sse.c — many Server-Sent Events clients in one process: how late each event arrives,
 * and whether every one arrived.
 *
 * Opens --clients connections to mapsaged's GET /api/experiments/{id}/stream, the ids of
 * --ids dealt round-robin, on one epoll loop (HTTP/1.1, chunked as MHD sends it). Once every
 * stream has delivered its first `status` event it creates the --go file: the synthetic
 * workers (bench_emit) wait for it, so nothing is emitted before every client listens and
 * nothing needs replaying. For each `metric` event it checks the step follows the previous
 * one (a gap or a repeat is counted) and, when the event carries "bench/t_ms" (the worker's
 * CLOCK_MONOTONIC time, ms since --t0), records now − then in a histogram (10 µs buckets to 10 s, 10 ms ones beyond).
 * It stops when every stream has ended (the `end` event, or the connection closed) or after
 * --timeout seconds, and prints one JSON object: latency percentiles, events, and per client
 * the last step seen, gaps, repeats and how it ended. Loopback only; a benchmark. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SSE_BUCKET_US 10      /* fine buckets up to 10 s, … */
#define SSE_BUCKETS 1000000
#define SSE_COARSE_MS 10      /* … then coarse ones up to 1000 s (a saturated daemon) */
#define SSE_COARSE_BUCKETS 100000
#define SSE_MAX_CLIENTS 1024
#define SSE_LINE_MAX (1 << 20)

typedef enum { CHUNK_SIZE, CHUNK_SIZE_LF, CHUNK_DATA, CHUNK_DATA_CR, CHUNK_DATA_LF, CHUNK_DONE } chunk_state_t;

typedef struct {
  int fd;
  long long id;           /* the experiment */
  int headers_done, chunked, status_code;
  char head[4096];
  size_t head_length;
  chunk_state_t chunk_state;
  size_t chunk_left;
  char *line;             /* the SSE line being read */
  size_t line_length;
  char event[32];
  char event_id[48];
  char *data;             /* the event's data lines */
  size_t data_length, data_capacity;
  int got_status, ended, closed;
  long long events, last_step, gaps, repeats, stamped;
} sse_client_t;

static sse_client_t sse_clients[SSE_MAX_CLIENTS];
static uint32_t sse_histogram[SSE_BUCKETS];
static uint32_t sse_coarse[SSE_COARSE_BUCKETS + 1];
static double sse_t0, sse_first_event = -1, sse_last_event = -1;
static double sse_latency_max;

static double sse_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sse_die(const char *what) {
  fprintf(stderr, "bench_sse: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void sse_dispatch(sse_client_t *c) {
  if (strcmp(c->event, "status") == 0) {
    c->got_status = 1;
  } else if (strcmp(c->event, "end") == 0) {
    c->ended = 1;
  } else if (strcmp(c->event, "metric") == 0) {
    double now = sse_now();
    long long step = strtoll(c->event_id, NULL, 10);
    if (step == c->last_step + 1) c->last_step = step;
    else if (step <= c->last_step) c->repeats++;
    else {
      c->gaps += step - c->last_step - 1;
      c->last_step = step;
    }
    c->events++;
    if (sse_first_event < 0) sse_first_event = now;
    sse_last_event = now;
    if (c->data) {
      c->data[c->data_length] = '\0';
      const char *at = strstr(c->data, "\"bench/t_ms\":");
      if (at) {
        double then_ms = strtod(at + 13, NULL);
        double latency_us = ((now - sse_t0) * 1e3 - then_ms) * 1e3;
        if (latency_us < 0) latency_us = 0;
        if (latency_us / 1e3 > sse_latency_max) sse_latency_max = latency_us / 1e3;
        size_t bucket = (size_t)(latency_us / SSE_BUCKET_US);
        if (bucket < SSE_BUCKETS) {
          sse_histogram[bucket]++;
        } else {
          bucket = (size_t)(latency_us / 1e3 / SSE_COARSE_MS);
          sse_coarse[bucket < SSE_COARSE_BUCKETS ? bucket : SSE_COARSE_BUCKETS]++;
        }
        c->stamped++;
      }
    }
  }
  c->event[0] = '\0';
  c->event_id[0] = '\0';
  c->data_length = 0;
}

/* One line of the event stream (without its newline). */
static void sse_line(sse_client_t *c, const char *line, size_t length) {
  if (length == 0) {
    if (c->event[0]) sse_dispatch(c);
    return;
  }
  if (line[0] == ':') return; /* a comment: ": ping" */
  const char *colon = memchr(line, ':', length);
  size_t name_length = colon ? (size_t)(colon - line) : length;
  const char *value = colon ? colon + 1 : line + length;
  if (value < line + length && *value == ' ') value++;
  size_t value_length = (size_t)(line + length - value);
  if (name_length == 5 && memcmp(line, "event", 5) == 0) {
    size_t n = value_length < sizeof c->event - 1 ? value_length : sizeof c->event - 1;
    memcpy(c->event, value, n);
    c->event[n] = '\0';
  } else if (name_length == 2 && memcmp(line, "id", 2) == 0) {
    size_t n = value_length < sizeof c->event_id - 1 ? value_length : sizeof c->event_id - 1;
    memcpy(c->event_id, value, n);
    c->event_id[n] = '\0';
  } else if (name_length == 4 && memcmp(line, "data", 4) == 0) {
    if (c->data_length + value_length + 2 > c->data_capacity) {
      size_t capacity = c->data_capacity ? c->data_capacity : 1024;
      while (capacity < c->data_length + value_length + 2) capacity *= 2;
      c->data = realloc(c->data, capacity);
      if (c->data == NULL) sse_die("realloc");
      c->data_capacity = capacity;
    }
    memcpy(c->data + c->data_length, value, value_length);
    c->data_length += value_length;
  }
}

/* Body bytes, after de-chunking. */
static void sse_body(sse_client_t *c, const char *data, size_t length) {
  while (length > 0) {
    const char *newline = memchr(data, '\n', length);
    size_t chunk = newline ? (size_t)(newline - data) : length;
    if (c->line_length + chunk < SSE_LINE_MAX) {
      memcpy(c->line + c->line_length, data, chunk);
      c->line_length += chunk;
    }
    if (!newline) return;
    size_t n = c->line_length;
    if (n > 0 && c->line[n - 1] == '\r') n--;
    sse_line(c, c->line, n);
    c->line_length = 0;
    data = newline + 1;
    length -= chunk + 1;
  }
}

static void sse_chunked(sse_client_t *c, const char *data, size_t length) {
  size_t i = 0;
  while (i < length) {
    char ch = data[i];
    switch (c->chunk_state) {
    case CHUNK_SIZE:
      i++;
      if (ch >= '0' && ch <= '9') c->chunk_left = c->chunk_left * 16 + (size_t)(ch - '0');
      else if (ch >= 'a' && ch <= 'f') c->chunk_left = c->chunk_left * 16 + (size_t)(ch - 'a' + 10);
      else if (ch >= 'A' && ch <= 'F') c->chunk_left = c->chunk_left * 16 + (size_t)(ch - 'A' + 10);
      else if (ch == '\n') c->chunk_state = c->chunk_left ? CHUNK_DATA : CHUNK_DONE;
      else c->chunk_state = CHUNK_SIZE_LF; /* '\r' or an extension */
      break;
    case CHUNK_SIZE_LF:
      i++;
      if (ch == '\n') c->chunk_state = c->chunk_left ? CHUNK_DATA : CHUNK_DONE;
      break;
    case CHUNK_DATA: {
      size_t n = length - i < c->chunk_left ? length - i : c->chunk_left;
      sse_body(c, data + i, n);
      i += n;
      c->chunk_left -= n;
      if (c->chunk_left == 0) c->chunk_state = CHUNK_DATA_CR;
      break;
    }
    case CHUNK_DATA_CR:
      i++;
      c->chunk_state = ch == '\r' ? CHUNK_DATA_LF : CHUNK_SIZE;
      if (ch == '\n') c->chunk_state = CHUNK_SIZE;
      break;
    case CHUNK_DATA_LF:
      i++;
      c->chunk_state = CHUNK_SIZE;
      break;
    case CHUNK_DONE:
      return;
    }
  }
}

static void sse_received(sse_client_t *c, const char *data, size_t length) {
  if (!c->headers_done) {
    size_t n = length < sizeof c->head - 1 - c->head_length ? length : sizeof c->head - 1 - c->head_length;
    memcpy(c->head + c->head_length, data, n);
    c->head_length += n;
    c->head[c->head_length] = '\0';
    char *end = strstr(c->head, "\r\n\r\n");
    if (end == NULL) return;
    c->headers_done = 1;
    c->status_code = atoi(c->head + 9);
    for (char *p = c->head; *p; p++) *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    c->chunked = strstr(c->head, "transfer-encoding: chunked") != NULL;
    size_t used = (size_t)(end + 4 - c->head) - (c->head_length - n);
    data += used;
    length -= used;
    c->chunk_state = CHUNK_SIZE;
    c->chunk_left = 0;
  }
  if (c->chunked) sse_chunked(c, data, length);
  else sse_body(c, data, length);
}

static double sse_percentile(double fraction, uint64_t total) {
  uint64_t target = (uint64_t)ceil(fraction * (double)total), seen = 0;
  if (target == 0) target = 1;
  for (size_t b = 0; b < SSE_BUCKETS; b++) {
    seen += sse_histogram[b];
    if (seen >= target) return (b + 0.5) * SSE_BUCKET_US / 1e3;
  }
  for (size_t b = 0; b <= SSE_COARSE_BUCKETS; b++) {
    seen += sse_coarse[b];
    if (seen >= target) return (b + 0.5) * SSE_COARSE_MS;
  }
  return NAN;
}

int main(int argc, char **argv) {
  int port = 0, n_clients = 64;
  double timeout = 60;
  const char *ids_text = "1", *go = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--clients") == 0) n_clients = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--ids") == 0) ids_text = argv[i + 1];
    else if (strcmp(argv[i], "--go") == 0) go = argv[i + 1];
    else if (strcmp(argv[i], "--timeout") == 0) timeout = atof(argv[i + 1]);
    else if (strcmp(argv[i], "--t0") == 0) sse_t0 = atof(argv[i + 1]);
    else {
      fprintf(stderr, "usage: bench_sse --port P [--clients N] [--ids 1,2,…] [--go FILE] [--timeout S] [--t0 T]\n");
      return 2;
    }
  }
  if (port <= 0 || n_clients < 1 || n_clients > SSE_MAX_CLIENTS) {
    fprintf(stderr, "bench_sse: --port and 1–%d --clients needed\n", SSE_MAX_CLIENTS);
    return 2;
  }
  long long ids[SSE_MAX_CLIENTS];
  int n_ids = 0;
  for (const char *p = ids_text; *p && n_ids < SSE_MAX_CLIENTS;) {
    ids[n_ids++] = strtoll(p, (char **)&p, 10);
    if (*p == ',') p++;
    else break;
  }

  int epoll = epoll_create1(0);
  if (epoll < 0) sse_die("epoll_create1");
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  for (int i = 0; i < n_clients; i++) {
    sse_client_t *c = &sse_clients[i];
    c->id = ids[i % n_ids];
    c->line = malloc(SSE_LINE_MAX);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || c->line == NULL) sse_die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&address, sizeof address) != 0) sse_die("connect");
    char request[256];
    int n = snprintf(request, sizeof request,
                     "GET /api/experiments/%lld/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
                     c->id);
    if (write(c->fd, request, (size_t)n) != n) sse_die("write");
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(epoll, EPOLL_CTL_ADD, c->fd, &ev) != 0) sse_die("epoll_ctl");
  }

  const double started = sse_now();
  double go_at = -1;
  int open_clients = n_clients;
  static char buffer[1 << 16];
  while (open_clients > 0 && sse_now() - started < timeout) {
    struct epoll_event events[64];
    int n = epoll_wait(epoll, events, 64, 100);
    if (n < 0 && errno != EINTR) sse_die("epoll_wait");
    for (int e = 0; e < n; e++) {
      sse_client_t *c = &sse_clients[events[e].data.u32];
      for (;;) {
        ssize_t got = read(c->fd, buffer, sizeof buffer);
        if (got > 0) {
          sse_received(c, buffer, (size_t)got);
          /* The stream is over once its last chunk came: the connection may stay open. */
          if (!(c->chunked && c->chunk_state == CHUNK_DONE)) {
            if (got < (ssize_t)sizeof buffer) break;
            continue;
          }
        }
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) break;
        c->closed = 1; /* end of stream or error */
        epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        open_clients--;
        break;
      }
    }
    if (go_at < 0) {
      int ready = 1;
      for (int i = 0; i < n_clients && ready; i++) ready = sse_clients[i].got_status || sse_clients[i].closed;
      if (ready) {
        go_at = sse_now();
        if (go) {
          FILE *f = fopen(go, "w");
          if (f) fclose(f);
        }
      }
    }
  }

  uint64_t stamped = 0;
  long long events = 0, gaps = 0, repeats = 0, ended = 0, failed = 0;
  for (int i = 0; i < n_clients; i++) {
    stamped += (uint64_t)sse_clients[i].stamped;
    events += sse_clients[i].events;
    gaps += sse_clients[i].gaps;
    repeats += sse_clients[i].repeats;
    ended += sse_clients[i].ended;
    failed += sse_clients[i].status_code != 200;
  }
  double window = sse_last_event > sse_first_event ? sse_last_event - sse_first_event : 0;
  printf("{\"clients\": %d, \"connect_seconds\": %.3f, \"events\": %lld, \"window_s\": %.3f, "
         "\"events_per_s\": %.1f, \"gaps\": %lld, \"repeats\": %lld, \"ended\": %lld, \"not_200\": %lld, "
         "\"timed_out\": %s, \"stamped\": %llu",
         n_clients, go_at > 0 ? go_at - started : -1.0, events, window, window > 0 ? events / window : 0.0, gaps,
         repeats, ended, failed, open_clients > 0 ? "true" : "false", (unsigned long long)stamped);
  if (stamped)
    printf(", \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f",
           sse_percentile(0.5, stamped), sse_percentile(0.9, stamped), sse_percentile(0.99, stamped),
           sse_percentile(0.999, stamped), sse_latency_max);
  printf(", \"per_client\": [");
  for (int i = 0; i < n_clients; i++) {
    const sse_client_t *c = &sse_clients[i];
    printf("%s{\"id\": %lld, \"status\": %d, \"events\": %lld, \"last_step\": %lld, \"gaps\": %lld, \"repeats\": %lld, "
           "\"end\": %d}",
           i ? ", " : "", c->id, c->status_code, c->events, c->last_step, c->gaps, c->repeats, c->ended);
  }
  printf("]}\n");
  return 0;
}
