/* The `http` item handler on libcurl multi + libuv; see http.c. */
#ifndef SL_HTTP_H
#define SL_HTTP_H

#include <stddef.h>

#include <sluice/sluice.h>

typedef struct sl_http sl_http;

/* Settings of a worker's http handler: allow is "host,*.example.com" (NULL:
 * any host), max_body the cap of a kept response body (bytes, 0: 1 MiB),
 * http_version 1 for HTTP/1.1 only, else HTTP/2 where offered. */
int sl__http_new(sl_worker_t *w, const char *allow, size_t max_body, int http_version, sl_http **out);
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
