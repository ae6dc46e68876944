/* fuzz_idx.c — libFuzzer target for the IDX reader (worker/data.c), which loads the four
 * Fashion-MNIST files of a dataset directory (gzipped, or plain: zlib reads both).
 *
 * Each input is cut into the four files at the offsets its first six bytes give (three
 * 16-bit little-endian numbers, clamped to the input), so one
 * input mutates headers, counts, pixels, labels and the agreement between the files. Besides
 * the sanitizers' verdict it checks that a refusal names its reason and that an accepted
 * dataset is what the trainer relies on: every label a class, every pixel finite, the
 * training examples split exactly into train and validation.
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"

#include "fuzz.h"

static const char *const files[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                     "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
static char directory[256];

static void write_part(int index, const uint8_t *bytes, size_t size) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", directory, files[index]);
  FILE *file = fopen(path, "wb");
  FUZZ_CHECK(file != NULL, "cannot write %s", path);
  FUZZ_CHECK(size == 0 || fwrite(bytes, 1, size, file) == size, "short write");
  fclose(file);
}

static void check_split(const data_split_t *split, const char *name) {
  for (int i = 0; i < split->n; i++) {
    FUZZ_CHECK(split->labels[i] >= 0 && split->labels[i] < CFG_CLASSES, "%s label %d is %d", name, i,
               split->labels[i]);
    for (int p = 0; p < CFG_INPUTS; p += 97)
      FUZZ_CHECK(isfinite(split->images[(size_t)i * CFG_INPUTS + p]), "%s image %d has a pixel that is not finite",
                 name, i);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (directory[0] == '\0') {
    const char *base = getenv("TMPDIR");
    snprintf(directory, sizeof directory, "%s/fuzz-idx-%d", base ? base : "/tmp", (int)getpid());
    mkdir(directory, 0700);
  }
  if (size < 6) return 0;
  const uint8_t *body = data + 6;
  size_t rest = size - 6, cuts[5] = {0, 0, 0, 0, rest};
  for (int i = 0; i < 3; i++) {
    size_t offset = (size_t)data[2 * i] | (size_t)data[2 * i + 1] << 8;
    cuts[i + 1] = offset < rest ? offset : rest;
  }
  for (int i = 1; i < 4; i++)
    if (cuts[i] < cuts[i - 1]) cuts[i] = cuts[i - 1];
  for (int i = 0; i < 4; i++) write_part(i, body + cuts[i], cuts[i + 1] - cuts[i]);

  data_set_t set;
  char error[512] = "";
  const int val_size = 1;
  int result = data_load_fashion_mnist(&set, directory, 1, val_size, 0, error, sizeof error);
  if (result != 0) {
    FUZZ_CHECK(result < 0 && error[0] != '\0', "data_load_fashion_mnist returned %d with no reason", result);
    return 0;
  }
  FUZZ_CHECK(set.val.n == val_size, "%d validation examples, %d asked", set.val.n, val_size);
  FUZZ_CHECK(set.train.n >= 1 && set.test.n >= 1, "%d training and %d test examples", set.train.n, set.test.n);
  FUZZ_CHECK(isfinite(set.mean) && isfinite(set.std) && set.std > 0, "standardised by mean %g and std %g", set.mean,
             set.std);
  check_split(&set.train, "train");
  check_split(&set.val, "val");
  check_split(&set.test, "test");
  data_free(&set);
  return 0;
}
