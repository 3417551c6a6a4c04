/*
 * Unit tests for secrets (src/secret.c): the variable names sluice accepts,
 * the ${env:NAME} references checked at submit (sl__secret_refs_check:
 * complete, a valid name, never SLUICE_*), grants read from the environment
 * (sl__secrets_grant: NAME or NAME@HOSTPATTERN, unset and SLUICE_* names
 * refused), and sl__secrets_expand: a reference resolves only when granted
 * and only for the hosts of its grant; a refusal sets *refused and names the
 * secret, never its value; a value is inserted as it is (the worker checks
 * header values again after expansion) and never expanded again. Both
 * allocating functions are run under allocation failures at every index.
 *
 * Each test runs in its own child (harness.h), so setenv here is local.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "allow.h"
#include "harness.h"
#include "httpreq.h"
#include "secret.h"

/* ---- Helpers ---- */

/* A reference check that must pass. */
static void refs_ok(const char *s) {
  char err[256] = "";
  int rc = sl__secret_refs_check(s, strlen(s), "field \"f\"", err, sizeof(err));

  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "references in \"%s\" refused (rc %d): %s", s, rc, err);
}

/* A reference check that must fail, with the field and msg in the message. */
static void refs_bad(const char *s, const char *msg) {
  char err[256] = "";
  int rc = sl__secret_refs_check(s, strlen(s), "field \"f\"", err, sizeof(err));

  if (rc != SL_EINVAL)
    sl_test_fail(__FILE__, __LINE__, "references in \"%s\": rc %d, expected SL_EINVAL", s, rc);
  if (strncmp(err, "field \"f\": ", 11) != 0 || strstr(err, msg) == NULL)
    sl_test_fail(__FILE__, __LINE__, "references in \"%s\": message \"%s\" lacks \"%s\"", s, err, msg);
}

/* Grants spec, which must be accepted. */
static void grant_ok(sl_secrets **s, const char *spec) {
  char err[256] = "";
  int rc = sl__secrets_grant(s, spec, err, sizeof(err));

  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "grant %s refused (rc %d): %s", spec, rc, err);
  CHECK(*s != NULL);
}

/* Grants spec, which must be refused with msg in the message. */
static void grant_bad(const char *spec, const char *msg) {
  sl_secrets *s = NULL;
  char err[256] = "";
  int rc = sl__secrets_grant(&s, spec, err, sizeof(err));

  if (rc != SL_EINVAL)
    sl_test_fail(__FILE__, __LINE__, "grant %s: rc %d (%s), expected SL_EINVAL", spec, rc, err);
  if (strstr(err, msg) == NULL)
    sl_test_fail(__FILE__, __LINE__, "grant %s: message \"%s\" lacks \"%s\"", spec, err, msg);
  sl__secrets_free(s);
}

