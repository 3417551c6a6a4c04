/*
 * Scheduling (run_at, delay_ms), bounded memory (retention) and admission
 * control against a real redis-server.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "devredis.h"
#include "itest.h"

static long long wall_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long used_memory(redisContext *c) {
  redisReply *r = itest_cmd(c, "INFO memory");
  const char *p = strstr(r->str, "\r\nused_memory:");
  long long v = p ? strtoll(p + 14, NULL, 10) : -1;

  freeReplyObject(r);
  return v;
}

static const char *submit(const char *url, const char *q, const char *path, const char *o1, const char *o2) {
  static char id[64];
  const char *args[] = {"submit", "--redis", url, "--queue", q, path, o1, o2, NULL};
  char *out = NULL;
  char *err = NULL;

  if (itest_run(args, &out, &err, 120) != 0)
    sl_test_fail(__FILE__, __LINE__, "submit failed: %s", err);
  snprintf(id, sizeof(id), "%.26s", out);
  free(out);
  free(err);
  return id;
}

/* delay_ms and run_at items start at their time (not before, and within a
 * second after) on a worker with default settings; the others at once. */
static void test_scheduled_items(void) {
  const char *q = itest_queue("sched");
  const char *path = itest_path("sched.jsonl");
  redisContext *c = itest_conn();
  char buf[2048];
  char when[64];
  size_t len = 0;
  char batch[64];
  long long t0 = wall_ms();
  long long run_at = t0 + 2500;
  pid_t w;
  redisReply *r;

  {
    time_t s = (time_t)(run_at / 1000);
    struct tm tm;

    gmtime_r(&s, &tm);
    len = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + len, sizeof(when) - len, ".%03lldZ", run_at % 1000);
  }
  len = 0;
  for (int i = 0; i < 3; i++) {
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "{\"id\":\"now-%d\",\"type\":\"noop\",\"payload\":null}\n", i);
    len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                            "{\"id\":\"delay-%d\",\"type\":\"noop\",\"payload\":null,\"delay_ms\":1500}\n", i);
    len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                            "{\"id\":\"at-%d\",\"type\":\"noop\",\"payload\":null,\"run_at\":\"%s\"}\n", i, when);
  }
  itest_write(path, buf, len);
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--quiet", NULL};

    w = itest_spawn(args, NULL, NULL);
  }
  itest_wait_worker(c, q, w, NULL, 0, 10000); /* up and reading when the batch arrives */
  t0 = wall_ms();
  snprintf(batch, sizeof(batch), "%s", submit(itest_url(), q, path, NULL, NULL));
  itest_wait_batch(c, q, batch, 20);
  itest_stop_ok(w);
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  CHECK_INT(r->elements, ==, 9);
  for (size_t i = 0; i < r->elements; i++) {
    cJSON *j = cJSON_Parse(r->element[i]->str);
    const char *id = cJSON_GetObjectItemCaseSensitive(j, "id")->valuestring;
    long long st = (long long)cJSON_GetObjectItemCaseSensitive(j, "started_at")->valuedouble;

    if (strncmp(id, "now", 3) == 0) {
      CHECK_INT(st - t0, <, 1000);
    } else if (strncmp(id, "delay", 5) == 0) {
      CHECK_INT(st, >=, t0 + 1500);
      CHECK_INT(st, <=, t0 + 1500 + 1000 + 500); /* within a second, plus the submit's own time */
    } else {
      CHECK_INT(st, >=, run_at);
      CHECK_INT(st, <=, run_at + 1000);
    }
    cJSON_Delete(j);
  }
  freeReplyObject(r);
  redisFree(c);
}

/* How many of a batch's hash and results hash still exist. */
static long long batch_keys(redisContext *c, const char *q, const char *batch) {
  redisReply *r = itest_cmd(c, "EXISTS sluice:{%s}:b:%s sluice:{%s}:b:%s:r", q, batch, q, batch);
  long long n = r->integer;

  freeReplyObject(r);
  return n;
}

/* 100,000 items ran and their batch expired (retention 1 s): Redis's
 * used_memory is back within a small margin of where it started. */
