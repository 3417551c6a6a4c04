/*
 * Unit tests for origins and allow-lists (src/allow.c): sl__origin_parse on
 * the URLs a producer may write (default and explicit ports, case, one
 * trailing dot, IPv6, a user part that hides the real host) and the ones it
 * may not; sl__origin_describe; and sl__allow_add / sl__allow_match for every
 * pattern form of allow.h (host, host:port, scheme://host, *.domain,
 * [IPv6]:port), each checked on both sides: the origins it opens and the
 * ones next to them that it must keep closed. Also the pattern errors with
 * the option and the pattern named, the SL_ALLOW_MAX limit, and allocation
 * failures in sl__allow_add.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "allow.h"
#include "harness.h"

/* ---- Helpers ---- */

/* Parses a URL that must be accepted and checks its origin. */
static void origin_is(const char *url, const char *scheme, const char *host, int port) {
  sl_origin o;
  char err[256] = "";
  int rc = sl__origin_parse(url, &o, err, sizeof(err));

  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "URL %s refused (rc %d): %s", url, rc, err);
  if (strcmp(o.scheme, scheme) != 0 || strcmp(o.host, host) != 0 || o.port != port)
    sl_test_fail(__FILE__, __LINE__, "URL %s: got %s %s %d, expected %s %s %d", url, o.scheme, o.host, o.port,
                 scheme, host, port);
}

/* Parses a URL that must be refused with a message holding msg. */
static void origin_bad(const char *url, const char *msg) {
  sl_origin o;
  char err[256] = "";
  int rc = sl__origin_parse(url, &o, err, sizeof(err));

  if (rc != SL_EINVAL)
    sl_test_fail(__FILE__, __LINE__, "URL %s: rc %d (%s), expected SL_EINVAL", url, rc, err);
  if (strstr(err, msg) == NULL)
    sl_test_fail(__FILE__, __LINE__, "URL %s: message \"%s\" lacks \"%s\"", url, err, msg);
}

/* A list of the given patterns; they must all be accepted. */
static sl_allow *list_of(const char *patterns) {
  sl_allow *a = NULL;
  char err[512] = "";
  int rc = sl__allow_add(&a, patterns, "--http-allow", err, sizeof(err));

  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "patterns %s refused (rc %d): %s", patterns, rc, err);
  CHECK(a != NULL);
  return a;
}

