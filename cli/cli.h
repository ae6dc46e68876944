/* cli.h — what the files of `mapsage`, the command-line client of mapsaged, share: exit
 * codes, a growable byte buffer, the HTTP client (client.c), output formatting (format.c)
 * and the commands themselves (commands.c, watch.c, study.c), dispatched from mapsage.c.
 * Only mapsage.c's main() exits; everything else returns one of the CLI_EXIT_* codes after
 * printing its own message on stderr. */
#ifndef MAPSAGE_CLI_H
#define MAPSAGE_CLI_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include <curl/curl.h>
#include <jansson.h>

#include "options.h"

/* The exit codes are part of the interface: scripts test them, --help and docs/cli.md list
 * them. */
enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_FAILED = 1,      /* the server refused, the config is invalid, the run failed */
  CLI_EXIT_USAGE = 2,       /* a bad command line or an unreadable file */
  CLI_EXIT_UNREACHABLE = 3, /* no answer from the server */
  CLI_EXIT_INTERRUPTED = 130,
  CLI_PROCEED = -1,         /* never an exit code: the arguments are fine, go on */
};

#define CLI_DEFAULT_SERVER "http://127.0.0.1:8787"

/* ---------------------------------------------------------------------------------------
 * buffer_: bytes that grow as needed, always NUL-terminated once anything was added.
 * Every function returns 0, -ENOMEM, or -E2BIG when the buffer's `limit` (0: none) would
 * be exceeded, so a misbehaving server cannot make the client eat all memory. */
typedef struct {
  char *data;
  size_t length;
  size_t capacity;
  size_t limit;
} buffer_t;

