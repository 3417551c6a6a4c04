/*
 * Failed items, dead letters and the fleet, through the real binary and a
 * real redis-server: items that fail for good leave a dead letter each;
 * `sluice retry` runs them again with exact counters and no doubled letters,
 * idempotently; `sluice dead requeue` by id, oldest N and all, skipping
 * letters whose items are no longer failed; `sluice dead purge`; and
 * `sluice workers` listing live workers and dropping a stopped one once its
 * registration expires.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

/* Writes n items {"id":"PREFIX-i","type":TYPE,"payload":PAYLOAD}; returns the
 * path (static buffer). */
static const char *write_items(const char *name, int n, const char *prefix, const char *type, const char *payload) {
  size_t cap = (size_t)n * 200 + 1;
  char *buf = malloc(cap);
  size_t len = 0;
  static char path[600];

  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"id\":\"%s-%d\",\"type\":\"%s\",\"payload\":%s}\n", prefix, i,
                            type, payload);
  snprintf(path, sizeof(path), "%s", itest_path(name));
  itest_write(path, buf, len);
  free(buf);
  return path;
}

/* Submits a file with `--max-attempts N --backoff 10 --backoff-max 20`;
 * writes the batch id into out. */
static void submit(const char *q, const char *path, int max_attempts, char out[64]) {
  char ma[16];
  const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, "--max-attempts", ma, "--backoff", "10",
                        "--backoff-max", "20", path, NULL};
  char *o = NULL;
  char *e = NULL;
  int rc;

  snprintf(ma, sizeof(ma), "%d", max_attempts);
  rc = itest_run(args, &o, &e, 60);
  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "submit exited %d: %s", rc, e);
  CHECK_INT(strlen(o), ==, 27);
  memcpy(out, o, 26);
  out[26] = '\0';
  free(o);
  free(e);
}

/* A worker whose heartbeat comes every 500 ms (visibility 1500 ms). */
static pid_t worker(const char *q) {
  const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "8", "--visibility", "1500",
                        "--block-ms", "300", "--quiet", NULL};

  return itest_spawn(args, NULL, NULL);
}

/* Runs `sluice ARGS... --redis URL --queue Q`; returns the exit code, with
 * stdout and stderr in *out and *err (free them; either may be NULL). */
static int sluice(const char *q, const char *const *args, char **out, char **err) {
  const char *argv[32];
  int k = 0;

  for (int i = 0; args[i] != NULL && k < 27; i++)
    argv[k++] = args[i];
  argv[k++] = "--redis";
  argv[k++] = itest_url();
  argv[k++] = "--queue";
  argv[k++] = q;
  argv[k] = NULL;
  return itest_run(argv, out, err, 60);
}

static long long key_len(redisContext *c, const char *cmd, const char *q, const char *suffix) {
  redisReply *r = itest_cmd(c, "%s sluice:{%s}:%s", cmd, q, suffix);
  long long n = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

  freeReplyObject(r);
  return n;
}

static long long batch_key_len(redisContext *c, const char *cmd, const char *q, const char *batch, const char *sfx) {
  redisReply *r = itest_cmd(c, "%s sluice:{%s}:b:%s%s", cmd, q, batch, sfx);
  long long n = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

  freeReplyObject(r);
  return n;
}

static void check_status(redisContext *c, const char *q, const char *batch, const char *want) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, batch);

  CHECK_STR(r->str, want);
  freeReplyObject(r);
}

/* Counters: done = succeeded + failed + cancelled, and the given values. */
static void check_counts(redisContext *c, const char *q, const char *batch, long long total, long long done,
                         long long failed) {
  long long ok = itest_batch_num(c, q, batch, "succeeded");
  long long bad = itest_batch_num(c, q, batch, "failed");
  long long can = itest_batch_num(c, q, batch, "cancelled");

  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, total);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, done);
  CHECK_INT(bad, ==, failed);
  CHECK_INT(ok + bad + can, ==, done);
  CHECK_INT(batch_key_len(c, "HLEN", q, batch, ":r"), ==, done); /* one result per finished item */
}

/* Parses JSON Lines into an array of n objects (free with free_lines). */
static cJSON **parse_lines(const char *text, int *n) {
  char *copy = strdup(text ? text : "");
  cJSON **out = calloc(4096, sizeof(*out));
  char *save = NULL;

  *n = 0;
  for (char *line = strtok_r(copy, "\n", &save); line != NULL && *n < 4096; line = strtok_r(NULL, "\n", &save)) {
    out[*n] = cJSON_Parse(line);
    if (out[*n] == NULL)
      sl_test_fail(__FILE__, __LINE__, "not a JSON line: %s", line);
    (*n)++;
  }
  free(copy);
  return out;
}

