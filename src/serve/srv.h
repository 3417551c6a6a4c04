/*
 * The rooms of `sluice serve`, and what they share.
 *
 *   serve.c   the process: options, the libmicrohttpd daemon on the libuv
 *             loop (its epoll descriptor polled, its timeout a uv timer),
 *             signals, a clean stop
 *   route.c   one HTTP request: authentication, routing, the body, the
 *             response (JSON errors of one shape); suspends a request while
 *             its Redis work runs and resumes it with the answer
 *   auth.c    bearer tokens: the file of hashed tokens, tenant and role
 *   work.c    Redis calls off the loop: the loop's thread pool, each job
 *             with a blocking client from a small pool
 *   options.c the batch options of a submit, one by one
 *   upload.c  request bodies as they stream in: NDJSON lines, or the items
 *             of a JSON {"items":[...],"options":{...}}, into a batch
 *   api.c     the /v1 endpoints on batches and the probes
 *   api_queue.c  results pages, queue stats, workers, dead letters, limits
 *   metrics.c GET /metrics, in the Prometheus text format
 *   sse.c     live events: one subscription per queue, shared by every
 *             event stream of that queue
 *
 * Dependencies point one way: serve -> route -> api -> (upload, sse, work,
 * auth); everything may use the library's own modules (buf, json, url,
 * uvredis) and its public API.
 */
#ifndef SL_SRV_H
#define SL_SRV_H

#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>
#include <uv.h>

#include <sluice/serve.h>
#include <sluice/sluice.h>

#include "buf.h"

#define SRV_MAX_QUEUES 16        /* queues one server serves */
#define SRV_TENANT_MAX 64        /* a tenant name, characters */

/* What a token may do. Each role includes those before it. */
typedef enum srv_role {
  ROLE_NONE = 0,   /* no token (GET /v1/me alone answers it) */
  ROLE_READ = 1,   /* read its tenant's batches, follow their events */
  ROLE_SUBMIT = 2, /* and submit, cancel, pause, resume and retry them */
  ROLE_ADMIN = 3   /* and every tenant's batches, the queue's workers, dead letters and limits */
} srv_role;

/* Who is calling. */
typedef struct srv_principal {
  char tenant[SRV_TENANT_MAX + 1]; /* "" when the server has no tokens file */
  srv_role role;
  /* submit quotas of the tenant (a token bucket each): emission interval
   * (us) and burst; 0: none */
  uint64_t batches_t_us, items_t_us;
  uint64_t batches_burst, items_burst;
} srv_principal;

typedef struct srv_auth srv_auth;
typedef struct srv_pool srv_pool;
typedef struct srv_hub srv_hub;

/* The server. */
typedef struct sl_srv {
  uv_loop_t loop;
  struct MHD_Daemon *mhd;
  uv_poll_t mhd_poll;     /* the daemon's epoll descriptor */
  uv_timer_t mhd_timer;   /* the daemon's next timeout */
  uv_signal_t sig_term;
  uv_signal_t sig_int;
  uv_signal_t sig_hup;
  uv_timer_t stop_timer;  /* while stopping: waits for requests in flight */
  const char *redis_url;
  const char *queues[SRV_MAX_QUEUES];
  size_t nqueues;
  size_t max_body;
  const char *cors_origin;
  unsigned idle_timeout_s;
  uint64_t keepalive_ms;
  const char *tokens_file;
  int quiet;
  int stopping;           /* SIGTERM seen: no new requests, streams closing */
  uint64_t stop_at;       /* when (uv_now) */
  size_t inflight;        /* requests with Redis work running */
  srv_auth *auth;
  srv_pool *pool;
  srv_hub *hub;
} sl_srv;

typedef struct srv_upload srv_upload;
/* Redis work of a request (work.c): run on the thread pool, done on the loop. */
typedef void (*srv_run_fn)(sl_client_t *c, const char *open_err, void *arg);
typedef void (*srv_done_fn)(void *arg);

/* One HTTP request, from its first call to its completion. */
typedef struct srv_req {
  sl_srv *s;
  struct MHD_Connection *con;
  char method[8];
  char path[256];           /* the URL path, without the query */
  const char *queue;        /* the served queue it is about */
  srv_principal who;
  int started;              /* its handler ran (for bodies: the body was all read) */
  int suspended;            /* waiting for its Redis work */
  int ready;                /* the answer below is ready to be sent */
  unsigned status;          /* HTTP status of the answer */
  sl_buf body;              /* JSON of the answer */
  char retry_after[24];     /* a Retry-After value, or "" */
  const char *ctype;        /* the answer's Content-Type; NULL: application/json */
  int ui;                   /* a file of the dashboard: sent with its security headers */
  char next_cursor[SL_LIST_CURSOR_MAX]; /* an X-Next-Cursor value, or "" */
  struct MHD_Response *stream; /* an event stream to send instead, or NULL */
  srv_upload *up;           /* the body of POST /v1/batches as it arrives, or NULL */
  int want_body;            /* a small JSON body is read into `small` (limits, dead letters) */
  sl_buf small;
  size_t body_len;          /* body bytes seen */
  int body_refused;         /* the body was refused (too large, bad): the rest is skipped */
  int first_call;           /* in MHD's first call (the headers alone) */
  srv_run_fn pending_run;   /* work asked for in the first call, started on the next */
  srv_done_fn pending_done;
  void *pending_arg;
  char batch[80];           /* the batch of the path, or "" */
  char action[16];          /* cancel, pause, resume, retry, events, results, or "" */
} srv_req;

/* ---- ui.c ---- */
/* 1 when path is the dashboard's ("/" or "/ui/..."): it needs no token. */
int srv_ui_path(const char *path);
/* Answers a GET of the dashboard's files: 1 when req was one (answered), else 0. */
int srv_ui(srv_req *req);

