/*
 * Streaming submit against a real redis-server: a batch large enough to go
 * through the spool arrives whole, every item exactly once and in index
 * order, with the skipped duplicates named from the spool; big items are cut
 * into calls by bytes, not only by count; a spool that cannot be written
 * leaves nothing in Redis; a connection lost mid-submit names the
 * incomplete batch and how to end it; and the producer's peak RSS stays
 * far below the size of its input.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "itest.h"

/* INFO commandstats: calls of FCALL so far. */
static long long fcall_calls(redisContext *c) {
  redisReply *r = itest_cmd(c, "INFO commandstats");
  const char *p = strstr(r->str, "cmdstat_fcall:calls=");
  long long v = p ? strtoll(p + 20, NULL, 10) : 0;

  freeReplyObject(r);
  return v;
}

/* The value of field f in a stream entry's field list, or NULL. */
static const redisReply *entry_field(const redisReply *fields, const char *f) {
  for (size_t k = 0; k + 1 < fields->elements; k += 2) {
    if (strcmp(fields->element[k]->str, f) == 0)
      return fields->element[k + 1];
  }
  return NULL;
}

/* 30,000 items in chunks of 1,000 (so 29 chunks go through the spool while
 * validating, and the last one at submit). Items 998, 1998, ... and 999,
 * 1999, ... share a dedupe key, so 30 are skipped. Every other item is in
 * the stream exactly once, in index order, and the skipped ids come back in
 * index order. The spool leaves no file behind. */
static void test_spooled_batch_exactly_once(void) {
  const char *q = itest_queue("spooled");
  const char *path = itest_path("spooled.jsonl");
  char spooldir[512];
  redisContext *c = itest_conn();
  long n = 30000;
  FILE *f;
  char *out = NULL;
  char *err = NULL;
  char batch[64];
  char start[64] = "-";
  long next = 0;
  long seen = 0;
  cJSON *j;
  cJSON *ids;
  redisReply *r;

  snprintf(spooldir, sizeof(spooldir), "%s", itest_path("spool"));
  CHECK_INT(mkdir(spooldir, 0700), ==, 0);
  setenv("TMPDIR", spooldir, 1);
  f = fopen(path, "wb");
  CHECK(f != NULL);
  for (long i = 0; i < n; i++) {
    if (i % 1000 == 998 || i % 1000 == 999)
      fprintf(f, "{\"id\":\"it-%ld\",\"type\":\"noop\",\"payload\":%ld,\"dedupe\":\"dk-%ld\"}\n", i, i, i - i % 1000);
    else
      fprintf(f, "{\"id\":\"it-%ld\",\"type\":\"noop\",\"payload\":%ld}\n", i, i);
  }
  fclose(f);
  {
    const char *args[] = {"submit", "--json", "--chunk", "1000", "--redis", itest_url(), "--queue", q, path, NULL};

    if (itest_run(args, &out, &err, 120) != 0)
      sl_test_fail(__FILE__, __LINE__, "submit failed: %s", err);
  }
  j = cJSON_Parse(out);
  CHECK(j != NULL);
  snprintf(batch, sizeof(batch), "%s", cJSON_GetObjectItemCaseSensitive(j, "batch")->valuestring);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "submitted")->valuedouble, ==, n - 30);
  CHECK_INT(cJSON_GetObjectItemCaseSensitive(j, "skipped")->valuedouble, ==, 30);
  ids = cJSON_GetObjectItemCaseSensitive(j, "skipped_ids");
  CHECK_INT(cJSON_GetArraySize(ids), ==, 30);
  for (int k = 0; k < 30; k++) {
    char want[32];

    snprintf(want, sizeof(want), "it-%d", k * 1000 + 999);
    CHECK_STR(cJSON_GetArrayItem(ids, k)->valuestring, want);
  }
  cJSON_Delete(j);
  CHECK_CONTAINS(err, "30 of 30000 items skipped");
  free(out);
  free(err);
  CHECK_INT(itest_batch_num(c, q, batch, "chunks"), ==, 30);
  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, n - 30);
  CHECK_INT(itest_batch_num(c, q, batch, "whole"), ==, 1);
  r = itest_cmd(c, "XLEN sluice:{%s}:s:normal", q);
  CHECK_INT(r->integer, ==, n - 30);
  freeReplyObject(r);
  /* Every entry, in stream order: indexes ascending, none twice, none
   * missing but the skipped ones, each with its own item. */
  for (;;) {
    r = itest_cmd(c, "XRANGE sluice:{%s}:s:normal %s + COUNT 4000", q, start);
    CHECK(r->type == REDIS_REPLY_ARRAY);
    if (r->elements == 0) {
      freeReplyObject(r);
      break;
    }
    for (size_t k = 0; k < r->elements; k++) {
      const redisReply *e = r->element[k];
      const redisReply *fi = entry_field(e->element[1], "i");
      const redisReply *fd = entry_field(e->element[1], "d");
      char want[64];

      while (next % 1000 == 999)
        next++;
      CHECK(fi != NULL && fd != NULL);
      if (strtol(fi->str, NULL, 10) != next)
        sl_test_fail(__FILE__, __LINE__, "entry %ld has index %s, expected %ld", seen, fi->str, next);
      snprintf(want, sizeof(want), ",\"id\":\"it-%ld\",\"payload\":", next);
      CHECK(strstr(fd->str, want) != NULL);
      next++;
      seen++;
    }
    snprintf(start, sizeof(start), "(%s", r->element[r->elements - 1]->element[0]->str);
    freeReplyObject(r);
  }
  CHECK_INT(seen, ==, n - 30);
  CHECK_INT(next, ==, n - 1); /* the last index, 29999, is a skipped one */
  /* The spool was an unlinked file: nothing is left in its directory. */
  {
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s')\"", spooldir);
    CHECK_INT(system(cmd), ==, 0);
  }
  redisFree(c);
}

