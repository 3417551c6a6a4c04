/* The summary of `sluice submit --check`: valid items by type and priority. */
#ifndef SL_CLI_TALLY_H
#define SL_CLI_TALLY_H

#include <stddef.h>
#include <stdio.h>

typedef struct cli_tally cli_tally;

cli_tally *cli_tally_new(void);
/* Counts one item that sl_batch_add accepted (line: its JSON, len bytes);
 * default_prio is the --priority option or NULL. */
void cli_tally_add(cli_tally *t, const char *line, size_t len, const char *default_prio);
/* The item count, then one line per type and priority. */
void cli_tally_print(const cli_tally *t, FILE *out);
void cli_tally_free(cli_tally *t);

#endif
