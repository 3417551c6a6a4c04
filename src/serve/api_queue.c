/*
 * The endpoints of `sluice serve` about a queue as a whole, and results.
 *
 *   GET    /v1/batches               the caller's batches, newest first:
 *                                    ?status=S&name=N&label=K=V,K&cursor=ID&limit=L (X-Next-Cursor)
 *   GET    /v1/batches/{id}/results  NDJSON, in item order: ?status=failed,
 *                                    ?cursor=INDEX&limit=N (X-Next-Cursor)
 *   GET    /v1/queues/{q}/stats      sluice stats --json
 *   GET    /v1/workers               the live workers            (admin)
 *   GET    /v1/dead                  dead letters, newest first  (admin)
 *   POST   /v1/dead/requeue          {"ids":[...]} or {"all":N}  (admin)
 *   GET    /v1/limits                every limit                 (admin)
 *   GET    /v1/limits/{name}         one
 *   PUT    /v1/limits/{name}         {"rate":"50/s","burst":10,"concurrency":5}
 *   DELETE /v1/limits/{name}
 *
 * Each runs its library calls on the thread pool (work.c), like api.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sluice/client.h>

#include "alloc.h"
#include "json.h"
#include "labels.h"
#include "srv.h"

#define RESULTS_LIMIT_DEFAULT 1000 /* results lines per page */
#define RESULTS_LIMIT_MAX 10000
#define DEAD_LIMIT_DEFAULT 100     /* dead letters per answer */
#define DEAD_LIMIT_MAX 10000
#define NAME_CHARS "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.:-"

#define LIST_LIMIT_DEFAULT 50      /* batches per page */
#define LIST_LIMIT_MAX 1000
#define LIST_EXAMINE_MAX 10000     /* batches one page looks at, at most (filters that match little) */

typedef enum qop { Q_LIST, Q_RESULTS, Q_STATS, Q_WORKERS, Q_DEAD, Q_REQUEUE, Q_LIMITS, Q_LIMIT_GET, Q_LIMIT_PUT,
                   Q_LIMIT_DEL, Q_PURGE, Q_ITEMS } qop;

typedef struct qjob {
  srv_req *req;
  qop what;
  char queue[SL_NAME_MAX + 1];
  char batch[80];
  char name[SL_NAME_MAX + 1];
  srv_principal who;
  int failed_only;
  size_t from, limit, next;
  char rate[32];
  int burst, concurrency;
  char status[16];          /* Q_LIST filters */
  char lname[256];
  char label[SL_LABELS_FILTER_MAX];
  char tenant[SRV_TENANT_MAX + 1];
  char after[SL_LIST_CURSOR_MAX];
  char last[SL_LIST_CURSOR_MAX];
  char state[16];           /* Q_ITEMS: only items in this state, or "" */
  int more;                 /* Q_ITEMS: the listing stopped at its limit */
  char **ids;               /* Q_REQUEUE: letter ids, or NULL for "all" */
  size_t nids;
  size_t all;
  sl_buf out;               /* the answer */
  int array;                /* out is a JSON array being built */
  size_t lines;
  int ok;
  srv_failure f;
} qjob;

static int collect(const char *json, size_t len, void *ud) {
  qjob *j = ud;
  int rc = 0;

  if (j->array && j->lines > 0)
    rc = sl__buf_putc(&j->out, ',');
  if (rc == 0)
    rc = sl__buf_append(&j->out, json, len);
  if (rc == 0 && !j->array)
    rc = sl__buf_putc(&j->out, '\n');
  j->lines++;
  return rc == 0 ? 0 : SL_ENOMEM;
}

/* A limit by name, from the list: 0, or SL_ENOTFOUND. */
static int find_limit(const char *json, size_t len, void *ud) {
  qjob *j = ud;
  cJSON *o = cJSON_ParseWithLength(json, len);
  const cJSON *n = o ? cJSON_GetObjectItemCaseSensitive(o, "name") : NULL;
  int hit = cJSON_IsString(n) && strcmp(n->valuestring, j->name) == 0;

  cJSON_Delete(o);
  if (!hit)
    return 0;
  sl__buf_append(&j->out, json, len);
  j->lines++;
  return 1; /* found: stop */
}

