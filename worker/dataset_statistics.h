/* dataset_statistics.h — what the registry shows of a dataset (docs/datasets.md): class
 * counts per split, per-channel mean and standard deviation, exact duplicate examples
 * within and across the splits, warnings for imbalance and leakage, and a few sample
 * images per class. Computed once, at registration, on the thread pool (daemon/dataset.c):
 * pure functions of a dataset_t, touching nothing shared. */
#ifndef MAPSAGE_DATASET_STATISTICS_H
#define MAPSAGE_DATASET_STATISTICS_H

#include <jansson.h>

#include "dataset_formats.h"

/* A class is "imbalanced" when the largest class of a split has more than this many times
 * the examples of its smallest. 1.5 leaves CIFAR-10 and Fashion-MNIST (exactly balanced)
 * alone and catches a class at two thirds of the others. */
#define DATASET_IMBALANCE_RATIO 1.5

/* {"train": {"examples", "class_counts"}, "test": {…}, "channel_mean", "channel_std",
 *  "duplicates": {"within_train", "within_test", "across"}, "warnings": ["…"]}.
 * Means and deviations are on the [0, 1] scale for 8-bit data, as stored for float data.
 * NULL when out of memory. */
json_t *dataset_statistics(const dataset_t *set);

/* {"channels", "height", "width", "classes": [{"label", "name", "images": [base64 of
 * channels × height × width bytes, channel-major]}]}: the first `per_class` training
 * examples of each class, float data scaled to 0–255 by each image's own range. */
json_t *dataset_samples(const dataset_t *set, int per_class);

#endif
