/* train.h — the training loop of one experiment: its stages in order, mini-batches over a
 * seeded per-epoch shuffle, the distillation terms the stage weighs (distiller.h), a metric
 * event per step, eval events (train, val, test) after every epoch, stage and growth
 * events, checkpoints, resuming from one, and the summary of the worker's `finished` event.
 *
 * Same config, seed and OpenBLAS thread count give a bit-identical curve, and a run resumed
 * from a checkpoint ends bit-identical to one that was not interrupted: nothing that changes
 * a number depends on the clock, on rand() or on what happened before the checkpoint beyond
 * what the checkpoint holds. Only examples_per_s varies.
 *
 * Use: train_init, train_resume (optional), train_params_json for the `started` event,
 * train_loop, train_free. train_run does all of it for callers that need no `started`. */
#ifndef MAPSAGE_TRAIN_H
#define MAPSAGE_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "config.h"
#include "data.h"
#include "distiller.h"
#include "nn.h"
#include "teacher.h"

typedef struct {
  FILE *events;                /* every event, one JSON line each (stdout) */
  FILE *log;                   /* one human-readable line per epoch (stderr), or NULL */
  volatile sig_atomic_t *stop; /* when it becomes nonzero, stop before the next step; or NULL */
  teacher_t *teacher;          /* loaded by the caller (teacher_load) when the config has one */
  const char *checkpoint_dir;  /* where epoch-NNNN(-partial).ckpt files go; NULL writes none */
  const char *resume;          /* train_run only: a checkpoint to resume from, or NULL */
} train_options_t;

typedef struct {
  int stopped;                /* the stop flag ended the run early; the figures cover what ran */
  int epochs;                 /* completed epochs (those before a resume included) */
  int64_t steps;              /* optimizer updates (likewise) */
  double seconds;             /* wall time of this process's loop, evaluations included */
  double examples_per_s;      /* training examples over the time spent in training steps */
  int evaluated;              /* at least one epoch completed: the figures below are set */
  double final_train_loss, final_train_accuracy; /* the last epoch's running averages */
  double final_test_loss, final_test_accuracy;
  int best_val_epoch;         /* 1-based; 0 when there is no validation set */
  double best_val_accuracy;
} train_summary_t;

/* Per-term gradient diagnostics of one step (train_term_gradients): for each term computed,
 * the L2 norm of its raw (unweighted) gradient over the student's parameters, its share of
 * the weighted gradients ‖w_k g_k‖ / Σ_j ‖w_j g_j‖, and the cosine between the task's
 * gradient and its own. */
typedef struct {
  int computed[DISTILLER_TERMS];
  double norm[DISTILLER_TERMS];   /* grad_norm_term/<term> */
  int share_known;                /* Σ_j ‖w_j g_j‖ > 0 */
  double share[DISTILLER_TERMS];  /* grad_share/<term> */
  int cosine_known[DISTILLER_TERMS]; /* both gradients computed and nonzero (never for task) */
  double cosine[DISTILLER_TERMS]; /* grad_cos/task_<term> */
} train_term_grads_t;

typedef struct {
  nn_model_t *model;
  const cfg_experiment_t *config;
  const data_set_t *data;
  train_options_t options;
  teacher_t *teacher;          /* options.teacher */
  distiller_t distiller;
  int epoch;                   /* epochs completed (restored by train_resume) */
  int64_t step;                /* steps completed */
  int resumed;                 /* train_resume succeeded: the teacher's eval was already sent */
  int64_t saved_step;          /* the step of the last checkpoint written or resumed from */
  /* A checkpoint taken when a stop interrupted an epoch (resume_inside): where in that
   * epoch's order the next step starts (0 when none had), and the epoch's running sums. */
  int resume_inside;
  int resume_start;
  double resume_loss;
  int64_t resume_correct;
  train_summary_t summary;     /* the figures so far (restored by train_resume) */
  /* Buffers, allocated once. */
  float *inputs;               /* batch_size × inputs */
  int *labels, *indices;       /* batch_size */
  float *probs;                /* max_batch × classes */
  int *predictions;            /* max_batch */
  int *order;                  /* the epoch's shuffle of the training set */
  /* The per-term gradients (model->n_params floats each) for the terms this run can compute,
   * NULL for the others; distill is also diagnosed in stages where it has no weight
   * (probe_distill: the run distils in some stage). */
  float *term_grads[DISTILLER_TERMS];
  int probe_distill;
} train_t;

/* Prepares to train `model` (built by nn_model_create for at least config->batch_size
 * examples) on `data` as `config` says, with options->teacher when the config names one.
 * Builds the distillation pieces and every buffer. Returns 0, or a negative errno with the
 * reason in `error`; on failure nothing needs freeing. */
int train_init(train_t *t, nn_model_t *model, const cfg_experiment_t *config, const data_set_t *data,
               const train_options_t *options, char *error, size_t error_size);
void train_free(train_t *t);

/* Restores the state a checkpoint written by this run's config holds: parameters and
 * optimizer state of the student and of the distillation pieces, the step counts, which
 * blocks have joined, and the figures of the summary; train_loop then goes on with the next
 * epoch (or, from a checkpoint taken when a stop interrupted an epoch, with that epoch's next
 * step) and writes events only for what comes after the checkpoint. Returns 0, or a negative
 * errno with `error` naming the file and the reason (damaged, another config, …). */
int train_resume(train_t *t, const char *path, char *error, size_t error_size);

/* Runs the remaining epochs, writing events to options.events. When options.stop is raised
 * it stops before the next step and, with a checkpoint_dir, first writes a checkpoint of
 * where it is (epoch-NNNN-partial.ckpt inside epoch NNNN), so that nothing done is lost.
 * Returns 0 with `summary` filled (also when stopped early: summary->stopped), or a negative errno with the reason in
 * `error`: -ERANGE when a loss or a gradient stops being finite ("diverged at step N:
 * loss/total is nan"), -EIO when events or a checkpoint cannot be written, -ENOMEM. */
int train_loop(train_t *t, train_summary_t *summary, char *error, size_t error_size);

/* The parameter counts of the `started` event: "total" (what trains now: the config's layers
 * and the blocks that have joined), each layer with parameters, "blocks" ({name: {params,
 * active, epoch, after}}) and "distill" (each adapter, gate, the discriminator). The caller
 * owns the reference. */
json_t *train_params_json(const train_t *t);

/* The gradient of each loss term on its own, raw (weight 1), with respect to the student's
 * parameters, into t->term_grads[term], and their norms, shares and cosines into `out`:
 * called between the step's forward (nn_forward on t->inputs; the task loss's probabilities
 * in t->probs; distiller_forward into `terms`) and its backward, which it leaves unchanged
 * (the step's own nn_zero_grad is still needed after it). The terms: task always (its loss
 * is computed every step), distill, feature and adversarial when this step computes them
 * (weight > 0), and distill at weight 0 when t->probe_distill and the teacher's logits are
 * given. One nn_backward per term; no allocation. */
void train_term_gradients(train_t *t, const teacher_outputs_t *teacher, const distiller_weights_t *w,
                          const distiller_terms_t *terms, const float *logits, float T, int B,
                          train_term_grads_t *out);

/* train_init, train_resume when options->resume is set, train_loop, train_free. */
int train_run(nn_model_t *model, const cfg_experiment_t *config, const data_set_t *data,
              const train_options_t *options, train_summary_t *summary, char *error,
              size_t error_size);

/* The summary as the `finished` event carries it. The caller owns the reference. */
json_t *train_summary_to_json(const train_summary_t *summary);

#endif