int buffer_append(buffer_t *buffer, const void *bytes, size_t length);
int buffer_append_text(buffer_t *buffer, const char *text);
int buffer_printf(buffer_t *buffer, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Appends `text` percent-encoded for a URL query value (RFC 3986 unreserved characters
 * and the comma, which separates a list of statuses, are kept). */
int buffer_append_query_value(buffer_t *buffer, const char *text);
void buffer_clear(buffer_t *buffer);
void buffer_free(buffer_t *buffer);
/* The contents as a string; "" for a buffer nothing was added to. */
const char *buffer_text(const buffer_t *buffer);

/* ---------------------------------------------------------------------------------------
 * client_: talking to mapsaged. */

/* What the global options say: where the server is, how to authenticate (each setting from
 * its flag, else its environment variable, else the config file: client_open), --json. */
typedef struct {
  const char *server;     /* --server, or NULL */
  const char *token_file; /* --token-file, or NULL */
  int json;               /* `mapsage --json COMMAND`: as the command's own --json */
} cli_global_t;

typedef struct {
  char *server;        /* base URL without a trailing '/', e.g. http://127.0.0.1:8787 */
  char *authorization; /* "Authorization: Bearer <token>", or NULL without a token */
} client_t;

typedef struct {
  long status; /* the HTTP status */
  buffer_t body;
} client_response_t;

/* One HTTP exchange being set up; client_request() is the common case, watch.c builds its
 * stream on this directly. */
typedef struct {
  CURL *curl;
  struct curl_slist *headers;
  buffer_t url;
  char error[CURL_ERROR_SIZE];
} client_call_t;

/* Reads the config file (config_file.c), resolves the server (--server, $MAPSAGE_SERVER,
 * the file's, the default) and reads the token (--token-file, $MAPSAGE_TOKEN_FILE, the
 * file's). Only commands that talk to a server read the file, so a broken one does not
 * stand in the way of --help or `completion`. Returns a CLI_EXIT_* code, having printed why. */
int client_open(client_t *client, const cli_global_t *global);
void client_close(client_t *client);

/* Prepares `call` for `path` (which starts with "/api/"): URL, authorization, timeouts.
 * Returns 0 or -ENOMEM. client_call_free() is safe after a failed init. */
int client_call_init(const client_t *client, client_call_t *call, const char *path);
int client_call_add_header(client_call_t *call, const char *header);
/* Runs the transfer with the headers added so far; returns libcurl's code. */
CURLcode client_call_perform(client_call_t *call);
/* Prints why a transfer failed, in the user's terms, and returns the exit code it means. */
int client_call_report(const client_t *client, const client_call_t *call, CURLcode code);
void client_call_free(client_call_t *call);

/* Sends `method path` with an optional JSON body and collects the answer, whatever its
 * status. Returns CLI_EXIT_OK when an answer arrived, otherwise the code for why not. */
int client_request(const client_t *client, const char *method, const char *path,
                   const char *body, size_t body_length, client_response_t *response);
void client_response_free(client_response_t *response);

/* For an answer that is not 2xx: prints the server's "error" (and its "errors", one
 * `  path: message` line each) and returns CLI_EXIT_FAILED. Returns CLI_EXIT_OK for 2xx. */
int client_check(const client_response_t *response);

/* Parses a 2xx answer's body as a JSON object into `*root` (the caller owns it). */
int client_parse(const client_response_t *response, const char *what, json_t **root);
/* Writes a raw answer for --json, ending it with a newline for the shell's sake. */
void client_print_raw(const client_response_t *response);

/* client_request + client_check + client_parse. */
int client_get_json(const client_t *client, const char *path, json_t **root);

/* ---------------------------------------------------------------------------------------
 * format_: turning API values into text for people. Outputs go to caller buffers of a
 * given size and are cut, never overrun. */

/* Parses the API's "2026-11-27T19:30:00.123Z" into seconds since the epoch. */
int format_parse_time(const char *text, double *seconds);
/* "0.25s", "4.5s", "45s", "3m12s", "2h05m", "3d4h" */
void format_duration(double seconds, char *out, size_t size);
/* The same, coarser, for an age column: "45s", "3m", "2h", "3d" */
void format_age(double seconds, char *out, size_t size);
/* "2026-11-27 20:30:00" in the local time zone. */
void format_local_time(double seconds, char *out, size_t size);
/* A JSON number as a person reads it: integers whole, reals with up to 6 significant digits. */
void format_number(const json_t *value, char *out, size_t size);
/* Terminal columns `text` (UTF-8) occupies: East Asian wide characters count two. */
size_t format_text_width(const char *text);
/* Appends `text` cut to at most `columns` terminal columns, with "…" where it was cut. */
int format_append_cut(buffer_t *buffer, const char *text, size_t columns);

/* The live line of `watch` and `study watch`: one line a terminal keeps rewriting, with
 * permanent lines printed above it. Piped (tty 0), only the permanent lines appear. */
typedef struct {
  int tty;
  int json;       /* --json: stdout carries the events as JSON lines; say() writes nothing */
  int shown;      /* the line is on the screen */
  int dirty;      /* what it should show changed since it was drawn */
  buffer_t line;
} live_line_t;
/* Takes the line off the screen (it is drawn again when next asked). */
void live_line_erase(live_line_t *live);
/* A permanent line on stdout, above the live one. */
void live_line_say(live_line_t *live, const char *text);
/* A message for the person on stderr ("mapsage: …"), without tearing the live line. */
void live_line_notice(live_line_t *live, const char *text);
/* Shows `text` as the live line, cut one column short of the terminal's width (a full line
 * would wrap, and \r would then rewrite only the wrapped part). A no-op when piped. */
void live_line_draw(live_line_t *live, const char *text);
/* Leaves the last live line on the screen, readable, and frees what the line holds. */
void live_line_close(live_line_t *live);
/* JSON field helpers that tolerate absent and null fields. */
const char *format_json_string(const json_t *object, const char *key); /* NULL if not a string */
int format_json_integer(const json_t *object, const char *key, long long *value);
int format_json_number(const json_t *object, const char *key, double *value);

/* table_: columns aligned by display width, like `docker ps` (and, with a rule under the
 * header, like sqlite3's -header -column). Any number of columns; each column's width is
 * kept up to date as rows are added. */
typedef enum { TABLE_LEFT, TABLE_RIGHT } table_align_t;
typedef struct {
  size_t columns;
  const table_align_t *align; /* `columns` entries, owned by the caller */
  int rule;                   /* draw a line of '-' under the first row, the header */
  size_t rows;
  size_t capacity;
  char **cells;   /* rows × columns strings, row-major */
  size_t *widths; /* per column: the widest cell's display width */
} table_t;

void table_init(table_t *table, size_t columns, const table_align_t *align);
/* Adds a row of `table->columns` strings (copied; NULL counts as ""). Returns 0 or -ENOMEM. */
int table_add_row(table_t *table, const char *const *cells);
void table_print(const table_t *table, FILE *out);
void table_free(table_t *table);

/* ---------------------------------------------------------------------------------------
 * mapsage.c: help and usage errors, shared by every command. */

/* The keys of every command's options (their tables are beside the help texts, in
 * mapsage.c); a command switches on them as options_next returns them. */
enum {
  CLI_OPTION_HELP = 'h',
  CLI_OPTION_OUTPUT = 'o',
  CLI_OPTION_FOLLOW = 'f',
  CLI_OPTION_JSON = 256,
  CLI_OPTION_SERVER,
  CLI_OPTION_TOKEN_FILE,
  CLI_OPTION_VERSION,
  CLI_OPTION_SET,
  CLI_OPTION_STATUS,
  CLI_OPTION_NAME,
  CLI_OPTION_LIMIT,
  CLI_OPTION_ALL,
  CLI_OPTION_DRY_RUN,
  CLI_OPTION_PARAM,
  CLI_OPTION_CSV,
  CLI_OPTION_SHELL,
  CLI_OPTION_FORMAT,
  CLI_OPTION_NAMES,
  CLI_OPTION_LAYOUT,
  CLI_OPTION_CLASSES,
  CLI_OPTION_EPOCH,
  CLI_OPTION_REMOVE,
  CLI_OPTION_CLEAR,
  CLI_OPTION_UNDO,
  CLI_OPTION_TAG,
  CLI_OPTION_ARCHIVED,
  CLI_OPTION_WHERE,
  CLI_OPTION_SORT,
  CLI_OPTION_DESC,
  CLI_OPTION_ORDER,
  CLI_OPTION_COLUMNS,
  CLI_OPTION_OFFSET,
};
/* Starts parsing `command`'s arguments (argv[0] is its name) with its option table. */
void cli_options_init(options_t *parser, const char *command, int argc, char **argv);
/* What a command does with the keys it has no case of its own for: -h prints its help,
 * OPTIONS_ERROR the usage error, an argument "unexpected argument". Returns the exit code. */
int cli_options_default(const options_t *parser, const char *command, int key);

/* Prints every command's help as roff for mapsage(1) (`mapsage help --man`). */
int cli_help_man(void);
/* Prints `mapsage COMMAND --help` on stdout; returns CLI_EXIT_OK. */
int cli_help(const char *command);
/* Prints "mapsage: <message>", the command's usage line and a pointer to its help on stderr;
 * returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *command, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Says "mapsage: out of memory" and returns CLI_EXIT_FAILED. */
int cli_out_of_memory(void);
/* Parses an experiment id; returns 0 or -EINVAL. */
int cli_parse_id(const char *text, long long *id);
/* Parses the arguments of the commands that take one experiment: `COMMAND ID`, plus
 * `--json` when `json` is not NULL (set too by the global --json). Returns CLI_PROCEED with *id set, or the exit code to
 * return at once (after --help, or a usage error it printed). */
/* The same for any one-id command: `what` ("experiment", "study") words the errors, `flags`
 * (ended by a 0 key) are the flags it takes beside -h. */
struct cli_flag;
int cli_parse_id_arguments(const char *command, const char *what, int argc, char **argv, long long *id,
                           const struct cli_flag *flags);
int cli_parse_id_command(const cli_global_t *global, const char *command, int argc, char **argv, long long *id,
                         int *json);

/* ---------------------------------------------------------------------------------------
 * The commands: argv[0] is the command's name. Each returns a CLI_EXIT_* code. */
int command_submit(const cli_global_t *global, int argc, char **argv);
int command_ls(const cli_global_t *global, int argc, char **argv);
int command_show(const cli_global_t *global, int argc, char **argv);
int command_cancel(const cli_global_t *global, int argc, char **argv);
int command_watch(const cli_global_t *global, int argc, char **argv);
int command_sql(const cli_global_t *global, int argc, char **argv);
int command_report(const cli_global_t *global, int argc, char **argv);
int command_rerun(const cli_global_t *global, int argc, char **argv);
int command_logs(const cli_global_t *global, int argc, char **argv);
int command_completion(const cli_global_t *global, int argc, char **argv);
/* organise.c: tags, notes, names, archive, delete (PATCH and DELETE /api/experiments/{id}). */
int command_tag(const cli_global_t *global, int argc, char **argv);
int command_note(const cli_global_t *global, int argc, char **argv);
int command_rename(const cli_global_t *global, int argc, char **argv);
int command_archive(const cli_global_t *global, int argc, char **argv);
int command_rm(const cli_global_t *global, int argc, char **argv);

/* The command table (mapsage.c), which completion.c turns into shell scripts. A command with
 * subcommands has an entry of its own and one per subcommand, named "study submit". */
typedef struct {
  const char *name;
  int (*run)(const cli_global_t *global, int argc, char **argv);
  const char *usage;   /* what follows "usage: mapsage " */
  const char *help;    /* the rest of `mapsage COMMAND --help` */
  const option_t *options;
  size_t n_options;
  const char *arguments; /* what completes the arguments: "experiment", "study", "file", "shell", NULL */
} cli_command_t;
const cli_command_t *cli_command_list(size_t *count);
const option_t *cli_global_option_list(size_t *count);

/* ---------------------------------------------------------------------------------------
 * config_file.c: ~/.config/mapsage/config ($XDG_CONFIG_HOME respected), lines of
 * `key = value`: server, token-file. What it sets comes after the flags and the environment. */
typedef struct {
  char *path;       /* the file read, or NULL when there is none */
  char *server;
  char *token_file;
} config_file_t;
/* Reads the file if it exists. Returns CLI_EXIT_OK (`file` to be freed), or CLI_EXIT_USAGE
 * after naming the file, the line number and what is wrong with it (nothing to free). */
int config_file_load(config_file_t *file);
void config_file_free(config_file_t *file);
/* study.c: `mapsage study` itself (its help, an unknown subcommand), then each subcommand,
 * run with argv[0] = "submit", "ls", … */
int command_study(const cli_global_t *global, int argc, char **argv);
int command_study_submit(const cli_global_t *global, int argc, char **argv);
int command_study_ls(const cli_global_t *global, int argc, char **argv);
int command_study_show(const cli_global_t *global, int argc, char **argv);
int command_study_watch(const cli_global_t *global, int argc, char **argv);
int command_study_cancel(const cli_global_t *global, int argc, char **argv);
/* dataset.c: `mapsage dataset` (help, unknown subcommands), its subcommands, and `export`. */
int command_dataset(const cli_global_t *global, int argc, char **argv);
int command_dataset_add(const cli_global_t *global, int argc, char **argv);
int command_dataset_ls(const cli_global_t *global, int argc, char **argv);
int command_dataset_show(const cli_global_t *global, int argc, char **argv);
int command_dataset_rm(const cli_global_t *global, int argc, char **argv);
int command_export(const cli_global_t *global, int argc, char **argv);
/* What study.c's commands and study_watch.c share: `study COMMAND ID [--json] [--all]`
 * parsed (CLI_PROCEED with *id, or the exit code); the runs that have ended in a study's
 * counts; a runs list's distinct experiments; counts as "3 succeeded, 2 running". */
int study_parse_id_command(const cli_global_t *global, const char *command, int argc, char **argv, long long *id,
                           int *json, int *all);
long long study_ended_runs(const json_t *counts);
size_t study_count_runs(const json_t *runs);
int study_append_counts(buffer_t *buffer, const json_t *counts);

/* Applies one `--set path=value` to `config`. On failure, returns -EINVAL (or -ENOMEM)
 * with a sentence naming the path in `error`. Exposed for its own sake: it is the one piece of submit
 * with rules of its own. */
int submit_set(json_t *config, const char *assignment, char *error, size_t error_size);
/* The array `key` of a list answer (GET /api/experiments, /api/studies) as a table, a row
 * per item by `add_row` (given `context` as it is), with a note on stderr when more exist.
 * An exit code. */
int print_list_table(const json_t *answer, const char *key, const char *const *header, const table_align_t *align,
                     size_t columns,
                     int (*add_row)(table_t *table, const json_t *item, double now, const void *context),
                     const void *context);
/* Reconnecting a live stream, as `watch` and `study watch` do (watch.c): a connection that
 * breaks is tried again up to STREAM_RETRIES times in a row, after a pause that starts at
 * the server's `retry` (else 500 ms), never under 100 ms, and doubles per failure up to 8 s;
 * a connection that lasted STREAM_HEALTHY_S, or brought events, resets the count. Ctrl-C
 * ends the watching (not the run) once stream_catch_interrupt() has been called. */
#define STREAM_RETRIES 5
#define STREAM_HEALTHY_S 30.0        /* a connection this long was not a failed reconnect */
#define STREAM_IDLE_TIMEOUT_S 45L    /* three missed pings: the connection is dead */
long stream_backoff_ms(long server_retry_ms, int failures);
/* Writes one event of a stream as the JSON line of `watch --json` and `study watch --json`:
 * {"event": "metric", "id": "12", "data": {…}} (no "id" when the event has none). */
struct sse_event;
void stream_print_event(const struct sse_event *event, const json_t *data);
/* Sleeps, waking early on Ctrl-C. */
void stream_pause(long milliseconds);
/* Catches SIGINT into stream_interrupted() (no SA_RESTART, so a pause wakes up); returns 1
 * when the previous handler was saved in `previous`, to be put back. */
int stream_catch_interrupt(struct sigaction *previous);
int stream_interrupted(void);

/* A flag without a value (--dry-run, --json): its key (CLI_OPTION_*) and what it sets to 1. */
typedef struct cli_flag {
  int key;
  int *value;
} cli_flag_t;
/* The arguments `submit` and `study submit` share — FILE (or - for standard input),
 * repeated --set PATH=VALUE (into `assignments`, which holds argc), -h, -- — and the
 * command's own `flags` (NULL-terminated; may be NULL). `what` ("config", "study") and
 * `set_example` word the usage errors. Returns CLI_PROCEED, or the exit code to return. */
int submit_parse_arguments(const char *command, const char *what, const char *set_example, int argc, char **argv,
                           const cli_flag_t *flags, const char **file, const char **assignments, int *n_assignments);
/* Reads FILE ("-": standard input), applies each --set, and gives the text to POST in *body
 * (the caller frees it); `what` ("config", "study") words the errors. Returns CLI_EXIT_OK
 * or an exit code, the reason said on stderr. */
int submit_read_document(const char *file, const char *what, const char *const *assignments, int n_assignments,
                         char **body, size_t *length);

#endif
