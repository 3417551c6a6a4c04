/*
 * Batch labels. A producer tags a batch with up to 16 labels such as
 * "team=ml,env=prod"; `sluice batches --label team=ml` and
 * GET /v1/batches?label=team=ml then list only the batches that carry them.
 *
 * A key is 1-63 characters of [A-Za-z0-9_./-], a value 0-63 characters of
 * [A-Za-z0-9_.:/@+-]. Neither can hold a comma, an equals sign, a quote or
 * a control character, so the stored form needs no escaping anywhere: the
 * batch hash keeps the labels as one field "key=value,..." sorted by key
 * (lua/_lib.lua sl_labels applies the same rules to what other clients
 * send). A key appears once.
 *
 * A filter is "key" (the label is there, whatever its value) or
 * "key=value", and several parts joined by commas must all hold.
 */
#include "labels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "json.h"

#define KEY_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./-"
#define VALUE_CHARS KEY_CHARS ":@+"

typedef struct label {
  const char *k;
  size_t klen;
  const char *v;
  size_t vlen;
  int has_v; /* an '=' was there */
} label;

/* Splits part p (length n, no comma) at its '='; 0, or -1 with err set. */
static int split(const char *p, size_t n, int need_value, label *l, char *err, size_t errlen) {
  const char *eq = memchr(p, '=', n);
  size_t i;

  l->k = p;
  l->klen = eq ? (size_t)(eq - p) : n;
  l->v = eq ? eq + 1 : "";
  l->vlen = eq ? n - l->klen - 1 : 0;
  l->has_v = eq != NULL;
  if (need_value && eq == NULL) {
    snprintf(err, errlen, "label \"%.*s\": expected key=value", (int)(n > 80 ? 80 : n), p);
    return -1;
  }
  if (l->klen == 0 || l->klen > SL_LABEL_PART_MAX) {
    snprintf(err, errlen, "label \"%.*s\": the key must be 1-%d characters", (int)(n > 80 ? 80 : n), p,
             SL_LABEL_PART_MAX);
    return -1;
  }
  for (i = 0; i < l->klen && strchr(KEY_CHARS, l->k[i]) != NULL && l->k[i] != '\0'; i++)
    ;
  if (i < l->klen) {
    snprintf(err, errlen, "label \"%.*s\": the key may hold only [A-Za-z0-9_./-]", (int)(n > 80 ? 80 : n), p);
    return -1;
  }
  if (l->vlen > SL_LABEL_PART_MAX) {
    snprintf(err, errlen, "label \"%.*s\": the value is over %d characters", (int)(n > 80 ? 80 : n), p,
             SL_LABEL_PART_MAX);
    return -1;
  }
  for (i = 0; i < l->vlen && strchr(VALUE_CHARS, l->v[i]) != NULL && l->v[i] != '\0'; i++)
    ;
  if (i < l->vlen) {
    snprintf(err, errlen, "label \"%.*s\": the value may hold only [A-Za-z0-9_./:@+-]", (int)(n > 80 ? 80 : n),
             p);
    return -1;
  }
  return 0;
}

static int by_key(const void *a, const void *b) {
  const label *x = a;
  const label *y = b;
  size_t n = x->klen < y->klen ? x->klen : y->klen;
  int c = memcmp(x->k, y->k, n);

  return c != 0 ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* Splits s at commas into at most SL_LABELS_MAX parts; their count, or -1. */
static int parse(const char *s, int need_value, label *ls, char *err, size_t errlen) {
  int n = 0;

  while (*s != '\0') {
    size_t len = strcspn(s, ",");

    if (n == SL_LABELS_MAX) {
      snprintf(err, errlen, "more than %d labels", SL_LABELS_MAX);
      return -1;
    }
    if (len == 0) {
      snprintf(err, errlen, "an empty label (two commas, or one at an end)");
      return -1;
    }
    if (split(s, len, need_value, &ls[n], err, errlen) != 0)
      return -1;
    n++;
    s += len;
    if (*s == ',' && *++s == '\0') {
      snprintf(err, errlen, "an empty label (two commas, or one at an end)");
      return -1;
    }
  }
  return n;
}

int sl__labels_canon(const char *labels, sl_buf *out, char *err, size_t errlen) {
  label ls[SL_LABELS_MAX];
  int n = parse(labels, 1, ls, err, errlen);
  int rc = 0;

  if (n < 0)
    return SL_EINVAL;
  qsort(ls, (size_t)n, sizeof(ls[0]), by_key);
  for (int i = 1; i < n; i++) {
    if (by_key(&ls[i - 1], &ls[i]) == 0) {
      snprintf(err, errlen, "label key \"%.*s\" given twice", (int)ls[i].klen, ls[i].k);
      return SL_EINVAL;
    }
  }
  for (int i = 0; i < n && rc == 0; i++)
    rc = sl__buf_printf(out, "%s%.*s=%.*s", i ? "," : "", (int)ls[i].klen, ls[i].k, (int)ls[i].vlen, ls[i].v);
  return rc != 0 ? SL_ENOMEM : 0;
}

int sl__labels_json(sl_buf *out, const char *stored) {
  label ls[SL_LABELS_MAX];
  char err[128];
  int n = parse(stored, 1, ls, err, sizeof(err));
  int rc = sl__buf_putc(out, '{');

  for (int i = 0; i < n && rc == 0; i++) {
    if (i > 0)
      rc = sl__buf_putc(out, ',');
    if (rc == 0)
      rc = sl__json_put_str(out, ls[i].k, ls[i].klen);
    if (rc == 0)
      rc = sl__buf_putc(out, ':');
    if (rc == 0)
      rc = sl__json_put_str(out, ls[i].v, ls[i].vlen);
  }
  return rc == 0 ? sl__buf_putc(out, '}') : rc;
}

int sl__labels_filter_check(const char *filter, char *err, size_t errlen) {
  label ls[SL_LABELS_MAX];

  return parse(filter, 0, ls, err, errlen) < 0 ? SL_EINVAL : 0;
}

int sl__labels_match(const char *stored, const char *filter) {
  label want[SL_LABELS_MAX];
  label have[SL_LABELS_MAX];
  char err[128];
  int nw = parse(filter, 0, want, err, sizeof(err));
  int nh = stored != NULL ? parse(stored, 1, have, err, sizeof(err)) : 0;

  if (nw < 0 || nh < 0)
    return 0;
  for (int i = 0; i < nw; i++) {
    int hit = 0;

    for (int j = 0; j < nh && !hit; j++) {
      hit = want[i].klen == have[j].klen && memcmp(want[i].k, have[j].k, want[i].klen) == 0 &&
            (!want[i].has_v || (want[i].vlen == have[j].vlen && memcmp(want[i].v, have[j].v, want[i].vlen) == 0));
    }
    if (!hit)
      return 0;
  }
  return 1;
}
