/*
 * Unit tests for the http item payload (src/httpreq.c), the one definition
 * of a valid request, run at submit and again in the worker. Each rule of
 * httpreq.h has a case that fails if the rule breaks:
 *
 *   - methods and header names are RFC 9110 tokens (a space, CR, LF, NUL or
 *     a non-ASCII byte is refused);
 *   - header values hold no CR, LF, NUL or control byte but tab, and bytes
 *     0x80 and up (UTF-8) are allowed;
 *   - the reserved headers (Host, Content-Length, Transfer-Encoding,
 *     Connection, Keep-Alive, Upgrade, TE, Trailer, Proxy-Connection) are
 *     refused in any case, and names compare without case for duplicates;
 *   - every SL_HTTP_* limit is checked on both sides (exactly at it: kept
 *     whole; one over: refused with the limit named, never cut);
 *   - body xor json, idempotency_key xor an Idempotency-Key header,
 *     keep_headers, timeout_ms, the URL (printable ASCII, http/https with a
 *     host), unknown and repeated fields;
 *   - ${env:NAME} references are checked for their form in header values,
 *     the body and the strings of json (not in keys).
 *
 * sl__httpreq_json_body is checked on exact output strings: references in
 * string values resolved (also when written with escapes), keys and
 * everything else byte for byte. sl__httpreq_parse and the json body are
 * also run under allocation failures at every index.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "harness.h"
#include "httpreq.h"
#include "json.h"
#include "secret.h"

/* ---- Helpers ---- */

/* A heap string built with printf (free with free). */
static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...) {
  va_list ap;
  va_list cp;
  int n;
  char *s;

  va_start(ap, f);
  va_copy(cp, ap);
  n = vsnprintf(NULL, 0, f, cp);
  va_end(cp);
  CHECK(n >= 0);
  s = malloc((size_t)n + 1);
  CHECK(s != NULL);
  vsnprintf(s, (size_t)n + 1, f, ap);
  va_end(ap);
  return s;
}

/* n copies of the string unit (heap). */
static char *repeat(const char *unit, size_t n) {
  size_t ul = strlen(unit);
  char *s = malloc(ul * n + 1);

  CHECK(s != NULL);
  for (size_t i = 0; i < n; i++)
    memcpy(s + i * ul, unit, ul);
  s[ul * n] = '\0';
  return s;
}

/* 1 when every byte of r is zero (a failed parse leaves r so). */
static int req_is_empty(const sl_httpreq *r) {
  static const sl_httpreq zero;

  return memcmp(r, &zero, sizeof(*r)) == 0;
}

/* Parses p, which must be accepted. */
static void parse_ok_at(const char *file, int line, const char *p, sl_httpreq *r) {
  char err[512] = "";
  int rc = sl__httpreq_parse(p, strlen(p), r, err, sizeof(err));

  if (rc != 0)
    sl_test_fail(file, line, "payload %.200s refused (rc %d): %s", p, rc, err);
}
#define PARSE_OK(p, r) parse_ok_at(__FILE__, __LINE__, (p), (r))

/* Parses p, which must be refused with want_rc (0: SL_EINVAL or SL_ETOOBIG)
 * and a message holding msg (and msg2 unless NULL); r must be left empty. */
static void parse_bad_at(const char *file, int line, const char *p, int want_rc, const char *msg, const char *msg2) {
  char err[1024] = "";
  sl_httpreq r;
  int rc;

  memset(&r, 0x5a, sizeof(r));
  rc = sl__httpreq_parse(p, strlen(p), &r, err, sizeof(err));
  if (want_rc == 0 ? rc != SL_EINVAL && rc != SL_ETOOBIG : rc != want_rc)
    sl_test_fail(file, line, "payload %.200s: rc %d (%s), expected %d", p, rc, err, want_rc);
  if (!req_is_empty(&r))
    sl_test_fail(file, line, "payload %.200s: the request is not left empty", p);
  if (strstr(err, msg) == NULL)
    sl_test_fail(file, line, "payload %.200s: message \"%s\" lacks \"%s\"", p, err, msg);
  if (msg2 != NULL && strstr(err, msg2) == NULL)
    sl_test_fail(file, line, "payload %.200s: message \"%s\" lacks \"%s\"", p, err, msg2);
}
#define BAD(p, msg) parse_bad_at(__FILE__, __LINE__, (p), SL_EINVAL, (msg), NULL)
#define BAD2(p, msg, msg2) parse_bad_at(__FILE__, __LINE__, (p), SL_EINVAL, (msg), (msg2))
#define TOOBIG(p, msg) parse_bad_at(__FILE__, __LINE__, (p), SL_ETOOBIG, (msg), NULL)
#define REFUSED(p, msg) parse_bad_at(__FILE__, __LINE__, (p), 0, (msg), NULL) /* SL_EINVAL or SL_ETOOBIG */

/* The message for p, which must be refused with SL_EINVAL (for exact checks). */
static const char *why_refused(const char *p) {
  static char err[1024];
  sl_httpreq r;

  err[0] = '\0';
  CHECK_INT(sl__httpreq_parse(p, strlen(p), &r, err, sizeof(err)), ==, SL_EINVAL);
  return err;
}

/* A payload with one header, name: value (both as written in JSON). */
static char *with_header(const char *name, const char *value) {
  return fmt("{\"url\":\"https://api.example.com/\",\"headers\":{\"%s\":\"%s\"}}", name, value);
}

/* The header must be accepted; its decoded value is checked. */
static void header_ok_at(const char *file, int line, const char *name, const char *value, const char *want,
                         size_t wantlen) {
  char *p = with_header(name, value);
  sl_httpreq r;

  parse_ok_at(file, line, p, &r);
  if (r.nheaders != 1 || strlen(r.value[0]) != wantlen || memcmp(r.value[0], want, wantlen) != 0)
    sl_test_fail(file, line, "header %s: %s: decoded as \"%s\"", name, value, r.nheaders ? r.value[0] : "(none)");
  sl__httpreq_free(&r);
  free(p);
}
#define HEADER_OK(name, value, want) header_ok_at(__FILE__, __LINE__, (name), (value), (want), strlen(want))

static void header_bad_at(const char *file, int line, const char *name, const char *value, int want_rc,
                          const char *msg) {
  char *p = with_header(name, value);

  parse_bad_at(file, line, p, want_rc, msg, NULL);
  free(p);
}
#define HEADER_BAD(name, value, msg) header_bad_at(__FILE__, __LINE__, (name), (value), SL_EINVAL, (msg))

/* ---- Accepted payloads ---- */

static void test_minimal(void) {
  sl_httpreq r;

  PARSE_OK("{\"url\":\"http://example.com/hook\"}", &r);
  CHECK_STR(r.method, "");
  CHECK_STR(r.url, "http://example.com/hook");
  CHECK_STR(r.origin.scheme, "http");
  CHECK_STR(r.origin.host, "example.com");
  CHECK_INT(r.origin.port, ==, 80);
  CHECK_INT(r.nheaders, ==, 0);
  CHECK(r.body == NULL);
  CHECK(r.json == NULL);
  CHECK_INT(r.nkeep, ==, 0);
  CHECK(r.ikey == NULL);
  CHECK_INT(r.timeout_ms, ==, 0);
  sl__httpreq_free(&r);
  CHECK(req_is_empty(&r));
  /* whitespace around the object */
  PARSE_OK(" \t\r\n{ \"url\" : \"https://example.com:8443/a\" } \n", &r);
  CHECK_INT(r.origin.port, ==, 8443);
  sl__httpreq_free(&r);
}

