/* config_memory.c — what a worker will need for a config (see config.h, "Memory"): the
 * model's slabs sized as worker/nn.c sizes them, the dataset, the teacher and its cache,
 * the checkpoint buffer and a measured overhead. The daemon refuses a run whose estimate
 * passes --max-worker-memory and gives its worker a matching limit; docs/config.md has
 * the measurements behind the figures. In common/ because the daemon estimates at
 * submission what the worker will allocate. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* Fashion-MNIST's fixed sizes (worker/data.c reads them from the files). */
#define CFG_FASHION_TRAIN 60000
#define CFG_FASHION_TEST 10000

static size_t cfg__max(size_t a, size_t b) { return a > b ? a : b; }

size_t cfg_conv_col_stride(size_t p) {
  size_t lines = (p + 15) / 16; /* 16 floats a 64-byte line */
  if (lines % 2 == 0) lines++;
  return lines * 16;
}

int cfg_conv_winograd(size_t c, size_t k, size_t stride) { return k == 3 && stride == 1 && c >= 8; }

size_t cfg_conv_winograd_ld(size_t tiles) { return cfg_conv_col_stride(tiles + 16); }

size_t cfg_conv_winograd_pitch(size_t tw) {
  const size_t vectors = (tw + 15) / 16 * 16; /* tiles in whole vectors of the widest set */
  return (2 * vectors + 2 + 31) / 32 * 32;
}

size_t cfg_conv_winograd_work_floats(size_t th, size_t tw) {
  const size_t pitch = cfg_conv_winograd_pitch(tw);
  const size_t input = (2 * th + 2) * pitch + 4 * pitch;      /* the plane, even and odd columns */
  const size_t output = 4 * (th * tw + 16) + 2 * tw + 32;     /* four rows of outputs, one zipped */
  return cfg__max(input, output);
}

cfg_winograd_layout_t cfg_conv_winograd_layout(size_t c, size_t oh, size_t ow, size_t oc) {
  cfg_winograd_layout_t layout;
  layout.tiles_high = (oh + 1) / 2;
  layout.tiles_wide = (ow + 1) / 2;
  layout.ld = cfg_conv_winograd_ld(layout.tiles_high * layout.tiles_wide);
  layout.v = (16 * oc * c + 15) / 16 * 16; /* after U, from a whole line */
  layout.m = layout.v + 16 * c * layout.ld;
  layout.work = layout.m + 16 * oc * layout.ld;
  layout.total = layout.work + cfg_conv_winograd_work_floats(layout.tiles_high, layout.tiles_wide);
  return layout;
}

size_t cfg_conv_scratch_floats(size_t c, size_t k, size_t stride, size_t oh, size_t ow, size_t oc,
                               int backward) {
  const size_t line = 15; /* the im2col moved up to a 64-byte line */
  const size_t ckk = c * k * k, p = oh * ow;
  size_t first = ckk * cfg_conv_col_stride(p);
  if (cfg_conv_winograd(c, k, stride)) first = cfg__max(first, cfg_conv_winograd_layout(c, oh, ow, oc).total);
  return line + first + oc * p + (backward ? oc * ckk + oc + p * oc : 0);
}

size_t cfg_panel_floats(size_t k, size_t n) { return (n + 31) / 32 * 32 * k; }

size_t cfg_linear_panel_floats(size_t in, size_t out, size_t batch) {
  return cfg__max(cfg_panel_floats(in, out), cfg_panel_floats(out, in) + cfg_panel_floats(batch, in));
}

/* Mirrors worker/nn.c's nn__build line for line in what it counts (not in what it lays
 * out): keep the two together. tests/test_nn.c checks that they agree. */
