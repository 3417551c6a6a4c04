/*
 * sluice: a worker.
 *
 * A worker takes the items of one queue, or of several (sl_worker_opts.queue
 * "a,b,c"), and runs them through handlers on a libuv loop, its own or the embedding program's: the built-in `http`,
 * `noop` and `sleep`, exec mappings (sl_worker_exec) and C handlers
 * (sl_worker_register, whose contract is in sluice/job.h). The worker's
 * operator decides what its items may reach: hosts (http_allow), secrets
 * (sl_worker_grant), commands (sl_worker_exec) and the environment of those
 * commands (sl_worker_exec_env); an item never asks for them.
 */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <sluice/sluice.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Workers and handlers ---- */

/* sl_worker_opts.http_version */
#define SL_HTTP_DEFAULT 0            /* HTTP/2 where an https server offers it (ALPN), else HTTP/1.1 */
#define SL_HTTP_1_1 1                /* HTTP/1.1 only */
#define SL_HTTP_2_PRIOR_KNOWLEDGE 2  /* HTTP/2 without asking, plain http too (h2c servers) */

typedef struct sl_worker_opts {
  const char *redis_url; /* required */
  const char *queue;     /* the queue, or several: "a,b,c" (one process, one loop, shared slots; each queue
                            keeps its own claims, heartbeats and takeover); NULL means "default" */
  int concurrency;       /* items run at once; 0 means 10 */
  int block_ms;          /* idle blocking read, ms; 0 means 1000 */
  const char *weights;   /* "6,3,1": weighted fairness over high, normal, low; NULL: strict priority */
  const char *http_allow; /* http items and webhooks may call only these origins, [SCHEME://]HOST[:PORT]:
                            "api.example.com,*.example.org,127.0.0.1:8080" (README); NULL or "": any */
  size_t http_max_body;  /* cap of a kept http response body, bytes; 0 means 1 MiB */
  int http_version;      /* SL_HTTP_DEFAULT, SL_HTTP_1_1 or SL_HTTP_2_PRIOR_KNOWLEDGE */
  int64_t visibility_ms; /* an item not kept alive this long is taken over, ms; 0 means 30000 */
  int max_deliveries;    /* deliveries before an item is poison (2-1000); 0 means 5 */
  int64_t drain_timeout_ms; /* a stop waits this long for running items, ms; 0 means 30000 */
  void *loop;            /* a uv_loop_t to run on; NULL: the worker owns one */
  int quiet;             /* non-zero: no log lines on stderr */
  const char *http_methods; /* methods http items may use beyond GET, HEAD, POST, PUT, PATCH, DELETE and
                               OPTIONS: "PROPFIND,REPORT"; NULL: none */
  int load_library;      /* non-zero: load (or replace) the function library at start, an operator's act;
                            else the loaded library must be this build's (sl_library_load) */
  const char *http_mock; /* development: a file of canned responses that answers http items instead of the
                            network (README "Mock mode"), read and checked by sl_worker_new (SL_EINVAL with
                            the entry and field); no secret is resolved and http_allow is not applied;
                            NULL or "": off */
  const char *queue_weights; /* with several queues: "3,2,1", one weight (1-1000) per queue, in order; while
                                several have work, each holds concurrency * its share of the slots, and an
                                idle queue lends its share; NULL: 1 each */
} sl_worker_opts;


/*
 * A new worker (not yet connected). It also sends the completion webhooks of
 * its queue, signed with SLUICE_WEBHOOK_SECRET from the environment, read
 * here: "whsec_" and the base64 of 24 to 64 random bytes (Standard Webhooks;
 * see README). Unset, webhooks go out unsigned and the worker logs warnings.
 * It raises the process's soft RLIMIT_NOFILE to its hard limit (exec
 * children get the original soft limit back) and refuses a concurrency the
 * limit still cannot carry: about 3 descriptors per slot plus 64 (an http
 * connection and its name lookup, or an exec child's three pipes; Redis, the
 * loop and the rest), "--concurrency 400 needs about 1264 file descriptors;
 * the limit is 256 (ulimit -n) ...".
 * Returns SL_EINVAL with the reason in errbuf for a bad option, a secret
 * that is set but malformed, or too few descriptors, SL_ENOMEM; *out is set
 * only on success.
 */
