/*
 * Leases on items: heartbeats, fencing, abort, release.
 *
 * Every beat_ms (visibility / 3, at most 10 s; timer `beat`) the
 * sluice_v1_beat calls (one per BEAT_CHUNK held items) register the worker
 * in the fleet (P..workers, P..w:ID with a TTL of three beats) and keep the claim on every item it
 * holds alive, owner-checked: a beat never takes an item back. Its reply
 * names the items this worker no longer owns (another worker took them
 * over: fencing) and those whose batch was cancelled with --abort; their
 * attempts are given up (the handler's cancel hook runs, nothing is
 * recorded by this worker) and backlog entries for them are dropped. The
 * beat is also the worker's test of its `cmd` connection: a reply that has
 * not come back within two beat intervals makes aredis.c's watchdog drop the
 * connection and reconnect.
 *
 * Release: a stopping worker gives back the items it took and did not
 * start (sluice_v1_release), so other workers start them at once.
 *
 * Give back: a handler that could not run its item for want of the
 * worker's own resources (out of file descriptors) ends the job with
 * sl_job_give_back. The item's entry is released the same way, at once,
 * which counts no attempt: it runs again as it was, here or elsewhere. The
 * worker then starts and fetches nothing for GIVE_BACK_HOLD_MS (the
 * scheduler's hold), so it does not take the item straight back into the
 * same shortage; the first give back of a hold is logged with its reason,
 * the rest are counted in one line when the hold ends.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker.h"

#include "alloc.h"
#include "crew.h"
#include "id.h"
#include "job.h"
#include "json.h"
#include "log.h"
#include "outcome.h"

#define RELEASE_MAX 500         /* items per release call */
#define BEAT_CHUNK 500          /* held items per beat call: one call stays within a few ms */
#define GIVE_BACK_HOLD_MS 1000  /* no new starts after a give back, ms (+-20%) */
#define STALL_TICK_MS 50        /* the stall watch's tick, ms */

void sl__lease_lost(sl_worker_t *w, const char *eid, int aborted, const char *how) {
  sl_job_t *prev = NULL;

  for (sl_job_t *j = w->active; j != NULL; j = j->next) {
    if (!j->ended && strcmp(j->eid, eid) == 0) {
      w->n_fenced++;
      if (aborted)
        sl__log_info("item %s of batch %s: the batch was cancelled with --abort; stopping this attempt", j->idx,
                     j->batch);
      else
        sl__log_warn("attempt fenced: item %s of batch %s was taken over by another worker (%s); stopping this "
                     "attempt", j->idx, j->batch, how);
      sl__job_abort(j, aborted ? "aborted" : "taken over", 0);
      break;
    }
  }
  for (sl_job_t *j = w->backlog; j != NULL; prev = j, j = j->next) {
    if (strcmp(j->eid, eid) == 0) {
      if (prev != NULL)
        prev->next = j->next;
      else
        w->backlog = j->next;
      if (w->backlog_tail == j)
        w->backlog_tail = prev;
      w->nbacklog--;
      sl__job_free(j);
      break;
    }
  }
  sl__worker_kick(w);
}

/* Stops the attempts of items another worker owns now (fencing). */
static void on_beat(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  if (w->beating > 0)
    w->beating--;
  if (!sl__aredis_reply(w, r, 0, "heartbeat"))
    return;
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
    const char *eid = r->element[i]->str;

    if (eid[0] == '!') /* its batch was cancelled with --abort */
      sl__lease_lost(w, eid + 1, 1, "aborted");
    else
      sl__lease_lost(w, eid, 0, "its heartbeat found it held by another");
  }
  sl__worker_kick(w);
}

static void push_held(const char **av, size_t *al, size_t *k, int prio, const char *eid, const char *batch) {
  av[*k] = sl__prio_arg[prio];
  al[(*k)++] = 1;
  av[*k] = eid;
  al[*k] = strlen(eid);
  (*k)++;
  av[*k] = batch;
  al[*k] = strlen(batch);
  (*k)++;
}

