/*
 * The live state of a batch (docs/PROTOCOL.md, "The live state of a
 * batch"), from real workers, limits, retries and a pause:
 *
 *   counts_add_up  a busy batch of 120 items: 40 under a rate limit, 30
 *              under a concurrency limit of 2, 20 that fail every attempt
 *              (3 attempts, so they retry), 10 scheduled 3 s ahead, 20
 *              plain; paused for a while midway. At every sample of
 *              `status` (sl_batch_status) the counts are all >= 0 and
 *              queued + scheduled + waiting + running + retrying + paused +
 *              done = total, done = succeeded + failed + cancelled, and pct
 *              is done/total rounded down to a tenth. Each state is seen
 *              at least once, rate and eta_ms once the batch runs; every
 *              published event adds up the same way; at the end the hash's
 *              counters are exact (100 succeeded, 20 failed) and every live
 *              count is 0.
 *   stuck      no worker: `status` says no worker of the queue has served
 *              the batch's type; the only worker killed with SIGKILL while
 *              it holds 4 items: `status` says they are held by that worker,
 *              which stopped heartbeating, and when another takes them
 *              over; `watch` says it too; a new worker then ends the batch.
 *   items      `status --items`: before any worker every item queued but the
 *              scheduled one (with its due time); paused items once a
 *              worker parked them; then running (worker, since, attempt),
 *              waiting for the rate limit (until) and for a lease (its
 *              limit), retrying (attempt 2, due) and scheduled; --state
 *              filters; an unknown state exits 2 naming the valid ones; an
 *              ended batch lists nothing
 *   zero_items the same pct (100) for a whole batch of no items in status,
 *              the list and the event.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include <sluice/sluice.h>

#include "itest.h"

static const char *const states[] = {"queued", "scheduled", "waiting", "running", "retrying", "paused", NULL};

/* Wall-clock ms (the server's clock on this machine). */
static long long wall_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long n_of(const cJSON *e, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, k);

  return cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
}

/* Checks one state object (status or event) adds up; adds each state's
 * count to seen[]. Returns done. */
static long long check_adds_up(const cJSON *j, long long *seen, const char *what) {
  long long sum = 0;
  long long total = n_of(j, "total");
  long long done = n_of(j, "done");
  const cJSON *pct = cJSON_GetObjectItemCaseSensitive(j, "pct");

  for (size_t i = 0; states[i] != NULL; i++) {
    long long v = n_of(j, states[i]);

    if (v < 0)
      sl_test_fail(__FILE__, __LINE__, "%s: %s is %lld (absent or negative)", what, states[i], v);
    sum += v;
    if (seen != NULL)
      seen[i] += v;
  }
  if (sum + done != total)
    sl_test_fail(__FILE__, __LINE__, "%s: the states sum to %lld + done %lld, total is %lld", what, sum, done,
                 total);
  CHECK_INT(done, ==, n_of(j, "succeeded") + n_of(j, "failed") + n_of(j, "cancelled"));
  CHECK(cJSON_IsNumber(pct));
  if (total > 0)
    CHECK_INT((long long)(pct->valuedouble * 10 + 0.5), ==, done * 1000 / total);
  return done;
}

static cJSON *status_of(sl_client_t *cl, const char *q, const char *batch) {
  char *json = NULL;
  cJSON *j;

  if (sl_batch_status(cl, q, batch, &json) != 0)
    sl_test_fail(__FILE__, __LINE__, "status: %s", sl_client_errstr(cl));
  j = cJSON_Parse(json);
  sl_free(json);
  CHECK(j != NULL);
  return j;
}

/* A child process that writes every message of queue q's event channel to
 * path, one per line, after a first line "subscribed". */
static pid_t subscriber(const char *q, const char *path) {
  pid_t pid = fork();

  if (pid == 0) {
    redisContext *s = itest_conn();
    FILE *f = fopen(path, "w");
    redisReply *r = redisCommand(s, "SSUBSCRIBE sluice:{%s}:events", q);
    void *m = NULL;

    if (r == NULL || f == NULL)
      _exit(1);
    freeReplyObject(r);
    fprintf(f, "subscribed\n");
    fflush(f);
    while (redisGetReply(s, &m) == REDIS_OK) {
      r = m;
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING) {
        fprintf(f, "%s\n", r->element[2]->str);
        fflush(f);
      }
      freeReplyObject(r);
    }
    _exit(0);
  }
  CHECK(pid > 0);
  return pid;
}

static void run_cli(const char *const *args) {
  char *err = NULL;

  if (itest_run(args, NULL, &err, 30) != 0)
    sl_test_fail(__FILE__, __LINE__, "sluice %s failed: %s", args[0], err ? err : "");
  free(err);
}

