/* completion.c — `mapsage completion bash|zsh`: the shell completion scripts, written from
 * the command table and the option tables of mapsage.c, so that a command or flag added
 * there is completed without anyone editing a script. The build runs it to install the two
 * files (CMakeLists.txt); `source <(mapsage completion bash)` works as well.
 *
 * Experiment and study ids are completed from the server as one types: the script runs
 * the very mapsage being completed (with the --server and --token-file already typed) on
 * `sql "SELECT id FROM experiments …" --csv`, one cheap query, its errors discarded, so a
 * daemon that is down only means no ids are offered. */
#include "cli.h"

#include <string.h>

#include "util.h"

#define COMPLETION_IDS_SQL "SELECT id FROM %s ORDER BY id DESC LIMIT 100"

/* A command's one-line description for zsh: its help's first sentence, cut at 60 bytes,
 * with what zsh's _describe and _arguments would read as syntax (: [ ] ' \) left out. */
static void completion_describe(const char *help, char *out, size_t size) {
  size_t used = 0;
  for (const char *p = help; *p != '\0' && used + 1 < size && used < 60; p++) {
    if (*p == '\n' || (*p == '.' && (p[1] == ' ' || p[1] == '\n' || p[1] == '\0')) || *p == ':' || *p == '(') break;
    if (strchr("[]'\\`$\"", *p) != NULL) continue;
    out[used++] = *p;
  }
  while (used > 0 && out[used - 1] == ' ') used--;
  out[used] = '\0';
}

/* The words after `mapsage` that name the entry: "study submit" is two. */
static int completion_is_group(const cli_command_t *commands, size_t count, const char *name) {
  size_t length = strlen(name);
  for (size_t i = 0; i < count; i++)
    if (strncmp(commands[i].name, name, length) == 0 && commands[i].name[length] == ' ') return 1;
  return 0;
}

/* --a --b -h … of one table, space-separated. */
static void completion_flags(const option_t *options, size_t n_options, FILE *out) {
  for (size_t i = 0; i < n_options; i++) {
    if (options[i].name != NULL) fprintf(out, "%s--%s", i ? " " : "", options[i].name);
    if (options[i].short_name != 0) fprintf(out, " -%c", options[i].short_name);
  }
}

/* The options of one table that take a value, as a bash case pattern "--a|--b" (or a
 * pattern that matches nothing). */
static void completion_valued(const option_t *options, size_t n_options, FILE *out) {
  int any = 0;
  for (size_t i = 0; i < n_options; i++) {
    if (options[i].value_name == NULL) continue;
    fprintf(out, "%s--%s", any ? "|" : "", options[i].name);
    if (options[i].short_name != 0) fprintf(out, "|-%c", options[i].short_name);
    any = 1;
  }
  if (!any) fputs("--no-option-takes-a-value", out);
}

/* The part of _mapsage after the command word: a group's subcommand, then each command's
 * flags, the flags that take a value, and what its arguments are. */
static void completion_bash_commands(const cli_command_t *commands, size_t count, FILE *out) {
  /* A group (study): its subcommand first, then the subcommand's own completion. */
  for (size_t c = 0; c < count; c++) {
    if (!completion_is_group(commands, count, commands[c].name)) continue;
    fprintf(out, "    %s)\n      if [ \"$next\" -ge \"$COMP_CWORD\" ]; then\n        COMPREPLY=($(compgen -W \"",
            commands[c].name);
    size_t length = strlen(commands[c].name);
    int first = 1;
    for (size_t s = 0; s < count; s++)
      if (strncmp(commands[s].name, commands[c].name, length) == 0 && commands[s].name[length] == ' ') {
        fprintf(out, "%s%s", first ? "" : " ", commands[s].name + length + 1);
        first = 0;
      }
    fputs("\" -- \"$cur\"))\n        return\n      fi\n      command=\"$command ${COMP_WORDS[next]}\" ;;\n", out);
  }
  fputs("    help) COMPREPLY=($(compgen -W \"", out);
  for (size_t c = 0; c < count; c++)
    if (strchr(commands[c].name, ' ') == NULL) fprintf(out, "%s%s", c ? " " : "", commands[c].name);
  fputs("\" -- \"$cur\")); return ;;\n  esac\n  case $command in\n", out);
  for (size_t c = 0; c < count; c++) {
    fprintf(out, "    \"%s\") flags=\"", commands[c].name);
    completion_flags(commands[c].options, commands[c].n_options, out);
    fputs("\"; valued=\"", out);
    completion_valued(commands[c].options, commands[c].n_options, out);
    fprintf(out, "\"; arguments=%s ;;\n", commands[c].arguments != NULL ? commands[c].arguments : "none");
  }
  fputs("    *) return ;;\n"
        "  esac\n"
        "  case \"|$valued|\" in *\"|$prev|\"*) COMPREPLY=(); return ;; esac\n"
        "  if [[ $cur == -* ]]; then\n"
        "    COMPREPLY=($(compgen -W \"$flags\" -- \"$cur\"))\n"
        "    return\n"
        "  fi\n"
        "  case $arguments in\n"
        "    file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- \"$cur\")) ;;\n"
        "    experiment) COMPREPLY=($(compgen -W \"$(_mapsage_ids experiments \"${global[@]}\")\" -- \"$cur\")) ;;\n"
        "    study) COMPREPLY=($(compgen -W \"$(_mapsage_ids studies \"${global[@]}\")\" -- \"$cur\")) ;;\n"
        "    shell) COMPREPLY=($(compgen -W \"bash zsh\" -- \"$cur\")) ;;\n"
        "    *) COMPREPLY=() ;;\n"
        "  esac\n"
        "}\n"
        "complete -F _mapsage mapsage\n",
        out);
}

