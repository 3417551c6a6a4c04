/*
 * Items: validation of one JSON Lines item and its normalized form.
 *
 * A producer's line is checked completely before anything is written (see
 * DESIGN, Guarantee 6): size, JSON syntax, UTF-8, nesting, known fields with
 * the right types, and the payload of built-in types. What is stored in the
 * stream's `d` field is the canonical item, fields always in this order:
 *
 *   {"type":"sleep"[,"rate_key":"openai"],"timeout_ms":30000,"max_attempts":1,"backoff_ms":1000,
 *    "backoff_max_ms":60000,"id":"row-17","payload":<raw text>}
 *
 * The functions read the type, rate key and timeout with one anchored match
 * at its start, and sluice_v1_submit verifies that an item sent in this
 * form is exactly in it (lua/_lib_item.lua writes the same form from an item
 * object sent by any other client). Names and times are read after their
 * escapes are decoded, and numbers in any spelling of an exact integer (5,
 * 5.0, 5e0), so no formatting of a line changes how its item runs.
 *
 * The payload is kept byte for byte as the producer wrote it. When you change
 * this format, bump the protocol version (docs/PROTOCOL.md) and keep workers
 * able to read the previous one.
 */
#ifndef SL_ITEM_H
#define SL_ITEM_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum { SL_PRIO_HIGH = 0, SL_PRIO_NORMAL = 1, SL_PRIO_LOW = 2, SL_PRIO_COUNT = 3 };

typedef struct sl_item_defaults {
  int prio;               /* SL_PRIO_* */
  int max_attempts;       /* >= 1 */
  int64_t timeout_ms;     /* > 0 */
  int64_t backoff_ms;     /* retry delay base, ms; 0 means 1000 */
  int64_t backoff_max_ms; /* retry delay cap, ms; 0 means 60000 */
  const char *rate_key;   /* default rate limit name, or NULL (borrowed) */
  int64_t start_at_ms;    /* default start: not before, ms since the epoch; 0: none */
  int64_t delay_ms;       /* default start: this long after submit, ms; 0: none */
} sl_item_defaults;

typedef struct sl_item {
  char *id;    /* the item id, unescaped */
  int prio;    /* SL_PRIO_* */
  int64_t start_at_ms; /* not before, ms since the epoch (run_at); 0: none */
  int64_t delay_ms;    /* start this long after submit (delay_ms); 0: none */
  char *dedupe;        /* the dedupe key, unescaped, or NULL */
  char *d;     /* the normalized item JSON */
  size_t dlen; /* its length, bytes */
} sl_item;

/*
 * Validates line[0..len) and fills *out (owned by out; sl__item_free).
 * `lineno` gives the default id. On invalid input returns SL_EINVAL or
 * SL_ETOOBIG and writes a message naming the field into err.
 */
int sl__item_parse(const char *line, size_t len, long lineno, const sl_item_defaults *def,
                   sl_item *out, char *err, size_t errlen);
void sl__item_free(sl_item *it);

/* Parses an RFC 3339 time ("2026-11-23T10:00:00Z", "...T10:00:00.250+02:00")
 * into ms since the epoch. Returns 0 or SL_EINVAL. */
int sl__rfc3339_parse(const char *s, size_t n, int64_t *ms);
/* The same, strict: a real calendar date of a year 1970-9999, a time of
 * day, an offset within -23:59..+23:59; on SL_EINVAL `why` (may be NULL)
 * says what is wrong ("February 2026 has 28 days, not 30"). */
int sl__rfc3339_check(const char *s, size_t n, int64_t *ms, char *why, size_t whylen);

/* "high" -> SL_PRIO_HIGH ...; -1 when unknown. */
int sl__prio_parse(const char *s, size_t n);
const char *sl__prio_name(int prio);
/* 1 when s[0..n) is a valid queue or type name: [A-Za-z0-9_.:-]{1,SL_NAME_MAX}. */
int sl__name_valid(const char *s, size_t n);

#endif