/* 1 when the URL's origin matches the list (the URL must parse). */
static int url_matches(const sl_allow *a, const char *url) {
  sl_origin o;
  char err[256] = "";

  if (sl__origin_parse(url, &o, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "URL %s refused: %s", url, err);
  return sl__allow_match(a, &o);
}

#define MATCHES(a, url)                                                                            \
  do {                                                                                             \
    if (!url_matches((a), (url)))                                                                  \
      sl_test_fail(__FILE__, __LINE__, "%s should match the list", (url));                         \
  } while (0)

#define NO_MATCH(a, url)                                                                           \
  do {                                                                                             \
    if (url_matches((a), (url)))                                                                   \
      sl_test_fail(__FILE__, __LINE__, "%s should not match the list", (url));                     \
  } while (0)

/* A pattern list that must be refused, with the option and msg in the message. */
static void pattern_bad(const char *patterns, const char *msg) {
  sl_allow *a = NULL;
  char err[512] = "";
  int rc = sl__allow_add(&a, patterns, "--http-allow", err, sizeof(err));

  if (rc != SL_EINVAL)
    sl_test_fail(__FILE__, __LINE__, "patterns \"%s\": rc %d (%s), expected SL_EINVAL", patterns, rc, err);
  if (strncmp(err, "--http-allow: ", 14) != 0)
    sl_test_fail(__FILE__, __LINE__, "patterns \"%s\": message \"%s\" does not name the option", patterns, err);
  if (strstr(err, msg) == NULL)
    sl_test_fail(__FILE__, __LINE__, "patterns \"%s\": message \"%s\" lacks \"%s\"", patterns, err, msg);
  sl__allow_free(a);
}

/* ---- sl__origin_parse ---- */

static void test_origin_default_ports(void) {
  origin_is("http://api.example.com/", "http", "api.example.com", 80);
  origin_is("https://api.example.com/", "https", "api.example.com", 443);
  origin_is("https://api.example.com", "https", "api.example.com", 443);
  origin_is("https://api.example.com/a/b?c=d#e", "https", "api.example.com", 443);
  /* an explicit default port is the same origin */
  origin_is("https://api.example.com:443/", "https", "api.example.com", 443);
  origin_is("http://api.example.com:80/", "http", "api.example.com", 80);
}

static void test_origin_explicit_ports(void) {
  origin_is("https://api.example.com:8443/", "https", "api.example.com", 8443);
  origin_is("http://api.example.com:443/", "http", "api.example.com", 443);
  origin_is("https://api.example.com:80/", "https", "api.example.com", 80);
  origin_is("http://127.0.0.1:8080/x", "http", "127.0.0.1", 8080);
  origin_is("http://h:1/", "http", "h", 1);
  origin_is("http://h:65535/", "http", "h", 65535);
}

static void test_origin_case_and_dot(void) {
  origin_is("HTTPS://API.Example.COM/", "https", "api.example.com", 443);
  origin_is("http://api.example.com./", "http", "api.example.com", 80);
  origin_is("HTTP://API.Example.COM.:80/x", "http", "api.example.com", 80);
  /* only one trailing dot is removed */
  origin_is("https://api.example.com../", "https", "api.example.com.", 443);
}

static void test_origin_ipv6(void) {
  origin_is("http://[::1]:9000/", "http", "[::1]", 9000);
  origin_is("https://[::1]/", "https", "[::1]", 443);
  origin_is("http://[2001:DB8::ABCD]/", "http", "[2001:db8::abcd]", 80);
}

/* The host is the one the request goes to, not text that looks like one. */
static void test_origin_user_part(void) {
  origin_is("http://api.example.com@evil.com/", "http", "evil.com", 80);
  origin_is("http://api.example.com:443@evil.com/", "http", "evil.com", 80);
  origin_is("https://user:pass@api.example.com:8443/", "https", "api.example.com", 8443);
  origin_is("http://evil.com#@api.example.com/", "http", "evil.com", 80);
  origin_is("http://evil.com?@api.example.com/", "http", "evil.com", 80);
}

static void test_origin_refused(void) {
  origin_bad("ftp://example.com/", "scheme ftp is not http or https");
  origin_bad("file:///etc/passwd", "is not http or https");
  origin_bad("gopher://example.com/", "");
  origin_bad("example.com", "not a URL");
  origin_bad("/just/a/path", "not a URL");
  origin_bad("", "not a URL");
  origin_bad("http://", "");
  origin_bad("http://x:0/", "port 0 is out of range");
  origin_bad("http://x:65536/", "");
  origin_bad("http://a b/", "");
  origin_bad("mailto:a@example.com", "");
}

static void test_origin_host_length(void) {
  char url[400];
  char host[300];

  memset(host, 'h', sizeof(host));
  host[SL_HOST_MAX] = '\0';
  snprintf(url, sizeof(url), "http://%s/", host);
  origin_is(url, "http", host, 80);
  /* 255 bytes and a trailing dot are still 255 */
  snprintf(url, sizeof(url), "http://%s./", host);
  origin_is(url, "http", host, 80);
  host[SL_HOST_MAX] = 'h';
  host[SL_HOST_MAX + 1] = '\0';
  snprintf(url, sizeof(url), "http://%s/", host);
  origin_bad(url, "longer than 255 bytes");
}

static void test_origin_describe(void) {
  static const struct {
    const char *url;
    const char *want;
  } cases[] = {
    {"https://API.example.com/x", "https://api.example.com"},
    {"http://api.example.com:80/", "http://api.example.com"},
    {"https://api.example.com:8443/", "https://api.example.com:8443"},
    {"http://api.example.com:443/", "http://api.example.com:443"},
    {"https://api.example.com:80/", "https://api.example.com:80"},
    {"http://[::1]:9000/", "http://[::1]:9000"},
  };
  char out[300];
  char small[12];
  sl_origin o;
  char err[256];

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    CHECK_INT(sl__origin_parse(cases[i].url, &o, err, sizeof(err)), ==, 0);
    sl__origin_describe(&o, out, sizeof(out));
    CHECK_STR(out, cases[i].want);
  }
  /* cut, never overrun */
  CHECK_INT(sl__origin_parse("https://api.example.com:8443/", &o, err, sizeof(err)), ==, 0);
  memset(small, 'z', sizeof(small));
  sl__origin_describe(&o, small, sizeof(small));
  CHECK_STR(small, "https://api");
}

