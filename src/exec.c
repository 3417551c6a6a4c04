/*
 * `exec` items: local programs that the WORKER maps to item types
 * (`sluice worker --exec resize=./resize.sh`); producers choose a type,
 * never a command.
 *
 * The child. Each attempt forks on the loop thread and runs
 * `/bin/sh -c COMMAND`, set up so that nothing of the worker leaks into it:
 *   - its own session and process group (setsid), killed as a whole;
 *   - PR_SET_PDEATHSIG SIGKILL: the direct child dies with the forking
 *     thread (the loop thread), even when the worker is killed with SIGKILL;
 *   - descriptors 0, 1 and 2 only, pipes to the worker: every other one is
 *     closed (hiredis 0.14 and curl's resolver open sockets without
 *     close-on-exec, and they are authenticated to Redis);
 *   - an empty signal mask and default dispositions (the worker ignores
 *     SIGPIPE; a child must not inherit that);
 *   - a clean environment: PATH, HOME, LANG and TZ when the worker has them,
 *     SLUICE_BATCH, SLUICE_ITEM_ID, SLUICE_ITEM_INDEX, SLUICE_ATTEMPT, and
 *     the names the operator granted (--exec-env, sl_worker_exec_env). The
 *     worker's own environment holds secrets (SLUICE_REDIS with its
 *     password, SLUICE_WEBHOOK_SECRET, ${env:NAME} tokens of http items).
 * Between fork and execve the child makes only async-signal-safe calls (the
 * worker has other threads: curl's resolver). A failed step writes {step,
 * errno} to a close-on-exec status pipe, which the parent reads until end of
 * file (execve succeeded) before going on; a command that cannot be started
 * fails its item for good.
 *
 * The attempt. The payload (raw JSON) goes to stdin; stdout, capped at
 * EXEC_STDOUT_MAX, is the result: JSON when it parses, else a string (it
 * must then be valid UTF-8 and fit the results line once escaped), or, for
 * a mapping TYPE+base64=COMMAND, the raw bytes stored as base64. The last
 * EXEC_STDERR_TAIL bytes of stderr are kept for errors and lines
 * "progress N" report progress. Exit 0 succeeds, exit 75 (EX_TEMPFAIL) is a
 * retryable failure, any other code or a signal fails the item for good.
 *
 * No process of an attempt outlives it. A run is live (in the module's
 * registry) from fork until its process group is gone:
 *
 *   ON the direct child's exit (SIGCHLD: waitpid(pid, WNOHANG) per live run,
 *   never waitpid(-1), which would steal an embedding program's children):
 *     1. SIGKILL to the group: background processes it left die with it.
 *     2. Read what is in the pipes until end of file, which comes once every
 *        writer is dead; a writer that left the group (setsid) is waited
 *        for at most EXEC_EOF_WAIT_MS, then the pipes are closed.
 *     3. Every EXEC_TICK_MS: reap the group's members that are our children
 *        (waitpid(-pgid, WNOHANG): the leader, and reparented grandchildren
 *        when the worker is PID 1 or a subreaper), and look whether the group
 *        is gone (kill(-pgid, 0) fails with ESRCH, or only zombies of other
 *        parents are left).
 *     4. Then record the outcome (sl_job_succeed, sl_job_fail*) and close
 *        the handles. Past EXEC_GROUP_WAIT_MS: a warning, and record anyway.
 *   ON the worker giving the attempt up (the job's cancel hook: timeout,
 *   cancel --abort, takeover, drain timeout, stop):
 *     1. SIGKILL to the group; the output pipes are closed.
 *     2.-4. as above; the job is completed (the job API requires it; its
 *        outcome is then ignored) only once the group is gone.
 *   ON the second signal: sl__exec_kill_all sends SIGKILL to every live
 *   group right before the worker's _exit.
 *   ON close (close_all): the SIGCHLD handle is closed; runs still live poll
 *   with their timers. sl_worker_free kills and reaps what is left.
 *
 * Memory: a run is freed when its four handles (three pipes and the timer)
 * are closed, libuv's rule. The module state (struct sl_exec) belongs to
 * the worker and holds the mappings, the granted names, the registry and the
 * SIGCHLD handle.
 */
#define _GNU_SOURCE /* pipe2, O_CLOEXEC, F_DUPFD_CLOEXEC */

#include "exec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "json.h"
#include "log.h"
#include "worker.h"

#define EXEC_STDOUT_MAX (512 * 1024) /* stdout kept as the result, bytes */
#define EXEC_STDERR_TAIL 2048        /* stderr kept for errors, bytes */
#define EX_TEMPFAIL 75               /* sysexits.h: try again later */
#define EXEC_ENV_MAX 64              /* names granted with --exec-env, per worker */
#define EXEC_ENV_NAME_MAX 128        /* one granted name, bytes */
#define EXEC_TICK_MS 10              /* reaping poll after an attempt ended, ms */
#define EXEC_EOF_WAIT_MS 1000        /* output of writers that left the group, ms */
#define EXEC_GROUP_WAIT_MS 5000      /* the group's death after SIGKILL, ms */
#define EXEC_SCAN_EVERY_MS 50        /* /proc scans for a group of zombies, ms */
#define EXEC_FD_SCAN_MAX (1 << 20)   /* descriptors closed one by one without close_range */

