/*
 * Strict JSON scanning and string escaping; see json.h.
 *
 * The scanner is a recursive descent over the grammar of RFC 8259 with an
 * explicit depth limit (so recursion is bounded by SL_ITEM_MAX_DEPTH), and a
 * UTF-8 decoder that rejects overlong forms, surrogates and code points past
 * U+10FFFF. It allocates only to track the keys of very large objects
 * (sl__json_validate_strict refuses a key given twice in one object).
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"

/* A key of an object being scanned, for the duplicate check. */
typedef struct key {
  uint64_t hash; /* of the key's decoded text */
  size_t off;    /* offset of its opening quote */
  size_t len;    /* length of the token with its quotes, bytes */
} key;

#define KEYS_ON_STACK 64   /* keys tracked without allocating */
#define KEYS_MAX (1 << 20) /* keys of all open objects at once */

typedef struct scan {
  const unsigned char *s; /* the text */
  size_t len;             /* its length, bytes */
  size_t pos;             /* next byte to read */
  int depth;              /* current nesting */
  int maxdepth;           /* the most nesting allowed */
  char *err;              /* message out */
  size_t errlen;          /* its size */
  int nodup;              /* refuse a key given twice in one object */
  key *keys;              /* keys of the open objects, innermost last */
  size_t nkeys;           /* used */
  size_t capkeys;         /* allocated (KEYS_ON_STACK: the caller's array) */
  key *heap;              /* keys when grown past the stack array, or NULL */
} scan;

static int fail(scan *sc, const char *msg) {
  snprintf(sc->err, sc->errlen, "%s", msg);
  return -1;
}

