/* test_kernels.c — checks worker/kernels.c on every instruction set this CPU runs (each
 * printed as it runs; the sets it lacks are named as not run): the few-taps convolution
 * weight gradient and the unpacked GEMM (both orientations of A, bias or none, rows and
 * columns that leave remainders) against a double-precision definition, the 2×2 max-pool
 * and its backward through a ReLU against the definition bit for bit (ties included), odd
 * the packed GEMM of the linear layers (its panels from rows or columns, padded with zeros;
 * blocks of K and of rows; accumulating; rows split as threads split them), odd
 * sizes that leave vector tails, batch 1, channel counts that are not a multiple of the
 * register block, column strides of a chunk, and the same bits from one call to the next.
 * MAPSAGE_KERNELS is checked too. The convolutions' finite-difference checks through nn.h,
 * and dropout's masks, run per set in test_nn. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels.h"
#include "rng.h"

static rng_t test_rng;

static void fill_uniform(float *x, size_t n, float low, float high) {
  for (size_t i = 0; i < n; i++) x[i] = low + (high - low) * rng_uniform(&test_rng);
}

typedef struct {
  int B, OC, CKK, P, extra_columns; /* col rows are B·P + extra_columns long (a chunk's view) */
  int with_bias;
} few_taps_case_t;

static void test_few_taps_case(const few_taps_case_t *k) {
  const size_t stride = (size_t)k->B * k->P + k->extra_columns;
  const size_t n_col = (size_t)k->CKK * stride, n_out = (size_t)k->B * k->OC * k->P;
  const size_t n_w = (size_t)k->OC * k->CKK;
  float *col = malloc(n_col * sizeof *col), *weight = malloc(n_w * sizeof *weight);
  float *bias = malloc(k->OC * sizeof *bias), *dout = malloc(n_out * sizeof *dout);
  float *dweight = malloc(n_w * sizeof *dweight), *dbias = malloc(k->OC * sizeof *dbias);
  float *dweight2 = malloc(n_w * sizeof *dweight2), *dbias2 = malloc(k->OC * sizeof *dbias2);
  fill_uniform(col, n_col, -1, 1);
  fill_uniform(weight, n_w, -1, 1);
  fill_uniform(bias, k->OC, -1, 1);
  fill_uniform(dout, n_out, -1, 1);

  printf("    few taps B=%d OC=%d CKK=%d P=%d%s: weight gradient", k->B, k->OC, k->CKK, k->P,
         k->with_bias ? "" : " (no bias)");
  /* The gradients accumulate onto what is there. */
  for (size_t i = 0; i < n_w; i++) dweight[i] = dweight2[i] = 0.25f;
  for (int o = 0; o < k->OC; o++) dbias[o] = dbias2[o] = -0.5f;
  kernels_conv_few_taps_backward(dweight, k->with_bias ? dbias : NULL, dout, col, stride, k->B,
                                 k->OC, k->CKK, k->P);
  double worst = 0.0;
  for (int o = 0; o < k->OC; o++) {
    double bias_sum = -0.5;
    for (int t = 0; t < k->CKK; t++) {
      double sum = 0.25;
      for (int e = 0; e < k->B; e++)
        for (int p = 0; p < k->P; p++)
          sum += (double)dout[((size_t)e * k->OC + o) * k->P + p] * col[t * stride + (size_t)e * k->P + p];
      worst = fmax(worst, fabs(sum - dweight[o * k->CKK + t]));
    }
    for (int e = 0; e < k->B; e++)
      for (int p = 0; p < k->P; p++) bias_sum += dout[((size_t)e * k->OC + o) * k->P + p];
    worst = fmax(worst, fabs((k->with_bias ? bias_sum : -0.5) - dbias[o]));
  }
  printf(" max |error| %.2e\n", worst);
  CHECK(worst < 1e-6 * k->B * k->P + 1e-6);
  kernels_conv_few_taps_backward(dweight2, k->with_bias ? dbias2 : NULL, dout, col, stride, k->B,
                                 k->OC, k->CKK, k->P);
  CHECK(memcmp(dweight, dweight2, n_w * sizeof *dweight) == 0);
  CHECK(memcmp(dbias, dbias2, k->OC * sizeof *dbias) == 0);
  free(col), free(weight), free(bias), free(dout);
  free(dweight), free(dbias), free(dweight2), free(dbias2);
}

