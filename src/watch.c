/*
 * Following a batch live. A second connection SSUBSCRIBEs to the batch's
 * channel first; only then is the hash read, so no event between the read
 * and the subscription is lost. Events carry absolute counters, so a
 * subscriber never has to add anything up. If nothing arrives for
 * WATCH_IDLE_MS the hash is read once more, which covers an event lost with a
 * broken connection without polling while events flow.
 *
 * A lost connection (Redis restarted or killed, a broken link, Redis still
 * LOADING its data) does not end the watch: both connections are dropped and
 * opened again, the channel subscribed again and the hash read again, which
 * gives the state reached meanwhile, the end of the batch included. Attempts
 * are WATCH_RETRY_MIN_MS apart at first, doubling up to WATCH_RETRY_MAX_MS,
 * until give_up_ms (default WATCH_GIVE_UP_MS) have passed since the
 * connection was lost; then the watch fails with SL_ECONN and the last
 * cause. The caller hears of each outage twice through on_link: once when it
 * begins, once when it ends.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "batch.h"
#include "buf.h"
#include "conn.h"

#define WATCH_IDLE_MS 5000      /* re-read the hash after this long without events, ms */
#define WATCH_GIVE_UP_MS 60000  /* default: stop reconnecting this long after the loss, ms */
#define WATCH_RETRY_MIN_MS 100  /* first wait between reconnect attempts, ms */
#define WATCH_RETRY_MAX_MS 1000 /* longest wait between reconnect attempts, ms */
#define WATCH_CONNECT_MIN_MS 200 /* shortest connect timeout while reconnecting, ms */

/* One watch: what it follows and its subscription. */
typedef struct watch {
  sl_client_t *c;        /* the client: its connection reads the hash, its errstr gets causes */
  sl_keys k;             /* the queue's keys */
  const char *batch;     /* the batch id */
  char chan[256];        /* the batch's event channel */
  sl_line_cb cb;         /* the caller's callback */
  void *ud;              /* and its argument */
  redisContext *sub;     /* the subscribed connection; NULL while there is none */
  int ended;             /* the batch has ended */
  int stopped;           /* the callback returned non-zero: its code is the result */
} watch;

static long long now_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Calls cb with the batch's state from its hash; sets w->ended. */
static int emit_state(watch *w) {
  redisReply *h;
  sl_buf out;
  int rc;

  h = sl__batch_state(w->c, &w->k, w->batch, &rc);
  if (h == NULL)
    return rc;
  sl__buf_init(&out, 4096);
  rc = sl__batch_json(&out, &w->k, w->batch, h);
  w->ended = sl__batch_ended(h);
  freeReplyObject(h);
  if (rc == 0) {
    rc = w->cb(out.p, out.len, w->ud);
    w->stopped = rc != 0;
  }
  sl__buf_free(&out);
  return rc;
}

static int event_ended(const char *msg, size_t len) {
  cJSON *j = cJSON_ParseWithLength(msg, len);
  const cJSON *st;
  const cJSON *done;
  const cJSON *total;
  int ended = 0;

  if (j == NULL)
    return 0;
  st = cJSON_GetObjectItemCaseSensitive(j, "status");
  done = cJSON_GetObjectItemCaseSensitive(j, "done");
  total = cJSON_GetObjectItemCaseSensitive(j, "total");
  if (cJSON_IsString(st) && cJSON_IsNumber(done) && cJSON_IsNumber(total)) {
    if (strcmp(st->valuestring, "completed") == 0)
      ended = 1;
    else if (strcmp(st->valuestring, "cancelled") == 0 && done->valuedouble >= total->valuedouble)
      ended = 1;
  }
  cJSON_Delete(j);
  return ended;
}

/* 1 when a failure may pass by itself, so reconnecting is worth it: a
 * broken or refused connection, or Redis busy with its data or a script. */
static int transient(int rc, const char *err) {
  if (rc == SL_ECONN)
    return 1;
  if (rc != SL_EREDIS)
    return 0;
  return strstr(err, "LOADING ") != NULL || strstr(err, "BUSY ") != NULL || strstr(err, "TRYAGAIN ") != NULL ||
         strstr(err, "MASTERDOWN ") != NULL || strstr(err, "MOVED ") != NULL ||
         strstr(err, "CLUSTERDOWN ") != NULL;
}

/* Opens what is missing of the two connections (each with connect timeout
 * timeout_ms) and subscribes. 0, or an SL_E* code with the cause in
 * w->c->errstr. */
static int watch_connect(watch *w, int timeout_ms) {
  redisReply *r;
  int rc;

  if (w->c->rc == NULL || w->c->rc->err != 0) {
    rc = sl__client_reconnect(w->c, timeout_ms);
    if (rc != 0)
      return rc;
  }
  rc = sl__client_route(w->c, w->chan); /* on a cluster: the queue's master, where its events are published */
  if (rc != 0)
    return rc;
  if (w->sub != NULL)
    return 0;
  rc = sl__client_connect_same(w->c, timeout_ms, &w->sub);
  if (rc != 0) {
    w->sub = NULL;
    return rc;
  }
  r = redisCommand(w->sub, "SSUBSCRIBE %s", w->chan); /* sharded: the channel is in the queue's slot */
  if (r == NULL) {
    rc = sl__client_fail(w->c, SL_ECONN, "lost the Redis connection: %s", w->sub->errstr);
    redisFree(w->sub);
    w->sub = NULL;
    return rc;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    rc = sl__client_fail(w->c, SL_EREDIS, "Redis refused SSUBSCRIBE %s: %s", w->chan, r->str);
    freeReplyObject(r);
    redisFree(w->sub);
    w->sub = NULL;
    return rc;
  }
  freeReplyObject(r);
  return 0;
}

