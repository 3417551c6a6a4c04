/*
 * Fault tests with real processes and a real redis-server: workers killed
 * with SIGKILL in a storm, Redis restarted under load (AOF, fsync always),
 * a poison item that kills every worker it reaches, flaky work that needs
 * retries, a graceful drain, and two workers racing to complete the same
 * items. Every test ends by checking the counters and results are exact.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "devredis.h"
#include "itest.h"

#define MAX_WORKERS 8

/* Wall clock, ms since the epoch (results carry wall-clock times). */
static long long sl__test_wall_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts `sluice worker` with the common test options plus extra ones. */
static pid_t worker(const char *url, const char *q, const char *conc, const char *vis, const char *extra1,
                    const char *extra2, const char *errpath) {
  const char *args[] = {"worker", "--redis", url, "--queue", q, "--concurrency", conc, "--visibility", vis,
                        "--block-ms", "300", "--quiet", extra1, extra2, NULL};

  return itest_spawn(args, NULL, errpath);
}

static const char *submit_file(const char *url, const char *q, const char *path, const char *opt1,
                               const char *opt2) {
  static char id[64];
  const char *args[] = {"submit", "--redis", url, "--queue", q, path, opt1, opt2, NULL};
  char *out = NULL;
  char *err = NULL;

  if (itest_run(args, &out, &err, 60) != 0)
    sl_test_fail(__FILE__, __LINE__, "submit failed: %s", err);
  snprintf(id, sizeof(id), "%.26s", out);
  free(out);
  free(err);
  return id;
}

/* Checks a finished batch: exact counters, one result per item, nothing
 * left in the streams, the pending lists or the delayed set. Returns the
 * number of items with more than one attempt. */
static long check_exact(redisContext *c, const char *q, const char *batch, long total, long want_failed) {
  static const char *const s[3] = {"high", "normal", "low"};
  redisReply *r;
  long again = 0;

  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, total);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, total);
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, want_failed);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, total - want_failed);
  r = itest_cmd(c, "HLEN sluice:{%s}:b:%s:r", q, batch);
  CHECK_INT(r->integer, ==, total);
  freeReplyObject(r);
  for (int i = 0; i < 3; i++) {
    r = itest_cmd(c, "XLEN sluice:{%s}:s:%s", q, s[i]);
    CHECK_INT(r->integer, ==, 0);
    freeReplyObject(r);
    r = itest_cmd(c, "XPENDING sluice:{%s}:s:%s workers", q, s[i]);
    CHECK_INT(r->element[0]->integer, ==, 0);
    freeReplyObject(r);
  }
  r = itest_cmd(c, "ZCARD sluice:{%s}:delayed", q);
  CHECK_INT(r->integer, ==, 0);
  freeReplyObject(r);
  /* Results: every line parses, and count the items that ran again. */
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  for (size_t i = 0; i < r->elements; i++) {
    cJSON *j = cJSON_Parse(r->element[i]->str);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "attempts");

    CHECK(j != NULL && cJSON_IsNumber(a));
    if (a->valuedouble > 1)
      again++;
    cJSON_Delete(j);
  }
  freeReplyObject(r);
  return again;
}

/* 20,000 sleep items (5-50 ms), three workers, visibility 2 s; every second
 * a random worker is killed with SIGKILL and a new one started. */
