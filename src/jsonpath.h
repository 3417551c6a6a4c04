/* JSON paths of metrics ("$.usage.cost", "$.choices[0].n"): see jsonpath.c. */
#ifndef SL_JSONPATH_H
#define SL_JSONPATH_H

#define SL_JSON_PATH_MAX 256 /* bytes of a path */

/* 1 when p is a path: "$", then ".NAME" ([A-Za-z0-9_-]) or "[N]" steps. */
int sl__json_path_valid(const char *p);
/* The number at path `path` (valid) in the parsed document v (a cJSON *):
 * 0 and *out, or -1 when there is no number there. */
int sl__json_path_number(const void *v, const char *path, double *out);

#endif
