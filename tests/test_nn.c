/* test_nn.c — checks worker/nn.c: every backward against central differences (linear and
 * ReLU through the float kernels, where Σ out·R is linear so a large step is exact; the loss
 * and a whole MLP through a double-precision reference written here), that backward
 * accumulates, the model's layout and init, and SGD and Adam steps against hand-worked
 * values. Each gradient check prints its largest relative error. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "check.h"
#include "kernels.h"
#include "nn.h"
#include "rng.h"
#include "thread_pool.h"

static rng_t test_rng;

static void fill_uniform(float *x, int n, float low, float high) {
  for (int i = 0; i < n; i++) x[i] = low + (high - low) * rng_uniform(&test_rng);
}

/* Compares two gradients element by element; prints and checks the worst relative error. */
static void check_gradient(const char *name, const float *analytic, const double *numeric, int n,
                           double tolerance) {
  double worst = 0.0;
  int worst_index = 0;
  for (int i = 0; i < n; i++) {
    double error = relative_error(analytic[i], numeric[i], 1e-3);
    if (error > worst) {
      worst = error;
      worst_index = i;
    }
  }
  printf("  %-28s %4d values, max relative error %.2e (analytic %.6g, numeric %.6g)\n", name, n,
         worst, n ? analytic[worst_index] : 0.0, n ? numeric[worst_index] : 0.0);
  CHECK(worst <= tolerance);
}

/* ---------------------------------------------------------------------------------------
 * linear */

enum { LB = 3, LIN = 7, LOUT = 5 };

/* Σ out·R for the linear layer, accumulated in double. */
static double linear_objective(const float *inp, const float *weight, const float *bias,
                               const float *r) {
  float out[LB * LOUT];
  linear_forward(out, inp, weight, bias, LB, LIN, LOUT);
  double sum = 0.0;
  for (int i = 0; i < LB * LOUT; i++) sum += (double)out[i] * r[i];
  return sum;
}

/* Central difference of linear_objective with respect to each element of `x`. */
static void linear_numeric(double *numeric, float *x, int n, const float *inp, const float *weight,
                           const float *bias, const float *r) {
  const float step = 1e-2f;
  for (int i = 0; i < n; i++) {
    float saved = x[i];
    x[i] = saved + step;
    double plus = linear_objective(inp, weight, bias, r);
    x[i] = saved - step;
    double minus = linear_objective(inp, weight, bias, r);
    x[i] = saved;
    numeric[i] = (plus - minus) / (2.0 * step);
  }
}

static void test_linear(void) {
  printf("linear (B=%d, IN=%d, OUT=%d)\n", LB, LIN, LOUT);
  float inp[LB * LIN], weight[LOUT * LIN], bias[LOUT], r[LB * LOUT];
  fill_uniform(inp, LB * LIN, -1, 1);
  fill_uniform(weight, LOUT * LIN, -1, 1);
  fill_uniform(bias, LOUT, -1, 1);
  fill_uniform(r, LB * LOUT, -1, 1);

  /* Forward against the definition. */
  float out[LB * LOUT];
  linear_forward(out, inp, weight, bias, LB, LIN, LOUT);
  double worst = 0.0;
  for (int b = 0; b < LB; b++) {
    for (int o = 0; o < LOUT; o++) {
      double expected = bias[o];
      for (int i = 0; i < LIN; i++) expected += (double)inp[b * LIN + i] * weight[o * LIN + i];
      worst = fmax(worst, fabs(expected - out[b * LOUT + o]));
    }
  }
  printf("  forward: max |error| %.2e\n", worst);
  CHECK(worst < 1e-5);

  /* Without bias the output is the bare product. */
  float out_without[LB * LOUT];
  linear_forward(out_without, inp, weight, NULL, LB, LIN, LOUT);
  CHECK_NEAR(out[0] - bias[0], out_without[0], 1e-5);

  float dinp[LB * LIN] = {0}, dweight[LOUT * LIN] = {0}, dbias[LOUT] = {0};
  linear_backward(dinp, dweight, dbias, r, inp, weight, LB, LIN, LOUT);
  double numeric[LOUT * LIN];
  linear_numeric(numeric, inp, LB * LIN, inp, weight, bias, r);
  check_gradient("dinp", dinp, numeric, LB * LIN, 1e-3);
  linear_numeric(numeric, weight, LOUT * LIN, inp, weight, bias, r);
  check_gradient("dweight", dweight, numeric, LOUT * LIN, 1e-3);
  linear_numeric(numeric, bias, LOUT, inp, weight, bias, r);
  check_gradient("dbias", dbias, numeric, LOUT, 1e-3);

  /* Backward accumulates: a second call doubles every gradient. */
  float dinp2[LB * LIN], dweight2[LOUT * LIN], dbias2[LOUT];
  memcpy(dinp2, dinp, sizeof dinp);
  memcpy(dweight2, dweight, sizeof dweight);
  memcpy(dbias2, dbias, sizeof dbias);
  linear_backward(dinp2, dweight2, dbias2, r, inp, weight, LB, LIN, LOUT);
  int doubled = 1;
  for (int i = 0; i < LB * LIN; i++) doubled &= fabsf(dinp2[i] - 2 * dinp[i]) <= 1e-6f * (1 + fabsf(dinp[i]));
  for (int i = 0; i < LOUT * LIN; i++)
    doubled &= fabsf(dweight2[i] - 2 * dweight[i]) <= 1e-6f * (1 + fabsf(dweight[i]));
  for (int i = 0; i < LOUT; i++) doubled &= fabsf(dbias2[i] - 2 * dbias[i]) <= 1e-6f * (1 + fabsf(dbias[i]));
  CHECK(doubled);
  CHECK(dweight[3] != 0.0f); /* and there was something to double */

  /* dinp = NULL (first layer) still yields the same dweight and dbias. */
  float dweight3[LOUT * LIN] = {0}, dbias3[LOUT] = {0};
  linear_backward(NULL, dweight3, dbias3, r, inp, weight, LB, LIN, LOUT);
  CHECK(memcmp(dweight3, dweight, sizeof dweight) == 0);
  CHECK(memcmp(dbias3, dbias, sizeof dbias) == 0);
}

/* ---------------------------------------------------------------------------------------
 * relu */

enum { RN = 24 };

static double relu_objective(const float *inp, const float *r) {
  float out[RN];
  relu_forward(out, inp, RN);
  double sum = 0.0;
  for (int i = 0; i < RN; i++) sum += (double)out[i] * r[i];
  return sum;
}

static void test_relu(void) {
  printf("relu (N=%d)\n", RN);
  float inp[RN], r[RN], out[RN];
  fill_uniform(r, RN, -1, 1);
  /* Keep every input at least 0.1 from the kink so that a 0.01 step never crosses it. */
  for (int i = 0; i < RN; i++) {
    float magnitude = 0.1f + rng_uniform(&test_rng);
    inp[i] = i % 2 ? magnitude : -magnitude;
  }
  relu_forward(out, inp, RN);
  int exact = 1;
  for (int i = 0; i < RN; i++) exact &= out[i] == (inp[i] > 0 ? inp[i] : 0.0f);
  CHECK(exact);

  float dinp[RN] = {0};
  relu_backward(dinp, r, out, RN);
  double numeric[RN];
  const float step = 1e-2f;
  for (int i = 0; i < RN; i++) {
    float saved = inp[i];
    inp[i] = saved + step;
    double plus = relu_objective(inp, r);
    inp[i] = saved - step;
    double minus = relu_objective(inp, r);
    inp[i] = saved;
    numeric[i] = (plus - minus) / (2.0 * step);
  }
  check_gradient("dinp", dinp, numeric, RN, 1e-3);

  relu_backward(dinp, r, out, RN);
  int doubled = 1;
  for (int i = 0; i < RN; i++) doubled &= dinp[i] == 2.0f * (inp[i] > 0 ? r[i] : 0.0f);
  CHECK(doubled);

  /* Longer than one vector block, with a tail: the same as element by element. */
  enum { LONG = 16 * 5 + 7 };
  float long_inp[LONG], long_out[LONG], long_d[LONG] = {0}, long_r[LONG];
  fill_uniform(long_inp, LONG, -1, 1);
  fill_uniform(long_r, LONG, -1, 1);
  relu_forward(long_out, long_inp, LONG);
  relu_backward(long_d, long_r, long_out, LONG);
  int same = 1;
  for (int i = 0; i < LONG; i++) {
    same &= long_out[i] == (long_inp[i] > 0 ? long_inp[i] : 0.0f);
    same &= long_d[i] == (long_inp[i] > 0 ? long_r[i] : 0.0f);
  }
  CHECK(same);
}

/* ---------------------------------------------------------------------------------------
 * conv2d: the float kernels against a direct convolution in double */

/* out (B,OC,OH,OW) = Σ inp · weight + bias, the definition: six nested loops, zero padding. */
static void conv_reference(double *out, const double *inp, const double *weight, const double *bias, int B, int C,
                           int H, int W, int OC, int K, int stride, int pad) {
  int OH = conv2d_out_size(H, K, stride, pad), OW = conv2d_out_size(W, K, stride, pad);
  for (int b = 0; b < B; b++)
    for (int o = 0; o < OC; o++)
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
          double sum = bias ? bias[o] : 0.0;
          for (int c = 0; c < C; c++)
            for (int i = 0; i < K; i++)
              for (int j = 0; j < K; j++) {
                int ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                sum += inp[((b * C + c) * H + ih) * W + iw] * weight[((o * C + c) * K + i) * K + j];
              }
          out[((b * OC + o) * OH + oh) * OW + ow] = sum;
        }
}

/* The backward by its definition: dinp, dweight, dbias (all zeroed here) of Σ out·R. */
static void conv_reference_backward(double *dinp, double *dweight, double *dbias, const float *r,
                                    const double *inp, const double *weight, int B, int C, int H,
                                    int W, int OC, int K, int stride, int pad) {
  int OH = conv2d_out_size(H, K, stride, pad), OW = conv2d_out_size(W, K, stride, pad);
  memset(dinp, 0, (size_t)B * C * H * W * sizeof *dinp);
  memset(dweight, 0, (size_t)OC * C * K * K * sizeof *dweight);
  memset(dbias, 0, (size_t)OC * sizeof *dbias);
  for (int b = 0; b < B; b++)
    for (int o = 0; o < OC; o++)
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
          double d = r[((b * OC + o) * OH + oh) * OW + ow];
          dbias[o] += d;
          for (int c = 0; c < C; c++)
            for (int i = 0; i < K; i++)
              for (int j = 0; j < K; j++) {
                int ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                dweight[((o * C + c) * K + i) * K + j] += d * inp[((b * C + c) * H + ih) * W + iw];
                dinp[((b * C + c) * H + ih) * W + iw] += d * weight[((o * C + c) * K + i) * K + j];
              }
        }
}

typedef struct {
  int B, C, H, W, OC, K, stride, pad;
  int by_definition; /* too large for central differences: against the backward's definition */
} conv_case_t;

/* Σ out·R of the reference with inp, weight, bias given in double. */
static double conv_objective(const conv_case_t *k, const double *inp, const double *weight, const double *bias,
                             const float *r, double *out) {
  conv_reference(out, inp, weight, bias, k->B, k->C, k->H, k->W, k->OC, k->K, k->stride, k->pad);
  int n = k->B * k->OC * conv2d_out_size(k->H, k->K, k->stride, k->pad) * conv2d_out_size(k->W, k->K, k->stride, k->pad);
  double sum = 0.0;
  for (int i = 0; i < n; i++) sum += out[i] * r[i];
  return sum;
}

