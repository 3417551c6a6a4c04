/*
 * A producer gets its work done and nothing more.
 *
 * Attacks an untrusted producer could make, each tried for real: http items
 * that try to smuggle header lines or a second request onto a reused
 * connection, to capture the next item's request (and its resolved secret)
 * as a body, or to read variables the worker was not granted; hosts and
 * ports outside the allow-list; terminal escapes in names; code loaded by a
 * client that is not an operator. The HTTP server (raw_server.py) records
 * the raw bytes of every request and cuts the byte stream into requests the
 * way a naive backend would, so anything smuggled would show up as a
 * request of its own.
 *
 * The worker's own checks are attacked directly: the bad items are written
 * with FCALL sluice_v1_submit, as a producer in another language could,
 * bypassing `sluice submit`; the same items through `sluice submit` are
 * refused there too (exit 2, line and field named).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

/* The attack table holds printf formats (the server's port goes in). */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

#define SECRET "tok-5ecr3t-value" /* TEST_API_TOKEN: only granted hosts may see it */

static pid_t server_pid;
static int server_port;
static char server_log[600];

static void start_server(void) {
  char script[600];
  char portfile[600];
  char *port;
  long long t0 = itest_ms();

  snprintf(portfile, sizeof(portfile), "%s", itest_path("raw.port"));
  snprintf(server_log, sizeof(server_log), "%s", itest_path("raw.log"));
  unlink(portfile);
  unlink(server_log);
  {
    /* raw_server.py sits next to this file */
    const char *slash = strrchr(__FILE__, '/');

    snprintf(script, sizeof(script), "%.*s/raw_server.py", slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
  }
  fflush(stdout);
  server_pid = fork();
  CHECK(server_pid >= 0);
  if (server_pid == 0) {
    execl("/usr/bin/python3", "python3", script, portfile, server_log, (char *)NULL);
    _exit(127);
  }
  while ((port = itest_read(portfile, NULL)) == NULL) {
    if (itest_ms() - t0 > 10000)
      sl_test_fail(__FILE__, __LINE__, "raw_server.py did not start");
    usleep(10000);
  }
  server_port = atoi(port);
  free(port);
}

static void stop_server(void) {
  kill(server_pid, SIGKILL);
  waitpid(server_pid, NULL, 0);
}

/* The requests the server recorded, as a cJSON array. */
static cJSON *server_requests(void) {
  char *text = itest_read(server_log, NULL);
  cJSON *arr = cJSON_CreateArray();
  char *line = text;

  while (line != NULL && *line != '\0') {
    char *nl = strchr(line, '\n');
    cJSON *e;

    if (nl != NULL)
      *nl = '\0';
    e = cJSON_Parse(line);
    CHECK(e != NULL);
    cJSON_AddItemToArray(arr, e);
    line = nl != NULL ? nl + 1 : NULL;
  }
  free(text);
  return arr;
}

static const char *jstr(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsString(v) ? v->valuestring : "";
}

/* Writes the item objects d[0..n) as a whole batch through FCALL
 * sluice_v1_submit: what a producer in another language could write (the
 * function checks the item's fields, the worker its payload). */
static redisReply *raw_submit_reply(redisContext *c, const char *q, const char *batch, const char *const *d, int n) {
  const char *av[16 + 3 * 128];
  char keys[5][200];
  char prefix[120];
  int k = 0;
  redisReply *r;

  CHECK(n <= 128);
  snprintf(prefix, sizeof(prefix), "sluice:{%s}:", q);
  snprintf(keys[0], sizeof(keys[0]), "%sb:%s", prefix, batch);
  snprintf(keys[1], sizeof(keys[1]), "%ss:high", prefix);
  snprintf(keys[2], sizeof(keys[2]), "%ss:normal", prefix);
  snprintf(keys[3], sizeof(keys[3]), "%ss:low", prefix);
  snprintf(keys[4], sizeof(keys[4]), "%sbatches", prefix);
  av[k++] = "FCALL";
  av[k++] = "sluice_v1_submit";
  av[k++] = "5";
  for (int i = 0; i < 5; i++)
    av[k++] = keys[i];
  av[k++] = batch;
  av[k++] = q;
  av[k++] = prefix;
  av[k++] = "0";
  av[k++] = "1";
  av[k++] = "raw";
  av[k++] = "workers";
  av[k++] = "items";
  for (int i = 0; i < n; i++)
    av[k++] = d[i];
  r = redisCommandArgv(c, k, av, NULL);
  CHECK(r != NULL);
  return r;
}

static void raw_submit(redisContext *c, const char *q, const char *batch, const char *const *d, int n) {
  redisReply *r = raw_submit_reply(c, q, batch, d, n);

  if (r->type == REDIS_REPLY_ERROR)
    sl_test_fail(__FILE__, __LINE__, "FCALL sluice_v1_submit: %s", r->str);
  freeReplyObject(r);
}

/* An http item object with this payload. */
static char *stored(int i, const char *payload) {
  size_t n = strlen(payload) + 256;
  char *d = malloc(n);

  snprintf(d, n,
           "{\"id\":\"i%d\",\"type\":\"http\",\"payload\":%s,\"max_attempts\":1,\"timeout_ms\":5000,"
           "\"backoff_ms\":10,\"backoff_max_ms\":10}",
           i, payload);
  return d;
}

static cJSON *result(redisContext *c, const char *q, const char *batch, int i) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r %d", q, batch, i);
  cJSON *j;

  if (r->type != REDIS_REPLY_STRING)
    sl_test_fail(__FILE__, __LINE__, "no result for item %d", i);
  j = cJSON_Parse(r->str);
  CHECK(j != NULL);
  freeReplyObject(r);
  return j;
}

