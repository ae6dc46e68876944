/* commands.c — the one-request commands of `mapsage`: submit (with --set), ls, show,
 * cancel and sql. Each parses its own arguments, makes its request through client.c and
 * prints for people (or the server's raw JSON with --json). Scripts get what they need on
 * stdout (submit prints only the id there); everything meant for a person's eyes alone
 * goes to stderr. `watch` lives in watch.c. */
#include "cli.h"

#include <errno.h>
#include <math.h>
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
  int options_done = 0;
  *file = NULL;
  *n_assignments = 0;
  for (int i = 1; i < argc; i++) {
    const char *value;
    int matched = options_done ? 0 : cli_option_value(argc, argv, &i, "--set", &value);
    if (matched < 0) return cli_usage_error(command, "--set needs path=value");
    if (matched > 0) {
      if (strchr(value, '=') == NULL || value[0] == '=')
        return cli_usage_error(command, "--set %s: expected path=value, e.g. %s", value, set_example);
      assignments[(*n_assignments)++] = value;
      continue;
    }
    const cli_flag_t *flag = flags;
    while (!options_done && flag && flag->name && strcmp(argv[i], flag->name) != 0) flag++;
    if (!options_done && flag && flag->name) {
      *flag->value = 1;
    } else if (!options_done && (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)) {
      return cli_help(command);
    } else if (!options_done && strcmp(argv[i], "--") == 0) {
      options_done = 1;
    } else if (!options_done && argv[i][0] == '-' && argv[i][1] != '\0') {
      return cli_usage_error(command, "unknown option %s", argv[i]);
    } else if (*file != NULL) {
      return cli_usage_error(command, "one %s at a time: got %s and %s", what, *file, argv[i]);
    } else {
      *file = argv[i];
    }
  }
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

  int parsed = submit_parse_arguments("submit", "config", "stages[0].epochs=5", argc, argv, NULL, &file, assignments,
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
  printf("%lld\n", id);
  fprintf(stderr, "submitted experiment %lld (%s)\n", id, status != NULL ? status : "status unknown");

done:
  free(assignments);
  free(body);
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}

/* ---------------------------------------------------------------------------------------
 * ls */

#define LS_NAME_COLUMNS 40

/* One experiment as the row ID NAME STATUS EPOCH TEST-ACC AGE DURATION. */
static int ls_add_row(table_t *table, const json_t *experiment, double now) {
  char id[32], epoch[48], accuracy[32], age[32], duration[32];
  buffer_t name = {0};
  long long number;
  if (format_json_integer(experiment, "id", &number) == 0)
    snprintf(id, sizeof id, "%lld", number);
  else
    snprintf(id, sizeof id, "?");

  const char *title = format_json_string(experiment, "name");
  if (buffer_append_text(&name, "") != 0 ||
      format_append_cut(&name, title != NULL && title[0] != '\0' ? title : "-", LS_NAME_COLUMNS) != 0) {
    buffer_free(&name);
    return -ENOMEM;
  }

  const char *status = format_json_string(experiment, "status");
  const json_t *progress = json_object_get(experiment, "progress");
  long long done, total;
  if (format_json_integer(progress, "epoch", &done) == 0 && format_json_integer(progress, "epochs", &total) == 0)
    snprintf(epoch, sizeof epoch, "%lld/%lld", done, total);
  else
    snprintf(epoch, sizeof epoch, "-");

  double value;
  if (format_json_number(json_object_get(experiment, "summary"), "final_test_accuracy", &value) == 0)
    snprintf(accuracy, sizeof accuracy, "%.2f%%", value * 100);
  else
    snprintf(accuracy, sizeof accuracy, "-");

  double created, started, finished;
  if (format_parse_time(format_json_string(experiment, "created_at"), &created) == 0)
    format_age(now - created, age, sizeof age);
  else
    snprintf(age, sizeof age, "-");
  if (format_parse_time(format_json_string(experiment, "started_at"), &started) == 0) {
    if (format_parse_time(format_json_string(experiment, "finished_at"), &finished) != 0) finished = now;
    format_duration(finished - started, duration, sizeof duration);
  } else {
    snprintf(duration, sizeof duration, "-");
  }

  const char *cells[] = {id, name.data, status != NULL ? status : "?", epoch, accuracy, age, duration};
  int result = table_add_row(table, cells);
  buffer_free(&name);
  return result;
}

/* What `ls` and `study ls` share: the array `key` of a list answer as a table, a row per
 * item by `add_row`, and a note on stderr when the server has older ones. Returns an exit
 * code. */
