/*
 * The queue at a glance: `sluice stats` (sl_queue_stats).
 *
 * One object from a handful of reads: per priority the entries no worker
 * has read yet (the group's lag) and those a worker holds (the pending
 * count); the delayed set (retries and scheduled items); dead letters and
 * how many the cap dropped; live workers (those that beat in the last
 * 30 s); items ended per minute (counted by the completion function); the
 * queue's default rate key and its limits (as sl_limit_list).
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

static int append_limit(const char *json, size_t len, void *ud) {
  sl_buf *b = ud;
  int rc = 0;

  if (b->p[b->len - 1] != '[')
    rc = sl__buf_putc(b, ',');
  return rc == 0 ? sl__buf_append(b, json, len) : rc;
}

SL_EXTERN int sl_queue_stats(sl_client_t *c, const char *queue, char **json_out) {
  static const char *const names[3] = {"high", "normal", "low"};
  char key[SL_NAME_MAX + 64];
  long long queued[3];
  long long running[3];
  long long delayed;
  long long dead;
  long long workers;
  long long dropped;
  long long cur;
  long long prev;
  long long now_ms;
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
  snprintf(key, sizeof(key), "%sworkers", k.prefix);
  {
    char since[32];
    const char *av[4] = {"ZCOUNT", key, since, "+inf"};

    snprintf(since, sizeof(since), "%lld", now_ms - 30000);
    workers = reply_int(sl__client_cmd(c, &rc, 4, av, NULL));
  }
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
                          ",\"queued\":%lld,\"running\":%lld,\"delayed\":%lld,\"dead\":%lld,\"dead_dropped\":%lld,"
                          "\"workers\":%lld,\"ended_last_minute\":%.0f,\"per_s\":%.1f,\"default_rate_key\":",
                          queued[0] + queued[1] + queued[2], running[0] + running[1] + running[2], delayed, dead,
                          dropped, workers, last_minute, last_minute / 60.0);
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
  if (rc == 0)
    rc = sl_limit_list(c, queue, append_limit, &out);
  if (rc == 0)
    rc = sl__buf_puts(&out, "]}");
  if (rc != 0) {
    sl__buf_free(&out);
    return rc < 0 && c->errstr[0] ? rc : sl__client_fail(c, rc, "%s", sl_strerror(rc));
  }
  *json_out = sl__buf_take(&out);
  return *json_out ? 0 : sl__client_fail(c, SL_ENOMEM, "out of memory");
}