/* ---- Patterns: host, host:port, scheme://host ---- */

static void test_match_host_default_ports_only(void) {
  sl_allow *a = list_of("api.example.com");

  MATCHES(a, "http://api.example.com/");
  MATCHES(a, "https://api.example.com/");
  MATCHES(a, "https://api.example.com:443/x");
  MATCHES(a, "http://API.EXAMPLE.COM./");
  /* listing a host never opens its other ports */
  NO_MATCH(a, "https://api.example.com:8443/");
  NO_MATCH(a, "http://api.example.com:443/");
  NO_MATCH(a, "https://api.example.com:80/");
  NO_MATCH(a, "http://api.example.com:8080/");
  /* nor other hosts */
  NO_MATCH(a, "https://evil.example.com/");
  NO_MATCH(a, "https://example.com/");
  NO_MATCH(a, "https://xapi.example.com/");
  NO_MATCH(a, "https://sub.api.example.com/");
  NO_MATCH(a, "http://api.example.com.evil.net/");
  NO_MATCH(a, "http://api.example.com@evil.com/");
  NO_MATCH(a, "https://api.example.co/");
  sl__allow_free(a);
}

static void test_match_host_port(void) {
  sl_allow *a = list_of("api.example.com:8443");

  MATCHES(a, "https://api.example.com:8443/");
  MATCHES(a, "http://api.example.com:8443/");
  NO_MATCH(a, "https://api.example.com/");
  NO_MATCH(a, "http://api.example.com/");
  NO_MATCH(a, "https://api.example.com:8444/");
  NO_MATCH(a, "https://other.example.com:8443/");
  sl__allow_free(a);
}

static void test_match_scheme_host(void) {
  sl_allow *a = list_of("https://api.example.com");

  MATCHES(a, "https://api.example.com/");
  MATCHES(a, "https://api.example.com:443/");
  NO_MATCH(a, "http://api.example.com/");
  NO_MATCH(a, "http://api.example.com:443/");
  NO_MATCH(a, "https://api.example.com:8443/");
  sl__allow_free(a);

  a = list_of("http://127.0.0.1:8080");
  MATCHES(a, "http://127.0.0.1:8080/x");
  NO_MATCH(a, "https://127.0.0.1:8080/");
  NO_MATCH(a, "http://127.0.0.1/");
  NO_MATCH(a, "http://127.0.0.1:8081/");
  sl__allow_free(a);

  /* the scheme is case-insensitive too, and a trailing '/' is allowed */
  a = list_of("HTTPS://API.Example.com/");
  MATCHES(a, "https://api.example.com/");
  NO_MATCH(a, "http://api.example.com/");
  sl__allow_free(a);
}

static void test_match_case_and_trailing_dot(void) {
  sl_allow *a = list_of("API.EXAMPLE.COM.");

  MATCHES(a, "https://api.example.com/");
  MATCHES(a, "https://Api.Example.Com./");
  NO_MATCH(a, "https://api.example.com../");
  sl__allow_free(a);
}

