/* A private redis-server; see devredis.h. */
#include "devredis.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ARGS 64

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* 1 when the server at the socket answers PING (or asks for a password). */
static int pings(const char *path) {
  struct sockaddr_un a;
  char buf[16];
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  int ok = 0;
  ssize_t n;

  if (fd < 0)
    return 0;
  memset(&a, 0, sizeof(a));
  a.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof(a.sun_path)) {
    close(fd);
    return 0;
  }
  memcpy(a.sun_path, path, strlen(path) + 1);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && write(fd, "PING\r\n", 6) == 6) {
    n = read(fd, buf, sizeof(buf) - 1);
    /* A server with a password answers NOAUTH: it is up all the same. */
    ok = (n >= 5 && memcmp(buf, "+PONG", 5) == 0) || (n >= 7 && memcmp(buf, "-NOAUTH", 7) == 0);
  }
  close(fd);
  return ok;
}

/* The last non-empty line of the server's log (its reason for exiting). */
static void log_tail(const char *path, char *out, size_t len) {
  char line[512];
  FILE *f = fopen(path, "r");

  snprintf(out, len, "no log");
  if (f == NULL)
    return;
  while (fgets(line, sizeof(line), f) != NULL) {
    size_t n = strlen(line);

    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
      line[--n] = '\0';
    if (n > 0)
      snprintf(out, len, "%.*s", (int)(len > 0 ? len - 1 : 0), line); /* the last line, cut to fit */
  }
  fclose(f);
}

static int spawn(sl_devredis *d, const char *const *extra, char *err, size_t errlen) {
  const char *bin = getenv("SLUICE_REDIS_SERVER");
  const char *argv[MAX_ARGS];
  char logfile[300];
  int status;
  int k = 0;

  if (bin == NULL || *bin == '\0')
    bin = "redis-server";
  snprintf(logfile, sizeof(logfile), "%s/redis.log", d->dir);
  argv[k++] = bin;
  argv[k++] = "--port";
  argv[k++] = "0";
  argv[k++] = "--unixsocket";
  argv[k++] = d->sock;
  argv[k++] = "--unixsocketperm";
  argv[k++] = "700";
  argv[k++] = "--dir";
  argv[k++] = d->dir;
  argv[k++] = "--logfile";
  argv[k++] = logfile;
  argv[k++] = "--save";
  argv[k++] = "";
  argv[k++] = "--appendonly";
  argv[k++] = "no";
  argv[k++] = "--maxmemory-policy";
  argv[k++] = "noeviction";
  argv[k++] = "--daemonize";
  argv[k++] = "no";
  for (int i = 0; extra != NULL && extra[i] != NULL && k < MAX_ARGS - 1; i++)
    argv[k++] = extra[i];
  argv[k] = NULL;
  d->pid = fork();
  if (d->pid < 0) {
    snprintf(err, errlen, "cannot fork: %s", strerror(errno));
    d->pid = 0;
    return -1;
  }
  if (d->pid == 0) {
    int null = open("/dev/null", O_RDWR);
    int errfd = fcntl(2, F_DUPFD_CLOEXEC, 3); /* for the message if exec fails */

    /* Its own process group (a Ctrl-C reaches only sluice, which stops it
     * in order); it dies with its parent; it holds none of the parent's
     * output pipes (it logs to its file). */
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    signal(SIGPIPE, SIG_DFL); /* sluice ignores it; the server sets its own */
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
    }
    execvp(bin, (char *const *)argv);
    dprintf(errfd, "sluice: cannot run %s: %s (install redis-server, or set SLUICE_REDIS_SERVER)\n", bin,
            strerror(errno));
    _exit(127);
  }
  for (int i = 0; i < 1000; i++) {
    if (pings(d->sock))
      return 0;
    if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
      char tail[256];

      d->pid = 0;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
        snprintf(err, errlen, "cannot run %s (is redis-server installed?)", bin);
        return -1;
      }
      log_tail(logfile, tail, sizeof(tail));
      snprintf(err, errlen, "redis-server exited at start (exit %d): %s",
               WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), tail);
      return -1;
    }
    sleep_ms(10);
  }
  snprintf(err, errlen, "redis-server did not answer on %s within 10 s; see %s", d->sock, logfile);
  sl_devredis_kill(d, SIGKILL);
  return -1;
}

int sl_devredis_start(sl_devredis *d, const char *const *extra, char *err, size_t errlen) {
  const char *tmp = getenv("TMPDIR");

  memset(d, 0, sizeof(*d));
  if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 100)
    tmp = "/tmp";
  snprintf(d->dir, sizeof(d->dir), "%s/sluice-XXXXXX", tmp);
  if (mkdtemp(d->dir) == NULL) {
    snprintf(err, errlen, "cannot create a temp dir in %s: %s", tmp, strerror(errno));
    return -1;
  }
  snprintf(d->sock, sizeof(d->sock), "%s/redis.sock", d->dir);
  if (strlen(d->sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    snprintf(err, errlen, "socket path %s is too long for a unix socket; set TMPDIR to a shorter dir", d->sock);
    sl_devredis_stop(d);
    return -1;
  }
  snprintf(d->url, sizeof(d->url), "unix://%s", d->sock);
  if (spawn(d, extra, err, errlen) != 0) {
    sl_devredis_stop(d);
    return -1;
  }
  return 0;
}

int sl_devredis_restart(sl_devredis *d, const char *const *extra, char *err, size_t errlen) {
  return spawn(d, extra, err, errlen);
}

void sl_devredis_kill(sl_devredis *d, int sig) {
  int status;

  if (d->pid <= 0)
    return;
  kill(d->pid, sig);
  for (int i = 0; i < 500; i++) {
    if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
      d->pid = 0;
      return;
    }
    sleep_ms(10);
  }
  kill(d->pid, SIGKILL);
  waitpid(d->pid, &status, 0);
  d->pid = 0;
}

/* Removes a dir and what it holds (the server's files, its AOF dir). */
static void rm_tree(const char *top, int depth) {
  DIR *dir = opendir(top);
  struct dirent *e;
  char path[600];

  if (dir != NULL) {
    while ((e = readdir(dir)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      snprintf(path, sizeof(path), "%s/%s", top, e->d_name);
      if (unlink(path) != 0 && errno == EISDIR && depth < 2)
        rm_tree(path, depth + 1);
    }
    closedir(dir);
  }
  rmdir(top);
}

void sl_devredis_stop(sl_devredis *d) {
  sl_devredis_kill(d, SIGTERM);
  if (d->dir[0] == '\0')
    return;
  rm_tree(d->dir, 0);
  d->dir[0] = '\0';
}
