/*
 * One HTTP request of `sluice serve`: from MHD's first call to its
 * completion.
 *
 * The first call (no body yet) makes the request's state, refuses it early
 * when the server is stopping, checks the bearer token and the queue, and
 * splits the path into the batch and the action. Later calls pass the body
 * piece by piece to the endpoint (api.c), which answers at once or starts
 * Redis work and suspends the connection; when the work ends, the answer
 * is stored and the connection resumed, and the next call sends it.
 *
 * Every error is JSON of one shape, {"error":{"code","message"[,"field"]
 * [,"line"]}}, with a status that says what kind it is; nothing answers a
 * bare 500. Headers: Content-Type, Cache-Control: no-store, the CORS ones
 * only with --cors ORIGIN, Retry-After where one applies.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "json.h"
#include "srv.h"

#define BATCH_CHARS "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"

const char *srv_arg(srv_req *req, const char *name) {
  return MHD_lookup_connection_value(req->con, MHD_GET_ARGUMENT_KIND, name);
}

void srv_answer(srv_req *req, unsigned status, char *json) {
  sl__buf_reset(&req->body);
  if (json == NULL || sl__buf_puts(&req->body, json) != 0) {
    sl__buf_reset(&req->body);
    status = 503;
    sl__buf_puts(&req->body, "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"the server is out of memory\"}}");
  }
  sl_free(json);
  req->status = status;
  req->ready = 1;
}

void srv_error(srv_req *req, unsigned status, const char *code, const char *field, long line, const char *fmt, ...) {
  char msg[1024];
  sl_buf b;
  va_list ap;
  int rc;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  sl__buf_init(&b, 64 * 1024);
  rc = sl__buf_printf(&b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
  if (rc == 0)
    rc = sl__json_put_str(&b, msg, strlen(msg));
  if (rc == 0 && field != NULL) {
    rc = sl__buf_puts(&b, ",\"field\":");
    if (rc == 0)
      rc = sl__json_put_str(&b, field, strlen(field));
  }
  if (rc == 0 && line > 0)
    rc = sl__buf_printf(&b, ",\"line\":%ld", line);
  if (rc == 0)
    rc = sl__buf_puts(&b, "}}");
  srv_answer(req, status, rc == 0 ? sl__buf_take(&b) : NULL);
  sl__buf_free(&b);
}

void srv_resume(srv_req *req) {
  if (req->suspended) {
    req->suspended = 0;
    MHD_resume_connection(req->con);
    srv_kick(req->s);
  }
}

/* Who acts for the request, as batch logs record it: the server (host,
 * pid) and the caller's tenant and role. */
static void req_actor(const srv_req *req, char *out, size_t len) {
  static const char *const roles[] = {"none", "read", "submit", "admin"};
  char host[128] = "?";

  gethostname(host, sizeof(host) - 1);
  host[sizeof(host) - 1] = '\0';
  snprintf(out, len, "%s pid %ld (sluice serve) tenant %s, role %s", host, (long)getpid(),
           req->who.tenant[0] ? req->who.tenant : "-", (unsigned)req->who.role < 4 ? roles[req->who.role] : "?");
}

int srv_start_work(srv_req *req, srv_run_fn run, srv_done_fn done, void *arg) {
  char actor[201];

  if (req->first_call) {
    req->pending_run = run;
    req->pending_done = done;
    req->pending_arg = arg;
    return 0;
  }
  req_actor(req, actor, sizeof(actor));
  if (srv_work(req->s, run, done, arg, actor) != 0)
    return SL_ENOMEM;
  req->suspended = 1;
  MHD_suspend_connection(req->con);
  return 0;
}

/* The work asked for in the first call, started now. */
static void start_pending(srv_req *req) {
  srv_run_fn run = req->pending_run;
  char actor[201];

  req->pending_run = NULL;
  req_actor(req, actor, sizeof(actor));
  if (srv_work(req->s, run, req->pending_done, req->pending_arg, actor) != 0) {
    req->pending_done(req->pending_arg); /* answers, without Redis: it did not run */
    return;
  }
  req->suspended = 1;
  MHD_suspend_connection(req->con);
}

static enum MHD_Result send_answer(srv_req *req) {
  struct MHD_Response *r;
  enum MHD_Result ret;
  unsigned status = req->status;

