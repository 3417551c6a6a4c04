/*
 * sluice_scale: does any operation on a big batch hold Redis up?
 *
 * sluice_scale [--items N] [--small N] [--batches N] [--held N]
 *
 * Redis runs one command at a time: a function that works for 300 ms makes
 * every producer, worker and dashboard of every queue on that server wait
 * 300 ms. This program runs the operations that grow with a batch, a queue
 * or a pending list, at full size, on a private redis-server, with workers
 * (`sluice worker` processes of this build) busy beside them:
 *
 *   submit        a batch of N items (default 1,000,000) through the
 *                 library's chunked submit
 *   pause         that batch, four workers busy: from the call until the
 *                 workers have parked everything they met
 *   resume        its parked items back into the streams (stepped)
 *   cancel        four workers busy: from the call until the batch ended
 *                 (the workers finish the rest as cancelled as they meet it)
 *   run           a second batch of N run to the end by four workers
 *   retry         of the --small (100,000) failed items of a batch
 *   dead requeue  --all of as many dead letters
 *   beats         one worker holding --held (10,000) running items through
 *                 10 heartbeats
 *   takeover      of --small items held by a consumer that took them through
 *                 the worker's fetch function and never came back (as a
 *                 worker killed with SIGKILL leaves them), by four workers
 *   batches       the first page, every page, and --status, with --batches
 *                 (100,000) ended batches in the queue
 *
 * For each operation it prints its wall time, the longest single Redis
 * command during it (SLOWLOG, with slowlog-log-slower-than 1000: every
 * command of 1 ms or more is logged, so "under 1 ms" is exact), and the
 * worst round trip of a client that sends PING every 5 ms beside it (its own
 * connection and thread). The targets are no command over 20 ms and no
 * PING over 50 ms; each line says whether it held. Nothing here asserts: the
 * exit status is non-zero only when the run itself failed. The last lines
 * of stdout are one JSON object per operation.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <sluice/sluice.h>

#include "clock.h"
#include "devredis.h"

#ifndef SLUICE_BIN
#define SLUICE_BIN "sluice"
#endif

#define QUEUE "scale"
#define P "sluice:{scale}:"
#define MAX_OPS 24
#define MAX_WORKERS 8
#define BUSY_WORKERS 4
#define BUSY_SLOTS "200"
#define PING_EVERY_NS 5000000L /* the prober's pause between PINGs */
#define STALL_S 180            /* no progress for this long fails the run */
#define TARGET_CMD_MS 20.0
#define TARGET_PING_MS 50.0
#define FD_WANT 65536          /* file descriptors asked for (a worker with 10,000 slots needs ~30,000) */

typedef struct op {
  char name[64];
  double wall_s;
  double longest_ms; /* 0: nothing of 1 ms or more */
  char longest[96];  /* that command (FCALL: with the function name) */
  long slow;         /* commands of 1 ms or more */
  double ping_ms;
} op;

static sl_devredis dr;
static redisContext *rc;      /* the bench's own connection */
static sl_client_t *cl;       /* the library client (producer and operator side) */
static op ops[MAX_OPS];
static int nops;
static double op_t0;
static pid_t busy[MAX_WORKERS];
static volatile sig_atomic_t interrupted;

/* ---- the PING prober ---- */
static pthread_mutex_t probe_mu = PTHREAD_MUTEX_INITIALIZER;
static double probe_max_ms;
static volatile int probe_stop;

static void *probe_main(void *arg) {
  redisContext *c = redisConnectUnix((const char *)arg);

  if (c == NULL || c->err) {
    fprintf(stderr, "sluice_scale: the PING client cannot connect\n");
    return NULL;
  }
  while (!probe_stop) {
    struct timespec ts = {0, PING_EVERY_NS};
    double t0 = now_s();
    redisReply *r = redisCommand(c, "PING");
    double ms = (now_s() - t0) * 1000.0;

    if (r == NULL)
      break;
    freeReplyObject(r);
    pthread_mutex_lock(&probe_mu);
    if (ms > probe_max_ms)
      probe_max_ms = ms;
    pthread_mutex_unlock(&probe_mu);
    nanosleep(&ts, NULL);
  }
  redisFree(c);
  return NULL;
}

/* ---- Redis helpers ---- */
static void die(const char *what) {
  fprintf(stderr, "sluice_scale: %s\n", what);
  exit(1);
}

