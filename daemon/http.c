/* http.c — libmicrohttpd on the libuv loop, request bodies, routing, JSON responses.
 *
 * How MHD and libuv meet (the pitfalls are MHD's, found the hard way; see STYLE.md):
 * - MHD_USE_EPOLL without an internal thread; its epoll fd is watched by `poll`.
 * - After every MHD_run, MHD_get_timeout decides the next run: none → stop the timer,
 *   > 0 → arm it, 0 → run again on the next loop iteration (the `idle` handle).
 * - A response is queued on the second call of the access handler, never the first:
 *   MHD 0.9.75 would answer "Connection: close" and lose keep-alive.
 * - MHD_resume_connection does not wake MHD in this mode: http_wake() schedules a run.
 * - MHD's connection timeout counts idle time, so a client sending a byte a second is never
 *   idle. Each TCP connection therefore gets a deadline (http_peer_t): its request must have
 *   arrived whole within request_timeout_s of the connection opening or of its previous
 *   response; a sweep shuts down the sockets of those that have not. Requests being
 *   answered (streams, suspended SQL) are exempt.
 * - MHD_stop_daemon() aborts the process while a connection is suspended. Stopping
 *   therefore waits for every request parked by http_suspend() to be resumed, answered
 *   and completed (`held`); streams are ended by their owner before (sse_end_all).
 *
 * Other web pages (docs/security.md): a browser lets any page send a "simple" POST (a
 * text/plain or form body, no custom header) to any address, and lets a page whose name
 * was re-pointed at 127.0.0.1 (DNS rebinding) read our answers as its own. So, before any
 * route: the Host must be one of our names (rebinding keeps the attacker's name in Host),
 * a changing request that names an Origin must name one of ours, and a body must carry
 * its route's type (JSON is not a type a form or a simple request can claim). */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "util.h"

#include <unistd.h>

/* One TCP connection, for the slow-client deadline. */
typedef struct http_peer {
  struct http_peer *prev, *next;
  struct MHD_Connection *connection;
  double waiting_since;   /* util_monotonic() when it opened or its last request ended */
  int answering;          /* a request is routed and being answered */
} http_peer_t;

/* A name the Host header may carry: --allowed-host NAME[:PORT]; port 0 means any. */
typedef struct {
  char name[256];
  unsigned port;
} http_allowed_host_t;

struct http_server {
  uv_loop_t *loop;
  struct MHD_Daemon *mhd;
  uv_poll_t poll;
  uv_timer_t timer;
  uv_idle_t idle;
  uv_timer_t sweep;
  http_peer_t *peers;
  int open_handles;
  http_options_t options;
  int port;
  void (*stopped)(void *data);
  void *stopped_data;
  uint64_t responses[6]; /* answers queued, by status class: [2] counts 2xx, … */
  char listen_host[256];  /* the listen address's host: lowercase, without brackets */
  int listen_loopback;    /* 127.0.0.1, [::1], localhost */
  int listen_wildcard;    /* 0.0.0.0 or [::]: every address of the machine */
  http_allowed_host_t *allowed;
  size_t n_allowed;
  int draining;           /* new requests are answered 503 */
  int stopping;           /* http_stop was called: close once `held` is 0 */
  int closing;            /* the handles are closing: MHD must not run again */
  int held;               /* requests parked by http_suspend, not yet completed */
};

struct http_request {
  http_server_t *server;
  struct MHD_Connection *connection;
  const char *method;
  const char *path;
  char *body;
  size_t body_length, body_capacity;
  int too_large;
  int routed;
  int64_t id;
  void (*on_complete)(void *data);
  void *on_complete_data;
  http_handler_cb on_resume;  /* set while suspended by http_suspend */
  int answered;               /* a response is queued */
  int held;                   /* was parked by http_suspend: counted in server->held */
  void *context;
};

static void run(http_server_t *server);

static void on_poll(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  run(poll->data);
}

static void on_timer(uv_timer_t *timer) { run(timer->data); }

static void on_idle(uv_idle_t *idle) {
  uv_idle_stop(idle);
  run(idle->data);
}

