/*
 * sluice_embed_example: a C program that embeds libsluice.
 *
 *   sluice_embed_example REDIS_URL QUEUE [N]
 *
 * The program owns a libuv loop and runs a sluice worker on it, next to its
 * own handles. It serves a handler type of its own, `uppercase`, alongside
 * the built-in `noop` and `sleep`: the payload is a JSON string ("hello") and
 * the result is the same string in upper case ("HELLO"). The result is
 * delivered asynchronously, from a uv timer 10 ms after the start, as a real
 * handler would deliver it from a socket or a child process.
 *
 * Without N it is a plain worker: it runs until SIGINT or SIGTERM, then the
 * running items finish, their outcomes are written and it exits. With N it
 * first submits a batch of N `uppercase` items itself, through the client
 * API, and stops on its own once its handler has finished all N of them. In
 * both modes it prints "embed: K items done ..." on stdout at the end, and
 * while it runs a line on stderr whenever the count moved.
 *
 * The contract between sluice and a handler, as this program relies on it:
 *
 *   - sl_worker_register(w, type, start, ud): sluice calls start(job, ud) on
 *     the worker's loop for every attempt of an item of that type. start
 *     returns at once; the work may go on after it returns.
 *   - The job is the handler's until it completes it, exactly once, with
 *     sl_job_succeed, sl_job_fail (retryable) or sl_job_fail_final. The job
 *     pointer stays valid until then, and must not be touched afterwards:
 *     the completion frees it. Completing inside start is allowed too (this
 *     program does so for a payload it cannot use).
 *   - Everything read from the job is borrowed from it: the payload pointer
 *     of sl_job_payload and the strings of sl_job_type and sl_job_batch are
 *     valid only until the job is completed. Copy what must outlive it.
 *   - The result passed to sl_job_succeed is copied; it is JSON text (text
 *     that is not JSON would be stored as a JSON string).
 *   - sl_job_on_cancel(job, fn, ud): when the worker gives the attempt up
 *     (the item's timeout passed, another worker took the item over, or a
 *     stop passed its drain timeout) it calls fn once. The handler then stops
 *     its work and still completes the job (sl_job_fail) to release it; that
 *     outcome is ignored, the worker has recorded its own.
 *
 * The loop contract: with sl_worker_opts.loop set, sl_worker_run connects,
 * arms the worker's handles on that loop and returns; the program runs the
 * loop. When the worker stops (sl_worker_stop, a signal, a fatal error) it
 * closes all of its handles, so uv_run returns as soon as the program's own
 * handles are gone too. This program's progress timer is unreferenced
 * (uv_unref) for that reason: it never keeps the loop alive by itself.
 * There is no "worker stopped" callback; after uv_run returns,
 * sl_worker_errstr says whether the worker ended on an error ("" if not).
 *
 * The client API (sl_client_open, sl_batch_*) is synchronous: it is used
 * before the loop runs and after it has returned, never from a callback on
 * the loop, where a blocking Redis call would hold up every item.
 *
 * Exit codes: 0 after a clean stop (with N: all N items done), 1 on an
 * error, 2 on bad usage.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sluice/sluice.h>
#include <uv.h>

#define EMBED_MAX_ITEMS 1000000 /* largest N accepted on the command line */
#define EMBED_DELAY_MS 10       /* an uppercase result arrives this long after its start, ms */
#define EMBED_PROGRESS_MS 50    /* the progress timer's period, ms */
#define EMBED_CONCURRENCY 20    /* items run at once */

/* ---- The program's state ---- */

/* Everything the callbacks share; one per program, on main's stack, passed
 * to them as their user data (sluice and libuv both carry a void *). */
typedef struct embed_app {
  uv_loop_t loop;          /* the program's loop; the worker runs on it */
  uv_timer_t progress;     /* every EMBED_PROGRESS_MS: report, and stop after N */
  sl_worker_t *worker;     /* the embedded worker */
  const char *batch;       /* with N: the id of the batch this program submitted, else NULL */
  long want;               /* with N: how many items of that batch to finish before stopping; 0: run until a signal */
  uint64_t done;           /* uppercase items this program completed successfully */
  uint64_t rejected;       /* uppercase items failed for good (the payload is not a string) */
  uint64_t cancelled;      /* attempts the worker gave up (the cancel hook ran) */
  uint64_t ours;           /* items of `batch` this program finished (succeeded or rejected) */
  uint64_t reported;       /* done + rejected at the last progress line */
  int stopping;            /* sl_worker_stop was called by the program */
} embed_app;

