/*
 * Connections: URLs over TCP and unix sockets, AUTH with a password and with
 * an ACL user, clear messages (never a hang or a crash) when Redis refuses
 * or cannot be reached, a worker that rides out a Redis outage, and one
 * that waits out a Redis answering OOM (full), BUSY (a long script) and
 * LOADING (reloading its data) in the middle of a batch.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
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
  itest_stop_ok(w);
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
    CHECK_CONTAINS(err, "must start with redis://, redis+cluster:// or unix://");
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

/* A unix socket listening at path (whatever was there is removed), non
 * blocking; returns its descriptor. */
static int listen_unix(const char *path) {
  struct sockaddr_un a;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  CHECK(fd >= 0);
  memset(&a, 0, sizeof(a));
  a.sun_family = AF_UNIX;
  CHECK(strlen(path) < sizeof(a.sun_path));
  memcpy(a.sun_path, path, strlen(path) + 1);
  unlink(path);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 64) != 0)
    sl_test_fail(__FILE__, __LINE__, "cannot listen on %s: %s", path, strerror(errno));
  return fd;
}

/* Accepts and at once closes every connection waiting on fd; returns how
 * many there were. */
static int refuse_waiting(int fd) {
  int n = 0;

  for (;;) {
    int c = accept(fd, NULL, NULL);

    if (c < 0)
      return n;
    close(c);
    n++;
  }
}

/* Redis killed under a running worker: the worker says so once, keeps
 * running through several reconnect attempts (counted by a socket that
 * takes Redis's place and hangs up on each), reconnects when Redis is back,
 * and still stops cleanly. */
