/*
 * The queue at a glance: `sluice stats` (sl_queue_stats).
 *
 * One object from a handful of reads: per priority the entries no worker
 * has read yet (the group's lag) and those a worker holds (the pending
 * count); the delayed set (retries and scheduled items); dead letters and
 * how many the cap dropped; live workers (those that beat in the last
 * 30 s and still have their registry hash, as `sluice workers` lists
 * them); items ended per minute (counted by the completion function); the
 * queue's default rate key and its limits (as sl_limit_list), with the
 * items waiting for a concurrency lease summed; and the items parked by
 * paused batches, counted over at most PARKED_SCAN_MAX of them, 100 per
 * round trip, so a scrape never does work that grows with the queue.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "buf.h"
#include "conn.h"
#include "item.h"
#include "json.h"
#include "limit.h"
#include "script.h"

#define PARKED_PAGE 100       /* paused batches whose parked items one round trip counts */
#define PARKED_SCAN_MAX 10000 /* paused batches looked at, at most */
#define LIVE_MAX "10000"      /* workers looked at, at most */
#define TPUT_MINUTES 30        /* minutes of throughput history in the stats */

static long long reply_int(redisReply *r) {
  long long v = 0;

  if (r == NULL)
    return 0;
  if (r->type == REDIS_REPLY_INTEGER)
    v = r->integer;
  else if (r->type == REDIS_REPLY_STRING)
    v = strtoll(r->str, NULL, 10);
  else if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_INTEGER)
    v = r->element[0]->integer; /* XPENDING summary */
  freeReplyObject(r);
  return v;
}

typedef struct limits_out {
  sl_buf *b;
  long long waiting; /* items waiting for a lease, over all limits */
} limits_out;

static int append_limit(const char *json, size_t len, void *ud) {
  limits_out *o = ud;
  const char *w = strstr(json, "\"waiting\":");
  int rc = 0;

  if (w != NULL && w < json + len)
    o->waiting += strtoll(w + 10, NULL, 10);
  if (o->b->p[o->b->len - 1] != '[')
    rc = sl__buf_putc(o->b, ',');
  return rc == 0 ? sl__buf_append(o->b, json, len) : rc;
}

/* Live workers, by the rule `sluice workers` uses (fleet.c): a member of
 * P..workers that beat in the last 30 s and whose registry hash P..w:ID
 * still exists (it expires three beats after the last one), so a worker
 * killed a moment ago is not counted; at most LIVE_MAX looked at, their
 * EXISTS pipelined. */
static int count_live(sl_client_t *c, const sl_keys *k, long long now_ms, long long *live) {
  char key[SL_NAME_MAX + 64];
  char since[32];
  const char *av[7] = {"ZRANGEBYSCORE", key, since, "+inf", "LIMIT", "0", LIVE_MAX};
  redisReply *r;
  int rc = 0;

  *live = 0;
  snprintf(key, sizeof(key), "%sworkers", k->prefix);
  snprintf(since, sizeof(since), "%lld", now_ms - 30000);
  r = sl__client_cmd(c, &rc, 7, av, NULL);
  if (r == NULL)
    return rc;
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
    char wkey[SL_NAME_MAX + 200];
    const char *ev[2] = {"EXISTS", wkey};

    snprintf(wkey, sizeof(wkey), "%sw:%.128s", k->prefix, r->element[i]->str);
    redisAppendCommandArgv(c->rc, 2, ev, NULL);
  }
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
    void *x = NULL;

    if (redisGetReply(c->rc, &x) != REDIS_OK) {
      freeReplyObject(r);
      return sl__client_fail(c, SL_ECONN, "lost the Redis connection counting workers: %s", c->rc->errstr);
    }
    if (((redisReply *)x)->type == REDIS_REPLY_INTEGER && ((redisReply *)x)->integer == 1)
      (*live)++;
    freeReplyObject(x);
  }
  freeReplyObject(r);
  return 0;
}

/* The items parked by the queue's paused batches (P..b:ID:p), in
 * pipelined pages; 0, or an error code. */