static void test_all_fields(void) {
  const char *p = "{\"method\":\"PATCH\",\"url\":\"https://API.example.com/v1/items?id=7\","
                  "\"headers\":{\"Authorization\":\"Bearer ${env:API_TOKEN}\",\"X-\\u0041\":\"caf\\u00e9\"},"
                  "\"json\":{\"k\":[1,\"v\"]},\"keep_headers\":[\"ETag\",\"X-Request-Id\"],"
                  "\"idempotency_key\":\"order-17\",\"timeout_ms\":5000}";
  sl_httpreq r;

  PARSE_OK(p, &r);
  CHECK_STR(r.method, "PATCH");
  CHECK_STR(r.url, "https://API.example.com/v1/items?id=7");
  CHECK_STR(r.origin.host, "api.example.com");
  CHECK_INT(r.origin.port, ==, 443);
  CHECK_INT(r.nheaders, ==, 2);
  CHECK_STR(r.name[0], "Authorization");
  CHECK_STR(r.value[0], "Bearer ${env:API_TOKEN}"); /* resolved by the worker, not here */
  CHECK_STR(r.name[1], "X-A");
  CHECK_STR(r.value[1], "caf\xc3\xa9");
  /* json is borrowed: its raw text inside the payload */
  CHECK(r.json == strstr(p, "{\"k\""));
  CHECK_INT(r.json_len, ==, strlen("{\"k\":[1,\"v\"]}"));
  CHECK_INT(r.nkeep, ==, 2);
  CHECK_STR(r.keep[0], "etag");
  CHECK_STR(r.keep[1], "x-request-id");
  CHECK_STR(r.ikey, "order-17");
  CHECK_INT(r.timeout_ms, ==, 5000);
  sl__httpreq_free(&r);
  CHECK(req_is_empty(&r));
}

/* ---- The payload itself ---- */

static void test_payload_not_object(void) {
  BAD("", "field \"payload\": an http payload must be an object with a \"url\", not nothing");
  BAD("  \n", "not nothing");
  BAD("[]", "not an array");
  BAD("\"http://x/\"", "not a string");
  BAD("null", "not null");
  BAD("5", "not a number");
  BAD("true", "not a boolean");
}

static void test_url_missing(void) {
  BAD("{}", "field \"payload.url\": missing (an http item needs a URL)");
  BAD("{\"method\":\"GET\"}", "field \"payload.url\": missing");
}

static void test_unknown_fields(void) {
  BAD2("{\"url\":\"http://x/\",\"Method\":\"GET\"}", "field \"payload.Method\": unknown field for an http item",
       "known: url, method, headers, body, json, keep_headers, idempotency_key, timeout_ms");
  BAD("{\"url\":\"http://x/\",\"header\":{}}", "field \"payload.header\": unknown field");
  BAD("{\"url\":\"http://x/\",\"url \":\"http://y/\"}", "field \"payload.url \": unknown field");
  /* the name is shown as written, escapes and all */
  BAD("{\"url\":\"http://x/\",\"a\\nb\":1}", "field \"payload.a\\nb\": unknown field");
}

static void test_field_twice(void) {
  BAD("{\"url\":\"http://a/\",\"url\":\"http://b/\"}", "field \"payload.url\": given twice");
  BAD("{\"url\":\"http://a/\",\"headers\":{},\"headers\":{}}", "field \"payload.headers\": given twice");
  BAD("{\"url\":\"http://a/\",\"keep_headers\":[],\"method\":\"GET\",\"keep_headers\":[]}",
      "field \"payload.keep_headers\": given twice");
}

static void test_too_many_fields(void) {
  char p[1024];
  size_t n = (size_t)snprintf(p, sizeof(p), "{\"url\":\"http://x/\"");

  /* 16 fields: the limit is not what refuses it */
  for (int i = 0; i < 15; i++)
    n += (size_t)snprintf(p + n, sizeof(p) - n, ",\"f%d\":1", i);
  snprintf(p + n, sizeof(p) - n, "}");
  BAD(p, "field \"payload.f0\": unknown field");
  snprintf(p + n, sizeof(p) - n, ",\"f15\":1}");
  BAD(p, "field \"payload\": too many fields for an http payload");
}

/* ---- url ---- */

static void test_url_schemes(void) {
  sl_httpreq r;

  PARSE_OK("{\"url\":\"HTTPS://X.Example/\"}", &r);
  CHECK_STR(r.origin.scheme, "https");
  CHECK_STR(r.url, "HTTPS://X.Example/");
  sl__httpreq_free(&r);
  PARSE_OK("{\"url\":\"http://[::1]:9000/x\"}", &r);
  CHECK_STR(r.origin.host, "[::1]");
  sl__httpreq_free(&r);
  /* escapes in the JSON string are decoded */
  PARSE_OK("{\"url\":\"http:\\/\\/x.example\\/\\u0061\"}", &r);
  CHECK_STR(r.url, "http://x.example/a");
  sl__httpreq_free(&r);

  BAD2("{\"url\":\"ftp://x/y\"}", "field \"payload.url\": expected an http:// or https:// URL with a host, got "
                                  "\"ftp://x/y\"", "scheme ftp is not http or https");
  BAD("{\"url\":\"javascript:alert(1)\"}", "field \"payload.url\": expected an http:// or https:// URL");
  BAD("{\"url\":\"file:///etc/passwd\"}", "field \"payload.url\"");
  BAD("{\"url\":\"example.com\"}", "field \"payload.url\"");
  BAD("{\"url\":\"http://\"}", "field \"payload.url\"");
  BAD("{\"url\":\"\"}", "field \"payload.url\"");
  BAD("{\"url\":\"http://x:0/\"}", "port 0 is out of range");
  BAD("{\"url\":5}", "field \"payload.url\": expected an http:// or https:// URL string, got 5");
  BAD("{\"url\":null}", "got null");
  BAD("{\"url\":[\"http://x/\"]}", "got [\"http://x/\"]");
}

static void test_url_bytes(void) {
  BAD("{\"url\":\"http://x/a b\"}", "field \"payload.url\": byte 10 is a space; percent-encode it (%20)");
  BAD("{\"url\":\"http://x/\\u0001\"}", "field \"payload.url\": byte 9 is a control byte; percent-encode it (%01)");
  BAD("{\"url\":\"http://x/\\u0000\"}", "byte 9 is a control byte; percent-encode it (%00)");
  BAD("{\"url\":\"http://x/\\r\\nHost: evil\"}", "byte 9 is a control byte; percent-encode it (%0D)");
  BAD("{\"url\":\"http://x/\\n\"}", "(%0A)");
  BAD("{\"url\":\"http://x/\\t\"}", "(%09)");
  BAD("{\"url\":\"http://x/\x7f\"}", "byte 9 is a control byte; percent-encode it (%7F)");
  BAD("{\"url\":\"http://x/caf\xc3\xa9\"}", "byte 12 is not ASCII; percent-encode it (%C3)");
  BAD("{\"url\":\"http://x/\\u00e9\"}", "byte 9 is not ASCII");
  BAD("{\"url\":\"http://ex\xc3\xa4mple.com/\"}", "not ASCII");
  BAD("{\"url\":\" http://x/\"}", "byte 0 is a space");
}

static void test_url_length(void) {
  const char *pre = "http://x.example/";
  char *path = repeat("a", SL_HTTP_URL_MAX - strlen(pre));
  char *p = fmt("{\"url\":\"%s%s\"}", pre, path);
  sl_httpreq r;

  PARSE_OK(p, &r);
  CHECK_INT(strlen(r.url), ==, SL_HTTP_URL_MAX);
  sl__httpreq_free(&r);
  free(p);
  p = fmt("{\"url\":\"%s%sa\"}", pre, path);
  TOOBIG(p, "field \"payload.url\": over the limit of 8192 bytes");
  free(p);
  free(path);
  /* far over */
  path = repeat("a", 5 * SL_HTTP_URL_MAX);
  p = fmt("{\"url\":\"%s%s\"}", pre, path);
  TOOBIG(p, "over the limit of 8192 bytes");
  free(p);
  free(path);
  /* the limit is on the decoded URL: 8192 bytes written as \u0061 fit */
  path = repeat("\\u0061", SL_HTTP_URL_MAX - strlen(pre));
  p = fmt("{\"url\":\"%s%s\"}", pre, path);
  PARSE_OK(p, &r);
  CHECK_INT(strlen(r.url), ==, SL_HTTP_URL_MAX);
  sl__httpreq_free(&r);
  free(p);
  free(path);
}

