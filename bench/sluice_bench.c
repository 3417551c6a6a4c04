/*
 * sluice_bench: the cost of one batch of no-op items, end to end.
 *
 * sluice_bench [--items N] [--workers W] [--concurrency C] [--redis URL]
 *              [--sluice PATH] [--stall-s S] [--verbose]
 *
 * One run measures one batch of N `noop` items on a fresh queue:
 *
 *   1. submit   the batch is built (sl_batch_new, sl_batch_add: validated,
 *               its chunks past the first spooled to a temporary file),
 *               then sl_batch_submit writes it; only the submit is timed.
 *   2. process  W `sluice worker` processes (C slots each) are started and the
 *               batch hash sluice:{Q}:b:<id> is polled every POLL_MS until
 *               done == N; the time runs from the first fork to that poll.
 *               Then the workers get SIGTERM and are waited for.
 *
 * Around each phase the server's INFO commandstats is read (after a CONFIG
 * RESETSTAT), and the sum of calls= over all commands, before and after,
 * gives the Redis commands the phase cost. Commands run inside FCALL are
 * counted by commandstats as well as the FCALL itself, so a figure includes
 * the script's inner commands; the output says so. The bench's own commands
 * (INFO, the HGET polls) are counted on its side and subtracted.
 *
 * Figures: items/s for submit and for processing, Redis commands per item
 * (submit, processing, total), and the server's used_memory_peak (since the
 * server started: CONFIG RESETSTAT does not reset it, so it means the run's
 * peak only on the private server). They are
 * printed as human-readable lines and then as one JSON line (the last line of
 * stdout, which bench/run.sh reads). Nothing here asserts on a timing: the
 * exit status is non-zero only when the run itself failed (no Redis, a
 * worker died, no progress for --stall-s seconds, an interrupt).
 *
 * Without --redis a private redis-server is started on a unix socket in a
 * temp dir (sl_devredis_start) and removed at the end. With --redis, note
 * that CONFIG RESETSTAT clears the server's statistics and that any other
 * traffic on that server is counted too; the queue's keys are deleted after
 * the run.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <sluice/sluice.h>

#include "clock.h"
#include "devredis.h"

#ifndef SLUICE_BIN
#define SLUICE_BIN "sluice"
#endif

#define MAX_WORKERS 64          /* worker processes */
#define MAX_ITEMS 10000000      /* items in one run */
#define MAX_CMDS 512            /* distinct names in INFO commandstats */
#define CMD_NAME_MAX 64         /* bytes of one command name, with its NUL */
#define POLL_MS 20              /* batch hash poll interval, ms */
#define DEFAULT_STALL_S 60      /* no progress for this long fails the run, s */
#define STOP_GRACE_MS 10000     /* SIGTERM to SIGKILL for workers, ms */
#define BREAKDOWN_TOP 6         /* commands named per phase */
#define QUEUE_PREFIX "bench-"   /* queue names are bench-<pid> */

static volatile sig_atomic_t interrupted; /* the signal that asked us to stop, or 0 */

static void on_signal(int sig) {
  interrupted = sig;
}

/* ---- Small helpers ---- */

/* Parses a decimal integer from 1 to max; -1 when it is not one. */
static long parse_count(const char *s, long max) {
  char *end;
  long v;

  if (s == NULL || *s == '\0')
    return -1;
  errno = 0;
  v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < 1 || v > max)
    return -1;
  return v;
}

/* ---- The bench's own Redis connection ---- */

/*
 * Command counts by name, as in INFO commandstats ("hget", "config|resetstat"),
 * plus their sum. Used for server snapshots and for the bench's own commands.
 */
typedef struct cmdstats {
  char name[MAX_CMDS][CMD_NAME_MAX]; /* command names, NUL-terminated */
  long long calls[MAX_CMDS];         /* calls of name[i] */
  size_t n;                          /* names used */
  long long total;                   /* sum of calls[] */
} cmdstats;

/* Adds `calls` to `name` (a new entry if needed; names past MAX_CMDS only
 * count in the total). */
