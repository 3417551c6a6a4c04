/*
 * sluice: a distributed job runner on Redis Streams.
 *
 * This is the whole public API of libsluice. Producers open a client
 * (sl_client_open), build a batch of items (sl_batch_new, sl_batch_add) and
 * submit it (sl_batch_submit). Workers (sl_worker_new, sl_worker_run) take the
 * items from the queue's streams and run them through handlers: the built-in
 * development handlers `noop` and `sleep`, or C handlers that an embedding
 * program registers (sl_worker_register).
 *
 * Conventions (the house style, see docs/ARCHITECTURE.md):
 * - Functions returning int return 0 on success and a negative SL_E* code on
 *   failure; sl_strerror() names the code, and the object that failed keeps
 *   the real cause (sl_client_errstr, the errbuf of constructors).
 * - Strings passed in are copied. A returned `const char *` is borrowed from
 *   the object it came from and valid until the next call on that object.
 * - Everything allocated by the library and handed to the caller is released
 *   with sl_free(). sl_x_free(NULL) and sl_x_close(NULL) are no-ops.
 * - Callbacks are called exactly once unless documented otherwise, and the
 *   pointers they receive are valid only during the callback.
 */
#ifndef SLUICE_SLUICE_H
#define SLUICE_SLUICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_VERSION_STRING "0.1.0"

#if defined(SL_BUILDING_LIB)
#define SL_EXTERN __attribute__((visibility("default")))
#else
#define SL_EXTERN
#endif

/* ---- Errors ---- */

#define SL_OK 0
#define SL_ENOMEM -1      /* out of memory */
#define SL_EINVAL -2      /* invalid argument or input */
#define SL_ECONN -3       /* cannot reach Redis, or the connection broke */
#define SL_EREDIS -4      /* Redis answered with an error */
#define SL_ENOTFOUND -5   /* no such batch (or it expired) */
#define SL_EEXIST -6      /* already exists */
#define SL_ECANCELED -7   /* the operation was cancelled (shutdown, cancelled batch) */
#define SL_EPROTO -8      /* Redis answered something sluice did not expect */
#define SL_ETOOBIG -9     /* a size limit was exceeded */
#define SL_EIO -10        /* an I/O error reading input or talking to a child */
#define SL_ETIMEDOUT -11  /* a deadline passed */

/* A short description of an SL_E* code ("cannot reach Redis"). Never NULL. */
SL_EXTERN const char *sl_strerror(int code);
/* The code's name ("SL_ECONN"). Never NULL. */
SL_EXTERN const char *sl_err_name(int code);

/* Memory handed out by the library (JSON strings, ids) is released with this. */
SL_EXTERN void sl_free(void *p);

/* ---- Limits (bytes unless named otherwise) ---- */

#define SL_ITEM_MAX_LINE (1024 * 1024)   /* one JSON Lines item, bytes */
#define SL_ITEM_MAX_PAYLOAD (512 * 1024) /* an item's payload, bytes */
#define SL_ITEM_MAX_DEPTH 64             /* nesting of arrays and objects */
#define SL_ITEM_MAX_ID 128               /* an item id, bytes */
#define SL_NAME_MAX 64                   /* queue, type and batch names, bytes */
#define SL_DEDUPE_MAX 256                /* a dedupe key, bytes */

/* ---- Client: a connection for producers and admin commands ---- */

typedef struct sl_client sl_client_t;

/*
 * Connects to the Redis at `url` (redis://[user:password@]host[:port][/db] or
 * unix:///path/to.sock), authenticates, selects the database and checks that
 * the loaded sluice function library is this build's. On failure returns
 * SL_EINVAL (bad URL), SL_ECONN/SL_EREDIS, or SL_EPROTO when the library is
 * missing or another version ("library vN is loaded, this sluice needs vM:
 * run `sluice library load`"), writes the cause into errbuf and leaves *out
 * untouched. It never loads the library.
 */
SL_EXTERN int sl_client_open(const char *url, sl_client_t **out, char *errbuf, size_t errlen);
SL_EXTERN void sl_client_close(sl_client_t *c);

