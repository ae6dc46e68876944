/* config.c — the experiment config: validation with JSON paths, defaults, serialisation.
 *
 * The validator walks the submitted JSON once, field by field, against what this version
 * knows. Each reader below takes the object, the key and the path of the object, fills
 * the destination with the value or its default, and records an error (never stops) when
 * the value is of the wrong type or out of range. Unknown keys are errors too: a typo in
 * "distil_weight" must not silently run an experiment without distillation. */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

#define FASHION_MNIST_TRAIN 60000

#define add_error cfg_add_error

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
  for (int kind = 0; kind < CFG_LAYER_KIND_COUNT; kind++) {
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
/* A built-in dataset's name even in a config built by hand (dataset.name left ""). */
static const char *dataset_name(const cfg_experiment_t *config) {
  return config->dataset.kind == CFG_DATASET_REGISTERED ? config->dataset.name : dataset_names[config->dataset.kind];
}

static const char *const dataset_formats[] = {"idx", "npy", "npz", "cifar10", "cifar100", "csv", NULL};
static const char *const dataset_layouts[] = {"auto", "nchw", "nhwc", NULL};

/* A list of 1 to CFG_DATASET_MAX_FILES paths; returns how many were read. */
static int get_paths(const json_t *object, const char *prefix, const char *key, char (*out)[CFG_PATH_MAX],
                     cfg_errors_t *errors) {
  const json_t *list = json_object_get(object, key);
  char path[128];
  join(path, sizeof path, prefix, key);
  if (!json_is_array(list) || json_array_size(list) < 1 || json_array_size(list) > CFG_DATASET_MAX_FILES) {
    add_error(errors, path, "must be an array of 1 to %d file paths", CFG_DATASET_MAX_FILES);
    return 0;
  }
  for (size_t i = 0; i < json_array_size(list); i++) {
    const json_t *item = json_array_get(list, i);
    if (!json_is_string(item) || json_string_length(item) == 0 || json_string_length(item) >= CFG_PATH_MAX ||
        strlen(json_string_value(item)) != json_string_length(item)) {
      add_error(errors, path, "item %zu must be a file path of 1 to %d characters", i, CFG_PATH_MAX - 1);
      return 0;
    }
    util_strlcpy(out[i], json_string_value(item), CFG_PATH_MAX);
  }
  return (int)json_array_size(list);
}

void cfg_dataset_source_parse(const json_t *object, const char *path, cfg_dataset_source_t *source,
                              cfg_errors_t *errors) {
  memset(source, 0, sizeof *source);
  int format = get_choice(object, path, "format", dataset_formats, -1, errors);
  char format_path[128];
  if (format < 0 && !json_object_get(object, "format"))
    add_error(errors, join(format_path, sizeof format_path, path, "format"), "is required: one of idx, npy, npz, "
              "cifar10, cifar100, csv");
  if (format >= 0) util_strlcpy(source->format, dataset_formats[format], sizeof source->format);
  source->n_train = get_paths(object, path, "train", source->train, errors);
  source->n_test = get_paths(object, path, "test", source->test, errors);
  if (!json_is_null(json_object_get(object, "names")))
    get_string(object, path, "names", source->names, sizeof source->names, errors);
  int layout = get_choice(object, path, "layout", dataset_layouts, 0, errors);
  util_strlcpy(source->layout, dataset_layouts[layout], sizeof source->layout);
  get_int(object, path, "classes", 0, CFG_MAX_CLASSES, &source->classes, errors);
  static const char *const value_types[] = {"uint8", "float32", NULL};
  source->float_values = get_choice(object, path, "values", value_types, 0, errors);
  get_string(object, path, "checksum", source->checksum, sizeof source->checksum, errors);
}

void cfg_dataset_source_to_json(const cfg_dataset_source_t *source, json_t *object) {
  json_t *train = json_array(), *test = json_array();
  for (int i = 0; i < source->n_train; i++) json_array_append_new(train, json_string(source->train[i]));
  for (int i = 0; i < source->n_test; i++) json_array_append_new(test, json_string(source->test[i]));
  json_object_set_new(object, "format", json_string(source->format));
  json_object_set_new(object, "train", train);
  json_object_set_new(object, "test", test);
  json_object_set_new(object, "names", source->names[0] ? json_string(source->names) : json_null());
  json_object_set_new(object, "layout", json_string(source->layout[0] ? source->layout : "auto"));
  json_object_set_new(object, "classes", json_integer(source->classes));
  json_object_set_new(object, "values", json_string(source->float_values ? "float32" : "uint8"));
  json_object_set_new(object, "checksum", json_string(source->checksum));
}

/* A registered dataset: everything but the split comes from mapsaged's registry, which
 * fills it in at submission (daemon/dataset.c); a config without it names no dataset the
 * daemon knows. */
static void parse_registered_dataset(const json_t *dataset, cfg_experiment_t *config, cfg_errors_t *errors) {
  if (!json_object_get(dataset, "format")) {
    add_error(errors, "dataset.name", "\"%s\" is neither fashion-mnist, synthetic nor a registered dataset "
              "(mapsage dataset add, GET /api/datasets)", config->dataset.name);
    return;
  }
  cfg_dataset_source_parse(dataset, "dataset", &config->dataset.source, errors);
  int classes = 0;
  get_int(dataset, "dataset", "classes", 2, CFG_MAX_CLASSES, &classes, errors);
  if (!classes) add_error(errors, "dataset.classes", "is required for a registered dataset (mapsaged fills it in)");
  config->dataset.classes = classes ? classes : CFG_CLASSES;
  const json_t *input = json_object_get(dataset, "input");
  config->dataset.input = (cfg_shape_t){1, CFG_IMAGE_SIDE, CFG_IMAGE_SIDE, 1};
  if (!json_is_array(input) || json_array_size(input) != 3) {
    add_error(errors, "dataset.input", "must be [channels, height, width] (mapsaged fills it in)");
  } else {
    int dims[3];
    for (int i = 0; i < 3; i++) {
      const json_t *item = json_array_get(input, (size_t)i);
      dims[i] = json_is_integer(item) ? (int)json_integer_value(item) : 0;
      if (!json_is_integer(item) || json_integer_value(item) < 1 || json_integer_value(item) > 4096)
        add_error(errors, "dataset.input", "item %d must be an integer in 1–4096", i);
    }
    if (dims[0] > 0 && dims[1] > 0 && dims[2] > 0 && (long long)dims[0] * dims[1] * dims[2] <= (1 << 24))
      config->dataset.input = (cfg_shape_t){dims[0], dims[1], dims[2], 1};
    else
      add_error(errors, "dataset.input", "an example of at most %d values", 1 << 24);
  }
  config->dataset.train_size = 0;
  config->dataset.test_size = 0;
  get_int(dataset, "dataset", "train_size", 2, 100000000, &config->dataset.train_size, errors);
  get_int(dataset, "dataset", "test_size", 1, 100000000, &config->dataset.test_size, errors);
  if (!config->dataset.train_size || !config->dataset.test_size) {
    add_error(errors, "dataset.train_size", "and test_size are required for a registered dataset (mapsaged fills "
              "them in)");
    config->dataset.train_size = config->dataset.train_size ? config->dataset.train_size : 2;
  }
}

static void parse_dataset(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"name", "split_seed", "val_size", "train_limit", "train_size", "test_size",
                                      NULL};
  static const char *const known_registered[] = {"name", "split_seed", "val_size", "train_limit", "train_size",
                                                 "test_size", "format", "train", "test", "names", "layout",
                                                 "classes", "values", "checksum", "input", NULL};
  const json_t *dataset = get_object(root, "", "dataset", errors);
  config->dataset.kind = CFG_DATASET_FASHION_MNIST;
  util_strlcpy(config->dataset.name, dataset_names[0], sizeof config->dataset.name);
  if (dataset && get_string(dataset, "dataset", "name", config->dataset.name, sizeof config->dataset.name, errors)) {
    config->dataset.kind = CFG_DATASET_REGISTERED;
    for (int i = 0; dataset_names[i]; i++)
      if (strcmp(config->dataset.name, dataset_names[i]) == 0) config->dataset.kind = (cfg_dataset_kind_t)i;
    if (config->dataset.kind == CFG_DATASET_REGISTERED && !is_identifier(config->dataset.name)) {
      add_error(errors, "dataset.name", "\"%s\" is not a dataset name (letters, digits, _ - .)", config->dataset.name);
      config->dataset.kind = CFG_DATASET_FASHION_MNIST;
    }
  }
  if (dataset) check_known_keys(dataset, "dataset", config->dataset.kind == CFG_DATASET_REGISTERED ? known_registered
                                                                                                   : known, errors);
  int synthetic = config->dataset.kind == CFG_DATASET_SYNTHETIC;
  config->dataset.classes = CFG_CLASSES;
  config->dataset.input = (cfg_shape_t){1, CFG_IMAGE_SIDE, CFG_IMAGE_SIDE, 1};
  config->dataset.train_size = synthetic ? 2048 : FASHION_MNIST_TRAIN;
  config->dataset.test_size = synthetic ? 512 : 10000;
  config->dataset.val_size = synthetic ? 256 : 5000;
  config->dataset.train_limit = 0;
  config->dataset.split_seed = CFG_SPLIT_SEED;
  if (!dataset) return;
  long long split_seed = CFG_SPLIT_SEED;
  if (get_integer(dataset, "dataset", "split_seed", 0, INT64_MAX / 2, &split_seed, errors))
    config->dataset.split_seed = (uint64_t)split_seed;

  if (config->dataset.kind == CFG_DATASET_REGISTERED) {
    parse_registered_dataset(dataset, config, errors);
    /* A tenth held out by default, as Fashion-MNIST's 5000 of 60000 is about. */
    config->dataset.val_size = config->dataset.train_size / 10 < 5000 ? config->dataset.train_size / 10 : 5000;
  } else if (synthetic) {
    get_int(dataset, "dataset", "train_size", 16, 1000000, &config->dataset.train_size, errors);
    get_int(dataset, "dataset", "test_size", 1, 1000000, &config->dataset.test_size, errors);
  } else {
    if (json_object_get(dataset, "train_size"))
      add_error(errors, "dataset.train_size", "only the synthetic dataset has a size to choose");
    if (json_object_get(dataset, "test_size"))
      add_error(errors, "dataset.test_size", "only the synthetic dataset has a size to choose");
  }
  /* The default hold-out must fit a small generated set too (an eighth of it, at most 256). */
  if (synthetic && config->dataset.train_size / 8 < config->dataset.val_size)
    config->dataset.val_size = config->dataset.train_size / 8;
  get_int(dataset, "dataset", "val_size", 0, config->dataset.train_size - 1, &config->dataset.val_size, errors);
  if (!json_is_null(json_object_get(dataset, "train_limit")))
    get_int(dataset, "dataset", "train_limit", 1, config->dataset.train_size, &config->dataset.train_limit, errors);
}

