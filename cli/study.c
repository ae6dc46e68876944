/* study.c — `mapsage study …`: the client's side of studies (docs/api.md, "Studies"; the
 * daemon's daemon/api_study.c). A study is one submission that the daemon expands into many
 * matched runs and follows to its statistics; these commands submit one (or dry-run it),
 * list them, show one's arms and comparisons as tables, and cancel one (following one live
 * is study_watch.c). They share the plumbing of the experiment commands: client.c for
 * HTTP and the server's errors, format.c for times and tables, submit_read_document() for
 * the file and --set, and the same exit codes. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

/* Well above the daemon's 1 MiB body limit, so the daemon, not the client, words the 413. */
#define STUDY_NAME_COLUMNS 40
#define STUDY_CELL_COLUMNS 48

/* Parses `study COMMAND ID`, plus --json when `json` is not NULL and --all when `all` is
 * not NULL. Returns CLI_PROCEED with *id set, or the exit code to return at once. */
int study_parse_id_command(const cli_global_t *global, const char *command, int argc, char **argv, long long *id,
                           int *json, int *all) {
  if (json != NULL && global->json) *json = 1;
  const cli_flag_t flags[] = {{CLI_OPTION_JSON, json}, {CLI_OPTION_ALL, all}, {0, NULL}};
  return cli_parse_id_arguments(command, "study", argc, argv, id, flags);
}

/* ---------------------------------------------------------------------------------------
 * Formatting a study's values */

/* A cell as "temperature.start=4 optimizer.lr=0.01" (strings without their quotes); "-"
 * for the empty cell of a study without grid or random search. */
static int study_append_cell(buffer_t *buffer, const json_t *cell) {
  if (!json_is_object(cell) || json_object_size(cell) == 0) return buffer_append_text(buffer, "-");
  const char *path;
  const json_t *value;
  int first = 1, result = 0;
  json_object_foreach((json_t *)cell, path, value) {
    if (result == 0 && !first) result = buffer_append_text(buffer, " ");
    first = 0;
    if (result == 0) result = buffer_printf(buffer, "%s=", path);
    if (result != 0) break;
    if (json_is_string(value)) {
      result = buffer_append_text(buffer, json_string_value(value));
    } else {
      char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(6));
      result = text != NULL ? buffer_append_text(buffer, text) : -ENOMEM;
      free(text);
    }
  }
  return result;
}

/* The cell cut to a column's width, into `out`. */
static int study_cell_text(const json_t *cell, buffer_t *out) {
  buffer_t whole = {0};
  buffer_clear(out);
  int result = buffer_append_text(out, "");
  if (result == 0) result = study_append_cell(&whole, cell);
  if (result == 0) result = format_append_cut(out, buffer_text(&whole), STUDY_CELL_COLUMNS);
  buffer_free(&whole);
  return result;
}

/* Accuracies are fractions; people read them in percent (and their differences in
 * percentage points). Other outcomes keep their own units. */
static int study_outcome_is_accuracy(const char *outcome) {
  return outcome != NULL && strstr(outcome, "accuracy") != NULL;
}

/* One outcome of an arm ({"n", "mean", "sd", "ci": [lo, hi]}) as "82.03 ± 1.89": the mean,
 * and the half-width of its 95% interval when there is one (n ≥ 2); "-" without a mean. */
static void study_format_summary(const json_t *summary, int percent, char *out, size_t size) {
  double mean, low, high;
  const json_t *ci = json_object_get(summary, "ci");
  double scale = percent ? 100 : 1;
  if (format_json_number(summary, "mean", &mean) != 0) {
    snprintf(out, size, "-");
  } else if (json_is_number(json_array_get(ci, 0)) && json_is_number(json_array_get(ci, 1))) {
    low = json_number_value(json_array_get(ci, 0));
    high = json_number_value(json_array_get(ci, 1));
    if (percent)
      snprintf(out, size, "%.2f ± %.2f", mean * scale, (high - low) / 2 * scale);
    else
      snprintf(out, size, "%.4g ± %.3g", mean, (high - low) / 2);
  } else if (percent) {
    snprintf(out, size, "%.2f", mean * scale);
  } else {
    snprintf(out, size, "%.4g", mean);
  }
}

