/* fuzz_event.c — libFuzzer target for the worker → daemon event protocol (common/event.c)
 * and for what the daemon does with an event it accepted (daemon/db_batch.c).
 *
 * A worker may be buggy or hostile, so every input is one line it could print. When
 * ev_parse() accepts it, the fields event.h promises must hold (asserted below), and the
 * daemon must be able to keep it: a metric, eval or stage event goes into the write batch
 * of an in-memory database exactly as the scheduler puts it there, the batch must commit,
 * and replaying the step must give the event back with the same values. The other events
 * take the scheduler's paths too (the worker report, a checkpoint row, a log line). Every
 * input is also parsed with a space in front, which only jansson reads: metric lines read
 * directly (event.c) must give the very event, or the very refusal, jansson gives. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "db.h"
#include "event.h"

#include "fuzz.h"

#define DB_RESET_EVERY 4096 /* inputs between fresh databases: memory stays bounded */

static db_t *db;
static int64_t experiment_id; /* a new one for each input */
static unsigned inputs;

static void open_db(void) {
  char error[256] = "";
  if (db) db_close(db);
  db = NULL;
  FUZZ_CHECK(db_open(":memory:", &db, error, sizeof error) == 0, "db_open: %s", error);
}

static void new_experiment(void) {
  FUZZ_CHECK(db_experiment_insert(db, "fuzz", 0, 0, "{\"stages\":[{\"epochs\":1}]}", &experiment_id) == 0,
             "cannot insert an experiment");
}

static void close_db(void) {
  db_close(db);
  db = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  open_db();
  atexit(close_db); /* a clean exit frees everything: leak checking stays meaningful */
  return 0;
}

/* The values event.h promises: finite numbers under unique names of 1 to EV_NAME_MAX - 1
 * bytes. */
static void check_values(const ev_t *event) {
  FUZZ_CHECK(event->n_values >= 0 && (event->n_values == 0 || event->values), "%d values", event->n_values);
  for (int i = 0; i < event->n_values; i++) {
    size_t length = strlen(event->values[i].name);
    FUZZ_CHECK(length >= 1 && length < EV_NAME_MAX, "a name of %zu bytes", length);
    FUZZ_CHECK(isfinite(event->values[i].value), "values.%s is not a finite number", event->values[i].name);
    for (int j = 0; j < i; j++)
      FUZZ_CHECK(strcmp(event->values[i].name, event->values[j].name) != 0, "values.%s twice", event->values[i].name);
  }
}

static void check_event(const ev_t *event) {
  FUZZ_CHECK(json_is_object(event->root) || event->type == EV_METRIC, "no root object");
  switch (event->type) {
  case EV_METRIC:
    FUZZ_CHECK(event->step >= 1, "metric step %lld", (long long)event->step);
    FUZZ_CHECK(event->epoch >= 0 && event->stage >= 0, "epoch %lld stage %lld", (long long)event->epoch,
               (long long)event->stage);
    check_values(event);
    break;
  case EV_EVAL:
    FUZZ_CHECK(event->step >= 0, "eval step %lld", (long long)event->step);
    FUZZ_CHECK(event->epoch >= 0 && event->stage >= 0, "epoch %lld stage %lld", (long long)event->epoch,
               (long long)event->stage);
    FUZZ_CHECK((unsigned)event->split < EV_SPLIT_COUNT, "split %d", (int)event->split);
    FUZZ_CHECK(ev_split_from_name(ev_split_name(event->split)) == (int)event->split, "split %d", (int)event->split);
    check_values(event);
    break;
  case EV_CHECKPOINT:
    FUZZ_CHECK(event->path != NULL, "no path");
    FUZZ_CHECK(event->step >= 0 && event->epoch >= 0 && event->bytes >= 0, "step %lld epoch %lld bytes %lld",
               (long long)event->step, (long long)event->epoch, (long long)event->bytes);
    break;
  case EV_FINISHED:
    FUZZ_CHECK(event->status && (strcmp(event->status, "succeeded") == 0 || strcmp(event->status, "failed") == 0),
               "status %s", event->status ? event->status : "(null)");
    FUZZ_CHECK(strcmp(event->status, "failed") != 0 || event->error != NULL, "a failure without an error");
    break;
  case EV_STAGE:
    FUZZ_CHECK(event->name && event->name[0] && strlen(event->name) < EV_NAME_MAX, "stage name");
    FUZZ_CHECK(event->step >= 0 && event->epoch >= 1 && event->stage >= 0, "step %lld epoch %lld stage %lld",
               (long long)event->step, (long long)event->epoch, (long long)event->stage);
    break;
  case EV_LOG:
    FUZZ_CHECK(json_is_string(json_object_get(event->root, "message")), "log without a message");
    break;
  case EV_STARTED:
  case EV_UNKNOWN:
    break;
  default:
    FUZZ_CHECK(0, "type %d", (int)event->type);
  }
}

