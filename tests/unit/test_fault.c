/*
 * Allocation-failure tests (SQLite's *fault.test idea): for n = 0, 1, 2, ...
 * make the n-th allocation of an operation fail (sl__alloc_fail_after) and
 * check that the operation reports SL_ENOMEM, leaves its output untouched or
 * empty, frees everything it took, and that the object it worked on is still
 * usable; once n passes the number of allocations the operation makes, it
 * must succeed with the same result as without faults.
 *
 * Leaks are checked twice: in the plain build by counting live heap blocks
 * (this program wraps malloc, calloc, realloc and free around glibc's own)
 * before and after each attempt, and in the sanitizer build, whose allocator
 * must not be wrapped, by LeakSanitizer when each test's child exits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"
#include "harness.h"
#include "item.h"
#include "json.h"
#include "url.h"

/* sl_batch_new, returning the batch or NULL (the error code is checked
 * where it matters). */
static char new_err[256];
static int new_rc;
static sl_batch_t *mk_batch(const sl_batch_opts *o) {
  sl_batch_t *b = NULL;

  new_rc = sl_batch_new(o, &b, new_err, sizeof(new_err));
  return new_rc == 0 ? b : NULL;
}

#define MAX_ALLOCS 200 /* no single operation here allocates more often */

static const sl_item_defaults def_normal = {SL_PRIO_NORMAL, 1, 30000};

/* ---- Helpers ---- */

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SL_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SL_TEST_ASAN 1
#endif

#ifndef SL_TEST_ASAN
/* glibc's allocator under its internal names, so that the definitions below
 * replace malloc & co. for the whole program (libsluice and libc included). */
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static long live_blocks; /* heap blocks allocated and not yet freed */

void *malloc(size_t n) {
  void *p = __libc_malloc(n);

  if (p != NULL)
    live_blocks++;
  return p;
}

void *calloc(size_t n, size_t size) {
  void *p = __libc_calloc(n, size);

  if (p != NULL)
    live_blocks++;
  return p;
}

void *realloc(void *p, size_t n) {
  void *q = __libc_realloc(p, n);

  if (p == NULL && q != NULL)
    live_blocks++;
  else if (p != NULL && n == 0 && q == NULL)
    live_blocks--; /* realloc(p, 0) freed p */
  return q;
}

void free(void *p) {
  if (p != NULL)
    live_blocks--;
  __libc_free(p);
}

/* Live heap blocks now. */
static long heap_used(void) {
  return live_blocks;
}
#else
/* Under ASan the allocator is the sanitizer's: LeakSanitizer checks leaks. */
static long heap_used(void) {
  return 0;
}
#endif

#define CHECK_NO_LEAK(before)                                                                      \
  do {                                                                                             \
    long now_ = heap_used();                                                                       \
    if (now_ != (before))                                                                          \
      sl_test_fail(__FILE__, __LINE__, "%ld heap blocks live, %ld before: leak at fault %ld", now_, \
                   (long)(before), (long)fault);                                                   \
  } while (0)

/*
 * Runs sl__item_parse on `line` failing each allocation in turn. Returns the
 * number of allocations a successful parse makes.
 */
