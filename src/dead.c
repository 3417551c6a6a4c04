/*
 * Failed items and dead letters: `sluice retry` and `sluice dead
 * list|requeue|purge`.
 *
 * An item that fails for good leaves two traces (sl_dead in lua/_lib.lua): a
 * dead letter in the queue's stream sluice:{Q}:dead (fields b, i, p, a, at,
 * error, d), capped at about 100,000 letters, and an entry in its batch's
 * failed-items hash sluice:{Q}:b:BATCH:f (item index -> "priority\nletter
 * id\nitem JSON"). Running items again is done by two functions,
 * sluice_v1_retry (per batch, from the failed-items hash) and
 * sluice_v1_dead_requeue (per letter), each in atomic steps of at most
 * STEP_MAX items so that no single call holds Redis for long; both are
 * idempotent, so a step sent again after a lost reply moves nothing twice.
 * Listing and purging letters are plain reads (or one small function) here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"
#include "conn.h"
#include "item.h"
#include "json.h"
#include "script.h"

#define STEP_MAX 100           /* items or letters per function call (a few ms of Redis) */
#define STEP_MAX_S "100"       /* the same, as an argument */
#define LIST_PAGE 1000         /* letters per XREVRANGE */
#define LINE_MAX_BYTES (4 * SL_ITEM_MAX_LINE) /* one listed letter or worker, bytes */
#define ITEM_MEMBERS 32        /* top-level fields read from an item's JSON */
#define STREAM_ID_MAX 41       /* "MS-SEQ": two 20-digit numbers and a dash */

/* ---- Argument checks ---- */

/* 1 when s is a batch id sluice_v1_submit accepts: 1-64 of [0-9A-Za-z_-]. */
static int batch_valid(const char *s) {
  size_t n = s ? strlen(s) : 0;

  if (n == 0 || n > 64)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];

    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
          ch == '-'))
      return 0;
  }
  return 1;
}

/* 1 when s is a full stream entry id, MS-SEQ, each part 1-20 digits. */
static int stream_id_valid(const char *s) {
  const char *dash = s ? strchr(s, '-') : NULL;
  size_t a = dash ? (size_t)(dash - s) : 0;
  size_t b = dash ? strlen(dash + 1) : 0;

  if (a < 1 || a > 20 || b < 1 || b > 20)
    return 0;
  return strspn(s, "0123456789") == a && strspn(dash + 1, "0123456789") == b;
}

/* 1 when s is a plain decimal integer that fits a long long (an index, ms). */
static int plain_num(const char *s) {
  size_t n = s ? strlen(s) : 0;

  if (n > 0 && s[0] == '-') {
    s++;
    n--;
  }
  return n >= 1 && n <= 18 && strspn(s, "0123456789") == n;
}

/* Copies c->errstr, so it can be quoted in a new message on the same client. */
static void errstr_copy(const sl_client_t *c, char *out, size_t len) {
  snprintf(out, len, "%s", c->errstr);
}

/* ---- sl_batch_retry ---- */

/*
 * FCALL sluice_v1_retry 7 BKEY BKEY:r BKEY:f HIGH NORMAL LOW DEAD
 *       PREFIX QUEUE BATCH MAX GROUP CURSOR SINCE BY
 * until it answers more = 0, each call from the cursor the last answered;
 * SINCE is the server's time when the retry began, BY the client's actor.
 */
