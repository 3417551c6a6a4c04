/*
 * Allocation failures on the worker side (SQLite's *fault.test idea, as
 * test_fault.c does for producers): a worker with its own loop runs a small
 * batch against the program's redis-server while the N-th allocation
 * through sl_malloc fails (cJSON's included, which allocates through it),
 * for every N from 0 to past the number of allocations a clean run makes.
 *
 * Each run is a forked child, so a crash or a sanitizer report (a leak at
 * its exit, under LeakSanitizer) is pinned to its N. Afterwards a normal
 * worker with a short visibility timeout (300 ms) takes over whatever the
 * faulty run left pending (an outcome it could not record stays pending and
 * runs again; the faulty worker's claims carry the same 300 ms) and
 * finishes the batch. Then the counts must be exact: no item
 * lost and none counted twice, one results line per item, each with the
 * status its type calls for, one dead letter per failure for good.
 *
 * The batch mixes what the worker does with an item: successes at once and
 * later (with progress), a retryable failure then a success (the errors of
 * earlier attempts: cJSON), a failure for good (dead letter), a refusal,
 * and the built-in sleep handler (its payload parsed with cJSON). The
 * built-in handlers fail an attempt they have no memory for as retryable
 * (their choice: a handler cannot leave its item pending), so the sleep
 * item has attempts to spare.
 *
 * Faults are transient (sl__alloc_fail_once: that allocation fails, the
 * next ones succeed), so each run meets exactly one failure and recovers;
 * a persistent failure (sl__alloc_fail_after) is swept too, over a sample
 * of N, where the run must end cleanly once stopped.
 *
 * SL_FAULT_STEP=k in the environment runs every k-th N only (default 1:
 * every N of the transient sweep); the persistent sweep runs every 11th N
 * (every run waits for its deadline there), SL_FAULT_PERSISTENT_STEP=k
 * changes that.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "harness.h"
#include "itest.h"
#include "worker.h"
#include "wtest.h"

#define ITEMS 8         /* items in the batch */
#define WANT_OK 6       /* of them succeed */
#define WANT_FAILED 2   /* fail for good (one refused) */
#define WANT_DEAD 1     /* dead letters (the refusal leaves none) */

static const char *const batch_lines[ITEMS + 1] = {
    "{\"id\":\"ok0\",\"type\":\"ok\",\"payload\":{\"n\":0}}",
    "{\"id\":\"ok1\",\"type\":\"ok\",\"payload\":{\"n\":1}}",
    "{\"id\":\"later\",\"type\":\"later\",\"payload\":null}",
    "{\"id\":\"flaky\",\"type\":\"flaky\",\"payload\":null,\"max_attempts\":3,\"backoff_ms\":1,\"backoff_max_ms\":1}",
    "{\"id\":\"bad\",\"type\":\"bad\",\"payload\":null,\"max_attempts\":3}",
    "{\"id\":\"refused\",\"type\":\"refuse\",\"payload\":null}",
    "{\"id\":\"sleep\",\"type\":\"sleep\",\"payload\":{\"ms\":1},\"max_attempts\":3,\"backoff_ms\":1}",
    "{\"id\":\"text\",\"type\":\"text\",\"payload\":null}",
    NULL};
/* The final status of each item, by index. */
static const char *const want_status[ITEMS] = {"succeeded", "succeeded", "succeeded", "succeeded",
                                               "failed",    "failed",    "succeeded", "succeeded"};

/* ---- Handlers ---- */

static void ok_start(sl_job_t *j, void *ud) {
  size_t len;
  const char *p = sl_job_payload(j, &len);

  (void)ud;
  sl_job_succeed(j, p, len);
}

typedef struct later {
  uv_timer_t t;  /* first: freed through the handle */
  sl_job_t *job; /* completed when it fires */
} later;

static void later_closed(uv_handle_t *h) {
  free(h);
}

static void on_later(uv_timer_t *t) {
  later *l = (later *)t;

  sl_job_succeed(l->job, "[\"later\",{\"k\":1}]", 17);
  uv_close((uv_handle_t *)t, later_closed);
}

static void later_cancel(sl_job_t *j, void *ud) {
  later *l = ud;

  (void)j;
  uv_timer_stop(&l->t);
  sl_job_fail(l->job, "cancelled");
  uv_close((uv_handle_t *)&l->t, later_closed);
}