static long item_fault_loop(const char *line, long lineno) {
  char err[256];
  sl_item ref;
  sl_item it;
  long fault;
  long count = -1;
  long base;

  CHECK_INT(sl__item_parse(line, strlen(line), lineno, &def_normal, &ref, err, sizeof(err)), ==, 0);
  base = heap_used();
  for (fault = 0; fault < MAX_ALLOCS; fault++) {
    int rc;

    memset(&it, 0x5a, sizeof(it));
    err[0] = '\0';
    sl__alloc_fail_after(fault);
    rc = sl__item_parse(line, strlen(line), lineno, &def_normal, &it, err, sizeof(err));
    sl__alloc_fail_after(-1);
    if (rc == 0) {
      count = fault;
      CHECK_STR(it.id, ref.id);
      CHECK_STR(it.d, ref.d);
      CHECK_INT(it.dlen, ==, ref.dlen);
      CHECK_INT(it.prio, ==, ref.prio);
      sl__item_free(&it);
      CHECK_NO_LEAK(base);
      break;
    }
    if (rc != SL_ENOMEM)
      sl_test_fail(__FILE__, __LINE__, "fault %ld: rc %d (%s), expected SL_ENOMEM", fault, rc, err);
    CHECK_STR(err, "out of memory");
    CHECK(it.id == NULL);
    CHECK(it.d == NULL);
    CHECK_NO_LEAK(base);
  }
  CHECK(count >= 0);
  /* past the count, every run succeeds */
  for (fault = count; fault < count + 4; fault++) {
    sl__alloc_fail_after(fault);
    CHECK_INT(sl__item_parse(line, strlen(line), lineno, &def_normal, &it, err, sizeof(err)), ==, 0);
    sl__alloc_fail_after(-1);
    CHECK_STR(it.d, ref.d);
    sl__item_free(&it);
    CHECK_NO_LEAK(base);
  }
  sl__item_free(&ref);
  return count;
}

/* ---- sl__item_parse ---- */

static void test_item_parse_string_id(void) {
  char line[1024];
  char body[400];
  long n;

  memset(body, 'b', sizeof(body) - 1);
  body[sizeof(body) - 1] = '\0';
  snprintf(line, sizeof(line),
           "{\"id\":\"r\\u00e9-1\",\"type\":\"email\",\"payload\":{\"to\":\"a@b.c\",\"body\":\"%s\"},"
           "\"max_attempts\":3}",
           body);
  n = item_fault_loop(line, 1);
  /* at least the id and the normalized text, the latter grown several times */
  CHECK_INT(n, >=, 3);
}

static void test_item_parse_default_id(void) {
  long n = item_fault_loop("{\"type\":\"noop\",\"payload\":{}}", 17);

  CHECK_INT(n, >=, 2);
}

static void test_item_parse_integer_id(void) {
  long n = item_fault_loop("{\"id\":9007199254740991,\"type\":\"sleep\",\"payload\":{\"ms\":5}}", 1);

  CHECK_INT(n, >=, 2);
}

/* Invalid items fail the same way with or without allocation faults: the
 * checks come before any allocation, or report the input error first. */
static void test_item_parse_invalid_under_faults(void) {
  static const char *const lines[] = {
    "{\"type\":\"t\"}",
    "{\"type\":\"t\",\"payload\":{},\"colour\":1}",
    "{\"id\":\"\",\"type\":\"t\",\"payload\":{}}",
    "[1]",
  };
  char err[256];
  sl_item it;
  long base = heap_used();

  for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
    for (long fault = 0; fault < 4; fault++) {
      int rc;

      sl__alloc_fail_after(fault);
      rc = sl__item_parse(lines[i], strlen(lines[i]), 1, &def_normal, &it, err, sizeof(err));
      sl__alloc_fail_after(-1);
      CHECK_INT(rc, ==, SL_EINVAL);
      CHECK(strcmp(err, "out of memory") != 0);
      CHECK_NO_LEAK(base);
    }
  }
}

/* ---- sl_batch_new / sl_batch_add ---- */

static void test_batch_new(void) {
  sl_batch_opts opts = {0};
  sl_batch_t *b;
  long fault;
  long base = heap_used();

  opts.name = "nightly import";
  for (fault = 0; fault < MAX_ALLOCS; fault++) {
    sl__alloc_fail_after(fault);
    b = mk_batch(&opts);
    sl__alloc_fail_after(-1);
    if (b != NULL)
      break;
    CHECK_NO_LEAK(base);
  }
  CHECK_INT(fault, ==, 2); /* the batch and its name */
  CHECK_INT(sl_batch_count(b), ==, 0);
  sl_batch_free(b);
  CHECK_NO_LEAK(base);
}

/*
 * One step of the batch sequence under test: adds `line` and checks the
 * outcome. Returns 1 when the step hit the injected fault (after checking
 * SL_ENOMEM and that a retry without faults succeeds), else 0.
 */
