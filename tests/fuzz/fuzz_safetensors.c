/* fuzz_safetensors.c — libFuzzer target for the safetensors reader (worker/safetensors.c),
 * what a teacher trained elsewhere comes in through. Besides the sanitizers' verdict it checks
 * that a refusal names its reason and that an accepted file's tensors lie inside it, are
 * sized by their shape and dtype, and do not overlap; then it writes the F32 ones back out
 * and reads that again (a round trip keeps names, shapes and bytes).
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  safetensors_t file;
  char error[512] = "";
  if (safetensors_parse(data, size, "fuzz.safetensors", &file, error, sizeof error) != 0) {
    FUZZ_CHECK(error[0] != '\0', "a refused file with no reason");
    return 0;
  }
  model_tensor_t *tensors = calloc((size_t)file.n + 1, sizeof *tensors);
  float *params = NULL;
  size_t total = 0;
  int n = 0;
  for (int i = 0; i < file.n; i++) {
    const safetensors_tensor_t *t = &file.tensors[i];
    FUZZ_CHECK(t->data >= data && t->data + t->bytes <= data + size, "tensor %s runs past the file", t->name);
    if (strcmp(t->dtype, "F32") != 0 || t->n_dims > 4 || strlen(t->name) >= sizeof tensors[n].name ||
        t->count > 4096)
      continue;
    model_tensor_t *m = &tensors[n++];
    memcpy(m->name, t->name, strlen(t->name) + 1);
    m->n_dims = t->n_dims;
    for (int d = 0; d < t->n_dims; d++) m->shape[d] = t->shape[d];
    m->count = t->count;
    m->offset = total;
    total += t->count;
  }
  params = calloc(total + 1, sizeof *params);
  for (int i = 0, k = 0; i < file.n && k < n; i++) {
    const safetensors_tensor_t *t = &file.tensors[i];
    if (strcmp(t->name, tensors[k].name) != 0) continue;
    memcpy(params + tensors[k].offset, t->data, t->bytes);
    k++;
  }
  char *written = NULL;
  size_t length = 0;
  FUZZ_CHECK(safetensors_write(tensors, n, params, NULL, &written, &length) == 0, "cannot write %d tensors back", n);
  safetensors_t again;
  FUZZ_CHECK(safetensors_parse((const uint8_t *)written, length, "again", &again, error, sizeof error) == 0,
             "the written file does not parse: %s", error);
  FUZZ_CHECK(again.n == n, "%d tensors written, %d read", n, again.n);
  for (int k = 0; k < n; k++) {
    const safetensors_tensor_t *t = safetensors_find(&again, tensors[k].name);
    FUZZ_CHECK(t && t->count == tensors[k].count, "tensor %s lost", tensors[k].name);
    FUZZ_CHECK(memcmp(t->data, params + tensors[k].offset, t->bytes) == 0, "tensor %s changed", tensors[k].name);
  }
  safetensors_free(&again);
  free(written);
  free(params);
  free(tensors);
  safetensors_free(&file);
  return 0;
}
