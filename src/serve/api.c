/*
 * The endpoints of `sluice serve` (this file: batches and probes).
 *
 *   GET  /healthz                            the process is up (no Redis)
 *   GET  /readyz                             Redis answers and the library is loaded
 *   POST /v1/batches                         submit (upload.c reads the body)
 *   GET  /v1/batches/{id}                    the batch's state
 *   POST /v1/batches/{id}/cancel|pause|resume|retry
 *   GET  /v1/batches/{id}/events             live events (sse.c)
 *
 * Each endpoint checks the caller's role, then runs its Redis calls on the
 * thread pool (work.c) with the request suspended. A tenant's batch is its
 * own: any other tenant gets 404 for it, as if it did not exist. A call the
 * batch's state does not allow is 409. A Redis that cannot be reached is
 * 503 with Retry-After, a Redis that refuses writes for lack of memory 503
 * too, and any other Redis error 502 with its words.
 */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sluice/client.h>

#include "alloc.h"
#include "conn.h"
#include "json.h"
#include "srv.h"

/* docs/openapi.json, embedded by cmake/embed_file.cmake. */
extern const char sl__openapi[];
extern const size_t sl__openapi_len;

typedef enum op { OP_READY, OP_STATUS, OP_SUBMIT, OP_CANCEL, OP_PAUSE, OP_RESUME, OP_RETRY } op;

/* One Redis job of a request. */
typedef struct call {
  srv_req *req;
  op what;
  char queue[SL_NAME_MAX + 1];
  char batch[80];
  srv_principal who;
  sl_batch_t *b;          /* OP_SUBMIT: the batch (the upload keeps it) */
  char idem[SL_IDEM_KEY_MAX + 1]; /* OP_SUBMIT: its Idempotency-Key, or "" */
  long long retry_after_s; /* a quota's wait, s */
  int abort;               /* OP_CANCEL: also stop the running items (?abort=1) */
  /* results */
  char *json;             /* the answer, or NULL with the error in f */
  srv_failure f;
} call;

static int role_ok(srv_req *req, srv_role need) {
  if (req->who.role >= need)
    return 1;
  srv_error(req, 403, "forbidden", NULL, 0, "this token's role may not do this (it needs %s)",
            need == ROLE_SUBMIT ? "submit or admin" : "admin");
  return 0;
}

void srv_fail(srv_failure *f, sl_client_t *c, int rc, const char *what) {
  const char *e = c != NULL ? sl_client_errstr(c) : "";

  snprintf(f->err, sizeof(f->err), "%s: %s", what, e[0] ? e : sl_strerror(rc));
  if (rc == SL_ECONN) {
    f->status = 503;
    f->code = "redis_unavailable";
    srv_pool_discard(c);
  } else if (rc == SL_ENOTFOUND) {
    f->status = 404;
    f->code = "not_found";
    snprintf(f->err, sizeof(f->err), "%s", what);
  } else if (rc == SL_ETOOBIG || strstr(e, "out of memory") != NULL || strstr(e, "OOM") != NULL) {
    f->status = 503;
    f->code = "redis_full";
  } else if (rc == SL_EPROTO) {
    f->status = 503;
    f->code = "library";
  } else if (rc == SL_EINVAL) {
    f->status = 400;
    f->code = "invalid";
  } else {
    f->status = 502;
    f->code = "redis_error";
  }
}

int srv_batch_state(sl_client_t *c, const char *queue, const char *batch, const srv_principal *who, char **json,
                    cJSON **parsed) {
  int rc = sl_batch_status(c, queue, batch, json);
  cJSON *t;

  *parsed = NULL;
  if (rc != 0)
    return rc;
  *parsed = cJSON_Parse(*json);
  t = *parsed != NULL ? cJSON_GetObjectItemCaseSensitive(*parsed, "tenant") : NULL;
  if (*parsed == NULL ||
      (who->role != ROLE_ADMIN && strcmp(cJSON_IsString(t) ? t->valuestring : "", who->tenant) != 0)) {
    sl_free(*json);
    cJSON_Delete(*parsed);
    *json = NULL;
    *parsed = NULL;
    return SL_ENOTFOUND;
  }
  return 0;
}