static void test_redis_killed_under_worker(void) {
  sl_devredis d;
  char err[512];
  const char *errpath = itest_path("worker.err");
  char *log;
  pid_t w;
  int status = 0;
  int lfd;
  int attempts = 0;
  long long t0;

  if (sl_devredis_start(&d, NULL, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url);
  {
    const char *args[] = {"worker", "--redis", d.url, "--queue", "gone", "--block-ms", "200", NULL};
    redisContext *c = redisConnectUnix(d.sock);

    CHECK(c != NULL && c->err == 0);
    w = itest_spawn(args, NULL, errpath);
    itest_wait_worker(c, "gone", w, NULL, 0, 10000); /* connected */
    redisFree(c);
  }
  sl_devredis_kill(&d, SIGKILL);
  free(itest_wait_file(errpath, "reconnecting", 10000));
  /* Its reconnect attempts (two connections each) reach this socket. */
  lfd = listen_unix(d.sock);
  t0 = itest_ms();
  while (attempts < 6) {
    attempts += refuse_waiting(lfd);
    if (itest_ms() - t0 > 15000)
      sl_test_fail(__FILE__, __LINE__, "the worker connected %d times within 15 s, not 6", attempts);
    CHECK(waitpid(w, &status, WNOHANG) == 0); /* still running */
    usleep(10000);
  }
  close(lfd);
  unlink(d.sock);
  log = itest_read(errpath, NULL);
  CHECK_CONTAINS(log, "lost the connection to Redis at unix://");
  CHECK_CONTAINS(log, "reconnecting");
  /* Logged once per outage, not once per attempt. */
  CHECK_INT(itest_count(log, "lost the connection"), ==, 1);
  free(log);
  if (sl_devredis_restart(&d, NULL, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url); /* no persistence: the operator loads it again */
  free(itest_wait_file(errpath, "reconnected to Redis after", 15000));
  itest_stop_ok(w);
  log = itest_read(errpath, NULL);
  CHECK_INT(itest_count(log, "lost the connection"), ==, 1);
  free(log);
  sl_devredis_stop(&d);
}

/* ---- Redis answering OOM, BUSY and LOADING ---- */

/* A private Redis with a batch of 600 sleep items (30 ms) under way on a
 * worker with 10 slots that logs to its own file. */
typedef struct run {
  sl_devredis d;     /* the Redis */
  redisContext *c;   /* the test's connection to it */
  pid_t w;           /* the worker */
  char batch[64];    /* the batch id */
  char log[600];     /* the worker's stderr */
} run;

#define RUN_ITEMS 600

static void run_start(run *x, const char *const *extra, const char *q) {
  char err[512];
  char path[600];
  size_t cap = RUN_ITEMS * 64;
  char *buf = malloc(cap);
  size_t len = 0;
  char *out = NULL;

  CHECK(buf != NULL);
  if (sl_devredis_start(&x->d, extra, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(x->d.url);
  x->c = redisConnectUnix(x->d.sock);
  CHECK(x->c != NULL && x->c->err == 0);
  for (int i = 0; i < RUN_ITEMS; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":30}}\n");
  snprintf(path, sizeof(path), "%s", itest_path("run.jsonl"));
  itest_write(path, buf, len);
  free(buf);
  {
    const char *args[] = {"submit", "--redis", x->d.url, "--queue", q, path, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 60), ==, 0);
    snprintf(x->batch, sizeof(x->batch), "%.26s", out);
    free(out);
  }
  snprintf(x->log, sizeof(x->log), "%s", itest_path("run-worker.err"));
  {
    const char *args[] = {"worker", "--redis", x->d.url, "--queue", q, "--concurrency", "10", "--block-ms", "200",
                          NULL};

    x->w = itest_spawn(args, NULL, x->log);
  }
  ITEST_WAIT_INT(itest_batch_num(x->c, q, x->batch, "done"), >=, 50, 30000, "50 items done before the fault");
}

/* The batch ends with every item succeeded once, nothing left pending; the
 * worker stops cleanly. */
static void run_finish(run *x, const char *q) {
  redisReply *r;
  long long t0 = itest_ms();
  int status;

  /* a worker that gave up (exited) fails at once */
  while (itest_batch_num(x->c, q, x->batch, "done") < RUN_ITEMS) {
    if (waitpid(x->w, &status, WNOHANG) == x->w) {
      char *log = itest_read(x->log, NULL);

      sl_test_fail(__FILE__, __LINE__, "the worker exited (status 0x%x) before the batch ended: %s", status,
                   log ? log : "(no log)");
    }
    if (itest_ms() - t0 > 60000)
      sl_test_fail(__FILE__, __LINE__, "the batch did not end within 60 s (done %lld)",
                   itest_batch_num(x->c, q, x->batch, "done"));
    usleep(20000);
  }
  itest_wait_batch(x->c, q, x->batch, 10);
  itest_stop_ok(x->w);
  CHECK_INT(itest_batch_num(x->c, q, x->batch, "succeeded"), ==, RUN_ITEMS);
  CHECK_INT(itest_batch_num(x->c, q, x->batch, "failed"), ==, 0);
  CHECK_INT(itest_batch_num(x->c, q, x->batch, "done"), ==, RUN_ITEMS);
  r = itest_cmd(x->c, "HLEN sluice:{%s}:b:%s:r", q, x->batch);
  CHECK_INT(r->integer, ==, RUN_ITEMS);
  freeReplyObject(r);
  CHECK_INT(itest_pending(x->c, q), ==, 0);
  redisFree(x->c);
  sl_devredis_stop(&x->d);
}

/* A full Redis (maxmemory below what it uses, noeviction) refuses the
 * worker's writes with OOM: the worker waits and tries again, and carries
 * on once there is room. */
static void test_waits_out_oom(void) {
  const char *q = "oom";
  run x;
  redisReply *r;
  char *log;

  run_start(&x, NULL, q);
  r = itest_cmd(x.c, "CONFIG SET maxmemory 1");
  CHECK(r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  log = itest_wait_file(x.log, "Redis answered OOM", 10000);
  printf("    %.*s\n", (int)strcspn(strstr(log, "Redis answered OOM"), "\n"), strstr(log, "Redis answered OOM"));
  free(log);
  CHECK_INT(itest_batch_num(x.c, q, x.batch, "done"), <, RUN_ITEMS);
  r = itest_cmd(x.c, "CONFIG SET maxmemory 0");
  freeReplyObject(r);
  run_finish(&x, q);
}

/* A script that runs past busy-reply-threshold makes Redis answer BUSY to
 * everyone else until it is killed: the worker waits it out. */
static void test_waits_out_busy(void) {
  const char *q = "busy";
  run x;
  redisContext *sc;
  redisReply *r;
  int sent = 0;
  char *log;

  run_start(&x, NULL, q);
  r = itest_cmd(x.c, "CONFIG SET busy-reply-threshold 100");
  CHECK(r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  sc = redisConnectUnix(x.d.sock);
  CHECK(sc != NULL && sc->err == 0);
  /* sent, not waited for: it never ends by itself */
  redisAppendCommand(sc, "EVAL %s 0", "while true do end");
  while (!sent)
    CHECK(redisBufferWrite(sc, &sent) == REDIS_OK);
  log = itest_wait_file(x.log, "Redis answered BUSY", 10000);
  printf("    %.*s\n", (int)strcspn(strstr(log, "Redis answered BUSY"), "\n"), strstr(log, "Redis answered BUSY"));
  free(log);
  r = itest_cmd(x.c, "SCRIPT KILL");
  CHECK(r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  CHECK(redisGetReply(sc, (void **)&r) == REDIS_OK);
  CHECK(r->type == REDIS_REPLY_ERROR); /* "... Script killed by user with SCRIPT KILL" */
  freeReplyObject(r);
  redisFree(sc);
  run_finish(&x, q);
}

/* Redis loading its data (DEBUG RELOAD, slowed down per key with the
 * key-load-delay setting, answering other clients meanwhile) answers
 * LOADING: the worker waits until it is done. */
static void test_waits_out_loading(void) {
  const char *q = "loading";
  const char *extra[] = {"--enable-debug-command", "yes", "--loading-process-events-interval-bytes", "1024", NULL};
  run x;
  redisContext *sc;
  redisReply *r;
  int sent = 0;
  char *log;

  run_start(&x, extra, q);
  /* 10,000 keys of filler, each loaded with a 100 us delay */
  r = itest_cmd(x.c, "EVAL %s 0", "for i = 1, 10000 do redis.call('SET', 'filler:' .. i, 'x') end");
  freeReplyObject(r);
  r = itest_cmd(x.c, "CONFIG SET key-load-delay 100");
  CHECK(r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  sc = redisConnectUnix(x.d.sock);
  CHECK(sc != NULL && sc->err == 0);
  redisAppendCommand(sc, "DEBUG RELOAD");
  while (!sent)
    CHECK(redisBufferWrite(sc, &sent) == REDIS_OK);
  log = itest_wait_file(x.log, "Redis answered LOADING", 30000);
  printf("    %.*s\n", (int)strcspn(strstr(log, "Redis answered LOADING"), "\n"),
         strstr(log, "Redis answered LOADING"));
  free(log);
  CHECK(redisGetReply(sc, (void **)&r) == REDIS_OK); /* the reload has ended */
  if (r->type != REDIS_REPLY_STATUS)
    sl_test_fail(__FILE__, __LINE__, "DEBUG RELOAD: %s", r->type == REDIS_REPLY_ERROR ? r->str : "?");
  freeReplyObject(r);
  redisFree(sc);
  r = itest_cmd(x.c, "CONFIG SET key-load-delay 0");
  freeReplyObject(r);
  run_finish(&x, q);
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
    {"redis_killed_under_worker", test_redis_killed_under_worker, 60},
    {"waits_out_oom", test_waits_out_oom, 90},
    {"waits_out_busy", test_waits_out_busy, 90},
    {"waits_out_loading", test_waits_out_loading, 90},
    {"silent_partition", test_silent_partition, 90},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
