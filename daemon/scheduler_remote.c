/* scheduler_remote.c — runs whose worker runs elsewhere and posts its events over HTTP
 * (POST /api/experiments/{id}/events, sched_post_events in scheduler.h): a worker started
 * by hand (`mapsage-worker --server`) or a Slurm job's (slurm.c). A remote run is claimed by
 * its first post and ended by its `finished` event, a cancel, a silence of
 * --remote-timeout, or what Slurm says of its job; it shares run_t and
 * sched_apply_event_line() with local workers. Its later posts must carry the secret its
 * claim was answered with, or that its job was given (docs/security.md, "Remote workers"). */
#include "scheduler_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "util.h"

remote_t *sched_find_remote(sched_t *sched, int64_t id) {
  for (remote_t *r = sched->remotes; r; r = r->next)
    if (r->run.experiment_id == id) return r;
  return NULL;
}

void sched_forget_remote(sched_t *sched, remote_t *remote) {
  for (remote_t **link = &sched->remotes; *link; link = &(*link)->next) {
    if (*link == remote) {
      *link = remote->next;
      break;
    }
  }
  sched_free_run(&remote->run);
  free(remote);
}

// ---------------------------------------------------------------------------------------
// remote runs: events over HTTP

/* A remote worker that stopped posting (its node died, the cluster killed its job) would
 * leave its run `running` for ever: after options.remote_timeout_s of silence the run is
 * interrupted, to run again (here, or for the next worker that posts). */
static void on_remote_timer(uv_timer_t *timer) {
  sched_t *sched = timer->data;
  const double now = util_monotonic();
  for (remote_t *remote = sched->remotes, *next; remote; remote = next) {
    next = remote->next;
    if (now - remote->last_post < sched->options.remote_timeout_s) continue;
    char error[256];
    snprintf(error, sizeof error, "no events from its remote worker for %u s; it will run again",
             sched->options.remote_timeout_s);
    sched_log_printf(&remote->run, "[mapsaged] %s", error);
    fprintf(stderr, "mapsaged: experiment %lld interrupted: %s\n", (long long)remote->run.experiment_id, error);
    sched_flush_batch(sched);
    sched_record_outcome(sched, &(outcome_t){.experiment_id = remote->run.experiment_id, .status = DB_INTERRUPTED,
                                       .error = error});
    sched_forget_remote(sched, remote);
  }
  if (sched->remotes == NULL) uv_timer_stop(timer);
  sched_kick(sched);
}

/* Calls `each` with every non-empty line of `body` (a final '\r' taken off) and its
 * 1-based number; stops when it returns nonzero. */
static void for_each_line(const char *body, size_t length,
                          int (*each)(void *context, const char *line, size_t length, int number), void *context) {
  int number = 0;
  for (size_t at = 0; at < length;) {
    const char *end = memchr(body + at, '\n', length - at);
    size_t line_length = end ? (size_t)(end - (body + at)) : length - at;
    number++;
    size_t kept = line_length > 0 && body[at + line_length - 1] == '\r' ? line_length - 1 : line_length;
    if (kept > 0 && each(context, body + at, kept, number)) return;
    at += line_length + 1;
  }
}

typedef struct {
  sched_post_t *post;
  run_t *run;
} post_context_t;

static int check_line(void *context, const char *line, size_t length, int number) {
  sched_post_t *post = ((post_context_t *)context)->post;
  ev_t event;
  char error[256];
  if (length > EV_LINE_MAX)
    snprintf(error, sizeof error, "longer than %d bytes", EV_LINE_MAX);
  else if (ev_parse(line, length, &event, error, sizeof error) == 0) {
    ev_release(&event);
    return 0;
  }
  if (post->errors == NULL) post->errors = json_array();
  json_array_append_new(post->errors, json_pack("{s:i, s:s}", "line", number, "message", error));
  return json_array_size(post->errors) >= 100; /* enough to fix the sender */
}

static int apply_line(void *context, const char *line, size_t length, int number) {
  post_context_t *post_context = context;
  sched_post_t *post = post_context->post;
  char refusal[PATH_MAX + 256];
  if (sched_apply_event_line(post_context->run, line, length, refusal, sizeof refusal) != 0) {
    if (post->refused == NULL) post->refused = json_array();
    json_array_append_new(post->refused, json_pack("{s:i, s:s}", "line", number, "message", refusal));
    return 0;
  }
  post->accepted++;
  return 0;
}

/* Compares in time that depends on the length only: a poster learns nothing from how long
 * a wrong guess took. */
static int secrets_equal(const char *given, const char *expected) {
  size_t length = strlen(expected);
  if (strlen(given) != length) return 0;
  unsigned char difference = 0;
  for (size_t i = 0; i < length; i++) difference |= (unsigned char)(given[i] ^ expected[i]);
  return difference == 0;
}