static void test_few_taps(void) {
  static const few_taps_case_t cases[] = {
      {1, 1, 1, 1, 0, 1},     /* the smallest: scalar tails only */
      {2, 32, 9, 784, 5, 1},  /* the teacher's first layer (28×28), a chunk of a longer col */
      {1, 5, 9, 228, 0, 0},   /* batch 1, OC not a multiple of 4, P a vector tail, no bias */
      {3, 7, 13, 37, 11, 1},  /* taps not a multiple of 4 */
      {2, 33, 24, 17, 0, 1},  /* the largest few-taps convolution, P shorter than AVX-512's 16 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_few_taps_case(&cases[i]);
}

typedef struct {
  int M, N, K;
  int transposed;   /* A read as the transpose of a row-major K×M matrix (dcol = weightᵀ · dout) */
  int extra;        /* ldb = N + extra, ldc = N + extra (a view into wider rows) */
  int with_bias;
  int accumulate;   /* C += A·B (+ bias) onto C's values, as a convolution's weight gradient does */
} gemm_case_t;

static void test_gemm_case(const gemm_case_t *k) {
  const size_t ldb = (size_t)k->N + k->extra, ldc = ldb;
  const size_t a_row = k->transposed ? 1 : (size_t)k->K, a_col = k->transposed ? (size_t)k->M : 1;
  float *a = malloc((size_t)k->M * k->K * sizeof *a), *b = malloc((size_t)k->K * ldb * sizeof *b);
  float *bias = malloc(k->M * sizeof *bias), *c = malloc((size_t)k->M * ldc * sizeof *c);
  float *again = malloc((size_t)k->M * ldc * sizeof *again);
  fill_uniform(a, (size_t)k->M * k->K, -1, 1);
  fill_uniform(b, (size_t)k->K * ldb, -1, 1);
  fill_uniform(bias, k->M, -1, 1);
  /* Overwriting: every value of C[:, :N] written, none past it (NaN stays). Accumulating:
   * C starts at values of its own, which the sum must include. */
  float *start = malloc((size_t)k->M * ldc * sizeof *start);
  fill_uniform(start, (size_t)k->M * ldc, -1, 1);
  for (size_t i = 0; i < (size_t)k->M * ldc; i++) {
    const int past_n = (int)(i % ldc) >= k->N;
    c[i] = again[i] = k->accumulate && !past_n ? start[i] : NAN;
  }
  const float *with = k->with_bias ? bias : NULL;
  kernels_gemm_unpacked(c, ldc, a, a_row, a_col, b, ldb, with, k->accumulate, k->M, k->N, k->K);
  kernels_gemm_unpacked(again, ldc, a, a_row, a_col, b, ldb, with, k->accumulate, k->M, k->N, k->K);
  double worst = 0.0;
  int outside = 1;
  for (int i = 0; i < k->M; i++) {
    for (int j = 0; j < k->N; j++) {
      double sum = (with ? with[i] : 0.0) + (k->accumulate ? start[i * ldc + j] : 0.0);
      for (int t = 0; t < k->K; t++) sum += (double)a[i * a_row + t * a_col] * b[t * ldb + j];
      const float got = c[i * ldc + j];
      worst = fmax(worst, isnan(got) ? INFINITY : fabs(sum - got));
    }
    for (size_t j = (size_t)k->N; j < ldc; j++) outside &= isnan(c[i * ldc + j]); /* past N: untouched */
  }
  printf("    unpacked GEMM %dx%dx%d%s%s%s: max |error| %.2e\n", k->M, k->N, k->K,
         k->transposed ? ", A transposed" : "", with ? ", bias" : "",
         k->accumulate ? ", accumulating" : "", worst);
  CHECK(worst < 1e-6 * k->K + 1e-6);
  CHECK(outside);
  CHECK(memcmp(c, again, (size_t)k->M * ldc * sizeof *c) == 0);
  free(a), free(b), free(bias), free(c), free(again), free(start);
}

static void test_gemm(void) {
  static const gemm_case_t cases[] = {
      {1, 1, 1, 0, 0, 1, 0},      /* scalar only */
      {7, 5, 3, 0, 2, 0, 0},      /* N under a vector on AVX2: scalar columns; 6 + 1 rows */
      {64, 196, 288, 0, 0, 1, 0}, /* the teacher's second convolution, one example */
      {288, 196, 64, 1, 0, 0, 0}, /* its dcol = weightᵀ · dout */
      /* A second convolution on 13 × 13 without padding (P = 121), rows as far apart as its im2col's
       * (cfg_conv_col_stride: 144): more than a vector left after the panels of two (9 on
       * AVX2, 25 on AVX-512), done as one more panel of two ending at N */
      {64, 121, 288, 0, 23, 1, 0},
      {288, 121, 64, 1, 0, 0, 0},
      {13, 37, 9, 0, 13, 1, 0},   /* 6 + 6 + 1 rows, a vector tail that overlaps, wider rows */
      {5, 33, 17, 1, 3, 1, 0},    /* 3 + 1 + 1 rows */
      {6, 16, 2, 0, 0, 0, 0},     /* exactly one tile on AVX2 */
      {32, 784, 9, 0, 0, 1, 0},   /* the teacher's first convolution, one example */
      /* Accumulating: its weight gradient dweightᵀ (288, 64) += col (288, 196) · doutᵀ */
      {288, 64, 196, 0, 0, 0, 1},
      {13, 37, 9, 0, 13, 1, 1}, /* a partial last vector: scalar columns, not an overlap */
      {20, 121, 30, 0, 0, 1, 1}, /* more than a vector left: panels that do not overlap */
      {7, 5, 3, 1, 2, 0, 1},    /* N under a vector on AVX2 */
      {1, 1, 1, 0, 0, 0, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_gemm_case(&cases[i]);
}

typedef struct {
  int M, N, K;
  int b_columns;    /* B read from its columns: a row-major N×K source (a layer's weights as Wᵀ) */
  int a_transposed; /* A read as the transpose of a row-major K×M matrix (the weight gradient's doutᵀ) */
  int accumulate;
} packed_case_t;

/* The packed product against the definition: panels written in two ranges (as two threads
 * split them) with zeros past N, C's rows in two calls giving the bits of one, nothing past
 * N written, the same bits from one call to the next. */
static void test_packed_case(const packed_case_t *k) {
  const size_t ldc = (size_t)k->N + 3;
  const size_t a_row = k->a_transposed ? 1 : (size_t)k->K, a_col = k->a_transposed ? (size_t)k->M : 1;
  const size_t b_row = k->b_columns ? 1 : (size_t)k->N, b_col = k->b_columns ? (size_t)k->K : 1;
  const size_t n_panels = (size_t)(k->N + 31) / 32 * 32 * k->K; /* cfg_panel_floats */
  float *a = malloc((size_t)k->M * k->K * sizeof *a), *b = malloc((size_t)k->K * k->N * sizeof *b);
  float *panels = malloc((n_panels + 1) * sizeof *panels), *start = malloc((size_t)k->M * ldc * sizeof *start);
  float *c = malloc((size_t)k->M * ldc * sizeof *c), *again = malloc((size_t)k->M * ldc * sizeof *again);
  fill_uniform(a, (size_t)k->M * k->K, -1, 1);
  fill_uniform(b, (size_t)k->K * k->N, -1, 1);
  fill_uniform(start, (size_t)k->M * ldc, -1, 1);
  for (size_t i = 0; i <= n_panels; i++) panels[i] = NAN;
  const int count = kernels_gemm_panels(k->N), half = count / 2;
  kernels_gemm_pack(panels, b, b_row, b_col, k->K, k->N, half, count);
  kernels_gemm_pack(panels, b, b_row, b_col, k->K, k->N, 0, half);
  const int width = 2 * kernels_isa_width(kernels_current());
  int padded = 1;
  for (int p = 0; p < count; p++)
    for (int t = 0; t < k->K; t++)
      for (int j = 0; j < width; j++) {
        const float got = panels[((size_t)p * k->K + t) * width + j];
        const int n = p * width + j;
        padded &= n < k->N ? got == b[t * b_row + n * b_col] : got == 0.0f;
      }
  CHECK(padded);
  CHECK(isnan(panels[n_panels])); /* within cfg_panel_floats on every set */
  for (size_t i = 0; i < (size_t)k->M * ldc; i++) {
    const int past_n = (int)(i % ldc) >= k->N;
    c[i] = again[i] = k->accumulate && !past_n ? start[i] : NAN;
  }
  kernels_gemm_packed(c, ldc, a, a_row, a_col, panels, k->accumulate, k->M, k->N, k->K);
  const int split = k->M / 3;
  kernels_gemm_packed(again, ldc, a, a_row, a_col, panels, k->accumulate, split, k->N, k->K);
  kernels_gemm_packed(again + (size_t)split * ldc, ldc, a + (size_t)split * a_row, a_row, a_col, panels,
                      k->accumulate, k->M - split, k->N, k->K);
  double worst = 0.0;
  int outside = 1;
  for (int i = 0; i < k->M; i++) {
    for (int j = 0; j < k->N; j++) {
      double sum = k->accumulate ? start[i * ldc + j] : 0.0;
      for (int t = 0; t < k->K; t++) sum += (double)a[i * a_row + t * a_col] * b[t * b_row + j * b_col];
      const float got = c[i * ldc + j];
      worst = fmax(worst, isnan(got) ? INFINITY : fabs(sum - got));
    }
    for (size_t j = (size_t)k->N; j < ldc; j++) outside &= isnan(c[i * ldc + j]);
  }
  printf("    packed GEMM %dx%dx%d%s%s%s: max |error| %.2e\n", k->M, k->N, k->K,
         k->b_columns ? ", B from columns" : "", k->a_transposed ? ", A transposed" : "",
         k->accumulate ? ", accumulating" : "", worst);
  CHECK(worst < 1e-6 * k->K + 1e-6);
  CHECK(outside);
  CHECK(memcmp(c, again, (size_t)k->M * ldc * sizeof *c) == 0);
  free(a), free(b), free(panels), free(start), free(c), free(again);
}

static void test_packed(void) {
  static const packed_case_t cases[] = {
      {1, 1, 1, 0, 0, 0},
      {1, 1, 1, 1, 0, 1},
      {128, 10, 128, 1, 0, 0},  /* an output layer's forward: ten columns, one-vector tiles */
      {10, 128, 128, 0, 1, 1},  /* its weight gradient: doutᵀ · inp, ten rows */
      {7, 37, 300, 0, 0, 1},    /* two blocks of K; a last panel wider than a vector on AVX2 */
      {200, 50, 20, 1, 1, 0},   /* two blocks of rows, both operands read across */
      {13, 64, 17, 1, 0, 0},    /* K not a multiple of any vector: the transpose's scalar tail */
      {5, 33, 530, 1, 1, 1},
      {32, 200, 78, 1, 0, 1},   /* 78 = 64 + 14: whole transposes, then a tail */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_packed_case(&cases[i]);
}

/* The transpose bit for bit, on shapes with whole blocks, edges of either side, and one row. */
static void test_transpose(void) {
  static const int shapes[][2] = {{64, 196}, {17, 33}, {1, 5}, {40, 16}, {3, 70}};
  int same = 1;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const int rows = shapes[s][0], cols = shapes[s][1];
    float *src = malloc((size_t)rows * cols * sizeof *src), *dst = malloc((size_t)rows * cols * sizeof *dst);
    fill_uniform(src, (size_t)rows * cols, -1, 1);
    kernels_transpose(dst, src, rows, cols);
    for (int i = 0; i < rows; i++)
      for (int j = 0; j < cols; j++) same &= dst[(size_t)j * rows + i] == src[(size_t)i * cols + j];
    free(src), free(dst);
  }
  printf("    transpose: %s\n", same ? "every element in place" : "WRONG");
  CHECK(same);
}

/* The definition: the first strict maximum of the window in row-major order. */
static void maxpool2_reference(float *out, int32_t *argmax, const float *inp, size_t planes, int H,
                               int W) {
  const int OH = (H - 2) / 2 + 1, OW = (W - 2) / 2 + 1;
  for (size_t plane = 0; plane < planes; plane++)
    for (int oh = 0; oh < OH; oh++)
      for (int ow = 0; ow < OW; ow++) {
        int best = 2 * oh * W + 2 * ow;
        for (int i = 0; i < 2; i++)
          for (int j = 0; j < 2; j++) {
            int at = (2 * oh + i) * W + 2 * ow + j;
            if (inp[plane * H * W + at] > inp[plane * H * W + best]) best = at;
          }
        out[(plane * OH + oh) * OW + ow] = inp[plane * H * W + best];
        argmax[(plane * OH + oh) * OW + ow] = best;
      }
}

static void test_maxpool2(void) {
  static const int sizes[][2] = {{2, 2}, {3, 5}, {5, 9}, {14, 14}, {28, 28}, {7, 33}, {9, 40}, {4, 67}};
  int windows = 0, ties = 0;
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    const int H = sizes[s][0], W = sizes[s][1], OH = (H - 2) / 2 + 1, OW = (W - 2) / 2 + 1;
    const size_t planes = 3, n_in = planes * H * W, n_out = planes * OH * OW;
    float *inp = malloc(n_in * sizeof *inp), *out = malloc(n_out * sizeof *out);
    float *expected = malloc(n_out * sizeof *expected);
    int32_t *argmax = malloc(n_out * sizeof *argmax), *expected_argmax = malloc(n_out * sizeof *expected_argmax);
    /* Four levels: most windows hold a tie, which the first must win. */
    for (size_t i = 0; i < n_in; i++) inp[i] = (float)(int)(4.0f * rng_uniform(&test_rng)) - 1.5f;
    maxpool2_reference(expected, expected_argmax, inp, planes, H, W);
    kernels_maxpool2_forward(out, argmax, inp, planes, H, W);
    CHECK(memcmp(out, expected, n_out * sizeof *out) == 0);
    CHECK(memcmp(argmax, expected_argmax, n_out * sizeof *argmax) == 0);
    for (size_t i = 0; i < n_out; i++) { /* windows where another candidate equals the max */
      const size_t plane = i / ((size_t)OH * OW), oh = i / OW % OH, ow = i % OW;
      const float *window = inp + plane * H * W + 2 * oh * W + 2 * ow;
      const float candidates[4] = {window[0], window[1], window[W], window[W + 1]};
      int equal = 0;
      for (int c = 0; c < 4; c++) equal += candidates[c] == out[i];
      ties += equal > 1;
    }
    windows += (int)n_out;
    free(inp), free(out), free(expected), free(argmax), free(expected_argmax);
  }
  printf("    maxpool 2x2: %d windows (%d with a tie) equal to the definition\n", windows, ties);
  CHECK(windows > 0 && ties > 0);
}

/* The gradient through a 2×2 pool and a ReLU, bit for bit against its definition: dinp
 * zeroed, dout (+0 for a −0) added at each window's argmax where the pool's output is > 0.
 * The pool's outputs and argmaxes come from the reference pool on values of four levels
 * (ties, zeros and negatives: most windows are not passed, or tie); dinp starts as garbage,
 * which every element must overwrite (odd sizes leave rows and columns no window covers).
 * Accumulating, the same added onto a gradient already there. */
static void test_maxpool2_relu_backward(void) {
  static const int sizes[][2] = {{2, 2}, {3, 5}, {5, 9}, {11, 11}, {26, 26}, {28, 28}, {7, 33}, {4, 67}};
  int values = 0, passed = 0, same = 1, added = 1;
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    const int H = sizes[s][0], W = sizes[s][1], OH = (H - 2) / 2 + 1, OW = (W - 2) / 2 + 1;
    const size_t planes = 3, n_in = planes * H * W, n_out = planes * OH * OW;
    float *inp = malloc(n_in * sizeof *inp), *out = malloc(n_out * sizeof *out);
    float *dout = malloc(n_out * sizeof *dout), *dinp = malloc(n_in * sizeof *dinp);
    float *expected = calloc(n_in, sizeof *expected), *base = malloc(n_in * sizeof *base);
    float *expected_sum = malloc(n_in * sizeof *expected_sum);
    int32_t *argmax = malloc(n_out * sizeof *argmax);
    for (size_t i = 0; i < n_in; i++) inp[i] = (float)(int)(4.0f * rng_uniform(&test_rng)) - 1.5f;
    maxpool2_reference(out, argmax, inp, planes, H, W);
    for (size_t i = 0; i < n_out; i++) out[i] = out[i] > 0.0f ? out[i] : 0.0f; /* the ReLU after it */
    fill_uniform(dout, n_out, -1, 1);
    dout[0] = -0.0f;
    for (size_t i = 0; i < n_out; i++) {
      const size_t plane = i / ((size_t)OH * OW);
      if (out[i] > 0.0f) expected[plane * H * W + (size_t)argmax[i]] += dout[i];
      passed += out[i] > 0.0f;
    }
    for (size_t i = 0; i < n_in; i++) dinp[i] = 7.0f;
    kernels_maxpool2_relu_backward(dinp, dout, out, argmax, planes, H, W, 0);
    same &= memcmp(dinp, expected, n_in * sizeof *dinp) == 0;
    fill_uniform(base, n_in, -1, 1);
    for (size_t i = 0; i < n_in; i++) expected_sum[i] = base[i] + expected[i];
    kernels_maxpool2_relu_backward(base, dout, out, argmax, planes, H, W, 1);
    added &= memcmp(base, expected_sum, n_in * sizeof *base) == 0;
    values += (int)n_in;
    free(inp), free(out), free(dout), free(dinp), free(expected), free(argmax), free(base), free(expected_sum);
  }
  printf("    maxpool 2x2 + relu backward: %d values (%d pooled passed) bit-identical to the "
         "definition: %s; accumulating: %s\n", values, passed, same ? "yes" : "NO", added ? "yes" : "NO");
  CHECK(values > 0 && passed > 0);
  CHECK(same);
  CHECK(added);
}

/* ReLU bit for bit against `x > 0 ? x : 0` (−0 and NaN give +0), lengths with a vector tail;
 * the backward accumulating, and writing in place of its own input. */
static void test_relu(void) {
  static const size_t lengths[] = {1, 7, 64, 1001};
  int same = 1;
  size_t total = 0;
  for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
    const size_t n = lengths[l];
    float *inp = malloc(n * sizeof *inp), *out = malloc(n * sizeof *out), *dout = malloc(n * sizeof *dout);
    float *dinp = malloc(n * sizeof *dinp), *in_place = malloc(n * sizeof *in_place);
    fill_uniform(inp, n, -1, 1);
    fill_uniform(dout, n, -1, 1);
    inp[0] = -0.0f;
    if (n > 3) inp[3] = NAN;
    for (size_t i = 0; i < n; i++) dinp[i] = 0.5f;
    kernels_relu_forward(out, inp, n);
    kernels_relu_backward(dinp, dout, out, n, 1);
    memcpy(in_place, dout, n * sizeof *in_place);
    kernels_relu_backward(in_place, in_place, out, n, 0);
    for (size_t i = 0; i < n; i++) {
      const float relu = inp[i] > 0.0f ? inp[i] : 0.0f, kept = out[i] > 0.0f ? dout[i] : 0.0f;
      const float grad = 0.5f + kept;
      same &= memcmp(&out[i], &relu, sizeof relu) == 0 && memcmp(&dinp[i], &grad, sizeof grad) == 0 &&
              memcmp(&in_place[i], &kept, sizeof kept) == 0;
    }
    total += n;
    free(inp), free(out), free(dout), free(dinp), free(in_place);
  }
  printf("    relu: %zu values, forward and backward bit-identical to the definition: %s\n", total,
         same ? "yes" : "NO");
  CHECK(same);
}

