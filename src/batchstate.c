/*
 * The state of a batch, as every view shows it: `sluice status`, the
 * listing, `watch`, the HTTP API and (from lua/_lib.lua's sl_publish, the
 * same definitions) the events. One read-only call, sluice_v1_state
 * (lua/state.lua), gives the batch hash and its live state (the counts by
 * place, pct, rate, eta_ms) as one snapshot (sl__batch_state); this file
 * turns it into the status JSON (sl__batch_json, docs/openapi.json's
 * BatchState): counters, live counts, times, labels, metric sums and the
 * webhook's state.
 */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "conn.h"
#include "id.h"
#include "json.h"
#include "labels.h"

const char *sl__hfield(const redisReply *h, const char *name) {
  for (size_t i = 0; i + 1 < h->elements; i += 2) {
    if (strcmp(h->element[i]->str, name) == 0)
      return h->element[i + 1]->str;
  }
  return NULL;
}

long long sl__hnum(const redisReply *h, const char *name) {
  const char *v = sl__hfield(h, name);

  return v ? strtoll(v, NULL, 10) : 0;
}

int sl__batch_ended(const redisReply *h) {
  const char *whole = sl__hfield(h, "whole");

  return whole != NULL && strcmp(whole, "1") == 0 && sl__hnum(h, "done") >= sl__hnum(h, "total");
}

/* The batch's metric sums (metric:NAME over all attempts, final:NAME over
 * final ones, written by sluice_v1_complete) as ,"metrics":{"NAME":{"all":
 * X,"final":Y},...}, and ,"reran":N (items that ran more than once). */
static int metrics_json(sl_buf *out, const redisReply *h) {
  int n = 0;
  int rc = 0;

  for (size_t i = 0; i + 1 < h->elements && rc == 0; i += 2) {
    const char *f = h->element[i]->str;
    char fin[128];
    const char *fv;

    if (strncmp(f, "metric:", 7) != 0 || strlen(f) > 70)
      continue;
    snprintf(fin, sizeof(fin), "final:%s", f + 7);
    fv = sl__hfield(h, fin);
    rc = sl__buf_printf(out, "%s\"%s\":{\"all\":%.15g,\"final\":%.15g}", n++ ? "," : ",\"metrics\":{", f + 7,
                        strtod(h->element[i + 1]->str, NULL), fv ? strtod(fv, NULL) : 0.0);
  }
  if (rc == 0 && n > 0)
    rc = sl__buf_putc(out, '}');
  if (rc == 0 && sl__hnum(h, "reran") > 0)
    rc = sl__buf_printf(out, ",\"reran\":%lld", sl__hnum(h, "reran"));
  return rc;
}

/* The live state that sluice_v1_state appends (live:FIELD; lua/state.lua):
 * the counts by state, then rate and eta_ms (null while unknown). Absent
 * from a plain hash read. */
static const char *const live_counts[] = {"queued", "scheduled", "waiting", "running", "retrying", "paused", NULL};

static int live_json(sl_buf *out, const redisReply *h) {
  char f[32];
  int rc = 0;

  if (sl__hfield(h, "live:queued") == NULL)
    return 0;
  for (size_t i = 0; live_counts[i] != NULL && rc == 0; i++) {
    snprintf(f, sizeof(f), "live:%s", live_counts[i]);
    rc = sl__buf_printf(out, ",\"%s\":%lld", live_counts[i], sl__hnum(h, f));
  }
  for (size_t i = 0; i < 2 && rc == 0; i++) {
    const char *name = i ? "eta_ms" : "rate";
    const char *v;

    snprintf(f, sizeof(f), "live:%s", name);
    v = sl__hfield(h, f);
    rc = sl__buf_printf(out, ",\"%s\":%s", name, v != NULL && *v != '\0' ? v : "null");
  }
  return rc;
}

/* ,"webhook":{"url","attempts","delivered_at","error"} of a batch with a
 * completion webhook (docs/PROTOCOL.md, the batch hash): tries of the
 * current message, when it was delivered (null: not yet), the last error. */
static int webhook_json(sl_buf *out, const redisReply *h) {
  const char *url = sl__hfield(h, "webhook");
  const char *err = sl__hfield(h, "webhook_error");
  int rc;

  if (url == NULL)
    return 0;
  rc = sl__buf_puts(out, ",\"webhook\":{\"url\":");
  if (rc == 0)
    rc = sl__json_put_str(out, url, strlen(url));
  if (rc == 0)
    rc = sl__buf_printf(out, ",\"attempts\":%lld,\"delivered_at\":", sl__hnum(h, "webhook_attempts"));
  if (rc == 0 && sl__hnum(h, "webhook_at") > 0)
    rc = sl__buf_printf(out, "%lld", sl__hnum(h, "webhook_at"));
  else if (rc == 0)
    rc = sl__buf_puts(out, "null");
  if (rc == 0)
    rc = sl__buf_puts(out, ",\"error\":");
  if (rc == 0 && err != NULL)
    rc = sl__json_put_str(out, err, strlen(err));
  else if (rc == 0)
    rc = sl__buf_puts(out, "null");
  return rc ? rc : sl__buf_putc(out, '}');
}

