/*
 * Completion webhooks: when a batch submitted with --webhook ends, one POST
 * of its summary to that URL, signed as the Standard Webhooks specification
 * (standardwebhooks.com) says, so receivers verify it with its libraries.
 *
 * The batch's end (sl_maybe_finish) puts it in P..'webhooks', due at once,
 * as a new message: the end count in its hash goes up, and with it the
 * message id sl_webhook_id (lua/_lib.lua) builds, "msg_BATCH_N_Q8". Every
 * worker looks about once a second (sluice_v1_webhook_take): a claim moves
 * the entry a lease (60 s) into the future, so however many workers race,
 * one sends it; the outcome is recorded with sluice_v1_webhook_done:
 * delivered (2xx), or tried again after 1, 2, 4 ... s (at most 5 minutes,
 * with jitter) up to WEBHOOK_ATTEMPTS times.
 *
 * Each POST carries Content-Type: application/json, webhook-id (the message
 * id: the same on every try of one end of the batch, so receivers dedupe
 * with it), webhook-timestamp (this worker's clock at this send, seconds
 * since the epoch: a fresh one on every try) and, when the worker has a
 * secret, webhook-signature: "v1," + base64 of HMAC-SHA256(key,
 * "ID.TIMESTAMP.BODY"). Receivers reject a timestamp more than 5 minutes off
 * their clock, so a captured POST cannot be replayed later.
 *
 * The secret is SLUICE_WEBHOOK_SECRET in the worker's environment, read once
 * by sl_worker_new: "whsec_" and the base64 of 24 to 64 random bytes, the
 * key. A secret that is set but not of that form stops the worker from
 * starting (SL_EINVAL). Without one the worker still sends webhooks, but
 * unsigned, and says so: once, on its first look, when the queue has
 * webhooks waiting (or when it takes its first one), and on every send.
 *
 * HMAC-SHA256 and base64 are OpenSSL's libcrypto (hand-written crypto would
 * be worse). The key lives in the worker struct and is wiped on free.
 */
#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "alloc.h"
#include "httpc.h"
#include "id.h"
#include "log.h"
#include "worker.h"

#define WEBHOOK_EVERY_MS 1000   /* how often a worker looks for due webhooks */
#define WEBHOOK_LEASE_MS 60000  /* a claim holds a delivery this long */
#define WEBHOOK_ATTEMPTS 10     /* tries of one message before giving up */
#define WEBHOOK_TAKE_MAX 5      /* webhooks claimed per look */
#define WEBHOOK_ID_MAX 128      /* bytes of a message id: "msg_" + batch (64) + "_N_" + 8 hex */

/* The hint every secret error ends with. */
#define SECRET_FORM                                                                                               \
  "it must be whsec_ followed by the base64 of 24 to 64 random bytes (make one with: "                           \
  "echo \"whsec_$(head -c 32 /dev/urandom | base64)\"), or unset to send webhooks unsigned"

typedef struct delivery {
  sl_worker_t *w;   /* owner */
  char *batch;      /* batch id */
  char *msg_id;     /* webhook-id, handed back to webhook_done */
  int attempt;      /* 1 for the first try of this message */
} delivery;

/* ---- The secret and the signature ---- */

static int b64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int sl__webhook_key_parse(const char *secret, unsigned char *key, size_t *keylen, char *errbuf, size_t errlen) {
  /* The base64 text, padded again to a multiple of 4, and what it decodes
   * to: EVP_DecodeBlock wants whole quads and writes 3 bytes for each,
   * the padding's zero bytes included. */
  char text[(SL_WEBHOOK_KEY_MAX + 2) / 3 * 4 + 1];
  unsigned char raw[sizeof(text) / 4 * 3 + 1];
  const char *b64;
  size_t n;
  size_t pad = 0;
  size_t len;
  int rc = SL_EINVAL;

  if (strncmp(secret, "whsec_", 6) != 0) {
    snprintf(errbuf, errlen, "%s %s: %s", SL_WEBHOOK_SECRET_ENV,
             secret[0] == '\0' ? "is set but empty" : "does not begin with whsec_", SECRET_FORM);
    return SL_EINVAL;
  }
  b64 = secret + 6;
  n = strlen(b64);
  while (n > 0 && pad < 2 && b64[n - 1] == '=') {
    n--;
    pad++;
  }
  for (size_t i = 0; i < n; i++) {
    if (!b64_char(b64[i])) {
      snprintf(errbuf, errlen, "%s is not base64 after whsec_ (character %zu is not A-Z, a-z, 0-9, + or /): %s",
               SL_WEBHOOK_SECRET_ENV, i + 1, SECRET_FORM);
      return SL_EINVAL;
    }
  }
  if (n % 4 == 1 || (pad > 0 && (n + pad) % 4 != 0)) {
    snprintf(errbuf, errlen, "%s is not base64 after whsec_ (%zu characters%s cannot be whole bytes): %s",
             SL_WEBHOOK_SECRET_ENV, n, pad > 0 ? " and its = padding" : "", SECRET_FORM);
    return SL_EINVAL;
  }
  len = n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1);
  if (len < SL_WEBHOOK_KEY_MIN || len > SL_WEBHOOK_KEY_MAX) {
    snprintf(errbuf, errlen, "%s holds a key of %zu bytes, %s: %s", SL_WEBHOOK_SECRET_ENV, len,
             len < SL_WEBHOOK_KEY_MIN ? "fewer than 24" : "more than 64", SECRET_FORM);
    return SL_EINVAL;
  }
  memcpy(text, b64, n);
  pad = (4 - n % 4) % 4;
  memset(text + n, '=', pad);
  text[n + pad] = '\0';
  if (EVP_DecodeBlock(raw, (const unsigned char *)text, (int)(n + pad)) != (int)((n + pad) / 4 * 3)) {
    snprintf(errbuf, errlen, "%s is not base64 after whsec_: %s", SL_WEBHOOK_SECRET_ENV, SECRET_FORM);
    goto out;
  }
  memcpy(key, raw, len);
  *keylen = len;
  rc = 0;
