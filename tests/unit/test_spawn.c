/*
 * spawn.c and forkexec.c: contained children, driven directly on a uv loop
 * of the test (no worker, no Redis): stdin delivered, stdout and stderr as
 * they come, the end callback once with the exit status; a command that
 * cannot be started (SL_EINVAL with its step); an abandon kills the whole
 * process group, background processes included; sl__spawner_kill_now;
 * sl__spawner_free with a child still running reaps it, blocking; and the
 * child has descriptors 0-2 only, even with a descriptor the parent leaks
 * on purpose (opened without close-on-exec).
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include <sluice/sluice.h>

#include "forkexec.h"
#include "harness.h"
#include "itest.h"
#include "spawn.h"

/* ---- A child's record ---- */

typedef struct rec {
  char out[8192];   /* stdout so far */
  size_t outlen;    /* bytes */
  char err[8192];   /* stderr so far */
  size_t errlen;    /* bytes */
  int ends;         /* end callback calls */
  sl_child_end end; /* what it got */
  uint64_t ended_at; /* uv_now at the end callback */
} rec;

static void on_out(void *ud, const char *p, size_t n) {
  rec *r = ud;

  if (n > sizeof(r->out) - 1 - r->outlen)
    n = sizeof(r->out) - 1 - r->outlen;
  memcpy(r->out + r->outlen, p, n);
  r->outlen += n;
  r->out[r->outlen] = '\0';
}

static void on_err(void *ud, const char *p, size_t n) {
  rec *r = ud;

  if (n > sizeof(r->err) - 1 - r->errlen)
    n = sizeof(r->err) - 1 - r->errlen;
  memcpy(r->err + r->errlen, p, n);
  r->errlen += n;
  r->err[r->errlen] = '\0';
}

static uv_loop_t *the_loop;

static void on_end(void *ud, const sl_child_end *e) {
  rec *r = ud;

  r->ends++;
  r->end = *e;
  r->ended_at = uv_now(the_loop);
}

static const sl_child_cb cbs = {on_out, on_err, on_end};
static char *const env[] = {"PATH=/usr/bin:/bin", "LANG=C", NULL};

static sl_child *spawn_ok(sl_spawner *s, const char *cmd, const char *input, rec *r) {
  sl_child *c = NULL;
  char err[256];
  int rc = sl__spawn(s, cmd, env, input, strlen(input), &cbs, r, &c, err, sizeof(err));

  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "sl__spawn %s: %d %s", cmd, rc, err);
  return c;
}