static int add_step(sl_batch_t *b, const char *line, long lineno, int want_rc, long fault) {
  char err[256] = "";
  size_t before = sl_batch_count(b);
  int rc = sl_batch_add(b, line, strlen(line), lineno, err, sizeof(err));

  if (rc == SL_ENOMEM) {
    sl__alloc_fail_after(-1);
    CHECK_STR(err, "out of memory");
    CHECK_INT(sl_batch_count(b), ==, before);
    /* the batch is intact: the same add now gives the normal result */
    rc = sl_batch_add(b, line, strlen(line), lineno, err, sizeof(err));
    CHECK_INT(rc, ==, want_rc);
    CHECK_INT(sl_batch_count(b), ==, before + (want_rc == 0));
    return 1;
  }
  if (rc != want_rc)
    sl_test_fail(__FILE__, __LINE__, "fault %ld, line %ld: rc %d (%s), expected %d", fault, lineno, rc, err,
                 want_rc);
  CHECK_INT(sl_batch_count(b), ==, before + (want_rc == 0));
  if (want_rc == SL_EINVAL)
    CHECK_CONTAINS(err, "first used on line 1");
  return 0;
}

static void test_batch_add_sequence(void) {
  static const char *const l1 = "{\"id\":\"a\",\"type\":\"sleep\",\"payload\":{\"ms\":1}}";
  static const char *const l2 =
      "{\"type\":\"http\",\"payload\":{\"url\":\"https://x.test/\"},\"priority\":\"low\"}";
  static const char *const l3 = "{\"id\":\"a\",\"type\":\"noop\",\"payload\":null}";
  sl_batch_opts opts = {0};
  long fault;
  int done = 0;
  long base = heap_used();

  opts.queue = "emails";
  opts.name = "fault test";
  for (fault = 0; fault < MAX_ALLOCS && !done; fault++) {
    sl_batch_t *b;
    int hit = 0;

    sl__alloc_fail_after(fault);
    b = mk_batch(&opts);
    if (b == NULL) {
      sl__alloc_fail_after(-1);
      CHECK_NO_LEAK(base);
      continue;
    }
    hit |= add_step(b, l1, 1, 0, fault);
    if (!hit)
      hit |= add_step(b, l2, 2, 0, fault);
    if (!hit)
      hit |= add_step(b, l3, 3, SL_EINVAL, fault); /* duplicate id "a" */
    sl__alloc_fail_after(-1);
    if (!hit) {
      CHECK_INT(sl_batch_count(b), ==, 2);
      done = 1;
    }
    sl_batch_free(b);
    CHECK_NO_LEAK(base);
  }
  CHECK(done);
  CHECK_INT(fault, >=, 8); /* new (2) + at least 3 per successful add + the dup's parse */
}

/*
 * Fills a batch with `prefill` items without faults, then fails each
 * allocation of the next add in turn: this reaches the growth of the item
 * arrays (at 256) and of the id table (at 512).
 */
static void batch_growth_faults(size_t prefill) {
  char line[128];
  char err[256];
  long fault;
  int done = 0;
  long base = heap_used();

  for (fault = 0; fault < MAX_ALLOCS && !done; fault++) {
    sl_batch_t *b = mk_batch(NULL);
    int rc;

    CHECK(b != NULL);
    for (size_t i = 0; i < prefill; i++) {
      snprintf(line, sizeof(line), "{\"type\":\"t\",\"payload\":%zu}", i);
      CHECK_INT(sl_batch_add(b, line, strlen(line), (long)i + 1, err, sizeof(err)), ==, 0);
    }
    snprintf(line, sizeof(line), "{\"type\":\"t\",\"payload\":\"last\"}");
    sl__alloc_fail_after(fault);
    rc = sl_batch_add(b, line, strlen(line), (long)prefill + 1, err, sizeof(err));
    sl__alloc_fail_after(-1);
    if (rc == 0) {
      done = 1;
    } else {
      CHECK_INT(rc, ==, SL_ENOMEM);
      CHECK_INT(sl_batch_count(b), ==, prefill);
      CHECK_INT(sl_batch_add(b, line, strlen(line), (long)prefill + 1, err, sizeof(err)), ==, 0);
    }
    CHECK_INT(sl_batch_count(b), ==, prefill + 1);
    /* every earlier id is still found: a duplicate of item 1 is caught */
    snprintf(line, sizeof(line), "{\"id\":\"1\",\"type\":\"t\",\"payload\":0}");
    CHECK_INT(sl_batch_add(b, line, strlen(line), (long)prefill + 2, err, sizeof(err)), ==, SL_EINVAL);
    CHECK_CONTAINS(err, "duplicate id \"1\"");
    snprintf(line, sizeof(line), "{\"id\":\"%zu\",\"type\":\"t\",\"payload\":0}", prefill);
    CHECK_INT(sl_batch_add(b, line, strlen(line), (long)prefill + 2, err, sizeof(err)), ==, SL_EINVAL);
    sl_batch_free(b);
    CHECK_NO_LEAK(base);
  }
  CHECK(done);
  CHECK_INT(fault, >=, 3);
}

