/* Error codes: names and descriptions (sluice.h lists them). */
#include <sluice/sluice.h>

SL_EXTERN const char *sl_strerror(int code) {
  switch (code) {
  case SL_OK: return "success";
  case SL_ENOMEM: return "out of memory";
  case SL_EINVAL: return "invalid argument or input";
  case SL_ECONN: return "cannot reach Redis or the connection broke";
  case SL_EREDIS: return "Redis answered with an error";
  case SL_ENOTFOUND: return "not found";
  case SL_EEXIST: return "already exists";
  case SL_ECANCELED: return "cancelled";
  case SL_EPROTO: return "unexpected reply from Redis";
  case SL_ETOOBIG: return "size limit exceeded";
  case SL_EIO: return "input/output error";
  case SL_ETIMEDOUT: return "timed out";
  case SL_EAGAIN: return "the state kept changing: run it again";
  }
  return "invalid sluice error code";
}

SL_EXTERN const char *sl_err_name(int code) {
  switch (code) {
  case SL_OK: return "SL_OK";
  case SL_ENOMEM: return "SL_ENOMEM";
  case SL_EINVAL: return "SL_EINVAL";
  case SL_ECONN: return "SL_ECONN";
  case SL_EREDIS: return "SL_EREDIS";
  case SL_ENOTFOUND: return "SL_ENOTFOUND";
  case SL_EEXIST: return "SL_EEXIST";
  case SL_ECANCELED: return "SL_ECANCELED";
  case SL_EPROTO: return "SL_EPROTO";
  case SL_ETOOBIG: return "SL_ETOOBIG";
  case SL_EIO: return "SL_EIO";
  case SL_ETIMEDOUT: return "SL_ETIMEDOUT";
  case SL_EAGAIN: return "SL_EAGAIN";
  }
  return "SL_E?";
}