SL_EXTERN int sl_batch_retry(sl_client_t *c, const char *queue, const char *batch, size_t *requeued) {
  sl_keys k;
  char bkey[160];
  char rkey[164];
  char fkey[164];
  char dkey[sizeof(k.prefix) + 8];
  const char *av[15];
  char cursor[32] = "0"; /* the walk over the failed-items hash */
  char since[32];        /* when the retry began, ms, server clock */
  size_t total = 0;
  int more = 1;
  int rc = 0;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue ? queue : "(null)");
  if (!batch_valid(batch))
    return sl__client_fail(c, SL_EINVAL, "invalid batch id \"%s\" (1-64 characters of [0-9A-Za-z_-])",
                           batch ? batch : "(null)");
  snprintf(bkey, sizeof(bkey), "%sb:%s", k.prefix, batch);
  snprintf(rkey, sizeof(rkey), "%s:r", bkey);
  snprintf(fkey, sizeof(fkey), "%s:f", bkey);
  snprintf(dkey, sizeof(dkey), "%sdead", k.prefix);
  av[0] = bkey;
  av[1] = rkey;
  av[2] = fkey;
  av[3] = k.stream[0];
  av[4] = k.stream[1];
  av[5] = k.stream[2];
  av[6] = dkey;
  av[7] = k.prefix;
  av[8] = k.queue;
  av[9] = batch;
  av[10] = STEP_MAX_S;
  av[11] = SL_GROUP;
  av[12] = cursor;
  av[13] = since;
  av[14] = c->actor;
  {
    /* the server's clock: items that fail again after this stay failed */
    const char *tv[1] = {"TIME"};
    redisReply *t = sl__client_cmd(c, &rc, 1, tv, NULL);

    if (t == NULL)
      return rc;
    if (t->type != REDIS_REPLY_ARRAY || t->elements != 2) {
      freeReplyObject(t);
      return sl__client_fail(c, SL_EPROTO, "TIME answered something other than {seconds, microseconds}");
    }
    snprintf(since, sizeof(since), "%lld",
             strtoll(t->element[0]->str, NULL, 10) * 1000 + strtoll(t->element[1]->str, NULL, 10) / 1000);
    freeReplyObject(t);
  }
  while (more) {
    redisReply *r = sl__client_fcall(c, &rc, "retry", 7, 15, av, NULL);

    if (r == NULL) {
      char cause[sizeof(c->errstr)];

      errstr_copy(c, cause, sizeof(cause));
      if (strstr(cause, "SLUICE_NOTFOUND") != NULL)
        return sl__client_fail(c, SL_ENOTFOUND, "no batch %s in queue %s (wrong --queue, or it expired)", batch,
                               k.queue);
      if (strstr(cause, "SLUICE_CANCELLED") != NULL)
        return sl__client_fail(c, SL_ECANCELED, "batch %s was cancelled: its failed items would not run again",
                               batch);
      if (total > 0)
        return sl__client_fail(c, rc, "retry of batch %s stopped after re-queueing %zu items: %s", batch, total,
                               cause);
      return rc;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_INTEGER || r->element[0]->integer < 0 ||
        r->element[2]->type != REDIS_REPLY_STRING || r->element[2]->len >= sizeof(cursor)) {
      freeReplyObject(r);
      return sl__client_fail(c, SL_EPROTO, "sluice_v1_retry answered something other than {requeued, more, cursor}");
    }
    total += (size_t)r->element[0]->integer;
    more = r->element[1]->integer != 0;
    memcpy(cursor, r->element[2]->str, r->element[2]->len + 1);
    freeReplyObject(r);
  }
  if (requeued != NULL)
    *requeued = total;
  return 0;
}

/* ---- sl_dead_list ---- */

/* Appends a number field's value: the text itself when it is a plain
 * integer, else null. */
static int put_num(sl_buf *b, const char *v) {
  return sl__buf_puts(b, plain_num(v) ? v : "null");
}

/* Appends a JSON string, or null for NULL. */
static int put_str(sl_buf *b, const char *v, size_t n) {
  return v != NULL ? sl__json_put_str(b, v, n) : sl__buf_puts(b, "null");
}

/* Appends the raw token of member `key` of an item's JSON if it is a
 * string, else null. */
static int put_member_str(sl_buf *b, const sl_json_member *m, size_t n, const char *key) {
  size_t kl = strlen(key);

  for (size_t i = 0; i < n; i++) {
    if (m[i].keylen == kl && memcmp(m[i].key, key, kl) == 0 && m[i].val[0] == '"')
      return sl__buf_append(b, m[i].val, m[i].vallen);
  }
  return sl__buf_puts(b, "null");
}

/* The value of field `name` in a stream entry's flat field array; NULL when
 * absent. *len gets its length. */
