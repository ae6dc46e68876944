/* blas_kernels.c — the OpenBLAS kernel check of blas_kernels.h: the decision (a pure
 * function, unit-tested in tests/test_blas_kernels.c), the CPU's features, the sgemm
 * self-check, and the re-execution that makes OpenBLAS load another set.
 *
 * Why re-execute: OpenBLAS's DYNAMIC_ARCH picks its kernels in the library's constructor,
 * which runs before main and reads OPENBLAS_CORETYPE then; nothing later can change the set
 * (0.3.21 has no API for it). Setting the variable and exec'ing /proc/self/exe with the same
 * argv costs one process start (a few ms) and only happens on a CPU OpenBLAS does not know.
 * Measured on the Intel machine (family 6 model 207): Prescott's SSE3 sgemm reached
 * 15–30 GFLOP/s on the training products, against OpenBLAS's AVX-512 kernels' several times
 * that on the same processor. */
#define _GNU_SOURCE /* program_invocation_short_name */
#include "blas_kernels.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cblas.h>

/* OpenBLAS 0.3.21's core names by the widest vectors their kernels use. */
static const char *const blas_avx512_cores[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
static const char *const blas_avx2_cores[] = {"Haswell", "Zen", "Excavator"};

static int blas__in(const char *core, const char *const *names, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcasecmp(core, names[i]) == 0) return 1;
  return 0;
}

int blas_kernels_core_level(const char *core) {
  if (!core) return 0;
  if (blas__in(core, blas_avx512_cores, sizeof blas_avx512_cores / sizeof *blas_avx512_cores)) return 2;
  if (blas__in(core, blas_avx2_cores, sizeof blas_avx2_cores / sizeof *blas_avx2_cores)) return 1;
  return 0;
}

const char *blas_kernels_best_core(const blas_cpu_t *cpu) {
  if (cpu->avx512 && cpu->avx512_bf16) return "Cooperlake";
  if (cpu->avx512) return "SkylakeX";
  if (cpu->avx2_fma) return cpu->amd ? "Zen" : "Haswell";
  return NULL;
}

static const char *blas__cpu_vectors(const blas_cpu_t *cpu) {
  return cpu->avx512 ? "AVX-512" : cpu->avx2_fma ? "AVX2+FMA" : "no AVX2";
}

void blas_kernels_decide(blas_decision_t *decision, const char *corename, const char *coretype,
                         const char *marker, const blas_cpu_t *cpu, int check_passed) {
  memset(decision, 0, sizeof *decision);
  decision->action = BLAS_KEEP;
  if (!corename) corename = "unknown";
  if (coretype && !coretype[0]) coretype = NULL;
  /* The marker names the set we tried and the one OpenBLAS had picked: "Zen/Prescott". */
  char tried[32] = "", original[32] = "";
  int rejected = 0;
  if (marker) {
    rejected = strncmp(marker, "rejected:", 9) == 0;
    const char *names = rejected ? marker + 9 : marker, *slash = strchr(names, '/');
    if (slash && (size_t)(slash - names) < sizeof tried) {
      memcpy(tried, names, (size_t)(slash - names));
      snprintf(original, sizeof original, "%s", slash + 1);
    }
  }

  if (!rejected && tried[0] && coretype && strcasecmp(tried, coretype) == 0) {
    snprintf(decision->chosen_by, sizeof decision->chosen_by, "mapsage");
    if (check_passed) {
      snprintf(decision->reason, sizeof decision->reason,
               "OpenBLAS picked %s (no AVX2 kernels) on a CPU with %s: set %s=%s, self-check passed",
               original, blas__cpu_vectors(cpu), BLAS_KERNELS_CORETYPE, tried);
    } else {
      decision->action = BLAS_RESTORE;
      snprintf(decision->reason, sizeof decision->reason,
               "the %s kernels failed their self-check: back to OpenBLAS's own pick", tried);
    }
    return;
  }
  if (coretype) {
    snprintf(decision->chosen_by, sizeof decision->chosen_by, "environment");
    snprintf(decision->reason, sizeof decision->reason, "%s=%s set by the environment (respected)",
             BLAS_KERNELS_CORETYPE, coretype);
    return;
  }
  snprintf(decision->chosen_by, sizeof decision->chosen_by, "openblas");
  if (rejected && tried[0]) {
    snprintf(decision->reason, sizeof decision->reason,
             "OpenBLAS's own pick: the %s kernels chosen for this CPU (%s) failed their self-check",
             tried, blas__cpu_vectors(cpu));
    return;
  }
  const char *best = blas_kernels_best_core(cpu);
  if (best && blas_kernels_core_level(corename) < 1) {
    decision->action = BLAS_REEXEC;
    snprintf(decision->core, sizeof decision->core, "%s", best);
    snprintf(decision->reason, sizeof decision->reason,
             "OpenBLAS picked %s (no AVX2 kernels) on a CPU with %s: trying %s", corename,
             blas__cpu_vectors(cpu), best);
    return;
  }
  snprintf(decision->reason, sizeof decision->reason, "OpenBLAS picked %s for this CPU (%s)%s",
           corename, blas__cpu_vectors(cpu),
           best ? "" : ": nothing wider to choose");
}

