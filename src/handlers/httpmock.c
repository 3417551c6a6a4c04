/*
 * Mock mode of the `http` handler: `sluice worker --http-mock FILE` answers
 * http items from canned responses instead of the network, so the real item
 * files of a project run in development, without API keys, and their results
 * have the shape real ones have. The http handler (http.c) still checks each
 * payload as it does for real requests, then asks this file for an answer
 * and passes it through its own response path (kept headers, the body cap,
 * metrics, the outcome by status); nothing is sent, no secret is resolved and
 * the allow-list is not consulted.
 *
 * The file is one JSON object, read once at sl_worker_new with the strict
 * scanner (a key given twice is refused) and checked whole before the worker
 * connects anywhere; a bad file names the entry and the field:
 *
 *   {"responses":[
 *     {"method":"POST", "url":"https://api.example.com/v1/chat*",
 *      "status":200, "headers":{"content-type":"application/json"},
 *      "body":{"id":"m-1","usage":{"cost":0.25}},
 *      "latency_ms":[50,200], "fail_rate":0.1, "fail_status":503},
 *     {"url":"*", "status":404, "body":"no such thing"}]}
 *
 *   method       a token, compared exactly, or "*" (the default): any method
 *   url          required: a pattern matched against the item's URL, where
 *                `*` is any run of characters (`/` and `?` included) and
 *                every other character stands for itself; it starts with
 *                http://, https:// or `*`. A pattern without `?` is matched
 *                against the URL without its query and fragment
 *   status       200 to 599 (default 200)
 *   headers      response headers, an object of at most 64 names and string
 *                values (the item's keep_headers picks from them); a
 *                Retry-After is whole seconds
 *   body         a string (its text) or any other JSON value (its JSON text,
 *                byte for byte); default ""
 *   latency_ms   0 to 600000, or [MIN, MAX] drawn uniformly per attempt
 *                (default 0); a libuv timer on the worker's loop
 *   fail_rate    0 to 1 (default 0): that share of attempts gets fail_status
 *                (400 to 599, default 503) with fail_body (a string, default
 *                "simulated failure (--http-mock, fail_rate R)") instead
 *
 * The first entry that matches answers. An unknown field, a wrong type or a
 * value out of range refuses the whole file. Expected sizes: tens of entries;
 * at most SL_HTTPMOCK_MAX, in a file of at most SL_HTTPMOCK_FILE_MAX bytes,
 * held in memory for the worker's life and never changed.
 */
#include "handlers/httpmock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"
#include "httpreq.h"
#include "id.h"
#include "json.h"

#define TOP_MEMBERS 4    /* fields of the file's object (1 is known) */
#define ENTRY_MEMBERS 16 /* fields of one response (9 are known) */
#define SHOWN_MAX 40     /* bytes of a bad value quoted in a message */

typedef struct entry {
  char *method;          /* a token, or NULL: any method */
  char *url;             /* the URL pattern */
  int whole;             /* 1: the pattern holds '?': matched against the whole URL */
  int status;            /* 200-599 */
  size_t nheaders;       /* response headers */
  char **name;           /* their names */
  char **value;          /* their values */
  char *body;            /* the body, or NULL when empty */
  size_t body_len;       /* its length, bytes */
  int64_t retry_after_s; /* the Retry-After header, seconds; 0: none */
  int64_t lat_min;       /* latency, ms */
  int64_t lat_max;       /* latency, ms (>= lat_min) */
  double fail_rate;      /* 0..1 */
  int fail_status;       /* 400-599 */
  char *fail_body;       /* the body of a simulated failure */
  size_t fail_body_len;  /* its length, bytes */
} entry;

struct sl_httpmock {
  char *path;   /* the file, as given (messages) */
  size_t n;     /* entries */
  entry *e;     /* the entries, in the file's order */
};

struct sl_httpmock_run {
  uv_timer_t timer;     /* first: freed through the handle in close_cb */
  sl_httpmock_cb cb;    /* called once, after the latency */
  void *ud;             /* passed to cb */
  sl_httpmock_answer a; /* the answer (borrows from the file's entry) */
};

/* ---- Reading the file ---- */

