/* bench_train.c — how fast the training core trains, and how close that is to the machine.
 *
 * Runs one workload through the public API of worker/nn.h and worker/distill.h exactly as a
 * worker drives it (never through train.c), times it as the median of several repetitions,
 * and between those repetitions times the same step's matrix products alone, one
 * cblas_sgemm call per product with the transposes nn.c uses: their sum is the GEMM-bound
 * limit of the step (FLOPs ÷ the rate OpenBLAS reaches on these very shapes, same process,
 * same thread count), what a step made of OpenBLAS products would reach: above 100% where
 * our own kernels run the products (the convolutions; the linear layers' too where
 * nn_dense_default picks kernels.h's, as `bench_train blas` says under "dense"). Prints one
 * JSON object on stdout. A benchmark, never a test.
 *
 * kd-epoch-cache is the same epoch with the worker's teacher cache (worker/teacher.h): the
 * teacher is written to a checkpoint and loaded with teacher_load, the training split cached
 * once with teacher_cache_split (its cost is printed), and every batch asks teacher_outputs.
 *
 * It starts as the worker does (blas_kernels.h: the same OpenBLAS kernel set, re-executing
 * itself when OpenBLAS fell back to generic kernels; kernels.h's set) and prints both, with
 * the FMA peak of one core at that vector width (measured: independent FMA chains).
 *
 *   bench_train mlp|kd|cnn|cnn-teacher|kd-epoch|kd-epoch-cache [--seconds S] [--reps N] [--examples N]
 *               [--threads N] [--serve]
 *   bench_train blas      the kernel sets only, as JSON */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "blas_kernels.h"
#include "checkpoint.h"
#include "config.h"
#include "conv2d.h"
#include "data.h"
#include "distill.h"
#include "kernels.h"
#include "nn.h"
#include "teacher.h"
#include "util.h"

#define BENCH_BATCH 128
#define BENCH_POOL 4096      /* distinct examples the step workloads cycle through */
#define BENCH_MAX_GEMMS 32
#define BENCH_MAX_REPS 64
#define BENCH_LR 0.01f
#define BENCH_MOMENTUM 0.9f
#define BENCH_T 4.0f         /* KD temperature */

static const char bench_student_json[] =
    "{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 256}, {\"type\": \"relu\"},"
    " {\"type\": \"linear\", \"out\": 128}, {\"type\": \"relu\", \"name\": \"hidden\"},"
    " {\"type\": \"linear\", \"out\": 10}]},"
    " \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01, \"momentum\": 0.9}, \"epochs\": 1,"
    " \"dataset\": {\"name\": \"synthetic\"}}";
static const char bench_teacher_json[] =
    "{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 1200}, {\"type\": \"relu\"},"
    " {\"type\": \"linear\", \"out\": 1200}, {\"type\": \"relu\", \"name\": \"hidden\"},"
    " {\"type\": \"linear\", \"out\": 10}]}, \"epochs\": 1, \"seed\": 2,"
    " \"dataset\": {\"name\": \"synthetic\"}}";
static const char bench_cnn_json[] =
    "{\"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 32, \"kernel\": 3, \"padding\": 1},"
    " {\"type\": \"relu\"}, {\"type\": \"maxpool\", \"size\": 2},"
    " {\"type\": \"conv2d\", \"out\": 64, \"kernel\": 3, \"padding\": 1}, {\"type\": \"relu\"},"
    " {\"type\": \"maxpool\", \"size\": 2}, {\"type\": \"flatten\"},"
    " {\"type\": \"linear\", \"out\": 128}, {\"type\": \"relu\"}, {\"type\": \"linear\", \"out\": 10}]},"
    " \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01, \"momentum\": 0.9}, \"epochs\": 1,"
    " \"dataset\": {\"name\": \"synthetic\"}}";

/* CPU time of the process: on a shared machine, time spent descheduled does not count (a
 * steadier figure than wall time for comparing two builds; the table reports wall time). */
static double bench_cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t bench_rng = 0x9e3779b97f4a7c15ULL;
static float bench_uniform(void) { /* xorshift64*: data only needs to look like data */
  bench_rng ^= bench_rng >> 12;
  bench_rng ^= bench_rng << 25;
  bench_rng ^= bench_rng >> 27;
  return (float)((bench_rng * 0x2545f4914f6cdd1dULL) >> 40) / 16777216.0f;
}