static const char *const layer_kinds[] = {"linear", "relu", "conv2d", "maxpool", "flatten", "dropout", NULL};

/* Works out the layer's output shape from its input's, or says why it cannot. */
static void infer_shape(cfg_layer_t *layer, const cfg_shape_t *in, const char *prefix, cfg_errors_t *errors) {
  char path[96];
  layer->shape = *in;
  switch (layer->kind) {
  case CFG_LAYER_LINEAR:
    layer->shape = (cfg_shape_t){layer->out, 1, 1, 0};
    break;
  case CFG_LAYER_FLATTEN:
    layer->shape = (cfg_shape_t){cfg_shape_size(in), 1, 1, 0};
    break;
  case CFG_LAYER_RELU:
  case CFG_LAYER_DROPOUT:
    break;
  case CFG_LAYER_CONV2D:
  case CFG_LAYER_MAXPOOL: {
    if (!in->image) {
      add_error(errors, prefix, "%s needs an image-shaped input (channels × height × width), but it follows a flat "
                "layer (linear or flatten)", cfg_layer_kind_name(layer->kind));
      layer->shape = (cfg_shape_t){1, 1, 1, 0};
      return;
    }
    int padding = layer->kind == CFG_LAYER_CONV2D ? layer->padding : 0;
    int height = (in->height + 2 * padding - layer->kernel) / layer->stride + 1;
    int width = (in->width + 2 * padding - layer->kernel) / layer->stride + 1;
    if (in->height + 2 * padding < layer->kernel || in->width + 2 * padding < layer->kernel || height < 1 ||
        width < 1) {
      add_error(errors, join(path, sizeof path, prefix, layer->kind == CFG_LAYER_CONV2D ? "kernel" : "size"),
                "%d is larger than its %d×%d input", layer->kernel, in->height, in->width);
      layer->shape = (cfg_shape_t){1, 1, 1, 0};
      return;
    }
    layer->shape = (cfg_shape_t){layer->kind == CFG_LAYER_CONV2D ? layer->out : in->channels, height, width, 1};
    break;
  }
  case CFG_LAYER_KIND_COUNT:
    break;
  }
}

