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
 * MASTERDOWN and OOM pause every call for a moment (timer `pause`); a
 * missing consumer group is created again; a missing function library is
 * loaded again only by a worker started with --load-library, others wait
 * for an operator and say so every 30 s. Every socket is made close-on-exec
 * (hiredis 0.14.1 does not), so no exec child inherits one.
 */

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "worker.h"

#include "conn.h"
#include "id.h"
#include "log.h"
#include "uvredis.h"

#define RECONNECT_MIN_MS 100    /* first reconnect delay */
#define RECONNECT_MAX_MS 5000   /* longest reconnect delay */

static void on_ready(redisAsyncContext *ac, void *reply, void *priv);
static void lost_redis(sl_worker_t *w, const char *why);

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
  /* Connections whose setup was answered LOADING: ask again. */
  if (w->cmd != NULL && !w->cmd_up)
    redisAsyncCommand(w->cmd, on_ready, NULL, "CLIENT ID");
  if (w->blk != NULL && !w->blk_up)
    redisAsyncCommand(w->blk, on_ready, NULL, "CLIENT ID");
  sl__worker_kick(w);
}

int sl__aredis_recoverable(sl_worker_t *w, const redisReply *r) {
  int missing_lib = sl__script_missing(r->str);

  /* Redis is loading its data after a restart, or busy: wait a moment. */
  if (strncmp(r->str, "LOADING", 7) == 0 || strncmp(r->str, "BUSY", 4) == 0 ||
      strncmp(r->str, "TRYAGAIN", 8) == 0 || strncmp(r->str, "MASTERDOWN", 10) == 0 ||
      strncmp(r->str, "OOM", 3) == 0) {
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

static void on_reconnect_timer(uv_timer_t *t) {
  sl__aredis_connect(t->data);
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
  } else {
    w->blk = NULL;
    w->blk_up = 0;
  }
  lost_redis(w, ac->errstr);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  sl_worker_t *w = ac->data;

  if (ac == w->cmd) {
    w->cmd = NULL;
    w->cmd_up = 0;
  } else {
    w->blk = NULL;
    w->blk_up = 0;
  }
  w->blocking = ac == w->blk ? 0 : w->blocking;
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

void sl__aredis_connect(sl_worker_t *w) {
  char why[256];

  if (w->closed)
    return;
  if (w->cmd == NULL) {
    w->cmd = aconnect(w, why, sizeof(why));
    if (w->cmd == NULL) {
      lost_redis(w, why);
      return;
    }
  }
  if (w->blk == NULL) {
    w->blk = aconnect(w, why, sizeof(why));
    if (w->blk == NULL)
      lost_redis(w, why);
  }
}