static int bench_compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double bench_median(const double *values, int n) {
  double sorted[BENCH_MAX_REPS];
  memcpy(sorted, values, (size_t)n * sizeof *values);
  qsort(sorted, (size_t)n, sizeof *sorted, bench_compare_double);
  return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

static void bench_die(const char *what) {
  fprintf(stderr, "bench_train: %s\n", what);
  exit(1);
}

static void bench_parse_config(const char *text, cfg_experiment_t *config) {
  cfg_errors_t errors;
  if (cfg_parse(text, strlen(text), config, &errors) != 0) {
    fprintf(stderr, "bench_train: config: %s: %s\n", errors.items[0].path, errors.items[0].message);
    exit(1);
  }
}

/* Bytes a model holds in its slabs: what a worker needs per model. */
static size_t bench_model_bytes(const nn_model_t *m) {
  size_t floats = m->n_params * (m->grads ? 2 : 1) + m->n_optim_state +
                  m->n_activations * (m->forward_only ? 1 : 2) + m->n_workspace;
  return floats * sizeof(float) + m->n_indices * sizeof(int32_t);
}

// ---------------------------------------------------------------------------------------
// The GEMM-bound limit: every product of a step, as nn.c / distill.c call cblas_sgemm.

typedef struct {
  const char *what;
  int trans_a, trans_b; /* CblasTrans or not, row-major as in nn.c */
  int M, N, K;
  float beta;
  float *a, *b, *c;
  double seconds[BENCH_MAX_REPS];
} bench_gemm_t;

typedef struct {
  bench_gemm_t gemms[BENCH_MAX_GEMMS];
  int n;
} bench_gemms_t;

static void bench_gemm_add(bench_gemms_t *list, const char *what, int ta, int tb, int M, int N, int K,
                           float beta) {
  if (list->n == BENCH_MAX_GEMMS) bench_die("too many GEMMs");
  bench_gemm_t *g = &list->gemms[list->n++];
  memset(g, 0, sizeof *g);
  g->what = what;
  g->trans_a = ta;
  g->trans_b = tb;
  g->M = M;
  g->N = N;
  g->K = K;
  g->beta = beta;
  g->a = malloc((size_t)M * K * sizeof(float));
  g->b = malloc((size_t)K * N * sizeof(float));
  g->c = malloc((size_t)M * N * sizeof(float));
  if (!g->a || !g->b || !g->c) bench_die("out of memory for the GEMM buffers");
  for (size_t i = 0; i < (size_t)M * K; i++) g->a[i] = bench_uniform() - 0.5f;
  for (size_t i = 0; i < (size_t)K * N; i++) g->b[i] = bench_uniform() - 0.5f;
  memset(g->c, 0, (size_t)M * N * sizeof(float));
}

/* The products of linear_forward / linear_backward for one layer (in → out). */
static void bench_gemm_linear(bench_gemms_t *list, int B, int in, int out, int with_dinp, int backward) {
  bench_gemm_add(list, "linear fwd", 0, 1, B, out, in, 1.0f);
  if (!backward) return;
  if (with_dinp) bench_gemm_add(list, "linear dinp", 0, 0, B, in, out, 1.0f);
  bench_gemm_add(list, "linear dweight", 1, 0, out, in, B, 1.0f);
}

/* The products of conv2d_forward / conv2d_backward, whole-batch: OH × OW the output plane. */
static void bench_gemm_conv(bench_gemms_t *list, int B, int C, int OH, int OW, int OC, int K, int with_dinp,
                            int backward) {
  const int CKK = C * K * K, N = B * OH * OW;
  bench_gemm_add(list, "conv fwd", 0, 0, OC, N, CKK, 0.0f);
  if (!backward) return;
  bench_gemm_add(list, "conv dweight", 0, 1, OC, CKK, N, 1.0f);
  if (with_dinp) bench_gemm_add(list, "conv dcol", 1, 0, CKK, N, OC, 0.0f);
}

/* The limit's products for a model, read off its layers (so that they are the shapes the
 * model runs): each linear layer's and each convolution's, the input gradient's only where
 * the layer passes one back. A convolution of few taps (conv2d.h) is no GEMM: its FLOPs,
 * forward and weight gradient, go to *other_flops. */
static void bench_gemms_model(bench_gemms_t *list, const nn_model_t *model, int B, int backward,
                              double *other_flops) {
  for (int i = 0; i < model->n_order; i++) {
    const nn_layer_t *layer = &model->layers[model->order[i]];
    const cfg_shape_t *out = &layer->shape;
    if (layer->kind == CFG_LAYER_LINEAR) {
      bench_gemm_linear(list, B, layer->in, layer->out, layer->backprop_input, backward);
    } else if (layer->kind == CFG_LAYER_CONV2D) {
      const int C = layer->in_shape.channels, CKK = C * layer->kernel * layer->kernel;
      if (CKK <= CONV2D_FEW_TAPS)
        *other_flops += (backward ? 2 : 1) * 2.0 * out->channels * B * out->height * out->width * CKK;
      else
        bench_gemm_conv(list, B, C, out->height, out->width, out->channels, layer->kernel,
                        layer->backprop_input, backward);
    }
  }
}

static void bench_gemm_call(const bench_gemm_t *g) {
  const int lda = g->trans_a ? g->M : g->K, ldb = g->trans_b ? g->K : g->N;
  cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans,
              g->M, g->N, g->K, 1.0f, g->a, lda, g->b, ldb, g->beta, g->c, g->N);
}

