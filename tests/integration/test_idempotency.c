/*
 * Idempotent batches: `sluice submit --idempotency-key KEY` writes a batch
 * once, however often it is run, and the caller always learns which batch
 * holds the items.
 *
 * - twice: the second submit writes nothing, prints the first id (exit 0)
 *   and says so on stderr with the first batch's status; a different key is
 *   a new batch;
 * - during: a second submit while the first is still writing (200,000
 *   items in chunks of 50, the producer held with SIGSTOP midway) gets the
 *   first batch, `submitting`; the first then finishes whole;
 * - killed: a producer killed with SIGKILL midway; a resubmit with the same
 *   key gets the batch it left (still `submitting`, which is its real
 *   status) and writes nothing; `cancel` ends it;
 * - dedupe: every item of a submit skipped by its `dedupe` key: --json names
 *   the batch and index holding each, and stderr says the new batch is
 *   empty.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

/* A file of n noop items, one per line; its path into out (itest_path's
 * buffers are reused by later calls). */
static const char *items_file(const char *name, size_t n, char *out, size_t outlen) {
  const char *path = itest_path(name);
  char *buf = malloc(n * 48 + 1);
  size_t len = 0;

  CHECK(buf != NULL);
  for (size_t i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, n * 48 + 1 - len, "{\"type\":\"noop\",\"payload\":%zu}\n", i);
  itest_write(path, buf, len);
  free(buf);
  snprintf(out, outlen, "%s", path);
  return out;
}

/* How many batches queue q has (its index). */
static long long nbatches(redisContext *c, const char *q) {
  redisReply *r = itest_cmd(c, "ZCARD sluice:{%s}:batches", q);
  long long n = r->integer;

  freeReplyObject(r);
  return n;
}

/* The id printed on stdout (its first line), into id. */
static void first_line(const char *out, char *id, size_t len) {
  snprintf(id, len, "%.*s", (int)strcspn(out, "\n"), out);
}

static void test_twice(void) {
  const char *q = itest_queue("twice");
  char pbuf[512];
  const char *path = items_file("twice.jsonl", 300, pbuf, sizeof(pbuf));
  redisContext *c = itest_conn();
  char first[80];
  char *out = NULL;
  char *err = NULL;
  const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, "--idempotency-key", "order-17", path, NULL};
  const char *other[] = {"submit", "--redis", itest_url(), "--queue", q, "--idempotency-key", "order-18", path, NULL};

  CHECK_INT(itest_run(args, &out, &err, 60), ==, 0);
  first_line(out, first, sizeof(first));
  CHECK_INT((long long)strlen(first), ==, 26);
  /* nothing but the warning that no worker runs the queue (this test starts none) */
  CHECK(err[0] == '\0' || (strncmp(err, "sluice: warning: no live worker serves queue ", 45) == 0 &&
                           strchr(err, '\n') == err + strlen(err) - 1));
  free(out);
  free(err);
  CHECK_INT(itest_run(args, &out, &err, 60), ==, 0);
  CHECK(strncmp(out, first, strlen(first)) == 0 && strcmp(out + strlen(first), "\n") == 0);
  CHECK_CONTAINS(err, "idempotency key \"order-17\" was used by batch ");
  CHECK_CONTAINS(err, first);
  CHECK_CONTAINS(err, "nothing was submitted. That batch is queued, 0 of 300 items done");
  free(out);
  free(err);
  CHECK_INT(nbatches(c, q), ==, 1);
  CHECK_INT(itest_batch_num(c, q, first, "total"), ==, 300);
  {
    redisReply *r = itest_cmd(c, "XLEN sluice:{%s}:s:normal", q);

    CHECK_INT(r->integer, ==, 300); /* not 600 */
    freeReplyObject(r);
  }
  CHECK_INT(itest_run(other, &out, NULL, 60), ==, 0);
  CHECK(strncmp(out, first, 26) != 0);
  free(out);
  CHECK_INT(nbatches(c, q), ==, 2);
  {
    const char *js[] = {"submit", "--json", "--redis", itest_url(), "--queue", q, "--idempotency-key", "order-17",
                        path, NULL};

    CHECK_INT(itest_run(js, &out, NULL, 60), ==, 0);
    CHECK_CONTAINS(out, "\"reused\":true");
    CHECK_CONTAINS(out, first);
    free(out);
  }
  redisFree(c);
}

/* Starts a submit of path with key into q and waits until its batch exists
 * with at least `min` items written; its id into batch. */
static pid_t start_big(redisContext *c, const char *q, const char *path, const char *key, long long min,
                       char *batch, size_t len) {
  const char *args[] = {"submit", "--chunk", "50", "--redis", itest_url(), "--queue", q, "--idempotency-key", key,
                        path, NULL};
  pid_t prod = itest_spawn(args, NULL, NULL);
  long long t0 = itest_ms();

  for (;;) {
    redisReply *r = itest_cmd(c, "ZRANGE sluice:{%s}:batches 0 0", q);

    if (r->elements == 1) {
      snprintf(batch, len, "%s", r->element[0]->str);
      freeReplyObject(r);
      if (itest_batch_num(c, q, batch, "submitted") >= min)
        return prod;
    } else {
      freeReplyObject(r);
    }
    if (itest_ms() - t0 > 30000)
      sl_test_fail(__FILE__, __LINE__, "the first submit wrote no %lld items in 30 s", min);
    usleep(1000);
  }
}

