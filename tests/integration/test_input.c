/*
 * Bad input is refused at submit (DESIGN, Guarantee 6): exit 2, a message
 * naming the file, the line and the field, and no trace in Redis, even when
 * every other line of the file is valid.
 */
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "itest.h"

/* Submits `bad` as line 3 between valid lines; checks exit 2, the message,
 * and that Redis holds no key of the queue. */
static void refused(const char *name, const char *bad, size_t badlen, const char *expect) {
  const char *q = itest_queue(name);
  const char *path = itest_path("in.jsonl");
  const char *good = "{\"id\":\"a\",\"type\":\"noop\",\"payload\":{}}\n";
  const char *good2 = "{\"id\":\"b\",\"type\":\"noop\",\"payload\":{}}\n";
  size_t cap = badlen + 256;
  char *buf = malloc(cap);
  size_t len = 0;
  char *err = NULL;
  char *out = NULL;
  char where[600];
  redisContext *c = itest_conn();
  redisReply *r;
  const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, path, NULL};

  memcpy(buf + len, good, strlen(good));
  len += strlen(good);
  memcpy(buf + len, good2, strlen(good2));
  len += strlen(good2);
  memcpy(buf + len, bad, badlen);
  len += badlen;
  buf[len++] = '\n';
  memcpy(buf + len, good, strlen(good)); /* line 4: fine on its own, a duplicate of line 1 */
  len += strlen(good) - 1;
  itest_write(path, buf, len);
  free(buf);
  CHECK_INT(itest_run(args, &out, &err, 30), ==, 2);
  CHECK_STR(out, ""); /* no batch id */
  snprintf(where, sizeof(where), "%s:3: ", path);
  CHECK_CONTAINS(err, where);
  CHECK_CONTAINS(err, expect);
  CHECK_CONTAINS(err, "nothing was submitted");
  r = itest_cmd(c, "KEYS sluice:{%s}:*", q);
  CHECK_INT(r->elements, ==, 0);
  freeReplyObject(r);
  free(out);
  free(err);
  redisFree(c);
}

static void refused_str(const char *name, const char *bad, const char *expect) {
  refused(name, bad, strlen(bad), expect);
}

static void test_invalid_json(void) {
  refused_str("json", "{\"type\":\"noop\",\"payload\":{}", "invalid JSON at column 28: unterminated object");
  refused_str("garbage", "{\"type\":\"noop\",\"payload\":{}} x", "trailing characters");
  refused_str("notobj", "[1,2]", "must be a JSON object");
}

static void test_missing_and_mistyped_fields(void) {
  refused_str("notype", "{\"payload\":{}}", "field \"type\": missing");
  refused_str("typeint", "{\"type\":5,\"payload\":{}}", "field \"type\"");
  refused_str("nopayload", "{\"type\":\"noop\"}", "field \"payload\": missing");
  refused_str("attempts", "{\"type\":\"noop\",\"payload\":{},\"max_attempts\":\"3\"}", "field \"max_attempts\"");
  refused_str("timeout", "{\"type\":\"noop\",\"payload\":{},\"timeout_ms\":-1}", "field \"timeout_ms\"");
  refused_str("unknownf", "{\"type\":\"noop\",\"payload\":{},\"priorty\":\"high\"}", "field \"priorty\": unknown field");
  refused_str("twice", "{\"type\":\"noop\",\"type\":\"noop\",\"payload\":{}}", "key \"type\" appears twice");
  refused_str("runat", "{\"type\":\"noop\",\"payload\":{},\"run_at\":\"next tuesday\"}",
              "field \"run_at\": expected an RFC 3339 time");
  refused_str("dedupe", "{\"type\":\"noop\",\"payload\":{},\"dedupe\":7}", "field \"dedupe\": expected a string key");
}

static void test_unknown_priority(void) {
  refused_str("prio", "{\"type\":\"noop\",\"payload\":{},\"priority\":\"urgent\"}",
              "field \"priority\": unknown priority \"urgent\"");
}

static void test_size_limits(void) {
  size_t n = SL_ITEM_MAX_PAYLOAD + 100;
  char *big = malloc(n + 64);
  size_t len = 0;

  len += (size_t)snprintf(big, n + 64, "{\"type\":\"noop\",\"payload\":\"");
  memset(big + len, 'x', n - len);
  len = n;
  len += (size_t)snprintf(big + len, 64, "\"}");
  refused("payload", big, len, "field \"payload\": ");
  free(big);

  n = SL_ITEM_MAX_LINE + 10;
  big = malloc(n);
  memset(big, ' ', n);
  memcpy(big, "{\"type\":\"noop\",\"payload\":{}}", 28);
  refused("line", big, n, "over the limit of 1048576");
  free(big);
}

