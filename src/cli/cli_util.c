/* Helpers shared by the sluice commands. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"

void cli_err(const char *fmt, ...) {
  va_list ap;

  fputs("sluice: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

int cli_parse(int argc, char **argv, cli_common *com, const cli_flag *extra, int nextra) {
  struct option opts[CLI_FLAGS_MAX + 3];
  int k = 0;
  int ch;
  int idx;

  if (nextra < 0 || nextra > CLI_FLAGS_MAX)
    return -1;
  com->redis = getenv("SLUICE_REDIS");
  com->queue = NULL;
  opts[k++] = (struct option){"redis", required_argument, NULL, 'R'};
  opts[k++] = (struct option){"queue", required_argument, NULL, 'Q'};
  opts[k++] = (struct option){"redis-password-file", required_argument, NULL, 'P'};
  for (int i = 0; i < nextra; i++)
    opts[k++] = (struct option){extra[i].name, extra[i].has_arg, NULL, 256 + i};
  opts[k] = (struct option){NULL, 0, NULL, 0};
  optind = 1;
  while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
    if (ch == 'R')
      com->redis = optarg;
    else if (ch == 'P')
      cli_password_file = optarg;
    else if (ch == 'Q')
      com->queue = optarg;
    else if (ch >= 256 && extra[ch - 256].has_arg)
      *extra[ch - 256].arg = optarg;
    else if (ch >= 256)
      *extra[ch - 256].flag = 1;
    else
      return -1;
  }
  return optind;
}

const char *cli_password_file;

/* Reads the first line of the password file into out; -1 after saying why. */
static int read_password(const char *path, char *out, size_t len) {
  FILE *f = fopen(path, "re");
  size_t n;

  if (f == NULL) {
    cli_err("--redis-password-file %s: %s", path, strerror(errno));
    return -1;
  }
  n = fread(out, 1, len - 1, f);
  fclose(f);
  out[n] = '\0';
  out[strcspn(out, "\r\n")] = '\0';
  if (out[0] == '\0') {
    cli_err("--redis-password-file %s: the file is empty", path);
    return -1;
  }
  return 0;
}

/* "scheme://" + "user:" + percent-encoded password + "@" + the rest. */
static const char *with_password(const char *url, const char *pw) {
  static char out[4096];
  const char *rest = strstr(url, "://");
  const char *at;
  size_t k;

  if (rest == NULL)
    return url; /* not a URL: sl_client_open says so */
  rest += 3;
  at = strchr(rest, '@');
  if (at != NULL && memchr(rest, ':', (size_t)(at - rest)) != NULL) {
    cli_err("the Redis URL has a password already; give it there or in the file/environment, not both");
    return NULL;
  }
  k = (size_t)snprintf(out, sizeof(out), "%.*s", (int)(rest - url), url);
  if (at != NULL)
    k += (size_t)snprintf(out + k, sizeof(out) - k, "%.*s", (int)(at - rest), rest); /* the user */
  if (k < sizeof(out))
    out[k++] = ':';
  for (const unsigned char *p = (const unsigned char *)pw; *p && k + 4 < sizeof(out); p++) {
    if (isalnum(*p) || strchr("-._~", *p) != NULL)
      out[k++] = (char)*p;
    else
      k += (size_t)snprintf(out + k, sizeof(out) - k, "%%%02X", *p);
  }
  snprintf(out + k, sizeof(out) - k, "@%s", at != NULL ? at + 1 : rest);
  return out;
}

const char *cli_redis_url(const cli_common *c) {
  if (c->redis != NULL && *c->redis != '\0') {
    /* The password may come from a file or the environment instead of the
     * URL, so that `ps` never shows it. */
    const char *env = getenv("SLUICE_REDIS_PASSWORD");
    static char pw[1024];

    if (cli_password_file != NULL) {
      if (read_password(cli_password_file, pw, sizeof(pw)) != 0)
        return NULL;
      return with_password(c->redis, pw);
    }
    if (env != NULL && *env != '\0')
      return with_password(c->redis, env);
    return c->redis;
  }
  cli_err("no Redis configured: pass --redis URL or set SLUICE_REDIS, e.g.\n"
          "  export SLUICE_REDIS=redis://127.0.0.1:6379   (or unix:///path/to/redis.sock)\n"
          "`sluice demo` runs everything on a private Redis without one.");
  return NULL;
}

static int open_exit = EXIT_RUNTIME; /* exit code after a failed cli_open */

int cli_open_exit(void) {
  return open_exit;
}

sl_client_t *cli_open(const cli_common *c) {
  const char *url = cli_redis_url(c);
  sl_client_t *cl;
  char err[512];
  int rc;

  open_exit = EXIT_USAGE;
  if (url == NULL)
    return NULL;
  rc = sl_client_open(url, &cl, err, sizeof(err));
  if (rc != 0) {
    cli_err("%s", err);
    open_exit = rc == SL_EINVAL ? EXIT_USAGE : EXIT_RUNTIME;
    return NULL;
  }
  return cl;
}