/* Steps of the child's set-up, reported with errno on the status pipe. */
enum { STEP_SETSID = 1, STEP_PDEATHSIG, STEP_DUP, STEP_EXEC };

typedef struct exec_cmd {
  char type[SL_NAME_MAX + 1];  /* item type */
  char *command;               /* run with /bin/sh -c */
  int base64;                  /* TYPE+base64=: stdout stored as base64 */
  struct exec_cmd *next;       /* the module's list */
} exec_cmd;

typedef struct run run;

struct sl_exec {
  sl_worker_t *w;              /* owner */
  exec_cmd *cmds;              /* mappings, owned */
  char env[EXEC_ENV_MAX][EXEC_ENV_NAME_MAX + 1]; /* names granted to children */
  int nenv;                    /* used */
  run *runs;                   /* live runs: forked, group not yet gone */
  uv_signal_t sigchld;         /* reaps direct children */
  int sig;                     /* sigchld: 0 not set up, 1 watching, 2 closing, 3 closed */
  int free_on_close;           /* sl__exec_free_all ran while sigchld was open */
};

struct run {
  uv_pipe_t in;                /* the child's stdin, our write end */
  uv_pipe_t out;               /* its stdout, our read end */
  uv_pipe_t err;               /* its stderr, our read end */
  uv_timer_t tick;             /* reaping poll once the attempt ended */
  uv_write_t wreq;             /* the payload write */
  struct sl_exec *x;           /* the module, while in its registry */
  run *next;                   /* registry link */
  run *prev;                   /* registry link */
  sl_job_t *job;               /* until completed */
  char type[SL_NAME_MAX + 1];  /* the item type, for messages */
  int base64;                  /* stdout stored as base64 */
  pid_t pid;                   /* the direct child = its process group id */
  int registered;              /* in x->runs */
  int reaped;                  /* the direct child was waited for */
  int status;                  /* its wait status */
  int status_lost;             /* someone else's waitpid took it */
  int stuck;                   /* it did not end EXEC_GROUP_WAIT_MS after SIGKILL */
  int ending;                  /* the attempt ended: the group got SIGKILL */
  int cancelled;               /* the worker gave the attempt up */
  int group_gone;              /* no process of the group is left (or only zombies) */
  int output_cut;              /* pipes closed before end of file */
  uint64_t ended_at;           /* when the attempt ended, loop ms */
  uint64_t next_scan;          /* the next /proc scan, loop ms */
  int open_pipes;              /* stdout and stderr not yet closed */
  int handles;                 /* handles not yet closed */
  sl_buf stdout_buf;           /* stdout, capped */
  int truncated;               /* stdout went past the cap */
  char tail[EXEC_STDERR_TAIL]; /* the last bytes of stderr (a ring) */
  size_t tail_len;             /* bytes in tail */
  size_t tail_pos;             /* next write position in the ring */
  char line[128];              /* the stderr line being read, for "progress N" */
  size_t line_len;             /* bytes in line */
  char *payload;               /* what goes to stdin */
  size_t payload_len;          /* bytes */
  char **env;                  /* the child's environment, NULL-terminated */
};

static void run_check(run *r, uint64_t now, int sync);
static void on_tick(uv_timer_t *t);

/* ---- Teardown ---- */

static void env_free(char **env) {
  if (env == NULL)
    return;
  for (size_t i = 0; env[i] != NULL; i++)
    sl_free(env[i]);
  sl_free(env);
}

static void run_free(run *r) {
  sl__buf_free(&r->stdout_buf);
  sl_free(r->payload);
  env_free(r->env);
  sl_free(r);
}

static void handle_closed(uv_handle_t *h) {
  run *r = h->data;

  if (--r->handles == 0)
    run_free(r);
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, handle_closed);
}

static void close_pipes(run *r) {
  if (r->open_pipes == 0)
    return;
  r->open_pipes = 0;
  close_handle((uv_handle_t *)&r->out);
  close_handle((uv_handle_t *)&r->err);
}

static void unregister(run *r) {
  struct sl_exec *x = r->x;

  if (!r->registered)
    return;
  r->registered = 0;
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    x->runs = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  r->next = r->prev = NULL;
}