out:
  OPENSSL_cleanse(text, sizeof(text));
  OPENSSL_cleanse(raw, sizeof(raw));
  return rc;
}

int sl__webhook_sign(const unsigned char *key, size_t keylen, const char *id, int64_t ts, const char *body, char *out,
                     size_t outlen) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  char tsbuf[24];
  size_t idlen = strlen(id);
  size_t bodylen = strlen(body);
  size_t tslen;
  size_t n;
  unsigned char *msg;
  int rc = 0;

  if (outlen < SL_WEBHOOK_SIG_SIZE)
    return SL_EINVAL;
  tslen = (size_t)snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long)ts);
  n = idlen + 1 + tslen + 1 + bodylen;
  msg = sl_malloc(n);
  if (msg == NULL)
    return SL_ENOMEM;
  memcpy(msg, id, idlen);
  msg[idlen] = '.';
  memcpy(msg + idlen + 1, tsbuf, tslen);
  msg[idlen + 1 + tslen] = '.';
  memcpy(msg + idlen + 1 + tslen + 1, body, bodylen);
  if (HMAC(EVP_sha256(), key, (int)keylen, msg, n, mac, &maclen) == NULL || maclen != 32) {
    rc = SL_ENOMEM; /* libcrypto could not allocate its context */
    goto out;
  }
  memcpy(out, "v1,", 3);
  EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)maclen); /* 44 characters and a NUL */
out:
  OPENSSL_cleanse(mac, sizeof(mac));
  sl_free(msg);
  return rc;
}

int sl__webhook_init(sl_worker_t *w, char *errbuf, size_t errlen) {
  const char *secret = getenv(SL_WEBHOOK_SECRET_ENV);

  w->webhook_keylen = 0;
  if (secret == NULL)
    return 0;
  return sl__webhook_key_parse(secret, w->webhook_key, &w->webhook_keylen, errbuf, errlen);
}

void sl__webhook_free(sl_worker_t *w) {
  OPENSSL_cleanse(w->webhook_key, sizeof(w->webhook_key));
  w->webhook_keylen = 0;
}

/* ---- Sending ---- */

/* The once-per-process warning of a worker without a secret. */
static void warn_unsigned(sl_worker_t *w) {
  if (w->webhook_warned)
    return;
  w->webhook_warned = 1;
  sl__log_warn("queue %s has batches that ask for completion webhooks, and %s is not set: this worker sends "
               "them unsigned, so receivers cannot tell them from forgeries (set it to whsec_ and the base64 of "
               "24 to 64 random bytes; README, Completion webhooks)",
               w->keys.queue, SL_WEBHOOK_SECRET_ENV);
}

static void delivery_free(delivery *d) {
  sl_free(d->batch);
  sl_free(d->msg_id);
  sl_free(d);
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
    sl__log_info("webhook of batch %s delivered (try %d, %s)", d->batch, d->attempt, d->msg_id);
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
    redisAsyncCommand(w->cmd, on_recorded, NULL, "FCALL sluice_v1_webhook_done 1 %s %s %s %s %s %s", key,
                      w->keys.prefix, d->batch, status >= 200 && status < 300 ? "ok" : msg, delay, d->msg_id);
  delivery_free(d);
}

/* Sends one claimed webhook: its headers, signed when the worker has a key.
 * Failures other than a URL the worker may not call leave the claim to
 * lapse, and the webhook is sent later. */
