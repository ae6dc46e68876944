/* test_data.c — checks worker/data.c: the real Fashion-MNIST loads whole and standardised,
 * the validation split and train_limit take what they should, damaged files are refused
 * with an error that names them, and the synthetic set is a function of its seed.
 *
 * Needs the dataset (MAPSAGE_DATASET_DIR, default /usr/share/datasets/fashion-mnist); damaged
 * copies are written to a temporary directory that is removed at the end. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "check.h"
#include "data.h"

static const char *dataset_dir(void) {
  const char *dir = getenv("MAPSAGE_DATASET_DIR");
  return dir && dir[0] ? dir : DATA_DEFAULT_DIR;
}

/* Mean and standard deviation over every pixel of a split. */
static void split_stats(const data_split_t *split, double *mean, double *std) {
  double sum = 0.0, sum_squares = 0.0;
  size_t n = (size_t)split->n * CFG_INPUTS;
  for (size_t i = 0; i < n; i++) {
    sum += split->images[i];
    sum_squares += (double)split->images[i] * split->images[i];
  }
  *mean = sum / n;
  *std = sqrt(sum_squares / n - *mean * *mean);
}

static void class_counts(const data_split_t *split, int counts[CFG_CLASSES], int *out_of_range) {
  memset(counts, 0, CFG_CLASSES * sizeof *counts);
  *out_of_range = 0;
  for (int i = 0; i < split->n; i++) {
    if (split->labels[i] < 0 || split->labels[i] >= CFG_CLASSES)
      (*out_of_range)++;
    else
      counts[split->labels[i]]++;
  }
}

static void test_fashion_mnist(void) {
  printf("fashion-mnist from %s\n", dataset_dir());
  data_set_t set;
  char error[512] = "";
  int rc = data_load_fashion_mnist(&set, dataset_dir(), 1, 0, 0, error, sizeof error);
  if (rc) fprintf(stderr, "  load failed: %s\n", error);
  CHECK_INT(0, rc);
  if (rc) return;
  CHECK_STR("fashion-mnist", set.name);
  CHECK_INT(60000, set.train.n);
  CHECK_INT(0, set.val.n);
  CHECK_INT(10000, set.test.n);

  /* Fashion-MNIST is balanced: 6000 of each class in training, 1000 in test. */
  int counts[CFG_CLASSES], bad;
  class_counts(&set.train, counts, &bad);
  CHECK_INT(0, bad);
  for (int c = 0; c < CFG_CLASSES; c++) CHECK_INT(6000, counts[c]);
  class_counts(&set.test, counts, &bad);
  CHECK_INT(0, bad);
  for (int c = 0; c < CFG_CLASSES; c++) CHECK_INT(1000, counts[c]);

  /* The known statistics of its training pixels on the [0, 1] scale, and standardised
   * training images with mean 0 and deviation 1; the test set, standardised with the
   * training statistics, comes close. */
  printf("  pixel mean %.4f, std %.4f\n", set.mean, set.std);
  CHECK_NEAR(0.2860, set.mean, 1e-3);
  CHECK_NEAR(0.3530, set.std, 1e-3);
  double mean, std;
  split_stats(&set.train, &mean, &std);
  printf("  standardised train: mean %.2e, std %.6f\n", mean, std);
  CHECK_NEAR(0.0, mean, 1e-4);
  CHECK_NEAR(1.0, std, 1e-4);
  split_stats(&set.test, &mean, &std);
  printf("  standardised test:  mean %.4f, std %.4f\n", mean, std);
  CHECK_NEAR(0.0, mean, 0.02);
  CHECK_NEAR(1.0, std, 0.02);
  /* Pixel 0 of the first test image (a black corner) is the standardised 0. */
  CHECK_NEAR((0.0 - set.mean) / set.std, set.test.images[0], 1e-5);
  float low = set.train.images[0], high = set.train.images[0];
  for (size_t i = 0; i < (size_t)set.train.n * CFG_INPUTS; i++) {
    low = fminf(low, set.train.images[i]);
    high = fmaxf(high, set.train.images[i]);
  }
  CHECK_NEAR(-set.mean / set.std, low, 1e-5);
  CHECK_NEAR((1.0 - set.mean) / set.std, high, 1e-5);
  int first_test_labels[5];
  for (int i = 0; i < 5; i++) first_test_labels[i] = set.test.labels[i];
  data_free(&set);
  /* The test set keeps the file's order: its first labels are 9 2 1 1 6. */
  CHECK_INT(9, first_test_labels[0]);
  CHECK_INT(2, first_test_labels[1]);
  CHECK_INT(1, first_test_labels[2]);
  CHECK_INT(1, first_test_labels[3]);
  CHECK_INT(6, first_test_labels[4]);

  /* A validation split of 5000: 55000 + 5000, every class in both, deterministic in the
   * seed, statistics from the 55000 kept for training. */
  data_set_t a, b, c;
  CHECK_INT(0, data_load_fashion_mnist(&a, dataset_dir(), 7, 5000, 0, error, sizeof error));
  CHECK_INT(0, data_load_fashion_mnist(&b, dataset_dir(), 7, 5000, 0, error, sizeof error));
  CHECK_INT(0, data_load_fashion_mnist(&c, dataset_dir(), 8, 5000, 0, error, sizeof error));
  CHECK_INT(55000, a.train.n);
  CHECK_INT(5000, a.val.n);
  CHECK_INT(10000, a.test.n);
  int val_counts[CFG_CLASSES], train_counts[CFG_CLASSES];
  class_counts(&a.val, val_counts, &bad);
  class_counts(&a.train, train_counts, &bad);
  for (int k = 0; k < CFG_CLASSES; k++) {
    CHECK(val_counts[k] > 350 && val_counts[k] < 650); /* ~500 each, by a random draw */
    CHECK_INT(6000, val_counts[k] + train_counts[k]);
  }
  split_stats(&a.train, &mean, &std);
  CHECK_NEAR(0.0, mean, 1e-4);
  CHECK(memcmp(a.val.labels, b.val.labels, 5000 * sizeof(int)) == 0);
  CHECK(memcmp(a.val.images, b.val.images, (size_t)5000 * CFG_INPUTS * sizeof(float)) == 0);
  CHECK(memcmp(a.val.labels, c.val.labels, 5000 * sizeof(int)) != 0);
  data_free(&a);
  data_free(&b);
  data_free(&c);

  /* train_limit keeps that many of the training examples; the validation set is unchanged. */
  CHECK_INT(0, data_load_fashion_mnist(&a, dataset_dir(), 7, 1000, 3000, error, sizeof error));
  CHECK_INT(3000, a.train.n);
  CHECK_INT(1000, a.val.n);
  data_free(&a);

  /* A validation set that leaves nothing to train on is an error naming the field. */
  rc = data_load_fashion_mnist(&a, dataset_dir(), 7, 60000, 0, error, sizeof error);
  CHECK_INT(-EINVAL, rc);
  CHECK(strstr(error, "val_size") != NULL);
}

