/*
 * The id table of a batch: finds items whose ids may be equal without
 * keeping the ids.
 *
 * A batch must not hold two items with the same id, and a batch can be far
 * larger than memory (its items wait in the submit spool, see spool.h). So
 * the table keeps, per item, only a 64-bit hash of its id, and an
 * open-addressing table of item indexes on that hash. A lookup yields the
 * items whose hash equals the new id's hash; the caller reads each one's id
 * back (from the chunk in memory or from the spool) and compares the bytes,
 * so two different ids with the same hash are never taken for duplicates.
 *
 * Ids come from the producer, who may be hostile: with a fixed hash, ids
 * made to collide would turn every insert into a long probe and a spool
 * read. The hash is therefore keyed, SipHash-2-4 with 128 random bits drawn
 * per batch, so colliding ids cannot be chosen in advance.
 *
 * Memory: 8 bytes per item for its hash (kept in blocks of IDTAB_BLOCK, so
 * there is no doubling copy), plus 8 bytes per slot, with between 1.33 and
 * 2.67 slots per item (the table doubles when 3/4 full): about 19 to 29
 * bytes per item in all, whatever the size of the items. 1,000,000 items
 * take about 24 MiB at the worst point of a growth.
 *
 * Indexes are 32 bits in the slots: a table holds at most IDTAB_MAX items.
 */
#ifndef SL_IDTAB_H
#define SL_IDTAB_H

#include <stddef.h>
#include <stdint.h>

#define IDTAB_MAX 4294967294u /* items in one table (a slot keeps index + 1 in 32 bits) */

/* A keyed 64-bit hash of s[0..n). */
typedef uint64_t (*sl_idhash_fn)(const uint64_t key[2], const char *s, size_t n);

typedef struct sl_idtab {
  uint64_t key[2];     /* the hash key: 128 random bits per table */
  sl_idhash_fn hash;   /* sl__siphash24, or a test's own */
  uint64_t **blocks;   /* hash of item i: blocks[i / IDTAB_BLOCK][i % IDTAB_BLOCK] */
  size_t nblocks;      /* blocks allocated */
  size_t blocks_cap;   /* entries of blocks[] allocated */
  uint64_t *slots;     /* (hash >> 32) << 32 | (index + 1); 0: empty */
  size_t nslots;       /* slots allocated: a power of two, or 0 */
  size_t n;            /* items in the table, indexes 0 .. n-1 */
} sl_idtab;

/* SipHash-2-4 (Aumasson and Bernstein, 2012) of s[0..n) with a 128-bit key
 * given as two little-endian 64-bit words. */
uint64_t sl__siphash24(const uint64_t key[2], const char *s, size_t n);

/* An empty table with a random key. Allocates nothing. Returns 0, or SL_EIO
 * when the kernel gives no random bytes. */
int sl__idtab_init(sl_idtab *t);
void sl__idtab_free(sl_idtab *t);

/* The table's hash of an id. */
uint64_t sl__idtab_hash(const sl_idtab *t, const char *id, size_t n);

/*
 * Makes room for one more item, so that the next sl__idtab_add cannot fail.
 * Returns 0, SL_ENOMEM (the table is unchanged) or SL_ETOOBIG (IDTAB_MAX
 * items are in).
 */
int sl__idtab_reserve(sl_idtab *t);

/* Adds item t->n with hash h. Precondition: sl__idtab_reserve succeeded
 * since the last add. */
void sl__idtab_add(sl_idtab *t, uint64_t h);

/*
 * The items whose id hash is h, one per call: start with *pos = 0; each call
 * returns an item index + 1, or 0 when there are no more. The table must not
 * change in between.
 */
size_t sl__idtab_next(const sl_idtab *t, uint64_t h, size_t *pos);

#endif
