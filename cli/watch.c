/* watch.c — `mapsage watch ID`: follows an experiment's event stream until it ends.
 *
 * On a terminal one live line is rewritten in place (\r, then erase to the end of the
 * line) with the status, epoch, step, latest loss, accuracies and speed; every finished
 * epoch and every status change leaves a permanent line above it. Piped, only the permanent
 * lines are written, flushed as they happen, so `watch | tee log` reads like a training log.
 *
 * The stream is Server-Sent Events (sse_parser.c). When it breaks before its `end` event
 * the client reconnects with Last-Event-ID, which the daemon answers by replaying what was
 * missed, a few times with growing pauses; a connection that moved the stream forward (or
 * lasted a while) earns a fresh set of retries. It never gives up on a healthy but quiet
 * stream: the daemon's `: ping` comments every 15 s keep the idle timer from firing. */
#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "event.h"
#include "sse_parser.h"
#include "util.h"

#define STREAM_FIRST_PAUSE_MS 500L    /* unless the server's `retry` says otherwise */
#define STREAM_SHORTEST_PAUSE_MS 100L /* whatever `retry` says: five tries take a moment */
#define STREAM_LONGEST_PAUSE_MS 8000L
#define WATCH_REDRAW_S 0.1            /* at most ten redraws a second, however fast steps go */

/* ---------------------------------------------------------------------------------------
 * Reconnecting (shared with study watch, see cli.h) */

static volatile sig_atomic_t watch_interrupted;

static void watch_on_sigint(int signal_number) {
  (void)signal_number;
  watch_interrupted = 1;
}

int stream_catch_interrupt(struct sigaction *previous) {
  struct sigaction action = {.sa_handler = watch_on_sigint};
  sigemptyset(&action.sa_mask);
  return sigaction(SIGINT, &action, previous) == 0;
}

int stream_interrupted(void) { return watch_interrupted; }

long stream_backoff_ms(long server_retry_ms, int failures) {
  long pause = server_retry_ms >= 0 ? server_retry_ms : STREAM_FIRST_PAUSE_MS;
  if (pause < STREAM_SHORTEST_PAUSE_MS) pause = STREAM_SHORTEST_PAUSE_MS;
  for (int i = 1; i < failures && pause < STREAM_LONGEST_PAUSE_MS; i++) pause *= 2;
  return pause > STREAM_LONGEST_PAUSE_MS ? STREAM_LONGEST_PAUSE_MS : pause;
}

void stream_print_event(const sse_event_t *event, const json_t *data) {
  json_t *line = json_pack("{s:s, s:s?, s:O}", "event", event->type, "id", event->id[0] ? event->id : NULL,
                           "data", data);
  if (line != NULL) json_dumpf(line, stdout, JSON_COMPACT);
  putchar('\n');
  fflush(stdout);
  json_decref(line);
}

