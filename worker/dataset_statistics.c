/* dataset_statistics.c — statistics and samples of a registered dataset (see the header).
 * Duplicates are found by hashing every example's values (FNV-1a, 64 bits), sorting the
 * hashes and comparing the values of equal hashes byte for byte: O(n log n), and exact. */
#include "dataset_statistics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  uint64_t hash;
  int index;   /* into the training split, or train.n + into the test split */
} dataset__key_t;

static const void *dataset__example(const dataset_t *set, int index, size_t *bytes) {
  const dataset_split_t *split = index < set->train.n ? &set->train : &set->test;
  int i = index < set->train.n ? index : index - set->train.n;
  *bytes = (size_t)set->inputs * (set->is_float ? sizeof(float) : 1);
  return set->is_float ? (const void *)(split->values + (size_t)i * set->inputs)
                       : (const void *)(split->bytes + (size_t)i * set->inputs);
}

static int dataset__key_compare(const void *a, const void *b) {
  const dataset__key_t *x = a, *y = b;
  if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
  return (x->index > y->index) - (x->index < y->index);
}

/* Counts training examples equal to an earlier training one, test examples equal to an
 * earlier test one, and test examples equal to some training one. */
static int dataset__duplicates(const dataset_t *set, long long *within_train, long long *within_test,
                               long long *across) {
  const int n = set->train.n + set->test.n;
  dataset__key_t *keys = malloc((size_t)n * sizeof *keys);
  if (!keys) return -1;
  for (int i = 0; i < n; i++) {
    size_t bytes;
    const uint8_t *p = dataset__example(set, i, &bytes);
    uint64_t hash = 1469598103934665603ull;
    for (size_t k = 0; k < bytes; k++) hash = (hash ^ p[k]) * 1099511628211ull;
    keys[i] = (dataset__key_t){hash, i};
  }
  qsort(keys, (size_t)n, sizeof *keys, dataset__key_compare);
  *within_train = *within_test = *across = 0;
  for (int start = 0; start < n;) {
    int end = start + 1;
    while (end < n && keys[end].hash == keys[start].hash) end++;
    /* Within a run of equal hashes (almost always one distinct example), each member is
     * compared with the earlier ones. */
    for (int i = start + 1; i < end; i++) {
      size_t bytes;
      const void *mine = dataset__example(set, keys[i].index, &bytes);
      int same_split = 0, in_train = 0;
      for (int j = start; j < i; j++) {
        const void *theirs = dataset__example(set, keys[j].index, &bytes);
        if (memcmp(mine, theirs, bytes) != 0) continue;
        if ((keys[j].index < set->train.n) == (keys[i].index < set->train.n)) same_split = 1;
        if (keys[j].index < set->train.n) in_train = 1;
      }
      const int test = keys[i].index >= set->train.n;
      if (same_split) *(test ? within_test : within_train) += 1;
      if (test && in_train) *across += 1;
    }
    start = end;
  }
  free(keys);
  return 0;
}

static json_t *dataset__split_json(const dataset_t *set, const dataset_split_t *split, const char *name,
                                   json_t *warnings) {
  long long *counts = calloc((size_t)set->classes, sizeof *counts);
  if (!counts) return NULL;
  for (int i = 0; i < split->n; i++) counts[split->labels[i]]++;
  json_t *list = json_array();
  long long smallest = split->n, largest = 0;
  int smallest_class = 0, largest_class = 0;
  for (int c = 0; c < set->classes; c++) {
    json_array_append_new(list, json_integer(counts[c]));
    if (counts[c] < smallest) smallest = counts[c], smallest_class = c;
    if (counts[c] > largest) largest = counts[c], largest_class = c;
  }
  char text[256];
  if (smallest == 0) {
    snprintf(text, sizeof text, "imbalance: class %d has no %s examples", smallest_class, name);
    json_array_append_new(warnings, json_string(text));
  } else if ((double)largest > DATASET_IMBALANCE_RATIO * (double)smallest) {
    snprintf(text, sizeof text, "imbalance: the %s split's class %d has %lld examples, class %d only %lld (%.1f×)",
             name, largest_class, largest, smallest_class, smallest, (double)largest / (double)smallest);
    json_array_append_new(warnings, json_string(text));
  }
  free(counts);
  return json_pack("{s:i, s:o}", "examples", split->n, "class_counts", list);
}

