/*
 * job.c: one attempt of an item, as a handler sees it (sluice/job.h) and as
 * the worker records it. Real jobs run on an embedded worker with its own
 * loop against the program's redis-server (tests/lib/wtest.c), served by C
 * handlers of this file; items go in through the client API and outcomes
 * are read back from Redis: timeouts and cancel hooks, completions after
 * the worker gave up, the size rules of results lines, base64 results,
 * refusals, and the accessors.
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include <sluice/sluice.h>

#include "harness.h"
#include "itest.h"
#include "wtest.h"

/* ---- Helpers ---- */

/* The results line of item idx, parsed (cJSON_Delete it); fails without one. */
static cJSON *result_obj(const char *q, const char *batch, long idx) {
  char *line = wtest_result(q, batch, idx);
  cJSON *o;

  if (line == NULL)
    sl_test_fail(__FILE__, __LINE__, "item %ld of batch %s has no results line", idx, batch);
  o = cJSON_Parse(line);
  if (o == NULL)
    sl_test_fail(__FILE__, __LINE__, "results line of item %ld is not JSON: %.200s", idx, line);
  free(line);
  return o;
}

static const char *jstr(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static long long jnum(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

  return cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
}

/* Runs a worker serving `type` with `start` until the batch has ended. */
static void run_batch(const char *q, const char *batch, const char *type, sl_handler_start_fn start,
                      const sl_worker_opts *o) {
  sl_worker_t *w = wtest_worker(q, o);
  wtest_batch b = {q, batch};

  CHECK_INT(sl_worker_register(w, type, start, NULL), ==, 0);
  CHECK_INT(wtest_run_until(w, wtest_batch_ended, &b, 20000, NULL), ==, 0);
  sl_worker_free(w);
}

/* A timer that calls fn(job) after ms; freed once closed. */
typedef struct later {
  uv_timer_t t;                 /* first: freed through the handle */
  sl_job_t *job;                /* the job it completes */
  void (*fn)(struct later *l);  /* what it does */
} later;

static void later_closed(uv_handle_t *h) {
  free(h);
}

static void on_later(uv_timer_t *t) {
  later *l = (later *)t;

  l->fn(l);
  uv_close((uv_handle_t *)t, later_closed);
}

static void after(sl_job_t *j, int64_t ms, void (*fn)(later *l)) {
  later *l = calloc(1, sizeof(*l));

  l->job = j;
  l->fn = fn;
  uv_timer_init(sl_job_loop(j), &l->t);
  uv_timer_start(&l->t, on_later, (uint64_t)ms, 0);
}

/* ---- Timeouts and cancel hooks ---- */

static int hang_starts;     /* attempts started */
static int hang_cancels;    /* cancel hook calls */
static int hang_attempt[4]; /* sl_job_attempt of each start */

static void hang_cancel(sl_job_t *j, void *ud) {
  (void)ud;
  hang_cancels++;
  sl_job_fail(j, "cancelled by the test"); /* ignored: the worker recorded the timeout */
}

static void hang_start(sl_job_t *j, void *ud) {
  (void)ud;
  if (hang_starts < 4)
    hang_attempt[hang_starts] = sl_job_attempt(j);
  hang_starts++;
  sl_job_on_cancel(j, hang_cancel, NULL);
}

/* A handler that never finishes: each attempt times out after timeout_ms
 * ("timed out after 200 ms"), which is retryable (attempt 2 runs), its
 * cancel hook is called once per attempt, and the last timeout fails the
 * item with the earlier one in its errors. */
static void test_timeout_retry_then_fail(void) {
  const char *q = itest_queue("timeout");
  const char *lines[] = {
      "{\"id\":\"t\",\"payload\":null,\"type\":\"hang\",\"timeout_ms\":200,\"max_attempts\":2,"
      "\"backoff_ms\":1,\"backoff_max_ms\":1}",
      NULL};
  char batch[SL_NAME_MAX + 1];
  cJSON *r;
  const cJSON *errs;

  wtest_submit(q, NULL, lines, batch);
  run_batch(q, batch, "hang", hang_start, NULL);
  CHECK_INT(hang_starts, ==, 2);
  CHECK_INT(hang_attempt[0], ==, 1);
  CHECK_INT(hang_attempt[1], ==, 2);
  CHECK_INT(hang_cancels, ==, 2);
  r = result_obj(q, batch, 0);
  CHECK_STR(jstr(r, "status"), "failed");
  CHECK_STR(jstr(r, "error"), "timed out after 200 ms");
  CHECK_INT(jnum(r, "attempts"), ==, 2);
  CHECK_INT(jnum(r, "duration_ms"), >=, 190);
  errs = cJSON_GetObjectItemCaseSensitive(r, "errors");
  CHECK(cJSON_IsArray(errs));
  CHECK_INT(cJSON_GetArraySize(errs), ==, 1);
  CHECK_STR(cJSON_GetArrayItem(errs, 0)->valuestring, "timed out after 200 ms");
  cJSON_Delete(r);
  CHECK_INT(wtest_batch_num(q, batch, "failed"), ==, 1);
  CHECK_INT(wtest_batch_num(q, batch, "done"), ==, 1);
}

static int late_cancels;   /* cancel hook calls */
static int late_completed; /* handler completions after the timeout */

static void late_cancel(sl_job_t *j, void *ud) {
  (void)j;
  (void)ud;
  late_cancels++; /* keeps working: it completes later, on its own timer */
}

static void late_done(later *l) {
  late_completed++;
  sl_job_succeed(l->job, "{\"late\":true}", 13); /* ignored, and frees the job */
}

/* Item "hook" sets a cancel hook that does not complete; item "nohook" sets
 * none. Both succeed 300 ms after their start, past the 100 ms timeout. */
static void late_start(sl_job_t *j, void *ud) {
  (void)ud;
  if (strcmp(sl_job_item_id(j), "hook") == 0)
    sl_job_on_cancel(j, late_cancel, NULL);
  after(j, 300, late_done);
}

/* A handler that completes after the worker gave its attempt up: the
 * success is ignored (the item failed with the timeout), the job is freed
 * then and not before (the sanitizer build checks for the leak and the
 * use after free), with or without a cancel hook. */
static void test_complete_after_cancel(void) {
  const char *q = itest_queue("late");
  const char *lines[] = {"{\"id\":\"hook\",\"payload\":null,\"type\":\"late\",\"timeout_ms\":100}",
                         "{\"id\":\"nohook\",\"payload\":null,\"type\":\"late\",\"timeout_ms\":100}", NULL};
  char batch[SL_NAME_MAX + 1];

  wtest_submit(q, NULL, lines, batch);
  run_batch(q, batch, "late", late_start, NULL);
  /* sl_worker_run returned once the loop ran out: the late timers ran */
  CHECK_INT(late_cancels, ==, 1);
  CHECK_INT(late_completed, ==, 2);
  for (long i = 0; i < 2; i++) {
    cJSON *r = result_obj(q, batch, i);

    CHECK_STR(jstr(r, "status"), "failed");
    CHECK_STR(jstr(r, "error"), "timed out after 100 ms");
    CHECK(cJSON_GetObjectItemCaseSensitive(r, "result") == NULL);
    cJSON_Delete(r);
  }
  CHECK_INT(wtest_batch_num(q, batch, "succeeded"), ==, 0);
  CHECK_INT(wtest_batch_num(q, batch, "failed"), ==, 2);
}

/* ---- Results lines ---- */

static char *filled(size_t n, char c) {
  char *p = malloc(n + 1);

  memset(p, c, n);
  p[n] = '\0';
  return p;
}

/* A JSON string of exactly n bytes, quotes included. */
static char *json_string_of(size_t n) {
  char *p = filled(n, 'j');

  p[0] = '"';
  p[n - 1] = '"';
  return p;
}

static void res_start(sl_job_t *j, void *ud) {
  const char *id = sl_job_item_id(j);
  char *p = NULL;
  size_t n = 0;

  (void)ud;
  if (strcmp(id, "exact") == 0) {
    n = SL_RESULT_MAX;
    p = json_string_of(n);
  } else if (strcmp(id, "over") == 0) {
    n = SL_RESULT_MAX + 1;
    p = json_string_of(n);
  } else if (strcmp(id, "text_fits") == 0) {
    n = SL_RESULT_MAX - 2; /* two quotes make it SL_RESULT_MAX */
    p = filled(n, 't');
  } else if (strcmp(id, "text_escapes") == 0) {
    n = 800000; /* "a\n" x 400,000: 1,200,002 bytes once escaped */
    p = malloc(n + 1);
    for (size_t i = 0; i < n; i += 2) {
      p[i] = 'a';
      p[i + 1] = '\n';
    }
    p[n] = '\0';
  } else if (strcmp(id, "utf8") == 0) {
    sl_job_succeed(j, "ab\xff" "cd", 5);
    return;
  } else if (strcmp(id, "null") == 0) {
    sl_job_succeed(j, NULL, 0);
    return;
  } else if (strcmp(id, "b64") == 0 || strcmp(id, "b64_max") == 0 || strcmp(id, "b64_over") == 0) {
    unsigned char *b;

    n = strcmp(id, "b64") == 0 ? 256 : strcmp(id, "b64_max") == 0 ? 786429 : 786430;
    b = malloc(n);
    for (size_t i = 0; i < n; i++)
      b[i] = (unsigned char)(i * 7 + i / 256);
    sl_job_succeed_base64(j, b, n);
    free(b);
    return;
  }
  sl_job_succeed(j, p, n);
  free(p);
}

static size_t b64_decode(const char *s, unsigned char *out) {
  static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t n = 0;
  uint32_t acc = 0;
  int bits = 0;

  for (; *s != '\0' && *s != '='; s++) {
    const char *d = strchr(digits, *s);

    CHECK(d != NULL);
    acc = acc << 6 | (uint32_t)(d - digits);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (unsigned char)(acc >> bits);
    }
  }
  return n;
}

