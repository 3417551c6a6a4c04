/*
 * `sluice serve`: the process.
 *
 * libmicrohttpd (Debian's libmicrohttpd 0.9.75) parses HTTP; sluice never
 * does. It was chosen over h2o and civetweb because it is a small C library
 * with an external event loop mode: with MHD_USE_EPOLL and no thread of its
 * own, it keeps all its sockets in one epoll descriptor, which a uv_poll
 * watches on the server's libuv loop, and MHD_get_timeout gives the next
 * timer. So one thread serves every connection, event streams included
 * (suspended while they have nothing to send, MHD_ALLOW_SUSPEND_RESUME),
 * beside the Redis subscriptions (sse.c) on the same loop; Redis calls of
 * requests run on the loop's thread pool (work.c). civetweb wants a thread
 * per connection, and h2o's library API is large and lightly packaged.
 *
 * Stopping (SIGTERM, SIGINT): no new connection is accepted
 * (MHD_quiesce_daemon), every event stream ends, requests in flight get
 * their answers, then the daemon stops. SIGHUP reloads the tokens file; a
 * file that no longer reads keeps the old tokens and says why.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sluice/serve.h>

#include "alloc.h"
#include "srv.h"

#define DEFAULT_LISTEN "127.0.0.1:8080"
#define DEFAULT_MAX_BODY ((size_t)64 * 1024 * 1024) /* bytes */
#define CONN_TIMEOUT_S 30          /* an idle or stalled connection is closed after this (default) */
#define KEEPALIVE_S 15             /* a comment line on each event stream this often (default) */
#define CONN_LIMIT 10000           /* connections at once */
#define STOP_POLL_MS 20            /* while stopping: how often to look at what is left */
#define STOP_GRACE_MS 10000        /* while stopping: the most to wait for requests in flight */

void srv_log(sl_srv *s, int warn, const char *fmt, ...) {
  char ts[32];
  time_t now = time(NULL);
  struct tm tm;
  va_list ap;

  if (s->quiet && !warn)
    return;
  gmtime_r(&now, &tm);
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
  fprintf(stderr, "%s sluice serve: ", ts);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* MHD's own messages (a client gone while its stream was being sent, ...):
 * the server's log, not a warning. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
  sl_srv *s = cls;
  char msg[512];

  vsnprintf(msg, sizeof(msg), fmt, ap);
  msg[strcspn(msg, "\n")] = '\0';
  srv_log(s, 0, "%s", msg);
}

/* ---- MHD on the loop ---- */

static void run_mhd(sl_srv *s);

static void on_mhd_timer(uv_timer_t *t) {
  run_mhd(t->data);
}

static void on_mhd_poll(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  run_mhd(p->data);
}

static void run_mhd(sl_srv *s) {
  MHD_UNSIGNED_LONG_LONG to;

  if (s->mhd == NULL)
    return;
  MHD_run(s->mhd);
  if (MHD_get_timeout(s->mhd, &to) == MHD_YES)
    uv_timer_start(&s->mhd_timer, on_mhd_timer, to, 0);
  else
    uv_timer_stop(&s->mhd_timer);
}

void srv_kick(sl_srv *s) {
  if (s->mhd != NULL)
    uv_timer_start(&s->mhd_timer, on_mhd_timer, 0, 0);
}

/* ---- Listening address ---- */

/* "HOST:PORT" (an IPv4 address, [IPv6] or localhost) into *ss. 0, or -1
 * with the reason. */
