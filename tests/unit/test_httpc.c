/*
 * httpc.c: the worker's HTTP client (libcurl multi on a libuv loop), driven
 * directly on a loop of the test against real local servers: the test HTTP
 * server (tests/integration/http_server.py, started once for the program)
 * and, for redirects, a raw responder forked by the test. The allow-list
 * decides before any request; the messages of sl__httpc_post; no redirect
 * is followed; every socket is close-on-exec; a transfer still running at
 * close ends aborted with its done called once; plain http never waits for
 * a connection that might multiplex (50 parallel requests all arrive at
 * once).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <uv.h>

#include <sluice/sluice.h>

#include "allow.h"
#include "harness.h"
#include "httpc.h"
#include "itest.h"

/* ---- The test server ---- */

static pid_t server_pid;     /* the python server */
static pid_t main_pid;       /* the test program (tests run in forked children) */
static int server_port;      /* its port on 127.0.0.1 */
static char server_dir[64];  /* temp dir of its port file */

static void server_stop(void) {
  char p[128];

  if (server_pid <= 0 || getpid() != main_pid)
    return;
  kill(server_pid, SIGTERM);
  waitpid(server_pid, NULL, 0);
  server_pid = 0;
  snprintf(p, sizeof(p), "%s/port", server_dir);
  unlink(p);
  rmdir(server_dir);
}

static void server_start(void) {
  char script[600];
  char portfile[128];
  const char *slash = strrchr(__FILE__, '/');
  long long t0;

  main_pid = getpid();
  snprintf(script, sizeof(script), "%.*s/../integration/http_server.py", slash ? (int)(slash - __FILE__) : 1,
           slash ? __FILE__ : ".");
  snprintf(server_dir, sizeof(server_dir), "/tmp/sluice-httpc-XXXXXX");
  if (mkdtemp(server_dir) == NULL) {
    fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
    exit(1);
  }
  snprintf(portfile, sizeof(portfile), "%s/port", server_dir);
  fflush(stdout);
  fflush(stderr);
  server_pid = fork();
  if (server_pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setpgid(0, 0);
    execl("/usr/bin/python3", "python3", script, portfile, (char *)NULL);
    _exit(127);
  }
  t0 = itest_ms();
  for (;;) {
    char *s = itest_read(portfile, NULL);

    if (s != NULL) {
      server_port = (int)strtol(s, NULL, 10);
      free(s);
      if (server_port > 0)
        break;
    }
    if (waitpid(server_pid, NULL, WNOHANG) == server_pid || itest_ms() - t0 > 10000) {
      fprintf(stderr, "the test http server (%s) did not start\n", script);
      exit(1);
    }
    usleep(20000);
  }
}

static const char *url(const char *path) {
  static char buf[4][256];
  static int next;

  next = (next + 1) % 4;
  snprintf(buf[next], sizeof(buf[next]), "http://127.0.0.1:%d%s", server_port, path);
  return buf[next];
}

static size_t collect(char *p, size_t size, size_t n, void *ud) {
  char **out = ud;
  size_t old = *out ? strlen(*out) : 0;

  *out = realloc(*out, old + size * n + 1);
  memcpy(*out + old, p, size * n);
  (*out)[old + size * n] = '\0';
  return size * n;
}

/* /stats of the server (blocking; not on a loop), parsed. */
static cJSON *server_stats(int reset_peak) {
  CURL *e = curl_easy_init();
  char *body = NULL;
  cJSON *o;

  curl_easy_setopt(e, CURLOPT_URL, url(reset_peak ? "/stats?reset_peak=1" : "/stats"));
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
  CHECK_INT(curl_easy_perform(e), ==, CURLE_OK);
  curl_easy_cleanup(e);
  o = cJSON_Parse(body);
  CHECK(o != NULL);
  free(body);
  return o;
}

static long long stat_num(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

  return cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
}

static long long server_requests(void) {
  cJSON *s = server_stats(0);
  long long n = stat_num(s, "requests");

  cJSON_Delete(s);
  return n;
}

/* ---- Helpers ---- */

static sl_httpc *client(uv_loop_t *loop, const char *allow, int max_conns) {
  sl_httpc *c = NULL;
  char err[256];

  if (sl__httpc_new(allow, SL_HTTP_DEFAULT, max_conns, &c, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "sl__httpc_new: %s", err);
  CHECK_INT(sl__httpc_start(c, loop), ==, 0);
  return c;
}

static sl_origin origin_of(const char *u) {
  sl_origin o;
  char err[128];

  if (sl__origin_parse(u, &o, err, sizeof(err)) != 0)
    sl_test_fail(__FILE__, __LINE__, "%s: %s", u, err);
  return o;
}

/* Closes the client and runs the loop out; every handle must be gone. */
static void finish(uv_loop_t *loop, sl_httpc *c) {
  sl__httpc_close(c);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(loop), ==, 0);
}

