/*
 * Unit tests for the server-free half of the batch API (src/submit.c):
 * sl_batch_new's option checks and sl_batch_add's validation, counting and
 * duplicate-id detection. sl_batch_submit needs Redis and is covered by the
 * integration tests.
 */
#include <stdio.h>
#include <string.h>

#include <sluice/sluice.h>

#include "harness.h"

/* sl_batch_new, returning the batch or NULL (the error code is checked
 * where it matters). */
static char new_err[256];
static int new_rc;
static sl_batch_t *mk_batch(const sl_batch_opts *o) {
  sl_batch_t *b = NULL;

  new_rc = sl_batch_new(o, &b, new_err, sizeof(new_err));
  return new_rc == 0 ? b : NULL;
}

/* ---- Helpers ---- */

static int add(sl_batch_t *b, const char *line, long lineno, char *err, size_t errlen) {
  return sl_batch_add(b, line, strlen(line), lineno, err, errlen);
}

/* ---- Tests ---- */

static void test_new_options(void) {
  sl_batch_opts o;
  sl_batch_t *b;

  b = mk_batch(NULL);
  CHECK(b != NULL);
  CHECK_INT(sl_batch_count(b), ==, 0);
  sl_batch_free(b);

  memset(&o, 0, sizeof(o));
  o.queue = "emails.v2";
  o.name = "nightly";
  o.priority = "low";
  o.max_attempts = 1000;
  o.timeout_ms = 86400000;
  o.chunk_items = 10;
  b = mk_batch(&o);
  CHECK(b != NULL);
  sl_batch_free(b);
  sl_batch_free(NULL); /* a no-op */
}

static void test_new_rejects_bad_options(void) {
  sl_batch_opts o;

  memset(&o, 0, sizeof(o));
  o.queue = "bad queue";
  CHECK(mk_batch(&o) == NULL);
  CHECK_INT(new_rc, ==, SL_EINVAL);
  CHECK_CONTAINS(new_err, "invalid queue name \"bad queue\"");
  o.queue = "";
  CHECK(mk_batch(&o) == NULL);
  CHECK_INT(new_rc, ==, SL_EINVAL);
  o.queue = NULL;
  o.priority = "urgent";
  CHECK(mk_batch(&o) == NULL);
  CHECK_CONTAINS(new_err, "unknown priority \"urgent\"");
  o.priority = NULL;
  o.max_attempts = 1001;
  CHECK(mk_batch(&o) == NULL);
  CHECK_CONTAINS(new_err, "max_attempts 1001");
  o.max_attempts = 0;
  o.timeout_ms = 86400001;
  CHECK(mk_batch(&o) == NULL);
  CHECK_CONTAINS(new_err, "timeout_ms 86400001");
}

static void test_add_counts_valid_items(void) {
  char err[256];
  sl_batch_t *b = mk_batch(NULL);

  CHECK(b != NULL);
  CHECK_INT(add(b, "{\"type\":\"noop\",\"payload\":{}}", 1, err, sizeof(err)), ==, 0);
  CHECK_INT(add(b, "{\"type\":\"sleep\",\"payload\":{\"ms\":5}}", 2, err, sizeof(err)), ==, 0);
  CHECK_INT(sl_batch_count(b), ==, 2);
  sl_batch_free(b);
}

