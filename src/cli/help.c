/*
 * The help of the sluice command line, all of it in one place: the general
 * usage (`sluice --help`), one entry per command (`sluice COMMAND --help`,
 * also `-h`) and the topics of `sluice help TOPIC` (items, limits,
 * exit-codes).
 *
 * A command's entry holds its usage lines, what it does, every option with
 * its default, and an example. The entry is also what the command line
 * knows about its options outside their parsers: main() asks
 * cli_help_asked() whether `--help` or `-h` is among a command's arguments
 * before the command parses anything (so it works the same for the
 * getopt_long tables of submit, worker, serve and demo and for cli_parse),
 * and an argument that follows an option taking a value is that value,
 * never a request for help. An option takes a value when its line in the
 * entry names one: "  --timeout DURATION  ..." does, "  --json  ..." does
 * not. tests/docs/cli_help.py holds the entries to the parsers (every
 * option a command accepts is in its help, with or without a value as the
 * parser takes it) and to the README (every option it shows for a command
 * is in that command's help). The usage errors of the commands print the
 * usage lines of their entry (cli_usage()).
 *
 * Option lines: two spaces, the option, its value's name if it takes one,
 * the description from column 31 (on the next line when the option is
 * longer); each says its default.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* Which of the options every command takes a command's entry lists. */
#define HELP_REDIS 1 /* --redis URL and --redis-password-file FILE */
#define HELP_QUEUE 2 /* --queue NAME */

/* One command's help. */
typedef struct help_entry {
  const char *cmd;     /* the command, as typed after `sluice` */
  const char *usage;   /* its usage lines, each "sluice CMD ...\n" */
  const char *about;   /* what it does, a paragraph or two */
  const char *options; /* its own option lines, or NULL */
  int common;          /* HELP_REDIS | HELP_QUEUE: the shared options it takes */
  const char *example; /* one example or more, a line each */
} help_entry;

/* ---- The general usage ---- */

static const char general[] =
    "usage: sluice COMMAND [options]\n"
    "       sluice COMMAND --help      every option of COMMAND with its default, and an example\n"
    "       sluice help TOPIC          items, limits or exit-codes\n"
    "\n"
    "Batches:\n"
    "  submit [opts] FILE|-        submit a batch of JSON Lines items, print its id (--check: only validate)\n"
    "         --priority P --max-attempts N --timeout DURATION --name NAME --wait --json\n"
    "         --backoff DURATION --backoff-max DURATION   (retry delay: full jitter up to min(max, b * 2^n))\n"
    "         --rate-key NAME      (the items' limit, see `sluice help limits`)\n"
    "         --run-at RFC3339 | --delay DURATION   start the items later\n"
    "         --retention DURATION (7d) --dedupe-ttl DURATION (1d)\n"
    "         --idempotency-key KEY --idempotency-ttl DURATION (1d)   submit once per KEY\n"
    "         --webhook URL        POST the batch's summary there when it ends (Standard Webhooks)\n"
    "         --label KEY=VALUE    (repeatable, or comma-separated: up to 16) find it with `batches --label`\n"
    "  status BATCH [--json]       counters, where the items are, ETA, stuck work; --items: by id\n"
    "  watch BATCH [--give-up DURATION]   live progress until the batch ends (exit 3: items failed)\n"
    "  results BATCH [--failed]    one JSON line per finished item\n"
    "  log BATCH [--item ID] [--follow] [--json]   what happened to the batch and its items, when, by whom\n"
    "  item BATCH ID [--json]      one item's story: each attempt, its worker, times, outcome and error\n"
    "  batches [--status S] [--name NAME] [--label K[=V],...] [--limit N] [--after BATCH] [--json]\n"
    "                              the queue's batches, newest first, a page at a time\n"
    "  cancel [--abort] BATCH      no item of the batch starts any more (--abort: stop running ones too)\n"
    "  pause BATCH | resume BATCH  hold the batch's items (running ones finish), then continue\n"
    "  retry BATCH                 run the failed items of a batch again (attempts start at 1)\n"
    "  repair [BATCH]              after Redis lost data: put back or end the items that are nowhere\n"
    "\n"
    "The fleet:\n"
    "  worker [opts]               run items: --concurrency N --visibility DURATION --max-deliveries N\n"
    "                              --drain-timeout DURATION --block-ms DURATION --weights 6,3,1 --quiet\n"
    "                              --http-allow ORIGINS --http-max-body BYTES --http-methods M,M\n"
    "                              --http-version 1.1|2|2-prior-knowledge --secret NAME[@HOST]\n"
    "                              --exec TYPE=COMMAND --exec-env NAME --load-library --http-mock FILE\n"
    "  serve [opts]                the HTTP API: --listen HOST:PORT --tokens FILE --queue Q (repeatable)\n"
    "                              --max-body BYTES --cors ORIGIN --idle-timeout DURATION\n"
    "                              --keepalive DURATION --quiet; --hash-token\n"
    "  workers [--json]            live workers: id, host, pid, queue, running, last beat\n"
    "  stats [--json]              the queue: queued and running by priority, delayed, dead, throughput\n"
    "  dead list [--limit N] [--json]   dead letters (items that failed for good), newest first\n"
    "  dead requeue ID...|--all|--limit N   run the items of dead letters again (--limit: oldest N)\n"
    "  dead purge                  delete every dead letter; failed results stay\n"
    "  limit set NAME [RATE] [--burst N] [--concurrency N] [--default] | ls [--json] | rm NAME\n"
    "                              fleet-wide rate and concurrency limits (RATE: 50/s, 3000/m, 10000/h)\n"
    "  library load | check        load this build's function library (operators only), or check it\n"
    "  demo [--items N]            submit and run a batch on a private Redis\n"
    "  version                     this build's version\n"
    "\n"
    "Every command but demo and version takes --redis URL (or $SLUICE_REDIS) and --queue NAME\n"
    "(default: default); the password may come from --redis-password-file FILE or\n"
    "$SLUICE_REDIS_PASSWORD instead. URLs: redis://[user:password@]host[:port][/db], unix:///path/redis.sock,\n"
    "redis+cluster://[user:password@]host:port[,host:port...] (a Redis Cluster: any of its nodes)\n"
    "Durations: 30s, 10m, 2h, 7d, or milliseconds (sluice serve: seconds).\n"
    "Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 batch ended with failed items\n"
    "(sluice help exit-codes).\n";

