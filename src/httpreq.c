/*
 * The payload of an `http` item; see httpreq.h.
 *
 * The payload is read with the strict scanner (json.h), not cJSON: cJSON
 * keeps the first of two equal keys where other parsers keep the last, and
 * cuts a string at an escaped NUL, so a producer could have the checked
 * value differ from the sent one.
 */
#include "httpreq.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"
#include "json.h"

#define PAYLOAD_MEMBERS 16 /* fields of an http payload (8 are known) */
#define JSON_BODY_MAX (8 * 1024 * 1024) /* a json body with its secrets resolved, bytes */

/* Headers that describe the connection or the message framing: the worker
 * and libcurl set them, a producer never does. */
static const char *const reserved_headers[] = {
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
    "te", "trailer", "proxy-connection", NULL};

static const char *const standard_methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", NULL};

int sl__http_token(const char *s, size_t n) {
  if (n == 0)
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];

    if (!(isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL)))
      return 0;
  }
  return 1;
}

int sl__http_method_standard(const char *m) {
  for (size_t i = 0; standard_methods[i] != NULL; i++) {
    if (strcmp(standard_methods[i], m) == 0)
      return 1;
  }
  return 0;
}

int sl__http_value_check(const char *v, size_t n, const char *where, char *err, size_t errlen) {
  if (n > SL_HTTP_VALUE_MAX) {
    snprintf(err, errlen, "%s: the value is %zu bytes, over the limit of %d", where, n, SL_HTTP_VALUE_MAX);
    return SL_ETOOBIG;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)v[i];

    if (c == '\r' || c == '\n') {
      snprintf(err, errlen, "%s: the value holds a line break (CR or LF) at byte %zu, which would end the header",
               where, i);
      return SL_EINVAL;
    }
    if (c == 0) {
      snprintf(err, errlen, "%s: the value holds a NUL byte at byte %zu", where, i);
      return SL_EINVAL;
    }
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      snprintf(err, errlen, "%s: the value holds the control byte 0x%02x at byte %zu", where, c, i);
      return SL_EINVAL;
    }
  }
  return 0;
}

static int key_is(const sl_json_member *m, const char *k) {
  return m->keylen == strlen(k) && memcmp(m->key, k, m->keylen) == 0;
}

/* Decodes a string token into a new C string; SL_EINVAL when the token is
 * not a string, holds NUL (unless nul_ok) or decodes past max bytes. */
static int take_str(const sl_json_member *m, size_t max, int nul_ok, char **out, size_t *outlen) {
  sl_buf b;
  int rc;

  *out = NULL;
  if (m->val[0] != '"')
    return SL_EINVAL;
  sl__buf_init(&b, max);
  rc = sl__json_unescape(m->val, m->vallen, &b);
  if (rc == 0 && b.p == NULL)
    rc = sl__buf_puts(&b, "");
  if (rc == 0 && !nul_ok && memchr(b.p, '\0', b.len) != NULL)
    rc = SL_EINVAL;
  if (rc != 0) {
    sl__buf_free(&b);
    return rc;
  }
  if (outlen != NULL)
    *outlen = b.len;
  *out = sl__buf_take(&b);
  return *out ? 0 : SL_ENOMEM;
}

/* Walks the raw text of a validated JSON value and calls fn for each string
 * token that is a value (not a key); stops at a non-zero return. */
typedef int (*str_fn)(const char *tok, size_t len, void *ud);

static int each_value_string(const char *t, size_t n, str_fn fn, void *ud) {
  size_t i = 0;

  while (i < n) {
    size_t j;
    size_t k;
    int rc;

    if (t[i] != '"') {
      i++;
      continue;
    }
    for (j = i + 1; j < n && t[j] != '"'; j++) {
      if (t[j] == '\\')
        j++;
    }
    for (k = j + 1; k < n && strchr(" \t\r\n", t[k]) != NULL; k++)
      ;
    if (k >= n || t[k] != ':') {
      rc = fn(t + i, j + 1 - i, ud);
      if (rc != 0)
        return rc;
    }
    i = j + 1;
  }
  return 0;
}

