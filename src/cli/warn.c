/*
 * The stuck-work warnings of `sluice status` and `sluice watch`: an item
 * type of the batch that no live worker serves, and items held by a worker
 * that stopped heartbeating, with when they will be taken over. The facts
 * come from sl_batch_stuck (src/stuck.c), on the Redis server's clock; this
 * file only words them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

/* Appends one line to out (size len), "warning    " first. */
static void say(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *out, size_t len, const char *fmt, ...) {
  size_t used = strlen(out);
  va_list ap;

  if (used + 12 >= len)
    return;
  memcpy(out + used, "warning    ", 12);
  used += 11;
  va_start(ap, fmt);
  vsnprintf(out + used, len - used, fmt, ap);
  va_end(ap);
  used = strlen(out);
  if (used + 1 < len) {
    out[used] = '\n';
    out[used + 1] = '\0';
  }
}

int cli_stuck_warnings(sl_client_t *cl, const char *queue, const char *batch, char *out, size_t len) {
  char *json = NULL;
  cJSON *j;
  const cJSON *e;
  long long now;

  out[0] = '\0';
  if (sl_batch_stuck(cl, queue, batch, &json) != 0)
    return -1;
  j = cJSON_Parse(json);
  sl_free(json);
  if (j == NULL)
    return -1;
  now = cli_jnum(j, "now");
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "types")) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(e, "type");
    char ago[32];

    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "live")) || !cJSON_IsString(type))
      continue;
    if (cli_jnum(e, "since") > 0) {
      cli_fmt_span(now - cli_jnum(e, "since"), ago, sizeof(ago));
      say(out, len, "no live worker of queue %s has served type \"%s\" for %s: its items wait until one does",
          queue, cli_safe(type->valuestring), ago);
    } else {
      say(out, len, "no worker of queue %s has served type \"%s\" in the last day: its items wait until one does "
          "(`sluice worker --queue %s`; `sluice help items` lists the built-in types)", queue,
          cli_safe(type->valuestring), queue);
    }
  }
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "held")) {
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(e, "worker");
    long long beat = cli_jnum(e, "last_beat_at");
    long long at = cli_jnum(e, "takeover_at");
    char ago[32] = "a while";
    char in[32];
    char when[32];

    if (beat > 0)
      cli_fmt_span(now - beat, ago, sizeof(ago));
    if (at > now) {
      cli_fmt_span(at - now, in, sizeof(in));
      cli_fmt_time(at, when, sizeof(when));
    }
    if (at > now)
      say(out, len, "%lld items are held by worker %s, which stopped heartbeating %s ago; a live worker takes "
          "them over at %s, in %s", cli_jnum(e, "items"), cJSON_IsString(w) ? cli_safe(w->valuestring) : "?", ago, when,
          in);
    else
      say(out, len, "%lld items are held by worker %s, which stopped heartbeating %s ago; their visibility timeout "
          "is over, so the next live worker of queue %s takes them over", cli_jnum(e, "items"),
          cJSON_IsString(w) ? cli_safe(w->valuestring) : "?", ago, queue);
  }
  cJSON_Delete(j);
  return 0;
}
