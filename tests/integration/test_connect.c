/*
 * Connections: URLs over TCP and unix sockets, AUTH with a password and with
 * an ACL user, clear messages (never a hang or a crash) when Redis refuses
 * or cannot be reached, and a worker that rides out a Redis outage.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devredis.h"
#include "itest.h"

/* A free TCP port on 127.0.0.1 (a guess checked by the server's start). */
static int pick_port(void) {
  return 20000 + (int)(getpid() % 20000);
}

static void submit_and_run(const char *url, const char *q) {
  const char *path = itest_path("auth.jsonl");
  const char *data = "{\"type\":\"noop\",\"payload\":1}\n{\"type\":\"noop\",\"payload\":2}\n";
  const char *sub[] = {"submit", "--wait", "--redis", url, "--queue", q, path, NULL};
  const char *wk[] = {"worker", "--redis", url, "--queue", q, "--quiet", NULL};
  char *out = NULL;
  char *err = NULL;
  pid_t w;

  itest_write(path, data, strlen(data));
  w = itest_spawn(wk, NULL, NULL);
  CHECK_INT(itest_run(sub, &out, &err, 60), ==, 0);
  CHECK_INT(strlen(out), ==, 27);
  CHECK_CONTAINS(err, "2/2");
  free(out);
  free(err);
  CHECK_INT(WEXITSTATUS(itest_stop(w)), ==, 0);
}

/* The harness's Redis over unix://, and a second one over redis://host:port/db. */
static void test_unix_and_tcp(void) {
  sl_devredis tcp;
  char port[16];
  char url[128];
  char err[512];
  const char *extra[] = {"--port", port, "--bind", "127.0.0.1", NULL};
  redisContext *c;
  redisReply *r;

  submit_and_run(itest_url(), itest_queue("unix"));
  /* A guessed port may be taken: try a few. */
  for (int attempt = 0;; attempt++) {
    snprintf(port, sizeof(port), "%d", pick_port() + attempt * 97);
    if (sl_devredis_start(&tcp, extra, err, sizeof(err)) == 0)
      break;
    if (attempt == 9 || strstr(err, "Failed listening") == NULL)
      sl_test_fail(__FILE__, __LINE__, "%s", err);
  }
  snprintf(url, sizeof(url), "redis://127.0.0.1:%s/3", port);
  itest_load_library(url);
  submit_and_run(url, "tcpq");
  /* db 3 was used, not db 0 */
  c = redisConnectUnix(tcp.sock);
  r = redisCommand(c, "SELECT 3");
  freeReplyObject(r);
  r = redisCommand(c, "EXISTS sluice:{tcpq}:batches");
  CHECK_INT(r->integer, ==, 1);
  freeReplyObject(r);
  redisFree(c);
  sl_devredis_stop(&tcp);
}

