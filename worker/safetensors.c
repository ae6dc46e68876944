/* safetensors.c — the parameter names of a network and the safetensors format (see the
 * header). The layout below must follow worker/nn.c's nn__build exactly; the round trip
 * through PyTorch in tests/test_export.py (the same logits within 1e-5) is what checks it. */
#include "safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void safetensors__name(model_tensor_t *tensor, const char *layer, const char *suffix) {
  snprintf(tensor->name, sizeof tensor->name, "%s.%s", layer, suffix);
}

int model_tensors(const cfg_experiment_t *config, model_tensor_t *tensors, size_t *total) {
  /* nn.c: every config layer's weight, then every block's two weights, then the biases in
   * the same order. Blocks: W1 [H, D] then W2 [D, H]; b1 [H] then b2 [D]. */
  int n = 0;
  size_t weights = 0;
  int bias_of[CFG_MAX_LAYERS + CFG_MAX_GROW][2];
  size_t bias_count[CFG_MAX_LAYERS + CFG_MAX_GROW][2];
  int n_biases = 0;
  cfg_shape_t in = cfg_input_shape(config);
  char name[CFG_NAME_MAX];
  for (int l = 0; l < config->n_layers; l++) {
    const cfg_layer_t *layer = &config->layers[l];
    cfg_layer_display_name(config, l, name, sizeof name);
    const int64_t in_floats = cfg_shape_size(&in);
    if (layer->kind == CFG_LAYER_LINEAR || layer->kind == CFG_LAYER_CONV2D) {
      model_tensor_t *w = &tensors[n];
      safetensors__name(w, name, "weight");
      if (layer->kind == CFG_LAYER_LINEAR) {
        *w = (model_tensor_t){.n_dims = 2, .shape = {layer->out, in_floats}, .count = (size_t)layer->out * in_floats};
      } else {
        if (!in.image) return -EINVAL;
        *w = (model_tensor_t){.n_dims = 4, .shape = {layer->out, in.channels, layer->kernel, layer->kernel},
                              .count = (size_t)layer->out * in.channels * layer->kernel * layer->kernel};
      }
      safetensors__name(w, name, "weight");
      w->offset = weights;
      weights += w->count;
      n++;
      bias_of[n_biases][0] = n++;
      bias_of[n_biases][1] = -1;
      bias_count[n_biases][0] = (size_t)layer->out;
      safetensors__name(&tensors[bias_of[n_biases][0]], name, "bias");
      n_biases++;
    }
    in = layer->shape;
  }
  for (int g = 0; g < config->n_grow; g++) {
    const cfg_grow_t *grow = &config->grow[g];
    int after = grow->after[0] ? cfg_layer_index(config, grow->after) : grow->after_layer;
    if (after < 0 || after >= config->n_layers || config->layers[after].shape.image) return -EINVAL;
    const int64_t D = cfg_shape_size(&config->layers[after].shape), H = grow->hidden > 0 ? grow->hidden : D;
    char block[CFG_NAME_MAX + 8];
    if (grow->name[0])
      snprintf(block, sizeof block, "%s", grow->name);
    else
      snprintf(block, sizeof block, "grow%d", g + 1);
    char prefix[CFG_NAME_MAX + 16];
    model_tensor_t *w1 = &tensors[n++], *w2 = &tensors[n++];
    *w1 = (model_tensor_t){.n_dims = 2, .shape = {H, D}, .count = (size_t)(H * D), .offset = weights};
    *w2 = (model_tensor_t){.n_dims = 2, .shape = {D, H}, .count = (size_t)(D * H), .offset = weights + (size_t)(H * D)};
    weights += 2 * (size_t)(H * D);
    snprintf(prefix, sizeof prefix, "%s.linear1", block);
    safetensors__name(w1, prefix, "weight");
    snprintf(prefix, sizeof prefix, "%s.linear2", block);
    safetensors__name(w2, prefix, "weight");
    bias_of[n_biases][0] = n++;
    bias_of[n_biases][1] = n++;
    bias_count[n_biases][0] = (size_t)H;
    bias_count[n_biases][1] = (size_t)D;
    snprintf(prefix, sizeof prefix, "%s.linear1", block);
    safetensors__name(&tensors[bias_of[n_biases][0]], prefix, "bias");
    snprintf(prefix, sizeof prefix, "%s.linear2", block);
    safetensors__name(&tensors[bias_of[n_biases][1]], prefix, "bias");
    n_biases++;
  }
  size_t offset = weights;
  for (int b = 0; b < n_biases; b++) {
    for (int k = 0; k < 2 && bias_of[b][k] >= 0; k++) {
      model_tensor_t *bias = &tensors[bias_of[b][k]];
      bias->n_dims = 1;
      bias->shape[0] = (int64_t)bias_count[b][k];
      bias->count = bias_count[b][k];
      bias->offset = offset;
      offset += bias->count;
    }
  }
  *total = offset;
  return n;
}

