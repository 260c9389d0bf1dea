/* preload/shim.c — the shim's life in a process: the constructor (on the
 * thread that loads the library, normally the main thread before main), the
 * exit flush (an atexit handler on the exiting thread), and the fork handlers.
 * Nothing here runs in signal context.
 *
 * A setuid or otherwise AT_SECURE process is left entirely alone: no config is
 * read, no thread started, no signal taken; the hooks pass straight through. */
#include "preload/shim.h"

#include "agent_io/collector.h"
#include "http/conn.h"
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
volatile int shim_active; /* the collector and uploader run (profiling or tracing) */
struct shim_config shim_cfg;

/* How long the exit path may wait for the final profile. */
#define EXIT_FLUSH_MS 900
#define EXEC_FLUSH_MS 500
#define HTTP_MAX_HEADER_TAGS 8

static const char *plain_getenv(const char *name)
{
    return getenv(name);
}

/* Both return at once when nothing was collected (most short processes). */
static void at_exit_flush(void)
{
    if (!shim_active)
        return;
    collector_final_flush(EXIT_FLUSH_MS);
}

void shim_before_exec(void)
{
    if (shim_active)
        collector_final_flush(EXEC_FLUSH_MS);
}

static void fork_prepare(void)
{
    sampler_tls.in_loader++;
    if (shim_active)
        collector_fork_prepare();
}

static void fork_parent(void)
{
    collector_fork_parent(); /* releases only what prepare took */
    sampler_tls.in_loader--;
    if (conn_state)
        conn_after_fork(0);
}

/* A fork child: single-threaded, often about to exec. Reset (cheaply: no
 * page of the parent's is written) and re-arm this thread, then start the
 * collector alone; the uploader follows only if something is collected. */
static void fork_child(void)
{
    sampler_tls.in_loader--;
    if (!shim_active)
        return;
    if (conn_state)
        conn_after_fork(1);
    collector_after_fork_child();
    if (shim_profiling_on)
        sampler_after_fork_child();
    /* Last: nothing may reset the rings while the collector drains them. */
    if (collector_start() != 0) {
        if (shim_profiling_on)
            sampler_shutdown();
        shim_active = shim_profiling_on = 0;
        sampler_active = 0;
    }
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
    int prof = shim_cfg.enabled && shim_cfg.profiling_enabled;
    int trace = shim_cfg.enabled && shim_cfg.trace_enabled;
    if (!prof && !trace)
        goto out;

    if (collector_init(&shim_cfg) != 0) {
        log_warn("cannot set up the sample channel (%s); the shim is off", strerror(errno));
        goto out;
    }
    if (trace) {
        static char names[HTTP_MAX_HEADER_TAGS][64];
        static const char *req_names[HTTP_MAX_HEADER_TAGS + 1];
        int n = config_header_names(shim_cfg.header_tags, names, HTTP_MAX_HEADER_TAGS);
        for (int i = 0; i < n; i++)
            req_names[i] = names[i];
        if (conn_init(req_names, req_names) != 0) {
            log_warn("cannot set up HTTP tracing; tracing is off");
            trace = 0;
        }
    }
    if (prof && sampler_init(shim_cfg.sample_hz) != 0)
        prof = 0;
    if (prof) {
        /* The host's view of the signal is what it was before we took it. */
        struct sigaction before;
        memset(&before, 0, sizeof before);
        before.sa_handler = sampler_host_ignores ? SIG_IGN : SIG_DFL;
        hooks_set_signal_view(sampler_signo, &before);
    }
    if (!prof && !trace)
        goto out;
    if (collector_start() != 0) {
        if (prof)
            sampler_shutdown();
        goto out;
    }
    shim_profiling_on = prof;
    shim_active = 1;
    take_terminating_signals();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    atexit(at_exit_flush);
    if (prof)
        sampler_thread_begin();
out:
    errno = saved;
}

__attribute__((destructor)) static void shim_fini(void)
{
    if (shim_profiling_on)
        sampler_shutdown();
}