typedef struct refs_ud {
  char *err;     /* message out */
  size_t errlen; /* its size */
} refs_ud;

static int check_json_string(const char *tok, size_t len, void *ud) {
  refs_ud *r = ud;
  sl_buf b;
  int rc;

  if (memchr(tok, '$', len) == NULL && memchr(tok, '\\', len) == NULL)
    return 0; /* no reference can hide in it */
  sl__buf_init(&b, len + 1);
  rc = sl__json_unescape(tok, len, &b);
  if (rc == 0 && b.p != NULL)
    rc = sl__secret_refs_check(b.p, b.len, "field \"payload.json\"", r->err, r->errlen);
  else if (rc != 0)
    snprintf(r->err, r->errlen, "field \"payload.json\": %s", sl_strerror(rc));
  sl__buf_free(&b);
  return rc;
}

/* The name of a payload field for messages: printable, short. */
static void show(const char *s, size_t n, char *out, size_t len) {
  size_t k = 0;

  for (size_t i = 0; i < n && k + 4 < len; i++)
    out[k++] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
  if (n > 0 && k + 4 >= len && len > 4) {
    memcpy(out + k, "...", 3);
    k += 3;
  }
  out[k] = '\0';
}

static int parse_headers(const sl_json_member *f, sl_httpreq *r, char *err, size_t errlen) {
  sl_json_member h[SL_HTTP_HEADERS_MAX + 1];
  size_t n = 0;
  int rc;

  if (f->val[0] != '{') {
    snprintf(err, errlen, "field \"payload.headers\": expected an object of header names and string values, got %s",
             sl__json_kind(f->val));
    return SL_EINVAL;
  }
  rc = sl__json_members(f->val, f->vallen, h, SL_HTTP_HEADERS_MAX, &n);
  if (rc == SL_ETOOBIG) {
    snprintf(err, errlen, "field \"payload.headers\": more than %d headers", SL_HTTP_HEADERS_MAX);
    return SL_ETOOBIG;
  }
  if (rc != 0) {
    snprintf(err, errlen, "field \"payload.headers\": expected an object");
    return SL_EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    char where[SL_HTTP_NAME_MAX + 40];
    char shown[80];
    char *name = NULL;
    char *value = NULL;
    size_t nl = 0;
    size_t vl = 0;
    sl_json_member key = {NULL, 0, h[i].key - 1, h[i].keylen + 2};

    show(h[i].key, h[i].keylen, shown, sizeof(shown));
    rc = take_str(&key, SL_HTTP_NAME_MAX * 6, 1, &name, &nl);
    if (rc == SL_ENOMEM)
      return rc;
    if (rc != 0 || !sl__http_token(name, nl) || nl > SL_HTTP_NAME_MAX) {
      sl_free(name);
      snprintf(err, errlen,
               "field \"payload.headers.%s\": a header name is a token of letters, digits and !#$%%&'*+-.^_`|~ "
               "(at most %d bytes)", shown, SL_HTTP_NAME_MAX);
      return SL_EINVAL;
    }
    snprintf(where, sizeof(where), "field \"payload.headers.%s\"", name);
    for (size_t k = 0; reserved_headers[k] != NULL; k++) {
      if (strcasecmp(name, reserved_headers[k]) == 0) {
        snprintf(err, errlen, "%s: %s is set by the worker from the URL and the body; an item cannot set it", where,
                 name);
        sl_free(name);
        return SL_EINVAL;
      }
    }
    for (size_t k = 0; k < r->nheaders; k++) {
      if (strcasecmp(r->name[k], name) == 0) {
        snprintf(err, errlen, "%s: given twice (header names compare without case)", where);
        sl_free(name);
        return SL_EINVAL;
      }
    }
    if (h[i].val[0] != '"') {
      snprintf(err, errlen, "%s: expected a string value", where);
      sl_free(name);
      return SL_EINVAL;
    }
    rc = take_str(&h[i], SL_HTTP_VALUE_MAX * 6 + 8, 1, &value, &vl);
    if (rc == SL_ENOMEM)
      snprintf(err, errlen, "out of memory");
    else if (rc != 0)
      snprintf(err, errlen, "%s: the value is over the limit of %d bytes", where, SL_HTTP_VALUE_MAX);
    if (rc == 0)
      rc = sl__http_value_check(value, vl, where, err, errlen);
    if (rc == 0)
      rc = sl__secret_refs_check(value, vl, where, err, errlen);
    if (rc != 0) {
      sl_free(name);
      sl_free(value);
      return rc;
    }
    r->name[r->nheaders] = name;
    r->value[r->nheaders] = value;
    r->nheaders++;
  }
  return 0;
}