int print_list_table(const json_t *answer, const char *key, const char *const *header, const table_align_t *align,
                     size_t columns, int (*add_row)(table_t *table, const json_t *item, double now)) {
  const json_t *items = json_object_get(answer, key);
  if (!json_is_array(items)) {
    fprintf(stderr, "mapsage: the server's list has no \"%s\" array\n", key);
    return CLI_EXIT_FAILED;
  }
  table_t table = {0};
  table_init(&table, columns, align);
  const double now = util_now();
  int result = table_add_row(&table, header);
  size_t i;
  const json_t *item;
  json_array_foreach(items, i, item) if (result == 0) result = add_row(&table, item, now);
  if (result == 0) table_print(&table, stdout);
  table_free(&table);
  if (result != 0) return cli_out_of_memory();
  const json_t *next_before = json_object_get(answer, "next_before");
  if (next_before != NULL && !json_is_null(next_before))
    fprintf(stderr, "mapsage: the newest %zu shown; older ones with --limit N (up to 500)\n", json_array_size(items));
  return CLI_EXIT_OK;
}

int command_ls(const cli_global_t *global, int argc, char **argv) {
  const char *status = NULL, *name = NULL, *limit = NULL;
  int json = 0;
  for (int i = 1; i < argc; i++) {
    const char *value;
    int matched;
    if ((matched = cli_option_value(argc, argv, &i, "--status", &value)) != 0) {
      if (matched < 0) return cli_usage_error("ls", "--status needs a status, e.g. running");
      status = value;
    } else if ((matched = cli_option_value(argc, argv, &i, "--name", &value)) != 0) {
      if (matched < 0) return cli_usage_error("ls", "--name needs some text to look for");
      name = value;
    } else if ((matched = cli_option_value(argc, argv, &i, "--limit", &value)) != 0) {
      long long count;
      if (matched < 0 || cli_parse_id(value, &count) != 0)
        return cli_usage_error("ls", "--limit needs a positive number");
      limit = value;
    } else if (strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      return cli_help("ls");
    } else {
      return cli_usage_error("ls", argv[i][0] == '-' ? "unknown option %s" : "unexpected argument %s", argv[i]);
    }
  }

  buffer_t path = {0};
  client_t client = {0};
  client_response_t response = {0};
  json_t *answer = NULL;
  int exit_code = CLI_EXIT_FAILED;
  /* The filters go to the server as they are: it knows the statuses and limits, and words
   * the error when one is wrong. */
  char separator = '?';
  const char *names[] = {"status", "name", "limit"};
  const char *values[] = {status, name, limit};
  int result = buffer_append_text(&path, "/api/experiments");
  for (size_t i = 0; i < ARRAY_SIZE(names) && result == 0; i++) {
    if (values[i] == NULL) continue;
    result = buffer_printf(&path, "%c%s=", separator, names[i]);
    if (result == 0) result = buffer_append_query_value(&path, values[i]);
    separator = '&';
  }
  if (result != 0) {
    exit_code = cli_out_of_memory();
    goto done;
  }

  exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "GET", path.data, NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code != CLI_EXIT_OK) goto done;
  if (json) {
    client_print_raw(&response);
    goto done;
  }
  exit_code = client_parse(&response, "GET /api/experiments", &answer);
  if (exit_code != CLI_EXIT_OK) goto done;
  static const table_align_t align[] = {TABLE_RIGHT, TABLE_LEFT, TABLE_LEFT, TABLE_RIGHT,
                                        TABLE_RIGHT, TABLE_RIGHT, TABLE_RIGHT};
  static const char *const header[] = {"ID", "NAME", "STATUS", "EPOCH", "TEST-ACC", "AGE", "DURATION"};
  exit_code = print_list_table(answer, "experiments", header, align, ARRAY_SIZE(header), ls_add_row);
done:
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  buffer_free(&path);
  return exit_code;
}

/* ---------------------------------------------------------------------------------------
 * show */

/* A line "  label    text" of the summary block. */
static void show_field(const char *label, const char *text) {
  printf("  %-10s %s\n", label, text);
}

static void show_time(const json_t *experiment, const char *label, const char *key, double now,
                      const char *since_key, const char *since_word) {
  double when, since;
  char local[64], age[32], gap[32];
  const char *text = format_json_string(experiment, key);
  if (text == NULL) return;
  if (format_parse_time(text, &when) != 0) {
    show_field(label, text);
    return;
  }
  format_local_time(when, local, sizeof local);
  format_age(now - when, age, sizeof age);
  if (since_key != NULL && format_parse_time(format_json_string(experiment, since_key), &since) == 0) {
    format_duration(when - since, gap, sizeof gap);
    printf("  %-10s %s  (%s ago; %s %s)\n", label, local, age, since_word, gap);
  } else {
    printf("  %-10s %s  (%s ago)\n", label, local, age);
  }
}

