/*
 * Unit tests for the server-free half of the batch API (src/submit.c):
 * sl_batch_new's option checks and sl_batch_add's validation, counting and
 * duplicate-id detection; the chunks a batch is cut into and the spool that
 * holds them (src/spool.c), read back through sl__batch_chunk; duplicate ids
 * across spooled chunks, with forced hash collisions (src/idtab.c); a spool
 * that cannot be created or written; and allocation failures on the spool's
 * paths (sl__alloc_fail_after). sl_batch_submit needs Redis and is covered
 * by the integration tests (integration.submit).
 */
#define _GNU_SOURCE /* memmem */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "harness.h"
#include "idtab.h"
#include "spool.h"
#include "submit.h"

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

/* ---- Chunks and the spool ---- */

/* A noop item with id "it-<i>" and a payload of `pad` bytes. */
static const char *item_line(long i, size_t pad) {
  static char *line;
  static size_t cap;
  size_t need = pad + 128;
  int n;

  if (need > cap) {
    free(line);
    line = malloc(need);
    cap = need;
  }
  n = snprintf(line, cap, "{\"id\":\"it-%ld\",\"type\":\"noop\",\"payload\":\"", i);
  memset(line + n, 'p', pad);
  snprintf(line + n + pad, cap - (size_t)n - pad, "\"}");
  return line;
}

/* Adds items first..last-1 (lines i + 1), failing the test on an error. */
static void add_items(sl_batch_t *b, long first, long last, size_t pad) {
  char err[256];

  for (long i = first; i < last; i++) {
    const char *l = item_line(i, pad);

    if (sl_batch_add(b, l, strlen(l), i + 1, err, sizeof(err)) != 0)
      sl_test_fail(__FILE__, __LINE__, "item %ld: %s", i, err);
  }
}

/* The bytes an item counts against the chunk cap (as sl_batch_add counts). */
static size_t item_bytes(const sl_chunk *c, size_t i) {
  const sl_chunk_item *r = &c->items[i];

  return r->prio_len + r->idx_len + r->d_len + 3 * ARG_FRAMING + r->id_len;
}

/*
 * Reads every chunk of b back and checks that together they hold items
 * 0..n-1 in order, with the right index argument, id, line and item text;
 * that no chunk has more than max_items items or more than max_bytes bytes;
 * and that each chunk but the last was full (one more item would not fit).
 * Returns the number of chunks.
 */
static size_t check_chunks(sl_batch_t *b, size_t n, size_t max_items, size_t max_bytes) {
  sl_chunk scratch;
  size_t next = 0;
  size_t nch = sl__batch_nchunks(b);
  char err[256];

  sl__chunk_init(&scratch, max_bytes + 4 * 1024 * 1024);
  for (size_t k = 0; k < nch; k++) {
    const sl_chunk *c = NULL;
    size_t bytes = 0;

    if (sl__batch_chunk(b, k, &scratch, &c, err, sizeof(err)) != 0)
      sl_test_fail(__FILE__, __LINE__, "chunk %zu: %s", k, err);
    CHECK_INT(c->first, ==, next);
    CHECK(c->n > 0);
    CHECK_INT(c->n, <=, max_items);
    for (size_t i = 0; i < c->n; i++) {
      const sl_chunk_item *r = &c->items[i];
      const char *a = sl__chunk_args(c, i);
      char want[64];
      int wl;

      wl = snprintf(want, sizeof(want), "%zu", next);
      if ((int)r->idx_len != wl || memcmp(a + r->prio_len, want, (size_t)wl) != 0)
        sl_test_fail(__FILE__, __LINE__, "chunk %zu item %zu: index %.*s, expected %s", k, i, (int)r->idx_len,
                     a + r->prio_len, want);
      wl = snprintf(want, sizeof(want), "it-%zu", next);
      CHECK_INT(r->id_len, ==, wl);
      CHECK(memcmp(sl__chunk_id(c, i), want, (size_t)wl) == 0);
      CHECK_INT(r->line, ==, (long long)next + 1);
      CHECK(memcmp(a + r->prio_len + r->idx_len, "{\"type\":\"noop\",", 15) == 0);
      wl = snprintf(want, sizeof(want), ",\"id\":\"it-%zu\",\"payload\":", next);
      CHECK(memmem(a + r->prio_len + r->idx_len, r->d_len, want, (size_t)wl) != NULL);
      CHECK(a[r->prio_len + r->idx_len + r->d_len - 1] == '}');
      bytes += item_bytes(c, i);
      next++;
    }
    CHECK_INT(bytes, <=, max_bytes);
    if (k + 1 < nch && c->n < max_items) {
      /* closed by bytes: the next chunk's first item did not fit */
      const sl_chunk *d = NULL;
      sl_chunk s2;
      size_t saved = bytes;

      sl__chunk_init(&s2, max_bytes + 4 * 1024 * 1024);
      if (sl__batch_chunk(b, k + 1, &s2, &d, err, sizeof(err)) != 0)
        sl_test_fail(__FILE__, __LINE__, "chunk %zu: %s", k + 1, err);
      CHECK_INT(saved + item_bytes(d, 0), >, max_bytes);
      sl__chunk_free(&s2);
    }
  }
  CHECK_INT(next, ==, n);
  sl__chunk_free(&scratch);
  return nch;
}

