/*
 * Starting `/bin/sh -c COMMAND` in a contained child (see forkexec.c and
 * spawn.h): own process group, PR_SET_PDEATHSIG, default signal
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
 * its process group id) and in *status_fd the read end of its status pipe
 * (non-blocking, close-on-exec; the caller closes it), without waiting for
 * the child to reach execve. Returns -1 with the reason in why and *code
 * SL_EIO (a failure before the child existed: retryable) or SL__ENOFDS (out
 * of file descriptors: fdlimit.h).
 */
pid_t sl__forkexec(const char *command, char *const *env, int in, int out, int err, int *status_fd, int *code,
                   char *why, size_t whylen);

/*
 * After the child has exited: 0 if it reached execve (the status pipe is at
 * end of file), else -1 with the step that failed and its errno in why
 * ("execve /bin/sh: No such file or directory") and *code SL__ENOFDS (out
 * of file descriptors in the child's set-up) or SL_EINVAL.
 */
int sl__forkexec_report(int status_fd, int *code, char *why, size_t whylen);

#endif
