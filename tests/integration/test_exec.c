/*
 * exec items: commands the worker maps to types (--exec TYPE=COMMAND), the
 * payload on stdin, stdout as the result, exit codes classified, timeouts
 * killing the whole process group.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

static char dir[600];

static const char *script(const char *name, const char *body) {
  static char path[8][700];
  static int next;
  FILE *f;

  next = (next + 1) % 8;
  snprintf(path[next], sizeof(path[next]), "%s/%s", dir, name);
  f = fopen(path[next], "w");
  CHECK(f != NULL);
  fprintf(f, "#!/bin/sh\n%s\n", body);
  fclose(f);
  chmod(path[next], 0700);
  return path[next];
}

static cJSON *result_of(redisContext *c, const char *q, const char *batch, int idx) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s:r %d", q, batch, idx);
  cJSON *j = cJSON_Parse(r->str);

  CHECK(j != NULL);
  freeReplyObject(r);
  return j;
}

static void test_exec_outcomes(void) {
  const char *q = itest_queue("exec");
  redisContext *c = itest_conn();
  char m[6][800];
  char items[2048];
  char batch[64];
  char *out = NULL;
  char pidfile[700];
  pid_t w;
  cJSON *j;
  const char *path = itest_path("exec.jsonl");

  snprintf(dir, sizeof(dir), "%s", itest_path(""));
  snprintf(pidfile, sizeof(pidfile), "%s/grandchild.pid", dir);
  snprintf(m[0], sizeof(m[0]), "echojson=%s", script("echojson.sh", "read x; echo \"{\\\"got\\\":$x,\\\"attempt\\\":$SLUICE_ATTEMPT}\""));
  snprintf(m[1], sizeof(m[1]), "text=%s", script("text.sh", "cat >/dev/null; echo 'plain words'"));
  snprintf(m[2], sizeof(m[2]), "bad=%s", script("bad.sh", "echo 'first line' >&2; echo 'disk full on /data' >&2; exit 3"));
  snprintf(m[3], sizeof(m[3]), "later=%s",
           script("later.sh", "if [ \"$SLUICE_ATTEMPT\" = 1 ]; then echo busy >&2; exit 75; fi; echo '{\"ok\":true}'"));
  {
    char body[800];

    snprintf(body, sizeof(body), "sleep 30 & echo $! > %s; sleep 30", pidfile);
    snprintf(m[4], sizeof(m[4]), "hang=%s", script("hang.sh", body));
  }
  snprintf(items, sizeof(items),
           "{\"type\":\"echojson\",\"payload\":{\"n\":7}}\n"
           "{\"type\":\"text\",\"payload\":null}\n"
           "{\"type\":\"bad\",\"payload\":null,\"max_attempts\":3}\n"
           "{\"type\":\"later\",\"payload\":null,\"max_attempts\":3,\"backoff_ms\":1}\n"
           "{\"type\":\"hang\",\"payload\":null,\"timeout_ms\":400}\n"
           "{\"type\":\"rm-rf\",\"payload\":null}\n");
  itest_write(path, items, strlen(items));
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    snprintf(batch, sizeof(batch), "%.26s", out);
    free(out);
  }
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--quiet", "--block-ms", "200",
                          "--exec", m[0], "--exec", m[1], "--exec", m[2], "--exec", m[3], "--exec", m[4], NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  itest_wait_batch(c, q, batch, 30);
  itest_stop(w);

  j = result_of(c, q, batch, 0); /* JSON stdout is stored as JSON; the payload came on stdin */
  CHECK_STR(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "succeeded");
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "result"), "got"), "n")->valuedouble, ==, 7);
  cJSON_Delete(j);
  j = result_of(c, q, batch, 1); /* other stdout is a string, without the trailing newline */
  CHECK_STR(cJSON_GetObjectItemCaseSensitive(j, "result")->valuestring, "plain words");
  cJSON_Delete(j);
  j = result_of(c, q, batch, 2); /* exit 3: failed at once, exit code and stderr tail */
  CHECK_STR(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "failed");
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "attempts")->valuedouble, ==, 1);
  CHECK_CONTAINS(cJSON_GetObjectItemCaseSensitive(j, "error")->valuestring, "exit 3");
  CHECK_CONTAINS(cJSON_GetObjectItemCaseSensitive(j, "error")->valuestring, "disk full on /data");
  cJSON_Delete(j);
  j = result_of(c, q, batch, 3); /* exit 75: retried, then succeeded */
  CHECK_STR(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "succeeded");
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "attempts")->valuedouble, ==, 2);
  {
    char *errs = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, "errors"));

    CHECK_CONTAINS(errs, "exit 75");
    cJSON_free(errs);
  }
  cJSON_Delete(j);
  j = result_of(c, q, batch, 4); /* timeout: the whole process group is killed */
  CHECK_CONTAINS(cJSON_GetObjectItemCaseSensitive(j, "error")->valuestring, "timed out after 400 ms");
  cJSON_Delete(j);
  {
    char *pid = itest_read(pidfile, NULL);

    CHECK(pid != NULL);
    usleep(200000);
    /* The grandchild is gone too (or a zombie waiting for init): no orphan runs on. */
    {
      char statp[64];
      char *st;

      snprintf(statp, sizeof(statp), "/proc/%d/stat", atoi(pid));
      st = itest_read(statp, NULL);
      CHECK(st == NULL || strstr(st, ") Z ") != NULL);
      free(st);
    }
    free(pid);
  }
  j = result_of(c, q, batch, 5); /* a producer cannot choose a command */
  CHECK_CONTAINS(cJSON_GetObjectItemCaseSensitive(j, "error")->valuestring, "no handler for type \"rm-rf\"");
  cJSON_Delete(j);
  redisFree(c);
}

