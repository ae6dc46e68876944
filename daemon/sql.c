/* sql.c — read-only SQL for people, on the thread pool (see sql.h).
 *
 * Defence in depth, because the database is the only copy of everyone's results:
 * 1. the connection is opened read-only (SQLITE_OPEN_READONLY), with ATTACH limited to
 *    zero databases, defensive mode on and extension loading off;
 * 2. an authorizer allows only reading: SELECT, reading columns, the functions on an
 *    allow-list (what analysis SQL uses: no load_extension(), no fts3_tokenizer(), which
 *    hands out a heap address), json_each() and json_tree() among the virtual tables,
 *    recursive CTEs and a short list of read-only PRAGMAs. Everything else is denied:
 *    writes, schema changes, temp tables, ATTACH (which VACUUM INTO also needs: it could
 *    otherwise write a copy anywhere), transactions;
 * 3. sqlite3_stmt_readonly() must agree, and the statement must be the only one.
 * A progress handler interrupts a query past its time limit; rows past the row limit are
 * not read. Jobs never touch the daemon's connection or MHD: the result goes back to the
 * loop thread in after_work, which resumes the HTTP connection. */
#include "sql.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#include "util.h"

struct sql {
  sql_options_t options;
  char *db_path;
  int running;
};

typedef struct {
  uv_work_t work;
  sql_t *sql;
  http_request_t *request;
  char *text;
  json_t *params;
  double deadline;
  char **modules; /* the virtual table modules SQLite has, NULL-terminated */
  /* results, written by the worker thread */
  unsigned status;
  json_t *answer;
  const char *denied;   /* what the authorizer refused, in words */
  char denied_text[96];
} sql_job_t;

int sql_create(const sql_options_t *options, sql_t **out) {
  sql_t *sql = calloc(1, sizeof *sql);
  if (sql == NULL) return -ENOMEM;
  sql->options = *options;
  sql->db_path = strdup(options->db_path);
  if (sql->db_path == NULL) {
    free(sql);
    return -ENOMEM;
  }
  sql->options.db_path = sql->db_path;
  *out = sql;
  return 0;
}

void sql_destroy(sql_t *sql) {
  if (sql == NULL) return;
  free(sql->db_path);
  free(sql);
}

// ---------------------------------------------------------------------------------------
// the worker thread's side

/* Pragmas that only describe; read without an argument (or, for the *_info and *_list
 * ones, with a table's name). Others may act (optimize, wal_checkpoint, shrink_memory). */
static const char *const readable_pragmas[] = {
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list",
    "function_list", "pragma_list", "collation_list", "module_list", "database_list", "compile_options",
    "user_version", "schema_version", "application_id", "page_count", "page_size", "freelist_count",
    "journal_mode", "journal_size_limit", "synchronous", "auto_vacuum", "cache_size", "temp_store", "encoding",
    "data_version", "foreign_keys", "busy_timeout", "integrity_check", "quick_check", "foreign_key_check", NULL};

/* The functions a person writing analysis SQL uses (SQLite 3.40's built-ins, by kind).
 * Everything else is refused by name (docs/security.md gives the reason for each):
 * load_extension (loads code), fts3_tokenizer (hands out a heap address, or takes one),
 * zeroblob and randomblob (make a value of up to the value limit in one step, and have no
 * use in analysis: random() is here for sampling), changes, total_changes and
 * last_insert_rowid (about writes, which this connection never makes), sqlite_log
 * (writes to SQLite's log), subtype (the JSON functions' internals), and the full-text
 * and R*Tree helpers (match, snippet, highlight, bm25, offsets, matchinfo, fts5,
 * fts5_source_id, optimize, rtreecheck, rtreedepth, rtreenode): the history has no
 * such tables, and this endpoint cannot make one. A function added by a later SQLite is
 * refused until it is added here. */
static const char *const allowed_functions[] = {
    /* aggregates */
    "avg", "count", "group_concat", "max", "min", "sum", "total", "json_group_array", "json_group_object",
    /* window functions */
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value",
    "last_value", "nth_value",
    /* text */
    "length", "lower", "upper", "trim", "ltrim", "rtrim", "substr", "substring", "instr", "replace", "printf",
    "format", "char", "unicode", "hex", "quote", "like", "glob", "soundex",
    /* values, NULLs and the planner's hints */
    "abs", "round", "sign", "random", "coalesce", "ifnull", "nullif", "iif", "typeof", "likely", "unlikely",
    "likelihood",
    /* dates and times */
    "date", "time", "datetime", "julianday", "strftime", "unixepoch", "current_date", "current_time",
    "current_timestamp",
    /* math */
    "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos", "cosh", "degrees", "exp",
    "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow", "power", "radians", "sin", "sinh", "sqrt", "tan",
    "tanh", "trunc",
    /* JSON: they return a new value and change nothing stored */
    "json", "json_array", "json_array_length", "json_extract", "json_insert", "json_object", "json_patch",
    "json_quote", "json_remove", "json_replace", "json_set", "json_type", "json_valid", "->", "->>",
    /* what PRAGMA compile_options also says */
    "sqlite_version", "sqlite_source_id", "sqlite_compileoption_get", "sqlite_compileoption_used", NULL};