/* ---- The options every command takes ---- */

static const char common_redis[] =
    "  --redis URL                 the Redis (default: $SLUICE_REDIS):\n"
    "                              redis://[user[:password]@]host[:port][/db], unix:///path/to/redis.sock\n"
    "                              or redis+cluster://host:port[,host:port...] (a Redis Cluster)\n"
    "  --redis-password-file FILE  the Redis password, the file's first line, so that `ps` never shows it\n"
    "                              (default: $SLUICE_REDIS_PASSWORD, else the URL's)\n";

static const char common_queue[] =
    "  --queue NAME                the queue (default: default)\n";

/* ---- The commands ---- */

static const help_entry entries[] = {
    {"submit",
     "sluice submit [options] FILE|-\n"
     "sluice submit --check [options] FILE|-\n",
     "Reads JSON Lines items (one object per line, `-`: standard input; `sluice help items` has\n"
     "every field), validates every line before anything is written (errors name the file, line\n"
     "and field: exit 2, nothing submitted), submits the batch and prints its id alone on stdout.\n"
     "The options give batch-wide defaults for items that give none of their own. Durations are\n"
     "30s, 10m, 2h, 7d or milliseconds.",
     "  --priority P                high, normal or low (default: normal)\n"
     "  --max-attempts N            attempts per item, 1 to 1000 (default: 1)\n"
     "  --timeout DURATION          one attempt's limit, 1 ms to 1d (default: 30s)\n"
     "  --backoff DURATION          the first retry's delay, 1 ms to 1d (default: 1s); full jitter\n"
     "  --backoff-max DURATION      the longest retry delay, 1 ms to 1d (default: 60s)\n"
     "  --rate-key NAME             the items' rate or concurrency limit (default: none, or the\n"
     "                              queue's default limit; see `sluice help limits`)\n"
     "  --run-at TIME               start the items not before TIME, RFC 3339 with Z or an offset\n"
     "                              (default: at once)\n"
     "  --delay DURATION            start the items that long after the submit (default: 0)\n"
     "  --name NAME                 the batch's name, for `batches --name` (default: none)\n"
     "  --label KEY=VALUE           a label, for `batches --label`; repeatable or comma-separated, up to 16\n"
     "                              (default: none)\n"
     "  --retention DURATION        keep the ended batch and its results that long (default: 7d)\n"
     "  --dedupe-ttl DURATION       an item's dedupe key skips later items with it that long (default: 1d)\n"
     "  --idempotency-key KEY       1-256 bytes: a second submit with KEY within its TTL writes nothing and\n"
     "                              prints the first batch's id (default: none)\n"
     "  --idempotency-ttl DURATION  how long KEY is remembered (default: 1d)\n"
     "  --webhook URL               POST the batch's summary to URL (http or https) when it ends\n"
     "                              (default: none; the workers send it, signed with SLUICE_WEBHOOK_SECRET)\n"
     "  --json                      print {\"batch\",\"reused\",\"submitted\",\"skipped\",\"skipped_ids\",\n"
     "                              \"skipped_in\"} instead of the bare id (default: the bare id)\n"
     "  --wait                      then follow the batch to its end like `sluice watch` (exit 3 when\n"
     "                              items failed) (default: return at once)\n"
     "  --check                     validate only: print the valid items by type and priority, or the\n"
     "                              errors (exit 2); connects to nothing, writes nothing (default: submit)\n"
     "  --chunk N                   items per call to Redis, 1 to 100000 (default: 1000; a chunk also\n"
     "                              closes at 8 MiB)\n",
     HELP_REDIS | HELP_QUEUE,
     "B=$(sluice submit --name nightly --max-attempts 3 --timeout 30m --label team=ml items.jsonl)\n"
     "sluice submit --check items.jsonl\n"},
    {"worker",
     "sluice worker [options]\n",
     "Runs the queue's items until SIGINT or SIGTERM: items not started go back at once, running\n"
     "ones finish within --drain-timeout; a second signal exits at once. --queue a,b,c serves\n"
     "several queues in one process: one loop and one --concurrency, shared by --queue-weights;\n"
     "each queue keeps its own claims, heartbeats and takeover. Every worker serves the types\n"
     "http, noop and sleep; --exec maps more types to commands. $SLUICE_WEBHOOK_SECRET\n"
     "(whsec_...) signs completion webhooks; $SLUICE_SECRETS (A,B@HOST) grants like --secret.",
     "  --concurrency N             items run at once, 1 to 100000 (default: 10); about 3 file\n"
     "                              descriptors per slot\n"
     "  --visibility DURATION       a worker whose heartbeats stop this long loses its items to the\n"
     "                              others; 100 ms to 1d (default: 30s)\n"
     "  --max-deliveries N          an item delivered this often without an outcome is failed as\n"
     "                              poison; 2 to 1000 (default: 5)\n"
     "  --drain-timeout DURATION    on SIGTERM, wait this long for running items, then give them back;\n"
     "                              1 ms to 1d (default: 30s)\n"
     "  --block-ms DURATION         an idle worker's blocking read, 1 ms to 60s (default: 1000 ms)\n"
     "  --weights H,N,L             share of fetches per priority, e.g. 6,3,1 (default: strict priority)\n"
     "  --queue-weights W,W,...     with --queue a,b,c: each queue's share of the slots while several\n"
     "                              have work, 1 to 1000 each, e.g. 3,2,1 (default: 1 each)\n"
     "  --http-allow ORIGINS        origins http items and webhooks may call, [SCHEME://]HOST[:PORT],...\n"
     "                              (default: any origin; use it in production)\n"
     "  --http-max-body BYTES       response body kept per http item, 1 to 1073741824 (default: 1048576)\n"
     "  --http-methods M,M          methods allowed besides GET, HEAD, POST, PUT, PATCH, DELETE and\n"
     "                              OPTIONS (default: none)\n"
     "  --http-version V            1.1, 2 or 2-prior-knowledge (default: 2: HTTP/2 offered to https)\n"
     "  --secret NAME[@HOST]        grant ${env:NAME} to http items (to HOST only); repeatable\n"
     "                              (default: none, and the entries of $SLUICE_SECRETS)\n"
     "  --exec TYPE=COMMAND         items of TYPE run /bin/sh -c COMMAND; TYPE+base64=COMMAND keeps binary\n"
     "                              stdout; repeatable, at most 32; not http, noop or sleep (default: none)\n"
     "  --exec-env NAME             pass $NAME on to exec commands; repeatable, at most 64 (default: none)\n"
     "  --load-library              load this build's function library first, an operator's act\n"
     "                              (default: only check it)\n"
     "  --http-mock FILE            development: answer http items from the canned responses in FILE,\n"
     "                              {\"responses\":[{\"method\",\"url\" (* globs),\"status\",\"headers\",\"body\",\n"
     "                              \"latency_ms\",\"fail_rate\",\"fail_status\"},...]}, first match wins; nothing is\n"
     "                              sent, no secret resolved, --http-allow not applied; results say \"mock\":true\n"
     "                              (default: off: real requests; the format: README \"Mock mode\")\n"
     "  --quiet                     no log lines on stderr (default: log)\n"
     "  --dev-crash                 serve a `crash` type that kills its worker: a testing aid for\n"
     "                              takeovers and poison, never for production (default: off)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice worker --concurrency 50 --visibility 60s --http-allow api.example.com --exec resize=./resize.sh\n"
     "sluice worker --http-mock dev/mocks.json   # run the real item files without API keys\n"
     "sluice worker --queue emails,reports --queue-weights 3,1\n"},
    {"serve",
     "sluice serve [options]\n"
     "sluice serve --hash-token < TOKEN\n",
     "The HTTP API (docs/SERVE.md): submit, list, read, control and follow batches over HTTP.\n"
     "Runs until SIGTERM or SIGINT; SIGHUP reads the tokens file again. Durations are 30s, 10m,\n"
     "2h or seconds.",
     "  --listen HOST:PORT          the address (default: 127.0.0.1:8080); a non-loopback one needs --tokens\n"
     "  --tokens FILE               TENANT ROLE HASH lines (default: none: anyone who reaches the port\n"
     "                              may do anything, so loopback only)\n"
     "  --queue NAME                a queue served; repeatable, the first is the default (default: default)\n"
     "  --max-body BYTES            the largest request body (default: 67108864)\n"
     "  --cors ORIGIN               answer CORS requests of ORIGIN (default: no CORS headers)\n"
     "  --idle-timeout DURATION     close a connection idle or stalled that long, 1 s to 1d (default: 30s)\n"
     "  --keepalive DURATION        a comment line on each event stream that often, 1 s to 1d\n"
     "                              (default: 15s)\n"
     "  --quiet                     no log lines (default: log)\n"
     "  --hash-token                read a token on standard input, print the hash its line in the\n"
     "                              tokens file needs, and exit (default: serve)\n",
     HELP_REDIS,
     "printf %s \"$TOKEN\" | sluice serve --hash-token\n"
     "sluice serve --queue default --tokens tokens.txt --listen 0.0.0.0:8080\n"},
    {"status",
     "sluice status BATCH [--json]\n"
     "       sluice status BATCH --items [--state STATE] [--limit N] [--json]\n",
     "The batch's counters, percent done, where its unfinished items are (queued, scheduled,\n"
     "waiting, running, retrying, paused), the recent rate and time left, metric sums, timings,\n"
     "and warnings about stuck work: an item type no live worker serves, items held by a worker\n"
     "that stopped heartbeating. With --items: the unfinished items by id and state.",
     "  --json                      one JSON object (with --items: one per item) (default: lines)\n"
     "  --items                     list the unfinished items: id, state, attempt, and the worker\n"
     "                              and start of running ones (default: the batch's state)\n"
     "  --state STATE               with --items: only running, waiting, retrying, scheduled,\n"
     "                              paused or queued items (default: every state)\n"
     "  --limit N                   with --items: list at most N items, 1 to 1000000 (default: 1000)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice status 01JD5ZK3M4N6P8Q9R0S1T2V3W4 --json\n"
     "sluice status $B --items --state running\n"},
    {"watch",
     "sluice watch BATCH [--give-up DURATION]\n",
     "A live progress bar on stderr until the batch ends: exit 0, or 3 when items failed. A lost\n"
     "connection to Redis is said once and reconnected.",
     "  --give-up DURATION          without Redis this long, exit 1 (default: 60s)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice watch $B --give-up 5m\n"},
    {"results",
     "sluice results BATCH [--failed]\n",
     "One JSON line per ended item, in index order: id, status, attempts, started_at,\n"
     "finished_at, duration_ms, worker, and result or error.",
     "  --failed                    only the failed items (default: every ended item)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice results $B --failed | head\n"},
    {"log",
     "sluice log BATCH [--item ID] [--follow] [--json]\n",
     "What happened to the batch and its items, when and by whom, oldest first: submit, start,\n"
     "pause and resume, takeovers, retries, timeouts, dead letters, cancel, the end.",
     "  --item ID                   only the entries of item ID (default: every entry)\n"
     "  --follow                    then print new entries as they come, until the batch ends\n"
     "                              (default: print what is there and exit)\n"
     "  --json                      one JSON object per entry (default: one line per entry)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice log $B --item row-17\n"},
    {"item",
     "sluice item BATCH ID [--json]\n",
     "One item's story: each attempt with its worker, start, end, outcome and error, then its\n"
     "result. ID is the item's id, or #N for the item at index N (from 0).",
     "  --json                      one JSON object (default: lines)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice item $B row-17\n"},
    {"batches",
     "sluice batches [--status S] [--name NAME] [--label KEY[=VALUE],...] [--limit N] [--after BATCH] [--json]\n",
     "The queue's batches, newest first, one line each (batches older than 90 days are\n"
     "forgotten). A full page says on stderr how to get the next one.",
     "  --status S                  only batches in status S: submitting, queued, running, paused,\n"
     "                              completed or cancelled (default: any)\n"
     "  --name NAME                 only batches of that name (default: any)\n"
     "  --label KEY[=VALUE],...     only batches with every one of these labels (default: any)\n"
     "  --limit N                   at most N batches, a page (default: 0, all)\n"
     "  --after BATCH               the page after BATCH, the last of the previous page (default: from\n"
     "                              the newest)\n"
     "  --json                      one JSON object per batch (default: a table)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice batches --status running --label team=ml --limit 50\n"},
    {"cancel",
     "sluice cancel [--abort] BATCH\n",
     "No item of the batch starts any more: parked and scheduled items end as cancelled at once,\n"
     "queued ones when a worker meets them; running items finish. A batch that has completed, or\n"
     "was cancelled and has ended, has nothing to cancel: exit 1. A second cancel of a batch not\n"
     "ended yet finishes what an interrupted first one left.",
     "  --abort                     also stop the running items, at their workers' next heartbeat;\n"
     "                              works on a batch cancelled before without it (default: they finish)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice cancel --abort $B\n"},
    {"pause",
     "sluice pause BATCH\n",
     "Running items finish; the batch's other items wait (parked) until `sluice resume`. Only a\n"
     "submitting, queued or running batch can be paused: otherwise exit 1.",
     NULL,
     HELP_REDIS | HELP_QUEUE,
     "sluice pause $B\n"},
    {"resume",
     "sluice resume BATCH\n",
     "Puts a paused batch's waiting items back at the end of their streams; they run again. A\n"
     "batch that has completed or was cancelled has nothing to resume: exit 1. Of a batch that is\n"
     "not paused (running, queued) it says so, and puts back what an interrupted resume left parked.",
     NULL,
     HELP_REDIS | HELP_QUEUE,
     "sluice resume $B\n"},
    {"retry",
     "sluice retry BATCH\n",
     "Runs the failed items of the batch again, from attempt 1, and removes their dead letters;\n"
     "a completed batch runs again. Refused for a cancelled batch.",
     NULL,
     HELP_REDIS | HELP_QUEUE,
     "sluice retry $B\n"},
    {"repair",
     "sluice repair [BATCH]\n",
     "After Redis lost data (a rollback, a failover, a deletion by hand): puts back stream entries\n"
     "no worker would read again and ends the items that are nowhere as failed (lost), so that the\n"
     "batch can end. Without BATCH, every unfinished batch of the queue. Run it as the worker user.",
     NULL,
     HELP_REDIS | HELP_QUEUE,
     "sluice repair $B\n"},
    {"dead",
     "sluice dead list [--limit N] [--json]\n"
     "sluice dead requeue ID... | --all | --limit N\n"
     "sluice dead purge\n",
     "Dead letters: items that failed for good, newest first (about the newest 100,000 are kept).\n"
     "`requeue` runs the items of the letters again (IDs are the letters' ids, from `dead list`);\n"
     "`purge` deletes every letter, while the failed results stay.",
     "  --limit N                   list: at most N letters (default: 0, all); requeue: the oldest N\n"
     "  --json                      list: one JSON object per letter (default: a table)\n"
     "  --all                       requeue: every letter (default: the IDs given)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice dead list --limit 20\n"
     "sluice dead requeue --all\n"},
    {"workers",
     "sluice workers [--json]\n",
     "The queue's live workers: id, host, pid, queue, running/concurrency, last heartbeat.",
     "  --json                      one JSON object per worker (default: a table)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice workers --json\n"},
    {"stats",
     "sluice stats [--json]\n",
     "The queue at a glance: queued and running items per priority, delayed, parked, dead\n"
     "letters, live workers, items ended in the last minute, the limits and the default rate key.",
     "  --json                      one JSON object (default: lines)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice stats --queue default\n"},
    {"limit",
     "sluice limit set NAME [RATE] [--burst N] [--concurrency N] [--default]\n"
     "sluice limit ls [--json]\n"
     "sluice limit rm NAME\n",
     "Fleet-wide limits of the queue's items whose rate_key is NAME (`sluice help limits`): RATE\n"
     "is 50/s, 3000/m or 10000/h; give RATE, --concurrency or both. `rm` removes the limit (and\n"
     "the queue's default, when it named NAME).",
     "  --burst N                   set: starts allowed at once, 1 to 1000000 (default: 1)\n"
     "  --concurrency N             set: items of NAME running at once, 1 to 1000000 (default: no limit)\n"
     "  --default                   set: items without a rate_key run under NAME too (default: only\n"
     "                              items that name it)\n"
     "  --json                      ls: one JSON object per limit (default: a table)\n",
     HELP_REDIS | HELP_QUEUE,
     "sluice limit set openai 50/s --burst 10\n"
     "sluice limit set gpu --concurrency 4\n"},
    {"library",
     "sluice library load\n"
     "sluice library check\n",
     "The function library is code every worker of every queue on the Redis runs: `load` puts this\n"
     "build's there (an operator's act: FUNCTION LOAD), `check` prints the version this build needs\n"
     "and exits 1 when another one is loaded.",
     NULL,
     HELP_REDIS | HELP_QUEUE,
     "sluice library load --redis redis://127.0.0.1:6379\n"},
    {"demo",
     "sluice demo [--items N] [--redis URL]\n",
     "Starts a private redis-server on a unix socket, submits sleep items of all three priorities\n"
     "(some fail on purpose), runs two workers, shows the progress bar and a summary, and removes\n"
     "everything again, also on Ctrl-C (exit 130).",
     "  --items N                   items to submit, 1 to 1000000 (default: 300)\n"
     "  --redis URL                 use this Redis instead, its queue `demo` (default: $SLUICE_REDIS, else\n"
     "                              a private redis-server)\n",
     0,
     "sluice demo --items 1000\n"},
    {"version",
     "sluice version\n",
     "Prints this build's version (also `sluice --version`).",
     NULL,
     0,
     "sluice version\n"},
    {"help",
     "sluice help [TOPIC|COMMAND]\n"
     "       sluice help --man\n",
     "The general usage; a topic: items (the item format), limits (rate and concurrency\n"
     "limits), exit-codes; or a command's help, as `sluice COMMAND --help`.",
     "  --man                       the manual page sluice(1), in roff: all of this help in one\n"
     "                              page (default: the general usage)\n",
     0,
     "sluice help items\n"
     "sluice help --man | man -l -\n"},
};

