/*
 * Redis URLs: redis://[user:password@]host[:port][/db],
 * redis+cluster://[user:password@]host[:port][,host[:port]...] (seed nodes
 * of a Redis Cluster: any one that answers tells where the rest are) and
 * unix:///path/to/redis.sock[?db=N] (user and password may also be given as
 * unix://user:password@/path). Percent-escapes in user and password are
 * decoded, so a password may hold any byte.
 */
#ifndef SL_URL_H
#define SL_URL_H

#include <stddef.h>

#define SL_URL_SEEDS_MAX 16 /* nodes named in a cluster URL */

typedef struct sl_url {
  char *host;     /* TCP host, NULL for a unix socket; a cluster's first seed */
  int port;       /* TCP port, 6379 by default */
  int cluster;    /* 1: redis+cluster:// */
  int nseeds;     /* TCP: the nodes named (1 for redis://) */
  char *seed_host[SL_URL_SEEDS_MAX]; /* their hosts */
  int seed_port[SL_URL_SEEDS_MAX];   /* and ports */
  char *path;     /* unix socket path, NULL for TCP */
  char *user;     /* ACL user, NULL when none */
  char *password; /* NULL when none */
  int db;         /* database number, 0 by default */
} sl_url;

/* Parses `s` into *u (all fields owned by u). On failure returns SL_EINVAL,
 * writes the reason into err and leaves *u zeroed. */
int sl__url_parse(const char *s, sl_url *u, char *err, size_t errlen);
void sl__url_free(sl_url *u);
/* The URL with the password masked ("redis://user:***@host:6379/0"). */
void sl__url_describe(const sl_url *u, char *out, size_t len);

#endif