void blas_kernels_cpu(blas_cpu_t *cpu) {
  memset(cpu, 0, sizeof *cpu);
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  cpu->avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  cpu->avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  cpu->avx512_bf16 = cpu->avx512 && __builtin_cpu_supports("avx512bf16");
  cpu->amd = __builtin_cpu_is("amd");
#endif
}

static void blas__cblas_sgemm(int order, int trans_a, int trans_b, int M, int N, int K, float alpha,
                              const float *A, int lda, const float *B, int ldb, float beta,
                              float *C, int ldc) {
  cblas_sgemm((enum CBLAS_ORDER)order, (enum CBLAS_TRANSPOSE)trans_a, (enum CBLAS_TRANSPOSE)trans_b,
              M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Odd sizes that cross the kernels' register and cache blocks, both transposes of A and B. */
static const struct {
  int trans_a, trans_b, M, N, K;
  float alpha, beta;
} blas_check_shapes[] = {
    {0, 0, 67, 45, 71, 0.75f, 0.5f},
    {1, 0, 33, 130, 17, 1.0f, 0.0f},
    {0, 1, 129, 7, 260, -1.25f, 1.0f},
};

int blas_kernels_self_check(blas_sgemm_fn sgemm, char *error, size_t error_size) {
  if (!sgemm) sgemm = blas__cblas_sgemm;
  enum { MAX_ELEMENTS = 260 * 130 };
  float *a = malloc(MAX_ELEMENTS * sizeof *a), *b = malloc(MAX_ELEMENTS * sizeof *b);
  float *c = malloc(MAX_ELEMENTS * sizeof *c);
  int rc = 0;
  if (!a || !b || !c) {
    snprintf(error, error_size, "self-check: out of memory");
    rc = -ENOMEM;
    goto out;
  }
  uint32_t state = 12345;
  double worst = 0.0;
  for (size_t s = 0; s < sizeof blas_check_shapes / sizeof *blas_check_shapes; s++) {
    const int M = blas_check_shapes[s].M, N = blas_check_shapes[s].N, K = blas_check_shapes[s].K;
    const int ta = blas_check_shapes[s].trans_a, tb = blas_check_shapes[s].trans_b;
    const float alpha = blas_check_shapes[s].alpha, beta = blas_check_shapes[s].beta;
    for (int i = 0; i < M * K; i++) a[i] = (float)((state = state * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int i = 0; i < K * N; i++) b[i] = (float)((state = state * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int i = 0; i < M * N; i++) c[i] = (float)(i % 7) - 3.0f;
    /* Row-major: A is M×K (K×M when transposed), B is K×N (N×K). */
    const int lda = ta ? M : K, ldb = tb ? K : N;
    sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K,
          alpha, a, lda, b, ldb, beta, c, N);
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) {
        double sum = 0.0, magnitude = 0.0;
        for (int k = 0; k < K; k++) {
          double x = ta ? a[k * lda + i] : a[i * lda + k], y = tb ? b[j * ldb + k] : b[k * ldb + j];
          sum += x * y;
          magnitude += fabs(x * y);
        }
        const double c0 = (double)((i * N + j) % 7) - 3.0;
        const double expected = alpha * sum + beta * c0;
        const double scale = fabs(alpha) * magnitude + fabs(beta * c0) + 1e-30;
        const double relative = fabs(c[i * N + j] - expected) / scale;
        worst = fmax(worst, isnan(c[i * N + j]) ? INFINITY : relative);
      }
  }
  /* float products summed over ≤ 260 terms: a relative error of a few 1e-7 per term. */
  if (!(worst <= 1e-5)) {
    snprintf(error, error_size, "self-check: sgemm differs from the reference product (relative error %.3g)", worst);
    rc = -EIO;
  }
out:
  free(a);
  free(b);
  free(c);
  return rc;
}

void blas_kernels_start(char **argv, blas_report_t *report, FILE *log) {
  blas_cpu_t cpu;
  blas_kernels_cpu(&cpu);
  const char *corename = openblas_get_corename();
  memset(report, 0, sizeof *report);
  snprintf(report->core, sizeof report->core, "%s", corename ? corename : "unknown");
  const int check_passed =
      blas_kernels_self_check(NULL, report->self_check, sizeof report->self_check) == 0;
  if (check_passed) snprintf(report->self_check, sizeof report->self_check, "passed");
  blas_decision_t decision;
  blas_kernels_decide(&decision, report->core, getenv(BLAS_KERNELS_CORETYPE),
                      getenv(BLAS_KERNELS_MARKER), &cpu, check_passed);
  if (decision.action != BLAS_KEEP) {
    char marker[80];
    const char *previous = getenv(BLAS_KERNELS_MARKER);
    if (decision.action == BLAS_REEXEC) {
      snprintf(marker, sizeof marker, "%s/%s", decision.core, report->core);
      setenv(BLAS_KERNELS_CORETYPE, decision.core, 1);
    } else {
      snprintf(marker, sizeof marker, "rejected:%s", previous ? previous : "");
      unsetenv(BLAS_KERNELS_CORETYPE);
    }
    setenv(BLAS_KERNELS_MARKER, marker, 1);
    fprintf(log, "%s: BLAS kernels: %s; re-executing\n", program_invocation_short_name, decision.reason);
    fflush(log);
    execv("/proc/self/exe", argv);
    /* Still here: run on what is loaded, and say why. */
    const int exec_errno = errno;
    unsetenv(BLAS_KERNELS_MARKER);
    if (decision.action == BLAS_REEXEC) unsetenv(BLAS_KERNELS_CORETYPE);
    size_t used = strlen(decision.reason);
    snprintf(decision.reason + used, sizeof decision.reason - used, " (re-exec failed: %s)",
             strerror(exec_errno));
    snprintf(decision.chosen_by, sizeof decision.chosen_by, "openblas");
  }
  snprintf(report->chosen_by, sizeof report->chosen_by, "%s", decision.chosen_by);
  snprintf(report->reason, sizeof report->reason, "%s", decision.reason);
  fprintf(log, "%s: BLAS kernels %s (chosen by %s: %s); self-check %s\n", program_invocation_short_name, report->core,
          report->chosen_by, report->reason, report->self_check);
}

json_t *blas_kernels_json(const blas_report_t *report) {
  return json_pack("{s:s, s:s, s:s, s:s}", "core", report->core, "chosen_by", report->chosen_by,
                   "reason", report->reason, "self_check", report->self_check);
}
