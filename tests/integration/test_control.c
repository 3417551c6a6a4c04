/*
 * Controlling running batches with two workers busy: cancel, pause and
 * resume keep every counter exact and lose nothing; a cancel also ends
 * items parked by a pause or scheduled for later, at once.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

#define SLACK_MS 50 /* items handed to a worker just before the call may start one round trip later */

static long long wall_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *make_batch(const char *q, const char *name, int n, const char *payload, const char *extra) {
  static char id[64];
  const char *path = itest_path(name);
  size_t cap = (size_t)n * 128;
  char *buf = malloc(cap);
  size_t len = 0;
  char *out = NULL;

  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":%s%s}\n", payload, extra);
  itest_write(path, buf, len);
  free(buf);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 60), ==, 0);
  }
  snprintf(id, sizeof(id), "%.26s", out);
  free(out);
  return id;
}

static int op(const char *q, const char *what, const char *batch) {
  const char *args[] = {what, "--redis", itest_url(), "--queue", q, batch, NULL};

  return itest_run(args, NULL, NULL, 30);
}

/* The latest started_at among the results, and how many there are. */
static long long last_start(redisContext *c, const char *q, const char *batch, long long *count) {
  redisReply *r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  long long last = 0;

  *count = (long long)r->elements;
  for (size_t i = 0; i < r->elements; i++) {
    cJSON *j = cJSON_Parse(r->element[i]->str);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "started_at");

    if (cJSON_IsNumber(st) && (long long)st->valuedouble > last)
      last = (long long)st->valuedouble;
    cJSON_Delete(j);
  }
  freeReplyObject(r);
  return last;
}

/* Entries parked by a pause in the batch's own stream. */
static long long parked(redisContext *c, const char *q, const char *batch) {
  redisReply *r = itest_cmd(c, "XLEN sluice:{%s}:b:%s:p", q, batch);
  long long n = r->integer;

  freeReplyObject(r);
  return n;
}

/* Items of the batch (alone in queue q) that are done or parked by its
 * pause: once this reaches total, nothing of it is queued, running or
 * held, and nothing can run while the pause lasts. */
static long long settled(redisContext *c, const char *q, const char *batch) {
  redisReply *r = itest_cmd(c, "XLEN sluice:{%s}:s:normal", q);
  long long queued = r->integer;

  freeReplyObject(r);
  if (queued > 0 || itest_pending(c, q) > 0)
    return -1;
  return itest_batch_num(c, q, batch, "done") + parked(c, q, batch);
}

static void test_cancel_mid_batch(void) {
  const char *q = itest_queue("cancel");
  redisContext *c = itest_conn();
  char batch[64];
  pid_t w1;
  pid_t w2;
  long long t_cancel;
  long long count;
  long long t0 = itest_ms();

  snprintf(batch, sizeof(batch), "%s", make_batch(q, "c.jsonl", 400, "{\"ms\":20}", ""));
  w1 = itest_worker(q, 10);
  w2 = itest_worker(q, 10);
  while (itest_batch_num(c, q, batch, "done") < 100) {
    CHECK(itest_ms() - t0 < 30000);
    usleep(5000);
  }
  CHECK_INT(op(q, "cancel", batch), ==, 0);
  t_cancel = wall_ms();
  itest_wait_batch(c, q, batch, 30);
  itest_stop_ok(w1);
  itest_stop_ok(w2);
  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, 400);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 400);
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, 0);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded") + itest_batch_num(c, q, batch, "cancelled"), ==, 400);
  CHECK_INT(itest_batch_num(c, q, batch, "cancelled"), >, 0);
  CHECK_INT(last_start(c, q, batch, &count), <=, t_cancel + SLACK_MS);
  CHECK_INT(count, ==, 400); /* one results line per item, cancelled ones included */
  itest_check_status_index(c, q);
  redisFree(c);
}

