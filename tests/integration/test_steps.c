/*
 * Operations that work in bounded steps (no function call does work that
 * grows with a batch), interrupted between their steps as a client that
 * dies would leave them.
 *
 *   resume_interrupted   A batch of 50,000 items is paused while two workers
 *                        run it; the workers park what they meet. One step
 *                        of a resume is sent by hand, as a `sluice resume`
 *                        killed after its first call leaves it: the batch
 *                        runs again at once, and the workers put the rest of
 *                        the parked items back by themselves (their reclaim
 *                        timers), with no client at all. A second `sluice
 *                        resume` finishes what is left. Every item ends
 *                        exactly once, counters exact, nothing left parked.
 *
 *   cancel_interrupted   50,000 items, half scheduled an hour ahead, two
 *                        workers busy: one cancel step by hand, then no
 *                        client: no item starts after it, the workers end
 *                        the scheduled ones as cancelled, the batch ends.
 *   abort_interrupted    the same with --abort, the workers' slots full of
 *                        minute-long items: they are stopped and counted
 *                        cancelled ("aborted while running").
 *   cancel_cli_killed    a real `sluice cancel` killed with SIGKILL after
 *                        its first steps: a worker finishes the rest.
 *   resume_cli_killed    a real `sluice resume` killed with SIGKILL after
 *                        its first steps: the worker puts the rest back.
 *   cancel_own_delayed   a batch with 10 scheduled items beside another
 *                        batch's 50,000: one cancel step ends it, and the
 *                        other batch's items stay scheduled. The step reads
 *                        the batch's own index of its delayed items; a scan
 *                        of the queue's whole delayed set (1,000 members a
 *                        step) would need about 50 steps.
 *   old_delayed_member   a delayed member in the older whole form
 *                        (PRIORITY\nBATCH\nINDEX\nATTEMPT\nERRORS\nD) still
 *                        runs when due.
 *   batches_paging         `sluice batches --limit 40 --after LAST` pages
 *                          through 250 batches while more are submitted:
 *                          each listed exactly once.
 *   batches_index_trimmed  batches whose keys expired leave the index as
 *                          new batches come.
 *   batches_by_status      `sluice batches --status S` reads only the
 *                          batches in status S.
 *
 * Every wait polls with a deadline.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "itest.h"

#define STEP_ITEMS 50000 /* items of the batch */
#define STEP_MAX "1000"  /* parked items one resume step puts back */

static pid_t worker(const char *q) {
  const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "50", "--block-ms", "300",
                        "--quiet", NULL};

  return itest_spawn(args, NULL, NULL);
}

static long long num(redisContext *c, const char *fmt, const char *q, const char *batch) {
  redisReply *r = itest_cmd(c, fmt, q, batch);
  long long n = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

  freeReplyObject(r);
  return n;
}

/* 1 when the batch is listed in the drain set (a cancel not finished). */
static int in_drain(redisContext *c, const char *q, const char *batch) {
  redisReply *r = itest_cmd(c, "ZSCORE sluice:{%s}:drain %s", q, batch);
  int in = r->type == REDIS_REPLY_STRING;

  freeReplyObject(r);
  return in;
}

/* Entries of the batch still in the streams or pending: 0 once every item
 * is parked, running nowhere. */
static long long in_streams(redisContext *c, const char *q) {
  static const char *const s[3] = {"high", "normal", "low"};
  long long n = 0;

  for (int i = 0; i < 3; i++) {
    redisReply *r = itest_cmd(c, "XLEN sluice:{%s}:s:%s", q, s[i]);

    n += r->integer;
    freeReplyObject(r);
  }
  return n;
}

