/* test_nn.c — checks worker/nn.c: every backward against central differences (linear and
 * ReLU through the float kernels, where Σ out·R is linear so a large step is exact; the loss
 * and a whole MLP through a double-precision reference written here), that backward
 * accumulates, the model's layout and init, and SGD and Adam steps against hand-worked
 * values. Each gradient check prints its largest relative error. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "check.h"
#include "nn.h"
#include "rng.h"

static rng_t test_rng;

static void fill_uniform(float *x, int n, float low, float high) {
  for (int i = 0; i < n; i++) x[i] = low + (high - low) * rng_uniform(&test_rng);
}

/* |a − n| / max(|a|, |n|, floor): relative where the gradient is large, absolute (scaled
 * by floor) where it is near zero and relative error means nothing. */
static double relative_error(double analytic, double numeric, double floor) {
  double scale = fabs(analytic) > fabs(numeric) ? fabs(analytic) : fabs(numeric);
  if (scale < floor) scale = floor;
  return fabs(analytic - numeric) / scale;
}

/* Compares two gradients element by element; prints and checks the worst relative error. */
static void check_gradient(const char *name, const float *analytic, const double *numeric, int n,
                           double tolerance) {
  double worst = 0.0;
  int worst_index = 0;
  for (int i = 0; i < n; i++) {
    double error = relative_error(analytic[i], numeric[i], 1e-3);
    if (error > worst) {
      worst = error;
      worst_index = i;
    }
  }
  printf("  %-28s %4d values, max relative error %.2e (analytic %.6g, numeric %.6g)\n", name, n,
         worst, n ? analytic[worst_index] : 0.0, n ? numeric[worst_index] : 0.0);
  CHECK(worst <= tolerance);
}

/* ---------------------------------------------------------------------------------------
 * linear */

enum { LB = 3, LIN = 7, LOUT = 5 };

/* Σ out·R for the linear layer, accumulated in double. */
static double linear_objective(const float *inp, const float *weight, const float *bias,
                               const float *r) {
  float out[LB * LOUT];
  linear_forward(out, inp, weight, bias, LB, LIN, LOUT);
  double sum = 0.0;
  for (int i = 0; i < LB * LOUT; i++) sum += (double)out[i] * r[i];
  return sum;
}

/* Central difference of linear_objective with respect to each element of `x`. */
static void linear_numeric(double *numeric, float *x, int n, const float *inp, const float *weight,
                           const float *bias, const float *r) {
  const float step = 1e-2f;
  for (int i = 0; i < n; i++) {
    float saved = x[i];
    x[i] = saved + step;
    double plus = linear_objective(inp, weight, bias, r);
    x[i] = saved - step;
    double minus = linear_objective(inp, weight, bias, r);
    x[i] = saved;
    numeric[i] = (plus - minus) / (2.0 * step);
  }
}