static void parse_layer(const json_t *layer, int i, cfg_experiment_t *config, const cfg_shape_t *in,
                        cfg_errors_t *errors) {
  static const char *const known[CFG_LAYER_KIND_COUNT][7] = {
      [CFG_LAYER_LINEAR] = {"type", "name", "out", NULL},
      [CFG_LAYER_RELU] = {"type", "name", NULL},
      [CFG_LAYER_CONV2D] = {"type", "name", "out", "kernel", "stride", "padding", NULL},
      [CFG_LAYER_MAXPOOL] = {"type", "name", "size", "stride", NULL},
      [CFG_LAYER_FLATTEN] = {"type", "name", NULL},
      [CFG_LAYER_DROPOUT] = {"type", "name", "p", NULL},
  };
  cfg_layer_t *out = &config->layers[i];
  char prefix[64], path[96];
  snprintf(prefix, sizeof prefix, "model.layers[%d]", i);
  out->shape = *in;
  if (!json_is_object(layer)) {
    add_error(errors, prefix, "must be an object like {\"type\": \"linear\", \"out\": 128}, not %s",
              json_type_name(layer));
    return;
  }
  if (json_object_get(layer, "type") == NULL) {
    add_error(errors, join(path, sizeof path, prefix, "type"),
              "is required (one of linear, relu, conv2d, maxpool, flatten, dropout)");
    return;
  }
  out->kind = get_choice(layer, prefix, "type", layer_kinds, CFG_LAYER_KIND_COUNT, errors);
  if (out->kind == CFG_LAYER_KIND_COUNT) {
    out->kind = CFG_LAYER_RELU; /* reported; go on as if it changed nothing */
    return;
  }
  check_known_keys(layer, prefix, known[out->kind], errors);
  if (get_string(layer, prefix, "name", out->name, sizeof out->name, errors)) {
    join(path, sizeof path, prefix, "name");
    if (!is_identifier(out->name))
      add_error(errors, path, "must use only letters, digits, '_', '-' and '.'");
    else if (is_automatic_name(out->name))
      add_error(errors, path, "\"%s\" is how unnamed layers are called (kind and number); choose another name",
                out->name);
  }
  for (int j = 0; j < i && out->name[0]; j++)
    if (strcmp(config->layers[j].name, out->name) == 0)
      add_error(errors, join(path, sizeof path, prefix, "name"), "\"%s\" is already the name of model.layers[%d]",
                out->name, j);
  switch (out->kind) {
  case CFG_LAYER_LINEAR:
  case CFG_LAYER_CONV2D:
    if (json_object_get(layer, "out") == NULL)
      add_error(errors, join(path, sizeof path, prefix, "out"), "is required for a %s layer (%s)",
                cfg_layer_kind_name(out->kind), out->kind == CFG_LAYER_LINEAR ? "output features" : "output channels");
    out->out = 1;
    get_int(layer, prefix, "out", 1, out->kind == CFG_LAYER_LINEAR ? 65536 : 1024, &out->out, errors);
    if (out->kind == CFG_LAYER_CONV2D) {
      out->kernel = 3;
      out->stride = 1;
      get_int(layer, prefix, "kernel", 1, 11, &out->kernel, errors);
      get_int(layer, prefix, "stride", 1, 8, &out->stride, errors);
      out->padding = out->kernel / 2; /* "same" for odd kernels at stride 1 */
      get_int(layer, prefix, "padding", 0, 5, &out->padding, errors);
    }
    break;
  case CFG_LAYER_MAXPOOL:
    out->kernel = 2;
    get_int(layer, prefix, "size", 1, 8, &out->kernel, errors);
    out->stride = out->kernel;
    get_int(layer, prefix, "stride", 1, 8, &out->stride, errors);
    break;
  case CFG_LAYER_DROPOUT:
    out->p = 0.5;
    get_number(layer, prefix, "p", 0.0, 0, 0.95, &out->p, errors);
    break;
  default:
    break;
  }
  infer_shape(out, in, prefix, errors);
}

static void parse_model(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"layers", NULL};
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
  cfg_shape_t shape = cfg_input_shape(config);
  for (int i = 0; i < config->n_layers; i++) {
    parse_layer(json_array_get(layers, (size_t)i), i, config, &shape, errors);
    shape = config->layers[i].shape;
  }
  const cfg_layer_t *last = &config->layers[config->n_layers - 1];
  char path[96], out_path[128];
  snprintf(path, sizeof path, "model.layers[%d]", config->n_layers - 1);
  const int classes = cfg_classes(config);
  if (last->kind != CFG_LAYER_LINEAR)
    add_error(errors, path, "the last layer must be linear with out %d (one logit per class of %s)", classes,
              config->dataset.name);
  else if (last->out != classes && last->out != 0)
    add_error(errors, join(out_path, sizeof out_path, path, "out"),
              "the last layer must output %d logits (one per class of %s), not %d", classes, config->dataset.name,
              last->out);
}

static const char *const optimizer_kinds[] = {"sgd", "adam", NULL};

static const char *const lr_schedules[] = {"constant", "step", "cosine", NULL};

static void parse_lr_schedule(const json_t *optimizer, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"type", "warmup_epochs", "step_epochs", "gamma", "min_lr", NULL};
  config->optimizer.schedule.kind = CFG_LR_CONSTANT;
  config->optimizer.schedule.step_epochs = 10;
  config->optimizer.schedule.gamma = 0.1;
  const json_t *schedule = optimizer ? get_object(optimizer, "optimizer", "schedule", errors) : NULL;
  if (!schedule) return;
  check_known_keys(schedule, "optimizer.schedule", known, errors);
  config->optimizer.schedule.kind =
      get_choice(schedule, "optimizer.schedule", "type", lr_schedules, CFG_LR_CONSTANT, errors);
  get_number(schedule, "optimizer.schedule", "warmup_epochs", 0.0, 0, 1000.0, &config->optimizer.schedule.warmup_epochs,
             errors);
  if (config->optimizer.schedule.kind == CFG_LR_STEP) {
    get_int(schedule, "optimizer.schedule", "step_epochs", 1, 10000, &config->optimizer.schedule.step_epochs, errors);
    get_number(schedule, "optimizer.schedule", "gamma", 0.0, 1, 1.0, &config->optimizer.schedule.gamma, errors);
  } else {
    if (json_object_get(schedule, "step_epochs"))
      add_error(errors, "optimizer.schedule.step_epochs", "only for the step schedule");
    if (json_object_get(schedule, "gamma")) add_error(errors, "optimizer.schedule.gamma", "only for the step schedule");
  }
  if (config->optimizer.schedule.kind == CFG_LR_COSINE)
    get_number(schedule, "optimizer.schedule", "min_lr", 0.0, 0, 1.0, &config->optimizer.schedule.min_lr, errors);
  else if (json_object_get(schedule, "min_lr"))
    add_error(errors, "optimizer.schedule.min_lr", "only for the cosine schedule");
}

