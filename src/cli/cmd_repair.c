/*
 * sluice repair [BATCH]: makes unfinished batches able to end after Redis
 * lost some of their items (a rollback, a failover, a deletion by hand):
 * sl_batch_repair on the batch given, or on every batch of the queue that
 * is queued, running, paused or cancelled. One line per batch searched.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

typedef struct repair_run {
  sl_client_t *cl;
  const char *queue;
  int failed;     /* batches whose repair failed */
  long long seen; /* batches searched */
} repair_run;

static int repair_one(repair_run *run, const char *batch) {
  sl_repair_report rep;
  int rc = sl_batch_repair(run->cl, run->queue, batch, &rep);

  if (rc != 0) {
    cli_err("batch %s: %s", cli_safe(batch), sl_client_errstr(run->cl));
    run->failed++;
    return rc;
  }
  run->seen++;
  if (!rep.whole)
    printf("batch %s: still being submitted (%lld items so far); not searched\n", cli_safe(batch), rep.total);
  else if (rep.done >= rep.total)
    printf("batch %s: %s, every item ended; nothing to repair\n", cli_safe(batch), rep.status);
  else if (rep.missing == 0 && rep.put_back == 0)
    printf("batch %s: %s, %lld of %lld items not ended, every one of them in the queue; nothing to repair\n",
           cli_safe(batch), rep.status, rep.total - rep.done, rep.total);
  else
    printf("batch %s: %s; %lld stuck items put back, %lld items lost by Redis ended as %s (their data is gone: "
           "submit them again)\n", cli_safe(batch), rep.status, rep.put_back, rep.ended,
           strcmp(rep.status, "cancelled") == 0 ? "cancelled" : "failed");
  return 0;
}

static int repair_listed(const char *json, size_t len, void *ud) {
  repair_run *run = ud;
  cJSON *j = cJSON_ParseWithLength(json, len);
  const cJSON *b = j ? cJSON_GetObjectItemCaseSensitive(j, "batch") : NULL;

  if (cJSON_IsString(b))
    repair_one(run, b->valuestring);
  cJSON_Delete(j);
  return 0;
}

int cmd_repair(int argc, char **argv) {
  static const char *const statuses[] = {"queued", "running", "paused", "cancelled"};
  cli_common com;
  int first = cli_parse(argc, argv, &com, NULL, 0);
  repair_run run = {0};
  int rc = 0;

  if (first < 0 || argc - first > 1)
    return cli_usage("repair");
  run.cl = cli_open(&com);
  if (run.cl == NULL)
    return cli_open_exit();
  run.queue = com.queue;
  if (first < argc) {
    repair_one(&run, argv[first]);
  } else {
    for (size_t i = 0; rc == 0 && i < sizeof(statuses) / sizeof(statuses[0]); i++) {
      rc = sl_batch_list(run.cl, com.queue, statuses[i], 0, repair_listed, &run);
      if (rc != 0)
        cli_err("%s", sl_client_errstr(run.cl));
    }
    if (rc == 0 && run.seen == 0 && run.failed == 0)
      printf("queue %s: no unfinished batch\n", cli_safe(com.queue));
  }
  sl_client_close(run.cl);
  return rc != 0 || run.failed > 0 ? EXIT_RUNTIME : EXIT_OK;
}