static void test_add_invalid_item(void) {
  char err[256] = "";
  sl_batch_t *b = mk_batch(NULL);

  CHECK(b != NULL);
  CHECK_INT(add(b, "{\"type\":\"t\",\"payload\":{},\"priority\":\"urgent\"}", 1, err, sizeof(err)), ==,
            SL_EINVAL);
  CHECK_CONTAINS(err, "field \"priority\": unknown priority \"urgent\"");
  CHECK_INT(add(b, "{\"type\":\"t\"", 2, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "invalid JSON at column");
  CHECK_INT(sl_batch_count(b), ==, 0);
  /* the batch is still usable */
  CHECK_INT(add(b, "{\"type\":\"t\",\"payload\":{}}", 3, err, sizeof(err)), ==, 0);
  CHECK_INT(sl_batch_count(b), ==, 1);
  sl_batch_free(b);
}

static void test_add_duplicate_ids(void) {
  char err[256] = "";
  sl_batch_t *b = mk_batch(NULL);

  CHECK(b != NULL);
  CHECK_INT(add(b, "{\"id\":\"x\",\"type\":\"t\",\"payload\":{}}", 1, err, sizeof(err)), ==, 0);
  CHECK_INT(add(b, "{\"id\":\"y\",\"type\":\"t\",\"payload\":{}}", 2, err, sizeof(err)), ==, 0);
  CHECK_INT(add(b, "{\"id\":\"x\",\"type\":\"t\",\"payload\":{}}", 5, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "field \"id\": duplicate id \"x\" (first used on line 1)");
  CHECK_INT(sl_batch_count(b), ==, 2);
  /* an integer id and the same digits as a string are the same id */
  CHECK_INT(add(b, "{\"id\":7,\"type\":\"t\",\"payload\":{}}", 6, err, sizeof(err)), ==, 0);
  CHECK_INT(add(b, "{\"id\":\"7\",\"type\":\"t\",\"payload\":{}}", 7, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "(first used on line 6)");
  /* a default id (the line number) collides with an explicit one */
  CHECK_INT(add(b, "{\"id\":\"9\",\"type\":\"t\",\"payload\":{}}", 8, err, sizeof(err)), ==, 0);
  CHECK_INT(add(b, "{\"type\":\"t\",\"payload\":{}}", 9, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "duplicate id \"9\" (first used on line 8)");
  CHECK_INT(sl_batch_count(b), ==, 4);
  sl_batch_free(b);
}

/* Past the first growth of the item arrays (256) and of the id table (512),
 * every id is still found. */
static void test_add_many(void) {
  char line[128];
  char err[256];
  sl_batch_t *b = mk_batch(NULL);

  CHECK(b != NULL);
  for (int i = 0; i < 3000; i++) {
    snprintf(line, sizeof(line), "{\"id\":\"i%d\",\"type\":\"t\",\"payload\":%d}", i, i);
    if (add(b, line, i + 1, err, sizeof(err)) != 0)
      sl_test_fail(__FILE__, __LINE__, "item %d: %s", i, err);
  }
  CHECK_INT(sl_batch_count(b), ==, 3000);
  for (int i = 0; i < 3000; i += 97) {
    char want[64];

    snprintf(line, sizeof(line), "{\"id\":\"i%d\",\"type\":\"t\",\"payload\":0}", i);
    CHECK_INT(add(b, line, 5000, err, sizeof(err)), ==, SL_EINVAL);
    snprintf(want, sizeof(want), "(first used on line %d)", i + 1);
    CHECK_CONTAINS(err, want);
  }
  CHECK_INT(sl_batch_count(b), ==, 3000);
  sl_batch_free(b);
}

static void test_add_too_big(void) {
  static char line[SL_ITEM_MAX_LINE + 2];
  char err[256] = "";
  sl_batch_t *b = mk_batch(NULL);

  CHECK(b != NULL);
  memset(line, ' ', sizeof(line));
  CHECK_INT(sl_batch_add(b, line, SL_ITEM_MAX_LINE + 1, 1, err, sizeof(err)), ==, SL_ETOOBIG);
  CHECK_CONTAINS(err, "over the limit");
  CHECK_INT(sl_batch_count(b), ==, 0);
  sl_batch_free(b);
}

/* ---- Regressions: bugs found by these tests, now fixed ---- */

/* Ids were compared as C strings, so ids differing after a \u0000 collided
 * as false duplicates; ids with a NUL are now refused at once. */
static void test_regress_nul_in_id_false_duplicate(void) {
  char err[256] = "";
  sl_batch_t *b = mk_batch(NULL);

  CHECK(b != NULL);
  CHECK_INT(add(b, "{\"id\":\"a\\u0000b\",\"type\":\"t\",\"payload\":{}}", 1, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "field \"id\": must not contain \\u0000");
  CHECK_INT(sl_batch_count(b), ==, 0);
  sl_batch_free(b);
}

static const sl_test tests[] = {
  {"new_options", test_new_options, 10},
  {"new_rejects_bad_options", test_new_rejects_bad_options, 10},
  {"add_counts_valid_items", test_add_counts_valid_items, 10},
  {"add_invalid_item", test_add_invalid_item, 10},
  {"add_duplicate_ids", test_add_duplicate_ids, 10},
  {"add_many", test_add_many, 30},
  {"add_too_big", test_add_too_big, 10},
  {"regress_nul_in_id_false_duplicate", test_regress_nul_in_id_false_duplicate, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
