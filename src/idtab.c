/*
 * The id table of a batch; see idtab.h for the model and its memory.
 *
 * Linear probing over 64-bit slots: the high 32 bits of an id's hash (the
 * tag) next to the item's index + 1. The slot position comes from the low
 * bits of the hash, so a probe compares tags without touching the hash
 * blocks, and only an equal tag costs a look at the item's full hash. On
 * growth the table is rebuilt from the hash blocks, read in index order.
 */
#include "idtab.h"

#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "id.h"

#define IDTAB_BLOCK 8192     /* hashes per block (64 KiB) */
#define IDTAB_MIN_SLOTS 1024 /* slots of the first table */

/* ---- SipHash-2-4 ---- */

static uint64_t rotl(uint64_t x, int b) {
  return (x << b) | (x >> (64 - b));
}

/* 8 bytes as a little-endian 64-bit word. */
static uint64_t load_le64(const unsigned char *p) {
  return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
         (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

#define SIPROUND                                                                                   \
  do {                                                                                             \
    v0 += v1;                                                                                      \
    v1 = rotl(v1, 13);                                                                             \
    v1 ^= v0;                                                                                      \
    v0 = rotl(v0, 32);                                                                             \
    v2 += v3;                                                                                      \
    v3 = rotl(v3, 16);                                                                             \
    v3 ^= v2;                                                                                      \
    v0 += v3;                                                                                      \
    v3 = rotl(v3, 21);                                                                             \
    v3 ^= v0;                                                                                      \
    v2 += v1;                                                                                      \
    v1 = rotl(v1, 17);                                                                             \
    v1 ^= v2;                                                                                      \
    v2 = rotl(v2, 32);                                                                             \
  } while (0)

uint64_t sl__siphash24(const uint64_t key[2], const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  uint64_t v0 = key[0] ^ 0x736f6d6570736575ULL;
  uint64_t v1 = key[1] ^ 0x646f72616e646f6dULL;
  uint64_t v2 = key[0] ^ 0x6c7967656e657261ULL;
  uint64_t v3 = key[1] ^ 0x7465646279746573ULL;
  uint64_t last = (uint64_t)n << 56;
  size_t full = n - n % 8;
  uint64_t m;

  for (size_t i = 0; i < full; i += 8) {
    m = load_le64(p + i);
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
  }
  /* The last 0-7 bytes, little-endian, under the length's low byte. */
  for (size_t i = n % 8; i > 0; i--)
    last |= (uint64_t)p[full + i - 1] << (8 * (i - 1));
  v3 ^= last;
  SIPROUND;
  SIPROUND;
  v0 ^= last;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- The table ---- */

int sl__idtab_init(sl_idtab *t) {
  memset(t, 0, sizeof(*t));
  t->hash = sl__siphash24;
  return sl__random_bytes(t->key, sizeof(t->key));
}

void sl__idtab_free(sl_idtab *t) {
  if (t->blocks != NULL) {
    for (size_t i = 0; i < t->nblocks; i++)
      sl_free(t->blocks[i]);
  }
  sl_free(t->blocks);
  sl_free(t->slots);
  t->blocks = NULL;
  t->slots = NULL;
  t->nblocks = 0;
  t->blocks_cap = 0;
  t->nslots = 0;
  t->n = 0;
}

uint64_t sl__idtab_hash(const sl_idtab *t, const char *id, size_t n) {
  return t->hash(t->key, id, n);
}

/* The hash of item i (< t->n). */
static uint64_t hash_of(const sl_idtab *t, size_t i) {
  return t->blocks[i / IDTAB_BLOCK][i % IDTAB_BLOCK];
}

static void slot_put(uint64_t *slots, size_t nslots, uint64_t h, size_t idx) {
  size_t mask = nslots - 1;
  size_t i = (size_t)h & mask;

  while (slots[i] != 0)
    i = (i + 1) & mask;
  slots[i] = (h & 0xffffffff00000000ULL) | (uint64_t)(idx + 1);
}

int sl__idtab_reserve(sl_idtab *t) {
  if (t->n >= IDTAB_MAX)
    return SL_ETOOBIG;
  if ((t->n + 1) * 4 > t->nslots * 3) {
    size_t ns = t->nslots ? t->nslots * 2 : IDTAB_MIN_SLOTS;
    uint64_t *s = sl_calloc(ns, sizeof(*s));

    if (s == NULL)
      return SL_ENOMEM;
    for (size_t i = 0; i < t->n; i++)
      slot_put(s, ns, hash_of(t, i), i);
    sl_free(t->slots);
    t->slots = s;
    t->nslots = ns;
  }
  if (t->n == t->nblocks * IDTAB_BLOCK) {
    uint64_t *blk;

    if (t->nblocks == t->blocks_cap) {
      size_t nc = t->blocks_cap ? t->blocks_cap * 2 : 16;
      uint64_t **nb = sl_realloc(t->blocks, nc * sizeof(*nb));

      if (nb == NULL)
        return SL_ENOMEM;
      t->blocks = nb;
      t->blocks_cap = nc;
    }
    blk = sl_malloc(IDTAB_BLOCK * sizeof(*blk));
    if (blk == NULL)
      return SL_ENOMEM;
    t->blocks[t->nblocks++] = blk;
  }
  return 0;
}

void sl__idtab_add(sl_idtab *t, uint64_t h) {
  t->blocks[t->n / IDTAB_BLOCK][t->n % IDTAB_BLOCK] = h;
  slot_put(t->slots, t->nslots, h, t->n);
  t->n++;
}

size_t sl__idtab_next(const sl_idtab *t, uint64_t h, size_t *pos) {
  uint64_t tag = h & 0xffffffff00000000ULL;
  size_t mask;

  if (t->nslots == 0)
    return 0;
  mask = t->nslots - 1;
  while (*pos < t->nslots) {
    uint64_t s = t->slots[((size_t)h + *pos) & mask];
    size_t idx;

    if (s == 0)
      return 0;
    (*pos)++;
    idx = (size_t)(s & 0xffffffffULL) - 1;
    if ((s & 0xffffffff00000000ULL) == tag && hash_of(t, idx) == h)
      return idx + 1;
  }
  return 0;
}
