/*
 * Collecting a batch: every item validated first, in one streaming pass,
 * kept in chunks with memory that does not grow with the batch's bytes.
 *
 * sl_batch_add validates and normalizes one line (sl__item_parse) and puts
 * the result into the chunk being filled, in the form its submit call needs
 * (spool.h). A chunk closes at `chunk_items` items (default 1,000) or when
 * its call arguments would pass CHUNK_MAX_BYTES (8 MiB), whichever comes
 * first; as items are at most about 1 MiB, no call is much over 8 MiB, well
 * under Redis's 1 GB query-buffer limit. When the next chunk begins, the full
 * one goes to the submit spool, an unlinked temporary file, and its memory is
 * reused: a batch that fits in one chunk never touches the disk.
 *
 * Duplicate ids are found without keeping the ids: the id table (idtab.h)
 * keeps a keyed 64-bit hash per item, and an equal hash is confirmed by
 * reading the earlier item's id back, from the chunk in memory or, for a
 * spooled chunk, its records and ids only (`look`, one chunk cached). The
 * error names the line of the first use.
 *
 * Memory, per batch: about 20-30 bytes per item for the id table, 16 bytes
 * per spooled chunk, and one chunk (at most about 8 MiB of arguments, in
 * buffers of up to 10 MiB). Writing the batch is submit.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "conn.h"
#include "id.h"
#include "idtab.h"
#include "item.h"
#include "json.h"
#include "labels.h"
#include "script.h"
#include "spool.h"
#include "submit.h"

#define DEFAULT_CHUNK 1000                 /* items per call: about 10 ms of Redis for small items */
#define DEFAULT_TIMEOUT_MS 30000           /* per attempt */
#define TENANT_CHARS "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.-" /* of a tenant name */

