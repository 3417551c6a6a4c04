/*
 * sched.c: slots, the backlog and the run-alone rule, on an embedded worker
 * with its own loop against the program's redis-server (tests/lib/wtest.c):
 * the jobs running at once never exceed the concurrency; items of one
 * priority start in submit order, higher priorities first; an item on its
 * last allowed delivery starts only when nothing else runs and nothing
 * starts beside it; and a stop gives back the items taken and not started.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include <sluice/sluice.h>

#include "harness.h"
#include "itest.h"
#include "wtest.h"

/* ---- A handler that takes a while and keeps count ---- */

#define LOG_MAX 256

static int running;         /* attempts of this file's handlers running now */
static int peak;            /* the most at once */
static int started;         /* attempts started */
static int finished;        /* attempts finished */
static long order[LOG_MAX]; /* sl_job_index of each start, in order */
static int hold_ms = 20;    /* how long an attempt takes, ms */

typedef struct work {
  uv_timer_t t;   /* first: freed through the handle */
  sl_job_t *job;  /* completed when the timer fires */
} work;

static void work_closed(uv_handle_t *h) {
  free(h);
}

static void on_work(uv_timer_t *t) {
  work *wk = (work *)t;

  running--;
  finished++;
  sl_job_succeed(wk->job, NULL, 0);
  uv_close((uv_handle_t *)t, work_closed);
}

static void work_start(sl_job_t *j, void *ud) {
  work *wk = calloc(1, sizeof(*wk));

  (void)ud;
  if (started < LOG_MAX)
    order[started] = (long)sl_job_index(j);
  started++;
  running++;
  if (running > peak)
    peak = running;
  wk->job = j;
  uv_timer_init(sl_job_loop(j), &wk->t);
  uv_timer_start(&wk->t, on_work, (uint64_t)hold_ms, 0);
}

static void run_until_ended(const char *q, const char *batch, const sl_worker_opts *o) {
  sl_worker_t *w = wtest_worker(q, o);
  wtest_batch b = {q, batch};

  CHECK_INT(sl_worker_register(w, "work", work_start, NULL), ==, 0);
  CHECK_INT(wtest_run_until(w, wtest_batch_ended, &b, 30000, NULL), ==, 0);
  sl_worker_free(w);
}

/* ---- Slots ---- */

/* 40 items of 20 ms on 3 slots: at most 3 run at once, and 3 do. */
static void test_slots_bound(void) {
  const char *q = itest_queue("slots");
  char batch[SL_NAME_MAX + 1];
  sl_worker_opts o = {0};

  wtest_submit_n(q, 40, "work", "null", "", batch);
  o.concurrency = 3;
  run_until_ended(q, batch, &o);
  CHECK_INT(started, ==, 40);
  CHECK_INT(finished, ==, 40);
  CHECK_INT(peak, ==, 3);
  CHECK_INT(wtest_batch_num(q, batch, "succeeded"), ==, 40);
}

/* Within a priority items start in submit order (on 3 slots as on 1);
 * with strict priority the high ones all start before the normal ones. */
static void test_fifo_order(void) {
  const char *q = itest_queue("fifo");
  char batch[SL_NAME_MAX + 1];
  sl_worker_opts o = {0};

  wtest_submit_n(q, 30, "work", "null", "", batch);
  o.concurrency = 3;
  run_until_ended(q, batch, &o);
  CHECK_INT(started, ==, 30);
  for (int i = 0; i < 30; i++)
    CHECK_INT(order[i], ==, i);
}

static void test_priority_order(void) {
  const char *q = itest_queue("prio");
  char *lines[11];
  char batch[SL_NAME_MAX + 1];
  sl_worker_opts o = {0};
  static const long want[10] = {0, 2, 4, 6, 8, 1, 3, 5, 7, 9};

  for (int i = 0; i < 10; i++) {
    lines[i] = malloc(128);
    snprintf(lines[i], 128, "{\"id\":\"p%d\",\"type\":\"work\",\"payload\":null,\"priority\":\"%s\"}", i,
             i % 2 == 0 ? "high" : "normal");
  }
  lines[10] = NULL;
  wtest_submit(q, NULL, (const char *const *)lines, batch);
  o.concurrency = 1;
  run_until_ended(q, batch, &o);
  CHECK_INT(started, ==, 10);
  for (int i = 0; i < 10; i++)
    CHECK_INT(order[i], ==, want[i]);
  for (int i = 0; i < 10; i++)
    free(lines[i]);
}

