/*
 * Takeover under a deep queue: 100,000 sleep items (200-500 ms) queued,
 * three busy workers (30 slots each, visibility 5 s), one of them killed
 * with SIGKILL. The items it held at its death must start again on another
 * worker within the visibility timeout plus 3 s, however much other work is
 * queued: a takeover that waits for a worker with free slots waits for the
 * queue, not for the timeout. The test measures, for each item the killed
 * worker held, the time from the kill to the start of its next attempt (the
 * results line's started_at, wall clock; the workers run on this machine)
 * and prints p50, p99 and the maximum. It does not wait for the batch:
 * once the dead worker's items have results it cancels the batch and stops
 * the workers.
 *
 * live_count: `sluice stats` and `sluice workers` agree about who is live
 * when a worker is killed; a worker lists the item types it serves.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

#define TK_ITEMS 100000
#define TK_VISIBILITY_MS 5000
#define TK_SLOTS 30
#define TK_GRACE_MS 3000    /* allowed past the visibility timeout, p99 */
#define TK_WAIT_S 100       /* how long the dead worker's items may take at most */
#define TK_HELD_MAX 4096    /* entries one worker may hold, at most (slots plus what it read ahead) */

/* Wall clock, ms since the epoch (results carry wall-clock times). */
static long long wall_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* connected_clients of INFO clients. */
static long long connected_clients(redisContext *c) {
  redisReply *r = itest_cmd(c, "INFO clients");
  const char *p = r->type == REDIS_REPLY_STRING ? strstr(r->str, "connected_clients:") : NULL;
  long long n = p != NULL ? strtoll(p + 18, NULL, 10) : -1;

  freeReplyObject(r);
  return n;
}

/* The item indexes of the entries consumer `id` holds in queue q's three
 * streams (XPENDING with the consumer filter, then the entries' `i`),
 * added to held (n of them, no index twice). Entries deleted meanwhile
 * (their item ended) are skipped. Pipelined: a few ms for a few hundred. */
static void snapshot(redisContext *c, const char *q, const char *id, long *held, int *n) {
  static const char *const s[3] = {"high", "normal", "low"};
  redisReply *pend[3];
  int want = 0;

  for (int i = 0; i < 3; i++)
    redisAppendCommand(c, "XPENDING sluice:{%s}:s:%s workers - + %d %s", q, s[i], TK_HELD_MAX, id);
  for (int i = 0; i < 3; i++) {
    if (redisGetReply(c, (void **)&pend[i]) != REDIS_OK)
      sl_test_fail(__FILE__, __LINE__, "XPENDING: %s", c->errstr);
    CHECK(pend[i]->type == REDIS_REPLY_ARRAY);
  }
  for (int i = 0; i < 3; i++) {
    for (size_t k = 0; k < pend[i]->elements; k++) {
      const char *eid = pend[i]->element[k]->element[0]->str;

      redisAppendCommand(c, "XRANGE sluice:{%s}:s:%s %s %s", q, s[i], eid, eid);
      want++;
    }
  }
  for (int k = 0; k < want; k++) {
    redisReply *e;
    const char *idx = NULL;

    if (redisGetReply(c, (void **)&e) != REDIS_OK)
      sl_test_fail(__FILE__, __LINE__, "XRANGE: %s", c->errstr);
    /* fields b B i IDX a A d D ... */
    if (e->type == REDIS_REPLY_ARRAY && e->elements == 1 && e->element[0]->element[1]->elements >= 4)
      idx = e->element[0]->element[1]->element[3]->str;
    if (idx != NULL) {
      long v = strtol(idx, NULL, 10);
      int seen = 0;

      for (int j = 0; j < *n && !seen; j++)
        seen = held[j] == v;
      if (!seen && *n < TK_HELD_MAX)
        held[(*n)++] = v;
    }
    freeReplyObject(e);
  }
  for (int i = 0; i < 3; i++)
    freeReplyObject(pend[i]);
}

static int cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a;
  long long y = *(const long long *)b;

  return x < y ? -1 : x > y;
}

/* The nearest-rank percentile p (0-100] of n sorted values. */
static long long pct(const long long *v, int n, int p) {
  int k = (n * p + 99) / 100;

  return v[k < 1 ? 0 : k - 1];
}

