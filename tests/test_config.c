/* test_config.c — config validation: good configs get their defaults, and every kind of
 * bad config is refused with the exact path of each bad field. */
#include <errno.h>
#include <glob.h>
#include <stdlib.h>

#include "check.h"
#include "config.h"
#include "util.h"

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
  CHECK_INT(1, config.checkpoint_every);
  CHECK_INT(0, config.checkpoint_keep); /* all kept */
  CHECK_INT(-EINVAL, parse("{" MLP ", \"checkpoint_keep\": -1}"));
  CHECK(has_error("checkpoint_keep", "between 0"));
  CHECK_INT(0, parse("{" MLP ", \"checkpoint_keep\": 3}"));
  CHECK_INT(3, config.checkpoint_keep);
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
  /* jansson's message quotes the bytes it choked on, here not UTF-8 (found by fuzz_config):
   * the error must still reach the client as JSON. */
  CHECK_INT(-EINVAL, parse("\"\\u0\xd6\x9c\x90\x91stant\"[]}"));
  json_t *list = cfg_errors_to_json(&errors);
  CHECK_INT(1, json_array_size(list));
  char *text = json_dumps(list, JSON_COMPACT);
  CHECK(text != NULL);
  free(text);
  json_decref(list);
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
  CHECK(has_error("dataset.name", "\"cifar\" is neither fashion-mnist, synthetic nor a registered dataset"));
  CHECK(has_error("optimizer.lr", "greater than 0"));
  CHECK(has_error("optimizer.momentum", "at most 0.999"));
  CHECK(has_error("optimizer.beta1", "unknown field"));
  CHECK(has_error("stages[1].epochs", "between 1 and"));
  CHECK(has_error("stages[1].task_weight", "at most 1"));
  CHECK(has_error("stages[1].distill_weight", "needs a teacher"));
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
  /* A small generated set gets a hold-out that fits it, and what is stored parses back. */
  CHECK_INT(0, parse("{\"dataset\": {\"name\": \"synthetic\", \"train_size\": 64}," MLP "}"));
  CHECK_INT(8, config.dataset.val_size);
  json_t *stored = cfg_to_json(&config);
  cfg_experiment_t first = config;
  CHECK_INT(0, cfg_from_json(stored, &config, &errors));
  CHECK(memcmp(&first, &config, sizeof config) == 0);
  json_decref(stored);
  CHECK_INT(-EINVAL, parse("{\"dataset\": {\"train_size\": 10, \"val_size\": 60000}," MLP "}"));
  CHECK(has_error("dataset.train_size", "only the synthetic dataset"));
  CHECK(has_error("dataset.val_size", "between 0 and 59999"));
  CHECK_INT(0, parse("{\"dataset\": {\"train_limit\": null}," MLP "}"));
  CHECK_INT(-EINVAL, parse("{\"dataset\": {\"train_limit\": 0}," MLP "}"));
  CHECK(has_error("dataset.train_limit", "between 1 and 60000"));
  CHECK_INT(-EINVAL, parse("{\"dataset\": 3," MLP "}"));
  CHECK(has_error("dataset", "must be an object, not an integer"));

  /* split_seed: the data's, defaulting to CFG_SPLIT_SEED whatever the run's seed, stored
   * with every config (a config from before it existed gets the default). */
  CHECK_INT(0, parse("{\"seed\": 9," MLP "}"));
  CHECK_INT(CFG_SPLIT_SEED, (long long)config.dataset.split_seed);
  CHECK_INT(1, CFG_SPLIT_SEED);
  stored = cfg_to_json(&config);
  CHECK_INT(CFG_SPLIT_SEED, json_integer_value(json_object_get(json_object_get(stored, "dataset"), "split_seed")));
  json_decref(stored);
  CHECK_INT(0, parse("{\"seed\": 9, \"dataset\": {\"split_seed\": 42}," MLP "}"));
  CHECK_INT(42, (long long)config.dataset.split_seed);
  CHECK_INT(9, (long long)config.seed);
  stored = cfg_to_json(&config);
  first = config;
  CHECK_INT(0, cfg_from_json(stored, &config, &errors));
  CHECK(memcmp(&first, &config, sizeof config) == 0);
  json_decref(stored);
  CHECK_INT(-EINVAL, parse("{\"dataset\": {\"split_seed\": -1}," MLP "}"));
  CHECK(has_error("dataset.split_seed", "must be between 0"));
  CHECK_INT(-EINVAL, parse("{\"dataset\": {\"split_seed\": \"7\"}," MLP "}"));
  CHECK(has_error("dataset.split_seed", "must be an integer"));
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

