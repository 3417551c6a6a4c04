/*
 * `exec` items: local programs that the WORKER maps to item types
 * (`sluice worker --exec resize=./resize.sh`); producers choose a type,
 * never a command.
 *
 * Each attempt runs `/bin/sh -c COMMAND` with uv_spawn in a process group
 * of its own (so a timeout or a cancel kills the whole group, grandchildren
 * included). The payload (raw JSON) goes to the child's stdin; stdout,
 * capped at EXEC_STDOUT_MAX, is the result (stored as JSON when it parses);
 * the last EXEC_STDERR_TAIL bytes of stderr are kept for errors. Exit 0
 * succeeds, exit 75 (EX_TEMPFAIL) is a retryable failure, any other exit
 * code or a signal fails the item for good, with the code and the stderr
 * tail. The child also gets SLUICE_BATCH, SLUICE_ITEM_ID (the item's id),
 * SLUICE_ITEM_INDEX and SLUICE_ATTEMPT in its environment. Lines "progress N" on its stderr
 * report the item's progress (sl_job_progress).
 *
 * An attempt ends when the child has exited AND both output pipes are at
 * end of file; the handles are closed and the memory freed after their
 * close callbacks (libuv's rule).
 */
#include "exec.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "json.h"
#include "worker.h"

#define EXEC_STDOUT_MAX (512 * 1024) /* stdout kept as the result, bytes */
#define EXEC_STDERR_TAIL 2048        /* stderr kept for errors, bytes */
#define EX_TEMPFAIL 75               /* sysexits.h: try again later */

extern char **environ;

typedef struct sl_exec_cmd {
  char type[SL_NAME_MAX + 1];      /* item type */
  char *command;                   /* run with /bin/sh -c */
  struct sl_exec_cmd *next_owned;  /* the worker's list, for freeing */
} exec_cmd;

typedef struct run {
  uv_process_t proc;     /* the child; first, for the casts in callbacks */
  uv_pipe_t in;          /* its stdin */
  uv_pipe_t out;         /* its stdout */
  uv_pipe_t err;         /* its stderr */
  uv_write_t wreq;       /* the payload write */
  sl_job_t *job;         /* until completed */
  sl_buf stdout_buf;     /* stdout, capped */
  int truncated;         /* stdout went past the cap */
  char tail[EXEC_STDERR_TAIL]; /* the last bytes of stderr (a ring) */
  char line[128];        /* the stderr line being read, for "progress N" */
  size_t line_len;       /* bytes in line */
  size_t tail_len;       /* bytes in tail */
  size_t tail_pos;       /* next write position in the ring */
  int exited;            /* the exit callback ran */
  int64_t status;        /* exit status */
  int term_signal;       /* signal that ended it, or 0 */
  int open_pipes;        /* stdout and stderr not yet at EOF */
  int handles;           /* handles not yet closed */
  int killed;            /* we killed it (timeout, cancel) */
  char *payload;         /* what goes to stdin */
  char **env;            /* the child's environment */
} run;

/* ---- Teardown ---- */

static void run_free(run *r) {
  sl__buf_free(&r->stdout_buf);
  sl_free(r->payload);
  if (r->env != NULL) {
    for (size_t i = 0; r->env[i] != NULL; i++)
      sl_free(r->env[i]);
    sl_free(r->env);
  }
  sl_free(r);
}