static void free_lines(cJSON **l, int n) {
  for (int i = 0; i < n; i++)
    cJSON_Delete(l[i]);
  free(l);
}

static const char *jstr(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static long long jnum(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  if (!cJSON_IsNumber(v))
    sl_test_fail(__FILE__, __LINE__, "field %s is not a number", k);
  return (long long)v->valuedouble;
}

/* The dead letters of the queue as parsed JSON objects (`dead list --json`). */
static cJSON **dead_list(const char *q, int *n) {
  const char *args[] = {"dead", "list", "--json", NULL};
  char *out = NULL;
  cJSON **l;

  CHECK_INT(sluice(q, args, &out, NULL), ==, 0);
  l = parse_lines(out, n);
  free(out);
  return l;
}

/* Checks a results hash: every line failed, with `attempts` and an "errors"
 * array of attempts - 1 earlier errors. */
static void check_results_failed(redisContext *c, const char *q, const char *batch, int n, int attempts) {
  for (int i = 0; i < n; i++) {
    redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r %d", q, batch, i);
    cJSON *j;
    const cJSON *errs;

    CHECK(r->type == REDIS_REPLY_STRING);
    j = cJSON_Parse(r->str);
    CHECK(j != NULL);
    CHECK_STR(jstr(j, "status"), "failed");
    CHECK_INT(jnum(j, "attempts"), ==, attempts);
    CHECK_CONTAINS(jstr(j, "error"), "sleep: simulated failure");
    errs = cJSON_GetObjectItemCaseSensitive(j, "errors");
    if (attempts > 1) {
      CHECK(cJSON_IsArray(errs));
      CHECK_INT(cJSON_GetArraySize(errs), ==, attempts - 1);
      CHECK_CONTAINS(cJSON_GetArrayItem(errs, 0)->valuestring, "sleep: simulated failure");
    } else {
      CHECK(errs == NULL);
    }
    cJSON_Delete(j);
    freeReplyObject(r);
  }
}

/* 1 when stream id a (MS-SEQ) comes before b. */
static int id_before(const char *a, const char *b) {
  unsigned long long ams = strtoull(a, NULL, 10);
  unsigned long long bms = strtoull(b, NULL, 10);
  const char *ad = strchr(a, '-');
  const char *bd = strchr(b, '-');

  if (ad == NULL || bd == NULL)
    sl_test_fail(__FILE__, __LINE__, "not stream ids: %s, %s", a, b);
  return ams < bms || (ams == bms && strtoull(ad + 1, NULL, 10) < strtoull(bd + 1, NULL, 10));
}

static const char fail_payload[] = "{\"ms\":1,\"fail_rate\":1}";

/* Items that exhaust their attempts end failed, each with one dead letter
 * that `dead list` shows, newest first, with the real error. */
static void test_dead_letters(void) {
  const char *q = itest_queue("letters");
  redisContext *c = itest_conn();
  char batch[64];
  cJSON **l;
  int n = 0;
  char seen[12] = {0};
  char *out = NULL;
  pid_t w;

  submit(q, write_items("f.jsonl", 12, "f", "sleep", fail_payload), 2, batch);
  w = worker(q);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  check_status(c, q, batch, "completed");
  check_counts(c, q, batch, 12, 12, 12);
  check_results_failed(c, q, batch, 12, 2);
  CHECK_INT(batch_key_len(c, "HLEN", q, batch, ":f"), ==, 12);
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 12);

  l = dead_list(q, &n);
  CHECK_INT(n, ==, 12);
  for (int i = 0; i < n; i++) {
    const char *item = jstr(l[i], "item");
    long long idx = jnum(l[i], "index");

    CHECK_STR(jstr(l[i], "batch"), batch);
    CHECK_STR(jstr(l[i], "type"), "sleep");
    CHECK_STR(jstr(l[i], "priority"), "normal");
    CHECK_INT(jnum(l[i], "attempts"), ==, 2);
    CHECK(jnum(l[i], "at") > 1700000000000LL);
    CHECK_CONTAINS(jstr(l[i], "error"), "sleep: simulated failure");
    CHECK(idx >= 0 && idx < 12);
    CHECK_INT(seen[idx], ==, 0);
    seen[idx] = 1;
    CHECK(item != NULL);
    CHECK_INT(strtol(item + 2, NULL, 10), ==, idx); /* "f-IDX" */
    if (i > 0) /* newest first: stream ids decrease */
      CHECK(id_before(jstr(l[i], "id"), jstr(l[i - 1], "id")));
  }
  {
    const char *args[] = {"dead", "list", "--json", "--limit", "3", NULL};
    cJSON **l3;
    int n3 = 0;

    CHECK_INT(sluice(q, args, &out, NULL), ==, 0);
    l3 = parse_lines(out, &n3);
    CHECK_INT(n3, ==, 3);
    for (int i = 0; i < 3; i++)
      CHECK_STR(jstr(l3[i], "id"), jstr(l[i], "id"));
    free_lines(l3, n3);
    free(out);
  }
  {
    const char *args[] = {"dead", "list", NULL};

    CHECK_INT(sluice(q, args, &out, NULL), ==, 0);
    CHECK_CONTAINS(out, "ATTEMPTS");
    CHECK_CONTAINS(out, jstr(l[0], "id"));
    CHECK_CONTAINS(out, "f-11");
    CHECK_CONTAINS(out, "sleep: simulated failure");
    free(out);
  }
  free_lines(l, n);
  redisFree(c);
}