/* One running uppercase attempt: the state of its asynchronous work. */
typedef struct upper_job {
  uv_timer_t timer; /* first member: the struct is freed through the handle, in its close callback */
  sl_job_t *job;    /* the attempt, until this program completes it; NULL afterwards */
  embed_app *app;   /* the program, for its counters */
  int ours;         /* the item belongs to app->batch (read at start: sl_job_batch is borrowed) */
  char *result;     /* the JSON result, made at start (cJSON memory, cJSON_free) */
} upper_job;

/* ---- The uppercase handler ---- */

/* Frees an attempt's state once libuv is done with its timer. */
static void upper_close_cb(uv_handle_t *h) {
  upper_job *u = (upper_job *)h;

  cJSON_free(u->result);
  free(u);
}

/*
 * The timer fired: the "work" is done, deliver the result. sl_job_succeed
 * copies the result and frees the job, so everything needed from the job is
 * read before the call and the pointer is cleared after it.
 */
static void upper_on_timer(uv_timer_t *t) {
  upper_job *u = (upper_job *)t;
  embed_app *app = u->app;

  sl_job_succeed(u->job, u->result, strlen(u->result));
  u->job = NULL;
  app->done++;
  if (u->ours)
    app->ours++;
  uv_close((uv_handle_t *)t, upper_close_cb);
}

/*
 * The cancel hook: the worker gave this attempt up (its timeout passed, the
 * item was taken over, or a stop ran out of drain time) before the timer
 * fired. Stop the work, then complete the job anyway: that releases it, and
 * the worker ignores the outcome (it has recorded its own, e.g. "timed out
 * after 1 ms", and retries the item when it has attempts left).
 */
static void upper_on_cancel(sl_job_t *job, void *ud) {
  upper_job *u = ud;

  u->app->cancelled++;
  uv_timer_stop(&u->timer);
  uv_close((uv_handle_t *)&u->timer, upper_close_cb);
  u->job = NULL;
  sl_job_fail(job, "uppercase: cancelled");
}

/* Upper-cases ASCII letters in place; other bytes (UTF-8 sequences among
 * them) are left as they are, so the text stays valid UTF-8. */
static void ascii_upper(char *s) {
  for (; *s != '\0'; s++) {
    if (*s >= 'a' && *s <= 'z')
      *s = (char)(*s - 'a' + 'A');
  }
}

/*
 * sl_handler_start_fn of the `uppercase` type: `ud` is the program. Parses
 * the payload (raw JSON text, borrowed from the job: it is not used after
 * this function), makes the result now and delivers it from a timer
 * EMBED_DELAY_MS later. A payload that is not a JSON string can never work:
 * the job is failed for good at once, from inside start.
 */
static void upper_start(sl_job_t *job, void *ud) {
  embed_app *app = ud;
  size_t len;
  const char *payload = sl_job_payload(job, &len);
  cJSON *in = cJSON_ParseWithLength(payload, len);
  cJSON *out = NULL;
  upper_job *u = NULL;

  if (!cJSON_IsString(in)) {
    cJSON_Delete(in);
    app->rejected++;
    if (app->batch != NULL && strcmp(sl_job_batch(job), app->batch) == 0)
      app->ours++;
    sl_job_fail_final(job, "uppercase: the payload must be a JSON string, like \"hello\"");
    return;
  }
  u = calloc(1, sizeof(*u));
  if (u == NULL)
    goto oom;
  ascii_upper(in->valuestring);
  out = cJSON_CreateString(in->valuestring);
  u->result = out != NULL ? cJSON_PrintUnformatted(out) : NULL;
  if (u->result == NULL)
    goto oom;
  cJSON_Delete(out);
  cJSON_Delete(in);
  u->job = job;
  u->app = app;
  u->ours = app->batch != NULL && strcmp(sl_job_batch(job), app->batch) == 0;
  /* The job's loop is app->loop here; sl_job_loop is what a handler that
   * does not know the program's loop would use. */
  uv_timer_init(sl_job_loop(job), &u->timer);
  uv_timer_start(&u->timer, upper_on_timer, EMBED_DELAY_MS, 0);
  sl_job_on_cancel(job, upper_on_cancel, u);
  return;
oom:
  /* Out of memory is not the item's fault: fail retryably. */
  cJSON_Delete(out);
  cJSON_Delete(in);
  free(u);
  sl_job_fail(job, "uppercase: out of memory");
}

