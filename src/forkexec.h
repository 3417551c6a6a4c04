/*
 * Starting `/bin/sh -c COMMAND` in a contained child (see forkexec.c and
 * spawn.h): own session and process group, PR_SET_PDEATHSIG, default signal
 * dispositions and an empty mask, descriptors 0-2 only, exactly `env`, and
 * the descriptor limit the worker started with (fdlimit.h).
 */
#ifndef SL_FORKEXEC_H
#define SL_FORKEXEC_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Forks and execs the command with in, out and err as the child's 0, 1 and
 * 2 (they are closed here, in every case). Returns the child's pid (also
 * its process group id), or -1 with the reason in why and *code SL_EIO (a
 * failure before the child existed: retryable), SL__ENOFDS (out of file
 * descriptors, in the worker or in the child's set-up: fdlimit.h) or
 * SL_EINVAL (the child could not be set up or exec the shell: "execve
 * /bin/sh: No such file or directory"). Blocks only until the child has
 * exec'd.
 */
pid_t sl__forkexec(const char *command, char *const *env, int in, int out, int err, int *code, char *why,
                   size_t whylen);

#endif
