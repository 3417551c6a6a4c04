/*
 * The worker's state, shared by its rooms (worker.c, sched.c, intake.c,
 * outcome.c, lease.c, aredis.c, webhook.c; job.c reads the few fields a job
 * needs of its worker). Handlers never include this file: they see the
 * worker through the public API and sluice/job.h.
 *
 * Each field's comment names, in brackets, the room that owns it (writes
 * it; others may read it): worker.c, sched.c, intake.c, outcome.c, lease.c,
 * aredis.c, webhook.c, or job.c for the list of live jobs.
 * The functions below are the rooms' interfaces to each other, grouped by
 * the room that defines them.
 */
#ifndef SL_WORKER_H
#define SL_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/async.h>
#include <uv.h>

#include <sluice/sluice.h>

#include "buf.h"
#include "fdlimit.h"
#include "script.h"
#include "url.h"
#include "webhook.h"

#define SL_WORKER_MAX_HANDLERS 32  /* types one worker serves */
#define SL_WORKER_FLUSH_MAX 250    /* completions per complete call (failures write dead letters: a few ms) */

struct sl_done;

typedef struct sl_handler {
  char type[SL_NAME_MAX + 1]; /* item type served */
  sl_handler_start_fn start;  /* starts a job */
  void *ud;                   /* passed to start */
} sl_handler;

