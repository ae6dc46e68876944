/* config_training.c — how the config trains (see config.h): the optimizer and its
 * learning-rate schedule, the stages with their epochs and weights, and the resources a
 * cluster job asks for. Part of the validator (config_json.c). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config_internal.h"
#include "util.h"

const char *const cfg_optimizer_kinds[] = {"sgd", "adam", NULL};

const char *const cfg_lr_schedules[] = {"constant", "step", "cosine", NULL};

static void parse_lr_schedule(const json_t *optimizer, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"type", "warmup_epochs", "step_epochs", "gamma", "min_lr", NULL};
  config->optimizer.schedule.kind = CFG_LR_CONSTANT;
  config->optimizer.schedule.step_epochs = 10;
  config->optimizer.schedule.gamma = 0.1;
  const json_t *schedule = optimizer ? get_object(optimizer, "optimizer", "schedule", errors) : NULL;
  if (!schedule) return;
  check_known_keys(schedule, "optimizer.schedule", known, errors);
  config->optimizer.schedule.kind =
      get_choice(schedule, "optimizer.schedule", "type", cfg_lr_schedules, CFG_LR_CONSTANT, errors);
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

void cfg_parse_optimizer(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known_sgd[] = {"type", "lr", "momentum", "weight_decay", "schedule", NULL};
  static const char *const known_adam[] = {"type", "lr", "beta1", "beta2", "eps", "weight_decay", "schedule", NULL};
  const json_t *optimizer = get_object(root, "", "optimizer", errors);
  config->optimizer.kind = CFG_OPTIMIZER_SGD;
  if (optimizer)
    config->optimizer.kind = get_choice(optimizer, "optimizer", "type", cfg_optimizer_kinds, CFG_OPTIMIZER_SGD, errors);
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

void cfg_parse_stages(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
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

// ---------------------------------------------------------------------------------------
// resources: what a cluster job asks for

/* Minutes → seconds; -1 when negative or beyond any limit (a million minutes is 694 days),
 * before the product could overflow. */
static int64_t minutes_to_seconds(long long minutes) {
  return minutes >= 0 && minutes <= 1000000 ? minutes * 60 : -1;
}

/* "[days-]hours:minutes:seconds" or "minutes" → seconds; -1 when it is neither. */
static int64_t parse_duration(const char *text) {
  long long days = 0, hours = 0, minutes = 0, seconds = 0;
  int used = 0;
  if (sscanf(text, "%lld-%lld:%lld:%lld%n", &days, &hours, &minutes, &seconds, &used) == 4 && text[used] == '\0') {
    if (hours > 23) return -1;
  } else if (days = 0, used = 0,
             sscanf(text, "%lld:%lld:%lld%n", &hours, &minutes, &seconds, &used) == 3 && text[used] == '\0') {
  } else if (hours = minutes = seconds = 0, used = 0,
             sscanf(text, "%lld%n", &minutes, &used) == 1 && text[used] == '\0') {
    return minutes_to_seconds(minutes);
  } else {
    return -1;
  }
  if (days < 0 || days > 1000 || hours < 0 || hours > 24000 || minutes < 0 || minutes > 59 || seconds < 0 ||
      seconds > 59)
    return -1;
  return ((days * 24 + hours) * 60 + minutes) * 60 + seconds;
}

/* "512M", "2G", "1T" or an integer of MiB → MiB; -1 when it is none of these. */
static int64_t parse_memory(const json_t *value) {
  if (json_is_integer(value)) return json_integer_value(value);
  const char *text = json_string_value(value);
  long long amount = 0;
  char unit = 0;
  int used = 0;
  if (text == NULL || sscanf(text, "%lld%c%n", &amount, &unit, &used) != 2 || text[used] != '\0' || amount < 0)
    return -1;
  switch (unit) {
  case 'M': case 'm': return amount;
  case 'G': case 'g': return amount <= INT64_MAX / 1024 ? amount * 1024 : -1;
  case 'T': case 't': return amount <= INT64_MAX / (1024 * 1024) ? amount * 1024 * 1024 : -1;
  default: return -1;
  }
}

void cfg_parse_resources(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
  static const char *const known[] = {"cpus", "memory", "time", "partition", NULL};
  const json_t *resources = get_object(root, "", "resources", errors);
  if (resources == NULL) return;
  check_known_keys(resources, "resources", known, errors);
  get_int(resources, "resources", "cpus", 1, 4096, &config->resources.cpus, errors);
  const json_t *memory = json_object_get(resources, "memory");
  if (memory) {
    const int64_t megabytes = parse_memory(memory);
    if (megabytes < 1 || megabytes > ((int64_t)1 << 40))
      add_error(errors, "resources.memory",
                "must be a size such as \"512M\", \"4G\" or \"1T\", or an integer of MiB, at least 1 MiB");
    else
      config->resources.memory_mb = megabytes;
  }
  const json_t *time = json_object_get(resources, "time");
  if (time) {
    const int64_t seconds = json_is_integer(time)  ? minutes_to_seconds(json_integer_value(time))
                            : json_is_string(time) ? parse_duration(json_string_value(time))
                                                   : -1;
    if (seconds < 60 || seconds > (int64_t)366 * 24 * 3600)
      add_error(errors, "resources.time",
                "must be a time limit of at least a minute and at most 366 days: minutes (an integer or \"30\"), "
                "\"hours:minutes:seconds\" or \"days-hours:minutes:seconds\"");
    else
      config->resources.time_seconds = seconds;
  }
  if (get_string(resources, "resources", "partition", config->resources.partition,
                 sizeof config->resources.partition, errors)) {
    const char *name = config->resources.partition;
    /* It is written into the job script's #SBATCH lines: a name, nothing a shell or sbatch
     * would read as more. */
    if (name[0] == '\0' || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                              strlen(name)) {
      add_error(errors, "resources.partition", "must be a partition name (letters, digits, '_', '.', '-'), not \"%s\"",
                name);
      config->resources.partition[0] = '\0';
    }
  }
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