static void later_start(sl_job_t *j, void *ud) {
  later *l = calloc(1, sizeof(*l));

  (void)ud;
  l->job = j;
  sl_job_progress(j, 50);
  sl_job_on_cancel(j, later_cancel, l);
  uv_timer_init(sl_job_loop(j), &l->t);
  uv_timer_start(&l->t, on_later, 5, 0);
}

static void flaky_start(sl_job_t *j, void *ud) {
  (void)ud;
  if (sl_job_attempt(j) == 1)
    sl_job_fail(j, "flaky: first attempt \"fails\" on purpose");
  else
    sl_job_succeed(j, "\"second time\"", 13);
}

static void bad_start(sl_job_t *j, void *ud) {
  (void)ud;
  sl_job_fail_final(j, "bad input: %s", sl_job_item_id(j));
}

static void refuse_start(sl_job_t *j, void *ud) {
  (void)ud;
  sl_job_refuse(j, "not granted");
}

static void text_start(sl_job_t *j, void *ud) {
  (void)ud;
  sl_job_succeed(j, "plain \"text\"\n", 13); /* not JSON: stored as a string */
}

static int register_all(sl_worker_t *w) {
  int rc = 0;

  rc |= sl_worker_register(w, "ok", ok_start, NULL);
  rc |= sl_worker_register(w, "later", later_start, NULL);
  rc |= sl_worker_register(w, "flaky", flaky_start, NULL);
  rc |= sl_worker_register(w, "bad", bad_start, NULL);
  rc |= sl_worker_register(w, "refuse", refuse_start, NULL);
  rc |= sl_worker_register(w, "text", text_start, NULL);
  return rc;
}

/* ---- One run ---- */

/* Stops the faulty run once the batch ended, or once the worker has been
 * idle for IDLE_MS (what it lost under the fault stays pending). */
#define IDLE_MS 250
typedef struct idle_watch {
  sl_worker_t *w;      /* the worker */
  wtest_batch b;       /* its batch */
  long long idle_from; /* itest_ms() since when it has been idle; 0: busy */
} idle_watch;

static int ended_or_idle(void *ud) {
  idle_watch *iw = ud;
  sl_worker_t *w = iw->w;
  int idle = w->running == 0 && w->nbacklog == 0 && w->ndone == 0 && w->flushing == 0 && !w->fetching &&
             w->ever_up;

  if (!idle) {
    iw->idle_from = 0;
    return 0;
  }
  if (iw->idle_from == 0)
    iw->idle_from = itest_ms();
  return itest_ms() - iw->idle_from >= IDLE_MS || wtest_batch_ended(&iw->b);
}

/* The faulty run, in the child: returns normally whatever the worker did. */
static void faulty_run(const char *q, const char *batch, long n, int once, long *allocs) {
  sl_worker_opts o = {0};
  sl_worker_t *w = NULL;
  idle_watch iw;
  char err[256];
  long before;
  int late = 0;

  o.redis_url = itest_url();
  o.queue = q;
  o.concurrency = 4;
  o.block_ms = 100;
  o.drain_timeout_ms = 500;
  o.visibility_ms = 300; /* its claims expire as the finishing worker's do */
  o.quiet = 1;
  before = sl__alloc_count();
  if (n >= 0) {
    if (once)
      sl__alloc_fail_once(n);
    else
      sl__alloc_fail_after(n);
  }
  if (sl_worker_new(&o, &w, err, sizeof(err)) == 0) {
    if (register_all(w) == 0) {
      iw.w = w;
      iw.b.q = q;
      iw.b.batch = batch;
      iw.idle_from = 0;
      wtest_run_until(w, ended_or_idle, &iw, once ? 5000 : 1500, &late);
    }
    sl_worker_free(w);
  }
  sl__alloc_fail_after(-1);
  if (allocs != NULL)
    *allocs = sl__alloc_count() - before;
  if (late && once)
    sl_test_fail(__FILE__, __LINE__, "fault %ld: the worker did not stop within 5 s", n);
}

/* Finishes the batch with a normal worker (visibility 300 ms) and checks
 * the counts. */
