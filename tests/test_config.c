/* test_config.c — config validation: good configs get their defaults, and every kind of
 * bad config is refused with the exact path of each bad field. */
#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "config.h"

#define MLP "\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 32, \"name\": \"fc1\"}, {\"type\": \"relu\"}, " \
            "{\"type\": \"linear\", \"out\": 10}]}"

static cfg_experiment_t config;
static cfg_errors_t errors;

static int parse(const char *text) { return cfg_parse(text, strlen(text), &config, &errors); }

/* Whether some error has this exact path and its message contains `words`. */
static int has_error(const char *path, const char *words) {
  for (int i = 0; i < errors.count && i < CFG_MAX_ERRORS; i++)
    if (strcmp(errors.items[i].path, path) == 0 && strstr(errors.items[i].message, words)) return 1;
  fprintf(stderr, "  no error at \"%s\" containing \"%s\"; got:\n", path, words);
  for (int i = 0; i < errors.count && i < CFG_MAX_ERRORS; i++)
    fprintf(stderr, "    %s: %s\n", errors.items[i].path, errors.items[i].message);
  return 0;
}

static void test_minimal_config_gets_defaults(void) {
  CHECK_INT(0, parse("{" MLP "}"));
  CHECK_INT(0, errors.count);
  CHECK_INT(CFG_DATASET_FASHION_MNIST, config.dataset.kind);
  CHECK_INT(5000, config.dataset.val_size);
  CHECK_INT(0, config.dataset.train_limit);
  CHECK_INT(128, config.batch_size);
  CHECK_INT(1, (long long)config.seed);
  CHECK_INT(CFG_OPTIMIZER_SGD, config.optimizer.kind);
  CHECK_NEAR(0.05, config.optimizer.lr, 1e-12);
  CHECK_NEAR(0.9, config.optimizer.momentum, 1e-12);
  CHECK_INT(1, config.n_stages);
  CHECK_STR("train", config.stages[0].name);
  CHECK_INT(10, config.stages[0].epochs);
  CHECK_NEAR(1.0, config.stages[0].task_weight, 1e-12);
  CHECK_INT(3, config.n_layers);
  CHECK_INT(CFG_LAYER_LINEAR, config.layers[0].kind);
  CHECK_INT(32, config.layers[0].out);
  CHECK_STR("fc1", config.layers[0].name);
  CHECK_INT(CFG_LAYER_RELU, config.layers[1].kind);
}

static void test_full_config(void) {
  const char *text = "{\"name\": \"three-stage\", \"seed\": 7, \"priority\": 5, \"batch_size\": 64,"
                     "\"dataset\": {\"name\": \"synthetic\", \"train_size\": 1000, \"test_size\": 200, \"val_size\": 100},"
                     "\"optimizer\": {\"type\": \"adam\", \"lr\": 0.002, \"beta2\": 0.99},"
                     "\"stages\": [{\"name\": \"a\", \"epochs\": 2}, {\"epochs\": 3, \"task_weight\": 0.5, \"lr\": 0.01}]," MLP "}";
  CHECK_INT(0, parse(text));
  CHECK_STR("three-stage", config.name);
  CHECK_INT(7, (long long)config.seed);
  CHECK_INT(5, config.priority);
  CHECK_INT(64, config.batch_size);
  CHECK_INT(CFG_DATASET_SYNTHETIC, config.dataset.kind);
  CHECK_INT(1000, config.dataset.train_size);
  CHECK_INT(100, config.dataset.val_size);
  CHECK_INT(CFG_OPTIMIZER_ADAM, config.optimizer.kind);
  CHECK_NEAR(0.99, config.optimizer.beta2, 1e-12);
  CHECK_INT(2, config.n_stages);
  CHECK_STR("a", config.stages[0].name);
  CHECK_STR("stage2", config.stages[1].name);
  CHECK_NEAR(0.002, config.stages[0].lr, 1e-12); /* inherited from the optimizer */
  CHECK_NEAR(0.01, config.stages[1].lr, 1e-12);
  CHECK_INT(5, cfg_total_epochs(&config));
  CHECK_INT(0, cfg_stage_of_epoch(&config, 1));
  CHECK_INT(1, cfg_stage_of_epoch(&config, 2));
  CHECK_INT(1, cfg_stage_of_epoch(&config, 4));
}

/* What the daemon stores must parse back to the same config. */
static void test_round_trip(void) {
  const char *text = "{\"name\": \"x\", \"seed\": 3, \"dataset\": {\"name\": \"synthetic\", \"train_limit\": 500},"
                     "\"stages\": [{\"epochs\": 2, \"task_weight\": 0.25}]," MLP "}";
  CHECK_INT(0, parse(text));
  cfg_experiment_t first = config;
  json_t *json = cfg_to_json(&first);
  CHECK(json != NULL);
  char *dumped = json_dumps(json, JSON_COMPACT);
  json_decref(json);
  CHECK_INT(0, parse(dumped));
  CHECK(memcmp(&first, &config, sizeof config) == 0);
  free(dumped);
}

static void test_malformed_json(void) {
  CHECK_INT(-EINVAL, parse("{\"name\": "));
  CHECK_INT(1, errors.count);
  CHECK(has_error("", "invalid JSON at line 1"));
  CHECK_INT(-EINVAL, parse("[1, 2]"));
  CHECK(has_error("", "must be a JSON object, not an array"));
  CHECK_INT(-EINVAL, parse("{\"name\": \"a\", \"name\": \"b\"," MLP "}"));
  CHECK(has_error("", "duplicate"));
}