/* `sluice retry`: the failed items run again from attempt 1, the counters go
 * back exactly and come back to failed = total, dead letters are replaced
 * (never doubled), a second retry does nothing, one event announces it. */
static void test_retry(void) {
  const char *q = itest_queue("retry");
  redisContext *c = itest_conn();
  redisContext *sub = itest_conn();
  char batch[64];
  char chan[256];
  char *err = NULL;
  redisReply *r;
  pid_t w;
  cJSON **l;
  int n = 0;

  submit(q, write_items("r.jsonl", 10, "r", "sleep", fail_payload), 2, batch);
  w = worker(q);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  check_counts(c, q, batch, 10, 10, 10);
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 10);

  snprintf(chan, sizeof(chan), "sluice:{%s}:events:%s", q, batch);
  r = itest_cmd(sub, "SSUBSCRIBE %s", chan);
  freeReplyObject(r);
  {
    const char *args[] = {"retry", batch, NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "re-queued 10 failed items");
    free(err);
  }
  /* No worker runs: the state right after the retry. */
  check_status(c, q, batch, "running");
  check_counts(c, q, batch, 10, 0, 0);
  CHECK_INT(itest_batch_num(c, q, batch, "finished_at"), ==, -1);
  CHECK_INT(batch_key_len(c, "HLEN", q, batch, ":f"), ==, 0);
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 0);
  r = itest_cmd(c, "XRANGE sluice:{%s}:s:normal - +", q);
  CHECK_INT(r->elements, ==, 10);
  for (size_t i = 0; i < r->elements; i++) {
    const redisReply *f = r->element[i]->element[1];

    CHECK_INT(f->elements, ==, 8); /* b, i, a, d, in this order */
    CHECK_STR(f->element[0]->str, "b");
    CHECK_STR(f->element[1]->str, batch);
    CHECK_STR(f->element[2]->str, "i");
    CHECK_STR(f->element[4]->str, "a");
    CHECK_STR(f->element[5]->str, "1");
    CHECK_STR(f->element[6]->str, "d");
    CHECK_CONTAINS(f->element[7]->str, "\"type\":\"sleep\"");
  }
  freeReplyObject(r);
  /* One event with the counters moved back. */
  {
    struct timeval tv = {5, 0};
    cJSON *j;

    redisSetTimeout(sub, tv);
    CHECK(redisGetReply(sub, (void **)&r) == REDIS_OK);
    j = cJSON_Parse(r->element[2]->str);
    CHECK(j != NULL);
    CHECK_STR(jstr(j, "status"), "running");
    CHECK_INT(jnum(j, "done"), ==, 0);
    CHECK_INT(jnum(j, "failed"), ==, 0);
    CHECK_INT(jnum(j, "total"), ==, 10);
    cJSON_Delete(j);
    freeReplyObject(r);
  }
  /* Idempotent: a second retry finds nothing and changes nothing. */
  {
    const char *args[] = {"retry", batch, NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "no failed items");
    free(err);
  }
  check_counts(c, q, batch, 10, 0, 0);
  CHECK_INT(key_len(c, "XLEN", q, "s:normal"), ==, 10);

  /* They fail again: counters exact, attempts restarted at 1 (so 2 again,
   * with only this run's first error), one letter per item. */
  w = worker(q);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  check_status(c, q, batch, "completed");
  CHECK(itest_batch_num(c, q, batch, "finished_at") > 0);
  check_counts(c, q, batch, 10, 10, 10);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 0);
  check_results_failed(c, q, batch, 10, 2);
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 10);
  CHECK_INT(batch_key_len(c, "HLEN", q, batch, ":f"), ==, 10);
  l = dead_list(q, &n);
  CHECK_INT(n, ==, 10);
  for (int i = 0; i < n; i++)
    CHECK_INT(jnum(l[i], "attempts"), ==, 2);
  free_lines(l, n);

  /* Errors name the cause: no such batch, a cancelled batch. */
  {
    const char *args[] = {"retry", "01NOSUCHBATCH0000000000000", NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 1);
    CHECK_CONTAINS(err, "no batch 01NOSUCHBATCH0000000000000");
    free(err);
  }
  itest_check_status_index(c, q); /* before the status is changed by hand */
  freeReplyObject(itest_cmd(c, "HSET sluice:{%s}:b:%s status cancelled", q, batch));
  {
    const char *args[] = {"retry", batch, NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 1);
    CHECK_CONTAINS(err, "was cancelled");
    free(err);
  }
  check_counts(c, q, batch, 10, 10, 10);
  CHECK_INT(key_len(c, "XLEN", q, "s:normal"), ==, 0);
  redisFree(sub);
  redisFree(c);
}

