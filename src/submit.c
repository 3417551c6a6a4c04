/*
 * Submitting a collected batch (collect.c): one sluice_v1_submit call per
 * chunk.
 *
 * sl_batch_submit checks Redis's memory against the running estimate kept
 * by sl_batch_add (admission control), then streams the chunks back from the
 * spool into one call each, up to SUBMIT_PIPELINE calls in flight; each call
 * goes from the chunk straight to the socket (send_call, no formatted copy,
 * MSG_NOSIGNAL), so the process holds one chunk while writing. The batch is
 * `submitting` until its last chunk; a lost connection leaves it visibly
 * incomplete, and the error names it and `sluice cancel ID`. Afterwards it
 * reads which items were skipped as duplicates (SSCAN of b:ID:skip) and
 * looks their ids up in the spool, in index order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "cluster.h"
#include "conn.h"
#include "id.h"
#include "idtab.h"
#include "item.h"
#include "json.h"
#include "script.h"
#include "spool.h"
#include "submit.h"

#define SUBMIT_PIPELINE 4                  /* chunk calls in flight */
#define BATCH_ID_MAX 64                    /* a batch id another client made, characters */
#define BATCH_ID_CHARS "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"
#define SKIP_SCAN_COUNT "1000"             /* HSCAN COUNT when reading the skipped items */
#define SEND_GROUP 480                     /* call arguments per sendmsg: two iovecs each, under IOV_MAX */

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
  if (max > 0 && used >= max)
    return sl__client_fail(c, SL_ETOOBIG,
                           "Redis is out of memory (maxmemory %.1f MiB): %.1f MiB used, it refuses writes; this "
                           "batch of %zu items needs about %.1f MiB more; nothing was submitted (raise maxmemory or "
                           "free memory)",
                           (double)max / 1048576.0, (double)used / 1048576.0, b->n, (double)need / 1048576.0);
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
  av[k++] = "normalized"; /* items checked here, sent in their canonical form */
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
      sl__client_drop(c);
      break;
    }
    freeReplyObject(r);
    recv++;
  }
}

/* Parses an item index from the skip hash; -1 when it is not one below n. */
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

/* A skipped item while the skip hash is read: its index and where its
 * holder is in b->skipped_by. */
typedef struct skip_pair {
  size_t idx;
  size_t by;
} skip_pair;

static int cmp_pair(const void *a, const void *b) {
  size_t x = ((const skip_pair *)a)->idx;
  size_t y = ((const skip_pair *)b)->idx;

  return x < y ? -1 : x > y;
}

/* Adds one field of the skip hash (index -> "BATCH:INDEX" of the holder). */
static int skip_add(sl_client_t *c, sl_batch_t *b, skip_pair **pairs, size_t *cap, const redisReply *f,
                    const redisReply *v, const char *skey) {
  skip_pair p;

  if (parse_index(f, b->n, &p.idx) != 0 || v->type != REDIS_REPLY_STRING)
    return sl__client_fail(c, SL_EPROTO, "%s holds \"%.40s\", not an item index and its holder", skey,
                           f->type == REDIS_REPLY_STRING ? f->str : "?");
  if (b->nskipped == *cap) {
    size_t nc = *cap ? *cap * 2 : 64;
    skip_pair *np = sl_realloc(*pairs, nc * sizeof(*np));

    if (np == NULL)
      return sl__client_fail(c, SL_ENOMEM, "out of memory");
    *pairs = np;
    *cap = nc;
  }
  p.by = b->skipped_by.len;
  if (sl__buf_append(&b->skipped_by, v->str, v->len) != 0 || sl__buf_putc(&b->skipped_by, '\0') != 0)
    return sl__client_fail(c, SL_ENOMEM, "out of memory");
  (*pairs)[b->nskipped++] = p;
  return 0;
}

/*
 * After the last chunk: the items skipped because their dedupe key was
 * taken. Their indexes and the holders of their keys come from b:ID:skip by
 * HSCAN, and their ids from the spool in one pass in index order. Returns 0
 * or an SL_E* code with the cause in c->errstr.
 */
