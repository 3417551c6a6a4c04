/*
 * The worker's two Redis connections, hiredis async on the libuv loop
 * (uvredis.c):
 *   cmd  functions: fetch, accept, complete, beat, reclaim, release, ...;
 *   blk  only the blocking XREADGROUP, which would hold up every command
 *        pipelined behind it.
 *
 * Each connects, authenticates (AUTH, SELECT) and is up once CLIENT ID
 * answers (blk keeps its id so a stop can CLIENT UNBLOCK it). A lost
 * connection is retried with backoff (RECONNECT_MIN_MS doubling to
 * RECONNECT_MAX_MS, with jitter; timer `reconnect`); items keep running
 * meanwhile and their completions wait. The outage is logged once, and the
 * recovery. A worker that never reached Redis fails instead.
 *
 * Recoverable replies (sl__aredis_recoverable): LOADING, BUSY, TRYAGAIN,
 * MASTERDOWN, OOM, and on a Redis Cluster ASK and CLUSTERDOWN (a slot
 * moving, a failover) pause every call for a moment (timer `pause`);
 * MOVED sends both connections to the queue's new master. With a
 * redis+cluster:// URL the worker starts on its queue's master (found by
 * the bootstrap), and a connection that cannot be made again goes to the
 * next node the URL names, which redirects it (MOVED) once a replica has
 * taken over. A
 * missing consumer group is created again; a missing function library is
 * loaded again only by a worker started with --load-library, others wait
 * for an operator and say so every 30 s. Every socket is made close-on-exec
 * (hiredis 0.14.1 does not), so no exec child inherits one, and a TCP one
 * gets keepalive and TCP_USER_TIMEOUT (conn.h).
 *
 * The watchdog (timer `watchdog`, every quarter beat, at most every
 * second): a silent partition leaves a connection open with nothing moving,
 * which TCP alone notices only after its timeouts (tens of seconds with the
 * keepalive above; about 15 minutes of retransmissions without it), while
 * other workers take this worker's items. A connection is dropped as lost
 * (logged once per outage: "no reply from Redis for N ms; reconnecting")
 * when (two beat intervals being at least WATCHDOG_QUIET_MIN_MS)
 *   cmd: the heartbeat in flight (lease.c) has had no reply for two beat
 *        intervals;
 *   blk: the blocking read in flight, which Redis answers within block_ms,
 *        has had no reply for block_ms plus two beat intervals;
 *   either: its connect and setup (AUTH, SELECT, CLIENT ID) has not
 *        finished in two beat intervals (a connect into a black hole), unless
 *        Redis asked us to wait (LOADING).
 * hiredis's redisAsyncDisconnect would wait for the replies that never
 * come, so the context is freed (redisAsyncFree): the callbacks of the
 * calls in flight get NULL, as for any lost connection (completions are put
 * back and sent again), and the reconnect backoff takes over. The watchdog
 * runs on while the worker closes: a connection still silent two beat
 * intervals after sl__aredis_close is freed too, so a worker stopped during
 * a partition still exits.
 */

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker.h"

#include "alloc.h"
#include "conn.h"
#include "id.h"
#include "log.h"
#include "uvredis.h"

#define RECONNECT_MIN_MS 100    /* first reconnect delay */
#define RECONNECT_MAX_MS 5000   /* longest reconnect delay */
#define WATCHDOG_TICK_MAX_MS 1000 /* the watchdog looks at least this often, ms */
#define WATCHDOG_QUIET_MIN_MS 1000 /* silence never taken for a loss below this, ms (a tiny --visibility) */

static void on_ready(redisAsyncContext *ac, void *reply, void *priv);
static void lost_redis(sl_worker_t *w, const char *why);
static void closed_maybe(sl_worker_t *w);

static void on_reinit(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  if (r != NULL && r->type == REDIS_REPLY_ERROR)
    sl__worker_fatal(w, SL_EREDIS, "cannot set up the queue again: %s", r->str);
  sl__worker_kick(w);
}