/* sluice_v1_retry in steps: 300 failed items (a failed-items hash big enough
 * to be a real hash table, walked by HSCAN from the cursor each call
 * returns) moved about 7 at a time, each exactly once, with a `more` flag
 * that ends the loop; a retry that began before the items failed moves
 * none. */
static void test_retry_steps(void) {
  const char *q = itest_queue("steps");
  redisContext *c = itest_conn();
  char batch[64];
  char cursor[32] = "0";
  char *seen = calloc(300, 1);
  long long moved = 0;
  int calls = 0;
  redisReply *r;
  pid_t w;

  submit(q, write_items("s.jsonl", 300, "s", "sleep", fail_payload), 1, batch);
  w = worker(q);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  check_counts(c, q, batch, 300, 300, 300);
  /* A retry that began before the items failed (time 1 ms) moves none of
   * them: they failed again since, as far as it knows. */
  r = itest_cmd(c,
                "FCALL sluice_v1_retry 7 sluice:{%s}:b:%s sluice:{%s}:b:%s:r sluice:{%s}:b:%s:f "
                "sluice:{%s}:s:high sluice:{%s}:s:normal sluice:{%s}:s:low sluice:{%s}:dead "
                "sluice:{%s}: %s %s 1000 workers 0 1",
                q, batch, q, batch, q, batch, q, q, q, q, q, q, batch);
  CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 3);
  CHECK_INT(r->element[0]->integer, ==, 0);
  freeReplyObject(r);
  for (;;) {
    r = itest_cmd(c,
                  "FCALL sluice_v1_retry 7 sluice:{%s}:b:%s sluice:{%s}:b:%s:r sluice:{%s}:b:%s:f "
                  "sluice:{%s}:s:high sluice:{%s}:s:normal sluice:{%s}:s:low sluice:{%s}:dead "
                  "sluice:{%s}: %s %s 7 workers %s",
                  q, batch, q, batch, q, batch, q, q, q, q, q, q, batch, cursor);
    CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 3);
    CHECK_INT(r->element[0]->integer, <=, 30); /* whole HSCAN pages of about 7 */
    moved += r->element[0]->integer;
    calls++;
    CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, 300 - moved);
    CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 300 - moved);
    snprintf(cursor, sizeof(cursor), "%s", r->element[2]->str);
    if (r->element[1]->integer == 0) {
      freeReplyObject(r);
      break;
    }
    freeReplyObject(r);
    CHECK(calls < 200);
  }
  CHECK_INT(moved, ==, 300);
  CHECK_INT(calls, >=, 20);
  CHECK_INT(batch_key_len(c, "HLEN", q, batch, ":f"), ==, 0);
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 0);
  r = itest_cmd(c, "XRANGE sluice:{%s}:s:normal - +", q);
  CHECK_INT(r->elements, ==, 300);
  for (size_t i = 0; i < r->elements; i++) {
    long idx = strtol(r->element[i]->element[1]->element[3]->str, NULL, 10);

    CHECK(idx >= 0 && idx < 300);
    CHECK_INT(seen[idx], ==, 0);
    seen[idx] = 1;
  }
  freeReplyObject(r);
  /* Malformed calls write nothing. */
  r = itest_cmd(c,
                "FCALL sluice_v1_retry 7 sluice:{%s}:b:%s sluice:{%s}:b:%s:r sluice:{%s}:b:%s:f "
                "sluice:{%s}:s:high sluice:{%s}:s:normal sluice:{%s}:s:low sluice:{%s}:dead "
                "sluice:{%s}: %s %s 0 workers",
                q, batch, q, batch, q, batch, q, q, q, q, q, q, batch);
  CHECK(r->type == REDIS_REPLY_ERROR);
  CHECK_CONTAINS(r->str, "SLUICE_ARGS");
  freeReplyObject(r);
  free(seen);
  redisFree(c);
}

