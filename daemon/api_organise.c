/* api_organise.c — the routes that keep runs in order (docs/api.md, "Organising"): PATCH
 * an experiment or a study (name, note, tags, archived), DELETE an experiment (its rows in
 * db_organise.c, its checkpoint files here), and the experiment list's options beyond
 * status and name (archived, tag, where, columns, sort, order, offset). Each bad input is
 * answered 400 naming the field and the reason; nothing is changed then. */
#include "api.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "study.h"
#include "util.h"

#define TAG_MAX 64
#define TAGS_MAX 32
#define NOTE_MAX 20000 /* bytes: a paragraph or a page, not a file */

static api_t *app(const http_request_t *request) { return http_app(request); }

/* A handler's answer to a bad input: 1 once the 400 is queued (the handler returns 0), or the
 * negative errno of queueing it. */
static int answered(int result) { return result == 0 ? 1 : result; }

static int respond_bad(http_request_t *request, const char *field, const char *reason) {
  return http_respond_error(request, MHD_HTTP_BAD_REQUEST, "%s: %s", field, reason);
}

/* A tag: 1–64 bytes of letters, digits and . _ - : / + (safe in a URL, a shell and a CSV). */
static int tag_is_valid(const char *tag) {
  size_t length = strlen(tag);
  if (length == 0 || length > TAG_MAX) return 0;
  for (const char *c = tag; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || strchr("._-:/+", *c)))
      return 0;
  return 1;
}

/* Checks a tag list; on a fault writes its message into `reason`, naming the element. */
static int check_tags(const json_t *tags, char *reason, size_t reason_size) {
  if (!json_is_array(tags)) {
    snprintf(reason, reason_size, "must be an array of strings");
    return -EINVAL;
  }
  if (json_array_size(tags) > TAGS_MAX) {
    snprintf(reason, reason_size, "at most %d tags, not %zu", TAGS_MAX, json_array_size(tags));
    return -EINVAL;
  }
  size_t i;
  json_t *tag;
  json_array_foreach(tags, i, tag) {
    if (!json_is_string(tag) || !tag_is_valid(json_string_value(tag))) {
      snprintf(reason, reason_size,
               "element %zu must be a tag: 1 to %d letters, digits or . _ - : / + (no spaces)", i, TAG_MAX);
      return -EINVAL;
    }
  }
  return 0;
}

/* The body of a PATCH as changes: 0, or 1 when a 400 was answered (or its negative errno). */
static int parse_changes(http_request_t *request, json_t *body, db_changes_t *changes) {
  *changes = (db_changes_t){.archived = -1};
  if (!json_is_object(body)) return answered(respond_bad(request, "body", "must be a JSON object"));
  static const char *const known[] = {"name", "note", "tags", "add_tags", "remove_tags", "archived"};
  const char *key;
  json_t *value;
  char reason[160];
  json_object_foreach(body, key, value) {
    size_t k = 0;
    while (k < ARRAY_SIZE(known) && strcmp(key, known[k]) != 0) k++;
    if (k == ARRAY_SIZE(known)) {
      int result = http_respond_error(request, MHD_HTTP_BAD_REQUEST,
                                      "%.64s: not a field that can be changed (name, note, tags, add_tags, "
                                      "remove_tags, archived)",
                                      key);
      return answered(result);
    }
    if (strcmp(key, "name") == 0) {
      if (!json_is_string(value) || json_string_length(value) >= CFG_TITLE_MAX)
        return answered(http_respond_error(request, MHD_HTTP_BAD_REQUEST, "name: must be a string of at most %d bytes",
                                  CFG_TITLE_MAX - 1));
      changes->name = json_string_value(value);
    } else if (strcmp(key, "note") == 0) {
      if (!json_is_string(value) || json_string_length(value) > NOTE_MAX)
        return answered(http_respond_error(request, MHD_HTTP_BAD_REQUEST, "note: must be a string of at most %d bytes",
                                  NOTE_MAX));
      changes->note = json_string_value(value);
    } else if (strcmp(key, "archived") == 0) {
      if (!json_is_boolean(value)) return answered(respond_bad(request, key, "must be true or false"));
      changes->archived = json_is_true(value);
    } else {
      if (check_tags(value, reason, sizeof reason) != 0) return answered(respond_bad(request, key, reason));
      if (strcmp(key, "tags") == 0) changes->tags = value;
      else if (strcmp(key, "add_tags") == 0) changes->add_tags = value;
      else changes->remove_tags = value;
    }
  }
  if (changes->name && memchr(changes->name, '\0', json_string_length(json_object_get(body, "name"))))
    return answered(respond_bad(request, "name", "must not hold a NUL character"));
  return 0;
}