/* Writes "WHERE.FIELD: message" into err; returns SL_EINVAL. */
static int bad(char *err, size_t errlen, const char *where, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int bad(char *err, size_t errlen, const char *where, const char *field, const char *fmt, ...) {
  va_list ap;
  int n = snprintf(err, errlen, "%s%s%s: ", where, field[0] ? "." : "", field);

  if (n >= 0 && (size_t)n < errlen) {
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return SL_EINVAL;
}

/* The raw text of a value for a message: at most SHOWN_MAX bytes, control
 * bytes (line ends of an object) as spaces. */
static const char *shown(const sl_json_member *m, char *out, size_t len) {
  size_t n = m->vallen < SHOWN_MAX ? m->vallen : SHOWN_MAX;
  size_t k = 0;

  for (size_t i = 0; i < n && k + 4 < len; i++)
    out[k++] = (unsigned char)m->val[i] < 0x20 ? ' ' : m->val[i];
  if (m->vallen > n && k + 4 < len) {
    memcpy(out + k, "...", 3);
    k += 3;
  }
  out[k] = '\0';
  return out;
}

static int key_is(const sl_json_member *m, const char *k) {
  return m->keylen == strlen(k) && memcmp(m->key, k, m->keylen) == 0;
}

/* Decodes a string value into a new C string of *len bytes (it may hold
 * NUL). SL_EINVAL when it is no string, SL_ENOMEM. */
static int text_of(const sl_json_member *m, char **out, size_t *len) {
  sl_buf b;
  int rc = m->val[0] == '"' ? 0 : SL_EINVAL;

  sl__buf_init(&b, m->vallen + 1);
  if (rc == 0)
    rc = sl__json_unescape(m->val, m->vallen, &b);
  if (rc == 0)
    rc = sl__buf_putc(&b, '\0');
  if (rc != 0) {
    sl__buf_free(&b);
    return rc;
  }
  *len = b.len - 1;
  *out = sl__buf_take(&b);
  return 0;
}

/* An integer in [lo, hi]; SL_EINVAL otherwise. */
static int int_of(const sl_json_member *m, int64_t lo, int64_t hi, int64_t *out) {
  if (m->val[0] != '-' && (m->val[0] < '0' || m->val[0] > '9'))
    return SL_EINVAL;
  return sl__json_int(m->val, m->vallen, lo, hi, out) == 0 ? 0 : SL_EINVAL;
}

static int parse_headers(const sl_json_member *f, entry *e, const char *where, char *err, size_t errlen) {
  sl_json_member h[SL_HTTP_HEADERS_MAX];
  char s[SHOWN_MAX + 8];
  size_t n = 0;
  int rc = f->val[0] == '{' ? sl__json_members(f->val, f->vallen, h, SL_HTTP_HEADERS_MAX, &n) : SL_EINVAL;

  if (rc == SL_ETOOBIG)
    return bad(err, errlen, where, "headers", "more than %d headers", SL_HTTP_HEADERS_MAX);
  if (rc != 0)
    return bad(err, errlen, where, "headers", "expected an object of header names and string values, got %s",
               shown(f, s, sizeof(s)));
  e->name = sl_calloc(n + 1, sizeof(char *));
  e->value = sl_calloc(n + 1, sizeof(char *));
  if (e->name == NULL || e->value == NULL)
    return SL_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    sl_json_member key = {NULL, 0, h[i].key - 1, h[i].keylen + 2};
    char field[SL_HTTP_NAME_MAX + 16];
    size_t nl = 0;
    size_t vl = 0;

    rc = text_of(&key, &e->name[i], &nl);
    if (rc == SL_ENOMEM)
      return rc;
    e->nheaders = i + 1;
    snprintf(field, sizeof(field), "headers.%.*s", (int)(h[i].keylen < SHOWN_MAX ? h[i].keylen : SHOWN_MAX),
             h[i].key);
    if (!sl__http_token(e->name[i], nl) || nl > SL_HTTP_NAME_MAX)
      return bad(err, errlen, where, field, "a header name is a token of letters, digits and !#$%%&'*+-.^_`|~ "
                                            "(at most %d bytes)", SL_HTTP_NAME_MAX);
    for (size_t k = 0; k < i; k++) {
      if (strcasecmp(e->name[k], e->name[i]) == 0)
        return bad(err, errlen, where, field, "given twice (header names compare without case)");
    }
    rc = text_of(&h[i], &e->value[i], &vl);
    if (rc == SL_ENOMEM)
      return rc;
    if (rc != 0)
      return bad(err, errlen, where, field, "expected a string value, got %s", shown(&h[i], s, sizeof(s)));
    if (sl__http_value_check(e->value[i], vl, "", s, sizeof(s)) != 0)
      return bad(err, errlen, where, field, "not a header value (at most %d bytes, no line break or other control "
                                            "byte but tab)", SL_HTTP_VALUE_MAX);
    if (strcasecmp(e->name[i], "Retry-After") == 0) {
      /* a date would be in the past by the time the file is used */
      if (vl > 0 && vl <= 6 && strspn(e->value[i], "0123456789") == vl)
        e->retry_after_s = strtoll(e->value[i], NULL, 10);
      if (e->retry_after_s == 0)
        return bad(err, errlen, where, field, "whole seconds from 1 to 999999 in a mock file, e.g. \"2\", got "
                                              "\"%.*s\"", SHOWN_MAX, e->value[i]);
    }
  }
  return 0;
}

static int parse_latency(const sl_json_member *f, entry *e, const char *where, char *err, size_t errlen) {
  sl_json_member r[3];
  size_t n = 0;
  char s[SHOWN_MAX + 8];

  if (int_of(f, 0, SL_HTTPMOCK_LATENCY_MAX, &e->lat_min) == 0) {
    e->lat_max = e->lat_min;
    return 0;
  }
  if (f->val[0] == '[' && sl__json_elements(f->val, f->vallen, r, 3, &n) == 0 && n == 2 &&
      int_of(&r[0], 0, SL_HTTPMOCK_LATENCY_MAX, &e->lat_min) == 0 &&
      int_of(&r[1], 0, SL_HTTPMOCK_LATENCY_MAX, &e->lat_max) == 0 && e->lat_min <= e->lat_max)
    return 0;
  return bad(err, errlen, where, "latency_ms", "expected milliseconds from 0 to %d, or [MIN, MAX] with MIN <= MAX, "
             "got %s", SL_HTTPMOCK_LATENCY_MAX, shown(f, s, sizeof(s)));
}

/* One element of "responses" into *e (whose memory the caller frees). */
static int parse_entry(const sl_json_member *el, entry *e, const char *where, char *err, size_t errlen) {
  static const char known[] = "method, url, status, headers, body, latency_ms, fail_rate, fail_status, fail_body";
  sl_json_member f[ENTRY_MEMBERS];
  char s[SHOWN_MAX + 8];
  size_t n = 0;
  size_t len = 0;
  int64_t v = 0;
  int rc = el->val[0] == '{' ? sl__json_members(el->val, el->vallen, f, ENTRY_MEMBERS, &n) : SL_EINVAL;

  if (rc == SL_ETOOBIG)
    return bad(err, errlen, where, "", "more than %d fields (known: %s)", ENTRY_MEMBERS, known);
  if (rc != 0)
    return bad(err, errlen, where, "", "expected an object like {\"method\":\"POST\",\"url\":\"https://api.example.com/*\","
               "\"status\":200,\"body\":{...}}, got %s", shown(el, s, sizeof(s)));
  e->status = 200;
  e->fail_status = 503;
  for (size_t i = 0; i < n && rc == 0; i++) {
    const sl_json_member *m = &f[i];

    if (key_is(m, "method")) {
      rc = text_of(m, &e->method, &len);
      if (rc == 0 && strcmp(e->method, "*") == 0) {
        sl_free(e->method);
        e->method = NULL;
      } else if (rc != SL_ENOMEM && (rc != 0 || !sl__http_token(e->method, len) || len > SL_HTTP_METHOD_MAX)) {
        rc = bad(err, errlen, where, "method", "expected a method (a token of at most %d bytes, compared exactly) "
                 "or \"*\", got %s", SL_HTTP_METHOD_MAX, shown(m, s, sizeof(s)));
      }
    } else if (key_is(m, "url")) {
      rc = text_of(m, &e->url, &len);
      if (rc != SL_ENOMEM && (rc != 0 || len == 0 || len > SL_HTTP_URL_MAX))
        rc = bad(err, errlen, where, "url", "expected a URL pattern of 1 to %d bytes, got %s", SL_HTTP_URL_MAX,
                 shown(m, s, sizeof(s)));
      for (size_t k = 0; rc == 0 && k < len; k++) {
        if ((unsigned char)e->url[k] <= 0x20 || (unsigned char)e->url[k] >= 0x7f)
          rc = bad(err, errlen, where, "url", "byte %zu is not printable ASCII (a URL percent-encodes the rest)", k);
      }
      if (rc == 0 && strncmp(e->url, "http://", 7) != 0 && strncmp(e->url, "https://", 8) != 0 && e->url[0] != '*')
        rc = bad(err, errlen, where, "url", "\"%.*s\" starts with neither http://, https:// nor *: it is matched "
                 "against the whole URL, so it would match nothing", SHOWN_MAX, e->url);
      e->whole = rc == 0 && strchr(e->url, '?') != NULL;
    } else if (key_is(m, "status")) {
      if (int_of(m, 200, 599, &v) != 0)
        rc = bad(err, errlen, where, "status", "expected an integer from 200 to 599, got %s", shown(m, s, sizeof(s)));
      e->status = (int)v;
    } else if (key_is(m, "headers")) {
      rc = parse_headers(m, e, where, err, errlen);
    } else if (key_is(m, "body")) {
      if (m->val[0] == '"') {
        rc = text_of(m, &e->body, &e->body_len);
      } else {
        e->body = sl_strndup(m->val, m->vallen); /* its JSON text, byte for byte */
        e->body_len = m->vallen;
        rc = e->body == NULL ? SL_ENOMEM : 0;
      }
    } else if (key_is(m, "latency_ms")) {
      rc = parse_latency(m, e, where, err, errlen);
    } else if (key_is(m, "fail_rate")) {
      if ((m->val[0] != '-' && (m->val[0] < '0' || m->val[0] > '9')) ||
          sl__json_double(m->val, m->vallen, &e->fail_rate) != 0 || !(e->fail_rate >= 0 && e->fail_rate <= 1))
        rc = bad(err, errlen, where, "fail_rate", "expected a number from 0 to 1, got %s", shown(m, s, sizeof(s)));
    } else if (key_is(m, "fail_status")) {
      if (int_of(m, 400, 599, &v) != 0)
        rc = bad(err, errlen, where, "fail_status", "expected an integer from 400 to 599, got %s",
                 shown(m, s, sizeof(s)));
      e->fail_status = (int)v;
    } else if (key_is(m, "fail_body")) {
      rc = text_of(m, &e->fail_body, &e->fail_body_len);
      if (rc == SL_EINVAL)
        rc = bad(err, errlen, where, "fail_body", "expected a string, got %s", shown(m, s, sizeof(s)));
    } else {
      char field[SHOWN_MAX + 1];

      snprintf(field, sizeof(field), "%.*s", (int)(m->keylen < SHOWN_MAX ? m->keylen : SHOWN_MAX), m->key);
      rc = bad(err, errlen, where, field, "unknown field (known: %s)", known);
    }
  }
  if (rc == 0 && e->url == NULL)
    rc = bad(err, errlen, where, "url", "missing: the URL pattern this response answers, e.g. "
             "\"https://api.example.com/v1/*\"");
  if (rc == 0 && e->fail_body == NULL && e->fail_rate > 0) {
    char dflt[96];
    int dl = snprintf(dflt, sizeof(dflt), "simulated failure (--http-mock, fail_rate %g)", e->fail_rate);

    e->fail_body = sl_strndup(dflt, (size_t)dl);
    e->fail_body_len = (size_t)dl;
    rc = e->fail_body == NULL ? SL_ENOMEM : 0;
  }
  if (rc == SL_ENOMEM)
    snprintf(err, errlen, "%s: out of memory", where);
  return rc;
}

/* Reads the whole file into a new buffer of *len bytes (NUL-terminated). */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  char *p = NULL;
  size_t got = 0;
  int rc = SL_EINVAL;

  if (fd < 0 || fstat(fd, &st) != 0) {
    snprintf(err, errlen, "--http-mock %s: cannot read it: %s", path, strerror(errno));
    goto out;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > SL_HTTPMOCK_FILE_MAX) {
    snprintf(err, errlen, "--http-mock %s: %s", path, S_ISREG(st.st_mode) ? "over 16 MiB" : "not a regular file");
    goto out;
  }
  p = sl_malloc((size_t)st.st_size + 1);
  if (p == NULL) {
    snprintf(err, errlen, "--http-mock %s: out of memory", path);
    rc = SL_ENOMEM;
    goto out;
  }
  while (got < (size_t)st.st_size) {
    ssize_t r = read(fd, p + got, (size_t)st.st_size - got);

    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      snprintf(err, errlen, "--http-mock %s: cannot read it: %s", path, r < 0 ? strerror(errno) : "it got shorter");
      goto out;
    }
    got += (size_t)r;
  }
  p[got] = '\0';
  *out = p;
  *len = got;
  p = NULL;
  rc = 0;
