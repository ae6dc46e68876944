/* nn.h — the network: layer kernels (forward/backward pairs), the cross-entropy loss, the
 * optimisers, and the model built from the config. Kernels work on caller-owned row-major
 * float buffers, never allocate, log or exit, and every backward ACCUMULATES (the driver
 * zeroes: nn_zero_grad). The model owns four allocations, sized once: parameters, gradients,
 * optimizer state, activations with their gradients. */
#ifndef MAPSAGE_NN_H
#define MAPSAGE_NN_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* ---------------------------------------------------------------------------------------
 * Kernels. Distinct buffers never overlap (restrict marks where the compiler relies on it). */

/* inp (B,IN), weight (OUT,IN), bias (OUT) or NULL -> out (B,OUT) = inp · weightᵀ + bias */
void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int B,
                    int IN, int OUT);
/* dout (B,OUT) -> dinp (B,IN) += dout · weight, dweight (OUT,IN) += doutᵀ · inp,
 * dbias (OUT) += Σ_b dout. dinp may be NULL (the first layer: nobody needs it, and skipping
 * it saves the largest product of the step); dbias may be NULL when there is no bias. */
void linear_backward(float *dinp, float *dweight, float *restrict dbias,
                     const float *restrict dout, const float *inp, const float *weight, int B,
                     int IN, int OUT);

/* inp (N) -> out (N) = max(0, inp). */
void relu_forward(float *restrict out, const float *restrict inp, int N);
/* dout (N), out (N) = the forward's output -> dinp (N) += dout where out > 0. */
void relu_backward(float *restrict dinp, const float *restrict dout, const float *restrict out,
                   int N);

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
 * Model */

typedef struct {
  cfg_layer_kind_t kind;
  char name[CFG_NAME_MAX]; /* the config's name, else kind and index among its kind: "linear0" */
  int in, out;             /* features per example entering and leaving the layer */
  /* Parameters, as offsets in floats into model->params (and the same into model->grads).
   * All weights come first in the slab and all biases after them, so weight decay applies
   * to one leading range. Zero counts for layers without parameters. */
  size_t weight, n_weight;
  size_t bias, n_bias;
  /* This layer's output (max_batch × out) as an offset into model->activations; the
   * gradient with respect to it is at the same offset into model->dactivations. */
  size_t activation;
} nn_layer_t;

typedef struct {
  cfg_optimizer_kind_t kind;
  float momentum, weight_decay; /* sgd: momentum; both: weight decay */
  float beta1, beta2, eps;      /* adam */
  int64_t t;                    /* updates applied so far (Adam's bias correction) */
} nn_optimizer_t;

typedef struct {
  int n_layers;
  nn_layer_t layers[CFG_MAX_LAYERS];
  int max_batch;          /* the activation buffers hold this many examples */
  size_t n_params;        /* floats in params and in grads */
  size_t n_decayed;       /* the leading params that take weight decay (the weights) */
  float *params;          /* slab 1 */
  float *grads;           /* slab 2, same layout */
  float *optim_state;     /* slab 3: sgd velocity (n_params) | adam m then v (2 × n_params) */
  size_t n_optim_state;
  float *activations;     /* slab 4: every layer's output (n_activations floats), then… */
  float *dactivations;    /* …their gradients (as many): activations + n_activations */
  size_t n_activations;
  nn_optimizer_t optimizer;
} nn_model_t;

/* Builds the model the config describes (input CFG_INPUTS, output CFG_CLASSES), for batches
 * of up to max_batch examples, and initialises its parameters from config->seed
 * (nn_init_params). Returns 0, -EINVAL for a layer list that does not fit, or -ENOMEM. On
 * failure nothing needs freeing. */
int nn_model_create(nn_model_t *model, const cfg_experiment_t *config, int max_batch);
void nn_model_free(nn_model_t *model);

/* Kaiming (He) uniform weights for ReLU networks, U(−b, b) with b = sqrt(6 / fan_in); zero
 * biases; zero optimizer state. Deterministic in the seed. */
void nn_init_params(nn_model_t *model, uint64_t seed);

/* Runs B ≤ max_batch examples (B × CFG_INPUTS) forward; returns the logits (B × CFG_CLASSES),
 * which live in the model until the next forward. */
const float *nn_forward(nn_model_t *model, const float *inputs, int B);

/* Zeroes the parameter gradients and the activation gradients: call before the losses
 * accumulate into nn_dlogits() and nn_backward() accumulates the rest. */
void nn_zero_grad(nn_model_t *model);
/* Where losses accumulate the gradient w.r.t. the logits (max_batch × CFG_CLASSES). */
float *nn_dlogits(nn_model_t *model);
/* Back-propagates from nn_dlogits() through the activations of the last nn_forward (with the
 * same inputs and B), accumulating into model->grads. */
void nn_backward(nn_model_t *model, const float *inputs, int B);

/* Applies one optimizer update at learning rate lr from model->grads. */
void nn_optimizer_step(nn_model_t *model, float lr);

/* Parameters of one layer (weights and bias), and the L2 norm of their gradient. */
size_t nn_layer_param_count(const nn_layer_t *layer);
double nn_layer_grad_norm(const nn_model_t *model, int layer);

#endif
