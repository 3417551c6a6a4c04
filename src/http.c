/*
 * The `http` item handler: libcurl's multi interface driven by the worker's
 * libuv loop, with no thread per request and no blocking call on the loop.
 *
 * One CURLM per worker. curl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION: one uv_poll per socket, remembered with
 * curl_multi_assign) and when to call it back (CURLMOPT_TIMERFUNCTION: one
 * uv_timer); readiness goes back to curl with curl_multi_socket_action, and
 * finished transfers are drained with curl_multi_info_read after every
 * call. A poll error is passed on as CURL_CSELECT_ERR. Connections are kept
 * and reused (MAXCONNECTS = the worker's concurrency).
 *
 * A request is built from the item's payload, checked again here by the same
 * rules as at submit (httpreq.h): method, url, headers, body or json,
 * keep_headers. Nothing a producer wrote is pasted into the request: header
 * lines are built from checked names and values, so no item can end a line,
 * start a second request on a reused connection, or change the framing.
 * ${env:NAME} references resolve only to secrets the operator granted
 * (secret.h), and only for the hosts they were granted for; values are never
 * logged (errors name the secret, not its value). --http-allow restricts the
 * origins (allow.h); redirects are never followed. Every request carries an
 * Idempotency-Key that is the same for every attempt of an item.
 *
 * HTTP/2: over TLS, libcurl offers h2 by ALPN. A transfer waits for a
 * connection that might multiplex (CURLOPT_PIPEWAIT) only for an origin
 * already seen answering with HTTP/2; everything else opens connections of
 * its own at once (up to the concurrency), so requests to HTTP/1.1 hosts and
 * plain http never start in waves behind one connection. Plain http speaks
 * HTTP/2 only when the operator asks for prior knowledge.
 *
 * Every socket is opened close-on-exec, so exec children never inherit one.
 *
 * Outcomes: 2xx succeeds with {"status","headers","body","truncated","bytes"}
 * (the body capped at --http-max-body, stored as JSON when it parses);
 * 429, 5xx and transport errors are retryable and 429/503 honour Retry-After;
 * other statuses fail at once. Errors keep the status and a body excerpt, or
 * curl's own message.
 */
#include "http.h"

#include <ctype.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "alloc.h"
#include "allow.h"
#include "buf.h"
#include "httpreq.h"
#include "json.h"
#include "log.h"
#include "secret.h"
#include "worker.h"

#define EXCERPT_MAX 300        /* body excerpt in an error, bytes */
#define RETRY_AFTER_MAX_S 300  /* a Retry-After is capped at this, seconds */
#define H2_ORIGINS 64          /* origins remembered as speaking HTTP/2 */
#define ORIGIN_KEY_MAX (SL_HOST_MAX + 16) /* "https host:port", bytes */

struct sl_http {
  sl_worker_t *w;          /* owner */
  CURLM *multi;            /* one multi handle for the worker */
  uv_timer_t timer;        /* curl's timeout */
  sl_allow *allow;         /* --http-allow origins; NULL with allow_any */
  int allow_any;           /* no --http-allow: any origin */
  sl_secrets *secrets;     /* granted secrets (--secret), or NULL */
  char *methods;           /* ",PROPFIND,REPORT,": --http-methods, or NULL */
  size_t max_body;         /* --http-max-body, bytes */
  long version;            /* CURL_HTTP_VERSION_* */
  char h2[H2_ORIGINS][ORIGIN_KEY_MAX]; /* origins seen answering with HTTP/2 (a ring) */
  int h2_next;             /* the ring's next slot */
  int running;             /* transfers added, not finished */
  int closing;             /* shutting down: no new transfers */
};

typedef struct req {
  sl_http *h;                /* owner */
  sl_job_t *job;             /* the job, until it is completed */
  CURL *easy;                /* the transfer */
  struct curl_slist *hdrs;   /* request headers */
  char *body;                /* request body, or NULL */
  sl_buf resp;               /* response body, capped */
  size_t bytes;              /* response bytes received (also past the cap) */
  int truncated;             /* the body was cut at max_body */
  cJSON *keep;               /* kept response headers: lower-case name -> value */
  char **keep_names;         /* names to keep, lower case, NULL-terminated */
  char errbuf[CURL_ERROR_SIZE]; /* curl's message */
  sl_http_done_fn done;      /* a request of the worker's own (webhook): called instead of finishing a job */
  void *done_ud;             /* its argument */
  char origin[ORIGIN_KEY_MAX]; /* "https host:port" of the request, for the HTTP/2 memory */
} req;