static void test_conv2d_case(const conv_case_t *k) {
  const int OH = conv2d_out_size(k->H, k->K, k->stride, k->pad), OW = conv2d_out_size(k->W, k->K, k->stride, k->pad);
  const int n_in = k->B * k->C * k->H * k->W, n_w = k->OC * k->C * k->K * k->K, n_out = k->B * k->OC * OH * OW;
  const int N = k->B * OH * OW;
  printf("conv2d B=%d C=%d %dx%d -> OC=%d K=%d stride %d pad %d (%dx%d)\n", k->B, k->C, k->H, k->W, k->OC, k->K,
         k->stride, k->pad, OH, OW);
  float *inp = malloc(n_in * sizeof *inp), *weight = malloc(n_w * sizeof *weight), *bias = malloc(k->OC * sizeof *bias);
  float *r = malloc(n_out * sizeof *r), *out = malloc(n_out * sizeof *out);
  float *scratch = malloc(conv2d_scratch_floats(k->C, k->H, k->W, k->OC, k->K, k->stride, k->pad, 1) *
                          sizeof *scratch);
  float *dinp = calloc(n_in, sizeof *dinp), *dweight = calloc(n_w, sizeof *dweight), *dbias = calloc(k->OC, sizeof *dbias);
  double *x = malloc(n_in * sizeof *x), *w = malloc(n_w * sizeof *w), *bb = malloc(k->OC * sizeof *bb);
  double *expected = malloc(n_out * sizeof *expected), *numeric = malloc((n_in > n_w ? n_in : n_w) * sizeof *numeric);
  fill_uniform(inp, n_in, -1, 1);
  fill_uniform(weight, n_w, -1, 1);
  fill_uniform(bias, k->OC, -1, 1);
  fill_uniform(r, n_out, -1, 1);
  for (int i = 0; i < n_in; i++) x[i] = inp[i];
  for (int i = 0; i < n_w; i++) w[i] = weight[i];
  for (int i = 0; i < k->OC; i++) bb[i] = bias[i];

  /* Poison the output buffers: the forward must write every element. */
  for (int i = 0; i < n_out; i++) out[i] = NAN;
  conv2d_forward(out, scratch, inp, weight, bias, k->B, k->C, k->H, k->W, k->OC, k->K, k->stride, k->pad);
  conv_objective(k, x, w, bb, r, expected);
  double worst = 0.0;
  for (int i = 0; i < n_out; i++) worst = fmax(worst, isnan(out[i]) ? INFINITY : fabs(expected[i] - out[i]));
  printf("  forward against the direct convolution: max |error| %.2e\n", worst);
  CHECK(worst < (k->by_definition ? 1e-4 : 1e-5));

  conv2d_backward(dinp, dweight, dbias, scratch, r, inp, weight, k->B, k->C, k->H, k->W, k->OC, k->K, k->stride,
                  k->pad);
  /* Σ out·R is linear in each argument: a central difference of 0.5 is exact in double. */
  const double step = 0.5;
  double *vectors[3] = {x, w, bb};
  int sizes[3] = {n_in, n_w, k->OC};
  const float *analytic[3] = {dinp, dweight, dbias};
  const char *names[3] = {"dinp", "dweight", "dbias"};
  if (k->by_definition) {
    double *defined[3] = {malloc(n_in * sizeof(double)), malloc(n_w * sizeof(double)), malloc(k->OC * sizeof(double))};
    conv_reference_backward(defined[0], defined[1], defined[2], r, x, w, k->B, k->C, k->H, k->W, k->OC, k->K,
                            k->stride, k->pad);
    /* Sums of hundreds of float products: errors against max(1, |value|), not the value
     * (the smallest gradients are cancellations of large terms). */
    for (int v = 0; v < 3; v++) {
      double worst_error = 0.0;
      for (int i = 0; i < sizes[v]; i++)
        worst_error = fmax(worst_error, fabs(analytic[v][i] - defined[v][i]) / fmax(1.0, fabs(defined[v][i])));
      printf("  %-28s %4d values, max error against the definition %.2e\n", names[v], sizes[v], worst_error);
      CHECK(worst_error <= 1e-4);
      free(defined[v]);
    }
  }
  for (int v = 0; v < 3 && !k->by_definition; v++) {
    for (int i = 0; i < sizes[v]; i++) {
      double saved = vectors[v][i];
      vectors[v][i] = saved + step;
      double plus = conv_objective(k, x, w, bb, r, expected);
      vectors[v][i] = saved - step;
      double minus = conv_objective(k, x, w, bb, r, expected);
      vectors[v][i] = saved;
      numeric[i] = (plus - minus) / (2.0 * step);
    }
    /* dweight sums B·OH·OW float products: rounding grows with their number (the few-taps
     * cases sum hundreds, and a weight gradient that cancels to ~1e-4 shows it). */
    check_gradient(names[v], analytic[v], numeric, sizes[v], 1e-4 * fmax(1.0, N / 32.0));
  }

  /* Backward accumulates (it reads the forward's input only: a second backward on one
   * forward is fine), and
   * without dinp (a first layer) the parameter gradients are the same. */
  float *dweight1 = malloc(n_w * sizeof *dweight1), *dinp1 = malloc(n_in * sizeof *dinp1);
  memcpy(dweight1, dweight, n_w * sizeof *dweight1);
  memcpy(dinp1, dinp, n_in * sizeof *dinp1);
  conv2d_backward(dinp, dweight, dbias, scratch, r, inp, weight, k->B, k->C, k->H, k->W, k->OC, k->K, k->stride,
                  k->pad);
  int doubled = 1;
  for (int i = 0; i < n_w; i++) doubled &= fabsf(dweight[i] - 2 * dweight1[i]) <= 1e-5f * (1 + fabsf(dweight1[i]));
  for (int i = 0; i < n_in; i++) doubled &= fabsf(dinp[i] - 2 * dinp1[i]) <= 1e-5f * (1 + fabsf(dinp1[i]));
  CHECK(doubled);
  float *dweight2 = calloc(n_w, sizeof *dweight2);
  conv2d_backward(NULL, dweight2, NULL, scratch, r, inp, weight, k->B, k->C, k->H, k->W, k->OC, k->K, k->stride,
                  k->pad);
  CHECK(memcmp(dweight2, dweight1, n_w * sizeof *dweight2) == 0);

  /* Without a bias the output is the bare convolution. */
  conv2d_forward(out, scratch, inp, weight, NULL, k->B, k->C, k->H, k->W, k->OC, k->K, k->stride, k->pad);
  conv_reference(expected, x, w, NULL, k->B, k->C, k->H, k->W, k->OC, k->K, k->stride, k->pad);
  worst = 0.0;
  for (int i = 0; i < n_out; i++) worst = fmax(worst, fabs(expected[i] - out[i]));
  CHECK(worst < (k->by_definition ? 1e-4 : 1e-5));

  free(dweight2);
  free(dweight1);
  free(dinp1);
  free(inp), free(weight), free(bias), free(r), free(out), free(scratch);
  free(dinp), free(dweight), free(dbias), free(x), free(w), free(bb), free(expected), free(numeric);
}

