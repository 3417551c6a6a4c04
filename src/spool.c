/*
 * Chunks and the submit spool; see spool.h for the model and the record
 * layout.
 *
 * Writes and reads use pwrite/pread at offsets the batch keeps, so a failed
 * write leaves nothing the next one depends on, and a read never moves a
 * file position that a write relies on. A chunk is written as four pieces
 * (header, item records, ids, body) and read back the same way; reading only
 * the first three, for an id, costs a few KiB where the body may be MiBs.
 */
#define _GNU_SOURCE /* mkostemp */
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sluice/sluice.h>

#include "alloc.h"

#define SPOOL_MAGIC 0x31434c53u /* "SLC1" read as little-endian bytes */

typedef struct chunk_hdr {
  uint32_t magic;    /* SPOOL_MAGIC */
  uint32_t n;        /* items in the chunk */
  uint64_t first;    /* batch index of its first item */
  uint64_t ids_len;  /* bytes of ids */
  uint64_t body_len; /* bytes of body */
} chunk_hdr;

/* ---- Chunks ---- */

void sl__chunk_init(sl_chunk *c, size_t max_bytes) {
  memset(c, 0, sizeof(*c));
  c->max_bytes = max_bytes < UINT32_MAX ? max_bytes : UINT32_MAX;
}

void sl__chunk_free(sl_chunk *c) {
  size_t max = c->max_bytes;

  sl_free(c->items);
  sl_free(c->ids);
  sl_free(c->body);
  sl__chunk_init(c, max);
}

void sl__chunk_reset(sl_chunk *c, size_t first) {
  c->n = 0;
  c->ids_len = 0;
  c->body_len = 0;
  c->first = first;
}

/* Grows *p to hold `need` bytes (doubling, at most max). */
static int grow_bytes(char **p, size_t *cap, size_t need, size_t max) {
  size_t nc;
  char *q;

  if (need <= *cap)
    return 0;
  if (need > max)
    return SL_ETOOBIG;
  nc = *cap ? *cap : 4096;
  while (nc < need)
    nc = nc > max / 2 ? max : nc * 2;
  q = sl_realloc(*p, nc);
  if (q == NULL)
    return SL_ENOMEM;
  *p = q;
  *cap = nc;
  return 0;
}

static int grow_items(sl_chunk *c, size_t need) {
  size_t nc;
  sl_chunk_item *q;

  if (need <= c->cap)
    return 0;
  nc = c->cap ? c->cap : 64;
  while (nc < need)
    nc *= 2;
  q = sl_realloc(c->items, nc * sizeof(*q));
  if (q == NULL)
    return SL_ENOMEM;
  c->items = q;
  c->cap = nc;
  return 0;
}

int sl__chunk_push(sl_chunk *c, const sl_item *it, long line, const char *prio, size_t prio_len,
                   const char *idx, size_t idx_len) {
  size_t id_len = strlen(it->id);
  size_t args = prio_len + idx_len + it->dlen;
  sl_chunk_item *r;
  int rc;

  if (id_len > c->max_bytes - c->ids_len || args > c->max_bytes - c->body_len)
    return SL_ETOOBIG;
  rc = grow_items(c, c->n + 1);
  if (rc == 0)
    rc = grow_bytes(&c->ids, &c->ids_cap, c->ids_len + id_len, c->max_bytes);
  if (rc == 0)
    rc = grow_bytes(&c->body, &c->body_cap, c->body_len + args, c->max_bytes);
  if (rc != 0)
    return rc;
  r = &c->items[c->n];
  r->line = line;
  r->id_off = (uint32_t)c->ids_len;
  r->id_len = (uint32_t)id_len;
  r->arg_off = (uint32_t)c->body_len;
  r->prio_len = (uint32_t)prio_len;
  r->idx_len = (uint32_t)idx_len;
  r->d_len = (uint32_t)it->dlen;
  memcpy(c->ids + c->ids_len, it->id, id_len);
  c->ids_len += id_len;
  memcpy(c->body + c->body_len, prio, prio_len);
  memcpy(c->body + c->body_len + prio_len, idx, idx_len);
  memcpy(c->body + c->body_len + prio_len + idx_len, it->d, it->dlen);
  c->body_len += args;
  c->n++;
  return 0;
}

const char *sl__chunk_id(const sl_chunk *c, size_t i) {
  return c->ids + c->items[i].id_off;
}

const char *sl__chunk_args(const sl_chunk *c, size_t i) {
  return c->body + c->items[i].arg_off;
}

/* ---- The spool file ---- */

void sl__spool_init(sl_spool *s) {
  const char *t = getenv("TMPDIR");

  s->fd = -1;
  s->end = 0;
  snprintf(s->dir, sizeof(s->dir), "%s", t != NULL && t[0] != '\0' ? t : "/tmp");
}

void sl__spool_close(sl_spool *s) {
  if (s->fd >= 0)
    close(s->fd);
  s->fd = -1;
  s->end = 0;
}