static void test_pause_resume(void) {
  const char *q = itest_queue("pause");
  redisContext *c = itest_conn();
  char batch[64];
  pid_t w1;
  pid_t w2;
  long long t_pause;
  long long done_a;
  long long count;
  long long t0 = itest_ms();
  redisReply *r;

  snprintf(batch, sizeof(batch), "%s", make_batch(q, "p.jsonl", 300, "{\"ms\":20}", ""));
  w1 = itest_worker(q, 10);
  w2 = itest_worker(q, 10);
  while (itest_batch_num(c, q, batch, "done") < 50) {
    CHECK(itest_ms() - t0 < 30000);
    usleep(5000);
  }
  CHECK_INT(op(q, "pause", batch), ==, 0);
  t_pause = wall_ms();
  /* The running items end and the workers park every item they meet. */
  ITEST_WAIT_INT(settled(c, q, batch), ==, 300, 20000, "every item of the paused batch done or parked");
  done_a = itest_batch_num(c, q, batch, "done");
  CHECK_INT(done_a, <, 300);
  CHECK_INT(parked(c, q, batch), ==, 300 - done_a);
  CHECK_INT(last_start(c, q, batch, &count), <=, t_pause + SLACK_MS);
  CHECK_INT(count, ==, done_a);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, batch);
  CHECK_STR(r->str, "paused");
  freeReplyObject(r);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, done_a); /* nothing ran while paused */
  CHECK_INT(op(q, "resume", batch), ==, 0);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w1);
  itest_stop_ok(w2);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 300);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 300);
  last_start(c, q, batch, &count);
  CHECK_INT(count, ==, 300);
  r = itest_cmd(c, "EXISTS sluice:{%s}:b:%s:p", q, batch);
  CHECK_INT(r->integer, ==, 0);
  freeReplyObject(r);
  itest_check_status_index(c, q);
  redisFree(c);
}

/* Items scheduled for later and items parked by a pause end at once when
 * their batch is cancelled, with no worker running. */
static void test_cancel_scheduled_and_parked(void) {
  const char *q = itest_queue("cancelsched");
  redisContext *c = itest_conn();
  char batch[64];
  redisReply *r;

  snprintf(batch, sizeof(batch), "%s", make_batch(q, "s.jsonl", 50, "{\"ms\":1}", ",\"delay_ms\":600000"));
  r = itest_cmd(c, "ZCARD sluice:{%s}:delayed", q);
  CHECK_INT(r->integer, ==, 50);
  freeReplyObject(r);
  CHECK_INT(op(q, "pause", batch), ==, 0);
  CHECK_INT(op(q, "cancel", batch), ==, 0);
  CHECK_INT(itest_batch_num(c, q, batch, "cancelled"), ==, 50);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 50);
  CHECK(itest_batch_num(c, q, batch, "finished_at") > 0);
  r = itest_cmd(c, "ZCARD sluice:{%s}:delayed", q);
  CHECK_INT(r->integer, ==, 0);
  freeReplyObject(r);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 7", q, batch);
  CHECK_CONTAINS(r->str, "\"status\":\"cancelled\"");
  freeReplyObject(r);
  itest_check_status_index(c, q);
  redisFree(c);
}

/* --weights 6,3,1 with all three priorities saturated: low items start
 * while high ones are still waiting, in about their share. */
static void test_weighted_priorities(void) {
  const char *q = itest_queue("weights");
  const char *path = itest_path("w.jsonl");
  redisContext *c = itest_conn();
  static const char *const prio[3] = {"high", "normal", "low"};
  size_t cap = 300 * 128;
  char *buf = malloc(cap);
  size_t len = 0;
  char batch[64];
  char *out = NULL;
  long long max_high = 0;
  long long min_low = 0;
  int low_in_first_100 = 0;
  long long starts[300];
  int kinds[300];
  size_t n = 0;
  pid_t w;
  redisReply *r;

  for (int i = 0; i < 300; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"id\":\"%s-%d\",\"type\":\"sleep\",\"priority\":\"%s\",\"payload\":{\"ms\":3}}\n",
                            prio[i % 3], i, prio[i % 3]);
  itest_write(path, buf, len);
  free(buf);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 60), ==, 0);
    snprintf(batch, sizeof(batch), "%.26s", out);
    free(out);
  }
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "2", "--weights", "6,3,1",
                          "--quiet", NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  for (size_t i = 0; i < r->elements; i++) {
    cJSON *j = cJSON_Parse(r->element[i]->str);
    const char *id = cJSON_GetObjectItemCaseSensitive(j, "id")->valuestring;
    long long st = (long long)cJSON_GetObjectItemCaseSensitive(j, "started_at")->valuedouble;

    kinds[n] = id[0] == 'h' ? 0 : id[0] == 'n' ? 1 : 2;
    starts[n++] = st;
    if (id[0] == 'h' && st > max_high)
      max_high = st;
    if (id[0] == 'l' && (min_low == 0 || st < min_low))
      min_low = st;
    cJSON_Delete(j);
  }
  freeReplyObject(r);
  CHECK(min_low > 0);
  CHECK_INT(min_low, <, max_high); /* low did not wait for every high item */
  /* Among the first 100 starts, low has roughly its 10% share. */
  for (int k = 0; k < 100; k++) {
    size_t best = 0;

    for (size_t i = 1; i < n; i++) {
      if (starts[i] < starts[best])
        best = i;
    }
    low_in_first_100 += kinds[best] == 2;
    starts[best] = 1LL << 62;
  }
  CHECK_INT(low_in_first_100, >=, 5);
  CHECK_INT(low_in_first_100, <=, 20);
  redisFree(c);
}

