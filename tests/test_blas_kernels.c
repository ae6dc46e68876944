/* test_blas_kernels.c — checks worker/blas_kernels.c: the decision on every kind of start
 * (OpenBLAS's generic fallback on AVX2 and AVX-512 CPUs, its own good pick, a user's
 * OPENBLAS_CORETYPE, our re-executed try passing or failing its self-check, the run after a
 * rejected try, a stale marker), the core names' vector levels, and the sgemm self-check
 * against this machine's OpenBLAS and against a broken product. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>

#include "blas_kernels.h"
#include "check.h"

static const blas_cpu_t cpu_avx512_intel = {.avx2_fma = 1, .avx512 = 1};
static const blas_cpu_t cpu_avx512_bf16 = {.avx2_fma = 1, .avx512 = 1, .avx512_bf16 = 1};
static const blas_cpu_t cpu_avx2_amd = {.avx2_fma = 1, .amd = 1};
static const blas_cpu_t cpu_avx2_intel = {.avx2_fma = 1};
static const blas_cpu_t cpu_sse = {0};

static void test_decisions(void) {
  blas_decision_t d;
  printf("decisions\n");
  /* The Intel machine: Prescott on an AVX-512 CPU without BF16 -> SkylakeX. */
  blas_kernels_decide(&d, "Prescott", NULL, NULL, &cpu_avx512_intel, 1);
  printf("  Prescott, AVX-512: %s\n", d.reason);
  CHECK_INT(BLAS_REEXEC, d.action);
  CHECK_STR("SkylakeX", d.core);
  CHECK_STR("openblas", d.chosen_by);
  CHECK_CONTAINS(d.reason, "Prescott");
  CHECK_CONTAINS(d.reason, "AVX-512");
  blas_kernels_decide(&d, "Prescott", NULL, NULL, &cpu_avx512_bf16, 1);
  CHECK_INT(BLAS_REEXEC, d.action);
  CHECK_STR("Cooperlake", d.core);
  blas_kernels_decide(&d, "Nehalem", NULL, NULL, &cpu_avx2_amd, 1);
  CHECK_INT(BLAS_REEXEC, d.action);
  CHECK_STR("Zen", d.core);
  blas_kernels_decide(&d, "Sandybridge", NULL, NULL, &cpu_avx2_intel, 1); /* AVX only */
  CHECK_INT(BLAS_REEXEC, d.action);
  CHECK_STR("Haswell", d.core);
  blas_kernels_decide(&d, NULL, NULL, NULL, &cpu_avx2_intel, 1); /* no name: unknown */
  CHECK_INT(BLAS_REEXEC, d.action);

  /* Nothing to do: a CPU without AVX2, or OpenBLAS's own pick already uses it. */
  blas_kernels_decide(&d, "Core2", NULL, NULL, &cpu_sse, 1);
  CHECK_INT(BLAS_KEEP, d.action);
  CHECK_STR("openblas", d.chosen_by);
  CHECK_CONTAINS(d.reason, "nothing wider");
  blas_kernels_decide(&d, "Zen", NULL, NULL, &cpu_avx2_amd, 1);
  printf("  Zen, AVX2: %s\n", d.reason);
  CHECK_INT(BLAS_KEEP, d.action);
  CHECK_STR("openblas", d.chosen_by);
  /* Not a generic fallback: AVX2 kernels on an AVX-512 CPU stay (only fallbacks are replaced). */
  blas_kernels_decide(&d, "Haswell", NULL, NULL, &cpu_avx512_intel, 1);
  CHECK_INT(BLAS_KEEP, d.action);
  blas_kernels_decide(&d, "Cooperlake", NULL, NULL, &cpu_avx512_bf16, 1);
  CHECK_INT(BLAS_KEEP, d.action);

  /* A user's OPENBLAS_CORETYPE is respected, even a slow one, even with a failed check. */
  blas_kernels_decide(&d, "Prescott", "Prescott", NULL, &cpu_avx512_intel, 0);
  printf("  OPENBLAS_CORETYPE=Prescott: %s\n", d.reason);
  CHECK_INT(BLAS_KEEP, d.action);
  CHECK_STR("environment", d.chosen_by);
  CHECK_CONTAINS(d.reason, "OPENBLAS_CORETYPE=Prescott");
  /* An empty variable is unset. */
  blas_kernels_decide(&d, "Prescott", "", NULL, &cpu_avx512_intel, 1);
  CHECK_INT(BLAS_REEXEC, d.action);
  /* A marker left by another run whose set is not the variable's: the environment's. */
  blas_kernels_decide(&d, "Haswell", "Haswell", "SkylakeX/Prescott", &cpu_avx512_intel, 1);
  CHECK_INT(BLAS_KEEP, d.action);
  CHECK_STR("environment", d.chosen_by);

  /* Re-executed with our choice: kept when its self-check passes... */
  blas_kernels_decide(&d, "SkylakeX", "SkylakeX", "SkylakeX/Prescott", &cpu_avx512_intel, 1);
  printf("  after the re-exec: %s\n", d.reason);
  CHECK_INT(BLAS_KEEP, d.action);
  CHECK_STR("mapsage", d.chosen_by);
  CHECK_CONTAINS(d.reason, "OpenBLAS picked Prescott");
  CHECK_CONTAINS(d.reason, "OPENBLAS_CORETYPE=SkylakeX");
  /* ...dropped when it fails... */
  blas_kernels_decide(&d, "SkylakeX", "SkylakeX", "SkylakeX/Prescott", &cpu_avx512_intel, 0);
  printf("  failed check: %s\n", d.reason);
  CHECK_INT(BLAS_RESTORE, d.action);
  CHECK_CONTAINS(d.reason, "self-check");
  /* ...and the run after that keeps OpenBLAS's pick instead of trying again (no loop). */
  blas_kernels_decide(&d, "Prescott", NULL, "rejected:SkylakeX/Prescott", &cpu_avx512_intel, 1);
  printf("  after the rejection: %s\n", d.reason);
  CHECK_INT(BLAS_KEEP, d.action);
  CHECK_STR("openblas", d.chosen_by);
  CHECK_CONTAINS(d.reason, "SkylakeX kernels chosen for this CPU");
}

