/*
 * End to end through the real binary and a real redis-server: submit,
 * workers, exact counters, strict priority, live events, results.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

/* Writes n items {"id":"PREFIX-i","type":TYPE,"payload":PAYLOAD} to a file;
 * returns its path. */
static const char *write_items(const char *name, int n, const char *prefix, const char *type,
                               const char *payload) {
  size_t cap = (size_t)n * 200 + 1;
  char *buf = malloc(cap);
  size_t len = 0;
  static char path[600];

  for (int i = 0; i < n; i++) {
    len += (size_t)snprintf(buf + len, cap - len, "{\"id\":\"%s-%d\",\"type\":\"%s\",\"payload\":%s}",
                            prefix, i, type, payload);
    buf[len++] = '\n';
  }
  snprintf(path, sizeof(path), "%s", itest_path(name));
  itest_write(path, buf, len);
  free(buf);
  return path;
}

/* Submits a file to queue q; returns the batch id (static buffer). */
static const char *submit(const char *q, const char *path, const char *extra) {
  static char id[64];
  const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, extra, NULL};
  char *out = NULL;
  char *err = NULL;
  int rc = itest_run(args, &out, &err, 60);

  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "submit exited %d: %s", rc, err);
  CHECK_INT(strlen(out), ==, 27); /* the id and a newline, nothing else */
  memcpy(id, out, 26);
  id[26] = '\0';
  free(out);
  free(err);
  return id;
}


/* 10,000 noop items, two worker processes: completed, exact, drained. */
static void test_noop_10k_two_workers(void) {
  const char *q = itest_queue("noop10k");
  const char *path = write_items("noop.jsonl", 10000, "n", "noop", "{\"x\":1}");
  redisContext *c = itest_conn();
  const char *id = submit(q, path, NULL);
  char batch[64];
  pid_t w1;
  pid_t w2;
  redisReply *r;
  char *out = NULL;
  size_t lines = 0;
  const char *args[] = {"results", "--redis", itest_url(), "--queue", q, batch, NULL};

  snprintf(batch, sizeof(batch), "%s", id);
  w1 = itest_worker(q, 50);
  w2 = itest_worker(q, 50);
  itest_wait_batch(c, q, batch, 120);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 10000);
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, 0);
  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, 10000);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 10000);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, batch);
  CHECK_STR(r->str, "completed");
  freeReplyObject(r);
  itest_stop_ok(w1);
  itest_stop_ok(w2);
  itest_check_drained(c, q);

  /* results: exactly 10,000 lines with 10,000 distinct ids, all fields. */
  CHECK_INT(itest_run(args, &out, NULL, 60), ==, 0);
  {
    char *seen = calloc(10000, 1);
    int workers_seen[2] = {0, 0};
    char first_worker[160] = "";

    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
      cJSON *j = cJSON_Parse(line);
      const cJSON *jid = cJSON_GetObjectItemCaseSensitive(j, "id");
      const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "worker");
      int n;

      CHECK(j != NULL);
      CHECK(cJSON_IsString(jid));
      CHECK_STR(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "succeeded");
      CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "attempts")->valuedouble, ==, 1);
      CHECK(cJSON_GetObjectItemCaseSensitive(j, "started_at")->valuedouble > 1.7e12);
      CHECK(cJSON_GetObjectItemCaseSensitive(j, "finished_at")->valuedouble >=
            cJSON_GetObjectItemCaseSensitive(j, "started_at")->valuedouble);
      CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "duration_ms")));
      CHECK(cJSON_GetObjectItemCaseSensitive(j, "result") != NULL);
      CHECK(cJSON_IsString(w));
      if (first_worker[0] == '\0')
        snprintf(first_worker, sizeof(first_worker), "%s", w->valuestring);
      workers_seen[strcmp(first_worker, w->valuestring) == 0 ? 0 : 1]++;
      CHECK(sscanf(jid->valuestring, "n-%d", &n) == 1);
      CHECK(n >= 0 && n < 10000);
      CHECK_INT(seen[n], ==, 0);
      seen[n] = 1;
      lines++;
      cJSON_Delete(j);
    }
    CHECK_INT(lines, ==, 10000);
    /* Both workers took part. */
    CHECK_INT(workers_seen[0], >, 0);
    CHECK_INT(workers_seen[1], >, 0);
    free(seen);
  }
  free(out);
  redisFree(c);
}

