/* test_db.c — the daemon's SQLite layer on a real temporary database file: experiments'
 * life cycle, the batch (one transaction, idempotent), the curves API and the stream's
 * replay order and cursor. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include <sqlite3.h>

#include "check.h"
#include "db.h"

static char directory[] = "/tmp/mapsage-test-db-XXXXXX";
static char path[256];

/* An event with `values` (a JSON object, which must outlive the event) as ev_parse gives it. */
static ev_t make_event(ev_type_t type, int64_t step, int64_t epoch, ev_split_t split, json_t *values) {
  static ev_value_t list[64];
  int count = 0;
  const char *name;
  json_t *value;
  json_object_foreach(values, name, value) if (count < 64) list[count++] = (ev_value_t){name, json_number_value(value)};
  return (ev_t){.type = type, .step = step, .epoch = epoch, .stage = 0, .split = split, .values = list,
                .n_values = count};
}

static void add(db_t *db, int64_t id, ev_type_t type, int64_t step, int64_t epoch, ev_split_t split, json_t *values) {
  ev_t event = make_event(type, step, epoch, split, values);
  CHECK_INT(0, db_batch_event(db, id, &event));
  json_decref(values);
}

/* db_experiment_list's answer, parsed: it must be one valid JSON object. */
static json_t *list_of(db_t *db, const db_list_filter_t *filter) {
  size_t length = 0;
  char *text = db_experiment_list(db, filter, &length);
  CHECK(text != NULL);
  json_t *list = text ? json_loadb(text, length, 0, NULL) : NULL;
  CHECK(json_is_object(list));
  free(text);
  return list ? list : json_object();
}

static void test_life_cycle(db_t *db) {
  int64_t first, second, third;
  CHECK_INT(0, db_experiment_insert(db, "low", 0, 0, "{\"stages\":[{\"epochs\":2},{\"epochs\":3}]}", &first));
  CHECK_INT(0, db_experiment_insert(db, "high", 5, 0, "{\"stages\":[]}", &second));
  CHECK_INT(0, db_experiment_insert(db, "low-later", 0, 0, "{\"stages\":[]}", &third));
  int64_t next;
  char *config;
  CHECK_INT(0, db_experiment_next(db, &next, &config)); /* highest priority first */
  CHECK_INT(second, next);
  free(config);
  int attempt = 0;
  CHECK_INT(0, db_experiment_start(db, second, &attempt));
  CHECK_INT(1, attempt);
  CHECK_INT(0, db_experiment_next(db, &next, &config)); /* then the oldest */
  CHECK_INT(first, next);
  free(config);

  json_t *experiment = db_experiment_get(db, first, 1);
  CHECK(experiment != NULL);
  CHECK_STR("queued", json_string_value(json_object_get(experiment, "status")));
  CHECK_INT(5, json_integer_value(json_object_get(json_object_get(experiment, "progress"), "epochs")));
  CHECK_INT(2, json_integer_value(json_object_get(json_object_get(experiment, "progress"), "stages")));
  CHECK(json_is_object(json_object_get(experiment, "config")));
  json_decref(experiment);
  CHECK(db_experiment_get(db, 999, 0) == NULL);

  /* A daemon that died: running becomes interrupted, and runs before newer work. */
  CHECK_INT(1, db_mark_running_interrupted(db));
  char status[32];
  CHECK_INT(0, db_experiment_status(db, second, status, sizeof status));
  CHECK_STR("interrupted", status);
  CHECK_INT(0, db_experiment_next(db, &next, &config));
  CHECK_INT(second, next);
  free(config);
  CHECK_INT(0, db_experiment_start(db, second, &attempt));
  CHECK_INT(2, attempt);
  CHECK_INT(0, db_experiment_finish(db, second, DB_SUCCEEDED, NULL, "{\"final_test_accuracy\":0.9}"));
  experiment = db_experiment_get(db, second, 0);
  CHECK_NEAR(0.9, json_real_value(json_object_get(json_object_get(experiment, "summary"), "final_test_accuracy")), 1e-12);
  CHECK(json_is_string(json_object_get(experiment, "finished_at")));
  json_decref(experiment);
  CHECK_INT(-ENOENT, db_experiment_status(db, 999, status, sizeof status));
  CHECK_INT(-ENOENT, db_experiment_finish(db, 999, DB_FAILED, "x", NULL));

  db_list_filter_t filter = {.limit = 2};
  json_t *list = list_of(db, &filter);
  json_t *items = json_object_get(list, "experiments");
  CHECK_INT(2, json_array_size(items));
  CHECK_INT(third, json_integer_value(json_object_get(json_array_get(items, 0), "id"))); /* newest first */
  CHECK_INT(second, json_integer_value(json_object_get(list, "next_before")));
  json_decref(list);
  filter = (db_list_filter_t){.statuses = "succeeded,failed", .limit = 10};
  list = list_of(db, &filter);
  CHECK_INT(1, json_array_size(json_object_get(list, "experiments")));
  CHECK(json_is_null(json_object_get(list, "next_before")));
  json_decref(list);
  filter = (db_list_filter_t){.name = "LATER", .limit = 10};
  list = list_of(db, &filter);
  CHECK_INT(1, json_array_size(json_object_get(list, "experiments")));
  json_decref(list);
}

