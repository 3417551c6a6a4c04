/*
 * Unit tests for the Standard Webhooks signing of completion webhooks
 * (src/webhook.c): which SLUICE_WEBHOOK_SECRET values are accepted and the
 * keys they stand for, every rejected form with a message that names the
 * variable and never quotes the secret, and signatures checked against
 * values computed by the standardwebhooks npm package (1.1.1) and by
 * Python's hmac module for the same key, id, timestamp and body.
 * (tests/integration/test_http.c verifies real deliveries with the package.)
 */
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "harness.h"
#include "webhook.h"

/* ---- Helpers ---- */

/* Parses a secret that must be accepted; returns the key length. */
static size_t parse_ok(const char *secret, unsigned char *key) {
  char err[512] = "";
  size_t len = 0;
  int rc = sl__webhook_key_parse(secret, key, &len, err, sizeof(err));

  if (rc != 0)
    sl_test_fail(__FILE__, __LINE__, "sl__webhook_key_parse(\"%s\") = %d (%s)", secret, rc, err);
  return len;
}

/* Parses a secret that must be rejected: SL_EINVAL, the key and its length
 * untouched, a message naming the variable and the form, without the part
 * of the secret after whsec_ (when there is more than a few characters). */
static void parse_bad(const char *secret, const char *why) {
  unsigned char key[SL_WEBHOOK_KEY_MAX];
  unsigned char zero[SL_WEBHOOK_KEY_MAX];
  char err[512] = "";
  size_t len = 12345;
  const char *tail = strncmp(secret, "whsec_", 6) == 0 ? secret + 6 : secret;
  int rc;

  memset(key, 0, sizeof(key));
  memset(zero, 0, sizeof(zero));
  rc = sl__webhook_key_parse(secret, key, &len, err, sizeof(err));
  if (rc != SL_EINVAL)
    sl_test_fail(__FILE__, __LINE__, "sl__webhook_key_parse(\"%s\") = %d, expected SL_EINVAL", secret, rc);
  CHECK_INT(len, ==, 12345);
  CHECK(memcmp(key, zero, sizeof(key)) == 0);
  CHECK_CONTAINS(err, "SLUICE_WEBHOOK_SECRET");
  CHECK_CONTAINS(err, "whsec_");
  CHECK_CONTAINS(err, why);
  if (strlen(tail) >= 6 && strstr(err, tail) != NULL)
    sl_test_fail(__FILE__, __LINE__, "the message quotes the secret: %s", err);
  printf("    %s\n", err);
}

/* "whsec_" + n times quad + tail, in buf. */
static void repeat_secret(char *buf, size_t len, const char *quad, int n, const char *tail) {
  size_t k = (size_t)snprintf(buf, len, "whsec_");

  for (int i = 0; i < n && k < len; i++)
    k += (size_t)snprintf(buf + k, len - k, "%s", quad);
  if (k < len)
    snprintf(buf + k, len - k, "%s", tail);
  CHECK(strlen(buf) == 6 + 4 * (size_t)n + strlen(tail));
}

/* ---- Accepted secrets ---- */

/* 32 bytes 0x00..0x1f, padded: the key is those bytes. */
static void test_key_32_padded(void) {
  unsigned char key[SL_WEBHOOK_KEY_MAX];

  CHECK_INT(parse_ok("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", key), ==, 32);
  for (int i = 0; i < 32; i++)
    CHECK_INT(key[i], ==, i);
}

/* 24 bytes (the least) need no padding; 25 bytes with and without their
 * "==" give the same key (the npm and Python libraries accept both). */
