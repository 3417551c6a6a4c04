/*
 * Rollback tests: Redis loses its last writes while a batch runs, as after a
 * power loss or a failover to a replica that lagged, and the workers carry
 * on against the older state. Each test runs real workers on a real
 * redis-server and makes the fault for real:
 *
 *   aof     appendonly yes, appendfsync everysec: mid-batch the size of the
 *           AOF's incr file (Redis 7 multi-part AOF, appenddirname) is
 *           recorded, more items end, Redis is killed with SIGKILL, the incr
 *           file is cut back to the recorded size and Redis restarts from it.
 *   rdb     no AOF: a SAVE mid-batch, more items end, SIGKILL, Redis
 *           restarts from the snapshot.
 *   cancel  the items of a batch vanish behind its back (stream entries
 *           trimmed, pending entries acknowledged, retries removed from the
 *           delayed set), then the batch is cancelled.
 *
 * After the fault `sluice repair` finds the items of the batch that are
 * nowhere (no stream entry, no delayed member, not parked, not waiting for a
 * lease, no results line) and puts them back or ends them (their data is
 * gone: failed, or cancelled in a cancelled batch, counted in `lost`). Every test ends
 * by checking the batch is exact: one results line per item, done = total =
 * succeeded + failed + cancelled, nothing pending, nothing left running.
 * The items fail 30% of their attempts (the `sleep` type's fail_rate), so
 * retries, and the delayed set, are part of what is rolled back.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "devredis.h"
#include "itest.h"

/* Items of a rollback batch, and how long one may take to end after the
 * fault (takeovers of rolled-back claims included), s. */
#define RB_ITEMS 2000
#define RB_END_S 45

/* ---- Helpers ---- */

/* Starts a worker on url/q: concurrency 10, visibility 2 s, logging to a
 * file of its own in the test's temp dir. */
static pid_t rb_worker(const char *url, const char *q, const char *name) {
  const char *args[] = {"worker", "--redis", url, "--queue", q, "--concurrency", "10", "--visibility", "2000",
                        "--block-ms", "300", NULL};

  return itest_spawn(args, NULL, itest_path(name));
}

/* Submits the file at path to url/q with the retry options of these tests
 * (20 attempts, backoff 20-200 ms); copies the batch id into batch. */
static void rb_submit(const char *url, const char *q, const char *path, char *batch, size_t len) {
  const char *args[] = {"submit", "--redis", url, "--queue", q, "--max-attempts", "20", "--backoff", "20",
                        "--backoff-max", "200", path, NULL};
  char *out = NULL;
  char *err = NULL;

  if (itest_run(args, &out, &err, 60) != 0)
    sl_test_fail(__FILE__, __LINE__, "submit failed: %s", err ? err : "");
  snprintf(batch, len, "%.26s", out ? out : "");
  free(out);
  free(err);
}

/* Writes n sleep items (lo..hi ms, fail_rate f) to path. */
static void rb_items(const char *path, long n, int lo, int hi, double f) {
  size_t cap = (size_t)n * 80;
  char *buf = malloc(cap);
  size_t len = 0;

  CHECK(buf != NULL);
  for (long i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "{\"type\":\"sleep\",\"payload\":{\"ms\":%d,\"fail_rate\":%g}}\n",
                            lo + rand() % (hi - lo + 1), f);
  itest_write(path, buf, len);
  free(buf);
}

/* The server's clock, ms (TIME). */
static long long server_ms(redisContext *c) {
  redisReply *r = itest_cmd(c, "TIME");
  long long ms = strtoll(r->element[0]->str, NULL, 10) * 1000 + strtoll(r->element[1]->str, NULL, 10) / 1000;

  freeReplyObject(r);
  return ms;
}

/* The `beat` of worker id in queue q's registry (ms, server clock); -1 when
 * it has none. */
static long long beat_of(redisContext *c, const char *q, const char *id) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:w:%s beat", q, id);
  long long ms = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;

  freeReplyObject(r);
  return ms;
}

/* Where the items of a batch are, by one atomic look (a script, so no item
 * moves while it is looked for). ARGV: prefix, batch, total. Returns
 * {done, queued, pending, delayed, parked, waiting, nowhere, twice,
 * stale, {up to 20 indexes that are nowhere}, stuck}: queued = in a stream,
 * not delivered yet; pending = in a stream, delivered; stuck = in a stream,
 * pending to nobody although the group read past it (no worker would read
 * it again); twice = items found in two places; stale = stream entries,
 * delayed or parked members of items that already have a results line. */
