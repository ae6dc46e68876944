/* train.c — the training loop: stages → epochs → mini-batches, with an event per step, per
 * evaluation, per stage start, per grown block and per checkpoint.
 *
 * Before the first step of a distillation run: the teacher's reference figures (an eval
 * event), then its cache (teacher.h: what it says about the training split and the test
 * split's logits, computed once when they fit the budget; a log event says what it cost).
 *
 * A step (distill.h has the call sequence in full, distiller.h the part it drives):
 *   gather the batch's examples by the epoch's shuffled order;
 *   the teacher's outputs for them, if a term of this stage needs the teacher (gathered
 *   from the cache when it holds the split);
 *   student forward (dropout on), task loss, the distillation terms the stage weighs
 *   (KD, feature pairs, the discriminator's own update and the generator loss);
 *   total = Σ weight · term — not finite: the run diverged, stop before any event has it;
 *   zero the gradients, every term's backward, student backward, optimizer updates (student,
 *   then adapters and gates) at the scheduled learning rate (stage lr × the schedule's factor
 *   at the step's fractional epoch; the temperature likewise), then report, with the gradient
 *   norm of every layer on step 1 and every grad_norm_every steps — and on those steps, with
 *   a teacher, each term's own gradient first (train_term_gradients: one backward per term
 *   before the step's own).
 * After each epoch: train (running figures of the epoch), val, test (with per-class accuracy
 * and, with a teacher, top-1 agreement) evals, then a checkpoint when one is due. Every
 * buffer is allocated before the first step.
 *
 * Resuming. A checkpoint is taken after an epoch's evaluations and holds everything a step
 * reads that earlier steps wrote: parameters and optimizer state (student, adapters, gates,
 * discriminator), the step counts (the student's, each block's, each pair's, the
 * discriminator's) and which blocks have joined. Shuffles are seeded by the epoch and
 * dropout masks by the step, so the epochs after a resume are the ones an uninterrupted run
 * would have done, bit for bit, and their events (all of them after the checkpoint's step)
 * replace those of the interrupted attempt key for key. A stop (the daemon shutting down)
 * also writes one, mid-epoch: it adds where the epoch's order had got to and the epoch's
 * running sums, and the resumed attempt finishes that epoch from there, as bit-exact.
 *
 * What a checkpoint holds (checkpoint.h is the container):
 *   meta     config (cfg_to_json of the run's config: what a teacher loader builds, what a
 *            resume compares, teacher.checkpoint aside), epoch (completed), step, optimizer_t,
 *            blocks [{name, active, t}], distill {pair_t [..], disc_steps}, summary {the
 *            figures of the `finished` event so far}, and for a stop inside an epoch
 *            partial {epoch (the one interrupted), start, loss, correct}
 *   tensors  params, optim_state (the student's slabs as nn.h lays them out), distill_params,
 *            distill_m, distill_v (distiller.h's slabs: adapters and gates, then the
 *            discriminator), every one required at exactly the size the config gives it. */
#include "train.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "event.h"
#include "rng.h"
#include "util.h"


static const char *train__nonfinite_word(double x) { return isnan(x) ? "nan" : "inf"; }

// ---------------------------------------------------------------------------------------
// evaluation

typedef struct {
  double accuracy, loss;
  int64_t correct[CFG_MAX_CLASSES], count[CFG_MAX_CLASSES];
  int agreement_known;       /* with a teacher */
  double agreement;          /* top-1 teacher–student agreement */
} train__eval_t;

/* Accuracy, loss, per-class accuracy and (with_teacher) agreement of the student on `split`,
 * forward only (no dropout), in batches of eval_batch. */
static void train__evaluate_split(train_t *t, const data_split_t *split, int with_teacher,
                                  int eval_batch, train__eval_t *out) {
  memset(out, 0, sizeof *out);
  double total = 0.0;
  int64_t correct = 0, agree = 0;
  for (int start = 0; start < split->n; start += eval_batch) {
    const int B = split->n - start < eval_batch ? split->n - start : eval_batch;
    const int *labels = split->labels + start;
    const float *inputs = split->images + (size_t)start * t->model->inputs;
    const float *logits = nn_forward(t->model, inputs, B, 0);
    total += (double)loss_crossentropy_forward(t->probs, t->predictions, logits, labels, B,
                                               t->model->classes) * B;
    for (int b = 0; b < B; b++) {
      out->count[labels[b]]++;
      out->correct[labels[b]] += t->predictions[b] == labels[b];
      correct += t->predictions[b] == labels[b];
    }
    if (with_teacher) {
      teacher_outputs_t teacher;
      for (int b = 0; b < B; b++) t->indices[b] = start + b;
      teacher_outputs(t->teacher, split, t->indices, inputs, B, &teacher);
      agree += kd_agreement(logits, teacher.logits, B, t->model->classes);
    }
  }
  const int n = split->n > 0 ? split->n : 1;
  out->accuracy = (double)correct / n;
  out->loss = total / n;
  out->agreement_known = with_teacher;
  out->agreement = (double)agree / n;
}

// ---------------------------------------------------------------------------------------
// events

/* The values of a metric or eval event, set one by one. JSON has no NaN or infinity (and
 * json_real refuses them), so a value that is not finite is not stored but remembered: the
 * first such name is what a diverged run reports, and no event ever carries it. */
typedef struct {
  json_t *json;
  char bad[EV_NAME_MAX];
  double bad_value;
} train__values_t;

static void train__values_init(train__values_t *values) {
  values->json = json_object();
  values->bad[0] = '\0';
  values->bad_value = 0.0;
}

static void train__set(train__values_t *values, const char *name, double value) {
  if (isfinite(value)) {
    json_object_set_new(values->json, name, json_real(value));
  } else if (!values->bad[0]) {
    snprintf(values->bad, sizeof values->bad, "%s", name);
    values->bad_value = value;
  }
}

/* Writes an eval event of `values` (releasing them), unless one is not finite. */
static int train__write_eval(train_t *t, int epoch, int stage, ev_split_t split,
                             train__values_t *values, char *error, size_t error_size) {
  if (values->bad[0]) {
    json_decref(values->json);
    return util_error(error, error_size, -ERANGE, "diverged at step %lld: %s/%s is %s",
                        (long long)t->step, ev_split_name(split), values->bad,
                        train__nonfinite_word(values->bad_value));
  }
  if (ev_write_eval(t->options.events, t->step, epoch, stage, split, values->json) == 0) return 0;
  return util_error(error, error_size, -EIO, "cannot write the %s eval event of epoch %d",
                      ev_split_name(split), epoch);
}

/* grad_norm/<layer> for every layer with parameters that takes part (the config's layers
 * and the blocks that have joined), named as the config names them, and grad_norm/total over
 * them; then grad_norm/adapter/<pair> and grad_norm/gate/<pair> for the pairs that ran. One
 * pass over the gradient slabs: cheap next to the step that filled them. */