static pid_t worker(const char *q, const char *const *extra, const char *errlog) {
  const char *args[32] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "2", "--block-ms", "200"};
  int k = 9;

  for (int i = 0; extra != NULL && extra[i] != NULL && k < 31; i++)
    args[k++] = extra[i];
  args[k] = NULL;
  return itest_spawn(args, NULL, errlog);
}

/* ---- The attack payloads ---- */

typedef struct attack {
  const char *payload; /* printf format: %d is the port, where it appears */
  const char *field;   /* what the error names */
} attack;

#define URL "\"url\":\"http://127.0.0.1:%d/"

static const attack attacks[] = {
    /* a header line injected after a value */
    {"{" URL "a\",\"headers\":{\"X-Note\":\"hi\\r\\nX-Injected: 1\"}}", "payload.headers.X-Note"},
    /* a whole second request after an empty line */
    {"{" URL "b\",\"headers\":{\"X-Note\":\"x\\r\\n\\r\\nGET /smuggled HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n\"}}",
     "payload.headers.X-Note"},
    /* a bare LF, and a bare CR */
    {"{" URL "c\",\"headers\":{\"X-Note\":\"x\\nX-Injected: 2\"}}", "payload.headers.X-Note"},
    {"{" URL "d\",\"headers\":{\"X-Note\":\"x\\rX-Injected: 3\"}}", "payload.headers.X-Note"},
    /* a request line injected through the method */
    {"{" URL "e\",\"method\":\"GET /smuggled2 HTTP/1.1\\r\\nX-Injected: 4\\r\\nX:\"}", "payload.method"},
    /* a Content-Length longer than the body: the next request on the
     * connection would become this one's body, secret and all */
    {"{" URL "f\",\"method\":\"POST\",\"headers\":{\"Content-Length\":\"400\"},\"body\":\"a=\"}",
     "payload.headers.Content-Length"},
    {"{" URL "g\",\"method\":\"POST\",\"headers\":{\"Transfer-Encoding\":\"chunked\"},\"body\":\"0\\r\\n\\r\\n\"}",
     "payload.headers.Transfer-Encoding"},
    {"{" URL "h\",\"headers\":{\"Host\":\"evil.example\"}}", "payload.headers.Host"},
    {"{" URL "i\",\"headers\":{\"connection\":\"close\"}}", "payload.headers.connection"},
    /* the idempotency key is a header value too */
    {"{" URL "j\",\"idempotency_key\":\"k\\r\\nX-Injected: 5\"}", "payload.idempotency_key"},
    /* a NUL would have cut the value silently */
    {"{" URL "k\",\"headers\":{\"X-Note\":\"abc\\u0000X-Injected: 6\"}}", "payload.headers.X-Note"},
    /* a header name that is not a token */
    {"{" URL "l\",\"headers\":{\"X-A: b\\r\\nX-Injected\":\"7\"}}", "payload.headers.X-A: b"},
    /* the URL given twice: one reader checks the first, another uses the last */
    {"{" URL "m\"," URL "n\"}", "payload.url"},
    /* a reference to the worker's own configuration */
    {"{" URL "o\",\"headers\":{\"X-Note\":\"${env:SLUICE_REDIS}\"}}", "payload.headers.X-Note"},
    {NULL, NULL}};