static int read_skipped(sl_client_t *c, sl_batch_t *b, const char *bkey) {
  char skey[sizeof(b->keys.prefix) + BATCH_ID_MAX + 16];
  char cursor[32] = "0";
  skip_pair *pairs = NULL;
  size_t cap = 0;
  int rc = 0;

  snprintf(skey, sizeof(skey), "%s:skip", bkey);
  do {
    const char *av[5] = {"HSCAN", skey, cursor, "COUNT", SKIP_SCAN_COUNT};
    redisReply *r = sl__client_cmd(c, &rc, 5, av, NULL);
    const redisReply *m;

    if (r == NULL)
      goto out;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[0]->len >= sizeof(cursor) || r->element[1]->type != REDIS_REPLY_ARRAY) {
      freeReplyObject(r);
      rc = sl__client_fail(c, SL_EPROTO, "unexpected HSCAN reply for %s", skey);
      goto out;
    }
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    m = r->element[1];
    for (size_t k = 0; rc == 0 && k + 1 < m->elements; k += 2)
      rc = skip_add(c, b, &pairs, &cap, m->element[k], m->element[k + 1], skey);
    freeReplyObject(r);
  } while (rc == 0 && strcmp(cursor, "0") != 0);
  if (rc != 0 || b->nskipped == 0)
    goto out;
  qsort(pairs, b->nskipped, sizeof(*pairs), cmp_pair);
  b->skipped = sl_malloc(b->nskipped * sizeof(*b->skipped));
  b->skipped_off = sl_malloc(b->nskipped * sizeof(*b->skipped_off));
  b->skipped_by_off = sl_malloc(b->nskipped * sizeof(*b->skipped_by_off));
  if (b->skipped == NULL || b->skipped_off == NULL || b->skipped_by_off == NULL) {
    rc = sl__client_fail(c, SL_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t k = 0; k < b->nskipped; k++) {
    const char *sid;
    size_t slen;
    long line;

    b->skipped[k] = pairs[k].idx;
    b->skipped_by_off[k] = pairs[k].by;
    rc = sl__batch_id_at(b, b->skipped[k], &sid, &slen, &line, c->errstr, sizeof(c->errstr));
    if (rc != 0)
      goto out; /* the cause is in c->errstr */
    b->skipped_off[k] = b->skipped_ids.len;
    rc = sl__buf_append(&b->skipped_ids, sid, slen);
    if (rc == 0)
      rc = sl__buf_putc(&b->skipped_ids, '\0');
    if (rc != 0) {
      rc = sl__client_fail(c, SL_ENOMEM, "out of memory");
      goto out;
    }
  }
out:
  sl_free(pairs);
  return rc;
}

