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

/* Starts `sluice worker` with the common test options plus extra ones
 * (either may be NULL); with errpath it logs there, else it runs --quiet. */
static pid_t worker(const char *url, const char *q, const char *conc, const char *vis, const char *extra1,
                    const char *extra2, const char *errpath) {
  const char *args[16] = {"worker", "--redis", url, "--queue", q, "--concurrency", conc, "--visibility", vis,
                          "--block-ms", "300"};
  int k = 11;

  if (errpath == NULL)
    args[k++] = "--quiet";
  if (extra1 != NULL)
    args[k++] = extra1;
  if (extra2 != NULL)
    args[k++] = extra2;
  args[k] = NULL;
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
  redisReply *r;
  long again = 0;

  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, total);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, total);
  if (itest_batch_num(c, q, batch, "failed") != want_failed) {
    /* show a few of the failed items' results lines */
    r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
    for (size_t i = 0, shown = 0; i < r->elements && shown < 5; i++) {
      if (strstr(r->element[i]->str, "\"status\":\"failed\"") != NULL) {
        fprintf(stderr, "    failed: %s\n", r->element[i]->str);
        shown++;
      }
    }
    freeReplyObject(r);
  }
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, want_failed);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, total - want_failed);
  r = itest_cmd(c, "HLEN sluice:{%s}:b:%s:r", q, batch);
  CHECK_INT(r->integer, ==, total);
  freeReplyObject(r);
  itest_check_drained(c, q);
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

/* Entries of queue q's normal stream that no worker has read yet (ended
 * items leave the stream; the others are pending). */
static long long undelivered(redisContext *c, const char *q) {
  redisReply *r = itest_cmd(c, "XLEN sluice:{%s}:s:normal", q);
  long long n = r->integer;

  freeReplyObject(r);
  r = itest_cmd(c, "XPENDING sluice:{%s}:s:normal workers", q);
  n -= r->element[0]->integer;
  freeReplyObject(r);
  return n;
}

/* An item a killed worker held at its death. */
typedef struct taken {
  char worker[128]; /* the killed worker's id */
  long idx;         /* the item's index in the batch */
} taken;

/* connected_clients of INFO clients. */
static long long connected_clients(redisContext *c) {
  redisReply *r = itest_cmd(c, "INFO clients");
  const char *p = r->type == REDIS_REPLY_STRING ? strstr(r->str, "connected_clients:") : NULL;
  long long n = p != NULL ? strtoll(p + 18, NULL, 10) : -1;

  freeReplyObject(r);
  return n;
}

/* The value of field `name` in a stream entry's field list, or NULL. */
static const char *entry_field(const redisReply *fields, const char *name) {
  for (size_t k = 0; k + 1 < fields->elements; k += 2) {
    if (strcmp(fields->element[k]->str, name) == 0)
      return fields->element[k + 1]->str;
  }
  return NULL;
}

/* Kills worker pid (worker id `id`, reading queue q's normal stream) with
 * SIGKILL, then appends the items it held at its death to list (*n of
 * *cap). Those are read once Redis has closed both of its connections, so
 * no completion it sent can still be on its way. Returns how many. */
static long kill_holding(redisContext *c, const char *q, pid_t pid, const char *id, taken **list, long *n,
                         long *cap) {
  long long before = connected_clients(c);
  redisReply *r;
  long got = 0;

  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  ITEST_WAIT_INT(connected_clients(c), <=, before - 2, 10000,
                 "Redis to close the two connections of the killed worker");
  r = itest_cmd(c, "XPENDING sluice:{%s}:s:normal workers - + 100000 %s", q, id);
  for (size_t i = 0; i < r->elements; i++)
    redisAppendCommand(c, "XRANGE sluice:{%s}:s:normal %s %s", q, r->element[i]->element[0]->str,
                       r->element[i]->element[0]->str);
  for (size_t i = 0; i < r->elements; i++) {
    redisReply *e;
    const char *idx;

    if (redisGetReply(c, (void **)&e) != REDIS_OK)
      sl_test_fail(__FILE__, __LINE__, "XRANGE: %s", c->errstr);
    /* an entry deleted meanwhile (its item ended) is not an item held */
    idx = e->type == REDIS_REPLY_ARRAY && e->elements == 1 ? entry_field(e->element[0]->element[1], "i") : NULL;
    if (idx != NULL) {
      if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        *list = realloc(*list, (size_t)*cap * sizeof(**list));
        CHECK(*list != NULL);
      }
      snprintf((*list)[*n].worker, sizeof((*list)[*n].worker), "%s", id);
      (*list)[*n].idx = strtol(idx, NULL, 10);
      (*n)++;
      got++;
    }
    freeReplyObject(e);
  }
  freeReplyObject(r);
  return got;
}

