/*
 * Synchronous connections. The CLI and producers use one blocking hiredis
 * context with connect and command timeouts, so an unreachable Redis is a
 * clear message after at most SL_CONNECT_TIMEOUT_MS, never a hang. TCP
 * connections, the worker's async ones included, get keepalive and
 * TCP_USER_TIMEOUT (sl__redis_keepalive), so a silent link fails within
 * about 30 s even when no command is waiting for a reply.
 *
 * Redis's error replies become the client's messages here
 * (sl__redis_errmsg), so every command words them alike: an OOM answer
 * names the maxmemory it hit, and is never taken for a version problem.
 */
#define _GNU_SOURCE /* program_invocation_short_name */
#include "conn.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <errno.h>
#include <unistd.h>

#include "alloc.h"
#include "cluster.h"
#include "script.h"

void sl__redis_keepalive(int fd) {
  int on = 1;
  int idle = SL_KEEPALIVE_IDLE_S;
  int intvl = SL_KEEPALIVE_INTVL_S;
  int cnt = SL_KEEPALIVE_CNT;
  unsigned int user_timeout = SL_TCP_USER_TIMEOUT_MS;

  if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0)
    return;
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
#ifdef TCP_USER_TIMEOUT
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
#else
  (void)user_timeout;
#endif
}

int sl__redis_connect(const sl_url *u, int timeout_ms, redisContext **out, char *err, size_t errlen) {
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  struct timeval ctv = {SL_COMMAND_TIMEOUT_MS / 1000, 0};
  char where[300];
  redisContext *rc;
  redisReply *r;

  sl__url_describe(u, where, sizeof(where));
  if (u->path != NULL)
    rc = redisConnectUnixWithTimeout(u->path, tv);
  else
    rc = redisConnectWithTimeout(u->host, u->port, tv);
  if (rc == NULL) {
    snprintf(err, errlen, "cannot connect to Redis at %s: out of memory", where);
    return SL_ENOMEM;
  }
  if (rc->err) {
    snprintf(err, errlen, "cannot connect to Redis at %s: %s", where, rc->errstr);
    redisFree(rc);
    return SL_ECONN;
  }
  fcntl(rc->fd, F_SETFD, FD_CLOEXEC); /* hiredis 0.14.1 does not: no child inherits the connection */
  if (u->path == NULL)
    sl__redis_keepalive(rc->fd);
  redisSetTimeout(rc, ctv);
  if (u->password != NULL) {
    if (u->user != NULL)
      r = redisCommand(rc, "AUTH %s %s", u->user, u->password);
    else
      r = redisCommand(rc, "AUTH %s", u->password);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
      snprintf(err, errlen, "Redis at %s refused the credentials: %s", where,
               r ? r->str : rc->errstr);
      if (r != NULL)
        freeReplyObject(r);
      redisFree(rc);
      return r ? SL_EREDIS : SL_ECONN;
    }
    freeReplyObject(r);
  }
  if (u->db != 0) {
    r = redisCommand(rc, "SELECT %d", u->db);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
      snprintf(err, errlen, "Redis at %s: SELECT %d failed: %s", where, u->db,
               r ? r->str : rc->errstr);
      if (r != NULL)
        freeReplyObject(r);
      redisFree(rc);
      return r ? SL_EREDIS : SL_ECONN;
    }
    freeReplyObject(r);
  }
  /* A server that needs a password answers NOAUTH to the first real command. */
  r = redisCommand(rc, "PING");
  if (r == NULL || r->type == REDIS_REPLY_ERROR) {
    snprintf(err, errlen, "Redis at %s: %s%s", where, r ? r->str : rc->errstr,
             r && strncmp(r->str, "NOAUTH", 6) == 0 ? " (give the password in the URL: redis://:PASSWORD@host)" : "");
    if (r != NULL)
      freeReplyObject(r);
    redisFree(rc);
    return r ? SL_EREDIS : SL_ECONN;
  }
  freeReplyObject(r);
  *out = rc;
  return 0;
}

