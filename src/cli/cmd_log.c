/*
 * sluice log BATCH [--item ID] [--follow] [--json]
 *
 * The batch's story from its log (sl_batch_log): what happened to it and to
 * its items, when, and who did it, oldest first, one line per entry:
 *
 *   2026-12-02 12:00:01.123Z  submitted  by ci-box pid 4242 (sluice)
 *   2026-12-02 12:00:04.512Z  takeover   item "x17" (index 16), attempt 1, lost with W1 (idle 31.0 s), now W2, by W2
 *   2026-12-02 12:00:05.020Z  retry      item "x3" (index 2), attempt 1, by W2: HTTP 503; next try 12:00:06.020Z
 *
 * --item keeps the entries of one item; --follow waits for new ones until
 * the batch has ended; --json prints the entries as JSON lines instead.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"

static int write_errno;

/* "2026-12-02 12:00:01.123Z" (with_date) or "12:00:01.123Z". */
static void fmt_ms(long long ms, int with_date, char *out, size_t len) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  char s[32];

  gmtime_r(&t, &tm);
  strftime(s, sizeof(s), with_date ? "%Y-%m-%d %H:%M:%S" : "%H:%M:%S", &tm);
  snprintf(out, len, "%s.%03lldZ", s, ms % 1000);
}

static const char *str(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsString(v) && v->valuestring[0] != '\0' ? v->valuestring : NULL;
}

static const cJSON *num(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsNumber(v) ? v : NULL;
}

static int print_entry(const char *json, size_t len, void *ud) {
  const int *as_json = ud;
  cJSON *j;
  char when[40];
  const cJSON *v;

  if (*as_json) {
    fwrite(json, 1, len, stdout);
    fputc('\n', stdout);
  } else if ((j = cJSON_ParseWithLength(json, len)) != NULL) {
    static const char *const shown[] = {"seq", "at", "event", "item", "index", "attempt", "by", "error", "next_at",
                                        NULL};
    int lost = num(j, "idle_ms") != NULL; /* a takeover: from, idle_ms and to make one phrase */
    int parts = 0;

    fmt_ms((long long)(num(j, "at") ? num(j, "at")->valuedouble : 0), 1, when, sizeof(when));
    printf("%s  %-10s", when, cli_safe(str(j, "event") ? str(j, "event") : "?"));
    if (str(j, "item") != NULL)
      printf("%s item \"%s\"", parts++ ? "," : "", cli_safe(str(j, "item")));
    if ((v = num(j, "index")) != NULL)
      printf(" (index %.0f)", v->valuedouble);
    if ((v = num(j, "attempt")) != NULL)
      printf("%s attempt %.0f", parts++ ? "," : "", v->valuedouble);
    if (lost) {
      const char *to = str(j, "to");

      printf("%s lost with %s (idle %.1f s), now %s", parts++ ? "," : "",
             cli_safe(str(j, "from") ? str(j, "from") : "?"), num(j, "idle_ms")->valuedouble / 1000.0,
             to == NULL                      ? "?"
             : strcmp(to, "~stale") == 0     ? "the next worker with a free slot"
             : strcmp(to, "~alone") == 0     ? "a worker with nothing else to run (its last delivery)"
                                             : cli_safe(to));
    }
    /* the event's other fields: status, counters, from, to, ... */
    for (const cJSON *f = j->child; f != NULL; f = f->next) {
      int known = lost && (strcmp(f->string, "from") == 0 || strcmp(f->string, "to") == 0 ||
                           strcmp(f->string, "idle_ms") == 0);

      for (int i = 0; shown[i] != NULL && !known; i++)
        known = strcmp(shown[i], f->string) == 0;
      if (known)
        continue;
      if (cJSON_IsNumber(f))
        printf("%s %s %.0f", parts++ ? "," : "", cli_safe(f->string), f->valuedouble);
      else if (cJSON_IsString(f) && f->valuestring[0] != '\0')
        printf("%s %s %s", parts++ ? "," : "", cli_safe(f->string), cli_safe(f->valuestring));
    }
    if (str(j, "by") != NULL)
      printf("%s by %s", parts++ ? "," : "", cli_safe(str(j, "by")));
    if (str(j, "error") != NULL)
      printf(": %s", cli_safe(str(j, "error")));
    if ((v = num(j, "next_at")) != NULL) {
      fmt_ms((long long)v->valuedouble, 0, when, sizeof(when));
      printf("; next try %s", when);
    }
    printf("\n");
    cJSON_Delete(j);
  }
  fflush(stdout);
  if (ferror(stdout)) {
    write_errno = errno;
    return SL_EIO;
  }
  return 0;
}

int cmd_log(int argc, char **argv) {
  int json = 0;
  int follow = 0;
  const char *item = NULL;
  cli_flag f[] = {{"json", 0, &json, NULL}, {"follow", 0, &follow, NULL}, {"item", 1, NULL, &item}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 3);
  sl_client_t *cl;
  int rc;

  if (first < 0 || first != argc - 1) {
    return cli_usage("log");
  }
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  rc = sl_batch_log(cl, com.queue, argv[first], item, follow, print_entry, &json);
  if (rc == SL_EIO)
    cli_err("cannot write the log to standard output: %s", strerror(write_errno));
  else if (rc != 0)
    cli_err("%s", sl_client_errstr(cl));
  sl_client_close(cl);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}
