/* config_file.c — `mapsage`'s config file: where the daemon is and where its token lies,
 * for people who would otherwise export MAPSAGE_SERVER in every shell. One place:
 * $XDG_CONFIG_HOME/mapsage/config, else ~/.config/mapsage/config (the XDG base directory
 * rule). Lines of `key = value`; blank lines and lines starting with # are skipped. The
 * values only fill what neither a flag nor the environment gave (client_open). A line that
 * is not understood stops the command with the file's name and the line's number: a typo
 * silently ignored would send requests to the wrong server. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define CONFIG_FILE_LIMIT (64u << 10)

/* The file's path, or NULL without a home to find it in. The caller frees it. */
static char *config_file_path(void) {
  buffer_t path = {0};
  const char *base = getenv("XDG_CONFIG_HOME");
  int result;
  /* The XDG rule: a relative XDG_CONFIG_HOME is invalid and ignored. */
  if (base != NULL && base[0] == '/') {
    result = buffer_printf(&path, "%s/mapsage/config", base);
  } else {
    const char *home = getenv("HOME");
    if (home == NULL || home[0] == '\0') return NULL;
    result = buffer_printf(&path, "%s/.config/mapsage/config", home);
  }
  if (result != 0) {
    buffer_free(&path);
    return NULL;
  }
  return path.data;
}

/* token-file's value as a path to open: ~/ is the home directory; a relative path is
 * relative to the config file's directory, not to wherever the command runs. */
static char *config_file_resolve(const char *file_path, const char *value) {
  buffer_t path = {0};
  int result;
  const char *home = getenv("HOME");
  if (strncmp(value, "~/", 2) == 0 && home != NULL) {
    result = buffer_printf(&path, "%s/%s", home, value + 2);
  } else if (value[0] == '/') {
    result = buffer_append_text(&path, value);
  } else {
    const char *slash = strrchr(file_path, '/');
    result = buffer_printf(&path, "%.*s/%s", (int)(slash - file_path), file_path, value);
  }
  if (result != 0) {
    buffer_free(&path);
    return NULL;
  }
  return path.data;
}

/* One line, cut at its end; returns CLI_EXIT_OK or CLI_EXIT_USAGE having said why. */
static int config_file_line(config_file_t *file, char *line, int number) {
  while (isspace((unsigned char)*line)) line++;
  size_t length = strlen(line);
  while (length > 0 && isspace((unsigned char)line[length - 1])) line[--length] = '\0';
  if (length == 0 || line[0] == '#') return CLI_EXIT_OK;
  char *equals = strchr(line, '=');
  if (equals == NULL) {
    fprintf(stderr, "mapsage: %s:%d: expected KEY = VALUE (keys: server, token-file), not \"%s\"\n", file->path,
            number, line);
    return CLI_EXIT_USAGE;
  }
  char *key_end = equals;
  while (key_end > line && isspace((unsigned char)key_end[-1])) key_end--;
  *key_end = '\0';
  char *value = equals + 1;
  while (isspace((unsigned char)*value)) value++;
  char **slot = NULL;
  if (strcmp(line, "server") == 0) slot = &file->server;
  else if (strcmp(line, "token-file") == 0) slot = &file->token_file;
  if (slot == NULL) {
    fprintf(stderr, "mapsage: %s:%d: unknown key \"%s\" (keys: server, token-file)\n", file->path, number, line);
    return CLI_EXIT_USAGE;
  }
  if (value[0] == '\0') {
    fprintf(stderr, "mapsage: %s:%d: %s has no value\n", file->path, number, line);
    return CLI_EXIT_USAGE;
  }
  if (*slot != NULL) {
    fprintf(stderr, "mapsage: %s:%d: %s is set a second time\n", file->path, number, line);
    return CLI_EXIT_USAGE;
  }
  *slot = slot == &file->token_file ? config_file_resolve(file->path, value) : strdup(value);
  if (*slot != NULL) return CLI_EXIT_OK;
  fprintf(stderr, "mapsage: out of memory\n");
  return CLI_EXIT_FAILED;
}

int config_file_load(config_file_t *file) {
  memset(file, 0, sizeof *file);
  file->path = config_file_path();
  if (file->path == NULL) return CLI_EXIT_OK;
  char *text = NULL;
  size_t length = 0;
  int result = util_read_file(file->path, CONFIG_FILE_LIMIT, &text, &length);
  if (result == -ENOENT) return CLI_EXIT_OK; /* no file: nothing to read */
  if (result != 0) {
    fprintf(stderr, "mapsage: cannot read the config file %s: %s\n", file->path,
            result == -EFBIG ? "larger than 64 KiB" : strerror(-result));
    config_file_free(file);
    return CLI_EXIT_USAGE;
  }
  int exit_code = CLI_EXIT_OK;
  if (strlen(text) != length) {
    fprintf(stderr, "mapsage: the config file %s holds a NUL byte: not a text file\n", file->path);
    exit_code = CLI_EXIT_USAGE;
  }
  int number = 1;
  for (char *line = text; exit_code == CLI_EXIT_OK && line != NULL; number++) {
    char *end = strchr(line, '\n');
    if (end != NULL) *end = '\0';
    exit_code = config_file_line(file, line, number);
    line = end != NULL ? end + 1 : NULL;
  }
  free(text);
  if (exit_code != CLI_EXIT_OK) config_file_free(file);
  return exit_code;
}

void config_file_free(config_file_t *file) {
  free(file->path);
  free(file->server);
  free(file->token_file);
  memset(file, 0, sizeof *file);
}
