/* nn.c — the numerical core of a training step. Read it like llm.c: each layer's forward
 * and backward side by side (relu, max-pool, dropout, the growing student's residual block;
 * the linear layer is linear.c's, the convolution conv2d.c's), then the loss, the optimisers, and the model that
 * owns the buffers and walks the layers. Kernels touch only the buffers they are given; the model allocates its
 * slabs once, in nn_model_create, and never again: nothing here allocates per step. */
#include "nn.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "conv2d.h"
#include "kernels.h"
#include "linear.h"
#include "rng.h"
#include "thread_pool.h"

/* ---------------------------------------------------------------------------------------
 * ReLU */

/* kernels.h's loops: vectorised per instruction set, and never inlined into nn_forward,
 * where GCC -O3 made a scalar loop with a branch per element of them. */
void relu_forward(float *restrict out, const float *restrict inp, int N) {
  // inp (N) -> out (N)
  kernels_relu_forward(out, inp, (size_t)N);
}

void relu_backward(float *restrict dinp, const float *restrict dout, const float *restrict out,
                   int N) {
  // dout (N), out (N) -> dinp (N) +=
  /* out > 0 exactly where inp > 0, so the forward's output is all backward needs. */
  kernels_relu_backward(dinp, dout, out, (size_t)N, 1);
}

/* ---------------------------------------------------------------------------------------
 * Max-pool */

void maxpool_forward(float *out, int32_t *argmax, const float *inp, int B, int C, int H, int W,
                     int K, int stride) {
  // inp (B,C,H,W) -> out (B,C,OH,OW), argmax (B,C,OH,OW)
  if (K == 2 && stride == 2) { /* the only pool of the teacher CNN: kernels.h's unrolled loop */
    kernels_maxpool2_forward(out, argmax, inp, (size_t)B * C, H, W);
    return;
  }
  const int OH = conv2d_out_size(H, K, stride, 0), OW = conv2d_out_size(W, K, stride, 0);
  for (size_t bc = 0; bc < (size_t)B * C; bc++) {
    const float *plane = inp + bc * H * W;
    for (int oh = 0; oh < OH; oh++) {
      float *o = out + (bc * OH + oh) * OW;
      int32_t *a = argmax + (bc * OH + oh) * OW;
      for (int ow = 0; ow < OW; ow++) {
        int best = oh * stride * W + ow * stride;
        float max = plane[best];
        /* Row-major over the window, and strictly greater: the first maximum wins a tie.
         * Selects on locals rather than a branch (GCC emits cmov): which element wins is
         * data, and a mispredicted branch per element made this cost several times more. */
        for (int i = 0; i < K; i++) {
          for (int j = 0; j < K; j++) {
            const int at = (oh * stride + i) * W + ow * stride + j;
            const float v = plane[at];
            const int greater = v > max;
            max = greater ? v : max;
            best = greater ? at : best;
          }
        }
        o[ow] = max;
        a[ow] = best;
      }
    }
  }
}

void maxpool_backward(float *dinp, const float *dout, const int32_t *argmax, int B, int C, int H,
                      int W, int K, int stride) {
  // dout (B,C,OH,OW), argmax (B,C,OH,OW) -> dinp (B,C,H,W) +=
  const int OH = conv2d_out_size(H, K, stride, 0), OW = conv2d_out_size(W, K, stride, 0);
  const size_t P = (size_t)OH * OW;
  for (size_t bc = 0; bc < (size_t)B * C; bc++) {
    float *plane = dinp + bc * H * W;
    const float *d = dout + bc * P;
    const int32_t *a = argmax + bc * P;
    for (size_t i = 0; i < P; i++) plane[a[i]] += d[i];
  }
}

/* ---------------------------------------------------------------------------------------
 * Dropout */

/* The dropout stream, beside rng.h's: masks come from (seed, this stream, step, layer). */
#define NN_STREAM_DROPOUT 5

uint64_t nn_dropout_key(uint64_t seed, int64_t step, int layer) {
  uint64_t state = seed;
  state = rng_splitmix64(&state) ^ NN_STREAM_DROPOUT;
  state = rng_splitmix64(&state) ^ (uint64_t)step;
  state = rng_splitmix64(&state) ^ (uint64_t)layer;
  return rng_splitmix64(&state);
}

/* The draw for element i is splitmix64's output function on key + (i + 1)·φ: a
 * counter-based generator, one independent 64-bit draw per element with no state carried
 * between elements (or between steps); kernels.h computes it, in vectors. */
void dropout_forward(float *restrict out, float *restrict mask, const float *restrict inp, int N,
                     float p, uint64_t key) {
  // inp (N) -> out (N), mask (N)
  /* Dropped when the top 24 bits, as a fraction, are below p: P(drop) = ⌈p·2²⁴⌉ / 2²⁴. */
  const uint64_t threshold = (uint64_t)ceil((double)p * 16777216.0);
  kernels_dropout_forward(out, mask, inp, (size_t)N, key, threshold, 1.0f / (1.0f - p));
}

void dropout_backward(float *restrict dinp, const float *restrict dout,
                      const float *restrict mask, int N) {
  // dout (N), mask (N) -> dinp (N) +=
  const size_t n = (size_t)N;
  for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * mask[i];
}

/* ---------------------------------------------------------------------------------------
 * Residual block (a growing student's new depth) */

void block_forward(float *out, float *hidden, const float *inp, const float *w1, const float *b1,
                   const float *w2, const float *b2, int B, int D, int H) {
  // inp (B,D), w1 (H,D), b1 (H), w2 (D,H), b2 (D) -> hidden (B,H), out (B,D)
  linear_forward(hidden, inp, w1, b1, B, D, H);
  const size_t n = (size_t)B * H;
  for (size_t i = 0; i < n; i++) hidden[i] = hidden[i] > 0.0f ? hidden[i] : 0.0f;
  /* out = inp + b2 first, then the product added to it (beta = 1): with w2 = b2 = 0 every
   * term added is an exact zero and out == inp bit for bit. */
  for (int b = 0; b < B; b++) {
    const float *restrict x = inp + (size_t)b * D;
    float *restrict y = out + (size_t)b * D;
    for (int d = 0; d < D; d++) y[d] = x[d] + b2[d];
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, D, H, 1.0f, hidden, H, w2, H, 1.0f, out, D);
}

