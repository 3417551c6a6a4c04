/*
 * The body of POST /v1/batches, read as it streams in.
 *
 * Two forms, each item checked by sl_batch_add as `sluice submit` checks a
 * line (same rules, same words), so the batch holds one chunk in memory and
 * spools the rest to disk: a large upload is never held whole in memory,
 * let alone twice.
 *
 * - application/x-ndjson: one item per line, as `sluice submit` reads a
 *   file (blank lines allowed, a line over 1 MiB refused); the batch
 *   options are query arguments (?name=...&max_attempts=3...).
 * - application/json: {"items":[ITEM,...],"options":{...}}. The items are
 *   cut out of the array by a small scanner that tracks strings and
 *   nesting, never by parsing the whole body; each is then checked in full.
 *   When "items" comes before "options" (JSON does not order members), the
 *   items wait in an unlinked temporary file until the options are known.
 *   An error's "line" is then the item's position in "items", from 1.
 *
 * Bad items do not stop the reading: like `sluice submit`, every bad item
 * is reported (the first 20, with line and field), and nothing is written.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sluice/client.h>

#include "alloc.h"
#include "json.h"
#include "srv.h"

#define MAX_REPORTED 20                     /* bad items listed in the answer */
#define ITEM_BUF (SL_ITEM_MAX_LINE + 2)     /* one item or line, with a '\r' */
#define OPTIONS_MAX (64 * 1024)             /* the "options" object, bytes */

/* Scanner states of the JSON form. */
enum js {
  JS_START,      /* before '{' */
  JS_KEY,        /* before a member's key (or '}') */
  JS_KEYSTR,     /* in the key */
  JS_COLON,      /* before ':' */
  JS_VALUE,      /* before the member's value */
  JS_ITEMS,      /* in "items", before an element or ']' */
  JS_ELEM,       /* in an element */
  JS_OPTIONS,    /* in the "options" value */
  JS_AFTER,      /* after a member: ',' or '}' */
  JS_END         /* after the closing '}' */
};

struct srv_upload {
  srv_req *req;
  int ndjson;
  sl_batch_t *b;          /* NULL until the options are known */
  srv_options opts;       /* the batch options (options.c) */
  char *buf;              /* the current line or element */
  size_t len;
  int too_long;           /* the current line or element passed ITEM_BUF */
  long lineno;            /* lines (or elements) seen */
  long items;             /* items added */
  long bad;               /* bad items */
  sl_buf errors;          /* the first MAX_REPORTED, as JSON array members */
  char first_field[64];
  long first_line;
  char first_msg[512];
  int refused;            /* the answer is set; the rest is skipped */
  /* JSON form */
  enum js st;
  char key[16];
  size_t keylen;
  int key_esc;
  int which;              /* 1: items, 2: options */
  int in_str, esc, depth;
  size_t pos;             /* body bytes scanned */
  sl_buf options;         /* the "options" text */
  int have_options, have_items;
  FILE *wait;             /* items read before the options */
};

static enum MHD_Result query_option(void *cls, enum MHD_ValueKind kind, const char *k, const char *v) {
  srv_upload *u = cls;

  (void)kind;
  if (u->refused || strcmp(k, "queue") == 0)
    return MHD_YES;
  if (srv_option_set(u->req, &u->opts, k, v != NULL ? v : "", NULL) != 0) {
    u->refused = 1;
    return MHD_NO;
  }
  return MHD_YES;
}

/* The batch, once the options are known. 0, or -1 with the answer set. */
static int make_batch(srv_upload *u) {
  char err[512];
  const char *key = MHD_lookup_connection_value(u->req->con, MHD_HEADER_KIND, "Idempotency-Key");
  int rc;

  u->opts.opts.queue = u->req->queue;
  u->opts.opts.tenant = u->req->who.tenant[0] ? u->req->who.tenant : NULL;
  if (key != NULL && (key[0] == '\0' || strlen(key) > SL_IDEM_KEY_MAX)) {
    srv_error(u->req, 400, "invalid_header", "Idempotency-Key", 0, "Idempotency-Key must be 1-%d bytes",
              SL_IDEM_KEY_MAX);
    return -1;
  }
  u->opts.opts.idempotency_key = key;
  rc = sl_batch_new(&u->opts.opts, &u->b, err, sizeof(err));
  if (rc != 0) {
    srv_error(u->req, rc == SL_ENOMEM ? 503 : 400, "invalid_option",
              strncmp(err, "label", 5) == 0 || strstr(err, " labels") != NULL ? "options.labels" : NULL, 0, "%s", err);
    return -1;
  }
  return 0;
}