typedef struct {
  char ids[64][32];
  int count;
} replayed_t;

static void on_replayed(void *context, const ev_t *event) {
  replayed_t *replayed = context;
  if (replayed->count < 64) {
    if (event->type == EV_STAGE)
      snprintf(replayed->ids[replayed->count], 32, "%lld.%d", (long long)event->step, EV_PHASE_STAGE);
    else if (event->type == EV_EVAL)
      snprintf(replayed->ids[replayed->count], 32, "%lld.%d", (long long)event->step, 1 + (int)event->split);
    else
      snprintf(replayed->ids[replayed->count], 32, "%lld", (long long)event->step);
  }
  replayed->count++;
}

/* db_metrics' answer, parsed: it must be one valid JSON object. */
static json_t *curves_of(db_t *db, int64_t id, const char *names, int64_t since_step) {
  size_t length = 0;
  char *text = db_metrics(db, id, names, since_step, &length);
  CHECK(text != NULL);
  json_error_t error;
  json_t *curves = text ? json_loadb(text, length, 0, &error) : NULL;
  CHECK(json_is_object(curves));
  free(text);
  return curves ? curves : json_object();
}

static void test_batch_and_curves(db_t *db) {
  int64_t id;
  CHECK_INT(0, db_experiment_insert(db, "curves", 0, 0, "{\"stages\":[]}", &id));
  for (int step = 1; step <= 4; step++)
    add(db, id, EV_METRIC, step, (step + 1) / 2, 0, json_pack("{s:f, s:f}", "loss/total", 1.0 / step, "lr", 0.1));
  add(db, id, EV_EVAL, 2, 1, EV_SPLIT_VAL, json_pack("{s:f}", "accuracy", 0.5));
  add(db, id, EV_EVAL, 2, 1, EV_SPLIT_TEST, json_pack("{s:f, s:f}", "accuracy", 0.4, "loss", 1.5));
  add(db, id, EV_EVAL, 4, 2, EV_SPLIT_TEST, json_pack("{s:f, s:f}", "accuracy", 0.6, "loss", 1.2));
  CHECK_INT(8 + 1 + 2 + 2, db_batch_rows(db));
  json_t *before = curves_of(db, id, NULL, 0);
  CHECK_INT(0, json_object_size(before)); /* nothing is visible before the flush */
  json_decref(before);
  CHECK_INT(0, db_flush(db));
  CHECK_INT(0, db_batch_rows(db));
  CHECK_INT(4, db_max_step(db, id));

  /* The same step again (a resumed run) overwrites. */
  add(db, id, EV_METRIC, 3, 2, 0, json_pack("{s:f}", "loss/total", 0.25));
  CHECK_INT(0, db_flush(db));

  json_t *curves = curves_of(db, id, NULL, 0);
  json_t *loss = json_object_get(curves, "loss/total");
  CHECK_INT(4, json_array_size(json_object_get(loss, "step")));
  CHECK_NEAR(0.25, json_real_value(json_array_get(json_object_get(loss, "value"), 2)), 1e-12);
  json_t *accuracy = json_object_get(curves, "test/accuracy");
  CHECK_INT(2, json_array_size(json_object_get(accuracy, "epoch")));
  CHECK_INT(2, json_integer_value(json_array_get(json_object_get(accuracy, "epoch"), 1)));
  CHECK_INT(5, json_object_size(curves)); /* loss/total, lr, val/accuracy, test/accuracy, test/loss */
  json_decref(curves);
  curves = curves_of(db, id, "lr,test/loss", 2);
  CHECK_INT(2, json_object_size(curves));
  CHECK_INT(2, json_array_size(json_object_get(json_object_get(curves, "lr"), "step")));
  json_decref(curves);
  /* The text itself, as clients read it: columns, reals with a '.', evals with epochs. */
  size_t length = 0;
  char *text = db_metrics(db, id, "lr,test/loss", 2, &length);
  CHECK_STR("{\"lr\":{\"step\":[3,4],\"value\":[0.1,0.1]},"
            "\"test/loss\":{\"step\":[4],\"value\":[1.2],\"epoch\":[2]}}",
            text);
  CHECK_INT(text ? strlen(text) : 0, length);
  free(text);
  text = db_metrics(db, id, "no-such-curve", -1, &length);
  CHECK_STR("{}", text);
  free(text);

  /* Replay: stream order, a step's metric before its evals, evals in split order. */
  replayed_t replayed = {0};
  CHECK_INT(7, db_replay(db, id, 0, 0, 4, on_replayed, &replayed));
  const char *expected[] = {"1", "2", "2.2", "2.3", "3", "4", "4.3"};
  CHECK_INT(7, replayed.count);
  for (int i = 0; i < 7 && i < replayed.count; i++) CHECK_STR(expected[i], replayed.ids[i]);
  /* From a cursor in the middle of a step's evals. */
  replayed = (replayed_t){0};
  CHECK_INT(2, db_replay(db, id, 2, 2, 3, on_replayed, &replayed));
  CHECK_INT(2, replayed.count);
  CHECK_STR("2.3", replayed.ids[0]);
  CHECK_STR("3", replayed.ids[1]);

  CHECK_INT(0, db_batch_log(db, id, 1, 1, "hello", 5));
  CHECK_INT(0, db_batch_log(db, id, 1, 2, "world", 5));
  CHECK_INT(0, db_flush(db));
  length = 0;
  char *log = db_log_text(db, id, &length);
  CHECK_STR("attempt 1 | hello\nattempt 1 | world\n", log);
  free(log);
}

