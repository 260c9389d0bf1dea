/* bench/unwindcost.c — what one stack walk costs, outside the shim: at the
 * bottom of DEPTH frames (the same recursion as tests/progs/deep.c), a
 * per-thread CPU-time timer (1 ms, as the shim arms) interrupts the spin loop
 * and the handler walks the interrupted stack, one method per signal in
 * rotation so that each walk finds the caches as a sample does (cold), not
 * warmed by another method's walk:
 *   unw   libunwind's unw_backtrace, the shim's fallback;
 *   shim  the shim's walker (preload/unwind.c, linked in);
 *   fp    following frame pointers from the interrupted rbp (meaningful only
 *         in a -fno-omit-frame-pointer build, compiled with -DFP_BUILD).
 * Each walk is timed with CLOCK_MONOTONIC like the shim's own figure. Every
 * fourth signal is a check instead: the shim's walker and unw_backtrace on
 * the same stopped stack must give the same frames.
 * usage: unwindcost DEPTH [MS]
 * Prints JSON: median and mean ns per walk, frames found, checks. */
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "preload/unwind.h"

#define MAXS 4096
enum { M_UNW, M_SHIM, M_FP, M_CHECK, M_N };
static long long ns_of[3][MAXS];
static int nsamp[3], frames_of[3];
static volatile int nsig, nchecks, ndiff, nshim_fallback;
static uintptr_t stack_lo, stack_hi;
static volatile double sink;
static struct unwind_thread uw;

static long long now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int fp_walk(const ucontext_t *uc, uintptr_t *pcs, int max)
{
    uintptr_t fp = (uintptr_t)uc->uc_mcontext.gregs[REG_RBP];
    int k = 0;
    pcs[k++] = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    while (k < max && fp >= stack_lo && fp + 16 <= stack_hi && (fp & 7) == 0) {
        uintptr_t next = ((uintptr_t *)fp)[0];
        pcs[k++] = ((uintptr_t *)fp)[1];
        if (next <= fp)
            break;
        fp = next;
    }
    return k;
}

/* libunwind's frames from the interrupted pc on (its walk starts in this handler). */
static int unw_from(const ucontext_t *uc, uintptr_t *out, int max)
{
    void *f[256];
    int n = unw_backtrace(f, 256), first = -1;
    for (int i = 0; i < n && i < 16; i++)
        if ((uintptr_t)f[i] == (uintptr_t)uc->uc_mcontext.gregs[REG_RIP]) {
            first = i;
            break;
        }
    if (first < 0)
        return 0;
    int k = 0;
    for (int i = first; i < n && k < max; i++)
        out[k++] = (uintptr_t)f[i];
    return k;
}

static void on_prof(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    (void)si;
    const ucontext_t *uc = ucv;
    int method = nsig++ % M_N;
    uint64_t pcs[UNWIND_MAX];
    uintptr_t ref[UNWIND_MAX];
    int n = 0, trunc;
    if (method == M_CHECK) {
        n = unwind_walk(&uw, uc, UNWIND_MAX, &trunc);
        if (n > 0) {
            for (int i = 0; i < n; i++)
                pcs[i] = unwind_pc(&uw, i);
            int m = unw_from(uc, ref, UNWIND_MAX);
            nchecks++;
            int same = m == n;
            for (int i = 0; same && i < n; i++)
                same = ref[i] == pcs[i];
            ndiff += !same;
        }
        return;
    }
    if (nsamp[method] >= MAXS)
        return;
    long long t0 = now(CLOCK_MONOTONIC);
    if (method == M_UNW) {
        void *f[256];
        n = unw_backtrace(f, 256);
        sink += (double)(uintptr_t)f[n - 1];
    } else if (method == M_SHIM) {
        n = unwind_walk(&uw, uc, UNWIND_MAX, &trunc);
        if (n < 0)
            nshim_fallback++;
        else
            for (int i = 0; i < n; i++)
                pcs[i] = unwind_pc(&uw, i); /* the copy the shim makes into its record */
    } else {
        n = fp_walk(uc, (uintptr_t *)pcs, UNWIND_MAX);
    }
    long long t1 = now(CLOCK_MONOTONIC);
    sink += (double)pcs[n > 0 ? n - 1 : 0];
    ns_of[method][nsamp[method]++] = t1 - t0;
    frames_of[method] = n;
}

__attribute__((noinline)) void leaf_spin(long long until)
{
    double x = 1;
    while (now(CLOCK_THREAD_CPUTIME_ID) < until)
        for (int i = 0; i < 1000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

__attribute__((noinline)) int descend(int depth, long long until)
{
    if (depth <= 1) {
        leaf_spin(until);
        return 1;
    }
    int r = descend(depth - 1, until);
    sink += r;
    return r + 1;
}

static int cmp(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static void stats(const char *name, int method, int last)
{
    long long *v = ns_of[method], sum = 0;
    int n = nsamp[method];
    for (int i = 0; i < n; i++)
        sum += v[i];
    qsort(v, (size_t)n, sizeof *v, cmp);
    printf("\"%s_median_ns\": %lld, \"%s_mean_ns\": %.0f, \"frames_%s\": %d%s", name, n ? v[n / 2] : 0, name,
           n ? (double)sum / n : 0.0, name, frames_of[method], last ? "" : ", ");
}

int main(int argc, char **argv)
{
    int depth = argc > 1 ? atoi(argv[1]) : 32;
    long ms = argc > 2 ? atol(argv[2]) : 1000;
    pthread_attr_t a;
    void *addr;
    size_t size;
    pthread_getattr_np(pthread_self(), &a);
    pthread_attr_getstack(&a, &addr, &size);
    stack_lo = (uintptr_t)addr;
    stack_hi = stack_lo + size;
    void *tab = mmap(NULL, UNWIND_TABLE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unwind_use_table(tab);
    unwind_thread_reset(&uw, stack_lo, stack_hi);
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD); /* as the shim sets it */
    void *warm[256];
    unw_backtrace(warm, 256); /* libunwind's first-use initialisation, outside the handler */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_prof;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    sigaction(SIGPROF, &sa, NULL);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGPROF;
    sev._sigev_un._tid = (int)syscall(SYS_gettid);
    timer_t tm;
    timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &tm);
    struct itimerspec it = {{0, 1000000}, {0, 1000000}};
    timer_settime(tm, 0, &it, NULL);
    descend(depth, now(CLOCK_THREAD_CPUTIME_ID) + ms * 1000000LL);
    struct itimerspec off = {{0, 0}, {0, 0}};
    timer_settime(tm, 0, &off, NULL);
    printf("{\"depth\": %d, \"checks\": %d, \"checks_differ\": %d, \"shim_fallbacks\": %d, ", depth, nchecks, ndiff,
           nshim_fallback);
    stats("unw", M_UNW, 0);
#ifdef FP_BUILD
    stats("shim", M_SHIM, 0);
    stats("fp", M_FP, 1);
#else
    stats("shim", M_SHIM, 1);
#endif
    printf("}\n");
    return 0;
}
