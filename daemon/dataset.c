/* dataset.c — the dataset registry (dataset.h): the routes, the `datasets` table, the
 * reading on the thread pool, and filling a submitted config's dataset in.
 *
 * A registration is one job: the loop checks the request (name, format, paths inside the
 * datasets directory), the thread pool reads every file through worker/dataset_formats.c
 * (checksum, validation) and computes the statistics and samples, and the loop stores the
 * row and answers. The same job computes a dataset registered without statistics
 * (Fashion-MNIST at first start) when it is first asked for. */
#include "dataset.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset_formats.h"
#include "dataset_statistics.h"
#include "util.h"

#define DATASET_NAME_MAX 64
#define DATASET_MAX_JOBS 2     /* registrations reading at once: each holds a dataset in memory */

struct dataset_registry {
  uv_loop_t *loop;
  db_t *db;
  char dir[PATH_MAX];          /* resolved */
  int running;
};

/* Fashion-MNIST's garments, as the worker's metrics name them apart (worker/data.c). */
static const char *const dataset__fashion_names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/* ---------------------------------------------------------------------------------------
 * The table */

/* The row of `name` as the API shows it (docs/api.md), NULL when there is none. With
 * `samples`, the samples JSON alone. */
static json_t *dataset__row(dataset_registry_t *registry, const char *name, int samples) {
  sqlite3_stmt *statement = NULL;
  json_t *result = NULL;
  const char *sql = samples ? "SELECT samples FROM datasets WHERE name = ?1"
                            : "SELECT name, source, checksum, classes, channels, height, width, train_size, "
                              "test_size, class_names, statistics, registered_at FROM datasets WHERE name = ?1";
  if (sqlite3_prepare_v2(db_sqlite(registry->db), sql, -1, &statement, NULL) != SQLITE_OK) return NULL;
  sqlite3_bind_text(statement, 1, name, -1, SQLITE_TRANSIENT);
  if (sqlite3_step(statement) == SQLITE_ROW) {
    if (samples) {
      const char *text = (const char *)sqlite3_column_text(statement, 0);
      result = text ? json_loads(text, 0, NULL) : json_null();
    } else {
      const char *source = (const char *)sqlite3_column_text(statement, 1);
      const char *checksum = (const char *)sqlite3_column_text(statement, 2);
      const char *names = (const char *)sqlite3_column_text(statement, 9);
      const char *statistics = (const char *)sqlite3_column_text(statement, 10);
      json_t *input = sqlite3_column_type(statement, 4) == SQLITE_NULL
                          ? json_null()
                          : json_pack("[i, i, i]", sqlite3_column_int(statement, 4), sqlite3_column_int(statement, 5),
                                      sqlite3_column_int(statement, 6));
      result = json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:f}", "name",
                         (const char *)sqlite3_column_text(statement, 0), "source",
                         source ? json_loads(source, 0, NULL) : json_null(), "checksum",
                         checksum ? json_string(checksum) : json_null(), "classes",
                         sqlite3_column_type(statement, 3) == SQLITE_NULL ? json_null()
                                                                          : json_integer(sqlite3_column_int(statement, 3)),
                         "input", input, "train_size",
                         sqlite3_column_type(statement, 7) == SQLITE_NULL ? json_null()
                                                                          : json_integer(sqlite3_column_int(statement, 7)),
                         "test_size",
                         sqlite3_column_type(statement, 8) == SQLITE_NULL ? json_null()
                                                                          : json_integer(sqlite3_column_int(statement, 8)),
                         "class_names", names ? json_loads(names, 0, NULL) : json_null(), "statistics",
                         statistics ? json_loads(statistics, 0, NULL) : json_null(), "registered_at",
                         sqlite3_column_double(statement, 11));
    }
  }
  sqlite3_finalize(statement);
  return result;
}

/* ---------------------------------------------------------------------------------------
 * Reading, on the thread pool */

typedef struct {
  uv_work_t work;
  dataset_registry_t *registry;
  http_request_t *request;
  int fresh;                    /* a registration (201), not the first look at a known one */
  char name[DATASET_NAME_MAX];
  cfg_dataset_source_t source;
  json_t *class_names;          /* given (Fashion-MNIST's), or NULL: the names file's */
  /* Out: */
  int rc;
  char error[1024];
  dataset_t set;
  json_t *statistics, *samples;
  unsigned status;              /* the answer's */
  json_t *answer;
} dataset__job_t;