/* One held item of a beat: priority, entry id, batch id. */
typedef struct held {
  int prio;
  const char *eid;
  const char *batch;
} held;

/* A stream entry id "MS-SEQ" as two numbers, for sorting. */
static void eid_parts(const char *eid, unsigned long long *ms, unsigned long long *seq) {
  char *end;

  *ms = strtoull(eid, &end, 10);
  *seq = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
}

static int held_cmp(const void *pa, const void *pb) {
  const held *a = pa;
  const held *b = pb;
  unsigned long long am, as, bm, bs;

  if (a->prio != b->prio)
    return a->prio < b->prio ? -1 : 1;
  eid_parts(a->eid, &am, &as);
  eid_parts(b->eid, &bm, &bs);
  if (am != bm)
    return am < bm ? -1 : 1;
  return as < bs ? -1 : as > bs;
}

static size_t collect_held(const sl_worker_t *w, held *h, size_t max) {
  size_t n = 0;

  for (sl_job_t *j = w->active; j != NULL && n < max; j = j->next) {
    if (!j->ended)
      h[n++] = (held){j->prio, j->eid, j->batch};
  }
  /* Attempts that finished and whose completion is not written yet: the
   * item is still this worker's until Redis has its outcome, or another
   * worker would run it again meanwhile. (A completion call in flight is
   * ahead of this beat on the same connection.) */
  for (const sl_done *d = w->done; d != NULL && n < max; d = d->next)
    h[n++] = (held){d->prio, d->eid, d->batch};
  for (int list = 0; list < 2; list++) {
    /* the backlog, and items given back but not yet released: neither may
     * look abandoned, or a takeover would count it a delivery */
    for (sl_job_t *j = list == 0 ? w->backlog : w->given; j != NULL && n < max; j = j->next)
      h[n++] = (held){j->prio, j->eid, j->batch};
  }
  return n;
}

/*
 * A beat is one sluice_v1_beat call per BEAT_CHUNK held items (at least
 * one call, which registers the worker): each call's work is bounded
 * whatever the worker holds. The items go sorted by priority and entry id,
 * so each call's entries of a stream are one contiguous range, which the
 * function reads with one XPENDING of that range.
 */
