/*
 * The batch's internals that its unit tests reach (tests/unit/test_submit.c):
 * the chunks a batch would be written in, and hooks that make its limits and
 * its id hash small enough to test spooling and hash collisions cheaply.
 * Nothing else in the library uses them.
 */
#ifndef SL_SUBMIT_H
#define SL_SUBMIT_H

#include <stddef.h>

#include <sluice/sluice.h>

#include "idtab.h"
#include "spool.h"

/* A chunk closes before its items' bytes would pass CHUNK_MAX_BYTES: per
 * item its three call arguments with ARG_FRAMING each, plus its id. */
#define CHUNK_MAX_BYTES (8 * 1024 * 1024) /* bytes */
#define ARG_FRAMING 16                    /* RESP framing of one call argument ("$N\r\n", "\r\n"), bytes */

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
