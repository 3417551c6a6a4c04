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
size_t sl__utf8_seq(const unsigned char *p, size_t left) {
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

uint32_t sl__json_hex4(const char *p) {
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
        cp = sl__json_hex4((const char *)sc->s + sc->pos + 2);
        if (cp >= 0xdc00 && cp <= 0xdfff)
          return fail(sc, "a lone UTF-16 surrogate (\\uDC00-\\uDFFF without a high one before it) is not a character");
        if (cp >= 0xd800 && cp <= 0xdbff) {
          uint32_t lo;

          if (sc->pos + 7 >= sc->len || sc->s[sc->pos + 6] != '\\' || sc->s[sc->pos + 7] != 'u' ||
              !hex4_at(sc, sc->pos + 8) || (lo = sl__json_hex4((const char *)sc->s + sc->pos + 8)) < 0xdc00 || lo > 0xdfff)
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
      size_t n = sl__utf8_seq(sc->s + sc->pos, sc->len - sc->pos);

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
    uint32_t cp = sl__json_hex4((const char *)tok + *i + 2);

    *i += 6;
    if (cp >= 0xd800 && cp <= 0xdbff) { /* scan_string checked the pair */
      cp = 0x10000 + ((cp - 0xd800) << 10) + (sl__json_hex4((const char *)tok + *i + 2) - 0xdc00);
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
    if (c >= 0x80 && sl__utf8_seq(sc->s + sc->pos, sc->len - sc->pos) == 0)
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