static void test_linear(void) {
  printf("linear (B=%d, IN=%d, OUT=%d)\n", LB, LIN, LOUT);
  float inp[LB * LIN], weight[LOUT * LIN], bias[LOUT], r[LB * LOUT];
  fill_uniform(inp, LB * LIN, -1, 1);
  fill_uniform(weight, LOUT * LIN, -1, 1);
  fill_uniform(bias, LOUT, -1, 1);
  fill_uniform(r, LB * LOUT, -1, 1);

  /* Forward against the definition. */
  float out[LB * LOUT];
  linear_forward(out, inp, weight, bias, LB, LIN, LOUT);
  double worst = 0.0;
  for (int b = 0; b < LB; b++) {
    for (int o = 0; o < LOUT; o++) {
      double expected = bias[o];
      for (int i = 0; i < LIN; i++) expected += (double)inp[b * LIN + i] * weight[o * LIN + i];
      worst = fmax(worst, fabs(expected - out[b * LOUT + o]));
    }
  }
  printf("  forward: max |error| %.2e\n", worst);
  CHECK(worst < 1e-5);

  /* Without bias the output is the bare product. */
  float out_without[LB * LOUT];
  linear_forward(out_without, inp, weight, NULL, LB, LIN, LOUT);
  CHECK_NEAR(out[0] - bias[0], out_without[0], 1e-5);

  float dinp[LB * LIN] = {0}, dweight[LOUT * LIN] = {0}, dbias[LOUT] = {0};
  linear_backward(dinp, dweight, dbias, r, inp, weight, LB, LIN, LOUT);
  double numeric[LOUT * LIN];
  linear_numeric(numeric, inp, LB * LIN, inp, weight, bias, r);
  check_gradient("dinp", dinp, numeric, LB * LIN, 1e-3);
  linear_numeric(numeric, weight, LOUT * LIN, inp, weight, bias, r);
  check_gradient("dweight", dweight, numeric, LOUT * LIN, 1e-3);
  linear_numeric(numeric, bias, LOUT, inp, weight, bias, r);
  check_gradient("dbias", dbias, numeric, LOUT, 1e-3);

  /* Backward accumulates: a second call doubles every gradient. */
  float dinp2[LB * LIN], dweight2[LOUT * LIN], dbias2[LOUT];
  memcpy(dinp2, dinp, sizeof dinp);
  memcpy(dweight2, dweight, sizeof dweight);
  memcpy(dbias2, dbias, sizeof dbias);
  linear_backward(dinp2, dweight2, dbias2, r, inp, weight, LB, LIN, LOUT);
  int doubled = 1;
  for (int i = 0; i < LB * LIN; i++) doubled &= fabsf(dinp2[i] - 2 * dinp[i]) <= 1e-6f * (1 + fabsf(dinp[i]));
  for (int i = 0; i < LOUT * LIN; i++)
    doubled &= fabsf(dweight2[i] - 2 * dweight[i]) <= 1e-6f * (1 + fabsf(dweight[i]));
  for (int i = 0; i < LOUT; i++) doubled &= fabsf(dbias2[i] - 2 * dbias[i]) <= 1e-6f * (1 + fabsf(dbias[i]));
  CHECK(doubled);
  CHECK(dweight[3] != 0.0f); /* and there was something to double */

  /* dinp = NULL (first layer) still yields the same dweight and dbias. */
  float dweight3[LOUT * LIN] = {0}, dbias3[LOUT] = {0};
  linear_backward(NULL, dweight3, dbias3, r, inp, weight, LB, LIN, LOUT);
  CHECK(memcmp(dweight3, dweight, sizeof dweight) == 0);
  CHECK(memcmp(dbias3, dbias, sizeof dbias) == 0);
}

/* ---------------------------------------------------------------------------------------
 * relu */

enum { RN = 24 };

static double relu_objective(const float *inp, const float *r) {
  float out[RN];
  relu_forward(out, inp, RN);
  double sum = 0.0;
  for (int i = 0; i < RN; i++) sum += (double)out[i] * r[i];
  return sum;
}

static void test_relu(void) {
  printf("relu (N=%d)\n", RN);
  float inp[RN], r[RN], out[RN];
  fill_uniform(r, RN, -1, 1);
  /* Keep every input at least 0.1 from the kink so that a 0.01 step never crosses it. */
  for (int i = 0; i < RN; i++) {
    float magnitude = 0.1f + rng_uniform(&test_rng);
    inp[i] = i % 2 ? magnitude : -magnitude;
  }
  relu_forward(out, inp, RN);
  int exact = 1;
  for (int i = 0; i < RN; i++) exact &= out[i] == (inp[i] > 0 ? inp[i] : 0.0f);
  CHECK(exact);

  float dinp[RN] = {0};
  relu_backward(dinp, r, out, RN);
  double numeric[RN];
  const float step = 1e-2f;
  for (int i = 0; i < RN; i++) {
    float saved = inp[i];
    inp[i] = saved + step;
    double plus = relu_objective(inp, r);
    inp[i] = saved - step;
    double minus = relu_objective(inp, r);
    inp[i] = saved;
    numeric[i] = (plus - minus) / (2.0 * step);
  }
  check_gradient("dinp", dinp, numeric, RN, 1e-3);

  relu_backward(dinp, r, out, RN);
  int doubled = 1;
  for (int i = 0; i < RN; i++) doubled &= dinp[i] == 2.0f * (inp[i] > 0 ? r[i] : 0.0f);
  CHECK(doubled);

  /* Longer than one vector block, with a tail: the same as element by element. */
  enum { LONG = 16 * 5 + 7 };
  float long_inp[LONG], long_out[LONG], long_d[LONG] = {0}, long_r[LONG];
  fill_uniform(long_inp, LONG, -1, 1);
  fill_uniform(long_r, LONG, -1, 1);
  relu_forward(long_out, long_inp, LONG);
  relu_backward(long_d, long_r, long_out, LONG);
  int same = 1;
  for (int i = 0; i < LONG; i++) {
    same &= long_out[i] == (long_inp[i] > 0 ? long_inp[i] : 0.0f);
    same &= long_d[i] == (long_inp[i] > 0 ? long_r[i] : 0.0f);
  }
  CHECK(same);
}

