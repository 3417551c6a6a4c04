/*
 * A real Redis Cluster for the tests: N masters and R replicas each, every
 * node a redis-server of its own (devredis: a temp dir, a private unix
 * socket for the test's own inspection) that also listens on a loopback TCP
 * port, which the cluster's bus (port + 10000) and sluice use. Nodes keep
 * an append-only file with appendfsync always, and a short
 * cluster-node-timeout so a failover takes a few seconds.
 *
 * The slots are split evenly over the masters (CLUSTER ADDSLOTSRANGE), the
 * nodes meet, the replicas follow their masters, and the start returns
 * once every node says cluster_state:ok, agrees on who owns every slot,
 * and every replica's link to its master is up.
 */
#ifndef SL_RCLUSTER_H
#define SL_RCLUSTER_H

#include <hiredis/hiredis.h>

#include "devredis.h"

#define RCLUSTER_MAX 12

typedef struct rcluster {
  int n;                          /* nodes */
  int masters;                    /* the first `masters` nodes, at the start */
  int node_timeout_ms;            /* cluster-node-timeout */
  sl_devredis node[RCLUSTER_MAX];
  int port[RCLUSTER_MAX];
  char id[RCLUSTER_MAX][48];      /* node ids */
  int dead[RCLUSTER_MAX];         /* killed by the test */
  char url[1024];                 /* redis+cluster://127.0.0.1:P,... (every node) */
} rcluster;

/* Starts it; fails the test (at the caller's line) on any error. */
#define rcluster_start(k, masters, replicas) rcluster_start_at(__FILE__, __LINE__, (k), (masters), (replicas))
void rcluster_start_at(const char *file, int line, rcluster *k, int masters, int replicas);
void rcluster_stop(rcluster *k);
/* A connection to node i on its unix socket (fails the test if it cannot). */
redisContext *rcluster_conn(rcluster *k, int i);
/* The node that serves `slot` as master now, per the first live node's
 * CLUSTER SLOTS; -1 when none does. */
int rcluster_owner(rcluster *k, unsigned slot);
/* The slot of a queue's keys (the hash tag {QUEUE}). */
unsigned rcluster_queue_slot(const char *queue);
/* Kills node i with SIGKILL. */
void rcluster_kill(rcluster *k, int i);
/* Waits (up to timeout_ms) until a live master serves every slot and every
 * live node says cluster_state:ok; fails the test otherwise. */
#define rcluster_wait_ok(k, timeout_ms) rcluster_wait_ok_at(__FILE__, __LINE__, (k), (timeout_ms))
void rcluster_wait_ok_at(const char *file, int line, rcluster *k, int timeout_ms);
/* Moves `slot` from its master to node `to` the way a resharding tool
 * does: SETSLOT IMPORTING on the target, MIGRATING on the source, MIGRATE
 * of its keys `batch` at a time, then SETSLOT NODE on both and on every
 * other master. `between` (may be NULL) runs after each MIGRATE, with
 * the keys moved so far. */
#define rcluster_move_slot(k, slot, to, batch, between, ud)                                        \
  rcluster_move_slot_at(__FILE__, __LINE__, (k), (slot), (to), (batch), (between), (ud))
void rcluster_move_slot_at(const char *file, int line, rcluster *k, unsigned slot, int to, int batch,
                           void (*between)(long long moved, void *ud), void *ud);

#endif
