/* Worker test helpers; see wtest.h. */
#include "wtest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "worker.h"

/* One synchronous connection per process (a forked test makes its own). */
static redisContext *conn;
static pid_t conn_pid;

static redisContext *db(void) {
  if (conn != NULL && conn_pid != getpid()) {
    redisFree(conn); /* the parent's: only this process's copy of the socket closes */
    conn = NULL;
  }
  if (conn == NULL) {
    conn = itest_conn();
    conn_pid = getpid();
  }
  return conn;
}

void wtest_submit(const char *q, const sl_batch_opts *opts, const char *const *lines, char *id) {
  sl_batch_opts o = {0};
  sl_client_t *c = NULL;
  sl_batch_t *b = NULL;
  char err[512];
  char *bid = NULL;
  int rc;

  if (opts != NULL)
    o = *opts;
  o.queue = q;
  rc = sl_batch_new(&o, &b, err, sizeof(err));
  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "sl_batch_new: %s", err);
  for (long i = 0; lines[i] != NULL; i++) {
    rc = sl_batch_add(b, lines[i], strlen(lines[i]), i + 1, err, sizeof(err));
    if (rc != 0)
      sl_test_fail(__FILE__, __LINE__, "sl_batch_add line %ld: %s", i + 1, err);
  }
  rc = sl_client_open(itest_url(), &c, err, sizeof(err));
  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "sl_client_open: %s", err);
  rc = sl_batch_submit(c, b, &bid);
  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "sl_batch_submit: %s", sl_client_errstr(c));
  snprintf(id, SL_NAME_MAX + 1, "%s", bid);
  sl_free(bid);
  sl_batch_free(b);
  sl_client_close(c);
}

void wtest_submit_n(const char *q, int n, const char *type, const char *payload, const char *extra, char *id) {
  char **lines = calloc((size_t)n + 1, sizeof(*lines));

  for (int k = 0; k < n; k++) {
    size_t len = strlen(type) + strlen(payload) + strlen(extra) + 64;

    lines[k] = malloc(len);
    snprintf(lines[k], len, "{\"id\":\"i%d\",\"type\":\"%s\",\"payload\":%s%s}", k, type, payload, extra);
  }
  wtest_submit(q, NULL, (const char *const *)lines, id);
  for (int k = 0; k < n; k++)
    free(lines[k]);
  free(lines);
}

sl_worker_t *wtest_worker(const char *q, const sl_worker_opts *o) {
  sl_worker_opts opts = {0};
  sl_worker_t *w = NULL;
  char err[512];
  int rc;

  if (o != NULL)
    opts = *o;
  if (opts.redis_url == NULL)
    opts.redis_url = itest_url();
  opts.queue = q;
  if (opts.block_ms == 0)
    opts.block_ms = 100;
  opts.quiet = 1;
  rc = sl_worker_new(&opts, &w, err, sizeof(err));
  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "sl_worker_new: %s", err);
  return w;
}

/* The watch timer of wtest_run_until, on the worker's own loop. */
typedef struct watch {
  uv_timer_t t;              /* first: freed through the handle */
  sl_worker_t *w;            /* the worker */
  int (*until)(void *ud);    /* the condition */
  void *ud;                  /* its argument */
  long long deadline;        /* itest_ms() past which the worker is stopped anyway */
  int *timed_out;            /* set when the deadline passed */
  int *closing;              /* set once the timer is closed: its memory is freed with it */
} watch;

static void watch_closed(uv_handle_t *h) {
  free(h);
}

/* Closes the watch; wtest_run_until must not look at it afterwards. */
static void watch_close(watch *wa) {
  *wa->closing = 1;
  uv_timer_stop(&wa->t);
  uv_close((uv_handle_t *)&wa->t, watch_closed);
}

static void on_watch(uv_timer_t *t) {
  watch *wa = (watch *)t;
  int late = itest_ms() > wa->deadline;

  if (wa->w->closed) {
    /* it stopped on its own (a fatal error) */
    watch_close(wa);
    return;
  }
  if (!late && !wa->until(wa->ud))
    return;
  if (late)
    *wa->timed_out = 1;
  sl_worker_stop(wa->w);
  watch_close(wa);
}

int wtest_run_until(sl_worker_t *w, int (*until)(void *ud), void *ud, int timeout_ms, int *timed_out) {
  watch *wa = calloc(1, sizeof(*wa));
  int late = 0;
  int closing = 0;
  int rc;

  wa->w = w;
  wa->until = until;
  wa->ud = ud;
  wa->deadline = itest_ms() + timeout_ms;
  wa->timed_out = &late;
  wa->closing = &closing;
  uv_timer_init(w->loop, &wa->t);
  uv_timer_start(&wa->t, on_watch, 10, 10);
  rc = sl_worker_run(w);
  /* Not uv_is_closing(&wa->t): once closed, wa is freed memory (watch_closed
   * ran inside the loop), and reading it is a use-after-free. */
  if (!closing) {
    /* run failed before its loop ran */
    watch_close(wa);
    uv_run(w->loop, UV_RUN_DEFAULT);
  }
  if (timed_out != NULL)
    *timed_out = late;
  else if (late)
    sl_test_fail(__FILE__, __LINE__, "the worker did not reach its condition within %d ms", timeout_ms);
  return rc;
}

int wtest_batch_ended(void *ud) {
  const wtest_batch *b = ud;
  redisReply *r = itest_cmd(db(), "HMGET sluice:{%s}:b:%s whole done total", b->q, b->batch);
  int ended = r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING &&
              strcmp(r->element[0]->str, "1") == 0 && r->element[1]->type == REDIS_REPLY_STRING &&
              r->element[2]->type == REDIS_REPLY_STRING && atoll(r->element[1]->str) >= atoll(r->element[2]->str);

  freeReplyObject(r);
  return ended;
}

char *wtest_result(const char *q, const char *batch, long idx) {
  redisReply *r = itest_cmd(db(), "HGET sluice:{%s}:b:%s:r %ld", q, batch, idx);
  char *s = NULL;

  if (r->type == REDIS_REPLY_STRING) {
    s = malloc(r->len + 1);
    memcpy(s, r->str, r->len + 1);
  }
  freeReplyObject(r);
  return s;
}

long long wtest_batch_num(const char *q, const char *batch, const char *field) {
  return itest_batch_num(db(), q, batch, field);
}

long long wtest_int(const char *fmt, ...) {
  va_list ap;
  redisReply *r;
  long long v;

  va_start(ap, fmt);
  r = redisvCommand(db(), fmt, ap);
  va_end(ap);
  if (r == NULL)
    sl_test_fail(__FILE__, __LINE__, "redis command %s failed", fmt);
  v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
  freeReplyObject(r);
  return v;
}