static void test_conv2d(void) {
  /* Non-square inputs catch a swapped height and width; odd sizes, windows that do not tile
   * the input, padding larger than needed and a 1×1 kernel catch the edges of im2col. */
  static const conv_case_t cases[] = {
      {2, 2, 7, 6, 3, 3, 1, 1, 0}, /* "same" */
      {2, 2, 7, 6, 3, 3, 2, 0, 0}, /* stride 2, no padding: the last row and column unused */
      {2, 3, 8, 5, 4, 3, 2, 1, 0}, /* stride 2 with padding */
      {1, 2, 6, 7, 2, 5, 3, 2, 0}, /* kernel 5, stride 3 */
      {3, 4, 5, 5, 3, 1, 1, 0, 0}, /* 1×1: a per-pixel linear map */
      {2, 1, 4, 4, 2, 3, 1, 3, 0}, /* padding wider than the kernel reaches */
      /* Few taps (C·K·K ≤ 24: kernels.h's dot products for dweight): batch 1, OC not a
       * multiple of the register blocks, rows that end in a vector tail; then 18 taps. */
      {1, 1, 12, 19, 5, 3, 1, 1, 0},
      {3, 2, 9, 11, 6, 3, 1, 1, 0},
      /* The weight gradient's accumulating product, dweightᵀ (taps, channels): 25 taps (4
       * six-row tiles and one row), 7 channels (scalar columns on AVX2), P = 72; 27 taps,
       * 5 channels, P = 45. Both "same", so im2col and col2im take whole runs per tap. */
      {2, 1, 9, 8, 7, 5, 1, 2, 0},
      {1, 3, 5, 9, 5, 3, 1, 1, 0},
      /* "Same" with 5 × 5 (two padding columns each side: against the definition, as its
       * weight gradient's sums of 180 products cancel below the differences' relative
       * tolerance), and a plane shorter than a vector (its runs scalar). */
      {2, 3, 9, 10, 9, 5, 1, 2, 1},
      {1, 2, 2, 3, 3, 3, 1, 1, 0},
      /* The teacher's second layer's size (32 channels, 288 taps: OpenBLAS's dweight, the
       * unpacked GEMM's 6-row tiles and their remainders): against the backward's
       * definition, too large for central differences. */
      {3, 32, 26, 26, 14, 3, 1, 1, 1},
      /* Winograd's forward (3 × 3, stride 1, 8 channels or more; kernels.h): fewer tiles than
       * a vector and rows narrower than one (a lane at a time); an 11 × 11 output
       * (odd: half of the last tiles outside); rows of 19 tiles (more than a vector of the
       * widest set, the last reaching into the next row); padding 2; a single output. */
      {2, 8, 5, 7, 3, 3, 1, 0, 0},
      {1, 9, 13, 13, 10, 3, 1, 0, 0},
      {2, 8, 6, 37, 4, 3, 1, 1, 0},
      {1, 8, 4, 4, 3, 3, 1, 2, 0},
      {1, 8, 3, 3, 2, 3, 1, 0, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_conv2d_case(&cases[i]);
}

/* ---------------------------------------------------------------------------------------
 * max-pool */

static void test_maxpool(void) {
  printf("maxpool\n");
  /* Ties: a 4×4 plane of equal values pools to its top-left element of each window, and the
   * gradient goes there only. */
  float flat[16], pooled[4], dflat[16] = {0}, ones[4] = {1, 1, 1, 1};
  int32_t argmax[4];
  for (int i = 0; i < 16; i++) flat[i] = 0.5f;
  flat[5] = 0.5f; /* (1,1), inside the first window, equal to (0,0) */
  flat[15] = 0.75f;
  maxpool_forward(pooled, argmax, flat, 1, 1, 4, 4, 2, 2);
  CHECK_INT(0, argmax[0]);
  CHECK_INT(2, argmax[1]);
  CHECK_INT(8, argmax[2]);
  CHECK_INT(15, argmax[3]); /* a strict maximum wins wherever it is */
  maxpool_backward(dflat, ones, argmax, 1, 1, 4, 4, 2, 2);
  CHECK(dflat[0] == 1.0f && dflat[5] == 0.0f && dflat[1] == 0.0f && dflat[15] == 1.0f && dflat[10] == 0.0f);

  /* Against the definition and central differences, with overlapping windows (3, stride 2:
   * a corner element belongs to several) and sizes the windows do not tile. Values are a
   * shuffled grid 0.05 apart, so a step of 0.01 never changes which element wins. */
  enum { B = 2, C = 3, H = 7, W = 8, K = 3, S = 2, OH = (H - K) / S + 1, OW = (W - K) / S + 1 };
  enum { N_IN = B * C * H * W, N_OUT = B * C * OH * OW };
  float inp[N_IN], out[N_OUT], r[N_OUT], dinp[N_IN] = {0};
  int32_t index[N_OUT];
  int order[N_IN];
  for (int i = 0; i < N_IN; i++) order[i] = i;
  rng_shuffle(&test_rng, order, N_IN);
  for (int i = 0; i < N_IN; i++) inp[i] = 0.05f * (float)order[i] - 8.0f;
  fill_uniform(r, N_OUT, -1, 1);
  maxpool_forward(out, index, inp, B, C, H, W, K, S);
  int exact = 1;
  for (int bc = 0; bc < B * C; bc++)
    for (int oh = 0; oh < OH; oh++)
      for (int ow = 0; ow < OW; ow++) {
        float max = -INFINITY;
        for (int i = 0; i < K; i++)
          for (int j = 0; j < K; j++) max = fmaxf(max, inp[(bc * H + oh * S + i) * W + ow * S + j]);
        int at = (bc * OH + oh) * OW + ow;
        exact &= out[at] == max && inp[bc * H * W + index[at]] == max;
      }
  CHECK(exact);
  maxpool_backward(dinp, r, index, B, C, H, W, K, S);
  double numeric[N_IN];
  const float step = 1e-2f;
  for (int i = 0; i < N_IN; i++) {
    float saved = inp[i], plus_out[N_OUT], minus_out[N_OUT];
    int32_t scratch[N_OUT];
    inp[i] = saved + step;
    maxpool_forward(plus_out, scratch, inp, B, C, H, W, K, S);
    inp[i] = saved - step;
    maxpool_forward(minus_out, scratch, inp, B, C, H, W, K, S);
    inp[i] = saved;
    double plus = 0.0, minus = 0.0;
    for (int o = 0; o < N_OUT; o++) {
      plus += (double)plus_out[o] * r[o];
      minus += (double)minus_out[o] * r[o];
    }
    numeric[i] = (plus - minus) / (2.0 * step);
  }
  check_gradient("dinp (overlapping windows)", dinp, numeric, N_IN, 1e-3);
  int shared = 0; /* some input won more than one window: the accumulation was exercised */
  for (int i = 0; i < N_OUT; i++)
    for (int j = i + 1; j < N_OUT; j++) shared += index[i] == index[j] && i / (OH * OW) == j / (OH * OW);
  CHECK(shared > 0);
}

/* ---------------------------------------------------------------------------------------
 * dropout */

static void test_dropout(void) {
  printf("dropout\n");
  enum { N = 200000 };
  float *inp = malloc(N * sizeof *inp), *out = malloc(N * sizeof *out), *mask = malloc(N * sizeof *mask);
  float *again = malloc(N * sizeof *again), *other = malloc(N * sizeof *other), *dinp = calloc(N, sizeof *dinp);
  fill_uniform(inp, N, 0.5f, 1.5f);
  const float p = 0.3f;
  uint64_t key = nn_dropout_key(7, 12, 3);
  dropout_forward(out, mask, inp, N, p, key);
  int kept = 0, scaled = 1;
  for (int i = 0; i < N; i++) {
    kept += mask[i] != 0.0f;
    scaled &= mask[i] == 0.0f ? out[i] == 0.0f : out[i] == inp[i] * (1.0f / (1.0f - p));
  }
  printf("  p = %.1f: kept %.4f of %d (expected %.4f)\n", p, (double)kept / N, N, 1.0 - p);
  CHECK_NEAR(1.0 - p, (double)kept / N, 0.005);
  CHECK(scaled);

  /* The mask is a function of the key alone: the same (seed, step, layer) gives it again;
   * another step, layer or seed gives another. */
  dropout_forward(again, mask, inp, N, p, nn_dropout_key(7, 12, 3));
  CHECK(memcmp(again, out, N * sizeof *out) == 0);
  int differs[3] = {0, 0, 0};
  uint64_t keys[3] = {nn_dropout_key(7, 13, 3), nn_dropout_key(7, 12, 4), nn_dropout_key(8, 12, 3)};
  for (int k = 0; k < 3; k++) {
    dropout_forward(other, mask, inp, N, p, keys[k]);
    for (int i = 0; i < N; i++) differs[k] += (other[i] == 0.0f) != (out[i] == 0.0f);
  }
  printf("  masks of another step / layer / seed differ at %d / %d / %d of %d\n", differs[0], differs[1], differs[2], N);
  for (int k = 0; k < 3; k++) CHECK(differs[k] > N / 3); /* independent masks: 2·p·(1−p) = 42% */

  /* Backward: exactly dout × mask, accumulated. */
  dropout_forward(out, mask, inp, N, p, key);
  dropout_backward(dinp, inp, mask, N);
  dropout_backward(dinp, inp, mask, N);
  int exact = 1;
  for (int i = 0; i < N; i++) exact &= dinp[i] == 2.0f * (inp[i] * mask[i]);
  CHECK(exact);

  /* p = 0 keeps everything unscaled. */
  dropout_forward(out, mask, inp, N, 0.0f, key);
  CHECK(memcmp(out, inp, N * sizeof *out) == 0);

  /* Every kernel set draws the masks the definition gives (splitmix64's output function on
   * key + (i + 1)·φ, its top 24 bits against ⌈p·2²⁴⌉), for lengths around the vector
   * widths: the same runs on any CPU. */
  const uint64_t threshold = (uint64_t)ceil(0.3 * 16777216.0);
  int sets = 0, defined = 1;
  for (int isa = 0; isa < KERNELS_COUNT; isa++) {
    if (kernels_use((kernels_isa_t)isa) != 0) continue;
    sets++;
    static const int lengths[] = {1, 3, 4, 7, 8, 9, 15, 16, 17, 33, 1001};
    for (size_t k = 0; k < sizeof lengths / sizeof *lengths; k++) {
      dropout_forward(out, mask, inp, lengths[k], 0.3f, key);
      for (int i = 0; i < lengths[k]; i++) {
        uint64_t z = key + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ULL;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        const float expected = ((z ^ (z >> 31)) >> 40) < threshold ? 0.0f : 1.0f / (1.0f - 0.3f);
        defined &= memcmp(&mask[i], &expected, sizeof expected) == 0 && out[i] == inp[i] * expected;
      }
    }
  }
  kernels_use(kernels_isa_best());
  printf("  %d kernel sets draw the defined masks: %s\n", sets, defined ? "yes" : "NO");
  CHECK(sets >= 2);
  CHECK(defined);
  free(inp), free(out), free(mask), free(again), free(other), free(dinp);
}

/* ---------------------------------------------------------------------------------------
 * softmax cross-entropy */

enum { CB = 4, CC = 10 };

/* Mean cross-entropy of double logits. */
static double crossentropy_reference(const double *logits, const int *labels, int B, int C) {
  double total = 0.0;
  for (int b = 0; b < B; b++) {
    const double *row = logits + b * C;
    double max = row[0];
    for (int c = 1; c < C; c++) max = fmax(max, row[c]);
    double sum = 0.0;
    for (int c = 0; c < C; c++) sum += exp(row[c] - max);
    total += log(sum) - (row[labels[b]] - max);
  }
  return total / B;
}

static void test_crossentropy(void) {
  printf("softmax cross-entropy (B=%d, C=%d)\n", CB, CC);
  float logits[CB * CC], probs[CB * CC];
  int labels[CB] = {3, 0, 9, 3}, predictions[CB];
  fill_uniform(logits, CB * CC, -3, 3);
  logits[1 * CC + 7] = 10.0f; /* a confident row: example 1 predicts 7 */

  float loss = loss_crossentropy_forward(probs, predictions, logits, labels, CB, CC);
  double reference_logits[CB * CC];
  for (int i = 0; i < CB * CC; i++) reference_logits[i] = logits[i];
  double reference = crossentropy_reference(reference_logits, labels, CB, CC);
  printf("  loss %.7f, reference %.7f\n", loss, reference);
  CHECK_NEAR(reference, loss, 1e-6);
  CHECK_INT(7, predictions[1]);
  int argmax_ok = 1;
  for (int b = 0; b < CB; b++) {
    double row_sum = 0.0;
    for (int c = 0; c < CC; c++) {
      row_sum += probs[b * CC + c];
      argmax_ok &= logits[b * CC + c] <= logits[b * CC + predictions[b]];
    }
    CHECK_NEAR(1.0, row_sum, 1e-6);
  }
  CHECK(argmax_ok);

  /* Uniform logits: loss log(10), probabilities 0.1, ties go to the lowest index. */
  float zeros[CC] = {0}, uniform_probs[CC];
  int label = 4, prediction = -1;
  CHECK_NEAR(log(10.0), loss_crossentropy_forward(uniform_probs, &prediction, zeros, &label, 1, CC), 1e-6);
  CHECK_NEAR(0.1, uniform_probs[9], 1e-7);
  CHECK_INT(0, prediction);

  /* Huge logits stay finite (the max is subtracted first). */
  float huge[CC] = {1000.0f, -1000.0f};
  float huge_loss = loss_crossentropy_forward(uniform_probs, NULL, huge, &(int){1}, 1, CC);
  CHECK(isfinite(huge_loss));
  CHECK_NEAR(2000.0, huge_loss, 1e-6);

  /* Backward with weight 1 against central differences of the reference. */
  float dlogits[CB * CC] = {0};
  loss_crossentropy_backward(dlogits, probs, labels, 1.0f, CB, CC);
  double numeric[CB * CC];
  const double step = 1e-5;
  for (int i = 0; i < CB * CC; i++) {
    double saved = reference_logits[i];
    reference_logits[i] = saved + step;
    double plus = crossentropy_reference(reference_logits, labels, CB, CC);
    reference_logits[i] = saved - step;
    double minus = crossentropy_reference(reference_logits, labels, CB, CC);
    reference_logits[i] = saved;
    numeric[i] = (plus - minus) / (2.0 * step);
  }
  check_gradient("dlogits", dlogits, numeric, CB * CC, 1e-4);

  /* Weighted and accumulating: adding the 0.5-weighted gradient gives 1.5×. */
  loss_crossentropy_backward(dlogits, probs, labels, 0.5f, CB, CC);
  double worst = 0.0;
  for (int i = 0; i < CB * CC; i++) worst = fmax(worst, fabs(dlogits[i] - 1.5 * numeric[i]));
  CHECK(worst < 1e-6);
}

/* ---------------------------------------------------------------------------------------
 * the whole model */

static cfg_experiment_t test_config(uint64_t seed) {
  cfg_experiment_t config;
  memset(&config, 0, sizeof config);
  config.seed = seed;
  config.n_layers = 5;
  config.layers[0] = (cfg_layer_t){.kind = CFG_LAYER_LINEAR, .out = 16, .name = "fc1"};
  config.layers[1] = (cfg_layer_t){.kind = CFG_LAYER_RELU};
  config.layers[2] = (cfg_layer_t){.kind = CFG_LAYER_LINEAR, .out = 12};
  config.layers[3] = (cfg_layer_t){.kind = CFG_LAYER_RELU};
  config.layers[4] = (cfg_layer_t){.kind = CFG_LAYER_LINEAR, .out = CFG_CLASSES, .name = "head"};
  config.optimizer.kind = CFG_OPTIMIZER_SGD;
  config.optimizer.lr = 0.1;
  config.optimizer.momentum = 0.9;
  config.batch_size = 4;
  return config;
}

/* The model's function in double, straight from its parameter slab and layer list. */
static double model_reference_loss(const nn_model_t *model, const double *params, const float *inputs,
                                   const int *labels, int B, double *logits_out) {
  static double a[2][4 * 64]; /* two ping-pong activations: B ≤ 4, width ≤ 64 here */
  double input[4 * CFG_INPUTS];
  for (int i = 0; i < B * CFG_INPUTS; i++) input[i] = inputs[i];
  const double *x = input;
  int current = 0;
  for (int l = 0; l < model->n_layers; l++) {
    const nn_layer_t *layer = &model->layers[l];
    double *out = a[current];
    for (int b = 0; b < B; b++) {
      for (int o = 0; o < layer->out; o++) {
        if (layer->kind == CFG_LAYER_LINEAR) {
          double sum = params[layer->bias + o];
          for (int i = 0; i < layer->in; i++)
            sum += params[layer->weight + (size_t)o * layer->in + i] * x[b * layer->in + i];
          out[b * layer->out + o] = sum;
        } else {
          out[b * layer->out + o] = fmax(0.0, x[b * layer->in + o]);
        }
      }
    }
    x = out;
    current ^= 1;
  }
  if (logits_out) memcpy(logits_out, x, (size_t)B * CFG_CLASSES * sizeof *x);
  return crossentropy_reference(x, labels, B, CFG_CLASSES);
}

static void test_model(void) {
  printf("model 784-16-relu-12-relu-10 (B=4)\n");
  cfg_experiment_t config = test_config(42);
  nn_model_t model;
  CHECK_INT(0, nn_model_create(&model, &config, 4));

  /* Layout: sizes, names, weights before biases. */
  size_t expected = 784 * 16 + 16 + 16 * 12 + 12 + 12 * 10 + 10;
  CHECK_INT(expected, model.n_params);
  CHECK_INT(784 * 16 + 16 * 12 + 12 * 10, model.n_decayed);
  CHECK_STR("fc1", model.layers[0].name);
  CHECK_STR("relu0", model.layers[1].name);
  CHECK_STR("linear1", model.layers[2].name);
  CHECK_STR("relu1", model.layers[3].name);
  CHECK_STR("head", model.layers[4].name);
  CHECK_INT(784 * 16 + 16, nn_layer_param_count(&model.layers[0]));
  CHECK_INT(0, nn_layer_param_count(&model.layers[1]));
  CHECK_INT(model.n_decayed, model.layers[0].bias);
  CHECK_INT(model.n_params, model.layers[4].bias + model.layers[4].n_bias);
  CHECK_INT(model.n_params, model.n_optim_state); /* sgd: one velocity per parameter */

  /* Initialisation: Kaiming-uniform bounds, zero biases, spread, deterministic in the seed. */
  for (int l = 0; l < model.n_layers; l++) {
    const nn_layer_t *layer = &model.layers[l];
    if (layer->kind != CFG_LAYER_LINEAR) continue;
    double bound = sqrt(6.0 / layer->in), max = 0.0, sum_squares = 0.0;
    for (size_t i = 0; i < layer->n_weight; i++) {
      max = fmax(max, fabs(model.params[layer->weight + i]));
      sum_squares += (double)model.params[layer->weight + i] * model.params[layer->weight + i];
    }
    double variance = sum_squares / layer->n_weight; /* U(−b, b) has variance b²/3 = 2/fan_in */
    printf("  init %-8s bound %.4f, max |w| %.4f, variance %.5f (expected %.5f)\n", layer->name,
           bound, max, variance, 2.0 / layer->in);
    CHECK(max <= bound);
    CHECK(max > 0.8 * bound);
    CHECK_NEAR(2.0 / layer->in, variance, 0.35 * 2.0 / layer->in);
    int zero = 1;
    for (size_t i = 0; i < layer->n_bias; i++) zero &= model.params[layer->bias + i] == 0.0f;
    CHECK(zero);
  }
  nn_model_t same, other;
  CHECK_INT(0, nn_model_create(&same, &config, 4));
  cfg_experiment_t other_config = test_config(43);
  CHECK_INT(0, nn_model_create(&other, &other_config, 4));
  CHECK(memcmp(model.params, same.params, model.n_params * sizeof(float)) == 0);
  CHECK(memcmp(model.params, other.params, model.n_params * sizeof(float)) != 0);
  nn_model_free(&same);
  nn_model_free(&other);

  /* A batch of inputs, standard-normal like standardised pixels. */
  enum { B = 4 };
  static float inputs[B * CFG_INPUTS];
  for (int i = 0; i < B * CFG_INPUTS; i++) inputs[i] = (float)rng_normal(&test_rng);
  int labels[B] = {1, 5, 5, 8};
  /* Give the biases non-zero values so that their gradients are exercised in general. */
  fill_uniform(model.params + model.n_decayed, (int)(model.n_params - model.n_decayed), -0.1f, 0.1f);

  float probs[B * CFG_CLASSES];
  const float *logits = nn_forward(&model, inputs, B, 1);
  float loss = loss_crossentropy_forward(probs, NULL, logits, labels, B, CFG_CLASSES);
  nn_zero_grad(&model);
  loss_crossentropy_backward(nn_dlogits(&model), probs, labels, 1.0f, B, CFG_CLASSES);
  nn_backward(&model, inputs, B);

  double *params = malloc(model.n_params * sizeof *params);
  for (size_t i = 0; i < model.n_params; i++) params[i] = model.params[i];
  double reference_logits[B * CFG_CLASSES];
  double reference = model_reference_loss(&model, params, inputs, labels, B, reference_logits);
  double worst = 0.0;
  for (int i = 0; i < B * CFG_CLASSES; i++) worst = fmax(worst, fabs(reference_logits[i] - logits[i]));
  printf("  forward: loss %.7f, reference %.7f, max |logit error| %.2e\n", loss, reference, worst);
  CHECK(worst < 1e-4);
  CHECK_NEAR(reference, loss, 1e-5);

  /* Loss w.r.t. every parameter is too many (12894) central differences of a 784-wide
   * reference; sample 40 weights and every bias of each linear layer. */
  for (int l = 0; l < model.n_layers; l++) {
    const nn_layer_t *layer = &model.layers[l];
    if (layer->kind != CFG_LAYER_LINEAR) continue;
    enum { SAMPLES = 40 };
    float analytic[SAMPLES + 64];
    double numeric[SAMPLES + 64];
    size_t index[SAMPLES + 64];
    int n = 0;
    for (int s = 0; s < SAMPLES; s++) index[n++] = layer->weight + rng_below(&test_rng, (uint32_t)layer->n_weight);
    for (size_t i = 0; i < layer->n_bias; i++) index[n++] = layer->bias + i;
    for (int s = 0; s < n; s++) {
      const double step = 1e-6;
      double saved = params[index[s]];
      params[index[s]] = saved + step;
      double plus = model_reference_loss(&model, params, inputs, labels, B, NULL);
      params[index[s]] = saved - step;
      double minus = model_reference_loss(&model, params, inputs, labels, B, NULL);
      params[index[s]] = saved;
      numeric[s] = (plus - minus) / (2.0 * step);
      analytic[s] = model.grads[index[s]];
    }
    char name[96]; /* a layer's name is up to 63 bytes */
    snprintf(name, sizeof name, "d%s (weights and biases)", layer->name);
    check_gradient(name, analytic, numeric, n, 2e-3);
  }

  /* The gradient norm helper is the plain L2 norm of the layer's weights and bias. */
  double sum = 0.0;
  const nn_layer_t *head = &model.layers[4];
  for (size_t i = 0; i < head->n_weight; i++) sum += (double)model.grads[head->weight + i] * model.grads[head->weight + i];
  for (size_t i = 0; i < head->n_bias; i++) sum += (double)model.grads[head->bias + i] * model.grads[head->bias + i];
  CHECK_NEAR(sqrt(sum), nn_layer_grad_norm(&model, 4), 1e-12);
  CHECK(nn_layer_grad_norm(&model, 0) > 0.0);
  CHECK_NEAR(0.0, nn_layer_grad_norm(&model, 1), 0.0);

  /* A second backward without zeroing doubles the parameter gradients. */
  float *first = malloc(model.n_params * sizeof *first);
  memcpy(first, model.grads, model.n_params * sizeof *first);
  loss_crossentropy_backward(nn_dlogits(&model), probs, labels, 1.0f, B, CFG_CLASSES);
  /* (dlogits now holds 2×; the activation gradients must be cleared, parameters kept) */
  memset(model.dactivations, 0, (model.n_activations - (size_t)4 * CFG_CLASSES) * sizeof(float));
  nn_backward(&model, inputs, B);
  worst = 0.0;
  for (size_t i = 0; i < model.n_params; i++)
    worst = fmax(worst, relative_error(model.grads[i], 3.0 * first[i], 1e-4));
  printf("  accumulate: gradients after a 2× second pass are 3× the first (max rel error %.1e)\n", worst);
  CHECK(worst < 1e-5);
  nn_zero_grad(&model);
  int all_zero = 1;
  for (size_t i = 0; i < model.n_params; i++) all_zero &= model.grads[i] == 0.0f;
  CHECK(all_zero);

  /* A few SGD steps on one batch drive its loss down. */
  float before = loss;
  for (int step = 0; step < 20; step++) {
    logits = nn_forward(&model, inputs, B, 1);
    loss = loss_crossentropy_forward(probs, NULL, logits, labels, B, CFG_CLASSES);
    nn_zero_grad(&model);
    loss_crossentropy_backward(nn_dlogits(&model), probs, labels, 1.0f, B, CFG_CLASSES);
    nn_backward(&model, inputs, B);
    nn_optimizer_step(&model, 0.05f);
  }
  printf("  20 SGD steps on one batch: loss %.4f -> %.4f\n", before, loss);
  CHECK(loss < 0.2f * before);
  CHECK_INT(20, model.optimizer.t);

  free(first);
  free(params);
  nn_model_free(&model);

  /* Shapes that cannot work are refused. */
  cfg_experiment_t bad = test_config(1);
  bad.layers[4].out = 7;
  CHECK_INT(-EINVAL, nn_model_create(&model, &bad, 4));
  CHECK_INT(-EINVAL, nn_model_create(&model, &config, 0));
}

/* ---------------------------------------------------------------------------------------
 * any model, in double: the reference for CNNs, dropout, blocks and injected gradients */

/* The model's function in double, from `params` (a double copy of its slab), following its
 * own order (active blocks included) with textbook loops for every kind, and the dropout
 * masks of the model's last forward when that forward was a training one. Returns the mean
 * cross-entropy plus Σ probe_r · (the output of layer `probe`) when probe >= 0: a loss on a
 * hidden layer, as feature distillation adds. */
static double reference_loss(const nn_model_t *model, const double *params, const float *inputs, const int *labels,
                             int B, int probe, const float *probe_r, double *logits_out) {
  double *outputs[NN_MAX_NODES] = {0};
  double *x = malloc((size_t)B * CFG_INPUTS * sizeof *x);
  for (int i = 0; i < B * CFG_INPUTS; i++) x[i] = inputs[i];
  double *first = x, extra = 0.0;
  for (int n = 0; n < model->n_order; n++) {
    const int l = model->order[n];
    const nn_layer_t *layer = &model->layers[l];
    const int in = layer->in, out_size = layer->out;
    double *out = malloc((size_t)B * out_size * sizeof *out);
    const double *w = params + layer->weight, *bias = params + layer->bias;
    const cfg_shape_t *s = &layer->in_shape;
    switch (layer->kind) {
    case CFG_LAYER_LINEAR:
      for (int b = 0; b < B; b++)
        for (int o = 0; o < out_size; o++) {
          double sum = bias[o];
          for (int i = 0; i < in; i++) sum += w[(size_t)o * in + i] * x[(size_t)b * in + i];
          out[(size_t)b * out_size + o] = sum;
        }
      break;
    case CFG_LAYER_RELU:
      for (int i = 0; i < B * in; i++) out[i] = fmax(0.0, x[i]);
      break;
    case CFG_LAYER_CONV2D:
      conv_reference(out, x, w, bias, B, s->channels, s->height, s->width, layer->shape.channels, layer->kernel,
                     layer->stride, layer->padding);
      break;
    case CFG_LAYER_MAXPOOL: {
      const int OH = layer->shape.height, OW = layer->shape.width, K = layer->kernel, S = layer->stride;
      for (int bc = 0; bc < B * s->channels; bc++)
        for (int oh = 0; oh < OH; oh++)
          for (int ow = 0; ow < OW; ow++) {
            double max = -INFINITY;
            for (int i = 0; i < K; i++)
              for (int j = 0; j < K; j++) max = fmax(max, x[((size_t)bc * s->height + oh * S + i) * s->width + ow * S + j]);
            out[((size_t)bc * OH + oh) * OW + ow] = max;
          }
      break;
    }
    case CFG_LAYER_FLATTEN:
      memcpy(out, x, (size_t)B * in * sizeof *out);
      break;
    case CFG_LAYER_DROPOUT:
      for (int i = 0; i < B * in; i++) out[i] = model->training ? x[i] * model->workspace[layer->mask + i] : x[i];
      break;
    case NN_GROW_BLOCK: {
      const int D = in, Hd = layer->hidden;
      const double *w1 = w, *w2 = w + (size_t)Hd * D, *b1 = bias, *b2 = bias + Hd;
      double *h = malloc((size_t)Hd * sizeof *h);
      for (int b = 0; b < B; b++) {
        for (int j = 0; j < Hd; j++) {
          double sum = b1[j];
          for (int i = 0; i < D; i++) sum += w1[(size_t)j * D + i] * x[(size_t)b * D + i];
          h[j] = fmax(0.0, sum);
        }
        for (int i = 0; i < D; i++) {
          double sum = x[(size_t)b * D + i] + b2[i];
          for (int j = 0; j < Hd; j++) sum += w2[(size_t)i * Hd + j] * h[j];
          out[(size_t)b * D + i] = sum;
        }
      }
      free(h);
      break;
    }
    }
    if (l == probe)
      for (int i = 0; i < B * out_size; i++) extra += probe_r[i] * out[i];
    outputs[n] = out;
    x = out;
  }
  if (logits_out) memcpy(logits_out, x, (size_t)B * CFG_CLASSES * sizeof *x);
  double loss = crossentropy_reference(x, labels, B, CFG_CLASSES) + extra;
  for (int n = 0; n < model->n_order; n++) free(outputs[n]);
  free(first);
  return loss;
}

/* One training forward/backward of `model` on the batch (with probe_r added to the output
 * gradient of layer `probe` when probe >= 0, between nn_zero_grad and nn_backward, as a
 * feature loss would), then: logits against the reference, and every active layer's
 * parameter gradient — `samples` weights and up to 32 biases each — against central
 * differences of the reference. */
static void check_model(const char *what, nn_model_t *model, const float *inputs, const int *labels, int B,
                        int training, int probe, const float *probe_r, int samples) {
  printf("%s\n", what);
  float *probs = malloc((size_t)B * CFG_CLASSES * sizeof *probs);
  const float *logits = nn_forward(model, inputs, B, training);
  float loss = loss_crossentropy_forward(probs, NULL, logits, labels, B, CFG_CLASSES);
  nn_zero_grad(model);
  loss_crossentropy_backward(nn_dlogits(model), probs, labels, 1.0f, B, CFG_CLASSES);
  if (probe >= 0) {
    float *d = nn_layer_doutput(model, probe);
    const int n = B * model->layers[probe].out;
    for (int i = 0; i < n; i++) d[i] += probe_r[i];
  }
  nn_backward(model, inputs, B);

  double *params = malloc(model->n_params * sizeof *params);
  for (size_t i = 0; i < model->n_params; i++) params[i] = model->params[i];
  double *reference_logits = malloc((size_t)B * CFG_CLASSES * sizeof *reference_logits);
  double reference = reference_loss(model, params, inputs, labels, B, -1, NULL, reference_logits);
  double worst = 0.0;
  for (int i = 0; i < B * CFG_CLASSES; i++) worst = fmax(worst, fabs(reference_logits[i] - logits[i]));
  printf("  forward: loss %.7f, reference %.7f, max |logit error| %.2e\n", loss, reference, worst);
  CHECK(worst < 1e-4);
  CHECK_NEAR(reference, loss, 1e-5);

  for (int n = 0; n < model->n_order; n++) {
    const nn_layer_t *layer = &model->layers[model->order[n]];
    if (nn_layer_param_count(layer) == 0) continue;
    enum { MAX = 96 };
    float analytic[MAX];
    double numeric[MAX];
    size_t index[MAX];
    int count = 0;
    for (int s = 0; s < samples && count < MAX - 32; s++)
      index[count++] = layer->weight + rng_below(&test_rng, (uint32_t)layer->n_weight);
    for (size_t i = 0; i < layer->n_bias && i < 32; i++) index[count++] = layer->bias + i;
    for (int s = 0; s < count; s++) {
      const double step = 1e-6;
      double saved = params[index[s]];
      params[index[s]] = saved + step;
      double plus = reference_loss(model, params, inputs, labels, B, probe, probe_r, NULL);
      params[index[s]] = saved - step;
      double minus = reference_loss(model, params, inputs, labels, B, probe, probe_r, NULL);
      params[index[s]] = saved;
      numeric[s] = (plus - minus) / (2.0 * step);
      analytic[s] = model->grads[index[s]];
    }
    char name[96];
    snprintf(name, sizeof name, "d%s (%s)", layer->name, cfg_layer_kind_name(layer->kind));
    if (layer->kind == NN_GROW_BLOCK) snprintf(name, sizeof name, "d%s (block)", layer->name);
    check_gradient(name, analytic, numeric, count, 2e-3);
  }
  free(reference_logits);
  free(params);
  free(probs);
}

/* A config from JSON through the real validation, so shapes and names are the ones the
 * daemon computed (nn_model_create refuses a model whose shapes disagree with them). */
static cfg_experiment_t parse_config(const char *json) {
  cfg_experiment_t config;
  cfg_errors_t errors;
  if (cfg_parse(json, strlen(json), &config, &errors) != 0) {
    fprintf(stderr, "test config rejected: %s: %s\n", errors.items[0].path, errors.items[0].message);
    CHECK(0);
  }
  return config;
}

static float *random_batch(int B) {
  float *inputs = malloc((size_t)B * CFG_INPUTS * sizeof *inputs);
  for (int i = 0; i < B * CFG_INPUTS; i++) inputs[i] = (float)rng_normal(&test_rng);
  return inputs;
}

/* Non-zero biases everywhere, so that every bias gradient is exercised in general. */
static void perturb_biases(nn_model_t *model) {
  fill_uniform(model->params + model->n_decayed, (int)(model->n_params - model->n_decayed), -0.1f, 0.1f);
}

/* ---------------------------------------------------------------------------------------
 * a small CNN, end to end */

#define SMALL_CNN                                                                                         \
  "{\"seed\": 11, \"model\": {\"layers\": ["                                                              \
  "{\"type\": \"conv2d\", \"out\": 4, \"kernel\": 3, \"name\": \"conv1\"}, {\"type\": \"relu\"},"         \
  "{\"type\": \"maxpool\", \"size\": 2},"                                                                 \
  "{\"type\": \"conv2d\", \"out\": 6, \"kernel\": 3, \"stride\": 2, \"padding\": 1}, {\"type\": \"relu\"}," \
  "{\"type\": \"maxpool\", \"size\": 3, \"stride\": 2}, {\"type\": \"flatten\", \"name\": \"flat\"},"      \
  "{\"type\": \"linear\", \"out\": 16, \"name\": \"fc\"}, {\"type\": \"relu\"},"                          \
  "{\"type\": \"dropout\", \"p\": 0.25}, {\"type\": \"linear\", \"out\": 10}]}}"

static void test_cnn(void) {
  cfg_experiment_t config = parse_config(SMALL_CNN);
  nn_model_t model;
  CHECK_INT(0, nn_model_create(&model, &config, 3));
  if (model.params == NULL) return;

  /* Names as the config knows them, shapes as validation computed them. */
  static const char *const names[] = {"conv1", "relu0", "maxpool0", "conv2d1", "relu1", "maxpool1",
                                      "flat", "fc", "relu2", "dropout0", "linear1"};
  for (int l = 0; l < model.n_layers; l++) {
    CHECK_STR(names[l], model.layers[l].name);
    CHECK(memcmp(&config.layers[l].shape, &model.layers[l].shape, sizeof(cfg_shape_t)) == 0);
  }
  CHECK_INT(4 * 28 * 28, model.layers[0].out);
  CHECK_INT(6 * 7 * 7, model.layers[3].out); /* 14 → stride 2, pad 1 → 7 */
  CHECK_INT(6 * 3 * 3, model.layers[6].out); /* 7 → size 3, stride 2 → 3 */
  CHECK_INT(4 * 1 * 9 + 4 + 6 * 4 * 9 + 6 + 54 * 16 + 16 + 16 * 10 + 10, model.n_params);
  CHECK_INT(4 * 9, model.layers[0].n_weight);
  /* Flatten is a view: the same memory as its input, and no buffer of its own. */
  CHECK(nn_layer_output(&model, 6) == nn_layer_output(&model, 5));
  CHECK(nn_layer_doutput(&model, 6) == nn_layer_doutput(&model, 5));
  CHECK(nn_layer_shape(&model, 6).image == 0 && nn_layer_shape(&model, 5).image == 1);

  enum { B = 3 };
  float *inputs = random_batch(B);
  int labels[B] = {2, 7, 7};
  perturb_biases(&model);
  check_model("small CNN, training (dropout on), against the double reference", &model, inputs, labels, B, 1, -1,
              NULL, 24);
  /* Dropout really dropped something in that forward, with the mask the reference used. */
  int dropped = 0;
  for (int i = 0; i < B * 16; i++) dropped += model.workspace[model.layers[9].mask + i] == 0.0f;
  CHECK(dropped > 0 && dropped < B * 16);

  /* Evaluation: dropout is the identity, so its output is its input, and the gradient
   * check holds without any mask. */
  check_model("small CNN, evaluation mode", &model, inputs, labels, B, 0, -1, NULL, 8);
  CHECK(memcmp(nn_layer_output(&model, 9), nn_layer_output(&model, 8), B * 16 * sizeof(float)) == 0);

  /* The same step redraws the same masks; the next step draws others. */
  float *first = malloc(B * 16 * sizeof *first);
  nn_forward(&model, inputs, B, 1);
  memcpy(first, nn_layer_output(&model, 9), B * 16 * sizeof *first);
  nn_forward(&model, inputs, B, 1);
  CHECK(memcmp(first, nn_layer_output(&model, 9), B * 16 * sizeof *first) == 0);
  model.optimizer.t++;
  nn_forward(&model, inputs, B, 1);
  CHECK(memcmp(first, nn_layer_output(&model, 9), B * 16 * sizeof *first) != 0);
  model.optimizer.t--;
  free(first);

  /* Training steps on one batch drive its loss down. */
  float probs[B * CFG_CLASSES];
  float before = loss_crossentropy_forward(probs, NULL, nn_forward(&model, inputs, B, 0), labels, B, CFG_CLASSES);
  for (int step = 0; step < 30; step++) {
    const float *logits = nn_forward(&model, inputs, B, 1);
    loss_crossentropy_forward(probs, NULL, logits, labels, B, CFG_CLASSES);
    nn_zero_grad(&model);
    loss_crossentropy_backward(nn_dlogits(&model), probs, labels, 1.0f, B, CFG_CLASSES);
    nn_backward(&model, inputs, B);
    nn_optimizer_step(&model, 0.02f);
  }
  float after = loss_crossentropy_forward(probs, NULL, nn_forward(&model, inputs, B, 0), labels, B, CFG_CLASSES);
  printf("  30 SGD steps on one batch: loss %.4f -> %.4f\n", before, after);
  CHECK(after < 0.5f * before);

  /* A teacher: the same network forward only, sharing its scratch buffers, gives the same
   * logits bit for bit, with a fraction of the memory and nothing for the backward. */
  nn_model_t teacher;
  CHECK_INT(0, nn_model_create_inference(&teacher, &config, B));
  memcpy(teacher.params, model.params, model.n_params * sizeof(float));
  const float *student_logits = nn_forward(&model, inputs, B, 0);
  const float *teacher_logits = nn_forward(&teacher, inputs, B, 1); /* training is ignored */
  CHECK(memcmp(student_logits, teacher_logits, B * CFG_CLASSES * sizeof(float)) == 0);
  /* Its weights packed once (nn_model_pack_weights, on the packed path): the same bits. */
  nn_model_pack_weights(&teacher);
  CHECK_INT(teacher.dense == NN_DENSE_KERNELS ? (int)kernels_current() + 1 : 0, teacher.weights_packed);
  teacher_logits = nn_forward(&teacher, inputs, B, 0);
  CHECK(memcmp(student_logits, teacher_logits, B * CFG_CLASSES * sizeof(float)) == 0);
  if (teacher.weights_packed && kernels_current() != KERNELS_PORTABLE) {
    /* Panels of another set's width: a forward on the portable set packs per call again. */
    kernels_use(KERNELS_PORTABLE);
    float portable[B * CFG_CLASSES];
    memcpy(portable, nn_forward(&model, inputs, B, 0), sizeof portable);
    CHECK(memcmp(portable, nn_forward(&teacher, inputs, B, 0), sizeof portable) == 0);
    kernels_use(kernels_isa_best());
  }
  CHECK(memcmp(nn_layer_output(&model, 9), nn_layer_output(&teacher, 9), B * 16 * sizeof(float)) == 0);
  CHECK(teacher.grads == NULL && teacher.optim_state == NULL && teacher.dactivations == NULL);
  CHECK(nn_layer_doutput(&teacher, 3) == NULL);
  CHECK(teacher.n_workspace < model.n_workspace);
  printf("  inference model: workspace %zu floats (training: %zu), activations %zu (training: 2 × %zu)\n",
         teacher.n_workspace, model.n_workspace, teacher.n_activations, model.n_activations);
  nn_model_free(&teacher);

  /* A layer list validation would not have produced is refused. */
  cfg_experiment_t bad = config;
  bad.layers[3].stride = 1; /* the recorded shapes no longer follow */
  nn_model_t refused;
  CHECK_INT(-EINVAL, nn_model_create(&refused, &bad, 3));
  bad = config;
  bad.layers[7].kind = CFG_LAYER_MAXPOOL; /* a pool after flatten */
  bad.layers[7].shape.channels = 0;
  CHECK_INT(-EINVAL, nn_model_create(&refused, &bad, 3));
  free(inputs);
  nn_model_free(&model);
}

/* A linear layer flattens an image-shaped input itself: with the same parameters, conv →
 * linear and conv → flatten → linear compute the same logits, and its gradients check. */
/* The teacher's CNN (conv32-pool-conv64-pool-fc128-fc10, every fast path: few taps, chunks,
 * 2×2 pools) trained three steps twice from the same seed and data: the same bits, on every
 * kernel set (each on its own: sets may differ from each other in the last bits). */
static void test_cnn_repeatable(void) {
  cfg_experiment_t config = parse_config(
      "{\"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 32, \"kernel\": 3, \"padding\": 1},"
      " {\"type\": \"relu\"}, {\"type\": \"maxpool\", \"size\": 2},"
      " {\"type\": \"conv2d\", \"out\": 64, \"kernel\": 3, \"padding\": 1}, {\"type\": \"relu\"},"
      " {\"type\": \"maxpool\", \"size\": 2}, {\"type\": \"flatten\"},"
      " {\"type\": \"linear\", \"out\": 128}, {\"type\": \"relu\"}, {\"type\": \"linear\", \"out\": 10}]},"
      " \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01, \"momentum\": 0.9}}");
  enum { B = 5 };
  float *inputs = random_batch(B);
  int labels[B] = {1, 3, 3, 9, 0};
  for (int isa = 0; isa < KERNELS_COUNT; isa++) {
    if (kernels_use((kernels_isa_t)isa) != 0) continue;
    nn_model_t models[2];
    for (int m = 0; m < 2; m++) {
      CHECK_INT(0, nn_model_create(&models[m], &config, B));
      for (int step = 0; step < 3; step++) {
        float probs[B * CFG_CLASSES];
        loss_crossentropy_forward(probs, NULL, nn_forward(&models[m], inputs, B, 1), labels, B, CFG_CLASSES);
        nn_zero_grad(&models[m]);
        loss_crossentropy_backward(nn_dlogits(&models[m]), probs, labels, 1.0f, B, CFG_CLASSES);
        nn_backward(&models[m], inputs, B);
        nn_optimizer_step(&models[m], 0.01f);
      }
    }
    int same = memcmp(models[0].params, models[1].params, models[0].n_params * sizeof(float)) == 0;
    printf("  teacher CNN, 3 steps twice, kernel set %s: parameters %s\n", kernels_isa_name((kernels_isa_t)isa),
           same ? "bit-identical" : "DIFFER");
    CHECK(same);
    nn_model_free(&models[0]);
    nn_model_free(&models[1]);
  }
  kernels_use(kernels_isa_best());
  free(inputs);
}

/* The pool runs each share exactly once per run, on as many threads as asked. */
typedef struct {
  int hits[8];
  int threads_seen;
} pool_probe_t;

static void pool_probe_task(void *context, int thread, int threads) {
  pool_probe_t *probe = context;
  probe->hits[thread]++; /* each thread its own slot: no race */
  if (thread == 0) probe->threads_seen = threads;
}

static void test_thread_pool(void) {
  char error[160] = "";
  thread_pool_t *pool = NULL;
  CHECK_INT(-EINVAL, thread_pool_create(&pool, 0, error, sizeof error));
  CHECK(pool == NULL && strstr(error, "threads") != NULL);
  for (int threads = 1; threads <= 8; threads *= 2) {
    CHECK_INT(0, thread_pool_create(&pool, threads, error, sizeof error));
    pool_probe_t probe = {{0}, 0};
    for (int run = 0; run < 200; run++) thread_pool_run(pool, pool_probe_task, &probe);
    CHECK_INT(threads, probe.threads_seen);
    CHECK_INT(threads, thread_pool_threads(pool));
    int exact = 1;
    for (int t = 0; t < 8; t++) exact &= probe.hits[t] == (t < threads ? 200 : 0);
    printf("thread pool of %d: 200 runs, every share once per run: %s\n", threads, exact ? "yes" : "NO");
    CHECK(exact);
    thread_pool_free(pool);
  }
}

/* One SGD step of `model` on (inputs, labels); the logits, gradients and input-side
 * activation gradients are left in the model. */
/* max |a − b| / max(1e-2, |b|) over n values: rounding apart, relative to b's size. */
static double relative_difference(const float *a, const float *b, size_t n) {
  double worst = 0.0;
  for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]) / fmax(1e-2, fabs((double)b[i])));
  return worst;
}

