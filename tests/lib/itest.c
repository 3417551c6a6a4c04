/* Integration test helpers; see itest.h. */
#include "itest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sluice/sluice.h>

#include "devredis.h"

static sl_devredis redis;
static char queue_buf[128];
static char path_buf[8][512]; /* rotating, so a few paths can be held at once */
static int path_next;
static char tmpdir[320];

/* The stderr file of each process itest_spawn started, for failure messages
 * (a ring: the oldest entries are forgotten). */
#define SPAWNED_MAX 256
static struct {
  pid_t pid;      /* 0: free */
  char err[600];  /* its stderr file; "" for /dev/null or unknown */
} spawned[SPAWNED_MAX];
static int spawned_next;
static int spawn_seq; /* numbers the default stderr files */

static void setup(void) {
  char err[512];

  if (sl_devredis_start(&redis, NULL, err, sizeof(err)) != 0) {
    fprintf(stderr, "cannot start the test redis-server: %s\n", err);
    exit(1);
  }
  setenv("SLUICE_TEST_REDIS", redis.url, 1);
  unsetenv("SLUICE_REDIS");
  itest_load_library(redis.url);
}

void itest_load_library(const char *url) {
  char err[512];

  /* the harness is the operator of its Redis: it loads the library */
  if (sl_library_load(url, err, sizeof(err)) != 0) {
    fprintf(stderr, "cannot load the sluice function library: %s\n", err);
    exit(1);
  }
}

static void teardown(void) {
  sl_devredis_stop(&redis);
}

void itest_use_redis(void) {
  sl_test_setup = setup;
  sl_test_teardown = teardown;
}

const char *itest_url(void) {
  return redis.url;
}

const char *itest_sock(void) {
  return redis.sock;
}

long long itest_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

redisContext *itest_conn(void) {
  redisContext *c = redisConnectUnix(redis.sock);

  if (c == NULL || c->err)
    sl_test_fail(__FILE__, __LINE__, "cannot connect to the test redis: %s", c ? c->errstr : "oom");
  return c;
}

redisReply *itest_cmd(redisContext *c, const char *fmt, ...) {
  va_list ap;
  redisReply *r;

  va_start(ap, fmt);
  r = redisvCommand(c, fmt, ap);
  va_end(ap);
  if (r == NULL)
    sl_test_fail(__FILE__, __LINE__, "redis command %s failed: %s", fmt, c->errstr);
  return r;
}

const char *itest_queue(const char *name) {
  snprintf(queue_buf, sizeof(queue_buf), "t-%s-%d", name, (int)getpid());
  return queue_buf;
}

const char *itest_path(const char *name) {
  if (tmpdir[0] == '\0' || access(tmpdir, F_OK) != 0) {
    snprintf(tmpdir, sizeof(tmpdir), "%s/files-%d", redis.dir, (int)getpid());
    mkdir(tmpdir, 0700);
  }
  path_next = (path_next + 1) % 8;
  snprintf(path_buf[path_next], sizeof(path_buf[path_next]), "%s/%s", tmpdir, name);
  return path_buf[path_next];
}

void itest_write(const char *path, const char *data, size_t len) {
  FILE *f = fopen(path, "wb");

  if (f == NULL || fwrite(data, 1, len, f) != len)
    sl_test_fail(__FILE__, __LINE__, "cannot write %s", path);
  fclose(f);
}

char *itest_read(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t n = 0;
  size_t cap = 0;
  size_t r;

  if (f == NULL)
    return NULL;
  do {
    if (n + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      buf = realloc(buf, cap);
    }
    r = fread(buf + n, 1, cap - n - 1, f);
    n += r;
  } while (r > 0);
  fclose(f);
  buf[n] = '\0';
  if (len != NULL)
    *len = n;
  return buf;
}

pid_t itest_spawn(const char *const *args, const char *out, const char *err) {
  return itest_spawn_env(args, NULL, out, err);
}

/* Starts SLUICE_BIN with args, env changes and, when soft > 0, the
 * descriptor limits soft/hard. */
