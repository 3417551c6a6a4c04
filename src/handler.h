/*
 * Built-in handlers: the interface between a worker and the handlers it
 * carries.
 *
 * A built-in handler is a const table of four functions (like Redis's rio
 * backends): `open` at sl_worker_new creates its state and registers its
 * item types with sl_worker_register; `start` at sl_worker_run creates what
 * needs the loop; `close` when the worker closes its handles stops at once
 * (kills children, cancels transfers) and closes its own handles, so the
 * loop can run out; `free` releases the state. `kill_now`, optional, is
 * called right before a process exits without draining (the second signal):
 * whatever the handler started outside the process dies with it.
 *
 * Handlers see jobs only through the public contract (sluice/job.h) and the
 * worker only through this environment and the public worker API; they never
 * include a worker-internal header. src/builtins.c is the only file that
 * names them.
 */
#ifndef SL_HANDLER_H
#define SL_HANDLER_H

#include <stddef.h>

#include <uv.h>

#include <sluice/sluice.h>

typedef struct sl_httpc sl_httpc;

/* What a built-in handler gets from its worker at open. */
typedef struct sl_handler_env {
  sl_worker_t *worker;         /* for sl_worker_register and sl_worker_id; lives as long as the state */
  const sl_worker_opts *opts;  /* the worker's options; valid during open only */
  int concurrency;             /* the worker's slots (items at once) */
  sl_httpc *httpc;             /* the worker's HTTP client; lives as long as the state */
} sl_handler_env;

typedef struct sl_handler_vt {
  const char *name; /* "dev", "http", "exec" (for messages) */
  /* Creates the state and registers the handler's item types. 0, or an
   * SL_E* code with a message. */
  int (*open)(const sl_handler_env *env, void **state, char *err, size_t errlen);
  /* Creates the handles it needs on `loop`. May be NULL. */
  int (*start)(void *state, uv_loop_t *loop, char *err, size_t errlen);
  /* Stops at once and closes its handles (their callbacks run on the loop). May be NULL. */
  void (*close)(void *state);
  /* Releases the state; after close's callbacks ran, or when start was never called. */
  void (*free)(void *state);
  /* Kills what it started outside this process, synchronously, right before
   * an _exit. May be NULL. */
  void (*kill_now)(void *state);
} sl_handler_vt;

#endif
