/*
 * Fencing with real processes: an attempt counts only while its worker still
 * holds the item's stream entry (pending in the group `workers` with itself
 * as the consumer), and an entry is taken over only once it has been idle
 * longer than its holder's own --visibility (P vis, per consumer). Both are
 * checked with real `sluice worker` processes, real signals and the test
 * Redis of the harness.
 *
 *   stale_completions_refused
 *               Worker A (--visibility 1000, 10 slots) runs 10 exec items
 *               whose command sleeps FENCE_SLEEP_S, prints "run I.N pid P"
 *               (index, attempt, its worker's pid) and then writes the
 *               marker file done.I.N. Once A holds and runs all 10, A alone
 *               gets SIGSTOP: its children have process groups of their own
 *               and run on. Worker B (--visibility 1000) takes the 10 items
 *               over and runs them again (attempt 2, the same command). Once
 *               the 10 markers of attempt 1 exist (A's children finished
 *               while A was stopped) and B still holds all 10, A gets
 *               SIGCONT: it wakes up with 10 finished attempts whose items it
 *               lost. When the batch has ended: every results line is B's
 *               (its worker field and its output name B's pid), attempts 2,
 *               the counters exact; A's log has one fence line per item
 *               (either kind: a refused completion, or a beat that found
 *               the item held by another and stopped the attempt) and its
 *               stop line says "10 fenced".
 *
 *   different_visibility_no_steal
 *               Worker A (--visibility 20000, 20 slots) runs 20 sleep items
 *               of NOSTEAL_ITEM_MS. Worker B (--visibility 1000, 10 free
 *               slots) joins while they run. A beats every 6.7 s, so A's
 *               entries sit idle far longer than B's own visibility; B must
 *               still take none of them over, because A's is 20 s. The test
 *               first makes sure B had the chance (B's reclaim has recorded
 *               its visibility, and all 20 entries have been idle for
 *               NOSTEAL_IDLE_MS while B was there) and, on every poll until
 *               the batch ends, that A is the only consumer holding entries.
 *               Then: every result has attempts 1 and A's pid, B's log never
 *               says "took over" (nor moved anything to the stale pool), and
 *               A fenced nothing. Before per-holder visibilities, a worker
 *               with a shorter --visibility took most of such items over.
 *
 * Nothing here sleeps for a fixed time to decide anything: every wait polls
 * with a deadline.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

#define FENCE_ITEMS 10          /* exec items of stale_completions_refused */
#define FENCE_VIS "1000"        /* --visibility of both of its workers, ms */
#define FENCE_SLEEP_S "2.5"     /* how long each attempt's command sleeps, s */
#define FENCE_WAIT_MS 20000     /* longest wait for any one step, ms */
#define NOSTEAL_ITEMS 20        /* sleep items of different_visibility_no_steal */
#define NOSTEAL_ITEM_MS 6000    /* how long each of them sleeps, ms */
#define NOSTEAL_VIS_A "20000"   /* --visibility of the worker running them, ms */
#define NOSTEAL_VIS_B "1000"    /* --visibility of the worker that must not take them, ms */
#define NOSTEAL_IDLE_MS 2500    /* idle time of A's entries B must have seen, ms */

/* ---- Helpers ---- */

/* Submits the JSON Lines `items` on queue q; returns the batch id (a static
 * buffer). */
static const char *submit(const char *q, const char *items, size_t len) {
  return itest_submit(q, items, len, NULL);
}

/* Checks a finished batch: exact counters (all succeeded), one results line
 * per item, nothing left in the streams, the pending lists or the delayed
 * set. */
static void check_exact(redisContext *c, const char *q, const char *batch, long total) {
  redisReply *r;

  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, total);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, total);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, total);
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, 0);
  r = itest_cmd(c, "HLEN sluice:{%s}:b:%s:r", q, batch);
  CHECK_INT(r->integer, ==, total);
  freeReplyObject(r);
  itest_check_drained(c, q);
}

/* The results line of item idx of the batch, parsed (cJSON_Delete it);
 * fails the test when there is none or it does not parse. */
static cJSON *result_of(redisContext *c, const char *q, const char *batch, int idx) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r %d", q, batch, idx);
  cJSON *j;

  if (r->type != REDIS_REPLY_STRING)
    sl_test_fail(__FILE__, __LINE__, "item %d of batch %s has no results line", idx, batch);
  j = cJSON_Parse(r->str);
  if (j == NULL)
    sl_test_fail(__FILE__, __LINE__, "item %d's results line does not parse: %s", idx, r->str);
  freeReplyObject(r);
  return j;
}

