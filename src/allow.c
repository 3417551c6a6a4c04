/*
 * Origins and the operator's lists of them; see allow.h.
 *
 * URLs are split by libcurl's own URL parser (curl_url), the one that sends
 * the request, so what is checked here is what is called.
 */
#include "allow.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include <sluice/sluice.h>

#include "alloc.h"

#define PATTERN_MAX 300 /* one pattern as written, bytes */

typedef struct pattern {
  char scheme[8];            /* "http", "https", or "" for either */
  int wildcard;              /* "*.example.org": host holds ".example.org" */
  char host[SL_HOST_MAX + 1]; /* lower case, no trailing dot */
  int port;                  /* 0: the scheme's default port */
  char text[PATTERN_MAX + 1]; /* as given, for messages */
} pattern;

struct sl_allow {
  pattern *p; /* the patterns */
  size_t n;   /* used */
  size_t cap; /* allocated */
};

static int default_port(const char *scheme) {
  return strcmp(scheme, "https") == 0 ? 443 : 80;
}

/* Lower-cases host[0..n) into out and drops one trailing dot. */
static int norm_host(const char *host, size_t n, char *out, size_t outlen) {
  if (n > 0 && host[n - 1] == '.')
    n--;
  if (n == 0 || n >= outlen)
    return -1;
  for (size_t i = 0; i < n; i++)
    out[i] = (char)tolower((unsigned char)host[i]);
  out[n] = '\0';
  return 0;
}

int sl__origin_parse(const char *url, sl_origin *o, char *err, size_t errlen) {
  CURLU *u = curl_url();
  char *scheme = NULL;
  char *host = NULL;
  char *port = NULL;
  int rc = SL_EINVAL;

  memset(o, 0, sizeof(*o));
  if (u == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
    snprintf(err, errlen, "not a URL");
    goto out;
  }
  if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
    snprintf(err, errlen, "scheme %.20s is not http or https", scheme);
    goto out;
  }
  if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
    snprintf(err, errlen, "the URL has no host");
    goto out;
  }
  if (norm_host(host, strlen(host), o->host, sizeof(o->host)) != 0) {
    snprintf(err, errlen, "the host is empty or longer than %d bytes", SL_HOST_MAX);
    goto out;
  }
  if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
    snprintf(err, errlen, "the URL has no usable port");
    goto out;
  }
  o->port = (int)strtol(port, NULL, 10);
  if (o->port < 1 || o->port > 65535) {
    snprintf(err, errlen, "port %.10s is out of range", port);
    goto out;
  }
  snprintf(o->scheme, sizeof(o->scheme), "%s", scheme);
  rc = 0;
out:
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return rc;
}

void sl__origin_describe(const sl_origin *o, char *out, size_t len) {
  if (o->port == default_port(o->scheme))
    snprintf(out, len, "%s://%s", o->scheme, o->host);
  else
    snprintf(out, len, "%s://%s:%d", o->scheme, o->host, o->port);
}

