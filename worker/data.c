/* data.c — loads Fashion-MNIST (IDX files, gzip-compressed, read with zlib) or generates
 * the synthetic set, then splits and standardises them the same way.
 *
 * Both sources first produce raw 8-bit pixels and labels; data__finish() then holds out the
 * validation examples by a shuffle seeded with the data's split_seed (never the run's seed:
 * a teacher and its students trained with different seeds must share one split), measures
 * the pixel mean and standard deviation of the whole training part (exactly, in integers;
 * before train_limit, so that runs of one split standardise alike whatever their limits),
 * applies train_limit (a prefix of the training part) and converts every split to floats
 * with one 256-entry table. The IDX format: a big-endian magic 0x0000080N (N =
 * number of dimensions, 0x08 = unsigned bytes), N big-endian 32-bit sizes, then the bytes. */
#include "data.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "dataset_formats.h"
#include "rng.h"
#include "util.h"

#define IDX_MAGIC_IMAGES 0x00000803u /* unsigned bytes, 3 dimensions: count, rows, columns */
#define IDX_MAGIC_LABELS 0x00000801u /* unsigned bytes, 1 dimension: count */
#define IDX_MAX_COUNT (1 << 20)      /* refuse absurd headers before allocating for them */

/* Raw examples as they come from a file or the generator: `inputs` values per example
 * (`channels` planes of them), 8-bit (pixels) or float (values). */
typedef struct {
  int n;
  int inputs, channels;
  uint8_t *pixels; /* n × inputs, or NULL */
  float *values;   /* n × inputs when the data is float, else NULL */
  int32_t *labels; /* n */
} data__raw_t;


static void data__raw_free(data__raw_t *raw) {
  free(raw->pixels);
  free(raw->values);
  free(raw->labels);
  memset(raw, 0, sizeof *raw);
}

/* ---------------------------------------------------------------------------------------
 * IDX files */

/* zlib's own message for a damaged stream, without the path it prefixes (ours is first). */
static int data__gz_error(gzFile file, const char *path, char *error, size_t error_size) {
  int code;
  const char *message = gzerror(file, &code);
  size_t length = strlen(path);
  if (strncmp(message, path, length) == 0 && strncmp(message + length, ": ", 2) == 0)
    message += length + 2;
  return util_error(error, error_size, -EIO, "%s: corrupt gzip data: %s", path, message);
}

/* Reads exactly `length` bytes or explains why not: a gzip error, or the stream ending
 * early (a truncated file). */
static int data__idx_read(gzFile file, const char *path, void *buffer, size_t length,
                          const char *what, char *error, size_t error_size) {
  size_t done = 0;
  while (done < length) {
    /* gzread takes an unsigned int; read in slices well under that. */
    size_t chunk = length - done < (1u << 30) ? length - done : (1u << 30);
    int got = gzread(file, (char *)buffer + done, (unsigned)chunk);
    if (got < 0) return data__gz_error(file, path, error, error_size);
    if (got == 0) {
      return util_error(error, error_size, -EIO,
                         "%s: truncated: the file ends after %zu of the %zu bytes of %s", path,
                         done, length, what);
    }
    done += (size_t)got;
  }
  return 0;
}

static uint32_t data__be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads one IDX file of unsigned bytes: images (3 dimensions, 28×28) or labels (1).
 * Allocates *data (count × item bytes); the caller frees it. */
