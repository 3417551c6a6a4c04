/*
 * Unit tests for error codes (src/err.c): every SL_E* code has its own
 * description and its name, and unknown codes get a clear fallback.
 */
#include <string.h>

#include <sluice/sluice.h>

#include "harness.h"

static const struct {
  int code;         /* the SL_E* value */
  const char *name; /* its expected name */
} codes[] = {
  {SL_OK, "SL_OK"},
  {SL_ENOMEM, "SL_ENOMEM"},
  {SL_EINVAL, "SL_EINVAL"},
  {SL_ECONN, "SL_ECONN"},
  {SL_EREDIS, "SL_EREDIS"},
  {SL_ENOTFOUND, "SL_ENOTFOUND"},
  {SL_EEXIST, "SL_EEXIST"},
  {SL_ECANCELED, "SL_ECANCELED"},
  {SL_EPROTO, "SL_EPROTO"},
  {SL_ETOOBIG, "SL_ETOOBIG"},
  {SL_EIO, "SL_EIO"},
  {SL_ETIMEDOUT, "SL_ETIMEDOUT"},
};

#define NCODES (sizeof(codes) / sizeof(codes[0]))

static void test_names(void) {
  for (size_t i = 0; i < NCODES; i++)
    CHECK_STR(sl_err_name(codes[i].code), codes[i].name);
  CHECK_STR(sl_err_name(1), "SL_E?");
  CHECK_STR(sl_err_name(-99), "SL_E?");
}

static void test_descriptions_distinct(void) {
  for (size_t i = 0; i < NCODES; i++) {
    const char *s = sl_strerror(codes[i].code);

    CHECK(s != NULL);
    CHECK(s[0] != '\0');
    CHECK(strstr(s, "unknown") == NULL);
    CHECK(strcmp(s, "invalid sluice error code") != 0);
    for (size_t j = 0; j < i; j++)
      CHECK(strcmp(s, sl_strerror(codes[j].code)) != 0);
  }
  CHECK_STR(sl_strerror(SL_ENOMEM), "out of memory");
  CHECK_STR(sl_strerror(SL_OK), "success");
}

static void test_unknown_code(void) {
  CHECK_STR(sl_strerror(1), "invalid sluice error code");
  CHECK_STR(sl_strerror(-99), "invalid sluice error code");
}

static const sl_test tests[] = {
  {"names", test_names, 10},
  {"descriptions_distinct", test_descriptions_distinct, 10},
  {"unknown_code", test_unknown_code, 10},
  {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  return sl_test_main(argc, argv, tests);
}