/* The state letter of process pid (/proc/PID/stat: 'T' stopped, 'S'
 * sleeping, ...), or '?' when it is gone. */
static char proc_state(pid_t pid) {
  char path[64];
  char *st;
  const char *paren;
  char state = '?';

  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  st = itest_read(path, NULL);
  paren = st != NULL ? strrchr(st, ')') : NULL;
  if (paren != NULL && paren[1] == ' ' && paren[2] != '\0')
    state = paren[2];
  free(st);
  return state;
}

/* How many of the marker files DIR/done.I.ATTEMPT (I = 0..n-1) are
 * complete: they hold the attempt number and its newline. */
static int markers_done(const char *dir, int n, int attempt) {
  int done = 0;

  for (int i = 0; i < n; i++) {
    char path[800];
    char want[16];
    char *s;

    snprintf(path, sizeof(path), "%s/done.%d.%d", dir, i, attempt);
    snprintf(want, sizeof(want), "%d\n", attempt);
    s = itest_read(path, NULL);
    done += s != NULL && strcmp(s, want) == 0;
    free(s);
  }
  return done;
}

/* Entries of queue q's normal stream held by consumers other than `id`
 * (the stale pool included), read from one XPENDING summary, so all
 * counts come from the same moment. */
static long long held_by_others(redisContext *c, const char *q, const char *id) {
  redisReply *r = itest_cmd(c, "XPENDING sluice:{%s}:s:normal workers", q);
  long long n = 0;

  if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 && r->element[3]->type == REDIS_REPLY_ARRAY) {
    for (size_t k = 0; k < r->element[3]->elements; k++) {
      const redisReply *e = r->element[3]->element[k];

      if (strcmp(e->element[0]->str, id) != 0)
        n += strtoll(e->element[1]->str, NULL, 10);
    }
  }
  freeReplyObject(r);
  return n;
}

/* Entries of queue q's normal stream that consumer `id` holds and that have
 * been idle for at least min_idle ms. */
static long long idle_of(redisContext *c, const char *q, const char *id, long long min_idle) {
  redisReply *r = itest_cmd(c, "XPENDING sluice:{%s}:s:normal workers IDLE %lld - + 1000 %s", q, min_idle, id);
  long long n = r->type == REDIS_REPLY_ARRAY ? (long long)r->elements : -1;

  freeReplyObject(r);
  return n;
}

/* A consumer's visibility timeout as recorded in P vis, ms; -1 if none. */
static long long vis_of(redisContext *c, const char *q, const char *id) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:vis %s", q, id);
  long long v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;

  freeReplyObject(r);
  return v;
}

/* How many lines of text hold needle. */
static int count_lines(const char *text, const char *needle) {
  int n = 0;
  const char *p = text;

  while (p != NULL && *p != '\0') {
    const char *nl = strchr(p, '\n');
    size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
    const char *hit = strstr(p, needle);

    if (hit != NULL && hit < p + len)
      n++;
    p = nl != NULL ? nl + 1 : NULL;
  }
  return n;
}

/* The worker's stop line ("worker ID stopped: ..."), copied into line; fails
 * the test when the log has none. */
static void stop_line(const char *log, char *line, size_t len) {
  const char *p = strstr(log, " stopped: ");
  const char *start;
  const char *end;

  if (p == NULL)
    sl_test_fail(__FILE__, __LINE__, "no stop line in the worker's log:\n%s", log);
  start = p;
  while (start > log && start[-1] != '\n')
    start--;
  end = strchr(p, '\n');
  snprintf(line, len, "%.*s", (int)(end != NULL ? end - start : (long)strlen(start)), start);
}

/* ---- stale_completions_refused ---- */

/* A worker that wakes up from SIGSTOP with finished attempts of items
 * another worker took over records none of them. */