static void test_kill_storm(void) {
  const char *q = itest_queue("storm");
  const char *path = itest_path("storm.jsonl");
  redisContext *c = itest_conn();
  long n = 20000;
  size_t cap = (size_t)n * 64;
  char *buf = malloc(cap);
  size_t len = 0;
  pid_t w[3];
  char batch[64];
  long long t0;
  long long last_kill;
  int kills = 0;
  long again;

  srand((unsigned)getpid());
  for (long i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":%d}}\n", 5 + rand() % 46);
  itest_write(path, buf, len);
  free(buf);
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  for (int i = 0; i < 3; i++)
    w[i] = worker(itest_url(), q, "50", "2000", NULL, NULL, NULL);
  t0 = last_kill = itest_ms();
  for (;;) {
    if (itest_batch_num(c, q, batch, "done") >= n)
      break;
    CHECK(itest_ms() - t0 < 150000);
    if (itest_ms() - last_kill >= 1000) {
      int k = rand() % 3;

      kill(w[k], SIGKILL);
      waitpid(w[k], NULL, 0);
      w[k] = worker(itest_url(), q, "50", "2000", NULL, NULL, NULL);
      kills++;
      last_kill = itest_ms();
    }
    usleep(20000);
  }
  /* The consumers of killed workers leave the group once nothing is pending
   * for them and their registration expired (3 beats + 1 s); the live
   * workers' stay. */
  {
    long long t1 = itest_ms();

    for (;;) {
      redisReply *r = itest_cmd(c, "XINFO CONSUMERS sluice:{%s}:s:normal workers", q);
      size_t nc = r->elements;

      for (size_t i = 0; i < r->elements; i++)
        CHECK_INT(r->element[i]->element[3]->integer, ==, 0); /* nothing pending anywhere */
      freeReplyObject(r);
      if (nc <= 3)
        break;
      CHECK(itest_ms() - t1 < 15000);
      usleep(200000);
    }
  }
  for (int i = 0; i < 3; i++)
    CHECK_INT(WEXITSTATUS(itest_stop(w[i])), ==, 0);
  again = check_exact(c, q, batch, n, 0);
  printf("    kill storm: %d workers killed with SIGKILL in %.1f s; %ld of %ld items ran more than once "
         "(taken over after their worker died); counters exact\n",
         kills, (double)(itest_ms() - t0) / 1000.0, again, n);
  CHECK(kills >= 2);
  redisFree(c);
}

/* Redis restarted twice in the middle of a batch (appendonly, fsync
 * always): the batch completes with exact counters, and a submit made
 * between the restarts is not lost. */
