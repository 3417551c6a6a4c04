/*
 * Batches: validation of every item up front, then chunked writes.
 *
 * sl_batch_add validates and normalizes each line in memory (about the size
 * of the input), and rejects duplicate ids with the line of the first one,
 * through an open-addressing table of item indexes keyed by the id's hash.
 * sl_batch_submit then writes chunks of `chunk_items` items, one
 * sluice_v1_submit call each, with up to SUBMIT_PIPELINE calls in flight on
 * the connection: 100,000 small items take 50 calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "conn.h"
#include "id.h"
#include "item.h"
#include "json.h"
#include "script.h"

#define SUBMIT_PIPELINE 4        /* chunk calls in flight */
#define DEFAULT_CHUNK 2000       /* items per call */
#define DEFAULT_TIMEOUT_MS 30000 /* per attempt */

struct sl_batch {
  sl_keys keys;          /* the queue's key names */
  char *name;            /* label, or NULL */
  char *rate_key;        /* default rate key, or NULL */
  int64_t retention_ms;  /* how long the ended batch is kept, ms; 0: the default */
  int64_t dedupe_ttl_ms; /* how long dedupe keys are remembered, ms; 0: the default */
  char *webhook;         /* POSTed the batch summary when it ends, or NULL */
  size_t *skipped;       /* after submit: indexes of items skipped as duplicates */
  size_t nskipped;       /* how many */
  sl_item_defaults def;  /* item defaults from the options */
  size_t chunk;          /* items per submit call */
  sl_item *items;        /* the validated items */
  long *lines;           /* the line number of each item */
  size_t n;              /* items used */
  size_t cap;            /* items allocated */
  size_t *table;         /* id hash table: index + 1, 0 = empty */
  size_t tcap;           /* table slots, a power of two */
};

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */

  while (*s) {
    h ^= (unsigned char)*s++;
    h *= 1099511628211ULL;
  }
  return h;
}

