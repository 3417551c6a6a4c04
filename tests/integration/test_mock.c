/*
 * Mock mode of http items (`sluice worker --http-mock FILE`): a real item
 * file, with ${env:API_KEY} in its headers and bodies and URLs of a host
 * that does not exist (api.invalid), runs on a worker that has no key, no
 * grant and an allow-list that names another host. Every matched item ends
 * as its canned response says, through the same steps as a real one: 2xx
 * results of the real shape with "mock":true, kept headers, metrics summed
 * by `sluice status --json`, a 404 that fails at once, a fail_rate of 1 that
 * is retried and leaves a dead letter with a real-looking error, a latency
 * over the payload's timeout_ms, the body cap. An item no canned response
 * matches is refused, naming its method and URL without the query. The
 * worker warns at start and `sluice workers` shows the file; a bad file
 * stops `sluice worker` with exit 2 and names the entry and field before
 * anything connects.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

/* ---- Helpers ---- */

/* Writes text to a file of the test's temp dir; returns its absolute path
 * (one of 4 rotating buffers). */
static const char *file(const char *name, const char *text) {
  static char abs[4][PATH_MAX];
  static int next;
  const char *path = itest_path(name);

  next = (next + 1) % 4;
  itest_write(path, text, strlen(text));
  CHECK(realpath(path, abs[next]) != NULL);
  return abs[next];
}

/* Starts a worker on q that answers http items from the mock file, with
 * no API_KEY in its environment, no grant and an allow-list of another
 * host; extra options (NULL-terminated, may be NULL) are added. */
static pid_t mock_worker(const char *q, const char *mock, const char *const *extra, const char *errlog) {
  const char *args[32] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "4", "--block-ms", "200",
                          "--http-allow", "allowed.example", "--http-mock", mock};
  const char *env[] = {"API_KEY", "SLUICE_SECRETS", NULL};
  int k = 13;

  for (int i = 0; extra != NULL && extra[i] != NULL && k < 31; i++)
    args[k++] = extra[i];
  args[k] = NULL;
  return itest_spawn_env(args, env, NULL, errlog);
}

/* The results line of item idx, parsed (cJSON_Delete it). */
static cJSON *result(redisContext *c, const char *q, const char *batch, int idx) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r %d", q, batch, idx);
  cJSON *j = r->type == REDIS_REPLY_STRING ? cJSON_Parse(r->str) : NULL;

  if (j == NULL)
    sl_test_fail(__FILE__, __LINE__, "no results line for item %d of batch %s: %.300s", idx, batch,
                 r->type == REDIS_REPLY_STRING ? r->str : "(none)");
  freeReplyObject(r);
  return j;
}

static const cJSON *at(const cJSON *j, const char *k) {
  return cJSON_GetObjectItemCaseSensitive(j, k);
}

static const char *str(const cJSON *j, const char *k) {
  return cJSON_IsString(at(j, k)) ? at(j, k)->valuestring : NULL;
}

static double num(const cJSON *j, const char *k) {
  return cJSON_IsNumber(at(j, k)) ? at(j, k)->valuedouble : -1;
}

/* ---- Tests ---- */

static const char mocks[] =
    "{\"responses\":[\n"
    " {\"method\":\"POST\",\"url\":\"https://api.invalid/v1/chat*\",\"status\":200,\n"
    "  \"headers\":{\"Content-Type\":\"application/json\",\"X-Request-Id\":\"mock-7\"},\n"
    "  \"body\":{\"id\":\"cmpl-mock\",\"choices\":[{\"text\":\"hello\"}],\"usage\":{\"cost\":0.125,\"tokens\":12}},\n"
    "  \"latency_ms\":[5,40]},\n"
    " {\"method\":\"POST\",\"url\":\"https://api.invalid/v1/flaky\",\"fail_rate\":1,\"fail_status\":503},\n"
    " {\"method\":\"GET\",\"url\":\"https://api.invalid/v1/models/*\",\"status\":404,\"body\":\"no such model\"},\n"
    " {\"url\":\"https://api.invalid/v1/slow\",\"latency_ms\":300,\"body\":\"late\"},\n"
    " {\"url\":\"https://api.invalid/v1/text\",\"body\":\"a plain text answer, longer than the cap\"}\n"
    "]}\n";