static void dataset__read(uv_work_t *work) {
  dataset__job_t *job = work->data;
  job->rc = dataset_read(&job->set, &job->source, job->error, sizeof job->error);
  if (job->rc) return;
  job->statistics = dataset_statistics(&job->set);
  /* 8 a class (4 past 20 classes), fewer for large images: the samples stay under about
   * 4 MiB of pixels (5.3 MiB of base64), which the dashboard loads with the page. */
  const size_t budget = (size_t)4 << 20, per_image = (size_t)job->set.inputs * (size_t)job->set.classes;
  int per_class = job->set.classes <= 20 ? 8 : 4;
  while (per_class > 1 && (size_t)per_class * per_image > budget) per_class--;
  job->samples = dataset_samples(&job->set, per_class);
  if (!job->statistics || !job->samples) {
    job->rc = -ENOMEM;
    snprintf(job->error, sizeof job->error, "out of memory computing the statistics");
  }
}

static int dataset__store(dataset__job_t *job) {
  dataset_registry_t *registry = job->registry;
  json_t *source = json_object();
  job->source.float_values = job->set.is_float;
  cfg_dataset_source_to_json(&job->source, source);
  json_object_set_new(source, "classes", json_integer(job->source.classes));
  json_t *names = job->class_names ? json_incref(job->class_names) : NULL;
  if (!names && job->set.n_names > 0) {
    names = json_array();
    for (int c = 0; c < job->set.n_names; c++) json_array_append_new(names, json_string(job->set.names[c]));
  }
  char *source_text = json_dumps(source, JSON_COMPACT);
  char *names_text = names ? json_dumps(names, JSON_COMPACT) : NULL;
  char *statistics_text = json_dumps(job->statistics, JSON_COMPACT);
  char *samples_text = json_dumps(job->samples, JSON_COMPACT);
  json_decref(source);
  json_decref(names);
  int rc = -ENOMEM;
  sqlite3_stmt *statement = NULL;
  if (!source_text || !statistics_text || !samples_text) goto done;
  rc = -EIO;
  if (sqlite3_prepare_v2(db_sqlite(registry->db),
                         "INSERT OR REPLACE INTO datasets (name, source, checksum, classes, channels, height, width, "
                         "train_size, test_size, class_names, statistics, samples, registered_at) VALUES (?1, ?2, ?3, "
                         "?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, coalesce((SELECT registered_at FROM datasets WHERE "
                         "name = ?1), strftime('%s', 'now')))",
                         -1, &statement, NULL) != SQLITE_OK)
    goto done;
  sqlite3_bind_text(statement, 1, job->name, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 2, source_text, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 3, job->set.checksum, -1, SQLITE_STATIC);
  sqlite3_bind_int(statement, 4, job->set.classes);
  sqlite3_bind_int(statement, 5, job->set.input.channels);
  sqlite3_bind_int(statement, 6, job->set.input.height);
  sqlite3_bind_int(statement, 7, job->set.input.width);
  sqlite3_bind_int(statement, 8, job->set.train.n);
  sqlite3_bind_int(statement, 9, job->set.test.n);
  if (names_text) sqlite3_bind_text(statement, 10, names_text, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 11, statistics_text, -1, SQLITE_STATIC);
  sqlite3_bind_text(statement, 12, samples_text, -1, SQLITE_STATIC);
  rc = sqlite3_step(statement) == SQLITE_DONE ? 0 : -EIO;
  if (rc) fprintf(stderr, "mapsaged: datasets: %s\n", sqlite3_errmsg(db_sqlite(registry->db)));
done:
  sqlite3_finalize(statement);
  free(source_text);
  free(names_text);
  free(statistics_text);
  free(samples_text);
  return rc;
}

static int dataset__answer(http_request_t *request) {
  dataset__job_t *job = http_context(request);
  http_set_context(request, NULL);
  unsigned status = job->status;
  json_t *answer = job->answer;
  free(job);
  return http_respond_json(request, status, answer);
}