/*
 * Loads (or replaces) this build's function library into the Redis at
 * `url`: the code every worker of every queue on that Redis runs, so an
 * operator's act (`sluice library load`); the README's producer, worker and
 * dashboard ACL users cannot. Returns 0, or an SL_E* code with the cause in
 * errbuf.
 */
SL_EXTERN int sl_library_load(const char *url, char *errbuf, size_t errlen);
/* This build's library version, "0.1.0+1a2b3c4d5e6f" (the sluice version and
 * the start of the SHA1 of the library's text). */
SL_EXTERN const char *sl_library_version(void);
/* The cause of the last failure on this client; "" if none. */
SL_EXTERN const char *sl_client_errstr(const sl_client_t *c);

/* ---- Batches: submit ---- */

typedef struct sl_batch sl_batch_t;

typedef struct sl_batch_opts {
  const char *queue;     /* queue name; NULL means "default" */
  const char *name;      /* a label shown by `status` and `batches`; may be NULL */
  const char *priority;  /* default item priority: "high", "normal" (NULL) or "low" */
  int max_attempts;      /* default attempts per item; 0 means 1 */
  int64_t timeout_ms;    /* default per-attempt timeout, ms; 0 means 30000 */
  int64_t backoff_ms;    /* default retry delay base, ms; 0 means 1000 */
  int64_t backoff_max_ms; /* default retry delay cap, ms; 0 means 60000 */
  const char *rate_key;  /* default rate limit of the items (sl_limit_set), or NULL */
  const char *run_at;    /* default start time of the items, RFC 3339, or NULL */
  int64_t delay_ms;      /* default start: this long after submit, ms; 0: at once */
  int64_t retention_ms;  /* keep the ended batch and its results this long, ms; 0: 7 days */
  int64_t dedupe_ttl_ms; /* remember dedupe keys this long, ms; 0: 24 hours */
  const char *webhook;   /* POST the batch summary here when it ends (Standard Webhooks, see README), or NULL */
  size_t chunk_items;    /* items per submit call, at most (a call also ends at 8 MiB); 0 means 2000 */
} sl_batch_opts;

/*
 * A new, empty batch to be filled with sl_batch_add (opts may be NULL).
 * Returns SL_EINVAL for an invalid option (the message in errbuf names it),
 * SL_ENOMEM, or SL_EIO when the kernel gives no random bytes (for the key of
 * the batch's id hash); *out is set only on success.
 */
SL_EXTERN int sl_batch_new(const sl_batch_opts *opts, sl_batch_t **out, char *errbuf, size_t errlen);
SL_EXTERN void sl_batch_free(sl_batch_t *b);

/*
 * Validates one JSON Lines item (without its newline) and adds it to the
 * batch. `lineno` is the 1-based line number used in messages and as the
 * default item id. Nothing is sent to Redis. On invalid input returns
 * SL_EINVAL (SL_ETOOBIG for size limits) and writes a message naming the field
 * into errbuf, e.g. `field "priority": unknown priority "urgent"`.
 *
 * The batch does not keep its items in memory: it keeps one chunk of them,
 * and full chunks go to a temporary file in $TMPDIR (default /tmp), unlinked
 * at once, created when a second chunk begins. Memory is about 20-30 bytes
 * per item (to find duplicate ids) plus one chunk (at most about 8 MiB);
 * disk is about the batch's size. SL_EIO: that file could not be created or
 * written (a full disk), errbuf names the directory; SL_ENOMEM: out of
 * memory. After either the batch is as before the call and may be used.
 */
SL_EXTERN int sl_batch_add(sl_batch_t *b, const char *line, size_t len, long lineno, char *errbuf,
                           size_t errlen);
/* Number of items added so far. */
SL_EXTERN size_t sl_batch_count(const sl_batch_t *b);

