/*
 * Unit tests for item validation and normalization (src/item.c): the exact
 * normalized `d` text, payload bytes kept as sent, id rules, defaults and
 * their overrides, and every error class with the field its message names;
 * plus sl__prio_parse / sl__prio_name and sl__name_valid; sl__rfc3339_check
 * (real calendar dates, leap years, the year range, offsets, fractions, and
 * ms checked against `date -u -d ... +%s`); the byte order mark message; and
 * http items refused at submit by the payload checker (httpreq.c).
 */
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

#include "harness.h"
#include "item.h"
#include "json.h"

/* ---- Helpers ---- */

static const sl_item_defaults def_normal = {SL_PRIO_NORMAL, 1, 30000};

/* Parses a line that must be accepted; checks that d is valid JSON whose
 * length is dlen. */
static void parse_ok_def(const char *line, long lineno, const sl_item_defaults *def, sl_item *it) {
  char err[256] = "";
  char jerr[128] = "";
  size_t pos = 0;
  int rc = sl__item_parse(line, strlen(line), lineno, def, it, err, sizeof(err));

  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "item %s rejected (rc %d): %s", line, rc, err);
  CHECK(it->id != NULL);
  CHECK(it->d != NULL);
  CHECK_INT(it->dlen, ==, strlen(it->d));
  if (sl__json_validate(it->d, it->dlen, SL_ITEM_MAX_DEPTH + 1, &pos, jerr, sizeof(jerr)) != 0)
    sl_test_fail(__FILE__, __LINE__, "normalized item %s is not valid JSON at %zu: %s", it->d, pos, jerr);
}

static void parse_ok(const char *line, sl_item *it) {
  parse_ok_def(line, 1, &def_normal, it);
}

/* Parses line[0..len) that must be rejected with `want_rc`; checks *out is
 * left empty and the message holds `msg` (and `msg2` unless NULL). */
static void parse_err_n(const char *line, size_t len, int want_rc, const char *msg, const char *msg2) {
  char err[512] = "";
  sl_item it;
  int rc;

  memset(&it, 0x5a, sizeof(it));
  rc = sl__item_parse(line, len, 1, &def_normal, &it, err, sizeof(err));
  if (rc != want_rc)
    sl_test_fail(__FILE__, __LINE__, "item %.80s: rc %d (%s), expected %d", line, rc, err, want_rc);
  CHECK(it.id == NULL);
  CHECK(it.d == NULL);
  if (strstr(err, msg) == NULL)
    sl_test_fail(__FILE__, __LINE__, "item %.80s: message \"%s\" lacks \"%s\"", line, err, msg);
  if (msg2 != NULL && strstr(err, msg2) == NULL)
    sl_test_fail(__FILE__, __LINE__, "item %.80s: message \"%s\" lacks \"%s\"", line, err, msg2);
}

static void parse_err(const char *line, const char *msg, const char *msg2) {
  parse_err_n(line, strlen(line), SL_EINVAL, msg, msg2);
}

/* A heap line: prefix, `n` copies of `fill`, suffix. */
static char *make_line(const char *prefix, char fill, size_t n, const char *suffix, size_t *len) {
  size_t pl = strlen(prefix);
  size_t sl = strlen(suffix);
  char *s = malloc(pl + n + sl + 1);

  CHECK(s != NULL);
  memcpy(s, prefix, pl);
  memset(s + pl, fill, n);
  memcpy(s + pl + n, suffix, sl + 1);
  *len = pl + n + sl;
  return s;
}

/* ---- Accepted items and the normalized form ---- */

static void test_minimal_item(void) {
  sl_item it;

  parse_ok_def("{\"type\":\"noop\",\"payload\":{}}", 7, &def_normal, &it);
  CHECK_STR(it.id, "7");
  CHECK_INT(it.prio, ==, SL_PRIO_NORMAL);
  CHECK_STR(it.d, "{\"type\":\"noop\",\"timeout_ms\":30000,\"max_attempts\":1,\"backoff_ms\":1000,\"backoff_max_ms\":60000,\"id\":\"7\",\"payload\":{}}");
  sl__item_free(&it);
  CHECK(it.id == NULL && it.d == NULL && it.dlen == 0);
}

static void test_normalized_field_order(void) {
  sl_item it;

  parse_ok(" { \"timeout_ms\" : 5000, \"payload\" : {\"b\": [1, 2], \"a\":\"x\"} ,\n"
           "\"max_attempts\":3, \"type\":\"email.send\", \"id\":\"row-17\", \"priority\":\"high\" } ",
           &it);
  CHECK_STR(it.id, "row-17");
  CHECK_INT(it.prio, ==, SL_PRIO_HIGH);
  CHECK_STR(it.d, "{\"type\":\"email.send\",\"timeout_ms\":5000,\"max_attempts\":3,\"backoff_ms\":1000,"
                  "\"backoff_max_ms\":60000,\"id\":\"row-17\",\"payload\":{\"b\": [1, 2], \"a\":\"x\"}}");
  sl__item_free(&it);
}

static void test_payload_kept_byte_for_byte(void) {
  sl_item it;

  parse_ok("{\"type\":\"t\",\"payload\":{\"n\":12345678901234567890,\"f\":1.50,\"e\":1E+2,"
           "\"s\":\"\\u00e9\\n\\/\",\"u\":\"\xc3\xa9\",\"z\":[ ]}}",
           &it);
  CHECK_STR(it.d, "{\"type\":\"t\",\"timeout_ms\":30000,\"max_attempts\":1,\"backoff_ms\":1000,"
                  "\"backoff_max_ms\":60000,\"id\":\"1\",\"payload\":{\"n\":12345678901234567890,\"f\":1.50,"
                  "\"e\":1E+2,\"s\":\"\\u00e9\\n\\/\",\"u\":\"\xc3\xa9\",\"z\":[ ]}}");
  sl__item_free(&it);

  parse_ok("{\"type\":\"t\",\"payload\":12345678901234567890}", &it);
  CHECK_CONTAINS(it.d, ",\"payload\":12345678901234567890}");
  sl__item_free(&it);

  parse_ok("{\"type\":\"t\",\"payload\":null}", &it);
  CHECK_CONTAINS(it.d, ",\"payload\":null}");
  sl__item_free(&it);

  parse_ok("{\"type\":\"t\",\"payload\":\"a\\\"b\"}", &it);
  CHECK_CONTAINS(it.d, ",\"payload\":\"a\\\"b\"}");
  sl__item_free(&it);

  parse_ok("{\"type\":\"t\",\"payload\":[1,\"two\",{\"3\":false}]}", &it);
  CHECK_CONTAINS(it.d, ",\"payload\":[1,\"two\",{\"3\":false}]}");
  sl__item_free(&it);
}

