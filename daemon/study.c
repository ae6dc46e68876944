/* study.c — studies in the daemon (see study.h): storing a plan, following its runs,
 * early stopping, cancelling, and the JSON the API and streams show. Everything runs on the
 * event loop with the daemon's one writable connection. */
#include "study.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"
#include "study_statistics.h"
#include "util.h"

/* The median rule needs company: a run is only judged against at least this many completed
 * runs of its arm (with one, "the median" is one run's luck). */
#define EARLY_STOPPING_MIN_PEERS 2

/* The experiment statuses that are still to end. */
static int is_active(const char *status) {
  return strcmp(status, DB_QUEUED) == 0 || strcmp(status, DB_RUNNING) == 0 || strcmp(status, DB_INTERRUPTED) == 0;
}

/* Runs `text` with integer ?1 (and ?2 when given) and text ?3.. none: for the one-line
 * UPDATEs and INSERTs below. Returns 0 or a negative errno. */
static int execute(db_t *db, const char *text, int64_t first, int64_t second, const char *third) {
  sqlite3_stmt *statement = db_statement(db, text);
  if (statement == NULL) return -EIO;
  int parameters = sqlite3_bind_parameter_count(statement);
  sqlite3_bind_int64(statement, 1, first);
  if (parameters >= 2) sqlite3_bind_int64(statement, 2, second);
  if (parameters >= 3) sqlite3_bind_text(statement, 3, third, -1, SQLITE_STATIC);
  int result = sqlite3_step(statement) == SQLITE_DONE ? 0 : db_failure(db, text);
  db_release(db, statement);
  return result;
}

// ---------------------------------------------------------------------------------------
// creating

static int insert_study(db_t *db, const study_plan_t *plan, const json_t *spec, int64_t *id) {
  sqlite3_stmt *statement = db_statement(db, "INSERT INTO studies (name, description, spec) VALUES (?1, ?2, ?3)");
  if (statement == NULL) return -EIO;
  char *text = json_dumps(spec, JSON_COMPACT | JSON_REAL_PRECISION(15));
  const char *description = json_string_value(json_object_get(spec, "description"));
  sqlite3_bind_text(statement, 1, plan->name, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 2, description ? description : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 3, text ? text : "{}", -1, SQLITE_STATIC);
  int result = sqlite3_step(statement) == SQLITE_DONE ? 0 : db_failure(db, "insert study");
  db_release(db, statement);
  free(text);
  if (result == 0) *id = db_last_id(db);
  return result;
}

/* The plan's runs as experiments, in plan order: a run's teacher is always stored before it,
 * so its id is known when the student's config is written. */
static int insert_runs(db_t *db, const study_plan_t *plan, int64_t *ids) {
  for (int r = 0; r < plan->n_runs; r++) {
    const study_run_t *run = &plan->runs[r];
    json_t *config = json_deep_copy(run->config);
    int64_t teacher_id = 0;
    if (run->teacher_run >= 0) {
      teacher_id = ids[run->teacher_run];
      json_object_set_new(json_object_get(config, "teacher"), "experiment", json_integer(teacher_id));
    } else if (run->distills && plan->teacher_experiment > 0) {
      teacher_id = plan->teacher_experiment;
    }
    char *text = json_dumps(config, JSON_COMPACT | JSON_REAL_PRECISION(15));
    int priority = (int)json_integer_value(json_object_get(config, "priority"));
    json_decref(config);
    if (text == NULL) return -ENOMEM;
    int result = db_experiment_insert(db, run->name, priority, teacher_id, text, &ids[r]);
    free(text);
    if (result != 0) return result;
  }
  return 0;
}