/* One chunk's worth never touches the disk; the first item of a second
 * chunk spools the first. */
static void test_small_batch_stays_in_memory(void) {
  sl_batch_t *b = mk_batch(NULL);

  CHECK(b != NULL);
  add_items(b, 0, 1000, 10);
  CHECK_INT(sl__batch_spooled(b), ==, 0);
  CHECK_INT(sl__batch_nchunks(b), ==, 1);
  check_chunks(b, 1000, 1000, CHUNK_MAX_BYTES);
  add_items(b, 1000, 1001, 10);
  CHECK_INT(sl__batch_spooled(b), ==, 1);
  CHECK_INT(sl__batch_nchunks(b), ==, 2);
  check_chunks(b, 1001, 1000, CHUNK_MAX_BYTES);
  sl_batch_free(b);
}

/* Many chunks by item count: read back from the spool in order, exactly. */
static void test_spool_several_chunks(void) {
  sl_batch_opts o = {0};
  sl_batch_t *b;

  o.chunk_items = 100;
  b = mk_batch(&o);
  CHECK(b != NULL);
  add_items(b, 0, 1050, 20);
  CHECK_INT(sl_batch_count(b), ==, 1050);
  CHECK_INT(sl__batch_spooled(b), ==, 10);
  CHECK_INT(check_chunks(b, 1050, 100, CHUNK_MAX_BYTES), ==, 11);
  sl_batch_free(b);
}

/* Chunks of big items close at the byte cap (8 MiB), long before 1,000
 * items: 45 items of 400 KB make chunks of 20, 20 and 5. */
static void test_byte_capped_chunks(void) {
  sl_batch_t *b = mk_batch(NULL);

  CHECK(b != NULL);
  add_items(b, 0, 45, 400 * 1000);
  CHECK_INT(check_chunks(b, 45, 1000, CHUNK_MAX_BYTES), ==, 3);
  sl_batch_free(b);
  /* a small cap (the test hook): closed by bytes, with items of mixed sizes */
  b = mk_batch(NULL);
  CHECK(b != NULL);
  sl__batch_set_chunk_bytes(b, 2000);
  for (long i = 0; i < 300; i++)
    add_items(b, i, i + 1, (size_t)(i * 37 % 900));
  CHECK_INT(check_chunks(b, 300, 1000, 2000), >, 60);
  sl_batch_free(b);
}

/* Duplicate ids are found in spooled chunks and in the chunk in memory,
 * naming the line of the first use; a refused duplicate adds nothing. */
static void test_duplicates_across_chunks(void) {
  sl_batch_opts o = {0};
  char err[256];
  char want[64];
  sl_batch_t *b;
  static const long probes[] = {0, 5, 99, 100, 101, 517, 998, 999, 1500, 2999, 1000, 3, 2500};

  o.chunk_items = 100;
  b = mk_batch(&o);
  CHECK(b != NULL);
  add_items(b, 0, 3000, 5);
  for (size_t k = 0; k < sizeof(probes) / sizeof(probes[0]); k++) {
    const char *l = item_line(probes[k], 7);

    CHECK_INT(sl_batch_add(b, l, strlen(l), 5000 + (long)k, err, sizeof(err)), ==, SL_EINVAL);
    snprintf(want, sizeof(want), "duplicate id \"it-%ld\" (first used on line %ld)", probes[k], probes[k] + 1);
    CHECK_CONTAINS(err, want);
  }
  CHECK_INT(sl_batch_count(b), ==, 3000);
  /* the default id is the line number: line 7 collides with no "it-" id */
  CHECK_INT(sl_batch_add(b, "{\"type\":\"noop\",\"payload\":1}", 27, 7, err, sizeof(err)), ==, 0);
  CHECK_INT(sl_batch_add(b, "{\"id\":\"7\",\"type\":\"noop\",\"payload\":1}", 36, 8000, err, sizeof(err)), ==,
            SL_EINVAL);
  CHECK_CONTAINS(err, "duplicate id \"7\" (first used on line 7)");
  sl_batch_free(b);
}