static void test_payload_nesting_limit(void) {
  char line[512];
  size_t n = 0;
  sl_item it;
  char err[256];

  /* the item object is level 1, so the payload may nest 63 more */
  n = (size_t)snprintf(line, sizeof(line), "{\"type\":\"t\",\"payload\":");
  for (int i = 0; i < SL_ITEM_MAX_DEPTH - 1; i++)
    line[n++] = '[';
  for (int i = 0; i < SL_ITEM_MAX_DEPTH - 1; i++)
    line[n++] = ']';
  line[n++] = '}';
  line[n] = '\0';
  parse_ok(line, &it);
  sl__item_free(&it);

  n = (size_t)snprintf(line, sizeof(line), "{\"type\":\"t\",\"payload\":");
  for (int i = 0; i < SL_ITEM_MAX_DEPTH; i++)
    line[n++] = '[';
  for (int i = 0; i < SL_ITEM_MAX_DEPTH; i++)
    line[n++] = ']';
  line[n++] = '}';
  line[n] = '\0';
  CHECK_INT(sl__item_parse(line, n, 1, &def_normal, &it, err, sizeof(err)), ==, SL_EINVAL);
  /* the 64th '[' of the payload starts at byte 22 + 63 = 85: column 86 */
  CHECK_STR(err, "invalid JSON at column 86: nesting deeper than 64 levels");
}

/* ---- Ids ---- */

static void test_id_default_line_number(void) {
  sl_item it;

  parse_ok_def("{\"type\":\"t\",\"payload\":{}}", 123456, &def_normal, &it);
  CHECK_STR(it.id, "123456");
  CHECK_CONTAINS(it.d, ",\"id\":\"123456\",");
  sl__item_free(&it);
}

static void test_id_integer_becomes_string(void) {
  sl_item it;

  parse_ok("{\"id\":42,\"type\":\"t\",\"payload\":{}}", &it);
  CHECK_STR(it.id, "42");
  CHECK_CONTAINS(it.d, ",\"id\":\"42\",");
  sl__item_free(&it);

  parse_ok("{\"id\":-5,\"type\":\"t\",\"payload\":{}}", &it);
  CHECK_STR(it.id, "-5");
  sl__item_free(&it);

  parse_ok("{\"id\":5.0,\"type\":\"t\",\"payload\":{}}", &it);
  CHECK_STR(it.id, "5");
  sl__item_free(&it);

  /* 1e3 is the integer 1000, whatever its spelling; 1.5e0 is not an integer. */
  parse_ok("{\"id\":1e3,\"type\":\"t\",\"payload\":{}}", &it);
  CHECK_STR(it.id, "1000");
  sl__item_free(&it);
  {
    char err[256] = "";
    const char *l = "{\"id\":1.5e0,\"type\":\"t\",\"payload\":{}}";

    CHECK_INT(sl__item_parse(l, strlen(l), 1, &def_normal, &it, err, sizeof(err)), ==, SL_EINVAL);
    CHECK_CONTAINS(err, "field \"id\"");
  }

  parse_ok("{\"id\":9007199254740991,\"type\":\"t\",\"payload\":{}}", &it);
  CHECK_STR(it.id, "9007199254740991");
  sl__item_free(&it);

  parse_ok("{\"id\":-9007199254740991,\"type\":\"t\",\"payload\":{}}", &it);
  CHECK_STR(it.id, "-9007199254740991");
  sl__item_free(&it);
}

static void test_id_string_unescaped(void) {
  sl_item it;

  parse_ok("{\"id\":\"a\\\"b\\u00e9\\/c\",\"type\":\"t\",\"payload\":{}}", &it);
  CHECK_STR(it.id, "a\"b\xc3\xa9/c");
  /* d holds it re-escaped by sl__json_put_str */
  CHECK_CONTAINS(it.d, ",\"id\":\"a\\\"b\xc3\xa9/c\",");
  sl__item_free(&it);

  parse_ok("{\"id\":\"tab\\there\\u0001\",\"type\":\"t\",\"payload\":{}}", &it);
  CHECK_STR(it.id, "tab\there\x01");
  CHECK_CONTAINS(it.d, ",\"id\":\"tab\\there\\u0001\",");
  sl__item_free(&it);

  /* a numeric-looking string stays a string, as written */
  parse_ok("{\"id\":\"007\",\"type\":\"t\",\"payload\":{}}", &it);
  CHECK_STR(it.id, "007");
  sl__item_free(&it);
}

static void test_id_length_limit(void) {
  char line[1024];
  char want[256];
  sl_item it;

  memset(want, 'i', SL_ITEM_MAX_ID);
  want[SL_ITEM_MAX_ID] = '\0';
  snprintf(line, sizeof(line), "{\"id\":\"%s\",\"type\":\"t\",\"payload\":{}}", want);
  parse_ok(line, &it);
  CHECK_STR(it.id, want);
  sl__item_free(&it);

  snprintf(line, sizeof(line), "{\"id\":\"%si\",\"type\":\"t\",\"payload\":{}}", want);
  parse_err_n(line, strlen(line), SL_ETOOBIG, "field \"id\": 129 bytes, over the limit of 128", NULL);

  /* the limit is on the unescaped bytes: 65 x U+00E9 is 130 bytes */
  {
    size_t n = (size_t)snprintf(line, sizeof(line), "{\"id\":\"");

    for (int i = 0; i < 65; i++)
      n += (size_t)snprintf(line + n, sizeof(line) - n, "\\u00e9");
    snprintf(line + n, sizeof(line) - n, "\",\"type\":\"t\",\"payload\":{}}");
    parse_err_n(line, strlen(line), SL_ETOOBIG, "field \"id\": 130 bytes", NULL);
  }
}

static void test_id_errors(void) {
  parse_err("{\"id\":\"\",\"type\":\"t\",\"payload\":{}}", "field \"id\": empty", NULL);
  parse_err("{\"id\":1.5,\"type\":\"t\",\"payload\":{}}", "field \"id\"", "below 2^53");
  parse_err("{\"id\":9007199254740992,\"type\":\"t\",\"payload\":{}}", "field \"id\"", "use a string");
  parse_err("{\"id\":12345678901234567890,\"type\":\"t\",\"payload\":{}}", "field \"id\"", "2^53");
  parse_err("{\"id\":true,\"type\":\"t\",\"payload\":{}}", "field \"id\": expected a string or an integer",
            "got a boolean");
  parse_err("{\"id\":null,\"type\":\"t\",\"payload\":{}}", "field \"id\"", "got null");
  parse_err("{\"id\":[1],\"type\":\"t\",\"payload\":{}}", "field \"id\"", "got an array");
  parse_err("{\"id\":{},\"type\":\"t\",\"payload\":{}}", "field \"id\"", "got an object");
}

/* ---- Defaults ---- */

static void test_defaults_applied(void) {
  const sl_item_defaults def = {SL_PRIO_LOW, 5, 1234};
  sl_item it;

  parse_ok_def("{\"type\":\"t\",\"payload\":{}}", 3, &def, &it);
  CHECK_INT(it.prio, ==, SL_PRIO_LOW);
  CHECK_STR(it.d, "{\"type\":\"t\",\"timeout_ms\":1234,\"max_attempts\":5,\"backoff_ms\":1000,\"backoff_max_ms\":60000,\"id\":\"3\",\"payload\":{}}");
  sl__item_free(&it);
}

