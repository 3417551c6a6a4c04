/*
 * Completion webhooks: when a batch submitted with --webhook ends, one POST
 * of its summary to that URL.
 *
 * The batch's end (sl_maybe_finish) puts it in P..'webhooks', due at once.
 * Every worker looks about once a second (sluice_v1_webhook_take): a claim
 * moves the entry a lease (60 s) into the future, so however many workers
 * race, one sends it; the outcome is recorded with sluice_v1_webhook_done:
 * delivered (2xx), or tried again after 1, 2, 4 ... s (at most 5 minutes,
 * with jitter) up to WEBHOOK_ATTEMPTS times. Each POST carries
 * X-Sluice-Delivery (the batch id, the same for every try: receivers dedupe
 * with it) and, when the worker has SLUICE_WEBHOOK_SECRET in its
 * environment, X-Sluice-Signature: sha256=HEX, the HMAC-SHA256 of the body
 * with that secret (OpenSSL's libcrypto; hand-written crypto would be worse).
 */
#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "alloc.h"
#include "http.h"
#include "id.h"
#include "log.h"
#include "worker.h"

#define WEBHOOK_EVERY_MS 1000   /* how often a worker looks for due webhooks */
#define WEBHOOK_LEASE_MS 60000  /* a claim holds a delivery this long */
#define WEBHOOK_ATTEMPTS 10     /* tries before giving up */

typedef struct delivery {
  sl_worker_t *w;   /* owner */
  char *batch;      /* batch id */
  int attempt;      /* 1 for the first */
} delivery;

/* "sha256=" + hex HMAC-SHA256(secret, body). */
static void sign(const char *secret, const char *body, char *out, size_t len) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  size_t k;

  HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body, strlen(body), mac, &n);
  k = (size_t)snprintf(out, len, "X-Sluice-Signature: sha256=");
  for (unsigned int i = 0; i < n && k + 3 < len; i++)
    k += (size_t)snprintf(out + k, len - k, "%02x", mac[i]);
}

static void on_recorded(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  (void)reply;
  (void)priv;
}

static void on_posted(void *ud, long status, const char *msg) {
  delivery *d = ud;
  sl_worker_t *w = d->w;
  char key[sizeof(w->keys.prefix) + 16];
  char delay[24] = "";

  snprintf(key, sizeof(key), "%swebhooks", w->keys.prefix);
  if (status >= 200 && status < 300) {
    sl__log_info("webhook of batch %s delivered (try %d)", d->batch, d->attempt);
  } else if (d->attempt < WEBHOOK_ATTEMPTS) {
    int64_t ms = 1000LL << (d->attempt - 1 < 8 ? d->attempt - 1 : 8);

    if (ms > 300000)
      ms = 300000;
    ms += rand() % (ms / 5 + 1); /* jitter */
    snprintf(delay, sizeof(delay), "%lld", (long long)ms);
    sl__log_warn("webhook of batch %s failed (try %d): %s; trying again in %lld ms", d->batch, d->attempt, msg,
                 (long long)ms);
  } else {
    sl__log_warn("webhook of batch %s failed %d times, giving up: %s", d->batch, d->attempt, msg);
  }
  if (w->cmd_up)
    redisAsyncCommand(w->cmd, on_recorded, NULL, "FCALL sluice_v1_webhook_done 1 %s %s %s %s %s", key,
                      w->keys.prefix, d->batch, status >= 200 && status < 300 ? "ok" : msg, delay);
  sl_free(d->batch);
  sl_free(d);
}

static void on_taken(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;
  const char *secret = getenv("SLUICE_WEBHOOK_SECRET");

  (void)priv;
  w->webhook_busy = 0;
  if (r == NULL || r->type != REDIS_REPLY_ARRAY)
    return;
  for (size_t i = 0; i + 3 < r->elements; i += 4) {
    const char *batch = r->element[i]->str;
    const char *url = r->element[i + 1]->str;
    const char *body = r->element[i + 3]->str;
    char delivery_hdr[128];
    char sig[128];
    const char *headers[5];
    int k = 0;
    delivery *d = sl_calloc(1, sizeof(*d));

    if (d == NULL)
      continue; /* the claim lapses and it is sent later */
    d->w = w;
    d->batch = sl_strdup(batch);
    d->attempt = (int)r->element[i + 2]->integer;
    snprintf(delivery_hdr, sizeof(delivery_hdr), "X-Sluice-Delivery: %s", batch);
    headers[k++] = "Content-Type: application/json";
    headers[k++] = delivery_hdr;
    if (secret != NULL && *secret != '\0') {
      sign(secret, body, sig, sizeof(sig));
      headers[k++] = sig;
    }
    headers[k] = NULL;
    if (d->batch == NULL) {
      sl_free(d);
      continue;
    }
    {
      int rc = sl__http_post(w->http, url, body, headers, on_posted, d);

      if (rc == SL_EINVAL) {
        char msg[300];

        /* Not an allowed host (--http-allow), or not a URL: no retry helps. */
        snprintf(msg, sizeof(msg), "webhook URL %.200s is not allowed on worker %s (--http-allow) or not a URL", url,
                 sl_worker_id(w));
        d->attempt = WEBHOOK_ATTEMPTS;
        on_posted(d, 0, msg);
      } else if (rc != 0) {
        sl_free(d->batch);
        sl_free(d); /* the claim lapses and it is sent later */
      }
    }
  }
}

static void on_webhook_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;
  char key[sizeof(w->keys.prefix) + 16];
  char lease[24];

  if (!w->cmd_up || w->webhook_busy || w->stopping || w->http == NULL)
    return;
  snprintf(key, sizeof(key), "%swebhooks", w->keys.prefix);
  snprintf(lease, sizeof(lease), "%d", WEBHOOK_LEASE_MS);
  if (redisAsyncCommand(w->cmd, on_taken, NULL, "FCALL sluice_v1_webhook_take 1 %s %s %s %s 5", key,
                        w->keys.prefix, w->keys.queue, lease) == REDIS_OK)
    w->webhook_busy = 1;
}

void sl__webhook_start(sl_worker_t *w) {
  uv_timer_start(&w->webhook, on_webhook_timer, WEBHOOK_EVERY_MS, WEBHOOK_EVERY_MS);
}
