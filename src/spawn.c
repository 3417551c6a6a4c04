/*
 * Contained children; see spawn.h.
 */
#define _GNU_SOURCE /* pipe2, O_CLOEXEC, F_DUPFD_CLOEXEC */

#include "spawn.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "fdlimit.h"
#include "forkexec.h"
#include "log.h"

#define SCAN_EVERY_MS 50        /* /proc scans for a group of zombies, ms */

struct sl_spawner {
  uv_loop_t *loop;             /* the worker's loop */
  sl_child *live;              /* live children: forked, group not yet gone */
  uv_signal_t sigchld;         /* reaps direct children */
  int sig;                     /* sigchld: 0 not set up, 1 watching, 2 closing, 3 closed */
  int free_on_close;           /* freed while sigchld was still closing */
};

struct sl_child {
  uv_pipe_t in;                /* the child's stdin, our write end */
  uv_pipe_t out;               /* its stdout, our read end */
  uv_pipe_t err;               /* its stderr, our read end */
  uv_timer_t tick;             /* reaping poll once the attempt ended */
  uv_write_t wreq;             /* the input write */
  sl_spawner *s;               /* the spawner, while in its registry */
  sl_child *next;              /* registry link */
  sl_child *prev;              /* registry link */
  sl_child_cb cb;              /* the owner's callbacks */
  void *ud;                    /* their argument */
  pid_t pid;                   /* the direct child = its process group id */
  int registered;              /* in s->live */
  int reaped;                  /* the direct child was waited for */
  int ending;                  /* the attempt ended: the group got SIGKILL */
  int group_gone;              /* no process of the group is left (or only zombies) */
  int ended;                   /* the end callback ran */
  sl_child_end end;            /* what the end callback gets */
  uint64_t ended_at;           /* when the attempt ended, loop ms */
  uint64_t next_scan;          /* the next /proc scan, loop ms */
  int open_pipes;              /* stdout and stderr not yet closed */
  int status_fd;               /* the set-up report pipe (forkexec.c), read once the child exited; -1 */
  int handles;                 /* handles not yet closed */
  char *input;                 /* what goes to stdin */
  size_t input_len;            /* bytes */
};

static void check(sl_child *c, uint64_t now, int sync);
static void on_tick(uv_timer_t *t);

/* ---- Teardown ---- */

static void handle_closed(uv_handle_t *h) {
  sl_child *c = h->data;

  if (--c->handles == 0) {
    if (c->status_fd >= 0)
      close(c->status_fd);
    sl_free(c->input);
    sl_free(c);
  }
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, handle_closed);
}

static void close_pipes(sl_child *c) {
  if (c->open_pipes == 0)
    return;
  c->open_pipes = 0;
  close_handle((uv_handle_t *)&c->out);
  close_handle((uv_handle_t *)&c->err);
}

static void unregister(sl_child *c) {
  sl_spawner *s = c->s;

  if (!c->registered)
    return;
  c->registered = 0;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->live = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  c->next = c->prev = NULL;
}