/* Reads the hash, then follows the subscription until the batch ends (0)
 * or something fails (an SL_E* code, the cause in w->c->errstr). */
static int watch_follow(watch *w) {
  int rc = emit_state(w);

  while (rc == 0 && !w->ended) {
    struct pollfd pfd = {w->sub->fd, POLLIN, 0};
    redisReply *r = NULL;
    void *reply = NULL;
    int n;

    if (redisGetReplyFromReader(w->sub, &reply) != REDIS_OK)
      return sl__client_fail(w->c, SL_EPROTO, "bad reply on the event subscription: %s", w->sub->errstr);
    if (reply == NULL) {
      n = poll(&pfd, 1, WATCH_IDLE_MS);
      if (n == 0) {
        rc = emit_state(w);
        continue;
      }
      if (n < 0)
        return sl__client_fail(w->c, SL_ECANCELED, "interrupted by a signal");
      if (redisBufferRead(w->sub) != REDIS_OK)
        return sl__client_fail(w->c, SL_ECONN, "lost the Redis connection while watching: %s", w->sub->errstr);
      continue;
    }
    r = reply;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(r->element[0]->str, "sunsubscribe") == 0) {
      /* The queue's slot moved to another cluster node: follow it there
       * (the hash is read again, so nothing meanwhile is missed). */
      freeReplyObject(r);
      return sl__client_fail(w->c, SL_ECONN, "the queue's cluster slot moved to another node");
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(r->element[0]->str, "smessage") == 0 && r->element[2]->type == REDIS_REPLY_STRING) {
      const redisReply *m = r->element[2];

      if (strstr(m->str, "\"type\":\"progress\"") == NULL) { /* item progress: not a batch event */
        rc = w->cb(m->str, m->len, w->ud);
        w->stopped = rc != 0;
        w->ended = event_ended(m->str, m->len);
      }
    }
    freeReplyObject(r);
  }
  return rc;
}

/* Waits ms; SL_ECANCELED when a caught signal interrupts the wait. */
static int pause_ms(sl_client_t *c, long long ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

  if (nanosleep(&ts, NULL) != 0 && errno == EINTR)
    return sl__client_fail(c, SL_ECANCELED, "interrupted by a signal");
  return 0;
}

SL_EXTERN int sl_batch_watch_with(sl_client_t *c, const char *queue, const char *batch, const sl_watch_opts *opts,
                                  sl_line_cb cb, void *ud) {
  long long give_up = opts != NULL && opts->give_up_ms > 0 ? (long long)opts->give_up_ms : WATCH_GIVE_UP_MS;
  void (*on_link)(int, const char *, void *) = opts != NULL ? opts->on_link : NULL;
  long long lost_at = -1; /* when the connection was lost; -1 while it is up */
  long long wait = WATCH_RETRY_MIN_MS;
  int timeout = SL_CONNECT_TIMEOUT_MS;
  watch w;
  int rc;

  memset(&w, 0, sizeof(w));
  if (sl__keys_init(&w.k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  w.c = c;
  w.batch = batch;
  w.cb = cb;
  w.ud = ud;
  snprintf(w.chan, sizeof(w.chan), "%sevents:%s", w.k.prefix, batch);
  for (;;) {
    long long now;

    rc = watch_connect(&w, timeout);
    if (rc == 0) {
      if (lost_at >= 0 && on_link != NULL)
        on_link(1, NULL, ud);
      lost_at = -1;
      wait = WATCH_RETRY_MIN_MS;
      rc = watch_follow(&w);
      if (rc == 0)
        break; /* the batch has ended */
    }
    if (w.stopped || !transient(rc, c->errstr))
      break;
    /* Sticky: a connection that failed once is dropped, both are opened again. */
    if (w.sub != NULL) {
      redisFree(w.sub);
      w.sub = NULL;
    }
    if (c->rc != NULL) {
      sl__client_drop(c);
    }
    now = now_ms();
    if (lost_at < 0) {
      lost_at = now;
      if (on_link != NULL)
        on_link(0, c->errstr, ud);
    }
    if (now - lost_at >= give_up) {
      char cause[sizeof(c->errstr)];

      snprintf(cause, sizeof(cause), "%s", c->errstr);
      rc = sl__client_fail(c, SL_ECONN, "lost the connection to Redis and could not reconnect within %lld %s: %s",
                           give_up % 1000 == 0 ? give_up / 1000 : give_up, give_up % 1000 == 0 ? "s" : "ms", cause);
      break;
    }
    if (wait > give_up - (now - lost_at))
      wait = give_up - (now - lost_at);
    rc = pause_ms(c, wait);
    if (rc != 0)
      break;
    wait = wait * 2 > WATCH_RETRY_MAX_MS ? WATCH_RETRY_MAX_MS : wait * 2;
    /* A connect may not run far past the give-up time. */
    timeout = (int)(give_up - (now_ms() - lost_at));
    if (timeout > SL_CONNECT_TIMEOUT_MS)
      timeout = SL_CONNECT_TIMEOUT_MS;
    if (timeout < WATCH_CONNECT_MIN_MS)
      timeout = WATCH_CONNECT_MIN_MS;
  }
  if (w.sub != NULL)
    redisFree(w.sub);
  return rc;
}

SL_EXTERN int sl_batch_watch(sl_client_t *c, const char *queue, const char *batch, sl_line_cb cb, void *ud) {
  return sl_batch_watch_with(c, queue, batch, NULL, cb, ud);
}