int cfg_model_slabs(const cfg_experiment_t *config, int max_batch, int forward_only, cfg_slabs_t *out) {
  memset(out, 0, sizeof *out);
  if (config->n_layers < 1 || config->n_layers > CFG_MAX_LAYERS || config->n_grow < 0 ||
      config->n_grow > CFG_MAX_GROW || max_batch < 1)
    return -EINVAL;
  const size_t batch = (size_t)max_batch;
  cfg_shape_t in = cfg_input_shape(config);
  size_t n_params = 0, n_activations = 0, n_scratch = 0, n_panels = 0, n_masks = 0, n_indices = 0;
  for (int l = 0; l < config->n_layers; l++) {
    const cfg_layer_t *spec = &config->layers[l];
    const cfg_shape_t *shape = &spec->shape; /* filled by validation */
    const size_t n_in = (size_t)cfg_shape_size(&in), n_out = (size_t)cfg_shape_size(shape);
    if (shape->channels < 1 || batch * n_out > INT_MAX || batch * n_in > INT_MAX) return -EINVAL;
    const size_t out_floats = batch * n_out;
    switch (spec->kind) {
    case CFG_LAYER_LINEAR:
      n_params += n_in * n_out + n_out;
      if (forward_only) /* each layer's Wᵀ, packed once (nn_model_pack_weights) */
        n_panels += cfg_panel_floats(n_in, n_out);
      else
        n_panels = cfg__max(n_panels, cfg_linear_panel_floats(n_in, n_out, batch));
      break;
    case CFG_LAYER_CONV2D: {
      const size_t ckk = (size_t)in.channels * (size_t)spec->kernel * (size_t)spec->kernel;
      n_params += (size_t)spec->out * ckk + (size_t)spec->out;
      n_scratch = cfg__max(n_scratch, cfg_conv_scratch_floats((size_t)in.channels, (size_t)spec->kernel,
                                                              (size_t)spec->stride, (size_t)shape->height,
                                                              (size_t)shape->width, (size_t)spec->out,
                                                              !forward_only));
      break;
    }
    case CFG_LAYER_MAXPOOL:
      n_indices = forward_only ? cfg__max(n_indices, out_floats) : n_indices + out_floats;
      break;
    case CFG_LAYER_DROPOUT:
      if (!forward_only) n_masks += out_floats;
      break;
    default:
      break;
    }
    if (spec->kind != CFG_LAYER_FLATTEN || l == 0) n_activations += out_floats;
    in = *shape;
  }
  for (int g = 0; g < config->n_grow; g++) {
    const cfg_grow_t *spec = &config->grow[g];
    if (spec->after_layer < 0 || spec->after_layer >= config->n_layers) return -EINVAL;
    const size_t D = (size_t)cfg_shape_size(&config->layers[spec->after_layer].shape);
    const size_t H = spec->hidden > 0 ? (size_t)spec->hidden : D;
    n_params += 2 * H * D + H + D;
    n_activations += batch * D + batch * H;
  }
  out->n_params = n_params;
  out->n_optim_state =
      forward_only ? 0 : config->optimizer.kind == CFG_OPTIMIZER_ADAM ? 2 * n_params : n_params;
  out->n_activations = n_activations;
  out->n_workspace = n_scratch + (n_panels ? 15 + n_panels : 0) + n_masks;
  out->n_indices = n_indices;
  return 0;
}

/* The floats of the teacher layers a run's pairs read, each distinct layer once (worker/
 * teacher.c's slots), and each pair's teacher shape in `shapes`. */
static size_t cfg__teacher_features(const cfg_experiment_t *config, const cfg_experiment_t *teacher,
                                    cfg_shape_t shapes[CFG_MAX_FEATURES]) {
  size_t floats = 0;
  int seen[CFG_MAX_FEATURES];
  for (int i = 0; i < config->n_features; i++) {
    const int layer = cfg_layer_index(teacher, config->features[i].teacher);
    seen[i] = layer;
    shapes[i] = layer >= 0 ? teacher->layers[layer].shape : config->layers[config->features[i].student_layer].shape;
    int again = 0;
    for (int j = 0; j < i; j++) again |= seen[j] == layer;
    if (!again && layer >= 0) floats += (size_t)cfg_shape_size(&shapes[i]);
  }
  return floats;
}

/* The distillation pieces as worker/distill.c lays them out (distill_feature_layout_maps,
 * disc_layout), in floats: params (×4 below: params, grads, Adam m and v) and scratch. */
