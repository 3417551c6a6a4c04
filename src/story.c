/*
 * One item of a batch, for `sluice item` (its story is told by the CLI from
 * these and the batch log): its results line by index (sl_item_result), and
 * the index of an item id among the finished items (sl_item_find).
 *
 * An item's id is not indexed in Redis (the producer's ids are checked at
 * submit, by the C client in its own table), so finding one reads the
 * results hash in pages of 1,000 lines, one HMGET per round trip: each call
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
#include "conn.h"
#include "script.h"

#define FIND_PAGE 1000 /* results lines per round trip */

/* The batch's index bound (`indexed`, or `submitted` for older batches);
 * -1 with the client's error when there is no such batch. */
static long long index_bound(sl_client_t *c, const sl_keys *k, const char *batch, int *rc) {
  char bkey[256];
  const char *av[5] = {"HMGET", bkey, "indexed", "submitted", "status"};
  redisReply *r;
  long long n = -1;

  snprintf(bkey, sizeof(bkey), "%sb:%s", k->prefix, batch);
  r = sl__client_cmd(c, rc, 5, av, NULL);
  if (r == NULL)
    return -1;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING)
    n = strtoll(r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str
                : r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str
                                                             : "0",
                NULL, 10);
  freeReplyObject(r);
  if (n < 0)
    *rc = sl__client_fail(c, SL_ENOTFOUND, "no batch %s in queue %s (wrong --queue, or it expired)", batch,
                          k->queue);
  return n;
}

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
  if (index_bound(c, &k, batch, &rc) < 0)
    return rc;
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

SL_EXTERN int sl_item_find(sl_client_t *c, const char *queue, const char *batch, const char *id, size_t *index) {
  sl_keys k;
  char rkey[256];
  char (*nums)[24] = NULL;
  const char **av = NULL;
  long long bound;
  int rc = 0;
  int found = 0;
  int plain = 1; /* the id reads the same inside a JSON string: a text search may skip lines */

  for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++)
    plain &= *p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\' && *p != '/';

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  bound = index_bound(c, &k, batch, &rc);
  if (bound < 0)
    return rc;
  snprintf(rkey, sizeof(rkey), "%sb:%s:r", k.prefix, batch);
  nums = sl_malloc(FIND_PAGE * sizeof(*nums));
  av = sl_malloc((FIND_PAGE + 2) * sizeof(*av));
  if (nums == NULL || av == NULL) {
    rc = sl__client_fail(c, SL_ENOMEM, "out of memory");
    goto out;
  }
  av[0] = "HMGET";
  av[1] = rkey;
  for (long long first = 0; first < bound && rc == 0 && !found; first += FIND_PAGE) {
    long long n = bound - first < FIND_PAGE ? bound - first : FIND_PAGE;
    redisReply *r;

    for (long long i = 0; i < n; i++) {
      snprintf(nums[i], sizeof(nums[i]), "%lld", first + i);
      av[2 + i] = nums[i];
    }
    r = sl__client_cmd(c, &rc, (int)n + 2, av, NULL);
    if (r == NULL)
      break;
    for (size_t i = 0; i < r->elements && !found; i++) {
      const redisReply *e = r->element[i];
      cJSON *line;
      const cJSON *v;

      if (e->type != REDIS_REPLY_STRING || (plain && strstr(e->str, id) == NULL))
        continue; /* unfinished, or surely not it */
      line = cJSON_ParseWithLength(e->str, e->len);
      v = cJSON_GetObjectItemCaseSensitive(line, "id");
      if (cJSON_IsString(v) && strcmp(v->valuestring, id) == 0) {
        *index = (size_t)(first + (long long)i);
        found = 1;
      }
      cJSON_Delete(line);
    }
    freeReplyObject(r);
  }
  if (rc == 0 && !found)
    rc = sl__client_fail(c, SL_ENOTFOUND, "batch %s has no finished item with id \"%.80s\" (an item still queued "
                         "has no story yet: see sluice status)", batch, id);
out:
  sl_free(nums);
  sl_free(av);
  return rc;
}