out:
  if (fd >= 0)
    close(fd);
  sl_free(p);
  return rc;
}

int sl__httpmock_load(const char *path, sl_httpmock **out, char *err, size_t errlen) {
  sl_httpmock *m = sl_calloc(1, sizeof(*m));
  sl_json_member top[TOP_MEMBERS];
  sl_json_member *el = NULL;
  const sl_json_member *resp = NULL;
  char *text = NULL;
  char where[512];
  char why[128];
  size_t len = 0;
  size_t pos = 0;
  size_t n = 0;
  int rc = SL_ENOMEM;

  if (m == NULL || (m->path = sl_strdup(path)) == NULL) {
    snprintf(err, errlen, "--http-mock %s: out of memory", path);
    goto out;
  }
  rc = read_file(path, &text, &len, err, errlen);
  if (rc != 0)
    goto out;
  rc = sl__json_validate_strict(text, len, SL_ITEM_MAX_DEPTH + 3, &pos, why, sizeof(why));
  if (rc != 0) {
    size_t line = 1;
    size_t col = 1;

    for (size_t i = 0; i < pos && i < len; i++) {
      col = text[i] == '\n' ? 1 : col + 1;
      line += text[i] == '\n';
    }
    snprintf(err, errlen, "--http-mock %s: invalid JSON at line %zu, column %zu: %s", path, line, col, why);
    goto out;
  }
  rc = sl__json_members(text, len, top, TOP_MEMBERS, &n);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    if (key_is(&top[i], "responses"))
      resp = &top[i];
    else
      rc = SL_EINVAL;
  }
  if (rc != 0 || resp == NULL || resp->val[0] != '[') {
    snprintf(err, errlen, "--http-mock %s: expected one object {\"responses\":[...]} and no other field: "
             "the responses, first match wins", path);
    rc = SL_EINVAL;
    goto out;
  }
  el = sl_malloc(SL_HTTPMOCK_MAX * sizeof(*el));
  if (el == NULL) {
    rc = SL_ENOMEM;
    snprintf(err, errlen, "--http-mock %s: out of memory", path);
    goto out;
  }
  rc = sl__json_elements(resp->val, resp->vallen, el, SL_HTTPMOCK_MAX, &n);
  if (rc != 0 || n == 0) {
    snprintf(err, errlen, "--http-mock %s: responses: %s", path,
             rc != 0 ? "more than 1000 entries" : "empty; give at least one response");
    rc = SL_EINVAL;
    goto out;
  }
  m->e = sl_calloc(n, sizeof(*m->e));
  if (m->e == NULL) {
    rc = SL_ENOMEM;
    snprintf(err, errlen, "--http-mock %s: out of memory", path);
    goto out;
  }
  for (size_t i = 0; i < n && rc == 0; i++) {
    snprintf(where, sizeof(where), "--http-mock %s: responses[%zu]", path, i);
    m->n = i + 1;
    rc = parse_entry(&el[i], &m->e[i], where, err, errlen);
  }
  if (rc == 0) {
    *out = m;
    m = NULL;
  }