static void train_step(nn_model_t *model, const float *inputs, const int *labels, int B) {
  float probs[8 * CFG_CLASSES];
  loss_crossentropy_forward(probs, NULL, nn_forward(model, inputs, B, 1), labels, B, CFG_CLASSES);
  nn_zero_grad(model);
  loss_crossentropy_backward(nn_dlogits(model), probs, labels, 1.0f, B, CFG_CLASSES);
  nn_backward(model, inputs, B);
}

/* The batch split across threads (nn_model_set_threads; OpenBLAS at one thread, as main()
 * sets it, so the dense layers split across the pool too): on every kernel set, at 2, 3 and
 * 7 threads (more threads than examples: some get none) and batches of 1 and 5, the
 * convolution's output is one thread's bit for bit (each example is computed alone), the
 * logits, the input gradients and the weight gradients agree to rounding (OpenBLAS computes
 * a share of a dense layer's rows with other kernels than the whole; weight gradients are
 * summed in another order), and two runs at one count give the same bits. Then the small
 * CNN, threaded, against the double reference and central differences. */
static void test_cnn_threads(void) {
  cfg_experiment_t config = parse_config(
      "{\"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 5, \"kernel\": 3, \"padding\": 1},"
      " {\"type\": \"relu\"}, {\"type\": \"maxpool\", \"size\": 2},"
      " {\"type\": \"conv2d\", \"out\": 11, \"kernel\": 3, \"padding\": 1}, {\"type\": \"relu\"},"
      " {\"type\": \"maxpool\", \"size\": 2}, {\"type\": \"flatten\"},"
      " {\"type\": \"linear\", \"out\": 16}, {\"type\": \"relu\"}, {\"type\": \"linear\", \"out\": 10}]},"
      " \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01, \"momentum\": 0.9}}");
  char error[160] = "";
  nn_model_t model;
  CHECK_INT(0, nn_model_create(&model, &config, 5));
  CHECK_INT(1, model.threads);
  CHECK_INT(-EINVAL, nn_model_set_threads(&model, 0, error, sizeof error));
  CHECK(strstr(error, "threads") != NULL);
  CHECK_INT(-EINVAL, nn_model_set_threads(&model, NN_MAX_THREADS + 1, error, sizeof error));
  CHECK_INT(1, model.threads); /* refused: still one thread, and it still runs */
  nn_model_free(&model);

  enum { MAX_B = 5 };
  float *inputs = random_batch(MAX_B);
  const int labels[MAX_B] = {4, 0, 9, 9, 2};
  const int counts[] = {2, 3, 7}, batches[] = {1, 5};
  int compared = 0;
  for (int isa = 0; isa < KERNELS_COUNT; isa++) {
    if (kernels_use((kernels_isa_t)isa) != 0) continue;
    for (size_t bi = 0; bi < 2; bi++) {
      const int B = batches[bi];
      nn_model_t one;
      CHECK_INT(0, nn_model_create(&one, &config, MAX_B));
      perturb_biases(&one);
      train_step(&one, inputs, labels, B);
      for (size_t ci = 0; ci < 3; ci++) {
        nn_model_t runs[2];
        for (int r = 0; r < 2; r++) {
          CHECK_INT(0, nn_model_create(&runs[r], &config, MAX_B));
          /* conv1's and its ReLU's outputs stored, for the epilogue's check below (`one`
           * stores neither: its pooled output checks the transient path too). */
          nn_model_keep_output(&runs[r], 0);
          nn_model_keep_output(&runs[r], 1);
          CHECK_INT(0, nn_model_set_threads(&runs[r], counts[ci], error, sizeof error));
          CHECK_INT(counts[ci], runs[r].threads);
          memcpy(runs[r].params, one.params, one.n_params * sizeof(float));
          train_step(&runs[r], inputs, labels, B);
        }
        nn_model_t *m = &runs[0];
        const size_t n_pool = (size_t)B * m->layers[2].out; /* conv1's pooled output; conv2's input gradient */
        const int same_forward = memcmp(nn_layer_output(m, 2), nn_layer_output(&one, 2), n_pool * sizeof(float)) == 0;
        const double logits_error = relative_difference(nn_layer_output(m, 9), nn_layer_output(&one, 9), (size_t)B * 10);
        const double dinp_error = relative_difference(nn_layer_doutput(m, 2), nn_layer_doutput(&one, 2), n_pool);
        const double worst = relative_difference(m->grads, one.grads, m->n_params);
        const int repeatable =
            memcmp(runs[0].grads, runs[1].grads, m->n_params * sizeof(float)) == 0 &&
            memcmp(nn_layer_output(&runs[0], 9), nn_layer_output(&runs[1], 9), (size_t)B * 10 * sizeof(float)) == 0 &&
            memcmp(nn_layer_doutput(&runs[0], 2), nn_layer_doutput(&runs[1], 2), n_pool * sizeof(float)) == 0;
        printf("  %s, B=%d, %d threads: convolution %s, within one thread's by %.1e (logits), %.1e (input "
               "gradient), %.1e (weight gradients), two runs %s\n",
               kernels_isa_name((kernels_isa_t)isa), B, counts[ci], same_forward ? "identical" : "DIFFERS",
               logits_error, dinp_error, worst, repeatable ? "bit-identical" : "DIFFER");
        /* The ReLU and the 2×2 pool run inside the convolution's loop (nn_forward's
         * epilogue): their outputs and argmaxes are what the layers compute on their own. */
        const size_t n_pooled = (size_t)B * m->layers[2].out, n_act = (size_t)B * m->layers[0].out;
        float *relu_alone = malloc(n_act * sizeof *relu_alone), *pool_alone = malloc(n_pooled * sizeof *pool_alone);
        int32_t *argmax_alone = malloc(n_pooled * sizeof *argmax_alone);
        const cfg_shape_t *pooled_in = &m->layers[2].in_shape;
        relu_forward(relu_alone, nn_layer_output(m, 0), (int)n_act);
        maxpool_forward(pool_alone, argmax_alone, relu_alone, B, pooled_in->channels, pooled_in->height,
                        pooled_in->width, 2, 2);
        const int same_epilogue = memcmp(relu_alone, nn_layer_output(m, 1), n_act * sizeof(float)) == 0 &&
                                  memcmp(pool_alone, nn_layer_output(m, 2), n_pooled * sizeof(float)) == 0 &&
                                  memcmp(argmax_alone, m->indices + m->layers[2].argmax, n_pooled * sizeof(int32_t)) == 0;
        CHECK(same_epilogue);
        free(relu_alone), free(pool_alone), free(argmax_alone);
        CHECK(same_forward);
        CHECK(logits_error < 1e-3); /* ~1e-6 absolute on logits of ~1e-2: sums of 539 products */
        CHECK(dinp_error < 1e-4);
        CHECK(worst < 1e-4);
        CHECK(repeatable);
        compared++;
        nn_model_free(&runs[0]);
        nn_model_free(&runs[1]);
      }
      nn_model_free(&one);
    }
  }
  CHECK(compared >= 6);
  kernels_use(kernels_isa_best());

  /* Threaded, against the double reference and central differences: 2 threads over 3
   * examples (an uneven split) and 4 (more threads than examples). */
  cfg_experiment_t small = parse_config(SMALL_CNN);
  const int pool_sizes[] = {2, 4};
  int labels3[3] = {5, 1, 8};
  for (int i = 0; i < 2; i++) {
    nn_model_t threaded;
    CHECK_INT(0, nn_model_create(&threaded, &small, 3));
    CHECK_INT(0, nn_model_set_threads(&threaded, pool_sizes[i], error, sizeof error));
    perturb_biases(&threaded);
    char what[96];
    snprintf(what, sizeof what, "small CNN on %d threads, against the double reference", pool_sizes[i]);
    check_model(what, &threaded, inputs, labels3, 3, 0, -1, NULL, 16);
    nn_model_free(&threaded);
  }
  free(inputs);
}

