/*
 * The sluice test harness: an explicit registry of test functions per test
 * program, each run in a forked child with a timeout (as libuv's runner
 * does), so a crash or a hang fails one test and not the program.
 *
 *   static void test_foo(void) { CHECK(1 + 1 == 2); }
 *   static const sl_test tests[] = {{"foo", test_foo, 10}, {NULL, NULL, 0}};
 *   int main(int argc, char **argv) { return sl_test_main(argc, argv, tests); }
 *
 * `prog NAME` runs one test; no argument runs all but those marked
 * by_name_only (a test of a known bug in src/, kept out of the default run
 * until it is fixed; each is listed as "skip"). The last line is
 * "N passed, N failed".
 */
#ifndef SL_TEST_HARNESS_H
#define SL_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sl_test {
  const char *name;  /* as given on the command line */
  void (*fn)(void);  /* the test; returns to pass, CHECK fails it */
  int timeout_s;     /* killed after this many seconds */
  int by_name_only;  /* 1: runs only when named on the command line */
} sl_test;

int sl_test_main(int argc, char **argv, const sl_test *tests);
/* Optional hooks run in the parent before and after all tests. */
extern void (*sl_test_setup)(void);
extern void (*sl_test_teardown)(void);

void sl_test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      sl_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                        \
  } while (0)

#define CHECK_INT(a, op, b)                                                                        \
  do {                                                                                             \
    long long a_ = (long long)(a);                                                                 \
    long long b_ = (long long)(b);                                                                 \
    if (!(a_ op b_))                                                                               \
      sl_test_fail(__FILE__, __LINE__, "%s %s %s: %lld vs %lld", #a, #op, #b, a_, b_);             \
  } while (0)

#define CHECK_STR(a, b)                                                                            \
  do {                                                                                             \
    const char *a_ = (a);                                                                          \
    const char *b_ = (b);                                                                          \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                           \
      sl_test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" vs \"%s\"", #a, #b, a_ ? a_ : "(null)",   \
                   b_ ? b_ : "(null)");                                                            \
  } while (0)

#define CHECK_CONTAINS(hay, needle)                                                                \
  do {                                                                                             \
    const char *h_ = (hay);                                                                        \
    const char *n_ = (needle);                                                                     \
    if (h_ == NULL || strstr(h_, n_) == NULL)                                                      \
      sl_test_fail(__FILE__, __LINE__, "%s contains \"%s\": got \"%s\"", #hay, n_,                 \
                   h_ ? h_ : "(null)");                                                            \
  } while (0)

#endif
