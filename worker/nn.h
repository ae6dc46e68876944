/* nn.h — the network: layer kernels (forward/backward pairs), the cross-entropy loss, the
 * optimisers, and the model built from the config. Kernels work on caller-owned row-major
 * float buffers (images NCHW, batch first), never allocate, log or exit, and every backward
 * ACCUMULATES into its gradients (the driver zeroes: nn_zero_grad). The model owns its
 * allocations, sized once at creation for the fully grown network: parameters, gradients,
 * optimizer state, activations with their gradients, and a workspace (the convolutions'
 * per-thread scratch, dropout masks, max-pool argmaxes). Nothing is allocated per step. The
 * convolution's code is in conv2d.c. */
#ifndef MAPSAGE_NN_H
#define MAPSAGE_NN_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* ---------------------------------------------------------------------------------------
 * Kernels. Distinct buffers never overlap (restrict marks where the compiler relies on it). */

/* GCC at -O2 vectorises a loop only when vector code can replace it entirely: a trip count
 * it knows and pointers that cannot overlap. The element-wise kernels (nn.c, linear.c)
 * therefore walk blocks of NN_BLOCK floats (then a scalar tail) through restrict pointers,
 * which makes them 2–3× faster than the plain loop on the same build flags. */
#define NN_BLOCK 16

/* inp (B,IN), weight (OUT,IN), bias (OUT) or NULL -> out (B,OUT) = inp · weightᵀ + bias.
 * An image-shaped input (B,C,H,W) is the same memory as (B, C·H·W): pass IN = C·H·W. */
void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int B,
                    int IN, int OUT);
/* dout (B,OUT) -> dinp (B,IN) += dout · weight, dweight (OUT,IN) += doutᵀ · inp,
 * dbias (OUT) += Σ_b dout. dinp may be NULL (the first layer: nobody needs it, and skipping
 * it saves the largest product of the step); dbias may be NULL when there is no bias. */
void linear_backward(float *dinp, float *dweight, float *restrict dbias,
                     const float *restrict dout, const float *inp, const float *weight, int B,
                     int IN, int OUT);
/* The same two on kernels.h's packed GEMM (nn_dense_t), on the calling thread: `panels`
 * holds cfg_linear_panel_floats(IN, OUT, B) floats (the operands packed; overwritten). */
void linear_forward_packed(float *panels, float *out, const float *inp, const float *weight,
                           const float *bias, int B, int IN, int OUT);
void linear_backward_packed(float *panels, float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int B, int IN, int OUT);

/* inp (N) -> out (N) = max(0, inp). */
void relu_forward(float *restrict out, const float *restrict inp, int N);
/* dout (N), out (N) = the forward's output -> dinp (N) += dout where out > 0. */
void relu_backward(float *restrict dinp, const float *restrict dout, const float *restrict out,
                   int N);

/* Output side of a convolution or pooling window sliding over `size` inputs. */
static inline int conv2d_out_size(int size, int K, int stride, int pad) {
  return (size + 2 * pad - K) / stride + 1;
}

/* inp (B,C,H,W), weight (OC, C·K·K), bias (OC) or NULL -> out (B,OC,OH,OW), with
 * OH = conv2d_out_size(H, K, stride, pad) and likewise OW (zero padding, cross-correlation
 * as in PyTorch). As im2col + a product per example, the im2col in scratch, which holds
 * conv2d_scratch_floats(…, backward = 0) floats. */
void conv2d_forward(float *out, float *scratch, const float *inp, const float *weight,
                    const float *bias, int B, int C, int H, int W, int OC, int K, int stride,
                    int pad);
/* Floats of scratch a convolution needs: one example's im2col (its dcol in the backward) and,
 * for the backward, the weight and bias gradients' sums and one example's output gradient,
 * as it is and transposed. */
size_t conv2d_scratch_floats(int C, int H, int W, int OC, int K, int stride, int pad, int backward);
/* dout (B,OC,OH,OW), inp (B,C,H,W) as the forward had it -> dweight (OC, C·K·K) +=,
 * dbias (OC) += (may be NULL), dinp (B,C,H,W) += (may be NULL: the first layer). scratch
 * holds conv2d_scratch_floats(…, backward = 1) floats. The im2col is made again per
 * example (cheaper than reading the forward's back from memory, see nn.c), so the forward
 * leaves nothing behind but its output. */
void conv2d_backward(float *dinp, float *dweight, float *dbias, float *scratch, const float *dout,
                     const float *inp, const float *weight, int B, int C, int H, int W, int OC,
                     int K, int stride, int pad);

