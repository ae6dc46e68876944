/* blas_kernels.h — which OpenBLAS kernel set a worker runs, checked at its start.
 *
 * Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernels from the CPU when it loads; on a
 * processor it does not know (Intel family 6 model 207, say) it falls back to its generic
 * Prescott (SSE3) kernels, a quarter of the speed the CPU has. At start the worker asks which
 * set OpenBLAS chose; when that set is below the CPU's (no AVX2 kernels on an AVX2 CPU), it
 * sets OPENBLAS_CORETYPE to the best set the CPU supports and re-executes itself once
 * (OpenBLAS reads the variable in its constructor, before main), then verifies the new set
 * with a small sgemm against a reference product; a set that fails is dropped and the worker
 * re-executes once more without it. An OPENBLAS_CORETYPE the user or the environment set is
 * always respected (some kernels compute wrong results on some processors: that is why
 * environments set it). The choice and its reason go to the worker's `started` event
 * (GET /api/experiments/{id} → worker.blas) and to its log. */
#ifndef MAPSAGE_BLAS_KERNELS_H
#define MAPSAGE_BLAS_KERNELS_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

/* Set (with OPENBLAS_CORETYPE) on the re-executed worker: "<core>" while that set is being
 * tried, "rejected:<core>" after its self-check failed. */
#define BLAS_KERNELS_MARKER "MAPSAGE_BLAS_CORETYPE"
#define BLAS_KERNELS_CORETYPE "OPENBLAS_CORETYPE"

/* What the CPU runs (from __builtin_cpu_supports / the vendor). */
typedef struct {
  int avx2_fma;  /* AVX2 and FMA */
  int avx512;    /* AVX-512 F, BW, DQ, VL (what OpenBLAS's SkylakeX kernels use) */
  int avx512_bf16;
  int amd;       /* AuthenticAMD: its AVX2 set is OpenBLAS's "Zen" */
} blas_cpu_t;

typedef enum {
  BLAS_KEEP,    /* run with the kernels loaded */
  BLAS_REEXEC,  /* set OPENBLAS_CORETYPE = core (and the marker) and re-execute */
  BLAS_RESTORE, /* the set we chose failed its check: unset OPENBLAS_CORETYPE, re-execute */
} blas_action_t;

typedef struct {
  blas_action_t action;
  char core[32];       /* BLAS_REEXEC: the set to load */
  char chosen_by[16];  /* "openblas", "environment", "mapsage" */
  char reason[256];
} blas_decision_t;

/* The decision, a pure function of what OpenBLAS loaded (`corename`, from
 * openblas_get_corename()), the environment's OPENBLAS_CORETYPE and marker (NULL when
 * unset), the CPU, and whether the loaded set passed its self-check (`check_passed`; only
 * read when the loaded set is one we chose). */
void blas_kernels_decide(blas_decision_t *decision, const char *corename, const char *coretype,
                         const char *marker, const blas_cpu_t *cpu, int check_passed);

/* The best OpenBLAS 0.3.21 set for the CPU ("Cooperlake", "SkylakeX", "Zen", "Haswell"), or
 * NULL when the CPU has no AVX2 (OpenBLAS's own pick is then as good as ours). */
const char *blas_kernels_best_core(const blas_cpu_t *cpu);

/* Vector level of an OpenBLAS core name: 2 AVX-512, 1 AVX2, 0 anything older or unknown. */
int blas_kernels_core_level(const char *core);

/* This CPU. */
void blas_kernels_cpu(blas_cpu_t *cpu);

typedef void (*blas_sgemm_fn)(int order, int trans_a, int trans_b, int M, int N, int K,
                              float alpha, const float *A, int lda, const float *B, int ldb,
                              float beta, float *C, int ldc);
/* A few sgemms of odd shapes (both transposes, alpha and beta ≠ 1) against a double
 * reference: 0, or -EIO with the worst relative error in `error`. sgemm = NULL checks
 * cblas_sgemm itself (a test passes a broken one). */
int blas_kernels_self_check(blas_sgemm_fn sgemm, char *error, size_t error_size);

/* What was loaded and why: the worker's `started` event carries it as "blas". */
typedef struct {
  char core[32];        /* openblas_get_corename() */
  char chosen_by[16];   /* "openblas", "environment", "mapsage" */
  char reason[320];
  char self_check[160]; /* "passed", or what failed */
} blas_report_t;

/* At the worker's start, before it reads its config or uses OpenBLAS: decides, re-executes
 * argv (through /proc/self/exe) when the decision says so (it does not return then), and
 * otherwise fills `report` and logs it. A failed re-exec is reported and the loaded set kept. */
void blas_kernels_start(char **argv, blas_report_t *report, FILE *log);
/* {core, chosen_by, reason, self_check}. */
json_t *blas_kernels_json(const blas_report_t *report);

#endif