static void cfg__distill_floats(const cfg_experiment_t *config, const cfg_shape_t teacher_shapes[],
                                size_t *params, size_t *scratch) {
  const size_t MB = (size_t)config->batch_size;
  size_t p = 0, s = 0, judged = 0;
  for (int i = 0; i < config->n_features; i++) {
    const cfg_feature_t *f = &config->features[i];
    const cfg_shape_t *st = &config->layers[f->student_layer].shape, *te = &teacher_shapes[i];
    const size_t h = (size_t)(st->height < te->height ? st->height : te->height);
    const size_t w = (size_t)(st->width < te->width ? st->width : te->width);
    const size_t D = (size_t)te->channels * h * w;
    p += (size_t)te->channels * (size_t)st->channels + (size_t)te->channels;
    if (f->gate != CFG_GATE_NONE) p += D + 1;
    s += 2 * MB * D + MB;
    if (f->normalize) s += 3 * MB * D + 2 * MB;
    if (f->gate != CFG_GATE_NONE) s += 4 * MB;
    if ((size_t)st->height != h || (size_t)st->width != w) s += 2 * MB * (size_t)st->channels * h * w;
    if ((size_t)te->height != h || (size_t)te->width != w) s += MB * D;
    if (h * w == 1) s += cfg_linear_panel_floats((size_t)st->channels, (size_t)te->channels, MB);
    if (i == config->adversarial.feature) judged = D;
  }
  if (config->adversarial.enabled) {
    const size_t H = (size_t)config->adversarial.hidden;
    p += H * judged + 2 * H + 1;
    s += 8 * MB * H + 4 * MB;
  }
  *params = p;
  *scratch = s;
}

int cfg_memory_estimate(const cfg_experiment_t *config, const cfg_experiment_t *teacher,
                        size_t teacher_cache_budget, cfg_memory_t *out) {
  memset(out, 0, sizeof *out);
  const size_t F = sizeof(float), B = (size_t)config->batch_size;
  const int has_teacher = config->teacher.kind != CFG_TEACHER_NONE;
  if (!has_teacher) teacher = NULL;
  out->teacher_counted = !has_teacher || teacher != NULL;

  /* The dataset as worker/data.c holds it: every split as float images and int labels, and
   * while loading the raw uint8 pool and test set and the shuffle order beside them. The raw
   * part is freed before the model is built: the baseline MLP's peak is there. */
  size_t pool = CFG_FASHION_TRAIN, test = CFG_FASHION_TEST;
  if (config->dataset.kind != CFG_DATASET_FASHION_MNIST) {
    pool = (size_t)config->dataset.train_size;
    test = (size_t)config->dataset.test_size;
  }
  const size_t val = (size_t)config->dataset.val_size;
  size_t train = pool > val ? pool - val : 0;
  if (config->dataset.train_limit > 0 && (size_t)config->dataset.train_limit < train)
    train = (size_t)config->dataset.train_limit;
  const size_t inputs = (size_t)cfg_inputs(config), classes = (size_t)cfg_classes(config);
  /* A registered dataset's files are read whole (a gzipped one into a buffer grown by
   * doubling) and decoded beside them: twice its values' bytes, 4 a value for float32 data. */
  const size_t raw_bytes = config->dataset.kind != CFG_DATASET_REGISTERED ? 1
                           : config->dataset.source.float_values ? 2 * F : 2;
  out->dataset = (train + val + test) * (inputs * F + sizeof(int)) + train * sizeof(int) /* the trainer's order */;
  out->loading = (pool + test) * (inputs * raw_bytes + sizeof(int)) + pool * sizeof(int) /* the shuffle */;

  cfg_slabs_t student;
  int rc = cfg_model_slabs(config, config->batch_size, 0, &student);
  if (rc) return rc;
  /* The per-term gradients train.c keeps for grad_norm/<term> in a run with a teacher. */
  int terms = 0;
  if (config->grad_norm_every > 0 && has_teacher)
    terms = 1 + cfg_uses_distillation(config) + (cfg_uses_features(config) && config->n_features > 0) +
            (cfg_uses_adversarial(config) && config->adversarial.enabled);
  out->student = (2 * student.n_params + student.n_optim_state + (size_t)terms * (student.n_params + 1)) * F;
  /* The trainer's batch buffers (inputs, labels, indices, probabilities, predictions), which
   * evaluation reuses. */
  out->activations = (2 * student.n_activations + student.n_workspace) * F + student.n_indices * sizeof(int32_t) +
                     B * (inputs * F + 3 * sizeof(int) + classes * F);

  cfg_shape_t shapes[CFG_MAX_FEATURES];
  for (int i = 0; i < config->n_features; i++) shapes[i] = config->layers[config->features[i].student_layer].shape;
  if (teacher) {
    cfg_slabs_t slabs;
    rc = cfg_model_slabs(teacher, config->batch_size, 1, &slabs);
    if (rc) return rc;
    const size_t features = cfg__teacher_features(config, teacher, shapes);
    /* Its checkpoint is mapped (MAP_POPULATE: resident) while its params are read: the
     * params and the optimizer state it was saved with. */
    const size_t teacher_optim = teacher->optimizer.kind == CFG_OPTIMIZER_ADAM ? 2 : 1;
    out->teacher = (slabs.n_params + slabs.n_activations + slabs.n_workspace) * F + slabs.n_indices * sizeof(int32_t) +
                   B * (classes * F + sizeof(int)) + (1 + teacher_optim) * slabs.n_params * F;
    /* worker/train.c caches the training split (with the pairs' layers when a stage aligns
     * features) when the teacher is needed, then the test split's logits, each only if it
     * fits what is left of the budget. */
    const int needs = cfg_uses_distillation(config) || cfg_uses_features(config) || cfg_uses_adversarial(config);
    const int with_features = (cfg_uses_features(config) || cfg_uses_adversarial(config)) && config->n_features > 0;
    size_t used = 0;
    const size_t train_bytes = train * (classes + (with_features ? features : 0)) * F;
    const size_t test_bytes = test * classes * F;
    if (needs && train > 0 && train_bytes <= teacher_cache_budget) used += train_bytes;
    if (test > 0 && test_bytes <= teacher_cache_budget - used) used += test_bytes;
    out->teacher_cache = used;
    if (used > 0) out->teacher += B * (classes + features) * F; /* the gathered answers */
  }
  size_t distill_params = 0, distill_scratch = 0;
  if (has_teacher) {
    cfg__distill_floats(config, shapes, &distill_params, &distill_scratch);
    out->distill = (4 * distill_params + distill_scratch) * F + B * (2 * classes + 1) * F;
  }
  /* worker/checkpoint.c builds the whole file in one buffer before writing it (and a
   * resumed run maps the one it resumes from): the tensors of worker/train.c, and the meta. */
  out->checkpoint = (student.n_params + student.n_optim_state + 3 * distill_params) * F + ((size_t)64 << 10);
  out->overhead = CFG_MEMORY_OVERHEAD;
  const size_t rest = out->student + out->activations + out->teacher + out->teacher_cache + out->distill +
                      out->checkpoint;
  out->total = out->overhead + out->dataset + (rest > out->loading ? rest : out->loading);
  return 0;
}

