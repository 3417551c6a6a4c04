/* Bounded growable buffer; see buf.h. */
#include "buf.h"

#include <stdio.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"

void sl__buf_init(sl_buf *b, size_t max) {
  b->p = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
}

void sl__buf_free(sl_buf *b) {
  sl_free(b->p);
  b->p = NULL;
  b->len = 0;
  b->cap = 0;
}

void sl__buf_reset(sl_buf *b) {
  b->len = 0;
  if (b->p != NULL)
    b->p[0] = '\0';
}

static int grow(sl_buf *b, size_t need) {
  size_t cap;
  char *p;

  if (need > b->max)
    return SL_ETOOBIG;
  if (need + 1 <= b->cap)
    return 0;
  cap = b->cap ? b->cap : 64;
  while (cap < need + 1)
    cap *= 2;
  if (cap > b->max + 1)
    cap = b->max + 1;
  p = sl_realloc(b->p, cap);
  if (p == NULL)
    return SL_ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

int sl__buf_append(sl_buf *b, const void *p, size_t n) {
  int rc = n > b->max - b->len ? SL_ETOOBIG : grow(b, b->len + n);

  if (rc != 0)
    return rc;
  if (n > 0)
    memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

int sl__buf_puts(sl_buf *b, const char *s) {
  return sl__buf_append(b, s, strlen(s));
}

int sl__buf_putc(sl_buf *b, char c) {
  return sl__buf_append(b, &c, 1);
}

int sl__buf_vprintf(sl_buf *b, const char *fmt, va_list ap) {
  va_list cp;
  int n;
  int rc;

  va_copy(cp, ap);
  n = vsnprintf(NULL, 0, fmt, cp);
  va_end(cp);
  if (n < 0)
    return SL_EINVAL;
  rc = grow(b, b->len + (size_t)n);
  if (rc != 0)
    return rc;
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
  return 0;
}

int sl__buf_printf(sl_buf *b, const char *fmt, ...) {
  va_list ap;
  int rc;

  va_start(ap, fmt);
  rc = sl__buf_vprintf(b, fmt, ap);
  va_end(ap);
  return rc;
}

char *sl__buf_take(sl_buf *b) {
  char *p = b->p;

  if (p == NULL)
    p = sl_strdup("");
  b->p = NULL;
  b->len = 0;
  b->cap = 0;
  return p;
}