static void parse_optimizer(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known_sgd[] = {"type", "lr", "momentum", "weight_decay", "schedule", NULL};
  static const char *const known_adam[] = {"type", "lr", "beta1", "beta2", "eps", "weight_decay", "schedule", NULL};
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
  parse_lr_schedule(optimizer, config, errors);
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
  static const char *const known[] = {"name", "epochs", "task_weight", "distill_weight", "feature_weight",
                                      "adversarial_weight", "lr", NULL};
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
    get_number(item, prefix, "distill_weight", 0.0, 0, 1.0, &stage->distill_weight, errors);
    get_number(item, prefix, "feature_weight", 0.0, 0, 1.0, &stage->feature_weight, errors);
    get_number(item, prefix, "adversarial_weight", 0.0, 0, 1.0, &stage->adversarial_weight, errors);
    get_number(item, prefix, "lr", 0.0, 1, 10.0, &stage->lr, errors);
    total += stage->epochs;
  }
  if (total > 10000) add_error(errors, "stages", "may have at most 10000 epochs in all, not %lld", total);
}

/* teacher.model of a safetensors teacher: parsed as a config of its own (the student's with
 * this model, so that the dataset's input and classes apply), its errors moved under
 * "teacher.". */
static void parse_teacher_model(const json_t *root, const json_t *teacher, cfg_experiment_t *config,
                                cfg_errors_t *errors) {
  const json_t *model = json_object_get(teacher, "model");
  if (!model) {
    add_error(errors, "teacher.model", "is required with safetensors: the teacher's layers, e.g. {\"layers\": "
              "[{\"type\": \"linear\", \"out\": 10}]}");
    return;
  }
  json_t *copy = json_pack("{s:O, s:i}", "model", model, "epochs", 1);
  if (copy && json_object_get(root, "dataset")) json_object_set(copy, "dataset", json_object_get(root, "dataset"));
  cfg_experiment_t *parsed = malloc(sizeof *parsed);
  cfg_errors_t *found = malloc(sizeof *found);
  if (copy && parsed && found) {
    cfg_from_json(copy, parsed, found);
    for (int i = 0; i < found->count && i < CFG_MAX_ERRORS; i++) {
      if (strncmp(found->items[i].path, "model", 5) != 0) continue; /* the dataset's are the student's */
      char path[160];
      snprintf(path, sizeof path, "teacher.%s", found->items[i].path);
      add_error(errors, path, "%s", found->items[i].message);
    }
    config->teacher.n_layers = parsed->n_layers;
    memcpy(config->teacher.layers, parsed->layers, sizeof parsed->layers);
  }
  json_decref(copy);
  free(parsed);
  free(found);
}

void cfg_safetensors_teacher(const cfg_experiment_t *student, cfg_experiment_t *teacher) {
  *teacher = *student;
  teacher->n_layers = student->teacher.n_layers;
  memcpy(teacher->layers, student->teacher.layers, sizeof teacher->layers);
  teacher->teacher.kind = CFG_TEACHER_NONE;
  teacher->teacher.n_layers = 0;
  teacher->n_features = 0;
  teacher->n_grow = 0;
  teacher->adversarial.enabled = 0;
}

static void parse_teacher(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"experiment", "checkpoint", "safetensors", "model", NULL};
  const json_t *teacher = get_object(root, "", "teacher", errors);
  config->teacher.kind = CFG_TEACHER_NONE;
  if (!teacher) return;
  check_known_keys(teacher, "teacher", known, errors);
  if (json_object_get(teacher, "safetensors")) {
    if (get_string(teacher, "teacher", "safetensors", config->teacher.checkpoint, sizeof config->teacher.checkpoint,
                   errors) && config->teacher.checkpoint[0] == '\0')
      add_error(errors, "teacher.safetensors", "must be the path of a .safetensors file");
    if (json_object_get(teacher, "experiment") || json_object_get(teacher, "checkpoint"))
      add_error(errors, "teacher", "give one of experiment, checkpoint or safetensors");
    config->teacher.kind = CFG_TEACHER_SAFETENSORS;
    parse_teacher_model(root, teacher, config, errors);
    return;
  }
  if (json_object_get(teacher, "model"))
    add_error(errors, "teacher.model", "is for a safetensors teacher: a checkpoint or an experiment has its own");
  long long experiment = 0;
  int has_experiment = get_integer(teacher, "teacher", "experiment", 1, INT64_MAX / 2, &experiment, errors);
  int has_checkpoint =
      get_string(teacher, "teacher", "checkpoint", config->teacher.checkpoint, sizeof config->teacher.checkpoint, errors);
  if (has_checkpoint && config->teacher.checkpoint[0] == '\0') {
    add_error(errors, "teacher.checkpoint", "must be a path to a checkpoint file");
    has_checkpoint = 0;
  }
  if (has_experiment) {
    /* {"experiment": N} as submitted; with "checkpoint" too once the daemon has resolved it. */
    config->teacher.kind = CFG_TEACHER_EXPERIMENT;
    config->teacher.experiment = experiment;
  } else if (has_checkpoint) {
    config->teacher.kind = CFG_TEACHER_CHECKPOINT;
  } else if (!json_object_get(teacher, "experiment") && !json_object_get(teacher, "checkpoint")) {
    add_error(errors, "teacher", "give {\"experiment\": N} (a finished run) or {\"checkpoint\": \"path\"}");
  }
}

static const char *const temperature_schedules[] = {"constant", "linear", "cosine", "step", NULL};