/* Names are matched as written, not the addresses they resolve to. */
static void test_match_names_not_addresses(void) {
  sl_allow *a = list_of("127.0.0.1");
  sl_origin o;
  char err[256];

  MATCHES(a, "http://127.0.0.1/");
  NO_MATCH(a, "http://localhost/");
  NO_MATCH(a, "http://127.0.0.2/");
  /* libcurl may rewrite a numeric host to its dotted form: whatever host it
   * reports is the one it connects to, and that is what is matched */
  CHECK_INT(sl__origin_parse("http://2130706433/", &o, err, sizeof(err)), ==, 0);
  CHECK_INT(sl__allow_match(a, &o), ==, strcmp(o.host, "127.0.0.1") == 0);
  sl__allow_free(a);

  a = list_of("localhost");
  MATCHES(a, "http://localhost/");
  NO_MATCH(a, "http://127.0.0.1/");
  NO_MATCH(a, "http://[::1]/");
  sl__allow_free(a);
}

/* ---- Patterns: wildcards and IPv6 ---- */

static void test_match_wildcard(void) {
  sl_allow *a = list_of("*.example.org");

  MATCHES(a, "https://a.example.org/");
  MATCHES(a, "http://a.example.org/");
  MATCHES(a, "https://a.b.example.org/");
  MATCHES(a, "https://A.EXAMPLE.ORG./");
  /* not the domain itself, nor names that only end like it */
  NO_MATCH(a, "https://example.org/");
  NO_MATCH(a, "https://evil-example.org/");
  NO_MATCH(a, "https://aexample.org/");
  NO_MATCH(a, "https://a.example.org.evil.net/");
  NO_MATCH(a, "https://a.example.orgx/");
  /* the default port of the scheme only */
  NO_MATCH(a, "https://a.example.org:8443/");
  NO_MATCH(a, "http://a.example.org:443/");
  sl__allow_free(a);

  a = list_of("https://*.example.org:8443");
  MATCHES(a, "https://a.example.org:8443/");
  NO_MATCH(a, "http://a.example.org:8443/");
  NO_MATCH(a, "https://a.example.org/");
  NO_MATCH(a, "https://example.org:8443/");
  sl__allow_free(a);
}

static void test_match_ipv6(void) {
  sl_allow *a = list_of("[::1]:9000");

  MATCHES(a, "http://[::1]:9000/");
  MATCHES(a, "https://[::1]:9000/");
  NO_MATCH(a, "http://[::1]:9001/");
  NO_MATCH(a, "http://[::1]/");
  NO_MATCH(a, "http://[::2]:9000/");
  NO_MATCH(a, "http://localhost:9000/");
  sl__allow_free(a);

  a = list_of("[2001:DB8::ABCD]");
  MATCHES(a, "http://[2001:db8::abcd]/");
  MATCHES(a, "https://[2001:DB8::abcd]/");
  NO_MATCH(a, "http://[2001:db8::abcd]:8080/");
  sl__allow_free(a);
}

/* ---- Lists ---- */

static void test_list_several_and_empty_entries(void) {
  sl_allow *a = list_of(",a.example.com,,https://b.example.com:8443,");
  char out[256];

  MATCHES(a, "http://a.example.com/");
  MATCHES(a, "https://b.example.com:8443/");
  NO_MATCH(a, "https://b.example.com/");
  NO_MATCH(a, "http://c.example.com/");
  sl__allow_describe(a, out, sizeof(out));
  CHECK_STR(out, "a.example.com,https://b.example.com:8443");
  sl__allow_free(a);

  /* an empty list is a list that matches nothing */
  a = list_of("");
  NO_MATCH(a, "http://a.example.com/");
  sl__allow_describe(a, out, sizeof(out));
  CHECK_STR(out, "");
  sl__allow_free(a);
}

