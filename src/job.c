/*
 * One attempt of an item: built from a stream entry, handed to the handler
 * of its type, and ended exactly once:
 *
 *   - by the handler, with sl_job_succeed, sl_job_fail (retryable) or
 *     sl_job_fail_final; a failure with attempts left becomes a retry after a
 *     backoff with full jitter, otherwise the item fails for good; or with
 *     sl_job_give_back: nothing is recorded and the item goes back to its
 *     stream uncharged (lease.c), the worker lacked descriptors to run it;
 *   - or by the worker (sl__job_abort): the attempt timed out (recorded as a
 *     retryable failure "timed out after N ms"), another worker took the
 *     item over (fencing: nothing recorded, the new owner records it), or the
 *     worker stops past its drain timeout (nothing recorded; the item is
 *     given back). The handler's cancel hook is called; its own later
 *     completion is then ignored.
 *
 * The job's memory lives until the handler has completed it, even after the
 * worker ended the attempt, so a handler never holds a dangling pointer.
 *
 * The job layer reaches its worker through a small host interface only:
 * sl__worker_finish (outcome.c: the slot is free, the outcome queued),
 * sl__worker_progress_soon, sl__worker_penalize and sl__lease_give_back
 * (an item handed back without an outcome); it reads the worker's loop, id
 * and handler table and keeps its list of live jobs (`active`). The worker's rooms create, start and
 * give up jobs through job.h. Timer: the attempt's own, for its rate-limit
 * wait and then its timeout (the job's first member, so its close callback
 * frees the job).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "alloc.h"
#include "id.h"
#include "json.h"
#include "log.h"
#include "job.h"
#include "result.h"
#include "worker.h"

#define ITEM_MAX_MEMBERS 16 /* fields of a stored item */
#define ERROR_MAX 4096      /* one error message, bytes */

static void job_free_cb(uv_handle_t *h) {
  sl_job_t *j = (sl_job_t *)h;

  sl_free(j->eid);
  sl_free(j->batch);
  sl_free(j->idx);
  sl_free(j->d);
  sl_free(j->errs);
  sl_free(j->item_id);
  sl__buf_free(&j->log);
  sl_free(j);
}

static void unlink_active(sl_job_t *j) {
  sl_worker_t *w = j->w;

  if (j->prev != NULL)
    j->prev->next = j->next;
  else if (w->active == j)
    w->active = j->next;
  if (j->next != NULL)
    j->next->prev = j->prev;
  j->next = j->prev = NULL;
}

void sl__job_free(sl_job_t *j) {
  if (j == NULL)
    return;
  if (j->started) {
    unlink_active(j);
    uv_timer_stop(&j->timer);
    uv_close((uv_handle_t *)&j->timer, job_free_cb);
  } else {
    job_free_cb((uv_handle_t *)j);
  }
}