/* ---- method ---- */

static void test_method_tokens(void) {
  static const char *const ok[] = {"GET", "POST", "PURGE", "M-SEARCH", "get", "x!#$%&'*+-.^_`|~9", NULL};
  sl_httpreq r;

  for (int i = 0; ok[i] != NULL; i++) {
    char *p = fmt("{\"url\":\"http://x/\",\"method\":\"%s\"}", ok[i]);

    PARSE_OK(p, &r);
    CHECK_STR(r.method, ok[i]);
    sl__httpreq_free(&r);
    free(p);
  }
}

static void test_method_refused(void) {
  static const char *const bad[] = {
    "GE T", "GET ", " GET", "GET\\r\\n", "GET\\r", "GET\\n", "GET\\r\\nX-Evil: 1", "GET\\u0000", "GET\\t", "",
    "G\xc3\x89T", "G\\u00c9T", "(GET)", "GET/1.1", "GET:", "GET,POST", "GET;", "\\\"GET\\\"", "GET\x7f", NULL,
  };

  for (int i = 0; bad[i] != NULL; i++) {
    char *p = fmt("{\"url\":\"http://x/\",\"method\":\"%s\"}", bad[i]);

    BAD(p, "field \"payload.method\": expected a method like \"POST\": a token of letters, digits and "
           "!#$%&'*+-.^_`|~, at most 32 bytes");
    free(p);
  }
  BAD("{\"url\":\"http://x/\",\"method\":5}",
      "field \"payload.method\": expected a string like \"POST\", got a number");
  BAD("{\"url\":\"http://x/\",\"method\":null}", "got null");
  BAD("{\"url\":\"http://x/\",\"method\":[\"GET\"]}", "got an array");
}

static void test_method_length(void) {
  char *m = repeat("M", SL_HTTP_METHOD_MAX);
  char *p = fmt("{\"url\":\"http://x/\",\"method\":\"%s\"}", m);
  sl_httpreq r;

  PARSE_OK(p, &r);
  CHECK_STR(r.method, m);
  sl__httpreq_free(&r);
  free(p);
  p = fmt("{\"url\":\"http://x/\",\"method\":\"%sM\"}", m);
  BAD(p, "at most 32 bytes");
  free(p);
  free(m);
  /* far over: refused with the same message, not cut */
  m = repeat("M", 40 * SL_HTTP_METHOD_MAX);
  p = fmt("{\"url\":\"http://x/\",\"method\":\"%s\"}", m);
  REFUSED(p, "field \"payload.method\": expected a method like \"POST\"");
  free(p);
  free(m);
}