static int parse_keep(const sl_json_member *f, sl_httpreq *r, char *err, size_t errlen) {
  sl_json_member e[SL_HTTP_KEEP_MAX];
  size_t n = 0;
  int rc = f->val[0] == '[' ? sl__json_elements(f->val, f->vallen, e, SL_HTTP_KEEP_MAX, &n) : SL_EINVAL;

  if (rc == SL_ETOOBIG) {
    snprintf(err, errlen, "field \"payload.keep_headers\": more than %d names", SL_HTTP_KEEP_MAX);
    return rc;
  }
  if (rc != 0) {
    snprintf(err, errlen, "field \"payload.keep_headers\": expected an array of header names");
    return SL_EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    char *name = NULL;
    size_t nl = 0;

    rc = take_str(&e[i], SL_HTTP_NAME_MAX * 6, 1, &name, &nl);
    if (rc == SL_ENOMEM)
      return rc;
    if (rc != 0 || !sl__http_token(name, nl) || nl > SL_HTTP_NAME_MAX) {
      sl_free(name);
      snprintf(err, errlen, "field \"payload.keep_headers\": element %zu is not a header name (a token of at most %d "
                            "bytes)", i, SL_HTTP_NAME_MAX);
      return SL_EINVAL;
    }
    for (char *c = name; *c; c++)
      *c = (char)tolower((unsigned char)*c);
    r->keep[r->nkeep++] = name;
  }
  return 0;
}

static int parse_metrics(const sl_json_member *f, sl_httpreq *r, char *err, size_t errlen) {
  sl_json_member e[SL_HTTP_METRICS_MAX];
  size_t n = 0;
  int rc = f->val[0] == '{' ? sl__json_members(f->val, f->vallen, e, SL_HTTP_METRICS_MAX, &n) : SL_EINVAL;

  if (rc == SL_ETOOBIG) {
    snprintf(err, errlen, "field \"payload.metrics\": more than %d metrics", SL_HTTP_METRICS_MAX);
    return rc;
  }
  if (rc != 0) {
    snprintf(err, errlen, "field \"payload.metrics\": expected an object of metric names to JSON paths, like "
                          "{\"cost\":\"$.usage.cost\"}");
    return SL_EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    char name[80];
    char *path = NULL;
    size_t pl = 0;

    snprintf(name, sizeof(name), "%.*s", (int)(e[i].keylen < 70 ? e[i].keylen : 70), e[i].key);
    if (e[i].keylen == 0 || e[i].keylen > 63 ||
        strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != e[i].keylen) {
      snprintf(err, errlen, "field \"payload.metrics\": \"%s\" is not a metric name (1-63 characters of "
                            "[A-Za-z0-9_.-])", name);
      return SL_EINVAL;
    }
    rc = take_str(&e[i], SL_HTTP_PATH_MAX, 1, &path, &pl);
    if (rc == SL_ENOMEM)
      return rc;
    if (rc != 0 || pl >= SL_HTTP_PATH_MAX || !sl__json_path_valid(path)) {
      sl_free(path);
      snprintf(err, errlen, "field \"payload.metrics.%s\": expected a JSON path like \"$.usage.cost\" or "
                            "\"$.data[0].n\" (at most %d bytes)", name, SL_HTTP_PATH_MAX - 1);
      return SL_EINVAL;
    }
    r->metric[r->nmetrics] = sl_strdup(name);
    r->path[r->nmetrics] = path;
    if (r->metric[r->nmetrics] == NULL) {
      sl_free(path);
      return SL_ENOMEM;
    }
    r->nmetrics++;
  }
  return 0;
}