static void run(http_server_t *server) {
  if (server->mhd == NULL || server->closing) return;
  MHD_run(server->mhd);
  /* The last held request may have completed inside MHD_run: the handles are closing. */
  if (server->closing) return;
  MHD_UNSIGNED_LONG_LONG timeout;
  if (MHD_get_timeout(server->mhd, &timeout) != MHD_YES) {
    uv_timer_stop(&server->timer);
  } else if (timeout == 0) {
    uv_idle_start(&server->idle, on_idle);
  } else {
    uv_timer_start(&server->timer, on_timer, timeout, 0);
  }
}

void http_wake(http_server_t *server) {
  if (server->mhd && !server->closing) uv_idle_start(&server->idle, on_idle);
}

// ---------------------------------------------------------------------------------------
// responses

int http_respond(http_request_t *request, unsigned status, struct MHD_Response *response) {
  if (response == NULL) return -ENOMEM;
  /* API answers are never cached; the dashboard's files set their own policy (ETags). */
  if (MHD_get_response_header(response, "Cache-Control") == NULL)
    MHD_add_response_header(response, "Cache-Control", "no-store");
  /* An answer is never a page to run, frame or guess the type of; the dashboard's files
   * set a policy that lets them run (static.c). */
  if (MHD_get_response_header(response, "Content-Security-Policy") == NULL)
    MHD_add_response_header(response, "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
  if (MHD_get_response_header(response, "X-Content-Type-Options") == NULL)
    MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(response, "X-Frame-Options", "DENY");
  MHD_add_response_header(response, "Referrer-Policy", "no-referrer");
  enum MHD_Result queued = MHD_queue_response(request->connection, status, response);
  MHD_destroy_response(response);
  if (queued != MHD_YES) return -EIO;
  request->answered = 1;
  if (status / 100 < ARRAY_SIZE(request->server->responses)) request->server->responses[status / 100]++;
  return 0;
}

uint64_t http_responses(const http_server_t *server, unsigned status_class) {
  return status_class < ARRAY_SIZE(server->responses) ? server->responses[status_class] : 0;
}

/* The one place an answer held in memory becomes a response: `location` may be NULL. */
static int respond_buffer(http_request_t *request, unsigned status, const char *content_type, char *text,
                          size_t length, const char *location) {
  if (text == NULL) return -ENOMEM;
  struct MHD_Response *response = MHD_create_response_from_buffer(length, text, MHD_RESPMEM_MUST_FREE);
  if (response == NULL) {
    free(text);
    return -ENOMEM;
  }
  MHD_add_response_header(response, "Content-Type", content_type);
  if (location) MHD_add_response_header(response, "Location", location);
  return http_respond(request, status, response);
}

int http_respond_text(http_request_t *request, unsigned status, const char *content_type, char *text,
                      size_t length) {
  return respond_buffer(request, status, content_type, text, length, NULL);
}

int http_respond_created(http_request_t *request, const char *location, json_t *body) {
  if (body == NULL) return -ENOMEM;
  char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(10));
  json_decref(body);
  return respond_buffer(request, MHD_HTTP_CREATED, "application/json", text, text ? strlen(text) : 0, location);
}

int http_respond_json(http_request_t *request, unsigned status, json_t *body) {
  if (body == NULL) return -ENOMEM;
  /* Ten digits: every stored value started as a float (nine suffice), and 0.05 stays 0.05. */
  char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(10));
  json_decref(body);
  return http_respond_text(request, status, "application/json", text, text ? strlen(text) : 0);
}

json_t *http_json_text(const char *text) {
  char clean[1024];
  util_utf8_sanitize(text, clean, sizeof clean);
  return json_string(clean);
}

int http_respond_error(http_request_t *request, unsigned status, const char *format, ...) {
  char message[512];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  /* The message may quote what the client sent: it must not make the answer invalid JSON
   * (json_pack would refuse it, and the client would get no answer at all). */
  return http_respond_json(request, status, json_pack("{s:o}", "error", http_json_text(message)));
}

// ---------------------------------------------------------------------------------------
// routing

/* Whether `path` matches `pattern`; a "{id}" segment takes a positive integer, a "{name}"
 * segment one or more of [A-Za-z0-9_.-] (the handler reads it with http_path_segment). */