static void parse_temperature(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"schedule", "start", "end", "every_epochs", NULL};
  config->temperature.kind = CFG_TEMPERATURE_CONSTANT;
  config->temperature.start = 4.0;
  config->temperature.every_epochs = 5;
  const json_t *temperature = get_object(root, "", "temperature", errors);
  if (temperature) {
    check_known_keys(temperature, "temperature", known, errors);
    config->temperature.kind =
        get_choice(temperature, "temperature", "schedule", temperature_schedules, CFG_TEMPERATURE_CONSTANT, errors);
    get_number(temperature, "temperature", "start", 0.0, 1, 100.0, &config->temperature.start, errors);
  }
  config->temperature.end = config->temperature.start;
  if (!temperature) return;
  if (config->temperature.kind == CFG_TEMPERATURE_CONSTANT) {
    if (json_object_get(temperature, "end"))
      add_error(errors, "temperature.end", "a constant temperature has only a start");
  } else {
    if (json_object_get(temperature, "end") == NULL)
      add_error(errors, "temperature.end", "is required for a %s schedule", temperature_schedules[config->temperature.kind]);
    get_number(temperature, "temperature", "end", 0.0, 1, 100.0, &config->temperature.end, errors);
  }
  if (config->temperature.kind == CFG_TEMPERATURE_STEP)
    get_int(temperature, "temperature", "every_epochs", 1, 10000, &config->temperature.every_epochs, errors);
  else if (json_object_get(temperature, "every_epochs"))
    add_error(errors, "temperature.every_epochs", "only for the step schedule");
}

static const char *const gates[] = {"none", "softmax", "mean_one", NULL};

/* The output shape a feature adapter can start from: flat features, or a feature map. */
static void parse_features(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"student", "teacher", "normalize", "gate", NULL};
  const json_t *features = json_object_get(root, "features");
  if (features == NULL) return;
  if (!json_is_array(features) || json_array_size(features) > CFG_MAX_FEATURES) {
    add_error(errors, "features", "must be an array of up to %d {\"student\": layer, \"teacher\": layer} pairs",
              CFG_MAX_FEATURES);
    return;
  }
  config->n_features = (int)json_array_size(features);
  for (int i = 0; i < config->n_features; i++) {
    const json_t *item = json_array_get(features, (size_t)i);
    cfg_feature_t *feature = &config->features[i];
    char prefix[64], path[96];
    snprintf(prefix, sizeof prefix, "features[%d]", i);
    feature->student_layer = -1;
    if (!json_is_object(item)) {
      add_error(errors, prefix, "must be an object like {\"student\": \"fc1\", \"teacher\": \"fc2\"}");
      continue;
    }
    check_known_keys(item, prefix, known, errors);
    const char *sides[2] = {"student", "teacher"};
    char *names[2] = {feature->student, feature->teacher};
    for (int side = 0; side < 2; side++)
      if (!get_string(item, prefix, sides[side], names[side], CFG_NAME_MAX, errors) && !json_object_get(item, sides[side]))
        add_error(errors, join(path, sizeof path, prefix, sides[side]), "is required: the name of a %s layer", sides[side]);
    if (feature->student[0]) {
      feature->student_layer = cfg_layer_index(config, feature->student);
      if (feature->student_layer < 0)
        add_error(errors, join(path, sizeof path, prefix, "student"), "the model has no layer named \"%s\"",
                  feature->student);
      else if (feature->student_layer == config->n_layers - 1)
        add_error(errors, join(path, sizeof path, prefix, "student"),
                  "\"%s\" is the output layer: align a hidden layer (the logits are what distill_weight is for)",
                  feature->student);
    }
    const json_t *normalize = json_object_get(item, "normalize");
    if (normalize && !json_is_boolean(normalize))
      add_error(errors, join(path, sizeof path, prefix, "normalize"), "must be true or false");
    feature->normalize = json_is_true(normalize);
    feature->gate = get_choice(item, prefix, "gate", gates, CFG_GATE_NONE, errors);
  }
}

static const char *const adversarial_losses[] = {"lsgan", "bce", NULL};

static void parse_adversarial(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"feature", "loss", "lr", "hidden", NULL};
  const json_t *adversarial = get_object(root, "", "adversarial", errors);
  config->adversarial.loss = CFG_ADVERSARIAL_LSGAN;
  config->adversarial.lr = 1e-4;
  config->adversarial.hidden = 128;
  if (!adversarial) return;
  config->adversarial.enabled = 1;
  check_known_keys(adversarial, "adversarial", known, errors);
  get_int(adversarial, "adversarial", "feature", 0, CFG_MAX_FEATURES - 1, &config->adversarial.feature, errors);
  if (config->adversarial.feature >= config->n_features)
    add_error(errors, "adversarial.feature", "names features[%d], but there %s %d feature pair%s",
              config->adversarial.feature, config->n_features == 1 ? "is" : "are", config->n_features,
              config->n_features == 1 ? "" : "s");
  config->adversarial.loss = get_choice(adversarial, "adversarial", "loss", adversarial_losses, CFG_ADVERSARIAL_LSGAN, errors);
  get_number(adversarial, "adversarial", "lr", 0.0, 1, 1.0, &config->adversarial.lr, errors);
  get_int(adversarial, "adversarial", "hidden", 1, 4096, &config->adversarial.hidden, errors);
}

static void parse_grow(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"epoch", "after", "hidden", "name", NULL};
  const json_t *grow = json_object_get(root, "grow");
  if (grow == NULL) return;
  if (!json_is_array(grow) || json_array_size(grow) > CFG_MAX_GROW) {
    add_error(errors, "grow", "must be an array of up to %d {\"epoch\": E, \"after\": layer} blocks", CFG_MAX_GROW);
    return;
  }
  config->n_grow = (int)json_array_size(grow);
  int total = cfg_total_epochs(config);
  for (int i = 0; i < config->n_grow; i++) {
    const json_t *item = json_array_get(grow, (size_t)i);
    cfg_grow_t *block = &config->grow[i];
    char prefix[64], path[96];
    snprintf(prefix, sizeof prefix, "grow[%d]", i);
    snprintf(block->name, sizeof block->name, "grow%d", i + 1);
    block->after_layer = -1;
    if (!json_is_object(item)) {
      add_error(errors, prefix, "must be an object like {\"epoch\": 5, \"after\": \"fc1\"}");
      continue;
    }
    check_known_keys(item, prefix, known, errors);
    if (json_object_get(item, "epoch") == NULL)
      add_error(errors, join(path, sizeof path, prefix, "epoch"), "is required: the epoch at whose start it joins");
    block->epoch = 2;
    get_int(item, prefix, "epoch", 2, total > 2 ? total : 2, &block->epoch, errors);
    if (get_string(item, prefix, "after", block->after, sizeof block->after, errors)) {
      block->after_layer = cfg_layer_index(config, block->after);
      join(path, sizeof path, prefix, "after");
      if (block->after_layer < 0)
        add_error(errors, path, "the model has no layer named \"%s\"", block->after);
      else if (block->after_layer == config->n_layers - 1)
        add_error(errors, path, "a block cannot follow the output layer");
      else if (config->layers[block->after_layer].shape.image)
        add_error(errors, path, "\"%s\" outputs a feature map; blocks join after flat layers", block->after);
    } else if (!json_object_get(item, "after")) {
      add_error(errors, join(path, sizeof path, prefix, "after"), "is required: the layer the block follows");
    }
    block->hidden = block->after_layer >= 0 ? config->layers[block->after_layer].shape.channels : 1;
    get_int(item, prefix, "hidden", 1, 65536, &block->hidden, errors);
    if (get_string(item, prefix, "name", block->name, sizeof block->name, errors) &&
        (!is_identifier(block->name) || cfg_layer_index(config, block->name) >= 0))
      add_error(errors, join(path, sizeof path, prefix, "name"), "must be a new name of letters, digits, '_', '-', '.'");
    for (int j = 0; j < i; j++)
      if (strcmp(config->grow[j].name, block->name) == 0)
        add_error(errors, join(path, sizeof path, prefix, "name"), "\"%s\" is already grow[%d]", block->name, j);
  }
}