sl_job_t *sl__job_new(sl_worker_t *w, int prio, const char *eid, const char *batch,
                      const char *idx, const char *attempt, const char *d, size_t dlen,
                      const char *errs, size_t errslen) {
  sl_json_member m[ITEM_MAX_MEMBERS];
  sl_job_t *j = sl_calloc(1, sizeof(*j));
  size_t n = 0;

  if (j == NULL)
    return NULL;
  j->w = w;
  j->prio = prio;
  j->attempt = attempt ? atoi(attempt) : 1;
  if (j->attempt < 1)
    j->attempt = 1;
  j->timeout_ms = 30000;
  j->progress = -1;
  j->max_attempts = 1;
  j->backoff_ms = 1000;
  j->backoff_max_ms = 60000;
  sl__buf_init(&j->log, SL_JOB_LOG_BYTES + SL_JOB_LOG_LINE + 1);
  j->eid = sl_strdup(eid);
  j->batch = sl_strdup(batch);
  j->idx = sl_strdup(idx);
  j->d = sl_strndup(d, dlen);
  if (errs != NULL && errslen > 0)
    j->errs = sl_strndup(errs, errslen);
  if (j->eid == NULL || j->batch == NULL || j->idx == NULL || j->d == NULL ||
      (errslen > 0 && j->errs == NULL)) {
    sl__job_free(j);
    return NULL;
  }
  /* The item was validated at submit; a producer in another language may
   * still write a bad one, which then fails with a clear error (type ""). */
  if (sl__json_members(j->d, dlen, m, ITEM_MAX_MEMBERS, &n) != 0)
    n = 0;
  for (size_t i = 0; i < n; i++) {
    const sl_json_member *f = &m[i];
    int64_t v;

    if (f->keylen == 2 && memcmp(f->key, "id", 2) == 0 && f->val[0] == '"') {
      j->id_tok = f->val;
      j->id_toklen = f->vallen;
    } else if (f->keylen == 4 && memcmp(f->key, "type", 4) == 0 && f->val[0] == '"' &&
               f->vallen - 2 <= SL_NAME_MAX) {
      memcpy(j->type, f->val + 1, f->vallen - 2);
      j->type[f->vallen - 2] = '\0';
    } else if (f->keylen == 7 && memcmp(f->key, "payload", 7) == 0) {
      j->payload = f->val;
      j->payload_len = f->vallen;
    } else if (f->keylen == 10 && memcmp(f->key, "timeout_ms", 10) == 0 &&
               sl__json_int(f->val, f->vallen, 1, 86400000, &v) == 0) {
      j->timeout_ms = v;
    } else if (f->keylen == 12 && memcmp(f->key, "max_attempts", 12) == 0 &&
               sl__json_int(f->val, f->vallen, 1, 1000, &v) == 0) {
      j->max_attempts = (int)v;
    } else if (f->keylen == 8 && memcmp(f->key, "rate_key", 8) == 0 && f->val[0] == '"' &&
               f->vallen - 2 <= SL_NAME_MAX) {
      memcpy(j->rate_key, f->val + 1, f->vallen - 2);
      j->rate_key[f->vallen - 2] = '\0';
    } else if (f->keylen == 10 && memcmp(f->key, "backoff_ms", 10) == 0 &&
               sl__json_int(f->val, f->vallen, 0, 86400000, &v) == 0) {
      j->backoff_ms = v;
    } else if (f->keylen == 14 && memcmp(f->key, "backoff_max_ms", 14) == 0 &&
               sl__json_int(f->val, f->vallen, 0, 86400000, &v) == 0) {
      j->backoff_max_ms = v;
    }
  }
  if (j->payload == NULL) {
    j->payload = "null";
    j->payload_len = 4;
  }
  if (j->id_tok != NULL) {
    sl_buf id;

    sl__buf_init(&id, SL_ITEM_MAX_ID * 4 + 1);
    if (sl__json_unescape(j->id_tok, j->id_toklen, &id) == 0 && id.p != NULL && memchr(id.p, '\0', id.len) == NULL)
      j->item_id = sl__buf_take(&id);
    sl__buf_free(&id); /* unreadable: the index stands in */
  }
  return j;
}

static void on_timeout(uv_timer_t *t) {
  sl_job_t *j = (sl_job_t *)t;
  char why[96];

  snprintf(why, sizeof(why), "timed out after %lld ms", (long long)j->timeout_ms);
  sl__job_abort(j, why, 1);
}

/* Calls the handler: the attempt begins now (started_at), after any
 * rate-limit wait. */
