/* fuzz_worker_answer.c — libFuzzer target for what a remote worker reads of the daemon's
 * answers to its posts (worker/report.c, report_read_answer): a run secret it will send
 * back in a header with every later post, and the events the daemon refused. The answer
 * comes over the network, from whatever listens at --server.
 *
 * Besides the sanitizers' verdict it checks that a header is only ever made of a secret of
 * hex digits (nothing that could end the header line and start another), that a refusal of
 * the secret is -EPROTO with no header, and that each refused event comes with a reason.
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../worker/report.h" /* the worker's; daemon/report.h, earlier on the path, is another */

#include "fuzz.h"

#define PREFIX "X-MapSage-Run-Secret: "

static int refused;

static void count_refused(const char *message) {
  FUZZ_CHECK(message != NULL && message[0] != '\0', "a refused event without a reason");
  refused++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *answer = malloc(size + 1);
  FUZZ_CHECK(answer != NULL, "out of memory");
  memcpy(answer, data, size);
  answer[size] = '\0';
  char header[256];
  refused = 0;
  int result = report_read_answer(answer, header, sizeof header, count_refused);
  FUZZ_CHECK(result == 0 || result == -EPROTO, "report_read_answer returned %d", result);
  if (result != 0) FUZZ_CHECK(header[0] == '\0', "a header made of a refused secret: %s", header);
  if (header[0] != '\0') {
    FUZZ_CHECK(strncmp(header, PREFIX, strlen(PREFIX)) == 0, "a header that is not the secret's: %s", header);
    const char *secret = header + strlen(PREFIX);
    FUZZ_CHECK(secret[0] != '\0' && strspn(secret, "0123456789abcdef") == strlen(secret),
               "a secret that is not hex went into the header");
  }
  free(answer);
  return 0;
}