/* ---------------------------------------------------------------------------------------
 * softmax cross-entropy */

enum { CB = 4, CC = 10 };

/* Mean cross-entropy of double logits. */
static double crossentropy_reference(const double *logits, const int *labels, int B, int C) {
  double total = 0.0;
  for (int b = 0; b < B; b++) {
    const double *row = logits + b * C;
    double max = row[0];
    for (int c = 1; c < C; c++) max = fmax(max, row[c]);
    double sum = 0.0;
    for (int c = 0; c < C; c++) sum += exp(row[c] - max);
    total += log(sum) - (row[labels[b]] - max);
  }
  return total / B;
}

static void test_crossentropy(void) {
  printf("softmax cross-entropy (B=%d, C=%d)\n", CB, CC);
  float logits[CB * CC], probs[CB * CC];
  int labels[CB] = {3, 0, 9, 3}, predictions[CB];
  fill_uniform(logits, CB * CC, -3, 3);
  logits[1 * CC + 7] = 10.0f; /* a confident row: example 1 predicts 7 */

  float loss = loss_crossentropy_forward(probs, predictions, logits, labels, CB, CC);
  double reference_logits[CB * CC];
  for (int i = 0; i < CB * CC; i++) reference_logits[i] = logits[i];
  double reference = crossentropy_reference(reference_logits, labels, CB, CC);
  printf("  loss %.7f, reference %.7f\n", loss, reference);
  CHECK_NEAR(reference, loss, 1e-6);
  CHECK_INT(7, predictions[1]);
  int argmax_ok = 1;
  for (int b = 0; b < CB; b++) {
    double row_sum = 0.0;
    for (int c = 0; c < CC; c++) {
      row_sum += probs[b * CC + c];
      argmax_ok &= logits[b * CC + c] <= logits[b * CC + predictions[b]];
    }
    CHECK_NEAR(1.0, row_sum, 1e-6);
  }
  CHECK(argmax_ok);

  /* Uniform logits: loss log(10), probabilities 0.1, ties go to the lowest index. */
  float zeros[CC] = {0}, uniform_probs[CC];
  int label = 4, prediction = -1;
  CHECK_NEAR(log(10.0), loss_crossentropy_forward(uniform_probs, &prediction, zeros, &label, 1, CC), 1e-6);
  CHECK_NEAR(0.1, uniform_probs[9], 1e-7);
  CHECK_INT(0, prediction);

  /* Huge logits stay finite (the max is subtracted first). */
  float huge[CC] = {1000.0f, -1000.0f};
  float huge_loss = loss_crossentropy_forward(uniform_probs, NULL, huge, &(int){1}, 1, CC);
  CHECK(isfinite(huge_loss));
  CHECK_NEAR(2000.0, huge_loss, 1e-6);

  /* Backward with weight 1 against central differences of the reference. */
  float dlogits[CB * CC] = {0};
  loss_crossentropy_backward(dlogits, probs, labels, 1.0f, CB, CC);
  double numeric[CB * CC];
  const double step = 1e-5;
  for (int i = 0; i < CB * CC; i++) {
    double saved = reference_logits[i];
    reference_logits[i] = saved + step;
    double plus = crossentropy_reference(reference_logits, labels, CB, CC);
    reference_logits[i] = saved - step;
    double minus = crossentropy_reference(reference_logits, labels, CB, CC);
    reference_logits[i] = saved;
    numeric[i] = (plus - minus) / (2.0 * step);
  }
  check_gradient("dlogits", dlogits, numeric, CB * CC, 1e-4);

  /* Weighted and accumulating: adding the 0.5-weighted gradient gives 1.5×. */
  loss_crossentropy_backward(dlogits, probs, labels, 0.5f, CB, CC);
  double worst = 0.0;
  for (int i = 0; i < CB * CC; i++) worst = fmax(worst, fabs(dlogits[i] - 1.5 * numeric[i]));
  CHECK(worst < 1e-6);
}

/* ---------------------------------------------------------------------------------------
 * the whole model */

