/*
 * The worker's `http` handler against a real HTTP/1.1 server
 * (tests/integration/http_server.py, started once for the whole program on
 * 127.0.0.1, port 0): success results, kept headers, JSON and text bodies,
 * which failures are retried and which fail at once, Retry-After in seconds
 * and as an HTTP date, redirects not followed, timeouts, connection errors,
 * the Idempotency-Key of every attempt, --http-allow, --http-max-body,
 * ${env:NAME} secrets that never reach Redis or the log, and throughput of
 * one worker with 500 slots.
 *
 * Completion webhooks are sent to the same server (/hook records every
 * try; a receiver that always fails is given up after 10) and verified as a
 * receiver would, with the standardwebhooks npm package
 * (tests/integration/webhook_verify.js, run with node; scripts/dev installs
 * both). A test that needs them fails, saying what to install, when node or
 * the package is missing.
 *
 * Tests run one after another (the harness forks each in turn), so a test
 * can take a snapshot of the server's /stats before it submits and compare
 * after: what was added in between is its own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <cjson/cJSON.h>

#include <openssl/evp.h>

#include "fdhog.h"
#include "itest.h"
#include "worker.h"

#define SECRET "s3cr3t-token" /* the value of TEST_API_TOKEN; must never reach Redis or the log */

static pid_t server_pid;     /* the python server; 0 when not running */
static pid_t main_pid;       /* the test program (tests run in forked children) */
static int server_port;      /* its port on 127.0.0.1 */
static char server_dir[256]; /* temp dir holding its port file */
static void (*redis_teardown)(void); /* itest's teardown, chained */

/* ---- The test server ---- */

/* The server script: $SLUICE_HTTP_SERVER, else http_server.py next to this
 * source file (CMake compiles it by absolute path). */
static void server_script(char *buf, size_t len) {
  const char *env = getenv("SLUICE_HTTP_SERVER");
  const char *slash = strrchr(__FILE__, '/');

  if (env != NULL && env[0] != '\0')
    snprintf(buf, len, "%s", env);
  else if (slash != NULL)
    snprintf(buf, len, "%.*s/http_server.py", (int)(slash - __FILE__), __FILE__);
  else
    snprintf(buf, len, "http_server.py");
}

static void server_stop(void) {
  int status;

  if (server_pid <= 0 || getpid() != main_pid)
    return;
  kill(server_pid, SIGTERM);
  waitpid(server_pid, &status, 0);
  server_pid = 0;
  if (server_dir[0] != '\0') {
    char p[320];

    snprintf(p, sizeof(p), "%s/port", server_dir);
    unlink(p);
    rmdir(server_dir);
  }
}

static void teardown(void) {
  server_stop();
  if (redis_teardown != NULL)
    redis_teardown();
}

/* Starts the server with TEST_API_TOKEN in its environment (for
 * /secret-check) and waits up to 10 s for its port file. Exits on failure. */
static void server_start(void) {
  char script[600];
  char portfile[320];
  long long t0;

  server_script(script, sizeof(script));
  snprintf(server_dir, sizeof(server_dir), "/tmp/sluice-http-XXXXXX");
  if (mkdtemp(server_dir) == NULL) {
    fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
    exit(1);
  }
  snprintf(portfile, sizeof(portfile), "%s/port", server_dir);
  fflush(stdout);
  fflush(stderr);
  server_pid = fork();
  if (server_pid < 0) {
    fprintf(stderr, "fork: %s\n", strerror(errno));
    exit(1);
  }
  if (server_pid == 0) {
    int fi = open("/dev/null", O_RDONLY);

#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* dies with the test program, even on SIGKILL */
#endif
    setpgid(0, 0);
    dup2(fi, 0);
    setenv("TEST_API_TOKEN", SECRET, 1);
    execl("/usr/bin/python3", "python3", script, portfile, (char *)NULL);
    fprintf(stderr, "exec /usr/bin/python3 %s: %s\n", script, strerror(errno));
    _exit(127);
  }
  atexit(server_stop);
  t0 = itest_ms();
  for (;;) {
    char *s = itest_read(portfile, NULL);
    int status;

    if (s != NULL) {
      server_port = (int)strtol(s, NULL, 10);
      free(s);
      if (server_port > 0)
        break;
    }
    if (waitpid(server_pid, &status, WNOHANG) == server_pid) {
      fprintf(stderr, "the test http server (%s) exited with status %d\n", script, status);
      server_pid = 0;
      exit(1);
    }
    if (itest_ms() - t0 > 10000) {
      fprintf(stderr, "the test http server (%s) wrote no port within 10 s\n", script);
      exit(1);
    }
    usleep(20000);
  }
}

/* GET of a path on the server with a plain socket (HTTP/1.0, so the server
 * closes). Returns the body (free it); fails the test on error. */
static char *server_get(const char *path) {
  struct sockaddr_in sa;
  char req[512];
  char *buf = NULL;
  size_t n = 0;
  size_t cap = 0;
  char *body;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int len;

  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)server_port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
    sl_test_fail(__FILE__, __LINE__, "cannot connect to the test http server: %s", strerror(errno));
  len = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
  if (write(fd, req, (size_t)len) != len)
    sl_test_fail(__FILE__, __LINE__, "write to the test http server: %s", strerror(errno));
  for (;;) {
    ssize_t r;

    if (n + 65536 + 1 > cap) {
      cap = cap ? cap * 2 : 131072;
      buf = realloc(buf, cap);
      CHECK(buf != NULL);
    }
    r = read(fd, buf + n, cap - n - 1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  CHECK(buf != NULL);
  buf[n] = '\0';
  body = strstr(buf, "\r\n\r\n");
  if (body == NULL)
    sl_test_fail(__FILE__, __LINE__, "bad response from the test http server: %.200s", buf);
  body = strdup(body + 4);
  free(buf);
  return body;
}

/* The server's /stats, parsed (cJSON_Delete it). */
static cJSON *server_stats(void) {
  char *s = server_get("/stats");
  cJSON *j = cJSON_Parse(s);

  if (j == NULL)
    sl_test_fail(__FILE__, __LINE__, "/stats is not JSON: %.200s", s);
  free(s);
  return j;
}

static long long stats_num(const cJSON *st, const char *field) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(st, field);

  return cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
}

/* The Idempotency-Keys the server has seen for a path (borrowed from st;
 * NULL if none). */
static const cJSON *stats_keys(const cJSON *st, const char *path) {
  return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(st, "idempotency_keys"), path);
}

static int stats_key_count(const cJSON *st, const char *path) {
  return cJSON_GetArraySize(stats_keys(st, path));
}

static const char *stats_key(const cJSON *st, const char *path, int i) {
  const cJSON *k = cJSON_GetArrayItem(stats_keys(st, path), i);

  return cJSON_IsString(k) ? k->valuestring : NULL;
}

static long long stats_missing(const cJSON *st, const char *path) {
  const cJSON *v =
      cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(st, "missing_idempotency_key"), path);

  return cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
}

/* ---- Running items ---- */

/* An item line to a path on the test server; `rest` is added to the item
 * (",\"max_attempts\":3"), `extra` to the payload (",\"method\":\"POST\""). */
static void item(char *buf, size_t len, const char *path, const char *extra, const char *rest) {
  snprintf(buf, len, "{\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:%d%s\"%s}%s}\n", server_port, path,
           extra ? extra : "", rest ? rest : "");
}

/* Writes the lines to a file and submits them to q; the batch id goes to
 * batch (64 bytes). */
static void submit(const char *q, const char *lines, char *batch) {
  char path[600];
  char *out = NULL;
  char *err = NULL;
  int rc;

  snprintf(path, sizeof(path), "%s", itest_path("items.jsonl"));
  itest_write(path, lines, strlen(lines));
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

    rc = itest_run(args, &out, &err, 60);
  }
  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "sluice submit exited %d: %s", rc, err ? err : "");
  snprintf(batch, 64, "%.26s", out);
  free(out);
  free(err);
}

/* Starts `sluice worker` on q with the given slots; extra options
 * (NULL-terminated, may be NULL) are added; stderr goes to errlog. */
static pid_t worker(const char *q, int concurrency, int quiet, const char *const *extra, const char *errlog) {
  const char *args[40];
  char conc[16];
  int k = 0;

  snprintf(conc, sizeof(conc), "%d", concurrency);
  args[k++] = "worker";
  args[k++] = "--redis";
  args[k++] = itest_url();
  args[k++] = "--queue";
  args[k++] = q;
  args[k++] = "--concurrency";
  args[k++] = conc;
  args[k++] = "--block-ms";
  args[k++] = "200"; /* picks up retries quickly */
  if (quiet)
    args[k++] = "--quiet";
  for (int i = 0; extra != NULL && extra[i] != NULL && k < 38; i++)
    args[k++] = extra[i];
  args[k] = NULL;
  return itest_spawn(args, NULL, errlog);
}

/* Waits until the batch has ended, failing at once (with the worker's
 * stderr) if the worker exits first, and after timeout_s. */
static void wait_batch(redisContext *c, const char *q, const char *batch, int timeout_s, pid_t w,
                       const char *errlog) {
  long long t0 = itest_ms();

  for (;;) {
    redisReply *r = itest_cmd(c, "HMGET sluice:{%s}:b:%s whole done total", q, batch);
    int ended = r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "1") == 0 &&
                atoll(r->element[1]->str) >= atoll(r->element[2]->str);
    int status;

    freeReplyObject(r);
    if (ended)
      return;
    if (waitpid(w, &status, WNOHANG) == w) {
      char *log = errlog ? itest_read(errlog, NULL) : NULL;

      sl_test_fail(__FILE__, __LINE__, "the worker exited (status 0x%x) before batch %s ended: %s", status, batch,
                   log ? log : "(no log)");
    }
    if (itest_ms() - t0 > timeout_s * 1000LL)
      sl_test_fail(__FILE__, __LINE__, "batch %s did not end within %d s (done %lld of %lld)", batch, timeout_s,
                   itest_batch_num(c, q, batch, "done"), itest_batch_num(c, q, batch, "total"));
    usleep(20000);
  }
}

/* Starts a worker, submits the lines, waits for the batch and stops the
 * worker. */
static void run_batch(redisContext *c, const char *q, const char *lines, int concurrency, const char *const *extra,
                      char *batch, int timeout_s) {
  char errlog[600];
  pid_t w;

  snprintf(errlog, sizeof(errlog), "%s", itest_path("worker.err"));
  w = worker(q, concurrency, 1, extra, errlog);
  submit(q, lines, batch);
  wait_batch(c, q, batch, timeout_s, w, errlog);
  itest_stop_ok(w);
}

/* The results line of item idx, parsed (cJSON_Delete it). */
static cJSON *result_line(redisContext *c, const char *q, const char *batch, int idx) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r %d", q, batch, idx);
  cJSON *j;

  if (r->type != REDIS_REPLY_STRING)
    sl_test_fail(__FILE__, __LINE__, "no results line for item %d of batch %s", idx, batch);
  j = cJSON_Parse(r->str);
  if (j == NULL)
    sl_test_fail(__FILE__, __LINE__, "results line of item %d is not JSON: %.300s", idx, r->str);
  freeReplyObject(r);
  return j;
}

static const char *jstr(const cJSON *j, const char *field) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, field);

  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static long long jnum(const cJSON *j, const char *field) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, field);

  return cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
}

static const cJSON *jget(const cJSON *j, const char *field) {
  return cJSON_GetObjectItemCaseSensitive(j, field);
}

/* Fails with the whole line unless the item has this status. */
static void check_status(const cJSON *line, const char *status, int lineno) {
  const char *s = jstr(line, "status");

  if (s == NULL || strcmp(s, status) != 0) {
    char *text = cJSON_PrintUnformatted(line);

    sl_test_fail(__FILE__, lineno, "expected status %s, got: %.600s", status, text);
  }
}
#define CHECK_ITEM_STATUS(line, status) check_status((line), (status), __LINE__)

/* ---- Tests ---- */