/* Test hashes: every id the same, or only the first byte counts. */
static uint64_t hash_const(const uint64_t key[2], const char *s, size_t n) {
  (void)key;
  (void)s;
  (void)n;
  return 0x1234567800000042ULL;
}

static uint64_t hash_first_byte(const uint64_t key[2], const char *s, size_t n) {
  (void)key;
  return n > 0 ? (uint64_t)(unsigned char)s[0] * 0x9e3779b97f4a7c15ULL : 0;
}

/* Different ids with the same hash are not duplicates; equal ids among
 * many colliding ones are, with the right first line, across chunks. */
static void test_forced_hash_collisions(void) {
  sl_idhash_fn fns[2] = {hash_const, hash_first_byte};

  for (int f = 0; f < 2; f++) {
    sl_batch_opts o = {0};
    char err[256];
    char want[64];
    sl_batch_t *b;

    o.chunk_items = 7;
    b = mk_batch(&o);
    CHECK(b != NULL);
    sl__batch_set_hash(b, fns[f]);
    add_items(b, 0, 200, 3);
    CHECK_INT(sl_batch_count(b), ==, 200);
    CHECK_INT(sl__batch_spooled(b), ==, 28);
    for (long i = 0; i < 200; i += 13) {
      const char *l = item_line(i, 0);

      CHECK_INT(sl_batch_add(b, l, strlen(l), 900, err, sizeof(err)), ==, SL_EINVAL);
      snprintf(want, sizeof(want), "duplicate id \"it-%ld\" (first used on line %ld)", i, i + 1);
      CHECK_CONTAINS(err, want);
    }
    CHECK_INT(sl_batch_count(b), ==, 200);
    check_chunks(b, 200, 7, CHUNK_MAX_BYTES);
    sl_batch_free(b);
  }
}

/* SipHash-2-4 against the reference vectors (key 00 01 .. 0f, message
 * 00 01 .. of 0 and of 15 bytes), and the table's key is per batch. */
static void test_siphash_vectors(void) {
  uint64_t key[2];
  unsigned char k[16];
  char msg[16];
  sl_idtab t1;
  sl_idtab t2;

  for (int i = 0; i < 16; i++) {
    k[i] = (unsigned char)i;
    msg[i] = (char)i;
  }
  key[0] = 0;
  key[1] = 0;
  for (int i = 7; i >= 0; i--) {
    key[0] = key[0] << 8 | k[i];
    key[1] = key[1] << 8 | k[8 + i];
  }
  CHECK(sl__siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ULL);
  CHECK(sl__siphash24(key, msg, 15) == 0xa129ca6149be45e5ULL);
  CHECK_INT(sl__idtab_init(&t1), ==, 0);
  CHECK_INT(sl__idtab_init(&t2), ==, 0);
  CHECK(sl__idtab_hash(&t1, "row-17", 6) != sl__idtab_hash(&t2, "row-17", 6));
  sl__idtab_free(&t1);
  sl__idtab_free(&t2);
}

/* A spool directory that does not exist: a clear error naming it, and the
 * batch keeps what it had. */
static void test_spool_cannot_be_created(void) {
  sl_batch_opts o = {0};
  char err[256] = "";
  const char *l;
  sl_batch_t *b;

  setenv("TMPDIR", "/nonexistent/sluice-spool", 1);
  o.chunk_items = 10;
  b = mk_batch(&o);
  CHECK(b != NULL);
  add_items(b, 0, 10, 1);
  l = item_line(10, 1);
  CHECK_INT(sl_batch_add(b, l, strlen(l), 11, err, sizeof(err)), ==, SL_EIO);
  CHECK_CONTAINS(err, "cannot create the submit spool in /nonexistent/sluice-spool: No such file or directory");
  CHECK_INT(sl_batch_count(b), ==, 10);
  CHECK_INT(sl__batch_nchunks(b), ==, 1);
  check_chunks(b, 10, 10, CHUNK_MAX_BYTES);
  sl_batch_free(b);
}

/* A spool write that fails (here: a file-size limit, as a full disk would)
 * is SL_EIO with the directory named; the add can be made again once there
 * is room, and nothing is lost or doubled. */