static const char locate_lua[] =
    "local p, batch, total = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local where, n = {}, {done = 0, queued = 0, pending = 0, stuck = 0, delayed = 0, parked = 0,\n"
    "  waiting = 0, twice = 0, stale = 0}\n"
    "local function before(a, b)\n"
    "  local am, as = string.match(a, '(%d+)-(%d+)')\n"
    "  local bm, bs = string.match(b, '(%d+)-(%d+)')\n"
    "  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)\n"
    "  return am < bm or (am == bm and as <= bs)\n"
    "end\n"
    "for _, k in ipairs(redis.call('HKEYS', p .. 'b:' .. batch .. ':r')) do\n"
    "  where[tonumber(k)] = 'done'; n.done = n.done + 1\n"
    "end\n"
    "local function put(i, what)\n"
    "  if i == nil then return end\n"
    "  if where[i] == 'done' then n.stale = n.stale + 1\n"
    "  elseif where[i] then n.twice = n.twice + 1\n"
    "  else where[i] = what; n[what] = n[what] + 1 end\n"
    "end\n"
    "local function scan(key, what, pend, off, last)\n"
    "  if redis.call('EXISTS', key) == 0 then return end\n"
    "  for _, e in ipairs(redis.call('XRANGE', key, '-', '+')) do\n"
    "    local f = e[2]\n"
    "    if f[off] == batch then\n"
    "      local w = what\n"
    "      if pend and pend[e[1]] then w = 'pending'\n"
    "      elseif last and before(e[1], last) then w = 'stuck' end\n"
    "      put(tonumber(f[off + 2]), w)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "for _, s in ipairs({'high', 'normal', 'low'}) do\n"
    "  local key = p .. 's:' .. s\n"
    "  local pend, last = {}, nil\n"
    "  if redis.call('EXISTS', key) == 1 then\n"
    "    local ok, pl = pcall(redis.call, 'XPENDING', key, 'workers', '-', '+', 1000000)\n"
    "    if ok then for _, e in ipairs(pl) do pend[e[1]] = true end end\n"
    "    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do\n"
    "      local name, ld\n"
    "      for k = 1, #g, 2 do\n"
    "        if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then ld = g[k + 1] end\n"
    "      end\n"
    "      if name == 'workers' then last = ld end\n"
    "    end\n"
    "  end\n"
    "  scan(key, 'queued', pend, 2, last)\n"
    "end\n"
    "for _, m in ipairs(redis.call('ZRANGE', p .. 'delayed', 0, -1)) do\n"
    "  local a = string.find(m, '\\n', 1, true)\n"
    "  local b = string.find(m, '\\n', a + 1, true)\n"
    "  local c = string.find(m, '\\n', b + 1, true)\n"
    "  if string.sub(m, a + 1, b - 1) == batch then put(tonumber(string.sub(m, b + 1, c - 1)), 'delayed') end\n"
    "end\n"
    "scan(p .. 'b:' .. batch .. ':p', 'parked', nil, 4)\n"
    "for _, k in ipairs(redis.call('KEYS', p .. 'cw:*')) do scan(k, 'waiting', nil, 4) end\n"
    "local lost = {}\n"
    "local nowhere = 0\n"
    "for i = 0, total - 1 do\n"
    "  if not where[i] then\n"
    "    nowhere = nowhere + 1\n"
    "    if #lost < 20 then lost[#lost + 1] = i end\n"
    "  end\n"
    "end\n"
    "return {n.done, n.queued, n.pending, n.delayed, n.parked, n.waiting, nowhere, n.twice, n.stale, lost,\n"
    "  n.stuck}\n";

typedef struct where_t {
  long long done, queued, pending, stuck, delayed, parked, waiting, nowhere, twice, stale;
  char lost[256]; /* the first indexes that are nowhere, "3 17 …" */
} where_t;

/* Runs locate_lua on batch (total items) of queue q into *w. */
static void locate(redisContext *c, const char *q, const char *batch, long total, where_t *w) {
  char prefix[128];
  char tot[24];
  redisReply *r;
  size_t len = 0;

  snprintf(prefix, sizeof(prefix), "sluice:{%s}:", q);
  snprintf(tot, sizeof(tot), "%ld", total);
  r = itest_cmd(c, "EVAL %s 0 %s %s %s", locate_lua, prefix, batch, tot);
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 11)
    sl_test_fail(__FILE__, __LINE__, "locate script: %s", r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
  w->done = r->element[0]->integer;
  w->queued = r->element[1]->integer;
  w->pending = r->element[2]->integer;
  w->delayed = r->element[3]->integer;
  w->parked = r->element[4]->integer;
  w->waiting = r->element[5]->integer;
  w->nowhere = r->element[6]->integer;
  w->twice = r->element[7]->integer;
  w->stale = r->element[8]->integer;
  w->stuck = r->element[10]->integer;
  w->lost[0] = '\0';
  for (size_t i = 0; i < r->element[9]->elements && len + 16 < sizeof(w->lost); i++)
    len += (size_t)snprintf(w->lost + len, sizeof(w->lost) - len, "%s%lld", i ? " " : "",
                            r->element[9]->element[i]->integer);
  freeReplyObject(r);
}