static void send_one(sl_worker_t *w, const char *batch, const char *url, long long attempt, const char *body,
                     const char *msg_id) {
  char id_hdr[WEBHOOK_ID_MAX + 16];
  char ts_hdr[48];
  char sig_hdr[SL_WEBHOOK_SIG_SIZE + 24];
  const char *headers[5];
  int64_t ts = sl__now_ms() / 1000;
  int k = 0;
  int rc;
  delivery *d;

  if (strlen(msg_id) > WEBHOOK_ID_MAX)
    return; /* not from this build's webhook_take: the claim lapses */
  d = sl_calloc(1, sizeof(*d));
  if (d == NULL)
    return;
  d->w = w;
  d->attempt = (int)attempt;
  d->batch = sl_strdup(batch);
  d->msg_id = sl_strdup(msg_id);
  if (d->batch == NULL || d->msg_id == NULL) {
    delivery_free(d);
    return;
  }
  snprintf(id_hdr, sizeof(id_hdr), "webhook-id: %s", msg_id);
  snprintf(ts_hdr, sizeof(ts_hdr), "webhook-timestamp: %lld", (long long)ts);
  headers[k++] = "Content-Type: application/json";
  headers[k++] = id_hdr;
  headers[k++] = ts_hdr;
  if (w->webhook_keylen > 0) {
    memcpy(sig_hdr, "webhook-signature: ", 19);
    if (sl__webhook_sign(w->webhook_key, w->webhook_keylen, msg_id, ts, body, sig_hdr + 19,
                         sizeof(sig_hdr) - 19) != 0) {
      delivery_free(d); /* out of memory: never send it unsigned; the claim lapses */
      return;
    }
    headers[k++] = sig_hdr;
  }
  headers[k] = NULL;
  rc = sl__httpc_post(w->httpc, url, body, headers, on_posted, d);
  if (rc == SL_EINVAL) {
    char msg[300];

    /* Not an allowed host (--http-allow), or not a URL: no retry helps. */
    snprintf(msg, sizeof(msg), "webhook URL %.200s is not allowed on worker %s (--http-allow) or not a URL", url,
             sl_worker_id(w));
    d->attempt = WEBHOOK_ATTEMPTS;
    on_posted(d, 0, msg);
  } else if (rc != 0) {
    delivery_free(d); /* the claim lapses and it is sent later */
  } else if (w->webhook_keylen == 0) {
    sl__log_warn("webhook of batch %s sent unsigned: %s is not set", batch, SL_WEBHOOK_SECRET_ENV);
  }
}

static int is_str(const redisReply *r) {
  return r->type == REDIS_REPLY_STRING;
}

static void on_taken(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  w->webhook_busy = 0;
  if (r == NULL || r->type != REDIS_REPLY_ARRAY)
    return;
  for (size_t i = 0; i + 4 < r->elements; i += 5) {
    redisReply **e = r->element + i;

    if (!is_str(e[0]) || !is_str(e[1]) || e[2]->type != REDIS_REPLY_INTEGER || !is_str(e[3]) || !is_str(e[4]) ||
        strncmp(e[4]->str, "msg_", 4) != 0)
      continue; /* not this build's reply (an older library's, 4 per webhook): the claim lapses */
    if (w->webhook_keylen == 0)
      warn_unsigned(w);
    send_one(w, e[0]->str, e[1]->str, e[2]->integer, e[3]->str, e[4]->str);
  }
}

/* The first look of a worker without a secret: are webhooks waiting? */
static void on_counted(redisAsyncContext *ac, void *reply, void *priv) {
  sl_worker_t *w = ac->data;
  redisReply *r = reply;

  (void)priv;
  if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
    warn_unsigned(w);
}

static void on_webhook_timer(uv_timer_t *t) {
  sl_worker_t *w = t->data;
  char key[sizeof(w->keys.prefix) + 16];
  char lease[24];

  if (!w->cmd_up || w->webhook_busy || w->stopping || w->httpc == NULL)
    return;
  snprintf(key, sizeof(key), "%swebhooks", w->keys.prefix);
  if (w->webhook_keylen == 0 && !w->webhook_looked) {
    if (redisAsyncCommand(w->cmd, on_counted, NULL, "ZCARD %s", key) == REDIS_OK)
      w->webhook_looked = 1;
  }
  snprintf(lease, sizeof(lease), "%d", WEBHOOK_LEASE_MS);
  if (redisAsyncCommand(w->cmd, on_taken, NULL, "FCALL sluice_v1_webhook_take 1 %s %s %s %s %d", key,
                        w->keys.prefix, w->keys.queue, lease, WEBHOOK_TAKE_MAX) == REDIS_OK)
    w->webhook_busy = 1;
}

void sl__webhook_start(sl_worker_t *w) {
  uv_timer_start(&w->webhook, on_webhook_timer, WEBHOOK_EVERY_MS, WEBHOOK_EVERY_MS);
}