struct sl_worker {
  uv_loop_t *loop;           /* [worker] the loop we run on */
  uv_loop_t own_loop;        /* [worker] storage when we own it */
  int owns_loop;             /* [worker] 1 when loop == &own_loop */
  sl_url url;                /* [worker] Redis */
  char *url_str;             /* [worker] as given */
  sl_keys keys;              /* [worker] the queue's key names */
  char id[160];              /* [worker] worker id = consumer name: host:pid:rand */
  int concurrency;           /* [worker] jobs at once in the process (all its queues) */
  sl_fd_budget fds;          /* [worker] descriptors: the concurrency's need, the limit, the limit before the raise */
  int load_library;          /* [worker] load the function library at start (--load-library), and again if Redis lost it */
  int64_t lib_warned_at;     /* [aredis] ms since the epoch of the last "library gone" warning */
  int block_ms;              /* [worker] idle blocking read, ms */
  char weights[48];          /* [worker] "H,N,L" for weighted fairness, "" for strict priority */
  uint64_t turn;             /* [intake] items fetched so far: where the weighted round robin continues */
  int64_t visibility_ms;     /* [worker] an item not kept alive this long is taken over, ms */
  int max_deliveries;        /* [worker] deliveries before an item is poison */
  int64_t drain_ms;          /* [worker] how long a stop waits for running items, ms */
  int64_t beat_ms;           /* [worker] heartbeat interval, ms */
  sl_job_t *active;          /* [job] jobs started and not yet freed (running list) */
  struct sl_httpc *httpc;    /* [worker] the HTTP client of http items and webhooks */
  struct sl_builtins *builtins; /* [worker] the built-in handlers (builtins.c) */
  char *http_mock;           /* [worker] --http-mock: the mock file answering http items (absolute path), or NULL */
  sl_handler handlers[SL_WORKER_MAX_HANDLERS]; /* [worker] served types */
  int nhandlers;             /* [worker] used */
  redisAsyncContext *cmd;    /* [aredis] scripts and acks */
  redisAsyncContext *blk;    /* [aredis] the blocking XREADGROUP only */
  int cmd_up;                /* [aredis] cmd connected and authenticated */
  int blk_up;                /* [aredis] blk connected and authenticated */
  uint64_t cmd_since;        /* [aredis] loop time (uv_now, ms) cmd's connect or setup began */
  uint64_t blk_since;        /* [aredis] the same for blk */
  uint64_t beat_sent_at;     /* [lease] loop time (uv_now, ms) the last beat was sent */
  uint64_t block_sent_at;    /* [intake] loop time (uv_now, ms) the blocking read in flight was sent */
  long long blk_client_id;   /* [aredis] CLIENT ID of blk, to CLIENT UNBLOCK it on stop */
  int running;               /* [sched] jobs started, not yet finished */
  sl_job_t *backlog;         /* [sched] delivered, not started (FIFO) */
  sl_job_t *backlog_tail;    /* [sched] its tail */
  int nbacklog;              /* [sched] its length */
  sl_job_t *given;           /* [lease] given back by their handlers (sl_job_give_back), not yet released (copies) */
  int ngiven;                /* [lease] its length */
  int given_held;            /* [lease] items given back during the hold, after the one logged */
  struct sl_done *done;      /* [outcome] finished, not yet written (FIFO) */
  struct sl_done *done_tail; /* [outcome] its tail */
  int ndone;                 /* [outcome] its length */
  struct sl_crew *crew;      /* [worker] the queues of this process, sharing its slots (crew.h) */
  int reserved;              /* [intake] slots asked of Redis by fetch and reclaim calls in flight */
  int fetching;              /* [intake] a fetch call is in flight */
  int blocking;              /* [intake] a blocking read is in flight */
  int flushing;              /* [outcome] complete calls in flight */
  int flush_oom;             /* [outcome] the last complete call could not be built (out of memory) */
  int idle;                  /* [intake] the last fetch came back short: block next */
  int stopping;              /* [worker] no new items; drain and close */
  int closed;                /* [worker] connections and handles are closing */
  int rc;                    /* [worker] result of sl_worker_run */
  uv_timer_t kick;           /* [sched] runs pump() on the next loop turn */
  uv_timer_t hold;           /* [lease] after a give back: no item starts or is fetched while it runs */
  uv_timer_t beat;           /* [lease] heartbeat + fleet registry */
  uv_timer_t reclaim;        /* [intake] takeover of dead workers' items */
  uv_timer_t delayed;        /* [intake] wakes up when the next retry is due */
  uv_timer_t reconnect;      /* [aredis] connects again after a lost connection */
  uv_timer_t watchdog;       /* [aredis] drops a connection whose replies stopped coming (silent partition) */
  uint64_t closed_at;        /* [aredis] loop time (uv_now, ms) the connections were asked to close */
  uv_timer_t drain;          /* [worker] the drain deadline after a stop */
  uv_timer_t pause;          /* [aredis] ends a pause after LOADING/BUSY answers */
  uv_timer_t progress;       /* [outcome] sends reported progress, at most every 500 ms */
  uv_timer_t webhook;        /* [webhook] looks for due completion webhooks */
  uv_timer_t repair;         /* [selfrepair] looks for items Redis lost while the queue is empty */
  int repairing;             /* [selfrepair] a repair call is in flight */
  long long repair_ended;    /* [selfrepair] lost items ended so far in the batch being walked */
  uv_timer_t stall;          /* [lease] measures how late the loop runs its timers */
  uint64_t stall_at;         /* [lease] uv_hrtime (ns) of the last stall tick */
  uint64_t max_stall_ms;     /* [lease] the longest the loop was late, ms, since the start */
  uint64_t stall_warned_at;  /* [lease] uv_hrtime (ns) of the last warning about a stall */
  int webhook_busy;          /* [webhook] a webhook_take call is in flight */
  unsigned char webhook_key[SL_WEBHOOK_KEY_MAX]; /* [webhook] HMAC key of webhook signatures: SLUICE_WEBHOOK_SECRET decoded */
  size_t webhook_keylen;     /* [webhook] its length, bytes (24-64); 0: no secret, webhooks go out unsigned */
  int webhook_looked;        /* [webhook] without a key: the first look at the queue's webhooks was sent */
  int webhook_warned;        /* [webhook] without a key: the once-per-process warning was logged */
  int paused;                /* [aredis] Redis asked us to wait: no calls until the pause timer */
  int drained;               /* [worker] the drain timeout passed: close even with completions held */
  int timers_up;             /* [worker] the timers above are initialized */
  int beating;               /* [lease] beat calls in flight (one beat: one call per BEAT_CHUNK items) */
  int reclaiming;            /* [intake] a reclaim call is in flight */
  int releasing;             /* [lease] a release call is in flight */
  int release_oom;           /* [lease] the last release call could not be built (out of memory) */
  int isolating;             /* [intake] a reclaim that may bring a run-alone item is in flight */
  int ever_up;               /* [aredis] both connections were up once */
  int seed_turn;             /* [aredis] Redis Cluster: the URL's node tried last after a failed connect */
  int64_t down_since;        /* [aredis] ms since the epoch when Redis was lost; 0 when up */
  int64_t reconnect_delay;   /* [aredis] the next reconnect backoff, ms */
  int64_t started_at;        /* [worker] ms since the epoch */
  uv_signal_t sig[2];        /* [worker] SIGINT, SIGTERM */
  int nsig;                  /* [worker] signal handles initialized */
  uint64_t n_ok;             /* [outcome] items succeeded here */
  uint64_t n_failed;         /* [outcome] items failed here */
  uint64_t n_dup;            /* [outcome] completions Redis had already seen */
  uint64_t n_retry;          /* [outcome] attempts sent to retry */
  uint64_t n_fenced;         /* [lease, outcome] attempts stopped or outcomes refused: another worker took the item */
  uint64_t n_given;          /* [lease] attempts given back uncounted (out of descriptors) */
  char errstr[512];          /* [worker] cause of a fatal error */
};

/* ---- worker.c: lifecycle ---- */

