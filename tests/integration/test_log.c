/*
 * The batch log (`sluice log`), from real commands and real workers:
 *
 *   takeover   a worker killed with SIGKILL while it runs every item of a
 *              batch: the log shows submitted (by the CLI: host, pid,
 *              program), whole, started (by the first worker), a takeover
 *              of each item naming the dead worker, how long it was idle
 *              and the worker that runs it now, and ended; --item keeps
 *              one item's entries; the human form says "lost with"; `sluice
 *              item` shows the lost attempt and the one that succeeded
 *   failures   a retry with its error and next try, a dead letter after
 *              the last attempt, a timeout (what the attempt ran into);
 *              pause, resume, cancel --abort and retry logged with the CLI
 *              that did them, and a batch that ran again ended twice;
 *              `sluice item` of the flaky item (two failed attempts), of an
 *              item with no log entry (found among the results), and of an
 *              unknown id (exit 1)
 *   item_logs  an exec item's stderr lines kept with its success ("progress
 *              N" lines aside); an item that times out twice keeps each
 *              attempt's lines: the retried one's in the batch log, the
 *              last one's in its results line; `sluice item` shows both
 *   metric_sums  exec children report "metric cost 0.25": an item that ran
 *              twice counts twice over all attempts, once over final ones,
 *              and the batch counts it as reran (status --json)
 *   follow     `log --follow` started before any worker: it prints the
 *              entries as they come and exits 0 after the batch's end
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

/* Submits n items {"id":"PREFIXi",REST} and returns the batch id (static). */
static const char *submit_n(const char *q, const char *name, int n, const char *prefix, const char *rest) {
  char *buf = malloc((size_t)n * 256);
  size_t len = 0;

  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, 256, "{\"id\":\"%s%d\",%s}\n", prefix, i, rest);
  {
    const char *opts[] = {"--name", name, NULL};
    const char *id = itest_submit(q, buf, len, opts);

    free(buf);
    return id;
  }
}

/* The batch's log as JSON entries (an array: free it with cJSON_Delete);
 * item: only that item's entries, or NULL. */
static cJSON *log_of(const char *q, const char *batch, const char *item) {
  const char *args[] = {"log", "--redis", itest_url(), "--queue", q, batch, "--json",
                        item ? "--item" : NULL, item, NULL};
  char *out = NULL;
  char *err = NULL;
  cJSON *arr = cJSON_CreateArray();
  char *line;
  char *save = NULL;

  if (itest_run(args, &out, &err, 60) != 0)
    sl_test_fail(__FILE__, __LINE__, "sluice log failed: %s", err ? err : "");
  for (line = strtok_r(out, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
    cJSON *e = cJSON_Parse(line);

    if (e == NULL)
      sl_test_fail(__FILE__, __LINE__, "not JSON: %s", line);
    cJSON_AddItemToArray(arr, e);
  }
  free(out);
  free(err);
  return arr;
}

static const char *s_of(const cJSON *e, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, k);

  return cJSON_IsString(v) ? v->valuestring : "";
}

static long long n_of(const cJSON *e, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, k);

  return cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
}

/* How many entries of event ev; the first of them in *first (may be NULL). */
static int count_ev(const cJSON *log, const char *ev, const cJSON **first) {
  const cJSON *e;
  int n = 0;

  if (first != NULL)
    *first = NULL;
  cJSON_ArrayForEach(e, log) {
    if (strcmp(s_of(e, "event"), ev) == 0) {
      if (n++ == 0 && first != NULL)
        *first = e;
    }
  }
  return n;
}

/* The CLI's actor: "HOST pid N (sluice)". */
static void check_cli_actor(const char *by) {
  char host[128];

  gethostname(host, sizeof(host));
  CHECK(strncmp(by, host, strlen(host)) == 0);
  CHECK_CONTAINS(by, " pid ");
  CHECK_CONTAINS(by, "(sluice)");
}

