/*
 * The fleet, as a client sees it: `sluice workers` (sl_workers_list).
 *
 * Workers register with their heartbeat (lua/beat.lua): a sorted set
 * sluice:{Q}:workers (member = worker id, score = last beat, ms) and a hash
 * sluice:{Q}:w:ID (info JSON, beat) that expires three beats and a second
 * after the last beat. The sorted set keeps members for a day, so a member
 * without its hash is a worker that stopped and is not listed. Ages are on
 * the Redis server's clock, the one heartbeats are stamped with.
 *
 * A worker's info names the item types it serves, so sl_fleet_unserved
 * can tell a producer which types of its batch no live worker runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"
#include "conn.h"
#include "item.h"
#include "json.h"
#include "script.h"

#define LINE_MAX_BYTES (4 * SL_ITEM_MAX_LINE) /* one listed worker, bytes */
#define ITEM_MEMBERS 32 /* top-level fields read from a worker's info JSON */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The Redis server's clock in ms (heartbeats are stamped with it). */
static int server_ms(sl_client_t *c, long long *out) {
  const char *av[1] = {"TIME"};
  redisReply *r;
  int rc;

  r = sl__client_cmd(c, &rc, 1, av, NULL);
  if (r == NULL)
    return rc;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
      r->element[1]->type != REDIS_REPLY_STRING) {
    freeReplyObject(r);
    return sl__client_fail(c, SL_EPROTO, "TIME answered something other than {seconds, microseconds}");
  }
  *out = strtoll(r->element[0]->str, NULL, 10) * 1000 + strtoll(r->element[1]->str, NULL, 10) / 1000;
  freeReplyObject(r);
  return 0;
}

/* Writes a worker's object: its info JSON with last_beat_ms_ago added. An
 * info that is not a JSON object with members (not written by a sluice
 * worker) gives {"id":ID,"last_beat_ms_ago":N}. */
static int worker_json(sl_buf *out, const char *id, const redisReply *info, long long ago) {
  sl_json_member m[ITEM_MEMBERS];
  size_t nm = 0;
  size_t pos;
  char why[128];
  size_t n = info->len;
  int rc;

  while (n > 0 && strchr(" \t\r\n", info->str[n - 1]) != NULL)
    n--;
  if (sl__json_validate(info->str, info->len, SL_ITEM_MAX_DEPTH, &pos, why, sizeof(why)) == 0 &&
      sl__json_members(info->str, info->len, m, ITEM_MEMBERS, &nm) == 0 && nm > 0 && info->str[n - 1] == '}') {
    rc = sl__buf_append(out, info->str, n - 1); /* without its closing brace */
    if (rc == 0)
      rc = sl__buf_printf(out, ",\"last_beat_ms_ago\":%lld}", ago);
    return rc;
  }
  rc = sl__buf_puts(out, "{\"id\":");
  if (rc == 0)
    rc = sl__json_put_str(out, id, strlen(id));
  if (rc == 0)
    rc = sl__buf_printf(out, ",\"last_beat_ms_ago\":%lld}", ago);
  return rc;
}

/* ZRANGE WORKERS 0 -1, then HMGET w:ID info beat per member,
 * skipping members whose hash expired. */
