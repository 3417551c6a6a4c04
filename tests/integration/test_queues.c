/*
 * One worker process serving several queues (--queue a,b,c): exact counters
 * on every queue, slots shared by --queue-weights, an idle queue lending
 * its share, every queue's own claims and heartbeats (the worker joins each
 * queue's fleet), takeover of a killed multi-queue worker's items on every
 * queue, and the option errors.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

#define NQ 6

/* n items of one type and payload, as JSON Lines; returns the text (free it). */
static char *items(int n, const char *type, const char *payload, size_t *len) {
  size_t cap = (size_t)n * 128 + 1;
  char *buf = malloc(cap);
  size_t off = 0;

  for (int i = 0; i < n; i++)
    off += (size_t)snprintf(buf + off, cap - off, "{\"id\":\"i-%d\",\"type\":\"%s\",\"payload\":%s}\n", i, type,
                            payload);
  *len = off;
  return buf;
}

/* Queue names q[0..n) unique to this test ("NAME-K"), and their list "a,b,c". */
static void queue_names(const char *name, int n, char q[][64], char *list, size_t listlen) {
  size_t off = 0;

  for (int i = 0; i < n; i++) {
    char part[32];

    snprintf(part, sizeof(part), "%s%d", name, i);
    snprintf(q[i], 64, "%s", itest_queue(part));
    off += (size_t)snprintf(list + off, listlen - off, "%s%s", i ? "," : "", q[i]);
  }
}

/* Six queues with 300 items each (ten failing), one worker
 * serving all six: every batch completes with exact counters, every queue
 * drains, and the worker stopped cleanly. */
static void test_six_queues_exact(void) {
  char q[NQ][64];
  char list[512];
  char batch[NQ][32];
  redisContext *c = itest_conn();
  size_t len;
  char *ok = items(290, "noop", "{\"x\":1}", &len);
  char *bad = items(10, "sleep", "{\"ms\":1,\"fail_rate\":1}", &len);
  const char *const once[] = {"--max-attempts", "1", NULL};
  pid_t w;

  queue_names("six", NQ, q, list, sizeof(list));
  for (int i = 0; i < NQ; i++) {
    /* 290 noop items and 10 that fail, in one batch of one attempt per item */
    size_t n1 = strlen(ok);
    size_t n2 = strlen(bad);
    char *all = malloc(n1 + n2 + 1);

    memcpy(all, ok, n1);
    for (size_t k = 0, o = n1; k < n2; k++) /* ids i-290..i-299 */
      all[o++] = bad[k];
    all[n1 + n2] = '\0';
    /* the second set's ids collide with the first's: rename them */
    for (char *p = all + n1; (p = strstr(p, "\"i-")) != NULL; p += 3)
      p[1] = 'j';
    snprintf(batch[i], sizeof(batch[i]), "%s", itest_submit(q[i], all, n1 + n2, once));
    free(all);
  }
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", list, "--concurrency", "12",
                          "--block-ms", "200", NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  for (int i = 0; i < NQ; i++)
    itest_wait_worker(c, q[i], w, NULL, 0, 15000); /* it joined every queue's fleet: its own beats there */
  for (int i = 0; i < NQ; i++) {
    itest_wait_batch(c, q[i], batch[i], 120);
    CHECK_INT(itest_batch_num(c, q[i], batch[i], "total"), ==, 300);
    CHECK_INT(itest_batch_num(c, q[i], batch[i], "succeeded"), ==, 290);
    CHECK_INT(itest_batch_num(c, q[i], batch[i], "failed"), ==, 10);
    CHECK_INT(itest_batch_num(c, q[i], batch[i], "done"), ==, 300);
  }
  itest_stop_ok(w);
  {
    char *log = itest_read(itest_errpath(w), NULL);

    CHECK_CONTAINS(log, "serving queues");
    /* one stop line per queue, each with its own count */
    CHECK_INT(itest_count(log, "stopped: 290 succeeded, 10 failed"), ==, NQ);
    free(log);
  }
  for (int i = 0; i < NQ; i++)
    itest_check_drained(c, q[i]);
  free(ok);
  free(bad);
  redisFree(c);
}

/* Three queues with sleep items, weights 3,2,1, 6 slots: while all three
 * have work, they finish items in the ratio of their weights. */
static void test_weights_share_slots(void) {
  char q[3][64];
  char list[256];
  char batch[3][32];
  redisContext *c = itest_conn();
  size_t len;
  char *text = items(400, "sleep", "{\"ms\":30}", &len);
  long long done[3];
  long long total;
  pid_t w;

  queue_names("wt", 3, q, list, sizeof(list));
  for (int i = 0; i < 3; i++)
    snprintf(batch[i], sizeof(batch[i]), "%s", itest_submit(q[i], text, len, NULL));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", list, "--queue-weights", "3,2,1",
                          "--concurrency", "6", "--block-ms", "200", "--quiet", NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  /* 300 ended: the first queue (half the slots) is near 150 of its 400,
   * so all three still have work. */
  ITEST_WAIT_INT(itest_batch_num(c, q[0], batch[0], "done") + itest_batch_num(c, q[1], batch[1], "done") +
                     itest_batch_num(c, q[2], batch[2], "done"),
                 >=, 300, 60000, "300 items ended");
  total = 0;
  for (int i = 0; i < 3; i++) {
    done[i] = itest_batch_num(c, q[i], batch[i], "done");
    total += done[i];
  }
  printf("# done by weight 3,2,1: %lld, %lld, %lld of %lld\n", done[0], done[1], done[2], total);
  /* shares 1/2, 1/3, 1/6, within 8 points */
  CHECK_INT(done[0] * 100, >=, total * 42);
  CHECK_INT(done[0] * 100, <=, total * 58);
  CHECK_INT(done[1] * 100, >=, total * 25);
  CHECK_INT(done[1] * 100, <=, total * 41);
  CHECK_INT(done[2] * 100, >=, total * 9);
  CHECK_INT(done[2] * 100, <=, total * 25);
  itest_stop_ok(w);
  free(text);
  redisFree(c);
}

