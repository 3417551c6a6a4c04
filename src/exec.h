/* `exec` items: worker-side mappings of item types to local commands, and
 * the children that run them; see exec.c. */
#ifndef SL_EXEC_H
#define SL_EXEC_H

#include <stddef.h>

#include <sluice/sluice.h>

/* Registers "TYPE=COMMAND" or "TYPE+base64=COMMAND" on the worker.
 * SL_EINVAL with a message for a bad mapping, SL_ENOMEM. */
int sl__exec_register(sl_worker_t *w, const char *mapping, char *err, size_t errlen);
/* Grants the environment variable `name` to every child (when the worker
 * has it set). SL_EINVAL with a message for a bad or SLUICE_* name. */
int sl__exec_env(sl_worker_t *w, const char *name, char *err, size_t errlen);
/* Sends SIGKILL to the process group of every live run, at once and
 * without allocating: for the second signal, right before _exit. */
void sl__exec_kill_all(sl_worker_t *w);
/* The worker closes its handles: closes the SIGCHLD handle; runs still
 * live finish with their own timers. */
void sl__exec_close(sl_worker_t *w);
/* Gives up every live run and waits (blocking, a few seconds at most) until
 * their process groups are gone; for sl_worker_free, off the loop. */
void sl__exec_reap_all(sl_worker_t *w);
/* Reaps what is left (sl__exec_reap_all) and frees the module's state. */
void sl__exec_free_all(sl_worker_t *w);

#endif
