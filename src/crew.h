/*
 * The crew: the queues one worker process serves, on one loop.
 *
 * `sluice worker --queue a,b,c` runs one queue worker (sl_worker_t) per
 * queue: each keeps its own connections, claims, heartbeats, takeover,
 * retries and webhooks, exactly as a worker of one queue does. What they
 * share is the process: the loop, the slots (--concurrency counts items
 * running in the whole process), the handlers, the HTTP client, the exec
 * children, signals and the stall watch. The first queue's worker is the
 * lead, the handle the embedding program holds; the others are members it
 * created and frees.
 *
 * Slots are shared by weight (--queue-weights, like the priorities'
 * --weights): while several queues have work, queue i holds at most
 * ceil(concurrency * w_i / sum of the weights of the queues with work)
 * items (running, waiting to start, or being read); a queue with nothing
 * to do lends its share to the others until it has work again. Items
 * waiting to start take free slots by smooth weighted round robin over the
 * queues that have some. The run-alone rule (an item on its last delivery
 * runs with nothing beside it) holds for the whole process, since a crash
 * takes down every queue's items.
 *
 * A worker of one queue is a crew of one: the same code, no sharing.
 */
#ifndef SL_CREW_H
#define SL_CREW_H

#include "worker.h"

#define SL_CREW_MAX 64      /* queues one worker process serves */
#define SL_CREW_WEIGHT_MAX 1000

typedef struct sl_crew {
  sl_worker_t *m[SL_CREW_MAX]; /* the queue workers, m[0] the lead */
  int weight[SL_CREW_MAX];     /* their weights, 1-SL_CREW_WEIGHT_MAX */
  int cur[SL_CREW_MAX];        /* smooth weighted round robin: current weights */
  int n;                       /* members */
  int concurrency;             /* slots of the process */
  int open;                    /* members not yet closed */
  sl_job_t *alone_job;         /* the run-alone item running now, or NULL */
  int rc;                      /* the first fatal error of any queue: what sl_worker_run returns */
  char errstr[512];            /* its cause */
} sl_crew;

/* Slots queue worker w may ask Redis for now: the process's free slots,
 * capped by w's weighted share. Never negative. */
int sl__crew_room(const sl_worker_t *w);
/* 1 when w is one of several queues and holds less than its weighted
 * share: an idle queue then keeps its blocking read going even while the
 * others fill the process, so it learns it has work and gets its share
 * back as their items end (what it reads waits for a free slot). */
int sl__crew_owed(const sl_worker_t *w);
/* Items running in the whole process. */
int sl__crew_running(const sl_crew *c);
/* 1 when no queue may read now because of the run-alone rule: an item runs
 * alone, waits to, or may come with a takeover in flight. */
int sl__crew_alone_pending(const sl_crew *c);
/* 1 when nothing runs, waits to start or is being read in the process: the
 * only moment an item that must run alone may be taken. */
int sl__crew_quiet(const sl_crew *c);
/* Starts waiting items, by weight over the queues, while slots are free.
 * Returns 1 when it stopped for its time budget (kick again). */
int sl__crew_start(sl_crew *c);
/* Runs every member's pump on the next loop turn: slots or shares changed. */
void sl__crew_kick(sl_crew *c);

#endif