/* The kill and the measure, as the top of the file says. */
static void test_deep_queue(void) {
  const char *q = itest_queue("deep");
  const char *path = itest_path("deep.jsonl");
  redisContext *c = itest_conn();
  size_t cap = (size_t)TK_ITEMS * 64;
  char *buf = malloc(cap);
  size_t len = 0;
  char batch[64];
  char id[3][128];
  char vis[16];
  char slots[16];
  pid_t w[3];
  long *held = calloc(TK_HELD_MAX, sizeof(*held));
  long long *delay = calloc(TK_HELD_MAX, sizeof(*delay));
  int nheld = 0;
  int nbefore;
  int ndelay = 0;
  int finished_before = 0; /* held items the victim itself recorded before it died */
  int missing = 0;
  long long killed_at;
  long long before;
  long long t0;
  long long submit_ms;
  int min_attempts = 1 << 30;

  CHECK(buf != NULL && held != NULL && delay != NULL);
  srand((unsigned)getpid());
  for (long i = 0; i < TK_ITEMS; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":%d}}\n", 200 + rand() % 301);
  itest_write(path, buf, len);
  free(buf);
  t0 = itest_ms();
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};
    char *out = NULL;
    char *err = NULL;

    if (itest_run(args, &out, &err, 120) != 0)
      sl_test_fail(__FILE__, __LINE__, "submit failed: %s", err ? err : "");
    snprintf(batch, sizeof(batch), "%.26s", out);
    free(out);
    free(err);
  }
  submit_ms = itest_ms() - t0;
  snprintf(vis, sizeof(vis), "%d", TK_VISIBILITY_MS);
  snprintf(slots, sizeof(slots), "%d", TK_SLOTS);
  for (int i = 0; i < 3; i++) {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", slots, "--visibility", vis,
                          "--block-ms", "300", "--quiet", NULL};

    w[i] = itest_spawn(args, NULL, NULL);
  }
  for (int i = 0; i < 3; i++)
    itest_wait_worker(c, q, w[i], id[i], sizeof(id[i]), 20000);
  /* All three busy: every slot runs an item (as of their beats). */
  for (int i = 0; i < 3; i++)
    ITEST_WAIT_INT(itest_worker_running(c, q, id[i]), ==, TK_SLOTS, 30000, "the worker to fill its slots");

  /* What the victim holds right before its death, and again once Redis has
   * closed its connections (nothing it sent can still be on its way):
   * together, every item it held when it died. */
  before = connected_clients(c);
  snapshot(c, q, id[0], held, &nheld);
  kill(w[0], SIGKILL);
  killed_at = wall_ms();
  waitpid(w[0], NULL, 0);
  nbefore = nheld;
  ITEST_WAIT_INT(connected_clients(c), <=, before - 2, 10000, "Redis to close the two connections of the killed worker");
  snapshot(c, q, id[0], held, &nheld);
  CHECK_INT(nheld, >=, TK_SLOTS);

  /* Wait (with a deadline) until each of them has a results line. */
  t0 = itest_ms();
  for (;;) {
    int have = 0;

    for (int i = 0; i < nheld; i++)
      redisAppendCommand(c, "HEXISTS sluice:{%s}:b:%s:r %ld", q, batch, held[i]);
    for (int i = 0; i < nheld; i++) {
      redisReply *r;

      if (redisGetReply(c, (void **)&r) != REDIS_OK)
        sl_test_fail(__FILE__, __LINE__, "HEXISTS: %s", c->errstr);
      have += r->integer == 1;
      freeReplyObject(r);
    }
    if (have == nheld || itest_ms() - t0 > TK_WAIT_S * 1000LL)
      break;
    usleep(100000);
  }

  /* From the kill to each item's next start. */
  for (int i = 0; i < nheld; i++) {
    redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r %ld", q, batch, held[i]);
    cJSON *j;
    const cJSON *by;
    const cJSON *st;
    const cJSON *a;

    if (r->type != REDIS_REPLY_STRING) {
      missing++;
      freeReplyObject(r);
      continue;
    }
    j = cJSON_Parse(r->str);
    by = cJSON_GetObjectItemCaseSensitive(j, "worker");
    st = cJSON_GetObjectItemCaseSensitive(j, "started_at");
    a = cJSON_GetObjectItemCaseSensitive(j, "attempts");
    CHECK(cJSON_IsString(by) && cJSON_IsNumber(st) && cJSON_IsNumber(a));
    if (strcmp(by->valuestring, id[0]) == 0) {
      finished_before++; /* ended by the victim between the first snapshot and its death */
    } else {
      if ((long long)st->valuedouble < killed_at)
        sl_test_fail(__FILE__, __LINE__, "item %ld, held by the killed worker, started on %s before the kill: %s",
                     held[i], by->valuestring, r->str);
      delay[ndelay++] = (long long)st->valuedouble - killed_at;
      if ((int)a->valuedouble < min_attempts)
        min_attempts = (int)a->valuedouble;
    }
    cJSON_Delete(j);
    freeReplyObject(r);
  }
  qsort(delay, (size_t)ndelay, sizeof(*delay), cmp_ll);
  printf("    submit of %d items: %.1f s\n", TK_ITEMS, (double)submit_ms / 1000.0);
  printf("    killed worker held %d items (%d in the snapshot before the kill, %d more after it); %d of them it "
         "finished itself before it died\n",
         nheld, nbefore, nheld - nbefore, finished_before);
  if (ndelay > 0)
    printf("    kill to next start, the %d items started again: p50 %.2f s, p99 %.2f s, max %.2f s (visibility "
           "%.1f s, allowed p99 %.1f s)\n",
           ndelay, (double)pct(delay, ndelay, 50) / 1000.0, (double)pct(delay, ndelay, 99) / 1000.0,
           (double)delay[ndelay - 1] / 1000.0, TK_VISIBILITY_MS / 1000.0, (TK_VISIBILITY_MS + TK_GRACE_MS) / 1000.0);
  if (missing)
    printf("    %d items not started again within %d s of the kill\n", missing, TK_WAIT_S);
  if (ndelay > 0)
    printf("    lowest attempt number of a restarted item: %d\n", min_attempts);
  printf("    batch done so far: %lld of %d\n", itest_batch_num(c, q, batch, "done"), TK_ITEMS);
  fflush(stdout);

  /* Not the whole batch: cancel it and stop the two survivors. */
  {
    const char *args[] = {"cancel", "--redis", itest_url(), "--queue", q, batch, NULL};
    char *err = NULL;
    int rc = itest_run(args, NULL, &err, 60);

    if (rc != 0)
      sl_test_fail(__FILE__, __LINE__, "sluice cancel: exit %d: %s", rc, err ? err : "");
    free(err);
  }
  itest_stop_ok(w[1]);
  itest_stop_ok(w[2]);

  /* Every item started again (one that did not would be past any p99). */
  CHECK_INT(missing, ==, 0);
  CHECK_INT(ndelay, >, 0);
  CHECK_INT(min_attempts, >=, 2);
  CHECK_INT(pct(delay, ndelay, 99), <=, TK_VISIBILITY_MS + TK_GRACE_MS);
  free(held);
  free(delay);
  redisFree(c);
}