static void finish_and_check(const char *q, const char *batch, long n) {
  sl_worker_opts o = {0};
  sl_worker_t *w;
  wtest_batch b = {q, batch};
  int late = 0;
  long long ok;
  long long failed;
  long long cancelled;

  o.concurrency = 4;
  o.visibility_ms = 300;
  w = wtest_worker(q, &o);
  CHECK_INT(register_all(w), ==, 0);
  CHECK_INT(wtest_run_until(w, wtest_batch_ended, &b, 15000, &late), ==, 0);
  sl_worker_free(w);
  if (late)
    sl_test_fail(__FILE__, __LINE__, "fault %ld: the batch did not end (done %lld of %d)", n,
                 wtest_batch_num(q, batch, "done"), ITEMS);
  for (long i = 0; i < ITEMS; i++) {
    char *line = wtest_result(q, batch, i);
    cJSON *r = line ? cJSON_Parse(line) : NULL;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "status");

    if (!cJSON_IsString(st) || strcmp(st->valuestring, want_status[i]) != 0)
      sl_test_fail(__FILE__, __LINE__, "fault %ld: item %ld: %s", n, i, line ? line : "(no results line)");
    if (i == 6 && strstr(line, "\"result\":{\"slept_ms\":1}") == NULL)
      sl_test_fail(__FILE__, __LINE__, "fault %ld: the sleep item did not sleep as asked: %s", n, line);
    cJSON_Delete(r);
    free(line);
  }
  ok = wtest_batch_num(q, batch, "succeeded");
  failed = wtest_batch_num(q, batch, "failed");
  cancelled = wtest_batch_num(q, batch, "cancelled");
  if (cancelled < 0)
    cancelled = 0;
  if (ok != WANT_OK || failed != WANT_FAILED || ok + failed + cancelled != ITEMS ||
      wtest_batch_num(q, batch, "done") != ITEMS)
    sl_test_fail(__FILE__, __LINE__, "fault %ld: succeeded %lld, failed %lld, cancelled %lld, done %lld of %d", n,
                 ok, failed, cancelled, wtest_batch_num(q, batch, "done"), ITEMS);
  CHECK_INT(wtest_batch_num(q, batch, "refused"), ==, 1);
  if (wtest_int("HLEN sluice:{%s}:b:%s:r", q, batch) != ITEMS)
    sl_test_fail(__FILE__, __LINE__, "fault %ld: %lld results lines for %d items", n,
                 wtest_int("HLEN sluice:{%s}:b:%s:r", q, batch), ITEMS);
  if (wtest_int("XLEN sluice:{%s}:dead", q) != WANT_DEAD)
    sl_test_fail(__FILE__, __LINE__, "fault %ld: %lld dead letters, want %d", n,
                 wtest_int("XLEN sluice:{%s}:dead", q), WANT_DEAD);
  /* nothing left in the streams, nothing pending */
  for (int s = 0; s < 3; s++) {
    static const char *const names[3] = {"high", "normal", "low"};

    if (wtest_int("XLEN sluice:{%s}:s:%s", q, names[s]) != 0)
      sl_test_fail(__FILE__, __LINE__, "fault %ld: stream %s still has %lld entries", n, names[s],
                   wtest_int("XLEN sluice:{%s}:s:%s", q, names[s]));
  }
}

/* Runs the faulty worker in a child; fails the test if it crashed or a
 * sanitizer aborted it. *allocs (may be NULL) gets the allocations of the
 * run (a pipe brings it back). */
static void run_child(const char *q, const char *batch, long n, int once, long *allocs) {
  int p[2];
  pid_t pid;
  int status = 0;
  long count = -1;

  CHECK_INT(pipe(p), ==, 0);
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    long a = -1;
    ssize_t wr;

    close(p[0]);
    faulty_run(q, batch, n, once, &a);
    wr = write(p[1], &a, sizeof(a));
    (void)wr;
    close(p[1]);
    exit(0); /* exit, not _exit: LeakSanitizer checks the run here */
  }
  close(p[1]);
  {
    long long t0 = itest_ms();

    while (waitpid(pid, &status, WNOHANG) != pid) {
      if (itest_ms() - t0 > 20000) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        sl_test_fail(__FILE__, __LINE__, "fault %ld (%s): the worker's process hung", n,
                     once ? "once" : "from then on");
      }
      usleep(2000);
    }
  }
  if (WIFSIGNALED(status))
    sl_test_fail(__FILE__, __LINE__, "fault %ld (%s): the worker died of signal %d", n, once ? "once" : "from then on",
                 WTERMSIG(status));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    sl_test_fail(__FILE__, __LINE__, "fault %ld (%s): the worker's process exited %d", n,
                 once ? "once" : "from then on", WEXITSTATUS(status));
  if (read(p[0], &count, sizeof(count)) != (ssize_t)sizeof(count))
    count = -1;
  close(p[0]);
  if (allocs != NULL)
    *allocs = count;
}

