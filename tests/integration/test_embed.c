/*
 * The C embedding example (examples/embed.c): a program that links
 * libsluice, runs a worker on its own libuv loop and serves a handler type
 * of its own, `uppercase`, completed asynchronously from a uv timer.
 *
 * The example binary is built next to the sluice binary, in
 * <dirname(SLUICE_BIN)>/examples/sluice_embed_example. Two ways to run it:
 * with N it submits N items itself and stops when it has finished them;
 * without N it is a worker that serves items submitted with `sluice submit`
 * until SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

/* Where the example is: <dirname(SLUICE_BIN)>/examples/. */
static const char *embed_bin(void) {
  static char path[1024];
  char dir[1024];

  if (path[0] == '\0') {
    snprintf(dir, sizeof(dir), "%s", SLUICE_BIN);
    snprintf(path, sizeof(path), "%s/examples/sluice_embed_example", dirname(dir));
    if (access(path, X_OK) != 0)
      sl_test_fail(__FILE__, __LINE__, "the example is not built: %s", path);
  }
  return path;
}

/* Starts the example with REDIS_URL QUEUE [N]; stdout and stderr go to the
 * given files. */
static pid_t spawn_embed(const char *q, const char *n, const char *out, const char *err) {
  const char *argv[] = {embed_bin(), itest_url(), q, n, NULL};
  pid_t pid;

  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0)
    sl_test_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
  if (pid == 0) {
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fi = open("/dev/null", O_RDONLY);

    dup2(fi, 0);
    dup2(fo, 1);
    dup2(fe, 2);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  return pid;
}

/* Waits for pid up to timeout_s (then kills it and fails); returns its exit
 * code, failing the test if it died of a signal. */
static int wait_exit(pid_t pid, int timeout_s, const char *errpath) {
  long long t0 = itest_ms();
  int status = 0;

  while (waitpid(pid, &status, WNOHANG) != pid) {
    if (itest_ms() - t0 > timeout_s * 1000LL) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      sl_test_fail(__FILE__, __LINE__, "the example did not exit within %d s; stderr:\n%s", timeout_s,
                   itest_read(errpath, NULL));
    }
    usleep(5000);
  }
  if (WIFSIGNALED(status))
    sl_test_fail(__FILE__, __LINE__, "the example died of signal %d; stderr:\n%s", WTERMSIG(status),
                 itest_read(errpath, NULL));
  return WEXITSTATUS(status);
}

/* `sluice results BATCH` on queue q, parsed: a cJSON array of the result
 * objects, in submit order (cJSON_Delete it). */
