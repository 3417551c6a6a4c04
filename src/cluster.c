/* Redis Cluster routing of the synchronous client; see cluster.h. */
#include "cluster.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "conn.h"
#include "script.h"

typedef struct cnode {
  char host[256];
  int port;
  redisContext *idle; /* a connection kept while another node is in use, or NULL */
} cnode;

struct sl_cluster {
  cnode node[SL_CLUSTER_NODES];
  int n;                           /* nodes known: the seeds first */
  int16_t owner[SL_CLUSTER_SLOTS]; /* node index of each slot's master, -1 unknown */
  int cur;                         /* the node c->rc is connected to, -1 none */
  int no_check;                    /* 1: new connections skip the library check (sl_library_load) */
  int slot;                        /* the slot c->rc was chosen for, -1 none */
};

/* CRC16-CCITT (XMODEM), the hash of Redis Cluster's key slots. */
static uint16_t crc16(const char *buf, size_t len) {
  uint16_t crc = 0;

  for (size_t i = 0; i < len; i++) {
    crc ^= (uint16_t)((unsigned char)buf[i] << 8);
    for (int b = 0; b < 8; b++)
      crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
  }
  return crc;
}

unsigned sl__key_slot(const char *key, size_t len) {
  const char *open = memchr(key, '{', len);

  if (open != NULL) {
    size_t rest = len - (size_t)(open + 1 - key);
    const char *close = memchr(open + 1, '}', rest);

    if (close != NULL && close > open + 1)
      return crc16(open + 1, (size_t)(close - open - 1)) & (SL_CLUSTER_SLOTS - 1);
  }
  return crc16(key, len) & (SL_CLUSTER_SLOTS - 1);
}

int sl__command_slot(int argc, const char **argv, const size_t *lens) {
  if (argc < 2)
    return -1;
  if (strcasecmp(argv[0], "FCALL") == 0 || strcasecmp(argv[0], "FCALL_RO") == 0) {
    if (argc > 3 && atoi(argv[2]) > 0)
      return (int)sl__key_slot(argv[3], lens ? lens[3] : strlen(argv[3]));
    return -1;
  }
  if (strcasecmp(argv[0], "XREADGROUP") == 0 || strcasecmp(argv[0], "XREAD") == 0) {
    for (int i = 1; i + 1 < argc; i++) {
      if (strcasecmp(argv[i], "STREAMS") == 0)
        return (int)sl__key_slot(argv[i + 1], lens ? lens[i + 1] : strlen(argv[i + 1]));
    }
    return -1;
  }
  for (int i = 1; i < argc; i++) {
    size_t len = lens ? lens[i] : strlen(argv[i]);

    if (len > 8 && memcmp(argv[i], "sluice:{", 8) == 0)
      return (int)sl__key_slot(argv[i], len);
  }
  return -1;
}

/* The index of node host:port, added when new; -1 when the table is full. */
static int node_of(sl_cluster *k, const char *host, size_t hostlen, int port) {
  for (int i = 0; i < k->n; i++) {
    if (k->node[i].port == port && strlen(k->node[i].host) == hostlen && memcmp(k->node[i].host, host, hostlen) == 0)
      return i;
  }
  if (k->n == SL_CLUSTER_NODES || hostlen >= sizeof(k->node[0].host))
    return -1;
  memcpy(k->node[k->n].host, host, hostlen);
  k->node[k->n].host[hostlen] = '\0';
  k->node[k->n].port = port;
  k->node[k->n].idle = NULL;
  return k->n++;
}

/* Splits "host:port" (the last colon: an IPv6 host has more) into the node
 * table; -1 when malformed or the table is full. */
static int node_of_addr(sl_cluster *k, const char *addr, size_t len) {
  const char *colon = NULL;
  int port;

  for (size_t i = 0; i < len; i++) {
    if (addr[i] == ':')
      colon = addr + i;
  }
  if (colon == NULL || colon == addr)
    return -1;
  port = atoi(colon + 1);
  if (port < 1 || port > 65535)
    return -1;
  return node_of(k, addr, (size_t)(colon - addr), port);
}

int sl__cluster_new(const sl_url *u, sl_cluster **out) {
  sl_cluster *k = sl_calloc(1, sizeof(*k));

  if (k == NULL)
    return SL_ENOMEM;
  for (int i = 0; i < SL_CLUSTER_SLOTS; i++)
    k->owner[i] = -1;
  for (int i = 0; i < u->nseeds; i++)
    node_of(k, u->seed_host[i], strlen(u->seed_host[i]), u->seed_port[i]);
  k->cur = -1;
  k->slot = -1;
  *out = k;
  return 0;
}

