/* The results line of an ended attempt and its pieces (see result.c). */
#ifndef SL_RESULT_H
#define SL_RESULT_H

#include <stddef.h>

#include <sluice/sluice.h>

/* The errors of earlier attempts plus msg (NULL: none), the last few, as a
 * JSON array text (free with sl_free); NULL on OOM. */
char *sl__result_errors(const sl_job_t *j, const char *msg);
/* The results line of job j ending with outcome 's', 'f' or 'x' and
 * "key":val (val is JSON text of vlen bytes); NULL on OOM. *len gets its
 * length. Free with sl_free. */
char *sl__result_line(const sl_job_t *j, char outcome, const char *key, const char *val, size_t vlen, size_t *len);
/* n with thousands separators ("431,203"), into out. */
const char *sl__grouped(size_t n, char *out, size_t len);
/* Writes the base64 of src[0..n) (with padding) to out (room for
 * 4 * ((n + 2) / 3) bytes); returns its length. */
size_t sl__base64_encode(const unsigned char *src, size_t n, char *out);

#endif
