/* preload/sampler.c — per-thread CPU-time timers and the sampling signal.
 *
 * Each sampled thread owns one kernel POSIX timer on its own CPU-time clock
 * (CLOCK_THREAD_CPUTIME_ID semantics, made from the tid so any thread can
 * create it), delivering the sampling signal to that thread only
 * (SIGEV_THREAD_ID) every 1/Hz seconds of the thread's CPU time, with a random
 * first expiry so short threads are not under-counted. Raw syscalls are used
 * so the ids are the kernel's own.
 *
 * Called from host threads at thread start/exit (via preload/hooks.c), from the
 * constructor and fork child handler, and from the sigaction hook when the host
 * claims our signal. Never from signal context (see sighandler.c for that).
 * libunwind is dlopen'd RTLD_LOCAL so its _Unwind_* and backtrace symbols never
 * replace the host's (libgcc_s, glibc); the handler uses it only for stacks the
 * shim's own walker (preload/unwind.c) hands over. This file gives the walker
 * its rule table and each thread's stack bounds, and logs the handler's cost
 * (median and mean, from a histogram the handler keeps) at exit. */
#include "preload/sampler.h"

#include "common/log.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

__thread struct sampler_thread sampler_tls TLS_IE = {.timer_id = -1};
struct sampler_counters sampler_counters;
volatile int sampler_signo;
struct ring sampler_ring;
volatile int sampler_active;
volatile int sampler_host_ignores;
int sampler_cookie;
int (*sampler_unw_backtrace)(void **, int);
/* libunwind's cursor API (RTLD_LOCAL, no header): only to make a thread's
 * libunwind TLS block outside the handler. unw_cursor_t is 127 words on
 * x86_64 (libunwind-x86_64.h); room for more is given. */
#define UNW_CURSOR_WORDS 256
static int (*unw_init_local_fn)(void *cursor, void *uc);
static int (*unw_step_fn)(void *cursor);
static int (*unw_getcontext_fn)(void *uc);
static int unw_lazy_cache; /* threads make their trace cache on first use (unw_prepare) */
static int (*unw_bt_fn)(void **, int); /* unw_backtrace, published by unw_prepare */
static pthread_key_t unw_key_hold;      /* a first-block key kept for libunwind's (unw_prepare) */
static int unw_key_held;
volatile int sampler_unw_wanted; /* the handler had a sample for libunwind before it was ready */
int sampler_unwind_check;

static int64_t period_ns;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
/* Registry of armed threads, so the signal can be moved and timers removed. */
struct reg_entry {
    int tid;
    int timer_id;
};
static struct reg_entry *reg;
static size_t reg_len, reg_cap;

int64_t sampler_period_ns(void)
{
    return period_ns;
}

static pid_t my_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* The CPU-time clock of thread tid (linux/posix-timers.h: CPUCLOCK_PERTHREAD | SCHED). */
static clockid_t thread_cpu_clock(int tid)
{
    return (clockid_t)((~(unsigned)tid << 3) | 6u);
}

static int timer_make(int tid, int signo, int *id_out)
{
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = signo;
    sev.sigev_value.sival_ptr = &sampler_cookie;
    sev._sigev_un._tid = tid;
    int id = -1;
    if (syscall(SYS_timer_create, thread_cpu_clock(tid), &sev, &id) != 0)
        return -1;
    /* First expiry uniformly random within one period. */
    static __thread uint64_t seed TLS_IE;
    if (!seed)
        seed = ((uint64_t)tid << 32) ^ (uint64_t)(uintptr_t)&sev ^ (uint64_t)period_ns;
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    int64_t first = 1 + (int64_t)((seed >> 33) % (uint64_t)period_ns);
    struct itimerspec its;
    its.it_interval.tv_sec = period_ns / 1000000000;
    its.it_interval.tv_nsec = period_ns % 1000000000;
    its.it_value.tv_sec = first / 1000000000;
    its.it_value.tv_nsec = first % 1000000000;
    if (syscall(SYS_timer_settime, id, 0, &its, NULL) != 0) {
        syscall(SYS_timer_delete, id);
        return -1;
    }
    *id_out = id;
    return 0;
}

