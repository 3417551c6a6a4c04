/* Batch id generation; see id.h for the format. */
#include "id.h"

#include <errno.h>
#include <sys/random.h>
#include <time.h>

#include <sluice/sluice.h>

static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int64_t sl__now_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sl__random_bytes(void *buf, size_t n) {
  unsigned char *p = buf;

  while (n > 0) {
    ssize_t r = getrandom(p, n, 0);

    if (r < 0) {
      if (errno == EINTR)
        continue;
      return SL_EIO;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

double sl__random_unit(void) {
  uint64_t r;

  if (sl__random_bytes(&r, sizeof(r)) != 0)
    return 0.5;
  return (double)(r >> 11) / 9007199254740992.0; /* 53 bits: every double in [0, 1) is as likely */
}

int sl__id_new(char out[SL_ID_LEN + 1]) {
  uint64_t t = (uint64_t)sl__now_ms();
  unsigned char r[10];
  uint64_t hi;
  uint64_t lo;

  if (sl__random_bytes(r, sizeof(r)) != 0)
    return SL_EIO;
  for (int i = 9; i >= 0; i--) {
    out[i] = b32[t & 31];
    t >>= 5;
  }
  /* 80 random bits as 16 characters: 40 bits, twice. */
  hi = ((uint64_t)r[0] << 32) | ((uint64_t)r[1] << 24) | ((uint64_t)r[2] << 16) |
       ((uint64_t)r[3] << 8) | r[4];
  lo = ((uint64_t)r[5] << 32) | ((uint64_t)r[6] << 24) | ((uint64_t)r[7] << 16) |
       ((uint64_t)r[8] << 8) | r[9];
  for (int i = 7; i >= 0; i--) {
    out[10 + i] = b32[hi & 31];
    hi >>= 5;
    out[18 + i] = b32[lo & 31];
    lo >>= 5;
  }
  out[SL_ID_LEN] = '\0';
  return 0;
}
