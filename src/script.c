/* Function library loading and checking, and key names; see script.h. */
#include "script.h"

#include <stdio.h>
#include <string.h>

#include "conn.h"
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

const char *sl__library_version(void) {
  return sl__lua_library_version;
}

/* An error reply to a library call, explained: a missing permission, a
 * Redis without functions (only "unknown command" says that), a full Redis
 * (sl__redis_errmsg: an OOM answer is never about versions); anything else
 * as Redis wrote it. Returns SL_EREDIS. */
static int redis_refused(redisContext *rc, const char *what, const redisReply *r, char *err, size_t errlen) {
  char msg[400];

  if (strncmp(r->str, "NOPERM", 6) == 0) {
    snprintf(err, errlen, "Redis refused %s: %s (the Redis user lacks a permission; see the README's ACL users)", what,
             r->str);
  } else if (strncmp(r->str, "ERR unknown command", 19) == 0) {
    snprintf(err, errlen, "Redis refused %s: %s (sluice needs Redis 7.0 or newer)", what, r->str);
  } else {
    sl__redis_errmsg(rc, r->str, msg, sizeof(msg));
    snprintf(err, errlen, "Redis refused %s: %s", what, msg);
  }
  return SL_EREDIS;
}

int sl__script_ensure(redisContext *rc, char *err, size_t errlen) {
  redisReply *r = redisCommand(rc, "FCALL_RO sluice_v1_version 0");
  int code = 0;

  if (r == NULL) {
    snprintf(err, errlen, "Redis connection failed: %s", rc->errstr);
    return SL_ECONN;
  }
  if (r->type == REDIS_REPLY_ERROR && sl__script_missing(r->str)) {
    snprintf(err, errlen, "the sluice function library is not loaded in this Redis (this sluice needs v%s): run "
                          "`sluice library load`", sl__lua_library_version);
    code = SL_EPROTO;
  } else if (r->type == REDIS_REPLY_ERROR) {
    code = redis_refused(rc, "FCALL_RO sluice_v1_version", r, err, errlen);
  } else if (r->type != REDIS_REPLY_STRING || strcmp(r->str, sl__lua_library_version) != 0) {
    snprintf(err, errlen, "library v%.60s is loaded, this sluice needs v%s: run `sluice library load`",
             r->type == REDIS_REPLY_STRING ? r->str : "?", sl__lua_library_version);
    code = SL_EPROTO;
  }
  freeReplyObject(r);
  return code;
}

int sl__script_load(redisContext *rc, char *err, size_t errlen) {
  redisReply *r = redisCommand(rc, "FUNCTION LOAD REPLACE %b", sl__lua_library, sl__lua_library_len);
  int code = 0;

  if (r == NULL) {
    snprintf(err, errlen, "Redis connection failed: %s", rc->errstr);
    return SL_ECONN;
  }
  if (r->type == REDIS_REPLY_ERROR)
    code = redis_refused(rc, "FUNCTION LOAD (loading the sluice function library)", r, err, errlen);
  freeReplyObject(r);
  return code;
}