void block_backward(float *dinp, float *dw1, float *db1, float *dw2, float *db2, float *dhidden,
                    const float *dout, const float *inp, const float *hidden, const float *w1,
                    const float *w2, int B, int D, int H) {
  // dout (B,D) -> dinp (B,D) +=, dw1 (H,D) +=, db1 (H) +=, dw2 (D,H) +=, db2 (D) +=; dhidden (B,H)
  linear_backward(dhidden, dw2, db2, dout, hidden, w2, B, H, D);
  /* Through the relu in place: hidden > 0 exactly where its input was. */
  const size_t n = (size_t)B * H;
  for (size_t i = 0; i < n; i++) {
    float d = dhidden[i];
    dhidden[i] = hidden[i] > 0.0f ? d : 0.0f;
  }
  linear_backward(dinp, dw1, db1, dhidden, inp, w1, B, D, H);
  if (dinp) { /* the identity path */
    const size_t m = (size_t)B * D;
    for (size_t i = 0; i < m; i++) dinp[i] += dout[i];
  }
}

/* ---------------------------------------------------------------------------------------
 * Softmax cross-entropy */

float loss_crossentropy_forward(float *probs, int *predictions, const float *logits,
                                const int *labels, int B, int C) {
  // logits (B,C), labels (B) -> probs (B,C), predictions (B); returns the mean loss
  double total = 0.0;
  for (int b = 0; b < B; b++) {
    const float *row = logits + (size_t)b * C;
    float *p = probs + (size_t)b * C;
    int best = 0;
    for (int c = 1; c < C; c++)
      if (row[c] > row[best]) best = c;
    float max = row[best]; /* subtracted so that expf never overflows */
    double sum = 0.0;
    for (int c = 0; c < C; c++) {
      p[c] = expf(row[c] - max);
      sum += p[c];
    }
    float scale = (float)(1.0 / sum);
    for (int c = 0; c < C; c++) p[c] *= scale;
    /* −log softmax[label] = log Σ exp(row − max) − (row[label] − max), exact where the
     * probability itself would underflow to 0. */
    total += log(sum) - ((double)row[labels[b]] - max);
    if (predictions) predictions[b] = best;
  }
  return (float)(total / B);
}

void loss_crossentropy_backward(float *dlogits, const float *probs, const int *labels, float dloss,
                                int B, int C) {
  // probs (B,C), labels (B) -> dlogits (B,C) +=
  float scale = dloss / (float)B;
  for (int b = 0; b < B; b++) {
    const float *p = probs + (size_t)b * C;
    float *d = dlogits + (size_t)b * C;
    for (int c = 0; c < C; c++) d[c] += scale * p[c];
    d[labels[b]] -= scale;
  }
}

/* ---------------------------------------------------------------------------------------
 * Optimisers */

/* SGD over one range that takes `weight_decay` (0 for the biases). */
static void optim__sgd_range(float *restrict params, const float *restrict grads,
                             float *restrict velocity, size_t n, float lr, float momentum,
                             float weight_decay) {
  size_t i = 0;
  for (; i + NN_BLOCK <= n; i += NN_BLOCK) {
    for (size_t k = i; k < i + NN_BLOCK; k++) {
      velocity[k] = momentum * velocity[k] + (grads[k] + weight_decay * params[k]);
      params[k] -= lr * velocity[k];
    }
  }
  for (; i < n; i++) {
    velocity[i] = momentum * velocity[i] + (grads[i] + weight_decay * params[i]);
    params[i] -= lr * velocity[i];
  }
}

void optim_sgd_update(float *params, const float *grads, float *velocity, size_t n, size_t n_decayed,
                      float lr, float momentum, float weight_decay) {
  /* Two ranges instead of a test on the index per element: both vectorise. With a decay of 0
   * the bias range computes exactly momentum × v + g. */
  optim__sgd_range(params, grads, velocity, n_decayed, lr, momentum, weight_decay);
  optim__sgd_range(params + n_decayed, grads + n_decayed, velocity + n_decayed, n - n_decayed, lr,
                   momentum, 0.0f);
}

/* Adam over one range that takes `weight_decay` (0 for the biases). */
static void optim__adam_range(float *restrict params, const float *restrict grads,
                              float *restrict m, float *restrict v, size_t n,
                              float step_size, float inverse_correction2, float beta1, float beta2,
                              float eps, float weight_decay) {
  for (size_t i = 0; i < n; i++) {
    float g = grads[i] + weight_decay * params[i];
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
    params[i] -= step_size * m[i] / (sqrtf(v[i]) * inverse_correction2 + eps);
  }
}

void optim_adam_update(float *params, const float *grads, float *m, float *v, size_t n,
                       size_t n_decayed, float lr, float beta1, float beta2, float eps,
                       float weight_decay, int64_t t) {
  /* The bias corrections once per step, in double: 1 − β2ᵗ is tiny for small t. */
  float step_size = (float)(lr / (1.0 - pow(beta1, (double)t)));
  float inverse_correction2 = (float)(1.0 / sqrt(1.0 - pow(beta2, (double)t)));
  optim__adam_range(params, grads, m, v, n_decayed, step_size, inverse_correction2, beta1, beta2,
                    eps, weight_decay);
  optim__adam_range(params + n_decayed, grads + n_decayed, m + n_decayed, v + n_decayed,
                    n - n_decayed, step_size, inverse_correction2, beta1, beta2, eps, 0.0f);
}

