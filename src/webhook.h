/* Completion webhooks, sent by workers; see webhook.c. */
#ifndef SL_WEBHOOK_H
#define SL_WEBHOOK_H

#include <sluice/sluice.h>

/* Starts the worker's look for due webhooks (its timer is initialized). */
void sl__webhook_start(sl_worker_t *w);

#endif