int sl__batch_json(sl_buf *out, const sl_keys *k, const char *batch, const redisReply *h) {
  const char *status = sl__hfield(h, "status");
  const char *name = sl__hfield(h, "name");
  long long total = sl__hnum(h, "total");
  long long done = sl__hnum(h, "done");
  long long created = sl__hnum(h, "created_at");
  long long started = sl__hnum(h, "started_at");
  long long finished = sl__hnum(h, "finished_at");
  int whole = sl__hnum(h, "whole") == 1;
  long long now = sl__hfield(h, "live:now") ? sl__hnum(h, "live:now") : sl__now_ms();
  long long elapsed = created ? (finished ? finished : now) - created : 0;
  long long run_ms = started ? (finished ? finished : now) - started : 0;
  double pct = whole ? (total > 0 ? (double)(done * 1000 / total) / 10.0 : 100.0) : 0.0;
  int rc;

  rc = sl__buf_printf(out, "{\"queue\":\"%s\",\"batch\":", k->queue);
  if (rc == 0)
    rc = sl__json_put_str(out, batch, strlen(batch));
  if (rc == 0 && sl__hfield(h, "tenant") != NULL) {
    rc = sl__buf_puts(out, ",\"tenant\":");
    if (rc == 0)
      rc = sl__json_put_str(out, sl__hfield(h, "tenant"), strlen(sl__hfield(h, "tenant")));
  }
  if (rc == 0)
    rc = sl__buf_puts(out, ",\"name\":");
  if (rc == 0)
    rc = sl__json_put_str(out, name ? name : "", name ? strlen(name) : 0);
  if (rc == 0 && sl__hfield(h, "labels") != NULL) {
    rc = sl__buf_puts(out, ",\"labels\":");
    if (rc == 0)
      rc = sl__labels_json(out, sl__hfield(h, "labels"));
  }
  if (rc == 0)
    rc = metrics_json(out, h);
  if (rc == 0)
    rc = sl__buf_printf(out,
                        ",\"status\":\"%s\",\"total\":%lld,\"done\":%lld,\"succeeded\":%lld,"
                        "\"failed\":%lld,\"cancelled\":%lld,\"pct\":%.1f,\"ts\":%lld,"
                        "\"incomplete\":%s,\"submitted\":%lld,\"created_at\":%lld,\"queued_at\":%lld,"
                        "\"started_at\":%lld,\"finished_at\":%lld,\"elapsed_ms\":%lld,"
                        "\"items_per_s\":%.1f,\"skipped\":%lld,\"refused\":%lld",
                        status ? status : "?", total, done, sl__hnum(h, "succeeded"), sl__hnum(h, "failed"),
                        sl__hnum(h, "cancelled"), pct, now, whole ? "false" : "true",
                        sl__hnum(h, "submitted"), created, sl__hnum(h, "queued_at"), started, finished,
                        elapsed, run_ms > 0 ? (double)done * 1000.0 / (double)run_ms : 0.0, sl__hnum(h, "skipped"),
                        sl__hnum(h, "refused"));
  if (rc == 0)
    rc = live_json(out, h);
  if (rc == 0)
    rc = webhook_json(out, h);
  if (rc == 0)
    rc = sl__buf_putc(out, '}');
  return rc;
}

/* The one batch of a sluice_v1_state reply (an array of one array): taken
 * out of r, which is freed. An empty array when the reply is not of that
 * form. */
redisReply *sl__batch_state_take(redisReply *r) {
  redisReply *h = NULL;

  if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY) {
    h = r->element[0];
    r->element[0] = NULL; /* freeReplyObject skips it */
  } else {
    h = r;
    for (size_t i = 0; i < r->elements; i++)
      freeReplyObject(r->element[i]);
    r->elements = 0;
    return h;
  }
  freeReplyObject(r);
  return h;
}

/* The batch hash with its live state (sluice_v1_state: one snapshot, so
 * the counts add up); NULL with *rcode set (SL_ENOTFOUND if absent). */
redisReply *sl__batch_state(sl_client_t *c, const sl_keys *k, const char *batch, int *rcode) {
  char key[256];
  const char *av[4] = {"FCALL_RO", "sluice_v1_state", "1", key};
  redisReply *r;

  snprintf(key, sizeof(key), "%sb:%s", k->prefix, batch);
  r = sl__client_cmd(c, rcode, 4, av, NULL);
  if (r == NULL)
    return NULL;
  r = sl__batch_state_take(r);
  if (r->elements == 0) {
    freeReplyObject(r);
    *rcode = sl__client_fail(c, SL_ENOTFOUND, "no batch %s in queue %s (wrong --queue, or it expired)",
                             batch, k->queue);
    return NULL;
  }
  return r;
}

SL_EXTERN int sl_batch_status(sl_client_t *c, const char *queue, const char *batch, char **json_out) {
  sl_keys k;
  sl_buf out;
  redisReply *h;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  h = sl__batch_state(c, &k, batch, &rc);
  if (h == NULL)
    return rc;
  sl__buf_init(&out, 64 * 1024);
  rc = sl__batch_json(&out, &k, batch, h);
  freeReplyObject(h);
  /* Progress of running items: "progress":{"IDX":pct,...}, at most 100. */
  if (rc == 0) {
    char pkey[256];
    const char *av[2] = {"HGETALL", pkey};
    redisReply *p;

    snprintf(pkey, sizeof(pkey), "%sb:%s:progress", k.prefix, batch);
    p = sl__client_cmd(c, &rc, 2, av, NULL);
    if (p != NULL) {
      out.len--; /* reopen the object */
      rc = sl__buf_puts(&out, ",\"progress\":{");
      for (size_t i = 0; rc == 0 && i + 1 < p->elements && i < 200; i += 2)
        rc = sl__buf_printf(&out, "%s\"%s\":%s", i ? "," : "", p->element[i]->str, p->element[i + 1]->str);
      if (rc == 0)
        rc = sl__buf_puts(&out, "}}");
      freeReplyObject(p);
    }
  }
  if (rc != 0) {
    sl__buf_free(&out);
    return sl__client_fail(c, rc, "%s", sl_strerror(rc));
  }
  *json_out = sl__buf_take(&out);
  return *json_out ? 0 : sl__client_fail(c, SL_ENOMEM, "out of memory");
}