/* ---------------------------------------------------------------------------------------
 * Model
 *
 * Built once for the fully grown network. Layout of the slabs:
 *   params/grads/each optimizer array: [config layers' weights | blocks' weights |
 *                                       config layers' biases | blocks' biases]
 *   activations (and dactivations):    one max_batch-sized output per layer and block (a
 *                                       block also keeps its hidden relu), except flatten
 *   workspace:                          thread 0's conv scratch (the largest conv's;
 *                                       conv2d.c) | each dropout's mask
 *   indices:                            each max-pool's argmax
 * A forward-only model (a teacher) has no grads, optimizer state or dactivations, its conv
 * scratch is one example's im2col and output, and its pools share one argmax buffer:
 * nothing reads them later. The outputs nn__plan_outputs marks transient keep their place
 * in the activations slab but are never written there.
 *
 * What runs is model->order: the config's layers, each followed by its active blocks.
 * nn__wire() recomputes it, with each node's input and whether it needs an input gradient,
 * whenever blocks join; forward and backward just walk it. */

static int nn__has_params(const nn_layer_t *layer) { return layer->n_weight + layer->n_bias > 0; }

/* How many nodes that run read the output at activation offset `at`. */
static int nn__readers(const nn_model_t *model, size_t at) {
  int readers = 0;
  for (int i = 0; i < model->n_order; i++) readers += model->layers[model->order[i]].input == at;
  return readers;
}

/* The layers a convolution at position i of the order runs in its own loop: a ReLU reading
 * its output, and a 2×2 pool reading that ReLU's; NULL where there is none. */
static void nn__conv_epilogue(const nn_model_t *model, int i, const nn_layer_t **relu,
                              const nn_layer_t **pool) {
  const nn_layer_t *conv = &model->layers[model->order[i]];
  *relu = *pool = NULL;
  if (i + 1 < model->n_order) {
    const nn_layer_t *next = &model->layers[model->order[i + 1]];
    if (next->kind == CFG_LAYER_RELU && next->input == conv->activation) *relu = next;
  }
  if (*relu && i + 2 < model->n_order) {
    const nn_layer_t *next = &model->layers[model->order[i + 2]];
    if (next->kind == CFG_LAYER_MAXPOOL && next->kernel == 2 && next->stride == 2 &&
        next->input == (*relu)->activation)
      *pool = next;
  }
}

/* Whether anything outside the model reads the output at activation offset `at` (a flatten
 * layer is a view: its offset is its input's). */
static int nn__read_outside(const nn_model_t *model, size_t at) {
  for (int l = 0; l < model->n_layers + model->n_blocks; l++)
    if (model->layers[l].output_read_outside && model->layers[l].activation == at) return 1;
  return 0;
}

/* Marks the outputs the forward need not store (nn_layer_t.output_transient): a
 * convolution's read only by its fused ReLU, and that ReLU's read only by its fused pool,
 * unless read outside. The backward needs neither: the pool's output decides the ReLU's mask
 * where the gradient flows (conv2d.c). Not storing them saves writing and reading back two
 * of the largest buffers of a CNN's batch (bench/README.md, fifth round). */
static void nn__plan_outputs(nn_model_t *model) {
  for (int l = 0; l < model->n_layers + model->n_blocks; l++) model->layers[l].output_transient = 0;
  for (int i = 0; i < model->n_order; i++) {
    nn_layer_t *conv = &model->layers[model->order[i]];
    if (conv->kind != CFG_LAYER_CONV2D) continue;
    const nn_layer_t *relu, *pool;
    nn__conv_epilogue(model, i, &relu, &pool);
    if (!relu) continue;
    conv->output_transient = nn__readers(model, conv->activation) == 1 &&
                             !nn__read_outside(model, conv->activation);
    if (pool && nn__readers(model, relu->activation) == 1 && !nn__read_outside(model, relu->activation))
      model->layers[relu - model->layers].output_transient = 1;
  }
}

static void nn__wire(nn_model_t *model) {
  size_t previous = NN_INPUT;
  int params_before = 0, n = 0;
  for (int l = 0; l < model->n_layers; l++) {
    for (int g = -1; g < model->n_blocks; g++) {
      int index = g < 0 ? l : model->n_layers + g;
      nn_layer_t *node = &model->layers[index];
      if (g >= 0 && !(node->active && node->after == l)) continue;
      node->input = previous;
      node->backprop_input = params_before;
      /* Flatten is a view of whatever feeds it, which changes when a block joins before it. */
      if (node->kind == CFG_LAYER_FLATTEN && previous != NN_INPUT) node->activation = previous;
      previous = node->activation;
      params_before |= nn__has_params(node);
      model->order[n++] = index;
    }
  }
  model->n_order = n;
  nn__plan_outputs(model);
}

/* The output shape of `spec` on `in`, as config validation computes it; -EINVAL when the
 * layer cannot take that input. */
static int nn__infer_shape(cfg_shape_t *shape, const cfg_layer_t *spec, const cfg_shape_t *in) {
  *shape = *in;
  switch (spec->kind) {
  case CFG_LAYER_LINEAR:
    if (spec->out < 1) return -EINVAL;
    *shape = (cfg_shape_t){spec->out, 1, 1, 0};
    return 0;
  case CFG_LAYER_FLATTEN:
    *shape = (cfg_shape_t){cfg_shape_size(in), 1, 1, 0};
    return 0;
  case CFG_LAYER_RELU:
    return 0;
  case CFG_LAYER_DROPOUT:
    return spec->p >= 0.0 && spec->p < 1.0 ? 0 : -EINVAL;
  case CFG_LAYER_CONV2D:
  case CFG_LAYER_MAXPOOL: {
    int conv = spec->kind == CFG_LAYER_CONV2D, pad = conv ? spec->padding : 0;
    if (!in->image || spec->kernel < 1 || spec->stride < 1 || pad < 0 || (conv && spec->out < 1))
      return -EINVAL;
    if (in->height + 2 * pad < spec->kernel || in->width + 2 * pad < spec->kernel) return -EINVAL;
    *shape = (cfg_shape_t){conv ? spec->out : in->channels,
                           conv2d_out_size(in->height, spec->kernel, spec->stride, pad),
                           conv2d_out_size(in->width, spec->kernel, spec->stride, pad), 1};
    return 0;
  }
  default:
    return -EINVAL;
  }
}