/* The size rules of a result: a JSON result of exactly SL_RESULT_MAX bytes
 * is stored, one byte more fails for good; text that is not JSON is stored
 * as a JSON string when its escaped form fits, and fails for good when
 * escaping takes it past the limit; invalid UTF-8 fails with its offset;
 * NULL stores null. */
static void test_result_sizes(void) {
  const char *q = itest_queue("sizes");
  const char *lines[] = {"{\"id\":\"exact\",\"payload\":null,\"type\":\"res\"}",
                         "{\"id\":\"over\",\"payload\":null,\"type\":\"res\"}",
                         "{\"id\":\"text_fits\",\"payload\":null,\"type\":\"res\"}",
                         "{\"id\":\"text_escapes\",\"payload\":null,\"type\":\"res\"}",
                         "{\"id\":\"utf8\",\"payload\":null,\"type\":\"res\"}",
                         "{\"id\":\"null\",\"payload\":null,\"type\":\"res\"}",
                         NULL};
  char batch[SL_NAME_MAX + 1];
  cJSON *r;
  const cJSON *v;

  wtest_submit(q, NULL, lines, batch);
  run_batch(q, batch, "res", res_start, NULL);

  r = result_obj(q, batch, 0);
  CHECK_STR(jstr(r, "status"), "succeeded");
  v = cJSON_GetObjectItemCaseSensitive(r, "result");
  CHECK(cJSON_IsString(v));
  CHECK_INT(strlen(v->valuestring), ==, SL_RESULT_MAX - 2);
  cJSON_Delete(r);

  r = result_obj(q, batch, 1);
  CHECK_STR(jstr(r, "status"), "failed");
  CHECK_STR(jstr(r, "error"), "result of 1,048,577 bytes is over the 1 MiB limit");
  CHECK_INT(jnum(r, "attempts"), ==, 1);
  cJSON_Delete(r);

  r = result_obj(q, batch, 2);
  CHECK_STR(jstr(r, "status"), "succeeded");
  v = cJSON_GetObjectItemCaseSensitive(r, "result");
  CHECK(cJSON_IsString(v));
  CHECK_INT(strlen(v->valuestring), ==, SL_RESULT_MAX - 2);
  CHECK(v->valuestring[0] == 't');
  cJSON_Delete(r);

  r = result_obj(q, batch, 3);
  CHECK_STR(jstr(r, "status"), "failed");
  CHECK_STR(jstr(r, "error"),
            "result of 800,000 bytes is over the 1 MiB limit after escaping (1,200,002 bytes as a JSON string)");
  cJSON_Delete(r);

  r = result_obj(q, batch, 4);
  CHECK_STR(jstr(r, "status"), "failed");
  CHECK_STR(jstr(r, "error"), "result of 5 bytes is not valid UTF-8 (byte 2 is 0xff) and not JSON; a handler "
                              "stores binary data as base64");
  cJSON_Delete(r);

  r = result_obj(q, batch, 5);
  CHECK_STR(jstr(r, "status"), "succeeded");
  CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r, "result")));
  cJSON_Delete(r);

  CHECK_INT(wtest_batch_num(q, batch, "succeeded"), ==, 3);
  CHECK_INT(wtest_batch_num(q, batch, "failed"), ==, 3);
  CHECK_INT(wtest_int("XLEN sluice:{%s}:dead", q), ==, 3); /* failures for good are dead letters */
}