/* A 9,000-byte header value: refused with the limit, never cut. */
static char *long_header(void) {
  size_t n = 9000 + 200;
  char *p = malloc(n);
  int k = snprintf(p, n, "{\"url\":\"http://127.0.0.1:%d/long\",\"headers\":{\"X-Long\":\"", server_port);

  memset(p + k, 'v', 9000);
  snprintf(p + k + 9000, n - (size_t)k - 9000, "\"}}");
  return p;
}

/* Requests are built, never pasted: every attack payload fails for good in
 * the worker with its field named, before any byte is sent; the valid
 * items between them, each carrying the granted secret, reach the server
 * exactly once, on reused connections, and record their own answers; no
 * injected line, smuggled request or secret outside its own request
 * arrives. Three rounds, so connections are reused across attacks. */
static void test_smuggling_in_worker(void) {
  const char *q = itest_queue("smuggle");
  redisContext *c = itest_conn();
  const char *d[128];
  char *owned[128];
  int valid[128];
  int nvalid = 0;
  int nattacks = 0;
  int n = 0;
  char payload[12000];
  char errlog[600];
  char allow[64];
  const char *extra[] = {"--secret", "TEST_API_TOKEN", "--http-allow", allow, NULL};
  cJSON *reqs;
  pid_t w;

  start_server();
  snprintf(allow, sizeof(allow), "127.0.0.1:%d", server_port);
  while (attacks[nattacks].payload != NULL)
    nattacks++;
  for (int round = 0; round < 3; round++) {
    for (int a = 0; a < nattacks; a += 4) {
      snprintf(payload, sizeof(payload),
               "{\"url\":\"http://127.0.0.1:%d/valid-%d\",\"headers\":{\"Authorization\":\"Bearer "
               "${env:TEST_API_TOKEN}\"}}",
               server_port, n);
      valid[nvalid++] = n;
      owned[n] = stored(n, payload);
      d[n] = owned[n];
      n++;
      for (int k = a; k < a + 4 && k < nattacks; k++) {
        snprintf(payload, sizeof(payload), attacks[k].payload, server_port, server_port);
        if (strcmp(attacks[k].field, "payload.url") == 0) {
          /* "url" twice is not JSON sluice reads: the submit function refuses it, naming the item */
          char *one = stored(0, payload);
          redisReply *r = raw_submit_reply(c, q, "rawsmuggle0", (const char *const *)&one, 1);

          CHECK(r->type == REDIS_REPLY_ERROR);
          CHECK_CONTAINS(r->str, "SLUICE_ITEM item index 0 (id \"i0\"): invalid JSON at column");
          CHECK_CONTAINS(r->str, "key \"url\" appears twice");
          freeReplyObject(r);
          free(one);
          continue;
        }
        owned[n] = stored(n, payload);
        d[n] = owned[n];
        n++;
      }
    }
  }
  {
    char *lh = long_header();

    owned[n] = stored(n, lh);
    d[n] = owned[n];
    n++;
    free(lh);
  }
  setenv("TEST_API_TOKEN", SECRET, 1);
  raw_submit(c, q, "rawsmuggle1", d, n);
  snprintf(errlog, sizeof(errlog), "%s", itest_path("smuggle.err"));
  w = worker(q, extra, errlog);
  itest_wait_batch(c, q, "rawsmuggle1", 60);
  itest_stop_ok(w);

  CHECK_INT(itest_batch_num(c, q, "rawsmuggle1", "succeeded"), ==, nvalid);
  CHECK_INT(itest_batch_num(c, q, "rawsmuggle1", "failed"), ==, n - nvalid);
  for (int i = 0, v = 0; i < n; i++) {
    cJSON *r = result(c, q, "rawsmuggle1", i);

    if (v < nvalid && valid[v] == i) {
      char own[64];
      const cJSON *body = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "result"), "body");

      CHECK_STR(jstr(r, "status"), "succeeded");
      snprintf(own, sizeof(own), "/valid-%d", i);
      CHECK_STR(jstr(body, "path"), own); /* its own answer, no other's */
      v++;
    } else {
      CHECK_STR(jstr(r, "status"), "failed");
      CHECK_INT(cJSON_GetObjectItemCaseSensitive(r, "attempts")->valueint, ==, 1);
      CHECK_CONTAINS(jstr(r, "error"), "field \"payload");
      CHECK(strstr(jstr(r, "error"), SECRET) == NULL);
      if (i < 8)
        printf("    item %d: %s\n", i, jstr(r, "error"));
    }
    cJSON_Delete(r);
  }
  {
    cJSON *r = result(c, q, "rawsmuggle1", n - 1);

    CHECK_CONTAINS(jstr(r, "error"), "over the limit of 8192");
    cJSON_Delete(r);
  }

  reqs = server_requests();
  CHECK_INT(cJSON_GetArraySize(reqs), ==, nvalid); /* one request per valid item, nothing else */
  {
    int reused = 0;
    const cJSON *e;

    cJSON_ArrayForEach(e, reqs) {
      const char *head = jstr(e, "head");
      const char *at = strstr(head, SECRET);

      CHECK(cJSON_GetObjectItemCaseSensitive(e, "bad") == NULL);
      CHECK(strncmp(jstr(e, "line"), "GET /valid-", 11) == 0);
      CHECK(strstr(head, "Injected") == NULL);
      CHECK(strstr(head, "smuggled") == NULL);
      CHECK(at != NULL && strstr(at + 1, SECRET) == NULL); /* its own secret, once */
      CHECK(strstr(jstr(e, "body"), SECRET) == NULL);
      CHECK_CONTAINS(head, "\r\nHost: 127.0.0.1:");
      if (cJSON_GetObjectItemCaseSensitive(e, "seq")->valueint > 1)
        reused++;
    }
    printf("    %d valid requests, %d of them on a reused connection; %d attacks refused\n", nvalid, reused,
           n - nvalid);
    CHECK(reused > 0);
  }
  cJSON_Delete(reqs);
  for (int i = 0; i < n; i++)
    free(owned[i]);
  stop_server();
  redisFree(c);
}