/* One line: where the items are. */
static void print_where(const char *when, const where_t *w) {
  printf("    %s: %lld done, %lld queued, %lld pending, %lld stuck, %lld delayed, %lld parked, %lld waiting, "
         "%lld nowhere%s%s%s, %lld found twice, %lld stale copies of ended items\n",
         when, w->done, w->queued, w->pending, w->stuck, w->delayed, w->parked, w->waiting, w->nowhere,
         w->nowhere ? " (" : "", w->lost, w->nowhere ? ")" : "", w->twice, w->stale);
  fflush(stdout);
}

/* Runs `sluice repair` on the batch; returns its exit code and prints what
 * it said (its output, cut to one line each). */
static int repair(const char *url, const char *q, const char *batch, char *said, size_t saidlen) {
  const char *args[] = {"repair", "--redis", url, "--queue", q, batch, NULL};
  char *out = NULL;
  char *err = NULL;
  int rc = itest_run(args, &out, &err, 60);

  for (char *p = out; p != NULL && *p; p++)
    if (*p == '\n')
      *p = ' ';
  for (char *p = err; p != NULL && *p; p++)
    if (*p == '\n')
      *p = ' ';
  snprintf(said, saidlen, "exit %d; stdout: %.300s; stderr: %.300s", rc, out ? out : "", err ? err : "");
  printf("    sluice repair: %s\n", said);
  fflush(stdout);
  free(out);
  free(err);
  return rc;
}

/* Waits (at most timeout_s) for the batch to end; 1 when it did. */
static int ended_within(redisContext *c, const char *q, const char *batch, int timeout_s) {
  long long t0 = itest_ms();

  for (;;) {
    redisReply *r = itest_cmd(c, "HMGET sluice:{%s}:b:%s whole done total", q, batch);
    int ended = r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "1") == 0 &&
                r->element[1]->type == REDIS_REPLY_STRING && r->element[2]->type == REDIS_REPLY_STRING &&
                atoll(r->element[1]->str) >= atoll(r->element[2]->str);

    freeReplyObject(r);
    if (ended)
      return 1;
    if (itest_ms() - t0 > timeout_s * 1000LL)
      return 0;
    usleep(20000);
  }
}

/* The batch's status field ("(none)" without one) into out. */
static void batch_status(redisContext *c, const char *q, const char *batch, char *out, size_t len) {
  redisReply *r = itest_cmd(c, "HGET sluice:{%s}:b:%s status", q, batch);

  snprintf(out, len, "%s", r->type == REDIS_REPLY_STRING ? r->str : "(none)");
  freeReplyObject(r);
}

/* Checks an ended batch of a queue that had no other batch: one results
 * line per item (each index 0..total-1, each line JSON), done = total =
 * succeeded + failed + cancelled, the status, nothing in the streams, the
 * pending lists or the delayed set. */
