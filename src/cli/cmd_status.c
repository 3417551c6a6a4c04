/*
 * Reading commands: status, watch, results, batches, and cancel.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

static long long jnum(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
}

static const char *jstr(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsString(v) ? v->valuestring : "";
}

static void print_status(const char *json) {
  cJSON *j = cJSON_Parse(json);
  char created[32];
  char started[32];
  char finished[32];
  long long total;
  long long done;

  if (j == NULL) {
    puts(json);
    return;
  }
  total = jnum(j, "total");
  done = jnum(j, "done");
  cli_fmt_time(jnum(j, "created_at"), created, sizeof(created));
  cli_fmt_time(jnum(j, "started_at"), started, sizeof(started));
  cli_fmt_time(jnum(j, "finished_at"), finished, sizeof(finished));
  printf("batch      %s%s%s%s\n", cli_safe(jstr(j, "batch")), *jstr(j, "name") ? "  (" : "", cli_safe(jstr(j, "name")),
         *jstr(j, "name") ? ")" : "");
  printf("queue      %s\n", jstr(j, "queue"));
  {
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "labels");
    const cJSON *e;
    int n = 0;

    cJSON_ArrayForEach(e, l) {
      if (cJSON_IsString(e))
        printf("%s%s=%s", n++ ? "," : "labels     ", cli_safe(e->string), cli_safe(e->valuestring));
    }
    if (n > 0)
      printf("\n");
  }
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "incomplete")))
    printf("status     %s: INCOMPLETE, %lld items written so far; if its producer died, "
           "`sluice cancel %s` ends it\n",
           jstr(j, "status"), jnum(j, "submitted"), jstr(j, "batch"));
  else
    printf("status     %s\n", jstr(j, "status"));
  printf("progress   %lld/%lld done (%.1f%%)\n", done, total,
         total > 0 ? (double)done * 100.0 / (double)total : 0.0);
  printf("items      %lld succeeded, %lld failed, %lld cancelled, %lld not finished\n", jnum(j, "succeeded"),
         jnum(j, "failed"), jnum(j, "cancelled"), total - done);
  if (jnum(j, "refused") > 0)
    printf("refused    %lld of the failed items asked for a secret their worker was not granted (no dead letter;\n"
           "           grant it with `sluice worker --secret NAME`, then `sluice retry %s`)\n",
           jnum(j, "refused"), cli_safe(jstr(j, "batch")));
  printf("created    %s\nstarted    %s\nfinished   %s\n", created, started, finished);
  printf("elapsed    %.1f s", (double)jnum(j, "elapsed_ms") / 1000.0);
  if (jnum(j, "started_at") > 0)
    printf(", %.1f items/s since the first start", cJSON_GetObjectItemCaseSensitive(j, "items_per_s")->valuedouble);
  printf("\n");
  cJSON_Delete(j);
}

static int need_batch(int argc, char **argv, int first, const char *usage) {
  if (first < 0 || first != argc - 1) {
    cli_err("usage: sluice %s", usage);
    return -1;
  }
  (void)argv;
  return 0;
}

int cmd_status(int argc, char **argv) {
  int json = 0;
  cli_flag f[] = {{"json", 0, &json, NULL}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 1);
  sl_client_t *cl;
  char *out = NULL;
  int rc;

  if (need_batch(argc, argv, first, "status BATCH [--json]") != 0)
    return EXIT_USAGE;
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  rc = sl_batch_status(cl, com.queue, argv[first], &out);
  if (rc != 0) {
    cli_err("%s", sl_client_errstr(cl));
    sl_client_close(cl);
    return EXIT_RUNTIME;
  }
  if (json)
    printf("%s\n", out);
  else
    print_status(out);
  sl_free(out);
  sl_client_close(cl);
  return EXIT_OK;
}

int cmd_watch(int argc, char **argv) {
  const char *give_up_s = NULL;
  cli_flag f[] = {{"give-up", 1, NULL, &give_up_s}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 1);
  long long give_up = CLI_GIVE_UP_MS;
  sl_client_t *cl;
  int ret;

  if (need_batch(argc, argv, first, "watch BATCH [--give-up DURATION]") != 0)
    return EXIT_USAGE;
  if (give_up_s != NULL && (give_up = cli_parse_duration(give_up_s)) < 1) {
    cli_err("--give-up: expected a duration like 60000 (ms), 30s, 10m or 1h, got \"%s\"", give_up_s);
    return EXIT_USAGE;
  }
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  ret = cli_watch_batch(cl, com.queue, argv[first], give_up);
  sl_client_close(cl);
  return ret;
}

static int write_errno; /* errno of the failed write to stdout */

static int print_line(const char *json, size_t len, void *ud) {
  (void)ud;
  fwrite(json, 1, len, stdout);
  fputc('\n', stdout);
  if (ferror(stdout)) {
    write_errno = errno;
    return SL_EIO;
  }
  return 0;
}