static void test_stale_completions_refused(void) {
  const char *q = itest_queue("stale");
  const char *errpath_a = itest_path("stale-a.err");
  const char *errpath_b = itest_path("stale-b.err");
  redisContext *c = itest_conn();
  char dir[600];
  char mapping[1400];
  char items[FENCE_ITEMS * 96];
  char batch[64];
  char aid[128];
  char bid[128];
  char bmark[32];
  char line[1024];
  size_t len = 0;
  pid_t a;
  pid_t b;
  long long stopped_at;
  long long stopped_ms;
  long long woke_at;
  long long margin_ms;
  long long stall;
  const char *p;
  char *log;
  int refused;
  int stopping;

  snprintf(dir, sizeof(dir), "%s", itest_path("stale-marks"));
  CHECK(mkdir(dir, 0700) == 0 || errno == EEXIST);
  /* $PPID: the worker that started the command (its direct child). */
  snprintf(mapping, sizeof(mapping),
           "slow=sleep %s; echo \"run $SLUICE_ITEM_INDEX.$SLUICE_ATTEMPT pid $PPID\"; "
           "echo \"$SLUICE_ATTEMPT\" > '%s/done.'\"$SLUICE_ITEM_INDEX.$SLUICE_ATTEMPT\"",
           FENCE_SLEEP_S, dir);
  for (int i = 0; i < FENCE_ITEMS; i++)
    len += (size_t)snprintf(items + len, sizeof(items) - len,
                            "{\"type\":\"slow\",\"payload\":null,\"timeout_ms\":60000}\n");
  snprintf(batch, sizeof(batch), "%s", submit(q, items, len));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "10", "--visibility",
                          FENCE_VIS, "--block-ms", "300", "--exec", mapping, NULL};

    a = itest_spawn(args, NULL, errpath_a);
  }
  /* A holds the 10 items and runs them (its beat, every 333 ms, says so). */
  itest_wait_worker(c, q, a, aid, sizeof(aid), FENCE_WAIT_MS);
  ITEST_WAIT_INT(itest_pending_of(c, q, aid), ==, FENCE_ITEMS, FENCE_WAIT_MS, "worker A to take the 10 items");
  ITEST_WAIT_INT(itest_worker_running(c, q, aid), ==, FENCE_ITEMS, FENCE_WAIT_MS, "worker A to run the 10 items");
  /* A alone: its children are in process groups of their own and run on. */
  CHECK(kill(a, SIGSTOP) == 0);
  stopped_at = itest_ms();
  ITEST_WAIT(proc_state(a) == 'T', 5000, "worker A to be stopped");
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "10", "--visibility",
                          FENCE_VIS, "--block-ms", "300", "--exec", mapping, NULL};

    b = itest_spawn(args, NULL, errpath_b);
  }
  itest_wait_worker(c, q, b, bid, sizeof(bid), FENCE_WAIT_MS);
  ITEST_WAIT_INT(itest_pending_of(c, q, bid), ==, FENCE_ITEMS, FENCE_WAIT_MS,
                 "worker B to take the stopped worker's 10 items over");
  /* A's 10 commands finish while A is stopped; B's attempts still run. */
  ITEST_WAIT_INT(markers_done(dir, FENCE_ITEMS, 1), ==, FENCE_ITEMS, FENCE_WAIT_MS,
                 "the 10 commands of attempt 1 to finish");
  CHECK(proc_state(a) == 'T');
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 0);
  CHECK_INT(itest_pending_of(c, q, bid), ==, FENCE_ITEMS);
  CHECK_INT(itest_pending_of(c, q, aid), ==, 0);
  CHECK(kill(a, SIGCONT) == 0);
  woke_at = itest_ms();
  stopped_ms = woke_at - stopped_at;
  /* A woke up while B still held every item and had recorded none: the
   * outcomes A now has are all of items it lost. */
  CHECK_INT(itest_pending_of(c, q, bid), ==, FENCE_ITEMS);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 0);
  itest_wait_batch(c, q, batch, 30);
  margin_ms = itest_ms() - woke_at; /* how long B still ran after A woke up */
  /* Every results line is B's attempt 2, with B's own output. */
  snprintf(bmark, sizeof(bmark), ":%d:", (int)b);
  for (int i = 0; i < FENCE_ITEMS; i++) {
    cJSON *j = result_of(c, q, batch, i);
    const cJSON *by = cJSON_GetObjectItemCaseSensitive(j, "worker");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(j, "attempts");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
    char want[64];
    char *text = cJSON_PrintUnformatted(j);

    snprintf(want, sizeof(want), "run %d.2 pid %d", i, (int)b);
    if (!cJSON_IsString(by) || strstr(by->valuestring, bmark) == NULL || !cJSON_IsNumber(at) ||
        at->valuedouble != 2 || !cJSON_IsString(st) || strcmp(st->valuestring, "succeeded") != 0 ||
        !cJSON_IsString(res) || strcmp(res->valuestring, want) != 0)
      sl_test_fail(__FILE__, __LINE__, "item %d: expected worker B's (pid %d) attempt 2 with \"%s\", got %s", i,
                   (int)b, want, text);
    free(text);
    cJSON_Delete(j);
  }
  /* A's fence lines, one per item (its completions or its beat). */
  {
    long long t0 = itest_ms();

    for (;;) {
      log = itest_read(errpath_a, NULL);
      if (count_lines(log, "attempt fenced: item ") >= FENCE_ITEMS)
        break;
      if (itest_ms() - t0 > FENCE_WAIT_MS)
        sl_test_fail(__FILE__, __LINE__, "worker A logged %d fence lines, expected %d; its log:\n%s",
                     count_lines(log, "attempt fenced: item "), FENCE_ITEMS, log != NULL ? log : "(none)");
      free(log);
      usleep(10000);
    }
    free(log);
  }
  itest_stop_ok(a);
  itest_stop_ok(b);
  check_exact(c, q, batch, FENCE_ITEMS);
  CHECK_INT(markers_done(dir, FENCE_ITEMS, 2), ==, FENCE_ITEMS);
  /* A's log: a fence line for every item, its stop line 10 fenced. */
  log = itest_read(errpath_a, NULL);
  CHECK_INT(count_lines(log, "attempt fenced: item "), ==, FENCE_ITEMS);
  for (int i = 0; i < FENCE_ITEMS; i++) {
    char needle[128];

    snprintf(needle, sizeof(needle), "attempt fenced: item %d of batch %s ", i, batch);
    CHECK_INT(count_lines(log, needle), ==, 1);
  }
  refused = count_lines(log, "this worker's outcome is not recorded");
  stopping = count_lines(log, "; stopping this attempt");
  CHECK_INT(refused + stopping, ==, FENCE_ITEMS);
  stop_line(log, line, sizeof(line));
  CHECK_CONTAINS(line, ", 10 fenced; longest loop stall ");
  p = strstr(line, "longest loop stall ");
  stall = strtoll(p + strlen("longest loop stall "), NULL, 10);
  CHECK_INT(stall, >=, 1000); /* it was stopped for stopped_ms: over 2 s, its commands sleep 2.5 s */
  free(log);
  log = itest_read(errpath_b, NULL);
  CHECK(strstr(log, "attempt fenced") == NULL);
  free(log);
  printf("    stale completions: A stopped for %lld ms; its 10 attempts finished meanwhile and were fenced when it "
         "woke up (%d refused completions, %d attempts stopped by a beat); all 10 recorded by B at attempt 2, "
         "the batch ending %lld ms after A woke up; A's stop line: %s\n",
         stopped_ms, refused, stopping, margin_ms, strstr(line, "stopped: "));
  redisFree(c);
}