out:
  sl_free(el);
  sl_free(text);
  sl__httpmock_free(m);
  return rc;
}

void sl__httpmock_free(sl_httpmock *m) {
  if (m == NULL)
    return;
  for (size_t i = 0; i < m->n; i++) {
    entry *e = &m->e[i];

    for (size_t k = 0; k < e->nheaders; k++) {
      sl_free(e->name[k]);
      sl_free(e->value[k]);
    }
    sl_free(e->name);
    sl_free(e->value);
    sl_free(e->method);
    sl_free(e->url);
    sl_free(e->body);
    sl_free(e->fail_body);
  }
  sl_free(m->e);
  sl_free(m->path);
  sl_free(m);
}

/* ---- Answering ---- */

/* 1 when s[0..n) matches pattern p: `*` is any run of bytes (none too),
 * every other byte itself. Linear backtracking to the last star. */
static int glob(const char *p, const char *s, size_t n) {
  const char *star = NULL;
  size_t back = 0;
  size_t i = 0;

  while (i < n) {
    if (*p == '*') {
      star = ++p;
      back = i;
    } else if (*p != '\0' && *p == s[i]) {
      p++;
      i++;
    } else if (star != NULL) {
      p = star;
      i = ++back;
    } else {
      return 0;
    }
  }
  while (*p == '*')
    p++;
  return *p == '\0';
}

