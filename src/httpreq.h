/*
 * The payload of an `http` item: the one definition of a valid request.
 *
 * A producer is untrusted and may write in any language, so the same checks
 * run twice: at submit (item.c: the line is refused, exit 2, with the field
 * named) and in the worker just before the request is built (handlers/http.c: the
 * item fails for good, with the field named). Requests are built from the
 * checked parts, never pasted: nothing a producer writes can end a header
 * line, start a second request on a reused connection, or change the framing.
 *
 *   url              http:// or https:// with a host; printable ASCII, at
 *                    most SL_HTTP_URL_MAX bytes
 *   method           an RFC 9110 token; GET, HEAD, POST, PUT, PATCH, DELETE
 *                    and OPTIONS everywhere, other tokens only on workers
 *                    started with --http-methods
 *   headers          an object of at most SL_HTTP_HEADERS_MAX string values:
 *                    names are tokens (compared without case: none twice),
 *                    values hold no CR, LF, NUL or other control byte but
 *                    tab; Host, Content-Length, Transfer-Encoding,
 *                    Connection and the other hop-by-hop headers belong to
 *                    the worker and cannot be set
 *   body | json      a string sent as it is, or any JSON value (not both)
 *   keep_headers     an array of at most SL_HTTP_KEEP_MAX header names
 *   idempotency_key  a header value (or an Idempotency-Key header; not both)
 *   timeout_ms       the request's own time limit, 1-86400000 ms (the
 *                    item's timeout_ms still applies)
 *   metrics          an object of at most SL_HTTP_METRICS_MAX names (as
 *                    sl_job_metric's) to JSON paths into a 2xx JSON
 *                    response, "$.usage.cost" or "$.data[0].n": each
 *                    number found there is the item's metric of that name
 *
 * Lengths over a limit are an error, never cut. ${env:NAME} references in
 * header values, the body and the strings of json are checked for their
 * form here (secret.h) and resolved by the worker.
 */
#ifndef SL_HTTPREQ_H
#define SL_HTTPREQ_H

#include <stddef.h>
#include <stdint.h>

#include "allow.h"
#include "jsonpath.h"
#include "secret.h"

#define SL_HTTP_URL_MAX 8192           /* a URL, bytes */
#define SL_HTTP_METHOD_MAX 32          /* a method, bytes */
#define SL_HTTP_HEADERS_MAX 64         /* headers of one request */
#define SL_HTTP_NAME_MAX 256           /* a header name, bytes */
#define SL_HTTP_VALUE_MAX 8192         /* a header value (secrets resolved), bytes */
#define SL_HTTP_KEEP_MAX 32            /* names in keep_headers */
#define SL_HTTP_METRICS_MAX 16         /* names in metrics */
#define SL_HTTP_PATH_MAX SL_JSON_PATH_MAX /* bytes of a metric's JSON path */
#define SL_HTTP_IKEY_MAX 256           /* an idempotency key, bytes */

typedef struct sl_httpreq {
  char method[SL_HTTP_METHOD_MAX + 1]; /* as given, or "" for the default */
  char *url;                           /* the URL, decoded */
  sl_origin origin;                    /* its scheme, host and port */
  size_t nheaders;                     /* headers given */
  char *name[SL_HTTP_HEADERS_MAX];     /* their names, as given */
  char *value[SL_HTTP_HEADERS_MAX];    /* their values, secrets not resolved */
  char *body;                          /* `body`, decoded, or NULL */
  size_t body_len;                     /* its length, bytes (it may hold NUL) */
  const char *json;                    /* `json`'s raw text inside the payload, or NULL */
  size_t json_len;                     /* its length, bytes */
  size_t nkeep;                        /* names in keep_headers */
  char *keep[SL_HTTP_KEEP_MAX];        /* lower case */
  char *ikey;                          /* idempotency_key, or NULL */
  size_t nmetrics;                     /* names in metrics */
  char *metric[SL_HTTP_METRICS_MAX];   /* their names */
  char *path[SL_HTTP_METRICS_MAX];     /* and JSON paths */
  int64_t timeout_ms;                  /* timeout_ms, or 0 */
} sl_httpreq;

/*
 * Checks the payload text p[0..len) of an http item and fills *r (owned by
 * r, sl__httpreq_free; borrowed pointers point into p). Returns 0, SL_ENOMEM,
 * or SL_EINVAL / SL_ETOOBIG with a message naming the field, e.g.
 * `field "payload.headers.X-Note": the value holds a line break (CR or LF)`.
 */
int sl__httpreq_parse(const char *p, size_t len, sl_httpreq *r, char *err, size_t errlen);
void sl__httpreq_free(sl_httpreq *r);

/* 1 when s[0..n) is an RFC 9110 token (method, header name). */
int sl__http_token(const char *s, size_t n);
/* 1 when m is one of the methods every worker allows. */
int sl__http_method_standard(const char *m);
/* Checks a header value v[0..n) (after secrets were resolved, too):
 * 0, or SL_EINVAL with "WHERE: the value holds ...". */
int sl__http_value_check(const char *v, size_t n, const char *where, char *err, size_t errlen);

/*
 * The request body for `json`: its raw text with ${env:NAME} references in
 * string values resolved for origin o and the strings written again as JSON
 * (keys and everything else byte for byte). NULL on failure, with *refused
 * as sl__secrets_expand sets it (1 not granted, -1 out of memory).
 */
char *sl__httpreq_json_body(const sl_httpreq *r, const sl_secrets *s, int *refused, size_t *len, char *err,
                            size_t errlen);

#endif
