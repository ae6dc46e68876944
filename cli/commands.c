/* commands.c — the one-request commands of `mapsage` about one experiment or the list:
 * ls, show, cancel and report. Each parses its own arguments (common/options.h, its table in
 * mapsage.c), makes its request through client.c and prints for people (or the server's
 * JSON with --json). Everything meant for a person's eyes alone goes to stderr. submit is in
 * submit.c, sql in sql.c, watch in watch.c, rerun in rerun.c, logs in logs.c. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---------------------------------------------------------------------------------------
 * ls */

#define LS_NAME_COLUMNS 40
#define LS_FIXED_COLUMNS 7 /* ID NAME STATUS EPOCH TEST-ACC AGE DURATION */

/* The config values and summary figures `ls --columns` adds to each row, by the names the
 * server keys them with in the row's "columns" (as they were asked for). */
typedef struct {
  char **names;
  size_t count;
} ls_columns_t;

/* A value of a row's "columns" as a cell: numbers as format_number writes them, texts cut,
 * booleans as words, a missing value as "-", anything else as compact JSON. */
static int ls_append_value(buffer_t *cell, const json_t *value) {
  char number[64];
  if (value == NULL || json_is_null(value)) return buffer_append_text(cell, "-");
  if (json_is_number(value)) {
    format_number(value, number, sizeof number);
    return buffer_append_text(cell, number);
  }
  if (json_is_string(value)) return format_append_cut(cell, json_string_value(value), LS_NAME_COLUMNS);
  char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
  if (text == NULL) return -ENOMEM;
  int result = format_append_cut(cell, text, LS_NAME_COLUMNS);
  free(text);
  return result;
}

/* One experiment as the row ID NAME STATUS EPOCH TEST-ACC AGE DURATION, then its --columns. */
static int ls_add_row(table_t *table, const json_t *experiment, double now, const void *context) {
  const ls_columns_t *columns = context;
  char id[32], epoch[48], accuracy[32], age[32], duration[32];
  buffer_t name = {0};
  buffer_t *extra = NULL;
  const char **cells = NULL;
  int result = -ENOMEM;
  long long number;
  if (format_json_integer(experiment, "id", &number) == 0)
    snprintf(id, sizeof id, "%lld", number);
  else
    snprintf(id, sizeof id, "?");

  const char *title = format_json_string(experiment, "name");
  if (buffer_append_text(&name, "") != 0 ||
      format_append_cut(&name, title != NULL && title[0] != '\0' ? title : "-", LS_NAME_COLUMNS) != 0)
    goto done;

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

  const char *fixed[] = {id, name.data, status != NULL ? status : "?", epoch, accuracy, age, duration};
  extra = calloc(columns->count + 1, sizeof *extra);
  cells = calloc(ARRAY_SIZE(fixed) + columns->count, sizeof *cells);
  if (extra == NULL || cells == NULL) goto done;
  memcpy(cells, fixed, sizeof fixed);
  const json_t *values = json_object_get(experiment, "columns");
  for (size_t i = 0; i < columns->count; i++) {
    if (ls_append_value(&extra[i], json_object_get(values, columns->names[i])) != 0) goto done;
    cells[ARRAY_SIZE(fixed) + i] = extra[i].data;
  }
  result = table_add_row(table, cells);
done:
  if (extra != NULL)
    for (size_t i = 0; i < columns->count; i++) buffer_free(&extra[i]);
  free(extra);
  free(cells);
  buffer_free(&name);
  return result;
}

/* What `ls` and `study ls` share: the array `key` of a list answer as a table, a row per
 * item by `add_row`, and a note on stderr when the server has more. Returns an exit code. */
int print_list_table(const json_t *answer, const char *key, const char *const *header, const table_align_t *align,
                     size_t columns,
                     int (*add_row)(table_t *table, const json_t *item, double now, const void *context),
                     const void *context) {
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
  json_array_foreach(items, i, item) if (result == 0) result = add_row(&table, item, now, context);
  if (result == 0) table_print(&table, stdout);
  table_free(&table);
  if (result != 0) return cli_out_of_memory();
  const json_t *next_before = json_object_get(answer, "next_before");
  const json_t *next_offset = json_object_get(answer, "next_offset");
  if (next_before != NULL && !json_is_null(next_before))
    fprintf(stderr, "mapsage: the newest %zu shown; older ones with --limit N (up to 500)\n", json_array_size(items));
  else if (json_is_integer(next_offset))
    fprintf(stderr, "mapsage: the first %zu shown; the next ones with --offset %lld (or --limit N, up to 500)\n",
            json_array_size(items), (long long)json_integer_value(next_offset));
  return CLI_EXIT_OK;
}

