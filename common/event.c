/* event.c — parsing and writing the worker → daemon event lines (see event.h). The parser
 * is the daemon's only view of a worker, which may be buggy or hostile: it checks every
 * type and bound it relies on and never trusts a field it did not check. */
#include "event.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const split_names[EV_SPLIT_COUNT] = {"train", "val", "test", "teacher"};

const char *ev_split_name(ev_split_t split) {
  return (unsigned)split < EV_SPLIT_COUNT ? split_names[split] : "?";
}

int ev_split_from_name(const char *name) {
  for (int i = 0; i < EV_SPLIT_COUNT; i++)
    if (strcmp(name, split_names[i]) == 0) return i;
  return -1;
}

static const struct {
  const char *name;
  ev_type_t type;
} event_types[] = {
    {"started", EV_STARTED}, {"metric", EV_METRIC}, {"eval", EV_EVAL},
    {"checkpoint", EV_CHECKPOINT}, {"log", EV_LOG}, {"finished", EV_FINISHED}, {"stage", EV_STAGE},
};

/* Reads a non-negative integer member; a real with an integral value is accepted too. */
static int get_count(json_t *root, const char *key, int64_t minimum, int64_t *out,
                     char *error, size_t error_size) {
  json_t *value = json_object_get(root, key);
  if (!json_is_integer(value)) {
    snprintf(error, error_size, "%s: %s", key, value ? "must be an integer" : "is missing");
    return -EINVAL;
  }
  *out = json_integer_value(value);
  if (*out < minimum) {
    snprintf(error, error_size, "%s: must be at least %lld", key, (long long)minimum);
    return -EINVAL;
  }
  return 0;
}