/* The stderr tail as a C string (oldest byte first), control bytes as spaces. */
static void stderr_tail(const run *r, char *out, size_t len) {
  size_t n = r->tail_len < len - 1 ? r->tail_len : len - 1;
  size_t start = (r->tail_pos + EXEC_STDERR_TAIL - r->tail_len) % EXEC_STDERR_TAIL;
  size_t skip = r->tail_len - n;

  for (size_t i = 0; i < n; i++) {
    char c = r->tail[(start + skip + i) % EXEC_STDERR_TAIL];

    out[i] = (unsigned char)c < 0x20 ? ' ' : c;
  }
  out[n] = '\0';
  while (n > 0 && out[n - 1] == ' ')
    out[--n] = '\0';
}

/* Succeeds the job with stdout as text (the mapping has no +base64). */
static void succeed_text(run *r, sl_job_t *j) {
  sl_buf *o = &r->stdout_buf;
  char err[64];
  size_t bad = 0;

  if (r->truncated) {
    o->len = sl__utf8_cut(o->p, o->len);
    o->p[o->len] = '\0';
  }
  if (o->len == 0) {
    sl_job_succeed(j, NULL, 0);
    return;
  }
  bad = sl__utf8_invalid_at(o->p, o->len);
  if (bad < o->len) {
    sl_job_fail_final(j, "exec: stdout is not valid UTF-8 (byte %zu); map the type as %s+base64=COMMAND to keep "
                         "binary output", bad, r->type);
    return;
  }
  if (!r->truncated && sl__json_validate(o->p, o->len, 256, NULL, err, sizeof(err)) == 0) {
    sl_job_succeed(j, o->p, o->len);
    return;
  }
  /* Kept as a JSON string: control bytes grow six-fold when escaped, and
   * the whole results line must fit SL_RESULT_MAX, or recording it fails
   * and the item runs again. */
  if (sl__json_str_len(o->p, o->len) > SL_RESULT_MAX)
    sl_job_fail_final(j, "exec: stdout of %zu bytes is over the %d-byte result limit once stored as a JSON string "
                         "(control bytes are escaped); map the type as %s+base64=COMMAND to keep binary output",
                      o->len, SL_RESULT_MAX, r->type);
  else
    sl_job_succeed(j, o->p, o->len); /* not JSON: stored as a string */
}

/* Records the attempt's outcome (the group is gone) and closes the handles. */
static void run_finish(run *r) {
  sl_job_t *j = r->job;
  char tail[EXEC_STDERR_TAIL + 1];
  int st = r->status;

  unregister(r);
  uv_timer_stop(&r->tick);
  close_pipes(r);
  close_handle((uv_handle_t *)&r->in);
  close_handle((uv_handle_t *)&r->tick);
  r->job = NULL;
  if (j == NULL)
    return;
  if (r->cancelled) {
    sl_job_fail(j, "exec: cancelled (process group killed)"); /* ignored: the worker ended the attempt */
    return;
  }
  stderr_tail(r, tail, sizeof(tail));
  if (r->stuck) {
    sl_job_fail(j, "exec: the command did not end within %d ms of SIGKILL", EXEC_GROUP_WAIT_MS);
  } else if (r->status_lost) {
    sl_job_fail(j, "exec: the exit status of the command was collected elsewhere in this process (waitpid)");
  } else if (WIFSIGNALED(st)) {
    sl_job_fail_final(j, "exec: killed by signal %d%s%s", WTERMSIG(st), tail[0] ? "; stderr: " : "", tail);
  } else if (WEXITSTATUS(st) == EX_TEMPFAIL) {
    sl_job_fail(j, "exec: exit 75 (EX_TEMPFAIL, retryable)%s%s", tail[0] ? "; stderr: " : "", tail);
  } else if (WEXITSTATUS(st) != 0) {
    sl_job_fail_final(j, "exec: exit %d%s%s", WEXITSTATUS(st), tail[0] ? "; stderr: " : "", tail);
  } else if (r->base64) {
    if (r->truncated)
      sl_job_fail_final(j, "exec: stdout is over %d bytes; base64 output is kept whole or not at all",
                        EXEC_STDOUT_MAX);
    else
      sl_job_succeed_base64(j, r->stdout_buf.p ? r->stdout_buf.p : "", r->stdout_buf.len);
  } else {
    /* the usual trailing newline */
    while (r->stdout_buf.len > 0 && strchr(" \t\r\n", r->stdout_buf.p[r->stdout_buf.len - 1]) != NULL)
      r->stdout_buf.p[--r->stdout_buf.len] = '\0';
    succeed_text(r, j);
  }
}

/* ---- The process group ---- */

/* 1 when every process left in group pgid is a zombie of another parent
 * (it can neither run nor write; its parent reaps it in its own time, and
 * until then it keeps the group id from being reused). 0 when a live one is
 * left or /proc cannot tell. A scan reads every /proc/PID/stat: it is done
 * only for a group kill(2) still finds, at most every EXEC_SCAN_EVERY_MS. */