static void test_takeover(void) {
  redisContext *c = itest_conn();
  const char *q = itest_queue("logtk");
  char batch[64];
  char a[128];
  char b[128];
  pid_t wa;
  pid_t wb;
  cJSON *log;
  const cJSON *e;
  int n;

  snprintf(batch, sizeof(batch), "%s",
           submit_n(q, "story", 8, "x", "\"type\":\"sleep\",\"payload\":{\"ms\":1500}"));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--concurrency", "8", "--visibility", "1000",
                          "--quiet", NULL};

    wa = itest_spawn(args, NULL, NULL);
    itest_wait_worker(c, q, wa, a, sizeof(a), 20000);
    ITEST_WAIT_INT(itest_pending_of(c, q, a), ==, 8, 20000, "the first worker to hold all 8 items");
    kill(wa, SIGKILL);
    waitpid(wa, NULL, 0);
    wb = itest_spawn(args, NULL, NULL);
    itest_wait_worker(c, q, wb, b, sizeof(b), 20000);
  }
  itest_wait_batch(c, q, batch, 60);
  log = log_of(q, batch, NULL);
  CHECK_INT(count_ev(log, "submitted", &e), ==, 1);
  check_cli_actor(s_of(e, "by"));
  CHECK(e == cJSON_GetArrayItem(log, 0));
  CHECK_INT(count_ev(log, "whole", &e), ==, 1);
  CHECK_INT(n_of(e, "total"), ==, 8);
  CHECK_INT(count_ev(log, "started", &e), ==, 1);
  CHECK_STR(s_of(e, "by"), a);
  n = count_ev(log, "takeover", NULL);
  CHECK_INT(n, ==, 8);
  cJSON_ArrayForEach(e, log) {
    if (strcmp(s_of(e, "event"), "takeover") != 0)
      continue;
    CHECK_STR(s_of(e, "from"), a);
    CHECK_STR(s_of(e, "to"), b);
    CHECK_STR(s_of(e, "by"), b);
    CHECK_INT(n_of(e, "attempt"), ==, 1);
    CHECK_INT(n_of(e, "idle_ms"), >=, 1000);
    CHECK(strncmp(s_of(e, "item"), "x", 1) == 0);
  }
  CHECK_INT(count_ev(log, "ended", &e), ==, 1);
  CHECK_STR(s_of(e, "status"), "completed");
  CHECK_INT(n_of(e, "succeeded"), ==, 8);
  CHECK(e == cJSON_GetArrayItem(log, cJSON_GetArraySize(log) - 1));
  cJSON_Delete(log);
  /* one item's entries */
  log = log_of(q, batch, "x3");
  CHECK_INT(cJSON_GetArraySize(log), ==, 1);
  CHECK_STR(s_of(cJSON_GetArrayItem(log, 0), "event"), "takeover");
  CHECK_INT(n_of(cJSON_GetArrayItem(log, 0), "index"), ==, 3);
  cJSON_Delete(log);
  {
    const char *args[] = {"log", "--redis", itest_url(), "--queue", q, batch, "--item", "x3", NULL};
    char *out = NULL;

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "takeover   item \"x3\" (index 3), attempt 1, lost with ");
    CHECK_CONTAINS(out, a);
    CHECK_CONTAINS(out, b);
    free(out);
  }
  /* the item's story: the lost attempt, then the one that succeeded */
  {
    const char *args[] = {"item", "--redis", itest_url(), "--queue", q, batch, "x3", "--json", NULL};
    const char *human[] = {"item", "--redis", itest_url(), "--queue", q, batch, "#3", NULL};
    char *out = NULL;
    cJSON *j;
    const cJSON *at;

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    j = cJSON_Parse(out);
    CHECK(j != NULL);
    free(out);
    CHECK_STR(s_of(j, "status"), "succeeded");
    CHECK_INT(n_of(j, "index"), ==, 3);
    at = cJSON_GetObjectItemCaseSensitive(j, "attempts");
    CHECK_INT(cJSON_GetArraySize(at), ==, 2);
    CHECK_STR(s_of(cJSON_GetArrayItem(at, 0), "outcome"), "lost");
    CHECK_STR(s_of(cJSON_GetArrayItem(at, 0), "lost_with"), a);
    CHECK_STR(s_of(cJSON_GetArrayItem(at, 0), "taken_by"), b);
    CHECK_INT(n_of(cJSON_GetArrayItem(at, 1), "attempt"), ==, 2);
    CHECK_STR(s_of(cJSON_GetArrayItem(at, 1), "outcome"), "succeeded");
    CHECK_STR(s_of(cJSON_GetArrayItem(at, 1), "worker"), b);
    cJSON_Delete(j);
    CHECK_INT(itest_run(human, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "item       \"x3\" (index 3)");
    CHECK_CONTAINS(out, "status     succeeded, after 2 attempts");
    CHECK_CONTAINS(out, "attempt 1  lost            with ");
    CHECK_CONTAINS(out, "taken over by ");
    CHECK_CONTAINS(out, "attempt 2  succeeded       on ");
    free(out);
  }
  itest_stop_ok(wb);
  redisFree(c);
}

