/* test_json_text.c — common/json_text.c writes what jansson writes: every number, string
 * and integer is compared with json_dumps(…, JSON_COMPACT | JSON_ENCODE_ANY |
 * JSON_REAL_PRECISION(9)), over a few million values picked to hit the fast path's edges
 * (nine-digit decimals as workers send them, float32 values, arbitrary doubles, powers of
 * ten and their neighbours, ties, every decimal exponent the fast path takes and those
 * around it). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "check.h"
#include "json_text.h"

static uint64_t random_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void) { /* xorshift64*: reproducible, no libc state */
  random_state ^= random_state >> 12;
  random_state ^= random_state << 25;
  random_state ^= random_state >> 27;
  return random_state * 2685821657736338717ull;
}

static int mismatches_shown;

/* Compares one value with jansson; prints the first few differences in full. */
static void check_real(double value) {
  json_t *real = json_real(value);
  char *expected = json_dumps(real, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(JSON_TEXT_REAL_DIGITS));
  json_decref(real);
  char actual[JSON_TEXT_REAL_MAX];
  int length = json_text_format_real(value, actual);
  check_count++;
  if (expected == NULL || strcmp(expected, actual) != 0 || length != (int)strlen(actual)) {
    check_failures++;
    if (mismatches_shown++ < 20)
      fprintf(stderr, "%.17g (%a): jansson \"%s\", json_text \"%s\" (length %d)\n", value, value, expected, actual,
              length);
  }
  free(expected);
}

static void test_reals(void) {
  const double fixed[] = {0.0, -0.0, 1.0, -1.0, 0.5, 0.05, 0.1, 1e-9, 9.99999999e-10, 1e18, 9.99999999e17,
                          123456789.0, 1234567891.0, 100000000.5, 100000001.5, 0.000123456789, 0.0001, 0.00001,
                          99999.99995, 999999999.5, 9.9999999949999, 9.999999995, 2.5e-5, 1e8, 1e9, 3.0, 10.0,
                          DBL_MIN, DBL_MAX, -DBL_MAX, 5e-324, 1e-300, 1e300, 0.30000000000000004};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) check_real(fixed[i]);
  /* Powers of ten and their neighbours, over and beyond the fast path's range. */
  for (int exponent = -30; exponent <= 30; exponent++) {
    double power = pow(10, exponent);
    check_real(power);
    check_real(nextafter(power, 0));
    check_real(nextafter(power, INFINITY));
    check_real(-power);
  }
  /* Nine-digit decimals, as workers write their values, at every exponent. */
  for (int i = 0; i < 300000; i++) {
    char text[64];
    long digits = 100000000 + (long)(next_random() % 900000000);
    int exponent = (int)(next_random() % 40) - 20;
    snprintf(text, sizeof text, "%s%ld.%ldE%d", next_random() & 1 ? "-" : "", digits / 100000000,
             digits % 100000000, exponent);
    check_real(strtod(text, NULL));
  }
  /* Float32 values: what the worker computes, before it prints them. */
  for (int i = 0; i < 300000; i++) {
    uint32_t bits = (uint32_t)next_random();
    float single;
    memcpy(&single, &bits, sizeof single);
    if (isfinite(single)) check_real(single);
  }
  /* Arbitrary doubles across the range, and short decimals with a tie at the ninth digit
   * (ten significant digits ending in 5). */
  for (int i = 0; i < 300000; i++) {
    uint64_t bits = next_random();
    double value;
    memcpy(&value, &bits, sizeof value);
    if (isfinite(value)) check_real(value);
    check_real(ldexp((double)(next_random() >> 11), (int)(next_random() % 120) - 90));
    check_real((double)(1000000000ll + (long long)(next_random() % 9000000000ll)) / 10 + 0.5);
  }
}

static void test_strings_and_integers(void) {
  const char *strings[] = {"", "loss/total", "quote \" backslash \\ slash /", "tab\tnew\nline\rfeed\f\b",
                           "\x01\x1f\x7f", "accuracy — 精度 😀", "val/accuracy"};
  for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
    json_t *string = json_string(strings[i]);
    char *expected = json_dumps(string, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(string);
    json_text_t text;
    json_text_init(&text);
    json_text_string(&text, strings[i]);
    char *actual = json_text_take(&text, NULL);
    CHECK_STR(expected, actual);
    free(expected);
    free(actual);
  }
  /* Not UTF-8 (a worker's stderr may hold anything): '?' for each bad byte, still JSON. */
  json_text_t invalid;
  json_text_init(&invalid);
  json_text_string(&invalid, "ok \xff\xfe \xc3\xa9 \xed\xa0\x80 \xc0\xaf end");
  char *cleaned = json_text_take(&invalid, NULL);
  CHECK_STR("\"ok ?? \xc3\xa9 ??? ?? end\"", cleaned);
  free(cleaned);
  const int64_t integers[] = {0, 1, -1, 9, 10, 123456789, INT64_MAX, INT64_MIN, -1000000000000ll};
  json_text_t text;
  json_text_init(&text);
  json_text_literal(&text, "[");
  json_t *array = json_array();
  for (size_t i = 0; i < sizeof integers / sizeof integers[0]; i++) {
    if (i > 0) json_text_literal(&text, ",");
    json_text_integer(&text, integers[i]);
    json_array_append_new(array, json_integer(integers[i]));
  }
  json_text_literal(&text, "]");
  char *expected = json_dumps(array, JSON_COMPACT);
  json_decref(array);
  size_t length = 0;
  char *actual = json_text_take(&text, &length);
  CHECK_STR(expected, actual);
  CHECK_INT(strlen(expected), length);
  free(expected);
  free(actual);
  /* JSON has no infinity or NaN: null, as a missing value. */
  json_text_init(&text);
  json_text_real(&text, INFINITY);
  json_text_literal(&text, ",");
  json_text_real(&text, NAN);
  actual = json_text_take(&text, NULL);
  CHECK_STR("null,null", actual);
  free(actual);
  /* Nothing appended is the empty string, not NULL. */
  json_text_init(&text);
  actual = json_text_take(&text, &length);
  CHECK_STR("", actual);
  CHECK_INT(0, length);
  free(actual);
}

int main(void) {
  test_reals();
  test_strings_and_integers();
  return check_summary();
}