static void test_batch_add_items_growth(void) {
  batch_growth_faults(256);
}

static void test_batch_add_table_growth(void) {
  batch_growth_faults(512);
}

/* ---- Other allocating helpers ---- */

static void test_url_parse(void) {
  static const char *const urls[] = {
    "redis://us%65r:p%40ss@host:6380/2",
    "unix://u:p@/run/redis.sock?db=1",
    "redis://[::1]:6379",
  };
  char err[256];
  sl_url u;
  sl_url zero;
  long base = heap_used();

  memset(&zero, 0, sizeof(zero));
  for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
    long fault;

    for (fault = 0; fault < MAX_ALLOCS; fault++) {
      int rc;

      sl__alloc_fail_after(fault);
      rc = sl__url_parse(urls[i], &u, err, sizeof(err));
      sl__alloc_fail_after(-1);
      if (rc == 0)
        break;
      CHECK_INT(rc, ==, SL_ENOMEM);
      CHECK_STR(err, "out of memory");
      CHECK(memcmp(&u, &zero, sizeof(u)) == 0);
      CHECK_NO_LEAK(base);
    }
    /* user, password, then the host (as the first seed, and as host) or the path */
    CHECK_INT(fault, ==, i == 0 ? 4 : i == 1 ? 3 : 2);
    sl__url_free(&u);
    CHECK_NO_LEAK(base);
  }
}

static void test_buf_append(void) {
  sl_buf b;
  char *s;
  long fault = 0;
  long base = heap_used();

  sl__buf_init(&b, 1 << 20);
  sl__alloc_fail_after(0);
  CHECK_INT(sl__buf_puts(&b, "first"), ==, SL_ENOMEM);
  sl__alloc_fail_after(-1);
  CHECK(b.p == NULL);
  CHECK_INT(b.len, ==, 0);
  CHECK_INT(sl__buf_puts(&b, "first"), ==, 0);
  /* a growing append fails and leaves the content as it was */
  sl__alloc_fail_after(0);
  CHECK_INT(sl__buf_printf(&b, "%0200d", 1), ==, SL_ENOMEM);
  CHECK_INT(sl__buf_putc(&b, '!'), ==, 0); /* fits: no allocation */
  sl__alloc_fail_after(-1);
  CHECK_INT(b.len, ==, 6);
  CHECK_STR(b.p, "first!");
  sl__buf_free(&b);
  CHECK_NO_LEAK(base);

  /* take on an empty buffer allocates "", and may fail */
  sl__buf_init(&b, 16);
  sl__alloc_fail_after(0);
  s = sl__buf_take(&b);
  sl__alloc_fail_after(-1);
  CHECK(s == NULL);
  CHECK_NO_LEAK(base);
}