/* ---- route.c ---- */
/* The answer of req: an error, always JSON of one shape
 * {"error":{"code":C,"message":M[,"field":F][,"line":N]}}; line < 1: none. */
void srv_error(srv_req *req, unsigned status, const char *code, const char *field, long line, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* The answer of req: status and a JSON body (taken: freed by the request). */
void srv_answer(srv_req *req, unsigned status, char *json);
/* Resumes a request whose Redis work ended (its answer is set). */
void srv_resume(srv_req *req);
/* Runs the request's Redis work and suspends it until done(arg) answers;
 * asked for in MHD's first call, the work starts on the next one (a
 * connection suspended before the request is whole would not be kept
 * alive). 0, or SL_ENOMEM (nothing started; arg is the caller's). */
int srv_start_work(srv_req *req, srv_run_fn run, srv_done_fn done, void *arg);
/* A query argument of the request, or NULL. */
const char *srv_arg(srv_req *req, const char *name);

/* ---- api.c ---- */
/* Handles a request whose route and principal are known; for a body, each
 * piece as it comes (upload_size > 0) and then once more with none. */
enum MHD_Result srv_api(srv_req *req, const char *upload, size_t *upload_size);

/* ---- api.c: shared with api_queue.c ---- */
typedef struct cJSON cJSON;
/* What went wrong with a Redis job: the answer's status, code, message. */
typedef struct srv_failure {
  unsigned status;
  const char *code;
  char err[700];
} srv_failure;
/* A failed library call (rc, with c's errstr) as a failure; what says
 * what was being done (for SL_ENOTFOUND: the whole message). */
void srv_fail(srv_failure *f, sl_client_t *c, int rc, const char *what);
/* The batch's state if who may see it: 0, SL_ENOTFOUND (also for another
 * tenant's batch), or the library's error. *json (sl_free) and *parsed
 * (cJSON_Delete) are set on success. */
int srv_batch_state(sl_client_t *c, const char *queue, const char *batch, const srv_principal *who, char **json,
                    cJSON **parsed);

/* ---- api_queue.c ---- */
/* Results pages, queue stats, workers, dead letters and limits: 1 when
 * the request was one of these (answered or started), 0 when not. */
int srv_api_queue(srv_req *req);
/* Bodies of PUT /v1/limits/{name} and POST /v1/dead/requeue, when the
 * whole body was read (req->small). */
void srv_api_queue_body(srv_req *req);

/* ---- metrics.c ---- */
/* GET /metrics (answered or started); returns 1. */
int srv_metrics(srv_req *req);

/* ---- options.c ---- */
/* Batch options being read, and the strings they point at. */
typedef struct srv_options {
  sl_batch_opts opts;
  char *store[16];
  size_t n;
} srv_options;
/* One option, from a query argument (sval) or an "options" member (jval).
 * 0, or -1 with req's answer set. */
int srv_option_set(srv_req *req, srv_options *o, const char *k, const char *sval, const cJSON *jval);
void srv_options_free(srv_options *o);

/* ---- upload.c ---- */
/* The body of POST /v1/batches: NDJSON lines or JSON {"items","options"}. */
srv_upload *srv_upload_new(srv_req *req, int ndjson);
/* Feeds n bytes; 0, or -1 once the body is refused (the answer is set). */
int srv_upload_feed(srv_upload *u, const char *p, size_t n);
/* The whole body was fed: the batch to submit, built and validated; NULL
 * when it was refused (the answer is set). The upload keeps the batch. */
sl_batch_t *srv_upload_finish(srv_upload *u);
void srv_upload_free(srv_upload *u);

/* ---- serve.c ---- */
/* MHD must look at its connections again (after a resume). */
void srv_kick(sl_srv *s);
void srv_log(sl_srv *s, int warn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- route.c (MHD's callbacks) ---- */
enum MHD_Result srv_on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls);
void srv_on_completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode toe);

/* ---- auth.c ---- */
/* Loads the tokens file; NULL path: no authentication. 0, or SL_EINVAL
 * with the line and the reason in err. */
int srv_auth_load(const char *path, srv_auth **out, char *err, size_t errlen);
void srv_auth_free(srv_auth *a);
/* The principal of a bearer token; 0, or -1 when the token is unknown. */
int srv_auth_check(const srv_auth *a, const char *token, srv_principal *p);
/* 1 when the server has tokens (authentication on). */
int srv_auth_on(const srv_auth *a);

/* ---- work.c ---- */
/* Runs run(c, arg) on the thread pool with a blocking client of the
 * server's Redis (NULL if it cannot be opened: run then reports why, from
 * open_err), then done(arg) on the loop. 0, or SL_ENOMEM. */
int srv_work(sl_srv *s, srv_run_fn run, srv_done_fn done, void *arg, const char *actor);
int srv_pool_new(const char *url, srv_pool **out);
void srv_pool_free(srv_pool *p);
/* Closes the client after a failed call, so the next job opens a new one. */
void srv_pool_discard(sl_client_t *c);

/* ---- sse.c ---- */
int srv_hub_start(sl_srv *s);
/* Closes every stream (they end) and the subscriptions. */
void srv_hub_stop(sl_srv *s);
/* Closes its timers; the loop's last run frees it. */
void srv_hub_free(sl_srv *s);
/* The response of a new event stream of one batch (batch != NULL) or of
 * the queue's batches of a tenant; NULL on ENOMEM. */
struct MHD_Response *srv_sse_open(sl_srv *s, struct MHD_Connection *con, const char *queue, const char *batch,
                                  const srv_principal *p);

#endif