static void test_list_add_appends(void) {
  sl_allow *a = list_of("a.example.com");
  char err[256];
  char out[256];

  CHECK_INT(sl__allow_add(&a, "b.example.com:81", "--http-allow", err, sizeof(err)), ==, 0);
  MATCHES(a, "http://a.example.com/");
  MATCHES(a, "http://b.example.com:81/");
  sl__allow_describe(a, out, sizeof(out));
  CHECK_STR(out, "a.example.com,b.example.com:81");
  /* a bad pattern later in a list keeps the ones before it */
  CHECK_INT(sl__allow_add(&a, "c.example.com,bad pattern,d.example.com", "--http-allow", err, sizeof(err)), ==,
            SL_EINVAL);
  CHECK_CONTAINS(err, "\"bad pattern\"");
  MATCHES(a, "http://c.example.com/");
  NO_MATCH(a, "http://d.example.com/");
  sl__allow_free(a);
}

static void test_list_null_matches_nothing(void) {
  sl_origin o;
  char err[256];
  char out[16];

  CHECK_INT(sl__origin_parse("http://a.example.com/", &o, err, sizeof(err)), ==, 0);
  CHECK_INT(sl__allow_match(NULL, &o), ==, 0);
  memset(out, 'z', sizeof(out));
  sl__allow_describe(NULL, out, sizeof(out));
  CHECK_STR(out, "");
  sl__allow_free(NULL);
}