/* Runs the loop until pred holds (checked every turn) or ms pass. */
static void run_until(uv_loop_t *loop, int (*pred)(void *), void *ud, int ms) {
  long long t0 = itest_ms();

  while (!pred(ud)) {
    if (itest_ms() - t0 > ms)
      sl_test_fail(__FILE__, __LINE__, "condition not reached within %d ms", ms);
    uv_run(loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
}

static int ended(void *ud) {
  return ((rec *)ud)->ends > 0;
}

/* Closes the spawner, runs the loop out, frees it; no handle may remain. */
static void teardown(uv_loop_t *loop, sl_spawner *s) {
  sl__spawner_close(s);
  uv_run(loop, UV_RUN_DEFAULT);
  sl__spawner_free(s);
  CHECK_INT(uv_loop_close(loop), ==, 0);
}

/* 1 when pid no longer runs (gone, or a zombie of someone else's). */
static int pid_gone(pid_t pid) {
  char path[64];
  char buf[512];
  FILE *f;
  const char *p;
  char state = '?';

  if (kill(pid, 0) != 0 && errno == ESRCH)
    return 1;
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  f = fopen(path, "r");
  if (f == NULL)
    return 1;
  buf[0] = '\0';
  if (fgets(buf, sizeof(buf), f) == NULL)
    buf[0] = '\0';
  fclose(f);
  p = strrchr(buf, ')');
  if (p != NULL)
    sscanf(p + 1, " %c", &state);
  return state == 'Z' || state == 'X';
}

/* ---- The ordinary life of a child ---- */

/* stdin reaches the command, stdout and stderr come back through their
 * callbacks, and the end callback comes once, after both, with the exit
 * status; the child's environment is exactly the one given. */
static void test_io_and_status(void) {
  uv_loop_t loop;
  sl_spawner *s;
  rec r = {0};

  uv_loop_init(&loop);
  the_loop = &loop;
  s = sl__spawner_new(&loop);
  CHECK(s != NULL);
  spawn_ok(s, "tr a-z A-Z; echo \"to stderr $LANG ${HOME:-nohome}\" >&2; exit 3", "hello, child\n", &r);
  run_until(&loop, ended, &r, 5000);
  CHECK_STR(r.out, "HELLO, CHILD\n");
  CHECK_STR(r.err, "to stderr C nohome\n");
  CHECK_INT(r.ends, ==, 1);
  CHECK(r.end.exited);
  CHECK(WIFEXITED(r.end.status));
  CHECK_INT(WEXITSTATUS(r.end.status), ==, 3);
  CHECK(!r.end.abandoned);
  CHECK(!r.end.output_cut);
  CHECK(!r.end.stuck);
  teardown(&loop, s);
  CHECK_INT(r.ends, ==, 1);
}

/* A large input and output go through the pipes whole (the write does
 * not block the loop; output is read as it comes). */
static void test_large_io(void) {
  uv_loop_t loop;
  sl_spawner *s;
  rec r = {0};
  char *in = malloc(200001);

  memset(in, 'x', 200000);
  in[200000] = '\0';
  uv_loop_init(&loop);
  the_loop = &loop;
  s = sl__spawner_new(&loop);
  spawn_ok(s, "wc -c", in, &r);
  run_until(&loop, ended, &r, 5000);
  CHECK_INT(atol(r.out), ==, 200000);
  CHECK_INT(WEXITSTATUS(r.end.status), ==, 0);
  teardown(&loop, s);
  free(in);
}

/* ---- Commands that cannot start ---- */

/* /bin/sh cannot be made to vanish, but execve can be made to fail for
 * real: a command string past the kernel's limit for one argument
 * (MAX_ARG_STRLEN, 128 KiB) gives E2BIG. sl__spawn does not wait for the
 * child to reach execve: the child ends at once, and the end callback says
 * the set-up failed, with the step and errno. sl__forkexec_report reports
 * a failed set-up step the same way (a stdin descriptor that is not open:
 * dup2) once the child has exited. */
static void test_start_failures(void) {
  uv_loop_t loop;
  sl_spawner *s;
  rec r = {0};
  sl_child *c = NULL;
  char err[256];
  char *cmd = malloc(300001);
  int code = 0;
  int o[2];
  int e[2];
  int sfd = -1;
  int wst = 0;
  pid_t pid;

  memset(cmd, ':', 300000);
  cmd[300000] = '\0';
  uv_loop_init(&loop);
  the_loop = &loop;
  s = sl__spawner_new(&loop);
  CHECK_INT(sl__spawn(s, cmd, env, "", 0, &cbs, &r, &c, err, sizeof(err)), ==, 0);
  run_until(&loop, ended, &r, 5000);
  CHECK_INT(r.ends, ==, 1);
  CHECK_INT(r.end.setup_failed, ==, SL_EINVAL);
  CHECK_STR(r.end.setup_why, "execve /bin/sh: Argument list too long");
  memset(&r, 0, sizeof(r));
  /* the spawner still works */
  spawn_ok(s, "echo fine", "", &r);
  run_until(&loop, ended, &r, 5000);
  CHECK_STR(r.out, "fine\n");
  CHECK_INT(r.ends, ==, 1);
  teardown(&loop, s);
  free(cmd);

  CHECK_INT(pipe2(o, O_CLOEXEC), ==, 0);
  CHECK_INT(pipe2(e, O_CLOEXEC), ==, 0);
  close(o[0]);
  close(e[0]);
  pid = sl__forkexec("echo never", env, 1000, o[1], e[1], &sfd, &code, err, sizeof(err));
  CHECK(pid > 0);
  CHECK(fcntl(o[1], F_GETFD) < 0); /* closed in every case */
  CHECK_INT(waitpid(pid, &wst, 0), ==, pid);
  CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 127);
  CHECK_INT(sl__forkexec_report(sfd, &code, err, sizeof(err)), ==, -1);
  CHECK_INT(code, ==, SL_EINVAL);
  CHECK_STR(err, "dup2: Bad file descriptor");
  close(sfd);
}

/* ---- Ending a child's attempt ---- */

static int has_line(void *ud) {
  return strchr(((rec *)ud)->out, '\n') != NULL;
}

/* An abandon kills the whole group: a background process the command
 * started (its pid printed first) is gone afterwards, and the end callback
 * comes once, marked abandoned. */
static void test_abandon_kills_group(void) {
  uv_loop_t loop;
  sl_spawner *s;
  rec r = {0};
  sl_child *c;
  pid_t bg;
  long long t0;

  uv_loop_init(&loop);
  the_loop = &loop;
  s = sl__spawner_new(&loop);
  c = spawn_ok(s, "sleep 30 & echo $!; sleep 30", "", &r);
  run_until(&loop, has_line, &r, 5000);
  bg = (pid_t)atol(r.out);
  CHECK(bg > 0);
  CHECK(!pid_gone(bg));
  t0 = itest_ms();
  sl__child_abandon(c);
  run_until(&loop, ended, &r, 6000);
  CHECK_INT(itest_ms() - t0, <, 2000);
  CHECK_INT(r.ends, ==, 1);
  CHECK(r.end.abandoned);
  CHECK(pid_gone(bg));
  teardown(&loop, s);
  CHECK_INT(r.ends, ==, 1);
}

/* sl__spawner_kill_now: SIGKILL to every live group at once (before an
 * _exit); the children then end as killed. */
static void test_kill_now(void) {
  uv_loop_t loop;
  sl_spawner *s;
  rec a = {0};
  rec b = {0};

  uv_loop_init(&loop);
  the_loop = &loop;
  s = sl__spawner_new(&loop);
  spawn_ok(s, "echo up; sleep 30", "", &a);
  spawn_ok(s, "echo up; sleep 30", "", &b);
  run_until(&loop, has_line, &a, 5000);
  run_until(&loop, has_line, &b, 5000);
  sl__spawner_kill_now(s);
  run_until(&loop, ended, &a, 6000);
  run_until(&loop, ended, &b, 6000);
  CHECK(a.end.exited && WIFSIGNALED(a.end.status) && WTERMSIG(a.end.status) == SIGKILL);
  CHECK(b.end.exited && WIFSIGNALED(b.end.status) && WTERMSIG(b.end.status) == SIGKILL);
  teardown(&loop, s);
  CHECK_INT(a.ends, ==, 1);
  CHECK_INT(b.ends, ==, 1);
}

/* sl__spawner_free with a child still running (the loop no longer runs):
 * the group is killed and reaped there, blocking, the end callback comes
 * once (abandoned), and the loop closes with no handle left once run. */
static void test_free_with_live_child(void) {
  uv_loop_t loop;
  sl_spawner *s;
  rec r = {0};
  sl_child *c;
  pid_t pid;
  pid_t bg;
  long long t0;

  uv_loop_init(&loop);
  the_loop = &loop;
  s = sl__spawner_new(&loop);
  c = spawn_ok(s, "sleep 30 & echo $!; sleep 30", "", &r);
  (void)c;
  run_until(&loop, has_line, &r, 5000);
  bg = (pid_t)atol(r.out);
  sl__spawner_close(s);
  uv_run(&loop, UV_RUN_NOWAIT);
  pid = getpid();
  t0 = itest_ms();
  sl__spawner_free(s);
  CHECK_INT(itest_ms() - t0, <, 2000);
  CHECK_INT(r.ends, ==, 1);
  CHECK(r.end.abandoned);
  CHECK(pid_gone(bg));
  CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD); /* nothing left to reap */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
  CHECK_INT(getpid(), ==, pid);
}