static int parse_listen(const char *l, struct sockaddr_storage *ss, int *v6, int *loopback, char *err,
                        size_t errlen) {
  char host[64];
  const char *colon = strrchr(l, ':');
  char *end;
  long port;

  memset(ss, 0, sizeof(*ss));
  if (colon == NULL || (size_t)(colon - l) >= sizeof(host)) {
    snprintf(err, errlen, "--listen \"%s\": expected HOST:PORT, e.g. 127.0.0.1:8080", l);
    return -1;
  }
  memcpy(host, l, (size_t)(colon - l));
  host[colon - l] = '\0';
  port = strtol(colon + 1, &end, 10);
  if (*end != '\0' || colon[1] == '\0' || port < 0 || port > 65535) {
    snprintf(err, errlen, "--listen \"%s\": the port must be 0-65535", l);
    return -1;
  }
  if (strcmp(host, "localhost") == 0)
    snprintf(host, sizeof(host), "127.0.0.1");
  if (host[0] == '[') {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    size_t n = strlen(host);

    if (n < 3 || host[n - 1] != ']') {
      snprintf(err, errlen, "--listen \"%s\": an IPv6 address goes in brackets, [::1]:8080", l);
      return -1;
    }
    host[n - 1] = '\0';
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1) {
      snprintf(err, errlen, "--listen \"%s\": not an IPv6 address", l);
      return -1;
    }
    *v6 = 1;
    *loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    return 0;
  }
  {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;

    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
      snprintf(err, errlen, "--listen \"%s\": not an IPv4 address (or [IPv6], or localhost)", l);
      return -1;
    }
    *v6 = 0;
    *loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  return 0;
}

/* ---- Signals and stopping ---- */

static void close_all(sl_srv *s) {
  if (s->mhd != NULL) {
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
  }
  uv_close((uv_handle_t *)&s->mhd_poll, NULL);
  uv_close((uv_handle_t *)&s->mhd_timer, NULL);
  uv_close((uv_handle_t *)&s->sig_term, NULL);
  uv_close((uv_handle_t *)&s->sig_int, NULL);
  uv_close((uv_handle_t *)&s->sig_hup, NULL);
  uv_close((uv_handle_t *)&s->stop_timer, NULL);
  srv_hub_free(s);
}

static void on_stop_timer(uv_timer_t *t) {
  sl_srv *s = t->data;
  const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
  unsigned conns = i != NULL ? i->num_connections : 0;

  if ((s->inflight == 0 && conns == 0) || uv_now(&s->loop) - s->stop_at >= STOP_GRACE_MS) {
    srv_log(s, 0, "stopped (%u connections were still open)", conns);
    close_all(s);
  }
}

static void begin_stop(sl_srv *s, const char *why) {
  MHD_socket ls;

  if (s->stopping)
    return;
  srv_log(s, 0, "%s: stopping; closing event streams, finishing requests in flight", why);
  s->stopping = 1;
  s->stop_at = uv_now(&s->loop);
  ls = MHD_quiesce_daemon(s->mhd);
  if (ls != MHD_INVALID_SOCKET)
    close(ls);
  srv_hub_stop(s);
  srv_kick(s);
  uv_timer_start(&s->stop_timer, on_stop_timer, STOP_POLL_MS, STOP_POLL_MS);
}