SL_EXTERN int sl_workers_list(sl_client_t *c, const char *queue, sl_line_cb cb, void *ud) {
  sl_keys k;
  char zkey[sizeof(k.prefix) + 8];
  char wkey[512];
  const char *zv[4] = {"ZRANGE", zkey, "0", "-1"};
  const char *hv[4] = {"HMGET", wkey, "info", "beat"};
  const char **names = NULL;
  redisReply *z = NULL;
  size_t nw = 0;
  long long now = 0;
  sl_buf out;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue ? queue : "(null)");
  snprintf(zkey, sizeof(zkey), "%sworkers", k.prefix);
  sl__buf_init(&out, LINE_MAX_BYTES);
  rc = server_ms(c, &now);
  if (rc != 0)
    goto out;
  z = sl__client_cmd(c, &rc, 4, zv, NULL);
  if (z == NULL)
    goto out;
  if (z->type != REDIS_REPLY_ARRAY) {
    rc = sl__client_fail(c, SL_EPROTO, "ZRANGE of %s did not answer an array", zkey);
    goto out;
  }
  names = sl_malloc((z->elements + 1) * sizeof(*names));
  if (names == NULL) {
    rc = sl__client_fail(c, SL_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < z->elements; i++) {
    if (z->element[i]->type == REDIS_REPLY_STRING)
      names[nw++] = z->element[i]->str;
  }
  qsort(names, nw, sizeof(*names), cmp_str);
  for (size_t i = 0; i < nw && rc == 0; i++) {
    redisReply *h;
    long long beat;

    if ((size_t)snprintf(wkey, sizeof(wkey), "%sw:%s", k.prefix, names[i]) >= sizeof(wkey))
      continue; /* no worker id is this long: not a sluice worker */
    h = sl__client_cmd(c, &rc, 4, hv, NULL);
    if (h == NULL)
      break;
    if (h->type != REDIS_REPLY_ARRAY || h->elements != 2 || h->element[0]->type != REDIS_REPLY_STRING) {
      freeReplyObject(h); /* expired: the worker stopped beating */
      continue;
    }
    beat = h->element[1]->type == REDIS_REPLY_STRING ? strtoll(h->element[1]->str, NULL, 10) : now;
    sl__buf_reset(&out);
    rc = worker_json(&out, names[i], h->element[0], now > beat ? now - beat : 0);
    freeReplyObject(h);
    if (rc != 0) {
      rc = sl__client_fail(c, rc, "worker %s: %s", names[i], sl_strerror(rc));
      break;
    }
    rc = cb(out.p, out.len, ud);
  }
out:
  sl_free(names);
  if (z != NULL)
    freeReplyObject(z);
  sl__buf_free(&out);
  return rc;
}

/* ---- Which types the live fleet serves ---- */

typedef struct served {
  const char *const *types; /* asked about */
  size_t n;
  unsigned char *hit;       /* per type: a live worker serves it */
  int live;                 /* live workers seen */
} served;

static int note_worker(const char *json, size_t len, void *ud) {
  served *s = ud;
  cJSON *w = cJSON_ParseWithLength(json, len);
  const cJSON *types = cJSON_GetObjectItemCaseSensitive(w, "types");
  const cJSON *t;

  s->live++;
  if (!cJSON_IsArray(types)) {
    memset(s->hit, 1, s->n); /* a worker too old to say: it may serve any */
  } else {
    cJSON_ArrayForEach(t, types) {
      for (size_t i = 0; cJSON_IsString(t) && i < s->n; i++) {
        if (strcmp(t->valuestring, s->types[i]) == 0)
          s->hit[i] = 1;
      }
    }
  }
  cJSON_Delete(w);
  return 0;
}

SL_EXTERN int sl_fleet_unserved(sl_client_t *c, const char *queue, const char *const *types, size_t n, char *missing,
                                size_t len, int *live) {
  served s = {types, n, NULL, 0};
  size_t at = 0;
  int rc;

  if (len > 0)
    missing[0] = '\0';
  s.hit = sl_calloc(n > 0 ? n : 1, 1);
  if (s.hit == NULL)
    return sl__client_fail(c, SL_ENOMEM, "out of memory");
  rc = sl_workers_list(c, queue, note_worker, &s);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    int w;

    if (s.hit[i] || at >= len)
      continue;
    w = snprintf(missing + at, len - at, "%s%s", at ? ", " : "", types[i]);
    at = w > 0 && (size_t)w < len - at ? at + (size_t)w : len;
  }
  if (live != NULL)
    *live = s.live;
  sl_free(s.hit);
  return rc;
}