static int data__idx_load(const char *dir, const char *name, int images, uint8_t **data,
                          int *count, char *error, size_t error_size) {
  char path[4096];
  gzFile file = NULL;
  uint8_t *bytes = NULL;
  int rc;

  if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
    return util_error(error, error_size, -ENAMETOOLONG, "%s/%s: path too long", dir, name);

  errno = 0;
  file = gzopen(path, "rb");
  if (!file) {
    rc = errno ? -errno : -ENOMEM;
    return util_error(error, error_size, rc, "%s: cannot open: %s", path, strerror(-rc));
  }
  gzbuffer(file, 1 << 17);

  uint32_t want_magic = images ? IDX_MAGIC_IMAGES : IDX_MAGIC_LABELS;
  int dims = images ? 3 : 1;
  /* The magic first, alone: a file of the wrong kind is told as such, not as truncated. */
  uint8_t header[16];
  rc = data__idx_read(file, path, header, 4, "the header", error, error_size);
  if (rc) goto fail;
  uint32_t magic = data__be32(header);
  if (magic != want_magic) {
    rc = util_error(error, error_size, -EINVAL,
                     "%s: bad magic number 0x%08x (expected 0x%08x: IDX %s of unsigned bytes)", path,
                     magic, want_magic, images ? "images" : "labels");
    goto fail;
  }
  rc = data__idx_read(file, path, header + 4, 4 * (size_t)dims, "the header", error, error_size);
  if (rc) goto fail;
  uint32_t n = data__be32(header + 4);
  if (n == 0 || n > IDX_MAX_COUNT) {
    rc = util_error(error, error_size, -EINVAL, "%s: implausible example count %u", path, n);
    goto fail;
  }
  size_t item = 1;
  if (images) {
    uint32_t rows = data__be32(header + 8), columns = data__be32(header + 12);
    if (rows != CFG_IMAGE_SIDE || columns != CFG_IMAGE_SIDE) {
      rc = util_error(error, error_size, -EINVAL, "%s: images are %u×%u, expected %d×%d", path, rows,
                       columns, CFG_IMAGE_SIDE, CFG_IMAGE_SIDE);
      goto fail;
    }
    item = CFG_INPUTS;
  }

  bytes = malloc((size_t)n * item);
  if (!bytes) {
    rc = util_error(error, error_size, -ENOMEM, "%s: out of memory for %u examples", path, n);
    goto fail;
  }
  rc = data__idx_read(file, path, bytes, (size_t)n * item, images ? "pixels" : "labels", error,
                      error_size);
  if (rc) goto fail;

  /* Nothing may follow the data: extra bytes mean the header lies about the size. Reading
   * to the end also makes zlib verify the gzip checksum. */
  uint8_t extra;
  int got = gzread(file, &extra, 1);
  if (got != 0) {
    rc = got < 0 ? data__gz_error(file, path, error, error_size)
                 : util_error(error, error_size, -EINVAL,
                               "%s: trailing data after the %u examples the header announces", path, n);
    goto fail;
  }
  if (!images) {
    for (uint32_t i = 0; i < n; i++) {
      if (bytes[i] >= CFG_CLASSES) {
        rc = util_error(error, error_size, -EINVAL, "%s: label %u of example %u is not in 0–%d",
                         path, bytes[i], i, CFG_CLASSES - 1);
        goto fail;
      }
    }
  }
  gzclose(file);
  *data = bytes;
  *count = (int)n;
  return 0;

fail:
  free(bytes);
  gzclose(file);
  return rc;
}

/* One images file and its labels file, which must agree on the count. */
static int data__idx_load_pair(const char *dir, const char *images_name,
                               const char *labels_name, data__raw_t *raw, char *error,
                               size_t error_size) {
  int n_images = 0, n_labels = 0;
  uint8_t *label_bytes = NULL;
  memset(raw, 0, sizeof *raw);
  raw->inputs = CFG_INPUTS;
  raw->channels = 1;
  int rc = data__idx_load(dir, images_name, 1, &raw->pixels, &n_images, error, error_size);
  if (rc) goto fail;
  rc = data__idx_load(dir, labels_name, 0, &label_bytes, &n_labels, error, error_size);
  if (rc) goto fail;
  raw->labels = malloc((size_t)n_labels * sizeof *raw->labels);
  if (!raw->labels) {
    rc = util_error(error, error_size, -ENOMEM, "%s/%s: out of memory", dir, labels_name);
    goto fail;
  }
  for (int i = 0; i < n_labels; i++) raw->labels[i] = label_bytes[i];
  free(label_bytes);
  label_bytes = NULL;
  if (n_images != n_labels) {
    rc = util_error(error, error_size, -EINVAL, "%s/%s: %d labels for the %d images of %s", dir,
                     labels_name, n_labels, n_images, images_name);
    goto fail;
  }
  raw->n = n_images;
  return 0;

fail:
  free(label_bytes);
  data__raw_free(raw);
  return rc;
}

/* ---------------------------------------------------------------------------------------
 * Split and standardise */

static int data__split_alloc(data_split_t *split, int n, int inputs) {
  split->n = n;
  /* One more than needed so that an empty split still owns valid (non-NULL) arrays. */
  split->images = malloc(((size_t)n * (size_t)inputs + 1) * sizeof(float));
  split->labels = malloc(((size_t)n + 1) * sizeof(int));
  return split->images && split->labels ? 0 : -ENOMEM;
}

