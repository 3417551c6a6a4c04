/*
 * Secrets granted to a worker; see secret.h.
 */
#include "secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"

#define REF_OPEN "${env:"
#define REF_OPEN_LEN 6
#define EXPANDED_MAX (1024 * 1024) /* a string after expansion, bytes */

typedef struct grant {
  char name[SL_SECRET_NAME_MAX + 1]; /* the variable */
  char *value;                       /* its value when granted (wiped on free) */
  size_t len;                        /* bytes */
  int any_host;                      /* granted without a host: any origin */
  sl_allow *hosts;                   /* else the origins it may go to */
} grant;

struct sl_secrets {
  grant g[SL_SECRET_MAX]; /* the grants */
  size_t n;               /* used */
};

int sl__env_name_valid(const char *s, size_t n) {
  if (n == 0 || n > SL_SECRET_NAME_MAX || (s[0] >= '0' && s[0] <= '9'))
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];

    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
      return 0;
  }
  return 1;
}

static int reserved(const char *s, size_t n) {
  return n >= 7 && memcmp(s, "SLUICE_", 7) == 0;
}

/* Finds the next reference in s[0..n) from `from`: its start, the name and
 * the byte after the closing brace. Returns 1 when found, 0 when there is
 * none, -1 when one is malformed (*start is set). */
static int next_ref(const char *s, size_t n, size_t from, size_t *start, size_t *name, size_t *namelen,
                    size_t *after) {
  for (size_t i = from; i + REF_OPEN_LEN <= n; i++) {
    if (s[i] == '$' && memcmp(s + i, REF_OPEN, REF_OPEN_LEN) == 0) {
      const char *close = memchr(s + i + REF_OPEN_LEN, '}', n - i - REF_OPEN_LEN);

      *start = i;
      if (close == NULL)
        return -1;
      *name = i + REF_OPEN_LEN;
      *namelen = (size_t)(close - (s + *name));
      *after = (size_t)(close - s) + 1;
      return sl__env_name_valid(s + *name, *namelen) ? 1 : -1;
    }
  }
  return 0;
}

int sl__secret_refs_check(const char *s, size_t n, const char *where, char *err, size_t errlen) {
  size_t from = 0;

  for (;;) {
    size_t start;
    size_t name;
    size_t nl;
    size_t after;
    int k = next_ref(s, n, from, &start, &name, &nl, &after);

    if (k == 0)
      return 0;
    if (k < 0) {
      int shown = n - start > 40 ? 40 : (int)(n - start); /* s[0..n) may not end in NUL */

      snprintf(err, errlen,
               "%s: malformed secret reference \"%.*s\" (expected ${env:NAME}, NAME of [A-Za-z0-9_], at most %d "
               "bytes)", where, shown, s + start, SL_SECRET_NAME_MAX);
      return SL_EINVAL;
    }
    if (reserved(s + name, nl)) {
      snprintf(err, errlen, "%s: secret %.*s: names starting SLUICE_ are the worker's own and are never granted",
               where, (int)nl, s + name);
      return SL_EINVAL;
    }
    from = after;
  }
}

static grant *find(const sl_secrets *s, const char *name, size_t n) {
  for (size_t i = 0; s != NULL && i < s->n; i++) {
    if (strlen(s->g[i].name) == n && memcmp(s->g[i].name, name, n) == 0)
      return (grant *)&s->g[i];
  }
  return NULL;
}

