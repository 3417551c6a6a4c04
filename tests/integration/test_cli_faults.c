/*
 * The command line under faults: `sluice submit` interrupted by Redis dying
 * (SIGKILL) over a unix socket still names its batch and `sluice cancel ID`
 * and exits 1, not 141 (SIGPIPE); an output nobody reads is an error said on
 * stderr, not a death by SIGPIPE; `sluice watch` rides out a Redis restart
 * and ends with its batch, or gives up after --give-up when Redis stays
 * gone; and a Redis at maxmemory still answers the read-only commands, while
 * the writing ones say "Redis is out of memory (maxmemory N MiB)".
 *
 * Every test but closed_output starts a redis-server of its own, since it
 * kills it or fills it up.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devredis.h"
#include "itest.h"

/* ---- Helpers ---- */

/* Waits (at most timeout_ms) for pid to exit; returns its wait status.
 * Fails the test, with its stderr, on a timeout. */
static int wait_exit(pid_t pid, int timeout_ms, const char *what) {
  long long t0 = itest_ms();
  int status;

  while (waitpid(pid, &status, WNOHANG) != pid) {
    if (itest_ms() - t0 > timeout_ms) {
      char *log = itest_read(itest_errpath(pid), NULL);

      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      sl_test_fail(__FILE__, __LINE__, "%s did not exit within %d ms; its stderr: %s", what, timeout_ms,
                   log != NULL ? log : "(none)");
    }
    usleep(5000);
  }
  return status;
}

/* Checks that a wait status is a plain exit with `code`: never a signal
 * (SIGPIPE would be exit status 141 in a shell). */
#define CHECK_EXIT(status, code)                                                                   \
  do {                                                                                             \
    int s_ = (status);                                                                             \
    if (WIFSIGNALED(s_))                                                                           \
      sl_test_fail(__FILE__, __LINE__, "killed by signal %d%s", WTERMSIG(s_),                     \
                   WTERMSIG(s_) == SIGPIPE ? " (SIGPIPE)" : "");                                   \
    CHECK(WIFEXITED(s_));                                                                          \
    CHECK_INT(WEXITSTATUS(s_), ==, (code));                                                        \
  } while (0)

static redisContext *conn(const sl_devredis *d) {
  redisContext *c = redisConnectUnix(d->sock);

  CHECK(c != NULL && c->err == 0);
  return c;
}

/* Submits n noop items to queue q of the Redis at url; returns the batch id
 * (a static buffer). */
static const char *submit_noops(const char *url, const char *q, int n) {
  static char id[64];
  const char *path = itest_path("noops.jsonl");
  const char *args[] = {"submit", "--redis", url, "--queue", q, path, NULL};
  char *buf = malloc((size_t)n * 40 + 1);
  size_t len = 0;
  char *out = NULL;

  CHECK(buf != NULL);
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, 40, "{\"type\":\"noop\",\"payload\":%d}\n", i);
  itest_write(path, buf, len);
  free(buf);
  CHECK_INT(itest_run(args, &out, NULL, 60), ==, 0);
  CHECK_INT(strlen(out), ==, 27);
  snprintf(id, sizeof(id), "%.26s", out);
  free(out);
  return id;
}

/* Subscribers of the batch's event channel; -1 when Redis does not answer. */
static long long subscribers(redisContext *c, const char *q, const char *batch) {
  redisReply *r = redisCommand(c, "PUBSUB SHARDNUMSUB sluice:{%s}:events:%s", q, batch);
  long long n = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1]->integer : -1;

  if (r != NULL)
    freeReplyObject(r);
  return n;
}

/* ---- submit: Redis killed mid-submit over a unix socket ---- */

/* The id of the (only) batch of queue q, or "" while there is none; *whole
 * gets its `whole` field (1 once its last chunk is in). */
static const char *batch_of(redisContext *c, const char *q, int *whole) {
  static char id[64];
  redisReply *r = itest_cmd(c, "ZRANGE sluice:{%s}:batches 0 -1", q);

  id[0] = '\0';
  if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_STRING)
    snprintf(id, sizeof(id), "%s", r->element[0]->str);
  freeReplyObject(r);
  *whole = 0;
  if (id[0] != '\0') {
    r = itest_cmd(c, "HGET sluice:{%s}:b:%s whole", q, id);
    *whole = r->type == REDIS_REPLY_STRING && strcmp(r->str, "1") == 0;
    freeReplyObject(r);
  }
  return id;
}