static void check_ended(redisContext *c, const char *q, const char *batch, long total, const char *status) {
  long long ok = itest_batch_num(c, q, batch, "succeeded");
  long long failed = itest_batch_num(c, q, batch, "failed");
  long long cancelled = itest_batch_num(c, q, batch, "cancelled");
  long long lost = itest_batch_num(c, q, batch, "lost"); /* sluice repair's count; absent: none */
  char st[32];
  redisReply *r;

  batch_status(c, q, batch, st, sizeof(st));
  CHECK_STR(st, status);
  CHECK_INT(itest_batch_num(c, q, batch, "total"), ==, total);
  CHECK_INT(itest_batch_num(c, q, batch, "done"), ==, total);
  CHECK_INT((ok < 0 ? 0 : ok) + (failed < 0 ? 0 : failed) + (cancelled < 0 ? 0 : cancelled), ==, total);
  r = itest_cmd(c, "HLEN sluice:{%s}:b:%s:r", q, batch);
  CHECK_INT(r->integer, ==, total);
  freeReplyObject(r);
  for (long i = 0; i < total; i++)
    redisAppendCommand(c, "HGET sluice:{%s}:b:%s:r %ld", q, batch, i);
  for (long i = 0; i < total; i++) {
    cJSON *j;

    if (redisGetReply(c, (void **)&r) != REDIS_OK)
      sl_test_fail(__FILE__, __LINE__, "HGET: %s", c->errstr);
    if (r->type != REDIS_REPLY_STRING)
      sl_test_fail(__FILE__, __LINE__, "item %ld has no results line", i);
    j = cJSON_Parse(r->str);
    if (j == NULL || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "status")))
      sl_test_fail(__FILE__, __LINE__, "item %ld: results line is not what it should be: %s", i, r->str);
    cJSON_Delete(j);
    freeReplyObject(r);
  }
  itest_check_drained(c, q);
  printf("    batch %s: %s, %ld items, %lld succeeded, %lld failed, %lld cancelled (%lld of them ended as lost by "
         "repair)\n", batch, st, total, ok < 0 ? 0 : ok, failed < 0 ? 0 : failed, cancelled < 0 ? 0 : cancelled,
         lost < 0 ? 0 : lost);
  fflush(stdout);
}

/* The path of the AOF's incr file in dir (Redis 7: its manifest in
 * appendonlydir names it, "file NAME seq N type i"); fails without one. */
static void aof_incr(const char *dir, char *path, size_t len) {
  char mpath[600];
  char *m;
  char name[256] = "";

  snprintf(mpath, sizeof(mpath), "%s/appendonlydir/appendonly.aof.manifest", dir);
  m = itest_read(mpath, NULL);
  if (m == NULL)
    sl_test_fail(__FILE__, __LINE__, "no AOF manifest at %s", mpath);
  for (char *line = m; line != NULL && *line;) {
    char *nl = strchr(line, '\n');

    if (nl != NULL)
      *nl = '\0';
    /* the last incr file named is the one Redis appends to */
    if (strstr(line, " type i") != NULL)
      sscanf(line, "file %255s", name);
    line = nl != NULL ? nl + 1 : NULL;
  }
  free(m);
  if (name[0] == '\0')
    sl_test_fail(__FILE__, __LINE__, "the AOF manifest %s names no incr file", mpath);
  snprintf(path, len, "%s/appendonlydir/%s", dir, name);
}

static long long file_size(const char *path) {
  struct stat st;

  if (stat(path, &st) != 0)
    sl_test_fail(__FILE__, __LINE__, "stat %s failed", path);
  return (long long)st.st_size;
}

/* ---- The rollback round ---- */

enum { ROLL_AOF, ROLL_RDB };

/*
 * One rollback round on a private Redis of its own: RB_ITEMS items (sleep
 * 30-80 ms, fail_rate 0.3, 20 attempts), two workers with 10 slots each.
 * Once 300 items are done the durable point is set (AOF: the incr file's
 * size; RDB: a SAVE); once 400 more are done Redis is killed (SIGKILL),
 * rolled back to that point and restarted on the same socket. When both
 * workers have beaten on the new server and 50 more items are done, `sluice
 * repair` runs; then the batch must end, exact. A batch that ended exact
 * although `sluice repair` failed is not failed here: what repair said is
 * copied into failed_repair, for the test to fail once every round ran.
 */
