/*
 * The dashboard of `sluice serve`: GET / answers index.html, GET /ui/NAME
 * the other files of src/serve/ui, all embedded in the binary at build time
 * (cmake/embed_ui.cmake). Nothing is read from disk or fetched from anywhere
 * else. The page uses only the public API (/v1/...), with the bearer token
 * the user gives it, so whatever it does a user's own UI can do.
 *
 * The files need no token: they hold no data. Their answers carry a
 * Content-Security-Policy that allows scripts, styles and connections of
 * this origin only (no inline script, no eval, no frames), and nosniff.
 */
#include <string.h>

#include "serve/ui.h"
#include "srv.h"

/* The embedded file for a path ("/" is index.html), or NULL. */
static const sl_ui_file *ui_file(const char *path) {
  if (strcmp(path, "/") == 0)
    path = "/ui/index.html";
  for (const sl_ui_file *f = sl__ui_files; f->path != NULL; f++) {
    if (strcmp(f->path, path) == 0)
      return f;
  }
  return NULL;
}

int srv_ui_path(const char *path) {
  return strcmp(path, "/") == 0 || strncmp(path, "/ui/", 4) == 0;
}

int srv_ui(srv_req *req) {
  const sl_ui_file *f;

  if (!srv_ui_path(req->path))
    return 0;
  if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
    srv_error(req, 405, "method_not_allowed", NULL, 0, "%s is not allowed on %s", req->method, req->path);
    return 1;
  }
  f = ui_file(req->path);
  if (f == NULL) {
    srv_error(req, 404, "not_found", NULL, 0, "no such file of the dashboard: %s", req->path);
    return 1;
  }
  sl__buf_reset(&req->body);
  if (sl__buf_append(&req->body, f->data, f->len) != 0) {
    srv_error(req, 503, "out_of_memory", NULL, 0, "the server is out of memory");
    return 1;
  }
  req->ctype = f->type;
  req->ui = 1;
  req->status = 200;
  req->ready = 1;
  return 1;
}
