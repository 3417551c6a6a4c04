/*
 * The commands about one batch or the list of them: status, watch, results
 * and batches read; cancel, pause and resume control.
 *
 * A control command says what it changed, and nothing it did not: the
 * batch's status is read before the call (and after a cancel), so that a
 * cancel of a batch that has completed, a pause of one that is paused or
 * has ended, and a resume of one that is not paused say so and exit 1
 * instead of claiming success. (sl_batch_pause refuses an ended batch by
 * itself; the library's cancel and resume leave such a batch as it is and
 * return 0.)
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"

static double jdbl(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

/* The progress lines: done (of which cancelled: an ended item is not a
 * succeeded one), where the rest are (the live counts: docs/PROTOCOL.md,
 * "The live state of a batch"), the recent rate and ETA, and the metric
 * sums, with what attempts that ran again cost. */
static void print_progress(const cJSON *j, long long total, long long done) {
  static const char *const states[] = {"running", "queued", "waiting", "retrying", "scheduled", "paused", NULL};
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "metrics");
  const cJSON *e;
  const char *sep = "";

  printf("progress   %lld/%lld ended (%.1f%%): %lld succeeded, %lld failed, %lld cancelled\n", done, total,
         jdbl(j, "pct"), cli_jnum(j, "succeeded"), cli_jnum(j, "failed"), cli_jnum(j, "cancelled"));
  if (total > done) {
    printf("not ended  %lld:", total - done);
    for (size_t i = 0; states[i] != NULL; i++) {
      if (cli_jnum(j, states[i]) != 0 || i < 2) {
        printf("%s %lld %s", sep, cli_jnum(j, states[i]), states[i]);
        sep = ",";
      }
    }
    printf("\n");
  }
  if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "rate"))) {
    char eta[32];

    printf("rate       %.1f items/s recently", jdbl(j, "rate"));
    if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "eta_ms"))) {
      cli_fmt_span(cli_jnum(j, "eta_ms"), eta, sizeof(eta));
      printf(", about %s left at that rate", eta);
    }
    printf("\n");
  }
  cJSON_ArrayForEach(e, m) {
    double all = jdbl(e, "all");
    double fin = jdbl(e, "final");

    printf("%-10s %.6g over final attempts", cli_safe(e->string), fin);
    if (all != fin)
      printf(", %.6g over all attempts (%.6g spent on attempts that did not end the item)", all, all - fin);
    printf("\n");
  }
  if (cli_jnum(j, "reran") > 0)
    printf("reran      %lld items ran more than once (a retry or a takeover)\n", cli_jnum(j, "reran"));
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
  total = cli_jnum(j, "total");
  done = cli_jnum(j, "done");
  cli_fmt_time(cli_jnum(j, "created_at"), created, sizeof(created));
  cli_fmt_time(cli_jnum(j, "started_at"), started, sizeof(started));
  cli_fmt_time(cli_jnum(j, "finished_at"), finished, sizeof(finished));
  printf("batch      %s%s%s%s\n", cli_safe(cli_jstr(j, "batch")), *cli_jstr(j, "name") ? "  (" : "", cli_safe(cli_jstr(j, "name")),
         *cli_jstr(j, "name") ? ")" : "");
  printf("queue      %s\n", cli_jstr(j, "queue"));
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
           cli_jstr(j, "status"), cli_jnum(j, "submitted"), cli_jstr(j, "batch"));
  else
    printf("status     %s\n", cli_jstr(j, "status"));
  print_progress(j, total, done);
  if (cli_jnum(j, "refused") > 0)
    printf("refused    %lld of the failed items asked for a secret their worker was not granted (no dead letter;\n"
           "           grant it with `sluice worker --secret NAME`, then `sluice retry %s`)\n",
           cli_jnum(j, "refused"), cli_safe(cli_jstr(j, "batch")));
  printf("created    %s\nstarted    %s\nfinished   %s\n", created, started, finished);
  printf("elapsed    %.1f s", (double)cli_jnum(j, "elapsed_ms") / 1000.0);
  if (cli_jnum(j, "started_at") > 0)
    printf(", %.1f items/s since the first start", cJSON_GetObjectItemCaseSensitive(j, "items_per_s")->valuedouble);
  printf("\n");
  cJSON_Delete(j);
}