static void test_resume_interrupted(void) {
  const char *q = itest_queue("steps");
  redisContext *c = itest_conn();
  size_t cap = (size_t)STEP_ITEMS * 40;
  char *buf = malloc(cap);
  size_t len = 0;
  char batch[64];
  pid_t w[2];
  long long parked;
  long long after_step;
  redisReply *r;

  for (int i = 0; i < STEP_ITEMS; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"noop\",\"payload\":%d}\n", i);
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, buf, len, NULL));
  free(buf);
  w[0] = worker(q);
  w[1] = worker(q);
  ITEST_WAIT_INT(itest_batch_num(c, q, batch, "done"), >=, 1000, 30000, "1,000 items done");
  {
    const char *args[] = {"pause", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
  }
  /* The workers park every entry of the batch they meet. */
  ITEST_WAIT_INT(in_streams(c, q), ==, 0, 60000, "every entry of the paused batch parked or ended");
  parked = num(c, "XLEN sluice:{%s}:b:%s:p", q, batch);
  printf("    paused with %lld items done, %lld parked\n", itest_batch_num(c, q, batch, "done"), parked);
  CHECK(parked > 0);
  CHECK_INT(itest_batch_num(c, q, batch, "done") + parked, ==, STEP_ITEMS);

  /* One step of a resume, and its client gone. */
  r = itest_cmd(c, "FCALL sluice_v1_resume 4 sluice:{%s}:b:%s sluice:{%s}:s:high sluice:{%s}:s:normal "
                   "sluice:{%s}:s:low sluice:{%s}: %s %s " STEP_MAX,
                q, batch, q, q, q, q, q, batch);
  CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 2);
  CHECK_STR(r->element[0]->str, "running");
  CHECK_INT(r->element[1]->integer, ==, parked > 1000 ? 1 : 0);
  freeReplyObject(r);
  after_step = num(c, "XLEN sluice:{%s}:b:%s:p", q, batch);
  /* the step put 1,000 back; the workers' reclaim (200 a call, 10 ms
   * apart while more is left) may already have put back more */
  CHECK_INT(after_step, <=, parked > 1000 ? parked - 1000 : 0);
  r = itest_cmd(c, "ZSCORE sluice:{%s}:unpark %s", q, batch);
  CHECK(r->type == (parked > 1000 ? REDIS_REPLY_STRING : REDIS_REPLY_NIL));
  freeReplyObject(r);

  /* The workers go on with it by themselves. */
  if (after_step > 2000)
    ITEST_WAIT_INT(num(c, "XLEN sluice:{%s}:b:%s:p", q, batch), <, after_step - 1000, 20000,
                   "the workers to put parked items back without a client");
  printf("    after one step by hand: %lld parked; the workers, with no client: %lld parked\n", after_step,
         num(c, "XLEN sluice:{%s}:b:%s:p", q, batch));
  {
    const char *args[] = {"resume", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 60), ==, 0); /* a second resume finishes what is left */
  }
  CHECK_INT(num(c, "EXISTS sluice:{%s}:b:%s:p", q, batch), ==, 0);
  itest_wait_batch(c, q, batch, 120);
  itest_stop_ok(w[0]);
  itest_stop_ok(w[1]);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, STEP_ITEMS);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, STEP_ITEMS);
  CHECK_INT(num(c, "HLEN sluice:{%s}:b:%s:r", q, batch), ==, STEP_ITEMS);
  CHECK_INT(in_streams(c, q), ==, 0);
  r = itest_cmd(c, "ZCARD sluice:{%s}:unpark", q);
  CHECK_INT(r->integer, ==, 0);
  freeReplyObject(r);
  redisFree(c);
}

/* Submits a one-item batch to queue q with the given extra option (or
 * NULL); returns its id (a static buffer). */
static const char *one_batch(const char *q, const char *opt1, const char *opt2) {
  const char *item = "{\"type\":\"noop\",\"payload\":null}\n";
  const char *opts[] = {opt1, opt2, NULL};

  return itest_submit(q, item, strlen(item), opts);
}

/* Pages of `sluice batches --limit 40 --json`, each after the last batch of
 * the one before, while new batches are submitted between the pages: every
 * batch that existed at the start is listed exactly once, and the pages
 * hold nothing twice. */
