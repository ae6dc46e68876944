/* test_distill.c — checks worker/distill.c: every backward against central differences of a
 * double-precision reference written here from the formulas (KD at T = 1, 4, 8; feature
 * pairs through linear and 1×1 adapters, with and without normalisation, ungated and in both
 * gate modes, the gate's own BCE included; the discriminator and the generator loss, LSGAN
 * and BCE; the adversarial gradient through a pair into the student), KD against a
 * hand-worked value, that no gate can drive the selective loss to zero where the report's
 * sigmoid-times-target can, that the feature loss sends the gate nothing, that a gate trained
 * for many steps learns its target without concentrating the weights (where a gate trained by
 * the loss it weights does), and that discriminator steps learn separable data. Each gradient
 * check prints its largest relative error. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "distill.h"
#include "nn.h"
#include "rng.h"

static rng_t test_rng;

static void fill_uniform(float *x, int n, float low, float high) {
  for (int i = 0; i < n; i++) x[i] = low + (high - low) * rng_uniform(&test_rng);
}

static void to_double(double *out, const float *in, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = in[i];
}

/* Compares two gradients element by element; prints and checks the worst relative error. A
 * gradient that is zero everywhere would pass trivially, so it must have some size too. */
static void check_gradient(const char *name, const float *analytic, const double *numeric, int n,
                           double tolerance) {
  double worst = 0.0, largest = 0.0;
  int worst_index = 0;
  for (int i = 0; i < n; i++) {
    double error = relative_error(analytic[i], numeric[i], 1e-4);
    largest = fmax(largest, fabs(numeric[i]));
    if (error > worst) {
      worst = error;
      worst_index = i;
    }
  }
  printf("    %-26s %4d values, max relative error %.2e (analytic %.6g, numeric %.6g)\n", name, n,
         worst, n ? analytic[worst_index] : 0.0, n ? numeric[worst_index] : 0.0);
  CHECK(worst <= tolerance);
  CHECK(largest > 1e-6);
}

/* Central differences of objective(context) with respect to each of x[0..n). The reference
 * functions are in double, so a small step is both accurate and free of rounding noise. */
typedef double (*objective_fn)(void *context);

