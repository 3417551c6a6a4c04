/*
 * sluice: the handler contract.
 *
 * A job is one attempt of an item, handed to the handler of its type. The
 * handler reads what it needs through the accessors below, does its work
 * without blocking the loop, and ends the job exactly once: sl_job_succeed,
 * sl_job_succeed_base64, sl_job_fail (retryable), sl_job_fail_final,
 * sl_job_refuse or sl_job_give_back. The job pointer is valid until then. When the worker gives
 * the attempt up first (timeout, takeover, abort, stop), it calls the cancel
 * hook (sl_job_on_cancel); the handler still ends the job, and that outcome
 * is ignored. These are the only functions a handler needs, the built-in
 * ones included.
 */
#ifndef SLUICE_JOB_H
#define SLUICE_JOB_H

#include <sluice/sluice.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A handler starts the work of a job and returns at once; it finishes the job
 * later, exactly once, with sl_job_succeed or sl_job_fail (possibly from
 * inside the start callback). The job pointer stays valid until then.
 */
typedef void (*sl_handler_start_fn)(sl_job_t *job, void *ud);

/* Accessors, valid while the job is running. */
SL_EXTERN const char *sl_job_type(const sl_job_t *j);
SL_EXTERN const char *sl_job_batch(const sl_job_t *j);
SL_EXTERN const char *sl_job_payload(const sl_job_t *j, size_t *len); /* raw JSON text */
SL_EXTERN int sl_job_attempt(const sl_job_t *j);                      /* 1 for the first */
SL_EXTERN int64_t sl_job_timeout_ms(const sl_job_t *j);
SL_EXTERN void *sl_job_loop(const sl_job_t *j); /* the worker's uv_loop_t */
/* The item's id as its results line shows it (unescaped; may hold any
 * character but NUL: quote it before it reaches a shell), and its index in
 * the batch, from 0. */
SL_EXTERN const char *sl_job_item_id(const sl_job_t *j);
SL_EXTERN int64_t sl_job_index(const sl_job_t *j);
/* The id of the worker running the job (for messages). */
SL_EXTERN const char *sl_job_worker_id(const sl_job_t *j);

/* Reports the job's progress, 0-100 (clamped). Visible in `status --json`
 * and published on the batch's channel, at most every 500 ms per worker. */
SL_EXTERN void sl_job_progress(sl_job_t *j, int pct);
/* Adds a line to the attempt's log, kept with its outcome: in the results
 * line ("log") and, for a failed attempt that is retried, in the batch log
 * (`sluice item` shows both). The newest 20 lines of at most 256 bytes
 * each, 2 KiB in all, are kept; control characters become spaces. An exec
 * child's stderr lines and an http item's request summary go here too. */
SL_EXTERN void sl_job_log(sl_job_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reports a numeric metric of the attempt, such as sl_job_metric(job,
 * "cost", 0.034): values of one name add up. The batch sums every metric
 * over all attempts and over the final ones (`sluice status`). A name is
 * 1-63 characters of [A-Za-z0-9_.-], at most 16 per attempt; returns 0,
 * SL_EINVAL (bad name or a value that is not finite) or SL_ETOOBIG. An exec
 * child reports with a stderr line "metric cost 0.034". */
SL_EXTERN int sl_job_metric(sl_job_t *j, const char *name, double value);
/* Finishes the job successfully. `result` is JSON text (NULL: no result).
 * Text that is not valid JSON is stored as a JSON string. */
SL_EXTERN void sl_job_succeed(sl_job_t *j, const char *result, size_t len);
/* Finishes the job successfully with bytes that need not be text: they are
 * stored base64-encoded, with "encoding":"base64" in the results line. A
 * result over 1 MiB once encoded fails the job for good instead. */
SL_EXTERN void sl_job_succeed_base64(sl_job_t *j, const void *bytes, size_t len);
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
/* Ends the job as refused: the item asks for something this worker's
 * operator did not grant it (a secret, say). Final and counted failed (and
 * refused), with no dead letter: the fleet's configuration is at fault, not
 * the work, and `sluice retry` runs the item again once it is granted. */
SL_EXTERN void sl_job_refuse(sl_job_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Ends the job without an outcome and without counting the attempt: this
 * worker lacked a resource of its own to run it: memory, or file
 * descriptors (EMFILE or ENFILE), which the built-in handlers give back for. The
 * item goes back to the end of its stream as it was (the same attempt
 * number, like the items a stopping worker gives back) and runs again, here
 * or on another worker; the worker logs the reason (printf format) and
 * starts no new item for about a second. Never for a failure of the work
 * itself: an item given back every time would go round for ever.
 */
SL_EXTERN void sl_job_give_back(sl_job_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
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
#endif /* SLUICE_JOB_H */
