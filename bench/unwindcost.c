/* bench/unwindcost.c — what one stack walk costs, outside the shim: at the
 * bottom of DEPTH frames (the same recursion as tests/progs/deep.c), a CPU
 * timer (ITIMER_PROF, 1 ms) interrupts the spin loop and the handler walks the
 * interrupted stack (a) with libunwind's unw_backtrace, the call the shim's
 * handler makes, and (b) by following frame pointers from the interrupted
 * context's rbp (meaningful only in a -fno-omit-frame-pointer build, compiled
 * with -DFP_BUILD). Each walk is timed with CLOCK_MONOTONIC like the shim's
 * own figure. usage: unwindcost DEPTH [MS]
 * Prints JSON: median and mean ns per walk, and frames found. */
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <ucontext.h>

#define MAXS 4096
static long long unw_ns[MAXS], fp_ns[MAXS];
static int nunw_frames, nfp_frames;
static volatile int ns;
static uintptr_t stack_lo, stack_hi;
static volatile double sink;

static long long now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_prof(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    (void)si;
    if (ns >= MAXS)
        return;
    void *frames[256];
    long long t0 = now(CLOCK_MONOTONIC);
    int n = unw_backtrace(frames, 256);
    long long t1 = now(CLOCK_MONOTONIC);
    ucontext_t *uc = ucv;
    uintptr_t fp = (uintptr_t)uc->uc_mcontext.gregs[REG_RBP];
    uintptr_t pcs[256];
    int k = 0;
    long long t2 = now(CLOCK_MONOTONIC);
    pcs[k++] = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    while (k < 256 && fp >= stack_lo && fp + 16 <= stack_hi && (fp & 7) == 0) {
        uintptr_t next = ((uintptr_t *)fp)[0];
        pcs[k++] = ((uintptr_t *)fp)[1];
        if (next <= fp)
            break;
        fp = next;
    }
    long long t3 = now(CLOCK_MONOTONIC);
    sink += pcs[k - 1];
    unw_ns[ns] = t1 - t0;
    fp_ns[ns] = t3 - t2;
    nunw_frames = n;
    nfp_frames = k;
    ns++;
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

static void stats(const char *name, long long *v, int n, int last)
{
    long long sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    qsort(v, (size_t)n, sizeof *v, cmp);
    printf("\"%s_median_ns\": %lld, \"%s_mean_ns\": %.0f%s", name, n ? v[n / 2] : 0, name,
           n ? (double)sum / n : 0.0, last ? "" : ", ");
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
    void *warm[256];
    unw_backtrace(warm, 256); /* libunwind's first-use initialisation, outside the handler */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_prof;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_PROF, &it, NULL);
    descend(depth, now(CLOCK_THREAD_CPUTIME_ID) + ms * 1000000LL);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_PROF, &off, NULL);
    int n = ns;
    printf("{\"depth\": %d, \"walks\": %d, \"frames_unw\": %d, \"frames_fp\": %d, ", depth, n, nunw_frames,
           nfp_frames);
#ifdef FP_BUILD
    stats("unw", unw_ns, n, 0);
    stats("fp", fp_ns, n, 1);
#else
    stats("unw", unw_ns, n, 1);
#endif
    printf("}\n");
    return 0;
}
