/* test_dataset_formats.c — the pieces of datasets in and models out that the integration
 * tests (tests/test_datasets.py, tests/test_export.py) reach only through files: SHA-256
 * against FIPS 180-4's vectors in any chunking; the in-memory parsers' refusals (.npy, zip,
 * CSV, safetensors) each with its reason; a registered dataset's config (sized from the
 * dataset, its missing fields named); and the parameter layout of worker/safetensors.c
 * against the one worker/nn.c builds, on networks with every parameterised layer kind. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config.h"
#include "dataset_formats.h"
#include "nn.h"
#include "safetensors.h"
#include "sha256.h"

static void hash_hex(const void *data, size_t length, size_t chunk, char out[65]) {
  sha256_t hash;
  sha256_init(&hash);
  for (size_t done = 0; done < length; done += chunk)
    sha256_update(&hash, (const char *)data + done, length - done < chunk ? length - done : chunk);
  sha256_final_hex(&hash, out);
}

static void test_sha256(void) {
  char hex[65];
  hash_hex("", 0, 1, hex);
  CHECK_STR("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", hex);
  hash_hex("abc", 3, 3, hex);
  CHECK_STR("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hex);
  const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  /* 56 bytes: the padding needs a second block. Every chunking gives the same digest. */
  for (size_t chunk = 1; chunk <= 64; chunk += 7) {
    hash_hex(two_blocks, strlen(two_blocks), chunk, hex);
    CHECK_STR("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", hex);
  }
  char *million = malloc(1000000);
  memset(million, 'a', 1000000);
  hash_hex(million, 1000000, 4096, hex);
  CHECK_STR("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", hex);
  free(million);
}

static int refused(int rc, const char *error, const char *words) {
  if (rc == 0 || strstr(error, words) == NULL) {
    fprintf(stderr, "expected a refusal with \"%s\", got %d \"%s\"\n", words, rc, error);
    return 0;
  }
  return 1;
}

