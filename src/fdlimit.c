/*
 * The worker's file descriptor budget; see fdlimit.h.
 *
 * The estimate is deliberately simple: SL_FD_PER_SLOT for every slot, the
 * most any built-in handler holds for one item, plus SL_FD_RESERVE. An http
 * slot usually holds one descriptor (a connection; a numeric or cached host
 * needs no lookup), so the estimate errs on the safe side, which is the side
 * to err on: the cost of refusing is a clear message at start, the cost of
 * an optimistic estimate is items failing at random under load.
 *
 * Raising the soft limit to the hard one is what the kernel lets any
 * process do; systemd, for one, starts services with a low soft and a high
 * hard limit and expects programs that need more to raise it themselves and
 * to hand the original back to their children (its documentation of
 * LimitNOFILE=): forkexec.c does the latter with sl__fd_child_limit.
 */
#include "fdlimit.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sluice/sluice.h>

static struct rlimit first; /* the limits before the first raise */
static int raised;          /* first is set */

/* Raises the soft limit to the hard one, once per process. */
static void raise_soft(void) {
  struct rlimit rl;

  if (raised || getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  first = rl;
  raised = 1;
  if (rl.rlim_cur == rl.rlim_max)
    return;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    raised = 0; /* a hard limit of "unlimited" may be refused: keep the soft one */
}

int sl__fd_budget(int concurrency, sl_fd_budget *b, char *err, size_t errlen) {
  struct rlimit rl;
  long most;

  raise_soft();
  b->need = SL_FD_RESERVE + (long)SL_FD_PER_SLOT * concurrency;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
    b->limit = b->was = -1; /* no limit we can read: nothing to check */
    return 0;
  }
  b->limit = (long)rl.rlim_cur;
  b->was = raised ? (long)first.rlim_cur : b->limit;
  if (b->need <= b->limit)
    return 0;
  most = (b->limit - SL_FD_RESERVE) / SL_FD_PER_SLOT;
  snprintf(err, errlen,
           "--concurrency %d needs about %ld file descriptors; the limit is %ld (ulimit -n%s): raise the hard "
           "limit (ulimit -Hn, LimitNOFILE= under systemd) or run at most --concurrency %ld",
           concurrency, b->need, b->limit, b->was != b->limit ? ", raised to the hard limit" : "",
           most > 0 ? most : 0);
  return SL_EINVAL;
}

int sl__fd_child_limit(struct rlimit *out) {
  if (!raised || first.rlim_cur == first.rlim_max)
    return 0;
  *out = first;
  return 1;
}

int sl__fd_exhausted(int err) {
  return err == EMFILE || err == ENFILE;
}

const char *sl__fd_strerror(int err) {
  if (err == EMFILE)
    return "out of file descriptors (EMFILE)";
  if (err == ENFILE)
    return "out of file descriptors in the whole system (ENFILE)";
  return strerror(err);
}