/* sluice stats: depth by priority, delayed, workers, throughput, limits. */
static void test_stats(void) {
  const char *q = itest_queue("stats");
  const char *path = itest_path("st.jsonl");
  static const char *const prio[3] = {"high", "normal", "low"};
  redisContext *c = itest_conn();
  char buf[8192];
  size_t len = 0;
  char batch[64];
  char *out = NULL;
  cJSON *j;
  pid_t w;

  for (int i = 0; i < 30; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"noop\",\"priority\":\"%s\",\"payload\":null}\n",
                            prio[i % 3]);
  for (int i = 0; i < 4; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"noop\",\"payload\":null,\"delay_ms\":600000}\n");
  itest_write(path, buf, len);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 60), ==, 0);
    snprintf(batch, sizeof(batch), "%.26s", out);
    free(out);
  }
  {
    const char *args[] = {"limit", "set", "api", "5/s", "--redis", itest_url(), "--queue", q, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
  }
  {
    const char *args[] = {"stats", "--json", "--redis", itest_url(), "--queue", q, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
  }
  j = cJSON_Parse(out);
  free(out);
  CHECK(j != NULL);
  for (int i = 0; i < 3; i++)
    CHECK_INT(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, prio[i]), "queued")->valuedouble, ==, 10);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "queued")->valuedouble, ==, 30);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "running")->valuedouble, ==, 0);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "delayed")->valuedouble, ==, 4);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "ended_last_minute")->valuedouble, ==, 0);
  CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "limits")), ==, 1);
  cJSON_Delete(j);
  w = itest_worker(q, 10);
  ITEST_WAIT_INT(itest_batch_num(c, q, batch, "done"), >=, 30, 20000, "the 30 items to run");
  itest_wait_worker(c, q, w, NULL, 0, 10000); /* registered in the fleet */
  {
    const char *args[] = {"stats", "--json", "--redis", itest_url(), "--queue", q, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
  }
  j = cJSON_Parse(out);
  free(out);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "queued")->valuedouble, ==, 0);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "ended_last_minute")->valuedouble, >=, 30);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "workers")->valuedouble, ==, 1);
  cJSON_Delete(j);
  itest_stop_ok(w);
  redisFree(c);
}

/* How many of the dedupe keys kFROM..kTO queue q still holds. */
static long long dedupe_keys(redisContext *c, const char *q, int from, int to) {
  long long n = 0;

  for (int i = from; i <= to; i++) {
    redisReply *r = itest_cmd(c, "EXISTS sluice:{%s}:dd:k%d", q, i);

    n += r->integer;
    freeReplyObject(r);
  }
  return n;
}

/* Dedupe: an item whose key was seen in the queue within the TTL is
 * skipped at submit (reported, not counted); after the TTL it goes in. */