/* GET /ok: 200, the body stored as JSON, only the kept headers (names in
 * lower case), not truncated, bytes = the body's size. */
static void test_get_ok(void) {
  const char *q = itest_queue("ok");
  redisContext *c = itest_conn();
  char lines[2048];
  char batch[64];
  cJSON *line;
  const cJSON *res;
  const cJSON *body;
  const cJSON *hdrs;

  item(lines, sizeof(lines), "/ok?x=1", ",\"method\":\"GET\",\"keep_headers\":[\"content-type\",\"Content-Length\"]",
       NULL);
  run_batch(c, q, lines, 4, NULL, batch, 20);
  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "succeeded");
  CHECK_INT(jnum(line, "attempts"), ==, 1);
  res = jget(line, "result");
  CHECK(cJSON_IsObject(res));
  CHECK_INT(jnum(res, "status"), ==, 200);
  body = jget(res, "body");
  CHECK(cJSON_IsObject(body));
  CHECK(cJSON_IsTrue(jget(body, "ok")));
  CHECK_STR(jstr(body, "method"), "GET");
  CHECK_STR(jstr(body, "path"), "/ok?x=1");
  CHECK(cJSON_IsFalse(jget(res, "truncated")));
  CHECK_INT(jnum(res, "bytes"), ==, strlen("{\"ok\":true,\"method\":\"GET\",\"path\":\"/ok?x=1\"}"));
  hdrs = jget(res, "headers");
  CHECK(cJSON_IsObject(hdrs));
  CHECK_STR(jstr(hdrs, "content-type"), "application/json");
  CHECK_STR(jstr(hdrs, "content-length"), "43");
  CHECK(jget(hdrs, "server") == NULL); /* not asked for */
  CHECK(jget(hdrs, "date") == NULL);
  CHECK_INT(cJSON_GetArraySize(hdrs), ==, 2);
  /* the attempt's log: one line, the URL without its query */
  {
    const cJSON *log = jget(line, "log");
    const char *l0 = cJSON_IsArray(log) && cJSON_GetArraySize(log) == 1 && cJSON_IsString(cJSON_GetArrayItem(log, 0))
                         ? cJSON_GetArrayItem(log, 0)->valuestring
                         : "";

    CHECK(strncmp(l0, "GET http://127.0.0.1:", 21) == 0);
    CHECK_CONTAINS(l0, "/ok -> 200 in ");
    CHECK_CONTAINS(l0, " ms, 43 bytes");
    CHECK(strstr(l0, "x=1") == NULL);
  }
  cJSON_Delete(line);
  redisFree(c);
}

/* payload.metrics: numbers read from the JSON response by path become the
 * item's metrics, in its results line and summed in the batch, also those
 * of a failed answer (an item paid for twice: its 503 reported a cost);
 * the sums over all and over final attempts are exact, and status shows
 * both and the rerun; a path with no number there is logged; a bad path is
 * refused at submit. */
static void test_metrics_paths(void) {
  const char *q = itest_queue("metrics");
  redisContext *c = itest_conn();
  char lines[2048];
  char batch[64];
  cJSON *line;
  const char *m = ",\"metrics\":{\"cost\":\"$.usage.cost\",\"tokens\":\"$.usage.tokens[1]\",\"none\":\"$.nope\"}";
  size_t n;

  item(lines, sizeof(lines), "/usage?cost=0.25", m, NULL);
  n = strlen(lines);
  item(lines + n, sizeof(lines) - n, "/usage?cost=0.5", m, NULL);
  n = strlen(lines);
  /* paid twice: a 503 that reports its cost, then a 200 */
  item(lines + n, sizeof(lines) - n, "/usage-flaky?cost=0.125", m, ",\"max_attempts\":2,\"backoff_ms\":0");
  run_batch(c, q, lines, 3, NULL, batch, 20);
  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "succeeded");
  CHECK(cJSON_IsNumber(jget(jget(line, "metrics"), "cost")) && jget(jget(line, "metrics"), "cost")->valuedouble == 0.25);
  CHECK_INT(jnum(jget(line, "metrics"), "tokens"), ==, 2);
  CHECK(jget(jget(line, "metrics"), "none") == NULL);
  CHECK_CONTAINS(cJSON_GetArrayItem(jget(line, "log"), 1)->valuestring, "metric none: no number at $.nope");
  cJSON_Delete(line);
  {
    redisReply *r = itest_cmd(c, "HMGET sluice:{%s}:b:%s metric:cost final:cost metric:tokens reran", q, batch);

    /* all attempts: 0.25 + 0.5 + 0.125 twice; final ones: 0.125 once */
    CHECK(strtod(r->element[0]->str, NULL) == 1.0);
    CHECK(strtod(r->element[1]->str, NULL) == 0.875);
    CHECK(strtod(r->element[2]->str, NULL) == 8);
    CHECK_STR(r->element[3]->str, "1");
    freeReplyObject(r);
  }
  {
    /* status says so: the JSON sums, and the human line with what the rerun cost */
    const char *args[] = {"status", "--redis", itest_url(), "--queue", q, batch, NULL};
    const char *js[] = {"status", "--redis", itest_url(), "--queue", q, batch, "--json", NULL};
    char *out = NULL;

    CHECK_INT(itest_run(js, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "\"metrics\":{");
    CHECK_CONTAINS(out, "\"cost\":{\"all\":1,\"final\":0.875}");
    CHECK_CONTAINS(out, "\"reran\":1");
    free(out);
    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "cost       0.875 over final attempts, 1 over all attempts (0.125 spent on attempts that did "
                        "not end the item)");
    CHECK_CONTAINS(out, "reran      1 items ran more than once");
    free(out);
  }
  {
    const char *bad = "{\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:1/\",\"metrics\":{\"cost\":\"usage.cost\"}}}\n";
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, itest_path("bad.jsonl"), NULL};
    char *err = NULL;

    itest_write(itest_path("bad.jsonl"), bad, strlen(bad));
    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "field \"payload.metrics.cost\": expected a JSON path like \"$.usage.cost\"");
    free(err);
  }
  redisFree(c);
}

/* POST/PUT/DELETE to /echo: the method, the item's headers, a text body, a
 * JSON body and ${env:NAME} in a header, the body and a JSON string all
 * arrive; a 2xx body that is not JSON is stored as a string. */
static void test_methods_and_bodies(void) {
  const char *q = itest_queue("echo");
  redisContext *c = itest_conn();
  char lines[8192];
  char one[2048];
  char batch[64];
  cJSON *line;
  const cJSON *body;
  const cJSON *h;
  cJSON *sent;

  setenv("TEST_PLAIN", "plain-value", 1); /* inherited by the worker */
  lines[0] = '\0';
  item(one, sizeof(one), "/echo",
       ",\"method\":\"POST\",\"headers\":{\"X-Test\":\"yes\",\"X-Env\":\"v=${env:TEST_PLAIN}\"},"
       "\"body\":\"hello ${env:TEST_PLAIN} body\"",
       NULL);
  strcat(lines, one);
  item(one, sizeof(one), "/echo",
       ",\"method\":\"PUT\",\"json\":{\"a\":1,\"s\":\"${env:TEST_PLAIN}\",\"l\":[true,null,\"x\"]}", NULL);
  strcat(lines, one);
  item(one, sizeof(one), "/echo?k=v", ",\"method\":\"DELETE\"", NULL);
  strcat(lines, one);
  item(one, sizeof(one), "/status/200", NULL, NULL); /* text/plain 200 */
  strcat(lines, one);
  item(one, sizeof(one), "/status/204", NULL, NULL); /* no body */
  strcat(lines, one);
  {
    const char *grant[] = {"--secret", "TEST_PLAIN", NULL};

    run_batch(c, q, lines, 4, grant, batch, 20);
  }

  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "succeeded");
  body = jget(jget(line, "result"), "body");
  CHECK_STR(jstr(body, "method"), "POST");
  CHECK_STR(jstr(body, "body"), "hello plain-value body");
  h = jget(body, "headers");
  CHECK_STR(jstr(h, "x-test"), "yes");
  CHECK_STR(jstr(h, "x-env"), "v=plain-value");
  CHECK(jstr(h, "idempotency-key") != NULL && jstr(h, "idempotency-key")[0] != '\0');
  printf("    POST /echo sent content-type \"%s\" for a text body\n",
         jstr(h, "content-type") ? jstr(h, "content-type") : "(none)");
  cJSON_Delete(line);

  line = result_line(c, q, batch, 1);
  CHECK_ITEM_STATUS(line, "succeeded");
  body = jget(jget(line, "result"), "body");
  CHECK_STR(jstr(body, "method"), "PUT");
  h = jget(body, "headers");
  printf("    PUT /echo sent content-type \"%s\" for a json body\n",
         jstr(h, "content-type") ? jstr(h, "content-type") : "(none)");
  sent = cJSON_Parse(jstr(body, "body"));
  if (sent == NULL)
    sl_test_fail(__FILE__, __LINE__, "the json body did not arrive as JSON: %s", jstr(body, "body"));
  CHECK_INT(jnum(sent, "a"), ==, 1);
  CHECK_STR(jstr(sent, "s"), "plain-value");
  CHECK_INT(cJSON_GetArraySize(jget(sent, "l")), ==, 3);
  CHECK(cJSON_IsTrue(cJSON_GetArrayItem(jget(sent, "l"), 0)));
  cJSON_Delete(sent);
  cJSON_Delete(line);

  line = result_line(c, q, batch, 2);
  CHECK_ITEM_STATUS(line, "succeeded");
  body = jget(jget(line, "result"), "body");
  CHECK_STR(jstr(body, "method"), "DELETE");
  CHECK_STR(jstr(body, "path"), "/echo?k=v");
  CHECK_STR(jstr(body, "body"), "");
  cJSON_Delete(line);

  line = result_line(c, q, batch, 3);
  CHECK_ITEM_STATUS(line, "succeeded");
  CHECK_INT(jnum(jget(line, "result"), "status"), ==, 200);
  CHECK_STR(jstr(jget(line, "result"), "body"), "status 200: something went wrong on purpose");
  cJSON_Delete(line);

  line = result_line(c, q, batch, 4);
  CHECK_ITEM_STATUS(line, "succeeded");
  CHECK_INT(jnum(jget(line, "result"), "status"), ==, 204);
  CHECK_INT(jnum(jget(line, "result"), "bytes"), ==, 0);
  cJSON_Delete(line);
  redisFree(c);
}

/* 404 and other 4xx fail at once (attempts 1 of 5) with the status and a
 * body excerpt; 500 is retried up to max_attempts with the same error. */
static void test_status_errors(void) {
  const char *q = itest_queue("status");
  redisContext *c = itest_conn();
  char lines[4096];
  char one[1024];
  char batch[64];
  cJSON *line;
  const cJSON *errs;

  lines[0] = '\0';
  item(one, sizeof(one), "/no/such/thing", NULL, ",\"max_attempts\":5,\"backoff_ms\":10");
  strcat(lines, one);
  item(one, sizeof(one), "/status/400", ",\"method\":\"POST\",\"body\":\"x\"", ",\"max_attempts\":5,\"backoff_ms\":10");
  strcat(lines, one);
  item(one, sizeof(one), "/status/500", NULL, ",\"max_attempts\":3,\"backoff_ms\":10");
  strcat(lines, one);
  item(one, sizeof(one), "/status/502", NULL, ",\"max_attempts\":2,\"backoff_ms\":10");
  strcat(lines, one);
  run_batch(c, q, lines, 4, NULL, batch, 25);

  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 1);
  CHECK_CONTAINS(jstr(line, "error"), "HTTP 404");
  CHECK_CONTAINS(jstr(line, "error"), "no such path");
  printf("    404 error: %s\n", jstr(line, "error"));
  cJSON_Delete(line);

  line = result_line(c, q, batch, 1);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 1);
  CHECK_CONTAINS(jstr(line, "error"), "HTTP 400");
  CHECK_CONTAINS(jstr(line, "error"), "status 400: something went wrong");
  cJSON_Delete(line);

  line = result_line(c, q, batch, 2);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 3);
  CHECK_CONTAINS(jstr(line, "error"), "HTTP 500");
  CHECK_CONTAINS(jstr(line, "error"), "status 500: something went wrong");
  errs = jget(line, "errors");
  CHECK_INT(cJSON_GetArraySize(errs), ==, 2);
  CHECK_CONTAINS(cJSON_GetArrayItem(errs, 0)->valuestring, "HTTP 500");
  cJSON_Delete(line);

  line = result_line(c, q, batch, 3);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 2);
  CHECK_CONTAINS(jstr(line, "error"), "HTTP 502");
  cJSON_Delete(line);
  redisFree(c);
}