static void test_redis_restart(void) {
  sl_devredis d;
  char err[512];
  const char *extra[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
  const char *path = itest_path("restart.jsonl");
  const char *q = "restart";
  long n = 3000;
  size_t cap = (size_t)n * 64;
  char *buf = malloc(cap);
  size_t len = 0;
  char b1[64];
  char b2[64];
  pid_t w1;
  pid_t w2;
  redisContext *c;
  long long t0;

  for (long i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":20}}\n");
  itest_write(path, buf, len);
  free(buf);
  if (sl_devredis_start(&d, extra, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url); /* persisted in the AOF across the restarts */
  snprintf(b1, sizeof(b1), "%s", submit_file(d.url, q, path, NULL, NULL));
  w1 = worker(d.url, q, "20", "3000", NULL, NULL, NULL);
  w2 = worker(d.url, q, "20", "3000", NULL, NULL, NULL);
  for (int round = 0; round < 2; round++) {
    usleep(700000);
    sl_devredis_kill(&d, SIGKILL);
    usleep(300000);
    if (sl_devredis_restart(&d, extra, err, sizeof(err)) != 0)
      sl_test_fail(__FILE__, __LINE__, "%s", err);
    if (round == 0)
      snprintf(b2, sizeof(b2), "%s", submit_file(d.url, q, path, NULL, NULL));
  }
  c = redisConnectUnix(d.sock);
  CHECK(c != NULL && c->err == 0);
  t0 = itest_ms();
  while (itest_batch_num(c, q, b1, "done") < n || itest_batch_num(c, q, b2, "done") < n) {
    CHECK(itest_ms() - t0 < 90000);
    usleep(50000);
  }
  CHECK_INT(WEXITSTATUS(itest_stop(w1)), ==, 0);
  CHECK_INT(WEXITSTATUS(itest_stop(w2)), ==, 0);
  check_exact(c, q, b1, n, 0);
  check_exact(c, q, b2, n, 0);
  redisFree(c);
  sl_devredis_stop(&d);
}

/* One item that kills its worker on every delivery ends in the dead
 * letters after --max-deliveries, while the other 1,000 items succeed. */
static void test_poison(void) {
  const char *q = itest_queue("poison");
  const char *path = itest_path("poison.jsonl");
  redisContext *c = itest_conn();
  size_t cap = 1001 * 64;
  char *buf = malloc(cap);
  size_t len = 0;
  pid_t w[2];
  char batch[64];
  long long t0;
  int restarts = 0;
  redisReply *r;

  len += (size_t)snprintf(buf + len, cap - len, "{\"id\":\"bomb\",\"type\":\"crash\",\"payload\":null}\n");
  for (int i = 0; i < 1000; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":2}}\n");
  itest_write(path, buf, len);
  free(buf);
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  for (int i = 0; i < 2; i++)
    w[i] = worker(itest_url(), q, "20", "1000", "--dev-crash", "--max-deliveries=3", NULL);
  t0 = itest_ms();
  while (itest_batch_num(c, q, batch, "done") < 1001) {
    CHECK(itest_ms() - t0 < 60000);
    for (int i = 0; i < 2; i++) {
      int status;

      if (waitpid(w[i], &status, WNOHANG) == w[i]) {
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL); /* the bomb */
        w[i] = worker(itest_url(), q, "20", "1000", "--dev-crash", "--max-deliveries=3", NULL);
        restarts++;
      }
    }
    usleep(20000);
  }
  for (int i = 0; i < 2; i++)
    itest_stop(w[i]);
  check_exact(c, q, batch, 1001, 1);
  CHECK_INT(restarts, >=, 3);
  CHECK_INT(restarts, <=, 4);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 0", q, batch);
  CHECK_CONTAINS(r->str, "\"status\":\"failed\"");
  CHECK_CONTAINS(r->str, "poison: delivered 3 times without finishing (max-deliveries 3)");
  freeReplyObject(r);
  r = itest_cmd(c, "XREVRANGE sluice:{%s}:dead + - COUNT 1", q);
  CHECK_INT(r->elements, ==, 1);
  freeReplyObject(r);
  redisFree(c);
}

/* 2,000 items that fail 30% of their attempts, max_attempts 10: all
 * succeed, and the attempts in the results add up to the attempts the
 * workers ran (successes plus retries). */
static void test_flaky(void) {
  const char *q = itest_queue("flaky");
  const char *path = itest_path("flaky.jsonl");
  redisContext *c = itest_conn();
  long n = 2000;
  size_t cap = (size_t)n * 80;
  char *buf = malloc(cap);
  size_t len = 0;
  char batch[64];
  pid_t w;
  long long attempts = 0;
  long long ran = 0;
  long with_errors = 0;
  redisReply *r;

  for (long i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":1,\"fail_rate\":0.3}}\n");
  itest_write(path, buf, len);
  free(buf);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, "--max-attempts", "10", "--backoff", "5",
                          "--backoff-max", "50", path, NULL};
    char *out = NULL;

    CHECK_INT(itest_run(args, &out, NULL, 60), ==, 0);
    snprintf(batch, sizeof(batch), "%.26s", out);
    free(out);
  }
  w = worker(itest_url(), q, "100", "3000", NULL, NULL, NULL);
  itest_wait_batch(c, q, batch, 120);
  usleep(1500000); /* one more beat, so the registry has the final figures */
  check_exact(c, q, batch, n, 0);
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  for (size_t i = 0; i < r->elements; i++) {
    cJSON *j = cJSON_Parse(r->element[i]->str);
    int a = (int)cJSON_GetObjectItemCaseSensitive(j, "attempts")->valuedouble;
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(j, "errors");

    attempts += a;
    CHECK(a >= 1 && a <= 10);
    if (a > 1) {
      /* the earlier errors travel with the item: the last five */
      CHECK(cJSON_IsArray(errs));
      CHECK_INT(cJSON_GetArraySize(errs), ==, a - 1 < 5 ? a - 1 : 5);
      CHECK_CONTAINS(cJSON_GetArrayItem(errs, 0)->valuestring, "simulated failure");
      with_errors++;
    }
    cJSON_Delete(j);
  }
  freeReplyObject(r);
  r = itest_cmd(c, "KEYS sluice:{%s}:w:*", q);
  CHECK_INT(r->elements, ==, 1);
  {
    redisReply *info = itest_cmd(c, "HGET %s info", r->element[0]->str);
    cJSON *j = cJSON_Parse(info->str);

    ran = (long long)(cJSON_GetObjectItemCaseSensitive(j, "succeeded")->valuedouble +
                      cJSON_GetObjectItemCaseSensitive(j, "retried")->valuedouble +
                      cJSON_GetObjectItemCaseSensitive(j, "failed")->valuedouble);
    cJSON_Delete(j);
    freeReplyObject(info);
  }
  freeReplyObject(r);
  CHECK_INT(attempts, ==, ran);
  CHECK_INT(attempts, >, n); /* with 30% failures some items needed retries */
  CHECK_INT(with_errors, >, 0);
  itest_stop(w);
  redisFree(c);
}

