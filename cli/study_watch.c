/* study_watch.c — `mapsage study watch ID`: a study followed live until it ends, a line
 * per run that changes status and a progress line (docs/cli.md). The other study commands
 * are in study.c; the reconnection policy and the live line are the ones `watch` uses
 * (watch.c, format.c). */
#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sse_parser.h"
#include "util.h"

/* ---------------------------------------------------------------------------------------
 * study watch
 *
 * GET /api/studies/{id}/stream is live only: no history, no event ids to resume from, and
 * no "end" for a study that ended before the connection. So the study's record is read
 * first (it exists, its runs and their statuses, or it has already ended), and read again
 * each time the stream is connected: once connected, whatever happens next arrives as an
 * event, and the record covers what happened before, including anything missed while a
 * connection was down. Run lines are printed from the difference between what was known
 * and what is now, so a run's change prints once, whichever of the two told of it.
 *
 * The stream runs on libcurl's multi interface so that the record can be read between two
 * reads of the stream, on the same thread, outside any libcurl callback. */

#define STUDY_WATCH_POLL_MS 250        /* how soon Ctrl-C and the live line are seen to */

static int study_is_ended_status(const char *status) {
  return status != NULL &&
         (strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0);
}

typedef enum {
  STUDY_WATCH_ENDED,       /* the study has ended (its `end` event, or its record says so) */
  STUDY_WATCH_DROPPED,     /* the connection broke first: reconnect */
  STUDY_WATCH_REFUSED,     /* the server answered with an error (printed) */
  STUDY_WATCH_BROKEN,      /* the client cannot go on (printed) */
  STUDY_WATCH_INTERRUPTED, /* Ctrl-C */
} study_watch_outcome_t;

typedef struct {
  long long id;
  char *name;
  char status[32];
  json_t *runs; /* "<id>" → {"name", "seed", "status"}: each distinct run as last known */
  int ended;

  live_line_t live;

  /* The current connection. */
  CURL *curl;
  sse_parser_t parser;
  int response_checked, refused, streaming;
  long http_status;
  buffer_t refusal;
  int stream_error;
  int new_events;
  int warned_malformed;
} study_watch_t;

/* The runs by status, from what is known of each. */
static void study_watch_tally(const study_watch_t *watch, json_t *counts) {
  const char *key;
  json_t *run;
  json_object_foreach(watch->runs, key, run) {
    const char *status = format_json_string(run, "status");
    if (status == NULL) status = "unknown";
    long long n = 0;
    format_json_integer(counts, status, &n);
    json_object_set_new(counts, status, json_integer(n + 1));
  }
}

/* "3/7 runs ended (3 succeeded), 2 running, 2 queued" */
static int study_watch_progress(const study_watch_t *watch, buffer_t *text) {
  json_t *counts = json_object(), *ended = json_object(), *active = json_object();
  int result = counts != NULL && ended != NULL && active != NULL ? 0 : -ENOMEM;
  if (result == 0) {
    study_watch_tally(watch, counts);
    const char *status;
    json_t *n;
    json_object_foreach(counts, status, n) json_object_set(study_is_ended_status(status) ? ended : active, status, n);
    result = buffer_printf(text, "%lld/%zu runs ended", study_ended_runs(counts), json_object_size(watch->runs));
    if (result == 0 && json_object_size(ended) > 0) result = buffer_append_text(text, " (");
    if (result == 0) result = study_append_counts(text, ended);
    if (result == 0 && json_object_size(ended) > 0) result = buffer_append_text(text, ")");
    if (result == 0 && json_object_size(active) > 0) result = buffer_append_text(text, ", ");
    if (result == 0) result = study_append_counts(text, active);
  }
  json_decref(counts);
  json_decref(ended);
  json_decref(active);
  return result;
}

/* Rewrites the live line: the study's status and progress. A no-op when piped. */
static void study_watch_draw(study_watch_t *watch) {
  if (!watch->live.tty || !watch->live.dirty) return;
  buffer_t text = {0};
  buffer_printf(&text, "%s  ", watch->status[0] != '\0' ? watch->status : "connecting");
  study_watch_progress(watch, &text);
  live_line_draw(&watch->live, buffer_text(&text));
  buffer_free(&text);
}

/* What is now known of one run: prints a line when its status changed. A run that has
 * ended stays ended: an older event read after a newer record cannot take it back. */