static void test_failures(void) {
  redisContext *c = itest_conn();
  const char *q = itest_queue("logfail");
  char batch[64];
  pid_t w;
  cJSON *log;
  const cJSON *e;
  static const char items[] =
      "{\"id\":\"flaky\",\"type\":\"sleep\",\"payload\":{\"ms\":0,\"fail_rate\":1},\"max_attempts\":2,"
      "\"backoff_ms\":200}\n"
      "{\"id\":\"slow\",\"type\":\"sleep\",\"payload\":{\"ms\":5000},\"timeout_ms\":100}\n"
      "{\"id\":\"ok\",\"type\":\"sleep\",\"payload\":{\"ms\":0}}\n";

  snprintf(batch, sizeof(batch), "%s", itest_submit(q, items, sizeof(items) - 1, NULL));
  w = itest_worker(q, 4);
  itest_wait_batch(c, q, batch, 60);
  log = log_of(q, batch, "flaky");
  CHECK_INT(count_ev(log, "retry", &e), ==, 1);
  CHECK_INT(n_of(e, "attempt"), ==, 1);
  CHECK_CONTAINS(s_of(e, "error"), "fail");
  CHECK_INT(n_of(e, "next_at"), >=, n_of(e, "at") + 1); /* backoff: full jitter up to 200 ms */
  CHECK_INT(n_of(e, "next_at"), <=, n_of(e, "at") + 200);
  CHECK_INT(count_ev(log, "dead", &e), ==, 1);
  CHECK_INT(n_of(e, "attempt"), ==, 2);
  cJSON_Delete(log);
  log = log_of(q, batch, "slow");
  CHECK_INT(count_ev(log, "timeout", &e), ==, 1);
  CHECK_CONTAINS(s_of(e, "error"), "timed out after 100 ms");
  CHECK_INT(count_ev(log, "dead", NULL), ==, 1);
  cJSON_Delete(log);
  CHECK_INT(cJSON_GetArraySize(log = log_of(q, batch, "ok")), ==, 0);
  cJSON_Delete(log);
  {
    const char *flaky[] = {"item", "--redis", itest_url(), "--queue", q, batch, "flaky", NULL};
    const char *ok[] = {"item", "--redis", itest_url(), "--queue", q, batch, "ok", NULL};
    const char *none[] = {"item", "--redis", itest_url(), "--queue", q, batch, "nosuch", NULL};
    char *out = NULL;
    char *err = NULL;

    CHECK_INT(itest_run(flaky, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "status     failed, after 2 attempts");
    CHECK_CONTAINS(out, "attempt 1  failed, retried ");
    CHECK_CONTAINS(out, "attempt 2  failed ");
    CHECK_CONTAINS(out, "simulated failure");
    free(out);
    CHECK_INT(itest_run(ok, &out, NULL, 30), ==, 0); /* no log entry: found among the results */
    CHECK_CONTAINS(out, "item       \"ok\" (index 2)");
    CHECK_CONTAINS(out, "status     succeeded, after 1 attempt\n");
    free(out);
    CHECK_INT(itest_run(none, NULL, &err, 30), ==, 1);
    CHECK_CONTAINS(err, "has no finished item with id \"nosuch\"");
    free(err);
  }
  /* control from the CLI: each logged with the command that did it */
  {
    const char *retry[] = {"retry", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(retry, NULL, NULL, 30), ==, 0);
    itest_wait_batch(c, q, batch, 60);
  }
  itest_stop_ok(w);
  {
    char b2[64];
    const char *pause[] = {"pause", "--redis", itest_url(), "--queue", q, b2, NULL};
    const char *resume[] = {"resume", "--redis", itest_url(), "--queue", q, b2, NULL};
    const char *cancel[] = {"cancel", "--abort", "--redis", itest_url(), "--queue", q, b2, NULL};

    snprintf(b2, sizeof(b2), "%s", submit_n(q, "ctl", 3, "c", "\"type\":\"noop\",\"payload\":{}"));
    CHECK_INT(itest_run(pause, NULL, NULL, 30), ==, 0);
    CHECK_INT(itest_run(resume, NULL, NULL, 30), ==, 0);
    CHECK_INT(itest_run(cancel, NULL, NULL, 30), ==, 0);
    w = itest_worker(q, 4); /* it meets the cancelled items and ends them */
    itest_wait_batch(c, q, b2, 30);
    itest_stop_ok(w);
    log = log_of(q, b2, NULL);
    CHECK_INT(count_ev(log, "paused", &e), ==, 1);
    check_cli_actor(s_of(e, "by"));
    CHECK_STR(s_of(e, "from"), "queued");
    CHECK_INT(count_ev(log, "resumed", &e), ==, 1);
    check_cli_actor(s_of(e, "by"));
    CHECK_INT(count_ev(log, "cancelled", &e), ==, 1);
    check_cli_actor(s_of(e, "by"));
    CHECK_INT(count_ev(log, "aborted", NULL), ==, 1);
    CHECK_INT(count_ev(log, "ended", &e), ==, 1);
    CHECK_STR(s_of(e, "status"), "cancelled");
    CHECK_INT(n_of(e, "cancelled"), ==, 3);
    cJSON_Delete(log);
  }
  log = log_of(q, batch, NULL);
  CHECK_INT(count_ev(log, "retried", &e), ==, 1);
  check_cli_actor(s_of(e, "by"));
  CHECK_INT(n_of(e, "items"), ==, 2);
  CHECK_INT(count_ev(log, "ended", NULL), ==, 2); /* it ended, ran again and ended anew */
  cJSON_Delete(log);
  redisFree(c);
}

/* An executable script in the test's temp dir; its path (static). */
static const char *script(const char *name, const char *body) {
  static char path[2][700];
  static int next;
  FILE *f;

  next = (next + 1) % 2;
  snprintf(path[next], sizeof(path[next]), "%s", itest_path(name));
  f = fopen(path[next], "w");
  CHECK(f != NULL);
  fprintf(f, "#!/bin/sh\n%s\n", body);
  fclose(f);
  chmod(path[next], 0700);
  return path[next];
}

static void test_item_logs(void) {
  redisContext *c = itest_conn();
  const char *q = itest_queue("logitem");
  char batch[64];
  char m[2][800];
  pid_t w;
  static const char items[] = "{\"id\":\"talk\",\"type\":\"talk\",\"payload\":null}\n"
                              "{\"id\":\"hang\",\"type\":\"hang\",\"payload\":null,\"timeout_ms\":500,"
                              "\"max_attempts\":2,\"backoff_ms\":1}\n";

  snprintf(m[0], sizeof(m[0]), "talk=%s",
           script("talk.sh", "echo 'step one' >&2; echo 'progress 50' >&2; echo 'step two' >&2; echo '{\"ok\":1}'"));
  snprintf(m[1], sizeof(m[1]), "hang=%s", script("hang.sh", "echo \"started attempt $SLUICE_ATTEMPT\" >&2; exec sleep 30"));
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, items, sizeof(items) - 1, NULL));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--quiet", "--exec", m[0], "--exec", m[1],
                          NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  {
    redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 0", q, batch);

    /* a success keeps its stderr lines; "progress N" is not one of them */
    CHECK_CONTAINS(r->str, "\"log\":[\"step one\",\"step two\"]");
    freeReplyObject(r);
    r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r 1", q, batch);
    CHECK_CONTAINS(r->str, "timed out after 500 ms");
    CHECK_CONTAINS(r->str, "\"log\":[\"started attempt 2\"]"); /* the last attempt timed out: its log is kept */
    freeReplyObject(r);
  }
  {
    const char *args[] = {"item", "--redis", itest_url(), "--queue", q, batch, "hang", NULL};
    char *out = NULL;

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "attempt 1  timed out, retried");
    CHECK_CONTAINS(out, "           | started attempt 1\n"); /* the retried attempt's log, from the batch log */
    CHECK_CONTAINS(out, "           | started attempt 2\n");
    free(out);
  }
  redisFree(c);
}