void stream_pause(long milliseconds) {
  struct timespec left = {milliseconds / 1000, milliseconds % 1000 * 1000000L};
  while (!watch_interrupted && nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
}

/* What one connection came to. */
typedef enum {
  WATCH_ENDED,       /* the `end` event arrived */
  WATCH_DROPPED,     /* the connection broke first: reconnect */
  WATCH_REFUSED,     /* the server answered with an error (printed) */
  WATCH_BROKEN,      /* the client cannot go on: out of memory, a runaway event (printed) */
  WATCH_INTERRUPTED, /* Ctrl-C */
} watch_outcome_t;

typedef struct {
  long long id;
  const char *name;
  long long epochs, stages; /* totals from the experiment's record; 0 when unknown */

  /* The latest of everything, from the stream. */
  char status[32];
  buffer_t error;
  long long attempts;
  long long epoch, stage, step;
  int have_progress;
  double loss, examples_per_second;
  int have_loss, have_speed;
  double accuracy[EV_SPLIT_COUNT];
  int have_accuracy[EV_SPLIT_COUNT];

  /* The epoch whose evaluations are arriving; its line is printed once they are all in,
   * i.e. when anything else comes. */
  int epoch_pending;
  long long eval_epoch, eval_stage, eval_step;
  double eval_accuracy[EV_SPLIT_COUNT];
  int eval_have[EV_SPLIT_COUNT];

  char end_status[32];
  int ended;
  int json; /* --json: each event a JSON line on stdout instead of the lines for people */

  live_line_t live;
  double last_draw;

  /* The current connection. */
  CURL *curl;
  sse_parser_t parser;
  int response_checked, refused;
  long http_status;
  buffer_t refusal;
  int stream_error;
  int new_events;    /* metric and eval events on this connection: a replay only sends new ones */
  int warned_malformed;
} watch_t;

/* ---------------------------------------------------------------------------------------
 * Output */

static void watch_append_fraction(buffer_t *line, const char *label, long long value, long long total) {
  if (total > 0)
    buffer_printf(line, "  %s %lld/%lld", label, value, total);
  else
    buffer_printf(line, "  %s %lld", label, value);
}

static void watch_append_accuracies(buffer_t *line, const double *accuracy, const int *have) {
  for (int split = 0; split < EV_SPLIT_COUNT; split++)
    if (have[split]) buffer_printf(line, "  %s %.2f%%", ev_split_name((ev_split_t)split), accuracy[split] * 100);
}

/* Rewrites the live line; a no-op when piped. Allocation failures only cost a frame. */
static void watch_draw(watch_t *watch) {
  if (!watch->live.tty) return;
  buffer_t text = {0};
  buffer_append_text(&text, watch->status[0] != '\0' ? watch->status : "connecting");
  if (strcmp(watch->status, "queued") == 0) buffer_append_text(&text, ", waiting for a worker");
  if (watch->have_progress) {
    watch_append_fraction(&text, "epoch", watch->epoch, watch->epochs);
    if (watch->stages > 1) watch_append_fraction(&text, "stage", watch->stage + 1, watch->stages);
    buffer_printf(&text, "  step %lld", watch->step);
  }
  if (watch->have_loss) buffer_printf(&text, "  loss %.4g", watch->loss);
  watch_append_accuracies(&text, watch->accuracy, watch->have_accuracy);
  if (watch->have_speed) buffer_printf(&text, "  %.0f ex/s", watch->examples_per_second);

  live_line_draw(&watch->live, buffer_text(&text));
  buffer_free(&text);
  watch->last_draw = util_monotonic();
}

static void watch_maybe_draw(watch_t *watch) {
  if (watch->live.dirty && util_monotonic() - watch->last_draw >= WATCH_REDRAW_S) watch_draw(watch);
}

/* Prints the line of the epoch whose evaluations have all arrived. */
static void watch_flush_epoch(watch_t *watch) {
  if (!watch->epoch_pending) return;
  watch->epoch_pending = 0;
  buffer_t text = {0};
  buffer_append_text(&text, "");
  watch_append_fraction(&text, "epoch", watch->eval_epoch, watch->epochs);
  if (watch->stages > 1) watch_append_fraction(&text, "stage", watch->eval_stage + 1, watch->stages);
  buffer_printf(&text, "  step %lld", watch->eval_step);
  if (watch->have_loss) buffer_printf(&text, "  loss %.4g", watch->loss);
  watch_append_accuracies(&text, watch->eval_accuracy, watch->eval_have);
  if (watch->have_speed) buffer_printf(&text, "  %.0f ex/s", watch->examples_per_second);
  /* Drop the two leading spaces every part starts with. */
  if (text.length > 2) live_line_say(&watch->live, text.data + 2);
  buffer_free(&text);
}

/* ---------------------------------------------------------------------------------------
 * Events */

static void watch_on_status(watch_t *watch, const json_t *data) {
  const char *status = format_json_string(data, "status");
  const char *error = format_json_string(data, "error");
  long long attempts = watch->attempts;
  format_json_integer(data, "attempts", &attempts);
  if (status == NULL) return;
  buffer_clear(&watch->error);
  if (error != NULL) buffer_append_text(&watch->error, error);
  if (strcmp(status, watch->status) == 0 && attempts == watch->attempts) return;
  watch_flush_epoch(watch);
  snprintf(watch->status, sizeof watch->status, "%s", status);
  watch->attempts = attempts;
  watch->live.dirty = 1;
  /* How it ended is the closing line's to say (watch_finish). */
  if (strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0)
    return;
  buffer_t text = {0};
  buffer_printf(&text, "experiment %lld", watch->id);
  if (watch->name != NULL && watch->name[0] != '\0') buffer_printf(&text, " (%s)", watch->name);
  buffer_printf(&text, ": %s", status);
  if (attempts > 1) buffer_printf(&text, " (attempt %lld)", attempts);
  live_line_say(&watch->live, buffer_text(&text));
  buffer_free(&text);
}

static void watch_on_metric(watch_t *watch, const json_t *data) {
  long long epoch = watch->epoch, stage = watch->stage, step = watch->step;
  format_json_integer(data, "epoch", &epoch);
  format_json_integer(data, "stage", &stage);
  format_json_integer(data, "step", &step);
  if (watch->epoch_pending && (epoch != watch->eval_epoch || stage != watch->eval_stage))
    watch_flush_epoch(watch);
  watch->epoch = epoch;
  watch->stage = stage;
  watch->step = step;
  watch->have_progress = 1;
  const json_t *values = json_object_get(data, "values");
  if (format_json_number(values, "loss/total", &watch->loss) == 0) watch->have_loss = 1;
  if (format_json_number(values, "examples_per_s", &watch->examples_per_second) == 0) watch->have_speed = 1;
  watch->live.dirty = 1;
}

static void watch_on_eval(watch_t *watch, const json_t *data) {
  long long epoch = watch->epoch, stage = watch->stage, step = watch->step;
  format_json_integer(data, "epoch", &epoch);
  format_json_integer(data, "stage", &stage);
  format_json_integer(data, "step", &step);
  const char *split_name = format_json_string(data, "split");
  int split = split_name != NULL ? ev_split_from_name(split_name) : -1;
  if (split < 0) return;
  if (watch->epoch_pending && (epoch != watch->eval_epoch || stage != watch->eval_stage))
    watch_flush_epoch(watch);
  if (!watch->epoch_pending) {
    memset(watch->eval_have, 0, sizeof watch->eval_have);
    watch->epoch_pending = 1;
  }
  watch->eval_epoch = epoch;
  watch->eval_stage = stage;
  watch->eval_step = step;
  double accuracy;
  if (format_json_number(json_object_get(data, "values"), "accuracy", &accuracy) == 0) {
    watch->eval_accuracy[split] = watch->accuracy[split] = accuracy;
    watch->eval_have[split] = watch->have_accuracy[split] = 1;
  }
  watch->live.dirty = 1;
}

static int watch_on_event(const sse_event_t *event, void *user_data) {
  watch_t *watch = user_data;
  /* Other event types are for other clients (or later versions): skip them. */
  static const char *const known[] = {"status", "metric", "eval", "end"};
  size_t kind = 0;
  while (kind < ARRAY_SIZE(known) && strcmp(event->type, known[kind]) != 0) kind++;
  if (kind == ARRAY_SIZE(known)) return 0;
  json_error_t error;
  json_t *data = json_loadb(event->data, event->data_length, 0, &error);
  if (!json_is_object(data)) {
    if (!watch->warned_malformed) {
      char text[320];
      snprintf(text, sizeof text, "ignoring a '%.40s' event whose data is not a JSON object%s%s",
               event->type, data == NULL ? ": " : "", data == NULL ? error.text : "");
      live_line_notice(&watch->live, text);
      watch->warned_malformed = 1;
    }
    json_decref(data);
    return 0;
  }
  int stop = 0;
  if (watch->json) {
    stream_print_event(event, data);
    if (strcmp(event->type, "metric") == 0 || strcmp(event->type, "eval") == 0) watch->new_events++;
    if (strcmp(event->type, "status") == 0) {
      const char *status = format_json_string(data, "status");
      snprintf(watch->status, sizeof watch->status, "%s", status != NULL ? status : "?");
    }
    if (strcmp(event->type, "end") == 0) {
      const char *status = format_json_string(data, "status");
      snprintf(watch->end_status, sizeof watch->end_status, "%s", status != NULL ? status : watch->status);
      watch->ended = stop = 1;
    }
    json_decref(data);
    return stop;
  }
  if (strcmp(event->type, "status") == 0) {
    watch_on_status(watch, data);
  } else if (strcmp(event->type, "metric") == 0) {
    watch_on_metric(watch, data);
    watch->new_events++;
  } else if (strcmp(event->type, "eval") == 0) {
    watch_on_eval(watch, data);
    watch->new_events++;
  } else if (strcmp(event->type, "end") == 0) {
    watch_flush_epoch(watch);
    const char *status = format_json_string(data, "status");
    snprintf(watch->end_status, sizeof watch->end_status, "%s",
             status != NULL ? status : watch->status);
    watch->ended = 1;
    stop = 1; /* the daemon closes the stream now; no need to wait for it */
  }
  json_decref(data);
  watch_maybe_draw(watch);
  return stop;
}

/* ---------------------------------------------------------------------------------------
 * The connection */

static void watch_check_response(watch_t *watch) {
  if (watch->response_checked) return;
  watch->response_checked = 1;
  char *type = NULL;
  curl_easy_getinfo(watch->curl, CURLINFO_RESPONSE_CODE, &watch->http_status);
  curl_easy_getinfo(watch->curl, CURLINFO_CONTENT_TYPE, &type);
  if (watch->http_status != 200 || type == NULL || strncasecmp(type, "text/event-stream", 17) != 0)
    watch->refused = 1;
}

static size_t watch_write(char *bytes, size_t size, size_t count, void *user_data) {
  watch_t *watch = user_data;
  size_t length = size * count;
  watch_check_response(watch);
  if (watch->refused) {
    /* An error answer: keep it for client_check; a truncated one still names the error. */
    buffer_append(&watch->refusal, bytes, length);
    return length;
  }
  int result = sse_parser_feed(&watch->parser, bytes, length);
  if (result == 0) return length;
  if (result < 0) watch->stream_error = result;
  return 0; /* stop the transfer: the stream ended, or cannot be read */
}

static int watch_progress(void *user_data, curl_off_t download_total, curl_off_t downloaded,
                          curl_off_t upload_total, curl_off_t uploaded) {
  (void)download_total, (void)downloaded, (void)upload_total, (void)uploaded;
  watch_t *watch = user_data;
  if (watch_interrupted) return 1;
  watch_maybe_draw(watch); /* a frame skipped by the throttle shows up in a quiet moment */
  return 0;
}

static watch_outcome_t watch_connect(watch_t *watch, const client_t *client, buffer_t *reason) {
  client_call_t call = {0};
  buffer_t path = {0}, last_id = {0};
  watch_outcome_t outcome = WATCH_BROKEN;
  const char *id = sse_parser_last_event_id(&watch->parser);
  if (buffer_printf(&path, "/api/experiments/%lld/stream", watch->id) != 0 ||
      (id[0] != '\0' && buffer_printf(&last_id, "Last-Event-ID: %s", id) != 0) ||
      client_call_init(client, &call, path.data) != 0 ||
      client_call_add_header(&call, "Accept: text/event-stream") != 0 ||
      client_call_add_header(&call, "Cache-Control: no-cache") != 0 ||
      (last_id.length != 0 && client_call_add_header(&call, last_id.data) != 0)) {
    live_line_notice(&watch->live, "out of memory");
    goto done;
  }
  CURL *curl = call.curl;
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, watch_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, watch);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, STREAM_IDLE_TIMEOUT_S);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, watch_progress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, watch);
  watch->curl = curl;
  watch->response_checked = watch->refused = 0;
  watch->http_status = 0;
  watch->stream_error = 0;
  watch->new_events = 0;
  buffer_clear(&watch->refusal);
  sse_parser_reconnect(&watch->parser);

  CURLcode code = client_call_perform(&call);
  if (code == CURLE_OK) watch_check_response(watch); /* an empty error answer never wrote */
  watch->curl = NULL;

  if (watch->ended) {
    outcome = WATCH_ENDED;
  } else if (watch_interrupted) {
    outcome = WATCH_INTERRUPTED;
  } else if (watch->refused) {
    live_line_erase(&watch->live);
    if (watch->http_status == 200) {
      fprintf(stderr, "mapsage: the server answered %s with something other than an event stream\n", path.data);
    } else {
      client_response_t response = {.status = watch->http_status, .body = watch->refusal};
      client_check(&response);
    }
    outcome = WATCH_REFUSED;
  } else if (watch->stream_error != 0) {
    live_line_notice(&watch->live, watch->stream_error == -E2BIG
                            ? "the stream sent an event larger than 16 MiB; giving up on it"
                            : "out of memory");
  } else if (code == CURLE_OK) {
    buffer_clear(reason);
    buffer_append_text(reason, "the server closed the stream before the run ended");
    outcome = WATCH_DROPPED;
  } else if (code == CURLE_OUT_OF_MEMORY) {
    live_line_notice(&watch->live, "out of memory");
  } else if (code == CURLE_UNSUPPORTED_PROTOCOL || code == CURLE_URL_MALFORMAT) {
    live_line_erase(&watch->live);
    outcome = client_call_report(client, &call, code) == CLI_EXIT_USAGE ? WATCH_REFUSED : WATCH_BROKEN;
  } else {
    buffer_clear(reason);
    buffer_printf(reason, "the connection broke: %s", call.error[0] != '\0' ? call.error : curl_easy_strerror(code));
    outcome = WATCH_DROPPED;
  }