static void reg_add(int tid, int id)
{
    pthread_mutex_lock(&reg_lock);
    if (reg_len == reg_cap) {
        size_t ncap = reg_cap ? reg_cap * 2 : 64;
        struct reg_entry *n = realloc(reg, ncap * sizeof *n);
        if (n) {
            reg = n;
            reg_cap = ncap;
        }
    }
    if (reg_len < reg_cap)
        reg[reg_len++] = (struct reg_entry){tid, id};
    pthread_mutex_unlock(&reg_lock);
}

static int pick_signal(void)
{
    struct sigaction cur;
    if (sigaction(SIGPROF, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
        (cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN)) {
        sampler_host_ignores = cur.sa_handler == SIG_IGN;
        return SIGPROF;
    }
    return -1;
}

static int pick_rt_signal(void)
{
    /* From the top down: libraries that take RT signals usually start at SIGRTMIN. */
    for (int s = SIGRTMAX - 1; s >= SIGRTMIN + 4; s--) {
        struct sigaction cur;
        if (sigaction(s, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
            cur.sa_handler == SIG_DFL)
            return s;
    }
    return -1;
}

static int install_handler(int signo)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = sampler_on_signal;
    /* SA_RESTART: a host that does not retry on EINTR keeps working. */
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    return sigaction(signo, &sa, NULL);
}

/* The calling thread's stack, for the walker's bounds checks; 0/0 when
 * unknown (every walk of the thread then goes to libunwind). */
static void thread_stack(uintptr_t *lo, uintptr_t *hi)
{
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) != 0)
        return;
    void *addr;
    size_t size;
    if (pthread_attr_getstack(&a, &addr, &size) == 0) {
        *lo = (uintptr_t)addr;
        *hi = (uintptr_t)addr + size;
    }
    pthread_attr_destroy(&a);
}

/* Warm this thread's libunwind caches and the shim walker's state outside
 * signal context: the first walk through each code path parses unwind tables
 * (and touches the pages the handler will use). */
static void warm_unwind(void)
{
    if (unw_step_fn) {
        /* libunwind's thread-local block (dynamic TLS of a dlopen'd library:
         * malloc'd by the loader on first touch) is made here, never in the
         * handler: one step of a cursor touches it. Not unw_backtrace, which
         * would also map and fill this thread's 256 KB trace cache. */
        uint64_t cur[UNW_CURSOR_WORDS] __attribute__((aligned(16)));
        ucontext_t uc;
        sampler_tls.in_unwinder = 1;
        if (unw_getcontext_fn(&uc) == 0 && unw_init_local_fn(cur, &uc) == 0)
            (void)unw_step_fn(cur);
        if (!unw_lazy_cache && sampler_unw_backtrace) {
            void *tmp[4]; /* see sampler_init: this thread's trace cache, now */
            sampler_unw_backtrace(tmp, 4);
        }
        sampler_tls.in_unwinder = 0;
    }
    /* The same for the shim's walker: rules of the frames every sample of
     * this thread has (its start, main), its hints. */
    ucontext_t uc;
    int trunc;
    if (getcontext(&uc) == 0)
        (void)unwind_walk(&sampler_tls.uw, &uc, REC_MAX_FRAMES, &trunc);
}

/* Run unw_backtrace's first call, then publish it to the handler.
 *
 * That first call runs libunwind's pthread_once (creating the trace cache's
 * pthread key), which must never first happen in a handler, and makes the
 * calling thread's 256 KB trace cache. Other threads make theirs in the
 * handler, on their first fallback: mmap and pthread_setspecific, which
 * allocates nothing for a key in glibc's first block of 32 (a later key may
 * calloc its second-level block, never to be done in a handler). The key
 * libunwind gets is the lowest free one, which the probe just before finds,
 * and the value it sets on this thread confirms it (a host thread may create
 * a key in between). sampler_init holds a key of the first block for it
 * (unw_key_hold) until then, so that a host creating many keys meanwhile
 * does not push libunwind's out of it. Above the first block: at start (AT_INIT, when only this
 * thread runs) every later thread fills its cache when it starts instead;
 * later, threads already running have none, so libunwind is not published and
 * the samples it would have walked stay counted as lost.
 *
 * From sampler_init (at_init) or from the collector thread with its lock
 * held (libunwind's thread-local block is malloc'd here on that thread). */
