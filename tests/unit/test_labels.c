/*
 * Unit tests for batch labels (src/labels.c): the canonical form (sorted by
 * key, each key once), every rule of a key and a value with the label named
 * in the message, 16 labels and not 17, the JSON object of the stored form,
 * and the list filter ("key", "key=value", several of them, an empty value)
 * against stored labels and against none. The same rules in lua/submit.lua
 * are checked through real Redis by serve.api (list) and clients.python.
 */
#include <stdio.h>
#include <string.h>

#include <sluice/sluice.h>

#include "buf.h"
#include "harness.h"
#include "labels.h"

/* The canonical form of s, or the error message: in a static buffer. */
static const char *canon(const char *s, int *rc) {
  static char out[4096];
  char err[256] = "";
  sl_buf b;

  sl__buf_init(&b, 4096);
  *rc = sl__labels_canon(s, &b, err, sizeof(err));
  if (*rc == 0)
    snprintf(out, sizeof(out), "%.*s", (int)b.len, b.p ? b.p : "");
  else
    snprintf(out, sizeof(out), "%s", err);
  sl__buf_free(&b);
  return out;
}

static void ok(const char *in, const char *want) {
  int rc;
  const char *got = canon(in, &rc);

  if (rc != 0 || strcmp(got, want) != 0)
    sl_test_fail(__FILE__, __LINE__, "\"%s\": rc %d \"%s\", expected \"%s\"", in, rc, got, want);
}

static void bad(const char *in, const char *msg) {
  int rc;
  const char *got = canon(in, &rc);

  if (rc != SL_EINVAL || strstr(got, msg) == NULL)
    sl_test_fail(__FILE__, __LINE__, "\"%s\": rc %d \"%s\", expected an error with \"%s\"", in, rc, got, msg);
}

static void test_canonical(void) {
  ok("team=ml", "team=ml");
  ok("team=ml,env=prod", "env=prod,team=ml");
  ok("b=1,a=2,c=", "a=2,b=1,c=");
  ok("a.b/c-d_e=x:y@z+1", "a.b/c-d_e=x:y@z+1");
  ok("ab=1,a=2", "a=2,ab=1"); /* a prefix sorts first */
}

static void test_rules(void) {
  char k64[80];
  char many[512] = "";

  bad("team", "label \"team\": expected key=value");
  bad("=ml", "the key must be 1-63 characters");
  bad("bad key=1", "label \"bad key=1\": the key may hold only");
  bad("k=a b", "the value may hold only");
  bad("k=a\"b", "the value may hold only");
  bad("k=a=b", "the value may hold only");
  bad("team=ml,team=web", "label key \"team\" given twice");
  bad("a=1,,b=2", "an empty label");
  bad("a=1,", "an empty label");
  bad(",a=1", "an empty label");
  memset(k64, 'k', 64);
  k64[64] = '\0';
  strcat(k64, "=v");
  bad(k64, "the key must be 1-63 characters");
  k64[63] = '=';
  k64[64] = '\0';
  ok(k64, k64); /* 63 characters: allowed */
  for (int i = 0; i < 16; i++)
    snprintf(many + strlen(many), sizeof(many) - strlen(many), "%sk%02d=v", i ? "," : "", i);
  ok(many, many);
  strcat(many, ",k16=v");
  bad(many, "more than 16 labels");
}

static void test_json(void) {
  sl_buf b;

  sl__buf_init(&b, 4096);
  CHECK_INT(sl__labels_json(&b, "env=prod,team=ml,z="), ==, 0);
  CHECK_INT(sl__buf_putc(&b, '\0'), ==, 0);
  CHECK_STR(b.p, "{\"env\":\"prod\",\"team\":\"ml\",\"z\":\"\"}");
  sl__buf_free(&b);
}

static void test_filter(void) {
  char err[160];

  CHECK(sl__labels_match("env=prod,team=ml", "team=ml"));
  CHECK(sl__labels_match("env=prod,team=ml", "team"));
  CHECK(sl__labels_match("env=prod,team=ml", "team=ml,env=prod"));
  CHECK(sl__labels_match("env=prod,team=ml,z=", "z="));
  CHECK(sl__labels_match("env=prod,team=ml,z=", "z"));
  CHECK(!sl__labels_match("env=prod,team=ml", "team=web"));
  CHECK(!sl__labels_match("env=prod,team=ml", "team=m"));
  CHECK(!sl__labels_match("env=prod,team=ml", "tea"));
  CHECK(!sl__labels_match("env=prod,team=ml", "team=ml,owner"));
  CHECK(!sl__labels_match("env=prod", "env="));
  CHECK(!sl__labels_match(NULL, "env"));
  CHECK_INT(sl__labels_filter_check("team", err, sizeof(err)), ==, 0);
  CHECK_INT(sl__labels_filter_check("team=ml,env", err, sizeof(err)), ==, 0);
  CHECK_INT(sl__labels_filter_check("a,,b", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "an empty label");
  CHECK_INT(sl__labels_filter_check("bad key", err, sizeof(err)), ==, SL_EINVAL);
  CHECK_CONTAINS(err, "the key may hold only");
}

static const sl_test tests[] = {
  {"canonical", test_canonical, 10},
  {"rules", test_rules, 10},
  {"json", test_json, 10},
  {"filter", test_filter, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
