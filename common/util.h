/* util.h — small helpers shared by the programs: time, formatting, files. */
#ifndef MAPSAGE_UTIL_H
#define MAPSAGE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Wall-clock time in seconds (with fractions) and milliseconds since the epoch. */
double util_now(void);
int64_t util_now_ms(void);
/* Monotonic seconds, for measuring durations. */
double util_monotonic(void);

/* Formats a reason into a caller's error buffer (which may be NULL) and returns `code`:
 * `return util_error(error, size, -EINVAL, "stages[%d]: …", i);`. */
int util_error(char *error, size_t error_size, int code, const char *format, ...) __attribute__((format(printf, 4, 5)));

/* Copies `src` into `dst` of `size` bytes, always NUL-terminated; returns -ENAMETOOLONG
 * when it had to cut. */
int util_strlcpy(char *dst, const char *src, size_t size);

/* Length of the valid UTF-8 sequence at `p` (1-4), or 0 if it is not one: no overlong
 * forms, no surrogates, nothing above U+10FFFF. Reads no further than a NUL. */
size_t util_utf8_sequence(const unsigned char *p);

/* Where to cut `text` so that the first `length` bytes end on a character boundary: the
 * largest length <= `length` whose last UTF-8 sequence is whole. A line cut at a byte
 * limit must not end in half a character, which turns the whole line into invalid UTF-8
 * for everyone who reads it (JSON answers, terminals). Looks only at the `length` bytes. */
size_t util_utf8_boundary(const char *text, size_t length);

/* Copies `text` into `out` (`size` bytes, NUL-terminated) with every byte that is not
 * part of a valid UTF-8 sequence replaced by '?': for echoing what a client sent inside a
 * JSON answer, which must be valid UTF-8. */
void util_utf8_sanitize(const char *text, char *out, size_t size);

/* Reads a whole file (or stdin for "-") into a NUL-terminated buffer the caller frees.
 * Refuses files larger than `limit`. Returns 0 or -errno (-EFBIG when over the limit). */
int util_read_file(const char *path, size_t limit, char **data, size_t *length);

/* Creates a directory and its missing parents (mkdir -p). Returns 0 or -errno. */
int util_make_directories(const char *path);

/* A size in bytes: a whole number with an optional binary suffix K, M, G or T (KiB, MiB,
 * GiB, TiB; "KiB", "k", "MB" are read the same), e.g. "4G", "512M", "1073741824". A
 * fraction is allowed with a suffix ("1.5G"). Returns 0, or -EINVAL for anything else,
 * zero or a size that does not fit in size_t. */
int util_parse_size(const char *text, size_t *out);

/* Writes `length` bytes to `path` atomically and durably: a temporary file beside it,
 * fsync, rename, fsync of the directory. */
int util_write_file_atomic(const char *path, const void *data, size_t length);

/* `bytes` bytes from getrandom(2) as 2 * bytes lowercase hex digits and a NUL in `out`
 * (the runs' secrets). Returns 0 or -errno; never short: it waits for the kernel's pool. */
int util_random_hex(char *out, size_t bytes);

#endif
