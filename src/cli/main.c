/*
 * sluice: the command line. Each command lives in cmd_*.c and uses only the
 * public API of libsluice (include/sluice/sluice.h); every help text lives
 * in help.c. `sluice COMMAND --help` (or -h) is answered here, before the
 * command parses its arguments, so it works alike for every command
 * (cli_help_asked: not after "--", not as an option's value).
 *
 * SIGPIPE is ignored: a Redis connection that closes under a write, or a
 * reader of the output that went away (`sluice results B | head`), is an
 * error with its cause (EPIPE), reported and exited 1, never a silent death
 * with status 141. Children (redis-server for the demo, exec items of a
 * worker) get the default disposition back.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The command's exit code, made 1 when its output could not be written
 * (and said so, when the command itself thought all went well). */
static int finish(int ret) {
  int err = fflush(stdout) != 0 ? errno : 0;

  if ((err != 0 || ferror(stdout)) && ret == EXIT_OK) {
    cli_err("cannot write to standard output: %s", err != 0 ? strerror(err) : "write error");
    ret = EXIT_RUNTIME;
  }
  return ret;
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    int (*fn)(int, char **);
  } cmds[] = {
      {"submit", cmd_submit},   {"worker", cmd_worker},   {"status", cmd_status},
      {"watch", cmd_watch},     {"results", cmd_results}, {"batches", cmd_batches},
      {"cancel", cmd_cancel},   {"demo", cmd_demo},       {"retry", cmd_retry},
      {"pause", cmd_pause},     {"resume", cmd_resume},
      {"dead", cmd_dead},       {"workers", cmd_workers}, {"limit", cmd_limit},     {"stats", cmd_stats},
      {"library", cmd_library}, {"repair", cmd_repair},   {"serve", cmd_serve},     {"log", cmd_log},
      {"item", cmd_item},
  };

  static char prog[64]; /* "sluice submit": getopt's messages name the command */

  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    cli_help_general(stderr);
    return EXIT_USAGE;
  }
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    cli_help_general(stdout);
    return finish(EXIT_OK);
  }
  if (cli_help_asked(argv[1], argc - 1, argv + 1))
    return finish(cli_help(argv[1]));
  if (strcmp(argv[1], "help") == 0)
    return finish(cmd_help(argc - 1, argv + 1));
  if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
    if (argc > 2)
      return cli_usage("version");
    printf("sluice %s\n", SL_VERSION_STRING);
    return finish(EXIT_OK);
  }
  for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
    if (strcmp(argv[1], cmds[i].name) == 0) {
      snprintf(prog, sizeof(prog), "sluice %s", cmds[i].name);
      argv[1] = prog;
      return finish(cmds[i].fn(argc - 1, argv + 1));
    }
  }
  cli_err("unknown command \"%s\" (sluice --help lists them)", cli_safe(argv[1]));
  return EXIT_USAGE;
}