static sl_origin origin(const char *url) {
  sl_origin o;
  char err[256] = "";

  if (sl__origin_parse(url, &o, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "URL %s refused: %s", url, err);
  return o;
}

/* Expands text for url, which must succeed with the exact result want. */
static void expands_to(const sl_secrets *s, const char *text, const char *url, const char *want) {
  sl_origin o = origin(url);
  char err[512] = "";
  int refused = 7;
  char *v = sl__secrets_expand(s, text, &o, "field \"f\"", &refused, err, sizeof(err));

  if (v == NULL)
    sl_test_fail(__FILE__, __LINE__, "\"%s\" for %s not expanded: %s", text, url, err);
  CHECK_INT(refused, ==, 0);
  CHECK_STR(v, want);
  sl_free(v);
}

/* Expands text for url, which must be refused for a grant: *refused set, the
 * secret named, its value never shown. */
static void expand_refused(const sl_secrets *s, const char *text, const char *url, const char *name,
                           const char *value, const char *msg) {
  sl_origin o = origin(url);
  char err[512] = "";
  int refused = 0;
  char *v = sl__secrets_expand(s, text, &o, "field \"payload.headers.Authorization\"", &refused, err, sizeof(err));

  if (v != NULL)
    sl_test_fail(__FILE__, __LINE__, "\"%s\" expanded for %s: \"%s\"", text, url, v);
  CHECK_INT(refused, ==, 1);
  CHECK(strncmp(err, "field \"payload.headers.Authorization\": secret ", 46) == 0);
  if (strstr(err, name) == NULL)
    sl_test_fail(__FILE__, __LINE__, "message \"%s\" does not name the secret %s", err, name);
  if (value != NULL && value[0] != '\0' && strstr(err, value) != NULL)
    sl_test_fail(__FILE__, __LINE__, "message \"%s\" shows the value of %s", err, name);
  CHECK_CONTAINS(err, msg);
}

/* A string of n copies of c (heap). */
static char *repeat(char c, size_t n) {
  char *s = malloc(n + 1);

  CHECK(s != NULL);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

/* ---- sl__env_name_valid ---- */

static void test_env_name_valid(void) {
  char *name = repeat('N', SL_SECRET_NAME_MAX + 1);

  CHECK_INT(sl__env_name_valid("A", 1), ==, 1);
  CHECK_INT(sl__env_name_valid("_", 1), ==, 1);
  CHECK_INT(sl__env_name_valid("api_token", 9), ==, 1);
  CHECK_INT(sl__env_name_valid("API_TOKEN_2", 11), ==, 1);
  CHECK_INT(sl__env_name_valid("_9", 2), ==, 1);
  CHECK_INT(sl__env_name_valid("", 0), ==, 0);
  CHECK_INT(sl__env_name_valid("1BAD", 4), ==, 0);
  CHECK_INT(sl__env_name_valid("9", 1), ==, 0);
  CHECK_INT(sl__env_name_valid("A-B", 3), ==, 0);
  CHECK_INT(sl__env_name_valid("A.B", 3), ==, 0);
  CHECK_INT(sl__env_name_valid("A B", 3), ==, 0);
  CHECK_INT(sl__env_name_valid("A=B", 3), ==, 0);
  CHECK_INT(sl__env_name_valid("A\0B", 3), ==, 0);
  CHECK_INT(sl__env_name_valid("\xc3\x89T\xc3\x89", 5), ==, 0);
  CHECK_INT(sl__env_name_valid("A}", 2), ==, 0);
  CHECK_INT(sl__env_name_valid("AB-", 2), ==, 1); /* only n bytes are read */
  CHECK_INT(sl__env_name_valid(name, SL_SECRET_NAME_MAX), ==, 1);
  CHECK_INT(sl__env_name_valid(name, SL_SECRET_NAME_MAX + 1), ==, 0);
  free(name);
}

/* ---- sl__secret_refs_check ---- */

static void test_refs_valid(void) {
  refs_ok("");
  refs_ok("no reference here");
  refs_ok("${env:API_TOKEN}");
  refs_ok("Bearer ${env:API_TOKEN}");
  refs_ok("${env:A}${env:b_2}${env:_}");
  refs_ok("a ${env:A} b ${env:B} c");
  /* not references: other forms are plain text */
  refs_ok("$env:X");
  refs_ok("${ENV:X}");
  refs_ok("${X}");
  refs_ok("${env");
  refs_ok("$${env:X}");
  refs_ok("}${env:X}{");
  /* SLUICE_ is reserved as written: other cases are other variables */
  refs_ok("${env:sluice_redis}");
  refs_ok("${env:SLUICEX}");
}

static void test_refs_malformed(void) {
  refs_bad("${env:X", "malformed secret reference \"${env:X\"");
  refs_bad("Bearer ${env:API_TOKEN", "malformed secret reference");
  refs_bad("${env:1BAD}", "malformed secret reference \"${env:1BAD}\"");
  refs_bad("${env:}", "malformed secret reference");
  refs_bad("${env:A-B}", "malformed");
  refs_bad("${env:A B}", "malformed");
  refs_bad("${env:A.B}", "malformed");
  refs_bad("${env: A}", "malformed");
  refs_bad("${env:${env:A}}", "malformed");
  refs_bad("${env:\xc3\x89}", "malformed");
  /* a bad reference after a good one */
  refs_bad("${env:A} ${env:2}", "\"${env:2}\"");
  /* the message says what is expected */
  refs_bad("${env:X", "expected ${env:NAME}, NAME of [A-Za-z0-9_], at most 128 bytes");
}

static void test_refs_reserved(void) {
  refs_bad("${env:SLUICE_REDIS}", "secret SLUICE_REDIS: names starting SLUICE_ are the worker's own");
  refs_bad("Bearer ${env:SLUICE_REDIS_PASSWORD}", "secret SLUICE_REDIS_PASSWORD:");
  refs_bad("${env:SLUICE_}", "secret SLUICE_:");
  refs_bad("${env:A}${env:SLUICE_WEBHOOK_SECRET}", "SLUICE_WEBHOOK_SECRET");
}

static void test_refs_name_length(void) {
  char text[300];
  char *name = repeat('N', SL_SECRET_NAME_MAX);

  snprintf(text, sizeof(text), "${env:%s}", name);
  refs_ok(text);
  snprintf(text, sizeof(text), "${env:%sN}", name);
  refs_bad(text, "malformed");
  free(name);
}

/* Only s[0..n) is read: a reference cut by n is unclosed, and the message
 * quotes no byte past n (ASan checks the buffer below has no NUL). */
static void test_refs_reads_only_n(void) {
  const char *text = "x ${env:ABC} y";
  char err[256] = "";
  char *exact;

  CHECK_INT(sl__secret_refs_check(text, 2, "field \"f\"", err, sizeof(err)), ==, 0);
  CHECK_INT(sl__secret_refs_check(text, 11, "field \"f\"", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "\"${env:ABC\"");
  CHECK(strstr(err, "ABC}") == NULL);
  CHECK_INT(sl__secret_refs_check(text, 12, "field \"f\"", err, sizeof(err)), ==, 0);

  exact = malloc(9);
  CHECK(exact != NULL);
  memcpy(exact, "${env:AB", 8);
  exact[8] = 'C'; /* no terminator: 9 bytes, all of them text */
  CHECK_INT(sl__secret_refs_check(exact, 9, "field \"f\"", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "\"${env:ABC\"");
  free(exact);
}

/* ---- sl__secrets_grant ---- */

static void test_grant_and_expand_any_host(void) {
  sl_secrets *s = NULL;

  setenv("API_TOKEN", "tok-123", 1);
  grant_ok(&s, "API_TOKEN");
  expands_to(s, "Bearer ${env:API_TOKEN}", "https://api.example.com/", "Bearer tok-123");
  expands_to(s, "${env:API_TOKEN}", "http://anything.example.net:8080/", "tok-123");
  expands_to(s, "${env:API_TOKEN}${env:API_TOKEN}", "http://[::1]:9000/", "tok-123tok-123");
  sl__secrets_free(s);
}

static void test_grant_refused(void) {
  setenv("SLUICE_REDIS", "redis://:hunter2@db:6379", 1);
  setenv("SLUICE_WEBHOOK_SECRET", "whsec", 1);
  setenv("GOOD", "v", 1);
  unsetenv("NOT_SET_ANYWHERE");
  grant_bad("SLUICE_REDIS", "--secret SLUICE_REDIS: names starting SLUICE_ are the worker's own and can never be "
                            "granted");
  grant_bad("SLUICE_WEBHOOK_SECRET@api.example.com", "names starting SLUICE_");
  grant_bad("NOT_SET_ANYWHERE", "--secret NOT_SET_ANYWHERE: the variable is not set in the worker's environment");
  grant_bad("NOT_SET_ANYWHERE@api.example.com", "is not set");
  grant_bad("1BAD", "--secret \"1BAD\": expected NAME or NAME@HOST");
  grant_bad("", "expected NAME or NAME@HOST");
  grant_bad("@api.example.com", "expected NAME or NAME@HOST");
  grant_bad("A-B", "expected NAME");
  grant_bad("GOOD@", "--secret GOOD@: give a host after @, or no @");
  grant_bad("GOOD@bad host", "--secret GOOD: pattern \"bad host\"");
  grant_bad("GOOD@ftp://x", "only http:// and https://");
  grant_bad("GOOD@x:0", "the port must be a number");
}

/* An empty value is a value: set is what counts. */
static void test_grant_empty_value(void) {
  sl_secrets *s = NULL;

  setenv("EMPTY", "", 1);
  grant_ok(&s, "EMPTY");
  expands_to(s, "[${env:EMPTY}]", "https://x.example.com/", "[]");
  sl__secrets_free(s);
}

/* The value is read when granted; later changes to the environment do not
 * reach requests. */
static void test_grant_reads_value_once(void) {
  sl_secrets *s = NULL;

  setenv("ROTATING", "first", 1);
  grant_ok(&s, "ROTATING");
  setenv("ROTATING", "second", 1);
  expands_to(s, "${env:ROTATING}", "https://x.example.com/", "first");
  unsetenv("ROTATING");
  expands_to(s, "${env:ROTATING}", "https://x.example.com/", "first");
  sl__secrets_free(s);
}

static void test_grant_limit(void) {
  sl_secrets *s = NULL;
  char name[32];
  char err[256];

  for (int i = 0; i < SL_SECRET_MAX; i++) {
    snprintf(name, sizeof(name), "S%d", i);
    setenv(name, name, 1);
    grant_ok(&s, name);
  }
  /* granting a name again is not a new grant */
  grant_ok(&s, "S0@api.example.com");
  setenv("ONE_MORE", "x", 1);
  CHECK_INT(sl__secrets_grant(&s, "ONE_MORE", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_STR(err, "--secret: at most 256 secrets");
  expands_to(s, "${env:S0}/${env:S255}", "https://x.example.com/", "S0/S255");
  sl__secrets_free(s);
}

static void test_grant_name_length(void) {
  sl_secrets *s = NULL;
  char *name = repeat('N', SL_SECRET_NAME_MAX + 1);
  char text[300];

  name[SL_SECRET_NAME_MAX] = '\0';
  setenv(name, "long", 1);
  grant_ok(&s, name);
  snprintf(text, sizeof(text), "${env:%s}", name);
  expands_to(s, text, "https://x.example.com/", "long");
  sl__secrets_free(s);
  name[SL_SECRET_NAME_MAX] = 'N';
  setenv(name, "longer", 1);
  grant_bad(name, "expected NAME or NAME@HOST");
  free(name);
}

/* ---- sl__secrets_expand: hosts ---- */

static void test_expand_bound_to_host(void) {
  static const char *const value = "s3cr3t-VALUE";
  sl_secrets *s = NULL;

  setenv("API_TOKEN", value, 1);
  grant_ok(&s, "API_TOKEN@api.example.com");
  expands_to(s, "Bearer ${env:API_TOKEN}", "https://api.example.com/", "Bearer s3cr3t-VALUE");
  expands_to(s, "Bearer ${env:API_TOKEN}", "http://api.example.com/", "Bearer s3cr3t-VALUE");
  expands_to(s, "${env:API_TOKEN}", "https://API.EXAMPLE.COM./v1", "s3cr3t-VALUE");
  expand_refused(s, "Bearer ${env:API_TOKEN}", "https://api.example.com:8443/", "API_TOKEN", value,
                 "secret API_TOKEN is not granted to this worker for https://api.example.com:8443 (only for "
                 "api.example.com)");
  expand_refused(s, "Bearer ${env:API_TOKEN}", "https://evil.example.com/", "API_TOKEN", value,
                 "for https://evil.example.com (only for api.example.com)");
  expand_refused(s, "Bearer ${env:API_TOKEN}", "http://api.example.com.evil.net/", "API_TOKEN", value,
                 "for http://api.example.com.evil.net");
  expand_refused(s, "Bearer ${env:API_TOKEN}", "http://api.example.com@evil.com/", "API_TOKEN", value,
                 "for http://evil.com");
  expand_refused(s, "Bearer ${env:API_TOKEN}", "http://api.example.com:443/", "API_TOKEN", value,
                 "not granted to this worker for http://api.example.com:443");
  sl__secrets_free(s);
}

static void test_expand_scheme_and_port_patterns(void) {
  sl_secrets *s = NULL;

  setenv("TLS_ONLY", "t", 1);
  setenv("ON_PORT", "p", 1);
  setenv("WILD", "w", 1);
  grant_ok(&s, "TLS_ONLY@https://api.example.com");
  grant_ok(&s, "ON_PORT@api.example.com:8443");
  grant_ok(&s, "WILD@*.example.org");
  expands_to(s, "${env:TLS_ONLY}", "https://api.example.com/", "t");
  expand_refused(s, "${env:TLS_ONLY}", "http://api.example.com/", "TLS_ONLY", NULL, "only for https://api.example.com");
  expands_to(s, "${env:ON_PORT}", "https://api.example.com:8443/", "p");
  expand_refused(s, "${env:ON_PORT}", "https://api.example.com/", "ON_PORT", NULL, "only for api.example.com:8443");
  expands_to(s, "${env:WILD}", "https://a.example.org/", "w");
  expand_refused(s, "${env:WILD}", "https://example.org/", "WILD", NULL, "only for *.example.org");
  sl__secrets_free(s);
}

/* Granting a name again adds hosts; a grant without a host allows any. */
static void test_expand_grants_accumulate(void) {
  sl_secrets *s = NULL;

  setenv("MULTI", "m", 1);
  grant_ok(&s, "MULTI@a.example.com");
  grant_ok(&s, "MULTI@b.example.com,c.example.com:81");
  expands_to(s, "${env:MULTI}", "https://a.example.com/", "m");
  expands_to(s, "${env:MULTI}", "https://b.example.com/", "m");
  expands_to(s, "${env:MULTI}", "http://c.example.com:81/", "m");
  expand_refused(s, "${env:MULTI}", "https://d.example.com/", "MULTI", NULL,
                 "only for a.example.com,b.example.com,c.example.com:81");
  grant_ok(&s, "MULTI");
  expands_to(s, "${env:MULTI}", "https://d.example.com/", "m");
  sl__secrets_free(s);
}

static void test_expand_not_granted(void) {
  sl_secrets *s = NULL;

  setenv("GRANTED", "granted-value-zq9", 1);
  setenv("OTHER", "other-value", 1);
  setenv("SLUICE_REDIS", "redis://:hunter2@db:6379", 1);
  grant_ok(&s, "GRANTED");
  expand_refused(s, "${env:GRANTED} ${env:OTHER}", "https://x.example.com/", "OTHER", "other-value",
                 "field \"payload.headers.Authorization\": secret OTHER is not granted to this worker");
  expand_refused(s, "${env:SLUICE_REDIS}", "https://x.example.com/", "SLUICE_REDIS", "hunter2",
                 "secret SLUICE_REDIS is not granted to this worker");
  /* no grants at all */
  expand_refused(NULL, "${env:GRANTED}", "https://x.example.com/", "GRANTED", "granted-value-zq9", "is not granted");
  sl__secrets_free(s);
}

/* A malformed reference reaching the worker is an error of the item, not a
 * missing grant. */
static void test_expand_malformed(void) {
  sl_secrets *s = NULL;
  sl_origin o = origin("https://x.example.com/");
  char err[256] = "";
  int refused = 7;
  char *v;

  setenv("A", "a", 1);
  grant_ok(&s, "A");
  v = sl__secrets_expand(s, "x ${env:A", &o, "field \"f\"", &refused, err, sizeof(err));
  CHECK(v == NULL);
  CHECK_INT(refused, ==, 0);
  CHECK_STR(err, "field \"f\": malformed secret reference \"${env:A\" (expected ${env:NAME})");
  v = sl__secrets_expand(s, "${env:1A}", &o, "field \"f\"", &refused, err, sizeof(err));
  CHECK(v == NULL);
  CHECK_INT(refused, ==, 0);
  sl__secrets_free(s);
}

/* ---- sl__secrets_expand: values ---- */

static void test_expand_text_kept(void) {
  sl_secrets *s = NULL;

  setenv("A", "alpha", 1);
  setenv("B", "beta", 1);
  grant_ok(&s, "A");
  grant_ok(&s, "B");
  expands_to(s, "", "https://x.example.com/", "");
  expands_to(s, "plain", "https://x.example.com/", "plain");
  expands_to(s, "$env:A ${A} ${ENV:A} ${env", "https://x.example.com/", "$env:A ${A} ${ENV:A} ${env");
  expands_to(s, "<${env:A}.${env:B}|${env:A}>", "https://x.example.com/", "<alpha.beta|alpha>");
  expands_to(s, "$${env:A}}", "https://x.example.com/", "$alpha}");
  expands_to(s, "caf\xc3\xa9 ${env:B}", "https://x.example.com/", "caf\xc3\xa9 beta");
  sl__secrets_free(s);
}

/* A value is inserted once, as it is: a reference inside a value is text. */
static void test_expand_not_recursive(void) {
  sl_secrets *s = NULL;

  setenv("OUTER", "${env:INNER}", 1);
  setenv("INNER", "inner-value", 1);
  grant_ok(&s, "OUTER");
  grant_ok(&s, "INNER@only.example.com");
  expands_to(s, "[${env:OUTER}]", "https://x.example.com/", "[${env:INNER}]");
  sl__secrets_free(s);
}

/* A value that cannot be a header value is returned by expand: the worker
 * checks header values again once resolved (http.c), with this check. */
static void test_expand_crlf_value_caught_by_value_check(void) {
  static const char *const values[] = {"a\r\nX-Injected: 1", "a\rb", "a\nb", "a\x01" "b", "a\x7f" "b", NULL};
  sl_secrets *s = NULL;
  sl_origin o = origin("https://api.example.com/");
  char err[256];

  for (int i = 0; values[i] != NULL; i++) {
    int refused = 7;
    char *v;

    setenv("BAD_VALUE", values[i], 1);
    sl__secrets_free(s);
    s = NULL;
    grant_ok(&s, "BAD_VALUE");
    v = sl__secrets_expand(s, "Bearer ${env:BAD_VALUE}", &o, "field \"payload.headers.Authorization\"", &refused,
                           err, sizeof(err));
    CHECK(v != NULL);
    CHECK_INT(refused, ==, 0);
    CHECK_INT(strncmp(v, "Bearer ", 7), ==, 0);
    CHECK_STR(v + 7, values[i]);
    CHECK_INT(sl__http_value_check(v, strlen(v), "field \"payload.headers.Authorization\"", err, sizeof(err)), ==,
              SL_EINVAL);
    CHECK_CONTAINS(err, "field \"payload.headers.Authorization\": the value holds ");
    sl_free(v);
  }
  sl__secrets_free(s);
}

/* The result is limited: 1 MiB after expansion. */
static void test_expand_size_limit(void) {
  sl_secrets *s = NULL;
  sl_origin o = origin("https://x.example.com/");
  char *big = repeat('v', 512 * 1024);
  char err[256] = "";
  int refused = 7;
  char *v;

  setenv("BIG", big, 1);
  grant_ok(&s, "BIG");
  /* exactly 1 MiB */
  v = sl__secrets_expand(s, "${env:BIG}${env:BIG}", &o, "field \"payload.body\"", &refused, err, sizeof(err));
  CHECK(v != NULL);
  CHECK_INT(strlen(v), ==, 1024 * 1024);
  sl_free(v);
  /* one byte over */
  v = sl__secrets_expand(s, "${env:BIG}${env:BIG}!", &o, "field \"payload.body\"", &refused, err, sizeof(err));
  CHECK(v == NULL);
  CHECK_INT(refused, ==, 0);
  CHECK_CONTAINS(err, "field \"payload.body\": ");
  CHECK_CONTAINS(err, "1048576 bytes");
  CHECK(strstr(err, "vvvv") == NULL);
  sl__secrets_free(s);
  free(big);
}

/* ---- Allocation failures ---- */

#define MAX_ALLOCS 200 /* no single call here allocates more often */

static void test_grant_alloc_failures(void) {
  static const char *const specs[] = {"FAULTY", "FAULTY@a.example.com", "FAULTY@b.example.com,a.example.com", NULL};

  setenv("FAULTY", "fault-value", 1);
  for (int i = 0; specs[i] != NULL; i++) {
    long fault;

    for (fault = 0; fault < MAX_ALLOCS; fault++) {
      sl_secrets *s = NULL;
      char err[256] = "";
      int rc;

      sl__alloc_fail_after(fault);
      rc = sl__secrets_grant(&s, specs[i], err, sizeof(err));
      sl__alloc_fail_after(-1);
      if (rc == 0) {
        expands_to(s, "${env:FAULTY}", "https://a.example.com/", "fault-value");
        sl__secrets_free(s);
        break;
      }
      if (rc != SL_ENOMEM)
        sl_test_fail(__FILE__, __LINE__, "grant %s, fault %ld: rc %d (%s)", specs[i], fault, rc, err);
      CHECK_STR(err, "out of memory");
      /* what was granted stays usable: the same grant again completes it */
      if (s != NULL) {
        CHECK_INT(sl__secrets_grant(&s, specs[i], err, sizeof(err)), ==, 0);
        expands_to(s, "${env:FAULTY}", "https://a.example.com/", "fault-value");
      }
      sl__secrets_free(s);
    }
    /* the set, the value, and for a host the list and its patterns */
    CHECK_INT(fault, ==, i == 0 ? 2 : 4);
  }
}

static void test_expand_alloc_failures(void) {
  static const char *const texts[] = {
    "${env:A}",
    "",
    "no reference, but long enough to need more than one block of the output buffer: "
    "................................................................................",
    "Bearer ${env:A} and ${env:LONG} and ${env:A} again",
    NULL,
  };
  sl_secrets *s = NULL;
  sl_origin o = origin("https://api.example.com/");
  char *longv = repeat('L', 3000);

  setenv("A", "a-value", 1);
  setenv("LONG", longv, 1);
  grant_ok(&s, "A@api.example.com");
  grant_ok(&s, "LONG");
  for (int i = 0; texts[i] != NULL; i++) {
    char err[256] = "";
    int refused = 0;
    char *want = sl__secrets_expand(s, texts[i], &o, "field \"f\"", &refused, err, sizeof(err));
    long fault;

    CHECK(want != NULL);
    for (fault = 0; fault < MAX_ALLOCS; fault++) {
      char *v;

      refused = 7;
      err[0] = '\0';
      sl__alloc_fail_after(fault);
      v = sl__secrets_expand(s, texts[i], &o, "field \"f\"", &refused, err, sizeof(err));
      sl__alloc_fail_after(-1);
      if (v != NULL) {
        CHECK_STR(v, want);
        sl_free(v);
        break;
      }
      CHECK_INT(refused, ==, -1); /* out of memory, not a grant */
      CHECK_STR(err, "out of memory");
    }
    CHECK_INT(fault, >=, 1);
    CHECK(fault < MAX_ALLOCS);
    sl_free(want);
  }
  sl__secrets_free(s);
  free(longv);
}

static void test_free_null(void) {
  sl__secrets_free(NULL);
}

static const sl_test tests[] = {
  {"env_name_valid", test_env_name_valid, 10},
  {"refs_valid", test_refs_valid, 10},
  {"refs_malformed", test_refs_malformed, 10},
  {"refs_reserved", test_refs_reserved, 10},
  {"refs_name_length", test_refs_name_length, 10},
  {"refs_reads_only_n", test_refs_reads_only_n, 10},
  {"grant_and_expand_any_host", test_grant_and_expand_any_host, 10},
  {"grant_refused", test_grant_refused, 10},
  {"grant_empty_value", test_grant_empty_value, 10},
  {"grant_reads_value_once", test_grant_reads_value_once, 10},
  {"grant_limit", test_grant_limit, 10},
  {"grant_name_length", test_grant_name_length, 10},
  {"expand_bound_to_host", test_expand_bound_to_host, 10},
  {"expand_scheme_and_port_patterns", test_expand_scheme_and_port_patterns, 10},
  {"expand_grants_accumulate", test_expand_grants_accumulate, 10},
  {"expand_not_granted", test_expand_not_granted, 10},
  {"expand_malformed", test_expand_malformed, 10},
  {"expand_text_kept", test_expand_text_kept, 10},
  {"expand_not_recursive", test_expand_not_recursive, 10},
  {"expand_crlf_value_caught_by_value_check", test_expand_crlf_value_caught_by_value_check, 10},
  {"expand_size_limit", test_expand_size_limit, 10},
  {"grant_alloc_failures", test_grant_alloc_failures, 30},
  {"expand_alloc_failures", test_expand_alloc_failures, 30},
  {"free_null", test_free_null, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