static void completion_bash(FILE *out) {
  size_t count, n_global;
  const cli_command_t *commands = cli_command_list(&count);
  const option_t *global = cli_global_option_list(&n_global);
  fputs("# bash completion for mapsage, written by `mapsage completion bash` from its command\n"
        "# table: commands, options, experiment and study ids (asked of the server), files.\n"
        "_mapsage_ids() {\n"
        "  # $1: experiments or studies; the rest: the global options already typed\n"
        "  local table=$1\n"
        "  shift\n"
        "  \"$_mapsage_program\" \"$@\" sql \"$(printf '" COMPLETION_IDS_SQL "' \"$table\")\" --csv 2>/dev/null |\n"
        "    tail -n +2 | tr -d '\\r'\n"
        "}\n"
        "_mapsage() {\n"
        "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n"
        "  local i=1 command flags valued arguments\n"
        "  local -a global=()\n"
        "  _mapsage_program=${COMP_WORDS[0]}\n"
        "  while [ \"$i\" -lt \"$COMP_CWORD\" ]; do\n"
        "    case ${COMP_WORDS[i]} in\n"
        "      ",
        out);
  completion_valued(global, n_global, out);
  fputs(") global+=(\"${COMP_WORDS[i]}\" \"${COMP_WORDS[i+1]}\"); i=$((i + 2)) ;;\n"
        "      --*=*) global+=(\"${COMP_WORDS[i]}\"); i=$((i + 1)) ;;\n"
        "      -*) i=$((i + 1)) ;;\n"
        "      *) break ;;\n"
        "    esac\n"
        "  done\n"
        "  if [ \"$i\" -ge \"$COMP_CWORD\" ]; then\n"
        "    case $prev in\n"
        "      --token-file) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
        "      ",
        out);
  completion_valued(global, n_global, out);
  fputs(") COMPREPLY=(); return ;;\n"
        "    esac\n"
        "    if [[ $cur == -* ]]; then\n"
        "      COMPREPLY=($(compgen -W \"",
        out);
  completion_flags(global, n_global, out);
  fputs("\" -- \"$cur\"))\n"
        "    else\n"
        "      COMPREPLY=($(compgen -W \"help",
        out);
  for (size_t c = 0; c < count; c++)
    if (strchr(commands[c].name, ' ') == NULL) fprintf(out, " %s", commands[c].name);
  fputs("\" -- \"$cur\"))\n"
        "    fi\n"
        "    return\n"
        "  fi\n"
        "  command=${COMP_WORDS[i]}\n"
        "  local next=$((i + 1))\n"
        "  case $command in\n",
        out);
  completion_bash_commands(commands, count, out);
}

/* One table as _arguments specs: '--name[help]:value:' each, files for FILE values. */
static void completion_zsh_options(const option_t *options, size_t n_options, FILE *out) {
  for (size_t i = 0; i < n_options; i++) {
    char help[96];
    completion_describe(options[i].help != NULL ? options[i].help : "", help, sizeof help);
    const char *action = options[i].value_name == NULL ? "" : strcmp(options[i].value_name, "FILE") == 0 ? ":file:_files"
                                                                                                          : ": :";
    if (options[i].short_name != 0)
      fprintf(out, " '(-%c --%s)'{-%c,--%s}'[%s]%s'", options[i].short_name, options[i].name, options[i].short_name,
              options[i].name, help, action);
    else
      fprintf(out, " '--%s[%s]%s'", options[i].name, help, action);
  }
}