static void invoke(sl_job_t *j) {
  sl_worker_t *w = j->w;
  char served[512];
  size_t off = 0;

  j->invoked = 1;
  j->started_at = sl__now_ms();
  uv_timer_start(&j->timer, on_timeout, (uint64_t)j->timeout_ms, 0);
  for (int i = 0; i < w->nhandlers; i++) {
    if (strcmp(w->handlers[i].type, j->type) == 0) {
      w->handlers[i].start(j, w->handlers[i].ud);
      return;
    }
  }
  served[0] = '\0';
  for (int i = 0; i < w->nhandlers && off < sizeof(served); i++) {
    int k = snprintf(served + off, sizeof(served) - off, "%s%s", i ? ", " : "", w->handlers[i].type);

    if (k < 0)
      break;
    off += (size_t)k;
  }
  if (j->type[0] == '\0')
    sl_job_fail_final(j, "malformed item in the stream (entry %s): no valid \"type\"; was it written "
                         "without sluice_v1_submit?", j->eid);
  else
    sl_job_fail(j, "no handler for type \"%s\" on worker %s (it serves: %s)", j->type, w->id, served);
}

static void on_wait(uv_timer_t *t) {
  invoke((sl_job_t *)t);
}

void sl__job_start(sl_job_t *j) {
  sl_worker_t *w = j->w;

  j->started = 1;
  uv_timer_init(w->loop, &j->timer);
  j->prev = NULL;
  j->next = w->active;
  if (w->active != NULL)
    w->active->prev = j;
  w->active = j;
  if (j->wait_ms > 0) {
    /* Its rate limit reserved a later start: sleep until then (the slot
     * and the claim are held meanwhile; heartbeats cover it). */
    uv_timer_start(&j->timer, on_wait, (uint64_t)j->wait_ms, 0);
    return;
  }
  invoke(j);
}

int64_t sl__backoff_delay(int64_t base_ms, int64_t cap_ms, int attempt, double u) {
  double ceiling = (double)base_ms * pow(2.0, (double)(attempt > 1 ? attempt - 1 : 0));

  if (ceiling > (double)cap_ms)
    ceiling = (double)cap_ms;
  if (u < 0)
    u = 0;
  if (u >= 1)
    u = 0.9999999999;
  return (int64_t)(u * ceiling);
}

static int64_t backoff_delay(const sl_job_t *j) {
  return sl__backoff_delay(j->backoff_ms, j->backoff_max_ms, j->attempt, sl__random_unit());
}

/* Records the failure of attempt j: a retry when allowed, else final
 * ('f'), or refused ('x': final, no dead letter; see sl_job_refuse). */
static void record_failure(sl_job_t *j, const char *msg, int retryable, char final) {
  sl_worker_t *w = j->w;
  char *text;
  size_t len = 0;

  if (j->retry_after_ms > 0)
    sl__worker_penalize(w, j->rate_key, j->retry_after_ms); /* "": the queue's default, if any */
  if (retryable == 1 && j->attempt < j->max_attempts) {
    int64_t delay = backoff_delay(j);

    /* An API's Retry-After is a floor for this item's own retry too. */
    if (delay < j->retry_after_ms)
      delay = j->retry_after_ms;
    text = sl__result_errors(j, msg);
    if (text != NULL && (j->log_lines > 0 || j->nmetrics > 0)) {
      /* with a log or metrics: {"errors":[...],"log":[...],"metrics":{...}} (sluice_v1_complete) */
      sl_buf o;

      sl__buf_init(&o, SIZE_MAX / 2);
      if (sl__buf_printf(&o, "{\"errors\":%s", text) == 0 &&
          (j->log_lines == 0 || (sl__buf_puts(&o, ",\"log\":") == 0 && sl__job_log_json(j, &o) == 0)) &&
          (j->nmetrics == 0 || (sl__buf_puts(&o, ",\"metrics\":") == 0 && sl__job_metrics_json(j, &o) == 0)) &&
          sl__buf_putc(&o, '}') == 0) {
        char *t = sl__buf_take(&o);

        if (t != NULL) {
          sl_free(text);
          text = t;
        }
      }
      sl__buf_free(&o);
    }
    sl__worker_finish(w, j, 'r', text, text ? strlen(text) : 0, delay);
    return;
  }
  {
    sl_buf s;

    sl__buf_init(&s, ERROR_MAX * 6 + 2);
    sl__json_put_str(&s, msg, strlen(msg));
    text = sl__result_line(j, final, "error", s.p ? s.p : "\"?\"", s.p ? s.len : 3, &len);
    sl__buf_free(&s);
  }
  sl__worker_finish(w, j, final, text, len, 0);
}

