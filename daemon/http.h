/* http.h — libmicrohttpd driven by the daemon's libuv loop, with a route table.
 *
 * MHD runs in external-epoll mode: its epoll fd is watched by a uv_poll, MHD_run is called
 * on readiness, and a uv_timer follows MHD_get_timeout, so HTTP shares the one thread that
 * owns the database. A request is routed once its body is complete; the handler answers
 * with one of the http_respond_* calls (or hands the connection to a stream, see sse.h).
 * Every error response has one JSON shape: {"error": "…"}.
 *
 * Before any route, every request passes the checks that keep other web pages out (see
 * docs/security.md): its Host must be a name of this daemon (DNS rebinding), a request
 * that changes something must not come from another site's page (Origin), and a body must
 * have the type its route reads (a cross-site form can only send text/plain and forms). */
#ifndef MAPSAGE_HTTP_H
#define MAPSAGE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>
#include <uv.h>

#define HTTP_BODY_LIMIT (1 << 20)

typedef struct http_server http_server_t;
typedef struct http_request http_request_t;

/* A handler queues a response and returns 0, or returns a negative errno (answered 500). */
typedef int (*http_handler_cb)(http_request_t *request);

typedef struct {
  const char *method;     /* "GET", "POST", … */
  const char *pattern;    /* "/api/experiments/{id}/cancel": {id} matches a positive integer */
  http_handler_cb handler;
  /* The media types a body may have, the first the one to name in errors, separated by
   * spaces ("application/json"); NULL for routes that read no body. A request with a body
   * must say one of them; one without may say nothing, or one of them. */
  const char *body_types;
} http_route_t;

typedef struct {
  const char *listen;           /* "host:port"; port 0 picks a free one */
  const http_route_t *routes;
  size_t n_routes;
  http_handler_cb fallback;     /* GET requests no route matched (static files), or NULL */
  const char *token;            /* when set, mutating requests need "Authorization: Bearer <token>" */
  /* Names besides the listen address that the Host header may carry: "NAME" (any port)
   * or "NAME:PORT" (a reverse proxy's name, say). */
  const char *const *allowed_hosts;
  size_t n_allowed_hosts;
  unsigned request_timeout_s;   /* a request (headers and body) must arrive within this; 0: 30 s */
  void *app;                    /* handed to handlers through http_app() */
} http_options_t;

int http_start(uv_loop_t *loop, const http_options_t *options, http_server_t **out, char *error, size_t error_size);
int http_port(const http_server_t *server);
/* Lets MHD run soon, from the loop: needed after MHD_resume_connection, which does not
 * wake MHD in external-epoll mode. Safe to call from anywhere, including MHD callbacks. */
void http_wake(http_server_t *server);
/* From now on every new request is answered 503 ("the daemon is stopping"); those being
 * answered go on. The first step of stopping: no stream or query can start after it. */
void http_drain(http_server_t *server);
/* Stops accepting, waits for the requests parked with http_suspend() to be answered and
 * sent (a query ends within its time limit), closes every connection, frees the server,
 * then calls `done`. Implies http_drain(). */
void http_stop(http_server_t *server, void (*done)(void *data), void *data);
/* Answers queued so far with a status of class `status_class` (2 for 2xx, …). */
uint64_t http_responses(const http_server_t *server, unsigned status_class);

/* Whether `host` (an address without port or brackets: "127.0.0.1", "::1", "localhost")
 * is a loopback address. Only numbers are parsed, and the one name "localhost":
 * "127.0.0.1.example.com" is a name like any other, and not loopback. */
int http_is_loopback_host(const char *host);

/* --- inside a handler ------------------------------------------------------------------ */

void *http_app(const http_request_t *request);
http_server_t *http_server_of(const http_request_t *request);
struct MHD_Connection *http_connection(const http_request_t *request);
const char *http_method(const http_request_t *request);
const char *http_path(const http_request_t *request);
int64_t http_path_id(const http_request_t *request);   /* the {id} of the route, or 0 */
/* The path's segment `index` (0-based: "/api/datasets/x" → 0 "api", 2 "x"): a route's
 * "{name}". Returns 0, -ENOENT or -ENAMETOOLONG. */
int http_path_segment(const http_request_t *request, int index, char *out, size_t size);
const char *http_query(const http_request_t *request, const char *key);
const char *http_header(const http_request_t *request, const char *name);
const char *http_body(const http_request_t *request, size_t *length);

/* Parks the request while slow work runs elsewhere (the thread pool): MHD stops serving
 * the connection until http_resume(), then calls `on_resume`, which answers it. */
void http_suspend(http_request_t *request, http_handler_cb on_resume);
void http_resume(http_request_t *request);
/* Data for the code that suspended the request. */
void http_set_context(http_request_t *request, void *context);
void *http_context(const http_request_t *request);

/* Called once when the request is over (the client left or the response was sent). */
void http_on_complete(http_request_t *request, void (*callback)(void *data), void *data);

int http_respond_json(http_request_t *request, unsigned status, json_t *body); /* steals body */
/* A JSON string of text from a client, invalid UTF-8 replaced: safe to echo in an answer. */
json_t *http_json_text(const char *text);
int http_respond_error(http_request_t *request, unsigned status, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
/* Answers with `text` (`length` bytes, malloc'd), which it takes: the answers are built in
 * memory and handed to MHD without a copy. NULL `text` (out of memory) returns -ENOMEM. */
int http_respond_text(http_request_t *request, unsigned status, const char *content_type, char *text,
                      size_t length);
/* 201 Created with the new resource's `location` and `body` (which it steals). */
int http_respond_created(http_request_t *request, const char *location, json_t *body);
/* Queues a response built by the caller (a stream); takes the reference. */
int http_respond(http_request_t *request, unsigned status, struct MHD_Response *response);

#endif