/* SIGTERM during a batch of 2-second items: the running items finish, the
 * worker exits 0, the items it had not started run on another worker. A
 * drain timeout shorter than the items gives them back instead. */
static void test_drain(void) {
  const char *q = itest_queue("drain");
  const char *path = itest_path("drain.jsonl");
  redisContext *c = itest_conn();
  char buf[4096];
  size_t len = 0;
  char batch[64];
  pid_t a;
  pid_t b;
  int status;
  long long t0;
  redisReply *r;
  char apid[32];
  int by_a = 0;

  for (int i = 0; i < 12; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":2000}}\n");
  itest_write(path, buf, len);
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  a = worker(itest_url(), q, "4", "5000", "--drain-timeout", "10000", NULL);
  usleep(500000);
  kill(a, SIGTERM);
  t0 = itest_ms();
  waitpid(a, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK_INT(WEXITSTATUS(status), ==, 0);
  CHECK(itest_ms() - t0 < 3000); /* the 2 s items finished, not the drain timeout */
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 4);
  /* Nothing of A is pending: what it took but had not started was given back. */
  r = itest_cmd(c, "XPENDING sluice:{%s}:s:normal workers", q);
  CHECK_INT(r->element[0]->integer, ==, 0);
  freeReplyObject(r);
  b = worker(itest_url(), q, "8", "5000", NULL, NULL, NULL);
  itest_wait_batch(c, q, batch, 20);
  itest_stop(b);
  check_exact(c, q, batch, 12, 0);
  snprintf(apid, sizeof(apid), ":%d:", (int)a);
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  for (size_t i = 0; i < r->elements; i++)
    by_a += strstr(r->element[i]->str, apid) != NULL;
  freeReplyObject(r);
  CHECK_INT(by_a, ==, 4);

  /* Drain timeout shorter than the items: exit 0 at the deadline; the
   * items are given back and another worker runs them at once. */
  {
    char b2[64];

    len = 0;
    for (int i = 0; i < 3; i++)
      len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":3000}}\n");
    itest_write(path, buf, len);
    snprintf(b2, sizeof(b2), "%s", submit_file(itest_url(), q, path, NULL, NULL));
    a = worker(itest_url(), q, "4", "30000", "--drain-timeout", "300", NULL);
    usleep(500000);
    kill(a, SIGTERM);
    t0 = itest_ms();
    waitpid(a, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(itest_ms() - t0 < 2000);
    b = worker(itest_url(), q, "4", "30000", NULL, NULL, NULL);
    /* visibility is 30 s: finishing well before that proves they were given back */
    itest_wait_batch(c, q, b2, 15);
    itest_stop(b);
    check_exact(c, q, b2, 3, 0);
  }
  redisFree(c);
}