/* ---------------------------------------------------------------------------------------
 * damaged files */

static char temp_dir[] = "/tmp/mapsage-test-data-XXXXXX";

static const char *const file_names[] = {
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

/* Links every real file into the temporary directory. */
static void link_real_files(void) {
  for (int i = 0; i < 4; i++) {
    char from[1024], to[1024];
    snprintf(from, sizeof from, "%s/%s", dataset_dir(), file_names[i]);
    snprintf(to, sizeof to, "%s/%s", temp_dir, file_names[i]);
    unlink(to);
    if (symlink(from, to) != 0) perror(to);
  }
}

static void remove_files(void) {
  for (int i = 0; i < 4; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", temp_dir, file_names[i]);
    unlink(path);
  }
}

/* Replaces one file with a gzip stream of the given bytes. */
static void write_gz(const char *name, const void *bytes, size_t length) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", temp_dir, name);
  unlink(path);
  gzFile file = gzopen(path, "wb");
  CHECK(file != NULL);
  if (!file) return;
  if (length) gzwrite(file, bytes, (unsigned)length);
  gzclose(file);
}

static void put_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* Loads from the temporary directory and expects failure with `file` and `reason` in the
 * error message. */
static void expect_failure(const char *what, const char *file, const char *reason) {
  data_set_t set;
  char error[512] = "";
  int rc = data_load_fashion_mnist(&set, temp_dir, 1, 0, 0, error, sizeof error);
  printf("  %-28s -> %s\n", what, error);
  CHECK(rc < 0);
  CHECK(strstr(error, file) != NULL);
  CHECK(strstr(error, reason) != NULL);
  if (rc == 0) data_free(&set);
}