/* The virtual tables a reader may use, as table-valued functions. */
static const char *const allowed_virtual_tables[] = {"json_each", "json_tree", NULL};

static int listed(const char *const *list, const char *name) {
  for (; *list; list++)
    if (strcmp(*list, name) == 0) return 1;
  return 0;
}

/* Names for what the authorizer refuses, so the error says what was refused. */
static const char *action_name(int action) {
  switch (action) {
  case SQLITE_INSERT: return "INSERT";
  case SQLITE_UPDATE: return "UPDATE";
  case SQLITE_DELETE: return "DELETE";
  case SQLITE_ATTACH: return "ATTACH (or VACUUM INTO)";
  case SQLITE_DETACH: return "DETACH";
  case SQLITE_TRANSACTION: return "a transaction";
  case SQLITE_SAVEPOINT: return "a savepoint";
  case SQLITE_PRAGMA: return "a PRAGMA that sets something";
  case SQLITE_ANALYZE: return "ANALYZE";
  case SQLITE_REINDEX: return "REINDEX";
  case SQLITE_ALTER_TABLE: return "ALTER TABLE";
  default:
    return action <= SQLITE_DROP_VIEW || action == SQLITE_CREATE_VTABLE || action == SQLITE_DROP_VTABLE
               ? "creating or dropping tables, views, indexes or triggers"
               : "this kind of statement";
  }
}

/* The statement's first word in capitals ("CREATE"), into `out` (at most 20 letters); 0
 * if none. Whitespace, opening parentheses and comments before it are skipped. */
