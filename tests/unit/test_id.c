/*
 * Unit tests for batch ids (src/id.c): the format (26 characters of
 * Crockford base32, the first 10 the creation time in ms), ordering by
 * creation time, and uniqueness; plus sl__now_ms and sl__random_bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice/sluice.h>

#include "harness.h"
#include "id.h"

#define CROCKFORD "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

/* ---- Helpers ---- */

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

  while (nanosleep(&ts, &ts) != 0)
    continue; /* interrupted: sleep the rest */
}

/* The value of a Crockford base32 digit, or -1. */
static int b32_val(char c) {
  const char *p = strchr(CROCKFORD, c);

  return c != '\0' && p != NULL ? (int)(p - CROCKFORD) : -1;
}

/* The millisecond timestamp in the first 10 characters of an id. */
static int64_t id_time(const char *id) {
  int64_t t = 0;

  for (int i = 0; i < 10; i++)
    t = t * 32 + b32_val(id[i]);
  return t;
}

static int cmp_ids(const void *a, const void *b) {
  return strcmp((const char *)a, (const char *)b);
}

/* ---- Tests ---- */

static void test_format(void) {
  char id[SL_ID_LEN + 1];

  memset(id, '#', sizeof(id));
  CHECK_INT(sl__id_new(id), ==, 0);
  CHECK_INT(strlen(id), ==, 26);
  CHECK_INT(SL_ID_LEN, ==, 26);
  for (int i = 0; i < SL_ID_LEN; i++) {
    if (b32_val(id[i]) < 0)
      sl_test_fail(__FILE__, __LINE__, "id %s: character %d ('%c') is not Crockford base32", id, i, id[i]);
  }
  /* 48 bits of time in 50: the first character is at most '7' */
  CHECK(id[0] >= '0' && id[0] <= '7');
}

static void test_no_ambiguous_letters(void) {
  char id[SL_ID_LEN + 1];

  for (int n = 0; n < 500; n++) {
    CHECK_INT(sl__id_new(id), ==, 0);
    CHECK(strpbrk(id, "ILOUilou") == NULL);
    CHECK(strspn(id, CROCKFORD) == SL_ID_LEN);
  }
}

static void test_time_prefix(void) {
  char id[SL_ID_LEN + 1];
  int64_t before = sl__now_ms();
  int64_t after;
  int64_t t;

  CHECK_INT(sl__id_new(id), ==, 0);
  after = sl__now_ms();
  t = id_time(id);
  CHECK_INT(t, >=, before);
  CHECK_INT(t, <=, after);
}

static void test_later_sorts_after(void) {
  char prev[SL_ID_LEN + 1];
  char next[SL_ID_LEN + 1];

  CHECK_INT(sl__id_new(prev), ==, 0);
  for (int i = 0; i < 5; i++) {
    sleep_ms(2);
    CHECK_INT(sl__id_new(next), ==, 0);
    if (strcmp(prev, next) >= 0)
      sl_test_fail(__FILE__, __LINE__, "%s created after %s does not sort after it", next, prev);
    CHECK_INT(id_time(next), >, id_time(prev));
    memcpy(prev, next, sizeof(prev));
  }
}

static void test_1000_distinct(void) {
  static char ids[1000][SL_ID_LEN + 1];
  int seen[32] = {0};
  int symbols = 0;

  for (int i = 0; i < 1000; i++)
    CHECK_INT(sl__id_new(ids[i]), ==, 0);
  /* the random part uses the whole alphabet */
  for (int i = 0; i < 1000; i++) {
    for (int k = 10; k < SL_ID_LEN; k++)
      seen[b32_val(ids[i][k])] = 1;
  }
  for (int k = 0; k < 32; k++)
    symbols += seen[k];
  CHECK_INT(symbols, ==, 32);
  qsort(ids, 1000, sizeof(ids[0]), cmp_ids);
  for (int i = 1; i < 1000; i++) {
    if (strcmp(ids[i - 1], ids[i]) == 0)
      sl_test_fail(__FILE__, __LINE__, "duplicate id %s", ids[i]);
  }
}

/* Ids made in the same millisecond differ in their random part. */
static void test_same_ms_differ(void) {
  char a[SL_ID_LEN + 1];
  char b[SL_ID_LEN + 1];
  int tries = 0;

  do {
    CHECK_INT(sl__id_new(a), ==, 0);
    CHECK_INT(sl__id_new(b), ==, 0);
    tries++;
  } while (memcmp(a, b, 10) != 0 && tries < 1000);
  CHECK(memcmp(a, b, 10) == 0);
  CHECK(memcmp(a + 10, b + 10, 16) != 0);
}

static void test_now_ms(void) {
  int64_t a = sl__now_ms();
  int64_t b;

  CHECK_INT(a, >, 1577836800000LL); /* after 2020-01-01 */
  CHECK_INT(a, <, 4102444800000LL); /* before 2100-01-01 */
  sleep_ms(5);
  b = sl__now_ms();
  CHECK_INT(b - a, >=, 4);
  CHECK_INT(b - a, <, 5000);
}

static void test_random_bytes(void) {
  unsigned char a[64];
  unsigned char b[64];
  unsigned char zero[64] = {0};

  memset(a, 0, sizeof(a));
  memset(b, 0, sizeof(b));
  CHECK_INT(sl__random_bytes(a, sizeof(a)), ==, 0);
  CHECK_INT(sl__random_bytes(b, sizeof(b)), ==, 0);
  CHECK(memcmp(a, zero, sizeof(a)) != 0);
  CHECK(memcmp(a, b, sizeof(a)) != 0);
  CHECK_INT(sl__random_bytes(a, 0), ==, 0);
}

static const sl_test tests[] = {
  {"format", test_format, 10},
  {"no_ambiguous_letters", test_no_ambiguous_letters, 10},
  {"time_prefix", test_time_prefix, 10},
  {"later_sorts_after", test_later_sorts_after, 10},
  {"1000_distinct", test_1000_distinct, 10},
  {"same_ms_differ", test_same_ms_differ, 10},
  {"now_ms", test_now_ms, 10},
  {"random_bytes", test_random_bytes, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
