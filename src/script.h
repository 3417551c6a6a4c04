/*
 * The sluice function library (the files in lua/, embedded at build time) and the key
 * names of a queue.
 *
 * Every key of queue Q starts with "sluice:{Q}:" (docs/PROTOCOL.md). The
 * library is loaded with FUNCTION LOAD REPLACE when sluice_v1_version does not
 * return this build's SHA1 of the library text, so a fleet upgrades its
 * functions with its first new process.
 */
#ifndef SL_SCRIPT_H
#define SL_SCRIPT_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include <sluice/sluice.h>

#define SL_GROUP "workers" /* the consumer group of every queue */

extern const char sl__lua_library[];
extern const size_t sl__lua_library_len;
extern const char sl__lua_library_sha[];

typedef struct sl_keys {
  char queue[SL_NAME_MAX + 1];      /* the queue name */
  char prefix[SL_NAME_MAX + 16];    /* "sluice:{Q}:" */
  char stream[3][SL_NAME_MAX + 32]; /* "sluice:{Q}:s:high" ... by SL_PRIO_* */
  char batches[SL_NAME_MAX + 32];   /* "sluice:{Q}:batches" */
} sl_keys;

/* Fills k for `queue` (NULL: "default"). SL_EINVAL for an invalid name. */
int sl__keys_init(sl_keys *k, const char *queue);

/* Loads the library on a synchronous connection if it is missing or stale. */
int sl__script_ensure(redisContext *rc, char *err, size_t errlen);

/* 1 when a Redis error reply says the library is not loaded. */
int sl__script_missing(const char *errstr);

#endif