/* sl_job_succeed_base64: the bytes come back from the results line (with
 * "encoding":"base64"); 786,429 bytes (1,048,572 encoded, plus two quotes)
 * is the largest result that fits, one byte more fails for good. */
static void test_result_base64(void) {
  const char *q = itest_queue("b64");
  const char *lines[] = {"{\"id\":\"b64\",\"payload\":null,\"type\":\"res\"}",
                         "{\"id\":\"b64_max\",\"payload\":null,\"type\":\"res\"}",
                         "{\"id\":\"b64_over\",\"payload\":null,\"type\":\"res\"}", NULL};
  char batch[SL_NAME_MAX + 1];
  unsigned char *dec = malloc(800000);
  cJSON *r;
  size_t n;

  wtest_submit(q, NULL, lines, batch);
  run_batch(q, batch, "res", res_start, NULL);

  for (long idx = 0; idx < 2; idx++) {
    size_t want = idx == 0 ? 256 : 786429;

    r = result_obj(q, batch, idx);
    CHECK_STR(jstr(r, "status"), "succeeded");
    CHECK_STR(jstr(r, "encoding"), "base64");
    CHECK(jstr(r, "result") != NULL);
    CHECK_INT(strlen(jstr(r, "result")), ==, 4 * ((want + 2) / 3));
    n = b64_decode(jstr(r, "result"), dec);
    CHECK_INT(n, ==, want);
    for (size_t i = 0; i < n; i++) {
      if (dec[i] != (unsigned char)(i * 7 + i / 256))
        sl_test_fail(__FILE__, __LINE__, "item %ld: byte %zu differs", idx, i);
    }
    cJSON_Delete(r);
  }
  r = result_obj(q, batch, 2);
  CHECK_STR(jstr(r, "status"), "failed");
  CHECK_STR(jstr(r, "error"), "result of 786430 bytes is over the limit of 1048576 bytes once base64-encoded");
  CHECK(jstr(r, "encoding") == NULL);
  cJSON_Delete(r);
  free(dec);
}