/*
 * Takeover through the claim index with a long pending list: 100,000
 * entries held by live holders (four consumers that took them through the
 * worker's own fetch function with a 10-minute visibility, so none of them
 * is stale) come first in the stream; then a real worker takes 100 sleep
 * items and is killed with SIGKILL. A second worker must start every one
 * of the 100 again within the visibility plus 2 s of the kill, and take
 * nothing of the live holders'. A scan of the pending list from its start
 * (XPENDING ... IDLE) never reaches the dead worker's entries behind the
 * 100,000 live ones.
 */
#define LP_LIVE 100000
#define LP_HOLDERS 4
#define LP_DEAD 100
#define LP_VISIBILITY_MS 3000
#define LP_GRACE_MS 2000

static void test_long_pending_list(void) {
  const char *q = itest_queue("long");
  redisContext *c = itest_conn();
  size_t cap = (size_t)LP_LIVE * 48;
  char *buf = malloc(cap);
  size_t len = 0;
  char live[64];
  char batch[64];
  char streams[3][96];
  char prefix[64];
  char dead_id[128];
  char taker_id[128];
  long long held = 0;
  long long killed_at;
  long long worst = 0;
  int restarted = 0;
  pid_t dead;
  pid_t taker;

  CHECK(buf != NULL);
  for (long i = 0; i < LP_LIVE; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"noop\",\"payload\":null}\n");
  snprintf(live, sizeof(live), "%s", itest_submit(q, buf, len, NULL));
  snprintf(prefix, sizeof(prefix), "sluice:{%s}:", q);
  snprintf(streams[0], sizeof(streams[0]), "%ss:high", prefix);
  snprintf(streams[1], sizeof(streams[1]), "%ss:normal", prefix);
  snprintf(streams[2], sizeof(streams[2]), "%ss:low", prefix);
  /* The live holders take every entry, 1,000 per call, as a worker's
   * fetch would, with a visibility of 10 minutes. */
  for (int call = 0; held < LP_LIVE && call < 2 * LP_LIVE / 1000; call++) {
    char consumer[32];
    redisReply *r;

    snprintf(consumer, sizeof(consumer), "live-%d", call % LP_HOLDERS);
    r = itest_cmd(c, "FCALL sluice_v1_fetch 3 %s %s %s workers %s 1000 %s %s '' 0 600000", streams[0], streams[1],
                  streams[2], consumer, prefix, q);
    CHECK(r->type == REDIS_REPLY_ARRAY);
    held += (long long)(r->elements - 1) / 10;
    freeReplyObject(r);
  }
  CHECK_INT(held, ==, LP_LIVE);
  CHECK_INT(itest_pending(c, q), ==, LP_LIVE);

  /* The worker that dies holds 100 items of 5 s each. */
  len = 0;
  for (int i = 0; i < LP_DEAD; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":5000}}\n");
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, buf, len, NULL));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "100", "--visibility",
                          "3000", "--quiet", NULL};

    dead = itest_spawn(args, NULL, NULL);
    itest_wait_worker(c, q, dead, dead_id, sizeof(dead_id), 20000);
    ITEST_WAIT_INT(itest_pending_of(c, q, dead_id), ==, LP_DEAD, 20000, "the worker to take the 100 items");
    taker = itest_spawn(args, NULL, NULL);
    itest_wait_worker(c, q, taker, taker_id, sizeof(taker_id), 20000);
  }
  kill(dead, SIGKILL);
  killed_at = wall_ms();
  waitpid(dead, NULL, 0);
  itest_wait_batch(c, q, batch, 60);

  /* Each of the 100 started again, on the taker, within the deadline. */
  for (int i = 0; i < LP_DEAD; i++) {
    redisReply *r = itest_cmd(c, "HGET %sb:%s:r %d", prefix, batch, i);
    cJSON *j = r->type == REDIS_REPLY_STRING ? cJSON_Parse(r->str) : NULL;
    const cJSON *by = cJSON_GetObjectItemCaseSensitive(j, "worker");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "started_at");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "attempts");

    CHECK(cJSON_IsString(by) && cJSON_IsNumber(st) && cJSON_IsNumber(a));
    CHECK_STR(by->valuestring, taker_id);
    CHECK_INT((int)a->valuedouble, ==, 2);
    if ((long long)st->valuedouble - killed_at > worst)
      worst = (long long)st->valuedouble - killed_at;
    restarted++;
    cJSON_Delete(j);
    freeReplyObject(r);
  }
  printf("    %d items of the killed worker started again on the other, the last %.2f s after the kill "
         "(visibility %.1f s, allowed %.1f s), behind %d live entries\n",
         restarted, (double)worst / 1000.0, LP_VISIBILITY_MS / 1000.0, (LP_VISIBILITY_MS + LP_GRACE_MS) / 1000.0,
         LP_LIVE);
  CHECK_INT(worst, <=, LP_VISIBILITY_MS + LP_GRACE_MS);

  /* Nothing of the live holders was taken: their 100,000 entries are still
   * theirs, nothing of that batch ran. */
  {
    long long still = 0;
    redisReply *r;

    for (int k = 0; k < LP_HOLDERS; k++) {
      char consumer[32];

      snprintf(consumer, sizeof(consumer), "live-%d", k);
      still += itest_pending_of(c, q, consumer);
    }
    CHECK_INT(still, ==, LP_LIVE);
    r = itest_cmd(c, "HLEN %sb:%s:r", prefix, live);
    CHECK_INT(r->integer, ==, 0);
    freeReplyObject(r);
  }
  itest_stop_ok(taker);
  free(buf);
  redisFree(c);
}

