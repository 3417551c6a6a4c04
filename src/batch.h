/* Batch state as JSON, shared by status, list and watch. */
#ifndef SL_BATCH_H
#define SL_BATCH_H

#include <hiredis/hiredis.h>

#include "buf.h"
#include "script.h"

/* Appends the status object of a batch built from its HGETALL reply. */
int sl__batch_json(sl_buf *out, const sl_keys *k, const char *batch, const redisReply *h);
/* 1 when a status object's batch has ended (all items done). */
int sl__batch_ended(const redisReply *h);

#endif
