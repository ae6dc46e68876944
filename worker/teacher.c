/* teacher.c — loading a teacher from its checkpoint, asking it about batches, and caching
 * what it says about whole splits (see teacher.h). Everything that can be wrong with a
 * teacher is found in teacher_load, before the first step, and said with the checkpoint's
 * path; a cache that does not fit is not an error, only slower. */
#include "teacher.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "util.h"


/* The cache budget in bytes from MAPSAGE_TEACHER_CACHE_MB (MiB, a decimal ≥ 0; unset: the
 * default). Returns 0 or -EINVAL. */
static int teacher__cache_budget(size_t *bytes) {
  const char *text = getenv(TEACHER_CACHE_ENV);
  double mb = TEACHER_CACHE_DEFAULT_MB;
  if (text && text[0]) {
    char *end;
    mb = strtod(text, &end);
    if (*end != '\0' || !(mb >= 0.0) || mb > 1e9) return -EINVAL;
  }
  *bytes = (size_t)(mb * 1048576.0);
  return 0;
}

/* The slots: each distinct teacher layer the pairs read, in the order the pairs first name
 * them, and where each sits in a cached row. */
static void teacher__slots(teacher_t *teacher) {
  teacher->n_slots = 0;
  teacher->features_floats = 0;
  for (int i = 0; i < teacher->n_features; i++) {
    int s = 0;
    while (s < teacher->n_slots && teacher->slot_layer[s] != teacher->layers[i]) s++;
    if (s == teacher->n_slots) {
      teacher->slot_layer[s] = teacher->layers[i];
      teacher->slot_floats[s] = (size_t)teacher->model.layers[teacher->layers[i]].out;
      teacher->slot_offset[s] = teacher->features_floats;
      teacher->features_floats += teacher->slot_floats[s];
      teacher->n_slots++;
    }
    teacher->pair_slot[i] = s;
  }
}

/* "path: message" of a config error, or "message" when it has no path. */
static void teacher__config_error(const cfg_errors_t *errors, char *out, size_t size) {
  const cfg_error_t *first = &errors->items[0];
  snprintf(out, size, "%s%s%s", first->path, first->path[0] ? ": " : "", first->message);
}

/* Fills `params` (laid out as `config`'s network, `total` floats) from a safetensors file's
 * tensors: every one the layers need, of exactly their shape, F32, and no other. */
static int teacher__fill_from_safetensors(const safetensors_t *file, const char *path, const cfg_experiment_t *config,
                                          float *params, size_t total, char *error, size_t error_size) {
  model_tensor_t *tensors = malloc(MODEL_MAX_TENSORS * sizeof *tensors);
  if (!tensors) return util_error(error, error_size, -ENOMEM, "teacher %s: out of memory", path);
  size_t expected_total;
  int n = model_tensors(config, tensors, &expected_total), rc = 0;
  if (n < 0 || expected_total != total) {
    rc = util_error(error, error_size, -EINVAL, "teacher %s: its layers do not lay out (%zu parameters, %zu built)",
                    path, expected_total, total);
    goto done;
  }
  for (int i = 0; i < n && !rc; i++) {
    const model_tensor_t *want = &tensors[i];
    const safetensors_tensor_t *have = safetensors_find(file, want->name);
    char want_shape[96] = "", have_shape[96] = "";
    for (int d = 0; d < want->n_dims; d++)
      snprintf(want_shape + strlen(want_shape), sizeof want_shape - strlen(want_shape), "%s%lld", d ? ", " : "",
               (long long)want->shape[d]);
    if (!have) {
      rc = util_error(error, error_size, -EINVAL, "teacher %s: no tensor \"%s\" (teacher.model's layers need it, "
                      "shape [%s])", path, want->name, want_shape);
      break;
    }
    for (int d = 0; d < have->n_dims; d++)
      snprintf(have_shape + strlen(have_shape), sizeof have_shape - strlen(have_shape), "%s%lld", d ? ", " : "",
               (long long)have->shape[d]);
    int same = have->n_dims == want->n_dims;
    for (int d = 0; same && d < want->n_dims; d++) same = have->shape[d] == want->shape[d];
    if (!same)
      rc = util_error(error, error_size, -EINVAL, "teacher %s: tensor \"%s\" has shape [%s], teacher.model's layers "
                      "need [%s]", path, want->name, have_shape, want_shape);
    else if (strcmp(have->dtype, "F32") != 0)
      rc = util_error(error, error_size, -EINVAL, "teacher %s: tensor \"%s\" is %s, not F32 (save the model in "
                      "float32)", path, want->name, have->dtype);
    else
      memcpy(params + want->offset, have->data, want->count * sizeof(float));
  }
  for (int i = 0; i < file->n && !rc; i++) {
    int used = 0;
    for (int k = 0; k < n && !used; k++) used = strcmp(file->tensors[i].name, tensors[k].name) == 0;
    if (!used)
      rc = util_error(error, error_size, -EINVAL, "teacher %s: tensor \"%s\" belongs to no layer of teacher.model "
                      "(its layers' tensors are named <layer>.weight and <layer>.bias)", path, file->tensors[i].name);
  }
done:
  free(tensors);
  return rc;
}

