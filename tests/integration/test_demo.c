/*
 * The README's first command: `sluice demo` on a private Redis, to the end
 * and interrupted with Ctrl-C (SIGINT); either way nothing is left behind.
 */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

/* The private Redis dir the demo announced ("Redis at unix://DIR/redis.sock"). */
static void demo_dir(const char *log, char *dir, size_t len) {
  const char *p = strstr(log, "Redis at unix://");
  const char *e;

  CHECK(p != NULL);
  p += strlen("Redis at unix://");
  e = strstr(p, "/redis.sock");
  CHECK(e != NULL && (size_t)(e - p) < len);
  memcpy(dir, p, (size_t)(e - p));
  dir[e - p] = '\0';
}

/* 1 when some process's command line mentions s (a leftover worker or server). */
static int process_mentions(const char *s) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  int found = 0;

  while (d != NULL && (e = readdir(d)) != NULL && !found) {
    char path[300];
    char *cmd;
    size_t len = 0;

    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
    cmd = itest_read(path, &len);
    if (cmd == NULL)
      continue;
    for (size_t i = 0; i + 1 < len; i++) {
      if (cmd[i] == '\0')
        cmd[i] = ' ';
    }
    found = strstr(cmd, s) != NULL;
    free(cmd);
  }
  if (d != NULL)
    closedir(d);
  return found;
}

static void test_demo_runs_and_cleans_up(void) {
  const char *args[] = {"demo", "--items", "120", NULL};
  char *err = NULL;
  char dir[256];
  struct stat st;

  CHECK_INT(itest_run(args, NULL, &err, 120), ==, 0);
  CHECK_CONTAINS(err, "starting a private redis-server");
  CHECK_CONTAINS(err, "completed:");
  CHECK_CONTAINS(err, "120/120");
  CHECK_CONTAINS(err, "private Redis stopped and removed");
  demo_dir(err, dir, sizeof(dir));
  CHECK(stat(dir, &st) != 0);
  CHECK(!process_mentions(dir));
  free(err);
}

static void test_demo_ctrl_c(void) {
  const char *errpath = itest_path("demo.err");
  const char *args[] = {"demo", "--items", "5000", NULL};
  char dir[256];
  char *err;
  pid_t pid = itest_spawn(args, NULL, errpath);
  long long t0 = itest_ms();
  int status;
  struct stat st;

  /* Interrupt once the batch is running. */
  for (;;) {
    err = itest_read(errpath, NULL);
    if (err != NULL && strstr(err, "submitted batch") != NULL)
      break;
    free(err);
    CHECK(itest_ms() - t0 < 30000);
    usleep(20000);
  }
  demo_dir(err, dir, sizeof(dir));
  {
    /* its workers run items: the batch has items done */
    char sock[300];
    char queue[64];
    char batch[64];
    const char *p = strstr(err, "queue \"");
    const char *b = strstr(err, "submitted batch ");
    redisContext *c;

    CHECK(p != NULL && b != NULL);
    snprintf(queue, sizeof(queue), "%.*s", (int)strcspn(p + 7, "\""), p + 7);
    snprintf(batch, sizeof(batch), "%.26s", b + 16);
    snprintf(sock, sizeof(sock), "%s/redis.sock", dir);
    c = redisConnectUnix(sock);
    CHECK(c != NULL && c->err == 0);
    ITEST_WAIT_INT(itest_batch_num(c, queue, batch, "done"), >=, 1, 30000, "the demo's workers to end an item");
    redisFree(c);
  }
  free(err);
  kill(pid, SIGINT);
  t0 = itest_ms();
  while (waitpid(pid, &status, WNOHANG) != pid) {
    CHECK(itest_ms() - t0 < 20000);
    usleep(10000);
  }
  CHECK(WIFEXITED(status));
  CHECK_INT(WEXITSTATUS(status), ==, 130);
  err = itest_read(errpath, NULL);
  CHECK_CONTAINS(err, "interrupted; stopping workers and Redis");
  CHECK_CONTAINS(err, "private Redis stopped and removed");
  free(err);
  CHECK(stat(dir, &st) != 0);
  CHECK(!process_mentions(dir));
}

static const sl_test tests[] = {
    {"demo_runs_and_cleans_up", test_demo_runs_and_cleans_up, 120},
    {"demo_ctrl_c", test_demo_ctrl_c, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
