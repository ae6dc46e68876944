/* export.c — models out (docs/export.md): a run's checkpoint file as it is, and its weights
 * as safetensors under the config's layer names in PyTorch's shapes, with the config as
 * metadata (worker/safetensors.h lays them out).
 *
 * The checkpoint is sent from its file descriptor (MHD reads it as the client takes it:
 * nothing is held in memory). The safetensors file is built in memory from the mapped
 * checkpoint on the loop: a copy of the parameters, a few MB for the models MapSage trains
 * (the 400k-parameter CNN teacher: 1.6 MB, under a millisecond to lay out). */
#include "export.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "util.h"

/* The path and epoch of the experiment's checkpoint of `epoch` (< 0: its latest). Returns
 * 0, -ENOENT or -EIO. */
static int export__find(db_t *db, int64_t id, long long epoch, char *path, size_t size, long long *found) {
  sqlite3_stmt *statement = NULL;
  const char *sql = epoch < 0 ? "SELECT path, epoch FROM checkpoints WHERE experiment_id = ?1 ORDER BY epoch DESC "
                                "LIMIT 1"
                              : "SELECT path, epoch FROM checkpoints WHERE experiment_id = ?1 AND epoch = ?2";
  if (sqlite3_prepare_v2(db_sqlite(db), sql, -1, &statement, NULL) != SQLITE_OK) return -EIO;
  sqlite3_bind_int64(statement, 1, id);
  if (epoch >= 0) sqlite3_bind_int64(statement, 2, epoch);
  int rc = -ENOENT;
  if (sqlite3_step(statement) == SQLITE_ROW) {
    rc = util_strlcpy(path, (const char *)sqlite3_column_text(statement, 0), size) == 0 ? 0 : -ENAMETOOLONG;
    *found = sqlite3_column_int64(statement, 1);
  }
  sqlite3_finalize(statement);
  return rc;
}

