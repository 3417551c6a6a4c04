/*
 * Secrets: values an operator grants to a worker, named by http items.
 *
 * An http item may write ${env:NAME} in a header value, in its `body`, or
 * in a string inside its `json`; the worker replaces the reference with the
 * value of its environment variable NAME just before the request is sent, so
 * the value never reaches Redis and is never logged. A producer is
 * untrusted, so a reference resolves only when the worker's operator granted
 * NAME:
 *
 *   --secret API_TOKEN                    any host the worker may call
 *   --secret API_TOKEN@api.example.com    only requests to that origin
 *   SLUICE_SECRETS=API_TOKEN,OTHER@h:8443 the same, from the environment
 *
 * The host part is an allow-list pattern (allow.h); granting a name several
 * times adds hosts, and a grant without a host allows any. Names are
 * [A-Za-z_][A-Za-z0-9_]* of at most SL_SECRET_NAME_MAX bytes; names
 * starting SLUICE_ (the worker's own configuration: the Redis URL and
 * password, the webhook secret) can never be granted. Values are read once,
 * when granted: a granted name that is not set is an error at start. The
 * copies are wiped when the worker is freed.
 *
 * References are checked twice: at submit for their form
 * (sl__secret_refs_check: a valid name, not SLUICE_), and in the worker for
 * the grant (sl__secrets_expand). An item naming a secret that is not
 * granted fails for good with "secret NAME is not granted to this worker",
 * as a *refused* item (see docs/ITEM_STATES.md): a configuration problem of
 * the fleet, not broken work, so it leaves no dead letter.
 */
#ifndef SL_SECRET_H
#define SL_SECRET_H

#include <stddef.h>

#include "allow.h"

#define SL_SECRET_NAME_MAX 128 /* a variable name, bytes */
#define SL_SECRET_MAX 256      /* grants on one worker */

typedef struct sl_secrets sl_secrets;

/* 1 when s[0..n) is an environment variable name sluice accepts. */
int sl__env_name_valid(const char *s, size_t n);

/*
 * Checks the ${env:NAME} references in s[0..n) (unescaped text): each is
 * complete and names a valid variable that may be granted. `where` names
 * the field in messages. Returns 0 or SL_EINVAL with a message.
 */
int sl__secret_refs_check(const char *s, size_t n, const char *where, char *err, size_t errlen);

/*
 * Grants "NAME" or "NAME@HOSTPATTERN" to *s (created when NULL), reading
 * NAME's value from the environment now. Returns 0, SL_ENOMEM, or SL_EINVAL
 * with a message (bad name, SLUICE_ name, bad host pattern, not set).
 */
int sl__secrets_grant(sl_secrets **s, const char *spec, char *err, size_t errlen);

/*
 * Returns a copy of `text` with every ${env:NAME} replaced by the granted
 * value, for a request to origin `o` (free with sl_free). On failure
 * returns NULL with a message naming the field and the secret, never its
 * value, and *refused says why: 1 a grant (not granted, or not for this
 * origin), -1 out of memory, 0 the text itself (a malformed reference, or
 * too long once resolved).
 */
char *sl__secrets_expand(const sl_secrets *s, const char *text, const sl_origin *o, const char *where,
                         int *refused, char *err, size_t errlen);

void sl__secrets_free(sl_secrets *s);

#endif