#define NENTRIES (sizeof(entries) / sizeof(entries[0]))

/* ---- Topics: sluice help TOPIC ---- */

static const char topic_items[] =
    "Items: the lines of `sluice submit FILE`\n"
    "\n"
    "JSON Lines, one object per line (blank lines are skipped); only type and payload are\n"
    "required. docs/item.schema.json describes them for any JSON Schema validator, and\n"
    "`sluice submit --check FILE` gives the exact answer.\n"
    "\n"
    "  type            the handler: http, sleep, noop, a type a worker maps with --exec, or one of\n"
    "                  an embedding program; [A-Za-z0-9_.:-], 1 to 64 bytes\n"
    "  payload         any JSON value, at most 512 KiB: what the handler gets\n"
    "  id              a string of 1 to 128 bytes or an integer, unique in the batch\n"
    "                  (default: the line number)\n"
    "  priority        high, normal or low (default: normal, or submit --priority)\n"
    "  max_attempts    1 to 1000 (default: 1, or submit --max-attempts)\n"
    "  timeout_ms      one attempt's limit, 1 to 86400000 ms (default: 30000, or submit --timeout)\n"
    "  backoff_ms      the first retry's delay, 0 to 86400000 ms (default: 1000); a retry waits\n"
    "                  u * min(backoff_max_ms, backoff_ms * 2^(attempt-1)), u uniform in [0, 1)\n"
    "  backoff_max_ms  the longest retry delay, 0 to 86400000 ms (default: 60000)\n"
    "  rate_key        the limit it runs under (`sluice help limits`; default: the queue's default)\n"
    "  run_at          not before this time: RFC 3339 with Z or an offset, a real date, years\n"
    "                  1970 to 9999 (not with delay_ms)\n"
    "  delay_ms        not before this long after the submit, 0 to 31536000000 ms (365 days)\n"
    "  dedupe          1 to 256 bytes: a later item of the queue with the same key within the\n"
    "                  dedupe TTL (submit --dedupe-ttl, default 1d) is skipped\n"
    "\n"
    "Payloads of the built-in types, checked at submit and again by the worker:\n"
    "  sleep   {\"ms\": 0 to 86400000, \"fail_rate\": 0 to 1, \"retry_after_ms\": 0 to 300000}, all optional\n"
    "  noop    anything; succeeds at once\n"
    "  http    {\"url\" (required, http or https), \"method\", \"headers\", \"body\" or \"json\",\n"
    "          \"keep_headers\", \"idempotency_key\", \"timeout_ms\"}; ${env:NAME} in headers and bodies\n"
    "          is a secret the worker must grant (sluice worker --secret NAME)\n"
    "  exec    (a type mapped with sluice worker --exec TYPE=COMMAND) the payload's JSON text\n"
    "          on the command's stdin; stdout is the result\n"
    "\n"
    "Refused at submit (exit 2, FILE:LINE and the field named, nothing written): invalid JSON or\n"
    "UTF-8, a byte order mark, a key given twice in any object, a line over 1 MiB, nesting deeper\n"
    "than 64, unknown or mistyped fields, duplicate ids, both run_at and delay_ms, a built-in\n"
    "type's invalid payload.\n"
    "\n"
    "Example:\n"
    "  {\"id\":\"row-17\",\"type\":\"sleep\",\"payload\":{\"ms\":1200},\"priority\":\"high\",\"max_attempts\":3,"
    "\"rate_key\":\"openai\"}\n"
    "  {\"id\":\"sum-1\",\"type\":\"http\",\"payload\":{\"method\":\"POST\",\"url\":\"https://api.example.com/v1\","
    "\"json\":{\"text\":\"...\"}},\"timeout_ms\":60000}\n"
    "\n"
    "Each ended item gets one line in `sluice results`: id, status (succeeded, failed or\n"
    "cancelled), attempts, started_at, finished_at, duration_ms, worker, and result or error.\n";

