/* dataset.c — `mapsage dataset add|ls|show` (the dataset registry, docs/datasets.md) and
 * `mapsage export` (a run's weights or checkpoint into a file, docs/export.md). Their
 * options are in mapsage.c's tables, as every command's. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

int command_dataset(const cli_global_t *global, int argc, char **argv) {
  (void)global;
  if (argc < 2) return cli_usage_error("dataset", "which dataset command? add, ls, show or rm");
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) return cli_help("dataset");
  return cli_usage_error("dataset", "'%s' is not a dataset command: add, ls, show or rm", argv[1]);
}

/* A path as the daemon should get it: absolute when it exists here (the daemon checks that
 * it lies inside its datasets directory), else as given (relative to that directory). */
static json_t *dataset_path(const char *given) {
  char resolved[PATH_MAX];
  return json_string(realpath(given, resolved) ? resolved : given);
}

/* What registration found: the shape and warnings for people (stderr), the checksum for
 * scripts (stdout). */
static void dataset_print_registered(const json_t *answer, const char *name) {
  const json_t *input = json_object_get(answer, "input");
  long long classes = 0, train = 0, test = 0;
  format_json_integer(answer, "classes", &classes);
  format_json_integer(answer, "train_size", &train);
  format_json_integer(answer, "test_size", &test);
  fprintf(stderr, "registered dataset %s: %lld training and %lld test examples of %lldx%lldx%lld, %lld classes\n",
          name, train, test, (long long)json_integer_value(json_array_get(input, 0)),
          (long long)json_integer_value(json_array_get(input, 1)),
          (long long)json_integer_value(json_array_get(input, 2)), classes);
  const json_t *warnings = json_object_get(json_object_get(answer, "statistics"), "warnings");
  size_t index;
  const json_t *warning;
  json_array_foreach(warnings, index, warning) fprintf(stderr, "warning: %s\n", json_string_value(warning));
  const char *checksum = format_json_string(answer, "checksum");
  printf("%s\n", checksum ? checksum : "");
}

int command_dataset_add(const cli_global_t *global, int argc, char **argv) {
  const char *name = NULL;
  json_t *body = json_object(), *files = json_array();
  int exit_code = CLI_EXIT_USAGE, json = global->json;
  client_t client = {0};
  client_response_t response = {0};
  char *text = NULL;
  if (!body || !files) return cli_out_of_memory();
  options_t parser;
  cli_options_init(&parser, "dataset add", argc, argv);
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    const char *value = parser.value;
    if (key == CLI_OPTION_JSON) {
      json = 1;
    } else if (key == CLI_OPTION_FORMAT) {
      json_object_set_new(body, "format", json_string(value));
    } else if (key == CLI_OPTION_LAYOUT) {
      json_object_set_new(body, "layout", json_string(value));
    } else if (key == CLI_OPTION_NAMES) {
      json_object_set_new(body, "names", dataset_path(value));
    } else if (key == CLI_OPTION_CLASSES) {
      long long classes;
      if (cli_parse_id(value, &classes) != 0) {
        exit_code = cli_usage_error("dataset add", "--classes: \"%s\" is not a positive number", value);
        goto done;
      }
      json_object_set_new(body, "classes", json_integer(classes));
    } else if (key == OPTIONS_ARGUMENT) {
      if (!name)
        name = value;
      else
        json_array_append_new(files, dataset_path(value));
    } else {
      exit_code = cli_options_default(&parser, "dataset add", key);
      goto done;
    }
  }
  if (!name || json_array_size(files) == 0) {
    exit_code = cli_usage_error("dataset add", "give a NAME and the dataset's files");
    goto done;
  }
  json_object_set_new(body, "name", json_string(name));
  json_object_set(body, "files", files);
  text = json_dumps(body, JSON_COMPACT);
  if (!text) {
    exit_code = cli_out_of_memory();
    goto done;
  }
  exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "POST", "/api/datasets", text, strlen(text),
                                                           &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK) {
    if (json) {
      client_print_raw(&response);
    } else {
      json_t *answer = NULL;
      exit_code = client_parse(&response, "/api/datasets", &answer);
      if (answer) dataset_print_registered(answer, name);
      json_decref(answer);
    }
  }
  client_response_free(&response);
  client_close(&client);
