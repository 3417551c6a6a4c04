/*
 * GET /metrics: the served queues in the Prometheus text exposition format
 * (version 0.0.4), named by Prometheus conventions: `sluice_` prefix,
 * counters ending in `_total`, base units (seconds), a `queue` label.
 *
 * Gauges come from the queue's state now (sl_queue_stats: queued and
 * running per priority, delayed, parked, waiting for a lease, dead letters,
 * live workers); counters and
 * the duration histogram from the hash sluice:{Q}:metrics that the
 * functions keep (lua/_lib.lua, sl_metric); the Redis round trip is a PING
 * timed here. An admin token is needed when the server has tokens, since
 * the figures cover every tenant.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <sluice/client.h>

#include "alloc.h"
#include "conn.h"
#include "srv.h"

/* The upper bounds of the histogram's buckets, seconds: lua/_lib.lua's
 * SL_DUR_BUCKETS_MS, in the same order. */
static const char *const BUCKETS[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
                                      "2.5",   "5",    "10",    "30",   "60",  "120",  "300"};
#define NBUCKETS (sizeof(BUCKETS) / sizeof(BUCKETS[0]))

typedef struct mjob {
  srv_req *req;
  sl_buf out;
  int ok;
  srv_failure f;
} mjob;

/* One queue's counters hash, field by field. */
typedef struct counters {
  long long ended_s, ended_f, ended_c, retries, takeovers, rate_waits, dur_sum_ms, dur_count;
  long long dur[NBUCKETS + 1];
} counters;

static void read_counters(const redisReply *h, counters *m) {
  memset(m, 0, sizeof(*m));
  for (size_t i = 0; h != NULL && h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2) {
    const char *k = h->element[i]->str;
    long long v = strtoll(h->element[i + 1]->str, NULL, 10);

    if (strcmp(k, "ended:succeeded") == 0)
      m->ended_s = v;
    else if (strcmp(k, "ended:failed") == 0)
      m->ended_f = v;
    else if (strcmp(k, "ended:cancelled") == 0)
      m->ended_c = v;
    else if (strcmp(k, "retries") == 0)
      m->retries = v;
    else if (strcmp(k, "takeovers") == 0)
      m->takeovers = v;
    else if (strcmp(k, "rate_waits") == 0)
      m->rate_waits = v;
    else if (strcmp(k, "dur_sum_ms") == 0)
      m->dur_sum_ms = v;
    else if (strcmp(k, "dur_count") == 0)
      m->dur_count = v;
    else if (strncmp(k, "dur:", 4) == 0) {
      long b = strtol(k + 4, NULL, 10);

      if (b >= 1 && (size_t)b <= NBUCKETS + 1)
        m->dur[b - 1] = v;
    }
  }
}

static double num(const cJSON *o, const char *a, const char *b) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);

  if (b != NULL)
    x = cJSON_GetObjectItemCaseSensitive(x, b);
  return cJSON_IsNumber(x) ? x->valuedouble : 0;
}

/* The families, each with its HELP and TYPE once, then a sample per queue. */
typedef struct family {
  const char *name;
  const char *type;
  const char *help;
} family;

static const family FAM[] = {
    {"sluice_queue_items", "gauge", "Items in the queue's streams, by priority and state (queued: not read by a worker yet; running: read and not finished)."},
    {"sluice_items_delayed", "gauge", "Items waiting for a later start: retries and scheduled items."},
    {"sluice_dead_letters", "gauge", "Dead letters of the queue (items that failed for good)."},
    {"sluice_workers", "gauge", "Workers of the queue that beat in the last 30 seconds."},
    {"sluice_items_ended_total", "counter", "Items that ended, by outcome."},
    {"sluice_item_retries_total", "counter", "Failed attempts that were sent to be retried."},
    {"sluice_item_takeovers_total", "counter", "Items taken over from workers that stopped heartbeating."},
    {"sluice_rate_limit_waits_total", "counter", "Items that had to wait for their rate limit."},
    {"sluice_item_duration_seconds", "histogram", "Duration of the attempts that ended items (succeeded or failed), seconds."},
    {"sluice_items_parked", "gauge", "Items held by paused batches."},
    {"sluice_items_waiting_lease", "gauge", "Items waiting for a concurrency lease of their limit."},
};

