/*
 * sluice library load | check
 *
 * The function library (lua/) is the code every worker of every queue on a
 * Redis runs, so loading it is an operator's act: `load` replaces whatever
 * is loaded with this build's library; every other command only checks the
 * version and says what to do. `check` prints the version this build needs
 * and exits 0 when it is the one loaded, 1 otherwise.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_library(int argc, char **argv) {
  cli_common com;
  int first = cli_parse(argc, argv, &com, NULL, 0);
  const char *url;
  char err[512];

  if (first < 0 || first != argc - 1)
    return cli_usage("library");
  if (strcmp(argv[first], "load") != 0 && strcmp(argv[first], "check") != 0) {
    cli_err("library: unknown subcommand \"%s\" (expected load or check)", cli_safe(argv[first]));
    return cli_usage("library");
  }
  url = cli_redis_url(&com);
  if (url == NULL)
    return EXIT_USAGE;
  if (strcmp(argv[first], "load") == 0) {
    int rc = sl_library_load(url, err, sizeof(err));

    if (rc != 0) {
      cli_err("%s", err);
      return rc == SL_EINVAL ? EXIT_USAGE : EXIT_RUNTIME;
    }
    fprintf(stderr, "sluice: loaded the function library v%s\n", sl_library_version());
    return EXIT_OK;
  }
  {
    sl_client_t *cl = cli_open(&com);

    if (cl == NULL)
      return cli_open_exit();
    sl_client_close(cl);
    printf("%s\n", sl_library_version());
    return EXIT_OK;
  }
}