static void study_watch_run(study_watch_t *watch, const json_t *run) {
  long long id;
  const char *status = format_json_string(run, "status");
  if (format_json_integer(run, "id", &id) != 0 || status == NULL) return;
  char key[32];
  snprintf(key, sizeof key, "%lld", id);
  json_t *known = json_object_get(watch->runs, key);
  if (known == NULL) { /* a run the record did not list yet */
    known = json_object();
    if (known == NULL || json_object_set_new(watch->runs, key, known) != 0) return;
  }
  const char *was = format_json_string(known, "status");
  if (format_json_string(run, "name") != NULL) json_object_set(known, "name", json_object_get(run, "name"));
  if (json_is_integer(json_object_get(run, "seed"))) json_object_set(known, "seed", json_object_get(run, "seed"));
  if (was != NULL && (strcmp(was, status) == 0 || study_is_ended_status(was))) return;
  json_object_set_new(known, "status", json_string(status));

  buffer_t text = {0};
  const char *name = format_json_string(known, "name");
  long long seed;
  buffer_printf(&text, "run %lld", id);
  if (name != NULL && name[0] != '\0') buffer_printf(&text, " %s", name);
  if (format_json_integer(known, "seed", &seed) == 0) buffer_printf(&text, " (seed %lld)", seed);
  buffer_printf(&text, ": %s", status);
  double accuracy;
  const char *error = format_json_string(run, "error");
  if (strcmp(status, "succeeded") == 0 &&
      format_json_number(json_object_get(run, "summary"), "final_test_accuracy", &accuracy) == 0)
    buffer_printf(&text, ", test accuracy %.2f%%", accuracy * 100);
  else if ((strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0) && error != NULL)
    buffer_printf(&text, ": %s", error);
  live_line_say(&watch->live, buffer_text(&text));
  /* Piped, the progress follows each run that ends; on a terminal the live line has it. */
  if (study_is_ended_status(status) && !watch->live.tty) {
    buffer_clear(&text);
    buffer_append_text(&text, "progress: ");
    study_watch_progress(watch, &text);
    live_line_say(&watch->live, buffer_text(&text));
  }
  buffer_free(&text);
  watch->live.dirty = 1;
}

/* The study's own status: a line when it changes, except to an end, which the closing
 * line reports. */
static void study_watch_status(study_watch_t *watch, const char *status) {
  if (status == NULL || strcmp(status, watch->status) == 0) return;
  snprintf(watch->status, sizeof watch->status, "%s", status);
  watch->live.dirty = 1;
  if (study_is_ended_status(status)) return;
  buffer_t text = {0};
  buffer_printf(&text, "study %lld", watch->id);
  if (watch->name != NULL && watch->name[0] != '\0') buffer_printf(&text, " (%s)", watch->name);
  buffer_printf(&text, ": %s", status);
  live_line_say(&watch->live, buffer_text(&text));
  buffer_free(&text);
}

/* Brings what is known up to date with the study's record (GET /api/studies/{id}). A
 * study has ended when its status is final and it has a finish time: a cancelled study
 * still has runs to stop until then. */
static void study_watch_apply(study_watch_t *watch, const json_t *study) {
  size_t i;
  const json_t *run;
  json_array_foreach(json_object_get(study, "runs"), i, run) study_watch_run(watch, run);
  const char *status = format_json_string(study, "status");
  study_watch_status(watch, status);
  if (study_is_ended_status(status) && format_json_string(study, "finished_at") != NULL) watch->ended = 1;
}

static int study_watch_on_event(const sse_event_t *event, void *user_data) {
  study_watch_t *watch = user_data;
  static const char *const known[] = {"study", "run", "end"};
  size_t kind = 0;
  while (kind < ARRAY_SIZE(known) && strcmp(event->type, known[kind]) != 0) kind++;
  if (kind == ARRAY_SIZE(known)) return 0; /* for other clients, or later versions */
  json_error_t error;
  json_t *data = json_loadb(event->data, event->data_length, 0, &error);
  if (!json_is_object(data)) {
    if (!watch->warned_malformed) {
      char text[320];
      snprintf(text, sizeof text, "ignoring a '%.40s' event whose data is not a JSON object%s%s", event->type,
               data == NULL ? ": " : "", data == NULL ? error.text : "");
      live_line_notice(&watch->live, text);
      watch->warned_malformed = 1;
    }
    json_decref(data);
    return 0;
  }
  watch->new_events++;
  if (watch->live.json) stream_print_event(event, data);
  int stop = 0;
  if (strcmp(event->type, "run") == 0) {
    study_watch_run(watch, data);
  } else if (strcmp(event->type, "study") == 0) {
    study_watch_status(watch, format_json_string(data, "status"));
  } else {
    watch->ended = 1;
    stop = 1; /* the daemon closes the stream now; no need to wait for it */
  }
  json_decref(data);
  return stop;
}