/* nn_zero_grad leaves the output gradients of a convolution followed by a ReLU, and of that
 * ReLU followed by a 2x2 pool, to the convolution's backward loop (made per example in its
 * scratch, never stored). With a previous step's values (and garbage) left in every
 * activation gradient, a step gives the same bits as zeroing everything first, at 1, 2, 3 and 7 threads, with no injected
 * gradient and with one injected into the convolution's or the ReLU's output (as a feature
 * loss would, through nn_layer_doutput). */
static void test_lazy_zero_grad(void) {
  cfg_experiment_t config = parse_config(
      "{\"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 5, \"kernel\": 3, \"padding\": 1},"
      " {\"type\": \"relu\"}, {\"type\": \"maxpool\", \"size\": 2},"
      " {\"type\": \"conv2d\", \"out\": 7, \"kernel\": 3, \"padding\": 1}, {\"type\": \"relu\"},"
      " {\"type\": \"maxpool\", \"size\": 2}, {\"type\": \"flatten\"},"
      " {\"type\": \"linear\", \"out\": 16}, {\"type\": \"relu\"}, {\"type\": \"linear\", \"out\": 10}]}}");
  enum { B = 5 };
  float *inputs = random_batch(B);
  const int labels[B] = {3, 1, 4, 1, 5};
  const int counts[] = {1, 2, 3, 7}, probes[] = {-1, 0, 1, 3, 4};
  char error[160] = "";
  int compared = 0;
  for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++) {
    nn_model_t model;
    CHECK_INT(0, nn_model_create(&model, &config, B));
    CHECK_INT(0, nn_model_set_threads(&model, counts[ci], error, sizeof error));
    perturb_biases(&model);
    float *probe_r = malloc((size_t)B * model.layers[0].out * sizeof *probe_r);
    fill_uniform(probe_r, B * model.layers[0].out, -0.5f, 0.5f);
    float *grads = malloc(model.n_params * sizeof *grads);
    float *dact = malloc(model.n_activations * sizeof *dact);
    float probs[B * CFG_CLASSES];
    for (size_t pi = 0; pi < sizeof probes / sizeof *probes; pi++) {
      const int probe = probes[pi];
      /* A loss on an output declares it (nn_model_keep_output); the probes before it stay
       * declared, so the outputs go from all transient to all stored over the probes. */
      if (probe >= 0) nn_model_keep_output(&model, probe);
      for (int lazy = 0; lazy < 2; lazy++) {
        train_step(&model, inputs, labels, B); /* leaves this step's gradients behind */
        for (size_t i = 0; i < model.n_activations; i++) model.dactivations[i] += 7.0f;
        loss_crossentropy_forward(probs, NULL, nn_forward(&model, inputs, B, 0), labels, B, CFG_CLASSES);
        if (lazy) {
          nn_zero_grad(&model);
          /* The path under test is taken: both convolutions' and both ReLUs' left. */
          CHECK(model.layers[0].output_gradient_stale && model.layers[1].output_gradient_stale &&
                model.layers[3].output_gradient_stale && model.layers[4].output_gradient_stale);
          CHECK(!model.layers[2].output_gradient_stale && !model.layers[7].output_gradient_stale);
        } else { /* what nn_zero_grad did before */
          memset(model.grads, 0, model.n_params * sizeof(float));
          memset(model.dactivations, 0, model.n_activations * sizeof(float));
        }
        loss_crossentropy_backward(nn_dlogits(&model), probs, labels, 1.0f, B, CFG_CLASSES);
        if (probe >= 0) {
          float *d = nn_layer_doutput(&model, probe);
          for (int i = 0; i < B * model.layers[probe].out; i++) d[i] += probe_r[i];
        }
        nn_backward(&model, inputs, B);
        if (!lazy) {
          memcpy(grads, model.grads, model.n_params * sizeof *grads);
          memcpy(dact, model.dactivations, model.n_activations * sizeof *dact);
          continue;
        }
        /* The output gradients still marked were made in scratch and never stored: every
         * other one, and every parameter's, must match. */
        int same = memcmp(grads, model.grads, model.n_params * sizeof *grads) == 0, unstored = 0;
        for (int l = 0; l < model.n_layers; l++) {
          const size_t at = model.layers[l].activation, n = (size_t)B * model.layers[l].out;
          if (model.layers[l].output_gradient_stale) {
            unstored++;
            continue;
          }
          same &= memcmp(dact + at, model.dactivations + at, n * sizeof *dact) == 0;
        }
        printf("  %d threads, injected into %d: gradients %s those of zeroing everything (%d not stored)\n",
               counts[ci], probe, same ? "bit-identical to" : "DIFFER from", unstored);
        CHECK(same);
        CHECK_INT(probe < 0 ? 4 : 3, unstored); /* the injected one is stored */
        compared++;
      }
    }
    free(probe_r), free(grads), free(dact);
    nn_model_free(&model);
  }
  CHECK_INT(20, compared);
  free(inputs);
}