static void test_json_writers(void) {
  sl_buf b;
  long fault;
  long base = heap_used();
  const char *tok = "\"\\ud83d\\ude00 and a longer tail to force the buffer to grow twice over "
                    "......................................................................\"";

  for (fault = 0; fault < MAX_ALLOCS; fault++) {
    int rc;

    sl__buf_init(&b, 4096);
    sl__alloc_fail_after(fault);
    rc = sl__json_unescape(tok, strlen(tok), &b);
    sl__alloc_fail_after(-1);
    sl__buf_free(&b);
    CHECK_NO_LEAK(base);
    if (rc == 0)
      break;
    CHECK_INT(rc, ==, SL_ENOMEM);
  }
  CHECK_INT(fault, >=, 2);

  for (fault = 0; fault < MAX_ALLOCS; fault++) {
    int rc;

    sl__buf_init(&b, 4096);
    sl__alloc_fail_after(fault);
    rc = sl__json_put_str(&b, tok, strlen(tok));
    sl__alloc_fail_after(-1);
    sl__buf_free(&b);
    CHECK_NO_LEAK(base);
    if (rc == 0)
      break;
    CHECK_INT(rc, ==, SL_ENOMEM);
  }
  CHECK_INT(fault, >=, 2);
}

/* The hook itself: n successful allocations, then failures until reset. */
static void test_fail_after_hook(void) {
  void *a;
  void *b;
  void *c;

  sl__alloc_fail_after(2);
  a = sl_malloc(8);
  b = sl_calloc(2, 4);
  c = sl_strdup("x");
  CHECK(a != NULL);
  CHECK(b != NULL);
  CHECK(c == NULL);
  CHECK(sl_realloc(a, 64) == NULL); /* still failing: a stays valid */
  sl__alloc_fail_after(-1);
  c = sl_realloc(a, 64);
  CHECK(c != NULL);
  sl_free(c);
  sl_free(b);
  sl_free(NULL);
}

/* cJSON allocates through sl_malloc once the library was entered (here
 * sl_batch_new): an armed fault reaches it. An object made before the
 * hooks were set (a program's own, with plain malloc) is freed by them
 * without harm, and objects made after are ordinary heap blocks. */
static void test_cjson_hooked(void) {
  cJSON *before = cJSON_CreateObject();
  cJSON *o;
  sl_batch_t *b;
  char *text;

  CHECK(before != NULL);
  CHECK(cJSON_AddStringToObject(before, "made", "before the hooks") != NULL);
  b = mk_batch(NULL);
  CHECK(b != NULL);
  sl_batch_free(b);
  sl__alloc_fail_after(0);
  CHECK(cJSON_CreateObject() == NULL);
  CHECK(cJSON_Parse("[1,2,3]") == NULL);
  sl__alloc_fail_after(-1);
  o = cJSON_Parse("{\"a\":[1,2,3]}");
  CHECK(o != NULL);
  text = cJSON_PrintUnformatted(o);
  CHECK_STR(text, "{\"a\":[1,2,3]}");
  cJSON_free(text);
  cJSON_Delete(o);
  cJSON_Delete(before);
  /* a fault part way through a parse: NULL and nothing leaked (LSan) */
  for (long fault = 0; fault < 20; fault++) {
    sl__alloc_fail_after(fault);
    o = cJSON_Parse("{\"a\":[1,{\"b\":\"c\"}],\"d\":\"e\"}");
    sl__alloc_fail_after(-1);
    if (o != NULL) {
      CHECK_INT(fault, >, 3);
      cJSON_Delete(o);
      break;
    }
  }
}

static const sl_test tests[] = {
  {"fail_after_hook", test_fail_after_hook, 10},
  {"cjson_hooked", test_cjson_hooked, 10},
  {"item_parse_string_id", test_item_parse_string_id, 10},
  {"item_parse_default_id", test_item_parse_default_id, 10},
  {"item_parse_integer_id", test_item_parse_integer_id, 10},
  {"item_parse_invalid_under_faults", test_item_parse_invalid_under_faults, 10},
  {"batch_new", test_batch_new, 10},
  {"batch_add_sequence", test_batch_add_sequence, 10},
  {"batch_add_items_growth", test_batch_add_items_growth, 30},
  {"batch_add_table_growth", test_batch_add_table_growth, 30},
  {"url_parse", test_url_parse, 10},
  {"buf_append", test_buf_append, 10},
  {"json_writers", test_json_writers, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
