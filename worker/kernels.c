/* kernels.c — builds kernels_body.h once per instruction set and dispatches to one copy.
 *
 * Why these loops and not OpenBLAS: a convolution's products per example are small (the
 * teacher's: 64 × 196 × 288), their B operand (the example's im2col) is already in cache,
 * and the output must be NCHW; OpenBLAS packs both operands, zeroes C, and computes the
 * channel-major product that then needs reordering. The first convolution's weight gradient
 * has N = 9, where OpenBLAS 0.3.21 reached 19–23 GFLOP/s. Max-pool 2×2 is the only pool the
 * teacher uses; the general K×K loop spent 5.8–9% of a CNN step there. conv2d.c and
 * bench/README.md have the measurements.
 *
 * Dispatch: a table of function pointers, chosen on first use (MAPSAGE_KERNELS, else the
 * widest set the CPU has) or by kernels_use(). The choice is process-wide; nothing runs two
 * sets at once, and a set never changes what it computes between runs. */
#include "kernels.h"

/* GCC turns a loop of vector copies or of zero stores whose count it does not know into a
 * call to memmove or memset: for im2col's rows of 14 floats that call was most of the cost
 * (28 µs an example where the copies themselves take a few). These loops are short by
 * design, so none of them becomes a call. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns", "vect-cost-model=very-cheap")
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  void (*conv_few_taps_backward)(float *, float *, const float *, const float *, size_t, int, int,
                                 int, int);
  void (*maxpool2_forward)(float *, int32_t *, const float *, size_t, int, int);
  void (*gemm_unpacked)(float *, size_t, const float *, size_t, size_t, const float *, size_t,
                        const float *, int, int, int, int);
  void (*gemm_pack)(float *, const float *, size_t, size_t, int, int, int, int);
  void (*transpose_matrix)(float *, const float *, int, int);
  void (*gemm_packed)(float *, size_t, const float *, size_t, size_t, const float *, int, int, int,
                      int);
  void (*relu_forward)(float *, const float *, size_t);
  void (*relu_backward)(float *, const float *, const float *, size_t, int);
  void (*im2col)(float *, size_t, const float *, int, int, int, int, int, int, int, int);
  void (*col2im)(float *, float *, size_t, int, int, int, int, int, int, int, int);
  void (*dropout_forward)(float *, float *, const float *, size_t, uint64_t, uint64_t, float);
  void (*maxpool2_relu_backward)(float *, const float *, const float *, const int32_t *, size_t,
                                 int, int, int);
  void (*winograd_input)(float *, size_t, float *, size_t, const float *, int, int, int, int, int,
                         int);
  void (*winograd_output)(float *, float *, const float *, size_t, const float *, int, int, int,
                          int, int);
} kernels_table_t;

/* The output columns ow whose input column ow·stride − pad + kj lies inside [0, W): [lo, hi).
 * Shared by every set's im2col and col2im. */
static inline void kernels__valid_range(int *lo, int *hi, int kj, int W, int OW, int stride,
                                        int pad) {
  int first = pad - kj > 0 ? (pad - kj + stride - 1) / stride : 0;
  int last = W - 1 + pad - kj; /* the largest ow·stride allowed */
  int end = last < 0 ? 0 : last / stride + 1;
  if (end > OW) end = OW;
  if (first > end) first = end;
  *lo = first;
  *hi = end;
}

/* Portable: the compiler's baseline (SSE2 on x86-64), 4 floats a vector. */
#define KERNELS_WIDTH 4
#define KERNELS_SUFFIX portable
#include "kernels_body.h"
#undef KERNELS_WIDTH
#undef KERNELS_SUFFIX

#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define KERNELS_WIDTH 8
#define KERNELS_SUFFIX avx2
#include "kernels_body.h"
#undef KERNELS_WIDTH
#undef KERNELS_SUFFIX
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#endif
#define KERNELS_WIDTH 16
#define KERNELS_SUFFIX avx512
#include "kernels_body.h"
#undef KERNELS_WIDTH
#undef KERNELS_SUFFIX
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

static const kernels_table_t *const kernels_tables[KERNELS_COUNT] = {
    [KERNELS_PORTABLE] = &kernels_table_portable,
#if defined(__x86_64__) || defined(__i386__)
    [KERNELS_AVX2] = &kernels_table_avx2,
    [KERNELS_AVX512] = &kernels_table_avx512,
#endif
};

static const char *const kernels_names[KERNELS_COUNT] = {"portable", "avx2", "avx512"};

static const kernels_table_t *kernels_table; /* NULL until chosen */
static kernels_isa_t kernels_isa;

const char *kernels_isa_name(kernels_isa_t isa) {
  return isa >= 0 && isa < KERNELS_COUNT ? kernels_names[isa] : "unknown";
}

int kernels_isa_width(kernels_isa_t isa) {
  static const int widths[KERNELS_COUNT] = {4, 8, 16};
  return isa >= 0 && isa < KERNELS_COUNT ? widths[isa] : 0;
}

int kernels_isa_supported(kernels_isa_t isa) {
  if (isa < 0 || isa >= KERNELS_COUNT || !kernels_tables[isa]) return 0;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (isa) {
  case KERNELS_AVX2:
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  case KERNELS_AVX512:
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  default:
    return 1;
  }
#else
  return isa == KERNELS_PORTABLE;
#endif
}

