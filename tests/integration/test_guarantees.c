/*
 * Guarantees at the protocol level, with real faults where there are any:
 * a second completion of an item changes nothing (exactly-once effects), a
 * producer killed with SIGKILL mid-submit leaves a batch that says it is
 * incomplete and can be cancelled, and re-sent chunks are not written twice.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

/* Submits one chunk of a batch directly, as a producer in any language
 * would (docs/PROTOCOL.md). Items are noop items with ids PREFIX-i. */
static redisReply *submit_chunk(redisContext *c, const char *q, const char *batch, int seq, int last,
                                int first_idx, int n) {
  const char *argv[256];
  size_t lens[256];
  char bkey[128], s1[128], s2[128], s3[128], d[64][128], prefix[96], seq_s[16];
  int k = 0;

  snprintf(bkey, sizeof(bkey), "sluice:{%s}:b:%s", q, batch);
  snprintf(s1, sizeof(s1), "sluice:{%s}:s:high", q);
  snprintf(s2, sizeof(s2), "sluice:{%s}:s:normal", q);
  snprintf(s3, sizeof(s3), "sluice:{%s}:s:low", q);
  snprintf(prefix, sizeof(prefix), "sluice:{%s}:", q);
  snprintf(seq_s, sizeof(seq_s), "%d", seq);
  argv[k++] = "FCALL";
  argv[k++] = "sluice_v1_submit";
  argv[k++] = "5";
  argv[k++] = bkey;
  argv[k++] = s1;
  argv[k++] = s2;
  argv[k++] = s3;
  {
    static char zkey[128];

    snprintf(zkey, sizeof(zkey), "sluice:{%s}:batches", q);
    argv[k++] = zkey;
  }
  argv[k++] = batch;
  argv[k++] = q;
  argv[k++] = prefix;
  argv[k++] = seq_s;
  argv[k++] = last ? "1" : "0";
  argv[k++] = "";
  argv[k++] = "workers";
  argv[k++] = "items"; /* the items take the batch's next indexes: first_idx on */
  for (int i = 0; i < n && i < 64; i++) {
    snprintf(d[i], sizeof(d[i]), "{\"id\":\"x-%d\",\"type\":\"noop\",\"payload\":{},\"max_attempts\":1,\"timeout_ms\":1000}",
             first_idx + i);
    argv[k++] = d[i];
  }
  for (int i = 0; i < k; i++)
    lens[i] = strlen(argv[i]);
  return redisCommandArgv(c, k, argv, lens);
}

static void ensure_library(const char *q) {
  const char *args[] = {"batches", "--redis", itest_url(), "--queue", q, NULL};

  CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0); /* loads the function library */
}

/* Completing the same item twice, as a worker whose item was taken over
 * would, changes no counter and adds no result. */
