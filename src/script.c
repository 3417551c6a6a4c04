/* Function library loading and key names; see script.h. */
#include "script.h"

#include <stdio.h>
#include <string.h>

#include "item.h"

int sl__keys_init(sl_keys *k, const char *queue) {
  static const char *const suffix[3] = {"high", "normal", "low"};

  if (queue == NULL)
    queue = "default";
  if (!sl__name_valid(queue, strlen(queue)))
    return SL_EINVAL;
  snprintf(k->queue, sizeof(k->queue), "%s", queue);
  snprintf(k->prefix, sizeof(k->prefix), "sluice:{%s}:", queue);
  for (int i = 0; i < 3; i++)
    snprintf(k->stream[i], sizeof(k->stream[i]), "%ss:%s", k->prefix, suffix[i]);
  snprintf(k->batches, sizeof(k->batches), "%sbatches", k->prefix);
  return 0;
}

int sl__script_missing(const char *errstr) {
  return strstr(errstr, "Function not found") != NULL || strstr(errstr, "NOSCRIPT") != NULL;
}

int sl__script_ensure(redisContext *rc, char *err, size_t errlen) {
  redisReply *r = redisCommand(rc, "FCALL sluice_v1_version 0");
  int ok;

  if (r == NULL) {
    snprintf(err, errlen, "Redis connection failed: %s", rc->errstr);
    return SL_ECONN;
  }
  ok = r->type == REDIS_REPLY_STRING && strcmp(r->str, sl__lua_library_sha) == 0;
  if (r->type == REDIS_REPLY_ERROR && !sl__script_missing(r->str)) {
    snprintf(err, errlen, "Redis refused FCALL: %s (sluice needs Redis 7.0 or newer)", r->str);
    freeReplyObject(r);
    return SL_EREDIS;
  }
  freeReplyObject(r);
  if (ok)
    return 0;
  r = redisCommand(rc, "FUNCTION LOAD REPLACE %b", sl__lua_library, sl__lua_library_len);
  if (r == NULL) {
    snprintf(err, errlen, "Redis connection failed: %s", rc->errstr);
    return SL_ECONN;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    snprintf(err, errlen, "cannot load the sluice function library: %s", r->str);
    freeReplyObject(r);
    return SL_EREDIS;
  }
  freeReplyObject(r);
  return 0;
}