/* Two processes complete the same 1,000 items at the same moment, as a
 * zombie worker and the one that took its items over would: every item is
 * counted once, whoever wins. */
static void test_complete_race(void) {
  const char *q = itest_queue("race");
  const char *path = itest_path("race.jsonl");
  redisContext *c = itest_conn();
  size_t cap = 1000 * 48;
  char *buf = malloc(cap);
  size_t len = 0;
  char batch[64];
  redisReply *r;
  char (*eids)[32] = calloc(1000, 32);
  char (*idx)[16] = calloc(1000, 16);
  pid_t kids[2];
  long firsts = 0;

  for (int i = 0; i < 1000; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"noop\",\"payload\":%d}\n", i);
  itest_write(path, buf, len);
  free(buf);
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  r = itest_cmd(c, "FCALL sluice_v1_fetch 3 sluice:{%s}:s:high sluice:{%s}:s:normal sluice:{%s}:s:low workers zombie 1000 sluice:{%s}: %s",
                q, q, q, q, q);
  CHECK_INT(r->elements, ==, 1 + 10 * 1000);
  for (int i = 0; i < 1000; i++) {
    snprintf(eids[i], 32, "%s", r->element[1 + 10 * i + 1]->str);
    snprintf(idx[i], 16, "%s", r->element[1 + 10 * i + 3]->str);
  }
  freeReplyObject(r);
  for (int k = 0; k < 2; k++) {
    kids[k] = fork();
    if (kids[k] == 0) {
      redisContext *kc = itest_conn();
      long mine = 0;

      /* Pipelined, one call per item, as fast as possible. */
      for (int i = 0; i < 1000; i++)
        redisAppendCommand(kc, "FCALL sluice_v1_complete 3 sluice:{%s}:s:high sluice:{%s}:s:normal sluice:{%s}:s:low workers sluice:{%s}: %s 2 %s %s %s %s %s 0 %s %s",
                           q, q, q, q, q, eids[i], batch, idx[i], k == 0 ? "s" : "f",
                           k == 0 ? "{\"status\":\"succeeded\"}" : "{\"status\":\"failed\",\"error\":\"x\"}",
                           k == 0 ? "" : "{\"id\":\"x\",\"type\":\"noop\",\"payload\":null}", "");
      for (int i = 0; i < 1000; i++) {
        redisReply *kr;

        if (redisGetReply(kc, (void **)&kr) != REDIS_OK)
          sl_test_fail(__FILE__, __LINE__, "connection: %s", kc->errstr);
        if (kr->type != REDIS_REPLY_ARRAY)
          sl_test_fail(__FILE__, __LINE__, "complete answered %s", kr->type == REDIS_REPLY_ERROR ? kr->str : "?");
        mine += kr->element[0]->integer;
        freeReplyObject(kr);
      }
      r = itest_cmd(kc, "INCRBY race:%s:firsts %ld", q, mine);
      freeReplyObject(r);
      redisFree(kc);
      _exit(0);
    }
  }
  for (int k = 0; k < 2; k++) {
    int status;

    waitpid(kids[k], &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  r = itest_cmd(c, "GET race:%s:firsts", q);
  firsts = strtol(r->str, NULL, 10);
  freeReplyObject(r);
  CHECK_INT(firsts, ==, 1000); /* each item recorded by exactly one of the two */
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 1000);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded") + itest_batch_num(c, q, batch, "failed"), ==, 1000);
  r = itest_cmd(c, "HLEN sluice:{%s}:b:%s:r", q, batch);
  CHECK_INT(r->integer, ==, 1000);
  freeReplyObject(r);
  free(eids);
  free(idx);
  redisFree(c);
}


/* A worker killed with SIGKILL while running long items: another worker
 * runs them again within the visibility timeout plus a few seconds. */
static void test_takeover_time(void) {
  const char *q = itest_queue("takeover");
  const char *path = itest_path("takeover.jsonl");
  redisContext *c = itest_conn();
  char buf[1024];
  size_t len = 0;
  char batch[64];
  pid_t a;
  pid_t b;
  long long killed_at;
  long long t0;
  redisReply *r;
  double worst = 0;

  for (int i = 0; i < 5; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":1000}}\n");
  itest_write(path, buf, len);
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  a = worker(itest_url(), q, "10", "2000", NULL, NULL, NULL);
  usleep(400000);
  kill(a, SIGKILL);
  waitpid(a, NULL, 0);
  killed_at = sl__test_wall_ms();
  b = worker(itest_url(), q, "10", "2000", NULL, NULL, NULL);
  t0 = itest_ms();
  while (itest_batch_num(c, q, batch, "done") < 5) {
    CHECK(itest_ms() - t0 < 20000);
    usleep(20000);
  }
  itest_stop(b);
  check_exact(c, q, batch, 5, 0);
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  for (size_t i = 0; i < r->elements; i++) {
    cJSON *j = cJSON_Parse(r->element[i]->str);
    double started = cJSON_GetObjectItemCaseSensitive(j, "started_at")->valuedouble;

    CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "attempts")->valuedouble, ==, 2);
    if ((started - (double)killed_at) / 1000.0 > worst)
      worst = (started - (double)killed_at) / 1000.0;
    cJSON_Delete(j);
  }
  freeReplyObject(r);
  printf("    takeover: items of a worker killed with SIGKILL ran again %.2f s after the kill "
         "(visibility 2.0 s)\n", worst);
  CHECK(worst < 2.0 + 3.0);
  redisFree(c);
}