void sl__lease_beat(sl_worker_t *w) {
  size_t max = 16 + (size_t)w->concurrency + (size_t)w->nbacklog + (size_t)w->ngiven + (size_t)w->ndone;
  held *h = sl_malloc(max * sizeof(*h));
  const char **av = sl_malloc((16 + 3 * BEAT_CHUNK) * sizeof(*av));
  size_t *al = sl_malloc((16 + 3 * BEAT_CHUNK) * sizeof(*al));
  char wkey[sizeof(w->keys.prefix) + sizeof(w->id) + 4];
  char zkey[sizeof(w->keys.prefix) + 16];
  char ttl[24];
  /* the mock file's path, escaped: at most 6 bytes per byte (\u00XX) */
  size_t infolen =
      1024 + SL_WORKER_MAX_HANDLERS * (SL_NAME_MAX + 3) + (w->http_mock ? 6 * strlen(w->http_mock) + 16 : 0);
  char *info = sl_malloc(infolen);
  size_t head;
  size_t n;
  size_t at = 0;

  if (h == NULL || av == NULL || al == NULL || info == NULL)
    goto out;
  snprintf(wkey, sizeof(wkey), "%sw:%s", w->keys.prefix, w->id);
  snprintf(zkey, sizeof(zkey), "%sworkers", w->keys.prefix);
  snprintf(ttl, sizeof(ttl), "%lld", (long long)(w->beat_ms * 3 + 1000));
  {
    char host[64];
    const char *colon = strchr(w->id, ':');
    size_t hl = colon ? (size_t)(colon - w->id) : strlen(w->id);

    snprintf(host, sizeof(host), "%.*s", (int)(hl < 63 ? hl : 63), w->id);
    snprintf(info, infolen,
             "{\"id\":\"%s\",\"host\":\"%s\",\"pid\":%d,\"queue\":\"%s\",\"running\":%d,\"concurrency\":%d,"
             "\"started_at\":%lld,\"succeeded\":%llu,\"failed\":%llu,\"retried\":%llu,\"fenced\":%llu,"
             "\"visibility_ms\":%lld,\"max_stall_ms\":%llu,\"version\":\"%s\",\"types\":[",
             w->id, host, (int)getpid(), w->keys.queue, w->running, w->concurrency, (long long)w->started_at,
             (unsigned long long)w->n_ok, (unsigned long long)w->n_failed, (unsigned long long)w->n_retry,
             (unsigned long long)w->n_fenced, (long long)w->visibility_ms, (unsigned long long)w->crew->m[0]->max_stall_ms,
             SL_VERSION_STRING);
    /* the item types it serves (names of [A-Za-z0-9_.:-]: no escaping), so a
     * producer can be told when no live worker serves a type of its batch */
    for (int i = 0; i < w->nhandlers; i++)
      snprintf(info + strlen(info), infolen - strlen(info), "%s\"%s\"", i ? "," : "", w->handlers[i].type);
    snprintf(info + strlen(info), infolen - strlen(info), "]");
    if (w->http_mock != NULL) {
      /* --http-mock: `sluice workers` shows that this worker answers http items from a file */
      sl_buf path;

      sl__buf_init(&path, infolen);
      if (sl__json_put_str(&path, w->http_mock, strlen(w->http_mock)) == 0)
        snprintf(info + strlen(info), infolen - strlen(info), ",\"http_mock\":%s", path.p);
      sl__buf_free(&path);
    }
    snprintf(info + strlen(info), infolen - strlen(info), "}");
  }
  head = (size_t)sl__fcall_head(w, "sluice_v1_beat", "5", av, al);
  av[head] = zkey;
  av[head + 1] = wkey;
  av[head + 2] = SL_GROUP;
  av[head + 3] = w->id;
  av[head + 4] = ttl;
  av[head + 5] = info;
  for (size_t i = head; i < head + 6; i++)
    al[i] = strlen(av[i]);
  head += 6;
  n = collect_held(w, h, max);
  qsort(h, n, sizeof(*h), held_cmp);
  do {
    size_t k = head;

    for (; at < n && k < head + 3 * BEAT_CHUNK; at++)
      push_held(av, al, &k, h[at].prio, h[at].eid, h[at].batch);
    if (redisAsyncCommandArgv(w->cmd, on_beat, NULL, (int)k, av, al) != REDIS_OK)
      break;
    w->beating++;
    w->beat_sent_at = uv_now(w->loop); /* aredis.c's watchdog waits for its reply */
  } while (at < n);
out:
  sl_free(h);
  sl_free(av);
  sl_free(al);
  sl_free(info);
}

static void on_beat_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;

  if (w->cmd_up && !w->beating)
    sl__lease_beat(w);
}

static void on_release(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  w->releasing = 0;
  if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 0 && w->stopping)
    sl__log_info("gave back %lld items it had not started", r->integer); /* a give back logged its own */
  sl__worker_kick(w);
}

/* Gives back the items handlers gave back and, when stopping, the backlog
 * (taken, not started), so they run again at once. */
