/* distiller.c — the distillation side of a training step (see distiller.h): which terms
 * run, in which order, into which gradients, and the adapters' own optimizer updates. The
 * arithmetic is distill.c's; this file only wires it to the student and the teacher. */
#include "distiller.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"


int distiller_create(distiller_t *d, const cfg_experiment_t *config, const nn_model_t *student,
                     const teacher_t *teacher, char *error, size_t error_size) {
  memset(d, 0, sizeof *d);
  d->max_batch = student->max_batch;
  d->classes = student->classes;
  if ((config->n_features > 0 || config->adversarial.enabled) && !teacher)
    return util_error(error, error_size, -EINVAL, "feature alignment needs a teacher");
  size_t n_params = 0, n_scratch = 0;
  d->n_pairs = config->n_features;
  for (int i = 0; i < d->n_pairs; i++) {
    const cfg_feature_t *feature = &config->features[i];
    const int layer = feature->student_layer;
    if (layer < 0 || layer >= student->n_layers || teacher->layers[i] < 0)
      return util_error(error, error_size, -EINVAL, "features[%d]: no such layer", i);
    const cfg_shape_t s = nn_layer_shape(student, layer);
    const cfg_shape_t t = nn_layer_shape(&teacher->model, teacher->layers[i]);
    /* Maps of different sizes meet at the smaller one (distill.h); flat meets flat only. */
    if (s.image != t.image)
      return util_error(error, error_size, -EINVAL,
                              "features[%d]: \"%s\" is %s but the teacher's \"%s\" is %s", i, feature->student,
                              s.image ? "a feature map" : "flat", feature->teacher, t.image ? "a feature map" : "flat");
    d->student_layer[i] = layer;
    int rc = distill_feature_layout_maps(&d->pairs[i], &s, &t, feature->normalize, feature->gate, d->max_batch,
                                         &n_params, &n_scratch);
    if (rc) return util_error(error, error_size, rc, "features[%d]: cannot lay it out", i);
    /* The gradient norms read each piece's weight and bias as one range. */
    assert(d->pairs[i].adapter_bias == d->pairs[i].adapter_weight + (size_t)t.channels * s.channels);
    assert(feature->gate == CFG_GATE_NONE ||
           d->pairs[i].gate_bias == d->pairs[i].gate_weight + (size_t)t.channels * d->pairs[i].pixels);
    int shared = 0;
    for (int j = 0; j < d->n_pairs; j++)
      shared |= j != i && config->features[j].student_layer == layer;
    if (shared) {
      int room = (int)sizeof d->labels[i] - 2 - (int)strlen(feature->student);
      snprintf(d->labels[i], sizeof d->labels[i], "%s/%.*s", feature->student, room, feature->teacher);
    } else
      snprintf(d->labels[i], sizeof d->labels[i], "%s", feature->student);
  }
  d->n_trained = n_params;
  if (config->adversarial.enabled) {
    d->adversarial = 1;
    d->judged = config->adversarial.feature;
    d->disc_lr = (float)config->adversarial.lr;
    if (d->judged < 0 || d->judged >= d->n_pairs)
      return util_error(error, error_size, -EINVAL, "adversarial.feature: no pair %d", d->judged);
    const distill_feature_t *pair = &d->pairs[d->judged];
    int rc = disc_layout(&d->disc, pair->teacher_channels * pair->pixels, config->adversarial.hidden,
                         config->adversarial.loss, d->max_batch, &n_params, &n_scratch);
    if (rc) return util_error(error, error_size, rc, "adversarial: cannot lay it out");
  }
  d->n_params = n_params;
  d->n_scratch = n_scratch;
  /* calloc(n + 1): a run without pieces still gets valid (empty) slabs. */
  d->params = calloc(n_params + 1, sizeof(float));
  d->grads = calloc(n_params + 1, sizeof(float));
  d->m = calloc(n_params + 1, sizeof(float));
  d->v = calloc(n_params + 1, sizeof(float));
  d->scratch = calloc(n_scratch + 1, sizeof(float));
  d->has_teacher = teacher != NULL;
  if (teacher) {
    d->student_probs = calloc((size_t)d->max_batch * d->classes, sizeof(float));
    d->teacher_probs = calloc((size_t)d->max_batch * d->classes, sizeof(float));
    d->gate_targets = calloc((size_t)d->max_batch, sizeof(float));
  }
  if (!d->params || !d->grads || !d->m || !d->v || !d->scratch ||
      (teacher && (!d->student_probs || !d->teacher_probs || !d->gate_targets))) {
    distiller_free(d);
    return util_error(error, error_size, -ENOMEM, "out of memory for the distillation pieces");
  }
  /* Each piece from its own stream: adding a pair changes no other piece's initial weights. */
  for (int i = 0; i < d->n_pairs; i++) distill_feature_init(&d->pairs[i], d->params, config->seed, (uint64_t)i);
  if (d->adversarial) disc_init(&d->disc, d->params, config->seed, CFG_MAX_FEATURES);
  return 0;
}