/* Times each product once more (repetition `rep`): calls repeated for at least `seconds`. */
static void bench_gemms_time(bench_gemms_t *list, int rep, double seconds) {
  for (int i = 0; i < list->n; i++) {
    bench_gemm_t *g = &list->gemms[i];
    bench_gemm_call(g); /* warm */
    int calls = 0;
    double start = bench_now(), elapsed;
    do {
      bench_gemm_call(g);
      calls++;
      elapsed = bench_now() - start;
    } while (elapsed < seconds || calls < 3);
    g->seconds[rep] = elapsed / calls;
  }
}

static double bench_gemm_flops(const bench_gemm_t *g) { return 2.0 * g->M * g->N * g->K; }

static void bench_gemms_print(const bench_gemms_t *list, int reps, int B, FILE *out) {
  double total_seconds = 0.0, total_flops = 0.0;
  fprintf(out, "  \"gemms\": [");
  for (int i = 0; i < list->n; i++) {
    const bench_gemm_t *g = &list->gemms[i];
    double s = bench_median(g->seconds, reps);
    total_seconds += s;
    total_flops += bench_gemm_flops(g);
    fprintf(out, "%s\n    {\"what\": \"%s\", \"op\": \"%c%c\", \"M\": %d, \"N\": %d, \"K\": %d, \"us\": %.2f, \"gflops\": %.2f}",
            i ? "," : "", g->what, g->trans_a ? 'T' : 'N', g->trans_b ? 'T' : 'N', g->M, g->N, g->K, s * 1e6,
            bench_gemm_flops(g) / s * 1e-9);
  }
  fprintf(out, "],\n  \"step_gflop\": %.4f,\n  \"gemm_seconds\": %.6g,\n  \"gemm_gflops\": %.3f,\n"
               "  \"limit_samples_per_s\": %.1f,\n",
          total_flops * 1e-9, total_seconds, total_flops / total_seconds * 1e-9, B / total_seconds);
}

// ---------------------------------------------------------------------------------------
// The FMA peak of one core: 12 independent chains of vector FMAs (more than latency × ports,
// 4 × 2 on Zen 3 and Intel cores), at the width of the kernel set in use, over CPU time (a
// shared machine's waits left out, as in samples_per_cpu_s).

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/* Named accumulators: in an array GCC kept them in memory (a third of the rate). The
 * function body is written once on PEAK_VEC / PEAK_FMA / PEAK_SET1 / PEAK_ADD. */
#define BENCH_PEAK_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define BENCH_PEAK_INIT(i) PEAK_VEC a##i = PEAK_SET1((float)(i));
#define BENCH_PEAK_FMA(i) a##i = PEAK_FMA(a##i, m, c);
#define BENCH_PEAK_SUM(i) sum = PEAK_ADD(sum, a##i);
#define BENCH_PEAK_BODY                                                                       \
  const PEAK_VEC m = PEAK_SET1(0.999f), c = PEAK_SET1(0.001f);                                \
  BENCH_PEAK_CHAINS(BENCH_PEAK_INIT)                                                          \
  double start = bench_cpu_now();                                                             \
  for (long k = 0; k < iterations; k++) {                                                     \
    BENCH_PEAK_CHAINS(BENCH_PEAK_FMA)                                                         \
    __asm__ volatile("" : "+x"(a0));                                                          \
  }                                                                                           \
  double seconds = bench_cpu_now() - start;                                                   \
  PEAK_VEC sum = PEAK_SET1(0.0f);                                                             \
  BENCH_PEAK_CHAINS(BENCH_PEAK_SUM)                                                           \
  if (sum[0] == 1234.5f) puts("");                                                            \
  return (double)iterations * 12 * (sizeof(PEAK_VEC) / sizeof(float)) * 2 / seconds * 1e-9;

