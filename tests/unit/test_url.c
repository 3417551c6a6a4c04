/*
 * Unit tests for Redis URL parsing (src/url.c): every accepted form with the
 * fields it must produce, every rejected form with the message it must give
 * (and *u left zeroed), and sl__url_describe, which must never print the
 * password.
 */
#include <string.h>

#include <sluice/sluice.h>

#include "harness.h"
#include "url.h"

/* ---- Helpers ---- */

/* Parses a URL that must be accepted. */
static void parse_ok(const char *s, sl_url *u) {
  char err[256] = "";
  int rc = sl__url_parse(s, u, err, sizeof(err));

  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "sl__url_parse(\"%s\") = %d (%s)", s, rc, err);
}

/* Parses a URL that must be rejected with SL_EINVAL and a zeroed *u;
 * the message is left in err. */
static void parse_bad(const char *s, char *err, size_t errlen) {
  sl_url u;
  sl_url zero;
  int rc;

  memset(&u, 0x5a, sizeof(u));
  memset(&zero, 0, sizeof(zero));
  err[0] = '\0';
  rc = sl__url_parse(s, &u, err, errlen);
  if (rc != SL_EINVAL)
    sl_test_fail(__FILE__, __LINE__, "sl__url_parse(\"%s\") = %d, expected SL_EINVAL", s, rc);
  CHECK(memcmp(&u, &zero, sizeof(u)) == 0);
  CHECK(err[0] != '\0');
}

/* ---- Accepted forms ---- */

static void test_host_only(void) {
  sl_url u;

  parse_ok("redis://localhost", &u);
  CHECK_STR(u.host, "localhost");
  CHECK_INT(u.port, ==, 6379);
  CHECK_INT(u.db, ==, 0);
  CHECK(u.path == NULL);
  CHECK(u.user == NULL);
  CHECK(u.password == NULL);
  sl__url_free(&u);
  CHECK(u.host == NULL);
}

static void test_host_port(void) {
  sl_url u;

  parse_ok("redis://10.0.0.5:6380", &u);
  CHECK_STR(u.host, "10.0.0.5");
  CHECK_INT(u.port, ==, 6380);
  CHECK_INT(u.db, ==, 0);
  sl__url_free(&u);

  parse_ok("redis://h:1", &u);
  CHECK_INT(u.port, ==, 1);
  sl__url_free(&u);

  parse_ok("redis://h:65535", &u);
  CHECK_INT(u.port, ==, 65535);
  sl__url_free(&u);
}

static void test_host_port_db(void) {
  sl_url u;

  parse_ok("redis://cache.internal:7000/5", &u);
  CHECK_STR(u.host, "cache.internal");
  CHECK_INT(u.port, ==, 7000);
  CHECK_INT(u.db, ==, 5);
  sl__url_free(&u);

  /* db without a port, and a trailing slash with no db */
  parse_ok("redis://h/12", &u);
  CHECK_STR(u.host, "h");
  CHECK_INT(u.port, ==, 6379);
  CHECK_INT(u.db, ==, 12);
  sl__url_free(&u);

  parse_ok("redis://h:6379/", &u);
  CHECK_INT(u.db, ==, 0);
  sl__url_free(&u);
}

static void test_password_only(void) {
  sl_url u;

  parse_ok("redis://:hunter2@db.example.com", &u);
  CHECK(u.user == NULL);
  CHECK_STR(u.password, "hunter2");
  CHECK_STR(u.host, "db.example.com");
  CHECK_INT(u.port, ==, 6379);
  sl__url_free(&u);

  /* A lone userinfo without ':' is the password (AUTH <password>). */
  parse_ok("redis://secret@h", &u);
  CHECK(u.user == NULL);
  CHECK_STR(u.password, "secret");
  sl__url_free(&u);
}

static void test_user_password_port_db(void) {
  sl_url u;

  parse_ok("redis://alice:wonder@redis-1:6380/2", &u);
  CHECK_STR(u.user, "alice");
  CHECK_STR(u.password, "wonder");
  CHECK_STR(u.host, "redis-1");
  CHECK_INT(u.port, ==, 6380);
  CHECK_INT(u.db, ==, 2);
  CHECK(u.path == NULL);
  sl__url_free(&u);
}

