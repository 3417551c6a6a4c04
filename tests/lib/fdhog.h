/* The `hog` item type of the descriptor tests; see fdhog.c. */
#ifndef SL_FDHOG_H
#define SL_FDHOG_H

#include <hiredis/hiredis.h>

#include <sluice/sluice.h>

extern sl_worker_t *hog_w;   /* the worker under test */
extern redisContext *hog_c;  /* opened before the descriptors run out */
extern const char *hog_q;    /* its queue */
extern char hog_batch[64];   /* the batch */

/* The handler of the `hog` type (hog_worker registers it). */
void hog_start(sl_job_t *j, void *ud);

/* Lowers the descriptor limit to 256 (so that the hog runs out soon,
 * whatever the machine allows), opens hog_c and makes hog_w on a new queue
 * hog_q with 2 slots and the `hog` type registered. */
void hog_worker(const char *queue);

/* Runs hog_w with its log in `errpath` until the hog's timer stops it,
 * checks that exactly one item was given back and returns the log (free
 * it). */
char *hog_run(const char *errpath);

/* Frees hog_w, checks that both items of hog_batch succeeded, none failed,
 * and closes hog_c. */
void hog_done(void);

#endif