/* SL_FAULT_ONLY=N: only that N (to look at one failure). */
static long only(void) {
  const char *s = getenv("SL_FAULT_ONLY");

  return s != NULL ? strtol(s, NULL, 10) : -1;
}

static long step(const char *var, long def) {
  const char *s = getenv(var);
  long k = s != NULL ? strtol(s, NULL, 10) : def;

  return k > 0 ? k : def;
}

/* A clean run (no fault): how many allocations the worker makes. */
static long clean_allocs(void) {
  char batch[SL_NAME_MAX + 1];
  char qname[64];
  long allocs = -1;

  snprintf(qname, sizeof(qname), "%s", itest_queue("wf-clean"));
  wtest_submit(qname, NULL, batch_lines, batch);
  run_child(qname, batch, -1, 1, &allocs);
  finish_and_check(qname, batch, -1);
  CHECK_INT(allocs, >, 50);
  return allocs;
}

static void sweep(int once, long every) {
  long total = clean_allocs();
  long limit = total + total / 4 + 20; /* runs differ a little in timing: past the end */
  long runs = 0;
  long long t0 = itest_ms();

  for (long n = only() >= 0 ? only() : 0; n < limit; n += every) {
    char batch[SL_NAME_MAX + 1];
    char qname[64];
    char name[32];

    snprintf(name, sizeof(name), "wf%c%ld", once ? 'o' : 'p', n);
    snprintf(qname, sizeof(qname), "%s", itest_queue(name));
    wtest_submit(qname, NULL, batch_lines, batch);
    run_child(qname, batch, n, once, NULL);
    finish_and_check(qname, batch, n);
    runs++;
    if (only() >= 0)
      break;
  }
  printf("    %s faults: a clean run makes %ld allocations; %ld runs (N = 0..%ld step %ld) in %.1f s\n",
         once ? "transient" : "persistent", total, runs, limit - 1, every, (double)(itest_ms() - t0) / 1000.0);
}

/* Every N, the N-th allocation failing once. */
static void test_transient_sweep(void) {
  sweep(1, step("SL_FAULT_STEP", 1));
}

/* A sample of N, every allocation from the N-th on failing. */
static void test_persistent_sweep(void) {
  sweep(0, step("SL_FAULT_PERSISTENT_STEP", 11));
}

/* A worker of three queues (a crew: the lead and two members) made and
 * freed with each of its allocations failing in turn: every failure is
 * an error with a cause, nothing leaks (LeakSanitizer at the child's
 * exit), and a run with no failure succeeds. */
static void test_new_three_queues(void) {
  sl_worker_opts o = {0};
  char err[512];
  long clean;
  long before;
  sl_worker_t *w;

  o.redis_url = itest_url();
  o.queue = "fault-a,fault-b,fault-c";
  o.queue_weights = "3,2,1";
  o.quiet = 1;
  before = sl__alloc_count();
  CHECK_INT(sl_worker_new(&o, &w, err, sizeof(err)), ==, 0);
  sl_worker_free(w);
  clean = sl__alloc_count() - before;
  CHECK(clean > 3);
  for (long n = 0; n < clean; n++) {
    int rc;

    err[0] = '\0';
    sl__alloc_fail_once(n);
    rc = sl_worker_new(&o, &w, err, sizeof(err));
    sl__alloc_fail_after(-1);
    if (rc == 0) {
      sl_worker_free(w);
    } else if (err[0] == '\0') {
      sl_test_fail(__FILE__, __LINE__, "fault %ld: error %d without a cause", n, rc);
    }
  }
}

static const sl_test tests[] = {
    {"new_three_queues", test_new_three_queues, 60},
    {"transient_sweep", test_transient_sweep, 1200},
    {"persistent_sweep", test_persistent_sweep, 600},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
