/* distill.h — the distillation terms: soft targets (KD at temperature T), feature alignment
 * through learned adapters, selective (gated) alignment that cannot collapse, and an
 * adversarial discriminator. Kernels are forward/backward pairs over caller-owned buffers;
 * like nn.h they never allocate, log or exit, and every backward ACCUMULATES into the
 * gradients it is given. The learned pieces (a feature pair's adapter and gate, the
 * discriminator) are small structs of offsets into the caller's slabs, so the trainer keeps
 * their parameters, gradients and optimizer state in one allocation each.
 *
 * Scale, the report's trap. Its feature loss was an MSE summed over ~1000 dimensions and
 * swamped a cross-entropy of ~2. Here every feature term is a mean PER ELEMENT (over B·D), so
 * its size does not grow with the width; with normalisation both sides are scaled to norm √D
 * (root-mean-square 1 per element), which makes the per-element MSE exactly 2 − 2·cos(s, t),
 * in [0, 4] whatever the width. (Unit norm would make it ‖ŝ − t̂‖²/D ≤ 4/D: the report's
 * problem mirrored, a term too small to matter.)
 *
 * The gate traps. The report's `mse(s, t · sigmoid(Linear(t)))` is minimised by a gate of zero
 * and a student that outputs zero, whatever the teacher says. Here the gate's weights are
 * normalised across the batch to average one and multiply each example's ERROR, never the
 * target, so no gate value makes the loss smaller than the smallest per-example error. That
 * alone is not enough: a gate trained by the loss it weights, Σ a_b e_b with mean a = 1, is
 * pushed to put all the weight on the example with the smallest error (measured: the
 * effective fraction fell to 1/B within ~10 steps, and without normalisation the B-fold
 * gradient on that one example diverged). So the gate has an objective of its own, with a
 * target that does not move: it learns which teacher features to trust, i.e. to predict from
 * the teacher's feature whether the teacher's top-1 prediction is right (BCE against y_b = 1
 * when it is), and its normalised scores weight the feature error as constants (no gradient
 * from the feature loss reaches the gate).
 *
 * A training step, as the trainer is expected to call it (B ≤ max_batch; "w" are the current
 * stage's weights; every pointer below is a caller-owned buffer sized once):
 *
 *   teacher_logits = nn_forward(teacher, x, B);                 // no backward, ever
 *   student_logits = nn_forward(student, x, B);
 *   task = loss_crossentropy_forward(probs, pred, student_logits, y, B, 10);
 *   kd   = kd_loss_forward(ps, pt, student_logits, teacher_logits, T, B, 10);
 *   right[b] = argmax(teacher_logits_b) == y_b ? 1 : 0;         // the gates' targets
 *   for each pair i:                                            // s_i, t_i: layer outputs
 *     feat[i] = distill_feature_forward(&pair[i], scratch, dparams, s_i, t_i, right, B,
 *                                       &stats[i]);
 *   if adversarial (judging pair k):
 *     disc_step(&disc, dparams, dgrads, adam_m, adam_v, scratch,           // (a) D learns;
 *               distill_feature_target(&pair[k], scratch, t_k),           // the student gets
 *               distill_feature_aligned(&pair[k], scratch), lr_d, B, &ds); // nothing from it
 *     adv = disc_generator_forward(&disc, scratch, dparams,                // (b) with the
 *               distill_feature_aligned(&pair[k], scratch), B);           // updated D
 *   nn_zero_grad(student);  memset the adapters' and gates' range of dgrads to 0;
 *   loss_crossentropy_backward(nn_dlogits(student), probs, y, w_task, B, 10);
 *   kd_loss_backward(nn_dlogits(student), ps, pt, T, w_distill, B, 10);
 *   if adversarial:                                             // into pair k's aligned grad,
 *     disc_generator_backward(&disc, distill_feature_daligned(&pair[k], scratch),  // cleared
 *                             scratch, dparams, w_adv, B);      // by its forward; D untouched
 *   for each pair i:                                            // hidden layer's dout +=;
 *     distill_feature_backward(&pair[i], dact(s_i), dgrads, scratch, dparams, s_i, t_i,
 *                              w_feature, 1, B);                // the gate's BCE at weight 1
 *   nn_backward(student, x, B);   nn_optimizer_step(student, lr);
 *   for each pair i that ran:                                   // t_i: its update count
 *     update its adapter from dgrads (the student's optimizer, no decay);
 *     if gated: distill_feature_gate_step(&pair[i], dparams, dgrads, adam_m, adam_v, ++t_i);
 *   lay the discriminator out last so that the pairs' range is [0, disc.first_param): its
 *   parameters move only in disc_step, with its own Adam state (disc.steps, m, v: checkpoint
 *   them; likewise each gate's moments and t_i).
 *
 * A pair whose feature and adversarial weights are both 0 this stage need not run at all.
 * Backward runs once per forward (it consumes the aligned output's gradient).
 *
 * Metrics: loss/distill = kd, loss/feature = feat (gated when the pair is), loss/adversarial =
 * adv, feature/ungated_mse, gate/mean (and gate/weight_min, gate/weight_max,
 * gate/effective_fraction, gate/loss, gate/accuracy) from the pair's stats, disc/loss and
 * disc/accuracy from `ds`, agreement from kd_agreement(). Like disc/loss, gate/loss is a
 * piece's own objective, not a term of the student's total. */
