/*
 * Failed items and the fleet:
 *
 *   sluice retry BATCH                    run the failed items of a batch again
 *   sluice dead list [--limit N] [--json] the dead letters, newest first
 *   sluice dead requeue ID...|--all|--limit N   run the items of dead letters again
 *   sluice dead purge                     delete every dead letter (results stay)
 *   sluice workers [--json]               the live workers of the queue
 *
 * Tables go to stdout, counts and messages to stderr (DESIGN: Command line).
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

#define ERROR_EXCERPT 60 /* bytes of an error shown in the dead letter table */

static const char *jstr(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsString(v) ? v->valuestring : "-";
}

static int print_line(const char *json, size_t len, void *ud) {
  (void)ud;
  fwrite(json, 1, len, stdout);
  fputc('\n', stdout);
  return ferror(stdout) ? SL_EIO : 0;
}

/* The first ERROR_EXCERPT bytes of s on one line, cut at a UTF-8 character
 * boundary, with "..." when something was left out. */
static void excerpt(const char *s, char *out, size_t len) {
  size_t n = strlen(s);
  size_t cut = n;
  size_t k;

  if (cut > ERROR_EXCERPT) {
    cut = ERROR_EXCERPT;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
      cut--;
  }
  if (cut + 4 > len)
    cut = len > 4 ? len - 4 : 0;
  for (k = 0; k < cut; k++)
    out[k] = (unsigned char)s[k] < 0x20 ? ' ' : s[k];
  out[k] = '\0';
  if (cut < n)
    memcpy(out + k, "...", 4);
}

/* ---- sluice retry BATCH ---- */

