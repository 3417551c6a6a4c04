/*
 * The sluice function library (the files in lua/, embedded at build time) and the key
 * names of a queue.
 *
 * Every key of queue Q starts with "sluice:{Q}:" (docs/PROTOCOL.md). The
 * library is code that every worker runs, so only an operator loads it
 * (`sluice library load`, or `sluice worker --load-library`, with FUNCTION
 * LOAD REPLACE); every other client only checks that sluice_v1_version
 * returns this build's version ("0.1.0+SHA12") and otherwise says which
 * library is loaded and which one it needs. Two sluice builds in one fleet
 * then refuse to run against each other's library instead of replacing it
 * back and forth.
 */
#ifndef SL_SCRIPT_H
#define SL_SCRIPT_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include <sluice/sluice.h>

#define SL_GROUP "workers" /* the consumer group of every queue */

extern const char sl__lua_library[];
extern const size_t sl__lua_library_len;
extern const char sl__lua_library_version[];

typedef struct sl_keys {
  char queue[SL_NAME_MAX + 1];      /* the queue name */
  char prefix[SL_NAME_MAX + 16];    /* "sluice:{Q}:" */
  char stream[3][SL_NAME_MAX + 32]; /* "sluice:{Q}:s:high" ... by SL_PRIO_* */
  char batches[SL_NAME_MAX + 32];   /* "sluice:{Q}:batches" */
} sl_keys;

/* Fills k for `queue` (NULL: "default"). SL_EINVAL for an invalid name. */
int sl__keys_init(sl_keys *k, const char *queue);

/* Checks that this build's library is the one loaded: 0, SL_EPROTO with
 * "library vN is loaded, this sluice needs vM: run `sluice library load`"
 * (or "not loaded"), SL_EREDIS or SL_ECONN. Never loads anything. */
int sl__script_ensure(redisContext *rc, char *err, size_t errlen);
/* Loads (or replaces) the library: FUNCTION LOAD REPLACE. */
int sl__script_load(redisContext *rc, char *err, size_t errlen);
/* This build's library version, "0.1.0+SHA12". */
const char *sl__library_version(void);

/* 1 when a Redis error reply says the library is not loaded. */
int sl__script_missing(const char *errstr);

#endif
