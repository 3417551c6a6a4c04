/*
 * One attempt of an item, as the worker sees it (the handlers' side is the
 * public sluice/job.h).
 *
 * The scheduler builds a job from a stream entry (sl__job_new), starts it
 * with the handler of its type (sl__job_start: after its rate-limit wait,
 * under its timeout timer) and can give it up (sl__job_abort: a timeout,
 * fencing, an abort, a stop); the job reports its end through
 * sl__worker_finish (outcome.c), the one way back from a job to its worker.
 * See job.c for the rules of ending exactly once.
 */
#ifndef SL_JOB_INTERNAL_H
#define SL_JOB_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "buf.h"

#include <sluice/sluice.h>

typedef void (*sl_job_cancel_fn)(sl_job_t *j, void *ud);

#define SL_JOB_METRICS 16     /* metrics one attempt may report */
#define SL_JOB_METRIC_NAME 63 /* bytes of a metric's name */

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
  sl_buf log;               /* the attempt's log lines (sl_job_log), each ending in '\n', the newest kept */
  int log_lines;            /* lines in log */
  int log_dropped;          /* older lines dropped to stay under the caps */
  int nmetrics;             /* metrics reported (sl_job_metric) */
  char metric_name[SL_JOB_METRICS][SL_JOB_METRIC_NAME + 1]; /* their names */
  double metric_value[SL_JOB_METRICS];                      /* and sums */
};

#define SL_JOB_LOG_LINES 20   /* log lines kept per attempt, the newest */
#define SL_JOB_LOG_BYTES 2048 /* and at most this many bytes of them */
#define SL_JOB_LOG_LINE 256   /* one line, bytes (longer ones are cut) */

/* Builds a job from a delivered entry; NULL on OOM. A malformed item still
 * gives a job, which then fails with a clear error (type ""). */
sl_job_t *sl__job_new(sl_worker_t *w, int prio, const char *eid, const char *batch,
                      const char *idx, const char *attempt, const char *d, size_t dlen,
                      const char *errs, size_t errslen);
void sl__job_free(sl_job_t *j);
/* The attempt's log as a JSON array of strings into out ("" when it has no
 * line): the dropped lines counted first, "(N earlier lines not kept)". */
int sl__job_log_json(const sl_job_t *j, sl_buf *out);
/* The attempt's metrics as a JSON object {"cost":0.034,...} into out (""
 * when it reported none). */
int sl__job_metrics_json(const sl_job_t *j, sl_buf *out);
/* Starts a job with the handler of its type (or fails it). */
void sl__job_start(sl_job_t *j);
/* Gives up an attempt the worker no longer wants (timeout: with `record`
 * set the worker records a retryable failure; fencing, abort and abandon:
 * nothing recorded). Calls the handler's cancel hook. */
void sl__job_abort(sl_job_t *j, const char *why, int record);
/* The delay before the attempt after `attempt` (1-based): full jitter,
 * u (uniform in [0, 1)) times min(cap_ms, base_ms * 2^(attempt - 1)). */
int64_t sl__backoff_delay(int64_t base_ms, int64_t cap_ms, int attempt, double u);

#endif
