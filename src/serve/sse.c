/*
 * Live events of `sluice serve`: GET /v1/batches/{id}/events, and
 * GET /v1/events for every batch of a queue the caller may see (its
 * tenant's; an admin's: all): a first `snapshot` event with the newest 50
 * batches, then each batch event, never ended by the server.
 *
 * One async Redis connection per served queue SSUBSCRIBEs to the queue's
 * channel (sluice:{Q}:events, which carries every batch's events) when the
 * server starts, and stays subscribed: every event stream of the queue is
 * fed from it, so a thousand followers cost Redis one subscriber.
 *
 * A stream is registered with its queue before its batch hash is read (on
 * the thread pool): events that arrive meanwhile wait, and once the state
 * is read it is sent first, then the waiting events that are newer than it
 * (by their counters: an event that the read already covers is dropped),
 * then each live event. The stream of a batch ends after the batch's final
 * event (completed, or cancelled with done = total). Each event has an id,
 * TS-DONE; a client that reconnects with Last-Event-ID gets the state read
 * anew as its first event, so an end it missed is never lost. A comment
 * line goes out every 15 s (--keepalive) so proxies keep the stream open. Progress
 * events of the batch are passed on as `event: progress`.
 *
 * MHD asks the stream for bytes (reader); with none to give, the stream
 * suspends its connection, and the next event or comment resumes it. When
 * the subscription breaks, it is made again (1 s apart), and every stream
 * of the queue reads its batch's state again, since events may have been
 * lost meanwhile.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <hiredis/async.h>
#include <sluice/client.h>

#include "alloc.h"
#include "conn.h"
#include "json.h"
#include "srv.h"
#include "url.h"
#include "uvredis.h"

#define RECONNECT_MS 1000    /* the subscription is made again this long after it broke */
#define STREAM_BUF_MAX (8 * 1024 * 1024) /* bytes a slow client may have pending before it is dropped */
#define WAITING_MAX 1024     /* events kept while the state is being read */
#define SNAPSHOT_MAX 50      /* batches in the first event of a queue stream */

typedef struct stream stream;

/* One queue's subscription. */
typedef struct sub {
  srv_hub *hub;
  const char *queue;
  char chan[SL_NAME_MAX + 32];
  redisAsyncContext *ac;
  int up;                    /* subscribed */
  char host[256];            /* Redis Cluster: the node to subscribe on (the queue's master, once a MOVED said
                                so); "" for the URL's host */
  int port;
  int seed;                  /* Redis Cluster: the URL's node tried last */
} sub;

struct srv_hub {
  sl_srv *s;
  sl_url url;
  sub q[SRV_MAX_QUEUES];
  size_t nq;
  stream *streams;           /* every open stream */
  uv_timer_t keepalive;
  uv_timer_t reconnect;
  int stopping;
  int open_handles;          /* while closing: timers not closed yet */
};

struct stream {
  srv_hub *hub;
  struct MHD_Connection *con;
  const char *queue;
  char batch[80];            /* "" for a stream of the whole queue */
  srv_principal who;
  sl_buf out;                /* bytes to send */
  size_t sent;               /* of out, already given to MHD */
  int suspended;             /* its connection waits for bytes */
  int ended;                 /* the last bytes are in out */
  int closed;                /* MHD dropped the response: only the pending job keeps it */
  int reading;               /* a state read is running */
  int have_state;
  long long done, total;     /* of the newest state sent */
  int rank;                  /* of its status */
  char *waiting[WAITING_MAX]; /* events that came during the read */
  size_t nwaiting;
  stream *next, *prev;
};

static int rank_of(const char *s) {
  if (strcmp(s, "submitting") == 0)
    return 0;
  if (strcmp(s, "queued") == 0)
    return 1;
  if (strcmp(s, "running") == 0 || strcmp(s, "paused") == 0)
    return 2;
  return 3;
}

