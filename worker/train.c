/* train.c — the training loop: stages → epochs → mini-batches, with an event per step and
 * per evaluation.
 *
 * A step: gather the batch's examples by the epoch's shuffled order, forward, task loss,
 * zero the gradients, accumulate each loss's weighted gradient into the logits' gradient
 * (only the task loss for now; distillation terms will add theirs beside it), backward,
 * optimizer update at the scheduled learning rate (stage lr × the schedule's factor at this
 * step's fractional epoch), then report, with every layer's gradient norm on step 1 and
 * every grad_norm_every steps. Every buffer is allocated before the first step. */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "rng.h"
#include "util.h"

static int train__error(char *error, size_t error_size, int code, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static int train__error(char *error, size_t error_size, int code, const char *format, ...) {
  if (error && error_size > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
  }
  return code;
}

int train_evaluate(nn_model_t *model, const data_split_t *split, float *probs, int *predictions,
                   double *accuracy, double *loss) {
  double total = 0.0;
  int64_t correct = 0;
  for (int start = 0; start < split->n; start += model->max_batch) {
    int B = split->n - start < model->max_batch ? split->n - start : model->max_batch;
    const int *labels = split->labels + start;
    const float *logits = nn_forward(model, split->images + (size_t)start * CFG_INPUTS, B, 0);
    total += (double)loss_crossentropy_forward(probs, predictions, logits, labels, B, CFG_CLASSES) * B;
    for (int b = 0; b < B; b++) correct += predictions[b] == labels[b];
  }
  int n = split->n > 0 ? split->n : 1;
  *accuracy = (double)correct / n;
  *loss = total / n;
  return isfinite(*loss) ? 0 : -ERANGE;
}

/* grad_norm/<layer> for every layer with parameters that takes part (the config's layers
 * and the blocks that have joined), named as the config names them, and grad_norm/total;
 * into `values`. Returns the total, which is not finite when the gradients blew up. One
 * pass over the gradient slab: cheap next to the step that filled it. */
static double train__add_grad_norms(json_t *values, const nn_model_t *model) {
  double total = 0.0;
  char name[sizeof "grad_norm/" + CFG_NAME_MAX];
  for (int l = 0; l < model->n_layers + model->n_blocks; l++) {
    const nn_layer_t *layer = &model->layers[l];
    if (nn_layer_param_count(layer) == 0 || !nn_layer_active(layer)) continue;
    double norm = nn_layer_grad_norm(model, l);
    total += norm * norm;
    snprintf(name, sizeof name, "grad_norm/%s", layer->name);
    json_object_set_new(values, name, json_real(norm));
  }
  total = sqrt(total);
  json_object_set_new(values, "grad_norm/total", json_real(total));
  return total;
}

/* {"accuracy": …, "loss": …} as one eval event. */
static int train__write_eval(FILE *events, int64_t step, int epoch, int stage, ev_split_t split,
                             double accuracy, double loss, char *error, size_t error_size) {
  json_t *values = json_pack("{s:f, s:f}", "accuracy", accuracy, "loss", loss);
  if (ev_write_eval(events, step, epoch, stage, split, values) == 0) return 0;
  return train__error(error, error_size, -EIO, "cannot write the %s eval event of epoch %d",
                      ev_split_name(split), epoch);
}

int train_run(nn_model_t *model, const cfg_experiment_t *config, const data_set_t *data,
              const train_options_t *options, train_summary_t *summary, char *error,
              size_t error_size) {
  const data_split_t *train = &data->train;
  const int batch_size = config->batch_size;
  float *inputs = NULL, *probs = NULL;
  int *labels = NULL, *predictions = NULL, *order = NULL;
  int rc = 0;

  memset(summary, 0, sizeof *summary);
  if (batch_size < 1 || batch_size > model->max_batch)
    return train__error(error, error_size, -EINVAL,
                        "batch_size %d does not fit the model's buffers (%d examples)", batch_size,
                        model->max_batch);
  if (train->n < 1)
    return train__error(error, error_size, -EINVAL, "the training set is empty");

  inputs = malloc((size_t)batch_size * CFG_INPUTS * sizeof *inputs);
  labels = malloc((size_t)batch_size * sizeof *labels);
  probs = malloc((size_t)model->max_batch * CFG_CLASSES * sizeof *probs);
  predictions = malloc((size_t)model->max_batch * sizeof *predictions);
  order = malloc((size_t)train->n * sizeof *order);
  if (!inputs || !labels || !probs || !predictions || !order) {
    rc = train__error(error, error_size, -ENOMEM, "out of memory for the training buffers");
    goto fail;
  }

  const double started = util_monotonic();
  const int total_epochs = cfg_total_epochs(config);
  double step_seconds = 0.0; /* time inside training steps only, for examples_per_s */
  int64_t examples = 0, step = 0;
  int epoch = 0;             /* 1-based once the first epoch starts */

  for (int s = 0; s < config->n_stages; s++) {
    const cfg_stage_t *stage = &config->stages[s];
    const float task_weight = (float)stage->task_weight;

    for (int e = 0; e < stage->epochs; e++) {
      epoch++;
      const double epoch_started = util_monotonic();
      /* Each epoch's order depends only on (seed, epoch), not on the epochs before it, so a
       * run resumed from a checkpoint will see the same batches. */
      for (int i = 0; i < train->n; i++) order[i] = i;
      rng_t rng;
      rng_seed(&rng, config->seed, RNG_STREAM_SHUFFLE, (uint64_t)epoch);
      rng_shuffle(&rng, order, train->n);

      double epoch_loss = 0.0;
      int64_t epoch_correct = 0;
      for (int start = 0; start < train->n; start += batch_size) {
        if (options->stop && *options->stop) {
          summary->stopped = 1;
          goto done;
        }
        const double step_started = util_monotonic();
        const int B = train->n - start < batch_size ? train->n - start : batch_size;
        for (int b = 0; b < B; b++) {
          int source = order[start + b];
          memcpy(inputs + (size_t)b * CFG_INPUTS, train->images + (size_t)source * CFG_INPUTS,
                 CFG_INPUTS * sizeof *inputs);
          labels[b] = train->labels[source];
        }

        const float *logits = nn_forward(model, inputs, B, 1);
        float task = loss_crossentropy_forward(probs, predictions, logits, labels, B, CFG_CLASSES);
        if (!isfinite(task)) {
          rc = train__error(error, error_size, -ERANGE,
                            "loss/task is not finite at step %lld (epoch %d): the run diverged; "
                            "try a lower lr",
                            (long long)step + 1, epoch);
          goto fail;
        }
        nn_zero_grad(model);
        loss_crossentropy_backward(nn_dlogits(model), probs, labels, task_weight, B, CFG_CLASSES);
        nn_backward(model, inputs, B);
        /* The schedule at this step's place in the run: the 0-based epoch plus the fraction
         * of it done before this batch (so a warm-up starts from 0 at step 1). */
        const double lr = stage->lr * cfg_lr_factor_at(config, (epoch - 1) + (double)start / train->n);
        nn_optimizer_step(model, (float)lr);
        step++;
        const double elapsed = util_monotonic() - step_started;
        step_seconds += elapsed;
        examples += B;

        epoch_loss += (double)task * B;
        for (int b = 0; b < B; b++) epoch_correct += predictions[b] == labels[b];

        double total = (double)task_weight * task;
        json_t *values = json_pack("{s:f, s:f, s:f, s:f, s:f}", "loss/total", total, "loss/task",
                                   (double)task, "weighted/task", total, "lr", lr,
                                   "examples_per_s", elapsed > 0 ? B / elapsed : 0.0);
        /* Per-layer gradient norms on step 1 and every grad_norm_every steps. The optimizer
         * step reads the gradients without changing them, so they are still this step's. */
        if ((step == 1 || (config->grad_norm_every > 0 && step % config->grad_norm_every == 0)) &&
            !isfinite(train__add_grad_norms(values, model))) {
          json_decref(values);
          rc = train__error(error, error_size, -ERANGE,
                            "the gradient is not finite at step %lld (epoch %d): the run "
                            "diverged; try a lower lr", (long long)step, epoch);
          goto fail;
        }
        if (ev_write_metric(options->events, step, epoch, s, values) != 0) {
          rc = train__error(error, error_size, -EIO, "cannot write the metric event of step %lld",
                            (long long)step);
          goto fail;
        }
      }

      /* After the epoch: train (running figures of its batches), val, test — in that order. */
      double train_accuracy = (double)epoch_correct / train->n, train_loss = epoch_loss / train->n;
      double val_accuracy = 0.0, val_loss = 0.0, test_accuracy, test_loss;
      rc = train__write_eval(options->events, step, epoch, s, EV_SPLIT_TRAIN, train_accuracy,
                             train_loss, error, error_size);
      if (rc) goto fail;
      if (data->val.n > 0) {
        if (train_evaluate(model, &data->val, probs, predictions, &val_accuracy, &val_loss) != 0) {
          rc = train__error(error, error_size, -ERANGE, "val loss is not finite after epoch %d: "
                            "the run diverged; try a lower lr", epoch);
          goto fail;
        }
        rc = train__write_eval(options->events, step, epoch, s, EV_SPLIT_VAL, val_accuracy,
                               val_loss, error, error_size);
        if (rc) goto fail;
        if (summary->best_val_epoch == 0 || val_accuracy > summary->best_val_accuracy) {
          summary->best_val_accuracy = val_accuracy;
          summary->best_val_epoch = epoch;
        }
      }
      if (train_evaluate(model, &data->test, probs, predictions, &test_accuracy, &test_loss) != 0) {
        rc = train__error(error, error_size, -ERANGE, "test loss is not finite after epoch %d: "
                          "the run diverged; try a lower lr", epoch);
        goto fail;
      }
      rc = train__write_eval(options->events, step, epoch, s, EV_SPLIT_TEST, test_accuracy,
                             test_loss, error, error_size);
      if (rc) goto fail;

      summary->evaluated = 1;
      summary->epochs = epoch;
      summary->final_train_loss = train_loss;
      summary->final_train_accuracy = train_accuracy;
      summary->final_test_loss = test_loss;
      summary->final_test_accuracy = test_accuracy;
      if (options->log) {
        char val_text[64] = "";
        if (data->val.n > 0)
          snprintf(val_text, sizeof val_text, " | val loss %.4f acc %.4f", val_loss, val_accuracy);
        fprintf(options->log,
                "epoch %d/%d (stage %d %s): train loss %.4f acc %.4f%s | test loss %.4f acc %.4f"
                " | %.2f s, %.0f examples/s\n",
                epoch, total_epochs, s, stage->name, train_loss, train_accuracy, val_text, test_loss,
                test_accuracy, util_monotonic() - epoch_started,
                step_seconds > 0 ? examples / step_seconds : 0.0);
        fflush(options->log);
      }
    }
  }

done:
  summary->steps = step;
  summary->seconds = util_monotonic() - started;
  summary->examples_per_s = step_seconds > 0 ? examples / step_seconds : 0.0;
fail: /* rc is 0 when coming from done: success and failure share the cleanup */
  free(inputs);
  free(labels);
  free(probs);
  free(predictions);
  free(order);
  return rc;
}

json_t *train_summary_to_json(const train_summary_t *summary) {
  json_t *object = json_pack("{s:i, s:I, s:f, s:f}", "epochs", summary->epochs, "steps",
                             (json_int_t)summary->steps, "seconds", summary->seconds,
                             "examples_per_s", summary->examples_per_s);
  if (!object) return NULL;
  if (summary->evaluated) {
    json_object_set_new(object, "final_test_accuracy", json_real(summary->final_test_accuracy));
    json_object_set_new(object, "final_test_loss", json_real(summary->final_test_loss));
    json_object_set_new(object, "final_train_loss", json_real(summary->final_train_loss));
    json_object_set_new(object, "final_train_accuracy", json_real(summary->final_train_accuracy));
  }
  if (summary->best_val_epoch > 0) {
    json_object_set_new(object, "best_val_accuracy", json_real(summary->best_val_accuracy));
    json_object_set_new(object, "best_val_epoch", json_integer(summary->best_val_epoch));
  }
  return object;
}
