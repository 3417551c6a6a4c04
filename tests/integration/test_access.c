#define _GNU_SOURCE /* memmem */
/*
 * Who may do what on a shared Redis.
 *
 * - Only an operator loads code: `sluice library load` (or `worker
 *   --load-library`) loads the function library; every other command only
 *   checks its version and says which library is loaded and which it needs,
 *   and leaves it alone.
 * - The README's three Redis ACL users (producer, worker, dashboard), created
 *   by running the README's own lines: each works within its rights, the
 *   producer cannot FUNCTION LOAD nor call worker functions, the dashboard
 *   cannot write.
 * - The Redis password can come from a file or the environment, so it is
 *   never on a command line that `ps` shows.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devredis.h"
#include "itest.h"

static void start(sl_devredis *d, const char *const *extra) {
  char err[512];

  if (sl_devredis_start(d, extra, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
}

/* Runs sluice ARGS with --redis url; returns the exit code, *err its stderr. */
static int run(const char *url, const char *const *args, char **out, char **err) {
  const char *av[32];
  int k = 0;

  for (int i = 0; args[i] != NULL && k < 28; i++)
    av[k++] = args[i];
  av[k++] = "--redis";
  av[k++] = url;
  av[k] = NULL;
  return itest_run(av, out, err, 60);
}

/* Waits until the worker logging to errlog serves its queue. */
static void wait_serving(const char *errlog, const char *what) {
  long long t0 = itest_ms();

  for (;;) {
    char *log = itest_read(errlog, NULL);
    int ok = log != NULL && strstr(log, "serving queue") != NULL;

    free(log);
    if (ok)
      return;
    if (itest_ms() - t0 > 10000)
      sl_test_fail(__FILE__, __LINE__, "%s did not start", what);
    usleep(20000);
  }
}

/* Subscribers of channel PREFIX BATCH. */
static long long subscribers(redisContext *c, const char *prefix, const char *batch) {
  redisReply *r = redisCommand(c, "PUBSUB SHARDNUMSUB %s%s", prefix, batch);
  long long n = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1]->integer : -1;

  if (r != NULL)
    freeReplyObject(r);
  return n;
}

static char *submit_one(const char *url, const char *q) {
  char path[600];
  const char *items = "{\"type\":\"sleep\",\"payload\":{\"ms\":10}}\n{\"type\":\"noop\",\"payload\":{}}\n";
  const char *args[] = {"submit", "--queue", q, path, NULL};
  char *out = NULL;
  char *err = NULL;

  snprintf(path, sizeof(path), "%s", itest_path("one.jsonl"));
  itest_write(path, items, strlen(items));
  if (run(url, args, &out, &err) != 0)
    sl_test_fail(__FILE__, __LINE__, "submit: %s", err);
  free(err);
  out[strcspn(out, "\n")] = '\0';
  return out;
}

/* A Redis without the library, then with another build's library: commands
 * refuse with what to do and never replace it; `library load` and `worker
 * --load-library` (operators) do. */
