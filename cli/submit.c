/* submit.c — `mapsage submit` and what `study submit` shares with it: reading a document
 * (a file or standard input), editing it with --set PATH=VALUE before it is sent, and the
 * arguments both take. `mapsage rerun` (rerun.c) applies the same --set to a stored config.
 * Scripts get the new id alone on stdout; the person reading gets a line on stderr. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* Well above the daemon's 1 MiB body limit, so the daemon, not the client, words the 413. */
#define SUBMIT_FILE_LIMIT (16u << 20)

/* ---------------------------------------------------------------------------------------
 * submit --set: `path=value` edits the parsed config before it is sent.
 *
 * A path is a key, then any sequence of `.key` and `[index]`: `name`, `optimizer.lr`,
 * `stages[1].epochs`. Missing object keys are created on the way (as objects); arrays are
 * never grown, because an index past the end has no value to copy the rest from. */

static const char *submit_type_name(const json_t *value) {
  switch (json_typeof(value)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER:
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "a value";
}

/* jansson's *_new setters release the value when they fail: nothing left to free. */
static int submit_no_memory(char *error, size_t error_size) {
  snprintf(error, error_size, "out of memory");
  return -ENOMEM;
}

/* The value: JSON if it parses as JSON (numbers, true, null, quoted strings, objects,
 * arrays), otherwise the text itself as a string, so `--set name=baseline` needs no quotes. */
static json_t *submit_parse_value(const char *text) {
  json_t *value = json_loads(text, JSON_DECODE_ANY, NULL);
  return value != NULL ? value : json_string(text);
}

int submit_set(json_t *config, const char *assignment, char *error, size_t error_size) {
  const char *equals = strchr(assignment, '=');
  if (equals == NULL || equals == assignment) {
    snprintf(error, error_size, "--set %s: expected path=value, e.g. stages[0].epochs=5", assignment);
    return -EINVAL;
  }
  const char *path = assignment;
  int path_length = (int)(equals - assignment);
  json_t *value = submit_parse_value(equals + 1);
  if (value == NULL) {
    snprintf(error, error_size, "--set %.*s: the value is not valid UTF-8", path_length, path);
    return -EINVAL;
  }

  json_t *node = config;
  const char *cursor = path;
  for (;;) {
    /* `segment` is the text naming this step; `done` is the path up to it, for messages. */
    const char *segment = cursor;
    int done = (int)(segment - path);
    if (done > 0 && path[done - 1] == '.') done--;
    const char *parent = done == 0 ? "the config" : NULL;
    int is_index = *cursor == '[';
    size_t index = 0;
    const char *key = NULL;
    size_t key_length = 0;
    if (is_index) {
      cursor++;
      if (*cursor < '0' || *cursor > '9') goto syntax;
      while (*cursor >= '0' && *cursor <= '9') {
        if (index > 100000000) goto syntax;
        index = index * 10 + (size_t)(*cursor++ - '0');
      }
      if (*cursor++ != ']') goto syntax;
    } else {
      key = cursor;
      while (cursor < equals && *cursor != '.' && *cursor != '[' && *cursor != ']') cursor++;
      key_length = (size_t)(cursor - key);
      if (key_length == 0) goto syntax;
    }
    int last = cursor == equals;
    if (!last && *cursor != '.' && *cursor != '[') goto syntax;

    if (is_index) {
      if (!json_is_array(node)) {
        snprintf(error, error_size, "--set %.*s: %s%.*s is %s, not an array", path_length, path,
                 parent != NULL ? parent : "", done, path, submit_type_name(node));
        goto fail;
      }
      size_t size = json_array_size(node);
      if (index >= size) {
        snprintf(error, error_size, "--set %.*s: index %zu is out of range: %.*s has %zu element%s",
                 path_length, path, index, done, path, size, size == 1 ? "" : "s");
        goto fail;
      }
      if (last) return json_array_set_new(node, index, value) == 0 ? 0 : submit_no_memory(error, error_size);
      node = json_array_get(node, index);
    } else {
      if (!json_is_object(node)) {
        snprintf(error, error_size, "--set %.*s: %s%.*s is %s, not an object", path_length, path,
                 parent != NULL ? parent : "", done, path, submit_type_name(node));
        goto fail;
      }
      if (last)
        return json_object_setn_new(node, key, key_length, value) == 0 ? 0 : submit_no_memory(error, error_size);
      json_t *child = json_object_getn(node, key, key_length);
      if (child == NULL) {
        if (*cursor == '[') {
          snprintf(error, error_size, "--set %.*s: %.*s does not exist, so it has no element to set",
                   path_length, path, (int)(cursor - path), path);
          goto fail;
        }
        child = json_object();
        if (child == NULL || json_object_setn_new(node, key, key_length, child) != 0) {
          snprintf(error, error_size, "out of memory");
          goto fail;
        }
      }
      node = child;
    }
    if (*cursor == '.') cursor++;
  }
syntax:
  snprintf(error, error_size, "--set %.*s: not a path like name, optimizer.lr or stages[1].epochs",
           path_length, path);
fail:
  json_decref(value);
  return -EINVAL;
}

/* What `submit` and `study submit` share: reads the document in `file` ("-": standard
 * input), applies each --set, and gives the text to send in *body (the caller frees it).
 * Without --set the file goes as it is, so the daemon's line and column numbers in an
 * error point into the user's own file. `what` ("config", "study") words the errors.
 * Returns CLI_EXIT_OK, or an exit code with the reason said on stderr. */
int submit_read_document(const char *file, const char *what, const char *const *assignments, int n_assignments,
                         char **body, size_t *length) {
  const char *shown = strcmp(file, "-") == 0 ? "standard input" : file;
  char *text = NULL;
  json_t *document = NULL;
  int exit_code = CLI_EXIT_FAILED;
  *body = NULL;
  if (strcmp(file, "-") == 0 && isatty(STDIN_FILENO))
    fprintf(stderr, "mapsage: reading the %s from standard input (end it with Ctrl-D)\n", what);
  int result = util_read_file(file, SUBMIT_FILE_LIMIT, &text, length);
  if (result == -EFBIG) fprintf(stderr, "mapsage: cannot read %s: larger than 16 MiB, so not a %s\n", shown, what);
  else if (result != 0) fprintf(stderr, "mapsage: cannot read %s: %s\n", shown, strerror(-result));
  if (result != 0) return CLI_EXIT_USAGE;
  if (n_assignments == 0) {
    *body = text;
    return CLI_EXIT_OK;
  }
  json_error_t parse_error;
  document = json_loadb(text, *length, 0, &parse_error);
  if (document == NULL) {
    fprintf(stderr, "mapsage: invalid %s:\n  %s is not JSON: line %d, column %d: %s\n", what, shown,
            parse_error.line, parse_error.column, parse_error.text);
    goto done;
  }
  if (!json_is_object(document)) {
    fprintf(stderr, "mapsage: invalid %s:\n  the %s in %s must be a JSON object\n", what, what, shown);
    goto done;
  }
  for (int i = 0; i < n_assignments; i++) {
    char error[512];
    result = submit_set(document, assignments[i], error, sizeof error);
    if (result != 0) {
      fprintf(stderr, "mapsage: %s\n", error);
      exit_code = result == -ENOMEM ? CLI_EXIT_FAILED : CLI_EXIT_USAGE;
      goto done;
    }
  }
  if ((*body = json_dumps(document, JSON_COMPACT)) == NULL) {
    exit_code = cli_out_of_memory();
    goto done;
  }
  *length = strlen(*body);
  exit_code = CLI_EXIT_OK;
done:
  free(text);
  json_decref(document);
  return exit_code;
}

/* ---------------------------------------------------------------------------------------
 * submit */

int submit_parse_arguments(const char *command, const char *what, const char *set_example, int argc, char **argv,
                           const cli_flag_t *flags, const char **file, const char **assignments, int *n_assignments) {
  options_t parser;
  cli_options_init(&parser, command, argc, argv);
  *file = NULL;
  *n_assignments = 0;
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    const cli_flag_t *flag = flags;
    while (flag != NULL && flag->value != NULL && flag->key != key) flag++;
    if (flag != NULL && flag->value != NULL) {
      *flag->value = 1;
    } else if (key == CLI_OPTION_SET) {
      if (strchr(parser.value, '=') == NULL || parser.value[0] == '=')
        return cli_usage_error(command, "--set %s: expected path=value, e.g. %s", parser.value, set_example);
      assignments[(*n_assignments)++] = parser.value;
    } else if (key == OPTIONS_ARGUMENT) {
      if (*file != NULL) return cli_usage_error(command, "one %s at a time: got %s and %s", what, *file, parser.value);
      *file = parser.value;
    } else {
      return cli_options_default(&parser, command, key);
    }
  }
  if (*file == NULL && strcmp(what, "experiment") == 0) return cli_usage_error(command, "which experiment? give its ID");
  if (*file == NULL) return cli_usage_error(command, "which %s? give a FILE, or - for standard input", what);
  return CLI_PROCEED;
}