static void on_dependent(void *context, int64_t id) { *(int64_t *)context = id; }

/* A flush larger than a multi-row INSERT (metric rows go 64 to a statement), with other
 * rows between them and a step reported twice in the same batch: every row lands, and the
 * later value of the repeated step wins, as with one statement a row. */
static void test_large_flush(db_t *db) {
  int64_t id;
  CHECK_INT(0, db_experiment_insert(db, "large", 0, 0, "{\"stages\":[]}", &id));
  for (int step = 1; step <= 150; step++) {
    add(db, id, EV_METRIC, step, 1, 0, json_pack("{s:f, s:f, s:f}", "a", (double)step, "b", -(double)step, "c", 0.5));
    if (step % 50 == 0) add(db, id, EV_EVAL, step, step / 50, EV_SPLIT_VAL, json_pack("{s:f}", "accuracy", 0.1));
  }
  add(db, id, EV_METRIC, 7, 1, 0, json_pack("{s:f}", "a", 70.0)); /* 451st row: outside a full chunk */
  add(db, id, EV_METRIC, 140, 1, 0, json_pack("{s:f}", "a", 1400.0));
  CHECK_INT(0, db_flush(db));
  json_t *curves = curves_of(db, id, "a,b,c,val/accuracy", -1);
  CHECK_INT(150, json_array_size(json_object_get(json_object_get(curves, "a"), "step")));
  CHECK_INT(150, json_array_size(json_object_get(json_object_get(curves, "c"), "value")));
  CHECK_INT(3, json_array_size(json_object_get(json_object_get(curves, "val/accuracy"), "step")));
  json_t *a = json_object_get(json_object_get(curves, "a"), "value");
  CHECK_NEAR(70.0, json_number_value(json_array_get(a, 6)), 0);
  CHECK_NEAR(1400.0, json_number_value(json_array_get(a, 139)), 0);
  CHECK_NEAR(150.0, json_number_value(json_array_get(a, 149)), 0);
  CHECK_NEAR(-150.0, json_number_value(json_array_get(json_object_get(json_object_get(curves, "b"), "value"), 149)), 0);
  json_decref(curves);
}