kernels_isa_t kernels_isa_best(void) {
  for (int isa = KERNELS_COUNT - 1; isa > KERNELS_PORTABLE; isa--)
    if (kernels_isa_supported((kernels_isa_t)isa)) return (kernels_isa_t)isa;
  return KERNELS_PORTABLE;
}

int kernels_use(kernels_isa_t isa) {
  if (!kernels_isa_supported(isa)) return -ENOTSUP;
  kernels_isa = isa;
  kernels_table = kernels_tables[isa];
  return 0;
}

int kernels_use_from_env(char *error, size_t error_size) {
  const char *forced = getenv(KERNELS_ENV);
  if (error_size) error[0] = '\0';
  kernels_use(kernels_isa_best());
  if (!forced || !forced[0]) return 0;
  for (int isa = 0; isa < KERNELS_COUNT; isa++) {
    if (strcmp(forced, kernels_names[isa]) != 0) continue;
    if (kernels_use((kernels_isa_t)isa) == 0) return 0;
    snprintf(error, error_size, "%s=%s: this CPU does not support it (best: %s)", KERNELS_ENV,
             forced, kernels_isa_name(kernels_isa_best()));
    return -EINVAL;
  }
  snprintf(error, error_size, "%s=%s: unknown kernel set (portable, avx2 or avx512)", KERNELS_ENV,
           forced);
  return -EINVAL;
}

static const kernels_table_t *kernels__table(void) {
  if (!kernels_table) {
    char error[160];
    if (kernels_use_from_env(error, sizeof error) != 0) fprintf(stderr, "kernels: %s\n", error);
  }
  return kernels_table;
}

kernels_isa_t kernels_current(void) {
  kernels__table();
  return kernels_isa;
}

void kernels_conv_few_taps_backward(float *dweight, float *dbias, const float *dout,
                                    const float *col, size_t col_stride, int B, int OC, int CKK,
                                    int P) {
  kernels__table()->conv_few_taps_backward(dweight, dbias, dout, col, col_stride, B, OC, CKK, P);
}

void kernels_maxpool2_forward(float *out, int32_t *argmax, const float *inp, size_t planes, int H,
                              int W) {
  kernels__table()->maxpool2_forward(out, argmax, inp, planes, H, W);
}

void kernels_maxpool2_relu_backward(float *dinp, const float *dout, const float *out,
                                    const int32_t *argmax, size_t planes, int H, int W,
                                    int accumulate) {
  kernels__table()->maxpool2_relu_backward(dinp, dout, out, argmax, planes, H, W, accumulate);
}

void kernels_winograd_input(float *V, size_t ld, float *work, size_t pitch, const float *inp, int C,
                            int H, int W, int pad, int TH, int TW) {
  kernels__table()->winograd_input(V, ld, work, pitch, inp, C, H, W, pad, TH, TW);
}

void kernels_winograd_output(float *out, float *work, const float *M, size_t ld, const float *bias,
                             int OC, int OH, int OW, int TH, int TW) {
  kernels__table()->winograd_output(out, work, M, ld, bias, OC, OH, OW, TH, TW);
}

void kernels_gemm_unpacked(float *C, size_t ldc, const float *A, size_t a_row, size_t a_col,
                           const float *B, size_t ldb, const float *bias, int accumulate, int M,
                           int N, int K) {
  kernels__table()->gemm_unpacked(C, ldc, A, a_row, a_col, B, ldb, bias, accumulate, M, N, K);
}

int kernels_gemm_panels(int N) {
  const int width = 2 * kernels_isa_width(kernels_current());
  return (N + width - 1) / width;
}

void kernels_gemm_pack(float *panels, const float *B, size_t b_row, size_t b_col, int K, int N,
                       int first, int end) {
  kernels__table()->gemm_pack(panels, B, b_row, b_col, K, N, first, end);
}

void kernels_transpose(float *dst, const float *src, int rows, int cols) {
  kernels__table()->transpose_matrix(dst, src, rows, cols);
}

void kernels_gemm_packed(float *C, size_t ldc, const float *A, size_t a_row, size_t a_col,
                         const float *panels, int accumulate, int M, int N, int K) {
  kernels__table()->gemm_packed(C, ldc, A, a_row, a_col, panels, accumulate, M, N, K);
}

void kernels_relu_forward(float *out, const float *inp, size_t n) {
  kernels__table()->relu_forward(out, inp, n);
}

void kernels_relu_backward(float *dinp, const float *dout, const float *out, size_t n,
                           int accumulate) {
  kernels__table()->relu_backward(dinp, dout, out, n, accumulate);
}

void kernels_im2col(float *col, size_t ld, const float *inp, int C, int H, int W, int K, int stride,
                    int pad, int OH, int OW) {
  kernels__table()->im2col(col, ld, inp, C, H, W, K, stride, pad, OH, OW);
}

void kernels_col2im(float *dinp, float *col, size_t ld, int C, int H, int W, int K, int stride,
                    int pad, int OH, int OW) {
  kernels__table()->col2im(dinp, col, ld, C, H, W, K, stride, pad, OH, OW);
}

void kernels_dropout_forward(float *out, float *mask, const float *inp, size_t n, uint64_t key,
                             uint64_t threshold, float scale) {
  kernels__table()->dropout_forward(out, mask, inp, n, key, threshold, scale);
}