/* "progress N" lines on a child's stderr reach the batch: status --json
 * shows them while the item runs, and a subscriber gets progress events. */
static void test_progress(void) {
  const char *q = itest_queue("progress");
  redisContext *c = itest_conn();
  redisContext *sub = itest_conn();
  char m[800];
  char batch[64];
  char *out = NULL;
  const char *path = itest_path("p.jsonl");
  const char *item = "{\"type\":\"slowjob\",\"payload\":null}\n";
  pid_t w;
  redisReply *r;
  int seen_event = 0;
  long long t0;

  snprintf(dir, sizeof(dir), "%s", itest_path(""));
  snprintf(m, sizeof(m), "slowjob=%s", script("slow.sh", "echo 'progress 40' >&2; sleep 1; echo 'progress 90' >&2; sleep 1; echo done"));
  itest_write(path, item, strlen(item));
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    snprintf(batch, sizeof(batch), "%.26s", out);
    free(out);
  }
  r = itest_cmd(sub, "SUBSCRIBE sluice:{%s}:events:%s", q, batch);
  freeReplyObject(r);
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--quiet", "--exec", m, NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  /* A progress event arrives. */
  t0 = itest_ms();
  while (!seen_event) {
    CHECK(itest_ms() - t0 < 5000);
    CHECK(redisGetReply(sub, (void **)&r) == REDIS_OK);
    if (strstr(r->element[2]->str, "\"type\":\"progress\"") != NULL) {
      CHECK_CONTAINS(r->element[2]->str, "\"0\":");
      seen_event = 1;
    }
    freeReplyObject(r);
  }
  {
    const char *args[] = {"status", "--json", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, &out, NULL, 30), ==, 0);
    CHECK_CONTAINS(out, "\"progress\":{\"0\":");
    free(out);
  }
  itest_wait_batch(c, q, batch, 20);
  itest_stop(w);
  r = itest_cmd(c, "HLEN sluice:{%s}:b:%s:progress", q, batch);
  CHECK_INT(r->integer, ==, 0); /* gone once the item ended */
  freeReplyObject(r);
  redisFree(sub);
  redisFree(c);
}

static void test_bad_mapping(void) {
  char *err = NULL;
  const char *args[] = {"worker", "--redis", itest_url(), "--exec", "no-equals-sign", NULL};

  CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
  CHECK_CONTAINS(err, "expected TYPE=COMMAND");
  free(err);
}

static const sl_test tests[] = {
    {"exec_outcomes", test_exec_outcomes, 60},
    {"bad_mapping", test_bad_mapping, 30},
    {"progress", test_progress, 30},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