/* A teacher trained elsewhere: its layers from student->teacher, its weights from the file. */
static int teacher__load_safetensors(teacher_t *teacher, const cfg_experiment_t *student, int max_batch,
                                     char *error, size_t error_size) {
  const char *path = student->teacher.checkpoint;
  char *data = NULL;
  size_t length;
  safetensors_t file = {0};
  int rc = util_read_file(path, (size_t)4 << 30, &data, &length);
  if (rc) return util_error(error, error_size, rc, "teacher %s: cannot read: %s", path, strerror(-rc));
  rc = safetensors_parse((const uint8_t *)data, length, path, &file, error, error_size);
  if (rc) goto done;
  cfg_safetensors_teacher(student, &teacher->config);
  rc = nn_model_create_inference(&teacher->model, &teacher->config, max_batch);
  if (rc) {
    rc = util_error(error, error_size, rc, "teacher %s: cannot build its network: %s", path, strerror(-rc));
    goto done;
  }
  /* Its convolutions on the worker's threads (OpenBLAS's count: --threads). */
  rc = nn_model_set_threads(&teacher->model, openblas_get_num_threads(), error, error_size);
  if (rc) {
    nn_model_free(&teacher->model);
    goto done;
  }
  rc = teacher__fill_from_safetensors(&file, path, &teacher->config, teacher->model.params, teacher->model.n_params,
                                      error, error_size);
  if (rc) nn_model_free(&teacher->model);
done:
  safetensors_free(&file);
  free(data);
  return rc;
}

int teacher_load(teacher_t *teacher, const cfg_experiment_t *student, int max_batch, char *error,
                 size_t error_size) {
  memset(teacher, 0, sizeof *teacher);
  const char *path = student->teacher.checkpoint;
  if (student->teacher.kind == CFG_TEACHER_NONE)
    return util_error(error, error_size, -EINVAL, "the config names no teacher");
  if (path[0] == '\0')
    return util_error(error, error_size, -EINVAL,
                          "teacher: experiment %lld's checkpoint was not given (the daemon fills "
                          "it in; by hand, use {\"checkpoint\": \"path\"})",
                          (long long)student->teacher.experiment);
  snprintf(teacher->path, sizeof teacher->path, "%s", path);

  ckpt_t ckpt = {0};
  char reason[768];
  cfg_errors_t *errors = NULL;
  int rc;
  if (student->teacher.kind == CFG_TEACHER_SAFETENSORS) {
    rc = teacher__load_safetensors(teacher, student, max_batch, error, error_size);
    if (rc) goto fail;
    goto loaded;
  }
  rc = ckpt_open(path, &ckpt, reason, sizeof reason);
  if (rc) return util_error(error, error_size, rc, "teacher checkpoint %s", reason);

  errors = calloc(1, sizeof *errors);
  if (!errors) {
    rc = util_error(error, error_size, -ENOMEM, "teacher %s: out of memory", path);
    goto fail;
  }
  const json_t *config = json_object_get(ckpt_meta(&ckpt), "config");
  if (!json_is_object(config)) {
    rc = util_error(error, error_size, -EINVAL,
                        "teacher %s: its meta has no \"config\": not a MapSage run's checkpoint", path);
    goto fail;
  }
  if (cfg_from_json(config, &teacher->config, errors) != 0) {
    teacher__config_error(errors, reason, sizeof reason);
    rc = util_error(error, error_size, -EINVAL, "teacher %s: its config is not valid: %s", path,
                        reason);
    goto fail;
  }
  memset(errors, 0, sizeof *errors);
  if (cfg_check_teacher(student, &teacher->config, errors) != 0) {
    teacher__config_error(errors, reason, sizeof reason);
    rc = util_error(error, error_size, -EINVAL, "teacher %s does not fit this run: %s", path,
                        reason);
    goto fail;
  }
  rc = nn_model_create_inference(&teacher->model, &teacher->config, max_batch);
  if (rc) {
    rc = util_error(error, error_size, rc, "teacher %s: cannot build its network: %s", path,
                        strerror(-rc));
    goto fail;
  }
  /* Its convolutions on the worker's threads (OpenBLAS's count: --threads). */
  rc = nn_model_set_threads(&teacher->model, openblas_get_num_threads(), error, error_size);
  if (rc) {
    nn_model_free(&teacher->model);
    goto fail;
  }
  /* Blocks that never joined still have W2 = 0 and change nothing: joining them all builds
   * the network the teacher ended with, whichever epoch the checkpoint was taken at. */
  nn_model_grow(&teacher->model, cfg_total_epochs(&teacher->config));
  rc = ckpt_read_f32(&ckpt, "params", teacher->model.params, teacher->model.n_params, reason,
                     sizeof reason);
  if (rc) {
    rc = util_error(error, error_size, rc, "teacher checkpoint %s", reason);
    goto fail_model;
  }
loaded:
  nn_model_pack_weights(&teacher->model); /* its weights are final now */
  teacher->n_features = student->n_features;
  for (int i = 0; i < student->n_features; i++) {
    teacher->layers[i] = cfg_layer_index(&teacher->config, student->features[i].teacher);
    /* The pairs and the cache read these outputs: the forward must store them. */
    if (teacher->layers[i] >= 0) nn_model_keep_output(&teacher->model, teacher->layers[i]);
  }
  if (teacher__cache_budget(&teacher->cache_budget) != 0) {
    rc = util_error(error, error_size, -EINVAL, "%s: expected a size in MiB (a number ≥ 0), not \"%s\"",
                        TEACHER_CACHE_ENV, getenv(TEACHER_CACHE_ENV));
    goto fail_model;
  }
  teacher__slots(teacher);
  teacher->probs = malloc((size_t)max_batch * teacher->model.classes * sizeof *teacher->probs);
  teacher->predictions = malloc((size_t)max_batch * sizeof *teacher->predictions);
  if (!teacher->probs || !teacher->predictions) {
    rc = util_error(error, error_size, -ENOMEM, "teacher %s: out of memory", path);
    goto fail_model;
  }
  free(errors);
  ckpt_close(&ckpt);
  return 0;

fail_model:
  free(teacher->probs);
  free(teacher->predictions);
  free(teacher->gathered);
  nn_model_free(&teacher->model);
fail:
  free(errors);
  ckpt_close(&ckpt);
  memset(teacher, 0, sizeof *teacher);
  return rc;
}