/* The arrays of an experiment's page (stage starts, curve names, checkpoints) are kept
 * between GETs: every write that changes them must show in the next GET. */
static void test_details_follow_writes(db_t *db) {
  int64_t id;
  CHECK_INT(0, db_experiment_insert(db, "details", 0, 0, "{\"stages\":[]}", &id));
  json_t *experiment = db_experiment_get(db, id, 1);
  CHECK_INT(0, json_array_size(json_object_get(experiment, "checkpoints")));
  CHECK_INT(0, json_array_size(json_object_get(experiment, "series")));
  json_decref(experiment);
  experiment = db_experiment_get(db, id, 1); /* from the kept arrays, still empty */
  CHECK_INT(0, json_array_size(json_object_get(experiment, "stages")));
  json_decref(experiment);

  CHECK_INT(0, db_checkpoint_add(db, id, 1, 10, "/tmp/epoch-0001.ckpt", 100));
  experiment = db_experiment_get(db, id, 1);
  CHECK_INT(1, json_array_size(json_object_get(experiment, "checkpoints")));
  json_decref(experiment);

  ev_t stage = make_event(EV_STAGE, 10, 2, EV_SPLIT_TRAIN, NULL);
  stage.name = "second";
  stage.stage = 1;
  CHECK_INT(0, db_batch_event(db, id, &stage));
  add(db, id, EV_METRIC, 11, 2, 0, json_pack("{s:f}", "loss/new", 1.0));
  CHECK_INT(0, db_flush(db));
  experiment = db_experiment_get(db, id, 1);
  CHECK_STR("second", json_string_value(json_object_get(json_array_get(json_object_get(experiment, "stages"), 0),
                                                        "name")));
  CHECK_STR("loss/new", json_string_value(json_array_get(json_object_get(experiment, "series"), 0)));
  json_decref(experiment);

  add(db, id, EV_EVAL, 11, 2, EV_SPLIT_VAL, json_pack("{s:f}", "accuracy", 0.5));
  CHECK_INT(0, db_flush(db));
  experiment = db_experiment_get(db, id, 1);
  CHECK_INT(2, json_array_size(json_object_get(experiment, "series"))); /* loss/new, val/accuracy */
  json_decref(experiment);
  /* A metric already known changes no array: the next GET reads the same ones. */
  add(db, id, EV_METRIC, 12, 2, 0, json_pack("{s:f}", "loss/new", 0.5));
  CHECK_INT(0, db_flush(db));
  experiment = db_experiment_get(db, id, 1);
  CHECK_INT(2, json_array_size(json_object_get(experiment, "series")));
  CHECK_INT(12, json_integer_value(json_object_get(json_object_get(experiment, "progress"), "step")));
  json_decref(experiment);
}

