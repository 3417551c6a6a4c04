/*
 * Rate limits: named token buckets shared by the whole fleet of a queue.
 *
 * A limit is one field of the queue's hash P..'limits':
 *
 *   NAME -> "T_US BURST RATE CONC"     e.g. "50000 5 20/s 0", "0 1 - 4"
 *
 * T_US is the emission interval in microseconds (one token every T_US; 0:
 * no rate), BURST how many may start at once after a quiet spell, RATE the
 * text it was set with ("-": none), CONC how many items of the key may run
 * at once across the fleet (0: no limit; leases in P..'cl:NAME', waiting
 * items in P..'cw:NAME', see sl_lease in lua/_lib.lua). The bucket's state is one key per limit, P..'rl:NAME', holding
 * the GCRA "theoretical arrival time" in µs on the Redis server's clock; the
 * fetch function charges it (sl_rate_wait in lua/_lib.lua). When you change
 * this format, change sl_rate_wait too and bump the protocol version.
 *
 * Setting and removing a limit are functions (sluice_v1_limit_set,
 * sluice_v1_limit_rm) because they must wake the items waiting for its
 * leases that may run now: all of them when the concurrency is gone, as many
 * as leases are free when it was raised. There may be millions, and Redis
 * serves nobody else while a function runs, so each call wakes at most
 * WAKE_STEP of them and the rest are woken here, in more calls of
 * sluice_v1_limit_wake (wake_rest), each atomic and safe to send again.
 */
#include <errno.h>
#include <limits.h>
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

#define WAKE_STEP 250      /* waiting items woken per call: SL_WAKE_MAX in lua/_lib.lua */

/* ---- Waking waiting items in steps ---- */

/* Reads a {moved, more} reply of sluice_v1_<fn>; SL_EPROTO for anything else. */
static int wake_reply(sl_client_t *c, const redisReply *r, const char *fn, long long *moved, long long *more) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER ||
      r->element[1]->type != REDIS_REPLY_INTEGER || r->element[0]->integer < 0 || r->element[1]->integer < 0)
    return sl__client_fail(c, SL_EPROTO, "sluice_v1_%s answered something other than {moved, more}", fn);
  *moved = r->element[0]->integer;
  *more = r->element[1]->integer;
  return 0;
}

/*
 * Wakes the items still waiting for limit `name` that may run, at most
 * `budget` of them (LLONG_MAX: all), in calls of sluice_v1_limit_wake of at
 * most WAKE_STEP items each, until one answers that nothing more may run or
 * wakes nothing. The budget is what the first step (limit_set) counted as
 * free leases: items woken since may not have taken their leases yet, and
 * a later step would count those leases as free again. av holds the limit
 * function's keys and its first two arguments (prefix, name). *woken grows
 * by the items woken. Returns 0, or the error of the call that failed
 * (with how many were woken before it in c->errstr).
 */
static int wake_rest(sl_client_t *c, const char **av, long long budget, size_t *woken) {
  char step[24];
  const char *wav[7];
  int rc = 0;

  memcpy(wav, av, 6 * sizeof(*wav));
  wav[6] = step;
  while (budget > 0) {
    long long moved = 0;
    long long more = 0;
    redisReply *r;

    snprintf(step, sizeof(step), "%lld", budget < WAKE_STEP ? budget : (long long)WAKE_STEP);
    r = sl__client_fcall(c, &rc, "limit_wake", 4, 7, wav, NULL);
    if (r == NULL) {
      char cause[sizeof(c->errstr)];

      snprintf(cause, sizeof(cause), "%s", c->errstr);
      return sl__client_fail(c, rc, "waking the items waiting for limit %s stopped after %zu: %s", av[5], *woken,
                             cause);
    }
    rc = wake_reply(c, r, "limit_wake", &moved, &more);
    freeReplyObject(r);
    if (rc != 0)
      return rc;
    *woken += (size_t)moved;
    if (moved == 0)
      break;
    budget -= moved;
    if (more < budget)
      budget = more;
  }
  return 0;
}

/* ---- Limits ---- */

