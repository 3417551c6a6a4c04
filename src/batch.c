/*
 * Reading batches: results and the list of a queue's batches (their state
 * is batchstate.c's), plus controlling one: cancel (and abort), pause and
 * resume. All reads are plain Redis commands on the batch hash
 * (sluice:{Q}:b:ID), its results hash (…:r, item index -> results line) and
 * the queue's index (sluice:{Q}:batches); the layout is in docs/PROTOCOL.md.
 */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "conn.h"
#include "id.h"
#include "json.h"
#include "labels.h"

#define RESULTS_PAGE 1000 /* HMGET fields per call */
#define RESUME_STEP "250" /* parked items one resume call puts back (a few ms of Redis) */
#define LIST_PAGE 100     /* batches per round trip of sl_batch_list */
#define SL_LIST_ID_MAX 128 /* longest batch id the listing carries */
#define CANCEL_STEP "200" /* parked or delayed entries one cancel call examines */

/* 1 when a results line's status is failed. The first unescaped "status":
 * is the line's own field: it follows the id, a JSON string in which quotes
 * are escaped, and comes before result or error. */
static int line_failed(const char *line) {
  const char *st = strstr(line, "\"status\":");

  return st != NULL && strncmp(st + 9, "\"failed\"", 8) == 0;
}

/* The batch's index bound: `indexed` (items skipped as duplicates have an
 * index too), or `submitted` for batches older than dedupe; -1 with the
 * client's error when there is no such batch. */
static long long index_bound(sl_client_t *c, const sl_keys *k, const char *batch, int *rc) {
  char bkey[256];
  const char *av[5] = {"HMGET", bkey, "indexed", "submitted", "status"};
  redisReply *r;
  long long n = -1;

  snprintf(bkey, sizeof(bkey), "%sb:%s", k->prefix, batch);
  r = sl__client_cmd(c, rc, 5, av, NULL);
  if (r == NULL)
    return -1;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING)
    n = strtoll(r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str
                : r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str
                                                             : "0",
                NULL, 10);
  freeReplyObject(r);
  if (n < 0)
    *rc = sl__client_fail(c, SL_ENOTFOUND, "no batch %s in queue %s (wrong --queue, or it expired)", batch,
                          k->queue);
  return n;
}

int sl__results_walk(sl_client_t *c, const sl_keys *k, const char *batch, size_t from, sl__result_fn fn, void *ud) {
  char rkey[256];
  char (*nums)[24] = NULL;
  const char **av = NULL;
  long long indexed;
  int rc = 0;

  indexed = index_bound(c, k, batch, &rc);
  if (indexed < 0)
    return rc;
  snprintf(rkey, sizeof(rkey), "%sb:%s:r", k->prefix, batch);
  nums = sl_malloc(RESULTS_PAGE * sizeof(*nums));
  av = sl_malloc((RESULTS_PAGE + 2) * sizeof(*av));
  if (nums == NULL || av == NULL) {
    rc = sl__client_fail(c, SL_ENOMEM, "out of memory");
    goto out;
  }
  av[0] = "HMGET";
  av[1] = rkey;
  /* Pages of HMGET by item index keep submit order without sorting. */
  for (long long first = (long long)from; first < indexed && rc == 0; first += RESULTS_PAGE) {
    long long n = indexed - first < RESULTS_PAGE ? indexed - first : RESULTS_PAGE;
    redisReply *r;

    for (long long i = 0; i < n; i++) {
      snprintf(nums[i], sizeof(nums[i]), "%lld", first + i);
      av[2 + i] = nums[i];
    }
    r = sl__client_cmd(c, &rc, (int)n + 2, av, NULL);
    if (r == NULL)
      goto out;
    for (size_t i = 0; i < r->elements && rc == 0; i++) {
      const redisReply *e = r->element[i];

      if (e->type == REDIS_REPLY_STRING) /* else not finished yet */
        rc = fn((size_t)first + i, e->str, e->len, ud);
    }
    freeReplyObject(r);
  }
out:
  sl_free(nums);
  sl_free(av);
  return rc;
}

/* sl_batch_results_page's walk: the filter, the callback and the page. */
typedef struct page_walk {
  int flags;       /* SL_RESULTS_* */
  size_t limit;    /* lines per page, 0: all */
  size_t given;    /* lines given so far */
  size_t *next;    /* where the next page starts, or NULL */
  sl_line_cb cb;   /* the caller's */
  void *ud;
} page_walk;

#define PAGE_FULL (-1000) /* a page_line return: the page is full (not an SL_E* code) */

