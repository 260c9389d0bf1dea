/* execer.c — burns CPU in before_exec_work(), then execs argv[1...] (e.g. the
 * busy program). With many sampling ticks in flight, the exec'd image must not
 * be killed by a pending profiling signal, and must be profiled as itself. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static volatile double sink;

__attribute__((noinline)) void before_exec_work(void)
{
    struct timespec ts;
    long long end;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    end = ts.tv_sec * 1000000000LL + ts.tv_nsec + 500000000LL;
    double x = 1;
    for (;;) {
        for (int i = 0; i < 100000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        if (ts.tv_sec * 1000000000LL + ts.tv_nsec >= end)
            break;
    }
    sink = x;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    before_exec_work();
    printf("execer %d\n", (int)getpid());
    fflush(stdout);
    execv(argv[1], argv + 1);
    perror("execv");
    return 127;
}
