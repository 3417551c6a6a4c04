/*
 * Unit tests for the bounded growable buffer (src/buf.c): append, puts,
 * putc, printf, reset and take, and the hard limit: an append past `max`
 * fails with SL_ETOOBIG and leaves the content exactly as it was.
 */
#include <stdarg.h>
#include <string.h>

#include <sluice/sluice.h>

#include "buf.h"
#include "harness.h"

/* ---- Helpers ---- */

/* Checks that b holds exactly s[0..n) followed by a NUL. */
static void holds(const sl_buf *b, const char *s, size_t n) {
  if (b->len != n)
    sl_test_fail(__FILE__, __LINE__, "len %zu, expected %zu", b->len, n);
  CHECK(b->p != NULL);
  CHECK(memcmp(b->p, s, n) == 0);
  CHECK(b->p[n] == '\0');
  CHECK_INT(b->cap, >, n);
}

static int vprintf_wrapper(sl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int vprintf_wrapper(sl_buf *b, const char *fmt, ...) {
  va_list ap;
  int rc;

  va_start(ap, fmt);
  rc = sl__buf_vprintf(b, fmt, ap);
  va_end(ap);
  return rc;
}

/* ---- Tests ---- */

static void test_init_empty(void) {
  sl_buf b;

  memset(&b, 0x5a, sizeof(b));
  sl__buf_init(&b, 100);
  CHECK(b.p == NULL);
  CHECK_INT(b.len, ==, 0);
  CHECK_INT(b.cap, ==, 0);
  CHECK_INT(b.max, ==, 100);
  sl__buf_free(&b);
  CHECK(b.p == NULL);
}

static void test_append(void) {
  sl_buf b;

  sl__buf_init(&b, 1024);
  CHECK_INT(sl__buf_append(&b, "hello", 5), ==, 0);
  holds(&b, "hello", 5);
  CHECK_INT(sl__buf_append(&b, " world", 6), ==, 0);
  holds(&b, "hello world", 11);
  /* binary content, NULs included */
  CHECK_INT(sl__buf_append(&b, "\0x\0", 3), ==, 0);
  holds(&b, "hello world\0x\0", 14);
  /* zero bytes: no change */
  CHECK_INT(sl__buf_append(&b, "zzz", 0), ==, 0);
  holds(&b, "hello world\0x\0", 14);
  sl__buf_free(&b);
  CHECK(b.p == NULL);
  CHECK_INT(b.len, ==, 0);
  CHECK_INT(b.cap, ==, 0);
}

static void test_append_nothing_to_empty(void) {
  sl_buf b;

  sl__buf_init(&b, 16);
  CHECK_INT(sl__buf_append(&b, NULL, 0), ==, 0);
  holds(&b, "", 0);
  sl__buf_free(&b);
}

static void test_puts_putc(void) {
  sl_buf b;

  sl__buf_init(&b, 1024);
  CHECK_INT(sl__buf_puts(&b, "ab"), ==, 0);
  CHECK_INT(sl__buf_putc(&b, 'c'), ==, 0);
  CHECK_INT(sl__buf_puts(&b, ""), ==, 0);
  CHECK_INT(sl__buf_putc(&b, '\0'), ==, 0);
  CHECK_INT(sl__buf_putc(&b, 'd'), ==, 0);
  holds(&b, "abc\0d", 5);
  sl__buf_free(&b);
}

static void test_growth(void) {
  sl_buf b;

  sl__buf_init(&b, 100000);
  for (int i = 0; i < 10000; i++)
    CHECK_INT(sl__buf_putc(&b, (char)('a' + i % 26)), ==, 0);
  CHECK_INT(b.len, ==, 10000);
  for (int i = 0; i < 10000; i++) {
    if (b.p[i] != (char)('a' + i % 26))
      sl_test_fail(__FILE__, __LINE__, "byte %d is '%c'", i, b.p[i]);
  }
  CHECK(b.p[10000] == '\0');
  CHECK_INT(b.cap, >, 10000);
  CHECK_INT(b.cap, <=, 100001);
  sl__buf_free(&b);
}

static void test_printf(void) {
  sl_buf b;

  sl__buf_init(&b, 4096);
  CHECK_INT(sl__buf_printf(&b, "%d-%s", 42, "x"), ==, 0);
  holds(&b, "42-x", 4);
  CHECK_INT(sl__buf_printf(&b, "|%lld|%.1f", -9007199254740993LL, 2.5), ==, 0);
  holds(&b, "42-x|-9007199254740993|2.5", 26);
  CHECK_INT(sl__buf_printf(&b, "%s", ""), ==, 0);
  CHECK_INT(b.len, ==, 26);
  sl__buf_free(&b);

  /* one printf much larger than the first allocation */
  sl__buf_init(&b, 4096);
  CHECK_INT(sl__buf_printf(&b, "%0500d", 7), ==, 0);
  CHECK_INT(b.len, ==, 500);
  CHECK_INT(strlen(b.p), ==, 500);
  CHECK(b.p[0] == '0' && b.p[499] == '7');
  sl__buf_free(&b);

  /* printf on an empty buffer with empty output still gives a string */
  sl__buf_init(&b, 10);
  CHECK_INT(sl__buf_printf(&b, "%s", ""), ==, 0);
  holds(&b, "", 0);
  sl__buf_free(&b);
}

static void test_vprintf(void) {
  sl_buf b;

  sl__buf_init(&b, 64);
  CHECK_INT(vprintf_wrapper(&b, "%s=%u", "n", 3u), ==, 0);
  CHECK_INT(vprintf_wrapper(&b, ";%c", 'z'), ==, 0);
  holds(&b, "n=3;z", 5);
  sl__buf_free(&b);
}

static void test_max_append(void) {
  sl_buf b;

  sl__buf_init(&b, 10);
  CHECK_INT(sl__buf_append(&b, "0123456789", 10), ==, 0);
  holds(&b, "0123456789", 10);
  CHECK_INT(b.cap, ==, 11);
  CHECK_INT(sl__buf_append(&b, "a", 1), ==, SL_ETOOBIG);
  holds(&b, "0123456789", 10);
  CHECK_INT(sl__buf_putc(&b, 'a'), ==, SL_ETOOBIG);
  CHECK_INT(sl__buf_puts(&b, "abc"), ==, SL_ETOOBIG);
  holds(&b, "0123456789", 10);
  /* appending nothing at the limit is fine */
  CHECK_INT(sl__buf_append(&b, "", 0), ==, 0);
  holds(&b, "0123456789", 10);
  sl__buf_free(&b);

  /* a single append larger than max fails on an empty buffer, allocating nothing */
  sl__buf_init(&b, 4);
  CHECK_INT(sl__buf_append(&b, "12345", 5), ==, SL_ETOOBIG);
  CHECK(b.p == NULL);
  CHECK_INT(b.len, ==, 0);
  sl__buf_free(&b);
}

static void test_max_partial_content_intact(void) {
  sl_buf b;

  sl__buf_init(&b, 10);
  CHECK_INT(sl__buf_puts(&b, "abcdef"), ==, 0);
  /* 6 + 5 > 10: nothing of the second append is written */
  CHECK_INT(sl__buf_append(&b, "ghijk", 5), ==, SL_ETOOBIG);
  holds(&b, "abcdef", 6);
  CHECK_INT(sl__buf_append(&b, "ghij", 4), ==, 0);
  holds(&b, "abcdefghij", 10);
  sl__buf_free(&b);
}

static void test_max_printf(void) {
  sl_buf b;

  sl__buf_init(&b, 8);
  CHECK_INT(sl__buf_printf(&b, "%s", "abc"), ==, 0);
  CHECK_INT(sl__buf_printf(&b, "%d", 123456), ==, SL_ETOOBIG);
  holds(&b, "abc", 3);
  CHECK_INT(sl__buf_printf(&b, "%d", 12345), ==, 0);
  holds(&b, "abc12345", 8);
  CHECK_INT(sl__buf_printf(&b, "%s", "x"), ==, SL_ETOOBIG);
  holds(&b, "abc12345", 8);
  sl__buf_free(&b);
}

static void test_max_zero(void) {
  sl_buf b;

  sl__buf_init(&b, 0);
  CHECK_INT(sl__buf_putc(&b, 'x'), ==, SL_ETOOBIG);
  CHECK(b.p == NULL);
  CHECK_INT(sl__buf_append(&b, "", 0), ==, 0);
  holds(&b, "", 0);
  CHECK_INT(b.cap, ==, 1);
  sl__buf_free(&b);
}

static void test_reset(void) {
  sl_buf b;
  size_t cap;
  char *p;

  sl__buf_init(&b, 1024);
  sl__buf_reset(&b); /* on a buffer with no memory yet */
  CHECK(b.p == NULL);
  CHECK_INT(sl__buf_puts(&b, "some text"), ==, 0);
  cap = b.cap;
  p = b.p;
  sl__buf_reset(&b);
  CHECK_INT(b.len, ==, 0);
  CHECK(b.p == p);
  CHECK_INT(b.cap, ==, cap);
  CHECK_STR(b.p, "");
  CHECK_INT(sl__buf_puts(&b, "new"), ==, 0);
  holds(&b, "new", 3);
  sl__buf_free(&b);
}

static void test_take(void) {
  sl_buf b;
  char *s;

  sl__buf_init(&b, 64);
  CHECK_INT(sl__buf_puts(&b, "taken"), ==, 0);
  s = sl__buf_take(&b);
  CHECK_STR(s, "taken");
  CHECK(b.p == NULL);
  CHECK_INT(b.len, ==, 0);
  CHECK_INT(b.cap, ==, 0);
  CHECK_INT(b.max, ==, 64);
  /* the buffer is usable again, independent of the taken string */
  CHECK_INT(sl__buf_puts(&b, "again"), ==, 0);
  holds(&b, "again", 5);
  CHECK_STR(s, "taken");
  sl_free(s);
  sl__buf_free(&b);
}

static void test_take_empty(void) {
  sl_buf b;
  char *s;

  sl__buf_init(&b, 64);
  s = sl__buf_take(&b);
  CHECK(s != NULL);
  CHECK_STR(s, "");
  sl_free(s);
  CHECK(b.p == NULL);
  sl__buf_free(&b);
}

static void test_free_twice(void) {
  sl_buf b;

  sl__buf_init(&b, 64);
  CHECK_INT(sl__buf_puts(&b, "x"), ==, 0);
  sl__buf_free(&b);
  sl__buf_free(&b);
  CHECK(b.p == NULL);
  /* max survives free: the buffer can be reused */
  CHECK_INT(sl__buf_puts(&b, "y"), ==, 0);
  holds(&b, "y", 1);
  sl__buf_free(&b);
}

static const sl_test tests[] = {
  {"init_empty", test_init_empty, 10},
  {"append", test_append, 10},
  {"append_nothing_to_empty", test_append_nothing_to_empty, 10},
  {"puts_putc", test_puts_putc, 10},
  {"growth", test_growth, 10},
  {"printf", test_printf, 10},
  {"vprintf", test_vprintf, 10},
  {"max_append", test_max_append, 10},
  {"max_partial_content_intact", test_max_partial_content_intact, 10},
  {"max_printf", test_max_printf, 10},
  {"max_zero", test_max_zero, 10},
  {"reset", test_reset, 10},
  {"take", test_take, 10},
  {"take_empty", test_take_empty, 10},
  {"free_twice", test_free_twice, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