/* Converts examples to standardised floats: 8-bit ones through one 256-entry table per
 * channel, float ones by (value − mean) / std of their channel. */
/* The statistics' channel of plane `c`: channels past DATA_MAX_CHANNELS share the last. */
static int data__channel(int c) { return c < DATA_MAX_CHANNELS ? c : DATA_MAX_CHANNELS - 1; }

/* Converts examples to standardised floats, plane by plane: 8-bit ones through one
 * 256-entry table per channel, float ones by (value − mean) / std of their channel. */
static void data__split_fill(data_split_t *split, const data__raw_t *raw, const int *indices, const float *tables,
                             const data_set_t *set) {
  const int inputs = raw->inputs, plane = inputs / raw->channels;
  for (int i = 0; i < split->n; i++) {
    int source = indices ? indices[i] : i;
    for (int c = 0; c < raw->channels; c++) {
      float *images = split->images + (size_t)i * inputs + (size_t)c * plane;
      const size_t from = (size_t)source * inputs + (size_t)c * plane;
      if (raw->values) {
        const float *values = raw->values + from;
        const double mean = set->channel_mean[data__channel(c)], std = set->channel_std[data__channel(c)];
        for (int p = 0; p < plane; p++) images[p] = (float)((values[p] - mean) / std);
      } else {
        const uint8_t *pixels = raw->pixels + from;
        const float *table = tables + data__channel(c) * 256;
        for (int p = 0; p < plane; p++) images[p] = table[pixels[p]];
      }
    }
    split->labels[i] = raw->labels[source];
  }
}

/* The per-channel mean and deviation of the training part (`indices`, n of them): exact
 * integer sums for 8-bit data, so that they do not depend on summation order or precision
 * (on the [0, 1] scale); double sums for float data. */
static void data__statistics(data_set_t *set, const data__raw_t *pool, const int *indices, int n) {
  const int inputs = pool->inputs, plane = inputs / pool->channels;
  uint64_t sum[DATA_MAX_CHANNELS] = {0}, sum_squares[DATA_MAX_CHANNELS] = {0};
  double fsum[DATA_MAX_CHANNELS] = {0}, fsum_squares[DATA_MAX_CHANNELS] = {0};
  double count[DATA_MAX_CHANNELS] = {0};
  for (int i = 0; i < n; i++) {
    for (int c = 0; c < pool->channels; c++) {
      const int k = data__channel(c);
      const size_t from = (size_t)indices[i] * inputs + (size_t)c * plane;
      if (pool->values) {
        for (int p = 0; p < plane; p++) {
          double v = pool->values[from + p];
          fsum[k] += v;
          fsum_squares[k] += v * v;
        }
      } else {
        for (int p = 0; p < plane; p++) {
          uint64_t v = pool->pixels[from + p];
          sum[k] += v;
          sum_squares[k] += v * v;
        }
      }
    }
  }
  for (int c = 0; c < pool->channels; c++) count[data__channel(c)] += (double)n * plane;
  for (int c = 0; c < pool->channels && c < DATA_MAX_CHANNELS; c++) {
    double mean, variance;
    if (pool->values) {
      mean = fsum[c] / count[c];
      variance = fsum_squares[c] / count[c] - mean * mean;
    } else {
      mean = (double)sum[c] / count[c] / 255.0;
      variance = (double)sum_squares[c] / count[c] / (255.0 * 255.0) - mean * mean;
    }
    set->channel_mean[c] = mean;
    set->channel_std[c] = variance > 1e-12 ? sqrt(variance) : 1.0; /* a blank channel stays finite */
  }
  set->mean = set->channel_mean[0];
  set->std = set->channel_std[0];
}

/* Takes the raw training pool and test set and fills `set` (whose name, shape and classes
 * the caller has set): the validation examples are val_size of the pool drawn by a shuffle
 * seeded with split_seed, or with `drawn` = 0 its first val_size (the synthetic set
 * generates them apart). The raw data stays the caller's. */