static void numeric_gradient(double *numeric, double *x, int n, objective_fn objective,
                             void *context, double scale) {
  const double step = 1e-5;
  for (int i = 0; i < n; i++) {
    double saved = x[i];
    x[i] = saved + step;
    double plus = objective(context);
    x[i] = saved - step;
    double minus = objective(context);
    x[i] = saved;
    numeric[i] = scale * (plus - minus) / (2.0 * step);
  }
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* ---------------------------------------------------------------------------------------
 * Soft targets */

enum { KB = 4, KC = 10 };

typedef struct {
  double s[KB * KC], t[KB * KC];
  double T;
  int B;
} kd_context_t;

/* T² · mean_b Σ_c p_t (log p_t − log p_s), straight from the definition. */
static double kd_reference(void *context) {
  kd_context_t *k = context;
  double total = 0.0;
  for (int b = 0; b < k->B; b++) {
    double log_zs = 0.0, log_zt = 0.0, max_s = -INFINITY, max_t = -INFINITY;
    for (int c = 0; c < KC; c++) {
      max_s = fmax(max_s, k->s[b * KC + c] / k->T);
      max_t = fmax(max_t, k->t[b * KC + c] / k->T);
    }
    for (int c = 0; c < KC; c++) {
      log_zs += exp(k->s[b * KC + c] / k->T - max_s);
      log_zt += exp(k->t[b * KC + c] / k->T - max_t);
    }
    log_zs = max_s + log(log_zs);
    log_zt = max_t + log(log_zt);
    for (int c = 0; c < KC; c++) {
      double log_ps = k->s[b * KC + c] / k->T - log_zs, log_pt = k->t[b * KC + c] / k->T - log_zt;
      total += exp(log_pt) * (log_pt - log_ps);
    }
  }
  return k->T * k->T * total / k->B;
}

static void test_kd_value(void) {
  printf("KD against a hand-worked value\n");
  /* Row 0: student (0, 0) → p_s = (½, ½); teacher (2 ln 3, 0) at T = 2 → p_t = (¾, ¼).
   * KL = ¾ ln(¾ / ½) + ¼ ln(¼ / ½) = ¾ ln 1.5 − ¼ ln 2. Row 1: identical logits, KL = 0.
   * Loss = T² · (KL + 0) / 2 = 2 (¾ ln 1.5 − ¼ ln 2) = 0.2616240… */
  float s[4] = {0.0f, 0.0f, 1.0f, -1.0f}, t[4] = {(float)(2.0 * log(3.0)), 0.0f, 1.0f, -1.0f};
  float ps[4], pt[4];
  double expected = 2.0 * (0.75 * log(1.5) - 0.25 * log(2.0));
  float loss = kd_loss_forward(ps, pt, s, t, 2.0f, 2, 2);
  printf("  loss %.7f, by hand %.7f\n", loss, expected);
  CHECK_NEAR(expected, loss, 1e-6);
  CHECK_NEAR(0.75, pt[0], 1e-6);
  CHECK_NEAR(0.5, ps[1], 1e-6);
  /* dlogits = dloss · T (p_s − p_t) / B = 1 · 2 · (½ − ¾) / 2 = −¼ on row 0, class 0; 0 on
   * row 1; accumulated onto what was there. */
  float d[4] = {1.0f, 1.0f, 1.0f, 1.0f};
  kd_loss_backward(d, ps, pt, 2.0f, 1.0f, 2, 2);
  CHECK_NEAR(0.75, d[0], 1e-6);
  CHECK_NEAR(1.25, d[1], 1e-6);
  CHECK_NEAR(1.0, d[2], 1e-6);

  /* A teacher so confident that p_t underflows to 0 in two classes: finite, and equal to the
   * reference; a student equal to the teacher gives 0. */
  kd_context_t k = {.T = 1.0, .B = 1};
  float s1[KC], t1[KC], ps1[KC], pt1[KC];
  fill_uniform(s1, KC, -2, 2);
  for (int c = 0; c < KC; c++) t1[c] = 0.0f;
  t1[0] = 1000.0f;
  t1[1] = -1000.0f;
  to_double(k.s, s1, KC);
  to_double(k.t, t1, KC);
  float confident = kd_loss_forward(ps1, pt1, s1, t1, 1.0f, 1, KC);
  CHECK(isfinite(confident));
  CHECK(pt1[1] == 0.0f);
  CHECK_NEAR(kd_reference(&k), confident, 1e-5);
  CHECK_NEAR(0.0, kd_loss_forward(ps1, pt1, t1, t1, 3.0f, 1, KC), 1e-7);

  /* Agreement: top-1 equal in rows 0 and 2, ties to the lowest index (row 2: both 0). */
  float a[3 * 3] = {0, 5, 1, 2, 1, 0, 1, 1, 0}, b[3 * 3] = {1, 3, 2, 0, 1, 0, 4, 4, 4};
  CHECK_INT(2, kd_agreement(a, b, 3, 3));
}

static void test_kd_gradient(void) {
  printf("KD gradient (B=%d, C=%d) at T = 1, 4, 8\n", KB, KC);
  float s[KB * KC], t[KB * KC], ps[KB * KC], pt[KB * KC];
  fill_uniform(s, KB * KC, -2, 2);
  fill_uniform(t, KB * KC, -3, 3);
  const float temperatures[3] = {1.0f, 4.0f, 8.0f};
  double norms[3];
  for (int i = 0; i < 3; i++) {
    float T = temperatures[i];
    kd_context_t k = {.T = T, .B = KB};
    to_double(k.s, s, KB * KC);
    to_double(k.t, t, KB * KC);
    float loss = kd_loss_forward(ps, pt, s, t, T, KB, KC);
    double reference = kd_reference(&k);
    printf("  T=%g: loss %.7f, reference %.7f\n", T, loss, reference);
    CHECK_NEAR(reference, loss, 1e-5);
    /* Weighted by 0.3, as a stage's distill_weight would. */
    float d[KB * KC] = {0};
    kd_loss_backward(d, ps, pt, T, 0.3f, KB, KC);
    double numeric[KB * KC];
    numeric_gradient(numeric, k.s, KB * KC, kd_reference, &k, 0.3);
    check_gradient("dlogits", d, numeric, KB * KC, 1e-4);
    double sum = 0.0;
    for (int j = 0; j < KB * KC; j++) sum += (double)d[j] * d[j];
    norms[i] = sqrt(sum);
  }
  /* With T², the gradient tends to (s − t, centred) / (C·B) as T grows, whatever T: the
   * norms at 4 and 8 are close, and T = 1 is within a small factor. Without T² (norm / T²)
   * doubling T would divide the gradient by ~4. */
  printf("  |grad| with T²: %.4f %.4f %.4f; without: %.4f %.5f %.5f\n", norms[0], norms[1],
         norms[2], norms[0], norms[1] / 16, norms[2] / 64);
  CHECK(norms[2] / norms[1] > 0.8 && norms[2] / norms[1] < 1.25);
  CHECK(norms[0] / norms[2] > 0.25 && norms[0] / norms[2] < 4.0);
  CHECK((norms[1] / 16) / (norms[2] / 64) > 3.0);
}

/* ---------------------------------------------------------------------------------------
 * 1×1 convolution against the definition */

static void test_conv1x1(void) {
  printf("1x1 convolution forward\n");
  enum { B = 3, CIN = 4, COUT = 5, P = 6 };
  float x[B * CIN * P], w[COUT * CIN], bias[COUT], out[B * COUT * P];
  fill_uniform(x, B * CIN * P, -1, 1);
  fill_uniform(w, COUT * CIN, -1, 1);
  fill_uniform(bias, COUT, -1, 1);
  feature_conv1x1_forward(out, x, w, bias, B, CIN, COUT, P);
  double worst = 0.0;
  for (int b = 0; b < B; b++)
    for (int o = 0; o < COUT; o++)
      for (int p = 0; p < P; p++) {
        double e = bias[o];
        for (int i = 0; i < CIN; i++) e += (double)w[o * CIN + i] * x[(b * CIN + i) * P + p];
        worst = fmax(worst, fabs(e - out[(b * COUT + o) * P + p]));
      }
  printf("  max |error| %.2e\n", worst);
  CHECK(worst < 1e-5);
}

/* ---------------------------------------------------------------------------------------
 * Feature pairs */

enum { FB = 5, FMAX = 2048 };

typedef struct {
  const distill_feature_t *f;
  double params[FMAX], student[FMAX], teacher[FMAX]; /* the layers' maps, before any pooling */
  double targets[FB * 2]; /* the gate's y */
  int B;
  double mse;  /* out: the ungated MSE */
} feature_context_t;

/* Adaptive average pooling of B examples' (C,H,W) maps to (C,OH,OW), from the definition:
 * output (i, j) is the mean of rows floor(iH/OH) … ceil((i+1)H/OH) − 1 and the same columns. */
static void pool_reference(double *out, const double *in, int B, int C, int H, int W, int OH, int OW) {
  for (int plane = 0; plane < B * C; plane++)
    for (int i = 0; i < OH; i++)
      for (int j = 0; j < OW; j++) {
        const int h0 = (int)floor((double)i * H / OH), h1 = (int)ceil((double)(i + 1) * H / OH);
        const int w0 = (int)floor((double)j * W / OW), w1 = (int)ceil((double)(j + 1) * W / OW);
        double sum = 0.0;
        for (int h = h0; h < h1; h++)
          for (int w = w0; w < w1; w++) sum += in[(plane * H + h) * W + w];
        out[(plane * OH + i) * OW + j] = sum / ((h1 - h0) * (w1 - w0));
      }
}

/* The teacher's side at the compared size (B,D). */
static void teacher_reference(const feature_context_t *k, double *out) {
  const distill_feature_t *f = k->f;
  pool_reference(out, k->teacher, k->B, f->teacher_channels, f->teacher_height, f->teacher_width, f->height, f->width);
}

/* The gate's score of example b: w · t_b + c. */
static double gate_score_reference(const feature_context_t *k, int b) {
  const distill_feature_t *f = k->f;
  const int D = f->teacher_channels * f->pixels;
  static double t[FMAX];
  teacher_reference(k, t);
  double g = k->params[f->gate_bias];
  for (int i = 0; i < D; i++) g += k->params[f->gate_weight + i] * t[b * D + i];
  return g;
}

/* The pair's loss in double from the formulas in distill.h, reading the parameters at the
 * pair's offsets. Flat features are the P = 1 case of the same arithmetic. When `aligned`
 * is given it receives y (B,D). */
static double feature_reference_aligned(feature_context_t *k, double *aligned, double *target) {
  const distill_feature_t *f = k->f;
  const int Cs = f->student_channels, Ct = f->teacher_channels, P = f->pixels, D = Ct * P;
  static double y[FMAX], z[FMAX], s[FMAX], t[FMAX];
  pool_reference(s, k->student, k->B, Cs, f->student_height, f->student_width, f->height, f->width);
  teacher_reference(k, t);
  for (int b = 0; b < k->B; b++) {
    for (int c = 0; c < Ct; c++)
      for (int p = 0; p < P; p++) {
        double sum = k->params[f->adapter_bias + c];
        for (int i = 0; i < Cs; i++)
          sum += k->params[f->adapter_weight + c * Cs + i] * s[(b * Cs + i) * P + p];
        y[b * D + c * P + p] = sum;
      }
    for (int i = 0; i < D; i++) z[b * D + i] = t[b * D + i];
    if (f->normalize) {
      double ny = 0.0, nz = 0.0;
      for (int i = 0; i < D; i++) {
        ny += y[b * D + i] * y[b * D + i];
        nz += z[b * D + i] * z[b * D + i];
      }
      ny = sqrt(D / (ny + FEATURE_NORM_EPS));
      nz = sqrt(D / (nz + FEATURE_NORM_EPS));
      for (int i = 0; i < D; i++) {
        y[b * D + i] *= ny;
        z[b * D + i] *= nz;
      }
    }
  }
  if (aligned) memcpy(aligned, y, sizeof(double) * k->B * D);
  if (target) memcpy(target, z, sizeof(double) * k->B * D);
  double e[FB * 2], total = 0.0;
  for (int b = 0; b < k->B; b++) {
    e[b] = 0.0;
    for (int i = 0; i < D; i++) e[b] += (y[b * D + i] - z[b * D + i]) * (y[b * D + i] - z[b * D + i]);
    total += e[b];
  }
  k->mse = total / (k->B * D);
  if (f->gate == CFG_GATE_NONE) return k->mse;
  /* softmax: a = B softmax(σ(g)); mean_one: a = σ(g) / mean σ(g), literally. */
  double g[FB * 2], sum = 0.0;
  for (int b = 0; b < k->B; b++) {
    g[b] = gate_score_reference(k, b);
    sum += f->gate == CFG_GATE_SOFTMAX ? exp(sigmoid(g[b])) : sigmoid(g[b]);
  }
  double weighted = 0.0;
  for (int b = 0; b < k->B; b++)
    weighted += k->B * (f->gate == CFG_GATE_SOFTMAX ? exp(sigmoid(g[b])) : sigmoid(g[b])) / sum * e[b];
  return weighted / (k->B * D);
}

static double feature_reference(void *context) {
  return feature_reference_aligned(context, NULL, NULL);
}

/* The gate's loss, literally: mean_b −y log σ(g) − (1 − y) log(1 − σ(g)). */
static double gate_bce_reference(void *context) {
  feature_context_t *k = context;
  double total = 0.0;
  for (int b = 0; b < k->B; b++) {
    double g = gate_score_reference(k, b);
    total -= k->targets[b] * log(sigmoid(g)) + (1.0 - k->targets[b]) * log(1.0 - sigmoid(g));
  }
  return total / k->B;
}

/* A pair of a student map (Cs,Hs,Ws) and a teacher map (Ct,Ht,Wt); 1×1 maps are flat
 * features, equal sizes laid out by distill_feature_layout, others by _maps (pooled). */
static void check_feature_pair_maps(int Cs, int Hs, int Ws, int Ct, int Ht, int Wt, int normalize, cfg_gate_t gate) {
  static const char *const gates[] = {"none", "softmax", "mean_one"};
  const int flat = Hs * Ws == 1 && Ht * Wt == 1, same = Hs == Ht && Ws == Wt;
  printf("  %s %d->%d (%dx%d -> %dx%d%s), normalize %d, gate %s\n", flat ? "flat" : "map", Cs, Ct, Hs, Ws, Ht, Wt,
         same ? "" : ", pooled", normalize, gates[gate]);
  /* The pair starts at nonzero offsets, as the second piece of a slab would. */
  size_t n_params = 7, n_scratch = 3;
  distill_feature_t f;
  const cfg_shape_t student_shape = {Cs, Hs, Ws, !flat}, teacher_shape = {Ct, Ht, Wt, !flat};
  if (same)
    CHECK_INT(0, distill_feature_layout(&f, Cs, Ct, Hs * Ws, normalize, gate, FB + 2, &n_params, &n_scratch));
  else
    CHECK_INT(0, distill_feature_layout_maps(&f, &student_shape, &teacher_shape, normalize, gate, FB + 2, &n_params,
                                             &n_scratch));
  CHECK_INT(7, f.first_param);
  CHECK_INT(n_params, f.first_param + f.n_params);
  CHECK_INT((Hs < Ht ? Hs : Ht) * (Ws < Wt ? Ws : Wt), f.pixels);
  const int P = Hs * Ws; /* the student's own pixels: its map and its gradient */
  const int D = Ct * f.pixels, TD = Ct * Ht * Wt;
  float *params = calloc(n_params, sizeof(float)), *grads = calloc(n_params, sizeof(float));
  float *scratch = calloc(n_scratch, sizeof(float));
  static float student[FMAX], teacher[FMAX], dstudent[FMAX];
  distill_feature_init(&f, params, 11, 0);
  fill_uniform(params + f.adapter_bias, Ct, -0.3f, 0.3f);
  if (gate != CFG_GATE_NONE) {
    fill_uniform(params + f.gate_weight, D, -0.8f, 0.8f); /* weights far from uniform */
    params[f.gate_bias] = 0.3f;
  }
  fill_uniform(student, FB * Cs * P, -1, 1);
  fill_uniform(teacher, FB * TD, -1.5f, 1.5f);
  float targets[FB] = {1, 0, 1, 1, 0}; /* is the teacher right about example b? */

  distill_feature_stats_t stats;
  float loss = distill_feature_forward(&f, scratch, params, student, teacher,
                                       gate == CFG_GATE_NONE ? NULL : targets, FB, &stats);
  feature_context_t *k = calloc(1, sizeof *k);
  k->f = &f;
  k->B = FB;
  to_double(k->params, params, n_params);
  to_double(k->student, student, (size_t)FB * Cs * P);
  to_double(k->teacher, teacher, (size_t)FB * TD);
  to_double(k->targets, targets, FB);
  double reference = feature_reference(k);
  printf("    loss %.7f (reference %.7f), ungated mse %.7f (reference %.7f)\n", loss, reference,
         stats.mse, k->mse);
  CHECK_NEAR(reference, loss, 1e-5);
  CHECK_NEAR(k->mse, stats.mse, 1e-5);
  if (gate != CFG_GATE_NONE) {
    const float *w = scratch + f.weights, *g = scratch + f.scores;
    double sum = 0.0;
    int right = 0;
    for (int b = 0; b < FB; b++) {
      sum += w[b];
      right += (g[b] > 0.0f) == (targets[b] > 0.5f);
    }
    CHECK_NEAR(1.0, sum / FB, 1e-6);
    CHECK(stats.gate.weight_min < 0.95 && stats.gate.weight_max > 1.05);
    CHECK(stats.gate.effective_fraction > 0.2 && stats.gate.effective_fraction < 1.0);
    double bce = gate_bce_reference(k);
    printf("    gate loss %.7f (reference %.7f), accuracy %.2f\n", stats.gate.loss, bce,
           stats.gate.accuracy);
    CHECK_NEAR(bce, stats.gate.loss, 1e-6);
    CHECK_NEAR((double)right / FB, stats.gate.accuracy, 1e-12);
  }

  /* Backward with the feature loss weighted 0.7 and the gate's loss 0.3, accumulating onto
   * 0.25 everywhere. */
  for (size_t i = 0; i < n_params; i++) grads[i] = 0.25f;
  for (int i = 0; i < FB * Cs * P; i++) dstudent[i] = 0.25f;
  distill_feature_backward(&f, dstudent, grads, scratch, params, student, teacher, 0.7f, 0.3f, FB);
  for (size_t i = 0; i < n_params; i++) grads[i] -= 0.25f;
  for (int i = 0; i < FB * Cs * P; i++) dstudent[i] -= 0.25f;
  CHECK(grads[0] == 0.0f && grads[6] == 0.0f); /* outside the pair: untouched */

  /* The adapter and the student against the feature loss with the gate's weights as they are
   * (the reference recomputes them from the same gate parameters, which do not move here). */
  double *numeric = calloc(FMAX, sizeof(double));
  numeric_gradient(numeric, k->params + f.adapter_weight, Ct * Cs, feature_reference, k, 0.7);
  check_gradient("adapter weight", grads + f.adapter_weight, numeric, Ct * Cs, 2e-3);
  numeric_gradient(numeric, k->params + f.adapter_bias, Ct, feature_reference, k, 0.7);
  check_gradient("adapter bias", grads + f.adapter_bias, numeric, Ct, 2e-3);
  if (gate != CFG_GATE_NONE) {
    /* The gate against its BCE alone: any share of the feature loss would show here. */
    numeric_gradient(numeric, k->params + f.gate_weight, D, gate_bce_reference, k, 0.3);
    check_gradient("gate weight (bce)", grads + f.gate_weight, numeric, D, 2e-3);
    numeric_gradient(numeric, k->params + f.gate_bias, 1, gate_bce_reference, k, 0.3);
    check_gradient("gate bias (bce)", grads + f.gate_bias, numeric, 1, 2e-3);
  }
  numeric_gradient(numeric, k->student, FB * Cs * P, feature_reference, k, 0.7);
  check_gradient("student feature", dstudent, numeric, FB * Cs * P, 2e-3);

  if (gate != CFG_GATE_NONE) {
    /* Stop-gradient: with the gate's own loss at weight 0, the feature loss (weight 0.7, the
     * weights far from uniform) leaves the gate's gradients exactly as they were, while the
     * adapter's move. */
    for (size_t i = 0; i < n_params; i++) grads[i] = 0.25f;
    distill_feature_forward(&f, scratch, params, student, teacher, targets, FB, NULL);
    distill_feature_backward(&f, NULL, grads, scratch, params, student, teacher, 0.7f, 0.0f, FB);
    int untouched = 1;
    for (int i = 0; i <= D; i++) untouched &= grads[f.gate_weight + i] == 0.25f;
    printf("    feature loss alone: gate gradient %s, adapter's moved to %.4g\n",
           untouched ? "exactly zero" : "NOT ZERO", grads[f.adapter_weight] - 0.25f);
    CHECK(untouched);
    CHECK(grads[f.adapter_weight] != 0.25f);
  }

  free(numeric);
  free(k);
  free(params);
  free(grads);
  free(scratch);
}

static void test_feature_pairs(void) {
  printf("feature pairs (B=%d): loss and gradients against a double reference\n", FB);
  for (int gate = CFG_GATE_NONE; gate <= CFG_GATE_MEAN_ONE; gate++) {
    for (int normalize = 0; normalize <= 1; normalize++) {
      check_feature_pair_maps(5, 1, 1, 4, 1, 1, normalize, (cfg_gate_t)gate);
      check_feature_pair_maps(3, 2, 3, 4, 2, 3, normalize, (cfg_gate_t)gate);
      /* Multi-scale: the student's map pooled (7×7 → 3×3 adaptive, overlapping windows;
       * 14×14 → 7×7, plain 2×2), the teacher's (5×5 → 3×3). */
      check_feature_pair_maps(2, 7, 7, 3, 3, 3, normalize, (cfg_gate_t)gate);
      check_feature_pair_maps(2, 5, 3, 3, 3, 3, normalize, (cfg_gate_t)gate);
      check_feature_pair_maps(2, 3, 3, 2, 5, 5, normalize, (cfg_gate_t)gate);
    }
  }
  check_feature_pair_maps(1, 14, 14, 2, 7, 7, 1, CFG_GATE_NONE);
}

/* The pooling kernel against the definition (overlapping windows for 7 → 3), as plain 2×2
 * average pooling for 14 → 7, and its backward against central differences of
 * Σ dout · pool(x) for odd sizes. */
static void test_avgpool(void) {
  printf("adaptive average pooling\n");
  enum { B = 2, C = 3 };
  static const int sizes[][4] = {{7, 7, 3, 3}, {14, 14, 7, 7}, {5, 5, 3, 3}, {5, 7, 2, 3}, {4, 4, 4, 4}};
  for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
    const int H = sizes[c][0], W = sizes[c][1], OH = sizes[c][2], OW = sizes[c][3];
    const int n = B * C * H * W, m = B * C * OH * OW;
    static float x[FMAX], y[FMAX], dy[FMAX], dx[FMAX];
    static double xd[FMAX], yd[FMAX], numeric[FMAX];
    fill_uniform(x, n, -1, 1);
    fill_uniform(dy, m, -1, 1);
    feature_avgpool_forward(y, x, B, C, H, W, OH, OW);
    to_double(xd, x, (size_t)n);
    pool_reference(yd, xd, B, C, H, W, OH, OW);
    double worst = 0.0;
    for (int i = 0; i < m; i++) worst = fmax(worst, fabs(yd[i] - y[i]));
    for (int i = 0; i < n; i++) dx[i] = 0.5f;
    feature_avgpool_backward(dx, dy, B, C, H, W, OH, OW);
    for (int i = 0; i < n; i++) dx[i] -= 0.5f;
    /* ∂/∂x_i Σ_j dy_j pool(x)_j: linear, so the differences are exact up to rounding. */
    for (int i = 0; i < n; i++) {
      const double saved = xd[i];
      double sums[2];
      for (int side = 0; side < 2; side++) {
        xd[i] = saved + (side ? -1e-3 : 1e-3);
        pool_reference(yd, xd, B, C, H, W, OH, OW);
        sums[side] = 0.0;
        for (int j = 0; j < m; j++) sums[side] += dy[j] * yd[j];
      }
      xd[i] = saved;
      numeric[i] = (sums[0] - sums[1]) / 2e-3;
    }
    printf("    %dx%d -> %dx%d: forward max |error| %.2e\n", H, W, OH, OW, worst);
    CHECK(worst < 1e-6);
    char name[64];
    snprintf(name, sizeof name, "pool %dx%d->%dx%d", H, W, OH, OW);
    check_gradient(name, dx, numeric, n, 1e-4);
  }
  /* By hand: 7 → 3 takes rows and columns 0–2, 2–4, 4–6; 14 → 7 is 2×2 average pooling. */
  float x[49], y[9];
  for (int i = 0; i < 49; i++) x[i] = (float)i;
  feature_avgpool_forward(y, x, 1, 1, 7, 7, 3, 3);
  CHECK_NEAR((0 + 1 + 2 + 7 + 8 + 9 + 14 + 15 + 16) / 9.0, y[0], 1e-6);
  CHECK_NEAR((16 + 17 + 18 + 23 + 24 + 25 + 30 + 31 + 32) / 9.0, y[4], 1e-6);
  float big[196], small[49];
  for (int i = 0; i < 196; i++) big[i] = (float)((i * 37) % 11);
  feature_avgpool_forward(small, big, 1, 1, 14, 14, 7, 7);
  int plain = 1;
  for (int i = 0; i < 7; i++)
    for (int j = 0; j < 7; j++)
      plain &= small[i * 7 + j] == (big[2 * i * 14 + 2 * j] + big[2 * i * 14 + 2 * j + 1] + big[(2 * i + 1) * 14 + 2 * j] +
                                    big[(2 * i + 1) * 14 + 2 * j + 1]) / 4.0f;
  CHECK(plain);
}