static size_t nn__max(size_t a, size_t b) { return a > b ? a : b; }

/* What nn__build counts while it lays the layers out: each slab's size in floats (ints for
 * the pools' indices) so far. */
typedef struct {
  size_t weights, biases, activations, scratch, panels, masks, indices;
} nn__sizes_t;

/* Layer l of the config: its shape from the one before (`*shape`, advanced), its name, and
 * its weights' and buffers' offsets in the slabs. */
static int nn__plan_layer(nn_model_t *model, const cfg_experiment_t *config, int l, cfg_shape_t *shape,
                          int max_batch, int forward_only, nn__sizes_t *sizes) {
  const size_t batch = (size_t)max_batch;
  const cfg_layer_t *spec = &config->layers[l];
  nn_layer_t *layer = &model->layers[l];
  layer->kind = spec->kind;
  layer->in_shape = *shape;
  if (nn__infer_shape(&layer->shape, spec, shape) != 0) return -EINVAL;
  /* Validation filled spec->shape the same way; a hand-built config may leave it zero. */
  if (spec->shape.channels != 0 && memcmp(&spec->shape, &layer->shape, sizeof *shape) != 0) return -EINVAL;
  layer->in = cfg_shape_size(&layer->in_shape);
  layer->out = cfg_shape_size(&layer->shape);
  layer->kernel = spec->kernel;
  layer->stride = spec->stride;
  layer->padding = spec->kind == CFG_LAYER_CONV2D ? spec->padding : 0;
  layer->p = (float)spec->p;
  cfg_layer_display_name(config, l, layer->name, sizeof layer->name);
  const size_t out = batch * (size_t)layer->out;
  /* Kernels count a batch's elements in int (as BLAS does). */
  if (out > INT_MAX || batch * (size_t)layer->in > INT_MAX) return -EINVAL;
  switch (spec->kind) {
  case CFG_LAYER_LINEAR:
    layer->n_weight = (size_t)layer->in * (size_t)layer->out;
    layer->n_bias = (size_t)layer->out;
    /* A training model's layers take turns in one buffer; an inference model keeps each
     * layer's Wᵀ (nn_model_pack_weights). */
    layer->panels = forward_only ? sizes->panels : 0;
    if (forward_only)
      sizes->panels += cfg_panel_floats((size_t)layer->in, (size_t)layer->out);
    else
      sizes->panels = nn__max(sizes->panels, cfg_linear_panel_floats((size_t)layer->in, (size_t)layer->out, batch));
    break;
  case CFG_LAYER_CONV2D: {
    const size_t ckk = (size_t)layer->in_shape.channels * spec->kernel * spec->kernel;
    layer->n_weight = (size_t)spec->out * ckk;
    layer->n_bias = (size_t)spec->out;
    /* Each thread's scratch (conv2d.c): an example's im2col, and the backward's
     * buffers when training. */
    sizes->scratch = nn__max(sizes->scratch,
                             conv2d_scratch_floats(layer->in_shape.channels, layer->in_shape.height,
                                                   layer->in_shape.width, spec->out, spec->kernel,
                                                   spec->stride, spec->padding, !forward_only));
    break;
  }
  case CFG_LAYER_MAXPOOL:
    layer->argmax = forward_only ? 0 : sizes->indices;
    sizes->indices = forward_only ? nn__max(sizes->indices, out) : sizes->indices + out;
    break;
  case CFG_LAYER_DROPOUT:
    if (!forward_only) {
      layer->mask = sizes->masks;
      sizes->masks += out;
    }
    break;
  default:
    break;
  }
  layer->weight = sizes->weights;
  sizes->weights += layer->n_weight;
  sizes->biases += layer->n_bias;
  /* Flatten is a view of its input (nn__wire), unless its input is the data itself. */
  if (spec->kind != CFG_LAYER_FLATTEN || l == 0) {
    layer->activation = sizes->activations;
    sizes->activations += out;
  }
  *shape = layer->shape;
  return 0;
}

/* Grow block g, inactive until its epoch: a residual block after the layer it names. */
static int nn__plan_block(nn_model_t *model, const cfg_experiment_t *config, int g, int max_batch,
                          nn__sizes_t *sizes) {
  const size_t batch = (size_t)max_batch;
  const cfg_grow_t *spec = &config->grow[g];
  nn_layer_t *block = &model->layers[config->n_layers + g];
  /* Validation resolved the name into after_layer; a hand-built config may give either. */
  int after = spec->after[0] ? cfg_layer_index(config, spec->after) : spec->after_layer;
  if (after < 0 || after >= config->n_layers - 1 || model->layers[after].shape.image) return -EINVAL;
  const int D = model->layers[after].out, H = spec->hidden > 0 ? spec->hidden : D;
  if (batch * (size_t)H > INT_MAX) return -EINVAL;
  block->kind = NN_GROW_BLOCK;
  if (spec->name[0])
    snprintf(block->name, sizeof block->name, "%s", spec->name);
  else
    snprintf(block->name, sizeof block->name, "grow%d", g + 1);
  block->in_shape = block->shape = model->layers[after].shape;
  block->in = block->out = D;
  block->hidden = H;
  block->grow_epoch = spec->epoch;
  block->after = after;
  block->weight = sizes->weights;
  block->n_weight = 2 * (size_t)H * (size_t)D;
  block->n_bias = (size_t)H + (size_t)D;
  sizes->weights += block->n_weight;
  sizes->biases += block->n_bias;
  block->activation = sizes->activations;
  sizes->activations += batch * (size_t)D;
  block->hidden_activation = sizes->activations;
  sizes->activations += batch * (size_t)H;
  return 0;
}

