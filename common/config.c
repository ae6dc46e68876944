/* config.c — the experiment config (see config.h): validation with JSON paths.
 *
 * The validator walks the submitted JSON once, field by field, against what this version
 * knows (config_json.c walks the sections, each read in the file of its concern). Each
 * reader below takes the object, the key and the path of the object, fills the destination
 * with the value or its default, and records an error (never stops) when the value is of
 * the wrong type or out of range. Unknown keys are errors too: a typo in "distil_weight"
 * must not silently run an experiment without distillation. The section readers share the
 * readers through config_internal.h. */
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config_internal.h"
#include "util.h"

void cfg_add_error(cfg_errors_t *errors, const char *path, const char *format, ...) {
  if (errors->count < CFG_MAX_ERRORS) {
    cfg_error_t *error = &errors->items[errors->count];
    char message[sizeof error->message];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    /* A message may quote what the client sent (jansson's own errors do, bytes and all),
     * and a cut may split a character: both must stay valid UTF-8, or the answer that
     * lists them cannot be JSON. */
    util_utf8_sanitize(message, error->message, sizeof error->message);
    util_utf8_sanitize(path, error->path, sizeof error->path);
  }
  errors->count++;
}

/* "prefix.key", or "key" at the top level. */
const char *join(char *buffer, size_t size, const char *prefix, const char *key) {
  snprintf(buffer, size, "%s%s%s", prefix, prefix[0] ? "." : "", key);
  return buffer;
}

const char *json_type_name(const json_t *value) {
  switch (json_typeof(value)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "?";
}

/* Records every key of `object` that is not in the NULL-terminated `known`. */
void check_known_keys(const json_t *object, const char *prefix, const char *const *known,
                      cfg_errors_t *errors) {
  const char *key;
  json_t *value;
  char path[128];
  json_object_foreach((json_t *)object, key, value) {
    int found = 0;
    for (const char *const *k = known; *k && !found; k++) found = strcmp(*k, key) == 0;
    if (found) continue;
    char list[256] = "";
    for (const char *const *k = known; *k; k++) {
      strncat(list, *k, sizeof list - strlen(list) - 1);
      if (k[1]) strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    add_error(errors, join(path, sizeof path, prefix, key), "unknown field (expected one of: %s)", list);
  }
}

/* An optional object member: NULL when absent, an error when present but not an object. */
const json_t *get_object(const json_t *object, const char *prefix, const char *key, cfg_errors_t *errors) {
  const json_t *value = json_object_get(object, key);
  if (value == NULL || json_is_object(value)) return value;
  char path[128];
  add_error(errors, join(path, sizeof path, prefix, key), "must be an object, not %s", json_type_name(value));
  return NULL;
}

/* Integer member in [minimum, maximum]; absent (or null when `null_value` is allowed)
 * leaves `*out` at its default. Returns 1 when the key was present and valid. */
int get_integer(const json_t *object, const char *prefix, const char *key, long long minimum,
                long long maximum, long long *out, cfg_errors_t *errors) {
  const json_t *value = json_object_get(object, key);
  if (value == NULL) return 0;
  char path[128];
  join(path, sizeof path, prefix, key);
  double number;
  if (json_is_integer(value)) {
    number = (double)json_integer_value(value);
  } else if (json_is_real(value) && json_real_value(value) == floor(json_real_value(value)) &&
             fabs(json_real_value(value)) < 9e15) {
    number = json_real_value(value); /* 5.0 is an integer to a person writing JSON */
  } else {
    add_error(errors, path, "must be an integer, not %s", json_type_name(value));
    return 0;
  }
  if (number < (double)minimum || number > (double)maximum) {
    add_error(errors, path, "must be between %lld and %lld, not %.0f", minimum, maximum, number);
    return 0;
  }
  *out = (long long)number;
  return 1;
}

void get_int(const json_t *object, const char *prefix, const char *key, int minimum, int maximum,
             int *out, cfg_errors_t *errors) {
  long long value = *out;
  if (get_integer(object, prefix, key, minimum, maximum, &value, errors)) *out = (int)value;
}

/* Number member; `open_minimum` excludes the minimum itself (a learning rate of 0). */
int get_number(const json_t *object, const char *prefix, const char *key, double minimum, int open_minimum,
               double maximum, double *out, cfg_errors_t *errors) {
  const json_t *value = json_object_get(object, key);
  if (value == NULL) return 0;
  char path[128];
  join(path, sizeof path, prefix, key);
  if (!json_is_number(value)) {
    add_error(errors, path, "must be a number, not %s", json_type_name(value));
    return 0;
  }
  double number = json_number_value(value);
  if (!isfinite(number) || number < minimum || (open_minimum && number == minimum) || number > maximum) {
    add_error(errors, path, "must be %s %g and at most %g, not %g", open_minimum ? "greater than" : "at least",
              minimum, maximum, number);
    return 0;
  }
  *out = number;
  return 1;
}

int get_string(const json_t *object, const char *prefix, const char *key, char *out, size_t size,
               cfg_errors_t *errors) {
  const json_t *value = json_object_get(object, key);
  if (value == NULL) return 0;
  char path[128];
  join(path, sizeof path, prefix, key);
  if (!json_is_string(value)) {
    add_error(errors, path, "must be a string, not %s", json_type_name(value));
    return 0;
  }
  if (json_string_length(value) >= size || strlen(json_string_value(value)) != json_string_length(value)) {
    add_error(errors, path, "must be a string of at most %zu characters without NUL", size - 1);
    return 0;
  }
  util_strlcpy(out, json_string_value(value), size);
  return 1;
}

/* A string member that must be one of `choices`; returns the index, or `fallback` when
 * absent or invalid. */
int get_choice(const json_t *object, const char *prefix, const char *key, const char *const *choices,
               int fallback, cfg_errors_t *errors) {
  char text[64];
  if (!get_string(object, prefix, key, text, sizeof text, errors)) return fallback;
  char list[256] = "";
  for (int i = 0; choices[i]; i++) {
    if (strcmp(text, choices[i]) == 0) return i;
    strncat(list, choices[i], sizeof list - strlen(list) - 1);
    if (choices[i + 1]) strncat(list, ", ", sizeof list - strlen(list) - 1);
  }
  char path[128];
  add_error(errors, join(path, sizeof path, prefix, key), "must be one of %s, not \"%s\"", list, text);
  return fallback;
}

int is_identifier(const char *name) {
  if (!name[0]) return 0;
  for (const char *c = name; *c; c++)
    if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.') return 0;
  return 1;
}

json_t *cfg_errors_to_json(const cfg_errors_t *errors) {
  json_t *list = json_array();
  int kept = errors->count < CFG_MAX_ERRORS ? errors->count : CFG_MAX_ERRORS;
  for (int i = 0; i < kept; i++)
    json_array_append_new(list, json_pack("{s:s, s:s}", "path", errors->items[i].path, "message",
                                          errors->items[i].message));
  if (errors->count > kept) {
    char message[64];
    snprintf(message, sizeof message, "and %d more errors", errors->count - kept);
    json_array_append_new(list, json_pack("{s:s, s:s}", "path", "", "message", message));
  }
  return list;
}