/* checkpoint_keep: the rows of the checkpoints the worker deleted go too. */
static void test_checkpoint_keep_rows(db_t *db) {
  int64_t id;
  CHECK_INT(0, db_experiment_insert(db, "kept", 0, 0, "{\"stages\":[],\"checkpoint_keep\":2}", &id));
  for (int epoch = 1; epoch <= 4; epoch++) CHECK_INT(0, db_checkpoint_add(db, id, epoch, epoch * 10, "/x", 1));
  json_t *rows = db_select(db, "SELECT epoch FROM checkpoints WHERE experiment_id = ?1 ORDER BY epoch", id, 0);
  CHECK_INT(2, json_array_size(rows));
  CHECK_INT(3, json_integer_value(json_object_get(json_array_get(rows, 0), "epoch")));
  json_decref(rows);
  /* Every 2 of 5 epochs, keep 1, with stops that left partial checkpoints between. */
  CHECK_INT(0, db_experiment_insert(db, "partials", 0, 0,
                                    "{\"stages\":[{\"epochs\":5}],\"checkpoint_every\":2,\"checkpoint_keep\":1}", &id));
  CHECK_INT(0, db_checkpoint_add(db, id, 2, 20, "/r/epoch-0002.ckpt", 1));
  CHECK_INT(0, db_checkpoint_add(db, id, 3, 25, "/r/epoch-0003-partial.ckpt", 1));
  rows = db_select(db, "SELECT group_concat(epoch) AS epochs FROM checkpoints WHERE experiment_id = ?1", id, 0);
  CHECK_STR("2,3", json_string_value(json_object_get(json_array_get(rows, 0), "epochs")));
  json_decref(rows);
  CHECK_INT(0, db_checkpoint_add(db, id, 4, 40, "/r/epoch-0004.ckpt", 1));
  CHECK_INT(0, db_checkpoint_add(db, id, 5, 45, "/r/epoch-0005-partial.ckpt", 1));
  rows = db_select(db, "SELECT group_concat(epoch) AS epochs FROM checkpoints WHERE experiment_id = ?1", id, 0);
  CHECK_STR("4,5", json_string_value(json_object_get(json_array_get(rows, 0), "epochs")));
  json_decref(rows);
  CHECK_INT(0, db_checkpoint_add(db, id, 5, 50, "/r/epoch-0005.ckpt", 1)); /* the last: due */
  rows = db_select(db, "SELECT group_concat(path) AS paths FROM checkpoints WHERE experiment_id = ?1", id, 0);
  CHECK_STR("/r/epoch-0005.ckpt", json_string_value(json_object_get(json_array_get(rows, 0), "paths")));
  json_decref(rows);
  CHECK_INT(0, db_experiment_insert(db, "all", 0, 0, "{\"stages\":[]}", &id)); /* 0 or absent: all kept */
  for (int epoch = 1; epoch <= 4; epoch++) CHECK_INT(0, db_checkpoint_add(db, id, epoch, epoch * 10, "/x", 1));
  rows = db_select(db, "SELECT epoch FROM checkpoints WHERE experiment_id = ?1", id, 0);
  CHECK_INT(4, json_array_size(rows));
  json_decref(rows);
}