/* 0 when the arguments after the options are one batch id; -1 after the
 * usage of cmd. */
static int need_batch(int argc, int first, const char *cmd) {
  if (first < 0 || first != argc - 1) {
    cli_usage(cmd);
    return -1;
  }
  return 0;
}

int cmd_status(int argc, char **argv) {
  int json = 0;
  int items = 0;
  const char *state = NULL;
  const char *limit_s = NULL;
  cli_flag f[] = {{"json", 0, &json, NULL}, {"items", 0, &items, NULL}, {"state", 1, NULL, &state},
                  {"limit", 1, NULL, &limit_s}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 4);
  sl_client_t *cl;
  char *out = NULL;
  int rc;

  if (need_batch(argc, first, "status") != 0)
    return EXIT_USAGE;
  if ((state != NULL || limit_s != NULL) && !items) {
    cli_err("--state and --limit go with --items");
    return EXIT_USAGE;
  }
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  if (items) {
    int ret = cli_status_items(cl, com.queue, argv[first], state, limit_s, json);

    sl_client_close(cl);
    return ret;
  }
  rc = sl_batch_status(cl, com.queue, argv[first], &out);
  if (rc != 0) {
    cli_err("%s", sl_client_errstr(cl));
    sl_client_close(cl);
    return EXIT_RUNTIME;
  }
  if (json) {
    printf("%s\n", out);
  } else {
    char warn[4096];

    print_status(out);
    if (strstr(out, "\"finished_at\":0,") != NULL && cli_stuck_warnings(cl, com.queue, argv[first], warn,
                                                                      sizeof(warn)) == 0)
      fputs(warn, stdout);
  }
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

  if (need_batch(argc, first, "watch") != 0)
    return EXIT_USAGE;
  if (give_up_s != NULL && cli_duration_opt("give-up", give_up_s, 1, CLI_DURATION_MAX_MS, &give_up) != 0)
    return EXIT_USAGE;
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

  if (need_batch(argc, first, "results") != 0)
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
  cli_fmt_time(cli_jnum(j, "created_at"), created, sizeof(created));
  printf("%-26s  %-10s  %9lld/%-9lld  %8lld  %-20s  %s\n", cli_safe(cli_jstr(j, "batch")), cli_safe(cli_jstr(j, "status")),
         cli_jnum(j, "done"), cli_jnum(j, "total"), cli_jnum(j, "failed"), created, cli_safe(cli_jstr(j, "name")));
  cJSON_Delete(j);
  return 0;
}

/* A page of `sluice batches`: rows or JSON lines, and the last batch shown
 * (for --after). */
typedef struct list_page {
  int json;                   /* JSON lines instead of the table */
  long long shown;            /* batches shown */
  char last[SL_NAME_MAX + 1]; /* the last one's id */
} list_page;

/* The table's header, printed with the first row (or for an empty list
 * once the listing succeeded), so that a refused filter prints none. */
static void print_batches_header(void) {
  printf("%-26s  %-10s  %19s  %8s  %-20s  %s\n", "BATCH", "STATUS", "DONE/TOTAL", "FAILED", "CREATED", "NAME");
}

static int print_page(const char *json, size_t len, void *ud) {
  list_page *p = ud;
  cJSON *j = cJSON_ParseWithLength(json, len);
  const cJSON *b = j ? cJSON_GetObjectItemCaseSensitive(j, "batch") : NULL;

  if (cJSON_IsString(b))
    snprintf(p->last, sizeof(p->last), "%s", b->valuestring);
  cJSON_Delete(j);
  if (p->shown++ == 0 && !p->json)
    print_batches_header();
  return p->json ? print_line(json, len, NULL) : print_batch_row(json, len, NULL);
}

