/*
 * Retry backoff: full jitter, uniform in [0, min(cap, base * 2^(attempt-1))]
 * (sl__backoff_delay in src/job.c).
 */
#include <stdint.h>

#include "harness.h"
#include "job.h"

static int64_t ceiling(int64_t base, int64_t cap, int attempt) {
  int64_t c = base;

  for (int i = 1; i < attempt && c < cap; i++)
    c *= 2;
  return c < cap ? c : cap;
}

static void test_bounds(void) {
  static const double us[] = {0.0, 0.25, 0.5, 0.75, 0.999999};

  for (int attempt = 1; attempt <= 40; attempt++) {
    for (size_t k = 0; k < sizeof(us) / sizeof(us[0]); k++) {
      int64_t d = sl__backoff_delay(1000, 60000, attempt, us[k]);

      CHECK_INT(d, >=, 0);
      CHECK_INT(d, <, ceiling(1000, 60000, attempt) + 1);
    }
  }
}

static void test_exponential_then_capped(void) {
  /* The top of the range doubles per attempt until the cap. */
  CHECK_INT(sl__backoff_delay(1000, 60000, 1, 0.999999), ==, 999);
  CHECK_INT(sl__backoff_delay(1000, 60000, 2, 0.999999), ==, 1999);
  CHECK_INT(sl__backoff_delay(1000, 60000, 3, 0.999999), ==, 3999);
  CHECK_INT(sl__backoff_delay(1000, 60000, 7, 0.999999), ==, 59999);
  CHECK_INT(sl__backoff_delay(1000, 60000, 1000, 0.999999), ==, 59999); /* no overflow */
  CHECK_INT(sl__backoff_delay(1000, 60000, 5, 0.5), ==, 8000);
  /* Full jitter reaches down to 0. */
  CHECK_INT(sl__backoff_delay(1000, 60000, 9, 0.0), ==, 0);
  /* Out-of-range u is clamped, never past the ceiling. */
  CHECK_INT(sl__backoff_delay(100, 500, 2, 1.5), <=, 200);
  CHECK_INT(sl__backoff_delay(100, 500, 2, -1), ==, 0);
  /* A zero base or cap means no delay. */
  CHECK_INT(sl__backoff_delay(0, 60000, 5, 0.9), ==, 0);
  CHECK_INT(sl__backoff_delay(1000, 0, 5, 0.9), ==, 0);
}

static const sl_test tests[] = {
    {"bounds", test_bounds, 10},
    {"exponential_then_capped", test_exponential_then_capped, 10},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
