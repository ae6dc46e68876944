/* data.h — the datasets the worker trains on: Fashion-MNIST from its IDX .gz files, or a
 * small generated one for quick tests. Both end up as standardised float images
 * [N × CFG_INPUTS] and int labels, split into train / val / test.
 *
 * Loading happens once, before training; nothing here runs per step. Errors fill a
 * caller-supplied buffer that names the file and the reason. */
#ifndef MAPSAGE_DATA_H
#define MAPSAGE_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define DATA_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

/* One split: n examples, one allocation per array. */
typedef struct {
  int n;
  float *images; /* n × CFG_INPUTS, row-major, standardised */
  int *labels;   /* n, each in [0, CFG_CLASSES) */
} data_split_t;

typedef struct {
  const char *name;  /* "fashion-mnist" or "synthetic" */
  data_split_t train, val, test;
  /* The training split's pixel statistics (on the [0, 1] scale) that every split was
   * standardised with: x = (pixel / 255 − mean) / std. */
  double mean, std;
} data_set_t;

/* Loads what `config->dataset` asks for: Fashion-MNIST from `dir` (DATA_DEFAULT_DIR when
 * NULL) or the synthetic set. Returns 0, or -errno with the reason in `error`. `set` needs
 * data_free() only after success. */
int data_load(data_set_t *set, const cfg_experiment_t *config, const char *dir, char *error,
              size_t error_size);

/* Fashion-MNIST: the four IDX files in `dir`. A seeded shuffle of the 60000 training
 * examples holds out `val_size` of them for validation; `train_limit` > 0 keeps at most that
 * many of the rest. */
int data_load_fashion_mnist(data_set_t *set, const char *dir, uint64_t seed, int val_size,
                            int train_limit, char *error, size_t error_size);

/* The synthetic set: 28×28 images of 10 classes, each a per-class random prototype plus
 * noise, generated from `seed` (same seed, same images). `train_size` examples are
 * generated for training, `val_size` of them are then held out as for Fashion-MNIST. */
int data_make_synthetic(data_set_t *set, uint64_t seed, int train_size, int test_size,
                        int val_size, int train_limit, char *error, size_t error_size);

void data_free(data_set_t *set);

/* The class's name as metric names use it (test/accuracy/<name>): Fashion-MNIST's ten
 * garments as slugs (tshirt_top, trouser, …, ankle_boot), the synthetic set's class0…class9. */
const char *data_class_name(const data_set_t *set, int label);

#endif