/* The body, parsed: NULL when it is not JSON (the 400 answered; *answered set). */
static json_t *read_body(http_request_t *request, int *done) {
  size_t length = 0;
  const char *text = http_body(request, &length);
  json_error_t error;
  json_t *body = json_loadb(text ? text : "", length, 0, &error);
  *done = 0;
  if (body == NULL)
    *done = answered(http_respond_error(request, MHD_HTTP_BAD_REQUEST, "body: not JSON: %s (line %d, column %d)",
                                   error.text, error.line, error.column));
  return body;
}

int api_patch_experiment(http_request_t *request) {
  api_t *api = app(request);
  int64_t id = http_path_id(request);
  int done;
  json_t *body = read_body(request, &done);
  if (body == NULL) return done > 0 ? 0 : done;
  db_changes_t changes;
  int result = parse_changes(request, body, &changes);
  if (result == 0) {
    result = db_experiment_update(api->db, id, &changes);
    if (result == -ENOENT) result = http_respond_error(request, MHD_HTTP_NOT_FOUND, "no experiment %lld", (long long)id);
    else if (result == 0) {
      sse_publish_experiment(api->hub, id); /* the lists show the new name, tags, archive mark */
      char *text;
      size_t length;
      result = db_experiment_text(api->db, id, 1, &text, &length);
      if (result == 0) result = http_respond_text(request, MHD_HTTP_OK, "application/json", text, length);
    }
  } else if (result > 0) {
    result = 0;
  }
  json_decref(body);
  return result;
}

int api_patch_study(http_request_t *request) {
  api_t *api = app(request);
  int64_t id = http_path_id(request);
  int done;
  json_t *body = read_body(request, &done);
  if (body == NULL) return done > 0 ? 0 : done;
  db_changes_t changes;
  int result = parse_changes(request, body, &changes);
  if (result == 0 && (changes.add_tags || changes.remove_tags || changes.tags || changes.note || changes.name ||
                      changes.archived >= 0)) {
    result = db_study_update(api->db, id, &changes);
    if (result == -ENOENT) result = http_respond_error(request, MHD_HTTP_NOT_FOUND, "no study %lld", (long long)id);
    else if (result == 0) {
      char *text;
      size_t length;
      result = study_text(api->db, id, &text, &length);
      if (result == 0) result = http_respond_text(request, MHD_HTTP_OK, "application/json", text, length);
    }
  } else if (result == 0) {
    result = respond_bad(request, "body", "names nothing to change (name, note, tags, add_tags, remove_tags, archived)");
  } else if (result > 0) {
    result = 0;
  }
  json_decref(body);
  return result;
}

/* Removes the run's checkpoint directory: the files in it, then it. Counts the files. A
 * directory that is not there (a run that never wrote one) is no fault. */
static int remove_checkpoints(const char *directory, int *files) {
  DIR *listing = opendir(directory);
  if (listing == NULL) return errno == ENOENT ? 0 : -errno;
  int result = 0;
  struct dirent *entry;
  char path[PATH_MAX];
  while ((entry = readdir(listing)) != NULL) {
    if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
    if (snprintf(path, sizeof path, "%s/%s", directory, entry->d_name) >= (int)sizeof path) continue;
    if (unlink(path) == 0) (*files)++;
    else result = -errno; /* a directory someone made there: left, and said */
  }
  closedir(listing);
  if (rmdir(directory) != 0 && result == 0) result = -errno;
  return result;
}

