/* api_study.c — the handlers of the study routes (docs/api.md, "Studies"): submit (or dry
 * run), list, show, cancel, stream. The study itself is study_spec.c (what a study means),
 * study.c (storing and following it) and study_statistics.c (what its runs say). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "study.h"
#include "study_curves.h"
#include "util.h"

static api_t *app(const http_request_t *request) { return http_app(request); }

static int respond_no_study(http_request_t *request) {
  return http_respond_error(request, MHD_HTTP_NOT_FOUND, "no study %lld", (long long)http_path_id(request));
}

/* The arm a run plays first, for error paths ("arms.kd-weighted"). */
static const char *arm_of(const study_plan_t *plan, int run) {
  for (int l = 0; l < plan->n_links; l++)
    if (plan->links[l].run == run) return plan->links[l].arm;
  return "?";
}

/* Every run on a registered dataset reads it as registered (dataset_check_config), whatever
 * an arm patched. */
static void check_datasets(api_t *api, study_plan_t *plan, cfg_errors_t *errors) {
  cfg_experiment_t *config = malloc(sizeof *config);
  cfg_errors_t *found = malloc(sizeof *found);
  for (int r = 0; config && found && r < plan->n_runs && errors->count == 0; r++) {
    if (cfg_from_json(plan->runs[r].config, config, found) != 0) continue; /* validated already */
    char prefix[CFG_TITLE_MAX + 16];
    snprintf(prefix, sizeof prefix, "arms.%s.", arm_of(plan, r));
    dataset_check_config(api->datasets, config, prefix, errors);
  }
  free(config);
  free(found);
}

/* What only the daemon can check of a study whose teacher is an existing experiment or a
 * checkpoint file: the same checks as a single experiment's (api_check_teacher), once per
 * distilling arm and cell (the seed changes nothing there). A checkpoint's path is written
 * into every run resolved, as a single experiment's is. */
static void check_teacher(api_t *api, study_plan_t *plan, cfg_errors_t *errors) {
  cfg_experiment_t *config = malloc(sizeof *config);
  cfg_errors_t *found = malloc(sizeof *found);
  if (config == NULL || found == NULL) goto done;
  const int64_t first_seed = plan->n_runs > 0 ? plan->runs[0].seed : 0;
  for (int r = 0; r < plan->n_runs && errors->count == 0; r++) {
    study_run_t *run = &plan->runs[r];
    if (!run->distills || run->teacher_run >= 0 || run->seed != first_seed) continue;
    if (cfg_from_json(run->config, config, found) != 0) continue; /* validated already */
    memset(found, 0, sizeof *found);
    api_check_teacher(api, config, found);
    for (int i = 0; i < found->count && i < CFG_MAX_ERRORS; i++) {
      const char *path = found->items[i].path;
      char at[CFG_TITLE_MAX + 160];
      if (strncmp(path, "teacher", 7) == 0) snprintf(at, sizeof at, "%s", path);
      else snprintf(at, sizeof at, "arms.%s%s%s", arm_of(plan, r), path[0] ? "." : "", path);
      cfg_add_error(errors, at, "%s", found->items[i].message);
    }
    if (found->count == 0 && config->teacher.kind == CFG_TEACHER_CHECKPOINT)
      for (int other = 0; other < plan->n_runs; other++)
        if (plan->runs[other].distills)
          json_object_set_new(json_object_get(plan->runs[other].config, "teacher"), "checkpoint",
                              json_string(config->teacher.checkpoint));
  }
done:
  free(config);
  free(found);
}


/* Every run of the study against --max-worker-memory (api_check_memory), the first error
 * only (the arms of a grid share it): at "arms.<arm>.<path>", or "teacher.<path>" for the
 * study's own teacher run. A trained teacher's config is in the plan; an existing
 * experiment's is looked up. */