/* A POST's outcome. */
typedef struct posted {
  int calls;     /* done calls */
  long status;   /* its status */
  char msg[512]; /* its message */
} posted;

static void on_posted(void *ud, long status, const char *msg) {
  posted *p = ud;

  p->calls++;
  p->status = status;
  snprintf(p->msg, sizeof(p->msg), "%s", msg);
}

/* ---- The allow-list ---- */

/* With --http-allow naming another port, a POST to the server is refused
 * with SL_EINVAL before anything is sent (the server counts no request, the
 * callback is never called); a non-http URL likewise; a client not started
 * yet answers SL_ECANCELED. */
static void test_allow_decides_first(void) {
  uv_loop_t loop;
  sl_httpc *c;
  sl_origin o;
  posted p = {0};
  long long before = server_requests();
  char allow[64];

  uv_loop_init(&loop);
  c = client(&loop, "127.0.0.1:1,*.example.org", 4);
  o = origin_of(url("/echo"));
  CHECK_INT(sl__httpc_allowed(c, &o), ==, 0);
  CHECK_INT(sl__httpc_post(c, url("/echo"), "{}", NULL, on_posted, &p), ==, SL_EINVAL);
  CHECK_INT(sl__httpc_post(c, "ftp://127.0.0.1/x", "{}", NULL, on_posted, &p), ==, SL_EINVAL);
  o = origin_of("https://api.example.org/x");
  CHECK_INT(sl__httpc_allowed(c, &o), ==, 1);
  uv_run(&loop, UV_RUN_NOWAIT);
  finish(&loop, c);
  CHECK_INT(p.calls, ==, 0);
  CHECK_INT(server_requests(), ==, before);

  /* the same server allowed by its port: the POST goes out */
  uv_loop_init(&loop);
  snprintf(allow, sizeof(allow), "127.0.0.1:%d", server_port);
  c = client(&loop, allow, 4);
  CHECK_INT(sl__httpc_post(c, url("/echo"), "{}", NULL, on_posted, &p), ==, 0);
  uv_run(&loop, UV_RUN_DEFAULT); /* until the answer: then no handle is active */
  finish(&loop, c);
  CHECK_INT(p.calls, ==, 1);
  CHECK_INT(p.status, ==, 200);
  CHECK_INT(server_requests(), ==, before + 1);

  /* not started: cancelled */
  CHECK_INT(sl__httpc_new(NULL, SL_HTTP_DEFAULT, 1, &c, allow, sizeof(allow)), ==, 0);
  CHECK_INT(sl__httpc_post(c, url("/echo"), "{}", NULL, on_posted, &p), ==, SL_ECANCELED);
  sl__httpc_close(c);
}

/* ---- sl__httpc_post ---- */

/* Messages: "HTTP 200: <body>" with the headers asked for sent; "HTTP 404:
 * <body>" for an answer that is an error; "curl: ..." with status 0 for a
 * transport error (nothing listens on the port). */
