/* preload/sighandler.c — the sampling signal handler: the ONLY code of the
 * shim that runs in signal context, on whatever host thread the CPU timer
 * fired for. Everything here is async-signal-safe: no malloc, no locks, no
 * stdio, only initial-exec TLS, errno restored. `make check-sigsafe` checks
 * the calls this object makes against an allow-list.
 *
 * A sample: walk the interrupted stack with the shim's walker
 * (preload/unwind.c: libunwind's own CFI rules, cached so that a walk touches
 * few cold cache lines) or, for a stack it does not handle, with libunwind's
 * unw_backtrace (its thread-local block made outside the handler; its trace
 * cache on the thread's first fallback), and copy
 * one record into the sample ring (preload/ring.h). What cannot be taken or
 * kept is counted. */
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

#define NFRAMES ((int)(sizeof sampler_tls.frames / sizeof sampler_tls.frames[0]))

/* Async-signal-safe. libunwind's walk into t->frames (the one call site of
 * the libunwind pointer). The walk starts in this handler: *first is the index
 * of the interrupted pc (after the kernel's signal trampoline), -1 if not
 * found. (libunwind's cursor API from uc would start there directly, but it
 * masks and unmasks signals with two system calls per frame: ~100 us a
 * sample here, against ~3.5 us for unw_backtrace's cached fast path.) */
__attribute__((noinline)) static int libunwind_walk(struct sampler_thread *t, uintptr_t ip, int *first)
{
    t->in_unwinder = 1;
    int n = sampler_unw_backtrace(t->frames, NFRAMES);
    t->in_unwinder = 0;
    *first = -1;
    for (int i = 0; i < n && i < 16; i++) {
        if ((uintptr_t)t->frames[i] == ip) {
            *first = i;
            break;
        }
    }
    return n;
}

/* Async-signal-safe. Check mode: the walker's frames against libunwind's, on
 * the same stopped stack. The first difference is kept for the exit log. */
struct sampler_check_diff sampler_check_first;

static void check_walk(struct sampler_thread *t, uintptr_t ip, int nf, int trunc)
{
    int first;
    int n = libunwind_walk(t, ip, &first);
    int un = first < 0 ? 0 : n - first;
    int utrunc = un > REC_MAX_FRAMES;
    if (un > REC_MAX_FRAMES)
        un = REC_MAX_FRAMES;
    int same = first >= 0 && un == nf && utrunc == trunc;
    for (int i = 0; same && i < nf; i++)
        same = (uint64_t)(uintptr_t)t->frames[first + i] == unwind_pc(&t->uw, i);
    count(&sampler_counters.check_compared, 1);
    if (same)
        return;
    count(&sampler_counters.check_differ, 1);
    int zero = 0;
    if (!__atomic_compare_exchange_n(&sampler_check_first.claimed, &zero, 1, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
        return;
    struct sampler_check_diff *d = &sampler_check_first;
    d->n_ours = nf;
    d->n_unw = un;
    for (int i = 0; i < nf && i < SAMPLER_CHECK_KEEP; i++)
        d->ours[i] = unwind_pc(&t->uw, i);
    for (int i = 0; i < un && i < SAMPLER_CHECK_KEEP; i++)
        d->unw[i] = (uint64_t)(uintptr_t)t->frames[first + i];
    __atomic_store_n(&d->claimed, 2, __ATOMIC_RELEASE);
}

/* Async-signal-safe. */
static void fill_header(struct sample_rec *r, const struct sampler_thread *t, int nf, int trunc, uint32_t weight)
{
    r->magic = REC_MAGIC;
    r->nframes = (uint16_t)nf;
    r->flags = trunc ? REC_F_TRUNCATED : 0;
    r->tid = t->tid;
    r->weight = weight;
    r->span_id = t->span_id;
    r->root_span_id = t->root_span_id;
}

static uint64_t elapsed_ns(const struct timespec *a, const struct timespec *b)
{
    return (uint64_t)((b->tv_sec - a->tv_sec) * 1000000000LL + (b->tv_nsec - a->tv_nsec));
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
    if (!sampler_active || t->in_handler) {
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
    int trunc = 0;
    int nf = unwind_walk(&t->uw, uc, REC_MAX_FRAMES, &trunc);
    int walked = nf > 0, written;
    if (walked) {
        /* The record is written in place, from the walker's frames. */
        struct ring_hdr *h;
        struct sample_rec *r = ring_reserve(&sampler_ring, REC_SIZE(nf), &h);
        if ((written = r != NULL)) {
            fill_header(r, t, nf, trunc, weight);
            for (int i = 0; i < nf; i++)
                r->pc[i] = unwind_pc(&t->uw, i);
            ring_commit(h);
        }
    } else if (__atomic_load_n(&sampler_unw_backtrace, __ATOMIC_ACQUIRE) == NULL) {
        /* libunwind is not ready yet: the collector readies it on its next
         * tick (sampler_unw_prepare). */
        __atomic_store_n(&sampler_unw_wanted, 1, __ATOMIC_RELAXED);
        count(&sampler_counters.lost_busy, weight);
        t->in_handler = 0;
        errno = saved_errno;
        return;
    } else {
        count(&unwind_counters.fallbacks, 1);
        struct sample_rec *r = &t->rec;
        int first;
        int n = libunwind_walk(t, ip, &first);
        if (first < 0) {
            r->pc[0] = ip;
            nf = 1;
            trunc = 0;
            count(&sampler_counters.lost_unwind, 1);
        } else {
            nf = n - first;
            trunc = nf > REC_MAX_FRAMES;
            if (nf > REC_MAX_FRAMES)
                nf = REC_MAX_FRAMES;
            memcpy(r->pc, &t->frames[first], (size_t)nf * sizeof r->pc[0]);
        }
        fill_header(r, t, nf, trunc, weight);
        written = ring_put(&sampler_ring, r, REC_SIZE(nf)) == 0;
    }
    if (!written) {
        count(&sampler_counters.lost_write, weight);
    } else {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        uint64_t ns = elapsed_ns(&t0, &t1);
        count(&sampler_counters.samples, 1);
        count(&sampler_counters.handler_ns, ns);
        count(&sampler_counters.handler_hist[sampler_hist_bucket(ns)], 1);
    }
    if (sampler_unwind_check && walked && sampler_unw_backtrace)
        check_walk(t, ip, nf, trunc);
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