/* Appends ",item" (or "item" first) to a comma-separated list built from a repeated flag. */
static int ls_append_item(buffer_t *list, const char *item) {
  if (list->length > 0 && buffer_append_text(list, ",") != 0) return -ENOMEM;
  return buffer_append_text(list, item);
}

/* Splits the comma-separated --columns into the names the rows carry their values under. */
static int ls_split_columns(const char *list, ls_columns_t *columns) {
  for (const char *item = list; item != NULL && *item != '\0';) {
    const char *comma = strchr(item, ',');
    size_t length = comma != NULL ? (size_t)(comma - item) : strlen(item);
    if (length > 0) {
      char **grown = realloc(columns->names, (columns->count + 1) * sizeof *grown);
      if (grown == NULL) return -ENOMEM;
      columns->names = grown;
      if ((columns->names[columns->count] = strndup(item, length)) == NULL) return -ENOMEM;
      columns->count++;
    }
    item = comma != NULL ? comma + 1 : NULL;
  }
  return 0;
}

/* The table's header and alignment: the seven fixed columns, then each of --columns by
 * its name in capitals, right-aligned (they are mostly numbers). */
static int ls_header(const ls_columns_t *columns, char ***header, table_align_t **align) {
  static const table_align_t fixed_align[] = {TABLE_RIGHT, TABLE_LEFT, TABLE_LEFT, TABLE_RIGHT,
                                              TABLE_RIGHT, TABLE_RIGHT, TABLE_RIGHT};
  static const char *const fixed[] = {"ID", "NAME", "STATUS", "EPOCH", "TEST-ACC", "AGE", "DURATION"};
  size_t total = ARRAY_SIZE(fixed) + columns->count;
  *header = calloc(total, sizeof **header);
  *align = calloc(total, sizeof **align);
  if (*header == NULL || *align == NULL) return -ENOMEM;
  for (size_t i = 0; i < total; i++) {
    const char *text = i < ARRAY_SIZE(fixed) ? fixed[i] : columns->names[i - ARRAY_SIZE(fixed)];
    if (((*header)[i] = strdup(text)) == NULL) return -ENOMEM;
    if (i >= ARRAY_SIZE(fixed))
      for (char *c = (*header)[i]; *c != '\0'; c++) *c = (char)toupper((unsigned char)*c);
    (*align)[i] = i < ARRAY_SIZE(fixed) ? fixed_align[i] : TABLE_RIGHT;
  }
  return 0;
}

/* What `ls` was asked for: the list's options as the server takes them, the repeatable
 * flags joined with commas. */
typedef struct {
  const char *status, *name, *limit, *offset, *archived, *sort, *order;
  buffer_t tags, where, columns;
  int json;
} ls_options_t;

static void ls_options_free(ls_options_t *options) {
  buffer_free(&options->tags);
  buffer_free(&options->where);
  buffer_free(&options->columns);
}

/* Parses ls's arguments; CLI_PROCEED, or the exit code to return at once. */
static int ls_parse(ls_options_t *options, int argc, char **argv) {
  options_t parser;
  cli_options_init(&parser, "ls", argc, argv);
  int key, appended = 0;
  while ((key = options_next(&parser)) != OPTIONS_END && appended == 0) {
    long long count;
    if (key == CLI_OPTION_STATUS) {
      options->status = parser.value;
    } else if (key == CLI_OPTION_NAME) {
      options->name = parser.value;
    } else if (key == CLI_OPTION_LIMIT) {
      if (cli_parse_id(parser.value, &count) != 0) return cli_usage_error("ls", "--limit needs a positive number");
      options->limit = parser.value;
    } else if (key == CLI_OPTION_OFFSET) {
      if (cli_parse_id(parser.value, &count) != 0 && strcmp(parser.value, "0") != 0)
        return cli_usage_error("ls", "--offset needs a number of rows, 0 or more");
      options->offset = parser.value;
    } else if (key == CLI_OPTION_TAG) {
      appended = ls_append_item(&options->tags, parser.value);
    } else if (key == CLI_OPTION_WHERE) {
      appended = ls_append_item(&options->where, parser.value);
    } else if (key == CLI_OPTION_COLUMNS) {
      appended = ls_append_item(&options->columns, parser.value);
    } else if (key == CLI_OPTION_ARCHIVED) {
      options->archived = "1";
    } else if (key == CLI_OPTION_ALL) {
      options->archived = "all";
    } else if (key == CLI_OPTION_SORT) {
      options->sort = parser.value;
    } else if (key == CLI_OPTION_DESC) {
      options->order = "desc";
    } else if (key == CLI_OPTION_ORDER) {
      if (strcmp(parser.value, "asc") != 0 && strcmp(parser.value, "desc") != 0)
        return cli_usage_error("ls", "--order must be asc or desc, not '%s'", parser.value);
      options->order = parser.value;
    } else if (key == CLI_OPTION_JSON) {
      options->json = 1;
    } else {
      return cli_options_default(&parser, "ls", key);
    }
  }
  return appended == 0 ? CLI_PROCEED : cli_out_of_memory();
}