/* A comparison's difference with its interval: "+1.25 [-0.50, +3.00]". */
static void study_format_difference(const json_t *comparison, int percent, char *out, size_t size) {
  double diff;
  const json_t *ci = json_object_get(comparison, "ci");
  double scale = percent ? 100 : 1;
  if (format_json_number(comparison, "mean_diff", &diff) != 0) {
    snprintf(out, size, "-");
    return;
  }
  int used = percent ? snprintf(out, size, "%+.2f", diff * scale) : snprintf(out, size, "%+.4g", diff);
  if (used < 0 || (size_t)used >= size) return;
  if (json_is_number(json_array_get(ci, 0)) && json_is_number(json_array_get(ci, 1))) {
    double low = json_number_value(json_array_get(ci, 0)) * scale;
    double high = json_number_value(json_array_get(ci, 1)) * scale;
    if (percent)
      snprintf(out + used, size - (size_t)used, " [%+.2f, %+.2f]", low, high);
    else
      snprintf(out + used, size - (size_t)used, " [%+.4g, %+.4g]", low, high);
  }
}

static void study_format_p(const json_t *value, char *out, size_t size) {
  if (!json_is_number(value))
    snprintf(out, size, "-");
  else if (json_number_value(value) < 0.001)
    snprintf(out, size, "<0.001");
  else
    snprintf(out, size, "%.3f", json_number_value(value));
}

static void study_format_percent(const json_t *object, const char *key, char *out, size_t size) {
  double value;
  if (format_json_number(object, key, &value) == 0)
    snprintf(out, size, "%.2f%%", value * 100);
  else
    snprintf(out, size, "-");
}

/* A study's distinct runs: GET /api/studies/{id} lists a run once per role it plays (a
 * baseline shared by two arms twice), and its list entry carries the count as "runs". */
size_t study_count_runs(const json_t *runs) {
  if (json_is_integer(runs)) return (size_t)json_integer_value(runs);
  size_t count = 0, i, j;
  const json_t *run, *earlier;
  json_array_foreach(runs, i, run) {
    long long id, other;
    int seen = 0;
    if (format_json_integer(run, "id", &id) != 0) continue;
    for (j = 0; j < i && !seen; j++) {
      earlier = json_array_get(runs, j);
      seen = format_json_integer(earlier, "id", &other) == 0 && other == id;
    }
    if (!seen) count++;
  }
  return count;
}

/* "7 succeeded, 2 running, 5 queued" from {"status": n}, in the order a study's runs go
 * through them. */
int study_append_counts(buffer_t *buffer, const json_t *counts) {
  static const char *const order[] = {"succeeded", "failed", "cancelled", "running", "interrupted", "queued"};
  int result = 0, first = 1;
  for (size_t i = 0; i < ARRAY_SIZE(order) && result == 0; i++) {
    long long n;
    if (format_json_integer(counts, order[i], &n) != 0 || n == 0) continue;
    result = buffer_printf(buffer, "%s%lld %s", first ? "" : ", ", n, order[i]);
    first = 0;
  }
  /* A status this client does not know yet still shows. */
  const char *status;
  const json_t *value;
  json_object_foreach((json_t *)counts, status, value) {
    int known = 0;
    for (size_t i = 0; i < ARRAY_SIZE(order) && !known; i++) known = strcmp(order[i], status) == 0;
    if (known || result != 0 || !json_is_integer(value)) continue;
    result = buffer_printf(buffer, "%s%lld %s", first ? "" : ", ", (long long)json_integer_value(value), status);
    first = 0;
  }
  return result;
}

/* ---------------------------------------------------------------------------------------
 * study (the group itself) */

