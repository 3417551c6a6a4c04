/*
 * sluice submit [--priority P] [--max-attempts N] [--timeout DURATION] [--name NAME]
 *               [--backoff DURATION] [--backoff-max DURATION] [--rate-key NAME] [--run-at TIME]
 *               [--delay DURATION] [--retention DURATION] [--dedupe-ttl DURATION] [--webhook URL]
 *               [--idempotency-key KEY] [--idempotency-ttl DURATION] [--label KEY=VALUE]
 *               [--chunk N] [--json] [--wait] [--check] FILE|-
 *
 * (every option, with its default: help.c, `sluice submit --help`)
 *
 * Reads JSON Lines, validates every line before anything is written (errors
 * name the file, line and field; exit 2, nothing enqueued), submits, and
 * prints the batch id alone on stdout. With --idempotency-key, a second
 * submit with the same key within its TTL (default 24 h) writes nothing and
 * prints the first batch's id (exit 0), with a line on stderr that says so
 * and gives that batch's status. With --json the id, the counts and each
 * item skipped as a duplicate, with the batch and index holding its key. With --check it stops after the
 * validation, connects to nothing, and prints the valid items by type and
 * priority (tally.c): exit 0, or 2 with the errors.
 *
 * Lines are read into one buffer of READ_BUF bytes: a line longer than an
 * item may be (SL_ITEM_MAX_LINE) is reported as too long and skipped to its
 * newline, never read whole, so the input can be any size and the memory of
 * the command stays that of the library's batch (see src/collect.c).
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "tally.h"

#define SL_LABELS_ARG_MAX 2100                 /* --label values joined: 16 labels of 127 bytes and commas */
#define MAX_REPORTED 20                        /* invalid lines listed before "... and N more" */
#define LINE_KEEP (SL_ITEM_MAX_LINE + 1)       /* longest line kept whole: an item and a '\r', bytes */
#define READ_BUF (LINE_KEEP + 64 * 1024)       /* the line buffer: a longest line and read-ahead, bytes */

/* Reads lines of a file through one fixed buffer. */
typedef struct line_reader {
  FILE *in;       /* the input */
  char *buf;      /* READ_BUF bytes */
  size_t start;   /* the first byte of the next line in buf */
  size_t scanned; /* bytes from start already known to hold no newline */
  size_t end;     /* the end of the bytes read into buf */
  int eof;        /* the input has no more bytes */
} line_reader;

/*
 * The next line, without its newline. Returns 1 with *line and *len set, 0
 * at the end of the input, -1 on a read error (errno set). A line longer
 * than LINE_KEEP is read past, not kept: then *line is NULL and *len is its
 * length. *line stays valid until the next call.
 */
static int next_line(line_reader *r, const char **line, size_t *len) {
  for (;;) {
    char *nl = memchr(r->buf + r->start + r->scanned, '\n', r->end - r->start - r->scanned);
    size_t n;

    if (nl != NULL) {
      *line = r->buf + r->start;
      *len = (size_t)(nl - *line);
      r->start += *len + 1;
      r->scanned = 0;
      return 1;
    }
    r->scanned = r->end - r->start;
    if (r->end - r->start > LINE_KEEP) {
      /* Too long: count it to its newline through the same buffer. */
      size_t total = r->end - r->start;

      r->start = r->end = r->scanned = 0;
      for (;;) {
        n = fread(r->buf, 1, READ_BUF, r->in);
        if (n == 0) {
          if (ferror(r->in))
            return -1;
          r->eof = 1;
          break;
        }
        nl = memchr(r->buf, '\n', n);
        if (nl != NULL) {
          total += (size_t)(nl - r->buf);
          r->start = (size_t)(nl - r->buf) + 1;
          r->end = n;
          break;
        }
        total += n;
      }
      *line = NULL;
      *len = total;
      return 1;
    }
    if (r->eof) {
      if (r->end == r->start)
        return 0;
      *line = r->buf + r->start; /* the last line has no newline */
      *len = r->end - r->start;
      r->start = r->end;
      r->scanned = 0;
      return 1;
    }
    if (r->start > 0) {
      memmove(r->buf, r->buf + r->start, r->end - r->start);
      r->end -= r->start;
      r->start = 0;
    }
    n = fread(r->buf + r->end, 1, READ_BUF - r->end, r->in);
    if (n == 0) {
      if (ferror(r->in))
        return -1;
      r->eof = 1;
    }
    r->end += n;
  }
}

/* --json: {"batch":ID,"reused":BOOL,"submitted":N,"skipped":M,"skipped_ids":[...],
 * "skipped_in":[{"id":ID,"batch":B,"index":I},...]}, the skipped items in
 * submit order with the item that holds each one's dedupe key. */