typedef struct sock {
  uv_poll_t poll; /* first: freed through the handle */
  sl_http *h;     /* owner */
  curl_socket_t fd;
} sock;

/* ---- curl <-> libuv ---- */

static void check_done(sl_http *h);

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
  curl_multi_socket_action(s->h->multi, s->fd, flags, &running);
  check_done(s->h);
}

static void poll_close_cb(uv_handle_t *handle) {
  sl_free(handle);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  sl_http *h = userp;
  sock *s = socketp;
  int events = 0;

  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, poll_close_cb);
      curl_multi_assign(h->multi, fd, NULL);
    }
    return 0;
  }
  if (s == NULL) {
    s = sl_calloc(1, sizeof(*s));
    if (s == NULL)
      return -1;
    s->h = h;
    s->fd = fd;
    if (uv_poll_init_socket(h->w->loop, &s->poll, fd) != 0) {
      sl_free(s);
      return -1;
    }
    curl_multi_assign(h->multi, fd, s);
  }
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, on_poll);
  return 0;
}

/* Every socket libcurl opens for us is close-on-exec (atomically: an exec
 * child forked at any moment never inherits one). */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
  (void)ud;
  (void)purpose;
  return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* ---- HTTP/2 memory ---- */

static int h2_known(const sl_http *h, const char *origin) {
  for (int i = 0; i < H2_ORIGINS; i++) {
    if (h->h2[i][0] != '\0' && strcmp(h->h2[i], origin) == 0)
      return 1;
  }
  return 0;
}

static void h2_learn(sl_http *h, const char *origin) {
  if (origin[0] == '\0' || h2_known(h, origin))
    return;
  snprintf(h->h2[h->h2_next], sizeof(h->h2[h->h2_next]), "%s", origin);
  h->h2_next = (h->h2_next + 1) % H2_ORIGINS;
}

static void on_timeout(uv_timer_t *t) {
  sl_http *h = t->data;
  int running;

  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(h);
}

static int on_timer(CURLM *multi, long ms, void *userp) {
  sl_http *h = userp;

  (void)multi;
  if (ms < 0)
    uv_timer_stop(&h->timer);
  else
    uv_timer_start(&h->timer, on_timeout, (uint64_t)ms, 0); /* 0: next loop turn; never call curl here */
  return 0;
}

/* ---- Requests ---- */

static void req_free(req *r) {
  if (r->easy != NULL) {
    curl_multi_remove_handle(r->h->multi, r->easy);
    curl_easy_cleanup(r->easy);
    r->h->running--;
  }
  curl_slist_free_all(r->hdrs);
  sl_free(r->body);
  sl__buf_free(&r->resp);
  cJSON_Delete(r->keep);
  if (r->keep_names != NULL) {
    for (size_t i = 0; r->keep_names[i] != NULL; i++)
      sl_free(r->keep_names[i]);
    sl_free(r->keep_names);
  }
  sl_free(r);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  req *r = ud;
  size_t len = size * n;
  size_t room = r->h->max_body > r->resp.len ? r->h->max_body - r->resp.len : 0;

  r->bytes += len;
  if (len > room)
    r->truncated = 1;
  if (room > 0 && sl__buf_append(&r->resp, p, len < room ? len : room) != 0)
    return 0; /* out of memory: ends the transfer with an error */
  return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  req *r = ud;
  size_t len = size * n;
  const char *colon = memchr(p, ':', len);
  char name[SL_HTTP_NAME_MAX + 1];
  size_t nl;

  if (colon == NULL || r->keep_names == NULL)
    return len;
  nl = (size_t)(colon - p);
  if (nl == 0 || nl >= sizeof(name))
    return len;
  for (size_t i = 0; i < nl; i++)
    name[i] = (char)tolower((unsigned char)p[i]);
  name[nl] = '\0';
  for (size_t i = 0; r->keep_names[i] != NULL; i++) {
    if (strcmp(r->keep_names[i], name) == 0) {
      const char *v = colon + 1;
      size_t vl = len - nl - 1;
      char *val;

      while (vl > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
      }
      while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
      val = sl_strndup(v, vl);
      if (val != NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(r->keep, name); /* the last one wins (redirects) */
        cJSON_AddStringToObject(r->keep, name, val);
        sl_free(val);
      }
    }
  }
  return len;
}

