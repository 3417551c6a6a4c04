/*
 * Bearer tokens of `sluice serve`.
 *
 * The tokens file holds no token, only its SHA-256: one line per token,
 *
 *   TENANT ROLE SHA256-HEX [batches=N/UNIT] [items=N/UNIT]
 *
 * TENANT is 1-64 characters of [A-Za-z0-9_.-], ROLE is read, submit or
 * admin, and the hash is of the token's bytes (`sluice serve --hash-token`
 * prints it for a token read from standard input). Blank lines and lines
 * starting with '#' are skipped; any other line that is not of this form
 * makes the whole file refused, naming the line, so a typo never opens or
 * closes a door silently. The optional quotas limit the tenant's submits
 * (api.c, lua/quota.lua): N batches, or N items, per UNIT (s, m, h or d,
 * optionally a multiple: 100/10s),
 * as a token bucket whose burst is N. A tenant's quota is the last one a
 * line of it gives. A request's token is hashed and compared with
 * every line in constant time (CRYPTO_memcmp), so neither a match nor its
 * position shows in the timing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "alloc.h"
#include "srv.h"

#define LINE_MAX_LEN 512 /* one line of the tokens file, bytes */
#define TENANT_CHARS "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.-"

typedef struct token {
  unsigned char hash[32];
  srv_principal who;
} token;

struct srv_auth {
  token *t;
  size_t n;
};