/* A queue with nothing to do lends its share: with weights 1,1 and 4
 * slots, the busy queue runs 4 items at once, not 2. Then items come to
 * the idle queue and it gets its share back while the first still has
 * plenty to do: both run 2. */
static void test_idle_queue_lends(void) {
  char q[2][64];
  char list[256];
  char id[160];
  redisContext *c = itest_conn();
  size_t len;
  char *text = items(200, "sleep", "{\"ms\":400}", &len); /* 20 s of work at 4 slots */
  pid_t w;

  queue_names("lend", 2, q, list, sizeof(list));
  itest_submit(q[0], text, len, NULL);
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", list, "--concurrency", "4",
                          "--block-ms", "100", "--visibility", "3s", "--quiet", NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  itest_wait_worker(c, q[0], w, id, sizeof(id), 15000);
  ITEST_WAIT_INT(itest_worker_running(c, q[0], id), ==, 4, 20000, "the busy queue to run all 4 slots");
  itest_submit(q[1], text, len, NULL);
  ITEST_WAIT_INT(itest_worker_running(c, q[1], id), ==, 2, 20000, "the other queue to take its half back");
  ITEST_WAIT_INT(itest_worker_running(c, q[0], id), ==, 2, 20000, "the first queue down to its half");
  itest_stop_ok(w);
  free(text);
  redisFree(c);
}

/* A worker of two queues killed with SIGKILL while it holds items of both:
 * a second two-queue worker takes them over on each queue after the
 * visibility timeout, and every item ends exactly once. */
static void test_takeover_on_every_queue(void) {
  char q[2][64];
  char list[256];
  char batch[2][32];
  char id[160];
  redisContext *c = itest_conn();
  size_t len;
  char *text = items(20, "sleep", "{\"ms\":300}", &len);
  const char *args[] = {"worker", "--redis", itest_url(), "--queue", NULL, "--concurrency", "8",
                        "--block-ms", "100", "--visibility", "1s", "--quiet", NULL};
  pid_t w1;
  pid_t w2;
  int st;

  queue_names("tk", 2, q, list, sizeof(list));
  args[4] = list;
  for (int i = 0; i < 2; i++)
    snprintf(batch[i], sizeof(batch[i]), "%s", itest_submit(q[i], text, len, NULL));
  w1 = itest_spawn(args, NULL, NULL);
  itest_wait_worker(c, q[0], w1, id, sizeof(id), 15000);
  ITEST_WAIT(itest_pending_of(c, q[0], id) > 0 && itest_pending_of(c, q[1], id) > 0, 20000,
             "the first worker to hold items of both queues");
  kill(w1, SIGKILL);
  waitpid(w1, &st, 0);
  w2 = itest_spawn(args, NULL, NULL);
  for (int i = 0; i < 2; i++) {
    itest_wait_batch(c, q[i], batch[i], 60);
    CHECK_INT(itest_batch_num(c, q[i], batch[i], "succeeded"), ==, 20);
    CHECK_INT(itest_batch_num(c, q[i], batch[i], "done"), ==, 20);
    CHECK_INT(itest_pending_of(c, q[i], id), ==, 0); /* nothing left with the dead worker */
  }
  itest_stop_ok(w2);
  for (int i = 0; i < 2; i++)
    itest_check_drained(c, q[i]);
  free(text);
  redisFree(c);
}

/* Option errors name what is wrong. */
static void test_option_errors(void) {
  static const struct {
    const char *queues;
    const char *weights;
    const char *says;
  } cases[] = {
      {"a,,b", NULL, "queue 2 is empty"},
      {"a,b,a", NULL, "queue a is named twice"},
      {"a,b c", NULL, "invalid queue name \"b c\""},
      {"a,b", "3", "1 weights for more queues"},
      {"a,b", "3,2,1", "more weights than queues"},
      {"a,b", "3,0", "weight 2 must be an integer from 1 to 1000"},
      {"a,b", "3,x", "weight 2 must be an integer from 1 to 1000"},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", cases[i].queues,
                          cases[i].weights ? "--queue-weights" : NULL, cases[i].weights, NULL};
    char *err = NULL;

    CHECK_INT(itest_run(args, NULL, &err, 10), ==, 2);
    CHECK_CONTAINS(err, cases[i].says);
    free(err);
  }
}

int main(int argc, char **argv) {
  static const sl_test tests[] = {
      {"six_queues_exact", test_six_queues_exact, 180},
      {"weights_share_slots", test_weights_share_slots, 120},
      {"idle_queue_lends", test_idle_queue_lends, 120},
      {"takeover_on_every_queue", test_takeover_on_every_queue, 120},
      {"option_errors", test_option_errors, 60},
      {NULL, NULL, 0, 0},
  };

  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
