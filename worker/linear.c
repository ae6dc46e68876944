/* linear.c — the linear layer (nn.h's linear_forward / linear_backward and their packed pair)
 * and the model's linear layers (linear.h): each product on OpenBLAS, or on kernels.h's packed
 * GEMM where OpenBLAS's kernel set is narrower than ours or both are AVX-512 (nn_dense_t), split across the
 * model's pool; and an inference model's weights packed once (nn_model_pack_weights).
 * Forward and backward side by side; nothing here allocates: the panels are the model's. */
#include "linear.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "blas_kernels.h"
#include "kernels.h"
#include "thread_pool.h"

void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int B,
                    int IN, int OUT) {
  // inp (B,IN), weight (OUT,IN), bias (OUT) -> out (B,OUT)
  /* The bias goes in first and the product is added to it (beta = 1): one pass over `out`
   * fewer than adding the bias afterwards. */
  float beta = 0.0f;
  if (bias) {
    for (int b = 0; b < B; b++) memcpy(out + (size_t)b * OUT, bias, (size_t)OUT * sizeof *out);
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, OUT, IN, 1.0f, inp, IN, weight, IN, beta,
              out, OUT);
}

/* dbias (OUT) += Σ over the batch of dout (B,OUT), row by row so the inner loop runs along
 * memory and vectorises. */
static void linear__bias_gradient(float *restrict dbias, const float *restrict dout, int B, int OUT) {
  const size_t n = (size_t)OUT;
  for (int b = 0; b < B; b++) {
    const float *restrict row = dout + (size_t)b * n;
    size_t o = 0;
    for (; o + NN_BLOCK <= n; o += NN_BLOCK)
      for (size_t k = o; k < o + NN_BLOCK; k++) dbias[k] += row[k];
    for (; o < n; o++) dbias[o] += row[o];
  }
}

void linear_backward(float *dinp, float *dweight, float *restrict dbias,
                     const float *restrict dout, const float *inp, const float *weight, int B,
                     int IN, int OUT) {
  // dout (B,OUT) -> dinp (B,IN) +=, dweight (OUT,IN) +=, dbias (OUT) +=
  if (dinp) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, IN, OUT, 1.0f, dout, OUT, weight, IN,
                1.0f, dinp, IN);
  }
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, B, 1.0f, dout, OUT, inp, IN, 1.0f,
              dweight, IN);
  if (dbias) linear__bias_gradient(dbias, dout, B, OUT);
}

/* The model's linear layers on kernels.h's packed GEMM (model->dense, nn_dense_default): each
 * product's B operand packed into model->panels, its panels split across the pool's threads,
 * then C's rows split as below (the batch for the forward and the input gradient, the
 * outputs for the weight gradient). An element's sum runs over k in the same order whatever
 * the split, so the bits do not depend on the thread count. */
const char *nn_dense_name(nn_dense_t dense) { return dense == NN_DENSE_KERNELS ? "kernels" : "openblas"; }

int nn_dense_from_env(nn_dense_t *dense, char *error, size_t error_size) {
  /* kernels.h's sets on blas_kernels_core_level's scale: portable 0, AVX2 1, AVX-512 2. The
   * rule and its measurements: nn.h. */
  static const int levels[KERNELS_COUNT] = {0, 1, 2};
  const int ours = levels[kernels_current()], theirs = blas_kernels_core_level(openblas_get_corename());
  *dense = ours > theirs || ours == 2 ? NN_DENSE_KERNELS : NN_DENSE_OPENBLAS; /* 2: AVX-512 */
  if (error_size) error[0] = '\0';
  const char *forced = getenv(NN_DENSE_ENV);
  if (!forced || !forced[0]) return 0;
  for (int choice = NN_DENSE_OPENBLAS; choice <= NN_DENSE_KERNELS; choice++)
    if (strcmp(forced, nn_dense_name((nn_dense_t)choice)) == 0) {
      *dense = (nn_dense_t)choice;
      return 0;
    }
  snprintf(error, error_size, "%s=%s: expected openblas or kernels", NN_DENSE_ENV, forced);
  return -EINVAL;
}

nn_dense_t nn_dense_default(void) {
  nn_dense_t dense;
  char ignored[96];
  nn_dense_from_env(&dense, ignored, sizeof ignored);
  return dense;
}

typedef struct {
  float *C;
  size_t ldc;
  const float *A;
  size_t a_row, a_col;
  const float *B; /* packed into `panels` */
  size_t b_row, b_col;
  float *panels;
  int accumulate, M, N, K;
} linear__product_t;