static void test_password_percent_escapes(void) {
  sl_url u;

  parse_ok("redis://:p%40ss@h", &u);
  CHECK_STR(u.password, "p@ss");
  sl__url_free(&u);

  /* upper and lower case hex, an escaped ':' and '%' */
  parse_ok("redis://us%3aer:a%2Fb%25c%3A@h", &u);
  CHECK_STR(u.user, "us:er");
  CHECK_STR(u.password, "a/b%c:");
  sl__url_free(&u);

  /* an escape as the very last bytes of the password */
  parse_ok("redis://:x%41@h", &u);
  CHECK_STR(u.password, "xA");
  sl__url_free(&u);
}

static void test_password_with_slash_and_at(void) {
  sl_url u;

  parse_ok("redis://:a/b@h:6380/3", &u);
  CHECK_STR(u.password, "a/b");
  CHECK_STR(u.host, "h");
  CHECK_INT(u.port, ==, 6380);
  CHECK_INT(u.db, ==, 3);
  sl__url_free(&u);

  /* unescaped '@' in the password: the last '@' ends the userinfo */
  parse_ok("redis://bob:p@ss@w0rd@h/1", &u);
  CHECK_STR(u.user, "bob");
  CHECK_STR(u.password, "p@ss@w0rd");
  CHECK_STR(u.host, "h");
  CHECK_INT(u.db, ==, 1);
  sl__url_free(&u);

  /* ':' inside the password: only the first ':' splits user from password */
  parse_ok("redis://bob:a:b@h", &u);
  CHECK_STR(u.user, "bob");
  CHECK_STR(u.password, "a:b");
  sl__url_free(&u);
}

static void test_ipv6(void) {
  sl_url u;

  parse_ok("redis://[::1]:6379", &u);
  CHECK_STR(u.host, "::1");
  CHECK_INT(u.port, ==, 6379);
  sl__url_free(&u);

  parse_ok("redis://:pw@[fe80::1:2]:7001/4", &u);
  CHECK_STR(u.host, "fe80::1:2");
  CHECK_STR(u.password, "pw");
  CHECK_INT(u.port, ==, 7001);
  CHECK_INT(u.db, ==, 4);
  sl__url_free(&u);

  parse_ok("redis://[::1]", &u);
  CHECK_STR(u.host, "::1");
  CHECK_INT(u.port, ==, 6379);
  sl__url_free(&u);
}

static void test_unix_path(void) {
  sl_url u;

  parse_ok("unix:///path/to.sock", &u);
  CHECK_STR(u.path, "/path/to.sock");
  CHECK(u.host == NULL);
  CHECK_INT(u.db, ==, 0);
  CHECK(u.user == NULL);
  CHECK(u.password == NULL);
  sl__url_free(&u);
}

static void test_unix_db_query(void) {
  sl_url u;

  parse_ok("unix:///path?db=3", &u);
  CHECK_STR(u.path, "/path");
  CHECK_INT(u.db, ==, 3);
  sl__url_free(&u);
}

static void test_unix_userinfo(void) {
  sl_url u;

  parse_ok("unix://user:pw@/path", &u);
  CHECK_STR(u.user, "user");
  CHECK_STR(u.password, "pw");
  CHECK_STR(u.path, "/path");
  CHECK(u.host == NULL);
  sl__url_free(&u);

  parse_ok("unix://:p%40ss@/run/redis.sock?db=7", &u);
  CHECK(u.user == NULL);
  CHECK_STR(u.password, "p@ss");
  CHECK_STR(u.path, "/run/redis.sock");
  CHECK_INT(u.db, ==, 7);
  sl__url_free(&u);
}

/* ---- Rejected forms ---- */

static void test_err_empty(void) {
  char err[256];
  sl_url u;

  parse_bad("", err, sizeof(err));
  CHECK_CONTAINS(err, "empty");

  memset(&u, 0x5a, sizeof(u));
  CHECK_INT(sl__url_parse(NULL, &u, err, sizeof(err)), ==, SL_EINVAL);
  CHECK(u.host == NULL && u.path == NULL);
  CHECK_CONTAINS(err, "empty");
}

