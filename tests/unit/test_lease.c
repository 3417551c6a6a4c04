/*
 * lease.c and lua/beat.lua: what a heartbeat costs Redis.
 *
 *   beat_reads_no_items   A worker on its own loop holds 5,000 running items
 *                         (a handler that never finishes them; visibility
 *                         1.5 s, so a beat every 500 ms). Around one beat,
 *                         INFO commandstats must show no XRANGE (no item
 *                         body read) and a handful of XPENDING and XCLAIM
 *                         calls, not one per item: the beat's cost is the
 *                         worker's own pending list, read once per stream.
 *
 * The items are never finished: the worker is stopped with a short drain
 * timeout and gives them up.
 */
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "harness.h"
#include "itest.h"
#include "wtest.h"

#define HELD 5000 /* running items the worker holds */

static int started; /* attempts the handler has begun */

/* The stop gives the attempt up and calls this: the handler still ends
 * its job (the outcome is ignored). */
static void hold_cancel(sl_job_t *j, void *ud) {
  (void)ud;
  sl_job_fail(j, "given up by the stop");
}

static void hold_start(sl_job_t *j, void *ud) {
  (void)ud;
  started++; /* not finished: it holds its slot until the stop gives it up */
  sl_job_on_cancel(j, hold_cancel, NULL);
}

/* calls=N of cmdstat_NAME in INFO commandstats, 0 when absent. */
static long long cmd_calls(const char *name) {
  redisContext *c = itest_conn();
  redisReply *r = itest_cmd(c, "INFO commandstats");
  char key[64];
  const char *p;
  long long n = 0;

  snprintf(key, sizeof(key), "cmdstat_%s:calls=", name);
  p = strstr(r->str, key);
  if (p != NULL)
    n = strtoll(p + strlen(key), NULL, 10);
  freeReplyObject(r);
  redisFree(c);
  return n;
}

/* The worker's last beat (its registry hash), ms; 0 before the first. */
static long long last_beat(const char *q) {
  redisContext *c = itest_conn();
  redisReply *k = itest_cmd(c, "ZRANGE sluice:{%s}:workers 0 0", q);
  long long beat = 0;

  if (k->elements == 1) {
    redisReply *r = itest_cmd(c, "HGET sluice:{%s}:w:%s beat", q, k->element[0]->str);

    if (r->type == REDIS_REPLY_STRING)
      beat = strtoll(r->str, NULL, 10);
    freeReplyObject(r);
  }
  freeReplyObject(k);
  redisFree(c);
  return beat;
}

typedef struct watch {
  const char *q;
  int phase;               /* 0: filling, 1: waiting for a beat, 2: measuring one beat, 3: done */
  long long beat;          /* the beat seen when the phase began */
  long long xrange;        /* counts when the measured beat began */
  long long xpending;
  long long xclaim;
  long long d_xrange;      /* their growth over one beat */
  long long d_xpending;
  long long d_xclaim;
} watch;

static int measured(void *ud) {
  watch *m = ud;
  long long b;

  if (m->phase == 0) {
    if (started < HELD)
      return 0;
    m->phase = 1;
    m->beat = last_beat(m->q);
    return 0;
  }
  b = last_beat(m->q);
  if (b == m->beat)
    return 0;
  m->beat = b;
  if (m->phase == 1) {
    /* a beat with all items held has happened: measure from here to the next */
    m->xrange = cmd_calls("xrange");
    m->xpending = cmd_calls("xpending");
    m->xclaim = cmd_calls("xclaim");
    m->phase = 2;
    return 0;
  }
  m->d_xrange = cmd_calls("xrange") - m->xrange;
  m->d_xpending = cmd_calls("xpending") - m->xpending;
  m->d_xclaim = cmd_calls("xclaim") - m->xclaim;
  m->phase = 3;
  return 1;
}

static void test_beat_reads_no_items(void) {
  const char *q = itest_queue("beatcost");
  char batch[SL_NAME_MAX + 1];
  sl_worker_opts o = {0};
  sl_worker_t *w;
  watch m = {0};
  int late = 0;

  wtest_submit_n(q, HELD, "hold", "null", "", batch);
  o.concurrency = HELD;
  o.visibility_ms = 1500;
  o.drain_timeout_ms = 100;
  w = wtest_worker(q, &o);
  CHECK_INT(sl_worker_register(w, "hold", hold_start, NULL), ==, 0);
  m.q = q;
  wtest_run_until(w, measured, &m, 60000, &late);
  sl_worker_free(w);
  CHECK(!late);
  printf("    one beat of a worker holding %d items: %lld XRANGE, %lld XPENDING, %lld XCLAIM (reclaim calls "
         "included)\n", HELD, m.d_xrange, m.d_xpending, m.d_xclaim);
  CHECK_INT(m.d_xrange, ==, 0);
  CHECK_INT(m.d_xpending, <=, 20); /* a reclaim may run too: its scan pages, not one per item */
  CHECK_INT(m.d_xclaim, <=, 20);
}

static const sl_test tests[] = {
    {"beat_reads_no_items", test_beat_reads_no_items, 120},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
