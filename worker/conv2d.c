/* conv2d.c — the convolution layer of nn.h: its forward and backward for any caller
 * (conv2d_forward, conv2d_backward), and the model's convolutions (conv2d.h), which split a
 * batch's examples over the model's thread pool and fuse the ReLU and 2×2 pool after them.
 * The loops themselves are kernels.h's (im2col, col2im, the unpacked GEMM, ReLU, pool); this
 * file decides what runs where, in which buffer, and in what order. Split from nn.c, whose
 * model calls it from nn_forward and nn_backward. */
#include "conv2d.h"

#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "thread_pool.h"

/* Example by example, on the thread that owns the example: kernels.h's im2col lays out the
 * patches of example b as col_b (C·K·K, OH·OW) in the thread's scratch, and the output
 * out_b (OC, OH·OW) = weight (OC, C·K·K) · col_b + bias is written in NCHW order by
 * kernels.h's unpacked GEMM while col_b is in L2; a 3×3 convolution of stride 1 over 8
 * channels or more (cfg_conv_winograd) makes out_b by Winograd F(2×2, 3×3) instead
 * (conv2d__winograd_forward: kernels.h's transforms around 16 unpacked products; one
 * example of the second convolution of the CNN and cnn-teacher.json, 32 × 14 × 14
 * padded, 102 → 76 µs; 32 × 13 × 13 without padding 70 → 59).
 * The backward, per example: im2col again,
 * dbias += row sums of dout_b, dweightᵀ (C·K·K, OC) += col_b · dout_bᵀ (the unpacked GEMM,
 * accumulating, on dout_b transposed into the scratch; kernels.h's dot products when C·K·K is
 * small), dcol = weightᵀ · dout_b (the unpacked GEMM) and col2im adds dcol onto the input's
 * gradient.
 *
 * Measured on one core of the Zen 3 machine (OpenBLAS 0.3.21 "Zen", bench/README.md), the
 * CNN step in samples per CPU-second, alternated in one run: the whole-batch layout (one
 * OpenBLAS GEMM per product, reordering passes between NCHW and channel-major) 1,303; chunks
 * of a few examples (the same passes, in cache) within noise of it whatever the chunk
 * (128K floats to the whole batch); OpenBLAS per example writing NCHW (no reordering) 1,516
 * against 1,607 for chunks; the unpacked GEMM per example (no packing, no zeroing of C, no
 * reordering) 1,511 against 1,303 in one run. The weight gradient: OpenBLAS's packed NT
 * product per example 58–66 GFLOP/s over a batch whose im2col came back from memory, the
 * unpacked product on the transposed dout_b 56–58 from memory and 76 from an im2col just
 * made in L2 (9 µs an example to make): hence no im2col is kept between forward and
 * backward, which also saves the B·C·K·K·OH·OW floats per convolution it took.
 *
 * With few taps (C·K·K ≤ CONV2D_FEW_TAPS: the first layer of an image network) the weight
 * gradient goes to kernels.h's dot products: OpenBLAS reached 19–23 GFLOP/s with N = 9.
 *
 * On more than one thread (nn_model_set_threads) the model splits the batch's examples
 * into contiguous shares, one per thread of a persistent pool: forward and backward alike,
 * each thread's weight gradients summed in its own scratch and added in thread order
 * afterwards. */

size_t conv2d_scratch_floats(int C, int H, int W, int OC, int K, int stride, int pad, int backward) {
  return cfg_conv_scratch_floats((size_t)C, (size_t)K, (size_t)stride,
                                 (size_t)conv2d_out_size(H, K, stride, pad),
                                 (size_t)conv2d_out_size(W, K, stride, pad), (size_t)OC, backward);
}

/* Σ src (n), in CONV2D_BLOCK partial sums: a loop GCC -O2 vectorises (a known trip count,
 * as nn.c's NN_BLOCK loops), in a fixed order. */
#define CONV2D_BLOCK 16
static float conv2d__sum(const float *restrict src, size_t n) {
  float partial[CONV2D_BLOCK] = {0};
  size_t i = 0;
  for (; i + CONV2D_BLOCK <= n; i += CONV2D_BLOCK)
    for (size_t k = 0; k < CONV2D_BLOCK; k++) partial[k] += src[i + k];
  float sum = 0.0f;
  for (; i < n; i++) sum += src[i];
  for (int k = 0; k < CONV2D_BLOCK; k++) sum += partial[k];
  return sum;
}

