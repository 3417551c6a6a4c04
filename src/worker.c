/*
 * The worker: a libuv loop that takes items from a queue's streams, runs
 * them through handlers and records their outcome.
 *
 * Two Redis connections, both hiredis async on the loop:
 *   cmd  scripts: sluice_v1_fetch (up to `free slots` items in strict
 *        priority order), sluice_v1_accept, sluice_v1_complete;
 *   blk  only the blocking XREADGROUP, which would hold up every command
 *        pipelined behind it.
 *
 * pump() is the whole scheduler, run on the loop turn after anything changed
 * (sl__worker_kick): start backlog items while slots are free; write the
 * finished ones, up to SL_WORKER_FLUSH_MAX per sluice_v1_complete call; and
 * when slots are free and no read is in flight, fetch. When a fetch comes back
 * short the queue is drained, so the next read is a blocking XREADGROUP
 * (BLOCK block_ms, COUNT 1 per stream): an idle worker sends one command per
 * block_ms instead of polling. What it returns goes through
 * sluice_v1_accept (cancelled batches) and then fetching resumes.
 *
 * Completions are batched naturally: while one complete call is in flight,
 * finished items accumulate and go in the next call. With many short items a
 * call carries hundreds of items, which is where the throughput comes from.
 *
 * Stopping (sl_worker_stop, a signal): no new reads; the backlog and running
 * items finish, their completions are written, then the connections close
 * and the loop runs out of handles. A lost connection is fatal for now: the
 * worker logs why, lets running items end without recording them (they stay
 * pending in Redis) and returns SL_ECONN.
 */
#include "worker.h"

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
#include "log.h"
#include "uvredis.h"

#define FETCH_MAX 1000 /* items per fetch call */

static void pump(sl_worker_t *w);
static void fatal(sl_worker_t *w, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

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
  if (!w->closed && !uv_is_active((uv_handle_t *)&w->kick))
    uv_timer_start(&w->kick, on_kick, 0, 0);
}

static void done_free(sl_done *d) {
  sl_free(d->eid);
  sl_free(d->batch);
  sl_free(d->idx);
  sl_free(d->line);
  sl_free(d);
}

void sl__worker_finish(sl_worker_t *w, sl_job_t *j, char outcome, char *line, size_t len) {
  sl_done *d = sl_calloc(1, sizeof(*d));

  w->running--;
  if (outcome == 's')
    w->n_ok++;
  else
    w->n_failed++;
  if (d == NULL || line == NULL) {
    /* Out of memory: the item stays pending in Redis and is not lost. */
    sl__log_error("out of memory recording item %s of batch %s", j->idx, j->batch);
    sl_free(d);
    sl_free(line);
    sl__job_free(j);
    sl__worker_kick(w);
    return;
  }
  d->prio = j->prio;
  d->eid = j->eid;
  d->batch = j->batch;
  d->idx = j->idx;
  j->eid = j->batch = j->idx = NULL;
  d->outcome = outcome;
  d->line = line;
  d->linelen = len;
  sl__job_free(j);
  if (w->done_tail)
    w->done_tail->next = d;
  else
    w->done = d;
  w->done_tail = d;
  w->ndone++;
  sl__worker_kick(w);
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
  w->nbacklog--;
  return j;
}

/* Adds the items of a fetch/accept reply (flat, 6 per item) to the backlog. */
static int take_items(sl_worker_t *w, const redisReply *r) {
  int n = 0;

  if (r->type != REDIS_REPLY_ARRAY)
    return 0;
  for (size_t i = 0; i + 5 < r->elements; i += 6) {
    redisReply *const *e = r->element + i;
    int prio = (int)e[0]->integer - 1;
    sl_job_t *j;

    if (e[0]->type != REDIS_REPLY_INTEGER || prio < 0 || prio > 2 || e[1]->type != REDIS_REPLY_STRING ||
        e[2]->type != REDIS_REPLY_STRING || e[3]->type != REDIS_REPLY_STRING ||
        e[5]->type != REDIS_REPLY_STRING) {
      sl__log_error("malformed entry in a fetch reply; skipped (it stays pending)");
      continue;
    }
    j = sl__job_new(w, prio, e[1]->str, e[2]->str, e[3]->str,
                    e[4]->type == REDIS_REPLY_STRING ? e[4]->str : "1", e[5]->str, e[5]->len);
    if (j == NULL) {
      sl__log_error("out of memory taking item %s; it stays pending", e[1]->str);
      continue;
    }
    backlog_push(w, j);
    n++;
  }
  return n;
}