static void test_complete_twice(void) {
  const char *q = itest_queue("twice");
  redisContext *c = itest_conn();
  const char *batch = "01TWICE0000000000000000000";
  redisReply *r;
  char first_line[] = "{\"id\":\"x-0\",\"status\":\"succeeded\",\"attempts\":1,\"result\":1}";
  char second_line[] = "{\"id\":\"x-0\",\"status\":\"failed\",\"attempts\":2,\"error\":\"late\"}";
  char eid[64];

  ensure_library(q);
  r = submit_chunk(c, q, batch, 0, 1, 0, 2);
  CHECK(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 2);
  freeReplyObject(r);
  /* Take both items as consumer "a". */
  r = itest_cmd(c, "FCALL sluice_v1_fetch 3 sluice:{%s}:s:high sluice:{%s}:s:normal sluice:{%s}:s:low workers a 10 sluice:{%s}: %s",
                q, q, q, q, q);
  CHECK(r->type == REDIS_REPLY_ARRAY);
  CHECK_INT(r->elements, ==, 1 + 2 * 10); /* next retry due, then 10 per item */
  CHECK_INT(r->element[0]->integer, ==, 0);
  CHECK_STR(r->element[3]->str, batch);
  CHECK_STR(r->element[4]->str, "0");
  snprintf(eid, sizeof(eid), "%s", r->element[2]->str);
  freeReplyObject(r);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, batch);
  CHECK_STR(r->str, "running");
  freeReplyObject(r);

  r = itest_cmd(c, "FCALL sluice_v1_complete 3 sluice:{%s}:s:high sluice:{%s}:s:normal sluice:{%s}:s:low workers sluice:{%s}: %s a 2 %s %s 0 s %s 0 %s %s",
                q, q, q, q, q, eid, batch, first_line, "", "");
  CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 1);
  CHECK_INT(r->element[0]->integer, ==, 1);
  freeReplyObject(r);
  /* The second completion (another outcome, another stream id, as after a
   * retry) is recognized and changes nothing. */
  for (int i = 0; i < 3; i++) {
    r = itest_cmd(c, "FCALL sluice_v1_complete 3 sluice:{%s}:s:high sluice:{%s}:s:normal sluice:{%s}:s:low workers sluice:{%s}: %s a 2 %s %s 0 f %s 0 %s %s",
                  q, q, q, q, q, i == 0 ? eid : "1-1", batch, second_line, "{}", "");
    CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    CHECK_INT(r->element[0]->integer, ==, 0);
    freeReplyObject(r);
  }
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, 1);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 1);
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, 0);
  r = itest_cmd(c, "HLEN sluice:{%s}:b:%s:r", q, batch);
  CHECK_INT(r->integer, ==, 1);
  freeReplyObject(r);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 0", q, batch);
  CHECK_STR(r->str, first_line);
  freeReplyObject(r);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, batch);
  CHECK_STR(r->str, "running"); /* one of two items done */
  freeReplyObject(r);
  redisFree(c);
}

/* Chunks: a re-sent chunk (lost reply) is not written twice; a chunk after a
 * missing one is refused; chunk 0 of an existing batch is refused. */
static void test_chunk_resend_and_order(void) {
  const char *q = itest_queue("chunks");
  redisContext *c = itest_conn();
  const char *batch = "01CHUNKS000000000000000000";
  redisReply *r;

  ensure_library(q);
  r = submit_chunk(c, q, batch, 0, 0, 0, 5);
  CHECK_INT(r->integer, ==, 5);
  freeReplyObject(r);
  r = submit_chunk(c, q, batch, 0, 0, 0, 5); /* sent again */
  CHECK_INT(r->integer, ==, 5);
  freeReplyObject(r);
  r = submit_chunk(c, q, batch, 2, 1, 10, 5); /* chunk 1 missing */
  CHECK(r->type == REDIS_REPLY_ERROR);
  CHECK_CONTAINS(r->str, "SLUICE_ORDER");
  freeReplyObject(r);
  r = submit_chunk(c, q, batch, 1, 1, 5, 5);
  CHECK_INT(r->integer, ==, 10);
  freeReplyObject(r);
  r = submit_chunk(c, q, batch, 1, 1, 5, 5); /* the last chunk again */
  CHECK_INT(r->integer, ==, 10);
  freeReplyObject(r);
  r = itest_cmd(c, "XLEN sluice:{%s}:s:normal", q);
  CHECK_INT(r->integer, ==, 10);
  freeReplyObject(r);
  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, 10);
  CHECK_INT(itest_batch_num(c, q, batch, "whole"), ==, 1);
  redisFree(c);
}

/* A producer killed with SIGKILL in the middle of a submit leaves a batch
 * that is visibly incomplete (never whole), and cancel ends it with exact
 * counters; items of the cancelled batch never start. */
