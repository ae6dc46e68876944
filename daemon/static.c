/* static.c — serves the dashboard (web/) from the table built into the daemon, or from a
 * directory on disk while developing (see static.h).
 *
 * Built-in files carry an ETag (a hash of their content, computed at build time) and
 * `Cache-Control: no-cache`: the file names are fixed (no hashes in them, no bundler), so a
 * browser must ask again each time, and a matching If-None-Match costs a 304 and no body.
 * Files read from --web-dir are `no-store`: they are being edited.
 *
 * Paths are refused before they are looked up when they could climb out of the root (a
 * "." or ".." segment, a backslash, an empty segment); files on disk are then checked
 * again after realpath(), which also catches a symbolic link that leads outside. */
#include "static.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define STATIC_FILE_LIMIT (64u << 20) /* a file on disk larger than this is not a web page */
#define STATIC_CSP                                                                                               \
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "          \
  "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static char static_root[PATH_MAX]; /* realpath of --web-dir, or "" */

int static_set_dir(const char *dir, char *error, size_t error_size) {
  static_root[0] = '\0';
  if (dir == NULL || dir[0] == '\0') return 0;
  char resolved[PATH_MAX];
  struct stat info;
  if (realpath(dir, resolved) == NULL || stat(resolved, &info) != 0) {
    int code = errno;
    snprintf(error, error_size, "--web-dir %s: %s", dir, strerror(code));
    return -code;
  }
  if (!S_ISDIR(info.st_mode)) {
    snprintf(error, error_size, "--web-dir %s: not a directory", dir);
    return -ENOTDIR;
  }
  util_strlcpy(static_root, resolved, sizeof static_root);
  return 0;
}

const char *static_content_type(const char *path) {
  static const struct {
    const char *extension, *type;
  } types[] = {
      {".html", "text/html; charset=utf-8"},      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},              {".svg", "image/svg+xml"},
      {".png", "image/png"},                      {".ico", "image/x-icon"},
      {".txt", "text/plain; charset=utf-8"},      {".map", "application/json"},
      {".woff2", "font/woff2"},
  };
  const char *slash = strrchr(path, '/');
  const char *dot = strrchr(slash ? slash : path, '.');
  if (dot)
    for (size_t i = 0; i < ARRAY_SIZE(types); i++)
      if (strcmp(dot, types[i].extension) == 0) return types[i].type;
  return "application/octet-stream";
}

/* Whether `path` (absolute, already percent-decoded by MHD) stays inside the root on its
 * face: every segment non-empty, none "." or "..", no backslash. */
static int path_is_clean(const char *path) {
  if (path[0] != '/' || strchr(path, '\\') != NULL) return 0;
  for (const char *segment = path + 1;;) {
    const char *end = strchr(segment, '/');
    size_t length = end ? (size_t)(end - segment) : strlen(segment);
    if (length == 0 || (length == 1 && segment[0] == '.') || (length == 2 && segment[0] == '.' && segment[1] == '.'))
      return 0;
    if (end == NULL) return 1;
    segment = end + 1;
  }
}

static int queue(http_request_t *request, unsigned status, struct MHD_Response *response, const char *content_type,
                 const char *etag, const char *cache_control) {
  if (response == NULL) return -ENOMEM;
  if (content_type) MHD_add_response_header(response, "Content-Type", content_type);
  if (etag) MHD_add_response_header(response, "ETag", etag);
  MHD_add_response_header(response, "Cache-Control", cache_control);
  /* The dashboard runs only its own files: no inline script or style, no eval, no frames,
   * nothing fetched from elsewhere (uPlot's styles are set through the CSSOM, which a policy
   * does not govern). http_respond adds nosniff, X-Frame-Options and Referrer-Policy. */
  MHD_add_response_header(response, "Content-Security-Policy", STATIC_CSP);
  return http_respond(request, status, response); /* it keeps the Cache-Control and policy set here */
}

/* From --web-dir: 0 when answered, 1 when there is no such file there (try the table). */
static int serve_from_disk(http_request_t *request, const char *path) {
  char joined[PATH_MAX], resolved[PATH_MAX];
  if (snprintf(joined, sizeof joined, "%s%s", static_root, path) >= (int)sizeof joined) return 1;
  if (realpath(joined, resolved) == NULL) return 1;
  size_t root_length = strlen(static_root);
  if (strncmp(resolved, static_root, root_length) != 0 || resolved[root_length] != '/')
    return http_respond_error(request, MHD_HTTP_FORBIDDEN, "%s leads outside the dashboard's directory", path);
  struct stat info;
  if (stat(resolved, &info) != 0 || !S_ISREG(info.st_mode)) return 1;
  char *data;
  size_t length;
  int result = util_read_file(resolved, STATIC_FILE_LIMIT, &data, &length);
  if (result != 0)
    return http_respond_error(request, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s: %s", path, strerror(-result));
  struct MHD_Response *response = MHD_create_response_from_buffer(length, data, MHD_RESPMEM_MUST_FREE);
  if (response == NULL) free(data);
  return queue(request, MHD_HTTP_OK, response, static_content_type(resolved), NULL, "no-store");
}

int static_serve(http_request_t *request) {
  const char *path = http_path(request);
  if (strcmp(path, "/") == 0) path = "/index.html";
  if (strlen(path) >= 1024 || !path_is_clean(path))
    return http_respond_error(request, MHD_HTTP_BAD_REQUEST, "not a path of the dashboard: no \".\", \"..\" or empty "
                                                             "segments, no backslashes");
  if (static_root[0]) {
    int result = serve_from_disk(request, path);
    if (result <= 0) return result;
  }
  for (size_t i = 0; i < static_files_count; i++) {
    const static_file_t *file = &static_files[i];
    if (strcmp(file->path, path) != 0) continue;
    const char *match = http_header(request, "If-None-Match");
    if (match && strstr(match, file->etag) != NULL) {
      struct MHD_Response *response = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
      return queue(request, MHD_HTTP_NOT_MODIFIED, response, NULL, file->etag, "no-cache");
    }
    struct MHD_Response *response =
        MHD_create_response_from_buffer(file->length, (void *)file->data, MHD_RESPMEM_PERSISTENT);
    return queue(request, MHD_HTTP_OK, response, file->content_type, file->etag, "no-cache");
  }
  json_t *body = json_pack("{s:s, s:o}", "error", "no such file", "path", http_json_text(http_path(request)));
  return http_respond_json(request, MHD_HTTP_NOT_FOUND, body);
}
