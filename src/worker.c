/*
 * The worker's lifecycle: options, start, signals, stop and drain, close.
 *
 * A worker takes the items of one queue and runs them through handlers on a
 * libuv loop. Its rooms, each owning part of the state in worker.h:
 *
 *   sched.c    slots, the backlog, the run-alone rule; pump()
 *   intake.c   fetch, blocking read, accept, reclaim -> jobs
 *   outcome.c  the done queue and sluice_v1_complete; progress; penalize
 *   lease.c    heartbeats, fencing, abort, release
 *   aredis.c   the two Redis connections, reconnects, recoverable replies
 *   job.c      one attempt (the job API handlers use)
 *   webhook.c  completion webhooks
 *   builtins.c the built-in handlers (dev, http, exec) behind one table
 *
 * Start (sl_worker_run): one blocking connection checks the function
 * library (or loads it with --load-library) and creates the consumer group,
 * before the loop runs; then the timers, the HTTP client and the handlers
 * start, both connections open, and pump() takes over.
 *
 * Stopping (sl_worker_stop, SIGINT/SIGTERM): no new reads; items taken but
 * not started are given back at once (lease.c); running items finish within
 * the drain timeout (timer `drain`) and their outcomes are written; past it
 * they are given up (cancelled and given back); then the connections close
 * and the loop runs out of handles. A second signal exits at once, after
 * killing what the handlers started outside the process (exec children).
 * A fatal error stops the worker the same way, with its first cause kept.
 */

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker.h"

#include "alloc.h"
#include "builtins.h"
#include "conn.h"
#include "httpc.h"
#include "id.h"
#include "item.h"
#include "job.h"
#include "log.h"
#include "outcome.h"
#include "webhook.h"

#define RELEASE_MAX 500 /* jobs kept to give back after the drain timeout (the release call takes as many) */

const char *const sl__prio_arg[3] = {"1", "2", "3"};

void sl__worker_fatal(sl_worker_t *w, int code, const char *fmt, ...) {
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

int64_t sl__jitter(int64_t ms) {
  uint32_t r;

  if (sl__random_bytes(&r, sizeof(r)) != 0)
    return ms;
  /* +-20% */
  return ms * 8 / 10 + (int64_t)((double)r / 4294967296.0 * (double)ms * 4 / 10);
}

/* Appends "FCALL name 3 s1 s2 s3" to av/al; returns the count (6). */
int sl__fcall_head(const sl_worker_t *w, const char *name, const char *nkeys, const char **av, size_t *al) {
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

/* Appends one C-string argument to an argv being built. */
void sl__push_arg(const char **av, size_t *al, int *k, const char *s) {
  av[*k] = s;
  al[*k] = strlen(s);
  (*k)++;
}

static void close_cb(uv_handle_t *h) {
  (void)h;
}

void sl__worker_close_all(sl_worker_t *w) {
  if (w->closed)
    return;
  w->closed = 1;
  if (w->timers_up) {
    /* not the watchdog: it outlives this until the connections are gone */
    uv_timer_t *timers[] = {&w->kick,  &w->beat,  &w->reclaim,  &w->delayed, &w->reconnect,
                            &w->drain, &w->pause, &w->progress, &w->webhook, &w->hold, &w->stall,
                            &w->repair};

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
  sl__aredis_close(w);
  sl__log_info("worker %s stopped: %llu succeeded, %llu failed, %llu retried, %llu given back, %llu fenced; "
               "longest loop stall %llu ms%s", w->id, (unsigned long long)w->n_ok, (unsigned long long)w->n_failed,
               (unsigned long long)w->n_retry, (unsigned long long)w->n_given, (unsigned long long)w->n_fenced,
               (unsigned long long)w->max_stall_ms, w->n_dup ? " (some completions were already recorded)" : "");
}

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
          sl__sched_push(w, copy);
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

SL_EXTERN int sl_worker_new(const sl_worker_opts *opts, sl_worker_t **out, char *errbuf,
                            size_t errlen) {
  sl_worker_t *w;
  char host[64];
  unsigned char r[2];
  int rc;

  sl__alloc_init(); /* cJSON allocates through sl_malloc from here on */
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
  /* Refused rather than clamped: the operator sized the fleet by it. */
  rc = sl__fd_budget(w->concurrency, &w->fds, errbuf, errlen);
  if (rc != 0)
    goto fail;
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
  if (opts->http_mock != NULL && opts->http_mock[0] != '\0') {
    /* for the start's warning and the fleet registry; the handler has read the file */
    char *abs = realpath(opts->http_mock, NULL);

    w->http_mock = sl_strdup(abs != NULL ? abs : opts->http_mock);
    free(abs); /* realpath's own malloc */
    if (w->http_mock == NULL) {
      rc = SL_ENOMEM;
      snprintf(errbuf, errlen, "out of memory");
      goto fail;
    }
  }
  *out = w;
  return 0;
fail:
  sl_free(w->http_mock);
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
    uv_timer_t *timers[] = {&w->kick,  &w->beat,  &w->reclaim,  &w->delayed, &w->reconnect, &w->drain,
                            &w->pause, &w->progress, &w->webhook, &w->hold,    &w->watchdog,  &w->stall,
                            &w->repair};

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
  sl__lease_start(w);
  sl__webhook_start(w);
  sl__intake_start(w);
  sl__selfrepair_start(w);
  sl__aredis_start(w);
  for (int i = 0; i < w->nhandlers; i++)
    off += (size_t)snprintf(served + off, sizeof(served) - off, "%s%s", i ? ", " : "", w->handlers[i].type);
  sl__log_info("worker %s serving queue %s (types: %s), concurrency %d, visibility %lld ms", w->id,
               w->keys.queue, served, w->concurrency, (long long)w->visibility_ms);
  if (w->http_mock != NULL)
    sl__log_warn("mocking http items from %s (--http-mock): no request is sent, no secret is resolved and "
                 "--http-allow is not applied; results say \"mock\":true", w->http_mock);
  if (w->fds.was != w->fds.limit)
    sl__log_info("raised the file descriptor limit (ulimit -n) from %ld to %ld; --concurrency %d needs about %ld",
                 w->fds.was, w->fds.limit, w->concurrency, w->fds.need);
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
    sl__worker_close_all(w); /* run() was called but the loop was left early */
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
  while ((j = sl__sched_pop(w)) != NULL)
    sl__job_free(j);
  while ((j = w->given) != NULL) {
    w->given = j->next;
    sl__job_free(j);
  }
  sl__outcome_drop_all(w);
  sl__webhook_free(w);
  sl__url_free(&w->url);
  sl_free(w->url_str);
  sl_free(w->http_mock);
  sl_free(w);
}
