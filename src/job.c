/*
 * One running item: built from a stream entry, handed to the handler of its
 * type, and finished exactly once with sl_job_succeed or sl_job_fail, which
 * turn it into a results line for sluice_v1_complete and free it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "id.h"
#include "json.h"
#include "worker.h"

#define ITEM_MAX_MEMBERS 16 /* fields of a stored item */
#define ERROR_MAX 4096      /* one error message, bytes */

void sl__job_free(sl_job_t *j) {
  if (j == NULL)
    return;
  sl_free(j->eid);
  sl_free(j->batch);
  sl_free(j->idx);
  sl_free(j->d);
  sl_free(j);
}

sl_job_t *sl__job_new(sl_worker_t *w, int prio, const char *eid, const char *batch,
                      const char *idx, const char *attempt, const char *d, size_t dlen) {
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
  j->eid = sl_strdup(eid);
  j->batch = sl_strdup(batch);
  j->idx = sl_strdup(idx);
  j->d = sl_strndup(d, dlen);
  if (j->eid == NULL || j->batch == NULL || j->idx == NULL || j->d == NULL) {
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
    }
  }
  if (j->payload == NULL) {
    j->payload = "null";
    j->payload_len = 4;
  }
  return j;
}

void sl__job_start(sl_job_t *j) {
  sl_worker_t *w = j->w;
  char served[512];
  size_t off = 0;

  j->started_at = sl__now_ms();
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
    sl_job_fail(j, "malformed item in the stream (entry %s): no valid \"type\"; was it written "
                   "without sluice_v1_submit?", j->eid);
  else
    sl_job_fail(j, "no handler for type \"%s\" on worker %s (it serves: %s)", j->type, w->id, served);
}

/* Builds the results line and hands the job back to the worker. */
static void finish(sl_job_t *j, char outcome, const char *key, const char *val, size_t vlen) {
  sl_worker_t *w = j->w;
  int64_t now = sl__now_ms();
  sl_buf b;
  int rc;

  sl__buf_init(&b, SL_RESULT_MAX + 1024);
  rc = sl__buf_puts(&b, "{\"id\":");
  if (rc == 0 && j->id_tok != NULL)
    rc = sl__buf_append(&b, j->id_tok, j->id_toklen);
  else if (rc == 0)
    rc = sl__json_put_str(&b, j->idx, strlen(j->idx));
  if (rc == 0)
    rc = sl__buf_printf(&b,
                        ",\"status\":\"%s\",\"attempts\":%d,\"started_at\":%lld,\"finished_at\":%lld,"
                        "\"duration_ms\":%lld,\"worker\":",
                        outcome == 's' ? "succeeded" : "failed", j->attempt, (long long)j->started_at,
                        (long long)now, (long long)(now - j->started_at));
  if (rc == 0)
    rc = sl__json_put_str(&b, w->id, strlen(w->id));
  if (rc == 0)
    rc = sl__buf_printf(&b, ",\"%s\":", key);
  if (rc == 0)
    rc = sl__buf_append(&b, val, vlen);
  if (rc == 0)
    rc = sl__buf_putc(&b, '}');
  if (rc != 0) {
    /* Cannot build the line (memory): record a short failure instead so the
     * item is still counted. */
    sl__buf_free(&b);
    sl__buf_init(&b, 1024);
    outcome = 'f';
    sl__buf_printf(&b, "{\"id\":\"%s\",\"status\":\"failed\",\"attempts\":%d,\"error\":\"%s\"}", j->idx,
                   j->attempt, rc == SL_ETOOBIG ? "result too large" : "out of memory building the result");
  }
  {
    size_t len = b.len;
    char *line = sl__buf_take(&b);

    sl__worker_finish(w, j, outcome, line, line ? len : 0);
  }
}

SL_EXTERN void sl_job_succeed(sl_job_t *j, const char *result, size_t len) {
  char err[96];
  sl_buf s;

  if (result == NULL || len == 0) {
    finish(j, 's', "result", "null", 4);
    return;
  }
  if (len > SL_RESULT_MAX) {
    sl_job_fail(j, "result of %zu bytes is over the limit of %d bytes", len, SL_RESULT_MAX);
    return;
  }
  if (sl__json_validate(result, len, 256, NULL, err, sizeof(err)) == 0) {
    finish(j, 's', "result", result, len);
    return;
  }
  /* Not JSON: keep it, as a string. */
  sl__buf_init(&s, SL_RESULT_MAX * 6 + 2);
  if (sl__json_put_str(&s, result, len) == 0)
    finish(j, 's', "result", s.p, s.len);
  else
    sl_job_fail(j, "out of memory storing the result");
  sl__buf_free(&s);
}

SL_EXTERN void sl_job_fail(sl_job_t *j, const char *fmt, ...) {
  char msg[ERROR_MAX];
  sl_buf s;
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (msg[0] == '\0')
    snprintf(msg, sizeof(msg), "handler for type \"%s\" failed without giving a reason", j->type);
  sl__buf_init(&s, sizeof(msg) * 6 + 2);
  sl__json_put_str(&s, msg, strlen(msg));
  finish(j, 'f', "error", s.p ? s.p : "\"?\"", s.p ? s.len : 3);
  sl__buf_free(&s);
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
