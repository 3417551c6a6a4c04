/*
 * sluice: the command line. Each command lives in cmd_*.c and uses only the
 * public API of libsluice (include/sluice/sluice.h).
 *
 * SIGPIPE is ignored: a Redis connection that closes under a write, or a
 * reader of the output that went away (`sluice results B | head`), is an
 * error with its cause (EPIPE), reported and exited 1, never a silent death
 * with status 141. Children (redis-server for the demo, exec items of a
 * worker) get the default disposition back.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: sluice COMMAND [options]\n"
    "\n"
    "  submit [opts] FILE|-        submit a batch of JSON Lines items; prints the batch id (--check: only validate)\n"
    "         --priority P --max-attempts N --timeout MS --name NAME --wait\n"
    "         --backoff MS --backoff-max MS   (retry delay: full jitter up to min(max, MS * 2^n))\n"
    "         --rate-key NAME      (the items' rate limit, see `sluice limit`)\n"
    "         --run-at RFC3339 | --delay DURATION   start the items later\n"
    "         --retention DURATION  keep the ended batch and its results (default 7d)\n"
    "         --dedupe-ttl DURATION  remember items' dedupe keys (default 1d); --json: id and skipped items\n"
    "         --webhook URL        POST the batch's summary there when it ends (Standard Webhooks)\n"
    "         --label KEY=VALUE    (repeatable, or comma-separated: up to 16) find it with `batches --label`\n"
    "  worker [opts]               run items: --concurrency N --visibility MS --max-deliveries N\n"
    "                              --drain-timeout MS --weights 6,3,1 (fair share instead of strict)\n"
    "                              --http-allow ORIGINS --http-max-body BYTES\n"
    "                              --http-version 1.1|2|2-prior-knowledge --http-methods M,M\n"
    "                              --secret NAME[@HOST] (repeatable; or SLUICE_SECRETS=A,B@HOST)\n"
    "                              --exec TYPE=COMMAND (repeatable: items of TYPE run COMMAND;\n"
    "                              TYPE+base64=COMMAND keeps binary stdout as base64)\n"
    "                              --exec-env NAME (repeatable: pass $NAME on to exec commands)\n"
    "                              --load-library (load the function library first: an operator's act)\n"
    "                              $SLUICE_WEBHOOK_SECRET=whsec_... signs completion webhooks\n"
    "  serve [opts]                the HTTP API: --listen HOST:PORT (127.0.0.1:8080) --tokens FILE\n"
    "                              --queue Q (repeatable) --max-body BYTES --cors ORIGIN; --hash-token\n"
    "  status BATCH [--json]       counters, percent and timings of a batch\n"
    "  watch BATCH [--give-up DURATION]   live progress until the batch ends (exit 3: items failed);\n"
    "                              reconnects across a Redis restart, gives up after DURATION (60s)\n"
    "  results BATCH [--failed]    one JSON line per finished item\n"
    "  log BATCH [--item ID] [--follow] [--json]   what happened to the batch and its items, when, by whom\n"
    "  item BATCH ID [--json]      one item's story: each attempt, its worker, times, outcome and error\n"
    "  batches [--status S] [--limit N] [--after BATCH] [--json]   the queue's batches, newest first (pages)\n"
    "         --name NAME --label KEY[=VALUE],...   only those of that name, with those labels\n"
    "  cancel [--abort] BATCH      no item of the batch starts any more (--abort: stop running ones too)\n"
    "  pause BATCH | resume BATCH  hold the batch's items (running ones finish), then continue\n"
    "  retry BATCH                 run the failed items of a batch again (attempts start at 1)\n"
    "  repair [BATCH]              after Redis lost data (rollback, failover): put back or end the items of\n"
    "                              unfinished batches that are nowhere, so the batches can end\n"
    "  dead list [--limit N] [--json]   dead letters (items that failed for good), newest first\n"
    "  dead requeue ID...|--all|--limit N   run the items of dead letters again (--limit: oldest N)\n"
    "  dead purge                  delete every dead letter; failed results stay\n"
    "  workers [--json]            live workers: id, host, pid, queue, running, last beat\n"
    "  stats [--json]              the queue: queued and running by priority, delayed, dead, throughput\n"
    "  limit set NAME [RATE] [--burst N] [--concurrency N] | ls | rm NAME\n"
    "                              fleet-wide rate and concurrency limits (RATE: 50/s, 3000/m, 10000/h)\n"
    "  library load | check        load this build's function library (operators only), or check it\n"
    "  demo                        submit and run a batch on a private Redis\n"
    "  version\n"
    "\n"
    "Every command takes --redis URL (or $SLUICE_REDIS) and --queue NAME (default: default);\n"
    "the password may come from --redis-password-file FILE or $SLUICE_REDIS_PASSWORD instead.\n"
    "URLs: redis://[user:password@]host[:port][/db], unix:///path/to/redis.sock\n"
    "Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 batch ended with failed items.\n";

/* The command's exit code, made 1 when its output could not be written
 * (and said so, when the command itself thought all went well). */
static int finish(int ret) {
  int err = fflush(stdout) != 0 ? errno : 0;

  if ((err != 0 || ferror(stdout)) && ret == EXIT_OK) {
    cli_err("cannot write to standard output: %s", err != 0 ? strerror(err) : "write error");
    ret = EXIT_RUNTIME;
  }
  return ret;
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    int (*fn)(int, char **);
  } cmds[] = {
      {"submit", cmd_submit},   {"worker", cmd_worker},   {"status", cmd_status},
      {"watch", cmd_watch},     {"results", cmd_results}, {"batches", cmd_batches},
      {"cancel", cmd_cancel},   {"demo", cmd_demo},       {"retry", cmd_retry},
      {"pause", cmd_pause},     {"resume", cmd_resume},
      {"dead", cmd_dead},       {"workers", cmd_workers}, {"limit", cmd_limit},     {"stats", cmd_stats},
      {"library", cmd_library}, {"repair", cmd_repair},   {"serve", cmd_serve},     {"log", cmd_log},
      {"item", cmd_item},
  };

  signal(SIGPIPE, SIG_IGN);
  if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
      strcmp(argv[1], "help") == 0) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return finish(argc < 2 ? EXIT_USAGE : EXIT_OK);
  }
  if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
    printf("sluice %s\n", SL_VERSION_STRING);
    return finish(EXIT_OK);
  }
  for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
    if (strcmp(argv[1], cmds[i].name) == 0)
      return finish(cmds[i].fn(argc - 1, argv + 1));
  }
  cli_err("unknown command \"%s\" (see sluice --help)", argv[1]);
  return EXIT_USAGE;
}
