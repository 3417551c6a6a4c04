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

static const sl_test tests[] = {
    {"unix_and_tcp", test_unix_and_tcp, 60},
    {"auth_password_and_acl_user", test_auth_password_and_acl_user, 60},
    {"refused_and_unreachable", test_refused_and_unreachable, 60},
    {"no_or_bad_url", test_no_or_bad_url, 30},
    {"redis_killed_under_worker", test_redis_killed_under_worker, 60},
    {"waits_out_oom", test_waits_out_oom, 90},
    {"waits_out_busy", test_waits_out_busy, 90},
    {"waits_out_loading", test_waits_out_loading, 90},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
