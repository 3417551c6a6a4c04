/*
 * A batch's internals, shared by collect.c (validating and collecting its
 * items in chunks) and submit.c (writing them); also what its unit tests
 * reach (tests/unit/test_submit.c): the chunks a batch would be written in,
 * and hooks that make its limits and its id hash small enough to test
 * spooling and hash collisions cheaply.
 */
#ifndef SL_SUBMIT_H
#define SL_SUBMIT_H

#include <stddef.h>

#include <sluice/sluice.h>

#include "buf.h"
#include "idtab.h"
#include "item.h"
#include "script.h"
#include "spool.h"

/* A chunk closes before its items' bytes would pass CHUNK_MAX_BYTES: per
 * item its three call arguments with ARG_FRAMING each, plus its id. */
#define CHUNK_MAX_BYTES (8 * 1024 * 1024) /* bytes */
#define ARG_FRAMING 16                    /* RESP framing of one call argument ("$N\r\n", "\r\n"), bytes */

#define CHUNK_SLACK (2 * 1024 * 1024)      /* one item past the cap, when it is alone in its chunk, bytes */
#define ITEM_OVERHEAD 320                  /* Redis memory of an item besides its JSON (admission), bytes */
#define FIXED_ARGS 16                      /* call arguments before the items */

/* Where a spooled chunk is. */
typedef struct chunk_ref {
  size_t first; /* batch index of its first item */
  uint64_t off; /* its record's offset in the spool, bytes */
} chunk_ref;

#define SL_BATCH_TYPES_MAX 32 /* distinct item types a batch remembers (sl_batch_types) */

struct sl_batch {
  sl_keys keys;          /* the queue's key names */
  char *name;            /* label, or NULL */
  char *rate_key;        /* default rate key, or NULL */
  int64_t retention_ms;  /* how long the ended batch is kept, ms; 0: the default */
  int64_t dedupe_ttl_ms; /* how long dedupe keys are remembered, ms; 0: the default */
  char *webhook;         /* POSTed the batch summary when it ends, or NULL */
  char *idem_key;        /* idempotency key, or NULL */
  char *tenant;          /* the batch's tenant, or NULL */
  char *labels;          /* its labels, canonical (labels.c), or NULL */
  char types[SL_BATCH_TYPES_MAX][SL_NAME_MAX + 1]; /* distinct item types added, first seen first */
  size_t ntypes;         /* how many (the rest are not kept) */
  int64_t idem_ttl_ms;   /* how long it is remembered, ms; 0: the default */
  int reused;            /* after submit: the key was taken, the id is the first batch's */
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
  sl_buf skipped_ids;    /* their ids, each NUL-terminated, back to back */
  size_t *skipped_off;   /* offset of each id in skipped_ids */
  sl_buf skipped_by;     /* the holders of their keys, "BATCH:INDEX", NUL-terminated, back to back */
  size_t *skipped_by_off; /* offset of each holder in skipped_by */
};


/* Spools the chunk being filled and starts the next one (collect.c). */
int sl__batch_spill(sl_batch_t *b, char *err, size_t errlen);
/* The id, its length and the line of item idx, from the chunk in memory or
 * the spool (collect.c). */
int sl__batch_id_at(sl_batch_t *b, size_t idx, const char **id, size_t *idlen, long *line, char *err,
                    size_t errlen);

/* How many calls the batch would be written in now. */
size_t sl__batch_nchunks(const sl_batch_t *b);
/* How many of its chunks are in the spool (0: it never touched the disk). */
size_t sl__batch_spooled(const sl_batch_t *b);
/*
 * Chunk k (< sl__batch_nchunks) with its items' call arguments: the chunk
 * being filled, or a spooled one read into *scratch (an sl__chunk_init'ed
 * chunk the caller frees). *out points to one or the other until the next
 * change to the batch. Returns 0, SL_ENOMEM or SL_EIO (message in err).
 */
int sl__batch_chunk(sl_batch_t *b, size_t k, sl_chunk *scratch, const sl_chunk **out, char *err, size_t errlen);

/* Test hooks, on an empty batch only (ignored otherwise): the id hash (to
 * force collisions) and the byte cap of a chunk (CHUNK_MAX_BYTES). */
void sl__batch_set_hash(sl_batch_t *b, sl_idhash_fn fn);
void sl__batch_set_chunk_bytes(sl_batch_t *b, size_t bytes);

#endif