static void test_list_limit(void) {
  sl_allow *a = NULL;
  char list[SL_ALLOW_MAX * 24];
  char url[64];
  char err[256];
  size_t n = 0;

  for (int i = 0; i < SL_ALLOW_MAX; i++)
    n += (size_t)snprintf(list + n, sizeof(list) - n, "%sh%d.example.com", i ? "," : "", i);
  CHECK_INT(sl__allow_add(&a, list, "--http-allow", err, sizeof(err)), ==, 0);
  MATCHES(a, "http://h0.example.com/");
  snprintf(url, sizeof(url), "http://h%d.example.com/", SL_ALLOW_MAX - 1);
  MATCHES(a, url);
  /* one more, in a later call, is refused; the list is kept */
  CHECK_INT(sl__allow_add(&a, "one-more.example.com", "--http-allow", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_STR(err, "--http-allow: at most 256 patterns");
  NO_MATCH(a, "http://one-more.example.com/");
  MATCHES(a, url);
  sl__allow_free(a);

  /* and in the same call */
  a = NULL;
  snprintf(list + n, sizeof(list) - n, ",one-more.example.com");
  CHECK_INT(sl__allow_add(&a, list, "--http-allow", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "at most 256 patterns");
  sl__allow_free(a);
}

/* ---- Pattern errors ---- */

static void test_pattern_errors(void) {
  pattern_bad("ftp://example.com", "pattern \"ftp://example.com\": only http:// and https:// can be named");
  pattern_bad("http://", "only http:// and https://");
  pattern_bad("example.com:0", "the port must be a number from 1 to 65535");
  pattern_bad("example.com:65536", "the port must be a number from 1 to 65535");
  pattern_bad("example.com:80x", "the port must be a number");
  pattern_bad("example.com:", "expected HOST:PORT");
  pattern_bad("::1", "the port must be a number");
  pattern_bad("[::1", "an IPv6 address needs its closing ]");
  pattern_bad("[::1]x", "expected HOST:PORT");
  pattern_bad("example.com/path", "a host pattern has no path");
  pattern_bad("https://example.com/a", "a host pattern has no path");
  pattern_bad("*", "expected a host");
  pattern_bad("*.", "expected a host");
  pattern_bad("a.*.example.com", "expected a host");
  pattern_bad("**.example.com", "expected a host");
  pattern_bad("*example.com", "expected a host");
  pattern_bad(":8443", "expected a host");
  pattern_bad("https://", "");
}

static void test_pattern_bad_characters(void) {
  static const char *const bad[] = {
    "user@example.com", "example.com?x", "example.com#x", "exa mple.com", "example.com\\x",
    "ex\tample.com", "caf\xc3\xa9.example", "ex\x7f.com", "ex\x01.com", NULL,
  };

  for (int i = 0; bad[i] != NULL; i++)
    pattern_bad(bad[i], "holds a character a host pattern cannot");
  /* a space after a comma is a character of the next pattern */
  pattern_bad("a.example.com, b.example.com", "\" b.example.com\"");
}

static void test_pattern_lengths(void) {
  char host[400];
  char list[420];
  sl_allow *a;

  memset(host, 'h', sizeof(host));
  host[SL_HOST_MAX] = '\0';
  a = list_of(host);
  snprintf(list, sizeof(list), "http://%s/", host);
  MATCHES(a, list);
  sl__allow_free(a);
  host[SL_HOST_MAX] = 'h';
  host[SL_HOST_MAX + 1] = '\0';
  pattern_bad(host, "expected a host");
  /* over 300 bytes, the pattern is refused before it is read */
  memset(host, 'h', sizeof(host));
  host[301] = '\0';
  pattern_bad(host, "is longer than 300 bytes");
}

/* The option's name is the caller's. */
static void test_pattern_error_names_option(void) {
  sl_allow *a = NULL;
  char err[256];

  CHECK_INT(sl__allow_add(&a, "x:0", "--secret API_TOKEN", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_STR(err, "--secret API_TOKEN: pattern \"x:0\": the port must be a number from 1 to 65535");
  sl__allow_free(a);
}

/* ---- Allocation failures ---- */

static void test_add_alloc_failures(void) {
  const char *list = "a.example.com,b.example.com,c.example.com,d.example.com,e.example.com,f.example.com,"
                     "g.example.com,h.example.com,i.example.com,j.example.com";
  long fault;

  for (fault = 0; fault < 50; fault++) {
    sl_allow *a = NULL;
    char err[256] = "";
    int rc;

    sl__alloc_fail_after(fault);
    rc = sl__allow_add(&a, list, "--http-allow", err, sizeof(err));
    sl__alloc_fail_after(-1);
    if (rc == 0) {
      MATCHES(a, "http://a.example.com/");
      MATCHES(a, "http://j.example.com/");
      sl__allow_free(a);
      break;
    }
    CHECK_INT(rc, ==, SL_ENOMEM);
    CHECK_STR(err, "out of memory");
    /* the list holds what was added before the failure, and stays usable */
    if (a != NULL) {
      NO_MATCH(a, "http://j.example.com/");
      CHECK_INT(sl__allow_add(&a, list, "--http-allow", err, sizeof(err)), ==, 0);
      MATCHES(a, "http://j.example.com/");
    }
    sl__allow_free(a);
  }
  CHECK_INT(fault, ==, 3); /* the list, its first 8 patterns, then 16 */
}

static const sl_test tests[] = {
  {"origin_default_ports", test_origin_default_ports, 10},
  {"origin_explicit_ports", test_origin_explicit_ports, 10},
  {"origin_case_and_dot", test_origin_case_and_dot, 10},
  {"origin_ipv6", test_origin_ipv6, 10},
  {"origin_user_part", test_origin_user_part, 10},
  {"origin_refused", test_origin_refused, 10},
  {"origin_host_length", test_origin_host_length, 10},
  {"origin_describe", test_origin_describe, 10},
  {"match_host_default_ports_only", test_match_host_default_ports_only, 10},
  {"match_host_port", test_match_host_port, 10},
  {"match_scheme_host", test_match_scheme_host, 10},
  {"match_case_and_trailing_dot", test_match_case_and_trailing_dot, 10},
  {"match_names_not_addresses", test_match_names_not_addresses, 10},
  {"match_wildcard", test_match_wildcard, 10},
  {"match_ipv6", test_match_ipv6, 10},
  {"list_several_and_empty_entries", test_list_several_and_empty_entries, 10},
  {"list_add_appends", test_list_add_appends, 10},
  {"list_null_matches_nothing", test_list_null_matches_nothing, 10},
  {"list_limit", test_list_limit, 10},
  {"pattern_errors", test_pattern_errors, 10},
  {"pattern_bad_characters", test_pattern_bad_characters, 10},
  {"pattern_lengths", test_pattern_lengths, 10},
  {"pattern_error_names_option", test_pattern_error_names_option, 10},
  {"add_alloc_failures", test_add_alloc_failures, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
