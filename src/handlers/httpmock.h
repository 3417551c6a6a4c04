/*
 * Mock mode of the `http` handler (see httpmock.c): http items answered
 * from a file of canned responses (`sluice worker --http-mock FILE`,
 * sl_worker_opts.http_mock), matched on method and URL, with no request
 * sent, for running real item files in development without their keys.
 */
#ifndef SL_HANDLERS_HTTPMOCK_H
#define SL_HANDLERS_HTTPMOCK_H

#include <stddef.h>
#include <stdint.h>

#define SL_HTTPMOCK_FILE_MAX (16 * 1024 * 1024) /* a mock file, bytes */
#define SL_HTTPMOCK_MAX 1000                    /* responses in a mock file */
#define SL_HTTPMOCK_LATENCY_MAX 600000          /* latency_ms, ms */

typedef struct sl_httpmock sl_httpmock;         /* a loaded mock file */
typedef struct sl_httpmock_run sl_httpmock_run; /* one answer being waited for */

/* A canned answer, borrowed from the mock file (valid during the callback). */
typedef struct sl_httpmock_answer {
  int status;               /* the HTTP status */
  size_t nheaders;          /* response headers */
  char *const *name;        /* their names, as written in the file */
  char *const *value;       /* their values */
  const char *body;         /* the body's bytes (NULL when empty) */
  size_t body_len;          /* its length, bytes */
  int64_t retry_after_s;    /* the Retry-After header in seconds (a 429 or 503 honours it); 0: none */
  int64_t latency_ms;       /* how long the answer took, ms */
  int simulated;            /* 1: a fail_rate hit; the status is the entry's fail_status */
  int timed_out;            /* 1: the latency reached the request's timeout_ms: no answer at all */
} sl_httpmock_answer;

/* Called once per run, on the loop, after the latency; the run is freed
 * when it returns (do not cancel it from here). */
typedef void (*sl_httpmock_cb)(void *ud, const sl_httpmock_answer *a);

/*
 * Reads and checks the mock file at path (the format: httpmock.c). Returns
 * 0 and *out (free with sl__httpmock_free), SL_ENOMEM, or SL_EINVAL with a
 * message naming the file, the entry and the field:
 * `--http-mock mocks.json: responses[2].status: expected an integer from
 * 200 to 599, got "ok"`. *out is set only on success.
 */
int sl__httpmock_load(const char *path, sl_httpmock **out, char *err, size_t errlen);
void sl__httpmock_free(sl_httpmock *m);

/*
 * Answers a request of `method` to `url` from the first entry that matches
 * it: after the entry's latency (a timer on `loop`, a uv_loop_t), cb(ud,
 * answer) is called once. timeout_ms (0: none) is the request's own limit:
 * a latency that reaches it answers timed_out. Returns 0 and *out (for
 * sl__httpmock_cancel), SL_ENOMEM, or SL_ENOTFOUND with a message naming
 * the method and the URL without its query when no entry matches; on an
 * error return cb is never called.
 */
int sl__httpmock_start(const sl_httpmock *m, void *loop, const char *method, const char *url, int64_t timeout_ms,
                       sl_httpmock_cb cb, void *ud, sl_httpmock_run **out, char *err, size_t errlen);
/* Stops a run before its answer: cb is never called; its memory is freed
 * on the loop. */
void sl__httpmock_cancel(sl_httpmock_run *run);

#endif