static void test_method_standard(void) {
  static const char *const std[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", NULL};
  static const char *const other[] = {"get", "Get", "CONNECT", "TRACE", "PURGE", "PROPFIND", "", "GET ", NULL};

  for (int i = 0; std[i] != NULL; i++)
    CHECK_INT(sl__http_method_standard(std[i]), ==, 1);
  for (int i = 0; other[i] != NULL; i++)
    CHECK_INT(sl__http_method_standard(other[i]), ==, 0);
}

/* ---- sl__http_token ---- */

static void test_token(void) {
  static const char tchar[] = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

  CHECK_INT(sl__http_token(tchar, strlen(tchar)), ==, 1);
  CHECK_INT(sl__http_token("", 0), ==, 0);
  for (int c = 0; c < 256; c++) {
    char s[3] = {'a', (char)c, 'z'};
    int want = c != 0 && strchr(tchar, c) != NULL;

    if (sl__http_token(s, 3) != want)
      sl_test_fail(__FILE__, __LINE__, "byte 0x%02x: token %d, expected %d", c, !want, want);
  }
  CHECK_INT(sl__http_token("ab cd", 2), ==, 1); /* only n bytes are read */
}

/* ---- headers: names ---- */

static void test_header_name_tokens(void) {
  static const char *const bad[] = {
    "X A", "X:A", "X-A:", "X\\u0000", "", "caf\xc3\xa9", "X\\u00e9", "X\\r\\nY", "X\\nY", "X\\tY", "(X)", "X/Y",
    "X@Y", "X{Y}", "X\\\"Y", "X;Y", "X=Y", "X,Y", "X\\\\Y", "[X]", "X?", "X\x7f", NULL,
  };
  sl_httpreq r;
  char *p = with_header("A1!#$%&'*+-.^_`|~z", "v");

  PARSE_OK(p, &r);
  CHECK_STR(r.name[0], "A1!#$%&'*+-.^_`|~z");
  sl__httpreq_free(&r);
  free(p);

  for (int i = 0; bad[i] != NULL; i++)
    HEADER_BAD(bad[i], "v", "a header name is a token of letters, digits and !#$%&'*+-.^_`|~ (at most 256 bytes)");
  /* the message names the field without its control bytes */
  CHECK_STR(why_refused("{\"url\":\"http://x/\",\"headers\":{\"X\\r\\nY\":\"v\"}}"),
            "field \"payload.headers.X\\r\\nY\": a header name is a token of letters, digits and !#$%&'*+-.^_`|~ "
            "(at most 256 bytes)");
}

static void test_header_name_length(void) {
  char *name = repeat("n", SL_HTTP_NAME_MAX);
  char *big;
  char *p = with_header(name, "v");
  sl_httpreq r;

  PARSE_OK(p, &r);
  CHECK_STR(r.name[0], name);
  sl__httpreq_free(&r);
  free(p);
  big = fmt("%sn", name);
  HEADER_BAD(big, "v", "(at most 256 bytes)");
  free(big);
  big = repeat("n", 10 * SL_HTTP_NAME_MAX);
  HEADER_BAD(big, "v", "(at most 256 bytes)");
  free(big);
  free(name);
}

/* Every reserved header, in several cases. */
static void test_header_reserved(void) {
  static const char *const names[] = {"Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
                                      "Upgrade", "TE", "Trailer", "Proxy-Connection", NULL};

  for (int i = 0; names[i] != NULL; i++) {
    char forms[3][24];
    size_t n = strlen(names[i]);

    for (size_t k = 0; k <= n; k++) {
      char c = names[i][k];

      forms[0][k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
      forms[1][k] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
      forms[2][k] = (char)(k % 2 ? forms[1][k] : forms[0][k]);
    }
    for (int f = 0; f < 3; f++) {
      char msg[256];

      snprintf(msg, sizeof(msg), "field \"payload.headers.%s\": %s is set by the worker from the URL and the body; "
                                 "an item cannot set it", forms[f], forms[f]);
      HEADER_BAD(forms[f], "x", msg);
    }
    HEADER_BAD(names[i], "x", "an item cannot set it");
  }
  /* written with an escape, decoded first */
  HEADER_BAD("H\\u006fst", "evil.example", "field \"payload.headers.Host\": Host is set by the worker");
  /* names that only start like a reserved one are fine */
  HEADER_OK("Hostname", "x", "x");
  HEADER_OK("TE2", "x", "x");
  HEADER_OK("X-Connection", "x", "x");
}

static void test_header_duplicates(void) {
  sl_httpreq r;

  BAD("{\"url\":\"http://x/\",\"headers\":{\"x-a\":\"1\",\"X-A\":\"2\"}}",
      "field \"payload.headers.X-A\": given twice (header names compare without case)");
  BAD("{\"url\":\"http://x/\",\"headers\":{\"X-A\":\"1\",\"B\":\"2\",\"x-A\":\"3\"}}",
      "field \"payload.headers.x-A\": given twice");
  BAD("{\"url\":\"http://x/\",\"headers\":{\"X-A\":\"1\",\"X-\\u0061\":\"2\"}}",
      "field \"payload.headers.X-a\": given twice");
  BAD("{\"url\":\"http://x/\",\"headers\":{\"X-A\":\"1\",\"X-A\":\"2\"}}", "given twice");
  PARSE_OK("{\"url\":\"http://x/\",\"headers\":{\"X-A\":\"1\",\"X-AA\":\"2\",\"X-B\":\"1\"}}", &r);
  CHECK_INT(r.nheaders, ==, 3);
  sl__httpreq_free(&r);
}

static void test_header_count(void) {
  char p[8192];
  size_t n;
  sl_httpreq r;

  n = (size_t)snprintf(p, sizeof(p), "{\"url\":\"http://x/\",\"headers\":{");
  for (int i = 0; i < SL_HTTP_HEADERS_MAX; i++)
    n += (size_t)snprintf(p + n, sizeof(p) - n, "%s\"X-H%d\":\"%d\"", i ? "," : "", i, i);
  snprintf(p + n, sizeof(p) - n, "}}");
  PARSE_OK(p, &r);
  CHECK_INT(r.nheaders, ==, SL_HTTP_HEADERS_MAX);
  CHECK_STR(r.name[SL_HTTP_HEADERS_MAX - 1], "X-H63");
  CHECK_STR(r.value[SL_HTTP_HEADERS_MAX - 1], "63");
  sl__httpreq_free(&r);
  snprintf(p + n, sizeof(p) - n, ",\"X-H64\":\"64\"}}");
  TOOBIG(p, "field \"payload.headers\": more than 64 headers");
}

static void test_headers_not_object(void) {
  BAD("{\"url\":\"http://x/\",\"headers\":[]}",
      "field \"payload.headers\": expected an object of header names and string values, got an array");
  BAD("{\"url\":\"http://x/\",\"headers\":\"X-A: 1\"}", "got a string");
  BAD("{\"url\":\"http://x/\",\"headers\":null}", "got null");
  BAD("{\"url\":\"http://x/\",\"headers\":{\"X-A\":1}}", "field \"payload.headers.X-A\": expected a string value");
  BAD("{\"url\":\"http://x/\",\"headers\":{\"X-A\":[\"1\"]}}", "expected a string value");
  BAD("{\"url\":\"http://x/\",\"headers\":{\"X-A\":null}}", "expected a string value");
}

/* ---- headers: values ---- */

static void test_header_value_line_breaks(void) {
  CHECK_STR(why_refused("{\"url\":\"http://x/\",\"headers\":{\"X-Note\":\"a\\rb\"}}"),
            "field \"payload.headers.X-Note\": the value holds a line break (CR or LF) at byte 1, which would end the "
            "header");
  HEADER_BAD("X-Note", "a\\nb", "field \"payload.headers.X-Note\": the value holds a line break (CR or LF) at byte 1");
  HEADER_BAD("X-Note", "a\\r\\nX-Injected: 1", "the value holds a line break (CR or LF) at byte 1");
  HEADER_BAD("X-Note", "a\\u000d\\u000aX-Injected: 1", "the value holds a line break (CR or LF) at byte 1");
  HEADER_BAD("X-Note", "\\r", "line break (CR or LF) at byte 0");
  HEADER_BAD("X-Note", "abc\\n", "line break (CR or LF) at byte 3");
  HEADER_BAD("X-Note", "\\r\\n\\r\\nGET / HTTP/1.1", "line break");
}

static void test_header_value_nul_and_controls(void) {
  HEADER_BAD("X-Note", "a\\u0000b", "field \"payload.headers.X-Note\": the value holds a NUL byte at byte 1");
  HEADER_BAD("X-Note", "\\u0000", "NUL byte at byte 0");
  HEADER_BAD("X-Note", "a\x7f" "b", "the value holds the control byte 0x7f at byte 1");
  HEADER_BAD("X-Note", "a\\u007fb", "the control byte 0x7f at byte 1");
  HEADER_BAD("X-Note", "a\\u0001b", "the control byte 0x01 at byte 1");
  HEADER_BAD("X-Note", "a\\u001fb", "the control byte 0x1f at byte 1");
  HEADER_BAD("X-Note", "a\\bb", "the control byte 0x08");
  HEADER_BAD("X-Note", "a\\fb", "the control byte 0x0c");
  HEADER_BAD("X-Note", "a\\u000bb", "the control byte 0x0b");
  HEADER_BAD("X-Note", "a\\u001bb", "the control byte 0x1b");
  /* tab is the one control byte a header value may hold */
  HEADER_OK("X-Note", "a\\tb", "a\tb");
  HEADER_OK("X-Note", "\\u0009", "\t");
  HEADER_OK("X-Note", " spaces  inside ", " spaces  inside ");
  HEADER_OK("X-Note", "", "");
}

static void test_header_value_utf8(void) {
  HEADER_OK("X-Note", "caf\xc3\xa9", "caf\xc3\xa9");
  HEADER_OK("X-Note", "caf\\u00e9", "caf\xc3\xa9");
  HEADER_OK("X-Note", "\xe2\x82\xac \xf0\x9f\x98\x80", "\xe2\x82\xac \xf0\x9f\x98\x80");
  HEADER_OK("X-Note", "\\ud83d\\ude00", "\xf0\x9f\x98\x80");
  HEADER_OK("X-Note", "\\u0080\\u00ff", "\xc2\x80\xc3\xbf");
}

static void test_header_value_length(void) {
  char *v = repeat("v", SL_HTTP_VALUE_MAX);
  char *big;
  sl_httpreq r;
  char *p = with_header("X-Big", v);

  PARSE_OK(p, &r);
  CHECK_INT(strlen(r.value[0]), ==, SL_HTTP_VALUE_MAX);
  sl__httpreq_free(&r);
  free(p);
  big = fmt("%sv", v);
  p = with_header("X-Big", big);
  TOOBIG(p, "over the limit of 8192");
  free(p);
  free(big);
  free(v);

  v = repeat("v", 9000);
  p = with_header("X-Big", v);
  TOOBIG(p, "8192");
  free(p);
  free(v);
  v = repeat("v", 100000);
  p = with_header("X-Big", v);
  TOOBIG(p, "over the limit of 8192");
  free(p);
  free(v);

  /* the limit is on the decoded value */
  v = repeat("\\u0076", SL_HTTP_VALUE_MAX);
  p = with_header("X-Big", v);
  PARSE_OK(p, &r);
  CHECK_INT(strlen(r.value[0]), ==, SL_HTTP_VALUE_MAX);
  sl__httpreq_free(&r);
  free(p);
  free(v);
  v = repeat("\\u0076", SL_HTTP_VALUE_MAX + 1);
  p = with_header("X-Big", v);
  TOOBIG(p, "over the limit of 8192");
  free(p);
  free(v);
  /* 2-byte characters: 4096 of them are exactly the limit */
  v = repeat("\\u00e9", SL_HTTP_VALUE_MAX / 2);
  p = with_header("X-Big", v);
  PARSE_OK(p, &r);
  CHECK_INT(strlen(r.value[0]), ==, SL_HTTP_VALUE_MAX);
  sl__httpreq_free(&r);
  free(p);
  free(v);
}

static void test_header_value_secrets(void) {
  HEADER_OK("Authorization", "Bearer ${env:API_TOKEN}", "Bearer ${env:API_TOKEN}");
  HEADER_BAD("Authorization", "${env:SLUICE_REDIS}",
             "field \"payload.headers.Authorization\": secret SLUICE_REDIS: names starting SLUICE_ are the worker's "
             "own");
  HEADER_BAD("Authorization", "Bearer ${env:1BAD}",
             "field \"payload.headers.Authorization\": malformed secret reference \"${env:1BAD}\"");
  HEADER_BAD("Authorization", "Bearer ${env:X", "malformed secret reference \"${env:X\"");
  /* written with escapes, checked once decoded */
  HEADER_BAD("Authorization", "\\u0024{env:SLUICE_REDIS}", "secret SLUICE_REDIS");
}

/* ---- sl__http_value_check ---- */

static void test_value_check(void) {
  char err[256] = "";
  char *v = repeat("v", SL_HTTP_VALUE_MAX + 1);
  char all[256];
  size_t n = 0;

  CHECK_INT(sl__http_value_check(v, SL_HTTP_VALUE_MAX, "W", err, sizeof(err)), ==, 0);
  CHECK_INT(sl__http_value_check(v, SL_HTTP_VALUE_MAX + 1, "W", err, sizeof(err)), ==, SL_ETOOBIG);
  CHECK_STR(err, "W: the value is 8193 bytes, over the limit of 8192");
  free(v);
  CHECK_INT(sl__http_value_check("", 0, "W", err, sizeof(err)), ==, 0);
  CHECK_INT(sl__http_value_check("a\rb", 3, "W", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_STR(err, "W: the value holds a line break (CR or LF) at byte 1, which would end the header");
  CHECK_INT(sl__http_value_check("ab\n", 3, "W", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "at byte 2");
  CHECK_INT(sl__http_value_check("a\0b", 3, "W", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_STR(err, "W: the value holds a NUL byte at byte 1");
  CHECK_INT(sl__http_value_check("\x7f", 1, "W", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_STR(err, "W: the value holds the control byte 0x7f at byte 0");
  /* only n bytes are read */
  CHECK_INT(sl__http_value_check("ab\r\n", 2, "W", err, sizeof(err)), ==, 0);
  /* every byte: controls but tab refused, the rest allowed */
  for (int c = 1; c < 256; c++) {
    char s[1] = {(char)c};
    int want = (c < 0x20 && c != '\t') || c == 0x7f ? SL_EINVAL : 0;

    if (sl__http_value_check(s, 1, "W", err, sizeof(err)) != want)
      sl_test_fail(__FILE__, __LINE__, "byte 0x%02x: expected %d", c, want);
  }
  for (int c = 0x80; c < 0x100; c++)
    all[n++] = (char)c;
  CHECK_INT(sl__http_value_check(all, n, "W", err, sizeof(err)), ==, 0);
}

/* ---- body and json ---- */

static void test_body(void) {
  sl_httpreq r;

  PARSE_OK("{\"url\":\"http://x/\",\"body\":\"hello\\nworld \\u00e9\"}", &r);
  CHECK_INT(r.body_len, ==, 14);
  CHECK(memcmp(r.body, "hello\nworld \xc3\xa9", 14) == 0);
  CHECK(r.json == NULL);
  sl__httpreq_free(&r);
  /* a body may hold NUL: its length says where it ends */
  PARSE_OK("{\"url\":\"http://x/\",\"body\":\"a\\u0000b\"}", &r);
  CHECK_INT(r.body_len, ==, 3);
  CHECK(memcmp(r.body, "a\0b", 3) == 0);
  sl__httpreq_free(&r);
  PARSE_OK("{\"url\":\"http://x/\",\"body\":\"\"}", &r);
  CHECK(r.body != NULL);
  CHECK_INT(r.body_len, ==, 0);
  sl__httpreq_free(&r);
  PARSE_OK("{\"url\":\"http://x/\",\"body\":\"token=${env:API_TOKEN}\"}", &r);
  CHECK_STR(r.body, "token=${env:API_TOKEN}");
  sl__httpreq_free(&r);

  BAD("{\"url\":\"http://x/\",\"body\":{\"a\":1}}",
      "field \"payload.body\": expected a string (use \"json\" for a JSON value)");
  BAD("{\"url\":\"http://x/\",\"body\":5}", "field \"payload.body\": expected a string");
  BAD("{\"url\":\"http://x/\",\"body\":\"${env:SLUICE_REDIS}\"}", "field \"payload.body\": secret SLUICE_REDIS");
  BAD("{\"url\":\"http://x/\",\"body\":\"${env:X\"}", "field \"payload.body\": malformed secret reference");
  BAD("{\"url\":\"http://x/\",\"body\":\"\\u0024{env:1BAD}\"}", "field \"payload.body\": malformed");
}

static void test_json_field(void) {
  static const char *const values[] = {"{\"a\":[1,2]}", "\"s\"", "5", "null", "[]", "{ }", "true", NULL};
  sl_httpreq r;

  for (int i = 0; values[i] != NULL; i++) {
    char *p = fmt("{\"url\":\"http://x/\",\"json\": %s }", values[i]);

    PARSE_OK(p, &r);
    CHECK(r.json == strstr(p, values[i]));
    CHECK_INT(r.json_len, ==, strlen(values[i]));
    CHECK(r.body == NULL);
    sl__httpreq_free(&r);
    free(p);
  }
  /* references in string values are checked, at any depth */
  BAD("{\"url\":\"http://x/\",\"json\":{\"k\":\"${env:SLUICE_REDIS}\"}}",
      "field \"payload.json\": secret SLUICE_REDIS: names starting SLUICE_");
  BAD("{\"url\":\"http://x/\",\"json\":[{\"a\":[\"x\",\"${env:1BAD}\"]}]}", "field \"payload.json\": malformed");
  BAD("{\"url\":\"http://x/\",\"json\":\"${env:X\"}", "field \"payload.json\": malformed");
  BAD("{\"url\":\"http://x/\",\"json\":{\"k\":\"\\u0024{env:SLUICE_REDIS}\"}}", "secret SLUICE_REDIS");
  BAD("{\"url\":\"http://x/\",\"json\":{\"k\":\"${env:SLUICE_\\u0052EDIS}\"}}", "secret SLUICE_REDIS");
  /* keys are never resolved, so never checked */
  PARSE_OK("{\"url\":\"http://x/\",\"json\":{\"${env:SLUICE_REDIS}\":1,\"${env:1BAD}\" : \"v\"}}", &r);
  sl__httpreq_free(&r);
}

static void test_body_xor_json(void) {
  BAD("{\"url\":\"http://x/\",\"body\":\"a\",\"json\":{}}", "field \"payload.json\": give body or json, not both");
  BAD("{\"json\":null,\"url\":\"http://x/\",\"body\":\"\"}", "give body or json, not both");
}

/* ---- keep_headers ---- */

static void test_keep_headers(void) {
  char p[4096];
  size_t n;
  sl_httpreq r;
  char *name;

  PARSE_OK("{\"url\":\"http://x/\",\"keep_headers\":[]}", &r);
  CHECK_INT(r.nkeep, ==, 0);
  sl__httpreq_free(&r);
  PARSE_OK("{\"url\":\"http://x/\",\"keep_headers\":[ \"ETag\" , \"X-\\u0052equest-Id\" ]}", &r);
  CHECK_INT(r.nkeep, ==, 2);
  CHECK_STR(r.keep[0], "etag");
  CHECK_STR(r.keep[1], "x-request-id");
  sl__httpreq_free(&r);

  n = (size_t)snprintf(p, sizeof(p), "{\"url\":\"http://x/\",\"keep_headers\":[");
  for (int i = 0; i < SL_HTTP_KEEP_MAX; i++)
    n += (size_t)snprintf(p + n, sizeof(p) - n, "%s\"X-K%d\"", i ? "," : "", i);
  snprintf(p + n, sizeof(p) - n, "]}");
  PARSE_OK(p, &r);
  CHECK_INT(r.nkeep, ==, SL_HTTP_KEEP_MAX);
  CHECK_STR(r.keep[SL_HTTP_KEEP_MAX - 1], "x-k31");
  sl__httpreq_free(&r);
  snprintf(p + n, sizeof(p) - n, ",\"X-K32\"]}");
  TOOBIG(p, "field \"payload.keep_headers\": more than 32 names");

  name = repeat("k", SL_HTTP_NAME_MAX);
  snprintf(p, sizeof(p), "{\"url\":\"http://x/\",\"keep_headers\":[\"%s\"]}", name);
  PARSE_OK(p, &r);
  CHECK_STR(r.keep[0], name);
  sl__httpreq_free(&r);
  snprintf(p, sizeof(p), "{\"url\":\"http://x/\",\"keep_headers\":[\"%sk\"]}", name);
  BAD(p, "field \"payload.keep_headers\": element 0 is not a header name (a token of at most 256 bytes)");
  free(name);

  BAD("{\"url\":\"http://x/\",\"keep_headers\":\"ETag\"}",
      "field \"payload.keep_headers\": expected an array of header names");
  BAD("{\"url\":\"http://x/\",\"keep_headers\":{}}", "expected an array of header names");
  BAD("{\"url\":\"http://x/\",\"keep_headers\":[1]}", "element 0 is not a header name");
  BAD("{\"url\":\"http://x/\",\"keep_headers\":[\"ETag\",\"bad name\"]}", "element 1 is not a header name");
  BAD("{\"url\":\"http://x/\",\"keep_headers\":[\"\"]}", "element 0 is not a header name");
  BAD("{\"url\":\"http://x/\",\"keep_headers\":[\"ETag\\r\\n\"]}", "element 0 is not a header name");
  BAD("{\"url\":\"http://x/\",\"keep_headers\":[[\"ETag\"]]}", "element 0");
}

/* ---- idempotency_key ---- */

static void test_idempotency_key(void) {
  char *k = repeat("k", SL_HTTP_IKEY_MAX);
  char *p = fmt("{\"url\":\"http://x/\",\"idempotency_key\":\"%s\"}", k);
  sl_httpreq r;

  PARSE_OK(p, &r);
  CHECK_STR(r.ikey, k);
  sl__httpreq_free(&r);
  free(p);
  p = fmt("{\"url\":\"http://x/\",\"idempotency_key\":\"%sk\"}", k);
  TOOBIG(p, "field \"payload.idempotency_key\": 257 bytes, over the limit of 256");
  free(p);
  free(k);
  /* far over, refused the same way with the field named */
  k = repeat("k", 2000);
  p = fmt("{\"url\":\"http://x/\",\"idempotency_key\":\"%s\"}", k);
  TOOBIG(p, "field \"payload.idempotency_key\": ");
  TOOBIG(p, "over the limit of 256");
  free(p);
  free(k);

  BAD("{\"url\":\"http://x/\",\"idempotency_key\":\"\"}", "field \"payload.idempotency_key\": empty");
  BAD("{\"url\":\"http://x/\",\"idempotency_key\":5}", "field \"payload.idempotency_key\": expected a string");
  BAD("{\"url\":\"http://x/\",\"idempotency_key\":\"a\\r\\nX-Evil: 1\"}",
      "field \"payload.idempotency_key\": the value holds a line break (CR or LF) at byte 1");
  BAD("{\"url\":\"http://x/\",\"idempotency_key\":\"a\\u0000\"}",
      "field \"payload.idempotency_key\": the value holds a NUL byte");
  BAD("{\"url\":\"http://x/\",\"idempotency_key\":\"a\\u0001\"}", "the control byte 0x01");
}

static void test_idempotency_key_xor_header(void) {
  sl_httpreq r;

  BAD("{\"url\":\"http://x/\",\"idempotency_key\":\"k1\",\"headers\":{\"Idempotency-Key\":\"k2\"}}",
      "field \"payload.idempotency_key\": give it or an Idempotency-Key header, not both");
  BAD("{\"url\":\"http://x/\",\"headers\":{\"idempotency-KEY\":\"k2\"},\"idempotency_key\":\"k1\"}",
      "give it or an Idempotency-Key header, not both");
  PARSE_OK("{\"url\":\"http://x/\",\"headers\":{\"Idempotency-Key\":\"k2\"}}", &r);
  CHECK(r.ikey == NULL);
  sl__httpreq_free(&r);
}

/* ---- timeout_ms ---- */

static void test_timeout_ms(void) {
  static const char *const ok[] = {"1", "86400000", "1.0", "30000", "1e3", NULL};
  static const int64_t want[] = {1, 86400000, 1, 30000, 1000};
  static const char *const bad[] = {"0", "86400001", "-1", "\"1000\"", "1.5", "1e-3", "null", "true", NULL};
  sl_httpreq r;

  for (int i = 0; ok[i] != NULL; i++) {
    char *p = fmt("{\"url\":\"http://x/\",\"timeout_ms\":%s}", ok[i]);

    PARSE_OK(p, &r);
    CHECK_INT(r.timeout_ms, ==, want[i]);
    sl__httpreq_free(&r);
    free(p);
  }
  for (int i = 0; bad[i] != NULL; i++) {
    char *p = fmt("{\"url\":\"http://x/\",\"timeout_ms\":%s}", bad[i]);

    BAD(p, "field \"payload.timeout_ms\": expected an integer from 1 to 86400000 (ms)");
    free(p);
  }
}

/* ---- sl__httpreq_json_body ---- */

/* Parses p, resolves its json body with s and checks the exact output. */
static void json_body_is_at(const char *file, int line, const char *p, const sl_secrets *s, const char *want) {
  sl_httpreq r;
  char err[512] = "";
  int refused = 7;
  size_t len = 0;
  char *body;
  size_t pos = 0;
  char jerr[128];

  parse_ok_at(file, line, p, &r);
  body = sl__httpreq_json_body(&r, s, &refused, &len, err, sizeof(err));
  if (body == NULL)
    sl_test_fail(file, line, "json body of %s: %s", p, err);
  if (strcmp(body, want) != 0)
    sl_test_fail(file, line, "json body of %s:\n      got  %s\n      want %s", p, body, want);
  if (len != strlen(want) || refused != 0)
    sl_test_fail(file, line, "json body of %s: len %zu, refused %d", p, len, refused);
  if (sl__json_validate_strict(body, len, SL_ITEM_MAX_DEPTH, &pos, jerr, sizeof(jerr)) != 0)
    sl_test_fail(file, line, "json body %s is not valid JSON at %zu: %s", body, pos, jerr);
  sl_free(body);
  sl__httpreq_free(&r);
}
#define JSON_BODY_IS(p, s, want) json_body_is_at(__FILE__, __LINE__, (p), (s), (want))

static sl_secrets *grants(const char *const *specs) {
  sl_secrets *s = NULL;
  char err[256];

  for (int i = 0; specs[i] != NULL; i++) {
    if (sl__secrets_grant(&s, specs[i], err, sizeof(err)) != 0)
      sl_test_fail(__FILE__, __LINE__, "grant %s: %s", specs[i], err);
  }
  return s;
}

static void test_json_body_resolves_values(void) {
  static const char *const specs[] = {"X", NULL};
  sl_secrets *s;

  setenv("X", "xv", 1);
  s = grants(specs);
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":{\"k\":\"${env:X}\"}}", s, "{\"k\":\"xv\"}");
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":\"${env:X}\"}", s, "\"xv\"");
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":[\"a${env:X}b\",\"${env:X}${env:X}\"]}", s,
               "[\"axvb\",\"xvxv\"]");
  sl__secrets_free(s);
}

/* A reference in a key is left as written; the value beside it resolves. */
static void test_json_body_keys_untouched(void) {
  static const char *const specs[] = {"X", NULL};
  sl_secrets *s;

  setenv("X", "xv", 1);
  s = grants(specs);
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":{\"${env:X}\":\"${env:X}\"}}", s,
               "{\"${env:X}\":\"xv\"}");
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":{\"${env:X}\" :\n \"v\",\"a\\\"${env:X}\" : 1}}", s,
               "{\"${env:X}\" :\n \"v\",\"a\\\"${env:X}\" : 1}");
  /* a key the worker does not grant is never looked up */
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":{\"${env:NOT_GRANTED}\":{\"${env:SLUICE_REDIS}\":[]}}}",
               s, "{\"${env:NOT_GRANTED}\":{\"${env:SLUICE_REDIS}\":[]}}");
  sl__secrets_free(s);
}

static void test_json_body_escaped_reference(void) {
  static const char *const specs[] = {"X", NULL};
  sl_secrets *s;

  setenv("X", "xv", 1);
  s = grants(specs);
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":{\"k\":\"\\u0024{env:X}\"}}", s, "{\"k\":\"xv\"}");
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":{\"k\":\"${env:\\u0058}\"}}", s, "{\"k\":\"xv\"}");
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":{\"k\":\"\\u0024\\u007benv:X\\u007d\"}}", s,
               "{\"k\":\"xv\"}");
  sl__secrets_free(s);
}

