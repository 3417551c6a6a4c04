/* Batch labels: checking them, writing them as JSON, matching a filter. */
#ifndef SL_LABELS_H
#define SL_LABELS_H

#include <stddef.h>

#include "buf.h"

#define SL_LABELS_MAX 16    /* labels per batch */
#define SL_LABEL_PART_MAX 63 /* bytes of a key, and of a value */
#define SL_LABELS_FILTER_MAX 2100 /* bytes of a filter, with its NUL: 16 labels at most */

/* Checks "key=value,key=value" (labels.c explains the rules) and appends
 * the canonical form, sorted by key, to out. 0, or SL_EINVAL with a
 * message naming the label in err, or SL_ENOMEM. */
int sl__labels_canon(const char *labels, sl_buf *out, char *err, size_t errlen);
/* Appends the stored form as a JSON object {"key":"value",...}. */
int sl__labels_json(sl_buf *out, const char *stored);
/* Checks a filter: "key" or "key=value", comma-separated, all of which
 * must hold. 0, or SL_EINVAL with a message in err. */
int sl__labels_filter_check(const char *filter, char *err, size_t errlen);
/* 1 when the stored labels (NULL: none) satisfy every part of the filter. */
int sl__labels_match(const char *stored, const char *filter);

#endif