/* The field an sl_batch_add message names: `field "F": ...`. */
static void field_of(const char *msg, char *out, size_t len) {
  const char *p = strstr(msg, "field \"");
  size_t n;

  out[0] = '\0';
  if (p == NULL)
    return;
  p += 7;
  n = strcspn(p, "\"");
  snprintf(out, len, "%.*s", (int)n, p);
}

/* A bad item: counted, and reported if among the first. */
static void bad_item(srv_upload *u, long line, const char *msg) {
  char field[64];

  field_of(msg, field, sizeof(field));
  if (u->bad == 0) {
    snprintf(u->first_field, sizeof(u->first_field), "%s", field);
    snprintf(u->first_msg, sizeof(u->first_msg), "%s", msg);
    u->first_line = line;
  }
  if (u->bad < MAX_REPORTED) {
    sl__buf_printf(&u->errors, "%s{\"line\":%ld,", u->bad ? "," : "", line);
    if (field[0] != '\0') {
      sl__buf_puts(&u->errors, "\"field\":");
      sl__json_put_str(&u->errors, field, strlen(field));
      sl__buf_putc(&u->errors, ',');
    }
    sl__buf_puts(&u->errors, "\"message\":");
    sl__json_put_str(&u->errors, msg, strlen(msg));
    sl__buf_putc(&u->errors, '}');
  }
  u->bad++;
}

/* One item text (a line, or an element) numbered line. 0, or -1 with the
 * answer set (a failure that is not the item's). */
static int add_item(srv_upload *u, const char *p, size_t n, long line) {
  char err[512];
  int rc;

  if (u->b == NULL) {
    uint32_t len = (uint32_t)n;

    /* the options come later: the item waits on disk */
    if (u->wait == NULL)
      u->wait = tmpfile();
    if (u->wait == NULL || fwrite(&len, sizeof(len), 1, u->wait) != 1 || fwrite(p, 1, n, u->wait) != n) {
      srv_error(u->req, 503, "server_storage", NULL, 0, "cannot keep the items in a temporary file: %s",
                strerror(errno));
      return -1;
    }
    return 0;
  }
  rc = sl_batch_add(u->b, p, n, line, err, sizeof(err));
  if (rc == 0) {
    u->items++;
    return 0;
  }
  if (rc == SL_ENOMEM || rc == SL_EIO) {
    srv_error(u->req, 503, rc == SL_EIO ? "server_storage" : "out_of_memory", NULL, line, "%s; nothing was submitted",
              err);
    return -1;
  }
  bad_item(u, line, err);
  return 0;
}

srv_upload *srv_upload_new(srv_req *req, int ndjson) {
  srv_upload *u = sl_malloc(sizeof(*u));

  if (u == NULL)
    return NULL;
  memset(u, 0, sizeof(*u));
  u->req = req;
  u->ndjson = ndjson;
  u->buf = sl_malloc(ITEM_BUF);
  sl__buf_init(&u->errors, 256 * 1024);
  sl__buf_init(&u->options, OPTIONS_MAX);
  if (u->buf == NULL) {
    srv_upload_free(u);
    return NULL;
  }
  if (ndjson) {
    MHD_get_connection_values(req->con, MHD_GET_ARGUMENT_KIND, query_option, u);
    if (u->refused || make_batch(u) != 0) {
      u->refused = 1;
      return u;
    }
  }
  return u;
}

void srv_upload_free(srv_upload *u) {
  if (u == NULL)
    return;
  sl_batch_free(u->b);
  srv_options_free(&u->opts);
  if (u->wait != NULL)
    fclose(u->wait);
  sl__buf_free(&u->errors);
  sl__buf_free(&u->options);
  sl_free(u->buf);
  sl_free(u);
}

/* Appends a byte to the current line or element. */
static void keep(srv_upload *u, char c) {
  if (u->len < ITEM_BUF)
    u->buf[u->len++] = c;
  else
    u->too_long = 1;
}

/* The end of a line or element: trims it and adds it. */
static int end_item(srv_upload *u) {
  size_t len = u->len;
  size_t k = 0;
  int rc = 0;

  u->lineno++;
  while (len > 0 && (u->buf[len - 1] == '\r' || u->buf[len - 1] == ' ' || u->buf[len - 1] == '\t' ||
                     (!u->ndjson && u->buf[len - 1] == '\n')))
    len--;
  while (k < len && (u->buf[k] == ' ' || u->buf[k] == '\t' || (!u->ndjson && u->buf[k] == '\n')))
    k++;
  if (u->too_long) {
    char msg[128];

    snprintf(msg, sizeof(msg), "%s is over the limit of %d bytes", u->ndjson ? "line" : "item", SL_ITEM_MAX_LINE);
    bad_item(u, u->lineno, msg);
  } else if (k < len) {
    rc = add_item(u, u->buf + k, len - k, u->lineno);
  } else if (!u->ndjson) {
    bad_item(u, u->lineno, "an empty element in \"items\"");
  }
  u->len = 0;
  u->too_long = 0;
  return rc;
}