/* 20,000 sleep items (20-100 ms), three workers with 50 slots each,
 * visibility 2 s; every second a worker that holds items is killed with
 * SIGKILL and a new one started. Each kill is checked: the killed worker
 * held items at its death, and every one of them was recorded later by
 * another worker, on a later attempt. Killing only workers that hold items
 * can kill an item's worker several times in a row (the worker that took it
 * over is killed next), which is what poison looks like: --max-deliveries
 * is out of reach here (test_poison tests it). */
static void test_kill_storm(void) {
  const char *q = itest_queue("storm");
  const char *path = itest_path("storm.jsonl");
  redisContext *c = itest_conn();
  long n = 20000;
  size_t cap = (size_t)n * 64;
  char *buf = malloc(cap);
  size_t len = 0;
  pid_t w[3];
  char id[3][128];
  char batch[64];
  long long t0;
  long long last_kill;
  int kills = 0;
  int empty = 0;
  taken *held = NULL;
  long nheld = 0;
  long capheld = 0;
  long again;

  srand((unsigned)getpid());
  for (long i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":%d}}\n", 20 + rand() % 81);
  itest_write(path, buf, len);
  free(buf);
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  for (int i = 0; i < 3; i++)
    w[i] = worker(itest_url(), q, "50", "2000", "--max-deliveries=50", NULL, NULL);
  for (int i = 0; i < 3; i++)
    itest_wait_worker(c, q, w[i], id[i], sizeof(id[i]), 20000);
  t0 = last_kill = itest_ms();
  while (itest_batch_num(c, q, batch, "done") < n) {
    CHECK(itest_ms() - t0 < 150000);
    /* The storm's pace, a kill a second, makes the load; it decides nothing:
     * every kill below is checked for what it took over. It lasts while
     * items are still to be handed out: past that, killing the holders of
     * the last items would only keep them from ending. */
    if (itest_ms() - last_kill >= 1000 && undelivered(c, q) > 0) {
      int k = rand() % 3;

      /* only a worker that holds items (another one is tried next round) */
      if (itest_pending_of(c, q, id[k]) > 0) {
        long got = kill_holding(c, q, w[k], id[k], &held, &nheld, &capheld);

        kills += got > 0;
        empty += got == 0; /* it finished what it held just before: not counted */
        w[k] = worker(itest_url(), q, "50", "2000", "--max-deliveries=50", NULL, NULL);
        itest_wait_worker(c, q, w[k], id[k], sizeof(id[k]), 20000);
        last_kill = itest_ms();
      }
    }
    usleep(20000);
  }
  /* The consumers of killed workers leave the group once nothing is pending
   * for them and their registration expired (3 beats + 1 s), at the next
   * cleanup (at most once a minute per queue); the live workers' stay. */
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
      CHECK(itest_ms() - t1 < 75000);
      usleep(200000);
    }
  }
  for (int i = 0; i < 3; i++)
    itest_stop_ok(w[i]);
  again = check_exact(c, q, batch, n, 0);
  /* Every item a killed worker held was recorded by another worker. */
  for (long i = 0; i < nheld; i++)
    redisAppendCommand(c, "HGET sluice:{%s}:b:%s:r %ld", q, batch, held[i].idx);
  for (long i = 0; i < nheld; i++) {
    redisReply *r;
    cJSON *j;
    const cJSON *by;
    const cJSON *a;

    if (redisGetReply(c, (void **)&r) != REDIS_OK)
      sl_test_fail(__FILE__, __LINE__, "HGET: %s", c->errstr);
    CHECK(r->type == REDIS_REPLY_STRING);
    j = cJSON_Parse(r->str);
    by = cJSON_GetObjectItemCaseSensitive(j, "worker");
    a = cJSON_GetObjectItemCaseSensitive(j, "attempts");
    if (!cJSON_IsString(by) || strcmp(by->valuestring, held[i].worker) == 0 || !cJSON_IsNumber(a) ||
        a->valuedouble < 2)
      sl_test_fail(__FILE__, __LINE__, "item %ld, held by %s when it was killed, was not recorded by another "
                   "worker on a later attempt: %s", held[i].idx, held[i].worker, r->str);
    cJSON_Delete(j);
    freeReplyObject(r);
  }
  {
    long distinct = 0;
    char *seen = calloc((size_t)n, 1);

    CHECK(seen != NULL);
    for (long i = 0; i < nheld; i++) {
      distinct += !seen[held[i].idx];
      seen[held[i].idx] = 1;
    }
    free(seen);
    printf("    kill storm: %d workers killed with SIGKILL in %.1f s (and %d that held nothing by then), holding "
           "%ld distinct items in all, each recorded later by another worker; %ld of %ld items ran more than "
           "once; counters exact\n",
           kills, (double)(itest_ms() - t0) / 1000.0, empty, distinct, again, n);
    CHECK_INT(again, >=, distinct);
  }
  CHECK_INT(kills, >=, 5);
  free(held);
  redisFree(c);
}

