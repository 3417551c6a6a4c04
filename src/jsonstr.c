/*
 * JSON text, piece by piece: string tokens decoded (sl__json_unescape) and
 * written (sl__json_put_str, with sl__json_str_len for the size first),
 * numbers read exactly (sl__json_int, sl__json_double), UTF-8 checked and
 * cut at a character boundary. The scanner that validates whole documents
 * is json.c; see json.h for both.
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

static int isdigit_c(unsigned char c) {
  return c >= '0' && c <= '9';
}

const char *sl__json_kind(const char *v) {
  switch (v[0]) {
  case '{': return "an object";
  case '[': return "an array";
  case '"': return "a string";
  case 't':
  case 'f': return "a boolean";
  case 'n': return "null";
  default: return "a number";
  }
}

size_t sl__utf8_invalid_at(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;

  while (i < n) {
    size_t k = p[i] < 0x80 ? 1 : sl__utf8_seq(p + i, n - i);

    if (k == 0)
      return i;
    i += k;
  }
  return n;
}

size_t sl__utf8_cut(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t back = 0;

  /* back up over at most 3 continuation bytes to a sequence that is whole */
  while (back < 4 && back < n && (p[n - 1 - back] & 0xc0) == 0x80)
    back++;
  if (back < n && p[n - 1 - back] >= 0xc0 && sl__utf8_seq(p + n - 1 - back, back + 1) == 0)
    return n - 1 - back;
  return n;
}

size_t sl__json_str_len(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t out = 2;

  for (size_t i = 0; i < n; i++) {
    unsigned char c = p[i];

    if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t')
      out += 2;
    else if (c < 0x20)
      out += 6;
    else
      out += 1;
  }
  return out;
}

static int put_utf8(sl_buf *out, uint32_t cp) {
  char b[4];
  size_t n;

  if (cp < 0x80) {
    b[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    b[0] = (char)(0xc0 | (cp >> 6));
    b[1] = (char)(0x80 | (cp & 0x3f));
    n = 2;
  } else if (cp < 0x10000) {
    b[0] = (char)(0xe0 | (cp >> 12));
    b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    b[2] = (char)(0x80 | (cp & 0x3f));
    n = 3;
  } else {
    b[0] = (char)(0xf0 | (cp >> 18));
    b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    b[3] = (char)(0x80 | (cp & 0x3f));
    n = 4;
  }
  return sl__buf_append(out, b, n);
}

int sl__json_unescape(const char *tok, size_t len, sl_buf *out) {
  size_t i;
  int rc = 0;

  if (len < 2 || tok[0] != '"' || tok[len - 1] != '"')
    return SL_EINVAL;
  for (i = 1; i + 1 < len && rc == 0; i++) {
    char c = tok[i];

    if (c != '\\') {
      rc = sl__buf_putc(out, c);
      continue;
    }
    c = tok[++i];
    switch (c) {
    case 'b': rc = sl__buf_putc(out, '\b'); break;
    case 'f': rc = sl__buf_putc(out, '\f'); break;
    case 'n': rc = sl__buf_putc(out, '\n'); break;
    case 'r': rc = sl__buf_putc(out, '\r'); break;
    case 't': rc = sl__buf_putc(out, '\t'); break;
    case 'u': {
      uint32_t cp;

      if (i + 4 >= len)
        return SL_EINVAL;
      cp = sl__json_hex4(tok + i + 1);
      i += 4;
      if (cp >= 0xd800 && cp <= 0xdbff && i + 6 < len && tok[i + 1] == '\\' && tok[i + 2] == 'u') {
        uint32_t lo = sl__json_hex4(tok + i + 3);

        if (lo >= 0xdc00 && lo <= 0xdfff) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          i += 6;
        }
      }
      if (cp >= 0xd800 && cp <= 0xdfff)
        return SL_EINVAL; /* a lone surrogate is not a character (validation refuses it first) */
      rc = put_utf8(out, cp);
      break;
    }
    default: rc = sl__buf_putc(out, c); break;
    }
  }
  return rc;
}

