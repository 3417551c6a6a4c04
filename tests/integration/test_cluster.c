/*
 * sluice on a real Redis Cluster (tests/lib/rcluster.c: 3 masters and 3
 * replicas on loopback ports, cluster-node-timeout 1 s, appendfsync
 * always), through the real binary and a redis+cluster:// URL naming
 * every node:
 *
 *   six_queues      six queues, two on each master, one worker serving
 *                   all six: exact counters; status, results and watch
 *                   through the cluster; every queue's keys on its own
 *                   master. Redis itself refuses any function that touches
 *                   keys of another slot, so this also runs every
 *                   function of the flow under that rule.
 *   master_killed   a master killed with SIGKILL mid-run: its replica is
 *                   promoted, and the worker and a producer started after
 *                   the kill follow without a restart; what was lost is
 *                   printed (the counts must add up).
 *   control         pause, resume, cancel, retry, dead letters, limits,
 *                   stats, workers, batches, log and item through the
 *                   cluster.
 *   serve           `sluice serve` on the cluster: batches posted over HTTP
 *                   to queues on two masters, their live events followed to
 *                   the end.
 *   slot_migrated   a queue's slot migrated mid-run, 2 keys per MIGRATE,
 *                   with SETSLOT IMPORTING/MIGRATING and then NODE: the
 *                   worker follows MOVED, the functions wait out the move
 *                   (TRYAGAIN) instead of running on half the keys, and
 *                   nothing is lost.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"
#include "rcluster.h"

/* n items of one type and payload, as JSON Lines, written to a file of the
 * test's temp dir; returns its path (a static buffer). */
static const char *items_file(const char *name, int n, const char *type, const char *payload) {
  size_t cap = (size_t)n * 128 + 1;
  char *buf = malloc(cap);
  size_t off = 0;
  static char path[600];

  for (int i = 0; i < n; i++)
    off += (size_t)snprintf(buf + off, cap - off, "{\"id\":\"i-%d\",\"type\":\"%s\",\"payload\":%s}\n", i, type,
                            payload);
  snprintf(path, sizeof(path), "%s", itest_path(name));
  itest_write(path, buf, off);
  free(buf);
  return path;
}

/* `sluice submit` through the cluster; returns the batch id (static). */
static const char *submit(rcluster *k, const char *q, const char *path) {
  static char id[32];
  const char *args[] = {"submit", "--redis", k->url, "--queue", q, path, NULL};
  char *out = NULL;
  char *err = NULL;

  if (itest_run(args, &out, &err, 120) != 0)
    sl_test_fail(__FILE__, __LINE__, "submit to %s failed: %s", q, err);
  snprintf(id, sizeof(id), "%.26s", out);
  free(out);
  free(err);
  return id;
}

/* A batch hash field, read on the master that owns the queue now. */
static long long field_of(rcluster *k, const char *q, const char *batch, const char *field) {
  int o = rcluster_owner(k, rcluster_queue_slot(q));
  redisContext *c;
  redisReply *r;
  long long v;

  if (o < 0)
    return -1;
  c = redisConnectUnix(k->node[o].sock);
  if (c == NULL || c->err) {
    if (c != NULL)
      redisFree(c);
    return -1;
  }
  r = redisCommand(c, "HGET sluice:{%s}:b:%s %s", q, batch, field);
  v = r != NULL && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;
  if (r != NULL)
    freeReplyObject(r);
  redisFree(c);
  return v;
}

/* Queue names whose slots live on master m (n of them), "NAME-m-i". */
static void queues_on(rcluster *k, const char *name, int m, int n, char q[][64]) {
  int found = 0;

  for (int i = 0; found < n && i < 100000; i++) {
    char cand[64];

    snprintf(cand, sizeof(cand), "%s-%d", itest_queue(name), i);
    if (rcluster_owner(k, rcluster_queue_slot(cand)) == m)
      snprintf(q[found++], 64, "%s", cand);
  }
  CHECK_INT(found, ==, n);
}

static void load_library(rcluster *k) {
  const char *args[] = {"library", "load", "--redis", k->url, NULL};
  char *err = NULL;

  if (itest_run(args, NULL, &err, 60) != 0)
    sl_test_fail(__FILE__, __LINE__, "library load on the cluster: %s", err);
  free(err);
}