static cfg_experiment_t test_config(uint64_t seed) {
  cfg_experiment_t config;
  memset(&config, 0, sizeof config);
  config.seed = seed;
  config.n_layers = 5;
  config.layers[0] = (cfg_layer_t){.kind = CFG_LAYER_LINEAR, .out = 16, .name = "fc1"};
  config.layers[1] = (cfg_layer_t){.kind = CFG_LAYER_RELU};
  config.layers[2] = (cfg_layer_t){.kind = CFG_LAYER_LINEAR, .out = 12};
  config.layers[3] = (cfg_layer_t){.kind = CFG_LAYER_RELU};
  config.layers[4] = (cfg_layer_t){.kind = CFG_LAYER_LINEAR, .out = CFG_CLASSES, .name = "head"};
  config.optimizer.kind = CFG_OPTIMIZER_SGD;
  config.optimizer.lr = 0.1;
  config.optimizer.momentum = 0.9;
  config.batch_size = 4;
  return config;
}

/* The model's function in double, straight from its parameter slab and layer list. */
static double model_reference_loss(const nn_model_t *model, const double *params, const float *inputs,
                                   const int *labels, int B, double *logits_out) {
  static double a[2][4 * 64]; /* two ping-pong activations: B ≤ 4, width ≤ 64 here */
  double input[4 * CFG_INPUTS];
  for (int i = 0; i < B * CFG_INPUTS; i++) input[i] = inputs[i];
  const double *x = input;
  int current = 0;
  for (int l = 0; l < model->n_layers; l++) {
    const nn_layer_t *layer = &model->layers[l];
    double *out = a[current];
    for (int b = 0; b < B; b++) {
      for (int o = 0; o < layer->out; o++) {
        if (layer->kind == CFG_LAYER_LINEAR) {
          double sum = params[layer->bias + o];
          for (int i = 0; i < layer->in; i++)
            sum += params[layer->weight + (size_t)o * layer->in + i] * x[b * layer->in + i];
          out[b * layer->out + o] = sum;
        } else {
          out[b * layer->out + o] = fmax(0.0, x[b * layer->in + o]);
        }
      }
    }
    x = out;
    current ^= 1;
  }
  if (logits_out) memcpy(logits_out, x, (size_t)B * CFG_CLASSES * sizeof *x);
  return crossentropy_reference(x, labels, B, CFG_CLASSES);
}