/* 429 with Retry-After: 1 is retried, and not before a second has passed
 * (backoff_ms 10 would otherwise retry at once). */
static void test_retry_after(void) {
  const char *q = itest_queue("429");
  redisContext *c = itest_conn();
  char lines[1024];
  char batch[64];
  char errlog[600];
  cJSON *st0 = server_stats();
  cJSON *st1;
  cJSON *line;
  long long submitted_ms;
  long long gap;
  int n0 = stats_key_count(st0, "/429");
  pid_t w;

  item(lines, sizeof(lines), "/429", NULL, ",\"max_attempts\":2,\"backoff_ms\":10");
  snprintf(errlog, sizeof(errlog), "%s", itest_path("worker.err"));
  w = worker(q, 2, 1, NULL, errlog);
  {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    submitted_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  }
  submit(q, lines, batch);
  wait_batch(c, q, batch, 20, w, errlog);
  itest_stop_ok(w);
  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 2);
  CHECK_CONTAINS(jstr(line, "error"), "HTTP 429");
  CHECK_CONTAINS(jstr(line, "error"), "slow down");
  /* The second attempt started at least 1 s after the submit (the first
   * attempt came after the submit and took a few ms). */
  gap = jnum(line, "started_at") - submitted_ms;
  printf("    429: second attempt started %lld ms after the submit (Retry-After: 1)\n", gap);
  CHECK_INT(gap, >=, 1000);
  st1 = server_stats();
  CHECK_INT(stats_key_count(st1, "/429") - n0, ==, 2);
  CHECK_STR(stats_key(st1, "/429", n0), stats_key(st1, "/429", n0 + 1));
  cJSON_Delete(line);
  cJSON_Delete(st0);
  cJSON_Delete(st1);
  redisFree(c);
}

/* 429 with Retry-After as an HTTP date (IMF-fixdate, 2 s after the
 * second the server answered in): the retry starts not before that date,
 * although backoff_ms 10 would retry at once. */
static void test_retry_after_date(void) {
  const char *q = itest_queue("429date");
  redisContext *c = itest_conn();
  char lines[1024];
  char batch[64];
  cJSON *line;
  const char *first;
  const char *at;
  long long date_ms;

  item(lines, sizeof(lines), "/429date?s=2", NULL, ",\"max_attempts\":2,\"backoff_ms\":10");
  run_batch(c, q, lines, 2, NULL, batch, 30);
  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 2);
  first = cJSON_GetArrayItem(jget(line, "errors"), 0) != NULL ? cJSON_GetArrayItem(jget(line, "errors"), 0)->valuestring
                                                              : NULL;
  /* "HTTP 429 (Retry-After N s): retry at EPOCH": the date the first answer gave */
  CHECK_CONTAINS(first, "HTTP 429 (Retry-After ");
  at = strstr(first, "retry at ");
  CHECK(at != NULL);
  date_ms = strtoll(at + 9, NULL, 10) * 1000;
  printf("    429 with an HTTP date: %s; the retry started %lld ms after that date\n", first,
         jnum(line, "started_at") - date_ms);
  CHECK_INT(jnum(line, "started_at"), >=, date_ms);
  cJSON_Delete(line);
  redisFree(c);
}

/* A 302 fails the item at once (no retry) and its Location is never
 * asked for: redirects are not followed. */
static void test_redirect_not_followed(void) {
  const char *q = itest_queue("redirect");
  redisContext *c = itest_conn();
  char lines[1024];
  char batch[64];
  cJSON *st0 = server_stats();
  cJSON *st1;
  cJSON *line;
  const char *error;

  item(lines, sizeof(lines), "/redirect", NULL, ",\"max_attempts\":3,\"backoff_ms\":10");
  run_batch(c, q, lines, 2, NULL, batch, 20);
  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 1);
  error = jstr(line, "error");
  CHECK(error != NULL);
  CHECK_CONTAINS(error, "HTTP 302: moved");
  printf("    redirect: %s\n", error);
  cJSON_Delete(line);
  st1 = server_stats();
  CHECK_INT(stats_num(st1, "requests") - stats_num(st0, "requests"), ==, 1); /* /redirect alone */
  CHECK_INT(stats_key_count(st1, "/redirected"), ==, 0);
  CHECK_INT(stats_missing(st1, "/redirected"), ==, 0);
  cJSON_Delete(st0);
  cJSON_Delete(st1);
  redisFree(c);
}

/* /flaky answers 503 to the first request with a given Idempotency-Key:
 * two items each succeed at attempt 2; each sent the same key twice, and
 * the two items' keys differ. The payload's idempotency_key is sent as is;
 * items of a batch get different default keys. */
static void test_idempotency_key(void) {
  const char *q = itest_queue("idem");
  redisContext *c = itest_conn();
  char lines[4096];
  char one[1024];
  char batch[64];
  char override[64];
  cJSON *st0 = server_stats();
  cJSON *st1;
  cJSON *line;
  const char *k[6];
  int n0 = stats_key_count(st0, "/flaky");

  snprintf(override, sizeof(override), "my-key-%d", (int)getpid());
  lines[0] = '\0';
  for (int i = 0; i < 2; i++) {
    item(one, sizeof(one), "/flaky", NULL, ",\"max_attempts\":3,\"backoff_ms\":10");
    strcat(lines, one);
  }
  item(one, sizeof(one), "/echo", NULL, NULL);
  strcat(lines, one);
  item(one, sizeof(one), "/echo", NULL, NULL);
  strcat(lines, one);
  {
    char extra[128];

    snprintf(extra, sizeof(extra), ",\"idempotency_key\":\"%s\"", override);
    item(one, sizeof(one), "/echo", extra, NULL);
    strcat(lines, one);
  }
  run_batch(c, q, lines, 1, NULL, batch, 20); /* one slot: the /flaky requests come in order */
  for (int i = 0; i < 2; i++) {
    line = result_line(c, q, batch, i);
    CHECK_ITEM_STATUS(line, "succeeded");
    CHECK_INT(jnum(line, "attempts"), ==, 2);
    CHECK(cJSON_IsTrue(jget(jget(jget(line, "result"), "body"), "ok")));
    CHECK_CONTAINS(cJSON_GetArrayItem(jget(line, "errors"), 0)->valuestring, "HTTP 503");
    cJSON_Delete(line);
  }
  st1 = server_stats();
  CHECK_INT(stats_key_count(st1, "/flaky") - n0, ==, 4);
  for (int i = 0; i < 4; i++) {
    k[i] = stats_key(st1, "/flaky", n0 + i);
    CHECK(k[i] != NULL && k[i][0] != '\0');
  }
  printf("    /flaky keys: %s %s %s %s\n", k[0], k[1], k[2], k[3]);
  /* Each key twice (503, then 200), two different keys in all. */
  {
    int same01 = strcmp(k[0], k[1]) == 0;
    int pairs = same01 ? strcmp(k[2], k[3]) == 0 && strcmp(k[0], k[2]) != 0
                       : (strcmp(k[0], k[2]) == 0 && strcmp(k[1], k[3]) == 0 && strcmp(k[0], k[1]) != 0) ||
                             (strcmp(k[0], k[3]) == 0 && strcmp(k[1], k[2]) == 0 && strcmp(k[0], k[1]) != 0);

    CHECK(pairs);
  }
  CHECK_INT(stats_missing(st1, "/flaky"), ==, 0);
  for (int i = 2; i < 5; i++) {
    line = result_line(c, q, batch, i);
    CHECK_ITEM_STATUS(line, "succeeded");
    k[i] = strdup(jstr(jget(jget(jget(line, "result"), "body"), "headers"), "idempotency-key"));
    cJSON_Delete(line);
  }
  CHECK(k[2][0] != '\0');
  CHECK(strcmp(k[2], k[3]) != 0);
  CHECK(strcmp(k[2], k[0]) != 0 && strcmp(k[2], k[1]) != 0);
  CHECK_STR(k[4], override);
  for (int i = 2; i < 5; i++)
    free((char *)k[i]);
  cJSON_Delete(st0);
  cJSON_Delete(st1);
  redisFree(c);
}

/* timeout_ms 300 against a 3 s response: the attempt ends with "timed out
 * after 300 ms", long before the server answers. */
static void test_timeout(void) {
  const char *q = itest_queue("timeout");
  redisContext *c = itest_conn();
  char lines[1024];
  char batch[64];
  cJSON *line;

  item(lines, sizeof(lines), "/slow?ms=3000", NULL, ",\"max_attempts\":1,\"timeout_ms\":300");
  run_batch(c, q, lines, 2, NULL, batch, 20);
  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 1);
  CHECK_CONTAINS(jstr(line, "error"), "timed out after 300 ms");
  CHECK_INT(jnum(line, "duration_ms"), <, 2000);
  CHECK_INT(jnum(line, "duration_ms"), >=, 290);
  cJSON_Delete(line);
  redisFree(c);
}

/* Nothing listens on 127.0.0.1:1: curl's own error (naming the connect),
 * retryable (attempts 2 of 2), never "unknown error". */
static void test_connection_refused(void) {
  const char *q = itest_queue("refused");
  redisContext *c = itest_conn();
  char lines[1024];
  char batch[64];
  cJSON *line;

  snprintf(lines, sizeof(lines),
           "{\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:1/\"},\"max_attempts\":1}\n"
           "{\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:1/\"},\"max_attempts\":2,\"backoff_ms\":10}\n");
  run_batch(c, q, lines, 2, NULL, batch, 20);
  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 1);
  CHECK_CONTAINS(jstr(line, "error"), "onnect"); /* "connect", "Connection refused", "Couldn't connect" */
  CHECK(strstr(jstr(line, "error"), "unknown error") == NULL);
  CHECK(cJSON_IsString(cJSON_GetArrayItem(jget(line, "log"), 0)));
  CHECK_CONTAINS(cJSON_GetArrayItem(jget(line, "log"), 0)->valuestring, "GET http://127.0.0.1:1/ -> ");
  printf("    refused: %s\n", jstr(line, "error"));
  cJSON_Delete(line);
  line = result_line(c, q, batch, 1);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 2); /* retryable */
  cJSON_Delete(line);
  redisFree(c);
}

/* --http-allow 127.0.0.1:PORT,*.example.com: 127.0.0.1 on that port runs;
 * localhost fails at once (attempts 1 of 5) naming the option, and no
 * request is made. */
static void test_allow_list(void) {
  const char *q = itest_queue("allow");
  redisContext *c = itest_conn();
  char allow[64];
  const char *extra[] = {"--http-allow", allow, NULL};
  char lines[2048];
  char batch[64];
  cJSON *st0 = server_stats();
  cJSON *st1;
  cJSON *line;

  snprintf(allow, sizeof(allow), "127.0.0.1:%d,*.example.com", server_port);
  snprintf(lines, sizeof(lines),
           "{\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:%d/ok\"}}\n"
           "{\"type\":\"http\",\"payload\":{\"url\":\"http://localhost:%d/ok\"},"
           "\"max_attempts\":5,\"backoff_ms\":10}\n",
           server_port, server_port);
  run_batch(c, q, lines, 2, extra, batch, 20);
  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "succeeded");
  cJSON_Delete(line);
  line = result_line(c, q, batch, 1);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 1);
  CHECK_CONTAINS(jstr(line, "error"), "not allowed");
  CHECK_CONTAINS(jstr(line, "error"), "--http-allow");
  printf("    allow: %s\n", jstr(line, "error"));
  cJSON_Delete(line);
  st1 = server_stats();
  CHECK_INT(stats_num(st1, "requests") - stats_num(st0, "requests"), ==, 1);
  cJSON_Delete(st0);
  cJSON_Delete(st1);
  redisFree(c);
}