int api_delete_experiment(http_request_t *request) {
  api_t *api = app(request);
  int64_t id = http_path_id(request);
  char data_dir[PATH_MAX], directory[PATH_MAX + 64], reason[256];
  /* Checkpoints are stored resolved (api.c, check_teacher_checkpoint): compare alike. */
  if (realpath(api->data_dir, data_dir) == NULL) util_strlcpy(data_dir, api->data_dir, sizeof data_dir);
  snprintf(directory, sizeof directory, "%s/experiments/%lld", data_dir, (long long)id);
  int result = db_experiment_deletable(api->db, id, directory, reason, sizeof reason);
  if (result == -ENOENT) return http_respond_error(request, MHD_HTTP_NOT_FOUND, "no experiment %lld", (long long)id);
  if (result == -EBUSY) return http_respond_error(request, MHD_HTTP_CONFLICT, "%s", reason);
  if (result != 0) return result;
  if ((result = db_experiment_delete(api->db, id)) != 0) return result;
  sse_publish_deleted(api->hub, id);
  int files = 0;
  int removed = remove_checkpoints(directory, &files);
  if (removed != 0)
    fprintf(stderr, "mapsaged: deleting experiment %lld: %s: %s\n", (long long)id, directory, strerror(-removed));
  json_t *answer = json_pack("{s:I, s:b, s:i}", "id", (json_int_t)id, "deleted", 1, "files_removed", files);
  if (removed != 0) json_object_set_new(answer, "warning", json_sprintf("%s: %s", directory, strerror(-removed)));
  return http_respond_json(request, MHD_HTTP_OK, answer);
}

// ---------------------------------------------------------------------------------------
// the list's options

/* A field as a user writes it ("optimizer.lr", "summary.final_test_accuracy",
 * "stages[0].epochs", "config.seed") into its column and JSON path. */
static int parse_field(const char *text, size_t length, db_field_t *field, char *path, size_t path_size) {
  field->source = DB_FIELD_CONFIG;
  if (length > 7 && strncmp(text, "config.", 7) == 0) text += 7, length -= 7;
  else if (length > 8 && strncmp(text, "summary.", 8) == 0) {
    field->source = DB_FIELD_SUMMARY;
    text += 8, length -= 8;
  }
  if (length == 0 || length + 3 > path_size) return -EINVAL;
  /* names of letters, digits and _ between dots, each optionally followed by [n] */
  int expect_name = 1;
  for (size_t i = 0; i < length; i++) {
    char c = text[i];
    int word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (word) expect_name = 0;
    else if (c == '.' && !expect_name) expect_name = 1;
    else if (c == '[' && !expect_name) {
      size_t j = i + 1;
      while (j < length && text[j] >= '0' && text[j] <= '9') j++;
      if (j == i + 1 || j >= length || text[j] != ']') return -EINVAL;
      i = j;
    } else return -EINVAL;
  }
  if (expect_name) return -EINVAL;
  snprintf(path, path_size, "$.%.*s", (int)length, text);
  field->path = path;
  return 0;
}

/* Whether some experiment has the field (or none has anything to say: an empty list). */
static int field_is_known(db_t *db, const db_field_t *field) {
  sqlite3_stmt *statement = db_statement(
      db, field->source == DB_FIELD_SUMMARY
              ? "SELECT NOT EXISTS (SELECT 1 FROM experiments WHERE summary IS NOT NULL) OR EXISTS (SELECT 1 FROM "
                "experiments WHERE summary IS NOT NULL AND json_type(summary, ?1) IS NOT NULL)"
              : "SELECT NOT EXISTS (SELECT 1 FROM experiments) OR EXISTS (SELECT 1 FROM experiments WHERE "
                "json_type(config, ?1) IS NOT NULL)");
  if (statement == NULL) return 0;
  sqlite3_bind_text(statement, 1, field->path, -1, SQLITE_STATIC);
  int known = sqlite3_step(statement) == SQLITE_ROW && sqlite3_column_int(statement, 0);
  db_release(db, statement);
  return known;
}