/* ---- Progress ---- */

/*
 * Every EMBED_PROGRESS_MS: prints the count when it moved, and with N stops
 * the worker once the program has finished N items of its batch. Counting
 * in the handler needs no Redis call on the loop, but it is exact only while
 * this program is the queue's only worker; a program sharing the queue would
 * follow the batch's counters instead (sl_batch_status or sl_batch_watch,
 * both synchronous: from another thread, or tolerated as a short blocking
 * poll in an example). sl_worker_stop lets running items finish and writes
 * their outcomes before the worker closes its handles.
 */
static void on_progress(uv_timer_t *t) {
  embed_app *app = t->data;
  uint64_t finished = app->done + app->rejected;

  if (finished != app->reported) {
    app->reported = finished;
    if (app->want > 0)
      fprintf(stderr, "embed: %llu/%ld items done\n", (unsigned long long)app->ours, app->want);
    else
      fprintf(stderr, "embed: %llu items done\n", (unsigned long long)finished);
  }
  if (app->want > 0 && app->ours >= (uint64_t)app->want && !app->stopping) {
    app->stopping = 1;
    uv_timer_stop(t);
    sl_worker_stop(app->worker);
  }
}

/* ---- Submitting N items (before the loop runs) ---- */

/*
 * Submits a batch of n uppercase items to `queue`, payloads "hello, sluice
 * #1" and on. On success *id_out is the batch id (sl_free). The client is
 * synchronous; this runs before the loop does.
 */
static int submit_items(sl_client_t *c, const char *queue, long n, char **id_out) {
  sl_batch_opts bo = {0};
  sl_batch_t *b = NULL;
  char err[512];
  char line[128];
  int rc;

  bo.queue = queue;
  bo.name = "embed example";
  rc = sl_batch_new(&bo, &b, err, sizeof(err));
  if (rc != 0) {
    fprintf(stderr, "embed: cannot make a batch: %s\n", err);
    return rc;
  }
  for (long i = 1; i <= n; i++) {
    int len = snprintf(line, sizeof(line), "{\"type\":\"uppercase\",\"payload\":\"hello, sluice #%ld\"}", i);

    rc = sl_batch_add(b, line, (size_t)len, i, err, sizeof(err));
    if (rc != 0) {
      fprintf(stderr, "embed: item %ld: %s\n", i, err);
      goto out;
    }
  }
  rc = sl_batch_submit(c, b, id_out);
  if (rc != 0)
    fprintf(stderr, "embed: cannot submit: %s\n", sl_client_errstr(c));
out:
  sl_batch_free(b);
  return rc;
}

/* After the run: the batch's own counters, read back from Redis. */
static void print_batch_status(sl_client_t *c, const char *queue, const char *batch) {
  char *json = NULL;
  cJSON *j;

  if (sl_batch_status(c, queue, batch, &json) != 0) {
    fprintf(stderr, "embed: cannot read batch %s: %s\n", batch, sl_client_errstr(c));
    return;
  }
  j = cJSON_Parse(json);
  if (j != NULL) {
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(j, "succeeded");
    const cJSON *failed = cJSON_GetObjectItemCaseSensitive(j, "failed");

    printf("embed: batch %s is %s: %.0f succeeded, %.0f failed\n", batch,
           cJSON_IsString(st) ? st->valuestring : "?", cJSON_IsNumber(ok) ? ok->valuedouble : -1.0,
           cJSON_IsNumber(failed) ? failed->valuedouble : -1.0);
  }
  cJSON_Delete(j);
  sl_free(json);
}

/* ---- main ---- */