/* The per-element mean is the fix for the report's symptom: the same per-element mismatch
 * gives the same loss at width 8 and 1024, where a sum over dimensions grows 128×. */
static void test_feature_scale(void) {
  printf("feature loss scale does not grow with the width\n");
  enum { B = 4 };
  double losses[2];
  const int widths[2] = {8, 1024};
  for (int w = 0; w < 2; w++) {
    const int D = widths[w];
    float *a = malloc(sizeof(float) * B * D), *t = malloc(sizeof(float) * B * D), errors[B];
    for (int i = 0; i < B * D; i++) {
      a[i] = (i % 2) ? 0.5f : -0.5f; /* every element off by exactly 1 */
      t[i] = -a[i];
    }
    losses[w] = feature_mse_forward(errors, a, t, B, D);
    printf("  D=%4d: per-element mse %.4f, per-example sum %.1f\n", D, losses[w], (double)errors[0]);
    free(a);
    free(t);
  }
  CHECK_NEAR(1.0, losses[0], 1e-6);
  CHECK_NEAR(1.0, losses[1], 1e-6);

  /* Normalised, the loss is 2 − 2 cos: 0 for parallel, 2 for orthogonal, 4 for opposite. */
  enum { D = 6 };
  float x[3 * D] = {1, 2, 3, 4, 5, 6, 1, -1, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0};
  float y[3 * D] = {2, 4, 6, 8, 10, 12, 1, 1, 0, 0, 0, 0, -0.1f, 0, 0, 0, 0, 0};
  float nx[3 * D], ny[3 * D], norms[3], errors[3];
  feature_normalize_forward(nx, norms, x, 3, D);
  feature_normalize_forward(ny, norms, y, 3, D);
  feature_mse_forward(errors, nx, ny, 3, D);
  printf("  normalised: parallel %.6f, orthogonal %.6f, opposite %.6f\n", errors[0] / D,
         errors[1] / D, errors[2] / D);
  CHECK_NEAR(0.0, errors[0] / D, 1e-6);
  CHECK_NEAR(2.0, errors[1] / D, 1e-6);
  CHECK_NEAR(4.0, errors[2] / D, 1e-6);
}

