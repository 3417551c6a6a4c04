/*
 * Synchronous Redis connections: the client of producers and admin commands
 * (sl_client_t), and the connect/AUTH/SELECT sequence shared with workers.
 */
#ifndef SL_CONN_H
#define SL_CONN_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include <sluice/sluice.h>

#include "url.h"

#define SL_CONNECT_TIMEOUT_MS 5000  /* TCP/unix connect, ms */
#define SL_COMMAND_TIMEOUT_MS 30000 /* one synchronous command, ms */

struct sl_cluster;

struct sl_client {
  redisContext *rc; /* the connection (on a cluster: to the node in use); NULL once broken beyond repair */
  struct sl_cluster *cluster; /* a redis+cluster:// URL: the slot map and the other nodes (cluster.h); else NULL */
  sl_url url;       /* where it goes */
  char *url_str;    /* the URL as given, for a second connection (watch) */
  char errstr[512]; /* the cause of the last failure */
  char actor[201];  /* who acts, for batch logs: "HOST pid N (PROGRAM)" or sl_client_set_actor's */
};

/* TCP keepalive on a Redis connection, so a link that went silent (a
 * partition, a peer that vanished without a reset) fails the connection
 * instead of holding it for the kernel's default of about 15 minutes of
 * retransmissions: the first probe after SL_KEEPALIVE_IDLE_S idle, then every
 * SL_KEEPALIVE_INTVL_S, dead after SL_KEEPALIVE_CNT unanswered (25 s), and
 * TCP_USER_TIMEOUT: data sent and not acknowledged for SL_TCP_USER_TIMEOUT_MS
 * ends it too (a probe answered by nobody, or a request into a black hole).
 * 30 s is above the keepalive's 25 s, so it never cuts the probes short, and
 * matches the default visibility timeout: by then the worker's items go to
 * other workers anyway. For TCP only: unix sockets have no link to lose.
 * Best effort: an option the kernel refuses is skipped. */
#define SL_KEEPALIVE_IDLE_S 10        /* idle before the first probe, s */
#define SL_KEEPALIVE_INTVL_S 5        /* between probes, s */
#define SL_KEEPALIVE_CNT 3            /* unanswered probes before the connection fails */
#define SL_TCP_USER_TIMEOUT_MS 30000  /* unacknowledged data before the connection fails, ms */
void sl__redis_keepalive(int fd);

/* Connects, authenticates and selects the database (no library load); a TCP
 * connection gets sl__redis_keepalive. */
int sl__redis_connect(const sl_url *u, int timeout_ms, redisContext **out, char *err, size_t errlen);

/* Runs one command; NULL on failure with c->errstr set and *rcode the code
 * (SL_ECONN for a broken connection, SL_EREDIS for an error reply). On a
 * cluster it goes to the master of its first key's slot, following
 * redirects (cluster.h). */
redisReply *sl__client_cmd(sl_client_t *c, int *rcode, int argc, const char **argv,
                           const size_t *lens);
/* FCALLs sluice_v1_<fn>, loading the library and retrying once if Redis lost
 * it (a restart without persistence). argv holds keys then args. */
redisReply *sl__client_fcall(sl_client_t *c, int *rcode, const char *fn, int nkeys, int argc,
                             const char **argv, const size_t *lens);
/* Drops c's connection, if any, and opens it again (connect, AUTH, SELECT;
 * the library is not checked again; on a cluster, to the owner of the
 * slot it served, found again): 0, or an SL_E* code with the cause in
 * c->errstr and c->rc left NULL. */
int sl__client_reconnect(sl_client_t *c, int timeout_ms);
/* Points c->rc at the node that holds `key` (on a cluster: its slot's
 * master; with one Redis, the connection), before commands sent on c->rc
 * directly (pipelines). 0, or SL_ECONN with c->errstr set. */
int sl__client_route(sl_client_t *c, const char *key);
/* A second connection to the node c->rc is on (with one Redis: the URL's),
 * for a subscription. 0, or an SL_E* code with c->errstr set. */
int sl__client_connect_same(sl_client_t *c, int timeout_ms, redisContext **out);
/* Drops c->rc after it broke (on a cluster, forgetting the node as its
 * slots' owner until the map is read again). */
void sl__client_drop(sl_client_t *c);
/* Writes an error reply of Redis (msg) into out as a person should read it:
 * an OOM answer becomes "Redis is out of memory (maxmemory N MiB): MSG",
 * with N asked of Redis on rc (CONFIG GET, else INFO; "maxmemory" alone
 * when neither is allowed); anything else is copied as it is. rc may be
 * NULL; it must have no reply pending (it is used for one more command).
 * msg must not point into out. */
void sl__redis_errmsg(redisContext *rc, const char *msg, char *out, size_t len);
/* Sets c->errstr; returns code. */
int sl__client_fail(sl_client_t *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