/* ---- Error replies ---- */

/* Redis's maxmemory in bytes, from CONFIG GET (the README's ACL users may
 * not), else from INFO memory; 0 when neither answers or there is none. */
static unsigned long long maxmemory(redisContext *rc) {
  unsigned long long max = 0;
  redisReply *r = redisCommand(rc, "CONFIG GET maxmemory");

  if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
    max = strtoull(r->element[1]->str, NULL, 10);
  } else if (r != NULL) {
    freeReplyObject(r);
    r = redisCommand(rc, "INFO memory");
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
      const char *p = strstr(r->str, "\r\nmaxmemory:");

      if (p != NULL)
        max = strtoull(p + 12, NULL, 10);
    }
  }
  if (r != NULL)
    freeReplyObject(r);
  return max;
}

void sl__redis_errmsg(redisContext *rc, const char *msg, char *out, size_t len) {
  unsigned long long max;

  if (strncmp(msg, "OOM ", 4) != 0) {
    snprintf(out, len, "%s", msg);
    return;
  }
  max = rc != NULL && rc->err == 0 ? maxmemory(rc) : 0;
  if (max > 0)
    snprintf(out, len, "Redis is out of memory (maxmemory %.1f MiB): %s", (double)max / 1048576.0, msg);
  else
    snprintf(out, len, "Redis is out of memory (maxmemory): %s", msg);
}

SL_EXTERN void sl_client_set_actor(sl_client_t *c, const char *who) {
  char host[128] = "?";
  size_t n;

  if (who == NULL) {
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(c->actor, sizeof(c->actor), "%s pid %ld (%s)", host, (long)getpid(), program_invocation_short_name);
  } else {
    snprintf(c->actor, sizeof(c->actor), "%s", who);
  }
  /* printable ASCII only, as the functions keep it (sl_by in lua/_lib.lua) */
  for (n = 0; c->actor[n] != '\0'; n++) {
    if ((unsigned char)c->actor[n] < 32 || (unsigned char)c->actor[n] > 126)
      c->actor[n] = '?';
  }
}

SL_EXTERN int sl_client_open(const char *url, sl_client_t **out, char *errbuf, size_t errlen) {
  sl_client_t *c;
  int rc;

  sl__alloc_init(); /* cJSON allocates through sl_malloc from here on */
  c = sl_calloc(1, sizeof(*c));
  if (c == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return SL_ENOMEM;
  }
  sl_client_set_actor(c, NULL);
  rc = sl__url_parse(url, &c->url, errbuf, errlen);
  if (rc != 0)
    goto fail;
  c->url_str = sl_strdup(url);
  if (c->url_str == NULL) {
    rc = SL_ENOMEM;
    snprintf(errbuf, errlen, "out of memory");
    goto fail;
  }
  if (c->url.cluster) {
    /* The slot map, and a first node (its library checked, as every node's is when first used). */
    rc = sl__cluster_new(&c->url, &c->cluster);
    if (rc == 0)
      rc = sl__cluster_use(c, -1, SL_CONNECT_TIMEOUT_MS);
    if (rc != 0) {
      snprintf(errbuf, errlen, "%s", rc == SL_ENOMEM ? "out of memory" : c->errstr);
      goto fail;
    }
  } else {
    rc = sl__redis_connect(&c->url, SL_CONNECT_TIMEOUT_MS, &c->rc, errbuf, errlen);
    if (rc != 0)
      goto fail;
    rc = sl__script_ensure(c->rc, errbuf, errlen);
    if (rc != 0)
      goto fail;
  }
  *out = c;
  return 0;
fail:
  sl_client_close(c);
  return rc;
}

/* Loads the library on every master of a cluster (replicas get it from
 * their masters). */