static void check_memory(api_t *api, const study_plan_t *plan, cfg_errors_t *errors) {
  cfg_experiment_t *config = malloc(sizeof *config), *teacher = malloc(sizeof *teacher);
  cfg_errors_t *found = malloc(sizeof *found);
  if (config == NULL || teacher == NULL || found == NULL) goto done;
  for (int r = 0; r < plan->n_runs && errors->count == 0; r++) {
    const study_run_t *run = &plan->runs[r];
    if (cfg_from_json(run->config, config, found) != 0) continue; /* validated already */
    const cfg_experiment_t *known = NULL;
    if (run->teacher_run >= 0 && cfg_from_json(plan->runs[run->teacher_run].config, teacher, found) == 0)
      known = teacher;
    char prefix[CFG_TITLE_MAX + 16];
    int is_teacher = 0;
    for (int l = 0; l < plan->n_links; l++)
      is_teacher |= plan->links[l].run == r && plan->links[l].role == STUDY_ROLE_TEACHER;
    if (is_teacher) snprintf(prefix, sizeof prefix, "teacher");
    else snprintf(prefix, sizeof prefix, "arms.%s", arm_of(plan, r));
    api_check_memory(api, config, known, prefix, errors);
  }
done:
  free(config);
  free(teacher);
  free(found);
}

static int respond_invalid(http_request_t *request, const cfg_errors_t *errors) {
  json_t *answer = json_pack("{s:s, s:o}", "error", "invalid study", "errors", cfg_errors_to_json(errors));
  return http_respond_json(request, MHD_HTTP_BAD_REQUEST, answer);
}

int api_submit_study(http_request_t *request) {
  api_t *api = app(request);
  size_t length;
  const char *body = http_body(request, &length);
  const char *dry_run = http_query(request, "dry_run");
  if (dry_run && strcmp(dry_run, "1") != 0 && strcmp(dry_run, "true") != 0 && strcmp(dry_run, "0") != 0 &&
      strcmp(dry_run, "false") != 0)
    return http_respond_error(request, MHD_HTTP_BAD_REQUEST, "dry_run: must be 1 or 0 (true or false)");
  const int dry = dry_run && (strcmp(dry_run, "1") == 0 || strcmp(dry_run, "true") == 0);
  cfg_errors_t errors = {0};
  json_error_t json_error;
  json_t *spec = json_loadb(body ? body : "", length, JSON_REJECT_DUPLICATES, &json_error);
  if (spec == NULL) {
    cfg_add_error(&errors, "", "invalid JSON at line %d, column %d: %s", json_error.line, json_error.column,
                  json_error.text);
    return respond_invalid(request, &errors);
  }
  /* A registered dataset's files, checksum and shape, into the configs runs are made from. */
  if (json_is_object(json_object_get(spec, "base"))) dataset_fill_config(api->datasets, json_object_get(spec, "base"));
  json_t *teacher_config = json_object_get(json_object_get(spec, "teacher"), "config");
  if (json_is_object(teacher_config)) dataset_fill_config(api->datasets, teacher_config);
  study_plan_t *plan = NULL;
  int result = study_spec_expand(spec, &plan, &errors);
  if (result == 0) check_datasets(api, plan, &errors);
  if (result == 0) check_teacher(api, plan, &errors);
  if (result == 0 && errors.count == 0) check_memory(api, plan, &errors);
  if (errors.count > 0 || result == -EINVAL) {
    study_plan_free(plan);
    json_decref(spec);
    return respond_invalid(request, &errors);
  }
  if (result != 0) {
    json_decref(spec);
    return result;
  }
  if (dry) {
    json_t *answer = study_plan_to_json(plan);
    json_object_set_new(answer, "dry_run", json_true());
    study_plan_free(plan);
    json_decref(spec);
    return http_respond_json(request, MHD_HTTP_OK, answer);
  }
  int64_t id = 0;
  result = study_create(api->db, plan, spec, &id);
  const int runs = plan->n_runs;
  study_plan_free(plan);
  json_decref(spec);
  if (result != 0)
    return http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE, "the study could not be stored: %s",
                              strerror(-result));
  /* The experiment list's live stream learns of the new runs like of any submission. */
  json_t *created = db_select(api->db, "SELECT DISTINCT experiment_id FROM study_runs WHERE study_id = ?1", id, 0);
  size_t i;
  json_t *row;
  json_array_foreach(created, i, row)
    sse_publish_experiment(api->hub, json_integer_value(json_object_get(row, "experiment_id")));
  json_decref(created);
  if (api->sched) sched_kick(api->sched);
  char *text;
  size_t text_length;
  if (study_text(api->db, id, &text, &text_length) != 0) text = NULL;
  json_t *study = text ? json_loads(text, 0, NULL) : NULL;
  free(text);
  json_t *answer = json_pack("{s:I, s:O, s:i}", "id", (json_int_t)id, "status",
                             study ? json_object_get(study, "status") : json_string(DB_QUEUED), "runs", runs);
  json_decref(study);
  char location[64];
  snprintf(location, sizeof location, "/api/studies/%lld", (long long)id);
  return http_respond_created(request, location, answer);
}

