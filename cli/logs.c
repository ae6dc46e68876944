/* logs.c — `mapsage logs ID [-f]`: an experiment's log, GET /api/experiments/{id}/log (the
 * worker's stderr and its stray stdout lines, "attempt N | line" each). With -f the log is
 * read again every second and what is new printed, until the experiment has ended and its
 * last lines are out. The log only grows (ordered by attempt, then line), so "new" is the
 * bytes past those already printed; the API has no stream of log lines to follow instead. */
#include "cli.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define LOGS_POLL_MS 1000

static const char *const logs_ended[] = {"succeeded", "failed", "cancelled"};

/* Prints the log's bytes from `from` to the end: as they are, or a JSON object a line. */
static void logs_print(const buffer_t *log, size_t from, int json) {
  const char *text = buffer_text(log) + from;
  if (!json) {
    fwrite(text, 1, log->length - from, stdout);
    fflush(stdout);
    return;
  }
  while (*text != '\0') {
    const char *end = strchr(text, '\n');
    size_t length = end != NULL ? (size_t)(end - text) : strlen(text);
    long long attempt = 0;
    int prefix = 0;
    /* "attempt 2 | the line": db.c writes it so; a line without the prefix goes whole. */
    if (sscanf(text, "attempt %lld | %n", &attempt, &prefix) != 1 || prefix == 0 || (size_t)prefix > length)
      prefix = 0;
    json_t *line = json_pack("{s:I, s:s%}", "attempt", (json_int_t)attempt, "line", text + prefix,
                             length - (size_t)prefix);
    if (line != NULL) json_dumpf(line, stdout, JSON_COMPACT);
    json_decref(line);
    putchar('\n');
    text += length + (end != NULL);
  }
  fflush(stdout);
}

/* Whether the experiment has ended: CLI_EXIT_OK with *ended set, or an exit code. */
static int logs_check_ended(const client_t *client, long long id, int *ended) {
  char path[64];
  json_t *experiment = NULL;
  snprintf(path, sizeof path, "/api/experiments/%lld", id);
  int exit_code = client_get_json(client, path, &experiment);
  if (exit_code != CLI_EXIT_OK) return exit_code;
  const char *status = format_json_string(experiment, "status");
  *ended = 0;
  for (size_t i = 0; status != NULL && i < sizeof logs_ended / sizeof *logs_ended; i++)
    if (strcmp(status, logs_ended[i]) == 0) *ended = 1;
  json_decref(experiment);
  return CLI_EXIT_OK;
}

int command_logs(const cli_global_t *global, int argc, char **argv) {
  long long id;
  int json = global->json, follow = 0;
  const cli_flag_t flags[] = {{CLI_OPTION_JSON, &json}, {CLI_OPTION_FOLLOW, &follow}, {0, NULL}};
  int parsed = cli_parse_id_arguments("logs", "experiment", argc, argv, &id, flags);
  if (parsed != CLI_PROCEED) return parsed;

  char path[80];
  snprintf(path, sizeof path, "/api/experiments/%lld/log", id);
  client_t client = {0};
  client_response_t response = {0};
  struct sigaction previous;
  int handling_sigint = 0;
  size_t printed = 0;
  int exit_code = client_open(&client, global);
  if (exit_code != CLI_EXIT_OK) goto done;
  if (follow) handling_sigint = stream_catch_interrupt(&previous);
  for (;;) {
    /* Whether it had ended is asked before the log is read: the lines of a run that ended
     * in between are in this read, and the loop stops after printing them. */
    int ended = 1;
    if (follow && (exit_code = logs_check_ended(&client, id, &ended)) != CLI_EXIT_OK) break;
    client_response_free(&response);
    exit_code = client_request(&client, "GET", path, NULL, 0, &response);
    if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
    if (exit_code != CLI_EXIT_OK) break;
    /* A log shorter than what was printed has been replaced (the experiment deleted and
     * its log gone): print it whole again rather than nothing. */
    if (response.body.length < printed) printed = 0;
    if (response.body.length > printed) logs_print(&response.body, printed, json);
    printed = response.body.length;
    if (ended) break;
    stream_pause(LOGS_POLL_MS);
    if (stream_interrupted()) {
      exit_code = CLI_EXIT_INTERRUPTED;
      break;
    }
  }
done:
  if (handling_sigint) sigaction(SIGINT, &previous, NULL);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}