static int load_cluster(const char *url, char *errbuf, size_t errlen) {
  char (*addr)[300] = sl_malloc(SL_CLUSTER_NODES * sizeof(*addr));
  sl_client_t *c = sl_calloc(1, sizeof(*c));
  int n;
  int code;

  if (addr == NULL || c == NULL) {
    sl_free(addr);
    sl_free(c);
    snprintf(errbuf, errlen, "out of memory");
    return SL_ENOMEM;
  }
  code = sl__url_parse(url, &c->url, errbuf, errlen);
  if (code == 0)
    code = sl__cluster_new(&c->url, &c->cluster);
  if (code == 0) {
    sl__cluster_no_check(c->cluster);
    n = sl__cluster_masters(c, addr, SL_CLUSTER_NODES);
    code = n < 0 ? SL_ECONN : 0;
    for (int i = 0; code == 0 && i < n; i++) {
      redisContext *rc = NULL;

      code = sl__cluster_connect(c, addr[i], &rc);
      if (code == 0)
        code = sl__script_load(rc, c->errstr, sizeof(c->errstr));
      if (code == 0)
        code = sl__script_ensure(rc, c->errstr, sizeof(c->errstr));
      if (code != 0) {
        char why[512];

        snprintf(why, sizeof(why), "%s", c->errstr);
        sl__client_fail(c, code, "master %s: %s", addr[i], why);
      }
      if (rc != NULL)
        redisFree(rc);
    }
    if (code != 0)
      snprintf(errbuf, errlen, "%s", c->errstr);
  }
  sl_client_close(c);
  sl_free(addr);
  return code;
}

SL_EXTERN int sl_library_load(const char *url, char *errbuf, size_t errlen) {
  sl_url u;
  redisContext *rc = NULL;
  int code;

  if (url != NULL && strncmp(url, "redis+cluster://", 16) == 0)
    return load_cluster(url, errbuf, errlen);
  code = sl__url_parse(url, &u, errbuf, errlen);
  if (code != 0)
    return code;
  code = sl__redis_connect(&u, SL_CONNECT_TIMEOUT_MS, &rc, errbuf, errlen);
  if (code == 0)
    code = sl__script_load(rc, errbuf, errlen);
  if (code == 0)
    code = sl__script_ensure(rc, errbuf, errlen);
  if (rc != NULL)
    redisFree(rc);
  sl__url_free(&u);
  return code;
}

SL_EXTERN const char *sl_library_version(void) {
  return sl__library_version();
}

SL_EXTERN void sl_client_close(sl_client_t *c) {
  if (c == NULL)
    return;
  if (c->rc != NULL)
    redisFree(c->rc);
  sl__cluster_free(c->cluster);
  sl__url_free(&c->url);
  sl_free(c->url_str);
  sl_free(c);
}

SL_EXTERN const char *sl_client_errstr(const sl_client_t *c) {
  return c->errstr;
}

int sl__client_fail(sl_client_t *c, int code, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(c->errstr, sizeof(c->errstr), fmt, ap);
  va_end(ap);
  return code;
}

void sl__client_drop(sl_client_t *c) {
  if (c->cluster != NULL) {
    sl__cluster_lost(c);
  } else if (c->rc != NULL) {
    redisFree(c->rc);
    c->rc = NULL;
  }
}

int sl__client_connect_same(sl_client_t *c, int timeout_ms, redisContext **out) {
  if (c->cluster != NULL)
    return sl__cluster_connect_current(c, timeout_ms, out);
  return sl__redis_connect(&c->url, timeout_ms, out, c->errstr, sizeof(c->errstr));
}

int sl__client_route(sl_client_t *c, const char *key) {
  if (c->cluster != NULL)
    return sl__cluster_use(c, (int)sl__key_slot(key, strlen(key)), SL_CLUSTER_WAIT_MS);
  return c->rc != NULL ? 0 : sl__client_fail(c, SL_ECONN, "the Redis connection is closed");
}

/* Sends ASKING and the command in one write, and returns the command's
 * reply (a redirect ASK said the key is on this node for now). */