static void test_memory_returns(void) {
  const char *q = itest_queue("mem");
  const char *path = itest_path("mem.jsonl");
  redisContext *c = itest_conn();
  long n = 100000;
  size_t cap = (size_t)n * 48;
  char *buf = malloc(cap);
  size_t len = 0;
  char batch[64];
  long long before;
  long long peak;
  long long after;
  pid_t w;

  for (long i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"noop\",\"payload\":%ld}\n", i);
  itest_write(path, buf, len);
  free(buf);
  /* Warm up: the queue's streams, group, functions and a finished batch exist. */
  {
    const char *small = itest_path("small.jsonl");

    itest_write(small, "{\"type\":\"noop\",\"payload\":0}\n", 28);
    snprintf(batch, sizeof(batch), "%s", submit(itest_url(), q, small, "--retention", "1s"));
    w = itest_worker(q, 200);
    itest_wait_batch(c, q, batch, 20);
    ITEST_WAIT_INT(batch_keys(c, q, batch), ==, 0, 10000, "the warm-up batch to expire (retention 1 s)");
  }
  before = used_memory(c);
  snprintf(batch, sizeof(batch), "%s", submit(itest_url(), q, path, "--retention", "1s"));
  peak = used_memory(c);
  itest_wait_batch(c, q, batch, 120);
  CHECK_INT(itest_batch_num(c, q, batch, "succeeded"), ==, n);
  ITEST_WAIT_INT(batch_keys(c, q, batch), ==, 0, 10000, "the batch to expire (retention 1 s)");
  after = used_memory(c);
  itest_stop_ok(w);
  printf("    memory: used_memory %.2f MiB before, %.2f MiB with 100,000 items queued, %.2f MiB after they ran "
         "and the batch expired (+%.1f KiB)\n",
         (double)before / 1048576.0, (double)peak / 1048576.0, (double)after / 1048576.0,
         (double)(after - before) / 1024.0);
  CHECK(peak > before + 5 * 1048576); /* the batch really was in Redis */
  CHECK(after < before + 512 * 1024);
  redisFree(c);
}

/* A Redis near its maxmemory: submit refuses with how much is used and
 * what the limit is, and writes nothing; a batch that fits goes in. */
static void test_admission_control(void) {
  sl_devredis d;
  char err[512];
  const char *extra[] = {"--maxmemory", "12mb", NULL};
  const char *path = itest_path("big.jsonl");
  redisContext *c;
  long n = 40000;
  size_t cap = (size_t)n * 64;
  char *buf = malloc(cap);
  size_t len = 0;
  redisReply *r;
  char *serr = NULL;

  for (long i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"noop\",\"payload\":\"%ld\"}\n", i);
  itest_write(path, buf, len);
  free(buf);
  if (sl_devredis_start(&d, extra, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url);
  c = redisConnectUnix(d.sock);
  /* Fill most of it: 8 MB of 12. */
  {
    char *junk = calloc(1, 100000);

    for (int i = 0; i < 80; i++) {
      r = redisCommand(c, "SET junk:%d %b", i, junk, (size_t)100000);
      freeReplyObject(r);
    }
    free(junk);
  }
  {
    const char *args[] = {"submit", "--redis", d.url, "--queue", "adm", path, NULL};

    CHECK_INT(itest_run(args, NULL, &serr, 60), ==, 1);
    CHECK_CONTAINS(serr, "Redis is near its memory limit");
    CHECK_CONTAINS(serr, "MiB used of 12.0 MiB (maxmemory)");
    CHECK_CONTAINS(serr, "nothing was submitted");
    free(serr);
  }
  r = redisCommand(c, "KEYS sluice:{adm}:*");
  CHECK_INT(r->elements, ==, 0);
  freeReplyObject(r);
  {
    const char *small = itest_path("fits.jsonl");
    const char *args[] = {"submit", "--redis", d.url, "--queue", "adm", small, NULL};

    itest_write(small, "{\"type\":\"noop\",\"payload\":1}\n", 28);
    CHECK_INT(itest_run(args, NULL, NULL, 60), ==, 0);
  }
  redisFree(c);
  sl_devredis_stop(&d);
}

static const sl_test tests[] = {
    {"scheduled_items", test_scheduled_items, 60},
    {"memory_returns", test_memory_returns, 180},
    {"admission_control", test_admission_control, 60},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