static void on_run(sl_client_t *c, const char *open_err, void *arg) {
  qjob *j = arg;
  int rc = 0;

  if (c == NULL) {
    j->f.status = 503;
    j->f.code = strstr(open_err, "library") != NULL ? "library" : "redis_unavailable";
    snprintf(j->f.err, sizeof(j->f.err), "%s", open_err);
    return;
  }
  switch (j->what) {
  case Q_LIST: {
    sl_list_opts o = {j->status[0] ? j->status : NULL, j->tenant[0] ? j->tenant : NULL,
                      j->lname[0] ? j->lname : NULL, j->after[0] ? j->after : NULL, j->limit, LIST_EXAMINE_MAX,
                      j->last, j->label[0] ? j->label : NULL};

    j->array = 1;
    rc = sl__buf_puts(&j->out, "{\"batches\":[");
    if (rc == 0)
      rc = sl_batch_list_with(c, j->queue, &o, collect, j);
    if (rc == 0 && j->last[0] != '\0')
      rc = sl__buf_printf(&j->out, "],\"next\":\"%s\"}", j->last);
    else if (rc == 0)
      rc = sl__buf_puts(&j->out, "],\"next\":null}");
    break;
  }
  case Q_RESULTS: {
    char *json = NULL;
    cJSON *st = NULL;

    rc = srv_batch_state(c, j->queue, j->batch, &j->who, &json, &st);
    sl_free(json);
    cJSON_Delete(st);
    if (rc == 0)
      rc = sl_batch_results_page(c, j->queue, j->batch, j->failed_only ? SL_RESULTS_FAILED : 0, j->from, j->limit,
                                 &j->next, collect, j);
    break;
  }
  case Q_STATS: {
    char *json = NULL;

    rc = sl_queue_stats(c, j->queue, &json);
    if (rc == 0)
      rc = sl__buf_puts(&j->out, json);
    sl_free(json);
    break;
  }
  case Q_WORKERS:
  case Q_DEAD:
  case Q_LIMITS:
    j->array = 1;
    sl__buf_putc(&j->out, '[');
    rc = j->what == Q_WORKERS ? sl_workers_list(c, j->queue, collect, j)
         : j->what == Q_DEAD  ? sl_dead_list(c, j->queue, j->limit, collect, j)
                              : sl_limit_list(c, j->queue, collect, j);
    if (rc == 0)
      rc = sl__buf_putc(&j->out, ']');
    break;
  case Q_LIMIT_GET:
    rc = sl_limit_list(c, j->queue, find_limit, j);
    if (rc == 1)
      rc = 0;
    else if (rc == 0)
      rc = SL_ENOTFOUND;
    break;
  case Q_LIMIT_PUT:
    rc = sl_limit_set(c, j->queue, j->name, j->rate[0] ? j->rate : NULL, j->burst, j->concurrency);
    if (rc == 0)
      rc = sl_limit_list(c, j->queue, find_limit, j) == 1 ? 0 : SL_ENOTFOUND;
    break;
  case Q_LIMIT_DEL:
    rc = sl_limit_rm(c, j->queue, j->name);
    if (rc == 0)
      rc = sl__buf_printf(&j->out, "{\"removed\":\"%s\"}", j->name);
    break;
  case Q_PURGE: {
    size_t purged = 0;

    rc = sl_dead_purge(c, j->queue, &purged);
    if (rc == 0)
      rc = sl__buf_printf(&j->out, "{\"purged\":%zu}", purged);
    break;
  }
  case Q_ITEMS: {
    char *json = NULL;
    cJSON *st = NULL;
    sl_items_opts o = {j->state[0] ? j->state : NULL, j->limit, 0, 0};

    rc = srv_batch_state(c, j->queue, j->batch, &j->who, &json, &st);
    sl_free(json);
    cJSON_Delete(st);
    if (rc == 0)
      rc = sl_batch_items(c, j->queue, j->batch, &o, collect, j);
    j->more = o.more;
    break;
  }
  case Q_REQUEUE: {
    size_t requeued = 0;
    size_t skipped = 0;

    rc = sl_dead_requeue(c, j->queue, (const char *const *)j->ids, j->nids, j->all, &requeued, &skipped);
    if (rc == 0)
      rc = sl__buf_printf(&j->out, "{\"requeued\":%zu,\"skipped\":%zu}", requeued, skipped);
    break;
  }
  }
  if (rc == 0) {
    j->ok = 1;
    return;
  }
  if (rc == SL_ENOTFOUND) {
    char what[400];

    if (j->what == Q_LIST)
      snprintf(what, sizeof(what), "the cursor %s is not a batch of queue %s (it expired): list again without it",
               j->after, j->queue);
    else if (j->what == Q_RESULTS || j->what == Q_ITEMS)
      snprintf(what, sizeof(what), "no batch %s in queue %s", j->batch, j->queue);
    else
      snprintf(what, sizeof(what), "no limit %s in queue %s", j->name, j->queue);
    srv_fail(&j->f, c, rc, what);
  } else {
    srv_fail(&j->f, c, rc, "the call failed");
  }
}