static void test_damaged_files(void) {
  if (!mkdtemp(temp_dir)) {
    perror("mkdtemp");
    CHECK(0);
    return;
  }
  printf("damaged files in %s\n", temp_dir);

  /* Sanity: the linked real files load. */
  link_real_files();
  data_set_t set;
  char error[512];
  CHECK_INT(0, data_load_fashion_mnist(&set, temp_dir, 1, 0, 100, error, sizeof error));
  data_free(&set);

  /* A missing file. */
  char path[1024];
  snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte.gz", temp_dir);
  unlink(path);
  expect_failure("missing file", "t10k-labels-idx1-ubyte.gz", "cannot open");

  /* Labels where images should be: a wrong magic number. */
  link_real_files();
  unsigned char header[16];
  put_be32(header, 0x00000801);
  put_be32(header + 4, 60000);
  write_gz("train-images-idx3-ubyte.gz", header, 8);
  expect_failure("bad magic", "train-images-idx3-ubyte.gz", "magic");

  /* Images of the wrong size. */
  put_be32(header, 0x00000803);
  put_be32(header + 4, 10);
  put_be32(header + 8, 32);
  put_be32(header + 12, 32);
  write_gz("train-images-idx3-ubyte.gz", header, 16);
  expect_failure("32×32 images", "train-images-idx3-ubyte.gz", "expected 28×28");

  /* A truncated gzip file: the first 100000 bytes of the real one. */
  link_real_files();
  {
    char source[1024];
    snprintf(source, sizeof source, "%s/train-images-idx3-ubyte.gz", dataset_dir());
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", temp_dir);
    unlink(path);
    FILE *in = fopen(source, "rb"), *out = fopen(path, "wb");
    CHECK(in && out);
    if (in && out) {
      static char buffer[100000];
      size_t n = fread(buffer, 1, sizeof buffer, in);
      fwrite(buffer, 1, n, out);
    }
    if (in) fclose(in);
    if (out) fclose(out);
  }
  expect_failure("truncated gzip", "train-images-idx3-ubyte.gz", "truncated");

  /* A header that promises more images than the file holds (valid gzip, short data). */
  link_real_files();
  {
    size_t length = 16 + 2 * CFG_INPUTS;
    unsigned char *bytes = calloc(1, length);
    put_be32(bytes, 0x00000803);
    put_be32(bytes + 4, 3);
    put_be32(bytes + 8, 28);
    put_be32(bytes + 12, 28);
    write_gz("t10k-images-idx3-ubyte.gz", bytes, length);
    free(bytes);
  }
  expect_failure("short image data", "t10k-images-idx3-ubyte.gz", "truncated");

  /* A label out of range. */
  link_real_files();
  {
    unsigned char bytes[8 + 10000];
    put_be32(bytes, 0x00000801);
    put_be32(bytes + 4, 10000);
    memset(bytes + 8, 3, 10000);
    bytes[8 + 1234] = 12;
    write_gz("t10k-labels-idx1-ubyte.gz", bytes, sizeof bytes);
    /* …and, separately, one label too few. */
  }
  expect_failure("label 12", "t10k-labels-idx1-ubyte.gz", "label 12");
  {
    unsigned char bytes[8 + 9999];
    put_be32(bytes, 0x00000801);
    put_be32(bytes + 4, 9999);
    memset(bytes + 8, 3, 9999);
    write_gz("t10k-labels-idx1-ubyte.gz", bytes, sizeof bytes);
  }
  expect_failure("9999 labels", "t10k-labels-idx1-ubyte.gz", "9999 labels for the 10000 images");

  /* Trailing bytes after the announced examples. */
  {
    unsigned char bytes[8 + 10001];
    put_be32(bytes, 0x00000801);
    put_be32(bytes + 4, 10000);
    memset(bytes + 8, 3, 10001);
    write_gz("t10k-labels-idx1-ubyte.gz", bytes, sizeof bytes);
  }
  expect_failure("trailing data", "t10k-labels-idx1-ubyte.gz", "trailing data");

  /* A damaged gzip stream: flip bytes in the middle of a valid compressed labels file. */
  link_real_files();
  {
    char source[1024];
    snprintf(source, sizeof source, "%s/t10k-labels-idx1-ubyte.gz", dataset_dir());
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte.gz", temp_dir);
    unlink(path);
    FILE *in = fopen(source, "rb");
    static unsigned char buffer[1 << 16];
    size_t n = in ? fread(buffer, 1, sizeof buffer, in) : 0;
    if (in) fclose(in);
    for (size_t i = n / 2; i < n / 2 + 16 && i < n; i++) buffer[i] ^= 0x5a;
    FILE *out = fopen(path, "wb");
    if (out) {
      fwrite(buffer, 1, n, out);
      fclose(out);
    }
  }
  expect_failure("corrupt gzip stream", "t10k-labels-idx1-ubyte.gz", "corrupt");

  remove_files();
  rmdir(temp_dir);
}