/* An excerpt of the response body for an error message: printable, capped. */
static void excerpt(const req *r, char *out, size_t len) {
  size_t n = r->resp.len < EXCERPT_MAX ? r->resp.len : EXCERPT_MAX;
  size_t k = 0;

  for (size_t i = 0; i < n && k + 1 < len; i++) {
    unsigned char c = (unsigned char)r->resp.p[i];

    out[k++] = c < 0x20 ? ' ' : (char)c;
  }
  out[k] = '\0';
  if (r->resp.len > EXCERPT_MAX && k + 4 < len)
    memcpy(out + k, "...", 4);
}

/* A transfer ended: the outcome of the job. */
static void finish(req *r, CURLcode code) {
  sl_job_t *j = r->job;
  long status = 0;
  char ex[EXCERPT_MAX + 8];

  r->job = NULL;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  {
    long v = 0;

    if (curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &v) == CURLE_OK && v == CURL_HTTP_VERSION_2_0)
      h2_learn(r->h, r->origin);
  }
  if (r->done != NULL) {
    char msg[CURL_ERROR_SIZE + EXCERPT_MAX + 64];

    if (code != CURLE_OK) {
      snprintf(msg, sizeof(msg), "curl: %s%s%s", curl_easy_strerror(code), r->errbuf[0] ? ": " : "", r->errbuf);
    } else {
      excerpt(r, ex, sizeof(ex));
      snprintf(msg, sizeof(msg), "HTTP %ld: %s", status, ex);
    }
    r->done(r->done_ud, code == CURLE_OK ? status : 0, msg);
    req_free(r);
    return;
  }
  if (code != CURLE_OK) {
    sl_job_fail(j, "curl: %s%s%s", curl_easy_strerror(code), r->errbuf[0] ? ": " : "", r->errbuf);
  } else if (status >= 200 && status < 300) {
    sl_buf out;
    char err[64];
    int body_json = r->resp.len > 0 && !r->truncated &&
                    sl__json_validate(r->resp.p, r->resp.len, 256, NULL, err, sizeof(err)) == 0;
    char *hdrs = cJSON_PrintUnformatted(r->keep);
    size_t cut = r->resp.len;
    int truncated = r->truncated;
    int rc;

    /* The whole results line must fit SL_RESULT_MAX: escaping can grow a
     * body, so cut it further (and keep it as a string) until it does. */
    sl__buf_init(&out, SL_RESULT_MAX);
    for (;;) {
      sl__buf_reset(&out);
      rc = sl__buf_printf(&out, "{\"status\":%ld,\"headers\":%s,\"body\":", status, hdrs ? hdrs : "{}");
      if (rc == 0 && body_json)
        rc = sl__buf_append(&out, r->resp.p, cut);
      else if (rc == 0)
        rc = sl__json_put_str(&out, r->resp.p ? r->resp.p : "", cut);
      if (rc == 0)
        rc = sl__buf_printf(&out, ",\"truncated\":%s,\"bytes\":%zu}", truncated ? "true" : "false", r->bytes);
      if (rc == 0 && out.len <= SL_RESULT_MAX - 4096)
        break;
      if (rc == SL_ENOMEM || cut == 0)
        break;
      cut = cut / 4 * 3;
      truncated = 1;
      body_json = 0;
    }
    cJSON_free(hdrs);
    if (rc == 0)
      sl_job_succeed(j, out.p, out.len);
    else
      sl_job_fail_final(j, "HTTP %ld: the response of %zu bytes does not fit in a result", status, r->bytes);
    sl__buf_free(&out);
  } else {
    excerpt(r, ex, sizeof(ex));
    if (status == 429 || status >= 500) {
      curl_off_t ra = 0;

      if ((status == 429 || status == 503) && curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK &&
          ra > 0) {
        if (ra > RETRY_AFTER_MAX_S)
          ra = RETRY_AFTER_MAX_S;
        /* plus up to 10% jitter, so a fleet does not come back at once */
        sl_job_retry_after(j, (int64_t)ra * 1000 + rand() % ((int)ra * 100 + 1));
        sl_job_fail(j, "HTTP %ld (Retry-After %lld s): %s", status, (long long)ra, ex);
      } else {
        sl_job_fail(j, "HTTP %ld: %s", status, ex);
      }
    } else {
      sl_job_fail_final(j, "HTTP %ld: %s", status, ex);
    }
  }
  req_free(r);
}

