/* Batch state as JSON, shared by status, list and watch. */
#ifndef SL_BATCH_H
#define SL_BATCH_H

#include <hiredis/hiredis.h>

#include <sluice/sluice.h>

#include "buf.h"
#include "script.h"

/* Appends the status object of a batch built from its state (sl__batch_state;
 * a plain HGETALL reply gives it without its live counts). */
int sl__batch_json(sl_buf *out, const sl_keys *k, const char *batch, const redisReply *h);
/* A field of a hash reply (HGETALL form), or NULL; as a number (0 if absent). */
const char *sl__hfield(const redisReply *h, const char *name);
long long sl__hnum(const redisReply *h, const char *name);
/* 1 when a status object's batch has ended (all items done). */
int sl__batch_ended(const redisReply *h);
/* The batch hash and its live state, from sluice_v1_state: NULL with *rcode
 * set (SL_ENOTFOUND when the batch does not exist). */
redisReply *sl__batch_state(sl_client_t *c, const sl_keys *k, const char *batch, int *rcode);
/* The one batch of a sluice_v1_state reply, taken out of r (freed). */
redisReply *sl__batch_state_take(redisReply *r);

/* Called with each finished item's index and results line; a non-zero
 * return stops the walk and is returned. */
typedef int (*sl__result_fn)(size_t index, const char *line, size_t len, void *ud);
/* The results lines of the batch's items from index `from` on, in index
 * order, by pages of HMGET (unfinished items are skipped). SL_ENOTFOUND
 * when the batch does not exist. */
int sl__results_walk(sl_client_t *c, const sl_keys *k, const char *batch, size_t from, sl__result_fn fn, void *ud);

#endif