static int data__finish(data_set_t *set, const data__raw_t *pool, const data__raw_t *test, uint64_t split_seed,
                        int drawn, int val_size, int train_limit, char *error, size_t error_size) {
  int *order = NULL;
  float *tables = NULL;
  int rc;
  const char *name = set->name;

  if (val_size < 0 || val_size >= pool->n) {
    return util_error(error, error_size, -EINVAL,
                       "dataset.val_size: %d leaves no training examples (%s has %d)", val_size,
                       name, pool->n);
  }
  const int n_part = pool->n - val_size; /* the training part: what the statistics cover */
  int n_train = n_part;
  if (train_limit > 0 && train_limit < n_train) n_train = train_limit;

  order = malloc((size_t)pool->n * sizeof *order);
  tables = malloc(DATA_MAX_CHANNELS * 256 * sizeof *tables);
  if (!order || !tables) {
    rc = util_error(error, error_size, -ENOMEM, "%s: out of memory", name);
    goto fail;
  }
  for (int i = 0; i < pool->n; i++) order[i] = i;
  if (drawn) {
    rng_t rng;
    rng_seed(&rng, split_seed, RNG_STREAM_SPLIT, 0);
    rng_shuffle(&rng, order, pool->n);
  }
  const int *val_indices = order;
  const int *train_indices = order + val_size;

  data__statistics(set, pool, train_indices, n_part);
  for (int c = 0; c < DATA_MAX_CHANNELS && c < pool->channels; c++)
    for (int v = 0; v < 256; v++)
      tables[c * 256 + v] = (float)((v / 255.0 - set->channel_mean[c]) / set->channel_std[c]);

  if (data__split_alloc(&set->train, n_train, pool->inputs) || data__split_alloc(&set->val, val_size, pool->inputs) ||
      data__split_alloc(&set->test, test->n, pool->inputs)) {
    rc = util_error(error, error_size, -ENOMEM, "%s: out of memory for the float images", name);
    goto fail;
  }
  data__split_fill(&set->train, pool, train_indices, tables, set);
  data__split_fill(&set->val, pool, val_indices, tables, set);
  data__split_fill(&set->test, test, NULL, tables, set);
  free(order);
  free(tables);
  return 0;

fail:
  free(order);
  free(tables);
  data_free(set);
  return rc;
}

/* The built-in sets: 1×28×28, ten classes. */
static void data__builtin(data_set_t *set, const char *name) {
  memset(set, 0, sizeof *set);
  util_strlcpy(set->name, name, sizeof set->name);
  set->input = (cfg_shape_t){1, CFG_IMAGE_SIDE, CFG_IMAGE_SIDE, 1};
  set->inputs = CFG_INPUTS;
  set->classes = CFG_CLASSES;
}

/* ---------------------------------------------------------------------------------------
 * Public */

int data_load_fashion_mnist(data_set_t *set, const char *dir, uint64_t split_seed, int val_size,
                            int train_limit, char *error, size_t error_size) {
  data__raw_t pool = {0}, test = {0};
  if (!dir) dir = DATA_DEFAULT_DIR;
  data__builtin(set, "fashion-mnist");
  int rc = data__idx_load_pair(dir, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                               &pool, error, error_size);
  if (rc) goto done;
  rc = data__idx_load_pair(dir, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", &test,
                           error, error_size);
  if (rc) goto done;
  rc = data__finish(set, &pool, &test, split_seed, 1, val_size, train_limit, error, error_size);
done:
  data__raw_free(&pool);
  data__raw_free(&test);
  return rc;
}

/* Each class's prototype is a shared random background plus its own random pattern at
 * SYNTHETIC_CONTRAST; an example is its class's prototype under a random brightness, plus
 * per-pixel Gaussian noise, clipped to bytes. The classes overlap enough that a model has to
 * learn for a while (accuracy climbs over the first epoch, loss keeps falling after it), yet
 * an MLP separates them well within two epochs. */
#define SYNTHETIC_CONTRAST 0.2
#define SYNTHETIC_NOISE 0.45
static void data__generate(data__raw_t *raw, const float *prototypes, rng_t *rng) {
  for (int i = 0; i < raw->n; i++) {
    int label = (int)rng_below(rng, CFG_CLASSES);
    double brightness = 0.7 + 0.6 * rng_uniform_double(rng);
    const float *prototype = prototypes + (size_t)label * CFG_INPUTS;
    uint8_t *pixels = raw->pixels + (size_t)i * CFG_INPUTS;
    for (int p = 0; p < CFG_INPUTS; p++) {
      double v = brightness * prototype[p] + SYNTHETIC_NOISE * rng_normal(rng);
      v = v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v;
      pixels[p] = (uint8_t)lround(v * 255.0);
    }
    raw->labels[i] = label;
  }
}