static void test_defaults_overridden(void) {
  const sl_item_defaults def = {SL_PRIO_LOW, 5, 1234};
  sl_item it;

  parse_ok_def("{\"type\":\"t\",\"payload\":{},\"priority\":\"high\",\"max_attempts\":2,"
               "\"timeout_ms\":99,\"backoff_ms\":1000,\"backoff_max_ms\":60000}",
               3, &def, &it);
  CHECK_INT(it.prio, ==, SL_PRIO_HIGH);
  CHECK_STR(it.d, "{\"type\":\"t\",\"timeout_ms\":99,\"max_attempts\":2,\"backoff_ms\":1000,\"backoff_max_ms\":60000,\"id\":\"3\",\"payload\":{}}");
  sl__item_free(&it);

  /* each field alone overrides only itself; bounds are inclusive */
  parse_ok_def("{\"type\":\"t\",\"payload\":{},\"priority\":\"normal\"}", 3, &def, &it);
  CHECK_INT(it.prio, ==, SL_PRIO_NORMAL);
  CHECK_CONTAINS(it.d, "\"timeout_ms\":1234,\"max_attempts\":5,\"backoff_ms\":1000,\"backoff_max_ms\":60000,");
  sl__item_free(&it);

  parse_ok_def("{\"type\":\"t\",\"payload\":{},\"max_attempts\":1000,\"timeout_ms\":86400000,\"backoff_ms\":1000,\"backoff_max_ms\":60000}", 3, &def,
               &it);
  CHECK_INT(it.prio, ==, SL_PRIO_LOW);
  CHECK_CONTAINS(it.d, "\"timeout_ms\":86400000,\"max_attempts\":1000,\"backoff_ms\":1000,\"backoff_max_ms\":60000,");
  sl__item_free(&it);

  parse_ok_def("{\"type\":\"t\",\"payload\":{},\"max_attempts\":5.0}", 3, &def, &it);
  CHECK_CONTAINS(it.d, "\"max_attempts\":5,");
  sl__item_free(&it);
}

/* ---- Errors ---- */

static void test_err_invalid_json(void) {
  /* `{"type":"x",}`: the '}' at byte 12 is column 13 */
  parse_err("{\"type\":\"x\",}", "invalid JSON at column 13", "expected a string key");
  parse_err("{\"type\":\"x\",\"payload\":{}} x", "invalid JSON at column 27", "trailing");
  parse_err("", "invalid JSON at column 1", "unexpected end of input");
  parse_err("{\"type\":\"x\xff\",\"payload\":{}}", "invalid JSON at column 11", "invalid UTF-8");
  parse_err("{\"type\":\"x\",\"payload\":{\"a\":\"\t\"}}", "invalid JSON at column 29", "control");
  parse_err("{\"type\":\"x\",\"payload\":01}", "invalid JSON at column 24", NULL);
}

static void test_err_not_object(void) {
  parse_err("[1]", "an item must be a JSON object", NULL);
  parse_err("\"x\"", "an item must be a JSON object", NULL);
  parse_err("42", "an item must be a JSON object", NULL);
  parse_err("null", "an item must be a JSON object", NULL);
}

static void test_err_type(void) {
  parse_err("{\"payload\":{}}", "field \"type\": missing", NULL);
  parse_err("{\"type\":5,\"payload\":{}}", "field \"type\": expected a name", "got 5");
  parse_err("{\"type\":null,\"payload\":{}}", "field \"type\": expected a name", "got null");
  parse_err("{\"type\":\"a b\",\"payload\":{}}", "field \"type\": expected a name", "got \"a b\"");
  parse_err("{\"type\":\"\",\"payload\":{}}", "field \"type\"", "1-64 characters");
  parse_err("{\"type\":\"a/b\",\"payload\":{}}", "field \"type\"", NULL);
  parse_err("{\"type\":\"caf\xc3\xa9\",\"payload\":{}}", "field \"type\"", NULL);
  parse_err("{\"type\":\"a\\u0020b\",\"payload\":{}}", "field \"type\"", NULL);
}

/* Escapes never change what a name means: "a\u0062" is the type "ab". */
static void test_escaped_names(void) {
  sl_item it;

  parse_ok("{\"typ\\u0065\":\"a\\u0062\",\"p\\u0061yload\":{},\"priority\":\"h\\u0069gh\","
           "\"rate_\\u006bey\":\"open\\u0061i\",\"timeout_ms\":3e4}",
           &it);
  CHECK_STR(it.d, "{\"type\":\"ab\",\"rate_key\":\"openai\",\"timeout_ms\":30000,\"max_attempts\":1,\"backoff_ms\":1000,\"backoff_max_ms\":60000,\"id\":\"1\",\"payload\":{}}");
  CHECK_INT(it.prio, ==, SL_PRIO_HIGH);
  sl__item_free(&it);
}

static void test_type_length(void) {
  char line[256];
  char name[80];
  sl_item it;

  memset(name, 'T', SL_NAME_MAX);
  name[SL_NAME_MAX] = '\0';
  snprintf(line, sizeof(line), "{\"type\":\"%s\",\"payload\":{}}", name);
  parse_ok(line, &it);
  CHECK_CONTAINS(it.d, name);
  sl__item_free(&it);

  snprintf(line, sizeof(line), "{\"type\":\"%sT\",\"payload\":{}}", name);
  parse_err(line, "field \"type\": expected a name of 1-64 characters", NULL);
}

static void test_err_payload_missing(void) {
  parse_err("{\"type\":\"t\"}", "field \"payload\": missing", NULL);
  parse_err("{}", "field \"type\": missing", NULL);
}

static void test_err_payload_too_big(void) {
  const char *pre = "{\"type\":\"t\",\"payload\":\"";
  size_t len;
  char *line;
  sl_item it;
  char err[256];

  /* the payload is the quoted string: exactly the limit passes */
  line = make_line(pre, 'p', SL_ITEM_MAX_PAYLOAD - 2, "\"}", &len);
  CHECK_INT(sl__item_parse(line, len, 1, &def_normal, &it, err, sizeof(err)), ==, 0);
  CHECK_INT(it.dlen, >, SL_ITEM_MAX_PAYLOAD);
  sl__item_free(&it);
  free(line);

  line = make_line(pre, 'p', SL_ITEM_MAX_PAYLOAD - 1, "\"}", &len);
  parse_err_n(line, len, SL_ETOOBIG, "field \"payload\": 524289 bytes, over the limit of 524288", NULL);
  free(line);
}