static void test_batches_paging(void) {
  const char *q = itest_queue("paging");
  enum { N = 250 };
  static char ids[N][27];
  static int seen[N];
  char after[64] = "";
  int pages = 0;
  int added = 0;
  int total_shown = 0;

  for (int i = 0; i < N; i++)
    snprintf(ids[i], sizeof(ids[i]), "%s", one_batch(q, NULL, NULL));
  for (;;) {
    const char *args[] = {"batches", "--redis", itest_url(), "--queue", q, "--limit", "40", "--json",
                          after[0] ? "--after" : NULL, after, NULL};
    char *out = NULL;
    char *line;
    char *save = NULL;
    int n = 0;

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    for (line = strtok_r(out, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
      const char *b = strstr(line, "\"batch\":\"");

      CHECK(b != NULL);
      snprintf(after, sizeof(after), "%.26s", b + 9);
      for (int i = 0; i < N; i++) {
        if (strcmp(ids[i], after) == 0)
          seen[i]++;
      }
      n++;
    }
    free(out);
    total_shown += n;
    pages++;
    if (n < 40)
      break;
    for (int k = 0; k < 3; k++, added++)
      one_batch(q, NULL, NULL); /* newer than every page: never listed after this */
  }
  printf("    %d pages, %d batches shown, %d added while paging\n", pages, total_shown, added);
  for (int i = 0; i < N; i++)
    CHECK_INT(seen[i], ==, 1);
  CHECK_INT(total_shown, ==, N);
}

/* Batches whose keys expired (retention 1 s after they ended) leave the
 * index: each new batch looks at the 10 oldest. */
static void test_batches_index_trimmed(void) {
  const char *q = itest_queue("trim");
  redisContext *c = itest_conn();
  char last[64];
  pid_t w;
  redisReply *r;

  for (int i = 0; i < 20; i++)
    snprintf(last, sizeof(last), "%s", one_batch(q, "--retention", "1s"));
  w = worker(q);
  itest_wait_batch(c, q, last, 30);
  itest_stop_ok(w);
  ITEST_WAIT_INT(num(c, "EXISTS sluice:{%s}:b:%s", q, last), ==, 0, 10000, "the ended batches to expire");
  r = itest_cmd(c, "ZCARD sluice:{%s}:batches", q);
  CHECK_INT(r->integer, ==, 20);
  freeReplyObject(r);
  one_batch(q, NULL, NULL);
  one_batch(q, NULL, NULL);
  r = itest_cmd(c, "ZCARD sluice:{%s}:batches", q);
  printf("    20 expired batches in the index; after two new batches: %lld\n", r->integer);
  CHECK_INT(r->integer, ==, 2);
  freeReplyObject(r);
  r = itest_cmd(c, "ZCARD sluice:{%s}:bs:completed", q); /* the status index goes with it */
  CHECK_INT(r->integer, ==, 0);
  freeReplyObject(r);
  redisFree(c);
}

/* Lines of `sluice batches --status S --json`, each batch id into ids (when
 * not NULL); returns how many. */
static int list_status(const char *q, const char *status, char (*ids)[27], int max) {
  const char *args[] = {"batches", "--redis", itest_url(), "--queue", q, "--status", status, "--json", NULL};
  char *out = NULL;
  char *save = NULL;
  int n = 0;

  CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
  for (char *line = strtok_r(out, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
    const char *b = strstr(line, "\"batch\":\"");
    const char *st = strstr(line, "\"status\":\"");

    CHECK(b != NULL && st != NULL && strncmp(st + 10, status, strlen(status)) == 0);
    if (ids != NULL && n < max)
      snprintf(ids[n], sizeof(ids[n]), "%.26s", b + 9);
    n++;
  }
  free(out);
  return n;
}

static long long hgetall_calls(redisContext *c) {
  redisReply *r = itest_cmd(c, "INFO commandstats");
  const char *p = strstr(r->str, "cmdstat_hgetall:calls=");
  long long n = p != NULL ? strtoll(p + 22, NULL, 10) : 0;

  freeReplyObject(r);
  return n;
}

/* `sluice batches --status S` reads the status index, not every batch:
 * 300 completed batches and two each queued, paused and cancelled; each
 * status lists exactly its batches, and listing the two paused ones reads
 * two batch hashes (INFO commandstats), not 306. */
static void test_batches_by_status(void) {
  const char *q = itest_queue("bystatus");
  redisContext *c = itest_conn();
  const char *later = "{\"type\":\"noop\",\"payload\":null,\"delay_ms\":3600000}\n";
  static char done[300][27];
  char held[6][27];
  char got[4][27];
  pid_t w;

  for (int i = 0; i < 300; i++)
    snprintf(done[i], sizeof(done[i]), "%s", one_batch(q, NULL, NULL));
  w = worker(q);
  itest_wait_batch(c, q, done[299], 60);
  ITEST_WAIT_INT(num(c, "ZCARD sluice:{%s}:bs:completed", q, NULL), ==, 300, 30000, "300 completed batches");
  itest_stop_ok(w);
  for (int i = 0; i < 6; i++)
    snprintf(held[i], sizeof(held[i]), "%s", itest_submit(q, later, strlen(later), NULL));
  for (int i = 0; i < 2; i++) {
    const char *cancel[] = {"cancel", "--redis", itest_url(), "--queue", q, held[i], NULL};
    const char *pause[] = {"pause", "--redis", itest_url(), "--queue", q, held[2 + i], NULL};

    CHECK_INT(itest_run(cancel, NULL, NULL, 30), ==, 0);
    CHECK_INT(itest_run(pause, NULL, NULL, 30), ==, 0);
  }
  CHECK_INT(list_status(q, "completed", NULL, 0), ==, 300);
  CHECK_INT(list_status(q, "running", NULL, 0), ==, 0);
  CHECK_INT(list_status(q, "cancelled", got, 4), ==, 2);
  CHECK_STR(got[0], held[1]); /* newest first */
  CHECK_STR(got[1], held[0]);
  CHECK_INT(list_status(q, "queued", got, 4), ==, 2);
  CHECK_STR(got[0], held[5]);
  CHECK_STR(got[1], held[4]);
  {
    long long before = hgetall_calls(c);

    CHECK_INT(list_status(q, "paused", got, 4), ==, 2);
    printf("    batches --status paused among 306 batches read %lld batch hashes\n", hgetall_calls(c) - before);
    CHECK_INT(hgetall_calls(c) - before, ==, 2);
  }
  CHECK_STR(got[0], held[3]);
  CHECK_STR(got[1], held[2]);
  redisFree(c);
}

/* A batch of 50,000 items, half of them scheduled an hour ahead (in the
 * delayed set), cancelled while two workers run the rest: one step of the
 * cancel is sent by hand, as a `sluice cancel` killed after its first call
 * leaves it. No item starts after that step returned (beyond one round
 * trip); the workers finish the scheduled items as cancelled by themselves,
 * and the batch ends: done = total, its keys with their retention. */
static void cancel_interrupted(int abort_running) {
  const char *q = itest_queue(abort_running ? "abortsteps" : "cancelsteps");
  redisContext *c = itest_conn();
  size_t cap = (size_t)STEP_ITEMS * 80;
  char *buf = malloc(cap);
  size_t len = 0;
  char batch[64];
  pid_t w[2];
  long long stepped_at;
  long long late = 0;
  long long cancelled;
  redisReply *r;

  for (int i = 0; i < STEP_ITEMS; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":%d}%s}\n",
                            abort_running ? 60000 : 20, i % 2 ? ",\"delay_ms\":3600000" : "");
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, buf, len, NULL));
  free(buf);
  r = itest_cmd(c, "ZCARD sluice:{%s}:delayed", q);
  CHECK_INT(r->integer, ==, STEP_ITEMS / 2);
  freeReplyObject(r);
  w[0] = worker(q);
  w[1] = worker(q);
  if (abort_running) /* every slot runs an item of a minute */
    ITEST_WAIT_INT(itest_pending(c, q), >=, 100, 60000, "the workers to fill their slots");
  else
    ITEST_WAIT_INT(itest_batch_num(c, q, batch, "done"), >=, 1000, 60000, "1,000 items done");

  /* One step of a cancel, and its client gone. */
  r = itest_cmd(c, "FCALL sluice_v1_cancel 2 sluice:{%s}:b:%s sluice:{%s}:delayed sluice:{%s}: %s %s %s " STEP_MAX,
                q, batch, q, q, q, batch, abort_running ? "1" : "0");
  CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 2);
  CHECK_STR(r->element[0]->str, "cancelled");
  CHECK_INT(r->element[1]->integer, ==, 1);
  freeReplyObject(r);
  r = itest_cmd(c, "TIME");
  stepped_at = strtoll(r->element[0]->str, NULL, 10) * 1000 + strtoll(r->element[1]->str, NULL, 10) / 1000;
  freeReplyObject(r);
  r = itest_cmd(c, "ZSCORE sluice:{%s}:drain %s", q, batch);
  CHECK(r->type == REDIS_REPLY_STRING);
  freeReplyObject(r);

  /* The workers finish it by themselves: the scheduled items end cancelled. */
  ITEST_WAIT_INT(num(c, "ZCARD sluice:{%s}:delayed", q, NULL), ==, 0, 90000,
                 "the workers to finish the cancel's delayed items without a client");
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w[0]);
  itest_stop_ok(w[1]);
  cancelled = itest_batch_num(c, q, batch, "cancelled");
  printf("    cancelled after %lld items succeeded; %lld cancelled (the %d scheduled ones among them)\n",
         itest_batch_num(c, q, batch, "succeeded"), cancelled, STEP_ITEMS / 2);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, STEP_ITEMS);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded") + cancelled, ==, STEP_ITEMS);
  CHECK(cancelled >= STEP_ITEMS / 2);
  CHECK_INT(num(c, "HLEN sluice:{%s}:b:%s:r", q, batch), ==, STEP_ITEMS);
  CHECK(num(c, "PTTL sluice:{%s}:b:%s", q, batch) > 0);
  r = itest_cmd(c, "ZCARD sluice:{%s}:drain", q);
  CHECK_INT(r->integer, ==, 0);
  freeReplyObject(r);
  /* No item started after the step returned, beyond one round trip (what a
   * worker had taken just before may still start). */
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  for (size_t i = 0; i < r->elements; i++) {
    const char *st = strstr(r->element[i]->str, "\"started_at\":");

    if (st != NULL && strstr(r->element[i]->str, "\"status\":\"succeeded\"") != NULL &&
        strtoll(st + 13, NULL, 10) > stepped_at + 200)
      late++;
  }
  freeReplyObject(r);
  CHECK_INT(late, ==, 0);
  if (abort_running) {
    /* the running items were stopped, not waited for: nothing succeeded */
    CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 0);
    r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 0", q, batch);
    CHECK(r->type == REDIS_REPLY_STRING && strstr(r->str, "aborted while running") != NULL);
    freeReplyObject(r);
  }
  redisFree(c);
}