static void unw_prepare(int at_init)
{
    if (sampler_unw_backtrace || !unw_bt_fn)
        return;
    pthread_key_t probe = unw_key_hold;
    int made = unw_key_held;
    if (!made)
        made = pthread_key_create(&probe, NULL) == 0;
    if (made)
        pthread_key_delete(probe); /* libunwind's pthread_key_create takes it */
    unw_key_held = 0;
    void *tmp[4];
    sampler_tls.in_unwinder = 1;
    unw_bt_fn(tmp, 4);
    sampler_tls.in_unwinder = 0;
    unw_lazy_cache = made && probe < 32 && pthread_getspecific(probe) != NULL;
    if (unw_lazy_cache || at_init)
        __atomic_store_n(&sampler_unw_backtrace, unw_bt_fn, __ATOMIC_RELEASE);
    else
        log_info("libunwind's trace-cache key is not in glibc's first block; samples the stack "
                 "walker cannot take are counted as lost");
    unw_bt_fn = NULL; /* once */
}

void sampler_unw_prepare(void)
{
    if (__atomic_load_n(&sampler_unw_wanted, __ATOMIC_RELAXED))
        unw_prepare(0);
}

int sampler_init(int hz)
{
    period_ns = 1000000000LL / hz;
    /* RTLD_LOCAL: libunwind.so exports _Unwind_RaiseException and backtrace;
     * loaded globally they would capture the host's C++ exceptions and
     * glibc's backtrace. */
    void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        log_warn("CPU profiling is off: cannot load libunwind.so.8 (%s)", dlerror());
        return -1;
    }
    int (*set_policy)(void *, int) = (int (*)(void *, int))dlsym(h, "_ULx86_64_set_caching_policy");
    void **as = dlsym(h, "_ULx86_64_local_addr_space");
    /* libunwind initialises itself here (and opens its memory-validation
     * pipe): mark it so the pipe2 hook moves and guards that pipe. */
    sampler_tls.in_unwinder = 1;
    if (set_policy && as)
        set_policy(*as, 2 /* UNW_CACHE_PER_THREAD */);
    sampler_tls.in_unwinder = 0;
    unw_init_local_fn = (int (*)(void *, void *))dlsym(h, "_ULx86_64_init_local");
    unw_getcontext_fn = (int (*)(void *))dlsym(h, "_Ux86_64_getcontext");
    unw_step_fn = (int (*)(void *))dlsym(h, "_ULx86_64_step");
    if (!unw_init_local_fn || !unw_getcontext_fn || !unw_step_fn)
        unw_step_fn = NULL;
    int (*bt)(void **, int) = (int (*)(void **, int))dlsym(h, "unw_backtrace");
    if (!bt || !unw_step_fn) {
        log_warn("CPU profiling is off: libunwind.so.8 lacks unw_backtrace or its cursor functions");
        return -1;
    }
    unw_bt_fn = bt;
    if (pthread_key_create(&unw_key_hold, NULL) == 0) {
        unw_key_held = unw_key_hold < 32;
        if (!unw_key_held)
            pthread_key_delete(unw_key_hold);
    }
    /* The shim's own stack walker (preload/unwind.c) and its rule table.
     * Not populated: its 64 pages are touched as code addresses are first
     * seen, a page fault for those few samples (safe in a handler: private
     * anonymous memory), instead of 256 KB zeroed at the start of every
     * process, most of which (a shell's fork+exec children) never take a
     * sample. Without the table every sample goes to libunwind,
     * which is also what DDSHIM_UNWIND_WALKER=0 asks (a test and benchmark
     * knob, like DDSHIM_UNWIND_CHECK). */
    const char *walker = getenv("DDSHIM_UNWIND_WALKER");
    int have_table = 0;
    if (!walker || strcmp(walker, "0") != 0) {
        void *tab = mmap(NULL, UNWIND_TABLE_BYTES, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if ((have_table = tab != MAP_FAILED))
            unwind_use_table(tab);
        else
            log_info("no memory for the stack walker's table; every sample is walked by libunwind");
    }
    const char *chk = getenv("DDSHIM_UNWIND_CHECK");
    sampler_unwind_check = chk && chk[0] == '1';
    /* Every sample goes to libunwind without the walker, and to both in
     * check mode: libunwind is made ready now. Otherwise the collector makes
     * it ready on the first sample the walker hands over (most processes
     * never have one: a short one saves the ~0.6 ms of making this thread's
     * trace cache, 64 page faults). */
    if (!have_table || sampler_unwind_check)
        unw_prepare(1);
    int s = pick_signal();
    if (s < 0)
        s = pick_rt_signal();
    if (s < 0 || install_handler(s) != 0) {
        log_warn("CPU profiling is off: no free signal for sampling");
        return -1;
    }
    if (s != SIGPROF)
        log_info("SIGPROF has a handler already; sampling with signal %d", s);
    sampler_signo = s;
    sampler_active = 1;
    return 0;
}

