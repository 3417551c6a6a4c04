/*
 * sluice worker [--concurrency N] [--queue Q] [--block-ms MS] [--quiet]
 *
 * Runs items until SIGINT or SIGTERM (then running items finish; a second
 * signal exits at once).
 */
#include <getopt.h>
#include <stdlib.h>

#include "cli.h"

int cmd_worker(int argc, char **argv) {
  static const struct option opts[] = {
      {"redis", required_argument, NULL, 'R'},       {"queue", required_argument, NULL, 'Q'},
      {"concurrency", required_argument, NULL, 'c'}, {"block-ms", required_argument, NULL, 'b'},
      {"quiet", no_argument, NULL, 'q'},             {NULL, 0, NULL, 0}};
  cli_common com = {getenv("SLUICE_REDIS"), NULL};
  sl_worker_opts wo = {0};
  sl_worker_t *w;
  char err[512];
  long long v;
  int ch;
  int rc;

  optind = 1;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'R': com.redis = optarg; break;
    case 'Q': com.queue = optarg; break;
    case 'c':
      if ((v = cli_parse_int(optarg, 100000)) < 1) {
        cli_err("--concurrency: expected an integer from 1 to 100000, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      wo.concurrency = (int)v;
      break;
    case 'b':
      if ((v = cli_parse_int(optarg, 60000)) < 1) {
        cli_err("--block-ms: expected milliseconds from 1 to 60000, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      wo.block_ms = (int)v;
      break;
    case 'q': wo.quiet = 1; break;
    default: return EXIT_USAGE;
    }
  }
  if (optind != argc) {
    cli_err("usage: sluice worker [--concurrency N] [--queue Q] [--redis URL]");
    return EXIT_USAGE;
  }
  wo.redis_url = cli_redis_url(&com);
  if (wo.redis_url == NULL)
    return EXIT_USAGE;
  wo.queue = com.queue;
  rc = sl_worker_new(&wo, &w, err, sizeof(err));
  if (rc != 0) {
    cli_err("%s", err);
    return rc == SL_EINVAL ? EXIT_USAGE : EXIT_RUNTIME;
  }
  sl_worker_handle_signals(w);
  rc = sl_worker_run(w);
  sl_worker_free(w);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}