static const char *entry_field(const redisReply *f, const char *name, size_t *len) {
  for (size_t i = 0; i + 1 < f->elements; i += 2) {
    if (f->element[i]->type == REDIS_REPLY_STRING && strcmp(f->element[i]->str, name) == 0 &&
        f->element[i + 1]->type == REDIS_REPLY_STRING) {
      if (len != NULL)
        *len = f->element[i + 1]->len;
      return f->element[i + 1]->str;
    }
  }
  return NULL;
}

/* Writes the JSON object of one dead letter (XRANGE entry e) into out. */
static int letter_json(sl_buf *out, const redisReply *e) {
  const redisReply *f = e->element[1];
  sl_json_member m[ITEM_MEMBERS];
  size_t n = 0;
  size_t dlen = 0;
  size_t blen = 0;
  size_t elen = 0;
  const char *d = entry_field(f, "d", &dlen);
  const char *b = entry_field(f, "b", &blen);
  const char *err = entry_field(f, "error", &elen);
  const char *p = entry_field(f, "p", NULL);
  int prio = p != NULL && p[0] >= '1' && p[0] <= '3' && p[1] == '\0' ? p[0] - '1' : -1;
  int rc;

  if (d != NULL && dlen > 0) {
    size_t pos;
    char why[128];

    if (sl__json_validate(d, dlen, SL_ITEM_MAX_DEPTH, &pos, why, sizeof(why)) != 0 ||
        sl__json_members(d, dlen, m, ITEM_MEMBERS, &n) != 0)
      n = 0; /* not an item sluice wrote: id and type are null */
  }
  rc = sl__buf_puts(out, "{\"id\":");
  if (rc == 0)
    rc = put_str(out, e->element[0]->str, e->element[0]->len);
  if (rc == 0)
    rc = sl__buf_puts(out, ",\"batch\":");
  if (rc == 0)
    rc = put_str(out, b, blen);
  if (rc == 0)
    rc = sl__buf_puts(out, ",\"index\":");
  if (rc == 0)
    rc = put_num(out, entry_field(f, "i", NULL));
  if (rc == 0)
    rc = sl__buf_puts(out, ",\"item\":");
  if (rc == 0)
    rc = put_member_str(out, m, n, "id");
  if (rc == 0)
    rc = sl__buf_puts(out, ",\"type\":");
  if (rc == 0)
    rc = put_member_str(out, m, n, "type");
  if (rc == 0)
    rc = sl__buf_puts(out, ",\"attempts\":");
  if (rc == 0)
    rc = put_num(out, entry_field(f, "a", NULL));
  if (rc == 0)
    rc = sl__buf_puts(out, ",\"at\":");
  if (rc == 0)
    rc = put_num(out, entry_field(f, "at", NULL));
  if (rc == 0)
    rc = sl__buf_puts(out, ",\"error\":");
  if (rc == 0)
    rc = put_str(out, err, elen);
  if (rc == 0)
    rc = sl__buf_puts(out, ",\"priority\":");
  if (rc == 0 && prio >= 0)
    rc = sl__buf_printf(out, "\"%s\"}", sl__prio_name(prio));
  else if (rc == 0)
    rc = sl__buf_puts(out, "null}");
  return rc;
}

/* XREVRANGE DEAD END - COUNT n, newest first, in pages: END is "+" and then
 * "(" plus the last id seen. */
