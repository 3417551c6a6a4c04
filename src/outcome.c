/*
 * Outcomes: what finished attempts leave behind, on their way to Redis.
 *
 * A job that ends (job.c) hands its outcome to sl__worker_finish: its slot
 * is free at once, and a record joins the done queue (FIFO). flush() writes
 * up to SL_WORKER_FLUSH_MAX of them per sluice_v1_complete call, at most two
 * calls in flight, so completions are batched naturally under load. A call
 * whose reply is lost (the connection broke) puts its records back at the
 * head of the queue and they are sent again: completion is idempotent
 * (HSETNX on the results hash), so a repeat changes nothing. Retries sent
 * now arm the delayed timer (intake.c) for when they come due.
 *
 * Also here, because they report on running attempts: progress (at most
 * every PROGRESS_EVERY_MS, one sluice_v1_progress call for all items;
 * timer `progress`) and the fleet-wide push-back of a rate limit after a
 * Retry-After (sluice_v1_penalize).
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker.h"

#include "alloc.h"
#include "crew.h"
#include "id.h"
#include "job.h"
#include "log.h"
#include "outcome.h"

#define PROGRESS_EVERY_MS 500 /* progress goes to Redis at most this often */

void sl__outcome_free_one(sl_done *d) {
  sl_free(d->eid);
  sl_free(d->batch);
  sl_free(d->idx);
  sl_free(d->line);
  sl_free(d->item);
  sl_free(d);
}

void sl__worker_finish(sl_worker_t *w, sl_job_t *j, char outcome, char *line, size_t len,
                       int64_t delay_ms) {
  sl_done *d;

  w->running--;
  if (w->crew->alone_job == j)
    w->crew->alone_job = NULL;
  sl__crew_kick(w->crew); /* a slot of the process is free */
  if (outcome == 0)
    return; /* given up without an outcome (fencing, abandon) */
  if (outcome == 's')
    w->n_ok++;
  else if (outcome == 'f' || outcome == 'x')
    w->n_failed++;
  else
    w->n_retry++;
  d = sl_calloc(1, sizeof(*d));
  if (d == NULL || line == NULL) {
    /* Out of memory, the only way a finished attempt goes unrecorded (a
     * result that cannot be stored fails the item instead, job.c): the item
     * stays pending in Redis, is taken over and runs again, and an item that
     * cannot be recorded --max-deliveries times ends as poison. */
    sl__log_error("out of memory recording item %s of batch %s: it stays pending and runs again after the "
                  "visibility timeout (recording it failing every time would make it poison)", j->idx, j->batch);
    sl_free(d);
    sl_free(line);
    return;
  }
  d->prio = j->prio;
  d->eid = sl_strdup(j->eid);
  d->batch = sl_strdup(j->batch);
  d->idx = sl_strdup(j->idx);
  d->outcome = outcome;
  d->line = line;
  d->linelen = len;
  d->delay_ms = delay_ms;
  d->item = outcome == 'f' || outcome == 'x' ? sl_strdup(j->d) : NULL;
  memcpy(d->lease, j->lease, sizeof(d->lease));
  d->had_progress = j->progress >= 0;
  if (d->eid == NULL || d->batch == NULL || d->idx == NULL || ((outcome == 'f' || outcome == 'x') && d->item == NULL)) {
    sl__log_error("out of memory recording item %s of batch %s: it stays pending and runs again after the "
                  "visibility timeout (recording it failing every time would make it poison)", j->idx, j->batch);
    sl__outcome_free_one(d);
    return;
  }
  if (w->done_tail)
    w->done_tail->next = d;
  else
    w->done = d;
  w->done_tail = d;
  w->ndone++;
}

typedef struct flush_ctx {
  sl_worker_t *w; /* owner */
  sl_done *head;  /* the records sent, owned until the reply */
  int n;          /* how many */
} flush_ctx;

/* Puts records back at the head of the done list (to be sent again). */
static void done_requeue(sl_worker_t *w, sl_done *head, int n) {
  sl_done *tail = head;

  if (head == NULL)
    return;
  while (tail->next)
    tail = tail->next;
  tail->next = w->done;
  if (w->done == NULL)
    w->done_tail = tail;
  w->done = head;
  w->ndone += n;
}

/* A completion Redis refused because this worker no longer held the entry
 * (sluice_v1_complete's "WORKER MS"): the outcome of this attempt is not
 * the item's; the attempt that counts is another one. */