int sl__rate_parse(const char *s, int64_t *interval_us, char *err, size_t errlen) {
  char *end;
  double n;
  double unit_us;

  errno = 0;
  n = strtod(s, &end);
  if (end == s || errno != 0 || *end != '/' || !(n > 0) || n > 1e9) {
    snprintf(err, errlen, "rate \"%.40s\" must look like 50/s, 3000/m or 10000/h (a positive number per unit)", s);
    return SL_EINVAL;
  }
  end++;
  if (strcmp(end, "s") == 0)
    unit_us = 1e6;
  else if (strcmp(end, "m") == 0)
    unit_us = 60e6;
  else if (strcmp(end, "h") == 0)
    unit_us = 3600e6;
  else {
    snprintf(err, errlen, "rate \"%.40s\": unknown unit \"%.8s\" (expected s, m or h)", s, end);
    return SL_EINVAL;
  }
  if (unit_us / n < 1) {
    snprintf(err, errlen, "rate \"%.40s\" is over one per microsecond", s);
    return SL_EINVAL;
  }
  *interval_us = (int64_t)(unit_us / n + 0.5);
  return 0;
}

/* The keys and arguments every limit function starts with:
 * LIMITS HIGH NORMAL LOW (the queue's limits hash and its three streams),
 * then PREFIX NAME; `key` receives the limits hash's name. */
static void limit_args(const char **av, char *key, size_t keylen, const sl_keys *k, const char *name) {
  snprintf(key, keylen, "%slimits", k->prefix);
  av[0] = key;
  av[1] = k->stream[0];
  av[2] = k->stream[1];
  av[3] = k->stream[2];
  av[4] = k->prefix;
  av[5] = name;
}

/*
 * FCALL sluice_v1_limit_set 4 LIMITS HIGH NORMAL LOW PREFIX NAME VALUE, then
 * sluice_v1_limit_wake for the waiting items the first call left that may
 * run (wake_rest).
 */
SL_EXTERN int sl_limit_set(sl_client_t *c, const char *queue, const char *name, const char *rate, int burst,
                           int concurrency) {
  char value[128];
  char key[SL_NAME_MAX + 32];
  const char *av[7];
  int64_t t;
  sl_keys k;
  redisReply *r;
  long long moved = 0;
  long long more = 0;
  size_t woken = 0;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  if (name == NULL || !sl__name_valid(name, strlen(name)))
    return sl__client_fail(c, SL_EINVAL, "invalid limit name \"%.80s\" (1-%d characters of [A-Za-z0-9_.:-])",
                           name ? name : "", SL_NAME_MAX);
  if (burst < 1 || burst > 1000000)
    return sl__client_fail(c, SL_EINVAL, "burst %d is out of range (1-1000000)", burst);
  if (concurrency < 0 || concurrency > 1000000)
    return sl__client_fail(c, SL_EINVAL, "concurrency %d is out of range (1-1000000)", concurrency);
  if (rate == NULL && concurrency == 0)
    return sl__client_fail(c, SL_EINVAL, "a limit needs a rate (like 50/s), a concurrency, or both");
  t = 0;
  if (rate != NULL) {
    rc = sl__rate_parse(rate, &t, c->errstr, sizeof(c->errstr));
    if (rc != 0)
      return rc;
  }
  snprintf(value, sizeof(value), "%lld %d %s %d", (long long)t, burst, rate ? rate : "-", concurrency);
  limit_args(av, key, sizeof(key), &k, name);
  av[6] = value;
  r = sl__client_fcall(c, &rc, "limit_set", 4, 7, av, NULL);
  if (r == NULL)
    return rc;
  rc = wake_reply(c, r, "limit_set", &moved, &more);
  freeReplyObject(r);
  if (rc != 0)
    return rc;
  woken = (size_t)moved;
  return wake_rest(c, av, more, &woken);
}

SL_EXTERN int sl_limit_default(sl_client_t *c, const char *queue, const char *name) {
  char key[SL_NAME_MAX + 32];
  sl_keys k;
  redisReply *r;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  if (name != NULL && !sl__name_valid(name, strlen(name)))
    return sl__client_fail(c, SL_EINVAL, "invalid limit name \"%.80s\"", name);
  snprintf(key, sizeof(key), "%sconfig", k.prefix);
  if (name != NULL) {
    const char *av[4] = {"HSET", key, "rate_key", name};

    r = sl__client_cmd(c, &rc, 4, av, NULL);
  } else {
    const char *av[3] = {"HDEL", key, "rate_key"};

    r = sl__client_cmd(c, &rc, 3, av, NULL);
  }
  if (r == NULL)
    return rc;
  freeReplyObject(r);
  return 0;
}

/*
 * FCALL sluice_v1_limit_rm 4 LIMITS HIGH NORMAL LOW PREFIX NAME, then
 * sluice_v1_limit_wake until every item that waited for the limit is back
 * in its stream (wake_rest).
 */