static cJSON *results(const char *q, const char *batch) {
  const char *args[] = {"results", batch, "--redis", itest_url(), "--queue", q, NULL};
  char *out = NULL;
  cJSON *all = cJSON_CreateArray();
  char *line;
  char *save = NULL;

  CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
  for (line = strtok_r(out, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
    cJSON *j = cJSON_Parse(line);

    if (j == NULL)
      sl_test_fail(__FILE__, __LINE__, "results: not JSON: %s", line);
    cJSON_AddItemToArray(all, j);
  }
  free(out);
  return all;
}

static const char *jstr(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* With N = 50 the example submits 50 items, runs them through its own
 * handler and exits 0 by itself; every result is the upper-cased payload,
 * recorded by the example's worker (its pid is in the worker id). */
static void test_embed_submits_and_runs(void) {
  const char *q = itest_queue("embed");
  char opath[600];
  char epath[600];
  char batch[64];
  char pidpart[32];
  char want[64];
  char *out;
  const char *at;
  pid_t pid;
  cJSON *all;
  int i = 0;
  const cJSON *r;

  snprintf(opath, sizeof(opath), "%s", itest_path("embed.out"));
  snprintf(epath, sizeof(epath), "%s", itest_path("embed.err"));
  pid = spawn_embed(q, "50", opath, epath);
  CHECK_INT(wait_exit(pid, 60, epath), ==, 0);
  out = itest_read(opath, NULL);
  CHECK_CONTAINS(out, "embed: 50 items done (0 rejected, 0 cancelled)");
  CHECK_CONTAINS(out, "is completed: 50 succeeded, 0 failed");
  at = strstr(out, "embed: submitted batch ");
  CHECK(at != NULL);
  snprintf(batch, sizeof(batch), "%.26s", at + strlen("embed: submitted batch "));
  free(out);

  all = results(q, batch);
  CHECK_INT(cJSON_GetArraySize(all), ==, 50);
  snprintf(pidpart, sizeof(pidpart), ":%d:", (int)pid);
  cJSON_ArrayForEach(r, all) {
    i++;
    snprintf(want, sizeof(want), "HELLO, SLUICE #%d", i);
    CHECK_STR(jstr(r, "status"), "succeeded");
    CHECK_STR(jstr(r, "result"), want);
    CHECK_CONTAINS(jstr(r, "worker"), pidpart);
  }
  cJSON_Delete(all);
}

/* Without N the example is a worker: items submitted with the CLI run
 * through `uppercase` (asynchronously), a bad payload fails for good, an
 * attempt that times out before the result arrives runs the cancel hook,
 * and the built-in `noop` is still served. SIGTERM stops it with exit 0. */
static void test_embed_as_worker(void) {
  const char *q = itest_queue("embedw");
  const char *path = itest_path("embedw.jsonl");
  redisContext *c = itest_conn();
  char opath[600];
  char epath[600];
  char batch[64];
  char buf[64 * 128];
  size_t len = 0;
  char *out = NULL;
  pid_t pid;
  cJSON *all;
  const cJSON *r;
  int i = 0;

  snprintf(opath, sizeof(opath), "%s", itest_path("embedw.out"));
  snprintf(epath, sizeof(epath), "%s", itest_path("embedw.err"));
  for (int k = 1; k <= 20; k++)
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"uppercase\",\"payload\":\"item %d\"}\n", k);
  /* JSON escapes and UTF-8 survive; only ASCII letters change. */
  len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                          "{\"type\":\"uppercase\",\"payload\":\"tab\\there, caf\\u00e9 \\\"q\\\"\"}\n");
  len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"uppercase\",\"payload\":{\"not\":\"a string\"}}\n");
  len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                          "{\"type\":\"uppercase\",\"payload\":\"too slow\",\"timeout_ms\":1,\"max_attempts\":1}\n");
  len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"type\":\"noop\",\"payload\":{}}\n");
  itest_write(path, buf, len);

  pid = spawn_embed(q, NULL, opath, epath);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    snprintf(batch, sizeof(batch), "%.26s", out);
    free(out);
  }
  itest_wait_batch(c, q, batch, 60);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, 22);
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, 2);

  all = results(q, batch);
  CHECK_INT(cJSON_GetArraySize(all), ==, 24);
  cJSON_ArrayForEach(r, all) {
    char want[32];

    if (++i > 20)
      break;
    snprintf(want, sizeof(want), "ITEM %d", i);
    CHECK_STR(jstr(r, "status"), "succeeded");
    CHECK_STR(jstr(r, "result"), want);
    CHECK(jstr(r, "worker") != NULL);
  }
  CHECK_STR(jstr(cJSON_GetArrayItem(all, 20), "result"), "TAB\tHERE, CAF\xc3\xa9 \"Q\"");
  CHECK_STR(jstr(cJSON_GetArrayItem(all, 21), "status"), "failed");
  CHECK_CONTAINS(jstr(cJSON_GetArrayItem(all, 21), "error"), "the payload must be a JSON string");
  CHECK_STR(jstr(cJSON_GetArrayItem(all, 22), "status"), "failed");
  CHECK_CONTAINS(jstr(cJSON_GetArrayItem(all, 22), "error"), "timed out after 1 ms");
  CHECK_STR(jstr(cJSON_GetArrayItem(all, 23), "status"), "succeeded");
  cJSON_Delete(all);

  kill(pid, SIGTERM);
  CHECK_INT(wait_exit(pid, 30, epath), ==, 0);
  out = itest_read(opath, NULL);
  CHECK_CONTAINS(out, "embed: 21 items done (1 rejected, 1 cancelled)");
  free(out);
  out = itest_read(epath, NULL);
  CHECK_CONTAINS(out, "serving queue");
  CHECK_CONTAINS(out, "uppercase");
  free(out);
  redisFree(c);
}

/* Bad usage exits 2; an unreachable Redis exits 1 with the cause. */
static void test_embed_errors(void) {
  const char *q = itest_queue("embede");
  char opath[600];
  char epath[600];
  char *err;
  pid_t pid;

  snprintf(opath, sizeof(opath), "%s", itest_path("embede.out"));
  snprintf(epath, sizeof(epath), "%s", itest_path("embede.err"));
  pid = spawn_embed(q, "zero", opath, epath);
  CHECK_INT(wait_exit(pid, 10, epath), ==, 2);
  err = itest_read(epath, NULL);
  CHECK_CONTAINS(err, "N must be an integer");
  free(err);

  {
    const char *argv[] = {embed_bin(), "unix:///nonexistent/sluice.sock", q, NULL};

    pid = fork();
    if (pid == 0) {
      int fe = open(epath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
      int fo = open("/dev/null", O_WRONLY);

      dup2(fo, 1);
      dup2(fe, 2);
      execv(argv[0], (char *const *)argv);
      _exit(127);
    }
  }
  CHECK_INT(wait_exit(pid, 30, epath), ==, 1);
  err = itest_read(epath, NULL);
  CHECK_CONTAINS(err, "embed: ");
  CHECK_CONTAINS(err, "nonexistent");
  free(err);
}

static const sl_test tests[] = {
    {"embed_submits_and_runs", test_embed_submits_and_runs, 90},
    {"embed_as_worker", test_embed_as_worker, 90},
    {"embed_errors", test_embed_errors, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