static const char FIELD_SYNTAX[] =
    "names separated by dots, [n] for an element, summary. for a summary figure: optimizer.lr, stages[0].epochs, "
    "summary.final_test_accuracy";

/* One field of `parameter` (its text `length` bytes at `text`), checked: 0, or the 400
 * answered (1 or a negative errno). */
static int take_field(http_request_t *request, const char *parameter, const char *text, size_t length,
                      db_field_t *field, char *path, size_t path_size) {
  if (parse_field(text, length, field, path, path_size) != 0)
    return answered(http_respond_error(request, MHD_HTTP_BAD_REQUEST, "%s: \"%.*s\" is not a field (%s)", parameter,
                              (int)(length > 128 ? 128 : length), text, FIELD_SYNTAX));
  if (!field_is_known(app(request)->db, field))
    return answered(http_respond_error(request, MHD_HTTP_BAD_REQUEST, "%s: %.*s: no experiment's %s has this field", parameter,
                              (int)(length > 128 ? 128 : length), text,
                              field->source == DB_FIELD_SUMMARY ? "summary" : "config"));
  return 0;
}

/* One condition "field OP value". */
static int take_condition(http_request_t *request, api_list_query_t *query, const char *text, size_t length) {
  static const char *const operators[] = DB_OPERATORS;
  size_t at = 0;
  while (at < length && !strchr("!<>=", text[at])) at++;
  if (at == length)
    return answered(http_respond_error(request, MHD_HTTP_BAD_REQUEST,
                              "where: \"%.*s\" has no operator (=, !=, <, <=, >, >=): write field<op>value, as "
                              "optimizer.lr>0.01",
                              (int)(length > 128 ? 128 : length), text));
  size_t op_length = at + 1 < length && text[at + 1] == '=' ? 2 : 1;
  while (at + op_length < length && strchr("!<>=", text[at + op_length]) && op_length < 3) op_length++;
  int op = -1;
  for (size_t k = 0; k < ARRAY_SIZE(operators); k++)
    if (strlen(operators[k]) == op_length && strncmp(text + at, operators[k], op_length) == 0) op = (int)k;
  if (op < 0)
    return answered(http_respond_error(request, MHD_HTTP_BAD_REQUEST, "where: \"%.*s\": %.*s is not an operator (=, !=, <, "
                              "<=, >, >=)", (int)(length > 128 ? 128 : length), text, (int)op_length, text + at));
  int n = query->filter.n_conditions;
  db_condition_t *condition = &query->conditions[n];
  int bad = take_field(request, "where", text, at, &condition->field, query->condition_paths[n],
                       sizeof query->condition_paths[n]);
  if (bad) return bad;
  condition->op = op;
  const char *value = text + at + op_length;
  size_t value_length = length - at - op_length;
  if (value_length >= sizeof query->condition_values[n])
    return answered(respond_bad(request, "where", "a value is longer than 255 bytes"));
  if (value_length >= 2 && value[0] == '"' && value[value_length - 1] == '"') value++, value_length -= 2;
  char *copy = query->condition_values[n];
  memcpy(copy, value, value_length);
  copy[value_length] = '\0';
  condition->text = copy;
  char *end;
  condition->number = strtod(copy, &end);
  condition->is_number = copy[0] != '\0' && *end == '\0' && value == text + at + op_length;
  if (strcmp(copy, "true") == 0 || strcmp(copy, "false") == 0) { /* JSON booleans read back as 1 and 0 */
    condition->is_number = 1;
    condition->number = copy[0] == 't';
  }
  query->filter.n_conditions++;
  return 0;
}

/* Calls `each` on every comma-separated item of the parameter; at most `max` of them. */
static int for_each_item(http_request_t *request, api_list_query_t *query, const char *parameter, int max,
                         int (*each)(http_request_t *, api_list_query_t *, const char *, size_t)) {
  const char *text = http_query(request, parameter);
  if (text == NULL || text[0] == '\0') return 0;
  int count = 0;
  for (const char *item = text;;) {
    const char *comma = strchr(item, ',');
    size_t length = comma ? (size_t)(comma - item) : strlen(item);
    if (length > 0) {
      if (++count > max)
        return answered(http_respond_error(request, MHD_HTTP_BAD_REQUEST, "%s: at most %d items", parameter, max));
      int bad = each(request, query, item, length);
      if (bad) return bad;
    }
    if (comma == NULL) break;
    item = comma + 1;
  }
  return 0;
}