int sl__httpreq_parse(const char *p, size_t len, sl_httpreq *r, char *err, size_t errlen) {
  sl_json_member m[PAYLOAD_MEMBERS];
  const sl_json_member *url = NULL;
  size_t n = 0;
  size_t urllen = 0;
  int rc;

  memset(r, 0, sizeof(*r));
  while (len > 0 && strchr(" \t\r\n", *p) != NULL) {
    p++;
    len--;
  }
  if (len == 0 || p[0] != '{') {
    snprintf(err, errlen, "field \"payload\": an http payload must be an object with a \"url\", not %s",
             len == 0 ? "nothing" : sl__json_kind(p));
    return SL_EINVAL;
  }
  rc = sl__json_members(p, len, m, PAYLOAD_MEMBERS, &n);
  if (rc != 0) {
    snprintf(err, errlen, "field \"payload\": %s",
             rc == SL_ETOOBIG ? "too many fields for an http payload" : "not a JSON object");
    return SL_EINVAL;
  }
  for (size_t i = 0; i < n && rc == 0; i++) {
    const sl_json_member *f = &m[i];
    char shown[64];

    for (size_t k = 0; k < i; k++) {
      if (m[k].keylen == f->keylen && memcmp(m[k].key, f->key, f->keylen) == 0) {
        show(f->key, f->keylen, shown, sizeof(shown));
        snprintf(err, errlen, "field \"payload.%s\": given twice", shown);
        rc = SL_EINVAL;
      }
    }
    if (rc != 0)
      break;
    if (key_is(f, "url")) {
      url = f;
    } else if (key_is(f, "method")) {
      char *mt = NULL;
      size_t ml = 0;

      rc = take_str(f, SL_HTTP_METHOD_MAX * 6, 1, &mt, &ml);
      if (rc == 0 && (!sl__http_token(mt, ml) || ml > SL_HTTP_METHOD_MAX))
        rc = SL_EINVAL;
      if (rc == 0)
        memcpy(r->method, mt, ml + 1);
      else if (f->val[0] != '"')
        snprintf(err, errlen, "field \"payload.method\": expected a string like \"POST\", got %s", sl__json_kind(f->val));
      else if (rc != SL_ENOMEM)
        snprintf(err, errlen,
                 "field \"payload.method\": expected a method like \"POST\": a token of letters, digits and "
                 "!#$%%&'*+-.^_`|~, at most %d bytes", SL_HTTP_METHOD_MAX);
      sl_free(mt);
    } else if (key_is(f, "headers")) {
      rc = parse_headers(f, r, err, errlen);
    } else if (key_is(f, "body")) {
      if (f->val[0] != '"') {
        snprintf(err, errlen, "field \"payload.body\": expected a string (use \"json\" for a JSON value)");
        rc = SL_EINVAL;
      } else {
        rc = take_str(f, f->vallen + 1, 1, &r->body, &r->body_len);
        if (rc == 0)
          rc = sl__secret_refs_check(r->body, r->body_len, "field \"payload.body\"", err, errlen);
      }
    } else if (key_is(f, "json")) {
      refs_ud ud = {err, errlen};

      r->json = f->val;
      r->json_len = f->vallen;
      rc = each_value_string(f->val, f->vallen, check_json_string, &ud);
    } else if (key_is(f, "keep_headers")) {
      rc = parse_keep(f, r, err, errlen);
    } else if (key_is(f, "metrics")) {
      rc = parse_metrics(f, r, err, errlen);
    } else if (key_is(f, "idempotency_key")) {
      size_t kl = 0;

      if (f->val[0] != '"') {
        snprintf(err, errlen, "field \"payload.idempotency_key\": expected a string");
        rc = SL_EINVAL;
      } else {
        rc = take_str(f, SL_HTTP_IKEY_MAX * 6, 1, &r->ikey, &kl);
        if (rc == SL_ETOOBIG) {
          snprintf(err, errlen, "field \"payload.idempotency_key\": over the limit of %d bytes", SL_HTTP_IKEY_MAX);
        } else if (rc == 0 && kl > SL_HTTP_IKEY_MAX) {
          snprintf(err, errlen, "field \"payload.idempotency_key\": %zu bytes, over the limit of %d", kl,
                   SL_HTTP_IKEY_MAX);
          rc = SL_ETOOBIG;
        } else if (rc == 0 && kl == 0) {
          snprintf(err, errlen, "field \"payload.idempotency_key\": empty");
          rc = SL_EINVAL;
        } else if (rc == 0) {
          rc = sl__http_value_check(r->ikey, kl, "field \"payload.idempotency_key\"", err, errlen);
        }
      }
    } else if (key_is(f, "timeout_ms")) {
      if (sl__json_int(f->val, f->vallen, 1, 86400000, &r->timeout_ms) != 0) {
        snprintf(err, errlen, "field \"payload.timeout_ms\": expected an integer from 1 to 86400000 (ms)");
        rc = SL_EINVAL;
      }
    } else {
      show(f->key, f->keylen, shown, sizeof(shown));
      snprintf(err, errlen,
               "field \"payload.%s\": unknown field for an http item (known: url, method, headers, body, json, "
               "keep_headers, idempotency_key, timeout_ms, metrics)", shown);
      rc = SL_EINVAL;
    }
    if (rc == SL_ENOMEM)
      snprintf(err, errlen, "out of memory");
  }
  if (rc != 0)
    goto fail;
  if (url == NULL) {
    snprintf(err, errlen, "field \"payload.url\": missing (an http item needs a URL)");
    rc = SL_EINVAL;
    goto fail;
  }
  rc = take_str(url, SL_HTTP_URL_MAX + 1, 1, &r->url, &urllen);
  if (rc == SL_ETOOBIG || (rc == 0 && urllen > SL_HTTP_URL_MAX)) {
    snprintf(err, errlen, "field \"payload.url\": over the limit of %d bytes", SL_HTTP_URL_MAX);
    rc = SL_ETOOBIG;
    goto fail;
  }
  if (rc == SL_ENOMEM) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  if (rc != 0) {
    snprintf(err, errlen, "field \"payload.url\": expected an http:// or https:// URL string, got %.*s",
             (int)(url->vallen > 40 ? 40 : url->vallen), url->val);
    rc = SL_EINVAL;
    goto fail;
  }
  for (size_t i = 0; i < urllen; i++) {
    unsigned char c = (unsigned char)r->url[i];

    if (c <= 0x20 || c >= 0x7f) {
      snprintf(err, errlen, "field \"payload.url\": byte %zu is %s; percent-encode it (%%%02X)", i,
               c == ' ' ? "a space" : c < 0x20 || c == 0x7f ? "a control byte" : "not ASCII", c);
      rc = SL_EINVAL;
      goto fail;
    }
  }
  {
    char why[160];

    if (sl__origin_parse(r->url, &r->origin, why, sizeof(why)) != 0) {
      snprintf(err, errlen, "field \"payload.url\": expected an http:// or https:// URL with a host, got \"%.60s\" (%s)",
               r->url, why);
      rc = SL_EINVAL;
      goto fail;
    }
  }
  if (r->body != NULL && r->json != NULL) {
    snprintf(err, errlen, "field \"payload.json\": give body or json, not both");
    rc = SL_EINVAL;
    goto fail;
  }
  if (r->ikey != NULL) {
    for (size_t k = 0; k < r->nheaders; k++) {
      if (strcasecmp(r->name[k], "Idempotency-Key") == 0) {
        snprintf(err, errlen, "field \"payload.idempotency_key\": give it or an Idempotency-Key header, not both");
        rc = SL_EINVAL;
        goto fail;
      }
    }
  }
  return 0;
fail:
  sl__httpreq_free(r);
  return rc;
}