typedef struct {
  const linear__product_t *products;
  int n;
} linear__products_t;

static void linear__pack_task(void *context, int thread, int threads) {
  const linear__products_t *job = context;
  for (int i = 0; i < job->n; i++) {
    const linear__product_t *p = &job->products[i];
    int first, end;
    thread_pool_share(kernels_gemm_panels(p->N), thread, threads, &first, &end);
    if (end > first) kernels_gemm_pack(p->panels, p->B, p->b_row, p->b_col, p->K, p->N, first, end);
  }
}

static void linear__multiply_task(void *context, int thread, int threads) {
  const linear__products_t *job = context;
  for (int i = 0; i < job->n; i++) {
    const linear__product_t *p = &job->products[i];
    int first, end;
    thread_pool_share(p->M, thread, threads, &first, &end);
    if (end > first)
      kernels_gemm_packed(p->C + (size_t)first * p->ldc, p->ldc, p->A + (size_t)first * p->a_row, p->a_row,
                          p->a_col, p->panels, p->accumulate, end - first, p->N, p->K);
  }
}

/* On `pool` (NULL: the calling thread); `packed`: the operands are in their panels already. */
static void linear__run_packed(struct thread_pool *pool, const linear__product_t *products, int n, int packed) {
  linear__products_t job = {.products = products, .n = n};
  if (pool) {
    if (!packed) thread_pool_run(pool, linear__pack_task, &job);
    thread_pool_run(pool, linear__multiply_task, &job);
  } else {
    if (!packed) linear__pack_task(&job, 0, 1);
    linear__multiply_task(&job, 0, 1);
  }
}

static void linear__forward_packed(struct thread_pool *pool, float *panels, int packed, float *out,
                                   const float *inp, const float *weight, const float *bias, int B, int IN,
                                   int OUT) {
  if (bias)
    for (int b = 0; b < B; b++) memcpy(out + (size_t)b * OUT, bias, (size_t)OUT * sizeof *out);
  const linear__product_t product = {.C = out, .ldc = (size_t)OUT, .A = inp, .a_row = (size_t)IN, .a_col = 1,
                                     .B = weight, .b_row = 1, .b_col = (size_t)IN, .panels = panels,
                                     .accumulate = bias != NULL, .M = B, .N = OUT, .K = IN};
  linear__run_packed(pool, &product, 1, packed);
}

static void linear__backward_packed(struct thread_pool *pool, float *panels, float *dinp, float *dweight,
                                    float *dbias, const float *dout, const float *inp, const float *weight, int B,
                                    int IN, int OUT) {
  linear__product_t products[2];
  int n = 0;
  if (dinp) /* dinp (B,IN) += dout (B,OUT) · W (OUT,IN) */
    products[n++] = (linear__product_t){.C = dinp, .ldc = (size_t)IN, .A = dout, .a_row = (size_t)OUT, .a_col = 1,
                                        .B = weight, .b_row = (size_t)IN, .b_col = 1, .panels = panels,
                                        .accumulate = 1, .M = B, .N = IN, .K = OUT};
  /* dweight (OUT,IN) += doutᵀ (OUT,B) · inp (B,IN) */
  products[n++] = (linear__product_t){.C = dweight, .ldc = (size_t)IN, .A = dout, .a_row = 1, .a_col = (size_t)OUT,
                                      .B = inp, .b_row = (size_t)IN, .b_col = 1,
                                      .panels = panels + cfg_panel_floats((size_t)OUT, (size_t)IN),
                                      .accumulate = 1, .M = OUT, .N = IN, .K = B};
  linear__run_packed(pool, products, n, 0);
  if (dbias) linear__bias_gradient(dbias, dout, B, OUT);
}

void linear_forward_packed(float *panels, float *out, const float *inp, const float *weight, const float *bias,
                           int B, int IN, int OUT) {
  linear__forward_packed(NULL, panels, 0, out, inp, weight, bias, B, IN, OUT);
}

void linear_backward_packed(float *panels, float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int B, int IN, int OUT) {
  linear__backward_packed(NULL, panels, dinp, dweight, dbias, dout, inp, weight, B, IN, OUT);
}

