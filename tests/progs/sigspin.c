/* sigspin.c — CPU spent inside a signal handler, where the shim's stack walker
 * hands every sample to libunwind (a signal frame is on the stack): main
 * spins in main_work() for MS ms of CPU, then raises SIGUSR1, whose handler
 * spins in handler_work() for another MS ms. With THREADS > 0 as well, that
 * many threads do the same at once (each thread's first libunwind walk makes
 * its trace cache in the handler). KEYS pthread keys are created first, as a
 * program with many thread-local objects would (libunwind's own key must
 * still be one a handler can use). Prints "sigspin: done".
 * usage: sigspin MS [THREADS [KEYS]] */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile double sink;
static long ms = 300;

static long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) static void spin(long n_ms)
{
    long long end = thread_cpu_ns() + n_ms * 1000000LL;
    double x = 1;
    while (thread_cpu_ns() < end)
        for (int i = 0; i < 2000; i++)
            x = x * 1.0000001 + 0.5;
    sink = x;
}

/* (sink after the call: no tail call, so each keeps its own frame) */
__attribute__((noinline)) void main_work(void)
{
    spin(ms);
    sink += 1;
}

__attribute__((noinline)) void handler_work(void)
{
    spin(ms);
    sink += 1;
}

static void on_usr1(int sig)
{
    (void)sig;
    handler_work();
}

static void *thread_main(void *arg)
{
    (void)arg;
    main_work();
    pthread_kill(pthread_self(), SIGUSR1);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        ms = atol(argv[1]);
    int nthreads = argc > 2 ? atoi(argv[2]) : 0;
    int nkeys = argc > 3 ? atoi(argv[3]) : 0;
    for (int i = 0; i < nkeys; i++) {
        pthread_key_t k;
        if (pthread_key_create(&k, NULL) != 0)
            break;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t th[64];
    if (nthreads > 64)
        nthreads = 64;
    for (int i = 0; i < nthreads; i++)
        pthread_create(&th[i], NULL, thread_main, NULL);
    main_work();
    raise(SIGUSR1);
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    printf("sigspin: done\n");
    return 0;
}