static int route_matches(const char *pattern, const char *path, int64_t *id) {
  while (*pattern && *path) {
    if (strncmp(pattern, "{name}", 6) == 0) {
      size_t length = strspn(path, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");
      if (length == 0) return 0;
      path += length;
      pattern += 6;
      continue;
    }
    if (strncmp(pattern, "{id}", 4) == 0) {
      char *end;
      if (*path < '1' || *path > '9') return 0;
      errno = 0;
      long long value = strtoll(path, &end, 10);
      if (errno != 0 || value <= 0) return 0;
      *id = value;
      path = end;
      pattern += 4;
      continue;
    }
    if (*pattern++ != *path++) return 0;
  }
  return *pattern == '\0' && *path == '\0';
}

/* Constant-time comparison of the bearer token: the time taken does not tell how many
 * leading characters of a guess were right. */
static int token_matches(const char *expected, const char *header) {
  static const char prefix[] = "Bearer ";
  if (header == NULL || strncmp(header, prefix, sizeof prefix - 1) != 0) return 0;
  const char *given = header + sizeof prefix - 1;
  size_t expected_length = strlen(expected), given_length = strlen(given);
  unsigned char difference = expected_length != given_length;
  for (size_t i = 0; i < expected_length; i++)
    difference |= (unsigned char)expected[i] ^ (unsigned char)given[i < given_length ? i : 0];
  return difference == 0;
}

// ---------------------------------------------------------------------------------------
// who may ask: Host, Origin, Content-Type

int http_is_loopback_host(const char *host) {
  if (strcasecmp(host, "localhost") == 0) return 1;
  struct in_addr v4;
  struct in6_addr v6;
  if (inet_pton(AF_INET, host, &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &v6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  return 0;
}

static int is_ip_literal(const char *host) {
  unsigned char address[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host, address) == 1 || inet_pton(AF_INET6, host, address) == 1;
}

/* Splits `length` bytes of "name", "name:port", "[v6]" or "[v6]:port" into a lowercase host
 * without brackets and a port (0 when none is given). Returns 0, or -EINVAL when it is
 * none of these. */
static int split_authority(const char *text, size_t length, char *host, size_t host_size, unsigned *port) {
  const char *end = text + length, *host_end, *port_start = NULL;
  if (length == 0) return -EINVAL;
  if (text[0] == '[') {
    host_end = memchr(text, ']', length);
    if (host_end == NULL) return -EINVAL;
    text++;
    if (host_end + 1 < end) {
      if (host_end[1] != ':') return -EINVAL;
      port_start = host_end + 2;
    }
  } else {
    host_end = memchr(text, ':', length);
    if (host_end) port_start = host_end + 1;
    else host_end = end;
  }
  size_t host_length = (size_t)(host_end - text);
  if (host_length == 0 || host_length >= host_size) return -EINVAL;
  for (size_t i = 0; i < host_length; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c <= ' ' || c >= 0x7f || strchr("/?#@[]", c)) return -EINVAL;
    host[i] = (char)tolower(c);
  }
  host[host_length] = '\0';
  *port = 0;
  if (port_start) {
    if (port_start == end || end - port_start > 5) return -EINVAL;
    unsigned value = 0;
    for (const char *p = port_start; p < end; p++) {
      if (*p < '0' || *p > '9') return -EINVAL;
      value = value * 10 + (unsigned)(*p - '0');
    }
    if (value == 0 || value > 65535) return -EINVAL;
    *port = value;
  }
  return 0;
}

/* Whether a Host (or an Origin's host and port) names this daemon: the listen address; any
 * loopback address or localhost when it listens on loopback; any address given as numbers
 * when it listens on all of them (a number cannot have been re-pointed by DNS); and the
 * --allowed-host names. `default_port` is the scheme's, for an Origin without a port; 0 for
 * a Host, whose port only a hand-written client leaves out (a browser says it unless 80). */
static int host_allowed(const http_server_t *server, const char *authority, size_t length, unsigned default_port) {
  char host[256];
  unsigned port;
  if (split_authority(authority, length, host, sizeof host, &port) != 0) return 0;
  if (port == 0) port = default_port;
  for (size_t i = 0; i < server->n_allowed; i++)
    if (strcmp(server->allowed[i].name, host) == 0 &&
        (server->allowed[i].port == 0 || port == 0 || server->allowed[i].port == port))
      return 1;
  if (port != 0 && port != (unsigned)server->port) return 0;
  if (strcmp(host, server->listen_host) == 0) return 1;
  if (server->listen_loopback && http_is_loopback_host(host)) return 1;
  if (server->listen_wildcard && (strcmp(host, "localhost") == 0 || is_ip_literal(host))) return 1;
  return 0;
}

/* Whether an Origin header names a page of ours: http(s)://<an allowed host>. "null" (a
 * sandboxed frame, a file) and every other site are not. */
static int origin_allowed(const http_server_t *server, const char *origin) {
  unsigned default_port;
  if (strncasecmp(origin, "http://", 7) == 0) {
    origin += 7;
    default_port = 80;
  } else if (strncasecmp(origin, "https://", 8) == 0) {
    origin += 8;
    default_port = 443;
  } else {
    return 0;
  }
  size_t length = strlen(origin);
  if (length > 0 && origin[length - 1] == '/') length--;
  return memchr(origin, '/', length) == NULL && host_allowed(server, origin, length, default_port);
}

/* Whether the media type of a Content-Type header (before any ";") is one of `types`
 * (space-separated). Media types are case-insensitive. */
static int type_accepted(const char *types, const char *header) {
  size_t length = strcspn(header, ";");
  while (length > 0 && (header[length - 1] == ' ' || header[length - 1] == '\t')) length--;
  while (*types) {
    size_t type_length = strcspn(types, " ");
    if (type_length == length && strncasecmp(types, header, length) == 0) return 1;
    types += type_length;
    types += strspn(types, " ");
  }
  return 0;
}

static int refuse_type(http_request_t *request, const char *types, const char *given) {
  char expected[128] = "";
  for (const char *t = types; *t && strlen(expected) < sizeof expected - 40;) {
    size_t type_length = strcspn(t, " ");
    snprintf(expected + strlen(expected), sizeof expected - strlen(expected), "%s%.*s", expected[0] ? " or " : "",
             (int)type_length, t);
    t += type_length;
    t += strspn(t, " ");
  }
  char first[64];
  snprintf(first, sizeof first, "%.*s", (int)strcspn(types, " "), types);
  if (given == NULL)
    return http_respond_error(request, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                              "the body of %s %s must be %s: send \"Content-Type: %s\"", request->method,
                              request->path, expected, first);
  return http_respond_error(request, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                            "the body of %s %s must be %s, not %.64s: send \"Content-Type: %s\"", request->method,
                            request->path, expected, given, first);
}

/* The checks every request passes before its route; 1 when one refused it (answered). */
static int refused(http_request_t *request, int *result) {
  http_server_t *server = request->server;
  /* HTTP/1.0 clients may send no Host; browsers always do, so none is no page's request. */
  const char *host = http_header(request, "Host");
  if (host && !host_allowed(server, host, strlen(host), 0)) {
    *result = http_respond_error(request, MHD_HTTP_MISDIRECTED_REQUEST,
                                 "Host \"%.200s\" is not a name of this daemon (a page of another site can reach "
                                 "it under its own name by DNS rebinding); to serve it under this name, start "
                                 "mapsaged with --allowed-host NAME[:PORT] (MAPSAGE_ALLOWED_HOST)", host);
    return 1;
  }
  int is_read = strcmp(request->method, "GET") == 0 || strcmp(request->method, "HEAD") == 0 ||
                strcmp(request->method, "OPTIONS") == 0;
  const char *origin = http_header(request, "Origin");
  if (!is_read && origin && !origin_allowed(server, origin)) {
    *result = http_respond_error(request, MHD_HTTP_FORBIDDEN,
                                 "Origin \"%.200s\" is another site: a page may change something here only when "
                                 "this daemon served it (to serve the dashboard under another name, start "
                                 "mapsaged with --allowed-host NAME[:PORT])", origin);
    return 1;
  }
  if (server->draining) {
    *result = http_respond_error(request, MHD_HTTP_SERVICE_UNAVAILABLE, "the daemon is stopping; retry once it is back");
    return 1;
  }
  return 0;
}

static int dispatch(http_request_t *request) {
  const http_options_t *options = &request->server->options;
  int refusal;
  if (refused(request, &refusal)) return refusal;
  if (request->too_large)
    return http_respond_error(request, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is larger than %d bytes",
                              HTTP_BODY_LIMIT);
  char allowed[64] = "";
  for (size_t i = 0; i < options->n_routes; i++) {
    const http_route_t *route = &options->routes[i];
    int64_t id = 0;
    if (!route_matches(route->pattern, request->path, &id)) continue;
    if (strcmp(route->method, request->method) != 0) {
      if (!strstr(allowed, route->method) && strlen(allowed) + strlen(route->method) + 3 < sizeof allowed) {
        if (allowed[0]) strcat(allowed, ", ");
        strcat(allowed, route->method);
      }
      continue;
    }
    request->id = id;
    int is_read = strcmp(request->method, "GET") == 0 || strcmp(request->method, "HEAD") == 0;
    if (options->token && !is_read && !token_matches(options->token, http_header(request, "Authorization")))
      return http_respond_error(request, MHD_HTTP_UNAUTHORIZED,
                                "this daemon needs a token: send \"Authorization: Bearer <token>\"");
    const char *type = http_header(request, "Content-Type");
    if (route->body_types && (request->body_length > 0 || type) &&
        (type == NULL || !type_accepted(route->body_types, type)))
      return refuse_type(request, route->body_types, type);
    return route->handler(request);
  }
  if (allowed[0]) {
    char message[256];
    snprintf(message, sizeof message, "%.32s is not allowed on %s; use %s", request->method,
             strncmp(request->path, "/api/", 5) == 0 ? "this route" : "this path", allowed);
    json_t *body = json_pack("{s:o}", "error", http_json_text(message));
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) return -ENOMEM;
    struct MHD_Response *response = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (response == NULL) {
      free(text);
      return -ENOMEM;
    }
    MHD_add_response_header(response, "Allow", allowed);
    MHD_add_response_header(response, "Content-Type", "application/json");
    return http_respond(request, MHD_HTTP_METHOD_NOT_ALLOWED, response);
  }
  if (options->fallback && strncmp(request->path, "/api/", 5) != 0 &&
      (strcmp(request->method, "GET") == 0 || strcmp(request->method, "HEAD") == 0))
    return options->fallback(request);
  json_t *body = json_pack("{s:s}", "error", "no such route");
  json_object_set_new(body, "path", http_json_text(request->path));
  return http_respond_json(request, MHD_HTTP_NOT_FOUND, body);
}

static http_peer_t *peer_of(struct MHD_Connection *connection) {
  const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return info ? info->socket_context : NULL;
}

static void set_answering(struct MHD_Connection *connection, int answering) {
  http_peer_t *peer = peer_of(connection);
  if (peer == NULL) return;
  peer->answering = answering;
  if (!answering) peer->waiting_since = util_monotonic(); /* the next request's clock starts */
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  http_server_t *server = cls;
  http_peer_t *peer = *socket_context;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    peer = calloc(1, sizeof *peer);
    if (peer == NULL) return; /* without a record it simply has no deadline */
    peer->connection = connection;
    peer->waiting_since = util_monotonic();
    peer->next = server->peers;
    if (server->peers) server->peers->prev = peer;
    server->peers = peer;
    *socket_context = peer;
  } else if (peer) {
    if (peer->prev) peer->prev->next = peer->next;
    else server->peers = peer->next;
    if (peer->next) peer->next->prev = peer->prev;
    free(peer);
    *socket_context = NULL;
  }
}