/* ---- Refusals ---- */

static void refuse_start(sl_job_t *j, void *ud) {
  (void)ud;
  if (strcmp(sl_job_item_id(j), "refused") == 0)
    sl_job_refuse(j, "secret %s is not granted to worker %s", "API_TOKEN", "w");
  else
    sl_job_fail_final(j, "bad input");
}

/* sl_job_refuse: failed for good with "refused":true, counted in the
 * batch's failed and refused, and no dead letter (a final failure beside
 * it leaves one); retry-able later with sl_batch_retry. */
static void test_refuse(void) {
  const char *q = itest_queue("refuse");
  const char *lines[] = {"{\"id\":\"refused\",\"payload\":null,\"type\":\"r\",\"max_attempts\":3}",
                         "{\"id\":\"final\",\"payload\":null,\"type\":\"r\",\"max_attempts\":3}", NULL};
  char batch[SL_NAME_MAX + 1];
  cJSON *r;

  wtest_submit(q, NULL, lines, batch);
  run_batch(q, batch, "r", refuse_start, NULL);
  r = result_obj(q, batch, 0);
  CHECK_STR(jstr(r, "status"), "failed");
  CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "refused")));
  CHECK_STR(jstr(r, "error"), "secret API_TOKEN is not granted to worker w");
  CHECK_INT(jnum(r, "attempts"), ==, 1); /* final at once, attempts left or not */
  cJSON_Delete(r);
  r = result_obj(q, batch, 1);
  CHECK_STR(jstr(r, "status"), "failed");
  CHECK(cJSON_GetObjectItemCaseSensitive(r, "refused") == NULL);
  cJSON_Delete(r);
  CHECK_INT(wtest_batch_num(q, batch, "failed"), ==, 2);
  CHECK_INT(wtest_batch_num(q, batch, "refused"), ==, 1);
  CHECK_INT(wtest_int("XLEN sluice:{%s}:dead", q), ==, 1);
  {
    sl_client_t *c = NULL;
    char err[256];
    size_t requeued = 0;

    CHECK_INT(sl_client_open(itest_url(), &c, err, sizeof(err)), ==, 0);
    CHECK_INT(sl_batch_retry(c, q, batch, &requeued), ==, 0);
    CHECK_INT(requeued, ==, 2);
    sl_client_close(c);
  }
}

