/* The development handlers `noop` and `sleep` (see dev.c). */
#ifndef SL_HANDLERS_DEV_H
#define SL_HANDLERS_DEV_H

#include "handler.h"

extern const sl_handler_vt sl__handler_dev;

#endif