  if (req->stream != NULL) {
    r = req->stream;
    req->stream = NULL;
    status = 200;
  } else {
    r = MHD_create_response_from_buffer(req->body.len, req->body.p, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
      return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, req->ctype ? req->ctype : "application/json");
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (req->s->cors_origin != NULL) {
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, req->s->cors_origin);
    MHD_add_response_header(r, "Vary", "Origin");
    MHD_add_response_header(r, "Access-Control-Expose-Headers", "Retry-After, X-Next-Cursor");
    if (strcmp(req->method, "OPTIONS") == 0) {
      MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS");
      MHD_add_response_header(r, "Access-Control-Allow-Headers",
                              "Authorization, Content-Type, Idempotency-Key, Last-Event-ID");
      MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    }
  }
  if (req->ui) {
    /* the dashboard: scripts, styles and connections of this origin only */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
  }
  if (req->retry_after[0] != '\0')
    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, req->retry_after);
  if (req->next_cursor[0] != '\0')
    MHD_add_response_header(r, "X-Next-Cursor", req->next_cursor);
  if (status == 401)
    MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"sluice\"");
  ret = MHD_queue_response(req->con, status, r);
  MHD_destroy_response(r);
  req->ready = 0;
  req->started = 1;
  return ret;
}

/* /v1/batches/ID[/ACTION] into req->batch and req->action; -1 if the id
 * cannot be one. */
static int split_batch_path(srv_req *req, const char *rest) {
  size_t n = strcspn(rest, "/");

  if (n == 0 || n >= sizeof(req->batch) || n > 64 || strspn(rest, BATCH_CHARS) < n)
    return -1;
  memcpy(req->batch, rest, n);
  req->batch[n] = '\0';
  if (rest[n] == '\0')
    return 0;
  if (strlen(rest + n + 1) >= sizeof(req->action) || strchr(rest + n + 1, '/') != NULL)
    return -1;
  snprintf(req->action, sizeof(req->action), "%s", rest + n + 1);
  return 0;
}

/* The bearer token's principal; 0, or -1 with the answer set. */
static int authenticate(srv_req *req) {
  const char *h = MHD_lookup_connection_value(req->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);

  if (!srv_auth_on(req->s->auth)) {
    req->who.tenant[0] = '\0';
    req->who.role = ROLE_ADMIN;
    return 0;
  }
  if (h == NULL) {
    srv_error(req, 401, "unauthorized", NULL, 0, "this server needs a bearer token: Authorization: Bearer TOKEN");
    return -1;
  }
  if (strncasecmp(h, "Bearer ", 7) != 0 || srv_auth_check(req->s->auth, h + 7, &req->who) != 0) {
    srv_error(req, 401, "unauthorized", NULL, 0, "the bearer token is not one of this server's");
    return -1;
  }
  return 0;
}

/* The first call: state, token, queue, route. Returns the request, whose
 * answer may already be set (an early refusal). */
static srv_req *begin(sl_srv *s, struct MHD_Connection *con, const char *url, const char *method) {
  srv_req *req = sl_malloc(sizeof(*req));
  const char *q;

  if (req == NULL)
    return NULL;
  memset(req, 0, sizeof(*req));
  req->s = s;
  req->con = con;
  sl__buf_init(&req->body, 16 * 1024 * 1024);
  sl__buf_init(&req->small, 64 * 1024);
  snprintf(req->method, sizeof(req->method), "%s", method);
  if (s->stopping) {
    srv_error(req, 503, "shutting_down", NULL, 0, "the server is stopping");
    return req;
  }
  if (strlen(url) >= sizeof(req->path)) {
    srv_error(req, 404, "not_found", NULL, 0, "no such path");
    return req;
  }
  snprintf(req->path, sizeof(req->path), "%s", url);
  if (strcmp(method, "OPTIONS") == 0) {
    /* a CORS preflight: answered only with --cors ORIGIN */
    if (s->cors_origin != NULL)
      srv_answer(req, 204, sl_strdup(""));
    else
      srv_error(req, 405, "method_not_allowed", NULL, 0, "OPTIONS is answered only with --cors ORIGIN");
    return req;
  }
  if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 || strcmp(url, "/v1/openapi.json") == 0 ||
      srv_ui_path(url))
    return req; /* no token needed: probes, the API's description and the dashboard's files */
  if (strcmp(url, "/v1/me") == 0 &&
      MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION) == NULL) {
    /* who am I, without a token: nobody (so the dashboard learns that it
     * must ask for one without a refused request) */
    req->who.tenant[0] = '\0';
    req->who.role = srv_auth_on(s->auth) ? ROLE_NONE : ROLE_ADMIN;
    return req;
  }
  if (authenticate(req) != 0)
    return req;
  q = srv_arg(req, "queue");
  req->queue = s->queues[0];
  if (q != NULL) {
    req->queue = NULL;
    for (size_t i = 0; i < s->nqueues; i++) {
      if (strcmp(q, s->queues[i]) == 0)
        req->queue = s->queues[i];
    }
    if (req->queue == NULL) {
      srv_error(req, 404, "unknown_queue", "queue", 0, "this server does not serve queue \"%.64s\"", q);
      return req;
    }
  }
  if (strncmp(url, "/v1/batches/", 12) == 0 && split_batch_path(req, url + 12) != 0)
    srv_error(req, 404, "not_found", NULL, 0, "no such batch or path");
  return req;
}