static void check_done(sl_http *h) {
  CURLMsg *m;
  int left;

  while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
    req *r = NULL;

    if (m->msg != CURLMSG_DONE)
      continue;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    if (r != NULL)
      finish(r, m->data.result);
  }
}

/* The worker gave up the attempt (timeout, takeover, stop, abort). */
static void on_cancel(sl_job_t *j, void *ud) {
  req *r = ud;

  r->job = NULL;
  req_free(r);
  sl_job_fail(j, "http: cancelled");
}

/* ---- Building a request ---- */

/* 1 when the worker may call origin o (--http-allow). */
static int origin_allowed(const sl_http *h, const sl_origin *o) {
  return h->allow_any || sl__allow_match(h->allow, o);
}

/* Appends the header line "name: value" ("name;" for an empty value, which
 * libcurl sends as "name:"; "name:" would remove the header). */
static int add_header(req *r, const char *name, const char *value) {
  sl_buf line;
  struct curl_slist *nl;

  sl__buf_init(&line, SL_HTTP_NAME_MAX + SL_HTTP_VALUE_MAX + 8);
  if ((value[0] == '\0' ? sl__buf_printf(&line, "%s;", name) : sl__buf_printf(&line, "%s: %s", name, value)) != 0) {
    sl__buf_free(&line);
    return SL_ENOMEM;
  }
  nl = curl_slist_append(r->hdrs, line.p);
  sl__buf_free(&line);
  if (nl == NULL)
    return SL_ENOMEM;
  r->hdrs = nl;
  return 0;
}

/* Ends a job whose request could not be built: refused (a secret not
 * granted), failed for good (the item is wrong for this worker), or
 * retryable (out of memory). */
static void give_up(sl_job_t *j, int refused, int rc, const char *msg) {
  if (msg == NULL || refused < 0)
    rc = SL_ENOMEM; /* sl__secrets_expand ran out of memory */
  if (refused > 0)
    sl_job_refuse(j, "%s", msg);
  else if (rc == SL_ENOMEM)
    sl_job_fail(j, "http: out of memory");
  else
    sl_job_fail_final(j, "%s", msg);
}

