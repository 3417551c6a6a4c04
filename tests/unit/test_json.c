/*
 * Unit tests for the strict JSON scanner and writer (src/json.c):
 * sl__json_validate on valid values of every kind and on each class of
 * invalid input (with the byte offset it reports), sl__json_members,
 * sl__json_unescape, sl__json_int / sl__json_double, and sl__json_put_str,
 * including a randomized round trip (put_str -> validate -> unescape) over
 * random code points and random bytes, checked against a reference
 * implementation of the replacement rule written here. Also the strict
 * check (a key twice in one object, compared by decoded text, at any depth,
 * past the 64 keys tracked without allocating and under allocation
 * failures), lone surrogates, sl__utf8_invalid_at, sl__utf8_cut and
 * sl__json_str_len against put_str on random valid UTF-8, and
 * sl__json_elements.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"
#include "harness.h"
#include "json.h"

/* ---- Helpers ---- */

/* Validates buf[0..len) with the item depth limit. */
static int validate_n(const char *buf, size_t len, size_t *errpos, char *err, size_t errlen) {
  return sl__json_validate(buf, len, SL_ITEM_MAX_DEPTH, errpos, err, errlen);
}

static void valid(const char *s) {
  char err[128] = "";
  size_t pos = 999;
  int rc = validate_n(s, strlen(s), &pos, err, sizeof(err));

  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "valid JSON %s rejected at %zu: %s", s, pos, err);
}

/* Checks that buf[0..len) is rejected at byte `pos` with a message holding `msg`. */
static void invalid_n(const char *buf, size_t len, size_t pos, const char *msg) {
  char err[128] = "";
  size_t got = 999;
  int rc = validate_n(buf, len, &got, err, sizeof(err));

  if (rc != SL_EINVAL)
    sl_test_fail(__FILE__, __LINE__, "invalid JSON \"%.*s\" accepted (rc %d)", (int)len, buf, rc);
  if (got != pos)
    sl_test_fail(__FILE__, __LINE__, "\"%.*s\": errpos %zu, expected %zu (%s)", (int)len, buf, got, pos,
                 err);
  if (strstr(err, msg) == NULL)
    sl_test_fail(__FILE__, __LINE__, "\"%.*s\": message \"%s\" lacks \"%s\"", (int)len, buf, err, msg);
}

static void invalid(const char *s, size_t pos, const char *msg) {
  invalid_n(s, strlen(s), pos, msg);
}

/* Checks that the bytes `bad` inside a string ("a<bad>z") are rejected as
 * invalid UTF-8 at the offset of their first byte. */
static void bad_utf8(const char *bad) {
  char doc[32];
  size_t n = strlen(bad);

  doc[0] = '"';
  doc[1] = 'a';
  memcpy(doc + 2, bad, n);
  doc[2 + n] = 'z';
  doc[3 + n] = '"';
  invalid_n(doc, n + 4, 2, "invalid UTF-8");
}

/* Unescapes a token and checks the exact bytes produced. */
static void unescape_is(const char *tok, const char *want, size_t wantlen) {
  sl_buf b;
  int rc;

  sl__buf_init(&b, 1024);
  rc = sl__json_unescape(tok, strlen(tok), &b);
  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "unescape %s: rc %d", tok, rc);
  if (b.len != wantlen || (wantlen > 0 && memcmp(b.p, want, wantlen) != 0))
    sl_test_fail(__FILE__, __LINE__, "unescape %s: got %zu bytes \"%.*s\", expected %zu", tok, b.len,
                 (int)b.len, b.p ? b.p : "", wantlen);
  sl__buf_free(&b);
}

/* sl__json_int on a C string. */
static int jint(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  return sl__json_int(s, strlen(s), lo, hi, out);
}

/* put_str of s[0..n) into a fresh buffer; checks the exact output. */
static void put_is(const char *s, size_t n, const char *want) {
  sl_buf b;
  int rc;

  sl__buf_init(&b, 4096);
  rc = sl__json_put_str(&b, s, n);
  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "put_str: rc %d", rc);
  if (strcmp(b.p, want) != 0 || b.len != strlen(want))
    sl_test_fail(__FILE__, __LINE__, "put_str: got %s, expected %s", b.p, want);
  sl__buf_free(&b);
}

/* ---- sl__json_validate: accepted values ---- */

static void test_validate_scalars(void) {
  valid("null");
  valid("true");
  valid("false");
  valid("0");
  valid("-0");
  valid("123");
  valid("-17");
  valid("0.5");
  valid("-1.5e+10");
  valid("1E-3");
  valid("2e9");
  valid("12345678901234567890123456789");
  valid("\"\"");
  valid("\"plain text\"");
}

