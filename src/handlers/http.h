/*
 * The `http` item handler (see http.c): one request per attempt through the
 * worker's HTTP client, built from a checked payload, with granted secrets.
 */
#ifndef SL_HANDLERS_HTTP_H
#define SL_HANDLERS_HTTP_H

#include "handler.h"

extern const sl_handler_vt sl__handler_http;

/* Grants a secret to http items: "NAME" or "NAME@HOST" (secret.h). */
int sl__http_grant(void *state, const char *spec, char *err, size_t errlen);

#endif
