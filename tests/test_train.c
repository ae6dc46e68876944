/* test_train.c — checks worker/train.c on the synthetic dataset: a small MLP learns it, the
 * events it writes are well-formed and complete (steps 1..N, one eval per split per epoch,
 * in order), stages switch lr and weights, the stop flag stops, and two runs of the same
 * config are bit-identical. Each run takes a fraction of a second. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "check.h"
#include "config.h"
#include "data.h"
#include "event.h"
#include "nn.h"
#include "train.h"

/* One finished run: what train_run returned, every event line, the final parameters. */
typedef struct {
  int rc;
  char error[512];
  train_summary_t summary;
  char *text;      /* all event lines */
  char **lines;    /* pointers into text, newline replaced by NUL */
  int n_lines;
  float *params;   /* after training */
  float *initial;  /* before */
  size_t n_params;
} run_t;

static void run_free(run_t *run) {
  free(run->text);
  free(run->lines);
  free(run->params);
  free(run->initial);
  memset(run, 0, sizeof *run);
}

/* Parses `json`, loads its dataset, trains with events to a tmpfile() and keeps it all. */
static int run_config(const char *json, volatile sig_atomic_t *stop, run_t *run) {
  memset(run, 0, sizeof *run);
  cfg_experiment_t config;
  cfg_errors_t errors;
  if (cfg_parse(json, strlen(json), &config, &errors) != 0) {
    fprintf(stderr, "config rejected: %s: %s\n", errors.items[0].path, errors.items[0].message);
    return -1;
  }
  data_set_t data;
  if (data_load(&data, &config, NULL, run->error, sizeof run->error) != 0) {
    fprintf(stderr, "dataset: %s\n", run->error);
    return -1;
  }
  nn_model_t model;
  if (nn_model_create(&model, &config, config.batch_size) != 0) {
    data_free(&data);
    return -1;
  }
  run->n_params = model.n_params;
  run->initial = malloc(model.n_params * sizeof(float));
  memcpy(run->initial, model.params, model.n_params * sizeof(float));

  FILE *events = tmpfile();
  train_options_t options = {.events = events, .log = NULL, .stop = stop};
  run->rc = train_run(&model, &config, &data, &options, &run->summary, run->error, sizeof run->error);

  run->params = malloc(model.n_params * sizeof(float));
  memcpy(run->params, model.params, model.n_params * sizeof(float));
  long size = ftell(events);
  rewind(events);
  run->text = malloc((size_t)size + 1);
  size_t got = fread(run->text, 1, (size_t)size, events);
  run->text[got] = '\0';
  fclose(events);
  int capacity = 16;
  run->lines = malloc((size_t)capacity * sizeof *run->lines);
  for (char *line = run->text, *end; *line; line = end + 1) {
    end = strchr(line, '\n');
    if (!end) break;
    *end = '\0';
    if (run->n_lines == capacity) {
      capacity *= 2;
      run->lines = realloc(run->lines, (size_t)capacity * sizeof *run->lines);
    }
    run->lines[run->n_lines++] = line;
  }
  nn_model_free(&model);
  data_free(&data);
  return 0;
}

static double value_of(const ev_t *event, const char *name) {
  json_t *value = json_object_get(event->values, name);
  return value ? json_number_value(value) : NAN;
}

/* ---------------------------------------------------------------------------------------
 * a whole run */

/* 2048 generated examples, 256 held out: 1792 for training, so batches of 50 make 35 full
 * batches and one of 42 per epoch. */
static const char *const small_run =
    "{\"name\": \"small\", \"seed\": 3, \"dataset\": {\"name\": \"synthetic\"},"
    " \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 32, \"name\": \"hidden\"},"
    "                          {\"type\": \"relu\"}, {\"type\": \"linear\", \"out\": 10}]},"
    " \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.05, \"momentum\": 0.9, \"weight_decay\": 5e-4},"
    " \"batch_size\": 50, \"epochs\": 2}";
enum { SMALL_STEPS_PER_EPOCH = 36, SMALL_EPOCHS = 2 };