static void test_during(void) {
  const char *q = itest_queue("during");
  char pbuf[512];
  const char *path = items_file("during.jsonl", 200000, pbuf, sizeof(pbuf));
  redisContext *c = itest_conn();
  char batch[80];
  char *out = NULL;
  char *err = NULL;
  pid_t prod = start_big(c, q, path, "nightly-2026-12-02", 50, batch, sizeof(batch));
  const char *again[] = {"submit", "--redis", itest_url(), "--queue", q, "--idempotency-key", "nightly-2026-12-02",
                         path, NULL};
  int status;

  /* Held (SIGSTOP) midway, so the second submit surely meets it unfinished
   * however slow this machine is; it carries on (SIGCONT) afterwards. */
  kill(prod, SIGSTOP);
  CHECK_INT(itest_run(again, &out, &err, 120), ==, 0);
  kill(prod, SIGCONT);
  CHECK(strncmp(out, batch, strlen(batch)) == 0);
  CHECK_CONTAINS(err, "was used by batch ");
  /* still being written: the real status of the first batch */
  CHECK_CONTAINS(err, "That batch is submitting");
  printf("    while the first submit runs: %s", err);
  free(out);
  free(err);
  CHECK_INT(waitpid(prod, &status, 0), ==, prod);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_INT(nbatches(c, q), ==, 1);
  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, 200000);
  CHECK_INT(itest_batch_num(c, q, batch, "whole"), ==, 1);
  redisFree(c);
}

static void test_killed(void) {
  const char *q = itest_queue("killed");
  char pbuf[512];
  const char *path = items_file("killed.jsonl", 200000, pbuf, sizeof(pbuf));
  redisContext *c = itest_conn();
  char batch[80];
  char *out = NULL;
  char *err = NULL;
  pid_t prod = start_big(c, q, path, "import-42", 1000, batch, sizeof(batch));
  const char *again[] = {"submit", "--redis", itest_url(), "--queue", q, "--idempotency-key", "import-42", path, NULL};
  long long submitted;
  pid_t w;

  kill(prod, SIGKILL);
  waitpid(prod, NULL, 0);
  submitted = itest_batch_num(c, q, batch, "submitted");
  CHECK_INT(itest_batch_num(c, q, batch, "whole"), ==, 0);
  CHECK_INT(itest_run(again, &out, &err, 120), ==, 0);
  CHECK(strncmp(out, batch, strlen(batch)) == 0);
  CHECK_CONTAINS(err, "That batch is submitting");
  free(out);
  free(err);
  CHECK_INT(nbatches(c, q), ==, 1);
  CHECK_INT(itest_batch_num(c, q, batch, "submitted"), ==, submitted); /* nothing written */
  {
    const char *args[] = {"cancel", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
  }
  w = itest_worker(q, 100);
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, submitted);
  CHECK_INT(itest_batch_num(c, q, batch, "cancelled"), ==, submitted);
  printf("    killed after %lld of 200000 items; the resubmit got that batch, which cancel ended\n", submitted);
  redisFree(c);
}

static void test_dedupe(void) {
  const char *q = itest_queue("dedupe");
  const char *path = itest_path("dd.jsonl");
  static const char items[] = "{\"id\":\"a\",\"type\":\"noop\",\"payload\":{},\"dedupe\":\"img-1\"}\n"
                              "{\"id\":\"b\",\"type\":\"noop\",\"payload\":{},\"dedupe\":\"img-2\"}\n";
  const char *args[] = {"submit", "--json", "--redis", itest_url(), "--queue", q, path, NULL};
  char first[80];
  char want[400];
  char *out = NULL;
  char *err = NULL;

  itest_write(path, items, sizeof(items) - 1);
  CHECK_INT(itest_run(args, &out, NULL, 60), ==, 0);
  CHECK_CONTAINS(out, "\"skipped\":0");
  CHECK(strncmp(out, "{\"batch\":\"", 10) == 0);
  snprintf(first, sizeof(first), "%.26s", out + 10);
  free(out);
  CHECK_INT(itest_run(args, &out, &err, 60), ==, 0);
  CHECK_CONTAINS(out, "\"submitted\":0,\"skipped\":2,\"skipped_ids\":[\"a\",\"b\"]");
  snprintf(want, sizeof(want), "\"skipped_in\":[{\"id\":\"a\",\"batch\":\"%s\",\"index\":0},{\"id\":\"b\",\"batch\":\"%s\","
           "\"index\":1}]", first, first);
  CHECK_CONTAINS(out, want);
  CHECK_CONTAINS(err, "2 of 2 items skipped");
  CHECK_CONTAINS(err, "every item was skipped: batch ");
  CHECK_CONTAINS(err, "is empty and completed (0 of 0)");
  free(out);
  free(err);
}

static const sl_test tests[] = {
    {"twice", test_twice, 60},
    {"during", test_during, 180},
    {"killed", test_killed, 180},
    {"dedupe", test_dedupe, 60},
    {NULL, NULL, 0, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