/* An item running far longer than the visibility timeout on a live worker
 * is never taken over: heartbeats keep its claim alive. */
static void test_long_item_kept_alive(void) {
  const char *q = itest_queue("longitem");
  const char *path = itest_path("long.jsonl");
  const char *data = "{\"id\":\"long\",\"type\":\"sleep\",\"payload\":{\"ms\":4000},\"timeout_ms\":60000}\n";
  redisContext *c = itest_conn();
  char batch[64];
  pid_t a;
  pid_t b;
  redisReply *r;

  itest_write(path, data, strlen(data));
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  a = worker(itest_url(), q, "2", "600", NULL, NULL, NULL);
  usleep(300000);
  b = worker(itest_url(), q, "2", "600", NULL, NULL, NULL); /* would take it if it could */
  itest_wait_batch(c, q, batch, 20);
  itest_stop(a);
  itest_stop(b);
  check_exact(c, q, batch, 1, 0);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 0", q, batch);
  CHECK_CONTAINS(r->str, "\"attempts\":1,");
  freeReplyObject(r);
  redisFree(c);
}

/* A worker that stalls (SIGSTOP) past the visibility timeout loses its item
 * to another worker; when it wakes up its heartbeat does not take the item
 * back: it learns it lost it and stops the attempt (fencing). */
