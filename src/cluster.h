/*
 * Redis Cluster for the synchronous client (sl_client_t): where a queue
 * lives, and following it there.
 *
 * Every key of queue Q carries the hash tag {Q} (sluice:{Q}:...), so a
 * queue lives in one slot, on one master. A client opened with a
 * redis+cluster:// URL reads the slot map (CLUSTER SLOTS) from the first
 * seed node that answers, and sends each command to the master of the
 * slot of its first sluice key: one connection in use (c->rc) and at most
 * one idle connection kept per other node, so a client that moves between
 * queues does not reconnect each time.
 *
 * Redirects are followed (sl__cluster_redirect): MOVED (the slot has a new
 * owner: the map is updated and the command sent there), ASK (the slot is
 * being migrated and this key is already on the target: the one command
 * goes there after ASKING), TRYAGAIN and CLUSTERDOWN (a migration or a
 * failover is under way: wait and send again, backing off from 10 to
 * 250 ms, for up to SL_CLUSTER_WAIT_MS). None of these ran the command,
 * so sending it again is safe. A lost connection is not retried here (the
 * command may have run): the caller learns SL_ECONN as with one Redis, and
 * the next command finds the slot's owner again, reading the map anew
 * when the node it knew does not answer (a failover).
 */
#ifndef SL_CLUSTER_H
#define SL_CLUSTER_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include <sluice/sluice.h>

#include "url.h"

#define SL_CLUSTER_SLOTS 16384
#define SL_CLUSTER_NODES 64         /* nodes one client knows */
#define SL_CLUSTER_WAIT_MS 30000    /* how long a move or a failover is waited out */
#define SL_CLUSTER_REDIRECTS 16     /* MOVED/ASK per command before giving up */

typedef struct sl_cluster sl_cluster;

/* The slot of a key: CRC16 of its hash tag ({...}, when not empty) or of
 * the whole key, modulo 16384, as Redis computes it. */
unsigned sl__key_slot(const char *key, size_t len);
/* The slot a command goes to: that of its first key (FCALL and FCALL_RO:
 * the first declared key; XREAD(GROUP): the first stream; otherwise the
 * first argument that starts with "sluice:{"), or -1 for a command with no
 * key (PING, INFO, FUNCTION ...). */
int sl__command_slot(int argc, const char **argv, const size_t *lens);

/* A cluster state for URL u (a redis+cluster:// one), knowing only the
 * seeds: 0, or SL_ENOMEM. */
int sl__cluster_new(const sl_url *u, sl_cluster **out);
void sl__cluster_free(sl_cluster *k);

/* Makes c->rc the connection to the master of `slot` (-1: any node that
 * answers), connecting (and reading the slot map) as needed; waits out a
 * failover for up to timeout_ms. 0, or an SL_E* code with c->errstr set
 * and c->rc NULL. */
int sl__cluster_use(sl_client_t *c, int slot, int timeout_ms);
/* After an error reply `msg` to a command: 1 when the command should be
 * sent again, with c->rc now pointing where, and *asking set for an ASK
 * (send ASKING first; a caller that cannot, a pipeline, passes NULL and
 * an ASK is waited out like TRYAGAIN); 0 when msg is no redirect; -1 when it is one that
 * cannot be followed (too many, the waits ran out, no node answers), with
 * c->errstr saying so. *tries counts the redirects and *waited_ms the time
 * waited, both started at 0 by the caller. */
int sl__cluster_redirect(sl_client_t *c, const char *msg, int *asking, int *tries, long long *waited_ms);
/* 1 when an error reply is a cluster's redirect or "wait" (MOVED, ASK,
 * TRYAGAIN, CLUSTERDOWN): the command was not run. */
int sl__cluster_redirect_kind(const char *msg);
/* Drops c->rc after a lost connection: the node is forgotten as the
 * slot's owner until the map says otherwise. */
void sl__cluster_lost(sl_client_t *c);
/* Drops c->rc and finds the owner of the slot it served again, waiting
 * out a failover for up to timeout_ms (sl__client_reconnect). */
int sl__cluster_reconnect(sl_client_t *c, int timeout_ms);
/* New connections skip the library check: for sl_library_load, which
 * loads it. */
void sl__cluster_no_check(sl_cluster *k);
/* The addresses "host:port" of every master (at most max), from the slot
 * map, read anew. Returns how many, or -1 with c->errstr set. */
int sl__cluster_masters(sl_client_t *c, char (*addr)[300], int max);
/* A second connection to the node c->rc is on (a subscription). */
int sl__cluster_connect_current(sl_client_t *c, int timeout_ms, redisContext **out);
/* The master that holds `key` on the cluster of `url` (a worker's start):
 * its host and port. 0, or an SL_E* code with err set. */
int sl__cluster_master_of(const char *url, const char *key, char *host, size_t hostlen, int *port, char *err,
                          size_t errlen);
/* Opens a connection to node "host:port" with c's credentials. */
int sl__cluster_connect(sl_client_t *c, const char *addr, redisContext **out);

#endif
