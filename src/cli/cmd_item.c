/*
 * sluice item BATCH ID [--json]
 *
 * One item's story, told from the batch log and the item's results line:
 * each attempt with its worker, its end (and, for the last, its start),
 * its outcome and error, including attempts lost with a worker that
 * stopped heartbeating, then the result. ID is the item's id, or #N for
 * the item at index N.
 *
 *   item       "x3" (index 3) of batch 01M8...
 *   status     succeeded, after 2 attempts
 *   attempt 1  lost        with vm:779:ba4e (idle 1.2 s), taken over by vm:802:c01f at 12:00:04.512Z
 *   attempt 2  succeeded   on vm:802:c01f, 12:00:04.513Z to 12:00:06.020Z (1507 ms)
 *   result     {"slept_ms":1500}
 *
 * Each attempt's log lines follow it (sl_job_log: an exec child's stderr,
 * an http item's request line). An attempt's start is known for the last
 * one only (its results line); earlier ones show when they ended. A lost
 * attempt's log is lost with its worker. --json prints one object: batch,
 * item, index, status, attempts [{attempt, outcome, worker, ended_at,
 * started_at, error, lost_with, idle_ms, taken_by, log}], result line, log.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"

typedef struct story {
  cJSON *log;        /* the item's log entries */
  const char *id;    /* wanted id, or NULL with want_index */
  long long want_index;
} story;

static int collect(const char *json, size_t len, void *ud) {
  story *s = ud;
  cJSON *e = cJSON_ParseWithLength(json, len);
  const cJSON *i = cJSON_GetObjectItemCaseSensitive(e, "index");

  if (e == NULL)
    return 0;
  if (s->id == NULL && !(cJSON_IsNumber(i) && (long long)i->valuedouble == s->want_index)) {
    cJSON_Delete(e);
    return 0;
  }
  cJSON_AddItemToArray(s->log, e);
  return 0;
}

static void fmt_ms(double ms, char *out, size_t len) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  char s[16];

  if (ms <= 0) {
    snprintf(out, len, "-");
    return;
  }
  gmtime_r(&t, &tm);
  strftime(s, sizeof(s), "%H:%M:%S", &tm);
  snprintf(out, len, "%.8s.%03dZ", s, (int)((long long)ms % 1000));
}

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* The attempt objects: one per attempt the log or the results line knows,
 * in order. */