static int statement_keyword(const char *text, char *out, size_t size) {
  const char *word = text;
  for (;;) {
    word += strspn(word, " \t\r\n\f(");
    if (strncmp(word, "--", 2) == 0) {
      word += strcspn(word, "\n");
    } else if (strncmp(word, "/*", 2) == 0) {
      const char *end = strstr(word + 2, "*/");
      word = end ? end + 2 : word + strlen(word);
    } else {
      break;
    }
  }
  size_t length = strspn(word, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
  snprintf(out, size, "%.*s", (int)(length < 20 ? length : 20), word);
  for (char *c = out; *c; c++) *c = (char)toupper((unsigned char)*c);
  return out[0] != '\0';
}

/* The first word, into denied_text: what to call a refused statement ("CREATE"). */
static int first_keyword(sql_job_t *job) {
  return statement_keyword(job->text, job->denied_text, sizeof job->denied_text);
}

/* Whether the statement is a query (SELECT, WITH … SELECT, VALUES). */
static int is_query(const sql_job_t *job) {
  char word[24];
  return statement_keyword(job->text, word, sizeof word) &&
         (strcmp(word, "SELECT") == 0 || strcmp(word, "WITH") == 0 || strcmp(word, "VALUES") == 0);
}

/* Records the first refusal (SQLite stops at it), naming `name` through `format` (which
 * holds one %.*s), cut between characters. */
static int deny_named(sql_job_t *job, const char *format, const char *name) {
  if (job->denied) return SQLITE_DENY;
  size_t length = util_utf8_boundary(name, strnlen(name, 60));
  snprintf(job->denied_text, sizeof job->denied_text, format, (int)length, name);
  job->denied = job->denied_text;
  return SQLITE_DENY;
}

/* Records the first refusal. Creating or dropping anything first writes sqlite_master:
 * that is named by the statement's own first word ("CREATE"), which says more than
 * "INSERT". */
static int deny(sql_job_t *job, int action, const char *table) {
  if (job->denied) return SQLITE_DENY;
  if (table && (strcmp(table, "sqlite_master") == 0 || strcmp(table, "sqlite_temp_master") == 0) &&
      first_keyword(job)) {
    job->denied = job->denied_text;
    return SQLITE_DENY;
  }
  job->denied = action_name(action);
  return SQLITE_DENY;
}

/* Reading a table (or a view's tables, or a CTE) is allowed; a virtual table only when it
 * is json_each or json_tree. A CTE named like a virtual table module is refused too:
 * SQLite gives the authorizer no way to tell them apart. */
static int authorize_read(sql_job_t *job, const char *table) {
  if (table == NULL || listed(allowed_virtual_tables, table)) return SQLITE_OK;
  if (strncmp(table, "pragma_", 7) == 0) {
    if (job->denied) return SQLITE_DENY;
    job->denied = "a table-valued pragma function (use PRAGMA table_info(t) and the like instead)";
    return SQLITE_DENY;
  }
  for (char **module = job->modules; module && *module; module++)
    if (strcmp(*module, table) == 0) return deny_named(job, "the virtual table %.*s", table);
  return SQLITE_OK;
}

static int authorize(void *context, int action, const char *first, const char *second, const char *database,
                     const char *trigger) {
  sql_job_t *job = context;
  (void)database;
  (void)trigger;
  switch (action) {
  case SQLITE_SELECT:
  case SQLITE_RECURSIVE:
    return SQLITE_OK;
  case SQLITE_READ:
    return authorize_read(job, first);
  case SQLITE_FUNCTION:
    return second && listed(allowed_functions, second) ? SQLITE_OK
                                                        : deny_named(job, "the function %.*s()", second ? second : "?");
  case SQLITE_UPDATE:
    /* A query that uses a table-valued function (json_each) makes SQLite enter it in its
     * in-memory copy of the schema first, which it authorizes as an update of
     * sqlite_master; which function it was is decided when it is read. A query changes
     * nothing on disk: the connection is read-only and sqlite3_stmt_readonly() must agree. */
    if (first && strcmp(first, "sqlite_master") == 0 && is_query(job)) return SQLITE_OK;
    return deny(job, action, first);
  case SQLITE_PRAGMA:
    /* Reading a setting or describing a table; never setting anything. "PRAGMA x(arg)"
     * passes arg as `second`: allowed only for the pragmas that take a table name. */
    for (const char *const *name = readable_pragmas; *name; name++) {
      if (strcmp(first, *name) != 0) continue;
      int takes_table = strstr(*name, "_info") || strstr(*name, "_list") || strcmp(*name, "table_xinfo") == 0;
      return second == NULL || takes_table ? SQLITE_OK : deny(job, action, NULL);
    }
    return deny(job, action, NULL);
  default:
    return deny(job, action, first);
  }
}

/* The virtual table modules this SQLite has (PRAGMA module_list), for authorize_read;
 * read before the authorizer is set. Returns 0 or an SQLite error code. */
static int list_modules(sqlite3 *db, sql_job_t *job) {
  sqlite3_stmt *statement = NULL;
  int code = sqlite3_prepare_v2(db, "PRAGMA module_list", -1, &statement, NULL);
  size_t count = 0;
  while (code == SQLITE_OK && sqlite3_step(statement) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(statement, 0);
    char **grown = realloc(job->modules, (count + 2) * sizeof *grown);
    if (grown == NULL) {
      code = SQLITE_NOMEM;
      break;
    }
    job->modules = grown;
    if ((job->modules[count] = strdup(name ? name : "")) == NULL) code = SQLITE_NOMEM;
    else count++;
    job->modules[count] = NULL;
  }
  if (code == SQLITE_OK && job->modules == NULL) code = SQLITE_ERROR; /* there are always some: fail closed */
  sqlite3_finalize(statement);
  return code;
}

static int on_progress(void *context) {
  const sql_job_t *job = context;
  return util_monotonic() > job->deadline; /* non-zero interrupts the statement */
}

static void fail(sql_job_t *job, unsigned status, const char *format, const char *detail) {
  char message[512];
  snprintf(message, sizeof message, format, detail);
  job->status = status;
  job->answer = json_pack("{s:s}", "error", message);
}

static json_t *column_value(sqlite3_stmt *statement, int column) {
  switch (sqlite3_column_type(statement, column)) {
  case SQLITE_INTEGER: return json_integer(sqlite3_column_int64(statement, column));
  case SQLITE_FLOAT: {
    double value = sqlite3_column_double(statement, column);
    return isfinite(value) ? json_real(value) : json_null(); /* JSON has no infinity */
  }
  case SQLITE_TEXT: return json_stringn((const char *)sqlite3_column_text(statement, column),
                                        (size_t)sqlite3_column_bytes(statement, column));
  case SQLITE_BLOB: {
    char note[64];
    snprintf(note, sizeof note, "<blob of %d bytes>", sqlite3_column_bytes(statement, column));
    return json_string(note);
  }
  default: return json_null();
  }
}

static int bind_params(sqlite3_stmt *statement, json_t *params) {
  size_t index;
  json_t *value;
  json_array_foreach(params, index, value) {
    int position = (int)index + 1, code;
    if (json_is_integer(value)) code = sqlite3_bind_int64(statement, position, json_integer_value(value));
    else if (json_is_real(value)) code = sqlite3_bind_double(statement, position, json_real_value(value));
    else if (json_is_string(value))
      code = sqlite3_bind_text(statement, position, json_string_value(value), (int)json_string_length(value),
                               SQLITE_TRANSIENT);
    else if (json_is_boolean(value)) code = sqlite3_bind_int(statement, position, json_is_true(value));
    else code = sqlite3_bind_null(statement, position);
    if (code != SQLITE_OK) return code;
  }
  return SQLITE_OK;
}

static void run_query(uv_work_t *work) {
  sql_job_t *job = work->data;
  const sql_options_t *options = &job->sql->options;
  sqlite3 *db = NULL;
  sqlite3_stmt *statement = NULL;
  double started = util_monotonic();
  job->deadline = started + options->timeout_ms / 1000.0;

  if (sqlite3_open_v2(options->db_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    fail(job, 503, "cannot open the database: %s", db ? sqlite3_errmsg(db) : "out of memory");
    goto done;
  }
  sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, NULL);
  sqlite3_busy_timeout(db, (int)options->timeout_ms);
  int code = list_modules(db, job);
  if (code != SQLITE_OK) {
    fail(job, 503, "cannot list SQLite's virtual tables: %s", sqlite3_errstr(code));
    goto done;
  }
  sqlite3_set_authorizer(db, authorize, job);
  sqlite3_progress_handler(db, 1000, on_progress, job);

  const char *tail = NULL;
  if (sqlite3_prepare_v2(db, job->text, -1, &statement, &tail) != SQLITE_OK) {
    fail(job, 400, "%s", sqlite3_errmsg(db));
    goto done;
  }
  if (statement == NULL) {
    fail(job, 400, "sql: %s", "there is no statement, only whitespace or comments");
    goto done;
  }
  /* Whatever follows must be nothing but whitespace and comments: preparing it tells. */
  sqlite3_stmt *next = NULL;
  int more = tail && (sqlite3_prepare_v2(db, tail, -1, &next, NULL) != SQLITE_OK || next != NULL);
  sqlite3_finalize(next);
  if (more) {
    job->denied = NULL; /* the authorizer may have seen the second statement */
    fail(job, 400, "sql: %s", "one statement per request: remove what follows the first ';'");
    goto done;
  }
  if (!sqlite3_stmt_readonly(statement)) { /* VACUUM INTO is refused only when it runs: refuse it here */
    job->denied = first_keyword(job) ? job->denied_text : "this kind of statement";
    goto done;
  }
  if (sqlite3_bind_parameter_count(statement) != (int)json_array_size(job->params)) {
    char detail[96];
    snprintf(detail, sizeof detail, "the statement has %d parameters but %zu were given",
             sqlite3_bind_parameter_count(statement), json_array_size(job->params));
    fail(job, 400, "params: %s", detail);
    goto done;
  }
  if (bind_params(statement, job->params) != SQLITE_OK) {
    fail(job, 400, "params: %s", sqlite3_errmsg(db));
    goto done;
  }

  int columns = sqlite3_column_count(statement);
  json_t *names = json_array(), *rows = json_array();
  int truncated = 0;
  unsigned count = 0;
  while ((code = sqlite3_step(statement)) == SQLITE_ROW) {
    if (count == options->max_rows) {
      truncated = 1;
      break;
    }
    json_t *row = json_array();
    for (int i = 0; i < columns; i++) json_array_append_new(row, column_value(statement, i));
    json_array_append_new(rows, row);
    count++;
  }
  for (int i = 0; i < columns; i++) json_array_append_new(names, json_string(sqlite3_column_name(statement, i)));
  if (code != SQLITE_ROW && code != SQLITE_DONE) {
    json_decref(names);
    json_decref(rows);
    if (code == SQLITE_INTERRUPT) {
      char detail[32];
      snprintf(detail, sizeof detail, "%u", options->timeout_ms);
      fail(job, 400, "the query ran longer than the time limit of %s ms (mapsaged --sql-timeout-ms)", detail);
    } else if (code == SQLITE_AUTH && job->denied == NULL) {
      job->denied = "this kind of statement";
    } else {
      fail(job, 400, "%s", sqlite3_errmsg(db));
    }
    goto done;
  }
  job->status = 200;
  job->answer = json_pack("{s:o, s:o, s:b, s:f}", "columns", names, "rows", rows, "truncated", truncated,
                          "elapsed_ms", (util_monotonic() - started) * 1000.0);
  if (truncated) {
    char warning[128];
    snprintf(warning, sizeof warning, "stopped at the row limit of %u rows (mapsaged --sql-max-rows)",
             options->max_rows);
    json_object_set_new(job->answer, "warning", json_string(warning));
  }
done:
  if (job->denied) { /* whatever SQLite said ("not authorized"), say what was refused */
    json_decref(job->answer);
    fail(job, 403, "sql: %s is not allowed: this endpoint only reads", job->denied);
  }
  for (char **module = job->modules; module && *module; module++) free(*module);
  free(job->modules);
  job->modules = NULL;
  sqlite3_finalize(statement);
  sqlite3_close(db);
}

// ---------------------------------------------------------------------------------------
// the loop's side

static int answer(http_request_t *request) {
  sql_job_t *job = http_context(request);
  http_set_context(request, NULL);
  /* Every digit: a researcher's numbers (julianday(), large sums) must come back exact. */
  char *text = json_dumps(job->answer, JSON_COMPACT | JSON_REAL_PRECISION(17));
  json_decref(job->answer);
  unsigned status = job->status;
  free(job);
  return http_respond_text(request, status, "application/json", text, text ? strlen(text) : 0);
}

static void after_query(uv_work_t *work, int status) {
  sql_job_t *job = work->data;
  job->sql->running--;
  free(job->text);
  json_decref(job->params);
  if (status == UV_ECANCELED) {
    job->status = 503;
    job->answer = json_pack("{s:s}", "error", "the daemon is stopping");
  }
  http_resume(job->request); /* MHD then calls answer() */
}

int sql_handle(sql_t *sql, http_request_t *request) {
  size_t length;
  const char *body = http_body(request, &length);
  json_error_t error;
  json_t *root = json_loadb(body, length, JSON_REJECT_DUPLICATES, &error);
  if (!json_is_object(root)) {
    json_decref(root);
    return http_respond_error(request, MHD_HTTP_BAD_REQUEST, "the body must be a JSON object like {\"sql\": \"SELECT …\", "
                              "\"params\": []}%s%s", root ? "" : ": ", root ? "" : error.text);
  }
  const char *key;
  json_t *value;
  json_object_foreach(root, key, value) {
    if (strcmp(key, "sql") != 0 && strcmp(key, "params") != 0) {
      int result = http_respond_error(request, MHD_HTTP_BAD_REQUEST, "%s: unknown field (expected sql, params)", key);
      json_decref(root); /* `key` lives in it */
      return result;
    }
  }
  json_t *text = json_object_get(root, "sql"), *params = json_object_get(root, "params");
  const char *problem = NULL;
  if (!json_is_string(text)) problem = "sql: must be a string holding one statement";
  else if (json_string_length(text) > SQL_TEXT_LIMIT) problem = "sql: must be at most 65536 bytes";
  else if (strlen(json_string_value(text)) != json_string_length(text)) problem = "sql: must not contain NUL";
  else if (params && !json_is_array(params)) problem = "params: must be an array of values for ?1, ?2, …";
  size_t index;
  json_array_foreach(params, index, value) {
    if (!problem && (json_is_object(value) || json_is_array(value)))
      problem = "params: each value must be a string, a number, a boolean or null";
  }
  if (problem) {
    json_decref(root);
    return http_respond_error(request, MHD_HTTP_BAD_REQUEST, "%s", problem);
  }
  if (sql->running >= SQL_MAX_RUNNING) {
    json_decref(root);
    return http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE, "%d queries are already running; retry shortly",
                              SQL_MAX_RUNNING);
  }
  sql_job_t *job = calloc(1, sizeof *job);
  if (job == NULL) {
    json_decref(root);
    return -ENOMEM;
  }
  job->sql = sql;
  job->request = request;
  job->text = strdup(json_string_value(text));
  job->params = params ? json_deep_copy(params) : json_array(); /* the thread owns its own copy */
  job->work.data = job;
  json_decref(root);
  if (job->text == NULL || job->params == NULL) {
    free(job->text);
    json_decref(job->params);
    free(job);
    return -ENOMEM;
  }
  int result = uv_queue_work(sql->options.loop, &job->work, run_query, after_query);
  if (result != 0) {
    free(job->text);
    json_decref(job->params);
    free(job);
    return http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot run the query: %s", uv_strerror(result));
  }
  sql->running++;
  http_set_context(request, job);
  http_suspend(request, answer);
  return 0;
}