static void dataset__after_read(uv_work_t *work, int status) {
  dataset__job_t *job = work->data;
  job->registry->running--;
  if (status == UV_ECANCELED) {
    job->status = MHD_HTTP_SERVICE_UNAVAILABLE;
    job->answer = json_pack("{s:s}", "error", "the daemon is stopping");
  } else if (job->rc) {
    job->status = job->rc == -ENOMEM ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_REQUEST;
    job->answer = json_pack("{s:s, s:[{s:s, s:o}]}", "error", "invalid dataset", "errors", "path", "files",
                            "message", http_json_text(job->error));
  } else if (dataset__store(job) != 0) {
    job->status = MHD_HTTP_SERVICE_UNAVAILABLE;
    job->answer = json_pack("{s:s}", "error", "the dataset could not be stored");
  } else {
    job->status = job->fresh ? MHD_HTTP_CREATED : MHD_HTTP_OK;
    job->answer = dataset__row(job->registry, job->name, 0);
    if (!job->answer) job->status = MHD_HTTP_INTERNAL_SERVER_ERROR, job->answer = json_pack("{s:s}", "error", "?");
  }
  dataset_free(&job->set);
  json_decref(job->statistics);
  json_decref(job->samples);
  json_decref(job->class_names);
  http_resume(job->request); /* MHD then calls dataset__answer() */
}

/* Queues the reading of `job` and parks its request; answers 503 itself when it cannot. */
static int dataset__start(dataset__job_t *job) {
  http_request_t *request = job->request;
  if (job->registry->running >= DATASET_MAX_JOBS) {
    json_decref(job->class_names);
    free(job);
    return http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE, "%d datasets are being read already; retry "
                              "shortly", DATASET_MAX_JOBS);
  }
  job->work.data = job;
  int result = uv_queue_work(job->registry->loop, &job->work, dataset__read, dataset__after_read);
  if (result != 0) {
    json_decref(job->class_names);
    free(job);
    return http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot read the dataset: %s",
                              uv_strerror(result));
  }
  job->registry->running++;
  http_set_context(request, job);
  http_suspend(request, dataset__answer);
  return 0;
}

/* ---------------------------------------------------------------------------------------
 * Registration: the request */

/* A file of the request: relative to the datasets directory, or absolute inside it;
 * resolved, and a regular file (a FIFO would hang the reader). */
static int dataset__resolve(dataset_registry_t *registry, const char *given, char *out, char *error,
                            size_t error_size) {
  char joined[PATH_MAX * 2];
  if (given[0] != '/') {
    snprintf(joined, sizeof joined, "%s/%s", registry->dir, given);
    given = joined;
  }
  char resolved[PATH_MAX];
  if (realpath(given, resolved) == NULL)
    return util_error(error, error_size, -errno, "%s: %s", given, strerror(errno));
  size_t length = strlen(registry->dir);
  if (strncmp(resolved, registry->dir, length) != 0 || resolved[length] != '/')
    return util_error(error, error_size, -EACCES, "%s: must be inside the datasets directory (%s)", given,
                      registry->dir);
  struct stat info;
  if (stat(resolved, &info) != 0 || !S_ISREG(info.st_mode))
    return util_error(error, error_size, -EINVAL, "%s: not a regular file", given);
  if (strlen(resolved) >= CFG_PATH_MAX)
    return util_error(error, error_size, -ENAMETOOLONG, "%s: path too long", given);
  util_strlcpy(out, resolved, CFG_PATH_MAX);
  return 0;
}

