/*
 * The worker's HTTP client on libcurl multi and libuv; see httpc.h.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one
 * uv_poll per socket, remembered with curl_multi_assign) and when to call
 * it back (CURLMOPT_TIMERFUNCTION: one uv_timer); readiness goes back to
 * curl with curl_multi_socket_action, and finished transfers are drained
 * with curl_multi_info_read after every call. A poll error is passed on as
 * CURL_CSELECT_ERR. Connections are kept and reused (MAXCONNECTS = the
 * worker's concurrency), and at most that many are open at once, to one
 * host and in all (MAX_TOTAL_CONNECTIONS): a transfer beyond them waits
 * inside libcurl for a connection instead of opening a descriptor the
 * worker's budget (fdlimit.h) did not count. No thread per request and no
 * blocking call on the loop; libcurl resolves names on short-lived threads
 * of its own.
 *
 * Sockets are opened here (CURLOPT_OPENSOCKETFUNCTION), so a socket that
 * cannot be opened is known by its errno: libcurl itself only says
 * "Couldn't connect to server", and leaves CURLINFO_OS_ERRNO unset. The
 * done callback gets that errno (EMFILE, ENFILE: out of descriptors).
 *
 * Each transfer carries a small record of ours in CURLOPT_PRIVATE: the done
 * callback and the origin, so a finished transfer that answered with HTTP/2
 * teaches the client that its origin multiplexes (a ring of H2_ORIGINS).
 */
#include "httpc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"
#include "fdlimit.h"

#define H2_ORIGINS 64                     /* origins remembered as speaking HTTP/2 */
#define ORIGIN_KEY_MAX (SL_HOST_MAX + 16) /* "https host:port", bytes */
#define POST_BODY_MAX (64 * 1024)         /* the answer to a POST of our own kept for its message, bytes */
#define EXCERPT_MAX 300                   /* an answer's excerpt in a message, bytes */

struct sl_httpc {
  CURLM *multi;            /* one multi handle for the worker; NULL until started */
  uv_timer_t timer;        /* curl's timeout */
  sl_allow *allow;         /* --http-allow origins; NULL with allow_any */
  int allow_any;           /* no --http-allow: any origin */
  long version;            /* CURL_HTTP_VERSION_* asked for */
  int max_conns;           /* connections kept, and opened per host */
  char h2[H2_ORIGINS][ORIGIN_KEY_MAX]; /* origins seen answering with HTTP/2 (a ring) */
  int h2_next;             /* the ring's next slot */
  int closing;             /* closed: no new transfers */
  struct xfer *xfers;      /* transfers running (a list) */
};

/* Our record of a transfer (CURLOPT_PRIVATE). */
typedef struct xfer {
  CURL *easy;                   /* the transfer */
  sl_httpc_done_fn done;        /* called once when it finishes */
  void *ud;                     /* its argument */
  char origin[ORIGIN_KEY_MAX];  /* "https host:port", for the HTTP/2 memory */
  int sock_errno;               /* errno of the last socket that could not be opened for it, or 0 */
  struct xfer *prev;            /* the client's list */
  struct xfer *next;
} xfer;

typedef struct sock {
  uv_poll_t poll; /* first: freed through the handle */
  sl_httpc *c;    /* owner */
  curl_socket_t fd;
} sock;

/* ---- curl <-> libuv ---- */

static void check_done(sl_httpc *c);

static void on_poll(uv_poll_t *p, int status, int events) {
  sock *s = (sock *)p;
  int flags = 0;
  int running;

  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(s->c->multi, s->fd, flags, &running);
  check_done(s->c);
}

static void poll_close_cb(uv_handle_t *handle) {
  sl_free(handle);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  sl_httpc *c = userp;
  sock *s = socketp;
  int events = 0;

  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, poll_close_cb);
      curl_multi_assign(c->multi, fd, NULL);
    }
    return 0;
  }
  if (s == NULL) {
    s = sl_calloc(1, sizeof(*s));
    if (s == NULL)
      return -1;
    s->c = c;
    s->fd = fd;
    if (uv_poll_init_socket(c->timer.loop, &s->poll, fd) != 0) {
      sl_free(s);
      return -1;
    }
    curl_multi_assign(c->multi, fd, s);
  }
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, on_poll);
  return 0;
}

static void on_timeout(uv_timer_t *t) {
  sl_httpc *c = t->data;
  int running;

  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(c);
}

static int on_timer(CURLM *multi, long ms, void *userp) {
  sl_httpc *c = userp;

  (void)multi;
  if (ms < 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timeout, (uint64_t)ms, 0); /* 0: next loop turn; never call curl here */
  return 0;
}

/* Every socket libcurl opens for us is close-on-exec (atomically: an exec
 * child forked at any moment never inherits one). ud is the transfer's
 * record, which keeps the errno of a socket that could not be opened. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
  xfer *x = ud;
  curl_socket_t fd;

  (void)purpose;
  fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  if (x != NULL)
    x->sock_errno = fd == CURL_SOCKET_BAD ? errno : 0; /* a later address may open fine */
  return fd;
}

/* ---- HTTP/2 memory ---- */