static void on_done(void *arg) {
  qjob *j = arg;
  srv_req *req = j->req;

  if (j->ok) {
    if (j->what == Q_ITEMS) {
      req->ctype = "application/x-ndjson";
      if (j->more)
        snprintf(req->next_cursor, sizeof(req->next_cursor), "more");
    }
    if (j->what == Q_RESULTS) {
      req->ctype = "application/x-ndjson";
      if (j->next > 0)
        snprintf(req->next_cursor, sizeof(req->next_cursor), "%zu", j->next);
    }
    if (j->what == Q_LIST && j->last[0] != '\0')
      snprintf(req->next_cursor, sizeof(req->next_cursor), "%s", j->last);
    srv_answer(req, 200, sl__buf_take(&j->out));
  } else {
    if (j->f.status == 503)
      snprintf(req->retry_after, sizeof(req->retry_after), "5");
    srv_error(req, j->f.status ? j->f.status : 503, j->f.code ? j->f.code : "out_of_memory", NULL, 0, "%s",
              j->f.err[0] ? j->f.err : "the server is out of memory");
  }
  for (size_t i = 0; i < j->nids; i++)
    sl_free(j->ids[i]);
  sl_free(j->ids);
  sl__buf_free(&j->out);
  sl_free(j);
  srv_resume(req);
}

static qjob *job_new(srv_req *req, qop what) {
  qjob *j = sl_malloc(sizeof(*j));

  if (j == NULL) {
    srv_error(req, 503, "out_of_memory", NULL, 0, "the server is out of memory");
    return NULL;
  }
  memset(j, 0, sizeof(*j));
  j->req = req;
  j->what = what;
  j->who = req->who;
  snprintf(j->queue, sizeof(j->queue), "%s", req->queue);
  snprintf(j->batch, sizeof(j->batch), "%s", req->batch);
  sl__buf_init(&j->out, 256 * 1024 * 1024);
  return j;
}

static void job_start(qjob *j) {
  srv_req *req = j->req;

  if (srv_start_work(req, on_run, on_done, j) != 0) {
    sl__buf_free(&j->out);
    sl_free(j);
    srv_error(req, 503, "out_of_memory", NULL, 0, "the server cannot start the work");
  }
}

/* A numeric query argument in [lo, hi], or def; -1 with the answer set. */
static long long num_arg(srv_req *req, const char *name, long long lo, long long hi, long long def) {
  const char *v = srv_arg(req, name);
  char *end;
  long long n;

  if (v == NULL)
    return def;
  n = strtoll(v, &end, 10);
  if (*v == '\0' || *end != '\0' || n < lo || n > hi) {
    srv_error(req, 400, "invalid_argument", name, 0, "%s must be an integer from %lld to %lld", name, lo, hi);
    return -1;
  }
  return n;
}

static int admin_only(srv_req *req) {
  if (req->who.role == ROLE_ADMIN)
    return 1;
  srv_error(req, 403, "forbidden", NULL, 0, "this token's role may not do this (it needs admin)");
  return 0;
}

