/* linear.h — the model's linear layers (worker/linear.c), for nn.c's nn_forward and
 * nn_backward: the products on OpenBLAS or on kernels.h's packed GEMM (model->dense), in the
 * model's panels, split across its pool (nn_model_set_threads): the batch's rows for the
 * forward and the input gradient, the layer's outputs for the weight and bias gradients. The
 * layer itself, for any caller, is nn.h's linear_forward / linear_backward. */
#ifndef MAPSAGE_LINEAR_H
#define MAPSAGE_LINEAR_H

#include "nn.h"

/* inp (B,IN) -> out (B,OUT) = inp · weightᵀ + bias, for `layer` of the model (its panels). */
void linear_forward_model(nn_model_t *model, const nn_layer_t *layer, float *out, const float *inp,
                          const float *weight, const float *bias, int B, int IN, int OUT);
/* dout (B,OUT) -> dinp (B,IN) += (NULL: none wanted), dweight +=, dbias += (NULL: none). */
void linear_backward_model(nn_model_t *model, float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, int B, int IN, int OUT);

#endif
