/*
 * Connections: URLs over TCP and unix sockets, AUTH with a password and with
 * an ACL user, clear messages (never a hang or a crash) when Redis refuses
 * or cannot be reached, and a worker that rides out a Redis outage.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
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

static const sl_test tests[] = {
    {"unix_and_tcp", test_unix_and_tcp, 60},
    {"auth_password_and_acl_user", test_auth_password_and_acl_user, 60},
    {"refused_and_unreachable", test_refused_and_unreachable, 60},
    {"no_or_bad_url", test_no_or_bad_url, 30},
    {"redis_killed_under_worker", test_redis_killed_under_worker, 30},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
