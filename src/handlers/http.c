/*
 * The `http` item handler: one HTTP request per attempt, on the worker's
 * HTTP client (httpc.h), which carries the policy every request follows
 * (origins, versions, sockets, redirects).
 *
 * The request is built from the item's payload, checked again here by the
 * same rules as at submit (httpreq.h): method, url, headers, body or json,
 * keep_headers. Nothing a producer wrote is pasted into the request: header
 * lines are built from checked names and values, so no item can end a line,
 * start a second request on a reused connection, or change the framing.
 * ${env:NAME} references resolve only to secrets the operator granted
 * (secret.h), and only for the origins they were granted for; values are
 * never logged (errors name the secret, not its value). Every request
 * carries an Idempotency-Key that is the same for every attempt of an item.
 *
 * Outcomes: 2xx succeeds with {"status","headers","body","truncated","bytes"}
 * (the body capped at --http-max-body, stored as JSON when it parses, cut
 * further when the results line would not fit); 429, 5xx and transport
 * errors are retryable and 429/503 honour Retry-After; other statuses fail
 * at once; a secret that is not granted refuses the item; a socket that
 * could not be opened for want of descriptors (EMFILE, ENFILE) gives the
 * item back (sl_job_give_back), counting no attempt. payload.metrics are
 * read from any JSON answer, a failed one too (read_metrics). Errors keep the
 * status and a body excerpt, or curl's own message. Each attempt logs one
 * line (sl_job_log): method, URL without its query, status, time and size.
 *
 * In mock mode (--http-mock, httpmock.h) the payload is checked the same
 * way and the method against --http-methods, but no request is built: no
 * secret is resolved, the allow-list is not asked and nothing is sent. The
 * canned answer goes through the same response path (kept headers, the
 * body cap, metrics, the outcome by status), and a 2xx result says
 * "mock":true. An item no canned response matches is refused.
 *
 * Only the public job contract (sluice/job.h) and the handler interface are
 * used: this file knows nothing of the worker's internals.
 */
#include "handlers/http.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "allow.h"
#include "buf.h"
#include "fdlimit.h"
#include "handlers/httpmock.h"
#include "httpc.h"
#include "httpreq.h"
#include "json.h"
#include "secret.h"

#define EXCERPT_MAX 300        /* body excerpt in an error, bytes */
#define RETRY_AFTER_MAX_S 300  /* a Retry-After is capped at this, seconds */

typedef struct sl_http {
  sl_httpc *httpc;         /* the worker's HTTP client (borrowed) */
  sl_secrets *secrets;     /* granted secrets (--secret), or NULL */
  char *methods;           /* ",PROPFIND,REPORT,": --http-methods, or NULL */
  size_t max_body;         /* --http-max-body, bytes */
  int closing;             /* the worker closes: no new requests */
  sl_httpmock *mock;       /* --http-mock: canned answers instead of requests, or NULL */
} sl_http;

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
  size_t nmetrics;           /* payload.metrics: names and JSON paths (owned, from the parsed payload) */
  char *metric[SL_HTTP_METRICS_MAX];
  char *path[SL_HTTP_METRICS_MAX];
  char errbuf[CURL_ERROR_SIZE]; /* curl's message */
  sl_httpmock_run *mock;     /* a canned answer being waited for (--http-mock), or NULL */
  char *mocked;              /* answered from --http-mock: "METHOD URL" (no query) for the log; else NULL */
} req;

/* ---- Requests ---- */

