/* A real Redis Cluster for the tests; see rcluster.h. */
#include "rcluster.h"

#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "harness.h"

static long long mono_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* 1 when nothing listens on 127.0.0.1:port (a bind succeeds). */
static int port_free(int port) {
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  int ok;

  if (fd < 0)
    return 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  close(fd);
  return ok;
}

redisContext *rcluster_conn(rcluster *k, int i) {
  redisContext *c = redisConnectUnix(k->node[i].sock);

  if (c == NULL || c->err)
    sl_test_fail(__FILE__, __LINE__, "cannot connect to cluster node %d: %s", i, c ? c->errstr : "oom");
  return c;
}

/* Runs a command on node i; the reply (free it), or NULL when the node
 * does not answer. */
static redisReply *node_cmd(rcluster *k, int i, const char *fmt, ...) {
  redisContext *c = redisConnectUnix(k->node[i].sock);
  redisReply *r = NULL;
  va_list ap;

  if (c == NULL || c->err) {
    if (c != NULL)
      redisFree(c);
    return NULL;
  }
  va_start(ap, fmt);
  r = redisvCommand(c, fmt, ap);
  va_end(ap);
  redisFree(c);
  return r;
}

/* An INFO-style field ("name:value") of a reply, as a number; -1 if absent. */
static long long field(const redisReply *r, const char *name) {
  char key[64];
  const char *p;

  if (r == NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS))
    return -1;
  snprintf(key, sizeof(key), "%s:", name);
  p = strstr(r->str, key);
  return p != NULL ? strtoll(p + strlen(key), NULL, 10) : -1;
}

static int has(const redisReply *r, const char *text) {
  return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
         strstr(r->str, text) != NULL;
}

/* Fails the test unless the reply is OK. */
static void expect_ok(const char *file, int line, redisReply *r, const char *what) {
  if (r == NULL || r->type == REDIS_REPLY_ERROR) {
    sl_test_fail(file, line, "%s: %s", what, r ? r->str : "no answer");
  }
  freeReplyObject(r);
}

static int owner_from(rcluster *k, int from, unsigned slot) {
  redisReply *r = node_cmd(k, from, "CLUSTER SLOTS");
  int owner = -1;

  for (size_t e = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && e < r->elements; e++) {
    const redisReply *x = r->element[e];

    if ((unsigned)x->element[0]->integer <= slot && slot <= (unsigned)x->element[1]->integer) {
      int port = (int)x->element[2]->element[1]->integer;

      for (int i = 0; i < k->n; i++) {
        if (k->port[i] == port)
          owner = i;
      }
    }
  }
  if (r != NULL)
    freeReplyObject(r);
  return owner;
}

int rcluster_owner(rcluster *k, unsigned slot) {
  for (int i = 0; i < k->n; i++) {
    if (!k->dead[i])
      return owner_from(k, i, slot);
  }
  return -1;
}

unsigned rcluster_queue_slot(const char *queue) {
  return sl__key_slot(queue, strlen(queue));
}

/* 1 when every live node says cluster_state:ok, knows `known` nodes (0:
 * any number) and has the same owner as the others for each slot it
 * serves (checked on a sample of slots). */
static int settled(rcluster *k, int known) {
  static const unsigned sample[] = {0, 1000, 5460, 5461, 8000, 10922, 10923, 16383};
  int first = -1;

  for (int i = 0; i < k->n; i++) {
    redisReply *r;
    int ok;

    if (k->dead[i])
      continue;
    r = node_cmd(k, i, "CLUSTER INFO");
    ok = has(r, "cluster_state:ok") && (known == 0 || field(r, "cluster_known_nodes") == known);
    if (r != NULL)
      freeReplyObject(r);
    if (!ok)
      return 0;
    if (first < 0)
      first = i;
  }
  for (size_t s = 0; s < sizeof(sample) / sizeof(sample[0]); s++) {
    int o = owner_from(k, first, sample[s]);

    if (o < 0 || k->dead[o])
      return 0;
    for (int i = first + 1; i < k->n; i++) {
      if (!k->dead[i] && owner_from(k, i, sample[s]) != o)
        return 0;
    }
  }
  return 1;
}