/* 200,000 items in calls of 1,000; Redis is killed (SIGKILL) as soon as the
 * batch's hash exists, while later chunks are still to be written. The
 * submit exits 1 (not 0, not 141), naming its batch and `sluice cancel ID`
 * on stderr with the cause. */
static void test_submit_redis_killed(void) {
  const int n = 200000;
  const char *q = "killed";
  const char *path = itest_path("big.jsonl");
  const char *errpath = itest_path("submit.err");
  const char *outpath = itest_path("submit.out");
  char hint[128];
  char id[64];
  sl_devredis d;
  char err[512];
  char *buf = malloc((size_t)n * 40 + 1);
  size_t len = 0;
  redisContext *c;
  char *log;
  pid_t p;
  int status;
  int whole = 0;

  CHECK(buf != NULL);
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, 40, "{\"type\":\"noop\",\"payload\":%d}\n", i);
  itest_write(path, buf, len);
  free(buf);
  if (sl_devredis_start(&d, NULL, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url);
  c = conn(&d);
  {
    const char *args[] = {"submit", "--redis", d.url, "--queue", q, "--chunk", "1000", path, NULL};

    p = itest_spawn(args, outpath, errpath);
  }
  ITEST_WAIT(batch_of(c, q, &whole)[0] != '\0' || waitpid(p, &status, WNOHANG) == p, 60000,
             "the batch's first chunk in Redis");
  snprintf(id, sizeof(id), "%s", batch_of(c, q, &whole));
  if (id[0] == '\0')
    sl_test_fail(__FILE__, __LINE__, "the submit exited (status 0x%x) before its batch was in Redis", status);
  CHECK_INT(whole, ==, 0); /* still being written */
  redisFree(c);
  sl_devredis_kill(&d, SIGKILL);
  status = wait_exit(p, 30000, "sluice submit");
  log = itest_read(errpath, NULL);
  printf("    %s", log != NULL ? log : "(no stderr)\n");
  CHECK_EXIT(status, 1);
  CHECK_CONTAINS(log, id);
  snprintf(hint, sizeof(hint), "`sluice cancel %s`", id);
  CHECK_CONTAINS(log, hint);
  CHECK_CONTAINS(log, "lost the Redis connection");
  free(log);
  log = itest_read(outpath, NULL);
  CHECK(log != NULL && log[0] == '\0'); /* no id on stdout: the batch was not submitted */
  free(log);
  sl_devredis_stop(&d);
}

/* ---- Output that nobody reads ---- */

/* Runs `sluice ARGS...` with stdout a pipe whose reading end is closed
 * (any write to it fails with EPIPE) and SIGPIPE at its default action, as
 * in a shell; returns its wait status, *err its stderr (free it). */
static int run_unread(const char *const *args, char **err) {
  const char *errpath = itest_path("unread.err");
  const char *argv[32];
  int fds[2];
  int k = 0;
  pid_t pid;

  argv[k++] = SLUICE_BIN;
  for (int i = 0; args[i] != NULL && k < 31; i++)
    argv[k++] = args[i];
  argv[k] = NULL;
  CHECK(pipe(fds) == 0);
  close(fds[0]); /* nobody will ever read */
  fflush(stdout);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    int fe = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fi = open("/dev/null", O_RDONLY);

    signal(SIGPIPE, SIG_DFL);
    dup2(fi, 0);
    dup2(fds[1], 1);
    dup2(fe, 2);
    execv(SLUICE_BIN, (char *const *)argv);
    _exit(127);
  }
  close(fds[1]);
  {
    int status = wait_exit(pid, 30000, args[0]);

    *err = itest_read(errpath, NULL);
    return status;
  }
}

/* status, batches, stats, results and version write to a closed pipe: each
 * says "cannot write ... Broken pipe" and exits 1; a submit whose id cannot
 * be printed names the batch on stderr. */
