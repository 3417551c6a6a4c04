/*
 * `exec` items: local programs that the WORKER maps to item types
 * (`sluice worker --exec resize=./resize.sh`); producers choose a type,
 * never a command.
 *
 * Each attempt runs its command as a contained child (spawn.h: own session
 * and group, descriptors 0-2, killed with the worker, the whole group killed
 * and waited for when the attempt ends) with a clean environment: PATH,
 * HOME, LANG and TZ when the worker has them, SLUICE_BATCH, SLUICE_ITEM_ID,
 * SLUICE_ITEM_INDEX, SLUICE_ATTEMPT, and the names the operator granted
 * (--exec-env, sl_worker_exec_env). The worker's own environment holds
 * secrets (SLUICE_REDIS with its password, SLUICE_WEBHOOK_SECRET, the
 * values of granted http secrets); none of it reaches a child otherwise.
 * Item values reach the command only through stdin and those variables,
 * never pasted into the command line.
 *
 * The payload (raw JSON) goes to stdin; stdout, capped at EXEC_STDOUT_MAX,
 * is the result: JSON when it parses, else a string (it must then be valid
 * UTF-8 and fit the results line once escaped), or, for a mapping
 * TYPE+base64=COMMAND, the raw bytes stored as base64. The last
 * EXEC_STDERR_TAIL bytes of stderr are kept for errors, lines
 * "progress N" report progress, lines "metric NAME VALUE" report a metric
 * (sl_job_metric), and every other complete line goes to the
 * attempt's log (sl_job_log), a timed-out attempt's too. Exit 0 succeeds, exit 75 (EX_TEMPFAIL) is a
 * retryable failure, any other code or a signal fails the item for good. A
 * child that could not be started because the worker was out of file
 * descriptors gives the item back (sl_job_give_back), counting no attempt.
 * The outcome is recorded only once the child's process group is gone.
 *
 * Only the public job contract and the handler interface are used.
 */
#include "handlers/exec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"
#include "fdlimit.h"
#include "json.h"
#include "spawn.h"

#define EXEC_STDOUT_MAX (512 * 1024) /* stdout kept as the result, bytes */
#define EXEC_STDERR_TAIL 2048        /* stderr kept for errors, bytes */
#define EX_TEMPFAIL 75               /* sysexits.h: try again later */
#define EXEC_ENV_MAX 64              /* names granted with --exec-env, per worker */
#define EXEC_ENV_NAME_MAX 128        /* one granted name, bytes */

typedef struct sl_exec sl_exec;

typedef struct exec_cmd {
  sl_exec *x;                  /* the handler */
  char type[SL_NAME_MAX + 1];  /* item type */
  char *command;               /* run with /bin/sh -c */
  int base64;                  /* TYPE+base64=: stdout stored as base64 */
  struct exec_cmd *next;       /* the handler's list */
} exec_cmd;

struct sl_exec {
  sl_worker_t *w;              /* the worker, to register types */
  sl_spawner *spawner;         /* its contained children, from start on */
  exec_cmd *cmds;              /* mappings, owned */
  char env[EXEC_ENV_MAX][EXEC_ENV_NAME_MAX + 1]; /* names granted to children */
  int nenv;                    /* used */
  int closing;                 /* the worker closes: no new children */
};

/* One attempt: the job and what its child wrote. */
typedef struct run {
  sl_job_t *job;               /* until completed */
  sl_child *child;             /* its contained child */
  char type[SL_NAME_MAX + 1];  /* the item type, for messages */
  const char *command;         /* its command (the worker's mapping outlives the run) */
  int base64;                  /* stdout stored as base64 */
  sl_buf stdout_buf;           /* stdout, capped */
  int truncated;               /* stdout went past the cap */
  char tail[EXEC_STDERR_TAIL]; /* the last bytes of stderr (a ring) */
  size_t tail_len;             /* bytes in tail */
  size_t tail_pos;             /* next write position in the ring */
  char line[257];              /* the stderr line being read: "progress N", or a log line (cut at 256 bytes) */
  size_t line_len;             /* bytes in line */
} run;