done:
  client_call_free(&call);
  buffer_free(&path);
  buffer_free(&last_id);
  return outcome;
}

/* Sleeps `milliseconds`, waking early for Ctrl-C. */
/* ---------------------------------------------------------------------------------------
 * The command */

/* Totals for "epoch 3/10": the record's progress, else the stored config's stages. */
static void watch_read_totals(watch_t *watch, const json_t *experiment) {
  const json_t *progress = json_object_get(experiment, "progress");
  format_json_integer(progress, "epochs", &watch->epochs);
  format_json_integer(progress, "stages", &watch->stages);
  const json_t *stages = json_object_get(json_object_get(experiment, "config"), "stages");
  if (json_is_array(stages)) {
    if (watch->stages == 0) watch->stages = (long long)json_array_size(stages);
    if (watch->epochs == 0) {
      size_t i;
      const json_t *stage;
      json_array_foreach(stages, i, stage) {
        long long epochs = 0;
        format_json_integer(stage, "epochs", &epochs);
        watch->epochs += epochs;
      }
    }
  }
}

/* The closing line: status, time taken and the headline figures from the final record. */
static int watch_finish(watch_t *watch, const client_t *client) {
  json_t *experiment = NULL;
  char path[64];
  snprintf(path, sizeof path, "/api/experiments/%lld", watch->id);
  /* Best effort: the stream already said how it ended; the record adds the figures. */
  if (client_get_json(client, path, &experiment) != CLI_EXIT_OK) experiment = NULL;
  const char *status = watch->end_status;
  const char *error = watch->error.length != 0 ? watch->error.data : NULL;
  if (experiment != NULL && format_json_string(experiment, "error") != NULL)
    error = format_json_string(experiment, "error");

  buffer_t text = {0};
  buffer_printf(&text, "experiment %lld %s", watch->id, status);
  const json_t *summary = json_object_get(experiment, "summary");
  double seconds, started, finished, accuracy;
  if (format_json_number(summary, "seconds", &seconds) != 0 &&
      (format_parse_time(format_json_string(experiment, "started_at"), &started) != 0 ||
       format_parse_time(format_json_string(experiment, "finished_at"), &finished) != 0 ||
       (seconds = finished - started) < 0))
    seconds = -1;
  if (seconds >= 0) {
    char duration[32];
    format_duration(seconds, duration, sizeof duration);
    buffer_printf(&text, " in %s", duration);
  }
  if (format_json_number(summary, "final_test_accuracy", &accuracy) == 0)
    buffer_printf(&text, ": test accuracy %.2f%%", accuracy * 100);
  if (format_json_number(summary, "best_val_accuracy", &accuracy) == 0)
    buffer_printf(&text, ", best val accuracy %.2f%%", accuracy * 100);
  live_line_say(&watch->live, buffer_text(&text));
  buffer_free(&text);

  int succeeded = strcmp(status, "succeeded") == 0;
  if (!succeeded) {
    if (error != NULL)
      fprintf(stderr, "mapsage: experiment %lld %s: %s\n", watch->id, status, error);
    else
      fprintf(stderr, "mapsage: experiment %lld %s\n", watch->id, status);
  }
  json_decref(experiment);
  return succeeded ? CLI_EXIT_OK : CLI_EXIT_FAILED;
}

