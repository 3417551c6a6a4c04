/*
 * sluice submit [--priority P] [--max-attempts N] [--timeout MS] [--name NAME]
 *               [--backoff MS] [--backoff-max MS] [--rate-key NAME] [--run-at TIME]
 *               [--delay DURATION] [--retention DURATION] [--wait] FILE|-
 *
 * Reads JSON Lines, validates every line before anything is written (errors
 * name the file, line and field; exit 2, nothing enqueued), submits, and
 * prints the batch id alone on stdout.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

#define MAX_REPORTED 20 /* invalid lines listed before "... and N more" */

int cmd_submit(int argc, char **argv) {
  static const struct option opts[] = {
      {"redis", required_argument, NULL, 'R'},   {"queue", required_argument, NULL, 'Q'},
      {"priority", required_argument, NULL, 'p'}, {"max-attempts", required_argument, NULL, 'a'},
      {"timeout", required_argument, NULL, 't'}, {"name", required_argument, NULL, 'n'},
      {"wait", no_argument, NULL, 'w'},          {"chunk", required_argument, NULL, 'c'},
      {"backoff", required_argument, NULL, 'b'}, {"backoff-max", required_argument, NULL, 'B'},
      {"rate-key", required_argument, NULL, 'r'},
      {"run-at", required_argument, NULL, 'T'},    {"delay", required_argument, NULL, 'D'},
      {"retention", required_argument, NULL, 'K'},
      {"dedupe-ttl", required_argument, NULL, 'U'}, {"json", no_argument, NULL, 'J'},
      {"webhook", required_argument, NULL, 'W'},
      {NULL, 0, NULL, 0}};
  cli_common com = {getenv("SLUICE_REDIS"), NULL};
  sl_batch_opts bo = {0};
  const char *path;
  FILE *in;
  sl_batch_t *b = NULL;
  sl_client_t *cl = NULL;
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  long lineno = 0;
  long bad = 0;
  int wait = 0;
  int json = 0;
  int ch;
  int ret = EXIT_RUNTIME;
  char err[512];
  char *id = NULL;
  long long v;

  optind = 1;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'R': com.redis = optarg; break;
    case 'Q': com.queue = optarg; break;
    case 'p':
      if (strcmp(optarg, "high") != 0 && strcmp(optarg, "normal") != 0 && strcmp(optarg, "low") != 0) {
        cli_err("--priority: unknown priority \"%s\" (expected high, normal or low)", optarg);
        return EXIT_USAGE;
      }
      bo.priority = optarg;
      break;
    case 'a':
      if ((v = cli_parse_int(optarg, 1000)) < 1) {
        cli_err("--max-attempts: expected an integer from 1 to 1000, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      bo.max_attempts = (int)v;
      break;
    case 't':
      if ((v = cli_parse_int(optarg, 86400000)) < 1) {
        cli_err("--timeout: expected milliseconds from 1 to 86400000, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      bo.timeout_ms = v;
      break;
    case 'n': bo.name = optarg; break;
    case 'r': bo.rate_key = optarg; break;
    case 'T': bo.run_at = optarg; break;
    case 'J': json = 1; break;
    case 'W': bo.webhook = optarg; break;
    case 'U':
      if ((v = cli_parse_duration(optarg)) < 1) {
        cli_err("--dedupe-ttl: expected a duration like 86400000 (ms), 30s, 10m, 2h or 1d, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      bo.dedupe_ttl_ms = v;
      break;
    case 'D':
      if ((v = cli_parse_duration(optarg)) < 0) {
        cli_err("--delay: expected a duration like 5000 (ms), 30s, 10m, 2h or 1d, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      bo.delay_ms = v;
      break;
    case 'K':
      if ((v = cli_parse_duration(optarg)) < 1) {
        cli_err("--retention: expected a duration like 3600000 (ms), 30s, 10m, 2h or 7d, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      bo.retention_ms = v;
      break;
    case 'b':
    case 'B':
      if ((v = cli_parse_int(optarg, 86400000)) < 1) {
        cli_err("--%s: expected milliseconds from 1 to 86400000, got \"%s\" (an item's own backoff_ms may be 0)",
                ch == 'b' ? "backoff" : "backoff-max", optarg);
        return EXIT_USAGE;
      }
      if (ch == 'b')
        bo.backoff_ms = v;
      else
        bo.backoff_max_ms = v;
      break;
    case 'w': wait = 1; break;
    case 'c':
      if ((v = cli_parse_int(optarg, 100000)) < 1) {
        cli_err("--chunk: expected items per call from 1 to 100000, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      bo.chunk_items = (size_t)v;
      break;
    default: return EXIT_USAGE;
    }
  }
  if (optind != argc - 1) {
    cli_err("usage: sluice submit [options] FILE|-   (JSON Lines, one item per line)");
    return EXIT_USAGE;
  }
  path = argv[optind];
  bo.queue = com.queue;
  if (sl_batch_new(&bo, &b, err, sizeof(err)) != 0) {
    cli_err("%s", err);
    return EXIT_USAGE;
  }
  in = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (in == NULL) {
    cli_err("cannot open %s: %m", path);
    sl_batch_free(b);
    return EXIT_USAGE;
  }
  while ((n = getline(&line, &cap, in)) >= 0) {
    size_t len = (size_t)n;
    size_t k = 0;
    int rc;

    lineno++;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      len--;
    while (k < len && (line[k] == ' ' || line[k] == '\t'))
      k++;
    if (k == len)
      continue; /* blank lines are allowed */
    rc = sl_batch_add(b, line, len, lineno, err, sizeof(err));
    if (rc == SL_ENOMEM) {
      cli_err("out of memory reading %s", path);
      goto out;
    }
    if (rc != 0) {
      if (bad < MAX_REPORTED)
        fprintf(stderr, "sluice: %s:%ld: %s\n", strcmp(path, "-") == 0 ? "stdin" : path, lineno, err);
      bad++;
    }
  }
  if (ferror(in)) {
    cli_err("error reading %s: %m", path);
    goto out;
  }
  if (bad > 0) {
    if (bad > MAX_REPORTED)
      cli_err("... and %ld more invalid lines", bad - MAX_REPORTED);
    cli_err("%ld of %ld lines are invalid; nothing was submitted", bad, lineno);
    ret = EXIT_USAGE;
    goto out;
  }
  if (sl_batch_count(b) == 0) {
    cli_err("%s has no items; nothing was submitted", path);
    ret = EXIT_USAGE;
    goto out;
  }
  cl = cli_open(&com);
  if (cl == NULL) {
    ret = cli_open_exit();
    goto out;
  }
  if (sl_batch_submit(cl, b, &id) != 0) {
    cli_err("submit failed: %s", sl_client_errstr(cl));
    goto out;
  }
  if (json) {
    /* {"batch":ID,"submitted":N,"skipped":M,"skipped_ids":[...]} */
    size_t ns = sl_batch_skipped_count(b);

    printf("{\"batch\":\"%s\",\"submitted\":%zu,\"skipped\":%zu,\"skipped_ids\":[", id, sl_batch_count(b) - ns, ns);
    for (size_t i = 0; i < ns; i++) {
      cJSON *s = cJSON_CreateString(sl_batch_skipped_id(b, i));
      char *t = s ? cJSON_PrintUnformatted(s) : NULL;

      printf("%s%s", i ? "," : "", t ? t : "null");
      cJSON_free(t);
      cJSON_Delete(s);
    }
    printf("]}\n");
  } else {
    printf("%s\n", id);
  }
  if (sl_batch_skipped_count(b) > 0)
    fprintf(stderr, "sluice: %zu of %zu items skipped: their dedupe key was seen in this queue within the dedupe TTL\n",
            sl_batch_skipped_count(b), sl_batch_count(b));
  fflush(stdout);
  ret = wait ? cli_watch_batch(cl, com.queue, id) : EXIT_OK;
out:
  free(line);
  if (in != stdin)
    fclose(in);
  sl_free(id);
  sl_batch_free(b);
  sl_client_close(cl);
  return ret;
}