static void test_counts_add_up(void) {
  redisContext *c = itest_conn();
  const char *q = itest_queue("live");
  char *buf = malloc(120 * 256);
  size_t len = 0;
  char batch[64];
  char events[512];
  char err[256];
  long long seen[6] = {0};
  long long samples = 0;
  int rate_seen = 0;
  int eta_seen = 0;
  int paused = 0;
  long long pause_at = 0;
  long long resume_at = 0;
  pid_t sub;
  pid_t w1;
  pid_t w2;
  sl_client_t *cl = NULL;
  cJSON *j;

  {
    const char *rl[] = {"limit", "set", "rl", "40/s", "--redis", itest_url(), "--queue", q, NULL};
    const char *cc[] = {"limit", "set", "cc", "--concurrency", "2", "--redis", itest_url(), "--queue", q, NULL};

    run_cli(rl);
    run_cli(cc);
  }
  for (int i = 0; i < 120; i++) {
    const char *rest;

    if (i < 40)
      rest = "\"type\":\"sleep\",\"rate_key\":\"rl\",\"payload\":{\"ms\":50}";
    else if (i < 70)
      rest = "\"type\":\"sleep\",\"rate_key\":\"cc\",\"payload\":{\"ms\":150}";
    else if (i < 90)
      rest = "\"type\":\"sleep\",\"payload\":{\"ms\":50,\"fail_rate\":1},\"max_attempts\":3,\"backoff_ms\":600,"
             "\"backoff_max_ms\":600";
    else if (i < 100)
      rest = "\"type\":\"noop\",\"payload\":{},\"delay_ms\":3000";
    else
      rest = "\"type\":\"sleep\",\"payload\":{\"ms\":300}";
    len += (size_t)snprintf(buf + len, 256, "{\"id\":\"i%d\",%s}\n", i, rest);
  }
  /* every event of the queue, from the first */
  snprintf(events, sizeof(events), "%s", itest_path("live-events.txt"));
  sub = subscriber(q, events);
  free(itest_wait_file(events, "subscribed", 10000));
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, buf, len, NULL));
  free(buf);
  CHECK_INT(sl_client_open(itest_url(), &cl, err, sizeof(err)), ==, 0);
  j = status_of(cl, q, batch);
  check_adds_up(j, NULL, "before any worker");
  CHECK_INT(n_of(j, "queued"), ==, 110);
  CHECK_INT(n_of(j, "scheduled"), ==, 10);
  CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "eta_ms")));
  cJSON_Delete(j);
  w1 = itest_worker(q, 8);
  w2 = itest_worker(q, 8);
  for (long long start = itest_ms();; samples++) {
    long long done;
    long long now = itest_ms();

    if (now - start > 120000)
      sl_test_fail(__FILE__, __LINE__, "the batch did not end in 120 s");
    j = status_of(cl, q, batch);
    done = check_adds_up(j, seen, "status");
    if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "rate")))
      rate_seen++;
    if (n_of(j, "eta_ms") > 0)
      eta_seen++;
    if (!paused && done >= 30) {
      CHECK_INT(sl_batch_pause(cl, q, batch), ==, 0);
      paused = 1;
      pause_at = now;
    } else if (paused == 1 && n_of(j, "paused") > 0 && now - pause_at > 1000) {
      CHECK_INT(sl_batch_resume(cl, q, batch), ==, 0);
      paused = 2;
      resume_at = now;
    }
    if (strcmp(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "completed") == 0) {
      cJSON_Delete(j);
      break;
    }
    cJSON_Delete(j);
    usleep(20000);
  }
  printf("    %lld samples; resumed %lld ms after the pause\n", samples, resume_at - pause_at);
  CHECK_INT(paused, ==, 2);
  for (size_t i = 0; states[i] != NULL; i++) {
    if (seen[i] == 0)
      sl_test_fail(__FILE__, __LINE__, "no sample saw an item %s", states[i]);
  }
  CHECK_INT(rate_seen, >, 0);
  CHECK_INT(eta_seen, >, 0);
  /* the end: exact from the hash */
  j = status_of(cl, q, batch);
  check_adds_up(j, NULL, "the end");
  CHECK_INT(n_of(j, "succeeded"), ==, 100);
  CHECK_INT(n_of(j, "failed"), ==, 20);
  CHECK_INT(n_of(j, "cancelled"), ==, 0);
  for (size_t i = 0; states[i] != NULL; i++)
    CHECK_INT(n_of(j, states[i]), ==, 0);
  CHECK_INT(n_of(j, "reran"), ==, 20);
  cJSON_Delete(j);
  /* every event adds up too */
  kill(sub, SIGTERM);
  waitpid(sub, NULL, 0);
  {
    char *text = itest_read(events, NULL);
    char *save = NULL;
    int n = 0;
    long long last_done = -1;

    for (char *line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
      cJSON *e;

      if (line[0] != '{' || strstr(line, "\"type\":\"progress\"") != NULL)
        continue;
      e = cJSON_Parse(line);
      CHECK(e != NULL);
      last_done = check_adds_up(e, NULL, "event");
      CHECK(cJSON_GetObjectItemCaseSensitive(e, "eta_ms") != NULL);
      cJSON_Delete(e);
      n++;
    }
    printf("    %d events add up\n", n);
    CHECK_INT(n, >, 5);
    CHECK_INT(last_done, ==, 120);
    free(text);
  }
  itest_stop_ok(w1);
  itest_stop_ok(w2);
  sl_client_close(cl);
  redisFree(c);
}

