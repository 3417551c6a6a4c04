/*
 * sluice worker [--concurrency N] [--queue Q[,Q...]] [--queue-weights W,...] [--visibility DURATION]
 *               [--max-deliveries N] [--drain-timeout DURATION] [--block-ms DURATION] [--quiet]
 *               [--http-allow ORIGINS] [--http-methods M,...] [--http-version V]
 *               [--secret NAME[@HOST]]... [--exec TYPE[+base64]=COMMAND]... [--exec-env NAME]... [--load-library]
 *               [--http-mock FILE]
 *
 * (every option, with its default: help.c, `sluice worker --help`)
 *
 * Secrets are granted with --secret (repeatable) and $SLUICE_SECRETS
 * ("A,B@api.example.com"); nothing else of the environment reaches an item.
 * An --exec mapping may not take the name of a type the worker serves by
 * itself (builtin_types), nor one mapped before: either would replace a
 * handler without a word.
 *
 * --http-mock FILE answers http items from canned responses instead of the
 * network, for development (the file is read and checked by sl_worker_new:
 * a bad one exits 2 before anything connects).
 *
 * Runs items until SIGINT or SIGTERM (then running items finish within the
 * drain timeout; a second signal exits at once). --dev-crash adds a `crash`
 * item type that kills its own worker: a testing aid for takeover and
 * poison handling, never for production fleets.
 */
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <stdlib.h>

#include "cli.h"

/* The types every worker serves by itself (sluice/worker.h), and `crash`
 * with --dev-crash. */
static const char *const builtin_types[] = {"http", "noop", "sleep", "crash"};

/* 0 when the --exec mappings execs[0..n) each name a type of their own;
 * -1 after saying which does not. */
static int check_exec_types(const char *const *execs, int n, int dev_crash) {
  for (int i = 0; i < n; i++) {
    size_t tl = strcspn(execs[i], "+=");

    for (size_t k = 0; k < sizeof(builtin_types) / sizeof(builtin_types[0]); k++) {
      if (strlen(builtin_types[k]) == tl && strncmp(execs[i], builtin_types[k], tl) == 0 &&
          (dev_crash || strcmp(builtin_types[k], "crash") != 0)) {
        cli_err("--exec %s: \"%s\" is a type every worker serves by itself (http, noop, sleep%s); map the "
                "command to a type of its own, e.g. --exec my-%s=COMMAND",
                cli_safe(execs[i]), builtin_types[k], dev_crash ? ", and crash with --dev-crash" : "",
                builtin_types[k]);
        return -1;
      }
    }
    for (int j = 0; j < i; j++) {
      if (strcspn(execs[j], "+=") == tl && strncmp(execs[i], execs[j], tl) == 0) {
        cli_err("--exec %s: its type is mapped already (--exec %s); give each type one command",
                cli_safe(execs[i]), cli_safe(execs[j]));
        return -1;
      }
    }
  }
  return 0;
}

/* --dev-crash: the item kills its worker (SIGKILL), as a crashing handler
 * would; sluice then treats it as poison after --max-deliveries. */
static void crash_handler(sl_job_t *j, void *ud) {
  (void)j;
  (void)ud;
  raise(SIGKILL);
}