#define CNN "\"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 8, \"name\": \"conv1\"}, {\"type\": \"relu\"}," \
            "{\"type\": \"maxpool\"}, {\"type\": \"conv2d\", \"out\": 16, \"kernel\": 5, \"padding\": 0}," \
            "{\"type\": \"flatten\"}, {\"type\": \"dropout\", \"p\": 0.25}, {\"type\": \"linear\", \"out\": 32, \"name\": \"fc1\"}," \
            "{\"type\": \"relu\"}, {\"type\": \"linear\", \"out\": 10}]}"

static void test_cnn_shapes(void) {
  CHECK_INT(0, parse("{" CNN "}"));
  CHECK_INT(8, config.layers[0].shape.channels); /* 3×3, padding 1: same size */
  CHECK_INT(28, config.layers[0].shape.height);
  CHECK_INT(1, config.layers[0].padding);
  CHECK_INT(14, config.layers[2].shape.height); /* 2×2 pool */
  CHECK_INT(10, config.layers[3].shape.width);  /* 5×5, no padding: 14 − 4 */
  CHECK_INT(16 * 10 * 10, config.layers[4].shape.channels);
  CHECK_INT(0, config.layers[4].shape.image);
  CHECK_NEAR(0.25, config.layers[5].p, 1e-12);
  char name[CFG_NAME_MAX];
  cfg_layer_display_name(&config, 3, name, sizeof name);
  CHECK_STR("conv2d1", name);
  cfg_layer_display_name(&config, 7, name, sizeof name);
  CHECK_STR("relu1", name);
  CHECK_INT(3, cfg_layer_index(&config, "conv2d1"));
  CHECK_INT(6, cfg_layer_index(&config, "fc1"));
  CHECK_INT(-1, cfg_layer_index(&config, "linear0")); /* fc1 has a name of its own */
  CHECK_INT(-EINVAL, parse("{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 64}, {\"type\": \"conv2d\", \"out\": 4},"
                           "{\"type\": \"maxpool\", \"size\": 9}, {\"type\": \"linear\", \"out\": 10}]}}"));
  CHECK(has_error("model.layers[1]", "needs an image-shaped input"));
  CHECK_INT(-EINVAL, parse("{\"model\": {\"layers\": [{\"type\": \"maxpool\", \"size\": 8}, {\"type\": \"maxpool\", \"size\": 8},"
                           "{\"type\": \"linear\", \"out\": 10}]}}"));
  CHECK(has_error("model.layers[1].size", "larger than its 3×3 input"));
  CHECK_INT(-EINVAL, parse("{\"model\": {\"layers\": [{\"type\": \"dropout\", \"p\": 1}, {\"type\": \"linear\", \"out\": 10}]}}"));
  CHECK(has_error("model.layers[0].p", "at most 0.95"));
}

#define KD "\"teacher\": {\"experiment\": 3}, "

