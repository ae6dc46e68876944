/* checkpoint.h — training checkpoints: a small, general container of named tensors plus a
 * JSON document, written atomically and read back with every byte checked. It knows nothing
 * of models: the trainer decides what goes in (parameters, optimizer state, adapters, the
 * RNG state, which grown blocks are active) and under which names. It must never hand back
 * data from a file it has not fully verified.
 *
 * ---------------------------------------------------------------------------------------
 * THE FORMAT (version 1)
 *
 * A checkpoint file is four sections, one after the other. Every integer is little-endian;
 * every offset and length is in bytes.
 *
 *   offset        size  field
 *   ------------  ----  ---------------------------------------------------------------
 *   0             8     magic: 89 4D 53 43 4B 50 54 0A  ("\x89MSCKPT\n")
 *   8             4     u32 version: 1
 *   12            4     u32 flags: 0 (a version 1 reader refuses any other value)
 *   16            8     u64 json_length: bytes of the JSON document
 *   24            8     u64 file_length: bytes of the whole file, trailer included
 *   32            J     the JSON document, UTF-8, exactly json_length bytes, no NUL
 *   32 + J        P     zero bytes up to data_offset = round_up(32 + J, 64)
 *   data_offset   D     tensor data: each tensor at data_offset + its "offset"
 *   N − 12        8     u64 file_length again (N = file_length)
 *   N − 4         4     u32 CRC-32 (zlib's crc32, the one in PNG and gzip) of bytes [0, N − 4)
 *
 * so D = N − 12 − data_offset. The CRC covers every byte of the file except itself.
 *
 * The JSON document is an object with two members:
 *
 *   {"meta": {…whatever the writer stored…},
 *    "tensors": [{"name": "params", "dtype": "f32", "shape": [1001], "offset": 0,
 *                 "length": 4004}, …]}
 *
 *   meta     an object, free-form: the trainer's config, epoch, step, progress.
 *   tensors  in the order they were added; names are unique, non-empty UTF-8.
 *     dtype  "f32" (IEEE-754 binary32) or "i64" (two's complement), little-endian.
 *     shape  a list of at most CKPT_MAX_DIMS non-negative integers; [] is a scalar (one
 *            element), and any 0 makes an empty tensor (length 0).
 *     offset from data_offset; a multiple of 64 in files written here (readers require
 *            only a multiple of the element size), with zero padding between tensors.
 *     length elements × element size, exactly; offset + length ≤ D.
 *   Readers ignore members they do not know, so a writer may add some without a new version.
 *
 * Compatibility. Every future version keeps bytes 0–31 (magic, version, flags, the two
 * lengths) and the trailer as they are, so any reader can tell a truncated or damaged file
 * from a newer one. A reader refuses a version above its own, naming both.
 *
 * Why these choices.
 * - The magic's first byte is not ASCII and its last is '\n' (PNG's trick): a file that went
 *   through a text-mode transfer or is not ours fails the first eight bytes.
 * - file_length sits in the header so a truncated file says how much is missing; it sits in
 *   the trailer too, covered by the CRC, for readers that start from the end.
 * - CRC-32 detects every error burst of up to 32 bits and, for longer ones, misses one in
 *   2³²; it guards against disk and copy damage, not against tampering. zlib's crc32 runs at
 *   several GB/s here, and Python (zlib.crc32) and every language has it.
 * - Tensor offsets are relative to the data section so the JSON (whose length decides where
 *   that section starts) never has to describe itself. 64-byte alignment lets a reader map
 *   the file and use the tensors in place, with aligned vector loads.
 * - Nothing time-dependent is written: the same tensors and meta give the same bytes.
 *
 * Writing. ckpt_write lays the whole file out in one buffer and hands it to
 * util_write_file_atomic (a temporary file beside the target, write, fsync, rename), then
 * fsyncs the directory so the rename itself survives a power cut. A reader therefore sees
 * the old checkpoint or the new one, never a mix; a failed write leaves the old file as it
 * was and no temporary file behind. The buffer costs one copy of the tensors (a few MB for
 * our models; a millisecond).
 *
 * Reading. ckpt_open maps the file read-only and checks, in this order: magic, length
 * (truncated or overlong), CRC, version, flags, JSON, and every tensor's dtype, shape,
 * offset and length. Only then does it return. The tensors stay in the mapping, so reading
 * them is free; ckpt_read_f32 / ckpt_read_i64 copy one into the caller's buffer after
 * checking its element count. Since writers replace files by rename and never rewrite them
 * in place, the mapping stays valid even if a new checkpoint replaces the file meanwhile.
 * ---------------------------------------------------------------------------------------
 */
#ifndef MAPSAGE_CHECKPOINT_H
#define MAPSAGE_CHECKPOINT_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define CKPT_VERSION 1
#define CKPT_MAGIC "\x89MSCKPT\n" /* 8 bytes, no NUL */
#define CKPT_HEADER_SIZE 32
#define CKPT_TRAILER_SIZE 12
#define CKPT_ALIGN 64
#define CKPT_MAX_DIMS 8
#define CKPT_NAME_MAX 256 /* bytes in a tensor name, including the NUL */

typedef enum { CKPT_F32 = 1, CKPT_I64 = 2 } ckpt_dtype_t;

/* One tensor, as the writer holds it and as the reader found it. */
typedef struct {
  char *name;
  ckpt_dtype_t dtype;
  int ndim;
  size_t shape[CKPT_MAX_DIMS];
  size_t count;        /* elements: the product of the shape (1 when ndim is 0) */
  size_t offset;       /* bytes from the start of the data section */
  size_t length;       /* bytes: count × the element size */
  const void *data;    /* writer: the caller's memory; reader: inside the mapped file */
} ckpt_tensor_t;