/* The group is gone: the end callback, then the handles close. */
static void finish(sl_child *c) {
  if (c->status_fd >= 0) {
    close(c->status_fd);
    c->status_fd = -1;
  }
  unregister(c);
  uv_timer_stop(&c->tick);
  close_pipes(c);
  close_handle((uv_handle_t *)&c->in);
  close_handle((uv_handle_t *)&c->tick);
  if (!c->ended) {
    c->ended = 1;
    c->cb.end(c->ud, &c->end);
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

/* The direct child is gone: did it reach execve? (forkexec.c) */
static void read_report(sl_child *c) {
  int code = 0;

  if (c->status_fd < 0)
    return;
  if (sl__forkexec_report(c->status_fd, &code, c->end.setup_why, sizeof(c->end.setup_why)) != 0)
    c->end.setup_failed = code;
  close(c->status_fd);
  c->status_fd = -1;
}

/* Waits for the group's members that are our children, the leader first. */
static void reap(sl_child *c) {
  pid_t p;
  int st;

  if (!c->reaped) {
    p = waitpid(c->pid, &st, WNOHANG);
    if (p == c->pid) {
      c->reaped = 1;
      c->end.exited = 1;
      c->end.status = st;
    } else if (p < 0 && errno == ECHILD) {
      c->reaped = 1;
      c->end.status_lost = 1;
    }
    if (c->reaped)
      read_report(c);
  }
  if (!c->ending)
    return;
  /* Grandchildren reparented to us (we are PID 1 or a subreaper). */
  for (p = waitpid(-c->pid, &st, WNOHANG); p > 0; p = waitpid(-c->pid, &st, WNOHANG)) {
    if (p == c->pid) {
      c->reaped = 1;
      c->end.exited = 1;
      c->end.status = st;
    }
  }
}

/* The attempt ends: the whole group gets SIGKILL, whether or not the
 * direct child is alive. */
static void begin_end(sl_child *c, uint64_t now) {
  if (c->ending)
    return;
  c->ending = 1;
  c->ended_at = now;
  c->next_scan = now + SL_SPAWN_TICK_MS;
  kill(-c->pid, SIGKILL);
  if (!uv_is_closing((uv_handle_t *)&c->tick))
    uv_timer_start(&c->tick, on_tick, SL_SPAWN_TICK_MS, SL_SPAWN_TICK_MS);
}

/* Looks at a child: its direct child, and once the attempt ended, its group
 * and pipes; ends it when all is over. With sync set (the loop is not
 * running) the pipes are not read. */
static void check(sl_child *c, uint64_t now, int sync) {
  uint64_t elapsed;

  reap(c);
  if (c->reaped && !c->ending)
    begin_end(c, now);
  if (!c->ending)
    return;
  reap(c);
  elapsed = now > c->ended_at ? now - c->ended_at : 0; /* loop time and uv_hrtime may differ by a tick */
  if (!c->group_gone) {
    if (kill(-c->pid, 0) != 0 && errno == ESRCH) {
      c->group_gone = 1;
    } else if (now >= c->next_scan) {
      c->next_scan = now + SCAN_EVERY_MS;
      c->group_gone = c->reaped && group_only_zombies(c->pid);
    }
  }
  if (c->open_pipes > 0 && (sync || elapsed >= SL_SPAWN_EOF_WAIT_MS)) {
    if (!sync && !c->end.abandoned)
      sl__log_warn("exec: process group %d: its stdout or stderr is still open %d ms after the command ended "
                   "(a process left its process group); using the output read so far",
                   (int)c->pid, SL_SPAWN_EOF_WAIT_MS);
    c->end.output_cut = 1;
    close_pipes(c);
  }
  if (!c->group_gone && elapsed >= SL_SPAWN_GROUP_WAIT_MS) {
    sl__log_warn("exec: process group %d still has processes %d ms after SIGKILL; ending its attempt anyway",
                 (int)c->pid, SL_SPAWN_GROUP_WAIT_MS);
    if (!c->reaped) {
      c->reaped = 1; /* never waited for: a zombie of ours from now on, at worst */
      c->end.stuck = 1;
    }
    c->group_gone = 1;
  }
  if (c->group_gone && c->reaped && c->open_pipes == 0)
    finish(c);
}

/* ---- Callbacks ---- */

static void on_tick(uv_timer_t *t) {
  sl_child *c = t->data;

  check(c, uv_now(t->loop), 0);
}

static void on_sigchld(uv_signal_t *h, int signum) {
  sl_spawner *s = h->data;
  uint64_t now = uv_now(h->loop);

  (void)signum;
  for (sl_child *c = s->live; c != NULL;) {
    sl_child *next = c->next; /* c may end and leave the registry */

    check(c, now, 0);
    c = next;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = sl_malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

/* End of file (or an error) on stdout or stderr. */
static void pipe_done(sl_child *c, uv_stream_t *st) {
  uv_read_stop(st);
  if (c->open_pipes > 0 && !uv_is_closing((uv_handle_t *)st)) {
    c->open_pipes--;
    close_handle((uv_handle_t *)st);
  }
  if (c->ending)
    check(c, uv_now(st->loop), 0);
}

static void on_stdout(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  sl_child *c = st->data;

  if (n > 0 && !c->end.abandoned)
    c->cb.out(c->ud, buf->base, (size_t)n);
  sl_free(buf->base);
  if (n < 0)
    pipe_done(c, st);
}

static void on_stderr(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  sl_child *c = st->data;

  if (n > 0 && !c->end.abandoned)
    c->cb.err(c->ud, buf->base, (size_t)n);
  sl_free(buf->base);
  if (n < 0)
    pipe_done(c, st);
}

static void on_written(uv_write_t *req, int status) {
  sl_child *c = req->data;

  (void)status; /* a child that does not read its stdin is its own business */
  close_handle((uv_handle_t *)&c->in);
}

void sl__child_abandon(sl_child *c) {
  uint64_t now = uv_now(c->tick.loop);

  c->end.abandoned = 1;
  close_pipes(c);
  close_handle((uv_handle_t *)&c->in);
  begin_end(c, now);
  check(c, now, 0);
}

/* ---- Start ---- */

static void sig_closed(uv_handle_t *h) {
  sl_spawner *s = h->data;

  s->sig = 3;
  if (s->free_on_close)
    sl_free(s);
}

/* Starts the SIGCHLD handle on the first child; 0 or a uv error. */
static int watch_children(sl_spawner *s) {
  int rc;

  if (s->sig == 1)
    return 0;
  if (s->sig != 0)
    return UV_ECANCELED; /* the worker is closing */
  rc = uv_signal_init(s->loop, &s->sigchld);
  if (rc != 0)
    return rc;
  s->sigchld.data = s;
  s->sig = 1;
  rc = uv_signal_start(&s->sigchld, on_sigchld, SIGCHLD);
  if (rc != 0) {
    uv_close((uv_handle_t *)&s->sigchld, sig_closed);
    s->sig = 2;
  }
  return rc;
}

static void close_fd(int *fd) {
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
}


int sl__spawn(sl_spawner *s, const char *command, char *const *env, const char *input, size_t len,
              const sl_child_cb *cb, void *ud, sl_child **out, char *errmsg, size_t errlen) {
  int in[2] = {-1, -1};
  int outp[2] = {-1, -1};
  int errp[2] = {-1, -1};
  int handles_up = 0;
  const char *why = NULL;
  char why_buf[256];
  int fail_code = 0;
  pid_t pid;
  sl_child *c = sl_calloc(1, sizeof(*c));
  int rc;
  int code = SL_EIO;

  if (c == NULL) {
    snprintf(errmsg, errlen, "out of memory");
    return SL_ENOMEM;
  }
  c->s = s;
  c->status_fd = -1;
  c->cb = *cb;
  c->ud = ud;
  c->input = sl_malloc(len + 1);
  if (c->input == NULL) {
    why = "out of memory";
    code = SL_ENOMEM;
    goto fail;
  }
  memcpy(c->input, input, len);
  c->input_len = len;
  rc = watch_children(s);
  if (rc != 0) {
    why = rc == UV_ECANCELED ? "the worker is closing" : uv_strerror(rc);
    if (rc == UV_EMFILE || rc == UV_ENFILE) {
      why = sl__fd_strerror(-rc); /* libuv's codes are negated errno values on Unix */
      code = SL__ENOFDS;
    }
    goto fail;
  }
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0) {
    int e = errno;

    snprintf(why_buf, sizeof(why_buf), "pipe2: %s", sl__fd_strerror(e));
    why = why_buf;
    if (sl__fd_exhausted(e))
      code = SL__ENOFDS;
    goto fail;
  }
  uv_pipe_init(s->loop, &c->in, 0);
  uv_pipe_init(s->loop, &c->out, 0);
  uv_pipe_init(s->loop, &c->err, 0);
  uv_timer_init(s->loop, &c->tick);
  c->in.data = c->out.data = c->err.data = c->tick.data = c;
  c->wreq.data = c;
  c->handles = 4;
  handles_up = 1;
  rc = uv_pipe_open(&c->in, in[1]);
  if (rc == 0) {
    in[1] = -1; /* the handle owns it */
    rc = uv_pipe_open(&c->out, outp[0]);
  }
  if (rc == 0) {
    outp[0] = -1;
    rc = uv_pipe_open(&c->err, errp[0]);
  }
  if (rc != 0) {
    why = uv_strerror(rc);
    goto fail;
  }
  errp[0] = -1;

  pid = sl__forkexec(command, env, in[0], outp[1], errp[1], &c->status_fd, &fail_code, why_buf, sizeof(why_buf));
  in[0] = outp[1] = errp[1] = -1; /* closed by sl__forkexec */
  if (pid < 0) {
    why = why_buf;
    code = fail_code; /* SL_EIO or SL__ENOFDS */
    goto fail;
  }

  c->pid = pid;
  c->open_pipes = 2;
  c->registered = 1;
  c->next = s->live;
  if (s->live != NULL)
    s->live->prev = c;
  s->live = c;
  *out = c;
  if (uv_read_start((uv_stream_t *)&c->out, on_alloc, on_stdout) != 0)
    pipe_done(c, (uv_stream_t *)&c->out);
  if (uv_read_start((uv_stream_t *)&c->err, on_alloc, on_stderr) != 0)
    pipe_done(c, (uv_stream_t *)&c->err);
  {
    uv_buf_t b = uv_buf_init(c->input, (unsigned)c->input_len);

    if (uv_write(&c->wreq, (uv_stream_t *)&c->in, &b, 1, on_written) != 0)
      close_handle((uv_handle_t *)&c->in);
  }
  return 0;

fail:
  close_fd(&in[0]);
  close_fd(&in[1]);
  close_fd(&outp[0]);
  close_fd(&outp[1]);
  close_fd(&errp[0]);
  close_fd(&errp[1]);
  if (handles_up) {
    close_handle((uv_handle_t *)&c->in);
    close_handle((uv_handle_t *)&c->out);
    close_handle((uv_handle_t *)&c->err);
    close_handle((uv_handle_t *)&c->tick);
  } else {
    sl_free(c->input);
    sl_free(c);
  }
  snprintf(errmsg, errlen, "%s", why);
  return code;
}

/* ---- The spawner ---- */

sl_spawner *sl__spawner_new(uv_loop_t *loop) {
  sl_spawner *s = sl_calloc(1, sizeof(*s));

  if (s != NULL)
    s->loop = loop;
  return s;
}

void sl__spawner_kill_now(sl_spawner *s) {
  for (sl_child *c = s != NULL ? s->live : NULL; c != NULL; c = c->next) {
    if (!c->group_gone)
      kill(-c->pid, SIGKILL);
  }
}

void sl__spawner_close(sl_spawner *s) {
  if (s == NULL)
    return;
  if (s->sig == 1) {
    uv_close((uv_handle_t *)&s->sigchld, sig_closed);
    s->sig = 2;
  } else if (s->sig == 0) {
    s->sig = 3; /* never set up; no child starts any more */
  }
  /* Live children watch themselves with their timers from now on. */
  for (sl_child *c = s->live; c != NULL; c = c->next) {
    if (!uv_is_active((uv_handle_t *)&c->tick) && !uv_is_closing((uv_handle_t *)&c->tick))
      uv_timer_start(&c->tick, on_tick, SL_SPAWN_TICK_MS, SL_SPAWN_TICK_MS);
  }
}

void sl__spawner_free(sl_spawner *s) {
  if (s == NULL)
    return;
  /* The loop no longer runs: end what is left (the groups get SIGKILL) and
   * wait for the groups here. */
  for (sl_child *c = s->live; c != NULL;) {
    sl_child *next = c->next;

    if (!c->ending) {
      c->end.abandoned = 1;
      close_pipes(c);
      begin_end(c, uv_hrtime() / 1000000);
    }
    c = next;
  }
  while (s->live != NULL) {
    uint64_t now = uv_hrtime() / 1000000;
    struct timespec pause = {0, SL_SPAWN_TICK_MS * 1000000L};

    for (sl_child *c = s->live; c != NULL;) {
      sl_child *next = c->next;

      check(c, now, 1);
      c = next;
    }
    if (s->live != NULL)
      nanosleep(&pause, NULL);
  }
  if (s->sig == 1 || s->sig == 2) {
    /* Only when the caller's loop has not run the worker's handles to
     * their end (a misuse of sl_worker_free): freed by the close callback. */
    s->free_on_close = 1;
    if (s->sig == 1)
      uv_close((uv_handle_t *)&s->sigchld, sig_closed);
    return;
  }
  sl_free(s);
}