static void rollback_round(int mode, int round, char *failed_repair, size_t failed_len) {
  const char *aof[] = {"--appendonly", "yes", "--appendfsync", "everysec", "--aof-load-truncated", "yes",
                       "--auto-aof-rewrite-percentage", "0", NULL};
  const char *const *extra = mode == ROLL_AOF ? aof : NULL;
  const char *q = "rb";
  sl_devredis d;
  char err[512];
  char path[600];
  char incr[700] = "";
  char batch[64];
  char wname[2][64];
  char wlog[2][600];
  char wid[2][128];
  pid_t w[2];
  redisContext *c;
  long long mark_size = 0;
  long long done_before_mark;
  long long done_after_mark;
  long long size_at_kill = 0;
  long long restored;
  long long up_ms;
  long long t0;
  char said[800];
  where_t pre;
  int rc;
  int moving;

  snprintf(path, sizeof(path), "%s", itest_path(mode == ROLL_AOF ? "rb-aof.jsonl" : "rb-rdb.jsonl"));
  rb_items(path, RB_ITEMS, 30, 80, 0.3);
  if (sl_devredis_start(&d, extra, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  itest_load_library(d.url); /* in the AOF / the snapshot from here on */
  rb_submit(d.url, q, path, batch, sizeof(batch));
  c = redisConnectUnix(d.sock);
  CHECK(c != NULL && c->err == 0);
  for (int i = 0; i < 2; i++) {
    snprintf(wname[i], sizeof(wname[i]), "rb-%s-%d-w%d.err", mode == ROLL_AOF ? "aof" : "rdb", round, i);
    snprintf(wlog[i], sizeof(wlog[i]), "%s", itest_path(wname[i]));
    w[i] = rb_worker(d.url, q, wname[i]);
  }
  for (int i = 0; i < 2; i++)
    itest_wait_worker(c, q, w[i], wid[i], sizeof(wid[i]), 20000);

  /* The durable point, mid-batch. */
  ITEST_WAIT_INT(itest_batch_num(c, q, batch, "done"), >=, 300, 60000, "300 items done before the durable point");
  done_before_mark = itest_batch_num(c, q, batch, "done");
  if (mode == ROLL_AOF) {
    aof_incr(d.dir, incr, sizeof(incr));
    mark_size = file_size(incr);
  } else {
    redisReply *r = itest_cmd(c, "SAVE");

    CHECK(r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0);
    freeReplyObject(r);
  }
  done_after_mark = itest_batch_num(c, q, batch, "done");
  CHECK_INT(done_after_mark, <, RB_ITEMS - 700); /* mid-batch, with room for what comes */

  /* More work, then the fault: SIGKILL and the rollback. */
  ITEST_WAIT_INT(itest_batch_num(c, q, batch, "done"), >=, done_after_mark + 400, 60000,
                 "400 more items done after the durable point");
  redisFree(c);
  sl_devredis_kill(&d, SIGKILL);
  if (mode == ROLL_AOF) {
    size_at_kill = file_size(incr);
    CHECK_INT(size_at_kill, >, mark_size);
    if (truncate(incr, (off_t)mark_size) != 0)
      sl_test_fail(__FILE__, __LINE__, "cannot truncate %s", incr);
  }
  /* The outage lasts until both workers know of it, so that attempts end
   * while Redis is away and their completions are held. */
  for (int i = 0; i < 2; i++)
    free(itest_wait_file(wlog[i], "lost the connection to Redis", 10000));
  if (sl_devredis_restart(&d, extra, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s", err);
  c = redisConnectUnix(d.sock);
  CHECK(c != NULL && c->err == 0);
  up_ms = server_ms(c);
  restored = itest_batch_num(c, q, batch, "done");
  /* The last writes are gone: done went back to the durable point. */
  CHECK_INT(restored, >=, 0);
  CHECK_INT(restored, <=, done_after_mark);
  if (mode == ROLL_RDB)
    CHECK_INT(restored, >=, done_before_mark);
  printf("    %s round %d: rolled back to %lld items done (%lld-%lld at the durable point), after at least %lld "
         "were done before the kill\n",
         mode == ROLL_AOF ? "aof" : "rdb", round, restored, done_before_mark, done_after_mark, done_after_mark + 400);
  if (mode == ROLL_AOF)
    printf("    aof round %d: incr file %lld bytes at the kill, cut back to %lld\n", round, size_at_kill, mark_size);
  fflush(stdout);

  /* The workers carry on against the older state: both beat on the new
   * server, and items end again. */
  for (int i = 0; i < 2; i++)
    ITEST_WAIT_INT(beat_of(c, q, wid[i]), >=, up_ms, 20000, "the worker to beat on the restarted Redis");
  ITEST_WAIT_INT(itest_batch_num(c, q, batch, "done"), >=, restored + 50, 30000,
                 "50 more items done on the restarted Redis");

  for (int i = 0; i < 2; i++) {
    char *log = itest_wait_file(wlog[i], "reconnected to Redis after", 10000);
    const char *p = strstr(log, "reconnected to Redis after");
    const char *nl = strchr(p, '\n');

    printf("    worker %d: %.*s\n", i, nl != NULL ? (int)(nl - p) : (int)strlen(p), p);
    free(log);
  }
  locate(c, q, batch, RB_ITEMS, &pre);
  print_where("before repair", &pre);
  rc = repair(d.url, q, batch, said, sizeof(said));
  /* A batch whose items are still moving (retries at work) is not stuck,
   * and repair leaves it alone, saying so; it must succeed once the batch
   * has ended. */
  moving = rc != 0 && strstr(said, "is not stuck") != NULL;
  if (moving)
    printf("    sluice repair: the batch was still moving; asked again once it ended\n");
  t0 = itest_ms();
  if (!ended_within(c, q, batch, RB_END_S)) {
    where_t post;
    char st[32];

    locate(c, q, batch, RB_ITEMS, &post);
    print_where("batch not ended", &post);
    batch_status(c, q, batch, st, sizeof(st));
    sl_test_fail(__FILE__, __LINE__, "batch %s did not end within %d s of `sluice repair` (%s): done %lld of %d, "
                 "status %s, %lld items nowhere (first: %s)", batch, RB_END_S, said,
                 itest_batch_num(c, q, batch, "done"), RB_ITEMS, st, post.nowhere, post.lost);
  }
  printf("    batch ended %.1f s after repair\n", (double)(itest_ms() - t0) / 1000.0);
  if (moving)
    rc = repair(d.url, q, batch, said, sizeof(said));
  /* Nothing left running: both workers report no attempt in a slot. */
  for (int i = 0; i < 2; i++)
    ITEST_WAIT_INT(itest_worker_running(c, q, wid[i]), ==, 0, 10000, "the worker to run nothing");
  check_ended(c, q, batch, RB_ITEMS, "completed");
  for (int i = 0; i < 2; i++)
    itest_stop_ok(w[i]);
  redisFree(c);
  sl_devredis_stop(&d);
  if (rc != 0)
    snprintf(failed_repair, failed_len, "%s", said);
}

/* ---- Tests ---- */

/* AOF rolled back (the incr file cut to its size mid-batch), two rounds. */
static void test_aof(void) {
  char failed[800] = "";

  srand((unsigned)getpid());
  for (int round = 1; round <= 2; round++)
    rollback_round(ROLL_AOF, round, failed, sizeof(failed));
  if (failed[0] != '\0')
    sl_test_fail(__FILE__, __LINE__, "the batches ended exact, but `sluice repair` failed: %s", failed);
}

/* Redis restarted from an RDB snapshot taken mid-batch, two rounds. */
static void test_rdb(void) {
  char failed[800] = "";

  srand((unsigned)getpid());
  for (int round = 1; round <= 2; round++)
    rollback_round(ROLL_RDB, round, failed, sizeof(failed));
  if (failed[0] != '\0')
    sl_test_fail(__FILE__, __LINE__, "the batches ended exact, but `sluice repair` failed: %s", failed);
}

/* ---- Items lost by hand ---- */

/*
 * A batch of n items (sleep 50 ms, fail_rate 0.3, backoff 1-2 s, so that
 * some wait in the delayed set) on queue q, run by one worker that is
 * killed with SIGKILL once 40 items are done, a retry waits in the delayed
 * set and it holds items. Copies the batch id into batch.
 */
static void doomed_batch(redisContext *c, const char *q, long n, char *batch, size_t len) {
  const char *path = itest_path("doomed.jsonl");
  char aid[128];
  pid_t a;

  rb_items(path, n, 50, 50, 0.3);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, "--max-attempts", "20", "--backoff",
                          "1000", "--backoff-max", "2000", path, NULL};
    char *out = NULL;

    CHECK_INT(itest_run(args, &out, NULL, 60), ==, 0);
    snprintf(batch, len, "%.26s", out);
    free(out);
  }
  a = rb_worker(itest_url(), q, "doomed-a.err");
  itest_wait_worker(c, q, a, aid, sizeof(aid), 20000);
  ITEST_WAIT_INT(itest_batch_num(c, q, batch, "done"), >=, 40, 30000, "40 items done");
  for (long long t0 = itest_ms();; usleep(10000)) {
    redisReply *r = itest_cmd(c, "ZCARD sluice:{%s}:delayed", q);
    long long delayed = r->integer;

    freeReplyObject(r);
    if (delayed > 0)
      break;
    if (itest_ms() - t0 > 20000)
      sl_test_fail(__FILE__, __LINE__, "no retry waited in the delayed set within 20 s");
  }
  ITEST_WAIT_INT(itest_pending_of(c, q, aid), >, 0, 10000, "worker A to hold items");
  kill(a, SIGKILL);
  waitpid(a, NULL, 0);
}

/*
 * The loss, by hand, in queue q whose worker is dead: the entries pending
 * for it are acknowledged and deleted (XACK, XDEL; with `stuck`, every
 * second one is only acknowledged, so it stays in its stream pending to
 * nobody), and so is every `step`-th entry that no worker had read (step 1:
 * all of them), and every member of the delayed set is removed. Prints
 * what went.
 */
static void lose_items(redisContext *c, const char *q, int step, int stuck) {
  static const char *const s[3] = {"high", "normal", "low"};
  long long held = 0;
  long long acked = 0;
  long long queued = 0;
  long long delayed = 0;
  long seen = 0;
  redisReply *r;

  for (int i = 0; i < 3; i++) {
    r = itest_cmd(c, "XPENDING sluice:{%s}:s:%s workers - + 100000", q, s[i]);
    for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
      const char *eid = r->element[k]->element[0]->str;
      redisReply *x = itest_cmd(c, "XACK sluice:{%s}:s:%s workers %s", q, s[i], eid);

      freeReplyObject(x);
      if (stuck && k % 2 == 1) {
        acked++;
        continue;
      }
      x = itest_cmd(c, "XDEL sluice:{%s}:s:%s %s", q, s[i], eid);
      held += x->integer;
      freeReplyObject(x);
    }
    freeReplyObject(r);
    /* the entries no worker read yet: after the group's last-delivered-id */
    r = itest_cmd(c, "XINFO GROUPS sluice:{%s}:s:%s", q, s[i]);
    {
      char last[64] = "0-0";

      for (size_t g = 0; r->type == REDIS_REPLY_ARRAY && g < r->elements; g++) {
        const redisReply *gr = r->element[g];
        int ours = 0;

        for (size_t k = 0; k + 1 < gr->elements; k += 2)
          ours |= strcmp(gr->element[k]->str, "name") == 0 && strcmp(gr->element[k + 1]->str, "workers") == 0;
        for (size_t k = 0; ours && k + 1 < gr->elements; k += 2)
          if (strcmp(gr->element[k]->str, "last-delivered-id") == 0)
            snprintf(last, sizeof(last), "(%s", gr->element[k + 1]->str);
      }
      freeReplyObject(r);
      r = itest_cmd(c, "XRANGE sluice:{%s}:s:%s %s +", q, s[i], strcmp(last, "0-0") == 0 ? "-" : last);
    }
    for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
      if (seen++ % step == 0) {
        redisReply *x = itest_cmd(c, "XDEL sluice:{%s}:s:%s %s", q, s[i], r->element[k]->element[0]->str);

        queued += x->integer;
        freeReplyObject(x);
      }
    }
    freeReplyObject(r);
  }
  r = itest_cmd(c, "ZRANGE sluice:{%s}:delayed 0 -1", q);
  for (size_t k = 0; k < r->elements; k++) {
    redisReply *x = itest_cmd(c, "ZREM sluice:{%s}:delayed %b", q, r->element[k]->str, (size_t)r->element[k]->len);

    delayed += x->integer;
    freeReplyObject(x);
  }
  freeReplyObject(r);
  printf("    loss: %lld entries the dead worker held deleted (%lld more acknowledged only), %lld of %ld queued "
         "entries and %lld delayed members deleted\n", held, acked, queued, seen, delayed);
  fflush(stdout);
}

