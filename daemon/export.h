/* export.h — models out: GET /api/experiments/{id}/checkpoints/{epoch} (the checkpoint file
 * as stored) and GET /api/experiments/{id}/export?format=safetensors[&epoch=N] (the weights
 * in PyTorch's names and shapes, the config as metadata). docs/export.md, docs/api.md. */
#ifndef MAPSAGE_EXPORT_H
#define MAPSAGE_EXPORT_H

#include "db.h"
#include "http.h"

int export_handle_checkpoint(db_t *db, http_request_t *request);
int export_handle_export(db_t *db, http_request_t *request);

#endif