SL_EXTERN int sl_limit_rm(sl_client_t *c, const char *queue, const char *name) {
  char key[SL_NAME_MAX + 32];
  const char *av[6];
  sl_keys k;
  redisReply *r;
  size_t woken = 0;
  int existed;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  if (name == NULL)
    return sl__client_fail(c, SL_EINVAL, "no limit name given");
  limit_args(av, key, sizeof(key), &k, name);
  r = sl__client_fcall(c, &rc, "limit_rm", 4, 6, av, NULL);
  if (r == NULL)
    return rc;
  existed = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
  freeReplyObject(r);
  /* Items left waiting by an earlier removal are woken even if the limit is gone. */
  rc = wake_rest(c, av, LLONG_MAX, &woken);
  if (rc != 0)
    return rc;
  if (!existed)
    return sl__client_fail(c, SL_ENOTFOUND, "no limit \"%s\" in queue %s", name, k.queue);
  return 0;
}

SL_EXTERN int sl_limit_list(sl_client_t *c, const char *queue, sl_line_cb cb, void *ud) {
  char key[SL_NAME_MAX + 32];
  sl_keys k;
  redisReply *r;
  redisReply *t;
  sl_buf out;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  snprintf(key, sizeof(key), "%slimits", k.prefix);
  {
    const char *av[2] = {"HGETALL", key};

    r = sl__client_cmd(c, &rc, 2, av, NULL);
  }
  if (r == NULL)
    return rc;
  {
    const char *av[1] = {"TIME"};

    t = sl__client_cmd(c, &rc, 1, av, NULL);
  }
  if (t == NULL) {
    freeReplyObject(r);
    return rc;
  }
  sl__buf_init(&out, 4096);
  for (size_t i = 0; i + 1 < r->elements && rc == 0; i += 2) {
    const char *name = r->element[i]->str;
    long long interval = 0;
    int burst = 0;
    int conc = 0;
    long long held = 0;
    long long waiting = 0;
    char rate[64] = "";
    char state[2 * SL_NAME_MAX + 32];
    long long tat = 0;
    long long now = strtoll(t->element[0]->str, NULL, 10) * 1000000 + strtoll(t->element[1]->str, NULL, 10);
    redisReply *s;

    if (sscanf(r->element[i + 1]->str, "%lld %d %63s %d", &interval, &burst, rate, &conc) < 3)
      continue;
    if (conc > 0) {
      char ckey[2 * SL_NAME_MAX + 32];
      const char *av[4] = {"ZCOUNT", ckey, "(0", "+inf"};

      snprintf(ckey, sizeof(ckey), "%scl:%s", k.prefix, name);
      s = sl__client_cmd(c, &rc, 4, av, NULL);
      if (s == NULL)
        break;
      held = s->integer;
      freeReplyObject(s);
    }
    {
      char wkey[2 * SL_NAME_MAX + 32];
      const char *av[2] = {"XLEN", wkey};

      snprintf(wkey, sizeof(wkey), "%scw:%s", k.prefix, name);
      s = sl__client_cmd(c, &rc, 2, av, NULL);
      if (s == NULL)
        break;
      waiting = s->type == REDIS_REPLY_INTEGER ? s->integer : 0;
      freeReplyObject(s);
    }
    snprintf(state, sizeof(state), "%srl:%s", k.prefix, name);
    {
      const char *av[2] = {"GET", state};

      s = sl__client_cmd(c, &rc, 2, av, NULL);
    }
    if (s == NULL)
      break;
    if (s->type == REDIS_REPLY_STRING)
      tat = strtoll(s->str, NULL, 10);
    freeReplyObject(s);
    sl__buf_reset(&out);
    rc = sl__buf_puts(&out, "{\"name\":");
    if (rc == 0)
      rc = sl__json_put_str(&out, name, strlen(name));
    if (rc == 0)
      rc = sl__buf_printf(&out,
                          ",\"rate\":\"%s\",\"burst\":%d,\"interval_us\":%lld,\"per_s\":%.3f,"
                          "\"reserved_ahead_ms\":%lld,\"concurrency\":%d,\"running\":%lld,\"waiting\":%lld}",
                          rate, burst, interval, interval > 0 ? 1e6 / (double)interval : 0.0,
                          tat > now ? (tat - now) / 1000 : 0, conc, held, waiting);
    if (rc == 0)
      rc = cb(out.p, out.len, ud);
  }
  sl__buf_free(&out);
  freeReplyObject(t);
  freeReplyObject(r);
  return rc;
}