/* Everything but the strings holding a reference is copied byte for byte;
 * those strings are written again (escapes normalized). */
static void test_json_body_rest_byte_for_byte(void) {
  static const char *const specs[] = {"X", NULL};
  sl_secrets *s;

  setenv("X", "xv", 1);
  s = grants(specs);
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\": { \"a\" : [1, 2.50, -0.0e+1, true, false, null,"
               " \"plain \\u00e9 \\/ caf\xc3\xa9\"], \"b\" : { \"c\" : \"\\/pre ${env:X} post\\t\\u0041\" } ,"
               " \"d\":\"\\u0041\", \"e\" : \"$env:X ${X}\" , \"f\":[ ] } }",
               s,
               "{ \"a\" : [1, 2.50, -0.0e+1, true, false, null, \"plain \\u00e9 \\/ caf\xc3\xa9\"], \"b\" : { \"c\" : "
               "\"/pre xv post\\tA\" } , \"d\":\"\\u0041\", \"e\" : \"$env:X ${X}\" , \"f\":[ ] }");
  /* no reference at all: the same text */
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":[1,{\"a\":\"b\\u0041\\n\"},\"\\ud83d\\ude00\"]}", s,
               "[1,{\"a\":\"b\\u0041\\n\"},\"\\ud83d\\ude00\"]");
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":12345678901234567890}", s, "12345678901234567890");
  sl__secrets_free(s);
}

