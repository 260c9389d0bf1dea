/* preload/shim.h — process-wide shim state: on/off, configuration, the
 * lifecycle (constructor, exit flush, fork child). */
#ifndef DDSHIM_SHIM_H
#define DDSHIM_SHIM_H

#include "preload/config.h"

/* 1 once the constructor has set CPU profiling up; 0 when the shim is off
 * (AT_SECURE, DD_SHIM_ENABLED=false, or set-up failed). Hooks pass straight
 * through when it is 0. */
extern volatile int shim_profiling_on;
extern volatile int shim_active;
extern struct shim_config shim_cfg;

/* Deliver what is pending before the image is replaced (exec) — bounded. */
void shim_before_exec(void);

#endif