static cJSON *attempts_of(const cJSON *log, const cJSON *line) {
  cJSON *out = cJSON_CreateArray();
  const cJSON *e;
  int last = line ? (int)jnum(line, "attempts") : 0;

  cJSON_ArrayForEach(e, log) {
    const char *ev = jstr(e, "event");
    int att = (int)jnum(e, "attempt");
    cJSON *a = NULL;
    cJSON *x;
    int timed;

    if (ev == NULL || att < 1)
      continue;
    if (strcmp(ev, "taken") == 0)
      continue; /* the start of an attempt the next entry or the line ends */
    if (att == last)
      continue; /* the last attempt: told by the results line */
    cJSON_ArrayForEach(x, out) {
      if ((int)jnum(x, "attempt") == att)
        a = x;
    }
    if (a == NULL) {
      a = cJSON_CreateObject();
      cJSON_AddNumberToObject(a, "attempt", att);
      cJSON_AddItemToArray(out, a);
    }
    cJSON_DeleteItemFromObject(a, "outcome");
    if (strcmp(ev, "takeover") == 0 || strcmp(ev, "poison") == 0) {
      cJSON_AddStringToObject(a, "outcome", "lost");
      cJSON_AddStringToObject(a, "worker", jstr(e, "from") ? jstr(e, "from") : "");
      cJSON_AddStringToObject(a, "lost_with", jstr(e, "from") ? jstr(e, "from") : "");
      cJSON_AddNumberToObject(a, "idle_ms", jnum(e, "idle_ms"));
      cJSON_AddStringToObject(a, "taken_by", jstr(e, "to") ? jstr(e, "to") : "");
      cJSON_AddNumberToObject(a, "ended_at", jnum(e, "at"));
      continue;
    }
    if (strcmp(ev, "timeout") == 0 && cJSON_GetObjectItemCaseSensitive(a, "timed_out") == NULL)
      cJSON_AddTrueToObject(a, "timed_out");
    timed = cJSON_GetObjectItemCaseSensitive(a, "timed_out") != NULL;
    cJSON_AddStringToObject(a, "outcome", strcmp(ev, "retry") == 0 ? (timed ? "timed out, retried" : "failed, retried")
                                          : strcmp(ev, "timeout") == 0 ? "timed out"
                                          : strcmp(ev, "dead") == 0    ? "failed"
                                                                       : ev);
    if (cJSON_GetObjectItemCaseSensitive(a, "worker") == NULL)
      cJSON_AddStringToObject(a, "worker", jstr(e, "by") ? jstr(e, "by") : "");
    if (cJSON_GetObjectItemCaseSensitive(a, "ended_at") == NULL)
      cJSON_AddNumberToObject(a, "ended_at", jnum(e, "at"));
    if (cJSON_GetObjectItemCaseSensitive(a, "error") == NULL && jstr(e, "error"))
      cJSON_AddStringToObject(a, "error", jstr(e, "error"));
    if (jnum(e, "next_at") > 0 && cJSON_GetObjectItemCaseSensitive(a, "next_at") == NULL)
      cJSON_AddNumberToObject(a, "next_at", jnum(e, "next_at"));
    if (jstr(e, "log") != NULL && jstr(e, "log")[0] != '\0' && cJSON_GetObjectItemCaseSensitive(a, "log") == NULL) {
      /* the attempt's log lines, joined by newlines in the entry */
      cJSON *lines = cJSON_CreateArray();
      char *copy = strdup(jstr(e, "log"));
      char *save = NULL;

      for (char *l = copy ? strtok_r(copy, "\n", &save) : NULL; l != NULL; l = strtok_r(NULL, "\n", &save))
        cJSON_AddItemToArray(lines, cJSON_CreateString(l));
      free(copy);
      cJSON_AddItemToObject(a, "log", lines);
    }
  }
  if (line != NULL && last >= 1) {
    cJSON *a = cJSON_CreateObject();
    const char *st = jstr(line, "status");

    cJSON_AddNumberToObject(a, "attempt", last);
    cJSON_AddStringToObject(a, "outcome", st ? st : "?");
    cJSON_AddStringToObject(a, "worker", jstr(line, "worker") ? jstr(line, "worker") : "");
    cJSON_AddNumberToObject(a, "started_at", jnum(line, "started_at"));
    cJSON_AddNumberToObject(a, "ended_at", jnum(line, "finished_at"));
    if (jstr(line, "error"))
      cJSON_AddStringToObject(a, "error", jstr(line, "error"));
    if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(line, "log")))
      cJSON_AddItemToObject(a, "log", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(line, "log"), 1));
    cJSON_AddItemToArray(out, a);
  }
  return out;
}

static void print_story(const char *batch, const char *id, long long index, const cJSON *line, const cJSON *atts) {
  const cJSON *a;
  char t1[32];
  char t2[32];

  printf("item       \"%s\" (index %lld) of batch %s\n", cli_safe(id), index, cli_safe(batch));
  if (line != NULL)
    printf("status     %s, after %.0f attempt%s\n", cli_safe(jstr(line, "status") ? jstr(line, "status") : "?"),
           jnum(line, "attempts"), jnum(line, "attempts") == 1 ? "" : "s");
  else
    printf("status     not finished\n");
  cJSON_ArrayForEach(a, atts) {
    const char *out = jstr(a, "outcome") ? jstr(a, "outcome") : "?";

    printf("attempt %-2.0f %-15s", jnum(a, "attempt"), cli_safe(out));
    fmt_ms(jnum(a, "ended_at"), t2, sizeof(t2));
    if (strcmp(out, "lost") == 0) {
      const char *to = jstr(a, "taken_by") ? jstr(a, "taken_by") : "";

      printf(" with %s (idle %.1f s), taken over by %s at %s", cli_safe(jstr(a, "lost_with")),
             jnum(a, "idle_ms") / 1000.0,
             strcmp(to, "~stale") == 0 ? "the next worker with a free slot" : cli_safe(to), t2);
    } else if (jnum(a, "started_at") > 0) {
      fmt_ms(jnum(a, "started_at"), t1, sizeof(t1));
      printf(" on %s, %s to %s (%.0f ms)", cli_safe(jstr(a, "worker")), t1, t2,
             jnum(a, "ended_at") - jnum(a, "started_at"));
    } else {
      printf(" on %s, ended %s", cli_safe(jstr(a, "worker") ? jstr(a, "worker") : "?"), t2);
    }
    if (jstr(a, "error") != NULL)
      printf(": %s", cli_safe(jstr(a, "error")));
    printf("\n");
    {
      const cJSON *l;

      cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(a, "log")) {
        if (cJSON_IsString(l))
          printf("           | %s\n", cli_safe(l->valuestring));
      }
    }
  }
  if (line != NULL && cJSON_GetObjectItemCaseSensitive(line, "result") != NULL) {
    char *r = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(line, "result"));

    printf("result     %.300s%s\n", r ? cli_safe(r) : "?", r && strlen(r) > 300 ? " ..." : "");
    cJSON_free(r);
  }
}

