/*
 * Reading a batch's log (sl_batch_log): the stream P..'b:ID:log' that the
 * functions append to at every change of the batch's state and at every
 * item event worth knowing (sl_log in lua/_lib.lua lists them). Entries are
 * read 500 per round trip (XRANGE from after the last one seen), so a log
 * of any length costs Redis a bounded amount per call, and each is handed
 * to the caller as one JSON object:
 *
 *   {"seq":"1764676801123-0","at":1764676801123,"event":"retry","index":17,
 *    "item":"x17","attempt":2,"by":"worker-host-1234-ab12","error":"...",
 *    "next_at":1764676803100}
 *
 * `seq` is the entry's id and `at` its time (ms since the epoch, Redis's
 * clock); the fields of the entry follow, i as "index", id as "item" (the
 * item's id, decoded), att as "attempt", numbers as numbers. With an item
 * id only that item's entries are given. With follow the call waits for
 * new entries (XREAD BLOCK, 2 s at a time) until the batch has ended (an
 * `ended` entry, with nothing of the batch left running) or is gone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"
#include "conn.h"
#include "json.h"
#include "script.h"

#define LOG_PAGE "500"     /* entries per round trip */
#define LOG_BLOCK_MS "2000" /* one wait for new entries while following, ms */

/* Fields whose values are numbers, and the names the JSON gives fields. */
static const char *const NUMERIC[] = {"i", "att", "idle_ms", "next_at", "total", "items", "succeeded",
                                      "failed", "cancelled", "parked", NULL};

static const char *json_name(const char *f) {
  if (strcmp(f, "e") == 0)
    return "event";
  if (strcmp(f, "i") == 0)
    return "index";
  if (strcmp(f, "id") == 0)
    return "item";
  if (strcmp(f, "att") == 0)
    return "attempt";
  return f;
}

static int numeric(const char *f, const char *v) {
  char *end;

  for (int i = 0; NUMERIC[i] != NULL; i++) {
    if (strcmp(NUMERIC[i], f) == 0) {
      (void)strtoll(v, &end, 10);
      return v[0] != '\0' && *end == '\0';
    }
  }
  return 0;
}

/* The item id of an entry's id field (a JSON string token); NULL if none. */
static char *item_of(const char *tok) {
  cJSON *j = tok[0] == '"' ? cJSON_Parse(tok) : NULL;
  char *out = cJSON_IsString(j) ? sl_strdup(j->valuestring) : NULL;

  cJSON_Delete(j);
  return out;
}

/* One entry ({id, [field, value, ...]}) as JSON into out; 1 when it is the
 * batch's `ended` entry. want: only entries of this item id, or NULL. Sets
 * *skip when the entry is not the wanted item's. */
static int entry_json(sl_buf *out, const redisReply *e, const char *want, int *skip, int *rc) {
  const redisReply *kv = e->element[1];
  const char *ev = "";
  int ended = 0;

  *skip = 0;
  if (want != NULL) {
    int hit = 0;

    for (size_t i = 0; i + 1 < kv->elements; i += 2) {
      if (strcmp(kv->element[i]->str, "id") == 0) {
        char *id = item_of(kv->element[i + 1]->str);

        hit = id != NULL && strcmp(id, want) == 0;
        sl_free(id);
      }
    }
    if (!hit) {
      *skip = 1;
      return 0;
    }
  }
  *rc = sl__buf_printf(out, "{\"seq\":\"%s\",\"at\":%lld", e->element[0]->str, strtoll(e->element[0]->str, NULL, 10));
  for (size_t i = 0; *rc == 0 && i + 1 < kv->elements; i += 2) {
    const char *f = kv->element[i]->str;
    const char *v = kv->element[i + 1]->str;

    if (strcmp(f, "e") == 0)
      ev = v;
    *rc = sl__buf_printf(out, ",\"%s\":", json_name(f));
    if (*rc != 0)
      break;
    if (strcmp(f, "id") == 0) {
      char *id = item_of(v);

      *rc = id != NULL ? sl__json_put_str(out, id, strlen(id)) : sl__buf_puts(out, "null");
      sl_free(id);
    } else if (numeric(f, v)) {
      *rc = sl__buf_puts(out, v);
    } else {
      *rc = sl__json_put_str(out, v, strlen(v));
    }
  }
  if (*rc == 0)
    *rc = sl__buf_putc(out, '}');
  ended = strcmp(ev, "ended") == 0;
  return ended;
}