/*
 * Writes the batch: one function call per chunk, the chunks read back from
 * the temporary file one at a time. The batch is `submitting` until its last
 * chunk is written and becomes `queued` with that chunk; a producer that
 * dies midway leaves it visibly incomplete. Before anything is written, a
 * batch that would take Redis past 95% of its maxmemory is refused
 * (SL_ETOOBIG). On success *id_out holds the batch id (free with sl_free).
 */
SL_EXTERN int sl_batch_submit(sl_client_t *c, sl_batch_t *b, char **id_out);

/* After sl_batch_submit: how many items were skipped because their dedupe
 * key was seen in the queue within the dedupe TTL, and the id of the i-th,
 * in submit order (borrowed from the batch; NULL past the end). */
SL_EXTERN size_t sl_batch_skipped_count(const sl_batch_t *b);
SL_EXTERN const char *sl_batch_skipped_id(const sl_batch_t *b, size_t i);

/* ---- Batches: inspect ---- */

/*
 * The batch's state as one JSON object: the event fields (queue, batch,
 * status, total, done, succeeded, failed, cancelled, pct, ts) plus name,
 * created_at, queued_at, started_at, finished_at (ms since the epoch, 0 when
 * not yet), submitted (items written so far) and elapsed_ms. Free with
 * sl_free. SL_ENOTFOUND when there is no such batch.
 */
SL_EXTERN int sl_batch_status(sl_client_t *c, const char *queue, const char *batch, char **json_out);

/* Called once per result line (a JSON object, not NUL-terminated). A non-zero
 * return stops the iteration, and sl_batch_results returns it. */
typedef int (*sl_line_cb)(const char *json, size_t len, void *ud);

#define SL_RESULTS_FAILED 1 /* only items whose final status is failed */

/* Every finished item's result, in submit order. */
SL_EXTERN int sl_batch_results(sl_client_t *c, const char *queue, const char *batch, int flags,
                               sl_line_cb cb, void *ud);

/* The queue's batches, newest first, as status objects; `status` filters
 * when not NULL; at most `limit` (0: all). */
SL_EXTERN int sl_batch_list(sl_client_t *c, const char *queue, const char *status, size_t limit,
                            sl_line_cb cb, void *ud);

/*
 * Follows a batch live through pub/sub: calls cb with the current state at
 * once, then with every published event, until the batch has ended (status
 * completed or cancelled with done = total) or cb returns non-zero. Events
 * missed while subscribing are covered by re-reading the hash. Returns 0 when
 * the batch ended, SL_ECANCELED when a caught signal interrupted it.
 */
SL_EXTERN int sl_batch_watch(sl_client_t *c, const char *queue, const char *batch, sl_line_cb cb,
                             void *ud);

/* Cancels a batch: no item of it starts any more. Items that are parked or
 * scheduled for later are counted cancelled at once, items still in the
 * streams when a worker meets them; an incomplete batch (its producer died)
 * gets its final total. Running items finish. */
SL_EXTERN int sl_batch_cancel(sl_client_t *c, const char *queue, const char *batch);
/* Cancels a batch and aborts its running items too: each worker learns it
 * with its next heartbeat (within a third of its visibility timeout), stops
 * the attempt (the handler's cancel hook) and the item is counted
 * cancelled. */
SL_EXTERN int sl_batch_abort(sl_client_t *c, const char *queue, const char *batch);

/* ---- Failed items, dead letters and the fleet ---- */

/*
 * Runs the failed items of a batch again. Every item whose result is
 * `failed` loses that result and its dead letter and goes back to its
 * priority stream as attempt 1; the batch's `failed` and `done` counters go
 * down by as many, and a completed batch is running again. Items are moved in
 * atomic steps of up to 1,000 (one event each); a second call finds nothing
 * left to move. *requeued (may be NULL) gets the number of items put back, on
 * success only. SL_ENOTFOUND: no such batch; SL_ECANCELED: the batch was
 * cancelled, so its items would not run; SL_EINVAL: a bad queue or batch id.
 */
SL_EXTERN int sl_batch_retry(sl_client_t *c, const char *queue, const char *batch, size_t *requeued);

