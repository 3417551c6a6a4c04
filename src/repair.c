/*
 * Repair: puts back or ends the items of an unfinished batch that are
 * nowhere, so that the batch can end (`sluice repair [BATCH]`, and cancel).
 *
 * An item of an unfinished batch is always in exactly one place: a
 * priority stream (pending or not), the delayed set, its batch's parked
 * stream (b:ID:p), a limit's waiting stream (cw:NAME), or the results. The
 * functions keep that true, even across a Redis rollback: none deletes the
 * only copy of an item without writing what replaces it in the same call,
 * and completions are fenced. What can still break it is outside them: a
 * deletion by hand, a bug of an older version, an operator's XGROUP SETID.
 *
 * The search, from this client, in bounded commands (Redis serves everyone
 * else between them):
 *
 *   1. read the batch's `moves` (every call that moves one of its
 *      unfinished items backwards, to a place the search may have read
 *      already, adds one: a retry into the delayed set, a pause, a wait for
 *      a limit, a requeue out of the results);
 *   2. mark every index of the batch seen in the delayed set, its parked
 *      stream, each waiting stream, the three priority streams (each read
 *      to its end, where moved items arrive) and, last, the results; while
 *      reading a priority stream, note the entries of the batch that are
 *      pending to nobody although the group has read past them (stuck: no
 *      worker would ever read them again);
 *   3. read `moves` again: a different value means an item may have slipped
 *      past the search, so search again, after a pause (SEARCH_TRIES times,
 *      waiting longer each time).
 *
 * Every other move goes forward in the order of the search (to the end of
 * a stream, or into the results), so a search with the same counter at both
 * ends has seen every item somewhere. Then sluice_v1_repair puts the stuck
 * entries back at the ends of their streams and ends the unseen items:
 * their item JSON is gone, so they cannot run again; they end `failed`
 * with an error that says so (`cancelled` in a cancelled batch), and the
 * batch's `lost` counter counts them. The step that ends items checks the
 * counter again inside Redis and refuses when it moved. A batch whose items
 * keep moving backwards (retries in full swing) is not stuck: the repair
 * gives up on it with SL_EAGAIN and changes nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "conn.h"
#include "script.h"

#define SCAN_COUNT 1000  /* entries or fields per read */
#define STEP_MAX 1000    /* items per sluice_v1_repair call */
#define SEARCH_TRIES 8   /* searches before giving up on a batch whose items keep moving */
#define SEARCH_PAUSE_MS 100 /* before the second search; doubled each time, at most 1 s */

/* A stream entry id, MS-SEQ. */
typedef struct sid {
  uint64_t ms;
  uint64_t seq;
} sid;

typedef struct search {
  sl_client_t *c;
  const sl_keys *k;
  const char *batch;
  long long total;       /* the batch's items: indexes 0..total-1 */
  unsigned char *seen;   /* one bit per index */
  char (*stuck)[48];     /* "S ID" of stuck entries */
  size_t nstuck;
  size_t capstuck;
} search;

static int parse_sid(const char *s, sid *out) {
  char *end;

  out->ms = strtoull(s, &end, 10);
  if (*end != '-')
    return -1;
  out->seq = strtoull(end + 1, &end, 10);
  return *end == '\0' ? 0 : -1;
}

