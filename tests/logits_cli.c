/* logits_cli.c — the logits a MapSage checkpoint's network gives a batch, for
 * tests/test_export.py to compare with PyTorch's on the exported model:
 *   logits_cli CHECKPOINT INPUTS B  →  B × classes float32 on stdout
 * INPUTS holds B × inputs float32 (already standardised, as the worker feeds them). */
#include <stdio.h>
#include <stdlib.h>

#include "checkpoint.h"
#include "config.h"
#include "nn.h"
#include "util.h"

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: logits_cli CHECKPOINT INPUTS B\n");
    return 2;
  }
  char error[1024];
  ckpt_t ckpt;
  if (ckpt_open(argv[1], &ckpt, error, sizeof error) != 0) {
    fprintf(stderr, "%s\n", error);
    return 1;
  }
  static cfg_experiment_t config;
  static cfg_errors_t errors;
  if (cfg_from_json(json_object_get(ckpt_meta(&ckpt), "config"), &config, &errors) != 0) {
    fprintf(stderr, "config: %s: %s\n", errors.items[0].path, errors.items[0].message);
    return 1;
  }
  const int B = atoi(argv[3]);
  nn_model_t model;
  if (B < 1 || nn_model_create_inference(&model, &config, B) != 0) return 1;
  nn_model_grow(&model, cfg_total_epochs(&config));
  if (ckpt_read_f32(&ckpt, "params", model.params, model.n_params, error, sizeof error) != 0) {
    fprintf(stderr, "%s\n", error);
    return 1;
  }
  char *inputs;
  size_t length;
  if (util_read_file(argv[2], (size_t)1 << 30, &inputs, &length) != 0 ||
      length != (size_t)B * model.inputs * sizeof(float)) {
    fprintf(stderr, "%s: expected %d × %d float32\n", argv[2], B, model.inputs);
    return 1;
  }
  const float *logits = nn_forward(&model, (const float *)inputs, B, 0);
  fwrite(logits, sizeof(float), (size_t)B * model.classes, stdout);
  free(inputs);
  nn_model_free(&model);
  ckpt_close(&ckpt);
  return 0;
}