/* The model's linear layers on its pool (nn_model_set_threads), when OpenBLAS runs on the
 * calling thread only (the worker leaves it one thread for a model with convolutions, whose
 * pool would otherwise share the cores with OpenBLAS's threads): each thread makes its share
 * of the rows with an OpenBLAS call of its own (OpenBLAS 0.3.21's single-threaded path takes
 * its buffers under a lock, so concurrent callers are safe). The forward and the input
 * gradient split the batch's rows, the weight and bias gradients the layer's outputs: no sum
 * across threads, so a split gives the same bits run to run. A serial dense layer was ~7% of
 * the CNN step at one thread, so ~12% at two. */
typedef struct {
  float *out, *dinp, *dweight, *dbias;
  const float *inp, *weight, *bias, *dout;
  int B, IN, OUT;
} linear__job_t;

static void linear__forward_task(void *context, int thread, int threads) {
  const linear__job_t *job = context;
  int first, end;
  thread_pool_share(job->B, thread, threads, &first, &end);
  if (end > first)
    linear_forward(job->out + (size_t)first * job->OUT, job->inp + (size_t)first * job->IN,
                   job->weight, job->bias, end - first, job->IN, job->OUT);
}

static void linear__backward_task(void *context, int thread, int threads) {
  const linear__job_t *job = context;
  int first, end, o0, o1;
  thread_pool_share(job->B, thread, threads, &first, &end);
  if (job->dinp && end > first)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, end - first, job->IN, job->OUT, 1.0f,
                job->dout + (size_t)first * job->OUT, job->OUT, job->weight, job->IN, 1.0f,
                job->dinp + (size_t)first * job->IN, job->IN);
  thread_pool_share(job->OUT, thread, threads, &o0, &o1);
  if (o1 == o0) return;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o1 - o0, job->IN, job->B, 1.0f, job->dout + o0,
              job->OUT, job->inp, job->IN, 1.0f, job->dweight + (size_t)o0 * job->IN, job->IN);
  if (!job->dbias) return;
  for (int b = 0; b < job->B; b++) { /* rows in order, as linear_backward adds them */
    const float *restrict row = job->dout + (size_t)b * job->OUT;
    float *restrict dbias = job->dbias;
    for (int o = o0; o < o1; o++) dbias[o] += row[o];
  }
}

static int linear__pooled(const nn_model_t *model) {
  return model->threads > 1 && openblas_get_num_threads() == 1;
}

void linear_forward_model(nn_model_t *model, const nn_layer_t *layer, float *out, const float *inp,
                          const float *weight, const float *bias, int B, int IN, int OUT) {
  if (model->dense == NN_DENSE_KERNELS) {
    const int packed = model->weights_packed == (int)kernels_current() + 1;
    linear__forward_packed(model->threads > 1 ? model->pool : NULL, model->panels + layer->panels, packed, out, inp,
                           weight, bias, B, IN, OUT);
    return;
  }
  if (!linear__pooled(model)) {
    linear_forward(out, inp, weight, bias, B, IN, OUT);
    return;
  }
  linear__job_t job = {.out = out, .inp = inp, .weight = weight, .bias = bias, .B = B, .IN = IN,
                       .OUT = OUT};
  thread_pool_run(model->pool, linear__forward_task, &job);
}

void linear_backward_model(nn_model_t *model, float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, int B, int IN, int OUT) {
  if (model->dense == NN_DENSE_KERNELS) {
    linear__backward_packed(model->threads > 1 ? model->pool : NULL, model->panels, dinp, dweight, dbias, dout,
                            inp, weight, B, IN, OUT);
    return;
  }
  if (!linear__pooled(model)) {
    linear_backward(dinp, dweight, dbias, dout, inp, weight, B, IN, OUT);
    return;
  }
  linear__job_t job = {.dinp = dinp, .dweight = dweight, .dbias = dbias, .dout = dout, .inp = inp,
                       .weight = weight, .B = B, .IN = IN, .OUT = OUT};
  thread_pool_run(model->pool, linear__backward_task, &job);
}

void nn_model_pack_weights(nn_model_t *model) {
  model->weights_packed = 0;
  if (!model->forward_only || model->dense != NN_DENSE_KERNELS) return;
  for (int l = 0; l < model->n_layers; l++) {
    const nn_layer_t *layer = &model->layers[l];
    if (layer->kind != CFG_LAYER_LINEAR) continue;
    kernels_gemm_pack(model->panels + layer->panels, model->params + layer->weight, 1, (size_t)layer->in,
                      layer->in, layer->out, 0, kernels_gemm_panels(layer->out));
  }
  model->weights_packed = (int)kernels_current() + 1;
}