static void on_pause_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;

  w->paused = 0;
  /* Connections whose setup was answered LOADING: ask again (the
   * watchdog gives the setup its time again). */
  if (w->cmd != NULL && !w->cmd_up) {
    w->cmd_since = uv_now(w->loop);
    redisAsyncCommand(w->cmd, on_ready, NULL, "CLIENT ID");
  }
  if (w->blk != NULL && !w->blk_up) {
    w->blk_since = uv_now(w->loop);
    redisAsyncCommand(w->blk, on_ready, NULL, "CLIENT ID");
  }
  sl__worker_kick(w);
}

static void forget(sl_worker_t *w, redisAsyncContext *ac);
static void lost_redis(sl_worker_t *w, const char *why);

int sl__aredis_set_node(sl_worker_t *w, const char *host, size_t hostlen, int port) {
  char *h = sl_strndup(host, hostlen);

  if (h == NULL)
    return SL_ENOMEM;
  sl_free(w->url.host);
  w->url.host = h;
  w->url.port = port;
  return 0;
}

/* Redis Cluster: the slot of the queue has a new master ("MOVED SLOT
 * HOST:PORT"): both connections go there. The calls in flight get no
 * reply and are made again, as after any lost connection. */
static void follow_moved(sl_worker_t *w, const char *msg) {
  const char *addr = strchr(msg + 6, ' ');
  const char *colon = addr != NULL ? strrchr(addr, ':') : NULL;
  char why[300];

  if (colon == NULL || colon == addr + 1 || atoi(colon + 1) <= 0 ||
      sl__aredis_set_node(w, addr + 1, (size_t)(colon - addr - 1), atoi(colon + 1)) != 0)
    return;
  snprintf(why, sizeof(why), "queue %s moved to %.200s (Redis Cluster)", w->keys.queue, addr + 1);
  w->ever_up = 1; /* Redis was reached: a move is no failure to start */
  lost_redis(w, why);
  if (w->cmd != NULL)
    forget(w, w->cmd);
  if (w->blk != NULL)
    forget(w, w->blk);
}

/* Redis Cluster: the node we reached is gone (a failover?): try the next
 * node the URL names; whichever answers redirects us to the queue's
 * master (MOVED). */
static void next_seed(sl_worker_t *w) {
  if (!w->url.cluster || w->url.nseeds < 2)
    return;
  w->seed_turn = (w->seed_turn + 1) % w->url.nseeds;
  sl__aredis_set_node(w, w->url.seed_host[w->seed_turn], strlen(w->url.seed_host[w->seed_turn]),
                      w->url.seed_port[w->seed_turn]);
}

int sl__aredis_recoverable(sl_worker_t *w, const redisReply *r) {
  int missing_lib = sl__script_missing(r->str);

  if (strncmp(r->str, "MOVED ", 6) == 0 && w->url.cluster) {
    follow_moved(w, r->str);
    return 1;
  }
  /* Redis is loading its data after a restart, or busy; a cluster slot is
   * moving (TRYAGAIN, ASK: the functions refuse to run until the move is
   * done) or failing over (CLUSTERDOWN): wait a moment. */
  if (strncmp(r->str, "LOADING", 7) == 0 || strncmp(r->str, "BUSY", 4) == 0 ||
      strncmp(r->str, "TRYAGAIN", 8) == 0 || strncmp(r->str, "MASTERDOWN", 10) == 0 ||
      strncmp(r->str, "OOM", 3) == 0 || strncmp(r->str, "ASK ", 4) == 0 || strncmp(r->str, "CLUSTERDOWN", 11) == 0) {
    if (!w->paused && !w->closed) {
      sl__log_warn("Redis answered %.60s; retrying in a moment", r->str);
      w->paused = 1;
      uv_timer_start(&w->pause, on_pause_timer, (uint64_t)sl__jitter(250), 0);
    }
    return 1;
  }

  if (!missing_lib && strncmp(r->str, "NOGROUP", 7) != 0 && strncmp(r->str, "UNBLOCKED", 9) != 0)
    return 0;
  if (w->cmd == NULL)
    return 1;
  if (missing_lib && !w->load_library) {
    /* Only an operator loads code: wait for `sluice library load`. */
    int64_t now = sl__now_ms();

    if (now - w->lib_warned_at >= 30000) {
      sl__log_warn("the sluice function library is gone from Redis (restarted without persistence?): waiting "
                   "for an operator to run `sluice library load`");
      w->lib_warned_at = now;
    }
    if (!w->paused && !w->closed) {
      w->paused = 1;
      uv_timer_start(&w->pause, on_pause_timer, (uint64_t)sl__jitter(1000), 0);
    }
    return 1;
  }
  sl__log_warn("Redis lost the sluice %s; setting it up again", missing_lib ? "functions" : "consumer group");
  if (missing_lib)
    redisAsyncCommand(w->cmd, on_reinit, NULL, "FUNCTION LOAD REPLACE %b", sl__lua_library,
                      sl__lua_library_len);
  redisAsyncCommand(w->cmd, on_reinit, NULL, "FCALL sluice_v1_init 3 %s %s %s %s", w->keys.stream[0],
                    w->keys.stream[1], w->keys.stream[2], SL_GROUP);
  return 1;
}