/* 404 naming what is missing: the experiment, or the checkpoint and the epochs it has. */
static int export__missing(db_t *db, http_request_t *request, int64_t id, long long epoch) {
  json_t *experiment = db_experiment_get(db, id, 0);
  if (!experiment) return http_respond_error(request, MHD_HTTP_NOT_FOUND, "no experiment %lld", (long long)id);
  json_decref(experiment);
  sqlite3_stmt *statement = NULL;
  char epochs[256] = "";
  if (sqlite3_prepare_v2(db_sqlite(db), "SELECT epoch FROM checkpoints WHERE experiment_id = ?1 ORDER BY epoch", -1,
                         &statement, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(statement, 1, id);
    while (sqlite3_step(statement) == SQLITE_ROW) {
      size_t used = strlen(epochs);
      snprintf(epochs + used, sizeof epochs - used, "%s%lld", used ? ", " : "",
               (long long)sqlite3_column_int64(statement, 0));
    }
    sqlite3_finalize(statement);
  }
  if (epoch < 0)
    return http_respond_error(request, MHD_HTTP_NOT_FOUND, "experiment %lld has no checkpoint yet", (long long)id);
  return http_respond_error(request, MHD_HTTP_NOT_FOUND, "experiment %lld has no checkpoint of epoch %lld (it has: %s)",
                            (long long)id, epoch, epochs[0] ? epochs : "none");
}

static int export__attachment(http_request_t *request, struct MHD_Response *response, const char *filename) {
  if (!response) return -ENOMEM;
  char disposition[128];
  snprintf(disposition, sizeof disposition, "attachment; filename=\"%s\"", filename);
  MHD_add_response_header(response, "Content-Type", "application/octet-stream");
  MHD_add_response_header(response, "Content-Disposition", disposition);
  int rc = http_respond(request, MHD_HTTP_OK, response);
  return rc;
}

int export_handle_checkpoint(db_t *db, http_request_t *request) {
  const int64_t id = http_path_id(request);
  char segment[32], path[4096];
  if (http_path_segment(request, 4, segment, sizeof segment) != 0)
    return http_respond_error(request, MHD_HTTP_BAD_REQUEST, "epoch: must be a number");
  char *end;
  errno = 0;
  long long epoch = strtoll(segment, &end, 10);
  if (errno || *end || end == segment || epoch < 0 || epoch > 1000000)
    return http_respond_error(request, MHD_HTTP_BAD_REQUEST, "epoch: must be an integer from 0, not \"%s\"", segment);
  long long found;
  int rc = export__find(db, id, epoch, path, sizeof path, &found);
  if (rc == -ENOENT) return export__missing(db, request, id, epoch);
  if (rc) return rc;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat info;
  if (fd < 0 || fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    int error = errno;
    if (fd >= 0) close(fd);
    return http_respond_error(request, MHD_HTTP_GONE, "experiment %lld's checkpoint of epoch %lld is gone from disk: "
                              "%s", (long long)id, epoch, strerror(error ? error : EINVAL));
  }
  char filename[96];
  snprintf(filename, sizeof filename, "experiment-%lld-epoch-%04lld.ckpt", (long long)id, epoch);
  struct MHD_Response *response = MHD_create_response_from_fd((uint64_t)info.st_size, fd); /* takes the fd */
  if (!response) close(fd);
  return export__attachment(request, response, filename);
}

/* The safetensors file of the checkpoint at `path` into *out. Errors name the reason. */
static int export__safetensors(const char *path, int64_t id, long long epoch, char **out, size_t *length,
                               char *error, size_t error_size) {
  ckpt_t ckpt;
  int rc = ckpt_open(path, &ckpt, error, error_size);
  if (rc) return rc;
  cfg_experiment_t *config = malloc(sizeof *config);
  cfg_errors_t *errors = malloc(sizeof *errors);
  model_tensor_t *tensors = malloc(MODEL_MAX_TENSORS * sizeof *tensors);
  json_t *metadata = NULL;
  char *config_text = NULL;
  if (!config || !errors || !tensors) {
    rc = util_error(error, error_size, -ENOMEM, "out of memory");
    goto done;
  }
  const json_t *stored = json_object_get(ckpt_meta(&ckpt), "config");
  if (cfg_from_json(stored, config, errors) != 0) {
    rc = util_error(error, error_size, -EINVAL, "%s: its config does not parse: %s: %s", path, errors->items[0].path,
                    errors->items[0].message);
    goto done;
  }
  size_t total;
  int n = model_tensors(config, tensors, &total);
  const ckpt_tensor_t *params = ckpt_tensor(&ckpt, "params");
  if (n < 0 || !params || params->dtype != CKPT_F32 || params->count != total) {
    rc = util_error(error, error_size, -EPROTO, "%s: its parameters do not match its config's layers (%zu floats "
                    "expected)", path, total);
    goto done;
  }
  config_text = json_dumps(stored, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
  char number[32];
  metadata = json_pack("{s:s, s:s}", "format", "pt", "config", config_text ? config_text : "{}");
  snprintf(number, sizeof number, "%lld", (long long)id);
  json_object_set_new(metadata, "experiment", json_string(number));
  snprintf(number, sizeof number, "%lld", epoch);
  json_object_set_new(metadata, "epoch", json_string(number));
  rc = safetensors_write(tensors, n, params->data, metadata, out, length);
  if (rc) util_error(error, error_size, rc, "out of memory");
done:
  json_decref(metadata);
  free(config_text);
  free(config);
  free(errors);
  free(tensors);
  ckpt_close(&ckpt);
  return rc;
}

int export_handle_export(db_t *db, http_request_t *request) {
  const int64_t id = http_path_id(request);
  const char *format = http_query(request, "format");
  if (format && strcmp(format, "safetensors") != 0)
    return http_respond_error(request, MHD_HTTP_BAD_REQUEST, "format: \"%s\" is not one of: safetensors", format);
  long long epoch = -1;
  const char *epoch_text = http_query(request, "epoch");
  if (epoch_text) {
    char *end;
    errno = 0;
    epoch = strtoll(epoch_text, &end, 10);
    if (errno || *end || end == epoch_text || epoch < 0 || epoch > 1000000)
      return http_respond_error(request, MHD_HTTP_BAD_REQUEST, "epoch: must be an integer from 0, not \"%s\"",
                                epoch_text);
  }
  char path[4096], error[1024];
  long long found;
  int rc = export__find(db, id, epoch, path, sizeof path, &found);
  if (rc == -ENOENT) return export__missing(db, request, id, epoch);
  if (rc) return rc;
  char *file = NULL;
  size_t length;
  rc = export__safetensors(path, id, found, &file, &length, error, sizeof error);
  if (rc == -ENOMEM) return rc;
  if (rc) return http_respond_error(request, MHD_HTTP_CONFLICT, "cannot export: %s", error);
  char filename[96];
  snprintf(filename, sizeof filename, "experiment-%lld-epoch-%04lld.safetensors", (long long)id, found);
  struct MHD_Response *response = MHD_create_response_from_buffer(length, file, MHD_RESPMEM_MUST_FREE);
  if (!response) free(file);
  return export__attachment(request, response, filename);
}
