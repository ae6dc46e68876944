/* config_json.c — the experiment config from and to JSON (see config.h): cfg_from_json
 * walks the submitted JSON once, section by section, recording every error it finds (the
 * field readers are config.c's); each section's reader is in the file of its concern:
 * config_dataset.c, config_model.c (layers, shapes, growth), config_training.c
 * (optimizer, stages, resources), config_distill.c (teacher, temperature, features,
 * adversarial). cfg_to_json writes a config back as the JSON it would be read from. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config_internal.h"
#include "util.h"

int cfg_from_json(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"name", "seed", "priority", "dataset", "model", "optimizer",
                                      "batch_size", "epochs", "stages", "teacher", "temperature",
                                      "features", "adversarial", "grow", "checkpoint_every",
                                      "checkpoint_keep", "grad_norm_every", "max_attempts", "resources", NULL};
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
  cfg_parse_dataset(root, config, errors);
  cfg_parse_model(root, config, errors);
  cfg_parse_optimizer(root, config, errors); /* before the stages: they inherit its lr */
  cfg_parse_stages(root, config, errors);
  cfg_parse_teacher(root, config, errors);
  cfg_parse_temperature(root, config, errors);
  cfg_parse_features(root, config, errors);
  cfg_parse_adversarial(root, config, errors); /* after the features it refers to */
  cfg_parse_grow(root, config, errors);        /* after the stages: it knows the epochs */
  cfg_check_terms(root, config, errors);
  config->checkpoint_every = 1;
  get_int(root, "", "checkpoint_every", 0, 10000, &config->checkpoint_every, errors);
  get_int(root, "", "checkpoint_keep", 0, 10000, &config->checkpoint_keep, errors);
  config->grad_norm_every = 50;
  get_int(root, "", "grad_norm_every", 1, 1000000, &config->grad_norm_every, errors);
  config->max_attempts = 2;
  get_int(root, "", "max_attempts", 1, 10, &config->max_attempts, errors);
  cfg_parse_resources(root, config, errors);
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