static void completion_zsh(FILE *out) {
  size_t count, n_global;
  const cli_command_t *commands = cli_command_list(&count);
  const option_t *global = cli_global_option_list(&n_global);
  fputs("#compdef mapsage\n"
        "# zsh completion for mapsage, written by `mapsage completion zsh` from its command table.\n"
        "_mapsage_ids() {\n"
        "  local -a ids\n"
        "  ids=(${(f)\"$(\"$_mapsage_program\" sql \"$(printf '" COMPLETION_IDS_SQL "' $1)\" --csv 2>/dev/null |"
        " tail -n +2 | tr -d '\\r')\"})\n"
        "  compadd -a ids\n"
        "}\n"
        "_mapsage() {\n"
        "  local curcontext=$curcontext state line\n"
        "  typeset -A opt_args\n"
        "  _mapsage_program=$words[1]\n"
        "  _arguments -C",
        out);
  completion_zsh_options(global, n_global, out);
  fputs(" '1:command:->command' '*::argument:->argument'\n"
        "  case $state in\n"
        "    command)\n"
        "      local -a commands\n"
        "      commands=('help:this help, or one command'\\''s'",
        out);
  for (size_t c = 0; c < count; c++) {
    if (strchr(commands[c].name, ' ') != NULL) continue;
    char help[96];
    completion_describe(commands[c].help, help, sizeof help);
    fprintf(out, " '%s:%s'", commands[c].name, help);
  }
  fputs(")\n"
        "      _describe command commands ;;\n"
        "    argument)\n"
        "      local command=$words[1]\n"
        "      case $command in\n",
        out);
  for (size_t c = 0; c < count; c++) {
    if (!completion_is_group(commands, count, commands[c].name)) continue;
    size_t length = strlen(commands[c].name);
    fprintf(out, "        %s)\n          if (( CURRENT == 2 )); then\n            local -a sub\n            sub=(",
            commands[c].name);
    for (size_t s = 0; s < count; s++) {
      if (strncmp(commands[s].name, commands[c].name, length) != 0 || commands[s].name[length] != ' ') continue;
      char help[96];
      completion_describe(commands[s].help, help, sizeof help);
      fprintf(out, " '%s:%s'", commands[s].name + length + 1, help);
    }
    fputs(")\n            _describe subcommand sub\n            return\n          fi\n"
          "          command=\"$command $words[2]\"\n          shift words\n          (( CURRENT-- )) ;;\n",
          out);
  }
  fputs("      esac\n      case $command in\n", out);
  for (size_t c = 0; c < count; c++) {
    const char *arguments = commands[c].arguments;
    const char *action = arguments == NULL                      ? ""
                         : strcmp(arguments, "file") == 0       ? " '1:file:_files'"
                         : strcmp(arguments, "experiment") == 0 ? " '1:experiment:_mapsage_ids experiments'"
                         : strcmp(arguments, "study") == 0      ? " '1:study:_mapsage_ids studies'"
                         : strcmp(arguments, "shell") == 0      ? " '1:shell:(bash zsh)'"
                                                                : "";
    fprintf(out, "        \"%s\") _arguments", commands[c].name);
    completion_zsh_options(commands[c].options, commands[c].n_options, out);
    fprintf(out, "%s ;;\n", action);
  }
  fputs("      esac ;;\n"
        "  esac\n"
        "}\n"
        "_mapsage \"$@\"\n",
        out);
}

int command_completion(const cli_global_t *global, int argc, char **argv) {
  (void)global;
  options_t parser;
  cli_options_init(&parser, "completion", argc, argv);
  const char *shell = NULL;
  int key;
  while ((key = options_next(&parser)) != OPTIONS_END) {
    if (key == OPTIONS_ARGUMENT && shell == NULL) shell = parser.value;
    else return cli_options_default(&parser, "completion", key);
  }
  if (shell == NULL) return cli_usage_error("completion", "which shell? bash or zsh");
  if (strcmp(shell, "bash") == 0) completion_bash(stdout);
  else if (strcmp(shell, "zsh") == 0) completion_zsh(stdout);
  else return cli_usage_error("completion", "no completion for %s: bash or zsh", shell);
  return CLI_EXIT_OK;
}