static void study_watch_check_response(study_watch_t *watch) {
  if (watch->response_checked) return;
  watch->response_checked = 1;
  char *type = NULL;
  curl_easy_getinfo(watch->curl, CURLINFO_RESPONSE_CODE, &watch->http_status);
  curl_easy_getinfo(watch->curl, CURLINFO_CONTENT_TYPE, &type);
  if (watch->http_status != 200 || type == NULL || strncasecmp(type, "text/event-stream", 17) != 0)
    watch->refused = 1;
}

static size_t study_watch_write(char *bytes, size_t size, size_t count, void *user_data) {
  study_watch_t *watch = user_data;
  size_t length = size * count;
  study_watch_check_response(watch);
  if (watch->refused) {
    buffer_append(&watch->refusal, bytes, length); /* for client_check */
    return length;
  }
  watch->streaming = 1; /* the daemon's ": connected": from here on nothing is missed */
  int result = sse_parser_feed(&watch->parser, bytes, length);
  if (result == 0) return length;
  if (result < 0) watch->stream_error = result;
  return 0; /* stop the transfer: the study ended, or the stream cannot be read */
}

/* Reads the study's record and applies it. */
static int study_watch_sync(study_watch_t *watch, const client_t *client) {
  char path[64];
  json_t *study = NULL;
  snprintf(path, sizeof path, "/api/studies/%lld", watch->id);
  live_line_erase(&watch->live); /* client_get_json may have something to say */
  int exit_code = client_get_json(client, path, &study);
  if (exit_code == CLI_EXIT_OK) study_watch_apply(watch, study);
  json_decref(study);
  return exit_code;
}

static study_watch_outcome_t study_watch_connect(study_watch_t *watch, const client_t *client, buffer_t *reason) {
  client_call_t call = {0};
  buffer_t path = {0};
  CURLM *multi = NULL;
  study_watch_outcome_t outcome = STUDY_WATCH_BROKEN;
  if (buffer_printf(&path, "/api/studies/%lld/stream", watch->id) != 0 ||
      client_call_init(client, &call, path.data) != 0 ||
      client_call_add_header(&call, "Accept: text/event-stream") != 0 ||
      client_call_add_header(&call, "Cache-Control: no-cache") != 0 || (multi = curl_multi_init()) == NULL) {
    live_line_notice(&watch->live, "out of memory");
    goto done;
  }
  CURL *curl = call.curl;
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, study_watch_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, watch);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, STREAM_IDLE_TIMEOUT_S);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, call.headers);
  call.error[0] = '\0';
  watch->curl = curl;
  watch->response_checked = watch->refused = watch->streaming = 0;
  watch->http_status = 0;
  watch->stream_error = 0;
  watch->new_events = 0;
  buffer_clear(&watch->refusal);
  sse_parser_reconnect(&watch->parser);
  if (curl_multi_add_handle(multi, curl) != CURLM_OK) {
    live_line_notice(&watch->live, "out of memory");
    goto done;
  }

  int running = 1, synced = 0, sync_failed = 0;
  CURLcode code = CURLE_OK;
  for (;;) {
    if (curl_multi_perform(multi, &running) != CURLM_OK) {
      code = CURLE_OUT_OF_MEMORY;
      break;
    }
    if (watch->ended || stream_interrupted()) break;
    if (watch->streaming && !synced) {
      synced = 1;
      if (study_watch_sync(watch, client) != CLI_EXIT_OK) {
        sync_failed = 1;
        break;
      }
      if (watch->ended) break;
      continue; /* read what arrived meanwhile before waiting */
    }
    if (!running) break;
    study_watch_draw(watch);
    if (curl_multi_poll(multi, NULL, 0, STUDY_WATCH_POLL_MS, NULL) != CURLM_OK) {
      code = CURLE_OUT_OF_MEMORY;
      break;
    }
  }
  int left;
  CURLMsg *message;
  while ((message = curl_multi_info_read(multi, &left)) != NULL)
    if (message->msg == CURLMSG_DONE && message->easy_handle == curl) code = message->data.result;
  if (code == CURLE_OK && !running) study_watch_check_response(watch); /* an empty answer never wrote */
  curl_multi_remove_handle(multi, curl);
  watch->curl = NULL;

  if (watch->ended) {
    outcome = STUDY_WATCH_ENDED;
  } else if (stream_interrupted()) {
    outcome = STUDY_WATCH_INTERRUPTED;
  } else if (sync_failed) {
    buffer_clear(reason);
    buffer_append_text(reason, "could not read the study after connecting to its stream");
    outcome = STUDY_WATCH_DROPPED;
  } else if (watch->refused) {
    live_line_erase(&watch->live);
    if (watch->http_status == 200) {
      fprintf(stderr, "mapsage: the server answered %s with something other than an event stream\n", path.data);
    } else {
      client_response_t response = {.status = watch->http_status, .body = watch->refusal};
      client_check(&response);
    }
    outcome = STUDY_WATCH_REFUSED;
  } else if (watch->stream_error != 0) {
    live_line_notice(&watch->live, watch->stream_error == -E2BIG
                                  ? "the stream sent an event larger than 16 MiB; giving up on it"
                                  : "out of memory");
  } else if (running) {
    live_line_notice(&watch->live, "libcurl failed to drive the stream");
  } else if (code == CURLE_OK) {
    buffer_clear(reason);
    buffer_append_text(reason, "the server closed the stream before the study ended");
    outcome = STUDY_WATCH_DROPPED;
  } else if (code == CURLE_OUT_OF_MEMORY) {
    live_line_notice(&watch->live, "out of memory");
  } else if (code == CURLE_UNSUPPORTED_PROTOCOL || code == CURLE_URL_MALFORMAT) {
    live_line_erase(&watch->live);
    outcome = client_call_report(client, &call, code) == CLI_EXIT_USAGE ? STUDY_WATCH_REFUSED : STUDY_WATCH_BROKEN;
  } else {
    buffer_clear(reason);
    buffer_printf(reason, "the connection broke: %s", call.error[0] != '\0' ? call.error : curl_easy_strerror(code));
    outcome = STUDY_WATCH_DROPPED;
  }