/*
 * The queue's dead letters (items that failed for good), newest first, at
 * most `limit` (0: all): cb gets one JSON object per letter,
 * {"id","batch","index","item","type","attempts","at","error","priority"}:
 * the letter's stream id, the batch id, the item index, the item's id and type
 * (null when the letter holds no readable item), the attempts made, when it
 * failed (ms since the epoch, server clock), the error, and "high", "normal"
 * or "low". A non-zero return of cb stops the listing and is returned.
 */
SL_EXTERN int sl_dead_list(sl_client_t *c, const char *queue, size_t limit, sl_line_cb cb, void *ud);

/*
 * Runs the items of dead letters again, as sl_batch_retry does for one item:
 * the letters named by ids[0..nids) (stream ids, "MS-SEQ"), or when ids is
 * NULL the oldest `all_limit` letters (0: every letter there was when the call
 * began; letters of items that fail again meanwhile are not taken). A letter
 * whose item no longer has a failed result (its batch expired, or it was
 * retried already) is deleted and counted in *skipped; so is an id that is not
 * there. A letter whose item cannot run again (its batch was cancelled, or the
 * letter holds no item) is counted in *skipped and kept. *requeued and
 * *skipped (either may be NULL) are set on success. SL_EINVAL names a
 * malformed id; nothing is done then.
 */
SL_EXTERN int sl_dead_requeue(sl_client_t *c, const char *queue, const char *const *ids, size_t nids,
                              size_t all_limit, size_t *requeued, size_t *skipped);

/*
 * Deletes every dead letter of the queue at once. Results stay: failed items
 * are still failed, and sl_batch_retry still runs them again. *purged (may be
 * NULL) gets the number of letters deleted.
 */
SL_EXTERN int sl_dead_purge(sl_client_t *c, const char *queue, size_t *purged);

/*
 * The queue's live workers, in order of their ids: cb gets the JSON object
 * each worker publishes with its heartbeat ({"id","host","pid","queue",
 * "running","concurrency","started_at","succeeded","failed","retried",
 * "version"}) with "last_beat_ms_ago" added (server clock). A worker whose
 * registration expired (it stopped beating about three beats ago) is not
 * listed. A non-zero return of cb stops the listing and is returned.
 */
SL_EXTERN int sl_workers_list(sl_client_t *c, const char *queue, sl_line_cb cb, void *ud);

/* Pauses a batch: running items finish, no other item of it starts until
 * sl_batch_resume; its items are kept (parked), not lost. Pausing an ended
 * or cancelled batch is SL_EINVAL. */
SL_EXTERN int sl_batch_pause(sl_client_t *c, const char *queue, const char *batch);
/* Resumes a paused batch (a batch that is not paused is left as it is). */
SL_EXTERN int sl_batch_resume(sl_client_t *c, const char *queue, const char *batch);

/* ---- Rate limits ---- */

/*
 * Sets (or replaces) the fleet-wide limit NAME of a queue: items whose
 * rate_key is NAME start at most `burst` at once and `rate` on average
 * (rate "50/s", "3000/m" or "10000/h"; NULL: no rate), and at most
 * `concurrency` of them run at once across all workers (0: no limit). A
 * rate key with no limit set is not limited.
 */
SL_EXTERN int sl_limit_set(sl_client_t *c, const char *queue, const char *name, const char *rate, int burst,
                           int concurrency);
/* Sets the queue's default rate key: items without their own rate_key run
 * under it (applied when workers take them). NULL clears it. */
SL_EXTERN int sl_limit_default(sl_client_t *c, const char *queue, const char *name);
/* Removes a limit (and its bucket). SL_ENOTFOUND if there is none. */
SL_EXTERN int sl_limit_rm(sl_client_t *c, const char *queue, const char *name);
/* The queue's limits, one JSON object each: name, rate, burst, interval_us,
 * per_s, reserved_ahead_ms (how far ahead starts are already reserved). */
SL_EXTERN int sl_limit_list(sl_client_t *c, const char *queue, sl_line_cb cb, void *ud);

