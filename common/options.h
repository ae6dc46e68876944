/* options.h — the one command-line parser of mapsaged, mapsage-worker and every `mapsage`
 * command. A program describes its options once, in a table of option_t; the same table
 * drives the parsing (options_next, getopt-like: the caller switches on what it returns),
 * the option list of --help (options_print_help) and, for `mapsage`, the shell completion.
 *
 * What it accepts, as getopt_long did for the daemon and the worker: `--name VALUE`,
 * `--name=VALUE`, `-x VALUE`, `-xVALUE`, options and arguments in any order, `--` ending
 * the options, `-` as an argument (standard input). With `abbreviations` a unique prefix
 * of a long name stands for it (getopt_long's rule, kept for mapsaged and the worker). */
#ifndef MAPSAGE_OPTIONS_H
#define MAPSAGE_OPTIONS_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
  int key;                /* what options_next returns for it: a letter, or a value from 256 up */
  const char *name;       /* the long name without its dashes: "listen" is --listen */
  char short_name;        /* 'h' for -h; 0 for none */
  const char *value_name; /* "HOST:PORT" for an option that takes a value; NULL for a flag */
  const char *help;       /* --help's text; '\n' starts another line of it */
} option_t;

enum {
  OPTIONS_END = -1,      /* nothing left */
  OPTIONS_ERROR = -2,    /* parser->error says what, naming the option */
  OPTIONS_ARGUMENT = -3, /* an argument that is not an option, in parser->value */
};

typedef struct {
  const option_t *options;
  size_t n_options;
  int argc;
  char **argv;
  int index;            /* the next element of argv to read; starts at 1 */
  int stop_at_argument; /* the first argument ends the options: it and the rest are left in argv */
  int abbreviations;    /* a unique prefix of a long name stands for it */
  int options_done;     /* "--" was seen */
  const char *value;    /* the value of the option, or the argument, just returned */
  const option_t *option; /* the option just returned */
  char error[256];
} options_t;

void options_init(options_t *parser, const option_t *options, size_t n_options, int argc, char **argv);
/* The next option's key, OPTIONS_ARGUMENT, OPTIONS_END, or OPTIONS_ERROR with a sentence in
 * parser->error ("unknown option --x", "--listen needs a value: HOST:PORT"). */
int options_next(options_t *parser);
/* The option list of --help: "  -h, --help           text", the texts in one column. */
void options_print_help(const option_t *options, size_t n_options, FILE *out);

#endif