static void test_every_bad_field_is_reported(void) {
  const char *text = "{\"nmae\": \"typo\", \"seed\": -1, \"batch_size\": \"128\","
                     "\"dataset\": {\"name\": \"cifar\"},"
                     "\"optimizer\": {\"lr\": 0, \"momentum\": 1.5, \"beta1\": 0.9},"
                     "\"stages\": [{\"epochs\": 2}, {\"epochs\": 0, \"task_weight\": 2, \"distill_weight\": 0.3}, 5],"
                     "\"model\": {\"layers\": [{\"type\": \"linear\"}, {\"type\": \"conv9\"}, {\"type\": \"linear\", \"out\": 7}]}}";
  CHECK_INT(-EINVAL, parse(text));
  CHECK(has_error("nmae", "unknown field"));
  CHECK(has_error("seed", "must be between 0"));
  CHECK(has_error("batch_size", "must be an integer, not a string"));
  CHECK(has_error("dataset.name", "must be one of fashion-mnist, synthetic"));
  CHECK(has_error("optimizer.lr", "greater than 0"));
  CHECK(has_error("optimizer.momentum", "at most 0.999"));
  CHECK(has_error("optimizer.beta1", "unknown field"));
  CHECK(has_error("stages[1].epochs", "between 1 and"));
  CHECK(has_error("stages[1].task_weight", "at most 1"));
  CHECK(has_error("stages[1].distill_weight", "unknown field"));
  CHECK(has_error("stages[2]", "must be an object"));
  CHECK(has_error("model.layers[0].out", "is required"));
  CHECK(has_error("model.layers[1].type", "must be one of linear, relu"));
  CHECK(has_error("model.layers[2].out", "must output 10 logits"));
  CHECK_INT(14, errors.count);
}

static void test_model_rules(void) {
  CHECK_INT(-EINVAL, parse("{}"));
  CHECK(has_error("model", "is required"));
  CHECK_INT(-EINVAL, parse("{\"model\": {\"layers\": []}}"));
  CHECK(has_error("model.layers", "1 to"));
  CHECK_INT(-EINVAL, parse("{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 10}, {\"type\": \"relu\"}]}}"));
  CHECK(has_error("model.layers[1]", "last layer must be linear"));
  CHECK_INT(-EINVAL, parse("{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 8, \"name\": \"a\"},"
                           "{\"type\": \"relu\", \"name\": \"a\"}, {\"type\": \"linear\", \"out\": 10, \"name\": \"b c\"}]}}"));
  CHECK(has_error("model.layers[1].name", "already the name of model.layers[0]"));
  CHECK(has_error("model.layers[2].name", "only letters"));
  CHECK_INT(-EINVAL, parse("{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 10, \"name\": \"relu3\"}]}}"));
  CHECK(has_error("model.layers[0].name", "how unnamed layers are called"));
  CHECK_INT(0, parse("{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 10, \"name\": \"linear_head\"}]}}"));
  CHECK_INT(-EINVAL, parse("{\"model\": {\"layers\": [{\"type\": \"relu\", \"out\": 3}, {\"type\": \"linear\", \"out\": 10}]}}"));
  CHECK(has_error("model.layers[0].out", "unknown field"));
}

static void test_dataset_rules(void) {
  CHECK_INT(-EINVAL, parse("{\"dataset\": {\"train_size\": 10, \"val_size\": 60000}," MLP "}"));
  CHECK(has_error("dataset.train_size", "only the synthetic dataset"));
  CHECK(has_error("dataset.val_size", "between 0 and 59999"));
  CHECK_INT(0, parse("{\"dataset\": {\"train_limit\": null}," MLP "}"));
  CHECK_INT(-EINVAL, parse("{\"dataset\": {\"train_limit\": 0}," MLP "}"));
  CHECK(has_error("dataset.train_limit", "between 1 and 60000"));
  CHECK_INT(-EINVAL, parse("{\"dataset\": 3," MLP "}"));
  CHECK(has_error("dataset", "must be an object, not an integer"));
}

static void test_epochs_or_stages(void) {
  CHECK_INT(0, parse("{\"epochs\": 4," MLP "}"));
  CHECK_INT(4, config.stages[0].epochs);
  CHECK_INT(0, parse("{\"epochs\": 4.0," MLP "}"));
  CHECK_INT(-EINVAL, parse("{\"epochs\": 4.5," MLP "}"));
  CHECK(has_error("epochs", "must be an integer, not a number"));
  CHECK_INT(-EINVAL, parse("{\"epochs\": 4, \"stages\": [{\"epochs\": 1}]," MLP "}"));
  CHECK(has_error("epochs", "either epochs"));
  CHECK_INT(-EINVAL, parse("{\"stages\": [{\"task_weight\": 1}]," MLP "}"));
  CHECK(has_error("stages[0].epochs", "is required"));
  CHECK_INT(-EINVAL, parse("{\"stages\": []," MLP "}"));
  CHECK(has_error("stages", "1 to"));
}

static void test_errors_to_json(void) {
  CHECK_INT(-EINVAL, parse("{\"seed\": \"x\", \"batch_size\": 0," MLP "}"));
  json_t *list = cfg_errors_to_json(&errors);
  CHECK_INT(2, json_array_size(list));
  CHECK_STR("seed", json_string_value(json_object_get(json_array_get(list, 0), "path")));
  CHECK_STR("batch_size", json_string_value(json_object_get(json_array_get(list, 1), "path")));
  json_decref(list);
}

int main(void) {
  test_minimal_config_gets_defaults();
  test_full_config();
  test_round_trip();
  test_malformed_json();
  test_every_bad_field_is_reported();
  test_model_rules();
  test_dataset_rules();
  test_epochs_or_stages();
  test_errors_to_json();
  return check_summary();
}
