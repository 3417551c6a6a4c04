/*
 * A strict JSON scanner and a small JSON writer.
 *
 * cJSON (used where a tree is convenient) accepts trailing garbage, invalid
 * UTF-8 and prints large integers lossily, so submit validation does not rely
 * on it: sl__json_validate checks a text against RFC 8259 plus sluice's
 * limits and says where and what is wrong, and sl__json_members walks the
 * top-level members of a validated object, giving the raw text of each value
 * so payloads are stored byte for byte as the producer sent them.
 */
#ifndef SL_JSON_H
#define SL_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/*
 * Validates that buf[0..len) is exactly one JSON value (surrounding
 * whitespace allowed): valid UTF-8, no raw control bytes, arrays and objects
 * nested at most `maxdepth` deep. Returns 0, or SL_EINVAL with a message and
 * the byte offset of the problem in *errpos.
 */
int sl__json_validate(const char *buf, size_t len, int maxdepth, size_t *errpos, char *err,
                      size_t errlen);

/*
 * The same, and also refuses an object that has a key twice ("url" twice
 * means one value to one reader and another to the next: JSON leaves it
 * open). Keys compare by their decoded text. SL_ENOMEM is possible for
 * objects with more than 64 keys open at once.
 */
int sl__json_validate_strict(const char *buf, size_t len, int maxdepth, size_t *errpos, char *err,
                             size_t errlen);

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if invalid (overlong
 * forms, surrogates and code points past U+10FFFF are invalid). */
size_t sl__utf8_seq(const unsigned char *p, size_t left);
/* The value of four hex digits at p (checked by the caller). */
uint32_t sl__json_hex4(const char *p);

/* "an object", "a string", ... for the raw text of a JSON value (messages). */
const char *sl__json_kind(const char *v);
/* The offset of the first byte of s[0..n) that is not part of valid UTF-8
 * (overlong forms and surrogates included), or n when all of it is valid. */
size_t sl__utf8_invalid_at(const char *s, size_t n);
/* n, or less so that s[0..result) does not end inside a UTF-8 sequence. */
size_t sl__utf8_cut(const char *s, size_t n);
/* The length of s[0..n) written by sl__json_put_str, quotes included, for
 * valid UTF-8 input. */
size_t sl__json_str_len(const char *s, size_t n);

typedef struct sl_json_member {
  const char *key; /* raw key text between the quotes, still escaped */
  size_t keylen;   /* bytes */
  const char *val; /* raw value text */
  size_t vallen;   /* bytes */
} sl_json_member;

/*
 * Fills out[0..max) with the top-level members of a validated JSON object and
 * sets *n to their count. Returns SL_EINVAL if the text is not an object,
 * SL_ETOOBIG if it has more than `max` members.
 */
int sl__json_members(const char *buf, size_t len, sl_json_member *out, size_t max, size_t *n);

/* The same for the elements of a validated JSON array (key NULL). */
int sl__json_elements(const char *buf, size_t len, sl_json_member *out, size_t max, size_t *n);

/* Decodes a raw JSON string token (with its quotes) into out as UTF-8.
 * SL_EINVAL for a lone UTF-16 surrogate escape. */
int sl__json_unescape(const char *tok, size_t len, sl_buf *out);

/* Parses a JSON number token that must be an exact integer, in any
 * spelling (5, 5.0, 5e0, 0.5e1; not 5.5, not 1e-3): SL_EINVAL if it is not
 * one, SL_ETOOBIG if it lies outside [lo, hi] or has more than 16 digits. */
int sl__json_int(const char *tok, size_t len, int64_t lo, int64_t hi, int64_t *out);
/* Parses any JSON number token. */
int sl__json_double(const char *tok, size_t len, double *out);

/* Appends s[0..n) as a JSON string with quotes, escaping as needed. Bytes that
 * are not valid UTF-8 are replaced by U+FFFD so the output is always valid. */
int sl__json_put_str(sl_buf *b, const char *s, size_t n);


#endif