int command_study(const cli_global_t *global, int argc, char **argv) {
  (void)global;
  if (argc < 2) return cli_usage_error("study", "which study command? submit, ls, show, watch or cancel");
  if (argv[1][0] == '-') {
    options_t parser;
    cli_options_init(&parser, "study", argc, argv);
    return cli_options_default(&parser, "study", options_next(&parser));
  }
  return cli_usage_error("study", "'%s' is not a study command: submit, ls, show, watch or cancel", argv[1]);
}

/* ---------------------------------------------------------------------------------------
 * study submit */

/* The dry run's runs as a table, then their count and cost. */
static int study_print_dry_run(const json_t *answer) {
  const json_t *runs = json_object_get(answer, "runs");
  if (!json_is_array(runs)) {
    fprintf(stderr, "mapsage: the server's dry run has no \"runs\" array\n");
    return CLI_EXIT_FAILED;
  }
  static const table_align_t align[] = {TABLE_RIGHT, TABLE_LEFT, TABLE_LEFT, TABLE_LEFT, TABLE_RIGHT, TABLE_RIGHT};
  static const char *const header[] = {"INDEX", "NAME", "ROLE", "ARM", "SEED", "STEPS"};
  table_t table;
  buffer_t name = {0}, roles = {0}, arms = {0};
  int exit_code = CLI_EXIT_OK;
  table_init(&table, ARRAY_SIZE(header), align);
  if (table_add_row(&table, header) != 0) goto out_of_memory;
  size_t i;
  const json_t *run;
  json_array_foreach(runs, i, run) {
    char index[32], seed[32], steps[32];
    long long number;
    if (format_json_integer(run, "index", &number) == 0) snprintf(index, sizeof index, "%lld", number);
    else snprintf(index, sizeof index, "%zu", i);
    if (format_json_integer(run, "seed", &number) == 0) snprintf(seed, sizeof seed, "%lld", number);
    else snprintf(seed, sizeof seed, "-");
    if (format_json_integer(run, "steps", &number) == 0) snprintf(steps, sizeof steps, "%lld", number);
    else snprintf(steps, sizeof steps, "-");
    /* A baseline shared by several arms plays a role for each: list them all. */
    buffer_clear(&roles);
    buffer_clear(&arms);
    buffer_clear(&name);
    const char *title = format_json_string(run, "name");
    int result = buffer_append_text(&roles, "");
    if (result == 0) result = buffer_append_text(&arms, "");
    if (result == 0) result = buffer_append_text(&name, "");
    if (result == 0) result = format_append_cut(&name, title != NULL && title[0] != '\0' ? title : "-", 60);
    size_t r;
    const json_t *link;
    json_array_foreach(json_object_get(run, "roles"), r, link) {
      const char *role = format_json_string(link, "role"), *arm = format_json_string(link, "arm");
      if (result == 0 && role != NULL && strstr(roles.data, role) == NULL)
        result = buffer_printf(&roles, "%s%s", roles.length ? "," : "", role);
      if (result == 0 && arm != NULL) result = buffer_printf(&arms, "%s%s", arms.length ? "," : "", arm);
    }
    if (result != 0) goto out_of_memory;
    const char *cells[] = {index, name.data, roles.length ? roles.data : "-", arms.length ? arms.data : "-",
                           seed, steps};
    if (table_add_row(&table, cells) != 0) goto out_of_memory;
  }
  table_print(&table, stdout);
  long long count = (long long)json_array_size(runs), steps = 0, seeds = 0;
  format_json_integer(answer, "count", &count);
  format_json_integer(answer, "seeds", &seeds);
  printf("%lld run%s", count, count == 1 ? "" : "s");
  if (format_json_integer(answer, "steps", &steps) == 0) printf(", %lld optimizer steps in all", steps);
  size_t n_arms = json_array_size(json_object_get(answer, "arms"));
  if (n_arms > 0 && seeds > 0)
    printf(" (%zu arm%s, %lld seed%s)", n_arms, n_arms == 1 ? "" : "s", seeds, seeds == 1 ? "" : "s");
  printf("\n");
  goto done;
out_of_memory:
  exit_code = cli_out_of_memory();
done:
  table_free(&table);
  buffer_free(&name);
  buffer_free(&roles);
  buffer_free(&arms);
  return exit_code;
}

