/*
 * The crew's shared slots: how much each queue may read, and which queue's
 * waiting item starts next (crew.h has the model).
 */

#include "crew.h"

#include "job.h"

/* Starting items takes loop time (an exec item forks, which on a loaded
 * machine can take tens of ms): one turn starts items for at most this
 * long, then lets due timers (the heartbeat) and replies run first. */
#define START_BUDGET_NS (10 * 1000000ull)

static int held_items(const sl_worker_t *m) {
  return m->running + m->nbacklog + m->reserved;
}

/* A queue with work: its last read was not short, or it holds items. */
static int has_work(const sl_worker_t *m) {
  return !m->closed && !m->stopping && (!m->idle || held_items(m) > 0);
}

int sl__crew_running(const sl_crew *c) {
  int n = 0;

  for (int i = 0; i < c->n; i++)
    n += c->m[i]->running;
  return n;
}

/* ceil(concurrency * w's share among the queues with work, w counted as
 * one): every queue with work gets a slot at least. */
static long long cap_of(const sl_worker_t *w) {
  const sl_crew *c = w->crew;
  int wsum = 0;
  int mine = 0;

  for (int i = 0; i < c->n; i++) {
    if (c->m[i] == w)
      mine = c->weight[i];
    if (c->m[i] == w || has_work(c->m[i]))
      wsum += c->weight[i];
  }
  return ((long long)c->concurrency * mine + wsum - 1) / wsum;
}

int sl__crew_room(const sl_worker_t *w) {
  const sl_crew *c = w->crew;
  int used = 0;
  int room;

  for (int i = 0; i < c->n; i++)
    used += held_items(c->m[i]);
  room = c->concurrency - used;
  if (c->n > 1) {
    long long left = cap_of(w) - held_items(w);

    if (left < room)
      room = (int)left;
  }
  return room > 0 ? room : 0;
}

int sl__crew_owed(const sl_worker_t *w) {
  return w->crew->n > 1 && cap_of(w) > held_items(w);
}

int sl__crew_alone_pending(const sl_crew *c) {
  if (c->alone_job != NULL)
    return 1;
  for (int i = 0; i < c->n; i++) {
    const sl_worker_t *m = c->m[i];

    if (m->isolating || (m->backlog != NULL && m->backlog->alone))
      return 1;
  }
  return 0;
}

int sl__crew_quiet(const sl_crew *c) {
  if (c->alone_job != NULL)
    return 0;
  for (int i = 0; i < c->n; i++) {
    const sl_worker_t *m = c->m[i];

    if (m->running > 0 || m->nbacklog > 0 || m->fetching || m->isolating)
      return 0;
  }
  return 1;
}

/* A give back holds new starts of its queue (lease.c). */
static int startable(const sl_worker_t *m) {
  return !m->closed && !m->stopping && m->rc == 0 && m->backlog != NULL &&
         !uv_is_active((const uv_handle_t *)&m->hold);
}

int sl__crew_start(sl_crew *c) {
  uint64_t began = uv_hrtime();

  for (;;) {
    int running = sl__crew_running(c);
    int total = 0;
    int best = -1;
    sl_worker_t *m;
    sl_job_t *j;

    if (running >= c->concurrency || c->alone_job != NULL)
      return 0;
    for (int i = 0; i < c->n; i++) {
      if (!startable(c->m[i]))
        continue;
      c->cur[i] += c->weight[i];
      total += c->weight[i];
      if (best < 0 || c->cur[i] > c->cur[best])
        best = i;
    }
    if (best < 0)
      return 0;
    c->cur[best] -= total;
    m = c->m[best];
    if (m->backlog->alone && running > 0)
      return 0; /* it waits until nothing else runs, and nothing starts before it */
    if (uv_hrtime() - began >= START_BUDGET_NS)
      return 1; /* the rest on the next turn, after due timers and replies */
    j = sl__sched_pop(m);
    m->running++;
    if (j->alone)
      c->alone_job = j;
    sl__job_start(j); /* may finish at once, or be given back and start the hold */
  }
}

void sl__crew_kick(sl_crew *c) {
  for (int i = 0; i < c->n; i++)
    sl__worker_kick(c->m[i]);
}
