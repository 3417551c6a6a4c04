/*
 * Completion webhooks, sent by workers and signed the Standard Webhooks way;
 * see webhook.c.
 */
#ifndef SL_WEBHOOK_H
#define SL_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include <sluice/sluice.h>

#define SL_WEBHOOK_SECRET_ENV "SLUICE_WEBHOOK_SECRET" /* where a worker finds its signing secret */
#define SL_WEBHOOK_KEY_MIN 24   /* bytes of the decoded secret, the least (the spec: at least 192 bits) */
#define SL_WEBHOOK_KEY_MAX 64   /* bytes of the decoded secret, the most (the spec: 512 bits) */
#define SL_WEBHOOK_SIG_SIZE 48  /* "v1," + base64 of an HMAC-SHA256 (44) + NUL, bytes */

/*
 * Parses a secret of the form "whsec_" + base64 (standard alphabet, '='
 * padding optional) into the HMAC key it stands for: 24 to 64 bytes, written
 * to key (SL_WEBHOOK_KEY_MAX bytes) with the length in *keylen. Returns 0, or
 * SL_EINVAL with the reason in errbuf, which never quotes the secret; key and
 * *keylen are left untouched then.
 */
int sl__webhook_key_parse(const char *secret, unsigned char *key, size_t *keylen, char *errbuf, size_t errlen);

/*
 * The webhook-signature value of one send: "v1," + base64 of
 * HMAC-SHA256(key, id "." ts "." body), NUL-terminated in out (at least
 * SL_WEBHOOK_SIG_SIZE bytes). ts is seconds since the epoch. Returns 0,
 * SL_ENOMEM, or SL_EINVAL when out is too small.
 */
int sl__webhook_sign(const unsigned char *key, size_t keylen, const char *id, int64_t ts, const char *body, char *out,
                     size_t outlen);

/* Reads SLUICE_WEBHOOK_SECRET into the worker (unset: webhooks go out
 * unsigned, with warnings). Returns 0, or SL_EINVAL with the reason in
 * errbuf when it is set but malformed. */
int sl__webhook_init(sl_worker_t *w, char *errbuf, size_t errlen);
/* Starts the worker's look for due webhooks (its timer is initialized). */
void sl__webhook_start(sl_worker_t *w);
/* Wipes the worker's key (sl_worker_free). */
void sl__webhook_free(sl_worker_t *w);

#endif