int command_study_submit(const cli_global_t *global, int argc, char **argv) {
  const char *file = NULL;
  const char **assignments = calloc((size_t)argc, sizeof *assignments);
  int n_assignments = 0, dry_run = 0, json = global->json;
  char *body = NULL;
  json_t *answer = NULL;
  client_t client = {0};
  client_response_t response = {0};
  int exit_code = CLI_EXIT_FAILED;
  if (assignments == NULL) return cli_out_of_memory();

  const cli_flag_t flags[] = {{CLI_OPTION_DRY_RUN, &dry_run}, {CLI_OPTION_JSON, &json}, {0, NULL}};
  int parsed = submit_parse_arguments("study submit", "study", "seeds=5", argc, argv, flags, &file, assignments,
                                      &n_assignments);
  if (parsed != CLI_PROCEED) {
    exit_code = parsed;
    goto done;
  }

  size_t length = 0;
  exit_code = submit_read_document(file, "study", assignments, n_assignments, &body, &length);
  if (exit_code != CLI_EXIT_OK) goto done;

  const char *path = dry_run ? "/api/studies?dry_run=1" : "/api/studies";
  exit_code = client_open(&client, global);
  if (exit_code != CLI_EXIT_OK) goto done;
  exit_code = client_request(&client, "POST", path, body, length, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code != CLI_EXIT_OK) goto done;
  if (json) {
    client_print_raw(&response);
    goto done;
  }
  exit_code = client_parse(&response, "POST /api/studies", &answer);
  if (exit_code != CLI_EXIT_OK) goto done;
  if (dry_run) {
    exit_code = study_print_dry_run(answer);
    goto done;
  }
  long long id, runs;
  if (format_json_integer(answer, "id", &id) != 0) {
    fprintf(stderr, "mapsage: the server accepted the study but did not say its id\n");
    exit_code = CLI_EXIT_FAILED;
    goto done;
  }
  const char *status = format_json_string(answer, "status");
  printf("%lld\n", id);
  if (format_json_integer(answer, "runs", &runs) == 0)
    fprintf(stderr, "submitted study %lld (%s): %lld run%s\n", id, status != NULL ? status : "status unknown", runs,
            runs == 1 ? "" : "s");
  else
    fprintf(stderr, "submitted study %lld (%s)\n", id, status != NULL ? status : "status unknown");

done:
  free(assignments);
  free(body);
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}

/* ---------------------------------------------------------------------------------------
 * study ls */

/* Runs that have ended, from a study's counts. */
long long study_ended_runs(const json_t *counts) {
  static const char *const ended[] = {"succeeded", "failed", "cancelled"};
  long long total = 0;
  for (size_t i = 0; i < ARRAY_SIZE(ended); i++) {
    long long n;
    if (format_json_integer(counts, ended[i], &n) == 0) total += n;
  }
  return total;
}

/* One study as the row ID NAME STATUS RUNS AGE. */
static int study_ls_add_row(table_t *table, const json_t *study, double now, const void *context) {
  (void)context;
  char id[32], runs[64], age[32];
  buffer_t name = {0};
  long long number;
  if (format_json_integer(study, "id", &number) == 0)
    snprintf(id, sizeof id, "%lld", number);
  else
    snprintf(id, sizeof id, "?");
  const char *title = format_json_string(study, "name");
  if (buffer_append_text(&name, "") != 0 ||
      format_append_cut(&name, title != NULL && title[0] != '\0' ? title : "-", STUDY_NAME_COLUMNS) != 0) {
    buffer_free(&name);
    return -ENOMEM;
  }
  const char *status = format_json_string(study, "status");
  snprintf(runs, sizeof runs, "%lld/%zu", study_ended_runs(json_object_get(study, "counts")),
           study_count_runs(json_object_get(study, "runs")));
  double created;
  if (format_parse_time(format_json_string(study, "created_at"), &created) == 0)
    format_age(now - created, age, sizeof age);
  else
    snprintf(age, sizeof age, "-");
  const char *cells[] = {id, name.data, status != NULL ? status : "?", runs, age};
  int result = table_add_row(table, cells);
  buffer_free(&name);
  return result;
}

