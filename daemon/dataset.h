/* dataset.h — the dataset registry: datasets by name, each a set of files inside the
 * datasets directory (--datasets-dir) in one of the formats worker/dataset_formats.h reads,
 * with its checksum, statistics and sample images in the `datasets` table (docs/datasets.md,
 * docs/api.md). Registration reads the files on the libuv thread pool, never on the loop.
 * Fashion-MNIST is registered at first start from --dataset-dir; its statistics are computed
 * the first time someone asks for them (every daemon a test starts would otherwise read it).
 *
 * At submission the registry fills a config's dataset in (format, files, checksum, classes,
 * input shape): the worker then needs no registry, checks the checksum itself, and the run
 * records which data it trained on (experiments.dataset, .dataset_checksum: a trigger,
 * daemon/db.c). */
#ifndef MAPSAGE_DATASET_H
#define MAPSAGE_DATASET_H

#include <stddef.h>

#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "db.h"
#include "http.h"

typedef struct dataset_registry dataset_registry_t;

/* Creates the datasets directory if missing and registers Fashion-MNIST (the IDX files in
 * `fashion_dir`) unless a dataset of that name exists. */
int dataset_registry_create(uv_loop_t *loop, db_t *db, const char *datasets_dir, const char *fashion_dir,
                            dataset_registry_t **out, char *error, size_t error_size);
void dataset_registry_free(dataset_registry_t *registry);

/* Routes (docs/api.md): POST /api/datasets, GET /api/datasets, GET /api/datasets/{name},
 * GET /api/datasets/{name}/samples. */
int dataset_handle_register(dataset_registry_t *registry, http_request_t *request);
int dataset_handle_list(dataset_registry_t *registry, http_request_t *request);
int dataset_handle_get(dataset_registry_t *registry, http_request_t *request);
int dataset_handle_samples(dataset_registry_t *registry, http_request_t *request);
/* DELETE /api/datasets/{name}: the registry's row, never the files. Refused (409) for
 * fashion-mnist, the default, and while a queued or running experiment uses the dataset. */
int dataset_handle_delete(dataset_registry_t *registry, http_request_t *request);

/* Before validation: when `root`'s dataset.name is a registered dataset, writes its
 * source, classes, input and sizes into root's "dataset" object (over whatever the client
 * wrote there). A name that is neither built in nor registered is left for cfg_from_json
 * to refuse. */
void dataset_fill_config(dataset_registry_t *registry, json_t *root);
/* After validation: a config on a registered dataset names one the registry has, with its
 * very files, format and checksum. Errors at `prefix` + "dataset…". 0 or -EINVAL. */
int dataset_check_config(dataset_registry_t *registry, const cfg_experiment_t *config, const char *prefix,
                         cfg_errors_t *errors);

#endif
