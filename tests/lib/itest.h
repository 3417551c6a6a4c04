/*
 * Integration test helpers: one real redis-server per test program, started
 * by the harness on a private unix socket in a temp dir (devredis); every
 * test uses its own queue, so its keys have their own prefix. Tests run the
 * real `sluice` binary (SLUICE_BIN) as producers and workers.
 */
#ifndef SL_ITEST_H
#define SL_ITEST_H

#include <sys/types.h>
#include <unistd.h>

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
 * given files (NULL: stdout to /dev/null, stderr to a file of its own in the
 * test's temp dir, so a failed stop can show it). */
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
/* Writes items (JSON Lines, len bytes) to a file of the test's temp dir
 * and submits them to queue q of the test Redis with `sluice submit` and
 * the extra options opts (NULL-terminated; NULL for none); fails the test
 * when that fails. Returns the batch id (a static buffer, valid until the
 * next call). */
const char *itest_submit(const char *q, const char *items, size_t len, const char *const *opts);
/* Checks that queue q is drained: its three streams are empty, nothing is
 * pending in the consumer group, its delayed set is empty, and its claim
 * index empties (waited for, up to 35 s). */
void itest_check_drained(redisContext *c, const char *q);
/* Checks the batch index by status (sluice:{Q}:bs:STATUS): every batch of
 * the queue's index is in the set of its hash's status and in no other. */
void itest_check_status_index(redisContext *c, const char *q);
/* Waits until a command has written its pid and a newline to path and
 * returns the pid; fails the test after ms. */
pid_t itest_wait_pid_file(const char *path, int ms);
/* Starts a worker on queue q with the given concurrency. */
pid_t itest_worker(const char *q, int concurrency);

/* Stops a process with SIGTERM and waits (at most 60 s); returns its wait
 * status. It first waits (at most 10 s) until the process has installed its
 * SIGTERM handler (SigCgt in /proc/PID/status), so a worker that is still
 * starting is not killed by the default action. Fails the test, at the
 * caller's line, if it died of a signal (a crash or a sanitizer's abort),
 * never caught SIGTERM or did not stop. */
#define itest_stop(pid) itest_stop_at(__FILE__, __LINE__, (pid))
int itest_stop_at(const char *file, int line, pid_t pid);
/* itest_stop, expecting a clean stop: fails the test at the caller's line,
 * with the tail of the process's stderr, unless it exited with status 0. */
#define itest_stop_ok(pid) itest_stop_code_at(__FILE__, __LINE__, (pid), 0)
/* itest_stop, expecting exactly exit status `code`. */
#define itest_stop_code(pid, code) itest_stop_code_at(__FILE__, __LINE__, (pid), (code))
void itest_stop_code_at(const char *file, int line, pid_t pid, int code);
/* Waits (at most timeout_ms) for a process to exit by itself and checks its
 * exit status is `code`; fails the test otherwise (killing it on a
 * timeout), with the tail of its stderr. */
#define itest_exit_code(pid, code, timeout_ms) itest_exit_code_at(__FILE__, __LINE__, (pid), (code), (timeout_ms))
void itest_exit_code_at(const char *file, int line, pid_t pid, int code, int timeout_ms);
/* The stderr file of a process itest_spawn started ("" if unknown). */
const char *itest_errpath(pid_t pid);

/*
 * Waiting for a condition instead of sleeping: polls `cond` every 10 ms
 * until it holds, and fails the test at the caller's line once timeout_ms
 * have passed, saying what it waited for (`what`, a string) and the
 * condition's text. A sleep decides nothing this way: a slow machine only
 * makes the wait longer.
 */
#define ITEST_WAIT(cond, timeout_ms, what)                                                         \
  do {                                                                                             \
    long long w0_ = itest_ms();                                                                    \
    while (!(cond)) {                                                                              \
      if (itest_ms() - w0_ > (long long)(timeout_ms))                                              \
        sl_test_fail(__FILE__, __LINE__, "waited %lld ms for %s, in vain (%s)",                    \
                     (long long)(timeout_ms), (what), #cond);                                      \
      usleep(10000);                                                                               \
    }                                                                                              \
  } while (0)

/* ITEST_WAIT for a comparison of two numbers; a failure shows the values
 * of the last poll. */
#define ITEST_WAIT_INT(a, op, b, timeout_ms, what)                                                 \
  do {                                                                                             \
    long long w0_ = itest_ms();                                                                    \
    for (;;) {                                                                                     \
      long long a_ = (long long)(a);                                                               \
      long long b_ = (long long)(b);                                                               \
      if (a_ op b_)                                                                                \
        break;                                                                                     \
      if (itest_ms() - w0_ > (long long)(timeout_ms))                                              \
        sl_test_fail(__FILE__, __LINE__, "waited %lld ms for %s, in vain (%s %s %s: %lld vs %lld)", \
                     (long long)(timeout_ms), (what), #a, #op, #b, a_, b_);                        \
      usleep(10000);                                                                               \
    }                                                                                              \
  } while (0)

/* Waits (at most timeout_ms) until the worker process pid has joined queue
 * q: it is in the fleet index sluice:{Q}:workers, where its first beat puts
 * it as soon as both its Redis connections are up, after it installed its
 * signal handlers. Copies its worker id (the fleet member and consumer
 * name, "HOST:PID:XXXX") into id (idlen bytes; may be NULL). Fails the
 * test, with the worker's stderr, if it exits first or the time runs out.
 * (Its consumer in the group is no sign: Redis creates it only once a read
 * returns entries.) */
#define itest_wait_worker(c, q, pid, id, idlen, timeout_ms)                                        \
  itest_wait_worker_at(__FILE__, __LINE__, (c), (q), (pid), (id), (idlen), (timeout_ms))
void itest_wait_worker_at(const char *file, int line, redisContext *c, const char *q, pid_t pid, char *id,
                          size_t idlen, int timeout_ms);
/* Entries pending for one consumer (a worker id) in queue q's three
 * streams: the items that worker holds (taken, running or waiting). */
long long itest_pending_of(redisContext *c, const char *q, const char *consumer);
/* All entries pending in queue q's three streams. */
long long itest_pending(redisContext *c, const char *q);
/* "running" in a worker's registry hash as of its last beat (items started
 * or waiting for their rate limit); -1 when it is not registered. */
long long itest_worker_running(redisContext *c, const char *q, const char *id);
/* Waits (at most timeout_ms) until the file holds `needle`; returns its
 * text (free it). Fails the test, with the file's text, on a timeout. */
#define itest_wait_file(path, needle, timeout_ms) itest_wait_file_at(__FILE__, __LINE__, (path), (needle), (timeout_ms))
char *itest_wait_file_at(const char *file, int line, const char *path, const char *needle, int timeout_ms);
/* How often needle occurs in hay (0 for NULL). */
int itest_count(const char *hay, const char *needle);

/* Waits until the batch has ended; fails the test (at the caller's line)
 * after timeout_s. */
#define itest_wait_batch(c, q, batch, timeout_s) itest_wait_batch_at(__FILE__, __LINE__, (c), (q), (batch), (timeout_s))
void itest_wait_batch_at(const char *file, int line, redisContext *c, const char *q, const char *batch, int timeout_s);
/* HGET of a batch field as a number. */
long long itest_batch_num(redisContext *c, const char *q, const char *batch, const char *field);
/* Reads a whole file (free it); NULL if missing. */
char *itest_read(const char *path, size_t *len);
/* Milliseconds, monotonic. */
long long itest_ms(void);

#endif