static void wake(stream *st) {
  if (st->suspended && !st->closed) {
    st->suspended = 0;
    MHD_resume_connection(st->con);
    srv_kick(st->hub->s);
  }
}

static void append(stream *st, const char *text) {
  if (st->ended || st->closed)
    return;
  if (st->out.len - st->sent + strlen(text) > STREAM_BUF_MAX || sl__buf_puts(&st->out, text) != 0) {
    /* a client that reads nothing for so long is dropped */
    st->ended = 1;
  }
  wake(st);
}

/* Sends a batch event (the JSON of the state or of a PUBLISHed event),
 * unless the state sent already covers it; ends the stream after the end. */
static void send_batch_event(stream *st, const char *json, int from_state) {
  cJSON *e = cJSON_Parse(json);
  const cJSON *s = e ? cJSON_GetObjectItemCaseSensitive(e, "status") : NULL;
  long long done = (long long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e, "done"));
  long long total = (long long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e, "total"));
  long long ts = (long long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e, "ts"));
  int rank;
  char head[96];

  if (e == NULL || !cJSON_IsString(s)) {
    cJSON_Delete(e);
    return;
  }
  rank = rank_of(s->valuestring);
  if (!from_state && st->have_state &&
      (done < st->done || total < st->total || (done == st->done && total == st->total && rank <= st->rank &&
                                                strcmp(s->valuestring, "paused") != 0))) {
    cJSON_Delete(e);
    return; /* older than, or the same as, what was sent */
  }
  st->have_state = 1;
  st->done = done;
  st->total = total;
  st->rank = rank;
  snprintf(head, sizeof(head), "id: %lld-%lld\nevent: batch\ndata: ", ts, done);
  append(st, head);
  append(st, json);
  append(st, "\n\n");
  if (strcmp(s->valuestring, "completed") == 0 || (strcmp(s->valuestring, "cancelled") == 0 && done >= total))
    st->ended = 1;
  cJSON_Delete(e);
  wake(st);
}

/* A batch event on a queue stream: every one the caller may see. */
static void send_queue_event(stream *st, const char *json) {
  cJSON *e = cJSON_Parse(json);
  const cJSON *t = e ? cJSON_GetObjectItemCaseSensitive(e, "tenant") : NULL;
  long long ts = (long long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e, "ts"));
  long long done = (long long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e, "done"));
  char head[96];

  if (e != NULL && (st->who.role == ROLE_ADMIN || strcmp(cJSON_IsString(t) ? t->valuestring : "",
                                                         st->who.tenant) == 0)) {
    snprintf(head, sizeof(head), "id: %lld-%lld\nevent: batch\ndata: ", ts, done);
    append(st, head);
    append(st, json);
    append(st, "\n\n");
  }
  cJSON_Delete(e);
}

static void send_progress(stream *st, const char *json) {
  append(st, "event: progress\ndata: ");
  append(st, json);
  append(st, "\n\n");
}

/* ---- The state read, on the thread pool ---- */

typedef struct read_job {
  stream *st;
  char queue[SL_NAME_MAX + 1];
  char batch[80];
  srv_principal who;
  char *json;      /* the state, or NULL */
  int rc;
  char err[512];
} read_job;

static void stream_free(stream *st) {
  for (size_t i = 0; i < st->nwaiting; i++)
    sl_free(st->waiting[i]);
  sl__buf_free(&st->out);
  sl_free(st);
}

/* The snapshot of a queue stream: the caller's newest batches. */
static int snap_line(const char *json, size_t len, void *ud) {
  sl_buf *b = ud;

  if (b->p[b->len - 1] != '[' && sl__buf_putc(b, ',') != 0)
    return SL_ENOMEM;
  return sl__buf_append(b, json, len) == 0 ? 0 : SL_ENOMEM;
}