static void http_start(sl_job_t *j, void *ud) {
  sl_http *h = ud;
  size_t plen;
  const char *ptext = sl_job_payload(j, &plen);
  sl_httpreq q;
  char err[1024];
  char jerr[96];
  size_t errpos = 0;
  int has_ikey = 0;
  int has_ctype = 0;
  int refused = 0;
  int rc;
  size_t body_len = 0;
  long timeout_ms;
  req *r = NULL;

  if (h->closing) {
    sl_job_fail(j, "http: the worker is stopping");
    return;
  }
  /* Items come from any language: the submit checks run again here. */
  rc = sl__json_validate_strict(ptext, plen, SL_ITEM_MAX_DEPTH, &errpos, jerr, sizeof(jerr));
  if (rc != 0) {
    snprintf(err, sizeof(err), "field \"payload\": invalid JSON at byte %zu: %s", errpos, jerr);
    give_up(j, 0, rc, err);
    return;
  }
  rc = sl__httpreq_parse(ptext, plen, &q, err, sizeof(err));
  if (rc != 0) {
    give_up(j, 0, rc, err);
    return;
  }
  if (q.method[0] != '\0' && !sl__http_method_standard(q.method)) {
    char key[SL_HTTP_METHOD_MAX + 3];

    snprintf(key, sizeof(key), ",%s,", q.method);
    if (h->methods == NULL || strstr(h->methods, key) == NULL) {
      snprintf(err, sizeof(err),
               "field \"payload.method\": %s is not allowed on worker %s (GET, HEAD, POST, PUT, PATCH, DELETE, "
               "OPTIONS; the operator may add others with --http-methods)", q.method, sl_worker_id(h->w));
      give_up(j, 0, SL_EINVAL, err);
      goto out;
    }
  }
  if (strcmp(q.method, "HEAD") == 0 && (q.body != NULL || q.json != NULL)) {
    give_up(j, 0, SL_EINVAL, "field \"payload.method\": a HEAD request has no body");
    goto out;
  }
  if (!origin_allowed(h, &q.origin)) {
    char o[SL_HOST_MAX + 32];

    sl__origin_describe(&q.origin, o, sizeof(o));
    snprintf(err, sizeof(err), "field \"payload.url\": %s is not allowed on worker %s (--http-allow)", o,
             sl_worker_id(h->w));
    give_up(j, 0, SL_EINVAL, err);
    goto out;
  }
  r = sl_calloc(1, sizeof(*r));
  if (r == NULL || (r->keep = cJSON_CreateObject()) == NULL) {
    give_up(j, 0, SL_ENOMEM, NULL);
    goto out;
  }
  r->h = h;
  snprintf(r->origin, sizeof(r->origin), "%s %s:%d", q.origin.scheme, q.origin.host, q.origin.port);
  sl__buf_init(&r->resp, h->max_body + 1);
  if (q.nkeep > 0) {
    r->keep_names = sl_calloc(q.nkeep + 1, sizeof(char *));
    if (r->keep_names == NULL) {
      give_up(j, 0, SL_ENOMEM, NULL);
      goto out;
    }
    for (size_t i = 0; i < q.nkeep; i++) {
      r->keep_names[i] = q.keep[i];
      q.keep[i] = NULL;
    }
  }
  /* Headers: secrets resolved here, at the worker, and checked again. */
  for (size_t i = 0; i < q.nheaders; i++) {
    char where[SL_HTTP_NAME_MAX + 40];
    char *v;

    snprintf(where, sizeof(where), "field \"payload.headers.%s\"", q.name[i]);
    v = sl__secrets_expand(h->secrets, q.value[i], &q.origin, where, &refused, err, sizeof(err));
    if (v == NULL) {
      give_up(j, refused, SL_EINVAL, err);
      goto out;
    }
    if (strcmp(v, q.value[i]) != 0 && sl__http_value_check(v, strlen(v), where, err, sizeof(err)) != 0) {
      /* a granted value that cannot be a header value: say so, not what it is */
      snprintf(err, sizeof(err), "%s: the value is not a valid header value once its secrets are resolved (over "
                                 "%d bytes, or a line break or control byte in a secret)", where, SL_HTTP_VALUE_MAX);
      sl_free(v);
      give_up(j, 0, SL_EINVAL, err);
      goto out;
    }
    if (strcasecmp(q.name[i], "Idempotency-Key") == 0)
      has_ikey = 1;
    if (strcasecmp(q.name[i], "Content-Type") == 0)
      has_ctype = 1;
    rc = add_header(r, q.name[i], v);
    sl_free(v);
    if (rc != 0) {
      give_up(j, 0, rc, NULL);
      goto out;
    }
  }
  if (!has_ikey) {
    /* The same for every attempt of the item, different between items. */
    char dflt[160];

    snprintf(dflt, sizeof(dflt), "sluice-%s-%s", sl_job_batch(j), j->idx);
    if (add_header(r, "Idempotency-Key", q.ikey != NULL ? q.ikey : dflt) != 0) {
      give_up(j, 0, SL_ENOMEM, NULL);
      goto out;
    }
  }
  if (q.json != NULL) {
    r->body = sl__httpreq_json_body(&q, h->secrets, &refused, &body_len, err, sizeof(err));
    if (r->body == NULL) {
      give_up(j, refused, SL_EINVAL, err);
      goto out;
    }
    if (!has_ctype && add_header(r, "Content-Type", "application/json") != 0) {
      give_up(j, 0, SL_ENOMEM, NULL);
      goto out;
    }
  } else if (q.body != NULL) {
    if (memchr(q.body, '\0', q.body_len) != NULL) {
      r->body = sl_malloc(q.body_len + 1); /* a binary body is sent as it is; no secrets in it */
      if (r->body != NULL)
        memcpy(r->body, q.body, q.body_len + 1);
      else
        refused = -1;
      body_len = q.body_len;
    } else {
      r->body = sl__secrets_expand(h->secrets, q.body, &q.origin, "field \"payload.body\"", &refused, err,
                                   sizeof(err));
      body_len = r->body ? strlen(r->body) : 0;
    }
    if (r->body == NULL) {
      give_up(j, refused, SL_EINVAL, err);
      goto out;
    }
    if (!has_ctype && add_header(r, "Content-Type", "text/plain; charset=utf-8") != 0) {
      give_up(j, 0, SL_ENOMEM, NULL);
      goto out;
    }
  }
  r->easy = curl_easy_init();
  if (r->easy == NULL) {
    sl_job_fail(j, "http: cannot create a transfer");
    goto out;
  }
  timeout_ms = (long)sl_job_timeout_ms(j) + 1000; /* a backstop: the worker's own timer ends the attempt */
  if (q.timeout_ms > 0 && q.timeout_ms < timeout_ms)
    timeout_ms = (long)q.timeout_ms;
  curl_easy_setopt(r->easy, CURLOPT_URL, q.url);
  curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
  curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(r->easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
  curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->hdrs);
  curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(r->easy, CURLOPT_FOLLOWLOCATION, 0L);
  /* Plain http speaks HTTP/2 only with prior knowledge: otherwise it is
   * HTTP/1.1 from the start, and libcurl never considers multiplexing it. */
  curl_easy_setopt(r->easy, CURLOPT_HTTP_VERSION,
                   h->version == CURL_HTTP_VERSION_2TLS && strcmp(q.origin.scheme, "http") == 0 ? CURL_HTTP_VERSION_1_1
                                                                                             : h->version);
  /* Wait for a connection that might multiplex only where one does. */
  curl_easy_setopt(r->easy, CURLOPT_PIPEWAIT, strcmp(q.origin.scheme, "https") == 0 && h2_known(h, r->origin) ? 1L : 0L);
  curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(r->easy, CURLOPT_ACCEPT_ENCODING, "");
  if (r->body != NULL) {
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  }
  if (strcmp(q.method, "HEAD") == 0)
    curl_easy_setopt(r->easy, CURLOPT_NOBODY, 1L);
  else if (q.method[0] != '\0' && strcmp(q.method, r->body != NULL ? "POST" : "GET") != 0)
    curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, q.method); /* a checked token */
  else if (strcmp(q.method, "POST") == 0 && r->body == NULL)
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, ""); /* an empty body, never stdin */
  if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    sl_job_fail(j, "http: cannot start the transfer");
    goto out;
  }
  h->running++;
  r->job = j;
  sl_job_on_cancel(j, on_cancel, r);
  r = NULL;