/* ---- Descriptors ---- */

/* The child has 0, 1 and 2 only: a descriptor the parent opened without
 * close-on-exec (a leak on purpose), one with it, and the loop's own are
 * all closed in the child. The command checks every descriptor number the
 * parent has open. */
static void test_child_descriptors(void) {
  uv_loop_t loop;
  sl_spawner *s;
  rec r = {0};
  int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC: inherited unless closed */
  int leak2 = dup(leak);
  int fine = open("/dev/null", O_RDONLY | O_CLOEXEC);
  char cmd[4096];
  size_t off;
  int n = 0;

  CHECK(leak > 2 && leak2 > 2 && fine > 2);
  CHECK(!(fcntl(leak, F_GETFD) & FD_CLOEXEC));
  uv_loop_init(&loop);
  the_loop = &loop;
  s = sl__spawner_new(&loop);
  off = (size_t)snprintf(cmd, sizeof(cmd), "for n in 0 1 2");
  for (int fd = 3; fd < 1024 && off < sizeof(cmd) - 200; fd++) {
    if (fcntl(fd, F_GETFD) >= 0) {
      off += (size_t)snprintf(cmd + off, sizeof(cmd) - off, " %d", fd);
      n++;
    }
  }
  snprintf(cmd + off, sizeof(cmd) - off, "; do [ -e /proc/$$/fd/$n ] && echo $n; done; echo end");
  CHECK_INT(n, >=, 3);
  spawn_ok(s, cmd, "", &r);
  run_until(&loop, ended, &r, 5000);
  CHECK_STR(r.out, "0\n1\n2\nend\n");
  CHECK_INT(WEXITSTATUS(r.end.status), ==, 0);
  teardown(&loop, s);
  close(leak);
  close(leak2);
  close(fine);
}

static const sl_test tests[] = {
    {"io_and_status", test_io_and_status, 20},
    {"large_io", test_large_io, 20},
    {"start_failures", test_start_failures, 20},
    {"abandon_kills_group", test_abandon_kills_group, 20},
    {"kill_now", test_kill_now, 20},
    {"free_with_live_child", test_free_with_live_child, 20},
    {"child_descriptors", test_child_descriptors, 20},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
