/* client.c — the HTTP side of `mapsage`: one libcurl easy handle per exchange, answers
 * collected in growable buffers, the server's JSON errors printed as the server worded them.
 * It never retries by itself (watch.c decides when to reconnect) and never pours a body it
 * does not understand onto the terminal: at most a one-line excerpt. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* The largest answer kept in memory: a page of 500 experiments is well under a megabyte;
 * anything near this is a server gone wrong. */
#define CLIENT_BODY_LIMIT (64u << 20)
#define CLIENT_TOKEN_LIMIT (64u << 10)
#define CLIENT_CONNECT_TIMEOUT_S 10L
#define CLIENT_REQUEST_TIMEOUT_S 120L

/* ---------------------------------------------------------------------------------------
 * buffer_ */

static int buffer_reserve(buffer_t *buffer, size_t extra) {
  if (extra > SIZE_MAX - buffer->length - 1) return -ENOMEM;
  size_t needed = buffer->length + extra + 1; /* +1: the NUL */
  if (buffer->limit != 0 && needed - 1 > buffer->limit) return -E2BIG;
  if (needed <= buffer->capacity) return 0;
  size_t capacity = buffer->capacity != 0 ? buffer->capacity : 256;
  while (capacity < needed) capacity = capacity > SIZE_MAX / 2 ? needed : capacity * 2;
  char *grown = realloc(buffer->data, capacity);
  if (grown == NULL) return -ENOMEM;
  buffer->data = grown;
  buffer->capacity = capacity;
  return 0;
}

int buffer_append(buffer_t *buffer, const void *bytes, size_t length) {
  int result = buffer_reserve(buffer, length);
  if (result != 0) return result;
  if (length != 0) memcpy(buffer->data + buffer->length, bytes, length);
  buffer->length += length;
  buffer->data[buffer->length] = '\0';
  return 0;
}

int buffer_append_text(buffer_t *buffer, const char *text) {
  return buffer_append(buffer, text, strlen(text));
}

int buffer_printf(buffer_t *buffer, const char *format, ...) {
  va_list arguments;
  va_start(arguments, format);
  int length = vsnprintf(NULL, 0, format, arguments);
  va_end(arguments);
  if (length < 0) return -EINVAL;
  int result = buffer_reserve(buffer, (size_t)length);
  if (result != 0) return result;
  va_start(arguments, format);
  vsnprintf(buffer->data + buffer->length, (size_t)length + 1, format, arguments);
  va_end(arguments);
  buffer->length += (size_t)length;
  return 0;
}

int buffer_append_query_value(buffer_t *buffer, const char *text) {
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
    int result;
    if (isalnum(*p) || strchr("-._~,", *p) != NULL) {
      result = buffer_append(buffer, p, 1);
    } else {
      char escaped[3] = {'%', hex[*p >> 4], hex[*p & 15]};
      result = buffer_append(buffer, escaped, 3);
    }
    if (result != 0) return result;
  }
  return 0;
}

void buffer_clear(buffer_t *buffer) {
  buffer->length = 0;
  if (buffer->data != NULL) buffer->data[0] = '\0';
}

void buffer_free(buffer_t *buffer) {
  free(buffer->data);
  buffer->data = NULL;
  buffer->length = buffer->capacity = 0;
}

const char *buffer_text(const buffer_t *buffer) {
  return buffer->data != NULL ? buffer->data : "";
}

/* ---------------------------------------------------------------------------------------
 * client_open: server and token */

/* The token is one line of printable ASCII; anything else would let a stray byte in the
 * file split the Authorization header. */
static int client_read_token(client_t *client, const char *path) {
  char *data = NULL;
  size_t length = 0;
  int result = util_read_file(path, CLIENT_TOKEN_LIMIT, &data, &length);
  if (result != 0) {
    fprintf(stderr, "mapsage: cannot read the token file %s: %s\n", path,
            result == -EFBIG ? "larger than 64 KiB, so not a token" : strerror(-result));
    return CLI_EXIT_USAGE;
  }
  while (length > 0 && isspace((unsigned char)data[length - 1])) data[--length] = '\0';
  int exit_code = CLI_EXIT_USAGE;
  if (length == 0) {
    fprintf(stderr, "mapsage: the token file %s is empty\n", path);
    goto done;
  }
  for (size_t i = 0; i < length; i++) {
    unsigned char c = (unsigned char)data[i];
    if (c < 0x21 || c > 0x7e) {
      fprintf(stderr, "mapsage: the token file %s must hold one token of printable characters, "
              "without spaces\n", path);
      goto done;
    }
  }
  buffer_t header = {0};
  if (buffer_printf(&header, "Authorization: Bearer %s", data) != 0) {
    fprintf(stderr, "mapsage: out of memory\n");
    exit_code = CLI_EXIT_FAILED;
    goto done;
  }
  client->authorization = header.data;
  exit_code = CLI_EXIT_OK;
done:
  explicit_bzero(data, length);
  free(data);
  return exit_code;
}