/* Parses one pattern p[0..n) into *pt. */
static int parse_pattern(const char *p, size_t n, pattern *pt, const char *what, char *err, size_t errlen) {
  const char *end = p + n;
  const char *h;
  const char *he;

  memset(pt, 0, sizeof(*pt));
  if (n > PATTERN_MAX) {
    snprintf(err, errlen, "%s: pattern \"%.40s...\" is longer than %d bytes", what, p, PATTERN_MAX);
    return SL_EINVAL;
  }
  memcpy(pt->text, p, n);
  pt->text[n] = '\0';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];

    if (c <= ' ' || c >= 0x7f || c == '@' || c == '?' || c == '#' || c == '\\') {
      snprintf(err, errlen, "%s: pattern \"%s\" holds a character a host pattern cannot (expected "
                            "[SCHEME://]HOST[:PORT], e.g. api.example.com:8443)", what, pt->text);
      return SL_EINVAL;
    }
  }
  if (n > 8 && strncasecmp(p, "https://", 8) == 0) {
    memcpy(pt->scheme, "https", 6);
    p += 8;
  } else if (n > 7 && strncasecmp(p, "http://", 7) == 0) {
    memcpy(pt->scheme, "http", 5);
    p += 7;
  } else if (strstr(pt->text, "://") != NULL) {
    snprintf(err, errlen, "%s: pattern \"%s\": only http:// and https:// can be named", what, pt->text);
    return SL_EINVAL;
  }
  if (end > p && end[-1] == '/')
    end--; /* "https://api.example.com/" */
  h = p;
  if (p < end && *p == '[') {
    he = memchr(p, ']', (size_t)(end - p));
    if (he == NULL) {
      snprintf(err, errlen, "%s: pattern \"%s\": an IPv6 address needs its closing ]", what, pt->text);
      return SL_EINVAL;
    }
    he++;
  } else {
    he = memchr(p, ':', (size_t)(end - p));
    if (he == NULL)
      he = end;
  }
  if (memchr(h, '/', (size_t)(end - h)) != NULL) {
    snprintf(err, errlen, "%s: pattern \"%s\": a host pattern has no path", what, pt->text);
    return SL_EINVAL;
  }
  if (he < end) {
    char *stop = NULL;
    long port;

    if (*he != ':' || he + 1 == end) {
      snprintf(err, errlen, "%s: pattern \"%s\": expected HOST:PORT", what, pt->text);
      return SL_EINVAL;
    }
    port = strtol(he + 1, &stop, 10);
    if (stop != end || port < 1 || port > 65535) {
      snprintf(err, errlen, "%s: pattern \"%s\": the port must be a number from 1 to 65535", what, pt->text);
      return SL_EINVAL;
    }
    pt->port = (int)port;
  }
  if (he - h >= 2 && h[0] == '*' && h[1] == '.') {
    pt->wildcard = 1;
    h++; /* keep the dot: ".example.org" */
  }
  if (memchr(h, '*', (size_t)(he - h)) != NULL ||
      norm_host(h, (size_t)(he - h), pt->host, sizeof(pt->host)) != 0 || (pt->wildcard && pt->host[1] == '\0')) {
    snprintf(err, errlen, "%s: pattern \"%s\": expected a host, \"*.\" and a domain, or an address", what,
             pt->text);
    return SL_EINVAL;
  }
  return 0;
}

int sl__allow_add(sl_allow **ap, const char *list, const char *what, char *err, size_t errlen) {
  sl_allow *a = *ap;
  const char *p = list;

  if (a == NULL) {
    a = sl_calloc(1, sizeof(*a));
    if (a == NULL) {
      snprintf(err, errlen, "out of memory");
      return SL_ENOMEM;
    }
    *ap = a;
  }
  while (*p != '\0') {
    size_t len = strcspn(p, ",");
    int rc;

    if (len > 0) {
      if (a->n == a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 8;
        pattern *np;

        if (a->n == SL_ALLOW_MAX) {
          snprintf(err, errlen, "%s: at most %d patterns", what, SL_ALLOW_MAX);
          return SL_EINVAL;
        }
        np = sl_realloc(a->p, ncap * sizeof(*np));
        if (np == NULL) {
          snprintf(err, errlen, "out of memory");
          return SL_ENOMEM;
        }
        a->p = np;
        a->cap = ncap;
      }
      rc = parse_pattern(p, len, &a->p[a->n], what, err, errlen);
      if (rc != 0)
        return rc;
      a->n++;
    }
    p += len + (p[len] == ',');
  }
  return 0;
}

int sl__allow_match(const sl_allow *a, const sl_origin *o) {
  size_t hl = strlen(o->host);

  for (size_t i = 0; a != NULL && i < a->n; i++) {
    const pattern *pt = &a->p[i];

    if (pt->scheme[0] != '\0' && strcmp(pt->scheme, o->scheme) != 0)
      continue;
    if (o->port != (pt->port != 0 ? pt->port : default_port(o->scheme)))
      continue;
    if (pt->wildcard) {
      size_t sl = strlen(pt->host);

      if (hl > sl && strcmp(o->host + hl - sl, pt->host) == 0)
        return 1;
    } else if (strcmp(o->host, pt->host) == 0) {
      return 1;
    }
  }
  return 0;
}

void sl__allow_describe(const sl_allow *a, char *out, size_t len) {
  size_t off = 0;

  if (len == 0)
    return;
  out[0] = '\0';
  for (size_t i = 0; a != NULL && i < a->n && off + 1 < len; i++) {
    int k = snprintf(out + off, len - off, "%s%s", i ? "," : "", a->p[i].text);

    if (k < 0)
      break;
    off += (size_t)k;
  }
}

void sl__allow_free(sl_allow *a) {
  if (a == NULL)
    return;
  sl_free(a->p);
  sl_free(a);
}