/* The same attacks through `sluice submit`: refused before anything is
 * written, each line with its field. */
static void test_smuggling_at_submit(void) {
  const char *q = itest_queue("smugglesub");
  const char *path = itest_path("attacks.jsonl");
  char *lines = calloc(1, 64 * 1024);
  size_t len = 0;
  char payload[4096];
  char *err = NULL;
  int na = 0;

  server_port = 8080;
  for (int a = 0; attacks[a].payload != NULL; a++, na++) {
    snprintf(payload, sizeof(payload), attacks[a].payload, server_port, server_port);
    len += (size_t)snprintf(lines + len, 64 * 1024 - len, "{\"type\":\"http\",\"payload\":%s}\n", payload);
  }
  itest_write(path, lines, len);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
  }
  for (int a = 0; attacks[a].payload != NULL; a++) {
    char want[160];

    snprintf(want, sizeof(want), ":%d: ", a + 1);
    CHECK_CONTAINS(err, want);
    if (strcmp(attacks[a].field, "payload.url") == 0)
      snprintf(want, sizeof(want), "key \"url\" appears twice");
    else if (strncmp(attacks[a].field, "payload.headers.X-A", 19) == 0)
      snprintf(want, sizeof(want), "a header name is a token");
    else
      snprintf(want, sizeof(want), "field \"%s\"", attacks[a].field);
    CHECK_CONTAINS(err, want);
  }
  CHECK_CONTAINS(err, "nothing was submitted");
  {
    redisContext *c = itest_conn();
    redisReply *r = itest_cmd(c, "KEYS sluice:{%s}:*", q);

    CHECK_INT(r->elements, ==, 0);
    freeReplyObject(r);
    redisFree(c);
  }
  free(err);
  free(lines);
}