static void test_distillation(void) {
  const char *text = "{" KD "\"temperature\": {\"schedule\": \"linear\", \"start\": 6, \"end\": 3},"
                     "\"features\": [{\"student\": \"fc1\", \"teacher\": \"fc2\", \"normalize\": true, \"gate\": \"mean_one\"}],"
                     "\"adversarial\": {\"loss\": \"bce\"},"
                     "\"stages\": [{\"name\": \"task\", \"epochs\": 5}, {\"name\": \"kd\", \"epochs\": 10, \"task_weight\": 0.6,"
                     "\"distill_weight\": 0.3, \"feature_weight\": 0.1, \"adversarial_weight\": 0.05}]," MLP "}";
  CHECK_INT(0, parse(text));
  CHECK_INT(CFG_TEACHER_EXPERIMENT, config.teacher.kind);
  CHECK_INT(3, config.teacher.experiment);
  CHECK_INT(1, config.n_features);
  CHECK_INT(0, config.features[0].student_layer);
  CHECK_INT(CFG_GATE_MEAN_ONE, config.features[0].gate);
  CHECK_INT(1, config.adversarial.enabled);
  CHECK_INT(CFG_ADVERSARIAL_BCE, config.adversarial.loss);
  CHECK_NEAR(0.3, config.stages[1].distill_weight, 1e-12);
  CHECK(cfg_uses_distillation(&config) && cfg_uses_features(&config) && cfg_uses_adversarial(&config));
  /* The temperature moves from 6 to 3 over the 10 epochs that distil (5 to 15); the 5
   * task-only epochs before them stay at 6. */
  CHECK_NEAR(6.0, cfg_temperature_at(&config, 0), 1e-12);
  CHECK_NEAR(6.0, cfg_temperature_at(&config, 4.9), 1e-12);
  CHECK_NEAR(6.0, cfg_temperature_at(&config, 5), 1e-12);
  CHECK_NEAR(4.5, cfg_temperature_at(&config, 10), 1e-12);
  CHECK_NEAR(3.0, cfg_temperature_at(&config, 15), 1e-12);

  /* The daemon fills in the teacher's checkpoint; the stored form parses back the same. */
  json_t *json = cfg_to_json(&config);
  json_object_set_new(json_object_get(json, "teacher"), "checkpoint", json_string("/data/3/final.ckpt"));
  cfg_experiment_t first = config;
  CHECK_INT(0, cfg_from_json(json, &config, &errors));
  CHECK_STR("/data/3/final.ckpt", config.teacher.checkpoint);
  CHECK_INT(CFG_TEACHER_EXPERIMENT, config.teacher.kind);
  util_strlcpy(first.teacher.checkpoint, config.teacher.checkpoint, sizeof first.teacher.checkpoint);
  CHECK(memcmp(&first, &config, sizeof config) == 0);
  json_decref(json);

  CHECK_INT(-EINVAL, parse("{\"temperature\": {\"start\": 4}, \"features\": [{\"student\": \"nope\"}],"
                           "\"adversarial\": {\"feature\": 2}, \"stages\": [{\"epochs\": 1, \"feature_weight\": 0.5}]," MLP "}"));
  CHECK(has_error("temperature", "needs a teacher"));
  CHECK(has_error("features", "needs a teacher"));
  CHECK(has_error("features[0].student", "no layer named \"nope\""));
  CHECK(has_error("features[0].teacher", "is required"));
  CHECK(has_error("adversarial.feature", "there is 1 feature pair"));
  CHECK(has_error("adversarial", "needs a teacher"));
  CHECK_INT(-EINVAL, parse("{" KD "\"features\": [{\"student\": \"out\", \"teacher\": \"x\"}],"
                           "\"stages\": [{\"epochs\": 1, \"adversarial_weight\": 0.5}], \"temperature\": {\"schedule\": \"step\", \"start\": 4},"
                           "\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 10, \"name\": \"out\"}]}}"));
  CHECK(has_error("features[0].student", "is the output layer"));
  CHECK(has_error("stages[0].adversarial_weight", "needs an \"adversarial\" section"));
  CHECK(has_error("temperature.end", "is required for a step schedule"));
  CHECK_INT(-EINVAL, parse("{\"teacher\": {}," MLP "}"));
  CHECK(has_error("teacher", "give {\"experiment\": N}"));
}