/* A resolved value is escaped as JSON needs. */
static void test_json_body_value_escaped(void) {
  static const char *const specs[] = {"Q", "BAD_UTF8", NULL};
  sl_secrets *s;

  setenv("Q", "q\"b\\s\nl\x01" "c\xc3\xa9/", 1);
  setenv("BAD_UTF8", "a\xff" "b", 1);
  s = grants(specs);
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":{\"k\":\"${env:Q}\"}}", s,
               "{\"k\":\"q\\\"b\\\\s\\nl\\u0001c\xc3\xa9/\"}");
  JSON_BODY_IS("{\"url\":\"https://api.example.com/\",\"json\":{\"k\":\"${env:BAD_UTF8}\"}}", s,
               "{\"k\":\"a\xef\xbf\xbd" "b\"}");
  sl__secrets_free(s);
}

static void test_json_body_refused(void) {
  static const char *const specs[] = {"BOUND@api.example.com", NULL};
  sl_secrets *s;
  sl_httpreq r;
  char err[512] = "";
  int refused = 0;
  size_t len = 99;
  char *body;

  setenv("BOUND", "bound-value-zq9", 1);
  setenv("OTHER", "other-value-zq9", 1);
  s = grants(specs);
  JSON_BODY_IS("{\"url\":\"http://api.example.com/\",\"json\":{\"k\":\"${env:BOUND}\"}}", s,
               "{\"k\":\"bound-value-zq9\"}");

  PARSE_OK("{\"url\":\"https://api.example.com/\",\"json\":{\"a\":\"${env:BOUND}\",\"k\":\"${env:OTHER}\"}}", &r);
  body = sl__httpreq_json_body(&r, s, &refused, &len, err, sizeof(err));
  CHECK(body == NULL);
  CHECK_INT(refused, ==, 1);
  CHECK_STR(err, "field \"payload.json\": secret OTHER is not granted to this worker");
  sl__httpreq_free(&r);

  PARSE_OK("{\"url\":\"https://api.example.com:8443/\",\"json\":[\"${env:BOUND}\"]}", &r);
  refused = 0;
  body = sl__httpreq_json_body(&r, s, &refused, &len, err, sizeof(err));
  CHECK(body == NULL);
  CHECK_INT(refused, ==, 1);
  CHECK_STR(err, "field \"payload.json\": secret BOUND is not granted to this worker for "
                 "https://api.example.com:8443 (only for api.example.com)");
  CHECK(strstr(err, "bound-value") == NULL);
  sl__httpreq_free(&r);

  PARSE_OK("{\"url\":\"http://api.example.com.evil.net/\",\"json\":{\"k\":\"${env:BOUND}\"}}", &r);
  refused = 0;
  body = sl__httpreq_json_body(&r, s, &refused, &len, err, sizeof(err));
  CHECK(body == NULL);
  CHECK_INT(refused, ==, 1);
  CHECK_CONTAINS(err, "secret BOUND is not granted to this worker for http://api.example.com.evil.net");
  sl__httpreq_free(&r);
  sl__secrets_free(s);
}

