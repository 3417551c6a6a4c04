/*
 * All of libsluice allocates through these wrappers, so that a test can make
 * the N-th allocation fail (sl__alloc_fail_after) and check that every
 * failure path frees what it took and reports SL_ENOMEM.
 */
#ifndef SL_ALLOC_H
#define SL_ALLOC_H

#include <stddef.h>

void *sl_malloc(size_t n);
void *sl_calloc(size_t n, size_t size);
void *sl_realloc(void *p, size_t n);
char *sl_strdup(const char *s);
char *sl_strndup(const char *s, size_t n);
/* sl_free is public (sluice.h). */
void sl_free(void *p);

/* Routes cJSON's allocations through sl_malloc/sl_free (cJSON_InitHooks),
 * once per process; called by the library's first entry points. The hooks
 * only forward to malloc and free while no fault is armed (alloc.c). */
void sl__alloc_init(void);

/* Test hook: the allocation after `n` more successful ones fails, and every
 * one after it; -1 disables. */
void sl__alloc_fail_after(long n);
/* Test hook: the allocation after `n` more successful ones fails, and only
 * that one (a transient failure: the program goes on and must recover). */
void sl__alloc_fail_once(long n);
/* Test hook: allocations asked for through these wrappers so far. */
long sl__alloc_count(void);

#endif