static void test_err_scheme(void) {
  char err[256];

  parse_bad("http://x", err, sizeof(err));
  CHECK_CONTAINS(err, "redis://");
  CHECK_CONTAINS(err, "redis+cluster://");
  CHECK_CONTAINS(err, "unix://");
  CHECK(strstr(err, "http://x") == NULL); /* a URL may hold a password: never echoed */

  parse_bad("localhost:6379", err, sizeof(err));
  CHECK_CONTAINS(err, "must start with");

  parse_bad("REDIS://h", err, sizeof(err));
  CHECK_CONTAINS(err, "must start with");
}

static void test_err_no_host(void) {
  char err[256];

  /* "redis://:badport" has an empty host before the ':' */
  parse_bad("redis://:badport", err, sizeof(err));
  CHECK_CONTAINS(err, "no host");

  parse_bad("redis://", err, sizeof(err));
  CHECK_CONTAINS(err, "no host");

  parse_bad("redis:///0", err, sizeof(err));
  CHECK_CONTAINS(err, "no host");
}

static void test_err_port(void) {
  char err[256];

  parse_bad("redis://h:badport", err, sizeof(err));
  CHECK_CONTAINS(err, "bad port \"badport\"");
  CHECK_CONTAINS(err, "1-65535");

  parse_bad("redis://h:0", err, sizeof(err));
  CHECK_CONTAINS(err, "bad port \"0\"");

  parse_bad("redis://h:70000", err, sizeof(err));
  CHECK_CONTAINS(err, "bad port \"70000\"");

  parse_bad("redis://h:65536/1", err, sizeof(err));
  CHECK_CONTAINS(err, "bad port \"65536\"");

  parse_bad("redis://h:", err, sizeof(err));
  CHECK_CONTAINS(err, "bad port");

  parse_bad("redis://h:-1", err, sizeof(err));
  CHECK_CONTAINS(err, "bad port");

  parse_bad("redis://h:+80", err, sizeof(err));
  CHECK_CONTAINS(err, "bad port");

  parse_bad("redis://h:99999999999999999999", err, sizeof(err));
  CHECK_CONTAINS(err, "bad port");
}

static void test_err_db(void) {
  char err[256];

  parse_bad("redis://h/x", err, sizeof(err));
  CHECK_CONTAINS(err, "bad database \"x\"");

  parse_bad("redis://h:6379/1x", err, sizeof(err));
  CHECK_CONTAINS(err, "bad database \"1x\"");

  parse_bad("redis://h/-1", err, sizeof(err));
  CHECK_CONTAINS(err, "bad database");

  parse_bad("unix:///p?db=x", err, sizeof(err));
  CHECK_CONTAINS(err, "?db=x");

  parse_bad("unix:///p?timeout=3", err, sizeof(err));
  CHECK_CONTAINS(err, "only ?db=N");
}

static void test_err_bad_escape(void) {
  char err[256];

  parse_bad("redis://:p%4@h", err, sizeof(err));
  CHECK_CONTAINS(err, "%-escape");

  parse_bad("redis://:p%zz@h", err, sizeof(err));
  CHECK_CONTAINS(err, "%-escape");

  parse_bad("redis://:p%@h", err, sizeof(err));
  CHECK_CONTAINS(err, "%-escape");

  parse_bad("redis://u%g1:pw@h", err, sizeof(err));
  CHECK_CONTAINS(err, "%-escape");

  parse_bad("redis://pass%@h", err, sizeof(err));
  CHECK_CONTAINS(err, "%-escape");
}

static void test_err_unix_relative(void) {
  char err[256];

  parse_bad("unix://relative/path.sock", err, sizeof(err));
  CHECK_CONTAINS(err, "absolute path");

  parse_bad("unix://", err, sizeof(err));
  CHECK_CONTAINS(err, "absolute path");

  parse_bad("unix://u:p@", err, sizeof(err));
  CHECK_CONTAINS(err, "absolute path");
}