void rcluster_start_at(const char *file, int line, rcluster *k, int masters, int replicas) {
  char err[512];
  size_t off;
  int base;
  long long t0;

  memset(k, 0, sizeof(*k));
  k->masters = masters;
  k->n = masters * (1 + replicas);
  k->node_timeout_ms = 1000;
  if (k->n > RCLUSTER_MAX)
    sl_test_fail(file, line, "at most %d cluster nodes", RCLUSTER_MAX);
  /* k->n consecutive free ports, with their bus ports (+10000) free too */
  srand((unsigned)getpid() ^ (unsigned)mono_ms());
  for (int tries = 0;; tries++) {
    int ok = 1;

    base = 20000 + (rand() % 2000) * 10;
    for (int i = 0; i < k->n && ok; i++)
      ok = port_free(base + i) && port_free(base + i + 10000);
    if (ok)
      break;
    if (tries == 100)
      sl_test_fail(file, line, "no free loopback ports for a cluster");
  }
  off = (size_t)snprintf(k->url, sizeof(k->url), "redis+cluster://");
  for (int i = 0; i < k->n; i++) {
    char port[16];
    char timeout[16];
    const char *extra[] = {"--port", port, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                           "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", timeout,
                           "--appendonly", "yes", "--appendfsync", "always", NULL};

    k->port[i] = base + i;
    snprintf(port, sizeof(port), "%d", k->port[i]);
    snprintf(timeout, sizeof(timeout), "%d", k->node_timeout_ms);
    if (sl_devredis_start(&k->node[i], extra, err, sizeof(err)) != 0)
      sl_test_fail(file, line, "cluster node %d: %s", i, err);
    off += (size_t)snprintf(k->url + off, sizeof(k->url) - off, "%s127.0.0.1:%d", i ? "," : "", k->port[i]);
  }
  for (int m = 0; m < masters; m++) {
    int lo = m * 16384 / masters;
    int hi = (m + 1) * 16384 / masters - 1;

    expect_ok(file, line, node_cmd(k, m, "CLUSTER ADDSLOTSRANGE %d %d", lo, hi), "CLUSTER ADDSLOTSRANGE");
  }
  for (int i = 0; i < k->n; i++) {
    redisReply *r = node_cmd(k, i, "CLUSTER MYID");

    if (r == NULL || r->type != REDIS_REPLY_STRING)
      sl_test_fail(file, line, "CLUSTER MYID of node %d", i);
    snprintf(k->id[i], sizeof(k->id[i]), "%s", r->str);
    freeReplyObject(r);
    if (i > 0)
      expect_ok(file, line, node_cmd(k, 0, "CLUSTER MEET 127.0.0.1 %d", k->port[i]), "CLUSTER MEET");
  }
  t0 = mono_ms();
  for (int i = masters; i < k->n; i++) {
    /* a replica may follow its master once it knows it */
    for (;;) {
      redisReply *r = node_cmd(k, i, "CLUSTER REPLICATE %s", k->id[(i - masters) % masters]);
      int ok = r != NULL && r->type != REDIS_REPLY_ERROR;

      if (r != NULL)
        freeReplyObject(r);
      if (ok)
        break;
      if (mono_ms() - t0 > 20000)
        sl_test_fail(file, line, "node %d did not become a replica within 20 s", i);
      nap(50);
    }
  }
  for (;;) {
    int ok = settled(k, k->n);

    for (int i = masters; ok && i < k->n; i++) {
      redisReply *r = node_cmd(k, i, "INFO replication");

      ok = has(r, "master_link_status:up");
      if (r != NULL)
        freeReplyObject(r);
    }
    if (ok)
      break;
    if (mono_ms() - t0 > 30000)
      sl_test_fail(file, line, "the cluster did not settle within 30 s (%s)", k->url);
    nap(50);
  }
}

void rcluster_stop(rcluster *k) {
  for (int i = 0; i < k->n; i++)
    sl_devredis_stop(&k->node[i]);
}

void rcluster_kill(rcluster *k, int i) {
  sl_devredis_kill(&k->node[i], SIGKILL);
  k->dead[i] = 1;
}

void rcluster_wait_ok_at(const char *file, int line, rcluster *k, int timeout_ms) {
  long long t0 = mono_ms();

  while (!settled(k, 0)) {
    if (mono_ms() - t0 > timeout_ms)
      sl_test_fail(file, line, "the cluster did not recover within %d ms", timeout_ms);
    nap(50);
  }
}

void rcluster_move_slot_at(const char *file, int line, rcluster *k, unsigned slot, int to, int batch,
                           void (*between)(long long moved, void *ud), void *ud) {
  int from = rcluster_owner(k, slot);
  long long moved = 0;

  if (from < 0 || from == to)
    sl_test_fail(file, line, "slot %u: owner %d, target %d", slot, from, to);
  expect_ok(file, line, node_cmd(k, to, "CLUSTER SETSLOT %u IMPORTING %s", slot, k->id[from]), "IMPORTING");
  expect_ok(file, line, node_cmd(k, from, "CLUSTER SETSLOT %u MIGRATING %s", slot, k->id[to]), "MIGRATING");
  for (;;) {
    redisReply *keys = node_cmd(k, from, "CLUSTER GETKEYSINSLOT %u %d", slot, batch);
    redisContext *c;
    const char **av;
    size_t *al;
    int n = 0;
    char port[16];
    redisReply *r;

    if (keys == NULL || keys->type != REDIS_REPLY_ARRAY)
      sl_test_fail(file, line, "CLUSTER GETKEYSINSLOT failed");
    if (keys->elements == 0) {
      freeReplyObject(keys);
      break;
    }
    av = malloc((keys->elements + 8) * sizeof(*av));
    al = malloc((keys->elements + 8) * sizeof(*al));
    snprintf(port, sizeof(port), "%d", k->port[to]);
    av[n++] = "MIGRATE";
    av[n++] = "127.0.0.1";
    av[n++] = port;
    av[n++] = "";
    av[n++] = "0";
    av[n++] = "10000";
    av[n++] = "KEYS";
    for (int i = 0; i < n; i++)
      al[i] = strlen(av[i]);
    for (size_t e = 0; e < keys->elements; e++) {
      av[n] = keys->element[e]->str;
      al[n++] = keys->element[e]->len;
    }
    c = rcluster_conn(k, from);
    r = redisCommandArgv(c, n, av, al);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
      sl_test_fail(file, line, "MIGRATE of %zu keys: %s", keys->elements, r ? r->str : c->errstr);
    moved += (long long)keys->elements;
    freeReplyObject(r);
    redisFree(c);
    free(av);
    free(al);
    freeReplyObject(keys);
    if (between != NULL)
      between(moved, ud);
  }
  expect_ok(file, line, node_cmd(k, to, "CLUSTER SETSLOT %u NODE %s", slot, k->id[to]), "SETSLOT NODE (target)");
  expect_ok(file, line, node_cmd(k, from, "CLUSTER SETSLOT %u NODE %s", slot, k->id[to]), "SETSLOT NODE (source)");
  for (int i = 0; i < k->masters; i++) {
    if (i != to && i != from && !k->dead[i])
      expect_ok(file, line, node_cmd(k, i, "CLUSTER SETSLOT %u NODE %s", slot, k->id[to]), "SETSLOT NODE");
  }
}