static void test_dedupe(void) {
  const char *q = itest_queue("dedupe");
  char p1[600];
  char p2[600];
  redisContext *c = itest_conn();
  char buf[4096];
  size_t len = 0;
  char *out = NULL;
  char *err = NULL;
  char b2[64];
  cJSON *j;
  pid_t w;

  snprintf(p1, sizeof(p1), "%s", itest_path("d1.jsonl"));
  snprintf(p2, sizeof(p2), "%s", itest_path("d2.jsonl"));
  for (int i = 1; i <= 5; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"id\":\"a%d\",\"type\":\"noop\",\"payload\":null,\"dedupe\":\"k%d\"}\n", i, i);
  itest_write(p1, buf, len);
  len = 0;
  for (int i = 3; i <= 8; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"id\":\"b%d\",\"type\":\"noop\",\"payload\":null,\"dedupe\":\"k%d\"}\n", i, i);
  /* the same key twice in one batch: the second is skipped too */
  len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"id\":\"b8again\",\"type\":\"noop\",\"payload\":null,\"dedupe\":\"k8\"}\n");
  itest_write(p2, buf, len);
  {
    const char *args[] = {"submit", "--dedupe-ttl", "2s", "--redis", itest_url(), "--queue", q, p1, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
  }
  {
    const char *args[] = {"submit", "--json", "--dedupe-ttl", "2s", "--redis", itest_url(), "--queue", q, p2, NULL};

    CHECK_INT(itest_run(args, &out, &err, 30), ==, 0);
  }
  CHECK_CONTAINS(err, "4 of 7 items skipped");
  j = cJSON_Parse(out);
  CHECK(j != NULL);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "submitted")->valuedouble, ==, 3);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "skipped")->valuedouble, ==, 4);
  CHECK_CONTAINS(out, "\"b3\"");
  CHECK_CONTAINS(out, "\"b5\"");
  CHECK_CONTAINS(out, "\"b8again\"");
  CHECK(strstr(out, "\"b6\"") == NULL);
  snprintf(b2, sizeof(b2), "%s", cJSON_GetObjectItemCaseSensitive(j, "batch")->valuestring);
  cJSON_Delete(j);
  free(out);
  free(err);
  w = itest_worker(q, 10);
  itest_wait_batch(c, q, b2, 20);
  CHECK_INT(itest_batch_num(c, q, b2, "total"), ==, 3);
  CHECK_INT(itest_batch_num(c, q, b2, "succeeded"), ==, 3);
  {
    const char *args[] = {"results", "--redis", itest_url(), "--queue", q, b2, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "\"b6\"");
    CHECK_CONTAINS(out, "\"b8\"");
    CHECK(strstr(out, "\"b3\"") == NULL);
    free(out);
  }
  /* After the TTL (2 s) the keys are forgotten. */
  ITEST_WAIT_INT(dedupe_keys(c, q, 1, 5), ==, 0, 10000, "the dedupe keys k1-k5 to expire");
  {
    const char *args[] = {"submit", "--json", "--redis", itest_url(), "--queue", q, p1, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "\"skipped\":0");
    free(out);
  }
  itest_stop_ok(w);
  redisFree(c);
}

/* Pause while two workers run (items they meet are parked), then cancel:
 * the parked items are counted cancelled at once, without a resume. */
static void test_cancel_parked(void) {
  const char *q = itest_queue("cancelparked");
  redisContext *c = itest_conn();
  char batch[64];
  pid_t w1;
  pid_t w2;
  long long t0 = itest_ms();
  redisReply *r;
  long long n_parked;

  snprintf(batch, sizeof(batch), "%s", make_batch(q, "cp.jsonl", 200, "{\"ms\":20}", ""));
  w1 = itest_worker(q, 10);
  w2 = itest_worker(q, 10);
  while (itest_batch_num(c, q, batch, "done") < 30) {
    CHECK(itest_ms() - t0 < 30000);
    usleep(5000);
  }
  /* Both workers held (SIGSTOP) while the pause runs, so the batch cannot
   * end first however slow this machine is (200 items of 20 ms take 0.2 s
   * on 20 slots: a pause from a second process lost that race under ASan). */
  kill(w1, SIGSTOP);
  kill(w2, SIGSTOP);
  CHECK_INT(op(q, "pause", batch), ==, 0);
  kill(w1, SIGCONT);
  kill(w2, SIGCONT);
  /* The workers meet the rest and park it (idle ones after their 1 s block). */
  ITEST_WAIT_INT(settled(c, q, batch), ==, 200, 20000, "every item of the paused batch done or parked");
  n_parked = parked(c, q, batch);
  CHECK_INT(n_parked, >, 0);
  CHECK_INT(op(q, "cancel", batch), ==, 0);
  itest_wait_batch(c, q, batch, 10);
  itest_stop_ok(w1);
  itest_stop_ok(w2);
  CHECK_INT(itest_batch_num(c, q, batch, "cancelled"), ==, n_parked); /* nothing else was left */
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded") + itest_batch_num(c, q, batch, "cancelled"), ==, 200);
  r = itest_cmd(c, "EXISTS sluice:{%s}:b:%s:p", q, batch);
  CHECK_INT(r->integer, ==, 0);
  freeReplyObject(r);
  itest_check_status_index(c, q);
  redisFree(c);
}

/* cancel --abort stops running items at their workers' next heartbeat and
 * counts them cancelled; the worker goes on serving. */