void teacher_free(teacher_t *teacher) {
  nn_model_free(&teacher->model);
  free(teacher->probs);
  free(teacher->predictions);
  free(teacher->gathered);
  for (int c = 0; c < teacher->n_caches; c++) free(teacher->caches[c].rows);
  memset(teacher, 0, sizeof *teacher);
}

// ---------------------------------------------------------------------------------------
// the cache

static const teacher_cache_t *teacher__cache_of(const teacher_t *teacher, const data_split_t *split) {
  for (int c = 0; c < teacher->n_caches; c++) {
    const teacher_cache_t *cache = &teacher->caches[c];
    if (cache->split == split && cache->images == split->images && cache->n == split->n) return cache;
  }
  return NULL;
}

int teacher_cache_split(teacher_t *teacher, const data_split_t *split, int with_features,
                        teacher_cache_cost_t *cost) {
  with_features = with_features && teacher->n_slots > 0;
  const size_t row = teacher->model.classes + (with_features ? teacher->features_floats : 0);
  memset(cost, 0, sizeof *cost);
  cost->n = split->n;
  cost->logits = teacher->model.classes;
  cost->features = row - teacher->model.classes;
  cost->bytes = (size_t)split->n * row * sizeof(float);
  const teacher_cache_t *cached = teacher__cache_of(teacher, split);
  if (cached) return cached->features || !with_features ? 0 : -EEXIST;
  if (teacher->n_caches == TEACHER_CACHE_SPLITS) return -ENOSPC;
  if (cost->bytes > teacher->cache_budget - teacher->cache_bytes) return -E2BIG;
  if (!teacher->gathered) {
    /* What teacher_outputs answers from a cache, allocated with the first one: a run without
     * a cache does not carry it. */
    teacher->gathered = malloc((size_t)teacher->model.max_batch *
                               (teacher->model.classes + teacher->features_floats) * sizeof *teacher->gathered);
    if (!teacher->gathered) return -ENOMEM;
  }
  float *rows = malloc(cost->bytes > 0 ? cost->bytes : 1);
  if (!rows) return -ENOMEM;

  /* In order, in batches of max_batch: the batches of teacher_evaluate, and of the trainer's
   * evaluations when the teacher is loaded for the run's batch size (as the worker does), so
   * what the cache says about the test split is exactly what they would compute. */
  const double started = util_monotonic();
  nn_model_t *model = &teacher->model;
  for (int start = 0; start < split->n; start += model->max_batch) {
    const int B = split->n - start < model->max_batch ? split->n - start : model->max_batch;
    const float *logits = nn_forward(model, split->images + (size_t)start * teacher->model.inputs, B, 0);
    for (int b = 0; b < B; b++) {
      float *r = rows + (size_t)(start + b) * row;
      memcpy(r, logits + (size_t)b * teacher->model.classes, teacher->model.classes * sizeof *r);
      if (!with_features) continue;
      for (int s = 0; s < teacher->n_slots; s++) {
        const size_t size = teacher->slot_floats[s];
        memcpy(r + teacher->model.classes + teacher->slot_offset[s],
               nn_layer_output(model, teacher->slot_layer[s]) + (size_t)b * size, size * sizeof *r);
      }
    }
  }
  cost->seconds = util_monotonic() - started;
  teacher->caches[teacher->n_caches++] = (teacher_cache_t){
      .split = split, .images = split->images, .n = split->n, .features = with_features,
      .row = row, .rows = rows};
  teacher->cache_bytes += cost->bytes;
  return 0;
}