json_t *dataset_statistics(const dataset_t *set) {
  const int channels = set->input.channels, plane = set->input.height * set->input.width;
  double *sum = calloc((size_t)channels, sizeof *sum), *squares = calloc((size_t)channels, sizeof *squares);
  json_t *warnings = json_array(), *result = NULL;
  if (!sum || !squares || !warnings) goto done;
  /* Per channel over the training split: exact for 8-bit data up to 2^53 / 255² values. */
  for (int i = 0; i < set->train.n; i++) {
    for (int k = 0; k < set->inputs; k++) {
      double v = set->is_float ? set->train.values[(size_t)i * set->inputs + k]
                               : set->train.bytes[(size_t)i * set->inputs + k] / 255.0;
      sum[k / plane] += v;
      squares[k / plane] += v * v;
    }
  }
  json_t *mean = json_array(), *deviation = json_array();
  const double count = (double)set->train.n * plane;
  for (int c = 0; c < channels; c++) {
    double m = sum[c] / count, variance = squares[c] / count - m * m;
    json_array_append_new(mean, json_real(m));
    json_array_append_new(deviation, json_real(variance > 0 ? sqrt(variance) : 0.0));
  }
  long long within_train, within_test, across;
  if (dataset__duplicates(set, &within_train, &within_test, &across) != 0) {
    json_decref(mean);
    json_decref(deviation);
    goto done;
  }
  json_t *train = dataset__split_json(set, &set->train, "train", warnings);
  json_t *test = dataset__split_json(set, &set->test, "test", warnings);
  char text[256];
  if (across > 0) {
    snprintf(text, sizeof text, "leakage: %lld test examples are exact copies of training examples", across);
    json_array_append_new(warnings, json_string(text));
  }
  if (within_train > 0) {
    snprintf(text, sizeof text, "duplicates: %lld training examples repeat an earlier one", within_train);
    json_array_append_new(warnings, json_string(text));
  }
  if (within_test > 0) {
    snprintf(text, sizeof text, "duplicates: %lld test examples repeat an earlier one", within_test);
    json_array_append_new(warnings, json_string(text));
  }
  result = json_pack("{s:o, s:o, s:o, s:o, s:{s:I, s:I, s:I}, s:O}", "train", train, "test", test, "channel_mean",
                     mean, "channel_std", deviation, "duplicates", "within_train", (json_int_t)within_train,
                     "within_test", (json_int_t)within_test, "across", (json_int_t)across, "warnings", warnings);
done:
  free(sum);
  free(squares);
  json_decref(warnings);
  return result;
}

static void dataset__base64(const uint8_t *data, size_t length, char *out) {
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < length; i += 3) {
    uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < length ? (uint32_t)data[i + 1] << 8 : 0) |
                 (i + 2 < length ? data[i + 2] : 0);
    out[o++] = alphabet[v >> 18 & 63];
    out[o++] = alphabet[v >> 12 & 63];
    out[o++] = i + 1 < length ? alphabet[v >> 6 & 63] : '=';
    out[o++] = i + 2 < length ? alphabet[v & 63] : '=';
  }
  out[o] = 0;
}

json_t *dataset_samples(const dataset_t *set, int per_class) {
  const size_t inputs = (size_t)set->inputs;
  uint8_t *bytes = malloc(inputs);
  char *text = malloc(4 * (inputs / 3 + 1) + 1);
  int *taken = calloc((size_t)set->classes, sizeof *taken);
  json_t *classes = json_array(), *result = NULL;
  if (!bytes || !text || !taken || !classes) goto done;
  json_t **images = calloc((size_t)set->classes, sizeof *images);
  if (!images) goto done;
  for (int c = 0; c < set->classes; c++) images[c] = json_array();
  for (int i = 0; i < set->train.n; i++) {
    int label = set->train.labels[i];
    if (taken[label] >= per_class) continue;
    taken[label]++;
    if (set->is_float) {
      const float *v = set->train.values + (size_t)i * inputs;
      float low = v[0], high = v[0];
      for (size_t k = 1; k < inputs; k++) low = v[k] < low ? v[k] : low, high = v[k] > high ? v[k] : high;
      for (size_t k = 0; k < inputs; k++)
        bytes[k] = high > low ? (uint8_t)lrintf(255.0f * (v[k] - low) / (high - low)) : 0;
    } else {
      memcpy(bytes, set->train.bytes + (size_t)i * inputs, inputs);
    }
    dataset__base64(bytes, inputs, text);
    json_array_append_new(images[label], json_string(text));
  }
  for (int c = 0; c < set->classes; c++) {
    json_t *entry = json_pack("{s:i, s:o}", "label", c, "images", images[c]);
    if (c < set->n_names) json_object_set_new(entry, "name", json_string(set->names[c]));
    json_array_append_new(classes, entry);
  }
  free(images);
  result = json_pack("{s:i, s:i, s:i, s:O}", "channels", set->input.channels, "height", set->input.height, "width",
                     set->input.width, "classes", classes);
done:
  free(bytes);
  free(text);
  free(taken);
  json_decref(classes);
  return result;
}