/* A Content-Length over --max-body is refused before the body is read. */
static int body_too_large(srv_req *req) {
  const char *cl = MHD_lookup_connection_value(req->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

  if (cl == NULL || strtoull(cl, NULL, 10) <= req->s->max_body)
    return 0;
  srv_error(req, 413, "body_too_large", NULL, 0, "the body is over %zu bytes (--max-body)", req->s->max_body);
  return 1;
}

/*
 * MHD calls this first with the headers alone, then once per piece of the
 * body, then once with none. A refusal is queued on the first call (before
 * any body is read; the connection then closes); every other answer on a
 * call without body after it (the last one, or a call after a resume), so
 * keep-alive connections stay open; never in the middle of a body, so
 * errors found in a body wait for its end.
 */
enum MHD_Result srv_on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
  sl_srv *s = cls;
  srv_req *req = *con_cls;

  (void)version;
  if (req == NULL) {
    req = begin(s, con, url, method);
    if (req == NULL)
      return MHD_NO;
    *con_cls = req;
    req->first_call = 1;
    if (!req->ready && !body_too_large(req))
      srv_api(req, NULL, upload_size);
    req->first_call = 0;
    /* A refusal goes out at once, before any body is read (MHD then
     * closes the connection); any other answer on the next call, once
     * the request is whole, so the connection can be kept alive. */
    return req->ready && !req->suspended && req->stream == NULL && req->status >= 400 ? send_answer(req) : MHD_YES;
  }
  if (req->suspended)
    return MHD_YES;
  if (*upload_size > 0) {
    req->body_len += *upload_size;
    if (req->body_len > s->max_body) {
      if (!req->ready)
        srv_error(req, 413, "body_too_large", NULL, 0, "the body is over %zu bytes (--max-body)", s->max_body);
      if (req->body_len > 2 * s->max_body + (1 << 20))
        return MHD_NO; /* a chunked body that does not end: the connection is closed */
      *upload_size = 0;
      return MHD_YES;
    }
    if (req->ready) {
      *upload_size = 0; /* refused already: the rest of the body is read and dropped */
      return MHD_YES;
    }
    return srv_api(req, upload, upload_size);
  }
  if (req->pending_run != NULL) {
    start_pending(req);
    return req->ready && !req->suspended ? send_answer(req) : MHD_YES;
  }
  if (!req->ready)
    srv_api(req, NULL, upload_size);
  return req->ready && !req->suspended ? send_answer(req) : MHD_YES;
}

void srv_on_completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode toe) {
  srv_req *req = *con_cls;

  (void)cls;
  (void)con;
  (void)toe;
  if (req == NULL)
    return;
  if (req->pending_run != NULL) {
    req->pending_run = NULL;
    req->pending_done(req->pending_arg); /* frees the work that never started */
  }
  srv_upload_free(req->up);
  if (req->stream != NULL)
    MHD_destroy_response(req->stream);
  sl__buf_free(&req->body);
  sl__buf_free(&req->small);
  sl_free(req);
  *con_cls = NULL;
}