/* ---------------------------------------------------------------------------------------
 * synthetic */

static void test_synthetic(void) {
  printf("synthetic\n");
  data_set_t a, b, c;
  char error[256];
  CHECK_INT(0, data_make_synthetic(&a, 11, 1000, 300, 100, 0, error, sizeof error));
  CHECK_INT(0, data_make_synthetic(&b, 11, 1000, 300, 100, 0, error, sizeof error));
  CHECK_INT(0, data_make_synthetic(&c, 12, 1000, 300, 100, 0, error, sizeof error));
  CHECK_STR("synthetic", a.name);
  CHECK_INT(900, a.train.n);
  CHECK_INT(100, a.val.n);
  CHECK_INT(300, a.test.n);
  CHECK(memcmp(a.train.images, b.train.images, (size_t)a.train.n * CFG_INPUTS * sizeof(float)) == 0);
  CHECK(memcmp(a.train.labels, b.train.labels, (size_t)a.train.n * sizeof(int)) == 0);
  CHECK(memcmp(a.test.images, b.test.images, (size_t)a.test.n * CFG_INPUTS * sizeof(float)) == 0);
  CHECK(memcmp(a.val.images, b.val.images, (size_t)a.val.n * CFG_INPUTS * sizeof(float)) == 0);
  CHECK(memcmp(a.train.images, c.train.images, (size_t)a.train.n * CFG_INPUTS * sizeof(float)) != 0);
  CHECK(memcmp(a.test.labels, c.test.labels, (size_t)a.test.n * sizeof(int)) != 0);

  int counts[CFG_CLASSES], bad;
  class_counts(&a.train, counts, &bad);
  CHECK_INT(0, bad);
  for (int k = 0; k < CFG_CLASSES; k++) CHECK(counts[k] > 50);
  class_counts(&a.test, counts, &bad);
  for (int k = 0; k < CFG_CLASSES; k++) CHECK(counts[k] > 10);
  double mean, std;
  split_stats(&a.train, &mean, &std);
  CHECK_NEAR(0.0, mean, 1e-4);
  CHECK_NEAR(1.0, std, 1e-4);

  /* The classes are really there: an example is closer to its own class's mean image than
   * to any other (nearest class mean, computed on the training split, scored on test). */
  static double means[CFG_CLASSES][CFG_INPUTS];
  int per_class[CFG_CLASSES] = {0};
  memset(means, 0, sizeof means);
  for (int i = 0; i < a.train.n; i++) {
    per_class[a.train.labels[i]]++;
    for (int p = 0; p < CFG_INPUTS; p++) means[a.train.labels[i]][p] += a.train.images[(size_t)i * CFG_INPUTS + p];
  }
  for (int k = 0; k < CFG_CLASSES; k++)
    for (int p = 0; p < CFG_INPUTS; p++) means[k][p] /= per_class[k];
  int correct = 0;
  for (int i = 0; i < a.test.n; i++) {
    int best = 0;
    double best_distance = INFINITY;
    for (int k = 0; k < CFG_CLASSES; k++) {
      double distance = 0.0;
      for (int p = 0; p < CFG_INPUTS; p++) {
        double d = a.test.images[(size_t)i * CFG_INPUTS + p] - means[k][p];
        distance += d * d;
      }
      if (distance < best_distance) {
        best_distance = distance;
        best = k;
      }
    }
    correct += best == a.test.labels[i];
  }
  printf("  nearest class mean: %.3f test accuracy\n", (double)correct / a.test.n);
  CHECK(correct > 0.9 * a.test.n);

  data_free(&a);
  data_free(&b);
  data_free(&c);

  /* Sizes that make no sense are refused. */
  CHECK_INT(-EINVAL, data_make_synthetic(&a, 1, 100, 10, 100, 0, error, sizeof error));
  CHECK(strstr(error, "val_size") != NULL);
  CHECK_INT(-EINVAL, data_make_synthetic(&a, 1, 0, 10, 0, 0, error, sizeof error));

  /* Through data_load with a config, as the worker calls it. */
  cfg_experiment_t config;
  memset(&config, 0, sizeof config);
  config.seed = 11;
  config.dataset.kind = CFG_DATASET_SYNTHETIC;
  config.dataset.train_size = 1000;
  config.dataset.test_size = 300;
  config.dataset.val_size = 100;
  config.dataset.train_limit = 500;
  CHECK_INT(0, data_load(&a, &config, NULL, error, sizeof error));
  CHECK_INT(500, a.train.n);
  CHECK_INT(100, a.val.n);
  CHECK_INT(300, a.test.n);
  data_free(&a);
}