int safetensors_write(const model_tensor_t *tensors, int n, const float *params, const json_t *metadata,
                      char **out, size_t *length) {
  *out = NULL;
  json_t *header = json_object();
  if (metadata) json_object_set(header, "__metadata__", (json_t *)metadata);
  size_t data = 0;
  for (int i = 0; i < n; i++) {
    json_t *shape = json_array();
    for (int d = 0; d < tensors[i].n_dims; d++) json_array_append_new(shape, json_integer(tensors[i].shape[d]));
    size_t bytes = tensors[i].count * sizeof(float);
    json_object_set_new(header, tensors[i].name, json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", shape,
                                                           "data_offsets", (json_int_t)data,
                                                           (json_int_t)(data + bytes)));
    data += bytes;
  }
  char *text = json_dumps(header, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(header);
  if (!text) return -ENOMEM;
  /* The header padded with spaces to a multiple of 8: the data then starts aligned. */
  size_t header_length = (strlen(text) + 7) / 8 * 8;
  char *file = malloc(8 + header_length + data + 1);
  if (!file) {
    free(text);
    return -ENOMEM;
  }
  for (int k = 0; k < 8; k++) file[k] = (char)(uint8_t)((uint64_t)header_length >> (8 * k));
  memset(file + 8, ' ', header_length);
  memcpy(file + 8, text, strlen(text));
  free(text);
  char *p = file + 8 + header_length;
  for (int i = 0; i < n; i++) {
    memcpy(p, params + tensors[i].offset, tensors[i].count * sizeof(float)); /* little-endian hosts */
    p += tensors[i].count * sizeof(float);
  }
  *out = file;
  *length = 8 + header_length + data;
  return 0;
}

static int safetensors__by_start(const void *a, const void *b) {
  const safetensors_tensor_t *x = a, *y = b;
  return (x->data > y->data) - (x->data < y->data);
}

/* One tensor of the header: its dtype, shape and byte range, checked against the data. */
static int safetensors__entry(const char *key, const json_t *value, const uint8_t *start, size_t available,
                              safetensors_tensor_t *t, const char *what, char *error, size_t error_size) {
  t->name = key;
  const char *dtype = json_string_value(json_object_get(value, "dtype"));
  const json_t *shape = json_object_get(value, "shape"), *offsets = json_object_get(value, "data_offsets");
  if (!dtype || strlen(dtype) >= sizeof t->dtype || !json_is_array(shape) || json_array_size(shape) > 8 ||
      !json_is_array(offsets) || json_array_size(offsets) != 2)
    return util_error(error, error_size, -EINVAL, "%s: tensor \"%s\": needs dtype, shape and data_offsets", what, key);
  util_strlcpy(t->dtype, dtype, sizeof t->dtype);
  size_t element = strcmp(dtype, "F32") == 0 || strcmp(dtype, "I32") == 0 ? 4
                   : strcmp(dtype, "F64") == 0 || strcmp(dtype, "I64") == 0 ? 8
                   : strcmp(dtype, "F16") == 0 || strcmp(dtype, "BF16") == 0 || strcmp(dtype, "I16") == 0 ? 2
                   : strcmp(dtype, "U8") == 0 || strcmp(dtype, "I8") == 0 || strcmp(dtype, "BOOL") == 0 ? 1 : 0;
  if (!element) return util_error(error, error_size, -EINVAL, "%s: tensor \"%s\": unknown dtype %s", what, key, dtype);
  t->n_dims = (int)json_array_size(shape);
  t->count = 1;
  for (int d = 0; d < t->n_dims; d++) {
    const json_t *dim = json_array_get(shape, (size_t)d);
    if (!json_is_integer(dim) || json_integer_value(dim) < 0 || json_integer_value(dim) > (1ll << 40))
      return util_error(error, error_size, -EINVAL, "%s: tensor \"%s\": bad shape", what, key);
    t->shape[d] = json_integer_value(dim);
    t->count *= (size_t)t->shape[d];
    if (t->count > (1ull << 40))
      return util_error(error, error_size, -EINVAL, "%s: tensor \"%s\": implausible shape", what, key);
  }
  const json_t *first = json_array_get(offsets, 0), *last = json_array_get(offsets, 1);
  if (!json_is_integer(first) || !json_is_integer(last) || json_integer_value(first) < 0 ||
      json_integer_value(last) < json_integer_value(first) || (uint64_t)json_integer_value(last) > available)
    return util_error(error, error_size, -EINVAL, "%s: truncated or damaged: tensor \"%s\"'s data_offsets fall "
                      "outside the %zu bytes of data", what, key, available);
  t->data = start + json_integer_value(first);
  t->bytes = (size_t)(json_integer_value(last) - json_integer_value(first));
  if (t->bytes != t->count * element)
    return util_error(error, error_size, -EINVAL, "%s: tensor \"%s\" has %zu bytes for %zu %s elements", what, key,
                      t->bytes, t->count, dtype);
  return 0;
}

