/*
 * sluice limit set NAME [RATE] [--burst N] [--concurrency N] [--default] | ls [--json] | rm NAME
 *
 * (every option, with its default: help.c, `sluice limit --help`; the
 * model: `sluice help limits`)
 *
 * Fleet-wide rate limits of a queue (sl_limit_set): items name theirs with
 * rate_key (or submit --rate-key).
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

static int print_json(const char *json, size_t len, void *ud) {
  (void)ud;
  fwrite(json, 1, len, stdout);
  fputc('\n', stdout);
  return 0;
}

static int print_row(const char *json, size_t len, void *ud) {
  cJSON *j = cJSON_ParseWithLength(json, len);

  (void)ud;
  if (j == NULL)
    return 0;
  printf("%-24s  %-12s  %6d  %10.3f  %12lld  %5lld/%-5lld\n", cJSON_GetObjectItemCaseSensitive(j, "name")->valuestring,
         cJSON_GetObjectItemCaseSensitive(j, "rate")->valuestring,
         (int)cJSON_GetObjectItemCaseSensitive(j, "burst")->valuedouble,
         cJSON_GetObjectItemCaseSensitive(j, "per_s")->valuedouble,
         (long long)cJSON_GetObjectItemCaseSensitive(j, "reserved_ahead_ms")->valuedouble,
         (long long)cJSON_GetObjectItemCaseSensitive(j, "running")->valuedouble,
         (long long)cJSON_GetObjectItemCaseSensitive(j, "concurrency")->valuedouble);
  cJSON_Delete(j);
  return 0;
}

int cmd_limit(int argc, char **argv) {
  const char *burst_s = NULL;
  const char *conc_s = NULL;
  int json = 0;
  int as_default = 0;
  cli_flag f[] = {{"burst", 1, NULL, &burst_s}, {"json", 0, &json, NULL}, {"concurrency", 1, NULL, &conc_s},
                  {"default", 0, &as_default, NULL}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 4);
  long long conc = 0;
  const char *sub;
  long long burst = 1;
  sl_client_t *cl;
  int rc;

  if (first < 0 || first >= argc)
    return cli_usage("limit");
  sub = argv[first];
  if (strcmp(sub, "set") != 0 && strcmp(sub, "ls") != 0 && strcmp(sub, "rm") != 0) {
    cli_err("limit: unknown subcommand \"%s\" (expected set, ls or rm)", cli_safe(sub));
    return cli_usage("limit");
  }
  if (!((strcmp(sub, "set") == 0 && (argc - first == 3 || (argc - first == 2 && conc_s != NULL))) ||
        (strcmp(sub, "ls") == 0 && argc - first == 1) || (strcmp(sub, "rm") == 0 && argc - first == 2))) {
    if (strcmp(sub, "set") == 0 && argc - first == 2)
      cli_err("limit set %s: give a RATE (50/s, 3000/m, 10000/h), --concurrency N or both", cli_safe(argv[first + 1]));
    return cli_usage("limit");
  }
  if (conc_s != NULL && (conc = cli_parse_int(conc_s, 1000000)) < 1) {
    cli_err("--concurrency: expected an integer from 1 to 1000000, got \"%s\"", conc_s);
    return EXIT_USAGE;
  }
  if (burst_s != NULL && (burst = cli_parse_int(burst_s, 1000000)) < 1) {
    cli_err("--burst: expected an integer from 1 to 1000000, got \"%s\"", burst_s);
    return EXIT_USAGE;
  }
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  if (strcmp(sub, "set") == 0) {
    const char *rate = argc - first == 3 ? argv[first + 2] : NULL;

    rc = sl_limit_set(cl, com.queue, argv[first + 1], rate, (int)burst, (int)conc);
    if (rc == 0 && as_default)
      rc = sl_limit_default(cl, com.queue, argv[first + 1]);
    if (rc == 0)
      fprintf(stderr, "sluice: limit %s: %s, burst %lld, concurrency %s, for the whole fleet of queue %s\n",
              argv[first + 1], rate ? rate : "no rate", burst, conc_s ? conc_s : "unlimited",
              com.queue ? com.queue : "default");
    if (rc == 0 && as_default)
      fprintf(stderr, "sluice: items of the queue without a rate_key of their own run under %s\n", argv[first + 1]);
  } else if (strcmp(sub, "rm") == 0) {
    char *st = NULL;

    rc = sl_limit_rm(cl, com.queue, argv[first + 1]);
    /* Removing the default limit clears the default too. */
    if (rc == 0 && sl_queue_stats(cl, com.queue, &st) == 0) {
      cJSON *j = cJSON_Parse(st);
      const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "default_rate_key");

      if (cJSON_IsString(d) && strcmp(d->valuestring, argv[first + 1]) == 0)
        rc = sl_limit_default(cl, com.queue, NULL);
      cJSON_Delete(j);
      sl_free(st);
    }
  } else {
    if (!json)
      printf("%-24s  %-12s  %6s  %10s  %12s  %s\n", "NAME", "RATE", "BURST", "PER_S", "AHEAD_MS", "RUNNING/CONC");
    rc = sl_limit_list(cl, com.queue, json ? print_json : print_row, NULL);
  }
  if (rc != 0)
    cli_err("%s", sl_client_errstr(cl));
  sl_client_close(cl);
  return rc == 0 ? EXIT_OK : rc == SL_EINVAL ? EXIT_USAGE : EXIT_RUNTIME;
}