static void on_read(sl_client_t *c, const char *open_err, void *arg) {
  read_job *j = arg;
  cJSON *o;
  const cJSON *t;

  if (c == NULL) {
    j->rc = SL_ECONN;
    snprintf(j->err, sizeof(j->err), "%s", open_err);
    return;
  }
  if (j->batch[0] == '\0') {
    sl_list_opts lo = {NULL, j->who.role == ROLE_ADMIN ? NULL : j->who.tenant, NULL, NULL, SNAPSHOT_MAX, 10000,
                       NULL};
    sl_buf b;

    if (lo.tenant != NULL && lo.tenant[0] == '\0')
      lo.tenant = NULL;
    sl__buf_init(&b, 64 * 1024 * 1024);
    j->rc = sl__buf_puts(&b, "{\"batches\":[");
    if (j->rc == 0)
      j->rc = sl_batch_list_with(c, j->queue, &lo, snap_line, &b);
    if (j->rc == 0)
      j->rc = sl__buf_puts(&b, "]}");
    if (j->rc == 0)
      j->json = sl__buf_take(&b);
    else if (j->rc == SL_ECONN)
      srv_pool_discard(c);
    sl__buf_free(&b);
    return;
  }
  j->rc = sl_batch_status(c, j->queue, j->batch, &j->json);
  if (j->rc != 0) {
    snprintf(j->err, sizeof(j->err), "%s", sl_client_errstr(c));
    if (j->rc == SL_ECONN)
      srv_pool_discard(c);
    return;
  }
  o = cJSON_Parse(j->json);
  t = o ? cJSON_GetObjectItemCaseSensitive(o, "tenant") : NULL;
  if (o == NULL || (j->who.role != ROLE_ADMIN && strcmp(cJSON_IsString(t) ? t->valuestring : "", j->who.tenant) != 0)) {
    sl_free(j->json);
    j->json = NULL;
    j->rc = SL_ENOTFOUND;
  }
  cJSON_Delete(o);
}

static void on_read_done(void *arg) {
  read_job *j = arg;
  stream *st = j->st;

  st->reading = 0;
  if (st->closed) {
    stream_free(st);
  } else if (j->json != NULL && st->batch[0] == '\0') {
    /* a queue stream: the snapshot, then what came meanwhile; it goes on */
    append(st, "event: snapshot\ndata: ");
    append(st, j->json);
    append(st, "\n\n");
    st->have_state = 1;
    for (size_t i = 0; i < st->nwaiting; i++) {
      send_queue_event(st, st->waiting[i]);
      sl_free(st->waiting[i]);
    }
    st->nwaiting = 0;
    if (st->hub->stopping) {
      st->ended = 1;
      wake(st);
    }
  } else if (j->json != NULL) {
    send_batch_event(st, j->json, 1);
    for (size_t i = 0; i < st->nwaiting; i++) {
      send_batch_event(st, st->waiting[i], 0);
      sl_free(st->waiting[i]);
    }
    st->nwaiting = 0;
    if (st->hub->stopping) {
      st->ended = 1;
      wake(st);
    }
  } else if (!st->have_state) {
    char line[900];

    if (j->rc == SL_ENOTFOUND)
      snprintf(line, sizeof(line), "event: error\ndata: {\"error\":{\"code\":\"not_found\",\"message\":\"no batch %s "
               "in queue %s\"}}\n\n", j->batch, j->queue);
    else
      snprintf(line, sizeof(line), "event: error\ndata: {\"error\":{\"code\":\"redis_unavailable\",\"message\":"
               "\"the batch cannot be read now; reconnect later\"}}\n\n");
    append(st, line);
    st->ended = 1;
    wake(st);
  }
  sl_free(j->json);
  sl_free(j);
}