int command_submit(const cli_global_t *global, int argc, char **argv) {
  const char *file = NULL;
  const char **assignments = calloc((size_t)argc, sizeof *assignments);
  int n_assignments = 0;
  json_t *answer = NULL;
  char *body = NULL;
  client_t client = {0};
  client_response_t response = {0};
  int exit_code = CLI_EXIT_FAILED;
  if (assignments == NULL) return cli_out_of_memory();

  int json = global->json;
  const cli_flag_t flags[] = {{CLI_OPTION_JSON, &json}, {0, NULL}};
  int parsed = submit_parse_arguments("submit", "config", "stages[0].epochs=5", argc, argv, flags, &file, assignments,
                                      &n_assignments);
  if (parsed != CLI_PROCEED) {
    exit_code = parsed;
    goto done;
  }

  size_t length = 0;
  exit_code = submit_read_document(file, "config", assignments, n_assignments, &body, &length);
  if (exit_code != CLI_EXIT_OK) goto done;
  exit_code = client_open(&client, global);
  if (exit_code != CLI_EXIT_OK) goto done;
  exit_code = client_request(&client, "POST", "/api/experiments", body, length, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_parse(&response, "POST /api/experiments", &answer);
  if (exit_code != CLI_EXIT_OK) goto done;
  long long id;
  if (format_json_integer(answer, "id", &id) != 0) {
    fprintf(stderr, "mapsage: the server accepted the config but did not say its id\n");
    exit_code = CLI_EXIT_FAILED;
    goto done;
  }
  const char *status = format_json_string(answer, "status");
  if (json) client_print_raw(&response);
  else printf("%lld\n", id);
  fprintf(stderr, "submitted experiment %lld (%s)\n", id, status != NULL ? status : "status unknown");

done:
  free(assignments);
  free(body);
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}