static int page_line(size_t index, const char *line, size_t len, void *ud) {
  page_walk *p = ud;

  if (p->limit > 0 && p->given == p->limit) {
    if (p->next != NULL)
      *p->next = index; /* the page is full: the rest from here */
    return PAGE_FULL;
  }
  if ((p->flags & SL_RESULTS_FAILED) && !line_failed(line))
    return 0;
  p->given++;
  return p->cb(line, len, p->ud);
}

SL_EXTERN int sl_batch_results_page(sl_client_t *c, const char *queue, const char *batch, int flags, size_t from,
                                    size_t limit, size_t *next, sl_line_cb cb, void *ud) {
  sl_keys k;
  page_walk p = {flags, limit, 0, next, cb, ud};
  int rc;

  if (next != NULL)
    *next = 0;
  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  rc = sl__results_walk(c, &k, batch, from, page_line, &p);
  return rc == PAGE_FULL ? 0 : rc;
}

SL_EXTERN int sl_batch_results(sl_client_t *c, const char *queue, const char *batch, int flags,
                               sl_line_cb cb, void *ud) {
  return sl_batch_results_page(c, queue, batch, flags, 0, 0, NULL, cb, ud);
}

/* The states of ids[0..n) (sl__batch_state) in one pipelined round trip:
 * h[i] gets each (an empty array for a batch that expired meanwhile). */
static int page_hashes(sl_client_t *c, const sl_keys *k, char (*ids)[SL_LIST_ID_MAX], size_t n, redisReply **h) {
  char key[1024];
  int rc = sl__client_route(c, k->stream[0]);

  if (rc != 0)
    return rc;
  for (size_t i = 0; i < n; i++) {
    const char *av[4] = {"FCALL_RO", "sluice_v1_state", "1", key};

    snprintf(key, sizeof(key), "%sb:%s", k->prefix, ids[i]);
    if (redisAppendCommandArgv(c->rc, 4, av, NULL) != REDIS_OK)
      return sl__client_fail(c, SL_ENOMEM, "out of memory listing batches");
  }
  for (size_t i = 0; i < n; i++) {
    void *r = NULL;

    if (redisGetReply(c->rc, &r) != REDIS_OK) {
      int code = sl__client_fail(c, SL_ECONN, "lost the Redis connection listing batches: %s", c->rc->errstr);

      while (i > 0)
        freeReplyObject(h[--i]);
      return code;
    }
    if (((redisReply *)r)->type == REDIS_REPLY_ERROR) {
      int code = sl__client_fail(c, SL_EREDIS, "listing batches: %s", ((redisReply *)r)->str);

      freeReplyObject(r);
      while (i > 0)
        freeReplyObject(h[--i]);
      return code;
    }
    h[i] = sl__batch_state_take(r);
  }
  return 0;
}

static const char *const statuses[] = {"submitting", "queued", "running", "paused", "completed", "cancelled", NULL};

/* The listing pages one sorted set by score (created_at), newest first:
 * P batches, or P bs:STATUS with --status (kept by the functions at every
 * change of status, so a filter reads only the batches it shows). The
 * cursor is the last batch shown and its score: the next page is what
 * comes after it in (score, id) order, both descending, as ZRANGE ... REV
 * orders them. Batches added meanwhile are newer, so none is shown twice
 * or missed; one that changes status meanwhile may leave the set or join
 * it, as it would between two listings. */