static void test_teacher_check(void) {
  cfg_experiment_t teacher, student;
  CHECK_INT(0, parse("{" CNN "}"));
  teacher = config;
  CHECK_INT(0, parse("{" KD "\"features\": [{\"student\": \"fc1\", \"teacher\": \"fc1\"}, {\"student\": \"fc1\", "
                     "\"teacher\": \"conv1\"}, {\"student\": \"fc1\", \"teacher\": \"fc9\"}]," MLP "}"));
  student = config;
  memset(&errors, 0, sizeof errors);
  CHECK_INT(-EINVAL, cfg_check_teacher(&student, &teacher, &errors));
  CHECK_INT(2, errors.count);
  CHECK(has_error("features[1].teacher", "a feature map but the student's \"fc1\" is flat"));
  CHECK(has_error("features[2].teacher", "the teacher has no layer named \"fc9\""));
  memset(&errors, 0, sizeof errors);
  CHECK_INT(-EINVAL, cfg_check_teacher(&teacher, &student, &errors)); /* a student cannot teach */
  CHECK(has_error("teacher", "without a teacher of its own"));

  /* Maps of different sizes meet (the larger is pooled): the student's 28×28 and 14×14 maps
   * with the teacher's 28×28 conv1 and its 10×10 second convolution's. A flat layer with a
   * map still does not. */
  CHECK_INT(0, parse("{" KD "\"features\": [{\"student\": \"s1\", \"teacher\": \"conv1\"}, {\"student\": \"s2\", "
                     "\"teacher\": \"conv2d1\"}, {\"student\": \"s2\", \"teacher\": \"conv1\"}, {\"student\": \"s1\", "
                     "\"teacher\": \"fc1\"}], \"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 4, \"name\": \"s1\"}, "
                     "{\"type\": \"maxpool\", \"name\": \"s2\"}, {\"type\": \"linear\", \"out\": 10}]}}"));
  student = config;
  CHECK_INT(28, student.layers[0].shape.height);
  CHECK_INT(14, student.layers[1].shape.height);
  CHECK_INT(0, parse("{" CNN "}"));
  teacher = config;
  CHECK_INT(10, teacher.layers[cfg_layer_index(&teacher, "conv2d1")].shape.height);
  memset(&errors, 0, sizeof errors);
  CHECK_INT(-EINVAL, cfg_check_teacher(&student, &teacher, &errors));
  CHECK_INT(1, errors.count);
  CHECK(has_error("features[3].teacher", "\"fc1\" is flat but the student's \"s1\" is a feature map"));

  /* The same data: another seed and another train_limit are fine, another split is not. */
  CHECK_INT(0, parse("{\"seed\": 5, \"dataset\": {\"name\": \"synthetic\", \"split_seed\": 3}," CNN "}"));
  teacher = config;
  CHECK_INT(0, parse("{" KD "\"seed\": 8, \"dataset\": {\"name\": \"synthetic\", \"split_seed\": 3, \"train_limit\": 100},"
                     MLP "}"));
  student = config;
  memset(&errors, 0, sizeof errors);
  CHECK_INT(0, cfg_check_teacher(&student, &teacher, &errors));
  CHECK_INT(0, errors.count);
  student.dataset.split_seed = 4;
  CHECK_INT(-EINVAL, cfg_check_teacher(&student, &teacher, &errors));
  CHECK_INT(1, errors.count);
  CHECK(has_error("dataset", "the teacher was trained on other data (its split_seed 3 (here 4))"));
  student.dataset.split_seed = 3;
  student.dataset.train_size = 8192; /* the synthetic set's sizes may differ (prefixes) */
  student.dataset.test_size = 100;
  memset(&errors, 0, sizeof errors);
  CHECK_INT(0, cfg_check_teacher(&student, &teacher, &errors));
  student.dataset.val_size = 100;
  student.dataset.split_seed = 4;
  CHECK_INT(-EINVAL, cfg_check_teacher(&student, &teacher, &errors));
  CHECK_INT(1, errors.count);
  CHECK(has_error("dataset", "split_seed 3 (here 4), val_size 256 (here 100)"));
  student.dataset = teacher.dataset;
  student.dataset.kind = CFG_DATASET_FASHION_MNIST;
  memset(&errors, 0, sizeof errors);
  CHECK_INT(-EINVAL, cfg_check_teacher(&student, &teacher, &errors));
  CHECK(has_error("dataset", "name \"synthetic\" (here \"fashion-mnist\")"));
}