static void test_small_run(run_t *run) {
  printf("synthetic, 784-32-relu-10, 2 epochs\n");
  CHECK_INT(0, run_config(small_run, NULL, run));
  CHECK_INT(0, run->rc);
  if (run->rc) fprintf(stderr, "train_run: %s\n", run->error);
  const train_summary_t *s = &run->summary;
  printf("  test accuracy %.4f, loss %.4f; best val %.4f at epoch %d; %lld steps, %.3f s, %.0f examples/s\n",
         s->final_test_accuracy, s->final_test_loss, s->best_val_accuracy, s->best_val_epoch,
         (long long)s->steps, s->seconds, s->examples_per_s);
  CHECK(!s->stopped);
  CHECK_INT(SMALL_EPOCHS, s->epochs);
  CHECK_INT(SMALL_EPOCHS * SMALL_STEPS_PER_EPOCH, s->steps);
  CHECK(s->evaluated);
  CHECK(s->final_test_accuracy >= 0.9);
  CHECK(s->best_val_accuracy >= 0.9);
  CHECK(s->best_val_epoch >= 1 && s->best_val_epoch <= SMALL_EPOCHS);
  CHECK(s->seconds > 0.0 && s->examples_per_s > 0.0);

  /* Every line is an event the daemon accepts: metrics for steps 1..N in order, and after
   * each epoch's last step exactly train, val, test. */
  int metrics = 0, evals = 0, parsed = 0;
  int64_t expected_step = 1;
  int expected_split = 0;
  double first_losses = 0.0, last_losses = 0.0, train_loss[SMALL_EPOCHS + 1] = {0};
  double last_test_accuracy = -1.0;
  int values_ok = 1, lr_ok = 1, epoch_ok = 1, eval_ok = 1, speed_ok = 1;
  for (int i = 0; i < run->n_lines; i++) {
    ev_t event;
    char error[256];
    if (ev_parse(run->lines[i], strlen(run->lines[i]), &event, error, sizeof error) != 0) {
      fprintf(stderr, "  line %d does not parse (%s): %s\n", i + 1, error, run->lines[i]);
      continue;
    }
    parsed++;
    if (event.type == EV_METRIC) {
      metrics++;
      CHECK_INT(expected_step, event.step);
      expected_step = event.step + 1;
      epoch_ok &= event.epoch == (event.step - 1) / SMALL_STEPS_PER_EPOCH + 1 && event.stage == 0;
      epoch_ok &= expected_split == 0; /* no metric in the middle of an epoch's evals */
      /* Five values, and on step 1 and every 50th (grad_norm_every's default) the gradient
       * norm of each layer with parameters and their total. */
      int norms = event.step == 1 || event.step % 50 == 0;
      values_ok &= json_object_size(event.values) == (norms ? 8u : 5u);
      if (norms) {
        double hidden = value_of(&event, "grad_norm/hidden"), out = value_of(&event, "grad_norm/linear1");
        values_ok &= hidden > 0.0 && out > 0.0;
        values_ok &= fabs(value_of(&event, "grad_norm/total") - sqrt(hidden * hidden + out * out)) <= 1e-6 * hidden;
      }
      double task = value_of(&event, "loss/task");
      values_ok &= task > 0.0 && value_of(&event, "loss/total") == task &&
                   value_of(&event, "weighted/task") == task;
      lr_ok &= value_of(&event, "lr") == 0.05;
      speed_ok &= value_of(&event, "examples_per_s") > 0.0;
      if (event.step <= 5) first_losses += task / 5;
      if (event.step > SMALL_EPOCHS * SMALL_STEPS_PER_EPOCH - 5) last_losses += task / 5;
    } else if (event.type == EV_EVAL) {
      evals++;
      eval_ok &= (int)event.split == expected_split;
      expected_split = (expected_split + 1) % 3;
      eval_ok &= event.step == event.epoch * SMALL_STEPS_PER_EPOCH && event.stage == 0;
      eval_ok &= event.step == expected_step - 1; /* right after the epoch's last step */
      double accuracy = value_of(&event, "accuracy"), loss = value_of(&event, "loss");
      eval_ok &= accuracy >= 0.0 && accuracy <= 1.0 && loss >= 0.0;
      if (event.split == EV_SPLIT_TRAIN && event.epoch <= SMALL_EPOCHS) train_loss[event.epoch] = loss;
      if (event.split == EV_SPLIT_TEST) last_test_accuracy = accuracy;
    } else {
      CHECK(0); /* train_run writes only metrics and evals */
    }
    ev_release(&event);
  }
  CHECK_INT(run->n_lines, parsed);
  CHECK_INT(SMALL_EPOCHS * SMALL_STEPS_PER_EPOCH, metrics);
  CHECK_INT(SMALL_EPOCHS * 3, evals);
  CHECK_INT(0, expected_split);
  CHECK(values_ok);
  CHECK(lr_ok);
  CHECK(epoch_ok);
  CHECK(eval_ok);
  CHECK(speed_ok);
  CHECK_NEAR(s->final_test_accuracy, last_test_accuracy, 1e-8);

  /* The loss falls: over the run, and from the first epoch to the second. */
  printf("  loss: first 5 steps %.4f, last 5 steps %.4f; train epoch 1 %.4f, epoch 2 %.4f\n",
         first_losses, last_losses, train_loss[1], train_loss[2]);
  CHECK(last_losses < 0.25 * first_losses);
  CHECK(train_loss[2] < train_loss[1]);
  CHECK_NEAR(s->final_train_loss, train_loss[2], 1e-8);
}

