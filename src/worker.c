/*
 * The worker: a libuv loop that takes items from a queue's streams, runs
 * them through handlers and records their outcome.
 *
 * Two Redis connections, both hiredis async on the loop:
 *   cmd  functions: fetch, accept, complete, beat, reclaim, release;
 *   blk  only the blocking XREADGROUP, which would hold up every command
 *        pipelined behind it.
 *
 * pump() is the scheduler, run on the loop turn after anything changed
 * (sl__worker_kick): start backlog items while slots are free; write
 * finished attempts, up to SL_WORKER_FLUSH_MAX per sluice_v1_complete call;
 * and when slots are free and no read is in flight, fetch. When a fetch
 * comes back short the queue is drained, so the next read is a blocking
 * XREADGROUP (BLOCK block_ms): an idle worker sends one command per block_ms
 * instead of polling. Completions are batched naturally: while one complete
 * call is in flight, finished attempts accumulate for the next.
 *
 * Timers, all on the loop:
 *   beat      every beat_ms (visibility / 3): sluice_v1_beat registers the
 *             worker in the fleet and keeps the claim on every item it holds
 *             alive, owner-checked; items it no longer owns are fenced (their
 *             attempts stopped, nothing recorded);
 *   reclaim   every visibility / 4 (at most 5 s) while slots are free:
 *             sluice_v1_reclaim takes over items idle longer than the
 *             visibility timeout (their worker died) and sends poison items
 *             to the dead letters;
 *   delayed   when the next retry is due (fetch reports it): a fetch moves
 *             it back to its stream;
 *   reconnect after a lost connection, with backoff (100 ms doubling to 5 s,
 *             with jitter). Items keep running meanwhile; their completions
 *             wait and are sent when Redis is back (completion is
 *             idempotent). The outage is logged once, and the recovery.
 *   drain     after a stop: running items have drain_ms to finish; then they
 *             are abandoned (cancelled, given back) and the worker closes.
 *
 * Stopping (sl_worker_stop, SIGINT/SIGTERM): no new reads; items taken but
 * not started are given back at once (sluice_v1_release); running items
 * finish within the drain timeout and their outcomes are written; then the
 * connections close and the loop runs out of handles.
 */
#include "worker.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "conn.h"
#include "id.h"
#include "item.h"
#include "builtins.h"
#include "httpc.h"
#include "webhook.h"
#include "log.h"
#include "uvredis.h"

#define FETCH_MAX 1000          /* items per fetch call */
#define RECLAIM_MAX 100         /* items per reclaim call */
#define RECONNECT_MIN_MS 100    /* first reconnect delay */
#define RECONNECT_MAX_MS 5000   /* longest reconnect delay */
#define RELEASE_MAX 500         /* items per release call */

static void pump(sl_worker_t *w);
static void fatal(sl_worker_t *w, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void connect_both(sl_worker_t *w);
static int recoverable(sl_worker_t *w, const redisReply *r);
static void arm_delayed(sl_worker_t *w, long long due);

/* ---- Small helpers ---- */

static void fatal(sl_worker_t *w, int code, const char *fmt, ...) {
  va_list ap;

  if (w->rc != 0)
    return; /* the first cause is the one worth reporting */
  va_start(ap, fmt);
  vsnprintf(w->errstr, sizeof(w->errstr), fmt, ap);
  va_end(ap);
  w->rc = code;
  w->stopping = 1;
  sl__log_error("%s", w->errstr);
  sl__worker_kick(w);
}

static void on_kick(uv_timer_t *t) {
  pump(t->data);
}

void sl__worker_kick(sl_worker_t *w) {
  if (!w->closed && w->timers_up && !uv_is_active((uv_handle_t *)&w->kick))
    uv_timer_start(&w->kick, on_kick, 0, 0);
}

static int64_t jitter(int64_t ms) {
  uint32_t r;

  if (sl__random_bytes(&r, sizeof(r)) != 0)
    return ms;
  /* +-20% */
  return ms * 8 / 10 + (int64_t)((double)r / 4294967296.0 * (double)ms * 4 / 10);
}

static void done_free(sl_done *d) {
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
  if (w->alone_job == j)
    w->alone_job = NULL;
  sl__worker_kick(w);
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
    done_free(d);
    return;
  }
  if (w->done_tail)
    w->done_tail->next = d;
  else
    w->done = d;
  w->done_tail = d;
  w->ndone++;
}

static void backlog_push(sl_worker_t *w, sl_job_t *j) {
  j->next = NULL;
  if (w->backlog_tail)
    w->backlog_tail->next = j;
  else
    w->backlog = j;
  w->backlog_tail = j;
  w->nbacklog++;
}

static sl_job_t *backlog_pop(sl_worker_t *w) {
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
    backlog_push(w, j);
    n++;
  }
  return n;
}

/* Appends "FCALL name 3 s1 s2 s3" to av/al; returns the count (6). */
static int fcall_head(const sl_worker_t *w, const char *name, const char *nkeys, const char **av, size_t *al) {
  int k = 0;

  av[k++] = "FCALL";
  av[k++] = name;
  av[k++] = nkeys;
  av[k++] = w->keys.stream[0];
  av[k++] = w->keys.stream[1];
  av[k++] = w->keys.stream[2];
  for (int i = 0; i < k; i++)
    al[i] = strlen(av[i]);
  return k;
}

static const char *const prio_arg[3] = {"1", "2", "3"};

/* Appends one C-string argument to an argv being built. */
static void push_arg(const char **av, size_t *al, int *k, const char *s) {
  av[*k] = s;
  al[*k] = strlen(s);
  (*k)++;
}

/* ---- Completions ---- */

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

