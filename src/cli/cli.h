/* The sluice command line: shared helpers of the src/cli/cmd_*.c commands. */
#ifndef SL_CLI_H
#define SL_CLI_H

#include <stdio.h>

#include <cjson/cJSON.h>
#include <sluice/sluice.h>

/* Exit codes (DESIGN: Command line). */
#define EXIT_OK 0
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_FAILED_ITEMS 3

/* Options every command takes. */
typedef struct cli_common {
  const char *redis; /* --redis, else $SLUICE_REDIS; NULL when neither */
  const char *queue; /* --queue, else "default" */
} cli_common;

/* A command's own flag, for cli_parse. */
typedef struct cli_flag {
  const char *name; /* long option, without the dashes */
  int has_arg;      /* 0 or 1 */
  int *flag;        /* set to 1 (no argument) */
  const char **arg; /* set to the value (with argument) */
} cli_flag;

#define CLI_FLAGS_MAX 12 /* flags of one command, besides --redis and --queue */

/* Parses --redis, --queue and the flags in extra[0..nextra) (at most
 * CLI_FLAGS_MAX); returns the index of the first positional argument, or -1
 * after a usage error (getopt has said which). */
int cli_parse(int argc, char **argv, cli_common *com, const cli_flag *extra, int nextra);

/* Prints "sluice: <message>" on stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* --redis-password-file, or NULL (set by cli_parse and the commands with
 * their own option tables). */
extern const char *cli_password_file;
/* Resolves the Redis URL; NULL (after explaining how to set one) if none.
 * A password from --redis-password-file or $SLUICE_REDIS_PASSWORD is put
 * into a URL that has none. */
const char *cli_redis_url(const cli_common *c);
/* Opens a client or explains why not; NULL on failure, and then
 * cli_open_exit() is the exit code to use (2 for a missing or bad URL). */
sl_client_t *cli_open(const cli_common *c);
int cli_open_exit(void);
/* s with control bytes (C0, DEL and C1) written as \xNN / \uNNNN, so a name
 * or an error from Redis can never drive the terminal; cut at about 1000
 * bytes. The result lives until the fourth call after this one. */
const char *cli_safe(const char *s);
/* Parses a duration: plain ms, or N followed by s, m, h or d; -1 when invalid. */
long long cli_parse_duration(const char *s);
#define CLI_DURATION_MAX_MS (366LL * 86400000) /* the longest duration cli_parse_duration gives, ms */
/* The value of a time option --opt: a duration (cli_parse_duration) from
 * min_ms to max_ms into *out; -1 after saying "--opt: expected a duration
 * like 30s, 10m, 2h or milliseconds ..." (the caller exits EXIT_USAGE). */
int cli_duration_opt(const char *opt, const char *s, long long min_ms, long long max_ms, long long *out);
/* Parses a non-negative integer option value; -1 when invalid. */
long long cli_parse_int(const char *s, long long max);
/* Formats ms since the epoch as "2026-11-22 10:00:01Z" ("-" for 0). */
void cli_fmt_time(long long ms, char *out, size_t len);
/* A span of ms for people: "250 ms", "2.5 s", "4 min 10 s", "3 h 5 min". */
void cli_fmt_span(long long ms, char *out, size_t len);
/* Draws a progress line for a status/event JSON object on stderr. */
void cli_progress(const char *json, size_t len, int final);
/* A member of a JSON object: a number (0 when absent or not a number), a
 * string ("" likewise). */
long long cli_jnum(const cJSON *j, const char *k);
const char *cli_jstr(const cJSON *j, const char *k);

int cmd_submit(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_results(int argc, char **argv);
int cmd_batches(int argc, char **argv);
int cmd_log(int argc, char **argv);
int cmd_item(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_pause(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_retry(int argc, char **argv);
int cmd_dead(int argc, char **argv);
int cmd_workers(int argc, char **argv);
int cmd_limit(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_library(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_repair(int argc, char **argv);
int cmd_help(int argc, char **argv);

/* ---- help.c: every help text ---- */

/* The general usage (sluice --help) on f. */
void cli_help_general(FILE *f);
/* 1 when the arguments of cmd (argv[0] is the command) ask for its help:
 * --help or -h before any "--", and not the value of an option that takes
 * one; 0 otherwise, also when cmd has no help. */
int cli_help_asked(const char *cmd, int argc, char **argv);
/* Prints cmd's help (usage, every option with its default, an example) on
 * stdout; returns EXIT_OK (EXIT_USAGE when cmd has none). */
int cli_help(const char *cmd);
/* The same on f. */
int cli_help_to(FILE *f, const char *cmd);
/* The i-th command that has help, or NULL past the last. */
const char *cli_help_command(size_t i);
/* The i-th help topic's name (and its text in *text), or NULL past the last. */
const char *cli_help_topic(size_t i, const char **text);
/* The manual page sluice(1), in roff, from the same text as --help
 * (src/cli/manpage.c): `sluice help --man`. */
int cli_man(FILE *f);
/* After a usage error: cmd's usage lines on stderr, and where to read
 * more; returns EXIT_USAGE. */
int cli_usage(const char *cmd);

/* Follows a batch with a progress bar; returns the exit code (0, 1 or 3).
 * A lost connection is reconnected, and said so on stderr once per outage,
 * for at most give_up_ms (0: CLI_GIVE_UP_MS). */
#define CLI_GIVE_UP_MS 60000 /* watch's --give-up default, ms */
/* The stuck-work warnings of a batch (src/cli/warn.c), one line each
 * ("warning    ..."), into out ("" when none): 0, or -1 when they could not
 * be read. */
/* status --items (src/cli/status_items.c): the exit code. */
int cli_status_items(sl_client_t *cl, const char *queue, const char *batch, const char *state, const char *limit_s,
                     int json);
int cli_stuck_warnings(sl_client_t *cl, const char *queue, const char *batch, char *out, size_t len);
int cli_watch_batch(sl_client_t *cl, const char *queue, const char *batch, long long give_up_ms);

#endif