static redisReply *asking_cmd(redisContext *rc, int argc, const char **argv, const size_t *lens) {
  redisReply *ok = NULL;
  void *r = NULL;

  if (redisAppendCommand(rc, "ASKING") != REDIS_OK || redisAppendCommandArgv(rc, argc, argv, lens) != REDIS_OK)
    return NULL;
  if (redisGetReply(rc, (void **)&ok) != REDIS_OK)
    return NULL;
  freeReplyObject(ok);
  if (redisGetReply(rc, &r) != REDIS_OK)
    return NULL;
  return r;
}

redisReply *sl__client_cmd(sl_client_t *c, int *rcode, int argc, const char **argv,
                           const size_t *lens) {
  redisReply *r;
  int asking = 0;
  int tries = 0;
  long long waited = 0;

  if (c->cluster != NULL) {
    int slot = sl__command_slot(argc, argv, lens);

    if ((slot >= 0 || c->rc == NULL) && sl__cluster_use(c, slot, SL_CLUSTER_WAIT_MS) != 0) {
      *rcode = SL_ECONN;
      return NULL;
    }
  }
  for (;;) {
    int again;

    if (c->rc == NULL) {
      *rcode = sl__client_fail(c, SL_ECONN, "the Redis connection is closed");
      return NULL;
    }
    r = asking ? asking_cmd(c->rc, argc, argv, lens) : redisCommandArgv(c->rc, argc, argv, lens);
    if (r == NULL) {
      *rcode = sl__client_fail(c, SL_ECONN, "lost the Redis connection: %s", c->rc->errstr);
      sl__client_drop(c);
      return NULL;
    }
    if (r->type != REDIS_REPLY_ERROR)
      break;
    again = c->cluster != NULL ? sl__cluster_redirect(c, r->str, &asking, &tries, &waited) : 0;
    if (again > 0) {
      freeReplyObject(r);
      continue;
    }
    if (again == 0)
      sl__redis_errmsg(c->rc, r->str, c->errstr, sizeof(c->errstr));
    *rcode = SL_EREDIS;
    freeReplyObject(r);
    return NULL;
  }
  *rcode = 0;
  return r;
}

int sl__client_reconnect(sl_client_t *c, int timeout_ms) {
  if (c->cluster != NULL)
    return sl__cluster_reconnect(c, timeout_ms);
  if (c->rc != NULL) {
    redisFree(c->rc);
    c->rc = NULL;
  }
  return sl__redis_connect(&c->url, timeout_ms, &c->rc, c->errstr, sizeof(c->errstr));
}

redisReply *sl__client_fcall(sl_client_t *c, int *rcode, const char *fn, int nkeys, int argc,
                             const char **argv, const size_t *lens) {
  const char **av = sl_malloc(sizeof(*av) * ((size_t)argc + 3));
  size_t *al = sl_malloc(sizeof(*al) * ((size_t)argc + 3));
  char name[64];
  char nk[16];
  redisReply *r = NULL;

  if (av == NULL || al == NULL) {
    *rcode = sl__client_fail(c, SL_ENOMEM, "out of memory");
    goto out;
  }
  snprintf(name, sizeof(name), "sluice_v1_%s", fn);
  snprintf(nk, sizeof(nk), "%d", nkeys);
  av[0] = "FCALL";
  al[0] = 5;
  av[1] = name;
  al[1] = strlen(name);
  av[2] = nk;
  al[2] = strlen(nk);
  for (int i = 0; i < argc; i++) {
    av[i + 3] = argv[i];
    al[i + 3] = lens ? lens[i] : strlen(argv[i]);
  }
  r = sl__client_cmd(c, rcode, argc + 3, av, al);
  if (r == NULL && *rcode == SL_EREDIS && sl__script_missing(c->errstr)) {
    int rc = sl__script_ensure(c->rc, c->errstr, sizeof(c->errstr));

    if (rc != 0) {
      *rcode = rc;
      goto out;
    }
    r = sl__client_cmd(c, rcode, argc + 3, av, al);
  }
out:
  sl_free(av);
  sl_free(al);
  return r;
}