static int group_only_zombies(pid_t pgid) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  int zombies_only = 1;

  if (d == NULL)
    return 0;
  for (e = readdir(d); zombies_only && e != NULL; e = readdir(d)) {
    char path[64];
    char buf[512];
    const char *p;
    ssize_t n;
    int fd;
    char state;
    long pgrp;

    if (e->d_name[0] < '1' || e->d_name[0] > '9')
      continue;
    snprintf(path, sizeof(path), "/proc/%.20s/stat", e->d_name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      continue; /* it just ended */
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
      continue;
    buf[n] = '\0';
    /* "PID (COMM) S PPID PGRP ...": COMM may hold anything, so from the last ')' */
    p = strrchr(buf, ')');
    if (p == NULL || sscanf(p + 1, " %c %*d %ld", &state, &pgrp) != 2)
      continue;
    if (pgrp == (long)pgid && state != 'Z' && state != 'X')
      zombies_only = 0;
  }
  closedir(d);
  return zombies_only;
}

/* Waits for the group's members that are our children, the leader first. */
static void reap(run *r) {
  pid_t p;
  int st;

  if (!r->reaped) {
    p = waitpid(r->pid, &st, WNOHANG);
    if (p == r->pid) {
      r->reaped = 1;
      r->status = st;
    } else if (p < 0 && errno == ECHILD) {
      r->reaped = 1;
      r->status_lost = 1;
    }
  }
  if (!r->ending)
    return;
  /* Grandchildren reparented to us (we are PID 1 or a subreaper). */
  for (p = waitpid(-r->pid, &st, WNOHANG); p > 0; p = waitpid(-r->pid, &st, WNOHANG)) {
    if (p == r->pid) {
      r->reaped = 1;
      r->status = st;
    }
  }
}

/* The attempt ends: the whole group gets SIGKILL, whether or not the
 * direct child is alive. */
static void begin_end(run *r, uint64_t now) {
  if (r->ending)
    return;
  r->ending = 1;
  r->ended_at = now;
  r->next_scan = now + EXEC_TICK_MS;
  kill(-r->pid, SIGKILL);
  if (!uv_is_closing((uv_handle_t *)&r->tick))
    uv_timer_start(&r->tick, on_tick, EXEC_TICK_MS, EXEC_TICK_MS);
}

/* Looks at a run: its direct child, and once the attempt ended, its
 * group and pipes; records the outcome when all is over. With sync set
 * (sl_worker_free, the loop is not running) the pipes are not read. */
static void run_check(run *r, uint64_t now, int sync) {
  uint64_t elapsed;

  reap(r);
  if (r->reaped && !r->ending)
    begin_end(r, now);
  if (!r->ending)
    return;
  reap(r);
  elapsed = now > r->ended_at ? now - r->ended_at : 0; /* loop time and uv_hrtime may differ by a tick */
  if (!r->group_gone) {
    if (kill(-r->pid, 0) != 0 && errno == ESRCH) {
      r->group_gone = 1;
    } else if (now >= r->next_scan) {
      r->next_scan = now + EXEC_SCAN_EVERY_MS;
      r->group_gone = r->reaped && group_only_zombies(r->pid);
    }
  }
  if (r->open_pipes > 0 && (sync || elapsed >= EXEC_EOF_WAIT_MS)) {
    if (!sync && !r->cancelled)
      sl__log_warn("exec: item %s of batch %s: its stdout or stderr is still open %d ms after the command ended "
                   "(a process left its process group); using the output read so far",
                   r->job ? r->job->idx : "?", r->job ? sl_job_batch(r->job) : "?", EXEC_EOF_WAIT_MS);
    r->output_cut = 1;
    close_pipes(r);
  }
  if (!r->group_gone && elapsed >= EXEC_GROUP_WAIT_MS) {
    sl__log_warn("exec: process group %d (type %s) still has processes %d ms after SIGKILL; recording the "
                 "outcome anyway", (int)r->pid, r->type, EXEC_GROUP_WAIT_MS);
    if (!r->reaped) {
      r->reaped = 1; /* never waited for: a zombie of ours from now on, at worst */
      r->stuck = 1;
    }
    r->group_gone = 1;
  }
  if (r->group_gone && r->reaped && r->open_pipes == 0)
    run_finish(r);
}

/* ---- Callbacks ---- */

static void on_tick(uv_timer_t *t) {
  run *r = t->data;

  run_check(r, uv_now(t->loop), 0);
}