int cmd_retry(int argc, char **argv) {
  cli_common com;
  int first = cli_parse(argc, argv, &com, NULL, 0);
  sl_client_t *cl;
  size_t n = 0;
  int rc;

  if (first < 0 || first != argc - 1)
    return cli_usage("retry");
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  rc = sl_batch_retry(cl, com.queue, argv[first], &n);
  if (rc != 0)
    cli_err("%s", sl_client_errstr(cl));
  else if (n == 0)
    fprintf(stderr, "sluice: batch %s has no failed items to retry\n", argv[first]);
  else
    fprintf(stderr, "sluice: re-queued %zu failed item%s of batch %s\n", n, n == 1 ? "" : "s", argv[first]);
  sl_client_close(cl);
  if (rc == SL_EINVAL)
    return EXIT_USAGE;
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* ---- sluice dead list|requeue|purge ---- */

static int print_letter_row(const char *json, size_t len, void *ud) {
  cJSON *j = cJSON_ParseWithLength(json, len);
  char err[ERROR_EXCERPT + 8];

  (void)ud;
  if (j == NULL)
    return 0;
  excerpt(jstr(j, "error"), err, sizeof(err));
  printf("%-20s  %-26s  %-16s  %8lld  %s\n", cli_safe(jstr(j, "id")), cli_safe(jstr(j, "batch")),
         cli_safe(jstr(j, "item")), cli_jnum(j, "attempts"), cli_safe(err));
  cJSON_Delete(j);
  return ferror(stdout) ? SL_EIO : 0;
}

static int dead_list(int argc, char **argv) {
  int json = 0;
  const char *limit_s = NULL;
  cli_flag f[] = {{"json", 0, &json, NULL}, {"limit", 1, NULL, &limit_s}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 2);
  long long limit = 0;
  sl_client_t *cl;
  int rc;

  if (first < 0 || first != argc)
    return cli_usage("dead");
  if (limit_s != NULL && (limit = cli_parse_int(limit_s, 1000000000)) < 0) {
    cli_err("--limit: expected a number of letters (0: all), got \"%s\"", cli_safe(limit_s));
    return EXIT_USAGE;
  }
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  if (!json)
    printf("%-20s  %-26s  %-16s  %8s  %s\n", "ID", "BATCH", "ITEM", "ATTEMPTS", "ERROR");
  rc = sl_dead_list(cl, com.queue, (size_t)limit, json ? print_line : print_letter_row, NULL);
  if (rc != 0)
    cli_err("%s", rc == SL_EIO ? "cannot write the list" : sl_client_errstr(cl));
  if (rc == 0) {
    char *st = NULL;

    /* The dead-letter stream is capped: say when old letters were dropped. */
    if (sl_queue_stats(cl, com.queue, &st) == 0) {
      cJSON *j = cJSON_Parse(st);
      const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "dead_dropped");

      if (cJSON_IsNumber(d) && d->valuedouble > 0)
        fprintf(stderr, "sluice: note: %.0f older dead letters were dropped: the dead-letter stream keeps about "
                        "the newest 100000\n", d->valuedouble);
      cJSON_Delete(j);
      sl_free(st);
    }
  }
  sl_client_close(cl);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

static int dead_requeue(int argc, char **argv) {
  int all = 0;
  const char *limit_s = NULL;
  cli_flag f[] = {{"all", 0, &all, NULL}, {"limit", 1, NULL, &limit_s}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 2);
  long long limit = 0;
  int by_id;
  sl_client_t *cl;
  size_t requeued = 0;
  size_t skipped = 0;
  int rc;

  by_id = first >= 0 && first < argc;
  if (first < 0 || (by_id + all + (limit_s != NULL)) != 1) {
    if (first >= 0)
      cli_err("dead requeue: give dead letter IDs, --all or --limit N: one of them");
    return cli_usage("dead");
  }
  if (limit_s != NULL && (limit = cli_parse_int(limit_s, 1000000000)) < 1) {
    cli_err("--limit: expected a number of letters from 1 (the oldest N), got \"%s\"", cli_safe(limit_s));
    return EXIT_USAGE;
  }
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  if (by_id)
    rc = sl_dead_requeue(cl, com.queue, (const char *const *)(argv + first), (size_t)(argc - first), 0, &requeued,
                         &skipped);
  else
    rc = sl_dead_requeue(cl, com.queue, NULL, 0, (size_t)limit, &requeued, &skipped);
  if (rc != 0)
    cli_err("%s", sl_client_errstr(cl));
  else if (skipped == 0)
    fprintf(stderr, "sluice: re-queued %zu item%s\n", requeued, requeued == 1 ? "" : "s");
  else
    fprintf(stderr,
            "sluice: re-queued %zu item%s; skipped %zu dead letter%s (not there, or the item is no longer failed: "
            "removed; the batch was cancelled: kept)\n",
            requeued, requeued == 1 ? "" : "s", skipped, skipped == 1 ? "" : "s");
  sl_client_close(cl);
  if (rc == SL_EINVAL)
    return EXIT_USAGE;
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

static int dead_purge(int argc, char **argv) {
  cli_common com;
  int first = cli_parse(argc, argv, &com, NULL, 0);
  sl_client_t *cl;
  size_t n = 0;
  int rc;

  if (first < 0 || first != argc)
    return cli_usage("dead");
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  rc = sl_dead_purge(cl, com.queue, &n);
  if (rc != 0)
    cli_err("%s", sl_client_errstr(cl));
  else
    fprintf(stderr, "sluice: deleted %zu dead letter%s; failed results stay (`sluice retry BATCH` still works)\n", n,
            n == 1 ? "" : "s");
  sl_client_close(cl);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

int cmd_dead(int argc, char **argv) {
  static const struct {
    const char *name;
    int (*fn)(int, char **);
  } subs[] = {{"list", dead_list}, {"requeue", dead_requeue}, {"purge", dead_purge}};
  static char prog[32]; /* "sluice dead list": getopt's messages name the subcommand */

  for (size_t i = 0; argc >= 2 && i < sizeof(subs) / sizeof(subs[0]); i++) {
    if (strcmp(argv[1], subs[i].name) == 0) {
      snprintf(prog, sizeof(prog), "sluice dead %s", subs[i].name);
      argv[1] = prog;
      return subs[i].fn(argc - 1, argv + 1);
    }
  }
  if (argc >= 2)
    cli_err("dead: unknown subcommand \"%s\" (expected list, requeue or purge)", cli_safe(argv[1]));
  return cli_usage("dead");
}

/* ---- sluice workers ---- */

static int print_worker_row(const char *json, size_t len, void *ud) {
  cJSON *j = cJSON_ParseWithLength(json, len);
  char load[48];

  (void)ud;
  if (j == NULL)
    return 0;
  snprintf(load, sizeof(load), "%lld/%lld", cli_jnum(j, "running"), cli_jnum(j, "concurrency"));
  printf("%-32s  %-20s  %8lld  %-20s  %11s  %.1f s ago", cli_safe(jstr(j, "id")), cli_safe(jstr(j, "host")),
         cli_jnum(j, "pid"), cli_safe(jstr(j, "queue")), load, (double)cli_jnum(j, "last_beat_ms_ago") / 1000.0);
  if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "http_mock")))
    printf("  (http mocked from %s)", cli_safe(jstr(j, "http_mock")));
  printf("\n");
  cJSON_Delete(j);
  return ferror(stdout) ? SL_EIO : 0;
}

int cmd_workers(int argc, char **argv) {
  int json = 0;
  cli_flag f[] = {{"json", 0, &json, NULL}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 1);
  sl_client_t *cl;
  int rc;

  if (first < 0 || first != argc)
    return cli_usage("workers");
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  if (!json)
    printf("%-32s  %-20s  %8s  %-20s  %11s  %s\n", "ID", "HOST", "PID", "QUEUE", "RUNNING", "LAST BEAT");
  rc = sl_workers_list(cl, com.queue, json ? print_line : print_worker_row, NULL);
  if (rc != 0)
    cli_err("%s", rc == SL_EIO ? "cannot write the list" : sl_client_errstr(cl));
  sl_client_close(cl);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}
