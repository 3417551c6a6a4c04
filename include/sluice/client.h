/*
 * sluice: producers and administrators.
 *
 * A client is one connection to the Redis of one or more queues. It submits
 * batches (validated completely before anything is written, then written in
 * chunks), follows and controls them, and administers dead letters, rate
 * limits and the function library. Every call is synchronous: a client is
 * never used on a worker's event loop.
 */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <sluice/sluice.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Client: a connection for producers and admin commands ---- */

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
/* Who acts through this client, as the batch log records it with what it
 * does (submit, cancel, abort, pause, resume, retry): by default "HOST pid
 * N (PROGRAM)"; who (at most 200 bytes, printable ASCII; others become
 * '?') replaces it, NULL restores the default. `sluice serve` names the
 * tenant of each request this way. */
SL_EXTERN void sl_client_set_actor(sl_client_t *c, const char *who);

/* ---- Batches: submit ---- */

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
  size_t chunk_items;    /* items per submit call, at most (a call also ends at 8 MiB); 0 means 1000 */
  /* Names this submit (1-256 bytes), or NULL: a second submit with the same
   * key within its TTL writes nothing, and sl_batch_submit gives the id of
   * the first batch (sl_batch_reused then says so), whatever its state. */
  const char *idempotency_key;
  int64_t idempotency_ttl_ms; /* how long the key is remembered, ms; 0: 24 hours */
  /* The tenant the batch belongs to (sluice serve), 1-64 characters of
   * [A-Za-z0-9_.-], or NULL; an idempotency key is then that tenant's. */
  const char *tenant;
  /* Labels to find the batch by, "key=value,key=value", or NULL: up to 16,
   * a key 1-63 characters of [A-Za-z0-9_./-], a value 0-63 of
   * [A-Za-z0-9_./:@+-], each key once. */
  const char *labels;
} sl_batch_opts;

/*
 * A new, empty batch to be filled with sl_batch_add (opts may be NULL).
 * Returns SL_EINVAL for an invalid option (the message in errbuf names it),
 * SL_ENOMEM, or SL_EIO when the kernel gives no random bytes (for the key of
 * the batch's id hash); *out is set only on success.
 */
SL_EXTERN int sl_batch_new(const sl_batch_opts *opts, sl_batch_t **out, char *errbuf, size_t errlen);
SL_EXTERN void sl_batch_free(sl_batch_t *b);
/* The distinct item types added so far, first seen first (at most 32 are
 * remembered): types[0..max) get them, valid while b lives; returns how
 * many. With sl_fleet_unserved a producer learns which no worker serves. */
SL_EXTERN size_t sl_batch_types(const sl_batch_t *b, const char **types, size_t max);

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
/* The item that holds the i-th skipped item's dedupe key, as "BATCH:INDEX"
 * (an earlier item of this batch, or of another batch); NULL past the end. */
SL_EXTERN const char *sl_batch_skipped_holder(const sl_batch_t *b, size_t i);
/* After sl_batch_submit: 1 when its idempotency key had been used within its
 * TTL, so nothing was written and the id given is the first batch's; else 0. */
SL_EXTERN int sl_batch_reused(const sl_batch_t *b);

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
/* A page of them: from item index `from`, at most `limit` lines (0: all).
 * *next (may be NULL) gets the index to go on from, or 0 when the batch's
 * items have all been looked at. */
SL_EXTERN int sl_batch_results_page(sl_client_t *c, const char *queue, const char *batch, int flags, size_t from,
                                    size_t limit, size_t *next, sl_line_cb cb, void *ud);

/* The queue's batches, newest first, as status objects; `status` filters
 * when not NULL; at most `limit` (0: all). */
SL_EXTERN int sl_batch_list(sl_client_t *c, const char *queue, const char *status, size_t limit,
                            sl_line_cb cb, void *ud);
/* The same, starting after batch `after` (NULL: from the newest), the way
 * to page: pass the last batch of one page to get the next. Batches are
 * read 100 per round trip; batches added meanwhile are newer than the
 * page, so every batch is shown once. SL_ENOTFOUND when `after` is not in
 * the list (it expired). */
SL_EXTERN int sl_batch_list_after(sl_client_t *c, const char *queue, const char *status, size_t limit,
                                  const char *after, sl_line_cb cb, void *ud);

/*
 * The batch's log, oldest first, each entry as one JSON object (see
 * docs/PROTOCOL.md, "The batch log"): {"seq","at","event", then the
 * entry's fields: "index", "item", "attempt", "by", "error", ...}. `item`:
 * only the entries of the item with this id, or NULL for all. With
 * `follow`, waits for new entries until the batch has ended. Returns 0,
 * SL_ENOTFOUND (no such batch), or what cb returned when it was not 0.
 */