/* Reads the stream's batch state again (on open, after a resubscribe). */
static void read_state(stream *st) {
  read_job *j = sl_malloc(sizeof(*j));

  if (j == NULL || st->reading)
    goto fail;
  memset(j, 0, sizeof(*j));
  j->st = st;
  j->who = st->who;
  snprintf(j->queue, sizeof(j->queue), "%s", st->queue);
  snprintf(j->batch, sizeof(j->batch), "%s", st->batch);
  if (srv_work(st->hub->s, on_read, on_read_done, j, NULL) != 0)
    goto fail;
  st->reading = 1;
  return;
fail:
  sl_free(j);
  if (!st->reading && !st->have_state) {
    append(st, "event: error\ndata: {\"error\":{\"code\":\"out_of_memory\",\"message\":\"the server is out of memory\"}}\n\n");
    st->ended = 1;
  }
}

/* ---- MHD's side of a stream ---- */

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max) {
  stream *st = cls;
  size_t n = st->out.len - st->sent;

  (void)pos;
  if (n > 0) {
    if (n > max)
      n = max;
    memcpy(buf, st->out.p + st->sent, n);
    st->sent += n;
    if (st->sent == st->out.len) {
      sl__buf_reset(&st->out);
      st->sent = 0;
    }
    return (ssize_t)n;
  }
  if (st->ended)
    return MHD_CONTENT_READER_END_OF_STREAM;
  st->suspended = 1;
  MHD_suspend_connection(st->con);
  return 0;
}

static void on_free(void *cls) {
  stream *st = cls;

  if (st->prev != NULL)
    st->prev->next = st->next;
  else if (st->hub->streams == st)
    st->hub->streams = st->next;
  if (st->next != NULL)
    st->next->prev = st->prev;
  st->closed = 1;
  if (!st->reading)
    stream_free(st);
}

struct MHD_Response *srv_sse_open(sl_srv *s, struct MHD_Connection *con, const char *queue, const char *batch,
                                  const srv_principal *p) {
  srv_hub *h = s->hub;
  stream *st = sl_malloc(sizeof(*st));
  struct MHD_Response *r;

  if (st == NULL)
    return NULL;
  memset(st, 0, sizeof(*st));
  st->hub = h;
  st->con = con;
  st->queue = queue;
  st->who = *p;
  snprintf(st->batch, sizeof(st->batch), "%s", batch ? batch : "");
  sl__buf_init(&st->out, STREAM_BUF_MAX + 64 * 1024);
  r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, reader, st, on_free);
  if (r == NULL) {
    stream_free(st);
    return NULL;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
  MHD_add_response_header(r, "X-Accel-Buffering", "no");
  /* registered before the read: no event can fall between the two */
  st->next = h->streams;
  if (h->streams != NULL)
    h->streams->prev = st;
  h->streams = st;
  append(st, "retry: 2000\n\n");
  read_state(st);
  return r;
}

/* ---- The subscriptions ---- */

static void sub_connect(sub *q);
static void on_reconnect(uv_timer_t *t);

