/* Redis URL parsing; see url.h. */
#include "url.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = tolower(c);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* Copies s[0..n) decoding %XX; NULL on a bad escape (or OOM, *bad = 0). */
static char *pct_decode(const char *s, size_t n, int *bad) {
  char *out = sl_malloc(n + 1);
  size_t i;
  size_t o = 0;

  *bad = 0;
  if (out == NULL)
    return NULL;
  for (i = 0; i < n; i++) {
    if (s[i] == '%') {
      int h;
      int l;

      if (i + 2 >= n) {
        *bad = 1;
        sl_free(out);
        return NULL;
      }
      h = hexval((unsigned char)s[i + 1]);
      l = hexval((unsigned char)s[i + 2]);
      if (h < 0 || l < 0) {
        *bad = 1;
        sl_free(out);
        return NULL;
      }
      if (h == 0 && l == 0) {
        *bad = 1;
        sl_free(out);
        return NULL;
      }
      out[o++] = (char)(h * 16 + l);
      i += 2;
    } else {
      out[o++] = s[i];
    }
  }
  out[o] = '\0';
  return out;
}

static int parse_int(const char *s, size_t n, long lo, long hi, long *out) {
  char tmp[16];
  char *end;
  long v;

  if (n == 0 || n >= sizeof(tmp))
    return -1;
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)tmp[i]))
      return -1;
  }
  errno = 0;
  v = strtol(tmp, &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

#define FAIL(...)                                                                                  \
  do {                                                                                             \
    snprintf(err, errlen, __VA_ARGS__);                                                            \
    rc = SL_EINVAL;                                                                                \
    goto out;                                                                                      \
  } while (0)

int sl__url_parse(const char *s, sl_url *u, char *err, size_t errlen) {
  const char *p;
  const char *at;
  const char *rest;
  int is_unix;
  int rc = 0;
  int bad;
  long v;

  memset(u, 0, sizeof(*u));
  u->port = 6379;
  if (s == NULL || *s == '\0')
    FAIL("empty Redis URL");
  if (strncmp(s, "redis://", 8) == 0) {
    is_unix = 0;
    p = s + 8;
  } else if (strncmp(s, "redis+cluster://", 16) == 0) {
    is_unix = 0;
    u->cluster = 1;
    p = s + 16;
  } else if (strncmp(s, "unix://", 7) == 0) {
    is_unix = 1;
    p = s + 7;
  } else {
    FAIL("the Redis URL must start with redis://, redis+cluster:// or unix:// (as in redis://host:6379)");
  }

  /* userinfo: up to the last '@'; for redis:// passwords may hold '/', for
   * unix:// the '@' must come before the socket path. */
  at = strrchr(p, '@');
  if (is_unix && at != NULL && memchr(p, '/', (size_t)(at - p)) != NULL)
    at = NULL;
  if (at != NULL) {
    const char *colon = memchr(p, ':', (size_t)(at - p));

    if (colon != NULL) {
      if (colon > p) {
        u->user = pct_decode(p, (size_t)(colon - p), &bad);
        if (u->user == NULL)
          goto decode_fail;
      }
      u->password = pct_decode(colon + 1, (size_t)(at - colon - 1), &bad);
      if (u->password == NULL)
        goto decode_fail;
    } else if (at > p) {
      /* "redis://secret@host": a lone userinfo is the password (AUTH pass). */
      u->password = pct_decode(p, (size_t)(at - p), &bad);
      if (u->password == NULL)
        goto decode_fail;
    }
    p = at + 1;
  }

  if (is_unix) {
    const char *q = strchr(p, '?');
    size_t n = q ? (size_t)(q - p) : strlen(p);

    if (n == 0 || p[0] != '/')
      FAIL("unix socket URL needs an absolute path, as in unix:///run/redis.sock");
    u->path = sl_strndup(p, n);
    if (u->path == NULL)
      goto oom;
    if (q != NULL) {
      if (strncmp(q, "?db=", 4) != 0 || parse_int(q + 4, strlen(q + 4), 0, 1000000, &v) != 0)
        FAIL("bad query \"%s\" in unix URL (only ?db=N is understood)", q);
      u->db = (int)v;
    }
    return 0;
  }

  /* host[:port][/db] ; IPv6 as [::1]; a cluster: host:port,host:port,... */
  rest = p;
  for (;;) {
    char *host = NULL;
    long port = 6379;

    if (*rest == '[') {
      const char *close = strchr(rest, ']');

      if (close == NULL)
        FAIL("unterminated [ in the host of the Redis URL");
      if (close == rest + 1)
        FAIL("empty [] host in the Redis URL");
      host = sl_strndup(rest + 1, (size_t)(close - rest - 1));
      if (host == NULL)
        goto oom;
      rest = close + 1;
    } else {
      size_t n = strcspn(rest, u->cluster ? ":/," : ":/");

      if (n == 0)
        FAIL("the Redis URL has no host (as in %s)",
             u->cluster ? "redis+cluster://host1:6379,host2:6379" : "redis://host:6379");
      for (size_t i = 0; i < n; i++) {
        if (strchr("?#[]@ ", rest[i]) != NULL)
          FAIL("unexpected '%c' in the host of the Redis URL (a db goes after a slash: redis://host:6379/3)",
               rest[i]);
      }
      host = sl_strndup(rest, n);
      if (host == NULL)
        goto oom;
      rest += n;
    }
    if (*rest == ':') {
      size_t n = strcspn(rest + 1, u->cluster ? "/," : "/");

      if (parse_int(rest + 1, n, 1, 65535, &v) != 0) {
        sl_free(host);
        FAIL("bad port \"%.*s\" in Redis URL (expected 1-65535)", (int)n, rest + 1);
      }
      port = v;
      rest += 1 + n;
    }
    if (u->nseeds == SL_URL_SEEDS_MAX) {
      sl_free(host);
      FAIL("more than %d nodes in the Redis Cluster URL", SL_URL_SEEDS_MAX);
    }
    u->seed_host[u->nseeds] = host;
    u->seed_port[u->nseeds++] = (int)port;
    if (!u->cluster || *rest != ',')
      break;
    rest++;
  }
  u->host = sl_strdup(u->seed_host[0]);
  if (u->host == NULL)
    goto oom;
  u->port = u->seed_port[0];
  if (u->cluster && *rest == '/' && rest[1] != '\0' && strcmp(rest, "/0") != 0)
    FAIL("a Redis Cluster has database 0 only: drop \"%s\" from the URL", rest);
  if (*rest == '/') {
    rest++;
    if (*rest != '\0') {
      if (parse_int(rest, strlen(rest), 0, 1000000, &v) != 0)
        FAIL("bad database \"%s\" in Redis URL (expected a number)", rest);
      u->db = (int)v;
    }
  } else if (*rest != '\0') {
    FAIL("unexpected \"%s\" in Redis URL", rest);
  }
  return 0;

decode_fail:
  if (!bad)
    goto oom;
  FAIL("bad %%-escape in the user or password of the Redis URL (%%XX with two hex digits, not %%00)");
oom:
  snprintf(err, errlen, "out of memory");
  rc = SL_ENOMEM;
out:
  sl__url_free(u);
  return rc;
}

void sl__url_free(sl_url *u) {
  for (int i = 0; i < u->nseeds; i++)
    sl_free(u->seed_host[i]);
  u->nseeds = 0;
  sl_free(u->host);
  sl_free(u->path);
  sl_free(u->user);
  sl_free(u->password);
  memset(u, 0, sizeof(*u));
}

void sl__url_describe(const sl_url *u, char *out, size_t len) {
  const char *user = u->user ? u->user : "";
  const char *auth = u->password ? ":***@" : (u->user ? "@" : "");

  if (u->path != NULL)
    snprintf(out, len, "unix://%s%s%s", user, auth, u->path);
  else
    snprintf(out, len, strchr(u->host, ':') ? "redis://%s%s[%s]:%d/%d" : "redis://%s%s%s:%d/%d", user, auth,
             u->host, u->port, u->db);
}
