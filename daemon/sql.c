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
 * Limits: a progress handler interrupts a query past its time limit or its memory limit;
 * SQLITE_LIMIT_LENGTH bounds one value, and so the work of one step, which the progress
 * handler cannot interrupt; rows past the row limit or the answer limit are not read.
 * The answer is written as JSON here too, every value kept: text that is not UTF-8 has
 * each stray byte shown as U+FFFD and the answer says so. Jobs never touch the daemon's
 * connection or MHD: the text goes back to the loop thread in after_work, which resumes
 * the HTTP connection, and the loop only hands it to MHD. */
#include "sql.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#include "json_text.h"
#include "util.h"

#define PROGRESS_STEPS 100 /* steps of SQLite's machine between two checks of time and memory */
#define ANSWER_TAIL 1024   /* room kept for what follows the rows: truncated, elapsed_ms, warning */
#define NAMED_COLUMNS 8    /* columns a warning names before "…" */
#define FUNCTION_ARGS 127  /* most arguments of one function call: SQLite's SQLITE_MAX_FUNCTION_ARG */

struct sql {
  sql_options_t options;
  char *db_path;
  int running;
};

typedef enum { RUNNING, STOPPED_TIME, STOPPED_MEMORY } stop_t;

typedef struct {
  uv_work_t work;
  sql_t *sql;
  http_request_t *request;
  char *text;
  json_t *params;
  double deadline;
  long long memory_at_start; /* sqlite3_memory_used() when the query began */
  stop_t stopped;            /* why the progress handler interrupted the query */
  char **modules;            /* the virtual table modules SQLite has, NULL-terminated */
  sqlite3 *formatter;        /* where guarded_printf has SQLite's printf() run, opened when first needed */
  sqlite3_stmt *formatting[FUNCTION_ARGS + 1]; /* "SELECT printf(?1, …)" by number of arguments */
  /* results, written by the worker thread */
  unsigned status;
  char *answer; /* the JSON text */
  size_t answer_length;
  const char *denied; /* what the authorizer refused, in words */
  char denied_text[96];
} sql_job_t;

