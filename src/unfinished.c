/*
 * The unfinished items of a batch, by id and state: `sluice status BATCH
 * --items` (sl_batch_items).
 *
 * An unfinished item is in one of five places (docs/PROTOCOL.md, "The live
 * state of a batch"): held by a worker (running, or waiting out its rate
 * limit), parked for a concurrency lease (waiting), in the delayed set
 * (retrying, scheduled), parked by a pause (paused), or in a stream
 * (queued). Each place is read in pages by the read-only function
 * sluice_v1_items (lua/items.lua), one bounded call per page; the first
 * three places are the batch's own keys, the last two are shared by the
 * whole queue and are scanned for the batch's entries, at most scan_max
 * entries each. The listing is a snapshot taken in steps: an item that
 * moves meanwhile may be listed twice or not at all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "buf.h"
#include "conn.h"
#include "json.h"
#include "script.h"

#define PAGE "500"          /* entries one call examines */
#define SCAN_DEFAULT 100000 /* entries of a shared place examined, by default */

static const struct {
  const char *place;  /* ARGV[4] of sluice_v1_items */
  const char *states; /* ",STATE,...," it can hold */
} places[] = {
    {"run", ",running,waiting,"}, {"cw", ",waiting,"}, {"dl", ",retrying,scheduled,"},
    {"p", ",paused,"},            {"q", ",queued,"},
};

static const char *const all_states[] = {"running", "waiting", "retrying", "scheduled", "paused", "queued", NULL};

/* One row of a page (7 strings: index, id token, state, attempt, time,
 * worker, detail) as a JSON object. */
static int row_json(sl_buf *out, redisReply **e) {
  const char *state = e[2]->str;
  const char *t = e[4]->str;
  int rc = sl__buf_printf(out, "{\"index\":%s,\"id\":%s,\"state\":\"%s\",\"attempt\":%s", e[0]->str,
                          e[1]->len ? e[1]->str : "null", state, e[3]->len ? e[3]->str : "null");

  if (rc == 0 && *t != '\0') {
    const char *name = strcmp(state, "running") == 0 ? "since" : strcmp(state, "waiting") == 0 ? "until" : "due";

    rc = sl__buf_printf(out, ",\"%s\":%s", name, t);
  }
  if (rc == 0 && e[5]->len > 0) {
    rc = sl__buf_puts(out, strcmp(state, "queued") == 0 ? ",\"taken_from_stopped_worker\":true" : ",\"worker\":");
    if (rc == 0 && strcmp(state, "queued") != 0)
      rc = sl__json_put_str(out, e[5]->str, e[5]->len);
  }
  if (rc == 0 && e[6]->len > 0) {
    rc = sl__buf_puts(out, ",\"detail\":");
    if (rc == 0)
      rc = sl__json_put_str(out, e[6]->str, e[6]->len);
  }
  return rc ? rc : sl__buf_putc(out, '}');
}

SL_EXTERN int sl_batch_items(sl_client_t *c, const char *queue, const char *batch, sl_items_opts *o,
                             sl_line_cb cb, void *ud) {
  sl_keys k;
  char bkey[256];
  size_t listed = 0;
  size_t limit = o && o->limit ? o->limit : 1000;
  size_t scan_max = o && o->scan_max ? o->scan_max : SCAN_DEFAULT;
  const char *state = o ? o->state : NULL;
  char want[32];
  sl_buf line;
  int rc = 0;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  if (state != NULL) {
    size_t i = 0;

    while (all_states[i] != NULL && strcmp(all_states[i], state) != 0)
      i++;
    if (all_states[i] == NULL)
      return sl__client_fail(c, SL_EINVAL, "unknown item state \"%s\": running, waiting, retrying, scheduled, "
                             "paused or queued", state);
    snprintf(want, sizeof(want), ",%s,", state);
  }
  if (o != NULL)
    o->more = 0;
  snprintf(bkey, sizeof(bkey), "%sb:%s", k.prefix, batch);
  sl__buf_init(&line, 1024);
  for (size_t p = 0; p < sizeof(places) / sizeof(places[0]) && rc == 0 && listed < limit; p++) {
    char cursor[128] = "0";
    size_t scanned = 0;
    int shared = strcmp(places[p].place, "cw") == 0 || strcmp(places[p].place, "q") == 0;

    if (state != NULL && strstr(places[p].states, want) == NULL)
      continue;
    for (;;) {
      const char *av[12] = {"FCALL_RO", "sluice_v1_items", "4", k.stream[0], k.stream[1], k.stream[2], bkey,
                            k.prefix, SL_GROUP, batch, places[p].place, cursor};
      const char *argv[13];
      redisReply *r;

      memcpy(argv, av, sizeof(av));
      argv[12] = PAGE;
      r = sl__client_cmd(c, &rc, 13, argv, NULL);
      if (r == NULL)
        break;
      if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || (r->elements - 2) % 7 != 0) {
        freeReplyObject(r);
        rc = sl__client_fail(c, SL_EPROTO, "sluice_v1_items answered in an unknown form");
        break;
      }
      for (size_t i = 2; i + 6 < r->elements && rc == 0 && listed < limit; i += 7) {
        if (state != NULL && strcmp(r->element[i + 2]->str, state) != 0)
          continue;
        line.len = 0;
        rc = row_json(&line, r->element + i);
        if (rc == 0)
          rc = cb(line.p, line.len, ud);
        listed++;
      }
      snprintf(cursor, sizeof(cursor), "%s", r->element[1]->str);
      freeReplyObject(r);
      scanned += (size_t)atoi(PAGE);
      if (rc != 0 || cursor[0] == '\0')
        break;
      if (listed >= limit || (shared && scanned >= scan_max)) {
        if (o != NULL)
          o->more = 1;
        break;
      }
    }
  }
  sl__buf_free(&line);
  return rc;
}