static void test_npy(void) {
  /* '<f4' (2, 3), version 1. */
  static const char header[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  uint8_t file[256] = "\x93NUMPY\x01\x00";
  size_t header_length = strlen(header);
  file[8] = (uint8_t)header_length;
  memcpy(file + 10, header, header_length);
  float values[6] = {1, 2, 3, 4, 5, 6};
  memcpy(file + 10 + header_length, values, sizeof values);
  dataset_npy_t array;
  char error[512] = "";
  CHECK_INT(0, dataset_npy_parse(file, 10 + header_length + sizeof values, "a.npy", &array, error, sizeof error));
  CHECK_STR("f4", array.type);
  CHECK_INT(2, array.n_dims);
  CHECK_INT(6, array.count);
  CHECK(refused(dataset_npy_parse(file, 10 + header_length + 20, "a.npy", &array, error, sizeof error), error,
                "a.npy: truncated: the shape needs 24 bytes of data, the file has 20"));
  CHECK(refused(dataset_npy_parse((const uint8_t *)"PK\x03\x04........", 12, "b.npy", &array, error, sizeof error),
                error, "b.npy: not a .npy array"));
  memcpy(strstr((char *)file + 10, "False"), "True ", 5);
  CHECK(refused(dataset_npy_parse(file, 10 + header_length + sizeof values, "c.npy", &array, error, sizeof error),
                error, "Fortran-ordered arrays are not supported"));
  memcpy(strstr((char *)file + 10, "True "), "False", 5);
  memcpy(strstr((char *)file + 10, "<f4"), ">f4", 3);
  CHECK(refused(dataset_npy_parse(file, 10 + header_length + sizeof values, "d.npy", &array, error, sizeof error),
                error, "element type '>f4' is not supported"));
}

static void put_le16(uint8_t *p, unsigned v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put_le32(uint8_t *p, uint32_t v) { put_le16(p, v & 0xffffu), put_le16(p + 2, v >> 16); }

static void test_zip_and_csv(void) {
  char error[512] = "";
  uint8_t *member = NULL;
  size_t length;
  CHECK(refused(dataset_zip_member((const uint8_t *)"not a zip at all, not at all", 28, "e.npz", "x_train.npy", &member,
                                   &length, error, sizeof error), error, "e.npz: not a zip archive (.npz), or truncated"));
  /* An empty archive: just the end record. */
  static const uint8_t empty[22] = {0x50, 0x4b, 0x05, 0x06};
  CHECK_INT(-ENOENT, dataset_zip_member(empty, sizeof empty, "f.npz", "x_train.npy", &member, &length, error,
                                        sizeof error));
  CHECK(strstr(error, "no member x_train.npy (it has: none)") != NULL);
  /* A deflated member claiming more than deflate can make of its bytes (1032 to 1) is
   * refused before anything of that size is allocated: 11 bytes that claim 1,000,000. */
  uint8_t zip[160] = {0};
  const char name[] = "x_train.npy";
  const size_t name_length = sizeof name - 1, compressed = 11;
  const size_t central = 30 + name_length + compressed, end = central + 46 + name_length;
  put_le32(zip, 0x04034b50u); /* the local header */
  put_le16(zip + 26, (unsigned)name_length);
  memcpy(zip + 30, name, name_length);
  put_le32(zip + central, 0x02014b50u); /* the central directory's one entry */
  put_le16(zip + central + 10, 8);
  put_le32(zip + central + 20, (uint32_t)compressed);
  put_le32(zip + central + 24, 1000000u);
  put_le16(zip + central + 28, (unsigned)name_length);
  memcpy(zip + central + 46, name, name_length);
  put_le32(zip + end, 0x06054b50u); /* the end record */
  put_le16(zip + end + 8, 1);
  put_le16(zip + end + 10, 1);
  put_le32(zip + end + 12, (uint32_t)(46 + name_length));
  put_le32(zip + end + 16, (uint32_t)central);
  CHECK(refused(dataset_zip_member(zip, end + 22, "l.npz", "x_train.npy", &member, &length, error, sizeof error),
                error, "l.npz: x_train.npy: corrupt zip entry sizes (1000000 bytes claimed from 11 compressed)"));

  dataset_split_t split;
  int features, is_float;
  const char *text = "label,a,b\n2,0.5,1\n0,3,4\n";
  CHECK_INT(0, dataset_csv_parse(text, strlen(text), "g.csv", &split, &features, &is_float, error, sizeof error));
  CHECK_INT(2, split.n);
  CHECK_INT(2, features);
  CHECK_INT(1, is_float);
  CHECK_INT(2, split.labels[0]);
  CHECK(split.values[0] == 0.5f && split.values[3] == 4.0f);
  free(split.values);
  free(split.labels);
  text = "a,label\n7,1\n9,0\n"; /* the label column named in the header */
  CHECK_INT(0, dataset_csv_parse(text, strlen(text), "h.csv", &split, &features, &is_float, error, sizeof error));
  CHECK_INT(0, is_float);
  CHECK_INT(1, split.labels[0]);
  CHECK_INT(9, split.bytes[1]);
  free(split.bytes);
  free(split.labels);
  text = "1,2,3\n0,x,3\n";
  CHECK(refused(dataset_csv_parse(text, strlen(text), "i.csv", &split, &features, &is_float, error, sizeof error),
                error, "i.csv: line 2, field 2 is not a number"));
  text = "1.5,2,3\n";
  CHECK(refused(dataset_csv_parse(text, strlen(text), "j.csv", &split, &features, &is_float, error, sizeof error),
                error, "j.csv: line 1: label 1.5 is not an integer"));
  text = "label,a\n";
  CHECK(refused(dataset_csv_parse(text, strlen(text), "k.csv", &split, &features, &is_float, error, sizeof error),
                error, "k.csv: no rows of data"));
}

static void test_safetensors_refusals(void) {
  char error[512] = "";
  safetensors_t file;
  CHECK(refused(safetensors_parse((const uint8_t *)"\x10\0\0\0\0\0\0\0{}", 10, "a.st", &file, error, sizeof error),
                error, "a.st: not a safetensors file, or truncated"));
  const char *overlap = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
  uint8_t buffer[512] = {0};
  size_t n = strlen(overlap);
  buffer[0] = (uint8_t)n;
  memcpy(buffer + 8, overlap, n);
  CHECK(refused(safetensors_parse(buffer, 8 + n + 8, "b.st", &file, error, sizeof error), error, "overlap"));
  const char *sized = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}";
  n = strlen(sized);
  buffer[0] = (uint8_t)n;
  memcpy(buffer + 8, sized, n);
  CHECK(refused(safetensors_parse(buffer, 8 + n + 8, "c.st", &file, error, sizeof error), error,
                "tensor \"a\" has 8 bytes for 3 F32 elements"));
}

/* The layout of worker/safetensors.c against nn.c: every tensor inside the slab, none
 * overlapping, all of it covered, and each layer's weight where nn.c put it. */
static void test_layout_matches_nn(void) {
  static const char *const configs[] = {
      "{\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 32, \"name\": \"fc\"}, {\"type\": \"relu\"}, "
      "{\"type\": \"linear\", \"out\": 10}]}, \"epochs\": 3, \"grow\": [{\"epoch\": 2, \"after\": \"fc\", \"hidden\": 5}, "
      "{\"epoch\": 3, \"after\": \"fc\"}]}",
      "{\"model\": {\"layers\": [{\"type\": \"conv2d\", \"out\": 4, \"kernel\": 5}, {\"type\": \"relu\"}, "
      "{\"type\": \"maxpool\"}, {\"type\": \"conv2d\", \"out\": 3, \"padding\": 0}, {\"type\": \"dropout\"}, "
      "{\"type\": \"flatten\"}, {\"type\": \"linear\", \"out\": 10}]}, \"epochs\": 1}",
  };
  static cfg_experiment_t config;
  static cfg_errors_t errors;
  static model_tensor_t tensors[MODEL_MAX_TENSORS];
  for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
    CHECK_INT(0, cfg_parse(configs[c], strlen(configs[c]), &config, &errors));
    nn_model_t model;
    CHECK_INT(0, nn_model_create_inference(&model, &config, 2));
    size_t total;
    int n = model_tensors(&config, tensors, &total);
    CHECK(n > 0);
    CHECK_INT(model.n_params, total);
    char *covered = calloc(total, 1);
    for (int i = 0; i < n; i++) {
      size_t product = 1;
      for (int d = 0; d < tensors[i].n_dims; d++) product *= (size_t)tensors[i].shape[d];
      CHECK_INT(tensors[i].count, product);
      CHECK(tensors[i].offset + tensors[i].count <= total);
      for (size_t k = 0; k < tensors[i].count && tensors[i].offset + k < total; k++) covered[tensors[i].offset + k]++;
    }
    int once = 1;
    for (size_t k = 0; k < total; k++) once &= covered[k] == 1;
    CHECK(once);
    free(covered);
    for (int l = 0; l < config.n_layers + config.n_grow; l++) {
      if (model.layers[l].n_weight == 0) continue;
      char name[CFG_NAME_MAX + 16];
      snprintf(name, sizeof name, l < config.n_layers ? "%s.weight" : "%s.linear1.weight", model.layers[l].name);
      int found = 0;
      for (int i = 0; i < n; i++)
        if (strcmp(tensors[i].name, name) == 0) found = tensors[i].offset == model.layers[l].weight;
      CHECK(found);
    }
    nn_model_free(&model);
  }
}