/* 1 when the batch has ended now (status completed or cancelled, all done),
 * -1 when it is gone, 0 otherwise. */
static int batch_over(sl_client_t *c, const char *bkey, int *rc) {
  const char *av[6] = {"HMGET", bkey, "status", "done", "total", "whole"};
  redisReply *r = sl__client_cmd(c, rc, 6, av, NULL);
  int over = 0;

  if (r == NULL)
    return 0;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
    if (r->element[0]->type != REDIS_REPLY_STRING)
      over = -1;
    else if ((strcmp(r->element[0]->str, "completed") == 0 || strcmp(r->element[0]->str, "cancelled") == 0) &&
             r->element[3]->type == REDIS_REPLY_STRING && strcmp(r->element[3]->str, "1") == 0 &&
             r->element[1]->type == REDIS_REPLY_STRING && r->element[2]->type == REDIS_REPLY_STRING &&
             strtoll(r->element[1]->str, NULL, 10) >= strtoll(r->element[2]->str, NULL, 10))
      over = 1;
  }
  freeReplyObject(r);
  return over;
}

SL_EXTERN int sl_batch_log(sl_client_t *c, const char *queue, const char *batch, const char *item, int follow,
                           sl_line_cb cb, void *ud) {
  sl_keys k;
  char bkey[256];
  char lkey[260];
  char from[64] = "-";
  sl_buf out;
  int rc = 0;
  int ended = 0;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  if (batch == NULL || batch[0] == '\0' || strlen(batch) > 64)
    return sl__client_fail(c, SL_EINVAL, "invalid batch id \"%.80s\"", batch ? batch : "(null)");
  snprintf(bkey, sizeof(bkey), "%sb:%s", k.prefix, batch);
  snprintf(lkey, sizeof(lkey), "%s:log", bkey);
  {
    const char *av[2] = {"EXISTS", bkey};
    redisReply *r = sl__client_cmd(c, &rc, 2, av, NULL);
    int there = r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1;

    freeReplyObject(r);
    if (rc != 0)
      return rc;
    if (!there)
      return sl__client_fail(c, SL_ENOTFOUND, "no batch %s in queue %s (wrong --queue, or it expired)", batch,
                             k.queue);
  }
  sl__buf_init(&out, 1024 * 1024);
  for (;;) {
    redisReply *r;
    size_t n = 0;

    /* what is there now, a page at a time */
    {
      const char *av[6] = {"XRANGE", lkey, from, "+", "COUNT", LOG_PAGE};
      r = sl__client_cmd(c, &rc, 6, av, NULL);
    }
    if (r == NULL)
      break;
    if (r->type == REDIS_REPLY_ARRAY)
      n = r->elements;
    for (size_t i = 0; rc == 0 && i < n; i++) {
      const redisReply *e = r->element[i];
      int skip;

      sl__buf_reset(&out);
      ended |= entry_json(&out, e, item, &skip, &rc);
      if (rc == 0 && !skip)
        rc = cb(out.p, out.len, ud);
      snprintf(from, sizeof(from), "(%s", e->element[0]->str);
    }
    freeReplyObject(r);
    if (rc != 0)
      break;
    if (n == (size_t)atoi(LOG_PAGE))
      continue;
    if (!follow)
      break;
    if (ended) {
      int over = batch_over(c, bkey, &rc);

      if (rc != 0 || over != 0)
        break;
      ended = 0; /* it runs again (retry): follow on */
    }
    /* wait for more */
    {
      const char *id = from[0] == '(' ? from + 1 : "0-0";
      const char *av[6] = {"XREAD", "BLOCK", LOG_BLOCK_MS, "STREAMS", lkey, id};

      r = sl__client_cmd(c, &rc, 6, av, NULL);
    }
    if (r == NULL)
      break;
    freeReplyObject(r); /* read again by XRANGE, in pages */
    if (batch_over(c, bkey, &rc) < 0 && rc == 0) {
      rc = sl__client_fail(c, SL_ENOTFOUND, "batch %s is gone (it expired)", batch);
      break;
    }
    if (rc != 0)
      break;
  }
  sl__buf_free(&out);
  return rc;
}
