/*
 * The registry of built-in handlers; see builtins.h. The only file that
 * names them: a worker reaches each through the const table below.
 */
#include "builtins.h"

#include <stdio.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "handlers/dev.h"
#include "handlers/exec.h"
#include "handlers/http.h"

enum { DEV, HTTP, EXEC, NBUILTINS };

static const sl_handler_vt *const table[NBUILTINS] = {&sl__handler_dev, &sl__handler_http, &sl__handler_exec};

struct sl_builtins {
  void *state[NBUILTINS]; /* each handler's state */
  int opened;             /* handlers opened (a prefix of the table) */
};

int sl__builtins_open(const sl_handler_env *env, sl_builtins **out, char *err, size_t errlen) {
  sl_builtins *b = sl_calloc(1, sizeof(*b));

  if (b == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  for (int i = 0; i < NBUILTINS; i++) {
    int rc = table[i]->open(env, &b->state[i], err, errlen);

    if (rc != 0) {
      sl__builtins_free(b);
      return rc;
    }
    b->opened = i + 1;
  }
  *out = b;
  return 0;
}

int sl__builtins_start(sl_builtins *b, uv_loop_t *loop, char *err, size_t errlen) {
  for (int i = 0; i < b->opened; i++) {
    if (table[i]->start != NULL) {
      int rc = table[i]->start(b->state[i], loop, err, errlen);

      if (rc != 0)
        return rc;
    }
  }
  return 0;
}

void sl__builtins_close(sl_builtins *b) {
  for (int i = 0; b != NULL && i < b->opened; i++) {
    if (table[i]->close != NULL)
      table[i]->close(b->state[i]);
  }
}

void sl__builtins_kill_now(sl_builtins *b) {
  for (int i = 0; b != NULL && i < b->opened; i++) {
    if (table[i]->kill_now != NULL)
      table[i]->kill_now(b->state[i]);
  }
}

void sl__builtins_free(sl_builtins *b) {
  if (b == NULL)
    return;
  for (int i = b->opened - 1; i >= 0; i--)
    table[i]->free(b->state[i]);
  sl_free(b);
}

int sl__builtins_exec_map(sl_builtins *b, const char *mapping, char *err, size_t errlen) {
  return sl__exec_map(b->state[EXEC], mapping, err, errlen);
}

int sl__builtins_exec_env(sl_builtins *b, const char *name, char *err, size_t errlen) {
  return sl__exec_env(b->state[EXEC], name, err, errlen);
}

int sl__builtins_grant(sl_builtins *b, const char *spec, char *err, size_t errlen) {
  return sl__http_grant(b->state[HTTP], spec, err, errlen);
}