const char *cli_safe(const char *s) {
  static char bufs[4][1024];
  static int next;
  char *out = bufs[next];
  const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
  size_t k = 0;

  next = (next + 1) % 4;
  for (; *p != '\0' && k + 8 < sizeof(bufs[0]); p++) {
    if (*p < 0x20 || *p == 0x7f) {
      k += (size_t)snprintf(out + k, sizeof(bufs[0]) - k, "\\x%02X", *p);
    } else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
      k += (size_t)snprintf(out + k, sizeof(bufs[0]) - k, "\\u%04X", p[1]); /* C1 controls (CSI...) */
      p++;
    } else {
      out[k++] = (char)*p;
    }
  }
  if (*p != '\0' && k + 4 < sizeof(bufs[0])) {
    memcpy(out + k, "...", 3);
    k += 3;
  }
  out[k] = '\0';
  return out;
}

long long cli_parse_duration(const char *s) {
  char *end;
  long long v;
  long long unit = 1;

  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno != 0)
    return -1;
  if (strcmp(end, "s") == 0)
    unit = 1000;
  else if (strcmp(end, "m") == 0)
    unit = 60000;
  else if (strcmp(end, "h") == 0)
    unit = 3600000;
  else if (strcmp(end, "d") == 0)
    unit = 86400000;
  else if (strcmp(end, "ms") != 0 && *end != '\0')
    return -1;
  if (v > CLI_DURATION_MAX_MS / unit)
    return -1;
  return v * unit;
}

/* "250ms", "30s", "1d": ms in the largest unit that divides it. */
static void fmt_bound(long long ms, char *out, size_t len) {
  static const struct {
    long long ms;
    const char *unit;
  } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};

  for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
    if (ms >= units[i].ms && ms % units[i].ms == 0) {
      snprintf(out, len, "%lld%s", ms / units[i].ms, units[i].unit);
      return;
    }
  }
  snprintf(out, len, "%lldms", ms);
}

int cli_duration_opt(const char *opt, const char *s, long long min_ms, long long max_ms, long long *out) {
  long long v = cli_parse_duration(s);
  char lo[32];
  char hi[32];

  if (v >= min_ms && v <= max_ms) {
    *out = v;
    return 0;
  }
  fmt_bound(min_ms, lo, sizeof(lo));
  fmt_bound(max_ms, hi, sizeof(hi));
  cli_err("--%s: expected a duration like 30s, 10m, 2h or milliseconds, from %s to %s; got \"%s\"", opt, lo, hi,
          cli_safe(s));
  return -1;
}

long long cli_parse_int(const char *s, long long max) {
  char *end;
  long long v;

  if (s == NULL || *s == '\0')
    return -1;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0 || v > max)
    return -1;
  return v;
}

void cli_fmt_time(long long ms, char *out, size_t len) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;

  if (ms <= 0) {
    snprintf(out, len, "-");
    return;
  }
  gmtime_r(&t, &tm);
  strftime(out, len, "%Y-%m-%d %H:%M:%SZ", &tm);
}

long long cli_jnum(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
}

const char *cli_jstr(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

  return cJSON_IsString(v) ? v->valuestring : "";
}

void cli_progress(const char *json, size_t len, int final) {
  static long long last_draw_ms;
  static long long first_ms;
  static long long first_done = -1;
  cJSON *j = cJSON_ParseWithLength(json, len);
  const cJSON *st;
  long long total;
  long long done;
  long long now;
  struct timespec ts;
  int tty = isatty(STDERR_FILENO);
  char bar[41];
  int width = 30;
  int fill;
  double rate = 0;

  if (j == NULL)
    return;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  st = cJSON_GetObjectItemCaseSensitive(j, "status");
  total = cli_jnum(j, "total");
  done = cli_jnum(j, "done");
  if (first_done < 0) {
    first_done = done;
    first_ms = now;
  }
  if (now > first_ms && done > first_done)
    rate = (double)(done - first_done) * 1000.0 / (double)(now - first_ms);
  /* A terminal gets a redrawn bar at most 20 times a second; a log one line a second. */
  if (!final && now - last_draw_ms < (tty ? 50 : 1000)) {
    cJSON_Delete(j);
    return;
  }
  last_draw_ms = now;
  fill = total > 0 ? (int)(done * width / total) : 0;
  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[width] = '\0';
  {
    const cJSON *pct = cJSON_GetObjectItemCaseSensitive(j, "pct");
    const cJSON *eta = cJSON_GetObjectItemCaseSensitive(j, "eta_ms");
    char left[48] = "";

    if (cJSON_IsNumber(eta) && !final) {
      memcpy(left, "  ETA ", 7);
      cli_fmt_span((long long)eta->valuedouble, left + 6, sizeof(left) - 6);
    }
    fprintf(stderr, "%s[%s] %5.1f%%  %lld/%lld  ok %lld  failed %lld%s  running %lld  queued %lld  %s  %.0f items/s%s%s",
            tty ? "\r" : "", bar, cJSON_IsNumber(pct) ? pct->valuedouble : 0.0, done, total, cli_jnum(j, "succeeded"),
            cli_jnum(j, "failed"), cli_jnum(j, "cancelled") ? "  cancelled" : "", cli_jnum(j, "running"), cli_jnum(j, "queued"),
            cJSON_IsString(st) ? st->valuestring : "?", rate, left, tty ? "\033[K" : "\n");
  }
  if (final && tty)
    fputc('\n', stderr);
  fflush(stderr);
  cJSON_Delete(j);
}