static void handle_closed(uv_handle_t *h) {
  run *r = h->data;

  if (--r->handles == 0)
    run_free(r);
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

/* When the child has exited and both pipes are drained: the outcome. */
static void maybe_finish(run *r) {
  sl_job_t *j = r->job;
  char tail[EXEC_STDERR_TAIL + 1];

  if (!r->exited || r->open_pipes > 0)
    return;
  r->job = NULL;
  while (r->stdout_buf.len > 0 && strchr(" \t\r\n", r->stdout_buf.p[r->stdout_buf.len - 1]) != NULL)
    r->stdout_buf.p[--r->stdout_buf.len] = '\0'; /* the usual trailing newline */
  if (j != NULL) {
    stderr_tail(r, tail, sizeof(tail));
    if (r->term_signal != 0) {
      sl_job_fail_final(j, "exec: killed by signal %d%s%s", r->term_signal, tail[0] ? "; stderr: " : "", tail);
    } else if (r->status == 0) {
      char err[64];

      if (r->stdout_buf.len > 0 && !r->truncated &&
          sl__json_validate(r->stdout_buf.p, r->stdout_buf.len, 256, NULL, err, sizeof(err)) == 0)
        sl_job_succeed(j, r->stdout_buf.p, r->stdout_buf.len);
      else if (r->stdout_buf.len > 0)
        sl_job_succeed(j, r->stdout_buf.p, r->stdout_buf.len); /* not JSON: kept as a string */
      else
        sl_job_succeed(j, NULL, 0);
    } else if (r->status == EX_TEMPFAIL) {
      sl_job_fail(j, "exec: exit 75 (EX_TEMPFAIL, retryable)%s%s", tail[0] ? "; stderr: " : "", tail);
    } else {
      sl_job_fail_final(j, "exec: exit %lld%s%s", (long long)r->status, tail[0] ? "; stderr: " : "", tail);
    }
  }
  /* stdin is closed by on_written */
  uv_close((uv_handle_t *)&r->proc, handle_closed);
  uv_close((uv_handle_t *)&r->out, handle_closed);
  uv_close((uv_handle_t *)&r->err, handle_closed);
}

/* ---- Callbacks ---- */

static void on_child_exit(uv_process_t *p, int64_t status, int term_signal) {
  run *r = p->data;

  r->exited = 1;
  r->status = status;
  r->term_signal = term_signal;
  maybe_finish(r);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = sl_malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void on_stdout(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  run *r = s->data;

  if (n > 0) {
    size_t room = EXEC_STDOUT_MAX - r->stdout_buf.len;

    if ((size_t)n > room)
      r->truncated = 1;
    if (room > 0)
      sl__buf_append(&r->stdout_buf, buf->base, (size_t)n < room ? (size_t)n : room);
  } else if (n < 0) {
    uv_read_stop(s);
    r->open_pipes--;
  }
  sl_free(buf->base);
  if (n < 0)
    maybe_finish(r);
}

static void on_stderr(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  run *r = s->data;

  for (ssize_t i = 0; i < n; i++) {
    char ch = buf->base[i];

    /* "progress N" lines report the item's progress */
    if (ch == '\n') {
      int pct;

      r->line[r->line_len] = '\0';
      if (r->job != NULL && sscanf(r->line, "progress %d", &pct) == 1)
        sl_job_progress(r->job, pct);
      r->line_len = 0;
    } else if (r->line_len < sizeof(r->line) - 1) {
      r->line[r->line_len++] = ch;
    }
    r->tail[r->tail_pos] = buf->base[i];
    r->tail_pos = (r->tail_pos + 1) % EXEC_STDERR_TAIL;
    if (r->tail_len < EXEC_STDERR_TAIL)
      r->tail_len++;
  }
  sl_free(buf->base);
  if (n < 0) {
    uv_read_stop(s);
    r->open_pipes--;
    maybe_finish(r);
  }
}

static void on_written(uv_write_t *req, int status) {
  run *r = req->data;

  (void)status; /* a child that does not read its stdin is its own business */
  uv_close((uv_handle_t *)&r->in, handle_closed);
}

/* The worker gave up the attempt (timeout, takeover, stop): kill the group. */
static void on_cancel(sl_job_t *j, void *ud) {
  run *r = ud;

  r->job = NULL;
  r->killed = 1;
  if (!r->exited)
    uv_kill(-r->proc.pid, SIGKILL);
  sl_job_fail(j, "exec: cancelled (process group killed)");
}

/* ---- Start ---- */

static char **child_env(sl_job_t *j) {
  size_t n = 0;
  char **env;
  size_t k = 0;

  while (environ[n] != NULL)
    n++;
  env = sl_calloc(n + 5, sizeof(char *));
  if (env == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    if (strncmp(environ[i], "SLUICE_BATCH=", 13) == 0 || strncmp(environ[i], "SLUICE_ITEM_ID=", 15) == 0 ||
        strncmp(environ[i], "SLUICE_ITEM_INDEX=", 18) == 0 || strncmp(environ[i], "SLUICE_ATTEMPT=", 15) == 0)
      continue;
    env[k++] = sl_strdup(environ[i]);
  }
  {
    char v[256];

    snprintf(v, sizeof(v), "SLUICE_BATCH=%s", sl_job_batch(j));
    env[k++] = sl_strdup(v);
    snprintf(v, sizeof(v), "SLUICE_ITEM_INDEX=%s", j->idx);
    env[k++] = sl_strdup(v);
    {
      sl_buf id;

      sl__buf_init(&id, 4 * SL_ITEM_MAX_ID + 32);
      sl__buf_puts(&id, "SLUICE_ITEM_ID=");
      if (j->id_tok != NULL)
        sl__json_unescape(j->id_tok, j->id_toklen, &id);
      else
        sl__buf_puts(&id, j->idx);
      env[k++] = sl__buf_take(&id);
    }
    snprintf(v, sizeof(v), "SLUICE_ATTEMPT=%d", sl_job_attempt(j));
    env[k++] = sl_strdup(v);
  }
  return env;
}

static void exec_start(sl_job_t *j, void *ud) {
  const exec_cmd *cmd = ud;
  uv_loop_t *loop = sl_job_loop(j);
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  char *argv[4];
  size_t plen;
  const char *p = sl_job_payload(j, &plen);
  run *r = sl_calloc(1, sizeof(*r));
  int rc;

  if (r == NULL) {
    sl_job_fail(j, "exec: out of memory");
    return;
  }
  sl__buf_init(&r->stdout_buf, EXEC_STDOUT_MAX + 1);
  r->payload = sl_strndup(p, plen);
  r->env = child_env(j);
  if (r->payload == NULL || r->env == NULL) {
    run_free(r);
    sl_job_fail(j, "exec: out of memory");
    return;
  }
  uv_pipe_init(loop, &r->in, 0);
  uv_pipe_init(loop, &r->out, 0);
  uv_pipe_init(loop, &r->err, 0);
  r->proc.data = r->in.data = r->out.data = r->err.data = r;
  r->wreq.data = r;
  memset(&o, 0, sizeof(o));
  argv[0] = "/bin/sh";
  argv[1] = "-c";
  argv[2] = cmd->command;
  argv[3] = NULL;
  stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[0].data.stream = (uv_stream_t *)&r->in;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&r->out;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&r->err;
  o.file = argv[0];
  o.args = argv;
  o.env = r->env;
  o.stdio = stdio;
  o.stdio_count = 3;
  o.exit_cb = on_child_exit;
  o.flags = UV_PROCESS_DETACHED; /* its own session and process group: killed as a whole */
  rc = uv_spawn(loop, &r->proc, &o);
  if (rc != 0) {
    r->handles = 3;
    uv_close((uv_handle_t *)&r->in, handle_closed);
    uv_close((uv_handle_t *)&r->out, handle_closed);
    uv_close((uv_handle_t *)&r->err, handle_closed);
    sl_job_fail(j, "exec: cannot start \"%s\": %s", cmd->command, uv_strerror(rc));
    return;
  }
  r->job = j;
  r->handles = 4; /* proc, out, err (closed by maybe_finish) and in (by on_written) */
  r->open_pipes = 2;
  uv_read_start((uv_stream_t *)&r->out, on_alloc, on_stdout);
  uv_read_start((uv_stream_t *)&r->err, on_alloc, on_stderr);
  {
    uv_buf_t b = uv_buf_init(r->payload, (unsigned)plen);

    if (uv_write(&r->wreq, (uv_stream_t *)&r->in, &b, 1, on_written) != 0)
      uv_close((uv_handle_t *)&r->in, handle_closed);
  }
  sl_job_on_cancel(j, on_cancel, r);
}

/* ---- Registration ---- */

int sl__exec_register(sl_worker_t *w, const char *mapping, char *err, size_t errlen) {
  const char *eq = strchr(mapping, '=');
  exec_cmd *c;
  size_t tl;

  if (eq == NULL || eq == mapping || eq[1] == '\0') {
    snprintf(err, errlen, "--exec \"%.80s\": expected TYPE=COMMAND, e.g. resize=./resize.sh", mapping);
    return SL_EINVAL;
  }
  tl = (size_t)(eq - mapping);
  if (tl > SL_NAME_MAX) {
    snprintf(err, errlen, "--exec: type name over %d characters", SL_NAME_MAX);
    return SL_EINVAL;
  }
  c = sl_calloc(1, sizeof(*c));
  if (c == NULL)
    return SL_ENOMEM;
  memcpy(c->type, mapping, tl);
  c->type[tl] = '\0';
  c->command = sl_strdup(eq + 1);
  if (c->command == NULL || sl_worker_register(w, c->type, exec_start, c) != 0) {
    snprintf(err, errlen, "--exec: cannot register type \"%s\" (a valid name, at most 32 types)", c->type);
    sl_free(c->command);
    sl_free(c);
    return SL_EINVAL;
  }
  c->next_owned = w->exec_cmds;
  w->exec_cmds = c;
  return 0;
}

void sl__exec_free_all(sl_worker_t *w) {
  while (w->exec_cmds != NULL) {
    exec_cmd *c = w->exec_cmds;

    w->exec_cmds = c->next_owned;
    sl_free(c->command);
    sl_free(c);
  }
}