/* A 10 MiB body under the default --http-max-body (1 MiB): the item
 * succeeds with "truncated":true. */
static void test_big_body_default(void) {
  const char *q = itest_queue("big");
  redisContext *c = itest_conn();
  char lines[1024];
  char batch[64];
  cJSON *line;
  const cJSON *res;

  item(lines, sizeof(lines), "/big", NULL, ",\"max_attempts\":1");
  run_batch(c, q, lines, 2, NULL, batch, 25);
  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "succeeded");
  res = jget(line, "result");
  CHECK_INT(jnum(res, "status"), ==, 200);
  CHECK(cJSON_IsTrue(jget(res, "truncated")));
  CHECK(cJSON_IsString(jget(res, "body")));
  CHECK_INT(strlen(jstr(res, "body")), <=, 1048576);
  CHECK_INT(jnum(res, "bytes"), >=, 1048576);
  printf("    big: stored %zu bytes of body, \"bytes\":%lld\n", strlen(jstr(res, "body")), jnum(res, "bytes"));
  cJSON_Delete(line);
  redisFree(c);
}

/* --http-max-body 1000: /big keeps at most 1000 bytes (truncated), /ok
 * (43 bytes) is whole. */
static void test_max_body_option(void) {
  const char *q = itest_queue("maxbody");
  redisContext *c = itest_conn();
  const char *extra[] = {"--http-max-body", "1000", NULL};
  char lines[2048];
  char one[1024];
  char batch[64];
  cJSON *line;
  const cJSON *res;

  lines[0] = '\0';
  item(one, sizeof(one), "/big", NULL, ",\"max_attempts\":1");
  strcat(lines, one);
  item(one, sizeof(one), "/ok", NULL, ",\"max_attempts\":1");
  strcat(lines, one);
  run_batch(c, q, lines, 2, extra, batch, 25);
  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "succeeded");
  res = jget(line, "result");
  CHECK(cJSON_IsTrue(jget(res, "truncated")));
  CHECK(cJSON_IsString(jget(res, "body")));
  CHECK_INT(strlen(jstr(res, "body")), <=, 1000);
  CHECK_INT(strlen(jstr(res, "body")), >, 0);
  CHECK_INT(strspn(jstr(res, "body"), "x"), ==, strlen(jstr(res, "body")));
  CHECK_INT(jnum(res, "bytes"), >=, 1000);
  printf("    max-body 1000: stored %zu bytes of body, \"bytes\":%lld\n", strlen(jstr(res, "body")),
         jnum(res, "bytes"));
  cJSON_Delete(line);
  line = result_line(c, q, batch, 1);
  CHECK_ITEM_STATUS(line, "succeeded");
  res = jget(line, "result");
  CHECK(cJSON_IsFalse(jget(res, "truncated")));
  CHECK(cJSON_IsTrue(jget(jget(res, "body"), "ok")));
  cJSON_Delete(line);
  redisFree(c);
}

/* Appends s (len bytes) to a growing dump. */
static void dump_add(char **dump, size_t *n, size_t *cap, const char *s, size_t len) {
  if (*n + len + 2 > *cap) {
    while (*n + len + 2 > *cap)
      *cap = *cap ? *cap * 2 : 1 << 20;
    *dump = realloc(*dump, *cap);
    CHECK(*dump != NULL);
  }
  memcpy(*dump + *n, s, len);
  *n += len;
  (*dump)[(*n)++] = '\n';
  (*dump)[*n] = '\0';
}

/* Adds every string inside a reply (nested arrays included; RESP2). */
static void dump_reply(char **dump, size_t *n, size_t *cap, const redisReply *r) {
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR)
    dump_add(dump, n, cap, r->str, r->len);
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
    dump_reply(dump, n, cap, r->element[i]);
}

/* Every key of the test Redis with its value, as text (free it). */
__attribute__((noinline)) static char *dump_redis(redisContext *c, size_t *keys) {
  char *dump = NULL;
  size_t n = 0;
  size_t cap = 0;
  char cursor[64] = "0";

  *keys = 0;
  do {
    redisReply *r = itest_cmd(c, "SCAN %s COUNT 1000", cursor);

    CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 2);
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i < r->element[1]->elements; i++) {
      const char *key = r->element[1]->element[i]->str;
      redisReply *t = itest_cmd(c, "TYPE %s", key);
      redisReply *v = NULL;

      (*keys)++;
      dump_add(&dump, &n, &cap, key, strlen(key));
      if (strcmp(t->str, "string") == 0)
        v = itest_cmd(c, "GET %s", key);
      else if (strcmp(t->str, "hash") == 0)
        v = itest_cmd(c, "HGETALL %s", key);
      else if (strcmp(t->str, "stream") == 0)
        v = itest_cmd(c, "XRANGE %s - +", key);
      else if (strcmp(t->str, "zset") == 0)
        v = itest_cmd(c, "ZRANGE %s 0 -1 WITHSCORES", key);
      else if (strcmp(t->str, "list") == 0)
        v = itest_cmd(c, "LRANGE %s 0 -1", key);
      else if (strcmp(t->str, "set") == 0)
        v = itest_cmd(c, "SMEMBERS %s", key);
      else
        sl_test_fail(__FILE__, __LINE__, "key %s has type %s, which this dump does not read", key, t->str);
      dump_reply(&dump, &n, &cap, v);
      freeReplyObject(v);
      freeReplyObject(t);
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  {
    /* The function library too, in case anything were stored in it. */
    redisReply *f = itest_cmd(c, "FUNCTION LIST WITHCODE");

    dump_reply(&dump, &n, &cap, f);
    freeReplyObject(f);
  }
  if (dump == NULL)
    dump = strdup("");
  return dump;
}

/* ${env:TEST_API_TOKEN}, granted with --secret, in a header reaches the
 * server (it says "authorized" without echoing it), for a success, a retried
 * failure and a dead letter; a name the worker was not granted fails the
 * item at once as refused, naming the secret, with no dead letter. Then the
 * secret is nowhere in Redis nor in the worker's log (run without --quiet,
 * so it logs what it does). */
static void test_secrets(void) {
  const char *q = itest_queue("secret");
  redisContext *c = itest_conn();
  const char *auth = ",\"headers\":{\"Authorization\":\"Bearer ${env:TEST_API_TOKEN}\"}";
  char lines[4096];
  char one[1024];
  char batch[64];
  char errlog[600];
  cJSON *line;
  char *log;
  char *dump;
  size_t keys;
  pid_t w;

  lines[0] = '\0';
  item(one, sizeof(one), "/secret-check", auth, NULL);
  strcat(lines, one);
  item(one, sizeof(one), "/status/500", auth, ",\"max_attempts\":2,\"backoff_ms\":10");
  strcat(lines, one);
  item(one, sizeof(one), "/status/403", auth, ",\"max_attempts\":3");
  strcat(lines, one);
  item(one, sizeof(one), "/secret-check", ",\"headers\":{\"Authorization\":\"Bearer ${env:NOT_SET_ANYWHERE}\"}",
       ",\"max_attempts\":5,\"backoff_ms\":10");
  strcat(lines, one);
  item(one, sizeof(one), "/echo", ",\"method\":\"POST\",\"body\":\"${env:NOT_SET_ANYWHERE}\"",
       ",\"max_attempts\":5,\"backoff_ms\":10");
  strcat(lines, one);
  item(one, sizeof(one), "/slow?ms=3000", auth, ",\"max_attempts\":1,\"timeout_ms\":200");
  strcat(lines, one);
  setenv("TEST_API_TOKEN", SECRET, 1); /* inherited by the worker */
  setenv("NOT_SET_ANYWHERE", "set, but never granted", 1);
  snprintf(errlog, sizeof(errlog), "%s", itest_path("worker-secret.err"));
  {
    const char *grant[] = {"--secret", "TEST_API_TOKEN", NULL};

    w = worker(q, 4, 0, grant, errlog);
  }
  submit(q, lines, batch);
  wait_batch(c, q, batch, 25, w, errlog);
  itest_stop_ok(w);

  line = result_line(c, q, batch, 0);
  CHECK_ITEM_STATUS(line, "succeeded");
  CHECK(cJSON_IsTrue(jget(jget(jget(line, "result"), "body"), "authorized")));
  cJSON_Delete(line);
  line = result_line(c, q, batch, 1);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 2);
  cJSON_Delete(line);
  line = result_line(c, q, batch, 2);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_INT(jnum(line, "attempts"), ==, 1);
  CHECK_CONTAINS(jstr(line, "error"), "HTTP 403");
  cJSON_Delete(line);
  for (int i = 3; i < 5; i++) {
    const char *error;

    line = result_line(c, q, batch, i);
    CHECK_ITEM_STATUS(line, "failed");
    CHECK_INT(jnum(line, "attempts"), ==, 1);
    error = jstr(line, "error");
    CHECK(error != NULL);
    CHECK_CONTAINS(error, "secret NOT_SET_ANYWHERE is not granted to this worker");
    CHECK(cJSON_IsTrue(jget(line, "refused")));
    printf("    not granted: %s\n", error);
    cJSON_Delete(line);
  }
  /* refused: counted, and no dead letter (three letters: the 500, 403 and timed-out items) */
  CHECK_INT(itest_batch_num(c, q, batch, "refused"), ==, 2);
  {
    redisReply *r = itest_cmd(c, "XLEN sluice:{%s}:dead", q);

    CHECK_INT(r->integer, ==, 3);
    freeReplyObject(r);
  }
  line = result_line(c, q, batch, 5);
  CHECK_ITEM_STATUS(line, "failed");
  CHECK_CONTAINS(jstr(line, "error"), "timed out");
  cJSON_Delete(line);

  dump = dump_redis(c, &keys);
  printf("    scanned %zu keys (%zu bytes of values) and the worker log for the secret\n", keys, strlen(dump));
  CHECK(strstr(dump, "authorized") != NULL);      /* the dump does hold the results */
  CHECK(strstr(dump, "${env:TEST_API_TOKEN}") != NULL); /* and the items as written */
  {
    const char *at = strstr(dump, SECRET);
    size_t off = at != NULL ? (size_t)(at - dump) : 0;

    if (at != NULL)
      sl_test_fail(__FILE__, __LINE__, "the secret is in Redis: ...%.400s", dump + (off > 200 ? off - 200 : 0));
  }
  free(dump);
  log = itest_read(errlog, NULL);
  CHECK(log != NULL);
  printf("    worker log: %zu bytes, e.g. %.160s\n", strlen(log), log);
  if (strstr(log, SECRET) != NULL)
    sl_test_fail(__FILE__, __LINE__, "the secret is in the worker's log: %s", log);
  free(log);
  redisFree(c);
}

/* http items to a plain-http HTTP/1.1 host start at once, not in waves
 * behind a connection that cannot multiplex: 200 items held 2 s by the
 * server (named "localhost", so connections are set up asynchronously),
 * one worker with 200 slots; the server sees at least 180 in flight at
 * once, and the 180th arrives well before the first could have finished,
 * with the default --http-version and with 1.1. Decided at the server, not
 * on wall time. */
