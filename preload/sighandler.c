/* preload/sighandler.c — the sampling signal handler: the ONLY code of the
 * shim that runs in signal context, on whatever host thread the CPU timer
 * fired for. Everything here is async-signal-safe: no malloc, no locks, no
 * stdio, only initial-exec TLS, errno restored. `make check-sigsafe` checks
 * the calls this object makes against an allow-list.
 *
 * A sample: unwind the interrupted stack with libunwind's unw_backtrace (its
 * fast path caches frame types per address, warmed per thread outside the
 * handler), keep the frames from the interrupted pc on, and copy one record
 * into the sample ring (preload/ring.h). What cannot be taken or kept is
 * counted. */
#include "preload/sampler.h"

#include "preload/hooks.h"

#include <errno.h>
#include <time.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

/* Async-signal-safe. */
static void count(uint64_t *c, uint64_t n)
{
    __atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

/* Async-signal-safe. A signal that is not one of our timer ticks (kill -PROF,
 * a host's own setitimer while it believes the disposition is default): do
 * what the host's view of the disposition says. Default action of SIGPROF is
 * to terminate, so restore it and let the re-raised signal do that on return. */
static void foreign_signal(int sig)
{
    if (sampler_host_ignores)
        return;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    hooks_real_sigaction(sig, &dfl, NULL);
    raise(sig);
}

/* Async-signal-safe. */
void sampler_on_signal(int sig, siginfo_t *si, void *ucv)
{
    int saved_errno = errno;
    struct sampler_thread *t = &sampler_tls;

    if (si == NULL || si->si_code != SI_TIMER || si->si_value.sival_ptr != &sampler_cookie) {
        foreign_signal(sig);
        errno = saved_errno;
        return;
    }
    uint32_t weight = 1u + (si->si_overrun > 0 ? (uint32_t)si->si_overrun : 0u);
    if (!sampler_active || t->in_handler || sampler_unw_backtrace == NULL) {
        count(&sampler_counters.lost_busy, weight);
        errno = saved_errno;
        return;
    }
    if (t->in_loader > 0) {
        /* libunwind would walk the loader's lists while they change. */
        count(&sampler_counters.lost_loader, weight);
        errno = saved_errno;
        return;
    }
    t->in_handler = 1;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    ucontext_t *uc = ucv;
    uintptr_t ip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    t->in_unwinder = 1;
    int n = sampler_unw_backtrace(t->frames, (int)(sizeof t->frames / sizeof t->frames[0]));
    t->in_unwinder = 0;
    /* The walk starts in this handler: skip to the interrupted pc (after the
     * kernel's signal trampoline). */
    int first = -1;
    for (int i = 0; i < n && i < 16; i++) {
        if ((uintptr_t)t->frames[i] == ip) {
            first = i;
            break;
        }
    }
    struct sample_rec *r = &t->rec;
    int nf;
    if (first < 0) {
        r->pc[0] = ip;
        nf = 1;
        count(&sampler_counters.lost_unwind, 1);
    } else {
        nf = n - first;
        if (nf > REC_MAX_FRAMES)
            nf = REC_MAX_FRAMES;
        memcpy(r->pc, &t->frames[first], (size_t)nf * sizeof r->pc[0]);
    }
    r->magic = REC_MAGIC;
    r->nframes = (uint16_t)nf;
    r->flags = (first >= 0 && n == (int)(sizeof t->frames / sizeof t->frames[0])) ? REC_F_TRUNCATED : 0;
    r->tid = t->tid;
    r->weight = weight;
    r->span_id = t->span_id;
    r->root_span_id = t->root_span_id;
    if (ring_put(&sampler_ring, r, REC_SIZE(nf)) != 0) {
        count(&sampler_counters.lost_write, weight);
    } else {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        count(&sampler_counters.samples, 1);
        count(&sampler_counters.handler_ns,
              (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec)));
    }
    t->in_handler = 0;
    errno = saved_errno;
}

volatile int sampler_term_gen;

/* Async-signal-safe. Runs on the host thread the kernel picked for a
 * process-directed SIGTERM/SIGINT. The wait is bounded (900 ms): if the
 * uploader cannot finish (a lock held by this very thread, a hanging Agent),
 * the process still dies on time. */
void sampler_on_terminate(int sig, siginfo_t *si, void *ucv)
{
    (void)si;
    (void)ucv;
    int gen = __atomic_load_n(&sampler_term_gen, __ATOMIC_ACQUIRE);
    struct sample_rec r;
    r.magic = REC_MAGIC_FLUSH;
    r.nframes = 0;
    if (ring_put(&sampler_ring, &r, REC_HEADER_SIZE) == 0) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (__atomic_load_n(&sampler_term_gen, __ATOMIC_ACQUIRE) == gen) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            long spent = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
            if (spent >= 900)
                break;
            struct timespec left = {0, (900 - spent) * 1000000L};
            if (left.tv_nsec >= 1000000000L) {
                left.tv_sec = left.tv_nsec / 1000000000L;
                left.tv_nsec %= 1000000000L;
            }
            syscall(SYS_futex, &sampler_term_gen, FUTEX_WAIT_PRIVATE, gen, &left, NULL, 0);
        }
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    hooks_real_sigaction(sig, &dfl, NULL);
    /* Blocked while this handler runs; delivered (default action) on return. */
    raise(sig);
}
