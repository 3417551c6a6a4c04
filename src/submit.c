/*
 * Batches: every item validated first, in one streaming pass, then written
 * in chunks, with memory that does not grow with the batch's bytes.
 *
 * sl_batch_add validates and normalizes one line (sl__item_parse) and puts
 * the result into the chunk being filled, in the form its submit call needs
 * (spool.h). A chunk closes at `chunk_items` items (default 2,000) or when
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
 * sl_batch_submit checks Redis's memory against the running estimate kept
 * by sl_batch_add (admission control), then streams the chunks back from the
 * spool into one sluice_v1_submit call each, up to SUBMIT_PIPELINE calls in
 * flight; each call goes from the chunk straight to the socket (send_call,
 * no formatted copy), so the process holds one chunk while writing.
 * Afterwards it reads which items were skipped as duplicates (SSCAN of
 * b:ID:skip) and looks their ids up in the spool, in index order.
 *
 * Memory, per batch: about 20-30 bytes per item for the id table, 16 bytes
 * per spooled chunk, and one chunk (at most about 8 MiB of arguments, in
 * buffers of up to 10 MiB): the one being filled while validating, the one
 * being written while submitting. 100,000 small items take 50 calls.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "conn.h"
#include "id.h"
#include "idtab.h"
#include "item.h"
#include "json.h"
#include "script.h"
#include "spool.h"
#include "submit.h"

#define SUBMIT_PIPELINE 4                  /* chunk calls in flight */
#define DEFAULT_CHUNK 2000                 /* items per call */
#define CHUNK_SLACK (2 * 1024 * 1024)      /* one item past the cap, when it is alone in its chunk, bytes */
#define ITEM_OVERHEAD 320                  /* Redis memory of an item besides its JSON (admission), bytes */
#define DEFAULT_TIMEOUT_MS 30000           /* per attempt */
#define SKIP_SCAN_COUNT "1000"             /* SSCAN COUNT when reading the skipped items */
#define FIXED_ARGS 16                      /* call arguments before the items */
#define SEND_GROUP 480                     /* call arguments per sendmsg: two iovecs each, under IOV_MAX */

/* Where a spooled chunk is. */
typedef struct chunk_ref {
  size_t first; /* batch index of its first item */
  uint64_t off; /* its record's offset in the spool, bytes */
} chunk_ref;

struct sl_batch {
  sl_keys keys;          /* the queue's key names */
  char *name;            /* label, or NULL */
  char *rate_key;        /* default rate key, or NULL */
  int64_t retention_ms;  /* how long the ended batch is kept, ms; 0: the default */
  int64_t dedupe_ttl_ms; /* how long dedupe keys are remembered, ms; 0: the default */
  char *webhook;         /* POSTed the batch summary when it ends, or NULL */
  sl_item_defaults def;  /* item defaults from the options */
  size_t chunk_items;    /* items per chunk, at most */
  size_t chunk_bytes;    /* call arguments per chunk, at most, bytes (CHUNK_MAX_BYTES) */
  size_t n;              /* items added */
  size_t ndedupe;        /* items with a dedupe key */
  uint64_t need_bytes;   /* admission estimate: sum of each item's dlen + ITEM_OVERHEAD, bytes */
  sl_idtab ids;          /* keyed hashes of the item ids */
  sl_chunk cur;          /* the chunk being filled: items cur.first .. n-1 */
  size_t cur_bytes;      /* its call arguments with framing, plus its ids, bytes */
  size_t max_chunk_n;    /* the most items a chunk of this batch holds */
  sl_spool spool;        /* the full chunks, once a second one began */
  chunk_ref *dir;        /* the spooled chunks, in order */
  size_t ndir;           /* how many */
  size_t dir_cap;        /* entries allocated */
  sl_chunk look;         /* records and ids of one spooled chunk, read to check an id */
  size_t look_chunk;     /* which: its dir index + 1; 0: none */
  size_t *skipped;       /* after submit: indexes of the items skipped as duplicates, ascending */
  size_t nskipped;       /* how many */
  size_t skipped_cap;    /* entries allocated */
  sl_buf skipped_ids;    /* their ids, each NUL-terminated, back to back */
  size_t *skipped_off;   /* offset of each id in skipped_ids */
};