static void test_model(void) {
  printf("model 784-16-relu-12-relu-10 (B=4)\n");
  cfg_experiment_t config = test_config(42);
  nn_model_t model;
  CHECK_INT(0, nn_model_create(&model, &config, 4));

  /* Layout: sizes, names, weights before biases. */
  size_t expected = 784 * 16 + 16 + 16 * 12 + 12 + 12 * 10 + 10;
  CHECK_INT(expected, model.n_params);
  CHECK_INT(784 * 16 + 16 * 12 + 12 * 10, model.n_decayed);
  CHECK_STR("fc1", model.layers[0].name);
  CHECK_STR("relu0", model.layers[1].name);
  CHECK_STR("linear1", model.layers[2].name);
  CHECK_STR("relu1", model.layers[3].name);
  CHECK_STR("head", model.layers[4].name);
  CHECK_INT(784 * 16 + 16, nn_layer_param_count(&model.layers[0]));
  CHECK_INT(0, nn_layer_param_count(&model.layers[1]));
  CHECK_INT(model.n_decayed, model.layers[0].bias);
  CHECK_INT(model.n_params, model.layers[4].bias + model.layers[4].n_bias);
  CHECK_INT(model.n_params, model.n_optim_state); /* sgd: one velocity per parameter */

  /* Initialisation: Kaiming-uniform bounds, zero biases, spread, deterministic in the seed. */
  for (int l = 0; l < model.n_layers; l++) {
    const nn_layer_t *layer = &model.layers[l];
    if (layer->kind != CFG_LAYER_LINEAR) continue;
    double bound = sqrt(6.0 / layer->in), max = 0.0, sum_squares = 0.0;
    for (size_t i = 0; i < layer->n_weight; i++) {
      max = fmax(max, fabs(model.params[layer->weight + i]));
      sum_squares += (double)model.params[layer->weight + i] * model.params[layer->weight + i];
    }
    double variance = sum_squares / layer->n_weight; /* U(−b, b) has variance b²/3 = 2/fan_in */
    printf("  init %-8s bound %.4f, max |w| %.4f, variance %.5f (expected %.5f)\n", layer->name,
           bound, max, variance, 2.0 / layer->in);
    CHECK(max <= bound);
    CHECK(max > 0.8 * bound);
    CHECK_NEAR(2.0 / layer->in, variance, 0.35 * 2.0 / layer->in);
    int zero = 1;
    for (size_t i = 0; i < layer->n_bias; i++) zero &= model.params[layer->bias + i] == 0.0f;
    CHECK(zero);
  }
  nn_model_t same, other;
  CHECK_INT(0, nn_model_create(&same, &config, 4));
  cfg_experiment_t other_config = test_config(43);
  CHECK_INT(0, nn_model_create(&other, &other_config, 4));
  CHECK(memcmp(model.params, same.params, model.n_params * sizeof(float)) == 0);
  CHECK(memcmp(model.params, other.params, model.n_params * sizeof(float)) != 0);
  nn_model_free(&same);
  nn_model_free(&other);

  /* A batch of inputs, standard-normal like standardised pixels. */
  enum { B = 4 };
  static float inputs[B * CFG_INPUTS];
  for (int i = 0; i < B * CFG_INPUTS; i++) inputs[i] = (float)rng_normal(&test_rng);
  int labels[B] = {1, 5, 5, 8};
  /* Give the biases non-zero values so that their gradients are exercised in general. */
  fill_uniform(model.params + model.n_decayed, (int)(model.n_params - model.n_decayed), -0.1f, 0.1f);

  float probs[B * CFG_CLASSES];
  const float *logits = nn_forward(&model, inputs, B);
  float loss = loss_crossentropy_forward(probs, NULL, logits, labels, B, CFG_CLASSES);
  nn_zero_grad(&model);
  loss_crossentropy_backward(nn_dlogits(&model), probs, labels, 1.0f, B, CFG_CLASSES);
  nn_backward(&model, inputs, B);

  double *params = malloc(model.n_params * sizeof *params);
  for (size_t i = 0; i < model.n_params; i++) params[i] = model.params[i];
  double reference_logits[B * CFG_CLASSES];
  double reference = model_reference_loss(&model, params, inputs, labels, B, reference_logits);
  double worst = 0.0;
  for (int i = 0; i < B * CFG_CLASSES; i++) worst = fmax(worst, fabs(reference_logits[i] - logits[i]));
  printf("  forward: loss %.7f, reference %.7f, max |logit error| %.2e\n", loss, reference, worst);
  CHECK(worst < 1e-4);
  CHECK_NEAR(reference, loss, 1e-5);

  /* Loss w.r.t. every parameter is too many (12894) central differences of a 784-wide
   * reference; sample 40 weights and every bias of each linear layer. */
  for (int l = 0; l < model.n_layers; l++) {
    const nn_layer_t *layer = &model.layers[l];
    if (layer->kind != CFG_LAYER_LINEAR) continue;
    enum { SAMPLES = 40 };
    float analytic[SAMPLES + 64];
    double numeric[SAMPLES + 64];
    size_t index[SAMPLES + 64];
    int n = 0;
    for (int s = 0; s < SAMPLES; s++) index[n++] = layer->weight + rng_below(&test_rng, (uint32_t)layer->n_weight);
    for (size_t i = 0; i < layer->n_bias; i++) index[n++] = layer->bias + i;
    for (int s = 0; s < n; s++) {
      const double step = 1e-6;
      double saved = params[index[s]];
      params[index[s]] = saved + step;
      double plus = model_reference_loss(&model, params, inputs, labels, B, NULL);
      params[index[s]] = saved - step;
      double minus = model_reference_loss(&model, params, inputs, labels, B, NULL);
      params[index[s]] = saved;
      numeric[s] = (plus - minus) / (2.0 * step);
      analytic[s] = model.grads[index[s]];
    }
    char name[64];
    snprintf(name, sizeof name, "d%s (weights and biases)", layer->name);
    check_gradient(name, analytic, numeric, n, 2e-3);
  }

  /* The gradient norm helper is the plain L2 norm of the layer's weights and bias. */
  double sum = 0.0;
  const nn_layer_t *head = &model.layers[4];
  for (size_t i = 0; i < head->n_weight; i++) sum += (double)model.grads[head->weight + i] * model.grads[head->weight + i];
  for (size_t i = 0; i < head->n_bias; i++) sum += (double)model.grads[head->bias + i] * model.grads[head->bias + i];
  CHECK_NEAR(sqrt(sum), nn_layer_grad_norm(&model, 4), 1e-12);
  CHECK(nn_layer_grad_norm(&model, 0) > 0.0);
  CHECK_NEAR(0.0, nn_layer_grad_norm(&model, 1), 0.0);

  /* A second backward without zeroing doubles the parameter gradients. */
  float *first = malloc(model.n_params * sizeof *first);
  memcpy(first, model.grads, model.n_params * sizeof *first);
  loss_crossentropy_backward(nn_dlogits(&model), probs, labels, 1.0f, B, CFG_CLASSES);
  /* (dlogits now holds 2×; the activation gradients must be cleared, parameters kept) */
  memset(model.dactivations, 0, (model.n_activations - (size_t)4 * CFG_CLASSES) * sizeof(float));
  nn_backward(&model, inputs, B);
  worst = 0.0;
  for (size_t i = 0; i < model.n_params; i++)
    worst = fmax(worst, relative_error(model.grads[i], 3.0 * first[i], 1e-4));
  printf("  accumulate: gradients after a 2× second pass are 3× the first (max rel error %.1e)\n", worst);
  CHECK(worst < 1e-5);
  nn_zero_grad(&model);
  int all_zero = 1;
  for (size_t i = 0; i < model.n_params; i++) all_zero &= model.grads[i] == 0.0f;
  CHECK(all_zero);

  /* A few SGD steps on one batch drive its loss down. */
  float before = loss;
  for (int step = 0; step < 20; step++) {
    logits = nn_forward(&model, inputs, B);
    loss = loss_crossentropy_forward(probs, NULL, logits, labels, B, CFG_CLASSES);
    nn_zero_grad(&model);
    loss_crossentropy_backward(nn_dlogits(&model), probs, labels, 1.0f, B, CFG_CLASSES);
    nn_backward(&model, inputs, B);
    nn_optimizer_step(&model, 0.05f);
  }
  printf("  20 SGD steps on one batch: loss %.4f -> %.4f\n", before, loss);
  CHECK(loss < 0.2f * before);
  CHECK_INT(20, model.optimizer.t);

  free(first);
  free(params);
  nn_model_free(&model);

  /* Shapes that cannot work are refused. */
  cfg_experiment_t bad = test_config(1);
  bad.layers[4].out = 7;
  CHECK_INT(-EINVAL, nn_model_create(&model, &bad, 4));
  CHECK_INT(-EINVAL, nn_model_create(&model, &config, 0));
}

