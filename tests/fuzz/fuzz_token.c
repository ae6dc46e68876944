/* fuzz_token.c — libFuzzer target for the daemon's token file (daemon/token.c), which
 * mapsaged reads at start: a file its user wrote by hand, in any editor.
 *
 * Each input is written to a file of mode 600 and read. Besides the sanitizers' verdict it
 * checks that a refusal names its reason, that an accepted token is at least 16 printable
 * characters with no space, NUL or line break (what a Bearer header can carry), that it is
 * the file's text less its trailing line endings, and that the same file made readable by
 * others is refused whatever it holds.
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "token.h"

#include "fuzz.h"

static char path[256];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (path[0] == '\0') {
    const char *directory = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/fuzz-token-%d", directory ? directory : "/tmp", (int)getpid());
  }
  FILE *file = fopen(path, "wb");
  FUZZ_CHECK(file != NULL, "cannot write %s", path);
  FUZZ_CHECK(size == 0 || fwrite(data, 1, size, file) == size, "short write");
  fclose(file);
  FUZZ_CHECK(chmod(path, 0600) == 0, "chmod");
  char *token = NULL, error[512] = "";
  int result = token_read(path, &token, error, sizeof error);
  if (result != 0) {
    FUZZ_CHECK(result < 0 && error[0] != '\0', "token_read returned %d with no reason", result);
    FUZZ_CHECK(token == NULL, "a refused token was handed out");
  } else {
    size_t length = strlen(token);
    FUZZ_CHECK(length >= 16, "a token of %zu characters", length);
    for (size_t i = 0; i < length; i++)
      FUZZ_CHECK(token[i] > ' ' && token[i] < 0x7f, "byte %zu of the token is 0x%02x", i, (unsigned char)token[i]);
    FUZZ_CHECK(length <= size && memcmp(token, data, length) == 0, "the token is not the file's text");
    for (size_t i = length; i < size; i++)
      FUZZ_CHECK(data[i] == '\n' || data[i] == '\r' || data[i] == ' ', "byte %zu after the token was dropped", i);
    free(token);
    token = NULL;
  }
  FUZZ_CHECK(chmod(path, 0640) == 0, "chmod");
  FUZZ_CHECK(token_read(path, &token, error, sizeof error) == -EPERM, "a token others can read was accepted");
  FUZZ_CHECK(token == NULL, "a refused token was handed out");
  unlink(path);
  return 0;
}
