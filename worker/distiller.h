/* distiller.h — the distillation side of a training step: the soft-target (KD) term, the
 * feature pairs with their learned adapters and gates, and the adversarial discriminator,
 * driven in the order distill.h prescribes, with their parameters, gradients, optimizer
 * state and scratch in one slab each.
 *
 * The trainer (train.c) owns the student, the task loss and the loop; for each step it calls
 *
 *   distiller_forward   after the student's forward: KD, each pair needed, then the
 *                       discriminator's own update and the generator loss;
 *   nn_zero_grad, the task loss's backward into the logits;
 *   distiller_backward  KD into the logits, the generator into the judged pair, every pair
 *                       into its student layer's output gradient;
 *   nn_backward, nn_optimizer_step;
 *   distiller_update    the adapters of the pairs that ran, with the student's optimizer
 *                       kind and learning rate, without weight decay; their gates with
 *                       their own Adam (distill_feature_gate_step).
 *
 * A gate learns from its own loss (distill.h): a BCE against whether the teacher's top-1 is
 * right for each example, at weight 1 whatever the stage's weights, so distiller_forward takes
 * the batch's labels. The feature loss it weights does not train it. Like disc/loss, the gate's
 * loss is not part of the student's total.
 *
 * A term whose weight is 0 in the current stage is not computed (nor logged), but for KD's
 * gradient on the per-term diagnostic steps (distiller_kd_probe: it trains nothing and is
 * not logged as a loss); a pair runs when the feature term is on, or when the discriminator
 * judges it and the adversarial term is on. Slab layout (distill.h's convention): the pairs' adapters and gates in config order,
 * the discriminator last, so [0, n_trained) is what distiller_update moves and the
 * discriminator moves only in disc_step, with its own Adam state at its own offsets of m and v.
 * For SGD, m holds the adapters' velocity; a gate's Adam moments are at its own offsets, and
 * pair_t counts its steps as well as its adapter's. */
#ifndef MAPSAGE_DISTILLER_H
#define MAPSAGE_DISTILLER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "distill.h"
#include "nn.h"
#include "teacher.h"

/* A pair's label in metric names, NUL included: short enough that the longest name it goes
 * into, "grad_norm/adapter/<label>", stays within the protocol's EV_NAME_MAX (128). */
#define DISTILLER_LABEL_MAX 110

/* The current stage's weights. */
typedef struct {
  float task, distill, feature, adversarial;
} distiller_weights_t;

/* What distiller_forward computed, for the step's metrics. A term's value is meaningful only
 * when its flag is set. */
typedef struct {
  int distill, feature, adversarial;      /* computed this step */
  double kd;                              /* loss/distill */
  double feature_loss;                    /* loss/feature: the mean over pairs */
  double adversarial_loss;                /* loss/adversarial: the generator's */
  int ran[CFG_MAX_FEATURES];              /* the pair ran this step */
  distill_feature_stats_t pairs[CFG_MAX_FEATURES];
  disc_stats_t disc;                      /* when adversarial */
} distiller_terms_t;

typedef struct {
  int n_pairs;
  distill_feature_t pairs[CFG_MAX_FEATURES];
  int student_layer[CFG_MAX_FEATURES];    /* the student layer each pair reads */
  char labels[CFG_MAX_FEATURES][DISTILLER_LABEL_MAX]; /* in metric names: the student layer, or
                                             "student/teacher" when a student layer has several pairs
                                             (the teacher's name cut to fit) */
  int64_t pair_t[CFG_MAX_FEATURES];       /* updates each pair's adapter and gate received */
  int adversarial;                        /* a discriminator exists */
  int judged;                             /* the pair it judges */
  float disc_lr;
  disc_t disc;
  size_t n_params;                        /* adapters, gates, discriminator */
  size_t n_trained;                       /* adapters and gates: [0, n_trained) */
  float *params, *grads, *m, *v;          /* n_params each (m and v: optimizer state) */
  float *scratch;
  size_t n_scratch;
  int has_teacher;                         /* KD possible */
  float *student_probs, *teacher_probs;   /* KD: max_batch × classes each */
  float *gate_targets;                    /* max_batch: 1 where the teacher's top-1 is right */
  int max_batch;
  int classes;                           /* the student's logits */
} distiller_t;