/* ---- Accessors ---- */

#define ACC_MAX 4
static struct {
  int seen;
  char item_id[256];
  long long index;
  char worker[200];
  char type[SL_NAME_MAX + 1];
  char batch[SL_NAME_MAX + 1];
  char payload[64];
  int attempt;
  long long timeout_ms;
  int loop_ok;
} acc[ACC_MAX];
static sl_worker_t *acc_worker;

static void acc_start(sl_job_t *j, void *ud) {
  long long i = sl_job_index(j);
  size_t len = 0;
  const char *p = sl_job_payload(j, &len);

  (void)ud;
  if (i >= 0 && i < ACC_MAX) {
    acc[i].seen++;
    snprintf(acc[i].item_id, sizeof(acc[i].item_id), "%s", sl_job_item_id(j));
    acc[i].index = i;
    snprintf(acc[i].worker, sizeof(acc[i].worker), "%s", sl_job_worker_id(j));
    snprintf(acc[i].type, sizeof(acc[i].type), "%s", sl_job_type(j));
    snprintf(acc[i].batch, sizeof(acc[i].batch), "%s", sl_job_batch(j));
    snprintf(acc[i].payload, sizeof(acc[i].payload), "%.*s", (int)len, p);
    acc[i].attempt = sl_job_attempt(j);
    acc[i].timeout_ms = sl_job_timeout_ms(j);
    acc[i].loop_ok = sl_job_loop(j) != NULL;
  }
  sl_job_succeed(j, NULL, 0);
}

/* The accessors: the item id unescaped (quotes, backslashes, non-ASCII and
 * control characters; the line number when the item has none; an integer
 * id as its digits), the index from 0, the worker's id, the type, batch,
 * raw payload, attempt and timeout. */
static void test_accessors(void) {
  const char *q = itest_queue("acc");
  const char *lines[] = {
      "{\"id\":\"a\\\"b\\\\c\\u00e9\\t/\",\"type\":\"acc\",\"payload\":{\"x\":[1, 2]},\"timeout_ms\":1234}",
      "{\"type\":\"acc\",\"payload\":\"s\"}", "{\"id\":77,\"payload\":null,\"type\":\"acc\"}", NULL};
  char batch[SL_NAME_MAX + 1];
  sl_worker_opts o = {0};
  wtest_batch b;

  wtest_submit(q, NULL, lines, batch);
  b.q = q;
  b.batch = batch;
  o.concurrency = 1;
  acc_worker = wtest_worker(q, &o);
  CHECK_INT(sl_worker_register(acc_worker, "acc", acc_start, NULL), ==, 0);
  CHECK_INT(wtest_run_until(acc_worker, wtest_batch_ended, &b, 20000, NULL), ==, 0);
  for (int i = 0; i < 3; i++) {
    CHECK_INT(acc[i].seen, ==, 1);
    CHECK_INT(acc[i].index, ==, i);
    CHECK_STR(acc[i].worker, sl_worker_id(acc_worker));
    CHECK_STR(acc[i].type, "acc");
    CHECK_STR(acc[i].batch, batch);
    CHECK_INT(acc[i].attempt, ==, 1);
    CHECK(acc[i].loop_ok);
  }
  CHECK_STR(acc[0].item_id, "a\"b\\c\xc3\xa9\t/");
  CHECK_STR(acc[0].payload, "{\"x\":[1, 2]}"); /* raw, as submitted */
  CHECK_INT(acc[0].timeout_ms, ==, 1234);
  CHECK_STR(acc[1].item_id, "2");
  CHECK_STR(acc[1].payload, "\"s\"");
  CHECK_INT(acc[1].timeout_ms, ==, 30000);
  CHECK_STR(acc[2].item_id, "77");
  CHECK_STR(acc[2].payload, "null");
  sl_worker_free(acc_worker);
  /* the results line carries the id as stored (escaped) */
  {
    cJSON *r = result_obj(q, batch, 0);

    CHECK_STR(jstr(r, "id"), "a\"b\\c\xc3\xa9\t/");
    cJSON_Delete(r);
  }
}

static const sl_test tests[] = {
    {"timeout_retry_then_fail", test_timeout_retry_then_fail, 30},
    {"complete_after_cancel", test_complete_after_cancel, 30},
    {"result_sizes", test_result_sizes, 60},
    {"result_base64", test_result_base64, 60},
    {"refuse", test_refuse, 30},
    {"accessors", test_accessors, 30},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