static int h2_known(const sl_httpc *c, const char *origin) {
  for (int i = 0; i < H2_ORIGINS; i++) {
    if (c->h2[i][0] != '\0' && strcmp(c->h2[i], origin) == 0)
      return 1;
  }
  return 0;
}

static void h2_learn(sl_httpc *c, const char *origin) {
  if (origin[0] == '\0' || h2_known(c, origin))
    return;
  snprintf(c->h2[c->h2_next], sizeof(c->h2[c->h2_next]), "%s", origin);
  c->h2_next = (c->h2_next + 1) % H2_ORIGINS;
}

static void origin_key(const sl_origin *o, char *out, size_t len) {
  snprintf(out, len, "%s %s:%d", o->scheme, o->host, o->port);
}

/* ---- Transfers ---- */

static void unlink_xfer(sl_httpc *c, xfer *x) {
  if (x->prev != NULL)
    x->prev->next = x->next;
  else
    c->xfers = x->next;
  if (x->next != NULL)
    x->next->prev = x->prev;
  x->prev = x->next = NULL;
}

/* Removes a transfer and forgets our record; returns the record's callback
 * (NULL when the transfer was not ours). */
static xfer *detach(sl_httpc *c, CURL *easy) {
  xfer *x = NULL;

  curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
  if (c->multi != NULL)
    curl_multi_remove_handle(c->multi, easy);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, NULL);
  if (x != NULL)
    unlink_xfer(c, x);
  return x;
}

static void check_done(sl_httpc *c) {
  CURLMsg *m;
  int left;

  while (c->multi != NULL && (m = curl_multi_info_read(c->multi, &left)) != NULL) {
    CURL *easy = m->easy_handle;
    CURLcode code = m->data.result;
    xfer *x = NULL;
    long v = 0;

    if (m->msg != CURLMSG_DONE)
      continue;
    x = detach(c, easy);
    if (curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION, &v) == CURLE_OK && v == CURL_HTTP_VERSION_2_0 && x != NULL)
      h2_learn(c, x->origin);
    if (x != NULL) {
      sl_httpc_done_fn done = x->done;
      void *ud = x->ud;
      int sock_errno = code != CURLE_OK ? x->sock_errno : 0;

      sl_free(x);
      done(ud, easy, code, sock_errno);
    }
  }
}

int sl__httpc_allowed(const sl_httpc *c, const sl_origin *o) {
  return c->allow_any || sl__allow_match(c->allow, o);
}

void sl__httpc_prepare(sl_httpc *c, CURL *easy, const sl_origin *o) {
  char key[ORIGIN_KEY_MAX];
  long version = c->version;

  origin_key(o, key, sizeof(key));
  /* Plain http speaks HTTP/2 only with prior knowledge: otherwise it is
   * HTTP/1.1 from the start, and libcurl never considers multiplexing it. */
  if (version == CURL_HTTP_VERSION_2TLS && strcmp(o->scheme, "http") == 0)
    version = CURL_HTTP_VERSION_1_1;
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, version);
  /* Wait for a connection that might multiplex only where one does. */
  curl_easy_setopt(easy, CURLOPT_PIPEWAIT, strcmp(o->scheme, "https") == 0 && h2_known(c, key) ? 1L : 0L);
}

int sl__httpc_add(sl_httpc *c, CURL *easy, const sl_origin *o, sl_httpc_done_fn done, void *ud) {
  xfer *x;

  if (c == NULL || c->multi == NULL || c->closing)
    return SL_ECANCELED;
  x = sl_calloc(1, sizeof(*x));
  if (x == NULL)
    return SL_ENOMEM;
  x->easy = easy;
  x->done = done;
  x->ud = ud;
  origin_key(o, x->origin, sizeof(x->origin));
  curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, x);
  if (curl_multi_add_handle(c->multi, easy) != CURLM_OK) {
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, NULL);
    sl_free(x);
    return SL_EIO;
  }
  x->next = c->xfers;
  if (c->xfers != NULL)
    c->xfers->prev = x;
  c->xfers = x;
  return 0;
}

void sl__httpc_remove(sl_httpc *c, CURL *easy) {
  if (c != NULL)
    sl_free(detach(c, easy));
}

/* ---- POSTs of the worker's own ---- */

typedef struct post {
  sl_httpc_post_fn done;        /* called once */
  void *ud;                     /* its argument */
  struct curl_slist *hdrs;      /* request headers */
  char *body;                   /* request body */
  sl_buf resp;                  /* the answer, capped at POST_BODY_MAX */
  char errbuf[CURL_ERROR_SIZE]; /* curl's message */
} post;

static void post_free(post *p) {
  curl_slist_free_all(p->hdrs);
  sl_free(p->body);
  sl__buf_free(&p->resp);
  sl_free(p);
}

static size_t on_post_body(char *data, size_t size, size_t n, void *ud) {
  post *p = ud;
  size_t len = size * n;
  size_t room = POST_BODY_MAX - p->resp.len;

  if (room > 0)
    sl__buf_append(&p->resp, data, len < room ? len : room); /* a cut answer is enough for a message */
  return len;
}