/* One convolution's operands, shared by the threads that split its batch. */
typedef struct {
  float *out, *dinp, *dweight, *dbias;
  const float *inp, *weight, *bias, *dout;
  int B, C, H, W, OC, K, stride, pad;
  /* Thread t's scratch (conv2d_scratch_floats, laid out as conv2d__scratch says) at
   * scratch[t]: its examples' im2col, one at a time, and in the backward the sums of their
   * weight gradients, which the caller adds into dweight and dbias in thread order. */
  float *const *scratch;
  /* Forward epilogue (the model's; none otherwise): the ReLU layer after the convolution
   * (`relu`) into relu_out, and the 2×2 pool after that into pool_out and argmax (NULL when
   * there is no pool), per example while its output is in cache and on the example's thread.
   * The convolution's output when the model does not store it (nn_layer_t.output_transient:
   * out NULL) is made in the thread's scratch; the ReLU's (relu_out NULL, only with a pool)
   * is never made: the pool takes the convolution's output and the ReLU the pool's, which
   * gives the same pooled values (the ReLU is monotonic: max of ReLUs = ReLU of the max, for
   * finite inputs) and the same argmax wherever the pooled value is > 0, the only places the
   * backward reads it (conv2d__pool_relu_backward). */
  int relu;
  float *relu_out, *pool_out;
  int32_t *argmax;
  /* Backward epilogue, the same layers in reverse, per example before its products: the
   * pool's gradient (pool_dout, through argmax) added into the ReLU's (relu_dout), then the
   * ReLU's, where relu_out > 0, into the convolution's own (conv_dout, which is dout). With
   * relu_out not stored, the pool's gradient goes straight to conv_dout where pool_out > 0. */
  float *relu_dout, *conv_dout;
  const float *pool_dout;
  /* Whether relu_dout and conv_dout are stale (nn__stale_gradients: nothing but this
   * epilogue reads or adds to them): then they are made per example in the thread's scratch
   * and the slab is left as it was. */
  int relu_dout_in_scratch, conv_dout_in_scratch;
} conv2d__job_t;

/* A thread's scratch, in the order cfg_conv_scratch_floats counts it: from its first 64-byte
 * line, one example's im2col (CKK, P; rows cfg_conv_col_stride(P) apart), which its dcol
 * replaces once the weight gradient has used it, or in its place, for a forward that takes
 * Winograd, U, V, M and the transforms' work (kernels.h; rows of tiles
 * cfg_conv_winograd_ld(T) apart); one example's output (OC, P) when the forward does not
 * store it (the convolution's, then its ReLU's in place), and in the backward its output
 * gradient there when the epilogue makes it rather than the model's slab; for the backward,
 * the weight and bias gradients of the thread's share of the batch (OC·CKK + OC; the weights
 * as (CKK, OC) when the product makes them, as (OC, CKK) for few taps) and one example's
 * output gradient transposed (P, OC). */
typedef struct {
  float *col, *dcol, *out, *dout, *dweight, *dbias, *dout_transposed;
  size_t col_stride; /* between the rows of col and dcol */
  float *U, *V, *M, *work;
  size_t tiles_stride; /* between the rows of V and M */
} conv2d__scratch_t;

static conv2d__scratch_t conv2d__scratch(float *scratch, const conv2d__job_t *job) {
  const size_t OH = (size_t)conv2d_out_size(job->H, job->K, job->stride, job->pad);
  const size_t OW = (size_t)conv2d_out_size(job->W, job->K, job->stride, job->pad);
  const size_t P = OH * OW, C = (size_t)job->C, OC = (size_t)job->OC, CKK = C * job->K * job->K;
  conv2d__scratch_t parts;
  parts.col_stride = cfg_conv_col_stride(P);
  /* col from the scratch's first 64-byte line (the allocator promises 16 bytes). */
  parts.col = parts.dcol = scratch + (-((uintptr_t)scratch / sizeof *scratch) & 15);
  size_t first = CKK * parts.col_stride;
  parts.U = parts.V = parts.M = parts.work = NULL;
  parts.tiles_stride = 0;
  if (cfg_conv_winograd(C, (size_t)job->K, (size_t)job->stride)) {
    const cfg_winograd_layout_t layout = cfg_conv_winograd_layout(C, OH, OW, OC);
    parts.tiles_stride = layout.ld;
    parts.U = parts.col;
    parts.V = parts.U + layout.v;
    parts.M = parts.U + layout.m;
    parts.work = parts.U + layout.work;
    if (layout.total > first) first = layout.total;
  }
  parts.out = parts.dout = parts.col + first;
  parts.dweight = parts.out + OC * P;
  parts.dbias = parts.dweight + OC * CKK;
  parts.dout_transposed = parts.dbias + OC;
  return parts;
}