static void test_schedules_and_growth(void) {
  CHECK_INT(0, parse("{\"optimizer\": {\"lr\": 0.1, \"schedule\": {\"type\": \"cosine\", \"warmup_epochs\": 1, \"min_lr\": 0.1}},"
                     "\"epochs\": 10, \"grow\": [{\"epoch\": 3, \"after\": \"fc1\"}]," MLP "}"));
  CHECK_NEAR(0.0, cfg_lr_factor_at(&config, 0), 1e-12);   /* warm-up from zero */
  CHECK_NEAR(0.5 * (0.1 + 0.9 * 0.5 * (1 + cos(M_PI * 0.05))), cfg_lr_factor_at(&config, 0.5), 1e-9);
  CHECK_NEAR(0.1, cfg_lr_factor_at(&config, 10), 1e-12);  /* the floor */
  CHECK_INT(1, config.n_grow);
  CHECK_INT(0, config.grow[0].after_layer);
  CHECK_INT(32, config.grow[0].hidden);                    /* the width of fc1 by default */
  CHECK_STR("grow1", config.grow[0].name);
  CHECK_INT(0, parse("{\"optimizer\": {\"schedule\": {\"type\": \"step\", \"step_epochs\": 3, \"gamma\": 0.5}}," MLP "}"));
  CHECK_NEAR(0.25, cfg_lr_factor_at(&config, 6.5), 1e-12);
  CHECK_INT(-EINVAL, parse("{\"optimizer\": {\"schedule\": {\"type\": \"cosine\", \"gamma\": 0.5}}, \"epochs\": 4,"
                           "\"grow\": [{\"epoch\": 1, \"after\": \"linear1\"}, {\"epoch\": 9, \"after\": \"out\"}],"
                           "\"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 2}, {\"type\": \"linear\", \"out\": 10, \"name\": \"out\"}]}}"));
  CHECK(has_error("optimizer.schedule.gamma", "only for the step schedule"));
  CHECK(has_error("grow[0].epoch", "between 2 and 4"));
  CHECK(has_error("grow[0].after", "no layer named \"linear1\""));
  CHECK(has_error("grow[1].after", "cannot follow the output layer"));
  CHECK_INT(0, parse("{\"temperature\": {\"schedule\": \"step\", \"start\": 6, \"end\": 3, \"every_epochs\": 5}," KD
                     "\"epochs\": 15," MLP "}"));
  CHECK_NEAR(6.0, cfg_temperature_at(&config, 4.9), 1e-12);
  CHECK_NEAR(4.5, cfg_temperature_at(&config, 5), 1e-12);
  CHECK_NEAR(3.0, cfg_temperature_at(&config, 14.5), 1e-12);
}

static int parse_example(const char *name) {
  const char *source = getenv("MAPSAGE_SOURCE_DIR");
  char path[600], *text = NULL;
  size_t length;
  snprintf(path, sizeof path, "%s/examples/%s", source ? source : "..", name);
  if (util_read_file(path, 1 << 20, &text, &length) != 0) return -ENOENT;
  int result = cfg_parse(text, length, &config, &errors);
  free(text);
  return result;
}

/* The temperature schedule spans the stages that distil: start at the first distilling
 * step, end at the end of the last distilling stage, flat in task-only stages around them. */