static void fenced(sl_worker_t *w, const sl_done *d, const char *why) {
  char who[160];
  long long at = 0;
  const char *sp = strrchr(why, ' ');
  size_t wl = sp != NULL ? (size_t)(sp - why) : strlen(why);

  w->n_fenced++;
  /* counted when it finished (sl__worker_finish); it is not this worker's */
  if (d->outcome == 's')
    w->n_ok--;
  else if (d->outcome == 'r')
    w->n_retry--;
  else
    w->n_failed--;
  if (sp != NULL)
    at = strtoll(sp + 1, NULL, 10);
  snprintf(who, sizeof(who), "%.*s", (int)(wl < sizeof(who) - 1 ? wl : sizeof(who) - 1), why);
  if (strcmp(who, "-") == 0) {
    sl__log_warn("attempt fenced: item %s of batch %s is no longer held by this worker and nobody holds it (Redis "
                 "lost this worker's read of it: a rollback or failover?); its outcome is not recorded, the item "
                 "runs again", d->idx, d->batch);
    return;
  }
  if (strcmp(who, "~stale") == 0)
    snprintf(who, sizeof(who), "the fleet (waiting for a worker to run it again)");
  else if (strcmp(who, "~alone") == 0)
    snprintf(who, sizeof(who), "the fleet (waiting for a worker to run it alone)");
  if (at > 0) {
    char ts[40];

    sl__log_fmt_time(ts, sizeof(ts), at);
    sl__log_warn("attempt fenced: item %s of batch %s was taken over by %s at %s; this worker's outcome is not "
                 "recorded", d->idx, d->batch, who, ts);
  } else {
    sl__log_warn("attempt fenced: item %s of batch %s was taken over by %s; this worker's outcome is not recorded",
                 d->idx, d->batch, who);
  }
}

static void on_complete(redisAsyncContext *ac, void *reply, void *priv) {
  flush_ctx *f = priv;
  sl_worker_t *w = f->w;
  redisReply *r = reply;
  sl_done *d;

  (void)ac;
  w->flushing--;
  if (r == NULL || (r->type == REDIS_REPLY_ERROR && sl__aredis_recoverable(w, r))) {
    /* The connection broke (or Redis lost our functions): send them again
     * later; a completion that did arrive is recognized as a repeat. */
    done_requeue(w, f->head, f->n);
    f->head = NULL;
  } else if (r->type != REDIS_REPLY_ARRAY) {
    sl__worker_fatal(w, SL_EREDIS, "recording %d finished items failed: %s", f->n,
          r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
  } else {
    d = f->head;
    for (size_t i = 0; i < r->elements && d != NULL; i++, d = d->next) {
      const redisReply *e = r->element[i];

      if (e->type == REDIS_REPLY_STRING)
        fenced(w, d, e->str);
      else if (e->integer == 0)
        w->n_dup++;
    }
  }
  while ((d = f->head) != NULL) {
    f->head = d->next;
    sl__outcome_free_one(d);
  }
  sl_free(f);
  sl__worker_kick(w);
}

void sl__outcome_flush(sl_worker_t *w) {
  int n = w->ndone < SL_WORKER_FLUSH_MAX ? w->ndone : SL_WORKER_FLUSH_MAX;
  int argc = 10 + 9 * n;
  const char **av = sl_malloc((size_t)argc * sizeof(*av));
  size_t *al = sl_malloc((size_t)argc * sizeof(*al));
  char (*delays)[24] = sl_malloc((size_t)n * sizeof(*delays));
  flush_ctx *f = sl_calloc(1, sizeof(*f));
  sl_done *d;
  sl_done *last = NULL;
  int k;

  w->flush_oom = av == NULL || al == NULL || f == NULL || delays == NULL;
  if (w->flush_oom)
    goto out; /* retried on the next pump; a drained stop gives up (sched.c) */
  k = sl__fcall_head(w, "sluice_v1_complete", "3", av, al);
  sl__push_arg(av, al, &k, SL_GROUP);
  sl__push_arg(av, al, &k, w->keys.prefix);
  sl__push_arg(av, al, &k, w->keys.queue);
  sl__push_arg(av, al, &k, w->id);
  d = w->done;
  for (int i = 0; i < n; i++, d = d->next) {
    snprintf(delays[i], sizeof(delays[i]), "%lld", (long long)d->delay_ms);
    av[k] = sl__prio_arg[d->prio];
    al[k++] = 1;
    av[k] = d->eid;
    al[k++] = strlen(d->eid);
    av[k] = d->batch;
    al[k++] = strlen(d->batch);
    av[k] = d->idx;
    al[k++] = strlen(d->idx);
    /* upper case: the attempt reported progress (its field is removed) */
    if (d->had_progress)
      av[k] = d->outcome == 's' ? "S" : d->outcome == 'f' ? "F" : d->outcome == 'x' ? "X" : "R";
    else
      av[k] = d->outcome == 's' ? "s" : d->outcome == 'f' ? "f" : d->outcome == 'x' ? "x" : "r";
    al[k++] = 1;
    av[k] = d->line;
    al[k++] = d->linelen;
    av[k] = delays[i];
    al[k++] = strlen(delays[i]);
    av[k] = d->item ? d->item : "";
    al[k++] = d->item ? strlen(d->item) : 0;
    av[k] = d->lease;
    al[k++] = strlen(d->lease);
    last = d;
  }
  if (redisAsyncCommandArgv(w->cmd, on_complete, f, argc, av, al) != REDIS_OK)
    goto out;
  /* Retries sent now come due after their delay: look for them then. */
  {
    int64_t soonest = -1;

    d = w->done;
    for (int i = 0; i < n; i++, d = d->next) {
      if (d->outcome == 'r' && (soonest < 0 || d->delay_ms < soonest))
        soonest = d->delay_ms;
    }
    if (soonest >= 0)
      sl__intake_arm_delayed(w, (long long)(sl__now_ms() + soonest + 5));
  }
  /* Detach the n records sent. */
  f->w = w;
  f->head = w->done;
  f->n = n;
  w->done = last->next;
  if (w->done == NULL)
    w->done_tail = NULL;
  last->next = NULL;
  w->ndone -= n;
  w->flushing++;
  f = NULL;
out:
  sl_free(av);
  sl_free(al);
  sl_free(delays);
  sl_free(f);
}

/* Progress of entries this worker no longer holds was refused: those
 * attempts stop (fencing). */
static void on_progress(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  if (r == NULL || r->type != REDIS_REPLY_ARRAY)
    return; /* best effort: the next beat checks ownership too */
  for (size_t i = 0; i < r->elements; i++) {
    if (r->element[i]->type == REDIS_REPLY_STRING)
      sl__lease_lost(w, r->element[i]->str, 0, "its progress report was refused");
  }
}

static void on_progress_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;
  size_t max = 11; /* FCALL name 3 s1 s2 s3 P Q group id, then 5 per item */
  size_t k = 0;
  const char **av;
  size_t *al;
  char (*pcts)[8];
  size_t n = 0;

  if (!w->cmd_up || w->closed)
    return;
  for (sl_job_t *j = w->active; j != NULL; j = j->next)
    n += j->progress_dirty && !j->ended;
  if (n == 0)
    return;
  max += 5 * n;
  av = sl_malloc(max * sizeof(*av));
  al = sl_malloc(max * sizeof(*al));
  pcts = sl_malloc(n * sizeof(*pcts));
  if (av != NULL && al != NULL && pcts != NULL) {
    size_t i = 0;

    k = (size_t)sl__fcall_head(w, "sluice_v1_progress", "3", av, al);
    av[k++] = w->keys.prefix;
    av[k++] = w->keys.queue;
    av[k++] = SL_GROUP;
    av[k++] = w->id;
    for (size_t m = 0; m < k; m++)
      al[m] = strlen(av[m]);
    for (sl_job_t *j = w->active; j != NULL && i < n; j = j->next) {
      if (!j->progress_dirty || j->ended)
        continue;
      j->progress_dirty = 0;
      snprintf(pcts[i], sizeof(pcts[i]), "%d", j->progress);
      av[k] = sl__prio_arg[j->prio];
      al[k++] = 1;
      av[k] = j->eid;
      al[k] = strlen(j->eid);
      k++;
      av[k] = j->batch;
      al[k] = strlen(j->batch);
      k++;
      av[k] = j->idx;
      al[k] = strlen(j->idx);
      k++;
      av[k] = pcts[i];
      al[k] = strlen(pcts[i]);
      k++;
      i++;
    }
    redisAsyncCommandArgv(w->cmd, on_progress, NULL, (int)k, av, al);
  }
  sl_free(av);
  sl_free(al);
  sl_free(pcts);
}