/* The outputs nn_forward does not store (nn_layer_t.output_transient): a convolution's read
 * only by its fused ReLU, and that ReLU's read only by its fused pool. A model storing them
 * (nn_model_keep_output) and one not give the same bits for every parameter gradient, the
 * pooled outputs and the logits, over two SGD steps, at 1 and 3 threads on every kernel set
 * the CPU runs; the accessors give
 * NULL for what was not stored, and the slab is left untouched there. A config's `features`
 * declare their student layers. */
static void test_transient_outputs(void) {
  cfg_experiment_t config = parse_config(
      "{\"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 5, \"kernel\": 3},"
      " {\"type\": \"relu\"}, {\"type\": \"maxpool\", \"size\": 2},"
      " {\"type\": \"conv2d\", \"out\": 7, \"kernel\": 3, \"padding\": 1}, {\"type\": \"relu\"},"
      " {\"type\": \"maxpool\", \"size\": 2}, {\"type\": \"conv2d\", \"out\": 3, \"kernel\": 3},"
      " {\"type\": \"relu\"}, {\"type\": \"flatten\"}, {\"type\": \"linear\", \"out\": 10}]},"
      " \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.05, \"momentum\": 0.9}}");
  enum { B = 5 };
  float *inputs = random_batch(B);
  const int labels[B] = {2, 7, 1, 8, 2}, counts[] = {1, 3};
  char error[160] = "";
  int compared = 0;
  for (int isa = 0; isa < KERNELS_COUNT; isa++) {
    if (kernels_use((kernels_isa_t)isa) != 0) continue;
    for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++) {
      nn_model_t transient, stored;
      CHECK_INT(0, nn_model_create(&transient, &config, B));
      CHECK_INT(0, nn_model_create(&stored, &config, B));
      for (int l = 0; l < stored.n_layers; l++) nn_model_keep_output(&stored, l);
      CHECK_INT(0, nn_model_set_threads(&transient, counts[ci], error, sizeof error));
      CHECK_INT(0, nn_model_set_threads(&stored, counts[ci], error, sizeof error));
      perturb_biases(&transient);
      memcpy(stored.params, transient.params, transient.n_params * sizeof(float));
      /* Both convolutions with a pool after their ReLU lose both outputs; the third (a ReLU,
       * no pool) loses only its own; nothing is transient once declared. */
      const int expected[10] = {1, 1, 0, 1, 1, 0, 1, 0, 0, 0};
      int matches = 1;
      for (int l = 0; l < 10; l++) {
        matches &= transient.layers[l].output_transient == expected[l] && !stored.layers[l].output_transient;
        matches &= (nn_layer_output(&transient, l) == NULL) == expected[l];
        matches &= (nn_layer_doutput(&transient, l) == NULL) == expected[l];
      }
      CHECK(matches);
      const size_t n_conv1 = (size_t)B * transient.layers[0].out;
      float *untouched = transient.activations + transient.layers[0].activation;
      for (size_t i = 0; i < n_conv1; i++) untouched[i] = -3.0f;
      for (int step = 0; step < 2; step++) {
        train_step(&transient, inputs, labels, B);
        train_step(&stored, inputs, labels, B);
        nn_optimizer_step(&transient, 0.05f);
        nn_optimizer_step(&stored, 0.05f);
      }
      const int same = memcmp(transient.grads, stored.grads, stored.n_params * sizeof(float)) == 0 &&
                       memcmp(transient.params, stored.params, stored.n_params * sizeof(float)) == 0 &&
                       memcmp(nn_layer_output(&transient, 5), nn_layer_output(&stored, 5),
                              (size_t)B * stored.layers[5].out * sizeof(float)) == 0 &&
                       memcmp(nn_layer_output(&transient, 9), nn_layer_output(&stored, 9),
                              (size_t)B * 10 * sizeof(float)) == 0;
      int left = 1;
      for (size_t i = 0; i < n_conv1; i++) left &= untouched[i] == -3.0f;
      printf("  %s, %d threads: outputs not stored vs stored: gradients, parameters, logits %s; "
             "conv1's slab %s\n", kernels_isa_name((kernels_isa_t)isa), counts[ci],
             same ? "bit-identical" : "DIFFER", left ? "untouched" : "WRITTEN");
      CHECK(same);
      CHECK(left);
      compared++;
      nn_model_free(&transient);
      nn_model_free(&stored);
    }
  }
  kernels_use(kernels_isa_best());
  CHECK(compared >= 4); /* two thread counts on the portable set and at least one other */

  /* A feature on conv1 (config.features) keeps its output, not its ReLU's. */
  cfg_experiment_t featured = parse_config(
      "{\"teacher\": {\"experiment\": 1}, \"features\": [{\"student\": \"conv1\", \"teacher\": \"conv1\"}],"
      " \"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 5, \"kernel\": 3, \"name\": \"conv1\"},"
      " {\"type\": \"relu\"}, {\"type\": \"maxpool\", \"size\": 2}, {\"type\": \"flatten\"},"
      " {\"type\": \"linear\", \"out\": 10}]}}");
  nn_model_t model;
  CHECK_INT(1, featured.n_features);
  CHECK_INT(0, nn_model_create(&model, &featured, 2));
  CHECK(nn_layer_output(&model, 0) != NULL && nn_layer_doutput(&model, 0) != NULL);
  CHECK(nn_layer_output(&model, 1) == NULL && model.layers[1].output_transient);
  nn_model_free(&model);
  free(inputs);
}