/* `sluice status BATCH` (human) of queue q. */
static char *status_text(const char *q, const char *batch) {
  const char *args[] = {"status", "--redis", itest_url(), "--queue", q, batch, NULL};
  char *out = NULL;

  CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
  return out;
}

static void test_stuck(void) {
  redisContext *c = itest_conn();
  const char *q = itest_queue("stuck");
  char batch[64];
  char wid[128];
  char *out;
  pid_t w;
  char buf[16 * 128];
  size_t len = 0;

  for (int i = 0; i < 6; i++)
    len += (size_t)snprintf(buf + len, 128, "{\"id\":\"s%d\",\"type\":\"sleep\",\"payload\":{\"ms\":%d}}\n", i,
                            i < 4 ? 60000 : 10);
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, buf, len, NULL));
  out = status_text(q, batch);
  CHECK_CONTAINS(out, "not ended  6: 0 running, 6 queued");
  CHECK_CONTAINS(out, "has served type \"sleep\" in the last day: its items wait until one does");
  free(out);
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "4", "--visibility", "3000",
                          "--quiet", NULL};

    w = itest_spawn(args, NULL, NULL);
    itest_wait_worker(c, q, w, wid, sizeof(wid), 20000);
  }
  ITEST_WAIT_INT(itest_pending_of(c, q, wid), ==, 4, 20000, "the worker to hold 4 items");
  out = status_text(q, batch);
  CHECK(strstr(out, "warning") == NULL);
  CHECK_CONTAINS(out, "4 running");
  free(out);
  kill(w, SIGKILL);
  waitpid(w, NULL, 0);
  {
    char line[256];
    long long start = itest_ms();

    snprintf(line, sizeof(line), "4 items are held by worker %s, which stopped heartbeating ", wid);
    for (;;) {
      out = status_text(q, batch);
      if (strstr(out, line) != NULL)
        break;
      if (itest_ms() - start > 20000)
        sl_test_fail(__FILE__, __LINE__, "no held-items warning in 20 s:\n%s", out);
      free(out);
      usleep(200000);
    }
    CHECK(strstr(out, "takes them over") != NULL);
    CHECK_CONTAINS(out, "has served type \"sleep\" for ");
    free(out);
  }
  /* watch says so too, on stderr, and goes on */
  {
    char errp[256];
    const char *args[] = {"watch", "--redis", itest_url(), "--queue", q, batch, NULL};
    pid_t wt;

    snprintf(errp, sizeof(errp), "%s", itest_path("stuck-watch.err"));
    wt = itest_spawn(args, NULL, errp);
    free(itest_wait_file(errp, "which stopped heartbeating", 20000));
    kill(wt, SIGTERM);
    waitpid(wt, NULL, 0);
  }
  {
    /* a new worker takes the 4 over (they sleep a minute: abort them) */
    const char *cancel[] = {"cancel", "--redis", itest_url(), "--queue", q, batch, "--abort", NULL};

    w = itest_worker(q, 8);
    ITEST_WAIT_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 2, 30000, "the 2 short items to succeed");
    run_cli(cancel);
    itest_wait_batch(c, q, batch, 60);
    out = status_text(q, batch);
    CHECK(strstr(out, "warning") == NULL);
    CHECK_CONTAINS(out, "progress   6/6 ended (100.0%): 2 succeeded, 0 failed, 4 cancelled");
    free(out);
    itest_stop_ok(w);
  }
  redisFree(c);
}

