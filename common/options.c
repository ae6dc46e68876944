/* options.c — the command-line parser every MapSage program shares (options.h): a table of
 * options in, one option or argument out per call, and --help's option list from the same
 * table, so what is parsed and what is documented cannot drift apart. */
#include "options.h"

#include <string.h>

void options_init(options_t *parser, const option_t *options, size_t n_options, int argc, char **argv) {
  memset(parser, 0, sizeof *parser);
  parser->options = options;
  parser->n_options = n_options;
  parser->argc = argc;
  parser->argv = argv;
  parser->index = 1;
}

/* The option whose long name is the `length` bytes of `name`: an exact match, else (with
 * abbreviations) the one option it is a prefix of. NULL, with the error said, otherwise. */
static const option_t *options_find_long(options_t *parser, const char *name, size_t length) {
  const option_t *found = NULL;
  int candidates = 0;
  for (size_t i = 0; i < parser->n_options; i++) {
    const option_t *option = &parser->options[i];
    if (option->name == NULL || strncmp(option->name, name, length) != 0) continue;
    if (option->name[length] == '\0') return option;
    if (parser->abbreviations) {
      found = option;
      candidates++;
    }
  }
  if (candidates == 1) return found;
  snprintf(parser->error, sizeof parser->error, "%s option --%.*s", candidates > 1 ? "ambiguous" : "unknown",
           (int)(length < 100 ? length : 100), name);
  return NULL;
}

static const option_t *options_find_short(options_t *parser, char letter) {
  for (size_t i = 0; i < parser->n_options; i++)
    if (letter != 0 && parser->options[i].short_name == letter) return &parser->options[i];
  snprintf(parser->error, sizeof parser->error, "unknown option -%c", letter);
  return NULL;
}

/* Takes the option's value from `attached` (after '=' or the letter) or the next argument. */
static int options_take_value(options_t *parser, const option_t *option, const char *attached, const char *shown) {
  if (attached != NULL) {
    parser->value = attached;
  } else if (parser->index < parser->argc) {
    parser->value = parser->argv[parser->index++];
  } else {
    snprintf(parser->error, sizeof parser->error, "%s needs a value: %s", shown, option->value_name);
    return OPTIONS_ERROR;
  }
  parser->option = option;
  return option->key;
}

int options_next(options_t *parser) {
  parser->value = NULL;
  parser->option = NULL;
  if (parser->index >= parser->argc) return OPTIONS_END;
  const char *argument = parser->argv[parser->index];
  if (parser->options_done || argument[0] != '-' || argument[1] == '\0') {
    if (parser->stop_at_argument) return OPTIONS_END;
    parser->index++;
    parser->value = argument;
    return OPTIONS_ARGUMENT;
  }
  parser->index++;
  if (strcmp(argument, "--") == 0) {
    parser->options_done = 1;
    return options_next(parser);
  }
  if (argument[1] == '-') {
    const char *name = argument + 2;
    const char *equals = strchr(name, '=');
    size_t length = equals != NULL ? (size_t)(equals - name) : strlen(name);
    const option_t *option = options_find_long(parser, name, length);
    if (option == NULL) return OPTIONS_ERROR;
    char shown[128];
    snprintf(shown, sizeof shown, "--%s", option->name);
    if (option->value_name == NULL) {
      if (equals != NULL) {
        snprintf(parser->error, sizeof parser->error, "%s takes no value", shown);
        return OPTIONS_ERROR;
      }
      parser->option = option;
      return option->key;
    }
    return options_take_value(parser, option, equals != NULL ? equals + 1 : NULL, shown);
  }
  /* One short option per argument: "-e7" is -e with 7; a flag takes nothing after it. */
  const option_t *option = options_find_short(parser, argument[1]);
  if (option == NULL) return OPTIONS_ERROR;
  char shown[4] = {'-', argument[1], '\0', '\0'};
  if (option->value_name == NULL) {
    if (argument[2] != '\0') {
      snprintf(parser->error, sizeof parser->error, "%s takes no value (in %.100s)", shown, argument);
      return OPTIONS_ERROR;
    }
    parser->option = option;
    return option->key;
  }
  return options_take_value(parser, option, argument[2] != '\0' ? argument + 2 : NULL, shown);
}

/* The text column: wide enough for most labels; a longer one pushes its text two spaces on. */
#define OPTIONS_HELP_COLUMN 24

void options_print_help(const option_t *options, size_t n_options, FILE *out) {
  for (size_t i = 0; i < n_options; i++) {
    const option_t *option = &options[i];
    if (option->help == NULL) continue; /* a hidden option */
    char label[128];
    int used = 0;
    if (option->short_name != 0 && option->name != NULL)
      used = snprintf(label, sizeof label, "-%c, --%s", option->short_name, option->name);
    else if (option->short_name != 0)
      used = snprintf(label, sizeof label, "-%c", option->short_name);
    else
      used = snprintf(label, sizeof label, "--%s", option->name);
    if (option->value_name != NULL && used > 0 && (size_t)used < sizeof label)
      snprintf(label + used, sizeof label - (size_t)used, " %s", option->value_name);
    int width = 2 + (int)strlen(label);
    fprintf(out, "  %s", label);
    fprintf(out, "%*s", width + 2 <= OPTIONS_HELP_COLUMN ? OPTIONS_HELP_COLUMN - width : 2, "");
    for (const char *line = option->help; *line != '\0';) {
      const char *end = strchr(line, '\n');
      size_t length = end != NULL ? (size_t)(end - line) : strlen(line);
      fprintf(out, "%.*s\n", (int)length, line);
      if (end == NULL) break;
      line = end + 1;
      fprintf(out, "%*s", OPTIONS_HELP_COLUMN, "");
    }
  }
}