int cmd_results(int argc, char **argv) {
  int failed = 0;
  cli_flag f[] = {{"failed", 0, &failed, NULL}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 1);
  sl_client_t *cl;
  int rc;

  if (need_batch(argc, argv, first, "results BATCH [--failed]") != 0)
    return EXIT_USAGE;
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  rc = sl_batch_results(cl, com.queue, argv[first], failed ? SL_RESULTS_FAILED : 0, print_line, NULL);
  if (rc == SL_EIO)
    cli_err("cannot write the results to standard output: %s", strerror(write_errno));
  else if (rc != 0)
    cli_err("%s", sl_client_errstr(cl));
  sl_client_close(cl);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

static int print_batch_row(const char *json, size_t len, void *ud) {
  cJSON *j = cJSON_ParseWithLength(json, len);
  char created[32];

  (void)ud;
  if (j == NULL)
    return 0;
  cli_fmt_time(jnum(j, "created_at"), created, sizeof(created));
  printf("%-26s  %-10s  %9lld/%-9lld  %8lld  %-20s  %s\n", cli_safe(jstr(j, "batch")), cli_safe(jstr(j, "status")),
         jnum(j, "done"), jnum(j, "total"), jnum(j, "failed"), created, cli_safe(jstr(j, "name")));
  cJSON_Delete(j);
  return 0;
}

/* A page of `sluice batches`: rows or JSON lines, and the last batch shown
 * (for --after). */
typedef struct list_page {
  int json;
  long long shown;
  char last[SL_NAME_MAX + 1];
} list_page;

static int print_page(const char *json, size_t len, void *ud) {
  list_page *p = ud;
  cJSON *j = cJSON_ParseWithLength(json, len);
  const cJSON *b = j ? cJSON_GetObjectItemCaseSensitive(j, "batch") : NULL;

  if (cJSON_IsString(b))
    snprintf(p->last, sizeof(p->last), "%s", b->valuestring);
  cJSON_Delete(j);
  p->shown++;
  return p->json ? print_line(json, len, NULL) : print_batch_row(json, len, NULL);
}

int cmd_batches(int argc, char **argv) {
  int json = 0;
  const char *status = NULL;
  const char *limit_s = NULL;
  const char *after = NULL;
  const char *name = NULL;
  const char *label = NULL;
  cli_flag f[] = {{"json", 0, &json, NULL},         {"status", 1, NULL, &status}, {"limit", 1, NULL, &limit_s},
                  {"after", 1, NULL, &after},       {"name", 1, NULL, &name},     {"label", 1, NULL, &label}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 6);
  long long limit = 0;
  sl_client_t *cl;
  int rc;

  if (first < 0 || first != argc) {
    cli_err("usage: sluice batches [--status S] [--name NAME] [--label KEY[=VALUE],...] [--limit N] [--after BATCH] "
            "[--json]");
    return EXIT_USAGE;
  }
  if (limit_s != NULL && (limit = cli_parse_int(limit_s, 1000000000)) < 0) {
    cli_err("--limit: expected a number, got \"%s\"", limit_s);
    return EXIT_USAGE;
  }
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  if (!json)
    printf("%-26s  %-10s  %19s  %8s  %-20s  %s\n", "BATCH", "STATUS", "DONE/TOTAL", "FAILED", "CREATED", "NAME");
  {
    list_page page = {json, 0, ""};
    sl_list_opts lo = {0};

    lo.status = status;
    lo.name = name;
    lo.label = label;
    lo.after = after;
    lo.limit = (size_t)limit;
    rc = sl_batch_list_with(cl, com.queue, &lo, print_page, &page);
    if (rc == 0 && limit > 0 && page.shown == limit && !json)
      fprintf(stderr, "sluice: %lld batches shown; the next ones: sluice batches --limit %lld --after %s\n",
              page.shown, limit, cli_safe(page.last));
  }
  if (rc != 0)
    cli_err("%s", sl_client_errstr(cl));
  sl_client_close(cl);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* cancel, pause and resume: one batch, one call. */
static int batch_op(int argc, char **argv, const char *name, int (*op)(sl_client_t *, const char *, const char *),
                    const char *done) {
  cli_common com;
  int first = cli_parse(argc, argv, &com, NULL, 0);
  char usage[64];
  sl_client_t *cl;
  int rc;

  snprintf(usage, sizeof(usage), "%s BATCH", name);
  if (need_batch(argc, argv, first, usage) != 0)
    return EXIT_USAGE;
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  rc = op(cl, com.queue, argv[first]);
  if (rc != 0)
    cli_err("%s", sl_client_errstr(cl));
  else
    fprintf(stderr, "sluice: batch %s %s\n", argv[first], done);
  sl_client_close(cl);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

int cmd_cancel(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--abort") == 0) {
      /* drop the flag: the rest parses as usual */
      for (int k = i; k < argc - 1; k++)
        argv[k] = argv[k + 1];
      return batch_op(argc - 1, argv, "cancel --abort", sl_batch_abort,
                      "cancelled; running items are aborted at their workers' next heartbeat");
    }
  }
  return batch_op(argc, argv, "cancel", sl_batch_cancel, "cancelled; running items finish, no new item starts");
}

int cmd_pause(int argc, char **argv) {
  return batch_op(argc, argv, "pause", sl_batch_pause,
                  "paused; running items finish, the others wait (sluice resume continues it)");
}

int cmd_resume(int argc, char **argv) {
  return batch_op(argc, argv, "resume", sl_batch_resume, "resumed");
}