static void train__add_grad_norms(train__values_t *values, const train_t *t, const distiller_terms_t *terms) {
  const nn_model_t *model = t->model;
  double total = 0.0;
  char name[EV_NAME_MAX];
  for (int l = 0; l < model->n_layers + model->n_blocks; l++) {
    const nn_layer_t *layer = &model->layers[l];
    if (nn_layer_param_count(layer) == 0 || !nn_layer_active(layer)) continue;
    double norm = nn_layer_grad_norm(model, l);
    total += norm * norm;
    snprintf(name, sizeof name, "grad_norm/%s", layer->name);
    train__set(values, name, norm);
  }
  train__set(values, "grad_norm/total", sqrt(total));
  const distiller_t *d = &t->distiller;
  for (int i = 0; i < d->n_pairs; i++) {
    if (!terms->ran[i]) continue;
    snprintf(name, sizeof name, "grad_norm/adapter/%s", d->labels[i]);
    train__set(values, name, distiller_adapter_grad_norm(d, i));
    if (distiller_gate_params(d, i)) {
      snprintf(name, sizeof name, "grad_norm/gate/%s", d->labels[i]);
      train__set(values, name, distiller_gate_grad_norm(d, i));
    }
  }
}

static double train__dot(const float *a, const float *b, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) sum += (double)a[i] * b[i];
  return sum;
}

void train_term_gradients(train_t *t, const teacher_outputs_t *teacher, const distiller_weights_t *w,
                          const distiller_terms_t *terms, const float *logits, float T, int B,
                          train_term_grads_t *out) {
  nn_model_t *model = t->model;
  distiller_t *d = &t->distiller;
  const size_t n = model->n_params;
  memset(out, 0, sizeof *out);
  const int probe = !terms->distill && t->probe_distill && teacher && teacher->logits;
  const int computed[DISTILLER_TERMS] = {1, terms->distill || probe, terms->feature, terms->adversarial};
  if (probe) distiller_kd_probe(d, teacher, logits, T, B);
  for (int k = 0; k < DISTILLER_TERMS; k++) {
    if (!computed[k] || !t->term_grads[k]) continue;
    nn_zero_grad(model);
    if (k == DISTILLER_TERM_TASK)
      loss_crossentropy_backward(nn_dlogits(model), t->probs, t->labels, 1.0f, B, t->model->classes);
    else
      distiller_backward_term(d, model, teacher, (distiller_term_t)k, terms, T, B);
    nn_backward(model, t->inputs, B);
    memcpy(t->term_grads[k], model->grads, n * sizeof(float));
    out->computed[k] = 1;
    out->norm[k] = sqrt(train__dot(model->grads, model->grads, n));
  }
  const float weights[DISTILLER_TERMS] = {w->task, w->distill, w->feature, w->adversarial};
  double weighted = 0.0;
  for (int k = 0; k < DISTILLER_TERMS; k++)
    if (out->computed[k]) weighted += weights[k] * out->norm[k];
  out->share_known = weighted > 0.0;
  for (int k = 0; k < DISTILLER_TERMS && out->share_known; k++)
    if (out->computed[k]) out->share[k] = weights[k] * out->norm[k] / weighted;
  const double task = out->norm[DISTILLER_TERM_TASK];
  for (int k = DISTILLER_TERM_TASK + 1; k < DISTILLER_TERMS; k++) {
    if (!out->computed[k] || !out->computed[DISTILLER_TERM_TASK] || task == 0.0 || out->norm[k] == 0.0) continue;
    const double cosine = train__dot(t->term_grads[DISTILLER_TERM_TASK], t->term_grads[k], n) / (task * out->norm[k]);
    out->cosine[k] = cosine > 1.0 ? 1.0 : cosine < -1.0 ? -1.0 : cosine; /* rounding only */
    out->cosine_known[k] = 1;
  }
}

/* grad_norm_term/<term>, grad_share/<term> and grad_cos/task_<term> (the contract with the
 * dashboard and users' SQL: the names are fixed). */
static void train__add_term_grads(train__values_t *values, const train_term_grads_t *g) {
  char name[EV_NAME_MAX];
  for (int k = 0; k < DISTILLER_TERMS; k++) {
    if (!g->computed[k]) continue;
    const char *term = distiller_term_name((distiller_term_t)k);
    snprintf(name, sizeof name, "grad_norm_term/%s", term);
    train__set(values, name, g->norm[k]);
    if (g->share_known) {
      snprintf(name, sizeof name, "grad_share/%s", term);
      train__set(values, name, g->share[k]);
    }
    if (g->cosine_known[k]) {
      snprintf(name, sizeof name, "grad_cos/task_%s", term);
      train__set(values, name, g->cosine[k]);
    }
  }
}

/* The distillation terms' metrics (the contract with the dashboard, docs/design.md): each
 * computed term raw and weighted, the gate's diagnostics when a pair has a gate, the
 * per-pair MSE when there are several pairs, the discriminator's figures. */
static void train__add_terms(train__values_t *values, const train_t *t, const cfg_stage_t *stage,
                             const distiller_terms_t *terms) {
  const distiller_t *d = &t->distiller;
  if (terms->distill) {
    train__set(values, "loss/distill", terms->kd);
    train__set(values, "weighted/distill", stage->distill_weight * terms->kd);
  }
  if (terms->feature) {
    train__set(values, "loss/feature", terms->feature_loss);
    train__set(values, "weighted/feature", stage->feature_weight * terms->feature_loss);
  }
  if (terms->adversarial) {
    train__set(values, "loss/adversarial", terms->adversarial_loss);
    train__set(values, "weighted/adversarial", stage->adversarial_weight * terms->adversarial_loss);
    train__set(values, "disc/loss", terms->disc.loss);
    train__set(values, "disc/accuracy", terms->disc.accuracy);
  }
  /* Gate diagnostics over the gated pairs that ran (one, usually): mean of the means, of the
   * effective fractions and of the gates' own losses and accuracies, extremes of the weights;
   * the ungated MSE over every pair that ran, the figure that shows whether a gate hides a
   * growing error. */
  int gated = 0, ran = 0;
  double mean = 0.0, fraction = 0.0, low = INFINITY, high = -INFINITY, mse = 0.0;
  double gate_loss = 0.0, gate_accuracy = 0.0;
  for (int i = 0; i < d->n_pairs; i++) {
    if (!terms->ran[i]) continue;
    ran++;
    mse += terms->pairs[i].mse;
    if (d->pairs[i].gate == CFG_GATE_NONE) continue;
    const gate_stats_t *g = &terms->pairs[i].gate;
    gated++;
    mean += g->mean;
    fraction += g->effective_fraction;
    gate_loss += g->loss;
    gate_accuracy += g->accuracy;
    low = fmin(low, g->weight_min);
    high = fmax(high, g->weight_max);
  }
  if (gated) {
    train__set(values, "gate/mean", mean / gated);
    train__set(values, "gate/weight_min", low);
    train__set(values, "gate/weight_max", high);
    train__set(values, "gate/effective_fraction", fraction / gated);
    train__set(values, "gate/loss", gate_loss / gated);
    train__set(values, "gate/accuracy", gate_accuracy / gated);
    train__set(values, "feature/ungated_mse", mse / ran);
  }
  if (d->n_pairs > 1) {
    char name[EV_NAME_MAX];
    for (int i = 0; i < d->n_pairs; i++) {
      if (!terms->ran[i]) continue;
      snprintf(name, sizeof name, "feature/%s/mse", d->labels[i]);
      train__set(values, name, terms->pairs[i].mse);
    }
  }
}