/* Lays out and allocates the pieces `config` asks for, given the student model and its
 * teacher (the teacher's layer shapes size the adapters), and initialises them from
 * config->seed. Returns 0, -EINVAL or -ENOMEM; on failure nothing needs freeing. */
int distiller_create(distiller_t *d, const cfg_experiment_t *config, const nn_model_t *student,
                     const teacher_t *teacher, char *error, size_t error_size);
void distiller_free(distiller_t *d);

/* Whether a step with these weights needs the teacher's outputs. */
int distiller_needs_teacher(const distiller_t *d, const distiller_weights_t *w);

/* Whether a step with these weights runs a feature pair (and so reads the teacher's layer
 * outputs, not only its logits). */
int distiller_needs_features(const distiller_t *d, const distiller_weights_t *w);

/* The forward half of a step (see the top of this file). `student` has just run forward on
 * the batch; `teacher` holds the teacher's outputs for the same B examples (may be NULL when
 * distiller_needs_teacher said no); `labels` are the examples' classes (the gates' targets
 * come from them). T is the temperature. Fills `terms`. */
void distiller_forward(distiller_t *d, const nn_model_t *student, const teacher_outputs_t *teacher,
                       const float *student_logits, const int *labels, const distiller_weights_t *w,
                       float T, int B, distiller_terms_t *terms);
/* The backward half: after nn_zero_grad(student) and before nn_backward(student). */
void distiller_backward(distiller_t *d, nn_model_t *student, const teacher_outputs_t *teacher,
                        const distiller_weights_t *w, const distiller_terms_t *terms, float T, int B);
/* The loss terms of a step, in the order of their metric names. */
typedef enum {
  DISTILLER_TERM_TASK,
  DISTILLER_TERM_DISTILL,
  DISTILLER_TERM_FEATURE,
  DISTILLER_TERM_ADVERSARIAL,
  DISTILLER_TERMS
} distiller_term_t;
/* "task", "distill", "feature", "adversarial". */
const char *distiller_term_name(distiller_term_t term);

/* For the per-term gradient diagnostics: KD's forward at weight 0, in a stage that does not
 * distil (distiller_forward skips it there), so that distiller_backward_term can give its
 * gradient; it leaves `terms` alone (the term is neither logged nor trained on). Returns
 * the KD loss. Needs a teacher and its logits. */
float distiller_kd_probe(distiller_t *d, const teacher_outputs_t *teacher, const float *student_logits, float T,
                         int B);
/* The backward of one term alone at weight 1 (raw) into the student's output gradients
 * (nn_dlogits, the pairs' layer output gradients) for nn_backward to take further: KD (the
 * one distiller_forward computed, or the probe's), the feature term (the mean over the
 * pairs) or the generator's. The pieces' own gradients are left as garbage (distiller_backward
 * clears them first) and the aligned outputs' gradients cleared before and after, so the
 * step's own distiller_backward is the same with or without this call. */
void distiller_backward_term(distiller_t *d, nn_model_t *student, const teacher_outputs_t *teacher,
                             distiller_term_t term, const distiller_terms_t *terms, float T, int B);

/* Moves the adapters of the pairs that ran with the student's optimizer (its kind, momentum
 * or betas, no weight decay) at learning rate lr, and their gates with the gates' own Adam. */
void distiller_update(distiller_t *d, const nn_optimizer_t *optimizer, const distiller_terms_t *terms,
                      float lr);

/* The gradient norm of pair i's adapter (weight and bias) and of its gate (0 without one),
 * from the last backward. */
double distiller_adapter_grad_norm(const distiller_t *d, int pair);
double distiller_gate_grad_norm(const distiller_t *d, int pair);
/* Parameters of pair i's adapter, of its gate. */
size_t distiller_adapter_params(const distiller_t *d, int pair);
size_t distiller_gate_params(const distiller_t *d, int pair);

#endif