void sl__job_abort(sl_job_t *j, const char *why, int record) {
  if (j->ended)
    return;
  j->ended = 1;
  uv_timer_stop(&j->timer);
  if (record)
    record_failure(j, why, 1, 'f');
  else
    sl__worker_finish(j->w, j, 0, NULL, 0, 0);
  if (!j->invoked) {
    sl__job_free(j); /* still waiting for its rate limit: no handler holds it */
    return;
  }
  if (j->cancel != NULL) {
    sl_job_cancel_fn fn = j->cancel;

    j->cancel = NULL;
    fn(j, j->cancel_ud); /* the handler completes the job; that frees it */
  }
}

SL_EXTERN void sl_job_progress(sl_job_t *j, int pct) {
  if (j->ended)
    return;
  if (pct < 0)
    pct = 0;
  if (pct > 100)
    pct = 100;
  if (pct == j->progress)
    return;
  j->progress = pct;
  j->progress_dirty = 1;
  sl__worker_progress_soon(j->w);
}

SL_EXTERN void sl_job_retry_after(sl_job_t *j, int64_t ms) {
  if (ms > 300000)
    ms = 300000; /* a Retry-After far in the future is capped at 5 minutes */
  j->retry_after_ms = ms > 0 ? ms : 0;
}

SL_EXTERN void sl_job_on_cancel(sl_job_t *j, void (*fn)(sl_job_t *j, void *ud), void *ud) {
  j->cancel = fn;
  j->cancel_ud = ud;
}

SL_EXTERN void sl_job_succeed(sl_job_t *j, const char *result, size_t len) {
  char err[96];
  char n1[32];
  char *line = NULL;
  size_t linelen = 0;

  if (j->ended) {
    sl__job_free(j); /* the worker gave up on this attempt already */
    return;
  }
  /* A result that cannot be stored is a final failure that says why: it
   * never leaves the item to be run again as if the worker had died. */
  if (result == NULL || len == 0) {
    line = sl__result_line(j, 's', "result", "null", 4, &linelen);
  } else if (sl__json_validate(result, len, 256, NULL, err, sizeof(err)) == 0) {
    if (len > SL_RESULT_MAX) {
      sl_job_fail_final(j, "result of %s bytes is over the 1 MiB limit", sl__grouped(len, n1, sizeof(n1)));
      return;
    }
    line = sl__result_line(j, 's', "result", result, len, &linelen);
  } else {
    /* Not JSON: kept as a string, if it is text and fits once escaped. */
    size_t bad = sl__utf8_invalid_at(result, len);
    size_t esc;
    sl_buf s;

    if (bad < len) {
      sl_job_fail_final(j, "result of %s bytes is not valid UTF-8 (byte %zu is 0x%02x) and not JSON; a handler "
                           "stores binary data as base64", sl__grouped(len, n1, sizeof(n1)), bad,
                        (unsigned char)result[bad]);
      return;
    }
    esc = sl__json_str_len(result, len);
    if (esc > SL_RESULT_MAX) {
      sl_job_fail_final(j, "result of %s bytes is over the 1 MiB limit after escaping (%s bytes as a JSON string)",
                        sl__grouped(len, n1, sizeof(n1)), sl__grouped(esc, err, sizeof(err)));
      return;
    }
    sl__buf_init(&s, esc + 1);
    if (sl__json_put_str(&s, result, len) == 0)
      line = sl__result_line(j, 's', "result", s.p, s.len, &linelen);
    sl__buf_free(&s);
  }
  j->ended = 1;
  uv_timer_stop(&j->timer);
  sl__worker_finish(j->w, j, 's', line, linelen, 0);
  sl__job_free(j);
}