/* ---------------------------------------------------------------------------------------
 * The gate cannot collapse */

/* The report's selective loss: mse(y, t · σ(g)), mean over B·D. */
static double report_selective_loss(const float *y, const float *t, const float *g, int B, int D) {
  double total = 0.0;
  for (int b = 0; b < B; b++) {
    double gate = sigmoid(g[b]);
    for (int i = 0; i < D; i++) {
      double diff = y[b * D + i] - gate * t[b * D + i];
      total += diff * diff;
    }
  }
  return total / ((double)B * D);
}

static void test_gate_cannot_collapse(void) {
  printf("the gate cannot drive the loss to zero (B=8, flat 4->6)\n");
  enum { B = 8, Cs = 4, Ct = 6 };
  for (int mode = CFG_GATE_SOFTMAX; mode <= CFG_GATE_MEAN_ONE; mode++) {
    size_t n_params = 0, n_scratch = 0;
    distill_feature_t f;
    CHECK_INT(0, distill_feature_layout(&f, Cs, Ct, 1, 0, (cfg_gate_t)mode, B, &n_params, &n_scratch));
    float params[64], *scratch = calloc(n_scratch, sizeof(float));
    float student[B * Cs], teacher[B * Ct], targets[B] = {1, 1, 0, 1, 1, 1, 0, 1};
    distill_feature_init(&f, params, 5, 0);
    fill_uniform(student, B * Cs, -1, 1);
    fill_uniform(teacher, B * Ct, -1, 1);
    printf("  %s\n", mode == CFG_GATE_SOFTMAX ? "softmax" : "mean_one");

    /* A zero gate scores every example the same: the weights are exactly 1, the loss is the
     * plain MSE, and gate/mean shows the raw gate is ~0 (σ(−50) ≈ 2e-22). */
    params[f.gate_bias] = -50.0f;
    distill_feature_stats_t stats;
    float loss = distill_feature_forward(&f, scratch, params, student, teacher, targets, B, &stats);
    printf("    bias -50, zero weight: loss %.6f, ungated mse %.6f, gate/mean %.3g\n", loss,
           stats.mse, stats.gate.mean);
    CHECK_NEAR(stats.mse, loss, 1e-6);
    CHECK(stats.mse > 0.1);
    CHECK(stats.gate.mean < 1e-20);
    CHECK_NEAR(1.0, stats.gate.weight_min, 1e-6);
    CHECK_NEAR(1.0, stats.gate.effective_fraction, 1e-6);

    /* Far beyond float's range for σ (σ(−200) underflows): still exact. */
    params[f.gate_bias] = -200.0f;
    loss = distill_feature_forward(&f, scratch, params, student, teacher, targets, B, &stats);
    CHECK(isfinite(loss));
    CHECK_NEAR(stats.mse, loss, 1e-6);

    /* A gate that prefers some examples (mean_one still at bias −50, where only the ratios
     * of σ(g) ≈ e^g are left; softmax at 0, where σ(g) spreads over (0, 1)): the loss is the
     * weighted MSE Σ a_b e_b / (B·D) with weights averaging 1, so it stays between the
     * smallest and the largest per-example error — never near zero while the errors are not. */
    const float bias = mode == CFG_GATE_MEAN_ONE ? -50.0f : 0.0f;
    params[f.gate_bias] = bias;
    fill_uniform(params + f.gate_weight, Ct, -4.0f, 4.0f);
    loss = distill_feature_forward(&f, scratch, params, student, teacher, targets, B, &stats);
    const float *a = scratch + f.weights, *e = scratch + f.errors;
    double weighted = 0.0, lo = INFINITY, hi = 0.0, sum = 0.0;
    for (int b = 0; b < B; b++) {
      weighted += (double)a[b] * e[b];
      sum += a[b];
      lo = fmin(lo, e[b] / Ct);
      hi = fmax(hi, e[b] / Ct);
    }
    weighted /= B * Ct;
    printf("    bias %g, some weight: loss %.6f = weighted mse %.6f, per-example [%.4f, %.4f], "
           "weights [%.3f, %.3f], effective fraction %.3f\n",
           bias, loss, weighted, lo, hi, stats.gate.weight_min, stats.gate.weight_max,
           stats.gate.effective_fraction);
    CHECK_NEAR(weighted, loss, 1e-6);
    CHECK_NEAR((double)B, sum, 1e-5);
    CHECK(loss >= lo * (1 - 1e-6) && loss <= hi * (1 + 1e-6));
    CHECK(stats.gate.weight_max > 1.2); /* the weights really are uneven */
    if (mode == CFG_GATE_SOFTMAX) CHECK(stats.gate.weight_max / stats.gate.weight_min <= exp(1.0) + 1e-5);

    /* The report's formulation at the same place: its target t·σ(g) is ~0, so a student (here
     * the adapter) that outputs zero scores ~0 — the trivial minimum the report's gate finds.
     * Ours at the same point: the plain MSE of 0 against the teacher. */
    memset(params + f.adapter_weight, 0, sizeof(float) * Ct * Cs);
    memset(params + f.adapter_bias, 0, sizeof(float) * Ct);
    memset(params + f.gate_weight, 0, sizeof(float) * Ct);
    params[f.gate_bias] = -50.0f;
    loss = distill_feature_forward(&f, scratch, params, student, teacher, targets, B, &stats);
    const float *y = scratch + f.aligned, *g = scratch + f.scores;
    float g_zero[B] = {0};
    double report_open = report_selective_loss(y, teacher, g_zero, B, Ct);
    double report_closed = report_selective_loss(y, teacher, g, B, Ct);
    double mean_square = 0.0;
    for (int i = 0; i < B * Ct; i++) mean_square += (double)teacher[i] * teacher[i];
    mean_square /= B * Ct;
    printf("    zero adapter: report-style loss %.4f at gate 0.5, %.3g at gate ~0; ours %.4f "
           "(= mean t² %.4f)\n",
           report_open, report_closed, loss, mean_square);
    CHECK(report_closed < 1e-30);
    CHECK(report_open > 0.01);
    CHECK_NEAR(mean_square, loss, 1e-6);
    free(scratch);
  }
}