static void test_err_line_too_big(void) {
  const char *pre = "{\"type\":\"t\",\"payload\":{}";
  size_t len;
  char *line;
  sl_item it;
  char err[256];

  /* whitespace pads a valid item to exactly the line limit */
  line = make_line(pre, ' ', SL_ITEM_MAX_LINE - strlen(pre) - 1, "}", &len);
  CHECK_INT(len, ==, SL_ITEM_MAX_LINE);
  CHECK_INT(sl__item_parse(line, len, 1, &def_normal, &it, err, sizeof(err)), ==, 0);
  CHECK_STR(it.d, "{\"type\":\"t\",\"timeout_ms\":30000,\"max_attempts\":1,\"backoff_ms\":1000,\"backoff_max_ms\":60000,\"id\":\"1\",\"payload\":{}}");
  sl__item_free(&it);
  free(line);

  line = make_line(pre, ' ', SL_ITEM_MAX_LINE - strlen(pre), "}", &len);
  parse_err_n(line, len, SL_ETOOBIG, "line is 1048577 bytes, over the limit of 1048576", NULL);
  free(line);
}

static void test_err_priority(void) {
  parse_err("{\"type\":\"t\",\"payload\":{},\"priority\":\"urgent\"}",
            "field \"priority\": unknown priority \"urgent\"", "\"high\", \"normal\" or \"low\"");
  parse_err("{\"type\":\"t\",\"payload\":{},\"priority\":1}", "field \"priority\"", "unknown priority 1 ");
  parse_err("{\"type\":\"t\",\"payload\":{},\"priority\":\"HIGH\"}", "field \"priority\"", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"priority\":\"\"}", "field \"priority\"", NULL);
}

static void test_err_max_attempts(void) {
  parse_err("{\"type\":\"t\",\"payload\":{},\"max_attempts\":0}",
            "field \"max_attempts\": expected an integer from 1 to 1000", "got 0");
  parse_err("{\"type\":\"t\",\"payload\":{},\"max_attempts\":1001}", "field \"max_attempts\"", "got 1001");
  parse_err("{\"type\":\"t\",\"payload\":{},\"max_attempts\":\"3\"}", "field \"max_attempts\"", "got \"3\"");
  parse_err("{\"type\":\"t\",\"payload\":{},\"max_attempts\":2.5}", "field \"max_attempts\"", "got 2.5");
  parse_err("{\"type\":\"t\",\"payload\":{},\"max_attempts\":-1}", "field \"max_attempts\"", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"max_attempts\":null}", "field \"max_attempts\"", NULL);
}

static void test_err_timeout_ms(void) {
  parse_err("{\"type\":\"t\",\"payload\":{},\"timeout_ms\":0,\"backoff_ms\":1000,\"backoff_max_ms\":60000}",
            "field \"timeout_ms\": expected an integer from 1 to 86400000 (ms)", "got 0");
  parse_err("{\"type\":\"t\",\"payload\":{},\"timeout_ms\":86400001,\"backoff_ms\":1000,\"backoff_max_ms\":60000}", "field \"timeout_ms\"",
            "got 86400001");
  parse_err("{\"type\":\"t\",\"payload\":{},\"timeout_ms\":-5}", "field \"timeout_ms\"", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"timeout_ms\":\"1000\"}", "field \"timeout_ms\"", NULL);
}

static void test_err_unknown_field(void) {
  parse_err("{\"type\":\"t\",\"payload\":{},\"colour\":\"red\"}", "field \"colour\": unknown field",
            "known: id, type, payload, priority, max_attempts, timeout_ms");
  parse_err("{\"Type\":\"t\",\"payload\":{}}", "field \"Type\": unknown field", NULL);
  /* a long name is cut to 40 bytes in the message */
  parse_err("{\"type\":\"t\",\"payload\":{},\"aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeee\":1}",
            "field \"aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd\": unknown field", NULL);
}

static void test_err_field_twice(void) {
  parse_err("{\"type\":\"t\",\"payload\":{},\"type\":\"t\"}", "key \"type\" appears twice in one object", NULL);
  parse_err("{\"id\":1,\"type\":\"t\",\"id\":2,\"payload\":{}}", "key \"id\" appears twice", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"payload\":{}}", "key \"payload\" appears twice", NULL);
  /* at any depth, and by the decoded text of the key */
  parse_err("{\"type\":\"t\",\"payload\":{\"a\":{\"url\":1,\"u\\u0072l\":2}}}", "key \"u\\u0072l\" appears twice",
            "column 37");
}

static void test_dedupe_key(void) {
  sl_item it;

  parse_ok("{\"type\":\"t\",\"payload\":{},\"dedupe\":\"img-\\u00e917\"}", &it);
  CHECK_STR(it.dedupe, "img-\xc3\xa9" "17");
  CHECK(strstr(it.d, "dedupe") == NULL); /* the key travels beside the item, not in it */
  sl__item_free(&it);
  parse_ok("{\"type\":\"t\",\"payload\":{}}", &it);
  CHECK(it.dedupe == NULL);
  sl__item_free(&it);
  parse_err("{\"type\":\"t\",\"payload\":{},\"dedupe\":1}", "field \"dedupe\": expected a string key", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"dedupe\":\"\"}", "field \"dedupe\": expected a key of 1-256 bytes", NULL);
}

/* rate_key: a limit name, placed right after the type in the stored item
 * (the functions read it there); the batch default applies too. */
static void test_rate_key(void) {
  sl_item_defaults def = def_normal;
  sl_item it;

  parse_ok("{\"id\":\"a\",\"type\":\"http\",\"payload\":{\"url\":\"http://x/\"},\"rate_key\":\"openai\"}", &it);
  CHECK_STR(it.d, "{\"type\":\"http\",\"rate_key\":\"openai\",\"timeout_ms\":30000,\"max_attempts\":1,\"backoff_ms\":1000,\"backoff_max_ms\":60000,\"id\":\"a\",\"payload\":{\"url\":\"http://x/\"}}");
  sl__item_free(&it);
  def.rate_key = "batchwide";
  parse_ok_def("{\"type\":\"noop\",\"payload\":null}", 3, &def, &it);
  CHECK_CONTAINS(it.d, "{\"type\":\"noop\",\"rate_key\":\"batchwide\",\"timeout_ms\":");
  sl__item_free(&it);
  parse_ok_def("{\"type\":\"noop\",\"payload\":null,\"rate_key\":\"own\"}", 3, &def, &it);
  CHECK_CONTAINS(it.d, "\"rate_key\":\"own\"");
  CHECK(strstr(it.d, "batchwide") == NULL);
  sl__item_free(&it);
  parse_err("{\"type\":\"t\",\"payload\":{},\"rate_key\":1}", "field \"rate_key\": expected a limit name", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"rate_key\":\"a b\"}", "field \"rate_key\"", NULL);
}