/* 40 items of 500 KB: chunks close at 8 MiB of call arguments, so the batch
 * takes 3 calls (16, 16 and 8 items), not one call of 20 MB. */
static void test_big_items_cut_by_bytes(void) {
  const char *q = itest_queue("big");
  const char *path = itest_path("big.jsonl");
  redisContext *c = itest_conn();
  size_t pad = 500 * 1000;
  char *payload = malloc(pad + 1);
  long long calls0;
  long long calls1;
  char *out = NULL;
  char *err = NULL;
  char batch[64];
  FILE *f;
  redisReply *r;

  memset(payload, 'x', pad);
  payload[pad] = '\0';
  f = fopen(path, "wb");
  CHECK(f != NULL);
  for (int i = 0; i < 40; i++)
    fprintf(f, "{\"id\":\"big-%d\",\"type\":\"noop\",\"payload\":\"%s\"}\n", i, payload);
  fclose(f);
  free(payload);
  calls0 = fcall_calls(c);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

    if (itest_run(args, &out, &err, 120) != 0)
      sl_test_fail(__FILE__, __LINE__, "submit failed: %s", err);
  }
  calls1 = fcall_calls(c);
  snprintf(batch, sizeof(batch), "%.26s", out);
  free(out);
  free(err);
  CHECK_INT(itest_batch_num(c, q, batch, "chunks"), ==, 3);
  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, 40);
  /* 3 submit calls, plus the library version checks of open and submit */
  CHECK_INT(calls1 - calls0, >=, 3);
  CHECK_INT(calls1 - calls0, <=, 5);
  r = itest_cmd(c, "XRANGE sluice:{%s}:s:normal - + COUNT 1", q);
  CHECK_INT(r->elements, ==, 1);
  CHECK_INT(entry_field(r->element[0]->element[1], "d")->len, >, (long long)pad);
  freeReplyObject(r);
  r = itest_cmd(c, "XLEN sluice:{%s}:s:normal", q);
  CHECK_INT(r->integer, ==, 40);
  freeReplyObject(r);
  redisFree(c);
}

/* A full disk while spooling (a file-size limit stands in for it): exit 1,
 * the spool's directory named, and Redis holds nothing of the queue. */
