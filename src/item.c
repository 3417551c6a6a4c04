/*
 * Item validation and normalization; see item.h.
 *
 * The checks run in the order a person fixing the file would want: size
 * first (cheap, and protects the scanner), then JSON syntax with the column
 * of the problem, then each field by name.
 */
#include "item.h"

#include <stdio.h>
#include <string.h>

#include <sluice/sluice.h>

#include "alloc.h"
#include "httpreq.h"
#include "json.h"

#define MAX_MEMBERS 32 /* fields in one item object */

static const char *const prio_names[SL_PRIO_COUNT] = {"high", "normal", "low"};

int sl__prio_parse(const char *s, size_t n) {
  for (int i = 0; i < SL_PRIO_COUNT; i++) {
    if (strlen(prio_names[i]) == n && memcmp(prio_names[i], s, n) == 0)
      return i;
  }
  return -1;
}

const char *sl__prio_name(int prio) {
  return prio >= 0 && prio < SL_PRIO_COUNT ? prio_names[prio] : "?";
}

int sl__name_valid(const char *s, size_t n) {
  if (n == 0 || n > SL_NAME_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];

    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '.' || c == ':' || c == '-'))
      return 0;
  }
  return 1;
}

void sl__item_free(sl_item *it) {
  sl_free(it->id);
  sl_free(it->d);
  sl_free(it->dedupe);
  memset(it, 0, sizeof(*it));
}

static int key_is(const sl_json_member *m, const char *k) {
  return m->keylen == strlen(k) && memcmp(m->key, k, m->keylen) == 0;
}

/* The decoded text of a string value into out[0..cap) with a NUL after it,
 * so escapes never change what a name or time means ("h\u0069gh" is
 * "high"). Returns its length; STR_BAD when the value is not a string,
 * does not fit or holds \u0000; SL_ENOMEM when memory ran out. */
#define STR_BAD (-100)
static long str_value(const sl_json_member *f, char *out, size_t cap) {
  sl_buf b;
  long n = STR_BAD;
  int rc;

  if (f->val[0] != '"' || f->vallen < 2)
    return STR_BAD;
  if (memchr(f->val, '\\', f->vallen) == NULL) {
    if (f->vallen - 2 >= cap || memchr(f->val + 1, '\0', f->vallen - 2) != NULL)
      return STR_BAD;
    memcpy(out, f->val + 1, f->vallen - 2);
    out[f->vallen - 2] = '\0';
    return (long)(f->vallen - 2);
  }
  sl__buf_init(&b, cap - 1);
  rc = sl__json_unescape(f->val, f->vallen, &b);
  if (rc == SL_ENOMEM) {
    n = SL_ENOMEM;
  } else if (rc == 0 && b.len == 0) {
    out[0] = '\0';
    n = 0;
  } else if (rc == 0 && memchr(b.p, '\0', b.len) == NULL) {
    memcpy(out, b.p, b.len + 1);
    n = (long)b.len;
  }
  sl__buf_free(&b);
  return n;
}