/* What replaying the event's step found. */
typedef struct {
  const ev_t *event;
  int found;
} replay_t;

static int phase_of(const ev_t *event) {
  return event->type == EV_STAGE ? EV_PHASE_STAGE : event->type == EV_EVAL ? 1 + (int)event->split : EV_PHASE_METRIC;
}

static void on_replayed(void *context, const ev_t *replayed) {
  replay_t *replay = context;
  const ev_t *event = replay->event;
  /* The experiment is this input's own: the replay holds this event and nothing else. */
  FUZZ_CHECK(!replay->found, "the event came back twice");
  replay->found = 1;
  FUZZ_CHECK(replayed->type == event->type && replayed->step == event->step && replayed->epoch == event->epoch &&
                 replayed->stage == event->stage && phase_of(replayed) == phase_of(event),
             "sent type %d step %lld epoch %lld stage %lld phase %d; replayed type %d step %lld epoch %lld stage %lld "
             "phase %d", (int)event->type, (long long)event->step, (long long)event->epoch, (long long)event->stage,
             phase_of(event), (int)replayed->type, (long long)replayed->step, (long long)replayed->epoch,
             (long long)replayed->stage, phase_of(replayed));
  if (event->type == EV_STAGE) {
    FUZZ_CHECK(strcmp(replayed->name, event->name) == 0, "stage \"%s\" came back as \"%s\"", event->name,
               replayed->name);
    return;
  }
  FUZZ_CHECK(replayed->n_values == event->n_values, "sent %d values, replayed %d", event->n_values,
             replayed->n_values);
  for (int i = 0; i < event->n_values; i++) {
    double back;
    const char *name = event->values[i].name;
    FUZZ_CHECK(ev_find_value(replayed, name, &back), "values.%s is missing from the replay", name);
    FUZZ_CHECK(back == event->values[i].value, "values.%s: stored %.17g, replayed %.17g", name,
               event->values[i].value, back);
  }
}