SL_EXTERN int sl_batch_new(const sl_batch_opts *opts, sl_batch_t **out, char *errbuf, size_t errlen) {
  sl_batch_opts none = {0};
  sl_batch_t *b;

  sl__alloc_init(); /* cJSON allocates through sl_malloc from here on */
  if (opts == NULL)
    opts = &none;
  b = sl_calloc(1, sizeof(*b));
  if (b == NULL)
    goto oom;
  sl__spool_init(&b->spool);
  sl__chunk_init(&b->cur, CHUNK_MAX_BYTES + CHUNK_SLACK);
  sl__chunk_init(&b->look, CHUNK_MAX_BYTES + CHUNK_SLACK);
  sl__buf_init(&b->skipped_ids, SIZE_MAX / 2);
  sl__buf_init(&b->skipped_by, SIZE_MAX / 2);
  b->chunk_bytes = CHUNK_MAX_BYTES;
  if (sl__idtab_init(&b->ids) != 0) {
    snprintf(errbuf, errlen, "cannot read random bytes for the id hash key");
    sl_batch_free(b);
    return SL_EIO;
  }
  if (sl__keys_init(&b->keys, opts->queue) != 0) {
    snprintf(errbuf, errlen, "invalid queue name \"%.*s\" (1-%d characters of [A-Za-z0-9_.:-])", 80,
             opts->queue, SL_NAME_MAX);
    goto invalid;
  }
  b->def.prio = SL_PRIO_NORMAL;
  if (opts->priority != NULL) {
    b->def.prio = sl__prio_parse(opts->priority, strlen(opts->priority));
    if (b->def.prio < 0) {
      snprintf(errbuf, errlen, "unknown priority \"%.*s\" (expected high, normal or low)", 40, opts->priority);
      goto invalid;
    }
  }
  if (opts->max_attempts < 0 || opts->max_attempts > 1000) {
    snprintf(errbuf, errlen, "max_attempts %d is out of range (1-1000)", opts->max_attempts);
    goto invalid;
  }
  if (opts->timeout_ms < 0 || opts->timeout_ms > 86400000) {
    snprintf(errbuf, errlen, "timeout_ms %lld is out of range (1-86400000 ms)", (long long)opts->timeout_ms);
    goto invalid;
  }
  b->def.max_attempts = opts->max_attempts > 0 ? opts->max_attempts : 1;
  b->def.timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
  if (opts->backoff_ms < 0 || opts->backoff_ms > 86400000 || opts->backoff_max_ms < 0 ||
      opts->backoff_max_ms > 86400000) {
    snprintf(errbuf, errlen, "backoff %lld ms / backoff max %lld ms out of range (0-86400000 ms)",
             (long long)opts->backoff_ms, (long long)opts->backoff_max_ms);
    goto invalid;
  }
  b->def.backoff_ms = opts->backoff_ms;
  b->def.backoff_max_ms = opts->backoff_max_ms;
  b->chunk_items = opts->chunk_items > 0 ? opts->chunk_items : DEFAULT_CHUNK;
  if (opts->run_at != NULL &&
      sl__rfc3339_parse(opts->run_at, strlen(opts->run_at), &b->def.start_at_ms) != 0) {
    snprintf(errbuf, errlen, "run_at \"%.60s\" is not an RFC 3339 time like 2026-11-23T10:00:00Z", opts->run_at);
    goto invalid;
  }
  if (opts->delay_ms < 0 || opts->delay_ms > 31536000000LL || opts->retention_ms < 0 ||
      (opts->run_at != NULL && opts->delay_ms > 0)) {
    snprintf(errbuf, errlen, "delay %lld ms / retention %lld ms out of range, or both run_at and delay given",
             (long long)opts->delay_ms, (long long)opts->retention_ms);
    goto invalid;
  }
  b->def.delay_ms = opts->delay_ms;
  b->retention_ms = opts->retention_ms;
  if (opts->dedupe_ttl_ms < 0) {
    snprintf(errbuf, errlen, "dedupe TTL %lld ms out of range", (long long)opts->dedupe_ttl_ms);
    goto invalid;
  }
  b->dedupe_ttl_ms = opts->dedupe_ttl_ms;
  if (opts->idempotency_key != NULL) {
    size_t n = strlen(opts->idempotency_key);

    if (n < 1 || n > SL_IDEM_KEY_MAX) {
      snprintf(errbuf, errlen, "idempotency key of %zu bytes: expected 1-%d", n, SL_IDEM_KEY_MAX);
      goto invalid;
    }
    b->idem_key = sl_strdup(opts->idempotency_key);
    if (b->idem_key == NULL)
      goto oom;
  }
  if (opts->idempotency_ttl_ms < 0 || opts->idempotency_ttl_ms > 31536000000LL) {
    snprintf(errbuf, errlen, "idempotency TTL %lld ms out of range (at most 365 days)",
             (long long)opts->idempotency_ttl_ms);
    goto invalid;
  }
  b->idem_ttl_ms = opts->idempotency_ttl_ms;
  if (opts->tenant != NULL) {
    size_t n = strlen(opts->tenant);

    if (n < 1 || n > SL_NAME_MAX || strspn(opts->tenant, TENANT_CHARS) != n) {
      snprintf(errbuf, errlen, "tenant \"%.80s\": expected 1-%d characters of [A-Za-z0-9_.-]", opts->tenant,
               SL_NAME_MAX);
      goto invalid;
    }
    b->tenant = sl_strdup(opts->tenant);
    if (b->tenant == NULL)
      goto oom;
  }
  if (opts->webhook != NULL) {
    if (strncmp(opts->webhook, "http://", 7) != 0 && strncmp(opts->webhook, "https://", 8) != 0) {
      snprintf(errbuf, errlen, "webhook \"%.80s\" must be an http:// or https:// URL", opts->webhook);
      goto invalid;
    }
    b->webhook = sl_strdup(opts->webhook);
    if (b->webhook == NULL)
      goto oom;
  }
  if (opts->rate_key != NULL) {
    if (!sl__name_valid(opts->rate_key, strlen(opts->rate_key))) {
      snprintf(errbuf, errlen, "invalid rate key \"%.*s\" (1-%d characters of [A-Za-z0-9_.:-])", 80,
               opts->rate_key, SL_NAME_MAX);
      goto invalid;
    }
    b->rate_key = sl_strdup(opts->rate_key);
    if (b->rate_key == NULL)
      goto oom;
    b->def.rate_key = b->rate_key;
  }
  if (opts->name != NULL) {
    b->name = sl_strdup(opts->name);
    if (b->name == NULL)
      goto oom;
  }
  if (opts->labels != NULL && opts->labels[0] != '\0') {
    sl_buf canon;
    int lrc;

    sl__buf_init(&canon, SL_LABELS_MAX * (2 * SL_LABEL_PART_MAX + 2) + 1);
    lrc = sl__labels_canon(opts->labels, &canon, errbuf, errlen);
    if (lrc == 0)
      lrc = sl__buf_putc(&canon, '\0') != 0 ? SL_ENOMEM : 0;
    if (lrc == 0)
      b->labels = sl_strdup(canon.p);
    sl__buf_free(&canon);
    if (lrc == SL_EINVAL)
      goto invalid;
    if (lrc != 0 || b->labels == NULL)
      goto oom;
  }
  *out = b;
  return 0;
invalid:
  sl_batch_free(b);
  return SL_EINVAL;
oom:
  sl_batch_free(b);
  snprintf(errbuf, errlen, "out of memory");
  return SL_ENOMEM;
}