/* A secret granted for one origin goes to that origin only: the same
 * server named another way (localhost instead of 127.0.0.1) is refused
 * before any byte is sent; a name that is not granted is refused, and so is
 * a SLUICE_ name; refused items leave no dead letter. Grants through
 * SLUICE_SECRETS work like --secret. */
static void test_secret_bound_to_origin(void) {
  const char *q = itest_queue("bound");
  redisContext *c = itest_conn();
  char payload[1024];
  char *owned[5];
  const char *d[5];
  char errlog[600];
  char grant[80];
  cJSON *reqs;
  pid_t w;

  start_server();
  snprintf(payload, sizeof(payload),
           "{\"url\":\"http://127.0.0.1:%d/granted\",\"headers\":{\"Authorization\":\"Bearer ${env:TEST_API_TOKEN}\"}}",
           server_port);
  owned[0] = stored(0, payload);
  snprintf(payload, sizeof(payload),
           "{\"url\":\"http://localhost:%d/other-name\",\"headers\":{\"Authorization\":\"Bearer "
           "${env:TEST_API_TOKEN}\"}}",
           server_port);
  owned[1] = stored(1, payload);
  snprintf(payload, sizeof(payload),
           "{\"url\":\"http://127.0.0.1:%d/json\",\"method\":\"POST\",\"json\":{\"k\":\"${env:TEST_OTHER}\"}}",
           server_port);
  owned[2] = stored(2, payload);
  snprintf(payload, sizeof(payload), "{\"url\":\"http://127.0.0.1:%d/own\",\"body\":\"${env:SLUICE_REDIS}\"}",
           server_port);
  owned[3] = stored(3, payload);
  snprintf(payload, sizeof(payload), "{\"url\":\"http://127.0.0.1:%d/plain\"}", server_port);
  owned[4] = stored(4, payload);
  for (int i = 0; i < 5; i++)
    d[i] = owned[i];
  setenv("TEST_API_TOKEN", SECRET, 1);
  setenv("TEST_OTHER", "other-value", 1);
  setenv("SLUICE_REDIS", itest_url(), 1);
  snprintf(grant, sizeof(grant), "TEST_API_TOKEN@127.0.0.1:%d", server_port);
  setenv("SLUICE_SECRETS", grant, 1);
  raw_submit(c, q, "rawbound1", d, 5);
  snprintf(errlog, sizeof(errlog), "%s", itest_path("bound.err"));
  w = worker(q, NULL, errlog);
  itest_wait_batch(c, q, "rawbound1", 30);
  itest_stop_ok(w);
  unsetenv("SLUICE_SECRETS");
  unsetenv("SLUICE_REDIS");

  {
    cJSON *r = result(c, q, "rawbound1", 0);

    CHECK_STR(jstr(r, "status"), "succeeded");
    cJSON_Delete(r);
    r = result(c, q, "rawbound1", 1);
    CHECK_STR(jstr(r, "status"), "failed");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "refused")));
    CHECK_CONTAINS(jstr(r, "error"), "secret TEST_API_TOKEN is not granted to this worker for http://localhost:");
    printf("    other name: %s\n", jstr(r, "error"));
    cJSON_Delete(r);
    r = result(c, q, "rawbound1", 2);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "refused")));
    CHECK_CONTAINS(jstr(r, "error"), "field \"payload.json\": secret TEST_OTHER is not granted to this worker");
    cJSON_Delete(r);
    r = result(c, q, "rawbound1", 3);
    CHECK_STR(jstr(r, "status"), "failed");
    CHECK_CONTAINS(jstr(r, "error"), "SLUICE_REDIS");
    CHECK(strstr(jstr(r, "error"), "redis:") == NULL && strstr(jstr(r, "error"), "unix:") == NULL);
    cJSON_Delete(r);
    r = result(c, q, "rawbound1", 4);
    CHECK_STR(jstr(r, "status"), "succeeded");
    cJSON_Delete(r);
  }
  CHECK_INT(itest_batch_num(c, q, "rawbound1", "refused"), ==, 2);
  {
    redisReply *r = itest_cmd(c, "XLEN sluice:{%s}:dead", q);

    CHECK_INT(r->integer, ==, 1); /* only the SLUICE_ item, which no grant can fix */
    freeReplyObject(r);
  }
  reqs = server_requests();
  CHECK_INT(cJSON_GetArraySize(reqs), ==, 2);
  {
    const cJSON *e;

    cJSON_ArrayForEach(e, reqs) {
      int granted = strncmp(jstr(e, "line"), "GET /granted ", 13) == 0;

      CHECK(granted || strncmp(jstr(e, "line"), "GET /plain ", 11) == 0);
      CHECK((strstr(jstr(e, "head"), SECRET) != NULL) == granted);
    }
  }
  cJSON_Delete(reqs);

  /* retry after granting what was missing: the refused items run again */
  {
    const char *args[] = {"retry", "--redis", itest_url(), "--queue", q, "rawbound1", NULL};
    char both[200];
    const char *extra[] = {"--secret", both, "--secret", "TEST_OTHER", NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
    CHECK_INT(itest_batch_num(c, q, "rawbound1", "refused"), ==, 0);
    snprintf(both, sizeof(both), "TEST_API_TOKEN@127.0.0.1:%d,localhost:%d", server_port, server_port);
    w = worker(q, extra, errlog);
    itest_wait_batch(c, q, "rawbound1", 30);
    itest_stop_ok(w);
    CHECK_INT(itest_batch_num(c, q, "rawbound1", "succeeded"), ==, 4);
    CHECK_INT(itest_batch_num(c, q, "rawbound1", "failed"), ==, 1);
  }
  for (int i = 0; i < 5; i++)
    free(owned[i]);
  stop_server();
  redisFree(c);
}

