/* distill.c — the distillation terms, read top to bottom like nn.c: soft targets, the
 * feature kernels (1×1 adapter, normalisation, MSE), the gate, the feature pair that strings
 * them together, and the discriminator. Matrix products go through linear.c's linear_forward /
 * linear_backward wherever they fit (a flat pair's adapter through their packed pair where
 * nn_dense_default says); kernels touch only the buffers they are given. Sums
 * that become a reported loss are accumulated in double. */
#include "distill.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "nn.h"
#include "rng.h"

/* σ(x) without overflow on either side. */
static inline double distill__sigmoid(double x) {
  if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}

/* log(1 + eˣ) without overflow: max(x, 0) + log1p(e^−|x|). */
static inline double distill__softplus(double x) {
  return (x > 0.0 ? x : 0.0) + log1p(exp(-fabs(x)));
}

/* ---------------------------------------------------------------------------------------
 * Soft targets */

float kd_loss_forward(float *student_probs, float *teacher_probs, const float *student_logits,
                      const float *teacher_logits, float T, int B, int C) {
  // student_logits, teacher_logits (B,C) -> student_probs, teacher_probs (B,C); returns T²·mean KL
  assert(T > 0.0f && B >= 1 && C >= 1);
  const double inv_t = 1.0 / T;
  double total = 0.0;
  for (int b = 0; b < B; b++) {
    const float *s = student_logits + (size_t)b * C, *t = teacher_logits + (size_t)b * C;
    float *ps = student_probs + (size_t)b * C, *pt = teacher_probs + (size_t)b * C;
    /* log softmax as z − max − log Σ exp(z − max): every exp argument ≤ 0, and the logs
     * stay finite where the probabilities themselves underflow. */
    double max_s = s[0] * inv_t, max_t = t[0] * inv_t;
    for (int c = 1; c < C; c++) {
      max_s = fmax(max_s, s[c] * inv_t);
      max_t = fmax(max_t, t[c] * inv_t);
    }
    double sum_s = 0.0, sum_t = 0.0;
    for (int c = 0; c < C; c++) {
      sum_s += exp(s[c] * inv_t - max_s);
      sum_t += exp(t[c] * inv_t - max_t);
    }
    double lse_s = max_s + log(sum_s), lse_t = max_t + log(sum_t);
    double kl = 0.0;
    for (int c = 0; c < C; c++) {
      double log_ps = s[c] * inv_t - lse_s, log_pt = t[c] * inv_t - lse_t;
      double p_t = exp(log_pt);
      ps[c] = (float)exp(log_ps);
      pt[c] = (float)p_t;
      /* p_t = 0 (underflow) contributes 0 · finite = 0: both logs are finite here. */
      kl += p_t * (log_pt - log_ps);
    }
    total += kl;
  }
  return (float)((double)T * T * total / B);
}

void kd_loss_backward(float *dlogits, const float *student_probs, const float *teacher_probs,
                      float T, float dloss, int B, int C) {
  // student_probs, teacher_probs (B,C) -> dlogits (B,C) +=
  /* d(T² · KL)/ds = T² · (1/T) · (p_s − p_t): one factor T survives. */
  const float scale = dloss * T / (float)B;
  const size_t n = (size_t)B * C;
  for (size_t i = 0; i < n; i++) dlogits[i] += scale * (student_probs[i] - teacher_probs[i]);
}

/* The first index of the row's largest value. */
static int kd__argmax(const float *row, int C) {
  int best = 0;
  for (int c = 1; c < C; c++)
    if (row[c] > row[best]) best = c;
  return best;
}

int kd_agreement(const float *student_logits, const float *teacher_logits, int B, int C) {
  // student_logits, teacher_logits (B,C) -> count of equal top-1
  int same = 0;
  for (int b = 0; b < B; b++)
    same += kd__argmax(student_logits + (size_t)b * C, C) == kd__argmax(teacher_logits + (size_t)b * C, C);
  return same;
}

/* ---------------------------------------------------------------------------------------
 * 1×1 convolution adapter
 *
 * NCHW keeps each example's map as a (C, P) matrix, so the convolution is W (COUT,CIN) ·
 * X_b (CIN,P) per example: one GEMM per example, no copies. One GEMM over the whole batch
 * needs the batch transposed into (CIN, B·P) and back (and dOut for backward). Measured on
 * forward + backward at B = 128, 8–64 → 16–128 channels, P = 196 and 49, 1 and 2 OpenBLAS
 * threads: the copies cost more than the fewer, larger GEMMs save — transposing took a
 * median 1.3× the loop's time (0.7× to 2.5×, a noisy shared machine), so the loop stays. */