int sl__aredis_reply(sl_worker_t *w, const redisReply *r, int fatal, const char *what) {
  if (r == NULL)
    return 0; /* the connection is gone; on_disconnect deals with it */
  if (r->type != REDIS_REPLY_ERROR)
    return 1;
  if (!sl__aredis_recoverable(w, r)) {
    if (fatal)
      sl__worker_fatal(w, SL_EREDIS, "%s failed: %s", what, r->str);
    else
      sl__log_warn("%s failed: %s", what, r->str);
  }
  return 0;
}

static void connect_both(sl_worker_t *w);

static void on_reconnect_timer(uv_timer_t *t) {
  connect_both(t->data);
}

/* Lost Redis (or could not reach it again): try again after a backoff. */
static void lost_redis(sl_worker_t *w, const char *why) {
  char where[300];

  if (w->closed)
    return;
  if (!w->ever_up) {
    sl__url_describe(&w->url, where, sizeof(where));
    sl__worker_fatal(w, SL_ECONN, "cannot connect to Redis at %s: %s", where, why);
    return;
  }
  if (w->down_since == 0) {
    w->down_since = sl__now_ms();
    sl__url_describe(&w->url, where, sizeof(where));
    sl__log_warn("lost the connection to Redis at %s: %s; reconnecting (%d items keep running)", where, why,
                 w->running);
    w->reconnect_delay = RECONNECT_MIN_MS;
  }
  if (!uv_is_active((uv_handle_t *)&w->reconnect)) {
    uv_timer_start(&w->reconnect, on_reconnect_timer, (uint64_t)sl__jitter(w->reconnect_delay), 0);
    w->reconnect_delay = w->reconnect_delay * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : w->reconnect_delay * 2;
  }
}

static void on_connect(const redisAsyncContext *ac, int status) {
  sl_worker_t *w = ac->data;

  if (status == REDIS_OK)
    return;
  /* hiredis frees the context after this callback. */
  if (ac == w->cmd) {
    w->cmd = NULL;
    w->cmd_up = 0;
  } else if (ac == w->blk) {
    w->blk = NULL;
    w->blk_up = 0;
  }
  closed_maybe(w);
  lost_redis(w, ac->errstr);
  next_seed(w);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  sl_worker_t *w = ac->data;

  /* Neither, when the watchdog dropped it (it cleared its pointer first). */
  if (ac == w->cmd) {
    w->cmd = NULL;
    w->cmd_up = 0;
  } else if (ac == w->blk) {
    w->blk = NULL;
    w->blk_up = 0;
    w->blocking = 0;
  }
  closed_maybe(w);
  if (status != REDIS_OK && !w->closed)
    lost_redis(w, ac->errstr[0] ? ac->errstr : "closed by the server");
  sl__worker_kick(w);
}