int sched_post_events(sched_t *sched, int64_t id, const char *body, size_t length, const char *secret,
                      sched_post_t *post) {
  memset(post, 0, sizeof *post);
  if (sched->stopping) return -ESHUTDOWN;
  db_t *db = sched->options.db;
  int result = db_experiment_status(db, id, post->status, sizeof post->status);
  if (result != 0) return result;
  const int pid = local_pid(sched, id);
  if (pid) {
    snprintf(post->message, sizeof post->message, "experiment %lld runs on a worker of this daemon (pid %d)",
             (long long)id, pid);
    return -EBUSY;
  }
  remote_t *remote = sched_find_remote(sched, id);
  if (remote == NULL && db_status_is_terminal(post->status)) {
    snprintf(post->message, sizeof post->message, "experiment %lld has ended (%s): stop its worker", (long long)id,
             post->status);
    return -EALREADY;
  }
  if (remote == NULL && strcmp(post->status, DB_RUNNING) == 0) {
    snprintf(post->message, sizeof post->message, "experiment %lld is running and its events come from elsewhere",
             (long long)id);
    return -EBUSY;
  }
  /* A secret names a claimed attempt. With none claimed, the attempt it was given for has
   * ended (interrupted: timed out, or the daemon restarted): its worker must stop rather
   * than claim the run again behind the back of whoever runs it next. */
  /* A Slurm job's worker was given its run's secret beforehand (slurm.c): its first post
   * carries it, and no other poster can claim the run. */
  const char *expected = sched->slurm ? slurm_secret(sched->slurm, id) : NULL;
  if (remote == NULL && expected && (secret == NULL || !secrets_equal(secret, expected))) {
    snprintf(post->message, sizeof post->message,
             "experiment %lld runs as a Slurm job of this daemon: its posts must carry the job's X-MapSage-Run-Secret",
             (long long)id);
    return -EACCES;
  }
  if (remote == NULL && secret && !expected) {
    snprintf(post->message, sizeof post->message,
             "experiment %lld is %s: the attempt this X-MapSage-Run-Secret was given for has ended; stop",
             (long long)id, post->status);
    return -EALREADY;
  }
  if (remote && (secret == NULL || !secrets_equal(secret, remote->secret))) {
    snprintf(post->message, sizeof post->message,
             secret ? "experiment %lld, attempt %d: the X-MapSage-Run-Secret is not this attempt's (it was claimed "
                      "by another worker, or this one's attempt ended)"
                    : "experiment %lld, attempt %d, is claimed by a worker: its posts must carry the "
                      "X-MapSage-Run-Secret its first post was answered with",
             (long long)id, remote->run.attempt);
    return -EACCES;
  }
  /* Every line is checked before any is applied: a post is taken whole or not at all. */
  post_context_t context = {post, NULL};
  for_each_line(body, length, check_line, &context);
  if (post->errors) return -EINVAL;
  if (remote == NULL) { /* queued or interrupted: the first post claims it */
    if ((remote = calloc(1, sizeof *remote)) == NULL) return -ENOMEM;
    remote->run.sched = sched;
    remote->run.experiment_id = id;
    json_t *experiment = db_experiment_get(db, id, 1);
    remote->run.planned_epochs = sched_planned_epochs(json_object_get(experiment, "config"));
    json_decref(experiment);
    if (expected) util_strlcpy(remote->secret, expected, sizeof remote->secret);
    if ((!expected && (result = util_random_hex(remote->secret, SCHED_SECRET_BYTES)) != 0) ||
        (result = db_experiment_start(db, id, &remote->run.attempt)) != 0) {
      free(remote);
      return result;
    }
    /* Where its checkpoints must be: the worker writes there when the data directory is
     * shared storage it sees at the same path. */
    char directory[PATH_MAX];
    sched_experiment_directory(sched, id, directory, sizeof directory);
    util_make_directories(directory);
    util_strlcpy(post->secret, remote->secret, sizeof post->secret);
    remote->next = sched->remotes;
    sched->remotes = remote;
    if (!uv_is_active((uv_handle_t *)&sched->remote_timer))
      uv_timer_start(&sched->remote_timer, on_remote_timer, 1000, 1000);
    fprintf(stderr, "mapsaged: experiment %lld started (attempt %d, remote: events over HTTP)\n", (long long)id,
            remote->run.attempt);
    sched_status_changed(sched, id);
  }
  context.run = &remote->run;
  remote->last_post = util_monotonic();
  for_each_line(body, length, apply_line, &context);
  if (remote->run.finished_status) {
    int succeeded = strcmp(remote->run.finished_status, "succeeded") == 0;
    outcome_t outcome = {.experiment_id = id,
                         .status = succeeded ? DB_SUCCEEDED : DB_FAILED,
                         .error = succeeded                    ? NULL
                                  : remote->run.finished_error ? remote->run.finished_error
                                                               : "the worker reported a failure without saying why",
                         .summary = succeeded ? remote->run.summary_json : NULL};
    sched_flush_batch(sched);
    sched_record_outcome(sched, &outcome);
    fprintf(stderr, "mapsaged: experiment %lld %s (remote)\n", (long long)id, outcome.status);
    sched_forget_remote(sched, remote);
    sched_kick(sched);
  }
  db_experiment_status(db, id, post->status, sizeof post->status);
  return 0;
}