int api_list_studies(http_request_t *request) {
  long long limit = 100, before = 0;
  int bad = api_query_integer(request, "limit", 1, 500, &limit);
  if (bad == 0) bad = api_query_integer(request, "before", 1, INT64_MAX, &before);
  if (bad) return bad > 0 ? 0 : bad;
  size_t length = 0;
  char *list = study_list_text(app(request)->db, before, (int)limit, &length);
  if (list == NULL) return -EIO;
  return http_respond_text(request, MHD_HTTP_OK, "application/json", list, length);
}

int api_get_study(http_request_t *request) {
  db_flush(app(request)->db); /* the runs' latest evaluations */
  char *text;
  size_t length;
  int result = study_text(app(request)->db, http_path_id(request), &text, &length);
  if (result == -ENOENT) return respond_no_study(request);
  if (result != 0) return result;
  return http_respond_text(request, MHD_HTTP_OK, "application/json", text, length);
}

int api_cancel_study(http_request_t *request) {
  api_t *api = app(request);
  if (api->sched == NULL) return api_respond_stopping(request);
  int cancelled = 0;
  int result = study_cancel(api->db, api->hub, api->sched, http_path_id(request), &cancelled);
  if (result == -ENOENT) return respond_no_study(request);
  if (result == -EALREADY)
    return http_respond_error(request, MHD_HTTP_CONFLICT, "study %lld has already ended",
                              (long long)http_path_id(request));
  if (result != 0) return result;
  return http_respond_json(request, MHD_HTTP_OK,
                           json_pack("{s:I, s:s, s:i}", "id", (json_int_t)http_path_id(request), "status",
                                     DB_CANCELLED, "cancelled_runs", cancelled));
}

static int study_exists(http_request_t *request) {
  json_t *found = db_select(app(request)->db, "SELECT id FROM studies WHERE id = ?1", http_path_id(request), 0);
  const int exists = json_array_size(found) > 0;
  json_decref(found);
  return exists;
}

int api_get_study_stream(http_request_t *request) {
  char *current;
  int ended;
  int result = study_state_text(app(request)->db, http_path_id(request), &current, &ended);
  if (result == -ENOENT) return respond_no_study(request);
  if (result != 0) return result;
  result = sse_subscribe_study(app(request)->hub, request, http_path_id(request), current, ended);
  free(current);
  return result;
}

int api_get_study_curves(http_request_t *request) {
  api_t *api = app(request);
  if (!study_exists(request)) return respond_no_study(request);
  const char *names = http_query(request, "names");
  if (names == NULL) names = "val/accuracy,loss/task,loss/distill";
  if (strlen(names) > 500)
    return http_respond_error(request, MHD_HTTP_BAD_REQUEST, "names: at most 500 characters (%d curves)",
                              STUDY_CURVES_MAX_NAMES);
  long long points = 300;
  int bad = api_query_integer(request, "points", 10, 5000, &points);
  if (bad) return bad > 0 ? 0 : bad;
  db_flush(api->db);
  json_t *curves = study_curves(api->db, http_path_id(request), names, (int)points);
  if (curves == NULL) return -EIO;
  return http_respond_json(request, MHD_HTTP_OK, curves);
}