static void test_library_version(void) {
  sl_devredis d;
  redisContext *c;
  redisReply *r;
  char *err = NULL;
  char *out = NULL;
  const char *batches[] = {"batches", NULL};
  const char *check[] = {"library", "check", NULL};
  const char *load[] = {"library", "load", NULL};
  const char *worker[] = {"worker", "--queue", "lib", NULL};
  const char *fake = "#!lua name=sluice\n"
                     "redis.register_function{function_name='sluice_v1_version', callback=function() return "
                     "'0.0.1+000000000000' end, flags={'no-writes'}}\n";

  start(&d, NULL);
  CHECK_INT(run(d.url, batches, NULL, &err), ==, 1);
  CHECK_CONTAINS(err, "the sluice function library is not loaded in this Redis");
  CHECK_CONTAINS(err, "run `sluice library load`");
  free(err);
  CHECK_INT(run(d.url, worker, NULL, &err), ==, 1);
  CHECK_CONTAINS(err, "run `sluice library load`");
  free(err);

  c = redisConnectUnix(d.sock);
  r = redisCommand(c, "FUNCTION LOAD %s", fake);
  CHECK(r != NULL && r->type == REDIS_REPLY_STRING);
  freeReplyObject(r);
  CHECK_INT(run(d.url, batches, NULL, &err), ==, 1);
  CHECK_CONTAINS(err, "library v0.0.1+000000000000 is loaded, this sluice needs v");
  CHECK_CONTAINS(err, ": run `sluice library load`");
  printf("    %s", err);
  free(err);
  CHECK_INT(run(d.url, check, NULL, &err), ==, 1);
  free(err);
  CHECK_INT(run(d.url, worker, NULL, &err), ==, 1);
  CHECK_CONTAINS(err, "library v0.0.1+000000000000 is loaded");
  free(err);
  r = redisCommand(c, "FCALL_RO sluice_v1_version 0");
  CHECK_STR(r->str, "0.0.1+000000000000"); /* nobody replaced it */
  freeReplyObject(r);

  CHECK_INT(run(d.url, load, NULL, &err), ==, 0);
  CHECK_CONTAINS(err, "loaded the function library v");
  free(err);
  CHECK_INT(run(d.url, check, &out, NULL), ==, 0);
  r = redisCommand(c, "FCALL_RO sluice_v1_version 0");
  out[strcspn(out, "\n")] = '\0';
  CHECK_STR(r->str, out);
  freeReplyObject(r);
  free(out);

  /* worker --load-library replaces another build's library and runs */
  r = redisCommand(c, "FUNCTION LOAD REPLACE %s", fake);
  freeReplyObject(r);
  {
    const char *args[] = {"worker", "--queue", "lib", "--load-library", "--redis", d.url, NULL};
    char errlog[600];
    pid_t w;

    snprintf(errlog, sizeof(errlog), "%s", itest_path("loadlib.err"));
    w = itest_spawn(args, NULL, errlog);
    wait_serving(errlog, "worker --load-library");
    itest_stop_ok(w);
    r = redisCommand(c, "FCALL_RO sluice_v1_version 0");
    CHECK(strcmp(r->str, "0.0.1+000000000000") != 0);
    freeReplyObject(r);
  }
  redisFree(c);
  sl_devredis_stop(&d);
}

/* ---- The README's ACL users ---- */

/* Splits a shell line of 'single-quoted' and plain words into argv. */
static int shell_words(char *line, char **argv, int max) {
  int n = 0;
  char *p = line;

  while (*p != '\0' && n < max) {
    char *w;
    char *o;

    while (*p == ' ')
      p++;
    if (*p == '\0')
      break;
    w = o = p;
    while (*p != '\0' && *p != ' ') {
      if (*p == '\'') {
        for (p++; *p != '\0' && *p != '\''; p++)
          *o++ = *p;
        if (*p == '\'')
          p++;
      } else {
        *o++ = *p++;
      }
    }
    if (*p == ' ')
      p++;
    *o = '\0';
    argv[n++] = w;
  }
  return n;
}

/* Runs the README's `redis-cli ACL SETUSER ...` lines (between the acl
 * markers) on connection c. Returns how many users were set. */