int main(int argc, char **argv) {
  embed_app app;
  sl_worker_opts wo = {0};
  sl_client_t *client = NULL;
  char *batch_id = NULL;
  char err[512];
  int ret = 1;
  int rc;

  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s REDIS_URL QUEUE [N]\n", argv[0]);
    return 2;
  }
  memset(&app, 0, sizeof(app));
  if (argc == 4) {
    char *end;

    app.want = strtol(argv[3], &end, 10);
    if (*end != '\0' || app.want < 1 || app.want > EMBED_MAX_ITEMS) {
      fprintf(stderr, "embed: N must be an integer from 1 to %d, got \"%s\"\n", EMBED_MAX_ITEMS, argv[3]);
      return 2;
    }
  }
  /* The program's loop. It is initialised first and closed last: the
   * worker and the program's handles live on it. */
  if (uv_loop_init(&app.loop) != 0) {
    fprintf(stderr, "embed: cannot create an event loop\n");
    return 1;
  }

  /* 1. With N: submit the items first, through the (synchronous) client. */
  if (app.want > 0) {
    rc = sl_client_open(argv[1], &client, err, sizeof(err));
    if (rc != 0) {
      fprintf(stderr, "embed: %s: %s\n", sl_strerror(rc), err);
      goto out;
    }
    if (submit_items(client, argv[2], app.want, &batch_id) != 0)
      goto out;
    app.batch = batch_id;
    printf("embed: submitted batch %s (%ld items)\n", batch_id, app.want);
    fflush(stdout);
  }

  /* 2. The worker, on the program's loop, serving `uppercase` next to the
   * built-in types. Strings in the options are copied. */
  wo.redis_url = argv[1];
  wo.queue = argv[2];
  wo.concurrency = EMBED_CONCURRENCY;
  wo.loop = &app.loop;
  rc = sl_worker_new(&wo, &app.worker, err, sizeof(err));
  if (rc != 0) {
    fprintf(stderr, "embed: %s: %s\n", sl_strerror(rc), err);
    goto out;
  }
  rc = sl_worker_register(app.worker, "uppercase", upper_start, &app);
  if (rc != 0) {
    fprintf(stderr, "embed: cannot register the uppercase handler: %s\n", sl_strerror(rc));
    goto out;
  }

  /* 3. Start it: with a loop of ours, sl_worker_run connects (a blocking
   * call, the loop is not running yet), arms its handles and returns. When
   * it cannot connect, nothing of the worker's is on the loop yet. */
  rc = sl_worker_run(app.worker);
  if (rc != 0) {
    fprintf(stderr, "embed: %s: %s\n", sl_strerror(rc), sl_worker_errstr(app.worker));
    goto out;
  }
  /* SIGINT/SIGTERM stop the worker (a second one exits at once). Installed
   * after a successful run: the worker closes these handles with its own
   * when it stops, so they never outlive it. */
  rc = sl_worker_handle_signals(app.worker);
  if (rc != 0) {
    fprintf(stderr, "embed: cannot handle signals: %s\n", sl_strerror(rc));
    sl_worker_stop(app.worker);
  }

  /* 4. The program's own handle on the same loop, unreferenced: the worker's
   * handles keep the loop alive, and uv_run returns when the worker has
   * closed them. */
  uv_timer_init(&app.loop, &app.progress);
  app.progress.data = &app;
  uv_timer_start(&app.progress, on_progress, EMBED_PROGRESS_MS, EMBED_PROGRESS_MS);
  uv_unref((uv_handle_t *)&app.progress);

  /* 5. Run until the worker has stopped and closed everything. */
  uv_run(&app.loop, UV_RUN_DEFAULT);

  /* 6. Close what is ours and let the loop run the close callbacks. */
  uv_close((uv_handle_t *)&app.progress, NULL);
  uv_run(&app.loop, UV_RUN_DEFAULT);
  if (sl_worker_errstr(app.worker)[0] != '\0') {
    fprintf(stderr, "embed: the worker stopped on an error: %s\n", sl_worker_errstr(app.worker));
    goto out;
  }
  printf("embed: %llu items done (%llu rejected, %llu cancelled)\n", (unsigned long long)app.done,
         (unsigned long long)app.rejected, (unsigned long long)app.cancelled);
  if (app.want > 0) {
    print_batch_status(client, argv[2], batch_id);
    if (app.ours < (uint64_t)app.want) {
      fprintf(stderr, "embed: stopped after %llu of %ld items\n", (unsigned long long)app.ours, app.want);
      goto out;
    }
  }
  ret = 0;
out:
  /* The worker's handles are closed (or were never armed): free it, then
   * the loop, which must have no handle left. */
  sl_worker_free(app.worker);
  if (uv_loop_close(&app.loop) != 0) {
    fprintf(stderr, "embed: handles were left on the loop\n");
    ret = 1;
  }
  sl_free(batch_id);
  sl_client_close(client);
  return ret;
}