/* done of the batches b1 and b2 (b2 may be "") in the Redis on sock; -1
 * while it cannot answer (restarting, loading). */
static long long done_of(const char *sock, const char *q, const char *b1, const char *b2) {
  redisContext *c = redisConnectUnix(sock);
  redisReply *r = c != NULL && c->err == 0 ? redisCommand(c, "HGET sluice:{%s}:b:%s done", q, b1) : NULL;
  long long n = r != NULL && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;

  if (r != NULL)
    freeReplyObject(r);
  r = n >= 0 && b2[0] != '\0' ? redisCommand(c, "HGET sluice:{%s}:b:%s done", q, b2) : NULL;
  if (r != NULL && r->type == REDIS_REPLY_STRING)
    n += strtoll(r->str, NULL, 10);
  else if (b2[0] != '\0')
    n = -1;
  if (r != NULL)
    freeReplyObject(r);
  if (c != NULL)
    redisFree(c);
  return n;
}

/* done_of, once the Redis on sock answers (it may be loading its AOF). */
static long long done_when_up(const char *sock, const char *q, const char *b1, const char *b2) {
  long long t0 = itest_ms();

  for (;;) {
    long long n = done_of(sock, q, b1, b2);

    if (n >= 0)
      return n;
    if (itest_ms() - t0 > 30000)
      sl_test_fail(__FILE__, __LINE__, "the restarted Redis did not answer within 30 s");
    usleep(10000);
  }
}

/* Redis restarted twice in the middle of a batch (appendonly, fsync
 * always): the batch completes with exact counters, and a submit made
 * between the restarts is not lost. Each kill comes once at least 300 more
 * items were done, and before the batches ended. */
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
  char b2[64] = "";
  pid_t w1;
  pid_t w2;
  redisContext *c;
  long long t0;
  long long base = 0;

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
    ITEST_WAIT_INT(done_of(d.sock, q, b1, b2), >=, base + 300, 60000, "300 more items done before killing Redis");
    sl_devredis_kill(&d, SIGKILL);
    usleep(300000); /* the outage lasts a moment (it paces the fault and decides nothing) */
    if (sl_devredis_restart(&d, extra, err, sizeof(err)) != 0)
      sl_test_fail(__FILE__, __LINE__, "%s", err);
    if (round == 0)
      snprintf(b2, sizeof(b2), "%s", submit_file(d.url, q, path, NULL, NULL));
    base = done_when_up(d.sock, q, b1, b2);
    /* mid-batch: the items done, AOF-persisted across the kill, are not all */
    CHECK_INT(base, <, round == 0 ? n : 2 * n);
  }
  c = redisConnectUnix(d.sock);
  CHECK(c != NULL && c->err == 0);
  t0 = itest_ms();
  while (itest_batch_num(c, q, b1, "done") < n || itest_batch_num(c, q, b2, "done") < n) {
    CHECK(itest_ms() - t0 < 90000);
    usleep(50000);
  }
  itest_stop_ok(w1);
  itest_stop_ok(w2);
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
    itest_stop_ok(w[i]);
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