static void test_six_queues(void) {
  rcluster k;
  char q[6][64];
  char batch[6][32];
  char list[512];
  size_t off = 0;
  const char *path;
  pid_t w;

  rcluster_start(&k, 3, 1);
  load_library(&k);
  for (int m = 0; m < 3; m++)
    queues_on(&k, "six", m, 2, q + 2 * m);
  path = items_file("six.jsonl", 300, "noop", "{\"x\":1}");
  for (int i = 0; i < 6; i++) {
    snprintf(batch[i], sizeof(batch[i]), "%s", submit(&k, q[i], path));
    off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? "," : "", q[i]);
  }
  {
    const char *args[] = {"worker", "--redis", k.url, "--queue", list, "--concurrency", "16", "--block-ms", "200",
                          NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  for (int i = 0; i < 6; i++) {
    ITEST_WAIT_INT(field_of(&k, q[i], batch[i], "done"), ==, 300, 60000, "a batch on the cluster to end");
    CHECK_INT(field_of(&k, q[i], batch[i], "succeeded"), ==, 300);
    CHECK_INT(field_of(&k, q[i], batch[i], "failed"), ==, 0);
    CHECK_INT(field_of(&k, q[i], batch[i], "total"), ==, 300);
  }
  /* the CLI reads them through the cluster */
  for (int i = 0; i < 6; i++) {
    const char *st[] = {"status", "--redis", k.url, "--queue", q[i], batch[i], NULL};
    const char *res[] = {"results", "--redis", k.url, "--queue", q[i], batch[i], NULL};
    const char *wa[] = {"watch", "--redis", k.url, "--queue", q[i], batch[i], NULL};
    char *out = NULL;

    CHECK_INT(itest_run(st, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "completed");
    free(out);
    out = NULL;
    CHECK_INT(itest_run(res, &out, NULL, 30), ==, 0);
    CHECK_INT(itest_count(out, "\n"), ==, 300);
    free(out);
    out = NULL;
    CHECK_INT(itest_run(wa, NULL, &out, 30), ==, 0); /* ended: it shows the end (on stderr) and returns */
    CHECK_CONTAINS(out, "completed");
    free(out);
  }
  itest_stop_ok(w);
  /* every queue's keys on its own master, and only there */
  for (int i = 0; i < 6; i++) {
    int o = rcluster_owner(&k, rcluster_queue_slot(q[i]));

    for (int m = 0; m < 3; m++) {
      redisContext *c = rcluster_conn(&k, m);
      redisReply *r = redisCommand(c, "EXISTS sluice:{%s}:b:%s", q[i], batch[i]);

      if (m == o)
        CHECK_INT(r->integer, ==, 1);
      else
        CHECK(r->type == REDIS_REPLY_ERROR && strncmp(r->str, "MOVED", 5) == 0);
      freeReplyObject(r);
      redisFree(c);
    }
  }
  rcluster_stop(&k);
}

static void test_master_killed(void) {
  rcluster k;
  char q[1][64];
  char b1[32];
  char b2[32];
  const char *slow;
  const char *fast;
  pid_t w;
  int owner;
  long long done_at_kill;
  long long t0;

  rcluster_start(&k, 3, 1);
  load_library(&k);
  queues_on(&k, "kill", 0, 1, q);
  slow = items_file("kill-slow.jsonl", 2000, "sleep", "{\"ms\":5}");
  snprintf(b1, sizeof(b1), "%s", submit(&k, q[0], slow));
  {
    const char *args[] = {"worker", "--redis", k.url, "--queue", q[0], "--concurrency", "20", "--block-ms", "200",
                          "--visibility", "5s", NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  ITEST_WAIT_INT(field_of(&k, q[0], b1, "done"), >=, 300, 60000, "300 items done before the kill");
  owner = rcluster_owner(&k, rcluster_queue_slot(q[0]));
  done_at_kill = field_of(&k, q[0], b1, "done");
  t0 = itest_ms();
  rcluster_kill(&k, owner);
  /* a producer that starts now, with the dead master first in its URL */
  fast = items_file("kill-fast.jsonl", 500, "noop", "{}");
  snprintf(b2, sizeof(b2), "%s", submit(&k, q[0], fast));
  rcluster_wait_ok(&k, 30000);
  printf("# master %d killed after %lld items; replica %d promoted; the cluster was whole again after %lld ms\n",
         owner, done_at_kill, rcluster_owner(&k, rcluster_queue_slot(q[0])), itest_ms() - t0);
  ITEST_WAIT_INT(field_of(&k, q[0], b1, "done"), ==, 2000, 120000, "the first batch to end after the failover");
  ITEST_WAIT_INT(field_of(&k, q[0], b2, "done"), ==, 500, 60000, "the second batch to end");
  printf("# after the failover: batch 1 succeeded %lld, failed %lld, total %lld; batch 2 succeeded %lld of %lld\n",
         field_of(&k, q[0], b1, "succeeded"), field_of(&k, q[0], b1, "failed"), field_of(&k, q[0], b1, "total"),
         field_of(&k, q[0], b2, "succeeded"), field_of(&k, q[0], b2, "total"));
  CHECK_INT(field_of(&k, q[0], b1, "succeeded") + field_of(&k, q[0], b1, "failed") +
                field_of(&k, q[0], b1, "cancelled"), ==, 2000);
  CHECK_INT(field_of(&k, q[0], b2, "succeeded"), ==, 500);
  itest_stop_ok(w);
  {
    char *log = itest_read(itest_errpath(w), NULL);

    CHECK_CONTAINS(log, "reconnected to Redis");
    free(log);
  }
  rcluster_stop(&k);
}

struct during {
  rcluster *k;
  const char *q;
  const char *batch;
  pid_t status;       /* a `sluice status` started in the middle of the move */
  long long steps;    /* MIGRATE calls so far */
};

/* Between two MIGRATE calls: the slot is open, part of the queue's keys on
 * each node. Wait a little, so the worker's calls meet the open slot, and
 * start a `sluice status` in the middle of it. */
static void while_moving(long long moved, void *ud) {
  struct during *d = ud;

  (void)moved;
  if (++d->steps == 2) {
    const char *args[] = {"status", "--redis", d->k->url, "--queue", d->q, d->batch, NULL};

    d->status = itest_spawn(args, NULL, NULL);
  }
  usleep(300 * 1000);
}

static void test_slot_migrated(void) {
  rcluster k;
  char q[1][64];
  char b1[32];
  const char *path;
  struct during d;
  pid_t w;
  int from;
  int to;
  unsigned slot;

  rcluster_start(&k, 3, 1);
  load_library(&k);
  queues_on(&k, "move", 0, 1, q);
  slot = rcluster_queue_slot(q[0]);
  path = items_file("move.jsonl", 1500, "sleep", "{\"ms\":5}");
  snprintf(b1, sizeof(b1), "%s", submit(&k, q[0], path));
  {
    const char *args[] = {"worker", "--redis", k.url, "--queue", q[0], "--concurrency", "20", "--block-ms", "200",
                          NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  ITEST_WAIT_INT(field_of(&k, q[0], b1, "done"), >=, 200, 60000, "200 items done before the move");
  from = rcluster_owner(&k, slot);
  to = (from + 1) % 3;
  d.k = &k;
  d.q = q[0];
  d.batch = b1;
  d.status = 0;
  d.steps = 0;
  rcluster_move_slot(&k, slot, to, 2, while_moving, &d);
  printf("# slot %u moved from node %d to node %d in %lld MIGRATE calls of 2 keys, 300 ms apart\n", slot, from,
         to, d.steps);
  CHECK(d.steps >= 3);
  itest_exit_code(d.status, 0, 30000); /* it waited the move out, then read the batch on its new master */
  CHECK_INT(rcluster_owner(&k, slot), ==, to);
  ITEST_WAIT_INT(field_of(&k, q[0], b1, "done"), ==, 1500, 120000, "the batch to end on the new master");
  CHECK_INT(field_of(&k, q[0], b1, "succeeded"), ==, 1500);
  CHECK_INT(field_of(&k, q[0], b1, "failed"), ==, 0);
  {
    const char *res[] = {"results", "--redis", k.url, "--queue", q[0], b1, NULL};
    char *out = NULL;

    CHECK_INT(itest_run(res, &out, NULL, 30), ==, 0);
    CHECK_INT(itest_count(out, "\n"), ==, 1500);
    free(out);
  }
  itest_stop_ok(w);
  {
    char *log = itest_read(itest_errpath(w), NULL);

    CHECK_CONTAINS(log, "moved to 127.0.0.1:");
    CHECK_CONTAINS(log, "TRYAGAIN the queue's slot is moving"); /* its calls waited; none ran on half the keys */
    free(log);
  }
  rcluster_stop(&k);
}

/* Runs `sluice ARGS... --redis URL --queue Q` (av: NULL-terminated, at
 * most 6) and expects exit `code`; returns its stdout (free it). */
static char *cli_at(int line, rcluster *k, const char *q, int code, const char *const *av) {
  const char *args[12];
  char *out = NULL;
  char *err = NULL;
  int n = 0;
  int rc;

  while (av[n] != NULL && n < 6) {
    args[n] = av[n];
    n++;
  }
  args[n++] = "--redis";
  args[n++] = k->url;
  args[n++] = "--queue";
  args[n++] = q;
  args[n] = NULL;
  rc = itest_run(args, &out, &err, 60);
  if (rc != code)
    sl_test_fail(__FILE__, line, "sluice %s %s: exit %d, not %d: %s", av[0], av[1] ? av[1] : "", rc, code, err);
  free(err);
  return out;
}
#define cli(k, q, code, ...) cli_at(__LINE__, (k), (q), (code), (const char *const[]){__VA_ARGS__, NULL})

/* Dead letters of queue q (`sluice dead list --json`: one per line). */
static int dead_count(rcluster *k, const char *q) {
  char *out = cli(k, q, 0, "dead", "list", "--json");
  int n = itest_count(out, "\n");

  free(out);
  return n;
}

/* The control commands through the cluster, on a queue whose master is
 * not the URL's first node: pause and resume, cancel, failed items retried
 * after a fix (retry), dead letters listed, requeued and purged, a limit
 * set, listed and removed, stats, workers, batches, the batch log and an
 * item's story. Every function they call runs on a cluster node, where
 * Redis refuses any key of another slot. */
static void test_control(void) {
  rcluster k;
  char q[1][64];
  char b1[32];
  char b2[32];
  const char *path;
  char *out;
  pid_t w;

  rcluster_start(&k, 3, 0);
  load_library(&k);
  queues_on(&k, "ctl", 2, 1, q);
  /* a batch that fails for good (one attempt each), then paused items */
  path = items_file("ctl-fail.jsonl", 20, "sleep", "{\"ms\":1,\"fail_rate\":1}");
  {
    const char *args[] = {"submit", "--redis", k.url, "--queue", q[0], "--max-attempts", "1", path, NULL};
    char *id = NULL;

    CHECK_INT(itest_run(args, &id, NULL, 60), ==, 0);
    snprintf(b1, sizeof(b1), "%.26s", id);
    free(id);
  }
  path = items_file("ctl-slow.jsonl", 200, "sleep", "{\"ms\":20}");
  snprintf(b2, sizeof(b2), "%s", submit(&k, q[0], path));
  free(cli(&k, q[0], 0, "pause", b2));
  {
    const char *args[] = {"worker", "--redis", k.url, "--queue", q[0], "--concurrency", "8", "--block-ms", "200",
                          "--quiet", NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  ITEST_WAIT_INT(field_of(&k, q[0], b1, "done"), ==, 20, 60000, "the failing batch to end");
  CHECK_INT(field_of(&k, q[0], b1, "failed"), ==, 20);
  CHECK_INT(field_of(&k, q[0], b2, "done"), ==, 0); /* paused */
  CHECK_INT(dead_count(&k, q[0]), ==, 20);
  free(cli(&k, q[0], 0, "resume", b2));
  ITEST_WAIT_INT(field_of(&k, q[0], b2, "done"), >=, 20, 60000, "the resumed batch to run");
  free(cli(&k, q[0], 0, "cancel", b2));
  ITEST_WAIT(field_of(&k, q[0], b2, "done") == 200, 60000, "the cancelled batch to end");
  CHECK_INT(field_of(&k, q[0], b2, "succeeded") + field_of(&k, q[0], b2, "cancelled"), ==, 200);
  free(cli(&k, q[0], 0, "retry", b1)); /* the 20 run again, and fail again */
  ITEST_WAIT_INT(field_of(&k, q[0], b1, "failed"), ==, 20, 60000, "the retried items to fail again");
  ITEST_WAIT_INT(field_of(&k, q[0], b1, "done"), ==, 20, 60000, "the retried batch to end");
  free(cli(&k, q[0], 0, "dead", "requeue", "--all")); /* and they fail once more */
  ITEST_WAIT_INT(field_of(&k, q[0], b1, "done"), ==, 20, 60000, "the requeued items to end");
  ITEST_WAIT_INT(dead_count(&k, q[0]), ==, 20, 60000, "the requeued items' dead letters");
  free(cli(&k, q[0], 0, "dead", "purge"));
  CHECK_INT(dead_count(&k, q[0]), ==, 0);
  free(cli(&k, q[0], 0, "limit", "set", "api", "5/s"));
  out = cli(&k, q[0], 0, "limit", "ls");
  CHECK_CONTAINS(out, "api");
  free(out);
  free(cli(&k, q[0], 0, "limit", "rm", "api"));
  out = cli(&k, q[0], 0, "stats", "--json");
  CHECK_CONTAINS(out, "\"queue\"");
  free(out);
  out = cli(&k, q[0], 0, "workers");
  CHECK_CONTAINS(out, ":"); /* the worker's id, HOST:PID:XXXX */
  free(out);
  out = cli(&k, q[0], 0, "batches");
  CHECK_CONTAINS(out, b1);
  CHECK_CONTAINS(out, b2);
  free(out);
  out = cli(&k, q[0], 0, "log", b2);
  CHECK_CONTAINS(out, "paused");
  CHECK_CONTAINS(out, "cancel");
  free(out);
  out = cli(&k, q[0], 0, "item", b1, "i-3");
  CHECK_CONTAINS(out, "attempt");
  free(out);
  itest_stop_ok(w);
  rcluster_stop(&k);
}

/* A free loopback TCP port (bound, then closed). */
static int free_port(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int port;

  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  getsockname(fd, (struct sockaddr *)&a, &len);
  port = ntohs(a.sin_port);
  close(fd);
  return port;
}

/* Runs a shell command (curl) and returns its stdout (free it). */
static char *shell(const char *cmd) {
  FILE *f = popen(cmd, "r");
  size_t cap = 1 << 20;
  size_t n = 0;
  char *out = malloc(cap + 1);

  CHECK(f != NULL);
  while (n < cap) {
    size_t k = fread(out + n, 1, cap - n, f);

    if (k == 0)
      break;
    n += k;
  }
  out[n] = '\0';
  pclose(f);
  return out;
}

/* sluice serve on the cluster: two queues on two masters; a batch posted
 * over HTTP to each, its live events followed to the end (the sharded
 * subscription on the queue's master), the state read back. */
static void test_serve(void) {
  rcluster k;
  char q[2][64];
  char cmd[2048];
  char port[16];
  char listen[64];
  char list[256];
  const char *path;
  pid_t srv;
  pid_t w;

  rcluster_start(&k, 3, 0);
  load_library(&k);
  queues_on(&k, "srv", 1, 1, q);
  queues_on(&k, "srv", 2, 1, q + 1);
  snprintf(port, sizeof(port), "%d", free_port());
  snprintf(listen, sizeof(listen), "127.0.0.1:%s", port);
  {
    const char *args[] = {"serve", "--redis", k.url, "--listen", listen, "--queue", q[0], "--queue", q[1], NULL};

    srv = itest_spawn(args, NULL, NULL);
  }
  snprintf(cmd, sizeof(cmd), "curl -s -o /dev/null -w '%%{http_code}' http://%s/readyz", listen);
  {
    long long t0 = itest_ms();

    for (;;) {
      char *code = shell(cmd);
      int ok = strcmp(code, "200") == 0;

      free(code);
      if (ok)
        break;
      CHECK(itest_ms() - t0 < 20000);
      usleep(50000);
    }
  }
  path = items_file("srv.jsonl", 200, "sleep", "{\"ms\":50}");
  snprintf(list, sizeof(list), "%s,%s", q[0], q[1]);
  {
    const char *args[] = {"worker", "--redis", k.url, "--queue", list, "--concurrency", "8", "--block-ms", "200",
                          "--quiet", NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  for (int i = 0; i < 2; i++) {
    char batch[32];
    char *out;
    const char *b;

    snprintf(cmd, sizeof(cmd),
             "curl -s -H 'Content-Type: application/x-ndjson' --data-binary @%s 'http://%s/v1/batches?queue=%s'",
             path, listen, q[i]);
    out = shell(cmd);
    b = strstr(out, "\"batch\":\"");
    if (b == NULL)
      sl_test_fail(__FILE__, __LINE__, "POST /v1/batches on %s: %s", q[i], out);
    snprintf(batch, sizeof(batch), "%.26s", b + 9);
    free(out);
    /* the live events, to the end of the batch (the stream then ends) */
    snprintf(cmd, sizeof(cmd), "curl -s -N --max-time 60 'http://%s/v1/batches/%s/events?queue=%s'", listen, batch,
             q[i]);
    out = shell(cmd);
    CHECK_INT(itest_count(out, "event: batch"), >=, 3); /* the state, then live events */
    CHECK_CONTAINS(out, "\"status\":\"completed\"");
    CHECK_CONTAINS(out, "\"done\":200");
    free(out);
    CHECK_INT(field_of(&k, q[i], batch, "succeeded"), ==, 200);
  }
  itest_stop_ok(w);
  itest_stop_ok(srv);
  rcluster_stop(&k);
}

int main(int argc, char **argv) {
  static const sl_test tests[] = {
      {"six_queues", test_six_queues, 300},
      {"master_killed", test_master_killed, 300},
      {"slot_migrated", test_slot_migrated, 300},
      {"serve", test_serve, 300},
      {"control", test_control, 300},
      {NULL, NULL, 0, 0},
  };

  itest_use_redis(); /* the temp dirs, and the standard helpers */
  return sl_test_main(argc, argv, tests);
}
