/*
 * sluice: a distributed job runner on Redis Streams.
 *
 * The public API of libsluice, in four headers; this one is the umbrella
 * and holds what they share (version, errors, limits, sl_free):
 *
 *   sluice/client.h  producers and administrators: connect, submit and
 *                    follow batches, dead letters, limits, statistics
 *   sluice/worker.h  a worker: options, lifecycle, exec mappings, grants,
 *                    handler registration, signals
 *   sluice/job.h     the handler contract: what a handler may read of a job
 *                    and how it ends it
 *
 * Producers open a client (sl_client_open), build a batch of items
 * (sl_batch_new, sl_batch_add) and submit it (sl_batch_submit). Workers
 * (sl_worker_new, sl_worker_run) take the items from the queue's streams and
 * run them through handlers: the built-in `http`, exec mappings, the
 * development handlers `noop` and `sleep`, or C handlers that an embedding
 * program registers (sl_worker_register). Including any of the four headers
 * includes them all.
 *
 * Conventions (the house style, see docs/ARCHITECTURE.md):
 * - Functions returning int return 0 on success and a negative SL_E* code on
 *   failure; sl_strerror() names the code, and the object that failed keeps
 *   the real cause (sl_client_errstr, the errbuf of constructors).
 * - Strings passed in are copied. A returned `const char *` is borrowed from
 *   the object it came from and valid until the next call on that object.
 * - Everything allocated by the library and handed to the caller is released
 *   with sl_free(). sl_x_free(NULL) and sl_x_close(NULL) are no-ops.
 * - Callbacks are called exactly once unless documented otherwise, and the
 *   pointers they receive are valid only during the callback.
 */
#ifndef SLUICE_SLUICE_H
#define SLUICE_SLUICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_VERSION_STRING "0.1.0"

#if defined(SL_BUILDING_LIB)
#define SL_EXTERN __attribute__((visibility("default")))
#else
#define SL_EXTERN
#endif

/* ---- Errors ---- */

#define SL_OK 0
#define SL_ENOMEM -1      /* out of memory */
#define SL_EINVAL -2      /* invalid argument or input */
#define SL_ECONN -3       /* cannot reach Redis, or the connection broke */
#define SL_EREDIS -4      /* Redis answered with an error */
#define SL_ENOTFOUND -5   /* no such batch (or it expired) */
#define SL_EEXIST -6      /* already exists */
#define SL_ECANCELED -7   /* the operation was cancelled (shutdown, cancelled batch) */
#define SL_EPROTO -8      /* Redis answered something sluice did not expect */
#define SL_ETOOBIG -9     /* a size limit was exceeded */
#define SL_EIO -10        /* an I/O error reading input or talking to a child */
#define SL_ETIMEDOUT -11  /* a deadline passed */
#define SL_EAGAIN -12     /* the state kept changing under the operation: run it again */

/* A short description of an SL_E* code ("cannot reach Redis"). Never NULL. */
SL_EXTERN const char *sl_strerror(int code);
/* The code's name ("SL_ECONN"). Never NULL. */
SL_EXTERN const char *sl_err_name(int code);

/* Memory handed out by the library (JSON strings, ids) is released with this. */
SL_EXTERN void sl_free(void *p);

/* ---- Limits (bytes unless named otherwise) ---- */

#define SL_ITEM_MAX_LINE (1024 * 1024)   /* one JSON Lines item, bytes */
#define SL_ITEM_MAX_PAYLOAD (512 * 1024) /* an item's payload, bytes */
#define SL_ITEM_MAX_DEPTH 64             /* nesting of arrays and objects */
#define SL_ITEM_MAX_ID 128               /* an item id, bytes */
#define SL_NAME_MAX 64                   /* queue, type and batch names, bytes */
#define SL_DEDUPE_MAX 256                /* a dedupe key, bytes */
#define SL_IDEM_KEY_MAX 256              /* an idempotency key, bytes */
#define SL_RESULT_MAX (1024 * 1024)      /* an item's result in its results line, bytes (once escaped) */

/* Opaque objects, defined by the library. */
typedef struct sl_client sl_client_t;
typedef struct sl_batch sl_batch_t;
typedef struct sl_worker sl_worker_t;
typedef struct sl_job sl_job_t;

#ifdef __cplusplus
}
#endif

#include <sluice/client.h>
#include <sluice/job.h>
#include <sluice/worker.h>

#endif /* SLUICE_SLUICE_H */