/* ---- Run alone ---- */

static int solo_running;      /* the run-alone item is running */
static int solo_started;      /* its attempts */
static int solo_attempt;      /* sl_job_attempt of its attempt */
static int solo_others_at_start = -1; /* other attempts running when it started */
static int beside_solo;       /* attempts that started while it ran */
static pid_t submitter;       /* the process submitting batch C while it runs */
static char solo_q[128];      /* its queue */
static int submitter_status = -1; /* its wait status, once reaped */

/* Reaps the submitter if it has exited; 1 once it has. */
static int submitter_exited(int wait) {
  if (submitter_status < 0 && submitter > 0 && waitpid(submitter, &submitter_status, wait ? 0 : WNOHANG) != submitter)
    submitter_status = -1;
  return submitter_status >= 0;
}
static int c_waiting;         /* batch C was in Redis when the solo item ended */

static void on_solo_done(uv_timer_t *t) {
  work *wk = (work *)t;

  solo_running = 0;
  c_waiting = submitter_exited(0);
  finished++;
  sl_job_succeed(wk->job, NULL, 0);
  uv_close((uv_handle_t *)t, work_closed);
}

/* Items that arrive while the solo item runs: batch C, submitted from
 * another process (the client API blocks; never on a worker's loop). */
static void submit_c(void) {
  char batch[SL_NAME_MAX + 1];

  fflush(stdout);
  fflush(stderr);
  submitter = fork();
  if (submitter == 0) {
    wtest_submit_n(solo_q, 4, "work", "null", "", batch);
    _exit(0);
  }
}

static void solo_start(sl_job_t *j, void *ud) {
  work *wk = calloc(1, sizeof(*wk));

  (void)ud;
  solo_started++;
  solo_attempt = sl_job_attempt(j);
  solo_others_at_start = running;
  solo_running = 1;
  submit_c();
  wk->job = j;
  uv_timer_init(sl_job_loop(j), &wk->t);
  uv_timer_start(&wk->t, on_solo_done, 600, 0);
}

static void watched_start(sl_job_t *j, void *ud) {
  if (solo_running)
    beside_solo++;
  work_start(j, ud);
}

static int all_done(void *ud) {
  (void)ud;
  return solo_started == 1 && !solo_running && finished == 8 + 1 + 4;
}

/*
 * An item on its last allowed delivery runs alone. With --max-deliveries 2,
 * an item delivered once and never finished is on its last: the simplest
 * real way to make one is what a crashed worker leaves behind, an entry
 * read by a consumer ("ghost") with XREADGROUP and never acknowledged. Once
 * it has been idle past the visibility timeout, a worker that runs nothing
 * reclaims it, alone. Batch B (8 items of 100 ms on 4 slots) runs first;
 * the solo item starts when nothing else runs, as attempt 2 (deliveries
 * count), and while it runs (600 ms) batch C arrives from another process
 * and none of it starts before the solo item has ended.
 */
static void test_run_alone(void) {
  const char *q = itest_queue("alone");
  char batch_a[SL_NAME_MAX + 1];
  char batch_b[SL_NAME_MAX + 1];
  const char *solo[] = {"{\"id\":\"solo\",\"type\":\"solo\",\"payload\":null}", NULL};
  sl_worker_opts o = {0};
  sl_worker_t *w;
  redisReply *r;
  redisContext *c = itest_conn();

  snprintf(solo_q, sizeof(solo_q), "%s", q);
  wtest_submit(q, NULL, solo, batch_a);
  r = itest_cmd(c, "XGROUP CREATE sluice:{%s}:s:normal workers 0 MKSTREAM", q);
  freeReplyObject(r);
  r = itest_cmd(c, "XREADGROUP GROUP workers ghost COUNT 1 STREAMS sluice:{%s}:s:normal >", q);
  CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 1);
  freeReplyObject(r);
  wtest_submit_n(q, 8, "work", "null", "", batch_b);

  hold_ms = 100;
  o.concurrency = 4;
  o.visibility_ms = 300;
  o.max_deliveries = 2;
  w = wtest_worker(q, &o);
  CHECK_INT(sl_worker_register(w, "work", watched_start, NULL), ==, 0);
  CHECK_INT(sl_worker_register(w, "solo", solo_start, NULL), ==, 0);
  CHECK_INT(wtest_run_until(w, all_done, NULL, 30000, NULL), ==, 0);
  sl_worker_free(w);
  CHECK(submitter > 0);
  CHECK(submitter_exited(1));
  CHECK(WIFEXITED(submitter_status) && WEXITSTATUS(submitter_status) == 0);
  CHECK(c_waiting); /* C was there to start, and did not, while the solo item ran */

  CHECK_INT(solo_started, ==, 1);
  CHECK_INT(solo_attempt, ==, 2);
  CHECK_INT(solo_others_at_start, ==, 0);
  CHECK_INT(beside_solo, ==, 0);
  CHECK_INT(peak, <=, 4);
  /* B ran before the solo item (it is reclaimed only by an idle worker),
   * C after it */
  for (int i = 0; i < 8; i++)
    CHECK_INT(order[i], ==, i);
  CHECK_INT(started, ==, 12);
  CHECK_INT(wtest_batch_num(q, batch_a, "succeeded"), ==, 1);
  CHECK_INT(wtest_batch_num(q, batch_b, "succeeded"), ==, 8);
  {
    char *line = wtest_result(q, batch_a, 0);

    CHECK_CONTAINS(line, "\"attempts\":2");
    free(line);
  }
  redisFree(c);
}