/* inp (B,C,H,W) -> out (B,C,OH,OW), the max of each K×K window (no padding), and argmax
 * (B,C,OH,OW): where in its H×W plane each maximum came from. On ties the first in row-major
 * order wins, so the backward is deterministic. */
void maxpool_forward(float *out, int32_t *argmax, const float *inp, int B, int C, int H, int W,
                     int K, int stride);
/* dout (B,C,OH,OW), argmax from the forward -> dinp (B,C,H,W) += dout at each window's max
 * (overlapping windows add up). */
void maxpool_backward(float *dinp, const float *dout, const int32_t *argmax, int B, int C, int H,
                      int W, int K, int stride);

/* Inverted dropout. The mask is a pure function of (key, element index): element i is
 * dropped when a counter-based hash of (key, i) falls below p, kept and scaled by 1/(1−p)
 * otherwise, so a resumed run redraws exactly the masks it would have drawn. key comes
 * from nn_dropout_key(seed, step, layer).
 * inp (N) -> out (N) = inp × mask, mask (N) ∈ {0, 1/(1−p)} (kept for the backward). */
void dropout_forward(float *restrict out, float *restrict mask, const float *restrict inp, int N,
                     float p, uint64_t key);
/* dout (N), mask (N) -> dinp (N) += dout × mask. */
void dropout_backward(float *restrict dinp, const float *restrict dout,
                      const float *restrict mask, int N);
uint64_t nn_dropout_key(uint64_t seed, int64_t step, int layer);

/* A residual block of a growing student: inp (B,D), w1 (H,D), b1 (H), w2 (D,H), b2 (D) ->
 * hidden (B,H) = relu(inp · w1ᵀ + b1), out (B,D) = inp + hidden · w2ᵀ + b2. With w2 = b2 = 0
 * out is inp bit for bit, which is what lets a block join without changing the function. */
void block_forward(float *out, float *hidden, const float *inp, const float *w1, const float *b1,
                   const float *w2, const float *b2, int B, int D, int H);
/* dout (B,D) -> dinp (B,D) += (may be NULL), dw1, db1, dw2, db2 +=; dhidden (B,H) is the
 * gradient w.r.t. hidden: accumulated into, then masked by relu in place. */
void block_backward(float *dinp, float *dw1, float *db1, float *dw2, float *db2, float *dhidden,
                    const float *dout, const float *inp, const float *hidden, const float *w1,
                    const float *w2, int B, int D, int H);

/* logits (B,C), labels (B) -> probs (B,C) = softmax(logits), predictions (B) = argmax
 * (lowest index on ties; may be NULL); returns the mean over the batch of −log probs[label]. */
float loss_crossentropy_forward(float *probs, int *predictions, const float *logits,
                                const int *labels, int B, int C);
/* The gradient of dloss × (the mean loss above) w.r.t. the logits:
 * dlogits (B,C) += dloss / B × (probs − onehot(labels)). dloss is the loss's weight in the
 * total, so several losses can accumulate into the same dlogits. */
void loss_crossentropy_backward(float *dlogits, const float *probs, const int *labels, float dloss,
                                int B, int C);

/* One SGD step with momentum over n parameters (PyTorch's semantics: no dampening, not
 * Nesterov): g = grad + weight_decay × param for the first n_decayed entries (weights; the
 * biases after them take no decay), velocity = momentum × velocity + g, param −= lr × velocity. */
void optim_sgd_update(float *params, const float *grads, float *velocity, size_t n, size_t n_decayed,
                      float lr, float momentum, float weight_decay);
/* One Adam step (PyTorch's Adam, weight decay as L2 added to the gradient of the first
 * n_decayed entries): m = β1 m + (1−β1) g, v = β2 v + (1−β2) g²,
 * param −= lr × (m / (1−β1ᵗ)) / (sqrt(v / (1−β2ᵗ)) + eps), where t ≥ 1 counts the steps. */
void optim_adam_update(float *params, const float *grads, float *m, float *v, size_t n,
                       size_t n_decayed, float lr, float beta1, float beta2, float eps,
                       float weight_decay, int64_t t);

