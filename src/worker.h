/*
 * Worker internals shared by worker.c (the loop and Redis traffic), job.c
 * (one running item) and the handlers.
 */
#ifndef SL_WORKER_H
#define SL_WORKER_H

#include <stdint.h>

#include <hiredis/async.h>
#include <uv.h>

#include <sluice/sluice.h>

#include "buf.h"
#include "script.h"
#include "url.h"
#include "webhook.h"

#define SL_WORKER_MAX_HANDLERS 32  /* types one worker serves */
#define SL_WORKER_FLUSH_MAX 1000   /* completions per complete call */

typedef struct sl_handler {
  char type[SL_NAME_MAX + 1]; /* item type served */
  sl_handler_start_fn start;  /* starts a job */
  void *ud;                   /* passed to start */
} sl_handler;

/* A finished item waiting to be written by sluice_v1_complete. */
typedef struct sl_done {
  struct sl_done *next; /* FIFO link */
  int prio;             /* SL_PRIO_* of the stream it came from */
  char *eid;            /* stream entry id */
  char *batch;          /* batch id */
  char *idx;            /* item index, decimal */
  char outcome;         /* 's' succeeded, 'f' failed for good, 'x' refused, 'r' retry */
  char *line;           /* 's'/'f': the results line; 'r': the errors so far (JSON array) */
  size_t linelen;       /* its length, bytes */
  int64_t delay_ms;     /* 'r': when to run again, ms from now */
  char *item;           /* 'f': the item JSON, for its dead letter; else NULL */
  char lease[SL_NAME_MAX + 1]; /* the concurrency lease to return, or "" */
  int had_progress;     /* the attempt reported progress: its field is removed */
} sl_done;

typedef void (*sl_job_cancel_fn)(sl_job_t *j, void *ud);

struct sl_job {
  uv_timer_t timer;         /* the attempt's timeout; first, so close_cb can free the job */
  sl_worker_t *w;           /* owner */
  struct sl_job *next;      /* backlog link, or running list */
  struct sl_job *prev;      /* running list */
  int prio;                 /* SL_PRIO_* */
  char *eid;                /* stream entry id */
  char *batch;              /* batch id */
  char *idx;                /* item index within the batch, decimal */
  int attempt;              /* 1 for the first */
  char *d;                  /* the item JSON (owned) */
  const char *id_tok;       /* the item id as a JSON string token, inside d */
  char *item_id;            /* the item id, unescaped, or NULL (then the index stands in) */
  size_t id_toklen;         /* bytes */
  char type[SL_NAME_MAX + 1]; /* item type */
  const char *payload;      /* raw payload JSON, inside d */
  size_t payload_len;       /* bytes */
  int64_t timeout_ms;       /* per attempt, ms */
  int max_attempts;         /* attempts in all, >= 1 */
  int64_t backoff_ms;       /* retry delay base, ms */
  int64_t backoff_max_ms;   /* retry delay cap, ms */
  char *errs;               /* errors of earlier attempts: JSON array text, or NULL */
  int64_t started_at;       /* ms since the epoch */
  int started;              /* the handler was called */
  int alone;                /* on its last allowed delivery: runs with nothing else */
  int64_t wait_ms;          /* its rate limit: how long to wait before the handler runs, ms */
  char lease[SL_NAME_MAX + 1]; /* the limit whose concurrency lease it holds, or "" */
  char rate_key[SL_NAME_MAX + 1]; /* its rate key, or "" */
  int64_t retry_after_ms;   /* the API asked to wait this long (sl_job_retry_after), ms; 0: no */
  int progress;             /* last reported progress, percent; -1: none yet */
  int progress_dirty;       /* reported and not yet sent */
  int invoked;              /* the handler was called (after any rate-limit wait) */
  int ended;                /* the worker recorded or gave up the outcome (timeout, fencing) */
  const char *encoding;     /* "base64" when the result is stored encoded, else NULL */
  sl_job_cancel_fn cancel;  /* the handler's cancel hook, or NULL */
  void *cancel_ud;          /* its argument */
};