static void req_free(req *r) {
  if (r->easy != NULL) {
    sl__httpc_remove(r->h->httpc, r->easy); /* a transfer still running */
    curl_easy_cleanup(r->easy);
  }
  if (r->mock != NULL)
    sl__httpmock_cancel(r->mock); /* an answer still to come */
  sl_free(r->mocked);
  curl_slist_free_all(r->hdrs);
  sl_free(r->body);
  sl__buf_free(&r->resp);
  cJSON_Delete(r->keep);
  for (size_t i = 0; i < r->nmetrics; i++) {
    sl_free(r->metric[i]);
    sl_free(r->path[i]);
  }
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

/* Keeps the response header p[0..nl): v[0..vl) when keep_headers names it. */
static void keep_header(req *r, const char *p, size_t nl, const char *v, size_t vl) {
  char name[SL_HTTP_NAME_MAX + 1];

  if (r->keep_names == NULL || nl == 0 || nl >= sizeof(name))
    return;
  for (size_t i = 0; i < nl; i++)
    name[i] = (char)tolower((unsigned char)p[i]);
  name[nl] = '\0';
  for (size_t i = 0; r->keep_names[i] != NULL; i++) {
    if (strcmp(r->keep_names[i], name) == 0) {
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
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  size_t len = size * n;
  const char *colon = memchr(p, ':', len);

  if (colon != NULL)
    keep_header(ud, p, (size_t)(colon - p), colon + 1, len - (size_t)(colon - p) - 1);
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

/* The outcome of a whole answer: its status, the body and headers kept in
 * r, and a Retry-After of ra seconds (0: none). A real response and a
 * canned one (--http-mock) both end here. */
/* payload.metrics: the numbers the JSON response holds at their paths
 * become the attempt's metrics, whatever its status (an API may charge for
 * an answer that fails the item: a failed attempt's metrics count in the
 * batch's sums over all attempts). A path with no number there is logged
 * for a 2xx answer. */
static void read_metrics(req *r, sl_job_t *j, int ok, int body_json) {
  cJSON *doc;

  if (r->nmetrics == 0)
    return;
  doc = body_json ? cJSON_ParseWithLength(r->resp.p, r->resp.len) : NULL;
  for (size_t i = 0; i < r->nmetrics; i++) {
    double v;

    if (doc != NULL && sl__json_path_number(doc, r->path[i], &v) == 0)
      sl_job_metric(j, r->metric[i], v);
    else if (ok)
      sl_job_log(j, "metric %s: no number at %s in the response", r->metric[i], r->path[i]);
  }
  cJSON_Delete(doc);
}

static void judge(req *r, sl_job_t *j, long status, long long ra) {
  char ex[EXCERPT_MAX + 8];
  char err[64];
  int body_json = r->resp.len > 0 && !r->truncated &&
                  sl__json_validate(r->resp.p, r->resp.len, 256, NULL, err, sizeof(err)) == 0;

  read_metrics(r, j, status >= 200 && status < 300, body_json);
  if (status >= 200 && status < 300) {
    sl_buf out;
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
        rc = sl__buf_printf(&out, ",\"truncated\":%s,\"bytes\":%zu%s}", truncated ? "true" : "false", r->bytes,
                            r->mocked ? ",\"mock\":true" : "");
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
    if ((status == 429 || status == 503) && ra > 0) {
      if (ra > RETRY_AFTER_MAX_S)
        ra = RETRY_AFTER_MAX_S;
      /* plus up to 10% jitter, so a fleet does not come back at once */
      sl_job_retry_after(j, (int64_t)ra * 1000 + rand() % ((int)ra * 100 + 1));
      sl_job_fail(j, "HTTP %ld (Retry-After %lld s): %s", status, ra, ex);
    } else if (status == 429 || status >= 500) {
      sl_job_fail(j, "HTTP %ld: %s", status, ex);
    } else {
      sl_job_fail_final(j, "HTTP %ld: %s", status, ex);
    }
  }
}

/* A transfer ended (httpc has removed it): the outcome of the job. */
static void finish(void *ud, CURL *easy, CURLcode code, int sock_errno) {
  req *r = ud;
  sl_job_t *j = r->job;
  long status = 0;
  curl_off_t ra = 0;

  (void)easy;
  r->job = NULL;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  {
    /* one line for the attempt's log: method, URL without its query, outcome, time, size */
    char *url = NULL;
    char *method = NULL;
    double total = 0;

    curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
    curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_METHOD, &method);
    curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &total);
    if (code == CURLE_OK)
      sl_job_log(j, "%s %.*s -> %ld in %.0f ms, %zu bytes", method ? method : "?",
                 url ? (int)strcspn(url, "?#") : 1, url ? url : "?", status, total * 1000.0, r->bytes);
    else
      sl_job_log(j, "%s %.*s -> %s after %.0f ms", method ? method : "?", url ? (int)strcspn(url, "?#") : 1,
                 url ? url : "?", curl_easy_strerror(code), total * 1000.0);
  }
  if (code != CURLE_OK && sl__fd_exhausted(sock_errno)) {
    /* the worker's shortage, not the item's: given back, no attempt counted */
    sl_job_give_back(j, "http: %s opening a connection (curl: %s)", sl__fd_strerror(sock_errno),
                     curl_easy_strerror(code));
  } else if (code != CURLE_OK) {
    sl_job_fail(j, "curl: %s%s%s", curl_easy_strerror(code), r->errbuf[0] ? ": " : "", r->errbuf);
  } else {
    if ((status == 429 || status == 503) && curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &ra) != CURLE_OK)
      ra = 0;
    judge(r, j, status, (long long)ra);
  }
  curl_easy_cleanup(r->easy); /* httpc has removed it already */
  r->easy = NULL;
  req_free(r);
}

/* The worker gave up the attempt (timeout, takeover, stop, abort). */
static void on_cancel(sl_job_t *j, void *ud) {
  req *r = ud;

  r->job = NULL;
  req_free(r);
  sl_job_fail(j, "http: cancelled");
}

/* ---- Building a request ---- */

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
 * given back (out of memory: the worker's shortage, not the item's). */
static void give_up(sl_job_t *j, int refused, int rc, const char *msg) {
  if (msg == NULL || refused < 0)
    rc = SL_ENOMEM; /* sl__secrets_expand ran out of memory */
  if (refused > 0)
    sl_job_refuse(j, "%s", msg);
  else if (rc == SL_ENOMEM)
    sl_job_give_back(j, "http: out of memory");
  else
    sl_job_fail_final(j, "%s", msg);
}

/* A new request for the checked payload q: its keep_headers names and
 * metrics move from q to the request. NULL when out of memory. */
static req *req_new(sl_http *h, sl_httpreq *q) {
  req *r = sl_calloc(1, sizeof(*r));

  if (r == NULL)
    return NULL;
  r->h = h;
  sl__buf_init(&r->resp, h->max_body + 1);
  r->keep = cJSON_CreateObject();
  if (q->nkeep > 0)
    r->keep_names = sl_calloc(q->nkeep + 1, sizeof(char *));
  if (r->keep == NULL || (q->nkeep > 0 && r->keep_names == NULL)) {
    req_free(r);
    return NULL;
  }
  for (size_t i = 0; i < q->nkeep; i++) {
    r->keep_names[i] = q->keep[i];
    q->keep[i] = NULL;
  }
  for (size_t i = 0; i < q->nmetrics; i++) {
    r->metric[i] = q->metric[i];
    r->path[i] = q->path[i];
  }
  r->nmetrics = q->nmetrics;
  q->nmetrics = 0;
  return r;
}

/* ---- Mock mode (--http-mock) ---- */

/* The canned answer came (httpmock.h): the same steps as a real response. */
static void mock_done(void *ud, const sl_httpmock_answer *a) {
  req *r = ud;
  sl_job_t *j = r->job;

  r->job = NULL;
  r->mock = NULL; /* freed by httpmock when this returns */
  for (size_t i = 0; i < a->nheaders; i++)
    keep_header(r, a->name[i], strlen(a->name[i]), a->value[i], strlen(a->value[i]));
  if (a->timed_out) {
    sl_job_log(j, "%s -> mock: timed out after %lld ms", r->mocked, (long long)a->latency_ms);
    sl_job_fail(j, "curl: %s: no mock answer within the payload's timeout_ms of %lld ms",
                curl_easy_strerror(CURLE_OPERATION_TIMEDOUT), (long long)a->latency_ms);
  } else if (a->body_len > 0 && on_body((char *)a->body, 1, a->body_len, r) != a->body_len) {
    sl_job_give_back(j, "http: out of memory");
  } else {
    sl_job_log(j, "%s -> %d in %lld ms, %zu bytes (mock%s)", r->mocked, a->status, (long long)a->latency_ms,
               r->bytes, a->simulated ? ": fail_rate" : "");
    judge(r, j, a->status, a->retry_after_s);
  }
  req_free(r);
}

/* Answers a checked payload from the mock file: after its latency, or
 * refused when no canned response matches. */
static void mock_start(sl_http *h, sl_job_t *j, sl_httpreq *q) {
  const char *method = q->method[0] != '\0' ? q->method : q->body != NULL || q->json != NULL ? "POST" : "GET";
  size_t ul = strcspn(q->url, "?#");
  req *r = req_new(h, q);
  char err[1024];
  int rc;

  if (r != NULL)
    r->mocked = sl_malloc(strlen(method) + ul + 2);
  if (r == NULL || r->mocked == NULL) {
    if (r != NULL)
      req_free(r);
    give_up(j, 0, SL_ENOMEM, NULL);
    return;
  }
  snprintf(r->mocked, strlen(method) + ul + 2, "%s %.*s", method, (int)ul, q->url);
  rc = sl__httpmock_start(h->mock, sl_job_loop(j), method, q->url, q->timeout_ms, mock_done, r, &r->mock, err,
                          sizeof(err));
  if (rc != 0) {
    req_free(r);
    give_up(j, rc == SL_ENOTFOUND, rc, err); /* no match: the worker's file lacks it, as a grant would */
    return;
  }
  r->job = j;
  sl_job_on_cancel(j, on_cancel, r);
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
               "OPTIONS; the operator may add others with --http-methods)", q.method, sl_job_worker_id(j));
      give_up(j, 0, SL_EINVAL, err);
      goto out;
    }
  }
  if (strcmp(q.method, "HEAD") == 0 && (q.body != NULL || q.json != NULL)) {
    give_up(j, 0, SL_EINVAL, "field \"payload.method\": a HEAD request has no body");
    goto out;
  }
  if (h->mock != NULL) {
    mock_start(h, j, &q); /* no allow-list, no secrets, no request */
    goto out;
  }
  if (!sl__httpc_allowed(h->httpc, &q.origin)) {
    char o[SL_HOST_MAX + 32];

    sl__origin_describe(&q.origin, o, sizeof(o));
    snprintf(err, sizeof(err), "field \"payload.url\": %s is not allowed on worker %s (--http-allow)", o,
             sl_job_worker_id(j));
    give_up(j, 0, SL_EINVAL, err);
    goto out;
  }
  r = req_new(h, &q);
  if (r == NULL) {
    give_up(j, 0, SL_ENOMEM, NULL);
    goto out;
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

    snprintf(dflt, sizeof(dflt), "sluice-%s-%lld", sl_job_batch(j), (long long)sl_job_index(j));
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
  sl__httpc_prepare(h->httpc, r->easy, &q.origin);
  curl_easy_setopt(r->easy, CURLOPT_URL, q.url);
  curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->hdrs);
  curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
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
  if (sl__httpc_add(h->httpc, r->easy, &q.origin, finish, r) != 0) {
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    sl_job_fail(j, "http: cannot start the transfer");
    goto out;
  }
  r->job = j;
  sl_job_on_cancel(j, on_cancel, r);
  r = NULL;
