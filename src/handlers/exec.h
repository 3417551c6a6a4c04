/* `exec` items: worker-side mappings of item types to local commands (see exec.c). */
#ifndef SL_HANDLERS_EXEC_H
#define SL_HANDLERS_EXEC_H

#include "handler.h"

extern const sl_handler_vt sl__handler_exec;

/* "TYPE=COMMAND" or "TYPE+base64=COMMAND": registers the type. SL_EINVAL
 * with a message. */
int sl__exec_map(void *state, const char *mapping, char *err, size_t errlen);
/* A variable of the worker passed on to every child. SL_EINVAL with a
 * message (not a name, a SLUICE_ name, too many). */
int sl__exec_env(void *state, const char *name, char *err, size_t errlen);

#endif