static const char topic_limits[] =
    "Limits: rate and concurrency, for the whole fleet of a queue\n"
    "\n"
    "An item names its limit with \"rate_key\" (or every item of a batch: submit --rate-key\n"
    "NAME). A rate key with no limit set is not limited.\n"
    "\n"
    "  sluice limit set NAME RATE [--burst N]\n"
    "      items of NAME start at most N at once (default 1) and RATE on average, across all\n"
    "      workers: at most burst + rate * t starts in any window of length t, reserved on the\n"
    "      Redis server's clock. RATE: 50/s, 3000/m or 10000/h. An item waiting for its start\n"
    "      holds a slot of its worker's --concurrency.\n"
    "  sluice limit set NAME --concurrency N\n"
    "      at most N items of NAME run at once; the others wait in Redis, holding no worker\n"
    "      slot, until a lease is free. A lease lasts the item's timeout_ms plus the visibility\n"
    "      timeout, so a dead worker's lease lapses. A RATE and --concurrency together: both apply.\n"
    "  sluice limit set NAME ... --default\n"
    "      NAME is also the limit of the queue's items without a rate_key.\n"
    "  sluice limit ls [--json]\n"
    "      name, rate, burst, per second, how far ahead starts are reserved, leases held / concurrency.\n"
    "  sluice limit rm NAME\n"
    "      items of NAME run unlimited again; waiting items are sent back to run (and the queue's\n"
    "      default is cleared when it was NAME).\n"
    "\n"
    "A handler that got \"429, retry after N\" (the http type does it by itself for a 429 or 503\n"
    "with Retry-After) pushes the item's limit back for the whole fleet: no item of that key\n"
    "starts before then. Limits are an operator's: run `limit set` and `limit rm` as the worker\n"
    "user or an admin.\n"
    "\n"
    "Example:\n"
    "  sluice limit set openai 50/s --burst 10\n"
    "  sluice limit set gpu --concurrency 4\n"
    "  sluice limit set slow 5/s --default\n";

