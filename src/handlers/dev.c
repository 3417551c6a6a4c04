/*
 * Development handlers, which need no network: `noop` succeeds at once;
 * `sleep` waits payload.ms milliseconds on a uv timer and then fails with
 * probability payload.fail_rate (both optional, validated at submit), with a
 * simulated Retry-After when payload.retry_after_ms is given. A sleep
 * failure is retryable; a cancelled sleep stops its timer. Demos, tests and
 * benchmarks use them. Only the public job contract is used.
 */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "id.h"
#include "json.h"
#include "handlers/dev.h"

typedef struct sleep_job {
  uv_timer_t timer; /* first: freed through the handle in close_cb */
  sl_job_t *job;    /* the job, until finished */
  int64_t ms;       /* how long, ms */
  double fail_rate; /* 0..1 */
  int64_t retry_after_ms; /* a simulated failure carries this Retry-After, ms; 0: none */
} sleep_job;

static void noop_start(sl_job_t *j, void *ud) {
  (void)ud;
  sl_job_succeed(j, NULL, 0);
}

static void close_cb(uv_handle_t *h) {
  sl_free(h);
}

/* The worker gave up the attempt (timeout, takeover, stop): stop sleeping. */
static void on_cancel(sl_job_t *j, void *ud) {
  sleep_job *s = ud;

  uv_timer_stop(&s->timer);
  uv_close((uv_handle_t *)&s->timer, close_cb);
  sl_job_fail(j, "sleep: cancelled");
}

static void on_timer(uv_timer_t *t) {
  sleep_job *s = (sleep_job *)t;
  sl_job_t *j = s->job;

  if (s->fail_rate > 0 && sl__random_unit() < s->fail_rate) {
    if (s->retry_after_ms > 0) {
      sl_job_retry_after(j, s->retry_after_ms);
      sl_job_fail(j, "sleep: simulated 429 Too Many Requests, Retry-After %lld ms", (long long)s->retry_after_ms);
    } else {
      sl_job_fail(j, "sleep: simulated failure after %lld ms (fail_rate %g)", (long long)s->ms, s->fail_rate);
    }
  } else {
    char res[64];
    int n = snprintf(res, sizeof(res), "{\"slept_ms\":%lld}", (long long)s->ms);

    sl_job_succeed(j, res, (size_t)n);
  }
  uv_close((uv_handle_t *)t, close_cb);
}

static void sleep_start(sl_job_t *j, void *ud) {
  size_t len;
  const char *p = sl_job_payload(j, &len);
  cJSON *pl = cJSON_ParseWithLength(p, len);
  const cJSON *ms = cJSON_GetObjectItemCaseSensitive(pl, "ms");
  const cJSON *fr = cJSON_GetObjectItemCaseSensitive(pl, "fail_rate");
  sleep_job *s;
  char why[96];
  size_t at;

  (void)ud;
  if (pl == NULL && sl__json_validate(p, len, SL_ITEM_MAX_DEPTH, &at, why, sizeof(why)) == 0) {
    /* JSON that cJSON could not parse: it ran out of memory (read as no
     * payload, the item would sleep 0 ms and succeed) */
    sl_job_give_back(j, "sleep: out of memory");
    return;
  }
  if (pl == NULL || (!cJSON_IsObject(pl) && !cJSON_IsNull(pl))) {
    cJSON_Delete(pl);
    sl_job_fail(j, "sleep: payload must be an object like {\"ms\":100}");
    return;
  }
  s = sl_calloc(1, sizeof(*s));
  if (s == NULL) {
    cJSON_Delete(pl);
    sl_job_give_back(j, "sleep: out of memory");
    return;
  }
  s->job = j;
  s->ms = cJSON_IsNumber(ms) && ms->valuedouble >= 0 ? (int64_t)ms->valuedouble : 0;
  s->fail_rate = cJSON_IsNumber(fr) ? fr->valuedouble : 0;
  {
    const cJSON *ra = cJSON_GetObjectItemCaseSensitive(pl, "retry_after_ms");

    s->retry_after_ms = cJSON_IsNumber(ra) && ra->valuedouble > 0 ? (int64_t)ra->valuedouble : 0;
  }
  cJSON_Delete(pl);
  uv_timer_init(sl_job_loop(j), &s->timer);
  uv_timer_start(&s->timer, on_timer, (uint64_t)s->ms, 0);
  sl_job_on_cancel(j, on_cancel, s);
}

/* ---- The handler ---- */

static int dev_open(const sl_handler_env *env, void **state, char *err, size_t errlen) {
  int rc = sl_worker_register(env->worker, "noop", noop_start, NULL);

  if (rc == 0)
    rc = sl_worker_register(env->worker, "sleep", sleep_start, NULL);
  if (rc != 0)
    snprintf(err, errlen, "cannot register the development types: %s", sl_strerror(rc));
  *state = NULL;
  return rc;
}

static void dev_free(void *state) {
  (void)state;
}

const sl_handler_vt sl__handler_dev = {"dev", dev_open, NULL, NULL, dev_free, NULL};
