/*
 * Origins and the operator's lists of them.
 *
 * An origin is what an HTTP request is sent to: scheme, host and port. A
 * worker's operator lists the origins its http items and webhooks may call
 * (--http-allow), and the hosts each granted secret may be sent to
 * (--secret NAME@HOST). A list is comma-separated patterns of the form
 * [SCHEME://]HOST[:PORT]:
 *
 *   api.example.com           http on port 80 or https on port 443
 *   api.example.com:8443      http or https on port 8443
 *   https://api.example.com   https on port 443 only
 *   http://127.0.0.1:8080     http on port 8080 only
 *   *.example.org             any subdomain of example.org (not example.org
 *                             itself), on the default port of its scheme
 *   [::1]:9000                an IPv6 address, written as in a URL
 *
 * A pattern without a port matches only the default port of the scheme, so
 * listing a host never opens its other ports. Hosts are compared without
 * case and with one trailing dot removed, as libcurl's URL parser gives them
 * (it writes numeric IPv4 forms such as 2130706433 or 127.1 as 127.0.0.1,
 * and IPv6 addresses in its own short form; patterns are kept as written,
 * so write IPv6 patterns in that form): names are matched, not the addresses
 * they resolve to, so 127.0.0.1 does not match a URL written with
 * "localhost". A list holds at most SL_ALLOW_MAX patterns.
 */
#ifndef SL_ALLOW_H
#define SL_ALLOW_H

#include <stddef.h>

#define SL_ALLOW_MAX 256     /* patterns in one list */
#define SL_HOST_MAX 255      /* a host name or bracketed address, bytes */

typedef struct sl_origin {
  char scheme[8];               /* "http" or "https" */
  char host[SL_HOST_MAX + 1];   /* lower case, no trailing dot; IPv6 in brackets */
  int port;                     /* explicit, or the scheme's default */
} sl_origin;

typedef struct sl_allow sl_allow;

/*
 * Parses a URL's origin. Only http:// and https:// URLs with a host are
 * accepted. Returns 0, or SL_EINVAL with the reason in err.
 */
int sl__origin_parse(const char *url, sl_origin *o, char *err, size_t errlen);
/* "https://api.example.com:8443" (default ports left out), into out. */
void sl__origin_describe(const sl_origin *o, char *out, size_t len);

/*
 * Adds the comma-separated patterns of `list` to *a (created when NULL).
 * `what` names the option in messages ("--http-allow"). Returns 0, SL_ENOMEM,
 * or SL_EINVAL with a message naming the bad pattern; on failure *a holds
 * the patterns added before it.
 */
int sl__allow_add(sl_allow **a, const char *list, const char *what, char *err, size_t errlen);
/* 1 when the origin matches a pattern of a (a NULL list matches nothing). */
int sl__allow_match(const sl_allow *a, const sl_origin *o);
/* The patterns as given, comma-separated, into out (for messages). */
void sl__allow_describe(const sl_allow *a, char *out, size_t len);
void sl__allow_free(sl_allow *a);

#endif
