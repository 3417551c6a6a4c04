/*
 * A growable byte buffer with a hard size limit (curl's dynbuf idea): every
 * append either fits under `max` or fails with SL_ETOOBIG, so no input can
 * make a buffer grow without bound. The content is always NUL-terminated.
 */
#ifndef SL_BUF_H
#define SL_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct sl_buf {
  char *p;    /* content, NUL-terminated; NULL until the first append */
  size_t len; /* bytes used, not counting the NUL */
  size_t cap; /* bytes allocated */
  size_t max; /* the most `len` may reach, bytes */
} sl_buf;

void sl__buf_init(sl_buf *b, size_t max);
void sl__buf_free(sl_buf *b);
void sl__buf_reset(sl_buf *b); /* len = 0, keeps the memory */
int sl__buf_append(sl_buf *b, const void *p, size_t n);
int sl__buf_puts(sl_buf *b, const char *s);
int sl__buf_putc(sl_buf *b, char c);
int sl__buf_printf(sl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sl__buf_vprintf(sl_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Hands the content to the caller (free with sl_free) and resets b. */
char *sl__buf_take(sl_buf *b);

#endif