/* ---------------------------------------------------------------------------------------
 * Model
 *
 * model->layers[0 .. n_layers) are the config's layers, in its order and with its indices
 * (what cfg_layer_index() returns); model->layers[n_layers .. n_layers + n_blocks) are the
 * config's `grow` blocks, in its order. Functions taking a `layer` index accept both. A
 * block runs right after its `after` layer (blocks after the same layer in config order),
 * and only once it is active (nn_model_grow).
 *
 * The state a resumed run needs, beyond the config: params, optim_state, optimizer.t (Adam
 * and the dropout masks depend on it), and each block's `active` and `t`. Everything else
 * is rebuilt by nn_model_create. A trained model loaded as a teacher has its blocks joined
 * with nn_model_grow(model, cfg_total_epochs(its config)). */

#define NN_GROW_BLOCK CFG_LAYER_KIND_COUNT /* nn_layer_t.kind of a grow block */
#define NN_MAX_NODES (CFG_MAX_LAYERS + CFG_MAX_GROW)
#define NN_INPUT ((size_t)-1) /* nn_layer_t.input of the layer that reads the data */

typedef struct {
  int kind;                /* a cfg_layer_kind_t, or NN_GROW_BLOCK */
  char name[CFG_NAME_MAX]; /* cfg_layer_display_name(), or the block's name */
  cfg_shape_t in_shape, shape; /* per example: what enters, what leaves */
  int in, out;             /* floats per example entering and leaving the layer */
  int kernel, stride, padding; /* conv2d; maxpool (kernel = size, no padding) */
  float p;                 /* dropout */
  int hidden;              /* block: width of W1 */
  /* Parameters, as offsets in floats into model->params (and the same into model->grads and
   * each optimizer-state array). All weights come first in the slab and all biases after
   * them, so weight decay applies to one leading range: conv2d weight (OC, C·K·K); block
   * weight = W1 (H,D) then W2 (D,H), bias = b1 (H) then b2 (D). Zero counts without params. */
  size_t weight, n_weight;
  size_t bias, n_bias;
  /* This layer's output (max_batch × out) as an offset into model->activations; its
   * gradient is at the same offset into model->dactivations. A flatten layer owns no
   * buffer: its offset is its input's (a view, no copy), except as the very first layer. */
  size_t activation;
  size_t hidden_activation; /* block: relu(W1·h + b1), max_batch × hidden, same convention */
  size_t mask;             /* dropout: its mask in model->workspace */
  size_t panels;           /* linear, inference model: its packed Wᵀ in model->panels */
  size_t argmax;           /* maxpool: its argmax in model->indices */
  /* Wiring, redone when blocks join: where the input comes from (an activation offset, or
   * NN_INPUT), and whether anything before has parameters (else no input gradient). */
  size_t input;
  int backprop_input;
  /* Its output gradient is not kept in the slab: a convolution's (or its ReLU's) whose only
   * user is the convolution's backward epilogue, which makes it per example in its thread's
   * scratch; nn_zero_grad leaves the slab as it is, and nn_layer_doutput zeroes it whole
   * first when a loss asks for it (nn.c). */
  int output_gradient_stale;
  /* Its output is read outside the model (a feature loss, the teacher's features: declared
   * with nn_model_keep_output, or by the config's `features`), so the forward stores it. */
  int output_read_outside;
  /* Its output is not stored at all: a convolution's whose only reader is its fused ReLU,
   * and a fused ReLU's whose only reader is its fused 2×2 pool, when nothing outside reads
   * them. The forward makes them per example in the thread's scratch, and the backward
   * needs neither (conv2d.c). nn_layer_output and nn_layer_doutput give NULL for it. */
  int output_transient;
  /* Blocks only. */
  int grow_epoch;          /* joins at the start of this 1-based epoch */
  int after;               /* the config layer it follows */
  int active;              /* joined: runs, trains and counts */
  int64_t t;               /* updates the block has received (its own Adam bias correction,
                              as PyTorch keeps a step count per parameter) */
} nn_layer_t;

/* What runs the linear layers' products: OpenBLAS, or kernels.h's packed GEMM. Models
 * start with nn_dense_default(): kernels.h's where OpenBLAS's loaded kernel set is narrower
 * than the set kernels.h runs (AVX2 kernels, an environment's OPENBLAS_CORETYPE=Haswell, on
 * a CPU with AVX-512) or both are AVX-512, else OpenBLAS. Measured on AMD family 26
 * (bench/README.md, eighth round): against OpenBLAS's AVX2 kernels ours ran a layer's three
 * products at 1.7–2.0×; both AVX-512 (Cooperlake), the KD step +8.5% with ours (a teacher's
 * weights packed once) and the MLP step +5%; both AVX2, the KD step −3%. */