static void test_registered_config(void) {
  static cfg_experiment_t config;
  static cfg_errors_t errors;
  const char *full = "{\"dataset\": {\"name\": \"rgb\", \"format\": \"npz\", \"train\": [\"/d/rgb.npz\"], "
                     "\"test\": [\"/d/rgb.npz\"], \"checksum\": \"ab\", \"classes\": 6, \"input\": [3, 12, 12], "
                     "\"train_size\": 900, \"test_size\": 240}, \"model\": {\"layers\": [{\"type\": \"conv2d\", "
                     "\"out\": 4}, {\"type\": \"flatten\"}, {\"type\": \"linear\", \"out\": 6}]}, \"epochs\": 1}";
  CHECK_INT(0, cfg_parse(full, strlen(full), &config, &errors));
  CHECK_INT(CFG_DATASET_REGISTERED, config.dataset.kind);
  CHECK_INT(6, cfg_classes(&config));
  CHECK_INT(3 * 12 * 12, cfg_inputs(&config));
  CHECK_INT(4 * 12 * 12, cfg_shape_size(&config.layers[1].shape));
  CHECK_INT(90, config.dataset.val_size); /* a tenth */
  /* The round trip keeps what the worker needs. */
  json_t *json = cfg_to_json(&config);
  static cfg_experiment_t again;
  CHECK_INT(0, cfg_from_json(json, &again, &errors));
  CHECK_STR("/d/rgb.npz", again.dataset.source.test[0]);
  CHECK_STR("ab", again.dataset.source.checksum);
  CHECK_INT(12, again.dataset.input.width);
  json_decref(json);

  const char *bare = "{\"dataset\": {\"name\": \"mine\", \"format\": \"csv\", \"train\": [], \"test\": [\"t\"]}, "
                     "\"model\": {\"layers\": [{\"type\": \"linear\", \"out\": 10}]}, \"epochs\": 1}";
  CHECK_INT(-EINVAL, cfg_parse(bare, strlen(bare), &config, &errors));
  int train = 0, classes = 0, input = 0, sizes = 0;
  for (int i = 0; i < errors.count; i++) {
    train |= strcmp(errors.items[i].path, "dataset.train") == 0;
    classes |= strcmp(errors.items[i].path, "dataset.classes") == 0;
    input |= strcmp(errors.items[i].path, "dataset.input") == 0;
    sizes |= strcmp(errors.items[i].path, "dataset.train_size") == 0;
  }
  CHECK(train && classes && input && sizes);
  const char *extra = "{\"dataset\": {\"name\": \"synthetic\", \"format\": \"csv\"}, \"model\": {\"layers\": "
                      "[{\"type\": \"linear\", \"out\": 10}]}, \"epochs\": 1}";
  CHECK_INT(-EINVAL, cfg_parse(extra, strlen(extra), &config, &errors));
  CHECK_STR("dataset.format", errors.items[0].path);
}

int main(void) {
  test_sha256();
  test_npy();
  test_zip_and_csv();
  test_safetensors_refusals();
  test_layout_matches_nn();
  test_registered_config();
  return check_summary();
}
