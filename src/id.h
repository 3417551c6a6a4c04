/*
 * Batch ids: 26 characters of Crockford base32, like a ULID:
 *
 *   01JD3Q8Z5M   K7Q2T9W4XR1B6C8D
 *   |--------|   |--------------|
 *   48-bit ms     80 random bits
 *
 * so ids sort by creation time as strings, and two producers creating
 * batches in the same millisecond collide with probability 2^-80.
 */
#ifndef SL_ID_H
#define SL_ID_H

#include <stddef.h>
#include <stdint.h>

#define SL_ID_LEN 26

/* Writes a new id and a NUL into out[0..SL_ID_LEN]. Returns 0 or SL_EIO. */
int sl__id_new(char out[SL_ID_LEN + 1]);
/* Milliseconds since the epoch (wall clock). */
int64_t sl__now_ms(void);
/* Fills buf with random bytes from the kernel. Returns 0 or SL_EIO. */
int sl__random_bytes(void *buf, size_t n);
/* A uniform random number in [0, 1) from the kernel's bytes (0.5 if they
 * cannot be read): jitter, simulated failures. */
double sl__random_unit(void);

#endif