static const char topic_exit_codes[] =
    "Exit codes of every sluice command\n"
    "\n"
    "  0  ok\n"
    "  1  runtime failure: Redis unreachable or refusing (its answer is printed), no such batch,\n"
    "     a batch whose state does not allow the command (cancel of a completed batch, pause of a\n"
    "     paused one, resume of a cancelled one), the library of another version loaded\n"
    "     (library check), standard output that cannot be written (a closed pipe)\n"
    "  2  usage error (bad input): an unknown command, option or filter value, a bad option value,\n"
    "     a missing argument, no Redis URL, an invalid items file (submit: every bad line named)\n"
    "  3  the batch ended with failed items: sluice watch, sluice submit --wait\n"
    "\n"
    "sluice demo exits 130 when interrupted (Ctrl-C). A worker exits 0 after SIGTERM or SIGINT.\n"
    "\n"
    "Example:\n"
    "  sluice watch $B; case $? in 0) echo done;; 3) sluice results $B --failed;; *) echo error;; esac\n";

/* A topic of `sluice help`. */
typedef struct help_topic {
  const char *name; /* as typed after `sluice help` */
  const char *text; /* what it prints */
} help_topic;

static const help_topic topics[] = {
    {"items", topic_items},
    {"limits", topic_limits},
    {"exit-codes", topic_exit_codes},
};

