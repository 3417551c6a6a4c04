/*
 * The benchmarks' clock: a monotonic time in seconds and a sleep in
 * milliseconds. A signal ends the sleep early; callers check their flag.
 */
#ifndef SL_BENCH_CLOCK_H
#define SL_BENCH_CLOCK_H

#include <time.h>

static inline double now_s(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

  nanosleep(&ts, NULL);
}

#endif