static pid_t spawn(const char *const *args, const char *const *env, long soft, long hard, const char *out,
                   const char *err) {
  const char *argv[64];
  char errfile[600];
  pid_t pid;
  int k = 0;

  argv[k++] = SLUICE_BIN;
  for (int i = 0; args[i] != NULL && k < 63; i++)
    argv[k++] = args[i];
  argv[k] = NULL;
  if (err != NULL) {
    snprintf(errfile, sizeof(errfile), "%s", err);
  } else {
    char name[64];

    snprintf(name, sizeof(name), "spawn-%d-%s.err", ++spawn_seq, args[0] != NULL ? args[0] : "sluice");
    snprintf(errfile, sizeof(errfile), "%s", itest_path(name));
  }
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0)
    sl_test_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
  if (pid == 0) {
    int fo = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fe = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fi = open("/dev/null", O_RDONLY);

    dup2(fi, 0);
    dup2(fo, 1);
    dup2(fe, 2);
    for (int i = 0; env != NULL && env[i] != NULL; i++) {
      const char *eq = strchr(env[i], '=');
      char name[256];

      snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - env[i]) : (int)strlen(env[i]), env[i]);
      if (eq != NULL)
        setenv(name, eq + 1, 1);
      else
        unsetenv(name);
    }
    if (soft > 0) {
      struct rlimit rl = {(rlim_t)soft, (rlim_t)hard};

      if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        dprintf(2, "setrlimit(RLIMIT_NOFILE, %ld, %ld): %s\n", soft, hard, strerror(errno));
        _exit(126);
      }
    }
    execv(SLUICE_BIN, (char *const *)argv);
    _exit(127);
  }
  spawned[spawned_next].pid = pid;
  snprintf(spawned[spawned_next].err, sizeof(spawned[spawned_next].err), "%s",
           strcmp(errfile, "/dev/null") == 0 ? "" : errfile);
  spawned_next = (spawned_next + 1) % SPAWNED_MAX;
  return pid;
}

pid_t itest_spawn_env(const char *const *args, const char *const *env, const char *out, const char *err) {
  return spawn(args, env, 0, 0, out, err);
}

pid_t itest_spawn_nofile(const char *const *args, long soft, long hard, const char *out, const char *err) {
  return spawn(args, NULL, soft, hard, out, err);
}

int itest_fds_exhaust(int *fds, int max) {
  int n = 0;

  while (n < max) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    if (fd < 0 && errno == EMFILE)
      return n;
    if (fd < 0)
      sl_test_fail(__FILE__, __LINE__, "open /dev/null: %s", strerror(errno));
    fds[n++] = fd;
  }
  sl_test_fail(__FILE__, __LINE__, "still not out of descriptors after opening %d", max);
}

void itest_fds_release(int *fds, int n) {
  for (int i = 0; i < n; i++)
    close(fds[i]);
}

const char *itest_errpath(pid_t pid) {
  for (int i = 0; i < SPAWNED_MAX; i++) {
    int k = (spawned_next - 1 - i + 2 * SPAWNED_MAX) % SPAWNED_MAX;

    if (spawned[k].pid == pid)
      return spawned[k].err;
  }
  return "";
}

/* The last 2,000 bytes of a process's stderr, for a failure message (free
 * it). */
static char *err_tail(pid_t pid) {
  const char *path = itest_errpath(pid);
  size_t len = 0;
  char *log = path[0] != '\0' ? itest_read(path, &len) : NULL;
  char *out;

  if (log == NULL)
    return strdup("(no stderr kept)");
  if (len > 2000) {
    out = strdup(log + len - 2000);
    free(log);
    return out;
  }
  return log;
}

/* A status for messages: "exit 3", "signal 9". */
static void describe_status(int status, char *buf, size_t len) {
  if (WIFEXITED(status))
    snprintf(buf, len, "exit %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, len, "signal %d", WTERMSIG(status));
  else
    snprintf(buf, len, "status 0x%x", status);
}

int itest_run(const char *const *args, char **out, char **err, int timeout_s) {
  char opath[600];
  char epath[600];
  long long t0 = itest_ms();
  pid_t pid;
  int status;

  snprintf(opath, sizeof(opath), "%s", itest_path("run.out"));
  snprintf(epath, sizeof(epath), "%s", itest_path("run.err"));
  pid = itest_spawn(args, opath, epath);
  for (;;) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      break;
    if (itest_ms() - t0 > timeout_s * 1000LL) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      sl_test_fail(__FILE__, __LINE__, "sluice %s did not finish within %d s", args[0], timeout_s);
    }
    usleep(5000);
  }
  if (out != NULL)
    *out = itest_read(opath, NULL);
  if (err != NULL)
    *err = itest_read(epath, NULL);
  if (WIFSIGNALED(status))
    sl_test_fail(__FILE__, __LINE__, "sluice %s was killed by signal %d", args[0], WTERMSIG(status));
  return WEXITSTATUS(status);
}