/* MAPSAGE_KERNELS: a known set the CPU has is used; an unknown name or a set the CPU lacks
 * is an error naming the variable, and the best set is used instead. */
static void test_environment(void) {
  char error[160];
  setenv(KERNELS_ENV, "portable", 1);
  CHECK_INT(0, kernels_use_from_env(error, sizeof error));
  CHECK_INT(KERNELS_PORTABLE, kernels_current());
  setenv(KERNELS_ENV, "sse9", 1);
  CHECK_INT(-EINVAL, kernels_use_from_env(error, sizeof error));
  CHECK_CONTAINS(error, "MAPSAGE_KERNELS=sse9");
  CHECK_INT(kernels_isa_best(), kernels_current());
  for (int isa = 0; isa < KERNELS_COUNT; isa++) {
    if (kernels_isa_supported((kernels_isa_t)isa)) continue;
    setenv(KERNELS_ENV, kernels_isa_name((kernels_isa_t)isa), 1);
    CHECK_INT(-EINVAL, kernels_use_from_env(error, sizeof error));
    CHECK_CONTAINS(error, "does not support");
    CHECK_INT(-ENOTSUP, kernels_use((kernels_isa_t)isa));
  }
  unsetenv(KERNELS_ENV);
  CHECK_INT(0, kernels_use_from_env(error, sizeof error));
  CHECK_INT(kernels_isa_best(), kernels_current());
}

int main(void) {
  rng_seed(&test_rng, 2026, 14, 0);
  int ran = 0;
  for (int isa = 0; isa < KERNELS_COUNT; isa++) {
    const kernels_isa_t set = (kernels_isa_t)isa;
    if (!kernels_isa_supported(set)) {
      printf("kernels %s: not run (this CPU lacks it)\n", kernels_isa_name(set));
      continue;
    }
    printf("kernels %s (%d floats a vector)\n", kernels_isa_name(set), kernels_isa_width(set));
    CHECK_INT(0, kernels_use(set));
    CHECK_INT(set, kernels_current());
    test_gemm();
    test_packed();
    test_transpose();
    test_relu();
    test_few_taps();
    test_maxpool2();
    test_maxpool2_relu_backward();
    ran++;
  }
  /* The portable set runs everywhere; on x86-64 with AVX2 (any machine of the last decade)
   * so does the AVX2 one. */
  CHECK(ran >= 1);
  CHECK(kernels_isa_supported(KERNELS_PORTABLE));
  test_environment();
  return check_summary();
}