static void on_post_done(void *ud, CURL *easy, CURLcode code, int sock_errno) {
  post *p = ud;
  long status = 0;
  char msg[CURL_ERROR_SIZE + EXCERPT_MAX + 64];

  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
  if (code != CURLE_OK && sl__fd_exhausted(sock_errno)) {
    snprintf(msg, sizeof(msg), "%s opening a connection (curl: %s)", sl__fd_strerror(sock_errno),
             curl_easy_strerror(code));
    status = 0;
  } else if (code != CURLE_OK) {
    snprintf(msg, sizeof(msg), "curl: %s%s%s", curl_easy_strerror(code), p->errbuf[0] ? ": " : "", p->errbuf);
    status = 0;
  } else {
    size_t k = 0;
    char ex[EXCERPT_MAX + 1];

    for (size_t i = 0; i < p->resp.len && k < EXCERPT_MAX; i++)
      ex[k++] = (unsigned char)p->resp.p[i] < 0x20 ? ' ' : p->resp.p[i];
    ex[k] = '\0';
    snprintf(msg, sizeof(msg), "HTTP %ld: %s%s", status, ex, p->resp.len > EXCERPT_MAX ? "..." : "");
  }
  curl_easy_cleanup(easy);
  p->done(p->ud, status, msg);
  post_free(p);
}

int sl__httpc_post(sl_httpc *c, const char *url, const char *body, const char *const *headers, sl_httpc_post_fn done,
                   void *ud) {
  sl_origin o;
  char why[160];
  post *p;
  CURL *easy;
  int rc;

  if (c == NULL || c->multi == NULL || c->closing)
    return SL_ECANCELED;
  /* The same --http-allow as items: a URL given by a producer never
   * reaches an origin the worker's operator did not allow. */
  if (sl__origin_parse(url, &o, why, sizeof(why)) != 0 || !sl__httpc_allowed(c, &o))
    return SL_EINVAL;
  p = sl_calloc(1, sizeof(*p));
  if (p == NULL)
    return SL_ENOMEM;
  p->done = done;
  p->ud = ud;
  sl__buf_init(&p->resp, POST_BODY_MAX);
  p->body = sl_strdup(body);
  for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
    struct curl_slist *l = curl_slist_append(p->hdrs, headers[i]);

    if (l == NULL) { /* never send it without a header asked for (a signature) */
      post_free(p);
      return SL_ENOMEM;
    }
    p->hdrs = l;
  }
  easy = p->body != NULL ? curl_easy_init() : NULL;
  if (easy == NULL) {
    post_free(p);
    return SL_ENOMEM;
  }
  sl__httpc_prepare(c, easy, &o);
  curl_easy_setopt(easy, CURLOPT_URL, url);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, p->errbuf);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, p->hdrs);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_post_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, p);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 30000L);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, p->body);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)strlen(p->body));
  rc = sl__httpc_add(c, easy, &o, on_post_done, p);
  if (rc != 0) {
    curl_easy_cleanup(easy);
    post_free(p);
  }
  return rc;
}

/* ---- Setup ---- */

int sl__httpc_new(const char *allow, int http_version, int max_conns, sl_httpc **out, char *err, size_t errlen) {
  static int global;
  sl_httpc *c;
  int rc;

  if (!global) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      snprintf(err, errlen, "cannot initialize libcurl");
      return SL_EIO;
    }
    global = 1;
  }
  c = sl_calloc(1, sizeof(*c));
  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  c->max_conns = max_conns > 0 ? max_conns : 10;
  c->version = http_version == SL_HTTP_1_1                 ? CURL_HTTP_VERSION_1_1
               : http_version == SL_HTTP_2_PRIOR_KNOWLEDGE ? CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                                                           : CURL_HTTP_VERSION_2TLS;
  c->allow_any = allow == NULL || *allow == '\0';
  if (!c->allow_any && (rc = sl__allow_add(&c->allow, allow, "--http-allow", err, errlen)) != 0) {
    sl__allow_free(c->allow);
    sl_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

int sl__httpc_start(sl_httpc *c, uv_loop_t *loop) {
  c->multi = curl_multi_init();
  if (c->multi == NULL)
    return SL_ENOMEM;
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->max_conns);
  curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->max_conns);
  curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)c->max_conns);
  return 0;
}

static void timer_close_cb(uv_handle_t *t) {
  sl_httpc *c = t->data;

  sl__allow_free(c->allow);
  sl_free(c);
}

void sl__httpc_close(sl_httpc *c) {
  if (c == NULL)
    return;
  c->closing = 1;
  /* Transfers still running end now, as aborted (a webhook being sent is
   * tried again later); their owners clean their handles up. */
  while (c->xfers != NULL) {
    CURL *easy = c->xfers->easy;
    xfer *x = detach(c, easy);

    x->done(x->ud, easy, CURLE_ABORTED_BY_CALLBACK, 0);
    sl_free(x);
  }
  if (c->multi != NULL) {
    curl_multi_cleanup(c->multi); /* closes the cached connections: their polls close */
    c->multi = NULL;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, timer_close_cb);
  } else {
    c->timer.data = c;
    timer_close_cb((uv_handle_t *)&c->timer);
  }
}
