/*
 * Starting a command in a contained child: the clone, what the child does
 * before execve, and how a failure of those steps comes back; see spawn.h
 * for the child's whole life.
 *
 * Everything the child needs is prepared before the clone (argv,
 * environment, descriptors, limits), because between clone and execve the
 * child may only make async-signal-safe calls: it shares the worker's
 * memory, the worker has other threads (curl's resolver), and a lock one of
 * them held would never be released in the child. The child writes nothing
 * of the worker's memory but its own stack (a buffer in sl__forkexec's
 * frame: CLONE_VFORK holds the worker until the child calls execve or
 * exits, which is short, since nothing is copied). The child reports the
 * step that failed and its errno on a close-on-exec status pipe, which the
 * worker does not wait on: it reads the pipe once the child has exited
 * (sl__forkexec_report), a report meaning the set-up failed, end of file
 * that execve succeeded. (Sanitizer builds fork, and there the child may
 * wait for a CPU long after the fork returned.)
 */
#define _GNU_SOURCE /* pipe2, O_CLOEXEC, F_DUPFD_CLOEXEC */

#include "forkexec.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sluice/sluice.h>

#include "fdlimit.h"

#define FD_SCAN_MAX (1 << 20) /* descriptors closed one by one without close_range */
#define CHILD_STACK_BYTES (64 * 1024) /* the child's stack between clone and execve */

/* AddressSanitizer's runtime cannot follow a child that runs in its memory
 * on a stack it does not know (its interceptors take the child for the
 * thread that cloned it): sanitizer builds fork instead. */
#if defined(__SANITIZE_ADDRESS__)
#define SL_FORKEXEC_FORK 1
#endif

/* Steps of the child's set-up, reported with errno on the status pipe. */
enum { STEP_SETPGID = 1, STEP_PDEATHSIG, STEP_DUP, STEP_EXEC };

/* What the child needs, all of it prepared before the clone. */
typedef struct child_setup {
  char *argv[4];       /* /bin/sh -c COMMAND NULL */
  char *const *env;    /* its environment, NULL-terminated */
  int in;              /* the read end of its stdin pipe */
  int out;             /* the write end of its stdout pipe */
  int err;             /* the write end of its stderr pipe */
  int status;          /* the write end of the status pipe (close-on-exec) */
  pid_t parent;        /* the worker */
  long fd_max;         /* descriptors closed one by one when close_range fails */
  int restore;         /* set nofile before execve: the worker raised its own limit */
  struct rlimit nofile; /* RLIMIT_NOFILE the worker started with */
} child_setup;

/* In the child: reports the failed step and errno to the parent. */
__attribute__((noreturn)) static void child_fail(int fd, int step) {
  int msg[2];
  ssize_t n;

  msg[0] = step;
  msg[1] = errno;
  n = write(fd, msg, sizeof(msg));
  (void)n;
  _exit(127);
}

/* In the child: fd itself when above 2, else a copy above 2, so that dup2
 * onto 0-2 cannot overwrite a descriptor still needed. */
static int above_stdio(int fd) {
  return fd > 2 ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

/* In the child: closes descriptors lo..hi. */
static void close_fds(unsigned lo, unsigned hi, long fd_max) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, lo, hi, 0) == 0)
    return;
#endif
  for (long fd = (long)lo; fd < fd_max && fd <= (long)hi; fd++)
    close((int)fd);
}

/* The child between clone and execve: async-signal-safe calls only. */
__attribute__((noreturn)) static void child(const child_setup *cs) {
  struct sigaction dfl;
  sigset_t none;
  int st = above_stdio(cs->status);
  int in;
  int out;
  int err;

  if (st < 0)
    _exit(127);
  /* A process group of its own, in the worker's session: setsid would
   * also make it a session, and with the kernel's autogroup scheduling
   * every session gets a CPU share as large as the worker's own, so fifty
   * busy children would starve their worker of the CPU it needs for its
   * heartbeats. */
  if (setpgid(0, 0) < 0)
    child_fail(st, STEP_SETPGID);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
    child_fail(st, STEP_PDEATHSIG);
  if (getppid() != cs->parent)
    _exit(127); /* the worker died before PR_SET_PDEATHSIG took effect */
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int s = 1; s < NSIG; s++) {
    if (s != SIGKILL && s != SIGSTOP)
      sigaction(s, &dfl, NULL); /* fails harmlessly for the libc's reserved ones */
  }
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  in = above_stdio(cs->in);
  out = above_stdio(cs->out);
  err = above_stdio(cs->err);
  if (in < 0 || out < 0 || err < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
    child_fail(st, STEP_DUP);
  if (st > 3)
    close_fds(3, (unsigned)st - 1, cs->fd_max);
  close_fds((unsigned)st + 1, ~0U, cs->fd_max);
  if (cs->restore)
    setrlimit(RLIMIT_NOFILE, &cs->nofile); /* best effort: the raised limit does no harm */
  execve(cs->argv[0], cs->argv, cs->env);
  child_fail(st, STEP_EXEC);
}

