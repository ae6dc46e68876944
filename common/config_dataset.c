/* config_dataset.c — the config's dataset section (see config.h): a built-in dataset
 * (Fashion-MNIST, synthetic) or a registered one, its source files, split and limits, and
 * the input shape and classes it gives the model. Part of the validator (config_json.c). */
#include "config.h"

#include <string.h>

#include "config_internal.h"
#include "util.h"

#define FASHION_MNIST_TRAIN 60000

static const char *const dataset_names[] = {"fashion-mnist", "synthetic", NULL};
/* A built-in dataset's name even in a config built by hand (dataset.name left ""). */
const char *cfg_dataset_name(const cfg_experiment_t *config) {
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

void cfg_parse_dataset(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
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

int cfg_shape_size(const cfg_shape_t *shape) { return shape->channels * shape->height * shape->width; }

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