static void test_post_messages(void) {
  uv_loop_t loop;
  sl_httpc *c;
  posted ok = {0};
  posted nf = {0};
  posted down = {0};
  const char *hdrs[] = {"X-Test: one", "Content-Type: application/json", NULL};
  char dead_url[64];
  int port;

  /* a port nobody listens on: bound, then closed */
  {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t al = sizeof(a);

    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_INT(bind(s, (struct sockaddr *)&a, sizeof(a)), ==, 0);
    CHECK_INT(getsockname(s, (struct sockaddr *)&a, &al), ==, 0);
    port = ntohs(a.sin_port);
    close(s);
  }
  snprintf(dead_url, sizeof(dead_url), "http://127.0.0.1:%d/x", port);
  uv_loop_init(&loop);
  c = client(&loop, NULL, 4);
  CHECK_INT(sl__httpc_post(c, url("/echo"), "{\"hello\":\"world\"}", hdrs, on_posted, &ok), ==, 0);
  CHECK_INT(sl__httpc_post(c, url("/status/404"), "{}", NULL, on_posted, &nf), ==, 0);
  CHECK_INT(sl__httpc_post(c, dead_url, "{}", NULL, on_posted, &down), ==, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  finish(&loop, c);

  CHECK_INT(ok.calls, ==, 1);
  CHECK_INT(ok.status, ==, 200);
  CHECK(strncmp(ok.msg, "HTTP 200: {", 11) == 0);
  CHECK_CONTAINS(ok.msg, "\"method\":\"POST\"");
  CHECK_CONTAINS(ok.msg, "\"x-test\":\"one\"");
  CHECK_CONTAINS(ok.msg, "hello");

  CHECK_INT(nf.calls, ==, 1);
  CHECK_INT(nf.status, ==, 404);
  CHECK_STR(nf.msg, "HTTP 404: status 404: something went wrong on purpose");

  CHECK_INT(down.calls, ==, 1);
  CHECK_INT(down.status, ==, 0);
  CHECK(strncmp(down.msg, "curl: Couldn't connect to server", 32) == 0);
}

/* ---- Redirects ---- */

/* A raw responder on 127.0.0.1: answers every request with `reply` and
 * closes; writes one byte to `count` per request. */
static pid_t responder(const char *reply, int *port, int count) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  socklen_t al = sizeof(a);
  pid_t pid;

  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK_INT(bind(s, (struct sockaddr *)&a, sizeof(a)), ==, 0);
  CHECK_INT(listen(s, 16), ==, 0);
  CHECK_INT(getsockname(s, (struct sockaddr *)&a, &al), ==, 0);
  *port = ntohs(a.sin_port);
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid == 0) {
    for (;;) {
      int cfd = accept(s, NULL, NULL);
      char buf[4096];
      size_t got = 0;
      ssize_t n;

      if (cfd < 0)
        _exit(0);
      while (got < sizeof(buf) - 1 && (n = read(cfd, buf + got, sizeof(buf) - 1 - got)) > 0) {
        got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL)
          break;
      }
      n = write(count, "r", 1);
      n = write(cfd, reply, strlen(reply));
      (void)n;
      close(cfd);
    }
  }
  close(s);
  return pid;
}

typedef struct got {
  int calls;          /* done calls */
  CURLcode code;      /* its result */
  long status;        /* response code */
  long redirects;     /* CURLINFO_REDIRECT_COUNT */
  int cloexec_checks; /* sockets checked as curl opened them */
  int cloexec_bad;    /* of them, not close-on-exec */
} got;

static void on_got(void *ud, CURL *easy, CURLcode code, int sock_errno) {
  got *g = ud;

  (void)sock_errno;
  g->calls++;
  g->code = code;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &g->status);
  curl_easy_getinfo(easy, CURLINFO_REDIRECT_COUNT, &g->redirects);
  curl_easy_cleanup(easy);
}

static size_t discard(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  (void)ud;
  return size * n;
}

static CURL *get_easy(sl_httpc *c, const char *u, got *g, sl_origin *o) {
  CURL *e = curl_easy_init();

  *o = origin_of(u);
  sl__httpc_prepare(c, e, o);
  curl_easy_setopt(e, CURLOPT_URL, u);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, g);
  return e;
}

/* A 302 with a Location is the answer, not a hop: the responder sees one
 * request, the target none, and the POST's message is "HTTP 302: ...". */