/* Metrics reported by exec children ("metric NAME VALUE" on stderr): an
 * item that ran twice is paid twice in the sum over all attempts and once
 * in the sum over final attempts; the batch counts it as reran. */
static void test_metric_sums(void) {
  redisContext *c = itest_conn();
  const char *q = itest_queue("metrics");
  char batch[64];
  char m[800];
  pid_t w;
  static const char items[] = "{\"id\":\"twice\",\"type\":\"priced\",\"payload\":{\"fail_first\":1},\"max_attempts\":2,"
                              "\"backoff_ms\":1}\n"
                              "{\"id\":\"once\",\"type\":\"priced\",\"payload\":{\"fail_first\":0}}\n";

  snprintf(m, sizeof(m), "priced=%s",
           script("priced.sh", "read p; echo 'metric cost 0.25' >&2; echo 'metric tokens 10' >&2;"
                               " case \"$p\" in *'\"fail_first\":1'*) [ \"$SLUICE_ATTEMPT\" = 1 ] && exit 75;; esac;"
                               " echo '{\"ok\":1}'"));
  snprintf(batch, sizeof(batch), "%s", itest_submit(q, items, sizeof(items) - 1, NULL));
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--quiet", "--exec", m, NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  itest_wait_batch(c, q, batch, 60);
  itest_stop_ok(w);
  {
    const char *args[] = {"status", "--redis", itest_url(), "--queue", q, batch, "--json", NULL};
    char *out = NULL;
    cJSON *j;
    const cJSON *cost;
    const cJSON *tokens;

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    j = cJSON_Parse(out);
    free(out);
    CHECK(j != NULL);
    cost = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "metrics"), "cost");
    tokens = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "metrics"), "tokens");
    CHECK(n_of(j, "reran") == 1);
    CHECK(cJSON_GetObjectItemCaseSensitive(cost, "all")->valuedouble == 0.75);   /* 3 attempts of 0.25 */
    CHECK(cJSON_GetObjectItemCaseSensitive(cost, "final")->valuedouble == 0.5);  /* 2 final attempts */
    CHECK_INT(n_of(tokens, "all"), ==, 30);
    CHECK_INT(n_of(tokens, "final"), ==, 20);
    cJSON_Delete(j);
  }
  redisFree(c);
}