/* Prints an object's fields one a line, numbers readable, nested values as compact JSON. */
static void show_object(const char *title, const json_t *object) {
  if (!json_is_object(object) || json_object_size(object) == 0) return;
  int width = 0;
  const char *key;
  const json_t *value;
  json_object_foreach((json_t *)object, key, value) {
    int length = (int)format_text_width(key);
    if (length > width) width = length;
  }
  printf("%s\n", title);
  json_object_foreach((json_t *)object, key, value) {
    char number[64];
    if (json_is_number(value)) {
      format_number(value, number, sizeof number);
      /* Accuracies are fractions; people think of them in percent. */
      if (strstr(key, "accuracy") != NULL && json_is_real(value))
        printf("  %-*s  %s  (%.2f%%)\n", width, key, number, json_real_value(value) * 100);
      else
        printf("  %-*s  %s\n", width, key, number);
    } else if (json_is_string(value)) {
      printf("  %-*s  %s\n", width, key, json_string_value(value));
    } else {
      char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
      printf("  %-*s  %s\n", width, key, text != NULL ? text : "?");
      free(text);
    }
  }
}

int command_show(const cli_global_t *global, int argc, char **argv) {
  long long id;
  int json = 0;
  int parsed = cli_parse_id_command("show", argc, argv, &id, &json);
  if (parsed != CLI_PROCEED) return parsed;

  char path[64];
  snprintf(path, sizeof path, "/api/experiments/%lld", id);
  client_t client = {0};
  client_response_t response = {0};
  json_t *experiment = NULL;
  char *config = NULL;
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "GET", path, NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code != CLI_EXIT_OK) goto done;
  if (json) {
    client_print_raw(&response);
    goto done;
  }
  exit_code = client_parse(&response, path, &experiment);
  if (exit_code != CLI_EXIT_OK) goto done;

  const char *name = format_json_string(experiment, "name");
  const char *status = format_json_string(experiment, "status");
  const char *error = format_json_string(experiment, "error");
  long long attempts = 0, priority = 0;
  char line[256];
  printf("experiment %lld%s%s\n", id, name != NULL && name[0] != '\0' ? ": " : "", name != NULL ? name : "");
  if (format_json_integer(experiment, "attempts", &attempts) == 0 && attempts > 1)
    snprintf(line, sizeof line, "%s (attempt %lld)", status != NULL ? status : "?", attempts);
  else
    snprintf(line, sizeof line, "%s", status != NULL ? status : "?");
  show_field("status", line);
  if (error != NULL) show_field("error", error);
  double now = util_now();
  show_time(experiment, "created", "created_at", now, NULL, NULL);
  show_time(experiment, "started", "started_at", now, "created_at", "waited");
  show_time(experiment, "finished", "finished_at", now, "started_at", "ran");
  if (format_json_integer(experiment, "priority", &priority) == 0 && priority != 0) {
    snprintf(line, sizeof line, "%lld", priority);
    show_field("priority", line);
  }
  const json_t *progress = json_object_get(experiment, "progress");
  long long epoch, epochs, step, stage, stages;
  if (format_json_integer(progress, "epoch", &epoch) == 0 && format_json_integer(progress, "epochs", &epochs) == 0) {
    int used = snprintf(line, sizeof line, "epoch %lld/%lld", epoch, epochs);
    if (format_json_integer(progress, "step", &step) == 0 && used < (int)sizeof line)
      used += snprintf(line + used, sizeof line - (size_t)used, ", step %lld", step);
    if (format_json_integer(progress, "stage", &stage) == 0 &&
        format_json_integer(progress, "stages", &stages) == 0 && stages > 1 && used < (int)sizeof line)
      snprintf(line + used, sizeof line - (size_t)used, ", stage %lld/%lld", stage + 1, stages);
    show_field("progress", line);
  }
  show_object("summary", json_object_get(experiment, "summary"));
  show_object("worker", json_object_get(experiment, "worker"));
  const json_t *stored = json_object_get(experiment, "config");
  if (stored != NULL) {
    /* 15 significant digits print 0.1 as 0.1; --json has the exact stored text. */
    config = json_dumps(stored, JSON_INDENT(2) | JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY);
    if (config == NULL) {
      exit_code = cli_out_of_memory();
      goto done;
    }
    printf("config\n%s\n", config);
  }