/*
 * Entries that entered the pending list outside a function (a worker's
 * blocking XREADGROUP, the worker dead before its accept call) are in no
 * claim index: reclaim's sweep of the pending list indexes them, and they
 * run again. Here a consumer reads 10 entries with a bare XREADGROUP and
 * never comes back.
 */
static void test_unindexed_entries(void) {
  const char *q = itest_queue("unindexed");
  redisContext *c = itest_conn();
  char items[64 * 10];
  size_t len = 0;
  char batch[64];
  pid_t w;
  redisReply *r;

  for (int i = 0; i < 10; i++)
    len += (size_t)snprintf(items + len, sizeof(items) - len, "{\"type\":\"noop\",\"payload\":%d}\n", i);
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, items, len, NULL));
  r = itest_cmd(c, "XREADGROUP GROUP workers ghost COUNT 100 STREAMS sluice:{%s}:s:normal >", q);
  CHECK(r->type == REDIS_REPLY_ARRAY);
  freeReplyObject(r);
  CHECK_INT(itest_pending_of(c, q, "ghost"), ==, 10);
  r = itest_cmd(c, "ZCARD sluice:{%s}:claims", q);
  CHECK_INT(r->integer, ==, 0);
  freeReplyObject(r);
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--visibility", "1000", "--quiet", NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  itest_wait_batch(c, q, batch, 30);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 10);
  CHECK_INT(itest_pending_of(c, q, "ghost"), ==, 0);
  itest_stop_ok(w);
  redisFree(c);
}