/* ---------------------------------------------------------------------------------------
 * optimisers */

static void test_sgd(void) {
  printf("sgd\n");
  /* Two weights (decayed) and a bias (not): lr 0.1, momentum 0.9, weight decay 0.01.
   *   w0: g = 0.1 + 0.01·1    = 0.11,  v = 0.9·0.5 + 0.11 = 0.56,  w = 1 − 0.056   = 0.944
   *   w1: g = 0.2 + 0.01·(−2) = 0.18,  v = 0 + 0.18       = 0.18,  w = −2 − 0.018  = −2.018
   *   b:  g = −0.3 (no decay),         v = 0.9·1 − 0.3    = 0.6,   b = 0.5 − 0.06  = 0.44
   * then again with the same gradients:
   *   w0: g = 0.1 + 0.00944 = 0.10944, v = 0.504 + 0.10944 = 0.61344, w = 0.944 − 0.061344 = 0.882656 */
  float params[3] = {1.0f, -2.0f, 0.5f}, grads[3] = {0.1f, 0.2f, -0.3f}, velocity[3] = {0.5f, 0.0f, 1.0f};
  optim_sgd_update(params, grads, velocity, 3, 2, 0.1f, 0.9f, 0.01f);
  CHECK_NEAR(0.944, params[0], 1e-6);
  CHECK_NEAR(-2.018, params[1], 1e-6);
  CHECK_NEAR(0.44, params[2], 1e-6);
  CHECK_NEAR(0.56, velocity[0], 1e-6);
  CHECK_NEAR(0.18, velocity[1], 1e-6);
  CHECK_NEAR(0.6, velocity[2], 1e-6);
  optim_sgd_update(params, grads, velocity, 3, 2, 0.1f, 0.9f, 0.01f);
  CHECK_NEAR(0.882656, params[0], 1e-6);
  CHECK_NEAR(0.61344, velocity[0], 1e-6);
}