void sl__worker_progress_soon(sl_worker_t *w) {
  if (w->timers_up && !w->closed && !uv_is_active((uv_handle_t *)&w->progress))
    uv_timer_start(&w->progress, on_progress_timer, PROGRESS_EVERY_MS, 0);
}

void sl__worker_penalize(sl_worker_t *w, const char *rate_key, int64_t ms) {
  char limits[sizeof(w->keys.prefix) + 16];
  char bucket[sizeof(w->keys.prefix) + SL_NAME_MAX + 8];
  char wait[24];

  if (!w->cmd_up)
    return; /* best effort: the item's own retry still waits */
  snprintf(limits, sizeof(limits), "%slimits", w->keys.prefix);
  snprintf(bucket, sizeof(bucket), "%srl:%s", w->keys.prefix, rate_key);
  snprintf(wait, sizeof(wait), "%lld", (long long)ms);
  redisAsyncCommand(w->cmd, NULL, NULL, "FCALL sluice_v1_penalize 2 %s %s %b %s %s", limits, bucket, rate_key,
                    strlen(rate_key), wait, w->keys.prefix);
  sl__log_info("rate limit %s pushed back %lld ms for the whole fleet (the API asked to retry later)",
               rate_key[0] ? rate_key : "(queue default)", (long long)ms);
}

void sl__outcome_drop_all(sl_worker_t *w) {
  while (w->done != NULL) {
    sl_done *d = w->done;

    w->done = d->next;
    sl__outcome_free_one(d);
  }
  w->done_tail = NULL;
  w->ndone = 0;
}
