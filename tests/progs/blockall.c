/* blockall.c — a host that blocks every signal in every thread: main blocks
 * them all with pthread_sigmask() before it creates anything, starts 2 threads
 * (which inherit the mask), all three burn ~400 ms of CPU in blockall_work(),
 * then each checks that its mask is still "everything blocked" (the shim must
 * not change a host's mask) and main prints the result and exits 0.
 * "blockall unblock" unblocks SIGPROF in main before starting the threads, as
 * a shim that changed the mask would: the tests use it to prove that their
 * check sees a changed mask. */
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>

static volatile double sink;
static int intact;

static long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void blockall_work(long ms)
{
    long long end = thread_cpu_ns() + ms * 1000000LL;
    double x = 1;
    while (thread_cpu_ns() < end)
        for (int i = 0; i < 1000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

static int mask_intact(void)
{
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP || (s >= 32 && s < SIGRTMIN))
            continue; /* cannot be blocked / reserved by glibc */
        if (!sigismember(&now, s))
            return 0;
    }
    return 1;
}

static void *worker(void *arg)
{
    (void)arg;
    blockall_work(400);
    if (mask_intact())
        __atomic_add_fetch(&intact, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

int main(int argc, char **argv)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    if (argc > 1 && strcmp(argv[1], "unblock") == 0) {
        sigset_t prof;
        sigemptyset(&prof);
        sigaddset(&prof, SIGPROF);
        pthread_sigmask(SIG_UNBLOCK, &prof, NULL);
    }
    pthread_t a, b;
    pthread_create(&a, NULL, worker, NULL);
    pthread_create(&b, NULL, worker, NULL);
    blockall_work(400);
    if (mask_intact())
        __atomic_add_fetch(&intact, 1, __ATOMIC_SEQ_CST);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("threads with every signal still blocked: %d of 3\n", intact);
    return 0;
}
