/* minimal_server.c — the HTTP limit: the smallest libmicrohttpd server that answers JSON.
 *
 * Every GET gets the same small JSON object. By default it runs MHD exactly as mapsaged's
 * daemon/http.c does — MHD_USE_EPOLL without an internal thread, its epoll fd watched by a
 * uv_poll on a libuv loop, MHD_get_timeout deciding the next run, the response queued on the
 * second call of the access handler — so that mapsaged ÷ this measures what the daemon's own
 * work per request costs (routing, SQLite, building the JSON), not the setup. With --internal
 * it lets MHD run its own select() thread instead (MHD_USE_INTERNAL_POLLING_THREAD), the
 * textbook minimal server, for comparison. Prints "port N" once listening, and stops on
 * SIGTERM, SIGINT or after --seconds. Loopback only; a benchmark. */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>
#include <uv.h>

static const char minimal_body[] = "{\"id\":1,\"name\":\"minimal\",\"status\":\"succeeded\"}";

typedef struct {
  struct MHD_Daemon *mhd;
  uv_poll_t poll;
  uv_timer_t timer, lifetime;
  uv_idle_t idle;
  uv_signal_t sigterm, sigint;
} minimal_t;

static void minimal_run(minimal_t *m);
static void minimal_on_poll(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  minimal_run(poll->data);
}
static void minimal_on_timer(uv_timer_t *timer) { minimal_run(timer->data); }
static void minimal_on_idle(uv_idle_t *idle) {
  uv_idle_stop(idle);
  minimal_run(idle->data);
}

static void minimal_run(minimal_t *m) {
  MHD_run(m->mhd);
  MHD_UNSIGNED_LONG_LONG timeout;
  if (MHD_get_timeout(m->mhd, &timeout) != MHD_YES) uv_timer_stop(&m->timer);
  else if (timeout == 0) uv_idle_start(&m->idle, minimal_on_idle);
  else uv_timer_start(&m->timer, minimal_on_timer, timeout, 0);
}

static enum MHD_Result minimal_on_access(void *cls, struct MHD_Connection *connection, const char *url,
                                         const char *method, const char *version, const char *upload_data,
                                         size_t *upload_data_size, void **request_slot) {
  (void)cls;
  (void)url;
  (void)method;
  (void)version;
  (void)upload_data;
  static int first_call_marker;
  if (*request_slot == NULL) { /* first call: headers only (answering now costs keep-alive) */
    *request_slot = &first_call_marker;
    return MHD_YES;
  }
  if (*upload_data_size > 0) {
    *upload_data_size = 0;
    return MHD_YES;
  }
  struct MHD_Response *response =
      MHD_create_response_from_buffer(sizeof minimal_body - 1, (void *)minimal_body, MHD_RESPMEM_PERSISTENT);
  MHD_add_response_header(response, "Content-Type", "application/json");
  enum MHD_Result queued = MHD_queue_response(connection, MHD_HTTP_OK, response);
  MHD_destroy_response(response);
  return queued;
}

static void minimal_on_log(void *cls, const char *format, va_list args) {
  (void)cls;
  (void)format;
  (void)args; /* clients going away are not news */
}

static void minimal_stop(minimal_t *m) {
  uv_stop(uv_default_loop());
  (void)m;
}
static void minimal_on_signal(uv_signal_t *signal, int number) {
  (void)number;
  minimal_stop(signal->data);
}
static void minimal_on_lifetime(uv_timer_t *timer) { minimal_stop(timer->data); }

int main(int argc, char **argv) {
  int port = 0, internal = 0;
  double seconds = 300;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) port = atoi(argv[++i]);
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--internal") == 0) internal = 1;
    else {
      fprintf(stderr, "usage: minimal_server [--port P] [--seconds S] [--internal]\n");
      return 2;
    }
  }
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  unsigned flags = internal ? MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG
                            : MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  minimal_t m = {0};
  m.mhd = MHD_start_daemon(flags, 0, NULL, NULL, minimal_on_access, NULL, MHD_OPTION_EXTERNAL_LOGGER,
                           minimal_on_log, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
                           MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_CONNECTION_LIMIT,
                           (unsigned)1000, MHD_OPTION_END);
  if (m.mhd == NULL) {
    fprintf(stderr, "minimal_server: cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(m.mhd, MHD_DAEMON_INFO_BIND_PORT);
  printf("port %d\n", info ? info->port : 0);
  fflush(stdout);

  uv_loop_t *loop = uv_default_loop();
  uv_timer_init(loop, &m.lifetime);
  m.lifetime.data = &m;
  uv_timer_start(&m.lifetime, minimal_on_lifetime, (uint64_t)(seconds * 1000), 0);
  uv_signal_init(loop, &m.sigterm);
  uv_signal_init(loop, &m.sigint);
  m.sigterm.data = m.sigint.data = &m;
  uv_signal_start(&m.sigterm, minimal_on_signal, SIGTERM);
  uv_signal_start(&m.sigint, minimal_on_signal, SIGINT);
  if (!internal) {
    info = MHD_get_daemon_info(m.mhd, MHD_DAEMON_INFO_EPOLL_FD);
    uv_poll_init(loop, &m.poll, info->epoll_fd);
    uv_timer_init(loop, &m.timer);
    uv_idle_init(loop, &m.idle);
    m.poll.data = m.timer.data = m.idle.data = &m;
    uv_poll_start(&m.poll, UV_READABLE, minimal_on_poll);
    minimal_run(&m);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  if (!internal) uv_poll_stop(&m.poll);
  MHD_stop_daemon(m.mhd);
  return 0;
}
