/* token.c — the daemon's token file, read and checked (see token.h). */
#include "token.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

int token_read(const char *path, char **token, char *error, size_t error_size) {
  char *text = NULL;
  size_t length = 0;
  struct stat info;
  int result = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &info) != 0) {
    result = util_error(error, error_size, -errno, "%s", strerror(errno));
    goto done;
  }
  if (info.st_mode & (S_IRWXG | S_IRWXO)) {
    result = util_error(error, error_size, -EPERM, "others can read it (mode %03o); make it the owner's only: "
                        "chmod 600 %s", (unsigned)(info.st_mode & 0777), path);
    goto done;
  }
  /* Read from the descriptor just checked, not the path again. */
  if ((text = malloc(4097)) == NULL) {
    result = util_error(error, error_size, -ENOMEM, "out of memory");
    goto done;
  }
  for (ssize_t got; length < 4097; length += (size_t)got) {
    got = read(fd, text + length, 4097 - length);
    if (got < 0 && errno == EINTR) got = 0;
    else if (got <= 0) {
      if (got < 0) result = -errno;
      break;
    }
  }
  if (result == 0 && length > 4096) result = -EFBIG;
  if (result != 0) {
    util_error(error, error_size, result, "%s", result == -EFBIG ? "larger than 4 KiB" : strerror(-result));
    goto done;
  }
  text[length] = '\0';
  while (length > 0 && (text[length - 1] == '\n' || text[length - 1] == '\r' || text[length - 1] == ' '))
    text[--length] = '\0';
  for (size_t i = 0; i < length; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c < 0x21 || c > 0x7e) {
      result = util_error(error, error_size, -EINVAL, "the token must be one line of printable characters without "
                          "spaces (byte %zu is %s)", i + 1, c == 0 ? "NUL" : "not one");
      goto done;
    }
  }
  if (length < 16) {
    result = util_error(error, error_size, -EINVAL, "%s; the token must have at least 16 characters",
                        length == 0 ? "it is empty" : "it is too short");
    goto done;
  }
  *token = text;
  text = NULL;
done:
  if (text) {
    explicit_bzero(text, length);
    free(text);
  }
  if (fd >= 0) close(fd);
  return result;
}
