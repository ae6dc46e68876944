/* test_event.c — the event protocol: what a worker writes parses back, and every malformed
 * or hostile line is refused with its reason instead of reaching the database. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "event.h"

static ev_t event;
static char error[256];

static int parse(const char *line) { return ev_parse(line, strlen(line), &event, error, sizeof error); }

static void check_refused(const char *line, const char *reason) {
  CHECK_INT(-EINVAL, parse(line));
  if (strstr(error, reason) == NULL) {
    check_failures++;
    fprintf(stderr, "%s: expected an error containing \"%s\", got \"%s\"\n", line, reason, error);
  }
  CHECK(event.root == NULL);
}

static void test_metric(void) {
  CHECK_INT(0, parse("{\"event\":\"metric\",\"step\":12,\"epoch\":1,\"stage\":0,\"values\":{\"loss/total\":0.5,\"lr\":1}}"));
  CHECK_INT(EV_METRIC, event.type);
  CHECK(event.root == NULL); /* as workers write it: read without jansson */
  CHECK_INT(12, event.step);
  CHECK_INT(1, event.epoch);
  CHECK_INT(0, event.stage);
  double value = 0;
  CHECK(ev_find_value(&event, "loss/total", &value));
  CHECK_NEAR(0.5, value, 0);
  CHECK_INT(2, event.n_values);
  CHECK_STR("lr", event.values[1].name);
  CHECK(!ev_find_value(&event, "missing", &value));
  ev_release(&event);
}

static void test_eval_and_splits(void) {
  CHECK_INT(0, parse("{\"event\":\"eval\",\"step\":430,\"epoch\":1,\"stage\":0,\"split\":\"test\",\"values\":{\"accuracy\":0.8}}"));
  CHECK_INT(EV_EVAL, event.type);
  CHECK_INT(EV_SPLIT_TEST, event.split);
  ev_release(&event);
  for (int split = 0; split < EV_SPLIT_COUNT; split++) CHECK_INT(split, ev_split_from_name(ev_split_name(split)));
  CHECK_INT(-1, ev_split_from_name("holdout"));
}

static void test_other_events(void) {
  CHECK_INT(0, parse("{\"event\":\"finished\",\"status\":\"failed\"}"));
  CHECK_INT(EV_FINISHED, event.type);
  CHECK(event.error != NULL); /* a failure always has a reason */
  ev_release(&event);
  CHECK_INT(0, parse("{\"event\":\"checkpoint\",\"step\":5,\"epoch\":1,\"path\":\"/x/y.ckpt\",\"bytes\":100}"));
  CHECK_STR("/x/y.ckpt", event.path);
  ev_release(&event);
  CHECK_INT(0, parse("{\"event\":\"stage\",\"step\":430,\"epoch\":2,\"stage\":1,\"name\":\"kd\"}"));
  CHECK_INT(EV_STAGE, event.type);
  CHECK_STR("kd", event.name);
  CHECK_INT(430, event.step);
  ev_release(&event);
  check_refused("{\"event\":\"stage\",\"step\":0,\"epoch\":1,\"stage\":0}", "name: must be");
  check_refused("{\"event\":\"stage\",\"step\":0,\"epoch\":0,\"stage\":0,\"name\":\"a\"}", "epoch: must be at least 1");
  CHECK_INT(0, parse("{\"event\":\"hello-from-the-future\",\"x\":1}"));
  CHECK_INT(EV_UNKNOWN, event.type);
  ev_release(&event);
}

static void test_refused(void) {
  check_refused("", "not JSON");
  check_refused("{\"event\":\"metric\",\"step\":1", "not JSON");
  check_refused("[1]", "not a JSON object");
  check_refused("{\"step\":1}", "event: must be a string");
  check_refused("{\"event\":\"metric\",\"epoch\":1,\"stage\":0,\"values\":{}}", "step: is missing");
  check_refused("{\"event\":\"metric\",\"step\":0,\"epoch\":1,\"stage\":0,\"values\":{}}", "step: must be at least 1");
  check_refused("{\"event\":\"metric\",\"step\":\"1\",\"epoch\":1,\"stage\":0,\"values\":{}}", "step: must be an integer");
  check_refused("{\"event\":\"metric\",\"step\":1,\"epoch\":1,\"stage\":0,\"values\":[]}", "values: must be an object");
  check_refused("{\"event\":\"metric\",\"step\":1,\"epoch\":1,\"stage\":0,\"values\":{\"a\":\"x\"}}", "values.a: must be a finite number");
  check_refused("{\"event\":\"metric\",\"step\":1,\"epoch\":1,\"stage\":0,\"values\":{\"\":1}}", "metric name");
  check_refused("{\"event\":\"eval\",\"step\":1,\"epoch\":1,\"stage\":0,\"split\":\"x\",\"values\":{}}", "split: must be one of");
  check_refused("{\"event\":\"finished\",\"status\":\"great\"}", "status: must be");
  check_refused("{\"event\":\"log\",\"level\":\"info\"}", "message: must be a string");
  check_refused("{\"event\":\"metric\",\"event\":\"eval\"}", "not JSON"); /* duplicate keys */
  char name[EV_NAME_MAX + 64];
  memset(name, 'a', EV_NAME_MAX);
  name[EV_NAME_MAX] = '\0';
  char line[EV_NAME_MAX + 128];
  snprintf(line, sizeof line, "{\"event\":\"metric\",\"step\":1,\"epoch\":1,\"stage\":0,\"values\":{\"%s\":1}}", name);
  check_refused(line, "metric name");
}