static void cmdstats_add(cmdstats *s, const char *name, size_t len, long long calls) {
  size_t i;

  s->total += calls;
  if (len >= CMD_NAME_MAX)
    len = CMD_NAME_MAX - 1;
  for (i = 0; i < s->n; i++) {
    if (strlen(s->name[i]) == len && memcmp(s->name[i], name, len) == 0) {
      s->calls[i] += calls;
      return;
    }
  }
  if (s->n == MAX_CMDS)
    return;
  memcpy(s->name[s->n], name, len);
  s->name[s->n][len] = '\0';
  s->calls[s->n] = calls;
  s->n++;
}

static long long cmdstats_get(const cmdstats *s, const char *name) {
  for (size_t i = 0; i < s->n; i++) {
    if (strcmp(s->name[i], name) == 0)
      return s->calls[i];
  }
  return 0;
}

/* A synchronous hiredis connection that counts what it sends. */
typedef struct bench_conn {
  redisContext *rc; /* the connection */
  cmdstats own;     /* commands sent on it since the last CONFIG RESETSTAT */
} bench_conn;

/* Decodes %XX escapes of s[0..len) into out (at most outlen-1 bytes). */
static void url_unescape(const char *s, size_t len, char *out, size_t outlen) {
  size_t o = 0;

  for (size_t i = 0; i < len && o + 1 < outlen; i++) {
    unsigned int v;

    if (s[i] == '%' && i + 2 < len && sscanf(s + i + 1, "%2x", &v) == 1) {
      out[o++] = (char)v;
      i += 2;
    } else {
      out[o++] = s[i];
    }
  }
  out[o] = '\0';
}

/*
 * Connects to a sluice Redis URL: redis://[[user:]password@]host[:port][/db]
 * or unix://[[user:]password@]/path[?db=N]. Authenticates and selects the
 * database. Returns 0, or -1 with a message in err.
 */
static int conn_open(bench_conn *bc, const char *url, char *err, size_t errlen) {
  char host[256] = "";
  char user[128] = "";
  char pass[256] = "";
  char path[512] = "";
  const char *rest;
  const char *at;
  const char *end;
  redisReply *r;
  long port = 6379;
  long db = 0;
  int is_unix;

  memset(bc, 0, sizeof(*bc));
  if (strncmp(url, "redis://", 8) == 0) {
    is_unix = 0;
    rest = url + 8;
  } else if (strncmp(url, "unix://", 7) == 0) {
    is_unix = 1;
    rest = url + 7;
  } else {
    snprintf(err, errlen, "Redis URL \"%s\" must start with redis:// or unix://", url);
    return -1;
  }
  at = strchr(rest, '@');
  if (at != NULL) {
    const char *colon = memchr(rest, ':', (size_t)(at - rest));

    if (colon != NULL) {
      url_unescape(rest, (size_t)(colon - rest), user, sizeof(user));
      url_unescape(colon + 1, (size_t)(at - colon - 1), pass, sizeof(pass));
    } else {
      url_unescape(rest, (size_t)(at - rest), pass, sizeof(pass));
    }
    rest = at + 1;
  }
  if (is_unix) {
    const char *q = strchr(rest, '?');
    size_t n = q ? (size_t)(q - rest) : strlen(rest);

    if (n == 0 || rest[0] != '/' || n >= sizeof(path)) {
      snprintf(err, errlen, "unix socket URL \"%s\" needs an absolute path", url);
      return -1;
    }
    memcpy(path, rest, n);
    path[n] = '\0';
    if (q != NULL && strcmp(q, "?db=0") != 0) {
      db = strncmp(q, "?db=", 4) == 0 ? parse_count(q + 4, 1 << 20) : -1;
      if (db < 0) {
        snprintf(err, errlen, "bad query \"%s\" in unix URL (only ?db=N is understood)", q);
        return -1;
      }
    }
    bc->rc = redisConnectUnix(path);
  } else {
    size_t n;

    end = rest + strcspn(rest, ":/");
    n = (size_t)(end - rest);
    if (n == 0 || n >= sizeof(host)) {
      snprintf(err, errlen, "Redis URL \"%s\" has no host", url);
      return -1;
    }
    memcpy(host, rest, n);
    host[n] = '\0';
    if (*end == ':') {
      char num[16];
      size_t m = strcspn(end + 1, "/");

      if (m == 0 || m >= sizeof(num)) {
        snprintf(err, errlen, "bad port in Redis URL \"%s\"", url);
        return -1;
      }
      memcpy(num, end + 1, m);
      num[m] = '\0';
      port = parse_count(num, 65535);
      if (port < 0) {
        snprintf(err, errlen, "bad port in Redis URL \"%s\"", url);
        return -1;
      }
      end += 1 + m;
    }
    if (*end == '/' && end[1] != '\0' && strcmp(end + 1, "0") != 0) {
      db = parse_count(end + 1, 1 << 20);
      if (db < 0) {
        snprintf(err, errlen, "bad database number in Redis URL \"%s\"", url);
        return -1;
      }
    }
    bc->rc = redisConnect(host, (int)port);
  }
  if (bc->rc == NULL || bc->rc->err) {
    snprintf(err, errlen, "cannot connect to %s: %s", url, bc->rc ? bc->rc->errstr : "out of memory");
    goto fail;
  }
  if (pass[0] != '\0') {
    if (user[0] != '\0')
      r = redisCommand(bc->rc, "AUTH %s %s", user, pass);
    else
      r = redisCommand(bc->rc, "AUTH %s", pass);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
      snprintf(err, errlen, "AUTH failed: %s", r ? r->str : bc->rc->errstr);
      freeReplyObject(r);
      goto fail;
    }
    freeReplyObject(r);
  }
  if (db > 0) {
    r = redisCommand(bc->rc, "SELECT %ld", db);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
      snprintf(err, errlen, "SELECT %ld failed: %s", db, r ? r->str : bc->rc->errstr);
      freeReplyObject(r);
      goto fail;
    }
    freeReplyObject(r);
  }
  return 0;