#ifndef MAPSAGE_DISTILL_H
#define MAPSAGE_DISTILL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* ---------------------------------------------------------------------------------------
 * Soft targets */

/* student_logits, teacher_logits (B,C) -> student_probs, teacher_probs (B,C) = softmax(·/T);
 * returns T² × the mean over the batch of KL(p_t ‖ p_s) = Σ_c p_t (log p_t − log p_s).
 * The T² keeps the gradient's size roughly independent of T (Hinton et al.). */
float kd_loss_forward(float *student_probs, float *teacher_probs, const float *student_logits,
                      const float *teacher_logits, float T, int B, int C);
/* dlogits (B,C) += dloss · T · (p_s − p_t) / B: the gradient of dloss × the loss above with
 * respect to the student's logits. The teacher gets none. */
void kd_loss_backward(float *dlogits, const float *student_probs, const float *teacher_probs,
                      float T, float dloss, int B, int C);
/* How many of the B examples have the same top-1 class for both (lowest index on ties). */
int kd_agreement(const float *student_logits, const float *teacher_logits, int B, int C);

/* ---------------------------------------------------------------------------------------
 * Feature kernels. A feature is (B, C, P) in NCHW order, P = H·W pixels (P = 1 when flat). */

/* inp (B,CIN,P), weight (COUT,CIN), bias (COUT) -> out (B,COUT,P): a 1×1 convolution, the
 * same linear map at every pixel. (For P = 1 use linear_forward: one GEMM for the batch.) */
void feature_conv1x1_forward(float *out, const float *inp, const float *weight, const float *bias,
                             int B, int CIN, int COUT, int P);
/* dout (B,COUT,P) -> dinp (B,CIN,P) += (may be NULL), dweight (COUT,CIN) +=, dbias (COUT) += */
void feature_conv1x1_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, int B, int CIN, int COUT,
                              int P);

/* inp (B,D) -> out (B,D) = √D · inp / n, norms (B) = n = sqrt(Σ inp² + FEATURE_NORM_EPS):
 * each example scaled to norm √D (smooth at 0 thanks to the epsilon). */
#define FEATURE_NORM_EPS 1e-12
void feature_normalize_forward(float *out, float *norms, const float *inp, int B, int D);
/* dout (B,D), out and norms from the forward -> dinp (B,D) +=
 * √D/n · (dout − u (u·dout)) with u = out/√D: the exact Jacobian of the forward. */
void feature_normalize_backward(float *dinp, const float *dout, const float *out,
                                const float *norms, int B, int D);

