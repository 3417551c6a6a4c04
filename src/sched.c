/*
 * The scheduler: the backlog and the pump of one queue worker.
 *
 * pump() runs on the loop turn after anything changed (sl__worker_kick):
 * it has finished attempts written (outcome.c) first, then starts backlog
 * items while the process has free slots (crew.c: the slots and the
 * run-alone rule are shared by the queues of the process, by weight), and
 * when this queue has room and no read is in flight,
 * reads more (intake.c): a fetch, or, when the last fetch came back short,
 * a blocking read, so an idle worker sends one command per block_ms
 * instead of polling. A stopping worker gives back what it took and did not
 * start (lease.c) and closes once nothing is running, held or in flight.
 *
 * One turn starts items for a bounded time (crew.c) and then kicks again,
 * so a burst of slow starts never holds back a heartbeat.
 *
 * The backlog holds items taken from Redis and not started, in order. An
 * item on its last allowed delivery (max-deliveries) runs alone: it waits
 * until nothing else runs, and nothing starts beside it, so items that only
 * shared a worker with a poison item are never blamed for it.
 *
 * After a handler gave an item back for want of descriptors (lease.c),
 * nothing starts and nothing is fetched while the `hold` timer runs; items
 * given back are released on the next pump.
 *
 * Timer: `kick`, a zero timer that coalesces many changes into one pump.
 */

#include "worker.h"

#include "crew.h"
#include "id.h"
#include "job.h"
#include "outcome.h"

static void pump(sl_worker_t *w);

static void on_kick(uv_timer_t *t) {
  pump(t->data);
}

void sl__worker_kick(sl_worker_t *w) {
  if (!w->closed && w->timers_up && !uv_is_active((uv_handle_t *)&w->kick))
    uv_timer_start(&w->kick, on_kick, 0, 0);
}

void sl__sched_push(sl_worker_t *w, sl_job_t *j) {
  j->next = NULL;
  if (w->backlog_tail)
    w->backlog_tail->next = j;
  else
    w->backlog = j;
  w->backlog_tail = j;
  w->nbacklog++;
}

sl_job_t *sl__sched_pop(sl_worker_t *w) {
  sl_job_t *j = w->backlog;

  if (j == NULL)
    return NULL;
  w->backlog = j->next;
  if (w->backlog == NULL)
    w->backlog_tail = NULL;
  j->next = NULL;
  w->nbacklog--;
  return j;
}

static void pump(sl_worker_t *w) {
  int held = uv_is_active((uv_handle_t *)&w->hold); /* a give back holds new starts (lease.c) */
  sl_job_t *j;

  if (w->closed)
    return;
  if (w->rc != 0) {
    /* A fatal error: drop what cannot be recorded (it is taken over). */
    while ((j = sl__sched_pop(w)) != NULL)
      sl__job_free(j);
    while ((j = w->given) != NULL) {
      w->given = j->next;
      w->ngiven--;
      sl__job_free(j);
    }
    sl__outcome_drop_all(w);
    if (w->running == 0 && w->flushing == 0)
      sl__worker_close_all(w);
    return;
  }
  /* Finished attempts are written before new ones start: starting one
   * (a spawn) takes loop time, and an outcome that waits is an item that
   * looks abandoned. */
  if (!w->paused && w->ndone > 0 && w->flushing < 2 && w->cmd_up)
    sl__outcome_flush(w);
  if (w->stopping) {
    /* Items still waiting for their rate limit have not started: give
     * them back with the backlog. */
    for (sl_job_t *a = w->active; a != NULL;) {
      sl_job_t *next = a->next;

      if (!a->ended && !a->invoked) {
        sl_job_t *copy = sl__job_new(w, a->prio, a->eid, a->batch, a->idx, "1", "{}", 2, NULL, 0);

        if (copy != NULL)
          sl__sched_push(w, copy);
        sl__job_abort(a, "the worker stopped", 0);
      }
      a = next;
    }
  } else if (sl__crew_start(w->crew)) {
    sl__worker_kick(w); /* the rest on the next turn, after due timers and replies */
  }
  held = uv_is_active((uv_handle_t *)&w->hold); /* a start may have given one back */
  if ((w->ngiven > 0 || (w->stopping && w->nbacklog > 0)) && w->cmd_up && !w->releasing)
    sl__lease_release(w);
  if (w->paused)
    return;
  if (w->ndone > 0 && w->flushing < 2 && w->cmd_up)
    sl__outcome_flush(w); /* those that finished at once on starting */
  if (!w->stopping && !held && w->cmd_up && w->blk_up && !w->fetching && !w->blocking &&
      !sl__crew_alone_pending(w->crew)) {
    int free_slots = sl__crew_room(w);

    if (w->idle && (free_slots > 0 || sl__crew_owed(w)))
      sl__intake_block(w);
    else if (!w->idle && free_slots > 0)
      sl__intake_fetch(w, free_slots);
  }
  /* Past the drain timeout, completions and backlog that cannot be sent
   * (Redis is gone, or memory is: the call could not be built) are given
   * up: their items stay pending and are taken over. */
  if (w->stopping && w->running == 0 && (w->ndone == 0 || (w->drained && (!w->cmd_up || w->flush_oom))) &&
      w->flushing == 0 && !w->fetching && !w->blocking && !w->releasing &&
      ((w->nbacklog == 0 && w->ngiven == 0) || !w->cmd_up || (w->drained && w->release_oom)))
    sl__worker_close_all(w);
}
