/* Worker log lines; one write(2) per line so lines of processes don't mix. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static int log_quiet; /* non-zero: drop everything */

void sl__log_quiet(int quiet) {
  log_quiet = quiet;
}

void sl__log(const char *level, const char *fmt, ...) {
  char line[1024];
  struct timespec ts;
  struct tm tm;
  va_list ap;
  int n;
  int m;

  if (log_quiet)
    return;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld sluice[%d] %s: ", tm.tm_hour, tm.tm_min,
               tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(), level);
  if (n < 0 || (size_t)n >= sizeof(line))
    return;
  va_start(ap, fmt);
  m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0)
    return;
  n += m;
  if ((size_t)n > sizeof(line) - 2)
    n = sizeof(line) - 2;
  line[n++] = '\n';
  if (write(STDERR_FILENO, line, (size_t)n) < 0)
    return;
}

void sl__log_fmt_time(char *buf, size_t len, long long ms) {
  time_t secs = (time_t)(ms / 1000);
  struct tm tm;

  gmtime_r(&secs, &tm);
  snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}