static void on_signal(uv_signal_t *h, int sig) {
  sl_srv *s = h->data;

  if (sig == SIGHUP) {
    srv_auth *a = NULL;
    char err[512];

    if (s->tokens_file == NULL) {
      srv_log(s, 0, "SIGHUP: no tokens file to reload");
      return;
    }
    if (srv_auth_load(s->tokens_file, &a, err, sizeof(err)) != 0) {
      srv_log(s, 1, "SIGHUP: the tokens file does not read (%s); the old tokens stay", err);
      return;
    }
    srv_auth_free(s->auth);
    s->auth = a;
    srv_log(s, 0, "SIGHUP: reloaded the tokens file %s", s->tokens_file);
    return;
  }
  begin_stop(s, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- Running ---- */

SL_EXTERN int sl_serve_run(const sl_serve_opts *o, char *errbuf, size_t errlen) {
  sl_srv *s = sl_malloc(sizeof(*s));
  struct sockaddr_storage ss;
  const union MHD_DaemonInfo *info;
  const char *listen = o->listen ? o->listen : DEFAULT_LISTEN;
  int v6 = 0;
  int loopback = 0;
  int rc = SL_EINVAL;

  if (s == NULL)
    return SL_ENOMEM;
  memset(s, 0, sizeof(*s));
  s->redis_url = o->redis_url;
  s->max_body = o->max_body ? o->max_body : DEFAULT_MAX_BODY;
  s->cors_origin = o->cors_origin;
  s->idle_timeout_s = o->idle_timeout_s ? o->idle_timeout_s : CONN_TIMEOUT_S;
  s->keepalive_ms = (uint64_t)(o->keepalive_s ? o->keepalive_s : KEEPALIVE_S) * 1000;
  s->tokens_file = o->tokens_file;
  s->quiet = o->quiet;
  for (size_t i = 0; o->queues != NULL && o->queues[i] != NULL; i++) {
    if (s->nqueues == SRV_MAX_QUEUES) {
      snprintf(errbuf, errlen, "at most %d queues", SRV_MAX_QUEUES);
      goto out;
    }
    s->queues[s->nqueues++] = o->queues[i];
  }
  if (s->nqueues == 0)
    s->queues[s->nqueues++] = "default";
  if (parse_listen(listen, &ss, &v6, &loopback, errbuf, errlen) != 0)
    goto out;
  if (!loopback && o->tokens_file == NULL) {
    snprintf(errbuf, errlen, "--listen %s is not a loopback address: give --tokens FILE, so that only holders of "
             "a token can call the server", listen);
    goto out;
  }
  if (srv_auth_load(o->tokens_file, &s->auth, errbuf, errlen) != 0 || srv_pool_new(o->redis_url, &s->pool) != 0)
    goto out;
  if (uv_loop_init(&s->loop) != 0) {
    snprintf(errbuf, errlen, "cannot start the event loop");
    goto out;
  }
  signal(SIGPIPE, SIG_IGN);
  {
    /* one descriptor per connection: the soft limit goes up to the hard */
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
  }
  s->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0),
                            0, NULL, NULL, srv_on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_NOTIFY_COMPLETED, srv_on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
                            s->idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONN_LIMIT,
                            MHD_OPTION_END);
  if (s->mhd == NULL) {
    snprintf(errbuf, errlen, "cannot listen on %s: %s", listen, strerror(errno ? errno : EADDRINUSE));
    uv_loop_close(&s->loop);
    goto out;
  }
  info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
  uv_poll_init(&s->loop, &s->mhd_poll, info->epoll_fd);
  uv_timer_init(&s->loop, &s->mhd_timer);
  uv_timer_init(&s->loop, &s->stop_timer);
  s->mhd_poll.data = s->mhd_timer.data = s->stop_timer.data = s;
  uv_poll_start(&s->mhd_poll, UV_READABLE, on_mhd_poll);
  uv_signal_init(&s->loop, &s->sig_term);
  uv_signal_init(&s->loop, &s->sig_int);
  uv_signal_init(&s->loop, &s->sig_hup);
  s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
  uv_signal_start(&s->sig_term, on_signal, SIGTERM);
  uv_signal_start(&s->sig_int, on_signal, SIGINT);
  uv_signal_start(&s->sig_hup, on_signal, SIGHUP);
  if (srv_hub_start(s) != 0) {
    snprintf(errbuf, errlen, "cannot start the event subscriptions");
    close_all(s);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    goto out;
  }
  {
    info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    srv_log(s, 0, "listening on %s (port %u), %s, %zu queue%s", listen, info ? info->port : 0,
            srv_auth_on(s->auth) ? "bearer tokens required" : "no tokens (loopback only)", s->nqueues,
            s->nqueues == 1 ? "" : "s");
  }
  run_mhd(s);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  uv_loop_close(&s->loop);
  rc = 0;
out:
  srv_auth_free(s->auth);
  srv_pool_free(s->pool);
  sl_free(s);
  return rc;
}