static redisReply *cmd(const char *fmt, ...) {
  va_list ap;
  redisReply *r;

  va_start(ap, fmt);
  r = redisvCommand(rc, fmt, ap);
  va_end(ap);
  if (r == NULL)
    die(rc->errstr);
  if (r->type == REDIS_REPLY_ERROR) {
    fprintf(stderr, "sluice_scale: %s: %s\n", fmt, r->str);
    exit(1);
  }
  return r;
}

static long long cmd_int(const char *fmt, ...) {
  va_list ap;
  redisReply *r;
  long long v = 0;

  va_start(ap, fmt);
  r = redisvCommand(rc, fmt, ap);
  va_end(ap);
  if (r == NULL)
    die(rc->errstr);
  if (r->type == REDIS_REPLY_INTEGER)
    v = r->integer;
  else if (r->type == REDIS_REPLY_STRING)
    v = strtoll(r->str, NULL, 10);
  freeReplyObject(r);
  return v;
}

static long long batch_num(const char *batch, const char *field) {
  return cmd_int("HGET " P "b:%s %s", batch, field);
}

/* Entries in the streams plus those pending: 0 once nothing is queued or
 * running. */
static long long in_streams(void) {
  static const char *const s[3] = {"high", "normal", "low"};
  long long n = 0;

  for (int i = 0; i < 3; i++)
    n += cmd_int("XLEN " P "s:%s", s[i]);
  return n;
}

/* ---- operations ---- */
static void op_begin(const char *name) {
  if (nops == MAX_OPS)
    die("too many operations");
  freeReplyObject(cmd("SLOWLOG RESET"));
  pthread_mutex_lock(&probe_mu);
  probe_max_ms = 0;
  pthread_mutex_unlock(&probe_mu);
  snprintf(ops[nops].name, sizeof(ops[nops].name), "%s", name);
  op_t0 = now_s();
}

static void op_end(void) {
  op *o = &ops[nops++];
  redisReply *r;

  o->wall_s = now_s() - op_t0;
  pthread_mutex_lock(&probe_mu);
  o->ping_ms = probe_max_ms;
  pthread_mutex_unlock(&probe_mu);
  r = cmd("SLOWLOG GET -1");
  o->slow = (long)r->elements;
  for (size_t i = 0; i < r->elements; i++) {
    const redisReply *e = r->element[i];
    double ms;

    if (e->type != REDIS_REPLY_ARRAY || e->elements < 4)
      continue;
    ms = (double)e->element[2]->integer / 1000.0;
    if (e->element[3]->elements > 0 && strcasecmp(e->element[3]->element[0]->str, "SLOWLOG") == 0) {
      o->slow--; /* the bench's own reset of the log */
      continue;
    }
    if (ms > o->longest_ms) {
      const redisReply *a = e->element[3];

      o->longest_ms = ms;
      snprintf(o->longest, sizeof(o->longest), "%s%s%s", a->elements > 0 ? a->element[0]->str : "?",
               a->elements > 1 && strcasecmp(a->element[0]->str, "FCALL") == 0 ? " " : "",
               a->elements > 1 && strcasecmp(a->element[0]->str, "FCALL") == 0 ? a->element[1]->str : "");
    }
  }
  freeReplyObject(r);
  printf("  %-40s %8.2f s   longest command %7.2f ms %-26s  worst PING %7.2f ms   %s\n", o->name, o->wall_s,
         o->longest_ms, o->longest_ms > 0 ? o->longest : "(none of 1 ms or more)", o->ping_ms,
         o->longest_ms <= TARGET_CMD_MS && o->ping_ms <= TARGET_PING_MS ? "ok" : "OVER TARGET");
}

/* Polls cond until it holds, failing the run after STALL_S without
 * progress (progress: the value it returns changed). */
static void wait_for(const char *what, long long (*value)(const void *), const void *arg, long long want) {
  long long last = -1;
  double since = now_s();

  for (;;) {
    long long v = value(arg);

    if (v >= want)
      return;
    if (v != last) {
      last = v;
      since = now_s();
    }
    if (interrupted)
      die("interrupted");
    if (now_s() - since > STALL_S) {
      fprintf(stderr, "sluice_scale: no progress for %d s waiting for %s (at %lld of %lld)\n", STALL_S, what, v,
              want);
      exit(1);
    }
    sleep_ms(20);
  }
}

static long long done_of(const void *batch) {
  return batch_num(batch, "done");
}

