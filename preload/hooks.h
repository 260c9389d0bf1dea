/* preload/hooks.h — the real libc functions behind the shim's interposed
 * names, for the shim's own code (which must never go through its own hooks). */
#ifndef DDSHIM_HOOKS_H
#define DDSHIM_HOOKS_H

#include <pthread.h>
#include <signal.h>

/* Resolve every real_* pointer (constructor; idempotent). */
void hooks_resolve(void);
/* Async-signal-safe once resolved. */
int hooks_real_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
int hooks_real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
/* The shim holds sig; the host is to see host_view as its disposition. */
void hooks_set_signal_view(int sig, const struct sigaction *host_view);

#endif