/* GET /api/experiments with the options as query parameters. They go to the server as they
 * are: it knows the statuses, fields and limits, and words the error when one is wrong
 * (naming the parameter and the field). 0 or -ENOMEM. */
static int ls_path(const ls_options_t *options, buffer_t *path) {
  const char *names[] = {"status", "name", "limit", "offset", "archived", "tag", "where", "columns", "sort", "order"};
  const char *values[] = {options->status, options->name, options->limit, options->offset, options->archived,
                          options->tags.length > 0 ? options->tags.data : NULL,
                          options->where.length > 0 ? options->where.data : NULL,
                          options->columns.length > 0 ? options->columns.data : NULL, options->sort, options->order};
  char separator = '?';
  int result = buffer_append_text(path, "/api/experiments");
  for (size_t i = 0; i < ARRAY_SIZE(names) && result == 0; i++) {
    if (values[i] == NULL) continue;
    result = buffer_printf(path, "%c%s=", separator, names[i]);
    if (result == 0) result = buffer_append_query_value(path, values[i]);
    separator = '&';
  }
  return result;
}

int command_ls(const cli_global_t *global, int argc, char **argv) {
  ls_options_t options = {.json = global->json};
  int exit_code = ls_parse(&options, argc, argv);
  if (exit_code != CLI_PROCEED) {
    ls_options_free(&options);
    return exit_code;
  }
  buffer_t path = {0};
  client_t client = {0};
  client_response_t response = {0};
  json_t *answer = NULL;
  ls_columns_t columns = {0};
  char **header = NULL;
  table_align_t *align = NULL;
  int result = ls_path(&options, &path);
  if (result == 0) result = ls_split_columns(options.columns.data, &columns);
  if (result == 0) result = ls_header(&columns, &header, &align);
  if (result != 0) {
    exit_code = cli_out_of_memory();
    goto done;
  }

  exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "GET", path.data, NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code != CLI_EXIT_OK) goto done;
  if (options.json) {
    client_print_raw(&response);
    goto done;
  }
  exit_code = client_parse(&response, "GET /api/experiments", &answer);
  if (exit_code != CLI_EXIT_OK) goto done;
  exit_code = print_list_table(answer, "experiments", (const char *const *)header, align,
                               LS_FIXED_COLUMNS + columns.count, ls_add_row, &columns);
done:
  for (size_t i = 0; header != NULL && i < LS_FIXED_COLUMNS + columns.count; i++) free(header[i]);
  free(header);
  free(align);
  for (size_t i = 0; i < columns.count; i++) free(columns.names[i]);
  free(columns.names);
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  buffer_free(&path);
  ls_options_free(&options);
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
  int parsed = cli_parse_id_command(global, "show", argc, argv, &id, &json);
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
  const char *dataset = format_json_string(experiment, "dataset");
  const char *checksum = format_json_string(experiment, "dataset_checksum");
  if (dataset != NULL) {
    snprintf(line, sizeof line, "%s%s%s%s", dataset, checksum != NULL ? " (SHA-256 " : "",
             checksum != NULL ? checksum : "", checksum != NULL ? ")" : "");
    show_field("dataset", line);
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
  int json = 0;
  int parsed = cli_parse_id_command(global, "cancel", argc, argv, &id, &json);
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
  if (json)
    client_print_raw(&response);
  else if (json_is_true(json_object_get(answer, "cancel_requested")) || response.status == 202)
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
  int parsed = cli_parse_id_command(global, "report", argc, argv, &id, &json);
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