/* cfg_to_json's sections, each as the JSON it is read from. */
static json_t *dataset_to_json(const cfg_experiment_t *config) {
  json_t *dataset = json_pack("{s:s, s:I, s:i}", "name", cfg_dataset_name(config), "split_seed",
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
  return dataset;
}

static json_t *optimizer_to_json(const cfg_experiment_t *config) {
  const typeof(config->optimizer.schedule) *lr = &config->optimizer.schedule;
  json_t *schedule = json_pack("{s:s, s:f}", "type", cfg_lr_schedules[lr->kind], "warmup_epochs", lr->warmup_epochs);
  if (lr->kind == CFG_LR_STEP)
    json_object_update_new(schedule, json_pack("{s:i, s:f}", "step_epochs", lr->step_epochs, "gamma", lr->gamma));
  if (lr->kind == CFG_LR_COSINE) json_object_set_new(schedule, "min_lr", json_real(lr->min_lr));
  json_t *optimizer = json_pack("{s:s, s:f, s:f, s:o}", "type", cfg_optimizer_kinds[config->optimizer.kind], "lr",
                                config->optimizer.lr, "weight_decay", config->optimizer.weight_decay, "schedule",
                                schedule);
  if (config->optimizer.kind == CFG_OPTIMIZER_ADAM) {
    json_object_set_new(optimizer, "beta1", json_real(config->optimizer.beta1));
    json_object_set_new(optimizer, "beta2", json_real(config->optimizer.beta2));
    json_object_set_new(optimizer, "eps", json_real(config->optimizer.eps));
  } else {
    json_object_set_new(optimizer, "momentum", json_real(config->optimizer.momentum));
  }
  return optimizer;
}

/* NULL when the config asks for no resources. */
static json_t *resources_to_json(const cfg_experiment_t *config) {
  const typeof(config->resources) *resources = &config->resources;
  if (!resources->cpus && !resources->memory_mb && !resources->time_seconds && !resources->partition[0]) return NULL;
  json_t *asked = json_object();
  if (resources->cpus) json_object_set_new(asked, "cpus", json_integer(resources->cpus));
  if (resources->memory_mb) json_object_set_new(asked, "memory", json_integer(resources->memory_mb));
  if (resources->time_seconds) {
    char time[48];
    snprintf(time, sizeof time, "%lld-%02lld:%02lld:%02lld", (long long)(resources->time_seconds / 86400),
             (long long)(resources->time_seconds / 3600 % 24), (long long)(resources->time_seconds / 60 % 60),
             (long long)(resources->time_seconds % 60));
    json_object_set_new(asked, "time", json_string(time));
  }
  if (resources->partition[0]) json_object_set_new(asked, "partition", json_string(resources->partition));
  return asked;
}

/* The teacher and the temperature, which come with it. */
static void teacher_to_json(const cfg_experiment_t *config, json_t *root) {
  json_t *teacher = json_object();
  if (config->teacher.kind == CFG_TEACHER_EXPERIMENT)
    json_object_set_new(teacher, "experiment", json_integer(config->teacher.experiment));
  if (config->teacher.kind == CFG_TEACHER_SAFETENSORS) {
    json_t *teacher_layers = json_array();
    for (int i = 0; i < config->teacher.n_layers; i++)
      json_array_append_new(teacher_layers, cfg_layer_to_json(&config->teacher.layers[i]));
    json_object_set_new(teacher, "safetensors", json_string(config->teacher.checkpoint));
    json_object_set_new(teacher, "model", json_pack("{s:o}", "layers", teacher_layers));
  } else if (config->teacher.checkpoint[0]) {
    json_object_set_new(teacher, "checkpoint", json_string(config->teacher.checkpoint));
  }
  json_object_set_new(root, "teacher", teacher);
  json_t *temperature = json_pack("{s:s, s:f}", "schedule", cfg_temperature_schedules[config->temperature.kind], "start",
                                  config->temperature.start);
  if (config->temperature.kind != CFG_TEMPERATURE_CONSTANT)
    json_object_set_new(temperature, "end", json_real(config->temperature.end));
  if (config->temperature.kind == CFG_TEMPERATURE_STEP)
    json_object_set_new(temperature, "every_epochs", json_integer(config->temperature.every_epochs));
  json_object_set_new(root, "temperature", temperature);
}

/* The feature pairs, the adversarial term and the grow blocks, where the config has them. */
static void distill_extras_to_json(const cfg_experiment_t *config, json_t *root) {
  if (config->n_features > 0) {
    json_t *features = json_array();
    for (int i = 0; i < config->n_features; i++) {
      const cfg_feature_t *feature = &config->features[i];
      json_array_append_new(features, json_pack("{s:s, s:s, s:b, s:s}", "student", feature->student, "teacher",
                                                feature->teacher, "normalize", feature->normalize, "gate",
                                                cfg_gates[feature->gate]));
    }
    json_object_set_new(root, "features", features);
  }
  if (config->adversarial.enabled)
    json_object_set_new(root, "adversarial",
                        json_pack("{s:i, s:s, s:f, s:i}", "feature", config->adversarial.feature, "loss",
                                  cfg_adversarial_losses[config->adversarial.loss], "lr", config->adversarial.lr, "hidden",
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
}

json_t *cfg_to_json(const cfg_experiment_t *config) {
  json_t *layers = json_array();
  for (int i = 0; i < config->n_layers; i++) json_array_append_new(layers, cfg_layer_to_json(&config->layers[i]));
  json_t *stages = json_array();
  for (int i = 0; i < config->n_stages; i++) {
    const cfg_stage_t *stage = &config->stages[i];
    json_array_append_new(stages, json_pack("{s:s, s:i, s:f, s:f, s:f, s:f, s:f}", "name", stage->name, "epochs",
                                            stage->epochs, "task_weight", stage->task_weight, "distill_weight",
                                            stage->distill_weight, "feature_weight", stage->feature_weight,
                                            "adversarial_weight", stage->adversarial_weight, "lr", stage->lr));
  }
  json_t *root = json_pack("{s:s, s:I, s:i, s:o, s:{s:o}, s:o, s:i, s:o, s:i, s:i}", "name", config->name, "seed",
                           (json_int_t)config->seed, "priority", config->priority, "dataset", dataset_to_json(config),
                           "model", "layers", layers, "optimizer", optimizer_to_json(config), "batch_size",
                           config->batch_size, "stages", stages, "checkpoint_every", config->checkpoint_every,
                           "grad_norm_every", config->grad_norm_every);
  json_object_set_new(root, "checkpoint_keep", json_integer(config->checkpoint_keep));
  json_object_set_new(root, "max_attempts", json_integer(config->max_attempts));
  json_t *resources = resources_to_json(config);
  if (resources) json_object_set_new(root, "resources", resources);
  if (config->teacher.kind != CFG_TEACHER_NONE) teacher_to_json(config, root);
  distill_extras_to_json(config, root);
  return root;
}
