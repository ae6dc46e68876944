/* report.c — a worker's events over HTTP (see report.h).
 *
 * The stream is a stdio FILE made with fopencookie(): ev_write() writes a line and flushes,
 * which hands the line to report_write(); lines wait in `pending` until a batch is due and
 * are posted whole. One libcurl handle serves every post, so the connection is kept.
 *
 * The first post claims the run; its answer carries the run's secret, sent back with every
 * later post in X-MapSage-Run-Secret: without it the daemon refuses them (403), so no one
 * else can post for, or end, the run this worker claimed. */
#define _GNU_SOURCE
#include "report.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "util.h"

#define REPORT_RETRY_SECONDS 60.0   /* how long a post is tried again before the write fails */
#define REPORT_ANSWER_LIMIT 65536   /* bytes of an answer kept (errors are short) */
#define REPORT_TIMEOUT_SECONDS 30L

typedef struct {
  CURL *curl;
  struct curl_slist *headers;
  char *url;                  /* …/events */
  char *pending;              /* lines not posted yet */
  size_t length, capacity;
  double last_post;           /* util_monotonic() */
  int refused;                /* the daemon answered 409: the rest is dropped */
  int claimed;                /* the secret is in `headers`: later posts are this attempt's */
  volatile sig_atomic_t *stop;
  char answer[REPORT_ANSWER_LIMIT];
  size_t answer_length;
} report_t;

static size_t on_answer(char *data, size_t size, size_t count, void *context) {
  report_t *report = context;
  size_t bytes = size * count, room = sizeof report->answer - 1 - report->answer_length;
  size_t kept = bytes < room ? bytes : room;
  memcpy(report->answer + report->answer_length, data, kept);
  report->answer_length += kept;
  report->answer[report->answer_length] = '\0';
  return bytes;
}

/* The server's {"error": "…"} when it sent one, else the answer as it came. */
static const char *answer_error(const char *answer, char *out, size_t size) {
  json_t *root = json_loads(answer, 0, NULL);
  const char *message = json_string_value(json_object_get(root, "error"));
  util_strlcpy(out, message ? message : answer, size);
  json_decref(root);
  return out;
}

static void sleep_seconds(double seconds) {
  struct timespec pause = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
  while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
  }
}

/* A handle set up for `url` with the token and our timeouts. */
static CURL *open_handle(const char *url, struct curl_slist *headers, report_t *sink) {
  CURL *curl = curl_easy_init();
  if (curl == NULL) return NULL;
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_answer);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, sink);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, REPORT_TIMEOUT_SECONDS);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  return curl;
}

static struct curl_slist *make_headers(const report_target_t *target, const char *content_type) {
  struct curl_slist *headers = NULL;
  if (content_type) headers = curl_slist_append(headers, content_type);
  if (target->token && target->token[0]) {
    char authorization[1024];
    snprintf(authorization, sizeof authorization, "Authorization: Bearer %s", target->token);
    headers = curl_slist_append(headers, authorization);
  }
  return headers;
}

int report_fetch_config(const report_target_t *target, char **text, size_t *length, char *error,
                        size_t error_size) {
  char url[2048];
  if (snprintf(url, sizeof url, "%s/api/experiments/%lld", target->server, (long long)target->experiment) >=
      (int)sizeof url)
    return util_error(error, error_size, -ENAMETOOLONG, "--server: too long");
  /* The whole answer, however long: it lists the run's checkpoints too. */
  char *answer = NULL;
  size_t answer_length = 0;
  FILE *sink = open_memstream(&answer, &answer_length);
  struct curl_slist *headers = make_headers(target, NULL);
  CURL *curl = sink ? open_handle(url, headers, NULL) : NULL;
  int result = 0;
  if (curl == NULL) {
    result = util_error(error, error_size, -ENOMEM, "out of memory");
    goto done;
  }
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, NULL); /* fwrite, to the memory stream */
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, sink);
  CURLcode code = curl_easy_perform(curl);
  if (fflush(sink) != 0) code = CURLE_OUT_OF_MEMORY;
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  if (code != CURLE_OK) {
    result = util_error(error, error_size, -EHOSTUNREACH, "cannot reach %s: %s", url, curl_easy_strerror(code));
    goto done;
  }
  if (status != 200) {
    char reason[512];
    result = util_error(error, error_size, status == 404 ? -ENOENT : -EPROTO, "GET %s: %ld %s", url, status,
                        answer_error(answer ? answer : "", reason, sizeof reason));
    goto done;
  }
  json_t *root = json_loadb(answer ? answer : "", answer_length, 0, NULL);
  json_t *config = json_object_get(root, "config");
  *text = json_is_object(config) ? json_dumps(config, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
  json_decref(root);
  if (*text == NULL) {
    result = util_error(error, error_size, -EPROTO, "GET %s: the answer has no config", url);
    goto done;
  }
  *length = strlen(*text);
done:
  if (curl) curl_easy_cleanup(curl);
  curl_slist_free_all(headers);
  if (sink) fclose(sink);
  free(answer);
  return result;
}