static int feed_ndjson(srv_upload *u, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] != '\n') {
      keep(u, p[i]);
      continue;
    }
    if (end_item(u) != 0)
      return -1;
  }
  return 0;
}

static int json_bad(srv_upload *u, const char *what) {
  srv_error(u->req, 400, "invalid_json", NULL, 0, "invalid JSON body at byte %zu: %s", u->pos, what);
  return -1;
}

static int is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A string or nesting character of a value being skipped or kept: updates
 * in_str, esc and depth. Returns 1 when c closes the value at depth 0
 * (for a ',', ']' or '}' seen outside any string at depth 0). */
static int track(srv_upload *u, char c) {
  if (u->in_str) {
    if (u->esc)
      u->esc = 0;
    else if (c == '\\')
      u->esc = 1;
    else if (c == '"')
      u->in_str = 0;
    return 0;
  }
  if (c == '"')
    u->in_str = 1;
  else if (c == '[' || c == '{')
    u->depth++;
  else if ((c == ']' || c == '}') && u->depth > 0)
    u->depth--;
  else if ((c == ',' || c == ']' || c == '}') && u->depth == 0)
    return 1;
  return 0;
}

static int feed_json(srv_upload *u, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++, u->pos++) {
    char c = p[i];

    switch (u->st) {
    case JS_START:
      if (is_ws(c))
        break;
      if (c != '{')
        return json_bad(u, "the body must be an object {\"items\":[...],\"options\":{...}}");
      u->st = JS_KEY;
      break;
    case JS_KEY:
      if (is_ws(c))
        break;
      if (c == '}' && !u->have_items && !u->have_options)
        return json_bad(u, "the object has no \"items\"");
      if (c != '"')
        return json_bad(u, "expected a member name");
      u->st = JS_KEYSTR;
      u->keylen = 0;
      u->key_esc = 0;
      break;
    case JS_KEYSTR:
      if (c == '"' && !u->key_esc) {
        u->st = JS_COLON;
        break;
      }
      u->key_esc = c == '\\' && !u->key_esc;
      if (u->keylen + 1 < sizeof(u->key))
        u->key[u->keylen] = c;
      u->keylen++;
      break;
    case JS_COLON:
      if (is_ws(c))
        break;
      if (c != ':')
        return json_bad(u, "expected ':'");
      if (u->keylen == 5 && memcmp(u->key, "items", 5) == 0 && !u->have_items) {
        u->which = 1;
      } else if (u->keylen == 7 && memcmp(u->key, "options", 7) == 0 && !u->have_options) {
        u->which = 2;
      } else {
        srv_error(u->req, 400, "unknown_field", NULL, 0,
                  "the body's members are \"items\" and \"options\", once each; got \"%.*s\"",
                  (int)(u->keylen < sizeof(u->key) ? u->keylen : sizeof(u->key) - 1), u->key);
        return -1;
      }
      u->st = JS_VALUE;
      break;
    case JS_VALUE:
      if (is_ws(c))
        break;
      if (u->which == 1) {
        if (c != '[')
          return json_bad(u, "\"items\" must be an array");
        u->have_items = 1;
        u->st = JS_ITEMS;
      } else {
        if (c != '{')
          return json_bad(u, "\"options\" must be an object");
        u->have_options = 1;
        u->in_str = u->esc = 0;
        u->depth = 1;
        sl__buf_reset(&u->options);
        sl__buf_putc(&u->options, c);
        u->st = JS_OPTIONS;
      }
      break;
    case JS_ITEMS:
      if (is_ws(c))
        break;
      if (c == ']') {
        if (u->lineno > 0)
          return json_bad(u, "a ',' before ']' in \"items\"");
        u->st = JS_AFTER;
        break;
      }
      u->in_str = u->esc = u->depth = 0;
      u->len = 0;
      u->st = JS_ELEM;
      __attribute__((fallthrough)); /* c is the element's first byte */
    case JS_ELEM:
      if (track(u, c)) {
        if (end_item(u) != 0)
          return -1;
        u->st = c == ']' ? JS_AFTER : c == ',' ? JS_ITEMS : JS_START;
        if (u->st == JS_START)
          return json_bad(u, "'}' inside \"items\"");
        break;
      }
      keep(u, c);
      break;
    case JS_OPTIONS:
      if (sl__buf_putc(&u->options, c) != 0) {
        srv_error(u->req, 400, "invalid_option", "options", 0, "\"options\" is over %d bytes", OPTIONS_MAX);
        return -1;
      }
      if (u->in_str) {
        track(u, c);
        break;
      }
      if (c == '}' && u->depth == 1) {
        u->st = JS_AFTER;
        break;
      }
      track(u, c);
      break;
    case JS_AFTER:
      if (is_ws(c))
        break;
      if (c == ',')
        u->st = JS_KEY;
      else if (c == '}')
        u->st = JS_END;
      else
        return json_bad(u, "expected ',' or '}'");
      break;
    case JS_END:
      if (!is_ws(c))
        return json_bad(u, "text after the body's object");
      break;
    }
  }
  return 0;
}