/* ---- Stop ---- */

static int first_done_then(void *ud) {
  (void)ud;
  return finished >= 1;
}

/*
 * A stop gives back what the worker took and did not start. Four items
 * under a rate limit of 1/s (burst 1) are all taken by one fetch, which
 * reserves their starts 0, 1, 2 and 3 s ahead: one runs, three wait in the
 * worker. Stopped after the first, the worker gives the three back: no
 * entry is pending for anyone afterwards, they are in the stream again, and
 * a second worker runs exactly those (each item counted once).
 */
static void test_stop_gives_back(void) {
  const char *q = itest_queue("giveback");
  char batch[SL_NAME_MAX + 1];
  sl_worker_opts o = {0};
  sl_client_t *c = NULL;
  char err[256];
  sl_worker_t *w;
  redisReply *r;
  redisContext *rc = itest_conn();
  long long t0;

  CHECK_INT(sl_client_open(itest_url(), &c, err, sizeof(err)), ==, 0);
  CHECK_INT(sl_limit_set(c, q, "slow", "1/s", 1, 0), ==, 0);
  sl_client_close(c);
  wtest_submit_n(q, 4, "work", "null", ",\"rate_key\":\"slow\"", batch);
  o.concurrency = 4;
  w = wtest_worker(q, &o);
  CHECK_INT(sl_worker_register(w, "work", work_start, NULL), ==, 0);
  t0 = itest_ms();
  CHECK_INT(wtest_run_until(w, first_done_then, NULL, 10000, NULL), ==, 0);
  sl_worker_free(w);
  CHECK_INT(itest_ms() - t0, <, 900); /* the waiting items were not waited for */
  CHECK_INT(started, ==, 1);
  CHECK_INT(wtest_batch_num(q, batch, "done"), ==, 1);
  r = itest_cmd(rc, "XPENDING sluice:{%s}:s:normal workers", q);
  CHECK(r->type == REDIS_REPLY_ARRAY && r->element[0]->type == REDIS_REPLY_INTEGER);
  CHECK_INT(r->element[0]->integer, ==, 0);
  freeReplyObject(r);
  CHECK_INT(wtest_int("XLEN sluice:{%s}:s:normal", q), ==, 3);

  /* a second worker runs exactly the three given back (the limit is gone:
   * the first fetch reserved starts seconds ahead) */
  CHECK_INT(sl_client_open(itest_url(), &c, err, sizeof(err)), ==, 0);
  CHECK_INT(sl_limit_rm(c, q, "slow"), ==, 0);
  sl_client_close(c);
  started = finished = 0;
  run_until_ended(q, batch, &o);
  CHECK_INT(started, ==, 3);
  CHECK_INT(wtest_batch_num(q, batch, "succeeded"), ==, 4);
  CHECK_INT(wtest_batch_num(q, batch, "done"), ==, 4);
  CHECK_INT(wtest_int("HLEN sluice:{%s}:b:%s:r", q, batch), ==, 4);
  redisFree(rc);
}

static const sl_test tests[] = {
    {"slots_bound", test_slots_bound, 30},
    {"fifo_order", test_fifo_order, 30},
    {"priority_order", test_priority_order, 30},
    {"run_alone", test_run_alone, 30},
    {"stop_gives_back", test_stop_gives_back, 30},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