void sl__cluster_free(sl_cluster *k) {
  if (k == NULL)
    return;
  for (int i = 0; i < k->n; i++) {
    if (k->node[i].idle != NULL)
      redisFree(k->node[i].idle);
  }
  sl_free(k);
}

/* Connects to node i and, unless the client loads the library itself,
 * checks that the node has this build's library (each master holds its
 * own copy). */
static int connect_node(sl_client_t *c, int i, redisContext **out) {
  sl_url nu = c->url;
  int rc;

  nu.host = c->cluster->node[i].host;
  nu.port = c->cluster->node[i].port;
  nu.path = NULL;
  rc = sl__redis_connect(&nu, SL_CONNECT_TIMEOUT_MS, out, c->errstr, sizeof(c->errstr));
  if (rc == 0 && !c->cluster->no_check) {
    rc = sl__script_ensure(*out, c->errstr, sizeof(c->errstr));
    if (rc != 0) {
      char why[512];

      snprintf(why, sizeof(why), "%s", c->errstr);
      sl__client_fail(c, rc, "Redis Cluster node %s:%d: %s", nu.host, nu.port, why);
      redisFree(*out);
      *out = NULL;
    }
  }
  return rc;
}

void sl__cluster_no_check(sl_cluster *k) {
  k->no_check = 1;
}

int sl__cluster_connect_current(sl_client_t *c, int timeout_ms, redisContext **out) {
  sl_cluster *k = c->cluster;
  sl_url nu = c->url;

  if (k->cur < 0)
    return sl__client_fail(c, SL_ECONN, "no Redis Cluster node is in use");
  nu.host = k->node[k->cur].host;
  nu.port = k->node[k->cur].port;
  nu.path = NULL;
  return sl__redis_connect(&nu, timeout_ms, out, c->errstr, sizeof(c->errstr));
}

int sl__cluster_connect(sl_client_t *c, const char *addr, redisContext **out) {
  int i = node_of_addr(c->cluster, addr, strlen(addr));

  if (i < 0)
    return sl__client_fail(c, SL_EPROTO, "bad Redis Cluster node address \"%s\"", addr);
  return connect_node(c, i, out);
}

/* Keeps c->rc as its node's idle connection (or closes it). */
static void park(sl_client_t *c) {
  sl_cluster *k = c->cluster;

  if (c->rc != NULL) {
    if (k->cur >= 0 && k->node[k->cur].idle == NULL && c->rc->err == 0)
      k->node[k->cur].idle = c->rc;
    else
      redisFree(c->rc);
  }
  c->rc = NULL;
  k->cur = -1;
}

/* Makes c->rc a connection to node i: its idle one, or a new one. */
static int take(sl_client_t *c, int i) {
  sl_cluster *k = c->cluster;
  int rc;

  if (k->cur == i && c->rc != NULL && c->rc->err == 0)
    return 0;
  park(c);
  if (k->node[i].idle != NULL) {
    c->rc = k->node[i].idle;
    k->node[i].idle = NULL;
    k->cur = i;
    return 0;
  }
  rc = connect_node(c, i, &c->rc);
  if (rc != 0) {
    c->rc = NULL;
    return rc;
  }
  k->cur = i;
  return 0;
}

/* The node is gone: no slot is known to live there any more. */
static void forget(sl_cluster *k, int i) {
  for (int s = 0; s < SL_CLUSTER_SLOTS; s++) {
    if (k->owner[s] == i)
      k->owner[s] = -1;
  }
  if (k->node[i].idle != NULL) {
    redisFree(k->node[i].idle);
    k->node[i].idle = NULL;
  }
}

/* Applies a CLUSTER SLOTS reply: [[start, end, [host, port, id, ...],
 * replicas...], ...]. Returns the number of ranges read. */
