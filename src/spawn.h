/*
 * Contained children: a command run so that nothing of the worker leaks
 * into it and nothing of it outlives its attempt.
 *
 * The child runs `/bin/sh -c COMMAND` after a fork on the loop thread:
 *   - its own process group (setpgid), killed as a whole, in the worker's
 *     session (a session of its own would also be a scheduling group of its
 *     own: see forkexec.c);
 *   - PR_SET_PDEATHSIG SIGKILL: the direct child dies with the forking
 *     thread (the loop thread), even when the worker is killed with SIGKILL;
 *   - descriptors 0, 1 and 2 only, pipes to the worker: every other one is
 *     closed (hiredis 0.14 and curl's resolver open sockets without
 *     close-on-exec, and they are authenticated to Redis);
 *   - an empty signal mask and default dispositions (the worker ignores
 *     SIGPIPE; a child must not inherit that);
 *   - exactly the environment it is given;
 *   - the RLIMIT_NOFILE the worker started with, when the worker raised its
 *     own (fdlimit.h).
 * Between fork and execve the child makes only async-signal-safe calls (the
 * worker has other threads: curl's resolver). A failed step writes {step,
 * errno} to a close-on-exec status pipe. The child is cloned into the
 * worker's memory (CLONE_VM | CLONE_VFORK: nothing copied, the worker held
 * only until the child calls execve); the worker reads the status pipe
 * when the child has exited, and a failed set-up comes to the end callback
 * (sl_child_end.setup_failed).
 *
 * A child is live (in its spawner's registry) from fork until its process
 * group is gone:
 *
 *   ON the direct child's exit (SIGCHLD: waitpid(pid, WNOHANG) per live
 *   child, never waitpid(-1), which would steal an embedding program's
 *   children), or sl__child_abandon:
 *     1. SIGKILL to the group: background processes it left die with it.
 *     2. Read what is in the pipes until end of file, which comes once every
 *        writer is dead; a writer that left the group (setsid) is waited for
 *        at most SL_SPAWN_EOF_WAIT_MS, then the pipes are closed (after an
 *        abandon they are closed at once).
 *     3. Every SL_SPAWN_TICK_MS: reap the group's members that are our
 *        children (waitpid(-pgid, WNOHANG): the leader, and reparented
 *        grandchildren when the worker is PID 1 or a subreaper), and look
 *        whether the group is gone (kill(-pgid, 0) fails with ESRCH, or only
 *        zombies of other parents are left).
 *     4. Then the end callback, once; the handles are closed after it.
 *        Past SL_SPAWN_GROUP_WAIT_MS: a warning, and the end anyway.
 *   ON sl__spawner_kill_now (right before an _exit): SIGKILL to every live
 *   group.
 *   ON sl__spawner_close: the SIGCHLD handle is closed; live children poll
 *   with their timers. sl__spawner_free kills and reaps what is left,
 *   blocking, when the loop no longer runs.
 *
 * Memory: a child is freed when its four handles (three pipes and the timer)
 * are closed, libuv's rule.
 */
#ifndef SL_SPAWN_H
#define SL_SPAWN_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define SL_SPAWN_TICK_MS 10          /* reaping poll after a child's attempt ended, ms */
#define SL_SPAWN_EOF_WAIT_MS 1000    /* output of writers that left the group, ms */
#define SL_SPAWN_GROUP_WAIT_MS 5000  /* the group's death after SIGKILL, ms */

typedef struct sl_spawner sl_spawner;
typedef struct sl_child sl_child;

/* How a child ended, for the end callback. */
typedef struct sl_child_end {
  int status;       /* the direct child's wait status (when exited) */
  int exited;       /* status is known */
  int status_lost;  /* someone else's waitpid took it */
  int stuck;        /* it did not end SL_SPAWN_GROUP_WAIT_MS after SIGKILL */
  int abandoned;    /* sl__child_abandon ended it */
  int output_cut;   /* the pipes were closed before end of file */
  int setup_failed; /* the child never ran the command: SL_EINVAL, or SL__ENOFDS (out of descriptors) */
  char setup_why[160]; /* then: the step and its errno ("execve /bin/sh: Argument list too long") */
} sl_child_end;

typedef struct sl_child_cb {
  void (*out)(void *ud, const char *p, size_t n);   /* stdout bytes as they come */
  void (*err)(void *ud, const char *p, size_t n);   /* stderr bytes as they come */
  void (*end)(void *ud, const sl_child_end *e);     /* once, when the group is gone */
} sl_child_cb;

/* A spawner for a loop; NULL on OOM. */
sl_spawner *sl__spawner_new(uv_loop_t *loop);
/*
 * Starts `command` with environment `env` (NULL-terminated, copied before
 * the call returns) and writes input[0..len) to its stdin, then end of file.
 * On success *out is the child and cb is called as documented (a child
 * whose set-up or execve failed ends with setup_failed); on failure
 * (SL_ENOMEM, SL_EIO before fork: retryable; SL__ENOFDS: out of file
 * descriptors, fdlimit.h) nothing is called.
 */
int sl__spawn(sl_spawner *s, const char *command, char *const *env, const char *input, size_t len,
              const sl_child_cb *cb, void *ud, sl_child **out, char *err, size_t errlen);
/* Ends a child's attempt now: SIGKILL to the group, output closed; the end
 * callback comes once the group is gone (abandoned set). */
void sl__child_abandon(sl_child *c);
/* SIGKILL to every live group, synchronously (before an _exit). */
void sl__spawner_kill_now(sl_spawner *s);
/* Closes the SIGCHLD handle (the worker closes its handles). */
void sl__spawner_close(sl_spawner *s);
/* Abandons, kills and reaps what is left, blocking (the loop no longer
 * runs), then frees the spawner. NULL is a no-op. */
void sl__spawner_free(sl_spawner *s);

#endif
