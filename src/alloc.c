/*
 * Allocation wrappers with a fault-injection counter for tests. The counter is
 * process-global and not thread safe; libsluice runs on one thread.
 *
 * cJSON allocates through hooks that are global to the process, not to a
 * caller: sl__alloc_init points them at sl_malloc and sl_free, once, from
 * the library's first entry points (sl_client_open, sl_worker_new,
 * sl_batch_new), so a test's fault reaches cJSON's allocations in the
 * worker too. An embedding program that uses cJSON itself keeps working:
 * with no fault armed (always, outside tests) sl_malloc is malloc and
 * sl_free is free, so objects it made before the hooks were set are freed
 * correctly after, and the other way round. Only a program that sets cJSON
 * hooks of its own (a different allocator) must not mix the two; the last
 * cJSON_InitHooks wins, and a later one from the program only takes cJSON's
 * allocations out of the tests' reach.
 */
#include "alloc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include <sluice/sluice.h>

static long fail_after = -1; /* allocations left before one fails; -1: never */
static int fail_once;        /* only that one fails; the next ones succeed again */
static long allocs;          /* allocations asked for so far (sl__alloc_count) */

static int should_fail(void) {
  allocs++;
  if (fail_after < 0)
    return 0;
  if (fail_after == 0) {
    if (fail_once)
      fail_after = -1;
    return 1;
  }
  fail_after--;
  return 0;
}

void sl__alloc_fail_after(long n) {
  fail_after = n;
  fail_once = 0;
}

void sl__alloc_fail_once(long n) {
  fail_after = n;
  fail_once = 1;
}

long sl__alloc_count(void) {
  return allocs;
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

/* ---- cJSON ---- */

static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static void *cjson_malloc(size_t n) {
  return sl_malloc(n);
}

static void set_hooks(void) {
  cJSON_Hooks h = {cjson_malloc, sl_free};

  cJSON_InitHooks(&h);
}

void sl__alloc_init(void) {
  pthread_once(&hooks_once, set_hooks);
}