static int sid_cmp(const sid *a, const sid *b) {
  if (a->ms != b->ms)
    return a->ms < b->ms ? -1 : 1;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void mark(search *s, const char *idx) {
  char *end;
  long long i = strtoll(idx, &end, 10);

  if (*end == '\0' && i >= 0 && i < s->total)
    s->seen[i / 8] |= (unsigned char)(1u << (i % 8));
}

static int seen(const search *s, long long i) {
  return (s->seen[i / 8] >> (i % 8)) & 1;
}

/* Runs a command given as NULL-terminated words. */
static redisReply *run(sl_client_t *c, int *rc, const char **av) {
  int argc = 0;

  while (av[argc] != NULL)
    argc++;
  return sl__client_cmd(c, rc, argc, av, NULL);
}

/* The entry fields f (name, value, ...) belong to the batch: returns the
 * item index, else NULL. */
static const char *entry_index(const redisReply *f, const char *batch) {
  const char *b = NULL;
  const char *i = NULL;

  for (size_t n = 0; f->type == REDIS_REPLY_ARRAY && n + 1 < f->elements; n += 2) {
    const char *name = f->element[n]->str;
    const char *v = f->element[n + 1]->str;

    if (name == NULL || v == NULL)
      continue;
    if (strcmp(name, "b") == 0 && b == NULL)
      b = v;
    else if (strcmp(name, "i") == 0 && i == NULL)
      i = v;
  }
  return b != NULL && i != NULL && strcmp(b, batch) == 0 ? i : NULL;
}

static int add_stuck(search *s, int prio, const char *id) {
  if (s->nstuck == s->capstuck) {
    size_t cap = s->capstuck ? 2 * s->capstuck : 64;
    char(*n)[48] = sl_realloc(s->stuck, cap * sizeof(*n));

    if (n == NULL)
      return sl__client_fail(s->c, SL_ENOMEM, "out of memory noting stuck entries");
    s->stuck = n;
    s->capstuck = cap;
  }
  snprintf(s->stuck[s->nstuck++], sizeof(s->stuck[0]), "%d %s", prio, id);
  return 0;
}

/* Reads stream `key` from start to end, SCAN_COUNT entries per XRANGE,
 * marking the batch's indexes. In a priority stream (prio 1-3), an
 * entry of the batch at or before `last` (the group's last delivered id)
 * that is not in pel (npel ids, sorted) is stuck. */
static int read_stream(search *s, const char *key, int prio, const sid *pel, size_t npel, const sid *last) {
  char start[48] = "-";
  char count[16];
  int rc = 0;

  snprintf(count, sizeof(count), "%d", SCAN_COUNT);
  for (;;) {
    const char *av[] = {"XRANGE", key, start, "+", "COUNT", count, NULL};
    redisReply *r = run(s->c, &rc, av);

    if (r == NULL)
      return rc;
    for (size_t e = 0; e < r->elements; e++) {
      const redisReply *ent = r->element[e];
      const char *idx = entry_index(ent->element[1], s->batch);
      sid id;

      if (idx == NULL)
        continue;
      mark(s, idx);
      if (prio > 0 && parse_sid(ent->element[0]->str, &id) == 0 && sid_cmp(&id, last) <= 0) {
        size_t lo = 0;
        size_t hi = npel;

        while (lo < hi) {
          size_t mid = (lo + hi) / 2;

          if (sid_cmp(&pel[mid], &id) < 0)
            lo = mid + 1;
          else
            hi = mid;
        }
        if ((lo == npel || sid_cmp(&pel[lo], &id) != 0) && (rc = add_stuck(s, prio, ent->element[0]->str)) != 0)
          break;
      }
    }
    if (rc == 0 && r->elements == (size_t)SCAN_COUNT)
      snprintf(start, sizeof(start), "(%s", r->element[r->elements - 1]->element[0]->str);
    else
      start[0] = '\0';
    freeReplyObject(r);
    if (rc != 0 || start[0] == '\0')
      return rc;
  }
}

/* The group's pending ids of a priority stream, sorted, and its last
 * delivered id. */
static int read_pel(search *s, const char *key, sid **out, size_t *n, sid *last) {
  const char *av[] = {"XINFO", "GROUPS", key, NULL};
  char start[48] = "-";
  char count[16];
  size_t cap = 0;
  sid *pel = NULL;
  redisReply *r;
  int rc = 0;

  *out = NULL;
  *n = 0;
  last->ms = 0;
  last->seq = 0;
  r = run(s->c, &rc, av);
  if (r == NULL)
    return rc;
  for (size_t g = 0; g < r->elements; g++) {
    const redisReply *grp = r->element[g];
    const char *name = NULL;
    const char *ldi = NULL;

    for (size_t f = 0; f + 1 < grp->elements; f += 2) {
      if (grp->element[f]->str == NULL)
        continue;
      if (strcmp(grp->element[f]->str, "name") == 0)
        name = grp->element[f + 1]->str;
      else if (strcmp(grp->element[f]->str, "last-delivered-id") == 0)
        ldi = grp->element[f + 1]->str;
    }
    if (name != NULL && ldi != NULL && strcmp(name, SL_GROUP) == 0)
      parse_sid(ldi, last);
  }
  freeReplyObject(r);
  snprintf(count, sizeof(count), "%d", SCAN_COUNT);
  for (;;) {
    const char *pv[] = {"XPENDING", key, SL_GROUP, start, "+", count, NULL};

    r = run(s->c, &rc, pv);
    if (r == NULL)
      break;
    for (size_t e = 0; e < r->elements; e++) {
      if (*n == cap) {
        sid *m = sl_realloc(pel, (cap = cap ? 2 * cap : 256) * sizeof(*m));

        if (m == NULL) {
          rc = sl__client_fail(s->c, SL_ENOMEM, "out of memory reading pending entries");
          break;
        }
        pel = m;
      }
      if (parse_sid(r->element[e]->element[0]->str, &pel[*n]) == 0)
        (*n)++;
    }
    if (rc == 0 && r->elements == (size_t)SCAN_COUNT)
      snprintf(start, sizeof(start), "(%s", r->element[r->elements - 1]->element[0]->str);
    else
      start[0] = '\0';
    freeReplyObject(r);
    if (rc != 0 || start[0] == '\0')
      break;
  }
  if (rc != 0) {
    sl_free(pel);
    *n = 0;
    return rc;
  }
  *out = pel;
  return 0;
}

/* SCAN-family read (ZSCAN, HSCAN): calls take() on every member or field
 * name. */
static int read_scan(search *s, const char *cmd, const char *key, const char *match,
                     void (*take)(search *, const char *)) {
  char cursor[32] = "0";
  char count[16];
  int rc = 0;

  snprintf(count, sizeof(count), "%d", SCAN_COUNT);
  do {
    const char *av[] = {cmd, key, cursor, "COUNT", count, match ? "MATCH" : NULL, match, NULL};
    redisReply *r = run(s->c, &rc, av);

    if (r == NULL)
      return rc;
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i + 1 < r->element[1]->elements; i += 2)
      take(s, r->element[1]->element[i]->str);
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  return 0;
}

/* A delayed member "S\nBATCH\nINDEX\n...". */
static void take_delayed(search *s, const char *m) {
  const char *b = strchr(m, '\n');
  const char *i = b ? strchr(b + 1, '\n') : NULL;
  char idx[24];
  size_t n;

  if (i == NULL)
    return;
  n = strcspn(i + 1, "\n");
  if (n >= sizeof(idx))
    return;
  memcpy(idx, i + 1, n);
  idx[n] = '\0';
  mark(s, idx);
}

static void take_field(search *s, const char *idx) {
  mark(s, idx);
}

/* Reads the batch's `moves`. */
static int read_moves(search *s, char *out, size_t len) {
  char key[1024];
  const char *av[] = {"HGET", key, "moves", NULL};
  redisReply *r;
  int rc = 0;

  snprintf(key, sizeof(key), "%sb:%s", s->k->prefix, s->batch);
  r = run(s->c, &rc, av);
  if (r == NULL)
    return rc;
  snprintf(out, len, "%s", r->type == REDIS_REPLY_STRING ? r->str : "0");
  freeReplyObject(r);
  return 0;
}

/* One search (steps 2 of the header). */
static int search_once(search *s) {
  char key[1024];
  char match[1024];
  redisReply *r;
  int rc = 0;

  memset(s->seen, 0, (size_t)(s->total + 7) / 8);
  s->nstuck = 0;
  snprintf(key, sizeof(key), "%sdelayed", s->k->prefix);
  snprintf(match, sizeof(match), "?\n%s\n*", s->batch);
  if ((rc = read_scan(s, "ZSCAN", key, match, take_delayed)) != 0)
    return rc;
  snprintf(key, sizeof(key), "%sb:%s:p", s->k->prefix, s->batch);
  if ((rc = read_stream(s, key, 0, NULL, 0, NULL)) != 0)
    return rc;
  {
    char lkey[1024];
    const char *av[] = {"HGETALL", lkey, NULL};

    snprintf(lkey, sizeof(lkey), "%slimits", s->k->prefix);
    r = run(s->c, &rc, av);
    if (r == NULL)
      return rc;
    for (size_t i = 0; rc == 0 && i + 1 < r->elements; i += 2) {
      snprintf(key, sizeof(key), "%scw:%s", s->k->prefix, r->element[i]->str);
      rc = read_stream(s, key, 0, NULL, 0, NULL);
    }
    freeReplyObject(r);
    if (rc != 0)
      return rc;
  }
  for (int p = 0; p < 3; p++) {
    sid *pel;
    size_t npel;
    sid last;

    if ((rc = read_pel(s, s->k->stream[p], &pel, &npel, &last)) != 0)
      return rc;
    rc = read_stream(s, s->k->stream[p], p + 1, pel, npel, &last);
    sl_free(pel);
    if (rc != 0)
      return rc;
  }
  snprintf(key, sizeof(key), "%sb:%s:r", s->k->prefix, s->batch);
  return read_scan(s, "HSCAN", key, NULL, take_field);
}

/* FCALL sluice_v1_repair with the words after the mode. Returns the
 * count it answered in *n; SL_EAGAIN when the counter moved. */
static int step(search *s, const char *mode, const char **words, size_t nwords, long long *n) {
  char bkey[1024];
  const char **av = sl_malloc((9 + nwords) * sizeof(*av));
  redisReply *r;
  int rc = 0;

  if (av == NULL)
    return sl__client_fail(s->c, SL_ENOMEM, "out of memory repairing batch %s", s->batch);
  snprintf(bkey, sizeof(bkey), "%sb:%s", s->k->prefix, s->batch);
  av[0] = s->k->stream[0];
  av[1] = s->k->stream[1];
  av[2] = s->k->stream[2];
  av[3] = bkey;
  av[4] = s->k->prefix;
  av[5] = s->k->queue;
  av[6] = SL_GROUP;
  av[7] = s->batch;
  av[8] = mode;
  memcpy(av + 9, words, nwords * sizeof(*av));
  r = sl__client_fcall(s->c, &rc, "repair", 4, (int)(9 + nwords), av, NULL);
  sl_free(av);
  if (r == NULL)
    return strstr(s->c->errstr, "SLUICE_MOVED") != NULL ? SL_EAGAIN : rc;
  *n += r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
  freeReplyObject(r);
  return 0;
}

/* Puts back the stuck entries, then ends the unseen items. */
static int fix(search *s, const char *moves, sl_repair_report *rep) {
  const char *words[2 * 250 + 1];
  char (*idx)[24] = sl_malloc(STEP_MAX * sizeof(*idx));
  size_t n = 0;
  int rc = 0;

  if (idx == NULL)
    return sl__client_fail(s->c, SL_ENOMEM, "out of memory repairing batch %s", s->batch);
  for (size_t i = 0; rc == 0 && i < s->nstuck; i += 250) {
    size_t k = 0;

    for (size_t j = i; j < s->nstuck && j < i + 250; j++) {
      char *sp = strchr(s->stuck[j], ' ');

      *sp = '\0';
      words[k++] = s->stuck[j];
      words[k++] = sp + 1;
    }
    rc = step(s, "stuck", words, k, &rep->put_back);
  }
  words[0] = moves;
  for (long long i = 0; rc == 0 && i <= s->total; i++) {
    if (i < s->total && !seen(s, i)) {
      snprintf(idx[n++], sizeof(idx[0]), "%lld", i);
      rep->missing++;
    }
    if (n > 0 && (n == STEP_MAX || i == s->total)) {
      const char **av = sl_malloc((n + 1) * sizeof(*av));

      if (av == NULL) {
        rc = sl__client_fail(s->c, SL_ENOMEM, "out of memory repairing batch %s", s->batch);
        break;
      }
      av[0] = moves;
      for (size_t j = 0; j < n; j++)
        av[j + 1] = idx[j];
      rc = step(s, "lost", av, n + 1, &rep->ended);
      sl_free(av);
      n = 0;
    }
  }
  sl_free(idx);
  return rc;
}

SL_EXTERN int sl_batch_repair(sl_client_t *c, const char *queue, const char *batch, sl_repair_report *rep) {
  sl_keys k;
  search s = {0};
  char bkey[1024];
  const char *av[] = {"HMGET", bkey, "status", "total", "done", "whole", NULL};
  redisReply *r;
  int rc = 0;

  memset(rep, 0, sizeof(*rep));
  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  if (strlen(batch) > SL_NAME_MAX)
    return sl__client_fail(c, SL_EINVAL, "invalid batch id: longer than %d bytes", SL_NAME_MAX);
  snprintf(bkey, sizeof(bkey), "%sb:%s", k.prefix, batch);
  r = run(c, &rc, av);
  if (r == NULL)
    return rc;
  if (r->element[0]->type != REDIS_REPLY_STRING) {
    freeReplyObject(r);
    return sl__client_fail(c, SL_ENOTFOUND, "no batch %s in queue %s", batch, k.queue);
  }
  snprintf(rep->status, sizeof(rep->status), "%s", r->element[0]->str);
  rep->total = r->element[1]->str ? strtoll(r->element[1]->str, NULL, 10) : 0;
  rep->done = r->element[2]->str ? strtoll(r->element[2]->str, NULL, 10) : 0;
  rep->whole = r->element[3]->str != NULL && strcmp(r->element[3]->str, "1") == 0;
  freeReplyObject(r);
  if (!rep->whole || rep->done >= rep->total || strcmp(rep->status, "completed") == 0)
    return 0; /* still being submitted, or ended: nothing to search for */
  s.c = c;
  s.k = &k;
  s.batch = batch;
  s.total = rep->total;
  s.seen = sl_malloc((size_t)(s.total + 7) / 8);
  if (s.seen == NULL)
    return sl__client_fail(c, SL_ENOMEM, "out of memory searching the %lld items of batch %s", s.total, batch);
  for (int tries = 0; tries < SEARCH_TRIES; tries++) {
    char before[32];
    char after[32];

    if (tries > 0) {
      long ms = SEARCH_PAUSE_MS << (tries - 1);
      struct timespec ts;

      if (ms > 1000)
        ms = 1000;
      ts.tv_sec = ms / 1000;
      ts.tv_nsec = (ms % 1000) * 1000000L;
      nanosleep(&ts, NULL);
    }
    rep->searches++;
    if ((rc = read_moves(&s, before, sizeof(before))) != 0 || (rc = search_once(&s)) != 0 ||
        (rc = read_moves(&s, after, sizeof(after))) != 0)
      break;
    if (strcmp(before, after) != 0) {
      rc = SL_EAGAIN;
      continue;
    }
    rep->missing = 0;
    rc = fix(&s, before, rep);
    if (rc != SL_EAGAIN)
      break;
  }
  if (rc == SL_EAGAIN)
    rc = sl__client_fail(c, SL_EAGAIN, "the batch is not stuck: its items kept moving (retries, a pause or a limit "
                         "at work) during %d searches, so a missing item cannot be told from a moving one; nothing "
                         "was changed. Run the repair again once the batch stops making progress", SEARCH_TRIES);
  sl_free(s.seen);
  sl_free(s.stuck);
  return rc;
}