int command_watch(const cli_global_t *global, int argc, char **argv) {
  long long id;
  int json = 0;
  int parsed = cli_parse_id_command(global, "watch", argc, argv, &id, &json);
  if (parsed != CLI_PROCEED) return parsed;

  client_t client = {0};
  json_t *experiment = NULL;
  buffer_t reason = {0};
  watch_t watch = {.id = id, .live.tty = !json && isatty(STDOUT_FILENO), .live.json = json, .json = json};
  sse_parser_init(&watch.parser, watch_on_event, &watch);
  watch.refusal.limit = 64u << 10;
  struct sigaction previous;
  int handling_sigint = 0;

  /* The record first: it proves the experiment exists (a clean 404 instead of a broken
   * stream) and gives the totals the stream's events do not carry. */
  char path[64];
  snprintf(path, sizeof path, "/api/experiments/%lld", id);
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_get_json(&client, path, &experiment);
  if (exit_code != CLI_EXIT_OK) goto done;
  watch.name = format_json_string(experiment, "name");
  watch_read_totals(&watch, experiment);

  /* Ctrl-C from here on ends the watching cleanly: the live line is finished, the exit
   * status is 130. No SA_RESTART, so a pause between reconnections wakes up. */
  handling_sigint = stream_catch_interrupt(&previous);
  int failures = 0;
  for (;;) {
    double connected_at = util_monotonic();
    watch_outcome_t outcome = watch_connect(&watch, &client, &reason);
    if (outcome == WATCH_ENDED) {
      exit_code = watch_finish(&watch, &client);
      break;
    }
    if (outcome == WATCH_INTERRUPTED) {
      live_line_close(&watch.live); /* leave the last state readable */
      exit_code = CLI_EXIT_INTERRUPTED;
      break;
    }
    if (outcome == WATCH_REFUSED || outcome == WATCH_BROKEN) {
      exit_code = CLI_EXIT_FAILED;
      break;
    }
    if (watch.new_events > 0 || util_monotonic() - connected_at >= STREAM_HEALTHY_S) failures = 0;
    if (++failures > STREAM_RETRIES) {
      watch_flush_epoch(&watch);
      char text[512];
      snprintf(text, sizeof text, "lost the stream of experiment %lld and could not get it back: %s",
               id, buffer_text(&reason));
      live_line_notice(&watch.live, text);
      exit_code = CLI_EXIT_UNREACHABLE;
      break;
    }
    long pause = stream_backoff_ms(watch.parser.retry_ms, failures);
    char text[512];
    snprintf(text, sizeof text, "%s; reconnecting in %.1fs (try %d of %d)", buffer_text(&reason),
             pause / 1000.0, failures, STREAM_RETRIES);
    live_line_notice(&watch.live, text);
    stream_pause(pause);
    if (watch_interrupted) {
      exit_code = CLI_EXIT_INTERRUPTED;
      break;
    }
  }

done:
  live_line_erase(&watch.live);
  if (handling_sigint) sigaction(SIGINT, &previous, NULL);
  sse_parser_free(&watch.parser);
  buffer_free(&watch.error);
  live_line_close(&watch.live);
  buffer_free(&watch.refusal);
  buffer_free(&reason);
  json_decref(experiment);
  client_close(&client);
  return exit_code;
}