/* What a worker's registry hash (key wkey) counts as run: succeeded +
 * retried + failed, as of its last beat; -1 when it is not there. */
static long long registry_ran(redisContext *c, const char *wkey) {
  redisReply *info = itest_cmd(c, "HGET %s info", wkey);
  cJSON *j = info->type == REDIS_REPLY_STRING ? cJSON_Parse(info->str) : NULL;
  long long ran = -1;

  if (j != NULL)
    ran = (long long)(cJSON_GetObjectItemCaseSensitive(j, "succeeded")->valuedouble +
                      cJSON_GetObjectItemCaseSensitive(j, "retried")->valuedouble +
                      cJSON_GetObjectItemCaseSensitive(j, "failed")->valuedouble);
  cJSON_Delete(j);
  freeReplyObject(info);
  return ran;
}

/* 2,000 items that fail 30% of their attempts, max_attempts 20: all
 * succeed, and the attempts in the results add up to the attempts the
 * workers ran (successes plus retries). (With 10 attempts an item fails all
 * of them with probability 0.3^10, and one of 2,000 does in about 1 run in
 * 85; with 20, in about 1 in 14 million.) */
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
  long with_errors = 0;
  char wkey[256];
  redisReply *r;

  for (long i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":1,\"fail_rate\":0.3}}\n");
  itest_write(path, buf, len);
  free(buf);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, "--max-attempts", "20", "--backoff", "5",
                          "--backoff-max", "50", path, NULL};
    char *out = NULL;

    CHECK_INT(itest_run(args, &out, NULL, 60), ==, 0);
    snprintf(batch, sizeof(batch), "%.26s", out);
    free(out);
  }
  w = worker(itest_url(), q, "100", "3000", NULL, NULL, NULL);
  itest_wait_batch(c, q, batch, 120);
  check_exact(c, q, batch, n, 0);
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  for (size_t i = 0; i < r->elements; i++) {
    cJSON *j = cJSON_Parse(r->element[i]->str);
    int a = (int)cJSON_GetObjectItemCaseSensitive(j, "attempts")->valuedouble;
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(j, "errors");

    attempts += a;
    CHECK(a >= 1 && a <= 20);
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
  snprintf(wkey, sizeof(wkey), "%s", r->element[0]->str);
  freeReplyObject(r);
  /* The worker's registry counts the attempts it ran (successes plus
   * retries) as of its last beat: it reaches the attempts in the results
   * at the beat after the last completion. */
  ITEST_WAIT_INT(registry_ran(c, wkey), ==, attempts, 10000, "the worker's registry to count every attempt");
  CHECK_INT(attempts, >, n); /* with 30% failures some items needed retries */
  CHECK_INT(with_errors, >, 0);
  itest_stop_ok(w);
  redisFree(c);
}

/* SIGTERM during a batch of 3-second items: the items running at the
 * signal finish, the worker exits 0, the items it had not started run on
 * another worker. A drain timeout shorter than the items gives them back
 * instead. */