static void on_complete(redisAsyncContext *ac, void *reply, void *priv) {
  flush_ctx *f = priv;
  sl_worker_t *w = f->w;
  redisReply *r = reply;
  sl_done *d;

  (void)ac;
  w->flushing--;
  if (r == NULL || (r->type == REDIS_REPLY_ERROR && recoverable(w, r))) {
    /* The connection broke (or Redis lost our functions): send them again
     * later; a completion that did arrive is recognized as a repeat. */
    done_requeue(w, f->head, f->n);
    f->head = NULL;
  } else if (r->type != REDIS_REPLY_ARRAY) {
    fatal(w, SL_EREDIS, "recording %d finished items failed: %s", f->n,
          r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
  } else {
    for (size_t i = 0; i < r->elements; i++) {
      if (r->element[i]->integer == 0)
        w->n_dup++;
    }
  }
  while ((d = f->head) != NULL) {
    f->head = d->next;
    done_free(d);
  }
  sl_free(f);
  sl__worker_kick(w);
}

static void flush(sl_worker_t *w) {
  int n = w->ndone < SL_WORKER_FLUSH_MAX ? w->ndone : SL_WORKER_FLUSH_MAX;
  int argc = 9 + 9 * n;
  const char **av = sl_malloc((size_t)argc * sizeof(*av));
  size_t *al = sl_malloc((size_t)argc * sizeof(*al));
  char (*delays)[24] = sl_malloc((size_t)n * sizeof(*delays));
  flush_ctx *f = sl_calloc(1, sizeof(*f));
  sl_done *d;
  sl_done *last = NULL;
  int k;

  if (av == NULL || al == NULL || f == NULL || delays == NULL)
    goto out; /* retried on the next pump */
  k = fcall_head(w, "sluice_v1_complete", "3", av, al);
  push_arg(av, al, &k, SL_GROUP);
  push_arg(av, al, &k, w->keys.prefix);
  push_arg(av, al, &k, w->keys.queue);
  d = w->done;
  for (int i = 0; i < n; i++, d = d->next) {
    snprintf(delays[i], sizeof(delays[i]), "%lld", (long long)d->delay_ms);
    av[k] = prio_arg[d->prio];
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
      arm_delayed(w, (long long)(sl__now_ms() + soonest + 5));
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

/* ---- Reads: fetch, blocking read, accept ---- */

static void on_delayed(uv_timer_t *t);

/* Arms the delayed timer for a retry due at `due` (server ms; 0: none). */
static void arm_delayed(sl_worker_t *w, long long due) {
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
  if (r == NULL)
    return; /* connection gone; on_disconnect deals with it */
  if (r->type == REDIS_REPLY_ERROR) {
    if (!recoverable(w, r))
      fatal(w, SL_EREDIS, "fetching items failed: %s", r->str);
    return;
  }
  if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_INTEGER)
    arm_delayed(w, r->element[0]->integer);
  /* A short answer means the streams had no more new entries. */
  if (want > 0)
    w->idle = take_items(w, r, 1) < want;
  sl__worker_kick(w);
}

static void fetch(sl_worker_t *w, int want) {
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
    w->turn += (uint64_t)want;
  }
}

static void on_delayed(uv_timer_t *t) {
  sl_worker_t *w = t->data;

  /* Move due retries to their streams (fetch of 0 items); an idle worker's
   * blocking read then wakes up for them. */
  if (w->cmd_up && !w->fetching && !w->stopping)
    fetch(w, 0);
  else
    uv_timer_start(&w->delayed, on_delayed, 100, 0);
}

static void on_accept(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  w->fetching = 0;
  if (r == NULL)
    return;
  if (r->type == REDIS_REPLY_ERROR) {
    if (!recoverable(w, r))
      fatal(w, SL_EREDIS, "accepting items failed: %s", r->str);
    return;
  }
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
  if (r == NULL)
    return;
  if (r->type == REDIS_REPLY_ERROR) {
    if (!recoverable(w, r))
      fatal(w, SL_EREDIS, "blocking read failed: %s", r->str);
    return;
  }
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
  k = fcall_head(w, "sluice_v1_accept", "3", av, al);
  push_arg(av, al, &k, SL_GROUP);
  push_arg(av, al, &k, w->keys.prefix);
  push_arg(av, al, &k, w->keys.queue);
  snprintf(vis, sizeof(vis), "%lld", (long long)w->visibility_ms);
  push_arg(av, al, &k, vis);
  for (size_t s = 0; s < r->elements; s++) {
    const redisReply *st = r->element[s];
    int p = -1;

    for (int i = 0; i < 3; i++) {
      if (strcmp(st->element[0]->str, w->keys.stream[i]) == 0)
        p = i;
    }
    for (size_t e = 0; p >= 0 && e < st->element[1]->elements; e++) {
      const redisReply *ent = st->element[1]->element[e];

      av[k] = prio_arg[p];
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

static void block_read(sl_worker_t *w) {
  char ms[16];

  snprintf(ms, sizeof(ms), "%d", w->block_ms);
  if (redisAsyncCommand(w->blk, on_block, NULL,
                        "XREADGROUP GROUP %s %s COUNT 1 BLOCK %s STREAMS %s %s %s > > >", SL_GROUP, w->id,
                        ms, w->keys.stream[0], w->keys.stream[1], w->keys.stream[2]) == REDIS_OK)
    w->blocking = 1;
}

/* ---- Item progress ---- */

#define PROGRESS_EVERY_MS 500 /* progress goes to Redis at most this often */

static void on_progress_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;
  size_t max = 8;
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
  max += 3 * n;
  av = sl_malloc(max * sizeof(*av));
  al = sl_malloc(max * sizeof(*al));
  pcts = sl_malloc(n * sizeof(*pcts));
  if (av != NULL && al != NULL && pcts != NULL) {
    size_t i = 0;

    av[k++] = "FCALL";
    av[k++] = "sluice_v1_progress";
    av[k++] = "0";
    av[k++] = w->keys.prefix;
    av[k++] = w->keys.queue;
    for (size_t m = 0; m < k; m++)
      al[m] = strlen(av[m]);
    for (sl_job_t *j = w->active; j != NULL && i < n; j = j->next) {
      if (!j->progress_dirty || j->ended)
        continue;
      j->progress_dirty = 0;
      snprintf(pcts[i], sizeof(pcts[i]), "%d", j->progress);
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
    redisAsyncCommandArgv(w->cmd, NULL, NULL, (int)k, av, al);
  }
  sl_free(av);
  sl_free(al);
  sl_free(pcts);
}

void sl__worker_progress_soon(sl_worker_t *w) {
  if (w->timers_up && !w->closed && !uv_is_active((uv_handle_t *)&w->progress))
    uv_timer_start(&w->progress, on_progress_timer, PROGRESS_EVERY_MS, 0);
}

/* ---- Fleet-wide back-off ---- */

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

/* ---- Heartbeat, takeover, release ---- */

static void on_beat_timer(uv_timer_t *t);

/* Stops the attempts of items another worker owns now (fencing). */
static void on_beat(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  w->beating = 0;
  if (r == NULL)
    return;
  if (r->type == REDIS_REPLY_ERROR) {
    if (!recoverable(w, r))
      sl__log_warn("heartbeat failed: %s", r->str);
    return;
  }
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
    const char *eid = r->element[i]->str;
    int aborted = eid[0] == '!'; /* its batch was cancelled with --abort */
    sl_job_t *prev = NULL;

    if (aborted)
      eid++;
    for (sl_job_t *j = w->active; j != NULL; j = j->next) {
      if (!j->ended && strcmp(j->eid, eid) == 0) {
        w->n_fenced++;
        if (aborted)
          sl__log_info("item %s of batch %s: the batch was cancelled with --abort; stopping this attempt", j->idx,
                       j->batch);
        else
          sl__log_warn("item %s of batch %s was taken over by another worker; stopping this attempt", j->idx,
                       j->batch);
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
  }
  sl__worker_kick(w);
}

static void beat(sl_worker_t *w) {
  size_t max = 16 + 2 * ((size_t)w->concurrency + (size_t)w->nbacklog + 16);
  const char **av = sl_malloc(max * sizeof(*av));
  size_t *al = sl_malloc(max * sizeof(*al));
  char wkey[sizeof(w->keys.prefix) + sizeof(w->id) + 4];
  char zkey[sizeof(w->keys.prefix) + 16];
  char ttl[24];
  char info[1024];
  size_t k;

  if (av == NULL || al == NULL)
    goto out;
  snprintf(wkey, sizeof(wkey), "%sw:%s", w->keys.prefix, w->id);
  snprintf(zkey, sizeof(zkey), "%sworkers", w->keys.prefix);
  snprintf(ttl, sizeof(ttl), "%lld", (long long)(w->beat_ms * 3 + 1000));
  {
    char host[64];
    const char *colon = strchr(w->id, ':');
    size_t hl = colon ? (size_t)(colon - w->id) : strlen(w->id);

    snprintf(host, sizeof(host), "%.*s", (int)(hl < 63 ? hl : 63), w->id);
    snprintf(info, sizeof(info),
             "{\"id\":\"%s\",\"host\":\"%s\",\"pid\":%d,\"queue\":\"%s\",\"running\":%d,\"concurrency\":%d,"
             "\"started_at\":%lld,\"succeeded\":%llu,\"failed\":%llu,\"retried\":%llu,\"version\":\"%s\"}",
             w->id, host, (int)getpid(), w->keys.queue, w->running, w->concurrency, (long long)w->started_at,
             (unsigned long long)w->n_ok, (unsigned long long)w->n_failed, (unsigned long long)w->n_retry,
             SL_VERSION_STRING);
  }
  k = (size_t)fcall_head(w, "sluice_v1_beat", "5", av, al);
  av[k] = zkey;
  al[k] = strlen(av[k]);
  k++;
  av[k] = wkey;
  al[k] = strlen(av[k]);
  k++;
  av[k] = SL_GROUP;
  al[k] = strlen(av[k]);
  k++;
  av[k] = w->id;
  al[k] = strlen(av[k]);
  k++;
  av[k] = ttl;
  al[k] = strlen(av[k]);
  k++;
  av[k] = info;
  al[k] = strlen(av[k]);
  k++;
  for (sl_job_t *j = w->active; j != NULL && k + 2 <= max; j = j->next) {
    if (j->ended)
      continue;
    av[k] = prio_arg[j->prio];
    al[k++] = 1;
    av[k] = j->eid;
    al[k] = strlen(j->eid);
    k++;
  }
  for (sl_job_t *j = w->backlog; j != NULL && k + 2 <= max; j = j->next) {
    av[k] = prio_arg[j->prio];
    al[k++] = 1;
    av[k] = j->eid;
    al[k] = strlen(j->eid);
    k++;
  }
  if (redisAsyncCommandArgv(w->cmd, on_beat, NULL, (int)k, av, al) == REDIS_OK)
    w->beating = 1;
out:
  sl_free(av);
  sl_free(al);
}

static void on_beat_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;

  if (w->cmd_up && !w->beating)
    beat(w);
}

static void on_reclaim(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;
  int n;

  (void)priv;
  w->reclaiming = 0;
  w->isolating = 0;
  if (r == NULL)
    return;
  if (r->type == REDIS_REPLY_ERROR) {
    if (!recoverable(w, r))
      sl__log_warn("taking over items failed: %s", r->str);
    return;
  }
  n = take_items(w, r, 1);
  if (n > 0)
    sl__log_info("took over %d items whose worker stopped (visibility %lld ms)", n, (long long)w->visibility_ms);
  sl__worker_kick(w);
}

static void on_reclaim_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;
  int free_slots = w->concurrency - w->running - w->nbacklog;
  char idle[24];
  char maxdel[16];
  char count[16];
  int64_t every = w->visibility_ms / 4;
  int alone_ok;

  if (every > 5000)
    every = 5000;
  if (every < 100)
    every = 100;
  uv_timer_start(&w->reclaim, on_reclaim_timer, (uint64_t)jitter(every), 0);
  if (!w->cmd_up || w->reclaiming || w->stopping || free_slots <= 0)
    return;
  snprintf(idle, sizeof(idle), "%lld", (long long)w->visibility_ms);
  snprintf(maxdel, sizeof(maxdel), "%d", w->max_deliveries);
  snprintf(count, sizeof(count), "%d", free_slots < RECLAIM_MAX ? free_slots : RECLAIM_MAX);
  /* Only a worker that runs nothing (and reads nothing) may take an item on
   * its last allowed delivery: it must run alone. */
  alone_ok = w->running == 0 && w->nbacklog == 0 && !w->fetching && w->alone_job == NULL;
  if (redisAsyncCommand(w->cmd, on_reclaim, NULL, "FCALL sluice_v1_reclaim 3 %s %s %s %s %s %s %s %s %s %s %s",
                        w->keys.stream[0], w->keys.stream[1], w->keys.stream[2], SL_GROUP, w->id, idle, maxdel,
                        w->keys.prefix, w->keys.queue, count, alone_ok ? "1" : "0") == REDIS_OK) {
    w->reclaiming = 1;
    w->isolating = alone_ok;
  }
}

static void on_release(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  w->releasing = 0;
  if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
    sl__log_info("gave back %lld items it had not started", r->integer);
  sl__worker_kick(w);
}

/* Gives back the backlog (taken, not started) so others start it now. */
static void release_backlog(sl_worker_t *w) {
  int n = w->nbacklog < RELEASE_MAX ? w->nbacklog : RELEASE_MAX;
  size_t max = 8 + 2 * (size_t)n;
  const char **av = sl_malloc(max * sizeof(*av));
  size_t *al = sl_malloc(max * sizeof(*al));
  sl_job_t *taken = NULL;
  int k;

  if (av == NULL || al == NULL) {
    sl_free(av);
    sl_free(al);
    return;
  }
  k = fcall_head(w, "sluice_v1_release", "3", av, al);
  push_arg(av, al, &k, SL_GROUP);
  push_arg(av, al, &k, w->id);
  for (int i = 0; i < n; i++) {
    sl_job_t *j = backlog_pop(w);

    av[k] = prio_arg[j->prio];
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

/* ---- Recovery from a Redis that lost our functions or groups ---- */

static void on_reinit(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  if (r != NULL && r->type == REDIS_REPLY_ERROR)
    fatal(w, SL_EREDIS, "cannot set up the queue again: %s", r->str);
  sl__worker_kick(w);
}

/* A reply that says the function library or the consumer group is gone (a
 * Redis restarted without persistence, a FLUSHALL, a deleted stream): load
 * and create them again; the failed call is simply made again later. */
static void on_ready(redisAsyncContext *ac, void *reply, void *priv);

static void on_pause_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;

  w->paused = 0;
  /* Connections whose setup was answered LOADING: ask again. */
  if (w->cmd != NULL && !w->cmd_up)
    redisAsyncCommand(w->cmd, on_ready, NULL, "CLIENT ID");
  if (w->blk != NULL && !w->blk_up)
    redisAsyncCommand(w->blk, on_ready, NULL, "CLIENT ID");
  sl__worker_kick(w);
}

static int recoverable(sl_worker_t *w, const redisReply *r) {
  int missing_lib = sl__script_missing(r->str);

  /* Redis is loading its data after a restart, or busy: wait a moment. */
  if (strncmp(r->str, "LOADING", 7) == 0 || strncmp(r->str, "BUSY", 4) == 0 ||
      strncmp(r->str, "TRYAGAIN", 8) == 0 || strncmp(r->str, "MASTERDOWN", 10) == 0 ||
      strncmp(r->str, "OOM", 3) == 0) {
    if (!w->paused && !w->closed) {
      sl__log_warn("Redis answered %.60s; retrying in a moment", r->str);
      w->paused = 1;
      uv_timer_start(&w->pause, on_pause_timer, (uint64_t)jitter(250), 0);
    }
    return 1;
  }

  if (!missing_lib && strncmp(r->str, "NOGROUP", 7) != 0 && strncmp(r->str, "UNBLOCKED", 9) != 0)
    return 0;
  if (w->cmd == NULL)
    return 1;
  if (missing_lib && !w->load_library) {
    /* Only an operator loads code: wait for `sluice library load`. */
    int64_t now = sl__now_ms();

    if (now - w->lib_warned_at >= 30000) {
      sl__log_warn("the sluice function library is gone from Redis (restarted without persistence?): waiting "
                   "for an operator to run `sluice library load`");
      w->lib_warned_at = now;
    }
    if (!w->paused && !w->closed) {
      w->paused = 1;
      uv_timer_start(&w->pause, on_pause_timer, (uint64_t)jitter(1000), 0);
    }
    return 1;
  }
  sl__log_warn("Redis lost the sluice %s; setting it up again", missing_lib ? "functions" : "consumer group");
  if (missing_lib)
    redisAsyncCommand(w->cmd, on_reinit, NULL, "FUNCTION LOAD REPLACE %b", sl__lua_library,
                      sl__lua_library_len);
  redisAsyncCommand(w->cmd, on_reinit, NULL, "FCALL sluice_v1_init 3 %s %s %s %s", w->keys.stream[0],
                    w->keys.stream[1], w->keys.stream[2], SL_GROUP);
  return 1;
}

/* ---- Connections ---- */

static void close_cb(uv_handle_t *h) {
  (void)h;
}

static void close_all(sl_worker_t *w) {
  if (w->closed)
    return;
  w->closed = 1;
  if (w->timers_up) {
    uv_timer_t *timers[] = {&w->kick,  &w->beat,  &w->reclaim, &w->delayed,
                            &w->reconnect, &w->drain, &w->pause, &w->progress, &w->webhook};

    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
      uv_timer_stop(timers[i]);
      uv_close((uv_handle_t *)timers[i], close_cb);
    }
  }
  for (int i = 0; i < w->nsig; i++)
    uv_close((uv_handle_t *)&w->sig[i], close_cb);
  w->nsig = 0;
  sl__builtins_close(w->builtins);
  sl__httpc_close(w->httpc);
  w->httpc = NULL;
  if (w->cmd_up) {
    /* Leave the fleet registry now rather than when the entry expires. */
    redisAsyncCommand(w->cmd, NULL, NULL, "DEL %sw:%s", w->keys.prefix, w->id);
    redisAsyncCommand(w->cmd, NULL, NULL, "ZREM %sworkers %s", w->keys.prefix, w->id);
  }
  if (w->cmd != NULL)
    redisAsyncDisconnect(w->cmd);
  if (w->blk != NULL)
    redisAsyncDisconnect(w->blk);
  sl__log_info("worker %s stopped: %llu succeeded, %llu failed, %llu retried%s", w->id,
               (unsigned long long)w->n_ok, (unsigned long long)w->n_failed, (unsigned long long)w->n_retry,
               w->n_dup ? " (some completions were already recorded)" : "");
}

static void on_reconnect_timer(uv_timer_t *t) {
  connect_both(t->data);
}

/* Lost Redis (or could not reach it again): try again after a backoff. */
static void lost_redis(sl_worker_t *w, const char *why) {
  char where[300];

  if (w->closed)
    return;
  if (!w->ever_up) {
    sl__url_describe(&w->url, where, sizeof(where));
    fatal(w, SL_ECONN, "cannot connect to Redis at %s: %s", where, why);
    return;
  }
  if (w->down_since == 0) {
    w->down_since = sl__now_ms();
    sl__url_describe(&w->url, where, sizeof(where));
    sl__log_warn("lost the connection to Redis at %s: %s; reconnecting (%d items keep running)", where, why,
                 w->running);
    w->reconnect_delay = RECONNECT_MIN_MS;
  }
  if (!uv_is_active((uv_handle_t *)&w->reconnect)) {
    uv_timer_start(&w->reconnect, on_reconnect_timer, (uint64_t)jitter(w->reconnect_delay), 0);
    w->reconnect_delay = w->reconnect_delay * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : w->reconnect_delay * 2;
  }
}

static void on_connect(const redisAsyncContext *ac, int status) {
  sl_worker_t *w = ac->data;

  if (status == REDIS_OK)
    return;
  /* hiredis frees the context after this callback. */
  if (ac == w->cmd) {
    w->cmd = NULL;
    w->cmd_up = 0;
  } else {
    w->blk = NULL;
    w->blk_up = 0;
  }
  lost_redis(w, ac->errstr);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  sl_worker_t *w = ac->data;

  if (ac == w->cmd) {
    w->cmd = NULL;
    w->cmd_up = 0;
  } else {
    w->blk = NULL;
    w->blk_up = 0;
  }
  w->blocking = ac == w->blk ? 0 : w->blocking;
  if (status != REDIS_OK && !w->closed)
    lost_redis(w, ac->errstr[0] ? ac->errstr : "closed by the server");
  sl__worker_kick(w);
}

static void on_ready(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  if (r == NULL)
    return;
  if (r->type == REDIS_REPLY_ERROR) {
    if (recoverable(w, r))
      return; /* up, but loading its data: on_pause_timer asks again */
    fatal(w, SL_EREDIS, "Redis refused the connection setup: %s", r->str);
    return;
  }
  if (ac == w->cmd) {
    w->cmd_up = 1;
  } else {
    w->blk_up = 1;
    w->blk_client_id = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
  }
  if (w->cmd_up && w->blk_up) {
    w->ever_up = 1;
    if (w->down_since != 0) {
      sl__log_info("reconnected to Redis after %.1f s; sending %d held completions", 
                   (double)(sl__now_ms() - w->down_since) / 1000.0, w->ndone);
      w->down_since = 0;
      w->idle = 0;
    }
    if (!w->beating && !w->closed)
      beat(w); /* re-register and re-assert claims at once */
  }
  sl__worker_kick(w);
}

static void on_setup(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  if (r != NULL && r->type == REDIS_REPLY_ERROR)
    fatal(w, SL_EREDIS, "Redis refused %s: %s", (const char *)priv, r->str);
}

/* A new async connection, or NULL with *why set (the caller decides). */
static redisAsyncContext *aconnect(sl_worker_t *w, char *why, size_t whylen) {
  redisAsyncContext *ac;

  if (w->url.path != NULL)
    ac = redisAsyncConnectUnix(w->url.path);
  else
    ac = redisAsyncConnect(w->url.host, w->url.port);
  if (ac == NULL) {
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  if (ac->err) {
    snprintf(why, whylen, "%s", ac->errstr);
    redisAsyncFree(ac);
    return NULL;
  }
  ac->data = w;
  /* hiredis 0.14.1 opens its sockets without close-on-exec: no exec child
   * may inherit an authenticated Redis connection (the spawn happens on
   * this thread, so setting it now is soon enough). */
  fcntl(ac->c.fd, F_SETFD, FD_CLOEXEC);
  if (sl__uvredis_attach(w->loop, ac) != 0) {
    snprintf(why, whylen, "cannot watch the socket");
    redisAsyncFree(ac);
    return NULL;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  if (w->url.password != NULL && w->url.user != NULL)
    redisAsyncCommand(ac, on_setup, "AUTH", "AUTH %s %s", w->url.user, w->url.password);
  else if (w->url.password != NULL)
    redisAsyncCommand(ac, on_setup, "AUTH", "AUTH %s", w->url.password);
  if (w->url.db != 0)
    redisAsyncCommand(ac, on_setup, "SELECT", "SELECT %d", w->url.db);
  redisAsyncCommand(ac, on_ready, NULL, "CLIENT ID");
  return ac;
}

static void connect_both(sl_worker_t *w) {
  char why[256];

  if (w->closed)
    return;
  if (w->cmd == NULL) {
    w->cmd = aconnect(w, why, sizeof(why));
    if (w->cmd == NULL) {
      lost_redis(w, why);
      return;
    }
  }
  if (w->blk == NULL) {
    w->blk = aconnect(w, why, sizeof(why));
    if (w->blk == NULL)
      lost_redis(w, why);
  }
}

/* ---- Stopping ---- */

static void on_drain_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;
  int n = 0;

  /* Past the drain timeout: give up the running attempts (the handlers are
   * cancelled; the items are given back below or taken over later). */
  for (sl_job_t *j = w->active; j != NULL;) {
    sl_job_t *next = j->next;

    if (!j->ended) {
      n++;
      if (w->nbacklog < RELEASE_MAX) {
        /* Keep its entry id to give it back; the job itself ends here. */
        sl_job_t *copy = sl__job_new(w, j->prio, j->eid, j->batch, j->idx, "1", "{}", 2, NULL, 0);

        if (copy != NULL)
          backlog_push(w, copy);
      }
      sl__job_abort(j, "the worker stopped", 0);
    }
    j = next;
  }
  if (n > 0)
    sl__log_warn("drain timeout (%lld ms) passed: gave up %d running items; they run again elsewhere",
                 (long long)w->drain_ms, n);
  if (!w->cmd_up && w->ndone > 0)
    sl__log_warn("drain timeout passed with Redis unreachable: %d finished items could not be recorded; "
                 "they run again elsewhere (their effects on sluice are counted once)", w->ndone);
  w->drained = 1;
  sl__worker_kick(w);
}

/* ---- The scheduler ---- */

static void pump(sl_worker_t *w) {
  sl_job_t *j;

  if (w->closed)
    return;
  if (w->rc != 0) {
    /* A fatal error: drop what cannot be recorded (it is taken over). */
    while ((j = backlog_pop(w)) != NULL)
      sl__job_free(j);
    while (w->done != NULL) {
      sl_done *d = w->done;

      w->done = d->next;
      done_free(d);
    }
    w->done_tail = NULL;
    w->ndone = 0;
    if (w->running == 0 && w->flushing == 0)
      close_all(w);
    return;
  }
  if (w->stopping) {
    /* Items still waiting for their rate limit have not started: give
     * them back with the backlog. */
    for (sl_job_t *a = w->active; a != NULL;) {
      sl_job_t *next = a->next;

      if (!a->ended && !a->invoked) {
        sl_job_t *copy = sl__job_new(w, a->prio, a->eid, a->batch, a->idx, "1", "{}", 2, NULL, 0);

        if (copy != NULL)
          backlog_push(w, copy);
        sl__job_abort(a, "the worker stopped", 0);
      }
      a = next;
    }
    if (w->nbacklog > 0 && w->cmd_up && !w->releasing)
      release_backlog(w);
  } else {
    while (w->running < w->concurrency && w->alone_job == NULL && w->backlog != NULL) {
      if (w->backlog->alone && w->running > 0)
        break; /* it waits until nothing else runs */
      j = backlog_pop(w);
      w->running++;
      if (j->alone)
        w->alone_job = j;
      sl__job_start(j); /* may finish at once */
    }
  }
  if (w->paused)
    return;
  if (w->ndone > 0 && w->flushing < 2 && w->cmd_up)
    flush(w);
  if (!w->stopping && w->cmd_up && w->blk_up && !w->fetching && !w->blocking && !w->isolating &&
      w->alone_job == NULL && (w->backlog == NULL || !w->backlog->alone)) {
    int free_slots = w->concurrency - w->running - w->nbacklog;

    if (free_slots > 0) {
      if (w->idle)
        block_read(w);
      else
        fetch(w, free_slots);
    }
  }
  if (w->stopping && w->running == 0 && (w->ndone == 0 || (w->drained && !w->cmd_up)) && w->flushing == 0 &&
      !w->fetching && !w->blocking && !w->releasing && (w->nbacklog == 0 || !w->cmd_up))
    close_all(w);
}

/* ---- Public API ---- */

SL_EXTERN int sl_worker_new(const sl_worker_opts *opts, sl_worker_t **out, char *errbuf,
                            size_t errlen) {
  sl_worker_t *w;
  char host[64];
  unsigned char r[2];
  int rc;

  if (opts == NULL || opts->redis_url == NULL) {
    snprintf(errbuf, errlen, "no Redis URL given");
    return SL_EINVAL;
  }
  if (opts->concurrency < 0 || opts->concurrency > 100000) {
    snprintf(errbuf, errlen, "concurrency %d is out of range (1-100000)", opts->concurrency);
    return SL_EINVAL;
  }
  w = sl_calloc(1, sizeof(*w));
  if (w == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return SL_ENOMEM;
  }
  rc = sl__url_parse(opts->redis_url, &w->url, errbuf, errlen);
  if (rc != 0)
    goto fail;
  if (sl__keys_init(&w->keys, opts->queue) != 0) {
    snprintf(errbuf, errlen, "invalid queue name \"%s\" (1-%d characters of [A-Za-z0-9_.:-])",
             opts->queue, SL_NAME_MAX);
    rc = SL_EINVAL;
    goto fail;
  }
  w->url_str = sl_strdup(opts->redis_url);
  if (w->url_str == NULL) {
    rc = SL_ENOMEM;
    snprintf(errbuf, errlen, "out of memory");
    goto fail;
  }
  w->concurrency = opts->concurrency > 0 ? opts->concurrency : 10;
  w->load_library = opts->load_library != 0;
  w->block_ms = opts->block_ms > 0 ? opts->block_ms : 1000;
  if (opts->weights != NULL) {
    unsigned a;
    unsigned b;
    unsigned c;
    char tail;

    if (sscanf(opts->weights, "%u,%u,%u%c", &a, &b, &c, &tail) != 3 || a + b + c == 0 || a > 1000 || b > 1000 ||
        c > 1000) {
      snprintf(errbuf, errlen, "weights \"%.40s\" must be three numbers like 6,3,1 (high, normal, low)",
               opts->weights);
      rc = SL_EINVAL;
      goto fail;
    }
    snprintf(w->weights, sizeof(w->weights), "%u,%u,%u", a, b, c);
  }
  w->visibility_ms = opts->visibility_ms > 0 ? opts->visibility_ms : 30000;
  w->max_deliveries = opts->max_deliveries > 0 ? opts->max_deliveries : 5;
  w->drain_ms = opts->drain_timeout_ms > 0 ? opts->drain_timeout_ms : 30000;
  if (w->visibility_ms < 100 || w->visibility_ms > 86400000 || w->max_deliveries < 2 || w->max_deliveries > 1000) {
    snprintf(errbuf, errlen, "visibility %lld ms or max deliveries %d out of range (100 ms-24 h, 2-1000)",
             (long long)w->visibility_ms, w->max_deliveries);
    rc = SL_EINVAL;
    goto fail;
  }
  rc = sl__webhook_init(w, errbuf, errlen);
  if (rc != 0)
    goto fail;
  /* Three beats per visibility timeout: two may be lost before an item of
   * a live worker looks abandoned. */
  w->beat_ms = w->visibility_ms / 3;
  if (w->beat_ms > 10000)
    w->beat_ms = 10000;
  if (gethostname(host, sizeof(host)) != 0)
    snprintf(host, sizeof(host), "host");
  host[sizeof(host) - 1] = '\0';
  if (sl__random_bytes(r, sizeof(r)) != 0)
    r[0] = r[1] = 0;
  snprintf(w->id, sizeof(w->id), "%s:%d:%02x%02x", host, (int)getpid(), r[0], r[1]);
  if (opts->loop != NULL) {
    w->loop = opts->loop;
  } else {
    if (uv_loop_init(&w->own_loop) != 0) {
      rc = SL_ENOMEM;
      snprintf(errbuf, errlen, "cannot create an event loop");
      goto fail;
    }
    w->loop = &w->own_loop;
    w->owns_loop = 1;
  }
  sl__log_quiet(opts->quiet);
  rc = sl__httpc_new(opts->http_allow, opts->http_version, w->concurrency, &w->httpc, errbuf, errlen);
  if (rc != 0)
    goto fail;
  {
    sl_handler_env env = {w, opts, w->concurrency, w->httpc};

    rc = sl__builtins_open(&env, &w->builtins, errbuf, errlen);
    if (rc != 0)
      goto fail;
  }
  *out = w;
  return 0;
fail:
  sl__builtins_free(w->builtins);
  sl__httpc_close(w->httpc);
  sl__webhook_free(w);
  if (w->owns_loop)
    uv_loop_close(&w->own_loop);
  sl__url_free(&w->url);
  sl_free(w->url_str);
  sl_free(w);
  return rc;
}

SL_EXTERN int sl_worker_exec(sl_worker_t *w, const char *mapping, char *errbuf, size_t errlen) {
  return sl__builtins_exec_map(w->builtins, mapping, errbuf, errlen);
}

SL_EXTERN int sl_worker_grant(sl_worker_t *w, const char *spec, char *errbuf, size_t errlen) {
  return sl__builtins_grant(w->builtins, spec, errbuf, errlen);
}

SL_EXTERN int sl_worker_exec_env(sl_worker_t *w, const char *name, char *errbuf, size_t errlen) {
  return sl__builtins_exec_env(w->builtins, name, errbuf, errlen);
}

SL_EXTERN int sl_worker_register(sl_worker_t *w, const char *type, sl_handler_start_fn start, void *ud) {
  int i;

  if (type == NULL || start == NULL || !sl__name_valid(type, strlen(type)))
    return SL_EINVAL;
  for (i = 0; i < w->nhandlers; i++) {
    if (strcmp(w->handlers[i].type, type) == 0)
      break;
  }
  if (i == w->nhandlers) {
    if (w->nhandlers == SL_WORKER_MAX_HANDLERS)
      return SL_ETOOBIG;
    w->nhandlers++;
  }
  snprintf(w->handlers[i].type, sizeof(w->handlers[i].type), "%s", type);
  w->handlers[i].start = start;
  w->handlers[i].ud = ud;
  return 0;
}

static void on_signal(uv_signal_t *s, int signum) {
  sl_worker_t *w = s->data;

  if (w->stopping) {
    sl__log_warn("second signal: exiting now; unfinished items are taken over by other workers");
    sl__builtins_kill_now(w->builtins); /* no exec child may run on while its item is taken over */
    _exit(1);
  }
  sl__log_info("signal %d: finishing %d running items, then stopping", signum, w->running + w->nbacklog);
  sl_worker_stop(w);
}

SL_EXTERN int sl_worker_handle_signals(sl_worker_t *w) {
  static const int sigs[2] = {SIGINT, SIGTERM};

  for (int i = w->nsig; i < 2; i++) {
    if (uv_signal_init(w->loop, &w->sig[i]) != 0)
      return SL_EIO;
    w->sig[i].data = w;
    uv_signal_start(&w->sig[i], on_signal, sigs[i]);
    uv_unref((uv_handle_t *)&w->sig[i]);
    w->nsig = i + 1;
  }
  return 0;
}

/* Creates the groups and loads the functions before the loop runs (a
 * blocking call, but not on a running loop). */
static int bootstrap(sl_worker_t *w) {
  redisContext *rc = NULL;
  redisReply *r;
  int code;

  code = sl__redis_connect(&w->url, SL_CONNECT_TIMEOUT_MS, &rc, w->errstr, sizeof(w->errstr));
  if (code != 0)
    return code;
  /* Only an operator loads code: --load-library, else the loaded library
   * must be this build's. */
  code = w->load_library ? sl__script_load(rc, w->errstr, sizeof(w->errstr)) : 0;
  if (code == 0)
    code = sl__script_ensure(rc, w->errstr, sizeof(w->errstr));
  if (code == 0 && w->load_library)
    sl__log_info("loaded the function library v%s", sl__library_version());
  if (code == 0) {
    r = redisCommand(rc, "FCALL sluice_v1_init 3 %s %s %s %s", w->keys.stream[0], w->keys.stream[1],
                     w->keys.stream[2], SL_GROUP);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
      snprintf(w->errstr, sizeof(w->errstr), "cannot set up queue %s: %s", w->keys.queue,
               r ? r->str : rc->errstr);
      code = r ? SL_EREDIS : SL_ECONN;
    }
    if (r != NULL)
      freeReplyObject(r);
  }
  redisFree(rc);
  return code;
}

SL_EXTERN int sl_worker_run(sl_worker_t *w) {
  char served[256];
  size_t off = 0;
  int rc;

  signal(SIGPIPE, SIG_IGN); /* hiredis and curl write to sockets that may close */
  rc = bootstrap(w);
  if (rc != 0) {
    sl__log_error("%s", w->errstr);
    return rc;
  }
  {
    uv_timer_t *timers[] = {&w->kick,  &w->beat,  &w->reclaim, &w->delayed,
                            &w->reconnect, &w->drain, &w->pause, &w->progress, &w->webhook};

    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
      uv_timer_init(w->loop, timers[i]);
      timers[i]->data = w;
    }
    w->timers_up = 1;
  }
  w->started_at = sl__now_ms();
  if (sl__httpc_start(w->httpc, w->loop) != 0) {
    snprintf(w->errstr, sizeof(w->errstr), "cannot start the HTTP client: out of memory");
    sl__log_error("%s", w->errstr);
    return SL_ENOMEM;
  }
  rc = sl__builtins_start(w->builtins, w->loop, w->errstr, sizeof(w->errstr));
  if (rc != 0) {
    sl__log_error("%s", w->errstr);
    return rc;
  }
  uv_timer_start(&w->beat, on_beat_timer, (uint64_t)w->beat_ms, (uint64_t)w->beat_ms);
  sl__webhook_start(w);
  uv_timer_start(&w->reclaim, on_reclaim_timer, (uint64_t)jitter(w->visibility_ms / 4 < 5000 ? w->visibility_ms / 4 : 5000), 0);
  connect_both(w);
  for (int i = 0; i < w->nhandlers; i++)
    off += (size_t)snprintf(served + off, sizeof(served) - off, "%s%s", i ? ", " : "", w->handlers[i].type);
  sl__log_info("worker %s serving queue %s (types: %s), concurrency %d, visibility %lld ms", w->id,
               w->keys.queue, served, w->concurrency, (long long)w->visibility_ms);
  sl__worker_kick(w);
  if (!w->owns_loop)
    return w->rc;
  uv_run(w->loop, UV_RUN_DEFAULT);
  return w->rc;
}

SL_EXTERN void sl_worker_stop(sl_worker_t *w) {
  if (!w->stopping && w->blocking && w->cmd_up && w->blk_client_id > 0) {
    /* End the idle blocking read now instead of after block_ms: it returns
     * as if it timed out, so nothing it might have taken is lost. */
    redisAsyncCommand(w->cmd, NULL, NULL, "CLIENT UNBLOCK %lld", w->blk_client_id);
  }
  if (!w->stopping && w->timers_up && !w->closed)
    uv_timer_start(&w->drain, on_drain_timer, (uint64_t)w->drain_ms, 0);
  w->stopping = 1;
  sl__worker_kick(w);
}

SL_EXTERN const char *sl_worker_id(const sl_worker_t *w) {
  return w->id;
}

SL_EXTERN const char *sl_worker_errstr(const sl_worker_t *w) {
  return w->errstr;
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

SL_EXTERN void sl_worker_free(sl_worker_t *w) {
  sl_job_t *j;

  if (w == NULL)
    return;
  /* Attempts still running (the loop was left early): give them up, so
   * their handlers stop what they started. */
  for (j = w->active; j != NULL;) {
    sl_job_t *next = j->next;

    if (!j->ended)
      sl__job_abort(j, "the worker stopped", 0);
    j = next;
  }
  if (w->owns_loop && !w->closed && w->timers_up)
    close_all(w); /* run() was called but the loop was left early */
  /* exec children still running are killed and waited for here */
  sl__builtins_free(w->builtins);
  w->builtins = NULL;
  if (w->owns_loop) {
    /* Handles of a run that never started (signals), then their callbacks. */
    uv_walk(w->loop, close_any, NULL);
    uv_run(w->loop, UV_RUN_DEFAULT);
    uv_loop_close(w->loop);
  }
  sl__httpc_close(w->httpc); /* run() was never called */
  while ((j = backlog_pop(w)) != NULL)
    sl__job_free(j);
  while (w->done != NULL) {
    sl_done *d = w->done;

    w->done = d->next;
    done_free(d);
  }
  sl__webhook_free(w);
  sl__url_free(&w->url);
  sl_free(w->url_str);
  sl_free(w);
}