SL_EXTERN int sl_batch_new(const sl_batch_opts *opts, sl_batch_t **out, char *errbuf, size_t errlen) {
  sl_batch_opts none = {0};
  sl_batch_t *b;

  if (opts == NULL)
    opts = &none;
  b = sl_calloc(1, sizeof(*b));
  if (b == NULL)
    goto oom;
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
  b->chunk = opts->chunk_items > 0 ? opts->chunk_items : DEFAULT_CHUNK;
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

SL_EXTERN void sl_batch_free(sl_batch_t *b) {
  if (b == NULL)
    return;
  for (size_t i = 0; i < b->n; i++)
    sl__item_free(&b->items[i]);
  sl_free(b->items);
  sl_free(b->lines);
  sl_free(b->table);
  sl_free(b->name);
  sl_free(b->rate_key);
  sl_free(b->skipped);
  sl_free(b->webhook);
  sl_free(b);
}

SL_EXTERN size_t sl_batch_skipped_count(const sl_batch_t *b) {
  return b->nskipped;
}

SL_EXTERN const char *sl_batch_skipped_id(const sl_batch_t *b, size_t i) {
  return i < b->nskipped ? b->items[b->skipped[i]].id : NULL;
}

SL_EXTERN size_t sl_batch_count(const sl_batch_t *b) {
  return b->n;
}

/* Finds the index of an item with this id, or inserts `idx`. Returns the
 * existing index + 1, 0 if inserted, or -1 on OOM. */
static long id_insert(sl_batch_t *b, size_t idx) {
  size_t mask;
  size_t i;

  if ((b->n + 1) * 2 > b->tcap) {
    size_t ncap = b->tcap ? b->tcap * 2 : 1024;
    size_t *nt = sl_calloc(ncap, sizeof(*nt));

    if (nt == NULL)
      return -1;
    for (size_t k = 0; k < b->tcap; k++) {
      if (b->table[k] == 0)
        continue;
      i = hash_str(b->items[b->table[k] - 1].id) & (ncap - 1);
      while (nt[i] != 0)
        i = (i + 1) & (ncap - 1);
      nt[i] = b->table[k];
    }
    sl_free(b->table);
    b->table = nt;
    b->tcap = ncap;
  }
  mask = b->tcap - 1;
  i = hash_str(b->items[idx].id) & mask;
  while (b->table[i] != 0) {
    size_t other = b->table[i] - 1;

    if (strcmp(b->items[other].id, b->items[idx].id) == 0)
      return (long)other + 1;
    i = (i + 1) & mask;
  }
  b->table[i] = idx + 1;
  return 0;
}

SL_EXTERN int sl_batch_add(sl_batch_t *b, const char *line, size_t len, long lineno, char *errbuf,
                           size_t errlen) {
  long dup;
  int rc;

  if (b->n == b->cap) {
    size_t ncap = b->cap ? b->cap * 2 : 256;
    sl_item *ni = sl_realloc(b->items, ncap * sizeof(*ni));
    long *nl;

    if (ni == NULL)
      goto oom;
    b->items = ni;
    nl = sl_realloc(b->lines, ncap * sizeof(*nl));
    if (nl == NULL)
      goto oom;
    b->lines = nl;
    b->cap = ncap;
  }
  rc = sl__item_parse(line, len, lineno, &b->def, &b->items[b->n], errbuf, errlen);
  if (rc != 0)
    return rc;
  dup = id_insert(b, b->n);
  if (dup < 0) {
    sl__item_free(&b->items[b->n]);
    goto oom;
  }
  if (dup > 0) {
    snprintf(errbuf, errlen, "field \"id\": duplicate id \"%.*s\" (first used on line %ld)", 60,
             b->items[b->n].id, b->lines[dup - 1]);
    sl__item_free(&b->items[b->n]);
    return SL_EINVAL;
  }
  b->lines[b->n] = lineno;
  b->n++;
  return 0;
oom:
  snprintf(errbuf, errlen, "out of memory");
  return SL_ENOMEM;
}

/* Appends the FCALL of chunk `seq` to the connection's output buffer. */
static int append_chunk(redisContext *rc, const sl_batch_t *b, const char *id, const char *bkey,
                        size_t seq, const char **av, size_t *al, char (*nums)[24], char (*prios)[32],
                        char **owned, const char *opts) {
  size_t nowned = 0;
  size_t first = seq * b->chunk;
  size_t last = first + b->chunk < b->n ? first + b->chunk : b->n;
  int k = 0;

  av[k++] = "FCALL";
  av[k++] = "sluice_v1_submit";
  av[k++] = "5";
  av[k++] = bkey;
  av[k++] = b->keys.stream[0];
  av[k++] = b->keys.stream[1];
  av[k++] = b->keys.stream[2];
  av[k++] = b->keys.batches;
  av[k++] = id;
  av[k++] = b->keys.queue;
  av[k++] = b->keys.prefix;
  snprintf(nums[0], 24, "%zu", seq);
  av[k++] = nums[0];
  av[k++] = last == b->n ? "1" : "0";
  av[k++] = opts;
  av[k++] = SL_GROUP;
  for (int i = 0; i < k; i++)
    al[i] = strlen(av[i]);
  for (size_t i = first; i < last; i++) {
    snprintf(nums[1 + (i - first)], 24, "%zu", i);
    /* "2", or "2@T" (not before T) / "2+D" (D ms after submit) */
    if (b->items[i].start_at_ms > 0)
      snprintf(prios[i - first], 32, "%c@%lld", "123"[b->items[i].prio], (long long)b->items[i].start_at_ms);
    else if (b->items[i].delay_ms > 0)
      snprintf(prios[i - first], 32, "%c+%lld", "123"[b->items[i].prio], (long long)b->items[i].delay_ms);
    else
      snprintf(prios[i - first], 32, "%c", "123"[b->items[i].prio]);
    av[k] = prios[i - first];
    al[k] = strlen(av[k]);
    if (b->items[i].dedupe != NULL) {
      /* then "#KEY": the item's dedupe key */
      size_t kl = strlen(b->items[i].dedupe);
      char *p = sl_malloc(al[k] + 1 + kl + 1);

      if (p == NULL) {
        for (size_t j = 0; j < nowned; j++)
          sl_free(owned[j]);
        return SL_ENOMEM;
      }
      memcpy(p, prios[i - first], al[k]);
      p[al[k]] = '#';
      memcpy(p + al[k] + 1, b->items[i].dedupe, kl + 1);
      owned[nowned++] = p;
      av[k] = p;
      al[k] = al[k] + 1 + kl;
    }
    k++;
    av[k] = nums[1 + (i - first)];
    al[k] = strlen(av[k]);
    k++;
    av[k] = b->items[i].d;
    al[k++] = b->items[i].dlen;
  }
  {
    int ok = redisAppendCommandArgv(rc, k, av, al) == REDIS_OK; /* formats now: owned may go */

    for (size_t j = 0; j < nowned; j++)
      sl_free(owned[j]);
    return ok ? 0 : SL_ENOMEM;
  }
}

/* Admission control: refuses a batch that would take Redis past its
 * maxmemory, before anything is written, instead of failing half-way with
 * OOM inside Redis. The estimate counts each item's stored form plus its
 * stream, pending-list and results overhead (about 320 bytes). */
static int admission(sl_client_t *c, const sl_batch_t *b) {
  const char *av[2] = {"INFO", "memory"};
  unsigned long long used = 0;
  unsigned long long max = 0;
  unsigned long long need = 0;
  const char *p;
  redisReply *r;
  int rc;

  r = sl__client_cmd(c, &rc, 2, av, NULL);
  if (r == NULL)
    return rc;
  if (r->type == REDIS_REPLY_STRING) {
    p = strstr(r->str, "\r\nused_memory:");
    if (p != NULL)
      used = strtoull(p + 14, NULL, 10);
    p = strstr(r->str, "\r\nmaxmemory:");
    if (p != NULL)
      max = strtoull(p + 12, NULL, 10);
  }
  freeReplyObject(r);
  for (size_t i = 0; i < b->n; i++)
    need += b->items[i].dlen + 320;
  if (max > 0 && used + need > max / 100 * 95)
    return sl__client_fail(c, SL_ETOOBIG,
                           "Redis is near its memory limit: %.1f MiB used of %.1f MiB (maxmemory); this batch of %zu "
                           "items needs about %.1f MiB more; nothing was submitted (raise maxmemory, free memory "
                           "or submit less at a time)",
                           (double)used / 1048576.0, (double)max / 1048576.0, b->n, (double)need / 1048576.0);
  return 0;
}

SL_EXTERN int sl_batch_submit(sl_client_t *c, sl_batch_t *b, char **id_out) {
  char id[SL_ID_LEN + 1];
  char bkey[sizeof(b->keys.prefix) + SL_ID_LEN + 4];
  size_t nchunks;
  size_t sent = 0;
  size_t recv = 0;
  size_t argc;
  const char **av = NULL;
  size_t *al = NULL;
  char (*nums)[24] = NULL;
  char (*prios)[32] = NULL;
  char **owned = NULL;
  sl_buf opts;
  int rc = 0;

  if (b->n == 0)
    return sl__client_fail(c, SL_EINVAL, "the batch has no items");
  if (c->rc == NULL)
    return sl__client_fail(c, SL_ECONN, "the Redis connection is closed");
  if (sl__id_new(id) != 0)
    return sl__client_fail(c, SL_EIO, "cannot read random bytes for the batch id");
  snprintf(bkey, sizeof(bkey), "%sb:%s", b->keys.prefix, id);
  nchunks = (b->n + b->chunk - 1) / b->chunk;
  argc = 16 + 3 * b->chunk;
  av = sl_malloc(argc * sizeof(*av));
  al = sl_malloc(argc * sizeof(*al));
  nums = sl_malloc((b->chunk + 1) * sizeof(*nums));
  prios = sl_malloc((b->chunk + 1) * sizeof(*prios));
  owned = sl_malloc((b->chunk + 1) * sizeof(*owned));
  sl__buf_init(&opts, 4096);
  /* Batch options: the name alone, or a JSON object when there is more (or
   * when the name itself starts with '{'). */
  if (b->retention_ms > 0 || b->dedupe_ttl_ms > 0 || b->webhook != NULL || (b->name != NULL && b->name[0] == '{')) {
    rc = sl__buf_puts(&opts, "{\"name\":");
    if (rc == 0)
      rc = sl__json_put_str(&opts, b->name ? b->name : "", b->name ? strlen(b->name) : 0);
    if (rc == 0 && b->retention_ms > 0)
      rc = sl__buf_printf(&opts, ",\"retention_ms\":%lld", (long long)b->retention_ms);
    if (rc == 0 && b->dedupe_ttl_ms > 0)
      rc = sl__buf_printf(&opts, ",\"dedupe_ttl_ms\":%lld", (long long)b->dedupe_ttl_ms);
    if (rc == 0 && b->webhook != NULL)
      rc = sl__buf_puts(&opts, ",\"webhook\":");
    if (rc == 0 && b->webhook != NULL)
      rc = sl__json_put_str(&opts, b->webhook, strlen(b->webhook));
    if (rc == 0)
      rc = sl__buf_putc(&opts, '}');
  } else if (b->name != NULL) {
    rc = sl__buf_puts(&opts, b->name);
  }
  if (av == NULL || al == NULL || nums == NULL || prios == NULL || owned == NULL || rc != 0) {
    rc = sl__client_fail(c, SL_ENOMEM, "out of memory");
    goto out;
  }
  /* The function library must be there before the first chunk is queued. */
  rc = sl__script_ensure(c->rc, c->errstr, sizeof(c->errstr));
  if (rc != 0)
    goto out;
  rc = admission(c, b);
  if (rc != 0)
    goto out;
  while (recv < nchunks) {
    redisReply *r;

    while (sent < nchunks && sent - recv < SUBMIT_PIPELINE) {
      /* hiredis formats the command at append time, so av may be reused. */
      rc = append_chunk(c->rc, b, id, bkey, sent, av, al, nums, prios, owned, opts.p ? opts.p : "");
      if (rc != 0) {
        sl__client_fail(c, rc, "out of memory");
        goto out;
      }
      sent++;
    }
    if (redisGetReply(c->rc, (void **)&r) != REDIS_OK) {
      rc = sl__client_fail(c, SL_ECONN,
                           "lost the Redis connection after %zu of %zu chunks of batch %s (it stays "
                           "incomplete; `sluice cancel %s` ends it): %s",
                           recv, nchunks, id, id, c->rc->errstr);
      redisFree(c->rc);
      c->rc = NULL;
      goto out;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      rc = sl__client_fail(c, SL_EREDIS, "Redis refused chunk %zu of batch %s: %s", recv, id, r->str);
      freeReplyObject(r);
      /* Drain the replies of the chunks already sent. */
      while (++recv < sent) {
        if (redisGetReply(c->rc, (void **)&r) != REDIS_OK)
          break;
        freeReplyObject(r);
      }
      goto out;
    }
    freeReplyObject(r);
    recv++;
  }
  /* Which items were skipped as duplicates (only when some had a key). */
  for (size_t i = 0; i < b->n; i++) {
    if (b->items[i].dedupe != NULL) {
      char skey[sizeof(bkey) + 8];
      const char *sav[2] = {"SMEMBERS", skey};
      redisReply *r;

      snprintf(skey, sizeof(skey), "%s:skip", bkey);
      r = sl__client_cmd(c, &rc, 2, sav, NULL);
      if (r == NULL)
        goto out;
      sl_free(b->skipped);
      b->nskipped = 0;
      b->skipped = sl_calloc(r->elements + 1, sizeof(*b->skipped));
      for (size_t k = 0; b->skipped != NULL && k < r->elements; k++)
        b->skipped[b->nskipped++] = (size_t)strtoull(r->element[k]->str, NULL, 10);
      freeReplyObject(r);
      break;
    }
  }
  *id_out = sl_strdup(id);
  if (*id_out == NULL)
    rc = sl__client_fail(c, SL_ENOMEM, "out of memory");
out:
  sl_free(av);
  sl_free(al);
  sl_free(nums);
  sl_free(prios);
  sl_free(owned);
  sl__buf_free(&opts);
  return rc;
}