/* Validates the payload of the built-in types that have a schema. */
static int check_payload(const char *type, const sl_json_member *p, char *err, size_t errlen) {
  sl_json_member m[MAX_MEMBERS];
  size_t n = 0;
  int rc;

  if (strcmp(type, "sleep") == 0) {
    if (p->val[0] == 'n')
      return 0;
    if (p->val[0] != '{') {
      snprintf(err, errlen, "field \"payload\": a sleep payload must be an object like {\"ms\":100}, not %s",
               sl__json_kind(p->val));
      return SL_EINVAL;
    }
    rc = sl__json_members(p->val, p->vallen, m, MAX_MEMBERS, &n);
    if (rc != 0) {
      snprintf(err, errlen, "field \"payload\": too many fields for a sleep payload");
      return SL_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
      int64_t v;
      double d;

      if (key_is(&m[i], "ms")) {
        if (sl__json_int(m[i].val, m[i].vallen, 0, 86400000, &v) != 0) {
          snprintf(err, errlen, "field \"payload.ms\": expected an integer from 0 to 86400000, got %.*s",
                   (int)(m[i].vallen > 40 ? 40 : m[i].vallen), m[i].val);
          return SL_EINVAL;
        }
      } else if (key_is(&m[i], "fail_rate")) {
        if (sl__json_double(m[i].val, m[i].vallen, &d) != 0 || d < 0 || d > 1) {
          snprintf(err, errlen, "field \"payload.fail_rate\": expected a number from 0 to 1, got %.*s",
                   (int)(m[i].vallen > 40 ? 40 : m[i].vallen), m[i].val);
          return SL_EINVAL;
        }
      } else if (key_is(&m[i], "retry_after_ms")) {
        if (sl__json_int(m[i].val, m[i].vallen, 0, 300000, &v) != 0) {
          snprintf(err, errlen, "field \"payload.retry_after_ms\": expected an integer from 0 to 300000, got %.*s",
                   (int)(m[i].vallen > 40 ? 40 : m[i].vallen), m[i].val);
          return SL_EINVAL;
        }
      } else {
        snprintf(err, errlen, "field \"payload.%.*s\": unknown field for a sleep item (known: ms, fail_rate, retry_after_ms)",
                 (int)(m[i].keylen > 40 ? 40 : m[i].keylen), m[i].key);
        return SL_EINVAL;
      }
    }
    return 0;
  }
  if (strcmp(type, "http") == 0) {
    sl_httpreq r;

    rc = sl__httpreq_parse(p->val, p->vallen, &r, err, errlen);
    if (rc == 0)
      sl__httpreq_free(&r);
    return rc;
  }
  return 0;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  int64_t era;
  int64_t yoe;
  int64_t doy;

  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = y - era * 400;
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static int digits(const char *s, int n, int *out) {
  int v = 0;

  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

#define WHY(...)                                                                                   \
  do {                                                                                             \
    if (why != NULL)                                                                               \
      snprintf(why, whylen, __VA_ARGS__);                                                          \
    return SL_EINVAL;                                                                              \
  } while (0)

int sl__rfc3339_check(const char *s, size_t n, int64_t *ms, char *why, size_t whylen) {
  static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  static const char *const mname[12] = {"January", "February", "March", "April", "May", "June",
                                        "July", "August", "September", "October", "November", "December"};
  int y, mo, d, h, mi, sec;
  int off_h = 0;
  int off_m = 0;
  int sign = 0;
  int64_t frac_ms = 0;
  size_t p = 19;
  int dim;

  /* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
  if (n < 20 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' || digits(s + 8, 2, &d) ||
      (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) ||
      s[16] != ':' || digits(s + 17, 2, &sec))
    WHY("not of the form 2026-11-23T10:00:00Z");
  if (y < 1970 || y > 9999)
    WHY("year %04d is outside 1970-9999", y);
  if (mo < 1 || mo > 12)
    WHY("month %02d does not exist", mo);
  dim = mdays[mo - 1] + (mo == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
  if (d < 1 || d > dim)
    WHY("%s %d has %d days, not %d", mname[mo - 1], y, dim, d);
  if (h > 23 || mi > 59 || sec > 59)
    WHY("%02d:%02d:%02d is not a time of day", h, mi, sec);
  if (p < n && s[p] == '.') {
    int nd = 0;

    for (p++; p < n && s[p] >= '0' && s[p] <= '9'; p++, nd++) {
      if (nd < 3)
        frac_ms = frac_ms * 10 + (s[p] - '0');
    }
    if (nd == 0)
      WHY("a '.' needs digits after it");
    for (; nd < 3; nd++)
      frac_ms *= 10;
  }
  if (p < n && (s[p] == 'Z' || s[p] == 'z')) {
    p++;
  } else if (p + 6 <= n && (s[p] == '+' || s[p] == '-') && digits(s + p + 1, 2, &off_h) == 0 && s[p + 3] == ':' &&
             digits(s + p + 4, 2, &off_m) == 0) {
    sign = s[p] == '-' ? -1 : 1;
    if (off_h > 23 || off_m > 59)
      WHY("offset %.6s is outside -23:59..+23:59", s + p);
    p += 6;
  } else {
    WHY("it needs an offset: Z or +HH:MM");
  }
  if (p != n)
    WHY("unexpected text after the offset");
  *ms = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) - (int64_t)sign * (off_h * 3600 + off_m * 60)) *
            1000 +
        frac_ms;
  return 0;
}

#undef WHY

int sl__rfc3339_parse(const char *s, size_t n, int64_t *ms) {
  return sl__rfc3339_check(s, n, ms, NULL, 0);
}

#define NOMEM_IF(n)                                                                                \
  do {                                                                                             \
    if ((n) == SL_ENOMEM) {                                                                        \
      snprintf(err, errlen, "out of memory");                                                      \
      return SL_ENOMEM;                                                                            \
    }                                                                                              \
  } while (0)

int sl__item_parse(const char *line, size_t len, long lineno, const sl_item_defaults *def,
                   sl_item *out, char *err, size_t errlen) {
  sl_json_member m[MAX_MEMBERS];
  char keys[MAX_MEMBERS][SL_NAME_MAX + 1]; /* names with escapes, decoded */
  const sl_json_member *f_id = NULL;
  const sl_json_member *f_type = NULL;
  const sl_json_member *f_payload = NULL;
  char rate[SL_NAME_MAX + 1];
  int has_rate = 0;
  const sl_json_member *f_dedupe = NULL;
  sl_buf dedupe;
  int has_start = 0;
  int64_t start_at = 0;
  int64_t delay = 0;
  size_t n = 0;
  size_t errpos = 0;
  char jerr[96];
  char type[SL_NAME_MAX + 1];
  int prio = def->prio;
  int64_t max_attempts = def->max_attempts;
  int64_t timeout_ms = def->timeout_ms;
  int64_t backoff_ms = def->backoff_ms > 0 ? def->backoff_ms : 1000;
  int64_t backoff_max_ms = def->backoff_max_ms > 0 ? def->backoff_max_ms : 60000;
  sl_buf id;
  sl_buf d;
  int rc;

  memset(out, 0, sizeof(*out));
  sl__buf_init(&id, SL_ITEM_MAX_ID * 4);
  sl__buf_init(&d, SL_ITEM_MAX_LINE + 256);
  if (len > SL_ITEM_MAX_LINE) {
    snprintf(err, errlen, "line is %zu bytes, over the limit of %d", len, SL_ITEM_MAX_LINE);
    return SL_ETOOBIG;
  }
  if (len >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) {
    snprintf(err, errlen, "invalid JSON at column 1: a UTF-8 byte order mark; save the file without it");
    return SL_EINVAL;
  }
  rc = sl__json_validate_strict(line, len, SL_ITEM_MAX_DEPTH, &errpos, jerr, sizeof(jerr));
  if (rc == SL_ENOMEM) {
    snprintf(err, errlen, "out of memory");
    return rc;
  }
  if (rc != 0) {
    if (strstr(jerr, "nesting") != NULL)
      snprintf(err, errlen, "invalid JSON at column %zu: nesting deeper than %d levels", errpos + 1,
               SL_ITEM_MAX_DEPTH);
    else
      snprintf(err, errlen, "invalid JSON at column %zu: %s", errpos + 1, jerr);
    return SL_EINVAL;
  }
  rc = sl__json_members(line, len, m, MAX_MEMBERS, &n);
  if (rc == SL_EINVAL) {
    snprintf(err, errlen, "an item must be a JSON object, like {\"type\":\"noop\",\"payload\":{}}");
    return SL_EINVAL;
  }
  if (rc != 0) {
    snprintf(err, errlen, "an item has at most %d fields", MAX_MEMBERS);
    return SL_EINVAL;
  }

  /* The strict scan refused a key given twice, by its decoded text. */
  for (size_t i = 0; i < n; i++) {
    const sl_json_member *f = &m[i];
    int keylen;
    int vallen = (int)(f->vallen > 40 ? 40 : f->vallen);

    /* A name is read after its escapes are decoded: "r\u0061te_key" is rate_key. */
    if (memchr(m[i].key, '\\', m[i].keylen) != NULL) {
      sl_json_member tok = {NULL, 0, m[i].key - 1, m[i].keylen + 2};
      long kn = str_value(&tok, keys[i], sizeof(keys[i]));

      NOMEM_IF(kn);
      if (kn >= 0) {
        m[i].key = keys[i];
        m[i].keylen = (size_t)kn;
      }
    }
    keylen = (int)(f->keylen > 40 ? 40 : f->keylen);
    if (key_is(f, "id")) {
      f_id = f;
      if (f->val[0] != '"' && !(f->val[0] == '-' || (f->val[0] >= '0' && f->val[0] <= '9'))) {
        snprintf(err, errlen, "field \"id\": expected a string or an integer, got %s", sl__json_kind(f->val));
        return SL_EINVAL;
      }
    } else if (key_is(f, "type")) {
      f_type = f;
    } else if (key_is(f, "payload")) {
      f_payload = f;
    } else if (key_is(f, "priority")) {
      char pname[8];
      long pn = str_value(f, pname, sizeof(pname));

      NOMEM_IF(pn);
      if (pn < 0 || (prio = sl__prio_parse(pname, (size_t)pn)) < 0) {
        snprintf(err, errlen, "field \"priority\": unknown priority %.*s (expected \"high\", \"normal\" or \"low\")",
                 vallen, f->val);
        return SL_EINVAL;
      }
    } else if (key_is(f, "max_attempts")) {
      if (sl__json_int(f->val, f->vallen, 1, 1000, &max_attempts) != 0) {
        snprintf(err, errlen, "field \"max_attempts\": expected an integer from 1 to 1000, got %.*s", vallen,
                 f->val);
        return SL_EINVAL;
      }
    } else if (key_is(f, "timeout_ms")) {
      if (sl__json_int(f->val, f->vallen, 1, 86400000, &timeout_ms) != 0) {
        snprintf(err, errlen, "field \"timeout_ms\": expected an integer from 1 to 86400000 (ms), got %.*s",
                 vallen, f->val);
        return SL_EINVAL;
      }
    } else if (key_is(f, "backoff_ms") || key_is(f, "backoff_max_ms")) {
      int64_t *dst = key_is(f, "backoff_ms") ? &backoff_ms : &backoff_max_ms;

      if (sl__json_int(f->val, f->vallen, 0, 86400000, dst) != 0) {
        snprintf(err, errlen, "field \"%.*s\": expected an integer from 0 to 86400000 (ms), got %.*s", keylen,
                 f->key, vallen, f->val);
        return SL_EINVAL;
      }
    } else if (key_is(f, "rate_key")) {
      long rn = str_value(f, rate, sizeof(rate));

      NOMEM_IF(rn);
      if (rn < 0 || !sl__name_valid(rate, (size_t)rn)) {
        snprintf(err, errlen, "field \"rate_key\": expected a limit name of 1-%d characters [A-Za-z0-9_.:-], got %.*s",
                 SL_NAME_MAX, vallen, f->val);
        return SL_EINVAL;
      }
      has_rate = 1;
    } else if (key_is(f, "run_at")) {
      char why[96] = "not a string";
      char when[64];
      long wn = str_value(f, when, sizeof(when));

      NOMEM_IF(wn);
      if (f->val[0] == '"' && wn < 0)
        snprintf(why, sizeof(why), "not of the form 2026-11-23T10:00:00Z");
      if (wn < 0 || sl__rfc3339_check(when, (size_t)wn, &start_at, why, sizeof(why)) != 0) {
        snprintf(err, errlen,
                 "field \"run_at\": expected an RFC 3339 time like \"2026-11-23T10:00:00Z\", got %.*s: %s",
                 vallen, f->val, why);
        return SL_EINVAL;
      }
      has_start = 1;
    } else if (key_is(f, "delay_ms")) {
      if (sl__json_int(f->val, f->vallen, 0, 31536000000LL, &delay) != 0) {
        snprintf(err, errlen, "field \"delay_ms\": expected an integer from 0 to 31536000000 (ms), got %.*s", vallen,
                 f->val);
        return SL_EINVAL;
      }
      has_start = 1;
    } else if (key_is(f, "dedupe")) {
      if (f->val[0] != '"') {
        snprintf(err, errlen, "field \"dedupe\": expected a string key, got %s", sl__json_kind(f->val));
        return SL_EINVAL;
      }
      f_dedupe = f;
    } else {
      snprintf(err, errlen,
               "field \"%.*s\": unknown field (known: id, type, payload, priority, max_attempts, timeout_ms, "
               "backoff_ms, backoff_max_ms, rate_key, run_at, delay_ms, dedupe)",
               keylen, f->key);
      return SL_EINVAL;
    }
  }

  if (start_at != 0 && delay != 0) {
    snprintf(err, errlen, "field \"delay_ms\": give run_at or delay_ms, not both");
    return SL_EINVAL;
  }
  if (!has_start) {
    start_at = def->start_at_ms;
    delay = def->delay_ms;
  }
  if (f_type == NULL) {
    snprintf(err, errlen, "field \"type\": missing (which handler runs the item, e.g. \"http\")");
    return SL_EINVAL;
  }
  {
    long tn = str_value(f_type, type, sizeof(type));

    NOMEM_IF(tn);
    if (tn < 0 || !sl__name_valid(type, (size_t)tn)) {
      snprintf(err, errlen, "field \"type\": expected a name of 1-%d characters [A-Za-z0-9_.:-], got %.*s",
               SL_NAME_MAX, (int)(f_type->vallen > 40 ? 40 : f_type->vallen), f_type->val);
      return SL_EINVAL;
    }
  }
  if (f_payload == NULL) {
    snprintf(err, errlen, "field \"payload\": missing (use {} or null for none)");
    return SL_EINVAL;
  }
  if (f_payload->vallen > SL_ITEM_MAX_PAYLOAD) {
    snprintf(err, errlen, "field \"payload\": %zu bytes, over the limit of %d", f_payload->vallen,
             SL_ITEM_MAX_PAYLOAD);
    return SL_ETOOBIG;
  }
  rc = check_payload(type, f_payload, err, errlen);
  if (rc != 0)
    return rc;

  /* The id: a string as given, an integer as its decimal text, or the line number. */
  if (f_id == NULL) {
    rc = sl__buf_printf(&id, "%ld", lineno);
  } else if (f_id->val[0] == '"') {
    rc = sl__json_unescape(f_id->val, f_id->vallen, &id);
    if (rc == SL_ETOOBIG || (rc == 0 && id.len > SL_ITEM_MAX_ID)) {
      if (rc == 0)
        snprintf(err, errlen, "field \"id\": %zu bytes, over the limit of %d", id.len, SL_ITEM_MAX_ID);
      else
        snprintf(err, errlen, "field \"id\": over %zu bytes, the limit is %d", id.max, SL_ITEM_MAX_ID);
      sl__buf_free(&id);
      return SL_ETOOBIG;
    }
    if (rc == 0 && id.len == 0) {
      snprintf(err, errlen, "field \"id\": empty");
      sl__buf_free(&id);
      return SL_EINVAL;
    }
    if (rc == 0 && memchr(id.p, '\0', id.len) != NULL) {
      snprintf(err, errlen, "field \"id\": must not contain \\u0000");
      sl__buf_free(&id);
      return SL_EINVAL;
    }
  } else {
    int64_t v;

    if (sl__json_int(f_id->val, f_id->vallen, -9007199254740991LL, 9007199254740991LL, &v) != 0) {
      snprintf(err, errlen, "field \"id\": an integer id must be exact and below 2^53; use a string");
      return SL_EINVAL;
    }
    rc = sl__buf_printf(&id, "%lld", (long long)v);
  }
  if (rc == 0 && id.len > SL_ITEM_MAX_ID) {
    snprintf(err, errlen, "field \"id\": %zu bytes, over the limit of %d", id.len, SL_ITEM_MAX_ID);
    sl__buf_free(&id);
    return SL_ETOOBIG;
  }
  /* The canonical form (item.h): what the functions read comes first. */
  if (rc == 0)
    rc = sl__buf_printf(&d, "{\"type\":\"%s\"", type);
  if (rc == 0 && (has_rate || def->rate_key != NULL))
    rc = sl__buf_printf(&d, ",\"rate_key\":\"%s\"", has_rate ? rate : def->rate_key);
  if (rc == 0)
    rc = sl__buf_printf(&d, ",\"timeout_ms\":%lld,\"max_attempts\":%lld,\"backoff_ms\":%lld,\"backoff_max_ms\":%lld,\"id\":",
                        (long long)timeout_ms, (long long)max_attempts, (long long)backoff_ms,
                        (long long)backoff_max_ms);
  if (rc == 0)
    rc = sl__json_put_str(&d, id.p, id.len);
  if (rc == 0)
    rc = sl__buf_puts(&d, ",\"payload\":");
  if (rc == 0)
    rc = sl__buf_append(&d, f_payload->val, f_payload->vallen);
  if (rc == 0)
    rc = sl__buf_putc(&d, '}');
  sl__buf_init(&dedupe, SL_DEDUPE_MAX + 8);
  if (rc == 0 && f_dedupe != NULL) {
    int urc = sl__json_unescape(f_dedupe->val, f_dedupe->vallen, &dedupe);

    if (urc == SL_ENOMEM) {
      rc = urc;
    } else if (urc != 0 || dedupe.len == 0 || dedupe.len > SL_DEDUPE_MAX || memchr(dedupe.p, '\0', dedupe.len) != NULL) {
      sl__buf_free(&id);
      sl__buf_free(&d);
      sl__buf_free(&dedupe);
      snprintf(err, errlen, "field \"dedupe\": expected a key of 1-%d bytes (no \\u0000)", SL_DEDUPE_MAX);
      return urc == SL_ETOOBIG ? SL_ETOOBIG : SL_EINVAL;
    }
  }
  if (rc != 0) {
    sl__buf_free(&id);
    sl__buf_free(&d);
    sl__buf_free(&dedupe);
    snprintf(err, errlen, "%s", sl_strerror(rc));
    return rc;
  }
  out->prio = prio;
  out->start_at_ms = start_at;
  out->delay_ms = delay;
  out->dlen = d.len;
  out->id = sl__buf_take(&id);
  out->d = sl__buf_take(&d);
  out->dedupe = f_dedupe != NULL ? sl__buf_take(&dedupe) : NULL;
  sl__buf_free(&dedupe);
  if (out->id == NULL || out->d == NULL || (f_dedupe != NULL && out->dedupe == NULL)) {
    sl__item_free(out);
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  return 0;
}
