/* kernels.c — builds kernels_body.h once per instruction set and dispatches to one copy.
 *
 * Why these loops and not OpenBLAS: the first convolution of the teacher CNN (1 → 32
 * channels, 3×3) is a product with K = 9, where OpenBLAS 0.3.21 reaches 19–23 GFLOP/s
 * (packing dominates) and its output must then be reordered to NCHW: 5.6 ms of GEMM per
 * step of 128 plus the reordering, against ~1 ms for these loops, which write NCHW directly
 * (bench/README.md). Max-pool 2×2 is the only pool the teacher uses; the general K×K loop
 * spent 5.8% of a CNN step there.
 *
 * Dispatch: a table of function pointers, chosen on first use (MAPSAGE_KERNELS, else the
 * widest set the CPU has) or by kernels_use(). The choice is process-wide; nothing runs two
 * sets at once, and a set never changes what it computes between runs. */
#include "kernels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  void (*conv_few_taps_forward)(float *, const float *, size_t, const float *, const float *, int,
                                int, int, int);
  void (*conv_few_taps_backward)(float *, float *, const float *, const float *, size_t, int, int,
                                 int, int);
  void (*maxpool2_forward)(float *, int32_t *, const float *, size_t, int, int);
} kernels_table_t;

/* Portable: the compiler's baseline (SSE2 on x86-64), 4 floats a vector. */
#define KERNELS_WIDTH 4
#define KERNELS_SUFFIX portable
#include "kernels_body.h"
#undef KERNELS_WIDTH
#undef KERNELS_SUFFIX

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define KERNELS_WIDTH 8
#define KERNELS_SUFFIX avx2
#include "kernels_body.h"
#undef KERNELS_WIDTH
#undef KERNELS_SUFFIX
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#define KERNELS_WIDTH 16
#define KERNELS_SUFFIX avx512
#include "kernels_body.h"
#undef KERNELS_WIDTH
#undef KERNELS_SUFFIX
#pragma GCC pop_options
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

void kernels_conv_few_taps_forward(float *out, const float *col, size_t col_stride,
                                   const float *weight, const float *bias, int B, int OC, int CKK,
                                   int P) {
  kernels__table()->conv_few_taps_forward(out, col, col_stride, weight, bias, B, OC, CKK, P);
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