static void test_spool_disk_full(void) {
  const char *q = itest_queue("full");
  const char *path = itest_path("full.jsonl");
  char spooldir[512];
  redisContext *c = itest_conn();
  struct rlimit rl;
  char *err = NULL;
  FILE *f;
  redisReply *r;

  snprintf(spooldir, sizeof(spooldir), "%s", itest_path("spool-full"));
  CHECK_INT(mkdir(spooldir, 0700), ==, 0);
  f = fopen(path, "wb");
  CHECK(f != NULL);
  for (int i = 0; i < 30000; i++)
    fprintf(f, "{\"type\":\"noop\",\"payload\":%d}\n", i);
  fclose(f);
  setenv("TMPDIR", spooldir, 1);
  signal(SIGXFSZ, SIG_IGN); /* inherited: writes past the limit fail with EFBIG */
  CHECK_INT(getrlimit(RLIMIT_FSIZE, &rl), ==, 0);
  rl.rlim_cur = 256 * 1024;
  CHECK_INT(setrlimit(RLIMIT_FSIZE, &rl), ==, 0);
  {
    const char *args[] = {"submit", "--chunk", "100", "--redis", itest_url(), "--queue", q, path, NULL};

    CHECK_INT(itest_run(args, NULL, &err, 60), ==, 1);
  }
  rl.rlim_cur = rl.rlim_max;
  CHECK_INT(setrlimit(RLIMIT_FSIZE, &rl), ==, 0);
  CHECK_CONTAINS(err, "cannot write the submit spool in ");
  CHECK_CONTAINS(err, spooldir);
  CHECK_CONTAINS(err, "File too large");
  CHECK_CONTAINS(err, "nothing was submitted");
  free(err);
  r = itest_cmd(c, "KEYS sluice:{%s}:*", q);
  CHECK_INT(r->elements, ==, 0);
  freeReplyObject(r);
  redisFree(c);
}

/* The connection of a producer is killed in the middle of its calls: the
 * producer exits 1 naming the batch, which stays `submitting`, and
 * `sluice cancel ID` ends it. */
static void test_connection_lost_midway(void) {
  const char *q = itest_queue("lost");
  const char *path = itest_path("lost.jsonl");
  const char *errpath = itest_path("lost.err");
  redisContext *c = itest_conn();
  long long self;
  long long t0;
  char batch[64] = "";
  char want[256];
  char *err;
  int status = 0;
  int killed = 0;
  pid_t prod;
  FILE *f;
  redisReply *r;

  f = fopen(path, "wb");
  CHECK(f != NULL);
  for (int i = 0; i < 200000; i++)
    fprintf(f, "{\"type\":\"noop\",\"payload\":%d}\n", i);
  fclose(f);
  r = itest_cmd(c, "CLIENT ID");
  self = r->integer;
  freeReplyObject(r);
  {
    const char *args[] = {"submit", "--chunk", "50", "--redis", itest_url(), "--queue", q, path, NULL};

    prod = itest_spawn(args, NULL, errpath);
  }
  /* Once some chunks are in, kill the connection that runs FCALLs. */
  t0 = itest_ms();
  while (!killed) {
    r = itest_cmd(c, "ZRANGE sluice:{%s}:batches 0 0", q);
    if (r->elements == 1)
      snprintf(batch, sizeof(batch), "%s", r->element[0]->str);
    freeReplyObject(r);
    if (batch[0] != '\0' && itest_batch_num(c, q, batch, "submitted") >= 1000) {
      r = itest_cmd(c, "CLIENT LIST TYPE normal");
      for (char *line = r->str; line != NULL && *line != '\0';) {
        char *eol = strchr(line, '\n');
        long long cid = strtoll(line + 3, NULL, 10); /* "id=N ..." */

        if (eol != NULL)
          *eol = '\0';
        if (cid != self && strstr(line, " cmd=fcall") != NULL) {
          redisReply *k = itest_cmd(c, "CLIENT KILL ID %lld", cid);

          killed = k->type == REDIS_REPLY_INTEGER && k->integer == 1;
          freeReplyObject(k);
        }
        line = eol != NULL ? eol + 1 : NULL;
      }
      freeReplyObject(r);
    }
    CHECK(itest_ms() - t0 < 30000);
    if (!killed)
      usleep(1000);
  }
  t0 = itest_ms();
  while (waitpid(prod, &status, WNOHANG) != prod) {
    CHECK(itest_ms() - t0 < 30000);
    usleep(5000);
  }
  CHECK(WIFEXITED(status));
  CHECK_INT(WEXITSTATUS(status), ==, 1);
  err = itest_read(errpath, NULL);
  CHECK_CONTAINS(err, "lost the Redis connection");
  snprintf(want, sizeof(want), "of batch %s (it stays incomplete; `sluice cancel %s` ends it)", batch, batch);
  CHECK_CONTAINS(err, want);
  free(err);
  CHECK_INT(itest_batch_num(c, q, batch, "whole"), ==, 0);
  r = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, batch);
  CHECK_STR(r->str, "submitting");
  freeReplyObject(r);
  {
    const char *args[] = {"cancel", "--redis", itest_url(), "--queue", q, batch, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
  }
  CHECK_INT(itest_batch_num(c, q, batch, "whole"), ==, 1);
  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, itest_batch_num(c, q, batch, "submitted"));
  redisFree(c);
}