static void print_json(const sl_batch_t *b, const char *id) {
  size_t ns = sl_batch_skipped_count(b);
  int reused = sl_batch_reused(b);
  cJSON *o = cJSON_CreateObject();
  cJSON *ids;
  cJSON *in;
  char *t;

  cJSON_AddStringToObject(o, "batch", id);
  cJSON_AddBoolToObject(o, "reused", reused);
  cJSON_AddNumberToObject(o, "submitted", reused ? 0 : (double)(sl_batch_count(b) - ns));
  cJSON_AddNumberToObject(o, "skipped", (double)ns);
  ids = cJSON_AddArrayToObject(o, "skipped_ids");
  in = cJSON_AddArrayToObject(o, "skipped_in");
  for (size_t i = 0; i < ns; i++) {
    const char *holder = sl_batch_skipped_holder(b, i);
    const char *colon = strrchr(holder, ':');
    cJSON *e = cJSON_CreateObject();
    char hb[SL_IDEM_KEY_MAX];

    cJSON_AddItemToArray(ids, cJSON_CreateString(sl_batch_skipped_id(b, i)));
    cJSON_AddStringToObject(e, "id", sl_batch_skipped_id(b, i));
    snprintf(hb, sizeof(hb), "%.*s", colon ? (int)(colon - holder) : 0, holder);
    cJSON_AddStringToObject(e, "batch", hb);
    cJSON_AddNumberToObject(e, "index", colon ? strtod(colon + 1, NULL) : -1);
    cJSON_AddItemToArray(in, e);
  }
  t = cJSON_PrintUnformatted(o);
  printf("%s\n", t ? t : "{}");
  cJSON_free(t);
  cJSON_Delete(o);
}

/* stderr: the idempotency key was taken; the first batch's state. */
static void report_reused(sl_client_t *cl, const char *queue, const char *key, const char *id) {
  char *js = NULL;
  cJSON *st = NULL;

  if (sl_batch_status(cl, queue, id, &js) == 0)
    st = cJSON_Parse(js);
  if (st != NULL) {
    cJSON *s = cJSON_GetObjectItem(st, "status");

    fprintf(stderr,
            "sluice: idempotency key \"%s\" was used by batch %s within its TTL; nothing was submitted. "
            "That batch is %s, %.0f of %.0f items done\n",
            cli_safe(key), id, cJSON_IsString(s) ? cli_safe(s->valuestring) : "?",
            cJSON_GetNumberValue(cJSON_GetObjectItem(st, "done")),
            cJSON_GetNumberValue(cJSON_GetObjectItem(st, "total")));
  } else {
    fprintf(stderr,
            "sluice: idempotency key \"%s\" was used by batch %s within its TTL; nothing was submitted. "
            "That batch's state cannot be read: %s\n",
            cli_safe(key), id, sl_client_errstr(cl));
  }
  cJSON_Delete(st);
  sl_free(js);
}

/* stderr: items skipped as duplicates, and where they are. */
static void report_skipped(const sl_batch_t *b, const char *id) {
  size_t ns = sl_batch_skipped_count(b);

  if (ns == 0)
    return;
  fprintf(stderr, "sluice: %zu of %zu items skipped: their dedupe key was seen in this queue within the dedupe TTL "
                  "(the first is held by item %s)\n",
          ns, sl_batch_count(b), cli_safe(sl_batch_skipped_holder(b, 0)));
  if (ns == sl_batch_count(b))
    fprintf(stderr, "sluice: every item was skipped: batch %s is empty and completed (0 of 0); the items are in the "
                    "batches named by --json (skipped_in)\n",
            id);
}

/* Warns on stderr when no live worker of the queue serves a type of the
 * batch: it was submitted all the same, and waits until one does. Best
 * effort: a failure to ask says nothing. */
static void warn_unserved(sl_client_t *cl, const char *queue, const sl_batch_t *b) {
  const char *types[32];
  size_t n = sl_batch_types(b, types, 32);
  char missing[1024];
  int live = 0;

  if (n == 0 || sl_fleet_unserved(cl, queue, types, n, missing, sizeof(missing), &live) != 0 || missing[0] == '\0')
    return;
  if (live == 0)
    fprintf(stderr, "sluice: warning: no live worker serves queue %s: its items wait until one starts (sluice "
                    "worker --queue %s)\n", queue ? queue : "default", queue ? queue : "default");
  else
    fprintf(stderr, "sluice: warning: no live worker of queue %s serves type%s %s (%d worker%s live): those items "
                    "wait until one that does starts (sluice worker --exec TYPE=COMMAND, or a program that registers "
                    "them)\n", queue ? queue : "default", strchr(missing, ',') ? "s" : "", cli_safe(missing), live,
            live == 1 ? "" : "s");
}