SL_EXTERN int sl_batch_log(sl_client_t *c, const char *queue, const char *batch, const char *item, int follow,
                           sl_line_cb cb, void *ud);

/* The results line of item `index` of the batch (*line_out, free it with
 * sl_free), or NULL when the item has not finished. SL_ENOTFOUND when there
 * is no such batch. */
SL_EXTERN int sl_item_result(sl_client_t *c, const char *queue, const char *batch, size_t index, char **line_out);
/* The index of the finished item with this id (the first, in index order),
 * reading the results 1,000 lines per round trip. SL_ENOTFOUND when no
 * finished item has it (or no such batch). */
SL_EXTERN int sl_item_find(sl_client_t *c, const char *queue, const char *batch, const char *id, size_t *index);

/* What sl_batch_list_with lists. */
typedef struct sl_list_opts {
  const char *status;   /* only batches in this status, or NULL */
  const char *tenant;   /* only this tenant's batches (its own index), or NULL */
  const char *name;     /* only batches of this name, or NULL */
  const char *after;    /* start after this batch (a cursor), or NULL: from the newest */
  size_t limit;         /* at most this many (0: all) */
  size_t max_examined;  /* stop after looking at about this many batches (0: no bound) */
  char *last;           /* SL_LIST_CURSOR_MAX bytes, or NULL: gets the cursor to go on from ("" at the end) */
  const char *label;    /* only batches with these labels, "key" or "key=value", comma-separated (all must hold), or NULL */
} sl_list_opts;
#define SL_LIST_CURSOR_MAX 128
/* The queue's batches that match o, newest first, as status objects. */
SL_EXTERN int sl_batch_list_with(sl_client_t *c, const char *queue, const sl_list_opts *o, sl_line_cb cb, void *ud);

/*
 * Follows a batch live through pub/sub: calls cb with the current state at
 * once, then with every published event, until the batch has ended (status
 * completed or cancelled with done = total) or cb returns non-zero (then
 * that is returned). Events missed while subscribing are covered by
 * re-reading the hash. A lost connection (Redis restarted, a broken link)
 * is reconnected: the channel is subscribed again and the hash read again,
 * so the state reached meanwhile, the end included, is not missed; after 60
 * seconds without Redis it gives up. Returns 0 when the batch ended,
 * SL_ECANCELED when a caught signal interrupted it, SL_ECONN when Redis
 * could not be reached again in time (sl_client_errstr gives the last
 * cause), SL_ENOTFOUND when there is no such batch (also when Redis came
 * back without it).
 */
SL_EXTERN int sl_batch_watch(sl_client_t *c, const char *queue, const char *batch, sl_line_cb cb,
                             void *ud);

/* Options of sl_batch_watch_with. */
typedef struct sl_watch_opts {
  int64_t give_up_ms; /* after losing Redis, keep trying to reconnect this long, ms; 0 means 60000 */
  /* Called, if not NULL, when the connection is lost (up = 0, cause: why,
   * valid during the call) and when the watch is back on a new one (up = 1,
   * cause NULL): once each per outage, however many attempts it takes. ud
   * is the watch's ud. */
  void (*on_link)(int up, const char *cause, void *ud);
} sl_watch_opts;

/* sl_batch_watch with options (NULL: the defaults). */
SL_EXTERN int sl_batch_watch_with(sl_client_t *c, const char *queue, const char *batch, const sl_watch_opts *opts,
                                  sl_line_cb cb, void *ud);

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

/* What sl_batch_repair found and did. */
typedef struct sl_repair_report {
  char status[16];     /* the batch's status before the repair */
  long long total;     /* its items */
  long long done;      /* its items ended before the repair */
  int whole;           /* 1 once every item was submitted (only such a batch is searched) */
  int searches;        /* searches run (one more each time an item moved during one) */
  long long missing;   /* items found nowhere, not even stuck in a stream */
  long long put_back;  /* stuck stream entries put back at the end of their stream */
  long long ended;     /* missing items ended: `failed` as lost (`cancelled` in a cancelled batch) */
} sl_repair_report;