void distiller_free(distiller_t *d) {
  free(d->params);
  free(d->grads);
  free(d->m);
  free(d->v);
  free(d->scratch);
  free(d->student_probs);
  free(d->teacher_probs);
  free(d->gate_targets);
  memset(d, 0, sizeof *d);
}

static int distiller__features_on(const distiller_t *d, const distiller_weights_t *w) {
  return d->n_pairs > 0 && w->feature > 0.0f;
}

static int distiller__adversarial_on(const distiller_t *d, const distiller_weights_t *w) {
  return d->adversarial && w->adversarial > 0.0f;
}

int distiller_needs_features(const distiller_t *d, const distiller_weights_t *w) {
  return distiller__features_on(d, w) || distiller__adversarial_on(d, w);
}

int distiller_needs_teacher(const distiller_t *d, const distiller_weights_t *w) {
  return (d->has_teacher && w->distill > 0.0f) || distiller_needs_features(d, w);
}

/* The first index of the row's largest value (kd_agreement's rule). */
static int distiller__argmax(const float *row, int C) {
  int best = 0;
  for (int c = 1; c < C; c++)
    if (row[c] > row[best]) best = c;
  return best;
}

/* Whether some pair that runs with these weights has a gate. */
static int distiller__gated(const distiller_t *d, const distiller_weights_t *w) {
  const int features = distiller__features_on(d, w), adversarial = distiller__adversarial_on(d, w);
  for (int i = 0; i < d->n_pairs; i++)
    if ((features || (adversarial && i == d->judged)) && d->pairs[i].gate != CFG_GATE_NONE) return 1;
  return 0;
}

void distiller_forward(distiller_t *d, const nn_model_t *student, const teacher_outputs_t *teacher,
                       const float *student_logits, const int *labels, const distiller_weights_t *w,
                       float T, int B, distiller_terms_t *terms) {
  memset(terms, 0, sizeof *terms);
  if (distiller__gated(d, w)) {
    /* The gates' fixed target: is the teacher right about this example? */
    for (int b = 0; b < B; b++)
      d->gate_targets[b] = distiller__argmax(teacher->logits + (size_t)b * d->classes, d->classes) == labels[b];
  }
  if (d->has_teacher && w->distill > 0.0f) {
    terms->kd = kd_loss_forward(d->student_probs, d->teacher_probs, student_logits, teacher->logits,
                                T, B, d->classes);
    terms->distill = 1;
  }
  const int features = distiller__features_on(d, w), adversarial = distiller__adversarial_on(d, w);
  double sum = 0.0;
  for (int i = 0; i < d->n_pairs; i++) {
    if (!features && !(adversarial && i == d->judged)) continue;
    assert(teacher->features[i] != NULL);
    sum += distill_feature_forward(&d->pairs[i], d->scratch, d->params,
                                   nn_layer_output(student, d->student_layer[i]),
                                   teacher->features[i], d->gate_targets, B, &terms->pairs[i]);
    terms->ran[i] = 1;
  }
  if (features) {
    terms->feature = 1;
    terms->feature_loss = sum / d->n_pairs;
  }
  if (adversarial) {
    /* (a) the discriminator learns on this batch; (b) the student's loss under the updated
     * discriminator. The student gets nothing from (a). */
    const distill_feature_t *pair = &d->pairs[d->judged];
    const float *aligned = distill_feature_aligned(pair, d->scratch);
    disc_step(&d->disc, d->params, d->grads, d->m, d->v, d->scratch,
              distill_feature_target(pair, d->scratch, teacher->features[d->judged]), aligned,
              d->disc_lr, B, &terms->disc);
    terms->adversarial_loss = disc_generator_forward(&d->disc, d->scratch, d->params, aligned, B);
    terms->adversarial = 1;
  }
}

void distiller_backward(distiller_t *d, nn_model_t *student, const teacher_outputs_t *teacher,
                        const distiller_weights_t *w, const distiller_terms_t *terms, float T, int B) {
  memset(d->grads, 0, d->n_trained * sizeof(float));
  if (terms->distill)
    kd_loss_backward(nn_dlogits(student), d->student_probs, d->teacher_probs, T, w->distill, B,
                     d->classes);
  if (terms->adversarial)
    disc_generator_backward(&d->disc, distill_feature_daligned(&d->pairs[d->judged], d->scratch),
                            d->scratch, d->params, w->adversarial, B);
  /* The feature term is the mean over the pairs: each pair's share of its weight. A gate
   * learns from its own loss at weight 1 whenever its pair runs. */
  const float share = terms->feature ? w->feature / (float)d->n_pairs : 0.0f;
  for (int i = 0; i < d->n_pairs; i++) {
    if (!terms->ran[i]) continue;
    const int layer = d->student_layer[i];
    distill_feature_backward(&d->pairs[i], nn_layer_doutput(student, layer), d->grads, d->scratch,
                             d->params, nn_layer_output(student, layer), teacher->features[i],
                             share, 1.0f, B);
  }
}

