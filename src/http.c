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
 * A request is built from the item's payload (see docs/PROTOCOL.md): method,
 * url, headers, body or json, keep_headers. Header values and strings in the
 * body may hold ${env:NAME}, resolved here from the worker's environment, so
 * secrets never reach Redis; they are never logged either (errors name the
 * variable, not its value). --http-allow restricts the hosts. Every request
 * carries an Idempotency-Key that is the same for every attempt of an item.
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
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "alloc.h"
#include "buf.h"
#include "json.h"
#include "log.h"
#include "worker.h"

#define EXCERPT_MAX 300        /* body excerpt in an error, bytes */
#define RETRY_AFTER_MAX_S 300  /* a Retry-After is capped at this, seconds */

struct sl_http {
  sl_worker_t *w;          /* owner */
  CURLM *multi;            /* one multi handle for the worker */
  uv_timer_t timer;        /* curl's timeout */
  char **allow;            /* --http-allow patterns, NULL-terminated; NULL: any host */
  size_t max_body;         /* --http-max-body, bytes */
  long version;            /* CURL_HTTP_VERSION_* */
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
  char name[128];
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

/* Replaces ${env:NAME} in s; NULL with err set when a variable is not set. */
static char *expand_env(const char *s, const char *where, char *err, size_t errlen) {
  sl_buf out;
  const char *p = s;

  sl__buf_init(&out, 1024 * 1024);
  for (;;) {
    const char *m = strstr(p, "${env:");
    const char *end;
    char name[128];
    const char *val;

    if (m == NULL) {
      if (sl__buf_puts(&out, p) != 0)
        goto oom;
      break;
    }
    end = strchr(m + 6, '}');
    if (end == NULL || (size_t)(end - m - 6) >= sizeof(name) || end == m + 6) {
      snprintf(err, errlen, "%s: bad ${env:NAME} reference", where);
      sl__buf_free(&out);
      return NULL;
    }
    memcpy(name, m + 6, (size_t)(end - m - 6));
    name[end - m - 6] = '\0';
    val = getenv(name);
    if (val == NULL) {
      snprintf(err, errlen, "%s: ${env:%s} is not set in this worker's environment", where, name);
      sl__buf_free(&out);
      return NULL;
    }
    if (sl__buf_append(&out, p, (size_t)(m - p)) != 0 || sl__buf_puts(&out, val) != 0)
      goto oom;
    p = end + 1;
  }
  return sl__buf_take(&out);
oom:
  sl__buf_free(&out);
  snprintf(err, errlen, "%s: out of memory", where);
  return NULL;
}

/* Expands ${env:...} in every string of a JSON tree, in place. */
static int expand_tree(cJSON *n, char *err, size_t errlen) {
  if (cJSON_IsString(n) && strstr(n->valuestring, "${env:") != NULL) {
    char *v = expand_env(n->valuestring, "field \"payload.json\"", err, errlen);

    if (v == NULL)
      return -1;
    cJSON_SetValuestring(n, v);
    sl_free(v);
    return 0;
  }
  for (cJSON *c = n ? n->child : NULL; c != NULL; c = c->next) {
    if (expand_tree(c, err, errlen) != 0)
      return -1;
  }
  return 0;
}

/* 1 when host matches an --http-allow pattern (exact, or *.suffix). */
static int host_allowed(const sl_http *h, const char *host) {
  if (h->allow == NULL)
    return 1;
  for (size_t i = 0; h->allow[i] != NULL; i++) {
    const char *a = h->allow[i];

    if (strcasecmp(a, host) == 0)
      return 1;
    if (a[0] == '*' && a[1] == '.') {
      size_t hl = strlen(host);
      size_t sl = strlen(a + 1);

      if (hl > sl && strcasecmp(host + hl - sl, a + 1) == 0)
        return 1;
    }
  }
  return 0;
}

static void http_start(sl_job_t *j, void *ud) {
  sl_http *h = ud;
  size_t plen;
  const char *ptext = sl_job_payload(j, &plen);
  cJSON *pl = cJSON_ParseWithLength(ptext, plen);
  const cJSON *url = cJSON_GetObjectItemCaseSensitive(pl, "url");
  const cJSON *method = cJSON_GetObjectItemCaseSensitive(pl, "method");
  const cJSON *headers = cJSON_GetObjectItemCaseSensitive(pl, "headers");
  const cJSON *body = cJSON_GetObjectItemCaseSensitive(pl, "body");
  cJSON *json = cJSON_GetObjectItemCaseSensitive(pl, "json");
  const cJSON *keep = cJSON_GetObjectItemCaseSensitive(pl, "keep_headers");
  const cJSON *ikey = cJSON_GetObjectItemCaseSensitive(pl, "idempotency_key");
  char err[512];
  char line[8192];
  int has_ikey = 0;
  int has_ctype = 0;
  CURLU *u = NULL;
  char *host = NULL;
  req *r = NULL;

  if (h->closing) {
    sl_job_fail(j, "http: the worker is stopping");
    goto out;
  }
  if (!cJSON_IsObject(pl) || !cJSON_IsString(url)) {
    sl_job_fail_final(j, "field \"payload.url\": an http item needs a URL string");
    goto out;
  }
  u = curl_url();
  if (u == NULL || curl_url_set(u, CURLUPART_URL, url->valuestring, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
    sl_job_fail_final(j, "field \"payload.url\": cannot parse \"%.200s\"", url->valuestring);
    goto out;
  }
  if (!host_allowed(h, host)) {
    sl_job_fail_final(j, "field \"payload.url\": host %s is not allowed on worker %s (--http-allow)", host,
                      sl_worker_id(h->w));
    goto out;
  }
  r = sl_calloc(1, sizeof(*r));
  if (r == NULL || (r->keep = cJSON_CreateObject()) == NULL) {
    sl_job_fail(j, "http: out of memory");
    goto out;
  }
  r->h = h;
  sl__buf_init(&r->resp, h->max_body + 1);
  if (cJSON_IsArray(keep)) {
    int n = cJSON_GetArraySize(keep);
    int k = 0;

    r->keep_names = sl_calloc((size_t)n + 1, sizeof(char *));
    for (int i = 0; r->keep_names != NULL && i < n; i++) {
      const cJSON *e = cJSON_GetArrayItem(keep, i);

      if (cJSON_IsString(e)) {
        char *nm = sl_strdup(e->valuestring);

        for (char *c = nm; c != NULL && *c; c++)
          *c = (char)tolower((unsigned char)*c);
        if (nm != NULL)
          r->keep_names[k++] = nm;
      }
    }
  }
  /* Headers: ${env:...} resolved here, at the worker. */
  for (const cJSON *e = cJSON_IsObject(headers) ? headers->child : NULL; e != NULL; e = e->next) {
    char where[160];
    char *v;
    struct curl_slist *nl;

    if (!cJSON_IsString(e)) {
      sl_job_fail_final(j, "field \"payload.headers.%.60s\": expected a string", e->string);
      goto fail;
    }
    snprintf(where, sizeof(where), "field \"payload.headers.%.60s\"", e->string);
    v = expand_env(e->valuestring, where, err, sizeof(err));
    if (v == NULL) {
      sl_job_fail_final(j, "%s", err);
      goto fail;
    }
    if (strcasecmp(e->string, "Idempotency-Key") == 0)
      has_ikey = 1;
    if (strcasecmp(e->string, "Content-Type") == 0)
      has_ctype = 1;
    snprintf(line, sizeof(line), "%s: %s", e->string, v);
    sl_free(v);
    nl = curl_slist_append(r->hdrs, line);
    if (nl == NULL) {
      sl_job_fail(j, "http: out of memory");
      goto fail;
    }
    r->hdrs = nl;
  }
  if (!has_ikey) {
    /* The same for every attempt of the item, different between items. */
    if (cJSON_IsString(ikey))
      snprintf(line, sizeof(line), "Idempotency-Key: %.4000s", ikey->valuestring);
    else
      snprintf(line, sizeof(line), "Idempotency-Key: sluice-%s-%s", sl_job_batch(j), j->idx);
    r->hdrs = curl_slist_append(r->hdrs, line);
  }
  if (json != NULL) {
    if (expand_tree(json, err, sizeof(err)) != 0) {
      sl_job_fail_final(j, "%s", err);
      goto fail;
    }
    {
      char *t = cJSON_PrintUnformatted(json);

      r->body = t ? sl_strdup(t) : NULL;
      cJSON_free(t);
    }
    if (!has_ctype)
      r->hdrs = curl_slist_append(r->hdrs, "Content-Type: application/json");
  } else if (cJSON_IsString(body)) {
    r->body = expand_env(body->valuestring, "field \"payload.body\"", err, sizeof(err));
    if (r->body == NULL) {
      sl_job_fail_final(j, "%s", err);
      goto fail;
    }
    if (!has_ctype)
      r->hdrs = curl_slist_append(r->hdrs, "Content-Type: text/plain; charset=utf-8");
  }
  r->easy = curl_easy_init();
  if (r->easy == NULL) {
    sl_job_fail(j, "http: cannot create a transfer");
    goto fail;
  }
  curl_easy_setopt(r->easy, CURLOPT_URL, url->valuestring);
  curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
  curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->hdrs);
  curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)sl_job_timeout_ms(j) + 1000); /* backstop */
  curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(r->easy, CURLOPT_HTTP_VERSION, h->version);
  curl_easy_setopt(r->easy, CURLOPT_PIPEWAIT, 1L);
  curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(r->easy, CURLOPT_ACCEPT_ENCODING, "");
  if (r->body != NULL) {
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
  }
  if (cJSON_IsString(method))
    curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, method->valuestring);
  else if (r->body != NULL)
    curl_easy_setopt(r->easy, CURLOPT_POST, 1L);
  if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    sl_job_fail(j, "http: cannot start the transfer");
    goto fail;
  }
  h->running++;
  r->job = j;
  sl_job_on_cancel(j, on_cancel, r);
  r = NULL;
  goto out;
