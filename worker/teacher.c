/* teacher.c — loading a teacher from its checkpoint and asking it about batches (see
 * teacher.h). Everything that can be wrong with a teacher is found in teacher_load, before
 * the first step, and said with the checkpoint's path. */
#include "teacher.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"

static int teacher__error(char *error, size_t error_size, int code, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static int teacher__error(char *error, size_t error_size, int code, const char *format, ...) {
  if (error && error_size > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
  }
  return code;
}

/* "path: message" of a config error, or "message" when it has no path. */
static void teacher__config_error(const cfg_errors_t *errors, char *out, size_t size) {
  const cfg_error_t *first = &errors->items[0];
  snprintf(out, size, "%s%s%s", first->path, first->path[0] ? ": " : "", first->message);
}

int teacher_load(teacher_t *teacher, const cfg_experiment_t *student, int max_batch, char *error,
                 size_t error_size) {
  memset(teacher, 0, sizeof *teacher);
  const char *path = student->teacher.checkpoint;
  if (student->teacher.kind == CFG_TEACHER_NONE)
    return teacher__error(error, error_size, -EINVAL, "the config names no teacher");
  if (path[0] == '\0')
    return teacher__error(error, error_size, -EINVAL,
                          "teacher: experiment %lld's checkpoint was not given (the daemon fills "
                          "it in; by hand, use {\"checkpoint\": \"path\"})",
                          (long long)student->teacher.experiment);
  snprintf(teacher->path, sizeof teacher->path, "%s", path);

  ckpt_t ckpt;
  char reason[768];
  int rc = ckpt_open(path, &ckpt, reason, sizeof reason);
  if (rc) return teacher__error(error, error_size, rc, "teacher checkpoint %s", reason);

  cfg_errors_t *errors = calloc(1, sizeof *errors);
  if (!errors) {
    rc = teacher__error(error, error_size, -ENOMEM, "teacher %s: out of memory", path);
    goto fail;
  }
  const json_t *config = json_object_get(ckpt_meta(&ckpt), "config");
  if (!json_is_object(config)) {
    rc = teacher__error(error, error_size, -EINVAL,
                        "teacher %s: its meta has no \"config\": not a MapSage run's checkpoint", path);
    goto fail;
  }
  if (cfg_from_json(config, &teacher->config, errors) != 0) {
    teacher__config_error(errors, reason, sizeof reason);
    rc = teacher__error(error, error_size, -EINVAL, "teacher %s: its config is not valid: %s", path,
                        reason);
    goto fail;
  }
  memset(errors, 0, sizeof *errors);
  if (cfg_check_teacher(student, &teacher->config, errors) != 0) {
    teacher__config_error(errors, reason, sizeof reason);
    rc = teacher__error(error, error_size, -EINVAL, "teacher %s does not fit this run: %s", path,
                        reason);
    goto fail;
  }
  rc = nn_model_create_inference(&teacher->model, &teacher->config, max_batch);
  if (rc) {
    rc = teacher__error(error, error_size, rc, "teacher %s: cannot build its network: %s", path,
                        strerror(-rc));
    goto fail;
  }
  /* Blocks that never joined still have W2 = 0 and change nothing: joining them all builds
   * the network the teacher ended with, whichever epoch the checkpoint was taken at. */
  nn_model_grow(&teacher->model, cfg_total_epochs(&teacher->config));
  rc = ckpt_read_f32(&ckpt, "params", teacher->model.params, teacher->model.n_params, reason,
                     sizeof reason);
  if (rc) {
    rc = teacher__error(error, error_size, rc, "teacher checkpoint %s", reason);
    goto fail_model;
  }
  teacher->n_features = student->n_features;
  for (int i = 0; i < student->n_features; i++)
    teacher->layers[i] = cfg_layer_index(&teacher->config, student->features[i].teacher);
  teacher->probs = malloc((size_t)max_batch * CFG_CLASSES * sizeof *teacher->probs);
  teacher->predictions = malloc((size_t)max_batch * sizeof *teacher->predictions);
  if (!teacher->probs || !teacher->predictions) {
    rc = teacher__error(error, error_size, -ENOMEM, "teacher %s: out of memory", path);
    goto fail_model;
  }
  free(errors);
  ckpt_close(&ckpt);
  return 0;

fail_model:
  free(teacher->probs);
  free(teacher->predictions);
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
  memset(teacher, 0, sizeof *teacher);
}

void teacher_outputs(teacher_t *teacher, const data_split_t *split, const int *indices,
                     const float *inputs, int B, teacher_outputs_t *out) {
  /* The cache will go here: look (split, indices) up, run the network on the misses. */
  (void)split;
  (void)indices;
  out->B = B;
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
    const float *logits = nn_forward(model, split->images + (size_t)start * CFG_INPUTS, B, 0);
    total += (double)loss_crossentropy_forward(teacher->probs, teacher->predictions, logits, labels,
                                               B, CFG_CLASSES) * B;
    for (int b = 0; b < B; b++) correct += teacher->predictions[b] == labels[b];
  }
  int n = split->n > 0 ? split->n : 1;
  teacher->test_accuracy = (double)correct / n;
  teacher->test_loss = total / n;
  teacher->evaluated = isfinite(teacher->test_loss);
  return teacher->evaluated ? 0 : -ERANGE;
}

size_t teacher_params(const teacher_t *teacher) { return nn_model_active_params(&teacher->model); }
