/* conv2d.h — the model's convolution layers (worker/conv2d.c), for nn.c's nn_forward and
 * nn_backward: a batch split into contiguous shares of examples across the model's pool
 * (nn_model_set_threads), with the ReLU and the 2×2 pool that follow a convolution fused
 * into its per-example loop (`relu`, `pool`: those layers, or NULL). The convolution itself,
 * for any caller, is nn.h's conv2d_forward / conv2d_backward. */
#ifndef MAPSAGE_CONV2D_H
#define MAPSAGE_CONV2D_H

#include "nn.h"

/* C·K·K at or below which a convolution's weight gradient is kernels.h's dot products rather
 * than a product (OpenBLAS's GEMM at K = 9: 2.8 ms per step of 128 against ~0.9 ms for them;
 * the unpacked product in their place: the CNN step at 2,122–2,219 samples/s against
 * 2,105–2,289, no better). bench_train counts such a layer's FLOPs apart from its GEMMs. */
#define CONV2D_FEW_TAPS 24

/* inp (B, the layer's input shape) -> out (B, its output shape), and the fused layers'
 * outputs (and the pool's argmax) in their own activations. */
void conv2d_forward_model(nn_model_t *model, const nn_layer_t *layer, float *out,
                          const float *inp, int B, const nn_layer_t *relu, const nn_layer_t *pool);
/* dout (the layer's output gradient; the fused layers' come from the pool's) -> the layer's
 * weight and bias gradients +=, dinp += (NULL: none wanted). inp is the forward's input. */
void conv2d_backward_model(nn_model_t *model, const nn_layer_t *layer, float *dinp, float *dout,
                           const float *inp, int B, const nn_layer_t *relu,
                           const nn_layer_t *pool);

#endif
