/*
 * One item of a batch, for `sluice item` (its story is told by the CLI from
 * these and the batch log): its results line by index (sl_item_result), and
 * the index of an item id among the finished items (sl_item_find).
 *
 * An item's id is not indexed in Redis (the producer's ids are checked at
 * submit, by the C client in its own table), so finding one reads the
 * results hash in pages of 1,000 lines (sl__results_walk, batch.c, which
 * `sluice results` pages with too), one HMGET per round trip: each call
 * to Redis is bounded, and the walk stops at the first match. Items not
 * finished yet have no line; the batch log names them by id and index once
 * something happened to them (a retry, a takeover).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sluice/sluice.h>

#include "alloc.h"
#include "batch.h"
#include "conn.h"
#include "script.h"


SL_EXTERN int sl_item_result(sl_client_t *c, const char *queue, const char *batch, size_t index, char **line_out) {
  sl_keys k;
  char rkey[256];
  char idx[24];
  const char *av[3] = {"HGET", rkey, idx};
  redisReply *r;
  int rc = 0;

  *line_out = NULL;
  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  {
    const char *ev[3] = {"EXISTS", rkey, NULL};
    redisReply *e;

    snprintf(rkey, sizeof(rkey), "%sb:%s", k.prefix, batch);
    e = sl__client_cmd(c, &rc, 2, ev, NULL);
    if (e == NULL)
      return rc;
    rc = e->type == REDIS_REPLY_INTEGER && e->integer == 1 ? 0 : SL_ENOTFOUND;
    freeReplyObject(e);
    if (rc != 0)
      return sl__client_fail(c, rc, "no batch %s in queue %s (wrong --queue, or it expired)", batch, k.queue);
  }
  snprintf(rkey, sizeof(rkey), "%sb:%s:r", k.prefix, batch);
  snprintf(idx, sizeof(idx), "%zu", index);
  r = sl__client_cmd(c, &rc, 3, av, NULL);
  if (r == NULL)
    return rc;
  if (r->type == REDIS_REPLY_STRING) {
    *line_out = sl_strndup(r->str, r->len);
    if (*line_out == NULL)
      rc = sl__client_fail(c, SL_ENOMEM, "out of memory");
  }
  freeReplyObject(r);
  return rc;
}

/* sl_item_find's walk: the id looked for, and where it was found. */
typedef struct find {
  const char *id;
  int plain;    /* the id reads the same inside a JSON string: a text search may skip lines */
  size_t index; /* found here */
} find;

#define FOUND 1 /* a match_id return: stop, found (not an SL_E* code) */

static int match_id(size_t index, const char *line, size_t len, void *ud) {
  find *f = ud;
  cJSON *j;
  const cJSON *v;
  int hit;

  if (f->plain && strstr(line, f->id) == NULL)
    return 0; /* surely not it */
  j = cJSON_ParseWithLength(line, len);
  v = cJSON_GetObjectItemCaseSensitive(j, "id");
  hit = cJSON_IsString(v) && strcmp(v->valuestring, f->id) == 0;
  cJSON_Delete(j);
  if (!hit)
    return 0;
  f->index = index;
  return FOUND;
}

SL_EXTERN int sl_item_find(sl_client_t *c, const char *queue, const char *batch, const char *id, size_t *index) {
  sl_keys k;
  find f = {id, 1, 0};
  int rc;

  for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++)
    f.plain &= *p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\' && *p != '/';
  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  rc = sl__results_walk(c, &k, batch, 0, match_id, &f);
  if (rc == FOUND) {
    *index = f.index;
    return 0;
  }
  if (rc == 0)
    rc = sl__client_fail(c, SL_ENOTFOUND, "batch %s has no finished item with id \"%.80s\" (an item still queued "
                         "has no story yet: see sluice status)", batch, id);
  return rc;
}