static void test_closed_output(void) {
  const char *q = itest_queue("unread");
  const char *b = submit_noops(itest_url(), q, 3);
  char batch[64];
  char *err = NULL;
  redisContext *c = itest_conn();
  pid_t w = itest_worker(q, 2);

  snprintf(batch, sizeof(batch), "%s", b);
  itest_wait_batch(c, q, batch, 30); /* so that `results` has lines to write */
  itest_stop_ok(w);
  {
    const char *a1[] = {"status", "--redis", itest_url(), "--queue", q, batch, NULL};
    const char *a2[] = {"batches", "--redis", itest_url(), "--queue", q, NULL};
    const char *a3[] = {"stats", "--json", "--redis", itest_url(), "--queue", q, NULL};
    const char *a4[] = {"results", "--redis", itest_url(), "--queue", q, batch, NULL};
    const char *a5[] = {"version", NULL};
    const char *const *all[] = {a1, a2, a3, a4, a5};

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
      int status = run_unread(all[i], &err);

      printf("    %s: %s", all[i][0], err != NULL ? err : "(no stderr)\n");
      CHECK_EXIT(status, 1);
      CHECK_CONTAINS(err, "standard output");
      CHECK_CONTAINS(err, "Broken pipe");
      free(err);
    }
  }
  {
    const char *path = itest_path("one.jsonl");
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};
    redisReply *r;
    char want[128];
    int status;

    itest_write(path, "{\"type\":\"noop\",\"payload\":1}\n", 28);
    status = run_unread(args, &err);
    printf("    submit: %s", err != NULL ? err : "(no stderr)\n");
    CHECK_EXIT(status, 1);
    CHECK_CONTAINS(err, "Broken pipe");
    /* the new batch is in Redis, and its id on stderr */
    r = itest_cmd(c, "ZRANGE sluice:{%s}:batches 0 -1", q);
    CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 2);
    for (size_t i = 0; i < r->elements; i++) {
      if (strcmp(r->element[i]->str, batch) != 0) {
        snprintf(want, sizeof(want), "batch %s was submitted", r->element[i]->str);
        CHECK_CONTAINS(err, want);
      }
    }
    freeReplyObject(r);
    free(err);
  }
  redisFree(c);
}

/* ---- watch across a Redis restart ---- */

/* Redis with its data in an AOF (every write synced) is killed under a
 * `sluice watch` and started again on the same socket. The watch says once
 * that it is reconnecting and keeps running. It is stopped (SIGSTOP) while
 * the batch runs to its end on the new Redis, so no event can reach it;
 * continued, it reconnects, reads the batch hash again and exits 0 within
 * 4.5 s: sooner than the 5 s after which an idle watch reads the hash
 * anyway, so only the read after resubscribing can have ended it. */