static void close_cb(uv_handle_t *h) {
  sl_free(h);
}

static void on_timer(uv_timer_t *t) {
  sl_httpmock_run *run = (sl_httpmock_run *)t;

  run->cb(run->ud, &run->a);
  uv_close((uv_handle_t *)t, close_cb);
}

int sl__httpmock_start(const sl_httpmock *m, void *loop, const char *method, const char *url, int64_t timeout_ms,
                       sl_httpmock_cb cb, void *ud, sl_httpmock_run **out, char *err, size_t errlen) {
  size_t bare = strcspn(url, "?#");
  const entry *e = NULL;
  sl_httpmock_run *run;
  sl_httpmock_answer *a;

  for (size_t i = 0; i < m->n && e == NULL; i++) {
    if ((m->e[i].method == NULL || strcmp(m->e[i].method, method) == 0) &&
        glob(m->e[i].url, url, m->e[i].whole ? strlen(url) : bare))
      e = &m->e[i];
  }
  if (e == NULL) {
    snprintf(err, errlen, "field \"payload.url\": no mock response matches %s %.*s (--http-mock %s)", method,
             (int)bare, url, m->path);
    return SL_ENOTFOUND;
  }
  run = sl_calloc(1, sizeof(*run));
  if (run == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  run->cb = cb;
  run->ud = ud;
  a = &run->a;
  a->latency_ms = e->lat_min + (int64_t)(sl__random_unit() * (double)(e->lat_max - e->lat_min + 1));
  if (a->latency_ms > e->lat_max)
    a->latency_ms = e->lat_max;
  if (timeout_ms > 0 && a->latency_ms >= timeout_ms) {
    a->timed_out = 1;
    a->latency_ms = timeout_ms;
  } else if (e->fail_rate > 0 && sl__random_unit() < e->fail_rate) {
    a->simulated = 1;
    a->status = e->fail_status;
    a->body = e->fail_body;
    a->body_len = e->fail_body_len;
  } else {
    a->status = e->status;
    a->nheaders = e->nheaders;
    a->name = e->name;
    a->value = e->value;
    a->body = e->body;
    a->body_len = e->body_len;
    a->retry_after_s = e->retry_after_s;
  }
  uv_timer_init(loop, &run->timer);
  uv_update_time(loop); /* the loop's time dates from the start of this turn: the latency counts from now */
  uv_timer_start(&run->timer, on_timer, (uint64_t)a->latency_ms, 0);
  *out = run;
  return 0;
}

void sl__httpmock_cancel(sl_httpmock_run *run) {
  uv_timer_stop(&run->timer);
  uv_close((uv_handle_t *)&run->timer, close_cb);
}