/* Grants that can never be given: a SLUICE_ name, a malformed name, an
 * unset variable, a bad host pattern. Each stops the worker at start with
 * exit 2 and a message naming it. */
static void test_bad_grants(void) {
  static const char *const specs[][2] = {{"SLUICE_REDIS", "names starting SLUICE_"},
                                         {"SLUICE_WEBHOOK_SECRET@h.example", "names starting SLUICE_"},
                                         {"1BAD", "expected NAME or NAME@HOST"},
                                         {"TEST_UNSET_VARIABLE", "not set in the worker's environment"},
                                         {"TEST_API_TOKEN@", "give a host after @"},
                                         {"TEST_API_TOKEN@h/x", "has no path"},
                                         {NULL, NULL}};

  setenv("TEST_API_TOKEN", SECRET, 1);
  unsetenv("TEST_UNSET_VARIABLE");
  for (int i = 0; specs[i][0] != NULL; i++) {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", itest_queue("grants"), "--secret", specs[i][0],
                          NULL};
    char *err = NULL;

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, specs[i][1]);
    CHECK(strstr(err, SECRET) == NULL);
    free(err);
  }
}

/* The allow-list compares scheme, host and port: a host alone means its
 * default port, so a worker allowed "127.0.0.1" may not call 127.0.0.1 on
 * another port; "http://127.0.0.1:PORT" allows exactly that origin, and
 * "https://127.0.0.1:PORT" not its plain-http twin. No request is made for
 * a refused origin. */