static void test_cancel_abort(void) {
  const char *q = itest_queue("abort");
  redisContext *c = itest_conn();
  char batch[64];
  char b2[64];
  pid_t w;
  long long t0 = itest_ms();
  long long t_cancel;
  redisReply *r;

  snprintf(batch, sizeof(batch), "%s", make_batch(q, "ab.jsonl", 4, "{\"ms\":20000}", ",\"timeout_ms\":60000"));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "4", "--visibility", "1500",
                          "--quiet", NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  for (;;) {
    r = itest_cmd(c, "XPENDING sluice:{%s}:s:normal workers", q);
    if (r->element[0]->integer == 4) {
      freeReplyObject(r);
      break;
    }
    freeReplyObject(r);
    CHECK(itest_ms() - t0 < 10000);
    usleep(20000);
  }
  {
    const char *args[] = {"cancel", "--abort", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
  }
  t_cancel = itest_ms();
  itest_wait_batch(c, q, batch, 10);
  CHECK(itest_ms() - t_cancel < 2000); /* a heartbeat is every 500 ms */
  CHECK_INT(itest_batch_num(c, q, batch, "cancelled"), ==, 4);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 4);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 0", q, batch);
  CHECK_CONTAINS(r->str, "aborted while running");
  freeReplyObject(r);
  /* The worker's slots are free again: a new batch runs at once. */
  snprintf(b2, sizeof(b2), "%s", make_batch(q, "ab2.jsonl", 4, "{\"ms\":1}", ""));
  itest_wait_batch(c, q, b2, 10);
  itest_stop_ok(w);
  itest_check_status_index(c, q);
  redisFree(c);
}

/* sluice CMD BATCH: the exit code is want and stderr holds said. */
static void expect_op(const char *q, const char *what, const char *batch, int want, const char *said) {
  const char *args[] = {what, "--redis", itest_url(), "--queue", q, batch, NULL};
  char *err = NULL;
  int rc = itest_run(args, NULL, &err, 30);

  if (rc != want || strstr(err != NULL ? err : "", said) == NULL)
    sl_test_fail(__FILE__, __LINE__, "sluice %s: exit %d (expected %d, saying \"%s\"): %s", what, rc, want, said,
                 err != NULL ? err : "");
  free(err);
}

/* cancel, pause and resume of a batch whose state does not allow them say
 * so and exit 1, and change nothing: a completed batch keeps its counters
 * and status; a scheduled one is paused once, resumed once, cancelled once.
 * A resume of a batch that is not paused says so without claiming a resume
 * (exit 0: it may finish an interrupted resume, see integration.steps). */
static void test_refused_controls(void) {
  const char *q = itest_queue("refused");
  redisContext *c = itest_conn();
  char ended[64];
  char held[64];
  pid_t w;

  snprintf(ended, sizeof(ended), "%s", make_batch(q, "e.jsonl", 3, "{\"ms\":1}", ""));
  w = itest_worker(q, 4);
  itest_wait_batch(c, q, ended, 30);
  itest_stop_ok(w);
  expect_op(q, "cancel", ended, 1, "has completed: nothing to cancel");
  expect_op(q, "pause", ended, 1, "has completed: nothing to pause");
  expect_op(q, "resume", ended, 1, "has completed: nothing to resume");
  CHECK_INT(itest_batch_num(c, q, ended, "succeeded"), ==, 3);
  CHECK_INT(itest_batch_num(c, q, ended, "cancelled"), ==, 0);
  {
    redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, ended);

    CHECK_STR(r->str, "completed");
    freeReplyObject(r);
  }
  /* scheduled for later: no worker runs it meanwhile */
  snprintf(held, sizeof(held), "%s", make_batch(q, "h.jsonl", 3, "{\"ms\":1}", ",\"delay_ms\":600000"));
  expect_op(q, "resume", held, 0, "is not paused (it is queued)");
  expect_op(q, "pause", held, 0, "paused; running items finish");
  expect_op(q, "pause", held, 1, "is paused already: nothing to pause");
  expect_op(q, "resume", held, 0, "resumed");
  expect_op(q, "cancel", held, 0, "cancelled; running items finish");
  expect_op(q, "cancel", held, 1, "was cancelled already and has ended: nothing to cancel");
  expect_op(q, "resume", held, 1, "was cancelled: nothing to resume");
  expect_op(q, "pause", held, 1, "was cancelled: nothing to pause");
  CHECK_INT(itest_batch_num(c, q, held, "cancelled"), ==, 3);
  itest_check_status_index(c, q);
  redisFree(c);
}

static const sl_test tests[] = {
    {"cancel_abort", test_cancel_abort, 60},
    {"cancel_parked", test_cancel_parked, 60},
    {"dedupe", test_dedupe, 60},
    {"stats", test_stats, 60},
    {"weighted_priorities", test_weighted_priorities, 60},
    {"cancel_mid_batch", test_cancel_mid_batch, 60},
    {"pause_resume", test_pause_resume, 90},
    {"cancel_scheduled_and_parked", test_cancel_scheduled_and_parked, 30},
    {"refused_controls", test_refused_controls, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
