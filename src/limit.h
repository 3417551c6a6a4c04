/* Rate limits: parsing of rates like 50/s (see limit.c for the format). */
#ifndef SL_LIMIT_H
#define SL_LIMIT_H

#include <stddef.h>
#include <stdint.h>

/* Parses "N/s", "N/m" or "N/h" (N > 0, may have a fraction) into the
 * emission interval in µs. SL_EINVAL with a message on bad input. */
int sl__rate_parse(const char *s, int64_t *interval_us, char *err, size_t errlen);

#endif