done:
  if (multi != NULL) curl_multi_cleanup(multi);
  client_call_free(&call);
  buffer_free(&path);
  return outcome;
}

/* Sleeps `milliseconds`, waking early for Ctrl-C. */
/* The closing line: how the study ended, in how long, its runs by status. */
static int study_watch_finish(study_watch_t *watch, const client_t *client) {
  char path[64];
  json_t *study = NULL;
  snprintf(path, sizeof path, "/api/studies/%lld", watch->id);
  /* Best effort: the stream said it ended; the record says how, and the last run changes. */
  live_line_erase(&watch->live);
  if (client_get_json(client, path, &study) == CLI_EXIT_OK) study_watch_apply(watch, study);
  const char *status = format_json_string(study, "status");
  if (status == NULL) status = watch->status[0] != '\0' ? watch->status : "ended";
  const char *error = format_json_string(study, "error");

  buffer_t text = {0};
  buffer_printf(&text, "study %lld %s", watch->id, status);
  double started, finished;
  if (format_parse_time(format_json_string(study, "started_at"), &started) == 0 &&
      format_parse_time(format_json_string(study, "finished_at"), &finished) == 0 && finished >= started) {
    char duration[32];
    format_duration(finished - started, duration, sizeof duration);
    buffer_printf(&text, " in %s", duration);
  }
  json_t *counts = json_object();
  if (counts != NULL) {
    study_watch_tally(watch, counts);
    size_t runs = json_object_size(watch->runs);
    buffer_printf(&text, ": %zu run%s, ", runs, runs == 1 ? "" : "s");
    study_append_counts(&text, counts);
  }
  json_decref(counts);
  live_line_say(&watch->live, buffer_text(&text));
  buffer_free(&text);

  int succeeded = strcmp(status, "succeeded") == 0;
  if (!succeeded) {
    if (error != NULL)
      fprintf(stderr, "mapsage: study %lld %s: %s\n", watch->id, status, error);
    else
      fprintf(stderr, "mapsage: study %lld %s\n", watch->id, status);
  }
  json_decref(study);
  return succeeded ? CLI_EXIT_OK : CLI_EXIT_FAILED;
}

