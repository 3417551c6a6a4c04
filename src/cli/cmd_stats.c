/* sluice stats [--json]: the queue at a glance (sl_queue_stats). */
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "cli.h"

static long long num(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
}

int cmd_stats(int argc, char **argv) {
  static const char *const prio[3] = {"high", "normal", "low"};
  int json = 0;
  cli_flag f[] = {{"json", 0, &json, NULL}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 1);
  sl_client_t *cl;
  char *out = NULL;
  cJSON *j;

  if (first < 0 || first != argc)
    return cli_usage("stats");
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  if (sl_queue_stats(cl, com.queue, &out) != 0) {
    cli_err("%s", sl_client_errstr(cl));
    sl_client_close(cl);
    return EXIT_RUNTIME;
  }
  sl_client_close(cl);
  if (json) {
    printf("%s\n", out);
    sl_free(out);
    return EXIT_OK;
  }
  j = cJSON_Parse(out);
  sl_free(out);
  if (j == NULL)
    return EXIT_RUNTIME;
  printf("queue      %s\n", cJSON_GetObjectItemCaseSensitive(j, "queue")->valuestring);
  for (int i = 0; i < 3; i++) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, prio[i]);

    printf("%-10s %lld queued, %lld running\n", prio[i], num(p, "queued"), num(p, "running"));
  }
  printf("delayed    %lld (retries and items scheduled for later)\n", num(j, "delayed"));
  if (num(j, "parked") > 0)
    printf("parked     %lld (items of paused batches)\n", num(j, "parked"));
  if (num(j, "waiting_lease") > 0)
    printf("waiting    %lld (items waiting for a concurrency lease of their limit)\n", num(j, "waiting_lease"));
  printf("dead       %lld dead letters%s\n", num(j, "dead"), num(j, "dead_dropped") ? " (older ones were dropped: the stream is capped)" : "");
  {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "default_rate_key");

    if (cJSON_IsString(d))
      printf("default    items without a rate_key run under limit %s\n", d->valuestring);
  }
  printf("workers    %lld live\n", num(j, "workers"));
  printf("throughput %lld items ended in the last minute (%.1f/s)\n", num(j, "ended_last_minute"),
         cJSON_GetObjectItemCaseSensitive(j, "per_s")->valuedouble);
  {
    const cJSON *l;

    cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(j, "limits")) {
      printf("limit      %s: %s, burst %lld, starts reserved %lld ms ahead", cJSON_GetObjectItemCaseSensitive(l, "name")->valuestring,
             cJSON_GetObjectItemCaseSensitive(l, "rate")->valuestring, num(l, "burst"), num(l, "reserved_ahead_ms"));
      if (num(l, "concurrency") > 0)
        printf(", %lld of %lld leases held, %lld items waiting", num(l, "running"), num(l, "concurrency"),
               num(l, "waiting"));
      printf("\n");
    }
  }
  cJSON_Delete(j);
  return EXIT_OK;
}
