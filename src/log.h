/* Log lines on stderr: "HH:MM:SS.mmm sluice[PID] LEVEL: message". */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stddef.h>

void sl__log_quiet(int quiet);
void sl__log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define sl__log_info(...) sl__log("info", __VA_ARGS__)
#define sl__log_warn(...) sl__log("warn", __VA_ARGS__)
#define sl__log_error(...) sl__log("error", __VA_ARGS__)
/* Writes the time ms (since the epoch) as RFC 3339 UTC with milliseconds,
 * "2026-12-02T03:04:05.678Z", into buf (at least 32 bytes). */
void sl__log_fmt_time(char *buf, size_t len, long long ms);

#endif