/* Stops the worker with a fatal error (the first cause is kept). */
void sl__worker_fatal(sl_worker_t *w, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Closes the connections and the handles; the loop then runs out. */
void sl__worker_close_all(sl_worker_t *w);
/* ms with +-20% jitter. */
int64_t sl__jitter(int64_t ms);
/* "1", "2", "3": the priority argument of functions, by SL_PRIO_*. */
extern const char *const sl__prio_arg[3];
/* Fills av/al with "FCALL name nkeys s1 s2 s3" (the queue's streams);
 * returns the count (6). */
int sl__fcall_head(const sl_worker_t *w, const char *name, const char *nkeys, const char **av, size_t *al);
/* Appends one C-string argument to an argv being built. */
void sl__push_arg(const char **av, size_t *al, int *k, const char *s);

/* ---- sched.c: slots and the backlog ---- */

/* Schedules a pump on the next loop turn (idempotent). */
void sl__worker_kick(sl_worker_t *w);
/* Appends a job to the backlog / takes the first one (NULL when empty). */
void sl__sched_push(sl_worker_t *w, sl_job_t *j);
sl_job_t *sl__sched_pop(sl_worker_t *w);

/* ---- intake.c: items come in ---- */

void sl__intake_fetch(sl_worker_t *w, int want);
void sl__intake_block(sl_worker_t *w);
/* Arms the delayed timer for an item due at `due` (server ms; 0: none). */
void sl__intake_arm_delayed(sl_worker_t *w, long long due);
/* Starts the reclaim timer. */
void sl__intake_start(sl_worker_t *w);

/* ---- outcome.c: outcomes go out ---- */

/* A job ended: its slot is free, and its outcome is queued ('s', 'f', 'x',
 * 'r'; 0 for none: fenced or abandoned). Takes ownership of line. */
void sl__worker_finish(sl_worker_t *w, sl_job_t *j, char outcome, char *line, size_t len, int64_t delay_ms);
/* Writes up to SL_WORKER_FLUSH_MAX queued outcomes in one call. */
void sl__outcome_flush(sl_worker_t *w);
/* A job reported progress: send it within PROGRESS_EVERY_MS. */
void sl__worker_progress_soon(sl_worker_t *w);
/* Pushes the rate limit `rate_key` back by ms for the whole fleet
 * (sluice_v1_penalize; best effort, no reply awaited). */
void sl__worker_penalize(sl_worker_t *w, const char *rate_key, int64_t ms);

/* ---- lease.c: heartbeats, fencing, release ---- */

/* Sends a heartbeat now (sluice_v1_beat): every item the worker holds,
 * running, finished but not yet written, taken and not started. */
void sl__lease_beat(sl_worker_t *w);
/* The worker no longer holds entry eid (fenced: taken over, or aborted
 * when `aborted`; how says how it learnt it): its running attempt stops,
 * nothing of it is recorded, and a backlog copy is dropped. */
void sl__lease_lost(sl_worker_t *w, const char *eid, int aborted, const char *how);
/* Gives back up to RELEASE_MAX items in one call: those handlers gave back,
 * then, when stopping, the backlog (taken, not started). */
void sl__lease_release(sl_worker_t *w);
/* A handler gave job j back (sl_job_give_back, why): its entry is queued to
 * be released uncharged, the reason logged, and new starts held (the `hold`
 * timer, which pump() respects). */
void sl__lease_give_back(sl_worker_t *w, const sl_job_t *j, const char *why);
/* Starts the beat timer and the loop's stall watch. */
void sl__lease_start(sl_worker_t *w);

/* ---- selfrepair.c: lost items of an idle queue ---- */

/* Starts the repair timer. */
void sl__selfrepair_start(sl_worker_t *w);

/* ---- aredis.c: the Redis connections ---- */

/* Opens both connections and starts the watchdog. */
void sl__aredis_start(sl_worker_t *w);
/* Closes both connections (the worker closes): one that is up after the
 * commands already sent, unless it stays silent for two beat intervals; one
 * still connecting at once. The watchdog closes with the last of them. */
void sl__aredis_close(sl_worker_t *w);
/* Points the connections (the next ones made) at host:port: the queue's
 * master on a Redis Cluster. 0, or SL_ENOMEM. */
int sl__aredis_set_node(sl_worker_t *w, const char *host, size_t hostlen, int port);
/* 1 when an error reply is one the worker waits out or repairs (the call
 * is made again later); 0 when it is not. */
int sl__aredis_recoverable(sl_worker_t *w, const redisReply *r);
/* 1 when the reply of a worker's call is not an error; else 0, after
 * dealing with it: nothing for a lost connection, a recoverable error
 * waited out, any other stops the worker (`fatal`) or is logged as
 * "WHAT failed: ERROR". */
int sl__aredis_reply(sl_worker_t *w, const redisReply *r, int fatal, const char *what);

#endif