int data_make_synthetic(data_set_t *set, uint64_t split_seed, int train_size, int test_size,
                        int val_size, int train_limit, char *error, size_t error_size) {
  data__raw_t pool = {0}, test = {0};
  float *prototypes = NULL;
  int rc;

  data__builtin(set, "synthetic");
  if (train_size < 1 || train_size > IDX_MAX_COUNT || test_size < 1 || test_size > IDX_MAX_COUNT)
    return util_error(error, error_size, -EINVAL,
                       "synthetic: train_size %d and test_size %d must be in 1–%d", train_size,
                       test_size, IDX_MAX_COUNT);

  if (val_size < 0 || val_size >= train_size)
    return util_error(error, error_size, -EINVAL,
                       "dataset.val_size: %d leaves no training examples (synthetic has %d)", val_size,
                       train_size);
  pool.n = train_size;
  pool.inputs = test.inputs = CFG_INPUTS;
  pool.channels = test.channels = 1;
  pool.pixels = malloc((size_t)train_size * CFG_INPUTS);
  pool.labels = malloc((size_t)train_size * sizeof *pool.labels);
  test.n = test_size;
  test.pixels = malloc((size_t)test_size * CFG_INPUTS);
  test.labels = malloc((size_t)test_size * sizeof *test.labels);
  prototypes = malloc((size_t)CFG_CLASSES * CFG_INPUTS * sizeof *prototypes);
  if (!pool.pixels || !pool.labels || !test.pixels || !test.labels || !prototypes) {
    rc = util_error(error, error_size, -ENOMEM, "synthetic: out of memory");
    goto done;
  }

  rng_t rng;
  rng_seed(&rng, split_seed, RNG_STREAM_SYNTHETIC, 0);
  float background[CFG_INPUTS];
  for (int p = 0; p < CFG_INPUTS; p++) background[p] = 0.25f + 0.5f * rng_uniform(&rng);
  for (int c = 0; c < CFG_CLASSES; c++)
    for (int p = 0; p < CFG_INPUTS; p++)
      prototypes[c * CFG_INPUTS + p] =
          background[p] + (float)SYNTHETIC_CONTRAST * (2.0f * rng_uniform(&rng) - 1.0f);
  /* The test examples come from their own stream: the same test set whatever train_size.
   * So do the validation examples, the pool's first val_size: runs of one split_seed and
   * val_size hold out the same examples whatever their train_size, and the training examples
   * of a smaller set are a prefix of a larger one's (drawing the hold-out from the whole pool
   * would hand a teacher trained on 2048 examples a quarter of an 8192-example student's
   * validation set). */
  rng_t test_rng, val_rng;
  rng_seed(&test_rng, split_seed, RNG_STREAM_SYNTHETIC, 1);
  rng_seed(&val_rng, split_seed, RNG_STREAM_SYNTHETIC, 2);
  data__raw_t val = {val_size, CFG_INPUTS, 1, pool.pixels, NULL, pool.labels};
  data__raw_t train = {train_size - val_size, CFG_INPUTS, 1, pool.pixels + (size_t)val_size * CFG_INPUTS, NULL,
                       pool.labels + val_size};
  data__generate(&train, prototypes, &rng);
  data__generate(&val, prototypes, &val_rng);
  data__generate(&test, prototypes, &test_rng);
  rc = data__finish(set, &pool, &test, split_seed, 0, val_size, train_limit, error, error_size);

done:
  free(prototypes);
  data__raw_free(&pool);
  data__raw_free(&test);
  return rc;
}

int data_load(data_set_t *set, const cfg_experiment_t *config, const char *dir, char *error,
              size_t error_size) {
  switch (config->dataset.kind) {
  case CFG_DATASET_FASHION_MNIST:
    return data_load_fashion_mnist(set, dir, config->dataset.split_seed, config->dataset.val_size,
                                   config->dataset.train_limit, error, error_size);
  case CFG_DATASET_SYNTHETIC:
    return data_make_synthetic(set, config->dataset.split_seed, config->dataset.train_size,
                               config->dataset.test_size, config->dataset.val_size,
                               config->dataset.train_limit, error, error_size);
  case CFG_DATASET_REGISTERED:
    return data_load_registered(set, config, error, error_size);
  }
  return util_error(error, error_size, -EINVAL, "unknown dataset kind %d",
                     (int)config->dataset.kind);
}

