/* preload/shim.c — the shim's life in a process: the constructor (on the
 * thread that loads the library, normally the main thread before main), the
 * exit flush (an atexit handler on the exiting thread), and the fork handlers.
 * Nothing here runs in signal context.
 *
 * A setuid or otherwise AT_SECURE process is left entirely alone: no config is
 * read, no thread started, no signal taken; the hooks pass straight through. */
#include "preload/shim.h"

#include "agent_io/collector.h"
#include "common/log.h"
#include "preload/hooks.h"
#include "preload/sampler.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

volatile int shim_profiling_on;
struct shim_config shim_cfg;

/* How long the exit path may wait for the final profile. */
#define EXIT_FLUSH_MS 900
#define EXEC_FLUSH_MS 500

static const char *plain_getenv(const char *name)
{
    return getenv(name);
}

static void at_exit_flush(void)
{
    if (!shim_profiling_on)
        return;
    collector_final_flush(EXIT_FLUSH_MS);
}

void shim_before_exec(void)
{
    if (shim_profiling_on && collector_has_data())
        collector_final_flush(EXEC_FLUSH_MS);
}

static void fork_prepare(void)
{
    sampler_tls.in_loader++;
}

static void fork_parent(void)
{
    sampler_tls.in_loader--;
}

static void fork_child(void)
{
    sampler_tls.in_loader--;
    if (!shim_profiling_on)
        return;
    if (collector_after_fork_child() != 0) {
        shim_profiling_on = 0;
        sampler_active = 0;
        return;
    }
    sampler_after_fork_child();
}

/* SIGTERM and SIGINT left at their default (terminate): hold them so the
 * final profile is delivered first; the host still sees SIG_DFL. */
static void take_terminating_signals(void)
{
    static const int sigs[] = {SIGTERM, SIGINT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction cur;
        if (hooks_real_sigaction(sigs[i], NULL, &cur) != 0 || (cur.sa_flags & SA_SIGINFO) ||
            cur.sa_handler != SIG_DFL)
            continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = sampler_on_terminate;
        sa.sa_flags = SA_SIGINFO;
        sigfillset(&sa.sa_mask);
        hooks_set_signal_view(sigs[i], &cur);
        if (hooks_real_sigaction(sigs[i], &sa, NULL) != 0)
            hooks_set_signal_view(sigs[i], &cur);
    }
}

__attribute__((constructor)) static void shim_init(void)
{
    int saved = errno;
    if (getauxval(AT_SECURE))
        return;
    hooks_resolve();
    config_load(&shim_cfg, plain_getenv, program_invocation_name);
    if (!shim_cfg.enabled || !shim_cfg.profiling_enabled)
        goto out;

    struct sigaction before;
    if (collector_init(&shim_cfg) != 0) {
        log_warn("cannot set up the sample channel (%s); CPU profiling is off", strerror(errno));
        goto out;
    }
    if (sampler_init(shim_cfg.sample_hz) != 0)
        goto out;
    /* The host's view of the signal is what it was before we took it. */
    memset(&before, 0, sizeof before);
    before.sa_handler = sampler_host_ignores ? SIG_IGN : SIG_DFL;
    hooks_set_signal_view(sampler_signo, &before);
    if (collector_start() != 0) {
        sampler_shutdown();
        goto out;
    }
    shim_profiling_on = 1;
    take_terminating_signals();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    atexit(at_exit_flush);
    sampler_thread_begin();
out:
    errno = saved;
}

__attribute__((destructor)) static void shim_fini(void)
{
    if (shim_profiling_on)
        sampler_shutdown();
}