/* retryable: 1 a retryable failure, 0 final, 2 refused. */
static void job_vfail(sl_job_t *j, int retryable, const char *fmt, va_list ap) {
  char msg[ERROR_MAX];

  if (j->ended) {
    sl__job_free(j);
    return;
  }
  vsnprintf(msg, sizeof(msg), fmt, ap);
  if (msg[0] == '\0')
    snprintf(msg, sizeof(msg), "handler for type \"%s\" failed without giving a reason", j->type);
  j->ended = 1;
  uv_timer_stop(&j->timer);
  record_failure(j, msg, retryable, retryable == 2 ? 'x' : 'f');
  sl__job_free(j);
}

SL_EXTERN void sl_job_fail(sl_job_t *j, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  job_vfail(j, 1, fmt, ap);
  va_end(ap);
}

SL_EXTERN void sl_job_fail_final(sl_job_t *j, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  job_vfail(j, 0, fmt, ap);
  va_end(ap);
}

SL_EXTERN void sl_job_refuse(sl_job_t *j, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  job_vfail(j, 2, fmt, ap);
  va_end(ap);
}

SL_EXTERN void sl_job_give_back(sl_job_t *j, const char *fmt, ...) {
  char msg[ERROR_MAX];
  va_list ap;

  if (j->ended) {
    sl__job_free(j);
    return;
  }
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  j->ended = 1;
  uv_timer_stop(&j->timer);
  sl__lease_give_back(j->w, j, msg);
  sl__worker_finish(j->w, j, 0, NULL, 0, 0); /* its slot is free; nothing is recorded */
  sl__job_free(j);
}

SL_EXTERN const char *sl_job_type(const sl_job_t *j) {
  return j->type;
}

SL_EXTERN const char *sl_job_batch(const sl_job_t *j) {
  return j->batch;
}

SL_EXTERN const char *sl_job_payload(const sl_job_t *j, size_t *len) {
  if (len != NULL)
    *len = j->payload_len;
  return j->payload;
}

SL_EXTERN int sl_job_attempt(const sl_job_t *j) {
  return j->attempt;
}

SL_EXTERN int64_t sl_job_timeout_ms(const sl_job_t *j) {
  return j->timeout_ms;
}

SL_EXTERN void *sl_job_loop(const sl_job_t *j) {
  return j->w->loop;
}

SL_EXTERN const char *sl_job_item_id(const sl_job_t *j) {
  return j->item_id != NULL ? j->item_id : j->idx;
}

SL_EXTERN int64_t sl_job_index(const sl_job_t *j) {
  return strtoll(j->idx, NULL, 10);
}

SL_EXTERN const char *sl_job_worker_id(const sl_job_t *j) {
  return j->w->id;
}

/* ---- Binary results ---- */

/* Standard base64 (RFC 4648, with padding) of src[0..n) into out, which
 * has room for 4 * ((n + 2) / 3) bytes; returns the length written. */
SL_EXTERN void sl_job_succeed_base64(sl_job_t *j, const void *bytes, size_t len) {
  size_t enc = 4 * ((len + 2) / 3);
  char *val;
  char *line = NULL;
  size_t linelen = 0;

  if (j->ended) {
    sl__job_free(j); /* the worker gave up on this attempt already */
    return;
  }
  if (enc + 2 > SL_RESULT_MAX) {
    sl_job_fail_final(j, "result of %zu bytes is over the limit of %d bytes once base64-encoded", len,
                      SL_RESULT_MAX);
    return;
  }
  val = sl_malloc(enc + 2);
  if (val != NULL) {
    size_t vlen = 1;

    val[0] = '"';
    vlen += sl__base64_encode(bytes, len, val + 1);
    val[vlen++] = '"';
    j->encoding = "base64"; /* the line gets "encoding":"base64" */
    line = sl__result_line(j, 's', "result", val, vlen, &linelen);
    sl_free(val);
  }
  j->ended = 1;
  uv_timer_stop(&j->timer);
  sl__worker_finish(j->w, j, 's', line, linelen, 0);
  sl__job_free(j);
}