pid_t itest_worker(const char *q, int concurrency) {
  char conc[16];
  const char *args[] = {"worker", "--redis", redis.url, "--queue", q, "--concurrency", conc, "--block-ms", "500",
                        "--quiet", NULL};

  snprintf(conc, sizeof(conc), "%d", concurrency);
  return itest_spawn(args, NULL, NULL);
}

/* 1 when process pid has a handler for SIGTERM installed, per the SigCgt
 * mask of /proc/PID/status; -1 when that cannot be read (it is gone). */
static int catches_sigterm(pid_t pid) {
  char path[64];
  char *st;
  const char *p;
  unsigned long long mask;

  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  st = itest_read(path, NULL);
  p = st != NULL ? strstr(st, "\nSigCgt:") : NULL;
  if (p == NULL) {
    free(st);
    return -1;
  }
  mask = strtoull(p + 8, NULL, 16);
  free(st);
  return (mask >> (SIGTERM - 1)) & 1;
}

int itest_stop_at(const char *file, int line, pid_t pid) {
  long long t0 = itest_ms();
  int status = 0;

  /* A process that has not installed its handler yet would die of the
   * default action: wait for the handler (or for the process to end). */
  for (;;) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      goto ended;
    if (catches_sigterm(pid) != 0)
      break; /* 1, or -1: gone, waitpid tells */
    if (itest_ms() - t0 > 10000) {
      char *log = err_tail(pid);

      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      sl_test_fail(file, line, "process %d never installed a SIGTERM handler within 10 s; its stderr:\n%s",
                   (int)pid, log);
    }
    usleep(2000);
  }
  kill(pid, SIGTERM);
  t0 = itest_ms();
  while (waitpid(pid, &status, WNOHANG) != pid) {
    if (itest_ms() - t0 > 60000) {
      char *log = err_tail(pid);

      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      sl_test_fail(file, line, "process %d did not stop within 60 s of SIGTERM; its stderr:\n%s", (int)pid, log);
    }
    usleep(2000);
  }
ended:
  /* A worker stops gracefully on SIGTERM; dying of a signal (a crash, or a
   * sanitizer's abort on an error or a leak) fails the test. */
  if (WIFSIGNALED(status)) {
    char *log = err_tail(pid);

    sl_test_fail(file, line, "process %d died of signal %d instead of stopping; its stderr:\n%s", (int)pid,
                 WTERMSIG(status), log);
  }
  return status;
}

void itest_stop_code_at(const char *file, int line, pid_t pid, int code) {
  int status = itest_stop_at(file, line, pid);

  if (!WIFEXITED(status) || WEXITSTATUS(status) != code) {
    char how[32];
    char *log = err_tail(pid);

    describe_status(status, how, sizeof(how));
    sl_test_fail(file, line, "process %d ended with %s, expected exit %d; its stderr:\n%s", (int)pid, how, code,
                 log);
  }
}

void itest_exit_code_at(const char *file, int line, pid_t pid, int code, int timeout_ms) {
  long long t0 = itest_ms();
  int status = 0;
  char how[32];

  while (waitpid(pid, &status, WNOHANG) != pid) {
    if (itest_ms() - t0 > timeout_ms) {
      char *log = err_tail(pid);

      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      sl_test_fail(file, line, "process %d did not exit within %d ms; its stderr:\n%s", (int)pid, timeout_ms,
                   log);
    }
    usleep(2000);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == code)
    return;
  describe_status(status, how, sizeof(how));
  sl_test_fail(file, line, "process %d ended with %s, expected exit %d; its stderr:\n%s", (int)pid, how, code,
               err_tail(pid));
}

/* The worker id of pid in queue q's fleet index (a member "HOST:PID:XXXX"
 * of sluice:{Q}:workers), copied into id; 0 when it is not there. */