SL_EXTERN int sl_dead_list(sl_client_t *c, const char *queue, size_t limit, sl_line_cb cb, void *ud) {
  sl_keys k;
  char dkey[sizeof(k.prefix) + 8];
  char end[STREAM_ID_MAX + 2] = "+";
  char count[24];
  const char *av[6] = {"XREVRANGE", dkey, end, "-", "COUNT", count};
  size_t shown = 0;
  sl_buf out;
  int rc = 0;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue ? queue : "(null)");
  snprintf(dkey, sizeof(dkey), "%sdead", k.prefix);
  sl__buf_init(&out, LINE_MAX_BYTES);
  for (;;) {
    size_t want = limit > 0 && limit - shown < LIST_PAGE ? limit - shown : LIST_PAGE;
    redisReply *r;
    size_t got;

    snprintf(count, sizeof(count), "%zu", want);
    r = sl__client_cmd(c, &rc, 6, av, NULL);
    if (r == NULL)
      break;
    if (r->type != REDIS_REPLY_ARRAY) {
      freeReplyObject(r);
      rc = sl__client_fail(c, SL_EPROTO, "XREVRANGE of %s did not answer an array", dkey);
      break;
    }
    for (size_t i = 0; i < r->elements && rc == 0; i++) {
      const redisReply *e = r->element[i];

      if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
          e->element[1]->type != REDIS_REPLY_ARRAY)
        continue; /* not an entry */
      sl__buf_reset(&out);
      rc = letter_json(&out, e);
      if (rc != 0) {
        rc = sl__client_fail(c, rc, "dead letter %s: %s", e->element[0]->str, sl_strerror(rc));
        break;
      }
      rc = cb(out.p, out.len, ud);
      shown++;
      snprintf(end, sizeof(end), "(%s", e->element[0]->str);
    }
    got = r->elements;
    freeReplyObject(r);
    if (rc != 0 || got < want || (limit > 0 && shown >= limit))
      break;
  }
  sl__buf_free(&out);
  return rc;
}

/* ---- sl_dead_requeue ---- */

typedef struct requeue_sum {
  size_t requeued; /* items put back */
  size_t skipped;  /* letters not requeued */
  size_t examined; /* letters looked at by the last call */
  char last[STREAM_ID_MAX + 1]; /* the last letter looked at by the last call; "" if none */
} requeue_sum;

/* One FCALL sluice_v1_dead_requeue with argv = keys then args; adds its
 * answer {requeued, skipped, examined, last} to *sum. */
static int requeue_call(sl_client_t *c, int argc, const char **argv, requeue_sum *sum) {
  redisReply *r;
  int rc;

  r = sl__client_fcall(c, &rc, "dead_requeue", 4, argc, argv, NULL);
  if (r == NULL)
    return rc;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 || r->element[0]->type != REDIS_REPLY_INTEGER ||
      r->element[1]->type != REDIS_REPLY_INTEGER || r->element[2]->type != REDIS_REPLY_INTEGER ||
      r->element[3]->type != REDIS_REPLY_STRING || r->element[0]->integer < 0 || r->element[1]->integer < 0 ||
      r->element[2]->integer < 0 || r->element[3]->len > STREAM_ID_MAX) {
    freeReplyObject(r);
    return sl__client_fail(c, SL_EPROTO,
                           "sluice_v1_dead_requeue answered something other than {requeued, skipped, examined, last}");
  }
  sum->requeued += (size_t)r->element[0]->integer;
  sum->skipped += (size_t)r->element[1]->integer;
  sum->examined = (size_t)r->element[2]->integer;
  snprintf(sum->last, sizeof(sum->last), "%s", r->element[3]->str);
  freeReplyObject(r);
  return 0;
}

/* The id of the newest letter into out ("" when there is none). */
static int newest_letter(sl_client_t *c, const char *dkey, char *out, size_t len) {
  const char *av[6] = {"XREVRANGE", dkey, "+", "-", "COUNT", "1"};
  redisReply *r;
  int rc;

  out[0] = '\0';
  r = sl__client_cmd(c, &rc, 6, av, NULL);
  if (r == NULL)
    return rc;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY &&
      r->element[0]->elements == 2 && r->element[0]->element[0]->type == REDIS_REPLY_STRING)
    snprintf(out, len, "%s", r->element[0]->element[0]->str);
  freeReplyObject(r);
  return 0;
}

/*
 * ids: FCALL sluice_v1_dead_requeue 4 HIGH NORMAL LOW DEAD PREFIX QUEUE GROUP ids ID...
 *      in calls of STEP_MAX ids;
 * else: the newest letter's id bounds the walk, then
 *      FCALL ... oldest N AFTER UPTO from AFTER = 0-0, each call going on after
 *      the last letter the previous one looked at.
 */