/* ---------------------------------------------------------------------------------------
 * The gate learns its target and does not concentrate
 *
 * Synthetic batches, fresh every step: a latent z (L); the teacher's feature t = relu(A z +
 * noise) (Ct, ≥ 0 like a hidden layer's); the student's s = M z + noise (Cs), from which an
 * adapter can predict t; the teacher is "right" (y = 1) when q·t + r + noise > 0, about 80%
 * of the time. The adapter trains with SGD at lr 0.05, momentum 0.9 — the setting in which the
 * old gate, trained by the loss it weights, put every weight on one example and, unnormalised,
 * diverged. */

enum { LB = 64, LCS = 6, LCT = 12, LL = 4, LSTEPS = 400 };

typedef struct {
  float A[LCT * LL], M[LCS * LL], q[LCT];
  rng_t rng;
} gate_world_t;

static void gate_world_init(gate_world_t *w, uint64_t seed) {
  rng_seed(&w->rng, seed, 0, 0);
  for (int i = 0; i < LCT * LL; i++) w->A[i] = (float)(1.2 * rng_normal(&w->rng));
  for (int i = 0; i < LCS * LL; i++) w->M[i] = (float)rng_normal(&w->rng);
  for (int i = 0; i < LCT; i++) w->q[i] = (float)rng_normal(&w->rng);
}

static void gate_world_batch(gate_world_t *w, float *student, float *teacher, float *targets) {
  for (int b = 0; b < LB; b++) {
    double z[LL];
    for (int l = 0; l < LL; l++) z[l] = rng_normal(&w->rng);
    double score = 3.0 + 0.5 * rng_normal(&w->rng);
    for (int c = 0; c < LCT; c++) {
      double x = 0.3 * rng_normal(&w->rng);
      for (int l = 0; l < LL; l++) x += w->A[c * LL + l] * z[l];
      teacher[b * LCT + c] = (float)fmax(0.0, x);
      score += w->q[c] * teacher[b * LCT + c] / 2.0;
    }
    for (int c = 0; c < LCS; c++) {
      double x = 0.1 * rng_normal(&w->rng);
      for (int l = 0; l < LL; l++) x += w->M[c * LL + l] * z[l];
      student[b * LCS + c] = (float)x;
    }
    targets[b] = score > 0.0 ? 1.0f : 0.0f;
  }
}