static void test_teachers_and_checkpoints(db_t *db) {
  int64_t teacher, student, other;
  CHECK_INT(0, db_experiment_insert(db, "teacher", 0, 0, "{\"stages\":[]}", &teacher));
  CHECK_INT(0, db_experiment_insert(db, "student", 9, teacher, "{\"stages\":[]}", &student));
  CHECK_INT(0, db_experiment_insert(db, "student2", 9, teacher, "{\"stages\":[]}", &other));
  /* Drain what earlier tests left queued, so only these three are runnable candidates. */
  int64_t next;
  char *config;
  while (db_experiment_next(db, &next, &config) == 0) {
    free(config);
    if (next == teacher) break;
    db_experiment_finish(db, next, DB_CANCELLED, NULL, NULL);
  }
  CHECK_INT(teacher, next); /* the students outrank it but wait for it */
  int attempt;
  CHECK_INT(0, db_experiment_start(db, teacher, &attempt));
  CHECK_INT(-ENOENT, db_experiment_next(db, &next, &config));
  CHECK_INT(0, db_checkpoint_add(db, teacher, 1, 10, "/x/epoch-1.ckpt", 100));
  CHECK_INT(0, db_checkpoint_add(db, teacher, 2, 20, "/x/epoch-2.ckpt", 100));
  char path[64];
  CHECK_INT(0, db_checkpoint_latest(db, teacher, path, sizeof path));
  CHECK_STR("/x/epoch-2.ckpt", path);
  CHECK_INT(-ENOENT, db_checkpoint_latest(db, student, path, sizeof path));
  CHECK_INT(0, db_experiment_finish(db, teacher, DB_SUCCEEDED, NULL, NULL));
  CHECK_INT(0, db_experiment_next(db, &next, &config));
  CHECK_INT(student, next);
  free(config);
  json_t *experiment = db_experiment_get(db, student, 0);
  CHECK_INT(teacher, json_integer_value(json_object_get(experiment, "teacher")));
  json_decref(experiment);

  /* A teacher that fails takes its waiting students with it, saying why. */
  int64_t failing, waiting, told = 0;
  CHECK_INT(0, db_experiment_insert(db, "failing", 0, 0, "{\"stages\":[]}", &failing));
  CHECK_INT(0, db_experiment_insert(db, "waiting", 0, failing, "{\"stages\":[]}", &waiting));
  CHECK_INT(0, db_experiment_finish(db, failing, DB_FAILED, "boom", NULL));
  CHECK_INT(1, db_fail_dependents(db, failing, "its teacher failed: boom", on_dependent, &told));
  CHECK_INT(waiting, told);
  char status[32];
  db_experiment_status(db, waiting, status, sizeof status);
  CHECK_STR("failed", status);
}

static void test_stage_replay(db_t *db) {
  int64_t id;
  CHECK_INT(0, db_experiment_insert(db, "stages", 0, 0, "{\"stages\":[]}", &id));
  ev_t stage = {.type = EV_STAGE, .step = 0, .epoch = 1, .stage = 0, .name = "warm"};
  CHECK_INT(0, db_batch_event(db, id, &stage));
  add(db, id, EV_METRIC, 1, 1, 0, json_pack("{s:f}", "loss/total", 1.0));
  add(db, id, EV_EVAL, 1, 1, EV_SPLIT_TEST, json_pack("{s:f}", "accuracy", 0.5));
  stage = (ev_t){.type = EV_STAGE, .step = 1, .epoch = 2, .stage = 1, .name = "kd"};
  CHECK_INT(0, db_batch_event(db, id, &stage));
  add(db, id, EV_METRIC, 2, 2, 1, json_pack("{s:f}", "loss/total", 0.5));
  CHECK_INT(0, db_flush(db));
  replayed_t replayed = {0};
  CHECK_INT(5, db_replay(db, id, 0, 0, 2, on_replayed, &replayed));
  const char *expected[] = {"0.5", "1", "1.3", "1.5", "2"};
  CHECK_INT(5, replayed.count);
  for (int i = 0; i < 5 && i < replayed.count; i++) CHECK_STR(expected[i], replayed.ids[i]);
  replayed = (replayed_t){0};
  CHECK_INT(2, db_replay(db, id, 1, 3, 2, on_replayed, &replayed));
  CHECK_INT(2, replayed.count);
  CHECK_STR("1.5", replayed.ids[0]);

  /* A gap in the steps is found in one query, not walked. */
  add(db, id, EV_METRIC, 1000000000000LL, 2, 1, json_pack("{s:f}", "loss/total", 0.25));
  CHECK_INT(0, db_flush(db));
  CHECK_INT(1000000000000LL, db_next_step(db, id, 2));
  CHECK_INT(2, db_next_step(db, id, 1));
  CHECK_INT(-ENOENT, db_next_step(db, id, 1000000000000LL));
}