/* Rules between sections: a term with a weight needs what computes it. */
static void check_terms(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  int has_teacher = config->teacher.kind != CFG_TEACHER_NONE;
  for (int i = 0; i < config->n_stages; i++) {
    const cfg_stage_t *stage = &config->stages[i];
    char path[96];
    if (stage->distill_weight > 0 && !has_teacher)
      add_error(errors, (snprintf(path, sizeof path, "stages[%d].distill_weight", i), path),
                "distillation needs a teacher: add \"teacher\": {\"experiment\": N}");
    if (stage->feature_weight > 0 && config->n_features == 0)
      add_error(errors, (snprintf(path, sizeof path, "stages[%d].feature_weight", i), path),
                "feature alignment needs \"features\": [{\"student\": layer, \"teacher\": layer}]");
    if (stage->adversarial_weight > 0 && !config->adversarial.enabled)
      add_error(errors, (snprintf(path, sizeof path, "stages[%d].adversarial_weight", i), path),
                "needs an \"adversarial\" section (the discriminator)");
  }
  if (config->n_features > 0 && !has_teacher) add_error(errors, "features", "feature alignment needs a teacher");
  if (json_object_get(root, "temperature") && !has_teacher)
    add_error(errors, "temperature", "the temperature softens the teacher's targets: it needs a teacher");
  if (config->adversarial.enabled && !has_teacher) add_error(errors, "adversarial", "needs a teacher");
}

// ---------------------------------------------------------------------------------------

int cfg_from_json(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"name", "seed", "priority", "dataset", "model", "optimizer",
                                      "batch_size", "epochs", "stages", "teacher", "temperature",
                                      "features", "adversarial", "grow", "checkpoint_every",
                                      "checkpoint_keep", "grad_norm_every", "max_attempts", NULL};
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
  parse_teacher(root, config, errors);
  parse_temperature(root, config, errors);
  parse_features(root, config, errors);
  parse_adversarial(root, config, errors); /* after the features it refers to */
  parse_grow(root, config, errors);        /* after the stages: it knows the epochs */
  check_terms(root, config, errors);
  config->checkpoint_every = 1;
  get_int(root, "", "checkpoint_every", 0, 10000, &config->checkpoint_every, errors);
  get_int(root, "", "checkpoint_keep", 0, 10000, &config->checkpoint_keep, errors);
  config->grad_norm_every = 50;
  get_int(root, "", "grad_norm_every", 1, 1000000, &config->grad_norm_every, errors);
  config->max_attempts = 2;
  get_int(root, "", "max_attempts", 1, 10, &config->max_attempts, errors);
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

static json_t *layer_to_json(const cfg_layer_t *layer) {
  json_t *item = json_pack("{s:s}", "type", cfg_layer_kind_name(layer->kind));
  if (layer->name[0]) json_object_set_new(item, "name", json_string(layer->name));
  switch (layer->kind) {
  case CFG_LAYER_LINEAR:
    json_object_set_new(item, "out", json_integer(layer->out));
    break;
  case CFG_LAYER_CONV2D:
    json_object_update_new(item, json_pack("{s:i, s:i, s:i, s:i}", "out", layer->out, "kernel", layer->kernel,
                                           "stride", layer->stride, "padding", layer->padding));
    break;
  case CFG_LAYER_MAXPOOL:
    json_object_update_new(item, json_pack("{s:i, s:i}", "size", layer->kernel, "stride", layer->stride));
    break;
  case CFG_LAYER_DROPOUT:
    json_object_set_new(item, "p", json_real(layer->p));
    break;
  default:
    break;
  }
  return item;
}