static void test_key_sizes_and_padding(void) {
  unsigned char key[SL_WEBHOOK_KEY_MAX];
  unsigned char again[SL_WEBHOOK_KEY_MAX];

  CHECK_INT(parse_ok("whsec_q6urq6urq6urq6urq6urq6urq6urq6ur", key), ==, 24);
  for (int i = 0; i < 24; i++)
    CHECK_INT(key[i], ==, 0xab);
  CHECK_INT(parse_ok("whsec_zc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3NzQ==", key), ==, 25);
  CHECK_INT(parse_ok("whsec_zc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3NzQ", again), ==, 25);
  CHECK(memcmp(key, again, 25) == 0);
  for (int i = 0; i < 25; i++)
    CHECK_INT(key[i], ==, 0xcd);
  /* 26 bytes: one '=' of padding, or none */
  CHECK_INT(parse_ok("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", key), ==, 25);
  CHECK_INT(parse_ok("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", key), ==, 26);
  CHECK_INT(parse_ok("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", key), ==, 26);
}

/* 64 bytes (512 bits) is the most. */
static void test_key_64(void) {
  unsigned char key[SL_WEBHOOK_KEY_MAX];
  char secret[128];

  /* 64 bytes of 0xff: 21 quads "////" (63 bytes) and "/w==" */
  repeat_secret(secret, sizeof(secret), "////", 21, "/w==");
  CHECK_INT(parse_ok(secret, key), ==, 64);
  for (int i = 0; i < 64; i++)
    CHECK_INT(key[i], ==, 0xff);
}

/* ---- Rejected secrets ---- */

