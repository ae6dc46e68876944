/* train.h — the training loop of one experiment: its stages in order, mini-batches over a
 * seeded per-epoch shuffle, a metric event per step and eval events (train, val, test)
 * after every epoch, and the summary that goes into the worker's `finished` event.
 *
 * Same config, seed and OpenBLAS thread count give a bit-identical curve: nothing that
 * changes a number depends on the clock or on rand(). Only examples_per_s varies. */
#ifndef MAPSAGE_TRAIN_H
#define MAPSAGE_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "config.h"
#include "data.h"
#include "nn.h"

typedef struct {
  FILE *events;                /* metric and eval events, one JSON line each (stdout) */
  FILE *log;                   /* one human-readable line per epoch (stderr), or NULL */
  volatile sig_atomic_t *stop; /* when it becomes nonzero, stop before the next step; or NULL */
} train_options_t;

typedef struct {
  int stopped;                /* the stop flag ended the run early; the figures cover what ran */
  int epochs;                 /* completed epochs */
  int64_t steps;              /* optimizer updates */
  double seconds;             /* wall time of the whole loop, evaluations included */
  double examples_per_s;      /* training examples over the time spent in training steps */
  int evaluated;              /* at least one epoch completed: the figures below are set */
  double final_train_loss, final_train_accuracy; /* the last epoch's running averages */
  double final_test_loss, final_test_accuracy;
  int best_val_epoch;         /* 1-based; 0 when there is no validation set */
  double best_val_accuracy;
} train_summary_t;

/* Trains `model` (built by nn_model_create for at least config->batch_size examples) on
 * `data` as `config` says, writing events to options->events. Returns 0 with `summary` filled
 * (also when stopped early: summary->stopped), or a negative errno with the reason in
 * `error`: -ERANGE when the loss stops being finite (the run diverged), -EIO when events
 * cannot be written, -EINVAL or -ENOMEM. */
int train_run(nn_model_t *model, const cfg_experiment_t *config, const data_set_t *data,
              const train_options_t *options, train_summary_t *summary, char *error,
              size_t error_size);

/* Accuracy and mean cross-entropy of `model` on `split`, forward only, in batches of
 * model->max_batch; `probs` (max_batch × CFG_CLASSES) and `predictions` (max_batch) are
 * scratch space. Returns 0, or -ERANGE if the loss is not finite. */
int train_evaluate(nn_model_t *model, const data_split_t *split, float *probs, int *predictions,
                   double *accuracy, double *loss);

/* The summary as the `finished` event carries it. The caller owns the reference. */
json_t *train_summary_to_json(const train_summary_t *summary);

#endif