#define PEAK_VEC __m256
#define PEAK_FMA _mm256_fmadd_ps
#define PEAK_SET1 _mm256_set1_ps
#define PEAK_ADD _mm256_add_ps
__attribute__((target("avx2,fma"))) static double bench_peak_avx2(long iterations) { BENCH_PEAK_BODY }
#undef PEAK_VEC
#undef PEAK_FMA
#undef PEAK_SET1
#undef PEAK_ADD
#define PEAK_VEC __m512
#define PEAK_FMA _mm512_fmadd_ps
#define PEAK_SET1 _mm512_set1_ps
#define PEAK_ADD _mm512_add_ps
__attribute__((target("avx512f"))) static double bench_peak_avx512(long iterations) { BENCH_PEAK_BODY }
#endif

/* GFLOP/s, the best of 3 runs of ~0.1 s; 0 without AVX2 (no FMA to count). */
static double bench_fma_peak(void) {
  double best = 0.0;
#if defined(__x86_64__) || defined(__i386__)
  for (int run = 0; run < 3; run++) {
    double rate = kernels_current() == KERNELS_AVX512 ? bench_peak_avx512(4000000)
                  : kernels_current() == KERNELS_AVX2 ? bench_peak_avx2(8000000) : 0.0;
    if (rate > best) best = rate;
  }
#endif
  return best;
}

// ---------------------------------------------------------------------------------------
// Workloads

typedef struct {
  int B;
  float *images;   /* pool × CFG_INPUTS */
  int *labels;
  int pool;
  nn_model_t student, teacher;
  int has_teacher;
  int student_hidden, teacher_hidden; /* layers whose outputs the feature pair aligns */
  distill_feature_t pair;
  float *pair_params, *pair_grads, *pair_velocity, *pair_scratch;
  size_t pair_n_params;
  float *probs, *student_soft, *teacher_soft;
  int *predictions;
  float *batch;    /* gathered batch (the epoch workload) */
  int *batch_labels;
  int *order;
  double loss;     /* summed so the work cannot be optimised away, and checked finite */
  /* kd-epoch-cache: the worker's teacher, with the training split cached. */
  int cached;
  teacher_t cache_teacher;
  data_split_t split;
  teacher_cache_cost_t cache_cost;
} bench_run_t;

/* One SGD step of a plain network (the MLP, the CNN): forward, cross-entropy, backward,
 * update. */
static void bench_step_plain(bench_run_t *r, const float *x, const int *y, int B) {
  const float *logits = nn_forward(&r->student, x, B, 1);
  r->loss += loss_crossentropy_forward(r->probs, r->predictions, logits, y, B, CFG_CLASSES);
  nn_zero_grad(&r->student);
  loss_crossentropy_backward(nn_dlogits(&r->student), r->probs, y, 1.0f, B, CFG_CLASSES);
  nn_backward(&r->student, x, B);
  nn_optimizer_step(&r->student, BENCH_LR);
}

/* One KD step as distill.h lays it out: the frozen teacher forward, the student forward,
 * task + soft-target + feature losses (adapter 128 → 1200, MSE), their gradients, the
 * student's backward and update, and the adapter's update (same SGD, no decay). */