SL_EXTERN int sl_dead_requeue(sl_client_t *c, const char *queue, const char *const *ids, size_t nids,
                              size_t all_limit, size_t *requeued, size_t *skipped) {
  enum { HEAD = 8 };
  sl_keys k;
  char dkey[sizeof(k.prefix) + 8];
  char upto[STREAM_ID_MAX + 1];
  char after[STREAM_ID_MAX + 1] = "0-0";
  char count[24];
  const char **av = NULL;
  requeue_sum sum = {0};
  size_t examined = 0;
  int rc = 0;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue ? queue : "(null)");
  for (size_t i = 0; ids != NULL && i < nids; i++) {
    if (!stream_id_valid(ids[i]))
      return sl__client_fail(c, SL_EINVAL, "invalid dead letter id \"%s\" (expected MS-SEQ, as `sluice dead list` shows)",
                             ids[i] ? ids[i] : "(null)");
  }
  snprintf(dkey, sizeof(dkey), "%sdead", k.prefix);
  av = sl_malloc((HEAD + STEP_MAX) * sizeof(*av));
  if (av == NULL)
    return sl__client_fail(c, SL_ENOMEM, "out of memory");
  av[0] = k.stream[0];
  av[1] = k.stream[1];
  av[2] = k.stream[2];
  av[3] = dkey;
  av[4] = k.prefix;
  av[5] = k.queue;
  av[6] = SL_GROUP;
  if (ids != NULL) {
    av[7] = "ids";
    for (size_t first = 0; first < nids && rc == 0; first += STEP_MAX) {
      size_t n = nids - first < STEP_MAX ? nids - first : STEP_MAX;

      for (size_t i = 0; i < n; i++)
        av[HEAD + i] = ids[first + i];
      rc = requeue_call(c, HEAD + (int)n, av, &sum);
    }
    goto out;
  }
  rc = newest_letter(c, dkey, upto, sizeof(upto));
  if (rc != 0 || upto[0] == '\0')
    goto out;
  av[7] = "oldest";
  av[8] = count;
  av[9] = after;
  av[10] = upto;
  for (;;) {
    size_t want = all_limit > 0 && all_limit - examined < STEP_MAX ? all_limit - examined : STEP_MAX;

    snprintf(count, sizeof(count), "%zu", want);
    rc = requeue_call(c, 11, av, &sum);
    if (rc != 0)
      break;
    examined += sum.examined;
    if (sum.examined < want || sum.last[0] == '\0' || (all_limit > 0 && examined >= all_limit))
      break;
    snprintf(after, sizeof(after), "%s", sum.last);
  }
out:
  sl_free(av);
  if (rc != 0) {
    if (sum.requeued > 0 || sum.skipped > 0) {
      char cause[sizeof(c->errstr)];

      errstr_copy(c, cause, sizeof(cause));
      sl__client_fail(c, rc, "dead requeue stopped after re-queueing %zu items (%zu skipped): %s", sum.requeued,
                      sum.skipped, cause);
    }
    return rc;
  }
  if (requeued != NULL)
    *requeued = sum.requeued;
  if (skipped != NULL)
    *skipped = sum.skipped;
  return 0;
}

/* ---- sl_dead_purge ---- */

/* FCALL sluice_v1_dead_purge 1 DEAD */
SL_EXTERN int sl_dead_purge(sl_client_t *c, const char *queue, size_t *purged) {
  sl_keys k;
  char dkey[sizeof(k.prefix) + 8];
  const char *av[1] = {dkey};
  redisReply *r;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue ? queue : "(null)");
  snprintf(dkey, sizeof(dkey), "%sdead", k.prefix);
  r = sl__client_fcall(c, &rc, "dead_purge", 1, 1, av, NULL);
  if (r == NULL)
    return rc;
  if (r->type != REDIS_REPLY_INTEGER || r->integer < 0) {
    freeReplyObject(r);
    return sl__client_fail(c, SL_EPROTO, "sluice_v1_dead_purge answered something other than a count");
  }
  if (purged != NULL)
    *purged = (size_t)r->integer;
  freeReplyObject(r);
  return 0;
}