typedef enum { NN_DENSE_OPENBLAS, NN_DENSE_KERNELS } nn_dense_t;
#define NN_DENSE_ENV "MAPSAGE_DENSE"
/* MAPSAGE_DENSE=openblas|kernels forces the choice (the test suite runs both), unset or empty
 * leaves it to the rule: 0 with the choice in *dense, or -EINVAL with the variable, its value
 * and the reason in `error` (and the rule's choice). The worker checks it at start. */
int nn_dense_from_env(nn_dense_t *dense, char *error, size_t error_size);
nn_dense_t nn_dense_default(void); /* nn_dense_from_env's choice, an invalid value ignored */
const char *nn_dense_name(nn_dense_t dense); /* "openblas", "kernels" */

typedef struct {
  cfg_optimizer_kind_t kind;
  float momentum, weight_decay; /* sgd: momentum; both: weight decay */
  float beta1, beta2, eps;      /* adam */
  int64_t t;                    /* updates applied so far (Adam's bias correction; dropout's step) */
} nn_optimizer_t;

typedef struct {
  int inputs, classes;    /* floats in one example's input; logits (the dataset's, config.h) */
  int n_layers;           /* the config's layers */
  int n_blocks;           /* the config's grow blocks, active or not */
  nn_layer_t layers[NN_MAX_NODES];
  int n_order;            /* what runs, in order: layer indices, active blocks interleaved */
  int order[NN_MAX_NODES];
  int max_batch;          /* the activation buffers hold this many examples */
  int forward_only;       /* nn_model_create_inference: no grads, no optimizer, no backward */
  int training;           /* the last forward's mode: dropout's backward follows it */
  uint64_t seed;          /* the config's seed: init and dropout masks */
  size_t n_params;        /* floats in params and in grads, every block included */
  size_t n_decayed;       /* the leading params that take weight decay (the weights) */
  size_t n_layer_weights; /* weights of the config's layers (blocks' weights follow) */
  size_t n_layer_biases;  /* biases of the config's layers, from n_decayed (blocks' follow) */
  float *params;          /* slab 1 */
  float *grads;           /* slab 2, same layout; NULL when forward_only */
  float *optim_state;     /* slab 3: sgd velocity (n_params) | adam m then v (2 × n_params) */
  size_t n_optim_state;
  float *activations;     /* slab 4: every layer's output (n_activations floats), then… */
  float *dactivations;    /* …their gradients (as many): activations + n_activations */
  size_t n_activations;
  float *workspace;       /* thread 0's conv scratch (n_scratch floats), the linear layers'
                           * packed operands (n_panels, from a 64-byte line), the dropout masks */
  size_t n_workspace;
  int32_t *indices;       /* max-pool argmaxes */
  size_t n_indices;
  float *panels;          /* in the workspace: the linear layers' packed operands (an
                           * inference model's: each layer's Wᵀ, at the layer's `panels`) */
  size_t n_panels;
  int weights_packed;     /* nn_model_pack_weights ran: kernels.h's set then, +1 (0: not) */
  nn_dense_t dense;       /* what runs the linear layers' products (nn_dense_default) */
  nn_optimizer_t optimizer;
  /* The threads that split a batch's examples in the convolutions (nn_model_set_threads;
   * 1 from nn_model_create): the pool, and per thread its convolution scratch (an example's
   * im2col, and the weight gradients of its examples; thread 0's at the workspace's start,
   * the others' in thread_buffers, n_scratch floats each). */
  int threads;
  struct thread_pool *pool;
  size_t n_scratch;
  float **thread_scratch;
  float *thread_buffers;
} nn_model_t;

/* Builds the model the config describes (input and classes the dataset's) with every
 * `grow` block allocated but inactive, for batches of up to max_batch examples, and
 * initialises its parameters from config->seed (nn_init_params). Returns 0, -EINVAL for a
 * layer list that does not fit, or -ENOMEM. On failure nothing needs freeing. */
int nn_model_create(nn_model_t *model, const cfg_experiment_t *config, int max_batch);
/* The same network for inference only (a teacher): no gradients, no optimizer state, no
 * activation gradients, one im2col buffer shared by every convolution. Only nn_forward
 * with training = 0 and the accessors below apply to it. */
int nn_model_create_inference(nn_model_t *model, const cfg_experiment_t *config, int max_batch);
void nn_model_free(nn_model_t *model);