static void test_cancel_interrupted(void) {
  cancel_interrupted(0);
}

/* The same with --abort: the 100 items running when the step was sent (a
 * minute each) are stopped by the workers' next heartbeats and counted
 * cancelled; the step's client is gone as before. */
static void test_abort_interrupted(void) {
  cancel_interrupted(1);
}

/* A real `sluice cancel` killed with SIGKILL after its first steps: 50,000
 * items scheduled an hour ahead, no worker. Right after the kill the batch
 * is cancelled with only part of its items ended and still listed in the
 * drain set; a worker started then finishes the rest with no client, and
 * every item ends exactly once. */
static void test_cancel_cli_killed(void) {
  const char *q = itest_queue("cancelkilled");
  redisContext *c = itest_conn();
  size_t cap = (size_t)STEP_ITEMS * 80;
  char *buf = malloc(cap);
  size_t len = 0;
  char batch[64];
  long long at_kill;
  pid_t cli;
  pid_t w;

  CHECK(buf != NULL);
  for (int i = 0; i < STEP_ITEMS; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"noop\",\"payload\":%d,\"delay_ms\":3600000}\n", i);
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, buf, len, NULL));
  free(buf);
  {
    const char *args[] = {"cancel", "--redis", itest_url(), "--queue", q, batch, NULL};

    cli = itest_spawn(args, NULL, NULL);
  }
  ITEST_WAIT_INT(itest_batch_num(c, q, batch, "cancelled"), >, 0, 30000, "the cancel's first step");
  kill(cli, SIGKILL);
  waitpid(cli, NULL, 0);
  at_kill = itest_batch_num(c, q, batch, "cancelled");
  printf("    killed after %lld of %d items were cancelled\n", at_kill, STEP_ITEMS);
  CHECK_INT(at_kill, <, STEP_ITEMS);
  CHECK_INT(in_drain(c, q, batch), ==, 1);
  w = worker(q);
  itest_wait_batch(c, q, batch, 120);
  itest_stop_ok(w);
  CHECK_INT(itest_batch_num(c, q, batch, "cancelled"), ==, STEP_ITEMS);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, STEP_ITEMS);
  CHECK_INT(num(c, "HLEN sluice:{%s}:b:%s:r", q, batch), ==, STEP_ITEMS);
  CHECK_INT(num(c, "ZCARD sluice:{%s}:drain", q, NULL), ==, 0);
  itest_check_drained(c, q);
  redisFree(c);
}