int command_study_ls(const cli_global_t *global, int argc, char **argv) {
  const char *limit = NULL;
  int json = global->json;
  options_t parser;
  cli_options_init(&parser, "study ls", argc, argv);
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    long long count;
    if (key == CLI_OPTION_LIMIT) {
      if (cli_parse_id(parser.value, &count) != 0) return cli_usage_error("study ls", "--limit needs a positive number");
      limit = parser.value;
    } else if (key == CLI_OPTION_JSON) {
      json = 1;
    } else {
      return cli_options_default(&parser, "study ls", key);
    }
  }

  buffer_t path = {0};
  client_t client = {0};
  client_response_t response = {0};
  json_t *answer = NULL;
  int exit_code = CLI_EXIT_FAILED;
  /* The limit goes to the server as it is: it knows its range and words the error. */
  int result = buffer_append_text(&path, "/api/studies");
  if (result == 0 && limit != NULL) result = buffer_append_text(&path, "?limit=");
  if (result == 0 && limit != NULL) result = buffer_append_query_value(&path, limit);
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
  exit_code = client_parse(&response, "GET /api/studies", &answer);
  if (exit_code != CLI_EXIT_OK) goto done;
  static const table_align_t align[] = {TABLE_RIGHT, TABLE_LEFT, TABLE_LEFT, TABLE_RIGHT, TABLE_RIGHT};
  static const char *const header[] = {"ID", "NAME", "STATUS", "RUNS", "AGE"};
  exit_code = print_list_table(answer, "studies", header, align, ARRAY_SIZE(header), study_ls_add_row, NULL);
done:
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  buffer_free(&path);
  return exit_code;
}

/* ---------------------------------------------------------------------------------------
 * study show */

/* A line "  label    text" of the header block. */
static void show_field(const char *label, const char *text) {
  printf("  %-11s %s\n", label, text);
}

/* "  started     2026-12-03 10:15:02  (5m ago; waited 0.02s)" when the study has the time. */
static void show_time(const json_t *study, const char *label, const char *key, double now, const char *since_key,
                      const char *since_word) {
  double when, since;
  char local[64], age[32], gap[32];
  const char *text = format_json_string(study, key);
  if (text == NULL) return;
  if (format_parse_time(text, &when) != 0) {
    show_field(label, text);
    return;
  }
  format_local_time(when, local, sizeof local);
  format_age(now - when, age, sizeof age);
  if (since_key != NULL && format_parse_time(format_json_string(study, since_key), &since) == 0) {
    format_duration(when - since, gap, sizeof gap);
    printf("  %-11s %s  (%s ago; %s %s)\n", label, local, age, since_word, gap);
  } else {
    printf("  %-11s %s  (%s ago)\n", label, local, age);
  }
}