json_t *cfg_to_json(const cfg_experiment_t *config) {
  json_t *layers = json_array();
  for (int i = 0; i < config->n_layers; i++) json_array_append_new(layers, layer_to_json(&config->layers[i]));
  json_t *stages = json_array();
  for (int i = 0; i < config->n_stages; i++) {
    const cfg_stage_t *stage = &config->stages[i];
    json_array_append_new(stages, json_pack("{s:s, s:i, s:f, s:f, s:f, s:f, s:f}", "name", stage->name, "epochs",
                                            stage->epochs, "task_weight", stage->task_weight, "distill_weight",
                                            stage->distill_weight, "feature_weight", stage->feature_weight,
                                            "adversarial_weight", stage->adversarial_weight, "lr", stage->lr));
  }
  json_t *dataset = json_pack("{s:s, s:I, s:i}", "name", dataset_name(config), "split_seed",
                              (json_int_t)config->dataset.split_seed, "val_size", config->dataset.val_size);
  json_object_set_new(dataset, "train_limit",
                      config->dataset.train_limit ? json_integer(config->dataset.train_limit) : json_null());
  if (config->dataset.kind != CFG_DATASET_FASHION_MNIST) {
    json_object_set_new(dataset, "train_size", json_integer(config->dataset.train_size));
    json_object_set_new(dataset, "test_size", json_integer(config->dataset.test_size));
  }
  if (config->dataset.kind == CFG_DATASET_REGISTERED) {
    cfg_dataset_source_to_json(&config->dataset.source, dataset);
    json_object_set_new(dataset, "classes", json_integer(config->dataset.classes));
    json_object_set_new(dataset, "input", json_pack("[i, i, i]", config->dataset.input.channels,
                                                    config->dataset.input.height, config->dataset.input.width));
  }
  const typeof(config->optimizer.schedule) *lr = &config->optimizer.schedule;
  json_t *schedule = json_pack("{s:s, s:f}", "type", lr_schedules[lr->kind], "warmup_epochs", lr->warmup_epochs);
  if (lr->kind == CFG_LR_STEP)
    json_object_update_new(schedule, json_pack("{s:i, s:f}", "step_epochs", lr->step_epochs, "gamma", lr->gamma));
  if (lr->kind == CFG_LR_COSINE) json_object_set_new(schedule, "min_lr", json_real(lr->min_lr));
  json_t *optimizer = json_pack("{s:s, s:f, s:f, s:o}", "type", optimizer_kinds[config->optimizer.kind], "lr",
                                config->optimizer.lr, "weight_decay", config->optimizer.weight_decay, "schedule",
                                schedule);
  if (config->optimizer.kind == CFG_OPTIMIZER_ADAM) {
    json_object_set_new(optimizer, "beta1", json_real(config->optimizer.beta1));
    json_object_set_new(optimizer, "beta2", json_real(config->optimizer.beta2));
    json_object_set_new(optimizer, "eps", json_real(config->optimizer.eps));
  } else {
    json_object_set_new(optimizer, "momentum", json_real(config->optimizer.momentum));
  }
  json_t *root = json_pack("{s:s, s:I, s:i, s:o, s:{s:o}, s:o, s:i, s:o, s:i, s:i}", "name", config->name, "seed",
                           (json_int_t)config->seed, "priority", config->priority, "dataset", dataset, "model",
                           "layers", layers, "optimizer", optimizer, "batch_size", config->batch_size, "stages",
                           stages, "checkpoint_every", config->checkpoint_every, "grad_norm_every",
                           config->grad_norm_every);
  json_object_set_new(root, "checkpoint_keep", json_integer(config->checkpoint_keep));
  json_object_set_new(root, "max_attempts", json_integer(config->max_attempts));
  if (config->teacher.kind != CFG_TEACHER_NONE) {
    json_t *teacher = json_object();
    if (config->teacher.kind == CFG_TEACHER_EXPERIMENT)
      json_object_set_new(teacher, "experiment", json_integer(config->teacher.experiment));
    if (config->teacher.kind == CFG_TEACHER_SAFETENSORS) {
      json_t *teacher_layers = json_array();
      for (int i = 0; i < config->teacher.n_layers; i++)
        json_array_append_new(teacher_layers, layer_to_json(&config->teacher.layers[i]));
      json_object_set_new(teacher, "safetensors", json_string(config->teacher.checkpoint));
      json_object_set_new(teacher, "model", json_pack("{s:o}", "layers", teacher_layers));
    } else if (config->teacher.checkpoint[0]) {
      json_object_set_new(teacher, "checkpoint", json_string(config->teacher.checkpoint));
    }
    json_object_set_new(root, "teacher", teacher);
    json_t *temperature = json_pack("{s:s, s:f}", "schedule", temperature_schedules[config->temperature.kind], "start",
                                    config->temperature.start);
    if (config->temperature.kind != CFG_TEMPERATURE_CONSTANT)
      json_object_set_new(temperature, "end", json_real(config->temperature.end));
    if (config->temperature.kind == CFG_TEMPERATURE_STEP)
      json_object_set_new(temperature, "every_epochs", json_integer(config->temperature.every_epochs));
    json_object_set_new(root, "temperature", temperature);
  }
  if (config->n_features > 0) {
    json_t *features = json_array();
    for (int i = 0; i < config->n_features; i++) {
      const cfg_feature_t *feature = &config->features[i];
      json_array_append_new(features, json_pack("{s:s, s:s, s:b, s:s}", "student", feature->student, "teacher",
                                                feature->teacher, "normalize", feature->normalize, "gate",
                                                gates[feature->gate]));
    }
    json_object_set_new(root, "features", features);
  }
  if (config->adversarial.enabled)
    json_object_set_new(root, "adversarial",
                        json_pack("{s:i, s:s, s:f, s:i}", "feature", config->adversarial.feature, "loss",
                                  adversarial_losses[config->adversarial.loss], "lr", config->adversarial.lr, "hidden",
                                  config->adversarial.hidden));
  if (config->n_grow > 0) {
    json_t *grow = json_array();
    for (int i = 0; i < config->n_grow; i++) {
      const cfg_grow_t *block = &config->grow[i];
      json_array_append_new(grow, json_pack("{s:i, s:s, s:i, s:s}", "epoch", block->epoch, "after", block->after,
                                            "hidden", block->hidden, "name", block->name));
    }
    json_object_set_new(root, "grow", grow);
  }
  return root;
}

/* Appends ", " (unless first) and the formatted text to `buffer`, cutting at its size. */
__attribute__((format(printf, 3, 4))) static void append(char *buffer, size_t size, const char *format, ...) {
  size_t used = strlen(buffer);
  if (used && used + 2 < size) {
    strcpy(buffer + used, ", ");
    used += 2;
  }
  va_list args;
  va_start(args, format);
  if (used + 1 < size) vsnprintf(buffer + used, size - used, format, args);
  va_end(args);
}

