/* organise.c — `mapsage tag`, `note`, `rename`, `archive` and `rm`: keeping runs in order
 * from the shell, through PATCH and DELETE /api/experiments/{id} (docs/api.md,
 * "Organising"). Each prints what the experiment is now (or that it is gone) and returns a
 * CLI_EXIT_* code; the server's refusals (a bad tag, a run still running, a teacher of
 * another) are printed with its reason, exit 1. Options come from each command's table in
 * mapsage.c, through the shared parser. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The longest note read from standard input (the server's limit is 20,000 bytes: a longer
 * one is sent whole and refused with its reason). */
#define NOTE_INPUT_MAX (1 << 20)

/* Sends `changes` to the experiment and prints the result of `what`. Steals `changes`. */
static int patch(const cli_global_t *global, long long id, json_t *changes, int json, const char *what) {
  char path[80];
  snprintf(path, sizeof path, "/api/experiments/%lld", id);
  char *body = changes ? json_dumps(changes, JSON_COMPACT) : NULL;
  json_decref(changes);
  if (body == NULL) return cli_out_of_memory();
  client_t client = {0};
  client_response_t response = {0};
  json_t *answer = NULL;
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "PATCH", path, body, strlen(body), &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK && json) client_print_raw(&response);
  else if (exit_code == CLI_EXIT_OK) exit_code = client_parse(&response, path, &answer);
  if (exit_code == CLI_EXIT_OK && answer) {
    printf("experiment %lld", id);
    if (strcmp(what, "name") == 0) printf(": renamed %s", format_json_string(answer, "name"));
    if (strcmp(what, "tags") == 0) {
      const json_t *tags = json_object_get(answer, "tags");
      printf(": tags");
      if (json_array_size(tags) == 0) printf(" (none)");
      for (size_t i = 0; i < json_array_size(tags); i++)
        printf("%s%s", i ? ", " : " ", json_string_value(json_array_get(tags, i)));
    }
    if (strcmp(what, "note") == 0) {
      const char *note = format_json_string(answer, "note");
      printf(note && note[0] ? ": note saved (%zu bytes)" : ": note cleared", note ? strlen(note) : 0);
    }
    if (strcmp(what, "archived") == 0)
      printf(json_is_null(json_object_get(answer, "archived_at")) ? ": not archived" : ": archived (%s)",
             format_json_string(answer, "archived_at"));
    printf("\n");
  }
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  free(body);
  return exit_code;
}

/* `COMMAND ID [WORDS…] [flags]` through the command's option table (mapsage.c): the id, the
 * other words in order (freed by the caller), which of --remove, --clear, --undo and --json
 * were given. Returns CLI_PROCEED or the exit code to return at once. */
typedef struct {
  int remove, clear, undo, json;
} organise_flags_t;

static int parse(const cli_global_t *global, const char *command, int argc, char **argv, organise_flags_t *flags,
                 long long *id, const char ***words, int *n_words) {
  const char *id_text = NULL;
  *flags = (organise_flags_t){.json = global->json};
  *n_words = 0;
  *words = calloc((size_t)argc + 1, sizeof **words);
  if (*words == NULL) return cli_out_of_memory();
  options_t parser;
  cli_options_init(&parser, command, argc, argv);
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    if (key == OPTIONS_ARGUMENT && id_text == NULL) id_text = parser.value;
    else if (key == OPTIONS_ARGUMENT) (*words)[(*n_words)++] = parser.value;
    else if (key == CLI_OPTION_REMOVE) flags->remove = 1;
    else if (key == CLI_OPTION_CLEAR) flags->clear = 1;
    else if (key == CLI_OPTION_UNDO) flags->undo = 1;
    else if (key == CLI_OPTION_JSON) flags->json = 1;
    else return cli_options_default(&parser, command, key);
  }
  if (id_text == NULL) return cli_usage_error(command, "which experiment? give its ID");
  if (cli_parse_id(id_text, id) != 0) return cli_usage_error(command, "an ID is a positive number, not %s", id_text);
  return CLI_PROCEED;
}