/* Items of all three priorities queued before a single worker with
 * concurrency 1 starts: every high item starts before any normal one, and
 * every normal one before any low one. */
static void test_strict_priority(void) {
  const char *q = itest_queue("prio");
  static const char *const prio[3] = {"low", "normal", "high"};
  char buf[64 * 1024];
  size_t len = 0;
  const char *path = itest_path("prio.jsonl");
  redisContext *c = itest_conn();
  char batch[64];
  char *out = NULL;
  long long max_start[3] = {0, 0, 0};
  long long min_start[3] = {0, 0, 0};
  const char *args[] = {"results", "--redis", itest_url(), "--queue", q, batch, NULL};
  pid_t w;

  /* Interleaved, low first, so submit order cannot explain the run order. */
  for (int i = 0; i < 90; i++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                            "{\"id\":\"%s-%d\",\"type\":\"sleep\",\"priority\":\"%s\",\"payload\":{\"ms\":2}}\n",
                            prio[i % 3], i, prio[i % 3]);
  itest_write(path, buf, len);
  snprintf(batch, sizeof(batch), "%s", submit(q, path, NULL));
  w = itest_worker(q, 1);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
  for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
    cJSON *j = cJSON_Parse(line);
    const char *id = cJSON_GetObjectItemCaseSensitive(j, "id")->valuestring;
    long long st = (long long)cJSON_GetObjectItemCaseSensitive(j, "started_at")->valuedouble;
    int p = strncmp(id, "high", 4) == 0 ? 0 : strncmp(id, "normal", 6) == 0 ? 1 : 2;

    if (st > max_start[p])
      max_start[p] = st;
    if (min_start[p] == 0 || st < min_start[p])
      min_start[p] = st;
    cJSON_Delete(j);
  }
  CHECK(min_start[0] > 0 && min_start[1] > 0 && min_start[2] > 0);
  CHECK_INT(max_start[0], <, min_start[1]);
  CHECK_INT(max_start[1], <, min_start[2]);
  free(out);
  redisFree(c);
}

/* A subscriber sees events with absolute counters and the final one with
 * done = total; watch exits 3 when items failed. */
static void test_events_and_watch(void) {
  const char *q = itest_queue("events");
  const char *path = write_items("ev.jsonl", 500, "e", "sleep", "{\"ms\":5,\"fail_rate\":0}");
  redisContext *c = itest_conn();
  redisContext *sub = itest_conn();
  char batch[64];
  char chan[256];
  redisReply *r;
  long long last_done = -1;
  int final_seen = 0;
  pid_t w;
  pid_t watcher;
  int status;
  char werr[600];

  snprintf(batch, sizeof(batch), "%s", submit(q, path, NULL));
  snprintf(chan, sizeof(chan), "sluice:{%s}:events:%s", q, batch);
  r = itest_cmd(sub, "SSUBSCRIBE %s", chan);
  freeReplyObject(r);
  snprintf(werr, sizeof(werr), "%s", itest_path("watch.err"));
  {
    const char *args[] = {"watch", "--redis", itest_url(), "--queue", q, batch, NULL};

    watcher = itest_spawn(args, NULL, werr);
  }
  w = itest_worker(q, 100);
  while (!final_seen) {
    cJSON *j;

    CHECK(redisGetReply(sub, (void **)&r) == REDIS_OK);
    j = cJSON_Parse(r->element[2]->str);
    CHECK(j != NULL);
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(j, "batch")->valuestring, batch);
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(j, "queue")->valuestring, q);
    CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "total")->valuedouble, ==, 500);
    {
      long long done = (long long)cJSON_GetObjectItemCaseSensitive(j, "done")->valuedouble;
      long long ok = (long long)cJSON_GetObjectItemCaseSensitive(j, "succeeded")->valuedouble;
      long long bad = (long long)cJSON_GetObjectItemCaseSensitive(j, "failed")->valuedouble;

      CHECK_INT(done, >=, last_done); /* absolute, never going back */
      CHECK_INT(ok + bad, ==, done);
      last_done = done;
      CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "pct")));
      CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "ts")));
      if (strcmp(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "completed") == 0) {
        CHECK_INT(done, ==, 500);
        CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "pct")->valuedouble, ==, 100);
        final_seen = 1;
      }
    }
    cJSON_Delete(j);
    freeReplyObject(r);
  }
  waitpid(watcher, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK_INT(WEXITSTATUS(status), ==, 0);

  /* A batch with failures: watch exits 3. */
  {
    const char *p2 = write_items("fail.jsonl", 20, "f", "sleep", "{\"ms\":1,\"fail_rate\":1}");
    char b2[64];
    const char *args[] = {"watch", "--redis", itest_url(), "--queue", q, b2, NULL};
    char *err = NULL;

    snprintf(b2, sizeof(b2), "%s", submit(q, p2, NULL));
    CHECK_INT(itest_run(args, NULL, &err, 60), ==, 3);
    CHECK_CONTAINS(err, "failed 20");
    free(err);
  }
  itest_stop_ok(w);
  redisFree(sub);
  redisFree(c);
}