static void test_linear_on_image(void) {
  cfg_experiment_t direct = parse_config(
      "{\"seed\": 3, \"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 2, \"kernel\": 3, \"stride\": 2},"
      "{\"type\": \"relu\"}, {\"type\": \"linear\", \"out\": 10}]}}");
  cfg_experiment_t flattened = parse_config(
      "{\"seed\": 3, \"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 2, \"kernel\": 3, \"stride\": 2},"
      "{\"type\": \"relu\"}, {\"type\": \"flatten\"}, {\"type\": \"linear\", \"out\": 10}]}}");
  nn_model_t a, b;
  CHECK_INT(0, nn_model_create(&a, &direct, 2));
  CHECK_INT(0, nn_model_create(&b, &flattened, 2));
  if (!a.params || !b.params) return;
  CHECK_INT(2 * 14 * 14, a.layers[2].in);
  CHECK_INT(a.n_params, b.n_params);
  perturb_biases(&a);
  memcpy(b.params, a.params, a.n_params * sizeof(float));
  float *inputs = random_batch(2);
  int labels[2] = {4, 0};
  const float *la = nn_forward(&a, inputs, 2, 1), *lb = nn_forward(&b, inputs, 2, 1);
  CHECK(memcmp(la, lb, 2 * CFG_CLASSES * sizeof(float)) == 0);
  check_model("linear on an image-shaped input (conv → relu → linear)", &a, inputs, labels, 2, 1, -1, NULL, 32);
  free(inputs);
  nn_model_free(&a);
  nn_model_free(&b);
}

/* ---------------------------------------------------------------------------------------
 * gradients injected into hidden layers (feature losses) */

static void test_injected_gradients(void) {
  cfg_experiment_t config = parse_config(SMALL_CNN);
  nn_model_t model;
  CHECK_INT(0, nn_model_create(&model, &config, 2));
  if (!model.params) return;
  nn_model_keep_output(&model, 1); /* as a feature loss on it would declare */
  perturb_biases(&model);
  enum { B = 2 };
  float *inputs = random_batch(B);
  int labels[B] = {1, 9};
  /* A feature map after the first conv's relu, the flattened features (a view: the gradient
   * lands in the pool's buffer), and the hidden fc layer. */
  static const int probes[] = {1, 6, 7};
  for (size_t p = 0; p < sizeof probes / sizeof probes[0]; p++) {
    int layer = probes[p], n = B * model.layers[layer].out;
    float *r = malloc(n * sizeof *r);
    fill_uniform(r, n, -0.05f, 0.05f);
    char what[192];
    snprintf(what, sizeof what, "cross-entropy + Σ r·%s, r injected into nn_layer_doutput(%s)", model.layers[layer].name,
             model.layers[layer].name);
    check_model(what, &model, inputs, labels, B, 1, layer, r, 16);
    free(r);
  }
  free(inputs);
  nn_model_free(&model);
}

/* ---------------------------------------------------------------------------------------
 * a growing student */

#define GROWING_MLP(optimizer)                                                                         \
  "{\"seed\": 21, \"epochs\": 6, \"optimizer\": " optimizer ","                                         \
  " \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 12, \"name\": \"fc1\"}, {\"type\": \"relu\"}," \
  " {\"type\": \"linear\", \"out\": 10}]},"                                                            \
  " \"grow\": [{\"epoch\": 3, \"after\": \"fc1\", \"hidden\": 8}, {\"epoch\": 5, \"after\": \"relu0\"},"   \
  "          {\"epoch\": 3, \"after\": \"fc1\", \"name\": \"deep\"}]}"

static void test_grow(void) {
  printf("growing student: blocks after fc1 (epoch 3, twice) and relu0 (epoch 5)\n");
  cfg_experiment_t config = parse_config(GROWING_MLP("{\"type\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9, \"weight_decay\": 0.01}"));
  nn_model_t model;
  CHECK_INT(0, nn_model_create(&model, &config, 4));
  if (!model.params) return;
  CHECK_INT(3, model.n_blocks);
  CHECK_STR("grow1", model.layers[3].name);
  CHECK_STR("grow2", model.layers[4].name);
  CHECK_STR("deep", model.layers[5].name);
  CHECK_INT(8, model.layers[3].hidden);
  CHECK_INT(12, model.layers[4].hidden); /* the width of relu0 by default */
  const size_t base = 784 * 12 + 12 + 12 * 10 + 10;
  const size_t block1 = 2 * 8 * 12 + 8 + 12, block2 = 2 * 12 * 12 + 12 + 12;
  CHECK_INT(base + block1 + 2 * block2, model.n_params);
  CHECK_INT(base, nn_model_active_params(&model));
  CHECK_INT(3, model.n_order);
  /* Every weight before every bias, blocks' too: weight decay is one leading range. */
  CHECK_INT(784 * 12 + 12 * 10 + 2 * 8 * 12 + 2 * 2 * 12 * 12, model.n_decayed);
  for (int l = 0; l < model.n_layers + model.n_blocks; l++)
    if (model.layers[l].n_bias) CHECK(model.layers[l].bias >= model.n_decayed);
  /* W1 random (its own stream), W2 and both biases zero. */
  const nn_layer_t *g1 = &model.layers[3];
  double w1_norm = 0.0, rest = 0.0;
  for (size_t i = 0; i < 8 * 12; i++) w1_norm += fabs(model.params[g1->weight + i]);
  for (size_t i = 8 * 12; i < g1->n_weight; i++) rest += fabs(model.params[g1->weight + i]);
  for (size_t i = 0; i < g1->n_bias; i++) rest += fabs(model.params[g1->bias + i]);
  CHECK(w1_norm > 0.0 && rest == 0.0);
  /* Adding blocks to a config changes none of the other layers' initial weights. */
  cfg_experiment_t plain = config;
  plain.n_grow = 0;
  nn_model_t without;
  CHECK_INT(0, nn_model_create(&without, &plain, 4));
  CHECK(memcmp(without.params, model.params, model.n_layer_weights * sizeof(float)) == 0);
  nn_model_free(&without);

  enum { B = 4 };
  float *inputs = random_batch(B);
  int labels[B] = {0, 3, 3, 9};
  perturb_biases(&model);
  /* perturb_biases touched the blocks' biases too: put b1, b2 back to their zero start. */
  for (int g = 0; g < model.n_blocks; g++) {
    const nn_layer_t *block = &model.layers[model.n_layers + g];
    memset(model.params + block->bias, 0, block->n_bias * sizeof(float));
  }

  /* Two steps before any block joins; then the inactive blocks are exactly as created. */
  float probs[B * CFG_CLASSES];
  float *blocks_before = malloc(model.n_params * sizeof *blocks_before);
  memcpy(blocks_before, model.params, model.n_params * sizeof *blocks_before);
  for (int step = 0; step < 2; step++) {
    loss_crossentropy_forward(probs, NULL, nn_forward(&model, inputs, B, 1), labels, B, CFG_CLASSES);
    nn_zero_grad(&model);
    loss_crossentropy_backward(nn_dlogits(&model), probs, labels, 1.0f, B, CFG_CLASSES);
    nn_backward(&model, inputs, B);
    /* Even with a gradient there (nothing should put one), an inactive block must not move:
     * neither the gradient nor weight decay may reach it. */
    for (int g = 0; g < model.n_blocks; g++) {
      const nn_layer_t *block = &model.layers[model.n_layers + g];
      for (size_t i = 0; i < block->n_weight; i++) model.grads[block->weight + i] = 1.0f;
      for (size_t i = 0; i < block->n_bias; i++) model.grads[block->bias + i] = 1.0f;
    }
    nn_optimizer_step(&model, 0.1f);
  }
  int untouched = 1, moved = 0;
  for (int g = 0; g < model.n_blocks; g++) {
    const nn_layer_t *block = &model.layers[model.n_layers + g];
    untouched &= memcmp(model.params + block->weight, blocks_before + block->weight, block->n_weight * sizeof(float)) == 0;
    untouched &= memcmp(model.params + block->bias, blocks_before + block->bias, block->n_bias * sizeof(float)) == 0;
    for (size_t i = 0; i < block->n_weight; i++) untouched &= model.optim_state[block->weight + i] == 0.0f;
    for (size_t i = 0; i < block->n_bias; i++) untouched &= model.optim_state[block->bias + i] == 0.0f;
    untouched &= block->t == 0;
  }
  for (size_t i = 0; i < model.n_layer_weights; i++) moved += model.params[i] != blocks_before[i];
  CHECK(untouched);
  CHECK(moved > 0);

  /* Epoch 2: nothing joins. Epoch 3: two blocks join, and the logits do not change by a bit. */
  float logits_before[B * CFG_CLASSES];
  memcpy(logits_before, nn_forward(&model, inputs, B, 1), sizeof logits_before);
  CHECK_INT(0, nn_model_grow(&model, 2));
  CHECK_INT(2, nn_model_grow(&model, 3));
  CHECK_INT(0, nn_model_grow(&model, 3)); /* again: nothing new */
  CHECK_INT(5, model.n_order);
  /* fc1, then its blocks in config order (grow1, deep), then relu0 and the output layer. */
  static const int order[] = {0, 3, 5, 1, 2};
  for (int i = 0; i < 5; i++) CHECK_INT(order[i], model.order[i]);
  CHECK_INT(base + block1 + block2, nn_model_active_params(&model));
  const float *logits_after = nn_forward(&model, inputs, B, 1);
  CHECK(memcmp(logits_before, logits_after, sizeof logits_before) == 0);
  printf("  blocks joined: logits before and after %s\n",
         memcmp(logits_before, logits_after, sizeof logits_before) == 0 ? "bit-identical" : "DIFFERENT");
  /* fc1's own output is still fc1's, not the blocks'. */
  CHECK(nn_layer_output(&model, 0) != nn_layer_output(&model, 5));

  /* One step: the joined blocks start from zero velocity and weight decay reaches them;
   * the one still waiting does not move. */
  float *before = malloc(model.n_params * sizeof *before);
  memcpy(before, model.params, model.n_params * sizeof *before);
  loss_crossentropy_forward(probs, NULL, nn_forward(&model, inputs, B, 1), labels, B, CFG_CLASSES);
  nn_zero_grad(&model);
  loss_crossentropy_backward(nn_dlogits(&model), probs, labels, 1.0f, B, CFG_CLASSES);
  nn_backward(&model, inputs, B);
  const nn_layer_t *joined = &model.layers[3], *waiting = &model.layers[4];
  CHECK(nn_layer_grad_norm(&model, 3) > 0.0);
  /* W2 = 0 the first time: the gradient of W1 is zero (nothing flows through W2 yet), the
   * gradient of W2 is not. SGD from zero velocity: W1 moves by weight decay alone. */
  const size_t w1 = joined->weight, w2 = joined->weight + 8 * 12;
  CHECK(model.grads[w1] == 0.0f);
  nn_optimizer_step(&model, 0.1f);
  CHECK_NEAR(before[w1] * (1.0 - 0.1 * 0.01), model.params[w1], 1e-7);
  int w2_moved = 0;
  for (size_t i = 0; i < 12 * 8; i++) w2_moved += model.params[w2 + i] != 0.0f;
  CHECK(w2_moved > 0);
  CHECK(memcmp(model.params + waiting->weight, before + waiting->weight, waiting->n_weight * sizeof(float)) == 0);
  CHECK_INT(1, joined->t);
  CHECK_INT(0, waiting->t);
  free(before);

  /* With W2 no longer zero, gradients through the blocks check against the reference. */
  for (int g = 0; g < model.n_blocks; g++) {
    const nn_layer_t *block = &model.layers[model.n_layers + g];
    fill_uniform(model.params + block->weight, (int)block->n_weight, -0.3f, 0.3f);
    fill_uniform(model.params + block->bias, (int)block->n_bias, -0.1f, 0.1f);
  }
  check_model("growing student, two blocks active, against the double reference", &model, inputs, labels, B, 1, -1,
              NULL, 24);
  CHECK_INT(1, nn_model_grow(&model, 6));
  check_model("growing student, all three blocks", &model, inputs, labels, B, 1, -1, NULL, 24);
  free(blocks_before);
  free(inputs);
  nn_model_free(&model);

  /* Adam: a block that joins late starts its own bias correction, so its first update is
   * lr · g / (|g| + eps) ≈ lr whatever the model's step count. */
  printf("growing student with adam\n");
  config = parse_config(GROWING_MLP("{\"type\": \"adam\", \"lr\": 0.01}"));
  CHECK_INT(0, nn_model_create(&model, &config, 4));
  if (!model.params) return;
  for (int step = 0; step < 50; step++) nn_optimizer_step(&model, 0.01f); /* zero grads: t advances */
  CHECK_INT(50, model.optimizer.t);
  CHECK_INT(2, nn_model_grow(&model, 4));
  nn_zero_grad(&model);
  const nn_layer_t *block = &model.layers[3];
  float *w = model.params + block->weight;
  float saved[4] = {w[0], w[1], w[2], w[3]};
  model.grads[block->weight + 0] = 0.5f;
  model.grads[block->weight + 1] = -2e-3f;
  model.grads[block->weight + 2] = 40.0f;
  nn_optimizer_step(&model, 0.01f);
  CHECK_NEAR(saved[0] - 0.01, w[0], 1e-6);
  CHECK_NEAR(saved[1] + 0.01, w[1], 1e-6);
  CHECK_NEAR(saved[2] - 0.01, w[2], 1e-6);
  CHECK(w[3] == saved[3]);
  CHECK_INT(1, block->t);
  nn_model_free(&model);
}