static void test_drain(void) {
  const char *q = itest_queue("drain");
  const char *path = itest_path("drain.jsonl");
  char errpath[600];
  redisContext *c = itest_conn();
  char buf[4096];
  size_t len = 0;
  char batch[64];
  char aid[128];
  pid_t a;
  pid_t b;
  long long t0;
  long long done_before;
  redisReply *r;
  char *log;
  int by_a = 0;

  snprintf(errpath, sizeof(errpath), "%s", itest_path("drain-a.err"));
  for (int i = 0; i < 12; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":3000}}\n");
  itest_write(path, buf, len);
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  /* visibility 1500 ms: a beat (with the running count) every 500 ms */
  a = worker(itest_url(), q, "4", "1500", "--drain-timeout", "10000", errpath);
  itest_wait_worker(c, q, a, aid, sizeof(aid), 10000);
  ITEST_WAIT_INT(itest_worker_running(c, q, aid), ==, 4, 10000, "worker A to run 4 items");
  done_before = itest_batch_num(c, q, batch, "done");
  kill(a, SIGTERM);
  t0 = itest_ms();
  itest_exit_code(a, 0, 20000);
  CHECK(itest_ms() - t0 < 8000); /* the 3 s items finished, not the 10 s drain timeout */
  log = itest_wait_file(errpath, "stopped:", 1000);
  CHECK_CONTAINS(log, "signal 15: finishing 4 running items, then stopping");
  free(log);
  /* The 4 running at the signal were recorded by A, as many as ended before. */
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, done_before + 4);
  /* Nothing of A is pending: what it took but had not started was given back. */
  CHECK_INT(itest_pending(c, q), ==, 0);
  b = worker(itest_url(), q, "8", "5000", NULL, NULL, NULL);
  itest_wait_batch(c, q, batch, 30);
  itest_stop_ok(b);
  check_exact(c, q, batch, 12, 0);
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  for (size_t i = 0; i < r->elements; i++)
    by_a += strstr(r->element[i]->str, aid) != NULL;
  freeReplyObject(r);
  CHECK_INT(by_a, ==, done_before + 4);

  /* Drain timeout shorter than the items: exit 0 at the deadline; the
   * items are given back and another worker runs them at once. */
  {
    char b2[64];

    len = 0;
    for (int i = 0; i < 3; i++)
      len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":4000}}\n");
    itest_write(path, buf, len);
    snprintf(b2, sizeof(b2), "%s", submit_file(itest_url(), q, path, NULL, NULL));
    snprintf(errpath, sizeof(errpath), "%s", itest_path("drain-a2.err"));
    a = worker(itest_url(), q, "4", "1500", "--drain-timeout", "300", errpath);
    itest_wait_worker(c, q, a, aid, sizeof(aid), 10000);
    ITEST_WAIT_INT(itest_worker_running(c, q, aid), ==, 3, 10000, "worker A to run the 3 items");
    kill(a, SIGTERM);
    t0 = itest_ms();
    itest_exit_code(a, 0, 20000);
    CHECK(itest_ms() - t0 < 3000); /* at the 300 ms drain timeout, not at the items' end */
    log = itest_wait_file(errpath, "stopped:", 1000);
    CHECK_CONTAINS(log, "drain timeout (300 ms) passed: gave up 3 running items");
    free(log);
    /* Given back, not left to a takeover: nothing is pending any more. */
    CHECK_INT(itest_pending(c, q), ==, 0);
    CHECK_INT(itest_batch_num(c, q, b2, "done"), ==, 0);
    b = worker(itest_url(), q, "4", "30000", NULL, NULL, NULL);
    itest_wait_batch(c, q, b2, 30);
    itest_stop_ok(b);
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
        redisAppendCommand(kc, "FCALL sluice_v1_complete 3 sluice:{%s}:s:high sluice:{%s}:s:normal sluice:{%s}:s:low workers sluice:{%s}: %s zombie 2 %s %s %s %s %s 0 %s %s",
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
  char aid[128];

  for (int i = 0; i < 5; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":1000}}\n");
  itest_write(path, buf, len);
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  a = worker(itest_url(), q, "10", "2000", NULL, NULL, NULL);
  itest_wait_worker(c, q, a, aid, sizeof(aid), 10000);
  ITEST_WAIT_INT(itest_pending_of(c, q, aid), ==, 5, 10000, "worker A to take the 5 items");
  kill(a, SIGKILL);
  waitpid(a, NULL, 0);
  killed_at = sl__test_wall_ms();
  b = worker(itest_url(), q, "10", "2000", NULL, NULL, NULL);
  t0 = itest_ms();
  while (itest_batch_num(c, q, batch, "done") < 5) {
    CHECK(itest_ms() - t0 < 20000);
    usleep(20000);
  }
  itest_stop_ok(b);
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
  char aid[128];
  pid_t a;
  pid_t b;
  redisReply *r;

  itest_write(path, data, strlen(data));
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  a = worker(itest_url(), q, "2", "600", NULL, NULL, NULL);
  itest_wait_worker(c, q, a, aid, sizeof(aid), 10000);
  ITEST_WAIT_INT(itest_pending_of(c, q, aid), ==, 1, 10000, "worker A to take the item");
  b = worker(itest_url(), q, "2", "600", NULL, NULL, NULL); /* would take it if it could */
  itest_wait_batch(c, q, batch, 20);
  itest_stop_ok(a);
  itest_stop_ok(b);
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
  char aid[128];
  char bid[128];
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
  /* A runs the item (a beat every 333 ms reports it) when it stalls. */
  itest_wait_worker(c, q, a, aid, sizeof(aid), 10000);
  ITEST_WAIT_INT(itest_worker_running(c, q, aid), ==, 1, 10000, "worker A to run the item");
  kill(a, SIGSTOP);
  b = worker(itest_url(), q, "2", "1000", NULL, NULL, NULL);
  itest_wait_worker(c, q, b, bid, sizeof(bid), 10000);
  ITEST_WAIT_INT(itest_pending_of(c, q, bid), ==, 1, 20000, "worker B to take the stalled worker's item over");
  kill(a, SIGCONT);
  itest_wait_batch(c, q, batch, 20);
  log = itest_wait_file(errpath, "attempt fenced: item 0 of batch", 10000);
  free(log);
  itest_stop_ok(a);
  itest_stop_ok(b);
  check_exact(c, q, batch, 1, 0);
  snprintf(bpid, sizeof(bpid), ":%d:", (int)b);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 0", q, batch);
  CHECK_CONTAINS(r->str, bpid);              /* B's attempt is the one recorded */
  CHECK_CONTAINS(r->str, "\"attempts\":2,");
  freeReplyObject(r);
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
  itest_stop_ok(w);
  check_exact(c, q, batch, 1, 1);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 0", q, batch);
  CHECK_CONTAINS(r->str, "\"error\":\"timed out after 200 ms\"");
  CHECK_CONTAINS(r->str, "\"attempts\":2,");
  CHECK_CONTAINS(r->str, "\"errors\":[\"timed out after 200 ms\"]");
  freeReplyObject(r);
  redisFree(c);
}