int client_open(client_t *client, const cli_global_t *global) {
  memset(client, 0, sizeof *client);
  config_file_t file;
  int exit_code = config_file_load(&file);
  if (exit_code != CLI_EXIT_OK) return exit_code;
  const char *server = global->server;
  if (server == NULL || server[0] == '\0') server = getenv("MAPSAGE_SERVER");
  if (server == NULL || server[0] == '\0') server = file.server;
  if (server == NULL || server[0] == '\0') server = CLI_DEFAULT_SERVER;

  buffer_t url = {0};
  /* "127.0.0.1:8787" is what people type; libcurl would guess http too, but say it. */
  int result = strstr(server, "://") == NULL ? buffer_append_text(&url, "http://") : 0;
  if (result == 0) result = buffer_append_text(&url, server);
  if (result != 0) {
    fprintf(stderr, "mapsage: out of memory\n");
    buffer_free(&url);
    config_file_free(&file);
    return CLI_EXIT_FAILED;
  }
  while (url.length > 0 && url.data[url.length - 1] == '/') url.data[--url.length] = '\0';
  client->server = url.data;

  const char *token_file = global->token_file;
  if (token_file == NULL || token_file[0] == '\0') token_file = getenv("MAPSAGE_TOKEN_FILE");
  if (token_file == NULL || token_file[0] == '\0') token_file = file.token_file;
  if (token_file != NULL && token_file[0] != '\0') exit_code = client_read_token(client, token_file);
  config_file_free(&file);
  if (exit_code != CLI_EXIT_OK) client_close(client);
  return exit_code;
}

void client_close(client_t *client) {
  free(client->server);
  if (client->authorization != NULL) {
    explicit_bzero(client->authorization, strlen(client->authorization));
    free(client->authorization);
  }
  memset(client, 0, sizeof *client);
}

/* ---------------------------------------------------------------------------------------
 * client_call_: one exchange */

int client_call_init(const client_t *client, client_call_t *call, const char *path) {
  memset(call, 0, sizeof *call);
  if (buffer_append_text(&call->url, client->server) != 0 ||
      buffer_append_text(&call->url, path) != 0)
    return -ENOMEM;
  call->curl = curl_easy_init();
  if (call->curl == NULL) return -ENOMEM;
  CURL *curl = call->curl;
  curl_easy_setopt(curl, CURLOPT_URL, call->url.data);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, call->error);
  /* No signals from libcurl: watch.c owns SIGINT, and a single-threaded client does not
   * need SIGALRM-based DNS timeouts. */
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, CLIENT_CONNECT_TIMEOUT_S);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "mapsage-cli");
  if (client->authorization != NULL && client_call_add_header(call, client->authorization) != 0)
    return -ENOMEM;
  return 0;
}

int client_call_add_header(client_call_t *call, const char *header) {
  struct curl_slist *headers = curl_slist_append(call->headers, header);
  if (headers == NULL) return -ENOMEM;
  call->headers = headers;
  return 0;
}

CURLcode client_call_perform(client_call_t *call) {
  call->error[0] = '\0';
  curl_easy_setopt(call->curl, CURLOPT_HTTPHEADER, call->headers);
  return curl_easy_perform(call->curl);
}

int client_call_report(const client_t *client, const client_call_t *call, CURLcode code) {
  const char *reason = call->error[0] != '\0' ? call->error : curl_easy_strerror(code);
  switch (code) {
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT:
    fprintf(stderr, "mapsage: %s is not a usable server URL: %s\n", client->server, reason);
    return CLI_EXIT_USAGE;
  case CURLE_OUT_OF_MEMORY:
    fprintf(stderr, "mapsage: out of memory\n");
    return CLI_EXIT_FAILED;
  case CURLE_ABORTED_BY_CALLBACK:
    return CLI_EXIT_INTERRUPTED;
  default:
    fprintf(stderr, "mapsage: cannot reach the server at %s: %s\n", client->server, reason);
    return CLI_EXIT_UNREACHABLE;
  }
}

void client_call_free(client_call_t *call) {
  if (call->curl != NULL) curl_easy_cleanup(call->curl);
  curl_slist_free_all(call->headers);
  buffer_free(&call->url);
  memset(call, 0, sizeof *call);
}

/* ---------------------------------------------------------------------------------------
 * client_request: the common exchange */

typedef struct {
  buffer_t *body;
  int error; /* why the body stopped growing: -ENOMEM or -E2BIG */
} client_sink_t;

static size_t client_sink_write(char *bytes, size_t size, size_t count, void *user_data) {
  client_sink_t *sink = user_data;
  int result = buffer_append(sink->body, bytes, size * count);
  if (result != 0) {
    sink->error = result;
    return 0; /* libcurl stops with CURLE_WRITE_ERROR */
  }
  return size * count;
}