static void test_allow_list_ports(void) {
  const char *q = itest_queue("ports");
  redisContext *c = itest_conn();
  char lines[1024];
  char path[600];
  static const char *const lists[3] = {"127.0.0.1", "http://127.0.0.1:%d", "https://127.0.0.1:%d"};
  static const int ok[3] = {0, 1, 0};

  start_server();
  snprintf(path, sizeof(path), "%s", itest_path("ports.jsonl"));
  snprintf(lines, sizeof(lines), "{\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:%d/p\"}}\n", server_port);
  itest_write(path, lines, strlen(lines));
  for (int i = 0; i < 3; i++) {
    char allow[64];
    char batch[64];
    char *out = NULL;
    const char *extra[] = {"--http-allow", allow, NULL};
    const char *sub[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};
    cJSON *reqs;
    int before;
    pid_t w;

    snprintf(allow, sizeof(allow), lists[i], server_port);
    reqs = server_requests();
    before = cJSON_GetArraySize(reqs);
    cJSON_Delete(reqs);
    {
      char *serr = NULL;

      if (itest_run(sub, &out, &serr, 30) != 0)
        sl_test_fail(__FILE__, __LINE__, "submit: %s", serr);
      free(serr);
    }
    snprintf(batch, sizeof(batch), "%.26s", out);
    free(out);
    w = worker(q, extra, NULL);
    itest_wait_batch(c, q, batch, 30);
    itest_stop_ok(w);
    CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, ok[i]);
    reqs = server_requests();
    CHECK_INT(cJSON_GetArraySize(reqs) - before, ==, ok[i]);
    cJSON_Delete(reqs);
    if (!ok[i]) {
      cJSON *r = result(c, q, batch, 0);

      CHECK_CONTAINS(jstr(r, "error"), "is not allowed on worker");
      printf("    --http-allow %s: %s\n", allow, jstr(r, "error"));
      cJSON_Delete(r);
    }
  }
  stop_server();
  redisFree(c);
}

/* A batch name with terminal escape sequences is shown escaped by status
 * and batches; the raw bytes stay in Redis (and in --json output, where
 * JSON escapes them). */
static void test_names_escaped(void) {
  const char *q = itest_queue("names");
  const char *path = itest_path("names.jsonl");
  const char *items = "{\"type\":\"noop\",\"payload\":{}}\n";
  char batch[64];
  char *out = NULL;
  const char *name = "evil\x1b[2J\x1b]0;pwned\x07\xc2\x9b" "31m";

  itest_write(path, items, strlen(items));
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, "--name", name, path, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    snprintf(batch, sizeof(batch), "%.26s", out);
    free(out);
  }
  {
    const char *st[] = {"status", "--redis", itest_url(), "--queue", q, batch, NULL};
    const char *ls[] = {"batches", "--redis", itest_url(), "--queue", q, NULL};

    CHECK_INT(itest_run(st, &out, NULL, 30), ==, 0);
    CHECK(strchr(out, '\x1b') == NULL && strchr(out, '\x07') == NULL && strstr(out, "\xc2\x9b") == NULL);
    CHECK_CONTAINS(out, "evil\\x1B[2J\\x1B]0;pwned\\x07\\u009B31m");
    free(out);
    CHECK_INT(itest_run(ls, &out, NULL, 30), ==, 0);
    CHECK(strchr(out, '\x1b') == NULL);
    CHECK_CONTAINS(out, "evil\\x1B[2J");
    free(out);
  }
}

int main(int argc, char **argv) {
  static const sl_test tests[] = {{"smuggling_in_worker", test_smuggling_in_worker, 120},
                                  {"smuggling_at_submit", test_smuggling_at_submit, 60},
                                  {"secret_bound_to_origin", test_secret_bound_to_origin, 90},
                                  {"bad_grants", test_bad_grants, 60},
                                  {"allow_list_ports", test_allow_list_ports, 90},
                                  {"names_escaped", test_names_escaped, 30},
                                  {NULL, NULL, 0}};

  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