done:
  free(text);
  json_decref(files);
  json_decref(body);
  return exit_code;
}

int command_dataset_ls(const cli_global_t *global, int argc, char **argv) {
  int json = global->json;
  options_t parser;
  cli_options_init(&parser, "dataset ls", argc, argv);
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    if (key == CLI_OPTION_JSON)
      json = 1;
    else
      return cli_options_default(&parser, "dataset ls", key);
  }
  client_t client = {0};
  client_response_t response = {0};
  json_t *answer = NULL;
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "GET", "/api/datasets", NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK && json) client_print_raw(&response);
  if (exit_code == CLI_EXIT_OK && !json) exit_code = client_parse(&response, "/api/datasets", &answer);
  if (answer) {
    static const table_align_t align[] = {TABLE_LEFT, TABLE_LEFT, TABLE_RIGHT, TABLE_LEFT, TABLE_RIGHT, TABLE_RIGHT,
                                          TABLE_LEFT};
    static const char *const header[] = {"NAME", "FORMAT", "CLASSES", "INPUT", "TRAIN", "TEST", "WARNINGS"};
    table_t table;
    table_init(&table, ARRAY_SIZE(header), align);
    table_add_row(&table, header);
    size_t i;
    const json_t *dataset;
    json_array_foreach(json_object_get(answer, "datasets"), i, dataset) {
      char classes[32] = "", input[64] = "", train[32] = "", test[32] = "", warnings[32] = "";
      const json_t *shape = json_object_get(dataset, "input");
      long long number;
      if (format_json_integer(dataset, "classes", &number) == 0) snprintf(classes, sizeof classes, "%lld", number);
      if (json_array_size(shape) == 3)
        snprintf(input, sizeof input, "%lldx%lldx%lld", (long long)json_integer_value(json_array_get(shape, 0)),
                 (long long)json_integer_value(json_array_get(shape, 1)),
                 (long long)json_integer_value(json_array_get(shape, 2)));
      if (format_json_integer(dataset, "train_size", &number) == 0) snprintf(train, sizeof train, "%lld", number);
      if (format_json_integer(dataset, "test_size", &number) == 0) snprintf(test, sizeof test, "%lld", number);
      const json_t *list = json_object_get(dataset, "warnings");
      if (json_is_array(list)) snprintf(warnings, sizeof warnings, "%zu", json_array_size(list));
      else snprintf(warnings, sizeof warnings, "not read yet");
      const char *cells[] = {format_json_string(dataset, "name"),
                             format_json_string(json_object_get(dataset, "source"), "format"), classes, input, train,
                             test, warnings};
      table_add_row(&table, cells);
    }
    table_print(&table, stdout);
    table_free(&table);
    json_decref(answer);
  }
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}

int command_dataset_show(const cli_global_t *global, int argc, char **argv) {
  const char *name = NULL;
  options_t parser;
  cli_options_init(&parser, "dataset show", argc, argv);
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    if (key == CLI_OPTION_JSON) continue; /* what it prints is JSON already */
    if (key != OPTIONS_ARGUMENT || name) return cli_options_default(&parser, "dataset show", key);
    name = parser.value;
  }
  if (!name) return cli_usage_error("dataset show", "which dataset? give its NAME");
  buffer_t path = {0};
  if (buffer_append_text(&path, "/api/datasets/") != 0 || buffer_append_query_value(&path, name) != 0)
    return cli_out_of_memory();
  client_t client = {0};
  client_response_t response = {0};
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "GET", buffer_text(&path), NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK) client_print_raw(&response);
  client_response_free(&response);
  client_close(&client);
  buffer_free(&path);
  return exit_code;
}

/* ---------------------------------------------------------------------------------------
 * export */