int command_study_watch(const cli_global_t *global, int argc, char **argv) {
  long long id;
  int json = 0;
  int parsed = study_parse_id_command(global, "study watch", argc, argv, &id, &json, NULL);
  if (parsed != CLI_PROCEED) return parsed;

  client_t client = {0};
  json_t *study = NULL;
  buffer_t reason = {0};
  study_watch_t watch = {.id = id, .live.tty = !json && isatty(STDOUT_FILENO), .live.json = json,
                         .runs = json_object()};
  sse_parser_init(&watch.parser, study_watch_on_event, &watch);
  watch.refusal.limit = 64u << 10;
  struct sigaction previous;
  int handling_sigint = 0;
  int exit_code = watch.runs != NULL ? CLI_EXIT_OK : cli_out_of_memory();
  if (exit_code != CLI_EXIT_OK) goto done;

  /* The record first: it proves the study exists (a clean 404), names its runs and gives
   * their statuses, which no event repeats. */
  char path[64];
  snprintf(path, sizeof path, "/api/studies/%lld", id);
  exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_get_json(&client, path, &study);
  if (exit_code != CLI_EXIT_OK) goto done;
  const char *name = format_json_string(study, "name");
  if (name != NULL && (watch.name = strdup(name)) == NULL) {
    exit_code = cli_out_of_memory();
    goto done;
  }
  /* Known without a line each: only changes from here on are news. */
  size_t i;
  const json_t *run;
  json_array_foreach(json_object_get(study, "runs"), i, run) {
    long long run_id;
    char key[32];
    if (format_json_integer(run, "id", &run_id) != 0) continue;
    snprintf(key, sizeof key, "%lld", run_id);
    json_object_set_new(watch.runs, key,
                        json_pack("{s:O?, s:O?, s:O?}", "name", json_object_get(run, "name"), "seed",
                                  json_object_get(run, "seed"), "status", json_object_get(run, "status")));
  }
  const char *status = format_json_string(study, "status");
  snprintf(watch.status, sizeof watch.status, "%s", status != NULL ? status : "");
  buffer_t text = {0};
  buffer_printf(&text, "study %lld", id);
  if (watch.name != NULL && watch.name[0] != '\0') buffer_printf(&text, " (%s)", watch.name);
  buffer_printf(&text, ": %s, %zu run%s", status != NULL ? status : "?", json_object_size(watch.runs),
                json_object_size(watch.runs) == 1 ? "" : "s");
  live_line_say(&watch.live, buffer_text(&text));
  buffer_free(&text);
  watch.live.dirty = 1;
  if (study_is_ended_status(status) && format_json_string(study, "finished_at") != NULL) {
    /* No stream to print with --json: the study as it ended stands for it. */
    if (json) {
      json_t *line = json_pack("{s:s, s:O}", "event", "study", "data", study);
      if (line != NULL) json_dumpf(line, stdout, JSON_COMPACT);
      putchar('\n');
      json_decref(line);
    }
    exit_code = study_watch_finish(&watch, &client);
    goto done;
  }

  /* Ctrl-C from here on ends the watching cleanly (exit 130). No SA_RESTART, so a pause
   * between reconnections wakes up. */
  handling_sigint = stream_catch_interrupt(&previous);
  int failures = 0;
  for (;;) {
    double connected_at = util_monotonic();
    study_watch_outcome_t outcome = study_watch_connect(&watch, &client, &reason);
    if (outcome == STUDY_WATCH_ENDED) {
      exit_code = study_watch_finish(&watch, &client);
      break;
    }
    if (outcome == STUDY_WATCH_INTERRUPTED) {
      live_line_close(&watch.live); /* leave the last state readable */
      exit_code = CLI_EXIT_INTERRUPTED;
      break;
    }
    if (outcome == STUDY_WATCH_REFUSED || outcome == STUDY_WATCH_BROKEN) {
      exit_code = CLI_EXIT_FAILED;
      break;
    }
    if (watch.new_events > 0 || util_monotonic() - connected_at >= STREAM_HEALTHY_S) failures = 0;
    if (++failures > STREAM_RETRIES) {
      char message[512];
      snprintf(message, sizeof message, "lost the stream of study %lld and could not get it back: %s", id,
               buffer_text(&reason));
      live_line_notice(&watch.live, message);
      exit_code = CLI_EXIT_UNREACHABLE;
      break;
    }
    long pause = stream_backoff_ms(watch.parser.retry_ms, failures);
    char message[512];
    snprintf(message, sizeof message, "%s; reconnecting in %.1fs (try %d of %d)", buffer_text(&reason),
             pause / 1000.0, failures, STREAM_RETRIES);
    live_line_notice(&watch.live, message);
    stream_pause(pause);
    if (stream_interrupted()) {
      exit_code = CLI_EXIT_INTERRUPTED;
      break;
    }
  }

done:
  live_line_erase(&watch.live);
  if (handling_sigint) sigaction(SIGINT, &previous, NULL);
  sse_parser_free(&watch.parser);
  live_line_close(&watch.live);
  buffer_free(&watch.refusal);
  buffer_free(&reason);
  free(watch.name);
  json_decref(watch.runs);
  json_decref(study);
  client_close(&client);
  return exit_code;
}