void sl__httpreq_free(sl_httpreq *r) {
  for (size_t i = 0; i < r->nheaders; i++) {
    sl_free(r->name[i]);
    sl_free(r->value[i]);
  }
  for (size_t i = 0; i < r->nkeep; i++)
    sl_free(r->keep[i]);
  for (size_t i = 0; i < r->nmetrics; i++) {
    sl_free(r->metric[i]);
    sl_free(r->path[i]);
  }
  sl_free(r->url);
  sl_free(r->body);
  sl_free(r->ikey);
  memset(r, 0, sizeof(*r));
}

/* ---- The json body, with secrets resolved ---- */

typedef struct body_ud {
  const sl_httpreq *r;    /* the request */
  const sl_secrets *s;    /* the grants */
  sl_buf *out;            /* the body being written */
  const char *copied;     /* raw text copied up to here */
  int *refused;           /* out: a grant was missing */
  char *err;              /* message out */
  size_t errlen;          /* its size */
} body_ud;

static int expand_json_string(const char *tok, size_t len, void *vud) {
  body_ud *u = vud;
  sl_buf dec;
  char *v;
  int rc;

  if (memchr(tok, '$', len) == NULL && memchr(tok, '\\', len) == NULL)
    return 0;
  sl__buf_init(&dec, len + 1);
  rc = sl__json_unescape(tok, len, &dec);
  if (rc != 0 || dec.p == NULL || strstr(dec.p, "${env:") == NULL || memchr(dec.p, '\0', dec.len) != NULL) {
    sl__buf_free(&dec);
    return rc == SL_ENOMEM ? rc : 0; /* nothing to resolve: copied as it is */
  }
  v = sl__secrets_expand(u->s, dec.p, &u->r->origin, "field \"payload.json\"", u->refused, u->err, u->errlen);
  sl__buf_free(&dec);
  if (v == NULL)
    return SL_EINVAL;
  rc = sl__buf_append(u->out, u->copied, (size_t)(tok - u->copied));
  if (rc == 0)
    rc = sl__json_put_str(u->out, v, strlen(v));
  sl_free(v);
  u->copied = tok + len;
  return rc;
}

char *sl__httpreq_json_body(const sl_httpreq *r, const sl_secrets *s, int *refused, size_t *len, char *err,
                            size_t errlen) {
  sl_buf out;
  body_ud u = {r, s, &out, r->json, refused, err, errlen};
  int rc;

  *refused = 0;
  sl__buf_init(&out, JSON_BODY_MAX);
  rc = each_value_string(r->json, r->json_len, expand_json_string, &u);
  if (rc == 0)
    rc = sl__buf_append(&out, u.copied, (size_t)(r->json + r->json_len - u.copied));
  if (rc != 0) {
    /* SL_EINVAL: sl__secrets_expand wrote why */
    if (rc == SL_ENOMEM) {
      *refused = -1;
      snprintf(err, errlen, "out of memory");
    }
    else if (rc == SL_ETOOBIG)
      snprintf(err, errlen, "field \"payload.json\": over %d bytes with its secrets resolved", JSON_BODY_MAX);
    sl__buf_free(&out);
    return NULL;
  }
  *len = out.len;
  return sl__buf_take(&out);
}
