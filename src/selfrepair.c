/*
 * Self-repair: a worker whose queue is empty ends the items Redis lost.
 *
 * After a Redis rollback or failover, a batch may wait for items that
 * exist nowhere any more (see repair.c for how that can happen and what
 * `sluice repair` does about it in a busy queue). Such a batch would stay
 * `running` forever with an empty queue. So every REPAIR_EVERY_MS a worker
 * whose last read found no new items asks sluice_v1_repair (mode 'empty')
 * to look: only while the whole queue is empty (no stream entry, pending or
 * not; no delayed or waiting item) are a batch's unfinished items known to
 * be nowhere, and the function checks that in the same call as it ends
 * them, 1000 indexes per call. A batch with missing items is walked to its
 * end call after call; the items are ended `failed` as lost, counted in the
 * batch's `lost` field, and logged here.
 *
 * Timer: `repair`.
 */
#include <stdio.h>
#include <string.h>

#include "worker.h"

#include "log.h"

#define REPAIR_EVERY_MS 10000 /* between looks while the worker is idle, ms (+-20%) */

static void look(sl_worker_t *w, const char *batch, long long from);

static void on_repair(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;
  long long total = (long long)(intptr_t)priv;

  w->repairing = 0;
  if (!sl__aredis_reply(w, r, 0, "looking for lost items"))
    return;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING)
    return; /* the queue is not empty, or no batch waits for lost items */
  total += r->element[2]->integer;
  if (r->element[1]->integer >= 0 && !w->closed && !w->stopping) {
    look(w, r->element[0]->str, r->element[1]->integer);
    w->repair_ended = total;
    return;
  }
  if (total > 0)
    sl__log_warn("batch %s waited with an empty queue for %lld items that exist nowhere (Redis lost them: a "
                 "rollback or failover?); they are ended as lost (failed, or cancelled in a cancelled batch), the "
                 "batch can end", r->element[0]->str, total);
  w->repair_ended = 0;
}

static void look(sl_worker_t *w, const char *batch, long long from) {
  char bkey[sizeof(w->keys.prefix) + SL_NAME_MAX + 8];
  char start[24];

  if (batch[0] != '\0')
    snprintf(bkey, sizeof(bkey), "%sb:%s", w->keys.prefix, batch);
  else
    snprintf(bkey, sizeof(bkey), "%sbatches", w->keys.prefix);
  snprintf(start, sizeof(start), "%lld", from);
  if (redisAsyncCommand(w->cmd, on_repair, (void *)(intptr_t)w->repair_ended,
                        "FCALL sluice_v1_repair 4 %s %s %s %s %s %s %s %s empty %s %s", w->keys.stream[0],
                        w->keys.stream[1], w->keys.stream[2], bkey, w->keys.prefix, w->keys.queue, SL_GROUP,
                        batch[0] ? batch : "-", batch, start) == REDIS_OK)
    w->repairing = 1;
}

static void on_repair_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;

  uv_timer_start(&w->repair, on_repair_timer, (uint64_t)sl__jitter(REPAIR_EVERY_MS), 0);
  if (w->cmd_up && w->idle && !w->repairing && !w->stopping && w->running == 0) {
    w->repair_ended = 0;
    look(w, "", 0);
  }
}

void sl__selfrepair_start(sl_worker_t *w) {
  uv_timer_start(&w->repair, on_repair_timer, (uint64_t)sl__jitter(REPAIR_EVERY_MS), 0);
}