/* Checks the batch hash and its results expire (PTTL > 0). */
static void check_expires(redisContext *c, const char *q, const char *batch) {
  redisReply *r = itest_cmd(c, "PTTL sluice:{%s}:b:%s", q, batch);

  CHECK_INT(r->integer, >, 0);
  freeReplyObject(r);
  r = itest_cmd(c, "PTTL sluice:{%s}:b:%s:r", q, batch);
  CHECK_INT(r->integer, >, 0);
  freeReplyObject(r);
}

/*
 * Cancel after loss: a doomed batch of 300 items loses every item that had
 * not ended (stream entries, pending entries, retries). A new worker starts
 * and the batch is cancelled; the lost items are ended as cancelled, by the
 * cancel itself (it runs a repair of its own, best effort) or else by
 * `sluice repair` after it: done = total, status cancelled, and the batch
 * hash and its results expire (PTTL > 0). Whether cancel alone ended it is
 * printed.
 */
static void test_cancel_after_loss(void) {
  const char *q = itest_queue("lost");
  redisContext *c = itest_conn();
  char batch[64];
  char said[800];
  where_t pre;
  pid_t b;
  long n = 300;
  int by_cancel;
  int rc;

  srand((unsigned)getpid());
  doomed_batch(c, q, n, batch, sizeof(batch));
  lose_items(c, q, 1, 0);
  locate(c, q, batch, n, &pre);
  print_where("after the loss", &pre);
  CHECK_INT(pre.nowhere, >, 0);
  CHECK_INT(pre.nowhere, ==, n - pre.done);

  /* A live worker, as in any fleet, then the cancel. */
  b = rb_worker(itest_url(), q, "lost-b.err");
  itest_wait_worker(c, q, b, NULL, 0, 20000);
  {
    const char *args[] = {"cancel", "--redis", itest_url(), "--queue", q, batch, NULL};
    char *err = NULL;

    rc = itest_run(args, NULL, &err, 30);
    if (rc != 0)
      sl_test_fail(__FILE__, __LINE__, "sluice cancel: exit %d: %s", rc, err ? err : "");
    free(err);
  }
  /* Cancel finishes what it finds in the queue (nothing here): did it end
   * the lost items too? */
  by_cancel = ended_within(c, q, batch, 2);
  printf("    cancel alone %s the batch (done %lld of %ld)\n", by_cancel ? "ended" : "did not end",
         itest_batch_num(c, q, batch, "done"), n);
  fflush(stdout);
  rc = repair(itest_url(), q, batch, said, sizeof(said));
  if (!ended_within(c, q, batch, 20)) {
    where_t post;

    locate(c, q, batch, n, &post);
    print_where("batch not ended", &post);
    sl_test_fail(__FILE__, __LINE__, "the cancelled batch %s did not end after `sluice repair` (%s): done %lld of %ld",
                 batch, said, itest_batch_num(c, q, batch, "done"), n);
  }
  CHECK_INT(rc, ==, 0);
  check_ended(c, q, batch, n, "cancelled");
  CHECK_INT(itest_batch_num(c, q, batch, "cancelled"), ==, pre.nowhere);
  check_expires(c, q, batch);
  itest_stop_ok(b);
  redisFree(c);
}

