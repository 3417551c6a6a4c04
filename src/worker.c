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
#include "cluster.h"
#include "conn.h"
#include "crew.h"
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
  if (w->crew->rc == 0) {
    /* The process stops: its other queues drain and close. */
    w->crew->rc = code;
    snprintf(w->crew->errstr, sizeof(w->crew->errstr), "%s", w->errstr);
    sl_worker_stop(w->crew->m[0]);
  }
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

/* What the queues of the process share closes with the last of them: the
 * signals, the handlers (exec children) and the HTTP client. */
static void close_shared(sl_crew *c) {
  sl_worker_t *lead = c->m[0];

  for (int i = 0; i < lead->nsig; i++)
    uv_close((uv_handle_t *)&lead->sig[i], close_cb);
  lead->nsig = 0;
  sl__builtins_close(lead->builtins);
  sl__httpc_close(lead->httpc);
  for (int i = 0; i < c->n; i++)
    c->m[i]->httpc = NULL;
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
  if (--w->crew->open == 0)
    close_shared(w->crew);
  if (w->cmd_up) {
    /* Leave the fleet registry now rather than when the entry expires. */
    redisAsyncCommand(w->cmd, NULL, NULL, "DEL %sw:%s", w->keys.prefix, w->id);
    redisAsyncCommand(w->cmd, NULL, NULL, "ZREM %sworkers %s", w->keys.prefix, w->id);
  }
  sl__aredis_close(w);
  sl__log_info("worker %s stopped: %llu succeeded, %llu failed, %llu retried, %llu given back, %llu fenced; "
               "longest loop stall %llu ms%s%s%s%s", w->id, (unsigned long long)w->n_ok,
               (unsigned long long)w->n_failed, (unsigned long long)w->n_retry, (unsigned long long)w->n_given,
               (unsigned long long)w->n_fenced, (unsigned long long)w->crew->m[0]->max_stall_ms,
               w->n_dup ? " (some completions were already recorded)" : "", w->crew->n > 1 ? " (queue " : "",
               w->crew->n > 1 ? w->keys.queue : "", w->crew->n > 1 ? ")" : "");
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

/* The worker of the first queue, which holds what the process shares. */
static int new_lead(const sl_worker_opts *opts, const char *queue, sl_worker_t **out, char *errbuf,
                    size_t errlen) {
  sl_worker_t *w;
  char host[64];
  unsigned char r[2];
  int rc;

  sl__alloc_init(); /* cJSON allocates through sl_malloc from here on */
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
  if (sl__keys_init(&w->keys, queue) != 0) {
    snprintf(errbuf, errlen, "invalid queue name \"%s\" (1-%d characters of [A-Za-z0-9_.:-])", queue,
             SL_NAME_MAX);
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

/* The worker of another queue of the process: its own keys, connections
 * and webhooks; the lead's options, handlers, HTTP client and loop. */
static int new_member(sl_worker_t *lead, const char *queue, sl_worker_t **out, char *errbuf, size_t errlen) {
  sl_worker_t *m = sl_calloc(1, sizeof(*m));
  int rc;

  if (m == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return SL_ENOMEM;
  }
  if (sl__keys_init(&m->keys, queue) != 0) {
    snprintf(errbuf, errlen, "invalid queue name \"%s\" (1-%d characters of [A-Za-z0-9_.:-])", queue,
             SL_NAME_MAX);
    sl_free(m);
    return SL_EINVAL;
  }
  rc = sl__url_parse(lead->url_str, &m->url, errbuf, errlen);
  if (rc != 0) {
    sl_free(m);
    return rc;
  }
  m->url_str = sl_strdup(lead->url_str);
  rc = m->url_str != NULL ? sl__webhook_init(m, errbuf, errlen) : SL_ENOMEM;
  if (rc != 0) {
    if (rc == SL_ENOMEM)
      snprintf(errbuf, errlen, "out of memory");
    sl__url_free(&m->url);
    sl_free(m->url_str);
    sl_free(m);
    return rc;
  }
  m->loop = lead->loop;
  memcpy(m->id, lead->id, sizeof(m->id));
  m->concurrency = lead->concurrency;
  m->fds = lead->fds;
  m->load_library = lead->load_library;
  m->block_ms = lead->block_ms;
  memcpy(m->weights, lead->weights, sizeof(m->weights));
  m->visibility_ms = lead->visibility_ms;
  m->max_deliveries = lead->max_deliveries;
  m->drain_ms = lead->drain_ms;
  m->beat_ms = lead->beat_ms;
  m->httpc = lead->httpc;
  m->builtins = lead->builtins;
  m->http_mock = lead->http_mock;
  m->crew = lead->crew;
  *out = m;
  return 0;
}

/* Splits "a,b,c" (and the weights "3,2,1", or NULL for 1 each) into the
 * crew's members after the lead. */
static int add_members(sl_worker_t *lead, const char *queues, const char *weights, char *errbuf,
                       size_t errlen) {
  sl_crew *c = lead->crew;
  const char *p = queues;
  const char *q = weights;
  char name[SL_NAME_MAX + 2];

  for (int i = 0; *p != '\0' || i == 0; i++) {
    size_t len = strcspn(p, ",");
    int weight = 1;

    if (len == 0 || len > SL_NAME_MAX) {
      snprintf(errbuf, errlen, "queues \"%.80s\": queue %d is %s (names of 1-%d characters, separated by commas)",
               queues, i + 1, len == 0 ? "empty" : "too long", SL_NAME_MAX);
      return SL_EINVAL;
    }
    memcpy(name, p, len);
    name[len] = '\0';
    p += len + (p[len] == ',');
    if (q != NULL) {
      char *end;
      long v;

      if (*q == '\0') {
        snprintf(errbuf, errlen, "queue weights \"%.80s\": %d weights for more queues (\"%.80s\"); give one per "
                 "queue, in the same order", weights, i, queues);
        return SL_EINVAL;
      }
      v = strtol(q, &end, 10);
      if (end == q || (*end != ',' && *end != '\0') || v < 1 || v > SL_CREW_WEIGHT_MAX) {
        snprintf(errbuf, errlen, "queue weights \"%.80s\": weight %d must be an integer from 1 to %d", weights,
                 i + 1, SL_CREW_WEIGHT_MAX);
        return SL_EINVAL;
      }
      weight = (int)v;
      q = end + (*end == ',');
    }
    for (int k = 0; k < c->n && i > 0; k++) {
      if (strcmp(c->m[k]->keys.queue, name) == 0) {
        snprintf(errbuf, errlen, "queues \"%.80s\": queue %s is named twice", queues, name);
        return SL_EINVAL;
      }
    }
    if (i == 0) {
      c->weight[0] = weight; /* the lead, made already */
      continue;
    }
    if (c->n == SL_CREW_MAX) {
      snprintf(errbuf, errlen, "queues \"%.80s\": at most %d queues per worker", queues, SL_CREW_MAX);
      return SL_EINVAL;
    }
    {
      int rc = new_member(lead, name, &c->m[c->n], errbuf, errlen);

      if (rc != 0)
        return rc;
    }
    c->weight[c->n++] = weight;
  }
  if (q != NULL && *q != '\0') {
    snprintf(errbuf, errlen, "queue weights \"%.80s\": more weights than queues (\"%.80s\")", weights, queues);
    return SL_EINVAL;
  }
  return 0;
}

SL_EXTERN int sl_worker_new(const sl_worker_opts *opts, sl_worker_t **out, char *errbuf, size_t errlen) {
  const char *queues;
  char first[SL_NAME_MAX + 2];
  size_t len;
  sl_worker_t *w;
  int rc;

  sl__alloc_init(); /* cJSON allocates through sl_malloc from here on */
  if (opts == NULL || opts->redis_url == NULL) {
    snprintf(errbuf, errlen, "no Redis URL given");
    return SL_EINVAL;
  }
  queues = opts->queue != NULL ? opts->queue : "default";
  len = strcspn(queues, ",");
  if (len == 0 || len > SL_NAME_MAX) {
    snprintf(errbuf, errlen, "queues \"%.80s\": queue 1 is %s (names of 1-%d characters, separated by commas)",
             queues, len == 0 ? "empty" : "too long", SL_NAME_MAX);
    return SL_EINVAL;
  }
  memcpy(first, queues, len);
  first[len] = '\0';
  rc = new_lead(opts, first, &w, errbuf, errlen);
  if (rc != 0)
    return rc;
  w->crew = sl_calloc(1, sizeof(*w->crew));
  if (w->crew == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    sl_worker_free(w);
    return SL_ENOMEM;
  }
  w->crew->m[0] = w;
  w->crew->n = 1;
  w->crew->concurrency = w->concurrency;
  rc = add_members(w, queues, opts->queue_weights, errbuf, errlen);
  if (rc != 0) {
    sl_worker_free(w);
    return rc;
  }
  *out = w;
  return 0;
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
  sl__log_info("signal %d: finishing %d running items, then stopping", signum, sl__crew_running(w->crew));
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

  if (w->url.cluster) {
    /* Redis Cluster: the queue's master; the connections go there. */
    char host[256];
    int port;

    code = sl__cluster_master_of(w->url_str, w->keys.stream[0], host, sizeof(host), &port, w->errstr,
                                 sizeof(w->errstr));
    if (code == 0)
      code = sl__aredis_set_node(w, host, strlen(host), port);
    if (code != 0)
      return code;
    /* Each master holds its own copy of the library: --load-library loads
     * it on all of them. */
    if (w->load_library && w == w->crew->m[0]) {
      code = sl_library_load(w->url_str, w->errstr, sizeof(w->errstr));
      if (code != 0)
        return code;
    }
  }
  code = sl__redis_connect(&w->url, SL_CONNECT_TIMEOUT_MS, &rc, w->errstr, sizeof(w->errstr));
  if (code != 0)
    return code;
  /* Only an operator loads code: --load-library, else the loaded library
   * must be this build's. */
  code = w->load_library && !w->url.cluster ? sl__script_load(rc, w->errstr, sizeof(w->errstr)) : 0;
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

/* Initializes one queue's timers (before anything that may fail: a
 * failed start closes what it opened through sl__worker_close_all). */
static void init_timers(sl_worker_t *w) {
  uv_timer_t *timers[] = {&w->kick,  &w->beat,  &w->reclaim,  &w->delayed, &w->reconnect, &w->drain,
                          &w->pause, &w->progress, &w->webhook, &w->hold,    &w->watchdog,  &w->stall,
                          &w->repair};

  for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
    uv_timer_init(w->loop, timers[i]);
    timers[i]->data = w;
  }
  w->timers_up = 1;
}

/* Starts one queue's connections and rooms. */
static void start_queue(sl_worker_t *w) {
  w->started_at = sl__now_ms();
  sl__lease_start(w);
  sl__webhook_start(w);
  sl__intake_start(w);
  sl__selfrepair_start(w);
  sl__aredis_start(w);
}

SL_EXTERN int sl_worker_run(sl_worker_t *w) {
  sl_crew *c = w->crew;
  char served[256];
  char queues[512];
  size_t off = 0;
  int rc;

  signal(SIGPIPE, SIG_IGN); /* hiredis and curl write to sockets that may close */
  for (int i = 0; i < c->n; i++) {
    rc = bootstrap(c->m[i]);
    if (rc != 0) {
      sl__log_error("%s", c->m[i]->errstr);
      if (c->m[i] != w)
        snprintf(w->errstr, sizeof(w->errstr), "%s", c->m[i]->errstr);
      return rc;
    }
  }
  for (int i = 0; i < c->n; i++)
    init_timers(c->m[i]);
  c->open = c->n;
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
  for (int i = 0; i < c->n; i++) {
    sl_worker_t *m = c->m[i];

    if (m != w) {
      /* the handlers registered on the lead, by now all of them */
      memcpy(m->handlers, w->handlers, sizeof(m->handlers));
      m->nhandlers = w->nhandlers;
    }
    start_queue(m);
  }
  for (int i = 0; i < w->nhandlers; i++)
    off += (size_t)snprintf(served + off, sizeof(served) - off, "%s%s", i ? ", " : "", w->handlers[i].type);
  if (c->n == 1) {
    snprintf(queues, sizeof(queues), "queue %s", w->keys.queue);
  } else {
    size_t qo = (size_t)snprintf(queues, sizeof(queues), "queues");

    for (int i = 0; i < c->n && qo < sizeof(queues); i++)
      qo += (size_t)snprintf(queues + qo, sizeof(queues) - qo, "%s %s (weight %d)", i ? "," : "",
                             c->m[i]->keys.queue, c->weight[i]);
  }
  sl__log_info("worker %s serving %s (types: %s), concurrency %d, visibility %lld ms", w->id, queues, served,
               w->concurrency, (long long)w->visibility_ms);
  if (w->http_mock != NULL)
    sl__log_warn("mocking http items from %s (--http-mock): no request is sent, no secret is resolved and "
                 "--http-allow is not applied; results say \"mock\":true", w->http_mock);
  if (w->fds.was != w->fds.limit)
    sl__log_info("raised the file descriptor limit (ulimit -n) from %ld to %ld; --concurrency %d needs about %ld",
                 w->fds.was, w->fds.limit, w->concurrency, w->fds.need);
  sl__crew_kick(c);
  if (!w->owns_loop)
    return c->rc;
  uv_run(w->loop, UV_RUN_DEFAULT);
  return c->rc;
}

/* Stops one queue: no new reads, the drain deadline starts. */
static void stop_queue(sl_worker_t *w) {
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

SL_EXTERN void sl_worker_stop(sl_worker_t *w) {
  for (int i = 0; i < w->crew->n; i++)
    stop_queue(w->crew->m[i]);
  sl__crew_kick(w->crew); /* a queue that stops lends its share no more: the others may start its slots' items */
}

SL_EXTERN const char *sl_worker_id(const sl_worker_t *w) {
  return w->id;
}

SL_EXTERN const char *sl_worker_errstr(const sl_worker_t *w) {
  return w->crew != NULL && w->crew->rc != 0 ? w->crew->errstr : w->errstr;
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* What one queue worker holds: items, outcomes, its keys and connections'
 * settings. Not what the crew shares. */
static void free_queue(sl_worker_t *w) {
  sl_job_t *j;

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
}

SL_EXTERN void sl_worker_free(sl_worker_t *w) {
  sl_crew *c;
  int n;

  if (w == NULL)
    return;
  c = w->crew;
  n = c != NULL ? c->n : 1;
  for (int i = 0; i < n; i++) {
    sl_worker_t *m = c != NULL ? c->m[i] : w;

    /* Attempts still running (the loop was left early): give them up, so
     * their handlers stop what they started. */
    for (sl_job_t *j = m->active; j != NULL;) {
      sl_job_t *next = j->next;

      if (!j->ended)
        sl__job_abort(j, "the worker stopped", 0);
      j = next;
    }
    if (w->owns_loop && !m->closed && m->timers_up)
      sl__worker_close_all(m); /* run() was called but the loop was left early */
  }
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
  for (int i = 1; i < n; i++) {
    free_queue(c->m[i]);
    sl_free(c->m[i]);
  }
  free_queue(w);
  sl_free(w->http_mock);
  sl_free(c);
  sl_free(w);
}