/* Inactive blocks stay out of the gradient norms. */
static void test_grad_norms(void) {
  printf("gradient norms\n");
  cfg_experiment_t config = parse_config(GROWING_MLP("{\"type\": \"sgd\"}"));
  nn_model_t model;
  CHECK_INT(0, nn_model_create(&model, &config, 2));
  if (!model.params) return;
  for (size_t i = 0; i < model.n_params; i++) model.grads[i] = 1.0f;
  CHECK_NEAR(sqrt(784.0 * 12 + 12), nn_layer_grad_norm(&model, 0), 1e-12);
  CHECK_NEAR(sqrt(2.0 * 8 * 12 + 8 + 12), nn_layer_grad_norm(&model, 3), 1e-12);
  CHECK(!nn_layer_active(&model.layers[3]) && nn_layer_active(&model.layers[0]));
  nn_model_grow(&model, 3);
  CHECK(nn_layer_active(&model.layers[3]) && !nn_layer_active(&model.layers[4]));
  nn_model_free(&model);
}

/* ---------------------------------------------------------------------------------------
 * optimisers */

static void test_sgd(void) {
  printf("sgd\n");
  /* Two weights (decayed) and a bias (not): lr 0.1, momentum 0.9, weight decay 0.01.
   *   w0: g = 0.1 + 0.01·1    = 0.11,  v = 0.9·0.5 + 0.11 = 0.56,  w = 1 − 0.056   = 0.944
   *   w1: g = 0.2 + 0.01·(−2) = 0.18,  v = 0 + 0.18       = 0.18,  w = −2 − 0.018  = −2.018
   *   b:  g = −0.3 (no decay),         v = 0.9·1 − 0.3    = 0.6,   b = 0.5 − 0.06  = 0.44
   * then again with the same gradients:
   *   w0: g = 0.1 + 0.00944 = 0.10944, v = 0.504 + 0.10944 = 0.61344, w = 0.944 − 0.061344 = 0.882656 */
  float params[3] = {1.0f, -2.0f, 0.5f}, grads[3] = {0.1f, 0.2f, -0.3f}, velocity[3] = {0.5f, 0.0f, 1.0f};
  optim_sgd_update(params, grads, velocity, 3, 2, 0.1f, 0.9f, 0.01f);
  CHECK_NEAR(0.944, params[0], 1e-6);
  CHECK_NEAR(-2.018, params[1], 1e-6);
  CHECK_NEAR(0.44, params[2], 1e-6);
  CHECK_NEAR(0.56, velocity[0], 1e-6);
  CHECK_NEAR(0.18, velocity[1], 1e-6);
  CHECK_NEAR(0.6, velocity[2], 1e-6);
  optim_sgd_update(params, grads, velocity, 3, 2, 0.1f, 0.9f, 0.01f);
  CHECK_NEAR(0.882656, params[0], 1e-6);
  CHECK_NEAR(0.61344, velocity[0], 1e-6);
}

static void test_adam(void) {
  printf("adam\n");
  /* lr 0.01, β1 0.9, β2 0.999, eps 1e-8, weight decay 0.1 on the two weights.
   * Step 1 (bias-corrected m̂ = g, v̂ = g², so each moves by lr·g/(|g| + eps)):
   *   w0: g = 0.1 + 0.1·1 = 0.2        -> 1 − 0.01·0.2/(0.2 + 1e-8)   = 0.9900000005
   *   w1: g = 0.2 + 0.1·(−2) = 0       -> m = v = 0, no move          = −2
   *   b:  g = −0.3 (no decay)          -> 0.5 + 0.01                  = 0.51
   *   m = (0.02, 0, −0.03), v = (4e-5, 0, 9e-5)
   * Step 2, same gradients:
   *   w0: g = 0.1 + 0.099 = 0.199, m = 0.018 + 0.0199 = 0.0379,
   *       v = 0.999·4e-5 + 0.001·0.039601 = 7.9561e-5,
   *       m̂ = 0.0379/0.19 = 0.1994737, v̂ = 7.9561e-5/0.001999 = 0.0398004,
   *       w = 0.99 − 0.01·0.1994737/(0.1995004 + 1e-8) = 0.980001339
   *   b:  m̂ = −0.3, v̂ = 0.09 -> 0.52 */
  float params[3] = {1.0f, -2.0f, 0.5f}, grads[3] = {0.1f, 0.2f, -0.3f};
  float m[3] = {0}, v[3] = {0};
  optim_adam_update(params, grads, m, v, 3, 2, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 1);
  CHECK_NEAR(0.99, params[0], 1e-6);
  CHECK_NEAR(-2.0, params[1], 1e-7);
  CHECK_NEAR(0.51, params[2], 1e-6);
  CHECK_NEAR(0.02, m[0], 1e-7);
  CHECK_NEAR(-0.03, m[2], 1e-7);
  CHECK_NEAR(4e-5, v[0], 1e-8); /* 1 − β2 in float is 0.00099999 */
  CHECK_NEAR(9e-5, v[2], 1e-8);
  optim_adam_update(params, grads, m, v, 3, 2, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 2);
  CHECK_NEAR(0.980001339, params[0], 1e-6);
  CHECK_NEAR(-2.0, params[1], 1e-7);
  CHECK_NEAR(0.52, params[2], 1e-6);
  CHECK_NEAR(0.0379, m[0], 1e-7);
  CHECK_NEAR(7.9561e-5, v[0], 1e-8);
}

/* nn_optimizer_step dispatches on the config's optimizer and keeps Adam's moments in the
 * optimizer slab (m, then v). */
/* The update split across a pool (nn.c's blocks of 4,096 floats, the decayed range's end
 * inside a block) gives the bits of one thread, for SGD with momentum and decay and for Adam. */
static void test_optimizer_threads(void) {
  for (int kind = 0; kind < 2; kind++) {
    cfg_experiment_t config = test_config(8);
    config.optimizer.kind = kind ? CFG_OPTIMIZER_ADAM : CFG_OPTIMIZER_SGD;
    config.optimizer.weight_decay = 0.01;
    config.optimizer.beta1 = 0.9, config.optimizer.beta2 = 0.999, config.optimizer.eps = 1e-8;
    nn_model_t one, two;
    char error[160];
    CHECK_INT(0, nn_model_create(&one, &config, 2));
    CHECK_INT(0, nn_model_create(&two, &config, 2));
    CHECK_INT(0, nn_model_set_threads(&two, 2, error, sizeof error));
    CHECK(one.n_params > 2 * 4096 && one.n_decayed % 4096 != 0);
    for (int step = 0; step < 3; step++) {
      fill_uniform(one.grads, one.n_params, -1, 1);
      memcpy(two.grads, one.grads, one.n_params * sizeof(float));
      nn_optimizer_step(&one, 0.05f);
      nn_optimizer_step(&two, 0.05f);
    }
    const int same = memcmp(one.params, two.params, one.n_params * sizeof(float)) == 0 &&
                     memcmp(one.optim_state, two.optim_state, one.n_optim_state * sizeof(float)) == 0;
    printf("  %s, %zu parameters, 3 steps on 2 threads: %s one thread's\n", kind ? "adam" : "sgd", one.n_params,
           same ? "bit-identical to" : "DIFFERENT from");
    CHECK(same);
    nn_model_free(&one);
    nn_model_free(&two);
  }
}

static void test_optimizer_step(void) {
  printf("nn_optimizer_step\n");
  cfg_experiment_t config = test_config(5);
  config.optimizer.kind = CFG_OPTIMIZER_ADAM;
  config.optimizer.beta1 = 0.9;
  config.optimizer.beta2 = 0.999;
  config.optimizer.eps = 1e-8;
  nn_model_t model;
  CHECK_INT(0, nn_model_create(&model, &config, 2));
  CHECK_INT(2 * model.n_params, model.n_optim_state);
  float w = model.params[0], b = model.params[model.n_decayed];
  model.grads[0] = 0.5f;
  model.grads[model.n_decayed] = -0.25f;
  nn_optimizer_step(&model, 0.001f);
  CHECK_NEAR(w - 0.001, model.params[0], 1e-7);
  CHECK_NEAR(b + 0.001, model.params[model.n_decayed], 1e-7);
  CHECK_NEAR(0.05, model.optim_state[0], 1e-7);                        /* m */
  CHECK_NEAR(0.00025, model.optim_state[model.n_params], 1e-8);        /* v */
  CHECK_INT(1, model.optimizer.t);
  nn_model_free(&model);
}


/* ---------------------------------------------------------------------------------------
 * the daemon's memory estimate counts the slabs nn_model_create allocates */

static void check_slabs(const char *what, const cfg_experiment_t *config, int batch) {
  for (int forward_only = 0; forward_only <= 1; forward_only++) {
    nn_model_t model;
    cfg_slabs_t slabs;
    int rc = forward_only ? nn_model_create_inference(&model, config, batch) : nn_model_create(&model, config, batch);
    CHECK_INT(0, rc);
    CHECK_INT(0, cfg_model_slabs(config, batch, forward_only, &slabs));
    if (rc) continue;
    printf("  %s, batch %d%s: %zu params, %zu activations, %zu workspace, %zu indices\n", what, batch,
           forward_only ? " (inference)" : "", model.n_params, model.n_activations, model.n_workspace, model.n_indices);
    CHECK_INT(model.n_params, slabs.n_params);
    CHECK_INT(model.n_optim_state, slabs.n_optim_state);
    CHECK_INT(model.n_activations, slabs.n_activations);
    CHECK_INT(model.n_workspace, slabs.n_workspace);
    CHECK_INT(model.n_indices, slabs.n_indices);
    nn_model_free(&model);
  }
}

static void test_memory_slabs(void) {
  printf("cfg_model_slabs agrees with nn_model_create\n");
  static const char *const configs[] = {
      "{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 32}, {\"type\": \"relu\"}, "
      "{\"type\": \"linear\", \"out\": 10}]}}",
      "{\"model\": {\"layers\": [{\"type\": \"flatten\"}, {\"type\": \"linear\", \"out\": 64}, {\"type\": \"relu\"}, "
      "{\"type\": \"dropout\", \"p\": 0.2}, {\"type\": \"linear\", \"out\": 10}]}, "
      "\"optimizer\": {\"type\": \"adam\", \"lr\": 0.001}}",
      "{\"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 8, \"kernel\": 3}, {\"type\": \"relu\"}, "
      "{\"type\": \"maxpool\", \"size\": 2, \"stride\": 2}, {\"type\": \"conv2d\", \"out\": 16, \"kernel\": 5, "
      "\"stride\": 2}, {\"type\": \"relu\"}, {\"type\": \"maxpool\", \"size\": 2, \"stride\": 1}, "
      "{\"type\": \"flatten\"}, {\"type\": \"dropout\", \"p\": 0.5}, {\"type\": \"linear\", \"out\": 10}]}}",
      "{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 16, \"name\": \"fc1\"}, {\"type\": \"relu\"}, "
      "{\"type\": \"linear\", \"out\": 10}]}, \"grow\": [{\"epoch\": 2, \"after\": \"fc1\", \"hidden\": 8}, "
      "{\"epoch\": 2, \"after\": \"relu0\"}], \"epochs\": 3}",
  };
  static const char *const names[] = {"mlp", "mlp with dropout, adam", "cnn", "growing mlp"};
  for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
    cfg_experiment_t config = parse_config(configs[i]);
    check_slabs(names[i], &config, 1);
    check_slabs(names[i], &config, 37);
  }
}

int main(void) {
  openblas_set_num_threads(1);
  rng_seed(&test_rng, 2024, 99, 0);
  test_linear();
  test_relu();
  /* The convolution and pool under every kernel set this CPU runs (kernels.h). */
  int sets = 0;
  for (int isa = 0; isa < KERNELS_COUNT; isa++) {
    if (kernels_use((kernels_isa_t)isa) != 0) {
      printf("kernel set %s: not run (this CPU lacks it)\n", kernels_isa_name((kernels_isa_t)isa));
      continue;
    }
    printf("kernel set %s\n", kernels_isa_name((kernels_isa_t)isa));
    test_conv2d();
    test_maxpool();
    sets++;
  }
  CHECK(sets >= 1);
  kernels_use(kernels_isa_best());
  test_thread_pool();
  test_lazy_zero_grad();
  test_transient_outputs();
  test_dropout();
  test_crossentropy();
  /* The models' linear layers on both of their paths (nn.h's nn_dense_t), whichever this
   * machine's rule picks: finite differences, repeatability and thread counts on each. */
  static const char *const dense_paths[] = {"openblas", "kernels"};
  for (int path = 0; path < 2; path++) {
    setenv(NN_DENSE_ENV, dense_paths[path], 1);
    CHECK_INT(path, (int)nn_dense_default());
    printf("linear layers on %s (%s=%s)\n", nn_dense_name(nn_dense_default()), NN_DENSE_ENV, dense_paths[path]);
    test_cnn_repeatable();
    test_cnn_threads();
    test_model();
    test_cnn();
    test_linear_on_image();
    test_injected_gradients();
  }
  setenv(NN_DENSE_ENV, "fast", 1);
  nn_dense_t dense;
  char error[96];
  CHECK_INT(-EINVAL, nn_dense_from_env(&dense, error, sizeof error));
  CHECK_STR("MAPSAGE_DENSE=fast: expected openblas or kernels", error);
  unsetenv(NN_DENSE_ENV);
  CHECK_INT(0, nn_dense_from_env(&dense, error, sizeof error));
  test_grow();
  test_grad_norms();
  test_sgd();
  test_adam();
  test_optimizer_step();
  test_optimizer_threads();
  test_memory_slabs();
  return check_summary();
}
