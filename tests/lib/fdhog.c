/*
 * A `hog` item type for tests of a worker that runs out of file
 * descriptors (integration.exec and integration.http give_back_out_of_fds).
 * The hog's start takes every free descriptor of the process and succeeds;
 * a timer on the worker's loop gives them back once the worker gave an item
 * back (or after 10 s, and the test fails), then stops the worker once the
 * batch ended (or after 30 s).
 */
#include "fdhog.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

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


void hog_worker(const char *queue) {
  struct rlimit rl = {256, 256};
  sl_worker_opts o;
  char err[256];

  CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
  hog_q = itest_queue(queue);
  hog_c = itest_conn();
  memset(&o, 0, sizeof(o));
  o.redis_url = itest_url();
  o.queue = hog_q;
  o.concurrency = 2;
  o.block_ms = 200;
  CHECK_INT(sl_worker_new(&o, &hog_w, err, sizeof(err)), ==, 0);
  CHECK_INT(sl_worker_register(hog_w, "hog", hog_start, NULL), ==, 0);
}

char *hog_run(const char *errpath) {
  int saved = dup(2);
  int fe = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  char *log;

  CHECK(fe >= 0 && saved >= 0);
  dup2(fe, 2); /* the worker's log */
  close(fe);
  CHECK_INT(sl_worker_run(hog_w), ==, 0);
  dup2(saved, 2);
  close(saved);
  log = itest_read(errpath, NULL);
  if (hog_w->n_given != 1)
    sl_test_fail(__FILE__, __LINE__, "expected 1 item given back, got %llu; log:\n%s",
                 (unsigned long long)hog_w->n_given, log);
  return log;
}

void hog_done(void) {
  sl_worker_free(hog_w);
  CHECK_INT(itest_batch_num(hog_c, hog_q, hog_batch, "succeeded"), ==, 2);
  CHECK_INT(itest_batch_num(hog_c, hog_q, hog_batch, "failed"), ==, 0);
  redisFree(hog_c);
}