static int apply_slots(sl_cluster *k, const redisReply *r, int from) {
  int ranges = 0;

  for (int s = 0; s < SL_CLUSTER_SLOTS; s++)
    k->owner[s] = -1;
  for (size_t e = 0; e < r->elements; e++) {
    const redisReply *x = r->element[e];
    const redisReply *m;
    long long lo;
    long long hi;
    int i;

    if (x->type != REDIS_REPLY_ARRAY || x->elements < 3 || x->element[0]->type != REDIS_REPLY_INTEGER ||
        x->element[1]->type != REDIS_REPLY_INTEGER || x->element[2]->type != REDIS_REPLY_ARRAY)
      continue;
    lo = x->element[0]->integer;
    hi = x->element[1]->integer;
    m = x->element[2];
    if (m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_INTEGER ||
        lo < 0 || hi >= SL_CLUSTER_SLOTS || lo > hi)
      continue;
    if (m->element[0]->len == 0 || strcmp(m->element[0]->str, "?") == 0)
      i = from; /* the endpoint is unknown to the node: it is the one that answered */
    else
      i = node_of(k, m->element[0]->str, m->element[0]->len, (int)m->element[1]->integer);
    if (i < 0)
      continue;
    for (long long s = lo; s <= hi; s++)
      k->owner[s] = (int16_t)i;
    ranges++;
  }
  return ranges;
}

/* Reads the slot map from the first node that answers: the one in use,
 * then every known node (the seeds first), and leaves c->rc on it. 0, or
 * SL_ECONN with the last node's failure in c->errstr. */
static int refresh(sl_client_t *c) {
  sl_cluster *k = c->cluster;
  char tried[SL_CLUSTER_NODES] = {0};
  char last[512] = "no node is known";

  for (int t = -1; t < k->n; t++) {
    int i = t < 0 ? k->cur : t;
    redisReply *r;

    if (i < 0 || tried[i])
      continue;
    tried[i] = 1;
    if (take(c, i) != 0) {
      snprintf(last, sizeof(last), "%s", c->errstr);
      forget(k, i);
      continue;
    }
    r = redisCommand(c->rc, "CLUSTER SLOTS");
    if (r == NULL) {
      snprintf(last, sizeof(last), "%s:%d: %s", k->node[i].host, k->node[i].port, c->rc->errstr);
      redisFree(c->rc);
      c->rc = NULL;
      k->cur = -1;
      forget(k, i);
      continue;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
      snprintf(last, sizeof(last), "%s:%d answered CLUSTER SLOTS with %s", k->node[i].host, k->node[i].port,
               r->type == REDIS_REPLY_ERROR ? r->str : "something else than a list");
      freeReplyObject(r);
      continue;
    }
    apply_slots(k, r, i);
    freeReplyObject(r);
    return 0;
  }
  return sl__client_fail(c, SL_ECONN, "cannot read the Redis Cluster's slot map: %s", last);
}

static void pause_ms(long long ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

  nanosleep(&ts, NULL);
}

int sl__cluster_use(sl_client_t *c, int slot, int timeout_ms) {
  sl_cluster *k = c->cluster;
  long long waited = 0;
  long long step = 50;

  for (;;) {
    int i;

    if (slot < 0) {
      /* any node: the one in use, else whichever answers */
      if ((c->rc != NULL && c->rc->err == 0) || refresh(c) == 0) {
        k->slot = -1;
        return 0;
      }
    } else {
      i = k->owner[slot];
      if (i < 0 && refresh(c) == 0) {
        i = k->owner[slot];
        if (i < 0)
          sl__client_fail(c, SL_ECONN, "no master serves slot %d (the cluster is not fully set up, or a "
                          "failover is under way)", slot);
      }
      if (i >= 0) {
        int rc = take(c, i);

        if (rc == 0) {
          k->slot = slot;
          return 0;
        }
        if (rc != SL_ECONN)
          return rc;
        forget(k, i); /* a failover, perhaps: read the map again */
      }
    }
    if (waited >= timeout_ms) {
      char why[512];

      snprintf(why, sizeof(why), "%s", c->errstr);
      return sl__client_fail(c, SL_ECONN, "Redis Cluster: no node serves slot %d after %lld ms: %s", slot, waited,
                             why);
    }
    pause_ms(step);
    waited += step;
    if (step < 250)
      step *= 2;
  }
}

void sl__cluster_lost(sl_client_t *c) {
  sl_cluster *k = c->cluster;

  if (c->rc != NULL)
    redisFree(c->rc);
  c->rc = NULL;
  if (k->cur >= 0)
    forget(k, k->cur);
  k->cur = -1;
}

int sl__cluster_redirect_kind(const char *msg) {
  return strncmp(msg, "MOVED ", 6) == 0 || strncmp(msg, "ASK ", 4) == 0 || strncmp(msg, "TRYAGAIN", 8) == 0 ||
         strncmp(msg, "CLUSTERDOWN", 11) == 0;
}