int sl__json_int(const char *tok, size_t len, int64_t lo, int64_t hi, int64_t *out) {
  size_t i = 0;
  int neg = 0;
  uint64_t mag = 0;  /* the first SIG_KEEP significant digits */
  size_t nsig = 0;   /* significant digits (leading zeros dropped) */
  size_t zrun = 0;   /* trailing zeros among them */
  size_t nfrac = 0;  /* digits after the point */
  int64_t e = 0;     /* the exponent as written */
  size_t digits;
  size_t kept;
  int64_t shift;
  uint64_t v;

  enum { SIG_KEEP = 19, EXP_CAP = 100000 }; /* 19 digits fit in 64 bits */

  /* Any JSON spelling of an exact integer: 5, 5.0, 5e0, 0.5e1, 500e-2.
   * lua/_lib_item.lua's sl_json_int reads numbers the same way. */
  if (i < len && tok[i] == '-') {
    neg = 1;
    i++;
  }
  digits = i;
  for (int frac = 0; frac < 2; frac++) {
    size_t start = i;

    while (i < len && isdigit_c((unsigned char)tok[i])) {
      unsigned d = (unsigned)(tok[i] - '0');

      if (frac)
        nfrac++;
      if (nsig > 0 || d != 0) {
        nsig++;
        zrun = d == 0 ? zrun + 1 : 0;
        if (nsig <= SIG_KEEP)
          mag = mag * 10 + d;
      }
      i++;
    }
    if (!frac && i == digits)
      return SL_EINVAL;
    if (frac && i == start)
      return SL_EINVAL; /* "5." */
    if (frac || i >= len || tok[i] != '.')
      break;
    i++;
  }
  if (i < len && (tok[i] == 'e' || tok[i] == 'E')) {
    int eneg = 0;
    size_t e0;

    i++;
    if (i < len && (tok[i] == '+' || tok[i] == '-'))
      eneg = tok[i++] == '-';
    e0 = i;
    while (i < len && isdigit_c((unsigned char)tok[i])) {
      if (e < EXP_CAP)
        e = e * 10 + (tok[i] - '0');
      i++;
    }
    if (i == e0)
      return SL_EINVAL;
    if (eneg)
      e = -e;
  }
  if (i != len)
    return SL_EINVAL;
  kept = nsig - zrun;
  if (kept == 0) {
    v = 0;
  } else {
    shift = e - (int64_t)nfrac + (int64_t)zrun;
    if (shift < 0)
      return SL_EINVAL; /* a fraction */
    if ((int64_t)kept + shift > SIG_KEEP)
      return SL_ETOOBIG;
    for (size_t k = kept; k < (nsig < SIG_KEEP ? nsig : SIG_KEEP); k++)
      mag /= 10;
    v = mag;
    for (int64_t k = 0; k < shift; k++) {
      if (v > UINT64_MAX / 10)
        return SL_ETOOBIG;
      v *= 10;
    }
  }
  if (v > (uint64_t)INT64_MAX + (neg ? 1u : 0u))
    return SL_ETOOBIG;
  {
    int64_t sv = neg ? (v == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)v) : (int64_t)v;

    if (sv < lo || sv > hi)
      return SL_ETOOBIG;
    *out = sv;
  }
  return 0;
}

int sl__json_double(const char *tok, size_t len, double *out) {
  char tmp[64];
  char *end;
  double v;

  if (len == 0 || len >= sizeof(tmp))
    return SL_EINVAL;
  memcpy(tmp, tok, len);
  tmp[len] = '\0';
  if (!(tmp[0] == '-' || isdigit_c((unsigned char)tmp[0])))
    return SL_EINVAL;
  errno = 0;
  v = strtod(tmp, &end);
  if (*end != '\0' || !isfinite(v))
    return SL_EINVAL;
  *out = v;
  return 0;
}

int sl__json_put_str(sl_buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  size_t run = 0; /* start of the pending run of bytes that need no escape */
  int rc = sl__buf_putc(b, '"');

  while (rc == 0 && i < n) {
    unsigned char c = p[i];
    char esc[7];
    size_t elen = 0;
    size_t step = 1;

    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      elen = 2;
    } else if (c < 0x20) {
      esc[0] = '\\';
      switch (c) {
      case '\n': esc[1] = 'n'; elen = 2; break;
      case '\r': esc[1] = 'r'; elen = 2; break;
      case '\t': esc[1] = 't'; elen = 2; break;
      default:
        memcpy(esc + 1, "u00", 3);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        elen = 6;
      }
    } else if (c >= 0x80) {
      step = sl__utf8_seq(p + i, n - i);
      if (step == 0) {
        memcpy(esc, "\xef\xbf\xbd", 3); /* U+FFFD */
        elen = 3;
        step = 1;
      }
    }
    if (elen == 0) {
      i += step;
      continue;
    }
    rc = sl__buf_append(b, p + run, i - run);
    if (rc == 0)
      rc = sl__buf_append(b, esc, elen);
    i += step;
    run = i;
  }
  if (rc == 0)
    rc = sl__buf_append(b, p + run, i - run);
  if (rc == 0)
    rc = sl__buf_putc(b, '"');
  return rc;
}