/*
 * Repair of a running batch: a doomed batch of 300 items loses half of
 * what its dead worker held (the other half stays in the stream pending to
 * nobody, stuck), its retries and every second queued entry. With no
 * worker running (nothing moves), `sluice repair` exits 0, puts the stuck
 * entries back and ends exactly the items that are nowhere, as failed and
 * counted in `lost`, each with a results line that says so; a second
 * repair does nothing; then a new worker runs the rest and the batch
 * completes, exact.
 */
static void test_repair_running_loss(void) {
  const char *q = itest_queue("repair");
  redisContext *c = itest_conn();
  char batch[64];
  char said[800];
  where_t pre;
  where_t post;
  pid_t b;
  long n = 300;
  long lines = 0;
  redisReply *r;

  srand((unsigned)getpid());
  doomed_batch(c, q, n, batch, sizeof(batch));
  lose_items(c, q, 2, 1);
  locate(c, q, batch, n, &pre);
  print_where("after the loss", &pre);
  CHECK_INT(pre.nowhere, >, 0);
  CHECK_INT(pre.queued, >, 0);
  CHECK_INT(pre.stuck, >, 0);
  CHECK_INT(repair(itest_url(), q, batch, said, sizeof(said)), ==, 0);
  locate(c, q, batch, n, &post);
  print_where("after repair", &post);
  CHECK_INT(post.nowhere, ==, 0);
  CHECK_INT(post.stuck, ==, 0);
  CHECK_INT(post.done, ==, pre.done + pre.nowhere);
  CHECK_INT(post.queued, ==, pre.queued + pre.stuck);
  CHECK_INT(itest_batch_num(c, q, batch, "lost"), ==, pre.nowhere);
  /* A second repair finds nothing more to do. */
  CHECK_INT(repair(itest_url(), q, batch, said, sizeof(said)), ==, 0);
  CHECK_INT(itest_batch_num(c, q, batch, "lost"), ==, pre.nowhere);
  b = rb_worker(itest_url(), q, "repair-b.err");
  itest_wait_batch(c, q, batch, 60);
  check_ended(c, q, batch, n, "completed");
  CHECK_INT(itest_batch_num(c, q, batch, "failed"), ==, pre.nowhere);
  r = itest_cmd(c, "HVALS sluice:{%s}:b:%s:r", q, batch);
  for (size_t i = 0; i < r->elements; i++)
    lines += strstr(r->element[i]->str, "\"error\":\"lost: ") != NULL;
  freeReplyObject(r);
  CHECK_INT(lines, ==, pre.nowhere);
  check_expires(c, q, batch);
  itest_stop_ok(b);
  redisFree(c);
}

static const sl_test tests[] = {
    {"aof", test_aof, 170},
    {"rdb", test_rdb, 170},
    {"cancel_after_loss", test_cancel_after_loss, 90},
    {"repair_running_loss", test_repair_running_loss, 90},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