static void test_levels(void) {
  CHECK_INT(2, blas_kernels_core_level("SkylakeX"));
  CHECK_INT(2, blas_kernels_core_level("cooperlake")); /* OpenBLAS compares without case */
  CHECK_INT(1, blas_kernels_core_level("Zen"));
  CHECK_INT(1, blas_kernels_core_level("Haswell"));
  CHECK_INT(0, blas_kernels_core_level("Prescott"));
  CHECK_INT(0, blas_kernels_core_level("Sandybridge"));
  CHECK_INT(0, blas_kernels_core_level("Unknown"));
  CHECK_INT(0, blas_kernels_core_level(NULL));
  CHECK(blas_kernels_best_core(&cpu_sse) == NULL);
}

/* cblas_sgemm with one element of C spoiled: what a wrong kernel looks like. */
static void broken_sgemm(int order, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                         int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  cblas_sgemm((enum CBLAS_ORDER)order, (enum CBLAS_TRANSPOSE)trans_a, (enum CBLAS_TRANSPOSE)trans_b, M, N, K,
              alpha, A, lda, B, ldb, beta, C, ldc);
  C[(M / 2) * ldc + N / 2] += 0.01f;
}

/* Transposes ignored: right on square-free shapes only by accident. */
static void transpose_blind_sgemm(int order, int trans_a, int trans_b, int M, int N, int K, float alpha,
                                  const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  (void)trans_a, (void)trans_b, (void)lda, (void)ldb;
  cblas_sgemm((enum CBLAS_ORDER)order, CblasNoTrans, CblasNoTrans, M, N, K, alpha, A, K, B, N, beta, C, ldc);
}

static void test_self_check(void) {
  char error[160] = "";
  printf("self-check\n");
  int rc = blas_kernels_self_check(NULL, error, sizeof error);
  printf("  this machine's OpenBLAS (%s): %s\n", openblas_get_corename(), rc == 0 ? "passed" : error);
  CHECK_INT(0, rc);
  CHECK_INT(-EIO, blas_kernels_self_check(broken_sgemm, error, sizeof error));
  printf("  a spoiled element: %s\n", error);
  CHECK_CONTAINS(error, "relative error");
  CHECK_INT(-EIO, blas_kernels_self_check(transpose_blind_sgemm, error, sizeof error));
}

int main(void) {
  openblas_set_num_threads(1);
  test_decisions();
  test_levels();
  test_self_check();
  return check_summary();
}
