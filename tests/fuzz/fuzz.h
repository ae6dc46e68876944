/* fuzz.h — what the libFuzzer targets share: a check that holds in every build and says
 * what it saw. A failed check aborts, which libFuzzer reports with the input. */
#ifndef MAPSAGE_FUZZ_H
#define MAPSAGE_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

/* Like assert(), but also in builds with NDEBUG, and it says what it saw. */
#define FUZZ_CHECK(cond, ...)                                                       \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);      \
      fprintf(stderr, __VA_ARGS__);                                                 \
      fputc('\n', stderr);                                                          \
      abort();                                                                      \
    }                                                                               \
  } while (0)

#endif
