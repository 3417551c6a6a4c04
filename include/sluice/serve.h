/*
 * sluice serve: the HTTP API of a sluice Redis (REST under /v1, live events
 * as server-sent events, /healthz and /readyz), for dashboards and for
 * producers that speak HTTP rather than Redis.
 *
 * One process, one libuv loop: HTTP connections are handled by
 * libmicrohttpd in its external epoll mode, its epoll descriptor watched by
 * the loop; calls that wait for Redis run on the loop's thread pool, each
 * with a blocking client of its own; every event stream of a queue shares
 * one subscription. See docs/SERVE.md.
 */
#ifndef SLUICE_SERVE_H
#define SLUICE_SERVE_H

#include <sluice/sluice.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_serve_opts {
  const char *redis_url;   /* the Redis to serve */
  const char *listen;      /* "HOST:PORT" (IPv4 or [IPv6]); NULL: 127.0.0.1:8080 */
  const char *tokens_file; /* bearer tokens (docs/SERVE.md), or NULL: no auth, loopback only */
  const char *const *queues; /* the queues served (NULL-terminated), or NULL: "default" */
  size_t max_body;         /* the largest request body, bytes; 0: 64 MiB */
  const char *cors_origin; /* allowed browser origin, or NULL: no CORS headers */
  unsigned idle_timeout_s; /* a connection idle or stalled this long is closed; 0: 30 s */
  unsigned keepalive_s;    /* a comment line on every event stream this often; 0: 15 s */
  int quiet;               /* 1: log only warnings and errors */
} sl_serve_opts;

/*
 * Runs the server until SIGTERM or SIGINT (open event streams are closed,
 * requests in flight finished), reloading the tokens file on SIGHUP.
 * Returns 0 after a clean stop, SL_EINVAL for bad options (the reason in
 * errbuf: a non-loopback --listen without a tokens file, a bad tokens
 * file, an address in use), SL_ENOMEM.
 */
SL_EXTERN int sl_serve_run(const sl_serve_opts *opts, char *errbuf, size_t errlen);

/* The line's hash for the tokens file: the SHA-256 of the token's n bytes
 * as 64 hex digits and a NUL. 0, or SL_ENOMEM. */
SL_EXTERN int sl_serve_hash_token(const char *token, size_t n, char out[65]);

#ifdef __cplusplus
}
#endif

#endif