static void test_validate_strings(void) {
  valid("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"");
  valid("\"\\u00e9\\u00E9\\uD83D\\uDE00\\u0000\"");
  valid("\"\xc3\xa9\"");             /* U+00E9 */
  valid("\"\xe2\x82\xac\"");         /* U+20AC */
  valid("\"\xf0\x9f\x98\x80\"");     /* U+1F600 */
  valid("\"\xf4\x8f\xbf\xbf\"");     /* U+10FFFF, the last code point */
  valid("\"\xef\xbf\xbf\"");         /* U+FFFF */
  valid("\"\xee\x80\x80\"");         /* U+E000, just past the surrogates */
  valid("\"\x7f\"");                 /* DEL is not a control byte for JSON */
}

static void test_validate_containers(void) {
  valid("[]");
  valid("{}");
  valid("[1,[2,{}],\"x\",null]");
  valid("{\"a\":{\"b\":[true,false,null]},\"c\":\"d\"}");
  valid(" \t\r\n{ \"a\" : [ 1 , 2 ] , \"b\" : { } } \n");
  valid("{\"\":0}");
  valid("{\"a\":1,\"a\":2}"); /* duplicate keys are the caller's business */
}

static void test_validate_whitespace(void) {
  valid("  1  ");
  valid("\n\r\t\"x\"\n");
  invalid("", 0, "unexpected end of input");
  invalid(" \n ", 3, "unexpected end of input");
  /* form feed and vertical tab are not JSON whitespace */
  invalid("\f1", 0, "raw control byte");
  invalid("1\v", 1, "raw control byte after the value");
}

/* ---- sl__json_validate: rejected input ---- */

static void test_validate_trailing_garbage(void) {
  invalid("{} x", 3, "trailing characters");
  invalid("1 2", 2, "trailing characters");
  invalid("[]]", 2, "trailing characters");
  invalid("truex", 4, "trailing characters");
  invalid("\"a\"\"b\"", 3, "trailing characters");
  invalid_n("{}\0", 3, 2, "raw control byte after the value");
}

static void test_validate_control_bytes(void) {
  invalid("\"a\x01z\"", 2, "raw control byte");
  invalid("\"a\nz\"", 2, "raw control byte");
  invalid("\"a\tz\"", 2, "raw control byte");
  invalid("\"a\x1fz\"", 2, "raw control byte");
  invalid_n("\"a\0z\"", 5, 2, "raw control byte");
  invalid("[\x01]", 1, "raw control byte");
  invalid("{\"k\x02\":1}", 3, "raw control byte");
}

static void test_validate_bad_utf8(void) {
  bad_utf8("\xc0\x80");         /* overlong NUL */
  bad_utf8("\xc1\xbf");         /* overlong 2-byte */
  bad_utf8("\xe0\x80\x80");     /* overlong 3-byte */
  bad_utf8("\xe0\x9f\xbf");     /* overlong U+07FF */
  bad_utf8("\xf0\x80\x80\x80"); /* overlong 4-byte */
  bad_utf8("\xf0\x8f\xbf\xbf"); /* overlong U+FFFF */
  bad_utf8("\xed\xa0\x80");     /* U+D800, a surrogate */
  bad_utf8("\xed\xbf\xbf");     /* U+DFFF */
  bad_utf8("\xf4\x90\x80\x80"); /* U+110000 */
  bad_utf8("\xf5\x80\x80\x80");
  bad_utf8("\xf8\x88\x80\x80\x80");
  bad_utf8("\xfe");
  bad_utf8("\xff");
  bad_utf8("\x80");             /* lone continuation byte */
  bad_utf8("\xbf\xbf");
  bad_utf8("\xc3");             /* truncated 2-byte ("a\xc3z") */
  bad_utf8("\xe2\x82");         /* truncated 3-byte */
  bad_utf8("\xf0\x9f\x98");     /* truncated 4-byte */
  bad_utf8("\xc3\xc3\xa9");     /* lead byte followed by a lead byte */
  /* truncated at the very end of the input */
  invalid_n("\"\xe2\x82", 3, 1, "invalid UTF-8");
  invalid_n("\"\xf0", 2, 1, "invalid UTF-8");
  /* outside a string */
  invalid("\xff", 0, "invalid UTF-8");
  invalid("[\xc3\xa9]", 1, "unexpected character");
}

/* Builds `depth` nested arrays (or objects) around a 1. */
static size_t nest(char *out, int depth, int objects) {
  size_t n = 0;

  for (int i = 0; i < depth; i++) {
    if (objects) {
      memcpy(out + n, "{\"a\":", 5);
      n += 5;
    } else {
      out[n++] = '[';
    }
  }
  out[n++] = '1';
  for (int i = 0; i < depth; i++)
    out[n++] = objects ? '}' : ']';
  return n;
}

static void test_validate_depth_limit(void) {
  char doc[1024];
  char err[128];
  size_t pos = 0;
  size_t n;

  n = nest(doc, SL_ITEM_MAX_DEPTH, 0);
  CHECK_INT(validate_n(doc, n, &pos, err, sizeof(err)), ==, 0);
  n = nest(doc, SL_ITEM_MAX_DEPTH + 1, 0);
  invalid_n(doc, n, SL_ITEM_MAX_DEPTH, "nesting deeper than the limit");

  n = nest(doc, SL_ITEM_MAX_DEPTH, 1);
  CHECK_INT(validate_n(doc, n, &pos, err, sizeof(err)), ==, 0);
  n = nest(doc, SL_ITEM_MAX_DEPTH + 1, 1);
  invalid_n(doc, n, (size_t)SL_ITEM_MAX_DEPTH * 5, "nesting");

  /* siblings do not add depth */
  CHECK_INT(sl__json_validate("[[1],[2],{\"a\":[3]}]", 19, 3, &pos, err, sizeof(err)), ==, 0);
  CHECK_INT(sl__json_validate("[[1],[2],{\"a\":[3]}]", 19, 2, &pos, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_INT(pos, ==, 14);
  CHECK_INT(sl__json_validate("[[1],[2],{\"a\":[3]}]", 19, 1, &pos, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_INT(pos, ==, 1);
  /* depth 0 allows scalars only */
  CHECK_INT(sl__json_validate("\"s\"", 3, 0, &pos, err, sizeof(err)), ==, 0);
  CHECK_INT(sl__json_validate("[]", 2, 0, &pos, err, sizeof(err)), ==, SL_EINVAL);
}

/* A bad number must be reported at a position inside the number: never
 * before its first byte nor past the offending one. */
static void bad_number(const char *s, size_t first, size_t offending) {
  char err[128] = "";
  size_t pos = 999;
  int rc = validate_n(s, strlen(s), &pos, err, sizeof(err));

  if (rc != SL_EINVAL)
    sl_test_fail(__FILE__, __LINE__, "bad number %s accepted", s);
  if (pos < first || pos > offending)
    sl_test_fail(__FILE__, __LINE__, "bad number %s: errpos %zu outside [%zu, %zu] (%s)", s, pos, first,
                 offending, err);
}

static void test_validate_numbers(void) {
  invalid("01", 1, "trailing characters");
  invalid("-01", 2, "trailing characters");
  invalid("0x10", 1, "trailing characters");
  invalid(".5", 0, "unexpected character");
  invalid("+1", 0, "unexpected character");
  invalid("Infinity", 0, "unexpected character");
  invalid("NaN", 0, "unexpected character");
  invalid("-", 1, "bad number");
  invalid("--1", 1, "bad number");
  invalid("-a", 1, "bad number");
  invalid("1.", 2, "digits expected after '.'");
  invalid("1.e5", 2, "digits expected after '.'");
  invalid("1e", 2, "digits expected in exponent");
  invalid("1e+", 3, "digits expected in exponent");
  invalid("1E-x", 3, "digits expected in exponent");
  bad_number("[1, 2.]", 4, 6);
  bad_number("{\"a\":-}", 5, 6);
  bad_number("[7e]", 1, 3);
}

static void test_validate_syntax_errors(void) {
  invalid("[1,]", 3, "unexpected character");
  invalid("[1 2]", 3, "expected ',' or ']' in array");
  invalid("[1", 2, "unterminated array");
  invalid("[", 1, "unexpected end of input");
  invalid("{\"a\":1,}", 7, "expected a string key");
  invalid("{\"a\":1 \"b\":2}", 7, "expected ',' or '}' in object");
  invalid("{\"a\" 1}", 5, "expected ':'");
  invalid("{1:2}", 1, "expected a string key");
  invalid("{'a':1}", 1, "expected a string key");
  invalid("{\"a\":1", 6, "unterminated object");
  invalid("{\"a\":}", 5, "unexpected character");
  invalid("\"abc", 4, "unterminated string");
  invalid("\"abc\\", 4, "unterminated string");
  invalid("\"\\x\"", 1, "bad escape");
  invalid("\"\\'\"", 1, "bad escape");
  invalid("\"\\u12G4\"", 1, "bad \\u escape");
  invalid("\"\\u12\"", 1, "bad \\u escape");
  invalid("\"\\u12", 1, "bad \\u escape");
  invalid("tru", 0, "unexpected character");
  invalid("nul", 0, "unexpected character");
  invalid("True", 0, "unexpected character");
  invalid("[nulL]", 1, "unexpected character");
  invalid("}", 0, "unexpected character");
}

/* errpos may be NULL, and a short err buffer is truncated, not overrun. */
static void test_validate_err_buffers(void) {
  char err[6];

  memset(err, 'z', sizeof(err));
  CHECK_INT(sl__json_validate("[1,]", 4, 8, NULL, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_INT(strlen(err), ==, 5);
  /* only len bytes are read: a valid prefix of a longer buffer passes */
  CHECK_INT(sl__json_validate("[1]garbage", 3, 8, NULL, err, sizeof(err)), ==, 0);
}

/* Random bytes must never crash the scanner (this matters under ASan);
 * bytes drawn from JSON's own alphabet reach deep into the grammar. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

static void test_validate_random_input(void) {
  static const char alpha[] = "{}[]\":,.-+eE0123456789 \\u tfnrl\"\"\xc3\xa9\xff\x01";
  char doc[48];
  char err[128];
  size_t pos;
  int accepted = 0;

  for (int iter = 0; iter < 30000; iter++) {
    size_t n = rnd() % sizeof(doc);

    for (size_t i = 0; i < n; i++)
      doc[i] = (iter & 1) ? (char)rnd() : alpha[rnd() % (sizeof(alpha) - 1)];
    pos = 12345;
    if (validate_n(doc, n, &pos, err, sizeof(err)) == 0) {
      accepted++;
    } else {
      CHECK(pos <= n);
      CHECK(err[0] != '\0');
    }
  }
  CHECK(accepted > 0);
}

/* ---- sl__json_members ---- */

static void test_members_spans(void) {
  const char *doc = " {\"a\":1, \"bb\" : [1, 2] ,\"c\":{\"d\":\"}\"},\"k\\\"q\":\"v\"} ";
  sl_json_member m[8];
  size_t n = 0;

  CHECK_INT(sl__json_members(doc, strlen(doc), m, 8, &n), ==, 0);
  CHECK_INT(n, ==, 4);
  CHECK_INT(m[0].keylen, ==, 1);
  CHECK(memcmp(m[0].key, "a", 1) == 0);
  CHECK_INT(m[0].vallen, ==, 1);
  CHECK(memcmp(m[0].val, "1", 1) == 0);
  CHECK_INT(m[1].keylen, ==, 2);
  CHECK(memcmp(m[1].key, "bb", 2) == 0);
  CHECK_INT(m[1].vallen, ==, 6);
  CHECK(memcmp(m[1].val, "[1, 2]", 6) == 0);
  CHECK_INT(m[2].vallen, ==, 9);
  CHECK(memcmp(m[2].val, "{\"d\":\"}\"}", 9) == 0);
  /* keys are raw, still escaped */
  CHECK_INT(m[3].keylen, ==, 4);
  CHECK(memcmp(m[3].key, "k\\\"q", 4) == 0);
  CHECK_INT(m[3].vallen, ==, 3);
  CHECK(memcmp(m[3].val, "\"v\"", 3) == 0);
  /* spans point into the caller's buffer */
  CHECK(m[0].key == doc + 3);
}

static void test_members_empty_and_scalars(void) {
  sl_json_member m[4];
  size_t n = 99;

  CHECK_INT(sl__json_members("{}", 2, m, 4, &n), ==, 0);
  CHECK_INT(n, ==, 0);
  n = 99;
  CHECK_INT(sl__json_members(" { } ", 5, m, 0, &n), ==, 0);
  CHECK_INT(n, ==, 0);
  CHECK_INT(sl__json_members("{\"x\":\"y\"}", 9, m, 4, &n), ==, 0);
  CHECK_INT(n, ==, 1);
  CHECK(memcmp(m[0].val, "\"y\"", 3) == 0);
}

static void test_members_not_object(void) {
  sl_json_member m[4];
  size_t n = 0;

  CHECK_INT(sl__json_members("[1]", 3, m, 4, &n), ==, SL_EINVAL);
  CHECK_INT(sl__json_members("1", 1, m, 4, &n), ==, SL_EINVAL);
  CHECK_INT(sl__json_members("\"{}\"", 4, m, 4, &n), ==, SL_EINVAL);
  CHECK_INT(sl__json_members("null", 4, m, 4, &n), ==, SL_EINVAL);
  CHECK_INT(sl__json_members("", 0, m, 4, &n), ==, SL_EINVAL);
  CHECK_INT(sl__json_members("   ", 3, m, 4, &n), ==, SL_EINVAL);
}

static void test_members_too_many(void) {
  const char *doc = "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}";
  sl_json_member m[5];
  size_t n = 0;

  CHECK_INT(sl__json_members(doc, strlen(doc), m, 4, &n), ==, SL_ETOOBIG);
  CHECK_INT(sl__json_members(doc, strlen(doc), m, 5, &n), ==, 0);
  CHECK_INT(n, ==, 5);
  CHECK(memcmp(m[4].key, "e", 1) == 0);
  CHECK(memcmp(m[4].val, "5", 1) == 0);
  CHECK_INT(sl__json_members("{\"a\":1}", 7, m, 0, &n), ==, SL_ETOOBIG);
}

/* ---- sl__json_unescape ---- */

static void test_unescape_simple(void) {
  unescape_is("\"\"", "", 0);
  unescape_is("\"abc\"", "abc", 3);
  unescape_is("\"a\\nb\"", "a\nb", 3);
  unescape_is("\"\\\"\"", "\"", 1);
  unescape_is("\"\\\\\"", "\\", 1);
  unescape_is("\"\\/\"", "/", 1);
  unescape_is("\"\\b\\f\\r\\t\\n\"", "\b\f\r\t\n", 5);
  unescape_is("\"\xc3\xa9\xe2\x82\xac\"", "\xc3\xa9\xe2\x82\xac", 5); /* raw UTF-8 kept */
}

static void test_unescape_u_escapes(void) {
  unescape_is("\"\\u0041\"", "A", 1);
  unescape_is("\"\\u00e9\"", "\xc3\xa9", 2);
  unescape_is("\"\\u00E9\"", "\xc3\xa9", 2);
  unescape_is("\"\\u07ff\"", "\xdf\xbf", 2);
  unescape_is("\"\\u0800\"", "\xe0\xa0\x80", 3);
  unescape_is("\"\\u20AC\"", "\xe2\x82\xac", 3);
  unescape_is("\"\\uffff\"", "\xef\xbf\xbf", 3);
  unescape_is("\"\\u0000\"", "\0", 1);
  unescape_is("\"x\\u0041y\"", "xAy", 3);
}

static void test_unescape_surrogates(void) {
  unescape_is("\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4);
  unescape_is("\"\\uD83D\\uDE00\"", "\xf0\x9f\x98\x80", 4);
  unescape_is("\"\\ud800\\udc00\"", "\xf0\x90\x80\x80", 4);    /* U+10000 */
  unescape_is("\"\\udbff\\udfff\"", "\xf4\x8f\xbf\xbf", 4);    /* U+10FFFF */
  unescape_is("\"a\\ud83d\\ude00b\"", "a\xf0\x9f\x98\x80" "b", 6);
  /* lone surrogates are refused, never replaced: two different ids must
   * not become the same text */
  {
    static const char *const lone[] = {"\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83dx\"", "\"\\ud83d\\u0041\"",
                                       "\"\\ude00\\ud83d\"", "\"\\ud83d\\ud83d\\ude00\"", NULL};

    for (int i = 0; lone[i] != NULL; i++) {
      sl_buf b;
      char err[128];
      size_t pos = 0;

      sl__buf_init(&b, 64);
      CHECK_INT(sl__json_unescape(lone[i], strlen(lone[i]), &b), ==, SL_EINVAL);
      sl__buf_free(&b);
      CHECK_INT(sl__json_validate(lone[i], strlen(lone[i]), 8, &pos, err, sizeof(err)), ==, SL_EINVAL);
      CHECK_CONTAINS(err, "lone UTF-16 surrogate");
    }
  }
}

static void test_unescape_errors(void) {
  sl_buf b;

  sl__buf_init(&b, 1024);
  CHECK_INT(sl__json_unescape("abc", 3, &b), ==, SL_EINVAL);
  CHECK_INT(sl__json_unescape("\"", 1, &b), ==, SL_EINVAL);
  CHECK_INT(sl__json_unescape("", 0, &b), ==, SL_EINVAL);
  CHECK_INT(sl__json_unescape("\"abc", 4, &b), ==, SL_EINVAL);
  CHECK_INT(sl__json_unescape("\"\\u12\"", 6, &b), ==, SL_EINVAL);
  sl__buf_free(&b);

  /* the output buffer's limit is honoured */
  sl__buf_init(&b, 4);
  CHECK_INT(sl__json_unescape("\"abcdef\"", 8, &b), ==, SL_ETOOBIG);
  CHECK(b.len <= 4);
  sl__buf_free(&b);
  sl__buf_init(&b, 3);
  CHECK_INT(sl__json_unescape("\"ab\\u20ac\"", 10, &b), ==, SL_ETOOBIG);
  CHECK_INT(b.len, ==, 2);
  sl__buf_free(&b);
}

/* ---- sl__json_int and sl__json_double ---- */

static void test_int_exact(void) {
  int64_t v = -1;

  CHECK_INT(jint("0", -10, 10, &v), ==, 0);
  CHECK_INT(v, ==, 0);
  CHECK_INT(jint("-0", -10, 10, &v), ==, 0);
  CHECK_INT(v, ==, 0);
  CHECK_INT(jint("42", 0, 100, &v), ==, 0);
  CHECK_INT(v, ==, 42);
  CHECK_INT(jint("-17", -100, 100, &v), ==, 0);
  CHECK_INT(v, ==, -17);
  CHECK_INT(jint("9223372036854775807", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK(v == INT64_MAX);
  CHECK_INT(jint("-9223372036854775808", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK(v == INT64_MIN);
  /* only len bytes are read */
  CHECK_INT(sl__json_int("123456", 2, 0, 100, &v), ==, 0);
  CHECK_INT(v, ==, 12);
}

static void test_int_integral_floats(void) {
  int64_t v = -1;

  CHECK_INT(jint("5.0", 1, 10, &v), ==, 0);
  CHECK_INT(v, ==, 5);
  CHECK_INT(jint("5.000", 1, 10, &v), ==, 0);
  CHECK_INT(v, ==, 5);
  /* an exact integer in any spelling: 1e3 is 1000 (lua/_lib_item.lua reads it alike) */
  CHECK_INT(jint("1e3", 0, 10000, &v), ==, 0);
  CHECK_INT(v, ==, 1000);
  CHECK_INT(jint("1E2", 0, 10000, &v), ==, 0);
  CHECK_INT(v, ==, 100);
  CHECK_INT(jint("-2.0e1", -100, 100, &v), ==, 0);
  CHECK_INT(v, ==, -20);
  CHECK_INT(jint("2.5e1", 0, 100, &v), ==, 0);
  CHECK_INT(v, ==, 25);
  CHECK_INT(jint("15000e-3", 0, 100, &v), ==, 0);
  CHECK_INT(v, ==, 15);
  CHECK_INT(jint("0.5e1", 0, 100, &v), ==, 0);
  CHECK_INT(v, ==, 5);
  CHECK_INT(jint("3E+4", 0, 100000, &v), ==, 0);
  CHECK_INT(v, ==, 30000);
  CHECK_INT(jint("0e999999999", 0, 100, &v), ==, 0);
  CHECK_INT(v, ==, 0);
  v = 77;
  CHECK_INT(jint("1500e-3", 0, 100, &v), ==, SL_EINVAL); /* 1.5 */
  CHECK_INT(jint("1e", 0, 100, &v), ==, SL_EINVAL);
  CHECK_INT(jint("1.", 0, 100, &v), ==, SL_EINVAL);
  CHECK_INT(v, ==, 77);
}

static void test_int_not_integer(void) {
  int64_t v = 77;

  CHECK_INT(jint("5.5", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("0.1", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("1e-1", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("-0.5", -10, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("abc", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("\"5\"", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("true", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("null", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("5x", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("[5]", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("{\"a\":1.0}", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("1e-400", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("1e400", 0, 10, &v), ==, SL_ETOOBIG);
  CHECK_INT(v, ==, 77); /* untouched on failure */
}

static void test_int_range(void) {
  int64_t v = 77;

  CHECK_INT(jint("1", 1, 1000, &v), ==, 0);
  CHECK_INT(jint("1000", 1, 1000, &v), ==, 0);
  CHECK_INT(v, ==, 1000);
  v = 77;
  CHECK_INT(jint("0", 1, 1000, &v), ==, SL_ETOOBIG);
  CHECK_INT(jint("1001", 1, 1000, &v), ==, SL_ETOOBIG);
  CHECK_INT(jint("-5", 0, 1000, &v), ==, SL_ETOOBIG);
  CHECK_INT(jint("1001.0", 1, 1000, &v), ==, SL_ETOOBIG);
  CHECK_INT(jint("1e4", 1, 1000, &v), ==, SL_ETOOBIG);
  CHECK_INT(v, ==, 77);
}

static void test_int_2_53_bounds(void) {
  const int64_t big = 9007199254740992LL; /* 2^53 */
  int64_t v = 0;

  /* plain integers are exact at any size that fits int64 */
  CHECK_INT(jint("9007199254740991", -big, big, &v), ==, 0);
  CHECK_INT(v, ==, big - 1);
  CHECK_INT(jint("9007199254740993", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK_INT(v, ==, big + 1);
  /* N.0 forms are exact decimal integers at any size that fits int64 */
  CHECK_INT(jint("9007199254740992.0", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK_INT(v, ==, big);
  CHECK_INT(jint("-9007199254740992.0", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK_INT(v, ==, -big);
  CHECK_INT(jint("9007199254740994.0", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK_INT(v, ==, big + 2);
  CHECK_INT(jint("-9007199254740994.0", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK_INT(v, ==, -big - 2);
  CHECK_INT(jint("9223372036854775807", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK_INT(jint("9223372036854775808", INT64_MIN, INT64_MAX, &v), ==, SL_ETOOBIG);
  CHECK_INT(jint("-9223372036854775808", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK_INT(v, ==, INT64_MIN);
  CHECK_INT(jint("1e16", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK(v == 10000000000000000LL);
  CHECK_INT(jint("9.223372036854775807e18", INT64_MIN, INT64_MAX, &v), ==, 0);
  CHECK(v == INT64_MAX);
  CHECK_INT(jint("9.223372036854775808e18", INT64_MIN, INT64_MAX, &v), ==, SL_ETOOBIG);
  CHECK_INT(jint("1e19", INT64_MIN, INT64_MAX, &v), ==, SL_ETOOBIG);
  /* the item id range: exactly +-(2^53 - 1) */
  CHECK_INT(jint("9007199254740992", -(big - 1), big - 1, &v), ==, SL_ETOOBIG);
  CHECK_INT(jint("-9007199254740992", -(big - 1), big - 1, &v), ==, SL_ETOOBIG);
}

static void test_double(void) {
  double d = 0;

  CHECK_INT(sl__json_double("0.5", 3, &d), ==, 0);
  CHECK(d == 0.5);
  CHECK_INT(sl__json_double("-1e3", 4, &d), ==, 0);
  CHECK(d == -1000.0);
  CHECK_INT(sl__json_double("7", 1, &d), ==, 0);
  CHECK(d == 7.0);
  d = 3.0;
  CHECK_INT(sl__json_double("1e400", 5, &d), ==, SL_EINVAL);
  CHECK_INT(sl__json_double("\"1\"", 3, &d), ==, SL_EINVAL);
  CHECK_INT(sl__json_double("abc", 3, &d), ==, SL_EINVAL);
  CHECK_INT(sl__json_double("", 0, &d), ==, SL_EINVAL);
  CHECK_INT(sl__json_double("1.5x", 4, &d), ==, SL_EINVAL);
  CHECK_INT(sl__json_double("-inf", 4, &d), ==, SL_EINVAL);
  CHECK(d == 3.0);
}

/* ---- sl__json_put_str ---- */

static void test_put_plain_and_escapes(void) {
  put_is("", 0, "\"\"");
  put_is("abc", 3, "\"abc\"");
  put_is("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
  put_is("\n\r\t", 3, "\"\\n\\r\\t\"");
  put_is("/\x7f", 2, "\"/\x7f\"");
}

static void test_put_control_bytes(void) {
  put_is("\x01", 1, "\"\\u0001\"");
  put_is("\x1f", 1, "\"\\u001f\"");
  put_is("\b\f", 2, "\"\\u0008\\u000c\"");
  put_is("a\0b", 3, "\"a\\u0000b\"");
  put_is("x\x1by\x10z", 5, "\"x\\u001by\\u0010z\"");
}

static void test_put_utf8(void) {
  put_is("caf\xc3\xa9", 5, "\"caf\xc3\xa9\"");
  put_is("\xe2\x82\xac 5", 5, "\"\xe2\x82\xac 5\"");
  put_is("\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\"");
  put_is("\xf4\x8f\xbf\xbf", 4, "\"\xf4\x8f\xbf\xbf\"");
}

static void test_put_invalid_utf8(void) {
  put_is("\xff", 1, "\"\xef\xbf\xbd\"");
  put_is("a\xc3", 2, "\"a\xef\xbf\xbd\"");
  put_is("\xe2\x82x", 3, "\"\xef\xbf\xbd\xef\xbf\xbdx\"");
  put_is("\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
  put_is("\xc0\x80", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
  put_is("\xc3\xa9\xff\xc3\xa9", 5, "\"\xc3\xa9\xef\xbf\xbd\xc3\xa9\"");
  put_is("\"\xff\n", 3, "\"\\\"\xef\xbf\xbd\\n\"");
}

static void test_put_appends_and_limit(void) {
  sl_buf b;

  sl__buf_init(&b, 64);
  CHECK_INT(sl__buf_puts(&b, "{\"k\":"), ==, 0);
  CHECK_INT(sl__json_put_str(&b, "v\n", 2), ==, 0);
  CHECK_STR(b.p, "{\"k\":\"v\\n\"");
  sl__buf_free(&b);

  /* "\"\\u0001\"" is 8 bytes: a limit of 7 fails, the content stays valid C */
  sl__buf_init(&b, 7);
  CHECK_INT(sl__json_put_str(&b, "\x01", 1), ==, SL_ETOOBIG);
  CHECK(b.len <= 7);
  CHECK(b.p == NULL || strlen(b.p) == b.len);
  sl__buf_free(&b);
  sl__buf_init(&b, 8);
  CHECK_INT(sl__json_put_str(&b, "\x01", 1), ==, 0);
  CHECK_STR(b.p, "\"\\u0001\"");
  sl__buf_free(&b);
}

/* Reference: the UTF-8 sequence length at p per Unicode Table 3-7, or 0. */
static size_t ref_seq(const unsigned char *p, size_t left) {
  unsigned char c = p[0];
  unsigned char lo = 0x80;
  unsigned char hi = 0xbf;
  size_t n;

  if (c <= 0x7f)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    n = 2;
  else if (c >= 0xe0 && c <= 0xef)
    n = 3;
  else if (c >= 0xf0 && c <= 0xf4)
    n = 4;
  else
    return 0;
  if (c == 0xe0)
    lo = 0xa0;
  else if (c == 0xed)
    hi = 0x9f;
  else if (c == 0xf0)
    lo = 0x90;
  else if (c == 0xf4)
    hi = 0x8f;
  if (left < n || p[1] < lo || p[1] > hi)
    return 0;
  for (size_t i = 2; i < n; i++) {
    if (p[i] < 0x80 || p[i] > 0xbf)
      return 0;
  }
  return n;
}

/* Reference: s with every byte that does not start a valid sequence replaced
 * by U+FFFD. */
static size_t ref_sanitize(const unsigned char *s, size_t n, unsigned char *out) {
  size_t o = 0;

  for (size_t i = 0; i < n;) {
    size_t k = ref_seq(s + i, n - i);

    if (k == 0) {
      memcpy(out + o, "\xef\xbf\xbd", 3);
      o += 3;
      i++;
    } else {
      memcpy(out + o, s + i, k);
      o += k;
      i += k;
    }
  }
  return o;
}

/* Appends code point cp as UTF-8 (test-side encoder). */
static size_t enc_utf8(uint32_t cp, unsigned char *o) {
  if (cp < 0x80) {
    o[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (unsigned char)(0xc0 | (cp >> 6));
    o[1] = (unsigned char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (unsigned char)(0xe0 | (cp >> 12));
    o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (unsigned char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (unsigned char)(0xf0 | (cp >> 18));
  o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (unsigned char)(0x80 | (cp & 0x3f));
  return 4;
}

/* put_str -> validate -> unescape must give back the input exactly, for
 * random strings of code points (controls, quotes, backslashes, NULs and
 * every UTF-8 length included). */
static void test_put_roundtrip_codepoints(void) {
  unsigned char in[256];
  sl_buf js;
  sl_buf back;
  char err[128];
  size_t pos;

  for (int iter = 0; iter < 3000; iter++) {
    size_t n = 0;
    int cps = (int)(rnd() % 40);

    for (int k = 0; k < cps; k++) {
      uint32_t cp;

      switch (rnd() % 5) {
      case 0: cp = rnd() % 0x20; break;                      /* control */
      case 1: cp = (rnd() & 1) ? '"' : '\\'; break;
      case 2: cp = 0x20 + rnd() % 0x60; break;               /* ASCII */
      case 3: cp = 0x80 + rnd() % (0xd800 - 0x80); break;    /* 2-3 bytes */
      default: cp = 0xe000 + rnd() % (0x110000 - 0xe000); break;
      }
      n += enc_utf8(cp, in + n);
    }
    sl__buf_init(&js, 4096);
    sl__buf_init(&back, 4096);
    CHECK_INT(sl__json_put_str(&js, (const char *)in, n), ==, 0);
    if (sl__json_validate(js.p, js.len, 0, &pos, err, sizeof(err)) != 0)
      sl_test_fail(__FILE__, __LINE__, "iteration %d: put_str output invalid at %zu: %s", iter, pos, err);
    CHECK_INT(sl__json_unescape(js.p, js.len, &back), ==, 0);
    CHECK_INT(back.len, ==, n);
    CHECK(n == 0 || memcmp(back.p, in, n) == 0);
    sl__buf_free(&js);
    sl__buf_free(&back);
  }
}

/* For random bytes the output is always valid JSON, and it decodes to the
 * input with each invalid byte replaced by U+FFFD. */
static void test_put_roundtrip_random_bytes(void) {
  unsigned char in[64];
  unsigned char want[64 * 3];
  sl_buf js;
  sl_buf back;
  char err[128];
  size_t pos;

  for (int iter = 0; iter < 5000; iter++) {
    size_t n = rnd() % sizeof(in);
    size_t wn;

    for (size_t i = 0; i < n; i++) {
      uint32_t r = rnd();

      /* favour the bytes that matter: controls, quotes, UTF-8 leads/trails */
      switch (r % 4) {
      case 0: in[i] = (unsigned char)(r >> 8); break;
      case 1: in[i] = (unsigned char)(0x80 | ((r >> 8) & 0x3f)); break;
      case 2: in[i] = (unsigned char)(0xc0 + ((r >> 8) % 0x40)); break;
      default: in[i] = (unsigned char)("\"\\\n\x01\x7f" "a\xed\xf4")[(r >> 8) % 8]; break;
      }
    }
    wn = ref_sanitize(in, n, want);
    sl__buf_init(&js, 4096);
    sl__buf_init(&back, 4096);
    CHECK_INT(sl__json_put_str(&js, (const char *)in, n), ==, 0);
    if (sl__json_validate(js.p, js.len, 0, &pos, err, sizeof(err)) != 0)
      sl_test_fail(__FILE__, __LINE__, "iteration %d: put_str output invalid at %zu: %s", iter, pos, err);
    CHECK_INT(sl__json_unescape(js.p, js.len, &back), ==, 0);
    CHECK_INT(back.len, ==, wn);
    CHECK(wn == 0 || memcmp(back.p, want, wn) == 0);
    sl__buf_free(&js);
    sl__buf_free(&back);
  }
}

/* ---- sl__json_validate_strict ---- */

static void strict_ok_at(const char *file, int line, const char *s) {
  char err[128] = "";
  size_t pos = 999;

  if (sl__json_validate_strict(s, strlen(s), SL_ITEM_MAX_DEPTH, &pos, err, sizeof(err)) != 0)
    sl_test_fail(file, line, "%s refused by the strict check at %zu: %s", s, pos, err);
}
#define STRICT_OK(s) strict_ok_at(__FILE__, __LINE__, (s))

/* s must be refused by the strict check only: a key twice, the later one at
 * byte pos. */
static void strict_dup_at(const char *file, int line, const char *s, size_t len, size_t pos) {
  char err[128] = "";
  size_t got = 999;
  int rc = sl__json_validate_strict(s, len, SL_ITEM_MAX_DEPTH, &got, err, sizeof(err));

  if (rc != SL_EINVAL)
    sl_test_fail(file, line, "%.80s: rc %d, expected SL_EINVAL", s, rc);
  if (got != pos || strstr(err, "appears twice in one object") == NULL)
    sl_test_fail(file, line, "%.80s: refused at %zu (%s), expected a key twice at %zu", s, got, err, pos);
  if (sl__json_validate(s, len, SL_ITEM_MAX_DEPTH, &got, err, sizeof(err)) != 0)
    sl_test_fail(file, line, "%.80s: refused by the plain check too: %s", s, err);
}
#define STRICT_DUP(s, pos) strict_dup_at(__FILE__, __LINE__, (s), strlen(s), (pos))

static void test_strict_duplicate_keys(void) {
  char err[128] = "";
  size_t pos = 0;

  STRICT_OK("{\"a\":1,\"b\":2}");
  STRICT_OK("{}");
  STRICT_OK("[1,\"a\",\"a\"]");
  STRICT_OK("{\"a\":1,\"A\":2}");
  STRICT_OK("{\"a\":1,\"a \":2,\" a\":3}");
  STRICT_OK("{\"\":1,\" \":2}");
  STRICT_OK("{\"ab\":1,\"a\":{\"b\":1,\"ab\":2}}");
  STRICT_OK("{\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":2}}"); /* the same key in different objects */
  STRICT_OK("[{\"a\":1},{\"a\":2},[{\"a\":3}]]");
  STRICT_OK("{\"a\":{\"b\":1},\"b\":2}");
  STRICT_OK("{\"\\u0000\":1,\"\\u0000a\":2}");
  STRICT_OK("{\"url\":1,\"URL\":2,\"ur\\u006c\\u0020\":3}");

  STRICT_DUP("{\"a\":1,\"a\":2}", 7);
  STRICT_DUP("{\"a\":1,\"b\":2,\"a\":3}", 13);
  STRICT_DUP("{\"\":1,\"\":2}", 6);
  /* compared by their decoded text */
  STRICT_DUP("{\"url\":1,\"u\\u0072l\":2}", 9);
  STRICT_DUP("{\"u\\u0072l\":1,\"url\":2}", 14);
  STRICT_DUP("{\"u\\u0072l\":1,\"\\u0075rl\":2}", 14);
  STRICT_DUP("{\"\\/\":1,\"/\":2}", 8);
  STRICT_DUP("{\"\xc3\xa9\":1,\"\\u00e9\":2}", 8);
  STRICT_DUP("{\"\\u00E9\":1,\"\\u00e9\":2}", 12);
  STRICT_DUP("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}", 18);
  STRICT_DUP("{\"\\n\":1,\"\\u000a\":2}", 8);
  STRICT_DUP("{\"\\u0000\":1,\"\\u0000\":2}", 12);
  /* at any depth, in arrays too, and after an inner object closed */
  STRICT_DUP("{\"a\":{\"x\":1,\"y\":{\"z\":1,\"z\":2}}}", 23);
  STRICT_DUP("[1,{\"k\":1,\"k\":1}]", 10);
  STRICT_DUP("{\"a\":{\"b\":1},\"a\":2}", 13);
  STRICT_DUP("[[[{\"q\":[{\"r\":0,\"r\":0}]}]]]", 16);
  /* the message quotes the key as written */
  CHECK_INT(sl__json_validate_strict("{\"url\":1,\"u\\u0072l\":2}", 22, 8, &pos, err, sizeof(err)), ==, SL_EINVAL);
  CHECK(strcmp(err, "key \"u\\u0072l\" appears twice in one object") == 0 ||
        strcmp(err, "key \"url\" appears twice in one object") == 0);
  /* the other checks still apply */
  CHECK_INT(sl__json_validate_strict("{\"a\":1,}", 8, 8, &pos, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "expected a string key");
  CHECK_INT(sl__json_validate_strict("[[1]]", 5, 1, &pos, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "nesting");
}

/* An object of n keys "k0".."k<n-1>", then `extra` (a raw member or ""). */
static char *many_keys(int n, const char *extra, size_t *len, size_t *last) {
  size_t cap = (size_t)n * 16 + strlen(extra) + 16;
  char *s = malloc(cap);
  size_t k = 0;

  CHECK(s != NULL);
  s[k++] = '{';
  for (int i = 0; i < n; i++) {
    if (i > 0)
      s[k++] = ',';
    *last = k;
    k += (size_t)snprintf(s + k, cap - k, "\"k%d\":%d", i, i);
  }
  if (extra[0] != '\0') {
    s[k++] = ',';
    *last = k;
    k += (size_t)snprintf(s + k, cap - k, "%s", extra);
  }
  s[k++] = '}';
  s[k] = '\0';
  *len = k;
  return s;
}

/* Past 64 keys the keys are tracked on the heap. */
static void test_strict_many_keys(void) {
  size_t len;
  size_t last = 0;
  char *s;
  char err[128];
  size_t pos;

  s = many_keys(5000, "", &len, &last);
  CHECK_INT(sl__json_validate_strict(s, len, 8, &pos, err, sizeof(err)), ==, 0);
  free(s);
  s = many_keys(5000, "\"k4999\":0", &len, &last);
  strict_dup_at(__FILE__, __LINE__, s, len, last);
  free(s);
  s = many_keys(5000, "\"k0\":0", &len, &last);
  strict_dup_at(__FILE__, __LINE__, s, len, last);
  free(s);
  s = many_keys(5000, "\"k\\u0031\\u0037\":0", &len, &last); /* "k17", escaped */
  strict_dup_at(__FILE__, __LINE__, s, len, last);
  free(s);
  /* exactly 64 and 65 keys, each side of the stack array */
  s = many_keys(64, "", &len, &last);
  CHECK_INT(sl__json_validate_strict(s, len, 8, &pos, err, sizeof(err)), ==, 0);
  free(s);
  s = many_keys(64, "\"k63\":0", &len, &last);
  strict_dup_at(__FILE__, __LINE__, s, len, last);
  free(s);
  s = many_keys(65, "\"k0\":0", &len, &last);
  strict_dup_at(__FILE__, __LINE__, s, len, last);
  free(s);
}

/* Inner objects' keys are popped when they close, on the heap too. */
static void test_strict_nested_many_keys(void) {
  size_t cap = 64 * 1024;
  char *s = malloc(cap);
  size_t k = 0;
  size_t dup = 0;
  char err[128];
  size_t pos;

  CHECK(s != NULL);
  /* {"o0":0,...,"o99":{"k0":0,...,"k199":0},"o100":0,...,"o149":0} */
  k += (size_t)snprintf(s + k, cap - k, "{");
  for (int i = 0; i < 150; i++) {
    k += (size_t)snprintf(s + k, cap - k, "%s\"o%d\":", i ? "," : "", i);
    if (i == 99) {
      k += (size_t)snprintf(s + k, cap - k, "{");
      for (int j = 0; j < 200; j++)
        k += (size_t)snprintf(s + k, cap - k, "%s\"k%d\":0", j ? "," : "", j);
      k += (size_t)snprintf(s + k, cap - k, "}");
    } else {
      k += (size_t)snprintf(s + k, cap - k, "0");
    }
  }
  k += (size_t)snprintf(s + k, cap - k, "}");
  CHECK_INT(sl__json_validate_strict(s, k, 8, &pos, err, sizeof(err)), ==, 0);
  /* "k5" as an outer key is no duplicate; "o3" is */
  k--;
  k += (size_t)snprintf(s + k, cap - k, ",\"k5\":1}");
  CHECK_INT(sl__json_validate_strict(s, k, 8, &pos, err, sizeof(err)), ==, 0);
  k--;
  dup = k + 1;
  k += (size_t)snprintf(s + k, cap - k, ",\"o3\":1}");
  strict_dup_at(__FILE__, __LINE__, s, k, dup);
  free(s);
}

/* Tracking many keys may run out of memory: SL_ENOMEM, "out of memory". */
static void test_strict_many_keys_alloc_failures(void) {
  size_t len;
  size_t last = 0;
  char *docs[2];
  char err[128];
  size_t pos;

  docs[0] = many_keys(5000, "", &len, &last);
  docs[1] = many_keys(5000, "\"k4999\":0", &len, &last);
  for (int d = 0; d < 2; d++) {
    long fault;

    for (fault = 0; fault < 64; fault++) {
      int rc;

      err[0] = '\0';
      sl__alloc_fail_after(fault);
      rc = sl__json_validate_strict(docs[d], strlen(docs[d]), 8, &pos, err, sizeof(err));
      sl__alloc_fail_after(-1);
      if (rc != SL_ENOMEM) {
        CHECK_INT(rc, ==, d == 0 ? 0 : SL_EINVAL);
        break;
      }
      CHECK_STR(err, "out of memory");
    }
    /* 64 keys on the stack, then 128, 256, ... 8192 on the heap */
    CHECK_INT(fault, ==, 7);
    free(docs[d]);
  }
  /* the plain check never allocates */
  docs[0] = many_keys(5000, "\"k1\":0", &len, &last);
  sl__alloc_fail_after(0);
  CHECK_INT(sl__json_validate(docs[0], len, 8, &pos, err, sizeof(err)), ==, 0);
  sl__alloc_fail_after(-1);
  free(docs[0]);
}

static void test_strict_lone_surrogates(void) {
  static const char *const lone[] = {
    "\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83dx\"", "\"\\ud83d\\u0041\"", "\"\\ude00\\ud83d\"",
    "\"\\ud83d\\ud83d\\ude00\"",
    "\"\\uDBFF\"", "\"\\uDC00\"", "\"\\ud83d\\\"", "\"\\ud83d\\n\"", "{\"\\ud800\":1}", "[\"ok\",\"\\udfff\"]", NULL,
  };

  for (int i = 0; lone[i] != NULL; i++) {
    char err[128] = "";
    size_t pos = 0;

    if (sl__json_validate_strict(lone[i], strlen(lone[i]), 8, &pos, err, sizeof(err)) != SL_EINVAL ||
        strstr(err, "lone UTF-16 surrogate") == NULL)
      sl_test_fail(__FILE__, __LINE__, "%s: strict check says \"%s\"", lone[i], err);
    if (sl__json_validate(lone[i], strlen(lone[i]), 8, &pos, err, sizeof(err)) != SL_EINVAL ||
        strstr(err, "lone UTF-16 surrogate") == NULL)
      sl_test_fail(__FILE__, __LINE__, "%s: plain check says \"%s\"", lone[i], err);
  }
  STRICT_OK("{\"\\ud83d\\ude00\":\"\\udbff\\udfff\"}");
}

/* ---- sl__utf8_invalid_at and sl__utf8_cut ---- */

static void test_utf8_invalid_at(void) {
  CHECK_INT(sl__utf8_invalid_at("", 0), ==, 0);
  CHECK_INT(sl__utf8_invalid_at("abc", 3), ==, 3);
  CHECK_INT(sl__utf8_invalid_at("a\0b", 3), ==, 3);
  CHECK_INT(sl__utf8_invalid_at("caf\xc3\xa9", 5), ==, 5);
  CHECK_INT(sl__utf8_invalid_at("\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", 11), ==, 11);
  CHECK_INT(sl__utf8_invalid_at("a\xff", 2), ==, 1);
  CHECK_INT(sl__utf8_invalid_at("ab\xc3", 3), ==, 2);           /* truncated */
  CHECK_INT(sl__utf8_invalid_at("\xc3\xa9", 1), ==, 0);         /* cut by n */
  CHECK_INT(sl__utf8_invalid_at("x\xed\xa0\x80", 4), ==, 1);    /* a surrogate */
  CHECK_INT(sl__utf8_invalid_at("ab\xc0\x80", 4), ==, 2);       /* overlong */
  CHECK_INT(sl__utf8_invalid_at("\xe0\x9f\xbf", 3), ==, 0);     /* overlong */
  CHECK_INT(sl__utf8_invalid_at("\xf4\x90\x80\x80", 4), ==, 0); /* past U+10FFFF */
  CHECK_INT(sl__utf8_invalid_at("\xe2\x82\xac\x80", 4), ==, 3); /* a stray continuation byte */
  CHECK_INT(sl__utf8_invalid_at("x\xf0\x9f\x98\x80y\xfe", 7), ==, 6);
  CHECK_INT(sl__utf8_invalid_at("\xc3\xc3\xa9", 3), ==, 0);
}

static void test_utf8_cut_cases(void) {
  CHECK_INT(sl__utf8_cut("", 0), ==, 0);
  CHECK_INT(sl__utf8_cut("abc", 3), ==, 3);
  CHECK_INT(sl__utf8_cut("abc", 2), ==, 2);
  CHECK_INT(sl__utf8_cut("caf\xc3\xa9", 5), ==, 5);
  CHECK_INT(sl__utf8_cut("caf\xc3\xa9", 4), ==, 3);
  CHECK_INT(sl__utf8_cut("\xe2\x82\xac", 1), ==, 0);
  CHECK_INT(sl__utf8_cut("\xe2\x82\xac", 2), ==, 0);
  CHECK_INT(sl__utf8_cut("\xe2\x82\xac", 3), ==, 3);
  CHECK_INT(sl__utf8_cut("a\xf0\x9f\x98\x80", 2), ==, 1);
  CHECK_INT(sl__utf8_cut("a\xf0\x9f\x98\x80", 3), ==, 1);
  CHECK_INT(sl__utf8_cut("a\xf0\x9f\x98\x80", 4), ==, 1);
  CHECK_INT(sl__utf8_cut("a\xf0\x9f\x98\x80", 5), ==, 5);
  CHECK_INT(sl__utf8_cut("\xc3\xa9\xc3\xa9", 3), ==, 2);
  CHECK_INT(sl__utf8_cut("\xc3\xa9\xe2\x82\xac", 4), ==, 2);
}

/* A random valid UTF-8 string of up to 40 code points into out; its
 * character boundaries are marked in at[0..len]. Returns its length. */
static size_t random_utf8(unsigned char *out, unsigned char *at) {
  size_t n = 0;
  int cps = (int)(rnd() % 40);

  at[0] = 1;
  for (int k = 0; k < cps; k++) {
    uint32_t cp;
    size_t w;

    switch (rnd() % 7) {
    case 0: cp = rnd() % 0x20; break; /* control bytes, NUL included */
    case 1: cp = "\"\\/\x7f"[rnd() % 4]; break;
    case 2: cp = 0x20 + rnd() % 0x60; break;
    case 3: cp = 0x80 + rnd() % (0x800 - 0x80); break;
    case 4: cp = 0x800 + rnd() % (0xd800 - 0x800); break;
    case 5: cp = 0xe000 + rnd() % (0x10000 - 0xe000); break;
    default: cp = 0x10000 + rnd() % (0x110000 - 0x10000); break;
    }
    w = enc_utf8(cp, out + n);
    for (size_t i = 1; i < w; i++)
      at[n + i] = 0;
    n += w;
    at[n] = 1;
  }
  return n;
}

/* For valid UTF-8, cut(s, n) is the last character boundary at or before n. */
static void test_utf8_cut_random(void) {
  unsigned char s[256];
  unsigned char at[257];

  for (int iter = 0; iter < 5000; iter++) {
    size_t len = random_utf8(s, at);

    CHECK_INT(sl__utf8_invalid_at((const char *)s, len), ==, len);
    for (size_t n = 0; n <= len; n++) {
      size_t want = n;
      size_t got = sl__utf8_cut((const char *)s, n);

      while (!at[want])
        want--;
      if (got != want)
        sl_test_fail(__FILE__, __LINE__, "iteration %d: cut at %zu of %zu gives %zu, expected %zu", iter, n, len, got,
                     want);
    }
  }
}

/* ---- sl__json_str_len ---- */

static size_t put_len(const char *s, size_t n) {
  sl_buf b;
  size_t len;

  sl__buf_init(&b, 1 << 20);
  CHECK_INT(sl__json_put_str(&b, s, n), ==, 0);
  len = b.len;
  sl__buf_free(&b);
  return len;
}

static void test_str_len_cases(void) {
  static const struct {
    const char *s;
    size_t n;
    size_t want;
  } cases[] = {
    {"", 0, 2}, {"a", 1, 3}, {"\"", 1, 4}, {"\\", 1, 4}, {"\n\r\t", 3, 8}, {"\b\f", 2, 14}, {"\x01", 1, 8},
    {"\0", 1, 8}, {"\x1f\x7f", 2, 9}, {"/", 1, 3}, {"\xc3\xa9", 2, 4}, {"\xf0\x9f\x98\x80", 4, 6},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    CHECK_INT(sl__json_str_len(cases[i].s, cases[i].n), ==, cases[i].want);
    CHECK_INT(put_len(cases[i].s, cases[i].n), ==, cases[i].want);
  }
}

/* For valid UTF-8, the length is the one sl__json_put_str writes. */
static void test_str_len_matches_put_str(void) {
  unsigned char s[256];
  unsigned char at[257];

  for (int iter = 0; iter < 5000; iter++) {
    size_t len = random_utf8(s, at);
    size_t want = put_len((const char *)s, len);

    if (sl__json_str_len((const char *)s, len) != want)
      sl_test_fail(__FILE__, __LINE__, "iteration %d: str_len %zu, put_str wrote %zu", iter,
                   sl__json_str_len((const char *)s, len), want);
  }
}

/* ---- sl__json_elements ---- */

static void test_elements(void) {
  const char *doc = " [ 1 , \"a,]\" , {\"x\":[1,2]} ,null,[ ] ] ";
  sl_json_member e[8];
  size_t n = 99;

  CHECK_INT(sl__json_elements(doc, strlen(doc), e, 8, &n), ==, 0);
  CHECK_INT(n, ==, 5);
  CHECK(e[0].key == NULL && e[0].keylen == 0);
  CHECK(e[0].val == doc + 3 && e[0].vallen == 1);
  CHECK_INT(e[1].vallen, ==, 5);
  CHECK(memcmp(e[1].val, "\"a,]\"", 5) == 0);
  CHECK_INT(e[2].vallen, ==, 11);
  CHECK(memcmp(e[2].val, "{\"x\":[1,2]}", 11) == 0);
  CHECK(memcmp(e[3].val, "null", 4) == 0 && e[3].vallen == 4);
  CHECK(memcmp(e[4].val, "[ ]", 3) == 0 && e[4].vallen == 3);

  n = 99;
  CHECK_INT(sl__json_elements("[]", 2, e, 8, &n), ==, 0);
  CHECK_INT(n, ==, 0);
  CHECK_INT(sl__json_elements(" [ ] ", 5, e, 0, &n), ==, 0);
  CHECK_INT(n, ==, 0);
  CHECK_INT(sl__json_elements("[[],[]]", 7, e, 8, &n), ==, 0);
  CHECK_INT(n, ==, 2);
  /* the limit on both sides */
  CHECK_INT(sl__json_elements("[1,2,3]", 7, e, 3, &n), ==, 0);
  CHECK_INT(n, ==, 3);
  CHECK_INT(sl__json_elements("[1,2,3]", 7, e, 2, &n), ==, SL_ETOOBIG);
  CHECK_INT(sl__json_elements("[1]", 3, e, 0, &n), ==, SL_ETOOBIG);
  /* not an array */
  CHECK_INT(sl__json_elements("{}", 2, e, 8, &n), ==, SL_EINVAL);
  CHECK_INT(sl__json_elements("1", 1, e, 8, &n), ==, SL_EINVAL);
  CHECK_INT(sl__json_elements("\"[1]\"", 5, e, 8, &n), ==, SL_EINVAL);
  CHECK_INT(sl__json_elements("", 0, e, 8, &n), ==, SL_EINVAL);
  CHECK_INT(sl__json_elements("[1", 2, e, 8, &n), ==, SL_EINVAL);
}

/* ---- Regressions: bugs found by these tests, now fixed ---- */

/* sl__json_int accepts non-integers whose double rounds to an integer. */
static void test_regress_int_inexact_fraction(void) {
  int64_t v = 0;

  CHECK_INT(jint("1.0000000000000001", 0, 10, &v), ==, SL_EINVAL);
  CHECK_INT(jint("9007199254740992.5", INT64_MIN, INT64_MAX, &v), ==, SL_EINVAL);
  /* 2^53 + 1 must be either rejected or exact, never rounded to 2^53 */
  if (jint("9007199254740993.0", INT64_MIN, INT64_MAX, &v) == 0)
    CHECK_INT(v, ==, 9007199254740993LL);
}

/* An integer outside int64 is outside [lo, hi]: json.h promises SL_ETOOBIG. */
static void test_regress_int_huge_is_einval(void) {
  int64_t v = 0;

  CHECK_INT(jint("12345678901234567890", 1, 1000, &v), ==, SL_ETOOBIG);
}

/* errpos of a bad number is its first byte, not the offending one. */
static void test_regress_number_errpos(void) {
  invalid("1.", 2, "digits expected after '.'");
  invalid("-", 1, "bad number");
  invalid("1e", 2, "digits expected in exponent");
}

static const sl_test tests[] = {
  {"validate_scalars", test_validate_scalars, 10},
  {"validate_strings", test_validate_strings, 10},
  {"validate_containers", test_validate_containers, 10},
  {"validate_whitespace", test_validate_whitespace, 10},
  {"validate_trailing_garbage", test_validate_trailing_garbage, 10},
  {"validate_control_bytes", test_validate_control_bytes, 10},
  {"validate_bad_utf8", test_validate_bad_utf8, 10},
  {"validate_depth_limit", test_validate_depth_limit, 10},
  {"validate_numbers", test_validate_numbers, 10},
  {"validate_syntax_errors", test_validate_syntax_errors, 10},
  {"validate_err_buffers", test_validate_err_buffers, 10},
  {"validate_random_input", test_validate_random_input, 30},
  {"members_spans", test_members_spans, 10},
  {"members_empty_and_scalars", test_members_empty_and_scalars, 10},
  {"members_not_object", test_members_not_object, 10},
  {"members_too_many", test_members_too_many, 10},
  {"unescape_simple", test_unescape_simple, 10},
  {"unescape_u_escapes", test_unescape_u_escapes, 10},
  {"unescape_surrogates", test_unescape_surrogates, 10},
  {"unescape_errors", test_unescape_errors, 10},
  {"int_exact", test_int_exact, 10},
  {"int_integral_floats", test_int_integral_floats, 10},
  {"int_not_integer", test_int_not_integer, 10},
  {"int_range", test_int_range, 10},
  {"int_2_53_bounds", test_int_2_53_bounds, 10},
  {"double", test_double, 10},
  {"put_plain_and_escapes", test_put_plain_and_escapes, 10},
  {"put_control_bytes", test_put_control_bytes, 10},
  {"put_utf8", test_put_utf8, 10},
  {"put_invalid_utf8", test_put_invalid_utf8, 10},
  {"put_appends_and_limit", test_put_appends_and_limit, 10},
  {"put_roundtrip_codepoints", test_put_roundtrip_codepoints, 30},
  {"put_roundtrip_random_bytes", test_put_roundtrip_random_bytes, 30},
  {"strict_duplicate_keys", test_strict_duplicate_keys, 10},
  {"strict_many_keys", test_strict_many_keys, 10},
  {"strict_nested_many_keys", test_strict_nested_many_keys, 10},
  {"strict_many_keys_alloc_failures", test_strict_many_keys_alloc_failures, 30},
  {"strict_lone_surrogates", test_strict_lone_surrogates, 10},
  {"utf8_invalid_at", test_utf8_invalid_at, 10},
  {"utf8_cut_cases", test_utf8_cut_cases, 10},
  {"utf8_cut_random", test_utf8_cut_random, 30},
  {"str_len_cases", test_str_len_cases, 10},
  {"str_len_matches_put_str", test_str_len_matches_put_str, 30},
  {"elements", test_elements, 10},
  {"regress_int_inexact_fraction", test_regress_int_inexact_fraction, 10},
  {"regress_int_huge_is_einval", test_regress_int_huge_is_einval, 10},
  {"regress_number_errpos", test_regress_number_errpos, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
