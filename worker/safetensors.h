/* safetensors.h — a model's parameters by name, in PyTorch's terms, and the safetensors
 * file format (https://huggingface.co/docs/safetensors: an 8-byte little-endian header
 * length, a JSON header naming each tensor's dtype, shape and byte range, then the data).
 *
 * model_tensors() says where each layer's weight and bias live in the flat parameter slab
 * worker/nn.c lays out (every config layer's weights in order, then the grow blocks', then
 * the biases in the same order) and under which names and shapes the equivalent PyTorch
 * module holds them: "<layer>.weight" [out, in] for linear, [out, in_channels, k, k] for
 * conv2d, "<layer>.bias" [out]; a grow block's two linears as "<block>.linear1.*",
 * "<block>.linear2.*". <layer> is the layer's name in the config (cfg_layer_display_name:
 * its own, else "linear0", "conv2d1"). The daemon's export (daemon/export.c) and the
 * worker's safetensors teacher (worker/teacher.c) both go through it; docs/export.md shows
 * the PyTorch module. */
#ifndef MAPSAGE_SAFETENSORS_H
#define MAPSAGE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"

#define MODEL_MAX_TENSORS (4 * (CFG_MAX_LAYERS + CFG_MAX_GROW))

typedef struct {
  char name[CFG_NAME_MAX + 32];
  int n_dims;
  int64_t shape[4];
  size_t offset, count;        /* in floats, into the parameter slab */
} model_tensor_t;

/* The parameter tensors of `config`'s network (validated). Returns their count, or
 * -EINVAL when the layers do not fit together. `*total` is the slab's size in floats. */
int model_tensors(const cfg_experiment_t *config, model_tensor_t *tensors, size_t *total);

/* A safetensors file of `params` laid out by `tensors` (all F32), with `metadata` (an
 * object of strings; may be NULL) as "__metadata__". *out is malloc'd. 0 or -ENOMEM. */
int safetensors_write(const model_tensor_t *tensors, int n, const float *params, const json_t *metadata,
                      char **out, size_t *length);

/* One tensor of a parsed file: its data points into the parsed buffer. */
typedef struct {
  const char *name;            /* into `header` */
  char dtype[8];
  int n_dims;
  int64_t shape[8];
  size_t count;
  const uint8_t *data;
  size_t bytes;
} safetensors_tensor_t;

typedef struct {
  json_t *header;              /* the parsed header (owns the names) */
  int n;
  safetensors_tensor_t *tensors;
} safetensors_t;

/* Parses and checks a whole file in memory: header length, JSON, each tensor's dtype,
 * shape and byte range (inside the data, sized shape × dtype, not overlapping). Errors
 * name `what` and the reason. safetensors_free() after success only. */
int safetensors_parse(const uint8_t *data, size_t length, const char *what, safetensors_t *file, char *error,
                      size_t error_size);
void safetensors_free(safetensors_t *file);
const safetensors_tensor_t *safetensors_find(const safetensors_t *file, const char *name);

#endif