static int sha256(const char *s, size_t n, unsigned char out[32]) {
  unsigned int len = 0;

  return EVP_Digest(s, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32 ? 0 : -1;
}

static int unhex(const char *h, unsigned char out[32]) {
  for (int i = 0; i < 32; i++) {
    unsigned v = 0;

    for (int k = 0; k < 2; k++) {
      char c = h[2 * i + k];

      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= (unsigned)(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= (unsigned)(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= (unsigned)(c - 'A' + 10);
      else
        return -1;
    }
    out[i] = (unsigned char)v;
  }
  return h[64] == '\0' ? 0 : -1;
}

/* "N/UNIT" or "N/KUNIT" (100/10s) into an emission interval (us) and a
 * burst; -1 if it is not one. */
static int parse_quota(const char *v, uint64_t *t_us, uint64_t *burst) {
  char *end;
  char *u;
  unsigned long long n = strtoull(v, &end, 10);
  unsigned long long k = 1;
  uint64_t window;

  if (end == v || n < 1 || n > 1000000000ULL || end[0] != '/')
    return -1;
  if (end[1] >= '1' && end[1] <= '9') {
    k = strtoull(end + 1, &u, 10);
    if (k < 1 || k > 100000)
      return -1;
  } else {
    u = end + 1;
  }
  if (u[0] == '\0' || u[1] != '\0')
    return -1;
  switch (u[0]) {
  case 's': window = 1000000ULL; break;
  case 'm': window = 60ULL * 1000000; break;
  case 'h': window = 3600ULL * 1000000; break;
  case 'd': window = 86400ULL * 1000000; break;
  default: return -1;
  }
  window *= k;
  *t_us = window / n > 0 ? window / n : 1;
  *burst = n;
  return 0;
}

/* Parses one line into *t; NULL, or what is wrong with it. */
static const char *parse_line(char *line, token *t) {
  char *tenant = strtok(line, " \t");
  char *role = strtok(NULL, " \t");
  char *hash = strtok(NULL, " \t");
  char *q;

  memset(&t->who, 0, sizeof(t->who));
  if (tenant == NULL || role == NULL || hash == NULL)
    return "expected TENANT ROLE SHA256-HEX [batches=N/UNIT] [items=N/UNIT]";
  while ((q = strtok(NULL, " \t")) != NULL) {
    if (strncmp(q, "batches=", 8) == 0 && parse_quota(q + 8, &t->who.batches_t_us, &t->who.batches_burst) == 0)
      continue;
    if (strncmp(q, "items=", 6) == 0 && parse_quota(q + 6, &t->who.items_t_us, &t->who.items_burst) == 0)
      continue;
    return "after the hash only batches=N/UNIT and items=N/UNIT (UNIT s, m, h or d) may follow";
  }
  if (strlen(tenant) > SRV_TENANT_MAX || strspn(tenant, TENANT_CHARS) != strlen(tenant))
    return "the tenant must be 1-64 characters of [A-Za-z0-9_.-]";
  if (strcmp(role, "read") == 0)
    t->who.role = ROLE_READ;
  else if (strcmp(role, "submit") == 0)
    t->who.role = ROLE_SUBMIT;
  else if (strcmp(role, "admin") == 0)
    t->who.role = ROLE_ADMIN;
  else
    return "the role must be read, submit or admin";
  if (strlen(hash) != 64 || unhex(hash, t->hash) != 0)
    return "the hash must be 64 hex digits (sluice serve --hash-token prints it)";
  snprintf(t->who.tenant, sizeof(t->who.tenant), "%s", tenant);
  return NULL;
}

int srv_auth_load(const char *path, srv_auth **out, char *err, size_t errlen) {
  srv_auth *a = sl_malloc(sizeof(*a));
  char line[LINE_MAX_LEN + 2];
  size_t cap = 0;
  long lineno = 0;
  FILE *f;

  if (a == NULL)
    return SL_ENOMEM;
  a->t = NULL;
  a->n = 0;
  if (path == NULL) {
    *out = a;
    return 0;
  }
  f = fopen(path, "r");
  if (f == NULL) {
    snprintf(err, errlen, "cannot open the tokens file %s: %s", path, strerror(errno));
    sl_free(a);
    return SL_EINVAL;
  }
  while (fgets(line, sizeof(line), f) != NULL) {
    size_t len = strcspn(line, "\r\n");
    const char *why;
    char *p = line;

    lineno++;
    if (line[len] == '\0' && !feof(f)) {
      snprintf(err, errlen, "%s:%ld: a line over %d bytes", path, lineno, LINE_MAX_LEN);
      goto bad;
    }
    line[len] = '\0';
    p += strspn(p, " \t");
    if (*p == '\0' || *p == '#')
      continue;
    if (a->n == cap) {
      size_t nc = cap ? cap * 2 : 16;
      token *nt = sl_realloc(a->t, nc * sizeof(*nt));

      if (nt == NULL) {
        snprintf(err, errlen, "out of memory");
        goto bad;
      }
      a->t = nt;
      cap = nc;
    }
    why = parse_line(p, &a->t[a->n]);
    if (why != NULL) {
      snprintf(err, errlen, "%s:%ld: %s", path, lineno, why);
      goto bad;
    }
    a->n++;
  }
  /* a tenant's quota is the last its lines give: every token of it gets it */
  for (size_t k = 0; k < a->n; k++) {
    for (size_t i = a->n; i-- > 0;) {
      const srv_principal *q = &a->t[i].who;
      srv_principal *w = &a->t[k].who;

      if ((q->batches_t_us > 0 || q->items_t_us > 0) && strcmp(w->tenant, q->tenant) == 0) {
        w->batches_t_us = q->batches_t_us;
        w->batches_burst = q->batches_burst;
        w->items_t_us = q->items_t_us;
        w->items_burst = q->items_burst;
        break;
      }
    }
  }
  if (ferror(f)) {
    snprintf(err, errlen, "cannot read the tokens file %s: %s", path, strerror(errno));
    goto bad;
  }
  fclose(f);
  if (a->n == 0) {
    snprintf(err, errlen, "the tokens file %s has no token: nobody could call the server", path);
    srv_auth_free(a);
    return SL_EINVAL;
  }
  *out = a;
  return 0;
bad:
  fclose(f);
  srv_auth_free(a);
  return SL_EINVAL;
}

void srv_auth_free(srv_auth *a) {
  if (a == NULL)
    return;
  if (a->t != NULL)
    OPENSSL_cleanse(a->t, a->n * sizeof(*a->t));
  sl_free(a->t);
  sl_free(a);
}

int srv_auth_on(const srv_auth *a) {
  return a->n > 0;
}

int srv_auth_check(const srv_auth *a, const char *tok, srv_principal *p) {
  unsigned char h[32];
  size_t found = a->n;

  if (tok == NULL || sha256(tok, strlen(tok), h) != 0)
    return -1;
  for (size_t i = 0; i < a->n; i++) {
    /* every line is compared, so the time does not tell which matched */
    if (CRYPTO_memcmp(h, a->t[i].hash, sizeof(h)) == 0 && found == a->n)
      found = i;
  }
  if (found == a->n)
    return -1;
  *p = a->t[found].who;
  return 0;
}

int sl_serve_hash_token(const char *tok, size_t n, char out[65]) {
  unsigned char h[32];

  if (sha256(tok, n, h) != 0)
    return SL_ENOMEM;
  for (int i = 0; i < 32; i++)
    snprintf(out + 2 * i, 3, "%02x", h[i]);
  return 0;
}