SL_EXTERN int sl_batch_new(const sl_batch_opts *opts, sl_batch_t **out, char *errbuf, size_t errlen) {
  sl_batch_opts none = {0};
  sl_batch_t *b;

  if (opts == NULL)
    opts = &none;
  b = sl_calloc(1, sizeof(*b));
  if (b == NULL)
    goto oom;
  sl__spool_init(&b->spool);
  sl__chunk_init(&b->cur, CHUNK_MAX_BYTES + CHUNK_SLACK);
  sl__chunk_init(&b->look, CHUNK_MAX_BYTES + CHUNK_SLACK);
  sl__buf_init(&b->skipped_ids, SIZE_MAX / 2);
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
  sl_free(b->webhook);
  sl_free(b);
}

SL_EXTERN size_t sl_batch_skipped_count(const sl_batch_t *b) {
  return b->nskipped;
}

SL_EXTERN const char *sl_batch_skipped_id(const sl_batch_t *b, size_t i) {
  return i < b->nskipped ? b->skipped_ids.p + b->skipped_off[i] : NULL;
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
static int spill(sl_batch_t *b, char *err, size_t errlen) {
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
static int id_at(sl_batch_t *b, size_t idx, const char **id, size_t *idlen, long *line, char *err, size_t errlen) {
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
    int rc = id_at(b, cand - 1, &other, &olen, &line, err, errlen);

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
    rc = spill(b, errbuf, errlen);
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
out:
  sl__item_free(&it);
  return rc;
}

/* ---- Submit ---- */

/* Admission control: refuses a batch that would take Redis past its
 * maxmemory, before anything is written, instead of failing half-way with
 * OOM inside Redis. The estimate, kept by sl_batch_add, counts each item's
 * stored form plus its stream, pending-list and results overhead
 * (ITEM_OVERHEAD, 320 bytes). */
static int admission(sl_client_t *c, const sl_batch_t *b) {
  const char *av[2] = {"INFO", "memory"};
  unsigned long long used = 0;
  unsigned long long max = 0;
  unsigned long long need = b->need_bytes;
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
  if (max > 0 && used + need > max / 100 * 95)
    return sl__client_fail(c, SL_ETOOBIG,
                           "Redis is near its memory limit: %.1f MiB used of %.1f MiB (maxmemory); this batch of %zu "
                           "items needs about %.1f MiB more; nothing was submitted (raise maxmemory, free memory "
                           "or submit less at a time)",
                           (double)used / 1048576.0, (double)max / 1048576.0, b->n, (double)need / 1048576.0);
  return 0;
}

/* Sends all of iov[0..n) (advancing through it), without SIGPIPE.
 * Returns 0, or -1 with errno set. */
static int send_all(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    struct msghdr m;
    ssize_t w;

    memset(&m, 0, sizeof(m));
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)n;
    w = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    while (n > 0 && (size_t)w >= iov->iov_len) {
      w -= (ssize_t)iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  return 0;
}

/*
 * Sends one call, in RESP, from its arguments straight to the socket.
 * hiredis's redisAppendCommandArgv would make two copies of it (the
 * formatted call and its output buffer), 16 MiB for a full chunk; this
 * makes none. The reply is read with redisGetReply as usual (hiredis's
 * output buffer stays empty). A closed connection is an error, not a
 * SIGPIPE. Returns 0, or SL_ECONN with the cause in why.
 */
static int send_call(redisContext *rc, int argc, const char **av, const size_t *al, char *why, size_t whylen) {
  char hdr[SEND_GROUP][40];
  struct iovec iov[2 * SEND_GROUP + 1];
  int i = 0;

  while (i < argc) {
    int n = 0;

    for (int g = 0; g < SEND_GROUP && i < argc; g++, i++) {
      int hl = i == 0 ? snprintf(hdr[g], sizeof(hdr[g]), "*%d\r\n$%zu\r\n", argc, al[i])
                      : snprintf(hdr[g], sizeof(hdr[g]), "\r\n$%zu\r\n", al[i]);

      iov[n].iov_base = hdr[g];
      iov[n++].iov_len = (size_t)hl;
      iov[n].iov_base = (void *)av[i];
      iov[n++].iov_len = al[i];
    }
    if (i == argc) {
      iov[n].iov_base = (void *)"\r\n";
      iov[n++].iov_len = 2;
    }
    if (send_all(rc->fd, iov, n) != 0) {
      snprintf(why, whylen, "%s", errno == EAGAIN || errno == EWOULDBLOCK ? "the write timed out" : strerror(errno));
      return SL_ECONN;
    }
  }
  return 0;
}

/*
 * Sends the call of chunk `seq`. av/al have room for FIXED_ARGS + 3 * ch->n
 * arguments. Returns 0, or SL_ECONN with the cause in why (the connection
 * is then unusable).
 */
static int send_chunk(redisContext *rc, const sl_batch_t *b, const sl_chunk *ch, size_t seq, int last,
                      const char *id, const char *bkey, const char *opts, const char **av, size_t *al, char *why,
                      size_t whylen) {
  char seqs[24];
  int k = 0;

  snprintf(seqs, sizeof(seqs), "%zu", seq);
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
  av[k++] = seqs;
  av[k++] = last ? "1" : "0";
  av[k++] = opts;
  av[k++] = SL_GROUP;
  for (int i = 0; i < k; i++)
    al[i] = strlen(av[i]);
  for (size_t i = 0; i < ch->n; i++) {
    const sl_chunk_item *r = &ch->items[i];
    const char *a = sl__chunk_args(ch, i);

    av[k] = a;
    al[k++] = r->prio_len;
    av[k] = a + r->prio_len;
    al[k++] = r->idx_len;
    av[k] = a + r->prio_len + r->idx_len;
    al[k++] = r->d_len;
  }
  return send_call(rc, k, av, al, why, whylen);
}

/* Reads the replies of the calls still in flight and drops them, so that
 * the connection can be used again. */
static void drain(sl_client_t *c, size_t recv, size_t sent) {
  while (recv < sent && c->rc != NULL) {
    redisReply *r;

    if (redisGetReply(c->rc, (void **)&r) != REDIS_OK) {
      redisFree(c->rc);
      c->rc = NULL;
      break;
    }
    freeReplyObject(r);
    recv++;
  }
}

/* Parses an item index from the skip set; -1 when it is not one below n. */
static int parse_index(const redisReply *e, size_t n, size_t *out) {
  char *end;
  unsigned long long v;

  if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->str[0] < '0' || e->str[0] > '9')
    return -1;
  v = strtoull(e->str, &end, 10);
  if (*end != '\0' || v >= n)
    return -1;
  *out = (size_t)v;
  return 0;
}

static int cmp_size(const void *a, const void *b) {
  size_t x = *(const size_t *)a;
  size_t y = *(const size_t *)b;

  return x < y ? -1 : x > y;
}

/*
 * After the last chunk: the items skipped because their dedupe key was
 * taken. Their indexes come from b:ID:skip by SSCAN, and their ids from the
 * spool in one pass in index order. Returns 0 or an SL_E* code with the
 * cause in c->errstr.
 */
static int read_skipped(sl_client_t *c, sl_batch_t *b, const char *bkey) {
  char skey[sizeof(b->keys.prefix) + SL_ID_LEN + 16];
  char cursor[32] = "0";
  int rc = 0;

  snprintf(skey, sizeof(skey), "%s:skip", bkey);
  do {
    const char *av[5] = {"SSCAN", skey, cursor, "COUNT", SKIP_SCAN_COUNT};
    redisReply *r = sl__client_cmd(c, &rc, 5, av, NULL);
    const redisReply *m;

    if (r == NULL)
      return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[0]->len >= sizeof(cursor) || r->element[1]->type != REDIS_REPLY_ARRAY) {
      freeReplyObject(r);
      return sl__client_fail(c, SL_EPROTO, "unexpected SSCAN reply for %s", skey);
    }
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    m = r->element[1];
    for (size_t k = 0; k < m->elements; k++) {
      if (b->nskipped == b->skipped_cap) {
        size_t nc = b->skipped_cap ? b->skipped_cap * 2 : 64;
        size_t *ns = sl_realloc(b->skipped, nc * sizeof(*ns));

        if (ns == NULL) {
          freeReplyObject(r);
          return sl__client_fail(c, SL_ENOMEM, "out of memory");
        }
        b->skipped = ns;
        b->skipped_cap = nc;
      }
      if (parse_index(m->element[k], b->n, &b->skipped[b->nskipped]) != 0) {
        freeReplyObject(r);
        return sl__client_fail(c, SL_EPROTO, "%s holds \"%.40s\", not an item index", skey,
                               m->element[k]->type == REDIS_REPLY_STRING ? m->element[k]->str : "?");
      }
      b->nskipped++;
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  if (b->nskipped == 0)
    return 0;
  qsort(b->skipped, b->nskipped, sizeof(*b->skipped), cmp_size);
  b->skipped_off = sl_malloc(b->nskipped * sizeof(*b->skipped_off));
  if (b->skipped_off == NULL)
    return sl__client_fail(c, SL_ENOMEM, "out of memory");
  for (size_t k = 0; k < b->nskipped; k++) {
    const char *sid;
    size_t slen;
    long line;

    rc = id_at(b, b->skipped[k], &sid, &slen, &line, c->errstr, sizeof(c->errstr));
    if (rc != 0)
      return rc; /* the cause is in c->errstr */
    b->skipped_off[k] = b->skipped_ids.len;
    rc = sl__buf_append(&b->skipped_ids, sid, slen);
    if (rc == 0)
      rc = sl__buf_putc(&b->skipped_ids, '\0');
    if (rc != 0)
      return sl__client_fail(c, SL_ENOMEM, "out of memory");
  }
  return 0;
}

SL_EXTERN int sl_batch_submit(sl_client_t *c, sl_batch_t *b, char **id_out) {
  char id[SL_ID_LEN + 1];
  char bkey[sizeof(b->keys.prefix) + SL_ID_LEN + 4];
  char why[512];
  size_t nchunks;
  size_t sent = 0;
  size_t recv = 0;
  const char **av = NULL;
  size_t *al = NULL;
  sl_chunk rd;
  sl_buf opts;
  int rc = 0;

  sl__chunk_init(&rd, b->cur.max_bytes);
  sl__buf_init(&opts, 4096);
  /* What an earlier submit of this batch found skipped is forgotten. */
  b->nskipped = 0;
  sl_free(b->skipped_off);
  b->skipped_off = NULL;
  sl__buf_reset(&b->skipped_ids);
  if (b->n == 0)
    return sl__client_fail(c, SL_EINVAL, "the batch has no items");
  if (c->rc == NULL)
    return sl__client_fail(c, SL_ECONN, "the Redis connection is closed");
  if (sl__id_new(id) != 0)
    return sl__client_fail(c, SL_EIO, "cannot read random bytes for the batch id");
  snprintf(bkey, sizeof(bkey), "%sb:%s", b->keys.prefix, id);
  /* With a spool, the last chunk goes there too, and every chunk is read
   * back into `rd`: one chunk in memory while writing, not two. */
  if (b->ndir > 0 && b->cur.n > 0) {
    rc = spill(b, why, sizeof(why));
    if (rc != 0)
      return sl__client_fail(c, rc, "%s; nothing was submitted", why);
    sl__chunk_free(&b->cur);
    b->cur.first = b->n;
  }
  nchunks = sl__batch_nchunks(b);
  av = sl_malloc((FIXED_ARGS + 3 * b->max_chunk_n) * sizeof(*av));
  al = sl_malloc((FIXED_ARGS + 3 * b->max_chunk_n) * sizeof(*al));
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
  if (av == NULL || al == NULL || rc != 0) {
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
      const sl_chunk *ch;

      rc = sl__batch_chunk(b, sent, &rd, &ch, why, sizeof(why));
      if (rc != 0) {
        if (sent == 0)
          rc = sl__client_fail(c, rc, "%s; nothing was submitted", why);
        else
          rc = sl__client_fail(c, rc, "%s; batch %s stays incomplete after %zu of %zu chunks (`sluice cancel %s` "
                               "ends it)", why, id, sent, nchunks, id);
        drain(c, recv, sent);
        goto out;
      }
      rc = send_chunk(c->rc, b, ch, sent, sent + 1 == nchunks, id, bkey, opts.p ? opts.p : "", av, al, why,
                      sizeof(why));
      if (rc != 0) {
        rc = sl__client_fail(c, rc,
                             "lost the Redis connection while writing chunk %zu of %zu of batch %s (it stays "
                             "incomplete; `sluice cancel %s` ends it): %s",
                             sent, nchunks, id, id, why);
        redisFree(c->rc);
        c->rc = NULL;
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
      drain(c, recv + 1, sent);
      goto out;
    }
    freeReplyObject(r);
    recv++;
  }
  sl__chunk_free(&rd);
  /* Which items were skipped as duplicates (only when some had a key). */
  if (b->ndedupe > 0) {
    rc = read_skipped(c, b, bkey);
    if (rc != 0) {
      b->nskipped = 0;
      snprintf(why, sizeof(why), "%s", c->errstr);
      rc = sl__client_fail(c, rc, "batch %s was submitted whole, but reading its skipped items failed: %s", id,
                           why);
      goto out;
    }
  }
  *id_out = sl_strdup(id);
  if (*id_out == NULL)
    rc = sl__client_fail(c, SL_ENOMEM, "batch %s was submitted whole, but then: out of memory", id);
out:
  sl__chunk_free(&rd);
  sl_free(av);
  sl_free(al);
  sl__buf_free(&opts);
  return rc;
}