/* A batch whose every item was skipped as a duplicate has no items. */
static void test_zero_items(void) {
  const char *q = itest_queue("zero");
  const char *item = "{\"id\":\"z\",\"type\":\"noop\",\"payload\":{},\"dedupe\":\"zero-1\"}\n";
  const char *args[] = {"batches", "--redis", itest_url(), "--queue", q, "--json", "--name", "dup", NULL};
  const char *opts[] = {"--name", "dup", NULL};
  char batch[64];
  char *list = NULL;
  char *out;
  sl_client_t *cl = NULL;
  char err[256];
  cJSON *j;

  itest_submit(q, item, strlen(item), NULL);
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, item, strlen(item), opts));
  CHECK_INT(sl_client_open(itest_url(), &cl, err, sizeof(err)), ==, 0);
  j = status_of(cl, q, batch);
  check_adds_up(j, NULL, "zero items");
  CHECK_INT(n_of(j, "total"), ==, 0);
  CHECK_INT(n_of(j, "pct"), ==, 100);
  cJSON_Delete(j);
  sl_client_close(cl);
  out = status_text(q, batch);
  CHECK_CONTAINS(out, "progress   0/0 ended (100.0%)");
  free(out);
  CHECK_INT(itest_run(args, &list, NULL, 30), ==, 0);
  CHECK_CONTAINS(list, "\"pct\":100.0");
  CHECK_CONTAINS(list, "\"total\":0,");
  free(list);
}

/* `status --items --json` of a batch: item id -> its JSON object, as an
 * object keyed by id (free with cJSON_Delete). */
static cJSON *items_of(const char *q, const char *batch, const char *state) {
  const char *args[] = {"status", "--redis", itest_url(), "--queue", q, batch, "--items", "--json",
                        state ? "--state" : NULL, state, NULL};
  char *out = NULL;
  char *err = NULL;
  char *save = NULL;
  cJSON *all = cJSON_CreateObject();

  if (itest_run(args, &out, &err, 30) != 0)
    sl_test_fail(__FILE__, __LINE__, "status --items failed: %s", err ? err : "");
  for (char *line = strtok_r(out, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
    cJSON *e = cJSON_Parse(line);
    const cJSON *id;

    CHECK(e != NULL);
    id = cJSON_GetObjectItemCaseSensitive(e, "id");
    CHECK(cJSON_IsString(id));
    CHECK(cJSON_GetObjectItemCaseSensitive(all, id->valuestring) == NULL);
    cJSON_AddItemToObject(all, id->valuestring, e);
  }
  free(out);
  free(err);
  return all;
}

static const char *state_of(const cJSON *all, const char *id) {
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(all, id);
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "state");

  return cJSON_IsString(st) ? st->valuestring : "(not listed)";
}

/* How many items of the batch a pause parked. */
static long long parked(redisContext *c, const char *q, const char *batch) {
  redisReply *r = itest_cmd(c, "XLEN sluice:{%s}:b:%s:p", q, batch);
  long long n = r->integer;

  freeReplyObject(r);
  return n;
}

