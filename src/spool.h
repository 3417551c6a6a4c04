/*
 * Chunks of a batch, and the submit spool that keeps them on disk until the
 * batch is written.
 *
 * A chunk is the unit of one sluice_v1_submit call: up to `chunk_items`
 * items whose call arguments stay under the batch's byte cap. Its items are
 * kept as the call will need them, so that writing a chunk builds the call
 * without formatting anything:
 *
 *   items[n]  one fixed record per item: its input line, where its id is in
 *             `ids`, and where its three call arguments are in `body`
 *   ids       the item ids, back to back (read to confirm a duplicate id and
 *             to name skipped items)
 *   body      per item: the priority argument ("2", "2@T" or "2+D", then
 *             "#KEY"), the item index in decimal, and the normalized item
 *
 * The batch fills one chunk in memory. When a second chunk begins, the full
 * one is appended to the spool, an unlinked temporary file in $TMPDIR (or
 * /tmp) created on that first append, so a batch of one chunk never touches
 * the disk. The file disappears when it is closed, also when the process
 * dies.
 *
 * The spool's record of a chunk, at the offset sl__spool_write returned:
 *
 *   header    32 bytes: magic "SLC1", n, first, ids_len, body_len
 *   items     n x sizeof(sl_chunk_item)
 *   ids       ids_len bytes
 *   body      body_len bytes
 *
 * in this process's byte order: the file is private to the process that
 * wrote it and never outlives it. When you change this layout, change the
 * magic too.
 */
#ifndef SL_SPOOL_H
#define SL_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "item.h"

typedef struct sl_chunk_item {
  int64_t line;      /* the item's input line, 1-based */
  uint32_t id_off;   /* its id: offset in the chunk's ids, bytes */
  uint32_t id_len;   /* the id's length, bytes */
  uint32_t arg_off;  /* its call arguments: offset in the chunk's body, bytes */
  uint32_t prio_len; /* the priority argument, bytes */
  uint32_t idx_len;  /* the item index in decimal, bytes (after the priority) */
  uint32_t d_len;    /* the normalized item, bytes (after the index) */
} sl_chunk_item;

typedef struct sl_chunk {
  sl_chunk_item *items; /* the item records */
  size_t n;             /* items used */
  size_t cap;           /* items allocated */
  char *ids;            /* the ids, back to back */
  size_t ids_len;       /* bytes used */
  size_t ids_cap;       /* bytes allocated */
  char *body;           /* per item: priority argument, index, item */
  size_t body_len;      /* bytes used */
  size_t body_cap;      /* bytes allocated */
  size_t max_bytes;     /* the most ids_len or body_len may reach, bytes */
  size_t first;         /* batch index of items[0] */
} sl_chunk;

/* An empty chunk whose buffers never pass max_bytes. Allocates nothing. */
void sl__chunk_init(sl_chunk *c, size_t max_bytes);
void sl__chunk_free(sl_chunk *c);
/* Empties the chunk (keeping its memory); its next item is batch index first. */
void sl__chunk_reset(sl_chunk *c, size_t first);

/*
 * Appends one item: its id, line and call arguments (prio, idx, then the
 * normalized item it->d). All or nothing: returns 0, or SL_ENOMEM /
 * SL_ETOOBIG with the chunk unchanged.
 */
int sl__chunk_push(sl_chunk *c, const sl_item *it, long line, const char *prio, size_t prio_len,
                   const char *idx, size_t idx_len);

/* Pointers to item i's id and arguments (i < c->n). */
const char *sl__chunk_id(const sl_chunk *c, size_t i);
const char *sl__chunk_args(const sl_chunk *c, size_t i);

typedef struct sl_spool {
  int fd;            /* the unlinked temporary file; -1 until the first chunk */
  uint64_t end;      /* bytes written: the offset of the next chunk */
  char dir[512];     /* its directory ($TMPDIR or /tmp), for messages */
} sl_spool;

/* A spool with no file yet (the file is made by the first write). */
void sl__spool_init(sl_spool *s);
/* Closes the file, which the kernel then removes. */
void sl__spool_close(sl_spool *s);

/*
 * Appends chunk c to the spool, creating the file first if needed, and
 * gives its offset in *off. On failure returns SL_EIO and writes a message
 * naming the directory and the cause (a full disk: "No space left on
 * device") into err; the spool is as it was (a partial record is overwritten
 * by the next write).
 */
int sl__spool_write(sl_spool *s, const sl_chunk *c, uint64_t *off, char *err, size_t errlen);

/*
 * Reads the chunk at offset `off` into c (replacing its content, growing
 * its buffers as needed): the item records and ids, and the body when
 * with_body. Returns 0, SL_ENOMEM, or SL_EIO with a message in err. On
 * failure c is empty (n == 0).
 */
int sl__spool_read(const sl_spool *s, uint64_t off, sl_chunk *c, int with_body, char *err, size_t errlen);

#endif