/* The slabs, once, at the sizes the model now records. 0 or -ENOMEM (what was allocated
 * stays for nn_model_free). */
static int nn__allocate(nn_model_t *model) {
  /* calloc(n + 1) also covers an empty slab (a model without parameters, pools or convs). */
  model->params = calloc(model->n_params + 1, sizeof(float));
  model->activations = calloc((model->forward_only ? 1 : 2) * model->n_activations + 1, sizeof(float));
  model->workspace = calloc(model->n_workspace + 1, sizeof(float));
  model->indices = calloc(model->n_indices + 1, sizeof(int32_t));
  if (!model->params || !model->activations || !model->workspace || !model->indices) return -ENOMEM;
  if (!model->forward_only) {
    model->grads = calloc(model->n_params + 1, sizeof(float));
    model->optim_state = calloc(model->n_optim_state + 1, sizeof(float));
    if (!model->grads || !model->optim_state) return -ENOMEM;
    model->dactivations = model->activations + model->n_activations;
  }
  return 0;
}

static int nn__build(nn_model_t *model, const cfg_experiment_t *config, int max_batch,
                     int forward_only) {
  memset(model, 0, sizeof *model);
  if (config->n_layers < 1 || config->n_layers > CFG_MAX_LAYERS || config->n_grow < 0 ||
      config->n_grow > CFG_MAX_GROW || max_batch < 1)
    return -EINVAL;

  /* First the layers, then the grow blocks (all of them, inactive): shapes, names, weight
   * offsets and every buffer's offset. Biases are placed after every weight in a second
   * pass, once the weights' total is known. */
  cfg_shape_t shape = cfg_input_shape(config);
  model->inputs = cfg_inputs(config);
  model->classes = cfg_classes(config);
  nn__sizes_t sizes = {0};
  for (int l = 0; l < config->n_layers; l++)
    if (nn__plan_layer(model, config, l, &shape, max_batch, forward_only, &sizes) != 0) return -EINVAL;
  if (cfg_shape_size(&shape) != model->classes) return -EINVAL;
  model->n_layer_weights = sizes.weights;
  model->n_layer_biases = sizes.biases;
  for (int g = 0; g < config->n_grow; g++)
    if (nn__plan_block(model, config, g, max_batch, &sizes) != 0) return -EINVAL;

  size_t bias_offset = sizes.weights;
  for (int l = 0; l < config->n_layers + config->n_grow; l++) {
    nn_layer_t *layer = &model->layers[l];
    if (layer->n_bias) {
      layer->bias = bias_offset;
      bias_offset += layer->n_bias;
    }
  }

  model->n_layers = config->n_layers;
  model->n_blocks = config->n_grow;
  model->max_batch = max_batch;
  model->forward_only = forward_only;
  model->seed = config->seed;
  model->n_params = sizes.weights + sizes.biases;
  model->n_decayed = sizes.weights;
  model->n_activations = sizes.activations;
  model->n_scratch = sizes.scratch;
  model->n_panels = sizes.panels;
  const size_t panel_area = sizes.panels ? 15 + sizes.panels : 0; /* from a 64-byte line */
  model->n_workspace = sizes.scratch + panel_area + sizes.masks;
  for (int l = 0; l < config->n_layers; l++)
    if (model->layers[l].kind == CFG_LAYER_DROPOUT) model->layers[l].mask += sizes.scratch + panel_area;
  model->n_indices = sizes.indices;
  model->optimizer.kind = config->optimizer.kind;
  model->optimizer.momentum = (float)config->optimizer.momentum;
  model->optimizer.weight_decay = (float)config->optimizer.weight_decay;
  model->optimizer.beta1 = (float)config->optimizer.beta1;
  model->optimizer.beta2 = (float)config->optimizer.beta2;
  model->optimizer.eps = (float)config->optimizer.eps;
  if (!forward_only)
    model->n_optim_state = config->optimizer.kind == CFG_OPTIMIZER_ADAM ? 2 * model->n_params
                                                                         : model->n_params;

  char error[128];
  if (nn__allocate(model) != 0) goto fail;
  if (model->n_panels) {
    const uintptr_t at = (uintptr_t)(model->workspace + model->n_scratch);
    model->panels = (float *)((at + 63) & ~(uintptr_t)63);
  }
  model->dense = nn_dense_default();
  /* The config's feature losses read their student layers' outputs and add into their
   * gradients; an inference model's own config names layers of its own training, which
   * nobody reads now. */
  for (int f = 0; f < config->n_features && !forward_only; f++)
    if (config->features[f].student_layer >= 0 && config->features[f].student_layer < config->n_layers)
      model->layers[config->features[f].student_layer].output_read_outside = 1;
  nn__wire(model);
  nn_init_params(model, config->seed);
  if (nn_model_set_threads(model, 1, error, sizeof error) != 0) goto fail;
  return 0;

fail:
  nn_model_free(model);
  return -ENOMEM;
}

int nn_model_create(nn_model_t *model, const cfg_experiment_t *config, int max_batch) {
  return nn__build(model, config, max_batch, 0);
}

int nn_model_create_inference(nn_model_t *model, const cfg_experiment_t *config, int max_batch) {
  return nn__build(model, config, max_batch, 1);
}

static void nn__free_threads(nn_model_t *model) {
  thread_pool_free(model->pool);
  free(model->thread_scratch);
  free(model->thread_buffers);
  model->pool = NULL;
  model->thread_scratch = NULL;
  model->thread_buffers = NULL;
  model->threads = 0;
}

