/* The test runner; see harness.h. */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void (*sl_test_setup)(void);
void (*sl_test_teardown)(void);

void sl_test_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;

  fprintf(stderr, "    %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
  _exit(1);
}

static double now_s(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs one test in a child; 0 when it passed. */
static int run_one(const sl_test *t) {
  double t0 = now_s();
  pid_t pid;
  int status = 0;
  int timed_out = 0;

  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  if (pid == 0) {
    setpgid(0, 0); /* its own group, so a timeout kills what it spawned too */
    t->fn();
    fflush(stdout);
    fflush(stderr);
    exit(0); /* exit, not _exit: sanitizers report leaks at exit */
  }
  setpgid(pid, pid);
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);

    if (r == pid)
      break;
    if (r < 0 && errno != EINTR) {
      perror("waitpid");
      return 1;
    }
    if (now_s() - t0 > t->timeout_s) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      timed_out = 1;
      break;
    }
    usleep(10000);
  }
  kill(-pid, SIGKILL); /* anything the test left running */
  if (timed_out) {
    printf("not ok - %s (timed out after %d s)\n", t->name, t->timeout_s);
    return 1;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    printf("ok - %s (%.2f s)\n", t->name, now_s() - t0);
    return 0;
  }
  if (WIFSIGNALED(status))
    printf("not ok - %s (killed by signal %d)\n", t->name, WTERMSIG(status));
  else
    printf("not ok - %s (exit %d)\n", t->name, WEXITSTATUS(status));
  return 1;
}

int sl_test_main(int argc, char **argv, const sl_test *tests) {
  int passed = 0;
  int failed = 0;
  int found = 0;

  setvbuf(stdout, NULL, _IOLBF, 0);
  if (sl_test_setup != NULL)
    sl_test_setup();
  for (const sl_test *t = tests; t->name != NULL; t++) {
    if (argc > 1 && strcmp(argv[1], t->name) != 0)
      continue;
    if (argc == 1 && t->by_name_only) {
      printf("skip - %s (a known bug: run it by name)\n", t->name);
      continue;
    }
    found++;
    if (run_one(t) == 0)
      passed++;
    else
      failed++;
  }
  if (sl_test_teardown != NULL)
    sl_test_teardown();
  if (argc > 1 && found == 0) {
    fprintf(stderr, "no test named %s\n", argv[1]);
    return 2;
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