/* The arms: ARM ROLE CELL N TEST-ACC (%) BEST-VAL-ACC (%). */
static int show_arms(const json_t *arms) {
  static const table_align_t align[] = {TABLE_LEFT, TABLE_LEFT, TABLE_LEFT, TABLE_RIGHT, TABLE_RIGHT, TABLE_RIGHT};
  static const char *const header[] = {"ARM", "ROLE", "CELL", "N", "TEST-ACC %", "BEST-VAL-ACC %"};
  table_t table;
  buffer_t cell = {0};
  int result = 0;
  table_init(&table, ARRAY_SIZE(header), align);
  result = table_add_row(&table, header);
  size_t i;
  const json_t *arm;
  json_array_foreach(arms, i, arm) {
    if (result != 0) break;
    const json_t *outcomes = json_object_get(arm, "outcomes");
    const json_t *test = json_object_get(outcomes, "test_accuracy");
    const json_t *val = json_object_get(outcomes, "best_val_accuracy");
    char n[32], test_text[64], val_text[64];
    long long count;
    if (format_json_integer(test, "n", &count) == 0) snprintf(n, sizeof n, "%lld", count);
    else snprintf(n, sizeof n, "-");
    study_format_summary(test, 1, test_text, sizeof test_text);
    study_format_summary(val, 1, val_text, sizeof val_text);
    result = study_cell_text(json_object_get(arm, "cell"), &cell);
    if (result != 0) break;
    const char *name = format_json_string(arm, "name"), *role = format_json_string(arm, "role");
    const char *cells[] = {name != NULL ? name : "?", role != NULL ? role : "?", cell.data, n, test_text, val_text};
    result = table_add_row(&table, cells);
  }
  if (result == 0) {
    printf("\narms (mean ± half-width of the 95%% interval over the runs that count)\n");
    table_print(&table, stdout);
  }
  table_free(&table);
  buffer_free(&cell);
  return result;
}

/* The comparisons: ARM vs BASELINE, CELL, OUTCOME, N, Δ MEAN [95% CI], P, P-HOLM, NOTE.
 * Only the accuracies unless `all`. */
static int show_comparisons(const json_t *comparisons, int all) {
  static const table_align_t align[] = {TABLE_LEFT, TABLE_LEFT, TABLE_LEFT, TABLE_RIGHT,
                                        TABLE_RIGHT, TABLE_RIGHT, TABLE_RIGHT, TABLE_LEFT};
  static const char *const header[] = {"ARM vs BASELINE", "CELL", "OUTCOME", "N",
                                       "Δ MEAN [95% CI]", "P", "P-HOLM", "NOTE"};
  table_t table;
  buffer_t cell = {0}, versus = {0};
  int result = 0, shown = 0, unmatched = 0;
  size_t i;
  const json_t *comparison;
  /* The NOTE column only when it has something to say. */
  json_array_foreach(comparisons, i, comparison) unmatched |= json_is_false(json_object_get(comparison, "matched"));
  table_init(&table, ARRAY_SIZE(header) - (unmatched ? 0 : 1), align);
  result = table_add_row(&table, header);
  json_array_foreach(comparisons, i, comparison) {
    if (result != 0) break;
    const char *outcome = format_json_string(comparison, "outcome");
    int accuracy = outcome != NULL &&
                   (strcmp(outcome, "test_accuracy") == 0 || strcmp(outcome, "best_val_accuracy") == 0);
    if (!all && !accuracy) continue;
    int percent = study_outcome_is_accuracy(outcome);
    char n[32], difference[96], p[32], p_holm[32];
    long long count;
    if (format_json_integer(comparison, "n", &count) == 0) snprintf(n, sizeof n, "%lld", count);
    else snprintf(n, sizeof n, "-");
    study_format_difference(comparison, percent, difference, sizeof difference);
    study_format_p(json_object_get(comparison, "p"), p, sizeof p);
    study_format_p(json_object_get(comparison, "p_holm"), p_holm, sizeof p_holm);
    const char *arm = format_json_string(comparison, "arm"), *baseline = format_json_string(comparison, "baseline");
    buffer_clear(&versus);
    result = buffer_printf(&versus, "%s vs %s", arm != NULL ? arm : "?", baseline != NULL ? baseline : "?");
    if (result == 0) result = study_cell_text(json_object_get(comparison, "cell"), &cell);
    if (result != 0) break;
    /* A pair whose sides trained different numbers of steps: shown, never tested. */
    const json_t *matched = json_object_get(comparison, "matched");
    const char *note = json_is_false(matched) ? "unmatched" : "";
    if (percent && strcmp(difference, "-") != 0 && strlen(difference) + 4 < sizeof difference)
      strcat(difference, " pp");
    const char *cells[] = {versus.data, cell.data, outcome != NULL ? outcome : "?", n, difference, p, p_holm, note};
    result = table_add_row(&table, cells);
    shown++;
  }
  if (result == 0 && shown > 0) {
    printf("\ncomparisons (arm minus its matched baseline, paired over seeds; accuracies in percentage points)\n");
    table_print(&table, stdout);
  }
  table_free(&table);
  buffer_free(&cell);
  buffer_free(&versus);
  return result;
}