int command_export(const cli_global_t *global, int argc, char **argv) {
  const char *id_text = NULL, *epoch = NULL, *output = NULL, *format = "safetensors";
  options_t parser;
  cli_options_init(&parser, "export", argc, argv);
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    if (key == CLI_OPTION_EPOCH)
      epoch = parser.value;
    else if (key == CLI_OPTION_FORMAT)
      format = parser.value;
    else if (key == CLI_OPTION_OUTPUT)
      output = parser.value;
    else if (key == OPTIONS_ARGUMENT && !id_text)
      id_text = parser.value;
    else
      return cli_options_default(&parser, "export", key);
  }
  long long id;
  if (!id_text || cli_parse_id(id_text, &id) != 0) return cli_usage_error("export", "give the experiment's ID");
  if (!output) return cli_usage_error("export", "give the file to write with -o FILE");
  int checkpoint = strcmp(format, "checkpoint") == 0;
  if (!checkpoint && strcmp(format, "safetensors") != 0)
    return cli_usage_error("export", "--format: \"%s\" is not safetensors or checkpoint", format);
  char *end;
  if (epoch && (strtol(epoch, &end, 10) < 0 || *end || end == epoch))
    return cli_usage_error("export", "--epoch: \"%s\" is not an epoch number", epoch);
  char path[128];
  client_t client = {0};
  client_response_t response = {0};
  json_t *experiment = NULL;
  int exit_code = client_open(&client, global);
  if (exit_code != CLI_EXIT_OK) return exit_code;
  if (checkpoint && !epoch) {
    snprintf(path, sizeof path, "/api/experiments/%lld", id);
    exit_code = client_get_json(&client, path, &experiment);
    if (exit_code != CLI_EXIT_OK) goto done;
    const json_t *list = json_object_get(experiment, "checkpoints");
    if (json_array_size(list) == 0) {
      fprintf(stderr, "mapsage: experiment %lld has no checkpoint yet\n", id);
      exit_code = CLI_EXIT_FAILED;
      goto done;
    }
    long long latest = 0;
    format_json_integer(json_array_get(list, json_array_size(list) - 1), "epoch", &latest);
    snprintf(path, sizeof path, "/api/experiments/%lld/checkpoints/%lld", id, latest);
  } else if (checkpoint) {
    snprintf(path, sizeof path, "/api/experiments/%lld/checkpoints/%s", id, epoch);
  } else {
    snprintf(path, sizeof path, "/api/experiments/%lld/export?format=safetensors%s%s", id, epoch ? "&epoch=" : "",
             epoch ? epoch : "");
  }
  exit_code = client_request(&client, "GET", path, NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code != CLI_EXIT_OK) goto done;
  int rc = util_write_file_atomic(output, response.body.data ? response.body.data : "", response.body.length);
  if (rc) {
    fprintf(stderr, "mapsage: %s: %s\n", output, strerror(-rc));
    exit_code = CLI_EXIT_FAILED;
    goto done;
  }
  fprintf(stderr, "wrote %s (%zu bytes)\n", output, response.body.length);
done:
  json_decref(experiment);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}

/* `dataset rm NAME`: DELETE /api/datasets/NAME; the files stay where they are. */
int command_dataset_rm(const cli_global_t *global, int argc, char **argv) {
  const char *name = NULL;
  int json = global->json;
  options_t parser;
  cli_options_init(&parser, "dataset rm", argc, argv);
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    if (key == CLI_OPTION_JSON) {
      json = 1;
      continue;
    }
    if (key != OPTIONS_ARGUMENT || name) return cli_options_default(&parser, "dataset rm", key);
    name = parser.value;
  }
  if (!name) return cli_usage_error("dataset rm", "which dataset? give its NAME");
  buffer_t path = {0};
  if (buffer_append_text(&path, "/api/datasets/") != 0 || buffer_append_query_value(&path, name) != 0)
    return cli_out_of_memory();
  client_t client = {0};
  client_response_t response = {0};
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "DELETE", buffer_text(&path), NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK) {
    if (json)
      client_print_raw(&response);
    else
      printf("deleted dataset %s (its files are kept)\n", name);
  }
  client_response_free(&response);
  client_close(&client);
  buffer_free(&path);
  return exit_code;
}