static int readme_acl(redisContext *c) {
  const char *slash = strrchr(__FILE__, '/');
  char path[700];
  char *text;
  char *begin;
  char *end;
  char *line;
  char *joined;
  size_t jl = 0;
  int users = 0;

  snprintf(path, sizeof(path), "%.*s/../../README.md", (int)(slash - __FILE__), __FILE__);
  text = itest_read(path, NULL);
  CHECK(text != NULL);
  begin = strstr(text, "<!-- acl:begin");
  end = begin ? strstr(begin, "<!-- acl:end") : NULL;
  CHECK(begin != NULL && end != NULL);
  *end = '\0';
  joined = calloc(1, strlen(begin) + 1);
  /* join continued lines */
  for (line = begin; *line != '\0';) {
    char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    int cont = len > 0 && line[len - 1] == '\\';

    memcpy(joined + jl, line, cont ? len - 1 : len);
    jl += cont ? len - 1 : len;
    joined[jl++] = cont ? ' ' : '\n';
    line = nl ? nl + 1 : line + len;
  }
  joined[jl] = '\0';
  for (line = strtok(joined, "\n"); line != NULL; line = strtok(NULL, "\n")) {
    char *argv[200];
    int n;
    redisReply *r;

    if (strncmp(line, "redis-cli ACL SETUSER ", 22) != 0)
      continue;
    n = shell_words(line + 10, argv, 200);
    r = redisCommandArgv(c, n, (const char **)argv, NULL);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
      sl_test_fail(__FILE__, __LINE__, "README line refused: %s: %s", line, r ? r->str : c->errstr);
    freeReplyObject(r);
    users++;
  }
  free(joined);
  free(text);
  return users;
}

/* Each README user works within its rights: the producer submits, follows
 * and controls batches, and cannot load code or call worker functions; the
 * worker runs them; the dashboard reads everything and writes nothing. */