/* The metric line without its examples_per_s (the only value that depends on the clock). */
static char *metric_without_speed(const char *line) {
  json_error_t error;
  json_t *root = json_loads(line, 0, &error);
  if (!root) return NULL;
  json_object_del(json_object_get(root, "values"), "examples_per_s");
  char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
  json_decref(root);
  return text;
}

static void test_determinism(const run_t *first) {
  printf("determinism: the same run again\n");
  run_t second;
  CHECK_INT(0, run_config(small_run, NULL, &second));
  CHECK_INT(first->n_lines, second.n_lines);
  int identical = 1, compared = 0;
  for (int i = 0; i < first->n_lines && i < second.n_lines; i++) {
    if (strstr(first->lines[i], "\"event\":\"metric\"")) {
      char *a = metric_without_speed(first->lines[i]), *b = metric_without_speed(second.lines[i]);
      identical &= a && b && strcmp(a, b) == 0;
      free(a);
      free(b);
    } else {
      identical &= strcmp(first->lines[i], second.lines[i]) == 0;
    }
    compared++;
  }
  printf("  %d lines compared, %s; parameters %s\n", compared, identical ? "identical" : "DIFFERENT",
         memcmp(first->params, second.params, first->n_params * sizeof(float)) == 0 ? "identical"
                                                                                  : "DIFFERENT");
  CHECK(compared > 0);
  CHECK(identical);
  CHECK(memcmp(first->params, second.params, first->n_params * sizeof(float)) == 0);
  CHECK(memcmp(first->params, first->initial, first->n_params * sizeof(float)) != 0);
  run_free(&second);

  /* Another seed gives another curve. */
  char *other = strdup(small_run);
  memcpy(strstr(other, "\"seed\": 3"), "\"seed\": 4", 9);
  run_t third;
  CHECK_INT(0, run_config(other, NULL, &third));
  CHECK(memcmp(first->params, third.params, first->n_params * sizeof(float)) != 0);
  CHECK(strcmp(first->lines[0], third.lines[0]) != 0);
  run_free(&third);
  free(other);
}

/* ---------------------------------------------------------------------------------------
 * stages, task weight, stop, divergence, adam */

static void test_stages(void) {
  printf("two stages\n");
  /* 200 training examples in batches of 64: 64, 64, 64, 8 — four steps per epoch. */
  const char *json =
      "{\"seed\": 5, \"dataset\": {\"name\": \"synthetic\", \"train_limit\": 200},"
      " \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 16}, {\"type\": \"relu\"},"
      "                          {\"type\": \"linear\", \"out\": 10}]},"
      " \"batch_size\": 64,"
      " \"stages\": [{\"name\": \"warm\", \"epochs\": 1, \"lr\": 0.1},"
      "              {\"name\": \"half\", \"epochs\": 2, \"task_weight\": 0.5, \"lr\": 0.02}]}";
  run_t run;
  CHECK_INT(0, run_config(json, NULL, &run));
  CHECK_INT(0, run.rc);
  CHECK_INT(12, run.summary.steps);
  CHECK_INT(3, run.summary.epochs);
  int metrics = 0, evals = 0, ok = 1;
  for (int i = 0; i < run.n_lines; i++) {
    ev_t event;
    char error[256];
    if (ev_parse(run.lines[i], strlen(run.lines[i]), &event, error, sizeof error) != 0) {
      ok = 0;
      continue;
    }
    int64_t stage = event.epoch == 1 ? 0 : 1;
    ok &= event.stage == stage;
    if (event.type == EV_METRIC) {
      metrics++;
      ok &= event.epoch == (event.step - 1) / 4 + 1;
      double task = value_of(&event, "loss/task"), weighted = value_of(&event, "weighted/task");
      double weight = stage == 0 ? 1.0 : 0.5;
      ok &= fabs(weighted - weight * task) <= 1e-6 * task;
      ok &= value_of(&event, "loss/total") == weighted;
      ok &= value_of(&event, "lr") == (stage == 0 ? 0.1 : 0.02);
    } else if (event.type == EV_EVAL) {
      evals++;
      ok &= event.step == event.epoch * 4;
    }
    ev_release(&event);
  }
  CHECK_INT(12, metrics);
  CHECK_INT(9, evals);
  CHECK(ok);
  run_free(&run);
}