static void test_err_trailing(void) {
  char err[256];

  parse_bad("redis://[::1]x", err, sizeof(err));
  CHECK_CONTAINS(err, "unexpected \"x\"");

  parse_bad("redis://[::1", err, sizeof(err));
  CHECK_CONTAINS(err, "unterminated [");
}

/* A truncated message must still be NUL-terminated and not overflow. */
static void test_err_small_buffer(void) {
  char err[8];
  sl_url u;

  memset(err, 'z', sizeof(err));
  CHECK_INT(sl__url_parse("http://long-host-name", &u, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_INT(strlen(err), ==, sizeof(err) - 1);
}

/* ---- sl__url_describe ---- */

static void test_describe_masks_password(void) {
  char out[256];
  sl_url u;

  parse_ok("redis://alice:s3cr3t-pw@h:6380/2", &u);
  sl__url_describe(&u, out, sizeof(out));
  CHECK_STR(out, "redis://alice:***@h:6380/2");
  CHECK(strstr(out, "s3cr3t") == NULL);
  sl__url_free(&u);

  parse_ok("redis://:s3cr3t-pw@h", &u);
  sl__url_describe(&u, out, sizeof(out));
  CHECK_STR(out, "redis://:***@h:6379/0");
  CHECK(strstr(out, "s3cr3t") == NULL);
  sl__url_free(&u);

  parse_ok("unix://bob:s3cr3t-pw@/run/r.sock?db=1", &u);
  sl__url_describe(&u, out, sizeof(out));
  CHECK_STR(out, "unix://bob:***@/run/r.sock");
  CHECK(strstr(out, "s3cr3t") == NULL);
  sl__url_free(&u);

  /* an empty password is still masked, so its presence shows */
  parse_ok("redis://bob:@h", &u);
  sl__url_describe(&u, out, sizeof(out));
  CHECK_STR(out, "redis://bob:***@h:6379/0");
  sl__url_free(&u);
}

static void test_describe_no_auth(void) {
  char out[256];
  sl_url u;

  parse_ok("redis://h", &u);
  sl__url_describe(&u, out, sizeof(out));
  CHECK_STR(out, "redis://h:6379/0");
  sl__url_free(&u);

  parse_ok("unix:///tmp/r.sock", &u);
  sl__url_describe(&u, out, sizeof(out));
  CHECK_STR(out, "unix:///tmp/r.sock");
  sl__url_free(&u);

  /* truncation is safe */
  parse_ok("redis://a-rather-long-host-name:6379/0", &u);
  sl__url_describe(&u, out, 10);
  CHECK_STR(out, "redis://a");
  sl__url_free(&u);
}

/* ---- Regressions: bugs found by these tests, now fixed ---- */

/* Error messages quote the whole URL, password included. */
static void test_regress_error_leaks_password(void) {
  char err[256];

  parse_bad("http://:s3cr3t@h", err, sizeof(err));
  CHECK(strstr(err, "s3cr3t") == NULL);
  parse_bad("redis://:s3cr3t@", err, sizeof(err));
  CHECK(strstr(err, "s3cr3t") == NULL);
}

/* "redis://[]" is accepted with an empty host. */
static void test_regress_empty_ipv6_host(void) {
  char err[256];

  parse_bad("redis://[]:6379", err, sizeof(err));
}

/* A query on a redis:// URL becomes part of the host name. */
static void test_regress_tcp_query_in_host(void) {
  char err[256];

  parse_bad("redis://h?db=3", err, sizeof(err));
}

/* A unix socket path containing '@' is split as userinfo. */
static void test_regress_unix_path_with_at(void) {
  sl_url u;

  parse_ok("unix:///tmp/a@b.sock", &u);
  CHECK_STR(u.path, "/tmp/a@b.sock");
  sl__url_free(&u);
}

/* An IPv6 host is described without brackets ("redis://::1:6379/0"). */
static void test_regress_describe_ipv6(void) {
  char out[256];
  sl_url u;

  parse_ok("redis://[::1]:6379", &u);
  sl__url_describe(&u, out, sizeof(out));
  CHECK_STR(out, "redis://[::1]:6379/0");
  sl__url_free(&u);
}

/* ---- Redis Cluster ---- */

static void test_cluster_seeds(void) {
  sl_url u;

  parse_ok("redis+cluster://worker:s%40cret@10.0.0.1:7000,node-b,[::1]:7002", &u);
  CHECK_INT(u.cluster, ==, 1);
  CHECK_INT(u.nseeds, ==, 3);
  CHECK_STR(u.seed_host[0], "10.0.0.1");
  CHECK_INT(u.seed_port[0], ==, 7000);
  CHECK_STR(u.seed_host[1], "node-b");
  CHECK_INT(u.seed_port[1], ==, 6379);
  CHECK_STR(u.seed_host[2], "::1");
  CHECK_INT(u.seed_port[2], ==, 7002);
  CHECK_STR(u.host, "10.0.0.1"); /* the first seed */
  CHECK_INT(u.port, ==, 7000);
  CHECK_STR(u.user, "worker");
  CHECK_STR(u.password, "s@cret");
  sl__url_free(&u);
  CHECK_INT(u.nseeds, ==, 0);
  parse_ok("redis+cluster://h:7000/0", &u); /* database 0 may be named */
  CHECK_INT(u.nseeds, ==, 1);
  sl__url_free(&u);
  parse_ok("redis://h:7000", &u);
  CHECK_INT(u.cluster, ==, 0);
  CHECK_INT(u.nseeds, ==, 1);
  sl__url_free(&u);
}

static void test_err_cluster(void) {
  char err[256];
  char many[600];
  size_t off = (size_t)snprintf(many, sizeof(many), "redis+cluster://");

  parse_bad("redis+cluster://h:7000/2", err, sizeof(err));
  CHECK_CONTAINS(err, "database 0 only");
  parse_bad("redis+cluster://h:7000,,h2:7001", err, sizeof(err));
  CHECK_CONTAINS(err, "no host");
  parse_bad("redis+cluster://h:7000,h2:x", err, sizeof(err));
  CHECK_CONTAINS(err, "bad port");
  parse_bad("redis://h1:7000,h2:7001", err, sizeof(err)); /* a list only for a cluster */
  CHECK_CONTAINS(err, "bad port");
  for (int i = 0; i <= SL_URL_SEEDS_MAX; i++)
    off += (size_t)snprintf(many + off, sizeof(many) - off, "%sh%d:7000", i ? "," : "", i);
  parse_bad(many, err, sizeof(err));
  CHECK_CONTAINS(err, "more than 16 nodes");
}

static const sl_test tests[] = {
  {"cluster_seeds", test_cluster_seeds, 10},
  {"err_cluster", test_err_cluster, 10},
  {"host_only", test_host_only, 10},
  {"host_port", test_host_port, 10},
  {"host_port_db", test_host_port_db, 10},
  {"password_only", test_password_only, 10},
  {"user_password_port_db", test_user_password_port_db, 10},
  {"password_percent_escapes", test_password_percent_escapes, 10},
  {"password_with_slash_and_at", test_password_with_slash_and_at, 10},
  {"ipv6", test_ipv6, 10},
  {"unix_path", test_unix_path, 10},
  {"unix_db_query", test_unix_db_query, 10},
  {"unix_userinfo", test_unix_userinfo, 10},
  {"err_empty", test_err_empty, 10},
  {"err_scheme", test_err_scheme, 10},
  {"err_no_host", test_err_no_host, 10},
  {"err_port", test_err_port, 10},
  {"err_db", test_err_db, 10},
  {"err_bad_escape", test_err_bad_escape, 10},
  {"err_unix_relative", test_err_unix_relative, 10},
  {"err_trailing", test_err_trailing, 10},
  {"err_small_buffer", test_err_small_buffer, 10},
  {"describe_masks_password", test_describe_masks_password, 10},
  {"describe_no_auth", test_describe_no_auth, 10},
  {"regress_error_leaks_password", test_regress_error_leaks_password, 10},
  {"regress_empty_ipv6_host", test_regress_empty_ipv6_host, 10},
  {"regress_tcp_query_in_host", test_regress_tcp_query_in_host, 10},
  {"regress_unix_path_with_at", test_regress_unix_path_with_at, 10},
  {"regress_describe_ipv6", test_regress_describe_ipv6, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