/* inp (B,C,H,W) -> out (B,C,OH,OW), OH ≤ H, OW ≤ W: adaptive average pooling, PyTorch's
 * adaptive_avg_pool2d (output row i averages input rows floor(i·H/OH) … ceil((i+1)·H/OH) − 1,
 * likewise columns; windows overlap by one when OH does not divide H). */
void feature_avgpool_forward(float *out, const float *inp, int B, int C, int H, int W, int OH, int OW);
/* dout (B,C,OH,OW) -> dinp (B,C,H,W) += each output's gradient spread evenly over its window. */
void feature_avgpool_backward(float *dinp, const float *dout, int B, int C, int H, int W, int OH, int OW);

/* a, t (B,D) -> errors (B) = ‖a_b − t_b‖²; returns Σ_b errors / (B·D), the plain
 * per-element MSE. */
float feature_mse_forward(float *errors, const float *a, const float *t, int B, int D);
/* da (B,D) += dloss · 2 · w_b · (a_b − t_b) / (B·D), w_b = weights[b] (or 1 when NULL). */
void feature_mse_backward(float *da, const float *a, const float *t, const float *weights,
                          float dloss, int B, int D);

/* ---------------------------------------------------------------------------------------
 * Gate: a learned weight per example, normalised across the batch.
 *
 *   g_b = w · t_b + c                          (t_b: the teacher's raw feature)
 *   gate loss = mean_b [sp(g_b) − y_b g_b]     (BCE of σ(g_b) against y_b ∈ [0, 1]: 1 when
 *                                               the teacher's top-1 is right; sp = softplus)
 *   weights a_b = σ(g_b) / mean_j σ(g_j)       (mean_one: proportional to the trust; an
 *                                               example the gate is sure the teacher gets
 *                                               wrong weighs ~0)
 *               = B · softmax(σ(g))_b          (softmax: gentle; any two weights are within
 *                                               a factor e of each other)
 *
 * Only the gate loss trains w and c. The weights multiply the feature error as constants: the
 * feature loss's gradient stops at them. Their target being fixed, the gate cannot drift
 * toward whichever examples happen to be easy to imitate.
 *
 * The gate is a small classifier of its own, so like the discriminator it has an optimizer of
 * its own: Adam at GATE_ADAM_LR (distill_feature_gate_step), whatever the student's. With the
 * student's SGD a step moves g by ~lr ‖t‖² / (1 − momentum), which for a hidden layer's
 * activations at lr 0.05 and momentum 0.9 swings the gate from one saturated answer to the
 * other (measured over 5 epochs of the synthetic set, on the fc1 of a teacher wrong about
 * three classes: a BCE between 1.4 and 16 where always guessing "right" scores 0.59), and on
 * unit-norm features it barely moves (no better than that guess); Adam's steps do not depend
 * on the features' scale (there: BCE 0.38, accuracy 0.87 against a majority of 0.73).
 *
 * Both weightings are bounded in the gate's probabilities, not its logits: B · softmax(g)
 * itself would weight by the odds σ/(1 − σ), which grow without bound as the gate grows sure
 * (on separable targets its logits do); measured, its effective fraction fell to 1/B all the
 * same. */

typedef struct {
  double mean;              /* gate/mean: mean σ(g_b), the predicted chance the teacher is right */
  double weight_min;        /* of the normalised weights a_b, whose mean is 1 by construction */
  double weight_max;
  double effective_fraction;/* exp(H(a/B)) / B ∈ [1/B, 1]: 1 = uniform, 1/B = one example */
  double loss;              /* gate/loss: the BCE above */
  double accuracy;          /* gate/accuracy: how often σ(g_b) > 0.5 agrees with y_b > 0.5 */
} gate_stats_t;

#define GATE_ADAM_LR 1e-3f   /* Adam's usual default; a few hundred steps learn a class-level bias */
#define GATE_ADAM_BETA1 0.9f
#define GATE_ADAM_BETA2 0.999f
#define GATE_ADAM_EPS 1e-8f