out:
  if (r != NULL)
    req_free(r);
  sl__httpreq_free(&q);
}

/* ---- The handler ---- */

static void http_free(void *state) {
  sl_http *h = state;

  if (h == NULL)
    return;
  sl__secrets_free(h->secrets);
  sl__httpmock_free(h->mock);
  sl_free(h->methods);
  sl_free(h);
}

static int http_open(const sl_handler_env *env, void **state, char *err, size_t errlen) {
  const char *methods = env->opts->http_methods;
  sl_http *h = sl_calloc(1, sizeof(*h));
  int rc;

  if (h == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  h->httpc = env->httpc;
  h->max_body = env->opts->http_max_body > 0 ? env->opts->http_max_body : 1024 * 1024;
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
  if (env->opts->http_mock != NULL && env->opts->http_mock[0] != '\0') {
    rc = sl__httpmock_load(env->opts->http_mock, &h->mock, err, errlen);
    if (rc != 0)
      goto fail;
  }
  rc = sl_worker_register(env->worker, "http", http_start, h);
  if (rc != 0) {
    snprintf(err, errlen, "cannot register the http type: %s", sl_strerror(rc));
    goto fail;
  }
  *state = h;
  return 0;
fail:
  http_free(h);
  return rc;
}

static void http_close(void *state) {
  ((sl_http *)state)->closing = 1;
}

int sl__http_grant(void *state, const char *spec, char *err, size_t errlen) {
  return sl__secrets_grant(&((sl_http *)state)->secrets, spec, err, errlen);
}

const sl_handler_vt sl__handler_http = {"http", http_open, NULL, http_close, http_free, NULL};