/* What the gate got before: the gradient of dloss × Σ a_b e_b / (B·D) with respect to its
 * parameters, through the normalisation (a = B·softmax(u), u = g or log σ(g)), written here
 * from the formulas to show what the stop-gradient prevents. */
static void old_gate_backward(const distill_feature_t *f, float *grads, const float *scratch,
                              const float *teacher, float dloss, int B) {
  const int D = f->teacher_channels * f->pixels;
  const float *a = scratch + f->weights, *e = scratch + f->errors, *g = scratch + f->scores;
  double mean = 0.0, dg[LB];
  for (int b = 0; b < B; b++) mean += (double)a[b] / B * dloss * e[b] / ((double)B * D);
  for (int j = 0; j < B; j++) {
    double du = a[j] * (dloss * e[j] / ((double)B * D) - mean);
    dg[j] = f->gate == CFG_GATE_MEAN_ONE ? du * sigmoid(-(double)g[j]) : du;
    for (int i = 0; i < D; i++) grads[f->gate_weight + i] += (float)(dg[j] * teacher[j * D + i]);
    grads[f->gate_bias] += (float)dg[j];
  }
}

typedef struct {
  double min_fraction, mean_fraction_late, accuracy_late, base_rate, bce_first, bce_late;
  double mse_first, mse_late;
  int finite;
} gate_run_t;

/* LSTEPS steps of a gated pair on the synthetic world, the adapter by SGD and the gate by its
 * own Adam as the trainer does; old = 1 trains the gate as it was, by the loss it weights and
 * the adapter's SGD. "late" figures average the last 50 steps, "first" the first 10. */
static gate_run_t gate_run(cfg_gate_t mode, int normalize, int old) {
  size_t n_params = 0, n_scratch = 0;
  distill_feature_t f;
  CHECK_INT(0, distill_feature_layout(&f, LCS, LCT, 1, normalize, mode, LB, &n_params, &n_scratch));
  float *params = calloc(n_params, sizeof(float)), *grads = calloc(n_params, sizeof(float));
  float *velocity = calloc(n_params, sizeof(float)), *scratch = calloc(n_scratch, sizeof(float));
  float *adam_m = calloc(n_params, sizeof(float)), *adam_v = calloc(n_params, sizeof(float));
  float student[LB * LCS], teacher[LB * LCT], targets[LB];
  distill_feature_init(&f, params, 3, 0);
  gate_world_t world;
  gate_world_init(&world, 99);
  gate_run_t r = {.min_fraction = 1.0, .finite = 1};
  double ones = 0.0;
  for (int step = 0; step < LSTEPS; step++) {
    gate_world_batch(&world, student, teacher, targets);
    distill_feature_stats_t stats;
    float loss = distill_feature_forward(&f, scratch, params, student, teacher, targets, LB, &stats);
    r.finite &= isfinite(loss) && isfinite(stats.mse) && isfinite(stats.gate.loss);
    if (!r.finite) break;
    memset(grads, 0, n_params * sizeof(float));
    distill_feature_backward(&f, NULL, grads, scratch, params, student, teacher, 1.0f,
                             old ? 0.0f : 1.0f, LB);
    if (old) {
      /* As it was: the gate stepped with the adapter, by the student's SGD. */
      old_gate_backward(&f, grads, scratch, teacher, 1.0f, LB);
      optim_sgd_update(params, grads, velocity, n_params, 0, 0.05f, 0.9f, 0.0f);
    } else {
      /* As distiller_update does: the adapter by the student's SGD, the gate by its Adam. */
      optim_sgd_update(params, grads, velocity, f.gate_weight, 0, 0.05f, 0.9f, 0.0f);
      distill_feature_gate_step(&f, params, grads, adam_m, adam_v, step + 1);
    }
    r.min_fraction = fmin(r.min_fraction, stats.gate.effective_fraction);
    for (int b = 0; b < LB; b++) ones += targets[b];
    if (step < 10) {
      r.bce_first += stats.gate.loss / 10;
      r.mse_first += stats.mse / 10;
    }
    if (step >= LSTEPS - 50) {
      r.mean_fraction_late += stats.gate.effective_fraction / 50;
      r.accuracy_late += stats.gate.accuracy / 50;
      r.bce_late += stats.gate.loss / 50;
      r.mse_late += stats.mse / 50;
    }
  }
  r.base_rate = ones / ((double)LB * LSTEPS);
  if (r.base_rate < 0.5) r.base_rate = 1.0 - r.base_rate; /* always guessing the majority */
  free(params);
  free(grads);
  free(velocity);
  free(adam_m);
  free(adam_v);
  free(scratch);
  return r;
}

static void test_gate_learns(void) {
  printf("a gate trained %d steps (B=%d, flat %d->%d, adapter by SGD lr 0.05 momentum 0.9, gate "
         "by Adam lr %g)\n", LSTEPS, LB, LCS, LCT, GATE_ADAM_LR);
  for (int mode = CFG_GATE_SOFTMAX; mode <= CFG_GATE_MEAN_ONE; mode++) {
    for (int normalize = 0; normalize <= 1; normalize++) {
      gate_run_t r = gate_run((cfg_gate_t)mode, normalize, 0);
      printf("  %-8s normalize %d: accuracy %.3f (majority %.3f), bce %.3f -> %.3f, effective "
             "fraction min %.3f late %.3f, ungated mse %.3f -> %.3f\n",
             mode == CFG_GATE_SOFTMAX ? "softmax" : "mean_one", normalize, r.accuracy_late,
             r.base_rate, r.bce_first, r.bce_late, r.min_fraction, r.mean_fraction_late,
             r.mse_first, r.mse_late);
      CHECK(r.finite);
      CHECK(r.accuracy_late > r.base_rate + 0.05);
      CHECK(r.bce_late < 0.6 * r.bce_first);
      CHECK(r.mse_late < 0.5 * r.mse_first); /* the adapter learns under the weights */
      /* 1/B = 0.016 would be one example. mean_one's weights leave out about the examples
       * the gate distrusts (~22% here); softmax's are within a factor e of each other. */
      CHECK(r.min_fraction > 0.5);
    }
  }
  /* For contrast, the same gate trained by the loss it weights, as it was: the weights pile
   * onto the examples easiest to imitate. (Normalised, the errors are all in [0, 4] and the
   * pull is weaker; unnormalised it is plain.) */
  gate_run_t r = gate_run(CFG_GATE_MEAN_ONE, 0, 1);
  printf("  old objective, mean_one, normalize 0: effective fraction min %.3f late %.3f%s\n",
         r.min_fraction, r.mean_fraction_late, r.finite ? "" : ", diverged");
  CHECK(r.min_fraction < 0.25);
}

/* ---------------------------------------------------------------------------------------
 * Discriminator */

enum { DB = 4, DD = 6, DH = 5 };

typedef struct {
  const disc_t *d;
  double params[DD * DH + 2 * DH + 1];
  double real[DB * DD], fake[DB * DD];
} disc_context_t;

static double disc_reference_score(const disc_context_t *k, const double *x) {
  const disc_t *d = k->d;
  double score = k->params[d->bias2];
  for (int h = 0; h < DH; h++) {
    double pre = k->params[d->bias1 + h];
    for (int i = 0; i < DD; i++) pre += k->params[d->weight1 + h * DD + i] * x[i];
    score += k->params[d->weight2 + h] * fmax(0.0, pre);
  }
  return score;
}