/* run_at (RFC 3339, with an offset) and delay_ms set the start time. */
static void test_start_time(void) {
  sl_item it;
  int64_t ms = 0;

  CHECK_INT(sl__rfc3339_parse("2026-11-23T10:00:00Z", 20, &ms), ==, 0);
  CHECK_INT(ms, ==, 1795428000000LL);
  CHECK_INT(sl__rfc3339_parse("2026-11-23T12:00:00.250+02:00", 29, &ms), ==, 0);
  CHECK_INT(ms, ==, 1795428000250LL);
  CHECK_INT(sl__rfc3339_parse("2026-11-23T05:00:00-05:00", 25, &ms), ==, 0);
  CHECK_INT(ms, ==, 1795428000000LL);
  CHECK_INT(sl__rfc3339_parse("2026-11-23 10:00:00", 19, &ms), ==, SL_EINVAL);
  CHECK_INT(sl__rfc3339_parse("2026-11-23T10:00:00", 19, &ms), ==, SL_EINVAL); /* no offset */
  CHECK_INT(sl__rfc3339_parse("2026-13-23T10:00:00Z", 20, &ms), ==, SL_EINVAL);
  parse_ok("{\"type\":\"noop\",\"payload\":null,\"run_at\":\"2026-11-23T10:00:00Z\"}", &it);
  CHECK_INT(it.start_at_ms, ==, 1795428000000LL);
  CHECK_INT(it.delay_ms, ==, 0);
  sl__item_free(&it);
  parse_ok("{\"type\":\"noop\",\"payload\":null,\"delay_ms\":1500}", &it);
  CHECK_INT(it.delay_ms, ==, 1500);
  sl__item_free(&it);
  parse_err("{\"type\":\"t\",\"payload\":{},\"run_at\":\"tomorrow\"}", "field \"run_at\": expected an RFC 3339 time", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"delay_ms\":-1}", "field \"delay_ms\"", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"delay_ms\":5,\"run_at\":\"2026-11-23T10:00:00Z\"}",
            "give run_at or delay_ms, not both", NULL);
}

static void test_err_too_many_fields(void) {
  char line[1024];
  size_t n = (size_t)snprintf(line, sizeof(line), "{\"type\":\"t\",\"payload\":{}");

  for (int i = 0; i < 31; i++)
    n += (size_t)snprintf(line + n, sizeof(line) - n, ",\"f%d\":1", i);
  snprintf(line + n, sizeof(line) - n, "}");
  parse_err(line, "an item has at most 32 fields", NULL);
}

static void test_sleep_payload(void) {
  sl_item it;

  parse_ok("{\"type\":\"sleep\",\"payload\":{\"ms\":100,\"fail_rate\":0.25}}", &it);
  sl__item_free(&it);
  parse_ok("{\"type\":\"sleep\",\"payload\":{\"ms\":0,\"fail_rate\":1}}", &it);
  sl__item_free(&it);
  parse_ok("{\"type\":\"sleep\",\"payload\":{\"ms\":86400000}}", &it);
  sl__item_free(&it);
  parse_ok("{\"type\":\"sleep\",\"payload\":{}}", &it);
  sl__item_free(&it);
  parse_ok("{\"type\":\"sleep\",\"payload\":null}", &it);
  CHECK_CONTAINS(it.d, "\"payload\":null}");
  sl__item_free(&it);
}

static void test_err_sleep_payload(void) {
  parse_err("{\"type\":\"sleep\",\"payload\":{\"ms\":-1}}",
            "field \"payload.ms\": expected an integer from 0 to 86400000", "got -1");
  parse_err("{\"type\":\"sleep\",\"payload\":{\"ms\":\"100\"}}", "field \"payload.ms\"", "got \"100\"");
  parse_err("{\"type\":\"sleep\",\"payload\":{\"ms\":86400001}}", "field \"payload.ms\"", NULL);
  parse_err("{\"type\":\"sleep\",\"payload\":{\"ms\":1.5}}", "field \"payload.ms\"", NULL);
  parse_err("{\"type\":\"sleep\",\"payload\":{\"fail_rate\":1.5}}",
            "field \"payload.fail_rate\": expected a number from 0 to 1", "got 1.5");
  parse_err("{\"type\":\"sleep\",\"payload\":{\"fail_rate\":-0.1}}", "field \"payload.fail_rate\"", NULL);
  parse_err("{\"type\":\"sleep\",\"payload\":{\"fail_rate\":\"0.5\"}}", "field \"payload.fail_rate\"", NULL);
  parse_err("{\"type\":\"sleep\",\"payload\":{\"msec\":10}}", "field \"payload.msec\": unknown field",
            "known: ms, fail_rate");
  parse_err("{\"type\":\"sleep\",\"payload\":5}", "field \"payload\": a sleep payload must be an object",
            "not a number");
  parse_err("{\"type\":\"sleep\",\"payload\":[]}", "field \"payload\"", "not an array");
  parse_err("{\"type\":\"sleep\",\"payload\":\"100\"}", "field \"payload\"", "not a string");
}

static void test_http_payload(void) {
  sl_item it;

  parse_ok("{\"type\":\"http\",\"payload\":{\"url\":\"http://example.com/hook\"}}", &it);
  sl__item_free(&it);
  parse_ok("{\"type\":\"http\",\"payload\":{\"method\":\"PUT\",\"url\":\"https://x.test/a?b=c\","
           "\"headers\":{\"X-A\":\"1\"},\"json\":{\"k\":[1]}}}",
           &it);
  sl__item_free(&it);
}

static void test_err_http_payload(void) {
  parse_err("{\"type\":\"http\",\"payload\":{}}", "field \"payload.url\": missing", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"method\":\"GET\"}}", "field \"payload.url\": missing", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"ftp://x/y\"}}",
            "field \"payload.url\": expected an http:// or https:// URL", "got \"ftp://x/y\"");
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"example.com\"}}", "field \"payload.url\"", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"HTTP\"}}", "field \"payload.url\"", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":5}}", "field \"payload.url\"", "got 5");
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"http://x\",\"method\":5}}",
            "field \"payload.method\": expected a string", "got a number");
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"http://x\",\"headers\":[]}}",
            "field \"payload.headers\": expected an object", "got an array");
  parse_err("{\"type\":\"http\",\"payload\":\"http://x\"}",
            "field \"payload\": an http payload must be an object", "not a string");
  parse_err("{\"type\":\"http\",\"payload\":null}", "field \"payload\"", "not null");
}

/* A message longer than errbuf is cut, never overrun. */
static void test_err_small_buffer(void) {
  char err[16];
  sl_item it;
  const char *line = "{\"type\":\"t\",\"payload\":{},\"colour\":1}";

  memset(err, 'z', sizeof(err));
  CHECK_INT(sl__item_parse(line, strlen(line), 1, &def_normal, &it, err, sizeof(err)), ==, SL_EINVAL);
  CHECK_INT(strlen(err), ==, sizeof(err) - 1);
  CHECK(strncmp(err, "field \"colour\"", 14) == 0);
}

/* ---- Priorities and names ---- */

