/*
 * File descriptors: the worker's budget of them, and how running out is
 * recognised.
 *
 * A worker with --concurrency N may hold about SL_FD_PER_SLOT descriptors
 * per slot and SL_FD_RESERVE of its own. At sl_worker_new it raises its soft
 * RLIMIT_NOFILE to the hard limit, and refuses a concurrency that the limit
 * still cannot carry (SL_EINVAL, the figures in the message), rather than
 * let items fail one by one with "Couldn't connect" once the descriptors run
 * out. exec children get the soft limit the process started with back, so a
 * command runs under the limit its operator's shell would give it.
 *
 * Running out anyway (the process shares its limit with an embedding
 * program, or the system table is full) is EMFILE or ENFILE, and messages
 * say so (sl__fd_strerror). The built-in handlers give such an item back
 * (sl_job_give_back) instead of charging it an attempt: the item is not at
 * fault.
 */
#ifndef SL_FDLIMIT_H
#define SL_FDLIMIT_H

#include <stddef.h>

#include <sys/resource.h>

/* Descriptors one slot may hold at once: an http connection plus the socket
 * pair of libcurl's name lookup, or an exec child's three pipes. */
#define SL_FD_PER_SLOT 3
/* The worker's own: stdio, the two Redis connections and their replacements
 * while reconnecting, the loop (epoll, eventfd, signal pipe), libcurl's
 * wake-up pair, webhook connections, the status pipe of a child being
 * started, name lookups (resolv.conf, a UDP socket), with room to spare. */
#define SL_FD_RESERVE 64

/* Internal code, never returned by a public function: out of file
 * descriptors (EMFILE or ENFILE); nothing was started. */
#define SL__ENOFDS (-100)

/* What sl__fd_budget found. */
typedef struct sl_fd_budget {
  long need;      /* descriptors the concurrency needs, by the estimate above */
  long limit;     /* the soft limit now */
  long was;       /* the soft limit before; == limit when it was not raised */
} sl_fd_budget;

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit (once per process; the
 * first soft limit is kept for exec children), then checks that it carries
 * `concurrency` slots. 0 with *b filled in; SL_EINVAL with the message in
 * err ("--concurrency 400 needs about 1264 file descriptors; the limit is
 * 256 (ulimit -n) ...") when it does not.
 */
int sl__fd_budget(int concurrency, sl_fd_budget *b, char *err, size_t errlen);
/* 1 with *out the limits the process had before sl__fd_budget raised its
 * soft limit (what exec children get back); 0 when it did not raise it. */
int sl__fd_child_limit(struct rlimit *out);
/* 1 for EMFILE and ENFILE (out of descriptors), else 0. */
int sl__fd_exhausted(int err);
/* "out of file descriptors (EMFILE)" for EMFILE or ENFILE; else strerror. */
const char *sl__fd_strerror(int err);

#endif