SL_EXTERN int sl_batch_list_with(sl_client_t *c, const char *queue, const sl_list_opts *o, sl_line_cb cb,
                                 void *ud) {
  const char *status = o->status;
  const char *after = o->after;
  size_t limit = o->limit;
  size_t examined = 0;
  sl_keys k;
  sl_buf out;
  char key[320];
  char max[64] = "+inf"; /* the cursor's score, inclusive */
  char cur[SL_LIST_ID_MAX] = "";
  char(*ids)[SL_LIST_ID_MAX] = NULL;
  redisReply *h[LIST_PAGE];
  size_t shown = 0;
  long long off = 0; /* members at the cursor's score passed over already */
  int rc = 0;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  snprintf(key, sizeof(key), "%s", k.batches);
  if (o->last != NULL)
    o->last[0] = '\0';
  if (o->tenant != NULL && (strlen(o->tenant) == 0 || strlen(o->tenant) > SL_NAME_MAX))
    return sl__client_fail(c, SL_EINVAL, "invalid tenant \"%.80s\"", o->tenant);
  if (o->label != NULL) {
    char why[160];

    if (sl__labels_filter_check(o->label, why, sizeof(why)) != 0)
      return sl__client_fail(c, SL_EINVAL, "%s", why);
  }
  if (status != NULL) {
    size_t i = 0;

    while (statuses[i] != NULL && strcmp(statuses[i], status) != 0)
      i++;
    if (statuses[i] == NULL)
      return sl__client_fail(c, SL_EINVAL, "unknown status \"%s\" (submitting, queued, running, paused, completed "
                             "or cancelled)", status);
    snprintf(key, sizeof(key), "%sbs:%s", k.prefix, status);
  }
  if (o->tenant != NULL)
    snprintf(key, sizeof(key), "%sbt:%s", k.prefix, o->tenant); /* the tenant's own index; status from the hash */
  if (after != NULL) {
    const char *zv[3] = {"ZSCORE", k.batches, after};
    redisReply *r = sl__client_cmd(c, &rc, 3, zv, NULL);

    if (r == NULL)
      return rc;
    if (r->type != REDIS_REPLY_STRING || strlen(after) >= sizeof(cur)) {
      freeReplyObject(r);
      return sl__client_fail(c, SL_ENOTFOUND, "batch %s is not in the list of queue %s (it expired, or the id is "
                             "wrong): list again without --after", after, k.queue);
    }
    snprintf(max, sizeof(max), "%s", r->str);
    snprintf(cur, sizeof(cur), "%s", after);
    freeReplyObject(r);
  }
  ids = sl_malloc(sizeof(*ids) * LIST_PAGE);
  if (ids == NULL)
    return sl__client_fail(c, SL_ENOMEM, "out of memory listing batches");
  sl__buf_init(&out, 4096);
  while (rc == 0 && (limit == 0 || shown < limit)) {
    char offs[24];
    char page[24];
    const char *zv[10] = {"ZRANGE", key, max, "-inf", "BYSCORE", "REV", "LIMIT", offs, page, "WITHSCORES"};
    redisReply *r;
    size_t n = 0;
    size_t got;
    char last_score[64] = "";

    snprintf(offs, sizeof(offs), "%lld", off);
    snprintf(page, sizeof(page), "%d", LIST_PAGE);
    r = sl__client_cmd(c, &rc, 10, zv, NULL);
    if (r == NULL)
      break;
    got = r->elements / 2;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
      const redisReply *m = r->element[i];
      const redisReply *sc = r->element[i + 1];

      /* at the cursor's score, the ids at or above the cursor's came before */
      if (cur[0] != '\0' && strcmp(sc->str, max) == 0 && strcmp(m->str, cur) >= 0)
        continue;
      if (m->len >= SL_LIST_ID_MAX)
        continue; /* no batch id is that long */
      memcpy(ids[n], m->str, m->len + 1);
      snprintf(last_score, sizeof(last_score), "%s", sc->str);
      n++;
    }
    freeReplyObject(r);
    if (n == 0) {
      if (got < LIST_PAGE)
        break;
      off += (long long)got; /* a page of ties at the cursor's score, all shown already */
      continue;
    }
    if ((rc = page_hashes(c, &k, ids, n, h)) != 0)
      break;
    for (size_t i = 0; i < n; i++) {
      const char *st = h[i]->type == REDIS_REPLY_ARRAY && h[i]->elements > 0 ? sl__hfield(h[i], "status") : NULL;
      const char *tn = st != NULL ? sl__hfield(h[i], "tenant") : NULL;
      const char *nm = st != NULL ? sl__hfield(h[i], "name") : NULL;

      if (rc == 0 && st != NULL && (status == NULL || strcmp(st, status) == 0) &&
          (o->tenant == NULL || (tn != NULL && strcmp(tn, o->tenant) == 0)) &&
          (o->name == NULL || (nm != NULL && strcmp(nm, o->name) == 0)) &&
          (o->label == NULL || sl__labels_match(sl__hfield(h[i], "labels"), o->label)) && (limit == 0 || shown < limit)) {
        sl__buf_reset(&out);
        rc = sl__batch_json(&out, &k, ids[i], h[i]);
        if (rc == 0)
          rc = cb(out.p, out.len, ud);
        shown++;
        if (o->last != NULL && limit > 0 && shown == limit)
          snprintf(o->last, SL_LIST_CURSOR_MAX, "%s", ids[i]); /* a full page: more may follow */
      }
      freeReplyObject(h[i]);
    }
    examined += n;
    if (got < LIST_PAGE)
      break;
    if (o->max_examined > 0 && examined >= o->max_examined && (limit == 0 || shown < limit)) {
      if (o->last != NULL)
        snprintf(o->last, SL_LIST_CURSOR_MAX, "%s", ids[n - 1]); /* enough looked at: go on from here */
      break;
    }
    snprintf(max, sizeof(max), "%s", last_score);
    snprintf(cur, sizeof(cur), "%s", ids[n - 1]);
    off = 0;
  }
  sl__buf_free(&out);
  sl_free(ids);
  return rc;
}