static void test_bad_prefix(void) {
  parse_bad("hook-secret", "does not begin with whsec_");
  parse_bad("", "is set but empty");
  parse_bad("WHSEC_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "does not begin with whsec_");
  parse_bad("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "does not begin with whsec_");
}

static void test_bad_base64(void) {
  /* URL-safe base64, a space or a newline at the end (the '=' before it is
   * then inside), '=' inside, too many '=' */
  parse_bad("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh-_", "character 43 is not");
  parse_bad("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= ", "character 44 is not");
  parse_bad("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "character 44 is not");
  parse_bad("whsec_AAEC=wQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "character 5 is not");
  parse_bad("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8===", "character 44 is not");
  /* a length no bytes have, and padding that does not match */
  parse_bad("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "cannot be whole bytes");
  parse_bad("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "cannot be whole bytes");
}

static void test_bad_size(void) {
  char secret[128];

  parse_bad("whsec_", "0 bytes, fewer than 24");
  parse_bad("whsec_abc", "2 bytes, fewer than 24");
  parse_bad("whsec_aG9vay1zZWNyZXQ=", "11 bytes, fewer than 24");
  /* 23 bytes: one short */
  parse_bad("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "23 bytes, fewer than 24");
  /* 65 bytes: one too many */
  repeat_secret(secret, sizeof(secret), "AAAA", 21, "AAA=");
  parse_bad(secret, "65 bytes, more than 64");
}

/* ---- Signatures ---- */

/* The same key, id, timestamp and body as the npm package's Webhook.sign()
 * and Python's hmac.new(key, "ID.TS.BODY", sha256) gave (a UTF-8 body, as
 * a batch name may have). */
static void test_sign_vector(void) {
  unsigned char key[SL_WEBHOOK_KEY_MAX];
  size_t len = parse_ok("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", key);
  char sig[SL_WEBHOOK_SIG_SIZE];

  CHECK_INT(sl__webhook_sign(key, len, "msg_01JD3Q8Z5MK7Q2T9W4XR1B6C8D_1_37a8eec1", 1700000000,
                             "{\"event\":\"batch.ended\",\"name\":\"caf\xc3\xa9\"}", sig, sizeof(sig)),
            ==, 0);
  CHECK_STR(sig, "v1,RMRuLdfXl4vrvcReOcEoRtE0+8tZTBnm4H67kbxWvtI=");
  CHECK_INT(strlen(sig), ==, SL_WEBHOOK_SIG_SIZE - 1);
  /* the worked example of README and docs/PROTOCOL.md */
  CHECK_INT(sl__webhook_sign(key, len, "msg_01M82V6CT35ZN7M8CKX99HZ318_1_7505d64a", 1795391954,
                             "{\"event\":\"batch.ended\",\"queue\":\"default\",\"batch\":\"01M82V6CT35ZN7M8CKX99HZ318\","
                             "\"name\":\"nightly\",\"status\":\"completed\",\"total\":30,\"done\":30,\"succeeded\":30,"
                             "\"failed\":0,\"cancelled\":0,\"created_at\":1795391950000,\"finished_at\":1795391954210,"
                             "\"ts\":1795391954300}",
                             sig, sizeof(sig)),
            ==, 0);
  CHECK_STR(sig, "v1,NmkN8UYc4Ai7EkaNRbAfPeo6nKx1vfl2InKaGs8Z1mk=");
  /* timestamp 0, a 25-byte key given unpadded */
  len = parse_ok("whsec_zc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3NzQ", key);
  CHECK_INT(sl__webhook_sign(key, len, "m", 0, "x", sig, sizeof(sig)), ==, 0);
  CHECK_STR(sig, "v1,TN0liMTd4ZsPNXIwaUjyuVO3CCPxW0zwx7z2TcZjYoY=");
}

/* Every part is signed: another id, timestamp or body, another signature. */
static void test_sign_covers_all(void) {
  unsigned char key[SL_WEBHOOK_KEY_MAX];
  size_t len = parse_ok("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", key);
  char a[SL_WEBHOOK_SIG_SIZE];
  char b[SL_WEBHOOK_SIG_SIZE];

  CHECK_INT(sl__webhook_sign(key, len, "msg_A_1_00000000", 1700000000, "{}", a, sizeof(a)), ==, 0);
  CHECK_INT(sl__webhook_sign(key, len, "msg_A_2_00000000", 1700000000, "{}", b, sizeof(b)), ==, 0);
  CHECK(strcmp(a, b) != 0);
  CHECK_INT(sl__webhook_sign(key, len, "msg_A_1_00000000", 1700000001, "{}", b, sizeof(b)), ==, 0);
  CHECK(strcmp(a, b) != 0);
  CHECK_INT(sl__webhook_sign(key, len, "msg_A_1_00000000", 1700000000, "{ }", b, sizeof(b)), ==, 0);
  CHECK(strcmp(a, b) != 0);
  CHECK_INT(sl__webhook_sign(key, len, "msg_A_1_00000000", 1700000000, "{}", b, sizeof(b)), ==, 0);
  CHECK_STR(a, b);
}

/* A buffer too small is refused untouched; a failed allocation is SL_ENOMEM. */
static void test_sign_errors(void) {
  unsigned char key[SL_WEBHOOK_KEY_MAX];
  size_t len = parse_ok("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", key);
  char sig[SL_WEBHOOK_SIG_SIZE];

  memset(sig, 'z', sizeof(sig));
  CHECK_INT(sl__webhook_sign(key, len, "m", 1, "x", sig, sizeof(sig) - 1), ==, SL_EINVAL);
  CHECK_INT(sig[0], ==, 'z');
  sl__alloc_fail_after(0);
  CHECK_INT(sl__webhook_sign(key, len, "m", 1, "x", sig, sizeof(sig)), ==, SL_ENOMEM);
  sl__alloc_fail_after(-1);
  CHECK_INT(sig[0], ==, 'z');
  CHECK_INT(sl__webhook_sign(key, len, "m", 1, "x", sig, sizeof(sig)), ==, 0);
}

static const sl_test tests[] = {
    {"key_32_padded", test_key_32_padded, 10},
    {"key_sizes_and_padding", test_key_sizes_and_padding, 10},
    {"key_64", test_key_64, 10},
    {"bad_prefix", test_bad_prefix, 10},
    {"bad_base64", test_bad_base64, 10},
    {"bad_size", test_bad_size, 10},
    {"sign_vector", test_sign_vector, 10},
    {"sign_covers_all", test_sign_covers_all, 10},
    {"sign_errors", test_sign_errors, 10},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