/* "T-shirt/top" → "t_shirt_top": a class name as a metric name's last part. */
static void data__slug(const char *name, char *out, size_t size) {
  size_t n = 0;
  for (const char *p = name; *p && n + 1 < size; p++) {
    unsigned char c = (unsigned char)*p;
    if (isalnum(c))
      out[n++] = (char)tolower(c);
    else if (n > 0 && out[n - 1] != '_')
      out[n++] = '_';
  }
  while (n > 0 && out[n - 1] == '_') n--;
  out[n] = 0;
}

/* A registered split as the raw examples data__finish() takes (the arrays stay `split`'s). */
static data__raw_t data__raw_of(const dataset_split_t *split, const dataset_t *source) {
  return (data__raw_t){split->n, source->inputs, source->input.channels, split->bytes, split->values, split->labels};
}

int data_load_registered(data_set_t *set, const cfg_experiment_t *config, char *error, size_t error_size) {
  const cfg_dataset_source_t *source = &config->dataset.source;
  dataset_t read;
  data__builtin(set, config->dataset.name);
  int rc = dataset_read(&read, source, error, error_size);
  if (rc) return rc;
  if (source->checksum[0] && strcmp(read.checksum, source->checksum) != 0) {
    rc = util_error(error, error_size, -ESTALE, "dataset \"%s\" changed since it was registered: its files' "
                    "SHA-256 is %s, registered %s (register it again, under a new name, to train on the new "
                    "content)", config->dataset.name, read.checksum, source->checksum);
    goto done;
  }
  if (memcmp(&read.input, &config->dataset.input, sizeof read.input) != 0 || read.classes != config->dataset.classes) {
    rc = util_error(error, error_size, -ESTALE, "dataset \"%s\": its files hold %d×%d×%d examples of %d classes, "
                    "the config says %d×%d×%d and %d", config->dataset.name, read.input.channels, read.input.height,
                    read.input.width, read.classes, config->dataset.input.channels, config->dataset.input.height,
                    config->dataset.input.width, config->dataset.classes);
    goto done;
  }
  set->input = read.input;
  set->inputs = read.inputs;
  set->classes = read.classes;
  set->class_names = calloc((size_t)read.classes, sizeof *set->class_names);
  if (!set->class_names) {
    rc = util_error(error, error_size, -ENOMEM, "%s: out of memory", config->dataset.name);
    goto done;
  }
  for (int c = 0; c < read.classes; c++) {
    if (c < read.n_names) data__slug(read.names[c], set->class_names[c], CFG_NAME_MAX);
    if (!set->class_names[c][0]) snprintf(set->class_names[c], CFG_NAME_MAX, "class%d", c);
  }
  data__raw_t pool = data__raw_of(&read.train, &read), test = data__raw_of(&read.test, &read);
  char (*names)[CFG_NAME_MAX] = set->class_names;
  set->class_names = NULL; /* data__finish frees the set on failure: keep the names apart */
  rc = data__finish(set, &pool, &test, config->dataset.split_seed, 1, config->dataset.val_size,
                    config->dataset.train_limit, error, error_size);
  if (rc) {
    free(names);
    goto done;
  }
  set->class_names = names;
done:
  dataset_free(&read);
  if (rc) data_free(set);
  return rc;
}

void data_free(data_set_t *set) {
  data_split_t *splits[] = {&set->train, &set->val, &set->test};
  for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
    free(splits[i]->images);
    free(splits[i]->labels);
  }
  free(set->class_names);
  memset(set, 0, sizeof *set);
}

const char *data_class_name(const data_set_t *set, int label) {
  static const char *const fashion[CFG_CLASSES] = {"tshirt_top", "trouser", "pullover", "dress", "coat",
                                                   "sandal", "shirt", "sneaker", "bag", "ankle_boot"};
  static const char *const synthetic[CFG_CLASSES] = {"class0", "class1", "class2", "class3", "class4",
                                                     "class5", "class6", "class7", "class8", "class9"};
  if (label < 0 || label >= set->classes) return "?";
  if (set->class_names) return set->class_names[label];
  if (label >= CFG_CLASSES) return "?";
  return strcmp(set->name, "fashion-mnist") == 0 ? fashion[label] : synthetic[label];
}