static void test_adam(void) {
  printf("adam\n");
  /* lr 0.01, β1 0.9, β2 0.999, eps 1e-8, weight decay 0.1 on the two weights.
   * Step 1 (bias-corrected m̂ = g, v̂ = g², so each moves by lr·g/(|g| + eps)):
   *   w0: g = 0.1 + 0.1·1 = 0.2        -> 1 − 0.01·0.2/(0.2 + 1e-8)   = 0.9900000005
   *   w1: g = 0.2 + 0.1·(−2) = 0       -> m = v = 0, no move          = −2
   *   b:  g = −0.3 (no decay)          -> 0.5 + 0.01                  = 0.51
   *   m = (0.02, 0, −0.03), v = (4e-5, 0, 9e-5)
   * Step 2, same gradients:
   *   w0: g = 0.1 + 0.099 = 0.199, m = 0.018 + 0.0199 = 0.0379,
   *       v = 0.999·4e-5 + 0.001·0.039601 = 7.9561e-5,
   *       m̂ = 0.0379/0.19 = 0.1994737, v̂ = 7.9561e-5/0.001999 = 0.0398004,
   *       w = 0.99 − 0.01·0.1994737/(0.1995004 + 1e-8) = 0.980001339
   *   b:  m̂ = −0.3, v̂ = 0.09 -> 0.52 */
  float params[3] = {1.0f, -2.0f, 0.5f}, grads[3] = {0.1f, 0.2f, -0.3f};
  float m[3] = {0}, v[3] = {0};
  optim_adam_update(params, grads, m, v, 3, 2, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 1);
  CHECK_NEAR(0.99, params[0], 1e-6);
  CHECK_NEAR(-2.0, params[1], 1e-7);
  CHECK_NEAR(0.51, params[2], 1e-6);
  CHECK_NEAR(0.02, m[0], 1e-7);
  CHECK_NEAR(-0.03, m[2], 1e-7);
  CHECK_NEAR(4e-5, v[0], 1e-8); /* 1 − β2 in float is 0.00099999 */
  CHECK_NEAR(9e-5, v[2], 1e-8);
  optim_adam_update(params, grads, m, v, 3, 2, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 2);
  CHECK_NEAR(0.980001339, params[0], 1e-6);
  CHECK_NEAR(-2.0, params[1], 1e-7);
  CHECK_NEAR(0.52, params[2], 1e-6);
  CHECK_NEAR(0.0379, m[0], 1e-7);
  CHECK_NEAR(7.9561e-5, v[0], 1e-8);
}

/* nn_optimizer_step dispatches on the config's optimizer and keeps Adam's moments in the
 * optimizer slab (m, then v). */
static void test_optimizer_step(void) {
  printf("nn_optimizer_step\n");
  cfg_experiment_t config = test_config(5);
  config.optimizer.kind = CFG_OPTIMIZER_ADAM;
  config.optimizer.beta1 = 0.9;
  config.optimizer.beta2 = 0.999;
  config.optimizer.eps = 1e-8;
  nn_model_t model;
  CHECK_INT(0, nn_model_create(&model, &config, 2));
  CHECK_INT(2 * model.n_params, model.n_optim_state);
  float w = model.params[0], b = model.params[model.n_decayed];
  model.grads[0] = 0.5f;
  model.grads[model.n_decayed] = -0.25f;
  nn_optimizer_step(&model, 0.001f);
  CHECK_NEAR(w - 0.001, model.params[0], 1e-7);
  CHECK_NEAR(b + 0.001, model.params[model.n_decayed], 1e-7);
  CHECK_NEAR(0.05, model.optim_state[0], 1e-7);                        /* m */
  CHECK_NEAR(0.00025, model.optim_state[model.n_params], 1e-8);        /* v */
  CHECK_INT(1, model.optimizer.t);
  nn_model_free(&model);
}

int main(void) {
  openblas_set_num_threads(1);
  rng_seed(&test_rng, 2024, 99, 0);
  test_linear();
  test_relu();
  test_crossentropy();
  test_model();
  test_sgd();
  test_adam();
  test_optimizer_step();
  return check_summary();
}
