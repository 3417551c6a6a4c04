/*
 * Worker test helpers: tests that drive the worker's rooms in-process, with
 * C handlers of their own, against the program's real redis-server
 * (itest.h). Items go in through the client API (sl_batch_*), a worker runs
 * on its own loop in the test's process, and outcomes are read back from
 * Redis. Each call fails the test on an unexpected error.
 */
#ifndef SL_WTEST_H
#define SL_WTEST_H

#include <stddef.h>

#include <sluice/sluice.h>

#include "itest.h"

/* Submits the JSON Lines items lines[0..] (NULL-terminated) as one batch on
 * queue q (opts may be NULL; its queue is set to q); the batch id goes to
 * id[0..SL_NAME_MAX]. */
void wtest_submit(const char *q, const sl_batch_opts *opts, const char *const *lines, char *id);
/* The same for n items {"id":"i<k>","type":TYPE,"payload":PAYLOAD<EXTRA>},
 * k = 0..n-1; extra is "" or more members starting with a comma. */
void wtest_submit_n(const char *q, int n, const char *type, const char *payload, const char *extra, char *id);

/* A quiet worker on its own loop for the test Redis; o may be NULL (its
 * redis_url, when NULL, becomes the test Redis; block_ms defaults to 100). */
sl_worker_t *wtest_worker(const char *q, const sl_worker_opts *o);

/* Runs w until until(ud) returns non-zero (asked every 10 ms on the
 * worker's loop), then stops it and runs it to its end. Past timeout_ms it
 * stops the worker anyway and *timed_out (may be NULL) is set; NULL also
 * fails the test then. Returns sl_worker_run's result. */
int wtest_run_until(sl_worker_t *w, int (*until)(void *ud), void *ud, int timeout_ms, int *timed_out);

/* For wtest_run_until: non-zero once the batch has ended in Redis. */
typedef struct wtest_batch {
  const char *q;     /* queue */
  const char *batch; /* batch id */
} wtest_batch;
int wtest_batch_ended(void *ud);

/* The results line of item idx of a batch (malloc'd; NULL if none). */
char *wtest_result(const char *q, const char *batch, long idx);
/* HGET of a batch field as a number, -1 if missing. */
long long wtest_batch_num(const char *q, const char *batch, const char *field);
/* An integer reply of a command (XLEN, HLEN, ...), -1 for another reply. */
long long wtest_int(const char *fmt, ...);

#endif
