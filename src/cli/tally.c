/*
 * The summary of `sluice submit --check FILE`: how many valid items there
 * are of each type and priority. Items reach it only after sl_batch_add
 * accepted them, so each is a JSON object with a string `type`; its
 * `priority` is its own, else the --priority option, else "normal".
 * Distinct (type, priority) pairs are kept in a small array in the order
 * first seen; past TALLY_MAX pairs the rest are counted together.
 */
#include "tally.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define TALLY_MAX 256 /* distinct (type, priority) pairs listed */

typedef struct pair {
  char *type;
  char prio[8];
  long n;
} pair;

struct cli_tally {
  pair p[TALLY_MAX];
  int np;
  long other; /* items past TALLY_MAX pairs */
  long items;
};

cli_tally *cli_tally_new(void) {
  return calloc(1, sizeof(cli_tally));
}

void cli_tally_add(cli_tally *t, const char *line, size_t len, const char *default_prio) {
  cJSON *j = cJSON_ParseWithLength(line, len);
  const cJSON *ty = cJSON_GetObjectItemCaseSensitive(j, "type");
  const cJSON *pr = cJSON_GetObjectItemCaseSensitive(j, "priority");
  const char *type = cJSON_IsString(ty) ? ty->valuestring : "?";
  const char *prio = cJSON_IsString(pr) ? pr->valuestring : (default_prio ? default_prio : "normal");
  int i = 0;

  t->items++;
  while (i < t->np && (strcmp(t->p[i].type, type) != 0 || strcmp(t->p[i].prio, prio) != 0))
    i++;
  if (i == t->np) {
    if (t->np == TALLY_MAX || (t->p[i].type = strdup(type)) == NULL) {
      t->other++;
      cJSON_Delete(j);
      return;
    }
    snprintf(t->p[i].prio, sizeof(t->p[i].prio), "%s", prio);
    t->np++;
  }
  t->p[i].n++;
  cJSON_Delete(j);
}

void cli_tally_print(const cli_tally *t, FILE *out) {
  fprintf(out, "%ld items\n", t->items);
  fprintf(out, "%-32s  %-8s  %10s\n", "TYPE", "PRIORITY", "ITEMS");
  for (int i = 0; i < t->np; i++)
    fprintf(out, "%-32s  %-8s  %10ld\n", t->p[i].type, t->p[i].prio, t->p[i].n);
  if (t->other > 0)
    fprintf(out, "%-32s  %-8s  %10ld\n", "(other types)", "", t->other);
}

void cli_tally_free(cli_tally *t) {
  if (t == NULL)
    return;
  for (int i = 0; i < t->np; i++)
    free(t->p[i].type);
  free(t);
}