int sql_create(const sql_options_t *options, sql_t **out) {
  /* A ceiling on SQLite's whole heap for what one step of a query can hold before the
   * memory limit is checked (sql.h); never loosen a lower one set elsewhere. */
  sqlite3_int64 ceiling = sqlite3_hard_heap_limit64(-1);
  if (ceiling == 0 || ceiling > SQL_HEAP_LIMIT) sqlite3_hard_heap_limit64(SQL_HEAP_LIMIT);
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

/* Called every PROGRESS_STEPS steps and at each row; non-zero stops the query. The
 * memory is SQLite's whole heap, so a query running beside a large one may be stopped
 * for it: the two together are what the limit protects against. */
static int on_progress(void *context) {
  sql_job_t *job = context;
  if (util_monotonic() > job->deadline) job->stopped = STOPPED_TIME;
  else if (sqlite3_memory_used() - job->memory_at_start > SQL_MEMORY_LIMIT) job->stopped = STOPPED_MEMORY;
  return job->stopped != RUNNING;
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

// --- printf() and format(), guarded

/* Whether `format` asks for a %c repeated more than the value limit: in SQLite's printf a
 * %c's precision repeats its character. Walks the conversions as SQLite does (flags,
 * width, precision, 'l's, type), counting the arguments that '*' and each conversion
 * take; a precision too large for the limit, however written, counts as too much. */
static int repeats_too_much(const char *format, int argc, sqlite3_value **argv) {
  int argument = 1;
  for (const char *p = format; *p; p++) {
    if (*p != '%') continue;
    p++;
    p += strspn(p, "-+ #!0,");
    if (*p == '*') {
      argument++;
      p++;
    } else {
      while (isdigit((unsigned char)*p)) p++;
    }
    long long precision = 0;
    if (*p == '.') {
      p++;
      if (*p == '*') {
        long long value = argument < argc ? sqlite3_value_int64(argv[argument]) : 0; /* negative: its size */
        precision = value < -(long long)SQL_VALUE_LIMIT || value > SQL_VALUE_LIMIT ? SQL_VALUE_LIMIT + 1LL : value;
        argument++;
        p++;
      } else {
        for (; isdigit((unsigned char)*p); p++)
          precision = precision > SQL_VALUE_LIMIT ? precision : precision * 10 + (*p - '0');
      }
    }
    while (*p == 'l') p++;
    if (*p == '\0') break;
    if (*p == 'c' && precision > SQL_VALUE_LIMIT) return 1;
    if (*p != '%' && *p != 'n') argument++; /* %% and %n take no argument */
  }
  return 0;
}

/* "SELECT printf(?1, …, ?argc)" on the formatter connection, prepared once per query. */
static sqlite3_stmt *formatting_statement(sql_job_t *job, int argc) {
  if (argc < 1 || argc > FUNCTION_ARGS) return NULL;
  if (job->formatting[argc]) return job->formatting[argc];
  if (job->formatter == NULL) {
    if (sqlite3_open_v2(":memory:", &job->formatter, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
      sqlite3_close(job->formatter);
      job->formatter = NULL;
      return NULL;
    }
    sqlite3_limit(job->formatter, SQLITE_LIMIT_LENGTH, SQL_VALUE_LIMIT);
  }
  char text[16 + FUNCTION_ARGS * 6] = "SELECT printf(?1";
  for (int i = 2; i <= argc; i++) snprintf(text + strlen(text), sizeof text - strlen(text), ", ?%d", i);
  strcat(text, ")");
  if (sqlite3_prepare_v2(job->formatter, text, -1, &job->formatting[argc], NULL) != SQLITE_OK) return NULL;
  return job->formatting[argc];
}

/* printf() and format() on the query's connection. SQLite's own repeat a %c one append
 * at a time, and past the value limit every append fails but is still made, in one step
 * the time limit cannot interrupt: printf('%.*c', 1000000000, 'x') took 2.1 s, two of
 * them 5.7 s. This refuses that with the value limit's error and has SQLite's printf
 * format everything else, on a private in-memory connection (about 1 µs more a call), so
 * the rest behaves as SQLite's: NULL for an empty text, or one past the value limit. */
static void guarded_printf(sqlite3_context *context, int argc, sqlite3_value **argv) {
  sql_job_t *job = sqlite3_user_data(context);
  const char *format = argc > 0 ? (const char *)sqlite3_value_text(argv[0]) : NULL;
  if (format == NULL) {
    sqlite3_result_null(context);
    return;
  }
  if (repeats_too_much(format, argc, argv)) {
    sqlite3_result_error_toobig(context);
    return;
  }
  sqlite3_stmt *statement = formatting_statement(job, argc);
  if (statement == NULL) {
    sqlite3_result_error_nomem(context);
    return;
  }
  for (int i = 0; i < argc; i++) sqlite3_bind_value(statement, i + 1, argv[i]);
  if (sqlite3_step(statement) != SQLITE_ROW) sqlite3_result_error(context, sqlite3_errmsg(job->formatter), -1);
  else sqlite3_result_value(context, sqlite3_column_value(statement, 0));
  sqlite3_reset(statement);
  sqlite3_clear_bindings(statement);
}

// --- the answer, as JSON text

/* Whether any of the eight bytes in `word` needs more than copying into a JSON string: a
 * control byte, a byte of a multi-byte sequence, '"' or '\\' (the bit tricks that find a
 * zero byte, or one below a bound, in a word). Looking at words rather than bytes, and
 * writing rows straight into the answer, took a 32 MiB answer from 140 ms to 90 ms under
 * AddressSanitizer on the 2-core test machine. */
static int needs_care(uint64_t word) {
  const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  uint64_t quote = word ^ (ones * '"'), backslash = word ^ (ones * '\\');
  uint64_t control = (word - ones * 0x20) & ~word;
  return ((((quote - ones) & ~quote) | ((backslash - ones) & ~backslash) | control | word) & highs) != 0;
}

/* Appends `value` (`length` bytes) as a JSON string. Each byte that is not part of a
 * valid UTF-8 sequence becomes U+FFFD: JSON must be UTF-8, and jansson would refuse the
 * whole value. Stops, unfinished, once the text passes `limit` bytes (by 64 KiB at most):
 * escaped, a 16 MiB value can take 96 MiB. Returns how many bytes were replaced. */
static size_t append_string(json_text_t *out, const char *value, size_t length, size_t limit) {
  static const char hex_digits[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)value;
  size_t replaced = 0, i = 0;
  json_text_raw(out, "\"", 1);
  while (i < length && out->length <= limit) {
    size_t run = i, end = length - i > 65536 ? i + 65536 : length; /* bytes copied as they are, in one append */
    for (uint64_t word; run + 8 <= end; run += 8) {
      memcpy(&word, p + run, 8);
      if (needs_care(word)) break;
    }
    while (run < end && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\') run++;
    if (run > i) {
      json_text_raw(out, value + i, run - i);
      i = run;
      continue;
    }
    if (p[i] >= 0x80) {
      size_t sequence = util_utf8_sequence(p + i);
      if (sequence == 0 || i + sequence > length) {
        json_text_raw(out, "\xEF\xBF\xBD", 3); /* U+FFFD */
        replaced++;
        i++;
      } else {
        json_text_raw(out, value + i, sequence);
        i += sequence;
      }
      continue;
    }
    char escape[7] = {'\\', 0};
    size_t escape_length = 2;
    switch (p[i]) {
    case '"': escape[1] = '"'; break;
    case '\\': escape[1] = '\\'; break;
    case '\n': escape[1] = 'n'; break;
    case '\r': escape[1] = 'r'; break;
    case '\t': escape[1] = 't'; break;
    case '\b': escape[1] = 'b'; break;
    case '\f': escape[1] = 'f'; break;
    default:
      memcpy(escape + 1, "u00", 3);
      escape[4] = hex_digits[p[i] >> 4];
      escape[5] = hex_digits[p[i] & 15];
      escape_length = 6;
    }
    json_text_raw(out, escape, escape_length);
    i++;
  }
  json_text_raw(out, "\"", 1);
  return replaced;
}

/* A REAL with every digit (17 significant), as jansson's JSON_REAL_PRECISION(17) writes
 * it: a researcher's numbers (julianday(), large sums) must come back exact. */
static void append_real(json_text_t *out, double value) {
  if (!isfinite(value)) { /* JSON has no infinity */
    json_text_literal(out, "null");
    return;
  }
  char number[40];
  snprintf(number, sizeof number, "%.17g", value);
  char *exponent = strchr(number, 'e');
  if (exponent == NULL) {
    if (strchr(number, '.') == NULL) strcat(number, ".0"); /* so that it reads back as a real */
  } else { /* no '+' and no leading zeros in the exponent */
    char *digits = exponent + 1;
    if (*digits == '+') memmove(digits, digits + 1, strlen(digits));
    else if (*digits == '-') digits++;
    size_t zeros = strspn(digits, "0");
    if (zeros > 0 && digits[zeros] != '\0') memmove(digits, digits + zeros, strlen(digits + zeros) + 1);
  }
  json_text_raw(out, number, strlen(number));
}

/* Appends the value of `column` (see append_string for `limit`); returns how many bytes
 * of text had to be replaced. */
static size_t append_value(json_text_t *out, sqlite3_stmt *statement, int column, size_t limit) {
  switch (sqlite3_column_type(statement, column)) {
  case SQLITE_INTEGER: json_text_integer(out, sqlite3_column_int64(statement, column)); return 0;
  case SQLITE_FLOAT: append_real(out, sqlite3_column_double(statement, column)); return 0;
  case SQLITE_TEXT: {
    const char *text = (const char *)sqlite3_column_text(statement, column);
    return append_string(out, text ? text : "", (size_t)sqlite3_column_bytes(statement, column), limit);
  }
  case SQLITE_BLOB: {
    char note[64];
    snprintf(note, sizeof note, "<blob of %d bytes>", sqlite3_column_bytes(statement, column));
    return append_string(out, note, strlen(note), limit);
  }
  default: json_text_literal(out, "null"); return 0;
  }
}

/* The answer {"error": message}: cut at 511 bytes, between characters (SQLite's messages
 * quote the statement, which may be anything). */
static void fail(sql_job_t *job, unsigned status, const char *format, const char *detail) {
  char message[512];
  int length = snprintf(message, sizeof message, format, detail);
  if (length < 0) length = 0;
  size_t kept = (size_t)length < sizeof message ? (size_t)length : util_utf8_boundary(message, sizeof message - 1);
  json_text_t out = {0};
  json_text_literal(&out, "{\"error\":");
  append_string(&out, message, kept, SIZE_MAX);
  json_text_literal(&out, "}");
  free(job->answer);
  job->status = status;
  job->answer = json_text_take(&out, &job->answer_length);
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

/* Appends to `warning` ("; " between two), as far as it has room. */
static void add_warning(char *warning, size_t size, const char *text) {
  size_t used = strlen(warning);
  snprintf(warning + used, size - used, "%s%s", used ? "; " : "", text);
}

/* "2 values were not valid UTF-8 (columns a, b): …", naming at most NAMED_COLUMNS. */
static void warn_invalid_text(char *warning, size_t size, sqlite3_stmt *statement, const size_t *replaced_by_column,
                              int columns, size_t values) {
  char names[320] = "";
  int named = 0, columns_with = 0;
  for (int i = 0; i < columns; i++) {
    if (replaced_by_column[i] == 0) continue;
    columns_with++;
    if (named == NAMED_COLUMNS) continue;
    const char *name = sqlite3_column_name(statement, i);
    size_t used = strlen(names);
    snprintf(names + used, sizeof names - used, "%s%.*s", named ? ", " : "",
             (int)util_utf8_boundary(name ? name : "?", strnlen(name ? name : "?", 32)), name ? name : "?");
    named++;
  }
  char text[512];
  snprintf(text, sizeof text,
           "%zu value%s not valid UTF-8 (column%s %s%s): each byte that is not shows as U+FFFD, the replacement "
           "character; SELECT hex(column) gives the exact bytes",
           values, values == 1 ? " was" : "s were", columns_with == 1 ? "" : "s", names,
           columns_with > named ? ", …" : "");
  add_warning(warning, size, text);
}

/* Steps through the rows, writing the answer; 0, or the SQLite error code that ended it. */
static int write_rows(sql_job_t *job, sqlite3_stmt *statement, double started) {
  const sql_options_t *options = &job->sql->options;
  int columns = sqlite3_column_count(statement), code;
  /* Values with replaced bytes, by column: in the answer, then in the row being written. */
  size_t *replaced_by_column = calloc(2 * (size_t)columns + 1, sizeof *replaced_by_column);
  size_t *replaced_in_row = replaced_by_column + columns;
  size_t replaced_values = 0;
  json_text_t out = {0};
  if (replaced_by_column == NULL) return SQLITE_NOMEM;
  json_text_literal(&out, "{\"columns\":[");
  for (int i = 0; i < columns; i++) {
    if (i) json_text_raw(&out, ",", 1);
    const char *name = sqlite3_column_name(statement, i);
    append_string(&out, name ? name : "", name ? strlen(name) : 0, SIZE_MAX);
  }
  json_text_literal(&out, "],\"rows\":[");
  unsigned count = 0;
  const char *stopped_at = NULL; /* the limit that cut the answer, if one did */
  while ((code = sqlite3_step(statement)) == SQLITE_ROW) {
    /* The progress handler runs every PROGRESS_STEPS steps, and a row can be built in
     * fewer: check here too, before the row's values are copied. */
    if (on_progress(job)) {
      code = SQLITE_INTERRUPT;
      break;
    }
    if (count == options->max_rows) {
      stopped_at = "row";
      break;
    }
    /* The row goes straight into the answer; past the answer limit it is taken back. */
    size_t mark = out.length;
    json_text_raw(&out, count ? ",[" : "[", count ? 2 : 1);
    for (int i = 0; i < columns && out.length <= SQL_ANSWER_LIMIT - ANSWER_TAIL; i++) {
      if (i) json_text_raw(&out, ",", 1);
      replaced_in_row[i] = append_value(&out, statement, i, SQL_ANSWER_LIMIT - ANSWER_TAIL) > 0;
    }
    json_text_raw(&out, "]", 1);
    if (out.failed) {
      code = SQLITE_NOMEM;
      break;
    }
    if (out.length > SQL_ANSWER_LIMIT - ANSWER_TAIL) {
      out.length = mark;
      out.data[mark] = '\0';
      stopped_at = "answer";
      break;
    }
    for (int i = 0; i < columns; i++) {
      replaced_by_column[i] += replaced_in_row[i];
      replaced_values += replaced_in_row[i];
      replaced_in_row[i] = 0;
    }
    count++;
  }
  if (code != SQLITE_ROW && code != SQLITE_DONE) {
    free(replaced_by_column);
    json_text_free(&out);
    return code;
  }
  char warning[1024] = "", text[160];
  if (stopped_at && strcmp(stopped_at, "row") == 0) {
    snprintf(text, sizeof text, "stopped at the row limit of %u rows (mapsaged --sql-max-rows)", options->max_rows);
    add_warning(warning, sizeof warning, text);
  } else if (stopped_at) {
    snprintf(text, sizeof text,
             "stopped at the answer limit of %d bytes (SQL_ANSWER_LIMIT): select fewer or shorter values, or page "
             "with LIMIT … OFFSET",
             SQL_ANSWER_LIMIT);
    add_warning(warning, sizeof warning, text);
  }
  if (replaced_values > 0)
    warn_invalid_text(warning, sizeof warning, statement, replaced_by_column, columns, replaced_values);
  free(replaced_by_column);
  json_text_literal(&out, "],\"truncated\":");
  json_text_literal(&out, stopped_at ? "true" : "false");
  json_text_literal(&out, ",\"elapsed_ms\":");
  append_real(&out, (util_monotonic() - started) * 1000.0);
  if (warning[0]) {
    json_text_literal(&out, ",\"warning\":");
    append_string(&out, warning, strlen(warning), SIZE_MAX);
  }
  json_text_literal(&out, "}");
  job->status = 200;
  job->answer = json_text_take(&out, &job->answer_length);
  return job->answer ? 0 : SQLITE_NOMEM;
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
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, SQL_VALUE_LIMIT);
  sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, SQL_TEXT_LIMIT);
  sqlite3_limit(db, SQLITE_LIMIT_EXPR_DEPTH, SQL_EXPRESSION_DEPTH);
  sqlite3_limit(db, SQLITE_LIMIT_FUNCTION_ARG, FUNCTION_ARGS); /* what guarded_printf has room for */
  sqlite3_limit(db, SQLITE_LIMIT_WORKER_THREADS, 0); /* a sort stays on this thread */
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, NULL);
  sqlite3_busy_timeout(db, (int)options->timeout_ms);
  int code = list_modules(db, job);
  if (code != SQLITE_OK) {
    fail(job, 503, "cannot list SQLite's virtual tables: %s", sqlite3_errstr(code));
    goto done;
  }
  if (sqlite3_create_function_v2(db, "printf", -1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, job, guarded_printf, NULL,
                                 NULL, NULL) != SQLITE_OK ||
      sqlite3_create_function_v2(db, "format", -1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, job, guarded_printf, NULL,
                                 NULL, NULL) != SQLITE_OK) {
    fail(job, 503, "cannot guard printf(): %s", sqlite3_errmsg(db));
    goto done;
  }
  sqlite3_set_authorizer(db, authorize, job);
  job->memory_at_start = sqlite3_memory_used();
  sqlite3_progress_handler(db, PROGRESS_STEPS, on_progress, job);

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

  code = write_rows(job, statement, started);
  char detail[64];
  if (code == 0) {
    goto done;
  } else if (job->stopped == STOPPED_TIME) {
    snprintf(detail, sizeof detail, "%u", options->timeout_ms);
    fail(job, 400, "the query ran longer than the time limit of %s ms (mapsaged --sql-timeout-ms)", detail);
  } else if (job->stopped == STOPPED_MEMORY || code == SQLITE_NOMEM) {
    snprintf(detail, sizeof detail, "%d", SQL_MEMORY_LIMIT);
    fail(job, 400,
         "the query held more than the memory limit of %s bytes (SQL_MEMORY_LIMIT): aggregate, select fewer "
         "or shorter values, or page with LIMIT … OFFSET",
         detail);
  } else if (code == SQLITE_TOOBIG) {
    snprintf(detail, sizeof detail, "%d", SQL_VALUE_LIMIT);
    fail(job, 400,
         "a value would be longer than the value limit of %s bytes (SQL_VALUE_LIMIT): aggregate less, or cut "
         "it with substr()",
         detail);
  } else if (code == SQLITE_AUTH && job->denied == NULL) {
    job->denied = "this kind of statement";
  } else {
    fail(job, 400, "%s", sqlite3_errmsg(db));
  }
done:
  if (job->denied) /* whatever SQLite said ("not authorized"), say what was refused */
    fail(job, 403, "sql: %s is not allowed: this endpoint only reads", job->denied);
  for (char **module = job->modules; module && *module; module++) free(*module);
  free(job->modules);
  job->modules = NULL;
  sqlite3_finalize(statement);
  sqlite3_close(db);
  for (int i = 0; i <= FUNCTION_ARGS; i++) sqlite3_finalize(job->formatting[i]);
  sqlite3_close(job->formatter);
}

// ---------------------------------------------------------------------------------------
// the loop's side

static int answer(http_request_t *request) {
  sql_job_t *job = http_context(request);
  http_set_context(request, NULL);
  char *text = job->answer; /* written in the thread pool: the loop only hands it over */
  size_t length = job->answer_length;
  unsigned status = job->status;
  free(job);
  return http_respond_text(request, status, "application/json", text, length);
}

static void after_query(uv_work_t *work, int status) {
  sql_job_t *job = work->data;
  job->sql->running--;
  free(job->text);
  json_decref(job->params);
  if (status == UV_ECANCELED) fail(job, 503, "%s", "the daemon is stopping");
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
