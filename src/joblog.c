/*
 * What an attempt says about itself besides its outcome: its log lines
 * (sl_job_log: a handler's own, an exec child's stderr, an http item's
 * request line) and its metrics (sl_job_metric: "cost" and the like). The
 * log keeps the newest SL_JOB_LOG_LINES lines, SL_JOB_LOG_BYTES in all, in
 * the job (an sl_buf of lines, each ending in a newline); metrics are up
 * to SL_JOB_METRICS named sums. result.c writes both into the results line,
 * job.c into a retried attempt's text for sluice_v1_complete.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sluice/sluice.h>

#include "json.h"
#include "job.h"

/* Drops the oldest line of the log. */
static void log_drop_oldest(sl_job_t *j) {
  char *nl = memchr(j->log.p, '\n', j->log.len);
  size_t n = nl != NULL ? (size_t)(nl - j->log.p) + 1 : j->log.len;

  memmove(j->log.p, j->log.p + n, j->log.len - n);
  j->log.len -= n;
  j->log_lines--;
  j->log_dropped++;
}

SL_EXTERN void sl_job_log(sl_job_t *j, const char *fmt, ...) {
  char line[SL_JOB_LOG_LINE + 1];
  va_list ap;
  size_t n;

  if (j->ended)
    return;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  n = sl__utf8_cut(line, strlen(line));
  line[n] = '\0';
  for (size_t i = 0; i < n; i++) {
    if ((unsigned char)line[i] < 0x20)
      line[i] = ' ';
  }
  while (j->log_lines > 0 && (j->log_lines >= SL_JOB_LOG_LINES || j->log.len + n + 1 > SL_JOB_LOG_BYTES))
    log_drop_oldest(j);
  if (sl__buf_append(&j->log, line, n) != 0 || sl__buf_putc(&j->log, '\n') != 0)
    return; /* out of memory: the line is not kept */
  j->log_lines++;
}

SL_EXTERN int sl_job_metric(sl_job_t *j, const char *name, double value) {
  size_t n = name ? strlen(name) : 0;
  int i;

  if (n == 0 || n > SL_JOB_METRIC_NAME || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
                                               != n || !isfinite(value))
    return SL_EINVAL;
  if (j->ended)
    return 0;
  for (i = 0; i < j->nmetrics && strcmp(j->metric_name[i], name) != 0; i++)
    ;
  if (i == j->nmetrics) {
    if (j->nmetrics == SL_JOB_METRICS)
      return SL_ETOOBIG;
    snprintf(j->metric_name[i], sizeof(j->metric_name[i]), "%s", name);
    j->metric_value[i] = 0;
    j->nmetrics++;
  }
  j->metric_value[i] += value;
  return 0;
}

int sl__job_metrics_json(const sl_job_t *j, sl_buf *out) {
  int rc = 0;

  if (j->nmetrics == 0)
    return 0;
  for (int i = 0; i < j->nmetrics && rc == 0; i++)
    rc = sl__buf_printf(out, "%s\"%s\":%.17g", i ? "," : "{", j->metric_name[i], j->metric_value[i]);
  return rc == 0 ? sl__buf_putc(out, '}') : rc;
}

int sl__job_log_json(const sl_job_t *j, sl_buf *out) {
  const char *p = j->log.p;
  const char *end = j->log.p + j->log.len;
  int rc;

  if (j->log_lines == 0)
    return 0;
  rc = sl__buf_putc(out, '[');
  if (rc == 0 && j->log_dropped > 0)
    rc = sl__buf_printf(out, "\"(%d earlier lines not kept)\",", j->log_dropped);
  while (rc == 0 && p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));

    if (p != j->log.p)
      rc = sl__buf_putc(out, ',');
    if (rc == 0)
      rc = sl__json_put_str(out, p, (size_t)(nl - p));
    p = nl + 1;
  }
  return rc == 0 ? sl__buf_putc(out, ']') : rc;
}