out:
  if (r != NULL)
    req_free(r);
  sl__httpreq_free(&q);
}

/* ---- Setup ---- */

int sl__http_new(sl_worker_t *w, const char *allow, const char *methods, size_t max_body, int http_version,
                 sl_http **out, char *err, size_t errlen) {
  static int global;
  sl_http *h;
  int rc;

  if (!global) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      snprintf(err, errlen, "cannot initialize libcurl");
      return SL_EIO;
    }
    global = 1;
  }
  h = sl_calloc(1, sizeof(*h));
  if (h == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  h->w = w;
  h->max_body = max_body > 0 ? max_body : 1024 * 1024;
  h->version = http_version == SL_HTTP_1_1                 ? CURL_HTTP_VERSION_1_1
               : http_version == SL_HTTP_2_PRIOR_KNOWLEDGE ? CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                                                           : CURL_HTTP_VERSION_2TLS;
  h->allow_any = allow == NULL || *allow == '\0';
  if (!h->allow_any && (rc = sl__allow_add(&h->allow, allow, "--http-allow", err, errlen)) != 0)
    goto fail;
  if (methods != NULL && *methods != '\0') {
    size_t n = strlen(methods);
    const char *p = methods;

    h->methods = sl_malloc(n + 3);
    if (h->methods == NULL) {
      rc = SL_ENOMEM;
      snprintf(err, errlen, "out of memory");
      goto fail;
    }
    snprintf(h->methods, n + 3, ",%s,", methods);
    while (*p != '\0') {
      size_t len = strcspn(p, ",");

      if (!sl__http_token(p, len) || len > SL_HTTP_METHOD_MAX) {
        snprintf(err, errlen, "--http-methods: \"%.*s\" is not a method (a token of at most %d bytes)",
                 (int)(len > 40 ? 40 : len), p, SL_HTTP_METHOD_MAX);
        rc = SL_EINVAL;
        goto fail;
      }
      p += len + (p[len] == ',');
    }
  }
  *out = h;
  return 0;
fail:
  sl__allow_free(h->allow);
  sl_free(h->methods);
  sl_free(h);
  return rc;
}