/* A real `sluice resume` killed with SIGKILL after its first steps: 50,000
 * items parked by a paused batch, one worker running. Right after the kill
 * the batch runs again with part of its items still parked and listed in
 * the unpark set; the worker puts the rest back by itself, and every item
 * ends exactly once. */
static void test_resume_cli_killed(void) {
  const char *q = itest_queue("resumekilled");
  redisContext *c = itest_conn();
  size_t cap = (size_t)STEP_ITEMS * 48;
  char *buf = malloc(cap);
  size_t len = 0;
  char batch[64];
  char pkey[128];
  long long left;
  pid_t cli;
  pid_t w;
  redisReply *r;

  CHECK(buf != NULL);
  for (int i = 0; i < STEP_ITEMS; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"noop\",\"payload\":%d}\n", i);
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, buf, len, NULL));
  free(buf);
  snprintf(pkey, sizeof(pkey), "sluice:{%s}:b:%s:p", q, batch);
  {
    const char *args[] = {"pause", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
  }
  w = worker(q);
  ITEST_WAIT_INT(num(c, "XLEN %s", pkey, NULL), ==, STEP_ITEMS, 60000, "the worker to park every item");
  {
    const char *args[] = {"resume", "--redis", itest_url(), "--queue", q, batch, NULL};

    cli = itest_spawn(args, NULL, NULL);
  }
  ITEST_WAIT_INT(num(c, "XLEN %s", pkey, NULL), <, STEP_ITEMS, 30000, "the resume's first step");
  kill(cli, SIGKILL);
  waitpid(cli, NULL, 0);
  left = num(c, "XLEN %s", pkey, NULL);
  printf("    resume killed with %lld of %d items still parked\n", left, STEP_ITEMS);
  CHECK_INT(left, >, 0);
  r = itest_cmd(c, "ZSCORE sluice:{%s}:unpark %s", q, batch);
  CHECK(r->type == REDIS_REPLY_STRING);
  freeReplyObject(r);
  itest_wait_batch(c, q, batch, 120);
  itest_stop_ok(w);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, STEP_ITEMS);
  CHECK_INT(num(c, "HLEN sluice:{%s}:b:%s:r", q, batch), ==, STEP_ITEMS);
  CHECK_INT(num(c, "EXISTS %s", pkey, NULL), ==, 0);
  CHECK_INT(num(c, "ZCARD sluice:{%s}:unpark", q, NULL), ==, 0);
  itest_check_drained(c, q);
  redisFree(c);
}