/* The statuses a batch can be in, for `batches --status`. */
static const char *const batch_statuses[] = {"submitting", "queued", "running", "paused", "completed", "cancelled"};

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

  if (first < 0 || first != argc)
    return cli_usage("batches");
  if (limit_s != NULL && (limit = cli_parse_int(limit_s, 1000000000)) < 0) {
    cli_err("--limit: expected a number of batches (0: all), got \"%s\"", cli_safe(limit_s));
    return EXIT_USAGE;
  }
  if (status != NULL) {
    size_t i = 0;
    size_t n = sizeof(batch_statuses) / sizeof(batch_statuses[0]);

    while (i < n && strcmp(batch_statuses[i], status) != 0)
      i++;
    if (i == n) {
      cli_err("--status: unknown status \"%s\" (expected submitting, queued, running, paused, completed or "
              "cancelled)", cli_safe(status));
      return EXIT_USAGE;
    }
  }
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  {
    list_page page = {json, 0, ""};
    sl_list_opts lo = {0};

    lo.status = status;
    lo.name = name;
    lo.label = label;
    lo.after = after;
    lo.limit = (size_t)limit;
    rc = sl_batch_list_with(cl, com.queue, &lo, print_page, &page);
    if (rc == 0 && page.shown == 0 && !json)
      print_batches_header();
    if (rc == 0 && limit > 0 && page.shown == limit && !json)
      fprintf(stderr, "sluice: %lld batches shown; the next ones: sluice batches --limit %lld --after %s\n",
              page.shown, limit, cli_safe(page.last));
  }
  if (rc == SL_EINVAL) {
    cli_err("%s", sl_client_errstr(cl)); /* a filter the library refused: --label */
    sl_client_close(cl);
    return EXIT_USAGE;
  }
  if (rc != 0)
    cli_err("%s", sl_client_errstr(cl));
  sl_client_close(cl);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* ---- cancel, pause, resume ---- */

/* The control commands. */
typedef enum { OP_CANCEL, OP_ABORT, OP_PAUSE, OP_RESUME } control_op;

/* What a control command needs to know of a batch. */
typedef struct batch_state {
  char status[32]; /* "running", "paused", ... */
  int ended;       /* 1 once it has ended (finished_at is set) */
} batch_state;

/* Reads the batch's state into *bs; 0, or the error code (sl_client_errstr
 * says why it could not be read). */
static int read_state(sl_client_t *cl, const char *queue, const char *batch, batch_state *bs) {
  char *json = NULL;
  cJSON *j;
  int rc = sl_batch_status(cl, queue, batch, &json);

  if (rc != 0)
    return rc;
  j = cJSON_Parse(json);
  snprintf(bs->status, sizeof(bs->status), "%s", cli_jstr(j, "status"));
  bs->ended = cli_jnum(j, "finished_at") > 0;
  cJSON_Delete(j);
  sl_free(json);
  return 0;
}

/*
 * Why op cannot change a batch in state bs ("has completed: nothing to
 * cancel" and the like), or NULL when it can. Two states are neither: a
 * cancel of a cancelled batch that has not ended yet, and a resume of a
 * batch that is running (or queued, submitting) rather than paused. The
 * call is made for them, because it finishes what an earlier call of the
 * same command left when its client died between steps (lua/cancel.lua,
 * lua/resume.lua: parked and scheduled items to cancel, parked items to
 * put back); *again is set and the caller says so. A batch cancelled before
 * can still be cancelled with --abort: its running items are stopped.
 */
static const char *refusal(control_op op, const batch_state *bs, int *again) {
  const char *st = bs->status;
  int completed = strcmp(st, "completed") == 0;
  int cancelled = strcmp(st, "cancelled") == 0;

  *again = 0;
  switch (op) {
  case OP_CANCEL:
    if (completed)
      return "has completed: nothing to cancel";
    if (cancelled && bs->ended)
      return "was cancelled already and has ended: nothing to cancel";
    *again = cancelled;
    return NULL;
  case OP_ABORT:
    if (completed)
      return "has completed: nothing to cancel or abort";
    if (cancelled && bs->ended)
      return "was cancelled and has ended: nothing to cancel or abort";
    return NULL;
  case OP_PAUSE:
    if (strcmp(st, "paused") == 0)
      return "is paused already: nothing to pause (`sluice resume` continues it)";
    if (completed || cancelled)
      return completed ? "has completed: nothing to pause" : "was cancelled: nothing to pause";
    return NULL;
  case OP_RESUME:
    if (completed || cancelled)
      return completed ? "has completed: nothing to resume" : "was cancelled: nothing to resume";
    *again = strcmp(st, "paused") != 0;
    return NULL;
  }
  return NULL;
}