static void env_free(char **env) {
  if (env == NULL)
    return;
  for (size_t i = 0; env[i] != NULL; i++)
    sl_free(env[i]);
  sl_free(env);
}

static const char *const env_kept[] = {"PATH", "HOME", "LANG", "TZ"}; /* copied when the worker has them */

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

/* The child's group is gone: record the attempt's outcome. */
static void on_end(void *ud, const sl_child_end *e) {
  run *r = ud;
  sl_job_t *j = r->job;
  char tail[EXEC_STDERR_TAIL + 1];
  int st = e->status;

  if (e->abandoned) {
    sl_job_fail(j, "exec: cancelled (process group killed)"); /* ignored: the worker ended the attempt */
  } else if (e->setup_failed == SL__ENOFDS) {
    sl_job_give_back(j, "exec: cannot start \"%s\": %s", r->command, e->setup_why); /* the worker's shortage */
  } else if (e->setup_failed) {
    sl_job_fail_final(j, "exec: cannot start \"%s\": %s", r->command, e->setup_why);
  } else {
    stderr_tail(r, tail, sizeof(tail));
    if (e->stuck) {
      sl_job_fail(j, "exec: the command did not end within %d ms of SIGKILL", SL_SPAWN_GROUP_WAIT_MS);
    } else if (e->status_lost) {
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
  sl__buf_free(&r->stdout_buf);
  sl_free(r);
}

static void on_out(void *ud, const char *p, size_t n) {
  run *r = ud;
  size_t room = EXEC_STDOUT_MAX - r->stdout_buf.len;

  if (n > room)
    r->truncated = 1;
  if (room > 0)
    sl__buf_append(&r->stdout_buf, p, n < room ? n : room);
}

static void on_err(void *ud, const char *p, size_t n) {
  run *r = ud;

  for (size_t i = 0; i < n; i++) {
    char ch = p[i];

    /* "progress N" lines report the item's progress */
    if (ch == '\n') {
      int pct;
      char name[64];
      double v;

      r->line[r->line_len] = '\0';
      if (sscanf(r->line, "progress %d", &pct) == 1)
        sl_job_progress(r->job, pct);
      else if (sscanf(r->line, "metric %63s %lf", name, &v) == 2 && sl_job_metric(r->job, name, v) == 0)
        ; /* a metric of the item ("metric cost 0.034") */
      else if (r->line_len > 0)
        sl_job_log(r->job, "%s", r->line);
      r->line_len = 0;
    } else if (r->line_len < sizeof(r->line) - 1) {
      r->line[r->line_len++] = ch;
    }
    r->tail[r->tail_pos] = ch;
    r->tail_pos = (r->tail_pos + 1) % EXEC_STDERR_TAIL;
    if (r->tail_len < EXEC_STDERR_TAIL)
      r->tail_len++;
  }
}

/* The worker gave the attempt up (timeout, abort, takeover, drain, stop):
 * kill the group; the job is completed once the group is gone (on_end). */
static void on_cancel(sl_job_t *j, void *ud) {
  run *r = ud;

  (void)j;
  sl__child_abandon(r->child);
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


/* The child's whole environment; NULL on OOM. */
static char **child_env(const sl_exec *x, const sl_job_t *j) {
  size_t cap = sizeof(env_kept) / sizeof(env_kept[0]) + 4 + (size_t)x->nenv + 1;
  char **env = sl_calloc(cap, sizeof(char *));
  size_t k = 0;
  char num[32];
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
  if (rc == 0)
    rc = env_put(env, &k, "SLUICE_ITEM_ID", sl_job_item_id(j));
  snprintf(num, sizeof(num), "%lld", (long long)sl_job_index(j));
  if (rc == 0)
    rc = env_put(env, &k, "SLUICE_ITEM_INDEX", num);
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

/*
 * The handler of every exec mapping (ud: its exec_cmd): starts the command
 * for job j as a contained child. Out of file descriptors (EMFILE, ENFILE),
 * the job is given back uncounted; another failure before fork (memory,
 * fork itself) fails it as retryable; a command that cannot be started
 * fails it for good.
 */
static void exec_start(sl_job_t *j, void *ud) {
  static const sl_child_cb cb = {on_out, on_err, on_end};
  const exec_cmd *cmd = ud;
  sl_exec *x = cmd->x;
  size_t plen;
  const char *p = sl_job_payload(j, &plen);
  char err[256];
  char **env;
  run *r;
  int rc;

  if (x->spawner == NULL || x->closing) {
    sl_job_fail(j, "exec: the worker is stopping");
    return;
  }
  r = sl_calloc(1, sizeof(*r));
  env = r != NULL ? child_env(x, j) : NULL;
  if (env == NULL) {
    sl_free(r);
    sl_job_give_back(j, "exec: out of memory");
    return;
  }
  r->job = j;
  snprintf(r->type, sizeof(r->type), "%s", cmd->type);
  r->command = cmd->command;
  r->base64 = cmd->base64;
  sl__buf_init(&r->stdout_buf, EXEC_STDOUT_MAX + 1);
  rc = sl__spawn(x->spawner, cmd->command, env, p, plen, &cb, r, &r->child, err, sizeof(err));
  env_free(env);
  if (rc != 0) {
    sl_free(r);
    if (rc == SL__ENOFDS || rc == SL_ENOMEM)
      sl_job_give_back(j, "exec: cannot start \"%s\": %s", cmd->command, err); /* the worker's shortage */
    else
      sl_job_fail(j, "exec: cannot start \"%s\": %s", cmd->command, err);
    return;
  }
  sl_job_on_cancel(j, on_cancel, r);
}

/* ---- Configuration ---- */

int sl__exec_map(void *state, const char *mapping, char *err, size_t errlen) {
  sl_exec *x = state;
  const char *eq = strchr(mapping, '=');
  const char *plus;
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
  c = sl_calloc(1, sizeof(*c));
  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  memcpy(c->type, mapping, tl);
  c->type[tl] = '\0';
  c->base64 = b64;
  c->command = sl_strdup(eq + 1);
  c->x = x;
  if (c->command == NULL || sl_worker_register(x->w, c->type, exec_start, c) != 0) {
    snprintf(err, errlen, "--exec: cannot register type \"%s\" (a valid name, at most 32 types)", c->type);
    sl_free(c->command);
    sl_free(c);
    return SL_EINVAL;
  }
  c->next = x->cmds;
  x->cmds = c;
  return 0;
}

int sl__exec_env(void *state, const char *name, char *err, size_t errlen) {
  sl_exec *x = state;
  size_t n = name != NULL ? strlen(name) : 0;
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


/* ---- The handler ---- */

static int exec_open(const sl_handler_env *env, void **state, char *err, size_t errlen) {
  sl_exec *x = sl_calloc(1, sizeof(*x));

  if (x == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  x->w = env->worker;
  *state = x;
  return 0;
}

static int exec_start_handles(void *state, uv_loop_t *loop, char *err, size_t errlen) {
  sl_exec *x = state;

  x->spawner = sl__spawner_new(loop);
  if (x->spawner == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  return 0;
}

static void exec_close(void *state) {
  sl_exec *x = state;

  x->closing = 1;
  sl__spawner_close(x->spawner);
}

static void exec_kill_now(void *state) {
  sl__spawner_kill_now(((sl_exec *)state)->spawner);
}

static void exec_free(void *state) {
  sl_exec *x = state;

  if (x == NULL)
    return;
  sl__spawner_free(x->spawner); /* children still live: killed and waited for here */
  while (x->cmds != NULL) {
    exec_cmd *c = x->cmds;

    x->cmds = c->next;
    sl_free(c->command);
    sl_free(c);
  }
  sl_free(x);
}

const sl_handler_vt sl__handler_exec = {"exec", exec_open, exec_start_handles, exec_close, exec_free, exec_kill_now};