void feature_conv1x1_forward(float *out, const float *inp, const float *weight, const float *bias,
                             int B, int CIN, int COUT, int P) {
  // inp (B,CIN,P), weight (COUT,CIN), bias (COUT) -> out (B,COUT,P)
  const size_t in_size = (size_t)CIN * P, out_size = (size_t)COUT * P;
  for (int b = 0; b < B; b++) {
    float *o = out + b * out_size;
    float beta = 0.0f;
    if (bias) {
      /* The bias first and the product added to it (beta = 1), as in linear_forward. */
      for (int c = 0; c < COUT; c++)
        for (int p = 0; p < P; p++) o[(size_t)c * P + p] = bias[c];
      beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, COUT, P, CIN, 1.0f, weight, CIN,
                inp + b * in_size, P, beta, o, P);
  }
}

void feature_conv1x1_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, int B, int CIN, int COUT,
                              int P) {
  // dout (B,COUT,P) -> dinp (B,CIN,P) +=, dweight (COUT,CIN) +=, dbias (COUT) +=
  const size_t in_size = (size_t)CIN * P, out_size = (size_t)COUT * P;
  for (int b = 0; b < B; b++) {
    const float *d = dout + b * out_size;
    /* dW += dOut_b (COUT,P) · X_bᵀ (P,CIN) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, COUT, CIN, P, 1.0f, d, P,
                inp + b * in_size, P, 1.0f, dweight, CIN);
    /* dX_b += Wᵀ (CIN,COUT) · dOut_b (COUT,P) */
    if (dinp)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CIN, P, COUT, 1.0f, weight, CIN, d, P,
                  1.0f, dinp + b * in_size, P);
    if (dbias) {
      for (int c = 0; c < COUT; c++) {
        float sum = 0.0f;
        for (int p = 0; p < P; p++) sum += d[(size_t)c * P + p];
        dbias[c] += sum;
      }
    }
  }
}

/* ---------------------------------------------------------------------------------------
 * Normalisation to norm √D */

void feature_normalize_forward(float *out, float *norms, const float *inp, int B, int D) {
  // inp (B,D) -> out (B,D), norms (B)
  const double root_d = sqrt((double)D);
  for (int b = 0; b < B; b++) {
    const float *x = inp + (size_t)b * D;
    float *y = out + (size_t)b * D;
    double sum = 0.0;
    for (int i = 0; i < D; i++) sum += (double)x[i] * x[i];
    double n = sqrt(sum + FEATURE_NORM_EPS);
    float scale = (float)(root_d / n);
    for (int i = 0; i < D; i++) y[i] = x[i] * scale;
    norms[b] = (float)n;
  }
}

void feature_normalize_backward(float *dinp, const float *dout, const float *out,
                                const float *norms, int B, int D) {
  // dout (B,D), out (B,D), norms (B) -> dinp (B,D) +=
  /* y = √D x/n: dx = √D/n · dy − y (y·dy) / (√D n), the projection that removes the part of
   * dy along y (scaling x does not change y). */
  const double root_d = sqrt((double)D);
  for (int b = 0; b < B; b++) {
    const float *y = out + (size_t)b * D, *dy = dout + (size_t)b * D;
    float *dx = dinp + (size_t)b * D;
    double dot = 0.0;
    for (int i = 0; i < D; i++) dot += (double)y[i] * dy[i];
    float a = (float)(root_d / norms[b]);
    float c = (float)(dot / (root_d * norms[b]));
    for (int i = 0; i < D; i++) dx[i] += a * dy[i] - c * y[i];
  }
}

/* ---------------------------------------------------------------------------------------
 * Adaptive average pooling
 *
 * Output row i averages input rows [floor(i·H/OH), ceil((i+1)·H/OH)), likewise columns
 * (PyTorch's adaptive_avg_pool2d): for OH dividing H it is plain average pooling with
 * window and stride H/OH; otherwise the windows overlap by a row or a column (7 → 3: rows
 * 0–2, 2–4, 4–6) so that every input pixel counts and the output keeps the map's layout. */

static inline int feature__window_start(int i, int size, int out) { return (int)(((long)i * size) / out); }
static inline int feature__window_end(int i, int size, int out) {
  return (int)((((long)i + 1) * size + out - 1) / out);
}

void feature_avgpool_forward(float *out, const float *inp, int B, int C, int H, int W, int OH, int OW) {
  // inp (B,C,H,W) -> out (B,C,OH,OW)
  for (size_t plane = 0; plane < (size_t)B * C; plane++) {
    const float *x = inp + plane * H * W;
    float *y = out + plane * OH * OW;
    for (int i = 0; i < OH; i++) {
      const int h0 = feature__window_start(i, H, OH), h1 = feature__window_end(i, H, OH);
      for (int j = 0; j < OW; j++) {
        const int w0 = feature__window_start(j, W, OW), w1 = feature__window_end(j, W, OW);
        float sum = 0.0f;
        for (int h = h0; h < h1; h++)
          for (int w = w0; w < w1; w++) sum += x[h * W + w];
        y[i * OW + j] = sum / (float)((h1 - h0) * (w1 - w0));
      }
    }
  }
}

