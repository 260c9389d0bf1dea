/* bench/exitprobe.c — burns argv[1] ms of CPU (default 500, so a profiler has
 * samples to deliver at exit), then prints CLOCK_MONOTONIC in ns just before
 * returning from main. The harness timestamps the return of wait4 on the same
 * clock: the difference is the time from the program's own exit path to the
 * end of the process. With argv[2] "sigterm", it raises SIGTERM (default
 * disposition) right after printing instead of returning.
 * usage: exitprobe [MS [return|sigterm]] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile double sink;

static long long now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) static void burn(long ms)
{
    long long end = now(CLOCK_THREAD_CPUTIME_ID) + ms * 1000000LL;
    double x = 1;
    while (now(CLOCK_THREAD_CPUTIME_ID) < end)
        for (int i = 0; i < 10000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

int main(int argc, char **argv)
{
    burn(argc > 1 ? atol(argv[1]) : 500);
    printf("%lld\n", now(CLOCK_MONOTONIC));
    fflush(stdout);
    if (argc > 2 && strcmp(argv[2], "sigterm") == 0)
        raise(SIGTERM);
    return 0;
}