/* U[ξ][oc][c] = G g Gᵀ for each 3 × 3 kernel g = weight[oc][c], G = [1 0 0; ½ ½ ½; ½ −½ ½;
 * 0 0 1]: Winograd's weights (kernels.h), made by each thread for its share of a batch
 * (64 × 32 kernels: ~2,000 of them, once a step). */
static void conv2d__winograd_weights(float *restrict U, const float *restrict weight, int OC, int C) {
  const size_t xi_stride = (size_t)OC * C;
  for (int o = 0; o < OC; o++)
    for (int c = 0; c < C; c++) {
      const float *g = weight + ((size_t)o * C + c) * 9;
      float rows[4][3]; /* G g */
      for (int j = 0; j < 3; j++) {
        rows[0][j] = g[j];
        rows[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
        rows[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
        rows[3][j] = g[6 + j];
      }
      float *u = U + (size_t)o * C + c;
      for (int i = 0; i < 4; i++) { /* (G g) Gᵀ */
        u[(size_t)(4 * i + 0) * xi_stride] = rows[i][0];
        u[(size_t)(4 * i + 1) * xi_stride] = 0.5f * (rows[i][0] + rows[i][1] + rows[i][2]);
        u[(size_t)(4 * i + 2) * xi_stride] = 0.5f * (rows[i][0] - rows[i][1] + rows[i][2]);
        u[(size_t)(4 * i + 3) * xi_stride] = rows[i][2];
      }
    }
}

/* One example's output by Winograd: V from its input, M[·][ξ] = U[ξ] · V[ξ] by the unpacked
 * product (OC × tiles × C each), out from M. M holds each channel's 16 rows together, so the
 * output's transform reads one block per channel (rows 16·ld apart for the products). */
static void conv2d__winograd_forward(const conv2d__job_t *job, const conv2d__scratch_t *parts,
                                     float *out_b, const float *inp_b, int OH, int OW) {
  const int TH = (OH + 1) / 2, TW = (OW + 1) / 2, T = TH * TW, C = job->C, OC = job->OC;
  const size_t ld = parts->tiles_stride;
  kernels_winograd_input(parts->V, ld, parts->work, cfg_conv_winograd_pitch((size_t)TW), inp_b, C,
                         job->H, job->W, job->pad, TH, TW);
  for (int xi = 0; xi < 16; xi++)
    kernels_gemm_unpacked(parts->M + (size_t)xi * ld, 16 * ld, parts->U + (size_t)xi * OC * C,
                          (size_t)C, 1, parts->V + (size_t)xi * C * ld, ld, NULL, 0, OC, T, C);
  kernels_winograd_output(out_b, parts->work, parts->M, ld, job->bias, OC, OH, OW, TH, TW);
}

static void conv2d__forward_examples(const conv2d__job_t *job, float *scratch, int first, int end) {
  const int OH = conv2d_out_size(job->H, job->K, job->stride, job->pad);
  const int OW = conv2d_out_size(job->W, job->K, job->stride, job->pad);
  const int CKK = job->C * job->K * job->K;
  const size_t P = (size_t)OH * OW;
  const conv2d__scratch_t parts = conv2d__scratch(scratch, job);
  if (parts.U && first < end) conv2d__winograd_weights(parts.U, job->weight, job->OC, job->C);
  for (int b = first; b < end; b++) {
    const float *inp_b = job->inp + (size_t)b * job->C * job->H * job->W;
    float *out_b = job->out ? job->out + (size_t)b * job->OC * P : parts.out;
    if (parts.U) {
      conv2d__winograd_forward(job, &parts, out_b, inp_b, OH, OW);
    } else {
      kernels_im2col(parts.col, parts.col_stride, inp_b, job->C, job->H, job->W, job->K,
                     job->stride, job->pad, OH, OW);
      kernels_gemm_unpacked(out_b, P, job->weight, (size_t)CKK, 1, parts.col, parts.col_stride,
                            job->bias, 0, job->OC, (int)P, CKK);
    }
    if (!job->relu) continue;
    const size_t pooled = (size_t)conv2d_out_size(OH, 2, 2, 0) * conv2d_out_size(OW, 2, 2, 0);
    float *pool_b = job->pool_out ? job->pool_out + (size_t)b * job->OC * pooled : NULL;
    int32_t *argmax_b = job->pool_out ? job->argmax + (size_t)b * job->OC * pooled : NULL;
    if (job->relu_out) {
      float *relu_b = job->relu_out + (size_t)b * job->OC * P;
      kernels_relu_forward(relu_b, out_b, (size_t)job->OC * P);
      if (pool_b) kernels_maxpool2_forward(pool_b, argmax_b, relu_b, (size_t)job->OC, OH, OW);
    } else { /* the ReLU's output not stored: the pool first, the ReLU on a quarter as much */
      kernels_maxpool2_forward(pool_b, argmax_b, out_b, (size_t)job->OC, OH, OW);
      kernels_relu_forward(pool_b, pool_b, (size_t)job->OC * pooled);
    }
  }
}

static void conv2d__forward_task(void *context, int thread, int threads) {
  const conv2d__job_t *job = context;
  int first, end;
  thread_pool_share(job->B, thread, threads, &first, &end);
  conv2d__forward_examples(job, job->scratch[thread], first, end);
}

/* The pool's and the ReLU's backward for example b when the ReLU's output was not stored:
 * its gradient comes from the pool alone, at each window's argmax, where the ReLU's output
 * was the pool's, so the ReLU passes it where pool_out > 0 (kernels.h; the same bits as the
 * stored path, maxpool_backward adding into zeros then relu_backward). Written whole into
 * the thread's scratch, or added into a stored gradient (a loss on the convolution's
 * output). */
static const float *conv2d__pool_relu_backward(const conv2d__job_t *job, float *scratch, int b,
                                               int OH, int OW) {
  const size_t pooled = (size_t)conv2d_out_size(OH, 2, 2, 0) * conv2d_out_size(OW, 2, 2, 0);
  const size_t at = (size_t)b * job->OC * pooled;
  float *conv_dout = job->conv_dout_in_scratch ? scratch : job->conv_dout + (size_t)b * job->OC * OH * OW;
  kernels_maxpool2_relu_backward(conv_dout, job->pool_dout + at, job->pool_out + at, job->argmax + at,
                                 (size_t)job->OC, OH, OW, !job->conv_dout_in_scratch);
  return conv_dout;
}

/* The pool's and the ReLU's backward for example b (the model's epilogue, see the job):
 * returns the convolution's output gradient for b. A gradient nothing else reads or adds to
 * (stale in the slab, see nn__stale_gradients) is made in the thread's `scratch` (OC, P)
 * and never stored: writing the batch's slabs cost a pass over them through memory (~5% of
 * the teacher's step, most of it zeroing them first). */
static const float *conv2d__backward_epilogue(const conv2d__job_t *job, float *scratch, int b,
                                              int OH, int OW) {
  if (!job->relu_out) return conv2d__pool_relu_backward(job, scratch, b, OH, OW);
  const size_t n = (size_t)job->OC * OH * OW;
  const size_t pooled = (size_t)conv2d_out_size(OH, 2, 2, 0) * conv2d_out_size(OW, 2, 2, 0);
  float *relu_dout_b = job->relu_dout + (size_t)b * n;
  if (job->relu_dout_in_scratch) {
    relu_dout_b = scratch;
    memset(relu_dout_b, 0, n * sizeof *relu_dout_b);
  }
  if (job->pool_dout)
    maxpool_backward(relu_dout_b, job->pool_dout + (size_t)b * job->OC * pooled,
                     job->argmax + (size_t)b * job->OC * pooled, 1, job->OC, OH, OW, 2, 2);
  const float *relu_out_b = job->relu_out + (size_t)b * n;
  if (job->conv_dout_in_scratch) { /* written, in place when the ReLU's gradient is in scratch too */
    kernels_relu_backward(scratch, relu_dout_b, relu_out_b, n, 0);
    return scratch;
  }
  float *conv_dout_b = job->conv_dout + (size_t)b * n;
  kernels_relu_backward(conv_dout_b, relu_dout_b, relu_out_b, n, 1);
  return conv_dout_b;
}

/* Examples [first, end) of the backward: their weight and bias gradients summed into the
 * thread's `scratch` (zeroed here first), their input gradients added into dinp. */
static void conv2d__backward_examples(const conv2d__job_t *job, float *scratch, int first, int end) {
  const int OH = conv2d_out_size(job->H, job->K, job->stride, job->pad);
  const int OW = conv2d_out_size(job->W, job->K, job->stride, job->pad);
  const int OC = job->OC, CKK = job->C * job->K * job->K;
  const size_t P = (size_t)OH * OW;
  const conv2d__scratch_t parts = conv2d__scratch(scratch, job);
  memset(parts.dweight, 0, ((size_t)OC * CKK + OC) * sizeof *parts.dweight);
  for (int b = first; b < end; b++) {
    const float *dout_b = job->dout + (size_t)b * OC * P, *col_b = parts.col;
    /* im2col again rather than kept from the forward: written into this thread's L2 here
     * (~9 µs an example for the teacher's second convolution) instead of read back from
     * memory (the batch's 29 MB), which made the weight-gradient product ~15% slower. */
    kernels_im2col(parts.col, parts.col_stride, job->inp + (size_t)b * job->C * job->H * job->W,
                   job->C, job->H, job->W, job->K, job->stride, job->pad, OH, OW);
    if (job->relu) dout_b = conv2d__backward_epilogue(job, parts.dout, b, OH, OW);
    if (CKK <= CONV2D_FEW_TAPS) {
      kernels_conv_few_taps_backward(parts.dweight, parts.dbias, dout_b, col_b, parts.col_stride, 1,
                                     OC, CKK, (int)P);
    } else {
      for (int o = 0; o < OC; o++) parts.dbias[o] += conv2d__sum(dout_b + (size_t)o * P, P);
      /* dweightᵀ (CKK, OC) += col_b (CKK, P) · dout_bᵀ (P, OC): the unpacked product with
       * its accumulators held over the whole of P (see the file's opening comment). */
      kernels_transpose(parts.dout_transposed, dout_b, OC, (int)P);
      kernels_gemm_unpacked(parts.dweight, (size_t)OC, col_b, parts.col_stride, 1, parts.dout_transposed,
                            (size_t)OC, NULL, 1, CKK, OC, (int)P);
    }
    if (job->dinp) {
      kernels_gemm_unpacked(parts.dcol, parts.col_stride, job->weight, 1, (size_t)CKK, dout_b, P,
                            NULL, 0, CKK, (int)P, OC);
      kernels_col2im(job->dinp + (size_t)b * job->C * job->H * job->W, parts.dcol, parts.col_stride,
                     job->C, job->H, job->W, job->K, job->stride, job->pad, OH, OW);
    }
  }
}

static void conv2d__backward_task(void *context, int thread, int threads) {
  const conv2d__job_t *job = context;
  int first, end;
  thread_pool_share(job->B, thread, threads, &first, &end);
  conv2d__backward_examples(job, job->scratch[thread], first, end);
}

/* dweight and dbias (if any) += the `threads` threads' sums, thread 0 first: a fixed order,
 * so a step gives the same bits run to run at one thread count (not across counts). */
static void conv2d__add_gradients(const conv2d__job_t *job, int threads) {
  const int OC = job->OC, CKK = job->C * job->K * job->K;
  for (int t = 0; t < threads; t++) {
    const conv2d__scratch_t parts = conv2d__scratch(job->scratch[t], job);
    float *restrict dweight = job->dweight;
    const float *restrict sum = parts.dweight;
    if (CKK <= CONV2D_FEW_TAPS) {
      for (size_t i = 0; i < (size_t)OC * CKK; i++) dweight[i] += sum[i];
    } else {
      for (int o = 0; o < OC; o++)
        for (int k = 0; k < CKK; k++) dweight[(size_t)o * CKK + k] += sum[(size_t)k * OC + o];
    }
    if (job->dbias)
      for (int o = 0; o < OC; o++) job->dbias[o] += parts.dbias[o];
  }
}

void conv2d_forward(float *out, float *scratch, const float *inp, const float *weight,
                    const float *bias, int B, int C, int H, int W, int OC, int K, int stride,
                    int pad) {
  // inp (B,C,H,W), weight (OC,C·K·K), bias (OC) -> out (B,OC,OH,OW)
  const conv2d__job_t job = {.out = out, .inp = inp, .weight = weight, .bias = bias, .B = B,
                             .C = C, .H = H, .W = W, .OC = OC, .K = K, .stride = stride,
                             .pad = pad};
  conv2d__forward_examples(&job, scratch, 0, B);
}

void conv2d_backward(float *dinp, float *dweight, float *dbias, float *scratch, const float *dout,
                     const float *inp, const float *weight, int B, int C, int H, int W, int OC,
                     int K, int stride, int pad) {
  // dout (B,OC,OH,OW), inp (B,C,H,W) -> dinp (B,C,H,W) +=, dweight (OC,C·K·K) +=, dbias (OC) +=
  float *const scratches[1] = {scratch};
  const conv2d__job_t job = {.inp = inp, .dinp = dinp, .dweight = dweight, .dbias = dbias,
                             .weight = weight, .dout = dout, .B = B, .C = C, .H = H, .W = W,
                             .OC = OC, .K = K, .stride = stride, .pad = pad, .scratch = scratches};
  conv2d__backward_examples(&job, scratch, 0, B);
  conv2d__add_gradients(&job, 1);
}

/* The model's convolutions (conv2d.h). */
void conv2d_forward_model(nn_model_t *model, const nn_layer_t *layer, float *out,
                                   const float *inp, int B, const nn_layer_t *relu,
                                   const nn_layer_t *pool) {
  const cfg_shape_t *in = &layer->in_shape;
  conv2d__job_t job = {.out = out, .inp = inp, .weight = model->params + layer->weight,
                       .bias = model->params + layer->bias, .B = B, .C = in->channels,
                       .H = in->height, .W = in->width, .OC = layer->shape.channels,
                       .K = layer->kernel, .stride = layer->stride, .pad = layer->padding,
                       .scratch = model->thread_scratch};
  if (layer->output_transient) job.out = NULL;
  if (relu) {
    job.relu = 1;
    job.relu_out = relu->output_transient ? NULL : model->activations + relu->activation;
  }
  if (pool) {
    job.pool_out = model->activations + pool->activation;
    job.argmax = model->indices + pool->argmax;
  }
  thread_pool_run(model->pool, conv2d__forward_task, &job);
}

void conv2d_backward_model(nn_model_t *model, const nn_layer_t *layer, float *dinp,
                                    float *dout, const float *inp, int B, const nn_layer_t *relu,
                                    const nn_layer_t *pool) {
  const cfg_shape_t *in = &layer->in_shape;
  conv2d__job_t job = {.inp = inp, .dinp = dinp,
                       .dweight = model->grads + layer->weight, .dbias = model->grads + layer->bias,
                       .weight = model->params + layer->weight, .dout = dout, .B = B,
                       .C = in->channels, .H = in->height, .W = in->width,
                       .OC = layer->shape.channels, .K = layer->kernel, .stride = layer->stride,
                       .pad = layer->padding, .scratch = model->thread_scratch};
  if (relu) {
    job.relu = 1;
    job.relu_out = relu->output_transient ? NULL : model->activations + relu->activation;
    job.relu_dout = model->dactivations + relu->activation;
    job.conv_dout = dout;
    job.relu_dout_in_scratch = relu->output_gradient_stale;
    job.conv_dout_in_scratch = layer->output_gradient_stale;
  }
  if (pool) {
    job.pool_out = model->activations + pool->activation;
    job.pool_dout = model->dactivations + pool->activation;
    job.argmax = model->indices + pool->argmax;
  }
  thread_pool_run(model->pool, conv2d__backward_task, &job);
  conv2d__add_gradients(&job, model->threads);
}