static int take_column(http_request_t *request, api_list_query_t *query, const char *text, size_t length) {
  int n = query->filter.n_columns;
  int bad = take_field(request, "columns", text, length, &query->columns[n], query->column_paths[n],
                       sizeof query->column_paths[n]);
  if (bad) return bad;
  snprintf(query->column_names[n], sizeof query->column_names[n], "%.*s", (int)length, text);
  query->names[n] = query->column_names[n];
  query->filter.n_columns++;
  return 0;
}

static int take_sort(http_request_t *request, api_list_query_t *query) {
  const char *sort = http_query(request, "sort");
  const char *order = http_query(request, "order");
  if (order && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0)
    return answered(respond_bad(request, "order", "must be asc or desc"));
  /* Newest first by default; a column asked for sorts up unless told otherwise. */
  query->filter.ascending = order ? strcmp(order, "asc") == 0 : sort != NULL && sort[0] != '\0';
  if (sort == NULL || sort[0] == '\0') return 0;
  for (size_t k = 0; db_list_sort_key(k); k++) {
    if (strcmp(sort, db_list_sort_key(k)) == 0) {
      query->filter.sort_key = (int)k;
      return 0;
    }
  }
  if (parse_field(sort, strlen(sort), &query->sort, query->sort_path, sizeof query->sort_path) != 0 ||
      !field_is_known(app(request)->db, &query->sort)) {
    char keys[256] = "";
    size_t used = 0;
    for (size_t k = 0; db_list_sort_key(k) && used < sizeof keys; k++)
      used += (size_t)snprintf(keys + used, sizeof keys - used, "%s%s", k ? ", " : "", db_list_sort_key(k));
    return answered(http_respond_error(request, MHD_HTTP_BAD_REQUEST,
                              "sort: \"%.128s\" is neither a column (%s) nor a field of any experiment's config or "
                              "summary (%s)",
                              sort, keys, FIELD_SYNTAX));
  }
  query->filter.sort_field = &query->sort;
  return 0;
}

int api_list_query(http_request_t *request, api_list_query_t *query) {
  db_list_filter_t *filter = &query->filter;
  filter->conditions = query->conditions;
  filter->columns = query->columns;
  filter->column_names = query->names;
  const char *archived = http_query(request, "archived");
  if (archived) {
    if (strcmp(archived, "0") == 0) filter->archived = 0;
    else if (strcmp(archived, "1") == 0) filter->archived = 1;
    else if (strcmp(archived, "all") == 0) filter->archived = 2;
    else return answered(respond_bad(request, "archived", "must be 0 (not archived, the default), 1 (archived only) or all"));
  }
  const char *tag = http_query(request, "tag");
  if (tag && tag[0]) {
    char copy[TAGS_MAX * (TAG_MAX + 1)];
    if (strlen(tag) >= sizeof copy) return answered(respond_bad(request, "tag", "too long"));
    util_strlcpy(copy, tag, sizeof copy);
    for (char *save, *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save))
      if (!tag_is_valid(item))
        return answered(http_respond_error(request, MHD_HTTP_BAD_REQUEST,
                                  "tag: \"%.64s\" is not a tag (1 to %d letters, digits or . _ - : / +)", item,
                                  TAG_MAX));
    filter->tags = tag;
  }
  long long offset = 0;
  int bad = api_query_integer(request, "offset", 0, 1000000000, &offset);
  if (bad) return bad;
  filter->offset = offset;
  if ((bad = for_each_item(request, query, "where", API_LIST_CONDITIONS, take_condition)) != 0) return bad;
  if ((bad = for_each_item(request, query, "columns", API_LIST_COLUMNS, take_column)) != 0) return bad;
  return take_sort(request, query);
}