/* /v1/limits/{name} into req's limit name; 0, or -1 (not a limit path). */
static int limit_name(const char *p, char *out, size_t len) {
  const char *n = p + strlen("/v1/limits/");

  if (strncmp(p, "/v1/limits/", 11) != 0 || *n == '\0' || strlen(n) >= len || strlen(n) > SL_NAME_MAX ||
      strspn(n, NAME_CHARS) != strlen(n))
    return -1;
  snprintf(out, len, "%s", n);
  return 0;
}

int srv_api_queue(srv_req *req) {
  const char *m = req->method;
  const char *p = req->path;
  int get = strcmp(m, "GET") == 0;
  char name[SL_NAME_MAX + 1];
  qjob *j;

  if (get && strcmp(p, "/v1/batches") == 0) {
    static const char *const statuses[] = {"submitting", "queued", "running", "paused", "completed", "cancelled",
                                           NULL};
    const char *st = srv_arg(req, "status");
    const char *nm = srv_arg(req, "name");
    const char *after = srv_arg(req, "cursor");
    const char *tenant = srv_arg(req, "tenant");
    const char *label = srv_arg(req, "label");
    char why[160];
    long long limit = num_arg(req, "limit", 1, LIST_LIMIT_MAX, LIST_LIMIT_DEFAULT);
    int ok = st == NULL;

    if (limit < 0)
      return 1;
    for (int i = 0; st != NULL && statuses[i] != NULL; i++)
      ok |= strcmp(st, statuses[i]) == 0;
    if (!ok || (nm != NULL && strlen(nm) >= 256) || (after != NULL && strlen(after) >= SL_LIST_CURSOR_MAX) ||
        (tenant != NULL && (strlen(tenant) == 0 || strlen(tenant) > SRV_TENANT_MAX))) {
      srv_error(req, 400, "invalid_argument", !ok ? "status" : nm && strlen(nm) >= 256 ? "name" : after ? "cursor"
                                                                                                  : "tenant", 0,
                "status is one of submitting, queued, running, paused, completed, cancelled; name, cursor and "
                "tenant are short strings");
      return 1;
    }
    if (label != NULL && (strlen(label) >= SL_LABELS_FILTER_MAX || sl__labels_filter_check(label, why, sizeof(why)))) {
      srv_error(req, 400, "invalid_argument", "label", 0, "label: %s",
                strlen(label) >= SL_LABELS_FILTER_MAX ? "too long" : why);
      return 1;
    }
    if (tenant != NULL && req->who.role != ROLE_ADMIN) {
      srv_error(req, 403, "forbidden", "tenant", 0, "only an admin token lists another tenant's batches");
      return 1;
    }
    if ((j = job_new(req, Q_LIST)) == NULL)
      return 1;
    snprintf(j->status, sizeof(j->status), "%s", st ? st : "");
    snprintf(j->lname, sizeof(j->lname), "%s", nm ? nm : "");
    snprintf(j->label, sizeof(j->label), "%s", label ? label : "");
    snprintf(j->after, sizeof(j->after), "%s", after ? after : "");
    /* a tenant lists its own; an admin every batch, or one tenant's */
    snprintf(j->tenant, sizeof(j->tenant), "%s", req->who.role == ROLE_ADMIN ? (tenant ? tenant : "")
                                                                             : req->who.tenant);
    j->limit = (size_t)limit;
    job_start(j);
    return 1;
  }

  if (get && req->batch[0] != '\0' && strcmp(req->action, "results") == 0) {
    const char *st = srv_arg(req, "status");
    long long from = num_arg(req, "cursor", 0, 1LL << 40, 0);
    long long limit = from < 0 ? -1 : num_arg(req, "limit", 1, RESULTS_LIMIT_MAX, RESULTS_LIMIT_DEFAULT);

    if (limit < 0)
      return 1;
    if (st != NULL && strcmp(st, "failed") != 0 && strcmp(st, "all") != 0) {
      srv_error(req, 400, "invalid_argument", "status", 0, "status must be failed or all");
      return 1;
    }
    if ((j = job_new(req, Q_RESULTS)) == NULL)
      return 1;
    j->failed_only = st != NULL && strcmp(st, "failed") == 0;
    j->from = (size_t)from;
    j->limit = (size_t)limit;
    job_start(j);
    return 1;
  }
  if (get && req->batch[0] != '\0' && strcmp(req->action, "items") == 0) {
    static const char *const states[] = {"running", "waiting", "retrying", "scheduled", "paused", "queued", NULL};
    const char *st = srv_arg(req, "state");
    long long limit = num_arg(req, "limit", 1, RESULTS_LIMIT_MAX, RESULTS_LIMIT_DEFAULT);
    int ok = st == NULL;

    if (limit < 0)
      return 1;
    for (int i = 0; st != NULL && states[i] != NULL; i++)
      ok |= strcmp(st, states[i]) == 0;
    if (!ok) {
      srv_error(req, 400, "invalid_argument", "state", 0,
                "state is one of running, waiting, retrying, scheduled, paused, queued");
      return 1;
    }
    if ((j = job_new(req, Q_ITEMS)) == NULL)
      return 1;
    snprintf(j->state, sizeof(j->state), "%s", st ? st : "");
    j->limit = (size_t)limit;
    job_start(j);
    return 1;
  }
  if (get && strncmp(p, "/v1/queues/", 11) == 0) {
    const char *q = p + 11;
    size_t n = strcspn(q, "/");

    if (strcmp(q + n, "/stats") != 0)
      return 0;
    req->queue = NULL;
    for (size_t i = 0; i < req->s->nqueues; i++) {
      if (strlen(req->s->queues[i]) == n && strncmp(q, req->s->queues[i], n) == 0)
        req->queue = req->s->queues[i];
    }
    if (req->queue == NULL) {
      srv_error(req, 404, "unknown_queue", NULL, 0, "this server does not serve queue \"%.*s\"", (int)(n > 64 ? 64 : n),
                q);
      return 1;
    }
    if ((j = job_new(req, Q_STATS)) != NULL)
      job_start(j);
    return 1;
  }
  if (get && strcmp(p, "/v1/workers") == 0) {
    if (admin_only(req) && (j = job_new(req, Q_WORKERS)) != NULL)
      job_start(j);
    return 1;
  }
  if (get && strcmp(p, "/v1/dead") == 0) {
    long long limit;

    if (!admin_only(req) || (limit = num_arg(req, "limit", 1, DEAD_LIMIT_MAX, DEAD_LIMIT_DEFAULT)) < 0)
      return 1;
    if ((j = job_new(req, Q_DEAD)) != NULL) {
      j->limit = (size_t)limit;
      job_start(j);
    }
    return 1;
  }
  if (strcmp(p, "/v1/dead/purge") == 0 && strcmp(m, "POST") == 0) {
    if (admin_only(req) && (j = job_new(req, Q_PURGE)) != NULL)
      job_start(j);
    return 1;
  }
  if (strcmp(p, "/v1/dead/requeue") == 0 && strcmp(m, "POST") == 0) {
    if (admin_only(req))
      req->want_body = 1;
    return 1;
  }
  if (get && strcmp(p, "/v1/limits") == 0) {
    if (admin_only(req) && (j = job_new(req, Q_LIMITS)) != NULL)
      job_start(j);
    return 1;
  }
  if (limit_name(p, name, sizeof(name)) == 0) {
    if (!admin_only(req))
      return 1;
    if (strcmp(m, "PUT") == 0) {
      req->want_body = 1;
      return 1;
    }
    if (!get && strcmp(m, "DELETE") != 0) {
      srv_error(req, 405, "method_not_allowed", NULL, 0, "%s is not allowed on %s", m, p);
      return 1;
    }
    if ((j = job_new(req, get ? Q_LIMIT_GET : Q_LIMIT_DEL)) != NULL) {
      snprintf(j->name, sizeof(j->name), "%s", name);
      job_start(j);
    }
    return 1;
  }
  return 0;
}