#define NTOPICS (sizeof(topics) / sizeof(topics[0]))

/* ---- Lookup and printing ---- */

static const help_entry *find(const char *cmd) {
  for (size_t i = 0; cmd != NULL && i < NENTRIES; i++) {
    if (strcmp(entries[i].cmd, cmd) == 0)
      return &entries[i];
  }
  return NULL;
}

/*
 * 1 when an option line "  --NAME VALUE ..." in text says that --NAME
 * (len bytes, without the dashes) takes a value; 0 when its line names
 * none or text has no line for it.
 */
static int line_takes_value(const char *text, const char *name, size_t len) {
  const char *p = text;

  while (p != NULL && *p != '\0') {
    if (strncmp(p, "  --", 4) == 0 && strncmp(p + 4, name, len) == 0 &&
        (p[4 + len] == ' ' || p[4 + len] == '\n'))
      return p[4 + len] == ' ' && p[5 + len] != ' ' && p[5 + len] != '\n';
    p = strchr(p, '\n');
    if (p != NULL)
      p++;
  }
  return 0;
}

static int takes_value(const help_entry *h, const char *name, size_t len) {
  return (h->options != NULL && line_takes_value(h->options, name, len)) ||
         ((h->common & HELP_REDIS) && line_takes_value(common_redis, name, len)) ||
         ((h->common & HELP_QUEUE) && line_takes_value(common_queue, name, len));
}