/*
 * Finds the items of an unfinished batch that are nowhere (no stream,
 * retry set, parked or waiting list, no result: Redis lost them, or they
 * were deleted by hand) and makes the batch able to end: entries stuck in a
 * stream where no worker reads them any more are put back; items whose
 * data is gone are ended, `failed` with an error that says so (`cancelled`
 * in a cancelled batch), and counted in the batch's `lost` field. Reads the
 * queue in bounded steps (never one long call); a batch still being
 * submitted or already ended is left alone. SL_ENOTFOUND: no such batch;
 * SL_EAGAIN: items kept moving during every search (run it again).
 */
SL_EXTERN int sl_batch_repair(sl_client_t *c, const char *queue, const char *batch, sl_repair_report *rep);

/* ---- Failed items, dead letters and the fleet ---- */

/*
 * Runs the failed items of a batch again. Every item whose result is
 * `failed` loses that result and its dead letter and goes back to its
 * priority stream as attempt 1; the batch's `failed` and `done` counters go
 * down by as many, and a completed batch is running again. Items are moved in
 * atomic steps of about 100 (one event each); a second call finds nothing
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
 * "version","types": the item types it serves}) with "last_beat_ms_ago" added (server clock). A worker whose
 * registration expired (it stopped beating about three beats ago) is not
 * listed. A non-zero return of cb stops the listing and is returned.
 */
SL_EXTERN int sl_workers_list(sl_client_t *c, const char *queue, sl_line_cb cb, void *ud);
/* Which of the item types types[0..n) no live worker of the queue serves
 * (workers register their types with their heartbeat): written to missing
 * as "a, b" ("" when every type is served), and *live (if not NULL) gets
 * the number of live workers. A producer warns with it after a submit. */
SL_EXTERN int sl_fleet_unserved(sl_client_t *c, const char *queue, const char *const *types, size_t n, char *missing,
                                size_t len, int *live);

/* What holds a batch's unfinished items back, as JSON (*json_out, freed
 * with sl_free): {"now":MS,"types":[{"type","live","since"}],"held":[{
 * "worker","items","last_beat_at","takeover_at"}]}. types: each item type
 * of the batch, live when a live worker of the queue serves it, else since
 * when none has (null: none in the last day). held: workers that stopped
 * heartbeating while holding items of the batch, with how many, their last
 * beat and when the first of them may be taken over (times in ms, on the
 * server's clock, also "now"). At most the first 1,000 items workers hold
 * are examined. */
SL_EXTERN int sl_batch_stuck(sl_client_t *c, const char *queue, const char *batch, char **json_out);

/* Options of sl_batch_items. */
typedef struct sl_items_opts {
  const char *state; /* only items in this state (running, waiting, retrying, scheduled, paused,
                        queued), or NULL for all */
  size_t limit;      /* the most items listed; 0: 1,000 */
  size_t scan_max;   /* the most entries examined in each place the whole queue shares (the
                        streams, the limits' waiting streams); 0: 100,000 */
  int more;          /* set by sl_batch_items: 1 when it stopped at limit or scan_max */
} sl_items_opts;

/* The batch's unfinished items with their state: cb gets one JSON object
 * per item, {"index","id","state","attempt"} and, by state: "since" and
 * "worker" (running), "until" (waiting out a rate limit) or "detail"
 * ("lease NAME": waiting for a concurrency lease), "due" (retrying,
 * scheduled), "taken_from_stopped_worker" (queued again after a takeover).
 * Running items come first, then waiting, retrying and scheduled, paused,
 * queued. A snapshot taken in bounded steps (docs/PROTOCOL.md,
 * sluice_v1_items): an item that moves meanwhile may be listed twice or
 * not at all. o may be NULL. */
SL_EXTERN int sl_batch_items(sl_client_t *c, const char *queue, const char *batch, sl_items_opts *o,
                             sl_line_cb cb, void *ud);

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
 * rate key with no limit set is not limited. Items waiting for the limit's
 * leases that may run under the new limit (as many as leases are free; all
 * without a concurrency) are sent back to their streams before it returns,
 * at most 1,000 per Redis call. On an error after the limit was written,
 * c's errstr says how many had been woken.
 */
SL_EXTERN int sl_limit_set(sl_client_t *c, const char *queue, const char *name, const char *rate, int burst,
                           int concurrency);
/* Sets the queue's default rate key: items without their own rate_key run
 * under it (applied when workers take them). NULL clears it. */
SL_EXTERN int sl_limit_default(sl_client_t *c, const char *queue, const char *name);
/* Removes a limit, its bucket and its leases, and sends the items waiting
 * for its leases back to their streams (at most 1,000 per Redis call; also
 * those an earlier removal left). SL_ENOTFOUND if there is none. */
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

#ifdef __cplusplus
}
#endif
#endif /* SLUICE_CLIENT_H */
