/* fuzz_command_line.c — libFuzzer target for what a person types or writes by hand for the
 * three programs: a command line, parsed by common/options.c, and mapsage's config file
 * (cli/config_file.c).
 *
 * The input's first byte chooses getopt_long's unique prefixes on or off and whether the
 * first argument ends the options (mapsage's global options); the rest, split at NUL bytes,
 * is argv, parsed with a table like mapsaged's. Besides the sanitizers' verdict it checks
 * that every option returned is one of the table's, has a value exactly when it takes one,
 * and that value is an argument or the part after '='; that an error names what it refuses;
 * that the parser only moves forward and ends. The same bytes are then a config file:
 * accepted, its values are non-empty one-line text found in the file; refused, nothing is
 * kept (LeakSanitizer checks the rest).
 * Build and run it with tests/fuzz/run; docs/fuzzing.md says how. */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "options.h"
#include "util.h"

#include "fuzz.h"

#define MAX_ARGUMENTS 64


static const option_t options[] = {
  {256, "listen", 0, "HOST:PORT", "where"},  {257, "db", 0, "PATH", "database"},
  {258, "data-dir", 0, "DIR", "data"},       {259, "workers", 'w', "N", "workers"},
  {260, "dry-run", 0, NULL, "nothing"},      {261, "dry", 0, NULL, "a prefix of another"},
  {'h', "help", 'h', NULL, "help"},          {'e', "experiment", 'e', "ID", "one"},
};

static void fuzz_options(const uint8_t *data, size_t size) {
  static char text[4096];
  char *argv[MAX_ARGUMENTS + 2];
  int argc = 0;
  if (size > sizeof text - 1) size = sizeof text - 1;
  memcpy(text, data, size);
  text[size] = '\0';
  argv[argc++] = "program";
  for (size_t start = 0; start <= size && argc <= MAX_ARGUMENTS; start += strlen(text + start) + 1) {
    argv[argc++] = text + start;
    if (start == size) break;
  }
  argv[argc] = NULL;

  options_t parser;
  options_init(&parser, options, ARRAY_SIZE(options), argc, argv);
  parser.abbreviations = size > 0 && (data[0] & 1);
  parser.stop_at_argument = size > 0 && (data[0] & 2);
  int previous = parser.index, key, steps = 0;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    FUZZ_CHECK(++steps <= argc, "more results (%d) than arguments (%d)", steps, argc);
    FUZZ_CHECK(parser.index > previous && parser.index <= argc, "index %d after %d of %d", parser.index, previous,
               argc);
    const char *last = argv[parser.index - 1];
    if (key == OPTIONS_ERROR) {
      FUZZ_CHECK(parser.error[0] != '\0' && strstr(parser.error, "-") != NULL, "an error naming nothing: %s",
                 parser.error);
      break;
    }
    if (key == OPTIONS_ARGUMENT) {
      FUZZ_CHECK(parser.value == last, "the argument is not the word read");
      FUZZ_CHECK(!parser.stop_at_argument, "an argument returned while stopping at arguments");
    } else {
      const option_t *option = parser.option;
      FUZZ_CHECK(option >= options && option < options + ARRAY_SIZE(options) && option->key == key,
                 "key %d is not the table's", key);
      FUZZ_CHECK((option->value_name != NULL) == (parser.value != NULL), "--%s: value %s", option->name,
                 parser.value ? parser.value : "(none)");
      /* The value is the next word, or the tail of this one ("--db=x", "-wN"). */
      FUZZ_CHECK(parser.value == NULL || parser.value == last ||
                     (parser.value > last && parser.value <= last + strlen(last)),
                 "--%s's value is not from its words", option->name);
    }
    previous = parser.index;
  }
}

static char config_directory[256];

static void fuzz_config_file(const uint8_t *data, size_t size) {
  if (config_directory[0] == '\0') {
    const char *directory = getenv("TMPDIR");
    snprintf(config_directory, sizeof config_directory, "%s/fuzz-command-line-%d", directory ? directory : "/tmp",
             (int)getpid());
    mkdir(config_directory, 0700);
    char mapsage[300];
    snprintf(mapsage, sizeof mapsage, "%s/mapsage", config_directory);
    mkdir(mapsage, 0700);
    setenv("XDG_CONFIG_HOME", config_directory, 1);
  }
  char path[320];
  snprintf(path, sizeof path, "%s/mapsage/config", config_directory);
  FILE *file = fopen(path, "wb");
  FUZZ_CHECK(file != NULL, "cannot write %s", path);
  FUZZ_CHECK(size == 0 || fwrite(data, 1, size, file) == size, "short write");
  fclose(file);

  config_file_t config;
  FILE *saved = stderr; /* the refusals are for people: keep the fuzzer's output readable */
  stderr = fopen("/dev/null", "w");
  int exit_code = config_file_load(&config);
  fclose(stderr);
  stderr = saved;
  if (exit_code != CLI_EXIT_OK) {
    FUZZ_CHECK(exit_code == CLI_EXIT_USAGE || exit_code == CLI_EXIT_FAILED, "exit code %d", exit_code);
    FUZZ_CHECK(config.server == NULL && config.token_file == NULL && config.path == NULL, "a refused file kept");
    return;
  }
  const char *values[] = {config.server, config.token_file};
  for (size_t i = 0; i < ARRAY_SIZE(values); i++) {
    if (values[i] == NULL) continue;
    FUZZ_CHECK(values[i][0] != '\0' && strchr(values[i], '\n') == NULL, "value \"%s\"", values[i]);
  }
  FUZZ_CHECK(config.server == NULL || memmem(data, size, config.server, strlen(config.server)) != NULL,
             "server \"%s\" is not in the file", config.server);
  config_file_free(&config);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_options(data, size);
  fuzz_config_file(data, size);
  return 0;
}
