/* The `http` item handler on libcurl multi + libuv; see http.c. */
#ifndef SL_HTTP_H
#define SL_HTTP_H

#include <stddef.h>

#include <sluice/sluice.h>

typedef struct sl_http sl_http;

/* Settings of a worker's http handler: allow is the --http-allow list of
 * origins (allow.h; NULL or "": any), methods the --http-methods allowed
 * beyond the standard ones ("PROPFIND,REPORT"; NULL: none), max_body the cap
 * of a kept response body (bytes, 0: 1 MiB), http_version SL_HTTP_*.
 * SL_EINVAL with a message for a bad list. */
int sl__http_new(sl_worker_t *w, const char *allow, const char *methods, size_t max_body, int http_version,
                 sl_http **out, char *err, size_t errlen);
/* Grants a secret to http items: "NAME" or "NAME@HOST" (secret.h). */
int sl__http_grant(sl_http *h, const char *spec, char *err, size_t errlen);
/* Creates the multi handle on the worker's loop and registers type "http". */
int sl__http_start(sl_http *h);
/* The outcome of a request of the worker's own: status 0 on a transport
 * error; msg is readable ("HTTP 500: body excerpt", "curl: ..."). */
typedef void (*sl_http_done_fn)(void *ud, long status, const char *msg);
/* POSTs body to url with the given headers (NULL-terminated) on the
 * worker's multi handle; done is called exactly once unless this fails. */
int sl__http_post(sl_http *h, const char *url, const char *body, const char *const *headers, sl_http_done_fn done,
                  void *ud);
/* Closes it (cached connections, timer); frees it when the timer closed. */
void sl__http_close(sl_http *h);

#endif