int cmd_submit(int argc, char **argv) {
  static const struct option opts[] = {
      {"redis", required_argument, NULL, 'R'},   {"queue", required_argument, NULL, 'Q'},
      {"priority", required_argument, NULL, 'p'}, {"max-attempts", required_argument, NULL, 'a'},
      {"timeout", required_argument, NULL, 't'}, {"name", required_argument, NULL, 'n'},
      {"wait", no_argument, NULL, 'w'},          {"chunk", required_argument, NULL, 'c'},
      {"backoff", required_argument, NULL, 'b'}, {"backoff-max", required_argument, NULL, 'B'},
      {"rate-key", required_argument, NULL, 'r'},
      {"run-at", required_argument, NULL, 'T'},    {"delay", required_argument, NULL, 'D'},
      {"retention", required_argument, NULL, 'K'},
      {"dedupe-ttl", required_argument, NULL, 'U'}, {"json", no_argument, NULL, 'J'},
      {"webhook", required_argument, NULL, 'W'},       {"redis-password-file", required_argument, NULL, 'P'},
      {"check", no_argument, NULL, 'C'},            {"label", required_argument, NULL, 'l'},
      {"idempotency-key", required_argument, NULL, 'I'}, {"idempotency-ttl", required_argument, NULL, 'L'},
      {NULL, 0, NULL, 0}};
  cli_common com = {getenv("SLUICE_REDIS"), NULL};
  sl_batch_opts bo = {0};
  const char *path;
  FILE *in;
  sl_batch_t *b = NULL;
  sl_client_t *cl = NULL;
  line_reader rd = {0};
  const char *line;
  size_t n;
  int got;
  long lineno = 0;
  long bad = 0;
  int wait = 0;
  int json = 0;
  int check = 0;
  cli_tally *tally = NULL;
  int ch;
  int ret = EXIT_RUNTIME;
  char err[512];
  char *id = NULL;
  long long v;
  char labels[SL_LABELS_ARG_MAX] = "";

  optind = 1;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'R': com.redis = optarg; break;
    case 'Q': com.queue = optarg; break;
    case 'p':
      if (strcmp(optarg, "high") != 0 && strcmp(optarg, "normal") != 0 && strcmp(optarg, "low") != 0) {
        cli_err("--priority: unknown priority \"%s\" (expected high, normal or low)", optarg);
        return EXIT_USAGE;
      }
      bo.priority = optarg;
      break;
    case 'a':
      if ((v = cli_parse_int(optarg, 1000)) < 1) {
        cli_err("--max-attempts: expected an integer from 1 to 1000, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      bo.max_attempts = (int)v;
      break;
    case 't':
      if (cli_duration_opt("timeout", optarg, 1, 86400000, &v) != 0)
        return EXIT_USAGE;
      bo.timeout_ms = v;
      break;
    case 'n': bo.name = optarg; break;
    case 'r': bo.rate_key = optarg; break;
    case 'T': bo.run_at = optarg; break;
    case 'J': json = 1; break;
    case 'W': bo.webhook = optarg; break;
    case 'l': /* repeatable; sl_batch_new checks them */
      if (strlen(labels) + strlen(optarg) + 2 > sizeof(labels)) {
        cli_err("--label: more than %zu bytes of labels", sizeof(labels) - 1);
        return EXIT_USAGE;
      }
      if (labels[0] != '\0')
        strcat(labels, ",");
      strcat(labels, optarg);
      bo.labels = labels;
      break;
    case 'P': cli_password_file = optarg; break;
    case 'I':
      if (optarg[0] == '\0' || strlen(optarg) > SL_IDEM_KEY_MAX) {
        cli_err("--idempotency-key: expected 1-%d bytes, got %zu", SL_IDEM_KEY_MAX, strlen(optarg));
        return EXIT_USAGE;
      }
      bo.idempotency_key = optarg;
      break;
    case 'L':
      if (cli_duration_opt("idempotency-ttl", optarg, 1, CLI_DURATION_MAX_MS, &v) != 0)
        return EXIT_USAGE;
      bo.idempotency_ttl_ms = v;
      break;
    case 'U':
      if (cli_duration_opt("dedupe-ttl", optarg, 1, CLI_DURATION_MAX_MS, &v) != 0)
        return EXIT_USAGE;
      bo.dedupe_ttl_ms = v;
      break;
    case 'D':
      if (cli_duration_opt("delay", optarg, 0, CLI_DURATION_MAX_MS, &v) != 0)
        return EXIT_USAGE;
      bo.delay_ms = v;
      break;
    case 'K':
      if (cli_duration_opt("retention", optarg, 1, CLI_DURATION_MAX_MS, &v) != 0)
        return EXIT_USAGE;
      bo.retention_ms = v;
      break;
    case 'b':
    case 'B':
      /* (an item's own backoff_ms may be 0: a retry at once) */
      if (cli_duration_opt(ch == 'b' ? "backoff" : "backoff-max", optarg, 1, 86400000, &v) != 0)
        return EXIT_USAGE;
      if (ch == 'b')
        bo.backoff_ms = v;
      else
        bo.backoff_max_ms = v;
      break;
    case 'w': wait = 1; break;
    case 'C': check = 1; break;
    case 'c':
      if ((v = cli_parse_int(optarg, 100000)) < 1) {
        cli_err("--chunk: expected items per call from 1 to 100000, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      bo.chunk_items = (size_t)v;
      break;
    default: return cli_usage("submit");
    }
  }
  if (optind != argc - 1)
    return cli_usage("submit");
  path = argv[optind];
  bo.queue = com.queue;
  if (sl_batch_new(&bo, &b, err, sizeof(err)) != 0) {
    cli_err("%s", err);
    return EXIT_USAGE;
  }
  in = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (in == NULL) {
    cli_err("cannot open %s: %m", path);
    sl_batch_free(b);
    return EXIT_USAGE;
  }
  rd.in = in;
  rd.buf = malloc(READ_BUF);
  if (check)
    tally = cli_tally_new();
  if (rd.buf == NULL || (check && tally == NULL)) {
    cli_err("out of memory reading %s", path);
    goto out;
  }
  while ((got = next_line(&rd, &line, &n)) > 0) {
    size_t len = n;
    size_t k = 0;
    int rc;

    lineno++;
    if (line == NULL) {
      if (bad < MAX_REPORTED)
        fprintf(stderr, "sluice: %s:%ld: line is %zu bytes, over the limit of %d\n",
                strcmp(path, "-") == 0 ? "stdin" : path, lineno, n, SL_ITEM_MAX_LINE);
      bad++;
      continue;
    }
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      len--;
    while (k < len && (line[k] == ' ' || line[k] == '\t'))
      k++;
    if (k == len)
      continue; /* blank lines are allowed */
    rc = sl_batch_add(b, line, len, lineno, err, sizeof(err));
    if (rc == SL_ENOMEM) {
      cli_err("out of memory reading %s", path);
      goto out;
    }
    if (rc == SL_EIO) {
      /* the spool could not be written or read: not the line's fault */
      cli_err("%s (at line %ld of %s); nothing was submitted", err, lineno, path);
      goto out;
    }
    if (rc != 0) {
      if (bad < MAX_REPORTED)
        fprintf(stderr, "sluice: %s:%ld: %s\n", strcmp(path, "-") == 0 ? "stdin" : path, lineno, err);
      bad++;
    } else if (tally != NULL) {
      cli_tally_add(tally, line + k, len - k, bo.priority);
    }
  }
  if (got < 0) {
    cli_err("error reading %s: %m", path);
    goto out;
  }
  if (bad > 0) {
    if (bad > MAX_REPORTED)
      cli_err("... and %ld more invalid lines", bad - MAX_REPORTED);
    cli_err("%ld of %ld lines are invalid; nothing was submitted", bad, lineno);
    ret = EXIT_USAGE;
    goto out;
  }
  if (tally != NULL) {
    /* --check: valid; nothing is written, nothing connected to */
    cli_tally_print(tally, stdout);
    ret = EXIT_OK;
    goto out;
  }
  if (sl_batch_count(b) == 0) {
    cli_err("%s has no items; nothing was submitted", path);
    ret = EXIT_USAGE;
    goto out;
  }
  cl = cli_open(&com);
  if (cl == NULL) {
    ret = cli_open_exit();
    goto out;
  }
  if (sl_batch_submit(cl, b, &id) != 0) {
    cli_err("submit failed: %s", sl_client_errstr(cl));
    goto out;
  }
  if (json)
    print_json(b, id);
  else
    printf("%s\n", id);
  if (sl_batch_reused(b))
    report_reused(cl, com.queue, bo.idempotency_key, id);
  else
    report_skipped(b, id);
  if (!sl_batch_reused(b))
    warn_unserved(cl, com.queue, b);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    /* The batch is in Redis: whoever reads stderr must learn its id. */
    cli_err("batch %s was submitted, but its id could not be written to standard output: %s", id, strerror(errno));
    ret = EXIT_RUNTIME;
    goto out;
  }
  ret = wait ? cli_watch_batch(cl, com.queue, id, 0) : EXIT_OK;
out:
  free(rd.buf);
  if (in != stdin)
    fclose(in);
  sl_free(id);
  sl_batch_free(b);
  sl_client_close(cl);
  cli_tally_free(tally);
  return ret;
}