int cmd_item(int argc, char **argv) {
  int json = 0;
  cli_flag f[] = {{"json", 0, &json, NULL}};
  cli_common com;
  int first = cli_parse(argc, argv, &com, f, 1);
  sl_client_t *cl;
  story s = {NULL, NULL, -1};
  const char *batch;
  const char *id;
  char *line_s = NULL;
  cJSON *line = NULL;
  size_t index = 0;
  int rc;

  if (first < 0 || first != argc - 2) {
    return cli_usage("item");
  }
  batch = argv[first];
  id = argv[first + 1];
  if (id[0] == '#') {
    char *end;
    long long n = strtoll(id + 1, &end, 10);

    if (id[1] == '\0' || *end != '\0' || n < 0) {
      cli_err("item \"%s\": expected an id, or #N with N an item index", cli_safe(id));
      return EXIT_USAGE;
    }
    s.want_index = n;
  } else {
    s.id = id;
  }
  cl = cli_open(&com);
  if (cl == NULL)
    return cli_open_exit();
  s.log = cJSON_CreateArray();
  rc = sl_batch_log(cl, com.queue, batch, s.id, 0, collect, &s);
  if (rc == 0) {
    const cJSON *e0 = cJSON_GetArrayItem(s.log, 0);

    if (s.want_index >= 0)
      index = (size_t)s.want_index;
    else if (e0 != NULL && jnum(e0, "index") >= 0)
      index = (size_t)jnum(e0, "index");
    else
      rc = sl_item_find(cl, com.queue, batch, id, &index);
  }
  if (rc == 0)
    rc = sl_item_result(cl, com.queue, batch, index, &line_s);
  if (rc != 0) {
    cli_err("%s", sl_client_errstr(cl));
    cJSON_Delete(s.log);
    sl_client_close(cl);
    return EXIT_RUNTIME;
  }
  line = line_s ? cJSON_Parse(line_s) : NULL;
  {
    cJSON *atts = attempts_of(s.log, line);
    const char *shown = s.id ? s.id : (line && jstr(line, "id") ? jstr(line, "id") : id);

    if (json) {
      cJSON *o = cJSON_CreateObject();
      char *txt;

      cJSON_AddStringToObject(o, "batch", batch);
      cJSON_AddStringToObject(o, "item", shown);
      cJSON_AddNumberToObject(o, "index", (double)index);
      cJSON_AddStringToObject(o, "status", line && jstr(line, "status") ? jstr(line, "status") : "unfinished");
      cJSON_AddItemToObject(o, "attempts", atts);
      cJSON_AddItemToObject(o, "result", line ? line : cJSON_CreateNull());
      cJSON_AddItemToObject(o, "log", s.log);
      txt = cJSON_PrintUnformatted(o);
      puts(txt ? txt : "{}");
      cJSON_free(txt);
      cJSON_Delete(o);
    } else {
      print_story(batch, shown, (long long)index, line, atts);
      cJSON_Delete(atts);
      cJSON_Delete(line);
      cJSON_Delete(s.log);
    }
  }
  sl_free(line_s);
  sl_client_close(cl);
  return EXIT_OK;
}