/* Maps a failed library call to the call's error. */
static void fail(call *k, sl_client_t *c, int rc, const char *what) {
  char nf[200];

  if (rc == SL_ENOTFOUND) {
    snprintf(nf, sizeof(nf), "no batch %s in queue %s", k->batch, k->queue);
    what = nf;
  }
  srv_fail(&k->f, c, rc, what);
}

/* The batch's state, as JSON, if the caller may see it (another tenant's
 * batch is "not found"). 0, or -1 with the error set. */
static int load_status(call *k, sl_client_t *c, char **json, cJSON **parsed) {
  int rc = srv_batch_state(c, k->queue, k->batch, &k->who, json, parsed);

  if (rc != 0) {
    fail(k, c, rc, "reading the batch");
    return -1;
  }
  return 0;
}

static const char *status_of(const cJSON *st) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(st, "status");

  return cJSON_IsString(s) ? s->valuestring : "";
}

/* cancel, pause, resume, retry: the state check (409), then the call. */
static void run_control(call *k, sl_client_t *c) {
  char *json = NULL;
  cJSON *st = NULL;
  const char *s;
  int rc = 0;
  size_t requeued = 0;

  if (load_status(k, c, &json, &st) != 0)
    return;
  s = status_of(st);
  if ((k->what == OP_CANCEL && (strcmp(s, "completed") == 0 || (strcmp(s, "cancelled") == 0 && !k->abort))) ||
      (k->what == OP_PAUSE && strcmp(s, "submitting") != 0 && strcmp(s, "queued") != 0 &&
       strcmp(s, "running") != 0) ||
      (k->what == OP_RESUME && strcmp(s, "paused") != 0) || (k->what == OP_RETRY && strcmp(s, "cancelled") == 0)) {
    static const char *const verb[] = {"", "", "", "cancelled", "paused", "resumed", "retried"};

    k->f.status = 409;
    k->f.code = "conflict";
    snprintf(k->f.err, sizeof(k->f.err), "batch %s is %s: it cannot be %s", k->batch, s, verb[k->what]);
    goto out;
  }
  if (k->what == OP_CANCEL && k->abort)
    rc = sl_batch_abort(c, k->queue, k->batch);
  else if (k->what == OP_CANCEL)
    rc = sl_batch_cancel(c, k->queue, k->batch);
  else if (k->what == OP_PAUSE)
    rc = sl_batch_pause(c, k->queue, k->batch);
  else if (k->what == OP_RESUME)
    rc = sl_batch_resume(c, k->queue, k->batch);
  else
    rc = sl_batch_retry(c, k->queue, k->batch, &requeued);
  if (rc == SL_EINVAL || rc == SL_ECANCELED) {
    k->f.status = 409;
    k->f.code = "conflict";
    snprintf(k->f.err, sizeof(k->f.err), "%s", sl_client_errstr(c));
    goto out;
  }
  if (rc != 0) {
    fail(k, c, rc, "the call failed");
    goto out;
  }
  sl_free(json);
  json = NULL;
  cJSON_Delete(st);
  st = NULL;
  if (load_status(k, c, &json, &st) != 0)
    goto out;
  if (k->what == OP_RETRY) {
    sl_buf b;

    sl__buf_init(&b, 64 * 1024);
    if (sl__buf_printf(&b, "{\"requeued\":%zu,\"batch\":%s}", requeued, json) == 0)
      k->json = sl__buf_take(&b);
    sl__buf_free(&b);
  } else {
    k->json = json;
    json = NULL;
  }
  k->f.status = 200;
out:
  sl_free(json);
  cJSON_Delete(st);
}

