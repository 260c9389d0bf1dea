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
 * replace the host's (libgcc_s, glibc). */
#include "preload/sampler.h"

#include "common/log.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

__thread struct sampler_thread sampler_tls TLS_IE = {.timer_id = -1};
struct sampler_counters sampler_counters;
volatile int sampler_signo;
struct ring sampler_ring;
volatile int sampler_active;
volatile int sampler_host_ignores;
int sampler_cookie;
int (*sampler_unw_backtrace)(void **, int);

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

/* Warm this thread's libunwind caches outside signal context: the first walk
 * through each code path parses unwind tables. */
static void warm_unwind(void)
{
    if (sampler_unw_backtrace) {
        void *tmp[32];
        sampler_tls.in_unwinder = 1;
        sampler_unw_backtrace(tmp, 32);
        sampler_tls.in_unwinder = 0;
    }
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
    sampler_unw_backtrace = (int (*)(void **, int))dlsym(h, "unw_backtrace");
    if (!sampler_unw_backtrace) {
        log_warn("CPU profiling is off: libunwind has no unw_backtrace");
        return -1;
    }
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
    sampler_tls.timer_id = -1;
    sampler_thread_begin();
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

void sampler_shutdown(void)
{
    sampler_active = 0;
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < reg_len; i++)
        if (reg[i].timer_id >= 0)
            syscall(SYS_timer_delete, reg[i].timer_id);
    reg_len = 0;
    pthread_mutex_unlock(&reg_lock);
    sampler_tls.timer_id = -1;
}