/* Remembers the type of a normalized item ({"type":"T",...}: a name of
 * [A-Za-z0-9_.:-], no escapes), the first SL_BATCH_TYPES_MAX distinct ones. */
static void note_type(sl_batch_t *b, const char *d) {
  const char *t = d + 9;
  size_t n;

  if (strncmp(d, "{\"type\":\"", 9) != 0)
    return;
  n = strcspn(t, "\"");
  if (n == 0 || n > SL_NAME_MAX)
    return;
  for (size_t i = 0; i < b->ntypes; i++) {
    if (strncmp(b->types[i], t, n) == 0 && b->types[i][n] == '\0')
      return;
  }
  if (b->ntypes == SL_BATCH_TYPES_MAX)
    return;
  memcpy(b->types[b->ntypes], t, n);
  b->types[b->ntypes][n] = '\0';
  b->ntypes++;
}

SL_EXTERN size_t sl_batch_types(const sl_batch_t *b, const char **types, size_t max) {
  size_t n = b->ntypes < max ? b->ntypes : max;

  for (size_t i = 0; i < n; i++)
    types[i] = b->types[i];
  return n;
}

SL_EXTERN void sl_batch_free(sl_batch_t *b) {
  if (b == NULL)
    return;
  sl__idtab_free(&b->ids);
  sl__chunk_free(&b->cur);
  sl__chunk_free(&b->look);
  sl__spool_close(&b->spool);
  sl_free(b->dir);
  sl_free(b->name);
  sl_free(b->rate_key);
  sl_free(b->skipped);
  sl_free(b->skipped_off);
  sl__buf_free(&b->skipped_ids);
  sl_free(b->skipped_by_off);
  sl__buf_free(&b->skipped_by);
  sl_free(b->idem_key);
  sl_free(b->tenant);
  sl_free(b->labels);
  sl_free(b->webhook);
  sl_free(b);
}

SL_EXTERN size_t sl_batch_skipped_count(const sl_batch_t *b) {
  return b->nskipped;
}

SL_EXTERN const char *sl_batch_skipped_id(const sl_batch_t *b, size_t i) {
  return i < b->nskipped ? b->skipped_ids.p + b->skipped_off[i] : NULL;
}

SL_EXTERN const char *sl_batch_skipped_holder(const sl_batch_t *b, size_t i) {
  return i < b->nskipped ? b->skipped_by.p + b->skipped_by_off[i] : NULL;
}