/* A 200's answer: the claim's secret, kept and sent from now on; the checkpoints the daemon
 * refused to record (said on stderr: the run goes on without them). Returns 0 or -1. */
int report_read_answer(const char *answer, char *header, size_t header_size, void (*on_refused)(const char *message)) {
  json_t *root = json_loads(answer, 0, NULL);
  const char *secret = json_string_value(json_object_get(root, "secret"));
  int result = 0;
  header[0] = '\0';
  /* Hex, as the daemon makes it: anything else (a line break above all) would write headers
   * of its choosing into every later post. */
  if (secret && (secret[0] == '\0' || strspn(secret, "0123456789abcdef") != strlen(secret) ||
                 snprintf(header, header_size, "X-MapSage-Run-Secret: %s", secret) >= (int)header_size)) {
    header[0] = '\0';
    result = -EPROTO;
  }
  json_t *list = json_object_get(root, "refused"), *item;
  size_t index;
  json_array_foreach(list, index, item) {
    const char *message = json_string_value(json_object_get(item, "message"));
    on_refused(message && message[0] ? message : "(no reason given)");
  }
  json_decref(root);
  return result;
}

static void say_refused(const char *message) {
  fprintf(stderr, "mapsage-worker: the daemon refused an event: %s\n", message);
}

static int take_answer(report_t *report) {
  char header[256];
  if (report_read_answer(report->answer, header, sizeof header, say_refused) != 0) {
    fprintf(stderr, "mapsage-worker: the daemon's run secret is not what a daemon sends (hex, under 200 "
                    "characters)\n");
    errno = EPROTO;
    return -1;
  }
  if (header[0] == '\0' || report->claimed) return 0;
  struct curl_slist *headers = curl_slist_append(report->headers, header);
  if (headers == NULL) {
    errno = ENOMEM;
    return -1;
  }
  report->headers = headers;
  curl_easy_setopt(report->curl, CURLOPT_HTTPHEADER, report->headers);
  report->claimed = 1;
  return 0;
}

/* Posts `length` bytes of whole lines, trying again (network, 5xx) for up to
 * REPORT_RETRY_SECONDS. Returns 0 (also on 409: the rest is dropped) or -1 with errno. */
static int post(report_t *report, const char *data, size_t length) {
  const double started = util_monotonic();
  double pause = 0.5;
  for (;;) {
    report->answer_length = 0;
    report->answer[0] = '\0';
    curl_easy_setopt(report->curl, CURLOPT_POSTFIELDS, data);
    curl_easy_setopt(report->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)length);
    CURLcode code = curl_easy_perform(report->curl);
    long status = 0;
    curl_easy_getinfo(report->curl, CURLINFO_RESPONSE_CODE, &status);
    char reason[512];
    if (code == CURLE_OK && status == 200) {
      report->last_post = util_monotonic();
      return take_answer(report);
    }
    /* 409: the run has ended; 403 once claimed: the attempt is no longer ours. */
    if (code == CURLE_OK && (status == 409 || (status == 403 && report->claimed))) {
      fprintf(stderr, "mapsage-worker: the daemon takes no more events: %s; stopping\n",
              answer_error(report->answer, reason, sizeof reason));
      report->refused = 1;
      *report->stop = REPORT_STOPPED_BY_DAEMON;
      return 0;
    }
    if (code == CURLE_OK && status >= 400 && status < 500 && status != 408 && status != 429) {
      fprintf(stderr, "mapsage-worker: POST %s: %ld %s\n", report->url, status,
              answer_error(report->answer, reason, sizeof reason));
      errno = EPROTO;
      return -1;
    }
    const char *why = code != CURLE_OK ? curl_easy_strerror(code) : "the daemon is busy";
    if (util_monotonic() - started + pause > REPORT_RETRY_SECONDS) {
      fprintf(stderr, "mapsage-worker: POST %s: %s (status %ld); gave up after %.0f s\n", report->url, why, status,
              REPORT_RETRY_SECONDS);
      errno = EHOSTUNREACH;
      return -1;
    }
    fprintf(stderr, "mapsage-worker: POST %s: %s (status %ld); trying again in %.1f s\n", report->url, why, status,
            pause);
    sleep_seconds(pause);
    pause = pause * 2 < 8 ? pause * 2 : 8;
  }
}