/*
 * cancel [--abort], pause and resume: reads the batch's state, refuses
 * (exit 1, saying why) what it does not allow, else makes the call and says
 * what changed. A cancel that met a batch completed meanwhile changed
 * nothing: the state read after it says so.
 */
static int control(int argc, char **argv, control_op op) {
  static const char *const cmd[] = {"cancel", "cancel", "pause", "resume"};
  static const char *const done[] = {
      "cancelled; running items finish, no new item starts",
      "cancelled; running items are aborted at their workers' next heartbeat",
      "paused; running items finish, the others wait (sluice resume continues it)",
      "resumed; its waiting items run again",
  };
  cli_common com;
  int first = cli_parse(argc, argv, &com, NULL, 0);
  const char *batch;
  const char *why;
  sl_client_t *cl;
  batch_state bs;
  int again;
  int was_cancelled;
  int rc;

  if (need_batch(argc, first, cmd[op]) != 0)
    return EXIT_USAGE;
  batch = argv[first];
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  if (read_state(cl, com.queue, batch, &bs) != 0) {
    cli_err("%s", cli_safe(sl_client_errstr(cl)));
    sl_client_close(cl);
    return EXIT_RUNTIME;
  }
  was_cancelled = strcmp(bs.status, "cancelled") == 0;
  why = refusal(op, &bs, &again);
  if (why != NULL) {
    cli_err("batch %s %s", cli_safe(batch), why);
    sl_client_close(cl);
    return EXIT_RUNTIME;
  }
  if (op == OP_CANCEL || op == OP_ABORT)
    rc = (op == OP_ABORT ? sl_batch_abort : sl_batch_cancel)(cl, com.queue, batch);
  else
    rc = (op == OP_PAUSE ? sl_batch_pause : sl_batch_resume)(cl, com.queue, batch);
  if (rc == 0 && !was_cancelled && (op == OP_CANCEL || op == OP_ABORT) &&
      read_state(cl, com.queue, batch, &bs) == 0 && strcmp(bs.status, "completed") == 0)
    why = refusal(op, &bs, &again);
  if (rc != 0)
    cli_err("%s", cli_safe(sl_client_errstr(cl)));
  else if (why != NULL)
    cli_err("batch %s %s", cli_safe(batch), why);
  else if (op == OP_ABORT && was_cancelled)
    fprintf(stderr, "sluice: batch %s was cancelled already; its running items are aborted at their workers' next "
                    "heartbeat\n", cli_safe(batch));
  else if (again && op == OP_CANCEL)
    fprintf(stderr, "sluice: batch %s was cancelled already; items an interrupted cancel left parked or scheduled, "
                    "if any, are cancelled now (running items finish: `sluice cancel --abort` stops them)\n",
            cli_safe(batch));
  else if (again)
    fprintf(stderr, "sluice: batch %s is not paused (it is %s); items an interrupted resume left parked, if any, "
                    "are back in their streams now\n", cli_safe(batch), cli_safe(bs.status));
  else
    fprintf(stderr, "sluice: batch %s %s\n", cli_safe(batch), done[op]);
  sl_client_close(cl);
  return rc == 0 && why == NULL ? EXIT_OK : EXIT_RUNTIME;
}

int cmd_cancel(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0)
      break;
    if (strcmp(argv[i], "--abort") == 0) {
      /* drop the flag: the rest parses as usual */
      for (int k = i; k < argc - 1; k++)
        argv[k] = argv[k + 1];
      return control(argc - 1, argv, OP_ABORT);
    }
  }
  return control(argc, argv, OP_CANCEL);
}

int cmd_pause(int argc, char **argv) {
  return control(argc, argv, OP_PAUSE);
}

int cmd_resume(int argc, char **argv) {
  return control(argc, argv, OP_RESUME);
}