static void test_encoding_and_nesting(void) {
  char deep[400];
  size_t len = 0;

  refused_str("utf8", "{\"type\":\"noop\",\"payload\":\"caf\xc3\x28\"}", "invalid UTF-8");
  refused_str("ctrl", "{\"type\":\"noop\",\"payload\":\"a\x01" "b\"}", "raw control byte");
  len += (size_t)snprintf(deep, sizeof(deep), "{\"type\":\"noop\",\"payload\":");
  for (int i = 0; i < SL_ITEM_MAX_DEPTH + 5; i++)
    deep[len++] = '[';
  for (int i = 0; i < SL_ITEM_MAX_DEPTH + 5; i++)
    deep[len++] = ']';
  deep[len++] = '}';
  refused("deep", deep, len, "nesting deeper than 64 levels");
}

static void test_duplicate_ids(void) {
  refused_str("dup", "{\"id\":\"a\",\"type\":\"noop\",\"payload\":{}}", "field \"id\": duplicate id \"a\" (first used on line 1)");
}

static void test_builtin_payloads(void) {
  refused_str("httpurl", "{\"type\":\"http\",\"payload\":{\"method\":\"GET\"}}", "field \"payload.url\": missing");
  refused_str("httpscheme", "{\"type\":\"http\",\"payload\":{\"url\":\"ftp://x\"}}", "field \"payload.url\"");
  refused_str("sleepms", "{\"type\":\"sleep\",\"payload\":{\"ms\":-5}}", "field \"payload.ms\"");
  refused_str("sleeprate", "{\"type\":\"sleep\",\"payload\":{\"fail_rate\":2}}", "field \"payload.fail_rate\"");
}

/* Usage errors: exit 2 with a message; no file, empty file, bad option. */
static void test_usage_errors(void) {
  const char *q = itest_queue("usage");
  char *err = NULL;
  const char *empty = itest_path("empty.jsonl");

  itest_write(empty, "\n\n", 2);
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, "/nonexistent/items.jsonl", NULL};

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "cannot open /nonexistent/items.jsonl");
    free(err);
  }
  {
    const char *args[] = {"submit", "--redis", itest_url(), "--queue", q, empty, NULL};

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "has no items");
    free(err);
  }
  {
    const char *args[] = {"submit", "--priority", "urgent", "--redis", itest_url(), empty, NULL};

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "--priority: unknown priority \"urgent\"");
    free(err);
  }
  {
    const char *args[] = {"submit", "--queue", "bad queue!", "--redis", itest_url(), empty, NULL};

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "invalid queue name");
    free(err);
  }
  {
    const char *args[] = {"frobnicate", NULL};

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "unknown command \"frobnicate\"");
    free(err);
  }
}

/* Option values: every time option takes durations (30m) as well as
 * milliseconds, and says what it expects otherwise; an unknown filter value
 * is listed with the valid ones; a worker refuses an --exec mapping that
 * would replace a built-in type. Exit 2 for each refusal. */
static void test_option_values(void) {
  const char *q = itest_queue("optvals");
  const char *one = itest_path("one.jsonl");
  const char *item = "{\"type\":\"noop\",\"payload\":1}\n";
  char *err = NULL;

  itest_write(one, item, strlen(item));
  {
    const char *args[] = {"submit", "--check", "--timeout", "30m", "--backoff", "2s", "--backoff-max", "2h",
                          "--delay", "10m", "--retention", "7d", "--dedupe-ttl", "1500", one, NULL};

    CHECK_INT(itest_run(args, NULL, NULL, 30), ==, 0);
  }
  {
    const char *args[] = {"submit", "--check", "--timeout", "30x", one, NULL};

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "--timeout: expected a duration like 30s, 10m, 2h or milliseconds, from 1ms to 1d; got \"30x\"");
    free(err);
  }
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--visibility", "50", NULL};

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "--visibility: expected a duration like 30s, 10m, 2h or milliseconds, from 100ms to 1d");
    free(err);
  }
  {
    const char *args[] = {"worker", "--redis", itest_url(), "--queue", q, "--exec", "http=./fetch.sh", NULL};

    CHECK_INT(itest_run(args, NULL, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "\"http\" is a type every worker serves by itself");
    free(err);
  }
  {
    const char *args[] = {"batches", "--redis", itest_url(), "--queue", q, "--status", "done", NULL};
    char *out = NULL;

    CHECK_INT(itest_run(args, &out, &err, 30), ==, 2);
    CHECK_CONTAINS(err, "--status: unknown status \"done\" (expected submitting, queued, running, paused, "
                        "completed or cancelled)");
    CHECK_STR(out, ""); /* no table header either */
    free(out);
    free(err);
  }
}

static const sl_test tests[] = {
    {"invalid_json", test_invalid_json, 30},
    {"missing_and_mistyped_fields", test_missing_and_mistyped_fields, 60},
    {"unknown_priority", test_unknown_priority, 30},
    {"size_limits", test_size_limits, 30},
    {"encoding_and_nesting", test_encoding_and_nesting, 30},
    {"duplicate_ids", test_duplicate_ids, 30},
    {"builtin_payloads", test_builtin_payloads, 30},
    {"usage_errors", test_usage_errors, 30},
    {"option_values", test_option_values, 30},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  itest_use_redis();
  return sl_test_main(argc, argv, tests);
}