static void test_temperature_over_distilling_stages(void) {
  /* kd-progressive: 5 task-only epochs, then 10 of KD, linear 6 → 3. */
  CHECK_INT(0, parse_example("kd-progressive.json"));
  double first, end;
  cfg_distill_span(&config, &first, &end);
  CHECK_NEAR(5.0, first, 0);
  CHECK_NEAR(15.0, end, 0);
  CHECK_NEAR(6.0, cfg_temperature_at(&config, 2.5), 1e-12);
  CHECK_NEAR(6.0, cfg_temperature_at(&config, 5.0), 1e-12);   /* the first distilling step */
  CHECK_NEAR(5.7, cfg_temperature_at(&config, 6.0), 1e-12);
  CHECK_NEAR(3.0, cfg_temperature_at(&config, 15.0), 1e-12);  /* the end */
  /* kd-three-stage: 10 task-only epochs, then 15 + 10 distilling, cosine 6 → 3. */
  CHECK_INT(0, parse_example("kd-three-stage.json"));
  CHECK_NEAR(6.0, cfg_temperature_at(&config, 9.99), 1e-12);
  CHECK_NEAR(6.0, cfg_temperature_at(&config, 10.0), 1e-12);
  CHECK_NEAR(4.5, cfg_temperature_at(&config, 22.5), 1e-12);  /* half-way: the cosine's middle */
  CHECK_NEAR(3.0, cfg_temperature_at(&config, 35.0), 1e-12);
  /* A task-only stage after the last distilling one stays at end; one between two
   * distilling stages is part of the span. Step: 2 jumps of 1.5 every 4 epochs of the 9. */
  CHECK_INT(0, parse("{" KD "\"temperature\": {\"schedule\": \"step\", \"start\": 6, \"end\": 3, \"every_epochs\": 4},"
                     "\"stages\": [{\"epochs\": 3}, {\"epochs\": 4, \"distill_weight\": 0.5}, {\"epochs\": 2},"
                     "{\"epochs\": 3, \"distill_weight\": 0.5}, {\"epochs\": 5}]," MLP "}"));
  cfg_distill_span(&config, &first, &end);
  CHECK_NEAR(3.0, first, 0);
  CHECK_NEAR(12.0, end, 0);
  CHECK_NEAR(6.0, cfg_temperature_at(&config, 0.0), 1e-12);
  CHECK_NEAR(6.0, cfg_temperature_at(&config, 6.9), 1e-12);
  CHECK_NEAR(4.5, cfg_temperature_at(&config, 7.0), 1e-12);
  CHECK_NEAR(3.0, cfg_temperature_at(&config, 11.0), 1e-12);
  CHECK_NEAR(3.0, cfg_temperature_at(&config, 16.5), 1e-12);
}

/* Every ready config in examples/ is valid, and each distillation example fits the CNN
 * teacher: what users copy must run. */
static void test_examples(void) {
  const char *source = getenv("MAPSAGE_SOURCE_DIR");
  if (source == NULL) source = "..";
  char pattern[512];
  snprintf(pattern, sizeof pattern, "%s/examples/*.json", source);
  glob_t found;
  CHECK_INT(0, glob(pattern, 0, NULL, &found));
  CHECK(found.gl_pathc >= 9);
  static cfg_experiment_t teacher;
  char teacher_path[600];
  snprintf(teacher_path, sizeof teacher_path, "%s/examples/cnn-teacher.json", source);
  char *text = NULL;
  size_t length;
  CHECK_INT(0, util_read_file(teacher_path, 1 << 20, &text, &length));
  if (text == NULL) { /* no examples/ where MAPSAGE_SOURCE_DIR says: said above, nothing to read */
    globfree(&found);
    return;
  }
  CHECK_INT(0, cfg_parse(text, length, &teacher, &errors));
  free(text);
  for (size_t i = 0; i < found.gl_pathc; i++) {
    text = NULL;
    CHECK_INT(0, util_read_file(found.gl_pathv[i], 1 << 20, &text, &length));
    if (text == NULL) continue;
    int result = cfg_parse(text, length, &config, &errors);
    free(text);
    if (result != 0) {
      check_failures++;
      fprintf(stderr, "%s: %s: %s\n", found.gl_pathv[i], errors.items[0].path, errors.items[0].message);
      continue;
    }
    if (config.teacher.kind != CFG_TEACHER_NONE) {
      memset(&errors, 0, sizeof errors);
      CHECK_INT(0, cfg_check_teacher(&config, &teacher, &errors));
    }
  }
  globfree(&found);
}

