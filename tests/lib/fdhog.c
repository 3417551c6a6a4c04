/*
 * A `hog` item type for tests of a worker that runs out of file
 * descriptors (integration.exec and integration.http give_back_out_of_fds).
 * The hog's start takes every free descriptor of the process and succeeds;
 * a timer on the worker's loop gives them back once the worker gave an item
 * back (or after 10 s, and the test fails), then stops the worker once the
 * batch ended (or after 30 s).
 */
#include "fdhog.h"

#include <stdlib.h>
#include <string.h>

#include "itest.h"
#include "worker.h"

static int hog_fds[1024];     /* descriptors the hog item holds */
static int nhog;              /* how many */
static uv_timer_t hog_timer;  /* watches the worker on its loop */
sl_worker_t *hog_w;    /* the worker under test */
redisContext *hog_c;   /* opened before the descriptors run out */
const char *hog_q;     /* its queue */
char hog_batch[64];    /* the batch */
static long long hog_t0;      /* when the hog took the descriptors, ms */

/* Gives the descriptors back once the worker gave an item back (or after
 * 10 s, and the test fails below), then stops the worker once the batch
 * ended (or after 30 s). */
static void on_hog_timer(uv_timer_t *t) {
  redisReply *r;
  int ended;

  if (nhog > 0 && (hog_w->n_given > 0 || itest_ms() - hog_t0 > 10000)) {
    itest_fds_release(hog_fds, nhog);
    nhog = 0;
  }
  if (nhog > 0)
    return;
  r = redisCommand(hog_c, "HMGET sluice:{%s}:b:%s whole done total", hog_q, hog_batch);
  ended = r != NULL && r->element[0]->type == REDIS_REPLY_STRING &&
          strtoll(r->element[1]->str, NULL, 10) >= strtoll(r->element[2]->str, NULL, 10);
  freeReplyObject(r);
  if (ended || itest_ms() - hog_t0 > 30000) {
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    sl_worker_stop(hog_w);
  }
}

/* The `hog` type: takes every free descriptor of the process, and succeeds. */
void hog_start(sl_job_t *j, void *ud) {
  (void)ud;
  nhog = itest_fds_exhaust(hog_fds, 1024);
  hog_t0 = itest_ms();
  uv_timer_init(sl_job_loop(j), &hog_timer);
  uv_timer_start(&hog_timer, on_hog_timer, 10, 10);
  sl_job_succeed(j, NULL, 0);
}