#if defined(__SANITIZE_ADDRESS__)
#define SL_TEST_ASAN 1 /* its allocator keeps freed memory: RSS says nothing here */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SL_TEST_ASAN 1
#endif
#endif

/* Runs `sluice ARGS...` to the end; returns its exit code and gives its
 * peak RSS in KiB (wait4's ru_maxrss). */
static int run_rss(const char *const *args, long *maxrss_kib, int timeout_s) {
  const char *errpath = itest_path("rss.err");
  struct rusage ru;
  long long t0 = itest_ms();
  int status = 0;
  pid_t pid = itest_spawn(args, NULL, errpath);

  for (;;) {
    pid_t w = wait4(pid, &status, WNOHANG, &ru);

    if (w == pid)
      break;
    if (itest_ms() - t0 > timeout_s * 1000LL) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      sl_test_fail(__FILE__, __LINE__, "sluice %s did not finish within %d s", args[0], timeout_s);
    }
    usleep(5000);
  }
  if (!WIFEXITED(status))
    sl_test_fail(__FILE__, __LINE__, "sluice %s was killed by signal %d", args[0], WTERMSIG(status));
  *maxrss_kib = ru.ru_maxrss;
  return WEXITSTATUS(status);
}

/* The producer's memory does not follow the input: 200 items of 500 KB
 * (100 MB) after one line of 40 MB are validated (the long line refused
 * without being read whole) and, without that line, submitted, each time
 * with a peak RSS under 48 MiB (keeping the items would take over 200). */
static void test_memory_bounded(void) {
  const char *q = itest_queue("rss");
  const char *bad = itest_path("rss-bad.jsonl");
  const char *good = itest_path("rss-good.jsonl");
  size_t pad = 500 * 1000;
  char *payload = malloc(pad + 1);
  long rss_bad = 0;
  long rss_good = 0;
  FILE *fb;
  FILE *fg;

  memset(payload, 'y', pad);
  payload[pad] = '\0';
  fb = fopen(bad, "wb");
  fg = fopen(good, "wb");
  CHECK(fb != NULL && fg != NULL);
  fputs("{\"type\":\"noop\",\"payload\":\"", fb);
  for (int i = 0; i < 80; i++)
    fputs(payload, fb);
  fputs("\"}\n", fb);
  for (int i = 0; i < 200; i++) {
    fprintf(fb, "{\"id\":\"m-%d\",\"type\":\"noop\",\"payload\":\"%s\"}\n", i, payload);
    fprintf(fg, "{\"id\":\"m-%d\",\"type\":\"noop\",\"payload\":\"%s\"}\n", i, payload);
  }
  fclose(fb);
  fclose(fg);
  free(payload);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, bad, NULL};
    char *err;

    CHECK_INT(run_rss(args, &rss_bad, 120), ==, 2);
    err = itest_read(itest_path("rss.err"), NULL);
    CHECK_CONTAINS(err, ":1: line is 40000028 bytes, over the limit of 1048576");
    CHECK_CONTAINS(err, "1 of 201 lines are invalid; nothing was submitted");
    free(err);
  }
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, good, NULL};

    CHECK_INT(run_rss(args, &rss_good, 120), ==, 0);
  }
  printf("    memory: peak RSS %.1f MiB validating 140 MB with a 40 MB line, %.1f MiB submitting 100 MB\n",
         (double)rss_bad / 1024.0, (double)rss_good / 1024.0);
#ifndef SL_TEST_ASAN
  CHECK_INT(rss_bad, <, 48 * 1024);
  CHECK_INT(rss_good, <, 48 * 1024);