/* For an inference model whose parameters will not change again (a teacher, once loaded):
 * packs each linear layer's Wᵀ once, so that its forwards stop packing them per call (a
 * KD step's teacher was ~5% of the step in packing). On models that run their linear layers
 * on OpenBLAS (nn_dense_t), and on training models, it does nothing. After any change to
 * the parameters, call it again; a forward on another kernels.h set packs per call again. */
void nn_model_pack_weights(nn_model_t *model);

/* Splits each batch's examples across `threads` threads (1..NN_MAX_THREADS) in the
 * convolutions' forward and backward, from now on: starts a persistent pool and allocates
 * the helpers' buffers once, so a step neither creates a thread nor allocates. The worker
 * passes its --threads (OpenBLAS's count too). Results are bit-identical run to run at one
 * thread count; the weight gradients' summation order depends on the count. Returns 0, or
 * -EINVAL / -ENOMEM / -errno with the reason in error; on failure the model keeps running on
 * one thread. */
#define NN_MAX_THREADS 256
int nn_model_set_threads(nn_model_t *model, int threads, char *error, size_t error_size);

/* Kaiming (He) uniform weights for ReLU networks, U(−b, b) with b = sqrt(6 / fan_in); zero
 * biases; zero optimizer state. Blocks: W1 Kaiming from a stream of their own, W2 = b1 =
 * b2 = 0. Deterministic in the seed. */
void nn_init_params(nn_model_t *model, uint64_t seed);

/* Activates every block whose epoch has come (grow_epoch <= epoch, 1-based) and returns how
 * many joined now. Touches no parameter and no optimizer state: an inactive block was never
 * updated, so it joins with its initial weights and zero velocity / Adam moments. Calling
 * it again with the same or an earlier epoch does nothing (returns 0), so a resumed run can
 * call it with the epoch it resumes at. */
int nn_model_grow(nn_model_t *model, int epoch);

/* Runs B ≤ max_batch examples (B × inputs) forward; returns the logits (B × classes),
 * which live in the model until the next forward. training = 1 applies dropout with the mask
 * of (seed, optimizer.t, layer); 0 (evaluation, a teacher) makes dropout the identity. */
const float *nn_forward(nn_model_t *model, const float *inputs, int B, int training);

/* Zeroes the parameter gradients and the activation gradients: call before the losses
 * accumulate into nn_dlogits() (or into a hidden layer's nn_layer_doutput()) and
 * nn_backward() accumulates the rest. */
void nn_zero_grad(nn_model_t *model);
/* Where losses accumulate the gradient w.r.t. the logits (max_batch × classes). */
float *nn_dlogits(nn_model_t *model);
/* Back-propagates from nn_dlogits() and from whatever was added to hidden layers'
 * nn_layer_doutput() through the activations of the last nn_forward (with the same inputs
 * and B), accumulating into model->grads. */
void nn_backward(nn_model_t *model, const float *inputs, int B);

/* Applies one optimizer update at learning rate lr from model->grads, to the config's layers
 * and the active blocks only. */
void nn_optimizer_step(nn_model_t *model, float lr);

/* A layer's (or block's) output from the last nn_forward: B × nn_layer_shape() floats, and
 * the buffer for the gradient w.r.t. it (NULL for an inference model). A block following
 * the layer does not change the layer's own output. Both are NULL for an output the forward
 * did not store (output_transient): a caller that reads a convolution's output, or a ReLU's
 * between a convolution and a pool, declares it first with nn_model_keep_output. */
const float *nn_layer_output(const nn_model_t *model, int layer);
float *nn_layer_doutput(nn_model_t *model, int layer);
/* Declares that `layer`'s output is read outside the model (see nn_layer_output): every
 * forward from now on stores it. The config's feature layers are declared by
 * nn_model_create; a teacher's, by whoever reads them. */
void nn_model_keep_output(nn_model_t *model, int layer);
cfg_shape_t nn_layer_shape(const nn_model_t *model, int layer);

/* Parameters of one layer (weights and biases), the L2 norm of their gradient, and whether
 * the layer takes part (config layers always; blocks once joined). */
size_t nn_layer_param_count(const nn_layer_t *layer);
double nn_layer_grad_norm(const nn_model_t *model, int layer);
int nn_layer_active(const nn_layer_t *layer);
/* Parameters that take part in training now (inactive blocks excluded). */
size_t nn_model_active_params(const nn_model_t *model);
/* Whether anything that runs is a convolution (the worker then leaves OpenBLAS at one thread
 * beside a pool of several: worker/main.c). */
int nn_model_has_convolution(const nn_model_t *model);

#endif