/* status --items: every unfinished item by id, in each state. */
static void test_items(void) {
  redisContext *c = itest_conn();
  const char *q = itest_queue("items");
  const char *lines =
      "{\"id\":\"r1\",\"type\":\"sleep\",\"payload\":{\"ms\":60000}}\n"
      "{\"id\":\"r2\",\"type\":\"sleep\",\"payload\":{\"ms\":60000}}\n"
      "{\"id\":\"k1\",\"type\":\"sleep\",\"rate_key\":\"rk\",\"payload\":{\"ms\":10}}\n"
      "{\"id\":\"k2\",\"type\":\"sleep\",\"rate_key\":\"rk\",\"payload\":{\"ms\":10}}\n"
      "{\"id\":\"c1\",\"type\":\"sleep\",\"rate_key\":\"one\",\"payload\":{\"ms\":60000}}\n"
      "{\"id\":\"c2\",\"type\":\"sleep\",\"rate_key\":\"one\",\"payload\":{\"ms\":60000}}\n"
      "{\"id\":\"f1\",\"type\":\"sleep\",\"payload\":{\"ms\":10,\"fail_rate\":1},\"max_attempts\":2,"
      "\"backoff_ms\":120000,\"backoff_max_ms\":120000}\n"
      "{\"id\":\"s1\",\"type\":\"noop\",\"payload\":{},\"delay_ms\":120000}\n";
  const char *rk[] = {"limit", "set", "rk", "1/m", "--redis", itest_url(), "--queue", q, NULL};
  const char *one[] = {"limit", "set", "one", "--concurrency", "1", "--redis", itest_url(), "--queue", q, NULL};
  const char *pause[] = {"pause", "--redis", itest_url(), "--queue", q, NULL, NULL};
  const char *resume[] = {"resume", "--redis", itest_url(), "--queue", q, NULL, NULL};
  const char *cancel[] = {"cancel", "--redis", itest_url(), "--queue", q, NULL, "--abort", NULL};
  char batch[64];
  cJSON *all;
  const cJSON *e;
  pid_t w;
  char wid[128];

  run_cli(rk);
  run_cli(one);
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, lines, strlen(lines), NULL));
  pause[5] = resume[5] = cancel[5] = batch;
  all = items_of(q, batch, NULL);
  CHECK_INT(cJSON_GetArraySize(all), ==, 8);
  CHECK_STR(state_of(all, "r1"), "queued");
  CHECK_STR(state_of(all, "s1"), "scheduled");
  CHECK(n_of(cJSON_GetObjectItemCaseSensitive(all, "s1"), "due") > wall_ms());
  cJSON_Delete(all);
  /* paused: a worker parks what it reads */
  run_cli(pause);
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "8", "--quiet", NULL};

    w = itest_spawn(args, NULL, NULL);
    itest_wait_worker(c, q, w, wid, sizeof(wid), 20000);
  }
  ITEST_WAIT_INT(parked(c, q, batch), ==, 7, 20000, "the worker to park the 7 queued items");
  all = items_of(q, batch, "paused");
  CHECK_INT(cJSON_GetArraySize(all), ==, 7);
  CHECK_STR(state_of(all, "c2"), "paused");
  cJSON_Delete(all);
  run_cli(resume);
  /* running, waiting (rate and lease), retrying, scheduled */
  ITEST_WAIT_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 1, 20000, "k1 to succeed");
  ITEST_WAIT_INT(itest_batch_num(c, q, batch, "retrying"), ==, 1, 20000, "f1 to wait for its retry");
  ITEST_WAIT_INT(itest_batch_num(c, q, batch, "cwait"), ==, 1, 20000, "c2 to wait for a lease");
  all = items_of(q, batch, NULL);
  CHECK_INT(cJSON_GetArraySize(all), ==, 7);
  CHECK_STR(state_of(all, "r1"), "running");
  CHECK_STR(state_of(all, "r2"), "running");
  CHECK_STR(state_of(all, "c1"), "running");
  e = cJSON_GetObjectItemCaseSensitive(all, "r1");
  CHECK_STR(cJSON_GetObjectItemCaseSensitive(e, "worker")->valuestring, wid);
  CHECK(n_of(e, "since") > 0 && n_of(e, "since") <= wall_ms() + 1000);
  CHECK_INT(n_of(e, "attempt"), ==, 1);
  CHECK_STR(state_of(all, "k2"), "waiting");
  CHECK(n_of(cJSON_GetObjectItemCaseSensitive(all, "k2"), "until") > wall_ms());
  CHECK_STR(state_of(all, "c2"), "waiting");
  CHECK_STR(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(all, "c2"), "detail")->valuestring,
            "lease one");
  CHECK_STR(state_of(all, "f1"), "retrying");
  CHECK_INT(n_of(cJSON_GetObjectItemCaseSensitive(all, "f1"), "attempt"), ==, 2);
  CHECK_STR(state_of(all, "s1"), "scheduled");
  cJSON_Delete(all);
  all = items_of(q, batch, "running");
  CHECK_INT(cJSON_GetArraySize(all), ==, 3);
  cJSON_Delete(all);
  {
    const char *args[] = {"status", "--redis", itest_url(), "--queue", q, batch, "--items", NULL};
    const char *bad[] = {"status", "--redis", itest_url(), "--queue", q, batch, "--items", "--state", "done", NULL};
    char *out = NULL;
    char *err = NULL;

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "INDEX    ID");
    CHECK_CONTAINS(out, "waiting for a lease one");
    CHECK_CONTAINS(out, "next try at ");
    free(out);
    CHECK_INT(itest_run(bad, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "running, waiting, retrying, scheduled, paused or queued");
    free(err);
  }
  run_cli(cancel);
  itest_wait_batch(c, q, batch, 60);
  all = items_of(q, batch, NULL);
  CHECK_INT(cJSON_GetArraySize(all), ==, 0);
  cJSON_Delete(all);
  itest_stop_ok(w);
  redisFree(c);
}

static const sl_test tests[] = {
    {"items", test_items, 90},
    {"counts_add_up", test_counts_add_up, 180},
    {"stuck", test_stuck, 120},
    {"zero_items", test_zero_items, 30},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