static void test_no_waves(void) {
  static const char *const versions[2] = {NULL, "1.1"};

  for (int v = 0; v < 2; v++) {
    const char *q = itest_queue(v == 0 ? "waves2" : "waves11");
    redisContext *c = itest_conn();
    const int n = 200;
    char *lines = malloc((size_t)n * 160);
    size_t len = 0;
    char batch[64];
    char errlog[600];
    const char *extra[] = {"--http-version", versions[v], NULL};
    cJSON *st;
    pid_t w;

    CHECK(lines != NULL);
    for (int i = 0; i < n; i++)
      len += (size_t)snprintf(lines + len, (size_t)n * 160 - len,
                              "{\"type\":\"http\",\"payload\":{\"url\":\"http://localhost:%d/hold?ms=2000\"}}\n",
                              server_port);
    free(server_get("/stats?reset_peak=1"));
    snprintf(errlog, sizeof(errlog), "%s", itest_path("worker-waves.err"));
    submit(q, lines, batch); /* queued first: the worker takes all 200 at once */
    w = worker(q, 200, 1, versions[v] != NULL ? extra : NULL, errlog);
    wait_batch(c, q, batch, 60, w, errlog);
    itest_stop_ok(w);
    free(lines);
    st = server_stats();
    {
      /* when the 180th request arrived, after the first: no wave waits for
       * an earlier one to finish (each holds 2,000 ms; a request that
       * waited for a connection to be reused would arrive after that) */
      const cJSON *arr = cJSON_GetObjectItemCaseSensitive(st, "hold_arrivals_ms");
      const cJSON *a180 = cJSON_GetArrayItem(arr, 179);

      CHECK(cJSON_IsNumber(a180));
      printf("    --http-version %s: %d items of 2 s, peak %lld in flight at the server; the 180th arrived "
             "%.0f ms after the first\n",
             versions[v] != NULL ? versions[v] : "2 (default)", n, stats_num(st, "peak_in_flight"),
             a180->valuedouble);
      CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, n);
      CHECK_INT(stats_num(st, "peak_in_flight"), >=, 180);
      CHECK_INT(a180->valuedouble, <, 1500);
    }
    cJSON_Delete(st);
    redisFree(c);
  }
}

/* 2,000 items that each hold a connection for 1 s, through one worker with
 * 500 slots: all succeed, at least 400 are in flight at once, and every
 * item sends its own Idempotency-Key. (The hold is long enough for the
 * single Python server, starved of CPU by a parallel ctest, to accept the
 * worker's 500 connections while the first are still held: with 300 ms it
 * once saw only 324 at a time.) */
static void test_throughput(void) {
  const char *q = itest_queue("many");
  redisContext *c = itest_conn();
  const int n = 2000;
  size_t cap = (size_t)n * 160;
  char *lines = malloc(cap);
  size_t len = 0;
  char batch[64];
  char errlog[600];
  cJSON *st0 = server_stats();
  cJSON *st1;
  long long t0;
  long long t1;
  int k0 = stats_key_count(st0, "/hold");
  pid_t w;

  CHECK(lines != NULL);
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(lines + len, cap - len,
                            "{\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:%d/hold?ms=1000\"},"
                            "\"max_attempts\":3,\"backoff_ms\":100}\n",
                            server_port);
  snprintf(errlog, sizeof(errlog), "%s", itest_path("worker-many.err"));
  free(server_get("/stats?reset_peak=1"));
  w = worker(q, 500, 1, NULL, errlog);
  itest_wait_worker(c, q, w, NULL, 0, 10000); /* up: the timing starts at the submit */
  t0 = itest_ms();
  submit(q, lines, batch);
  wait_batch(c, q, batch, 60, w, errlog);
  t1 = itest_ms();
  itest_stop_ok(w);
  free(lines);
  st1 = server_stats();
  printf("    throughput: %d items in %.2f s = %.0f items/s through one worker (500 slots, 1 s each); "
         "server peak in flight %lld, %lld requests\n",
         n, (double)(t1 - t0) / 1000.0, n * 1000.0 / (double)(t1 - t0), stats_num(st1, "peak_in_flight"),
         stats_num(st1, "requests") - stats_num(st0, "requests"));
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, n);
  CHECK_INT(stats_num(st1, "peak_in_flight"), >=, 400);
  {
    /* One key per item (a retry would repeat its item's key). */
    int total = stats_key_count(st1, "/hold") - k0;
    int distinct = 0;
    const char **ks = malloc(sizeof(*ks) * (size_t)(total > 0 ? total : 1));

    CHECK(ks != NULL);
    CHECK_INT(total, >=, n);
    for (int i = 0; i < total; i++) {
      const char *key = stats_key(st1, "/hold", k0 + i);
      int seen = 0;

      CHECK(key != NULL);
      for (int j = 0; j < distinct && !seen; j++)
        seen = strcmp(ks[j], key) == 0;
      if (!seen)
        ks[distinct++] = key;
    }
    CHECK_INT(distinct, ==, n);
    CHECK_INT(stats_missing(st1, "/hold"), ==, 0);
    free(ks);
  }
  cJSON_Delete(st0);
  cJSON_Delete(st1);
  redisFree(c);
}


/* ---- Completion webhooks ---- */

/* The signing secrets the webhook tests give: 32 bytes each, in the whsec_
 * form README's one-liner makes. */
#define HOOK_SECRET "whsec_c2x1aWNlLXRlc3Qtd2ViaG9vay1rZXktMzItYnl0ZXM="
#define OTHER_SECRET "whsec_YW5vdGhlci1rZXktb2YtdGhlLXNhbWUtc2l6ZS0zMmI="

/* Lines of n noop items (free them). */
static char *noop_lines(int n) {
  size_t cap = (size_t)n * 48 + 1;
  char *lines = malloc(cap);
  size_t len = 0;

  CHECK(lines != NULL);
  lines[0] = '\0';
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(lines + len, cap - len, "{\"type\":\"noop\",\"payload\":%d}\n", i);
  return lines;
}

/* Submits the lines with --webhook URL; the batch id goes to batch (64 bytes). */
static void submit_with_webhook(const char *q, const char *lines, const char *url, char *batch) {
  char path[600];
  char *out = NULL;
  char *err = NULL;

  snprintf(path, sizeof(path), "%s", itest_path("hook.jsonl"));
  itest_write(path, lines, strlen(lines));
  {
    const char *args[] = {"submit", "--webhook", url, "--redis", itest_url(), "--queue", q, path, NULL};

    if (itest_run(args, &out, &err, 60) != 0)
      sl_test_fail(__FILE__, __LINE__, "submit failed: %s", err ? err : "");
  }
  snprintf(batch, 64, "%.26s", out);
  free(out);
  free(err);
}

/* Every try the receiver got for a batch, failed ones too, in arrival
 * order (cJSON_Delete it); *tries how many. */
static cJSON *hooks_of(const char *batch, int *tries) {
  char *body = server_get("/hooks");
  cJSON *all = cJSON_Parse(body);
  cJSON *mine = cJSON_CreateArray();
  const cJSON *h;
  const cJSON *t;

  free(body);
  CHECK(all != NULL);
  cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(all, "hooks")) {
    const char *b = jstr(h, "body");

    if (b != NULL && strstr(b, batch) != NULL)
      cJSON_AddItemToArray(mine, cJSON_Duplicate(h, 1));
  }
  t = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(all, "tries"), batch);
  *tries = cJSON_IsNumber(t) ? (int)t->valuedouble : 0;
  cJSON_Delete(all);
  return mine;
}

/* A header of a recorded try (names in lower case), or NULL. */
static const char *hdr(const cJSON *hook, const char *name) {
  return jstr(jget(hook, "headers"), name);
}

/* Waits until the batch's webhook was delivered (webhook_at) and has left
 * the queue's webhook set: from then on no worker can claim it again, so
 * what the receiver has is all it gets. Fails at once when it was given up,
 * and after timeout_s. */
static void wait_webhook(redisContext *c, const char *q, const char *batch, int timeout_s) {
  long long t0 = itest_ms();

  for (;;) {
    redisReply *r = itest_cmd(c, "HMGET sluice:{%s}:b:%s webhook_at webhook_error", q, batch);
    redisReply *z = itest_cmd(c, "ZSCORE sluice:{%s}:webhooks %s", q, batch);
    int delivered = r->element[0]->type == REDIS_REPLY_STRING && z->type == REDIS_REPLY_NIL;

    if (r->element[1]->type == REDIS_REPLY_STRING && strncmp(r->element[1]->str, "gave up", 7) == 0)
      sl_test_fail(__FILE__, __LINE__, "the webhook of batch %s was given up: %s", batch, r->element[1]->str);
    freeReplyObject(r);
    freeReplyObject(z);
    if (delivered)
      return;
    if (itest_ms() - t0 > timeout_s * 1000LL)
      sl_test_fail(__FILE__, __LINE__, "the webhook of batch %s was not delivered within %d s", batch, timeout_s);
    usleep(50000);
  }
}

/* The webhook-id of end n of a batch of queue q, as README gives the rule:
 * "msg_" BATCH "_" N "_" and the first 8 hex digits of SHA-1(queue name). */
static void expected_id(const char *q, const char *batch, int n, char *buf, size_t len) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;

  CHECK(EVP_Digest(q, strlen(q), md, &mdlen, EVP_sha1(), NULL) == 1);
  snprintf(buf, len, "msg_%s_%d_%02x%02x%02x%02x", batch, n, md[0], md[1], md[2], md[3]);
}

/* The Standard Webhooks headers of a signed try: Content-Type, webhook-id
 * (the id of end n), a webhook-timestamp within a minute of this clock, a
 * v1 signature of 44 base64 characters, and none of the old X-Sluice ones. */
static void check_signed_headers(const cJSON *h, const char *q, const char *batch, int n) {
  char want[160];
  const char *ts = hdr(h, "webhook-timestamp");
  const char *sig = hdr(h, "webhook-signature");
  long long now = (long long)time(NULL);
  long long t;

  expected_id(q, batch, n, want, sizeof(want));
  CHECK_STR(hdr(h, "content-type"), "application/json");
  CHECK_STR(hdr(h, "webhook-id"), want);
  CHECK(ts != NULL);
  t = strtoll(ts, NULL, 10);
  if (t < now - 60 || t > now + 60)
    sl_test_fail(__FILE__, __LINE__, "webhook-timestamp %s is not within a minute of now (%lld)", ts, now);
  CHECK(sig != NULL);
  CHECK(strncmp(sig, "v1,", 3) == 0);
  CHECK_INT(strlen(sig), ==, 3 + 44);
  CHECK(hdr(h, "x-sluice-delivery") == NULL);
  CHECK(hdr(h, "x-sluice-signature") == NULL);
}

/* ---- Verifying with the standardwebhooks npm package ---- */

/* The node_modules that holds standardwebhooks: $SLUICE_NODE_MODULES, else
 * the build's (SL_NODE_MODULES, set by CMake; scripts/dev installs it). */
static const char *node_modules(void) {
  const char *env = getenv("SLUICE_NODE_MODULES");

  if (env != NULL && env[0] != '\0')
    return env;
#ifdef SL_NODE_MODULES
  return SL_NODE_MODULES;
#else
  return "node_modules";
#endif
}

/* Fails the test, saying what to install, unless `node` is on PATH and the
 * package is in node_modules(): a test that cannot verify must not pass. */
static void need_verifier(void) {
  const char *path = getenv("PATH");
  const char *p = path;
  char pkg[700];
  int found = 0;

  while (p != NULL && *p != '\0' && !found) {
    const char *end = strchr(p, ':');
    size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
    char cand[600];

    snprintf(cand, sizeof(cand), "%.*s/node", (int)n, n > 0 ? p : ".");
    found = access(cand, X_OK) == 0;
    p = end != NULL ? end + 1 : NULL;
  }
  if (!found)
    sl_test_fail(__FILE__, __LINE__,
                 "node is not on PATH (%s): these tests verify webhooks with the standardwebhooks npm package; "
                 "run scripts/dev build, which installs nodejs, npm and the package",
                 path ? path : "unset");
  snprintf(pkg, sizeof(pkg), "%s/standardwebhooks/package.json", node_modules());
  if (access(pkg, R_OK) != 0)
    sl_test_fail(__FILE__, __LINE__,
                 "the standardwebhooks npm package is not installed (%s is missing): run scripts/dev build, or "
                 "npm install --prefix BUILD/node standardwebhooks@1.1.1, or point SLUICE_NODE_MODULES at a "
                 "node_modules that has it",
                 pkg);
}