int cfg_check_teacher(const cfg_experiment_t *student, const cfg_experiment_t *teacher, cfg_errors_t *errors) {
  int before = errors->count;
  if (teacher->teacher.kind != CFG_TEACHER_NONE)
    add_error(errors, "teacher", "a teacher must be trained without a teacher of its own");
  /* The same data (config.h says what that means): every difference in one error. */
  char differences[256] = "";
  const typeof(student->dataset) *mine = &student->dataset, *theirs = &teacher->dataset;
  if (mine->kind != theirs->kind || strcmp(dataset_name(student), dataset_name(teacher)) != 0)
    append(differences, sizeof differences, "name \"%s\" (here \"%s\")", dataset_name(teacher),
           dataset_name(student));
  else if (strcmp(mine->source.checksum, theirs->source.checksum) != 0)
    append(differences, sizeof differences, "content, checksum %.12s… (here %.12s…)", theirs->source.checksum,
           mine->source.checksum);
  if (mine->split_seed != theirs->split_seed)
    append(differences, sizeof differences, "split_seed %llu (here %llu)", (unsigned long long)theirs->split_seed,
           (unsigned long long)mine->split_seed);
  if (mine->val_size != theirs->val_size)
    append(differences, sizeof differences, "val_size %d (here %d)", theirs->val_size, mine->val_size);
  if (differences[0])
    add_error(errors, "dataset",
              "the teacher was trained on other data (its %s): it may have trained on this run's validation "
              "examples (seed and train_limit may differ)", differences);
  for (int i = 0; i < student->n_features; i++) {
    const cfg_feature_t *feature = &student->features[i];
    char path[64];
    snprintf(path, sizeof path, "features[%d].teacher", i);
    int index = cfg_layer_index(teacher, feature->teacher);
    if (index < 0) {
      add_error(errors, path, "the teacher has no layer named \"%s\"", feature->teacher);
      continue;
    }
    if (feature->student_layer < 0) continue;
    const cfg_shape_t *from = &student->layers[feature->student_layer].shape, *to = &teacher->layers[index].shape;
    /* Maps of any two sizes meet: the larger is pooled to the smaller (the worker's
     * distill.h). A map and flat features do not: which pixels would a feature be? */
    if (from->image != to->image)
      add_error(errors, path, "\"%s\" is %s but the student's \"%s\" is %s: align flat with flat, maps with maps",
                feature->teacher, to->image ? "a feature map" : "flat", feature->student,
                from->image ? "a feature map" : "flat");
  }
  return errors->count == before ? 0 : -EINVAL;
}

int cfg_layer_index(const cfg_experiment_t *config, const char *name) {
  char display[CFG_NAME_MAX];
  for (int i = 0; i < config->n_layers; i++) {
    cfg_layer_display_name(config, i, display, sizeof display);
    if (strcmp(display, name) == 0) return i;
  }
  return -1;
}

void cfg_layer_display_name(const cfg_experiment_t *config, int layer, char *out, size_t size) {
  const cfg_layer_t *spec = &config->layers[layer];
  if (spec->name[0]) {
    snprintf(out, size, "%s", spec->name);
    return;
  }
  int position = 0;
  for (int i = 0; i < layer; i++) position += config->layers[i].kind == spec->kind;
  snprintf(out, size, "%s%d", cfg_layer_kind_name(spec->kind), position);
}

int cfg_shape_size(const cfg_shape_t *shape) { return shape->channels * shape->height * shape->width; }

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

void cfg_distill_span(const cfg_experiment_t *config, double *first, double *end) {
  int epochs = 0, from = -1, to = -1;
  for (int i = 0; i < config->n_stages; i++) {
    if (config->stages[i].distill_weight > 0) {
      if (from < 0) from = epochs;
      to = epochs + config->stages[i].epochs;
    }
    epochs += config->stages[i].epochs;
  }
  *first = from < 0 ? 0 : from;
  *end = from < 0 ? epochs : to;
}

double cfg_temperature_at(const cfg_experiment_t *config, double epoch) {
  /* The schedule runs over the stages that distil, from the first step of the first one to
   * the end of the last one: the temperature only matters where KD has a weight. Spread over
   * the whole run, kd-progressive's 5 task-only epochs would spend a third of the schedule
   * before KD starts, and its first distilling step would see 5.0 instead of 6.0. Before
   * that span T stays at start, after it at end (a task-only stage in between counts, so the
   * schedule does not jump across it). */
  double start = config->temperature.start, end = config->temperature.end, first, last;
  cfg_distill_span(config, &first, &last);
  const double span = last - first, into = epoch - first;
  double done = span > 0 ? into / span : 1.0;
  if (done < 0) done = 0;
  if (done > 1) done = 1;
  switch (config->temperature.kind) {
  case CFG_TEMPERATURE_LINEAR: return start + (end - start) * done;
  case CFG_TEMPERATURE_COSINE: return end + (start - end) * 0.5 * (1.0 + cos(M_PI * done));
  case CFG_TEMPERATURE_STEP: {
    /* Equal jumps every every_epochs epochs of the span, the last one landing on `end`. */
    int every = config->temperature.every_epochs;
    int jumps = ((int)span - 1) / every;
    if (jumps < 1) return start;
    double k = floor(into / every);
    if (k < 0) k = 0;
    return start + (end - start) * (k < jumps ? k : jumps) / jumps;
  }
  default: return start;
  }
}

double cfg_lr_factor_at(const cfg_experiment_t *config, double epoch) {
  const typeof(config->optimizer.schedule) *schedule = &config->optimizer.schedule;
  int total = cfg_total_epochs(config);
  double factor = 1.0;
  switch (schedule->kind) {
  case CFG_LR_STEP: factor = pow(schedule->gamma, floor(epoch / schedule->step_epochs)); break;
  case CFG_LR_COSINE: {
    double done = total > 0 ? epoch / total : 1.0;
    if (done > 1) done = 1;
    factor = schedule->min_lr + (1.0 - schedule->min_lr) * 0.5 * (1.0 + cos(M_PI * done));
    break;
  }
  default: break;
  }
  if (schedule->warmup_epochs > 0 && epoch < schedule->warmup_epochs) factor *= epoch / schedule->warmup_epochs;
  return factor;
}

static int any_stage_weight(const cfg_experiment_t *config, size_t offset) {
  for (int i = 0; i < config->n_stages; i++)
    if (*(const double *)((const char *)&config->stages[i] + offset) > 0) return 1;
  return 0;
}

int cfg_uses_distillation(const cfg_experiment_t *config) {
  return any_stage_weight(config, offsetof(cfg_stage_t, distill_weight));
}
int cfg_uses_features(const cfg_experiment_t *config) {
  return any_stage_weight(config, offsetof(cfg_stage_t, feature_weight));
}
int cfg_uses_adversarial(const cfg_experiment_t *config) {
  return any_stage_weight(config, offsetof(cfg_stage_t, adversarial_weight));
}

cfg_shape_t cfg_input_shape(const cfg_experiment_t *config) {
  if (config->dataset.input.channels > 0) return config->dataset.input;
  return (cfg_shape_t){1, CFG_IMAGE_SIDE, CFG_IMAGE_SIDE, 1};
}

int cfg_inputs(const cfg_experiment_t *config) {
  cfg_shape_t shape = cfg_input_shape(config);
  return cfg_shape_size(&shape);
}

int cfg_classes(const cfg_experiment_t *config) {
  return config->dataset.classes > 0 ? config->dataset.classes : CFG_CLASSES;
}

const char *cfg_layer_kind_name(cfg_layer_kind_t kind) {
  return (unsigned)kind < CFG_LAYER_KIND_COUNT ? layer_kinds[kind] : "?";
}