static int count_parked(sl_client_t *c, const sl_keys *k, long long *parked) {
  char key[SL_NAME_MAX + 64];
  int rc = 0;

  *parked = 0;
  snprintf(key, sizeof(key), "%sbs:paused", k->prefix);
  for (long long from = 0; rc == 0 && from < PARKED_SCAN_MAX; from += PARKED_PAGE) {
    char lo[24];
    char hi[24];
    const char *av[4] = {"ZRANGE", key, lo, hi};
    redisReply *r;
    size_t n;

    snprintf(lo, sizeof(lo), "%lld", from);
    snprintf(hi, sizeof(hi), "%lld", from + PARKED_PAGE - 1);
    r = sl__client_cmd(c, &rc, 4, av, NULL);
    if (r == NULL)
      return rc;
    n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    for (size_t i = 0; i < n; i++) {
      char pk[SL_NAME_MAX + 200];
      const char *xl[2] = {"XLEN", pk};

      snprintf(pk, sizeof(pk), "%sb:%.128s:p", k->prefix, r->element[i]->str);
      redisAppendCommandArgv(c->rc, 2, xl, NULL);
    }
    for (size_t i = 0; i < n; i++) {
      void *x = NULL;

      if (redisGetReply(c->rc, &x) != REDIS_OK) {
        freeReplyObject(r);
        return sl__client_fail(c, SL_ECONN, "lost the Redis connection counting parked items: %s", c->rc->errstr);
      }
      if (((redisReply *)x)->type == REDIS_REPLY_INTEGER)
        *parked += ((redisReply *)x)->integer;
      freeReplyObject(x);
    }
    freeReplyObject(r);
    if (n < PARKED_PAGE)
      break;
  }
  return rc;
}

/* ,"throughput":[N,...]: items ended in each of the last TPUT_MINUTES
 * minutes (tput:MINUTE, kept an hour by complete), the oldest first, the
 * current minute (so far) last. One MGET. */
static int throughput(sl_client_t *c, const sl_keys *k, long long now_ms, sl_buf *out) {
  char keys[TPUT_MINUTES][SL_NAME_MAX + 64];
  const char *av[TPUT_MINUTES + 1];
  redisReply *r;
  int rc = 0;

  av[0] = "MGET";
  for (int i = 0; i < TPUT_MINUTES; i++) {
    snprintf(keys[i], sizeof(keys[i]), "%stput:%lld", k->prefix, now_ms / 60000 - (TPUT_MINUTES - 1 - i));
    av[1 + i] = keys[i];
  }
  r = sl__client_cmd(c, &rc, TPUT_MINUTES + 1, av, NULL);
  if (r == NULL)
    return rc;
  rc = sl__buf_puts(out, ",\"throughput\":[");
  for (size_t i = 0; rc == 0 && i < (size_t)TPUT_MINUTES; i++) {
    const redisReply *e = r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i] : NULL;

    rc = sl__buf_printf(out, "%s%lld", i ? "," : "", e && e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0);
  }
  freeReplyObject(r);
  return rc ? rc : sl__buf_putc(out, ']');
}

