/*
 * Following a batch live. A second connection SUBSCRIBEs to the batch's
 * channel first; only then is the hash read, so no event between the read
 * and the subscription is lost. Events carry absolute counters, so a
 * subscriber never has to add anything up. If nothing arrives for
 * WATCH_IDLE_MS the hash is read once more, which covers an event lost with a
 * broken connection without polling while events flow.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "batch.h"
#include "buf.h"
#include "conn.h"

#define WATCH_IDLE_MS 5000 /* re-read the hash after this long without events */

/* Calls cb with the batch's state from its hash; sets *ended. */
static int emit_state(sl_client_t *c, const sl_keys *k, const char *batch, sl_line_cb cb, void *ud,
                      int *ended) {
  char key[256];
  const char *av[2] = {"HGETALL", key};
  redisReply *h;
  sl_buf out;
  int rc;

  snprintf(key, sizeof(key), "%sb:%s", k->prefix, batch);
  h = sl__client_cmd(c, &rc, 2, av, NULL);
  if (h == NULL)
    return rc;
  if (h->elements == 0) {
    freeReplyObject(h);
    return sl__client_fail(c, SL_ENOTFOUND, "no batch %s in queue %s", batch, k->queue);
  }
  sl__buf_init(&out, 4096);
  rc = sl__batch_json(&out, k, batch, h);
  *ended = sl__batch_ended(h);
  freeReplyObject(h);
  if (rc == 0)
    rc = cb(out.p, out.len, ud);
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

SL_EXTERN int sl_batch_watch(sl_client_t *c, const char *queue, const char *batch, sl_line_cb cb,
                             void *ud) {
  redisContext *sub = NULL;
  redisReply *r = NULL;
  char chan[256];
  sl_keys k;
  int ended = 0;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  rc = sl__redis_connect(&c->url, SL_CONNECT_TIMEOUT_MS, &sub, c->errstr, sizeof(c->errstr));
  if (rc != 0)
    return rc;
  snprintf(chan, sizeof(chan), "%sevents:%s", k.prefix, batch);
  r = redisCommand(sub, "SUBSCRIBE %s", chan);
  if (r == NULL) {
    rc = sl__client_fail(c, SL_ECONN, "lost the Redis connection: %s", sub->errstr);
    goto out;
  }
  freeReplyObject(r);
  r = NULL;
  rc = emit_state(c, &k, batch, cb, ud, &ended);
  while (rc == 0 && !ended) {
    struct pollfd pfd = {sub->fd, POLLIN, 0};
    void *reply = NULL;
    int n;

    if (redisGetReplyFromReader(sub, &reply) != REDIS_OK) {
      rc = sl__client_fail(c, SL_EPROTO, "bad reply on the event subscription: %s", sub->errstr);
      break;
    }
    if (reply == NULL) {
      n = poll(&pfd, 1, WATCH_IDLE_MS);
      if (n == 0) {
        rc = emit_state(c, &k, batch, cb, ud, &ended);
        continue;
      }
      if (n < 0) {
        rc = sl__client_fail(c, SL_ECANCELED, "interrupted by a signal");
        break;
      }
      if (redisBufferRead(sub) != REDIS_OK) {
        rc = sl__client_fail(c, SL_ECONN, "lost the Redis connection while watching: %s", sub->errstr);
        break;
      }
      continue;
    }
    r = reply;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(r->element[0]->str, "message") == 0) {
      const redisReply *m = r->element[2];

      if (strstr(m->str, "\"type\":\"progress\"") == NULL) { /* item progress: not a batch event */
        rc = cb(m->str, m->len, ud);
        ended = event_ended(m->str, m->len);
      }
    }
    freeReplyObject(r);
    r = NULL;
  }
out:
  if (r != NULL)
    freeReplyObject(r);
  redisFree(sub);
  return rc;
}