int command_tag(const cli_global_t *global, int argc, char **argv) {
  organise_flags_t flags;
  long long id;
  const char **words = NULL;
  int n_words = 0;
  int result = parse(global, "tag", argc, argv, &flags, &id, &words, &n_words);
  if (result == CLI_PROCEED && n_words == 0 && !flags.clear)
    result = cli_usage_error("tag", "which tags? give one or more (or --clear)");
  if (result == CLI_PROCEED && flags.clear && (n_words > 0 || flags.remove))
    result = cli_usage_error("tag", "--clear takes no tags");
  if (result == CLI_PROCEED) {
    json_t *tags = json_array();
    for (int i = 0; i < n_words; i++) json_array_append_new(tags, json_string(words[i]));
    json_t *changes = json_object();
    json_object_set_new(changes, flags.clear ? "tags" : flags.remove ? "remove_tags" : "add_tags", tags);
    result = patch(global, id, changes, flags.json, "tags");
  }
  free(words);
  return result;
}

/* The note from standard input: everything, a final newline dropped. */
static char *read_note(void) {
  buffer_t text = {0};
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
    if (text.length + n > NOTE_INPUT_MAX || buffer_append(&text, chunk, n) != 0) break;
  }
  if (buffer_append(&text, "", 1) != 0) {
    buffer_free(&text);
    return NULL;
  }
  char *note = text.data;
  size_t length = strlen(note);
  if (length > 0 && note[length - 1] == '\n') note[length - 1] = '\0';
  return note;
}

int command_note(const cli_global_t *global, int argc, char **argv) {
  organise_flags_t flags;
  long long id;
  const char **words = NULL;
  int n_words = 0;
  int result = parse(global, "note", argc, argv, &flags, &id, &words, &n_words);
  if (result == CLI_PROCEED && n_words != 1)
    result = cli_usage_error("note", "give the note as one argument (quoted), - to read it from standard input, "
                                     "or \"\" to clear it");
  if (result == CLI_PROCEED) {
    char *from_input = strcmp(words[0], "-") == 0 ? read_note() : NULL;
    if (strcmp(words[0], "-") == 0 && from_input == NULL) {
      result = cli_out_of_memory();
    } else {
      json_t *changes = json_object();
      json_object_set_new(changes, "note", json_string(from_input ? from_input : words[0]));
      result = patch(global, id, changes, flags.json, "note");
    }
    free(from_input);
  }
  free(words);
  return result;
}

int command_rename(const cli_global_t *global, int argc, char **argv) {
  organise_flags_t flags;
  long long id;
  const char **words = NULL;
  int n_words = 0;
  int result = parse(global, "rename", argc, argv, &flags, &id, &words, &n_words);
  if (result == CLI_PROCEED && n_words != 1) result = cli_usage_error("rename", "give the new name as one argument");
  if (result == CLI_PROCEED) result = patch(global, id, json_pack("{s:s}", "name", words[0]), flags.json, "name");
  free(words);
  return result;
}

int command_archive(const cli_global_t *global, int argc, char **argv) {
  organise_flags_t flags;
  long long id;
  const char **words = NULL;
  int n_words = 0;
  int result = parse(global, "archive", argc, argv, &flags, &id, &words, &n_words);
  if (result == CLI_PROCEED && n_words > 0) result = cli_usage_error("archive", "one experiment at a time");
  if (result == CLI_PROCEED)
    result = patch(global, id, json_pack("{s:b}", "archived", !flags.undo), flags.json, "archived");
  free(words);
  return result;
}

int command_rm(const cli_global_t *global, int argc, char **argv) {
  long long id;
  int json = 0;
  int parsed = cli_parse_id_command(global, "rm", argc, argv, &id, &json);
  if (parsed != CLI_PROCEED) return parsed;
  char path[80];
  snprintf(path, sizeof path, "/api/experiments/%lld", id);
  client_t client = {0};
  client_response_t response = {0};
  json_t *answer = NULL;
  int exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_request(&client, "DELETE", path, NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK && json) client_print_raw(&response);
  else if (exit_code == CLI_EXIT_OK) exit_code = client_parse(&response, path, &answer);
  if (exit_code == CLI_EXIT_OK && answer) {
    long long files = 0;
    format_json_integer(answer, "files_removed", &files);
    printf("deleted experiment %lld (%lld checkpoint file%s)\n", id, files, files == 1 ? "" : "s");
    const char *warning = format_json_string(answer, "warning");
    if (warning) fprintf(stderr, "mapsage: %s\n", warning);
  }
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}