/* For each arm run over several cells: its best cell (chosen on validation), and each
 * axis's values with their mean outcomes. */
static int show_grid(const json_t *grid) {
  static const table_align_t align[] = {TABLE_LEFT, TABLE_LEFT, TABLE_RIGHT, TABLE_RIGHT, TABLE_RIGHT};
  static const char *const header[] = {"PATH", "VALUE", "N", "BEST-VAL-ACC", "TEST-ACC"};
  buffer_t cell = {0};
  int result = 0;
  size_t i;
  const json_t *entry;
  json_array_foreach(grid, i, entry) {
    const char *arm = format_json_string(entry, "arm"), *selected_by = format_json_string(entry, "selected_by");
    const json_t *best = json_object_get(entry, "best");
    printf("\ngrid of arm %s\n", arm != NULL ? arm : "?");
    if (json_is_object(best)) {
      char val[32], test[32];
      long long n = 0;
      format_json_integer(best, "n", &n);
      study_format_percent(best, "best_val_accuracy", val, sizeof val);
      study_format_percent(best, "test_accuracy", test, sizeof test);
      buffer_clear(&cell);
      result = buffer_append_text(&cell, "");
      if (result == 0) result = study_append_cell(&cell, json_object_get(best, "cell"));
      if (result != 0) break;
      printf("  best cell (by %s): %s  best val %s, test %s (n %lld)\n", selected_by != NULL ? selected_by : "?",
             cell.data, val, test, n);
    } else {
      printf("  no best cell yet: no run of it has counted\n");
    }
    table_t table;
    table_init(&table, ARRAY_SIZE(header), align);
    result = table_add_row(&table, header);
    size_t a, v;
    const json_t *axis, *value;
    json_array_foreach(json_object_get(entry, "axes"), a, axis) {
      const char *path = format_json_string(axis, "path");
      json_array_foreach(json_object_get(axis, "values"), v, value) {
        if (result != 0) break;
        char n[32], val[32], test[32];
        long long count;
        if (format_json_integer(value, "n", &count) == 0) snprintf(n, sizeof n, "%lld", count);
        else snprintf(n, sizeof n, "-");
        study_format_percent(value, "best_val_accuracy", val, sizeof val);
        study_format_percent(value, "test_accuracy", test, sizeof test);
        const json_t *raw = json_object_get(value, "value");
        char *text = json_is_string(raw) ? strdup(json_string_value(raw))
                                         : json_dumps(raw, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(6));
        if (text == NULL) {
          result = -ENOMEM;
          break;
        }
        const char *cells[] = {path != NULL ? path : "?", text, n, val, test};
        result = table_add_row(&table, cells);
        free(text);
      }
    }
    if (result == 0) table_print(&table, stdout);
    table_free(&table);
    if (result != 0) break;
  }
  buffer_free(&cell);
  return result;
}