static int find_registered(redisContext *c, const char *q, pid_t pid, char *id, size_t idlen) {
  redisReply *r = itest_cmd(c, "ZRANGE sluice:{%s}:workers 0 -1", q);
  char mark[32];
  int found = 0;

  snprintf(mark, sizeof(mark), ":%d:", (int)pid);
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && !found; i++) {
    if (strstr(r->element[i]->str, mark) != NULL) {
      if (id != NULL)
        snprintf(id, idlen, "%s", r->element[i]->str);
      found = 1;
    }
  }
  freeReplyObject(r);
  return found;
}

void itest_wait_worker_at(const char *file, int line, redisContext *c, const char *q, pid_t pid, char *id,
                          size_t idlen, int timeout_ms) {
  long long t0 = itest_ms();
  int status;

  for (;;) {
    if (find_registered(c, q, pid, id, idlen))
      return;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      char how[32];

      describe_status(status, how, sizeof(how));
      sl_test_fail(file, line, "worker %d ended (%s) before it joined queue %s; its stderr:\n%s", (int)pid, how, q,
                   err_tail(pid));
    }
    if (itest_ms() - t0 > timeout_ms)
      sl_test_fail(file, line, "worker %d did not join queue %s within %d ms; its stderr:\n%s", (int)pid, q,
                   timeout_ms, err_tail(pid));
    usleep(10000);
  }
}

/* Pending entries of queue q's streams: of one consumer, or all (NULL). */
static long long pending(redisContext *c, const char *q, const char *consumer) {
  static const char *const prio[3] = {"high", "normal", "low"};
  long long n = 0;

  for (int i = 0; i < 3; i++) {
    redisReply *r = itest_cmd(c, "XPENDING sluice:{%s}:s:%s workers", q, prio[i]);

    if (r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
      if (consumer == NULL) {
        n += r->element[0]->integer;
      } else if (r->element[3]->type == REDIS_REPLY_ARRAY) {
        for (size_t k = 0; k < r->element[3]->elements; k++) {
          const redisReply *e = r->element[3]->element[k];

          if (strcmp(e->element[0]->str, consumer) == 0)
            n += strtoll(e->element[1]->str, NULL, 10);
        }
      }
    }
    freeReplyObject(r);
  }
  return n;
}

long long itest_pending_of(redisContext *c, const char *q, const char *consumer) {
  return pending(c, q, consumer);
}

long long itest_pending(redisContext *c, const char *q) {
  return pending(c, q, NULL);
}

long long itest_worker_running(redisContext *c, const char *q, const char *id) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:w:%s info", q, id);
  long long n = -1;

  if (r->type == REDIS_REPLY_STRING) {
    const char *p = strstr(r->str, "\"running\":");

    if (p != NULL)
      n = strtoll(p + 10, NULL, 10);
  }
  freeReplyObject(r);
  return n;
}

char *itest_wait_file_at(const char *file, int line, const char *path, const char *needle, int timeout_ms) {
  long long t0 = itest_ms();

  for (;;) {
    char *text = itest_read(path, NULL);

    if (text != NULL && strstr(text, needle) != NULL)
      return text;
    if (itest_ms() - t0 > timeout_ms)
      sl_test_fail(file, line, "waited %d ms for \"%s\" in %s, in vain; it holds:\n%s", timeout_ms, needle, path,
                   text != NULL ? text : "(no file)");
    free(text);
    usleep(10000);
  }
}

int itest_count(const char *hay, const char *needle) {
  int n = 0;

  for (const char *p = hay; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle))
    n++;
  return n;
}

long long itest_batch_num(redisContext *c, const char *q, const char *batch, const char *field) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s %s", q, batch, field);
  long long v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;

  freeReplyObject(r);
  return v;
}

void itest_wait_batch_at(const char *file, int line, redisContext *c, const char *q, const char *batch, int timeout_s) {
  long long t0 = itest_ms();

  for (;;) {
    redisReply *r = itest_cmd(c, "HMGET sluice:{%s}:b:%s whole done total status", q, batch);
    int ended = r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "1") == 0 &&
                atoll(r->element[1]->str) >= atoll(r->element[2]->str);

    if (itest_ms() - t0 > timeout_s * 1000LL)
      sl_test_fail(file, line, "batch %s did not end within %d s (done %s of %s, status %s)", batch,
                   timeout_s, r->element[1]->str ? r->element[1]->str : "?",
                   r->element[2]->str ? r->element[2]->str : "?", r->element[3]->str ? r->element[3]->str : "?");
    freeReplyObject(r);
    if (ended)
      return;
    usleep(20000);
  }
}

