/*
 * Redis calls of `sluice serve`, off the loop.
 *
 * The library's client calls block (hiredis, one round trip after the
 * other), so a request that needs Redis runs its calls on the loop's thread
 * pool (uv_queue_work), and the loop goes on serving other connections and
 * event streams meanwhile. Each job borrows a blocking client from a pool
 * (opened on first use; at most one per pool thread is ever in use) and
 * gives it back; a client whose call failed on the connection is closed
 * instead (srv_pool_discard), so the next job opens a fresh one: a Redis
 * that restarts costs the requests in flight, not the server.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <sluice/client.h>

#include "alloc.h"
#include "srv.h"

#define POOL_MAX 16 /* idle clients kept */

struct srv_pool {
  pthread_mutex_t mu;
  char *url;
  sl_client_t *idle[POOL_MAX];
  size_t nidle;
};

typedef struct job {
  uv_work_t w;
  sl_srv *s;
  srv_run_fn run;
  srv_done_fn done;
  void *arg;
  char actor[201]; /* who acts, for batch logs (sl_client_set_actor); "" : the server's default */
} job;

/* A client to discard, marked by the job that used it. */
static __thread int discard_mine;

int srv_pool_new(const char *url, srv_pool **out) {
  srv_pool *p = sl_malloc(sizeof(*p));

  if (p == NULL)
    return SL_ENOMEM;
  memset(p, 0, sizeof(*p));
  p->url = sl_strdup(url);
  if (p->url == NULL || pthread_mutex_init(&p->mu, NULL) != 0) {
    sl_free(p->url);
    sl_free(p);
    return SL_ENOMEM;
  }
  *out = p;
  return 0;
}

void srv_pool_free(srv_pool *p) {
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->nidle; i++)
    sl_client_close(p->idle[i]);
  pthread_mutex_destroy(&p->mu);
  sl_free(p->url);
  sl_free(p);
}

void srv_pool_discard(sl_client_t *c) {
  (void)c;
  discard_mine = 1;
}

static void on_work(uv_work_t *w) {
  job *j = w->data;
  srv_pool *p = j->s->pool;
  sl_client_t *c = NULL;
  char err[512] = "";

  pthread_mutex_lock(&p->mu);
  if (p->nidle > 0)
    c = p->idle[--p->nidle];
  pthread_mutex_unlock(&p->mu);
  if (c == NULL && sl_client_open(p->url, &c, err, sizeof(err)) != 0)
    c = NULL;
  discard_mine = 0;
  if (c != NULL)
    sl_client_set_actor(c, j->actor[0] ? j->actor : NULL);
  j->run(c, err, j->arg);
  if (c == NULL)
    return;
  if (discard_mine) {
    sl_client_close(c);
    return;
  }
  pthread_mutex_lock(&p->mu);
  if (p->nidle < POOL_MAX) {
    p->idle[p->nidle++] = c;
    c = NULL;
  }
  pthread_mutex_unlock(&p->mu);
  sl_client_close(c);
}

static void on_after(uv_work_t *w, int status) {
  job *j = w->data;

  (void)status;
  j->s->inflight--;
  j->done(j->arg);
  sl_free(j);
}

int srv_work(sl_srv *s, srv_run_fn run, srv_done_fn done, void *arg, const char *actor) {
  job *j = sl_malloc(sizeof(*j));

  if (j == NULL)
    return SL_ENOMEM;
  snprintf(j->actor, sizeof(j->actor), "%s", actor ? actor : "");
  j->s = s;
  j->run = run;
  j->done = done;
  j->arg = arg;
  j->w.data = j;
  if (uv_queue_work(&s->loop, &j->w, on_work, on_after) != 0) {
    sl_free(j);
    return SL_ENOMEM;
  }
  s->inflight++;
  return 0;
}
