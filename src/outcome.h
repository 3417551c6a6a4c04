/*
 * Outcomes on their way to Redis (see outcome.c): the done queue and
 * sluice_v1_complete.
 */
#ifndef SL_OUTCOME_H
#define SL_OUTCOME_H

#include <stddef.h>
#include <stdint.h>

#include <sluice/sluice.h>

/* A finished item waiting to be written by sluice_v1_complete. */
typedef struct sl_done {
  struct sl_done *next; /* FIFO link */
  int prio;             /* SL_PRIO_* of the stream it came from */
  char *eid;            /* stream entry id */
  char *batch;          /* batch id */
  char *idx;            /* item index, decimal */
  char outcome;         /* 's' succeeded, 'f' failed for good, 'x' refused, 'r' retry */
  char *line;           /* 's'/'f': the results line; 'r': the errors so far (JSON array) */
  size_t linelen;       /* its length, bytes */
  int64_t delay_ms;     /* 'r': when to run again, ms from now */
  char *item;           /* 'f': the item JSON, for its dead letter; else NULL */
  char lease[SL_NAME_MAX + 1]; /* the concurrency lease to return, or "" */
  int had_progress;     /* the attempt reported progress: its field is removed */
} sl_done;

/* Frees one record. */
void sl__outcome_free_one(sl_done *d);
/* Drops every record not yet written (a fatal error, a freed worker). */
void sl__outcome_drop_all(sl_worker_t *w);

#endif