int srv_upload_feed(srv_upload *u, const char *p, size_t n) {
  int rc;

  if (u->refused)
    return -1;
  rc = u->ndjson ? feed_ndjson(u, p, n) : feed_json(u, p, n);
  if (rc != 0)
    u->refused = 1;
  return rc;
}

/* The JSON form's options, then the items that waited for them. */
static int json_options_then_items(srv_upload *u) {
  cJSON *o = NULL;
  long line = 0;

  if (u->have_options) {
    o = cJSON_ParseWithLength(u->options.p, u->options.len);
    if (o == NULL || !cJSON_IsObject(o)) {
      cJSON_Delete(o);
      srv_error(u->req, 400, "invalid_json", "options", 0, "\"options\" is not a valid JSON object");
      return -1;
    }
    for (cJSON *m = o->child; m != NULL; m = m->next) {
      if (srv_option_set(u->req, &u->opts, m->string, NULL, m) != 0) {
        cJSON_Delete(o);
        return -1;
      }
    }
    cJSON_Delete(o);
  }
  if (make_batch(u) != 0)
    return -1;
  if (u->wait == NULL)
    return 0;
  rewind(u->wait);
  for (;;) {
    uint32_t len;
    char err[512];
    int rc;

    if (fread(&len, sizeof(len), 1, u->wait) != 1)
      break;
    if (len > ITEM_BUF || fread(u->buf, 1, len, u->wait) != len) {
      srv_error(u->req, 503, "server_storage", NULL, 0, "cannot read back the items' temporary file");
      return -1;
    }
    line++;
    rc = sl_batch_add(u->b, u->buf, len, line, err, sizeof(err));
    if (rc == SL_ENOMEM || rc == SL_EIO) {
      srv_error(u->req, 503, "server_storage", NULL, line, "%s; nothing was submitted", err);
      return -1;
    }
    if (rc != 0)
      bad_item(u, line, err);
    else
      u->items++;
  }
  return 0;
}

sl_batch_t *srv_upload_finish(srv_upload *u) {
  if (u->refused)
    return NULL;
  if (u->ndjson) {
    if (u->len > 0 && end_item(u) != 0)
      return NULL;
  } else if (u->st != JS_END) {
    json_bad(u, u->st == JS_START ? "an empty body" : "the body ends before its object does");
    return NULL;
  } else if (!u->have_items) {
    srv_error(u->req, 400, "missing_field", "items", 0, "the body has no \"items\"");
    return NULL;
  } else if (u->b == NULL && json_options_then_items(u) != 0) {
    return NULL;
  }
  if (u->bad > 0) {
    char *json;
    sl_buf b;

    sl__buf_init(&b, 1024 * 1024);
    sl__buf_printf(&b, "{\"error\":{\"code\":\"invalid_items\",\"message\":");
    {
      char msg[700];

      snprintf(msg, sizeof(msg), "%ld of %ld %s invalid; nothing was submitted. First: %s", u->bad, u->lineno,
               u->ndjson ? "lines are" : "items are", u->first_msg);
      sl__json_put_str(&b, msg, strlen(msg));
    }
    if (u->first_field[0] != '\0') {
      sl__buf_puts(&b, ",\"field\":");
      sl__json_put_str(&b, u->first_field, strlen(u->first_field));
    }
    sl__buf_printf(&b, ",\"line\":%ld,\"errors\":[", u->first_line);
    sl__buf_append(&b, u->errors.p, u->errors.len);
    sl__buf_puts(&b, "]}}");
    json = sl__buf_take(&b);
    sl__buf_free(&b);
    srv_answer(u->req, 400, json);
    return NULL;
  }
  if (u->items == 0) {
    srv_error(u->req, 400, "no_items", "items", 0, "the body has no items; nothing was submitted");
    return NULL;
  }
  return u->b;
}
