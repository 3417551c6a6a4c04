/*
 * The batch options of POST /v1/batches, one at a time: from the query
 * arguments of an NDJSON body, or the members of the "options" object of a
 * JSON one (upload.c). The names and ranges are those of `sluice submit`;
 * an unknown name or a value of the wrong type is refused naming
 * "options.NAME", and sl_batch_new checks the rest.
 */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sluice/client.h>

#include "alloc.h"
#include "buf.h"
#include "json.h"
#include "labels.h"
#include "srv.h"

static void set_int(const char *k, int64_t v, sl_batch_opts *o) {
  if (strcmp(k, "max_attempts") == 0)
    o->max_attempts = (int)v;
  else if (strcmp(k, "timeout_ms") == 0)
    o->timeout_ms = v;
  else if (strcmp(k, "backoff_ms") == 0)
    o->backoff_ms = v;
  else if (strcmp(k, "backoff_max_ms") == 0)
    o->backoff_max_ms = v;
  else if (strcmp(k, "delay_ms") == 0)
    o->delay_ms = v;
  else if (strcmp(k, "retention_ms") == 0)
    o->retention_ms = v;
  else if (strcmp(k, "dedupe_ttl_ms") == 0)
    o->dedupe_ttl_ms = v;
  else if (strcmp(k, "idempotency_ttl_ms") == 0)
    o->idempotency_ttl_ms = v;
}

/* "labels": "key=value,..." (a query argument or a JSON string), or a JSON
 * object {"key":"value"}; sl_batch_new checks what they say, after the
 * sizes are checked here. */
static int set_labels(srv_req *req, srv_options *o, const char *sval, const cJSON *jval) {
  sl_buf b;
  char *v;
  int rc = 0;

  if (o->n == sizeof(o->store) / sizeof(o->store[0]))
    return -1;
  sl__buf_init(&b, SL_LABELS_FILTER_MAX);
  if (jval == NULL || cJSON_IsString(jval)) {
    const char *t = jval != NULL ? jval->valuestring : sval != NULL ? sval : "";

    rc = sl__buf_puts(&b, t);
  } else if (cJSON_IsObject(jval)) {
    const cJSON *e;

    cJSON_ArrayForEach(e, jval) {
      if (!cJSON_IsString(e)) {
        sl__buf_free(&b);
        srv_error(req, 400, "invalid_option", "options.labels", 0, "label \"%.63s\": the value must be a string",
                  e->string);
        return -1;
      }
      if (rc == 0)
        rc = sl__buf_printf(&b, "%s%s=%s", b.len ? "," : "", e->string, e->valuestring);
    }
  } else {
    sl__buf_free(&b);
    srv_error(req, 400, "invalid_option", "options.labels", 0,
              "option \"labels\" must be an object of strings or \"key=value,...\"");
    return -1;
  }
  if (rc == 0)
    rc = sl__buf_putc(&b, '\0');
  if (rc != 0) {
    sl__buf_free(&b);
    if (rc != SL_ETOOBIG)
      return -1;
    srv_error(req, 400, "invalid_option", "options.labels", 0,
              "labels over %d bytes: at most 16, each key and value 63 characters at most", SL_LABELS_FILTER_MAX - 1);
    return -1;
  }
  v = sl_strdup(b.p);
  sl__buf_free(&b);
  if (v == NULL)
    return -1;
  o->store[o->n++] = v;
  o->opts.labels = v;
  return 0;
}

int srv_option_set(srv_req *req, srv_options *o, const char *k, const char *sval, const cJSON *jval) {
  static const char *const strs[] = {"name", "priority", "rate_key", "run_at", "webhook", NULL};
  static const char *const ints[] = {"max_attempts", "timeout_ms", "backoff_ms", "backoff_max_ms", "delay_ms",
                                     "retention_ms", "dedupe_ttl_ms", "idempotency_ttl_ms", NULL};
  char field[80];

  snprintf(field, sizeof(field), "options.%s", k);
  if (strcmp(k, "labels") == 0)
    return set_labels(req, o, sval, jval);
  for (int i = 0; strs[i] != NULL; i++) {
    char *v;

    if (strcmp(k, strs[i]) != 0)
      continue;
    if (jval != NULL && !cJSON_IsString(jval)) {
      srv_error(req, 400, "invalid_option", field, 0, "option \"%s\" must be a string", k);
      return -1;
    }
    if (o->n == sizeof(o->store) / sizeof(o->store[0]))
      return -1;
    v = sl_strdup(jval != NULL ? jval->valuestring : sval != NULL ? sval : "");
    if (v == NULL)
      return -1;
    o->store[o->n++] = v;
    if (i == 0)
      o->opts.name = v;
    else if (i == 1)
      o->opts.priority = v;
    else if (i == 2)
      o->opts.rate_key = v;
    else if (i == 3)
      o->opts.run_at = v;
    else
      o->opts.webhook = v;
    return 0;
  }
  for (int i = 0; ints[i] != NULL; i++) {
    int64_t v;

    if (strcmp(k, ints[i]) != 0)
      continue;
    if (jval != NULL) {
      if (!cJSON_IsNumber(jval) || jval->valuedouble != (double)(int64_t)jval->valuedouble ||
          jval->valuedouble < 0 || jval->valuedouble > 31536000000.0) {
        srv_error(req, 400, "invalid_option", field, 0, "option \"%s\" must be an integer from 0 to 31536000000",
                  k);
        return -1;
      }
      v = (int64_t)jval->valuedouble;
    } else if (sval == NULL || sl__json_int(sval, strlen(sval), 0, 31536000000LL, &v) != 0) {
      srv_error(req, 400, "invalid_option", field, 0, "option \"%s\" must be an integer from 0 to 31536000000, got "
                "\"%.40s\"", k, sval);
      return -1;
    }
    set_int(k, v, &o->opts);
    return 0;
  }
  srv_error(req, 400, "unknown_option", field, 0,
            "unknown batch option \"%.40s\" (name, priority, max_attempts, timeout_ms, backoff_ms, backoff_max_ms, "
            "rate_key, run_at, delay_ms, retention_ms, dedupe_ttl_ms, webhook, idempotency_ttl_ms, labels)", k);
  return -1;
}

void srv_options_free(srv_options *o) {
  for (size_t i = 0; i < o->n; i++)
    sl_free(o->store[i]);
  o->n = 0;
}