// ---------------------------------------------------------------------------------------
// outputs

/* B rows of the cache into teacher->gathered: logits, then each slot, block by block. */
static void teacher__gather(teacher_t *teacher, const teacher_cache_t *cache, const int *indices,
                            int B, teacher_outputs_t *out) {
  const size_t MB = (size_t)teacher->model.max_batch;
  float *logits = teacher->gathered;
  for (int b = 0; b < B; b++) {
    assert(indices[b] >= 0 && indices[b] < cache->n);
    const float *r = cache->rows + (size_t)indices[b] * cache->row;
    memcpy(logits + (size_t)b * teacher->model.classes, r, teacher->model.classes * sizeof *logits);
    if (!cache->features) continue;
    for (int s = 0; s < teacher->n_slots; s++) {
      const size_t size = teacher->slot_floats[s];
      float *block = teacher->gathered + MB * (teacher->model.classes + teacher->slot_offset[s]);
      memcpy(block + (size_t)b * size, r + teacher->model.classes + teacher->slot_offset[s], size * sizeof *block);
    }
  }
  out->logits = logits;
  for (int i = 0; i < teacher->n_features; i++)
    out->features[i] = cache->features
                           ? teacher->gathered + MB * (teacher->model.classes + teacher->slot_offset[teacher->pair_slot[i]])
                           : NULL;
}

void teacher_outputs(teacher_t *teacher, const data_split_t *split, const int *indices,
                     const float *inputs, int B, teacher_outputs_t *out) {
  assert(B >= 1 && B <= teacher->model.max_batch);
  out->B = B;
  const teacher_cache_t *cache = teacher__cache_of(teacher, split);
  if (cache) {
#ifndef NDEBUG
    /* The cache answers for the split's own images: no augmentation may have changed them. */
    for (int b = 0; b < B; b++)
      assert(memcmp(inputs + (size_t)b * teacher->model.inputs, split->images + (size_t)indices[b] * teacher->model.inputs,
                    teacher->model.inputs * sizeof *inputs) == 0);
#endif
    teacher__gather(teacher, cache, indices, B, out);
    return;
  }
  out->logits = nn_forward(&teacher->model, inputs, B, 0);
  for (int i = 0; i < teacher->n_features; i++)
    out->features[i] = nn_layer_output(&teacher->model, teacher->layers[i]);
}

int teacher_evaluate(teacher_t *teacher, const data_split_t *split) {
  nn_model_t *model = &teacher->model;
  double total = 0.0;
  int64_t correct = 0;
  for (int start = 0; start < split->n; start += model->max_batch) {
    int B = split->n - start < model->max_batch ? split->n - start : model->max_batch;
    const int *labels = split->labels + start;
    const float *logits = nn_forward(model, split->images + (size_t)start * teacher->model.inputs, B, 0);
    total += (double)loss_crossentropy_forward(teacher->probs, teacher->predictions, logits, labels,
                                               B, teacher->model.classes) * B;
    for (int b = 0; b < B; b++) correct += teacher->predictions[b] == labels[b];
  }
  int n = split->n > 0 ? split->n : 1;
  teacher->test_accuracy = (double)correct / n;
  teacher->test_loss = total / n;
  teacher->evaluated = isfinite(teacher->test_loss);
  return teacher->evaluated ? 0 : -ERANGE;
}

size_t teacher_params(const teacher_t *teacher) { return nn_model_active_params(&teacher->model); }
