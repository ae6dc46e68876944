/* study_spec.c — parses, validates and expands a study (see study_spec.h).
 *
 * Expansion works on JSON, the form researchers write: the base is merged with each arm's
 * patch, the cell's values are set at their paths, the seed is set, and only then is the
 * result validated by cfg_from_json, the same code that validates a single experiment, so a
 * study's runs are configs the worker accepts. Each arm × cell is validated once (the seed
 * cannot make a config invalid); errors carry the study path they came from. */
#include "study_spec.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"

#define PATH_SEGMENTS 16
#define GRID_VALUES_MAX 100
#define RANDOM_COUNT_MAX 1000

const char *study_role_name(study_role_t role) {
  static const char *const names[] = {"teacher", "arm", "baseline"};
  return names[role];
}

// ---------------------------------------------------------------------------------------
// JSON: merge patches and config paths

json_t *study_spec_merge_patch(json_t *target, const json_t *patch) {
  if (!json_is_object(patch)) {
    json_decref(target);
    return json_deep_copy(patch);
  }
  if (!json_is_object(target)) {
    json_decref(target);
    target = json_object();
  }
  const char *key;
  json_t *value;
  json_object_foreach((json_t *)patch, key, value) {
    if (json_is_null(value)) {
      json_object_del(target, key);
      continue;
    }
    json_t *current = json_object_get(target, key);
    json_incref(current);
    json_object_set_new(target, key, study_spec_merge_patch(current, value));
  }
  return target;
}

typedef struct {
  int is_index;
  size_t index;
  char key[CFG_NAME_MAX];
} segment_t;

/* "stages[1].distill_weight" → stages, [1], distill_weight. Returns the count, or -1 when it
 * is not a path of that form. */
static int parse_path(const char *path, segment_t *segments, int max) {
  int n = 0;
  const char *p = path;
  for (;;) {
    size_t length = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
    if (length == 0 || length >= CFG_NAME_MAX || n == max) return -1;
    segments[n] = (segment_t){0};
    memcpy(segments[n].key, p, length);
    n++;
    p += length;
    while (*p == '[') {
      char *end;
      if (p[1] < '0' || p[1] > '9' || n == max) return -1;
      unsigned long index = strtoul(p + 1, &end, 10);
      if (*end != ']' || index > 10000) return -1;
      segments[n++] = (segment_t){.is_index = 1, .index = index};
      p = end + 1;
    }
    if (*p == '\0') return n;
    if (*p != '.') return -1;
    p++;
  }
}