void sl__lease_release(sl_worker_t *w) {
  int n = w->ngiven + (w->stopping ? w->nbacklog : 0);
  size_t max;
  const char **av;
  size_t *al;
  sl_job_t *taken = NULL;
  int k;

  if (n > RELEASE_MAX)
    n = RELEASE_MAX;
  max = 8 + 2 * (size_t)n;
  av = sl_malloc(max * sizeof(*av));
  al = sl_malloc(max * sizeof(*al));
  w->release_oom = av == NULL || al == NULL;
  if (w->release_oom) {
    sl_free(av);
    sl_free(al);
    return; /* retried on the next pump; a drained stop gives up (sched.c) */
  }
  k = sl__fcall_head(w, "sluice_v1_release", "3", av, al);
  sl__push_arg(av, al, &k, SL_GROUP);
  sl__push_arg(av, al, &k, w->id);
  for (int i = 0; i < n; i++) {
    sl_job_t *j = w->given;

    if (j != NULL) {
      w->given = j->next;
      w->ngiven--;
    } else {
      j = sl__sched_pop(w);
    }
    av[k] = sl__prio_arg[j->prio];
    al[k++] = 1;
    av[k] = j->eid;
    al[k] = strlen(j->eid);
    k++;
    j->next = taken;
    taken = j;
  }
  if (redisAsyncCommandArgv(w->cmd, on_release, NULL, k, av, al) == REDIS_OK)
    w->releasing = 1;
  sl_free(av);
  sl_free(al);
  while (taken != NULL) {
    sl_job_t *j = taken;

    taken = j->next;
    sl__job_free(j);
  }
}

/* The hold after a give back is over: items start again. */
static void on_hold_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;

  if (w->given_held > 0)
    sl__log_warn("%d more items given back during the hold, no attempt counted", w->given_held);
  w->given_held = 0;
  sl__worker_kick(w);
}

void sl__lease_give_back(sl_worker_t *w, const sl_job_t *j, const char *why) {
  /* Only the entry is needed to release it (the item's fields stay in the
   * stream), as for the items a stop gives back. */
  sl_job_t *copy = sl__job_new(w, j->prio, j->eid, j->batch, j->idx, "1", "{}", 2, NULL, 0);

  w->n_given++;
  if (copy == NULL) {
    sl__log_error("out of memory giving back item %s of batch %s (%s): it stays pending and runs again after the "
                  "visibility timeout", j->idx, j->batch, why);
    return;
  }
  copy->next = w->given;
  w->given = copy;
  w->ngiven++;
  if (uv_is_active((uv_handle_t *)&w->hold)) {
    w->given_held++;
  } else {
    sl__log_warn("item %s of batch %s given back, no attempt counted: %s; starting no new items for about %d ms",
                 j->idx, j->batch, why, GIVE_BACK_HOLD_MS);
    w->given_held = 0;
    if (!w->closed)
      uv_timer_start(&w->hold, on_hold_timer, (uint64_t)sl__jitter(GIVE_BACK_HOLD_MS), 0);
  }
  sl__worker_kick(w);
}

/* The stall watch: a tick every STALL_TICK_MS; how much later than that
 * it comes is how long the loop was busy elsewhere (a spawn, a large
 * reply, a starved CPU). A stall of half a beat interval puts the
 * worker's items at risk of a takeover: it is logged (at most every 10 s),
 * and the longest one is reported in the fleet registry (max_stall_ms) and
 * when the worker stops. */
static void on_stall_tick(uv_timer_t *t) {
  sl_worker_t *w = t->data;
  uint64_t now = uv_hrtime();
  uint64_t late = (now - w->stall_at) / 1000000;

  w->stall_at = now;
  late = late > STALL_TICK_MS ? late - STALL_TICK_MS : 0;
  if (late > w->max_stall_ms)
    w->max_stall_ms = late;
  if (late * 2 >= (uint64_t)w->beat_ms && now - w->stall_warned_at >= 10000000000ull) {
    w->stall_warned_at = now;
    sl__log_warn("the worker's loop stalled for %llu ms (a beat is due every %lld ms; a stall near the visibility "
                 "timeout lets other workers take its items over)", (unsigned long long)late, (long long)w->beat_ms);
  }
}

void sl__lease_start(sl_worker_t *w) {
  uv_timer_start(&w->beat, on_beat_timer, (uint64_t)w->beat_ms, (uint64_t)w->beat_ms);
  if (w->crew->m[0] == w) {
    /* one loop, one watch: the lead's (crew.h) */
    w->stall_at = uv_hrtime();
    uv_timer_start(&w->stall, on_stall_tick, STALL_TICK_MS, STALL_TICK_MS);
  }
}