SL_EXTERN int sl_queue_stats(sl_client_t *c, const char *queue, char **json_out) {
  static const char *const names[3] = {"high", "normal", "low"};
  char key[SL_NAME_MAX + 64];
  long long queued[3];
  long long running[3];
  long long delayed;
  long long dead;
  long long workers = 0;
  long long dropped;
  long long cur;
  long long prev;
  long long now_ms;
  long long parked = 0;
  sl_keys k;
  sl_buf out;
  redisReply *r;
  int rc = 0;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  {
    const char *av[1] = {"TIME"};

    r = sl__client_cmd(c, &rc, 1, av, NULL);
    if (r == NULL)
      return rc;
    now_ms = strtoll(r->element[0]->str, NULL, 10) * 1000 + strtoll(r->element[1]->str, NULL, 10) / 1000;
    freeReplyObject(r);
  }
  for (int i = 0; i < 3; i++) {
    const char *xl[2] = {"XLEN", k.stream[i]};
    const char *xp[3] = {"XPENDING", k.stream[i], SL_GROUP};
    long long len = reply_int(sl__client_cmd(c, &rc, 2, xl, NULL));

    running[i] = rc == 0 ? reply_int(sl__client_cmd(c, &rc, 3, xp, NULL)) : 0;
    if (rc == SL_EREDIS)
      rc = 0; /* no group yet: nothing pending */
    queued[i] = len - running[i];
    if (rc != 0)
      return rc;
  }
  snprintf(key, sizeof(key), "%sdelayed", k.prefix);
  {
    const char *av[2] = {"ZCARD", key};

    delayed = reply_int(sl__client_cmd(c, &rc, 2, av, NULL));
  }
  snprintf(key, sizeof(key), "%sdead", k.prefix);
  {
    const char *av[2] = {"XLEN", key};

    dead = reply_int(sl__client_cmd(c, &rc, 2, av, NULL));
  }
  snprintf(key, sizeof(key), "%sdead:dropped", k.prefix);
  {
    const char *av[2] = {"GET", key};

    dropped = reply_int(sl__client_cmd(c, &rc, 2, av, NULL));
  }
  if (rc == 0)
    rc = count_live(c, &k, now_ms, &workers);
  {
    char k1[SL_NAME_MAX + 64];
    char k2[SL_NAME_MAX + 64];
    const char *a1[2] = {"GET", k1};
    const char *a2[2] = {"GET", k2};

    snprintf(k1, sizeof(k1), "%stput:%lld", k.prefix, now_ms / 60000);
    snprintf(k2, sizeof(k2), "%stput:%lld", k.prefix, now_ms / 60000 - 1);
    cur = reply_int(sl__client_cmd(c, &rc, 2, a1, NULL));
    prev = reply_int(sl__client_cmd(c, &rc, 2, a2, NULL));
  }
  if (rc == 0)
    rc = count_parked(c, &k, &parked);
  if (rc != 0)
    return rc;
  sl__buf_init(&out, 64 * 1024);
  {
    /* The last 60 s: this minute so far plus the matching part of the last. */
    double into = (double)(now_ms % 60000) / 60000.0;
    double last_minute = (double)cur + (double)prev * (1.0 - into);

    rc = sl__buf_printf(&out, "{\"queue\":\"%s\"", k.queue);
    for (int i = 0; i < 3 && rc == 0; i++)
      rc = sl__buf_printf(&out, ",\"%s\":{\"queued\":%lld,\"running\":%lld}", names[i], queued[i], running[i]);
    if (rc == 0)
      rc = sl__buf_printf(&out,
                          ",\"queued\":%lld,\"running\":%lld,\"delayed\":%lld,\"parked\":%lld,\"dead\":%lld,"
                          "\"dead_dropped\":%lld,\"workers\":%lld,\"ended_last_minute\":%.0f,\"per_s\":%.1f,"
                          "\"default_rate_key\":",
                          queued[0] + queued[1] + queued[2], running[0] + running[1] + running[2], delayed, parked,
                          dead, dropped, workers, last_minute, last_minute / 60.0);
    if (rc == 0) {
      char cfg[SL_NAME_MAX + 64];
      const char *av[3] = {"HGET", cfg, "rate_key"};

      snprintf(cfg, sizeof(cfg), "%sconfig", k.prefix);
      r = sl__client_cmd(c, &rc, 3, av, NULL);
      if (r != NULL && r->type == REDIS_REPLY_STRING)
        rc = sl__json_put_str(&out, r->str, r->len);
      else if (r != NULL)
        rc = sl__buf_puts(&out, "null");
      if (r != NULL)
        freeReplyObject(r);
    }
    if (rc == 0)
      rc = sl__buf_puts(&out, ",\"limits\":[");
  }
  {
    limits_out lo = {&out, 0};

    if (rc == 0)
      rc = sl_limit_list(c, queue, append_limit, &lo);
    if (rc == 0)
      rc = sl__buf_printf(&out, "],\"waiting_lease\":%lld", lo.waiting);
  }
  if (rc == 0)
    rc = throughput(c, &k, now_ms, &out);
  if (rc == 0)
    rc = sl__buf_putc(&out, '}');
  if (rc != 0) {
    sl__buf_free(&out);
    return rc < 0 && c->errstr[0] ? rc : sl__client_fail(c, rc, "%s", sl_strerror(rc));
  }
  *json_out = sl__buf_take(&out);
  return *json_out ? 0 : sl__client_fail(c, SL_ENOMEM, "out of memory");
}