/* The tenant's submit quotas (lua/quota.lua), charged for this batch: 0,
 * or -1 with the error set (429 and the wait; 413 when it can never fit).
 * A submit whose Idempotency-Key was used before costs nothing: it writes
 * nothing. */
static int charge_quota(call *k, sl_client_t *c) {
  const srv_principal *w = &k->who;
  char keys[2][SL_NAME_MAX + SRV_TENANT_MAX + 48];
  char nums[6][24];
  const char *av[8];
  size_t n = sl_batch_count(k->b);
  redisReply *r;
  int rc;

  if (w->batches_t_us == 0 && w->items_t_us == 0)
    return 0;
  if (w->items_t_us > 0 && n > w->items_burst) {
    k->f.status = 413;
    k->f.code = "over_quota";
    snprintf(k->f.err, sizeof(k->f.err), "a batch of %zu items can never fit tenant %s's quota of %llu items: split "
             "it", n, w->tenant, (unsigned long long)w->items_burst);
    return -1;
  }
  if (k->idem[0] != '\0') {
    char ik[SL_NAME_MAX + SRV_TENANT_MAX + SL_IDEM_KEY_MAX + 32];
    const char *ev[2] = {"EXISTS", ik};

    snprintf(ik, sizeof(ik), "sluice:{%s}:idem:%s:%s", k->queue, w->tenant, k->idem);
    r = sl__client_cmd(c, &rc, 2, ev, NULL);
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
      freeReplyObject(r);
      return 0;
    }
    freeReplyObject(r);
  }
  snprintf(keys[0], sizeof(keys[0]), "sluice:{%s}:quota:%s:batches", k->queue, w->tenant);
  snprintf(keys[1], sizeof(keys[1]), "sluice:{%s}:quota:%s:items", k->queue, w->tenant);
  snprintf(nums[0], sizeof(nums[0]), "%llu", (unsigned long long)w->batches_t_us);
  snprintf(nums[1], sizeof(nums[1]), "%llu", (unsigned long long)w->batches_burst);
  snprintf(nums[2], sizeof(nums[2]), "1");
  snprintf(nums[3], sizeof(nums[3]), "%llu", (unsigned long long)w->items_t_us);
  snprintf(nums[4], sizeof(nums[4]), "%llu", (unsigned long long)w->items_burst);
  snprintf(nums[5], sizeof(nums[5]), "%zu", n);
  av[0] = keys[0];
  av[1] = keys[1];
  for (int i = 0; i < 6; i++)
    av[2 + i] = nums[i];
  r = sl__client_fcall(c, &rc, "quota", 2, 8, av, NULL);
  if (r == NULL) {
    fail(k, c, rc, "charging the tenant's quota");
    return -1;
  }
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_INTEGER &&
      r->element[0]->integer > 0) {
    int items = r->element[1]->type == REDIS_REPLY_STRING && strcmp(r->element[1]->str, "items") == 0;

    k->f.status = 429;
    k->f.code = "quota_exceeded";
    k->retry_after_s = (r->element[0]->integer + 999) / 1000;
    snprintf(k->f.err, sizeof(k->f.err), "tenant %s has used its quota of %llu %s per %.0f s; this batch fits in "
             "%lld s (Retry-After)", w->tenant,
             (unsigned long long)(items ? w->items_burst : w->batches_burst), items ? "items" : "batches",
             (double)(items ? w->items_t_us * w->items_burst : w->batches_t_us * w->batches_burst) / 1e6,
             k->retry_after_s);
    freeReplyObject(r);
    return -1;
  }
  freeReplyObject(r);
  return 0;
}