/* What ev_write_* produce is what ev_parse accepts, numbers to float precision. */
static void test_write_then_parse(void) {
  char *text = NULL;
  size_t size = 0;
  FILE *out = open_memstream(&text, &size);
  CHECK_INT(0, ev_write_metric(out, 3, 1, 0, json_pack("{s:f, s:f}", "loss/total", 0.123456789f, "lr", 0.05)));
  CHECK_INT(0, ev_write_eval(out, 3, 1, 0, EV_SPLIT_VAL, json_pack("{s:f}", "accuracy", 0.75)));
  CHECK_INT(0, ev_write_log(out, "info", "epoch %d done", 1));
  fclose(out);
  char *line = text;
  int types[3] = {EV_METRIC, EV_EVAL, EV_LOG};
  for (int i = 0; i < 3; i++) {
    char *end = strchr(line, '\n');
    CHECK(end != NULL);
    if (!end) break;
    CHECK_INT(0, ev_parse(line, (size_t)(end - line), &event, error, sizeof error));
    CHECK_INT(types[i], event.type);
    double value = 0;
    if (i == 0) CHECK(ev_find_value(&event, "loss/total", &value) && (float)value == 0.123456789f);
    ev_release(&event);
    line = end + 1;
  }
  free(text);
}

/* Parses `line` and the same line with a space in front, which only jansson reads: both
 * must give the same event or the same refusal. */
static void check_same_either_way(const char *line) {
  char *spaced = malloc(strlen(line) + 2);
  if (spaced == NULL) return;
  spaced[0] = ' ';
  strcpy(spaced + 1, line);
  ev_t direct, parsed;
  char direct_error[256] = "", parsed_error[256] = "";
  int a = ev_parse(line, strlen(line), &direct, direct_error, sizeof direct_error);
  int b = ev_parse(spaced, strlen(spaced), &parsed, parsed_error, sizeof parsed_error);
  check_count++;
  int same = a == b;
  if (same && a == 0) {
    same = direct.type == parsed.type && direct.step == parsed.step && direct.epoch == parsed.epoch &&
           direct.stage == parsed.stage && direct.n_values == parsed.n_values;
    for (int i = 0; same && i < direct.n_values; i++) {
      same = strcmp(direct.values[i].name, parsed.values[i].name) == 0 &&
             memcmp(&direct.values[i].value, &parsed.values[i].value, sizeof(double)) == 0;
    }
  }
  if (!same) {
    check_failures++;
    fprintf(stderr, "%s: read directly %d (%s), by jansson %d (%s)\n", line, a, direct_error, b, parsed_error);
  }
  if (a == 0) ev_release(&direct);
  if (b == 0) ev_release(&parsed);
  free(spaced);
}

/* Metric lines as workers write them are read without jansson (event.c): the same events
 * and the same refusals as jansson's, on lines written by ev_write_metric and on every
 * near miss a hostile worker could send. */
static void test_direct_metric_lines(void) {
  const char *lines[] = {
      "{\"event\":\"metric\",\"step\":1,\"epoch\":1,\"stage\":0,\"values\":{}}",
      "{\"event\":\"metric\",\"step\":0,\"epoch\":1,\"stage\":0,\"values\":{\"a\":1}}",
      "{\"event\":\"metric\",\"step\":01,\"epoch\":1,\"stage\":0,\"values\":{\"a\":1}}",
      "{\"event\":\"metric\",\"step\":123456789012345678901,\"epoch\":1,\"stage\":0,\"values\":{}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":1,\"a\":2}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":-0}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":-0.0,\"b\":0e5}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":1e999}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":1e-999}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":12345678901234567890}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":1.}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":.5}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":+1}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":1,}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"\":1}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\\\"b\":1}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"ac\u00e9\":1}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":1}}x",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":1}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":true}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":-1,\"stage\":0,\"values\":{\"a\":1}}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":1},\"extra\":1}",
      "{\"event\":\"metric\",\"step\":2,\"epoch\":1,\"stage\":0,\"values\":{\"a\":-12.5e-3,\"b\":7E+2}}",
  };
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) check_same_either_way(lines[i]);
  /* A name of EV_NAME_MAX - 1 bytes is taken, one more is not, either way. */
  char line[1024], name[EV_NAME_MAX + 1];
  for (int length = EV_NAME_MAX - 1; length <= EV_NAME_MAX; length++) {
    memset(name, 'n', (size_t)length);
    name[length] = '\0';
    snprintf(line, sizeof line, "{\"event\":\"metric\",\"step\":3,\"epoch\":1,\"stage\":0,\"values\":{\"%s\":1}}", name);
    check_same_either_way(line);
  }
  /* What ev_write_metric writes, for random values and many names. */
  srand(7);
  for (int trial = 0; trial < 2000; trial++) {
    json_t *values = json_object();
    int count = 1 + rand() % 80;
    for (int i = 0; i < count; i++) {
      char key[32];
      snprintf(key, sizeof key, "grad_norm/layer%d", i);
      double value = ldexp((double)rand() / RAND_MAX - 0.5, rand() % 60 - 30);
      json_object_set_new(values, key, i % 7 == 0 ? json_integer(rand() - RAND_MAX / 2) : json_real(value));
    }
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    ev_write_metric(out, 1 + rand() % 100000, 1 + rand() % 100, rand() % 5, values);
    fclose(out);
    text[strcspn(text, "\n")] = '\0';
    check_same_either_way(text);
    free(text);
  }
}

int main(void) {
  test_metric();
  test_eval_and_splits();
  test_other_events();
  test_refused();
  test_write_then_parse();
  test_direct_metric_lines();
  return check_summary();
}