/* Checks the values object and lists its members in out->values (names owned by root). */
static int take_values(json_t *values, ev_t *out, char *error, size_t error_size) {
  if (!json_is_object(values)) {
    snprintf(error, error_size, "values: %s", values ? "must be an object" : "is missing");
    return -EINVAL;
  }
  ev_value_t *list = malloc((json_object_size(values) + 1) * sizeof *list);
  if (list == NULL) {
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  out->storage = list;
  out->values = list;
  const char *name;
  json_t *number;
  json_object_foreach(values, name, number) {
    size_t length = strlen(name);
    if (length == 0 || length >= EV_NAME_MAX) {
      snprintf(error, error_size, "values: a metric name must have 1 to %d characters", EV_NAME_MAX - 1);
      return -EINVAL;
    }
    if (!json_is_number(number) || !isfinite(json_number_value(number))) {
      snprintf(error, error_size, "values.%s: must be a finite number", name);
      return -EINVAL;
    }
    list[out->n_values++] = (ev_value_t){name, json_number_value(number)};
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// metric lines read directly

/* The metric line exactly as json_dumps(JSON_COMPACT) writes it is read here without a
 * JSON tree. Anything else, even valid JSON (spaces, another member order, an escape in a
 * name, a number this reader does not take), returns 0 and goes to jansson, which then
 * decides: this reader accepts only lines jansson accepts too, with the same result. */
#define DIRECT_MAX_VALUES 64 /* more goes to jansson (names are checked for repeats pairwise) */

/* An integer without sign or leading zero, up to 18 digits. */
static const char *direct_count(const char *at, const char *end, int64_t *out) {
  const char *start = at;
  int64_t value = 0;
  while (at < end && *at >= '0' && *at <= '9' && at - start < 18) value = value * 10 + (*at++ - '0');
  if (at == start || (*start == '0' && at - start > 1) || (at < end && *at >= '0' && *at <= '9')) return NULL;
  *out = value;
  return at;
}

/* A JSON number (the grammar checked here, its value by strtod), finite. An integer is
 * what jansson makes of it: an int64 (-0 is 0), so one beyond 18 digits goes to jansson. */
static const char *direct_number(const char *at, const char *end, double *out) {
  const char *start = at;
  int negative = at < end && *at == '-';
  at += negative;
  if (at == end || *at < '0' || *at > '9') return NULL;
  if (*at == '0') at++;
  else while (at < end && *at >= '0' && *at <= '9') at++;
  if (at == end || (*at != '.' && *at != 'e' && *at != 'E')) {
    int64_t integer;
    if (direct_count(start + negative, at, &integer) != at) return NULL;
    *out = negative ? -(double)integer : (double)integer;
    if (*out == 0) *out = 0; /* not -0 */
    return at;
  }
  if (at < end && *at == '.') {
    const char *digits = ++at;
    while (at < end && *at >= '0' && *at <= '9') at++;
    if (at == digits) return NULL;
  }
  if (at < end && (*at == 'e' || *at == 'E')) {
    at++;
    if (at < end && (*at == '+' || *at == '-')) at++;
    const char *digits = at;
    while (at < end && *at >= '0' && *at <= '9') at++;
    if (at == digits) return NULL;
  }
  if (at - start > 40) return NULL;
  char copy[48];
  memcpy(copy, start, (size_t)(at - start));
  copy[at - start] = '\0';
  *out = strtod(copy, NULL);
  return isfinite(*out) ? at : NULL;
}

static int expect(const char **at, const char *end, const char *literal) {
  size_t length = strlen(literal);
  if ((size_t)(end - *at) < length || memcmp(*at, literal, length) != 0) return 0;
  *at += length;
  return 1;
}

/* 1 when `line` was a metric line read directly into `out`, 0 to let jansson read it. */
static int parse_metric_directly(const char *line, size_t length, ev_t *out) {
  const char *at = line, *end = line + length;
  int64_t step, epoch, stage;
  if (!expect(&at, end, "{\"event\":\"metric\",\"step\":") || !(at = direct_count(at, end, &step)) || step < 1 ||
      !expect(&at, end, ",\"epoch\":") || !(at = direct_count(at, end, &epoch)) ||
      !expect(&at, end, ",\"stage\":") || !(at = direct_count(at, end, &stage)) ||
      !expect(&at, end, ",\"values\":{"))
    return 0;
  /* One block: the values, then a copy of the line for their names. */
  ev_value_t *values = malloc(DIRECT_MAX_VALUES * sizeof *values + length + 1);
  if (values == NULL) return 0;
  char *names = (char *)(values + DIRECT_MAX_VALUES);
  memcpy(names, line, length);
  names[length] = '\0';
  int count = 0;
  if (at < end && *at == '}') at++;
  else
    for (;;) {
      if (count == DIRECT_MAX_VALUES || at == end || *at != '"') goto slow;
      const char *name = ++at;
      while (at < end && *at >= 0x20 && *at < 0x7f && *at != '"' && *at != '\\') at++;
      size_t name_length = (size_t)(at - name);
      if (at == end || *at != '"' || name_length == 0 || name_length >= EV_NAME_MAX) goto slow;
      names[at - line] = '\0';
      values[count].name = names + (name - line);
      for (int i = 0; i < count; i++)
        if (strcmp(values[i].name, values[count].name) == 0) goto slow; /* jansson refuses repeats */
      at++;
      if (!expect(&at, end, ":") || !(at = direct_number(at, end, &values[count].value))) goto slow;
      count++;
      if (at < end && *at == ',') {
        at++;
        continue;
      }
      if (at < end && *at == '}') {
        at++;
        break;
      }
      goto slow;
    }
  if (!expect(&at, end, "}") || at != end) goto slow;
  *out = (ev_t){.type = EV_METRIC, .storage = values, .step = step, .epoch = epoch, .stage = stage,
                .values = values, .n_values = count};
  return 1;
slow:
  free(values);
  return 0;
}

int ev_parse(const char *line, size_t length, ev_t *out, char *error, size_t error_size) {
  memset(out, 0, sizeof *out);
  if (parse_metric_directly(line, length, out)) return 0;
  json_error_t json_error;
  json_t *root = json_loadb(line, length, JSON_REJECT_DUPLICATES, &json_error);
  if (root == NULL) {
    snprintf(error, error_size, "not JSON: %s at column %d", json_error.text, json_error.column);
    return -EINVAL;
  }
  if (!json_is_object(root)) {
    snprintf(error, error_size, "not a JSON object");
    goto fail;
  }
  const char *type = json_string_value(json_object_get(root, "event"));
  if (type == NULL) {
    snprintf(error, error_size, "event: must be a string naming the event");
    goto fail;
  }
  out->root = root;
  out->type = EV_UNKNOWN;
  for (size_t i = 0; i < sizeof event_types / sizeof event_types[0]; i++)
    if (strcmp(type, event_types[i].name) == 0) out->type = event_types[i].type;

  switch (out->type) {
  case EV_METRIC:
  case EV_EVAL:
    if (get_count(root, "step", out->type == EV_EVAL ? 0 : 1, &out->step, error, error_size) ||
        get_count(root, "epoch", 0, &out->epoch, error, error_size) ||
        get_count(root, "stage", 0, &out->stage, error, error_size))
      goto fail;
    if (take_values(json_object_get(root, "values"), out, error, error_size)) goto fail;
    if (out->type == EV_EVAL) {
      const char *split = json_string_value(json_object_get(root, "split"));
      int index = split ? ev_split_from_name(split) : -1;
      if (index < 0) {
        snprintf(error, error_size, "split: must be one of train, val, test, teacher");
        goto fail;
      }
      out->split = (ev_split_t)index;
    }
    break;
  case EV_CHECKPOINT:
    out->path = json_string_value(json_object_get(root, "path"));
    if (out->path == NULL) {
      snprintf(error, error_size, "path: must be a string");
      goto fail;
    }
    if (get_count(root, "step", 0, &out->step, error, error_size) ||
        get_count(root, "epoch", 0, &out->epoch, error, error_size) ||
        get_count(root, "bytes", 0, &out->bytes, error, error_size))
      goto fail;
    break;
  case EV_FINISHED:
    out->status = json_string_value(json_object_get(root, "status"));
    if (out->status == NULL || (strcmp(out->status, "succeeded") != 0 && strcmp(out->status, "failed") != 0)) {
      snprintf(error, error_size, "status: must be \"succeeded\" or \"failed\"");
      goto fail;
    }
    out->error = json_string_value(json_object_get(root, "error"));
    if (strcmp(out->status, "failed") == 0 && out->error == NULL) out->error = "the worker reported a failure without a reason";
    break;
  case EV_STAGE:
    out->name = json_string_value(json_object_get(root, "name"));
    if (out->name == NULL || out->name[0] == '\0' || strlen(out->name) >= EV_NAME_MAX) {
      snprintf(error, error_size, "name: must be the stage's name");
      goto fail;
    }
    if (get_count(root, "step", 0, &out->step, error, error_size) ||
        get_count(root, "epoch", 1, &out->epoch, error, error_size) ||
        get_count(root, "stage", 0, &out->stage, error, error_size))
      goto fail;
    break;
  case EV_LOG:
    if (!json_is_string(json_object_get(root, "message"))) {
      snprintf(error, error_size, "message: must be a string");
      goto fail;
    }
    break;
  case EV_STARTED:
  case EV_UNKNOWN:
    break;
  }
  return 0;
fail:
  json_decref(root);
  free(out->storage);
  memset(out, 0, sizeof *out);
  return -EINVAL;
}

int ev_find_value(const ev_t *event, const char *name, double *value) {
  for (int i = 0; i < event->n_values; i++) {
    if (strcmp(event->values[i].name, name) == 0) {
      *value = event->values[i].value;
      return 1;
    }
  }
  return 0;
}

void ev_release(ev_t *event) {
  json_decref(event->root);
  free(event->storage);
  memset(event, 0, sizeof *event);
}

int ev_write(FILE *out, json_t *event) {
  if (event == NULL) return -ENOMEM;
  /* JSON_COMPACT keeps a line a line; real numbers use the shortest exact form. */
  int result = json_dumpf(event, out, JSON_COMPACT | JSON_REAL_PRECISION(9));
  json_decref(event);
  if (result != 0 || fputc('\n', out) == EOF || fflush(out) != 0) return -EIO;
  return 0;
}

int ev_write_metric(FILE *out, int64_t step, int64_t epoch, int64_t stage, json_t *values) {
  return ev_write(out, json_pack("{s:s, s:I, s:I, s:I, s:o}", "event", "metric", "step", (json_int_t)step,
                                 "epoch", (json_int_t)epoch, "stage", (json_int_t)stage, "values", values));
}

int ev_write_eval(FILE *out, int64_t step, int64_t epoch, int64_t stage, ev_split_t split, json_t *values) {
  return ev_write(out, json_pack("{s:s, s:I, s:I, s:I, s:s, s:o}", "event", "eval", "step", (json_int_t)step,
                                 "epoch", (json_int_t)epoch, "stage", (json_int_t)stage, "split",
                                 ev_split_name(split), "values", values));
}

int ev_write_stage(FILE *out, int64_t step, int64_t epoch, int64_t stage, const char *name) {
  return ev_write(out, json_pack("{s:s, s:I, s:I, s:I, s:s}", "event", "stage", "step", (json_int_t)step, "epoch",
                                 (json_int_t)epoch, "stage", (json_int_t)stage, "name", name));
}

int ev_write_log(FILE *out, const char *level, const char *format, ...) {
  char message[1024];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  return ev_write(out, json_pack("{s:s, s:s, s:s}", "event", "log", "level", level, "message", message));
}