static void on_message(redisAsyncContext *ac, void *reply, void *priv) {
  sub *q = priv;
  redisReply *r = reply;
  cJSON *e;
  const cJSON *b;
  int progress;

  if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "MOVED ", 6) == 0) {
    /* Redis Cluster: the queue's events are published on its master. */
    const char *addr = strchr(r->str + 6, ' ');
    const char *colon = addr != NULL ? strrchr(addr, ':') : NULL;

    if (colon != NULL && (size_t)(colon - addr - 1) < sizeof(q->host)) {
      memcpy(q->host, addr + 1, (size_t)(colon - addr - 1));
      q->host[colon - addr - 1] = '\0';
      q->port = atoi(colon + 1);
    }
    redisAsyncFree(ac); /* after this callback; on_disconnect subscribes again, there */
    return;
  }
  if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
    return;
  if (strcmp(r->element[0]->str, "sunsubscribe") == 0) {
    /* Redis Cluster: the queue's slot moved; its new master is found
     * through the URL's nodes (MOVED), and every stream reads its state
     * again once subscribed. */
    q->host[0] = '\0';
    redisAsyncFree(ac);
    return;
  }
  if (strcmp(r->element[0]->str, "ssubscribe") == 0) {
    int was = q->up;

    /* hiredis 0.14 knows SUBSCRIBE but not SSUBSCRIBE: it took the
     * confirmation as the reply of a plain command, and would abort on the
     * first message, which has no command waiting for it. From here on the
     * connection runs like MONITOR: hiredis hands every reply to this
     * callback again. Set only now, when no other reply is outstanding, so
     * no other callback is ever reused. Nothing else is sent on it. */
    ac->c.flags |= REDIS_MONITORING;
    q->up = 1;
    if (was)
      return;
    /* (re)subscribed: what happened meanwhile is read from the hashes */
    for (stream *st = q->hub->streams; st != NULL; st = st->next) {
      if (st->queue == q->queue && st->have_state && !st->ended && st->batch[0] != '\0')
        read_state(st);
    }
    return;
  }
  if (strcmp(r->element[0]->str, "smessage") != 0 || r->element[2]->type != REDIS_REPLY_STRING)
    return;
  e = cJSON_Parse(r->element[2]->str);
  b = e ? cJSON_GetObjectItemCaseSensitive(e, "batch") : NULL;
  progress = e != NULL && cJSON_GetObjectItemCaseSensitive(e, "type") != NULL;
  for (stream *st = q->hub->streams; b != NULL && cJSON_IsString(b) && st != NULL; st = st->next) {
    if (st->queue != q->queue || st->ended)
      continue;
    if (st->batch[0] == '\0') {
      if (progress)
        continue; /* a queue stream carries batch events only */
      if (!st->have_state) {
        if (st->nwaiting < WAITING_MAX && (st->waiting[st->nwaiting] = sl_strdup(r->element[2]->str)) != NULL)
          st->nwaiting++;
      } else {
        send_queue_event(st, r->element[2]->str);
      }
      continue;
    }
    if (strcmp(st->batch, b->valuestring) != 0)
      continue;
    if (progress) {
      if (st->have_state)
        send_progress(st, r->element[2]->str);
    } else if (st->reading || !st->have_state) {
      if (st->nwaiting < WAITING_MAX) {
        st->waiting[st->nwaiting] = sl_strdup(r->element[2]->str);
        if (st->waiting[st->nwaiting] != NULL)
          st->nwaiting++;
      }
    } else {
      send_batch_event(st, r->element[2]->str, 0);
    }
  }
  cJSON_Delete(e);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  sub *q = ac->data;

  (void)status;
  q->ac = NULL;
  q->up = 0;
  if (!q->hub->stopping) {
    srv_log(q->hub->s, 1, "lost the event subscription of queue %s; subscribing again", q->queue);
    if (!uv_is_active((uv_handle_t *)&q->hub->reconnect))
      uv_timer_start(&q->hub->reconnect, on_reconnect, RECONNECT_MS, 0);
  }
}

static void on_connect(const redisAsyncContext *ac, int status) {
  sub *q = ac->data;

  if (status == REDIS_OK)
    return;
  if (q->hub->url.cluster && q->hub->url.nseeds > 0) {
    /* Redis Cluster: that node is gone (a failover?); the next of the
     * URL's nodes will redirect us (MOVED). */
    q->host[0] = '\0';
    q->seed = (q->seed + 1) % q->hub->url.nseeds;
  }
  on_disconnect(ac, status);
}

