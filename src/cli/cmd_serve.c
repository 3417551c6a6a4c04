/*
 * sluice serve [--listen HOST:PORT] [--tokens FILE] [--queue Q ...]
 *              [--max-body BYTES] [--cors ORIGIN] [--idle-timeout DURATION] [--keepalive DURATION] [--quiet]
 * sluice serve --hash-token < TOKEN
 *
 * (every option, with its default: help.c, `sluice serve --help`)
 *
 * --idle-timeout and --keepalive take durations (30s, 10m, 2h) in whole
 * seconds; a plain number is seconds here, as it always was for them.
 *
 * The HTTP API (sl_serve_run, include/sluice/serve.h; docs/SERVE.md). It
 * runs until SIGTERM or SIGINT and reloads the tokens file on SIGHUP.
 * --queue may be given several times; the first is the default of requests
 * that name none. --hash-token reads a token on standard input and prints
 * the hash its line in the tokens file needs.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/serve.h>

#include "cli.h"

#define MAX_QUEUES 16
#define TOKEN_MAX 4096 /* bytes of a token read by --hash-token */

/* A duration in whole seconds from 1 s to 1 day: "30", "30s", "10m", "2h";
 * -1 after saying what is expected. */
static long long seconds_opt(const char *opt, const char *s) {
  size_t digits = strspn(s, "0123456789");
  long long ms;

  if (digits > 0 && s[digits] == '\0') {
    long long v = cli_parse_int(s, 86400);

    if (v >= 1)
      return v;
  } else if ((ms = cli_parse_duration(s)) >= 1000 && ms <= 86400000 && ms % 1000 == 0) {
    return ms / 1000;
  }
  cli_err("--%s: expected a duration like 30s, 10m, 2h or seconds, from 1s to 1d in whole seconds; got \"%s\"", opt,
          cli_safe(s));
  return -1;
}

static int hash_token(void) {
  char tok[TOKEN_MAX + 2];
  size_t n = fread(tok, 1, sizeof(tok), stdin);
  char hex[65];

  while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r'))
    n--;
  if (n == 0 || n > TOKEN_MAX) {
    cli_err("--hash-token: expected a token of 1-%d bytes on standard input", TOKEN_MAX);
    return EXIT_USAGE;
  }
  if (sl_serve_hash_token(tok, n, hex) != 0) {
    cli_err("--hash-token: cannot hash");
    return EXIT_RUNTIME;
  }
  printf("%s\n", hex);
  return EXIT_OK;
}

int cmd_serve(int argc, char **argv) {
  static const struct option opts[] = {
      {"redis", required_argument, NULL, 'R'},      {"queue", required_argument, NULL, 'Q'},
      {"listen", required_argument, NULL, 'l'},     {"tokens", required_argument, NULL, 't'},
      {"max-body", required_argument, NULL, 'm'},   {"cors", required_argument, NULL, 'c'},
      {"quiet", no_argument, NULL, 'q'},            {"hash-token", no_argument, NULL, 'H'},
      {"idle-timeout", required_argument, NULL, 'i'}, {"keepalive", required_argument, NULL, 'k'},
      {"redis-password-file", required_argument, NULL, 'P'}, {NULL, 0, NULL, 0}};
  cli_common com = {getenv("SLUICE_REDIS"), NULL};
  const char *queues[MAX_QUEUES + 1] = {NULL};
  sl_serve_opts so = {0};
  size_t nq = 0;
  long long v;
  char err[512];
  int ch;

  optind = 1;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'R': com.redis = optarg; break;
    case 'Q':
      if (nq == MAX_QUEUES) {
        cli_err("--queue: at most %d queues", MAX_QUEUES);
        return EXIT_USAGE;
      }
      queues[nq++] = optarg;
      break;
    case 'l': so.listen = optarg; break;
    case 't': so.tokens_file = optarg; break;
    case 'c': so.cors_origin = optarg; break;
    case 'q': so.quiet = 1; break;
    case 'H': return hash_token();
    case 'P': cli_password_file = optarg; break;
    case 'i':
    case 'k':
      if ((v = seconds_opt(ch == 'i' ? "idle-timeout" : "keepalive", optarg)) < 1)
        return EXIT_USAGE;
      if (ch == 'i')
        so.idle_timeout_s = (unsigned)v;
      else
        so.keepalive_s = (unsigned)v;
      break;
    case 'm':
      if ((v = cli_parse_int(optarg, 1LL << 40)) < 1) {
        cli_err("--max-body: expected bytes from 1 to 2^40, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      so.max_body = (size_t)v;
      break;
    default: return cli_usage("serve");
    }
  }
  if (optind != argc)
    return cli_usage("serve");
  so.redis_url = cli_redis_url(&com);
  if (so.redis_url == NULL)
    return EXIT_USAGE;
  so.queues = nq > 0 ? queues : NULL;
  if (sl_serve_run(&so, err, sizeof(err)) != 0) {
    cli_err("%s", err);
    return EXIT_USAGE;
  }
  return EXIT_OK;
}