static double disc_reference_loss(void *context) {
  disc_context_t *k = context;
  double total = 0.0;
  for (int b = 0; b < DB; b++) {
    double r = disc_reference_score(k, k->real + b * DD), f = disc_reference_score(k, k->fake + b * DD);
    if (k->d->loss == CFG_ADVERSARIAL_LSGAN)
      total += ((r - 1) * (r - 1) + f * f) / 2;
    else
      total += (-log(sigmoid(r)) - log(1 - sigmoid(f))) / 2; /* BCE, literally */
  }
  return total / DB;
}

static double generator_reference_loss(void *context) {
  disc_context_t *k = context;
  double total = 0.0;
  for (int b = 0; b < DB; b++) {
    double f = disc_reference_score(k, k->fake + b * DD);
    total += k->d->loss == CFG_ADVERSARIAL_LSGAN ? (f - 1) * (f - 1) / 2 : -log(sigmoid(f));
  }
  return total / DB;
}

static void test_discriminator(cfg_adversarial_loss_t loss_kind) {
  const char *name = loss_kind == CFG_ADVERSARIAL_LSGAN ? "lsgan" : "bce";
  printf("discriminator %s (B=%d, %d -> %d -> 1)\n", name, DB, DD, DH);
  size_t n_params = 3, n_scratch = 2; /* not at the start of the slabs */
  disc_t d;
  CHECK_INT(0, disc_layout(&d, DD, DH, loss_kind, DB, &n_params, &n_scratch));
  CHECK_INT(DD * DH + 2 * DH + 1, d.n_params);
  float *params = calloc(n_params + 4, sizeof(float)), *grads = calloc(n_params + 4, sizeof(float));
  float *scratch = calloc(n_scratch, sizeof(float));
  disc_init(&d, params + 0, 3, 9);
  fill_uniform(params + d.bias1, DH, -0.2f, 0.2f);
  params[d.bias2] = 0.1f;
  float real[DB * DD], fake[DB * DD];
  fill_uniform(real, DB * DD, -1, 1);
  fill_uniform(fake, DB * DD, -1, 1);

  disc_context_t *k = calloc(1, sizeof *k);
  k->d = &d;
  /* The reference reads offsets relative to the discriminator's first parameter. */
  disc_t shifted = d;
  shifted.weight1 -= d.first_param;
  shifted.bias1 -= d.first_param;
  shifted.weight2 -= d.first_param;
  shifted.bias2 -= d.first_param;
  k->d = &shifted;
  to_double(k->params, params + d.first_param, d.n_params);
  to_double(k->real, real, DB * DD);
  to_double(k->fake, fake, DB * DD);

  disc_stats_t stats;
  float loss = disc_forward(&d, scratch, params, real, fake, DB, &stats);
  double reference = disc_reference_loss(k);
  printf("  disc loss %.7f (reference %.7f), accuracy %.3f\n", loss, reference, stats.accuracy);
  CHECK_NEAR(reference, loss, 1e-5);
  disc_backward(&d, grads, scratch, params, real, fake, DB);
  double numeric[DD * DH + 2 * DH + 1];
  numeric_gradient(numeric, k->params, (int)d.n_params, disc_reference_loss, k, 1.0);
  check_gradient("discriminator params", grads + d.first_param, numeric, (int)d.n_params, 1e-3);
  CHECK(grads[0] == 0.0f && grads[n_params] == 0.0f);

  /* The generator's loss and its gradient w.r.t. the student's feature, weighted 0.4 and
   * accumulated onto 0.25; the discriminator's parameters and gradients stay as they were. */
  float *params_before = malloc(sizeof(float) * (n_params + 4)), *grads_before = malloc(sizeof(float) * (n_params + 4));
  memcpy(params_before, params, sizeof(float) * (n_params + 4));
  memcpy(grads_before, grads, sizeof(float) * (n_params + 4));
  float gen = disc_generator_forward(&d, scratch, params, fake, DB);
  double gen_reference = generator_reference_loss(k);
  printf("  generator loss %.7f (reference %.7f)\n", gen, gen_reference);
  CHECK_NEAR(gen_reference, gen, 1e-5);
  float dfake[DB * DD];
  for (int i = 0; i < DB * DD; i++) dfake[i] = 0.25f;
  disc_generator_backward(&d, dfake, scratch, params, 0.4f, DB);
  for (int i = 0; i < DB * DD; i++) dfake[i] -= 0.25f;
  double numeric_fake[DB * DD];
  numeric_gradient(numeric_fake, k->fake, DB * DD, generator_reference_loss, k, 0.4);
  check_gradient("student feature", dfake, numeric_fake, DB * DD, 2e-3);
  CHECK(memcmp(params, params_before, sizeof(float) * (n_params + 4)) == 0);
  CHECK(memcmp(grads, grads_before, sizeof(float) * (n_params + 4)) == 0);

  /* A discriminator step touches only its own range of the slabs. */
  float *m = calloc(n_params + 4, sizeof(float)), *v = calloc(n_params + 4, sizeof(float));
  for (size_t i = 0; i < n_params + 4; i++) grads[i] = 9.0f;
  disc_step(&d, params, grads, m, v, scratch, real, fake, 1e-2f, DB, &stats);
  CHECK_INT(1, d.steps);
  CHECK(grads[0] == 9.0f && grads[d.first_param - 1] == 9.0f && grads[n_params] == 9.0f);
  CHECK(params[0] == params_before[0] && params[n_params] == params_before[n_params]);
  CHECK(params[d.weight1] != params_before[d.weight1]);

  free(m);
  free(v);
  free(params_before);
  free(grads_before);
  free(k);
  free(params);
  free(grads);
  free(scratch);
}

/* Teacher features and student features that differ in the mean of their first dimension:
 * a few steps must teach the discriminator to tell them apart. */
static void test_discriminator_learns(cfg_adversarial_loss_t loss_kind) {
  enum { B = 32, D = 8, H = 16, STEPS = 60 };
  size_t n_params = 0, n_scratch = 0;
  disc_t d;
  CHECK_INT(0, disc_layout(&d, D, H, loss_kind, B, &n_params, &n_scratch));
  float *params = calloc(n_params, sizeof(float)), *grads = calloc(n_params, sizeof(float));
  float *m = calloc(n_params, sizeof(float)), *v = calloc(n_params, sizeof(float));
  float *scratch = calloc(n_scratch, sizeof(float));
  disc_init(&d, params, 1, 0);
  float real[B * D], fake[B * D];
  rng_t rng;
  rng_seed(&rng, 77, 0, 0);
  for (int i = 0; i < B * D; i++) {
    real[i] = (float)(0.5 * rng_normal(&rng) + (i % D == 0 ? 1.0 : 0.0));
    fake[i] = (float)(0.5 * rng_normal(&rng) - (i % D == 0 ? 1.0 : 0.0));
  }
  disc_stats_t first, last;
  disc_forward(&d, scratch, params, real, fake, B, &first);
  for (int s = 0; s < STEPS; s++) disc_step(&d, params, grads, m, v, scratch, real, fake, 1e-2f, B, NULL);
  disc_forward(&d, scratch, params, real, fake, B, &last);
  printf("discriminator %s learns separable features: accuracy %.3f -> %.3f, loss %.4f -> %.4f "
         "(%d steps); scores real %.3f fake %.3f\n",
         loss_kind == CFG_ADVERSARIAL_LSGAN ? "lsgan" : "bce", first.accuracy, last.accuracy,
         first.loss, last.loss, STEPS, last.real_score, last.fake_score);
  CHECK(last.accuracy >= 0.95);
  CHECK(last.accuracy > first.accuracy);
  CHECK(last.loss < 0.5 * first.loss);
  CHECK(last.real_score > last.fake_score);
  free(params);
  free(grads);
  free(m);
  free(v);
  free(scratch);
}

/* ---------------------------------------------------------------------------------------
 * Adversarial gradient through a feature pair into the student */

