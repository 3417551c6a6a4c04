/*
 * sluice demo: the README's first command. Starts a private redis-server
 * (unless --redis or SLUICE_REDIS names one), submits a batch of `sleep`
 * items of all three priorities with a few failing, runs two worker
 * processes, shows the live progress bar, prints a summary and cleans up,
 * also on Ctrl-C.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "devredis.h"

#define DEMO_WORKERS 2

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

static pid_t spawn_worker(const char *url, const char *queue) {
  pid_t pid = fork();

  if (pid == 0) {
    const char *argv[] = {"sluice", "worker", "--redis", url, "--queue", queue, "--concurrency", "40", "--quiet",
                          NULL};

    setpgid(0, 0); /* Ctrl-C reaches the demo only; it stops workers in order */
    signal(SIGINT, SIG_DFL);
    execv("/proc/self/exe", (char *const *)argv);
    _exit(127);
  }
  return pid;
}

static int print_failed(const char *json, size_t len, void *ud) {
  int *n = ud;
  cJSON *j = cJSON_ParseWithLength(json, len);
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");

  if (cJSON_IsString(id) && cJSON_IsString(e) && (*n)++ < 3)
    fprintf(stderr, "  item %-8s %s\n", cli_safe(id->valuestring), cli_safe(e->valuestring));
  cJSON_Delete(j);
  return 0;
}

int cmd_demo(int argc, char **argv) {
  static const char *const prio[3] = {"high", "normal", "low"};
  static const struct option opts[] = {{"redis", required_argument, NULL, 'R'},
                                       {"items", required_argument, NULL, 'n'},
                                       {NULL, 0, NULL, 0}};
  const char *url = getenv("SLUICE_REDIS");
  const char *queue = "demo";
  sl_devredis dr = {0};
  pid_t workers[DEMO_WORKERS] = {0};
  struct sigaction sa;
  sl_client_t *cl = NULL;
  sl_batch_t *b = NULL;
  char *id = NULL;
  char *st = NULL;
  char err[512];
  long long nitems = 300;
  int ret = EXIT_RUNTIME;
  int ch;
  int nfailed = 0;

  optind = 1;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (ch == 'R') {
      url = optarg;
    } else if (ch == 'n') {
      if ((nitems = cli_parse_int(optarg, 1000000)) < 1) {
        cli_err("--items: expected a number from 1 to 1000000, got \"%s\"", cli_safe(optarg));
        return EXIT_USAGE;
      }
    } else {
      return cli_usage("demo");
    }
  }
  if (optind != argc)
    return cli_usage("demo");
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: the watch wakes up */
  sigaction(SIGTERM, &sa, NULL);

  if (url == NULL || *url == '\0') {
    fprintf(stderr, "sluice demo: no Redis configured, starting a private redis-server\n");
    if (sl_devredis_start(&dr, NULL, err, sizeof(err)) != 0) {
      cli_err("%s", err);
      return EXIT_RUNTIME;
    }
    url = dr.url;
    /* the demo is the operator of its private Redis: it loads the library */
    if (sl_library_load(url, err, sizeof(err)) != 0) {
      cli_err("%s", err);
      goto out;
    }
  }
  fprintf(stderr, "sluice demo: Redis at %s, queue \"%s\"\n", url, queue);
  if (sl_client_open(url, &cl, err, sizeof(err)) != 0) {
    cli_err("%s", err);
    goto out;
  }
  {
    sl_batch_opts bo = {.queue = queue, .name = "demo"};

    if (sl_batch_new(&bo, &b, err, sizeof(err)) != 0) {
      cli_err("%s", err);
      goto out;
    }
  }
  srand((unsigned)getpid());
  for (long long i = 0; i < nitems; i++) {
    char line[256];
    int n = snprintf(line, sizeof(line),
                     "{\"id\":\"img-%lld\",\"type\":\"sleep\",\"priority\":\"%s\","
                     "\"payload\":{\"ms\":%d,\"fail_rate\":0.04}}",
                     i + 1, prio[i % 10 == 0 ? 0 : (i % 10 < 7 ? 1 : 2)], 50 + rand() % 350);

    if (sl_batch_add(b, line, (size_t)n, (long)i + 1, err, sizeof(err)) != 0) {
      cli_err("%s", err);
      goto out;
    }
  }
  if (sl_batch_submit(cl, b, &id) != 0) {
    cli_err("submit failed: %s", sl_client_errstr(cl));
    goto out;
  }
  fprintf(stderr, "sluice demo: submitted batch %s: %lld sleep items (50-400 ms, 4%% fail), "
                  "%d workers x 40 slots\n",
          id, nitems, DEMO_WORKERS);
  for (int i = 0; i < DEMO_WORKERS; i++)
    workers[i] = spawn_worker(url, queue);
  ret = cli_watch_batch(cl, queue, id, 0);
  if (interrupted) {
    fprintf(stderr, "\nsluice demo: interrupted; stopping workers and Redis\n");
    ret = 130;
    goto out;
  }
  if (sl_batch_status(cl, queue, id, &st) == 0) {
    cJSON *j = cJSON_Parse(st);

    if (j != NULL) {
      fprintf(stderr, "\nsluice demo: batch %s %s: %d succeeded, %d failed of %d in %.1f s\n", id,
              cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring,
              (int)cJSON_GetObjectItemCaseSensitive(j, "succeeded")->valuedouble,
              (int)cJSON_GetObjectItemCaseSensitive(j, "failed")->valuedouble,
              (int)cJSON_GetObjectItemCaseSensitive(j, "total")->valuedouble,
              cJSON_GetObjectItemCaseSensitive(j, "elapsed_ms")->valuedouble / 1000.0);
      cJSON_Delete(j);
    }
  }
  sl_batch_results(cl, queue, id, SL_RESULTS_FAILED, print_failed, &nfailed);
  if (nfailed > 3)
    fprintf(stderr, "  ... and %d more failed items (each with its error in `sluice results --failed`)\n",
            nfailed - 3);
  fprintf(stderr, "sluice demo: with your own Redis: export SLUICE_REDIS=redis://host:6379, then\n"
                  "  sluice worker &  B=$(sluice submit items.jsonl)  sluice watch $B  sluice results $B\n");
  /* Failed items are part of the demo, not a failure of it. */
  ret = ret == EXIT_FAILED_ITEMS ? EXIT_OK : ret;
out:
  for (int i = 0; i < DEMO_WORKERS; i++) {
    if (workers[i] > 0)
      kill(workers[i], SIGTERM);
  }
  for (int i = 0; i < DEMO_WORKERS; i++) {
    if (workers[i] > 0)
      while (waitpid(workers[i], NULL, 0) < 0 && errno == EINTR)
        ;
  }
  sl_free(st);
  sl_free(id);
  sl_batch_free(b);
  sl_client_close(cl);
  if (dr.pid > 0) {
    sl_devredis_stop(&dr);
    fprintf(stderr, "sluice demo: private Redis stopped and removed\n");
  }
  return ret;
}