/* PUT /v1/limits/{name}: {"rate":"50/s","burst":10,"concurrency":5}. */
static void limit_put(srv_req *req, cJSON *o) {
  char name[SL_NAME_MAX + 1];
  const cJSON *rate = cJSON_GetObjectItemCaseSensitive(o, "rate");
  const cJSON *burst = cJSON_GetObjectItemCaseSensitive(o, "burst");
  const cJSON *conc = cJSON_GetObjectItemCaseSensitive(o, "concurrency");
  qjob *j;

  for (const cJSON *m = o->child; m != NULL; m = m->next) {
    if (strcmp(m->string, "rate") != 0 && strcmp(m->string, "burst") != 0 && strcmp(m->string, "concurrency") != 0) {
      srv_error(req, 400, "unknown_field", m->string, 0, "a limit has rate, burst and concurrency, not \"%.40s\"",
                m->string);
      return;
    }
  }
  if ((rate != NULL && (!cJSON_IsString(rate) || strlen(rate->valuestring) >= 32)) ||
      (burst != NULL && (!cJSON_IsNumber(burst) || burst->valuedouble < 1 || burst->valuedouble > 1000000)) ||
      (conc != NULL && (!cJSON_IsNumber(conc) || conc->valuedouble < 0 || conc->valuedouble > 1000000)) ||
      (rate == NULL && conc == NULL)) {
    srv_error(req, 400, "invalid_limit", NULL, 0,
              "a limit needs a rate (\"50/s\", \"3000/m\", \"10000/h\") or a concurrency (1-1000000), and "
              "optionally a burst (1-1000000)");
    return;
  }
  limit_name(req->path, name, sizeof(name));
  if ((j = job_new(req, Q_LIMIT_PUT)) == NULL)
    return;
  snprintf(j->name, sizeof(j->name), "%s", name);
  if (rate != NULL)
    snprintf(j->rate, sizeof(j->rate), "%s", rate->valuestring);
  j->burst = burst ? (int)burst->valuedouble : 1;
  j->concurrency = conc ? (int)conc->valuedouble : 0;
  job_start(j);
}

