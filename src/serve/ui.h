/* The dashboard's files, embedded in the binary (cmake/embed_ui.cmake). */
#ifndef SL_SERVE_UI_H
#define SL_SERVE_UI_H

#include <stddef.h>

typedef struct sl_ui_file {
  const char *path; /* "/ui/NAME" */
  const char *type; /* its Content-Type */
  const char *data; /* its bytes, then a NUL */
  size_t len;       /* how many bytes */
} sl_ui_file;

/* The files of src/serve/ui, ended by an entry whose path is NULL. */
extern const sl_ui_file sl__ui_files[];

#endif
