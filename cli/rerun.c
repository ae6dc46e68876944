/* rerun.c — `mapsage rerun ID [--set PATH=VALUE]...`: the stored config of an experiment
 * (GET /api/experiments/{id}, every default filled in) sent again as a new experiment, after
 * the same --set edits `submit` makes (submit.c). The daemon validates it as any submission,
 * so a path the config has no place for is refused by name there; a path that cannot be
 * applied at all (into a number, past an array's end) is refused here first.
 *
 * The stored config has its defaults filled in, and a stage's lr defaults to optimizer.lr
 * (docs/config.md): `--set optimizer.lr=0.01` alone would change nothing the run uses. So a
 * stage whose lr equals the old optimizer.lr follows the new one; a stage given its own lr
 * keeps it (one that happened to equal optimizer.lr was equal, and stays so). */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The stages whose lr was optimizer.lr before the --set edits take its new value. */
static void rerun_follow_lr(json_t *config, double old_lr) {
  const json_t *lr = json_object_get(json_object_get(config, "optimizer"), "lr");
  if (!json_is_number(lr) || json_number_value(lr) == old_lr) return;
  size_t i;
  json_t *stage;
  json_array_foreach(json_object_get(config, "stages"), i, stage) {
    const json_t *stage_lr = json_object_get(stage, "lr");
    if (json_is_number(stage_lr) && json_number_value(stage_lr) == old_lr)
      json_object_set_new(stage, "lr", json_real(json_number_value(lr)));
  }
}

int command_rerun(const cli_global_t *global, int argc, char **argv) {
  const char **assignments = calloc((size_t)argc, sizeof *assignments);
  const char *id_text = NULL;
  int n_assignments = 0, json = global->json;
  json_t *experiment = NULL, *answer = NULL;
  char *body = NULL;
  client_t client = {0};
  client_response_t response = {0};
  int exit_code = CLI_EXIT_FAILED;
  if (assignments == NULL) return cli_out_of_memory();

  const cli_flag_t flags[] = {{CLI_OPTION_JSON, &json}, {0, NULL}};
  exit_code = submit_parse_arguments("rerun", "experiment", "optimizer.lr=0.01", argc, argv, flags, &id_text,
                                     assignments, &n_assignments);
  if (exit_code != CLI_PROCEED) goto done;
  long long id;
  if (cli_parse_id(id_text, &id) != 0) {
    exit_code = cli_usage_error("rerun", "an ID is a positive number, not %s", id_text);
    goto done;
  }

  char path[64];
  snprintf(path, sizeof path, "/api/experiments/%lld", id);
  exit_code = client_open(&client, global);
  if (exit_code == CLI_EXIT_OK) exit_code = client_get_json(&client, path, &experiment);
  if (exit_code != CLI_EXIT_OK) goto done;
  json_t *config = json_object_get(experiment, "config");
  if (!json_is_object(config)) {
    fprintf(stderr, "mapsage: experiment %lld has no stored config to run again\n", id);
    exit_code = CLI_EXIT_FAILED;
    goto done;
  }
  const json_t *optimizer = json_object_get(config, "optimizer");
  double old_lr = json_number_value(json_object_get(optimizer, "lr"));
  for (int i = 0; i < n_assignments; i++) {
    char error[512];
    int result = submit_set(config, assignments[i], error, sizeof error);
    if (result != 0) {
      fprintf(stderr, "mapsage: %s (in experiment %lld's config)\n", error, id);
      exit_code = result == -ENOMEM ? CLI_EXIT_FAILED : CLI_EXIT_USAGE;
      goto done;
    }
  }
  rerun_follow_lr(config, old_lr);
  if ((body = json_dumps(config, JSON_COMPACT)) == NULL) {
    exit_code = cli_out_of_memory();
    goto done;
  }
  exit_code = client_request(&client, "POST", "/api/experiments", body, strlen(body), &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_parse(&response, "POST /api/experiments", &answer);
  if (exit_code != CLI_EXIT_OK) goto done;
  long long new_id;
  if (format_json_integer(answer, "id", &new_id) != 0) {
    fprintf(stderr, "mapsage: the server accepted the config but did not say its id\n");
    exit_code = CLI_EXIT_FAILED;
    goto done;
  }
  const char *status = format_json_string(answer, "status");
  if (json) client_print_raw(&response);
  else printf("%lld\n", new_id);
  fprintf(stderr, "submitted experiment %lld (%s): rerun of %lld\n", new_id, status != NULL ? status : "status unknown",
          id);
done:
  free(assignments);
  free(body);
  json_decref(experiment);
  json_decref(answer);
  client_response_free(&response);
  client_close(&client);
  return exit_code;
}
