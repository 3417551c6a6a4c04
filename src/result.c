/*
 * The results line of an ended attempt: what `sluice results` prints for an
 * item, built by the worker that ran its last attempt (docs/PROTOCOL.md,
 * section 3). Fields in a fixed order: id, status, attempts, started_at,
 * finished_at, duration_ms, worker, then result or error, refused or
 * encoding when they apply, and the earlier errors (the last ERRORS_KEPT,
 * each cut to ERROR_KEPT_MAX bytes). The line's buffer holds a result of
 * SL_RESULT_MAX bytes plus RESULT_OVERHEAD_MAX for everything else, so
 * only memory can make building one fail: a result that would not fit is
 * refused by the job API before a line is built (job.c).
 */
#include "result.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "alloc.h"
#include "buf.h"
#include "id.h"
#include "json.h"
#include "job.h"
#include "worker.h"

#define ERRORS_KEPT 5       /* earlier errors carried along, the last ones */
#define ERROR_KEPT_MAX 512  /* each of them, bytes */
#define RESULT_OVERHEAD_MAX (64 * 1024) /* a results line beyond its result: fields, errors, bytes */

/* The errors of earlier attempts plus `msg`, the last ERRORS_KEPT, as a JSON
 * array; NULL on OOM. With msg NULL: only the earlier ones. */
char *sl__result_errors(const sl_job_t *j, const char *msg) {
  cJSON *arr = j->errs ? cJSON_Parse(j->errs) : NULL;
  char *out;

  if (!cJSON_IsArray(arr)) {
    cJSON_Delete(arr);
    arr = cJSON_CreateArray();
    if (arr == NULL)
      return NULL;
  }
  if (msg != NULL) {
    char cut[ERROR_KEPT_MAX + 1];

    snprintf(cut, sizeof(cut), "%s", msg);
    cJSON_AddItemToArray(arr, cJSON_CreateString(cut));
  }
  while (cJSON_GetArraySize(arr) > ERRORS_KEPT)
    cJSON_DeleteItemFromArray(arr, 0);
  out = cJSON_PrintUnformatted(arr);
  cJSON_Delete(arr);
  if (out == NULL)
    return NULL;
  {
    char *copy = sl_strdup(out);

    cJSON_free(out);
    return copy;
  }
}

/* The results line of an ended item; NULL on OOM. The buffer holds a result
 * of SL_RESULT_MAX bytes plus everything else a line carries (an error and
 * the earlier ones, escaped), so only memory can make it fail. */
char *sl__result_line(const sl_job_t *j, char outcome, const char *key, const char *val, size_t vlen,
                          size_t *len) {
  sl_worker_t *w = j->w;
  int64_t now = sl__now_ms();
  sl_buf b;
  int rc;

  sl__buf_init(&b, SL_RESULT_MAX + RESULT_OVERHEAD_MAX);
  rc = sl__buf_puts(&b, "{\"id\":");
  if (rc == 0 && j->id_tok != NULL)
    rc = sl__buf_append(&b, j->id_tok, j->id_toklen);
  else if (rc == 0)
    rc = sl__json_put_str(&b, j->idx, strlen(j->idx));
  if (rc == 0)
    rc = sl__buf_printf(&b,
                        ",\"status\":\"%s\",\"attempts\":%d,\"started_at\":%lld,\"finished_at\":%lld,"
                        "\"duration_ms\":%lld,\"worker\":",
                        outcome == 's' ? "succeeded" : "failed", j->attempt, (long long)j->started_at,
                        (long long)now, (long long)(now - j->started_at));
  if (rc == 0)
    rc = sl__json_put_str(&b, w->id, strlen(w->id));
  if (rc == 0 && j->nmetrics > 0) {
    /* before the result, near the start, where sluice_v1_complete looks for it */
    rc = sl__buf_puts(&b, ",\"metrics\":");
    if (rc == 0)
      rc = sl__job_metrics_json(j, &b);
  }
  if (rc == 0)
    rc = sl__buf_printf(&b, ",\"%s\":", key);
  if (rc == 0)
    rc = sl__buf_append(&b, val, vlen);
  if (rc == 0 && outcome == 'x')
    rc = sl__buf_puts(&b, ",\"refused\":true");
  if (rc == 0 && j->encoding != NULL)
    rc = sl__buf_printf(&b, ",\"encoding\":\"%s\"", j->encoding);
  if (rc == 0 && j->errs != NULL && j->attempt > 1) {
    char *earlier = sl__result_errors(j, NULL);

    rc = earlier ? sl__buf_printf(&b, ",\"errors\":%s", earlier) : SL_ENOMEM;
    sl_free(earlier);
  }
  if (rc == 0 && j->log_lines > 0) {
    rc = sl__buf_puts(&b, ",\"log\":");
    if (rc == 0)
      rc = sl__job_log_json(j, &b);
  }
  if (rc == 0)
    rc = sl__buf_putc(&b, '}');
  if (rc != 0) {
    sl__buf_free(&b);
    return NULL;
  }
  *len = b.len;
  return sl__buf_take(&b);
}

/* "431,203": n with thousands separators, into out. */
const char *sl__grouped(size_t n, char *out, size_t len) {
  char digits[32];
  int nd = snprintf(digits, sizeof(digits), "%zu", n);
  size_t k = 0;

  for (int i = 0; i < nd && k + 2 < len; i++) {
    if (i > 0 && (nd - i) % 3 == 0)
      out[k++] = ',';
    out[k++] = digits[i];
  }
  out[k] = '\0';
  return out;
}

size_t sl__base64_encode(const unsigned char *src, size_t n, char *out) {
  static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  size_t i = 0;

  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];

    out[o++] = digits[v >> 18];
    out[o++] = digits[(v >> 12) & 63];
    out[o++] = digits[(v >> 6) & 63];
    out[o++] = digits[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)src[i] << 16 | (i + 1 < n ? (uint32_t)src[i + 1] << 8 : 0);

    out[o++] = digits[v >> 18];
    out[o++] = digits[(v >> 12) & 63];
    out[o++] = i + 1 < n ? digits[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  return o;
}