static void on_ready(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  if (r == NULL)
    return;
  if (r->type == REDIS_REPLY_ERROR) {
    if (sl__aredis_recoverable(w, r))
      return; /* up, but loading its data: on_pause_timer asks again */
    sl__worker_fatal(w, SL_EREDIS, "Redis refused the connection setup: %s", r->str);
    return;
  }
  if (ac == w->cmd) {
    w->cmd_up = 1;
  } else {
    w->blk_up = 1;
    w->blk_client_id = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
  }
  if (w->cmd_up && w->blk_up) {
    w->ever_up = 1;
    if (w->down_since != 0) {
      sl__log_info("reconnected to Redis after %.1f s; sending %d held completions", 
                   (double)(sl__now_ms() - w->down_since) / 1000.0, w->ndone);
      w->down_since = 0;
      w->idle = 0;
    }
    if (!w->beating && !w->closed)
      sl__lease_beat(w); /* re-register and re-assert claims at once */
  }
  sl__worker_kick(w);
}

static void on_setup(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  if (r != NULL && r->type == REDIS_REPLY_ERROR)
    sl__worker_fatal(w, SL_EREDIS, "Redis refused %s: %s", (const char *)priv, r->str);
}

/* A new async connection, or NULL with *why set (the caller decides). */
static redisAsyncContext *aconnect(sl_worker_t *w, char *why, size_t whylen) {
  redisAsyncContext *ac;

  if (w->url.path != NULL)
    ac = redisAsyncConnectUnix(w->url.path);
  else
    ac = redisAsyncConnect(w->url.host, w->url.port);
  if (ac == NULL) {
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  if (ac->err) {
    snprintf(why, whylen, "%s", ac->errstr);
    redisAsyncFree(ac);
    return NULL;
  }
  ac->data = w;
  /* hiredis 0.14.1 opens its sockets without close-on-exec: no exec child
   * may inherit an authenticated Redis connection (the spawn happens on
   * this thread, so setting it now is soon enough). */
  fcntl(ac->c.fd, F_SETFD, FD_CLOEXEC);
  if (w->url.path == NULL)
    sl__redis_keepalive(ac->c.fd); /* a silent link fails in about 30 s, not 15 minutes */
  if (sl__uvredis_attach(w->loop, ac) != 0) {
    snprintf(why, whylen, "cannot watch the socket");
    redisAsyncFree(ac);
    return NULL;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  if (w->url.password != NULL && w->url.user != NULL)
    redisAsyncCommand(ac, on_setup, "AUTH", "AUTH %s %s", w->url.user, w->url.password);
  else if (w->url.password != NULL)
    redisAsyncCommand(ac, on_setup, "AUTH", "AUTH %s", w->url.password);
  if (w->url.db != 0)
    redisAsyncCommand(ac, on_setup, "SELECT", "SELECT %d", w->url.db);
  redisAsyncCommand(ac, on_ready, NULL, "CLIENT ID");
  return ac;
}

/* Opens `*ac` if it is not open and notes when; 0, or -1 with Redis lost. */
static int connect_one(sl_worker_t *w, redisAsyncContext **ac, uint64_t *since) {
  char why[256];

  if (*ac != NULL)
    return 0;
  *ac = aconnect(w, why, sizeof(why));
  if (*ac == NULL) {
    lost_redis(w, why);
    next_seed(w);
    return -1;
  }
  *since = uv_now(w->loop);
  return 0;
}

/* Opens whichever of the two connections is not open. */
static void connect_both(sl_worker_t *w) {
  if (w->closed)
    return;
  if (connect_one(w, &w->cmd, &w->cmd_since) == 0)
    connect_one(w, &w->blk, &w->blk_since);
}

/* ---- The watchdog ---- */

/* Frees connection ac now, without waiting for its replies. */
static void forget(sl_worker_t *w, redisAsyncContext *ac) {
  if (ac == w->cmd) {
    w->cmd = NULL;
    w->cmd_up = 0;
  } else {
    w->blk = NULL;
    w->blk_up = 0;
    w->blocking = 0;
  }
  redisAsyncFree(ac); /* on_disconnect, if called, finds neither pointer */
}

/* Closing, and both connections gone: the watchdog's work is done. */
static void closed_maybe(sl_worker_t *w) {
  if (w->closed && w->cmd == NULL && w->blk == NULL && w->timers_up &&
      !uv_is_closing((uv_handle_t *)&w->watchdog))
    uv_close((uv_handle_t *)&w->watchdog, NULL);
}

/* Drops connection ac, silent for quiet_ms, as lost: frees it at once (its
 * calls in flight get NULL replies), then reconnects with backoff. */
static void drop_silent(sl_worker_t *w, redisAsyncContext *ac, uint64_t quiet_ms) {
  char why[64];

  forget(w, ac);
  snprintf(why, sizeof(why), "no reply from Redis for %llu ms", (unsigned long long)quiet_ms);
  lost_redis(w, why);
  sl__worker_kick(w);
}

static void on_watchdog(uv_timer_t *t) {
  sl_worker_t *w = t->data;
  uint64_t now = uv_now(w->loop);
  uint64_t quiet = 2 * (uint64_t)w->beat_ms;

  if (quiet < WATCHDOG_QUIET_MIN_MS)
    quiet = WATCHDOG_QUIET_MIN_MS;
  if (w->closed) {
    /* A graceful close waits for the replies in flight; a silent
     * connection would keep the loop, and the process, alive. */
    if (now - w->closed_at >= quiet) {
      if (w->cmd != NULL)
        forget(w, w->cmd);
      if (w->blk != NULL)
        forget(w, w->blk);
    }
    closed_maybe(w);
    return;
  }
  /* A reply may be waiting unread: libuv runs timers before it polls, so
   * after the whole process stalled (SIGSTOP, a frozen machine) the
   * watchdog comes first. Read what is there before calling it silence. */
  if (w->cmd != NULL && w->cmd_up && w->beating && now - w->beat_sent_at >= quiet)
    redisAsyncHandleRead(w->cmd); /* may end the connection: w->cmd is NULL then */
  if (w->blk != NULL && w->blk_up && w->blocking && now - w->block_sent_at >= (uint64_t)w->block_ms + quiet)
    redisAsyncHandleRead(w->blk);
  if (w->cmd != NULL && w->cmd_up && w->beating && now - w->beat_sent_at >= quiet)
    drop_silent(w, w->cmd, now - w->beat_sent_at);
  else if (w->cmd != NULL && !w->cmd_up && !w->paused && now - w->cmd_since >= quiet)
    drop_silent(w, w->cmd, now - w->cmd_since);
  if (w->blk != NULL && w->blk_up && w->blocking && now - w->block_sent_at >= (uint64_t)w->block_ms + quiet)
    drop_silent(w, w->blk, now - w->block_sent_at);
  else if (w->blk != NULL && !w->blk_up && !w->paused && now - w->blk_since >= quiet)
    drop_silent(w, w->blk, now - w->blk_since);
}

void sl__aredis_close(sl_worker_t *w) {
  w->closed_at = uv_now(w->loop);
  if (w->cmd != NULL && w->cmd_up)
    redisAsyncDisconnect(w->cmd); /* after the commands already sent */
  else if (w->cmd != NULL)
    forget(w, w->cmd); /* still connecting: nothing to wait for */
  if (w->blk != NULL && w->blk_up)
    redisAsyncDisconnect(w->blk);
  else if (w->blk != NULL)
    forget(w, w->blk);
  closed_maybe(w);
}

void sl__aredis_start(sl_worker_t *w) {
  uint64_t tick = (uint64_t)w->beat_ms / 4;

  if (tick > WATCHDOG_TICK_MAX_MS)
    tick = WATCHDOG_TICK_MAX_MS;
  if (tick < 25)
    tick = 25;
  uv_timer_start(&w->watchdog, on_watchdog, tick, tick);
  connect_both(w);
}