/* Runs tests/integration/webhook_verify.js on a recorded try, as a receiver
 * holding `secret` whose clock is offset_s seconds ahead. body, when not
 * NULL, replaces the recorded body and id the webhook-id header (a
 * tampered copy). Returns the line it printed (free it); *code is its exit
 * code: 0 accepted, 1 rejected by the library, 2 could not run. */
static char *verify(const cJSON *hook, const char *secret, int offset_s, const char *body, const char *id,
                    int *code) {
  const char *slash = strrchr(__FILE__, '/');
  char script[600];
  char dpath[600];
  char opath[600];
  char offset[24];
  cJSON *d = cJSON_CreateObject();
  cJSON *hs = cJSON_Duplicate(jget(hook, "headers"), 1);
  char *text;
  char *out;
  long long t0 = itest_ms();
  int status = 0;
  pid_t pid;

  snprintf(script, sizeof(script), "%.*s/webhook_verify.js", slash ? (int)(slash - __FILE__) : 1,
           slash ? __FILE__ : ".");
  snprintf(dpath, sizeof(dpath), "%s", itest_path("delivery.json"));
  snprintf(opath, sizeof(opath), "%s", itest_path("verify.out"));
  snprintf(offset, sizeof(offset), "%d", offset_s);
  CHECK(d != NULL && hs != NULL);
  if (body != NULL) {
    size_t n = strlen(body);
    unsigned char *b64 = malloc((n + 2) / 3 * 4 + 1);

    CHECK(b64 != NULL);
    EVP_EncodeBlock(b64, (const unsigned char *)body, (int)n);
    cJSON_AddStringToObject(d, "body_b64", (const char *)b64);
    free(b64);
  } else {
    cJSON_AddStringToObject(d, "body_b64", jstr(hook, "body_b64"));
  }
  if (id != NULL)
    cJSON_ReplaceItemInObjectCaseSensitive(hs, "webhook-id", cJSON_CreateString(id));
  cJSON_AddItemToObject(d, "headers", hs);
  text = cJSON_PrintUnformatted(d);
  CHECK(text != NULL);
  itest_write(dpath, text, strlen(text));
  free(text);
  cJSON_Delete(d);
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    int fd = open(opath, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    setenv("SLUICE_WEBHOOK_SECRET", secret, 1);
    execlp("node", "node", script, node_modules(), dpath, offset, (char *)NULL);
    fprintf(stderr, "error: exec node: %s\n", strerror(errno));
    _exit(127);
  }
  for (;;) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      break;
    if (itest_ms() - t0 > 30000) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      sl_test_fail(__FILE__, __LINE__, "node %s did not finish within 30 s", script);
    }
    usleep(10000);
  }
  out = itest_read(opath, NULL);
  CHECK(out != NULL);
  out[strcspn(out, "\n")] = '\0';
  *code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  if (*code == 2 || *code == 127)
    sl_test_fail(__FILE__, __LINE__, "the verifier could not run (exit %d): %s", *code, out);
  return out;
}

/* The library accepts the try as it was recorded. */
static void check_verifies(const cJSON *hook, int lineno) {
  int code = -1;
  char *out = verify(hook, HOOK_SECRET, 0, NULL, NULL, &code);

  if (code != 0 || strcmp(out, "ok") != 0)
    sl_test_fail(__FILE__, lineno, "standardwebhooks rejected a delivery (exit %d): %s", code, out);
  free(out);
}
#define CHECK_VERIFIES(hook) check_verifies((hook), __LINE__)

/* The library rejects it (exit 1) with a message containing `why`. */
static void check_rejected(const cJSON *hook, const char *secret, int offset_s, const char *body, const char *id,
                           const char *why, int lineno) {
  int code = -1;
  char *out = verify(hook, secret, offset_s, body, id, &code);

  if (code != 1 || strstr(out, why) == NULL)
    sl_test_fail(__FILE__, lineno, "expected standardwebhooks to reject it with \"%s\", got (exit %d): %s", why,
                 code, out);
  printf("    %s (clock %+d s%s%s)\n", out, offset_s, body ? ", body changed" : "", id ? ", id changed" : "");
  free(out);
}

/* Runs one worker (signed with HOOK_SECRET) until a batch of n noop items
 * with a webhook to /hook has it delivered; returns that try (cJSON_Delete
 * it) and the batch id in batch (64 bytes). */
static cJSON *capture_delivery(redisContext *c, const char *q, int n, char *batch) {
  char url[128];
  char *lines = noop_lines(n);
  cJSON *hooks;
  cJSON *h;
  int tries = 0;
  pid_t w;

  setenv("SLUICE_WEBHOOK_SECRET", HOOK_SECRET, 1);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", server_port);
  w = worker(q, 10, 1, NULL, NULL);
  submit_with_webhook(q, lines, url, batch);
  free(lines);
  itest_wait_batch(c, q, batch, 30);
  wait_webhook(c, q, batch, 15);
  itest_stop_ok(w);
  hooks = hooks_of(batch, &tries);
  CHECK_INT(tries, ==, 1);
  h = cJSON_DetachItemFromArray(hooks, 0);
  cJSON_Delete(hooks);
  CHECK(h != NULL);
  return h;
}

/* Exactly one signed POST per batch with three racing workers; the
 * standardwebhooks library verifies it. */
static void test_webhook_once_signed(void) {
  const char *q = itest_queue("hook");
  redisContext *c = itest_conn();
  char url[128];
  char batch[64];
  char *lines = noop_lines(30);
  pid_t w[3];
  cJSON *hooks;
  const cJSON *h;
  int tries = 0;

  need_verifier();
  setenv("SLUICE_WEBHOOK_SECRET", HOOK_SECRET, 1);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", server_port);
  for (int i = 0; i < 3; i++)
    w[i] = worker(q, 10, 1, NULL, NULL);
  submit_with_webhook(q, lines, url, batch);
  free(lines);
  itest_wait_batch(c, q, batch, 30);
  wait_webhook(c, q, batch, 15);
  hooks = hooks_of(batch, &tries);
  CHECK_INT(tries, ==, 1);
  CHECK_INT(cJSON_GetArraySize(hooks), ==, 1);
  h = cJSON_GetArrayItem(hooks, 0);
  CHECK_INT(jnum(h, "status"), ==, 200);
  CHECK_CONTAINS(jstr(h, "body"), "\"status\":\"completed\"");
  CHECK_CONTAINS(jstr(h, "body"), "\"succeeded\":30");
  check_signed_headers(h, q, batch, 1);
  printf("    webhook-id: %s, webhook-signature: %s\n", hdr(h, "webhook-id"), hdr(h, "webhook-signature"));
  CHECK_VERIFIES(h);
  cJSON_Delete(hooks);
  CHECK_INT(itest_batch_num(c, q, batch, "webhook_attempts"), ==, 1);
  for (int i = 0; i < 3; i++)
    itest_stop_ok(w[i]);
  redisFree(c);
}

/* The webhook body of a batch with failures: its failed items' ids and
 * errors, and its metric sums, valid under docs/webhook.schema.json (checked
 * with python3-jsonschema, a real validator). */
static void test_webhook_failed_items(void) {
  const char *q = itest_queue("hookfail");
  redisContext *c = itest_conn();
  char url[128];
  char batch[64];
  char lines[1024];
  char schema[700];
  pid_t w;
  cJSON *hooks;
  cJSON *body;
  const cJSON *items;
  int tries = 0;
  const char *slash = strrchr(__FILE__, '/');

  need_verifier();
  setenv("SLUICE_WEBHOOK_SECRET", HOOK_SECRET, 1);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", server_port);
  snprintf(lines, sizeof(lines),
           "{\"id\":\"ok1\",\"type\":\"noop\",\"payload\":1}\n"
           "{\"id\":\"bad1\",\"type\":\"sleep\",\"payload\":{\"ms\":0,\"fail_rate\":1}}\n"
           "{\"id\":\"bad2\",\"type\":\"sleep\",\"payload\":{\"ms\":0,\"fail_rate\":1}}\n"
           "{\"id\":\"cost\",\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:%d/usage?cost=0.5\","
           "\"metrics\":{\"cost\":\"$.usage.cost\"}}}\n", server_port);
  w = worker(q, 10, 1, NULL, NULL);
  submit_with_webhook(q, lines, url, batch);
  itest_wait_batch(c, q, batch, 30);
  wait_webhook(c, q, batch, 15);
  hooks = hooks_of(batch, &tries);
  CHECK_INT(cJSON_GetArraySize(hooks), ==, 1);
  body = cJSON_Parse(jstr(cJSON_GetArrayItem(hooks, 0), "body"));
  CHECK(body != NULL);
  CHECK_INT(jnum(body, "failed"), ==, 2);
  CHECK_INT(jnum(body, "failed_listed"), ==, 2);
  items = jget(body, "failed_items");
  CHECK_INT(cJSON_GetArraySize(items), ==, 2);
  CHECK_STR(jstr(cJSON_GetArrayItem(items, 0), "id"), "bad1");
  CHECK_INT(jnum(cJSON_GetArrayItem(items, 0), "index"), ==, 1);
  CHECK_CONTAINS(jstr(cJSON_GetArrayItem(items, 0), "error"), "simulated failure");
  CHECK_STR(jstr(cJSON_GetArrayItem(items, 1), "id"), "bad2");
  CHECK(jget(jget(jget(body, "metrics"), "cost"), "all")->valuedouble == 0.5);
  CHECK_VERIFIES(cJSON_GetArrayItem(hooks, 0));
  /* the body is valid under the documented schema */
  snprintf(schema, sizeof(schema), "%.*s/../../docs/webhook.schema.json", (int)(slash - __FILE__), __FILE__);
  {
    const char *py = "import json,sys,jsonschema; s=json.load(open(sys.argv[1])); "
                     "jsonschema.Draft202012Validator.check_schema(s); "
                     "jsonschema.Draft202012Validator(s).validate(json.loads(sys.stdin.read())); print('valid')";
    char cmd[1200];
    FILE *p;
    char got[64] = "";
    const char *text = jstr(cJSON_GetArrayItem(hooks, 0), "body");

    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c \"%s\" '%s'", py, schema);
    itest_write(itest_path("hook-body.json"), text, strlen(text));
    snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " < '%s'", itest_path("hook-body.json"));
    p = popen(cmd, "r");
    CHECK(p != NULL);
    if (fgets(got, sizeof(got), p) == NULL)
      got[0] = '\0';
    CHECK_INT(pclose(p), ==, 0);
    CHECK_STR(got, "valid\n");
  }
  cJSON_Delete(body);
  cJSON_Delete(hooks);
  itest_stop_ok(w);
  redisFree(c);
}

/* A receiver that fails twice gets the webhook on the third try: the same
 * webhook-id every time, a fresh timestamp and signature each time, and
 * every try verifies. */
