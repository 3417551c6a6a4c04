/*
 * Allocation wrappers with a fault-injection counter for tests. The counter is
 * process-global and not thread safe; libsluice runs on one thread.
 */
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

static long fail_after = -1; /* allocations left before one fails; -1: never */

static int should_fail(void) {
  if (fail_after < 0)
    return 0;
  if (fail_after == 0)
    return 1;
  fail_after--;
  return 0;
}

void sl__alloc_fail_after(long n) {
  fail_after = n;
}

void *sl_malloc(size_t n) {
  if (should_fail())
    return NULL;
  return malloc(n ? n : 1);
}

void *sl_calloc(size_t n, size_t size) {
  if (should_fail())
    return NULL;
  return calloc(n ? n : 1, size ? size : 1);
}

void *sl_realloc(void *p, size_t n) {
  if (should_fail())
    return NULL;
  return realloc(p, n ? n : 1);
}

char *sl_strndup(const char *s, size_t n) {
  char *d = sl_malloc(n + 1);
  if (d == NULL)
    return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *sl_strdup(const char *s) {
  return sl_strndup(s, strlen(s));
}

SL_EXTERN void sl_free(void *p) {
  free(p);
}