const char *cfg_memory_describe(const cfg_memory_t *memory, const cfg_experiment_t *config, char *out,
                                size_t size) {
  const double GiB = 1024.0 * 1024.0 * 1024.0, MiB = 1024.0 * 1024.0;
  const int in_gib = (double)memory->total >= GiB;
  const double unit = in_gib ? GiB : MiB;
  const char *format = in_gib ? "%s%s %.1f" : "%s%s %.0f";
  struct {
    const char *name, *path;
    size_t bytes;
  } shares[] = {
      {"dataset", "dataset", memory->dataset},
      {"student", "model.layers", memory->student},
      {"activations", "batch_size", memory->activations},
      {"teacher", "teacher", memory->teacher},
      {"teacher cache", "teacher", memory->teacher_cache},
      {"distillation", "features", memory->distill},
      {"checkpoint", "model.layers", memory->checkpoint},
      {"loading", "dataset", 0},
  };
  /* The raw files while loading count only when they outweigh what comes after them. */
  const size_t rest = memory->student + memory->activations + memory->teacher + memory->teacher_cache +
                      memory->distill + memory->checkpoint;
  if (memory->loading > rest) shares[sizeof shares / sizeof shares[0] - 1].bytes = memory->loading;
  const char *path = "model.layers";
  size_t largest = 0, used = 0;
  int n = snprintf(out, size, "about %.1f %s (", (double)memory->total / unit, in_gib ? "GiB" : "MiB");
  used = n > 0 && (size_t)n < size ? (size_t)n : size;
  int first = 1;
  for (size_t i = 0; i < sizeof shares / sizeof shares[0]; i++) {
    if (shares[i].bytes == 0) continue;
    if (shares[i].bytes > largest) {
      largest = shares[i].bytes;
      path = shares[i].path;
    }
    n = snprintf(out + used, size - used, format, first ? "" : ", ", shares[i].name, (double)shares[i].bytes / unit);
    used = n > 0 && used + (size_t)n < size ? used + (size_t)n : size - 1;
    if (strcmp(shares[i].name, "activations") == 0) {
      n = snprintf(out + used, size - used, " for batch %d", config->batch_size);
      used = n > 0 && used + (size_t)n < size ? used + (size_t)n : size - 1;
    }
    first = 0;
  }
  snprintf(out + used, size - used, "%sprocess %.*f)%s", first ? "" : ", ", in_gib ? 1 : 0,
           (double)memory->overhead / unit, memory->teacher_counted ? "" : ", the teacher's own share not counted");
  return path;
}