static void test_zero_task_weight(void) {
  printf("task_weight 0 and no weight decay: nothing moves\n");
  const char *json =
      "{\"seed\": 6, \"dataset\": {\"name\": \"synthetic\", \"train_limit\": 100},"
      " \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 8}, {\"type\": \"relu\"},"
      "                          {\"type\": \"linear\", \"out\": 10}]},"
      " \"batch_size\": 32, \"stages\": [{\"epochs\": 1, \"task_weight\": 0}]}";
  run_t run;
  CHECK_INT(0, run_config(json, NULL, &run));
  CHECK_INT(0, run.rc);
  CHECK_INT(4, run.summary.steps);
  CHECK(memcmp(run.params, run.initial, run.n_params * sizeof(float)) == 0);
  ev_t event;
  char error[256];
  CHECK_INT(0, ev_parse(run.lines[0], strlen(run.lines[0]), &event, error, sizeof error));
  CHECK(value_of(&event, "loss/task") > 1.0);
  CHECK(value_of(&event, "loss/total") == 0.0);
  ev_release(&event);
  run_free(&run);
}

static void test_stop(void) {
  printf("stop flag\n");
  volatile sig_atomic_t stop = 15;
  run_t run;
  CHECK_INT(0, run_config(small_run, &stop, &run));
  CHECK_INT(0, run.rc);
  CHECK(run.summary.stopped);
  CHECK_INT(0, run.summary.steps);
  CHECK_INT(0, run.summary.epochs);
  CHECK(!run.summary.evaluated);
  CHECK_INT(0, run.n_lines);
  json_t *summary = train_summary_to_json(&run.summary);
  CHECK(json_object_get(summary, "final_test_accuracy") == NULL);
  CHECK_INT(0, json_integer_value(json_object_get(summary, "steps")));
  json_decref(summary);
  run_free(&run);
}

static void test_divergence(void) {
  printf("divergence\n");
  /* An absurd learning rate with heavy momentum blows the logits up within an epoch. */
  const char *json =
      "{\"seed\": 7, \"dataset\": {\"name\": \"synthetic\"},"
      " \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 64}, {\"type\": \"relu\"},"
      "                          {\"type\": \"linear\", \"out\": 64}, {\"type\": \"relu\"},"
      "                          {\"type\": \"linear\", \"out\": 10}]},"
      " \"optimizer\": {\"type\": \"sgd\", \"lr\": 10, \"momentum\": 0.99}, \"batch_size\": 32,"
      " \"epochs\": 3}";
  run_t run;
  CHECK_INT(0, run_config(json, NULL, &run));
  printf("  -> %d: %s\n", run.rc, run.error);
  CHECK_INT(-ERANGE, run.rc);
  CHECK(strstr(run.error, "diverged") != NULL);
  /* Every line written before the failure is still a valid event. */
  int valid = 1;
  for (int i = 0; i < run.n_lines; i++) {
    ev_t event;
    char error[256];
    valid &= ev_parse(run.lines[i], strlen(run.lines[i]), &event, error, sizeof error) == 0;
    if (valid) ev_release(&event);
  }
  CHECK(valid);
  run_free(&run);
}

static void test_adam_run(void) {
  printf("adam, 1 epoch\n");
  const char *json =
      "{\"seed\": 8, \"dataset\": {\"name\": \"synthetic\"},"
      " \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 32}, {\"type\": \"relu\"},"
      "                          {\"type\": \"linear\", \"out\": 10}]},"
      " \"optimizer\": {\"type\": \"adam\", \"lr\": 0.003, \"weight_decay\": 1e-4},"
      " \"batch_size\": 32, \"epochs\": 1}";
  run_t run;
  CHECK_INT(0, run_config(json, NULL, &run));
  CHECK_INT(0, run.rc);
  printf("  test accuracy %.4f\n", run.summary.final_test_accuracy);
  CHECK(run.summary.final_test_accuracy >= 0.9);
  run_free(&run);
}

/* The learning rate of each step is the stage's lr times the schedule's factor at the
 * step's fractional epoch, and grad_norm_every sets where the gradient norms are. */