static void on_sigchld(uv_signal_t *h, int signum) {
  struct sl_exec *x = h->data;
  uint64_t now = uv_now(h->loop);

  (void)signum;
  for (run *r = x->runs; r != NULL;) {
    run *next = r->next; /* r may finish and leave the registry */

    run_check(r, now, 0);
    r = next;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = sl_malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

/* End of file (or an error) on stdout or stderr. */
static void pipe_done(run *r, uv_stream_t *s) {
  uv_read_stop(s);
  if (r->open_pipes > 0 && !uv_is_closing((uv_handle_t *)s)) {
    r->open_pipes--;
    close_handle((uv_handle_t *)s);
  }
  if (r->ending)
    run_check(r, uv_now(s->loop), 0);
}

static void on_stdout(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  run *r = s->data;

  if (n > 0) {
    size_t room = EXEC_STDOUT_MAX - r->stdout_buf.len;

    if ((size_t)n > room)
      r->truncated = 1;
    if (room > 0)
      sl__buf_append(&r->stdout_buf, buf->base, (size_t)n < room ? (size_t)n : room);
  }
  sl_free(buf->base);
  if (n < 0)
    pipe_done(r, s);
}

static void on_stderr(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  run *r = s->data;

  for (ssize_t i = 0; i < n; i++) {
    char ch = buf->base[i];

    /* "progress N" lines report the item's progress */
    if (ch == '\n') {
      int pct;

      r->line[r->line_len] = '\0';
      if (r->job != NULL && !r->cancelled && sscanf(r->line, "progress %d", &pct) == 1)
        sl_job_progress(r->job, pct);
      r->line_len = 0;
    } else if (r->line_len < sizeof(r->line) - 1) {
      r->line[r->line_len++] = ch;
    }
    r->tail[r->tail_pos] = ch;
    r->tail_pos = (r->tail_pos + 1) % EXEC_STDERR_TAIL;
    if (r->tail_len < EXEC_STDERR_TAIL)
      r->tail_len++;
  }
  sl_free(buf->base);
  if (n < 0)
    pipe_done(r, s);
}

static void on_written(uv_write_t *req, int status) {
  run *r = req->data;

  (void)status; /* a child that does not read its stdin is its own business */
  close_handle((uv_handle_t *)&r->in);
}

/* The worker gave the attempt up (timeout, abort, takeover, drain, stop):
 * kill the group; the job is completed once the group is gone. */
static void on_cancel(sl_job_t *j, void *ud) {
  run *r = ud;

  uint64_t now = uv_now(r->tick.loop);

  (void)j;
  r->cancelled = 1;
  close_pipes(r);
  close_handle((uv_handle_t *)&r->in);
  begin_end(r, now);
  run_check(r, now, 0);
}

/* ---- Start ---- */

/* What the child needs, all of it prepared before fork. */
typedef struct child_setup {
  char *argv[4];       /* /bin/sh -c COMMAND NULL */
  char **env;          /* its environment, NULL-terminated */
  int in;              /* the read end of its stdin pipe */
  int out;             /* the write end of its stdout pipe */
  int err;             /* the write end of its stderr pipe */
  int status;          /* the write end of the status pipe (close-on-exec) */
  pid_t parent;        /* the worker */
  long fd_max;         /* descriptors closed one by one when close_range fails */
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

/* The child between fork and execve: async-signal-safe calls only. */
__attribute__((noreturn)) static void child(const child_setup *cs) {
  struct sigaction dfl;
  sigset_t none;
  int st = above_stdio(cs->status);
  int in;
  int out;
  int err;

  if (st < 0)
    _exit(127);
  if (setsid() < 0)
    child_fail(st, STEP_SETSID);
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
  execve(cs->argv[0], cs->argv, cs->env);
  child_fail(st, STEP_EXEC);
}

/* Appends a copy of "NAME=VALUE" at env[*k] (room is the caller's). */
static int env_put(char **env, size_t *k, const char *name, const char *val) {
  size_t nl = strlen(name);
  size_t vl = strlen(val);
  char *s = sl_malloc(nl + vl + 2);

  if (s == NULL)
    return SL_ENOMEM;
  memcpy(s, name, nl);
  s[nl] = '=';
  memcpy(s + nl + 1, val, vl + 1);
  env[(*k)++] = s;
  return 0;
}

static const char *const env_kept[] = {"PATH", "HOME", "LANG", "TZ"}; /* copied when the worker has them */

/* The child's whole environment; NULL on OOM. */
static char **child_env(const struct sl_exec *x, const sl_job_t *j) {
  size_t cap = sizeof(env_kept) / sizeof(env_kept[0]) + 4 + (size_t)x->nenv + 1;
  char **env = sl_calloc(cap, sizeof(char *));
  size_t k = 0;
  char num[32];
  sl_buf id;
  int rc = 0;

  if (env == NULL)
    return NULL;
  for (size_t i = 0; rc == 0 && i < sizeof(env_kept) / sizeof(env_kept[0]); i++) {
    const char *v = getenv(env_kept[i]);

    if (v != NULL)
      rc = env_put(env, &k, env_kept[i], v);
  }
  if (rc == 0)
    rc = env_put(env, &k, "SLUICE_BATCH", sl_job_batch(j));
  if (rc == 0) {
    sl__buf_init(&id, 4 * SL_ITEM_MAX_ID + 32);
    rc = j->id_tok != NULL ? sl__json_unescape(j->id_tok, j->id_toklen, &id) : sl__buf_puts(&id, j->idx);
    if (rc == 0)
      rc = env_put(env, &k, "SLUICE_ITEM_ID", id.p != NULL ? id.p : "");
    sl__buf_free(&id);
  }
  if (rc == 0)
    rc = env_put(env, &k, "SLUICE_ITEM_INDEX", j->idx);
  snprintf(num, sizeof(num), "%d", sl_job_attempt(j));
  if (rc == 0)
    rc = env_put(env, &k, "SLUICE_ATTEMPT", num);
  for (int i = 0; rc == 0 && i < x->nenv; i++) {
    const char *v = getenv(x->env[i]);

    if (v != NULL)
      rc = env_put(env, &k, x->env[i], v);
  }
  if (rc != 0) {
    env_free(env);
    return NULL;
  }
  return env;
}

static void sig_closed(uv_handle_t *h) {
  struct sl_exec *x = h->data;

  x->sig = 3;
  if (x->free_on_close)
    sl_free(x);
}

/* Starts the module's SIGCHLD handle on the first run; 0 or a uv error. */
static int watch_children(struct sl_exec *x, uv_loop_t *loop) {
  int rc;

  if (x->sig == 1)
    return 0;
  if (x->sig != 0)
    return UV_ECANCELED; /* the worker is closing */
  rc = uv_signal_init(loop, &x->sigchld);
  if (rc != 0)
    return rc;
  x->sigchld.data = x;
  x->sig = 1;
  rc = uv_signal_start(&x->sigchld, on_sigchld, SIGCHLD);
  if (rc != 0) {
    uv_close((uv_handle_t *)&x->sigchld, sig_closed);
    x->sig = 2;
  }
  return rc;
}

static const char *step_name(int step) {
  switch (step) {
  case STEP_SETSID: return "setsid";
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

/*
 * The handler of every exec mapping (ud: its exec_cmd): starts the command
 * for job j. Everything the child needs is allocated before fork; the
 * parent then waits (blocking, briefly) on the status pipe until execve
 * succeeded or the child reported the step that failed. On success the run
 * joins the registry and owns the job until run_finish completes it. A
 * failure before fork (memory, descriptors, fork itself) fails the job as
 * retryable; a child that could not execve fails it for good.
 */
static void exec_start(sl_job_t *j, void *ud) {
  static char sh[] = "/bin/sh";
  static char dash_c[] = "-c";
  const exec_cmd *cmd = ud;
  struct sl_exec *x = j->w->exec;
  uv_loop_t *loop = sl_job_loop(j);
  int in[2] = {-1, -1};
  int out[2] = {-1, -1};
  int err[2] = {-1, -1};
  int st[2] = {-1, -1};
  int handles_up = 0;
  int report[2] = {0, 0};
  const char *why = NULL;
  child_setup cs;
  struct rlimit rl;
  sigset_t all;
  sigset_t old;
  ssize_t n;
  pid_t pid;
  size_t plen;
  const char *p = sl_job_payload(j, &plen);
  run *r = sl_calloc(1, sizeof(*r));
  int rc;

  if (r == NULL) {
    sl_job_fail(j, "exec: out of memory");
    return;
  }
  r->x = x;
  snprintf(r->type, sizeof(r->type), "%s", cmd->type);
  r->base64 = cmd->base64;
  sl__buf_init(&r->stdout_buf, EXEC_STDOUT_MAX + 1);
  r->payload = sl_strndup(p, plen);
  r->payload_len = plen;
  r->env = child_env(x, j);
  if (r->payload == NULL || r->env == NULL) {
    why = "out of memory";
    goto fail;
  }
  rc = watch_children(x, loop);
  if (rc != 0) {
    why = rc == UV_ECANCELED ? "the worker is closing" : uv_strerror(rc);
    goto fail;
  }
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 ||
      pipe2(st, O_CLOEXEC) != 0) {
    why = strerror(errno);
    goto fail;
  }
  uv_pipe_init(loop, &r->in, 0);
  uv_pipe_init(loop, &r->out, 0);
  uv_pipe_init(loop, &r->err, 0);
  uv_timer_init(loop, &r->tick);
  r->in.data = r->out.data = r->err.data = r->tick.data = r;
  r->wreq.data = r;
  r->handles = 4;
  handles_up = 1;
  rc = uv_pipe_open(&r->in, in[1]);
  if (rc == 0) {
    in[1] = -1; /* the handle owns it */
    rc = uv_pipe_open(&r->out, out[0]);
  }
  if (rc == 0) {
    out[0] = -1;
    rc = uv_pipe_open(&r->err, err[0]);
  }
  if (rc != 0) {
    why = uv_strerror(rc);
    goto fail;
  }
  err[0] = -1;

  cs.argv[0] = sh;
  cs.argv[1] = dash_c;
  cs.argv[2] = cmd->command;
  cs.argv[3] = NULL;
  cs.env = r->env;
  cs.in = in[0];
  cs.out = out[1];
  cs.err = err[1];
  cs.status = st[1];
  cs.parent = getpid();
  cs.fd_max = EXEC_FD_SCAN_MAX;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < EXEC_FD_SCAN_MAX)
    cs.fd_max = (long)rl.rlim_cur;
  /* Signals stay blocked across fork, so that none runs the worker's
   * handlers in the child before its dispositions are reset. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid = fork();
  if (pid == 0)
    child(&cs);
  rc = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close_fd(&in[0]);
  close_fd(&out[1]);
  close_fd(&err[1]);
  close_fd(&st[1]);
  if (pid < 0) {
    why = strerror(rc);
    goto fail;
  }
  /* End of file: execve succeeded (the status pipe is close-on-exec). */
  do {
    n = read(st[0], report, sizeof(report));
  } while (n < 0 && errno == EINTR);
  close_fd(&st[0]);
  if (n > 0) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    close_handle((uv_handle_t *)&r->in);
    close_handle((uv_handle_t *)&r->out);
    close_handle((uv_handle_t *)&r->err);
    close_handle((uv_handle_t *)&r->tick);
    sl_job_fail_final(j, "exec: cannot start \"%s\": %s: %s", cmd->command, step_name(report[0]),
                      n == (ssize_t)sizeof(report) ? strerror(report[1]) : "no reason given");
    return;
  }

  r->pid = pid;
  r->job = j;
  r->open_pipes = 2;
  r->registered = 1;
  r->next = x->runs;
  if (x->runs != NULL)
    x->runs->prev = r;
  x->runs = r;
  sl_job_on_cancel(j, on_cancel, r);
  if (uv_read_start((uv_stream_t *)&r->out, on_alloc, on_stdout) != 0)
    pipe_done(r, (uv_stream_t *)&r->out);
  if (uv_read_start((uv_stream_t *)&r->err, on_alloc, on_stderr) != 0)
    pipe_done(r, (uv_stream_t *)&r->err);
  {
    uv_buf_t b = uv_buf_init(r->payload, (unsigned)r->payload_len);

    if (uv_write(&r->wreq, (uv_stream_t *)&r->in, &b, 1, on_written) != 0)
      close_handle((uv_handle_t *)&r->in);
  }
  return;

fail:
  close_fd(&in[0]);
  close_fd(&in[1]);
  close_fd(&out[0]);
  close_fd(&out[1]);
  close_fd(&err[0]);
  close_fd(&err[1]);
  close_fd(&st[0]);
  close_fd(&st[1]);
  if (handles_up) {
    close_handle((uv_handle_t *)&r->in);
    close_handle((uv_handle_t *)&r->out);
    close_handle((uv_handle_t *)&r->err);
    close_handle((uv_handle_t *)&r->tick);
  } else {
    run_free(r);
  }
  sl_job_fail(j, "exec: cannot start \"%s\": %s", cmd->command, why);
}

/* ---- Registration ---- */

/* The worker's exec state, created on first use; NULL on OOM. */
static struct sl_exec *state(sl_worker_t *w) {
  if (w->exec == NULL) {
    w->exec = sl_calloc(1, sizeof(*w->exec));
    if (w->exec != NULL)
      w->exec->w = w;
  }
  return w->exec;
}

int sl__exec_register(sl_worker_t *w, const char *mapping, char *err, size_t errlen) {
  const char *eq = strchr(mapping, '=');
  const char *plus;
  struct sl_exec *x;
  exec_cmd *c;
  size_t tl;
  int b64 = 0;

  if (eq == NULL || eq == mapping || eq[1] == '\0') {
    snprintf(err, errlen, "--exec \"%.80s\": expected TYPE=COMMAND, e.g. resize=./resize.sh", mapping);
    return SL_EINVAL;
  }
  tl = (size_t)(eq - mapping);
  plus = memchr(mapping, '+', tl);
  if (plus != NULL) {
    if (plus == mapping || (size_t)(eq - plus) != 7 || memcmp(plus, "+base64", 7) != 0) {
      snprintf(err, errlen, "--exec \"%.80s\": expected TYPE=COMMAND or TYPE+base64=COMMAND", mapping);
      return SL_EINVAL;
    }
    b64 = 1;
    tl = (size_t)(plus - mapping);
  }
  if (tl > SL_NAME_MAX) {
    snprintf(err, errlen, "--exec: type name over %d characters", SL_NAME_MAX);
    return SL_EINVAL;
  }
  x = state(w);
  c = x != NULL ? sl_calloc(1, sizeof(*c)) : NULL;
  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  memcpy(c->type, mapping, tl);
  c->type[tl] = '\0';
  c->base64 = b64;
  c->command = sl_strdup(eq + 1);
  if (c->command == NULL || sl_worker_register(w, c->type, exec_start, c) != 0) {
    snprintf(err, errlen, "--exec: cannot register type \"%s\" (a valid name, at most 32 types)", c->type);
    sl_free(c->command);
    sl_free(c);
    return SL_EINVAL;
  }
  c->next = x->cmds;
  x->cmds = c;
  return 0;
}

int sl__exec_env(sl_worker_t *w, const char *name, char *err, size_t errlen) {
  size_t n = name != NULL ? strlen(name) : 0;
  struct sl_exec *x;
  int ok = n > 0 && n <= EXEC_ENV_NAME_MAX && !(name[0] >= '0' && name[0] <= '9');

  for (size_t i = 0; ok && i < n; i++) {
    char c = name[i];

    ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  }
  if (!ok) {
    snprintf(err, errlen, "--exec-env \"%.80s\": not a variable name ([A-Za-z_][A-Za-z0-9_]*, at most %d bytes)",
             name != NULL ? name : "", EXEC_ENV_NAME_MAX);
    return SL_EINVAL;
  }
  if (strncmp(name, "SLUICE_", 7) == 0) {
    snprintf(err, errlen, "--exec-env %s: names starting SLUICE_ are never passed to children", name);
    return SL_EINVAL;
  }
  x = state(w);
  if (x == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  for (size_t i = 0; i < sizeof(env_kept) / sizeof(env_kept[0]); i++) {
    if (strcmp(name, env_kept[i]) == 0)
      return 0; /* passed anyway */
  }
  for (int i = 0; i < x->nenv; i++) {
    if (strcmp(name, x->env[i]) == 0)
      return 0;
  }
  if (x->nenv == EXEC_ENV_MAX) {
    snprintf(err, errlen, "--exec-env: at most %d names", EXEC_ENV_MAX);
    return SL_EINVAL;
  }
  memcpy(x->env[x->nenv], name, n + 1);
  x->nenv++;
  return 0;
}

/* ---- Stopping ---- */

void sl__exec_kill_all(sl_worker_t *w) {
  if (w == NULL || w->exec == NULL)
    return;
  for (run *r = w->exec->runs; r != NULL; r = r->next) {
    if (!r->group_gone)
      kill(-r->pid, SIGKILL);
  }
}

void sl__exec_close(sl_worker_t *w) {
  struct sl_exec *x = w->exec;

  if (x == NULL)
    return;
  if (x->sig == 1) {
    uv_close((uv_handle_t *)&x->sigchld, sig_closed);
    x->sig = 2;
  } else if (x->sig == 0) {
    x->sig = 3; /* never set up; no run starts any more */
  }
  /* Runs still live watch their children with their timers from now on. */
  for (run *r = x->runs; r != NULL; r = r->next) {
    if (!uv_is_active((uv_handle_t *)&r->tick) && !uv_is_closing((uv_handle_t *)&r->tick))
      uv_timer_start(&r->tick, on_tick, EXEC_TICK_MS, EXEC_TICK_MS);
  }
}

void sl__exec_reap_all(sl_worker_t *w) {
  struct sl_exec *x = w->exec;

  if (x == NULL || x->runs == NULL)
    return;
  /* The loop no longer runs: give the attempts up (their groups get
   * SIGKILL) and wait for the groups here. */
  for (run *r = x->runs; r != NULL;) {
    run *next = r->next;

    if (r->job != NULL && !r->job->ended)
      sl__job_abort(r->job, "the worker stopped", 0); /* calls on_cancel */
    else
      begin_end(r, uv_hrtime() / 1000000);
    r = next;
  }
  while (x->runs != NULL) {
    uint64_t now = uv_hrtime() / 1000000;
    struct timespec pause = {0, EXEC_TICK_MS * 1000000L};

    for (run *r = x->runs; r != NULL;) {
      run *next = r->next;

      run_check(r, now, 1);
      r = next;
    }
    if (x->runs != NULL)
      nanosleep(&pause, NULL);
  }
}

void sl__exec_free_all(sl_worker_t *w) {
  struct sl_exec *x = w->exec;

  if (x == NULL)
    return;
  sl__exec_reap_all(w);
  w->exec = NULL;
  while (x->cmds != NULL) {
    exec_cmd *c = x->cmds;

    x->cmds = c->next;
    sl_free(c->command);
    sl_free(c);
  }
  if (x->sig == 1 || x->sig == 2) {
    /* Only when the caller's loop has not run the worker's handles to
     * their end (a misuse of sl_worker_free): freed by the close callback. */
    x->free_on_close = 1;
    if (x->sig == 1)
      uv_close((uv_handle_t *)&x->sigchld, sig_closed);
    return;
  }
  sl_free(x);
}
