/*
 * hiredis async contexts on a libuv loop.
 *
 * sluice's own glue rather than the adapter shipped with hiredis 0.14.1,
 * which drops poll errors: with it an async connect to a closed port never
 * calls the connect callback and the loop just ends. Here a poll error is
 * handed to hiredis as readiness for the events we wait for, so hiredis runs
 * its read or write, sees the error and reports it through the connect or
 * disconnect callback.
 */
#ifndef SL_UVREDIS_H
#define SL_UVREDIS_H

#include <hiredis/async.h>
#include <uv.h>

/* Attaches ac to loop. Returns 0, or SL_EINVAL if ac already has event glue,
 * SL_ENOMEM, or SL_ECONN if libuv refuses the socket. On failure the caller
 * still owns ac and frees it with redisAsyncFree. */
int sl__uvredis_attach(uv_loop_t *loop, redisAsyncContext *ac);

#endif