/* A second signal ends the worker at once, while it runs four 3-second
 * items; they are not lost: another worker takes them over and records
 * them. */
static void test_second_signal(void) {
  const char *q = itest_queue("twosig");
  const char *path = itest_path("twosig.jsonl");
  const char *errpath = itest_path("twosig-a.err");
  redisContext *c = itest_conn();
  char buf[1024];
  size_t len = 0;
  char batch[64];
  char aid[128];
  pid_t a;
  pid_t b;
  long long t0;
  char *log;
  redisReply *r;

  for (int i = 0; i < 4; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":3000}}\n");
  itest_write(path, buf, len);
  snprintf(batch, sizeof(batch), "%s", submit_file(itest_url(), q, path, NULL, NULL));
  a = worker(itest_url(), q, "4", "1000", NULL, NULL, errpath);
  /* A holds the 4 items and runs them (its beat, every 333 ms, says so). */
  itest_wait_worker(c, q, a, aid, sizeof(aid), 10000);
  ITEST_WAIT_INT(itest_pending_of(c, q, aid), ==, 4, 10000, "worker A to take the 4 items");
  ITEST_WAIT_INT(itest_worker_running(c, q, aid), ==, 4, 10000, "worker A to run the 4 items");
  kill(a, SIGTERM);
  /* The second signal only once the first was handled (two pending ones
   * would be one). */
  free(itest_wait_file(errpath, "finishing 4 running items", 5000));
  kill(a, SIGTERM);
  t0 = itest_ms();
  itest_exit_code(a, 1, 5000);
  CHECK(itest_ms() - t0 < 2000); /* at once, not when the 3 s items end */
  log = itest_read(errpath, NULL);
  CHECK_CONTAINS(log, "second signal: exiting now");
  CHECK(strstr(log, "stopped:") == NULL);
  free(log);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 0);
  CHECK_INT(itest_pending_of(c, q, aid), ==, 4); /* still A's, for a takeover */
  b = worker(itest_url(), q, "4", "1000", NULL, NULL, NULL);
  itest_wait_batch(c, q, batch, 20);
  itest_stop_ok(b);
  check_exact(c, q, batch, 4, 0);
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  for (size_t i = 0; i < r->elements; i++) {
    CHECK(strstr(r->element[i]->str, aid) == NULL); /* recorded by B */
    CHECK_CONTAINS(r->element[i]->str, "\"attempts\":2,");
  }
  freeReplyObject(r);
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