int sl__secrets_grant(sl_secrets **sp, const char *spec, char *err, size_t errlen) {
  const char *at = strchr(spec, '@');
  size_t nl = at ? (size_t)(at - spec) : strlen(spec);
  sl_secrets *s = *sp;
  grant *g;
  const char *v;

  if (!sl__env_name_valid(spec, nl)) {
    snprintf(err, errlen, "--secret \"%.60s\": expected NAME or NAME@HOST, NAME of [A-Za-z0-9_] (at most %d bytes)",
             spec, SL_SECRET_NAME_MAX);
    return SL_EINVAL;
  }
  if (reserved(spec, nl)) {
    snprintf(err, errlen, "--secret %.*s: names starting SLUICE_ are the worker's own and can never be granted",
             (int)nl, spec);
    return SL_EINVAL;
  }
  if (at != NULL && at[1] == '\0') {
    snprintf(err, errlen, "--secret %.*s@: give a host after @, or no @", (int)nl, spec);
    return SL_EINVAL;
  }
  if (s == NULL) {
    s = sl_calloc(1, sizeof(*s));
    if (s == NULL) {
      snprintf(err, errlen, "out of memory");
      return SL_ENOMEM;
    }
    *sp = s;
  }
  g = find(s, spec, nl);
  if (g == NULL) {
    char name[SL_SECRET_NAME_MAX + 1];

    if (s->n == SL_SECRET_MAX) {
      snprintf(err, errlen, "--secret: at most %d secrets", SL_SECRET_MAX);
      return SL_EINVAL;
    }
    memcpy(name, spec, nl);
    name[nl] = '\0';
    v = getenv(name);
    if (v == NULL) {
      snprintf(err, errlen, "--secret %s: the variable is not set in the worker's environment", name);
      return SL_EINVAL;
    }
    g = &s->g[s->n];
    memset(g, 0, sizeof(*g));
    memcpy(g->name, name, nl + 1);
    g->len = strlen(v);
    g->value = sl_strndup(v, g->len);
    if (g->value == NULL) {
      snprintf(err, errlen, "out of memory");
      return SL_ENOMEM;
    }
    s->n++;
  }
  if (at == NULL) {
    g->any_host = 1;
    return 0;
  }
  {
    char what[SL_SECRET_NAME_MAX + 16];

    snprintf(what, sizeof(what), "--secret %s", g->name);
    return sl__allow_add(&g->hosts, at + 1, what, err, errlen);
  }
}

char *sl__secrets_expand(const sl_secrets *s, const char *text, const sl_origin *o, const char *where,
                         int *refused, char *err, size_t errlen) {
  size_t n = strlen(text);
  size_t from = 0;
  sl_buf out;
  int rc;

  *refused = 0;
  sl__buf_init(&out, EXPANDED_MAX);
  for (;;) {
    size_t start;
    size_t name;
    size_t nl;
    size_t after;
    int k = next_ref(text, n, from, &start, &name, &nl, &after);
    const grant *g;

    if (k == 0) {
      rc = sl__buf_append(&out, text + from, n - from);
      if (rc != 0)
        goto toobig;
      break;
    }
    if (k < 0) {
      snprintf(err, errlen, "%s: malformed secret reference \"%.40s\" (expected ${env:NAME})", where, text + start);
      goto fail;
    }
    g = reserved(text + name, nl) ? NULL : find(s, text + name, nl);
    if (g == NULL) {
      *refused = 1;
      snprintf(err, errlen, "%s: secret %.*s is not granted to this worker", where, (int)nl, text + name);
      goto fail;
    }
    if (!g->any_host && !sl__allow_match(g->hosts, o)) {
      char dest[SL_HOST_MAX + 32];
      char hosts[256];

      sl__origin_describe(o, dest, sizeof(dest));
      sl__allow_describe(g->hosts, hosts, sizeof(hosts));
      *refused = 1;
      snprintf(err, errlen, "%s: secret %s is not granted to this worker for %s (only for %s)", where, g->name, dest,
               hosts);
      goto fail;
    }
    rc = sl__buf_append(&out, text + from, start - from);
    if (rc == 0)
      rc = sl__buf_append(&out, g->value, g->len);
    if (rc != 0)
      goto toobig;
    from = after;
  }
  rc = out.p == NULL ? sl__buf_puts(&out, "") : 0;
  if (rc != 0)
    goto toobig;
  return sl__buf_take(&out);
toobig:
  if (rc == SL_ENOMEM) {
    *refused = -1;
    snprintf(err, errlen, "out of memory");
  }
  else
    snprintf(err, errlen, "%s: over %d bytes with its secrets", where, EXPANDED_MAX);
fail:
  sl__buf_free(&out);
  return NULL;
}

void sl__secrets_free(sl_secrets *s) {
  if (s == NULL)
    return;
  for (size_t i = 0; i < s->n; i++) {
    if (s->g[i].value != NULL) {
      volatile char *v = s->g[i].value;

      for (size_t k = 0; k < s->g[i].len; k++)
        v[k] = 0; /* no copy of a secret outlives the worker */
      sl_free(s->g[i].value);
    }
    sl__allow_free(s->g[i].hosts);
  }
  sl_free(s);
}