static void test_webhook_retried(void) {
  const char *q = itest_queue("hookretry");
  redisContext *c = itest_conn();
  char url[128];
  char batch[64];
  char want[160];
  char *lines = noop_lines(5);
  pid_t w;
  cJSON *hooks;
  int tries = 0;

  need_verifier();
  setenv("SLUICE_WEBHOOK_SECRET", HOOK_SECRET, 1);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook?fail=2", server_port);
  w = worker(q, 10, 1, NULL, NULL);
  submit_with_webhook(q, lines, url, batch);
  free(lines);
  itest_wait_batch(c, q, batch, 30);
  wait_webhook(c, q, batch, 30);
  hooks = hooks_of(batch, &tries);
  CHECK_INT(tries, ==, 3);
  CHECK_INT(cJSON_GetArraySize(hooks), ==, 3);
  expected_id(q, batch, 1, want, sizeof(want));
  for (int i = 0; i < 3; i++) {
    const cJSON *h = cJSON_GetArrayItem(hooks, i);

    CHECK_INT(jnum(h, "attempt"), ==, i + 1);
    CHECK_INT(jnum(h, "status"), ==, i < 2 ? 500 : 200);
    check_signed_headers(h, q, batch, 1);
    CHECK_STR(hdr(h, "webhook-id"), want);
    if (i > 0) {
      const cJSON *prev = cJSON_GetArrayItem(hooks, i - 1);

      /* tries are at least a second apart (backoff 1 s, then 2 s) */
      CHECK_INT(strtoll(hdr(h, "webhook-timestamp"), NULL, 10), >, strtoll(hdr(prev, "webhook-timestamp"), NULL, 10));
      CHECK(strcmp(hdr(h, "webhook-signature"), hdr(prev, "webhook-signature")) != 0);
    }
    printf("    try %d: %lld, webhook-timestamp %s, webhook-signature %s\n", i + 1, jnum(h, "status"),
           hdr(h, "webhook-timestamp"), hdr(h, "webhook-signature"));
    CHECK_VERIFIES(h);
  }
  cJSON_Delete(hooks);
  CHECK_INT(itest_batch_num(c, q, batch, "webhook_attempts"), ==, 3);
  itest_stop_ok(w);
  redisFree(c);
}

/* The webhook fields of a batch hash and its score in P..webhooks. */
typedef struct hook_state {
  long long attempts; /* webhook_attempts: tries taken so far */
  int has_error;      /* webhook_error is set */
  char error[512];    /* webhook_error */
  long long due_in;   /* the score minus the server's time, ms; LLONG_MIN when not in the set */
} hook_state;

static void hook_state_of(redisContext *c, const char *q, const char *batch, hook_state *h) {
  redisReply *r = itest_cmd(c, "HMGET sluice:{%s}:b:%s webhook_attempts webhook_error", q, batch);
  redisReply *z = itest_cmd(c, "ZSCORE sluice:{%s}:webhooks %s", q, batch);
  redisReply *t = itest_cmd(c, "TIME");

  h->attempts = r->element[0]->type == REDIS_REPLY_STRING ? strtoll(r->element[0]->str, NULL, 10) : 0;
  h->has_error = r->element[1]->type == REDIS_REPLY_STRING;
  snprintf(h->error, sizeof(h->error), "%s", h->has_error ? r->element[1]->str : "");
  h->due_in = z->type == REDIS_REPLY_STRING
                  ? strtoll(z->str, NULL, 10) -
                        (strtoll(t->element[0]->str, NULL, 10) * 1000 + strtoll(t->element[1]->str, NULL, 10) / 1000)
                  : LLONG_MIN;
  freeReplyObject(r);
  freeReplyObject(z);
  freeReplyObject(t);
}

/* Tries taken so far when the last one's outcome is recorded
 * (webhook_error set), else 0. */
static long long hook_recorded(redisContext *c, const char *q, const char *batch) {
  hook_state h;

  hook_state_of(c, q, batch, &h);
  return h.has_error ? h.attempts : 0;
}

/* A receiver that always fails: 10 tries, each put off 1, 2, 4 ... s (plus
 * up to 20%), then given up with webhook_error "gave up: HTTP 500: ...",
 * and never sent again. The waits are checked in the set of due webhooks,
 * then cut short (the score set to 0) so the test takes seconds, not the
 * 8.5 minutes of the real schedule. */
static void test_webhook_gave_up(void) {
  const char *q = itest_queue("hookdown");
  redisContext *c = itest_conn();
  char url[128];
  char batch[64];
  char want[160];
  char *lines = noop_lines(3);
  hook_state h;
  cJSON *hooks;
  int tries = 0;
  pid_t w;

  setenv("SLUICE_WEBHOOK_SECRET", HOOK_SECRET, 1);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook?fail=1000", server_port);
  w = worker(q, 4, 1, NULL, NULL);
  submit_with_webhook(q, lines, url, batch);
  free(lines);
  itest_wait_batch(c, q, batch, 30);
  for (int k = 1; k <= 10; k++) {
    ITEST_WAIT_INT(hook_recorded(c, q, batch), ==, k, 20000, "the outcome of the next try of the webhook");
    hook_state_of(c, q, batch, &h);
    if (k < 10) {
      long long base = 1000LL << (k - 1);

      CHECK_CONTAINS(h.error, "HTTP 500: receiver down on purpose");
      CHECK(strncmp(h.error, "gave up", 7) != 0);
      printf("    try %d failed: next in %lld ms (base %lld ms)\n", k, h.due_in, base);
      CHECK(h.due_in != LLONG_MIN);
      CHECK_INT(h.due_in, <=, base + base / 5);
      CHECK_INT(h.due_in, >=, base - 1500); /* less the time since it was recorded */
      /* due now: the next look (every second) takes it */
      freeReplyObject(itest_cmd(c, "HDEL sluice:{%s}:b:%s webhook_error", q, batch));
      freeReplyObject(itest_cmd(c, "ZADD sluice:{%s}:webhooks XX 0 %s", q, batch));
    }
  }
  printf("    try 10: %s\n", h.error);
  CHECK(strncmp(h.error, "gave up: HTTP 500: receiver down on purpose", 43) == 0);
  CHECK(h.due_in == LLONG_MIN); /* out of the set: no worker sends it again */
  CHECK_INT(itest_batch_num(c, q, batch, "webhook_at"), ==, -1);
  itest_stop_ok(w); /* nothing is in flight after it stopped */
  hooks = hooks_of(batch, &tries);
  CHECK_INT(tries, ==, 10);
  CHECK_INT(cJSON_GetArraySize(hooks), ==, 10);
  expected_id(q, batch, 1, want, sizeof(want));
  for (int i = 0; i < 10; i++) {
    const cJSON *hk = cJSON_GetArrayItem(hooks, i);

    CHECK_INT(jnum(hk, "attempt"), ==, i + 1);
    CHECK_INT(jnum(hk, "status"), ==, 500);
    CHECK_STR(hdr(hk, "webhook-id"), want);
  }
  cJSON_Delete(hooks);
  CHECK_INT(itest_batch_num(c, q, batch, "webhook_attempts"), ==, 10);
  redisFree(c);
}

/* A delivery replayed later than the 5-minute window is rejected: the same
 * captured POST verifies now, and not with the receiver's clock 6 minutes
 * ahead (nor 6 minutes behind). */
static void test_webhook_replay_rejected(void) {
  const char *q = itest_queue("hookreplay");
  redisContext *c = itest_conn();
  char batch[64];
  cJSON *h;

  need_verifier();
  h = capture_delivery(c, q, 3, batch);
  CHECK_VERIFIES(h);
  check_rejected(h, HOOK_SECRET, 360, NULL, NULL, "Message timestamp too old", __LINE__);
  check_rejected(h, HOOK_SECRET, -360, NULL, NULL, "Message timestamp too new", __LINE__);
  cJSON_Delete(h);
  redisFree(c);
}

/* A changed body, a changed webhook-id or another secret does not verify. */
static void test_webhook_tampered(void) {
  const char *q = itest_queue("hooktamper");
  redisContext *c = itest_conn();
  char batch[64];
  char *body;
  char *at;
  char id[200];
  cJSON *h;

  need_verifier();
  h = capture_delivery(c, q, 3, batch);
  CHECK_VERIFIES(h); /* the untouched copy does */
  body = strdup(jstr(h, "body"));
  CHECK(body != NULL);
  at = strstr(body, "\"succeeded\":3");
  CHECK(at != NULL);
  at[strlen("\"succeeded\":")] = '4';
  check_rejected(h, HOOK_SECRET, 0, body, NULL, "No matching signature found", __LINE__);
  free(body);
  snprintf(id, sizeof(id), "%s", hdr(h, "webhook-id"));
  at = strstr(id, "_1_");
  CHECK(at != NULL);
  at[1] = '2'; /* "the next end of the batch" */
  check_rejected(h, HOOK_SECRET, 0, NULL, id, "No matching signature found", __LINE__);
  check_rejected(h, OTHER_SECRET, 0, NULL, NULL, "No matching signature found", __LINE__);
  cJSON_Delete(h);
  redisFree(c);
}

/* A batch that ends again after `sluice retry` sends a new message: the
 * end count in its webhook-id goes up, and it gets tries of its own. */
static void test_webhook_new_end_new_id(void) {
  const char *q = itest_queue("hookagain");
  redisContext *c = itest_conn();
  char url[128];
  char lines[1024];
  char batch[64];
  char want[160];
  cJSON *hooks;
  long long t0;
  int tries = 0;
  pid_t w;

  need_verifier();
  setenv("SLUICE_WEBHOOK_SECRET", HOOK_SECRET, 1);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", server_port);
  snprintf(lines, sizeof(lines),
           "{\"type\":\"noop\",\"payload\":0}\n"
           "{\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:%d/status/400\"},\"max_attempts\":1}\n",
           server_port);
  w = worker(q, 4, 1, NULL, NULL);
  submit_with_webhook(q, lines, url, batch);
  itest_wait_batch(c, q, batch, 30);
  wait_webhook(c, q, batch, 15);
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, 1);
  {
    const char *args[] = {"retry", "--redis", itest_url(), "--queue", q, batch, NULL};
    char *err = NULL;
    int rc = itest_run(args, NULL, &err, 30);

    if (rc != 0)
      sl_test_fail(__FILE__, __LINE__, "sluice retry exited %d: %s", rc, err ? err : "");
    free(err);
  }
  t0 = itest_ms();
  while (itest_batch_num(c, q, batch, "webhook_end") < 2) { /* it ran again and ended anew */
    CHECK(itest_ms() - t0 < 20000);
    usleep(50000);
  }
  wait_webhook(c, q, batch, 15);
  hooks = hooks_of(batch, &tries);
  CHECK_INT(tries, ==, 2);
  check_signed_headers(cJSON_GetArrayItem(hooks, 0), q, batch, 1);
  check_signed_headers(cJSON_GetArrayItem(hooks, 1), q, batch, 2);
  expected_id(q, batch, 2, want, sizeof(want));
  printf("    first end: %s, second end: %s\n", hdr(cJSON_GetArrayItem(hooks, 0), "webhook-id"), want);
  CHECK_VERIFIES(cJSON_GetArrayItem(hooks, 1));
  CHECK_INT(itest_batch_num(c, q, batch, "webhook_attempts"), ==, 1); /* the new message's own first try */
  cJSON_Delete(hooks);
  itest_stop_ok(w);
  redisFree(c);
}

/* A worker given a SLUICE_WEBHOOK_SECRET that is not whsec_ + base64 of at
 * least 24 bytes does not start: exit 2, a message naming the variable and
 * never the secret. */
static void test_webhook_bad_secret(void) {
  const char *q = itest_queue("hookbad");
  const char *bad[] = {
      "hook-secret",                                          /* the old free-form kind */
      "whsec_aG9vay1zZWNyZXQ=",                               /* 11 bytes */
      "whsec_c2x1aWNlLXRlc3Qtd2ViaG9vay1rZXktMzItYnl0ZXM*",   /* not base64 */
      "",                                                     /* set but empty */
      NULL,
  };

  for (int i = 0; bad[i] != NULL; i++) {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, NULL};
    char *err = NULL;
    int rc;

    setenv("SLUICE_WEBHOOK_SECRET", bad[i], 1);
    rc = itest_run(args, NULL, &err, 20);
    CHECK(err != NULL);
    printf("    \"%s\": exit %d: %s", bad[i], rc, err);
    CHECK_INT(rc, ==, 2);
    CHECK_CONTAINS(err, "SLUICE_WEBHOOK_SECRET");
    CHECK_CONTAINS(err, "whsec_");
    if (strlen(bad[i]) > 6 && strstr(err, bad[i] + 6) != NULL)
      sl_test_fail(__FILE__, __LINE__, "the error quotes the secret: %s", err);
    free(err);
  }
}

/* Counts the occurrences of needle in hay. */
static int count_of(const char *hay, const char *needle) {
  int n = 0;

  for (const char *p = hay; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle))
    n++;
  return n;
}