/* teacher (B,D), weight (D), bias (1), targets (B) -> scores (B) g, weights (B) a; returns
 * the gate loss. mean_one's a is computed as B · softmax(log σ(g)), so it stays exact when
 * every σ(g) underflows. Both modes average to exactly one. stats may be NULL. */
float gate_forward(float *weights, float *scores, gate_stats_t *stats, const float *teacher,
                   const float *weight, const float *bias, const float *targets, cfg_gate_t mode,
                   int B, int D);
/* scores, targets (B) -> dscores (B) = dloss · (σ(g_b) − y_b) / B (overwritten: scratch),
 * dweight (D) += Σ_b dscores_b t_b, dbias (1) += Σ_b dscores_b: the gradient of dloss × the
 * gate loss. Nothing else reaches the gate. */
void gate_backward(float *dweight, float *dbias, float *dscores, const float *scores,
                   const float *targets, const float *teacher, float dloss, int B, int D);

/* ---------------------------------------------------------------------------------------
 * A feature pair: adapter (+ normalisation) (+ gate), the driver-facing piece.
 *
 *   y_b = norm(adapter(pool(s_b))), z_b = norm(pool(t_b))   (norm = identity unless
 *                                               normalize; pool = identity unless that map is
 *                                               the larger, below)
 *   e_b = ‖y_b − z_b‖²,  mse = Σ e_b / (B·D),  D = teacher_channels · pixels
 *   loss = mse                     (gate none)
 *   loss = Σ a_b e_b / (B·D)       (gated; a from gate_forward on the raw teacher feature,
 *                                   held constant: this loss trains adapter and student only)
 *   gate loss (gated)              trains the gate only; in the pair's stats */

/* Maps of different sizes (multi-scale pairs). The larger map, student's or teacher's, is
 * adaptive-average-pooled to the smaller one's height and width (per dimension), and the pair
 * is compared there: the student's map pooled, then the 1×1 adapter; or the teacher's map
 * pooled as the target. Why pooling down and not upsampling up: the coarser map cannot
 * supply the finer one's detail — upsampling a student map (nearest or bilinear) only
 * repeats or blends its pixels, so the loss would ask the student to reproduce teacher
 * detail it has no pixels for, or blur the teacher's — while averaging the finer map keeps
 * everything the coarser one can express. FitNets (Romero et al.) reduce the larger map too,
 * with a convolutional regressor whose kernel is chosen to shrink it to the teacher's size;
 * a fixed adaptive average does the same reduction without parameters, whatever the ratio
 * (14 → 7 as well as 7 → 3), and leaves the adapter a 1×1 convolution that only maps
 * channels. Average, not max, pooling: it is linear, so the gradient reaches every student
 * pixel of a window (a 2×2 max would train one pixel in four), and for an integer factor it
 * is exactly average pooling with window = stride = factor.
 * The pooling runs before the adapter (a 1×1 convolution commutes with averaging pixels:
 * the same loss, on fewer pixels). */
typedef struct {
  int student_channels;  /* Cs (features, when flat) */
  int teacher_channels;  /* Ct */
  int student_height, student_width, teacher_height, teacher_width; /* the layers' maps */
  int height, width;     /* the compared map: the smaller of the two in each dimension */
  int pixels;            /* height·width; 1 for flat features (linear adapter) */
  int normalize;
  cfg_gate_t gate;
  int max_batch;
  int packed;            /* a linear adapter's products on kernels.h's packed GEMM (nn_dense_t) */
  /* Parameters: offsets in floats into the caller's parameter slab; the gradients are at
   * the same offsets in its gradient slab, and [first_param, first_param + n_params) is the
   * whole piece. */
  size_t adapter_weight;  /* Ct × Cs */
  size_t adapter_bias;    /* Ct */
  size_t gate_weight;     /* D (gated only) */
  size_t gate_bias;       /* 1 (gated only) */
  size_t first_param, n_params;
  /* Scratch: offsets in floats into the caller's scratch slab. Without normalisation
   * aligned == adapted and dadapted == daligned (the same buffers) and target,
   * student_norm, teacher_norm are (size_t)-1; ungated, so are the gate's four. */
  size_t adapted, aligned, target, daligned, dadapted;    /* max_batch × D each */
  size_t student_norm, teacher_norm, errors;              /* max_batch each */
  size_t scores, weights, gate_targets, dscores;          /* max_batch each */
  /* Pooling, (size_t)-1 when that side is not larger: the student's map pooled and its
   * gradient (max_batch × Cs·pixels each), the teacher's pooled (max_batch × D). */
  size_t pooled_student, dpooled_student, pooled_teacher;
  /* A linear adapter's packed operands (cfg_linear_panel_floats), (size_t)-1 for a 1×1 one. */
  size_t panels;
  size_t first_scratch, n_scratch;
} distill_feature_t;