fail:
  if (bc->rc != NULL)
    redisFree(bc->rc);
  bc->rc = NULL;
  return -1;
}

static void conn_close(bench_conn *bc) {
  if (bc->rc != NULL)
    redisFree(bc->rc);
  bc->rc = NULL;
}

/*
 * Runs one command (argv form) and counts it under `name` (its commandstats
 * name). Returns the reply (free with freeReplyObject), or NULL with a message
 * on stderr when the connection failed or Redis answered an error.
 */
static redisReply *conn_cmd(bench_conn *bc, const char *name, int argc, const char **argv) {
  redisReply *r = redisCommandArgv(bc->rc, argc, argv, NULL);

  if (r == NULL) {
    fprintf(stderr, "sluice_bench: %s: %s\n", argv[0], bc->rc->errstr);
    return NULL;
  }
  cmdstats_add(&bc->own, name, strlen(name), 1);
  if (r->type == REDIS_REPLY_ERROR) {
    fprintf(stderr, "sluice_bench: %s: %s\n", argv[0], r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

/* CONFIG RESETSTAT: clears commandstats (not used_memory_peak, which Redis
 * 7.0 keeps from the server's start). */
static int conn_resetstat(bench_conn *bc) {
  const char *argv[] = {"CONFIG", "RESETSTAT"};
  redisReply *r = conn_cmd(bc, "config|resetstat", 2, argv);

  if (r == NULL)
    return -1;
  freeReplyObject(r);
  memset(&bc->own, 0, sizeof(bc->own));
  return 0;
}

/*
 * INFO <section> into buf (truncated to len). Returns 0 or -1.
 */
static int conn_info(bench_conn *bc, const char *section, char *buf, size_t len) {
  const char *argv[] = {"INFO", section};
  redisReply *r = conn_cmd(bc, "info", 2, argv);

  if (r == NULL)
    return -1;
  snprintf(buf, len, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
  freeReplyObject(r);
  return 0;
}

/* The value of `field:` in INFO text, copied into out; "" when absent. */
static void info_field(const char *info, const char *field, char *out, size_t len) {
  size_t flen = strlen(field);
  const char *p = info;

  out[0] = '\0';
  while (p != NULL && *p != '\0') {
    if (strncmp(p, field, flen) == 0 && p[flen] == ':') {
      size_t n = strcspn(p + flen + 1, "\r\n");

      if (n >= len)
        n = len - 1;
      memcpy(out, p + flen + 1, n);
      out[n] = '\0';
      return;
    }
    p = strchr(p, '\n');
    if (p != NULL)
      p++;
  }
}

/*
 * A snapshot of INFO commandstats with the bench's own commands taken out:
 * the server counts a command after running it, so the INFO that produces a
 * snapshot is not in it, but every own command before it is. Returns 0 or -1.
 */
static int conn_snapshot(bench_conn *bc, cmdstats *out) {
  static char info[256 * 1024];
  const char *p = info;

  memset(out, 0, sizeof(*out));
  for (size_t i = 0; i < bc->own.n; i++)
    cmdstats_add(out, bc->own.name[i], strlen(bc->own.name[i]), -bc->own.calls[i]);
  if (conn_info(bc, "commandstats", info, sizeof(info)) != 0)
    return -1;
  /* Lines: cmdstat_<name>:calls=<n>,usec=...,usec_per_call=...,... */
  for (p = strstr(p, "cmdstat_"); p != NULL; p = strstr(p, "cmdstat_")) {
    const char *name = p + 8;
    const char *colon = strchr(name, ':');
    const char *calls;

    if (colon == NULL)
      break;
    calls = strstr(colon, "calls=");
    if (calls == NULL)
      break;
    cmdstats_add(out, name, (size_t)(colon - name), strtoll(calls + 6, NULL, 10));
    p = colon;
  }
  return 0;
}

/* after - before, per name and in total, into d. */
static void cmdstats_diff(const cmdstats *after, const cmdstats *before, cmdstats *d) {
  memset(d, 0, sizeof(*d));
  for (size_t i = 0; i < after->n; i++) {
    long long v = after->calls[i] - cmdstats_get(before, after->name[i]);

    if (v != 0)
      cmdstats_add(d, after->name[i], strlen(after->name[i]), v);
  }
  for (size_t i = 0; i < before->n; i++) {
    if (cmdstats_get(after, before->name[i]) == 0 && before->calls[i] != 0)
      cmdstats_add(d, before->name[i], strlen(before->name[i]), -before->calls[i]);
  }
}

/* Prints the phase's biggest commands per item: "xadd 1.00, fcall 0.00". */
static void print_breakdown(const cmdstats *d, double items) {
  int used[MAX_CMDS] = {0};

  for (int k = 0; k < BREAKDOWN_TOP; k++) {
    size_t best = d->n;

    for (size_t i = 0; i < d->n; i++) {
      if (!used[i] && d->calls[i] > 0 && (best == d->n || d->calls[i] > d->calls[best]))
        best = i;
    }
    if (best == d->n)
      break;
    used[best] = 1;
    printf("%s%s %.3f", k ? ", " : "", d->name[best], (double)d->calls[best] / items);
  }
}

/* Prints every command of the phase: calls and calls per item. */
static void print_all(const cmdstats *d, double items) {
  for (size_t i = 0; i < d->n; i++)
    printf("  %-24s %10lld %10.4f\n", d->name[i], d->calls[i], (double)d->calls[i] / items);
}

/* ---- Worker processes ---- */

/* Starts `sluice worker` in its own process group (a Ctrl-C reaches only the
 * bench, which stops the workers in order). Returns the pid or -1. */
static pid_t worker_spawn(const char *bin, const char *url, const char *queue, const char *conc) {
  pid_t pid = fork();

  if (pid == 0) {
    const char *argv[] = {bin, "worker", "--redis", url, "--queue", queue, "--concurrency", conc, "--quiet",
                          NULL};

    setpgid(0, 0);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    execv(bin, (char *const *)argv);
    fprintf(stderr, "sluice_bench: cannot run %s: %s\n", bin, strerror(errno));
    _exit(127);
  }
  if (pid < 0)
    fprintf(stderr, "sluice_bench: cannot fork: %s\n", strerror(errno));
  return pid;
}

static void describe_status(int status, char *out, size_t len) {
  if (WIFEXITED(status))
    snprintf(out, len, "exit %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(out, len, "killed by signal %d", WTERMSIG(status));
  else
    snprintf(out, len, "status %d", status);
}

/*
 * Sends SIGTERM to every running worker, waits up to STOP_GRACE_MS for them,
 * then SIGKILLs the rest. Returns the number that did not exit 0.
 */
static int workers_stop(pid_t *pids, int n) {
  int bad = 0;

  for (int i = 0; i < n; i++) {
    if (pids[i] > 0)
      kill(pids[i], SIGTERM);
  }
  for (int waited = 0; waited <= STOP_GRACE_MS; waited += 10) {
    int left = 0;

    for (int i = 0; i < n; i++) {
      int status;
      char what[64];

      if (pids[i] <= 0)
        continue;
      if (waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
          describe_status(status, what, sizeof(what));
          fprintf(stderr, "sluice_bench: worker %d stopped with %s\n", (int)pids[i], what);
          bad++;
        }
        pids[i] = 0;
      } else {
        left++;
      }
    }
    if (left == 0)
      return bad;
    sleep_ms(10);
  }
  for (int i = 0; i < n; i++) {
    if (pids[i] > 0) {
      fprintf(stderr, "sluice_bench: worker %d did not stop within %d ms of SIGTERM; killing it\n",
              (int)pids[i], STOP_GRACE_MS);
      kill(pids[i], SIGKILL);
      waitpid(pids[i], NULL, 0);
      pids[i] = 0;
      bad++;
    }
  }
  return bad;
}

/* Reaps workers that exited on their own; returns how many are still running
 * and reports each exit on stderr. */
static int workers_reap(pid_t *pids, int n) {
  int running = 0;

  for (int i = 0; i < n; i++) {
    int status;
    char what[64];

    if (pids[i] <= 0)
      continue;
    if (waitpid(pids[i], &status, WNOHANG) == pids[i]) {
      describe_status(status, what, sizeof(what));
      fprintf(stderr, "sluice_bench: worker %d exited early (%s)\n", (int)pids[i], what);
      pids[i] = 0;
    } else {
      running++;
    }
  }
  return running;
}

/* Deletes the queue's keys (only on a server the bench did not start). */
static void delete_queue(bench_conn *bc, const char *queue) {
  char pattern[128];
  char cursor[32] = "0";

  snprintf(pattern, sizeof(pattern), "sluice:{%s}:*", queue);
  do {
    const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
    redisReply *r = conn_cmd(bc, "scan", 6, argv);

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      freeReplyObject(r);
      return;
    }
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i < r->element[1]->elements; i++) {
      const char *dargv[] = {"UNLINK", r->element[1]->element[i]->str};
      redisReply *d = conn_cmd(bc, "unlink", 2, dargv);

      freeReplyObject(d);
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
}

/* ---- The run ---- */

typedef struct bench_opts {
  long items;        /* N */
  int workers;       /* W */
  int concurrency;   /* C, slots per worker */
  const char *redis; /* URL, or NULL for a private server */
  const char *bin;   /* the sluice binary */
  long stall_s;      /* no progress for this long fails the run, s */
  int verbose;       /* non-zero: print every command's calls per phase */
} bench_opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: sluice_bench [--items N] [--workers W] [--concurrency C] [--redis URL]\n"
          "                    [--sluice PATH] [--stall-s S] [--verbose]\n"
          "  --items N        noop items in the batch (default 100000)\n"
          "  --workers W      sluice worker processes (default 1)\n"
          "  --concurrency C  slots per worker (default 200)\n"
          "  --redis URL      use this Redis (CONFIG RESETSTAT is run on it!);\n"
          "                   default: a private redis-server on a unix socket\n"
          "  --sluice PATH    the sluice binary (default %s)\n"
          "  --stall-s S      fail when no item finishes for S seconds (default %d)\n"
          "  --verbose        print every command's calls per phase\n",
          SLUICE_BIN, DEFAULT_STALL_S);
}

static int parse_args(int argc, char **argv, bench_opts *o) {
  static const struct option opts[] = {
      {"items", required_argument, NULL, 'n'},   {"workers", required_argument, NULL, 'w'},
      {"concurrency", required_argument, NULL, 'c'}, {"redis", required_argument, NULL, 'R'},
      {"sluice", required_argument, NULL, 'S'},  {"stall-s", required_argument, NULL, 's'},
      {"verbose", no_argument, NULL, 'v'},       {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  long v;
  int ch;

  o->items = 100000;
  o->workers = 1;
  o->concurrency = 200;
  o->redis = NULL;
  o->bin = SLUICE_BIN;
  o->stall_s = DEFAULT_STALL_S;
  o->verbose = 0;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'n':
      o->items = parse_count(optarg, MAX_ITEMS);
      if (o->items < 0) {
        fprintf(stderr, "sluice_bench: --items: expected 1 to %d, got \"%s\"\n", MAX_ITEMS, optarg);
        return -1;
      }
      break;
    case 'w':
      v = parse_count(optarg, MAX_WORKERS);
      if (v < 0) {
        fprintf(stderr, "sluice_bench: --workers: expected 1 to %d, got \"%s\"\n", MAX_WORKERS, optarg);
        return -1;
      }
      o->workers = (int)v;
      break;
    case 'c':
      v = parse_count(optarg, 100000);
      if (v < 0) {
        fprintf(stderr, "sluice_bench: --concurrency: expected 1 to 100000, got \"%s\"\n", optarg);
        return -1;
      }
      o->concurrency = (int)v;
      break;
    case 'R': o->redis = optarg; break;
    case 'S': o->bin = optarg; break;
    case 's':
      o->stall_s = parse_count(optarg, 86400);
      if (o->stall_s < 0) {
        fprintf(stderr, "sluice_bench: --stall-s: expected 1 to 86400, got \"%s\"\n", optarg);
        return -1;
      }
      break;
    case 'v': o->verbose = 1; break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); return -1;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return -1;
  }
  return 0;
}

/*
 * Polls HGET <bkey> done every POLL_MS until it reaches `total`. Returns 0
 * when it did, -1 on an interrupt, a Redis failure, all workers gone or no
 * progress for stall_s; *done_out holds the last value seen.
 */
static int wait_done(bench_conn *bc, const char *bkey, long total, pid_t *pids, int nw, long stall_s,
                     long *done_out) {
  const char *argv[] = {"HGET", bkey, "done"};
  double last_change = now_s();
  long last = -1;

  for (;;) {
    redisReply *r = conn_cmd(bc, "hget", 3, argv);
    long done = 0;

    if (r == NULL)
      return -1;
    if (r->type == REDIS_REPLY_STRING)
      done = strtol(r->str, NULL, 10);
    freeReplyObject(r);
    *done_out = done;
    if (done >= total)
      return 0;
    if (done != last) {
      last = done;
      last_change = now_s();
    } else if (now_s() - last_change > (double)stall_s) {
      fprintf(stderr, "sluice_bench: no progress for %ld s (done %ld of %ld); giving up\n", stall_s, done,
              total);
      return -1;
    }
    if (interrupted) {
      fprintf(stderr, "sluice_bench: interrupted at done %ld of %ld\n", done, total);
      return -1;
    }
    if (workers_reap(pids, nw) == 0) {
      fprintf(stderr, "sluice_bench: every worker exited, done %ld of %ld\n", done, total);
      return -1;
    }
    sleep_ms(POLL_MS);
  }
}

/* used_memory_peak (bytes, and Redis's human form); 0 on failure. */
static long long memory_peak(bench_conn *bc, char *human, size_t len) {
  static char info[16 * 1024];
  char v[64];

  human[0] = '\0';
  if (conn_info(bc, "memory", info, sizeof(info)) != 0)
    return 0;
  info_field(info, "used_memory_peak_human", human, len);
  info_field(info, "used_memory_peak", v, sizeof(v));
  return strtoll(v, NULL, 10);
}

int main(int argc, char **argv) {
  bench_opts o;
  sl_devredis dr = {0};
  bench_conn bc = {0};
  sl_client_t *cl = NULL;
  sl_batch_t *b = NULL;
  char *batch_id = NULL;
  char *status_json = NULL;
  pid_t pids[MAX_WORKERS] = {0};
  static cmdstats s0, s1, s2, dsub, dproc;
  struct sigaction sa;
  const char *url;
  char queue[64];
  char bkey[256];
  char conc[16];
  char err[512];
  char version[32] = "";
  char peak_human[32] = "";
  char info[8 * 1024];
  double t_stop = 0, t_build = 0, t_sub0 = 0, t_sub1 = 0, t_proc0 = 0, t_proc1 = 0;
  long long peak = 0;
  long done = 0;
  int ret = 1;
  int bad_workers = 0;

  if (parse_args(argc, argv, &o) != 0)
    return 2;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: sleeps and waits wake up */
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);

  url = o.redis;
  if (url == NULL) {
    if (sl_devredis_start(&dr, NULL, err, sizeof(err)) != 0) {
      fprintf(stderr, "sluice_bench: %s\n", err);
      return 1;
    }
    url = dr.url;
  }
  if (conn_open(&bc, url, err, sizeof(err)) != 0) {
    fprintf(stderr, "sluice_bench: %s\n", err);
    goto out;
  }
  /* the benchmark is the operator of the Redis it measures */
  if (sl_library_load(url, err, sizeof(err)) != 0 || sl_client_open(url, &cl, err, sizeof(err)) != 0) {
    fprintf(stderr, "sluice_bench: %s\n", err);
    goto out;
  }
  if (conn_info(&bc, "server", info, sizeof(info)) == 0)
    info_field(info, "redis_version", version, sizeof(version));
  snprintf(queue, sizeof(queue), QUEUE_PREFIX "%ld", (long)getpid());
  snprintf(conc, sizeof(conc), "%d", o.concurrency);
  printf("sluice_bench: %ld noop items, %d worker process%s x %d slots, Redis %s at %s%s, queue \"%s\"\n",
         o.items, o.workers, o.workers == 1 ? "" : "es", o.concurrency, version[0] ? version : "?", url,
         o.redis ? "" : " (private)", queue);

  /* ---- Build (not timed as a figure; shown for context) ---- */
  {
    sl_batch_opts bo = {.queue = queue, .name = "bench"};
    static const char line[] = "{\"type\":\"noop\",\"payload\":{}}";
    double t0 = now_s();

    if (sl_batch_new(&bo, &b, err, sizeof(err)) != 0) {
      fprintf(stderr, "sluice_bench: %s\n", err);
      goto out;
    }
    for (long i = 0; i < o.items; i++) {
      if (sl_batch_add(b, line, sizeof(line) - 1, i + 1, err, sizeof(err)) != 0) {
        fprintf(stderr, "sluice_bench: item %ld: %s\n", i + 1, err);
        goto out;
      }
    }
    t_build = now_s() - t0;
  }

  /* ---- Submit ---- */
  if (conn_resetstat(&bc) != 0 || conn_snapshot(&bc, &s0) != 0)
    goto out;
  t_sub0 = now_s();
  if (sl_batch_submit(cl, b, &batch_id) != 0) {
    fprintf(stderr, "sluice_bench: submit failed: %s\n", sl_client_errstr(cl));
    goto out;
  }
  t_sub1 = now_s();
  if (conn_snapshot(&bc, &s1) != 0)
    goto out;
  snprintf(bkey, sizeof(bkey), "sluice:{%s}:b:%s", queue, batch_id);

  /* ---- Process ---- */
  t_proc0 = now_s();
  for (int i = 0; i < o.workers; i++) {
    pids[i] = worker_spawn(o.bin, url, queue, conc);
    if (pids[i] < 0) {
      pids[i] = 0;
      goto out;
    }
  }
  if (wait_done(&bc, bkey, o.items, pids, o.workers, o.stall_s, &done) != 0)
    goto out;
  t_proc1 = now_s();
  if (conn_snapshot(&bc, &s2) != 0)
    goto out;
  peak = memory_peak(&bc, peak_human, sizeof(peak_human));
  t_stop = now_s();
  bad_workers = workers_stop(pids, o.workers);
  t_stop = now_s() - t_stop;

  /* ---- Check the outcome (after the measurement, so not counted) ---- */
  if (sl_batch_status(cl, queue, batch_id, &status_json) == 0) {
    if (strstr(status_json, "\"status\":\"completed\"") == NULL ||
        strstr(status_json, "\"failed\":0,") == NULL)
      fprintf(stderr, "sluice_bench: warning: the batch did not complete cleanly: %s\n", status_json);
  } else {
    fprintf(stderr, "sluice_bench: warning: cannot read the batch status: %s\n", sl_client_errstr(cl));
  }

  /* ---- Report ---- */
  cmdstats_diff(&s1, &s0, &dsub);
  cmdstats_diff(&s2, &s1, &dproc);
  {
    double n = (double)o.items;
    double sub_s = t_sub1 - t_sub0;
    double proc_s = t_proc1 - t_proc0;
    double sub_rate = sub_s > 0 ? n / sub_s : 0;
    double proc_rate = proc_s > 0 ? n / proc_s : 0;
    double cpi_sub = (double)dsub.total / n;
    double cpi_proc = (double)dproc.total / n;

    printf("build     %ld items validated in %.3f s (not a figure)\n", o.items, t_build);
    printf("submit    %ld items in %.3f s: %.0f items/s (%lld FCALLs)\n", o.items, sub_s, sub_rate,
           cmdstats_get(&dsub, "fcall"));
    printf("process   %ld items in %.3f s: %.0f items/s (from starting %d worker%s to done == total)\n",
           o.items, proc_s, proc_rate, o.workers, o.workers == 1 ? "" : "s");
    printf("redis commands per item (INFO commandstats; commands run inside FCALL are included,\n"
           "  and each FCALL counts once itself):\n");
    printf("  submit   %8.3f   (", cpi_sub);
    print_breakdown(&dsub, n);
    printf(")\n  process  %8.3f   (", cpi_proc);
    print_breakdown(&dproc, n);
    printf(")\n  total    %8.3f\n", cpi_sub + cpi_proc);
    printf("redis used_memory_peak %s (%lld bytes)%s\n", peak_human, peak,
           o.redis ? " since that server started, not only this run" : "");
    printf("workers   stopped %.3f s after SIGTERM (not a figure)\n", t_stop);
    if (o.verbose) {
      printf("per-command calls, submit:\n");
      print_all(&dsub, n);
      printf("per-command calls, process:\n");
      print_all(&dproc, n);
    }
    printf("{\"bench\":\"sluice\",\"items\":%ld,\"workers\":%d,\"concurrency\":%d,\"redis_version\":\"%s\","
           "\"submit_s\":%.4f,\"submit_items_per_s\":%.1f,\"process_s\":%.4f,\"process_items_per_s\":%.1f,"
           "\"cmds_submit\":%lld,\"cmds_process\":%lld,\"cmds_per_item_submit\":%.4f,"
           "\"cmds_per_item_process\":%.4f,\"cmds_per_item_total\":%.4f,\"cmds_include_script_inner\":true,"
           "\"used_memory_peak_bytes\":%lld,\"workers_failed\":%d}\n",
           o.items, o.workers, o.concurrency, version, sub_s, sub_rate, proc_s, proc_rate, dsub.total,
           dproc.total, cpi_sub, cpi_proc, cpi_sub + cpi_proc, peak, bad_workers);
  }
  ret = bad_workers == 0 ? 0 : 1;

out:
  workers_stop(pids, o.workers);
  if (interrupted)
    ret = 128 + interrupted;
  if (o.redis != NULL && bc.rc != NULL)
    delete_queue(&bc, queue);
  sl_free(status_json);
  sl_free(batch_id);
  sl_batch_free(b);
  sl_client_close(cl);
  conn_close(&bc);
  if (dr.pid > 0)
    sl_devredis_stop(&dr);
  return ret;
}
