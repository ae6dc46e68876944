/* config_model.c — the config's model (see config.h): the layers and the shape each one
 * outputs, their names, the blocks grown into it during training, and whether a teacher's
 * model fits a student's. Part of the validator (config_json.c). */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config_internal.h"
#include "util.h"

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

void cfg_parse_model(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
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

void cfg_parse_grow(const json_t *root, cfg_experiment_t *config, cfg_errors_t *errors) {
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

json_t *cfg_layer_to_json(const cfg_layer_t *layer) {
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
  if (mine->kind != theirs->kind || strcmp(cfg_dataset_name(student), cfg_dataset_name(teacher)) != 0)
    append(differences, sizeof differences, "name \"%s\" (here \"%s\")", cfg_dataset_name(teacher),
           cfg_dataset_name(student));
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

const char *cfg_layer_kind_name(cfg_layer_kind_t kind) {
  return (unsigned)kind < CFG_LAYER_KIND_COUNT ? layer_kinds[kind] : "?";
}