typedef struct {
  double mse;            /* feature/ungated_mse: the plain per-element MSE, gated or not */
  double loss;           /* the returned loss */
  gate_stats_t gate;     /* gated pairs only (zeros otherwise) */
} distill_feature_stats_t;

/* Lays out a pair: its parameters from *n_params on and its scratch from *n_scratch on,
 * advancing both (call once per pair, then allocate the slabs). Returns 0, or -EINVAL for a
 * dimension < 1. The student's and teacher's maps (channels × height × width; flat features
 * have height = width = 1) may differ in size: the larger is pooled (above). */
int distill_feature_layout_maps(distill_feature_t *f, const cfg_shape_t *student, const cfg_shape_t *teacher,
                                int normalize, cfg_gate_t gate, int max_batch, size_t *n_params,
                                size_t *n_scratch);
/* The same for two maps of equal size, `pixels` each. */
int distill_feature_layout(distill_feature_t *f, int student_channels, int teacher_channels,
                           int pixels, int normalize, cfg_gate_t gate, int max_batch,
                           size_t *n_params, size_t *n_scratch);
/* Adapter weights U(−1/√Cs, 1/√Cs), zero bias (PyTorch's default scale for a layer with no
 * ReLU after it); a zero gate, so every weight starts at exactly 1 and the gated loss starts
 * equal to the plain MSE. Deterministic in (seed, index): give each pair its own index. */
void distill_feature_init(const distill_feature_t *f, float *params, uint64_t seed,
                          uint64_t index);

/* student (B, Cs·Hs·Ws), teacher (B, Ct·Ht·Wt), gate_targets (B: the gate's y, read only when gated;
 * may be NULL otherwise) -> the pair's loss (above); fills stats (may be NULL), keeps in
 * scratch what backward needs (the targets included), and clears the gradient of the aligned
 * output (distill_feature_daligned) so that other terms may accumulate into it before
 * backward. */
float distill_feature_forward(const distill_feature_t *f, float *scratch, const float *params,
                              const float *student, const float *teacher,
                              const float *gate_targets, int B, distill_feature_stats_t *stats);
/* Back-propagates dloss × the loss, plus whatever was accumulated into the aligned output's
 * gradient since the forward, through normalisation and adapter: adapter gradients += into
 * grads (at the pair's offsets), dstudent (B, Cs·P) += (may be NULL); and, gated, dgate × the
 * gate loss into the gate's gradients, which get nothing else. The teacher gets no gradient.
 * Same student, teacher and B as the forward. */
void distill_feature_backward(const distill_feature_t *f, float *dstudent, float *grads,
                              float *scratch, const float *params, const float *student,
                              const float *teacher, float dloss, float dgate, int B);

/* The gate's own update (gated pairs): Adam at GATE_ADAM_LR, no weight decay, on the gate's
 * weight and bias, from the gradient in grads and the moments at the same offsets of adam_m
 * and adam_v; t ≥ 1 counts the updates (bias correction). The adapter is not touched. */
void distill_feature_gate_step(const distill_feature_t *f, float *params, const float *grads,
                               float *adam_m, float *adam_v, int64_t t);

/* The student's aligned feature y (B,D), the teacher's side z (B,D: `teacher` itself unless
 * normalised), and the gradient with respect to y: valid after distill_feature_forward. */
