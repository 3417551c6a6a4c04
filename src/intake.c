/*
 * Intake: items come into the worker.
 *
 *   fetch     sluice_v1_fetch takes up to the free slots in priority order
 *             (or by weights), promotes due retries and scheduled items,
 *             charges rate limits and takes concurrency leases in the same
 *             call; a short answer means the streams are drained, and the
 *             next read blocks;
 *   block     the blocking XREADGROUP (BLOCK block_ms) on its own
 *             connection; what it reads goes through sluice_v1_accept, which
 *             applies the same admission rules as fetch;
 *   reclaim   every visibility / 4 (at most 1 s), busy or not:
 *             sluice_v1_reclaim finds items idle longer than their holder's
 *             visibility timeout (their worker died or stalled), takes as
 *             many as it has free slots and moves the rest to the stale
 *             pool, which every worker's fetch serves before new items; it
 *             fails poison items; only an idle worker may take an item on
 *             its last allowed delivery (it runs alone). A beat that is due
 *             goes first, so a worker that was stopped (SIGSTOP) and goes on
 *             renews its own items before it looks for stale ones.
 *
 * Every reply becomes jobs in the backlog (sched.c). Timers: `delayed`,
 * armed for the next due retry or scheduled item that a fetch reports (a
 * fetch of 0 then moves it to its stream), and `reclaim`.
 */

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "worker.h"

#include "alloc.h"
#include "crew.h"
#include "id.h"
#include "job.h"
#include "log.h"

#define FETCH_MAX 1000          /* items per fetch call */
#define RECLAIM_MAX 100         /* items per reclaim call */
#define RECLAIM_AGAIN_MS 10     /* the next reclaim call when one found more than it examines */

static void on_delayed(uv_timer_t *t);

/* Adds the items of a fetch/accept/reclaim reply (flat, 10 per item, after
 * `skip` leading elements) to the backlog. Returns how many. */
static int take_items(sl_worker_t *w, const redisReply *r, size_t skip) {
  int n = 0;

  if (r->type != REDIS_REPLY_ARRAY)
    return 0;
  for (size_t i = skip; i + 9 < r->elements; i += 10) {
    redisReply *const *e = r->element + i;
    int prio = (int)e[0]->integer - 1;
    sl_job_t *j;

    if (e[0]->type != REDIS_REPLY_INTEGER || prio < 0 || prio > 2 || e[1]->type != REDIS_REPLY_STRING ||
        e[2]->type != REDIS_REPLY_STRING || e[3]->type != REDIS_REPLY_STRING ||
        e[4]->type != REDIS_REPLY_STRING || e[5]->type != REDIS_REPLY_STRING) {
      sl__log_error("malformed entry in a fetch reply; skipped (it will be taken over)");
      continue;
    }
    j = sl__job_new(w, prio, e[1]->str, e[2]->str, e[3]->str, e[4]->str, e[5]->str, e[5]->len,
                    e[6]->type == REDIS_REPLY_STRING ? e[6]->str : NULL,
                    e[6]->type == REDIS_REPLY_STRING ? e[6]->len : 0);
    if (j == NULL) {
      sl__log_error("out of memory taking item %s; it will be taken over", e[1]->str);
      continue;
    }
    j->alone = e[7]->type == REDIS_REPLY_STRING && e[7]->str[0] == '1';
    j->wait_ms = e[8]->type == REDIS_REPLY_INTEGER && e[8]->integer > 0 ? e[8]->integer : 0;
    if (e[9]->type == REDIS_REPLY_STRING && e[9]->len <= SL_NAME_MAX)
      memcpy(j->lease, e[9]->str, e[9]->len + 1);
    if (j->alone)
      sl__log_warn("item %s of batch %s is on its last allowed delivery (max-deliveries %d): running it alone",
                   j->idx, j->batch, w->max_deliveries);
    sl__sched_push(w, j);
    n++;
  }
  return n;
}

/* Arms the delayed timer for a retry due at `due` (server ms; 0: none). */
void sl__intake_arm_delayed(sl_worker_t *w, long long due) {
  int64_t wait;

  if (due <= 0 || w->closed)
    return;
  wait = (int64_t)due - sl__now_ms();
  if (wait < 5)
    wait = 5;
  if (wait > 5000)
    wait = 5000; /* look again anyway: another worker may have taken it */
  if (uv_is_active((uv_handle_t *)&w->delayed) && (int64_t)uv_timer_get_due_in(&w->delayed) <= wait)
    return;
  uv_timer_start(&w->delayed, on_delayed, (uint64_t)wait, 0);
}