/* "30.4 MB" or "5.5 GB" (MiB, GiB: what MAPSAGE_TEACHER_CACHE_MB counts in). */
static void train__size_text(char *out, size_t size, size_t bytes) {
  if (bytes >= ((size_t)10 << 30))
    snprintf(out, size, "%.1f GB", bytes / 1073741824.0);
  else
    snprintf(out, size, "%.1f MB", bytes / 1048576.0);
}

/* Caches what the teacher says about the training split (logits, and the pairs' layers when a
 * remaining stage runs a pair) when a remaining stage needs the teacher, and the test split's
 * logits for the agreement, within the budget (teacher.h); says what it cost, or why not, on
 * the log and in a log event. Only a failed event write is an error. */
static int train__cache_teacher(train_t *t, char *error, size_t error_size) {
  teacher_t *teacher = t->teacher;
  const cfg_experiment_t *config = t->config;
  int needs = 0, features = 0;
  for (int epoch = t->epoch + 1; epoch <= cfg_total_epochs(config); epoch++) {
    const cfg_stage_t *stage = &config->stages[cfg_stage_of_epoch(config, epoch - 1)];
    const distiller_weights_t w = {(float)stage->task_weight, (float)stage->distill_weight,
                                   (float)stage->feature_weight, (float)stage->adversarial_weight};
    needs |= distiller_needs_teacher(&t->distiller, &w);
    features |= distiller_needs_features(&t->distiller, &w);
  }
  char message[768], budget[32], held[32];
  train__size_text(budget, sizeof budget, teacher->cache_budget);
  if (teacher->cache_budget == 0) {
    snprintf(message, sizeof message, "teacher cache: off (%s=0): the teacher runs on every batch",
             TEACHER_CACHE_ENV);
  } else {
    /* "train 55000 examples × (10 logits + 128 features) = 29.0 MB", then the test split's. */
    const data_split_t *splits[2] = {needs ? &t->data->train : NULL, &t->data->test};
    static const char *const names[2] = {"train", "test"};
    char parts[2][192] = {"", ""};
    size_t used = 0;
    double seconds = 0.0;
    for (int k = 0; k < 2; k++) {
      if (!splits[k] || splits[k]->n == 0) continue;
      teacher_cache_cost_t cost;
      const int rc = teacher_cache_split(teacher, splits[k], k == 0 && features, &cost);
      char what[64], size[32];
      if (cost.features)
        snprintf(what, sizeof what, "(%d logits + %zu features)", cost.logits, cost.features);
      else
        snprintf(what, sizeof what, "%d logits", cost.logits);
      train__size_text(size, sizeof size, cost.bytes);
      snprintf(parts[k], sizeof parts[k], "%s%s %d examples × %s = %s%s", k == 1 && parts[0][0] ? "; " : "",
               names[k], cost.n, what, size,
               rc == 0         ? ""
               : rc == -E2BIG ? ": over the budget, the teacher runs on every batch"
                              : ": cannot allocate it, the teacher runs on every batch");
      if (rc == 0) used += cost.bytes;
      seconds += cost.seconds;
    }
    train__size_text(held, sizeof held, used);
    snprintf(message, sizeof message, "teacher cache: %s%s; %s held of a %s budget (%s), built in %.1f s",
             parts[0], parts[1], held, budget, TEACHER_CACHE_ENV, seconds);
  }
  if (t->options.log) {
    fprintf(t->options.log, "%s\n", message);
    fflush(t->options.log);
  }
  if (ev_write_log(t->options.events, "info", "%s", message) != 0)
    return util_error(error, error_size, -EIO, "cannot write the log event of the teacher cache");
  return 0;
}

/* Blocks whose epoch has come join at the start of `epoch`; each says so in a log event.
 * nn_optimizer_step updates them from then on. */
