/* util.c — small helpers shared by the programs: time, strings, whole-file I/O. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double util_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int64_t util_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double util_monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int util_error(char *error, size_t error_size, int code, const char *format, ...) {
  if (error && error_size > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
  }
  return code;
}

int util_strlcpy(char *dst, const char *src, size_t size) {
  size_t length = strlen(src);
  if (size == 0) return -ENAMETOOLONG;
  if (length >= size) {
    memcpy(dst, src, size - 1);
    dst[size - 1] = '\0';
    return -ENAMETOOLONG;
  }
  memcpy(dst, src, length + 1);
  return 0;
}

size_t util_utf8_sequence(const unsigned char *p) {
  if (p[0] < 0x80) return 1;
  size_t length = p[0] >= 0xF0 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC2 ? 2 : 0;
  if (length == 0 || p[0] > 0xF4) return 0;
  for (size_t i = 1; i < length; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  if (length == 3 && ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0))) return 0;
  if (length == 4 && ((p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] >= 0x90))) return 0;
  return length;
}

size_t util_utf8_boundary(const char *text, size_t length) {
  const unsigned char *p = (const unsigned char *)text;
  /* Back over the continuation bytes at the end (three at most) to the byte before them. */
  size_t lead = length;
  while (lead > 0 && length - lead < 3 && (p[lead - 1] & 0xC0) == 0x80) lead--;
  if (lead == 0) return length;
  lead--;
  size_t expected = p[lead] >= 0xF0 ? 4 : p[lead] >= 0xE0 ? 3 : p[lead] >= 0xC0 ? 2 : 1;
  return length - lead < expected ? lead : length;
}

void util_utf8_sanitize(const char *text, char *out, size_t size) {
  const unsigned char *p = (const unsigned char *)text;
  size_t used = 0;
  while (*p && used + 1 < size) {
    size_t length = util_utf8_sequence(p);
    if (length == 0) {
      out[used++] = '?';
      p++;
    } else if (used + length < size) {
      memcpy(out + used, p, length);
      used += length;
      p += length;
    } else {
      break;
    }
  }
  if (size > 0) out[used] = '\0';
}

int util_read_file(const char *path, size_t limit, char **data, size_t *length) {
  int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  size_t capacity = 4096, used = 0;
  char *buffer = malloc(capacity + 1);
  int result = 0;
  if (buffer == NULL) {
    result = -ENOMEM;
    goto fail;
  }
  for (;;) {
    if (used == capacity) {
      if (capacity > limit) {
        result = -EFBIG;
        goto fail;
      }
      size_t grown = capacity * 2;
      char *bigger = realloc(buffer, grown + 1);
      if (bigger == NULL) {
        result = -ENOMEM;
        goto fail;
      }
      buffer = bigger;
      capacity = grown;
    }
    ssize_t n = read(fd, buffer + used, capacity - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      result = -errno;
      goto fail;
    }
    if (n == 0) break;
    used += (size_t)n;
  }
  if (used > limit) {
    result = -EFBIG;
    goto fail;
  }
  buffer[used] = '\0';
  if (fd != STDIN_FILENO) close(fd);
  *data = buffer;
  *length = used;
  return 0;
fail:
  free(buffer);
  if (fd != STDIN_FILENO) close(fd);
  return result;
}

int util_make_directories(const char *path) {
  char copy[PATH_MAX];
  if (util_strlcpy(copy, path, sizeof copy) != 0) return -ENAMETOOLONG;
  for (char *slash = copy + 1; *slash; slash++) {
    if (*slash != '/') continue;
    *slash = '\0';
    if (mkdir(copy, 0755) != 0 && errno != EEXIST) return -errno;
    *slash = '/';
  }
  if (mkdir(copy, 0755) != 0 && errno != EEXIST) return -errno;
  return 0;
}

/* Makes a completed rename durable: fsync the directory that holds `path`. Like SQLite's
 * unixSync, a failure here is ignored: the file is already in place and whole, and some
 * file systems cannot open or sync a directory at all. */
static void sync_directory_of(const char *path) {
  char directory[PATH_MAX];
  if (util_strlcpy(directory, path, sizeof directory) != 0) return;
  char *slash = strrchr(directory, '/');
  if (slash == NULL) {
    strcpy(directory, ".");
  } else if (slash == directory) {
    slash[1] = '\0'; /* "/file" lives in "/" */
  } else {
    *slash = '\0';
  }
  int fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)fsync(fd);
  close(fd);
}

int util_write_file_atomic(const char *path, const void *data, size_t length) {
  char temporary[PATH_MAX];
  if (snprintf(temporary, sizeof temporary, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof temporary)
    return -ENAMETOOLONG;
  int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  const char *cursor = data;
  size_t left = length;
  int result = 0;
  while (left > 0) {
    ssize_t n = write(fd, cursor, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      result = -errno;
      goto fail;
    }
    cursor += n;
    left -= (size_t)n;
  }
  if (fsync(fd) != 0) {
    result = -errno;
    goto fail;
  }
  if (close(fd) != 0) {
    fd = -1;
    result = -errno;
    goto fail;
  }
  fd = -1;
  if (rename(temporary, path) != 0) {
    result = -errno;
    goto fail;
  }
  sync_directory_of(path);
  return 0;
fail:
  if (fd >= 0) close(fd);
  unlink(temporary);
  return result;
}

int util_parse_size(const char *text, size_t *out) {
  if (text == NULL || !isdigit((unsigned char)text[0])) return -EINVAL;
  if (strpbrk(text, "xXpP")) return -EINVAL; /* strtod would read hexadecimal */
  char *end;
  errno = 0;
  const double value = strtod(text, &end);
  if (errno || end == text) return -EINVAL;
  double scale = 1.0;
  switch (toupper((unsigned char)*end)) {
  case 'K': scale = 1024.0; break;
  case 'M': scale = 1024.0 * 1024.0; break;
  case 'G': scale = 1024.0 * 1024.0 * 1024.0; break;
  case 'T': scale = 1024.0 * 1024.0 * 1024.0 * 1024.0; break;
  case '\0': break;
  default: return -EINVAL;
  }
  if (*end) {
    end++;
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'B' || *end == 'b') end++;
  }
  if (*end != '\0') return -EINVAL;
  /* Without a suffix, bytes: a whole number only. */
  if (scale == 1.0 && strpbrk(text, ".eE")) return -EINVAL;
  const double bytes = value * scale;
  if (!(bytes >= 1.0) || bytes >= 18446744073709551616.0) return -EINVAL;
  *out = (size_t)bytes;
  return 0;
}

int util_random_hex(char *out, size_t bytes) {
  unsigned char chunk[64];
  size_t done = 0;
  while (done < bytes) {
    size_t want = bytes - done < sizeof chunk ? bytes - done : sizeof chunk;
    ssize_t n = getrandom(chunk, want, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    for (ssize_t i = 0; i < n; i++) snprintf(out + 2 * (done + (size_t)i), 3, "%02x", chunk[i]);
    done += (size_t)n;
  }
  out[2 * bytes] = '\0';
  return 0;
}