/* Prints the lines of s, each after prefix. */
static void put_lines(FILE *f, const char *s, const char *first, const char *rest) {
  for (int n = 0; *s != '\0'; n++) {
    size_t len = strcspn(s, "\n");

    fprintf(f, "%s%.*s\n", n == 0 ? first : rest, (int)len, s);
    s += len + (s[len] == '\n');
  }
}

void cli_help_general(FILE *f) {
  fputs(general, f);
}

int cli_help_asked(const char *cmd, int argc, char **argv) {
  const help_entry *h = find(cmd);

  if (h == NULL)
    return 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];

    if (strcmp(a, "--") == 0)
      return 0;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
      return 1;
    if (strncmp(a, "--", 2) == 0 && strchr(a, '=') == NULL && takes_value(h, a + 2, strlen(a + 2)))
      i++; /* its value, whatever it looks like */
  }
  return 0;
}

int cli_help_to(FILE *f, const char *cmd) {
  const help_entry *h = find(cmd);

  if (h == NULL) {
    cli_err("no help for \"%s\"", cli_safe(cmd));
    return EXIT_USAGE;
  }
  put_lines(f, h->usage, "usage: ", "       ");
  fprintf(f, "\n");
  put_lines(f, h->about, "", "");
  if (h->options != NULL)
    fprintf(f, "\nOptions:\n%s", h->options);
  if (h->common != 0) {
    fprintf(f, "\nCommon options:\n");
    if (h->common & HELP_REDIS)
      fputs(common_redis, f);
    if (h->common & HELP_QUEUE)
      fputs(common_queue, f);
  }
  fprintf(f, "\nExample%s:\n", strchr(h->example, '\n')[1] != '\0' ? "s" : "");
  put_lines(f, h->example, "  ", "  ");
  return EXIT_OK;
}

