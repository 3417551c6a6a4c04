/*
 * JSON paths, the small subset a metric of an http item names
 * (payload.metrics: {"cost": "$.usage.cost"}): "$", then ".NAME" steps
 * (NAME of [A-Za-z0-9_-]) into objects and "[N]" steps into arrays. No
 * wildcards, filters or quoting: a path picks one value, so a worker reads
 * it from the response body in one walk (sl__json_path_number) and a
 * producer's path is checked at submit and in the worker alike
 * (sl__json_path_valid, used by httpreq.c).
 */
#include "jsonpath.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

int sl__json_path_valid(const char *p) {
  if (*p++ != '$')
    return 0;
  while (*p != '\0') {
    size_t n;

    if (*p == '.') {
      n = strspn(p + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
      if (n == 0)
        return 0;
      p += 1 + n;
    } else if (*p == '[') {
      n = strspn(p + 1, "0123456789");
      if (n == 0 || n > 9 || p[1 + n] != ']')
        return 0;
      p += 2 + n;
    } else {
      return 0;
    }
  }
  return 1;
}

int sl__json_path_number(const void *v, const char *path, double *out) {
  const cJSON *at = v;
  const char *p = path + 1;

  while (at != NULL && *p != '\0') {
    if (*p == '.') {
      char key[SL_JSON_PATH_MAX];
      size_t n = strcspn(p + 1, ".[");

      snprintf(key, sizeof(key), "%.*s", (int)n, p + 1);
      at = cJSON_IsObject(at) ? cJSON_GetObjectItemCaseSensitive(at, key) : NULL;
      p += 1 + n;
    } else {
      int i = atoi(p + 1);

      at = cJSON_IsArray(at) ? cJSON_GetArrayItem(at, i) : NULL;
      p = strchr(p, ']') + 1;
    }
  }
  if (!cJSON_IsNumber(at))
    return -1;
  *out = at->valuedouble;
  return 0;
}