/* The memory estimate: a hand-computed figure, and it grows with the batch and the width. */
static size_t estimate(const char *text) {
  cfg_memory_t memory;
  CHECK_INT(0, parse(text));
  CHECK_INT(0, cfg_memory_estimate(&config, NULL, 0, &memory));
  return memory.total;
}

static void test_memory_estimate(void) {
  /* Synthetic 1000 + 100, val 100, one linear layer 784→10, SGD, batch 10. */
  CHECK_INT(0, parse("{\"dataset\": {\"name\": \"synthetic\", \"train_size\": 1000, \"test_size\": 100, "
                     "\"val_size\": 100}, \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 10}]}, "
                     "\"batch_size\": 10, \"epochs\": 1}"));
  cfg_memory_t m;
  CHECK_INT(0, cfg_memory_estimate(&config, NULL, 0, &m));
  const size_t params = 784 * 10 + 10;
  CHECK_INT((900 + 100 + 100) * (784 * 4 + 4) + 900 * 4, m.dataset);
  CHECK_INT((1000 + 100) * (784 + 4) + 1000 * 4, m.loading); /* 8-bit pixels, int32 labels */
  CHECK_INT(3 * params * 4, m.student); /* params, grads, velocity */
  /* The layer's packed operands: its forward's Wᵀ, 784 rows of 10 columns padded to 32 (more
   * than its gradients' 10 + 10 rows of 784 → 800), from a 64-byte line. */
  CHECK_INT(32 * 784, (long long)cfg_linear_panel_floats(784, 10, 10));
  CHECK_INT(2 * 10 * 10 * 4 + (15 + 32 * 784) * 4 + 10 * (784 * 4 + 3 * 4 + 10 * 4), m.activations);
  CHECK_INT(2 * params * 4 + (64 << 10), m.checkpoint);
  CHECK_INT(0, m.teacher + m.teacher_cache + m.distill);
  CHECK_INT(CFG_MEMORY_OVERHEAD + m.dataset + (m.loading > m.student + m.activations + m.checkpoint
                                                   ? m.loading : m.student + m.activations + m.checkpoint),
            m.total);
  CHECK(m.teacher_counted);

#define WIDE(width, batch) "{\"dataset\": {\"name\": \"synthetic\", \"train_size\": 256, \"val_size\": 16}, \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": " #width "}, " \
  "{\"type\": \"relu\"}, {\"type\": \"linear\", \"out\": 10}]}, \"batch_size\": " #batch "}"
  CHECK(estimate(WIDE(512, 64)) < estimate(WIDE(512, 128)));
  CHECK(estimate(WIDE(512, 128)) < estimate(WIDE(512, 4096)));
  CHECK(estimate(WIDE(512, 128)) < estimate(WIDE(1024, 128)));
  CHECK(estimate(WIDE(1024, 128)) < estimate(WIDE(8192, 128)));

  /* The description names the largest share's path and the batch. */
  char text[512];
  CHECK_INT(0, parse(WIDE(16384, 4096)));
  CHECK_INT(0, cfg_memory_estimate(&config, NULL, 0, &m));
  CHECK_STR("batch_size", cfg_memory_describe(&m, &config, text, sizeof text));
  CHECK(strstr(text, "GiB (") && strstr(text, "activations") && strstr(text, "for batch 4096"));
  /* A checkpoint teacher's config is not known: the estimate says what it leaves out. */
  CHECK_INT(0, parse("{" MLP ", \"teacher\": {\"checkpoint\": \"t.ckpt\"}, \"temperature\": {\"start\": 4}, "
                     "\"stages\": [{\"epochs\": 1, \"task_weight\": 0.5, \"distill_weight\": 0.5}]}"));
  CHECK_INT(0, cfg_memory_estimate(&config, NULL, 0, &m));
  CHECK(!m.teacher_counted);
  cfg_memory_describe(&m, &config, text, sizeof text);
  CHECK(strstr(text, "not counted") != NULL);
}