#define CHAT(id, prompt)                                                                                   \
  "{\"id\":\"" id "\",\"type\":\"http\",\"payload\":{\"url\":\"https://api.invalid/v1/chat/completions?stream=0\"," \
  "\"method\":\"POST\",\"headers\":{\"Authorization\":\"Bearer ${env:API_KEY}\"},"                          \
  "\"json\":{\"prompt\":\"" prompt "\",\"user\":\"${env:API_KEY}\"},\"keep_headers\":[\"x-request-id\"],"  \
  "\"metrics\":{\"cost\":\"$.usage.cost\"}}}\n"

/* The real item file, no keys: four chat items succeed with the canned
 * answer, a flaky one is retried into a dead letter, a 404 fails at once,
 * an unmatched URL is refused; metrics sum; the worker says it mocks. */
static void test_mock_items(void) {
  const char *q = itest_queue("mock");
  redisContext *c = itest_conn();
  const char *mock = file("mocks.json", mocks);
  const char *items = CHAT("chat-1", "one") CHAT("chat-2", "two") CHAT("chat-3", "three") CHAT("chat-4", "four")
      "{\"id\":\"flaky\",\"type\":\"http\",\"max_attempts\":3,\"backoff_ms\":10,\"payload\":{\"url\":"
      "\"https://api.invalid/v1/flaky\",\"method\":\"POST\",\"json\":{\"k\":\"${env:API_KEY}\"}}}\n"
      "{\"id\":\"missing\",\"type\":\"http\",\"max_attempts\":3,\"payload\":{\"url\":"
      "\"https://api.invalid/v1/models/gpt-x\",\"headers\":{\"Authorization\":\"Bearer ${env:API_KEY}\"}}}\n"
      "{\"id\":\"unmatched\",\"type\":\"http\",\"max_attempts\":3,\"backoff_ms\":10,\"payload\":{\"url\":"
      "\"https://api.invalid/v2/embeddings?token=hush\",\"method\":\"POST\",\"json\":{\"input\":\"x\"}}}\n";
  const char *errlog = itest_path("worker.err");
  const char *batch;
  char id[200];
  char *out = NULL;
  char *log;
  pid_t w;

  w = mock_worker(q, mock, NULL, errlog);
  itest_wait_worker(c, q, w, id, sizeof(id), 20000);
  log = itest_wait_file(errlog, "mocking http items from ", 10000);
  CHECK_CONTAINS(log, mock);
  CHECK_CONTAINS(log, " warn: mocking http items from ");
  free(log);
  {
    /* the fleet sees it: --json carries the file, the table says so */
    const char *args[] = {"workers", "--redis", itest_url(), "--queue", q, "--json", NULL};
    const char *table[] = {"workers", "--redis", itest_url(), "--queue", q, NULL};
    cJSON *j;

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    j = cJSON_Parse(out);
    CHECK(j != NULL);
    CHECK_STR(str(j, "id"), id);
    CHECK_STR(str(j, "http_mock"), mock);
    cJSON_Delete(j);
    free(out);
    CHECK_INT(itest_run(table, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "(http mocked from ");
    CHECK_CONTAINS(out, mock);
    free(out);
  }
  batch = itest_submit(q, items, strlen(items), NULL);
  itest_wait_batch(c, q, batch, 30);
  itest_stop_ok(w);

  for (int i = 0; i < 4; i++) {
    cJSON *line = result(c, q, batch, i);
    const cJSON *res = at(line, "result");
    const char *l0 = cJSON_IsString(cJSON_GetArrayItem(at(line, "log"), 0))
                         ? cJSON_GetArrayItem(at(line, "log"), 0)->valuestring
                         : NULL;
    char *text = cJSON_PrintUnformatted(res);

    CHECK_STR(str(line, "status"), "succeeded");
    CHECK_INT(num(line, "attempts"), ==, 1);
    CHECK(cJSON_IsTrue(at(res, "mock")));
    CHECK_INT(num(res, "status"), ==, 200);
    CHECK_STR(str(at(res, "body"), "id"), "cmpl-mock");
    CHECK(num(at(at(res, "body"), "usage"), "cost") == 0.125);
    CHECK_STR(str(at(res, "headers"), "x-request-id"), "mock-7"); /* kept, and only it */
    CHECK_INT(cJSON_GetArraySize(at(res, "headers")), ==, 1);
    CHECK(cJSON_IsFalse(at(res, "truncated")));
    CHECK_INT(num(res, "bytes"), ==, strlen("{\"id\":\"cmpl-mock\",\"choices\":[{\"text\":\"hello\"}],"
                                            "\"usage\":{\"cost\":0.125,\"tokens\":12}}"));
    CHECK(num(at(line, "metrics"), "cost") == 0.125);
    /* the fields of a real result, in the same order, then "mock" */
    CHECK(strncmp(text, "{\"status\":200,\"headers\":{", 25) == 0);
    CHECK_CONTAINS(text, "},\"truncated\":false,\"bytes\":");
    CHECK_CONTAINS(text, ",\"mock\":true}");
    CHECK_CONTAINS(l0, "POST https://api.invalid/v1/chat/completions -> 200 in ");
    CHECK_CONTAINS(l0, "(mock)");
    CHECK(strstr(l0, "stream=") == NULL);
    if (i == 0)
      printf("    result: %s\n    log: %s\n", text, l0);
    cJSON_free(text);
    cJSON_Delete(line);
  }
  {
    /* fail_rate 1: every attempt a 503, retried to max_attempts, then a dead letter */
    cJSON *line = result(c, q, batch, 4);
    const cJSON *errs = at(line, "errors");

    CHECK_STR(str(line, "status"), "failed");
    CHECK_INT(num(line, "attempts"), ==, 3);
    CHECK_STR(str(line, "error"), "HTTP 503: simulated failure (--http-mock, fail_rate 1)");
    CHECK_INT(cJSON_GetArraySize(errs), ==, 2);
    CHECK_CONTAINS(cJSON_GetArrayItem(errs, 0)->valuestring, "HTTP 503: simulated failure");
    printf("    fail_rate 1: %s\n", str(line, "error"));
    cJSON_Delete(line);
  }
  {
    /* a canned 404 fails at once, as a real one does */
    cJSON *line = result(c, q, batch, 5);

    CHECK_STR(str(line, "status"), "failed");
    CHECK_INT(num(line, "attempts"), ==, 1);
    CHECK_STR(str(line, "error"), "HTTP 404: no such model");
    cJSON_Delete(line);
  }
  {
    /* no canned response: refused at once, method and URL named, the query left out */
    cJSON *line = result(c, q, batch, 6);
    const char *e = str(line, "error");

    CHECK_STR(str(line, "status"), "failed");
    CHECK_INT(num(line, "attempts"), ==, 1);
    CHECK(cJSON_IsTrue(at(line, "refused")));
    CHECK_CONTAINS(e, "no mock response matches POST https://api.invalid/v2/embeddings (--http-mock ");
    CHECK(strstr(e, "hush") == NULL);
    printf("    unmatched: %s\n", e);
    cJSON_Delete(line);
  }
  CHECK_INT(itest_batch_num(c, q, batch, "refused"), ==, 1);
  {
    redisReply *r = itest_cmd(c, "XLEN sluice:{%s}:dead", q);

    CHECK_INT(r->integer, ==, 2); /* the flaky item and the 404; a refused item leaves none */
    freeReplyObject(r);
  }
  {
    /* the cost metric sums exactly: 4 x 0.125 */
    const char *args[] = {"status", "--redis", itest_url(), "--queue", q, batch, "--json", NULL};
    cJSON *st;

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    st = cJSON_Parse(out);
    CHECK(st != NULL);
    CHECK(num(at(at(st, "metrics"), "cost"), "all") == 0.5);
    CHECK(num(at(at(st, "metrics"), "cost"), "final") == 0.5);
    CHECK_INT(num(st, "succeeded"), ==, 4);
    CHECK_INT(num(st, "failed"), ==, 3);
    cJSON_Delete(st);
    free(out);
  }
  itest_check_drained(c, q);
  redisFree(c);
}

/* The same response path as real answers: --http-max-body cuts a canned
 * body (truncated, bytes the whole size); a latency over the payload's own
 * timeout_ms fails the attempt as a transfer timeout, retryably. */
static void test_mock_cap_and_timeout(void) {
  const char *q = itest_queue("mockcap");
  redisContext *c = itest_conn();
  const char *mock = file("mocks.json", mocks);
  const char *items =
      "{\"type\":\"http\",\"payload\":{\"url\":\"https://api.invalid/v1/text\"}}\n"
      "{\"type\":\"http\",\"max_attempts\":2,\"backoff_ms\":10,\"payload\":{\"url\":\"https://api.invalid/v1/slow\","
      "\"timeout_ms\":50}}\n"
      "{\"type\":\"http\",\"payload\":{\"url\":\"https://api.invalid/v1/slow\"}}\n";
  const char *cap[] = {"--http-max-body", "7", NULL};
  const char *batch;
  cJSON *line;
  pid_t w;

  w = mock_worker(q, mock, cap, itest_path("worker.err"));
  batch = itest_submit(q, items, strlen(items), NULL);
  itest_wait_batch(c, q, batch, 30);
  itest_stop_ok(w);

  line = result(c, q, batch, 0);
  CHECK_STR(str(line, "status"), "succeeded");
  CHECK_STR(str(at(line, "result"), "body"), "a plain");
  CHECK(cJSON_IsTrue(at(at(line, "result"), "truncated")));
  CHECK_INT(num(at(line, "result"), "bytes"), ==, strlen("a plain text answer, longer than the cap"));
  CHECK(cJSON_IsTrue(at(at(line, "result"), "mock")));
  cJSON_Delete(line);

  line = result(c, q, batch, 1);
  CHECK_STR(str(line, "status"), "failed");
  CHECK_INT(num(line, "attempts"), ==, 2);
  CHECK_CONTAINS(str(line, "error"), "curl: Timeout was reached: no mock answer within the payload's timeout_ms");
  cJSON_Delete(line);

  line = result(c, q, batch, 2);
  CHECK_STR(str(line, "status"), "succeeded");
  CHECK_STR(str(at(line, "result"), "body"), "late");
  /* the latency was waited out: 300 ms by the loop's clock, which counts in
   * whole ms, as does the duration's wall clock (so one may read 299) */
  CHECK(num(line, "duration_ms") >= 295);
  cJSON_Delete(line);
  redisFree(c);
}

/* A bad mock file: `sluice worker` exits 2 naming the file, the entry and
 * the field, before it connects (the Redis URL here reaches nothing). */
static void test_bad_mock_file(void) {
  static const struct {
    const char *text;   /* the file */
    const char *says;   /* in the message */
  } cases[] = {
      {"{\"responses\":[{\"url\":\"https://a.invalid/*\"},{\"url\":\"https://b.invalid/\",\"status\":\"ok\"}]}",
       ": responses[1].status: expected an integer from 200 to 599, got \"ok\""},
      {"{\"responses\":[{\"url\":\"https://a.invalid/*\",\"latency_ms\":[200,50]}]}",
       ": responses[0].latency_ms: expected milliseconds from 0 to 600000, or [MIN, MAX] with MIN <= MAX, got [200,50]"},
      {"{\"responses\":[{\"url\":\"https://a.invalid/*\",\"fail_rate\":1.5}]}",
       ": responses[0].fail_rate: expected a number from 0 to 1, got 1.5"},
      {"{\"responses\":[{\"method\":\"POST\"}]}", ": responses[0].url: missing"},
      {"{\"responses\":[{\"url\":\"api.invalid/v1\"}]}", ": responses[0].url: \"api.invalid/v1\" starts with neither"},
      {"{\"responses\":[{\"url\":\"*\",\"header\":{}}]}", ": responses[0].header: unknown field"},
      {"{\"responses\":[{\"url\":\"*\",\"headers\":{\"X-A\":\"1\",\"x-a\":\"2\"}}]}",
       ": responses[0].headers.x-a: given twice"},
      {"{\"responses\":[\n  {\"url\":\"*\",}\n]}", ": invalid JSON at line 2, column "},
      {"{\"responses\":[]}", ": responses: empty"},
      {"[]", ": expected one object {\"responses\":[...]}"},
  };
  const char *url = "redis://127.0.0.1:1"; /* nothing listens: a connection attempt would exit 1 */

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *path = file("bad.json", cases[i].text);
    const char *args[] = {"worker", "--redis", url, "--http-mock", path, NULL};
    char *err = NULL;

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "--http-mock ");
    CHECK_CONTAINS(err, cases[i].says);
    if (i == 0)
      printf("    %s", err);
    free(err);
  }
  {
    const char *args[] = {"worker", "--redis", url, "--http-mock", itest_path("no-such.json"), NULL};
    char *err = NULL;

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "no-such.json: cannot read it: No such file or directory");
    free(err);
  }
}

static const sl_test tests[] = {
    {"mock_items", test_mock_items, 120},
    {"mock_cap_and_timeout", test_mock_cap_and_timeout, 60},
    {"bad_mock_file", test_bad_mock_file, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