done:
  free(config);
  json_decref(experiment);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}

/* ---------------------------------------------------------------------------------------
 * cancel */

int command_cancel(const cli_global_t *global, int argc, char **argv) {
  long long id;
  int parsed = cli_parse_id_command("cancel", argc, argv, &id, NULL);
  if (parsed != CLI_PROCEED) return parsed;

  char path[80];
  snprintf(path, sizeof path, "/api/experiments/%lld/cancel", id);
  client_t client = {0};
  client_response_t response = {0};
  json_t *answer = NULL;
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "POST", path, NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_parse(&response, path, &answer);
  if (exit_code != CLI_EXIT_OK) goto done;
  const char *status = format_json_string(answer, "status");
  if (status == NULL) status = "status unknown";
  if (json_is_true(json_object_get(answer, "cancel_requested")) || response.status == 202)
    printf("experiment %lld: %s; cancel requested, it stops when its worker exits\n", id, status);
  else
    printf("experiment %lld: %s\n", id, status);
done:
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}

/* ---------------------------------------------------------------------------------------
 * report: the run's analysis (GET /api/experiments/{id}/report) as text: each stage's loss
 * terms, start → end and their share of the total, the run against its teacher and its
 * baseline, then the findings. */

static void print_percent(const char *label, const json_t *value) {
  if (json_is_number(value)) printf("  %-22s %.2f%%\n", label, 100 * json_number_value(value));
}