static const char *dataset__base(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

static int dataset__ends_with(const char *text, const char *suffix) {
  size_t a = strlen(text), b = strlen(suffix);
  return a >= b && strcmp(text + a - b, suffix) == 0;
}

/* The format a file's name suggests, or NULL. */
static const char *dataset__guess_format(const char *base) {
  char name[256];
  util_strlcpy(name, base, sizeof name);
  if (dataset__ends_with(name, ".gz")) name[strlen(name) - 3] = 0;
  if (dataset__ends_with(name, ".npz")) return "npz";
  if (dataset__ends_with(name, ".npy")) return "npy";
  if (dataset__ends_with(name, ".csv")) return "csv";
  if (strstr(name, "ubyte") || strstr(name, "idx")) return "idx";
  if (dataset__ends_with(name, ".bin")) return strcmp(name, "train.bin") == 0 || strcmp(name, "test.bin") == 0
                                                   ? "cifar100" : "cifar10";
  return NULL;
}

static int dataset__is_labels(const char *base) { return strstr(base, "label") != NULL || base[0] == 'y'; }

static int dataset__by_name(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

/* "files": [...] sorted into train, test and names by their names (docs/datasets.md). */
static int dataset__sort_files(cfg_dataset_source_t *source, char (*files)[CFG_PATH_MAX], int n, char *error,
                               size_t error_size) {
  char (*names)[CFG_PATH_MAX] = NULL;
  for (int i = 0; i < n; i++) {
    const char *base = dataset__base(files[i]);
    if (dataset__ends_with(base, ".txt")) {
      /* CIFAR-100 comes with coarse and fine names: the labels are the fine ones. */
      if (!source->names[0] || strstr(base, "fine")) util_strlcpy(source->names, files[i], CFG_PATH_MAX);
      continue;
    }
    if (!source->format[0]) {
      const char *format = dataset__guess_format(base);
      if (!format)
        return util_error(error, error_size, -EINVAL, "%s: cannot tell its format from its name: give \"format\"",
                          base);
      util_strlcpy(source->format, format, sizeof source->format);
    }
    int test = strstr(base, "test") != NULL || strstr(base, "t10k") != NULL;
    if (strcmp(source->format, "npz") == 0) test = 0; /* one archive holds both */
    names = test ? source->test : source->train;
    int *count = test ? &source->n_test : &source->n_train;
    if (*count == CFG_DATASET_MAX_FILES)
      return util_error(error, error_size, -E2BIG, "more than %d %s files", CFG_DATASET_MAX_FILES,
                        test ? "test" : "training");
    util_strlcpy(names[(*count)++], files[i], CFG_PATH_MAX);
  }
  if (strcmp(source->format, "npz") == 0 && source->n_train == 1 && source->n_test == 0) {
    util_strlcpy(source->test[0], source->train[0], CFG_PATH_MAX);
    source->n_test = 1;
  }
  /* Pairs: images first, then labels; batches in name order. */
  for (int t = 0; t < 2; t++) {
    char(*list)[CFG_PATH_MAX] = t ? source->test : source->train;
    int count = t ? source->n_test : source->n_train;
    qsort(list, (size_t)count, CFG_PATH_MAX, dataset__by_name);
    if (count == 2 && dataset__is_labels(dataset__base(list[0])) && !dataset__is_labels(dataset__base(list[1]))) {
      char swap[CFG_PATH_MAX];
      memcpy(swap, list[0], CFG_PATH_MAX);
      memcpy(list[0], list[1], CFG_PATH_MAX);
      memcpy(list[1], swap, CFG_PATH_MAX);
    }
  }
  if (source->n_train == 0 || source->n_test == 0)
    return util_error(error, error_size, -EINVAL, "no %s files among them (test files have \"test\" or \"t10k\" in "
                      "their names)", source->n_train == 0 ? "training" : "test");
  return 0;
}

static int dataset__refuse(http_request_t *request, const char *path, const char *message) {
  return http_respond_json(request, MHD_HTTP_BAD_REQUEST,
                           json_pack("{s:s, s:[{s:s, s:o}]}", "error", "invalid dataset", "errors", "path", path,
                                     "message", http_json_text(message)));
}

static int dataset__valid_name(const char *name) {
  size_t length = strlen(name);
  return length > 0 && length < DATASET_NAME_MAX &&
         strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == length && name[0] != '.';
}

/* The request's name: valid, not the generated set's, not taken. Returns 0, or the result
 * of the answer it gave (1 when that answer was queued). */
static int dataset__check_name(dataset_registry_t *registry, http_request_t *request, const json_t *root,
                               const char **out) {
  static const char *const known[] = {"name", "format", "files", "train", "test", "names", "layout", "classes", NULL};
  const char *key;
  json_t *value;
  json_object_foreach((json_t *)root, key, value) {
    int ok = 0;
    for (int i = 0; known[i]; i++) ok |= strcmp(key, known[i]) == 0;
    if (!ok) {
      int result = dataset__refuse(request, key, "unknown field (expected name, format, files or train and test, "
                                                 "names, layout, classes)");
      return result ? result : 1;
    }
  }
  const char *name = json_string_value(json_object_get(root, "name"));
  int result = 0;
  if (!name || !dataset__valid_name(name))
    result = dataset__refuse(request, "name", "must be 1 to 63 letters, digits, _ - . (not starting with .)");
  else if (strcmp(name, "synthetic") == 0)
    result = dataset__refuse(request, "name", "\"synthetic\" is the generated dataset's name");
  else {
    json_t *existing = dataset__row(registry, name, 0);
    if (!existing) {
      *out = name;
      return 0;
    }
    json_decref(existing);
    result = http_respond_error(request, MHD_HTTP_CONFLICT, "name: a dataset \"%s\" is registered already (a "
                                "changed dataset needs a new name: runs refer to it by name)", name);
  }
  return result ? result : 1;
}

/* "files" (sorted by their names) or "train" and "test", each resolved inside the datasets
 * directory, into `source`. Returns 0, or -EINVAL with the reason in `error` and the
 * request's field it concerns in `*field`. */
static int dataset__resolve_files(dataset_registry_t *registry, const json_t *listed, cfg_dataset_source_t *source,
                                  const char **field, char *error, size_t error_size) {
  int rc = 0;
  *field = listed ? "files" : "train";
  if (!listed) {
    for (int i = 0; !rc && i < source->n_train; i++)
      rc = dataset__resolve(registry, source->train[i], source->train[i], error, error_size);
    *field = "test";
    for (int i = 0; !rc && i < source->n_test; i++)
      rc = dataset__resolve(registry, source->test[i], source->test[i], error, error_size);
  } else {
    const size_t count = json_array_size(listed);
    if (!json_is_array(listed) || count < 1 || count > 2 * CFG_DATASET_MAX_FILES)
      return util_error(error, error_size, -EINVAL, "must be an array of 1 to %d file paths", 2 * CFG_DATASET_MAX_FILES);
    char (*resolved)[CFG_PATH_MAX] = calloc(count, CFG_PATH_MAX);
    if (!resolved) return util_error(error, error_size, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < count; i++) {
      const char *given = json_string_value(json_array_get(listed, i));
      rc = given ? dataset__resolve(registry, given, resolved[i], error, error_size)
                 : util_error(error, error_size, -EINVAL, "item %zu must be a path", i);
    }
    source->n_train = source->n_test = 0;
    if (!rc) rc = dataset__sort_files(source, resolved, (int)count, error, error_size);
    free(resolved);
  }
  if (!rc && source->names[0]) {
    *field = "names";
    rc = dataset__resolve(registry, source->names, source->names, error, error_size);
  }
  return rc;
}

int dataset_handle_register(dataset_registry_t *registry, http_request_t *request) {
  size_t length;
  const char *body = http_body(request, &length);
  json_t *root = json_loadb(body, length, JSON_REJECT_DUPLICATES, NULL), *fields = NULL;
  dataset__job_t *job = NULL;
  cfg_errors_t *errors = NULL;
  const char *name = NULL;
  int result;
  if (!json_is_object(root)) {
    json_decref(root);
    return dataset__refuse(request, "", "the body must be a JSON object like {\"name\": \"cifar10\", \"files\": "
                                        "[\"cifar10/data_batch_1.bin\", …]}");
  }
  if ((result = dataset__check_name(registry, request, root, &name)) != 0) {
    result = result > 0 ? 0 : result;
    goto done;
  }
  const json_t *files = json_object_get(root, "files");
  if (files && (json_object_get(root, "train") || json_object_get(root, "test"))) {
    result = dataset__refuse(request, "files", "give either files or train and test, not both");
    goto done;
  }
  job = calloc(1, sizeof *job);
  errors = calloc(1, sizeof *errors);
  fields = json_deep_copy(root);
  if (!job || !errors || !fields) {
    result = -ENOMEM;
    goto done;
  }
  job->registry = registry;
  job->request = request;
  job->fresh = 1;
  util_strlcpy(job->name, name, sizeof job->name);
  /* The format's fields through the config's own parser; "files" is sorted below. */
  json_object_del(fields, "name");
  json_object_del(fields, "files");
  if (files) {
    json_object_set_new(fields, "train", json_pack("[s]", "-"));
    json_object_set_new(fields, "test", json_pack("[s]", "-"));
    if (!json_object_get(fields, "format")) json_object_set_new(fields, "format", json_string("idx"));
  }
  cfg_dataset_source_parse(fields, "", &job->source, errors);
  if (files && !json_object_get(root, "format")) job->source.format[0] = 0;
  if (errors->count > 0) {
    result = http_respond_json(request, MHD_HTTP_BAD_REQUEST, json_pack("{s:s, s:o}", "error", "invalid dataset",
                                                                        "errors", cfg_errors_to_json(errors)));
    goto done;
  }
  char error[1024];
  const char *field;
  if (dataset__resolve_files(registry, files, &job->source, &field, error, sizeof error) != 0) {
    result = dataset__refuse(request, field, error);
    goto done;
  }
  result = dataset__start(job);
  job = NULL;
done:
  free(job);
  free(errors);
  json_decref(fields);
  json_decref(root);
  return result;
}

/* ---------------------------------------------------------------------------------------
 * Reading the registry */

int dataset_handle_list(dataset_registry_t *registry, http_request_t *request) {
  sqlite3_stmt *statement = NULL;
  if (sqlite3_prepare_v2(db_sqlite(registry->db), "SELECT name FROM datasets ORDER BY name", -1, &statement, NULL) !=
      SQLITE_OK)
    return -EIO;
  json_t *list = json_array();
  while (sqlite3_step(statement) == SQLITE_ROW) {
    json_t *row = dataset__row(registry, (const char *)sqlite3_column_text(statement, 0), 0);
    if (!row) continue;
    json_t *statistics = json_object_get(row, "statistics");
    /* The list shows the warnings, not the counts: the page of one dataset has those. */
    json_object_set(row, "warnings", statistics ? json_object_get(statistics, "warnings") : NULL);
    if (!json_object_get(row, "warnings")) json_object_set_new(row, "warnings", json_null());
    json_object_del(row, "statistics");
    json_array_append_new(list, row);
  }
  sqlite3_finalize(statement);
  return http_respond_json(request, MHD_HTTP_OK, json_pack("{s:o, s:s}", "datasets", list, "datasets_dir",
                                                           registry->dir));
}

static int dataset__path_name(http_request_t *request, char *name) {
  if (http_path_segment(request, 2, name, DATASET_NAME_MAX) != 0) return -ENOENT;
  return 0;
}

int dataset_handle_get(dataset_registry_t *registry, http_request_t *request) {
  char name[DATASET_NAME_MAX];
  json_t *row = dataset__path_name(request, name) == 0 ? dataset__row(registry, name, 0) : NULL;
  if (!row) return http_respond_error(request, MHD_HTTP_NOT_FOUND, "no dataset %s", http_path(request) + 14);
  if (!json_is_null(json_object_get(row, "statistics"))) return http_respond_json(request, MHD_HTTP_OK, row);
  /* Registered without being read (Fashion-MNIST at first start): read it now. */
  dataset__job_t *job = calloc(1, sizeof *job);
  cfg_errors_t *errors = calloc(1, sizeof *errors);
  if (!job || !errors) {
    free(job);
    free(errors);
    json_decref(row);
    return -ENOMEM;
  }
  job->registry = registry;
  job->request = request;
  util_strlcpy(job->name, name, sizeof job->name);
  cfg_dataset_source_parse(json_object_get(row, "source"), "source", &job->source, errors);
  job->class_names = json_incref(json_object_get(row, "class_names"));
  if (json_is_null(job->class_names)) {
    json_decref(job->class_names);
    job->class_names = NULL;
  }
  json_decref(row);
  int bad = errors->count > 0;
  free(errors);
  if (bad) {
    json_decref(job->class_names);
    free(job);
    return http_respond_error(request, MHD_HTTP_INTERNAL_SERVER_ERROR, "dataset %s: its stored source is damaged",
                              name);
  }
  return dataset__start(job);
}

int dataset_handle_samples(dataset_registry_t *registry, http_request_t *request) {
  char name[DATASET_NAME_MAX];
  json_t *samples = dataset__path_name(request, name) == 0 ? dataset__row(registry, name, 1) : NULL;
  if (!samples) return http_respond_error(request, MHD_HTTP_NOT_FOUND, "no dataset %s", name);
  if (json_is_null(samples))
    return http_respond_error(request, MHD_HTTP_CONFLICT, "dataset %s has not been read yet: GET /api/datasets/%s "
                              "reads it", name, name);
  return http_respond_json(request, MHD_HTTP_OK, samples);
}

/* ---------------------------------------------------------------------------------------
 * Deleting */

/* The runs that still need `name`'s files (queued, running, or interrupted and so runnable
 * again), as "3, 5, 8" (the first 20), into `out`; 0 when there are none, 1 when there are,
 * -EIO when the query failed. */
static int dataset__users(dataset_registry_t *registry, const char *name, char *out, size_t out_size) {
  sqlite3_stmt *statement = NULL;
  if (sqlite3_prepare_v2(db_sqlite(registry->db),
                         "SELECT group_concat(id, ', '), count(*) FROM (SELECT id FROM experiments WHERE dataset = ?1 "
                         "AND status IN ('queued', 'running', 'interrupted') ORDER BY id LIMIT 20)",
                         -1, &statement, NULL) != SQLITE_OK)
    return -EIO;
  sqlite3_bind_text(statement, 1, name, -1, SQLITE_STATIC);
  int result = -EIO;
  if (sqlite3_step(statement) == SQLITE_ROW) {
    result = sqlite3_column_int(statement, 1) > 0;
    if (result) util_strlcpy(out, (const char *)sqlite3_column_text(statement, 0), out_size);
  }
  sqlite3_finalize(statement);
  return result;
}

int dataset_handle_delete(dataset_registry_t *registry, http_request_t *request) {
  char name[DATASET_NAME_MAX], users[256];
  if (dataset__path_name(request, name) != 0)
    return http_respond_error(request, MHD_HTTP_NOT_FOUND, "no dataset %s", http_path(request) + 14);
  if (strcmp(name, "fashion-mnist") == 0)
    return http_respond_error(request, MHD_HTTP_CONFLICT, "fashion-mnist is the default dataset: it is not deleted");
  json_t *row = dataset__row(registry, name, 0);
  if (!row) return http_respond_error(request, MHD_HTTP_NOT_FOUND, "no dataset %s", name);
  json_decref(row);
  /* A read in progress writes its row when it ends (INSERT OR REPLACE), which would bring a
   * deleted dataset back: wait for it. */
  if (registry->running > 0)
    return http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE,
                              "a dataset is being read: delete %s when that is done", name);
  int used = dataset__users(registry, name, users, sizeof users);
  if (used < 0) return used;
  if (used)
    return http_respond_error(request, MHD_HTTP_CONFLICT,
                              "dataset %s is used by experiments %s (queued or running): cancel them first, or wait "
                              "for them to end", name, users);
  sqlite3_stmt *statement = NULL;
  if (sqlite3_prepare_v2(db_sqlite(registry->db), "DELETE FROM datasets WHERE name = ?1", -1, &statement, NULL) !=
      SQLITE_OK)
    return -EIO;
  sqlite3_bind_text(statement, 1, name, -1, SQLITE_STATIC);
  int done = sqlite3_step(statement) == SQLITE_DONE;
  sqlite3_finalize(statement);
  if (!done) return -EIO;
  return http_respond_json(request, MHD_HTTP_OK, json_pack("{s:s, s:b}", "name", name, "deleted", 1));
}

/* ---------------------------------------------------------------------------------------
 * Runs */

void dataset_fill_config(dataset_registry_t *registry, json_t *root) {
  json_t *dataset = json_object_get(root, "dataset");
  const char *name = json_string_value(json_object_get(dataset, "name"));
  if (!registry || !name || strcmp(name, "fashion-mnist") == 0 || strcmp(name, "synthetic") == 0) return;
  json_t *row = dataset__row(registry, name, 0);
  if (!row || json_is_null(json_object_get(row, "checksum"))) {
    json_decref(row);
    return;
  }
  json_t *source = json_object_get(row, "source");
  const char *key;
  json_t *value;
  json_object_foreach(source, key, value) json_object_set(dataset, key, value);
  json_object_set(dataset, "checksum", json_object_get(row, "checksum"));
  json_object_set(dataset, "classes", json_object_get(row, "classes"));
  json_object_set(dataset, "input", json_object_get(row, "input"));
  json_object_set(dataset, "train_size", json_object_get(row, "train_size"));
  json_object_set(dataset, "test_size", json_object_get(row, "test_size"));
  json_decref(row);
}

int dataset_check_config(dataset_registry_t *registry, const cfg_experiment_t *config, const char *prefix,
                         cfg_errors_t *errors) {
  if (config->dataset.kind != CFG_DATASET_REGISTERED) return 0;
  char path[160];
  snprintf(path, sizeof path, "%sdataset.name", prefix);
  json_t *row = registry ? dataset__row(registry, config->dataset.name, 0) : NULL;
  if (!row) {
    cfg_add_error(errors, path, "\"%s\" is not a registered dataset (mapsage dataset ls, GET /api/datasets)",
                  config->dataset.name);
    return -EINVAL;
  }
  /* The files and checksum must be the registry's: the worker reads what the config says,
   * so nothing else on the machine may be named there (an arm's patch, a hand-made config). */
  static const char *const keys[] = {"format", "train", "test", "names", "layout", "values"};
  json_t *mine = json_object();
  cfg_dataset_source_to_json(&config->dataset.source, mine);
  const json_t *theirs = json_object_get(row, "source");
  int same = json_equal(json_object_get(row, "checksum"), json_object_get(mine, "checksum"));
  for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
    same &= json_equal(json_object_get(mine, keys[i]), json_object_get(theirs, keys[i])) ||
            (json_is_null(json_object_get(mine, keys[i])) && !json_object_get(theirs, keys[i]));
  json_decref(mine);
  json_decref(row);
  if (same) return 0;
  snprintf(path, sizeof path, "%sdataset", prefix);
  cfg_add_error(errors, path, "the files, format or checksum differ from the registered dataset \"%s\"'s: a run "
                "reads a registered dataset as registered (leave them out: the daemon fills them in)",
                config->dataset.name);
  return -EINVAL;
}

/* ---------------------------------------------------------------------------------------
 * Life */

int dataset_registry_create(uv_loop_t *loop, db_t *db, const char *datasets_dir, const char *fashion_dir,
                            dataset_registry_t **out, char *error, size_t error_size) {
  *out = NULL;
  int rc = util_make_directories(datasets_dir);
  if (rc) return util_error(error, error_size, rc, "--datasets-dir %s: %s", datasets_dir, strerror(-rc));
  dataset_registry_t *registry = calloc(1, sizeof *registry);
  if (!registry) return -ENOMEM;
  registry->loop = loop;
  registry->db = db;
  if (realpath(datasets_dir, registry->dir) == NULL) {
    rc = util_error(error, error_size, -errno, "--datasets-dir %s: %s", datasets_dir, strerror(errno));
    free(registry);
    return rc;
  }
  /* Fashion-MNIST: its files where --dataset-dir says, read when first asked for. */
  cfg_dataset_source_t source;
  dataset_fashion_mnist_source(&source, fashion_dir);
  json_t *object = json_object(), *names = json_array();
  cfg_dataset_source_to_json(&source, object);
  for (size_t c = 0; c < ARRAY_SIZE(dataset__fashion_names); c++)
    json_array_append_new(names, json_string(dataset__fashion_names[c]));
  char *source_text = json_dumps(object, JSON_COMPACT), *names_text = json_dumps(names, JSON_COMPACT);
  json_decref(object);
  json_decref(names);
  sqlite3_stmt *statement = NULL;
  rc = -EIO;
  if (source_text && names_text &&
      sqlite3_prepare_v2(db_sqlite(db),
                         "INSERT OR IGNORE INTO datasets (name, source, classes, channels, height, width, train_size, "
                         "test_size, class_names, registered_at) VALUES ('fashion-mnist', ?1, 10, 1, 28, 28, 60000, "
                         "10000, ?2, strftime('%s', 'now'))",
                         -1, &statement, NULL) == SQLITE_OK) {
    sqlite3_bind_text(statement, 1, source_text, -1, SQLITE_STATIC);
    sqlite3_bind_text(statement, 2, names_text, -1, SQLITE_STATIC);
    rc = sqlite3_step(statement) == SQLITE_DONE ? 0 : -EIO;
  }
  if (rc) util_error(error, error_size, rc, "registering fashion-mnist: %s", sqlite3_errmsg(db_sqlite(db)));
  sqlite3_finalize(statement);
  free(source_text);
  free(names_text);
  if (rc) {
    free(registry);
    return rc;
  }
  *out = registry;
  return 0;
}

void dataset_registry_free(dataset_registry_t *registry) { free(registry); }