/* Waits until a worker's log holds `what`; fails after timeout_s. Returns
 * the log (free it). */
static char *wait_log(const char *errlog, const char *what, int timeout_s) {
  long long t0 = itest_ms();

  for (;;) {
    char *log = itest_read(errlog, NULL);

    if (log != NULL && strstr(log, what) != NULL)
      return log;
    if (itest_ms() - t0 > timeout_s * 1000LL)
      sl_test_fail(__FILE__, __LINE__, "no \"%s\" in the worker's log within %d s: %s", what, timeout_s,
                   log ? log : "(no log)");
    free(log);
    usleep(50000);
  }
}

/* Without a secret a worker sends webhooks unsigned, and says so: once, when
 * it first takes one (or at its first look, when the queue already has
 * webhooks waiting), and on every send. The receiver gets no signature. */
#define UNSIGNED_ONCE "ask for completion webhooks, and SLUICE_WEBHOOK_SECRET is not set"
static void test_webhook_unsigned_warns(void) {
  const char *q = itest_queue("hookplain");
  redisContext *c = itest_conn();
  char url[128];
  char batch[64];
  char errlog[600];
  char errlog2[600];
  char line[200];
  char *lines = noop_lines(3);
  char *log;
  cJSON *hooks;
  const cJSON *h;
  int tries = 0;
  pid_t w;

  unsetenv("SLUICE_WEBHOOK_SECRET");
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", server_port);
  snprintf(errlog, sizeof(errlog), "%s", itest_path("worker-plain.err"));
  w = worker(q, 4, 0, NULL, errlog);
  submit_with_webhook(q, lines, url, batch);
  free(lines);
  itest_wait_batch(c, q, batch, 30);
  wait_webhook(c, q, batch, 15);
  snprintf(line, sizeof(line), "webhook of batch %s sent unsigned: SLUICE_WEBHOOK_SECRET is not set", batch);
  log = wait_log(errlog, line, 10);
  CHECK_INT(count_of(log, UNSIGNED_ONCE), ==, 1);
  printf("    %.*s\n", (int)strcspn(strstr(log, "warn"), "\n"), strstr(log, "warn"));
  free(log);
  hooks = hooks_of(batch, &tries);
  CHECK_INT(tries, ==, 1);
  h = cJSON_GetArrayItem(hooks, 0);
  CHECK(hdr(h, "webhook-signature") == NULL);
  CHECK(hdr(h, "webhook-id") != NULL);
  CHECK(hdr(h, "webhook-timestamp") != NULL);
  CHECK_STR(hdr(h, "content-type"), "application/json");
  cJSON_Delete(hooks);
  itest_stop_ok(w);

  /* A worker that starts while the queue has a webhook waiting (not due:
   * it takes none) warns at its first look. */
  freeReplyObject(itest_cmd(c, "ZADD sluice:{%s}:webhooks %lld 01WAITING00000000000000000", q,
                            (long long)time(NULL) * 1000 + 3600000));
  snprintf(errlog2, sizeof(errlog2), "%s", itest_path("worker-plain2.err"));
  w = worker(q, 4, 0, NULL, errlog2);
  log = wait_log(errlog2, UNSIGNED_ONCE, 10);
  CHECK_INT(count_of(log, "sent unsigned"), ==, 0);
  free(log);
  itest_stop_ok(w);
  redisFree(c);
}

/* A webhook URL is held to the worker's --http-allow like any item: a
 * producer cannot make the worker call a host it did not allow. */
static void test_webhook_allow_list(void) {
  const char *q = itest_queue("hookallow");
  redisContext *c = itest_conn();
  const char *allow[] = {"--http-allow", "api.example.com", NULL};
  char url[128];
  char batch[64];
  char *lines = noop_lines(3);
  pid_t w;
  long long t0;
  int tries = 0;
  cJSON *hooks;

  setenv("SLUICE_WEBHOOK_SECRET", HOOK_SECRET, 1);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", server_port);
  w = worker(q, 10, 1, allow, NULL);
  submit_with_webhook(q, lines, url, batch);
  free(lines);
  itest_wait_batch(c, q, batch, 30);
  t0 = itest_ms();
  for (;;) {
    redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s webhook_error", q, batch);
    int got = r->type == REDIS_REPLY_STRING;

    if (got)
      CHECK_CONTAINS(r->str, "not allowed");
    freeReplyObject(r);
    if (got)
      break;
    CHECK(itest_ms() - t0 < 10000);
    usleep(100000);
  }
  hooks = hooks_of(batch, &tries);
  CHECK_INT(tries, ==, 0); /* the receiver never heard of it */
  cJSON_Delete(hooks);
  itest_stop_ok(w);
  redisFree(c);
}

/* ---- File descriptors ---- */

/* Waits up to timeout_s for pid to exit; returns its wait status (fails the
 * test past the deadline). */
static int wait_exit(pid_t pid, int timeout_s) {
  long long t0 = itest_ms();
  int status = 0;

  while (waitpid(pid, &status, WNOHANG) != pid) {
    if (itest_ms() - t0 > timeout_s * 1000LL) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      sl_test_fail(__FILE__, __LINE__, "process %d did not exit within %d s", (int)pid, timeout_s);
    }
    usleep(10000);
  }
  return status;
}

/* A limit that cannot carry the concurrency, even raised to the hard limit:
 * the worker refuses to start, exit 2, with the figures; the most it could
 * run starts. */
static void test_fd_budget_refused(void) {
  const char *q = itest_queue("fdrefused");
  char errlog[600];
  char *log;
  int status;

  snprintf(errlog, sizeof(errlog), "%s", itest_path("worker-fd.err"));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "400", NULL};

    status = wait_exit(itest_spawn_nofile(args, 256, 256, NULL, errlog), 20);
  }
  CHECK(WIFEXITED(status));
  CHECK_INT(WEXITSTATUS(status), ==, 2);
  log = itest_read(errlog, NULL);
  CHECK_CONTAINS(log, "--concurrency 400 needs about 1264 file descriptors; the limit is 256 (ulimit -n)");
  CHECK_CONTAINS(log, "run at most --concurrency 64");
  free(log);
  {
    /* 64 slots fit 256 exactly: the worker runs, and stops cleanly. */
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "64", NULL};
    pid_t w = itest_spawn_nofile(args, 256, 256, NULL, errlog);

    free(wait_log(errlog, "serving queue", 10));
    status = itest_stop(w);
  }
  CHECK(WIFEXITED(status));
  CHECK_INT(WEXITSTATUS(status), ==, 0);
}

/* A soft limit of 256 under a hard limit that is just what 400 slots need
 * (3 a slot + 64): the worker raises its soft limit and 400 http items held
 * 1 s at once all succeed. (With the soft limit left at 256, 158 of them
 * failed with "Couldn't connect to server ... after 0 ms".) */
static void test_fd_limit_raised(void) {
  const char *q = itest_queue("fdtight");
  redisContext *c = itest_conn();
  const int n = 400;
  size_t cap = (size_t)n * 120;
  char *lines = malloc(cap);
  size_t len = 0;
  char batch[64];
  char errlog[600];
  char *log;
  cJSON *st;
  pid_t w;

  CHECK(lines != NULL);
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(lines + len, cap - len,
                            "{\"type\":\"http\",\"payload\":{\"url\":\"http://127.0.0.1:%d/hold?ms=1000\"}}\n",
                            server_port);
  snprintf(errlog, sizeof(errlog), "%s", itest_path("worker-fdtight.err"));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "400", "--block-ms", "200",
                          NULL};

    w = itest_spawn_nofile(args, 256, 64 + 3 * 400, NULL, errlog);
  }
  log = wait_log(errlog, "raised the file descriptor limit (ulimit -n) from 256 to 1264; --concurrency 400 needs "
                         "about 1264", 10);
  free(log);
  free(server_get("/stats?reset_peak=1"));
  submit(q, lines, batch);
  wait_batch(c, q, batch, 60, w, errlog);
  st = server_stats();
  printf("    400 slots under a hard limit of 1264 descriptors: %lld succeeded, %lld failed; server peak in flight "
         "%lld\n",
         itest_batch_num(c, q, batch, "succeeded"), itest_batch_num(c, q, batch, "failed"),
         stats_num(st, "peak_in_flight"));
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, n);
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, 0);
  CHECK_INT(stats_num(st, "peak_in_flight"), >=, 300); /* they really were held at once */
  cJSON_Delete(st);
  log = itest_read(errlog, NULL);
  CHECK(strstr(log, "Couldn't connect") == NULL);
  CHECK(strstr(log, "out of file descriptors") == NULL);
  free(log);
  CHECK_INT(WEXITSTATUS(itest_stop(w)), ==, 0);
  free(lines);
  redisFree(c);
}

/* An http item whose socket cannot be opened because the worker is out of
 * descriptors (a hog item took them all) is given back, not failed with
 * "Couldn't connect": the log says "out of file descriptors (EMFILE)", and
 * once the descriptors are free the item runs again and succeeds as
 * attempt 1 (max_attempts 1: a counted attempt would have failed it). */
static void test_give_back_out_of_fds(void) {
  char lines[512];
  char *log;
  cJSON *line;

  hog_worker("givefd");
  snprintf(lines, sizeof(lines), "{\"type\":\"hog\",\"payload\":null}\n");
  item(lines + strlen(lines), sizeof(lines) - strlen(lines), "/ok", NULL, NULL);
  submit(hog_q, lines, hog_batch);
  log = hog_run(itest_path("worker-hog.err"));
  CHECK_CONTAINS(log, "given back, no attempt counted: http: out of file descriptors (EMFILE) opening a connection "
                      "(curl: Couldn't connect to server)");
  free(log);
  line = result_line(hog_c, hog_q, hog_batch, 1);
  CHECK_ITEM_STATUS(line, "succeeded");
  CHECK_INT(jnum(line, "attempts"), ==, 1);
  CHECK_INT(jnum(jget(line, "result"), "status"), ==, 200);
  cJSON_Delete(line);
  hog_done();
}

static const sl_test tests[] = {
    {"webhook_allow_list", test_webhook_allow_list, 60},
    {"webhook_once_signed", test_webhook_once_signed, 60},
    {"webhook_retried", test_webhook_retried, 60},
    {"webhook_gave_up", test_webhook_gave_up, 90},
    {"webhook_replay_rejected", test_webhook_replay_rejected, 60},
    {"webhook_tampered", test_webhook_tampered, 60},
    {"webhook_new_end_new_id", test_webhook_new_end_new_id, 60},
    {"webhook_bad_secret", test_webhook_bad_secret, 60},
    {"webhook_unsigned_warns", test_webhook_unsigned_warns, 60},
    {"metrics_paths", test_metrics_paths, 60},
    {"webhook_failed_items", test_webhook_failed_items, 60},
    {"get_ok", test_get_ok, 30},
    {"methods_and_bodies", test_methods_and_bodies, 30},
    {"status_errors", test_status_errors, 30},
    {"retry_after", test_retry_after, 30},
    {"retry_after_date", test_retry_after_date, 30},
    {"redirect_not_followed", test_redirect_not_followed, 30},
    {"idempotency_key", test_idempotency_key, 30},
    {"timeout", test_timeout, 30},
    {"connection_refused", test_connection_refused, 30},
    {"allow_list", test_allow_list, 30},
    {"big_body_default", test_big_body_default, 30},
    {"max_body_option", test_max_body_option, 30},
    {"secrets", test_secrets, 30},
    {"throughput", test_throughput, 60},
    {"no_waves", test_no_waves, 120},
    {"fd_budget_refused", test_fd_budget_refused, 60},
    {"fd_limit_raised", test_fd_limit_raised, 90},
    {"give_back_out_of_fds", test_give_back_out_of_fds, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  int rc;

  main_pid = getpid();
  itest_use_redis();
  redis_teardown = sl_test_teardown;
  sl_test_teardown = teardown;
  server_start();
  rc = sl_test_main(argc, argv, tests);
  server_stop();
  return rc;
}