/* Posts the whole lines waiting, keeping a partial one. */
static int post_pending(report_t *report) {
  char *end = memrchr(report->pending, '\n', report->length);
  if (end == NULL) return 0;
  size_t whole = (size_t)(end - report->pending) + 1;
  if (post(report, report->pending, whole) != 0) return -1;
  memmove(report->pending, report->pending + whole, report->length - whole);
  report->length -= whole;
  return 0;
}

static ssize_t report_write(void *cookie, const char *data, size_t size) {
  report_t *report = cookie;
  if (report->refused) return (ssize_t)size; /* the run has ended there: nothing more to say */
  if (report->length + size > report->capacity) {
    size_t capacity = report->capacity ? report->capacity : REPORT_BATCH_BYTES;
    while (capacity < report->length + size) capacity *= 2;
    char *grown = realloc(report->pending, capacity);
    if (grown == NULL) {
      errno = ENOMEM;
      return -1;
    }
    report->pending = grown;
    report->capacity = capacity;
  }
  memcpy(report->pending + report->length, data, size);
  report->length += size;
  /* Metric events go in batches; the others (started, eval, stage, checkpoint, log,
   * finished) are rare and worth seeing at once. */
  static const char metric[] = "{\"event\":\"metric\"";
  int batched = size >= sizeof metric - 1 && memcmp(data, metric, sizeof metric - 1) == 0;
  if (!batched || report->length >= REPORT_BATCH_BYTES ||
      (util_monotonic() - report->last_post) * 1000 >= REPORT_BATCH_MS) {
    if (post_pending(report) != 0) return -1;
  }
  return (ssize_t)size;
}

static int report_close(void *cookie) {
  report_t *report = cookie;
  int result = report->refused ? 0 : post_pending(report);
  curl_easy_cleanup(report->curl);
  curl_slist_free_all(report->headers);
  free(report->url);
  free(report->pending);
  free(report);
  return result;
}

FILE *report_open(const report_target_t *target, volatile sig_atomic_t *stop, char *error, size_t error_size) {
  report_t *report = calloc(1, sizeof *report);
  char url[2048];
  if (report == NULL) {
    util_error(error, error_size, -ENOMEM, "out of memory");
    return NULL;
  }
  snprintf(url, sizeof url, "%s/api/experiments/%lld/events", target->server, (long long)target->experiment);
  report->url = strdup(url);
  report->headers = make_headers(target, "Content-Type: application/x-ndjson");
  if (target->secret) { /* given beforehand: this worker's claim is the first post already */
    char header[256];
    snprintf(header, sizeof header, "X-MapSage-Run-Secret: %s", target->secret);
    struct curl_slist *headers = curl_slist_append(report->headers, header);
    if (headers) report->headers = headers;
    report->claimed = headers != NULL;
  }
  report->curl = report->url ? open_handle(report->url, report->headers, report) : NULL;
  report->stop = stop;
  report->last_post = util_monotonic();
  FILE *stream = NULL;
  if (report->curl) {
    cookie_io_functions_t functions = {.write = report_write, .close = report_close};
    stream = fopencookie(report, "w", functions);
  }
  if (stream == NULL) {
    if (report->curl) curl_easy_cleanup(report->curl);
    curl_slist_free_all(report->headers);
    free(report->url);
    free(report);
    util_error(error, error_size, -ENOMEM, "out of memory");
    return NULL;
  }
  /* Room for a whole event: a line reaches report_write in one piece when it is flushed. */
  setvbuf(stream, NULL, _IOFBF, 1 << 20);
  return stream;
}
