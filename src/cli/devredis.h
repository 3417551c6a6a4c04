/*
 * A private redis-server for `sluice demo`, the benchmarks and the tests:
 * started on a unix socket in a fresh temp dir, in its own process group (so
 * a Ctrl-C at the terminal reaches only sluice, which then stops it in
 * order), with no persistence unless extra arguments ask for it.
 */
#ifndef SL_DEVREDIS_H
#define SL_DEVREDIS_H

#include <sys/types.h>

typedef struct sl_devredis {
  pid_t pid;      /* the redis-server, 0 when not running */
  char dir[256];  /* its temp dir */
  char sock[300]; /* its socket path */
  char url[320];  /* unix:// URL of the socket */
} sl_devredis;

/*
 * Starts redis-server ($SLUICE_REDIS_SERVER, else redis-server on the PATH)
 * with `extra` arguments appended (NULL-terminated, may be NULL) and waits
 * until it answers PING (at most 10 s). Returns 0, or -1 with a message.
 */
int sl_devredis_start(sl_devredis *d, const char *const *extra, char *err, size_t errlen);
/* Starts it again on the same dir and socket (after sl_devredis_kill). */
int sl_devredis_restart(sl_devredis *d, const char *const *extra, char *err, size_t errlen);
/* Kills it with `sig` and waits for it; the dir stays. */
void sl_devredis_kill(sl_devredis *d, int sig);
/* Stops it (SIGTERM, then SIGKILL after 5 s) and removes its dir. */
void sl_devredis_stop(sl_devredis *d);

#endif