static void run_submit(call *k, sl_client_t *c) {
  char *id = NULL;
  char *json = NULL;
  cJSON *st = NULL;
  int rc = charge_quota(k, c) != 0 ? SL_EINVAL : sl_batch_submit(c, k->b, &id);
  sl_buf b;
  size_t ns;

  if (rc == SL_EINVAL && k->f.status != 0)
    return; /* over the quota: the error is set */
  if (rc != 0) {
    fail(k, c, rc, "the submit failed");
    return;
  }
  snprintf(k->batch, sizeof(k->batch), "%s", id);
  if (load_status(k, c, &json, &st) != 0) {
    sl_free(id);
    return;
  }
  ns = sl_batch_skipped_count(k->b);
  sl__buf_init(&b, 64 * 1024 * 1024);
  rc = sl__buf_printf(&b, "{\"batch\":\"%s\",\"reused\":%s,\"submitted\":%zu,\"skipped\":%zu,\"skipped_in\":[", id,
                      sl_batch_reused(k->b) ? "true" : "false",
                      sl_batch_reused(k->b) ? (size_t)0 : sl_batch_count(k->b) - ns, ns);
  for (size_t i = 0; rc == 0 && i < ns; i++) {
    const char *h = sl_batch_skipped_holder(k->b, i);
    const char *colon = strrchr(h, ':');

    rc = sl__buf_puts(&b, i ? ",{\"id\":" : "{\"id\":");
    if (rc == 0)
      rc = sl__json_put_str(&b, sl_batch_skipped_id(k->b, i), strlen(sl_batch_skipped_id(k->b, i)));
    if (rc == 0)
      rc = sl__buf_printf(&b, ",\"batch\":\"%.*s\",\"index\":%s}", colon ? (int)(colon - h) : 0, h,
                          colon ? colon + 1 : "-1");
  }
  if (rc == 0)
    rc = sl__buf_printf(&b, "],\"status\":%s}", json);
  k->json = rc == 0 ? sl__buf_take(&b) : NULL;
  k->f.status = sl_batch_reused(k->b) ? 200 : 201;
  sl__buf_free(&b);
  sl_free(json);
  sl_free(id);
  cJSON_Delete(st);
}

static void run_ready(call *k, sl_client_t *c, const char *open_err) {
  char *json = NULL;
  int rc;

  if (c == NULL) {
    k->f.status = 503;
    k->f.code = "not_ready";
    snprintf(k->f.err, sizeof(k->f.err), "%s", open_err);
    return;
  }
  /* one round trip: a batch that does not exist */
  rc = sl_batch_status(c, k->queue, "readyz-probe", &json);
  sl_free(json);
  if (rc != 0 && rc != SL_ENOTFOUND) {
    fail(k, c, rc, "Redis does not answer");
    k->f.status = 503;
    k->f.code = "not_ready";
    return;
  }
  {
    sl_buf b;

    sl__buf_init(&b, 1024);
    if (sl__buf_printf(&b, "{\"ready\":true,\"library\":\"%s\"}", sl_library_version()) == 0)
      k->json = sl__buf_take(&b);
    sl__buf_free(&b);
  }
  k->f.status = 200;
}

static void on_run(sl_client_t *c, const char *open_err, void *arg) {
  call *k = arg;

  if (k->what == OP_READY) {
    run_ready(k, c, open_err);
    return;
  }
  if (c == NULL) {
    k->f.status = 503;
    k->f.code = strstr(open_err, "library") != NULL ? "library" : "redis_unavailable";
    snprintf(k->f.err, sizeof(k->f.err), "%s", open_err);
    return;
  }
  switch (k->what) {
  case OP_STATUS: {
    cJSON *st = NULL;

    if (load_status(k, c, &k->json, &st) == 0)
      k->f.status = 200;
    cJSON_Delete(st);
    break;
  }
  case OP_SUBMIT: run_submit(k, c); break;
  default: run_control(k, c); break;
  }
}

static void on_done(void *arg) {
  call *k = arg;
  srv_req *req = k->req;

  if (k->json != NULL) {
    srv_answer(req, k->f.status, k->json);
  } else {
    if (k->f.status == 503)
      snprintf(req->retry_after, sizeof(req->retry_after), "5");
    if (k->f.status == 429)
      snprintf(req->retry_after, sizeof(req->retry_after), "%lld", k->retry_after_s > 0 ? k->retry_after_s : 1);
    srv_error(req, k->f.status ? k->f.status : 503, k->f.code ? k->f.code : "out_of_memory", NULL, 0, "%s",
              k->f.err[0] ? k->f.err : "the server is out of memory");
  }
  sl_free(k);
  srv_resume(req);
}