const float *distill_feature_aligned(const distill_feature_t *f, const float *scratch);
const float *distill_feature_target(const distill_feature_t *f, const float *scratch,
                                    const float *teacher);
float *distill_feature_daligned(const distill_feature_t *f, float *scratch);

/* ---------------------------------------------------------------------------------------
 * Discriminator: feature (D) → hidden (ReLU) → 1 score, telling the teacher's features
 * (real, label 1) from the student's aligned ones (fake, label 0).
 *
 *   LSGAN: L_D = mean_b [(D(t_b) − 1)² + D(s_b)²] / 2      L_G = mean_b (D(s_b) − 1)² / 2
 *   BCE:   L_D = mean_b [sp(−D(t_b)) + sp(D(s_b))] / 2     L_G = mean_b sp(−D(s_b))
 *   (D is the raw score, a logit for BCE; sp(z) = log(1 + eᶻ), computed stably.)
 *
 * Accuracy counts a teacher feature right when its score is above the threshold (0.5 for
 * LSGAN's targets 0/1; 0 for BCE, i.e. σ > 0.5), a student feature right when it is not. */

#define DISC_ADAM_BETA1 0.5f   /* the usual choice for GAN discriminators (DCGAN) */
#define DISC_ADAM_BETA2 0.999f
#define DISC_ADAM_EPS 1e-8f

typedef struct {
  int inputs, hidden, max_batch;
  cfg_adversarial_loss_t loss;
  size_t weight1, bias1, weight2, bias2;   /* (hidden,inputs), (hidden), (1,hidden), (1) */
  size_t first_param, n_params;
  /* Scratch: the discriminator step's activations for B real then B fake rows, the
   * generator's own (so a discriminator step between generator forward and backward is
   * harmless), and backward temporaries. */
  size_t real_pre, real_hidden, real_score, fake_pre, fake_hidden, fake_score;
  size_t gen_pre, gen_hidden, gen_score;
  size_t dscore, dhidden, dpre;
  size_t first_scratch, n_scratch;
  int64_t steps;          /* Adam updates applied (bias correction) */
} disc_t;

typedef struct {
  double loss;            /* disc/loss */
  double accuracy;        /* disc/accuracy over the 2B features */
  double real_score;      /* mean raw score on the teacher's features */
  double fake_score;      /* and on the student's */
} disc_stats_t;

int disc_layout(disc_t *d, int inputs, int hidden, cfg_adversarial_loss_t loss, int max_batch,
                size_t *n_params, size_t *n_scratch);
/* Kaiming-uniform first layer (ReLU follows), U(−1/√hidden, 1/√hidden) second, zero biases,
 * steps = 0. */
void disc_init(disc_t *d, float *params, uint64_t seed, uint64_t index);

/* real, fake (B,D) -> L_D (above); stats may be NULL. */
float disc_forward(const disc_t *d, float *scratch, const float *params, const float *real,
                   const float *fake, int B, disc_stats_t *stats);
/* ∂L_D/∂θ += into grads at the discriminator's offsets. Nothing flows to real or fake. */
void disc_backward(const disc_t *d, float *grads, float *scratch, const float *params,
                   const float *real, const float *fake, int B);
/* One discriminator update: zero its gradient range, forward, backward, Adam at lr on its
 * range of params / grads / m / v (no weight decay). stats describe the batch as the
 * discriminator judged it before the update. Returns L_D. */
float disc_step(disc_t *d, float *params, float *grads, float *adam_m, float *adam_v,
                float *scratch, const float *real, const float *fake, float lr, int B,
                disc_stats_t *stats);

/* fake (B,D) -> L_G (above), the student's adversarial loss (loss/adversarial). */
float disc_generator_forward(const disc_t *d, float *scratch, const float *params,
                             const float *fake, int B);
/* dfake (B,D) += dloss × ∂L_G/∂fake, through the discriminator as it is (frozen): no
 * gradient reaches its parameters. */
void disc_generator_backward(const disc_t *d, float *dfake, float *scratch, const float *params,
                             float dloss, int B);

#endif