/* The runs stopped early by the median rule, one a line. */
static void show_stopped(const json_t *runs) {
  int any = 0;
  size_t i;
  const json_t *run;
  json_array_foreach(runs, i, run) {
    long long id, epoch, seed;
    if (format_json_integer(run, "stopped_epoch", &epoch) != 0 || format_json_integer(run, "id", &id) != 0) continue;
    if (!any) printf("\nstopped early (left out of the statistics)\n");
    any = 1;
    const char *arm = format_json_string(run, "arm");
    if (format_json_integer(run, "seed", &seed) == 0)
      printf("  run %lld (arm %s, seed %lld) after epoch %lld\n", id, arm != NULL ? arm : "?", seed, epoch);
    else
      printf("  run %lld (arm %s) after epoch %lld\n", id, arm != NULL ? arm : "?", epoch);
  }
}

int command_study_show(const cli_global_t *global, int argc, char **argv) {
  long long id;
  int json = 0, all = 0;
  int parsed = study_parse_id_command(global, "study show", argc, argv, &id, &json, &all);
  if (parsed != CLI_PROCEED) return parsed;

  char path[64];
  snprintf(path, sizeof path, "/api/studies/%lld", id);
  client_t client = {0};
  client_response_t response = {0};
  json_t *study = NULL;
  buffer_t line = {0};
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "GET", path, NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code != CLI_EXIT_OK) goto done;
  if (json) {
    client_print_raw(&response);
    goto done;
  }
  exit_code = client_parse(&response, path, &study);
  if (exit_code != CLI_EXIT_OK) goto done;

  const char *name = format_json_string(study, "name");
  const char *status = format_json_string(study, "status");
  const char *error = format_json_string(study, "error");
  const char *description = format_json_string(study, "description");
  const json_t *runs = json_object_get(study, "runs");
  size_t total = study_count_runs(runs);
  printf("study %lld%s%s\n", id, name != NULL && name[0] != '\0' ? ": " : "", name != NULL ? name : "");
  if (description != NULL && description[0] != '\0') show_field("description", description);
  show_field("status", status != NULL ? status : "?");
  int result = buffer_printf(&line, "%zu", total);
  if (result == 0 && json_object_size(json_object_get(study, "counts")) > 0) result = buffer_append_text(&line, ": ");
  if (result == 0) result = study_append_counts(&line, json_object_get(study, "counts"));
  if (result != 0) goto out_of_memory;
  show_field("runs", line.data);
  if (error != NULL) show_field("error", error);
  double now = util_now();
  show_time(study, "created", "created_at", now, NULL, NULL);
  show_time(study, "started", "started_at", now, "created_at", "waited");
  show_time(study, "finished", "finished_at", now, "started_at", "ran");

  if (show_arms(json_object_get(study, "arms")) != 0) goto out_of_memory;
  if (show_comparisons(json_object_get(study, "comparisons"), all) != 0) goto out_of_memory;
  if (show_grid(json_object_get(study, "grid")) != 0) goto out_of_memory;
  show_stopped(runs);
  goto done;
out_of_memory:
  exit_code = cli_out_of_memory();
done:
  buffer_free(&line);
  json_decref(study);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}

/* ---------------------------------------------------------------------------------------
 * study cancel */

int command_study_cancel(const cli_global_t *global, int argc, char **argv) {
  long long id;
  int json = 0;
  int parsed = study_parse_id_command(global, "study cancel", argc, argv, &id, &json, NULL);
  if (parsed != CLI_PROCEED) return parsed;

  char path[80];
  snprintf(path, sizeof path, "/api/studies/%lld/cancel", id);
  client_t client = {0};
  client_response_t response = {0};
  json_t *answer = NULL;
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "POST", path, NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_parse(&response, path, &answer);
  if (exit_code != CLI_EXIT_OK) goto done;
  const char *status = format_json_string(answer, "status");
  long long cancelled;
  if (json)
    client_print_raw(&response);
  else if (format_json_integer(answer, "cancelled_runs", &cancelled) == 0)
    printf("study %lld: %s; %lld run%s cancelled or asked to stop\n", id, status != NULL ? status : "status unknown",
           cancelled, cancelled == 1 ? "" : "s");
  else
    printf("study %lld: %s\n", id, status != NULL ? status : "status unknown");
done:
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}