int safetensors_parse(const uint8_t *data, size_t length, const char *what, safetensors_t *file, char *error,
                      size_t error_size) {
  memset(file, 0, sizeof *file);
  if (length < 8) return util_error(error, error_size, -EINVAL, "%s: not a safetensors file: %zu bytes", what, length);
  uint64_t header_length = 0;
  for (int k = 0; k < 8; k++) header_length |= (uint64_t)data[k] << (8 * k);
  if (header_length > length - 8 || header_length > (100u << 20))
    return util_error(error, error_size, -EINVAL, "%s: not a safetensors file, or truncated: its header length %llu "
                      "exceeds the file", what, (unsigned long long)header_length);
  json_error_t parse_error;
  file->header = json_loadb((const char *)data + 8, header_length, JSON_REJECT_DUPLICATES, &parse_error);
  if (!json_is_object(file->header)) {
    json_decref(file->header);
    file->header = NULL;
    return util_error(error, error_size, -EINVAL, "%s: its header is not a JSON object: %s", what, parse_error.text);
  }
  const uint8_t *start = data + 8 + header_length;
  const size_t available = length - 8 - header_length;
  file->tensors = calloc(json_object_size(file->header) + 1, sizeof *file->tensors);
  int rc = 0;
  if (!file->tensors) {
    rc = util_error(error, error_size, -ENOMEM, "%s: out of memory", what);
    goto fail;
  }
  const char *key;
  json_t *value;
  json_object_foreach(file->header, key, value) {
    if (strcmp(key, "__metadata__") == 0) continue;
    rc = safetensors__entry(key, value, start, available, &file->tensors[file->n], what, error, error_size);
    if (rc) goto fail;
    file->n++;
  }
  /* No two tensors may share bytes. */
  safetensors_tensor_t *sorted = malloc(((size_t)file->n + 1) * sizeof *sorted);
  if (!sorted) {
    rc = util_error(error, error_size, -ENOMEM, "%s: out of memory", what);
    goto fail;
  }
  memcpy(sorted, file->tensors, (size_t)file->n * sizeof *sorted);
  qsort(sorted, (size_t)file->n, sizeof *sorted, safetensors__by_start);
  for (int i = 1; i < file->n; i++) {
    if (sorted[i].data < sorted[i - 1].data + sorted[i - 1].bytes) {
      rc = util_error(error, error_size, -EINVAL, "%s: tensors \"%s\" and \"%s\" overlap", what, sorted[i - 1].name,
                      sorted[i].name);
      free(sorted);
      goto fail;
    }
  }
  free(sorted);
  return 0;
fail:
  safetensors_free(file);
  return rc;
}

void safetensors_free(safetensors_t *file) {
  free(file->tensors);
  json_decref(file->header);
  memset(file, 0, sizeof *file);
}

const safetensors_tensor_t *safetensors_find(const safetensors_t *file, const char *name) {
  for (int i = 0; i < file->n; i++)
    if (strcmp(file->tensors[i].name, name) == 0) return &file->tensors[i];
  return NULL;
}