#define LAYERS "\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 10}]}"

/* The split is the data's: two runs with different seeds and the same split_seed hold out
 * the same examples, standardised alike (whatever their train_limit); another split_seed
 * holds out others. Through the config, as the worker loads it. */
static void load_config(data_set_t *set, const char *json) {
  static cfg_experiment_t config;
  cfg_errors_t errors;
  char error[512];
  CHECK_INT(0, cfg_parse(json, strlen(json), &config, &errors));
  CHECK_INT(0, data_load(set, &config, NULL, error, sizeof error));
}

static void test_split_seed(void) {
  data_set_t a, b, c, d;
  load_config(&a, "{\"seed\": 1, \"dataset\": {\"name\": \"synthetic\", \"split_seed\": 5}, " LAYERS "}");
  load_config(&b, "{\"seed\": 2, \"dataset\": {\"name\": \"synthetic\", \"split_seed\": 5, \"train_limit\": 300}, " LAYERS "}");
  load_config(&c, "{\"seed\": 1, \"dataset\": {\"name\": \"synthetic\", \"split_seed\": 6}, " LAYERS "}");
  load_config(&d, "{\"seed\": 9, \"dataset\": {\"name\": \"synthetic\"}, " LAYERS "}");
  CHECK_INT(256, a.val.n);
  CHECK_INT(256, b.val.n);
  CHECK_INT(300, b.train.n);
  CHECK(memcmp(a.val.labels, b.val.labels, 256 * sizeof(int)) == 0);
  CHECK(memcmp(a.val.images, b.val.images, (size_t)256 * CFG_INPUTS * sizeof(float)) == 0);
  CHECK(memcmp(a.test.images, b.test.images, (size_t)a.test.n * CFG_INPUTS * sizeof(float)) == 0);
  CHECK(memcmp(a.train.images, b.train.images, (size_t)300 * CFG_INPUTS * sizeof(float)) == 0); /* a prefix */
  CHECK(a.mean == b.mean && a.std == b.std);
  CHECK(memcmp(a.val.images, c.val.images, (size_t)256 * CFG_INPUTS * sizeof(float)) != 0);
  CHECK(a.mean != c.mean);
  /* Without split_seed: CFG_SPLIT_SEED, whatever the seed. */
  data_set_t e;
  char error[256];
  CHECK_INT(0, data_make_synthetic(&e, CFG_SPLIT_SEED, 2048, 512, 256, 0, error, sizeof error));
  CHECK(memcmp(d.val.images, e.val.images, (size_t)256 * CFG_INPUTS * sizeof(float)) == 0);
  data_free(&e);
  /* Another synthetic train_size: the same validation examples, and the smaller set's
   * training examples a prefix of the larger one's (as raw pixels: the statistics differ). */
  data_set_t f;
  load_config(&f, "{\"seed\": 4, \"dataset\": {\"name\": \"synthetic\", \"split_seed\": 5, \"train_size\": 8192,"
              " \"val_size\": 256}, " LAYERS "}");
  CHECK_INT(8192 - 256, f.train.n);
  CHECK(memcmp(a.val.labels, f.val.labels, 256 * sizeof(int)) == 0);
  CHECK(memcmp(a.train.labels, f.train.labels, (size_t)a.train.n * sizeof(int)) == 0);
  int same = 1;
  for (size_t i = 0; i < (size_t)256 * CFG_INPUTS; i++)
    same &= lround((a.val.images[i] * a.std + a.mean) * 255.0) == lround((f.val.images[i] * f.std + f.mean) * 255.0);
  for (size_t i = 0; i < (size_t)a.train.n * CFG_INPUTS; i++)
    same &= lround((a.train.images[i] * a.std + a.mean) * 255.0) == lround((f.train.images[i] * f.std + f.mean) * 255.0);
  CHECK(same);
  CHECK(fabs(a.mean - f.mean) < 2e-3 && fabs(a.std - f.std) < 2e-3);
  data_free(&f);
  data_free(&a);
  data_free(&b);
  data_free(&c);
  data_free(&d);
}

int main(void) {
  test_synthetic();
  test_split_seed();
  test_damaged_files();
  test_fashion_mnist();
  return check_summary();
}