static void on_run(sl_client_t *c, const char *open_err, void *arg) {
  mjob *j = arg;
  sl_srv *s = j->req->s;
  cJSON *st[SRV_MAX_QUEUES] = {NULL};
  counters m[SRV_MAX_QUEUES];
  struct timespec t0, t1;
  int rc = 0;

  if (c == NULL) {
    j->f.status = 503;
    j->f.code = "redis_unavailable";
    snprintf(j->f.err, sizeof(j->f.err), "%s", open_err);
    return;
  }
  clock_gettime(CLOCK_MONOTONIC, &t0);
  {
    const char *av[1] = {"PING"};
    redisReply *r = sl__client_cmd(c, &rc, 1, av, NULL);

    freeReplyObject(r);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  for (size_t q = 0; rc == 0 && q < s->nqueues; q++) {
    char *json = NULL;
    char key[SL_NAME_MAX + 32];
    const char *av[2] = {"HGETALL", key};
    redisReply *h;

    rc = sl_queue_stats(c, s->queues[q], &json);
    if (rc == 0)
      st[q] = cJSON_Parse(json);
    sl_free(json);
    snprintf(key, sizeof(key), "sluice:{%s}:metrics", s->queues[q]);
    h = rc == 0 ? sl__client_cmd(c, &rc, 2, av, NULL) : NULL;
    read_counters(h, &m[q]);
    freeReplyObject(h);
  }
  if (rc != 0) {
    srv_fail(&j->f, c, rc, "reading the queues");
    goto out;
  }
  for (size_t f = 0; f < sizeof(FAM) / sizeof(FAM[0]); f++) {
    sl__buf_printf(&j->out, "# HELP %s %s\n# TYPE %s %s\n", FAM[f].name, FAM[f].help, FAM[f].name, FAM[f].type);
    for (size_t q = 0; q < s->nqueues; q++) {
      const char *qn = s->queues[q];

      switch (f) {
      case 0:
        for (int p = 0; p < 3; p++) {
          static const char *const prio[3] = {"high", "normal", "low"};

          sl__buf_printf(&j->out, "%s{queue=\"%s\",priority=\"%s\",state=\"queued\"} %.0f\n", FAM[f].name, qn,
                         prio[p], num(st[q], prio[p], "queued"));
          sl__buf_printf(&j->out, "%s{queue=\"%s\",priority=\"%s\",state=\"running\"} %.0f\n", FAM[f].name, qn,
                         prio[p], num(st[q], prio[p], "running"));
        }
        break;
      case 1: sl__buf_printf(&j->out, "%s{queue=\"%s\"} %.0f\n", FAM[f].name, qn, num(st[q], "delayed", NULL)); break;
      case 2: sl__buf_printf(&j->out, "%s{queue=\"%s\"} %.0f\n", FAM[f].name, qn, num(st[q], "dead", NULL)); break;
      case 3: sl__buf_printf(&j->out, "%s{queue=\"%s\"} %.0f\n", FAM[f].name, qn, num(st[q], "workers", NULL)); break;
      case 4:
        sl__buf_printf(&j->out, "%s{queue=\"%s\",outcome=\"succeeded\"} %lld\n", FAM[f].name, qn, m[q].ended_s);
        sl__buf_printf(&j->out, "%s{queue=\"%s\",outcome=\"failed\"} %lld\n", FAM[f].name, qn, m[q].ended_f);
        sl__buf_printf(&j->out, "%s{queue=\"%s\",outcome=\"cancelled\"} %lld\n", FAM[f].name, qn, m[q].ended_c);
        break;
      case 5: sl__buf_printf(&j->out, "%s{queue=\"%s\"} %lld\n", FAM[f].name, qn, m[q].retries); break;
      case 6: sl__buf_printf(&j->out, "%s{queue=\"%s\"} %lld\n", FAM[f].name, qn, m[q].takeovers); break;
      case 7: sl__buf_printf(&j->out, "%s{queue=\"%s\"} %lld\n", FAM[f].name, qn, m[q].rate_waits); break;
      case 9: sl__buf_printf(&j->out, "%s{queue=\"%s\"} %.0f\n", FAM[f].name, qn, num(st[q], "parked", NULL)); break;
      case 10:
        sl__buf_printf(&j->out, "%s{queue=\"%s\"} %.0f\n", FAM[f].name, qn, num(st[q], "waiting_lease", NULL));
        break;
      default: {
        long long cum = 0;

        for (size_t b = 0; b < NBUCKETS; b++) {
          cum += m[q].dur[b];
          sl__buf_printf(&j->out, "%s_bucket{queue=\"%s\",le=\"%s\"} %lld\n", FAM[f].name, qn, BUCKETS[b], cum);
        }
        sl__buf_printf(&j->out, "%s_bucket{queue=\"%s\",le=\"+Inf\"} %lld\n", FAM[f].name, qn, m[q].dur_count);
        sl__buf_printf(&j->out, "%s_sum{queue=\"%s\"} %.3f\n", FAM[f].name, qn, (double)m[q].dur_sum_ms / 1000.0);
        sl__buf_printf(&j->out, "%s_count{queue=\"%s\"} %lld\n", FAM[f].name, qn, m[q].dur_count);
        break;
      }
      }
    }
  }
  sl__buf_printf(&j->out, "# HELP sluice_redis_roundtrip_seconds The time of a PING to Redis from this server, seconds.\n"
                          "# TYPE sluice_redis_roundtrip_seconds gauge\nsluice_redis_roundtrip_seconds %.6f\n",
                 (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
  j->ok = 1;
out:
  for (size_t q = 0; q < s->nqueues; q++)
    cJSON_Delete(st[q]);
}

static void on_done(void *arg) {
  mjob *j = arg;
  srv_req *req = j->req;

  if (j->ok) {
    req->ctype = "text/plain; version=0.0.4; charset=utf-8";
    srv_answer(req, 200, sl__buf_take(&j->out));
  } else {
    snprintf(req->retry_after, sizeof(req->retry_after), "5");
    srv_error(req, j->f.status ? j->f.status : 503, j->f.code ? j->f.code : "out_of_memory", NULL, 0, "%s",
              j->f.err[0] ? j->f.err : "the server is out of memory");
  }
  sl__buf_free(&j->out);
  sl_free(j);
  srv_resume(req);
}

int srv_metrics(srv_req *req) {
  mjob *j;

  if (req->who.role != ROLE_ADMIN) {
    srv_error(req, 403, "forbidden", NULL, 0, "/metrics covers every tenant: it needs an admin token");
    return 1;
  }
  j = sl_malloc(sizeof(*j));
  if (j == NULL) {
    srv_error(req, 503, "out_of_memory", NULL, 0, "the server is out of memory");
    return 1;
  }
  memset(j, 0, sizeof(*j));
  j->req = req;
  sl__buf_init(&j->out, 16 * 1024 * 1024);
  if (srv_start_work(req, on_run, on_done, j) != 0) {
    sl__buf_free(&j->out);
    sl_free(j);
    srv_error(req, 503, "out_of_memory", NULL, 0, "the server cannot start the work");
  }
  return 1;
}