static int child_main(void *arg) {
  child(arg);
}

static const char *step_name(int step) {
  switch (step) {
  case STEP_SETPGID: return "setpgid";
  case STEP_PDEATHSIG: return "prctl(PR_SET_PDEATHSIG)";
  case STEP_DUP: return "dup2";
  default: return "execve /bin/sh";
  }
}

static void close_fd(int *fd) {
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
}

pid_t sl__forkexec(const char *command, char *const *env, int in, int out, int err, int *status_fd, int *code,
                   char *why, size_t whylen) {
  static char sh[] = "/bin/sh";
  static char dash_c[] = "-c";
  int st[2] = {-1, -1};
  child_setup cs;
  struct rlimit rl;
  sigset_t all;
  sigset_t old;
  pid_t pid;
  int saved;
  /* the child's stack until execve (this frame waits for that moment) */
  _Alignas(16) char child_stack[CHILD_STACK_BYTES];

  *code = SL_EIO;
  *status_fd = -1;
  if (pipe2(st, O_CLOEXEC | O_NONBLOCK) != 0) {
    saved = errno;
    *code = sl__fd_exhausted(saved) ? SL__ENOFDS : SL_EIO;
    snprintf(why, whylen, "pipe2: %s", sl__fd_strerror(saved));
    close_fd(&in);
    close_fd(&out);
    close_fd(&err);
    return -1;
  }
  cs.argv[0] = sh;
  cs.argv[1] = dash_c;
  cs.argv[2] = (char *)command; /* execve's prototype; not written to */
  cs.argv[3] = NULL;
  cs.env = env;
  cs.in = in;
  cs.out = out;
  cs.err = err;
  cs.status = st[1];
  cs.parent = getpid();
  cs.fd_max = FD_SCAN_MAX;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < FD_SCAN_MAX)
    cs.fd_max = (long)rl.rlim_cur;
  cs.restore = sl__fd_child_limit(&cs.nofile);
  /* Signals stay blocked across the clone, so that none runs the worker's
   * handlers in the child before its dispositions are reset. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  /* clone(CLONE_VM | CLONE_VFORK), as posix_spawn does: the child runs in
   * the worker's memory on a stack of its own until execve, and the worker
   * waits for that moment. A fork would copy the page tables and
   * write-protect every page of the worker, whose next writes then fault
   * one by one (with TLB shootdowns across CPUs): most of a busy exec
   * worker's CPU went there, and a starved worker misses heartbeats. */
#ifdef SL_FORKEXEC_FORK
  (void)child_stack;
  (void)child_main;
  pid = fork();
  if (pid == 0)
    child(&cs);
#else
  pid = clone(child_main, child_stack + sizeof(child_stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &cs);
#endif
  saved = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close_fd(&in);
  close_fd(&out);
  close_fd(&err);
  close_fd(&st[1]);
  if (pid < 0) {
    close_fd(&st[0]);
    snprintf(why, whylen, "clone: %s", strerror(saved));
    return -1;
  }
  *status_fd = st[0];
  return pid;
}

int sl__forkexec_report(int status_fd, int *code, char *why, size_t whylen) {
  int report[2] = {0, 0};
  ssize_t n;

  do {
    n = read(status_fd, report, sizeof(report));
  } while (n < 0 && errno == EINTR);
  if (n <= 0)
    return 0; /* end of file: execve succeeded */
  if (n == (ssize_t)sizeof(report) && sl__fd_exhausted(report[1])) {
    snprintf(why, whylen, "%s: %s", step_name(report[0]), sl__fd_strerror(report[1]));
    *code = SL__ENOFDS; /* the worker's descriptors, not the command, are at fault */
    return -1;
  }
  snprintf(why, whylen, "%s: %s", step_name(report[0]),
           n == (ssize_t)sizeof(report) ? strerror(report[1]) : "no reason given");
  *code = SL_EINVAL;
  return -1;
}