static void test_spool_write_fails(void) {
  sl_batch_opts o = {0};
  struct rlimit rl;
  char err[256] = "";
  long i = 0;
  int rc = 0;
  sl_batch_t *b;

  signal(SIGXFSZ, SIG_IGN);
  setenv("TMPDIR", "/tmp", 1);
  o.chunk_items = 50;
  b = mk_batch(&o);
  CHECK(b != NULL);
  CHECK_INT(getrlimit(RLIMIT_FSIZE, &rl), ==, 0);
  rl.rlim_cur = 64 * 1024;
  CHECK_INT(setrlimit(RLIMIT_FSIZE, &rl), ==, 0);
  for (i = 0; i < 100000; i++) {
    const char *l = item_line(i, 200);

    rc = sl_batch_add(b, l, strlen(l), i + 1, err, sizeof(err));
    if (rc != 0)
      break;
  }
  CHECK_INT(rc, ==, SL_EIO);
  CHECK_CONTAINS(err, "cannot write the submit spool in /tmp");
  CHECK_CONTAINS(err, "File too large");
  CHECK_INT(sl_batch_count(b), ==, i);
  CHECK_INT(i % 50, ==, 0); /* it failed when a chunk was to be spooled */
  rl.rlim_cur = rl.rlim_max;
  CHECK_INT(setrlimit(RLIMIT_FSIZE, &rl), ==, 0);
  add_items(b, i, i + 120, 200);
  check_chunks(b, (size_t)i + 120, 50, CHUNK_MAX_BYTES);
  sl_batch_free(b);
}

/*
 * Allocation failures on the spool's paths: adding an item that closes a
 * chunk (the chunk directory grows, the spool is written) and confirming a
 * duplicate whose first use is in a spooled chunk (its records and ids are
 * read back). Each allocation fails in turn: the add reports SL_ENOMEM with
 * "out of memory" and the batch is unchanged and still usable.
 */
static void test_spool_allocation_failures(void) {
  long fault;
  int done = 0;

  for (fault = 0; fault < 200 && !done; fault++) {
    sl_batch_opts o = {0};
    char err[256] = "";
    sl_batch_t *b;
    const char *l;
    int rc;

    o.chunk_items = 4;
    b = mk_batch(&o);
    CHECK(b != NULL);
    add_items(b, 0, 256, 3); /* 63 chunks spooled: the directory is full (64) */
    CHECK_INT(sl__batch_spooled(b), ==, 63);
    l = item_line(256, 3); /* spools chunk 64, growing the directory */
    sl__alloc_fail_after(fault);
    rc = sl_batch_add(b, l, strlen(l), 257, err, sizeof(err));
    if (rc == 0) {
      l = item_line(9, 3); /* a duplicate of an item in spooled chunk 2 */
      rc = sl_batch_add(b, l, strlen(l), 300, err, sizeof(err));
      sl__alloc_fail_after(-1);
      if (rc == SL_EINVAL) {
        CHECK_CONTAINS(err, "duplicate id \"it-9\" (first used on line 10)");
        done = 1;
      } else {
        CHECK_INT(rc, ==, SL_ENOMEM);
        CHECK_STR(err, "out of memory");
        CHECK_INT(sl_batch_add(b, l, strlen(l), 300, err, sizeof(err)), ==, SL_EINVAL);
        CHECK_CONTAINS(err, "(first used on line 10)");
      }
      CHECK_INT(sl_batch_count(b), ==, 257);
    } else {
      sl__alloc_fail_after(-1);
      CHECK_INT(rc, ==, SL_ENOMEM);
      CHECK_STR(err, "out of memory");
      CHECK_INT(sl_batch_count(b), ==, 256);
      CHECK_INT(sl_batch_add(b, l, strlen(l), 257, err, sizeof(err)), ==, 0);
    }
    add_items(b, 257, 300, 3);
    check_chunks(b, 300, 4, CHUNK_MAX_BYTES);
    sl_batch_free(b);
  }
  CHECK(done);
  CHECK_INT(fault, >=, 5); /* item parse (3+), directory, the read-back buffers */
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
  {"small_batch_stays_in_memory", test_small_batch_stays_in_memory, 10},
  {"spool_several_chunks", test_spool_several_chunks, 10},
  {"byte_capped_chunks", test_byte_capped_chunks, 30},
  {"duplicates_across_chunks", test_duplicates_across_chunks, 10},
  {"forced_hash_collisions", test_forced_hash_collisions, 30},
  {"siphash_vectors", test_siphash_vectors, 10},
  {"spool_cannot_be_created", test_spool_cannot_be_created, 10},
  {"spool_write_fails", test_spool_write_fails, 30},
  {"spool_allocation_failures", test_spool_allocation_failures, 60},
  {"regress_nul_in_id_false_duplicate", test_regress_nul_in_id_false_duplicate, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
