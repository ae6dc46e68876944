/* fuzz_checkpoint.c — libFuzzer target for the checkpoint reader (worker/checkpoint.c), which
 * opens what the daemon hands a worker as --resume or as a teacher: a file that may be
 * damaged, truncated, or written by someone else.
 *
 * Each input is read twice: as it is, and "repaired" — its two length fields and its CRC-32
 * made to agree with its size — since random bytes almost never pass the CRC, and the
 * parsing behind it (the JSON document, the tensor table, every extent) is where the
 * reader's bugs would be. Besides the sanitizers' verdict it checks that a refusal names
 * its reason, that an accepted file's every tensor lies inside the mapping and reads back
 * with its own dtype and count, and that a wrong count or dtype is refused, not read.
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "checkpoint.h"

#include "fuzz.h"

#define TRAILER 12

static char path[256];

static void put_u64(unsigned char *p, uint64_t value) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(value >> (8 * i));
}

static void put_u32(unsigned char *p, uint32_t value) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(value >> (8 * i));
}

static void read_file(const unsigned char *bytes, size_t size) {
  FILE *file = fopen(path, "wb");
  FUZZ_CHECK(file != NULL, "cannot write %s", path);
  FUZZ_CHECK(fwrite(bytes, 1, size, file) == size || size == 0, "short write");
  fclose(file);
  ckpt_t ckpt;
  char error[512] = "";
  int result = ckpt_open(path, &ckpt, error, sizeof error);
  if (result != 0) {
    FUZZ_CHECK(result < 0 && error[0] != '\0', "ckpt_open returned %d with no reason", result);
    return;
  }
  FUZZ_CHECK(ckpt.size == size, "mapped %zu bytes of %zu", ckpt.size, size);
  FUZZ_CHECK(json_is_object(ckpt_meta(&ckpt)), "an accepted file has no meta object");
  for (int t = 0; t < ckpt.n_tensors; t++) {
    const ckpt_tensor_t *tensor = &ckpt.tensors[t];
    FUZZ_CHECK(ckpt_tensor(&ckpt, tensor->name) == tensor, "tensor %d (%s) is not found by its name", t, tensor->name);
    const size_t element = tensor->dtype == CKPT_F32 ? 4 : 8;
    FUZZ_CHECK(tensor->count * element == tensor->length, "%s: %zu elements in %zu bytes", tensor->name,
               (size_t)tensor->count, (size_t)tensor->length);
    const unsigned char *start = (const unsigned char *)tensor->data;
    FUZZ_CHECK(tensor->length == 0 || (start >= ckpt.map && start + tensor->length <= ckpt.map + ckpt.size),
               "%s lies outside the file", tensor->name);
    void *out = malloc(tensor->length + 8);
    FUZZ_CHECK(out != NULL, "out of memory");
    int read = tensor->dtype == CKPT_F32 ? ckpt_read_f32(&ckpt, tensor->name, out, tensor->count, error, sizeof error)
                                         : ckpt_read_i64(&ckpt, tensor->name, out, tensor->count, error, sizeof error);
    FUZZ_CHECK(read == 0, "%s does not read back: %s", tensor->name, error);
    read = ckpt_read_f32(&ckpt, tensor->name, out, tensor->count + 1, error, sizeof error);
    FUZZ_CHECK(read != 0, "%s read with one element too many", tensor->name);
    if (tensor->dtype == CKPT_I64 && tensor->count > 0)
      FUZZ_CHECK(ckpt_read_f32(&ckpt, tensor->name, out, tensor->count, error, sizeof error) == -EINVAL,
                 "%s (i64) read as f32", tensor->name);
    free(out);
  }
  ckpt_close(&ckpt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (path[0] == '\0') {
    const char *directory = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/fuzz-checkpoint-%d.ckpt", directory ? directory : "/tmp", (int)getpid());
  }
  read_file(data, size);
  if (size >= 32 + TRAILER) {
    unsigned char *repaired = malloc(size);
    FUZZ_CHECK(repaired != NULL, "out of memory");
    memcpy(repaired, data, size);
    put_u64(repaired + 24, size);
    put_u64(repaired + size - TRAILER, size);
    put_u32(repaired + size - 4, (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), repaired, size - 4));
    read_file(repaired, size);
    free(repaired);
  }
  unlink(path);
  return 0;
}