/* The body has a limit once its secrets are resolved: 8 MiB. */
static void test_json_body_size_limit(void) {
  static const char *const specs[] = {"MIB", NULL};
  char *mib = repeat("m", 1024 * 1024);
  char *refs = repeat("\"${env:MIB}\",", 9);
  char *p;
  sl_secrets *s;
  sl_httpreq r;
  char err[512] = "";
  int refused = 7;
  size_t len = 0;
  char *body;

  setenv("MIB", mib, 1);
  s = grants(specs);
  /* 7 strings of 1 MiB + 2 quotes each, and the commas: under 8 MiB */
  refs[7 * 13 - 1] = '\0';
  p = fmt("{\"url\":\"https://api.example.com/\",\"json\":[%s]}", refs);
  PARSE_OK(p, &r);
  body = sl__httpreq_json_body(&r, s, &refused, &len, err, sizeof(err));
  CHECK(body != NULL);
  CHECK_INT(len, ==, 2 + 7 * (1024 * 1024 + 2) + 6);
  sl_free(body);
  sl__httpreq_free(&r);
  free(p);
  /* 9 of them: over */
  free(refs);
  refs = repeat("\"${env:MIB}\",", 9);
  refs[9 * 13 - 1] = '\0';
  p = fmt("{\"url\":\"https://api.example.com/\",\"json\":[%s]}", refs);
  PARSE_OK(p, &r);
  body = sl__httpreq_json_body(&r, s, &refused, &len, err, sizeof(err));
  CHECK(body == NULL);
  CHECK_INT(refused, ==, 0);
  CHECK_STR(err, "field \"payload.json\": over 8388608 bytes with its secrets resolved");
  sl__httpreq_free(&r);
  free(p);
  free(refs);
  free(mib);
  sl__secrets_free(s);
}

/* ---- At submit and in the worker: the same answer ---- */

/* The payload checker is all the worker has: a line the submit check never
 * saw (another producer) gets the same answer. */
static void test_exact_message_example(void) {
  CHECK_STR(why_refused("{\"url\":\"https://api.example.com/\",\"headers\":{\"X-Note\":\"line one\\nline two\"}}"),
            "field \"payload.headers.X-Note\": the value holds a line break (CR or LF) at byte 8, which would end "
            "the header");
}

/* ---- Allocation failures ---- */

#define MAX_ALLOCS 400 /* no single call here allocates more often */

/* Runs sl__httpreq_parse on p failing each allocation in turn; each run
 * fails with SL_ENOMEM and "out of memory" and leaves r empty (ASan checks
 * nothing leaks), until one succeeds with the result of a run without
 * faults. Returns the allocations a successful parse makes. */