static long long parked_all(const void *unused) {
  (void)unused;
  return in_streams() == 0 ? 1 : 0;
}

/* ---- submitting ---- */

/* Submits n copies of line as one batch (the build is not measured unless
 * the caller's op is open); returns the id (static). */
static const char *submit(const char *line, long n, int timed, const char *opname) {
  static char id[64];
  sl_batch_opts bo = {.queue = QUEUE, .name = "scale"};
  sl_batch_t *b = NULL;
  char *got = NULL;
  char err[512];

  if (sl_batch_new(&bo, &b, err, sizeof(err)) != 0)
    die(err);
  for (long i = 0; i < n; i++) {
    if (sl_batch_add(b, line, strlen(line), i + 1, err, sizeof(err)) != 0)
      die(err);
  }
  if (timed)
    op_begin(opname);
  if (sl_batch_submit(cl, b, &got) != 0)
    die(sl_client_errstr(cl));
  if (timed)
    op_end();
  snprintf(id, sizeof(id), "%s", got);
  sl_free(got);
  sl_batch_free(b);
  return id;
}

/* ---- workers ---- */
static pid_t worker(const char *slots, const char *vis, const char *log) {
  pid_t pid = fork();

  if (pid == 0) {
    const char *argv[] = {SLUICE_BIN, "worker", "--redis", dr.url, "--queue", QUEUE, "--concurrency", slots,
                          "--visibility", vis, "--quiet", NULL};
    char path[400];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dr.dir, log);
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      dup2(fd, 2);
      close(fd);
    }
    setpgid(0, 0);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    execv(SLUICE_BIN, (char *const *)argv);
    _exit(127);
  }
  if (pid < 0)
    die("cannot fork");
  return pid;
}

static void busy_start(void) {
  for (int i = 0; i < BUSY_WORKERS; i++)
    busy[i] = worker(BUSY_SLOTS, "5000", "busy.log");
}

static void stop(pid_t *pids, int n) {
  for (int i = 0; i < n; i++) {
    if (pids[i] > 0)
      kill(pids[i], SIGTERM);
  }
  for (int i = 0; i < n; i++) {
    if (pids[i] > 0)
      waitpid(pids[i], NULL, 0);
    pids[i] = 0;
  }
}

/* The "running" count of the only live worker's registration, or -1. */
static long long held_of(const void *unused) {
  redisReply *ids = cmd("ZRANGE " P "workers 0 -1");
  long long n = -1;

  (void)unused;
  if (ids->elements == 1) {
    redisReply *r = cmd("HGET " P "w:%s info", ids->element[0]->str);
    const char *p = r->type == REDIS_REPLY_STRING ? strstr(r->str, "\"running\":") : NULL;

    if (p != NULL)
      n = strtoll(p + 10, NULL, 10);
    freeReplyObject(r);
  }
  freeReplyObject(ids);
  return n;
}

static long long last_beat(const char *id) {
  return cmd_int("HGET " P "w:%s beat", id);
}

#define BEAT_CHUNK 500 /* held items per heartbeat call, as src/lease.c sends them */

/* One heartbeat of the holder: av[0..k) holds the call's head (12
 * arguments) and then 3 per item; sent as one call per BEAT_CHUNK items,
 * the way a worker sends it. */
static void beat_chunks(const char **av, size_t *al, size_t k) {
  const char *cav[12 + 3 * BEAT_CHUNK];
  size_t cal[12 + 3 * BEAT_CHUNK];

  for (size_t at = 12; at < k; at += 3 * BEAT_CHUNK) {
    size_t n = k - at < 3 * BEAT_CHUNK ? k - at : 3 * BEAT_CHUNK;
    redisReply *r;

    memcpy(cav, av, 12 * sizeof(*av));
    memcpy(cal, al, 12 * sizeof(*al));
    memcpy(cav + 12, av + at, n * sizeof(*av));
    memcpy(cal + 12, al + at, n * sizeof(*al));
    r = redisCommandArgv(rc, (int)(12 + n), cav, cal);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
      die("a heartbeat of the holder failed");
    freeReplyObject(r);
  }
}

/* Takes n items of batch with the worker's fetch function as consumer
 * "holder" and sends 10 heartbeats for them, one a second, as a worker
 * holding them would (sluice_v1_beat: priority, entry, batch per item, in
 * calls of BEAT_CHUNK); then aborts the batch, and one more heartbeat ends
 * them. */