SL_EXTERN int sl_batch_reused(const sl_batch_t *b) {
  return b->reused;
}

SL_EXTERN size_t sl_batch_count(const sl_batch_t *b) {
  return b->n;
}

/* ---- Chunks and the spool ---- */

size_t sl__batch_nchunks(const sl_batch_t *b) {
  return b->ndir + (b->cur.n > 0);
}

int sl__batch_chunk(sl_batch_t *b, size_t k, sl_chunk *scratch, const sl_chunk **out, char *err, size_t errlen) {
  int rc;

  if (k >= b->ndir) {
    *out = &b->cur;
    return 0;
  }
  rc = sl__spool_read(&b->spool, b->dir[k].off, scratch, 1, err, errlen);
  if (rc != 0)
    return rc;
  *out = scratch;
  return 0;
}

size_t sl__batch_spooled(const sl_batch_t *b) {
  return b->ndir;
}

void sl__batch_set_hash(sl_batch_t *b, sl_idhash_fn fn) {
  if (b->n == 0)
    b->ids.hash = fn;
}

void sl__batch_set_chunk_bytes(sl_batch_t *b, size_t bytes) {
  if (b->n == 0 && bytes > 0) {
    b->chunk_bytes = bytes;
    sl__chunk_free(&b->cur);
    sl__chunk_free(&b->look);
    sl__chunk_init(&b->cur, bytes + CHUNK_SLACK);
    sl__chunk_init(&b->look, bytes + CHUNK_SLACK);
  }
}

/* Appends the chunk being filled to the spool and empties it. Returns 0,
 * SL_ENOMEM or SL_EIO (the message in err); on failure nothing changed. */
int sl__batch_spill(sl_batch_t *b, char *err, size_t errlen) {
  uint64_t off;
  int rc;

  if (b->ndir == b->dir_cap) {
    size_t nc = b->dir_cap ? b->dir_cap * 2 : 64;
    chunk_ref *nd = sl_realloc(b->dir, nc * sizeof(*nd));

    if (nd == NULL) {
      snprintf(err, errlen, "out of memory");
      return SL_ENOMEM;
    }
    b->dir = nd;
    b->dir_cap = nc;
  }
  rc = sl__spool_write(&b->spool, &b->cur, &off, err, errlen);
  if (rc != 0)
    return rc;
  b->dir[b->ndir].first = b->cur.first;
  b->dir[b->ndir].off = off;
  b->ndir++;
  sl__chunk_reset(&b->cur, b->n);
  b->cur_bytes = 0;
  return 0;
}

/*
 * The id and input line of item idx (< b->n), from the chunk in memory or
 * from the spool. *id stays valid until the next spool read of `look`.
 * Returns 0, SL_ENOMEM or SL_EIO (the message in err).
 */
int sl__batch_id_at(sl_batch_t *b, size_t idx, const char **id, size_t *idlen, long *line, char *err,
                    size_t errlen) {
  const sl_chunk *c = &b->cur;
  const sl_chunk_item *r;

  if (idx < b->cur.first) {
    size_t lo = 0;
    size_t hi = b->ndir;

    /* the last spooled chunk whose first item is at or before idx */
    while (hi - lo > 1) {
      size_t mid = lo + (hi - lo) / 2;

      if (b->dir[mid].first <= idx)
        lo = mid;
      else
        hi = mid;
    }
    if (b->look_chunk != lo + 1) {
      int rc;

      b->look_chunk = 0;
      rc = sl__spool_read(&b->spool, b->dir[lo].off, &b->look, 0, err, errlen);
      if (rc != 0)
        return rc;
      b->look_chunk = lo + 1;
    }
    c = &b->look;
  }
  r = &c->items[idx - c->first];
  *id = sl__chunk_id(c, idx - c->first);
  *idlen = r->id_len;
  *line = (long)r->line;
  return 0;
}