const char *distiller_term_name(distiller_term_t term) {
  static const char *const names[DISTILLER_TERMS] = {"task", "distill", "feature", "adversarial"};
  return (unsigned)term < DISTILLER_TERMS ? names[term] : "?";
}

float distiller_kd_probe(distiller_t *d, const teacher_outputs_t *teacher, const float *student_logits, float T,
                         int B) {
  assert(d->has_teacher && teacher && teacher->logits);
  return kd_loss_forward(d->student_probs, d->teacher_probs, student_logits, teacher->logits, T, B, d->classes);
}

/* The pairs' forward cleared their aligned outputs' gradients for the backward to accumulate
 * into; a term's backward alone must leave them so. */
static void distiller__clear_daligned(distiller_t *d, const distiller_terms_t *terms, int B) {
  for (int i = 0; i < d->n_pairs; i++) {
    if (!terms->ran[i]) continue;
    const distill_feature_t *f = &d->pairs[i];
    memset(distill_feature_daligned(f, d->scratch), 0,
           (size_t)B * f->teacher_channels * f->pixels * sizeof(float));
  }
}

void distiller_backward_term(distiller_t *d, nn_model_t *student, const teacher_outputs_t *teacher,
                             distiller_term_t term, const distiller_terms_t *terms, float T, int B) {
  distiller__clear_daligned(d, terms, B);
  switch (term) {
  case DISTILLER_TERM_DISTILL:
    kd_loss_backward(nn_dlogits(student), d->student_probs, d->teacher_probs, T, 1.0f, B, d->classes);
    break;
  case DISTILLER_TERM_FEATURE:
    for (int i = 0; i < d->n_pairs && terms->feature; i++) {
      const int layer = d->student_layer[i];
      distill_feature_backward(&d->pairs[i], nn_layer_doutput(student, layer), d->grads, d->scratch, d->params,
                               nn_layer_output(student, layer), teacher->features[i], 1.0f / (float)d->n_pairs,
                               0.0f, B);
    }
    break;
  case DISTILLER_TERM_ADVERSARIAL:
    if (!terms->adversarial) break;
    {
      const int k = d->judged, layer = d->student_layer[k];
      disc_generator_backward(&d->disc, distill_feature_daligned(&d->pairs[k], d->scratch), d->scratch, d->params,
                              1.0f, B);
      distill_feature_backward(&d->pairs[k], nn_layer_doutput(student, layer), d->grads, d->scratch, d->params,
                               nn_layer_output(student, layer), teacher->features[k], 0.0f, 0.0f, B);
    }
    break;
  default:
    break;
  }
  distiller__clear_daligned(d, terms, B);
}

void distiller_update(distiller_t *d, const nn_optimizer_t *o, const distiller_terms_t *terms,
                      float lr) {
  for (int i = 0; i < d->n_pairs; i++) {
    if (!terms->ran[i]) continue; /* like PyTorch, a piece without a gradient is not stepped */
    const distill_feature_t *f = &d->pairs[i];
    /* The adapter (weight then bias, at the start of the pair's range) with the student's
     * optimizer; the gate with its own Adam. */
    const size_t at = f->adapter_weight, n = distiller_adapter_params(d, i);
    assert(at == f->first_param);
    d->pair_t[i]++;
    if (f->gate != CFG_GATE_NONE)
      distill_feature_gate_step(f, d->params, d->grads, d->m, d->v, d->pair_t[i]);
    switch (o->kind) {
    case CFG_OPTIMIZER_SGD:
      optim_sgd_update(d->params + at, d->grads + at, d->m + at, n, 0, lr, o->momentum, 0.0f);
      break;
    case CFG_OPTIMIZER_ADAM:
      optim_adam_update(d->params + at, d->grads + at, d->m + at, d->v + at, n, 0, lr, o->beta1,
                        o->beta2, o->eps, 0.0f, d->pair_t[i]);
      break;
    }
  }
}

static double distiller__norm(const float *x, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) sum += (double)x[i] * x[i];
  return sqrt(sum);
}

size_t distiller_adapter_params(const distiller_t *d, int pair) {
  const distill_feature_t *f = &d->pairs[pair];
  return (size_t)f->teacher_channels * f->student_channels + (size_t)f->teacher_channels;
}

size_t distiller_gate_params(const distiller_t *d, int pair) {
  const distill_feature_t *f = &d->pairs[pair];
  return f->gate == CFG_GATE_NONE ? 0 : (size_t)f->teacher_channels * f->pixels + 1;
}

/* The adapter's weight and bias are laid out one after the other, and so are the gate's. */
double distiller_adapter_grad_norm(const distiller_t *d, int pair) {
  return distiller__norm(d->grads + d->pairs[pair].adapter_weight, distiller_adapter_params(d, pair));
}

double distiller_gate_grad_norm(const distiller_t *d, int pair) {
  size_t n = distiller_gate_params(d, pair);
  return n ? distiller__norm(d->grads + d->pairs[pair].gate_weight, n) : 0.0;
}