int cli_help(const char *cmd) {
  return cli_help_to(stdout, cmd);
}

const char *cli_help_command(size_t i) {
  return i < NENTRIES ? entries[i].cmd : NULL;
}

const char *cli_help_topic(size_t i, const char **text) {
  if (i >= NTOPICS)
    return NULL;
  *text = topics[i].text;
  return topics[i].name;
}

int cli_usage(const char *cmd) {
  const help_entry *h = find(cmd);

  if (h == NULL) {
    cli_err("usage: sluice %s (see sluice --help)", cmd);
    return EXIT_USAGE;
  }
  put_lines(stderr, h->usage, "sluice: usage: ", "               ");
  fprintf(stderr, "        (sluice %s --help: every option, with its default, and an example)\n", cmd);
  return EXIT_USAGE;
}

/* Lists the topics and the commands of `sluice help` on f. */
static void list_topics(FILE *f) {
  fprintf(f, "topics:");
  for (size_t i = 0; i < NTOPICS; i++)
    fprintf(f, " %s", topics[i].name);
  fprintf(f, "\ncommands:");
  for (size_t i = 0; i < NENTRIES; i++)
    fprintf(f, " %s", entries[i].cmd);
  fprintf(f, "\n");
}

/* sluice help [TOPIC|COMMAND], and --man: the manual page (manpage.c) */
int cmd_help(int argc, char **argv) {
  if (argc < 2) {
    cli_help_general(stdout);
    return EXIT_OK;
  }
  if (argc == 2 && strcmp(argv[1], "--man") == 0)
    return cli_man(stdout);
  if (argc > 2)
    return cli_usage("help");
  for (size_t i = 0; i < NTOPICS; i++) {
    if (strcmp(argv[1], topics[i].name) == 0) {
      fputs(topics[i].text, stdout);
      return EXIT_OK;
    }
  }
  if (find(argv[1]) != NULL)
    return cli_help(argv[1]);
  cli_err("no help topic \"%s\"", cli_safe(argv[1]));
  list_topics(stderr);
  return EXIT_USAGE;
}