static void fake_holder(const char *batch, long n) {
  size_t cap = 4 + 3 * (size_t)n;
  const char **av = calloc(9 + cap, sizeof(*av));
  size_t *al = calloc(9 + cap, sizeof(*al));
  char **own = calloc(cap, sizeof(*own));
  size_t k = 0;
  redisReply *r;

  if (av == NULL || al == NULL || own == NULL)
    die("out of memory");
  av[k++] = "FCALL";
  av[k++] = "sluice_v1_beat";
  av[k++] = "5";
  av[k++] = P "s:high";
  av[k++] = P "s:normal";
  av[k++] = P "s:low";
  av[k++] = P "workers";
  av[k++] = P "w:holder";
  av[k++] = "workers";
  av[k++] = "holder";
  av[k++] = "9000";
  av[k++] = "{\"id\":\"holder\",\"queue\":\"" QUEUE "\"}";
  for (long taken = 0; taken < n;) {
    r = cmd("FCALL sluice_v1_fetch 3 " P "s:high " P "s:normal " P "s:low workers holder 1000 " P " " QUEUE
            " '' 0 3000");
    if (r->elements <= 1)
      die("the holder could not take the items");
    for (size_t i = 1; i + 9 < r->elements; i += 10) {
      char prio[8];

      snprintf(prio, sizeof(prio), "%lld", r->element[i]->integer);
      own[k - 12] = strdup(prio);
      av[k] = own[k - 12];
      k++;
      own[k - 12] = strdup(r->element[i + 1]->str);
      av[k] = own[k - 12];
      k++;
      own[k - 12] = strdup(batch);
      av[k] = own[k - 12];
      k++;
      taken++;
    }
    freeReplyObject(r);
  }
  for (size_t i = 0; i < k; i++)
    al[i] = strlen(av[i]);
  op_begin("10 heartbeats, items held");
  snprintf(ops[nops].name, sizeof(ops[nops].name), "10 heartbeats, %ld items held", n);
  for (int beat = 0; beat <= 10; beat++) {
    if (beat == 10 && sl_batch_abort(cl, QUEUE, batch) != 0) /* the 11th heartbeat ends them */
      die(sl_client_errstr(cl));
    beat_chunks(av, al, k);
    if (beat < 9)
      sleep_ms(1000);
    if (beat == 9)
      op_end();
  }
  wait_for("the held batch to end (aborted)", done_of, batch, n);
  for (size_t i = 0; i + 12 < k; i++)
    free(own[i]);
  free(own);
  free(av);
  free(al);
}

static int count_line(const char *json, size_t len, void *ud) {
  (void)json;
  (void)len;
  (*(long *)ud)++;
  return 0;
}

static void on_signal(int sig) {
  interrupted = sig;
}

static void usage(void) {
  fprintf(stderr, "usage: sluice_scale [--items N] [--small N] [--batches N] [--held N]\n"
                  "  defaults: 1000000 items, 100000 small, 100000 batches, 10000 held\n");
}