fail:
  req_free(r);
out:
  curl_free(host);
  curl_url_cleanup(u);
  cJSON_Delete(pl);
}

/* ---- Setup ---- */

int sl__http_new(sl_worker_t *w, const char *allow, size_t max_body, int http_version, sl_http **out) {
  static int global;
  sl_http *h;

  if (!global) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return SL_EIO;
    global = 1;
  }
  h = sl_calloc(1, sizeof(*h));
  if (h == NULL)
    return SL_ENOMEM;
  h->w = w;
  h->max_body = max_body > 0 ? max_body : 1024 * 1024;
  h->version = http_version == 1 ? CURL_HTTP_VERSION_1_1 : CURL_HTTP_VERSION_2TLS;
  if (allow != NULL && *allow != '\0') {
    size_t n = 1;
    size_t k = 0;
    const char *p = allow;

    for (const char *c = allow; *c; c++)
      n += *c == ',';
    h->allow = sl_calloc(n + 1, sizeof(char *));
    if (h->allow == NULL) {
      sl_free(h);
      return SL_ENOMEM;
    }
    while (*p) {
      size_t len = strcspn(p, ",");

      if (len > 0)
        h->allow[k++] = sl_strndup(p, len);
      p += len + (p[len] == ',');
    }
  }
  *out = h;
  return 0;
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

  if (h->allow != NULL) {
    for (size_t i = 0; h->allow[i] != NULL; i++)
      sl_free(h->allow[i]);
    sl_free(h->allow);
  }
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
   * reaches a host the worker's operator did not allow. */
  {
    CURLU *u = curl_url();
    char *host = NULL;
    int ok = u != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host_allowed(h, host);

    curl_free(host);
    curl_url_cleanup(u);
    if (!ok)
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