/* Shuts down the sockets of connections whose request is overdue; MHD then sees the
 * socket fail and closes the connection itself (we never free MHD's objects). */
static void on_sweep(uv_timer_t *timer) {
  http_server_t *server = timer->data;
  double now = util_monotonic();
  double limit = server->options.request_timeout_s ? server->options.request_timeout_s : 30;
  int closed = 0;
  for (http_peer_t *peer = server->peers; peer; peer = peer->next) {
    if (peer->answering || now - peer->waiting_since < limit) continue;
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(peer->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info && shutdown(info->connect_fd, SHUT_RDWR) == 0) closed++;
    peer->waiting_since = now; /* once is enough */
  }
  if (closed) http_wake(server);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *connection, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **request_slot) {
  (void)version;
  http_server_t *server = cls;
  http_request_t *request = *request_slot;
  if (request == NULL) { /* first call: headers only; answering now would cost keep-alive */
    request = calloc(1, sizeof *request);
    if (request == NULL) return MHD_NO;
    request->server = server;
    request->connection = connection;
    request->method = method;
    request->path = url;
    const char *length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Length");
    *request_slot = request;
    if (length && strtoull(length, NULL, 10) > HTTP_BODY_LIMIT) {
      request->too_large = 1;
      /* A client that waits for "100 Continue" is refused before it sends the body. Others
       * are already sending: the body is read and dropped, then refused, since a client
       * that is cut off mid-send sees a broken pipe instead of the 413. */
      const char *expect = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Expect");
      if (expect && strcasecmp(expect, "100-continue") == 0) {
        request->routed = 1;
        return dispatch(request) == 0 ? MHD_YES : MHD_NO;
      }
    }
    return MHD_YES;
  }
  if (request->on_resume) { /* back from http_suspend: answer now */
    http_handler_cb on_resume = request->on_resume;
    request->on_resume = NULL;
    int result = on_resume(request);
    if (result == 0 && !request->answered) result = -EPROTO;
    if (result != 0 &&
        http_respond_error(request, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error: %s", strerror(-result)) != 0)
      return MHD_NO;
    return MHD_YES;
  }
  if (request->routed) return MHD_YES; /* a stream's connection, resumed, or a refused body */
  if (*upload_data_size > 0) {
    size_t needed = request->body_length + *upload_data_size;
    if (request->too_large || needed > HTTP_BODY_LIMIT) {
      /* Past the limit: read and drop the rest, answer 413 at the end. */
      request->too_large = 1;
      *upload_data_size = 0;
      return MHD_YES;
    }
    if (needed + 1 > request->body_capacity) {
      size_t capacity = request->body_capacity ? request->body_capacity : 4096;
      while (capacity < needed + 1) capacity *= 2;
      char *grown = realloc(request->body, capacity);
      if (grown == NULL) return MHD_NO;
      request->body = grown;
      request->body_capacity = capacity;
    }
    memcpy(request->body + request->body_length, upload_data, *upload_data_size);
    request->body_length = needed;
    request->body[needed] = '\0';
    *upload_data_size = 0;
    return MHD_YES;
  }
  request->routed = 1;
  set_answering(connection, 1);
  int result = dispatch(request);
  if (result == 0 && !request->answered && !request->on_resume) {
    /* A handler that forgot to answer would leave MHD calling it forever. */
    fprintf(stderr, "mapsaged: %s %s: the handler gave no answer\n", method, url);
    result = -EPROTO;
  }
  if (result != 0) {
    fprintf(stderr, "mapsaged: %s %s: %s\n", method, url, strerror(-result));
    if (http_respond_error(request, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error: %s", strerror(-result)) != 0)
      return MHD_NO;
  }
  return MHD_YES;
}

static void close_handles(http_server_t *server);

static void on_completed(void *cls, struct MHD_Connection *connection, void **request_slot,
                         enum MHD_RequestTerminationCode code) {
  http_server_t *server = cls;
  (void)code;
  set_answering(connection, 0);
  http_request_t *request = *request_slot;
  if (request == NULL) return;
  if (request->on_complete) request->on_complete(request->on_complete_data);
  int held = request->held;
  free(request->body);
  free(request);
  *request_slot = NULL;
  if (held && --server->held == 0 && server->stopping) close_handles(server); /* the last one stopping waited for */
}

static void on_log(void *cls, const char *format, va_list args) {
  (void)cls;
  /* MHD reports every client that goes away; only its own failures are worth a line. */
  if (strstr(format, "closed") || strstr(format, "reset") || strstr(format, "timed out") ||
      strstr(format, "no longer available"))
    return;
  fputs("mapsaged: http: ", stderr);
  vfprintf(stderr, format, args);
}

// ---------------------------------------------------------------------------------------

static int parse_listen(const char *listen, struct sockaddr_storage *address, socklen_t *length, char *error,
                        size_t error_size) {
  char host[256];
  const char *colon = strrchr(listen, ':');
  if (colon == NULL || colon == listen || (size_t)(colon - listen) >= sizeof host || !colon[1]) {
    snprintf(error, error_size, "--listen: expected HOST:PORT, like 127.0.0.1:8787, not \"%s\"", listen);
    return -EINVAL;
  }
  memcpy(host, listen, (size_t)(colon - listen));
  host[colon - listen] = '\0';
  if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:8787 */
    memmove(host, host + 1, strlen(host));
    host[strlen(host) - 1] = '\0';
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
  struct addrinfo *found = NULL;
  int code = getaddrinfo(host, colon + 1, &hints, &found);
  if (code != 0) {
    snprintf(error, error_size, "--listen %s: %s", listen, gai_strerror(code));
    return -EINVAL;
  }
  memcpy(address, found->ai_addr, found->ai_addrlen);
  *length = found->ai_addrlen;
  freeaddrinfo(found);
  return 0;
}

/* The names of the listen address and of --allowed-host, for the Host check. */
static int set_names(http_server_t *server, const http_options_t *options, char *error, size_t error_size) {
  const char *colon = strrchr(options->listen, ':'); /* parse_listen made sure there is one */
  unsigned port;
  if (split_authority(options->listen, (size_t)(colon - options->listen), server->listen_host,
                      sizeof server->listen_host, &port) != 0) {
    snprintf(error, error_size, "--listen %s: not a host name or address", options->listen);
    return -EINVAL;
  }
  server->listen_loopback = http_is_loopback_host(server->listen_host);
  server->listen_wildcard = strcmp(server->listen_host, "0.0.0.0") == 0 || strcmp(server->listen_host, "::") == 0;
  if (options->n_allowed_hosts == 0) return 0;
  server->allowed = calloc(options->n_allowed_hosts, sizeof *server->allowed);
  if (server->allowed == NULL) return -ENOMEM;
  for (size_t i = 0; i < options->n_allowed_hosts; i++) {
    const char *name = options->allowed_hosts[i];
    if (split_authority(name, strlen(name), server->allowed[i].name, sizeof server->allowed[i].name,
                        &server->allowed[i].port) != 0) {
      snprintf(error, error_size, "--allowed-host: expected NAME or NAME:PORT (like mapsage.example.org or "
               "mapsage.example.org:443), not \"%.200s\"", name);
      return -EINVAL;
    }
  }
  server->n_allowed = options->n_allowed_hosts;
  return 0;
}

int http_start(uv_loop_t *loop, const http_options_t *options, http_server_t **out, char *error, size_t error_size) {
  struct sockaddr_storage address;
  socklen_t address_length;
  int result = parse_listen(options->listen, &address, &address_length, error, error_size);
  if (result != 0) return result;
  http_server_t *server = calloc(1, sizeof *server);
  if (server == NULL) return -ENOMEM;
  server->loop = loop;
  server->options = *options;
  if ((result = set_names(server, options, error, error_size)) != 0) {
    free(server->allowed);
    free(server);
    return result;
  }
  unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  if (address.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  server->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_access, server,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_log, server,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, server,
                                 MHD_OPTION_NOTIFY_CONNECTION, on_connection, server,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
                                 MHD_OPTION_END);
  if (server->mhd == NULL) {
    snprintf(error, error_size, "cannot listen on %s (is the port in use?)", options->listen);
    free(server->allowed);
    free(server);
    return -EADDRINUSE;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(server->mhd, MHD_DAEMON_INFO_BIND_PORT);
  server->port = info ? info->port : 0;
  info = MHD_get_daemon_info(server->mhd, MHD_DAEMON_INFO_EPOLL_FD);
  uv_poll_init(loop, &server->poll, info->epoll_fd);
  uv_timer_init(loop, &server->timer);
  uv_idle_init(loop, &server->idle);
  uv_timer_init(loop, &server->sweep);
  server->poll.data = server->timer.data = server->idle.data = server->sweep.data = server;
  server->open_handles = 4;
  uv_poll_start(&server->poll, UV_READABLE, on_poll);
  uv_timer_start(&server->sweep, on_sweep, 1000, 1000);
  run(server);
  *out = server;
  return 0;
}

int http_port(const http_server_t *server) { return server->port; }

static void on_handle_closed(uv_handle_t *handle) {
  http_server_t *server = handle->data;
  if (--server->open_handles > 0) return;
  /* The poll is closed, so MHD's epoll fd may go now. */
  MHD_stop_daemon(server->mhd); /* no connection is suspended: close_handles waited for that */
  void (*done)(void *) = server->stopped;
  void *data = server->stopped_data;
  free(server->allowed);
  free(server);
  if (done) done(data);
}

static void close_handles(http_server_t *server) {
  if (server->closing) return;
  server->closing = 1;
  uv_close((uv_handle_t *)&server->poll, on_handle_closed);
  uv_close((uv_handle_t *)&server->timer, on_handle_closed);
  uv_close((uv_handle_t *)&server->idle, on_handle_closed);
  uv_close((uv_handle_t *)&server->sweep, on_handle_closed);
}

void http_drain(http_server_t *server) { server->draining = 1; }

void http_stop(http_server_t *server, void (*done)(void *data), void *data) {
  server->stopped = done;
  server->stopped_data = data;
  server->draining = 1;
  server->stopping = 1;
  MHD_quiesce_daemon(server->mhd); /* no new connections */
  if (server->held > 0) {
    /* A query on the thread pool ends within its time limit and resumes its connection;
     * MHD keeps running until its answer is sent (on_completed closes then). */
    fprintf(stderr, "mapsaged: waiting for %d request(s) being answered\n", server->held);
    http_wake(server);
    return;
  }
  close_handles(server);
}

// ---------------------------------------------------------------------------------------

void *http_app(const http_request_t *request) { return request->server->options.app; }
http_server_t *http_server_of(const http_request_t *request) { return request->server; }
struct MHD_Connection *http_connection(const http_request_t *request) { return request->connection; }
const char *http_method(const http_request_t *request) { return request->method; }
const char *http_path(const http_request_t *request) { return request->path; }
int64_t http_path_id(const http_request_t *request) { return request->id; }

const char *http_query(const http_request_t *request, const char *key) {
  return MHD_lookup_connection_value(request->connection, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_header(const http_request_t *request, const char *name) {
  return MHD_lookup_connection_value(request->connection, MHD_HEADER_KIND, name);
}

const char *http_body(const http_request_t *request, size_t *length) {
  *length = request->body_length;
  return request->body ? request->body : "";
}

int http_path_segment(const http_request_t *request, int index, char *out, size_t size) {
  const char *p = http_path(request);
  for (int i = 0; i <= index; i++) {
    if (*p != '/') return -ENOENT;
    const char *start = ++p;
    p += strcspn(p, "/");
    if (i == index) {
      if ((size_t)(p - start) >= size) return -ENAMETOOLONG;
      memcpy(out, start, (size_t)(p - start));
      out[p - start] = 0;
      return 0;
    }
  }
  return -ENOENT;
}

void http_suspend(http_request_t *request, http_handler_cb on_resume) {
  request->on_resume = on_resume;
  if (!request->held) {
    request->held = 1;
    request->server->held++;
  }
  MHD_suspend_connection(request->connection);
}

void http_resume(http_request_t *request) {
  MHD_resume_connection(request->connection);
  http_wake(request->server);
}

void http_set_context(http_request_t *request, void *context) { request->context = context; }
void *http_context(const http_request_t *request) { return request->context; }

void http_on_complete(http_request_t *request, void (*callback)(void *data), void *data) {
  request->on_complete = callback;
  request->on_complete_data = data;
}