void feature_avgpool_backward(float *dinp, const float *dout, int B, int C, int H, int W, int OH, int OW) {
  // dout (B,C,OH,OW) -> dinp (B,C,H,W) +=
  for (size_t plane = 0; plane < (size_t)B * C; plane++) {
    float *dx = dinp + plane * H * W;
    const float *dy = dout + plane * OH * OW;
    for (int i = 0; i < OH; i++) {
      const int h0 = feature__window_start(i, H, OH), h1 = feature__window_end(i, H, OH);
      for (int j = 0; j < OW; j++) {
        const int w0 = feature__window_start(j, W, OW), w1 = feature__window_end(j, W, OW);
        const float share = dy[i * OW + j] / (float)((h1 - h0) * (w1 - w0));
        for (int h = h0; h < h1; h++)
          for (int w = w0; w < w1; w++) dx[h * W + w] += share;
      }
    }
  }
}

/* ---------------------------------------------------------------------------------------
 * Per-element mean squared error */

float feature_mse_forward(float *errors, const float *a, const float *t, int B, int D) {
  // a, t (B,D) -> errors (B); returns Σ errors / (B·D)
  double total = 0.0;
  for (int b = 0; b < B; b++) {
    const float *x = a + (size_t)b * D, *y = t + (size_t)b * D;
    double sum = 0.0;
    for (int i = 0; i < D; i++) {
      double diff = (double)x[i] - y[i];
      sum += diff * diff;
    }
    errors[b] = (float)sum;
    total += sum;
  }
  return (float)(total / ((double)B * D));
}

void feature_mse_backward(float *da, const float *a, const float *t, const float *weights,
                          float dloss, int B, int D) {
  // a, t (B,D), weights (B) or NULL -> da (B,D) +=
  const float scale = (float)(2.0 * dloss / ((double)B * D));
  for (int b = 0; b < B; b++) {
    const float *x = a + (size_t)b * D, *y = t + (size_t)b * D;
    float *d = da + (size_t)b * D;
    float s = weights ? scale * weights[b] : scale;
    for (int i = 0; i < D; i++) d[i] += s * (x[i] - y[i]);
  }
}

/* ---------------------------------------------------------------------------------------
 * Gate
 *
 * Both weightings are a = B · softmax(u): u = σ(g) (softmax) or u = log σ(g) (mean_one, since
 * σ(g_b) / mean σ = B · σ(g_b) / Σ σ). Writing mean_one that way keeps it exact for any g:
 * at g = −50 every σ is ~2e-22 and their ratio is still right; at g = −200 σ underflows to 0
 * in float and σ/mean σ would be 0/0, while log σ(g) = −softplus(−g) is simply −200.
 *
 * The gate's own loss, BCE with logits: −y log σ(g) − (1 − y) log(1 − σ(g)) = sp(g) − y g
 * (log σ(g) = −sp(−g) and sp(g) − sp(−g) = g), finite for any g; its derivative is σ(g) − y. */

float gate_forward(float *weights, float *scores, gate_stats_t *stats, const float *teacher,
                   const float *weight, const float *bias, const float *targets, cfg_gate_t mode,
                   int B, int D) {
  // teacher (B,D), weight (D), bias (1), targets (B) -> scores (B), weights (B); returns the BCE
  linear_forward(scores, teacher, weight, bias, B, D, 1);
  double max = -INFINITY, mean_sigmoid = 0.0, bce = 0.0;
  int right = 0;
  for (int b = 0; b < B; b++) {
    double g = scores[b], y = targets[b];
    double u = mode == CFG_GATE_MEAN_ONE ? -distill__softplus(-g) : distill__sigmoid(g);
    weights[b] = (float)u; /* u for now; the weights replace it below */
    max = fmax(max, u);
    mean_sigmoid += distill__sigmoid(g);
    bce += distill__softplus(g) - y * g;
    right += (g > 0.0) == (y > 0.5);
  }
  double sum = 0.0;
  for (int b = 0; b < B; b++) sum += exp(weights[b] - max);
  double entropy = 0.0, lo = INFINITY, hi = -INFINITY;
  for (int b = 0; b < B; b++) {
    double log_p = weights[b] - max - log(sum);
    double p = exp(log_p);
    entropy -= p * log_p;
    weights[b] = (float)(B * p);
    lo = fmin(lo, weights[b]);
    hi = fmax(hi, weights[b]);
  }
  if (stats) {
    stats->mean = mean_sigmoid / B;
    stats->weight_min = lo;
    stats->weight_max = hi;
    stats->effective_fraction = exp(entropy) / B;
    stats->loss = bce / B;
    stats->accuracy = (double)right / B;
  }
  return (float)(bce / B);
}