static void test_producer_killed_midway(void) {
  const char *q = itest_queue("killed");
  const char *path = itest_path("big.jsonl");
  redisContext *c = itest_conn();
  size_t n = 200000;
  char *buf = malloc(n * 48);
  size_t len = 0;
  char batch[64] = "";
  pid_t prod;
  long long t0;
  redisReply *r;
  char *out = NULL;
  pid_t w;

  for (size_t i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, n * 48 - len, "{\"type\":\"noop\",\"payload\":%zu}\n", i);
  itest_write(path, buf, len);
  free(buf);
  {
    const char *args[] = {"submit", "--chunk", "50", "--redis", itest_url(), "--queue", q, path, NULL};

    prod = itest_spawn(args, NULL, NULL);
  }
  /* Kill it as soon as some items are in. */
  t0 = itest_ms();
  for (;;) {
    r = itest_cmd(c, "ZRANGE sluice:{%s}:batches 0 0", q);
    if (r->elements == 1) {
      snprintf(batch, sizeof(batch), "%s", r->element[0]->str);
      freeReplyObject(r);
      if (itest_batch_num(c, q, batch, "submitted") >= 1000)
        break;
    } else {
      freeReplyObject(r);
    }
    CHECK(itest_ms() - t0 < 30000);
    usleep(1000);
  }
  kill(prod, SIGKILL);
  waitpid(prod, NULL, 0);
  CHECK_INT(itest_batch_num(c, q, batch, "whole"), ==, 0);
  CHECK_INT(itest_batch_num(c, q, batch, "submitted"), <, (long long)n);
  {
    const char *args[] = {"status", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "submitting: INCOMPLETE");
    free(out);
  }
  {
    const char *args[] = {"status", "--json", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "\"incomplete\":true");
    CHECK_CONTAINS(out, "\"status\":\"submitting\"");
    free(out);
  }
  {
    const char *args[] = {"cancel", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
  }
  {
    long long submitted = itest_batch_num(c, q, batch, "submitted");

    CHECK_INT(itest_batch_num(c, q, batch, "whole"), ==, 1);
    CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, submitted);
    w = itest_worker(q, 100);
    itest_wait_batch(c, q, batch, 60);
    itest_stop_ok(w);
    CHECK_INT(itest_batch_num(c, q, batch, "cancelled"), ==, submitted);
    CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 0);
    CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, submitted);
    r = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, batch);
    CHECK_STR(r->str, "cancelled");
    freeReplyObject(r);
    r = itest_cmd(c, "HLEN sluice:{%s}:b:%s:r", q, batch);
    CHECK_INT(r->integer, ==, submitted); /* one result per item */
    freeReplyObject(r);
    r = itest_cmd(c, "XLEN sluice:{%s}:s:normal", q);
    CHECK_INT(r->integer, ==, 0);
    freeReplyObject(r);
  }
  redisFree(c);
}

/* Items that already ran before a cancel keep their outcome; the batch of a
 * dead producer ends once cancelled. */
static void test_cancel_after_items_ran(void) {
  const char *q = itest_queue("ranthen");
  redisContext *c = itest_conn();
  const char *batch = "01RANTHEN00000000000000000";
  redisReply *r;
  pid_t w;
  long long t0 = itest_ms();

  ensure_library(q);
  r = submit_chunk(c, q, batch, 0, 0, 0, 3); /* the producer dies after this */
  freeReplyObject(r);
  w = itest_worker(q, 4);
  while (itest_batch_num(c, q, batch, "done") < 3) {
    CHECK(itest_ms() - t0 < 20000);
    usleep(10000);
  }
  /* All items ran, yet the batch does not look whole. */
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, batch);
  CHECK_STR(r->str, "submitting");
  freeReplyObject(r);
  {
    const char *args[] = {"cancel", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
  }
  itest_wait_batch(c, q, batch, 10);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 3);
  CHECK_INT(itest_batch_num(c, q, batch, "cancelled"), ==, 0);
  CHECK(itest_batch_num(c, q, batch, "finished_at") > 0);
  {
    const char *args[] = {"cancel", "--redis", itest_url(), "--queue", q, "01NOSUCHBATCH0000000000000", NULL};
    char *err = NULL;

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 1);
    CHECK_CONTAINS(err, "no batch 01NOSUCHBATCH0000000000000");
    free(err);
  }
  itest_stop_ok(w);
  redisFree(c);
}

static const sl_test tests[] = {
    {"complete_twice", test_complete_twice, 30},
    {"chunk_resend_and_order", test_chunk_resend_and_order, 30},
    {"producer_killed_midway", test_producer_killed_midway, 120},
    {"cancel_after_items_ran", test_cancel_after_items_ran, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