#endif
}

/* `sluice submit --check FILE` validates and summarizes, writes nothing
 * and connects to nothing: a valid file prints its items by type and
 * priority and exits 0 even with no Redis at the given address; a file
 * with errors exits 2 naming each line and field; the test Redis holds no
 * key of the queue afterwards. */
static void test_check_only(void) {
  const char *q = itest_queue("check");
  const char *ok = itest_path("check-ok.jsonl");
  const char *bad = itest_path("check-bad.jsonl");
  static const char good[] = "{\"type\":\"noop\",\"payload\":1}\n"
                             "{\"type\":\"noop\",\"payload\":2,\"priority\":\"high\"}\n"
                             "\n"
                             "{\"type\":\"sleep\",\"payload\":{\"ms\":1}}\n";
  static const char wrong[] = "{\"type\":\"noop\",\"payload\":1}\n"
                              "{\"type\":\"noop\",\"priority\":\"urgent\",\"payload\":1}\n"
                              "{\"type\":\"noop\",\"payload\":1,\"max_attempts\":0}\n";
  redisContext *c = itest_conn();
  redisReply *r;
  char *out = NULL;
  char *err = NULL;

  itest_write(ok, good, sizeof(good) - 1);
  itest_write(bad, wrong, sizeof(wrong) - 1);
  {
    const char *args[] = {"submit", "--check", "--redis", "unix:///nonexistent/redis.sock", "--queue", q, ok, NULL};

    CHECK_INT(itest_run(args, &out, &err, 30), ==, 0);
  }
  CHECK_CONTAINS(out, "3 items");
  CHECK(strstr(out, "noop") != NULL && strstr(out, "high") != NULL && strstr(out, "sleep") != NULL);
  free(out);
  free(err);
  out = err = NULL;
  {
    const char *args[] = {"submit", "--check", "--redis", itest_url(), "--queue", q, bad, NULL};

    CHECK_INT(itest_run(args, &out, &err, 30), ==, 2);
  }
  CHECK_CONTAINS(err, "check-bad.jsonl:2: field \"priority\"");
  CHECK_CONTAINS(err, "check-bad.jsonl:3: field \"max_attempts\"");
  CHECK_CONTAINS(err, "2 of 3 lines are invalid; nothing was submitted");
  free(out);
  free(err);
  r = itest_cmd(c, "KEYS sluice:{%s}:*", q);
  CHECK_INT(r->elements, ==, 0);
  freeReplyObject(r);
  redisFree(c);
}

/* The warning at submit when no live worker serves a type of the batch: the
 * batch is submitted all the same (exit 0, its id on stdout). */
static void test_unserved_types(void) {
  redisContext *c = itest_conn();
  const char *q = itest_queue("unserved");
  const char *path = itest_path("unserved.jsonl");
  static const char items[] = "{\"type\":\"noop\",\"payload\":{}}\n{\"type\":\"custom\",\"payload\":{}}\n";
  const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};
  char *out = NULL;
  char *err = NULL;
  pid_t w;

  itest_write(path, items, sizeof(items) - 1);
  CHECK_INT(itest_run(args, &out, &err, 30), ==, 0);
  CHECK_INT((int)strlen(out), ==, 27); /* the id and a newline */
  CHECK_CONTAINS(err, "warning: no live worker serves queue ");
  free(out);
  free(err);
  w = itest_worker(q, 2);
  itest_wait_worker(c, q, w, NULL, 0, 20000);
  CHECK_INT(itest_run(args, &out, &err, 30), ==, 0);
  CHECK_CONTAINS(err, " serves type custom (1 worker live)");
  CHECK(strstr(err, "noop") == NULL);
  free(out);
  free(err);
  itest_stop_ok(w);
  redisFree(c);
}

static const sl_test tests[] = {
    {"unserved_types", test_unserved_types, 60},
    {"check_only", test_check_only, 60},
    {"spooled_batch_exactly_once", test_spooled_batch_exactly_once, 120},
    {"big_items_cut_by_bytes", test_big_items_cut_by_bytes, 120},
    {"spool_disk_full", test_spool_disk_full, 60},
    {"connection_lost_midway", test_connection_lost_midway, 60},
    {"memory_bounded", test_memory_bounded, 240},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