static void test_cancel_own_delayed(void) {
  const char *q = itest_queue("owndelayed");
  redisContext *c = itest_conn();
  size_t cap = (size_t)STEP_ITEMS * 80;
  char *buf = malloc(cap);
  size_t len = 0;
  char other[64];
  char batch[64];
  redisReply *r;

  CHECK(buf != NULL);
  for (int i = 0; i < STEP_ITEMS; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"noop\",\"payload\":%d,\"delay_ms\":3600000}\n", i);
  snprintf(other, sizeof(other), "%s", itest_submit(q, buf, len, NULL));
  len = 0;
  for (int i = 0; i < 10; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"noop\",\"payload\":%d,\"delay_ms\":3600000}\n", i);
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, buf, len, NULL));
  free(buf);
  CHECK_INT(num(c, "ZCARD sluice:{%s}:delayed", q, NULL), ==, STEP_ITEMS + 10);

  r = itest_cmd(c, "FCALL sluice_v1_cancel 2 sluice:{%s}:b:%s sluice:{%s}:delayed sluice:{%s}: %s %s 0 " STEP_MAX,
                q, batch, q, q, q, batch);
  CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 2);
  CHECK_STR(r->element[0]->str, "cancelled");
  CHECK_INT(r->element[1]->integer, ==, 0); /* nothing left for a second step */
  freeReplyObject(r);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 10);
  CHECK_INT(itest_batch_num(c, q, batch, "cancelled"), ==, 10);
  CHECK_INT(num(c, "ZCARD sluice:{%s}:delayed", q, NULL), ==, STEP_ITEMS);
  CHECK_INT(in_drain(c, q, batch), ==, 0);
  CHECK_INT(itest_batch_num(c, q, other, "done"), ==, 0);
  CHECK_INT(num(c, "HLEN sluice:{%s}:b:%s:dl", q, other), ==, STEP_ITEMS);
  redisFree(c);
}