int command_report(const cli_global_t *global, int argc, char **argv) {
  long long id;
  int json = 0;
  int parsed = cli_parse_id_command("report", argc, argv, &id, &json);
  if (parsed != CLI_PROCEED) return parsed;
  char path[80];
  snprintf(path, sizeof path, "/api/experiments/%lld/report", id);
  client_t client = {0};
  json_t *report = NULL;
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_get_json(&client, path, &report);
  if (exit_code != CLI_EXIT_OK) goto done;
  if (json) {
    json_dumpf(report, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    putchar('\n');
    goto done;
  }
  const char *name = format_json_string(report, "name");
  printf("experiment %lld%s%s%s: %s\n", id, name && name[0] ? " (" : "", name && name[0] ? name : "",
         name && name[0] ? ")" : "", format_json_string(report, "status"));
  json_t *final = json_object_get(report, "final");
  print_percent("test accuracy", json_object_get(final, "test_accuracy"));
  print_percent("train accuracy", json_object_get(final, "train_accuracy"));
  print_percent("best val accuracy", json_object_get(final, "best_val_accuracy"));
  print_percent("teacher agreement", json_object_get(final, "agreement"));
  json_t *teacher = json_object_get(report, "teacher");
  if (json_is_object(teacher)) print_percent("teacher test accuracy", json_object_get(teacher, "test_accuracy"));
  json_t *baseline = json_object_get(report, "baseline");
  if (json_is_object(baseline)) {
    char label[64];
    snprintf(label, sizeof label, "baseline (#%lld)", (long long)json_integer_value(json_object_get(baseline, "id")));
    print_percent(label, json_object_get(baseline, "test_accuracy"));
  }
  size_t index;
  json_t *stage;
  json_array_foreach(json_object_get(report, "stages"), index, stage) {
    printf("\nstage %lld %s (steps %lld-%lld)\n", (long long)json_integer_value(json_object_get(stage, "stage")) + 1,
           format_json_string(stage, "name"), (long long)json_integer_value(json_object_get(stage, "first_step")),
           (long long)json_integer_value(json_object_get(stage, "last_step")));
    const char *term;
    json_t *values;
    json_object_foreach(json_object_get(stage, "terms"), term, values) {
      const json_t *share = json_object_get(json_object_get(stage, "share"), term + 5); /* after "loss/" */
      printf("  %-18s %10.4g -> %-10.4g (%+6.1f%%)", term, json_number_value(json_object_get(values, "start")),
             json_number_value(json_object_get(values, "end")),
             100 * json_number_value(json_object_get(values, "change")));
      if (json_is_number(share)) printf("   %3.0f%% of the total", 100 * json_number_value(share));
      const json_t *gradient = json_object_get(json_object_get(stage, "gradient_share"), term + 5);
      if (json_is_number(gradient)) printf(", %3.0f%% of the gradient", 100 * json_number_value(gradient));
      const json_t *cosine = json_object_get(json_object_get(stage, "gradient_cosine"), term + 5);
      if (json_is_number(cosine)) printf(", cosine with the task's %+.2f", json_number_value(cosine));
      putchar('\n');
    }
    const json_t *val = json_object_get(stage, "val_accuracy");
    if (json_is_object(val))
      printf("  %-18s %9.2f%% -> %-9.2f%% (%+.2f points)\n", "val/accuracy",
             100 * json_number_value(json_object_get(val, "before")), 100 * json_number_value(json_object_get(val, "end")),
             100 * json_number_value(json_object_get(val, "change")));
  }
  if (json_is_object(json_object_get(report, "baseline_config")))
    printf("\nno matched baseline: submit baseline_config of `mapsage report %lld --json` to compare\n", id);
  json_t *findings = json_object_get(report, "findings");
  if (json_array_size(findings) > 0) printf("\nfindings\n");
  json_t *finding;
  json_array_foreach(findings, index, finding) {
    const char *where = format_json_string(finding, "stage");
    printf("  %s%s%s%s: %s\n", format_json_string(finding, "severity"), where ? " (" : "", where ? where : "",
           where ? ")" : "", format_json_string(finding, "message"));
  }
done:
  json_decref(report);
  client_close(&client);
  return exit_code;
}

/* ---------------------------------------------------------------------------------------
 * sql: one read-only statement over the history (POST /api/sql, docs/sql.md), printed as
 * an aligned table for people, as RFC 4180 CSV, or as the server's JSON laid out to read.
 * The table is for eyes: numbers to 6 significant digits, NULL empty, control characters
 * escaped, long text cut. CSV and JSON carry every value as the server sent it. */

/* Well above the daemon's 64 KiB statement limit, so the daemon words the refusal. */
#define SQL_FILE_LIMIT (16u << 20)
/* Table cells (and headers) wider than this are cut with "…": one JSON config would
 * otherwise push every other column off the screen. */
#define SQL_CELL_COLUMNS 80

/* A --param: a JSON number, true, false or null goes as that value; a JSON string literal
 * ("\"42\"") as the string inside it, so text that looks like a number can be forced;
 * anything else as the text itself. NULL when the text is not valid UTF-8. */
static json_t *sql_param_value(const char *text) {
  json_t *value = json_loads(text, JSON_DECODE_ANY, NULL);
  if (json_is_number(value) || json_is_boolean(value) || json_is_null(value) || json_is_string(value))
    return value;
  json_decref(value);
  return json_string(text);
}

/* A REAL with every digit it has: the fewest significant digits (15 to 17) that read back
 * as the same double, with ".0" kept on whole numbers so a REAL still looks like one. */
static void sql_format_real(double value, char *out, size_t size) {
  for (int precision = 15; precision <= 17; precision++) {
    snprintf(out, size, "%.*g", precision, value);
    if (strtod(out, NULL) == value) break;
  }
  if (strspn(out, "-0123456789") == strlen(out) && strlen(out) + 2 < size) strcat(out, ".0");
}

/* Appends `length` bytes of `text` with control characters written as escapes (\n, \t,
 * \r, \x00, \x1b, \u009b): a logged line must neither break the table's rows nor move the
 * cursor or recolour the terminal. */
static int sql_append_escaped(buffer_t *buffer, const char *text, size_t length) {
  const unsigned char *end = (const unsigned char *)text + length;
  for (const unsigned char *p = (const unsigned char *)text; p < end; p++) {
    int result;
    if (*p == '\n') result = buffer_append_text(buffer, "\\n");
    else if (*p == '\t') result = buffer_append_text(buffer, "\\t");
    else if (*p == '\r') result = buffer_append_text(buffer, "\\r");
    else if (*p < 0x20 || *p == 0x7f) result = buffer_printf(buffer, "\\x%02x", *p);
    else if (*p == 0xc2 && p + 1 < end && p[1] >= 0x80 && p[1] <= 0x9f) result = buffer_printf(buffer, "\\u%04x", *++p);
    else result = buffer_append(buffer, p, 1);
    if (result != 0) return result;
  }
  return 0;
}

/* A value as the table shows it, appended to `cell` (escaped and cut). */
static int sql_table_cell(buffer_t *cell, buffer_t *scratch, const json_t *value) {
  char number[64];
  const char *text;
  size_t length;
  if (value == NULL || json_is_null(value)) return 0;
  if (json_is_number(value)) {
    /* 6 significant digits, and a whole REAL still looks like a REAL (1.0, not 1). */
    format_number(value, number, sizeof number);
    if (json_is_real(value) && json_real_value(value) == floor(json_real_value(value)) &&
        strspn(number, "-0123456789") == strlen(number))
      strcat(number, ".0");
    text = number;
    length = strlen(number);
  } else if (json_is_boolean(value)) {
    text = json_is_true(value) ? "true" : "false";
    length = strlen(text);
  } else if (json_is_string(value)) {
    text = json_string_value(value);
    length = json_string_length(value); /* text may hold NULs */
  } else {
    return format_append_cut(cell, "?", SQL_CELL_COLUMNS);
  }
  buffer_clear(scratch);
  int result = buffer_append_text(scratch, "");
  if (result == 0) result = sql_append_escaped(scratch, text, length);
  if (result == 0) result = format_append_cut(cell, buffer_text(scratch), SQL_CELL_COLUMNS);
  return result;
}

/* Adds one row of `values` (a JSON array, or the column names) to the table; a row shorter
 * than the header is padded with NULLs. */
static int sql_add_row(table_t *table, const json_t *values, buffer_t *cells, buffer_t *scratch,
                       size_t *offsets, const char **pointers) {
  buffer_clear(cells);
  for (size_t column = 0; column < table->columns; column++) {
    offsets[column] = cells->length;
    int result = sql_table_cell(cells, scratch, json_array_get(values, column));
    if (result == 0) result = buffer_append(cells, "", 1); /* each cell ends with its NUL */
    if (result != 0) return result;
  }
  for (size_t column = 0; column < table->columns; column++) pointers[column] = cells->data + offsets[column];
  return table_add_row(table, pointers);
}

static int sql_print_table(const json_t *columns, const json_t *rows) {
  size_t n_columns = json_array_size(columns);
  if (n_columns == 0) return CLI_EXIT_OK; /* a statement without a result, nothing to draw */
  table_align_t *align = calloc(n_columns, sizeof *align);
  size_t *offsets = calloc(n_columns, sizeof *offsets);
  const char **pointers = calloc(n_columns, sizeof *pointers);
  buffer_t cells = {0}, scratch = {0};
  table_t table = {0};
  int exit_code = CLI_EXIT_FAILED;
  if (align == NULL || offsets == NULL || pointers == NULL) goto out_of_memory;

  /* A column is right-aligned when what it holds is numbers (NULLs aside): SQLite's
   * columns have no type of their own, so look at the values. */
  for (size_t column = 0; column < n_columns; column++) {
    int numbers = 0, others = 0;
    size_t i;
    const json_t *row;
    json_array_foreach(rows, i, row) {
      const json_t *value = json_array_get(row, column);
      if (json_is_number(value)) numbers++;
      else if (value != NULL && !json_is_null(value)) others++;
    }
    align[column] = numbers > 0 && others == 0 ? TABLE_RIGHT : TABLE_LEFT;
  }

  table_init(&table, n_columns, align);
  table.rule = 1;
  if (sql_add_row(&table, columns, &cells, &scratch, offsets, pointers) != 0) goto out_of_memory;
  size_t i;
  const json_t *row;
  json_array_foreach(rows, i, row) {
    if (sql_add_row(&table, row, &cells, &scratch, offsets, pointers) != 0) goto out_of_memory;
  }
  table_print(&table, stdout);
  exit_code = CLI_EXIT_OK;
  goto done;
out_of_memory:
  exit_code = cli_out_of_memory();
done:
  table_free(&table);
  buffer_free(&cells);
  buffer_free(&scratch);
  free(pointers);
  free(offsets);
  free(align);
  return exit_code;
}

/* One CSV field (RFC 4180). NULL is an empty field and the empty string a quoted one (""),
 * as PostgreSQL's COPY writes them, so the two stay apart for readers that care. */
static void sql_csv_field(const json_t *value, FILE *out) {
  char number[64];
  if (value == NULL || json_is_null(value)) return;
  if (json_is_integer(value)) {
    fprintf(out, "%lld", (long long)json_integer_value(value));
  } else if (json_is_real(value)) {
    sql_format_real(json_real_value(value), number, sizeof number);
    fputs(number, out);
  } else if (json_is_boolean(value)) {
    fputs(json_is_true(value) ? "true" : "false", out);
  } else if (json_is_string(value)) {
    const char *text = json_string_value(value);
    size_t length = json_string_length(value); /* the bytes as they are, NULs included */
    int quote = length == 0;
    for (size_t i = 0; i < length && !quote; i++) quote = strchr(",\"\r\n", text[i]) != NULL && text[i] != '\0';
    if (!quote) {
      fwrite(text, 1, length, out);
      return;
    }
    fputc('"', out);
    for (size_t i = 0; i < length; i++) {
      if (text[i] == '"') fputc('"', out);
      fputc(text[i], out);
    }
    fputc('"', out);
  }
}

/* The header, then the rows; lines end with CRLF, as RFC 4180 says. */
static void sql_print_csv(const json_t *columns, const json_t *rows) {
  size_t n_columns = json_array_size(columns);
  for (size_t column = 0; column < n_columns; column++) {
    if (column > 0) fputc(',', stdout);
    sql_csv_field(json_array_get(columns, column), stdout);
  }
  fputs("\r\n", stdout);
  size_t i;
  const json_t *row;
  json_array_foreach(rows, i, row) {
    for (size_t column = 0; column < n_columns; column++) {
      if (column > 0) fputc(',', stdout);
      sql_csv_field(json_array_get(row, column), stdout);
    }
    fputs("\r\n", stdout);
  }
}

static void sql_newline(int depth, FILE *out) {
  fputc('\n', out);
  for (int i = 0; i < depth; i++) fputs("  ", out);
}

/* Writes the server's answer (`text`, known to be a JSON object) laid out for reading: one
 * member of the object a line and one row a line, every token exactly as the server wrote
 * it, so numbers keep their digits and strings their escapes. Only the layout changes. */
static void sql_print_json(const char *text, size_t length, FILE *out) {
  int depth = 0;
  int broken[3] = {0}; /* whether the containers at depths 1 and 2 put a member a line */
  int rows_key = 0;    /* whether the last string seen in the top object was "rows" */
  for (size_t i = 0; i < length; i++) {
    char c = text[i];
    if (c == '"') {
      size_t start = i;
      for (i++; i < length && text[i] != '"'; i++)
        if (text[i] == '\\') i++;
      fwrite(text + start, 1, i - start + 1, out);
      if (depth == 1) rows_key = i - start == 5 && memcmp(text + start, "\"rows", 5) == 0;
    } else if (c == '{' || c == '[') {
      size_t next = i + 1 + strspn(text + i + 1, " \t\r\n");
      int empty = next < length && (text[next] == '}' || text[next] == ']');
      fputc(c, out);
      depth++;
      int breaks = !empty && (depth == 1 || (depth == 2 && c == '[' && rows_key));
      if (depth < 3) broken[depth] = breaks;
      if (breaks) sql_newline(depth, out);
    } else if (c == '}' || c == ']') {
      if (depth > 0 && depth < 3 && broken[depth]) sql_newline(depth - 1, out);
      fputc(c, out);
      depth--;
    } else if (c == ',') {
      fputc(',', out);
      if (depth > 0 && depth < 3 && broken[depth]) sql_newline(depth, out);
      else fputc(' ', out);
    } else if (c == ':') {
      fputs(": ", out);
    } else if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
      fputc(c, out);
    }
  }
  fputc('\n', out);
}