struct sl_worker {
  uv_loop_t *loop;           /* the loop we run on */
  uv_loop_t own_loop;        /* storage when we own it */
  int owns_loop;             /* 1 when loop == &own_loop */
  sl_url url;                /* Redis */
  char *url_str;             /* as given */
  sl_keys keys;              /* the queue's key names */
  char id[160];              /* worker id = consumer name: host:pid:rand */
  int concurrency;           /* jobs at once */
  int load_library;          /* load the function library at start (--load-library), and again if Redis lost it */
  int64_t lib_warned_at;     /* ms since the epoch of the last "library gone" warning */
  int block_ms;              /* idle blocking read, ms */
  char weights[48];          /* "H,N,L" for weighted fairness, "" for strict priority */
  uint64_t turn;             /* items fetched so far: where the weighted round robin continues */
  int64_t visibility_ms;     /* an item not kept alive this long is taken over, ms */
  int max_deliveries;        /* deliveries before an item is poison */
  int64_t drain_ms;          /* how long a stop waits for running items, ms */
  int64_t beat_ms;           /* heartbeat interval, ms */
  sl_job_t *active;          /* jobs started and not yet freed (running list) */
  struct sl_httpc *httpc;    /* the HTTP client of http items and webhooks */
  struct sl_builtins *builtins; /* the built-in handlers (builtins.c) */
  sl_handler handlers[SL_WORKER_MAX_HANDLERS]; /* served types */
  int nhandlers;             /* used */
  redisAsyncContext *cmd;    /* scripts and acks */
  redisAsyncContext *blk;    /* the blocking XREADGROUP only */
  int cmd_up;                /* cmd connected and authenticated */
  int blk_up;                /* blk connected and authenticated */
  long long blk_client_id;   /* CLIENT ID of blk, to CLIENT UNBLOCK it on stop */
  int running;               /* jobs started, not yet finished */
  sl_job_t *backlog;         /* delivered, not started (FIFO) */
  sl_job_t *backlog_tail;    /* its tail */
  int nbacklog;              /* its length */
  sl_done *done;             /* finished, not yet written (FIFO) */
  sl_done *done_tail;        /* its tail */
  int ndone;                 /* its length */
  int fetching;              /* a fetch call is in flight */
  int blocking;              /* a blocking read is in flight */
  int flushing;              /* complete calls in flight */
  int idle;                  /* the last fetch came back short: block next */
  int stopping;              /* no new items; drain and close */
  int closed;                /* connections and handles are closing */
  int rc;                    /* result of sl_worker_run */
  uv_timer_t kick;           /* runs pump() on the next loop turn */
  uv_timer_t beat;           /* heartbeat + fleet registry */
  uv_timer_t reclaim;        /* takeover of dead workers' items */
  uv_timer_t delayed;        /* wakes up when the next retry is due */
  uv_timer_t reconnect;      /* connects again after a lost connection */
  uv_timer_t drain;          /* the drain deadline after a stop */
  uv_timer_t pause;          /* ends a pause after LOADING/BUSY answers */
  uv_timer_t progress;       /* sends reported progress, at most every 500 ms */
  uv_timer_t webhook;        /* looks for due completion webhooks */
  int webhook_busy;          /* a webhook_take call is in flight */
  unsigned char webhook_key[SL_WEBHOOK_KEY_MAX]; /* HMAC key of webhook signatures: SLUICE_WEBHOOK_SECRET decoded */
  size_t webhook_keylen;     /* its length, bytes (24-64); 0: no secret, webhooks go out unsigned */
  int webhook_looked;        /* without a key: the first look at the queue's webhooks was sent */
  int webhook_warned;        /* without a key: the once-per-process warning was logged */
  int paused;                /* Redis asked us to wait: no calls until the pause timer */
  int drained;               /* the drain timeout passed: close even with completions held */
  int timers_up;             /* the timers above are initialized */
  int beating;               /* a beat call is in flight */
  int reclaiming;            /* a reclaim call is in flight */
  int releasing;             /* a release call is in flight */
  int isolating;             /* a reclaim that may bring a run-alone item is in flight */
  sl_job_t *alone_job;       /* the run-alone item running now, or NULL */
  int ever_up;               /* both connections were up once */
  int64_t down_since;        /* ms since the epoch when Redis was lost; 0 when up */
  int64_t reconnect_delay;   /* the next reconnect backoff, ms */
  int64_t started_at;        /* ms since the epoch */
  uv_signal_t sig[2];        /* SIGINT, SIGTERM */
  int nsig;                  /* signal handles initialized */
  uint64_t n_ok;             /* items succeeded here */
  uint64_t n_failed;         /* items failed here */
  uint64_t n_dup;            /* completions Redis had already seen */
  uint64_t n_retry;          /* attempts sent to retry */
  uint64_t n_fenced;         /* attempts stopped because another worker took the item */
  char errstr[512];          /* cause of a fatal error */
};

/* Schedules a pump on the next loop turn (idempotent). */
void sl__worker_kick(sl_worker_t *w);
/* Queues a finished attempt's completion; takes ownership of line. */
void sl__worker_finish(sl_worker_t *w, sl_job_t *j, char outcome, char *line, size_t len,
                       int64_t delay_ms);
/* Gives up an attempt the worker no longer wants (timeout: with `fail` set
 * the worker records the failure; fencing and abandon: nothing recorded).
 * Calls the handler's cancel hook. */
void sl__job_abort(sl_job_t *j, const char *why, int record);
/* Builds a job from a delivered entry; NULL on OOM or a malformed item (then
 * *err says why and the entry should be completed as failed). */
sl_job_t *sl__job_new(sl_worker_t *w, int prio, const char *eid, const char *batch,
                      const char *idx, const char *attempt, const char *d, size_t dlen,
                      const char *errs, size_t errslen);
void sl__job_free(sl_job_t *j);
/* Starts a job with the handler of its type (or fails it). */
void sl__job_start(sl_job_t *j);
/* A job reported progress: send it within PROGRESS_EVERY_MS. */
void sl__worker_progress_soon(sl_worker_t *w);
/* Pushes the rate limit `rate_key` back by ms for the whole fleet
 * (sluice_v1_penalize; best effort, no reply awaited). */
void sl__worker_penalize(sl_worker_t *w, const char *rate_key, int64_t ms);
/* The delay before the attempt after `attempt` (1-based): full jitter,
 * u (uniform in [0, 1)) times min(cap_ms, base_ms * 2^(attempt - 1)). */
int64_t sl__backoff_delay(int64_t base_ms, int64_t cap_ms, int attempt, double u);

#endif