/* `sluice retry` while workers fail the re-queued items again at once:
 * the retry moves each of the 2,000 failed items once and ends (items that
 * failed again after it began stay failed); before, it chased them. */
static void test_retry_while_failing(void) {
  const char *q = itest_queue("chase");
  redisContext *c = itest_conn();
  char batch[64];
  char *err = NULL;
  pid_t w[2];
  long moved = -1;

  submit(q, write_items("c.jsonl", 2000, "c", "sleep", "{\"ms\":0,\"fail_rate\":1}"), 1, batch);
  w[0] = worker(q);
  w[1] = worker(q);
  itest_wait_batch(c, q, batch, 60);
  {
    const char *args[] = {"retry", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, NULL, &err, 60), ==, 0);
  }
  CHECK(err != NULL && sscanf(strstr(err, "re-queued ") ? strstr(err, "re-queued ") : "", "re-queued %ld", &moved) == 1);
  printf("    %s", err);
  CHECK_INT(moved, <=, 2000);
  CHECK_INT(moved, >, 0);
  free(err);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w[0]);
  itest_stop_ok(w[1]);
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, 2000);
  redisFree(c);
}

/* `sluice dead requeue` by id, oldest N and all; letters of items that are no
 * longer failed are removed and skipped; `sluice dead purge` deletes the
 * letters and keeps the results. */