static void test_old_delayed_member(void) {
  const char *q = itest_queue("olddelayed");
  redisContext *c = itest_conn();
  const char *item = "{\"type\":\"noop\",\"payload\":7,\"delay_ms\":3600000}\n";
  char batch[64];
  pid_t w;
  redisReply *r;

  snprintf(batch, sizeof(batch), "%s", itest_submit(q, item, strlen(item), NULL));
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s:dl 0\n1", q, batch);
  CHECK(r->type == REDIS_REPLY_STRING && strncmp(r->str, "2\n\n", 3) == 0);
  /* the same item as a whole member, due now, and nothing in the index */
  freeReplyObject(itest_cmd(c, "DEL sluice:{%s}:b:%s:dl", q, batch));
  freeReplyObject(itest_cmd(c, "DEL sluice:{%s}:delayed", q));
  freeReplyObject(itest_cmd(c, "ZADD sluice:{%s}:delayed 1 2\n%s\n0\n1\n\n%s", q, batch, r->str + 3));
  freeReplyObject(r);
  w = worker(q);
  itest_wait_batch(c, q, batch, 30);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 1);
  itest_stop_ok(w);
  redisFree(c);
}

static const sl_test tests[] = {
    {"old_delayed_member", test_old_delayed_member, 60},
    {"cancel_interrupted", test_cancel_interrupted, 300},
    {"abort_interrupted", test_abort_interrupted, 300},
    {"cancel_cli_killed", test_cancel_cli_killed, 300},
    {"resume_cli_killed", test_resume_cli_killed, 300},
    {"cancel_own_delayed", test_cancel_own_delayed, 120},
    {"resume_interrupted", test_resume_interrupted, 300},
    {"batches_paging", test_batches_paging, 120},
    {"batches_index_trimmed", test_batches_index_trimmed, 120},
    {"batches_by_status", test_batches_by_status, 180},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