static void test_prio_parse_and_name(void) {
  CHECK_INT(sl__prio_parse("high", 4), ==, SL_PRIO_HIGH);
  CHECK_INT(sl__prio_parse("normal", 6), ==, SL_PRIO_NORMAL);
  CHECK_INT(sl__prio_parse("low", 3), ==, SL_PRIO_LOW);
  CHECK_INT(sl__prio_parse("HIGH", 4), ==, -1);
  CHECK_INT(sl__prio_parse("hig", 3), ==, -1);
  CHECK_INT(sl__prio_parse("highx", 5), ==, -1);
  CHECK_INT(sl__prio_parse("", 0), ==, -1);
  CHECK_INT(sl__prio_parse("urgent", 6), ==, -1);
  /* only n bytes are read */
  CHECK_INT(sl__prio_parse("lowest", 3), ==, SL_PRIO_LOW);
  CHECK_STR(sl__prio_name(SL_PRIO_HIGH), "high");
  CHECK_STR(sl__prio_name(SL_PRIO_NORMAL), "normal");
  CHECK_STR(sl__prio_name(SL_PRIO_LOW), "low");
  CHECK_STR(sl__prio_name(SL_PRIO_COUNT), "?");
  CHECK_STR(sl__prio_name(-1), "?");
  for (int p = 0; p < SL_PRIO_COUNT; p++) {
    const char *name = sl__prio_name(p);

    CHECK_INT(sl__prio_parse(name, strlen(name)), ==, p);
  }
}

static void test_name_valid(void) {
  char name[80];

  CHECK_INT(sl__name_valid("a", 1), ==, 1);
  CHECK_INT(sl__name_valid("Email.send:v2_x-1", 17), ==, 1);
  CHECK_INT(sl__name_valid("0123456789", 10), ==, 1);
  CHECK_INT(sl__name_valid("", 0), ==, 0);
  CHECK_INT(sl__name_valid("a b", 3), ==, 0);
  CHECK_INT(sl__name_valid("a/b", 3), ==, 0);
  CHECK_INT(sl__name_valid("{q}", 3), ==, 0);
  CHECK_INT(sl__name_valid("caf\xc3\xa9", 5), ==, 0);
  CHECK_INT(sl__name_valid("a\0b", 3), ==, 0);
  CHECK_INT(sl__name_valid("a*", 2), ==, 0);
  CHECK_INT(sl__name_valid("ab cd", 2), ==, 1); /* only n bytes are read */
  memset(name, 'n', sizeof(name));
  CHECK_INT(sl__name_valid(name, SL_NAME_MAX), ==, 1);
  CHECK_INT(sl__name_valid(name, SL_NAME_MAX + 1), ==, 0);
}

/* ---- sl__rfc3339_check ---- */

/* s must be accepted as ms since the epoch (values from date -u -d ... +%s). */
static void rfc_ok_at(const char *file, int line, const char *s, int64_t want) {
  char why[128] = "";
  int64_t ms = -12345;

  if (sl__rfc3339_check(s, strlen(s), &ms, why, sizeof(why)) != 0)
    sl_test_fail(file, line, "%s refused: %s", s, why);
  if (ms != want)
    sl_test_fail(file, line, "%s: %lld ms, expected %lld", s, (long long)ms, (long long)want);
}
#define RFC_OK(s, want) rfc_ok_at(__FILE__, __LINE__, (s), (want))

/* s must be refused, *ms untouched, with `why` saying want. */
static void rfc_bad_at(const char *file, int line, const char *s, const char *want) {
  char why[128] = "";
  int64_t ms = -12345;

  if (sl__rfc3339_check(s, strlen(s), &ms, why, sizeof(why)) != SL_EINVAL)
    sl_test_fail(file, line, "%s accepted as %lld", s, (long long)ms);
  if (ms != -12345)
    sl_test_fail(file, line, "%s: ms written on failure", s);
  if (strcmp(why, want) != 0)
    sl_test_fail(file, line, "%s: why \"%s\", expected \"%s\"", s, why, want);
  /* why may be NULL */
  if (sl__rfc3339_check(s, strlen(s), &ms, NULL, 0) != SL_EINVAL)
    sl_test_fail(file, line, "%s accepted without a why buffer", s);
}
#define RFC_BAD(s, want) rfc_bad_at(__FILE__, __LINE__, (s), (want))

static void test_rfc3339_known_values(void) {
  RFC_OK("2026-11-23T10:00:00Z", 1795428000000LL);
  RFC_OK("1970-01-01T00:00:00Z", 0);
  RFC_OK("1972-06-30T23:59:59Z", 78796799000LL);
  RFC_OK("2000-02-29T12:34:56Z", 951827696000LL);
  RFC_OK("2024-02-29T00:00:00Z", 1709164800000LL);
  RFC_OK("2024-12-31T23:59:59Z", 1735689599000LL);
  RFC_OK("2100-03-01T00:00:00Z", 4107542400000LL);
  RFC_OK("9999-12-31T23:59:59Z", 253402300799000LL);
  /* lower-case t and z */
  RFC_OK("2026-11-23t10:00:00z", 1795428000000LL);
  /* only n bytes are read */
  CHECK_INT(sl__rfc3339_parse("2026-11-23T10:00:00Zjunk", 20, &(int64_t){0}), ==, 0);
}

static void test_rfc3339_leap_years(void) {
  RFC_OK("2024-02-29T00:00:00Z", 1709164800000LL);
  RFC_OK("2000-02-29T00:00:00Z", 951782400000LL); /* divisible by 400 */
  RFC_BAD("2026-02-29T00:00:00Z", "February 2026 has 28 days, not 29");
  RFC_BAD("2026-02-30T00:00:00Z", "February 2026 has 28 days, not 30");
  RFC_BAD("2024-02-30T00:00:00Z", "February 2024 has 29 days, not 30");
  RFC_BAD("2100-02-29T00:00:00Z", "February 2100 has 28 days, not 29"); /* divisible by 100 */
  RFC_BAD("2023-02-29T10:00:00+02:00", "February 2023 has 28 days, not 29");
}