/* ---------------------------------------------------------------------------------------
 * Writing
 *
 *   ckpt_writer_t w;
 *   ckpt_writer_init(&w);
 *   ckpt_writer_set_meta(&w, meta);                     // config, epoch, step, …
 *   ckpt_add_f32(&w, "params", model->params, model->n_params);
 *   ckpt_add_f32(&w, "optim_state", model->optim_state, model->n_optim_state);
 *   int64_t bytes = ckpt_write(&w, path, error, sizeof error);
 *   ckpt_writer_free(&w);
 *
 * The writer copies names but not data: every pointer must stay valid and unchanged until
 * ckpt_write returns. An add that fails returns a negative errno and is also remembered, so
 * a trainer may add everything and check once: ckpt_write then refuses, naming the first
 * problem, and writes nothing. */
typedef struct {
  ckpt_tensor_t *tensors;
  int n_tensors, capacity;
  json_t *meta;              /* a reference of our own; NULL writes {} */
  char problem[256];         /* the first failed add, "" if none */
  int problem_code;
} ckpt_writer_t;

/* Prepares an empty writer; allocates nothing. */
void ckpt_writer_init(ckpt_writer_t *writer);
/* Releases the names, the table and the meta reference. The writer may be initialised again. */
void ckpt_writer_free(ckpt_writer_t *writer);

/* Stores `meta` (an object; the writer takes a reference of its own, the caller keeps
 * theirs) as the document's "meta". Returns 0, or -EINVAL when meta is not an object. */
int ckpt_writer_set_meta(ckpt_writer_t *writer, json_t *meta);

/* Adds a tensor of `ndim` ≤ CKPT_MAX_DIMS dimensions. `data` may be NULL only when the shape
 * holds no element. Returns 0, -EINVAL (empty, overlong or non-UTF-8 name, a name already
 * added, too many dimensions, a size that overflows, NULL data) or -ENOMEM. */
int ckpt_add(ckpt_writer_t *writer, const char *name, ckpt_dtype_t dtype, const void *data,
             int ndim, const size_t *shape);
/* The same for the common one-dimensional case: shape [count]. */
int ckpt_add_f32(ckpt_writer_t *writer, const char *name, const float *data, size_t count);
int ckpt_add_i64(ckpt_writer_t *writer, const char *name, const int64_t *data, size_t count);

/* Writes the checkpoint to `path` atomically (see above). Returns the file's size in bytes,
 * or a negative errno with the reason, naming the file, in `error`: the first failed add's
 * code, -ENOMEM, -ENAMETOOLONG, or whatever the file system said (-EACCES, -ENOSPC, -EFBIG,
 * -EISDIR, …). On failure, whatever `path` held before is untouched. The writer is not
 * changed and may be written again or elsewhere. */
int64_t ckpt_write(const ckpt_writer_t *writer, const char *path, char *error, size_t error_size);

/* ---------------------------------------------------------------------------------------
 * Reading
 *
 *   ckpt_t ck;
 *   if (ckpt_open(path, &ck, error, sizeof error) != 0) { report error; }
 *   json_t *meta = ckpt_meta(&ck);                      // borrowed
 *   if (ckpt_read_f32(&ck, "params", model->params, model->n_params, error, sizeof error) != 0) …
 *   ckpt_close(&ck);
 *
 * Every field of ckpt_t is read-only for the caller; `tensors` may be walked to list what a
 * file holds. */
typedef struct {
  char path[PATH_MAX];       /* as given to ckpt_open, for messages */
  const unsigned char *map;  /* the whole file, mapped read-only */
  size_t size;
  uint32_t version;
  json_t *root;              /* the parsed JSON document */
  int n_tensors;
  ckpt_tensor_t *tensors;    /* names point into `root` */
} ckpt_t;

/* Opens and verifies the checkpoint at `path` (see "Reading" above). Returns 0, or a
 * negative errno with `error` naming the file and the reason; then nothing needs closing:
 *   -ENOENT, -EACCES, …   the file could not be opened or mapped
 *   -EINVAL               not a checkpoint: "not a MapSage checkpoint (bad magic)"
 *   -EPROTO               "truncated: expected N bytes, found M", "… longer than its header
 *                         says …", "checksum mismatch: the file is damaged …", or a
 *                         structural problem in the JSON or the tensor table
 *   -EPROTONOSUPPORT      "format version V is newer than this build reads (version 1)"
 *   -ENOMEM */
int ckpt_open(const char *path, ckpt_t *ckpt, char *error, size_t error_size);
/* Unmaps the file and frees the document. Safe on a zeroed ckpt_t. */
void ckpt_close(ckpt_t *ckpt);

/* The "meta" object the writer stored. Borrowed: valid until ckpt_close (json_incref or
 * json_deep_copy it to keep it longer). */
json_t *ckpt_meta(const ckpt_t *ckpt);

/* The tensor called `name`, or NULL. Its data points into the mapping: aligned, read-only,
 * valid until ckpt_close. */
const ckpt_tensor_t *ckpt_tensor(const ckpt_t *ckpt, const char *name);

/* Copies tensor `name` into `out`, which holds `expected_count` elements, after checking that
 * it exists (-ENOENT), has this dtype (-EINVAL) and exactly that many elements (-ERANGE);
 * each error names the file, the tensor and what differs. Returns 0 or the negative errno. */
int ckpt_read_f32(const ckpt_t *ckpt, const char *name, float *out, size_t expected_count,
                  char *error, size_t error_size);
int ckpt_read_i64(const ckpt_t *ckpt, const char *name, int64_t *out, size_t expected_count,
                  char *error, size_t error_size);

/* "f32", "i64", or NULL for a value that is not a dtype. */
const char *ckpt_dtype_name(ckpt_dtype_t dtype);

#endif