static void sub_connect(sub *q) {
  srv_hub *h = q->hub;
  redisAsyncContext *ac;

  if (h->url.path != NULL)
    ac = redisAsyncConnectUnix(h->url.path);
  else if (q->host[0] != '\0')
    ac = redisAsyncConnect(q->host, q->port);
  else if (h->url.cluster)
    ac = redisAsyncConnect(h->url.seed_host[q->seed], h->url.seed_port[q->seed]);
  else
    ac = redisAsyncConnect(h->url.host, h->url.port);

  if (ac == NULL || ac->err) {
    if (ac != NULL)
      redisAsyncFree(ac);
    uv_timer_start(&h->reconnect, on_reconnect, RECONNECT_MS, 0);
    return;
  }
  fcntl(ac->c.fd, F_SETFD, FD_CLOEXEC);
  if (h->url.path == NULL)
    sl__redis_keepalive(ac->c.fd);
  if (sl__uvredis_attach(&h->s->loop, ac) != 0) {
    redisAsyncFree(ac);
    uv_timer_start(&h->reconnect, on_reconnect, RECONNECT_MS, 0);
    return;
  }
  ac->data = q;
  q->ac = ac;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  if (h->url.password != NULL && h->url.user != NULL)
    redisAsyncCommand(ac, NULL, NULL, "AUTH %s %s", h->url.user, h->url.password);
  else if (h->url.password != NULL)
    redisAsyncCommand(ac, NULL, NULL, "AUTH %s", h->url.password);
  redisAsyncCommand(ac, on_message, q, "SSUBSCRIBE %s", q->chan); /* sharded: the queue's slot */
}

static void on_reconnect(uv_timer_t *t) {
  srv_hub *h = t->data;

  for (size_t i = 0; i < h->nq; i++) {
    if (h->q[i].ac == NULL)
      sub_connect(&h->q[i]);
  }
}

static void on_keepalive(uv_timer_t *t) {
  srv_hub *h = t->data;

  for (stream *st = h->streams; st != NULL; st = st->next)
    append(st, ": keepalive\n\n");
}

int srv_hub_start(sl_srv *s) {
  srv_hub *h = sl_malloc(sizeof(*h));
  char err[256];

  if (h == NULL)
    return SL_ENOMEM;
  memset(h, 0, sizeof(*h));
  h->s = s;
  if (sl__url_parse(s->redis_url, &h->url, err, sizeof(err)) != 0) {
    sl_free(h);
    return SL_EINVAL;
  }
  s->hub = h;
  uv_timer_init(&s->loop, &h->keepalive);
  uv_timer_init(&s->loop, &h->reconnect);
  h->keepalive.data = h;
  h->reconnect.data = h;
  uv_timer_start(&h->keepalive, on_keepalive, s->keepalive_ms, s->keepalive_ms);
  uv_timer_start(&h->reconnect, on_reconnect, 0, 0); /* the first subscriptions, at once */
  for (size_t i = 0; i < s->nqueues; i++) {
    sub *q = &h->q[h->nq++];

    q->hub = h;
    q->queue = s->queues[i];
    snprintf(q->chan, sizeof(q->chan), "sluice:{%s}:events", q->queue);
  }
  return 0;
}

void srv_hub_stop(sl_srv *s) {
  srv_hub *h = s->hub;

  if (h == NULL)
    return;
  h->stopping = 1;
  for (stream *st = h->streams; st != NULL; st = st->next) {
    if (st->reading)
      continue; /* a state being read is sent first: on_read_done ends it */
    st->ended = 1;
    wake(st);
  }
  uv_timer_stop(&h->keepalive);
  uv_timer_stop(&h->reconnect);
  for (size_t i = 0; i < h->nq; i++) {
    /* Freed, not disconnected: in its MONITOR-like mode (on_message)
     * hiredis keeps a callback waiting for ever, and a disconnect would
     * wait for it. on_disconnect runs, and subscribes nothing again. */
    if (h->q[i].ac != NULL)
      redisAsyncFree(h->q[i].ac);
  }
}

static void on_closed(uv_handle_t *t) {
  srv_hub *h = t->data;

  if (--h->open_handles == 0) { /* libuv closes in no set order: the last one frees */
    sl__url_free(&h->url);
    sl_free(h);
  }
}

void srv_hub_free(sl_srv *s) {
  srv_hub *h = s->hub;

  if (h == NULL)
    return;
  s->hub = NULL;
  h->open_handles = 2;
  uv_close((uv_handle_t *)&h->keepalive, on_closed);
  uv_close((uv_handle_t *)&h->reconnect, on_closed);
}