/* resources: what a Slurm job asks for; sizes and times in the forms sbatch takes, stored
 * in one canonical form that parses back to the same values. */
static void test_resources(void) {
  CHECK_INT(0, parse("{" MLP "}"));
  CHECK_INT(0, config.resources.cpus);
  json_t *none = cfg_to_json(&config);
  CHECK(json_object_get(none, "resources") == NULL); /* none asked: none stored */
  json_decref(none);
  CHECK_INT(0, parse("{\"resources\": {\"cpus\": 4, \"memory\": \"2G\", \"time\": \"1-02:03:04\", "
                     "\"partition\": \"gpu_a-1.x\"}," MLP "}"));
  CHECK_INT(4, config.resources.cpus);
  CHECK_INT(2048, (long long)config.resources.memory_mb);
  CHECK_INT(((24 + 2) * 60 + 3) * 60 + 4, (long long)config.resources.time_seconds);
  CHECK_STR("gpu_a-1.x", config.resources.partition);
  json_t *stored = cfg_to_json(&config);
  CHECK_STR("1-02:03:04", json_string_value(json_object_get(json_object_get(stored, "resources"), "time")));
  cfg_experiment_t first = config;
  CHECK_INT(0, cfg_from_json(stored, &config, &errors));
  CHECK(memcmp(&first, &config, sizeof config) == 0);
  json_decref(stored);
  CHECK_INT(0, parse("{\"resources\": {\"memory\": 512, \"time\": 90}," MLP "}"));
  CHECK_INT(512, (long long)config.resources.memory_mb);
  CHECK_INT(90 * 60, (long long)config.resources.time_seconds);
  CHECK_INT(0, parse("{\"resources\": {\"time\": \"00:30:00\", \"memory\": \"1t\"}," MLP "}"));
  CHECK_INT(1800, (long long)config.resources.time_seconds);
  CHECK_INT(1024 * 1024, (long long)config.resources.memory_mb);

  CHECK_INT(-EINVAL, parse("{\"resources\": {\"cpus\": 0, \"memory\": \"lots\", \"time\": \"00:00:30\", "
                           "\"partition\": \"a b;rm\", \"gpus\": 1}," MLP "}"));
  CHECK(has_error("resources.cpus", "between 1 and 4096"));
  CHECK(has_error("resources.memory", "a size such as"));
  CHECK(has_error("resources.time", "at least a minute"));
  CHECK(has_error("resources.partition", "must be a partition name"));
  CHECK(has_error("resources.gpus", "unknown field"));
  CHECK_INT(-EINVAL, parse("{\"resources\": {\"time\": \"1:99:00\", \"memory\": \"5X\"}," MLP "}"));
  CHECK(has_error("resources.time", "hours:minutes:seconds"));
  CHECK(has_error("resources.memory", "integer of MiB"));
  /* Minutes as an integer too large to be seconds (the fuzzer's find: it overflowed). */
  CHECK_INT(-EINVAL, parse("{\"resources\": {\"time\": 900719925474099390}," MLP "}"));
  CHECK(has_error("resources.time", "at most 366 days"));
  CHECK_INT(-EINVAL, parse("{\"resources\": {\"time\": -5}," MLP "}"));
  CHECK(has_error("resources.time", "at least a minute"));
  CHECK_INT(-EINVAL, parse("{\"resources\": [1]," MLP "}"));
  CHECK(has_error("resources", "must be an object"));
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
  test_cnn_shapes();
  test_distillation();
  test_teacher_check();
  test_schedules_and_growth();
  test_temperature_over_distilling_stages();
  test_examples();
  test_memory_estimate();
  test_resources();
  return check_summary();
}
