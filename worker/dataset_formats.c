/* dataset_formats.c — the readers behind dataset_read(): each file is read whole into memory
 * through zlib's gzread (which passes uncompressed files through unchanged, so every format
 * may be gzipped), then parsed from the buffer, so that a short file is told as truncated
 * by a length check rather than by a failed read somewhere in the middle.
 *
 * The formats, as docs/datasets.md describes them for users:
 * - idx: images (magic 0x00000803, unsigned bytes, N × H × W) then labels (0x00000801).
 * - npy: images then labels, two .npy files; npz: one archive with x_train, y_train,
 *   x_test, y_test (Keras's names) or images, labels. Images u1 or f4 (f8 is narrowed),
 *   N×H×W, N×C×H×W or N×H×W×C (layout "auto" takes a last axis of 1, 3 or 4 after a
 *   larger one as channels last), or N×F; labels of any integer type, N or N×1.
 * - cifar10 / cifar100: records of 1 (CIFAR-100: 2, coarse then fine; the fine one is
 *   the label) label bytes and 3072 pixel bytes (3 × 32 × 32, channel-major).
 * - csv: a header row or none, a label column ("label" in the header, else the first) and
 *   the features; F features are 1×s×s images when F = s², 3×s×s when F = 3s², else 1×1×F.
 *   Integers in 0–255 throughout make 8-bit data, anything else float32. */
#include "dataset_formats.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "sha256.h"
#include "util.h"

#define DATASET_MAX_EXAMPLES 50000000

/* ---------------------------------------------------------------------------------------
 * Files */

/* Reads a whole file, gunzipping it if it is gzip; *data is NUL-terminated (for CSV). */
static int dataset__load_file(const char *path, uint8_t **data, size_t *length, char *error, size_t error_size) {
  *data = NULL;
  *length = 0;
  errno = 0;
  gzFile file = gzopen(path, "rb");
  if (!file) {
    int rc = errno ? -errno : -ENOMEM;
    return util_error(error, error_size, rc, "%s: cannot open: %s", path, strerror(-rc));
  }
  gzbuffer(file, 1 << 17);
  size_t capacity = 1 << 16, used = 0;
  uint8_t *buffer = malloc(capacity + 1);
  int rc = 0;
  if (!buffer) {
    rc = util_error(error, error_size, -ENOMEM, "%s: out of memory", path);
    goto done;
  }
  for (;;) {
    if (used == capacity) {
      if (capacity >= DATASET_FILE_LIMIT) {
        rc = util_error(error, error_size, -EFBIG, "%s: larger than %zu GiB", path, DATASET_FILE_LIMIT >> 30);
        goto done;
      }
      uint8_t *grown = realloc(buffer, 2 * capacity + 1);
      if (!grown) {
        rc = util_error(error, error_size, -ENOMEM, "%s: out of memory after %zu bytes", path, used);
        goto done;
      }
      buffer = grown;
      capacity *= 2;
    }
    size_t want = capacity - used < (1u << 30) ? capacity - used : (1u << 30);
    int got = gzread(file, buffer + used, (unsigned)want);
    if (got < 0) {
      int code;
      const char *message = gzerror(file, &code);
      rc = util_error(error, error_size, -EIO, "%s: corrupt gzip data: %s", path, message);
      goto done;
    }
    if (got == 0) break;
    used += (size_t)got;
  }
  buffer[used] = 0;
  *data = buffer;
  *length = used;
  buffer = NULL;
done:
  free(buffer);
  gzclose(file);
  return rc;
}

static int dataset__hash_file(sha256_t *hash, const char *path, char *error, size_t error_size) {
  FILE *file = fopen(path, "rb");
  if (!file) return util_error(error, error_size, -errno, "%s: cannot open: %s", path, strerror(errno));
  static __thread uint8_t chunk[1 << 16];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, file)) > 0) sha256_update(hash, chunk, got);
  int failed = ferror(file);
  fclose(file);
  if (failed) return util_error(error, error_size, -EIO, "%s: read error", path);
  return 0;
}

int dataset_checksum(const cfg_dataset_source_t *source, char checksum[65], char *error, size_t error_size) {
  sha256_t hash;
  sha256_init(&hash);
  for (int i = 0; i < source->n_train; i++) {
    int rc = dataset__hash_file(&hash, source->train[i], error, error_size);
    if (rc) return rc;
  }
  for (int i = 0; i < source->n_test; i++) {
    int rc = dataset__hash_file(&hash, source->test[i], error, error_size);
    if (rc) return rc;
  }
  if (source->names[0]) {
    int rc = dataset__hash_file(&hash, source->names, error, error_size);
    if (rc) return rc;
  }
  sha256_final_hex(&hash, checksum);
  return 0;
}

void dataset_fashion_mnist_source(cfg_dataset_source_t *source, const char *dir) {
  *source = (cfg_dataset_source_t){.n_train = 2, .n_test = 2, .classes = 10};
  util_strlcpy(source->format, "idx", sizeof source->format);
  util_strlcpy(source->layout, "auto", sizeof source->layout);
  snprintf(source->train[0], CFG_PATH_MAX, "%.900s/train-images-idx3-ubyte.gz", dir);
  snprintf(source->train[1], CFG_PATH_MAX, "%.900s/train-labels-idx1-ubyte.gz", dir);
  snprintf(source->test[0], CFG_PATH_MAX, "%.900s/t10k-images-idx3-ubyte.gz", dir);
  snprintf(source->test[1], CFG_PATH_MAX, "%.900s/t10k-labels-idx1-ubyte.gz", dir);
}

/* ---------------------------------------------------------------------------------------
 * Splits: what every reader fills */

typedef struct {
  dataset_split_t split;
  cfg_shape_t input;
  int inputs, is_float;
} dataset__part_t;

static void dataset__split_free(dataset_split_t *split) {
  free(split->bytes);
  free(split->values);
  free(split->labels);
  memset(split, 0, sizeof *split);
}

static int dataset__part_alloc(dataset__part_t *part, int n, cfg_shape_t input, int is_float, const char *what,
                               char *error, size_t error_size) {
  memset(part, 0, sizeof *part);
  part->input = input;
  part->inputs = cfg_shape_size(&input);
  part->is_float = is_float;
  part->split.n = n;
  size_t values = (size_t)n * (size_t)part->inputs + 1;
  if (is_float)
    part->split.values = malloc(values * sizeof(float));
  else
    part->split.bytes = malloc(values);
  part->split.labels = malloc(((size_t)n + 1) * sizeof(int32_t));
  if ((!part->split.values && !part->split.bytes) || !part->split.labels) {
    dataset__split_free(&part->split);
    return util_error(error, error_size, -ENOMEM, "%s: out of memory for %d examples", what, n);
  }
  return 0;
}

/* Appends `more` to `part` (both from files of one split): same shape, same value type. */
static int dataset__part_append(dataset__part_t *part, dataset__part_t *more, const char *what, char *error,
                                size_t error_size) {
  if (!part->split.labels) {
    *part = *more;
    memset(more, 0, sizeof *more);
    return 0;
  }
  if (memcmp(&part->input, &more->input, sizeof part->input) != 0 || part->is_float != more->is_float)
    return util_error(error, error_size, -EINVAL, "%s: examples are %d×%d×%d %s, the split's earlier files' "
                      "%d×%d×%d %s", what, more->input.channels, more->input.height, more->input.width,
                      more->is_float ? "float32" : "8-bit", part->input.channels, part->input.height,
                      part->input.width, part->is_float ? "float32" : "8-bit");
  size_t n = (size_t)part->split.n + (size_t)more->split.n, width = (size_t)part->inputs;
  if (n > DATASET_MAX_EXAMPLES) return util_error(error, error_size, -EFBIG, "%s: over %d examples", what,
                                                  DATASET_MAX_EXAMPLES);
  int32_t *labels = realloc(part->split.labels, (n + 1) * sizeof *labels);
  if (!labels) return util_error(error, error_size, -ENOMEM, "%s: out of memory", what);
  part->split.labels = labels;
  memcpy(labels + part->split.n, more->split.labels, (size_t)more->split.n * sizeof *labels);
  if (part->is_float) {
    float *values = realloc(part->split.values, (n * width + 1) * sizeof *values);
    if (!values) return util_error(error, error_size, -ENOMEM, "%s: out of memory", what);
    part->split.values = values;
    memcpy(values + (size_t)part->split.n * width, more->split.values, (size_t)more->split.n * width * sizeof *values);
  } else {
    uint8_t *bytes = realloc(part->split.bytes, n * width + 1);
    if (!bytes) return util_error(error, error_size, -ENOMEM, "%s: out of memory", what);
    part->split.bytes = bytes;
    memcpy(bytes + (size_t)part->split.n * width, more->split.bytes, (size_t)more->split.n * width);
  }
  part->split.n = (int)n;
  dataset__split_free(&more->split);
  return 0;
}

/* ---------------------------------------------------------------------------------------
 * IDX */

static uint32_t dataset__be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Checks an IDX file's header; fills its dimensions and where its data starts. */
static int dataset__idx_header(const uint8_t *data, size_t length, const char *path, int want_dims,
                               uint32_t dims[3], size_t *count, char *error, size_t error_size) {
  if (length < 4) return util_error(error, error_size, -EINVAL, "%s: truncated: %zu bytes, not even an IDX magic "
                                    "number", path, length);
  uint32_t magic = dataset__be32(data), want = 0x00000800u | (uint32_t)want_dims;
  if (magic != want)
    return util_error(error, error_size, -EINVAL, "%s: bad magic number 0x%08x (expected 0x%08x: IDX %s of unsigned "
                      "bytes)", path, magic, want, want_dims == 3 ? "images" : "labels");
  if (length < 4 + 4 * (size_t)want_dims)
    return util_error(error, error_size, -EINVAL, "%s: truncated: the file ends inside the header", path);
  size_t total = 1;
  for (int d = 0; d < want_dims; d++) {
    dims[d] = dataset__be32(data + 4 + 4 * d);
    if (dims[d] == 0 || dims[d] > DATASET_MAX_EXAMPLES)
      return util_error(error, error_size, -EINVAL, "%s: implausible size %u in dimension %d", path, dims[d], d);
    total *= dims[d];
    if (total > DATASET_FILE_LIMIT) return util_error(error, error_size, -EINVAL, "%s: implausible sizes", path);
  }
  size_t have = length - 4 - 4 * (size_t)want_dims;
  if (have < total)
    return util_error(error, error_size, -EINVAL, "%s: truncated: the header announces %zu bytes of data, the file "
                      "has %zu", path, total, have);
  if (have > total)
    return util_error(error, error_size, -EINVAL, "%s: trailing data: %zu bytes after the %u examples the header "
                      "announces", path, have - total, dims[0]);
  *count = total;
  return 0;
}

static int dataset__read_idx(const char *images_path, const char *labels_path, dataset__part_t *part, char *error,
                             size_t error_size) {
  uint8_t *images = NULL, *labels = NULL;
  size_t images_length, labels_length, count;
  uint32_t image_dims[3] = {0}, label_dims[3] = {0};
  int rc = dataset__load_file(images_path, &images, &images_length, error, error_size);
  if (rc) goto done;
  rc = dataset__idx_header(images, images_length, images_path, 3, image_dims, &count, error, error_size);
  if (rc) goto done;
  rc = dataset__load_file(labels_path, &labels, &labels_length, error, error_size);
  if (rc) goto done;
  rc = dataset__idx_header(labels, labels_length, labels_path, 1, label_dims, &count, error, error_size);
  if (rc) goto done;
  if (label_dims[0] != image_dims[0]) {
    rc = util_error(error, error_size, -EINVAL, "%s: %u labels for the %u images of %s", labels_path, label_dims[0],
                    image_dims[0], images_path);
    goto done;
  }
  rc = dataset__part_alloc(part, (int)image_dims[0], (cfg_shape_t){1, (int)image_dims[1], (int)image_dims[2], 1}, 0,
                           images_path, error, error_size);
  if (rc) goto done;
  memcpy(part->split.bytes, images + 16, (size_t)part->split.n * (size_t)part->inputs);
  for (int i = 0; i < part->split.n; i++) part->split.labels[i] = labels[8 + i];
done:
  free(images);
  free(labels);
  return rc;
}

/* ---------------------------------------------------------------------------------------
 * NumPy */

/* The value of `key` in the header dict: a pointer just past "'key':" and its spaces. */
static const char *dataset__npy_field(const char *header, const char *key) {
  char quoted[32];
  snprintf(quoted, sizeof quoted, "'%s'", key);
  const char *at = strstr(header, quoted);
  if (!at) return NULL;
  at += strlen(quoted);
  while (*at == ' ') at++;
  if (*at != ':') return NULL;
  at++;
  while (*at == ' ') at++;
  return at;
}

int dataset_npy_parse(const uint8_t *data, size_t length, const char *what, dataset_npy_t *array, char *error,
                      size_t error_size) {
  memset(array, 0, sizeof *array);
  if (length < 10 || memcmp(data, "\x93NUMPY", 6) != 0)
    return util_error(error, error_size, -EINVAL, "%s: not a .npy array (no \\x93NUMPY magic)", what);
  int major = data[6];
  size_t header_length, start;
  if (major == 1) {
    header_length = (size_t)data[8] | (size_t)data[9] << 8;
    start = 10;
  } else if (major == 2 || major == 3) {
    if (length < 12) return util_error(error, error_size, -EINVAL, "%s: truncated .npy header", what);
    header_length = (size_t)data[8] | (size_t)data[9] << 8 | (size_t)data[10] << 16 | (size_t)data[11] << 24;
    start = 12;
  } else {
    return util_error(error, error_size, -EINVAL, "%s: .npy format version %d is not known (1–3 are)", what, major);
  }
  if (header_length > 65536 || length - start < header_length)
    return util_error(error, error_size, -EINVAL, "%s: truncated: the .npy header is cut short", what);
  char header[65537];
  memcpy(header, data + start, header_length);
  header[header_length] = 0;

  const char *descr = dataset__npy_field(header, "descr");
  if (!descr || (descr[0] != '\'' && descr[0] != '"'))
    return util_error(error, error_size, -EINVAL, "%s: the .npy header has no 'descr'", what);
  /* '|u1', '<f4', '<i8'…: byte order, kind, size. Big-endian data would need swapping;
   * numpy writes the machine's order, which is little-endian wherever MapSage runs. */
  char order = descr[1], kind = descr[2], size = descr[3];
  if (!order || !kind || !size || descr[4] != descr[0] || (order != '<' && order != '|' && order != '=') ||
      !strchr("uif", kind) || !strchr("1248", size) || (kind == 'f' && size < '4'))
    return util_error(error, error_size, -EINVAL, "%s: element type %.*s is not supported (unsigned or signed "
                      "integers, float32 or float64, little-endian)", what,
                      (int)(strchr(descr + 1, descr[0]) ? strchr(descr + 1, descr[0]) - descr + 1 : 8), descr);
  array->type[0] = kind;
  array->type[1] = size;
  const char *fortran = dataset__npy_field(header, "fortran_order");
  if (!fortran || strncmp(fortran, "False", 5) != 0)
    return util_error(error, error_size, -EINVAL, "%s: Fortran-ordered arrays are not supported: save a C-ordered "
                      "one (numpy.ascontiguousarray)", what);
  const char *shape = dataset__npy_field(header, "shape");
  if (!shape || *shape != '(') return util_error(error, error_size, -EINVAL, "%s: the .npy header has no 'shape'", what);
  shape++;
  size_t count = 1;
  for (;;) {
    while (*shape == ' ' || *shape == ',') shape++;
    if (*shape == ')') break;
    char *end;
    errno = 0;
    long long dim = strtoll(shape, &end, 10);
    if (end == shape || errno || dim < 0 || dim > DATASET_MAX_EXAMPLES || array->n_dims == 8)
      return util_error(error, error_size, -EINVAL, "%s: unreadable shape in the .npy header", what);
    array->dims[array->n_dims++] = dim;
    count *= (size_t)dim;
    if (count > DATASET_FILE_LIMIT) return util_error(error, error_size, -EINVAL, "%s: implausible shape", what);
    shape = end;
  }
  array->count = count;
  size_t need = count * (size_t)(size - '0'), have = length - start - header_length;
  if (have < need)
    return util_error(error, error_size, -EINVAL, "%s: truncated: the shape needs %zu bytes of data, the file has %zu",
                      what, need, have);
  array->data = data + start + header_length;
  return 0;
}

/* Element i of an array of integers or floats, as a double. */
static double dataset__npy_value(const dataset_npy_t *array, size_t i) {
  const uint8_t *p = array->data + i * (size_t)(array->type[1] - '0');
  switch (array->type[0] * 16 + array->type[1]) {
  case 'u' * 16 + '1': return p[0];
  case 'i' * 16 + '1': return (int8_t)p[0];
  case 'u' * 16 + '2': { uint16_t v; memcpy(&v, p, 2); return v; }
  case 'i' * 16 + '2': { int16_t v; memcpy(&v, p, 2); return v; }
  case 'u' * 16 + '4': { uint32_t v; memcpy(&v, p, 4); return v; }
  case 'i' * 16 + '4': { int32_t v; memcpy(&v, p, 4); return v; }
  case 'u' * 16 + '8': { uint64_t v; memcpy(&v, p, 8); return (double)v; }
  case 'i' * 16 + '8': { int64_t v; memcpy(&v, p, 8); return (double)v; }
  case 'f' * 16 + '4': { float v; memcpy(&v, p, 4); return v; }
  case 'f' * 16 + '8': { double v; memcpy(&v, p, 8); return v; }
  }
  return NAN;
}

/* Images and labels from two parsed arrays; `layout` "auto", "nchw" or "nhwc". */
static int dataset__from_arrays(const dataset_npy_t *images, const dataset_npy_t *labels, const char *images_what,
                                const char *labels_what, const char *layout, dataset__part_t *part, char *error,
                                size_t error_size) {
  if (images->n_dims < 2 || images->n_dims > 4)
    return util_error(error, error_size, -EINVAL, "%s: images must be N×F, N×H×W or 4-dimensional, not %d-dimensional",
                      images_what, images->n_dims);
  if (images->type[0] == 'i' || (images->type[0] == 'u' && images->type[1] != '1'))
    return util_error(error, error_size, -EINVAL, "%s: images must be uint8 or float32 (float64 is narrowed), not %s",
                      images_what, images->type);
  if (labels->type[0] == 'f')
    return util_error(error, error_size, -EINVAL, "%s: labels must be integers, not %s", labels_what, labels->type);
  if (!(labels->n_dims == 1 || (labels->n_dims == 2 && labels->dims[1] == 1)))
    return util_error(error, error_size, -EINVAL, "%s: labels must be N or N×1, not %d-dimensional", labels_what,
                      labels->n_dims);
  int64_t n = images->dims[0];
  if (labels->dims[0] != n)
    return util_error(error, error_size, -EINVAL, "%s: %lld labels for the %lld images of %s", labels_what,
                      (long long)labels->dims[0], (long long)n, images_what);
  if (n < 1) return util_error(error, error_size, -EINVAL, "%s: no examples", images_what);
  const int64_t *d = images->dims;
  int channels_last = 0;
  cfg_shape_t input;
  if (images->n_dims == 2) {
    input = (cfg_shape_t){1, 1, (int)d[1], 1};
  } else if (images->n_dims == 3) {
    input = (cfg_shape_t){1, (int)d[1], (int)d[2], 1};
  } else {
    if (strcmp(layout, "nhwc") == 0)
      channels_last = 1;
    else if (strcmp(layout, "nchw") != 0)
      channels_last = (d[3] == 1 || d[3] == 3 || d[3] == 4) && d[1] > 4;
    input = channels_last ? (cfg_shape_t){(int)d[3], (int)d[1], (int)d[2], 1} : (cfg_shape_t){(int)d[1], (int)d[2], (int)d[3], 1};
  }
  if (input.channels < 1 || input.height < 1 || input.width < 1 || (int64_t)input.channels * input.height * input.width > (1 << 24))
    return util_error(error, error_size, -EINVAL, "%s: implausible example shape", images_what);
  int is_float = images->type[0] == 'f';
  int rc = dataset__part_alloc(part, (int)n, input, is_float, images_what, error, error_size);
  if (rc) return rc;
  const size_t width = (size_t)part->inputs, plane = (size_t)input.height * (size_t)input.width;
  for (int64_t i = 0; i < n; i++) {
    for (size_t k = 0; k < width; k++) {
      /* Source index of output value k (channel-major) of example i. */
      size_t c = k / plane, pixel = k % plane;
      size_t source = (size_t)i * width + (channels_last ? pixel * (size_t)input.channels + c : k);
      if (is_float)
        part->split.values[(size_t)i * width + k] = (float)dataset__npy_value(images, source);
      else
        part->split.bytes[(size_t)i * width + k] = images->data[source];
    }
    double label = dataset__npy_value(labels, (size_t)i);
    part->split.labels[i] = label < 0 ? -1 : label > CFG_MAX_CLASSES ? CFG_MAX_CLASSES : (int32_t)label;
  }
  return 0;
}

static int dataset__read_npy(const char *images_path, const char *labels_path, const char *layout,
                             dataset__part_t *part, char *error, size_t error_size) {
  uint8_t *images_data = NULL, *labels_data = NULL;
  size_t images_length, labels_length;
  dataset_npy_t images, labels;
  int rc = dataset__load_file(images_path, &images_data, &images_length, error, error_size);
  if (!rc) rc = dataset_npy_parse(images_data, images_length, images_path, &images, error, error_size);
  if (!rc) rc = dataset__load_file(labels_path, &labels_data, &labels_length, error, error_size);
  if (!rc) rc = dataset_npy_parse(labels_data, labels_length, labels_path, &labels, error, error_size);
  if (!rc) rc = dataset__from_arrays(&images, &labels, images_path, labels_path, layout, part, error, error_size);
  free(images_data);
  free(labels_data);
  return rc;
}

/* ---------------------------------------------------------------------------------------
 * Zip (.npz) */

static uint32_t dataset__le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t dataset__le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Inflates raw deflate data (a zip member) into exactly `size` bytes. */
/* Deflate's largest expansion: a 258-byte match from a code of 2 bits. */
#define DATASET_DEFLATE_MAX_RATIO 1032

static int dataset__inflate(const uint8_t *data, size_t length, uint8_t *out, size_t size, const char *what,
                            char *error, size_t error_size) {
  z_stream stream;
  memset(&stream, 0, sizeof stream);
  if (inflateInit2(&stream, -MAX_WBITS) != Z_OK)
    return util_error(error, error_size, -ENOMEM, "%s: cannot start zlib", what);
  int rc = 0;
  size_t in_done = 0, out_done = 0;
  int status = Z_OK;
  while (status == Z_OK) {
    size_t in_chunk = length - in_done < (1u << 30) ? length - in_done : (1u << 30);
    size_t out_chunk = size - out_done < (1u << 30) ? size - out_done : (1u << 30);
    stream.next_in = (Bytef *)(uintptr_t)(data + in_done);
    stream.avail_in = (uInt)in_chunk;
    stream.next_out = out + out_done;
    stream.avail_out = (uInt)out_chunk;
    status = inflate(&stream, Z_NO_FLUSH);
    in_done += in_chunk - stream.avail_in;
    out_done += out_chunk - stream.avail_out;
    if (status == Z_BUF_ERROR && (in_done == length || out_done == size)) break;
  }
  if (status != Z_STREAM_END || out_done != size)
    rc = util_error(error, error_size, -EINVAL, "%s: corrupt or truncated deflate data (%zu of %zu bytes)", what,
                    out_done, size);
  inflateEnd(&stream);
  return rc;
}

int dataset_zip_member(const uint8_t *data, size_t length, const char *what, const char *name, uint8_t **member,
                       size_t *member_length, char *error, size_t error_size) {
  *member = NULL;
  *member_length = 0;
  /* The end-of-central-directory record: 22 bytes plus a comment of up to 65535. */
  if (length < 22) return util_error(error, error_size, -EINVAL, "%s: not a zip archive (.npz): too short", what);
  size_t end = length - 22, lowest = length > 22 + 65535 ? length - 22 - 65535 : 0;
  while (dataset__le32(data + end) != 0x06054b50u) {
    if (end == lowest) return util_error(error, error_size, -EINVAL, "%s: not a zip archive (.npz), or truncated: no "
                                         "central directory", what);
    end--;
  }
  size_t entries = dataset__le16(data + end + 10);
  size_t offset = dataset__le32(data + end + 16);
  char names[256] = "";
  for (size_t e = 0; e < entries; e++) {
    if (offset > length || length - offset < 46 || dataset__le32(data + offset) != 0x02014b50u)
      return util_error(error, error_size, -EINVAL, "%s: corrupt zip central directory", what);
    const uint8_t *entry = data + offset;
    unsigned method = dataset__le16(entry + 10);
    uint64_t compressed = dataset__le32(entry + 20), size = dataset__le32(entry + 24);
    size_t name_length = dataset__le16(entry + 28), extra_length = dataset__le16(entry + 30);
    size_t comment_length = dataset__le16(entry + 32);
    uint64_t local = dataset__le32(entry + 42);
    if (length - offset - 46 < name_length + extra_length + comment_length)
      return util_error(error, error_size, -EINVAL, "%s: corrupt zip central directory", what);
    const char *entry_name = (const char *)entry + 46;
    /* Zip64: the sizes and offset that overflow 32 bits live in extra field 0x0001. */
    const uint8_t *extra = entry + 46 + name_length, *extra_end = extra + extra_length;
    while (extra + 4 <= extra_end) {
      unsigned id = dataset__le16(extra), field = dataset__le16(extra + 2);
      if (extra + 4 + field > extra_end) break;
      if (id == 1) {
        const uint8_t *p = extra + 4, *p_end = p + field;
        uint64_t *values[3] = {&size, &compressed, &local};
        for (int k = 0; k < 3; k++) {
          if (*values[k] != 0xffffffffu) continue;
          if (p + 8 > p_end) break;
          *values[k] = (uint64_t)dataset__le32(p) | (uint64_t)dataset__le32(p + 4) << 32;
          p += 8;
        }
      }
      extra += 4 + field;
    }
    offset += 46 + name_length + extra_length + comment_length;
    size_t listed = strlen(names);
    if (listed + name_length + 3 < sizeof names)
      snprintf(names + listed, sizeof names - listed, "%s%.*s", listed ? ", " : "", (int)name_length, entry_name);
    if (name_length != strlen(name) || memcmp(entry_name, name, name_length) != 0) continue;

    if (local > length || length - local < 30 || dataset__le32(data + local) != 0x04034b50u)
      return util_error(error, error_size, -EINVAL, "%s: %s: corrupt zip local header", what, name);
    uint64_t start = local + 30 + dataset__le16(data + local + 26) + dataset__le16(data + local + 28);
    if (start > length || length - start < compressed)
      return util_error(error, error_size, -EINVAL, "%s: %s: truncated: the member's %llu bytes run past the end", what,
                        name, (unsigned long long)compressed);
    if (size > DATASET_FILE_LIMIT) return util_error(error, error_size, -EFBIG, "%s: %s: too large", what, name);
    if (method != 0 && method != 8)
      return util_error(error, error_size, -EINVAL, "%s: %s: zip compression method %u is not supported (stored or "
                        "deflated are)", what, name, method);
    if (method == 0 && compressed != size)
      return util_error(error, error_size, -EINVAL, "%s: %s: corrupt zip entry sizes", what, name);
    /* Deflate expands at most 1032 to 1 (258 bytes from a 2-bit code): a member that claims
     * more is corrupt, and is refused before its size is allocated (a 200-byte file that
     * claimed 3.6 GiB took the fuzzer's worker past its memory limit). */
    if (method == 8 && size / DATASET_DEFLATE_MAX_RATIO > compressed)
      return util_error(error, error_size, -EINVAL, "%s: %s: corrupt zip entry sizes (%llu bytes claimed from %llu "
                        "compressed)", what, name, (unsigned long long)size, (unsigned long long)compressed);
    uint8_t *out = malloc(size + 1);
    if (!out) return util_error(error, error_size, -ENOMEM, "%s: %s: out of memory", what, name);
    if (method == 0) {
      memcpy(out, data + start, size);
    } else {
      int rc = dataset__inflate(data + start, compressed, out, size, what, error, error_size);
      if (rc) {
        free(out);
        return rc;
      }
    }
    out[size] = 0;
    *member = out;
    *member_length = size;
    return 0;
  }
  return util_error(error, error_size, -ENOENT, "%s: no member %s (it has: %s)", what, name, names[0] ? names : "none");
}

/* The split's images and labels from an .npz: x_<split>.npy and y_<split>.npy, else
 * images.npy and labels.npy. */
static int dataset__read_npz(const char *path, const char *split_name, const char *layout, dataset__part_t *part,
                             char *error, size_t error_size) {
  uint8_t *archive = NULL, *images_data = NULL, *labels_data = NULL;
  size_t archive_length, images_length, labels_length;
  char images_name[32], labels_name[32], images_what[CFG_PATH_MAX + 48], labels_what[CFG_PATH_MAX + 48];
  dataset_npy_t images, labels;
  int rc = dataset__load_file(path, &archive, &archive_length, error, error_size);
  if (rc) goto done;
  snprintf(images_name, sizeof images_name, "x_%s.npy", split_name);
  snprintf(labels_name, sizeof labels_name, "y_%s.npy", split_name);
  rc = dataset_zip_member(archive, archive_length, path, images_name, &images_data, &images_length, error, error_size);
  if (rc == -ENOENT) {
    snprintf(images_name, sizeof images_name, "images.npy");
    snprintf(labels_name, sizeof labels_name, "labels.npy");
    rc = dataset_zip_member(archive, archive_length, path, images_name, &images_data, &images_length, error,
                            error_size);
    if (rc == -ENOENT)
      rc = util_error(error, error_size, -EINVAL, "%s: holds neither x_%s.npy nor images.npy", path, split_name);
  }
  if (rc) goto done;
  rc = dataset_zip_member(archive, archive_length, path, labels_name, &labels_data, &labels_length, error, error_size);
  if (rc) goto done;
  snprintf(images_what, sizeof images_what, "%s: %s", path, images_name);
  snprintf(labels_what, sizeof labels_what, "%s: %s", path, labels_name);
  rc = dataset_npy_parse(images_data, images_length, images_what, &images, error, error_size);
  if (!rc) rc = dataset_npy_parse(labels_data, labels_length, labels_what, &labels, error, error_size);
  if (!rc) rc = dataset__from_arrays(&images, &labels, images_what, labels_what, layout, part, error, error_size);
done:
  free(archive);
  free(images_data);
  free(labels_data);
  return rc;
}

/* ---------------------------------------------------------------------------------------
 * CIFAR binary batches */

#define CIFAR_PIXELS 3072

static int dataset__read_cifar(const char *path, int label_bytes, dataset__part_t *part, char *error,
                               size_t error_size) {
  uint8_t *data = NULL;
  size_t length;
  memset(part, 0, sizeof *part);
  int rc = dataset__load_file(path, &data, &length, error, error_size);
  if (rc) return rc;
  const size_t record = (size_t)label_bytes + CIFAR_PIXELS;
  if (length == 0 || length % record != 0) {
    rc = util_error(error, error_size, -EINVAL, "%s: truncated: %zu bytes is not a whole number of %zu-byte records "
                    "(%d label byte%s and 3×32×32 pixels)", path, length, record, label_bytes,
                    label_bytes > 1 ? "s" : "");
    goto done;
  }
  if (length / record > DATASET_MAX_EXAMPLES) {
    rc = util_error(error, error_size, -EFBIG, "%s: too many records", path);
    goto done;
  }
  rc = dataset__part_alloc(part, (int)(length / record), (cfg_shape_t){3, 32, 32, 1}, 0, path, error, error_size);
  if (rc) goto done;
  for (int i = 0; i < part->split.n; i++) {
    const uint8_t *r = data + (size_t)i * record;
    part->split.labels[i] = r[label_bytes - 1]; /* CIFAR-100: coarse, then the fine label */
    memcpy(part->split.bytes + (size_t)i * CIFAR_PIXELS, r + label_bytes, CIFAR_PIXELS);
  }
done:
  free(data);
  return rc;
}

/* ---------------------------------------------------------------------------------------
 * CSV */

/* Fields of one line (commas, no quoting: numbers only); returns the count, or -1 past
 * `max`. Leaves *text at the start of the next line. */
static int dataset__csv_fields(const char **text, const char *end, const char **starts, int max) {
  const char *p = *text;
  int n = 0;
  for (;;) {
    if (n == max) return -1;
    starts[n++] = p;
    while (p < end && *p != ',' && *p != '\n') p++;
    if (p < end && *p == ',') {
      p++;
      continue;
    }
    break;
  }
  *text = p < end ? p + 1 : end;
  return n;
}

static int dataset__csv_number(const char *start, double *value) {
  char *end;
  errno = 0;
  *value = strtod(start, &end);
  while (*end == ' ' || *end == '\r' || *end == '\t') end++;
  return end != start && (*end == ',' || *end == '\n' || *end == 0) && !errno && isfinite(*value);
}

/* One row's fields: the label (an integer, clipped to what the class check refuses) and the
 * features, in order. */
static int dataset__csv_row(const char **starts, int count, int label_column, float *row, int32_t *label, int line,
                            const char *what, char *error, size_t error_size) {
  for (int c = 0, k = 0; c < count; c++) {
    double value;
    if (!dataset__csv_number(starts[c], &value))
      return util_error(error, error_size, -EINVAL, "%s: line %d, field %d is not a number", what, line, c + 1);
    if (c != label_column) {
      row[k++] = (float)value;
      continue;
    }
    if (value != floor(value))
      return util_error(error, error_size, -EINVAL, "%s: line %d: label %g is not an integer", what, line, value);
    *label = value < 0 ? -1 : value > CFG_MAX_CLASSES ? CFG_MAX_CLASSES : (int32_t)value;
  }
  return 0;
}

#define DATASET_CSV_MAX_FIELDS (1 << 20)

int dataset_csv_parse(const char *text, size_t length, const char *what, dataset_split_t *split, int *features,
                      int *is_float, char *error, size_t error_size) {
  memset(split, 0, sizeof *split);
  const char *end = text + length, *p = text;
  const char **starts = malloc(DATASET_CSV_MAX_FIELDS * sizeof *starts);
  float *values = NULL;
  int32_t *labels = NULL;
  int rc = 0;
  if (!starts) return util_error(error, error_size, -ENOMEM, "%s: out of memory", what);
  /* Rows, counted first so that one allocation holds them. */
  size_t rows = 0;
  for (const char *q = text; q < end; q++) rows += *q == '\n';
  rows += length > 0 && end[-1] != '\n';
  int columns = -1, label_column = 0, line = 0;
  size_t n = 0;
  while (p < end) {
    line++;
    const char *line_start = p;
    int count = dataset__csv_fields(&p, end, starts, DATASET_CSV_MAX_FIELDS);
    if (count < 0) {
      rc = util_error(error, error_size, -EINVAL, "%s: line %d has more than %d fields", what, line,
                      DATASET_CSV_MAX_FIELDS);
      goto done;
    }
    if (count == 1 && strspn(line_start, " \r\t") == (size_t)(p - line_start - (p[-1] == '\n'))) continue; /* blank */
    double first;
    if (columns < 0) {
      columns = count;
      if (columns < 2) {
        rc = util_error(error, error_size, -EINVAL, "%s: line 1 has %d field: a label and at least one feature are "
                        "needed", what, columns);
        goto done;
      }
      values = malloc((rows * (size_t)(columns - 1) + 1) * sizeof *values);
      labels = malloc((rows + 1) * sizeof *labels);
      if (!values || !labels) {
        rc = util_error(error, error_size, -ENOMEM, "%s: out of memory for %zu rows", what, rows);
        goto done;
      }
      if (!dataset__csv_number(starts[0], &first)) { /* a header */
        for (int c = 0; c < count; c++) {
          size_t field = strcspn(starts[c], ",\n\r");
          if (field == 5 && strncmp(starts[c], "label", 5) == 0) label_column = c;
        }
        continue;
      }
    }
    if (count != columns) {
      rc = util_error(error, error_size, -EINVAL, "%s: ragged rows: line %d has %d fields, the first line %d", what,
                      line, count, columns);
      goto done;
    }
    rc = dataset__csv_row(starts, count, label_column, values + n * (size_t)(columns - 1), &labels[n], line, what,
                          error, error_size);
    if (rc) goto done;
    n++;
  }
  if (n == 0) {
    rc = util_error(error, error_size, -EINVAL, "%s: no rows of data", what);
    goto done;
  }
  *features = columns - 1;
  *is_float = 0;
  for (size_t i = 0; i < n * (size_t)(columns - 1) && !*is_float; i++)
    *is_float = !(values[i] >= 0 && values[i] <= 255 && values[i] == floorf(values[i]));
  split->n = (int)n;
  split->labels = labels;
  labels = NULL;
  if (*is_float) {
    split->values = values;
    values = NULL;
  } else {
    split->bytes = malloc(n * (size_t)(columns - 1) + 1);
    if (!split->bytes) {
      rc = util_error(error, error_size, -ENOMEM, "%s: out of memory", what);
      dataset__split_free(split);
      goto done;
    }
    for (size_t i = 0; i < n * (size_t)(columns - 1); i++) split->bytes[i] = (uint8_t)values[i];
  }
done:
  free(starts);
  free(values);
  free(labels);
  return rc;
}

static int dataset__square_side(int n) {
  int side = (int)lround(sqrt((double)n));
  return side > 0 && side * side == n ? side : 0;
}

static int dataset__read_csv(const char *path, dataset__part_t *part, char *error, size_t error_size) {
  uint8_t *data = NULL;
  size_t length;
  int rc = dataset__load_file(path, &data, &length, error, error_size);
  if (rc) return rc;
  int features, is_float;
  memset(part, 0, sizeof *part);
  rc = dataset_csv_parse((const char *)data, length, path, &part->split, &features, &is_float, error, error_size);
  free(data);
  if (rc) return rc;
  int side = dataset__square_side(features), side3 = features % 3 == 0 ? dataset__square_side(features / 3) : 0;
  part->input = side ? (cfg_shape_t){1, side, side, 1}
                     : side3 ? (cfg_shape_t){3, side3, side3, 1} : (cfg_shape_t){1, 1, features, 1};
  part->inputs = features;
  part->is_float = is_float;
  return 0;
}

/* ---------------------------------------------------------------------------------------
 * Class names */

static int dataset__read_names(dataset_t *set, const char *path, char *error, size_t error_size) {
  uint8_t *data = NULL;
  size_t length;
  int rc = dataset__load_file(path, &data, &length, error, error_size);
  if (rc) return rc;
  set->names = calloc(CFG_MAX_CLASSES, sizeof *set->names);
  if (!set->names) {
    free(data);
    return util_error(error, error_size, -ENOMEM, "%s: out of memory", path);
  }
  char *line = (char *)data, *save = NULL;
  for (char *token = strtok_r(line, "\n", &save); token; token = strtok_r(NULL, "\n", &save)) {
    size_t n = strlen(token);
    while (n && isspace((unsigned char)token[n - 1])) token[--n] = 0;
    while (*token && isspace((unsigned char)*token)) token++;
    if (!*token) continue;
    if (set->n_names == CFG_MAX_CLASSES) {
      rc = util_error(error, error_size, -EINVAL, "%s: more than %d class names", path, CFG_MAX_CLASSES);
      break;
    }
    util_utf8_sanitize(token, set->names[set->n_names++], CFG_NAME_MAX);
  }
  free(data);
  return rc;
}

/* ---------------------------------------------------------------------------------------
 * Public */