static void test_stalled_worker_fenced(void) {
  const char *q = itest_queue("fence");
  const char *path = itest_path("fence.jsonl");
  const char *errpath = itest_path("stalled.err");
  const char *data = "{\"id\":\"slow\",\"type\":\"sleep\",\"payload\":{\"ms\":3000},\"timeout_ms\":60000}\n";
  redisContext *c = itest_conn();
  char batch[64];
  char bpid[32];
  pid_t a;
  pid_t b;
  redisReply *r;
  char *log;

  itest_write(path, data, strlen(data));
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--visibility", "1000",
                          "--block-ms", "300", NULL};

    a = itest_spawn(args, NULL, errpath);
  }
  usleep(400000);
  kill(a, SIGSTOP);
  b = worker(itest_url(), q, "2", "1000", NULL, NULL, NULL);
  usleep(2500000); /* B has taken it over by now */
  kill(a, SIGCONT);
  itest_wait_batch(c, q, batch, 20);
  usleep(500000);
  itest_stop(a);
  itest_stop(b);
  check_exact(c, q, batch, 1, 0);
  snprintf(bpid, sizeof(bpid), ":%d:", (int)b);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 0", q, batch);
  CHECK_CONTAINS(r->str, bpid);              /* B's attempt is the one recorded */
  CHECK_CONTAINS(r->str, "\"attempts\":2,");
  freeReplyObject(r);
  log = itest_read(errpath, NULL);
  CHECK_CONTAINS(log, "was taken over by another worker; stopping this attempt");
  free(log);
  redisFree(c);
}

/* A per-item timeout ends the attempt with an error that says so; it is
 * retryable, and the handler's work is cancelled. */
static void test_timeout(void) {
  const char *q = itest_queue("timeout");
  const char *path = itest_path("timeout.jsonl");
  const char *data = "{\"id\":\"slow\",\"type\":\"sleep\",\"payload\":{\"ms\":5000},\"timeout_ms\":200,"
                     "\"max_attempts\":2,\"backoff_ms\":10}\n";
  redisContext *c = itest_conn();
  char batch[64];
  pid_t w;
  redisReply *r;
  long long t0 = itest_ms();

  itest_write(path, data, strlen(data));
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  w = worker(itest_url(), q, "2", "5000", NULL, NULL, NULL);
  itest_wait_batch(c, q, batch, 20);
  CHECK(itest_ms() - t0 < 4000); /* two 200 ms attempts, not two 5 s sleeps */
  itest_stop(w);
  check_exact(c, q, batch, 1, 1);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 0", q, batch);
  CHECK_CONTAINS(r->str, "\"error\":\"timed out after 200 ms\"");
  CHECK_CONTAINS(r->str, "\"attempts\":2,");
  CHECK_CONTAINS(r->str, "\"errors\":[\"timed out after 200 ms\"]");
  freeReplyObject(r);
  redisFree(c);
}

/* A second signal ends the worker at once; its items are not lost: another
 * worker takes them over. */
static void test_second_signal(void) {
  const char *q = itest_queue("twosig");
  const char *path = itest_path("twosig.jsonl");
  redisContext *c = itest_conn();
  char buf[1024];
  size_t len = 0;
  char batch[64];
  pid_t a;
  pid_t b;
  int status;
  long long t0;

  for (int i = 0; i < 4; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":3000}}\n");
  itest_write(path, buf, len);
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  a = worker(itest_url(), q, "4", "1000", NULL, NULL, NULL);
  usleep(400000);
  kill(a, SIGTERM);
  usleep(100000);
  kill(a, SIGTERM);
  t0 = itest_ms();
  waitpid(a, &status, 0);
  CHECK(itest_ms() - t0 < 1000);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1);
  b = worker(itest_url(), q, "4", "1000", NULL, NULL, NULL);
  itest_wait_batch(c, q, batch, 20);
  itest_stop(b);
  check_exact(c, q, batch, 4, 0);
  redisFree(c);
}

static const sl_test tests[] = {
    {"kill_storm", test_kill_storm, 200},
    {"redis_restart", test_redis_restart, 120},
    {"poison", test_poison, 90},
    {"flaky", test_flaky, 150},
    {"drain", test_drain, 60},
    {"complete_race", test_complete_race, 60},
    {"takeover_time", test_takeover_time, 60},
    {"long_item_kept_alive", test_long_item_kept_alive, 60},
    {"stalled_worker_fenced", test_stalled_worker_fenced, 60},
    {"timeout", test_timeout, 60},
    {"second_signal", test_second_signal, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
