/* event.h — the worker → daemon event protocol: one JSON object per line.
 *
 * A worker writes events on its stdout (ev_write_*); the daemon reads lines from the pipe
 * (or from POST /api/experiments/{id}/events) and parses each with ev_parse(). Every event
 * has "event"; the other fields depend on it:
 *
 *   started     pid, host, threads, version, params, dataset, blas, kernels
 *   metric      step, epoch, stage, values {name: number}
 *   eval        step, epoch, stage, split ("train"|"val"|"test"|"teacher"), values {name: number}
 *   checkpoint  step, epoch, path, bytes
 *   stage       step (steps done before it), epoch (its first, 1-based), stage, name
 *   log         level, message
 *   finished    status ("succeeded"|"failed"), summary {…}, error
 *
 * Steps count optimizer updates from 1. An eval event carries the step after which it was
 * computed. Metric names are '/'-separated (loss/total, lr, grad_norm/fc1, …); an eval's
 * value names are relative to its split ("accuracy" in split "test" is test/accuracy).
 * Unknown event types parse as EV_UNKNOWN: the daemon keeps them in the log, they are not
 * an error. */
#ifndef MAPSAGE_EVENT_H
#define MAPSAGE_EVENT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#define EV_NAME_MAX 128        /* longest metric name, including the NUL */
#define EV_LINE_MAX (1 << 20)  /* longest event line the daemon accepts */

typedef enum {
  EV_UNKNOWN = 0,
  EV_STARTED,
  EV_METRIC,
  EV_EVAL,
  EV_CHECKPOINT,
  EV_LOG,
  EV_FINISHED,
  EV_STAGE,
} ev_type_t;

/* Splits in the order a worker evaluates them after an epoch; the SSE stream and its replay
 * order eval events by this index. */
typedef enum { EV_SPLIT_TRAIN = 0, EV_SPLIT_VAL, EV_SPLIT_TEST, EV_SPLIT_TEACHER, EV_SPLIT_COUNT } ev_split_t;

/* Where an event stands among those of the same step, in stream order: the step's metric
 * event, its evals (1 + split), then the start of the next stage. An SSE id is
 * "<step>.<phase>" ("<step>" for phase 0). */
#define EV_PHASE_METRIC 0
#define EV_PHASE_STAGE (EV_SPLIT_COUNT + 1)
#define EV_PHASE_LAST EV_PHASE_STAGE
const char *ev_split_name(ev_split_t split);
int ev_split_from_name(const char *name); /* the ev_split_t, or -1 */

/* One value of a metric or eval event. */
typedef struct {
  const char *name; /* 1 to EV_NAME_MAX - 1 bytes */
  double value;     /* finite */
} ev_value_t;

/* A parsed event. `root` and `storage` own everything; the other members point into them.
 * A metric line as workers write it (json_dumps' compact form) is read without building a
 * JSON tree (root is then NULL): that line is most of what a daemon ever parses. */
typedef struct {
  ev_type_t type;
  json_t *root;        /* the parsed object (NULL for a metric line read directly) */
  void *storage;       /* the values (and, read directly, their names) */
  int64_t step;        /* metric, eval, checkpoint */
  int64_t epoch;       /* metric, eval, checkpoint (1-based) */
  int64_t stage;       /* metric, eval (0-based index into the config's stages) */
  ev_split_t split;    /* eval */
  const ev_value_t *values; /* metric, eval: in the line's order, names unique */
  int n_values;
  const char *status;  /* finished */
  const char *error;   /* finished: NULL when it succeeded */
  const char *path;    /* checkpoint */
  const char *name;    /* stage */
  int64_t bytes;       /* checkpoint */
} ev_t;

/* Parses one line (without its newline). Returns 0 and fills `out` (release it with
 * ev_release), or -EINVAL with the reason in `error`. */
int ev_parse(const char *line, size_t length, ev_t *out, char *error, size_t error_size);
void ev_release(ev_t *event);
/* The value named `name` (1) into *value, or 0 when the event has none. */
int ev_find_value(const ev_t *event, const char *name, double *value);

/* --- writing (the worker) -------------------------------------------------------------- */

/* Writes one event object as a line and flushes, so the daemon sees it at once. Steals the
 * reference to `event`. Returns 0 or -errno. */
int ev_write(FILE *out, json_t *event);

/* Conveniences over ev_write for the frequent events; `values` is stolen. */
int ev_write_metric(FILE *out, int64_t step, int64_t epoch, int64_t stage, json_t *values);
int ev_write_eval(FILE *out, int64_t step, int64_t epoch, int64_t stage, ev_split_t split, json_t *values);
int ev_write_stage(FILE *out, int64_t step, int64_t epoch, int64_t stage, const char *name);
int ev_write_log(FILE *out, const char *level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif
