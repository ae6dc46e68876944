/* checkpoint.c — the checkpoint format of checkpoint.h: a writer that lays named tensors and
 * a JSON document out in one buffer and replaces the file atomically, and a reader that maps
 * a file and verifies all of it (length, CRC, version, JSON, every tensor's extent) before
 * handing out anything. The format's description and its reasons are in checkpoint.h. */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "util.h"

/* Tensor bytes go to and from the file as they sit in memory. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c stores tensors in host byte order, which the format fixes as little-endian"
#endif

_Static_assert(sizeof(CKPT_MAGIC) - 1 == 8, "the magic is 8 bytes");
_Static_assert(sizeof(float) == 4, "f32 is IEEE-754 binary32");

/* ---------------------------------------------------------------------------------------
 * Small helpers */

static size_t ckpt__dtype_size(ckpt_dtype_t dtype) {
  switch (dtype) {
    case CKPT_F32: return 4;
    case CKPT_I64: return 8;
  }
  return 0;
}

const char *ckpt_dtype_name(ckpt_dtype_t dtype) {
  switch (dtype) {
    case CKPT_F32: return "f32";
    case CKPT_I64: return "i64";
  }
  return NULL;
}

static void ckpt__put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void ckpt__put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t ckpt__get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static uint64_t ckpt__get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Rounds up to a multiple of CKPT_ALIGN; returns -1 on overflow. */
static int ckpt__align(size_t n, size_t *out) {
  size_t padded;
  if (__builtin_add_overflow(n, (size_t)CKPT_ALIGN - 1, &padded)) return -1;
  *out = padded / CKPT_ALIGN * CKPT_ALIGN;
  return 0;
}

/* The elements and bytes of a shape; -1 when either overflows size_t. */
static int ckpt__extent(ckpt_dtype_t dtype, int ndim, const size_t *shape, size_t *count,
                        size_t *length) {
  size_t n = 1;
  for (int i = 0; i < ndim; i++)
    if (__builtin_mul_overflow(n, shape[i], &n)) return -1;
  if (__builtin_mul_overflow(n, ckpt__dtype_size(dtype), length)) return -1;
  *count = n;
  return 0;
}

static uint32_t ckpt__crc32(const unsigned char *data, size_t length) {
  return (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), data, length);
}

/* "path: message" into the caller's buffer, if there is one. A very long path is cut to
 * its last 200 bytes ("…/run-7/epoch-3.ckpt") so that the reason still fits. */
#define CKPT_PATH_SHOWN 200
static void ckpt__error(char *error, size_t size, const char *path, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static void ckpt__error(char *error, size_t size, const char *path, const char *format, ...) {
  if (error == NULL || size == 0) return;
  size_t path_length = strlen(path);
  const char *shown = path, *ellipsis = "";
  if (path_length > CKPT_PATH_SHOWN) {
    shown = path + path_length - CKPT_PATH_SHOWN;
    while ((*shown & 0xc0) == 0x80) shown++; /* not inside a UTF-8 character */
    ellipsis = "\xe2\x80\xa6";
  }
  int used = snprintf(error, size, "%s%s: ", ellipsis, shown);
  if (used < 0 || (size_t)used >= size) return;
  va_list args;
  va_start(args, format);
  vsnprintf(error + used, size - (size_t)used, format, args);
  va_end(args);
}

/* "[10, 11]" */
static void ckpt__format_shape(char *out, size_t size, int ndim, const size_t *shape) {
  size_t used = 0;
  used += (size_t)snprintf(out, size, "[");
  for (int i = 0; i < ndim && used < size; i++)
    used += (size_t)snprintf(out + used, size - used, "%s%zu", i ? ", " : "", shape[i]);
  if (used < size) snprintf(out + used, size - used, "]");
}

/* ---------------------------------------------------------------------------------------
 * Writing */

void ckpt_writer_init(ckpt_writer_t *writer) {
  memset(writer, 0, sizeof *writer);
}

void ckpt_writer_free(ckpt_writer_t *writer) {
  for (int i = 0; i < writer->n_tensors; i++) free(writer->tensors[i].name);
  free(writer->tensors);
  json_decref(writer->meta);
  memset(writer, 0, sizeof *writer);
}

int ckpt_writer_set_meta(ckpt_writer_t *writer, json_t *meta) {
  if (!json_is_object(meta)) {
    if (writer->problem_code == 0) {
      writer->problem_code = -EINVAL;
      snprintf(writer->problem, sizeof writer->problem, "the meta must be a JSON object");
    }
    return -EINVAL;
  }
  json_incref(meta);
  json_decref(writer->meta);
  writer->meta = meta;
  return 0;
}

/* Remembers the first failed add for ckpt_write, and returns its code. */
static int ckpt__refuse(ckpt_writer_t *writer, int code, const char *name, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static int ckpt__refuse(ckpt_writer_t *writer, int code, const char *name, const char *format,
                        ...) {
  if (writer->problem_code != 0) return code;
  writer->problem_code = code;
  int used = snprintf(writer->problem, sizeof writer->problem,
                      "tensor \"%.64s\": ", name ? name : "(null)");
  if (used < 0 || (size_t)used >= sizeof writer->problem) return code;
  va_list args;
  va_start(args, format);
  vsnprintf(writer->problem + used, sizeof writer->problem - (size_t)used, format, args);
  va_end(args);
  return code;
}

int ckpt_add(ckpt_writer_t *writer, const char *name, ckpt_dtype_t dtype, const void *data,
             int ndim, const size_t *shape) {
  if (name == NULL || name[0] == '\0')
    return ckpt__refuse(writer, -EINVAL, "", "a tensor needs a name");
  size_t name_length = strlen(name);
  if (name_length >= CKPT_NAME_MAX)
    return ckpt__refuse(writer, -EINVAL, name, "the name is %zu bytes, more than %d", name_length,
                        CKPT_NAME_MAX - 1);
  json_t *utf8 = json_string(name); /* jansson accepts only valid UTF-8 */
  if (utf8 == NULL) return ckpt__refuse(writer, -EINVAL, "?", "the name is not valid UTF-8");
  json_decref(utf8);
  if (ckpt__dtype_size(dtype) == 0)
    return ckpt__refuse(writer, -EINVAL, name, "unknown dtype %d", (int)dtype);
  if (ndim < 0 || ndim > CKPT_MAX_DIMS)
    return ckpt__refuse(writer, -EINVAL, name, "%d dimensions; at most %d", ndim, CKPT_MAX_DIMS);
  if (ndim > 0 && shape == NULL) return ckpt__refuse(writer, -EINVAL, name, "no shape given");
  for (int i = 0; i < ndim; i++)
    if (shape[i] > (size_t)INT64_MAX)
      return ckpt__refuse(writer, -EINVAL, name, "dimension %d is too large", i);
  size_t count, length;
  if (ckpt__extent(dtype, ndim, shape, &count, &length) != 0)
    return ckpt__refuse(writer, -EINVAL, name, "its size overflows");
  if (data == NULL && count > 0)
    return ckpt__refuse(writer, -EINVAL, name, "no data for %zu elements", count);
  /* A linear search: checkpoints hold tens of tensors, not thousands. */
  for (int i = 0; i < writer->n_tensors; i++)
    if (strcmp(writer->tensors[i].name, name) == 0)
      return ckpt__refuse(writer, -EINVAL, name, "added twice");

  if (writer->n_tensors == writer->capacity) {
    int capacity = writer->capacity ? writer->capacity * 2 : 16;
    ckpt_tensor_t *grown = realloc(writer->tensors, (size_t)capacity * sizeof *grown);
    if (grown == NULL) return ckpt__refuse(writer, -ENOMEM, name, "out of memory");
    writer->tensors = grown;
    writer->capacity = capacity;
  }
  ckpt_tensor_t *t = &writer->tensors[writer->n_tensors];
  memset(t, 0, sizeof *t);
  t->name = strdup(name);
  if (t->name == NULL) return ckpt__refuse(writer, -ENOMEM, name, "out of memory");
  t->dtype = dtype;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->count = count;
  t->length = length;
  t->data = data;
  writer->n_tensors++;
  return 0;
}

int ckpt_add_f32(ckpt_writer_t *writer, const char *name, const float *data, size_t count) {
  return ckpt_add(writer, name, CKPT_F32, data, 1, &count);
}

int ckpt_add_i64(ckpt_writer_t *writer, const char *name, const int64_t *data, size_t count) {
  return ckpt_add(writer, name, CKPT_I64, data, 1, &count);
}

/* The JSON document for tensors whose offsets are in `offsets`. */
static json_t *ckpt__document(const ckpt_writer_t *writer, const size_t *offsets) {
  json_t *root = json_object(), *tensors = json_array();
  if (root == NULL || tensors == NULL) goto fail;
  json_t *meta = writer->meta ? json_incref(writer->meta) : json_object();
  if (json_object_set_new(root, "meta", meta) != 0) goto fail;
  for (int i = 0; i < writer->n_tensors; i++) {
    const ckpt_tensor_t *t = &writer->tensors[i];
    json_t *shape = json_array();
    if (shape == NULL) goto fail;
    for (int d = 0; d < t->ndim; d++) {
      if (json_array_append_new(shape, json_integer((json_int_t)t->shape[d])) != 0) {
        json_decref(shape);
        goto fail;
      }
    }
    json_t *entry = json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", t->name, "dtype",
                              ckpt_dtype_name(t->dtype), "shape", shape, "offset",
                              (json_int_t)offsets[i], "length", (json_int_t)t->length);
    if (entry == NULL || json_array_append_new(tensors, entry) != 0) goto fail;
  }
  if (json_object_set_new(root, "tensors", tensors) != 0) {
    tensors = NULL;
    goto fail;
  }
  return root;
fail:
  json_decref(tensors);
  json_decref(root);
  return NULL;
}

int64_t ckpt_write(const ckpt_writer_t *writer, const char *path, char *error, size_t error_size) {
  unsigned char *buffer = NULL;
  char *text = NULL;
  size_t *offsets = NULL;
  json_t *document = NULL;
  int64_t result;

  if (path == NULL || path[0] == '\0') {
    ckpt__error(error, error_size, "(checkpoint)", "no path given");
    return -EINVAL;
  }
  if (writer->problem_code != 0) {
    ckpt__error(error, error_size, path, "not written: %s", writer->problem);
    return writer->problem_code;
  }

  /* Lay the data section out: each tensor at the next multiple of CKPT_ALIGN. */
  offsets = calloc((size_t)writer->n_tensors + 1, sizeof *offsets);
  if (offsets == NULL) goto out_of_memory;
  size_t data_length = 0;
  for (int i = 0; i < writer->n_tensors; i++) {
    if (ckpt__align(data_length, &offsets[i]) != 0 ||
        __builtin_add_overflow(offsets[i], writer->tensors[i].length, &data_length))
      goto too_large;
  }

  document = ckpt__document(writer, offsets);
  if (document == NULL) goto out_of_memory;
  text = json_dumps(document, JSON_COMPACT);
  if (text == NULL) {
    ckpt__error(error, error_size, path, "the meta cannot be encoded as JSON");
    result = -EINVAL;
    goto done;
  }
  size_t json_length = strlen(text), data_offset, file_length;
  if (ckpt__align(CKPT_HEADER_SIZE + json_length, &data_offset) != 0 ||
      __builtin_add_overflow(data_offset, data_length, &file_length) ||
      __builtin_add_overflow(file_length, (size_t)CKPT_TRAILER_SIZE, &file_length) ||
      file_length > (size_t)INT64_MAX)
    goto too_large;

  /* calloc: the padding must be zeros, so the same input always gives the same bytes. */
  buffer = calloc(1, file_length);
  if (buffer == NULL) goto out_of_memory;
  memcpy(buffer, CKPT_MAGIC, 8);
  ckpt__put_u32(buffer + 8, CKPT_VERSION);
  ckpt__put_u32(buffer + 12, 0);
  ckpt__put_u64(buffer + 16, json_length);
  ckpt__put_u64(buffer + 24, file_length);
  memcpy(buffer + CKPT_HEADER_SIZE, text, json_length);
  for (int i = 0; i < writer->n_tensors; i++)
    if (writer->tensors[i].length > 0)
      memcpy(buffer + data_offset + offsets[i], writer->tensors[i].data, writer->tensors[i].length);
  unsigned char *trailer = buffer + file_length - CKPT_TRAILER_SIZE;
  ckpt__put_u64(trailer, file_length);
  ckpt__put_u32(trailer + 8, ckpt__crc32(buffer, file_length - 4));

  int rc = util_write_file_atomic(path, buffer, file_length);
  if (rc != 0) {
    if (rc == -ENAMETOOLONG)
      ckpt__error(error, error_size, path,
                  "cannot write: the path (or its temporary file's) is too long");
    else
      ckpt__error(error, error_size, path, "cannot write: %s", strerror(-rc));
    result = rc;
    goto done;
  }
  result = (int64_t)file_length;
  goto done;

out_of_memory:
  ckpt__error(error, error_size, path, "out of memory");
  result = -ENOMEM;
  goto done;
too_large:
  ckpt__error(error, error_size, path, "the checkpoint would be too large");
  result = -EFBIG;
done:
  free(buffer);
  free(text);
  json_decref(document);
  free(offsets);
  return result;
}

/* ---------------------------------------------------------------------------------------
 * Reading */

void ckpt_close(ckpt_t *ckpt) {
  if (ckpt->map != NULL) munmap((void *)ckpt->map, ckpt->size);
  free(ckpt->tensors);
  json_decref(ckpt->root);
  memset(ckpt, 0, sizeof *ckpt);
}

json_t *ckpt_meta(const ckpt_t *ckpt) {
  return json_object_get(ckpt->root, "meta");
}

const ckpt_tensor_t *ckpt_tensor(const ckpt_t *ckpt, const char *name) {
  for (int i = 0; i < ckpt->n_tensors; i++)
    if (strcmp(ckpt->tensors[i].name, name) == 0) return &ckpt->tensors[i];
  return NULL;
}

/* A non-negative JSON integer member, or -1. */
static int ckpt__get_size(const json_t *object, const char *key, size_t *out) {
  const json_t *value = json_object_get(object, key);
  if (!json_is_integer(value) || json_integer_value(value) < 0) return -1;
  *out = (size_t)json_integer_value(value);
  return 0;
}

/* Builds ckpt->tensors from the document's table, checking each entry against the data
 * section [data, data + data_length). Returns 0 or -EPROTO/-ENOMEM with the reason. */
static int ckpt__load_table(ckpt_t *ckpt, const unsigned char *data, size_t data_length,
                            char *error, size_t error_size) {
  const json_t *table = json_object_get(ckpt->root, "tensors");
  if (!json_is_array(table)) {
    ckpt__error(error, error_size, ckpt->path, "damaged: the JSON has no \"tensors\" list");
    return -EPROTO;
  }
  size_t n = json_array_size(table);
  if (n > INT_MAX) {
    ckpt__error(error, error_size, ckpt->path, "damaged: too many tensors");
    return -EPROTO;
  }
  ckpt->tensors = calloc(n ? n : 1, sizeof *ckpt->tensors);
  if (ckpt->tensors == NULL) {
    ckpt__error(error, error_size, ckpt->path, "out of memory");
    return -ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    const json_t *entry = json_array_get(table, i);
    ckpt_tensor_t *t = &ckpt->tensors[i];
    const json_t *name = json_object_get(entry, "name");
    const json_t *dtype = json_object_get(entry, "dtype");
    const json_t *shape = json_object_get(entry, "shape");
    if (!json_is_string(name) || json_string_length(name) == 0 ||
        strlen(json_string_value(name)) != json_string_length(name)) {
      ckpt__error(error, error_size, ckpt->path, "damaged: tensors[%zu] has no valid name", i);
      return -EPROTO;
    }
    const char *label = json_string_value(name);
    if (ckpt_tensor(ckpt, label) != NULL) {
      ckpt__error(error, error_size, ckpt->path, "damaged: tensor \"%s\" appears twice", label);
      return -EPROTO;
    }
    const char *dtype_name = json_string_value(dtype);
    if (dtype_name != NULL && strcmp(dtype_name, "f32") == 0) {
      t->dtype = CKPT_F32;
    } else if (dtype_name != NULL && strcmp(dtype_name, "i64") == 0) {
      t->dtype = CKPT_I64;
    } else {
      ckpt__error(error, error_size, ckpt->path,
                  "tensor \"%s\": unknown dtype (this build reads f32 and i64)", label);
      return -EPROTO;
    }
    if (!json_is_array(shape) || json_array_size(shape) > CKPT_MAX_DIMS) {
      ckpt__error(error, error_size, ckpt->path,
                  "damaged: tensor \"%s\": the shape must be a list of at most %d sizes", label,
                  CKPT_MAX_DIMS);
      return -EPROTO;
    }
    t->ndim = (int)json_array_size(shape);
    for (int d = 0; d < t->ndim; d++) {
      const json_t *size = json_array_get(shape, (size_t)d);
      if (!json_is_integer(size) || json_integer_value(size) < 0) {
        ckpt__error(error, error_size, ckpt->path,
                    "damaged: tensor \"%s\": shape[%d] is not a size", label, d);
        return -EPROTO;
      }
      t->shape[d] = (size_t)json_integer_value(size);
    }
    size_t expected_length = 0, end;
    if (ckpt__get_size(entry, "offset", &t->offset) != 0 ||
        ckpt__get_size(entry, "length", &t->length) != 0) {
      ckpt__error(error, error_size, ckpt->path,
                  "damaged: tensor \"%s\" has no valid offset and length", label);
      return -EPROTO;
    }
    char shape_text[160];
    ckpt__format_shape(shape_text, sizeof shape_text, t->ndim, t->shape);
    if (ckpt__extent(t->dtype, t->ndim, t->shape, &t->count, &expected_length) != 0) {
      ckpt__error(error, error_size, ckpt->path, "damaged: tensor \"%s\": shape %s overflows",
                  label, shape_text);
      return -EPROTO;
    }
    if (t->length != expected_length) {
      ckpt__error(error, error_size, ckpt->path,
                  "damaged: tensor \"%s\" is %zu bytes, but shape %s of %s needs %zu", label,
                  t->length, shape_text, dtype_name, expected_length);
      return -EPROTO;
    }
    if (t->offset % ckpt__dtype_size(t->dtype) != 0) {
      ckpt__error(error, error_size, ckpt->path,
                  "damaged: tensor \"%s\" starts at %zu, not a multiple of %zu", label, t->offset,
                  ckpt__dtype_size(t->dtype));
      return -EPROTO;
    }
    if (__builtin_add_overflow(t->offset, t->length, &end) || end > data_length) {
      ckpt__error(
          error, error_size, ckpt->path,
          "damaged: tensor \"%s\" (bytes %zu to %zu) runs past the data section (%zu bytes)", label,
          t->offset, t->offset + t->length, data_length);
      return -EPROTO;
    }
    t->name = (char *)label; /* owned by ckpt->root */
    t->data = data + t->offset;
    ckpt->n_tensors = (int)i + 1;
  }
  return 0;
}

int ckpt_open(const char *path, ckpt_t *ckpt, char *error, size_t error_size) {
  memset(ckpt, 0, sizeof *ckpt);
  util_strlcpy(ckpt->path, path, sizeof ckpt->path);
  int rc;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    rc = -errno;
    ckpt__error(error, error_size, path, "cannot open: %s", strerror(errno));
    return rc;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    ckpt__error(error, error_size, path, "cannot stat: %s", strerror(errno));
    goto fail;
  }
  if (!S_ISREG(st.st_mode)) {
    ckpt__error(error, error_size, path, "not a regular file");
    rc = -EINVAL;
    goto fail;
  }
  size_t size = (size_t)st.st_size;

  /* Too short for a header: tell a cut-off checkpoint from something else. */
  if (size < CKPT_HEADER_SIZE + CKPT_TRAILER_SIZE) {
    unsigned char head[CKPT_HEADER_SIZE + CKPT_TRAILER_SIZE];
    ssize_t got = pread(fd, head, size, 0);
    if (got < 0 || (size_t)got != size) {
      rc = got < 0 ? -errno : -EIO;
      ckpt__error(error, error_size, path, "cannot read: %s", strerror(-rc));
      goto fail;
    }
    if (memcmp(head, CKPT_MAGIC, size < 8 ? size : 8) == 0) {
      ckpt__error(error, error_size, path, "truncated: expected at least %d bytes, found %zu",
                  CKPT_HEADER_SIZE + CKPT_TRAILER_SIZE, size);
      rc = -EPROTO;
    } else {
      ckpt__error(error, error_size, path, "not a MapSage checkpoint (bad magic)");
      rc = -EINVAL;
    }
    goto fail;
  }

  void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  if (map == MAP_FAILED) {
    rc = -errno;
    ckpt__error(error, error_size, path, "cannot map: %s", strerror(errno));
    goto fail;
  }
  close(fd);
  fd = -1;
  ckpt->map = map;
  ckpt->size = size;
  const unsigned char *p = ckpt->map;

  /* 1. The envelope every version shares: magic, length, CRC. */
  if (memcmp(p, CKPT_MAGIC, 8) != 0) {
    ckpt__error(error, error_size, path, "not a MapSage checkpoint (bad magic)");
    rc = -EINVAL;
    goto fail;
  }
  uint64_t file_length = ckpt__get_u64(p + 24);
  if (file_length > size) {
    ckpt__error(error, error_size, path, "truncated: expected %" PRIu64 " bytes, found %zu",
                file_length, size);
    rc = -EPROTO;
    goto fail;
  }
  if (file_length < size) {
    ckpt__error(error, error_size, path,
                "expected %" PRIu64
                " bytes, found %zu: longer than its header says (damaged, or "
                "something was appended)",
                file_length, size);
    rc = -EPROTO;
    goto fail;
  }
  uint32_t stored = ckpt__get_u32(p + size - 4), computed = ckpt__crc32(p, size - 4);
  if (stored != computed) {
    ckpt__error(error, error_size, path,
                "checksum mismatch: the file is damaged (stored CRC-32 %08" PRIx32
                ", computed %08" PRIx32 ")",
                stored, computed);
    rc = -EPROTO;
    goto fail;
  }

  /* 2. Version 1's header and trailer. */
  ckpt->version = ckpt__get_u32(p + 8);
  if (ckpt->version > CKPT_VERSION) {
    ckpt__error(error, error_size, path,
                "format version %" PRIu32
                " is newer than this build reads (version %d): use a newer mapsage-worker",
                ckpt->version, CKPT_VERSION);
    rc = -EPROTONOSUPPORT;
    goto fail;
  }
  if (ckpt->version == 0) {
    ckpt__error(error, error_size, path, "damaged: format version 0 does not exist");
    rc = -EPROTO;
    goto fail;
  }
  uint32_t flags = ckpt__get_u32(p + 12);
  if (flags != 0) {
    ckpt__error(error, error_size, path, "unknown flags 0x%08" PRIx32 " for format version 1",
                flags);
    rc = -EPROTO;
    goto fail;
  }
  if (ckpt__get_u64(p + size - CKPT_TRAILER_SIZE) != file_length) {
    ckpt__error(error, error_size, path, "damaged: the trailer's length differs from the header's");
    rc = -EPROTO;
    goto fail;
  }
  uint64_t json_length = ckpt__get_u64(p + 16);
  size_t data_offset;
  if (json_length > size - CKPT_HEADER_SIZE - CKPT_TRAILER_SIZE ||
      ckpt__align(CKPT_HEADER_SIZE + (size_t)json_length, &data_offset) != 0 ||
      data_offset > size - CKPT_TRAILER_SIZE) {
    ckpt__error(error, error_size, path,
                "damaged: the JSON length (%" PRIu64 ") does not fit the file", json_length);
    rc = -EPROTO;
    goto fail;
  }

  /* 3. The document and the tensor table. */
  json_error_t json_error;
  ckpt->root = json_loadb((const char *)p + CKPT_HEADER_SIZE, (size_t)json_length,
                          JSON_REJECT_DUPLICATES, &json_error);
  if (ckpt->root == NULL) {
    ckpt__error(error, error_size, path, "damaged: invalid JSON at line %d, column %d: %s",
                json_error.line, json_error.column, json_error.text);
    rc = -EPROTO;
    goto fail;
  }
  if (!json_is_object(ckpt->root) || !json_is_object(json_object_get(ckpt->root, "meta"))) {
    ckpt__error(error, error_size, path, "damaged: the JSON has no \"meta\" object");
    rc = -EPROTO;
    goto fail;
  }
  rc = ckpt__load_table(ckpt, p + data_offset, size - CKPT_TRAILER_SIZE - data_offset, error,
                        error_size);
  if (rc != 0) goto fail;
  return 0;

fail:
  if (fd >= 0) close(fd);
  ckpt_close(ckpt);
  return rc;
}

/* Shared by ckpt_read_f32 and ckpt_read_i64. */
static int ckpt__read(const ckpt_t *ckpt, const char *name, ckpt_dtype_t dtype, void *out,
                      size_t expected_count, char *error, size_t error_size) {
  const ckpt_tensor_t *t = ckpt_tensor(ckpt, name);
  if (t == NULL) {
    char have[512] = "";
    size_t used = 0;
    for (int i = 0; i < ckpt->n_tensors && used < sizeof have; i++)
      used += (size_t)snprintf(have + used, sizeof have - used, "%s%s", i ? ", " : "",
                               ckpt->tensors[i].name);
    ckpt__error(error, error_size, ckpt->path, "no tensor \"%s\" (it has: %s)", name,
                ckpt->n_tensors ? have : "none");
    return -ENOENT;
  }
  if (t->dtype != dtype) {
    ckpt__error(error, error_size, ckpt->path, "tensor \"%s\" is %s, not %s", name,
                ckpt_dtype_name(t->dtype), ckpt_dtype_name(dtype));
    return -EINVAL;
  }
  if (t->count != expected_count) {
    char shape_text[160];
    ckpt__format_shape(shape_text, sizeof shape_text, t->ndim, t->shape);
    ckpt__error(error, error_size, ckpt->path,
                "tensor \"%s\" has %zu elements (shape %s), expected %zu", name, t->count,
                shape_text, expected_count);
    return -ERANGE;
  }
  if (t->length > 0) memcpy(out, t->data, t->length);
  return 0;
}

int ckpt_read_f32(const ckpt_t *ckpt, const char *name, float *out, size_t expected_count,
                  char *error, size_t error_size) {
  return ckpt__read(ckpt, name, CKPT_F32, out, expected_count, error, error_size);
}

int ckpt_read_i64(const ckpt_t *ckpt, const char *name, int64_t *out, size_t expected_count,
                  char *error, size_t error_size) {
  return ckpt__read(ckpt, name, CKPT_I64, out, expected_count, error, error_size);
}