static void on_fetch(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;
  long want = (long)(intptr_t)priv;

  w->fetching = 0;
  w->reserved -= (int)want;
  if (!sl__aredis_reply(w, r, 1, "fetching items"))
    return;
  if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_INTEGER)
    sl__intake_arm_delayed(w, r->element[0]->integer);
  /* A short answer means the streams had no more new entries. */
  if (want > 0)
    w->idle = take_items(w, r, 1) < want;
  sl__crew_kick(w->crew); /* the slots it did not fill are the other queues' again */
}

void sl__intake_fetch(sl_worker_t *w, int want) {
  char count[16];

  if (want > FETCH_MAX)
    want = FETCH_MAX;
  snprintf(count, sizeof(count), "%d", want);
  if (redisAsyncCommand(w->cmd, on_fetch, (void *)(intptr_t)want,
                        "FCALL sluice_v1_fetch 3 %s %s %s %s %s %s %s %s %s %llu %lld", w->keys.stream[0],
                        w->keys.stream[1], w->keys.stream[2], SL_GROUP, w->id, count, w->keys.prefix,
                        w->keys.queue, w->weights[0] ? w->weights : "-", (unsigned long long)w->turn,
                        (long long)w->visibility_ms) == REDIS_OK) {
    w->fetching = 1;
    w->reserved += want;
    w->turn += (uint64_t)want;
  }
}

static void on_delayed(uv_timer_t *t) {
  sl_worker_t *w = t->data;

  /* Move due retries to their streams (fetch of 0 items); an idle worker's
   * blocking read then wakes up for them. */
  if (w->cmd_up && !w->fetching && !w->stopping)
    sl__intake_fetch(w, 0);
  else
    uv_timer_start(&w->delayed, on_delayed, 100, 0);
}

static void on_accept(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  w->fetching = 0;
  if (!sl__aredis_reply(w, r, 1, "accepting items"))
    return;
  take_items(w, r, 0);
  sl__worker_kick(w);
}

static void on_block(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;
  const char **av = NULL;
  size_t *al = NULL;
  size_t max = 10;
  char vis[24];
  int k;

  (void)priv;
  w->blocking = 0;
  if (!sl__aredis_reply(w, r, 1, "blocking read"))
    return;
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
    /* BLOCK timed out (or CLIENT UNBLOCK): fetch once before blocking again,
     * which also moves retries that came due to their streams. */
    w->idle = 0;
    sl__worker_kick(w);
    return;
  }
  /* [[stream, [[id, fields], ...]], ...] -> one sluice_v1_accept call. */
  for (size_t s = 0; s < r->elements; s++)
    max += 2 * r->element[s]->element[1]->elements;
  av = sl_malloc(max * sizeof(*av));
  al = sl_malloc(max * sizeof(*al));
  if (av == NULL || al == NULL || !w->cmd_up)
    goto out; /* the entries stay pending and are taken over */
  k = sl__fcall_head(w, "sluice_v1_accept", "3", av, al);
  sl__push_arg(av, al, &k, SL_GROUP);
  sl__push_arg(av, al, &k, w->keys.prefix);
  sl__push_arg(av, al, &k, w->keys.queue);
  snprintf(vis, sizeof(vis), "%lld", (long long)w->visibility_ms);
  sl__push_arg(av, al, &k, vis);
  for (size_t s = 0; s < r->elements; s++) {
    const redisReply *st = r->element[s];
    int p = -1;

    for (int i = 0; i < 3; i++) {
      if (strcmp(st->element[0]->str, w->keys.stream[i]) == 0)
        p = i;
    }
    for (size_t e = 0; p >= 0 && e < st->element[1]->elements; e++) {
      const redisReply *ent = st->element[1]->element[e];

      av[k] = sl__prio_arg[p];
      al[k++] = 1;
      av[k] = ent->element[0]->str;
      al[k++] = ent->element[0]->len;
    }
  }
  if (k > 10 && redisAsyncCommandArgv(w->cmd, on_accept, NULL, k, av, al) == REDIS_OK)
    w->fetching = 1;
  w->idle = 0;
