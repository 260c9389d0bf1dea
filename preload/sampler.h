/* preload/sampler.h — CPU sampling: the per-thread CPU-time timers, the
 * sampling signal and its handler. The handler (preload/sighandler.c) is the
 * only code of the shim that runs in signal context. */
#ifndef DDSHIM_SAMPLER_H
#define DDSHIM_SAMPLER_H

#include <signal.h>
#include <stdint.h>

#include "common/record.h"
#include "preload/ring.h"
#include "preload/unwind.h"

#define TLS_IE __attribute__((tls_model("initial-exec")))

/* Per-thread state. Initial-exec TLS only: dynamic TLS may allocate, which a
 * signal handler must never do. */
struct sampler_thread {
    int tid;          /* kernel tid this state belongs to (0: not armed) */
    int timer_id;     /* kernel posix timer id, -1 when none */
    int in_loader;    /* > 0 inside dlopen/dlclose/dl_iterate_phdr/fork: skip samples */
    int in_handler;   /* re-entrancy guard */
    int shim_thread;  /* one of the shim's own threads: never armed, hooks pass through */
    int in_unwinder;  /* inside libunwind: its pipe2/close calls are on guarded fds */
    uint64_t span_id, root_span_id; /* set by the HTTP hooks (later) */
    struct unwind_thread uw;        /* the walker's stack bounds and previous walk */
    /* Only when libunwind walks (fallback, check mode): */
    struct sample_rec rec;          /* the record being built (kept off the stack) */
    void *frames[REC_MAX_FRAMES + 16];
};
extern __thread struct sampler_thread sampler_tls TLS_IE;

/* Per-sample handler time histogram: 0-15 ns exact, then 8 buckets per power
 * of two (12.5 % wide), so that a median can be reported next to the mean. */
#define SAMPLER_HIST_BUCKETS 256
static inline unsigned sampler_hist_bucket(uint64_t ns)
{
    if (ns < 16)
        return (unsigned)ns;
    unsigned e = 63u - (unsigned)__builtin_clzll(ns);
    unsigned b = 16u + (e - 4u) * 8u + (unsigned)((ns >> (e - 3u)) & 7u);
    return b < SAMPLER_HIST_BUCKETS ? b : SAMPLER_HIST_BUCKETS - 1;
}
/* Lowest ns value of bucket b (its width: the next bucket's minus this). */
static inline uint64_t sampler_hist_lo(unsigned b)
{
    if (b < 16)
        return b;
    unsigned e = 4u + (b - 16u) / 8u;
    return (uint64_t)(8u + (b - 16u) % 8u) << (e - 3u);
}

/* Counters, updated with atomic adds, read by the collector. */
struct sampler_counters {
    uint64_t samples;        /* records written */
    uint64_t lost_loader;    /* periods skipped: thread inside the loader */
    uint64_t lost_busy;      /* periods skipped: re-entrant or not ready */
    uint64_t lost_write;     /* periods lost: socket full */
    uint64_t lost_unwind;    /* stacks that could not be unwound (leaf only kept) */
    uint64_t timers_failed;  /* threads that could not get a timer */
    uint64_t handler_ns;     /* time spent in the handler for written samples */
    uint64_t handler_hist[SAMPLER_HIST_BUCKETS]; /* the same, per sample, log-linear */
    uint64_t check_compared; /* DDSHIM_UNWIND_CHECK: walks compared with libunwind's */
    uint64_t check_differ;   /* ... and found different */
};
extern struct sampler_counters sampler_counters;

/* Signal-context entry points (sighandler.c). */
void sampler_on_signal(int sig, siginfo_t *si, void *uc);
/* SIGTERM/SIGINT whose host disposition is the default: ask the uploader for
 * the final profile, wait for it (bounded), then die of the signal as the host
 * would have. */
void sampler_on_terminate(int sig, siginfo_t *si, void *uc);
/* Bumped (and futex-woken) by the uploader when a flush asked for by
 * sampler_on_terminate is done. */
extern volatile int sampler_term_gen;

/* Shared between sampler.c (sets) and sighandler.c (reads). */
extern volatile int sampler_signo;      /* 0 when CPU sampling is off */
extern struct ring sampler_ring;        /* the sample channel to the collector */
extern volatile int sampler_active;     /* records are accepted */
extern int sampler_cookie;              /* &sampler_cookie tags our timers' signals */
/* libunwind's unw_backtrace, for the samples the shim's walker does not
 * handle. Its fast path keeps a 256 KB trace cache per thread, made (mmap) on
 * the thread's first call: in the handler, on the thread's first fallback, so
 * threads the walker always handles never pay for it. NULL until the first
 * sample that needs it (or from the start without the walker). Outside the handler
 * the shim only makes libunwind's thread-local block (sampler.c's warm). */
extern int (*sampler_unw_backtrace)(void **, int);
/* Set by the handler when a sample needed libunwind before it was ready;
 * the collector thread then calls sampler_unw_prepare (with its lock held),
 * which runs libunwind's one-time set-up and publishes sampler_unw_backtrace.
 * Until then those samples are counted as lost (sampler_counters.lost_busy). */
extern volatile int sampler_unw_wanted;
void sampler_unw_prepare(void);
/* DDSHIM_UNWIND_CHECK=1 (a test knob, not a setting): every walk of the
 * shim's walker is also taken by libunwind and compared; the counts and the
 * first difference are logged at exit. */
extern int sampler_unwind_check;
#define SAMPLER_CHECK_KEEP 48
struct sampler_check_diff {
    int claimed; /* 0 free, 1 being written, 2 written */
    int n_ours, n_unw;
    uint64_t ours[SAMPLER_CHECK_KEEP], unw[SAMPLER_CHECK_KEEP];
};
extern struct sampler_check_diff sampler_check_first;
/* How the host sees our signal's disposition (SIG_DFL or SIG_IGN): what a
 * foreign (non-timer) instance of the signal must do. */
extern volatile int sampler_host_ignores;

/* Set up at start (constructor): load libunwind privately, install the
 * handler on a free signal, remember period. Returns 0 or -1 (sampling off). */
int sampler_init(int hz);
/* Arm the calling thread (new thread start, main thread, fork child). */
void sampler_thread_begin(void);
/* Disarm the calling thread (before it exits / execs). */
void sampler_thread_end(void);
/* In a fork child: forget the parent's timers and threads, re-arm this thread. */
void sampler_after_fork_child(void);
/* The host wants our signal for itself: move sampling to another signal. */
int sampler_yield_signal(void);
/* Stop everything (process exit). */
void sampler_shutdown(void);
int64_t sampler_period_ns(void);

#endif