int sl__cluster_redirect(sl_client_t *c, const char *msg, int *asking, int *tries, long long *waited_ms) {
  sl_cluster *k = c->cluster;
  int moved = strncmp(msg, "MOVED ", 6) == 0;
  int ask = strncmp(msg, "ASK ", 4) == 0;

  if (asking != NULL)
    *asking = 0;
  if (ask && asking == NULL)
    ask = 0; /* the caller cannot send ASKING first (a pipeline): wait the move out instead */
  if (moved || ask) {
    const char *p = msg + (moved ? 6 : 4);
    char *end;
    long slot = strtol(p, &end, 10);
    int i;

    if (end == p || *end != ' ' || slot < 0 || slot >= SL_CLUSTER_SLOTS)
      return 0;
    i = node_of_addr(k, end + 1, strlen(end + 1));
    if (i < 0 || ++*tries > SL_CLUSTER_REDIRECTS) {
      sl__client_fail(c, SL_EREDIS, "Redis Cluster: %s (gave up after %d redirects)", msg, *tries - 1);
      return -1;
    }
    if (moved) {
      k->owner[slot] = (int16_t)i;
      return sl__cluster_use(c, (int)slot, SL_CLUSTER_WAIT_MS) == 0 ? 1 : -1;
    }
    if (take(c, i) != 0)
      return -1;
    *asking = 1; /* c->rc is the target for this one command; the map is unchanged */
    return 1;
  }
  if (strncmp(msg, "TRYAGAIN", 8) == 0 || strncmp(msg, "CLUSTERDOWN", 11) == 0 || strncmp(msg, "ASK ", 4) == 0) {
    long long step = *waited_ms < 100 ? 10 : *waited_ms < 1000 ? 50 : 250;

    if (*waited_ms >= SL_CLUSTER_WAIT_MS) {
      sl__client_fail(c, SL_EREDIS, "Redis Cluster still answers \"%s\" after %lld ms", msg, *waited_ms);
      return -1;
    }
    pause_ms(step);
    *waited_ms += step;
    if (msg[0] == 'C')
      forget(k, k->cur >= 0 ? k->cur : 0); /* a failover: the map may have changed */
    /* back to the slot's owner (after an ASK, the command went elsewhere) */
    return sl__cluster_use(c, k->slot, SL_CLUSTER_WAIT_MS) == 0 ? 1 : -1;
  }
  return 0;
}

int sl__cluster_reconnect(sl_client_t *c, int timeout_ms) {
  sl__cluster_lost(c);
  return sl__cluster_use(c, c->cluster->slot, timeout_ms);
}

int sl__cluster_masters(sl_client_t *c, char (*addr)[300], int max) {
  sl_cluster *k = c->cluster;
  char seen[SL_CLUSTER_NODES] = {0};
  int n = 0;

  if (refresh(c) != 0)
    return -1;
  for (int s = 0; s < SL_CLUSTER_SLOTS; s++) {
    int i = k->owner[s];

    if (i >= 0 && !seen[i] && n < max) {
      seen[i] = 1;
      snprintf(addr[n++], 300, "%s:%d", k->node[i].host, k->node[i].port);
    }
  }
  if (n == 0)
    sl__client_fail(c, SL_ECONN, "the Redis Cluster serves no slot: is it set up (CLUSTER ADDSLOTS)?");
  return n > 0 ? n : -1;
}

int sl__cluster_master_of(const char *url, const char *key, char *host, size_t hostlen, int *port, char *err,
                          size_t errlen) {
  sl_client_t *c = sl_calloc(1, sizeof(*c));
  int rc;

  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    return SL_ENOMEM;
  }
  rc = sl__url_parse(url, &c->url, err, errlen);
  if (rc == 0) {
    rc = sl__cluster_new(&c->url, &c->cluster);
    if (rc == SL_ENOMEM)
      snprintf(err, errlen, "out of memory");
  }
  if (rc == 0) {
    sl__cluster_no_check(c->cluster);
    rc = sl__cluster_use(c, (int)sl__key_slot(key, strlen(key)), SL_CLUSTER_WAIT_MS);
    if (rc == 0) {
      snprintf(host, hostlen, "%s", c->cluster->node[c->cluster->cur].host);
      *port = c->cluster->node[c->cluster->cur].port;
    } else {
      snprintf(err, errlen, "%s", c->errstr);
    }
  }
  sl_client_close(c);
  return rc;
}
