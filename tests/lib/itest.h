/*
 * Integration test helpers: one real redis-server per test program, started
 * by the harness on a private unix socket in a temp dir (devredis); every
 * test uses its own queue, so its keys have their own prefix. Tests run the
 * real `sluice` binary (SLUICE_BIN) as producers and workers.
 */
#ifndef SL_ITEST_H
#define SL_ITEST_H

#include <sys/types.h>

#include <hiredis/hiredis.h>

#include "harness.h"

/* Installs setup/teardown hooks that start and stop the test Redis. */
void itest_use_redis(void);
/* Loads the sluice function library into the Redis at url (exits on
 * failure); setup does it for the test Redis. */
void itest_load_library(const char *url);
/* The test Redis: its URL and socket path. */
const char *itest_url(void);
const char *itest_sock(void);
/* A new synchronous connection to it (fails the test if it cannot). */
redisContext *itest_conn(void);
/* Runs a command and returns the reply (fails the test on NULL). */
redisReply *itest_cmd(redisContext *c, const char *fmt, ...);
/* A queue name unique to this test and process. */
const char *itest_queue(const char *name);
/* A path in a per-test temp dir (one of 8 rotating buffers). */
const char *itest_path(const char *name);
/* Writes a file. */
void itest_write(const char *path, const char *data, size_t len);

/* Starts `sluice ARGS...` (NULL-terminated); stdout and stderr go to the
 * given files (NULL: /dev/null). */
pid_t itest_spawn(const char *const *args, const char *out, const char *err);
/* The same with changes to its environment: each entry of env
 * (NULL-terminated) is "NAME=VALUE" to set or "NAME" to remove. */
pid_t itest_spawn_env(const char *const *args, const char *const *env, const char *out, const char *err);
/* itest_spawn with RLIMIT_NOFILE set to soft/hard (ulimit -Sn/-Hn) in the
 * child before it execs. */
pid_t itest_spawn_nofile(const char *const *args, long soft, long hard, const char *out, const char *err);
/* Opens /dev/null until this process is out of descriptors (EMFILE), at
 * most max times; the descriptors go to fds. Returns how many it opened
 * (fails the test on another error). itest_fds_release closes them. */
int itest_fds_exhaust(int *fds, int max);
void itest_fds_release(int *fds, int n);
/* Runs `sluice ARGS...` to the end: returns its exit code; *out and *err
 * (if not NULL) get its stdout and stderr (free them). Killed after
 * timeout_s. */
int itest_run(const char *const *args, char **out, char **err, int timeout_s);
/* Starts a worker on queue q with the given concurrency. */
pid_t itest_worker(const char *q, int concurrency);
/* Stops a process with SIGTERM and waits; returns its wait status. Fails
 * the test if it died of a signal (a crash or a sanitizer abort). */
int itest_stop(pid_t pid);
/* Waits until the batch has ended; fails the test after timeout_s. */
void itest_wait_batch(redisContext *c, const char *q, const char *batch, int timeout_s);
/* HGET of a batch field as a number. */
long long itest_batch_num(redisContext *c, const char *q, const char *batch, const char *field);
/* Reads a whole file (free it); NULL if missing. */
char *itest_read(const char *path, size_t *len);
/* Milliseconds, monotonic. */
long long itest_ms(void);

#endif
