/* The `hog` item type of the descriptor tests; see fdhog.c. */
#ifndef SL_FDHOG_H
#define SL_FDHOG_H

#include <hiredis/hiredis.h>

#include <sluice/sluice.h>

extern sl_worker_t *hog_w;   /* the worker under test */
extern redisContext *hog_c;  /* opened before the descriptors run out */
extern const char *hog_q;    /* its queue */
extern char hog_batch[64];   /* the batch */

/* The handler of the `hog` type (register it with sl_worker_register). */
void hog_start(sl_job_t *j, void *ud);

#endif
