/*
 * `sluice status BATCH --items`: the batch's unfinished items by id and
 * state (sl_batch_items, src/unfinished.c), as a table or JSON lines.
 * Running items say on which worker and since when, waiting ones for what,
 * retrying and scheduled ones when they are due.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"

/* One unfinished item (sl_batch_items) as a line of the --items table. */
static int print_item(const char *json, size_t len, void *ud) {
  cJSON *j = cJSON_ParseWithLength(json, len);
  const char *state;
  char when[32];
  char span[32];
  long long now = *(long long *)ud;

  if (j == NULL)
    return 0;
  state = cli_jstr(j, "state");
  printf("%-8lld %-24s %-10s %-7lld ", cli_jnum(j, "index"), cli_safe(cli_jstr(j, "id")), state, cli_jnum(j, "attempt"));
  if (cli_jnum(j, "since") > 0) {
    cli_fmt_time(cli_jnum(j, "since"), when, sizeof(when));
    cli_fmt_span(now - cli_jnum(j, "since") > 0 ? now - cli_jnum(j, "since") : 0, span, sizeof(span));
    printf("on %s since %s (%s)", cli_safe(cli_jstr(j, "worker")), when, span);
  } else if (cli_jnum(j, "until") > 0) {
    cli_fmt_time(cli_jnum(j, "until"), when, sizeof(when));
    printf("rate limit: starts at %s on %s", when, cli_safe(cli_jstr(j, "worker")));
  } else if (cli_jnum(j, "due") > 0) {
    cli_fmt_time(cli_jnum(j, "due"), when, sizeof(when));
    printf("%s at %s", strcmp(state, "retrying") == 0 ? "next try" : "starts", when);
  } else if (*cli_jstr(j, "detail")) {
    printf("waiting for a %s", cli_safe(cli_jstr(j, "detail")));
  } else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "taken_from_stopped_worker"))) {
    printf("taken from a worker that stopped heartbeating; the next free worker runs it");
  }
  printf("\n");
  cJSON_Delete(j);
  return 0;
}

static int print_item_json(const char *json, size_t len, void *ud) {
  (void)ud;
  fwrite(json, 1, len, stdout);
  putchar('\n');
  return 0;
}

/* status --items: the unfinished items, a table or JSON lines. */
int cli_status_items(sl_client_t *cl, const char *queue, const char *batch, const char *state, const char *limit_s,
                     int json) {
  sl_items_opts o = {0};
  struct timespec ts;
  long long now;
  char *st = NULL;
  int rc;

  clock_gettime(CLOCK_REALTIME, &ts);
  now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  o.state = state;
  if (limit_s != NULL) {
    long long n = cli_parse_int(limit_s, 1000000);

    if (n < 1) {
      cli_err("--limit must be a whole number from 1 to 1000000, not \"%s\"", cli_safe(limit_s));
      return EXIT_USAGE;
    }
    o.limit = (size_t)n;
  }
  /* the batch must exist: an unknown id is an error, not an empty list */
  rc = sl_batch_status(cl, queue, batch, &st);
  sl_free(st);
  if (rc == 0 && !json)
    printf("%-8s %-24s %-10s %-7s %s\n", "INDEX", "ID", "STATE", "ATTEMPT", "DETAIL");
  if (rc == 0)
    rc = sl_batch_items(cl, queue, batch, &o, json ? print_item_json : print_item, &now);
  if (rc == SL_EINVAL) {
    cli_err("%s", sl_client_errstr(cl));
    return EXIT_USAGE;
  }
  if (rc != 0) {
    cli_err("%s", sl_client_errstr(cl));
    return EXIT_RUNTIME;
  }
  if (o.more)
    cli_err("more unfinished items may follow: the listing stopped at --limit %zu or after examining 100,000 "
            "entries of the queue's shared streams", o.limit ? o.limit : (size_t)1000);
  return EXIT_OK;
}