SL_EXTERN int sl_batch_list_after(sl_client_t *c, const char *queue, const char *status, size_t limit,
                                  const char *after, sl_line_cb cb, void *ud) {
  sl_list_opts o = {status, NULL, NULL, after, limit, 0, NULL};

  return sl_batch_list_with(c, queue, &o, cb, ud);
}

SL_EXTERN int sl_batch_list(sl_client_t *c, const char *queue, const char *status, size_t limit,
                            sl_line_cb cb, void *ud) {
  return sl_batch_list_after(c, queue, status, limit, NULL, cb, ud);
}

/* cancel, with or without aborting running items. */
static int cancel(sl_client_t *c, const char *queue, const char *batch, int abort_running) {
  sl_keys k;
  char bkey[256];
  char dkey[128];
  const char *av[8];
  redisReply *r;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  snprintf(bkey, sizeof(bkey), "%sb:%s", k.prefix, batch);
  snprintf(dkey, sizeof(dkey), "%sdelayed", k.prefix);
  av[0] = bkey;
  av[1] = dkey;
  av[2] = k.prefix;
  av[3] = k.queue;
  av[4] = batch;
  av[5] = abort_running ? "1" : "0";
  av[6] = CANCEL_STEP;
  av[7] = c->actor;
  /* bounded steps: the first cancels, each finishes parked and delayed items */
  for (;;) {
    r = sl__client_fcall(c, &rc, "cancel", 2, 8, av, NULL);
    if (r == NULL) {
      if (strstr(c->errstr, "SLUICE_NOTFOUND") != NULL)
        return sl__client_fail(c, SL_ENOTFOUND, "no batch %s in queue %s", batch, k.queue);
      return rc;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->integer == 0)
      break;
    freeReplyObject(r);
  }
  freeReplyObject(r);
  /* A cancelled batch always ends: items Redis lost (nowhere to be met by
   * a worker) are counted cancelled now. Best effort: `sluice repair`
   * does the same later. */
  {
    sl_repair_report rep;

    sl_batch_repair(c, queue, batch, &rep);
    c->errstr[0] = '\0';
  }
  return 0;
}

SL_EXTERN int sl_batch_cancel(sl_client_t *c, const char *queue, const char *batch) {
  return cancel(c, queue, batch, 0);
}

SL_EXTERN int sl_batch_abort(sl_client_t *c, const char *queue, const char *batch) {
  return cancel(c, queue, batch, 1);
}

/* Runs sluice_v1_pause or sluice_v1_resume on a batch. */
static int pause_resume(sl_client_t *c, const char *queue, const char *batch, int resume) {
  sl_keys k;
  char bkey[256];
  const char *av[9];
  redisReply *r;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  snprintf(bkey, sizeof(bkey), "%sb:%s", k.prefix, batch);
  if (resume) {
    av[0] = bkey;
    av[1] = k.stream[0];
    av[2] = k.stream[1];
    av[3] = k.stream[2];
    av[4] = k.prefix;
    av[5] = k.queue;
    av[6] = batch;
    av[7] = RESUME_STEP;
    av[8] = c->actor;
    /* bounded steps: the first resumes, each puts back parked items */
    for (;;) {
      r = sl__client_fcall(c, &rc, "resume", 4, 9, av, NULL);
      if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
          r->element[1]->type != REDIS_REPLY_INTEGER || r->element[1]->integer == 0)
        break;
      freeReplyObject(r);
    }
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
      freeReplyObject(r);
      return 0;
    }
  } else {
    av[0] = bkey;
    av[1] = k.prefix;
    av[2] = k.queue;
    av[3] = batch;
    av[4] = c->actor;
    r = sl__client_fcall(c, &rc, "pause", 1, 5, av, NULL);
  }
  if (r == NULL) {
    if (strstr(c->errstr, "SLUICE_NOTFOUND") != NULL)
      return sl__client_fail(c, SL_ENOTFOUND, "no batch %s in queue %s", batch, k.queue);
    return rc;
  }
  rc = 0;
  if (!resume && r->type == REDIS_REPLY_STRING && strcmp(r->str, "paused") != 0)
    rc = sl__client_fail(c, SL_EINVAL, "batch %s is %s: only a queued, submitting or running batch can be paused",
                         batch, r->str);
  freeReplyObject(r);
  return rc;
}

SL_EXTERN int sl_batch_pause(sl_client_t *c, const char *queue, const char *batch) {
  return pause_resume(c, queue, batch, 0);
}

SL_EXTERN int sl_batch_resume(sl_client_t *c, const char *queue, const char *batch) {
  return pause_resume(c, queue, batch, 1);
}