typedef struct {
  feature_context_t pair;
  disc_context_t disc;
  float w_feature, w_adv;
} combined_context_t;

/* w_feature · pair loss + w_adv · generator loss on the pair's aligned student feature. */
static double combined_reference(void *context) {
  combined_context_t *k = context;
  double aligned[FMAX];
  double feature = feature_reference_aligned(&k->pair, aligned, NULL);
  memcpy(k->disc.fake, aligned, sizeof(double) * DB * DD);
  return k->w_feature * feature + k->w_adv * generator_reference_loss(&k->disc);
}

static void test_adversarial_through_pair(cfg_adversarial_loss_t loss_kind) {
  printf("adversarial %s through a normalised map pair into the student (B=%d, 1x1 conv 2->3, "
         "2 pixels)\n", loss_kind == CFG_ADVERSARIAL_LSGAN ? "lsgan" : "bce", DB);
  enum { Cs = 2, Ct = 3, P = 2 }; /* D = Ct·P = DD */
  size_t n_params = 0, n_scratch = 0;
  distill_feature_t f;
  disc_t d;
  CHECK_INT(0, distill_feature_layout(&f, Cs, Ct, P, 1, CFG_GATE_NONE, DB, &n_params, &n_scratch));
  size_t disc_start = n_params;
  CHECK_INT(0, disc_layout(&d, Ct * P, DH, loss_kind, DB, &n_params, &n_scratch));
  float *params = calloc(n_params, sizeof(float)), *grads = calloc(n_params, sizeof(float));
  float *scratch = calloc(n_scratch, sizeof(float));
  distill_feature_init(&f, params, 4, 0);
  disc_init(&d, params, 4, 1);
  float student[DB * Cs * P], teacher[DB * DD], dstudent[DB * Cs * P] = {0};
  fill_uniform(student, DB * Cs * P, -1, 1);
  fill_uniform(teacher, DB * DD, -1, 1);

  const float w_feature = 0.1f, w_adv = 0.5f;
  distill_feature_forward(&f, scratch, params, student, teacher, NULL, DB, NULL);
  disc_generator_forward(&d, scratch, params, distill_feature_aligned(&f, scratch), DB);
  disc_generator_backward(&d, distill_feature_daligned(&f, scratch), scratch, params, w_adv, DB);
  distill_feature_backward(&f, dstudent, grads, scratch, params, student, teacher, w_feature, 0.0f, DB);

  combined_context_t *k = calloc(1, sizeof *k);
  k->pair.f = &f;
  k->pair.B = DB;
  to_double(k->pair.params, params, n_params);
  to_double(k->pair.student, student, DB * Cs * P);
  to_double(k->pair.teacher, teacher, DB * DD);
  disc_t shifted = d;
  shifted.weight1 -= disc_start;
  shifted.bias1 -= disc_start;
  shifted.weight2 -= disc_start;
  shifted.bias2 -= disc_start;
  k->disc.d = &shifted;
  to_double(k->disc.params, params + disc_start, d.n_params);
  k->w_feature = w_feature;
  k->w_adv = w_adv;
  double numeric[FMAX];
  numeric_gradient(numeric, k->pair.student, DB * Cs * P, combined_reference, k, 1.0);
  check_gradient("student feature", dstudent, numeric, DB * Cs * P, 2e-3);
  numeric_gradient(numeric, k->pair.params + f.adapter_weight, Ct * Cs, combined_reference, k, 1.0);
  check_gradient("adapter weight", grads + f.adapter_weight, numeric, Ct * Cs, 2e-3);
  /* The discriminator's gradients stay zero through the student's step. */
  int untouched = 1;
  for (size_t i = disc_start; i < n_params; i++) untouched &= grads[i] == 0.0f;
  CHECK(untouched);
  free(k);
  free(params);
  free(grads);
  free(scratch);
}

/* ---------------------------------------------------------------------------------------
 * Layout and initialisation */

static void test_layout_and_init(void) {
  printf("layout and deterministic initialisation\n");
  size_t n_params = 0, n_scratch = 0;
  distill_feature_t a, b;
  disc_t d;
  CHECK_INT(0, distill_feature_layout(&a, 16, 32, 1, 1, CFG_GATE_MEAN_ONE, 8, &n_params, &n_scratch));
  CHECK_INT(32 * 16 + 32 + 32 + 1, a.n_params);
  CHECK_INT(0, distill_feature_layout(&b, 4, 8, 9, 0, CFG_GATE_NONE, 8, &n_params, &n_scratch));
  CHECK_INT(a.first_param + a.n_params, b.first_param);
  CHECK_INT(a.first_scratch + a.n_scratch, b.first_scratch);
  CHECK_INT(8 * 4 + 8, b.n_params);
  CHECK_INT(0, disc_layout(&d, 72, 16, CFG_ADVERSARIAL_BCE, 8, &n_params, &n_scratch));
  CHECK_INT(b.first_param + b.n_params, d.first_param);
  CHECK_INT(n_params, d.first_param + d.n_params);
  CHECK_INT(n_scratch, d.first_scratch + d.n_scratch);
  CHECK_INT(-EINVAL, distill_feature_layout(&a, 0, 3, 1, 0, CFG_GATE_NONE, 8, &n_params, &n_scratch));
  CHECK_INT(-EINVAL, disc_layout(&d, 3, 0, CFG_ADVERSARIAL_BCE, 8, &n_params, &n_scratch));

  n_params = n_scratch = 0;
  distill_feature_layout(&a, 16, 32, 1, 1, CFG_GATE_MEAN_ONE, 8, &n_params, &n_scratch);
  float *p1 = calloc(n_params, sizeof(float)), *p2 = calloc(n_params, sizeof(float));
  float *p3 = calloc(n_params, sizeof(float));
  distill_feature_init(&a, p1, 42, 0);
  distill_feature_init(&a, p2, 42, 0);
  distill_feature_init(&a, p3, 42, 1);
  CHECK(memcmp(p1, p2, n_params * sizeof(float)) == 0);
  CHECK(memcmp(p1, p3, n_params * sizeof(float)) != 0);
  double max = 0.0;
  for (int i = 0; i < 32 * 16; i++) max = fmax(max, fabs(p1[a.adapter_weight + i]));
  CHECK(max <= 0.25 && max > 0.2); /* U(−1/√16, 1/√16) */
  CHECK(p1[a.gate_bias] == 0.0f && p1[a.gate_weight + 3] == 0.0f);
  free(p1);
  free(p2);
  free(p3);
}

int main(void) {
  rng_seed(&test_rng, 2024, 0, 0);
  test_kd_value();
  test_kd_gradient();
  test_conv1x1();
  test_avgpool();
  /* A flat pair's linear adapter on both of nn.h's paths (nn_dense_t), whichever this
   * machine's rule picks, on the same data (the gate's checks read properties of it). */
  const rng_t before_pairs = test_rng;
  setenv(NN_DENSE_ENV, "openblas", 1);
  test_feature_pairs();
  test_rng = before_pairs;
  setenv(NN_DENSE_ENV, "kernels", 1);
  printf("(linear adapters on kernels.h's packed GEMM)\n");
  test_feature_pairs();
  unsetenv(NN_DENSE_ENV);
  test_feature_scale();
  test_gate_cannot_collapse();
  test_gate_learns();
  test_discriminator(CFG_ADVERSARIAL_LSGAN);
  test_discriminator(CFG_ADVERSARIAL_BCE);
  test_discriminator_learns(CFG_ADVERSARIAL_LSGAN);
  test_discriminator_learns(CFG_ADVERSARIAL_BCE);
  test_adversarial_through_pair(CFG_ADVERSARIAL_LSGAN);
  test_adversarial_through_pair(CFG_ADVERSARIAL_BCE);
  test_layout_and_init();
  return check_summary();
}