int command_sql(const cli_global_t *global, int argc, char **argv) {
  const char *statement = NULL;
  int csv = 0, json = 0, options_done = 0;
  char *text = NULL, *body = NULL;
  json_t *params = json_array(), *request = NULL, *answer = NULL;
  client_t client = {0};
  client_response_t response = {0};
  int exit_code = CLI_EXIT_FAILED;
  if (params == NULL) return cli_out_of_memory();

  for (int i = 1; i < argc; i++) {
    const char *value;
    int matched = options_done ? 0 : cli_option_value(argc, argv, &i, "--param", &value);
    if (matched < 0) {
      exit_code = cli_usage_error("sql", "--param needs a VALUE");
      goto done;
    }
    if (matched > 0) {
      json_t *param = sql_param_value(value);
      if (param == NULL) {
        exit_code = cli_usage_error("sql", "--param %zu: the value is not valid UTF-8", json_array_size(params) + 1);
        goto done;
      }
      if (json_array_append_new(params, param) != 0) {
        exit_code = cli_out_of_memory();
        goto done;
      }
    } else if (!options_done && strcmp(argv[i], "--csv") == 0) {
      csv = 1;
    } else if (!options_done && strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (!options_done && (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)) {
      exit_code = cli_help("sql");
      goto done;
    } else if (!options_done && strcmp(argv[i], "--") == 0) {
      options_done = 1;
    } else if (!options_done && argv[i][0] == '-' && argv[i][1] != '\0') {
      exit_code = cli_usage_error("sql", "unknown option %s", argv[i]);
      goto done;
    } else if (statement != NULL) {
      exit_code = cli_usage_error("sql", "one statement at a time; quote it as one argument: "
                                  "mapsage sql \"SELECT …\"");
      goto done;
    } else {
      statement = argv[i];
    }
  }
  if (csv && json) {
    exit_code = cli_usage_error("sql", "--csv or --json, not both");
    goto done;
  }
  if (statement == NULL) {
    exit_code = cli_usage_error("sql", "which statement? give it in quotes, or - to read it from standard input");
    goto done;
  }

  if (strcmp(statement, "-") == 0) {
    if (isatty(STDIN_FILENO))
      fprintf(stderr, "mapsage: reading the statement from standard input (end it with Ctrl-D)\n");
    size_t length = 0;
    int result = util_read_file("-", SQL_FILE_LIMIT, &text, &length);
    if (result != 0) {
      fprintf(stderr, "mapsage: cannot read standard input: %s\n",
              result == -EFBIG ? "larger than 16 MiB, so not a statement" : strerror(-result));
      exit_code = CLI_EXIT_USAGE;
      goto done;
    }
    if (strlen(text) != length) {
      fprintf(stderr, "mapsage: the statement on standard input contains a NUL byte\n");
      exit_code = CLI_EXIT_USAGE;
      goto done;
    }
    statement = text;
  }
  json_t *sql_text = json_string(statement);
  if (sql_text == NULL) {
    exit_code = cli_usage_error("sql", "the statement is not valid UTF-8");
    goto done;
  }
  request = json_pack("{s:o, s:O}", "sql", sql_text, "params", params);
  body = request != NULL ? json_dumps(request, JSON_COMPACT) : NULL;
  if (body == NULL) {
    exit_code = cli_out_of_memory();
    goto done;
  }

  exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "POST", "/api/sql", body, strlen(body), &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code != CLI_EXIT_OK) goto done;
  /* Not client_parse: SQLite text may hold NUL characters, which JSON carries as \u0000. */
  json_error_t parse_error;
  answer = json_loadb(buffer_text(&response.body), response.body.length, JSON_ALLOW_NUL, &parse_error);
  if (!json_is_object(answer)) {
    fprintf(stderr, "mapsage: the server's answer to POST /api/sql is not a JSON object%s%s\n",
            answer == NULL ? ": " : "", answer == NULL ? parse_error.text : "");
    exit_code = CLI_EXIT_FAILED;
    goto done;
  }
  const json_t *columns = json_object_get(answer, "columns"), *rows = json_object_get(answer, "rows");
  if (!json_is_array(columns) || !json_is_array(rows)) {
    fprintf(stderr, "mapsage: the server's answer to POST /api/sql has no \"columns\" and \"rows\" arrays\n");
    exit_code = CLI_EXIT_FAILED;
    goto done;
  }

  if (json) {
    sql_print_json(buffer_text(&response.body), response.body.length, stdout);
  } else if (csv) {
    sql_print_csv(columns, rows);
  } else {
    exit_code = sql_print_table(columns, rows);
    if (exit_code != CLI_EXIT_OK) goto done;
    size_t count = json_array_size(rows);
    double elapsed = 0;
    format_json_number(answer, "elapsed_ms", &elapsed);
    fflush(stdout); /* the footer comes after the table on a terminal that shows both */
    fprintf(stderr, "(%zu row%s, %.*f ms)\n", count, count == 1 ? "" : "s", elapsed < 1 ? 2 : 1, elapsed);
  }
  /* Whatever the format: a cut answer must not pass for a whole one, and a value marked by
   * the server (text that was not UTF-8) must not pass for what was stored. The server's
   * warning says which limit cut it and which columns were marked. */
  const char *warning = format_json_string(answer, "warning");
  if (warning != NULL || json_is_true(json_object_get(answer, "truncated"))) {
    fflush(stdout);
    if (warning != NULL) fprintf(stderr, "mapsage: %s\n", warning);
    else fprintf(stderr, "(truncated after %zu rows)\n", json_array_size(rows));
  }
  /* A row with fewer values than there are columns was shown padded with NULLs. */
  size_t i;
  const json_t *row;
  json_array_foreach(rows, i, row) {
    if (json_array_size(row) != json_array_size(columns)) {
      fprintf(stderr, "mapsage: row %zu of the answer has %zu values for %zu columns\n", i + 1,
              json_array_size(row), json_array_size(columns));
      break;
    }
  }

done:
  free(text);
  free(body);
  json_decref(params);
  json_decref(request);
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}