static long parse_fault_loop(const char *p) {
  sl_httpreq ref;
  sl_httpreq r;
  char err[512];
  long fault;

  PARSE_OK(p, &ref);
  for (fault = 0; fault < MAX_ALLOCS; fault++) {
    int rc;

    memset(&r, 0x5a, sizeof(r));
    err[0] = '\0';
    sl__alloc_fail_after(fault);
    rc = sl__httpreq_parse(p, strlen(p), &r, err, sizeof(err));
    sl__alloc_fail_after(-1);
    if (rc == 0)
      break;
    if (rc != SL_ENOMEM)
      sl_test_fail(__FILE__, __LINE__, "fault %ld: rc %d (%s), expected SL_ENOMEM", fault, rc, err);
    CHECK_STR(err, "out of memory");
    CHECK(req_is_empty(&r));
  }
  CHECK(fault < MAX_ALLOCS);
  CHECK_STR(r.method, ref.method);
  CHECK_STR(r.url, ref.url);
  CHECK_INT(r.nheaders, ==, ref.nheaders);
  for (size_t i = 0; i < r.nheaders; i++) {
    CHECK_STR(r.name[i], ref.name[i]);
    CHECK_STR(r.value[i], ref.value[i]);
  }
  CHECK_INT(r.body_len, ==, ref.body_len);
  CHECK(r.body == NULL || memcmp(r.body, ref.body, r.body_len) == 0);
  CHECK(r.json == ref.json);
  CHECK_INT(r.nkeep, ==, ref.nkeep);
  for (size_t i = 0; i < r.nkeep; i++)
    CHECK_STR(r.keep[i], ref.keep[i]);
  CHECK(r.ikey == NULL ? ref.ikey == NULL : strcmp(r.ikey, ref.ikey) == 0);
  CHECK_INT(r.timeout_ms, ==, ref.timeout_ms);
  sl__httpreq_free(&r);
  sl__httpreq_free(&ref);
  return fault;
}

static void test_parse_alloc_failures(void) {
  char *longv = repeat("L", 300);
  char *p = fmt("{\"method\":\"POST\",\"url\":\"https://api.example.com/v1/items?x=1\","
                "\"headers\":{\"Authorization\":\"Bearer ${env:API_TOKEN}\",\"X-Note\":\"caf\\u00e9\","
                "\"X-\\u0041\":\"%s\"},"
                "\"json\":{\"k\":\"${env:API_TOKEN}\",\"n\":[1,2,{\"s\":\"\\u0041\"}]},"
                "\"keep_headers\":[\"ETag\",\"X-Request-Id\"],\"idempotency_key\":\"key-1\",\"timeout_ms\":5000}",
                longv);
  long n;

  n = parse_fault_loop(p);
  /* url, 3 names, 3 values, 2 keep names, the key, the json strings */
  CHECK_INT(n, >=, 10);
  free(p);
  p = fmt("{\"url\":\"http://x.example/\",\"body\":\"hello ${env:API_TOKEN} \\u00e9 %s\",\"headers\":{\"A\":\"1\"}}",
          longv);
  n = parse_fault_loop(p);
  CHECK_INT(n, >=, 4);
  free(p);
  free(longv);
}

/* Refused payloads give the same answer under faults, or run out of memory. */
static void test_parse_invalid_under_faults(void) {
  static const char *const bad[] = {
    "{\"url\":\"http://x/\",\"headers\":{\"A\":\"1\",\"Host\":\"evil\"}}",
    "{\"url\":\"http://x/\",\"headers\":{\"A\":\"1\",\"B\":\"a\\r\\nb\"}}",
    "{\"url\":\"http://x/\",\"keep_headers\":[\"a\",\"b c\"]}",
    "{\"url\":\"ftp://x/\",\"headers\":{\"A\":\"1\"}}",
    NULL,
  };

  for (int i = 0; bad[i] != NULL; i++) {
    for (long fault = 0; fault < 12; fault++) {
      sl_httpreq r;
      char err[512] = "";
      int rc;

      sl__alloc_fail_after(fault);
      rc = sl__httpreq_parse(bad[i], strlen(bad[i]), &r, err, sizeof(err));
      sl__alloc_fail_after(-1);
      CHECK(req_is_empty(&r));
      if (rc == SL_ENOMEM)
        CHECK_STR(err, "out of memory");
      else
        CHECK_INT(rc, ==, SL_EINVAL);
    }
  }
}

static void test_json_body_alloc_failures(void) {
  static const char *const specs[] = {"X", NULL};
  char *longv = repeat("V", 5000);
  const char *p = "{\"url\":\"https://api.example.com/\",\"json\":{\"${env:X}\":[\"${env:X}\",\"\\u0041\","
                  "{\"k\":\"pre \\u0024{env:X} post\"}],\"n\":1}}";
  sl_secrets *s;
  sl_httpreq r;
  char err[512];
  int refused = 0;
  size_t len = 0;
  char *want;
  long fault;

  setenv("X", longv, 1);
  s = grants(specs);
  PARSE_OK(p, &r);
  want = sl__httpreq_json_body(&r, s, &refused, &len, err, sizeof(err));
  CHECK(want != NULL);
  for (fault = 0; fault < MAX_ALLOCS; fault++) {
    char *body;

    err[0] = '\0';
    refused = 7;
    sl__alloc_fail_after(fault);
    body = sl__httpreq_json_body(&r, s, &refused, &len, err, sizeof(err));
    sl__alloc_fail_after(-1);
    if (body != NULL) {
      CHECK_STR(body, want);
      sl_free(body);
      break;
    }
    CHECK_INT(refused, ==, -1); /* out of memory, not a grant */
    if (strcmp(err, "out of memory") != 0)
      sl_test_fail(__FILE__, __LINE__, "fault %ld: message \"%s\"", fault, err);
  }
  CHECK(fault >= 4 && fault < MAX_ALLOCS);
  sl_free(want);
  sl__httpreq_free(&r);
  sl__secrets_free(s);
  free(longv);
}

static const sl_test tests[] = {
  {"minimal", test_minimal, 10},
  {"all_fields", test_all_fields, 10},
  {"payload_not_object", test_payload_not_object, 10},
  {"url_missing", test_url_missing, 10},
  {"unknown_fields", test_unknown_fields, 10},
  {"field_twice", test_field_twice, 10},
  {"too_many_fields", test_too_many_fields, 10},
  {"url_schemes", test_url_schemes, 10},
  {"url_bytes", test_url_bytes, 10},
  {"url_length", test_url_length, 10},
  {"method_tokens", test_method_tokens, 10},
  {"method_refused", test_method_refused, 10},
  {"method_length", test_method_length, 10},
  {"method_standard", test_method_standard, 10},
  {"token", test_token, 10},
  {"header_name_tokens", test_header_name_tokens, 10},
  {"header_name_length", test_header_name_length, 10},
  {"header_reserved", test_header_reserved, 10},
  {"header_duplicates", test_header_duplicates, 10},
  {"header_count", test_header_count, 10},
  {"headers_not_object", test_headers_not_object, 10},
  {"header_value_line_breaks", test_header_value_line_breaks, 10},
  {"header_value_nul_and_controls", test_header_value_nul_and_controls, 10},
  {"header_value_utf8", test_header_value_utf8, 10},
  {"header_value_length", test_header_value_length, 10},
  {"header_value_secrets", test_header_value_secrets, 10},
  {"value_check", test_value_check, 10},
  {"body", test_body, 10},
  {"json_field", test_json_field, 10},
  {"body_xor_json", test_body_xor_json, 10},
  {"keep_headers", test_keep_headers, 10},
  {"idempotency_key", test_idempotency_key, 10},
  {"idempotency_key_xor_header", test_idempotency_key_xor_header, 10},
  {"timeout_ms", test_timeout_ms, 10},
  {"json_body_resolves_values", test_json_body_resolves_values, 10},
  {"json_body_keys_untouched", test_json_body_keys_untouched, 10},
  {"json_body_escaped_reference", test_json_body_escaped_reference, 10},
  {"json_body_rest_byte_for_byte", test_json_body_rest_byte_for_byte, 10},
  {"json_body_value_escaped", test_json_body_value_escaped, 10},
  {"json_body_refused", test_json_body_refused, 10},
  {"json_body_size_limit", test_json_body_size_limit, 30},
  {"exact_message_example", test_exact_message_example, 10},
  {"parse_alloc_failures", test_parse_alloc_failures, 30},
  {"parse_invalid_under_faults", test_parse_invalid_under_faults, 30},
  {"json_body_alloc_failures", test_json_body_alloc_failures, 30},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
