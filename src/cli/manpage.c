/*
 * The manual page sluice(1), made from the help text itself (help.c): the
 * general usage, every command's help (usage, what it does, its options
 * with their defaults, examples) and the topics, so the page can never say
 * something --help does not. `sluice help --man` prints it in roff; the
 * build writes it to BUILD/sluice.1, which `cmake --install` installs, and
 * tests/install checks that each command's help is in it.
 *
 * The help is preformatted text: it goes into .nf/.fi blocks, with the
 * characters roff would take as its own escaped (a backslash, and a dot or
 * quote at the start of a line).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Writes text as preformatted roff lines. */
static void put_pre(FILE *f, const char *text) {
  int bol = 1;

  fputs(".nf\n", f);
  for (const char *p = text; *p != '\0'; p++) {
    if (bol && (*p == '.' || *p == '\''))
      fputs("\\&", f);
    if (*p == '\\')
      fputs("\\e", f);
    else
      fputc(*p, f);
    bol = *p == '\n';
  }
  if (!bol)
    fputc('\n', f);
  fputs(".fi\n", f);
}

/* What `sluice COMMAND --help` prints, as a string (malloc'd), or NULL. */
static char *help_text(const char *cmd) {
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);

  if (m == NULL)
    return NULL;
  cli_help_to(m, cmd);
  fclose(m);
  return buf;
}

int cli_man(FILE *f) {
  const char *name;
  const char *text;
  char *general = NULL;
  size_t glen = 0;
  FILE *m = open_memstream(&general, &glen);

  if (m == NULL)
    return EXIT_RUNTIME;
  cli_help_general(m);
  fclose(m);
  fprintf(f, ".TH SLUICE 1 \"\" \"sluice %s\" \"User Commands\"\n", SL_VERSION_STRING);
  fputs(".SH NAME\nsluice \\- a distributed job runner on Redis Streams\n", f);
  fputs(".SH SYNOPSIS\n", f);
  put_pre(f, general);
  fputs(".SH DESCRIPTION\n"
        "Producers submit batches of items (JSON Lines) to the streams of a named queue in Redis; any number "
        "of workers, on any machines, run them: HTTP calls, local commands, or handlers of an embedding "
        "program. Failed attempts are retried with backoff, the items of a dead worker are taken over, and "
        "every change of a batch is published, so dashboards follow it live.\n"
        ".PP\n"
        "Every command answers \\fB\\-\\-help\\fR with the text below.\n",
        f);
  fputs(".SH COMMANDS\n", f);
  for (size_t i = 0; (name = cli_help_command(i)) != NULL; i++) {
    char *h = help_text(name);

    fprintf(f, ".SS %s\n", name);
    if (h != NULL)
      put_pre(f, h);
    free(h);
  }
  fputs(".SH TOPICS\n", f);
  for (size_t i = 0; (name = cli_help_topic(i, &text)) != NULL; i++) {
    fprintf(f, ".SS %s\n", name);
    put_pre(f, text);
  }
  fputs(".SH ENVIRONMENT\n"
        ".TP\n.B SLUICE_REDIS\nThe Redis URL when \\fB\\-\\-redis\\fR is not given: "
        "redis://[user[:password]@]host[:port][/db] or unix:///path/to/redis.sock.\n"
        ".TP\n.B SLUICE_REDIS_PASSWORD\nThe Redis password, so that it is in no URL.\n"
        ".SH EXIT STATUS\n0 ok, 1 runtime failure, 2 usage error, 3 (watch, submit \\-\\-wait) the batch ended with "
        "failed items.\n"
        ".SH SEE ALSO\nThe README, docs/PROTOCOL.md and docs/SERVE.md of the sluice sources.\n",
        f);
  free(general);
  return ferror(f) ? EXIT_RUNTIME : EXIT_OK;
}