static void bench_step_kd_student(bench_run_t *r, const float *x, const int *y, int B,
                                  const float *teacher_logits, const float *t) {
  const float *student_logits = nn_forward(&r->student, x, B, 1);
  const float *s = nn_layer_output(&r->student, r->student_hidden);
  float task = loss_crossentropy_forward(r->probs, r->predictions, student_logits, y, B, CFG_CLASSES);
  float kd = kd_loss_forward(r->student_soft, r->teacher_soft, student_logits, teacher_logits, BENCH_T, B,
                             CFG_CLASSES);
  float feature = distill_feature_forward(&r->pair, r->pair_scratch, r->pair_params, s, t, NULL, B, NULL);
  r->loss += task + kd + feature;
  nn_zero_grad(&r->student);
  memset(r->pair_grads, 0, r->pair_n_params * sizeof(float));
  loss_crossentropy_backward(nn_dlogits(&r->student), r->probs, y, 1.0f, B, CFG_CLASSES);
  kd_loss_backward(nn_dlogits(&r->student), r->student_soft, r->teacher_soft, BENCH_T, 1.0f, B, CFG_CLASSES);
  distill_feature_backward(&r->pair, nn_layer_doutput(&r->student, r->student_hidden), r->pair_grads,
                           r->pair_scratch, r->pair_params, s, t, 1.0f, 0.0f, B);
  nn_backward(&r->student, x, B);
  nn_optimizer_step(&r->student, BENCH_LR);
  optim_sgd_update(r->pair_params, r->pair_grads, r->pair_velocity, r->pair_n_params, 0, BENCH_LR,
                   BENCH_MOMENTUM, 0.0f);
}

static void bench_step_kd(bench_run_t *r, const float *x, const int *y, int B) {
  const float *teacher_logits = nn_forward(&r->teacher, x, B, 0);
  bench_step_kd_student(r, x, y, B, teacher_logits, nn_layer_output(&r->teacher, r->teacher_hidden));
}

/* kd-epoch-cache: the teacher as the worker holds it. Writes the benchmark's teacher (its
 * config and initial weights) to a checkpoint, loads it with teacher_load for a student whose
 * config names it and pairs "hidden" with "hidden", and caches the training split (logits and
 * the paired layer), timing that once. */
static void bench_setup_cache(bench_run_t *r, const cfg_experiment_t *teacher_config) {
  char path[64], error[1024];
  snprintf(path, sizeof path, "/tmp/bench_teacher_%d.ckpt", (int)getpid());
  ckpt_writer_t writer;
  ckpt_writer_init(&writer);
  json_t *meta = json_pack("{s:o}", "config", cfg_to_json(teacher_config));
  ckpt_writer_set_meta(&writer, meta);
  json_decref(meta);
  ckpt_add_f32(&writer, "params", r->teacher.params, r->teacher.n_params);
  if (ckpt_write(&writer, path, error, sizeof error) < 0) bench_die(error);
  ckpt_writer_free(&writer);

  char text[2048];
  snprintf(text, sizeof text,
           "{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 256}, {\"type\": \"relu\"},"
           " {\"type\": \"linear\", \"out\": 128}, {\"type\": \"relu\", \"name\": \"hidden\"},"
           " {\"type\": \"linear\", \"out\": 10}]}, \"dataset\": {\"name\": \"synthetic\"},"
           " \"teacher\": {\"checkpoint\": \"%s\"}, \"features\": [{\"student\": \"hidden\", \"teacher\": \"hidden\"}],"
           " \"stages\": [{\"epochs\": 1, \"distill_weight\": 1, \"feature_weight\": 1}]}",
           path);
  static cfg_experiment_t student_config;
  bench_parse_config(text, &student_config);
  int rc = teacher_load(&r->cache_teacher, &student_config, r->B, error, sizeof error);
  unlink(path);
  if (rc != 0) bench_die(error);
  r->split = (data_split_t){.n = r->pool, .images = r->images, .labels = r->labels};
  rc = teacher_cache_split(&r->cache_teacher, &r->split, 1, &r->cache_cost);
  if (rc != 0) {
    snprintf(error, sizeof error, "teacher_cache_split: %s (raise %s?)", strerror(-rc), TEACHER_CACHE_ENV);
    bench_die(error);
  }
  r->cached = 1;
}