static int train__grow(train_t *t, int epoch, char *error, size_t error_size) {
  nn_model_t *model = t->model;
  int was_active[CFG_MAX_GROW];
  for (int g = 0; g < model->n_blocks; g++) was_active[g] = model->layers[model->n_layers + g].active;
  if (nn_model_grow(model, epoch) == 0) return 0;
  for (int g = 0; g < model->n_blocks; g++) {
    const nn_layer_t *block = &model->layers[model->n_layers + g];
    if (was_active[g] || !block->active) continue;
    const char *after = model->layers[block->after].name;
    size_t count = nn_layer_param_count(block);
    if (t->options.log) {
      fprintf(t->options.log, "%s joined after %s at epoch %d: +%zu parameters (%zu in all)\n",
              block->name, after, epoch, count, nn_model_active_params(model));
      fflush(t->options.log);
    }
    if (ev_write_log(t->options.events, "info", "%s joined after %s at epoch %d: +%zu parameters",
                     block->name, after, epoch, count) != 0)
      return util_error(error, error_size, -EIO, "cannot write the log event of %s", block->name);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// checkpoints

#define TRAIN_CKPT_PARAMS "params"
#define TRAIN_CKPT_OPTIM "optim_state"
#define TRAIN_CKPT_DISTILL_PARAMS "distill_params"
#define TRAIN_CKPT_DISTILL_M "distill_m"
#define TRAIN_CKPT_DISTILL_V "distill_v"

/* The summary's figures as the checkpoint keeps them (17 digits: they come back exact). */
static json_t *train__figures_json(const train_summary_t *s) {
  return json_pack("{s:b, s:f, s:f, s:f, s:f, s:i, s:f}", "evaluated", s->evaluated,
                   "final_train_loss", s->final_train_loss, "final_train_accuracy",
                   s->final_train_accuracy, "final_test_loss", s->final_test_loss,
                   "final_test_accuracy", s->final_test_accuracy, "best_val_epoch",
                   s->best_val_epoch, "best_val_accuracy", s->best_val_accuracy);
}

/* Where a stop interrupted an epoch: the epoch, the index in its order of the next step's
 * first example, and its running sums (the train eval's figures) so far. */
typedef struct {
  int epoch, start;
  double loss;
  int64_t correct;
} train__partial_t;

static json_t *train__meta_json(const train_t *t, const train__partial_t *partial) {
  const nn_model_t *model = t->model;
  const distiller_t *d = &t->distiller;
  json_t *blocks = json_array(), *pair_t = json_array();
  for (int g = 0; g < model->n_blocks; g++) {
    const nn_layer_t *block = &model->layers[model->n_layers + g];
    json_array_append_new(blocks, json_pack("{s:s, s:b, s:I}", "name", block->name, "active",
                                            block->active, "t", (json_int_t)block->t));
  }
  for (int i = 0; i < d->n_pairs; i++) json_array_append_new(pair_t, json_integer(d->pair_t[i]));
  json_t *meta = json_pack("{s:o, s:i, s:I, s:I, s:o, s:{s:o, s:I}, s:o}", "config", cfg_to_json(t->config),
                           "epoch", t->epoch, "step", (json_int_t)t->step, "optimizer_t",
                           (json_int_t)model->optimizer.t, "blocks", blocks, "distill", "pair_t", pair_t,
                           "disc_steps", (json_int_t)d->disc.steps, "summary",
                           train__figures_json(&t->summary));
  if (meta && partial) /* the sum with 17 digits: it comes back exact */
    json_object_set_new(meta, "partial",
                        json_pack("{s:i, s:i, s:f, s:I}", "epoch", partial->epoch, "start", partial->start,
                                  "loss", partial->loss, "correct", (json_int_t)partial->correct));
  return meta;
}

/* Whether epoch `epoch` (1-based) gets a checkpoint: every checkpoint_every, and the last. */
static int train__checkpoint_due(const cfg_experiment_t *config, int epoch) {
  return epoch == cfg_total_epochs(config) || (config->checkpoint_every > 0 && epoch % config->checkpoint_every == 0);
}

/* After epoch `epoch`'s own checkpoint: deletes what it supersedes. The partial ones of
 * earlier epochs (a stop left them), and with checkpoint_keep the epoch checkpoints older
 * than the newest that many, this one counting first. The rule, not a listing, says which:
 * a resumed attempt deletes what the first one wrote. daemon/db.c drops the same rows. */
static void train__forget_old_checkpoints(const train_t *t, int epoch) {
  const int keep = t->config->checkpoint_keep;
  int newer = 1;
  for (int e = epoch - 1; e >= 1; e--) {
    char old[PATH_MAX];
    if (snprintf(old, sizeof old, "%s/epoch-%04d-partial.ckpt", t->options.checkpoint_dir, e) < (int)sizeof old)
      unlink(old);
    if (keep <= 0 || (train__checkpoint_due(t->config, e) && ++newer <= keep)) continue;
    if (snprintf(old, sizeof old, "%s/epoch-%04d.ckpt", t->options.checkpoint_dir, e) < (int)sizeof old) unlink(old);
  }
}

/* Writes <checkpoint_dir>/epoch-NNNN.ckpt for the epoch just completed, or with `partial`
 * epoch-NNNN-partial.ckpt inside epoch NNNN, and says so in a `checkpoint` event (whose
 * epoch is NNNN either way: the daemon keeps the newest per epoch). */
static int train__save(train_t *t, const train__partial_t *partial, char *error, size_t error_size) {
  char path[PATH_MAX], reason[PATH_MAX + 256];
  const int epoch = partial ? partial->epoch : t->epoch;
  if (snprintf(path, sizeof path, "%s/epoch-%04d%s.ckpt", t->options.checkpoint_dir, epoch,
               partial ? "-partial" : "") >= (int)sizeof path)
    return util_error(error, error_size, -ENAMETOOLONG, "checkpoint directory %s: path too long",
                        t->options.checkpoint_dir);
  const nn_model_t *model = t->model;
  const distiller_t *d = &t->distiller;
  json_t *meta = train__meta_json(t, partial);
  if (!meta) return util_error(error, error_size, -ENOMEM, "out of memory for a checkpoint");
  ckpt_writer_t writer;
  ckpt_writer_init(&writer);
  ckpt_writer_set_meta(&writer, meta);
  json_decref(meta);
  ckpt_add_f32(&writer, TRAIN_CKPT_PARAMS, model->params, model->n_params);
  ckpt_add_f32(&writer, TRAIN_CKPT_OPTIM, model->optim_state, model->n_optim_state);
  ckpt_add_f32(&writer, TRAIN_CKPT_DISTILL_PARAMS, d->params, d->n_params);
  ckpt_add_f32(&writer, TRAIN_CKPT_DISTILL_M, d->m, d->n_params);
  ckpt_add_f32(&writer, TRAIN_CKPT_DISTILL_V, d->v, d->n_params);
  int64_t bytes = ckpt_write(&writer, path, reason, sizeof reason);
  ckpt_writer_free(&writer);
  if (bytes < 0)
    return util_error(error, error_size, -EIO, "cannot write the checkpoint: %s", reason);
  if (t->options.log) {
    fprintf(t->options.log, "checkpoint %s (%lld bytes)\n", path, (long long)bytes);
    fflush(t->options.log);
  }
  if (ev_write(t->options.events, json_pack("{s:s, s:I, s:i, s:s, s:I}", "event", "checkpoint",
                                            "step", (json_int_t)t->step, "epoch", epoch, "path",
                                            path, "bytes", (json_int_t)bytes)) != 0)
    return util_error(error, error_size, -EIO, "cannot write the checkpoint event of epoch %d",
                        epoch);
  t->saved_step = t->step;
  if (!partial) { /* the epoch's own checkpoint replaces the one a stop left inside it */
    char stale[PATH_MAX];
    if (snprintf(stale, sizeof stale, "%s/epoch-%04d-partial.ckpt", t->options.checkpoint_dir, epoch) <
        (int)sizeof stale)
      unlink(stale);
    train__forget_old_checkpoints(t, epoch);
  }
  return 0;
}

/* Where two JSON values first differ, as a path ("optimizer.lr", "stages[1]"), written to
 * `path`; returns 1 if they differ. */
static int train__difference(const json_t *a, const json_t *b, char *path, size_t size) {
  if (json_equal((json_t *)a, (json_t *)b)) return 0;
  size_t length = strlen(path);
  if (json_is_object(a) && json_is_object(b)) {
    const char *key;
    json_t *value;
    for (int side = 0; side < 2; side++) {
      const json_t *one = side ? b : a, *other = side ? a : b;
      json_object_foreach((json_t *)one, key, value) {
        snprintf(path + length, size - length, "%s%s", length ? "." : "", key);
        json_t *there = json_object_get(other, key);
        if (!there || train__difference(side ? there : value, side ? value : there, path, size))
          return 1;
      }
    }
    path[length] = '\0';
  } else if (json_is_array(a) && json_is_array(b) && json_array_size(a) == json_array_size(b)) {
    for (size_t i = 0; i < json_array_size(a); i++) {
      snprintf(path + length, size - length, "[%zu]", i);
      if (train__difference(json_array_get(a, i), json_array_get(b, i), path, size)) return 1;
    }
    path[length] = '\0';
  }
  return 1; /* here: `path` names the value itself */
}

/* The config as a resume compares it: teacher.checkpoint is where the teacher's file is,
 * not what the run is (the daemon may name the same checkpoint by another path). */
static json_t *train__comparable_config(const cfg_experiment_t *config) {
  json_t *json = cfg_to_json(config);
  json_object_del(json_object_get(json, "teacher"), "checkpoint");
  return json;
}

static int train__get_integer(const json_t *object, const char *key, int64_t minimum,
                              int64_t maximum, int64_t *out) {
  const json_t *value = json_object_get(object, key);
  if (!json_is_integer(value)) return -1;
  *out = json_integer_value(value);
  return *out >= minimum && *out <= maximum ? 0 : -1;
}

static int train__get_real(const json_t *object, const char *key, double *out) {
  const json_t *value = json_object_get(object, key);
  if (!json_is_number(value)) return -1;
  *out = json_number_value(value);
  return 0;
}

int train_resume(train_t *t, const char *path, char *error, size_t error_size) {
  nn_model_t *model = t->model;
  distiller_t *d = &t->distiller;
  ckpt_t ckpt;
  char reason[PATH_MAX + 512];
  int rc = ckpt_open(path, &ckpt, reason, sizeof reason);
  if (rc) return util_error(error, error_size, rc, "cannot resume: %s", reason);
  cfg_experiment_t *theirs = malloc(sizeof *theirs);
  cfg_errors_t *errors = calloc(1, sizeof *errors);
  json_t *ours_json = NULL, *theirs_json = NULL;
  if (!theirs || !errors) {
    rc = util_error(error, error_size, -ENOMEM, "cannot resume from %s: out of memory", path);
    goto done;
  }

  const json_t *meta = ckpt_meta(&ckpt);
  if (cfg_from_json(json_object_get(meta, "config"), theirs, errors) != 0) {
    rc = util_error(error, error_size, -EINVAL, "cannot resume from %s: its config is not valid: "
                      "%s%s%s", path, errors->items[0].path, errors->items[0].path[0] ? ": " : "",
                      errors->items[0].message);
    goto done;
  }
  ours_json = train__comparable_config(t->config);
  theirs_json = train__comparable_config(theirs);
  char where[256] = "";
  if (train__difference(ours_json, theirs_json, where, sizeof where)) {
    rc = util_error(error, error_size, -EINVAL, "cannot resume from %s: it was written by another "
                      "config (they differ at %s)", path, where[0] ? where : "the top level");
    goto done;
  }

  /* Progress, step counts and which blocks joined. */
  const int total = cfg_total_epochs(t->config);
  int64_t epoch, step, optimizer_t, disc_steps;
  const json_t *blocks = json_object_get(meta, "blocks"), *distill = json_object_get(meta, "distill");
  const json_t *pair_t = json_object_get(distill, "pair_t"), *figures = json_object_get(meta, "summary");
  const json_t *partial = json_object_get(meta, "partial");
  int64_t partial_epoch = 0, partial_start = 0, partial_correct = 0;
  double partial_loss = 0.0;
  if (partial && (train__get_integer(partial, "epoch", 1, total, &partial_epoch) ||
                  train__get_integer(partial, "start", 0, t->data->train.n - 1, &partial_start) ||
                  train__get_integer(partial, "correct", 0, partial_start, &partial_correct) ||
                  train__get_real(partial, "loss", &partial_loss))) {
    rc = util_error(error, error_size, -EPROTO, "cannot resume from %s: its partial epoch is not one of "
                      "this run (epoch, start, loss, correct)", path);
    goto done;
  }
  if (train__get_integer(meta, "epoch", partial ? partial_epoch - 1 : 1, partial ? partial_epoch - 1 : total,
                         &epoch) ||
      train__get_integer(meta, "step", 0, INT64_MAX, &step) ||
      train__get_integer(meta, "optimizer_t", 0, INT64_MAX, &optimizer_t) ||
      train__get_integer(distill, "disc_steps", 0, INT64_MAX, &disc_steps) ||
      !json_is_array(blocks) || json_array_size(blocks) != (size_t)model->n_blocks ||
      !json_is_array(pair_t) || json_array_size(pair_t) != (size_t)d->n_pairs || !json_is_object(figures)) {
    rc = util_error(error, error_size, -EPROTO, "cannot resume from %s: its meta lacks the "
                      "training state (epoch, step, optimizer_t, blocks, distill, summary)", path);
    goto done;
  }
  /* The blocks that had joined by the end of that epoch, or in the epoch interrupted. */
  nn_model_grow(model, partial ? (int)partial_epoch : (int)epoch);
  for (int g = 0; g < model->n_blocks; g++) {
    nn_layer_t *block = &model->layers[model->n_layers + g];
    const json_t *saved = json_array_get(blocks, (size_t)g);
    const char *name = json_string_value(json_object_get(saved, "name"));
    int64_t block_t;
    if (!name || strcmp(name, block->name) != 0 || train__get_integer(saved, "t", 0, INT64_MAX, &block_t) ||
        json_is_true(json_object_get(saved, "active")) != block->active) {
      rc = util_error(error, error_size, -EPROTO, "cannot resume from %s: block %d (%s) does not "
                        "match the config", path, g, block->name);
      goto done;
    }
    block->t = block_t;
  }
  for (int i = 0; i < d->n_pairs; i++) {
    const json_t *value = json_array_get(pair_t, (size_t)i);
    if (!json_is_integer(value) || json_integer_value(value) < 0) {
      rc = util_error(error, error_size, -EPROTO, "cannot resume from %s: distill.pair_t[%d] is "
                        "not a step count", path, i);
      goto done;
    }
    d->pair_t[i] = json_integer_value(value);
  }

  /* The tensors: each must be there with exactly the size this config gives it. */
  if ((rc = ckpt_read_f32(&ckpt, TRAIN_CKPT_PARAMS, model->params, model->n_params, reason, sizeof reason)) ||
      (rc = ckpt_read_f32(&ckpt, TRAIN_CKPT_OPTIM, model->optim_state, model->n_optim_state, reason,
                          sizeof reason)) ||
      (rc = ckpt_read_f32(&ckpt, TRAIN_CKPT_DISTILL_PARAMS, d->params, d->n_params, reason, sizeof reason)) ||
      (rc = ckpt_read_f32(&ckpt, TRAIN_CKPT_DISTILL_M, d->m, d->n_params, reason, sizeof reason)) ||
      (rc = ckpt_read_f32(&ckpt, TRAIN_CKPT_DISTILL_V, d->v, d->n_params, reason, sizeof reason))) {
    rc = util_error(error, error_size, rc, "cannot resume: %s", reason);
    goto done;
  }

  train_summary_t *s = &t->summary;
  memset(s, 0, sizeof *s);
  int64_t best_val_epoch = 0;
  s->evaluated = json_is_true(json_object_get(figures, "evaluated"));
  if (train__get_real(figures, "final_train_loss", &s->final_train_loss) ||
      train__get_real(figures, "final_train_accuracy", &s->final_train_accuracy) ||
      train__get_real(figures, "final_test_loss", &s->final_test_loss) ||
      train__get_real(figures, "final_test_accuracy", &s->final_test_accuracy) ||
      train__get_real(figures, "best_val_accuracy", &s->best_val_accuracy) ||
      train__get_integer(figures, "best_val_epoch", 0, epoch, &best_val_epoch)) {
    rc = util_error(error, error_size, -EPROTO, "cannot resume from %s: its summary figures are "
                      "incomplete", path);
    goto done;
  }
  s->best_val_epoch = (int)best_val_epoch;
  s->epochs = (int)epoch;
  s->steps = step;
  model->optimizer.t = optimizer_t;
  d->disc.steps = disc_steps;
  t->epoch = (int)epoch;
  t->step = step;
  t->saved_step = step;
  t->resume_inside = partial != NULL;
  t->resume_start = (int)partial_start;
  t->resume_loss = partial_loss;
  t->resume_correct = partial_correct;
  t->resumed = 1;
  rc = 0;

done:
  json_decref(ours_json);
  json_decref(theirs_json);
  free(theirs);
  free(errors);
  ckpt_close(&ckpt);
  return rc;
}

// ---------------------------------------------------------------------------------------
// the run

int train_init(train_t *t, nn_model_t *model, const cfg_experiment_t *config, const data_set_t *data,
               const train_options_t *options, char *error, size_t error_size) {
  memset(t, 0, sizeof *t);
  const int batch_size = config->batch_size;
  if (batch_size < 1 || batch_size > model->max_batch)
    return util_error(error, error_size, -EINVAL,
                        "batch_size %d does not fit the model's buffers (%d examples)", batch_size,
                        model->max_batch);
  if (data->train.n < 1) return util_error(error, error_size, -EINVAL, "the training set is empty");
  const int has_teacher = config->teacher.kind != CFG_TEACHER_NONE;
  if (has_teacher != (options->teacher != NULL))
    return util_error(error, error_size, -EINVAL, has_teacher ? "the config names a teacher but "
                        "none was loaded" : "a teacher was given to a run without one");
  if (options->teacher && options->teacher->model.max_batch < batch_size)
    return util_error(error, error_size, -EINVAL, "the teacher was built for batches of %d, not %d",
                        options->teacher->model.max_batch, batch_size);
  t->model = model;
  t->config = config;
  t->data = data;
  t->options = *options;
  t->options.resume = NULL;
  t->teacher = options->teacher;
  int rc = distiller_create(&t->distiller, config, model, t->teacher, error, error_size);
  if (rc) return rc;

  t->inputs = malloc((size_t)batch_size * model->inputs * sizeof *t->inputs);
  t->labels = malloc((size_t)batch_size * sizeof *t->labels);
  t->indices = malloc((size_t)model->max_batch * sizeof *t->indices);
  t->probs = malloc((size_t)model->max_batch * t->model->classes * sizeof *t->probs);
  t->predictions = malloc((size_t)model->max_batch * sizeof *t->predictions);
  t->order = malloc((size_t)data->train.n * sizeof *t->order);
  /* The per-term gradients: one slab per term the run can compute, in a run with a teacher
   * (without one, the task's gradient is the whole gradient: grad_norm/total says it). */
  t->probe_distill = t->teacher && cfg_uses_distillation(config);
  const int can[DISTILLER_TERMS] = {1, t->probe_distill, cfg_uses_features(config) && config->n_features > 0,
                                    cfg_uses_adversarial(config) && config->adversarial.enabled};
  int missing = 0;
  for (int k = 0; k < DISTILLER_TERMS && config->grad_norm_every > 0 && t->teacher; k++)
    if (can[k]) missing |= !(t->term_grads[k] = malloc((model->n_params + 1) * sizeof(float)));
  if (missing || !t->inputs || !t->labels || !t->indices || !t->probs || !t->predictions || !t->order) {
    train_free(t);
    return util_error(error, error_size, -ENOMEM, "out of memory for the training buffers");
  }
  return 0;
}

void train_free(train_t *t) {
  distiller_free(&t->distiller);
  free(t->inputs);
  free(t->labels);
  free(t->indices);
  free(t->probs);
  free(t->predictions);
  free(t->order);
  for (int k = 0; k < DISTILLER_TERMS; k++) free(t->term_grads[k]);
  memset(t, 0, sizeof *t);
}

json_t *train_params_json(const train_t *t) {
  const nn_model_t *model = t->model;
  const distiller_t *d = &t->distiller;
  json_t *params = json_pack("{s:I}", "total", (json_int_t)nn_model_active_params(model));
  for (int l = 0; l < model->n_layers && params; l++) {
    size_t count = nn_layer_param_count(&model->layers[l]);
    if (count) json_object_set_new(params, model->layers[l].name, json_integer((json_int_t)count));
  }
  if (params && model->n_blocks > 0) {
    json_t *blocks = json_object();
    for (int g = 0; g < model->n_blocks; g++) {
      const nn_layer_t *block = &model->layers[model->n_layers + g];
      json_object_set_new(blocks, block->name,
                          json_pack("{s:I, s:b, s:i, s:s}", "params",
                                    (json_int_t)nn_layer_param_count(block), "active", block->active,
                                    "epoch", block->grow_epoch, "after",
                                    model->layers[block->after].name));
    }
    json_object_set_new(params, "blocks", blocks);
  }
  if (params && d->n_params > 0) {
    json_t *distill = json_pack("{s:I}", "total", (json_int_t)d->n_params);
    char name[sizeof "adapter/" + DISTILLER_LABEL_MAX];
    for (int i = 0; i < d->n_pairs; i++) {
      snprintf(name, sizeof name, "adapter/%s", d->labels[i]);
      json_object_set_new(distill, name, json_integer((json_int_t)distiller_adapter_params(d, i)));
      if (distiller_gate_params(d, i)) {
        snprintf(name, sizeof name, "gate/%s", d->labels[i]);
        json_object_set_new(distill, name, json_integer((json_int_t)distiller_gate_params(d, i)));
      }
    }
    if (d->adversarial) json_object_set_new(distill, "discriminator", json_integer((json_int_t)d->disc.n_params));
    json_object_set_new(params, "distill", distill);
  }
  return params;
}

int train_loop(train_t *t, train_summary_t *summary, char *error, size_t error_size) {
  const cfg_experiment_t *config = t->config;
  const data_set_t *data = t->data;
  const data_split_t *train = &data->train;
  nn_model_t *model = t->model;
  distiller_t *d = &t->distiller;
  FILE *events = t->options.events;
  const int batch_size = config->batch_size;
  const int total_epochs = cfg_total_epochs(config);
  const int eval_batch = t->teacher && t->teacher->model.max_batch < model->max_batch
                             ? t->teacher->model.max_batch : model->max_batch;
  int rc = 0;

  const double started = util_monotonic();
  double step_seconds = 0.0; /* time inside training steps only, for examples_per_s */
  int64_t examples = 0;

  /* The teacher's own figures, once, before the first step (a resumed run sent them). */
  if (t->teacher && !t->resumed) {
    if (!t->teacher->evaluated && teacher_evaluate(t->teacher, &data->test) != 0) {
      rc = util_error(error, error_size, -ERANGE, "teacher %s: its test loss is not finite",
                        t->teacher->path);
      goto done;
    }
    train__values_t values;
    train__values_init(&values);
    train__set(&values, "test/accuracy", t->teacher->test_accuracy);
    train__set(&values, "test/loss", t->teacher->test_loss);
    if ((rc = train__write_eval(t, 0, 0, EV_SPLIT_TEACHER, &values, error, error_size))) goto done;
  }
  if (t->teacher && t->epoch < total_epochs && (rc = train__cache_teacher(t, error, error_size))) goto done;

  for (int epoch = t->epoch + 1; epoch <= total_epochs; epoch++) {
    const int s = cfg_stage_of_epoch(config, epoch - 1);
    const cfg_stage_t *stage = &config->stages[s];
    int stage_first_epoch = 1;
    for (int i = 0; i < s; i++) stage_first_epoch += config->stages[i].epochs;
    /* Inside an epoch a stop interrupted: its start (stage event, blocks joining) happened. */
    const int inside = t->resume_inside, first_start = t->resume_start;
    t->resume_inside = t->resume_start = 0;
    if (!inside && epoch == stage_first_epoch &&
        ev_write_stage(events, t->step, epoch, s, stage->name) != 0) {
      rc = util_error(error, error_size, -EIO, "cannot write the start of stage %d", s);
      goto done;
    }
    if (!inside && (rc = train__grow(t, epoch, error, error_size))) goto done;

    const double epoch_started = util_monotonic();
    /* Each epoch's order depends only on (seed, epoch), not on the epochs before it, so a
     * run resumed from a checkpoint sees the same batches. */
    for (int i = 0; i < train->n; i++) t->order[i] = i;
    rng_t rng;
    rng_seed(&rng, config->seed, RNG_STREAM_SHUFFLE, (uint64_t)epoch);
    rng_shuffle(&rng, t->order, train->n);

    const distiller_weights_t w = {(float)stage->task_weight, (float)stage->distill_weight,
                                   (float)stage->feature_weight, (float)stage->adversarial_weight};
    const int needs_teacher = t->teacher && distiller_needs_teacher(d, &w);
    double epoch_loss = inside ? t->resume_loss : 0.0;
    int64_t epoch_correct = inside ? t->resume_correct : 0;
    for (int start = first_start; start < train->n; start += batch_size) {
      if (t->options.stop && *t->options.stop) {
        /* Stopped (the daemon is shutting down, or cancelled the run): keep what this attempt
         * did, so that the next one goes on from here rather than from the last epoch's
         * checkpoint. Always as inside this epoch, even before its first step: its start
         * (the stage event, blocks joining) has happened, and the checkpoint must say so. */
        t->summary.stopped = 1;
        if (t->options.checkpoint_dir && t->step != t->saved_step) {
          const train__partial_t partial = {epoch, start, epoch_loss, epoch_correct};
          rc = train__save(t, &partial, error, error_size);
        }
        goto done;
      }
      const double step_started = util_monotonic();
      const int B = train->n - start < batch_size ? train->n - start : batch_size;
      for (int b = 0; b < B; b++) {
        const int source = t->order[start + b];
        memcpy(t->inputs + (size_t)b * t->model->inputs, train->images + (size_t)source * t->model->inputs,
               t->model->inputs * sizeof *t->inputs);
        t->labels[b] = train->labels[source];
        t->indices[b] = source;
      }
      /* The schedules at this step's place in the run: the 0-based epoch plus the fraction
       * of it done before this batch (so a warm-up starts from 0 at step 1). */
      const double position = (epoch - 1) + (double)start / train->n;
      const double lr = stage->lr * cfg_lr_factor_at(config, position);
      const float T = t->teacher ? (float)cfg_temperature_at(config, position) : 1.0f;
      const int64_t step = t->step + 1;

      teacher_outputs_t teacher = {0};
      if (needs_teacher) teacher_outputs(t->teacher, train, t->indices, t->inputs, B, &teacher);
      const float *logits = nn_forward(model, t->inputs, B, 1);
      const float task = loss_crossentropy_forward(t->probs, t->predictions, logits, t->labels, B,
                                                   t->model->classes);
      distiller_terms_t terms;
      distiller_forward(d, model, needs_teacher ? &teacher : NULL, logits, t->labels, &w, T, B, &terms);
      /* The total as reported: each term times its weight as configured (the gradients use
       * the same weights rounded to float). */
      double total = stage->task_weight * task;
      if (terms.distill) total += stage->distill_weight * terms.kd;
      if (terms.feature) total += stage->feature_weight * terms.feature_loss;
      if (terms.adversarial) total += stage->adversarial_weight * terms.adversarial_loss;
      if (!isfinite(total)) {
        rc = util_error(error, error_size, -ERANGE, "diverged at step %lld: loss/total is %s",
                          (long long)step, train__nonfinite_word(total));
        goto done;
      }

      /* Per-layer gradient norms and the per-term gradients on step 1 and every
       * grad_norm_every steps. The terms' own backward passes come first: the step's backward
       * must be the last, its gradients are what the optimizer and the norms read. Cost,
       * measured on kd-weighted's shape (MLP 784-128-10 student, fc1 pair, KD; CNN teacher;
       * Fashion-MNIST, 10000 examples, batch 128, one thread, no sanitizers): a diagnosed
       * step takes 2.5× a plain one (three more backward passes, the norms, the longer
       * event: 78k against 193k examples/s with grad_norm_every 1), so the default 50 adds
       * ~3% to the steps' time — within the run-to-run noise of the wall time (4.2–4.3 s for
       * 3 epochs either way). */
      const int diagnose = step == 1 || (config->grad_norm_every > 0 && step % config->grad_norm_every == 0);
      train_term_grads_t term_grads = {0};
      if (diagnose && t->term_grads[DISTILLER_TERM_TASK]) {
        if (t->probe_distill && !needs_teacher) /* KD's gradient before (or after) it has a weight */
          teacher_outputs(t->teacher, train, t->indices, t->inputs, B, &teacher);
        train_term_gradients(t, t->teacher ? &teacher : NULL, &w, &terms, logits, T, B, &term_grads);
      }

      nn_zero_grad(model);
      loss_crossentropy_backward(nn_dlogits(model), t->probs, t->labels, w.task, B, t->model->classes);
      distiller_backward(d, model, needs_teacher ? &teacher : NULL, &w, &terms, T, B);
      nn_backward(model, t->inputs, B);
      nn_optimizer_step(model, (float)lr);
      distiller_update(d, &model->optimizer, &terms, (float)lr);
      t->step = step;
      const double elapsed = util_monotonic() - step_started;
      step_seconds += elapsed;
      examples += B;

      epoch_loss += (double)task * B;
      for (int b = 0; b < B; b++) epoch_correct += t->predictions[b] == t->labels[b];

      train__values_t values;
      train__values_init(&values);
      train__set(&values, "loss/total", total);
      train__set(&values, "loss/task", task);
      train__set(&values, "weighted/task", stage->task_weight * task);
      train__add_terms(&values, t, stage, &terms);
      train__set(&values, "lr", lr);
      if (t->teacher) train__set(&values, "temperature", T);
      train__set(&values, "examples_per_s", elapsed > 0 ? B / elapsed : 0.0);
      /* The optimizer steps read the gradients without changing them: still this step's. */
      if (diagnose) {
        train__add_grad_norms(&values, t, &terms);
        train__add_term_grads(&values, &term_grads);
      }
      if (values.bad[0]) {
        rc = util_error(error, error_size, -ERANGE, "diverged at step %lld: %s is %s",
                          (long long)step, values.bad, train__nonfinite_word(values.bad_value));
        json_decref(values.json);
        goto done;
      }
      if (ev_write_metric(events, step, epoch, s, values.json) != 0) {
        rc = util_error(error, error_size, -EIO, "cannot write the metric event of step %lld",
                          (long long)step);
        goto done;
      }
    }

    /* After the epoch: train (running figures of its batches), val, test — in that order. */
    train_summary_t *sum = &t->summary;
    const double train_accuracy = (double)epoch_correct / train->n, train_loss = epoch_loss / train->n;
    train__values_t values;
    train__values_init(&values);
    train__set(&values, "accuracy", train_accuracy);
    train__set(&values, "loss", train_loss);
    if ((rc = train__write_eval(t, epoch, s, EV_SPLIT_TRAIN, &values, error, error_size))) goto done;
    train__eval_t val = {0}, test;
    if (data->val.n > 0) {
      train__evaluate_split(t, &data->val, 0, eval_batch, &val);
      train__values_init(&values);
      train__set(&values, "accuracy", val.accuracy);
      train__set(&values, "loss", val.loss);
      if ((rc = train__write_eval(t, epoch, s, EV_SPLIT_VAL, &values, error, error_size))) goto done;
      if (sum->best_val_epoch == 0 || val.accuracy > sum->best_val_accuracy) {
        sum->best_val_accuracy = val.accuracy;
        sum->best_val_epoch = epoch;
      }
    }
    train__evaluate_split(t, &data->test, t->teacher != NULL, eval_batch, &test);
    train__values_init(&values);
    train__set(&values, "accuracy", test.accuracy);
    train__set(&values, "loss", test.loss);
    for (int c = 0; c < t->model->classes; c++) {
      char name[64];
      snprintf(name, sizeof name, "accuracy/%s", data_class_name(data, c));
      train__set(&values, name, test.count[c] ? (double)test.correct[c] / test.count[c] : 0.0);
    }
    if (test.agreement_known) train__set(&values, "agreement", test.agreement);
    if ((rc = train__write_eval(t, epoch, s, EV_SPLIT_TEST, &values, error, error_size))) goto done;

    sum->evaluated = 1;
    sum->epochs = epoch;
    sum->steps = t->step;
    sum->final_train_loss = train_loss;
    sum->final_train_accuracy = train_accuracy;
    sum->final_test_loss = test.loss;
    sum->final_test_accuracy = test.accuracy;
    t->epoch = epoch;
    if (t->options.log) {
      char val_text[64] = "", agreement_text[32] = "";
      if (data->val.n > 0)
        snprintf(val_text, sizeof val_text, " | val loss %.4f acc %.4f", val.loss, val.accuracy);
      if (test.agreement_known)
        snprintf(agreement_text, sizeof agreement_text, " agreement %.4f", test.agreement);
      fprintf(t->options.log,
              "epoch %d/%d (stage %d %s): train loss %.4f acc %.4f%s | test loss %.4f acc %.4f%s"
              " | %.2f s, %.0f examples/s\n",
              epoch, total_epochs, s, stage->name, train_loss, train_accuracy, val_text, test.loss,
              test.accuracy, agreement_text, util_monotonic() - epoch_started,
              step_seconds > 0 ? examples / step_seconds : 0.0);
      fflush(t->options.log);
    }
    const int due = train__checkpoint_due(config, epoch);
    if (t->options.checkpoint_dir && due && (rc = train__save(t, NULL, error, error_size))) goto done;
  }

done: /* success, stop and failure share the way out; rc says which */
  t->summary.steps = t->step;
  t->summary.epochs = t->epoch;
  *summary = t->summary;
  summary->seconds = util_monotonic() - started;
  summary->examples_per_s = step_seconds > 0 ? examples / step_seconds : 0.0;
  return rc;
}

int train_run(nn_model_t *model, const cfg_experiment_t *config, const data_set_t *data,
              const train_options_t *options, train_summary_t *summary, char *error,
              size_t error_size) {
  train_t t;
  memset(summary, 0, sizeof *summary);
  int rc = train_init(&t, model, config, data, options, error, error_size);
  if (rc) return rc;
  if (options->resume) rc = train_resume(&t, options->resume, error, error_size);
  if (rc == 0) rc = train_loop(&t, summary, error, error_size);
  train_free(&t);
  return rc;
}

json_t *train_summary_to_json(const train_summary_t *summary) {
  json_t *object = json_pack("{s:i, s:I, s:f, s:f}", "epochs", summary->epochs, "steps",
                             (json_int_t)summary->steps, "seconds", summary->seconds,
                             "examples_per_s", summary->examples_per_s);
  if (!object) return NULL;
  if (summary->evaluated) {
    json_object_set_new(object, "final_test_accuracy", json_real(summary->final_test_accuracy));
    json_object_set_new(object, "final_test_loss", json_real(summary->final_test_loss));
    json_object_set_new(object, "final_train_loss", json_real(summary->final_train_loss));
    json_object_set_new(object, "final_train_accuracy", json_real(summary->final_train_accuracy));
  }
  if (summary->best_val_epoch > 0) {
    json_object_set_new(object, "best_val_accuracy", json_real(summary->best_val_accuracy));
    json_object_set_new(object, "best_val_epoch", json_integer(summary->best_val_epoch));
  }
  return object;
}
