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
 * The gate trap. The report's `mse(s, t · sigmoid(Linear(t)))` is minimised by a gate of zero
 * and a student that outputs zero, whatever the teacher says. Here the gate's weights are
 * normalised across the batch to average one and multiply each example's ERROR, never the
 * target, so no gate value makes the loss smaller than the smallest per-example error.
 *
 * A training step, as the trainer is expected to call it (B ≤ max_batch; "w" are the current
 * stage's weights; every pointer below is a caller-owned buffer sized once):
 *
 *   teacher_logits = nn_forward(teacher, x, B);                 // no backward, ever
 *   student_logits = nn_forward(student, x, B);
 *   task = loss_crossentropy_forward(probs, pred, student_logits, y, B, 10);
 *   kd   = kd_loss_forward(ps, pt, student_logits, teacher_logits, T, B, 10);
 *   for each pair i:                                            // s_i, t_i: layer outputs
 *     feat[i] = distill_feature_forward(&pair[i], scratch, dparams, s_i, t_i, B, &stats[i]);
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
 *   for each pair i:                                            // hidden layer's dout +=
 *     distill_feature_backward(&pair[i], dact(s_i), dgrads, scratch, dparams, s_i, t_i,
 *                              w_feature, B);
 *   nn_backward(student, x, B);   nn_optimizer_step(student, lr);
 *   update the adapters' and gates' range of dparams from dgrads (same optimizer, no decay);
 *   lay the discriminator out last so that range is [0, disc.first_param): its parameters
 *   move only in disc_step, with its own Adam state (disc.steps, m, v: checkpoint them).
 *
 * A pair whose feature and adversarial weights are both 0 this stage need not run at all.
 * Backward runs once per forward (it consumes the aligned output's gradient).
 *
 * Metrics: loss/distill = kd, loss/feature = feat (gated when the pair is), loss/adversarial =
 * adv, feature/ungated_mse, gate/mean (and gate/weight_min, gate/weight_max,
 * gate/effective_fraction) from the pair's stats, disc/loss and disc/accuracy from `ds`,
 * agreement from kd_agreement(). */
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

/* a, t (B,D) -> errors (B) = ‖a_b − t_b‖²; returns Σ_b errors / (B·D), the plain
 * per-element MSE. */
float feature_mse_forward(float *errors, const float *a, const float *t, int B, int D);
/* da (B,D) += dloss · 2 · w_b · (a_b − t_b) / (B·D), w_b = weights[b] (or 1 when NULL). */
void feature_mse_backward(float *da, const float *a, const float *t, const float *weights,
                          float dloss, int B, int D);

/* ---------------------------------------------------------------------------------------
 * Gate: a learned weight per example, normalised across the batch. */

typedef struct {
  double mean;              /* gate/mean: mean σ(g_b), the report's "relevance score" */
  double weight_min;        /* of the normalised weights a_b, whose mean is 1 by construction */
  double weight_max;
  double effective_fraction;/* exp(H(a/B)) / B ∈ [1/B, 1]: 1 = uniform, 1/B = one example */
} gate_stats_t;

/* teacher (B,D), weight (D), bias (1) -> scores (B) g = teacher · weight + bias, weights (B):
 *   CFG_GATE_SOFTMAX:  a_b = B · softmax(g)_b
 *   CFG_GATE_MEAN_ONE: a_b = σ(g_b) / mean_j σ(g_j), computed as B · softmax(log σ(g))_b
 *                      so that it stays exact when every σ(g) underflows.
 * Both average to exactly one. stats may be NULL. */
void gate_forward(float *weights, float *scores, gate_stats_t *stats, const float *teacher,
                  const float *weight, const float *bias, cfg_gate_t mode, int B, int D);
/* dweights (B) = ∂L/∂a_b -> dscores (B) = ∂L/∂g_b (overwritten: scratch), dweight (D) +=,
 * dbias (1) +=. With a = B·softmax(u): ∂L/∂u_j = a_j (∂L/∂a_j − Σ_b (a_b/B) ∂L/∂a_b), and
 * ∂u/∂g = 1 (softmax) or σ(−g) (mean_one). */
void gate_backward(float *dweight, float *dbias, float *dscores, const float *dweights,
                   const float *weights, const float *scores, const float *teacher,
                   const float *weight, cfg_gate_t mode, int B, int D);

/* ---------------------------------------------------------------------------------------
 * A feature pair: adapter (+ normalisation) (+ gate), the driver-facing piece.
 *
 *   y_b = norm(adapter(s_b)), z_b = norm(t_b)   (norm = identity unless normalize)
 *   e_b = ‖y_b − z_b‖²,  mse = Σ e_b / (B·D),  D = teacher_channels · pixels
 *   loss = mse                     (gate none)
 *   loss = Σ a_b e_b / (B·D)       (gated; a from gate_forward on the raw teacher feature) */

typedef struct {
  int student_channels;  /* Cs (features, when flat) */
  int teacher_channels;  /* Ct */
  int pixels;            /* H·W of both maps; 1 for flat features (linear adapter) */
  int normalize;
  cfg_gate_t gate;
  int max_batch;
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
  size_t student_norm, teacher_norm, errors, scores, weights, dweights, dscores; /* max_batch */
  size_t first_scratch, n_scratch;
} distill_feature_t;

typedef struct {
  double mse;            /* feature/ungated_mse: the plain per-element MSE, gated or not */
  double loss;           /* the returned loss */
  gate_stats_t gate;     /* gated pairs only (zeros otherwise) */
} distill_feature_stats_t;

/* Lays out a pair: its parameters from *n_params on and its scratch from *n_scratch on,
 * advancing both (call once per pair, then allocate the slabs). Returns 0, or -EINVAL for a
 * dimension < 1. */
int distill_feature_layout(distill_feature_t *f, int student_channels, int teacher_channels,
                           int pixels, int normalize, cfg_gate_t gate, int max_batch,
                           size_t *n_params, size_t *n_scratch);
/* Adapter weights U(−1/√Cs, 1/√Cs), zero bias (PyTorch's default scale for a layer with no
 * ReLU after it); a zero gate, so every weight starts at exactly 1 and the gated loss starts
 * equal to the plain MSE. Deterministic in (seed, index): give each pair its own index. */
void distill_feature_init(const distill_feature_t *f, float *params, uint64_t seed,
                          uint64_t index);

/* student (B, Cs·P), teacher (B, Ct·P) -> the pair's loss (above); fills stats (may be NULL),
 * keeps in scratch what backward needs, and clears the gradient of the aligned output
 * (distill_feature_daligned) so that other terms may accumulate into it before backward. */
float distill_feature_forward(const distill_feature_t *f, float *scratch, const float *params,
                              const float *student, const float *teacher, int B,
                              distill_feature_stats_t *stats);
/* Back-propagates dloss × the loss, plus whatever was accumulated into the aligned output's
 * gradient since the forward, through normalisation and adapter: adapter and gate gradients
 * += into grads (at the pair's offsets), dstudent (B, Cs·P) += (may be NULL). The teacher
 * gets no gradient. Same student, teacher and B as the forward. */
void distill_feature_backward(const distill_feature_t *f, float *dstudent, float *grads,
                              float *scratch, const float *params, const float *student,
                              const float *teacher, float dloss, int B);

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
