/* config_distill.c — what the config distils from (see config.h): the teacher (a finished
 * experiment, a checkpoint or a safetensors file with its model), the temperature and its
 * schedule, the feature adapters, the adversarial discriminator, and the rules between
 * them and the stages' weights. Part of the validator (config_json.c). */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"
#include "util.h"

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

void cfg_parse_teacher(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
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

const char *const cfg_temperature_schedules[] = {"constant", "linear", "cosine", "step", NULL};

void cfg_parse_temperature(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"schedule", "start", "end", "every_epochs", NULL};
  config->temperature.kind = CFG_TEMPERATURE_CONSTANT;
  config->temperature.start = 4.0;
  config->temperature.every_epochs = 5;
  const json_t *temperature = get_object(root, "", "temperature", errors);
  if (temperature) {
    check_known_keys(temperature, "temperature", known, errors);
    config->temperature.kind =
        get_choice(temperature, "temperature", "schedule", cfg_temperature_schedules, CFG_TEMPERATURE_CONSTANT, errors);
    get_number(temperature, "temperature", "start", 0.0, 1, 100.0, &config->temperature.start, errors);
  }
  config->temperature.end = config->temperature.start;
  if (!temperature) return;
  if (config->temperature.kind == CFG_TEMPERATURE_CONSTANT) {
    if (json_object_get(temperature, "end"))
      add_error(errors, "temperature.end", "a constant temperature has only a start");
  } else {
    if (json_object_get(temperature, "end") == NULL)
      add_error(errors, "temperature.end", "is required for a %s schedule", cfg_temperature_schedules[config->temperature.kind]);
    get_number(temperature, "temperature", "end", 0.0, 1, 100.0, &config->temperature.end, errors);
  }
  if (config->temperature.kind == CFG_TEMPERATURE_STEP)
    get_int(temperature, "temperature", "every_epochs", 1, 10000, &config->temperature.every_epochs, errors);
  else if (json_object_get(temperature, "every_epochs"))
    add_error(errors, "temperature.every_epochs", "only for the step schedule");
}

const char *const cfg_gates[] = {"none", "softmax", "mean_one", NULL};

/* The output shape a feature adapter can start from: flat features, or a feature map. */
void cfg_parse_features(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
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
    feature->gate = get_choice(item, prefix, "gate", cfg_gates, CFG_GATE_NONE, errors);
  }
}

const char *const cfg_adversarial_losses[] = {"lsgan", "bce", NULL};

void cfg_parse_adversarial(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
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
  config->adversarial.loss = get_choice(adversarial, "adversarial", "loss", cfg_adversarial_losses, CFG_ADVERSARIAL_LSGAN, errors);
  get_number(adversarial, "adversarial", "lr", 0.0, 1, 1.0, &config->adversarial.lr, errors);
  get_int(adversarial, "adversarial", "hidden", 1, 4096, &config->adversarial.hidden, errors);
}

/* Rules between sections: a term with a weight needs what computes it. */
void cfg_check_terms(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
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