/* POST /v1/dead/requeue: {"ids":["1795...-0",...]} or {"all":N} (0: every letter). */
static void requeue(srv_req *req, cJSON *o) {
  const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "ids");
  const cJSON *all = cJSON_GetObjectItemCaseSensitive(o, "all");
  qjob *j;

  if ((ids == NULL) == (all == NULL) || (ids != NULL && (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) > 10000)) ||
      (all != NULL && (!cJSON_IsNumber(all) || all->valuedouble < 0))) {
    srv_error(req, 400, "invalid_body", NULL, 0, "give {\"ids\":[LETTER_ID,...]} (at most 10,000) or {\"all\":N}");
    return;
  }
  if ((j = job_new(req, Q_REQUEUE)) == NULL)
    return;
  if (ids != NULL) {
    j->ids = sl_malloc(((size_t)cJSON_GetArraySize(ids) + 1) * sizeof(*j->ids));
    for (const cJSON *e = ids->child; j->ids != NULL && e != NULL; e = e->next) {
      if (!cJSON_IsString(e)) {
        srv_error(req, 400, "invalid_body", "ids", 0, "each id is a string, the letter's stream id");
        break;
      }
      if ((j->ids[j->nids] = sl_strdup(e->valuestring)) == NULL)
        break;
      j->nids++;
    }
    if (req->ready || j->ids == NULL) {
      j->ok = 0;
      for (size_t i = 0; i < j->nids; i++)
        sl_free(j->ids[i]);
      sl_free(j->ids);
      sl__buf_free(&j->out);
      sl_free(j);
      if (!req->ready)
        srv_error(req, 503, "out_of_memory", NULL, 0, "the server is out of memory");
      return;
    }
  } else {
    j->all = (size_t)all->valuedouble;
  }
  job_start(j);
}

void srv_api_queue_body(srv_req *req) {
  cJSON *o;

  if (req->ready)
    return;
  o = cJSON_ParseWithLength(req->small.p ? req->small.p : "", req->small.len);
  if (o == NULL || !cJSON_IsObject(o)) {
    cJSON_Delete(o);
    srv_error(req, 400, "invalid_json", NULL, 0, "the body must be a JSON object");
    return;
  }
  if (strcmp(req->path, "/v1/dead/requeue") == 0)
    requeue(req, o);
  else
    limit_put(req, o);
  cJSON_Delete(o);
}