#define WARN_EVERY_MS 5000 /* the watch looks for stuck work this often */

typedef struct watch_state {
  sl_client_t *cl;      /* the watch's client: reads between events */
  const char *queue;    /* the queue */
  const char *batch;    /* the batch id */
  long long give_up_ms; /* --give-up, ms */
  long long failed;     /* failed items in the last state seen */
  char last[8192];      /* the last state seen */
  size_t lastlen;       /* its length */
  long long warn_ms;    /* when it last looked for stuck work (monotonic ms) */
  char warned[4096];    /* the warnings it printed last */
} watch_state;

/* Every WARN_EVERY_MS while the batch runs: the stuck-work warnings, on
 * stderr, when they differ from the last ones printed. */
static void watch_warnings(watch_state *w, int ended) {
  char now_warn[sizeof(w->warned)];
  struct timespec ts;
  long long now;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  if (ended || now - w->warn_ms < WARN_EVERY_MS)
    return;
  w->warn_ms = now;
  if (cli_stuck_warnings(w->cl, w->queue, w->batch, now_warn, sizeof(now_warn)) != 0 ||
      strcmp(now_warn, w->warned) == 0)
    return;
  if (now_warn[0] != '\0') {
    if (isatty(STDERR_FILENO))
      fputc('\n', stderr); /* off the progress bar's line */
    fputs(now_warn, stderr);
  }
  memcpy(w->warned, now_warn, sizeof(now_warn));
}

static int on_watch(const char *json, size_t len, void *ud) {
  watch_state *w = ud;
  cJSON *j = cJSON_ParseWithLength(json, len);
  int ended = 0;

  if (j != NULL) {
    w->failed = cli_jnum(j, "failed");
    ended = cli_jnum(j, "finished_at") > 0 || (cli_jnum(j, "total") == cli_jnum(j, "done") && cli_jnum(j, "pct") >= 100);
    cJSON_Delete(j);
  }
  if (len < sizeof(w->last)) {
    memcpy(w->last, json, len);
    w->lastlen = len;
  }
  cli_progress(json, len, 0);
  watch_warnings(w, ended);
  return 0;
}

/* Formats ms as "60 s", "2.5 s" or "250 ms"; from 100 s on "4 min 10 s",
 * from 100 min on "3 h 5 min". */
void cli_fmt_span(long long ms, char *out, size_t len) {
  if (ms >= 100LL * 60000)
    snprintf(out, len, "%lld h %lld min", ms / 3600000, ms / 60000 % 60);
  else if (ms >= 100000)
    snprintf(out, len, "%lld min %lld s", ms / 60000, ms / 1000 % 60);
  else if (ms >= 1000 && ms % 1000 == 0)
    snprintf(out, len, "%lld s", ms / 1000);
  else if (ms >= 1000)
    snprintf(out, len, "%.1f s", (double)ms / 1000.0);
  else
    snprintf(out, len, "%lld ms", ms);
}

/* The watch lost Redis, or is back: one line each per outage. */
static void on_link(int up, const char *cause, void *ud) {
  watch_state *w = ud;
  char span[32];

  if (w->lastlen > 0 && isatty(STDERR_FILENO))
    fputc('\n', stderr); /* off the progress bar's line */
  if (up) {
    fprintf(stderr, "sluice: reconnected to Redis; following batch %s again\n", w->batch);
  } else {
    cli_fmt_span(w->give_up_ms, span, sizeof(span));
    fprintf(stderr, "sluice: lost the connection to Redis while watching batch %s (%s); reconnecting, for at most %s "
                    "(--give-up)\n", w->batch, cli_safe(cause), span);
  }
  fflush(stderr);
}

int cli_watch_batch(sl_client_t *cl, const char *queue, const char *batch, long long give_up_ms) {
  watch_state w = {0};
  sl_watch_opts wo = {0};
  int rc;

  w.cl = cl;
  w.queue = queue;
  w.batch = batch;
  w.give_up_ms = give_up_ms > 0 ? give_up_ms : CLI_GIVE_UP_MS;
  wo.give_up_ms = w.give_up_ms;
  wo.on_link = on_link;
  rc = sl_batch_watch_with(cl, queue, batch, &wo, on_watch, &w);
  if (w.lastlen > 0)
    cli_progress(w.last, w.lastlen, 1);
  if (rc == SL_ECONN) {
    cli_err("watching batch %s: %s; gave up (the batch goes on: `sluice watch %s` follows it again)", batch,
            cli_safe(sl_client_errstr(cl)), batch);
    return EXIT_RUNTIME;
  }
  if (rc != 0) {
    cli_err("watching batch %s: %s", batch, cli_safe(sl_client_errstr(cl)));
    return EXIT_RUNTIME;
  }
  return w.failed > 0 ? EXIT_FAILED_ITEMS : EXIT_OK;
}