/* ---- Redis calls ---- */

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

static int recoverable(sl_worker_t *w, const redisReply *r);

static void on_complete(redisAsyncContext *ac, void *reply, void *priv) {
  flush_ctx *f = priv;
  sl_worker_t *w = f->w;
  redisReply *r = reply;
  sl_done *d;

  (void)ac;
  w->flushing--;
  if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
    if (r != NULL && recoverable(w, r)) {
      done_requeue(w, f->head, f->n);
      f->head = NULL;
    } else if (r != NULL) {
      fatal(w, SL_EREDIS, "recording %d finished items failed: %s", f->n,
            r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
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
  static const char *const prio[3] = {"1", "2", "3"};
  int n = w->ndone < SL_WORKER_FLUSH_MAX ? w->ndone : SL_WORKER_FLUSH_MAX;
  int argc = 9 + 6 * n;
  const char **av = sl_malloc((size_t)argc * sizeof(*av));
  size_t *al = sl_malloc((size_t)argc * sizeof(*al));
  flush_ctx *f = sl_calloc(1, sizeof(*f));
  sl_done *d;
  sl_done *last = NULL;
  int k = 0;

  if (av == NULL || al == NULL || f == NULL)
    goto out; /* retried on the next pump */
  av[k++] = "FCALL";
  av[k++] = "sluice_v1_complete";
  av[k++] = "3";
  av[k++] = w->keys.stream[0];
  av[k++] = w->keys.stream[1];
  av[k++] = w->keys.stream[2];
  av[k++] = SL_GROUP;
  av[k++] = w->keys.prefix;
  av[k++] = w->keys.queue;
  for (int i = 0; i < k; i++)
    al[i] = strlen(av[i]);
  d = w->done;
  for (int i = 0; i < n; i++, d = d->next) {
    av[k] = prio[d->prio];
    al[k++] = 1;
    av[k] = d->eid;
    al[k++] = strlen(d->eid);
    av[k] = d->batch;
    al[k++] = strlen(d->batch);
    av[k] = d->idx;
    al[k++] = strlen(d->idx);
    av[k] = d->outcome == 's' ? "s" : "f";
    al[k++] = 1;
    av[k] = d->line;
    al[k++] = d->linelen;
    last = d;
  }
  if (redisAsyncCommandArgv(w->cmd, on_complete, f, argc, av, al) != REDIS_OK)
    goto out;
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
  sl_free(f);
}

static void on_fetch(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;
  long want = (long)(intptr_t)priv;

  w->fetching = 0;
  if (r == NULL)
    return; /* connection gone; on_disconnect says why */
  if (r->type == REDIS_REPLY_ERROR) {
    if (!recoverable(w, r))
      fatal(w, SL_EREDIS, "fetching items failed: %s", r->str);
    return;
  }
  /* A short answer means the streams had no more new entries. */
  w->idle = take_items(w, r) < want;
  sl__worker_kick(w);
}

static void fetch(sl_worker_t *w, int want) {
  char count[16];

  if (want > FETCH_MAX)
    want = FETCH_MAX;
  snprintf(count, sizeof(count), "%d", want);
  if (redisAsyncCommand(w->cmd, on_fetch, (void *)(intptr_t)want,
                        "FCALL sluice_v1_fetch 3 %s %s %s %s %s %s %s %s", w->keys.stream[0],
                        w->keys.stream[1], w->keys.stream[2], SL_GROUP, w->id, count, w->keys.prefix,
                        w->keys.queue) == REDIS_OK)
    w->fetching = 1;
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
  take_items(w, r);
  sl__worker_kick(w);
}

static const char *field(const redisReply *kv, const char *name) {
  for (size_t i = 0; i + 1 < kv->elements; i += 2) {
    if (kv->element[i]->type == REDIS_REPLY_STRING && strcmp(kv->element[i]->str, name) == 0 &&
        kv->element[i + 1]->type == REDIS_REPLY_STRING)
      return kv->element[i + 1]->str;
  }
  return NULL;
}

static void on_block(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;
  const char **av = NULL;
  size_t *al = NULL;
  size_t max = 9;
  int k = 0;

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
    sl__worker_kick(w); /* BLOCK timed out: read again */
    return;
  }
  /* [[stream, [[id, [f, v, ...]], ...]], ...] -> one sluice_v1_accept call. */
  for (size_t s = 0; s < r->elements; s++)
    max += 6 * r->element[s]->element[1]->elements;
  av = sl_malloc(max * sizeof(*av));
  al = sl_malloc(max * sizeof(*al));
  if (av == NULL || al == NULL)
    goto out; /* the entries stay pending */
  av[k++] = "FCALL";
  av[k++] = "sluice_v1_accept";
  av[k++] = "3";
  av[k++] = w->keys.stream[0];
  av[k++] = w->keys.stream[1];
  av[k++] = w->keys.stream[2];
  av[k++] = SL_GROUP;
  av[k++] = w->keys.prefix;
  av[k++] = w->keys.queue;
  for (int i = 0; i < k; i++)
    al[i] = strlen(av[i]);
  for (size_t s = 0; s < r->elements; s++) {
    const redisReply *st = r->element[s];
    static const char *const prio[3] = {"1", "2", "3"};
    int p = -1;

    for (int i = 0; i < 3; i++) {
      if (strcmp(st->element[0]->str, w->keys.stream[i]) == 0)
        p = i;
    }
    for (size_t e = 0; p >= 0 && e < st->element[1]->elements; e++) {
      const redisReply *ent = st->element[1]->element[e];
      const char *b;
      const char *ix;
      const char *a;
      const char *d;

      if (ent->elements < 2 || ent->element[1]->type != REDIS_REPLY_ARRAY)
        continue;
      b = field(ent->element[1], "b");
      ix = field(ent->element[1], "i");
      a = field(ent->element[1], "a");
      d = field(ent->element[1], "d");
      if (b == NULL || ix == NULL || d == NULL)
        continue;
      av[k] = prio[p];
      al[k++] = 1;
      av[k] = ent->element[0]->str;
      al[k++] = ent->element[0]->len;
      av[k] = b;
      al[k++] = strlen(b);
      av[k] = ix;
      al[k++] = strlen(ix);
      av[k] = a ? a : "1";
      al[k] = strlen(av[k]);
      k++;
      av[k] = d;
      al[k++] = strlen(d);
    }
  }
  if (k > 9 && redisAsyncCommandArgv(w->cmd, on_accept, NULL, k, av, al) == REDIS_OK)
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
 * Redis restarted without persistence, a FLUSHALL): load and create them
 * again, asynchronously; the failed call is simply made again later. */
static int recoverable(sl_worker_t *w, const redisReply *r) {
  int missing_lib = sl__script_missing(r->str);

  /* UNBLOCKED: a stream we were blocked on was deleted (FLUSHALL). */
  if (!missing_lib && strncmp(r->str, "NOGROUP", 7) != 0 && strncmp(r->str, "UNBLOCKED", 9) != 0)
    return 0;
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
  uv_timer_stop(&w->kick);
  uv_close((uv_handle_t *)&w->kick, close_cb);
  for (int i = 0; i < w->nsig; i++)
    uv_close((uv_handle_t *)&w->sig[i], close_cb);
  w->nsig = 0;
  if (w->cmd != NULL)
    redisAsyncDisconnect(w->cmd);
  if (w->blk != NULL)
    redisAsyncDisconnect(w->blk);
  sl__log_info("worker %s stopped: %llu succeeded, %llu failed%s", w->id, (unsigned long long)w->n_ok,
               (unsigned long long)w->n_failed, w->n_dup ? " (some completions were already recorded)" : "");
}

static void on_connect(const redisAsyncContext *ac, int status) {
  sl_worker_t *w = ac->data;
  char where[300];

  if (status == REDIS_OK)
    return;
  /* hiredis frees the context after this callback. */
  if (ac == w->cmd)
    w->cmd = NULL;
  else
    w->blk = NULL;
  sl__url_describe(&w->url, where, sizeof(where));
  fatal(w, SL_ECONN, "cannot connect to Redis at %s: %s", where, ac->errstr);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  sl_worker_t *w = ac->data;
  char where[300];

  if (ac == w->cmd) {
    w->cmd = NULL;
    w->cmd_up = 0;
  } else {
    w->blk = NULL;
    w->blk_up = 0;
  }
  if (status != REDIS_OK && !w->closed) {
    sl__url_describe(&w->url, where, sizeof(where));
    fatal(w, SL_ECONN, "lost the connection to Redis at %s: %s", where,
          ac->errstr[0] ? ac->errstr : "closed by the server");
  }
}

static void on_ready(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  if (r == NULL)
    return;
  if (r->type == REDIS_REPLY_ERROR) {
    fatal(w, SL_EREDIS, "Redis refused the connection setup: %s", r->str);
    return;
  }
  if (ac == w->cmd) {
    w->cmd_up = 1;
  } else {
    w->blk_up = 1;
    w->blk_client_id = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
  }
  sl__worker_kick(w);
}

static void on_setup(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  if (r != NULL && r->type == REDIS_REPLY_ERROR)
    fatal(w, SL_EREDIS, "Redis refused %s: %s", (const char *)priv, r->str);
}

static redisAsyncContext *aconnect(sl_worker_t *w) {
  redisAsyncContext *ac;
  char where[300];

  sl__url_describe(&w->url, where, sizeof(where));
  if (w->url.path != NULL)
    ac = redisAsyncConnectUnix(w->url.path);
  else
    ac = redisAsyncConnect(w->url.host, w->url.port);
  if (ac == NULL) {
    fatal(w, SL_ENOMEM, "out of memory connecting to Redis");
    return NULL;
  }
  if (ac->err) {
    fatal(w, SL_ECONN, "cannot connect to Redis at %s: %s", where, ac->errstr);
    redisAsyncFree(ac);
    return NULL;
  }
  ac->data = w;
  if (sl__uvredis_attach(w->loop, ac) != 0) {
    fatal(w, SL_ECONN, "cannot watch the Redis socket of %s", where);
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

/* ---- The scheduler ---- */

static void pump(sl_worker_t *w) {
  sl_job_t *j;

  if (w->closed)
    return;
  while (w->running < w->concurrency && w->rc == 0 && (j = backlog_pop(w)) != NULL) {
    w->running++;
    sl__job_start(j); /* may finish at once */
  }
  if (w->rc != 0) {
    /* Redis is gone: drop what cannot be recorded (it stays pending there). */
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
  if (w->ndone > 0 && w->flushing < 2 && w->cmd_up)
    flush(w);
  if (!w->stopping && w->cmd_up && w->blk_up && !w->fetching && !w->blocking) {
    int free_slots = w->concurrency - w->running - w->nbacklog;

    if (free_slots > 0) {
      if (w->idle)
        block_read(w);
      else
        fetch(w, free_slots);
    }
  }
  if (w->stopping && w->running == 0 && w->nbacklog == 0 && w->ndone == 0 && w->flushing == 0 &&
      !w->fetching && !w->blocking)
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
  w->block_ms = opts->block_ms > 0 ? opts->block_ms : 2000;
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
  sl_worker_register(w, "noop", sl__handler_noop, NULL);
  sl_worker_register(w, "sleep", sl__handler_sleep, NULL);
  *out = w;
  return 0;
fail:
  sl__url_free(&w->url);
  sl_free(w->url_str);
  sl_free(w);
  return rc;
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
  code = sl__script_ensure(rc, w->errstr, sizeof(w->errstr));
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
  uv_timer_init(w->loop, &w->kick);
  w->kick.data = w;
  w->cmd = aconnect(w);
  if (w->cmd != NULL)
    w->blk = aconnect(w);
  for (int i = 0; i < w->nhandlers; i++)
    off += (size_t)snprintf(served + off, sizeof(served) - off, "%s%s", i ? ", " : "", w->handlers[i].type);
  sl__log_info("worker %s serving queue %s (types: %s), concurrency %d", w->id, w->keys.queue, served,
               w->concurrency);
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
  if (w == NULL)
    return;
  if (w->owns_loop) {
    if (!w->closed && w->kick.data == w)
      close_all(w); /* run() was called but the loop was left early */
    /* Handles of a run that never started (signals), then their callbacks. */
    uv_walk(w->loop, close_any, NULL);
    uv_run(w->loop, UV_RUN_DEFAULT);
    uv_loop_close(w->loop);
  }
  sl__url_free(&w->url);
  sl_free(w->url_str);
  sl_free(w);
}