static void test_follow(void) {
  redisContext *c = itest_conn();
  const char *q = itest_queue("logfollow");
  char batch[64];
  const char *out = itest_path("follow.out");
  pid_t f;
  pid_t w;

  snprintf(batch, sizeof(batch), "%s",
           submit_n(q, "follow", 20, "f", "\"type\":\"sleep\",\"payload\":{\"ms\":10}"));
  {
    const char *args[] = {"log", "--redis", itest_url(), "--queue", q, batch, "--follow", NULL};

    f = itest_spawn(args, out, NULL);
  }
  free(itest_wait_file(out, "whole", 10000));
  w = itest_worker(q, 4);
  itest_exit_code(f, 0, 30000);
  {
    char *text = itest_read(out, NULL);

    CHECK_CONTAINS(text, "submitted");
    CHECK_CONTAINS(text, "started");
    CHECK_CONTAINS(text, "ended");
    CHECK_CONTAINS(text, "status completed, succeeded 20");
    free(text);
  }
  itest_stop_ok(w);
  redisFree(c);
}

static const sl_test tests[] = {
    {"takeover", test_takeover, 90},
    {"failures", test_failures, 90},
    {"item_logs", test_item_logs, 60},
    {"metric_sums", test_metric_sums, 60},
    {"follow", test_follow, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