void gate_backward(float *dweight, float *dbias, float *dscores, const float *scores,
                   const float *targets, const float *teacher, float dloss, int B, int D) {
  // scores, targets (B) -> dscores (B) =, dweight (D) +=, dbias (1) +=
  for (int b = 0; b < B; b++)
    dscores[b] = (float)(dloss * (distill__sigmoid(scores[b]) - targets[b]) / B);
  /* No input gradient: the teacher's feature is a constant (linear_backward reads the weight
   * only to compute one). */
  linear_backward(NULL, dweight, dbias, dscores, teacher, NULL, B, D, 1);
}

/* ---------------------------------------------------------------------------------------
 * Feature pair */

#define DISTILL_UNUSED ((size_t)-1)

/* Takes n floats from *cursor. */
static size_t distill__take(size_t *cursor, size_t n) {
  size_t at = *cursor;
  *cursor += n;
  return at;
}

int distill_feature_layout(distill_feature_t *f, int student_channels, int teacher_channels,
                           int pixels, int normalize, cfg_gate_t gate, int max_batch,
                           size_t *n_params, size_t *n_scratch) {
  const cfg_shape_t student = {student_channels, 1, pixels, pixels > 1};
  const cfg_shape_t teacher = {teacher_channels, 1, pixels, pixels > 1};
  return distill_feature_layout_maps(f, &student, &teacher, normalize, gate, max_batch, n_params, n_scratch);
}

int distill_feature_layout_maps(distill_feature_t *f, const cfg_shape_t *student, const cfg_shape_t *teacher,
                                int normalize, cfg_gate_t gate, int max_batch, size_t *n_params,
                                size_t *n_scratch) {
  memset(f, 0, sizeof *f);
  const int student_channels = student->channels, teacher_channels = teacher->channels;
  if (student_channels < 1 || teacher_channels < 1 || student->height < 1 || student->width < 1 ||
      teacher->height < 1 || teacher->width < 1 || max_batch < 1)
    return -EINVAL;
  f->student_channels = student_channels;
  f->teacher_channels = teacher_channels;
  f->student_height = student->height;
  f->student_width = student->width;
  f->teacher_height = teacher->height;
  f->teacher_width = teacher->width;
  /* Compared at the smaller of the two resolutions (distill.h says why). */
  f->height = student->height < teacher->height ? student->height : teacher->height;
  f->width = student->width < teacher->width ? student->width : teacher->width;
  f->pixels = f->height * f->width;
  const int pixels = f->pixels;
  f->normalize = normalize != 0;
  f->gate = gate;
  f->max_batch = max_batch;
  const size_t D = (size_t)teacher_channels * pixels, MB = (size_t)max_batch;

  f->first_param = *n_params;
  f->adapter_weight = distill__take(n_params, (size_t)teacher_channels * student_channels);
  f->adapter_bias = distill__take(n_params, (size_t)teacher_channels);
  f->gate_weight = f->gate_bias = DISTILL_UNUSED;
  if (gate != CFG_GATE_NONE) {
    f->gate_weight = distill__take(n_params, D);
    f->gate_bias = distill__take(n_params, 1);
  }
  f->n_params = *n_params - f->first_param;

  f->first_scratch = *n_scratch;
  f->adapted = distill__take(n_scratch, MB * D);
  f->daligned = distill__take(n_scratch, MB * D);
  f->errors = distill__take(n_scratch, MB);
  if (f->normalize) {
    f->aligned = distill__take(n_scratch, MB * D);
    f->target = distill__take(n_scratch, MB * D);
    f->dadapted = distill__take(n_scratch, MB * D);
    f->student_norm = distill__take(n_scratch, MB);
    f->teacher_norm = distill__take(n_scratch, MB);
  } else {
    /* Without normalisation the adapter's output is what is compared, and its gradient is
     * the aligned output's: the same buffers. */
    f->aligned = f->adapted;
    f->dadapted = f->daligned;
    f->target = f->student_norm = f->teacher_norm = DISTILL_UNUSED;
  }
  f->scores = f->weights = f->gate_targets = f->dscores = DISTILL_UNUSED;
  if (gate != CFG_GATE_NONE) {
    f->scores = distill__take(n_scratch, MB);
    f->weights = distill__take(n_scratch, MB);
    f->gate_targets = distill__take(n_scratch, MB);
    f->dscores = distill__take(n_scratch, MB);
  }
  f->pooled_student = f->dpooled_student = f->pooled_teacher = DISTILL_UNUSED;
  if (f->height != student->height || f->width != student->width) {
    f->pooled_student = distill__take(n_scratch, MB * (size_t)student_channels * pixels);
    f->dpooled_student = distill__take(n_scratch, MB * (size_t)student_channels * pixels);
  }
  if (f->height != teacher->height || f->width != teacher->width)
    f->pooled_teacher = distill__take(n_scratch, MB * D);
  f->panels = DISTILL_UNUSED;
  if (pixels == 1) {
    f->panels = distill__take(n_scratch, cfg_linear_panel_floats((size_t)student_channels,
                                                                 (size_t)teacher_channels, MB));
    f->packed = nn_dense_default() == NN_DENSE_KERNELS;
  }
  f->n_scratch = *n_scratch - f->first_scratch;
  return 0;
}