static void test_requeue_and_purge(void) {
  const char *q = itest_queue("requeue");
  redisContext *c = itest_conn();
  char batch[64];
  char id0[64];
  char id1[64];
  char *err = NULL;
  char *out = NULL;
  cJSON **l;
  int n = 0;
  pid_t w;

  submit(q, write_items("q.jsonl", 6, "q", "sleep", fail_payload), 1, batch);
  w = worker(q);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  check_counts(c, q, batch, 6, 6, 6);
  l = dead_list(q, &n);
  CHECK_INT(n, ==, 6);
  snprintf(id0, sizeof(id0), "%s", jstr(l[0], "id"));
  snprintf(id1, sizeof(id1), "%s", jstr(l[3], "id"));
  free_lines(l, n);

  /* By id. */
  {
    const char *args[] = {"dead", "requeue", id0, id1, NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "re-queued 2 items");
    free(err);
  }
  check_status(c, q, batch, "running");
  check_counts(c, q, batch, 6, 4, 4);
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 4);
  CHECK_INT(batch_key_len(c, "HLEN", q, batch, ":f"), ==, 4);
  CHECK_INT(key_len(c, "XLEN", q, "s:normal"), ==, 2);
  {
    const char *args[] = {"dead", "requeue", id0, id1, NULL}; /* again: nothing doubles */

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "re-queued 0 items; skipped 2 dead letters");
    free(err);
  }
  check_counts(c, q, batch, 6, 4, 4);
  CHECK_INT(key_len(c, "XLEN", q, "s:normal"), ==, 2);
  {
    const char *args[] = {"dead", "requeue", "12-x", NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 2);
    CHECK_CONTAINS(err, "invalid dead letter id \"12-x\"");
    free(err);
  }
  /* The oldest one, then all. */
  {
    const char *args[] = {"dead", "requeue", "--limit", "1", NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "re-queued 1 item");
    free(err);
  }
  check_counts(c, q, batch, 6, 3, 3);
  {
    const char *args[] = {"dead", "requeue", "--all", NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "re-queued 3 items");
    free(err);
  }
  check_counts(c, q, batch, 6, 0, 0);
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 0);
  CHECK_INT(batch_key_len(c, "HLEN", q, batch, ":f"), ==, 0);
  CHECK_INT(key_len(c, "XLEN", q, "s:normal"), ==, 6);

  /* They fail again; purge deletes the letters, the results stay. */
  w = worker(q);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  check_counts(c, q, batch, 6, 6, 6);
  check_results_failed(c, q, batch, 6, 1);
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 6);
  {
    const char *args[] = {"dead", "purge", NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "deleted 6 dead letters");
    free(err);
  }
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 0);
  check_counts(c, q, batch, 6, 6, 6);
  {
    const char *args[] = {"results", "--failed", batch, NULL};
    cJSON **rl;
    int rn = 0;

    CHECK_INT(sluice(q, args, &out, NULL), ==, 0);
    rl = parse_lines(out, &rn);
    CHECK_INT(rn, ==, 6);
    free_lines(rl, rn);
    free(out);
  }
  {
    const char *args[] = {"dead", "purge", NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "deleted 0 dead letters");
    free(err);
  }
  /* retry still works without the letters. */
  {
    const char *args[] = {"retry", batch, NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "re-queued 6 failed items");
    free(err);
  }
  check_counts(c, q, batch, 6, 0, 0);
  w = worker(q);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  check_counts(c, q, batch, 6, 6, 6);
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 6);

  /* A cancelled batch: its letters are skipped and kept. */
  itest_check_status_index(c, q); /* before the status is changed by hand */
  freeReplyObject(itest_cmd(c, "HSET sluice:{%s}:b:%s status cancelled", q, batch));
  {
    const char *args[] = {"dead", "requeue", "--all", NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "re-queued 0 items; skipped 6 dead letters");
    free(err);
  }
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 6);
  check_counts(c, q, batch, 6, 6, 6);

  /* The batch expired: its letters are removed and skipped, nothing runs. */
  freeReplyObject(itest_cmd(c, "DEL sluice:{%s}:b:%s sluice:{%s}:b:%s:r sluice:{%s}:b:%s:f", q, batch, q, batch, q,
                            batch));
  {
    const char *args[] = {"dead", "requeue", "--all", NULL};

    CHECK_INT(sluice(q, args, NULL, &err), ==, 0);
    CHECK_CONTAINS(err, "re-queued 0 items; skipped 6 dead letters");
    free(err);
  }
  CHECK_INT(key_len(c, "XLEN", q, "dead"), ==, 0);
  CHECK_INT(key_len(c, "XLEN", q, "s:normal"), ==, 0);
  redisFree(c);
}

/* The dead-letter stream is capped at about 100,000 letters (DEAD_MAX in
 * lua/_lib.lua, not configurable): 100,150 letters written straight into
 * Redis, then one item that fails for good. Its letter goes in, the oldest
 * are trimmed (whole stream nodes: MAXLEN ~), the trimmed ones are counted
 * in dead:dropped, and `dead list` and `stats` say so. */
static void test_dead_cap(void) {
  const char *q = itest_queue("cap");
  redisContext *c = itest_conn();
  const long long filler = 100150;
  char batch[64];
  char want[160];
  char *out = NULL;
  char *err = NULL;
  long long len;
  long long dropped;
  redisReply *r;
  cJSON **l;
  int n = 0;
  pid_t w;

  r = itest_cmd(c, "EVAL %s 1 sluice:{%s}:dead %lld",
                "for i = 1, tonumber(ARGV[1]) do redis.call('XADD', KEYS[1], '*', 'b', 'filler', 'i', i, 'p', 2, "
                "'a', 1, 'at', 0, 'error', 'filler letter', 'd', '') end return redis.call('XLEN', KEYS[1])",
                q, filler);
  CHECK(r->type == REDIS_REPLY_INTEGER);
  CHECK_INT(r->integer, ==, filler);
  freeReplyObject(r);
  submit(q, write_items("cap.jsonl", 1, "cap", "sleep", fail_payload), 1, batch);
  w = worker(q);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  check_counts(c, q, batch, 1, 1, 1);
  len = key_len(c, "XLEN", q, "dead");
  r = itest_cmd(c, "GET sluice:{%s}:dead:dropped", q);
  dropped = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
  freeReplyObject(r);
  printf("    dead letters: %lld + 1 written, %lld kept, %lld dropped and counted\n", filler, len, dropped);
  CHECK_INT(len, >=, 100000);
  CHECK_INT(len, <, 100000 + 150); /* trimmed to about the cap, a stream node at most above it */
  CHECK_INT(dropped, ==, filler + 1 - len);
  /* The newest letter is the item's. */
  {
    const char *args[] = {"dead", "list", "--json", "--limit", "1", NULL};

    CHECK_INT(sluice(q, args, &out, &err), ==, 0);
    l = parse_lines(out, &n);
    CHECK_INT(n, ==, 1);
    CHECK_STR(jstr(l[0], "batch"), batch);
    CHECK_STR(jstr(l[0], "item"), "cap-0");
    free_lines(l, n);
    snprintf(want, sizeof(want), "sluice: note: %lld older dead letters were dropped", dropped);
    CHECK_CONTAINS(err, want);
    free(out);
    free(err);
  }
  {
    const char *args[] = {"stats", "--json", NULL};
    cJSON *j;

    CHECK_INT(sluice(q, args, &out, NULL), ==, 0);
    j = cJSON_Parse(out);
    CHECK(j != NULL);
    CHECK_INT(jnum(j, "dead"), ==, len);
    CHECK_INT(jnum(j, "dead_dropped"), ==, dropped);
    cJSON_Delete(j);
    free(out);
  }
  {
    const char *args[] = {"stats", NULL};

    CHECK_INT(sluice(q, args, &out, NULL), ==, 0);
    CHECK_CONTAINS(out, "dead letters (older ones were dropped: the stream is capped)");
    free(out);
  }
  redisFree(c);
}