/* The last day of each month is accepted, the day after it is not. */
static void test_rfc3339_month_lengths(void) {
  static const char *const names[12] = {"January", "February", "March", "April", "May", "June",
                                        "July", "August", "September", "October", "November", "December"};
  static const int days2026[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  char s[32];
  char want[64];
  int64_t ms;
  char why[128];

  for (int m = 1; m <= 12; m++) {
    snprintf(s, sizeof(s), "2026-%02d-%02dT00:00:00Z", m, days2026[m - 1]);
    CHECK_INT(sl__rfc3339_check(s, strlen(s), &ms, why, sizeof(why)), ==, 0);
    snprintf(s, sizeof(s), "2026-%02d-%02dT00:00:00Z", m, days2026[m - 1] + 1);
    snprintf(want, sizeof(want), "%s 2026 has %d days, not %d", names[m - 1], days2026[m - 1], days2026[m - 1] + 1);
    rfc_bad_at(__FILE__, __LINE__, s, want);
    snprintf(s, sizeof(s), "2026-%02d-00T00:00:00Z", m);
    snprintf(want, sizeof(want), "%s 2026 has %d days, not 0", names[m - 1], days2026[m - 1]);
    rfc_bad_at(__FILE__, __LINE__, s, want);
  }
  RFC_BAD("2026-00-10T00:00:00Z", "month 00 does not exist");
  RFC_BAD("2026-13-01T00:00:00Z", "month 13 does not exist");
}

static void test_rfc3339_years_and_times(void) {
  RFC_BAD("1969-12-31T23:59:59Z", "year 1969 is outside 1970-9999");
  RFC_BAD("0000-01-01T00:00:00Z", "year 0000 is outside 1970-9999");
  RFC_OK("2026-11-23T23:59:59Z", 1795478399000LL);
  RFC_BAD("2026-11-23T24:00:00Z", "24:00:00 is not a time of day");
  RFC_BAD("2026-11-23T23:60:00Z", "23:60:00 is not a time of day");
  RFC_BAD("2026-11-23T23:59:60Z", "23:59:60 is not a time of day");
}

static void test_rfc3339_offsets(void) {
  RFC_OK("2026-11-23T12:00:00+02:00", 1795428000000LL);
  RFC_OK("2026-11-23T05:00:00-05:00", 1795428000000LL);
  RFC_OK("2026-11-23T10:00:00+00:00", 1795428000000LL);
  RFC_OK("2026-11-23T10:00:00-00:00", 1795428000000LL);
  RFC_OK("2026-03-01T00:00:00+23:59", 1772236860000LL);
  RFC_OK("2026-03-01T00:00:00-23:59", 1772409540000LL);
  RFC_BAD("2026-03-01T00:00:00+24:00", "offset +24:00 is outside -23:59..+23:59");
  RFC_BAD("2026-03-01T00:00:00-24:00", "offset -24:00 is outside -23:59..+23:59");
  RFC_BAD("2026-03-01T00:00:00+00:60", "offset +00:60 is outside -23:59..+23:59");
  RFC_BAD("2026-03-01T00:00:00", "not of the form 2026-11-23T10:00:00Z");
  RFC_BAD("2026-03-01T00:00:00+0100", "it needs an offset: Z or +HH:MM");
  RFC_BAD("2026-03-01T00:00:00+01", "it needs an offset: Z or +HH:MM");
  RFC_BAD("2026-03-01T00:00:00 Z", "it needs an offset: Z or +HH:MM");
  RFC_BAD("2026-03-01T00:00:00ZZ", "unexpected text after the offset");
  RFC_BAD("2026-03-01T00:00:00Z ", "unexpected text after the offset");
  RFC_BAD("2026-03-01T00:00:00+01:00:00", "unexpected text after the offset");
}

static void test_rfc3339_fractions(void) {
  RFC_OK("2026-11-23T10:00:00.5Z", 1795428000500LL);
  RFC_OK("2026-11-23T10:00:00.25Z", 1795428000250LL);
  RFC_OK("2026-11-23T10:00:00.001Z", 1795428000001LL);
  RFC_OK("2026-11-23T10:00:00.999999999Z", 1795428000999LL); /* cut to ms */
  RFC_OK("2026-11-23T12:00:00.250+02:00", 1795428000250LL);
  RFC_OK("1970-01-01T00:00:00.000Z", 0);
  RFC_BAD("2026-11-23T10:00:00.Z", "a '.' needs digits after it");
  RFC_BAD("2026-11-23T10:00:00.", "a '.' needs digits after it");
  RFC_BAD("2026-11-23T10:00:00,5Z", "it needs an offset: Z or +HH:MM");
}

static void test_rfc3339_form(void) {
  RFC_BAD("2026-11-23", "not of the form 2026-11-23T10:00:00Z");
  RFC_BAD("2026-11-23T10:00Z", "not of the form 2026-11-23T10:00:00Z");
  RFC_BAD("2026-11-23 10:00:00Z", "not of the form 2026-11-23T10:00:00Z");
  RFC_BAD("2026/11/23T10:00:00Z", "not of the form 2026-11-23T10:00:00Z");
  RFC_BAD(" 2026-11-23T10:00:00Z", "not of the form 2026-11-23T10:00:00Z");
  RFC_BAD("26-11-23T10:00:00Z", "not of the form 2026-11-23T10:00:00Z");
  RFC_BAD("2026-1-23T10:00:00Z", "not of the form 2026-11-23T10:00:00Z");
  RFC_BAD("+2026-11-23T10:00:00Z", "not of the form 2026-11-23T10:00:00Z");
  RFC_BAD("", "not of the form 2026-11-23T10:00:00Z");
}

/* The why reaches the producer in the run_at message. */
static void test_run_at_why_in_message(void) {
  parse_err("{\"type\":\"t\",\"payload\":{},\"run_at\":\"2026-02-30T10:00:00Z\"}",
            "field \"run_at\": expected an RFC 3339 time like \"2026-11-23T10:00:00Z\", got \"2026-02-30T10:00:00Z\": "
            "February 2026 has 28 days, not 30", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"run_at\":\"2026-02-29T10:00:00Z\"}", "February 2026 has 28 days, not 29",
            NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"run_at\":\"2026-03-01T00:00:00+24:00\"}",
            "offset +24:00 is outside -23:59..+23:59", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"run_at\":1795428000}", "field \"run_at\"", "not a string");
  {
    sl_item it;

    parse_ok("{\"type\":\"noop\",\"payload\":null,\"run_at\":\"2024-02-29T00:00:00.5+01:00\"}", &it);
    CHECK_INT(it.start_at_ms, ==, 1709164800500LL - 3600000);
    sl__item_free(&it);
  }
}

/* ---- The UTF-8 byte order mark ---- */

static void test_bom(void) {
  static const char *const bom_lines[] = {
    "\xef\xbb\xbf{\"type\":\"t\",\"payload\":{}}",
    "\xef\xbb\xbf",
    "\xef\xbb\xbf   ",
    NULL,
  };
  char err[256];
  sl_item it;

  for (int i = 0; bom_lines[i] != NULL; i++) {
    memset(&it, 0x5a, sizeof(it));
    CHECK_INT(sl__item_parse(bom_lines[i], strlen(bom_lines[i]), 1, &def_normal, &it, err, sizeof(err)), ==,
              SL_EINVAL);
    CHECK_STR(err, "invalid JSON at column 1: a UTF-8 byte order mark; save the file without it");
    CHECK(it.id == NULL && it.d == NULL);
  }
  /* not at the start: an ordinary character or an ordinary error */
  parse_ok("{\"type\":\"t\",\"payload\":\"\xef\xbb\xbf\"}", &it);
  CHECK_CONTAINS(it.d, ",\"payload\":\"\xef\xbb\xbf\"}");
  sl__item_free(&it);
  parse_err(" \xef\xbb\xbf{\"type\":\"t\",\"payload\":{}}", "invalid JSON at column 2", NULL);
  /* two bytes of it are not a byte order mark */
  parse_err("\xef\xbb{\"type\":\"t\",\"payload\":{}}", "invalid JSON at column 1: invalid UTF-8", NULL);
}

/* ---- http items at submit ---- */

/* The http payload checks run at submit, with the field named. */
static void test_http_items_at_submit(void) {
  sl_item it;
  size_t len;
  char *line;

  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\","
            "\"headers\":{\"X-Note\":\"a\\r\\nb\"}}}",
            "field \"payload.headers.X-Note\": the value holds a line break (CR or LF) at byte 1", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\","
            "\"headers\":{\"X-Note\":\"a\\u0000\"}}}",
            "field \"payload.headers.X-Note\": the value holds a NUL byte", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\","
            "\"headers\":{\"hOsT\":\"evil\"}}}",
            "field \"payload.headers.hOsT\": hOsT is set by the worker", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\","
            "\"headers\":{\"x-a\":\"1\",\"X-A\":\"2\"}}}",
            "field \"payload.headers.X-A\": given twice (header names compare without case)", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\","
            "\"headers\":{\"Authorization\":\"${env:SLUICE_REDIS}\"}}}",
            "field \"payload.headers.Authorization\": secret SLUICE_REDIS", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\","
            "\"method\":\"GET / HTTP/1.1\\r\\n\"}}",
            "field \"payload.method\"", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\",\"body\":\"a\",\"json\":1}}",
            "give body or json, not both", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\",\"retries\":3}}",
            "field \"payload.retries\": unknown field for an http item", NULL);
  /* inside json, a key twice (by its decoded text) is refused by the strict check */
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\",\"json\":{\"amount\":1,"
            "\"\\u0061mount\":1000}}}", "appears twice in one object", NULL);
  parse_err("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\",\"json\":{\"caf\xc3\xa9\":1,"
            "\"caf\\u00e9\":1000}}}", "appears twice in one object", NULL);

  line = make_line("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\","
                   "\"headers\":{\"X-Big\":\"", 'v', 9000, "\"}}}", &len);
  parse_err_n(line, len, SL_ETOOBIG, "over the limit of 8192", NULL);
  free(line);

  /* accepted: the payload is stored as written, references unresolved */
  parse_ok("{\"type\":\"http\",\"payload\":{\"url\":\"https://api.example.com/\",\"headers\":{\"Authorization\":"
           "\"Bearer ${env:API_TOKEN}\",\"X-Tab\":\"a\\tb\"},\"json\":{\"k\":\"\\u0024{env:API_TOKEN}\"}}}",
           &it);
  CHECK_CONTAINS(it.d, ",\"payload\":{\"url\":\"https://api.example.com/\",\"headers\":{\"Authorization\":"
                       "\"Bearer ${env:API_TOKEN}\",\"X-Tab\":\"a\\tb\"},"
                       "\"json\":{\"k\":\"\\u0024{env:API_TOKEN}\"}}}");
  sl__item_free(&it);
}