SL_EXTERN int sl_batch_submit(sl_client_t *c, sl_batch_t *b, char **id_out) {
  char id[BATCH_ID_MAX + 1]; /* ours (SL_ID_LEN), or the first batch of an idempotency key */
  char bkey[sizeof(b->keys.prefix) + BATCH_ID_MAX + 4];
  char why[512];
  size_t nchunks;
  size_t sent = 0;
  size_t recv = 0;
  int tries = 0;        /* cluster redirects followed */
  long long waited = 0; /* ms waited for a moving slot or a failover */
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
  rc = sl__client_route(c, b->keys.stream[0]);
  if (rc != 0)
    return rc;
  if (sl__id_new(id) != 0)
    return sl__client_fail(c, SL_EIO, "cannot read random bytes for the batch id");
  snprintf(bkey, sizeof(bkey), "%sb:%s", b->keys.prefix, id);
  /* With a spool, the last chunk goes there too, and every chunk is read
   * back into `rd`: one chunk in memory while writing, not two. */
  if (b->ndir > 0 && b->cur.n > 0) {
    rc = sl__batch_spill(b, why, sizeof(why));
    if (rc != 0)
      return sl__client_fail(c, rc, "%s; nothing was submitted", why);
    sl__chunk_free(&b->cur);
    b->cur.first = b->n;
  }
  nchunks = sl__batch_nchunks(b);
  av = sl_malloc((FIXED_ARGS + 3 * b->max_chunk_n) * sizeof(*av));
  al = sl_malloc((FIXED_ARGS + 3 * b->max_chunk_n) * sizeof(*al));
  /* Batch options: a JSON object, with who submits for the batch log. */
  {
    rc = sl__buf_puts(&opts, "{\"by\":");
    if (rc == 0)
      rc = sl__json_put_str(&opts, c->actor, strlen(c->actor));
    if (rc == 0)
      rc = sl__buf_puts(&opts, ",\"name\":");
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
    if (rc == 0 && b->idem_key != NULL)
      rc = sl__buf_puts(&opts, ",\"idempotency_key\":");
    if (rc == 0 && b->idem_key != NULL)
      rc = sl__json_put_str(&opts, b->idem_key, strlen(b->idem_key));
    if (rc == 0 && b->idem_ttl_ms > 0)
      rc = sl__buf_printf(&opts, ",\"idempotency_ttl_ms\":%lld", (long long)b->idem_ttl_ms);
    if (rc == 0 && b->tenant != NULL)
      rc = sl__buf_printf(&opts, ",\"tenant\":\"%s\"", b->tenant);
    if (rc == 0 && b->labels != NULL)
      rc = sl__buf_printf(&opts, ",\"labels\":\"%s\"", b->labels); /* no character needs escaping */
    if (rc == 0)
      rc = sl__buf_putc(&opts, '}');
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

    /* With an idempotency key, chunk 0 alone first: it may answer that
     * another batch holds the key, and then nothing else is sent. */
    while (sent < nchunks && sent - recv < SUBMIT_PIPELINE && (b->idem_key == NULL || recv > 0 || sent == 0)) {
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
        sl__client_drop(c);
        goto out;
      }
      sent++;
    }
    if (redisGetReply(c->rc, (void **)&r) != REDIS_OK) {
      rc = sl__client_fail(c, SL_ECONN,
                           "lost the Redis connection after %zu of %zu chunks of batch %s (it stays "
                           "incomplete; `sluice cancel %s` ends it): %s",
                           recv, nchunks, id, id, c->rc->errstr);
      sl__client_drop(c);
      goto out;
    }
    if (r->type == REDIS_REPLY_ERROR && recv == 0 && strncmp(r->str, "SLUICE_IDEMPOTENT ", 18) == 0) {
      /* The key is taken: the first batch is the answer; nothing was written. */
      const char *first = r->str + 18;

      if (strlen(first) > BATCH_ID_MAX || strspn(first, BATCH_ID_CHARS) != strlen(first) || !first[0]) {
        rc = sl__client_fail(c, SL_EPROTO, "sluice_v1_submit answered \"%.80s\"", r->str);
        freeReplyObject(r);
        goto out;
      }
      snprintf(id, sizeof(id), "%s", first);
      freeReplyObject(r);
      b->reused = 1;
      break;
    }
    if (r->type == REDIS_REPLY_ERROR && c->cluster != NULL && sl__cluster_redirect_kind(r->str)) {
      /* The queue's slot moved (MOVED), is moving (TRYAGAIN, ASK) or its
       * master is failing over (CLUSTERDOWN): this chunk was not written,
       * and the ones sent after it were refused too (the same answer, or
       * SLUICE_ORDER). Once the slot is served again, send them all again
       * from this one; chunks are idempotent. */
      int again;

      snprintf(why, sizeof(why), "%s", r->str);
      freeReplyObject(r);
      drain(c, recv + 1, sent);
      again = sl__cluster_redirect(c, why, NULL, &tries, &waited);
      if (again <= 0) {
        char cause[512];

        snprintf(cause, sizeof(cause), "%s", again < 0 ? c->errstr : why);
        if (recv == 0)
          rc = sl__client_fail(c, SL_EREDIS, "the first chunk of batch %s could not be written; nothing was "
                               "submitted: %s", id, cause);
        else
          rc = sl__client_fail(c, SL_EREDIS, "chunk %zu of %zu of batch %s could not be written (it stays "
                               "incomplete; `sluice cancel %s` ends it): %s", recv, nchunks, id, id, cause);
        goto out;
      }
      sent = recv;
      continue;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      char msg[400];

      /* The replies of the chunks sent after it first: the connection is
       * then free to ask for maxmemory when the answer was OOM. */
      snprintf(why, sizeof(why), "%s", r->str);
      freeReplyObject(r);
      drain(c, recv + 1, sent);
      sl__redis_errmsg(c->rc, why, msg, sizeof(msg));
      /* A refused chunk wrote nothing (sluice_v1_submit checks before it
       * writes, and Redis refuses OOM before the call), so the batch exists
       * from its first chunk accepted on. */
      if (recv == 0)
        rc = sl__client_fail(c, SL_EREDIS, "Redis refused the first chunk of batch %s; nothing was submitted: %s",
                             id, msg);
      else
        rc = sl__client_fail(c, SL_EREDIS,
                             "Redis refused chunk %zu of %zu of batch %s (it stays incomplete; `sluice cancel %s` "
                             "ends it): %s",
                             recv, nchunks, id, id, msg);
      goto out;
    }
    freeReplyObject(r);
    recv++;
  }
  sl__chunk_free(&rd);
  /* Which items were skipped as duplicates (only when some had a key). */
  if (b->ndedupe > 0 && !b->reused) {
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