int main(int argc, char **argv) {
  long items = 1000000, small = 100000, nbatches = 100000, nheld = 10000;
  static const struct option lo[] = {{"items", 1, NULL, 'i'},
                                     {"small", 1, NULL, 's'},
                                     {"batches", 1, NULL, 'b'},
                                     {"held", 1, NULL, 'h'},
                                     {NULL, 0, NULL, 0}};
  struct sigaction sa;
  struct rlimit rl;
  pthread_t prober;
  char err[512];
  char a[64], bb[64], cf[64], d[64], e[64];
  char held_s[24];
  int ch;

  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    long v = optarg ? strtol(optarg, NULL, 10) : 0;

    if (ch == '?' || v < 1) {
      usage();
      return 2;
    }
    if (ch == 'i')
      items = v;
    else if (ch == 's')
      small = v;
    else if (ch == 'b')
      nbatches = v;
    else
      nheld = v;
  }
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);

  /* A worker with 10,000 slots asks for about 30,000 descriptors. */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max < FD_WANT) {
    struct rlimit want = {FD_WANT, FD_WANT};

    if (setrlimit(RLIMIT_NOFILE, &want) != 0)
      fprintf(stderr, "sluice_scale: cannot raise the descriptor limit to %d (%s); --held %ld may be refused\n",
              FD_WANT, strerror(errno), nheld);
  }
  if (sl_devredis_start(&dr, NULL, err, sizeof(err)) != 0)
    die(err);
  rc = redisConnectUnix(dr.sock);
  if (rc == NULL || rc->err)
    die("cannot connect to the private Redis");
  freeReplyObject(cmd("CONFIG SET slowlog-log-slower-than 1000"));
  freeReplyObject(cmd("CONFIG SET slowlog-max-len 100000"));
  if (sl_library_load(dr.url, err, sizeof(err)) != 0 || sl_client_open(dr.url, &cl, err, sizeof(err)) != 0)
    die(err);
  if (pthread_create(&prober, NULL, probe_main, dr.sock) != 0)
    die("cannot start the PING client");
  {
    redisReply *r = cmd("INFO server");
    const char *v = strstr(r->str, "redis_version:");

    printf("sluice_scale: %ld-item batches, %ld small, %ld batches, %ld held; Redis %.*s (private, %s)\n", items, small,
           nbatches, nheld, v ? (int)strcspn(v + 14, "\r\n") : 1, v ? v + 14 : "?", dr.sock);
    freeReplyObject(r);
  }
  printf("  targets: no command over %.0f ms, no PING over %.0f ms\n", TARGET_CMD_MS, TARGET_PING_MS);

  /* A big batch: submitted, paused with four workers busy, resumed, cancelled. */
  snprintf(a, sizeof(a), "%s", submit("{\"type\":\"noop\",\"payload\":null}", items, 1, "submit (batch A)"));
  busy_start();
  wait_for("batch A to run a tenth", done_of, a, items / 10);
  op_begin("pause, 4 workers busy, until all parked");
  if (sl_batch_pause(cl, QUEUE, a) != 0)
    die(sl_client_errstr(cl));
  wait_for("the workers to park batch A", parked_all, NULL, 1);
  op_end();
  printf("    parked: %lld items\n", cmd_int("XLEN " P "b:%s:p", a));
  op_begin("resume");
  if (sl_batch_resume(cl, QUEUE, a) != 0)
    die(sl_client_errstr(cl));
  op_end();
  wait_for("batch A to run a third", done_of, a, items / 3);
  op_begin("cancel, 4 workers busy, until ended");
  if (sl_batch_cancel(cl, QUEUE, a) != 0)
    die(sl_client_errstr(cl));
  wait_for("batch A to end", done_of, a, items);
  op_end();
  printf("    batch A: %lld succeeded, %lld cancelled\n", batch_num(a, "succeeded"), batch_num(a, "cancelled"));

  /* A second one, submitted while the workers run and run to the end. */
  op_begin("submit and run batch B to the end");
  snprintf(bb, sizeof(bb), "%s", submit("{\"type\":\"noop\",\"payload\":null}", items, 0, NULL));
  wait_for("batch B to end", done_of, bb, items);
  op_end();

  /* Failed items: retry, then dead requeue. */
  snprintf(cf, sizeof(cf), "%s",
           submit("{\"type\":\"sleep\",\"payload\":{\"ms\":0,\"fail_rate\":1},\"max_attempts\":1}", small, 0, NULL));
  wait_for("the failing batch to end", done_of, cf, small);
  op_begin("retry of the failed items");
  if (sl_batch_retry(cl, QUEUE, cf, NULL) != 0)
    die(sl_client_errstr(cl));
  op_end();
  wait_for("the failing batch to end again", done_of, cf, small);
  {
    size_t req = 0, skipped = 0;

    op_begin("dead requeue --all");
    if (sl_dead_requeue(cl, QUEUE, NULL, 0, 0, &req, &skipped) != 0)
      die(sl_client_errstr(cl));
    op_end();
    printf("    requeued %zu dead letters (%zu skipped)\n", req, skipped);
  }
  wait_for("the failing batch to end a third time", done_of, cf, small);
  stop(busy, BUSY_WORKERS);

  /* One worker holding many running items through 10 heartbeats. */
  snprintf(d, sizeof(d), "%s", submit("{\"type\":\"sleep\",\"payload\":{\"ms\":600000}}", nheld, 0, NULL));
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY &&
      (long)((rl.rlim_max - 64) / 3) < nheld) {
    /* The worker would refuse so many slots here (about 3 descriptors
     * each): the bench takes the items with the worker's fetch function
     * and sends the worker's heartbeat call itself, every second. */
    printf("    the descriptor limit here (%ld) allows a worker %ld slots: the bench holds the %ld items and sends the "
           "worker's heartbeat call itself\n",
           (long)rl.rlim_max, (long)((rl.rlim_max - 64) / 3), nheld);
    fake_holder(d, nheld);
  } else {
    pid_t w;
    char id[128];
    redisReply *r;
    long long beat;
    int beats = 0;

    snprintf(held_s, sizeof(held_s), "%ld", nheld);
    w = worker(held_s, "3000", "held.log");
    wait_for("the worker to hold every item", held_of, NULL, nheld);
    r = cmd("ZRANGE " P "workers 0 0");
    snprintf(id, sizeof(id), "%s", r->elements > 0 ? r->element[0]->str : "");
    freeReplyObject(r);
    beat = last_beat(id);
    op_begin("10 heartbeats, items held");
    snprintf(ops[nops].name, sizeof(ops[nops].name), "10 heartbeats, %ld items held", nheld);
    while (beats < 10) {
      long long b2 = last_beat(id);

      if (b2 != beat) {
        beat = b2;
        beats++;
      }
      if (interrupted)
        die("interrupted");
      sleep_ms(20);
    }
    op_end();
    if (sl_batch_abort(cl, QUEUE, d) != 0)
      die(sl_client_errstr(cl));
    wait_for("the held batch to end (aborted)", done_of, d, nheld);
    stop(&w, 1);
  }

  /* Takeover: a consumer takes items through the worker's fetch function
   * and never comes back. */
  {
    long long taken = 0;
    char name[64];

    snprintf(e, sizeof(e), "%s", submit("{\"type\":\"noop\",\"payload\":null}", small, 0, NULL));
    while (taken < small) {
      redisReply *r = cmd("FCALL sluice_v1_fetch 3 " P "s:high " P "s:normal " P "s:low workers dead-worker 1000 " P
                          " " QUEUE " '' 0 3000");

      if (r->elements <= 1)
        die("the dead consumer could not take the items");
      taken += (long long)(r->elements - 1) / 10;
      freeReplyObject(r);
    }
    snprintf(name, sizeof(name), "takeover of %ld (visibility 3 s)", small);
    op_begin(name);
    busy_start();
    wait_for("the dead consumer's items to end", done_of, e, small);
    op_end();
  }

  /* Many ended batches: the listing. */
  {
    long shown = 0;
    double t0 = now_s();

    for (long i = 0; i < nbatches; i++) {
      submit("{\"type\":\"noop\",\"payload\":null}", 1, 0, NULL);
      if (interrupted)
        die("interrupted");
    }
    printf("    %ld one-item batches submitted in %.1f s\n", nbatches, now_s() - t0);
    wait_for("every batch to end", parked_all, NULL, 1);
    stop(busy, BUSY_WORKERS);
    op_begin("batches --limit 50");
    if (sl_batch_list(cl, QUEUE, NULL, 50, count_line, &shown) != 0)
      die(sl_client_errstr(cl));
    op_end();
    shown = 0;
    op_begin("batches, every page");
    if (sl_batch_list(cl, QUEUE, NULL, 0, count_line, &shown) != 0)
      die(sl_client_errstr(cl));
    op_end();
    printf("    listed %ld batches\n", shown);
    shown = 0;
    op_begin("batches --status cancelled");
    if (sl_batch_list(cl, QUEUE, "cancelled", 0, count_line, &shown) != 0)
      die(sl_client_errstr(cl));
    op_end();
    printf("    listed %ld cancelled batches\n", shown);
  }

  probe_stop = 1;
  pthread_join(prober, NULL);
  {
    int over = 0;

    for (int i = 0; i < nops; i++)
      over += ops[i].longest_ms > TARGET_CMD_MS || ops[i].ping_ms > TARGET_PING_MS;
    printf("  %d of %d operations within the targets\n", nops - over, nops);
  }
  for (int i = 0; i < nops; i++)
    printf("{\"bench\":\"scale\",\"op\":\"%s\",\"wall_s\":%.3f,\"longest_command_ms\":%.2f,\"longest_command\":\"%s\","
           "\"commands_over_1ms\":%ld,\"worst_ping_ms\":%.2f}\n",
           ops[i].name, ops[i].wall_s, ops[i].longest_ms, ops[i].longest, ops[i].slow, ops[i].ping_ms);
  sl_client_close(cl);
  redisFree(rc);
  sl_devredis_stop(&dr);
  return 0;
}
