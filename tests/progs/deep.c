/* deep.c — spins at the bottom of a call chain of argv[1] frames (default 32)
 * for argv[2] ms of CPU (default 2000): handler-cost and deep-stack tests. */
#include <stdlib.h>
#include <time.h>

static volatile double sink;

static long long cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void leaf_spin(long long until)
{
    double x = 1;
    while (cpu_now() < until)
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
    sink += r; /* not a tail call: every level keeps its frame */
    return r + 1;
}

int main(int argc, char **argv)
{
    int depth = argc > 1 ? atoi(argv[1]) : 32;
    long ms = argc > 2 ? atol(argv[2]) : 2000;
    return descend(depth, cpu_now() + ms * 1000000LL) > 0 ? 0 : 1;
}