void sampler_thread_begin(void)
{
    struct sampler_thread *t = &sampler_tls;
    int signo = sampler_signo;
    if (!signo)
        return;
    t->tid = my_tid();
    t->timer_id = -1;
    uintptr_t lo = 0, hi = 0;
    thread_stack(&lo, &hi);
    unwind_thread_reset(&t->uw, lo, hi);
    warm_unwind();
    int id;
    if (timer_make(t->tid, signo, &id) != 0) {
        __atomic_fetch_add(&sampler_counters.timers_failed, 1, __ATOMIC_RELAXED);
        return;
    }
    t->timer_id = id;
    reg_add(t->tid, id);
}

void sampler_thread_end(void)
{
    struct sampler_thread *t = &sampler_tls;
    /* In a vfork child the TLS is the parent's: leave the parent's timer alone. */
    if (t->tid == 0 || t->tid != my_tid())
        return;
    /* The registry, not the TLS copy, holds the current id: the timer may
     * have been re-made on another signal by sampler_yield_signal. */
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < reg_len; i++) {
        if (reg[i].tid == t->tid) {
            if (reg[i].timer_id >= 0)
                syscall(SYS_timer_delete, reg[i].timer_id);
            reg[i] = reg[--reg_len];
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    t->timer_id = -1;
}

void sampler_after_fork_child(void)
{
    /* Timers are not inherited; the registry lock may have been held by a
     * thread that does not exist here. */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    reg_lock = fresh;
    reg_len = 0;
    ring_reset(&sampler_ring);
    struct sampler_thread *t = &sampler_tls;
    t->timer_id = -1;
    if (t->tid == 0 || !sampler_signo) {
        sampler_thread_begin();
        return;
    }
    /* Armed in the parent: this thread's libunwind state (warm, its TLS
     * allocated) and stack bounds are the parent thread's and hold in this
     * copy; only the tid and the timer are new. (Warming again and reading
     * /proc/self/maps for the stack cost ~0.3 ms, in every fork child.) */
    t->tid = my_tid();
    int id;
    if (timer_make(t->tid, sampler_signo, &id) != 0) {
        __atomic_fetch_add(&sampler_counters.timers_failed, 1, __ATOMIC_RELAXED);
        return;
    }
    t->timer_id = id;
    reg_add(t->tid, id);
}

int sampler_yield_signal(void)
{
    int old = sampler_signo;
    if (!old)
        return 0;
    int s = pick_rt_signal();
    if (s < 0 || install_handler(s) != 0) {
        sampler_signo = 0;
        log_warn("the program installed its own handler for signal %d; CPU profiling is off", old);
        pthread_mutex_lock(&reg_lock);
        for (size_t i = 0; i < reg_len; i++)
            syscall(SYS_timer_delete, reg[i].timer_id);
        reg_len = 0;
        pthread_mutex_unlock(&reg_lock);
        sampler_tls.timer_id = -1;
        return -1;
    }
    sampler_signo = s;
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < reg_len; i++) {
        int id;
        int oldid = reg[i].timer_id;
        if (timer_make(reg[i].tid, s, &id) == 0)
            reg[i].timer_id = id;
        else
            reg[i].timer_id = -1;
        syscall(SYS_timer_delete, oldid);
    }
    pthread_mutex_unlock(&reg_lock);
    /* Each thread's TLS copy of its id is refreshed lazily: sampler_thread_end
     * looks the tid up in the registry. */
    log_info("the program took signal %d; sampling moved to signal %d", old, s);
    return 0;
}