static int insert_links(db_t *db, const study_plan_t *plan, int64_t study_id, const int64_t *ids) {
  sqlite3_stmt *statement = db_statement(
      db, "INSERT INTO study_runs (study_id, experiment_id, role, arm, seed, cell) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (statement == NULL) return -EIO;
  int result = 0;
  for (int l = 0; l < plan->n_links && result == 0; l++) {
    const study_link_t *link = &plan->links[l];
    char *cell = json_dumps(link->cell, JSON_COMPACT | JSON_REAL_PRECISION(15));
    sqlite3_bind_int64(statement, 1, study_id);
    sqlite3_bind_int64(statement, 2, ids[link->run]);
    sqlite3_bind_text(statement, 3, study_role_name(link->role), -1, SQLITE_STATIC);
    sqlite3_bind_text(statement, 4, link->arm, -1, SQLITE_STATIC);
    sqlite3_bind_int64(statement, 5, plan->runs[link->run].seed);
    sqlite3_bind_text(statement, 6, cell ? cell : "{}", -1, SQLITE_TRANSIENT);
    free(cell);
    if (sqlite3_step(statement) != SQLITE_DONE) result = db_failure(db, "insert study run");
    sqlite3_reset(statement);
  }
  db_release(db, statement);
  return result;
}

static int store_statistics(db_t *db, int64_t study_id) {
  json_t *statistics = study_statistics_compute(db, study_id);
  if (statistics == NULL) return -EIO;
  char *text = json_dumps(statistics, JSON_COMPACT | JSON_REAL_PRECISION(15));
  int result = text ? study_statistics_store(db, study_id, statistics) : -ENOMEM;
  if (result == 0) result = execute(db, "UPDATE studies SET statistics = ?3 WHERE id = ?1", study_id, 0, text);
  free(text);
  json_decref(statistics);
  return result;
}

int study_create(db_t *db, const study_plan_t *plan, const json_t *spec, int64_t *id) {
  int64_t *ids = calloc((size_t)plan->n_runs + 1, sizeof *ids);
  if (ids == NULL) return -ENOMEM;
  /* One transaction: a study is stored whole or not at all, and a daemon killed halfway
   * leaves no half study to run. */
  int result = db_begin(db);
  if (result == 0) result = insert_study(db, plan, spec, id);
  if (result == 0) result = insert_runs(db, plan, ids);
  if (result == 0) result = insert_links(db, plan, *id, ids);
  if (result == 0) result = store_statistics(db, *id); /* the arms, with no runs done yet */
  if (result == 0) result = db_commit(db);
  if (result != 0) db_rollback(db);
  free(ids);
  return result;
}

// ---------------------------------------------------------------------------------------
// reading

static json_t *rows(db_t *db, const char *text, int64_t id) { return db_select(db, text, id, 0); }

/* {"queued": n, "running": n, …}: the study's distinct experiments by status. */
static json_t *status_counts(db_t *db, int64_t id) {
  json_t *list = rows(db, "SELECT e.status, count(DISTINCT e.id) AS n FROM study_runs r "
                          "JOIN experiments e ON e.id = r.experiment_id WHERE r.study_id = ?1 GROUP BY e.status",
                      id);
  json_t *counts = json_object();
  size_t i;
  json_t *row;
  json_array_foreach(list, i, row)
    json_object_set(counts, json_string_value(json_object_get(row, "status")), json_object_get(row, "n"));
  json_decref(list);
  return counts;
}

/* The study's row and counts: what its list entry and its stream's "study" event show. */
static json_t *study_header(db_t *db, int64_t id) {
  json_t *found = rows(db, "SELECT id, name, description, status, created_at, started_at, finished_at, error, "
                           "(SELECT count(DISTINCT experiment_id) FROM study_runs WHERE study_id = studies.id) AS runs, "
                           "note, archived_at, (SELECT json_group_array(tag) FROM (SELECT tag FROM study_tags "
                           "WHERE study_id = studies.id ORDER BY tag)) AS tags "
                           "FROM studies WHERE id = ?1",
                       id);
  json_t *study = json_incref(json_array_get(found, 0));
  json_decref(found);
  if (study) json_object_set_new(study, "counts", status_counts(db, id));
  /* The tags come back from db_select as JSON text: make them the array they are. */
  json_t *tags = study ? json_loads(json_string_value(json_object_get(study, "tags")), 0, NULL) : NULL;
  if (study) json_object_set_new(study, "tags", tags ? tags : json_array());
  return study;
}

int study_text(db_t *db, int64_t id, char **text, size_t *length) {
  json_t *study = study_header(db, id);
  if (study == NULL) return -ENOENT;
  json_t *extra = rows(db, "SELECT spec, statistics FROM studies WHERE id = ?1", id);
  json_t *spec = json_loads(json_string_value(json_object_get(json_array_get(extra, 0), "spec")), 0, NULL);
  json_t *statistics =
      json_loads(json_string_value(json_object_get(json_array_get(extra, 0), "statistics")), 0, NULL);
  json_decref(extra);
  json_object_set_new(study, "spec", spec ? spec : json_null());
  json_object_set_new(study, "runs",
                      rows(db, "SELECT r.experiment_id AS id, r.role, r.arm, r.seed, json(r.cell) AS cell, "
                               "r.stopped_epoch, e.name, e.status, e.epoch, e.planned_epochs AS epochs, e.error "
                               "FROM study_runs r JOIN experiments e ON e.id = r.experiment_id "
                               "WHERE r.study_id = ?1 ORDER BY r.experiment_id, r.arm, r.cell",
                           id));
  /* json(cell) comes back as text from db_select: make it the object it is. */
  size_t i;
  json_t *run;
  json_array_foreach(json_object_get(study, "runs"), i, run) {
    json_t *cell = json_loads(json_string_value(json_object_get(run, "cell")), 0, NULL);
    json_object_set_new(run, "cell", cell ? cell : json_object());
  }
  static const char *const parts[] = {"arms", "comparisons", "grid", "findings"};
  for (size_t p = 0; p < ARRAY_SIZE(parts); p++) {
    json_t *part = json_object_get(statistics, parts[p]);
    json_object_set(study, parts[p], part ? part : json_array());
  }
  json_decref(statistics);
  *text = json_dumps(study, JSON_COMPACT | JSON_REAL_PRECISION(15));
  json_decref(study);
  if (*text == NULL) return -ENOMEM;
  *length = strlen(*text);
  return 0;
}

int study_state_text(db_t *db, int64_t id, char **text, int *ended) {
  json_t *study = study_header(db, id);
  if (study == NULL) return -ENOENT;
  *ended = !json_is_null(json_object_get(study, "finished_at"));
  *text = json_dumps(study, JSON_COMPACT | JSON_REAL_PRECISION(15));
  json_decref(study);
  return *text ? 0 : -ENOMEM;
}

char *study_list_text(db_t *db, int64_t before, int limit, int archived, size_t *length) {
  json_t *ids = db_select(db,
                          archived == 2   ? "SELECT id FROM studies WHERE ?1 = 0 OR id < ?1 ORDER BY id DESC LIMIT ?2"
                          : archived == 1 ? "SELECT id FROM studies WHERE (?1 = 0 OR id < ?1) AND archived_at IS NOT "
                                            "NULL ORDER BY id DESC LIMIT ?2"
                                          : "SELECT id FROM studies WHERE (?1 = 0 OR id < ?1) AND archived_at IS NULL "
                                            "ORDER BY id DESC LIMIT ?2",
                          before, limit + 1);
  json_t *studies = json_array();
  size_t i;
  json_t *row;
  json_int_t last = 0;
  json_array_foreach(ids, i, row) {
    if ((int)i == limit) break;
    last = json_integer_value(json_object_get(row, "id"));
    json_t *study = study_header(db, last);
    if (study) json_array_append_new(studies, study);
  }
  json_t *answer = json_pack("{s:o, s:o}", "studies", studies, "next_before",
                             (int)json_array_size(ids) > limit ? json_integer(last) : json_null());
  json_decref(ids);
  char *text = json_dumps(answer, JSON_COMPACT | JSON_REAL_PRECISION(15));
  json_decref(answer);
  if (text) *length = strlen(text);
  return text;
}

// ---------------------------------------------------------------------------------------
// following the runs

/* The study's status from its runs': see study.h for the rules. Writes it (and the
 * statistics when `runs_ended`) and tells the study's streams. */
static void update_study(db_t *db, sse_hub_t *hub, int64_t id, int runs_ended) {
  json_t *study = study_header(db, id);
  if (study == NULL) return;
  const char *was = json_string_value(json_object_get(study, "status"));
  json_t *runs = rows(db, "SELECT DISTINCT e.id, e.status, e.started_at IS NOT NULL AS started, "
                          "  (SELECT count(*) FROM study_runs s WHERE s.study_id = r.study_id "
                          "     AND s.experiment_id = e.id AND s.stopped_epoch IS NOT NULL) AS stopped "
                          "FROM study_runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.study_id = ?1 "
                          "ORDER BY e.id",
                      id);
  int active = 0, started = 0;
  char failed[512] = "";
  int n_failed = 0;
  size_t i;
  json_t *run;
  json_array_foreach(runs, i, run) {
    const char *status = json_string_value(json_object_get(run, "status"));
    started |= (int)json_integer_value(json_object_get(run, "started"));
    if (is_active(status)) active++;
    int bad = strcmp(status, DB_FAILED) == 0 ||
              (strcmp(status, DB_CANCELLED) == 0 && !json_integer_value(json_object_get(run, "stopped")));
    if (bad && n_failed++ < 20) {
      size_t used = strlen(failed);
      snprintf(failed + used, sizeof failed - used, "%s%lld", used ? ", " : "",
               (long long)json_integer_value(json_object_get(run, "id")));
    }
  }
  const char *status = was;
  char error[700] = "";
  if (strcmp(was, DB_CANCELLED) != 0) {
    if (active > 0) status = started ? DB_RUNNING : DB_QUEUED;
    else if (n_failed > 0) status = DB_FAILED;
    else status = DB_SUCCEEDED;
  }
  if (n_failed > 0 && strcmp(status, DB_CANCELLED) != 0)
    snprintf(error, sizeof error, "%d of %zu runs failed or were cancelled (%s%s): the statistics are over the rest",
             n_failed, json_array_size(runs), failed, n_failed > 20 ? ", …" : "");
  const int ended = active == 0;
  if (runs_ended) store_statistics(db, id);
  sqlite3_stmt *statement = db_statement(
      db, "UPDATE studies SET status = ?2, error = nullif(?3, ''), "
          "started_at = CASE WHEN ?4 THEN coalesce(started_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) END, "
          "finished_at = CASE WHEN ?5 THEN coalesce(finished_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) END "
          "WHERE id = ?1");
  if (statement) {
    sqlite3_bind_int64(statement, 1, id);
    sqlite3_bind_text(statement, 2, status, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(statement, 3, error, -1, SQLITE_STATIC);
    sqlite3_bind_int(statement, 4, started);
    sqlite3_bind_int(statement, 5, ended);
    if (sqlite3_step(statement) != SQLITE_DONE) db_failure(db, "update study");
    db_release(db, statement);
  }
  json_decref(runs);
  json_decref(study);
  if (hub == NULL) return;
  json_t *now = study_header(db, id);
  if (now == NULL) return;
  json_object_set_new(now, "statistics_changed", json_boolean(runs_ended));
  char *text = json_dumps(now, JSON_COMPACT);
  json_decref(now);
  if (text == NULL) return;
  sse_publish_study(hub, id, "study", text, 0);
  free(text);
  if (ended) sse_publish_study(hub, id, "end", "{}", 1);
}

/* The study an experiment belongs to (0: none). An experiment is in one study at most. */
static int64_t study_of(db_t *db, int64_t experiment_id) {
  json_t *found = rows(db, "SELECT study_id FROM study_runs WHERE experiment_id = ?1 LIMIT 1", experiment_id);
  int64_t id = json_integer_value(json_object_get(json_array_get(found, 0), "study_id"));
  json_decref(found);
  return id;
}

/* The run's row as the study's stream shows it: the experiment as GET /api/experiments
 * lists it. */
static void publish_run(db_t *db, sse_hub_t *hub, int64_t study_id, int64_t experiment_id) {
  char *text;
  size_t length;
  if (db_experiment_text(db, experiment_id, 0, &text, &length) != 0) return;
  sse_publish_study(hub, study_id, "run", text, 0);
  free(text);
}

/* The median stopping rule (Golovin et al., "Google Vizier", 2017): after epoch e, a run
 * whose best validation accuracy so far is below the median of the running averages (over
 * epochs 1…e) of the completed runs of its arm stops. Completed, as Vizier has it: judged
 * against runs still at their start, half of any arm would stop, good runs included. Only
 * for arm runs of a study that asked for it, never for teachers or baselines (a pair with a
 * stopped side leaves the comparison). */
static void consider_stopping(db_t *db, sched_t *sched, int64_t study_id, int64_t experiment_id) {
  json_t *found = rows(db, "SELECT r.arm, json_extract(s.spec, '$.early_stopping.min_epochs') AS min_epochs, "
                           "  json_type(s.spec, '$.early_stopping') IS NOT NULL AS enabled, "
                           "  (SELECT max(epoch) FROM evals v WHERE v.experiment_id = r.experiment_id "
                           "     AND v.split = 'val' AND v.name = 'accuracy') AS epoch, "
                           "  r.stopped_epoch "
                           "FROM study_runs r JOIN studies s ON s.id = r.study_id "
                           "WHERE r.experiment_id = ?1 AND r.role = 'arm' LIMIT 1",
                       experiment_id);
  json_t *row = json_array_get(found, 0);
  const int64_t epoch = json_integer_value(json_object_get(row, "epoch"));
  const json_t *min_epochs = json_object_get(row, "min_epochs");
  if (row == NULL || !json_integer_value(json_object_get(row, "enabled")) ||
      !json_is_null(json_object_get(row, "stopped_epoch")) ||
      epoch < (json_is_integer(min_epochs) ? json_integer_value(min_epochs) : 2)) {
    json_decref(found);
    return;
  }
  char arm[CFG_TITLE_MAX];
  util_strlcpy(arm, json_string_value(json_object_get(row, "arm")), sizeof arm);
  json_decref(found);

  sqlite3_stmt *statement = db_statement(
      db, "SELECT (SELECT max(value) FROM evals WHERE experiment_id = ?1 AND split = 'val' AND name = 'accuracy' "
          "          AND epoch <= ?2), NULL "
          "UNION ALL "
          "SELECT NULL, avg(v.value) FROM evals v JOIN study_runs r ON r.experiment_id = v.experiment_id "
          "  JOIN experiments e ON e.id = v.experiment_id AND e.status = 'succeeded' "
          " WHERE r.study_id = ?3 AND r.arm = ?4 AND r.role = 'arm' AND r.stopped_epoch IS NULL "
          "   AND v.experiment_id != ?1 AND v.split = 'val' AND v.name = 'accuracy' AND v.epoch <= ?2 "
          " GROUP BY v.experiment_id HAVING max(v.epoch) >= ?2");
  if (statement == NULL) return;
  sqlite3_bind_int64(statement, 1, experiment_id);
  sqlite3_bind_int64(statement, 2, epoch);
  sqlite3_bind_int64(statement, 3, study_id);
  sqlite3_bind_text(statement, 4, arm, -1, SQLITE_STATIC);
  double best = 0, averages[STUDY_MAX_RUNS];
  int peers = 0;
  while (sqlite3_step(statement) == SQLITE_ROW) {
    if (sqlite3_column_type(statement, 0) != SQLITE_NULL) best = sqlite3_column_double(statement, 0);
    else if (peers < STUDY_MAX_RUNS) averages[peers++] = sqlite3_column_double(statement, 1);
  }
  db_release(db, statement);
  if (peers < EARLY_STOPPING_MIN_PEERS) return;
  const double median = stats_median(averages, peers);
  if (!(best < median)) return;
  char reason[512];
  snprintf(reason, sizeof reason,
           "stopped early by the median rule after epoch %lld: its best validation accuracy %.4f is below the median "
           "%.4f of %d other runs of arm %s",
           (long long)epoch, best, median, peers, arm);
  fprintf(stderr, "mapsaged: experiment %lld %s\n", (long long)experiment_id, reason);
  /* Recorded before the cancel: its status change must find the run stopped, not failed. */
  if (execute(db, "UPDATE study_runs SET stopped_epoch = ?2 WHERE experiment_id = ?1", experiment_id, epoch, NULL) != 0)
    return;
  int running;
  if (sched) sched_cancel(sched, experiment_id, reason, &running);
}

void study_observe(db_t *db, sse_hub_t *hub, sched_t *sched, int64_t experiment_id, sched_observation_t what) {
  const int64_t study_id = study_of(db, experiment_id);
  if (study_id == 0) return;
  if (hub) publish_run(db, hub, study_id, experiment_id);
  if (what == SCHED_EPOCH_ENDED) {
    consider_stopping(db, sched, study_id, experiment_id);
    return;
  }
  char status[32] = "";
  db_experiment_status(db, experiment_id, status, sizeof status);
  update_study(db, hub, study_id, db_status_is_terminal(status));
}

int study_cancel(db_t *db, sse_hub_t *hub, sched_t *sched, int64_t id, int *cancelled) {
  *cancelled = 0;
  json_t *study = study_header(db, id);
  if (study == NULL) return -ENOENT;
  const char *status = json_string_value(json_object_get(study, "status"));
  int ended = db_status_is_terminal(status);
  json_decref(study);
  if (ended) return -EALREADY;
  int result = execute(db, "UPDATE studies SET status = 'cancelled' WHERE id = ?1", id, 0, NULL);
  if (result != 0) return result;
  /* The ids first, then the cancels: each cancel tells the observer, which reads the
   * database, so no statement of ours may be open across them. Newest first: students
   * before their teacher, so that they end cancelled, not failed for a cancelled teacher. */
  json_t *active = rows(db, "SELECT DISTINCT e.id FROM study_runs r JOIN experiments e ON e.id = r.experiment_id "
                            "WHERE r.study_id = ?1 AND e.status IN ('queued', 'running', 'interrupted') "
                            "ORDER BY e.id DESC",
                        id);
  size_t i;
  json_t *row;
  json_array_foreach(active, i, row) {
    int running;
    if (sched_cancel(sched, json_integer_value(json_object_get(row, "id")), "the study was cancelled", &running) == 0)
      (*cancelled)++;
  }
  json_decref(active);
  update_study(db, hub, id, 1);
  return 0;
}

void study_refresh_all(db_t *db) {
  json_t *open = db_select(db, "SELECT id FROM studies WHERE status IN ('queued', 'running') OR "
                               "(status = 'cancelled' AND finished_at IS NULL) OR "
                               "coalesce(json_extract(statistics, '$.version'), 0) != ?1",
                           STUDY_STATISTICS_VERSION, 0);
  size_t i;
  json_t *row;
  json_array_foreach(open, i, row) update_study(db, NULL, json_integer_value(json_object_get(row, "id")), 1);
  json_decref(open);
}