static int dataset__read_split(const cfg_dataset_source_t *source, int test, dataset__part_t *part, char *error,
                               size_t error_size) {
  const char(*files)[CFG_PATH_MAX] = test ? source->test : source->train;
  int n_files = test ? source->n_test : source->n_train;
  const char *split_name = test ? "test" : "train";
  const char *format = source->format;
  memset(part, 0, sizeof *part);
  int pairs = strcmp(format, "idx") == 0 || strcmp(format, "npy") == 0;
  if (pairs && n_files != 2)
    return util_error(error, error_size, -EINVAL, "%s: %s needs 2 files (images, then labels), not %d", split_name,
                      format, n_files);
  if ((strcmp(format, "npz") == 0 || strcmp(format, "csv") == 0) && n_files != 1)
    return util_error(error, error_size, -EINVAL, "%s: %s needs 1 file, not %d", split_name, format, n_files);
  if (strcmp(format, "idx") == 0) return dataset__read_idx(files[0], files[1], part, error, error_size);
  if (strcmp(format, "npy") == 0) return dataset__read_npy(files[0], files[1], source->layout, part, error, error_size);
  if (strcmp(format, "npz") == 0) return dataset__read_npz(files[0], split_name, source->layout, part, error, error_size);
  if (strcmp(format, "csv") == 0) return dataset__read_csv(files[0], part, error, error_size);
  int label_bytes = strcmp(format, "cifar10") == 0 ? 1 : strcmp(format, "cifar100") == 0 ? 2 : 0;
  if (!label_bytes)
    return util_error(error, error_size, -EINVAL, "format \"%s\" is not one of idx, npy, npz, cifar10, cifar100, csv",
                      format);
  for (int i = 0; i < n_files; i++) {
    dataset__part_t batch;
    int rc = dataset__read_cifar(files[i], label_bytes, &batch, error, error_size);
    if (!rc) rc = dataset__part_append(part, &batch, files[i], error, error_size);
    dataset__split_free(&batch.split);
    if (rc) {
      dataset__split_free(&part->split);
      return rc;
    }
  }
  return 0;
}

/* Every label in [0, classes): the first that is not, named by split and example. */
static int dataset__check_labels(const dataset_t *set, const dataset_split_t *split, const char *file, char *error,
                                 size_t error_size) {
  for (int i = 0; i < split->n; i++)
    if (split->labels[i] < 0 || split->labels[i] >= set->classes)
      return util_error(error, error_size, -EINVAL, "%s: label %s%d of example %d is out of range: %d classes (from %s) "
                        "take labels 0–%d", file, split->labels[i] >= CFG_MAX_CLASSES ? "≥ " : "",
                        split->labels[i], i, set->classes, set->classes_from, set->classes - 1);
  return 0;
}

int dataset_read(dataset_t *set, const cfg_dataset_source_t *source, char *error, size_t error_size) {
  dataset__part_t train = {0}, test = {0};
  memset(set, 0, sizeof *set);
  int rc = dataset_checksum(source, set->checksum, error, error_size);
  if (rc) return rc;
  rc = dataset__read_split(source, 0, &train, error, error_size);
  if (rc) goto fail;
  rc = dataset__read_split(source, 1, &test, error, error_size);
  if (rc) goto fail;
  if (memcmp(&train.input, &test.input, sizeof train.input) != 0 || train.is_float != test.is_float) {
    rc = util_error(error, error_size, -EINVAL, "test examples are %d×%d×%d %s but training ones %d×%d×%d %s",
                    test.input.channels, test.input.height, test.input.width, test.is_float ? "float32" : "8-bit",
                    train.input.channels, train.input.height, train.input.width, train.is_float ? "float32" : "8-bit");
    goto fail;
  }
  set->input = train.input;
  set->inputs = train.inputs;
  set->is_float = train.is_float;
  set->train = train.split;
  set->test = test.split;
  memset(&train, 0, sizeof train);
  memset(&test, 0, sizeof test);
  if (source->names[0]) {
    rc = dataset__read_names(set, source->names, error, error_size);
    if (rc) goto fail;
  }
  int largest = 0;
  for (int i = 0; i < set->train.n; i++) largest = set->train.labels[i] > largest ? set->train.labels[i] : largest;
  for (int i = 0; i < set->test.n; i++) largest = set->test.labels[i] > largest ? set->test.labels[i] : largest;
  if (source->classes > 0) {
    set->classes = source->classes;
    set->classes_from = "the dataset's classes";
  } else if (set->n_names > 0) {
    set->classes = set->n_names;
    set->classes_from = "the names file";
  } else if (strncmp(source->format, "cifar", 5) == 0) {
    set->classes = strcmp(source->format, "cifar10") == 0 ? 10 : 100;
    set->classes_from = source->format;
  } else {
    set->classes = largest + 1 < 2 ? 2 : largest + 1 > CFG_MAX_CLASSES ? CFG_MAX_CLASSES : largest + 1;
    set->classes_from = "the largest label";
  }
  if (set->n_names > 0 && set->n_names != set->classes) {
    rc = util_error(error, error_size, -EINVAL, "%s: %d class names for %d classes", source->names, set->n_names,
                    set->classes);
    goto fail;
  }
  /* Labels come from the split's last file (pairs) or from each of its batches (CIFAR):
   * the message names the file, or the batches as one split. */
  char train_what[CFG_PATH_MAX + 64], test_what[CFG_PATH_MAX + 64];
  const int batches = strncmp(source->format, "cifar", 5) == 0;
  if (batches && source->n_train > 1)
    snprintf(train_what, sizeof train_what, "the training batches (%d files)", source->n_train);
  else
    snprintf(train_what, sizeof train_what, "%s", source->train[source->n_train - 1]);
  if (batches && source->n_test > 1)
    snprintf(test_what, sizeof test_what, "the test batches (%d files)", source->n_test);
  else
    snprintf(test_what, sizeof test_what, "%s", source->test[source->n_test - 1]);
  rc = dataset__check_labels(set, &set->train, train_what, error, error_size);
  if (!rc) rc = dataset__check_labels(set, &set->test, test_what, error, error_size);
  if (rc) goto fail;
  return 0;
fail:
  dataset__split_free(&train.split);
  dataset__split_free(&test.split);
  dataset_free(set);
  return rc;
}

void dataset_free(dataset_t *set) {
  dataset__split_free(&set->train);
  dataset__split_free(&set->test);
  free(set->names);
  memset(set, 0, sizeof *set);
}