const char *itest_submit(const char *q, const char *items, size_t len, const char *const *opts) {
  static char batch[64];
  const char *path = itest_path("submit.jsonl");
  const char *args[24] = {"submit", "--redis", itest_url(), "--queue", q, path};
  size_t k = 6;
  char *out = NULL;
  char *err = NULL;

  for (size_t i = 0; opts != NULL && opts[i] != NULL && k < 23; i++)
    args[k++] = opts[i];
  args[k] = NULL;
  itest_write(path, items, len);
  if (itest_run(args, &out, &err, 120) != 0)
    sl_test_fail(__FILE__, __LINE__, "submit failed: %s", err != NULL ? err : "");
  snprintf(batch, sizeof(batch), "%.26s", out != NULL ? out : "");
  free(out);
  free(err);
  return batch;
}

static long long zcard(redisContext *c, const char *q, const char *key) {
  redisReply *r = itest_cmd(c, "ZCARD sluice:{%s}:%s", q, key);
  long long n = r->integer;

  freeReplyObject(r);
  return n;
}

void itest_check_drained(redisContext *c, const char *q) {
  static const char *const s[3] = {"high", "normal", "low"};
  redisReply *r;

  for (int i = 0; i < 3; i++) {
    r = itest_cmd(c, "XLEN sluice:{%s}:s:%s", q, s[i]);
    CHECK_INT(r->integer, ==, 0);
    freeReplyObject(r);
    r = itest_cmd(c, "XPENDING sluice:{%s}:s:%s workers", q, s[i]);
    CHECK(r->type == REDIS_REPLY_ARRAY && r->elements == 4);
    CHECK_INT(r->element[0]->integer, ==, 0);
    freeReplyObject(r);
  }
  r = itest_cmd(c, "ZCARD sluice:{%s}:delayed", q);
  CHECK_INT(r->integer, ==, 0);
  freeReplyObject(r);
  /* The claim index holds nothing either. A member whose entry ended
   * outside the functions (a test that deletes entries, as a partial loss
   * would) drops when its claim runs out and a worker's reclaim looks. */
  ITEST_WAIT_INT(zcard(c, q, "claims"), ==, 0, 35000, "the claim index to empty");
  itest_check_status_index(c, q);
}

void itest_check_status_index(redisContext *c, const char *q) {
  static const char *const st[] = {"submitting", "queued", "running", "paused", "completed", "cancelled"};
  redisReply *ids = itest_cmd(c, "ZRANGE sluice:{%s}:batches 0 -1", q);
  long long listed = 0;

  for (size_t i = 0; i < ids->elements; i++) {
    const char *b = ids->element[i]->str;
    redisReply *h = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, b);

    for (size_t k = 0; k < sizeof(st) / sizeof(st[0]); k++) {
      redisReply *z = itest_cmd(c, "ZSCORE sluice:{%s}:bs:%s %s", q, st[k], b);
      int in = z->type == REDIS_REPLY_STRING;
      int want = h->type == REDIS_REPLY_STRING && strcmp(h->str, st[k]) == 0;

      if (in != want)
        sl_test_fail(__FILE__, __LINE__, "batch %s (status %s) is %s the status index bs:%s", b,
                     h->type == REDIS_REPLY_STRING ? h->str : "gone", in ? "in" : "not in", st[k]);
      freeReplyObject(z);
    }
    freeReplyObject(h);
  }
  for (size_t k = 0; k < sizeof(st) / sizeof(st[0]); k++) {
    char key[32];

    snprintf(key, sizeof(key), "bs:%s", st[k]);
    listed += zcard(c, q, key);
  }
  CHECK_INT(listed, <=, (long long)ids->elements);
  freeReplyObject(ids);
}

pid_t itest_wait_pid_file(const char *path, int ms) {
  long long t0 = itest_ms();

  for (;;) {
    size_t len = 0;
    char *s = itest_read(path, &len);
    long v = s != NULL && len > 1 && s[len - 1] == '\n' ? strtol(s, NULL, 10) : 0;

    free(s);
    if (v > 0)
      return (pid_t)v;
    if (itest_ms() - t0 > ms)
      sl_test_fail(__FILE__, __LINE__, "no pid in %s after %d ms", path, ms);
    usleep(10000);
  }
}
