/* `exec` items: worker-side mappings of item types to local commands; see exec.c. */
#ifndef SL_EXEC_H
#define SL_EXEC_H

#include <stddef.h>

#include <sluice/sluice.h>

/* Registers "TYPE=COMMAND" on the worker. SL_EINVAL with a message. */
int sl__exec_register(sl_worker_t *w, const char *mapping, char *err, size_t errlen);
/* Frees the worker's mappings. */
void sl__exec_free_all(sl_worker_t *w);

#endif