/* The pids of the workers `sluice workers --json` lists, into pids[0..*n). */
static void listed_pids(const char *q, long long *pids, int *n) {
  const char *args[] = {"workers", "--json", NULL};
  char *out = NULL;
  cJSON **l;
  int k = 0;

  CHECK_INT(sluice(q, args, &out, NULL), ==, 0);
  l = parse_lines(out, &k);
  for (int i = 0; i < k; i++) {
    CHECK_STR(jstr(l[i], "queue"), q);
    CHECK_INT(jnum(l[i], "concurrency"), ==, 8);
    CHECK(jstr(l[i], "id") != NULL && jstr(l[i], "host") != NULL);
    CHECK_INT(jnum(l[i], "last_beat_ms_ago"), >=, 0);
    CHECK_INT(jnum(l[i], "last_beat_ms_ago"), <, 3000);
    pids[i] = jnum(l[i], "pid");
  }
  *n = k;
  free_lines(l, k);
  free(out);
}

/* `sluice workers`: two live workers with their pids; one stopped with
 * SIGTERM disappears within a few seconds, though the fleet index still
 * names it. */
static void test_workers(void) {
  const char *q = itest_queue("fleet");
  redisContext *c = itest_conn();
  long long pids[8];
  int n = 0;
  long long t0;
  char *out = NULL;
  pid_t w1;
  pid_t w2;

  {
    const char *args[] = {"workers", NULL};

    CHECK_INT(sluice(q, args, &out, NULL), ==, 0); /* none yet: only the header */
    CHECK_CONTAINS(out, "LAST BEAT");
    CHECK(strchr(out, '\n') == out + strlen(out) - 1);
    free(out);
  }
  w1 = worker(q);
  w2 = worker(q);
  t0 = itest_ms();
  for (;;) {
    listed_pids(q, pids, &n);
    if (n == 2)
      break;
    CHECK(itest_ms() - t0 < 10000);
    usleep(100000);
  }
  CHECK((pids[0] == w1 && pids[1] == w2) || (pids[0] == w2 && pids[1] == w1));
  {
    const char *args[] = {"workers", NULL};
    char p1[32];
    char p2[32];

    snprintf(p1, sizeof(p1), " %d ", (int)w1);
    snprintf(p2, sizeof(p2), " %d ", (int)w2);
    CHECK_INT(sluice(q, args, &out, NULL), ==, 0);
    CHECK_CONTAINS(out, p1);
    CHECK_CONTAINS(out, p2);
    CHECK_CONTAINS(out, "0/8");
    CHECK_CONTAINS(out, " s ago");
    free(out);
  }
  /* A clean stop leaves the registry at once. */
  itest_stop_ok(w1);
  listed_pids(q, pids, &n);
  CHECK_INT(n, ==, 1);
  CHECK_INT(pids[0], ==, w2);
  /* A killed worker drops out when its registration expires. */
  kill(w2, SIGKILL);
  waitpid(w2, NULL, 0);
  t0 = itest_ms();
  for (;;) {
    listed_pids(q, pids, &n);
    if (n == 0)
      break;
    CHECK_INT(n, ==, 1);
    CHECK(itest_ms() - t0 < 6000); /* registration TTL: 3 beats of 500 ms + 1 s */
    usleep(100000);
  }
  {
    redisReply *r = itest_cmd(c, "ZCARD sluice:{%s}:workers", q);

    CHECK_INT(r->integer, ==, 1); /* the stale member is there, and skipped */
    freeReplyObject(r);
  }
  redisFree(c);
}