static int nn__start_threads(nn_model_t *model, int threads, char *error, size_t error_size) {
  const size_t per_thread = model->n_scratch;
  model->thread_scratch = calloc((size_t)threads, sizeof *model->thread_scratch);
  model->thread_buffers = calloc((size_t)(threads - 1) * per_thread + 1, sizeof(float));
  if (!model->thread_scratch || !model->thread_buffers) {
    snprintf(error, error_size, "threads: out of memory for %d threads' buffers", threads);
    return -ENOMEM;
  }
  model->thread_scratch[0] = model->workspace;
  for (int t = 1; t < threads; t++)
    model->thread_scratch[t] = model->thread_buffers + (size_t)(t - 1) * per_thread;
  int rc = threads > 1 ? thread_pool_create(&model->pool, threads, error, error_size) : 0;
  if (rc == 0) model->threads = threads;
  return rc;
}

int nn_model_set_threads(nn_model_t *model, int threads, char *error, size_t error_size) {
  if (threads < 1 || threads > NN_MAX_THREADS) {
    snprintf(error, error_size, "threads: expected 1–%d, not %d", NN_MAX_THREADS, threads);
    return -EINVAL;
  }
  nn__free_threads(model);
  int rc = nn__start_threads(model, threads, error, error_size);
  if (rc != 0) { /* back to one thread: a few bytes, and the error above stands */
    char ignored[160];
    nn__free_threads(model);
    nn__start_threads(model, 1, ignored, sizeof ignored);
  }
  return rc;
}

void nn_model_free(nn_model_t *model) {
  nn__free_threads(model);
  free(model->params);
  free(model->grads);
  free(model->optim_state);
  free(model->activations);
  free(model->workspace);
  free(model->indices);
  memset(model, 0, sizeof *model);
}