static void skip_ws(scan *sc) {
  while (sc->pos < sc->len) {
    unsigned char c = sc->s[sc->pos];

    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
      break;
    sc->pos++;
  }
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, size_t left) {
  unsigned char c = p[0];
  size_t n;
  uint32_t cp;

  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (left < n)
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

static uint32_t hex4(const char *p) {
  uint32_t v = 0;

  for (int i = 0; i < 4; i++) {
    char c = p[i];

    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (uint32_t)(c - 'a' + 10);
    else
      v |= (uint32_t)(c - 'A' + 10);
  }
  return v;
}

/* 1 when four hex digits start at text offset k. */
static int hex4_at(const scan *sc, size_t k) {
  for (size_t i = 0; i < 4; i++) {
    if (k + i >= sc->len || strchr("0123456789abcdefABCDEF", sc->s[k + i]) == NULL || sc->s[k + i] == '\0')
      return 0;
  }
  return 1;
}

static int scan_string(scan *sc) {
  sc->pos++; /* opening quote */
  while (sc->pos < sc->len) {
    unsigned char c = sc->s[sc->pos];

    if (c == '"') {
      sc->pos++;
      return 0;
    }
    if (c < 0x20)
      return fail(sc, "raw control byte inside a string (escape it, e.g. \\n)");
    if (c == '\\') {
      unsigned char e;

      if (sc->pos + 1 >= sc->len)
        return fail(sc, "unterminated string");
      e = sc->s[sc->pos + 1];
      if (e == 'u') {
        uint32_t cp;

        if (!hex4_at(sc, sc->pos + 2))
          return fail(sc, "bad \\u escape in string (expected 4 hex digits)");
        cp = hex4((const char *)sc->s + sc->pos + 2);
        if (cp >= 0xdc00 && cp <= 0xdfff)
          return fail(sc, "a lone UTF-16 surrogate (\\uDC00-\\uDFFF without a high one before it) is not a character");
        if (cp >= 0xd800 && cp <= 0xdbff) {
          uint32_t lo;

          if (sc->pos + 7 >= sc->len || sc->s[sc->pos + 6] != '\\' || sc->s[sc->pos + 7] != 'u' ||
              !hex4_at(sc, sc->pos + 8) || (lo = hex4((const char *)sc->s + sc->pos + 8)) < 0xdc00 || lo > 0xdfff)
            return fail(sc, "a lone UTF-16 surrogate (\\uD800-\\uDBFF without a low one after it) is not a character");
          sc->pos += 6;
        }
        sc->pos += 6;
      } else if (strchr("\"\\/bfnrt", e) != NULL && e != '\0') {
        sc->pos += 2;
      } else {
        return fail(sc, "bad escape in string");
      }
      continue;
    }
    if (c >= 0x80) {
      size_t n = utf8_seq(sc->s + sc->pos, sc->len - sc->pos);

      if (n == 0)
        return fail(sc, "invalid UTF-8 in string");
      sc->pos += n;
      continue;
    }
    sc->pos++;
  }
  return fail(sc, "unterminated string");
}

static int is_digit(unsigned char c) {
  return c >= '0' && c <= '9';
}

static int scan_number(scan *sc) {
  size_t p = sc->pos;

  if (p < sc->len && sc->s[p] == '-')
    p++;
  if (p >= sc->len || !is_digit(sc->s[p])) {
    sc->pos = p;
    return fail(sc, "bad number");
  }
  if (sc->s[p] == '0') {
    p++;
  } else {
    while (p < sc->len && is_digit(sc->s[p]))
      p++;
  }
  if (p < sc->len && sc->s[p] == '.') {
    p++;
    if (p >= sc->len || !is_digit(sc->s[p])) {
      sc->pos = p;
      return fail(sc, "bad number (digits expected after '.')");
    }
    while (p < sc->len && is_digit(sc->s[p]))
      p++;
  }
  if (p < sc->len && (sc->s[p] == 'e' || sc->s[p] == 'E')) {
    p++;
    if (p < sc->len && (sc->s[p] == '+' || sc->s[p] == '-'))
      p++;
    if (p >= sc->len || !is_digit(sc->s[p])) {
      sc->pos = p;
      return fail(sc, "bad number (digits expected in exponent)");
    }
    while (p < sc->len && is_digit(sc->s[p]))
      p++;
  }
  sc->pos = p;
  return 0;
}

static int scan_word(scan *sc, const char *w) {
  size_t n = strlen(w);

  if (sc->len - sc->pos < n || memcmp(sc->s + sc->pos, w, n) != 0)
    return fail(sc, "unexpected character");
  sc->pos += n;
  return 0;
}

static int scan_value(scan *sc);

/* Appends the UTF-8 form of code point cp to b[*n] (at least 4 bytes free). */
static void utf8_put(uint32_t cp, unsigned char *b, size_t *n) {
  if (cp < 0x80) {
    b[(*n)++] = (unsigned char)cp;
  } else if (cp < 0x800) {
    b[(*n)++] = (unsigned char)(0xc0 | (cp >> 6));
    b[(*n)++] = (unsigned char)(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    b[(*n)++] = (unsigned char)(0xe0 | (cp >> 12));
    b[(*n)++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    b[(*n)++] = (unsigned char)(0x80 | (cp & 0x3f));
  } else {
    b[(*n)++] = (unsigned char)(0xf0 | (cp >> 18));
    b[(*n)++] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    b[(*n)++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    b[(*n)++] = (unsigned char)(0x80 | (cp & 0x3f));
  }
}

/* Decodes the next character of a scanned string token at tok[*i] (after
 * the opening quote) into b[0..*n); advances *i. */
static void next_char(const unsigned char *tok, size_t *i, unsigned char *b, size_t *n) {
  static const char from[] = "bfnrt\\\"/";
  static const char to[] = "\b\f\n\r\t\\\"/";
  unsigned char c = tok[*i];

  *n = 0;
  if (c != '\\') {
    b[(*n)++] = c;
    (*i)++;
    return;
  }
  c = tok[*i + 1];
  if (c == 'u') {
    uint32_t cp = hex4((const char *)tok + *i + 2);

    *i += 6;
    if (cp >= 0xd800 && cp <= 0xdbff) { /* scan_string checked the pair */
      cp = 0x10000 + ((cp - 0xd800) << 10) + (hex4((const char *)tok + *i + 2) - 0xdc00);
      *i += 6;
    }
    utf8_put(cp, b, n);
    return;
  }
  b[(*n)++] = (unsigned char)to[strchr(from, c) - from];
  *i += 2;
}

/* FNV-1a of a scanned key token's decoded text. */
static uint64_t key_hash(const unsigned char *tok, size_t len) {
  uint64_t h = 1469598103934665603ULL;
  size_t i = 1;

  while (i + 1 < len) {
    unsigned char b[4];
    size_t n;

    next_char(tok, &i, b, &n);
    for (size_t k = 0; k < n; k++) {
      h ^= b[k];
      h *= 1099511628211ULL;
    }
  }
  return h;
}

/* 1 when two scanned key tokens decode to the same text. The decoded bytes
 * are compared one by one: a raw "\xc3\xa9" decodes a byte at a time, its
 * escape "\u00e9" both bytes at once. */
static int key_equal(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen) {
  unsigned char ca[4];
  unsigned char cb[4];
  size_t i = 1;
  size_t j = 1;
  size_t na = 0; /* bytes in ca, pa of them compared */
  size_t nb = 0;
  size_t pa = 0;
  size_t pb = 0;

  if (alen == blen && memcmp(a, b, alen) == 0)
    return 1;
  for (;;) {
    if (pa == na && i + 1 < alen) {
      next_char(a, &i, ca, &na);
      pa = 0;
    }
    if (pb == nb && j + 1 < blen) {
      next_char(b, &j, cb, &nb);
      pb = 0;
    }
    if (pa == na || pb == nb)
      return pa == na && pb == nb; /* equal only if both ended */
    if (ca[pa++] != cb[pb++])
      return 0;
  }
}

static int cmp_key(const void *a, const void *b) {
  const key *x = a;
  const key *y = b;

  return x->hash < y->hash ? -1 : x->hash > y->hash;
}

/* Records a key of the innermost object (sc->nodup). */
static int push_key(scan *sc, size_t off) {
  if (sc->nkeys == sc->capkeys) {
    size_t ncap = sc->capkeys * 2;
    key *nk;

    if (ncap > KEYS_MAX)
      return fail(sc, "more keys in open objects than the limit of 1048576");
    nk = sl_malloc(ncap * sizeof(*nk));
    if (nk == NULL)
      return fail(sc, "out of memory");
    memcpy(nk, sc->keys, sc->nkeys * sizeof(*nk));
    sl_free(sc->heap);
    sc->keys = sc->heap = nk;
    sc->capkeys = ncap;
  }
  sc->keys[sc->nkeys].off = off;
  sc->keys[sc->nkeys].len = sc->pos - off;
  sc->keys[sc->nkeys].hash = key_hash(sc->s + off, sc->pos - off);
  sc->nkeys++;
  return 0;
}

/* Refuses a key given twice among keys[base..nkeys), the keys of the object
 * that just closed, and pops them. */
static int check_keys(scan *sc, size_t base) {
  key *k = sc->keys + base;
  size_t m = sc->nkeys - base;

  if (m > 1)
    qsort(k, m, sizeof(*k), cmp_key);
  for (size_t i = 1; i < m; i++) {
    for (size_t j = i; j > 0 && k[j - 1].hash == k[i].hash; j--) {
      if (key_equal(sc->s + k[i].off, k[i].len, sc->s + k[j - 1].off, k[j - 1].len)) {
        snprintf(sc->err, sc->errlen, "key %.*s appears twice in one object", (int)(k[i].len > 60 ? 60 : k[i].len),
                 (const char *)sc->s + k[i].off);
        sc->pos = k[i].off > k[j - 1].off ? k[i].off : k[j - 1].off;
        return -1;
      }
    }
  }
  sc->nkeys = base;
  return 0;
}

static int scan_container(scan *sc, unsigned char close) {
  int first = 1;
  size_t base = sc->nkeys;

  if (++sc->depth > sc->maxdepth)
    return fail(sc, "nesting deeper than the limit");
  sc->pos++;
  skip_ws(sc);
  if (sc->pos < sc->len && sc->s[sc->pos] == close) {
    sc->pos++;
    sc->depth--;
    return 0;
  }
  for (;;) {
    if (!first) {
      skip_ws(sc);
      if (sc->pos >= sc->len)
        return fail(sc, close == '}' ? "unterminated object" : "unterminated array");
      if (sc->s[sc->pos] == close) {
        sc->pos++;
        sc->depth--;
        return sc->nodup && close == '}' ? check_keys(sc, base) : 0;
      }
      if (sc->s[sc->pos] != ',')
        return fail(sc, close == '}' ? "expected ',' or '}' in object" : "expected ',' or ']' in array");
      sc->pos++;
    }
    first = 0;
    skip_ws(sc);
    if (close == '}') {
      size_t k0 = sc->pos;

      if (sc->pos >= sc->len || sc->s[sc->pos] != '"')
        return fail(sc, "expected a string key in object");
      if (scan_string(sc) != 0)
        return -1;
      if (sc->nodup && push_key(sc, k0) != 0)
        return -1;
      skip_ws(sc);
      if (sc->pos >= sc->len || sc->s[sc->pos] != ':')
        return fail(sc, "expected ':' after object key");
      sc->pos++;
      skip_ws(sc);
    }
    if (scan_value(sc) != 0)
      return -1;
  }
}

static int scan_value(scan *sc) {
  unsigned char c;

  if (sc->pos >= sc->len)
    return fail(sc, "unexpected end of input");
  c = sc->s[sc->pos];
  switch (c) {
  case '{': return scan_container(sc, '}');
  case '[': return scan_container(sc, ']');
  case '"': return scan_string(sc);
  case 't': return scan_word(sc, "true");
  case 'f': return scan_word(sc, "false");
  case 'n': return scan_word(sc, "null");
  default:
    if (c == '-' || is_digit(c))
      return scan_number(sc);
    if (c < 0x20)
      return fail(sc, "raw control byte");
    if (c >= 0x80 && utf8_seq(sc->s + sc->pos, sc->len - sc->pos) == 0)
      return fail(sc, "invalid UTF-8");
    return fail(sc, "unexpected character");
  }
}

static int validate(const char *buf, size_t len, int maxdepth, int nodup, size_t *errpos, char *err,
                    size_t errlen) {
  key stack[KEYS_ON_STACK];
  scan sc = {(const unsigned char *)buf, len, 0, 0, maxdepth, err, errlen, nodup, stack, 0, KEYS_ON_STACK, NULL};
  int rc = 0;

  skip_ws(&sc);
  if (scan_value(&sc) != 0)
    goto bad;
  skip_ws(&sc);
  if (sc.pos != sc.len) {
    fail(&sc, sc.s[sc.pos] < 0x20 ? "raw control byte after the value"
                                  : "trailing characters after the JSON value");
    goto bad;
  }
  goto out;
bad:
  if (errpos != NULL)
    *errpos = sc.pos;
  rc = strcmp(err, "out of memory") == 0 ? SL_ENOMEM : SL_EINVAL;
out:
  sl_free(sc.heap);
  return rc;
}

int sl__json_validate(const char *buf, size_t len, int maxdepth, size_t *errpos, char *err,
                      size_t errlen) {
  return validate(buf, len, maxdepth, 0, errpos, err, errlen);
}

int sl__json_validate_strict(const char *buf, size_t len, int maxdepth, size_t *errpos, char *err,
                             size_t errlen) {
  return validate(buf, len, maxdepth, 1, errpos, err, errlen);
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
    size_t k = p[i] < 0x80 ? 1 : utf8_seq(p + i, n - i);

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
  if (back < n && p[n - 1 - back] >= 0xc0 && utf8_seq(p + n - 1 - back, back + 1) == 0)
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

int sl__json_elements(const char *buf, size_t len, sl_json_member *out, size_t max, size_t *n) {
  char err[64];
  scan sc = {(const unsigned char *)buf, len, 0, 0, 1 << 30, err, sizeof(err), 0, NULL, 0, 0, NULL};
  size_t count = 0;

  skip_ws(&sc);
  if (sc.pos >= sc.len || sc.s[sc.pos] != '[')
    return SL_EINVAL;
  sc.pos++;
  for (;;) {
    size_t v0;

    skip_ws(&sc);
    if (sc.pos >= sc.len)
      return SL_EINVAL;
    if (sc.s[sc.pos] == ']')
      break;
    if (sc.s[sc.pos] == ',') {
      sc.pos++;
      skip_ws(&sc);
    }
    if (count == max)
      return SL_ETOOBIG;
    v0 = sc.pos;
    if (scan_value(&sc) != 0)
      return SL_EINVAL;
    out[count].key = NULL;
    out[count].keylen = 0;
    out[count].val = buf + v0;
    out[count].vallen = sc.pos - v0;
    count++;
  }
  *n = count;
  return 0;
}

int sl__json_members(const char *buf, size_t len, sl_json_member *out, size_t max, size_t *n) {
  char err[64];
  scan sc = {(const unsigned char *)buf, len, 0, 0, 1 << 30, err, sizeof(err), 0, NULL, 0, 0, NULL};
  size_t count = 0;

  skip_ws(&sc);
  if (sc.pos >= sc.len || sc.s[sc.pos] != '{')
    return SL_EINVAL;
  sc.pos++;
  for (;;) {
    size_t k0;
    size_t v0;

    skip_ws(&sc);
    if (sc.pos >= sc.len)
      return SL_EINVAL;
    if (sc.s[sc.pos] == '}')
      break;
    if (sc.s[sc.pos] == ',') {
      sc.pos++;
      skip_ws(&sc);
    }
    k0 = sc.pos;
    if (sc.pos >= sc.len || sc.s[sc.pos] != '"' || scan_string(&sc) != 0)
      return SL_EINVAL;
    if (count == max)
      return SL_ETOOBIG;
    out[count].key = buf + k0 + 1;
    out[count].keylen = sc.pos - k0 - 2;
    skip_ws(&sc);
    if (sc.pos >= sc.len || sc.s[sc.pos] != ':')
      return SL_EINVAL;
    sc.pos++;
    skip_ws(&sc);
    v0 = sc.pos;
    if (scan_value(&sc) != 0)
      return SL_EINVAL;
    out[count].val = buf + v0;
    out[count].vallen = sc.pos - v0;
    count++;
  }
  *n = count;
  return 0;
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
      cp = hex4(tok + i + 1);
      i += 4;
      if (cp >= 0xd800 && cp <= 0xdbff && i + 6 < len && tok[i + 1] == '\\' && tok[i + 2] == 'u') {
        uint32_t lo = hex4(tok + i + 3);

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
  size_t digits;
  int neg = 0;
  uint64_t mag = 0;
  int overflow = 0;

  /* Exact decimal only: -?digits, optionally followed by .000 (zeros). */
  if (i < len && tok[i] == '-') {
    neg = 1;
    i++;
  }
  digits = i;
  while (i < len && is_digit((unsigned char)tok[i])) {
    unsigned d = (unsigned)(tok[i] - '0');

    if (mag > (UINT64_MAX - d) / 10)
      overflow = 1;
    else
      mag = mag * 10 + d;
    i++;
  }
  if (i == digits)
    return SL_EINVAL;
  if (i < len && tok[i] == '.') {
    i++;
    if (i == len)
      return SL_EINVAL;
    while (i < len && tok[i] == '0')
      i++;
  }
  if (i != len)
    return SL_EINVAL; /* a fraction, an exponent, or not a number */
  if (overflow || mag > (uint64_t)INT64_MAX + (neg ? 1u : 0u))
    return SL_ETOOBIG;
  {
    int64_t v = neg ? (mag == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;

    if (v < lo || v > hi)
      return SL_ETOOBIG;
    *out = v;
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
  if (!(tmp[0] == '-' || is_digit((unsigned char)tmp[0])))
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
      step = utf8_seq(p + i, n - i);
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