/* status --json carries the event fields and timings; results --failed
 * shows only failed items, each with its real error. */
static void test_status_and_failed_results(void) {
  const char *q = itest_queue("status");
  const char *path = itest_path("mixed.jsonl");
  const char *data = "{\"id\":\"ok\",\"type\":\"noop\",\"payload\":null}\n"
                     "{\"id\":\"bad\",\"type\":\"sleep\",\"payload\":{\"ms\":1,\"fail_rate\":1}}\n"
                     "{\"id\":\"alien\",\"type\":\"resize\",\"payload\":{}}\n";
  redisContext *c = itest_conn();
  char batch[64];
  char *out = NULL;
  cJSON *j;
  pid_t w;

  itest_write(path, data, strlen(data));
  snprintf(batch, sizeof(batch), "%s", submit(q, path, NULL));
  w = itest_worker(q, 4);
  itest_wait_batch(c, q, batch, 30);
  itest_stop_ok(w);
  {
    const char *args[] = {"status", "--json", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
  }
  j = cJSON_Parse(out);
  CHECK(j != NULL);
  CHECK_STR(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "completed");
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "total")->valuedouble, ==, 3);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "succeeded")->valuedouble, ==, 1);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "failed")->valuedouble, ==, 2);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "pct")->valuedouble, ==, 100);
  CHECK(cJSON_GetObjectItemCaseSensitive(j, "finished_at")->valuedouble >=
        cJSON_GetObjectItemCaseSensitive(j, "started_at")->valuedouble);
  CHECK(cJSON_GetObjectItemCaseSensitive(j, "started_at")->valuedouble >=
        cJSON_GetObjectItemCaseSensitive(j, "created_at")->valuedouble);
  cJSON_Delete(j);
  free(out);
  {
    const char *args[] = {"results", "--failed", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
  }
  CHECK(strstr(out, "\"id\":\"ok\"") == NULL);
  CHECK_CONTAINS(out, "simulated failure");
  /* A type no worker serves fails with which type, which worker, what it serves. */
  CHECK_CONTAINS(out, "no handler for type \\\"resize\\\" on worker ");
  CHECK_CONTAINS(out, "(it serves: noop, sleep, http)");
  CHECK(strstr(out, "unknown error") == NULL);
  free(out);
  {
    const char *args[] = {"batches", "--redis", itest_url(), "--queue", q, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, batch);
    CHECK_CONTAINS(out, "completed");
    free(out);
  }
  redisFree(c);
}

static const sl_test tests[] = {
    {"noop_10k_two_workers", test_noop_10k_two_workers, 180},
    {"strict_priority", test_strict_priority, 60},
    {"events_and_watch", test_events_and_watch, 60},
    {"status_and_failed_results", test_status_and_failed_results, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