/* Quantile q (0..1) of the handler-time histogram: the middle of the bucket
 * holding that rank. */
static uint64_t hist_quantile(const uint64_t *h, uint64_t total, double q)
{
    uint64_t rank = (uint64_t)(q * (double)(total - 1)), seen = 0;
    for (unsigned b = 0; b < SAMPLER_HIST_BUCKETS; b++) {
        seen += h[b];
        if (seen > rank) {
            uint64_t lo = sampler_hist_lo(b);
            uint64_t hi = b + 1 < SAMPLER_HIST_BUCKETS ? sampler_hist_lo(b + 1) : lo + 1;
            return lo + (hi - lo) / 2;
        }
    }
    return 0;
}

/* One line at exit (info level; the benchmark reads it): the handler's cost
 * per written sample, median and mean, and how the stacks were walked. */
static void log_handler_stats(void)
{
    uint64_t h[SAMPLER_HIST_BUCKETS], total = 0;
    for (unsigned b = 0; b < SAMPLER_HIST_BUCKETS; b++) {
        h[b] = __atomic_load_n(&sampler_counters.handler_hist[b], __ATOMIC_RELAXED);
        total += h[b];
    }
    uint64_t ns = __atomic_load_n(&sampler_counters.handler_ns, __ATOMIC_RELAXED);
    if (total > 0)
        log_info("signal handler: %llu samples, median %llu ns, mean %llu ns, p10 %llu ns, p90 %llu ns; "
                 "walker: %llu fallbacks to libunwind, %llu rules read from CFI (%llu unsupported)",
                 (unsigned long long)total, (unsigned long long)hist_quantile(h, total, 0.5),
                 (unsigned long long)(ns / total), (unsigned long long)hist_quantile(h, total, 0.1),
                 (unsigned long long)hist_quantile(h, total, 0.9),
                 (unsigned long long)__atomic_load_n(&unwind_counters.fallbacks, __ATOMIC_RELAXED),
                 (unsigned long long)__atomic_load_n(&unwind_counters.resolved, __ATOMIC_RELAXED),
                 (unsigned long long)__atomic_load_n(&unwind_counters.unsupported, __ATOMIC_RELAXED));
    if (!sampler_unwind_check)
        return;
    uint64_t cmp = __atomic_load_n(&sampler_counters.check_compared, __ATOMIC_RELAXED);
    uint64_t diff = __atomic_load_n(&sampler_counters.check_differ, __ATOMIC_RELAXED);
    log_msg(diff ? LOG_WARN : LOG_INFO, "unwind check: %llu walks compared with libunwind, %llu differ",
            (unsigned long long)cmp, (unsigned long long)diff);
    const struct sampler_check_diff *d = &sampler_check_first;
    if (__atomic_load_n(&d->claimed, __ATOMIC_ACQUIRE) != 2)
        return;
    char ours[SAMPLER_CHECK_KEEP * 19 + 1], unw[SAMPLER_CHECK_KEEP * 19 + 1];
    size_t a = 0, b = 0;
    ours[0] = unw[0] = 0;
    for (int i = 0; i < d->n_ours && i < SAMPLER_CHECK_KEEP; i++)
        a += (size_t)snprintf(ours + a, sizeof ours - a, " %llx", (unsigned long long)d->ours[i]);
    for (int i = 0; i < d->n_unw && i < SAMPLER_CHECK_KEEP; i++)
        b += (size_t)snprintf(unw + b, sizeof unw - b, " %llx", (unsigned long long)d->unw[i]);
    log_warn("unwind check: first difference: walker %d frames:%s", d->n_ours, ours);
    log_warn("unwind check: first difference: libunwind %d frames:%s", d->n_unw, unw);
}

void sampler_shutdown(void)
{
    if (sampler_active)
        log_handler_stats();
    sampler_active = 0;
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < reg_len; i++)
        if (reg[i].timer_id >= 0)
            syscall(SYS_timer_delete, reg[i].timer_id);
    reg_len = 0;
    pthread_mutex_unlock(&reg_lock);
    sampler_tls.timer_id = -1;
}