int study_spec_set_path(json_t *root, const char *path, json_t *value, char *why, size_t why_size) {
  segment_t segments[PATH_SEGMENTS];
  int n = parse_path(path, segments, PATH_SEGMENTS);
  if (n < 0)
    return util_error(why, why_size, -EINVAL,
                      "is not a config path like \"temperature.start\" or \"stages[1].distill_weight\"");
  json_t *node = root;
  for (int i = 0; i < n; i++) {
    const segment_t *s = &segments[i];
    const int last = i == n - 1;
    if (s->is_index) {
      if (!json_is_array(node)) return util_error(why, why_size, -EINVAL, "the config has no list there");
      if (s->index >= json_array_size(node))
        return util_error(why, why_size, -EINVAL, "the config's list has %zu items, so no [%zu]",
                          json_array_size(node), s->index);
      if (last) return json_array_set(node, s->index, value) == 0 ? 0 : -ENOMEM;
      node = json_array_get(node, s->index);
    } else {
      if (!json_is_object(node))
        return util_error(why, why_size, -EINVAL, "\"%s\" is inside something that is not an object", s->key);
      if (last) return json_object_set(node, s->key, value) == 0 ? 0 : -ENOMEM;
      json_t *child = json_object_get(node, s->key);
      if (child == NULL) {
        if (segments[i + 1].is_index)
          return util_error(why, why_size, -EINVAL, "the config has no list \"%s\" (write it in the base)", s->key);
        child = json_object();
        if (json_object_set_new(node, s->key, child) != 0) return -ENOMEM;
      }
      node = child;
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// the parts of a study

static const char *type_name(const json_t *value) {
  switch (json_typeof(value)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "a list";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  default: return "null";
  }
}

static void check_known(const json_t *object, const char *prefix, const char *const *known, cfg_errors_t *errors) {
  const char *key;
  json_t *value;
  json_object_foreach((json_t *)object, key, value) {
    int found = 0;
    for (const char *const *k = known; *k && !found; k++) found = strcmp(*k, key) == 0;
    if (!found) {
      char shown[64];
      util_utf8_sanitize(key, shown, sizeof shown);
      if (prefix[0]) cfg_add_error(errors, prefix, "\"%s\" is not a field here", shown);
      else cfg_add_error(errors, shown, "is not a field of a study");
    }
  }
}

/* Cells: every combination of the grid's values, each with `count` random draws when
 * there is a random search. Returns a JSON array of {path: value} objects (at least one, {}
 * without either) or NULL with errors added. */
typedef struct {
  const char *path;
  const json_t *values;    /* grid: its list */
  const json_t *draw;      /* random: {"uniform": [lo, hi]} etc. */
} axis_t;

static int check_grid(const json_t *grid, axis_t *axes, int *n_axes, size_t *combinations, cfg_errors_t *errors) {
  if (grid == NULL) return 0;
  if (!json_is_object(grid) || json_object_size(grid) == 0) {
    cfg_add_error(errors, "grid", "must be an object of config paths to lists of values, like "
                                  "{\"temperature.start\": [2, 4, 6]}");
    return -EINVAL;
  }
  const char *path;
  json_t *values;
  json_object_foreach((json_t *)grid, path, values) {
    char at[160];
    snprintf(at, sizeof at, "grid.%s", path);
    segment_t segments[PATH_SEGMENTS];
    if (parse_path(path, segments, PATH_SEGMENTS) < 0) {
      cfg_add_error(errors, at, "is not a config path like \"temperature.start\" or \"stages[1].distill_weight\"");
      continue;
    }
    if (!json_is_array(values) || json_array_size(values) == 0 || json_array_size(values) > GRID_VALUES_MAX) {
      cfg_add_error(errors, at, "must be a list of 1 to %d values, not %s", GRID_VALUES_MAX, type_name(values));
      continue;
    }
    if (*n_axes == STUDY_MAX_AXES) {
      cfg_add_error(errors, "grid", "at most %d paths in grid and random together", STUDY_MAX_AXES);
      return -EINVAL;
    }
    axes[(*n_axes)++] = (axis_t){path, values, NULL};
    *combinations *= json_array_size(values);
  }
  return errors->count ? -EINVAL : 0;
}

static int check_random(const json_t *random, axis_t *axes, int *n_axes, int *count, uint64_t *seed,
                        cfg_errors_t *errors) {
  static const char *const known[] = {"count", "seed", "params", NULL};
  if (random == NULL) return 0;
  if (!json_is_object(random)) {
    cfg_add_error(errors, "random", "must be an object like {\"count\": 8, \"seed\": 1, \"params\": "
                                    "{\"optimizer.lr\": {\"log_uniform\": [0.001, 0.1]}}}");
    return -EINVAL;
  }
  check_known(random, "random", known, errors);
  const json_t *count_value = json_object_get(random, "count"), *seed_value = json_object_get(random, "seed");
  if (!json_is_integer(count_value) || json_integer_value(count_value) < 1 ||
      json_integer_value(count_value) > RANDOM_COUNT_MAX)
    cfg_add_error(errors, "random.count", "must be an integer from 1 to %d (the draws)", RANDOM_COUNT_MAX);
  else
    *count = (int)json_integer_value(count_value);
  if (seed_value && (!json_is_integer(seed_value) || json_integer_value(seed_value) < 0))
    cfg_add_error(errors, "random.seed", "must be a non-negative integer");
  else if (seed_value)
    *seed = (uint64_t)json_integer_value(seed_value);
  const json_t *params = json_object_get(random, "params");
  if (!json_is_object(params) || json_object_size(params) == 0) {
    cfg_add_error(errors, "random.params", "must name at least one config path and its distribution");
    return -EINVAL;
  }
  const char *path;
  json_t *draw;
  json_object_foreach((json_t *)params, path, draw) {
    char at[160];
    snprintf(at, sizeof at, "random.params.%s", path);
    segment_t segments[PATH_SEGMENTS];
    if (parse_path(path, segments, PATH_SEGMENTS) < 0) {
      cfg_add_error(errors, at, "is not a config path like \"optimizer.lr\"");
      continue;
    }
    const json_t *range = NULL, *choices = json_object_get(draw, "choice");
    const char *kind = json_object_get(draw, "uniform") ? "uniform" : json_object_get(draw, "log_uniform") ? "log_uniform" : NULL;
    if (kind) range = json_object_get(draw, kind);
    if (!json_is_object(draw) || json_object_size(draw) != 1 || (!range && !choices)) {
      cfg_add_error(errors, at, "must be {\"uniform\": [low, high]}, {\"log_uniform\": [low, high]} or "
                                "{\"choice\": [values…]}");
      continue;
    }
    if (choices && (!json_is_array(choices) || json_array_size(choices) == 0)) {
      cfg_add_error(errors, at, "choice: must be a non-empty list of values");
      continue;
    }
    if (range) {
      double low = json_number_value(json_array_get(range, 0)), high = json_number_value(json_array_get(range, 1));
      if (!json_is_array(range) || json_array_size(range) != 2 || !json_is_number(json_array_get(range, 0)) ||
          !json_is_number(json_array_get(range, 1)) || !(low < high)) {
        cfg_add_error(errors, at, "%s: must be [low, high] with low < high", kind);
        continue;
      }
      if (strcmp(kind, "log_uniform") == 0 && low <= 0) {
        cfg_add_error(errors, at, "log_uniform: low must be above 0, not %g", low);
        continue;
      }
    }
    if (*n_axes == STUDY_MAX_AXES) {
      cfg_add_error(errors, "random.params", "at most %d paths in grid and random together", STUDY_MAX_AXES);
      return -EINVAL;
    }
    axes[(*n_axes)++] = (axis_t){path, NULL, draw};
  }
  return errors->count ? -EINVAL : 0;
}

/* Four significant digits: a drawn learning rate reads 0.01235, not 0.012345678901234. */
static double round_significant(double value) {
  if (value == 0 || !isfinite(value)) return value;
  double scale = pow(10.0, 3 - (int)floor(log10(fabs(value))));
  return round(value * scale) / scale;
}

static json_t *draw_value(const json_t *draw, uint64_t seed, int index, int axis) {
  rng_t rng;
  rng_seed(&rng, seed, RNG_STREAM_STUDY, (uint64_t)index * STUDY_MAX_AXES + (uint64_t)axis);
  const json_t *choices = json_object_get(draw, "choice");
  if (choices) return json_deep_copy(json_array_get(choices, rng_below(&rng, (uint32_t)json_array_size(choices))));
  const json_t *range = json_object_get(draw, "uniform");
  const int logarithmic = range == NULL;
  if (logarithmic) range = json_object_get(draw, "log_uniform");
  double low = json_number_value(json_array_get(range, 0)), high = json_number_value(json_array_get(range, 1));
  double u = rng_uniform_double(&rng);
  double value = logarithmic ? exp(log(low) + u * (log(high) - log(low))) : low + u * (high - low);
  return json_real(round_significant(value));
}

static json_t *make_cells(const axis_t *axes, int n_axes, size_t combinations, int draws, uint64_t seed) {
  json_t *cells = json_array();
  for (size_t c = 0; c < combinations; c++) {
    for (int d = 0; d < draws; d++) {
      json_t *cell = json_object();
      size_t rest = c;
      for (int a = n_axes - 1; a >= 0; a--) { /* the last grid path varies fastest */
        if (axes[a].values) {
          size_t size = json_array_size(axes[a].values);
          json_object_set(cell, axes[a].path, json_array_get(axes[a].values, rest % size));
          rest /= size;
        }
      }
      for (int a = 0; a < n_axes; a++)
        if (axes[a].draw) json_object_set_new(cell, axes[a].path, draw_value(axes[a].draw, seed, d, a));
      /* Keys in the order the study gave its paths, whatever order they were filled in. */
      json_t *ordered = json_object();
      for (int a = 0; a < n_axes; a++) json_object_set(ordered, axes[a].path, json_object_get(cell, axes[a].path));
      json_decref(cell);
      json_array_append_new(cells, ordered);
    }
  }
  return cells;
}

/* The seeds: a count N (1…N) or a list. Returns how many, or 0 with an error added. */
static int parse_seeds(const json_t *seeds, int64_t *out, cfg_errors_t *errors) {
  if (seeds == NULL) {
    for (int i = 0; i < 3; i++) out[i] = i + 1;
    return 3;
  }
  if (json_is_integer(seeds)) {
    json_int_t count = json_integer_value(seeds);
    if (count < 1 || count > STUDY_MAX_SEEDS) {
      cfg_add_error(errors, "seeds", "must be a count from 1 to %d or a list of seeds, not %lld", STUDY_MAX_SEEDS,
                    (long long)count);
      return 0;
    }
    for (int i = 0; i < count; i++) out[i] = i + 1;
    return (int)count;
  }
  if (!json_is_array(seeds) || json_array_size(seeds) == 0 || json_array_size(seeds) > STUDY_MAX_SEEDS) {
    cfg_add_error(errors, "seeds", "must be a count from 1 to %d or a list of 1 to %d seeds", STUDY_MAX_SEEDS,
                  STUDY_MAX_SEEDS);
    return 0;
  }
  int n = 0;
  size_t i;
  json_t *seed;
  json_array_foreach((json_t *)seeds, i, seed) {
    char at[32];
    snprintf(at, sizeof at, "seeds[%zu]", i);
    if (!json_is_integer(seed) || json_integer_value(seed) < 0) {
      cfg_add_error(errors, at, "must be a non-negative integer, not %s", type_name(seed));
      continue;
    }
    for (int j = 0; j < n; j++)
      if (out[j] == json_integer_value(seed)) cfg_add_error(errors, at, "%lld is already in the list", (long long)out[j]);
    out[n++] = json_integer_value(seed);
  }
  return errors->count ? 0 : n;
}

/* Whether a config (as written) asks for a teacher: a distillation weight above zero in some
 * stage, or a section only distillation uses. */
static int wants_teacher(const json_t *config) {
  static const char *const sections[] = {"features", "temperature", "adversarial"};
  for (size_t i = 0; i < ARRAY_SIZE(sections); i++)
    if (json_object_get(config, sections[i])) return 1;
  static const char *const weights[] = {"distill_weight", "feature_weight", "adversarial_weight"};
  size_t s;
  json_t *stage;
  json_array_foreach(json_object_get(config, "stages"), s, stage)
    for (size_t i = 0; i < ARRAY_SIZE(weights); i++)
      if (json_number_value(json_object_get(stage, weights[i])) > 0) return 1;
  return 0;
}

int64_t study_spec_steps(const cfg_experiment_t *config) {
  int64_t examples = config->dataset.train_size - config->dataset.val_size;
  if (config->dataset.train_limit > 0 && config->dataset.train_limit < examples) examples = config->dataset.train_limit;
  int64_t batches = (examples + config->batch_size - 1) / config->batch_size;
  return batches * cfg_total_epochs(config);
}

json_t *study_spec_baseline(const json_t *config) {
  json_t *baseline = json_deep_copy(config);
  if (baseline == NULL) return NULL;
  static const char *const distillation[] = {"teacher", "temperature", "features", "adversarial"};
  for (size_t i = 0; i < ARRAY_SIZE(distillation); i++) json_object_del(baseline, distillation[i]);
  size_t s;
  json_t *stage;
  json_array_foreach(json_object_get(baseline, "stages"), s, stage) {
    /* The task loss at full weight: what the student would train on without a teacher.
     * Keeping the arm's task weight (0.6, say) would train the baseline at 0.6× its
     * learning rate and flatter the distillation. */
    json_object_set_new(stage, "task_weight", json_real(1.0));
    json_object_set_new(stage, "distill_weight", json_real(0.0));
    json_object_set_new(stage, "feature_weight", json_real(0.0));
    json_object_set_new(stage, "adversarial_weight", json_real(0.0));
  }
  return baseline;
}

// ---------------------------------------------------------------------------------------
// the plan

typedef struct {
  study_plan_t *plan;
  int capacity_runs, capacity_links;
  int *baseline_numbers;   /* per run: which distinct baseline it is (0: not a baseline) */
} builder_t;

static int add_run(builder_t *b, json_t *config, const cfg_experiment_t *parsed, int teacher_run, int distills) {
  study_plan_t *plan = b->plan;
  if (plan->n_runs == b->capacity_runs) {
    int capacity = b->capacity_runs ? b->capacity_runs * 2 : 64;
    study_run_t *runs = realloc(plan->runs, (size_t)capacity * sizeof *runs);
    if (runs) plan->runs = runs;
    int *numbers = realloc(b->baseline_numbers, (size_t)capacity * sizeof *numbers);
    if (numbers) b->baseline_numbers = numbers;
    if (runs == NULL || numbers == NULL) return -ENOMEM;
    b->capacity_runs = capacity;
  }
  study_run_t *run = &plan->runs[plan->n_runs];
  b->baseline_numbers[plan->n_runs] = 0;
  *run = (study_run_t){.config = config, .seed = (int64_t)parsed->seed, .teacher_run = teacher_run,
                       .steps = study_spec_steps(parsed), .distills = distills};
  const char *name = json_string_value(json_object_get(config, "name"));
  util_strlcpy(run->name, name ? name : parsed->name, sizeof run->name);
  plan->total_steps += run->steps;
  return plan->n_runs++;
}

static int add_link(builder_t *b, int run, study_role_t role, const char *arm, const json_t *cell) {
  study_plan_t *plan = b->plan;
  if (plan->n_links == b->capacity_links) {
    int capacity = b->capacity_links ? b->capacity_links * 2 : 64;
    study_link_t *links = realloc(plan->links, (size_t)capacity * sizeof *links);
    if (links == NULL) return -ENOMEM;
    plan->links = links;
    b->capacity_links = capacity;
  }
  study_link_t *link = &plan->links[plan->n_links++];
  *link = (study_link_t){.run = run, .role = role, .cell = json_deep_copy(cell)};
  util_strlcpy(link->arm, arm, sizeof link->arm);
  return link->cell ? 0 : -ENOMEM;
}

/* Validates `config` (taking it) and turns it into its stored form. Errors are added with
 * `prefix` before their config path and `context` after their message. Returns the
 * stored form, or NULL. */
static json_t *normalize(json_t *config, cfg_experiment_t *parsed, const char *prefix, const char *context,
                         cfg_errors_t *errors) {
  cfg_errors_t *found = malloc(sizeof *found);
  json_t *normalized = NULL;
  if (found == NULL) goto done;
  if (cfg_from_json(config, parsed, found) == 0) {
    normalized = cfg_to_json(parsed);
  } else {
    for (int i = 0; i < found->count && i < CFG_MAX_ERRORS; i++) {
      char path[160];
      snprintf(path, sizeof path, "%s%s%s", prefix, found->items[i].path[0] ? "." : "", found->items[i].path);
      cfg_add_error(errors, path, "%s%s", found->items[i].message, context);
    }
  }
done:
  free(found);
  json_decref(config);
  return normalized;
}

/* Sets the config's "name", cut to what an experiment's name may hold (at a character's
 * start: names are UTF-8). */
static void set_name(json_t *config, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void set_name(json_t *config, const char *format, ...) {
  char name[512];
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(name, sizeof name, format, arguments);
  va_end(arguments);
  size_t length = strlen(name);
  if (length > CFG_TITLE_MAX - 1) {
    length = CFG_TITLE_MAX - 1;
    while (length > 0 && ((unsigned char)name[length] & 0xC0) == 0x80) length--;
    name[length] = '\0';
  }
  json_object_set_new(config, "name", json_string(name));
}

/* A short text of a cell for run names: "temperature.start=2 optimizer.lr=0.01". */
static void describe_cell(const json_t *cell, char *out, size_t size) {
  size_t used = 0;
  out[0] = '\0';
  const char *path;
  json_t *value;
  json_object_foreach((json_t *)cell, path, value) {
    char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(6));
    int n = snprintf(out + used, size - used, "%s%s=%s", used ? " " : "", path, text ? text : "?");
    free(text);
    if (n < 0 || (size_t)n >= size - used) break;
    used += (size_t)n;
  }
}

/* The study's teacher: what distilling configs get as their "teacher", and the teacher's
 * own config when the study trains it (NULL otherwise). */
typedef struct {
  json_t *field;           /* {"experiment": N} or {"checkpoint": …}; a placeholder for a trained one */
  json_t *config;          /* stored form of the teacher config the study trains */
  cfg_experiment_t parsed;
  int per_seed;
} teacher_t;

static int parse_teacher(const json_t *spec, const char *study_name, teacher_t *teacher, study_plan_t *plan,
                         cfg_errors_t *errors) {
  static const char *const known[] = {"experiment", "checkpoint", "config", "per_seed", NULL};
  const json_t *given = json_object_get(spec, "teacher");
  if (given == NULL) return 0;
  if (!json_is_object(given)) {
    cfg_add_error(errors, "teacher", "must be {\"experiment\": N}, {\"checkpoint\": \"path\"} or {\"config\": {…}}");
    return -EINVAL;
  }
  check_known(given, "teacher", known, errors);
  const json_t *experiment = json_object_get(given, "experiment"), *checkpoint = json_object_get(given, "checkpoint"),
               *config = json_object_get(given, "config"), *per_seed = json_object_get(given, "per_seed");
  if ((experiment != NULL) + (checkpoint != NULL) + (config != NULL) != 1) {
    cfg_add_error(errors, "teacher", "give exactly one of \"experiment\", \"checkpoint\" or \"config\"");
    return -EINVAL;
  }
  if (per_seed && (!config || !json_is_boolean(per_seed)))
    cfg_add_error(errors, "teacher.per_seed", "is true or false, and only with a teacher \"config\"");
  teacher->per_seed = json_is_true(per_seed);
  if (experiment) {
    if (!json_is_integer(experiment) || json_integer_value(experiment) < 1) {
      cfg_add_error(errors, "teacher.experiment", "must be an experiment id (a positive integer)");
      return -EINVAL;
    }
    plan->teacher_experiment = json_integer_value(experiment);
    teacher->field = json_pack("{s:I}", "experiment", (json_int_t)plan->teacher_experiment);
  } else if (checkpoint) {
    if (!json_is_string(checkpoint) || json_string_length(checkpoint) == 0) {
      cfg_add_error(errors, "teacher.checkpoint", "must be the path of a checkpoint file");
      return -EINVAL;
    }
    teacher->field = json_pack("{s:O}", "checkpoint", checkpoint);
  } else {
    if (!json_is_object(config)) {
      cfg_add_error(errors, "teacher.config", "must be an experiment config (an object)");
      return -EINVAL;
    }
    json_t *named = json_deep_copy(config);
    set_name(named, "%s/teacher", study_name);
    teacher->config = normalize(named, &teacher->parsed, "teacher.config", "", errors);
    if (teacher->config == NULL) return -EINVAL;
    /* A placeholder until the teacher is stored and has an id (study.c fills it in). */
    teacher->field = json_pack("{s:i}", "experiment", 1);
  }
  return errors->count ? -EINVAL : 0;
}

/* The teacher run for `seed`: added at its first use, once for the study or once per seed
 * (the caller forgets `current` at each seed then). -1 when the study trains none. */
static int teacher_run_for(builder_t *b, teacher_t *teacher, int64_t seed, int *current) {
  if (teacher->config == NULL) return -1;
  if (*current >= 0) return *current;
  json_t *config = json_deep_copy(teacher->config);
  cfg_experiment_t parsed = teacher->parsed;
  if (teacher->per_seed) {
    json_object_set_new(config, "seed", json_integer(seed));
    parsed.seed = (uint64_t)seed;
  }
  int run = add_run(b, config, &parsed, -1, 0);
  if (run < 0) return run;
  json_t *no_cell = json_object();
  int result = add_link(b, run, STUDY_ROLE_TEACHER, "teacher", no_cell);
  json_decref(no_cell);
  if (result != 0) return -ENOMEM;
  *current = run;
  return run;
}

/* One arm in one cell, validated once: its config for the first seed, whether it learns from
 * the teacher, and its matched baseline. */
typedef struct {
  const char *arm;
  const json_t *cell;
  json_t *config;          /* stored form; the seed is set per run */
  json_t *baseline;        /* stored form of its matched baseline, or NULL */
  json_t *baseline_key;    /* the baseline without its name: equal keys are one run per seed */
  int baseline_number;     /* which of the study's distinct baselines it is, from 1 */
  cfg_experiment_t parsed;
  cfg_experiment_t baseline_parsed;
  int distills;
} arm_cell_t;

/* What a baseline trains, as a key that equal trainings share: its config with each run of
 * consecutive stages that have the same weights and learning rate made one stage of their
 * epochs, names dropped. Stages like that train the same way however they are split: the
 * schedules run over the epochs, not the stages (kd-progressive's baseline, 5 + 10 epochs
 * of the task alone, gave kd-weighted's 15-epoch baseline's figures to the last digit), so
 * their baselines are one run. Takes no reference of `baseline`. */
static json_t *training_key(const json_t *baseline) {
  json_t *key = json_deep_copy(baseline), *merged = json_array(), *stage;
  size_t i;
  json_array_foreach(json_object_get(key, "stages"), i, stage) {
    json_t *last = json_array_get(merged, json_array_size(merged) - 1);
    json_t *copy = json_deep_copy(stage);
    json_object_del(copy, "name");
    json_t *epochs = json_incref(json_object_get(copy, "epochs"));
    json_object_del(copy, "epochs");
    if (last && json_equal(json_object_get(last, "training"), copy)) {
      json_object_set_new(last, "epochs",
                          json_integer(json_integer_value(json_object_get(last, "epochs")) + json_integer_value(epochs)));
      json_decref(copy);
    } else {
      json_array_append_new(merged, json_pack("{s:o, s:O}", "training", copy, "epochs", epochs));
    }
    json_decref(epochs);
  }
  json_object_set_new(key, "stages", merged);
  return key;
}

static int prepare_arm_cell(const json_t *merged, const char *arm, const json_t *cell, const char *study_name,
                            const teacher_t *teacher, int baselines, arm_cell_t *out, cfg_errors_t *errors) {
  *out = (arm_cell_t){.arm = arm, .cell = cell};
  char prefix[CFG_TITLE_MAX + 16], context[400] = "", described[300], why[200];
  snprintf(prefix, sizeof prefix, "arms.%s", arm);
  describe_cell(cell, described, sizeof described);
  if (described[0]) snprintf(context, sizeof context, " (in the cell %s)", described);
  json_t *config = json_deep_copy(merged);
  const char *path;
  json_t *value;
  json_object_foreach((json_t *)cell, path, value) {
    if (study_spec_set_path(config, path, value, why, sizeof why) != 0) {
      char at[200];
      snprintf(at, sizeof at, "grid.%s", path);
      cfg_add_error(errors, at, "%s%s", why, context);
      json_decref(config);
      return -EINVAL;
    }
  }
  set_name(config, "%s/%s%s%s", study_name, arm, described[0] ? " " : "", described);
  out->distills = wants_teacher(config);
  if (out->distills && teacher->field == NULL) {
    cfg_add_error(errors, prefix, "learns from a teacher (a distillation term or section) but the study has no "
                                  "\"teacher\"");
    json_decref(config);
    return -EINVAL;
  }
  if (out->distills) json_object_set(config, "teacher", teacher->field);
  if ((out->config = normalize(config, &out->parsed, prefix, context, errors)) == NULL) return -EINVAL;
  if (out->distills && teacher->config) {
    cfg_errors_t *found = malloc(sizeof *found);
    if (found == NULL) return -ENOMEM;
    memset(found, 0, sizeof *found);
    if (cfg_check_teacher(&out->parsed, &teacher->parsed, found) != 0)
      for (int i = 0; i < found->count && i < CFG_MAX_ERRORS; i++) {
        char at[CFG_TITLE_MAX + 160];
        snprintf(at, sizeof at, "%s%s%s", prefix, found->items[i].path[0] ? "." : "", found->items[i].path);
        cfg_add_error(errors, at, "%s (against the study's teacher)%s", found->items[i].message, context);
      }
    free(found);
    if (errors->count) return -EINVAL;
  }
  if (!out->distills || !baselines) return 0;
  json_t *baseline = study_spec_baseline(out->config);
  if (baseline == NULL) return -ENOMEM;
  json_object_set_new(baseline, "name", json_string(""));
  json_object_del(baseline, "seed"); /* every seed has its own run anyway */
  json_t *seeded = json_deep_copy(baseline);
  json_object_set(seeded, "seed", json_object_get(out->config, "seed"));
  out->baseline_key = training_key(baseline);
  json_decref(baseline);
  out->baseline = normalize(seeded, &out->baseline_parsed, prefix, " (its matched baseline)",
                            errors);
  return out->baseline ? 0 : -EINVAL;
}

/* Numbers the distinct baselines and names them: "<study>/baseline" when there is one,
 * "<study>/baseline-2"… when the cells or arms change what the student trains on. */
static void name_baselines(arm_cell_t *cells, int n, const char *study_name) {
  int distinct = 0;
  for (int i = 0; i < n; i++) {
    if (cells[i].baseline == NULL) continue;
    for (int j = 0; j < i && !cells[i].baseline_number; j++)
      if (cells[j].baseline && json_equal(cells[j].baseline_key, cells[i].baseline_key))
        cells[i].baseline_number = cells[j].baseline_number;
    if (!cells[i].baseline_number) cells[i].baseline_number = ++distinct;
  }
  for (int i = 0; i < n; i++) {
    if (cells[i].baseline == NULL) continue;
    if (distinct == 1) set_name(cells[i].baseline, "%s/baseline", study_name);
    else set_name(cells[i].baseline, "%s/baseline-%d", study_name, cells[i].baseline_number);
  }
}

static void free_arm_cells(arm_cell_t *cells, int n) {
  for (int i = 0; i < n; i++) {
    json_decref(cells[i].config);
    json_decref(cells[i].baseline);
    json_decref(cells[i].baseline_key);
  }
  free(cells);
}

/* Every arm × cell × seed, seed by seed, so the pairs of a seed finish together and a
 * study's statistics grow as it runs. */
static int expand(builder_t *b, arm_cell_t *cells, int n_cells, const int64_t *seeds, int n_seeds, teacher_t *teacher) {
  int current_teacher = -1;
  for (int s = 0; s < n_seeds; s++) {
    int first_baseline = b->plan->n_runs; /* baselines are shared within a seed only */
    int teacher_run = -1;
    if (teacher->per_seed) current_teacher = -1;
    for (int c = 0; c < n_cells; c++) {
      arm_cell_t *cell = &cells[c];
      if (cell->distills && (teacher_run = teacher_run_for(b, teacher, seeds[s], &current_teacher)) < -1) return teacher_run;
      json_t *config = json_deep_copy(cell->config);
      json_object_set_new(config, "seed", json_integer(seeds[s]));
      cfg_experiment_t parsed = cell->parsed;
      parsed.seed = (uint64_t)seeds[s];
      int run = add_run(b, config, &parsed, cell->distills ? teacher_run : -1, cell->distills);
      if (run < 0 || add_link(b, run, STUDY_ROLE_ARM, cell->arm, cell->cell) != 0) return -ENOMEM;
      if (cell->baseline == NULL) continue;
      int baseline = -1; /* the seed's run of this distinct baseline, if an earlier arm made it */
      for (int r = first_baseline; r < b->plan->n_runs && baseline < 0; r++)
        if (b->baseline_numbers[r] == cell->baseline_number) baseline = r;
      if (baseline < 0) {
        json_t *config = json_deep_copy(cell->baseline);
        json_object_set_new(config, "seed", json_integer(seeds[s]));
        parsed = cell->baseline_parsed;
        parsed.seed = (uint64_t)seeds[s];
        if ((baseline = add_run(b, config, &parsed, -1, 0)) < 0) return -ENOMEM;
        b->baseline_numbers[baseline] = cell->baseline_number;
      }
      char arm[CFG_TITLE_MAX];
      snprintf(arm, sizeof arm, "%s/baseline", cell->arm);
      if (add_link(b, baseline, STUDY_ROLE_BASELINE, arm, cell->cell) != 0) return -ENOMEM;
    }
  }
  return 0;
}

int study_spec_expand(const json_t *spec, study_plan_t **out, cfg_errors_t *errors) {
  static const char *const known[] = {"name", "description", "base", "arms", "grid", "random", "seeds",
                                      "teacher", "baselines", "early_stopping", NULL};
  memset(errors, 0, sizeof *errors);
  *out = NULL;
  if (!json_is_object(spec)) {
    cfg_add_error(errors, "", "a study is a JSON object with \"base\", \"arms\", \"seeds\"…, not %s",
                  spec ? type_name(spec) : "nothing");
    return -EINVAL;
  }
  study_plan_t *plan = calloc(1, sizeof *plan);
  teacher_t teacher = {0};
  arm_cell_t *arm_cells = NULL;
  json_t *cells = NULL, *only = NULL;
  int n_arm_cells = 0, result = -EINVAL;
  builder_t builder = {.plan = plan};
  if (plan == NULL) return -ENOMEM;
  check_known(spec, "", known, errors);

  const json_t *name = json_object_get(spec, "name");
  if (name && (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > 64))
    cfg_add_error(errors, "name", "must be a name of 1 to 64 characters");
  util_strlcpy(plan->name, json_is_string(name) && json_string_length(name) <= 64 ? json_string_value(name) : "study",
               sizeof plan->name);
  const json_t *description = json_object_get(spec, "description");
  if (description && !json_is_string(description)) cfg_add_error(errors, "description", "must be text");
  const json_t *base = json_object_get(spec, "base");
  if (!json_is_object(base)) cfg_add_error(errors, "base", "is required: the experiment config every arm starts from");
  else if (json_object_get(base, "teacher"))
    cfg_add_error(errors, "base.teacher", "give the teacher once, as the study's \"teacher\"");
  const json_t *arms = json_object_get(spec, "arms");
  if (arms && (!json_is_object(arms) || json_object_size(arms) == 0 || json_object_size(arms) > STUDY_MAX_ARMS))
    cfg_add_error(errors, "arms", "must be an object of 1 to %d named arms, each a JSON merge patch on the base",
                  STUDY_MAX_ARMS);
  const json_t *baselines = json_object_get(spec, "baselines");
  if (baselines && !json_is_boolean(baselines))
    cfg_add_error(errors, "baselines", "is true (every distilling arm gets a matched baseline) or false");
  const json_t *early = json_object_get(spec, "early_stopping");
  if (early) {
    static const char *const early_known[] = {"rule", "min_epochs", NULL};
    const json_t *rule = json_object_get(early, "rule"), *min_epochs = json_object_get(early, "min_epochs");
    if (!json_is_object(early)) {
      cfg_add_error(errors, "early_stopping", "must be {\"rule\": \"median\", \"min_epochs\": N}");
    } else {
      check_known(early, "early_stopping", early_known, errors);
      if (rule && (!json_is_string(rule) || strcmp(json_string_value(rule), "median") != 0))
        cfg_add_error(errors, "early_stopping.rule", "the one rule is \"median\" (the median stopping rule)");
      plan->early_stopping.enabled = 1;
      plan->early_stopping.min_epochs = 2;
      if (min_epochs && (!json_is_integer(min_epochs) || json_integer_value(min_epochs) < 1 ||
                         json_integer_value(min_epochs) > 10000))
        cfg_add_error(errors, "early_stopping.min_epochs", "must be an integer from 1 to 10000");
      else if (min_epochs)
        plan->early_stopping.min_epochs = (int)json_integer_value(min_epochs);
    }
  }
  int64_t seeds[STUDY_MAX_SEEDS];
  plan->n_seeds = parse_seeds(json_object_get(spec, "seeds"), seeds, errors);
  axis_t axes[STUDY_MAX_AXES];
  int n_axes = 0, draws = 1;
  size_t combinations = 1;
  uint64_t random_seed = 1;
  check_grid(json_object_get(spec, "grid"), axes, &n_axes, &combinations, errors);
  check_random(json_object_get(spec, "random"), axes, &n_axes, &draws, &random_seed, errors);
  if (errors->count) goto done;
  parse_teacher(spec, plan->name, &teacher, plan, errors);
  if (errors->count) goto done;

  /* Counted before anything is built: a grid can ask for millions. */
  size_t n_arms = arms ? json_object_size(arms) : 1;
  size_t per_seed = n_arms * combinations * (size_t)draws;
  if (combinations > STUDY_MAX_RUNS || per_seed * (size_t)plan->n_seeds > STUDY_MAX_RUNS) {
    cfg_add_error(errors, "", "the study asks for %zu runs (%zu arms × %zu cells × %d seeds), more than the %d a "
                              "study may have", per_seed * (size_t)plan->n_seeds, n_arms, combinations * (size_t)draws,
                  plan->n_seeds, STUDY_MAX_RUNS);
    goto done;
  }
  cells = make_cells(axes, n_axes, combinations, draws, random_seed);
  arm_cells = calloc(per_seed, sizeof *arm_cells);
  if (cells == NULL || arm_cells == NULL) {
    result = -ENOMEM;
    goto done;
  }
  const char *arm_name;
  json_t *patch;
  only = json_pack("{s:{}}", "base"); /* lives until the end: the arms' names point into it */
  json_object_foreach(arms ? (json_t *)arms : only, arm_name, patch) {
    char at[CFG_TITLE_MAX + 16];
    snprintf(at, sizeof at, "arms.%s", arm_name);
    if (strlen(arm_name) == 0 || strlen(arm_name) > 48 || strchr(arm_name, '/')) {
      cfg_add_error(errors, at, "an arm's name has 1 to 48 characters and no '/'");
      continue;
    }
    if (!json_is_object(patch)) {
      cfg_add_error(errors, at, "must be a JSON merge patch on the base (an object), not %s", type_name(patch));
      continue;
    }
    if (json_object_get(patch, "teacher")) {
      cfg_add_error(errors, at, "give the teacher once, as the study's \"teacher\"");
      continue;
    }
    util_strlcpy(plan->arms[plan->n_arms++], arm_name, sizeof plan->arms[0]);
    json_t *merged = study_spec_merge_patch(json_deep_copy(base), patch);
    size_t c;
    json_t *cell;
    json_array_foreach(cells, c, cell) {
      if (prepare_arm_cell(merged, arm_name, cell, plan->name, &teacher, !json_is_false(baselines),
                           &arm_cells[n_arm_cells], errors) != 0) {
        json_decref(arm_cells[n_arm_cells].config);
        json_decref(arm_cells[n_arm_cells].baseline);
        json_decref(arm_cells[n_arm_cells].baseline_key);
        arm_cells[n_arm_cells] = (arm_cell_t){0};
        break; /* one cell's error is enough to say what is wrong with the arm */
      }
      n_arm_cells++;
    }
    json_decref(merged);
  }
  if (errors->count) goto done;
  name_baselines(arm_cells, n_arm_cells, plan->name);
  if ((result = expand(&builder, arm_cells, n_arm_cells, seeds, plan->n_seeds, &teacher)) != 0) goto done;
  if (plan->n_runs > STUDY_MAX_RUNS) {
    cfg_add_error(errors, "", "the study expands to %d runs with its baselines and teachers, more than the %d a study "
                              "may have", plan->n_runs, STUDY_MAX_RUNS);
    result = -EINVAL;
    goto done;
  }
  *out = plan;
  plan = NULL;
  result = 0;
done:
  if (errors->count && result == 0) result = -EINVAL;
  if (errors->count) result = -EINVAL;
  free_arm_cells(arm_cells, n_arm_cells);
  free(builder.baseline_numbers);
  json_decref(cells);
  json_decref(only);
  json_decref(teacher.field);
  json_decref(teacher.config);
  study_plan_free(plan);
  return result;
}

void study_plan_free(study_plan_t *plan) {
  if (plan == NULL) return;
  for (int i = 0; i < plan->n_runs; i++) json_decref(plan->runs[i].config);
  for (int i = 0; i < plan->n_links; i++) json_decref(plan->links[i].cell);
  free(plan->runs);
  free(plan->links);
  free(plan);
}

json_t *study_plan_to_json(const study_plan_t *plan) {
  json_t *runs = json_array();
  for (int i = 0; i < plan->n_runs; i++) {
    const study_run_t *run = &plan->runs[i];
    json_t *roles = json_array();
    for (int l = 0; l < plan->n_links; l++) {
      if (plan->links[l].run != i) continue;
      json_array_append_new(roles, json_pack("{s:s, s:s, s:O}", "role", study_role_name(plan->links[l].role), "arm",
                                             plan->links[l].arm, "cell", plan->links[l].cell));
    }
    json_t *item = json_pack("{s:i, s:s, s:I, s:I, s:o, s:O}", "index", i, "name", run->name, "seed",
                             (json_int_t)run->seed, "steps", (json_int_t)run->steps, "roles", roles, "config",
                             run->config);
    if (run->teacher_run >= 0) json_object_set_new(item, "teacher_run", json_integer(run->teacher_run));
    json_array_append_new(runs, item);
  }
  json_t *arms = json_array();
  for (int i = 0; i < plan->n_arms; i++) json_array_append_new(arms, json_string(plan->arms[i]));
  return json_pack("{s:s, s:i, s:I, s:i, s:o, s:o}", "name", plan->name, "count", plan->n_runs, "steps",
                   (json_int_t)plan->total_steps, "seeds", plan->n_seeds, "arms", arms, "runs", runs);
}
