/* dataset_formats.h — reads a registered dataset (config.h's cfg_dataset_source_t) from the
 * formats researchers keep their data in: IDX (the MNIST family), NumPy .npy / .npz, the
 * CIFAR-10/100 binary batches and CSV, each gzip-compressed or not. Both the daemon (at
 * registration: validation, checksum, statistics, daemon/dataset.c) and the worker (before
 * a run, worker/data.c) read through here, so the two always agree on what a file holds.
 *
 * Every example comes out channel-major (C × H × W), as 8-bit values when the file has them
 * and as float32 otherwise, with int32 labels in [0, classes). A file that does not hold
 * what it claims (a truncated file, ragged CSV rows, a label out of range, image and label
 * counts that differ) is an error naming the file and the reason. Docs: docs/datasets.md. */
#ifndef MAPSAGE_DATASET_FORMATS_H
#define MAPSAGE_DATASET_FORMATS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Files larger than this (after gzip) are refused before reading them into memory. */
#define DATASET_FILE_LIMIT ((size_t)4 << 30)

typedef struct {
  int n;
  uint8_t *bytes;   /* n × inputs when the data is 8-bit, else NULL */
  float *values;    /* n × inputs when it is float32, else NULL */
  int32_t *labels;  /* n */
} dataset_split_t;

typedef struct {
  cfg_shape_t input;        /* one example: channels × height × width */
  int inputs;               /* values per example */
  int is_float;
  int classes;
  const char *classes_from; /* what decided the class count: "the names file", "the format", … */
  int n_names;              /* class names from the names file or the format; 0 when none */
  char (*names)[CFG_NAME_MAX];
  dataset_split_t train, test;
  char checksum[65];        /* SHA-256 of every file's bytes as on disk, in order */
} dataset_t;

/* Reads every file of `source`, checks it and fills `set` (dataset_free() it after
 * success only). Returns 0 or -errno with the reason in `error`. */
int dataset_read(dataset_t *set, const cfg_dataset_source_t *source, char *error, size_t error_size);
void dataset_free(dataset_t *set);

/* The SHA-256 of the source's files, train then test then names, each's bytes as on disk:
 * what dataset_read() puts in set->checksum, without parsing anything. */
int dataset_checksum(const cfg_dataset_source_t *source, char checksum[65], char *error, size_t error_size);

/* Fashion-MNIST's four IDX files in `dir` as a source: what the registry knows it by, and
 * what a worker hashes to record which Fashion-MNIST a run read. */
void dataset_fashion_mnist_source(cfg_dataset_source_t *source, const char *dir);

/* Parsers over bytes already in memory: what dataset_read() uses and the fuzz targets call.
 * Each allocates its outputs (free them with free()). */
/* A .npy array: its element type ("u1", "f4", "i8", …), shape and data (converted to the
 * native byte order). */
typedef struct {
  char type[4];       /* 'u' unsigned, 'i' signed, 'f' float, then the size: "u1", "f4" */
  int n_dims;
  int64_t dims[8];
  size_t count;       /* elements */
  const uint8_t *data;/* into the buffer parsed (little-endian data only) */
} dataset_npy_t;
int dataset_npy_parse(const uint8_t *data, size_t length, const char *what, dataset_npy_t *array, char *error,
                      size_t error_size);
/* Finds member `name` of a zip archive (.npz) and returns its bytes, inflated if need be, in
 * a buffer the caller frees; -ENOENT (with the members listed in `error`) when absent. */
int dataset_zip_member(const uint8_t *data, size_t length, const char *what, const char *name, uint8_t **member,
                       size_t *member_length, char *error, size_t error_size);
/* CSV text: a label column (the one named "label" in a header, else the first) and features. */
int dataset_csv_parse(const char *text, size_t length, const char *what, dataset_split_t *split, int *features,
                      int *is_float, char *error, size_t error_size);

#endif
