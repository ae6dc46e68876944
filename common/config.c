/* config.c — the experiment config: validation with JSON paths, defaults, serialisation.
 *
 * The validator walks the submitted JSON once, field by field, against what this version
 * knows. Each reader below takes the object, the key and the path of the object, fills
 * the destination with the value or its default, and records an error (never stops) when
 * the value is of the wrong type or out of range. Unknown keys are errors too: a typo in
 * "distil_weight" must not silently run an experiment without distillation. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

#define FASHION_MNIST_TRAIN 60000

static void add_error(cfg_errors_t *errors, const char *path, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void add_error(cfg_errors_t *errors, const char *path, const char *format, ...) {
  if (errors->count < CFG_MAX_ERRORS) {
    cfg_error_t *error = &errors->items[errors->count];
    util_strlcpy(error->path, path, sizeof error->path);
    va_list args;
    va_start(args, format);
    vsnprintf(error->message, sizeof error->message, format, args);
    va_end(args);
  }
  errors->count++;
}

/* "prefix.key", or "key" at the top level. */
static const char *join(char *buffer, size_t size, const char *prefix, const char *key) {
  snprintf(buffer, size, "%s%s%s", prefix, prefix[0] ? "." : "", key);
  return buffer;
}

static const char *json_type_name(const json_t *value) {
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
static void check_known_keys(const json_t *object, const char *prefix, const char *const *known,
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
static const json_t *get_object(const json_t *object, const char *prefix, const char *key, cfg_errors_t *errors) {
  const json_t *value = json_object_get(object, key);
  if (value == NULL || json_is_object(value)) return value;
  char path[128];
  add_error(errors, join(path, sizeof path, prefix, key), "must be an object, not %s", json_type_name(value));
  return NULL;
}

/* Integer member in [minimum, maximum]; absent (or null when `null_value` is allowed)
 * leaves `*out` at its default. Returns 1 when the key was present and valid. */
static int get_integer(const json_t *object, const char *prefix, const char *key, long long minimum,
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

static void get_int(const json_t *object, const char *prefix, const char *key, int minimum, int maximum,
                    int *out, cfg_errors_t *errors) {
  long long value = *out;
  if (get_integer(object, prefix, key, minimum, maximum, &value, errors)) *out = (int)value;
}

/* Number member; `open_minimum` excludes the minimum itself (a learning rate of 0). */
static int get_number(const json_t *object, const char *prefix, const char *key, double minimum, int open_minimum,
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

static int get_string(const json_t *object, const char *prefix, const char *key, char *out, size_t size,
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
static int get_choice(const json_t *object, const char *prefix, const char *key, const char *const *choices,
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

static int is_identifier(const char *name) {
  if (!name[0]) return 0;
  for (const char *c = name; *c; c++)
    if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.') return 0;
  return 1;
}

/* Unnamed layers are known by kind and position ("linear0", "relu1"; see the worker's
 * nn.c): a layer named like that could be mistaken for another. */
static int is_automatic_name(const char *name) {
  for (int kind = 0; kind <= CFG_LAYER_RELU; kind++) {
    const char *kind_name = cfg_layer_kind_name(kind);
    size_t length = strlen(kind_name);
    if (strncmp(name, kind_name, length) == 0 && name[length] && strspn(name + length, "0123456789") == strlen(name + length))
      return 1;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// sections

static const char *const dataset_names[] = {"fashion-mnist", "synthetic", NULL};

static void parse_dataset(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"name", "val_size", "train_limit", "train_size", "test_size", NULL};
  const json_t *dataset = get_object(root, "", "dataset", errors);
  config->dataset.kind = CFG_DATASET_FASHION_MNIST;
  if (dataset) {
    check_known_keys(dataset, "dataset", known, errors);
    config->dataset.kind = get_choice(dataset, "dataset", "name", dataset_names, CFG_DATASET_FASHION_MNIST, errors);
  }
  int synthetic = config->dataset.kind == CFG_DATASET_SYNTHETIC;
  config->dataset.train_size = synthetic ? 2048 : FASHION_MNIST_TRAIN;
  config->dataset.test_size = synthetic ? 512 : 10000;
  config->dataset.val_size = synthetic ? 256 : 5000;
  config->dataset.train_limit = 0;
  if (!dataset) return;

  if (synthetic) {
    get_int(dataset, "dataset", "train_size", 16, 1000000, &config->dataset.train_size, errors);
    get_int(dataset, "dataset", "test_size", 1, 1000000, &config->dataset.test_size, errors);
  } else {
    if (json_object_get(dataset, "train_size"))
      add_error(errors, "dataset.train_size", "only the synthetic dataset has a size to choose");
    if (json_object_get(dataset, "test_size"))
      add_error(errors, "dataset.test_size", "only the synthetic dataset has a size to choose");
  }
  get_int(dataset, "dataset", "val_size", 0, config->dataset.train_size - 1, &config->dataset.val_size, errors);
  if (!json_is_null(json_object_get(dataset, "train_limit")))
    get_int(dataset, "dataset", "train_limit", 1, config->dataset.train_size, &config->dataset.train_limit, errors);
}

static const char *const layer_kinds[] = {"linear", "relu", NULL};

static void parse_model(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"layers", NULL};
  static const char *const known_linear[] = {"type", "name", "out", NULL};
  static const char *const known_activation[] = {"type", "name", NULL};
  const json_t *model = get_object(root, "", "model", errors);
  if (json_object_get(root, "model") == NULL) {
    add_error(errors, "model", "is required: give model.layers, e.g. [{\"type\": \"linear\", \"out\": 10}]");
    return;
  }
  if (!model) return;
  check_known_keys(model, "model", known, errors);
  const json_t *layers = json_object_get(model, "layers");
  if (!json_is_array(layers) || json_array_size(layers) == 0 || json_array_size(layers) > CFG_MAX_LAYERS) {
    add_error(errors, "model.layers", "must be an array of 1 to %d layers", CFG_MAX_LAYERS);
    return;
  }
  config->n_layers = (int)json_array_size(layers);
  for (int i = 0; i < config->n_layers; i++) {
    const json_t *layer = json_array_get(layers, (size_t)i);
    cfg_layer_t *out = &config->layers[i];
    char prefix[64];
    snprintf(prefix, sizeof prefix, "model.layers[%d]", i);
    if (!json_is_object(layer)) {
      add_error(errors, prefix, "must be an object like {\"type\": \"linear\", \"out\": 128}, not %s",
                json_type_name(layer));
      continue;
    }
    if (json_object_get(layer, "type") == NULL) {
      char path[96];
      add_error(errors, join(path, sizeof path, prefix, "type"), "is required (one of linear, relu)");
      continue;
    }
    out->kind = get_choice(layer, prefix, "type", layer_kinds, CFG_LAYER_RELU, errors);
    check_known_keys(layer, prefix, out->kind == CFG_LAYER_LINEAR ? known_linear : known_activation, errors);
    if (get_string(layer, prefix, "name", out->name, sizeof out->name, errors)) {
      char path[96];
      join(path, sizeof path, prefix, "name");
      if (!is_identifier(out->name))
        add_error(errors, path, "must use only letters, digits, '_', '-' and '.'");
      else if (is_automatic_name(out->name))
        add_error(errors, path, "\"%s\" is how unnamed layers are called (kind and number); choose another name",
                  out->name);
    }
    for (int j = 0; j < i && out->name[0]; j++) {
      if (strcmp(config->layers[j].name, out->name) == 0) {
        char path[96];
        add_error(errors, join(path, sizeof path, prefix, "name"), "\"%s\" is already the name of model.layers[%d]",
                  out->name, j);
      }
    }
    if (out->kind == CFG_LAYER_LINEAR) {
      if (json_object_get(layer, "out") == NULL) {
        char path[96];
        add_error(errors, join(path, sizeof path, prefix, "out"), "is required for a linear layer");
      }
      get_int(layer, prefix, "out", 1, 65536, &out->out, errors);
    }
  }
  const cfg_layer_t *last = &config->layers[config->n_layers - 1];
  char path[96], out_path[128];
  snprintf(path, sizeof path, "model.layers[%d]", config->n_layers - 1);
  if (last->kind != CFG_LAYER_LINEAR)
    add_error(errors, path, "the last layer must be linear with out %d (one logit per class)", CFG_CLASSES);
  else if (last->out != CFG_CLASSES && last->out != 0)
    add_error(errors, join(out_path, sizeof out_path, path, "out"), "the last layer must output %d logits (one per class), not %d",
              CFG_CLASSES, last->out);
}

static const char *const optimizer_kinds[] = {"sgd", "adam", NULL};

static void parse_optimizer(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known_sgd[] = {"type", "lr", "momentum", "weight_decay", NULL};
  static const char *const known_adam[] = {"type", "lr", "beta1", "beta2", "eps", "weight_decay", NULL};
  const json_t *optimizer = get_object(root, "", "optimizer", errors);
  config->optimizer.kind = CFG_OPTIMIZER_SGD;
  if (optimizer)
    config->optimizer.kind = get_choice(optimizer, "optimizer", "type", optimizer_kinds, CFG_OPTIMIZER_SGD, errors);
  int adam = config->optimizer.kind == CFG_OPTIMIZER_ADAM;
  config->optimizer.lr = adam ? 0.001 : 0.05;
  config->optimizer.momentum = adam ? 0.0 : 0.9;
  config->optimizer.weight_decay = 0.0;
  config->optimizer.beta1 = 0.9;
  config->optimizer.beta2 = 0.999;
  config->optimizer.eps = 1e-8;
  if (!optimizer) return;
  check_known_keys(optimizer, "optimizer", adam ? known_adam : known_sgd, errors);
  get_number(optimizer, "optimizer", "lr", 0.0, 1, 10.0, &config->optimizer.lr, errors);
  get_number(optimizer, "optimizer", "weight_decay", 0.0, 0, 1.0, &config->optimizer.weight_decay, errors);
  if (adam) {
    get_number(optimizer, "optimizer", "beta1", 0.0, 0, 0.999999, &config->optimizer.beta1, errors);
    get_number(optimizer, "optimizer", "beta2", 0.0, 0, 0.999999999, &config->optimizer.beta2, errors);
    get_number(optimizer, "optimizer", "eps", 0.0, 1, 1.0, &config->optimizer.eps, errors);
  } else {
    get_number(optimizer, "optimizer", "momentum", 0.0, 0, 0.999, &config->optimizer.momentum, errors);
  }
}

static void parse_stages(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"name", "epochs", "task_weight", "lr", NULL};
  const json_t *stages = json_object_get(root, "stages");
  const json_t *epochs = json_object_get(root, "epochs");
  if (stages && epochs) {
    add_error(errors, "epochs", "give either epochs (one stage) or stages, not both");
    return;
  }
  if (!stages) { /* "epochs": N, or nothing: one plain training stage */
    cfg_stage_t *stage = &config->stages[0];
    config->n_stages = 1;
    util_strlcpy(stage->name, "train", sizeof stage->name);
    stage->epochs = 10;
    stage->task_weight = 1.0;
    stage->lr = config->optimizer.lr;
    get_int(root, "", "epochs", 1, 10000, &stage->epochs, errors);
    return;
  }
  if (!json_is_array(stages) || json_array_size(stages) == 0 || json_array_size(stages) > CFG_MAX_STAGES) {
    add_error(errors, "stages", "must be an array of 1 to %d stages", CFG_MAX_STAGES);
    return;
  }
  config->n_stages = (int)json_array_size(stages);
  long long total = 0;
  for (int i = 0; i < config->n_stages; i++) {
    const json_t *item = json_array_get(stages, (size_t)i);
    cfg_stage_t *stage = &config->stages[i];
    char prefix[64], path[96];
    snprintf(prefix, sizeof prefix, "stages[%d]", i);
    snprintf(stage->name, sizeof stage->name, "stage%d", i + 1);
    stage->epochs = 1;
    stage->task_weight = 1.0;
    stage->lr = config->optimizer.lr;
    if (!json_is_object(item)) {
      add_error(errors, prefix, "must be an object like {\"epochs\": 5, \"task_weight\": 1.0}, not %s",
                json_type_name(item));
      continue;
    }
    check_known_keys(item, prefix, known, errors);
    if (get_string(item, prefix, "name", stage->name, sizeof stage->name, errors) && !is_identifier(stage->name))
      add_error(errors, join(path, sizeof path, prefix, "name"), "must use only letters, digits, '_', '-' and '.'");
    if (json_object_get(item, "epochs") == NULL)
      add_error(errors, join(path, sizeof path, prefix, "epochs"), "is required");
    get_int(item, prefix, "epochs", 1, 10000, &stage->epochs, errors);
    get_number(item, prefix, "task_weight", 0.0, 0, 1.0, &stage->task_weight, errors);
    get_number(item, prefix, "lr", 0.0, 1, 10.0, &stage->lr, errors);
    total += stage->epochs;
  }
  if (total > 10000) add_error(errors, "stages", "may have at most 10000 epochs in all, not %lld", total);
}

// ---------------------------------------------------------------------------------------

int cfg_from_json(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"name", "seed", "priority", "dataset", "model", "optimizer",
                                      "batch_size", "epochs", "stages", NULL};
  memset(config, 0, sizeof *config);
  memset(errors, 0, sizeof *errors);
  if (!json_is_object(root)) {
    add_error(errors, "", "the config must be a JSON object, not %s", root ? json_type_name(root) : "empty");
    return -EINVAL;
  }
  check_known_keys(root, "", known, errors);
  get_string(root, "", "name", config->name, sizeof config->name, errors);
  long long seed = 1;
  get_integer(root, "", "seed", 0, INT64_MAX / 2, &seed, errors);
  config->seed = (uint64_t)seed;
  get_int(root, "", "priority", -1000, 1000, &config->priority, errors);
  config->batch_size = 128;
  get_int(root, "", "batch_size", 1, 4096, &config->batch_size, errors);
  parse_dataset(root, config, errors);
  parse_model(root, config, errors);
  parse_optimizer(root, config, errors); /* before the stages: they inherit its lr */
  parse_stages(root, config, errors);
  return errors->count == 0 ? 0 : -EINVAL;
}

int cfg_parse(const char *text, size_t length, cfg_experiment_t *config, cfg_errors_t *errors) {
  json_error_t json_error;
  json_t *root = json_loadb(text, length, JSON_REJECT_DUPLICATES, &json_error);
  if (root == NULL) {
    memset(errors, 0, sizeof *errors);
    add_error(errors, "", "invalid JSON at line %d, column %d: %s", json_error.line, json_error.column,
              json_error.text);
    return -EINVAL;
  }
  int result = cfg_from_json(root, config, errors);
  json_decref(root);
  return result;
}

json_t *cfg_to_json(const cfg_experiment_t *config) {
  json_t *layers = json_array();
  for (int i = 0; i < config->n_layers; i++) {
    const cfg_layer_t *layer = &config->layers[i];
    json_t *item = json_pack("{s:s}", "type", cfg_layer_kind_name(layer->kind));
    if (layer->name[0]) json_object_set_new(item, "name", json_string(layer->name));
    if (layer->kind == CFG_LAYER_LINEAR) json_object_set_new(item, "out", json_integer(layer->out));
    json_array_append_new(layers, item);
  }
  json_t *stages = json_array();
  for (int i = 0; i < config->n_stages; i++) {
    const cfg_stage_t *stage = &config->stages[i];
    json_array_append_new(stages, json_pack("{s:s, s:i, s:f, s:f}", "name", stage->name, "epochs", stage->epochs,
                                            "task_weight", stage->task_weight, "lr", stage->lr));
  }
  json_t *dataset = json_pack("{s:s, s:i}", "name", dataset_names[config->dataset.kind], "val_size",
                              config->dataset.val_size);
  json_object_set_new(dataset, "train_limit",
                      config->dataset.train_limit ? json_integer(config->dataset.train_limit) : json_null());
  if (config->dataset.kind == CFG_DATASET_SYNTHETIC) {
    json_object_set_new(dataset, "train_size", json_integer(config->dataset.train_size));
    json_object_set_new(dataset, "test_size", json_integer(config->dataset.test_size));
  }
  json_t *optimizer = json_pack("{s:s, s:f, s:f}", "type", optimizer_kinds[config->optimizer.kind], "lr",
                                config->optimizer.lr, "weight_decay", config->optimizer.weight_decay);
  if (config->optimizer.kind == CFG_OPTIMIZER_ADAM) {
    json_object_set_new(optimizer, "beta1", json_real(config->optimizer.beta1));
    json_object_set_new(optimizer, "beta2", json_real(config->optimizer.beta2));
    json_object_set_new(optimizer, "eps", json_real(config->optimizer.eps));
  } else {
    json_object_set_new(optimizer, "momentum", json_real(config->optimizer.momentum));
  }
  return json_pack("{s:s, s:I, s:i, s:o, s:{s:o}, s:o, s:i, s:o}", "name", config->name, "seed",
                   (json_int_t)config->seed, "priority", config->priority, "dataset", dataset, "model", "layers",
                   layers, "optimizer", optimizer, "batch_size", config->batch_size, "stages", stages);
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

int cfg_total_epochs(const cfg_experiment_t *config) {
  int total = 0;
  for (int i = 0; i < config->n_stages; i++) total += config->stages[i].epochs;
  return total;
}

int cfg_stage_of_epoch(const cfg_experiment_t *config, int epoch) {
  for (int i = 0; i < config->n_stages; i++) {
    if (epoch < config->stages[i].epochs) return i;
    epoch -= config->stages[i].epochs;
  }
  return config->n_stages - 1;
}

const char *cfg_layer_kind_name(cfg_layer_kind_t kind) {
  return (unsigned)kind < CFG_LAYER_RELU + 1 ? layer_kinds[kind] : "?";
}