/* ---- different_visibility_no_steal ---- */

/* A worker with a short --visibility never takes over the items of a live
 * worker with a longer one, however long they sit idle between its beats. */
static void test_different_visibility_no_steal(void) {
  const char *q = itest_queue("nosteal");
  const char *errpath_a = itest_path("nosteal-a.err");
  const char *errpath_b = itest_path("nosteal-b.err");
  redisContext *c = itest_conn();
  char items[NOSTEAL_ITEMS * 128];
  char batch[64];
  char aid[128];
  char bid[128];
  char amark[32];
  char line[1024];
  size_t len = 0;
  pid_t a;
  pid_t b;
  long long b_joined;
  long long watched_ms;
  long long polls = 0;
  char *log;

  for (int i = 0; i < NOSTEAL_ITEMS; i++)
    len += (size_t)snprintf(items + len, sizeof(items) - len,
                            "{\"type\":\"sleep\",\"payload\":{\"ms\":%d},\"timeout_ms\":60000}\n", NOSTEAL_ITEM_MS);
  snprintf(batch, sizeof(batch), "%s", submit(q, items, len));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "20", "--visibility",
                          NOSTEAL_VIS_A, "--block-ms", "300", NULL};

    a = itest_spawn(args, NULL, errpath_a);
  }
  /* A takes all 20 with its fetch, which records its visibility; with 20
   * slots it runs them all at once (its first beat is 6.7 s away). */
  itest_wait_worker(c, q, a, aid, sizeof(aid), FENCE_WAIT_MS);
  ITEST_WAIT_INT(itest_pending_of(c, q, aid), ==, NOSTEAL_ITEMS, FENCE_WAIT_MS, "worker A to take the 20 items");
  CHECK_INT(vis_of(c, q, aid), ==, strtoll(NOSTEAL_VIS_A, NULL, 10));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "10", "--visibility",
                          NOSTEAL_VIS_B, "--block-ms", "300", NULL};

    b = itest_spawn(args, NULL, errpath_b);
  }
  itest_wait_worker(c, q, b, bid, sizeof(bid), FENCE_WAIT_MS);
  b_joined = itest_ms();
  /* B had its chance: its reclaim ran (it records B's visibility) while
   * every entry of A's was idle far past B's own visibility. Meanwhile, and
   * until the batch ends, A is the only consumer holding entries. */
  for (;;) {
    long long others = held_by_others(c, q, aid);

    if (others != 0)
      sl_test_fail(__FILE__, __LINE__, "%lld of worker A's entries were taken from it (by B or to the stale pool) "
                   "%lld ms after B joined", others, itest_ms() - b_joined);
    polls++;
    if (vis_of(c, q, bid) == strtoll(NOSTEAL_VIS_B, NULL, 10) &&
        idle_of(c, q, aid, NOSTEAL_IDLE_MS) == NOSTEAL_ITEMS)
      break;
    if (itest_batch_num(c, q, batch, "done") > 0 || itest_ms() - b_joined > FENCE_WAIT_MS)
      sl_test_fail(__FILE__, __LINE__, "B never had its chance: its visibility recorded %lld, entries of A idle "
                   "%d ms or more: %lld of %d, done %lld",
                   vis_of(c, q, bid), NOSTEAL_IDLE_MS, idle_of(c, q, aid, NOSTEAL_IDLE_MS), NOSTEAL_ITEMS,
                   itest_batch_num(c, q, batch, "done"));
    usleep(10000);
  }
  for (;;) {
    long long others = held_by_others(c, q, aid);

    if (others != 0)
      sl_test_fail(__FILE__, __LINE__, "%lld of worker A's entries were taken from it (by B or to the stale pool) "
                   "%lld ms after B joined", others, itest_ms() - b_joined);
    polls++;
    if (itest_batch_num(c, q, batch, "done") == NOSTEAL_ITEMS)
      break;
    if (itest_ms() - b_joined > FENCE_WAIT_MS + NOSTEAL_ITEM_MS)
      sl_test_fail(__FILE__, __LINE__, "batch %s did not end (done %lld of %d)", batch,
                   itest_batch_num(c, q, batch, "done"), NOSTEAL_ITEMS);
    usleep(10000);
  }
  watched_ms = itest_ms() - b_joined;
  itest_wait_batch(c, q, batch, 10);
  itest_stop_ok(a);
  itest_stop_ok(b);
  check_exact(c, q, batch, NOSTEAL_ITEMS);
  snprintf(amark, sizeof(amark), ":%d:", (int)a);
  for (int i = 0; i < NOSTEAL_ITEMS; i++) {
    cJSON *j = result_of(c, q, batch, i);
    const cJSON *by = cJSON_GetObjectItemCaseSensitive(j, "worker");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(j, "attempts");
    char *text = cJSON_PrintUnformatted(j);

    if (!cJSON_IsString(by) || strstr(by->valuestring, amark) == NULL || !cJSON_IsNumber(at) ||
        at->valuedouble != 1)
      sl_test_fail(__FILE__, __LINE__, "item %d: expected worker A's (pid %d) attempt 1, got %s", i, (int)a, text);
    free(text);
    cJSON_Delete(j);
  }
  log = itest_read(errpath_b, NULL);
  CHECK(log != NULL);
  CHECK(strstr(log, "took over") == NULL);
  CHECK(strstr(log, "waiting for any worker to run them again") == NULL);
  stop_line(log, line, sizeof(line));
  CHECK_CONTAINS(line, "stopped: 0 succeeded, 0 failed,");
  free(log);
  log = itest_read(errpath_a, NULL);
  CHECK(log != NULL);
  CHECK(strstr(log, "attempt fenced") == NULL);
  stop_line(log, line, sizeof(line));
  CHECK_CONTAINS(line, "stopped: 20 succeeded, 0 failed,");
  CHECK_CONTAINS(line, ", 0 fenced;");
  free(log);
  printf("    no steal: B (--visibility %s) watched A's (--visibility %s) 20 items for %lld ms, %lld polls, each "
         "entry idle %d ms or more at some point; B took none, all 20 recorded by A at attempt 1\n",
         NOSTEAL_VIS_B, NOSTEAL_VIS_A, watched_ms, polls, NOSTEAL_IDLE_MS);
  redisFree(c);
}

static const sl_test tests[] = {
    {"stale_completions_refused", test_stale_completions_refused, 60},
    {"different_visibility_no_steal", test_different_visibility_no_steal, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
