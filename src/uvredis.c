/*
 * libuv glue for hiredis async contexts; see uvredis.h.
 *
 * One uv_poll_t per context, on the context's socket. hiredis calls the
 * add/del hooks to say which events it wants; the poll is restarted with the
 * new mask or stopped when the mask is empty. cleanup (called by hiredis when
 * it frees the context) detaches the glue and closes the poll handle; the
 * glue's memory is freed in the close callback, as libuv requires.
 */
#include "uvredis.h"

#include <sluice/sluice.h>

#include "alloc.h"

typedef struct glue {
  uv_poll_t poll;        /* the socket's poll handle; first, for the cast in close_cb */
  redisAsyncContext *ac; /* NULL once hiredis freed the context */
  int events;            /* UV_READABLE | UV_WRITABLE wanted by hiredis */
} glue;

static void on_poll(uv_poll_t *h, int status, int events) {
  glue *g = h->data;
  int ev = status < 0 ? g->events : events;

  /* hiredis may free the context inside HandleRead (a disconnect), which
   * runs cleanup and clears g->ac; g itself lives until close_cb. */
  if (g->ac != NULL && (ev & UV_READABLE))
    redisAsyncHandleRead(g->ac);
  if (g->ac != NULL && (ev & UV_WRITABLE))
    redisAsyncHandleWrite(g->ac);
}

static void update(glue *g, int events) {
  if (events == g->events)
    return;
  g->events = events;
  if (events != 0)
    uv_poll_start(&g->poll, events, on_poll);
  else
    uv_poll_stop(&g->poll);
}

static void add_read(void *p) {
  glue *g = p;

  update(g, g->events | UV_READABLE);
}

static void del_read(void *p) {
  glue *g = p;

  update(g, g->events & ~UV_READABLE);
}

static void add_write(void *p) {
  glue *g = p;

  update(g, g->events | UV_WRITABLE);
}

static void del_write(void *p) {
  glue *g = p;

  update(g, g->events & ~UV_WRITABLE);
}

static void close_cb(uv_handle_t *h) {
  sl_free(h->data);
}

static void cleanup(void *p) {
  glue *g = p;

  g->ac = NULL;
  g->events = 0;
  uv_poll_stop(&g->poll);
  uv_close((uv_handle_t *)&g->poll, close_cb);
}

int sl__uvredis_attach(uv_loop_t *loop, redisAsyncContext *ac) {
  glue *g;

  if (ac->ev.data != NULL)
    return SL_EINVAL;
  g = sl_calloc(1, sizeof(*g));
  if (g == NULL)
    return SL_ENOMEM;
  if (uv_poll_init(loop, &g->poll, ac->c.fd) != 0) {
    sl_free(g);
    return SL_ECONN;
  }
  g->poll.data = g;
  g->ac = ac;
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  ac->ev.cleanup = cleanup;
  ac->ev.data = g;
  return 0;
}