static void bench_setup(bench_run_t *r, const char *workload, int pool) {
  memset(r, 0, sizeof *r);
  r->B = BENCH_BATCH;
  r->pool = pool;
  r->images = malloc((size_t)pool * CFG_INPUTS * sizeof(float));
  r->labels = malloc((size_t)pool * sizeof(int));
  r->probs = malloc((size_t)r->B * CFG_CLASSES * sizeof(float));
  r->student_soft = malloc((size_t)r->B * CFG_CLASSES * sizeof(float));
  r->teacher_soft = malloc((size_t)r->B * CFG_CLASSES * sizeof(float));
  r->predictions = malloc((size_t)r->B * sizeof(int));
  r->batch = malloc((size_t)r->B * CFG_INPUTS * sizeof(float));
  r->batch_labels = malloc((size_t)r->B * sizeof(int));
  r->order = malloc((size_t)pool * sizeof(int));
  if (!r->images || !r->labels || !r->probs || !r->student_soft || !r->teacher_soft || !r->predictions ||
      !r->batch || !r->batch_labels || !r->order)
    bench_die("out of memory for the data");
  for (size_t i = 0; i < (size_t)pool * CFG_INPUTS; i++) r->images[i] = bench_uniform();
  for (int i = 0; i < pool; i++) {
    r->labels[i] = (int)(bench_uniform() * CFG_CLASSES) % CFG_CLASSES;
    r->order[i] = i;
  }

  static cfg_experiment_t student_config, teacher_config; /* large: not on the stack */
  if (strcmp(workload, "cnn-teacher") == 0) {
    /* examples/cnn-teacher.json itself (its network, momentum and weight decay), as
     * torch_bench.py reads it: a copy here once said "no padding" where the file's layers
     * take the default, kernel / 2, and the peer trained a smaller network. */
    char *text = NULL;
    size_t length = 0;
    const int rc = util_read_file(BENCH_CNN_TEACHER_CONFIG, 1 << 20, &text, &length);
    if (rc != 0) {
      fprintf(stderr, "bench_train: %s: %s\n", BENCH_CNN_TEACHER_CONFIG, strerror(-rc));
      exit(1);
    }
    bench_parse_config(text, &student_config);
    free(text);
  } else {
    bench_parse_config(strcmp(workload, "cnn") == 0 ? bench_cnn_json : bench_student_json, &student_config);
  }
  if (nn_model_create(&r->student, &student_config, r->B) != 0) bench_die("cannot build the student");
  char error[160];
  if (nn_model_set_threads(&r->student, openblas_get_num_threads(), error, sizeof error) != 0)
    bench_die(error);
  /* As the worker does (worker/main.c): a convolutional model's pool, OpenBLAS on one thread. */
  if (nn_model_has_convolution(&r->student)) openblas_set_num_threads(1);
  if (strncmp(workload, "kd", 2) == 0) {
    bench_parse_config(bench_teacher_json, &teacher_config);
    if (nn_model_create_inference(&r->teacher, &teacher_config, r->B) != 0) bench_die("cannot build the teacher");
    if (nn_model_set_threads(&r->teacher, openblas_get_num_threads(), error, sizeof error) != 0)
      bench_die(error);
    nn_model_pack_weights(&r->teacher); /* as teacher_load does */
    r->has_teacher = 1;
    r->student_hidden = cfg_layer_index(&student_config, "hidden");
    r->teacher_hidden = cfg_layer_index(&teacher_config, "hidden");
    nn_model_keep_output(&r->student, r->student_hidden); /* the feature pair reads both */
    nn_model_keep_output(&r->teacher, r->teacher_hidden);
    size_t n_params = 0, n_scratch = 0;
    const int cs = nn_layer_shape(&r->student, r->student_hidden).channels;
    const int ct = nn_layer_shape(&r->teacher, r->teacher_hidden).channels;
    if (distill_feature_layout(&r->pair, cs, ct, 1, 0, CFG_GATE_NONE, r->B, &n_params, &n_scratch) != 0)
      bench_die("cannot lay out the feature pair");
    r->pair_n_params = n_params;
    r->pair_params = calloc(n_params, sizeof(float));
    r->pair_grads = calloc(n_params, sizeof(float));
    r->pair_velocity = calloc(n_params, sizeof(float));
    r->pair_scratch = calloc(n_scratch, sizeof(float));
    if (!r->pair_params || !r->pair_grads || !r->pair_velocity || !r->pair_scratch)
      bench_die("out of memory for the feature pair");
    distill_feature_init(&r->pair, r->pair_params, 1, 0);
    if (strcmp(workload, "kd-epoch-cache") == 0) bench_setup_cache(r, &teacher_config);
  }
}

static void bench_step(bench_run_t *r, const char *workload, int64_t i) {
  const int B = r->B;
  const int batches = r->pool / B;
  const int at = (int)(i % batches) * B;
  const float *x = r->images + (size_t)at * CFG_INPUTS;
  const int *y = r->labels + at;
  if (strcmp(workload, "kd") == 0) bench_step_kd(r, x, y, B);
  else bench_step_plain(r, x, y, B);
}

/* A KD epoch as a worker runs one: a fresh shuffle, then every batch gathered by the
 * shuffled order (the last one smaller) and stepped. No teacher cache: the teacher runs
 * forward on every batch, every epoch. */