static void test_watch_across_restart(void) {
  const char *extra[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
  const char *q = "restart";
  const char *errpath = itest_path("watch.err");
  char batch[64];
  sl_devredis d;
  char err[512];
  redisContext *c;
  char *log;
  pid_t wp;
  pid_t worker;
  int status;
  long long t0;

  if (sl_devredis_start(&d, extra, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url); /* kept in the AOF */
  snprintf(batch, sizeof(batch), "%s", submit_noops(d.url, q, 20));
  c = conn(&d);
  {
    const char *args[] = {"watch", "--redis", d.url, "--queue", q, "--give-up", "60s", batch, NULL};

    wp = itest_spawn(args, NULL, errpath);
  }
  ITEST_WAIT_INT(subscribers(c, q, batch), ==, 1, 10000, "the watch subscribed");
  redisFree(c);
  sl_devredis_kill(&d, SIGKILL);
  free(itest_wait_file(errpath, "reconnecting", 10000));
  CHECK_INT(waitpid(wp, &status, WNOHANG), ==, 0); /* still watching */
  CHECK(kill(wp, SIGSTOP) == 0);
  if (sl_devredis_restart(&d, extra, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  c = conn(&d);
  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, 20); /* the batch survived */
  {
    const char *args[] = {"worker", "--redis", d.url, "--queue", q, "--block-ms", "200", "--quiet", NULL};

    worker = itest_spawn(args, NULL, NULL);
  }
  itest_wait_batch(c, q, batch, 30);
  itest_stop_ok(worker);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 20);
  t0 = itest_ms();
  CHECK(kill(wp, SIGCONT) == 0);
  status = wait_exit(wp, 4500, "the continued watch");
  printf("    watch exited %lld ms after it was continued\n", itest_ms() - t0);
  log = itest_read(errpath, NULL);
  CHECK_EXIT(status, 0);
  CHECK_INT(itest_count(log, "lost the connection to Redis while watching batch"), ==, 1);
  CHECK_CONTAINS(log, "reconnected to Redis");
  CHECK_CONTAINS(log, "20/20");
  CHECK_CONTAINS(log, "completed");
  free(log);
  redisFree(c);
  sl_devredis_stop(&d);
}

/* Redis killed for good under `sluice watch --give-up 2s`: the watch says
 * once that it is reconnecting, tries for 2 s, then exits 1 saying that it
 * gave up and why. */
static void test_watch_gives_up(void) {
  const char *q = "gone";
  const char *errpath = itest_path("watch-gone.err");
  char batch[64];
  sl_devredis d;
  char err[512];
  redisContext *c;
  char *log;
  pid_t wp;
  int status;
  long long t0;
  long long took;

  if (sl_devredis_start(&d, NULL, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url);
  snprintf(batch, sizeof(batch), "%s", submit_noops(d.url, q, 1));
  c = conn(&d);
  {
    const char *args[] = {"watch", "--redis", d.url, "--queue", q, "--give-up", "2s", batch, NULL};

    wp = itest_spawn(args, NULL, errpath);
  }
  ITEST_WAIT_INT(subscribers(c, q, batch), ==, 1, 10000, "the watch subscribed");
  redisFree(c);
  t0 = itest_ms();
  sl_devredis_kill(&d, SIGKILL);
  status = wait_exit(wp, 20000, "the watch of a Redis gone for good");
  took = itest_ms() - t0;
  log = itest_read(errpath, NULL);
  printf("    gave up %lld ms after Redis was killed: %s", took,
         strstr(log, "sluice: watching") != NULL ? strstr(log, "sluice: watching") : log);
  CHECK_EXIT(status, 1);
  CHECK_INT(took, >=, 1950); /* not before --give-up */
  CHECK_INT(itest_count(log, "reconnecting"), ==, 1);
  CHECK_CONTAINS(log, "could not reconnect within 2 s");
  CHECK_CONTAINS(log, "Connection refused");
  CHECK_CONTAINS(log, "gave up");
  free(log);
  sl_devredis_stop(&d);
}

/* ---- Redis at maxmemory ---- */

/* Runs sluice and checks its exit code; returns its stdout (free it) and
 * *err its stderr (free it; may be NULL). */
static char *run_expect(const char *const *args, int code, char **err) {
  char *out = NULL;
  char *e = NULL;
  int rc = itest_run(args, &out, &e, 30);

  if (rc != code)
    sl_test_fail(__FILE__, __LINE__, "sluice %s %s exited %d, not %d: %s", args[0], args[1], rc, code,
                 e != NULL ? e : "");
  if (err != NULL)
    *err = e;
  else
    free(e);
  return out;
}

/* Redis filled with data until its writes get OOM (maxmemory a little
 * above what it used, noeviction): status, stats, results, batches, workers
 * and dead list still work; a write (pause) and a submit say "Redis is out
 * of memory (maxmemory N MiB)" with Redis's own OOM message, never a word
 * about Redis versions; for a user that may not read the configuration,
 * "(maxmemory)" alone. */
static void test_read_only_at_maxmemory(void) {
  const char *q = "full";
  sl_devredis d;
  char err[512];
  char batch[64];
  char url[600];
  char *value = malloc(1001);
  redisContext *c;
  redisReply *r;
  long long used;
  int filled = 0;
  char *out;
  char *e;

  CHECK(value != NULL);
  memset(value, 'x', 1000);
  value[1000] = '\0';
  if (sl_devredis_start(&d, NULL, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url);
  snprintf(batch, sizeof(batch), "%s", submit_noops(d.url, q, 5));
  c = conn(&d);
  r = itest_cmd(c, "ACL SETUSER nocfg on >pw ~* &* +@all -config -info");
  CHECK(r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  r = itest_cmd(c, "INFO memory");
  CHECK(r->type == REDIS_REPLY_STRING && strstr(r->str, "\r\nused_memory:") != NULL);
  used = strtoll(strstr(r->str, "\r\nused_memory:") + 14, NULL, 10);
  freeReplyObject(r);
  r = itest_cmd(c, "CONFIG SET maxmemory %lld", used + 512 * 1024);
  CHECK(r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  /* Fill until a write is refused. */
  for (int i = 0; !filled; i++) {
    r = itest_cmd(c, "SET filler:%d %s", i, value);
    if (r->type == REDIS_REPLY_ERROR) {
      if (strncmp(r->str, "OOM ", 4) != 0)
        sl_test_fail(__FILE__, __LINE__, "SET answered %s", r->str);
      filled = 1;
    }
    freeReplyObject(r);
    CHECK(i < 100000);
  }
  free(value);

  /* A write through sluice: the OOM answer, explained. */
  {
    const char *args[] = {"pause", "--redis", d.url, "--queue", q, batch, NULL};

    char want[128];

    snprintf(want, sizeof(want), "Redis is out of memory (maxmemory %.1f MiB): OOM command not allowed",
             (double)(used + 512 * 1024) / 1048576.0);
    free(run_expect(args, 1, &e));
    printf("    pause: %s", e);
    CHECK_CONTAINS(e, want);
    CHECK(strstr(e, "Redis 7") == NULL);
    free(e);
  }
  {
    const char *path = itest_path("more.jsonl");
    const char *args[] = {"submit", "--redis", d.url, "--queue", q, path, NULL};

    itest_write(path, "{\"type\":\"noop\",\"payload\":1}\n", 28);
    free(run_expect(args, 1, &e));
    printf("    submit: %s", e);
    CHECK_CONTAINS(e, "Redis is out of memory (maxmemory");
    CHECK_CONTAINS(e, "nothing was submitted");
    CHECK(strstr(e, "Redis 7") == NULL);
    free(e);
  }
  snprintf(url, sizeof(url), "unix://nocfg:pw@%s", d.sock);
  {
    const char *args[] = {"cancel", "--redis", url, "--queue", q, batch, NULL};

    free(run_expect(args, 1, &e));
    printf("    cancel without CONFIG and INFO: %s", e);
    CHECK_CONTAINS(e, "Redis is out of memory (maxmemory): OOM command not allowed");
    free(e);
  }

  /* The read-only commands. */
  {
    const char *a1[] = {"status", "--redis", d.url, "--queue", q, batch, NULL};
    const char *a2[] = {"status", "--json", "--redis", d.url, "--queue", q, batch, NULL};
    const char *a3[] = {"batches", "--redis", d.url, "--queue", q, NULL};

    out = run_expect(a1, 0, NULL);
    CHECK_CONTAINS(out, batch);
    CHECK_CONTAINS(out, "0/5 ended");
    free(out);
    out = run_expect(a2, 0, NULL);
    CHECK_CONTAINS(out, "\"total\":5");
    free(out);
    out = run_expect(a3, 0, NULL);
    CHECK_CONTAINS(out, batch);
    free(out);
  }
  {
    const char *a1[] = {"stats", "--redis", d.url, "--queue", q, NULL};
    const char *a2[] = {"stats", "--json", "--redis", d.url, "--queue", q, NULL};

    out = run_expect(a1, 0, NULL);
    CHECK_CONTAINS(out, "5 queued");
    free(out);
    out = run_expect(a2, 0, NULL);
    CHECK_CONTAINS(out, "\"queued\":5");
    free(out);
  }
  {
    const char *a1[] = {"results", "--redis", d.url, "--queue", q, batch, NULL};
    const char *a2[] = {"workers", "--redis", d.url, "--queue", q, NULL};
    const char *a3[] = {"dead", "list", "--redis", d.url, "--queue", q, NULL};

    free(run_expect(a1, 0, NULL));
    free(run_expect(a2, 0, NULL));
    free(run_expect(a3, 0, NULL));
  }
  /* Still full: the commands above wrote nothing that made room. */
  r = itest_cmd(c, "SET one-more x");
  CHECK(r->type == REDIS_REPLY_ERROR && strncmp(r->str, "OOM ", 4) == 0);
  freeReplyObject(r);
  redisFree(c);
  sl_devredis_stop(&d);
}

static const sl_test tests[] = {
    {"submit_redis_killed", test_submit_redis_killed, 120},
    {"closed_output", test_closed_output, 60},
    {"watch_across_restart", test_watch_across_restart, 90},
    {"watch_gives_up", test_watch_gives_up, 60},
    {"read_only_at_maxmemory", test_read_only_at_maxmemory, 90},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