/* Starts op on the thread pool and suspends the request. */
static enum MHD_Result start(srv_req *req, op what, sl_batch_t *b) {
  call *k = sl_malloc(sizeof(*k));

  if (k == NULL) {
    srv_error(req, 503, "out_of_memory", NULL, 0, "the server is out of memory");
    return MHD_YES;
  }
  memset(k, 0, sizeof(*k));
  k->req = req;
  k->what = what;
  k->b = b;
  k->who = req->who;
  snprintf(k->queue, sizeof(k->queue), "%s", req->queue ? req->queue : "default");
  snprintf(k->batch, sizeof(k->batch), "%s", req->batch);
  if (what == OP_CANCEL) {
    const char *a = srv_arg(req, "abort");

    k->abort = a != NULL && (strcmp(a, "1") == 0 || strcmp(a, "true") == 0);
  }
  if (what == OP_SUBMIT) {
    const char *key = MHD_lookup_connection_value(req->con, MHD_HEADER_KIND, "Idempotency-Key");

    snprintf(k->idem, sizeof(k->idem), "%s", key ? key : "");
  }
  if (srv_start_work(req, on_run, on_done, k) != 0) {
    sl_free(k);
    srv_error(req, 503, "out_of_memory", NULL, 0, "the server cannot start the work");
  }
  return MHD_YES;
}