/* The scheduler's handle_event_line(), minus the worker and the streams. */
static void keep_event(ev_t *event, const char *line, size_t length) {
  switch (event->type) {
  case EV_METRIC:
  case EV_EVAL:
  case EV_STAGE: {
    FUZZ_CHECK(db_batch_event(db, experiment_id, event) == 0, "db_batch_event failed");
    int result = db_flush(db);
    FUZZ_CHECK(result == 0, "an accepted event could not be stored: %s", strerror(-result));
    replay_t replay = {event, 0};
    /* Everything after (step, phase - 1): the event itself and what follows it at its step. */
    int phase = phase_of(event);
    int64_t from = phase > 0 ? event->step : event->step - 1;
    FUZZ_CHECK(db_replay(db, experiment_id, from, phase > 0 ? phase - 1 : EV_PHASE_LAST, event->step, on_replayed,
                         &replay) >= 0,
               "replay failed");
    /* An event without values stores no row (the live stream still sees it): nothing to find. */
    if (event->type == EV_STAGE || event->n_values > 0)
      FUZZ_CHECK(replay.found, "the event at step %lld (phase %d) did not come back", (long long)event->step, phase);
    break;
  }
  case EV_STARTED: {
    json_object_del(event->root, "event");
    char *text = json_dumps(event->root, JSON_COMPACT);
    FUZZ_CHECK(text != NULL, "the worker report does not serialise");
    FUZZ_CHECK(db_experiment_set_worker(db, experiment_id, text) == 0, "set_worker failed");
    free(text);
    json_t *experiment = db_experiment_get(db, experiment_id, 1);
    FUZZ_CHECK(experiment != NULL, "the experiment is gone");
    json_decref(experiment);
    break;
  }
  case EV_FINISHED: {
    json_t *summary = json_object_get(event->root, "summary");
    char *text = json_is_object(summary) ? json_dumps(summary, JSON_COMPACT) : NULL;
    free(text);
    break;
  }
  case EV_LOG: {
    const char *message = json_string_value(json_object_get(event->root, "message"));
    FUZZ_CHECK(db_batch_log(db, experiment_id, 1, (int64_t)inputs, message, strlen(message)) == 0, "batch_log");
    FUZZ_CHECK(db_flush(db) == 0, "a log line could not be stored");
    break;
  }
  case EV_CHECKPOINT:
    FUZZ_CHECK(db_checkpoint_add(db, experiment_id, event->epoch, event->step, event->path, event->bytes) == 0,
               "a checkpoint could not be stored");
    break;
  case EV_UNKNOWN:
    FUZZ_CHECK(db_batch_log(db, experiment_id, 1, (int64_t)inputs, line, length) == 0, "batch_log");
    FUZZ_CHECK(db_flush(db) == 0, "an unknown event could not be logged");
    break;
  }
}

/* The same input with a space in front goes to jansson: the same event or the same
 * refusal. (Refusals may be worded apart: jansson counts the space in its column.) */
static void check_same_by_jansson(const char *line, size_t size, int result, const ev_t *event) {
  char *spaced = malloc(size + 1);
  FUZZ_CHECK(spaced != NULL, "out of memory");
  spaced[0] = ' ';
  memcpy(spaced + 1, line, size);
  ev_t other;
  char error[256];
  int other_result = ev_parse(spaced, size + 1, &other, error, sizeof error);
  free(spaced);
  FUZZ_CHECK(other_result == result, "read directly %d, by jansson %d", result, other_result);
  if (result != 0) return;
  FUZZ_CHECK(other.type == event->type && other.step == event->step && other.epoch == event->epoch &&
                 other.stage == event->stage && other.n_values == event->n_values,
             "read directly and by jansson differ");
  for (int i = 0; i < event->n_values; i++)
    FUZZ_CHECK(strcmp(other.values[i].name, event->values[i].name) == 0 &&
                   memcmp(&other.values[i].value, &event->values[i].value, sizeof(double)) == 0,
               "values[%d] differ: %s %.17g, by jansson %s %.17g", i, event->values[i].name, event->values[i].value,
               other.values[i].name, other.values[i].value);
  ev_release(&other);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (++inputs % DB_RESET_EVERY == 0) open_db();
  new_experiment();
  const char *line = (const char *)data;
  ev_t event;
  char error[256];
  memset(error, 0, sizeof error);
  int result = ev_parse(line, size, &event, error, sizeof error);
  check_same_by_jansson(line, size, result, &event);
  if (result != 0) {
    FUZZ_CHECK(result == -EINVAL, "ev_parse returned %d", result);
    FUZZ_CHECK(error[0] != '\0', "refused without a reason");
    FUZZ_CHECK(event.root == NULL, "a refused event holds a root");
    /* The scheduler logs the refused line: it must be storable as text. */
    FUZZ_CHECK(db_batch_log(db, experiment_id, 1, (int64_t)inputs, line, size) == 0, "batch_log");
    FUZZ_CHECK(db_flush(db) == 0, "a refused line could not be logged");
    return 0;
  }
  check_event(&event);
  keep_event(&event, line, size);
  ev_release(&event);
  return 0;
}
