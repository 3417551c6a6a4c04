/*
 * The worker's built-in handlers, as one registry: development (noop,
 * sleep), http and exec. A worker opens them all at sl_worker_new and drives
 * them through the registry only; worker options that belong to one handler
 * (exec mappings and their environment, granted secrets) are passed on here.
 */
#ifndef SL_BUILTINS_H
#define SL_BUILTINS_H

#include "handler.h"

typedef struct sl_builtins sl_builtins;

/* Opens every built-in handler for a worker. */
int sl__builtins_open(const sl_handler_env *env, sl_builtins **out, char *err, size_t errlen);
/* Starts them on the worker's loop. */
int sl__builtins_start(sl_builtins *b, uv_loop_t *loop, char *err, size_t errlen);
/* Closes their handles (the worker closes). */
void sl__builtins_close(sl_builtins *b);
/* Kills what they started outside the process, right before an _exit. */
void sl__builtins_kill_now(sl_builtins *b);
/* Frees them (after close's callbacks, or if never started). NULL is a no-op. */
void sl__builtins_free(sl_builtins *b);

/* "TYPE=COMMAND" or "TYPE+base64=COMMAND": an exec mapping (sl_worker_exec). */
int sl__builtins_exec_map(sl_builtins *b, const char *mapping, char *err, size_t errlen);
/* A variable passed to exec children (sl_worker_exec_env). */
int sl__builtins_exec_env(sl_builtins *b, const char *name, char *err, size_t errlen);
/* "NAME" or "NAME@HOST": a secret granted to http items (sl_worker_grant). */
int sl__builtins_grant(sl_builtins *b, const char *spec, char *err, size_t errlen);

#endif