/* The JSON output of a sluice command (cJSON_Delete it). */
static cJSON *json_of(const char *const *args) {
  char *out = NULL;
  cJSON *j;

  CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
  j = cJSON_Parse(out);
  free(out);
  CHECK(j != NULL);
  return j;
}

/* `sluice stats` and `sluice workers` agree about who is live: a worker
 * killed with SIGKILL leaves both at the same moment (its registry hash
 * expires), not 30 s later in stats. */
static void test_live_count(void) {
  redisContext *c = itest_conn();
  const char *q = itest_queue("live");
  const char *ws[] = {"workers", "--redis", itest_url(), "--queue", q, "--json", NULL};
  const char *st[] = {"stats", "--redis", itest_url(), "--queue", q, "--json", NULL};
  const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--visibility", "1500", "--quiet", NULL};
  pid_t w = itest_spawn(args, NULL, NULL); /* beats every 500 ms: its registry expires 2.5 s after the last */
  cJSON *j;
  long long t0;

  itest_wait_worker(c, q, w, NULL, 0, 20000);
  {
    char *out = NULL;

    CHECK_INT(itest_run(ws, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "\"types\":["); /* it registers the types it serves */
    CHECK_CONTAINS(out, "\"noop\"");
    CHECK_CONTAINS(out, "\"http\"");
    free(out);
  }
  j = json_of(st);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "workers")->valueint, ==, 1);
  cJSON_Delete(j);
  kill(w, SIGKILL);
  waitpid(w, NULL, 0);
  t0 = itest_ms();
  for (;;) {
    char *out = NULL;
    int listed;

    CHECK_INT(itest_run(ws, &out, NULL, 30), ==, 0);
    listed = out != NULL && strstr(out, "\"id\"") != NULL;
    free(out);
    if (!listed)
      break;
    if (itest_ms() - t0 > 15000)
      sl_test_fail(__FILE__, __LINE__, "the killed worker is still listed after 15 s");
    usleep(50000);
  }
  j = json_of(st);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "workers")->valueint, ==, 0);
  cJSON_Delete(j);
  printf("    the killed worker left workers and stats after %lld ms\n", itest_ms() - t0);
  redisFree(c);
}

static const sl_test tests[] = {
    {"live_count", test_live_count, 60},
    {"unindexed_entries", test_unindexed_entries, 60},
    {"deep_queue", test_deep_queue, 170},
    {"long_pending_list", test_long_pending_list, 120},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
