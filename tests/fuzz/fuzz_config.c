/* fuzz_config.c — libFuzzer target for the config parser and validator (common/config.c).
 *
 * Every input is handed to cfg_parse() as a submitted config. Besides the sanitizers'
 * verdict, it checks what the daemon and the worker rely on:
 * - the errors always serialise (cfg_errors_to_json), a failure names at least one error,
 *   and the count and the list agree;
 * - a config that parses round-trips exactly: cfg_to_json() printed with every digit parses
 *   back to the very same struct (memcmp), so the worker runs what the daemon accepted;
 * - printed the way the daemon stores it (api.c, 15 significant digits) it still parses,
 *   and storing that again gives the same text: a stored config is a fixed point.
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"

#include "fuzz.h"

static cfg_experiment_t first, second, third;
static cfg_errors_t errors;

static void check_errors(int result) {
  json_t *list = cfg_errors_to_json(&errors);
  FUZZ_CHECK(json_is_array(list), "cfg_errors_to_json returned %p", (void *)list);
  size_t expected = errors.count <= CFG_MAX_ERRORS ? (size_t)errors.count : CFG_MAX_ERRORS + 1;
  FUZZ_CHECK(json_array_size(list) == expected, "%zu items for %d errors", json_array_size(list), errors.count);
  char *text = json_dumps(list, JSON_COMPACT);
  FUZZ_CHECK(text != NULL, "the errors do not serialise");
  free(text);
  json_decref(list);
  FUZZ_CHECK((result == 0) == (errors.count == 0), "cfg_parse returned %d with %d errors", result, errors.count);
  FUZZ_CHECK(result == 0 || result == -22, "cfg_parse returned %d", result);
  for (int i = 0; i < errors.count && i < CFG_MAX_ERRORS; i++)
    FUZZ_CHECK(errors.items[i].message[0] != '\0', "error %d (%s) has no message", i, errors.items[i].path);
}

/* Prints `config` with `flags`, parses the text back into `out`; returns the text. */
static char *reparse(const cfg_experiment_t *config, size_t flags, cfg_experiment_t *out) {
  json_t *json = cfg_to_json(config);
  FUZZ_CHECK(json != NULL, "cfg_to_json failed");
  char *text = json_dumps(json, flags);
  json_decref(json);
  FUZZ_CHECK(text != NULL, "the config does not serialise");
  int result = cfg_parse(text, strlen(text), out, &errors);
  FUZZ_CHECK(result == 0, "the serialised config is refused: %s: %s\n%s", errors.items[0].path,
             errors.items[0].message, text);
  return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int result = cfg_parse((const char *)data, size, &first, &errors);
  check_errors(result);
  if (result != 0) return 0;

  /* Exact: every digit (jansson prints 17 significant digits by default). */
  char *exact = reparse(&first, JSON_COMPACT, &second);
  FUZZ_CHECK(memcmp(&first, &second, sizeof first) == 0, "the config changed in a round trip:\n%s", exact);
  free(exact);

  /* As stored by the daemon (api.c: JSON_REAL_PRECISION(15)), and stored once more. */
  char *stored = reparse(&first, JSON_COMPACT | JSON_REAL_PRECISION(15), &second);
  char *again = reparse(&second, JSON_COMPACT | JSON_REAL_PRECISION(15), &third);
  FUZZ_CHECK(strcmp(stored, again) == 0, "storing a stored config changed it:\n%s\n%s", stored, again);
  FUZZ_CHECK(memcmp(&second, &third, sizeof second) == 0, "a stored config changed when parsed again:\n%s", stored);
  free(stored);
  free(again);

  /* The helpers the worker calls on an accepted config must hold up too. */
  int total = cfg_total_epochs(&first);
  FUZZ_CHECK(total >= 1 && total <= 10000, "%d epochs in all", total);
  for (int epoch = 0; epoch < total; epoch += total / 7 + 1) {
    int stage = cfg_stage_of_epoch(&first, epoch);
    FUZZ_CHECK(stage >= 0 && stage < first.n_stages, "epoch %d is in stage %d of %d", epoch, stage, first.n_stages);
    (void)cfg_temperature_at(&first, epoch);
    (void)cfg_lr_factor_at(&first, epoch);
  }
  for (int i = 0; i < first.n_layers; i++) {
    char name[CFG_NAME_MAX];
    cfg_layer_display_name(&first, i, name, sizeof name);
    FUZZ_CHECK(cfg_layer_index(&first, name) == i, "layer %d is called \"%s\", which finds layer %d", i, name,
               cfg_layer_index(&first, name));
    FUZZ_CHECK(cfg_shape_size(&first.layers[i].shape) > 0, "layer %d has an empty output", i);
  }
  /* The config as its own teacher: what the daemon checks for an experiment teacher. */
  memset(&errors, 0, sizeof errors);
  result = cfg_check_teacher(&first, &first, &errors);
  check_errors(result);
  return 0;
}