static void test_auth_password_and_acl_user(void) {
  sl_devredis d;
  char err[512];
  char url[512];
  const char *extra[] = {"--requirepass", "s3cret", NULL};
  redisContext *c;
  redisReply *r;
  char *serr = NULL;

  if (sl_devredis_start(&d, extra, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  c = redisConnectUnix(d.sock);
  r = redisCommand(c, "AUTH s3cret");
  freeReplyObject(r);
  r = redisCommand(c, "ACL SETUSER alice on >wonder/land ~* &* +@all");
  CHECK(r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  redisFree(c);

  snprintf(url, sizeof(url), "unix://:s3cret@%s", d.sock);
  itest_load_library(url);
  submit_and_run(url, "pw");
  /* An ACL user; '/' in the password is escaped. */
  snprintf(url, sizeof(url), "unix://alice:wonder%%2Fland@%s", d.sock);
  submit_and_run(url, "acl");

  /* A wrong password: a clear message, and the password is not printed. */
  snprintf(url, sizeof(url), "unix://alice:letmein@%s", d.sock);
  {
    const char *args[] = {"batches", "--redis", url, NULL};

    CHECK_INT(itest_run(args, NULL, &serr, 30), ==, 1);
    CHECK_CONTAINS(serr, "refused the credentials");
    CHECK_CONTAINS(serr, "WRONGPASS");
    CHECK(strstr(serr, "letmein") == NULL);
    free(serr);
  }
  /* No password at all. */
  snprintf(url, sizeof(url), "unix://%s", d.sock);
  {
    const char *args[] = {"batches", "--redis", url, NULL};

    CHECK_INT(itest_run(args, NULL, &serr, 30), ==, 1);
    CHECK_CONTAINS(serr, "NOAUTH");
    CHECK_CONTAINS(serr, "give the password in the URL");
    free(serr);
  }
  {
    const char *args[] = {"worker", "--redis", url, NULL};

    CHECK_INT(itest_run(args, NULL, &serr, 30), ==, 1);
    CHECK_CONTAINS(serr, "NOAUTH");
    free(serr);
  }
  sl_devredis_stop(&d);
}

/* Refused and unreachable: a clear message within seconds, exit 1. */
static void test_refused_and_unreachable(void) {
  char *err = NULL;
  long long t0 = itest_ms();

  {
    const char *args[] = {"status", "--redis", "redis://127.0.0.1:1", "01ABC", NULL};

    CHECK_INT(itest_run(args, NULL, &err, 20), ==, 1);
    CHECK_CONTAINS(err, "cannot connect to Redis at redis://127.0.0.1:1/0: Connection refused");
    free(err);
  }
  {
    const char *args[] = {"worker", "--redis", "redis://127.0.0.1:1", NULL};

    CHECK_INT(itest_run(args, NULL, &err, 20), ==, 1);
    CHECK_CONTAINS(err, "cannot connect to Redis at redis://127.0.0.1:1/0");
    free(err);
  }
  {
    const char *args[] = {"submit", "--redis", "unix:///nonexistent/redis.sock", "-", NULL};

    /* stdin is /dev/null: no items, refused before connecting */
    CHECK_INT(itest_run(args, NULL, &err, 20), ==, 2);
    free(err);
  }
  {
    const char *args[] = {"batches", "--redis", "unix:///nonexistent/redis.sock", NULL};

    CHECK_INT(itest_run(args, NULL, &err, 20), ==, 1);
    CHECK_CONTAINS(err, "cannot connect to Redis at unix:///nonexistent/redis.sock: No such file or directory");
    free(err);
  }
  CHECK(itest_ms() - t0 < 15000);
}

/* No URL anywhere, or a malformed one: usage errors that say what to do. */
static void test_no_or_bad_url(void) {
  char *err = NULL;

  {
    const char *args[] = {"status", "01ABC", NULL};

    CHECK_INT(itest_run(args, NULL, &err, 20), ==, 2);
    CHECK_CONTAINS(err, "no Redis configured: pass --redis URL or set SLUICE_REDIS");
    CHECK_CONTAINS(err, "sluice demo");
    free(err);
  }
  {
    const char *args[] = {"batches", "--redis", "http://:pw@host", NULL};

    CHECK_INT(itest_run(args, NULL, &err, 20), ==, 2);
    CHECK_CONTAINS(err, "must start with redis:// or unix://");
    CHECK(strstr(err, ":pw@") == NULL);
    free(err);
  }
  {
    const char *args[] = {"worker", "--redis", "redis://host:99999", NULL};

    CHECK_INT(itest_run(args, NULL, &err, 20), ==, 2);
    CHECK_CONTAINS(err, "bad port \"99999\"");
    free(err);
  }
}

/* Redis killed under a running worker: the worker says so once, keeps
 * running, reconnects when Redis is back, and still stops cleanly. */
static void test_redis_killed_under_worker(void) {
  sl_devredis d;
  char err[512];
  const char *errpath = itest_path("worker.err");
  char *log;
  pid_t w;
  int status = 0;
  long long t0;

  if (sl_devredis_start(&d, NULL, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url);
  {
    const char *args[] = {"worker", "--redis", d.url, "--queue", "gone", "--block-ms", "200", NULL};

    w = itest_spawn(args, NULL, errpath);
  }
  usleep(500000);
  sl_devredis_kill(&d, SIGKILL);
  usleep(2000000);
  CHECK(waitpid(w, &status, WNOHANG) == 0); /* still running */
  log = itest_read(errpath, NULL);
  CHECK_CONTAINS(log, "lost the connection to Redis at unix://");
  CHECK_CONTAINS(log, "reconnecting");
  /* Logged once per outage, not once per attempt. */
  CHECK(strstr(strstr(log, "lost the connection"), "lost the connection") == strstr(log, "lost the connection"));
  CHECK(strstr(strstr(log, "lost the connection") + 1, "lost the connection") == NULL);
  free(log);
  if (sl_devredis_restart(&d, NULL, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url); /* no persistence: the operator loads it again */
  t0 = itest_ms();
  for (;;) {
    log = itest_read(errpath, NULL);
    if (log != NULL && strstr(log, "reconnected to Redis after") != NULL)
      break;
    free(log);
    CHECK(itest_ms() - t0 < 15000);
    usleep(50000);
  }
  free(log);
  CHECK_INT(WEXITSTATUS(itest_stop(w)), ==, 0);
  sl_devredis_stop(&d);
}

/* ---- A silent partition ---- */

/* The proxy script: tcp_proxy.py next to this source file. */
static void proxy_script(char *buf, size_t len) {
  const char *slash = strrchr(__FILE__, '/');

  if (slash != NULL)
    snprintf(buf, len, "%.*s/tcp_proxy.py", (int)(slash - __FILE__), __FILE__);
  else
    snprintf(buf, len, "tcp_proxy.py");
}

/* Starts tcp_proxy.py forwarding 127.0.0.1:*port to the test Redis's unix
 * socket; waits up to 10 s for its port. */
static pid_t proxy_start(int *port) {
  char script[600];
  char portfile[700];
  long long t0 = itest_ms();
  pid_t pid;

  proxy_script(script, sizeof(script));
  snprintf(portfile, sizeof(portfile), "%s", itest_path("proxy.port"));
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* dies with the test, even a stopped one */
    execl("/usr/bin/python3", "python3", script, portfile, itest_sock(), (char *)NULL);
    _exit(127);
  }
  for (;;) {
    char *s = itest_read(portfile, NULL);
    int status;

    *port = s != NULL ? (int)strtol(s, NULL, 10) : 0;
    free(s);
    if (*port > 0)
      return pid;
    if (waitpid(pid, &status, WNOHANG) == pid)
      sl_test_fail(__FILE__, __LINE__, "the proxy (%s) exited with status 0x%x", script, status);
    if (itest_ms() - t0 > 10000)
      sl_test_fail(__FILE__, __LINE__, "the proxy (%s) wrote no port within 10 s", script);
    usleep(20000);
  }
}

/* Submits n noop items to q straight to Redis (not through the proxy);
 * the batch id goes to batch (64 bytes). */
static void submit_noops(const char *q, int n, char *batch) {
  const char *path = itest_path("noops.jsonl");
  char *lines = malloc((size_t)n * 40 + 1);
  size_t len = 0;
  char *out = NULL;
  char *err = NULL;

  CHECK(lines != NULL);
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(lines + len, (size_t)n * 40 + 1 - len, "{\"type\":\"noop\",\"payload\":%d}\n", i);
  itest_write(path, lines, len);
  free(lines);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

    if (itest_run(args, &out, &err, 30) != 0)
      sl_test_fail(__FILE__, __LINE__, "submit failed: %s", err ? err : "");
  }
  snprintf(batch, 64, "%.26s", out);
  free(out);
  free(err);
}

/* Waits until the log at path holds `what` (after `from` bytes); returns
 * the ms waited. Fails after timeout_ms, or if the worker exited. */
static long long wait_log_line(const char *path, size_t from, const char *what, long long timeout_ms, pid_t w) {
  long long t0 = itest_ms();

  for (;;) {
    size_t len = 0;
    char *log = itest_read(path, &len);
    int status;

    if (log != NULL && len > from && strstr(log + from, what) != NULL) {
      free(log);
      return itest_ms() - t0;
    }
    if (waitpid(w, &status, WNOHANG) == w)
      sl_test_fail(__FILE__, __LINE__, "the worker exited (status 0x%x) before logging \"%s\": %s", status, what,
                   log ? log : "");
    if (itest_ms() - t0 > timeout_ms)
      sl_test_fail(__FILE__, __LINE__, "no \"%s\" in the worker's log within %lld ms: %s", what, timeout_ms,
                   log ? log : "");
    free(log);
    usleep(20000);
  }
}

static int count_of(const char *hay, const char *needle) {
  int n = 0;

  for (const char *p = hay; p != NULL && (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

/* A worker reaches Redis through a TCP proxy that is then stopped
 * (SIGSTOP): a silent partition, connections open and nothing moving. The
 * worker notices within its watchdog time (a heartbeat unanswered for two
 * beat intervals: 2 s with --visibility 3000), says so once, takes nothing
 * meanwhile, and once the proxy resumes reconnects and runs a batch
 * submitted during the partition, with exact counters. Stopped during a
 * second partition, it still exits. */
static void test_silent_partition(void) {
  const char *q = itest_queue("partition");
  const char *errpath = itest_path("worker-partition.err");
  redisContext *c = itest_conn();
  char url[64];
  char a[64];
  char b[64];
  char *log;
  size_t mark = 0;
  long long waited;
  int port = 0;
  pid_t proxy = proxy_start(&port);
  pid_t w;
  int status = 0;

  snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
  {
    const char *args[] = {"worker", "--redis", url, "--queue", q, "--visibility", "3000", "--block-ms", "500",
                          "--drain-timeout", "1000", NULL};

    w = itest_spawn(args, NULL, errpath);
  }
  submit_noops(q, 20, a);
  itest_wait_batch(c, q, a, 20);
  CHECK_INT(itest_batch_num(c, q, a, "succeeded"), ==, 20);

  /* The black hole. */
  CHECK(kill(proxy, SIGSTOP) == 0);
  waited = wait_log_line(errpath, 0, "no reply from Redis for ", 6000, w);
  printf("    the worker noticed the silent partition after %lld ms (watchdog: 2,000 ms)\n", waited);
  log = itest_read(errpath, &mark);
  CHECK_CONTAINS(log, "lost the connection to Redis at redis://127.0.0.1:");
  CHECK_CONTAINS(log, "no reply from Redis for ");
  CHECK_CONTAINS(log, " ms; reconnecting");
  free(log);
  submit_noops(q, 30, b);
  /* Longer than the watchdog's time for a connection setup: reconnects
   * into the black hole are given up and tried again meanwhile. */
  usleep(3000000);
  CHECK(waitpid(w, &status, WNOHANG) == 0); /* still running */
  CHECK_INT(itest_batch_num(c, q, b, "done"), ==, 0); /* nothing taken through the black hole */

  CHECK(kill(proxy, SIGCONT) == 0);
  waited = wait_log_line(errpath, 0, "reconnected to Redis after", 15000, w);
  printf("    reconnected %lld ms after the proxy resumed\n", waited);
  itest_wait_batch(c, q, b, 30);
  CHECK_INT(itest_batch_num(c, q, b, "total"), ==, 30);
  CHECK_INT(itest_batch_num(c, q, b, "succeeded"), ==, 30);
  CHECK_INT(itest_batch_num(c, q, b, "failed"), ==, 0);
  CHECK_INT(itest_batch_num(c, q, b, "done"), ==, 30);
  CHECK_INT(itest_batch_num(c, q, a, "succeeded"), ==, 20);
  CHECK_INT(itest_batch_num(c, q, a, "done"), ==, 20);
  log = itest_read(errpath, NULL);
  CHECK_INT(count_of(log, "lost the connection"), ==, 1); /* logged once for the outage */
  free(log);

  /* Stopped during a second partition: the worker still exits. */
  CHECK(kill(proxy, SIGSTOP) == 0);
  {
    long long t0 = itest_ms();

    kill(w, SIGTERM);
    while (waitpid(w, &status, WNOHANG) != w) {
      if (itest_ms() - t0 > 20000) {
        kill(w, SIGKILL);
        waitpid(w, &status, 0);
        sl_test_fail(__FILE__, __LINE__, "the worker did not exit within 20 s of SIGTERM during a partition");
      }
      usleep(20000);
    }
    printf("    stopped during a partition: exited %lld ms after SIGTERM\n", itest_ms() - t0);
  }
  CHECK(WIFEXITED(status));
  CHECK_INT(WEXITSTATUS(status), ==, 0);
  kill(proxy, SIGKILL);
  waitpid(proxy, NULL, 0);
  redisFree(c);
}

static const sl_test tests[] = {
    {"unix_and_tcp", test_unix_and_tcp, 60},
    {"auth_password_and_acl_user", test_auth_password_and_acl_user, 60},
    {"refused_and_unreachable", test_refused_and_unreachable, 60},
    {"no_or_bad_url", test_no_or_bad_url, 30},
    {"redis_killed_under_worker", test_redis_killed_under_worker, 30},
    {"silent_partition", test_silent_partition, 90},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
