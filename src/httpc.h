/*
 * The worker's HTTP client: libcurl's multi interface driven by a libuv
 * loop, shared by the http item handler and completion webhooks.
 *
 * One CURLM per worker. It owns the policy every request of the worker
 * follows, whoever builds it: only http and https, no redirects, sockets
 * opened close-on-exec, the --http-allow origins, and the HTTP version
 * (HTTP/2 over TLS by ALPN; plain http is HTTP/1.1 unless prior knowledge
 * is asked for; a transfer waits for a connection that might multiplex only
 * to an origin already seen answering with HTTP/2, so nothing starts in
 * waves behind an HTTP/1.1 connection). Callers build the rest of their
 * transfer (URL, headers, body, callbacks) on an easy handle and hand it
 * over with sl__httpc_add; the done callback is called exactly once unless
 * the caller removes the transfer first.
 */
#ifndef SL_HTTPC_H
#define SL_HTTPC_H

#include <stddef.h>

#include <curl/curl.h>
#include <uv.h>

#include "allow.h"

typedef struct sl_httpc sl_httpc;

/* A finished transfer: removed from the client already, so the callee may
 * clean the easy handle up. `code` is libcurl's result; with an error,
 * sock_errno is the errno of a socket that could not be opened for it
 * (EMFILE, ENFILE: out of descriptors; see fdlimit.h), else 0. */
typedef void (*sl_httpc_done_fn)(void *ud, CURL *easy, CURLcode code, int sock_errno);

/* A POST of the worker's own (sl__httpc_post): status 0 on a transport
 * error; msg is readable ("HTTP 500: body excerpt", "curl: ..."). */
typedef void (*sl_httpc_post_fn)(void *ud, long status, const char *msg);

/*
 * A client for a worker: allow is the --http-allow list (allow.h; NULL or
 * "": any origin), http_version SL_HTTP_*, max_conns the most connections it
 * keeps and has open at once, per host and in all (the worker's
 * concurrency; more transfers wait for a connection). SL_EINVAL with a
 * message for a bad list.
 */
int sl__httpc_new(const char *allow, int http_version, int max_conns, sl_httpc **out, char *err, size_t errlen);
/* Creates the multi handle and its timer on `loop`. */
int sl__httpc_start(sl_httpc *c, uv_loop_t *loop);
/* 1 when requests may go to origin o (--http-allow). */
int sl__httpc_allowed(const sl_httpc *c, const sl_origin *o);
/* Sets the client's policy on a new easy handle for a request to o. */
void sl__httpc_prepare(sl_httpc *c, CURL *easy, const sl_origin *o);
/* Starts a transfer prepared for origin o. SL_ECANCELED once the client
 * closes, SL_EIO when libcurl refuses it, SL_ENOMEM; done is then never
 * called. A transfer still running when the client closes ends with
 * CURLE_ABORTED_BY_CALLBACK. */
int sl__httpc_add(sl_httpc *c, CURL *easy, const sl_origin *o, sl_httpc_done_fn done, void *ud);
/* Stops a transfer that is running; its done callback is not called. */
void sl__httpc_remove(sl_httpc *c, CURL *easy);
/* POSTs body to url with the given header lines (NULL-terminated) under the
 * client's policy; 30 s to finish, 10 s to connect. SL_EINVAL when the
 * origin is not allowed or url is not an http(s) URL (done is then not
 * called), SL_ECANCELED, SL_ENOMEM. */
int sl__httpc_post(sl_httpc *c, const char *url, const char *body, const char *const *headers, sl_httpc_post_fn done,
                   void *ud);
/* Closes the client (its connections, its timer); frees it once its handles
 * closed, or at once if it was never started. NULL is a no-op. */
void sl__httpc_close(sl_httpc *c);

#endif