static void test_no_redirects(void) {
  char reply[256];
  int port;
  int counter[2];
  pid_t pid;
  uv_loop_t loop;
  sl_httpc *c;
  got g = {0};
  posted p = {0};
  sl_origin o;
  char target[128];
  long long before = server_requests();
  char buf[16];

  CHECK_INT(pipe(counter), ==, 0);
  snprintf(reply, sizeof(reply),
           "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/ok\r\nContent-Length: 5\r\n"
           "Connection: close\r\n\r\nmoved",
           server_port);
  pid = responder(reply, &port, counter[1]);
  close(counter[1]);
  snprintf(target, sizeof(target), "http://127.0.0.1:%d/start", port);
  uv_loop_init(&loop);
  c = client(&loop, NULL, 4);
  CHECK_INT(sl__httpc_add(c, get_easy(c, target, &g, &o), &o, on_got, &g), ==, 0);
  CHECK_INT(sl__httpc_post(c, target, "{}", NULL, on_posted, &p), ==, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  finish(&loop, c);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  CHECK_INT(g.calls, ==, 1);
  CHECK_INT(g.code, ==, CURLE_OK);
  CHECK_INT(g.status, ==, 302);
  CHECK_INT(g.redirects, ==, 0);
  CHECK_INT(p.calls, ==, 1);
  CHECK_INT(p.status, ==, 302);
  CHECK_STR(p.msg, "HTTP 302: moved");
  CHECK_INT(read(counter[0], buf, sizeof(buf)), ==, 2); /* one request each */
  close(counter[0]);
  CHECK_INT(server_requests(), ==, before);
}

/* ---- Close-on-exec ---- */

typedef struct scan {
  uv_timer_t t;      /* fires every 20 ms during the transfers */
  const got *g;      /* the transfers' record: scanning ends with them */
  int sockets;       /* the most network sockets found at once in /proc/self/fd */
  int unix_pair;     /* the most unix sockets (libcurl's wakeup pair) */
  int not_cloexec;   /* network sockets seen without FD_CLOEXEC */
} scan;

static void on_scan(uv_timer_t *t) {
  scan *s = (scan *)t;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int sockets = 0;
  int unix_pair = 0;

  while (d != NULL && (e = readdir(d)) != NULL) {
    char path[64];
    char link[128];
    ssize_t n;
    int fd = atoi(e->d_name);
    int dom = -1;
    socklen_t dl = sizeof(dom);

    if (e->d_name[0] == '.' || fd == dirfd(d))
      continue;
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    n = readlink(path, link, sizeof(link) - 1);
    if (n <= 0)
      continue;
    link[n] = '\0';
    if (strncmp(link, "socket:", 7) != 0)
      continue;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &dl) != 0)
      continue;
    if (dom == AF_UNIX) {
      /* libcurl's multi handle keeps a socketpair to wake itself up
       * (curl_multi_wakeup), opened without close-on-exec by libcurl 7.88
       * and out of the client's reach; an exec child never gets it
       * (forkexec.c closes every descriptor past 2) */
      unix_pair++;
      continue;
    }
    sockets++;
    if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
      s->not_cloexec++;
  }
  if (d != NULL)
    closedir(d);
  if (sockets > s->sockets)
    s->sockets = sockets;
  if (unix_pair > s->unix_pair)
    s->unix_pair = unix_pair;
  if (s->g->calls == 4)
    uv_close((uv_handle_t *)t, NULL);
}

/* CURLOPT_SOCKOPTFUNCTION: curl calls it with each new socket, right after
 * the client's open function made it and before it connects.
 * (CURLINFO_ACTIVESOCKET cannot tell: it answers only while the easy handle
 * is in a multi handle, and a done callback gets it removed.) */
static int on_sockopt(void *ud, curl_socket_t fd, curlsocktype purpose) {
  got *g = ud;

  (void)purpose;
  g->cloexec_checks++;
  if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
    g->cloexec_bad++;
  return CURL_SOCKOPT_OK;
}

/* The socket of each connection, as curl opens it, and every network
 * socket of the process while four transfers run (/proc/self/fd): all
 * close-on-exec, so no exec child of the worker inherits one. */
static void test_sockets_cloexec(void) {
  uv_loop_t loop;
  sl_httpc *c;
  got g = {0};
  scan s = {0};

  uv_loop_init(&loop);
  c = client(&loop, NULL, 8);
  for (int i = 0; i < 4; i++) {
    sl_origin o;
    CURL *e = get_easy(c, url("/slow?ms=400"), &g, &o);

    curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    curl_easy_setopt(e, CURLOPT_SOCKOPTDATA, &g);
    CHECK_INT(sl__httpc_add(c, e, &o, on_got, &g), ==, 0);
  }
  s.g = &g;
  uv_timer_init(&loop, &s.t);
  uv_timer_start(&s.t, on_scan, 20, 20);
  uv_run(&loop, UV_RUN_DEFAULT);
  finish(&loop, c);
  CHECK_INT(g.calls, ==, 4);
  CHECK_INT(g.code, ==, CURLE_OK);
  CHECK_INT(g.cloexec_checks, >=, 4);
  CHECK_INT(g.cloexec_bad, ==, 0);
  CHECK_INT(s.sockets, >=, 4);
  CHECK_INT(s.not_cloexec, ==, 0);
  CHECK_INT(s.unix_pair, <=, 2);
}

/* ---- Close with transfers running ---- */

typedef struct closer {
  uv_timer_t t;   /* closes the client */
  sl_httpc *c;    /* the client */
  got *g;         /* the running transfer's record */
  int calls_at_close; /* its done calls right after sl__httpc_close returned */
} closer;

