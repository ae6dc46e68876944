/* check.h — the assertions the C unit tests share. A failing check prints what it
 * expected, what it got and where, counts the failure and lets the test go on, so one run
 * shows every broken case. main() ends with `return check_summary();`. */
#ifndef MAPSAGE_CHECK_H
#define MAPSAGE_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                       \
  do {                                                                                    \
    check_count++;                                                                        \
    if (!(cond)) {                                                                        \
      check_failures++;                                                                   \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);            \
    }                                                                                     \
  } while (0)

#define CHECK_INT(expected, actual)                                                       \
  do {                                                                                    \
    long long check_e_ = (long long)(expected), check_a_ = (long long)(actual);           \
    check_count++;                                                                        \
    if (check_e_ != check_a_) {                                                           \
      check_failures++;                                                                   \
      fprintf(stderr, "%s:%d: %s: expected %lld, got %lld\n", __FILE__, __LINE__,         \
              #actual, check_e_, check_a_);                                               \
    }                                                                                     \
  } while (0)

#define CHECK_STR(expected, actual)                                                       \
  do {                                                                                    \
    const char *check_e_ = (expected), *check_a_ = (actual);                              \
    check_count++;                                                                        \
    if (check_a_ == NULL || strcmp(check_e_, check_a_) != 0) {                            \
      check_failures++;                                                                   \
      fprintf(stderr, "%s:%d: %s: expected \"%s\", got \"%s\"\n", __FILE__, __LINE__,     \
              #actual, check_e_, check_a_ ? check_a_ : "(null)");                         \
    }                                                                                     \
  } while (0)

/* |expected − actual| ≤ tolerance · max(1, |expected|) */
#define CHECK_NEAR(expected, actual, tolerance)                                           \
  do {                                                                                    \
    double check_e_ = (expected), check_a_ = (actual);                                    \
    double check_scale_ = fabs(check_e_) > 1.0 ? fabs(check_e_) : 1.0;                    \
    check_count++;                                                                        \
    if (!(fabs(check_e_ - check_a_) <= (tolerance) * check_scale_)) {                     \
      check_failures++;                                                                   \
      fprintf(stderr, "%s:%d: %s: expected %.9g, got %.9g (tolerance %g)\n", __FILE__,    \
              __LINE__, #actual, check_e_, check_a_, (double)(tolerance));                \
    }                                                                                     \
  } while (0)

/* `haystack` (a string, may be NULL) contains `needle`. */
#define CHECK_CONTAINS(haystack, needle)                                                  \
  do {                                                                                    \
    const char *check_h_ = (haystack), *check_n_ = (needle);                              \
    check_count++;                                                                        \
    if (check_h_ == NULL || strstr(check_h_, check_n_) == NULL) {                         \
      check_failures++;                                                                   \
      fprintf(stderr, "%s:%d: %s: expected it to contain \"%s\", got \"%s\"\n", __FILE__, \
              __LINE__, #haystack, check_n_, check_h_ ? check_h_ : "(null)");             \
    }                                                                                     \
  } while (0)

/* |a − n| / max(|a|, |n|, floor): relative where the gradient is large, absolute (scaled
 * by floor) where it is near zero and relative error means nothing. */
static inline double relative_error(double analytic, double numeric, double floor) {
  double scale = fabs(analytic) > fabs(numeric) ? fabs(analytic) : fabs(numeric);
  if (scale < floor) scale = floor;
  return fabs(analytic - numeric) / scale;
}

/* "<directory>/<name>", in one of CHECK_PATHS buffers used in turn: a result stays valid
 * for the next CHECK_PATHS - 1 calls, so one that must last longer (in an options struct
 * used later) is made again where it is used. */
#define CHECK_PATHS 16
static inline const char *check_path(const char *directory, const char *name) {
  static char paths[CHECK_PATHS][4096 + 256];
  static unsigned next;
  char *path = paths[next++ % CHECK_PATHS];
  snprintf(path, sizeof paths[0], "%s/%s", directory, name);
  return path;
}

static inline int check_summary(void) {
  printf("%d checks, %d failed\n", check_count, check_failures);
  return check_failures == 0 ? 0 : 1;
}

#endif