int client_request(const client_t *client, const char *method, const char *path,
                   const char *body, size_t body_length, client_response_t *response) {
  memset(response, 0, sizeof *response);
  response->body.limit = CLIENT_BODY_LIMIT;
  client_sink_t sink = {&response->body, 0};
  client_call_t call;
  int exit_code = CLI_EXIT_FAILED;
  if (client_call_init(client, &call, path) != 0 ||
      client_call_add_header(&call, "Accept: application/json") != 0)
    goto out_of_memory;
  CURL *curl = call.curl;
  if (strcmp(method, "GET") != 0) {
    /* Every POST carries a body, so libcurl sends Content-Length: 0 instead of hanging on
     * an empty chunked one; an empty body claims no type at all. */
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body != NULL ? body : "");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body != NULL ? body_length : 0));
    if (client_call_add_header(&call, body != NULL ? "Content-Type: application/json" : "Content-Type:") != 0)
      goto out_of_memory;
    if (strcmp(method, "POST") != 0) curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
  }
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, CLIENT_REQUEST_TIMEOUT_S);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, client_sink_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  CURLcode code = client_call_perform(&call);
  if (code == CURLE_WRITE_ERROR && sink.error == -E2BIG) {
    fprintf(stderr, "mapsage: the answer to %s %s is larger than %u MiB; giving up on it\n",
            method, path, CLIENT_BODY_LIMIT >> 20);
    goto done;
  }
  if (code == CURLE_WRITE_ERROR && sink.error == -ENOMEM) goto out_of_memory;
  if (code != CURLE_OK) {
    exit_code = client_call_report(client, &call, code);
    goto done;
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response->status);
  exit_code = CLI_EXIT_OK;
  goto done;
out_of_memory:
  fprintf(stderr, "mapsage: out of memory\n");
done:
  client_call_free(&call);
  return exit_code;
}

void client_response_free(client_response_t *response) {
  buffer_free(&response->body);
}

/* Prints at most one line of a body that is not the JSON error we expected, so a proxy's
 * HTML page still says something without flooding the terminal. */
static void client_print_excerpt(const buffer_t *body) {
  const char *text = buffer_text(body);
  size_t length = strcspn(text, "\r\n");
  if (length > 200) length = 200;
  if (length > 0) fprintf(stderr, "mapsage: it said: %.*s\n", (int)length, text);
}

int client_check(const client_response_t *response) {
  if (response->status >= 200 && response->status < 300) return CLI_EXIT_OK;
  json_t *root = json_loadb(buffer_text(&response->body), response->body.length, 0, NULL);
  const char *error = format_json_string(root, "error");
  if (error == NULL) {
    fprintf(stderr, "mapsage: the server answered HTTP %ld without saying why\n", response->status);
    client_print_excerpt(&response->body);
    json_decref(root);
    return CLI_EXIT_FAILED;
  }
  const json_t *errors = json_object_get(root, "errors");
  if (json_array_size(errors) == 0) {
    fprintf(stderr, "mapsage: %s\n", error);
  } else {
    fprintf(stderr, "mapsage: %s:\n", error);
    size_t i;
    const json_t *item;
    json_array_foreach(errors, i, item) {
      const char *path = format_json_string(item, "path");
      const char *message = format_json_string(item, "message");
      if (message == NULL) message = "(no message)";
      if (path != NULL && path[0] != '\0')
        fprintf(stderr, "  %s: %s\n", path, message);
      else
        fprintf(stderr, "  %s\n", message);
    }
  }
  json_decref(root);
  return CLI_EXIT_FAILED;
}

void client_print_raw(const client_response_t *response) {
  fwrite(buffer_text(&response->body), 1, response->body.length, stdout);
  if (response->body.length == 0 || response->body.data[response->body.length - 1] != '\n') putchar('\n');
}

int client_parse(const client_response_t *response, const char *what, json_t **root) {
  json_error_t error;
  *root = json_loadb(buffer_text(&response->body), response->body.length, 0, &error);
  if (*root == NULL) {
    fprintf(stderr, "mapsage: the server's answer to %s is not JSON: %s\n", what, error.text);
    return CLI_EXIT_FAILED;
  }
  if (!json_is_object(*root)) {
    fprintf(stderr, "mapsage: the server's answer to %s is not a JSON object\n", what);
    json_decref(*root);
    *root = NULL;
    return CLI_EXIT_FAILED;
  }
  return CLI_EXIT_OK;
}

int client_get_json(const client_t *client, const char *path, json_t **root) {
  client_response_t response;
  *root = NULL;
  int exit_code = client_request(client, "GET", path, NULL, 0, &response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_check(&response);
  if (exit_code == CLI_EXIT_OK) exit_code = client_parse(&response, path, root);
  client_response_free(&response);
  return exit_code;
}
