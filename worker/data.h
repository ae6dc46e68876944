/* data.h — the datasets the worker trains on: Fashion-MNIST from its IDX .gz files, a
 * small generated one for quick tests, or a registered one (dataset_formats.h reads it).
 * All end up as standardised float images [N × inputs] and int labels, split into
 * train / val / test.
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
  float *images; /* n × inputs, row-major, standardised */
  int *labels;   /* n, each in [0, classes) */
} data_split_t;

#define DATA_MAX_CHANNELS 64 /* channels standardised apart; more share one statistic */

typedef struct {
  char name[CFG_NAME_MAX]; /* "fashion-mnist", "synthetic" or a registered dataset's */
  data_split_t train, val, test;
  cfg_shape_t input;       /* one example: channels × height × width */
  int inputs, classes;
  /* The training part's statistics (before train_limit) that every split was standardised
   * with, per channel: x = (pixel / 255 − mean) / std for 8-bit data (so on the [0, 1]
   * scale), (value − mean) / std for float data. mean and std are channel 0's. */
  double mean, std;
  double channel_mean[DATA_MAX_CHANNELS], channel_std[DATA_MAX_CHANNELS];
  char (*class_names)[CFG_NAME_MAX]; /* metric-name slugs, classes of them; NULL: class<k> */
} data_set_t;

/* Loads what `config->dataset` asks for: Fashion-MNIST from `dir` (DATA_DEFAULT_DIR when
 * NULL) or the synthetic set, split by config->dataset.split_seed — never config->seed, so
 * every run of one dataset, split_seed and val_size (a teacher and its students, whatever
 * their seeds) has the same validation examples and the same standardisation. Returns 0, or
 * -errno with the reason in `error`. `set` needs data_free() only after success. */
int data_load(data_set_t *set, const cfg_experiment_t *config, const char *dir, char *error,
              size_t error_size);

/* Fashion-MNIST: the four IDX files in `dir`. A shuffle of the 60000 training examples
 * seeded by `split_seed` holds out `val_size` of them for validation; the rest is the
 * training part, whose pixel statistics standardise every split; `train_limit` > 0 keeps
 * at most that many of it (a prefix, so smaller limits give subsets of larger ones). */
int data_load_fashion_mnist(data_set_t *set, const char *dir, uint64_t split_seed, int val_size,
                            int train_limit, char *error, size_t error_size);

/* The synthetic set: 28×28 images of 10 classes, each a per-class random prototype plus
 * noise, generated from `split_seed` (same seed, same images: the images are the data's,
 * not a run's). `train_size` examples: `val_size` for validation and the rest for training,
 * each from a stream of its own (and the test set from a third), so that sets of one
 * split_seed and val_size share their validation examples whatever their train_size, and a
 * smaller set's training examples are a prefix of a larger one's. */
int data_make_synthetic(data_set_t *set, uint64_t split_seed, int train_size, int test_size,
                        int val_size, int train_limit, char *error, size_t error_size);

/* A registered dataset: reads config->dataset.source, refuses it when its content no longer
 * has the checksum mapsaged registered (a file changed under the dataset's name), then
 * splits and standardises it as the others. */
int data_load_registered(data_set_t *set, const cfg_experiment_t *config, char *error, size_t error_size);

void data_free(data_set_t *set);

/* The class's name as metric names use it (test/accuracy/<name>): Fashion-MNIST's ten
 * garments as slugs (tshirt_top, trouser, …, ankle_boot), the synthetic set's class0…class9,
 * a registered set's names as slugs (lowercase letters, digits and _), else class<k>. */
const char *data_class_name(const data_set_t *set, int label);

#endif
