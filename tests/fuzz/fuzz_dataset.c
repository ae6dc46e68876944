/* fuzz_dataset.c — libFuzzer target for the registered datasets' readers
 * (worker/dataset_formats.c) and what registration computes from what they accept
 * (worker/dataset_statistics.c).
 *
 * The first byte picks the reader: 0 a .npy array, 1 a zip archive (.npz) whose member
 * "x_train.npy" is then parsed as .npy, 2 CSV text, and otherwise a whole dataset read from
 * files: the rest of the input cut into a training and a test file (at the offset the next
 * two bytes give) in the format byte % 6 names (idx takes images and labels from each part
 * cut again in half; zlib reads plain files as well as gzipped ones). Besides the
 * sanitizers' verdict it checks that a refusal names its reason and that what is accepted
 * is what the trainer relies on: sizes that agree, every label below the class count, and
 * statistics and samples that can be computed from it.
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset_formats.h"
#include "dataset_statistics.h"

#include "fuzz.h"

static char directory[256];

static void write_file(const char *name, const uint8_t *bytes, size_t size, char *path, size_t path_size) {
  snprintf(path, path_size, "%s/%s", directory, name);
  FILE *file = fopen(path, "wb");
  FUZZ_CHECK(file != NULL, "cannot write %s", path);
  FUZZ_CHECK(size == 0 || fwrite(bytes, 1, size, file) == size, "short write");
  fclose(file);
}

static void check_npy(const uint8_t *data, size_t size) {
  dataset_npy_t array;
  char error[512] = "";
  if (dataset_npy_parse(data, size, "fuzz.npy", &array, error, sizeof error) != 0) {
    FUZZ_CHECK(error[0] != '\0', "a refused .npy with no reason");
    return;
  }
  size_t count = 1;
  for (int d = 0; d < array.n_dims; d++) count *= (size_t)array.dims[d];
  FUZZ_CHECK(count == array.count, "%zu elements for a shape of %zu", array.count, count);
  FUZZ_CHECK(array.data >= data && array.data + array.count * (size_t)(array.type[1] - '0') <= data + size,
             "the data runs past the input");
}

static void check_split(const dataset_t *set, const dataset_split_t *split) {
  FUZZ_CHECK(split->n >= 1, "an accepted split of %d examples", split->n);
  for (int i = 0; i < split->n; i++)
    FUZZ_CHECK(split->labels[i] >= 0 && split->labels[i] < set->classes, "label %d of %d classes", split->labels[i],
               set->classes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (directory[0] == '\0') {
    const char *base = getenv("TMPDIR");
    snprintf(directory, sizeof directory, "%s/fuzz-dataset-%d", base ? base : "/tmp", (int)getpid());
    mkdir(directory, 0700);
  }
  if (size < 3) return 0;
  const uint8_t selector = data[0];
  char error[1024] = "";
  if (selector == 0) {
    check_npy(data + 1, size - 1);
    return 0;
  }
  if (selector == 1) {
    uint8_t *member = NULL;
    size_t length = 0;
    if (dataset_zip_member(data + 1, size - 1, "fuzz.npz", "x_train.npy", &member, &length, error, sizeof error) == 0)
      check_npy(member, length);
    else
      FUZZ_CHECK(error[0] != '\0', "a refused archive with no reason");
    free(member);
    return 0;
  }
  if (selector == 2) {
    dataset_split_t split;
    int features = 0, is_float = 0;
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    if (dataset_csv_parse(text, size - 1, "fuzz.csv", &split, &features, &is_float, error, sizeof error) == 0) {
      FUZZ_CHECK(split.n >= 1 && features >= 1, "%d rows of %d features", split.n, features);
      FUZZ_CHECK(is_float ? split.values != NULL : split.bytes != NULL, "values of the wrong kind");
      free(split.bytes);
      free(split.values);
      free(split.labels);
    } else {
      FUZZ_CHECK(error[0] != '\0', "a refused CSV with no reason");
    }
    free(text);
    return 0;
  }
  static const char *const formats[] = {"idx", "npy", "npz", "cifar10", "cifar100", "csv"};
  const char *format = formats[selector % 6];
  const uint8_t *body = data + 3;
  size_t rest = size - 3, cut = (size_t)data[1] | (size_t)data[2] << 8;
  if (cut > rest) cut = rest;
  cfg_dataset_source_t source = {.n_train = 1, .n_test = 1};
  snprintf(source.format, sizeof source.format, "%s", format);
  snprintf(source.layout, sizeof source.layout, "auto");
  const int pairs = strcmp(format, "idx") == 0 || strcmp(format, "npy") == 0;
  if (pairs) {
    size_t half_train = cut / 2, half_test = (rest - cut) / 2;
    write_file("train-images", body, half_train, source.train[0], CFG_PATH_MAX);
    write_file("train-labels", body + half_train, cut - half_train, source.train[1], CFG_PATH_MAX);
    write_file("test-images", body + cut, half_test, source.test[0], CFG_PATH_MAX);
    write_file("test-labels", body + cut + half_test, rest - cut - half_test, source.test[1], CFG_PATH_MAX);
    source.n_train = source.n_test = 2;
  } else if (strcmp(format, "npz") == 0) {
    write_file("data.npz", body, rest, source.train[0], CFG_PATH_MAX);
    snprintf(source.test[0], CFG_PATH_MAX, "%s", source.train[0]);
  } else {
    write_file("train", body, cut, source.train[0], CFG_PATH_MAX);
    write_file("test", body + cut, rest - cut, source.test[0], CFG_PATH_MAX);
  }
  dataset_t set;
  if (dataset_read(&set, &source, error, sizeof error) != 0) {
    FUZZ_CHECK(error[0] != '\0', "dataset_read refused %s with no reason", format);
    return 0;
  }
  FUZZ_CHECK(set.classes >= 2 && set.classes <= CFG_MAX_CLASSES, "%d classes", set.classes);
  FUZZ_CHECK(set.inputs == cfg_shape_size(&set.input) && set.inputs > 0, "%d values for a %dx%dx%d example",
             set.inputs, set.input.channels, set.input.height, set.input.width);
  FUZZ_CHECK(strlen(set.checksum) == 64, "checksum %s", set.checksum);
  check_split(&set, &set.train);
  check_split(&set, &set.test);
  json_t *statistics = dataset_statistics(&set), *samples = dataset_samples(&set, 2);
  FUZZ_CHECK(statistics && samples, "no statistics for an accepted dataset");
  long long counted = 0;
  size_t index;
  json_t *count;
  json_array_foreach(json_object_get(json_object_get(statistics, "train"), "class_counts"), index, count)
    counted += json_integer_value(count);
  FUZZ_CHECK(counted == set.train.n, "class counts sum to %lld of %d examples", counted, set.train.n);
  json_decref(statistics);
  json_decref(samples);
  dataset_free(&set);
  return 0;
}