/* A dead letter is capped in bytes: an item of 300 KB that fails for good
 * leaves a letter with only its id and type (and `dcut`, its size) and the
 * first 2,048 bytes of the error; `dead list` still names it, and `dead
 * requeue` puts the whole item back, read from the batch's failed list. */
static void test_dead_letter_bytes(void) {
  const char *q = itest_queue("deadbytes");
  enum { PAD = 300000 };
  size_t cap = PAD + 256;
  char *item = malloc(cap);
  const char *opts[] = {"--max-attempts", "1", NULL};
  redisContext *c = itest_conn();
  char batch[64];
  size_t len;
  size_t full;
  pid_t w;
  redisReply *r;
  char *out = NULL;

  len = (size_t)snprintf(item, cap, "{\"id\":\"big\",\"type\":\"nohandler\",\"payload\":\"");
  memset(item + len, 'x', PAD);
  len += PAD;
  len += (size_t)snprintf(item + len, cap - len, "\"}\n");
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, item, len, opts));
  free(item);
  r = itest_cmd(c, "XRANGE sluice:{%s}:s:normal - +", q);
  CHECK_INT(r->elements, ==, 1);
  full = r->element[0]->element[1]->element[7]->len; /* b B i I a A d D: the normalized item */
  freeReplyObject(r);
  w = worker(q);
  itest_wait_batch(c, q, batch, 30);
  itest_stop_ok(w);
  r = itest_cmd(c, "XRANGE sluice:{%s}:dead - +", q);
  CHECK_INT(r->elements, ==, 1);
  {
    const redisReply *f = r->element[0]->element[1];
    const char *d = NULL;
    const char *cut = NULL;
    size_t dlen = 0;
    size_t elen = 0;

    for (size_t i = 0; i + 1 < f->elements; i += 2) {
      if (strcmp(f->element[i]->str, "d") == 0) {
        d = f->element[i + 1]->str;
        dlen = f->element[i + 1]->len;
      } else if (strcmp(f->element[i]->str, "dcut") == 0) {
        cut = f->element[i + 1]->str;
      } else if (strcmp(f->element[i]->str, "error") == 0) {
        elen = f->element[i + 1]->len;
      }
    }
    printf("    a %zu-byte item failed for good: its letter keeps %zu bytes of it (%s), dcut %s, error %zu bytes\n",
           full, dlen, d != NULL ? d : "-", cut != NULL ? cut : "-", elen);
    CHECK(d != NULL && dlen <= 1024);
    CHECK_CONTAINS(d, "\"type\":\"nohandler\"");
    CHECK(cut != NULL && strtoull(cut, NULL, 10) == full);
    CHECK(elen <= 2048);
  }
  freeReplyObject(r);
  {
    const char *args[] = {"dead", "list", "--json", NULL};

    CHECK_INT(sluice(q, args, &out, NULL), ==, 0);
    CHECK_CONTAINS(out, "\"type\":\"nohandler\"");
    free(out);
  }
  {
    const char *args[] = {"dead", "requeue", "--all", NULL};

    CHECK_INT(sluice(q, args, NULL, NULL), ==, 0);
  }
  /* No worker runs: the item back in its stream is the whole one. */
  r = itest_cmd(c, "XRANGE sluice:{%s}:s:normal - +", q);
  CHECK_INT(r->elements, ==, 1);
  CHECK_INT(r->element[0]->element[1]->element[7]->len, ==, full);
  freeReplyObject(r);
  redisFree(c);
}

static const sl_test tests[] = {
    {"dead_letters", test_dead_letters, 90},
    {"dead_letter_bytes", test_dead_letter_bytes, 90},
    {"retry", test_retry, 120},
    {"retry_steps", test_retry_steps, 90},
    {"retry_while_failing", test_retry_while_failing, 120},
    {"requeue_and_purge", test_requeue_and_purge, 120},
    {"workers", test_workers, 60},
    {"dead_cap", test_dead_cap, 120},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