static void on_close_timer(uv_timer_t *t) {
  closer *cl = (closer *)t;

  sl__httpc_close(cl->c);
  cl->calls_at_close = cl->g->calls;
  uv_close((uv_handle_t *)t, NULL);
}

/* A transfer still running when the client closes ends at once with
 * CURLE_ABORTED_BY_CALLBACK, its done called exactly once (inside the
 * close); a removed transfer's done is never called; afterwards adds are
 * refused and every handle of the client closes. */
static void test_close_aborts_running(void) {
  uv_loop_t loop;
  sl_httpc *c;
  got g = {0};
  got removed = {0};
  closer cl = {0};
  sl_origin o;
  CURL *gone;
  long long t0 = itest_ms();

  uv_loop_init(&loop);
  c = client(&loop, NULL, 4);
  CHECK_INT(sl__httpc_add(c, get_easy(c, url("/slow?ms=3000"), &g, &o), &o, on_got, &g), ==, 0);
  gone = get_easy(c, url("/slow?ms=3000"), &removed, &o);
  CHECK_INT(sl__httpc_add(c, gone, &o, on_got, &removed), ==, 0);
  cl.c = c;
  cl.g = &g;
  uv_timer_init(&loop, &cl.t);
  uv_timer_start(&cl.t, on_close_timer, 150, 0);
  uv_run(&loop, UV_RUN_ONCE); /* the transfers start */
  sl__httpc_remove(c, gone);
  curl_easy_cleanup(gone);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), ==, 0);
  CHECK_INT(cl.calls_at_close, ==, 1);
  CHECK_INT(g.calls, ==, 1);
  CHECK_INT(g.code, ==, CURLE_ABORTED_BY_CALLBACK);
  CHECK_INT(removed.calls, ==, 0);
  CHECK_INT(itest_ms() - t0, <, 2000);
}

/* ---- Plain http does not wait to multiplex ---- */

/* 50 requests to a path that holds each for 600 ms, added at once on a
 * client of 50 connections, default HTTP version: plain http is HTTP/1.1
 * from the start and never waits (CURLOPT_PIPEWAIT) for a first connection
 * to say whether it multiplexes, so all 50 reach the server within a short
 * window and are in flight together. PIPEWAIT cannot be read back from an
 * easy handle, so this is the observable; with libcurl 7.88 a handle that
 * may only speak HTTP/1.1 never waits, so it is the two rules together
 * (HTTP/1.1 for plain http, PIPEWAIT only for https origins known to speak
 * HTTP/2) that keep the requests from starting in waves. */
static void test_plain_http_parallel(void) {
  uv_loop_t loop;
  sl_httpc *c;
  got g = {0};
  cJSON *st;
  const cJSON *arr;
  const cJSON *v;
  long long last = 0;

  cJSON_Delete(server_stats(1));
  uv_loop_init(&loop);
  c = client(&loop, NULL, 50);
  for (int i = 0; i < 50; i++) {
    sl_origin o;
    CURL *e = get_easy(c, url("/hold?ms=600"), &g, &o);

    CHECK_INT(sl__httpc_add(c, e, &o, on_got, &g), ==, 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  finish(&loop, c);
  CHECK_INT(g.calls, ==, 50);
  CHECK_INT(g.code, ==, CURLE_OK);
  st = server_stats(0);
  CHECK_INT(stat_num(st, "peak_in_flight"), ==, 50);
  arr = cJSON_GetObjectItemCaseSensitive(st, "hold_arrivals_ms");
  CHECK_INT(cJSON_GetArraySize(arr), ==, 50);
  cJSON_ArrayForEach(v, arr) {
    if ((long long)v->valuedouble > last)
      last = (long long)v->valuedouble;
  }
  CHECK_INT(last, <, 500); /* in waves behind one connection: 600 ms apart */
  cJSON_Delete(st);
}

static const sl_test tests[] = {
    {"allow_decides_first", test_allow_decides_first, 30},
    {"post_messages", test_post_messages, 30},
    {"no_redirects", test_no_redirects, 30},
    {"sockets_cloexec", test_sockets_cloexec, 30},
    {"close_aborts_running", test_close_aborts_running, 30},
    {"plain_http_parallel", test_plain_http_parallel, 30},
    {NULL, NULL, 0},
};

int main(int argc, char **argv) {
  int rc;

  curl_global_init(CURL_GLOBAL_DEFAULT);
  server_start();
  rc = sl_test_main(argc, argv, tests);
  server_stop();
  curl_global_cleanup();
  return rc;
}
