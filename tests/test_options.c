/* test_options.c — common/options.c, the parser of every MapSage program's command line:
 * each accepted form (--name VALUE, --name=VALUE, -x VALUE, -xVALUE, options among
 * arguments, --, - as an argument), getopt_long's unique prefixes when asked for, every
 * error with its message, stopping at the first argument (mapsage's global options), and
 * the --help list laid out from the same table. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "options.h"
#include "util.h"

enum { KEY_LISTEN = 256, KEY_LIMIT, KEY_JSON, KEY_DRY_RUN };

static const option_t options[] = {
  {KEY_LISTEN, "listen", 0, "HOST:PORT", "where to listen"},
  {KEY_LIMIT, "limit", 'n', "N", "at most N\nof them"},
  {KEY_JSON, "json", 0, NULL, "JSON"},
  {KEY_DRY_RUN, "dry-run", 0, NULL, "nothing"},
  {'h', "help", 'h', NULL, "this help"},
};

/* What a whole command line parses to: "key=value" for options, "arg=value" for
 * arguments, "error: …" for an error (the last), joined by " | ". */
static void parse(int abbreviations, int stop_at_argument, char *line, char *out, size_t size, int *next) {
  char *argv[32];
  int argc = 0;
  argv[argc++] = "program";
  for (char *save = NULL, *word = strtok_r(line, " ", &save); word != NULL && argc < 31;
       word = strtok_r(NULL, " ", &save))
    argv[argc++] = strcmp(word, "''") == 0 ? "" : word;
  argv[argc] = NULL;
  options_t parser;
  options_init(&parser, options, ARRAY_SIZE(options), argc, argv);
  parser.abbreviations = abbreviations;
  parser.stop_at_argument = stop_at_argument;
  out[0] = '\0';
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    size_t used = strlen(out);
    if (key == OPTIONS_ERROR) {
      snprintf(out + used, size - used, "%serror: %s", used ? " | " : "", parser.error);
      break;
    }
    if (key == OPTIONS_ARGUMENT)
      snprintf(out + used, size - used, "%sarg=%s", used ? " | " : "", parser.value);
    else
      snprintf(out + used, size - used, "%s%s=%s", used ? " | " : "", parser.option->name,
               parser.value != NULL ? parser.value : "");
    CHECK(key == OPTIONS_ARGUMENT || parser.option->key == key);
  }
  if (next != NULL) *next = parser.index;
}

static void check_parse(int abbreviations, const char *line, const char *expected) {
  char copy[256], out[512];
  snprintf(copy, sizeof copy, "%s", line);
  parse(abbreviations, 0, copy, out, sizeof out, NULL);
  CHECK_STR(expected, out);
}

int main(void) {
  /* The forms. */
  check_parse(0, "--listen 127.0.0.1:0 --json", "listen=127.0.0.1:0 | json=");
  check_parse(0, "--listen=127.0.0.1:0", "listen=127.0.0.1:0");
  check_parse(0, "--listen= --json", "listen= | json=");
  check_parse(0, "--limit=a=b", "limit=a=b");
  check_parse(0, "-n 5 -n7 -h", "limit=5 | limit=7 | help=");
  check_parse(0, "file.json --json other", "arg=file.json | json= | arg=other");
  check_parse(0, "- --json", "arg=- | json=");
  check_parse(0, "--json -- --listen -n", "json= | arg=--listen | arg=-n");
  check_parse(0, "--listen --json", "listen=--json"); /* the next word is the value, as getopt's */
  check_parse(0, "''", "arg=");
  check_parse(0, "", "");

  /* Errors, each naming the option. */
  check_parse(0, "--bogus", "error: unknown option --bogus");
  check_parse(0, "--json --lis 1", "json= | error: unknown option --lis");
  check_parse(0, "--listen", "error: --listen needs a value: HOST:PORT");
  check_parse(0, "-n", "error: -n needs a value: N");
  check_parse(0, "--json=yes", "error: --json takes no value");
  check_parse(0, "-hx", "error: -h takes no value (in -hx)");
  check_parse(0, "-x", "error: unknown option -x");
  check_parse(0, "---json", "error: unknown option ---json");

  /* Unique prefixes, only when asked for; an exact name wins over being a prefix. */
  check_parse(1, "--lis 1 --dry --j", "listen=1 | dry-run= | json=");
  check_parse(1, "--l=2", "error: ambiguous option --l");
  check_parse(1, "--x", "error: unknown option --x");
  check_parse(0, "--dry", "error: unknown option --dry");

  /* Stopping at the first argument: mapsage's global options before the command. */
  char line[] = "--json ls --limit 3", out[256];
  int next = 0;
  parse(0, 1, line, out, sizeof out, &next);
  CHECK_STR("json=", out);
  CHECK_INT(2, next); /* argv[2] is "ls" */

  /* --help's list: the texts in one column, a long label pushing its text on. */
  char *text = NULL;
  size_t length = 0;
  FILE *help = open_memstream(&text, &length);
  CHECK(help != NULL);
  if (help != NULL) {
    options_print_help(options, ARRAY_SIZE(options), help);
    fclose(help);
    CHECK_STR("  --listen HOST:PORT    where to listen\n"
              "  -n, --limit N         at most N\n"
              "                        of them\n"
              "  --json                JSON\n"
              "  --dry-run             nothing\n"
              "  -h, --help            this help\n",
              text);
    free(text);
  }
  static const option_t long_one[] = {{1, "max-worker-memory", 0, "SIZE", "a limit"}};
  help = open_memstream(&text, &length);
  CHECK(help != NULL);
  if (help != NULL) {
    options_print_help(long_one, ARRAY_SIZE(long_one), help);
    fclose(help);
    CHECK_STR("  --max-worker-memory SIZE  a limit\n", text);
    free(text);
  }
  return check_summary();
}