static void test_lr_schedule(void) {
  printf("lr schedule: cosine with a one-epoch warm-up over two stages; grad norms every 3 steps\n");
  /* 200 examples in batches of 64: starts 0, 64, 128, 192 — four steps per epoch. */
  const char *json =
      "{\"seed\": 9, \"dataset\": {\"name\": \"synthetic\", \"train_limit\": 200},"
      " \"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 16, \"name\": \"fc1\"}, {\"type\": \"relu\"},"
      "                          {\"type\": \"linear\", \"out\": 10}]},"
      " \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1, \"schedule\": {\"type\": \"cosine\", \"warmup_epochs\": 1,"
      "                \"min_lr\": 0.1}},"
      " \"batch_size\": 64, \"grad_norm_every\": 3,"
      " \"stages\": [{\"epochs\": 2}, {\"epochs\": 1, \"lr\": 0.05}]}";
  cfg_experiment_t config;
  cfg_errors_t errors;
  CHECK_INT(0, cfg_parse(json, strlen(json), &config, &errors));
  run_t run;
  CHECK_INT(0, run_config(json, NULL, &run));
  CHECK_INT(0, run.rc);
  CHECK_INT(12, run.summary.steps);
  static const int starts[4] = {0, 64, 128, 192};
  int metrics = 0, lr_ok = 1, norms_ok = 1;
  for (int i = 0; i < run.n_lines; i++) {
    ev_t event;
    char error[256];
    if (ev_parse(run.lines[i], strlen(run.lines[i]), &event, error, sizeof error) != 0) continue;
    if (event.type == EV_METRIC) {
      metrics++;
      double position = (double)(event.epoch - 1) + starts[(event.step - 1) % 4] / 200.0;
      double expected = (event.epoch <= 2 ? 0.1 : 0.05) * cfg_lr_factor_at(&config, position);
      if (fabs(value_of(&event, "lr") - expected) > 1e-8 * expected) { /* events keep 9 digits */
        fprintf(stderr, "  step %lld: lr %.9g, expected %.9g\n", (long long)event.step, value_of(&event, "lr"), expected);
        lr_ok = 0;
      }
      int norms = event.step == 1 || event.step % 3 == 0;
      norms_ok &= (!isnan(value_of(&event, "grad_norm/fc1"))) == norms;
      norms_ok &= (!isnan(value_of(&event, "grad_norm/linear1"))) == norms;
      norms_ok &= (!isnan(value_of(&event, "grad_norm/total"))) == norms;
      norms_ok &= isnan(value_of(&event, "grad_norm/relu0")); /* no parameters, no norm */
      if (event.step == 1) lr_ok &= value_of(&event, "lr") == 0.0;  /* the warm-up starts at 0 */
      /* Worked by hand: epoch 2 starts a third into the run, 0.1 + 0.9 · (1 + cos(π/3)) / 2;
       * the second stage's own lr at two thirds, 0.05 · (0.1 + 0.9 · (1 + cos(2π/3)) / 2). */
      if (event.step == 5) lr_ok &= fabs(value_of(&event, "lr") - 0.0775) < 1e-9;
      if (event.step == 9) lr_ok &= fabs(value_of(&event, "lr") - 0.01625) < 1e-9;
    }
    ev_release(&event);
  }
  CHECK_INT(12, metrics);
  CHECK(lr_ok);
  CHECK(norms_ok);
  run_free(&run);
}

static void test_summary_json(const run_t *run) {
  json_t *summary = train_summary_to_json(&run->summary);
  static const char *const keys[] = {"final_test_accuracy", "final_test_loss", "best_val_accuracy",
                                     "best_val_epoch", "final_train_loss", "epochs", "steps",
                                     "seconds", "examples_per_s"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    if (!json_object_get(summary, keys[i])) fprintf(stderr, "  summary lacks %s\n", keys[i]);
    CHECK(json_object_get(summary, keys[i]) != NULL);
  }
  CHECK_INT(SMALL_EPOCHS * SMALL_STEPS_PER_EPOCH, json_integer_value(json_object_get(summary, "steps")));
  json_decref(summary);
}

int main(void) {
  openblas_set_num_threads(1); /* determinism is per thread count; one keeps the test cheap */
  run_t run;
  test_small_run(&run);
  test_summary_json(&run);
  test_determinism(&run);
  run_free(&run);
  test_stages();
  test_zero_task_weight();
  test_stop();
  test_divergence();
  test_adam_run();
  test_lr_schedule();
  return check_summary();
}