void nn_init_params(nn_model_t *model, uint64_t seed) {
  /* The config's layers draw from one stream in order; each block from its own, so adding a
   * block to a config changes no other layer's initial weights. */
  rng_t rng;
  rng_seed(&rng, seed, RNG_STREAM_INIT, 0);
  for (int l = 0; l < model->n_layers + model->n_blocks; l++) {
    nn_layer_t *layer = &model->layers[l];
    size_t n_random = layer->n_weight, fan_in = (size_t)layer->in;
    if (layer->kind == CFG_LAYER_CONV2D)
      fan_in = (size_t)layer->in_shape.channels * layer->kernel * layer->kernel;
    if (layer->kind == NN_GROW_BLOCK) {
      rng_seed(&rng, seed, RNG_STREAM_INIT, (uint64_t)(l - model->n_layers) + 1);
      n_random = (size_t)layer->hidden * layer->in; /* W1; W2 after it stays zero */
      layer->t = 0;
    }
    /* Kaiming uniform with the ReLU gain √2: U(−b, b), b = √2 · √(3 / fan_in). */
    float bound = (float)sqrt(6.0 / (double)fan_in);
    float *weight = model->params + layer->weight;
    for (size_t i = 0; i < n_random; i++) weight[i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
    if (layer->n_weight > n_random)
      memset(weight + n_random, 0, (layer->n_weight - n_random) * sizeof(float));
    if (layer->n_bias) memset(model->params + layer->bias, 0, layer->n_bias * sizeof(float));
  }
  if (model->optim_state) memset(model->optim_state, 0, model->n_optim_state * sizeof(float));
  model->optimizer.t = 0;
}

int nn_model_grow(nn_model_t *model, int epoch) {
  int joined = 0;
  for (int g = 0; g < model->n_blocks; g++) {
    nn_layer_t *block = &model->layers[model->n_layers + g];
    if (!block->active && block->grow_epoch <= epoch) {
      block->active = 1;
      joined++;
    }
  }
  if (joined) nn__wire(model);
  return joined;
}

/* Whether the layer at position i runs inside an earlier convolution's loop. */
static int nn__in_conv_epilogue(const nn_model_t *model, int i) {
  const nn_layer_t *layer = &model->layers[model->order[i]], *relu, *pool;
  for (int back = 1; back <= 2 && i - back >= 0; back++) {
    if (model->layers[model->order[i - back]].kind != CFG_LAYER_CONV2D) continue;
    nn__conv_epilogue(model, i - back, &relu, &pool);
    if (relu == layer || pool == layer) return 1;
  }
  return 0;
}

const float *nn_forward(nn_model_t *model, const float *inputs, int B, int training) {
  if (model->forward_only) training = 0;
  float *const act = model->activations;
  const float *const params = model->params;
  for (int i = 0; i < model->n_order; i++) {
    const int l = model->order[i];
    const nn_layer_t *layer = &model->layers[l];
    const float *x = layer->input == NN_INPUT ? inputs : act + layer->input;
    float *out = act + layer->activation;
    const float *weight = params + layer->weight, *bias = params + layer->bias;
    const cfg_shape_t *in = &layer->in_shape;
    switch (layer->kind) {
    case CFG_LAYER_LINEAR:
      linear_forward_model(model, layer, out, x, weight, bias, B, layer->in, layer->out);
      break;
    case CFG_LAYER_RELU:
      relu_forward(out, x, B * layer->in);
      break;
    case CFG_LAYER_CONV2D: {
      /* A ReLU reading this output, and a 2×2 pool reading the ReLU's, run inside the
       * convolution's per-example loop; each output is written to its own buffer unless
       * nn__plan_outputs marked it transient. */
      const nn_layer_t *relu, *pool;
      nn__conv_epilogue(model, i, &relu, &pool);
      conv2d_forward_model(model, layer, out, x, B, relu, pool);
      i += (relu != NULL) + (pool != NULL);
      break;
    }
    case CFG_LAYER_MAXPOOL:
      maxpool_forward(out, model->indices + layer->argmax, x, B, in->channels, in->height,
                      in->width, layer->kernel, layer->stride);
      break;
    case CFG_LAYER_FLATTEN:
      if (out != x) memcpy(out, x, (size_t)B * layer->in * sizeof *out); /* the first layer */
      break;
    case CFG_LAYER_DROPOUT:
      if (training)
        dropout_forward(out, model->workspace + layer->mask, x, B * layer->in, layer->p,
                        nn_dropout_key(model->seed, model->optimizer.t, l));
      else
        memcpy(out, x, (size_t)B * layer->in * sizeof *out);
      break;
    case NN_GROW_BLOCK: {
      const size_t w2 = (size_t)layer->hidden * layer->in, b2 = (size_t)layer->hidden;
      block_forward(out, act + layer->hidden_activation, x, weight, bias, weight + w2, bias + b2, B,
                    layer->in, layer->hidden);
      break;
    }
    default: /* nn__build refuses the kinds it cannot run */
      break;
    }
  }
  model->training = training;
  return act + model->layers[model->n_layers - 1].activation;
}

/* Marks the output gradients only a convolution's backward epilogue uses (the
 * convolution's when its ReLU is fused and is its only reader; the ReLU's when the pool is
 * fused and is its only reader) and returns them as [start, end) offsets, in order. The
 * epilogue makes them in scratch, so the slab keeps whatever it held until a loss asks for
 * one (nn_layer_doutput zeroes it then, and from then on it is stored). */
static int nn__stale_gradients(nn_model_t *model, size_t start[], size_t end[]) {
  int n = 0;
  for (int l = 0; l < model->n_layers + model->n_blocks; l++)
    model->layers[l].output_gradient_stale = 0;
  for (int i = 0; i < model->n_order; i++) {
    nn_layer_t *conv = &model->layers[model->order[i]];
    if (conv->kind != CFG_LAYER_CONV2D) continue;
    const nn_layer_t *relu, *pool;
    nn__conv_epilogue(model, i, &relu, &pool);
    nn_layer_t *const stale[2] = {
        relu && nn__readers(model, conv->activation) == 1 ? conv : NULL,
        pool && nn__readers(model, relu->activation) == 1 ? (nn_layer_t *)relu : NULL};
    for (int k = 0; k < 2; k++) {
      if (!stale[k]) continue;
      stale[k]->output_gradient_stale = 1;
      const size_t s = stale[k]->activation, e = s + (size_t)model->max_batch * stale[k]->out;
      int at = n++;
      for (; at > 0 && start[at - 1] > s; at--) { /* insertion: order by offset */
        start[at] = start[at - 1];
        end[at] = end[at - 1];
      }
      start[at] = s;
      end[at] = e;
    }
  }
  return n;
}

/* Zeroing every activation gradient cost 2.6-4.7% of a CNN step (bench/README.md), most of
 * it the convolutions' and their ReLUs' outputs, which their backward epilogue now makes per
 * example in its thread's scratch and never stores. */
void nn_zero_grad(nn_model_t *model) {
  if (model->forward_only) return;
  memset(model->grads, 0, model->n_params * sizeof(float));
  size_t start[2 * NN_MAX_NODES], end[2 * NN_MAX_NODES];
  const int n = nn__stale_gradients(model, start, end);
  size_t from = 0;
  for (int k = 0; k <= n; k++) {
    const size_t to = k < n ? start[k] : model->n_activations;
    if (to > from) memset(model->dactivations + from, 0, (to - from) * sizeof(float));
    if (k < n && end[k] > from) from = end[k];
  }
}

float *nn_dlogits(nn_model_t *model) { return nn_layer_doutput(model, model->n_layers - 1); }

void nn_backward(nn_model_t *model, const float *inputs, int B) {
  if (model->forward_only) return;
  const float *const act = model->activations, *const params = model->params;
  float *const dact = model->dactivations, *const grads = model->grads;
  /* Last to first. Each node reads the gradient accumulated so far at its output — from the
   * nodes after it and from anything a loss added there — so gradients injected into a
   * hidden layer's output before this call flow back like the logits' own. */
  for (int i = model->n_order - 1; i >= 0; i--) {
    const int l = model->order[i];
    const nn_layer_t *layer = &model->layers[l];
    const float *x = layer->input == NN_INPUT ? inputs : act + layer->input;
    /* No input gradient where nothing before has parameters (e.g. the data). */
    float *dx = layer->backprop_input ? dact + layer->input : NULL;
    const float *dout = dact + layer->activation;
    const float *weight = params + layer->weight;
    float *dweight = grads + layer->weight, *dbias = grads + layer->bias;
    const cfg_shape_t *in = &layer->in_shape;
    switch (layer->kind) {
    case CFG_LAYER_LINEAR:
      linear_backward_model(model, dx, dweight, dbias, dout, x, weight, B, layer->in, layer->out);
      break;
    case CFG_LAYER_RELU:
      if (dx && !nn__in_conv_epilogue(model, i))
        relu_backward(dx, dout, act + layer->activation, B * layer->in);
      break;
    case CFG_LAYER_CONV2D: {
      const nn_layer_t *relu, *pool;
      nn__conv_epilogue(model, i, &relu, &pool);
      conv2d_backward_model(model, layer, dx, dact + layer->activation, x, B, relu, pool);
      break;
    }
    case CFG_LAYER_MAXPOOL:
      if (dx && !nn__in_conv_epilogue(model, i))
        maxpool_backward(dx, dout, model->indices + layer->argmax, B, in->channels, in->height,
                         in->width, layer->kernel, layer->stride);
      break;
    case CFG_LAYER_FLATTEN:
      break; /* a view: its output gradient is its input's, already in place */
    case CFG_LAYER_DROPOUT:
      if (!dx) break;
      if (model->training) {
        dropout_backward(dx, dout, model->workspace + layer->mask, B * layer->in);
      } else { /* after an evaluation forward dropout was the identity */
        for (size_t k = 0; k < (size_t)B * layer->in; k++) dx[k] += dout[k];
      }
      break;
    case NN_GROW_BLOCK: {
      const size_t w2 = (size_t)layer->hidden * layer->in, b2 = (size_t)layer->hidden;
      block_backward(dx, dweight, dbias, dweight + w2, dbias + b2, dact + layer->hidden_activation,
                     dout, x, act + layer->hidden_activation, weight, weight + w2, B, layer->in,
                     layer->hidden);
      break;
    }
    default:
      break;
    }
  }
}

/* One update of the weights [weight, weight + n_weight) (decayed) and of the biases
 * [bias, bias + n_bias), at step t. */
/* One optimizer update over params [start, start + n), the first `decayed` with weight decay,
 * split across the model's pool in blocks of 4,096 floats: every element's update is its
 * own, so the split changes no bit. Serial, it was the largest part of a CNN step on 2
 * threads that one thread did alone (1.3% of that thread's time, 421k parameters). */
typedef struct {
  nn_model_t *model;
  size_t start, n, decayed;
  float lr;
  int64_t t;
} nn__update_job_t;

enum { NN_UPDATE_BLOCK = 4096 };

static void nn__update_task(void *context, int thread, int threads) {
  const nn__update_job_t *job = context;
  const nn_model_t *model = job->model;
  const nn_optimizer_t *o = &model->optimizer;
  int first_block, end_block;
  thread_pool_share((int)((job->n + NN_UPDATE_BLOCK - 1) / NN_UPDATE_BLOCK), thread, threads, &first_block,
                    &end_block);
  const size_t first = (size_t)first_block * NN_UPDATE_BLOCK;
  const size_t end = (size_t)end_block * NN_UPDATE_BLOCK < job->n ? (size_t)end_block * NN_UPDATE_BLOCK : job->n;
  if (end <= first) return;
  const size_t n = end - first, decayed = job->decayed > first ? job->decayed - first : 0;
  const size_t at = job->start + first;
  float *p = model->params + at, *s = model->optim_state + at;
  const float *g = model->grads + at;
  switch (o->kind) {
  case CFG_OPTIMIZER_SGD:
    optim_sgd_update(p, g, s, n, decayed < n ? decayed : n, job->lr, o->momentum, o->weight_decay);
    break;
  case CFG_OPTIMIZER_ADAM:
    optim_adam_update(p, g, s, s + model->n_params, n, decayed < n ? decayed : n, job->lr, o->beta1, o->beta2,
                      o->eps, o->weight_decay, job->t);
    break;
  }
}

static void nn__update(nn_model_t *model, size_t weight, size_t n_weight, size_t bias,
                       size_t n_bias, float lr, int64_t t) {
  /* Contiguous ranges (a model without blocks) go in one run. */
  size_t ranges = weight + n_weight == bias ? 1 : 2;
  for (size_t r = 0; r < ranges; r++) {
    nn__update_job_t job = {.model = model, .lr = lr, .t = t};
    job.start = r == 0 ? weight : bias;
    job.n = r == 0 ? (ranges == 1 ? n_weight + n_bias : n_weight) : n_bias;
    job.decayed = r == 0 ? n_weight : 0;
    if (model->threads > 1 && job.n >= 2 * NN_UPDATE_BLOCK)
      thread_pool_run(model->pool, nn__update_task, &job);
    else
      nn__update_task(&job, 0, 1);
  }
}

void nn_optimizer_step(nn_model_t *model, float lr) {
  if (model->forward_only) return;
  model->optimizer.t++;
  nn__update(model, 0, model->n_layer_weights, model->n_decayed, model->n_layer_biases, lr,
             model->optimizer.t);
  /* Each active block on its own step count; inactive ones are left exactly as they are. */
  for (int g = 0; g < model->n_blocks; g++) {
    nn_layer_t *block = &model->layers[model->n_layers + g];
    if (!block->active) continue;
    block->t++;
    nn__update(model, block->weight, block->n_weight, block->bias, block->n_bias, lr, block->t);
  }
}

const float *nn_layer_output(const nn_model_t *model, int layer) {
  if (model->layers[layer].output_transient) return NULL;
  return model->activations + model->layers[layer].activation;
}

float *nn_layer_doutput(nn_model_t *model, int layer) {
  if (!model->dactivations || model->layers[layer].output_transient) return NULL;
  const size_t at = model->layers[layer].activation;
  /* A loss adding into a gradient nn_zero_grad left to the epilogue: zero it now. */
  for (int i = 0; i < model->n_order; i++) {
    nn_layer_t *node = &model->layers[model->order[i]];
    if (!node->output_gradient_stale || node->activation != at) continue;
    memset(model->dactivations + at, 0, (size_t)model->max_batch * node->out * sizeof(float));
    node->output_gradient_stale = 0;
  }
  return model->dactivations + at;
}

void nn_model_keep_output(nn_model_t *model, int layer) {
  model->layers[layer].output_read_outside = 1;
  nn__plan_outputs(model);
}

cfg_shape_t nn_layer_shape(const nn_model_t *model, int layer) { return model->layers[layer].shape; }

size_t nn_layer_param_count(const nn_layer_t *layer) { return layer->n_weight + layer->n_bias; }

int nn_layer_active(const nn_layer_t *layer) { return layer->kind != NN_GROW_BLOCK || layer->active; }

int nn_model_has_convolution(const nn_model_t *model) {
  for (int i = 0; i < model->n_order; i++)
    if (model->layers[model->order[i]].kind == CFG_LAYER_CONV2D) return 1;
  return 0;
}

size_t nn_model_active_params(const nn_model_t *model) {
  size_t total = 0;
  for (int l = 0; l < model->n_layers + model->n_blocks; l++)
    if (nn_layer_active(&model->layers[l])) total += nn_layer_param_count(&model->layers[l]);
  return total;
}

double nn_layer_grad_norm(const nn_model_t *model, int layer) {
  const nn_layer_t *l = &model->layers[layer];
  if (!model->grads) return 0.0;
  double sum = 0.0;
  const float *g = model->grads + l->weight;
  for (size_t i = 0; i < l->n_weight; i++) sum += (double)g[i] * g[i];
  g = model->grads + l->bias;
  for (size_t i = 0; i < l->n_bias; i++) sum += (double)g[i] * g[i];
  return sqrt(sum);
}