int sl__http_grant(sl_http *h, const char *spec, char *err, size_t errlen) {
  return sl__secrets_grant(&h->secrets, spec, err, errlen);
}

int sl__http_start(sl_http *h) {
  h->multi = curl_multi_init();
  if (h->multi == NULL)
    return SL_ENOMEM;
  uv_timer_init(h->w->loop, &h->timer);
  h->timer.data = h;
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)h->w->concurrency);
  curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)h->w->concurrency);
  return sl_worker_register(h->w, "http", http_start, h);
}

static void timer_close_cb(uv_handle_t *t) {
  sl_http *h = t->data;

  sl__allow_free(h->allow);
  sl__secrets_free(h->secrets);
  sl_free(h->methods);
  sl_free(h);
}

void sl__http_close(sl_http *h) {
  if (h == NULL)
    return;
  h->closing = 1;
  if (h->multi != NULL) {
    curl_multi_cleanup(h->multi); /* closes the cached connections: their polls close */
    h->multi = NULL;
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, timer_close_cb);
  } else {
    h->timer.data = h;
    timer_close_cb((uv_handle_t *)&h->timer);
  }
}

int sl__http_post(sl_http *h, const char *url, const char *body, const char *const *headers, sl_http_done_fn done,
                  void *ud) {
  req *r;

  if (h == NULL || h->multi == NULL || h->closing)
    return SL_ECANCELED;
  /* The same --http-allow as items: a URL given by a producer never
   * reaches an origin the worker's operator did not allow. */
  {
    sl_origin o;
    char why[160];

    if (sl__origin_parse(url, &o, why, sizeof(why)) != 0 || !origin_allowed(h, &o))
      return SL_EINVAL;
  }
  r = sl_calloc(1, sizeof(*r));
  if (r == NULL)
    return SL_ENOMEM;
  r->h = h;
  r->done = done;
  r->done_ud = ud;
  sl__buf_init(&r->resp, 64 * 1024);
  r->body = sl_strdup(body);
  for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
    struct curl_slist *l = curl_slist_append(r->hdrs, headers[i]);

    if (l == NULL) { /* never send it without a header asked for (a signature) */
      req_free(r);
      return SL_ENOMEM;
    }
    r->hdrs = l;
  }
  r->easy = curl_easy_init();
  if (r->body == NULL || r->easy == NULL) {
    req_free(r);
    return SL_ENOMEM;
  }
  curl_easy_setopt(r->easy, CURLOPT_URL, url);
  curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
  curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(r->easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
  curl_easy_setopt(r->easy, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->hdrs);
  curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, 30000L);
  curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
  curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
  if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    req_free(r);
    return SL_EIO;
  }
  h->running++;
  return 0;
}