out:
  sl_free(av);
  sl_free(al);
  sl__worker_kick(w);
}

void sl__intake_block(sl_worker_t *w) {
  char ms[16];

  snprintf(ms, sizeof(ms), "%d", w->block_ms);
  if (redisAsyncCommand(w->blk, on_block, NULL,
                        "XREADGROUP GROUP %s %s COUNT 1 BLOCK %s STREAMS %s %s %s > > >", SL_GROUP, w->id,
                        ms, w->keys.stream[0], w->keys.stream[1], w->keys.stream[2]) == REDIS_OK) {
    w->blocking = 1;
    w->block_sent_at = uv_now(w->loop); /* its reply is due within block_ms (aredis.c's watchdog) */
  }
}

static void on_reclaim_timer(uv_timer_t *t);

static void on_reclaim(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;
  int n;

  w->reclaiming = 0;
  w->reserved -= (int)(intptr_t)priv;
  w->isolating = 0;
  if (!sl__aredis_reply(w, r, 0, "taking over items"))
    return;
  n = take_items(w, r, 2);
  if (n > 0)
    sl__log_info("took over %d items whose worker stopped heartbeating", n);
  /* More claims ran out than one call examines: the next call goes soon,
   * not a timer period later. */
  if (r->type == REDIS_REPLY_ARRAY && r->elements > 1 && r->element[1]->type == REDIS_REPLY_INTEGER &&
      r->element[1]->integer > 0 && !w->stopping)
    uv_timer_start(&w->reclaim, on_reclaim_timer, RECLAIM_AGAIN_MS, 0);
  if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_INTEGER &&
      r->element[0]->integer > 0) {
    sl__log_info("%lld items of workers that stopped heartbeating are waiting for any worker to run them again",
                 r->element[0]->integer);
    w->idle = 0; /* fetch, do not block: the stale pool is served first */
  }
  sl__crew_kick(w->crew); /* the slots it did not fill are the other queues' again */
}

/* How often the reclaim timer runs, ms. */
static int64_t reclaim_every(const sl_worker_t *w) {
  int64_t every = w->visibility_ms / 4;

  if (every > 1000)
    every = 1000;
  if (every < 100)
    every = 100;
  return every;
}

/* A give back holds new starts (lease.c): take nothing to run now. */
static int held(sl_worker_t *w) {
  return uv_is_active((uv_handle_t *)&w->hold);
}

static void on_reclaim_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;
  int free_slots = sl__crew_room(w);
  char idle[24];
  char maxdel[16];
  char count[16];
  int64_t every = reclaim_every(w);
  int alone_ok;

  uv_timer_start(&w->reclaim, on_reclaim_timer, (uint64_t)sl__jitter(every), 0);
  if (!w->cmd_up || w->reclaiming || w->stopping)
    return;
  if (w->crew->alone_job != NULL || held(w))
    free_slots = 0;
  if (free_slots > RECLAIM_MAX)
    free_slots = RECLAIM_MAX;
  if (!w->beating && uv_now(w->loop) - w->beat_sent_at >= (uint64_t)w->beat_ms)
    sl__lease_beat(w); /* ahead of the reclaim on the same connection */
  snprintf(idle, sizeof(idle), "%lld", (long long)w->visibility_ms);
  snprintf(maxdel, sizeof(maxdel), "%d", w->max_deliveries);
  snprintf(count, sizeof(count), "%d", free_slots);
  /* Only a worker process that runs nothing (and reads nothing) may take
   * an item on its last allowed delivery: it must run alone. */
  alone_ok = sl__crew_quiet(w->crew);
  if (redisAsyncCommand(w->cmd, on_reclaim, (void *)(intptr_t)free_slots, "FCALL sluice_v1_reclaim 3 %s %s %s %s %s %s %s %s %s %s %s",
                        w->keys.stream[0], w->keys.stream[1], w->keys.stream[2], SL_GROUP, w->id, idle, maxdel,
                        w->keys.prefix, w->keys.queue, count, alone_ok ? "1" : "0") == REDIS_OK) {
    w->reclaiming = 1;
    w->reserved += free_slots;
    w->isolating = alone_ok;
  }
}

void sl__intake_start(sl_worker_t *w) {
  uv_timer_start(&w->reclaim, on_reclaim_timer, (uint64_t)sl__jitter(reclaim_every(w)), 0);
}