int cmd_worker(int argc, char **argv) {
  static const struct option opts[] = {
      {"redis", required_argument, NULL, 'R'},       {"queue", required_argument, NULL, 'Q'},
      {"concurrency", required_argument, NULL, 'c'}, {"block-ms", required_argument, NULL, 'b'},
      {"quiet", no_argument, NULL, 'q'},             {"visibility", required_argument, NULL, 'v'},
      {"max-deliveries", required_argument, NULL, 'm'}, {"drain-timeout", required_argument, NULL, 'd'},
      {"dev-crash", no_argument, NULL, 'x'},          {"weights", required_argument, NULL, 'w'},
      {"http-allow", required_argument, NULL, 'A'},  {"http-max-body", required_argument, NULL, 'M'},
      {"http-version", required_argument, NULL, 'H'}, {"exec", required_argument, NULL, 'E'},
      {"secret", required_argument, NULL, 'S'},       {"http-methods", required_argument, NULL, 'T'},
      {"load-library", no_argument, NULL, 'L'},      {"redis-password-file", required_argument, NULL, 'P'},
      {"exec-env", required_argument, NULL, 'V'},    {"http-mock", required_argument, NULL, 'K'},
      {"queue-weights", required_argument, NULL, 'W'}, {NULL, 0, NULL, 0}};
  int dev_crash = 0;
  const char *execs[32];
  int nexec = 0;
  const char *grants[256];
  int ngrant = 0;
  const char *exec_env[64];
  int nexec_env = 0;
  cli_common com = {getenv("SLUICE_REDIS"), NULL};
  sl_worker_opts wo = {0};
  sl_worker_t *w;
  char err[512];
  long long v;
  int ch;
  int rc;

  optind = 1;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'R': com.redis = optarg; break;
    case 'Q': com.queue = optarg; break;
    case 'c':
      if ((v = cli_parse_int(optarg, 100000)) < 1) {
        cli_err("--concurrency: expected an integer from 1 to 100000, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      wo.concurrency = (int)v;
      break;
    case 'b':
      if (cli_duration_opt("block-ms", optarg, 1, 60000, &v) != 0)
        return EXIT_USAGE;
      wo.block_ms = (int)v;
      break;
    case 'q': wo.quiet = 1; break;
    case 'v':
      if (cli_duration_opt("visibility", optarg, 100, 86400000, &v) != 0)
        return EXIT_USAGE;
      wo.visibility_ms = v;
      break;
    case 'm':
      if ((v = cli_parse_int(optarg, 1000)) < 2) {
        cli_err("--max-deliveries: expected an integer from 2 to 1000, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      wo.max_deliveries = (int)v;
      break;
    case 'd':
      if (cli_duration_opt("drain-timeout", optarg, 1, 86400000, &v) != 0)
        return EXIT_USAGE;
      wo.drain_timeout_ms = v;
      break;
    case 'x': dev_crash = 1; break;
    case 'w': wo.weights = optarg; break;
    case 'W': wo.queue_weights = optarg; break;
    case 'E':
      if (nexec == (int)(sizeof(execs) / sizeof(execs[0]))) {
        cli_err("--exec: at most %d mappings", nexec);
        return EXIT_USAGE;
      }
      execs[nexec++] = optarg;
      break;
    case 'V':
      if (nexec_env == (int)(sizeof(exec_env) / sizeof(exec_env[0]))) {
        cli_err("--exec-env: at most %d names", nexec_env);
        return EXIT_USAGE;
      }
      exec_env[nexec_env++] = optarg;
      break;
    case 'A':
      if (*optarg == '\0') {
        cli_err("--http-allow: give at least one host (host,*.example.com)");
        return EXIT_USAGE;
      }
      wo.http_allow = optarg;
      break;
    case 'M':
      if ((v = cli_parse_int(optarg, 1LL << 30)) < 1) {
        cli_err("--http-max-body: expected bytes from 1 to 1073741824, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      wo.http_max_body = (size_t)v;
      break;
    case 'H':
      if (strcmp(optarg, "1.1") == 0) {
        wo.http_version = SL_HTTP_1_1;
      } else if (strcmp(optarg, "2") == 0) {
        wo.http_version = SL_HTTP_DEFAULT;
      } else if (strcmp(optarg, "2-prior-knowledge") == 0) {
        wo.http_version = SL_HTTP_2_PRIOR_KNOWLEDGE;
      } else {
        cli_err("--http-version: expected 1.1, 2 or 2-prior-knowledge, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      break;
    case 'S':
      if (ngrant == (int)(sizeof(grants) / sizeof(grants[0]))) {
        cli_err("--secret: at most %d", ngrant);
        return EXIT_USAGE;
      }
      grants[ngrant++] = optarg;
      break;
    case 'T': wo.http_methods = optarg; break;
    case 'K':
      if (*optarg == '\0') {
        cli_err("--http-mock: give the file of canned responses (sluice worker --help)");
        return EXIT_USAGE;
      }
      wo.http_mock = optarg;
      break;
    case 'L': wo.load_library = 1; break;
    case 'P': cli_password_file = optarg; break;
    default: return cli_usage("worker");
    }
  }
  if (optind != argc)
    return cli_usage("worker");
  if (check_exec_types(execs, nexec, dev_crash) != 0)
    return EXIT_USAGE;
  wo.redis_url = cli_redis_url(&com);
  if (wo.redis_url == NULL)
    return EXIT_USAGE;
  wo.queue = com.queue;
  rc = sl_worker_new(&wo, &w, err, sizeof(err));
  if (rc != 0) {
    cli_err("%s", err);
    return rc == SL_EINVAL ? EXIT_USAGE : EXIT_RUNTIME;
  }
  if (dev_crash)
    sl_worker_register(w, "crash", crash_handler, NULL);
  {
    /* Secrets: SLUICE_SECRETS, then each --secret. */
    const char *env = getenv("SLUICE_SECRETS");
    char spec[512];
    const char *p = env != NULL ? env : "";

    while (*p != '\0') {
      size_t len = strcspn(p, ",");

      if (len > 0 && len < sizeof(spec)) {
        memcpy(spec, p, len);
        spec[len] = '\0';
        if (sl_worker_grant(w, spec, err, sizeof(err)) != 0) {
          cli_err("SLUICE_SECRETS: %s", err);
          sl_worker_free(w);
          return EXIT_USAGE;
        }
      } else if (len > 0) {
        cli_err("SLUICE_SECRETS: an entry is longer than %zu bytes", sizeof(spec) - 1);
        sl_worker_free(w);
        return EXIT_USAGE;
      }
      p += len + (p[len] == ',');
    }
    for (int i = 0; i < ngrant; i++) {
      if (sl_worker_grant(w, grants[i], err, sizeof(err)) != 0) {
        cli_err("%s", err);
        sl_worker_free(w);
        return EXIT_USAGE;
      }
    }
  }
  for (int i = 0; i < nexec; i++) {
    if (sl_worker_exec(w, execs[i], err, sizeof(err)) != 0) {
      cli_err("%s", err);
      sl_worker_free(w);
      return EXIT_USAGE;
    }
  }
  for (int i = 0; i < nexec_env; i++) {
    if (sl_worker_exec_env(w, exec_env[i], err, sizeof(err)) != 0) {
      cli_err("%s", err);
      sl_worker_free(w);
      return EXIT_USAGE;
    }
  }
  sl_worker_handle_signals(w);
  rc = sl_worker_run(w);
  sl_worker_free(w);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}