void distill_feature_init(const distill_feature_t *f, float *params, uint64_t seed,
                          uint64_t index) {
  rng_t rng;
  rng_seed(&rng, seed, RNG_STREAM_DISTILL, index);
  const size_t n = (size_t)f->teacher_channels * f->student_channels;
  const float bound = (float)(1.0 / sqrt((double)f->student_channels));
  float *w = params + f->adapter_weight;
  for (size_t i = 0; i < n; i++) w[i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
  memset(params + f->adapter_bias, 0, (size_t)f->teacher_channels * sizeof(float));
  if (f->gate != CFG_GATE_NONE) {
    /* A zero gate: every example weighs exactly 1 at the start (σ = ½ everywhere); the BCE's
     * gradient (σ(g) − y) t / B moves it from the first step on, so nothing stays stuck. */
    memset(params + f->gate_weight, 0, (size_t)f->teacher_channels * f->pixels * sizeof(float));
    params[f->gate_bias] = 0.0f;
  }
}

const float *distill_feature_aligned(const distill_feature_t *f, const float *scratch) {
  return scratch + f->aligned;
}

/* The teacher's side as the pair compares it: pooled to the compared size when larger. */
static const float *distill__teacher(const distill_feature_t *f, const float *scratch, const float *teacher) {
  return f->pooled_teacher != DISTILL_UNUSED ? scratch + f->pooled_teacher : teacher;
}

const float *distill_feature_target(const distill_feature_t *f, const float *scratch,
                                    const float *teacher) {
  return f->normalize ? scratch + f->target : distill__teacher(f, scratch, teacher);
}

float *distill_feature_daligned(const distill_feature_t *f, float *scratch) {
  return scratch + f->daligned;
}

float distill_feature_forward(const distill_feature_t *f, float *scratch, const float *params,
                              const float *student, const float *teacher,
                              const float *gate_targets, int B, distill_feature_stats_t *stats) {
  // student (B,Cs·Hs·Ws), teacher (B,Ct·Ht·Wt) -> the pair's loss
  assert(B >= 1 && B <= f->max_batch);
  const int Cs = f->student_channels, Ct = f->teacher_channels, P = f->pixels, D = Ct * P;
  /* The larger map pooled to the compared size first: the student's before its adapter (a
   * 1×1 convolution commutes with averaging pixels, and on fewer pixels it costs less). */
  if (f->pooled_student != DISTILL_UNUSED) {
    feature_avgpool_forward(scratch + f->pooled_student, student, B, Cs, f->student_height, f->student_width,
                            f->height, f->width);
    student = scratch + f->pooled_student;
  }
  if (f->pooled_teacher != DISTILL_UNUSED) {
    feature_avgpool_forward(scratch + f->pooled_teacher, teacher, B, Ct, f->teacher_height, f->teacher_width,
                            f->height, f->width);
    teacher = scratch + f->pooled_teacher;
  }
  float *adapted = scratch + f->adapted;
  if (P == 1 && f->packed)
    linear_forward_packed(scratch + f->panels, adapted, student, params + f->adapter_weight,
                          params + f->adapter_bias, B, Cs, Ct);
  else if (P == 1)
    linear_forward(adapted, student, params + f->adapter_weight, params + f->adapter_bias, B, Cs, Ct);
  else
    feature_conv1x1_forward(adapted, student, params + f->adapter_weight, params + f->adapter_bias, B,
                            Cs, Ct, P);
  if (f->normalize) {
    feature_normalize_forward(scratch + f->aligned, scratch + f->student_norm, adapted, B, D);
    feature_normalize_forward(scratch + f->target, scratch + f->teacher_norm, teacher, B, D);
  }
  const float *y = scratch + f->aligned, *z = distill_feature_target(f, scratch, teacher);
  const float *errors = scratch + f->errors;
  float mse = feature_mse_forward(scratch + f->errors, y, z, B, D);
  float loss = mse;
  gate_stats_t gate_stats = {0};
  if (f->gate != CFG_GATE_NONE) {
    assert(gate_targets != NULL);
    const float *weights = scratch + f->weights;
    float *targets = scratch + f->gate_targets;
    memcpy(targets, gate_targets, (size_t)B * sizeof *targets); /* backward reads them */
    gate_forward(scratch + f->weights, scratch + f->scores, &gate_stats, teacher,
                 params + f->gate_weight, params + f->gate_bias, targets, f->gate, B, D);
    double total = 0.0;
    for (int b = 0; b < B; b++) total += (double)weights[b] * errors[b];
    loss = (float)(total / ((double)B * D));
  }
  memset(scratch + f->daligned, 0, (size_t)B * D * sizeof(float));
  if (stats) {
    stats->mse = mse;
    stats->loss = loss;
    stats->gate = gate_stats;
  }
  return loss;
}

void distill_feature_backward(const distill_feature_t *f, float *dstudent, float *grads,
                              float *scratch, const float *params, const float *student,
                              const float *teacher, float dloss, float dgate, int B) {
  // student (B,Cs·Hs·Ws), teacher (B,Ct·Ht·Wt) -> dstudent (B,Cs·Hs·Ws) +=, grads (pair's range) +=
  assert(B >= 1 && B <= f->max_batch);
  const int Cs = f->student_channels, Ct = f->teacher_channels, P = f->pixels, D = Ct * P;
  /* What the forward compared: the pooled maps it left in scratch. */
  float *const dstudent_map = dstudent;
  const int pooled = f->pooled_student != DISTILL_UNUSED;
  if (pooled) {
    student = scratch + f->pooled_student;
    dstudent = dstudent_map ? scratch + f->dpooled_student : NULL;
    if (dstudent) memset(dstudent, 0, (size_t)B * Cs * P * sizeof(float));
  }
  teacher = distill__teacher(f, scratch, teacher);
  const float *y = scratch + f->aligned, *z = distill_feature_target(f, scratch, teacher);
  float *dy = scratch + f->daligned;
  const int gated = f->gate != CFG_GATE_NONE;
  /* The weights are constants here (stop-gradient): ∂/∂y_b of Σ a_b e_b / (B·D) is
   * 2 a_b (y_b − z_b) / (B·D), and nothing of this loss flows to the gate. */
  if (dloss != 0.0f) feature_mse_backward(dy, y, z, gated ? scratch + f->weights : NULL, dloss, B, D);
  if (gated && dgate != 0.0f)
    gate_backward(grads + f->gate_weight, grads + f->gate_bias, scratch + f->dscores,
                  scratch + f->scores, scratch + f->gate_targets, teacher, dgate, B, D);
  float *dadapted = scratch + f->dadapted;
  if (f->normalize) {
    memset(dadapted, 0, (size_t)B * D * sizeof(float));
    feature_normalize_backward(dadapted, dy, y, scratch + f->student_norm, B, D);
  }
  if (P == 1 && f->packed)
    linear_backward_packed(scratch + f->panels, dstudent, grads + f->adapter_weight, grads + f->adapter_bias,
                           dadapted, student, params + f->adapter_weight, B, Cs, Ct);
  else if (P == 1)
    linear_backward(dstudent, grads + f->adapter_weight, grads + f->adapter_bias, dadapted, student,
                    params + f->adapter_weight, B, Cs, Ct);
  else
    feature_conv1x1_backward(dstudent, grads + f->adapter_weight, grads + f->adapter_bias, dadapted,
                             student, params + f->adapter_weight, B, Cs, Ct, P);
  if (pooled && dstudent_map)
    feature_avgpool_backward(dstudent_map, dstudent, B, Cs, f->student_height, f->student_width, f->height,
                             f->width);
}

void distill_feature_gate_step(const distill_feature_t *f, float *params, const float *grads,
                               float *adam_m, float *adam_v, int64_t t) {
  assert(f->gate != CFG_GATE_NONE && t >= 1);
  /* The gate's weight and bias are one range (distill_feature_layout takes them in a row). */
  const size_t at = f->gate_weight, n = (size_t)f->teacher_channels * f->pixels + 1;
  assert(f->gate_bias == at + n - 1);
  optim_adam_update(params + at, grads + at, adam_m + at, adam_v + at, n, 0, GATE_ADAM_LR,
                    GATE_ADAM_BETA1, GATE_ADAM_BETA2, GATE_ADAM_EPS, 0.0f, t);
}

/* ---------------------------------------------------------------------------------------
 * Discriminator */

int disc_layout(disc_t *d, int inputs, int hidden, cfg_adversarial_loss_t loss, int max_batch,
                size_t *n_params, size_t *n_scratch) {
  memset(d, 0, sizeof *d);
  if (inputs < 1 || hidden < 1 || max_batch < 1) return -EINVAL;
  d->inputs = inputs;
  d->hidden = hidden;
  d->loss = loss;
  d->max_batch = max_batch;
  const size_t H = (size_t)hidden, MB = (size_t)max_batch;

  d->first_param = *n_params;
  d->weight1 = distill__take(n_params, H * (size_t)inputs);
  d->weight2 = distill__take(n_params, H);
  d->bias1 = distill__take(n_params, H);
  d->bias2 = distill__take(n_params, 1);
  d->n_params = *n_params - d->first_param;

  d->first_scratch = *n_scratch;
  d->real_pre = distill__take(n_scratch, MB * H);
  d->real_hidden = distill__take(n_scratch, MB * H);
  d->fake_pre = distill__take(n_scratch, MB * H);
  d->fake_hidden = distill__take(n_scratch, MB * H);
  d->gen_pre = distill__take(n_scratch, MB * H);
  d->gen_hidden = distill__take(n_scratch, MB * H);
  d->dhidden = distill__take(n_scratch, MB * H);
  d->dpre = distill__take(n_scratch, MB * H);
  d->real_score = distill__take(n_scratch, MB);
  d->fake_score = distill__take(n_scratch, MB);
  d->gen_score = distill__take(n_scratch, MB);
  d->dscore = distill__take(n_scratch, MB);
  d->n_scratch = *n_scratch - d->first_scratch;
  return 0;
}

void disc_init(disc_t *d, float *params, uint64_t seed, uint64_t index) {
  rng_t rng;
  rng_seed(&rng, seed, RNG_STREAM_DISTILL, index);
  const size_t n1 = (size_t)d->hidden * d->inputs;
  const float bound1 = (float)sqrt(6.0 / d->inputs), bound2 = (float)(1.0 / sqrt((double)d->hidden));
  for (size_t i = 0; i < n1; i++) params[d->weight1 + i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound1;
  for (int i = 0; i < d->hidden; i++) params[d->weight2 + i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound2;
  memset(params + d->bias1, 0, (size_t)d->hidden * sizeof(float));
  params[d->bias2] = 0.0f;
  d->steps = 0;
}

/* x (B,inputs) -> pre, hidden (B,H), score (B): the MLP's forward. */
static void disc__forward(const disc_t *d, float *pre, float *hidden, float *score,
                          const float *params, const float *x, int B) {
  linear_forward(pre, x, params + d->weight1, params + d->bias1, B, d->inputs, d->hidden);
  relu_forward(hidden, pre, B * d->hidden);
  linear_forward(score, hidden, params + d->weight2, params + d->bias2, B, d->hidden, 1);
}

/* dscore (B) -> dx (B,inputs) += (may be NULL); parameter gradients += into grads, or (grads
 * NULL: the generator's pass through a frozen discriminator) not computed at all. */
static void disc__backward(const disc_t *d, float *dx, float *grads, float *scratch,
                           const float *params, const float *dscore, const float *hidden,
                           const float *x, int B) {
  const int H = d->hidden;
  float *dhidden = scratch + d->dhidden, *dpre = scratch + d->dpre;
  const float *w2 = params + d->weight2;
  if (grads) {
    memset(dhidden, 0, (size_t)B * H * sizeof(float));
    linear_backward(dhidden, grads + d->weight2, grads + d->bias2, dscore, hidden, w2, B, H, 1);
  } else {
    /* dhidden = dscore ⊗ w2: an outer product, not worth a GEMM call (and linear_backward
     * would also compute the weight gradient nobody may have). */
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++) dhidden[(size_t)b * H + h] = dscore[b] * w2[h];
  }
  memset(dpre, 0, (size_t)B * H * sizeof(float));
  relu_backward(dpre, dhidden, hidden, B * H);
  if (grads) {
    linear_backward(dx, grads + d->weight1, grads + d->bias1, dpre, x, params + d->weight1, B,
                    d->inputs, H);
  } else if (dx) {
    /* Only dx += dpre (B,H) · W1 (H,inputs): linear_backward's input-gradient product,
     * without the weight-gradient one that the frozen discriminator must not receive. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, d->inputs, H, 1.0f, dpre, H,
                params + d->weight1, d->inputs, 1.0f, dx, d->inputs);
  }
}

/* The score above which a feature is judged the teacher's. */
static double disc__threshold(const disc_t *d) { return d->loss == CFG_ADVERSARIAL_LSGAN ? 0.5 : 0.0; }

float disc_forward(const disc_t *d, float *scratch, const float *params, const float *real,
                   const float *fake, int B, disc_stats_t *stats) {
  // real, fake (B,inputs) -> L_D
  assert(B >= 1 && B <= d->max_batch);
  disc__forward(d, scratch + d->real_pre, scratch + d->real_hidden, scratch + d->real_score, params,
                real, B);
  disc__forward(d, scratch + d->fake_pre, scratch + d->fake_hidden, scratch + d->fake_score, params,
                fake, B);
  const float *r = scratch + d->real_score, *f = scratch + d->fake_score;
  const double threshold = disc__threshold(d);
  double total = 0.0, real_sum = 0.0, fake_sum = 0.0;
  int correct = 0;
  for (int b = 0; b < B; b++) {
    if (d->loss == CFG_ADVERSARIAL_LSGAN)
      total += ((double)r[b] - 1.0) * (r[b] - 1.0) + (double)f[b] * f[b];
    else
      total += distill__softplus(-(double)r[b]) + distill__softplus(f[b]);
    correct += (r[b] > threshold) + (f[b] <= threshold);
    real_sum += r[b];
    fake_sum += f[b];
  }
  if (stats) {
    stats->loss = total / (2.0 * B);
    stats->accuracy = (double)correct / (2.0 * B);
    stats->real_score = real_sum / B;
    stats->fake_score = fake_sum / B;
  }
  return (float)(total / (2.0 * B));
}

void disc_backward(const disc_t *d, float *grads, float *scratch, const float *params,
                   const float *real, const float *fake, int B) {
  // real, fake (B,inputs) -> grads (discriminator's range) +=
  float *dscore = scratch + d->dscore;
  for (int half = 0; half < 2; half++) {
    const float *score = scratch + (half == 0 ? d->real_score : d->fake_score);
    const float label = half == 0 ? 1.0f : 0.0f;
    for (int b = 0; b < B; b++) {
      /* LSGAN: ∂/∂z (z − y)²/(2B) = (z − y)/B. BCE: ∂/∂z [sp(z) − y z]/(2B) = (σ(z) − y)/(2B). */
      if (d->loss == CFG_ADVERSARIAL_LSGAN)
        dscore[b] = (score[b] - label) / (float)B;
      else
        dscore[b] = (float)((distill__sigmoid(score[b]) - label) / (2.0 * B));
    }
    disc__backward(d, NULL, grads, scratch, params, dscore,
                   scratch + (half == 0 ? d->real_hidden : d->fake_hidden), half == 0 ? real : fake,
                   B);
  }
}

float disc_step(disc_t *d, float *params, float *grads, float *adam_m, float *adam_v,
                float *scratch, const float *real, const float *fake, float lr, int B,
                disc_stats_t *stats) {
  memset(grads + d->first_param, 0, d->n_params * sizeof(float));
  float loss = disc_forward(d, scratch, params, real, fake, B, stats);
  disc_backward(d, grads, scratch, params, real, fake, B);
  d->steps++;
  const size_t at = d->first_param;
  optim_adam_update(params + at, grads + at, adam_m + at, adam_v + at, d->n_params, 0, lr,
                    DISC_ADAM_BETA1, DISC_ADAM_BETA2, DISC_ADAM_EPS, 0.0f, d->steps);
  return loss;
}

float disc_generator_forward(const disc_t *d, float *scratch, const float *params,
                             const float *fake, int B) {
  // fake (B,inputs) -> L_G
  assert(B >= 1 && B <= d->max_batch);
  disc__forward(d, scratch + d->gen_pre, scratch + d->gen_hidden, scratch + d->gen_score, params,
                fake, B);
  const float *z = scratch + d->gen_score;
  double total = 0.0;
  for (int b = 0; b < B; b++) {
    if (d->loss == CFG_ADVERSARIAL_LSGAN)
      total += 0.5 * ((double)z[b] - 1.0) * (z[b] - 1.0);
    else
      total += distill__softplus(-(double)z[b]);
  }
  return (float)(total / B);
}

void disc_generator_backward(const disc_t *d, float *dfake, float *scratch, const float *params,
                             float dloss, int B) {
  // dfake (B,inputs) +=
  const float *z = scratch + d->gen_score;
  float *dscore = scratch + d->dscore;
  for (int b = 0; b < B; b++) {
    /* LSGAN: ∂/∂z (z − 1)²/(2B) = (z − 1)/B. BCE: ∂/∂z sp(−z)/B = −σ(−z)/B. */
    if (d->loss == CFG_ADVERSARIAL_LSGAN)
      dscore[b] = dloss * (z[b] - 1.0f) / (float)B;
    else
      dscore[b] = (float)(-dloss * distill__sigmoid(-(double)z[b]) / B);
  }
  disc__backward(d, dfake, NULL, scratch, params, dscore, scratch + d->gen_hidden, NULL, B);
}