/* Creates the unlinked file. */
static int spool_create(sl_spool *s, char *err, size_t errlen) {
  char path[600];
  int n = snprintf(path, sizeof(path), "%s/sluice-submit-XXXXXX", s->dir);

  if (n < 0 || (size_t)n >= sizeof(path)) {
    snprintf(err, errlen, "cannot create the submit spool in %.80s...: the path is too long (set TMPDIR)", s->dir);
    return SL_EIO;
  }
  s->fd = mkostemp(path, O_CLOEXEC);
  if (s->fd < 0) {
    snprintf(err, errlen, "cannot create the submit spool in %s: %s (set TMPDIR to a writable directory)", s->dir,
             strerror(errno));
    return SL_EIO;
  }
  unlink(path);
  return 0;
}

/* Writes all of p[0..n) at off. Returns 0 or -1 with errno set. */
static int pwrite_all(int fd, const void *p, size_t n, uint64_t off) {
  const char *q = p;

  while (n > 0) {
    ssize_t w = pwrite(fd, q, n, (off_t)off);

    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (w == 0) {
      errno = ENOSPC;
      return -1;
    }
    q += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
  return 0;
}

/* Reads all of p[0..n) at off. Returns 0, or -1 with errno set (0 at EOF). */
static int pread_all(int fd, void *p, size_t n, uint64_t off) {
  char *q = p;

  while (n > 0) {
    ssize_t r = pread(fd, q, n, (off_t)off);

    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {
      errno = 0;
      return -1;
    }
    q += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return 0;
}

int sl__spool_write(sl_spool *s, const sl_chunk *c, uint64_t *off, char *err, size_t errlen) {
  chunk_hdr h;
  uint64_t at;
  int rc;

  if (s->fd < 0) {
    rc = spool_create(s, err, errlen);
    if (rc != 0)
      return rc;
  }
  memset(&h, 0, sizeof(h));
  h.magic = SPOOL_MAGIC;
  h.n = (uint32_t)c->n;
  h.first = c->first;
  h.ids_len = c->ids_len;
  h.body_len = c->body_len;
  at = s->end;
  if (pwrite_all(s->fd, &h, sizeof(h), at) != 0 ||
      pwrite_all(s->fd, c->items, c->n * sizeof(*c->items), at + sizeof(h)) != 0 ||
      pwrite_all(s->fd, c->ids, c->ids_len, at + sizeof(h) + c->n * sizeof(*c->items)) != 0 ||
      pwrite_all(s->fd, c->body, c->body_len, at + sizeof(h) + c->n * sizeof(*c->items) + c->ids_len) != 0) {
    snprintf(err, errlen, "cannot write the submit spool in %s (%.1f MiB written so far): %s (set TMPDIR to a "
             "directory with room)", s->dir, (double)at / 1048576.0, strerror(errno));
    return SL_EIO;
  }
  s->end = at + sizeof(h) + c->n * sizeof(*c->items) + c->ids_len + c->body_len;
  *off = at;
  return 0;
}

int sl__spool_read(const sl_spool *s, uint64_t off, sl_chunk *c, int with_body, char *err, size_t errlen) {
  uint64_t at = off + sizeof(chunk_hdr);
  chunk_hdr h;
  int rc;

  sl__chunk_reset(c, 0);
  if (s->fd < 0 || pread_all(s->fd, &h, sizeof(h), off) != 0)
    goto io;
  if (h.magic != SPOOL_MAGIC || h.ids_len > c->max_bytes || h.body_len > c->max_bytes) {
    errno = EINVAL;
    goto io;
  }
  rc = grow_items(c, h.n);
  if (rc == 0)
    rc = grow_bytes(&c->ids, &c->ids_cap, h.ids_len, c->max_bytes);
  if (rc == 0 && with_body)
    rc = grow_bytes(&c->body, &c->body_cap, h.body_len, c->max_bytes);
  if (rc != 0) {
    snprintf(err, errlen, "%s", sl_strerror(rc));
    return rc;
  }
  if (pread_all(s->fd, c->items, h.n * sizeof(*c->items), at) != 0)
    goto io;
  at += h.n * sizeof(*c->items);
  if (pread_all(s->fd, c->ids, h.ids_len, at) != 0)
    goto io;
  at += h.ids_len;
  if (with_body && pread_all(s->fd, c->body, h.body_len, at) != 0)
    goto io;
  c->n = h.n;
  c->first = h.first;
  c->ids_len = h.ids_len;
  c->body_len = with_body ? h.body_len : 0;
  return 0;
io:
  snprintf(err, errlen, "cannot read the submit spool in %s at offset %llu: %s", s->dir, (unsigned long long)off,
           errno != 0 ? strerror(errno) : "the file is shorter than what was written");
  sl__chunk_reset(c, 0);
  return SL_EIO;
}