SL_EXTERN int sl_worker_new(const sl_worker_opts *opts, sl_worker_t **out, char *errbuf,
                            size_t errlen);
/* Maps an item type to a local command, "TYPE=COMMAND" (run with /bin/sh
 * -c): the payload goes to its stdin, its stdout is the result; exit 0
 * succeeds, 75 is retryable, anything else fails with the exit code and the
 * tail of stderr. "TYPE+base64=COMMAND" stores stdout base64-encoded (any
 * bytes); otherwise stdout that is not valid UTF-8 fails the item for good.
 * The child runs in its own session and process group with descriptors 0-2
 * only and a clean environment (PATH, HOME, LANG, TZ, the SLUICE_BATCH,
 * SLUICE_ITEM_ID, SLUICE_ITEM_INDEX and SLUICE_ATTEMPT of the item, and the
 * names given to sl_worker_exec_env); the whole group is killed when the
 * attempt ends. The worker reaps its children on a SIGCHLD handle of its
 * loop with waitpid on their own pids, never waitpid(-1). The mapping is
 * copied. SL_EINVAL with a message for a bad mapping, SL_ENOMEM. */
SL_EXTERN int sl_worker_exec(sl_worker_t *w, const char *mapping, char *errbuf, size_t errlen);
/*
 * Grants a secret to the worker's http items: "NAME" lets an item's
 * ${env:NAME} resolve to the worker's environment variable NAME (read now),
 * "NAME@HOST" only in requests to that origin (an --http-allow pattern);
 * repeat for more hosts. Names starting SLUICE_ are never granted. An item
 * naming a secret that is not granted fails for good as refused. SL_EINVAL
 * with a message (bad name, SLUICE_ name, bad host, variable not set).
 */
SL_EXTERN int sl_worker_grant(sl_worker_t *w, const char *spec, char *errbuf, size_t errlen);
/* Passes the worker's environment variable `name` on to every exec child
 * (its value when the child starts; absent when the worker does not have it
 * set). Nothing else of the worker's environment reaches a child. `name`
 * must match [A-Za-z_][A-Za-z0-9_]* (at most 128 bytes, at most 64 names)
 * and must not start with SLUICE_ (the worker's own settings and secrets):
 * SL_EINVAL with a message otherwise. PATH, HOME, LANG and TZ are passed
 * anyway. Call it before sl_worker_run; the name is copied. */
SL_EXTERN int sl_worker_exec_env(sl_worker_t *w, const char *name, char *errbuf, size_t errlen);
/* Serves items of `type` with `start`. Built-in: noop, sleep, http. */
SL_EXTERN int sl_worker_register(sl_worker_t *w, const char *type, sl_handler_start_fn start,
                                 void *ud);
/*
 * Connects and runs until sl_worker_stop, SIGINT/SIGTERM when
 * sl_worker_handle_signals was called, or a fatal error. When it owns the loop
 * it runs the loop; otherwise it starts and returns, and the caller runs the
 * loop. Returns 0 after a clean stop.
 */
SL_EXTERN int sl_worker_run(sl_worker_t *w);
/* Stops taking items; running items finish, their completions are written,
 * then the worker's handles close. Safe from any callback on the loop. */
SL_EXTERN void sl_worker_stop(sl_worker_t *w);
/* Installs SIGINT/SIGTERM handlers on the worker's loop that call
 * sl_worker_stop; a second signal ends the process at once (_exit(1)): an
 * embedding program that wants other behaviour handles signals itself. */
SL_EXTERN int sl_worker_handle_signals(sl_worker_t *w);
SL_EXTERN const char *sl_worker_id(const sl_worker_t *w);
SL_EXTERN const char *sl_worker_errstr(const sl_worker_t *w);
/* Frees the worker. With a loop of its own, it first closes whatever is
 * still open. With the caller's loop, call it only after the worker has
 * stopped (sl_worker_stop, then run the loop until sl_worker_run's handles
 * are closed), and call sl_worker_handle_signals only after sl_worker_run
 * succeeded: handles on the caller's loop are not closed here. */
SL_EXTERN void sl_worker_free(sl_worker_t *w);

#ifdef __cplusplus
}
#endif
#endif /* SLUICE_WORKER_H */
