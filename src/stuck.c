/*
 * Stuck work: what holds a batch's unfinished items back, for the warnings
 * of `sluice status` and `sluice watch` (sl_batch_stuck).
 *
 * Two things hold items back without any error to show for it: an item
 * type that no live worker of the queue serves (workers register their
 * types with each heartbeat; lua/beat.lua keeps, per type, the last beat
 * of a worker that served it), and items held by a worker that stopped
 * heartbeating, which wait for their claim to run out before another
 * worker takes them over. Both come from one read-only call,
 * sluice_v1_stuck (lua/stuck.lua), on the server's clock.
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

/* ,"types":[{"type":T,"live":B,"since":MS|null},...] from "TYPE STATE MS"
 * lines: since is when the type's last worker stopped counting as live
 * (null for a type no worker has served in the last day, and while live). */
static int types_json(sl_buf *out, const char *lines) {
  const char *p = lines;
  int n = 0;
  int rc = sl__buf_puts(out, ",\"types\":[");

  while (rc == 0 && *p != '\0') {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    char line[256];
    char type[128];
    char state[16];
    long long ms = 0;

    snprintf(line, sizeof(line), "%.*s", (int)(len < sizeof(line) ? len : sizeof(line) - 1), p);
    if (sscanf(line, "%127s %15s %lld", type, state, &ms) == 3) {
      rc = sl__buf_printf(out, "%s{\"type\":", n++ ? "," : "");
      if (rc == 0)
        rc = sl__json_put_str(out, type, strlen(type));
      if (rc == 0 && strcmp(state, "gone") == 0)
        rc = sl__buf_printf(out, ",\"live\":false,\"since\":%lld}", ms);
      else if (rc == 0)
        rc = sl__buf_printf(out, ",\"live\":%s,\"since\":null}", strcmp(state, "live") == 0 ? "true" : "false");
    }
    p += len + (nl != NULL);
  }
  return rc ? rc : sl__buf_putc(out, ']');
}

SL_EXTERN int sl_batch_stuck(sl_client_t *c, const char *queue, const char *batch, char **json_out) {
  sl_keys k;
  char bkey[256];
  const char *av[10];
  redisReply *r;
  sl_buf out;
  int rc;

  if (sl__keys_init(&k, queue) != 0)
    return sl__client_fail(c, SL_EINVAL, "invalid queue name \"%s\"", queue);
  snprintf(bkey, sizeof(bkey), "%sb:%s", k.prefix, batch);
  av[0] = "FCALL_RO";
  av[1] = "sluice_v1_stuck";
  av[2] = "4";
  av[3] = k.stream[0];
  av[4] = k.stream[1];
  av[5] = k.stream[2];
  av[6] = bkey;
  av[7] = k.prefix;
  av[8] = SL_GROUP;
  r = sl__client_cmd(c, &rc, 9, av, NULL);
  if (r == NULL)
    return rc;
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || (r->elements - 2) % 4 != 0) {
    freeReplyObject(r);
    return sl__client_fail(c, SL_EPROTO, "sluice_v1_stuck answered in an unknown form");
  }
  sl__buf_init(&out, 1024);
  rc = sl__buf_printf(&out, "{\"now\":%s", r->element[0]->str);
  if (rc == 0)
    rc = types_json(&out, r->element[1]->str);
  if (rc == 0)
    rc = sl__buf_puts(&out, ",\"held\":[");
  for (size_t i = 2; rc == 0 && i + 3 < r->elements; i += 4) {
    const char *beat = r->element[i + 2]->str;
    const char *at = r->element[i + 3]->str;

    rc = sl__buf_puts(&out, i > 2 ? ",{\"worker\":" : "{\"worker\":");
    if (rc == 0)
      rc = sl__json_put_str(&out, r->element[i]->str, r->element[i]->len);
    if (rc == 0)
      rc = sl__buf_printf(&out, ",\"items\":%s,\"last_beat_at\":%s,\"takeover_at\":%s}", r->element[i + 1]->str,
                          *beat ? beat : "null", *at ? at : "null");
  }
  if (rc == 0)
    rc = sl__buf_puts(&out, "]}");
  freeReplyObject(r);
  if (rc != 0) {
    sl__buf_free(&out);
    return sl__client_fail(c, rc, "%s", sl_strerror(rc));
  }
  *json_out = sl__buf_take(&out);
  return *json_out ? 0 : sl__client_fail(c, SL_ENOMEM, "out of memory");
}