/*
 * The queue at a glance, as one JSON object: per priority (high, normal,
 * low) the items queued and running; totals; delayed (retries and items
 * scheduled for later), dead (dead letters), live workers, items ended in
 * the last minute and per second, and the rate limits (as sl_limit_list).
 * Free with sl_free.
 */
SL_EXTERN int sl_queue_stats(sl_client_t *c, const char *queue, char **json_out);

/* ---- Workers and handlers ---- */

typedef struct sl_worker sl_worker_t;
typedef struct sl_job sl_job_t;

/* sl_worker_opts.http_version */
#define SL_HTTP_DEFAULT 0            /* HTTP/2 where an https server offers it (ALPN), else HTTP/1.1 */
#define SL_HTTP_1_1 1                /* HTTP/1.1 only */
#define SL_HTTP_2_PRIOR_KNOWLEDGE 2  /* HTTP/2 without asking, plain http too (h2c servers) */

typedef struct sl_worker_opts {
  const char *redis_url; /* required */
  const char *queue;     /* NULL means "default" */
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
} sl_worker_opts;

/*
 * A handler starts the work of a job and returns at once; it finishes the job
 * later, exactly once, with sl_job_succeed or sl_job_fail (possibly from
 * inside the start callback). The job pointer stays valid until then.
 */
typedef void (*sl_handler_start_fn)(sl_job_t *job, void *ud);

/*
 * A new worker (not yet connected). It also sends the completion webhooks of
 * its queue, signed with SLUICE_WEBHOOK_SECRET from the environment, read
 * here: "whsec_" and the base64 of 24 to 64 random bytes (Standard Webhooks;
 * see README). Unset, webhooks go out unsigned and the worker logs warnings.
 * Returns SL_EINVAL with the reason in errbuf for a bad option or a secret
 * that is set but malformed, SL_ENOMEM; *out is set only on success.
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

/* Accessors, valid while the job is running. */
SL_EXTERN const char *sl_job_type(const sl_job_t *j);
SL_EXTERN const char *sl_job_batch(const sl_job_t *j);
SL_EXTERN const char *sl_job_payload(const sl_job_t *j, size_t *len); /* raw JSON text */
SL_EXTERN int sl_job_attempt(const sl_job_t *j);                      /* 1 for the first */
SL_EXTERN int64_t sl_job_timeout_ms(const sl_job_t *j);
SL_EXTERN void *sl_job_loop(const sl_job_t *j); /* the worker's uv_loop_t */

/* Reports the job's progress, 0-100 (clamped). Visible in `status --json`
 * and published on the batch's channel, at most every 500 ms per worker. */
SL_EXTERN void sl_job_progress(sl_job_t *j, int pct);
/* Finishes the job successfully. `result` is JSON text (NULL: no result).
 * Text that is not valid JSON is stored as a JSON string. */
SL_EXTERN void sl_job_succeed(sl_job_t *j, const char *result, size_t len);
/* Finishes the job as failed with a readable error (printf format). The
 * failure is retryable: with attempts left the item runs again after a
 * backoff with full jitter. */
SL_EXTERN void sl_job_fail(sl_job_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Before failing: the remote API asked to retry after `ms` (a 429 or 503
 * with Retry-After; capped at 5 minutes). The item's own retry waits at
 * least that long, and the item's rate limit is pushed back by as much for
 * the whole fleet. */
SL_EXTERN void sl_job_retry_after(sl_job_t *j, int64_t ms);
/* The same, but no further attempt can help (bad input, a 4xx answer). */
SL_EXTERN void sl_job_fail_final(sl_job_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Sets the job's cancel hook: called at most once, when the worker gives up
 * the attempt (its timeout passed, another worker took the item over, or a
 * stop passed its drain timeout). The handler then stops its work and
 * completes the job (sl_job_fail) to release it; that outcome is ignored.
 * Without a hook the handler's work runs on and its outcome is ignored.
 */
SL_EXTERN void sl_job_on_cancel(sl_job_t *j, void (*fn)(sl_job_t *j, void *ud), void *ud);

#ifdef __cplusplus
}
#endif
#endif /* SLUICE_SLUICE_H */