static void test_reopen_keeps_everything(void) {
  db_t *db = NULL;
  char error[256];
  CHECK_INT(0, db_open(path, &db, error, sizeof error));
  CHECK_INT(2, db_count_status(db, DB_SUCCEEDED));
  db_close(db);
}

/* A database of schema version 1 (experiments without planned_epochs and planned_stages)
 * is brought to version 2 on open, the plan filled in from each stored config. */
static void test_migration_from_version_1(void) {
  char old_path[300];
  snprintf(old_path, sizeof old_path, "%s/version-1.db", directory);
  sqlite3 *sql = NULL;
  CHECK_INT(SQLITE_OK, sqlite3_open(old_path, &sql));
  CHECK_INT(SQLITE_OK,
            sqlite3_exec(sql,
                         "CREATE TABLE experiments (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', "
                         "status TEXT NOT NULL DEFAULT 'queued', priority INTEGER NOT NULL DEFAULT 0, "
                         "teacher_id INTEGER REFERENCES experiments (id), config TEXT NOT NULL, "
                         "created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), "
                         "started_at TEXT, finished_at TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
                         "crashes INTEGER NOT NULL DEFAULT 0, error TEXT, worker TEXT, summary TEXT, "
                         "epoch INTEGER, step INTEGER, stage INTEGER);"
                         "INSERT INTO experiments (name, config) VALUES "
                         "('old', '{\"stages\":[{\"name\":\"a\",\"epochs\":3},{\"name\":\"b\",\"epochs\":4}]}');"
                         "PRAGMA user_version = 1;",
                         NULL, NULL, NULL));
  sqlite3_close(sql);
  db_t *db = NULL;
  char error[256];
  CHECK_INT(0, db_open(old_path, &db, error, sizeof error));
  if (db == NULL) {
    fprintf(stderr, "  migration: %s\n", error);
    return;
  }
  json_t *experiment = db_experiment_get(db, 1, 1);
  json_t *progress = json_object_get(experiment, "progress");
  CHECK_INT(7, json_integer_value(json_object_get(progress, "epochs")));
  CHECK_INT(2, json_integer_value(json_object_get(progress, "stages")));
  CHECK_STR("old", json_string_value(json_object_get(experiment, "name")));
  json_decref(experiment);
  /* And one submitted now gets its plan at insert. */
  int64_t id;
  CHECK_INT(0, db_experiment_insert(db, "new", 0, 0, "{\"stages\":[{\"name\":\"x\",\"epochs\":5}]}", &id));
  experiment = db_experiment_get(db, id, 0);
  CHECK_INT(5, json_integer_value(json_object_get(json_object_get(experiment, "progress"), "epochs")));
  CHECK_INT(1, json_integer_value(json_object_get(json_object_get(experiment, "progress"), "stages")));
  json_decref(experiment);
  db_close(db);
}

int main(void) {
  if (mkdtemp(directory) == NULL) return 1;
  snprintf(path, sizeof path, "%s/test.db", directory);
  db_t *db = NULL;
  char error[256];
  CHECK_INT(0, db_open(path, &db, error, sizeof error));
  if (db == NULL) {
    fprintf(stderr, "%s\n", error);
    return 1;
  }
  test_life_cycle(db);
  test_batch_and_curves(db);
  test_large_flush(db);
  test_details_follow_writes(db);
  test_checkpoint_keep_rows(db);
  test_teachers_and_checkpoints(db);
  test_stage_replay(db);
  db_close(db);
  test_reopen_keeps_everything();
  test_migration_from_version_1();
  char command[512];
  snprintf(command, sizeof command, "rm -rf %s", directory);
  if (system(command) != 0) fprintf(stderr, "could not remove %s\n", directory);
  return check_summary();
}