static void bench_epoch(bench_run_t *r) {
  for (int i = r->pool - 1; i > 0; i--) {
    int j = (int)(bench_uniform() * (i + 1));
    if (j > i) j = i;
    int tmp = r->order[i];
    r->order[i] = r->order[j];
    r->order[j] = tmp;
  }
  for (int start = 0; start < r->pool; start += r->B) {
    const int B = r->pool - start < r->B ? r->pool - start : r->B;
    for (int b = 0; b < B; b++) {
      const int e = r->order[start + b];
      memcpy(r->batch + (size_t)b * CFG_INPUTS, r->images + (size_t)e * CFG_INPUTS, CFG_INPUTS * sizeof(float));
      r->batch_labels[b] = r->labels[e];
    }
    if (r->cached) {
      teacher_outputs_t t;
      teacher_outputs(&r->cache_teacher, &r->split, r->order + start, r->batch, B, &t);
      bench_step_kd_student(r, r->batch, r->batch_labels, B, t.logits, t.features[0]);
    } else {
      bench_step_kd(r, r->batch, r->batch_labels, B);
    }
  }
}

static void bench_usage(void) {
  fputs("usage: bench_train mlp|kd|cnn|cnn-teacher|kd-epoch|kd-epoch-cache|blas [--seconds S] [--reps N] [--examples N]\n"
        "       [--threads N] [--serve]\n"
        "Times one training workload (median of N repetitions of about S seconds each) and its\n"
        "GEMM-bound limit; prints JSON. kd-epoch: one repetition = one epoch of --examples.\n"
        "--serve: print \"ready\", then run one repetition per \"rep\" line on stdin (a JSON line\n"
        "back each) until any other line or the end of input, then print the JSON.\n",
        stderr);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    bench_usage();
    return 2;
  }
  blas_report_t blas; /* as the worker starts: may re-execute us */
  blas_kernels_start(argv, &blas, stderr);
  char kernels_error[160];
  nn_dense_t dense;
  if (kernels_use_from_env(kernels_error, sizeof kernels_error) != 0 ||
      nn_dense_from_env(&dense, kernels_error, sizeof kernels_error) != 0)
    bench_die(kernels_error);
  const char *workload = argv[1];
  if (strcmp(workload, "blas") == 0) {
    printf("{\"core\": \"%s\", \"chosen_by\": \"%s\", \"reason\": \"%s\", \"self_check\": \"%s\", "
           "\"kernels\": \"%s\", \"dense\": \"%s\"}\n", blas.core, blas.chosen_by, blas.reason, blas.self_check,
           kernels_isa_name(kernels_current()), nn_dense_name(dense));
    return 0;
  }
  double seconds = 1.0;
  int reps = 5, examples = 55000, serve = 0;
  for (int i = 2; i < argc; i += 2) {
    if (strcmp(argv[i], "--serve") == 0) {
      serve = 1;
      i--;
    } else if (i + 1 == argc) {
      bench_usage();
      return 2;
    } else if (strcmp(argv[i], "--seconds") == 0) seconds = atof(argv[i + 1]);
    else if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--examples") == 0) examples = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--threads") == 0) openblas_set_num_threads(atoi(argv[i + 1]));
    else {
      bench_usage();
      return 2;
    }
  }
  if (reps < 1 || reps > BENCH_MAX_REPS || seconds <= 0 || examples < BENCH_BATCH) {
    bench_usage();
    return 2;
  }
  const int epoch = strcmp(workload, "kd-epoch") == 0 || strcmp(workload, "kd-epoch-cache") == 0;
  if (!epoch && strcmp(workload, "mlp") && strcmp(workload, "kd") && strcmp(workload, "cnn") &&
      strcmp(workload, "cnn-teacher")) {
    bench_usage();
    return 2;
  }

  bench_run_t run;
  bench_setup(&run, workload, epoch ? examples : BENCH_POOL);
  const int B = run.B;

  bench_gemms_t gemms = {0};
  /* FLOPs of the step's products that are not GEMMs (the few-taps first convolution). */
  double other_flops = 0.0;
  if (run.has_teacher && !run.cached) /* cached, the teacher runs once, before the epochs */
    bench_gemms_model(&gemms, &run.teacher, B, 0, &other_flops);
  if (run.has_teacher) /* the adapter, student's hidden layer → teacher's */
    bench_gemm_linear(&gemms, B, nn_layer_shape(&run.student, run.student_hidden).channels,
                      nn_layer_shape(&run.teacher, run.teacher_hidden).channels, 1, 1);
  bench_gemms_model(&gemms, &run.student, B, 1, &other_flops);

  /* Warm up: page in every buffer, let OpenBLAS allocate its own. */
  if (epoch) {
    for (int i = 0; i < 3; i++) bench_step_kd(&run, run.images + (size_t)i * B * CFG_INPUTS, run.labels + i * B, B);
  } else {
    double start = bench_now();
    for (int64_t i = 0; i < 3 || bench_now() - start < 0.2 * seconds; i++) bench_step(&run, workload, i);
  }

  /* Serving, repetitions run one at a time when the driver asks ("rep" on stdin, a JSON line
   * back), so that it can alternate them with the peer's: on a shared machine both sides then
   * see the same load. Otherwise --reps of them in a row. */
  if (serve) {
    printf("ready\n");
    fflush(stdout);
    reps = BENCH_MAX_REPS;
  }
  double rates[BENCH_MAX_REPS], cpu_rates[BENCH_MAX_REPS], epoch_seconds[BENCH_MAX_REPS];
  int64_t step = 0;
  int done = 0;
  for (int rep = 0; rep < reps; rep++) {
    char command[64];
    if (serve && (fgets(command, sizeof command, stdin) == NULL || strncmp(command, "rep", 3) != 0)) break;
    double start = bench_now(), cpu_start = bench_cpu_now(), elapsed;
    int64_t samples = 0;
    if (epoch) {
      bench_epoch(&run);
      samples = run.pool;
      elapsed = bench_now() - start;
      epoch_seconds[rep] = elapsed;
    } else {
      do {
        bench_step(&run, workload, step++);
        samples += B;
        elapsed = bench_now() - start;
      } while (elapsed < seconds || samples < 3 * B);
    }
    rates[rep] = samples / elapsed;
    cpu_rates[rep] = samples / (bench_cpu_now() - cpu_start);
    bench_gemms_time(&gemms, rep, epoch ? 0.01 : 0.02);
    done = rep + 1;
    if (serve) {
      printf("{\"rep\": %d, \"samples_per_s\": %.1f, \"samples_per_cpu_s\": %.1f}\n", rep, rates[rep],
             cpu_rates[rep]);
      fflush(stdout);
    }
  }
  reps = done;
  if (reps == 0) bench_die("no repetition ran");
  if (!isfinite(run.loss)) bench_die("the loss is not finite: the timed work went wrong");

  printf("{\n  \"workload\": \"%s\",\n  \"batch\": %d,\n  \"reps\": %d,\n", workload, B, reps);
  printf("  \"samples_per_s\": %.1f,\n  \"samples_per_s_all\": [", bench_median(rates, reps));
  for (int i = 0; i < reps; i++) printf("%s%.1f", i ? ", " : "", rates[i]);
  printf("],\n  \"samples_per_cpu_s\": %.1f,\n", bench_median(cpu_rates, reps));
  if (epoch) printf("  \"examples\": %d,\n  \"epoch_seconds\": %.4f,\n", run.pool, bench_median(epoch_seconds, reps));
  if (run.cached)
    printf("  \"cache_bytes\": %zu,\n  \"cache_seconds\": %.4f,\n", run.cache_cost.bytes, run.cache_cost.seconds);
  bench_gemms_print(&gemms, reps, B, stdout);
  printf("  \"other_gflop\": %.4f,\n  \"fma_peak_gflops\": %.1f,\n  \"kernels\": \"%s\",\n", other_flops * 1e-9,
         bench_fma_peak(), kernels_isa_name(kernels_current()));
  printf("  \"blas\": {\"core\": \"%s\", \"chosen_by\": \"%s\", \"reason\": \"%s\"},\n", blas.core,
         blas.chosen_by, blas.reason);
  printf("  \"student_bytes\": %zu,\n  \"teacher_bytes\": %zu,\n  \"adapter_bytes\": %zu,\n",
         bench_model_bytes(&run.student), run.has_teacher ? bench_model_bytes(&run.teacher) : (size_t)0,
         run.pair_n_params * 3 * sizeof(float));
  printf("  \"openblas\": \"%s\",\n  \"openblas_threads\": %d\n}\n", openblas_get_config(),
         openblas_get_num_threads());
  return 0;
}