/* 0 when no earlier item has this id; SL_EINVAL with the message when one
 * has; SL_ENOMEM or SL_EIO when its id could not be read back. */
static int find_dup(sl_batch_t *b, const char *id, size_t idlen, uint64_t h, char *err, size_t errlen) {
  size_t pos = 0;
  size_t cand;

  while ((cand = sl__idtab_next(&b->ids, h, &pos)) != 0) {
    const char *other;
    size_t olen;
    long line;
    int rc = sl__batch_id_at(b, cand - 1, &other, &olen, &line, err, errlen);

    if (rc != 0)
      return rc;
    if (olen == idlen && memcmp(other, id, idlen) == 0) {
      snprintf(err, errlen, "field \"id\": duplicate id \"%.*s\" (first used on line %ld)", 60, id, line);
      return SL_EINVAL;
    }
  }
  return 0;
}

SL_EXTERN int sl_batch_add(sl_batch_t *b, const char *line, size_t len, long lineno, char *errbuf,
                           size_t errlen) {
  char prio[48 + SL_DEDUPE_MAX];
  char idx[24];
  size_t plen;
  size_t ilen;
  size_t idlen;
  size_t bytes;
  uint64_t h;
  sl_item it;
  int rc;

  rc = sl__item_parse(line, len, lineno, &b->def, &it, errbuf, errlen);
  if (rc != 0)
    return rc;
  idlen = strlen(it.id);
  h = sl__idtab_hash(&b->ids, it.id, idlen);
  rc = find_dup(b, it.id, idlen, h, errbuf, errlen);
  if (rc != 0)
    goto out;
  rc = sl__idtab_reserve(&b->ids);
  if (rc == SL_ETOOBIG) {
    snprintf(errbuf, errlen, "a batch holds at most %lu items; submit the rest as another batch",
             (unsigned long)IDTAB_MAX);
    goto out;
  }
  if (rc != 0) {
    snprintf(errbuf, errlen, "out of memory");
    goto out;
  }
  /* The call arguments: "2", "2@T" (not before T) or "2+D" (D ms after
   * submit), then "#KEY" for a dedupe key; the index; the item. */
  if (it.start_at_ms > 0)
    plen = (size_t)snprintf(prio, sizeof(prio), "%c@%lld", "123"[it.prio], (long long)it.start_at_ms);
  else if (it.delay_ms > 0)
    plen = (size_t)snprintf(prio, sizeof(prio), "%c+%lld", "123"[it.prio], (long long)it.delay_ms);
  else
    plen = (size_t)snprintf(prio, sizeof(prio), "%c", "123"[it.prio]);
  if (it.dedupe != NULL)
    plen += (size_t)snprintf(prio + plen, sizeof(prio) - plen, "#%s", it.dedupe);
  ilen = (size_t)snprintf(idx, sizeof(idx), "%zu", b->n);
  bytes = plen + ilen + it.dlen + 3 * ARG_FRAMING + idlen;
  if (b->cur.n > 0 && (b->cur.n >= b->chunk_items || b->cur_bytes + bytes > b->chunk_bytes)) {
    rc = sl__batch_spill(b, errbuf, errlen);
    if (rc != 0)
      goto out;
  }
  rc = sl__chunk_push(&b->cur, &it, lineno, prio, plen, idx, ilen);
  if (rc != 0) {
    snprintf(errbuf, errlen, "%s", rc == SL_ENOMEM ? "out of memory" : "an item too large for a chunk");
    goto out;
  }
  sl__idtab_add(&b->ids, h);
  b->n++;
  b->cur_bytes += bytes;
  if (b->cur.n > b->max_chunk_n)
    b->max_chunk_n = b->cur.n;
  b->need_bytes += it.dlen + ITEM_OVERHEAD;
  if (it.dedupe != NULL)
    b->ndedupe++;
  note_type(b, it.d);
out:
  sl__item_free(&it);
  return rc;
}