/* ---- Regressions: bugs found by these tests, now fixed ---- */

/* An id whose unescaped form passes 4 x SL_ITEM_MAX_ID bytes hits the id
 * buffer's own limit and the message does not name the field. */
static void test_regress_huge_id_message(void) {
  size_t len;
  char *line = make_line("{\"id\":\"", 'i', 600, "\",\"type\":\"t\",\"payload\":{}}", &len);

  parse_err_n(line, len, SL_ETOOBIG, "field \"id\"", NULL);
  free(line);
}

/* A non-integer id whose double rounds to an integer is accepted and
 * silently rewritten (4503599627370497.5 becomes "4503599627370498"). */
static void test_regress_fractional_id_rewritten(void) {
  parse_err("{\"id\":4503599627370497.5,\"type\":\"t\",\"payload\":{}}", "field \"id\"", NULL);
  parse_err("{\"type\":\"t\",\"payload\":{},\"max_attempts\":1.0000000000000001}",
            "field \"max_attempts\"", NULL);
}

static const sl_test tests[] = {
  {"minimal_item", test_minimal_item, 10},
  {"normalized_field_order", test_normalized_field_order, 10},
  {"payload_kept_byte_for_byte", test_payload_kept_byte_for_byte, 10},
  {"payload_nesting_limit", test_payload_nesting_limit, 10},
  {"id_default_line_number", test_id_default_line_number, 10},
  {"id_integer_becomes_string", test_id_integer_becomes_string, 10},
  {"id_string_unescaped", test_id_string_unescaped, 10},
  {"id_length_limit", test_id_length_limit, 10},
  {"id_errors", test_id_errors, 10},
  {"defaults_applied", test_defaults_applied, 10},
  {"defaults_overridden", test_defaults_overridden, 10},
  {"err_invalid_json", test_err_invalid_json, 10},
  {"err_not_object", test_err_not_object, 10},
  {"err_type", test_err_type, 10},
  {"escaped_names", test_escaped_names, 10},
  {"type_length", test_type_length, 10},
  {"err_payload_missing", test_err_payload_missing, 10},
  {"err_payload_too_big", test_err_payload_too_big, 10},
  {"err_line_too_big", test_err_line_too_big, 10},
  {"err_priority", test_err_priority, 10},
  {"err_max_attempts", test_err_max_attempts, 10},
  {"err_timeout_ms", test_err_timeout_ms, 10},
  {"err_unknown_field", test_err_unknown_field, 10},
  {"err_field_twice", test_err_field_twice, 10},
  {"rate_key", test_rate_key, 10},
  {"start_time", test_start_time, 10},
  {"dedupe_key", test_dedupe_key, 10},
  {"err_too_many_fields", test_err_too_many_fields, 10},
  {"sleep_payload", test_sleep_payload, 10},
  {"err_sleep_payload", test_err_sleep_payload, 10},
  {"http_payload", test_http_payload, 10},
  {"err_http_payload", test_err_http_payload, 10},
  {"err_small_buffer", test_err_small_buffer, 10},
  {"prio_parse_and_name", test_prio_parse_and_name, 10},
  {"name_valid", test_name_valid, 10},
  {"rfc3339_known_values", test_rfc3339_known_values, 10},
  {"rfc3339_leap_years", test_rfc3339_leap_years, 10},
  {"rfc3339_month_lengths", test_rfc3339_month_lengths, 10},
  {"rfc3339_years_and_times", test_rfc3339_years_and_times, 10},
  {"rfc3339_offsets", test_rfc3339_offsets, 10},
  {"rfc3339_fractions", test_rfc3339_fractions, 10},
  {"rfc3339_form", test_rfc3339_form, 10},
  {"run_at_why_in_message", test_run_at_why_in_message, 10},
  {"bom", test_bom, 10},
  {"http_items_at_submit", test_http_items_at_submit, 10},
  {"regress_huge_id_message", test_regress_huge_id_message, 10},
  {"regress_fractional_id_rewritten", test_regress_fractional_id_rewritten, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