static void test_acl_users(void) {
  sl_devredis d;
  redisContext *c;
  redisReply *r;
  char producer[400];
  char worker[400];
  char dashboard[400];
  const char *q = "acl";
  char *b1;
  char *b2;
  char *b3;
  char *err = NULL;
  pid_t w;

  start(&d, NULL);
  itest_load_library(d.url); /* the default user: the operator */
  c = redisConnectUnix(d.sock);
  CHECK_INT(readme_acl(c), ==, 3);
  snprintf(producer, sizeof(producer), "unix://sluice-producer:producer-password@%s", d.sock);
  snprintf(worker, sizeof(worker), "unix://sluice-worker:worker-password@%s", d.sock);
  snprintf(dashboard, sizeof(dashboard), "unix://sluice-dashboard:dashboard-password@%s", d.sock);

  /* the producer: submit, status, pause, resume, cancel */
  b1 = submit_one(producer, q);
  b2 = submit_one(producer, q);
  {
    const char *st[] = {"status", "--queue", q, b1, NULL};
    const char *pause[] = {"pause", "--queue", q, b2, NULL};
    const char *resume[] = {"resume", "--queue", q, b2, NULL};
    const char *cancel[] = {"cancel", "--queue", q, b2, NULL};
    const char *load[] = {"library", "load", NULL};

    CHECK_INT(run(producer, st, NULL, NULL), ==, 0);
    CHECK_INT(run(producer, pause, NULL, NULL), ==, 0);
    CHECK_INT(run(producer, resume, NULL, NULL), ==, 0);
    CHECK_INT(run(producer, cancel, NULL, NULL), ==, 0);
    CHECK_INT(run(producer, load, NULL, &err), ==, 1);
    CHECK_CONTAINS(err, "NOPERM");
    printf("    producer: library load: %s", err);
    free(err);
  }
  {
    redisContext *pc = redisConnectUnix(d.sock);

    r = redisCommand(pc, "AUTH sluice-producer producer-password");
    CHECK(r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    r = redisCommand(pc, "FUNCTION LOAD REPLACE %s",
                     "#!lua name=sluice\nredis.register_function('sluice_v1_version', function() return 'x' end)");
    CHECK(r->type == REDIS_REPLY_ERROR);
    CHECK_CONTAINS(r->str, "NOPERM");
    freeReplyObject(r);
    /* worker functions refuse a user that may not XACK, before any write */
    r = redisCommand(pc, "FCALL sluice_v1_complete 3 sluice:{acl}:s:high sluice:{acl}:s:normal sluice:{acl}:s:low "
                         "workers sluice:{acl}: acl a 2 1-1 %s 0 s {} 0 '' ''", b1);
    CHECK(r->type == REDIS_REPLY_ERROR);
    CHECK_CONTAINS(r->str, "NOPERM sluice worker functions need a Redis user that may XACK");
    freeReplyObject(r);
    r = redisCommand(pc, "FCALL sluice_v1_fetch 3 sluice:{acl}:s:high sluice:{acl}:s:normal sluice:{acl}:s:low "
                         "workers me 10 sluice:{acl}: acl 0 '' 30000 5");
    CHECK(r->type == REDIS_REPLY_ERROR);
    CHECK_CONTAINS(r->str, "NOPERM");
    freeReplyObject(r);
    redisFree(pc);
  }

  /* the worker runs the producer's batch, while the dashboard and the
   * producer watch it live (pub/sub) */
  {
    const char *args[] = {"worker", "--redis", worker, "--queue", q, "--block-ms", "200", NULL};
    const char *wd[] = {"watch", "--redis", dashboard, "--queue", q, b1, NULL};
    const char *wp[] = {"watch", "--redis", producer, "--queue", q, b1, NULL};
    char errlog[600];
    pid_t watchers[2];

    watchers[0] = itest_spawn(wd, NULL, NULL);
    watchers[1] = itest_spawn(wp, NULL, NULL);
    /* they subscribe first (the test passes either way) */
    ITEST_WAIT_INT(subscribers(c, "sluice:{acl}:events:", b1), ==, 2, 10000, "both watchers to subscribe");
    snprintf(errlog, sizeof(errlog), "%s", itest_path("aclworker.err"));
    w = itest_spawn(args, NULL, errlog);
    itest_wait_batch(c, q, b1, 30);
    for (int i = 0; i < 2; i++) {
      int status = 0;
      long long t0 = itest_ms();

      while (waitpid(watchers[i], &status, WNOHANG) == 0) {
        if (itest_ms() - t0 > 10000)
          sl_test_fail(__FILE__, __LINE__, "watch did not end with the batch");
        usleep(20000);
      }
      CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    itest_stop_ok(w);
    r = redisCommand(c, "HGET sluice:{acl}:b:%s succeeded", b1);
    CHECK_STR(r->str, "2");
    freeReplyObject(r);
    err = itest_read(errlog, NULL);
    CHECK(strstr(err, "NOPERM") == NULL);
    free(err);
    err = NULL;
  }

  /* the dashboard reads, and cannot write: not even cancel a batch that is
   * still queued (b3: no worker runs any more), which sluice cancel would
   * otherwise refuse before its call as having nothing to cancel */
  b3 = submit_one(producer, q);
  {
    static const char *const reads[][8] = {{"status", "--queue", "acl", "B1", NULL},
                                           {"status", "--json", "--queue", "acl", "B1", NULL},
                                           {"watch", "--queue", "acl", "B1", NULL},
                                           {"results", "--queue", "acl", "B1", NULL},
                                           {"batches", "--queue", "acl", NULL},
                                           {"batches", "--queue", "acl", "--limit", "1", "--after", "B1", NULL},
                                           {"batches", "--queue", "acl", "--status", "completed", NULL},
                                           {"stats", "--queue", "acl", NULL},
                                           {"workers", "--queue", "acl", NULL},
                                           {"dead", "list", "--queue", "acl", NULL},
                                           {"limit", "ls", "--queue", "acl", NULL},
                                           {"library", "check", NULL},
                                           {NULL}};
    char one[600];
    const char *sub[] = {"submit", "--queue", q, one, NULL};
    const char *cancel[] = {"cancel", "--queue", q, b3, NULL};

    snprintf(one, sizeof(one), "%s", itest_path("one.jsonl"));
    for (int i = 0; reads[i][0] != NULL; i++) {
      const char *args[8];

      for (int k = 0; k < 8; k++)
        args[k] = reads[i][k] != NULL && strcmp(reads[i][k], "B1") == 0 ? b1 : reads[i][k];
      if (run(dashboard, args, NULL, &err) != 0)
        sl_test_fail(__FILE__, __LINE__, "dashboard: sluice %s %s: %s", args[0], args[1] ? args[1] : "", err);
      free(err);
      err = NULL;
    }
    if (run(dashboard, sub, NULL, &err) != 1)
      sl_test_fail(__FILE__, __LINE__, "dashboard submit: %s", err);
    CHECK_CONTAINS(err, "NOPERM");
    free(err);
    CHECK_INT(run(dashboard, cancel, NULL, &err), ==, 1);
    CHECK_CONTAINS(err, "NOPERM");
    free(err);
  }
  free(b1);
  free(b2);
  free(b3);
  redisFree(c);
  sl_devredis_stop(&d);
}

/* The password from a file or the environment: commands and workers work,
 * and a running worker's command line does not hold the password. */
static void test_password_elsewhere(void) {
  const char *extra[] = {"--requirepass", "pw-4-redis", NULL};
  sl_devredis d;
  char url[400];
  char pwfile[600];
  char *err = NULL;
  pid_t w;

  start(&d, extra);
  snprintf(url, sizeof(url), "unix://:pw-4-redis@%s", d.sock);
  itest_load_library(url);
  snprintf(url, sizeof(url), "unix://%s", d.sock);
  snprintf(pwfile, sizeof(pwfile), "%s", itest_path("redis.pw"));
  itest_write(pwfile, "pw-4-redis\n", 11);
  {
    const char *plain[] = {"batches", NULL};
    const char *file[] = {"batches", "--redis-password-file", pwfile, NULL};

    CHECK_INT(run(url, plain, NULL, &err), ==, 1);
    CHECK_CONTAINS(err, "NOAUTH");
    free(err);
    CHECK_INT(run(url, file, NULL, NULL), ==, 0);
    {
      char items[600];
      const char *sub[] = {"submit", "--redis-password-file", pwfile, "--queue", "pw", items, NULL};
      const char *one = "{\"type\":\"noop\",\"payload\":{}}\n";

      snprintf(items, sizeof(items), "%s", itest_path("pw.jsonl"));
      itest_write(items, one, strlen(one));
      CHECK_INT(run(url, sub, NULL, NULL), ==, 0);
    }
    setenv("SLUICE_REDIS_PASSWORD", "pw-4-redis", 1);
    CHECK_INT(run(url, plain, NULL, NULL), ==, 0);
    unsetenv("SLUICE_REDIS_PASSWORD");
  }
  {
    char both[400];
    const char *args[] = {"batches", "--redis-password-file", pwfile, NULL};

    snprintf(both, sizeof(both), "unix://:other@%s", d.sock);
    CHECK_INT(run(both, args, NULL, &err), ==, 2);
    CHECK_CONTAINS(err, "has a password already");
    free(err);
  }
  {
    const char *args[] = {"worker", "--redis", url, "--redis-password-file", pwfile, "--queue", "pw", NULL};
    char errlog[600];
    char cmdline[700];
    char *cl;
    size_t n = 0;

    snprintf(errlog, sizeof(errlog), "%s", itest_path("pw.err"));
    w = itest_spawn(args, NULL, errlog);
    wait_serving(errlog, "the worker with --redis-password-file");
    snprintf(cmdline, sizeof(cmdline), "/proc/%d/cmdline", (int)w);
    cl = itest_read(cmdline, &n);
    CHECK(cl != NULL && n > 0);
    CHECK(memmem(cl, n, "pw-4-redis", 10) == NULL);
    free(cl);
    itest_stop_ok(w);
  }
  sl_devredis_stop(&d);
}

int main(int argc, char **argv) {
  static const sl_test tests[] = {{"library_version", test_library_version, 90},
                                  {"acl_users", test_acl_users, 120},
                                  {"password_elsewhere", test_password_elsewhere, 60},
                                  {NULL, NULL, 0}};

  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