/* The content type of the body: 1 NDJSON, 0 JSON, -1 another (answered). */
static int body_type(srv_req *req) {
  const char *t = MHD_lookup_connection_value(req->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
  size_t n = t ? strcspn(t, "; ") : 0;

  if (t != NULL && n == 20 && strncasecmp(t, "application/x-ndjson", n) == 0)
    return 1;
  if (t != NULL && n == 16 && strncasecmp(t, "application/json", n) == 0)
    return 0;
  srv_error(req, 415, "unsupported_media_type", NULL, 0,
            "POST /v1/batches takes application/json ({\"items\":[...],\"options\":{...}}) or "
            "application/x-ndjson (one item per line), not %.80s",
            t ? t : "a body without a Content-Type");
  return -1;
}

static enum MHD_Result first(srv_req *req) {
  const char *m = req->method;
  const char *p = req->path;
  int get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
  int post = strcmp(m, "POST") == 0;

  req->started = 1;
  if (strcmp(p, "/healthz") == 0 && get) {
    srv_answer(req, 200, sl_strdup("{\"ok\":true}"));
    return MHD_YES;
  }
  if (strcmp(p, "/readyz") == 0 && get)
    return start(req, OP_READY, NULL);
  if (srv_ui(req))
    return MHD_YES;
  if (strcmp(p, "/v1/me") == 0 && get) {
    static const char *const roles[] = {"none", "read", "submit", "admin"};
    sl_buf b;
    int rc;

    sl__buf_init(&b, 64 * 1024);
    rc = sl__buf_printf(&b, "{\"auth\":%s,\"tenant\":", srv_auth_on(req->s->auth) ? "true" : "false");
    if (rc == 0 && req->who.tenant[0] != '\0')
      rc = sl__json_put_str(&b, req->who.tenant, strlen(req->who.tenant));
    else if (rc == 0)
      rc = sl__buf_puts(&b, "null");
    if (rc == 0)
      rc = sl__buf_printf(&b, ",\"role\":\"%s\",\"queues\":[", (unsigned)req->who.role < 4 ? roles[req->who.role] : "none");
    for (size_t i = 0; rc == 0 && i < req->s->nqueues; i++) {
      if (i > 0)
        rc = sl__buf_putc(&b, ',');
      if (rc == 0)
        rc = sl__json_put_str(&b, req->s->queues[i], strlen(req->s->queues[i]));
    }
    if (rc == 0)
      rc = sl__buf_puts(&b, "]}");
    srv_answer(req, 200, rc == 0 ? sl__buf_take(&b) : NULL);
    sl__buf_free(&b);
    return MHD_YES;
  }
  if (strcmp(p, "/v1/openapi.json") == 0 && get) {
    char *doc = sl_malloc(sl__openapi_len + 1);

    if (doc != NULL)
      memcpy(doc, sl__openapi, sl__openapi_len + 1);
    srv_answer(req, 200, doc);
    return MHD_YES;
  }
  if (strcmp(p, "/metrics") == 0 && get) {
    srv_metrics(req);
    return MHD_YES;
  }
  if (strcmp(p, "/v1/batches") == 0 && post) {
    int nd;

    if (!role_ok(req, ROLE_SUBMIT) || (nd = body_type(req)) < 0)
      return MHD_YES;
    req->up = srv_upload_new(req, nd);
    if (req->up == NULL)
      srv_error(req, 503, "out_of_memory", NULL, 0, "the server is out of memory");
    return MHD_YES;
  }
  if (req->batch[0] != '\0' && req->action[0] == '\0' && get)
    return start(req, OP_STATUS, NULL);
  if (((req->batch[0] != '\0' && strcmp(req->action, "events") == 0) || strcmp(p, "/v1/events") == 0) && get) {
    req->stream = srv_sse_open(req->s, req->con, req->queue, req->batch[0] ? req->batch : NULL, &req->who);
    if (req->stream == NULL)
      srv_error(req, 503, "out_of_memory", NULL, 0, "the server is out of memory");
    else
      req->ready = 1;
    return MHD_YES;
  }
  if (req->batch[0] != '\0' && post) {
    static const char *const acts[] = {"cancel", "pause", "resume", "retry"};
    static const op ops[] = {OP_CANCEL, OP_PAUSE, OP_RESUME, OP_RETRY};

    for (int i = 0; i < 4; i++) {
      if (strcmp(req->action, acts[i]) == 0)
        return role_ok(req, ROLE_SUBMIT) ? start(req, ops[i], NULL) : MHD_YES;
    }
  }
  if (srv_api_queue(req))
    return MHD_YES;
  if (strcmp(p, "/healthz") == 0 || strcmp(p, "/readyz") == 0 || strcmp(p, "/v1/batches") == 0 ||
      (req->batch[0] != '\0' && (req->action[0] == '\0' || strcmp(req->action, "events") == 0 ||
                                 strcmp(req->action, "cancel") == 0 || strcmp(req->action, "pause") == 0 ||
                                 strcmp(req->action, "resume") == 0 || strcmp(req->action, "retry") == 0))) {
    srv_error(req, 405, "method_not_allowed", NULL, 0, "%s is not allowed on %s", m, p);
    return MHD_YES;
  }
  srv_error(req, 404, "not_found", NULL, 0, "no such path: %s", p);
  return MHD_YES;
}

enum MHD_Result srv_api(srv_req *req, const char *upload, size_t *upload_size) {
  if (!req->started)
    return first(req); /* the headers' call */
  if (req->want_body) {
    if (*upload_size > 0 && sl__buf_append(&req->small, upload, *upload_size) != 0)
      srv_error(req, 413, "body_too_large", NULL, 0, "this body must be under 64 KiB");
    else if (*upload_size == 0)
      srv_api_queue_body(req);
    *upload_size = 0;
    return MHD_YES;
  }
  if (req->up == NULL) {
    *upload_size = 0; /* a body nobody asked for is dropped */
    return MHD_YES;
  }
  if (*upload_size > 0) {
    srv_upload_feed(req->up, upload, *upload_size);
    *upload_size = 0;
    return MHD_YES;
  }
  {
    sl_batch_t *b = srv_upload_finish(req->up);

    return b != NULL ? start(req, OP_SUBMIT, b) : MHD_YES;
  }
}
