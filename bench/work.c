/* bench/work.c — fixed-work CPU-bound program for the sampling-cost bench.
 * Unlike busy/split (which stop after a CPU-time budget, so any overhead is
 * absorbed), this does a fixed number of work units, so overhead shows up as
 * extra CPU. usage: work UNITS [THREADS [WALL_SECONDS]]
 * With WALL_SECONDS > 0, every thread works until that much wall time has
 * passed instead (the payload bench: a busy 2-thread program for 60 s).
 * Prints one JSON line: the process's rusage CPU at the end of main (before
 * any exit-time work of a profiler) and the wall time of the work. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static volatile double sink;

__attribute__((noinline)) static double kernel_mul(int n)
{
    double x = 1.0;
    for (int i = 0; i < n; i++)
        x = x * 1.0000001 + 0.5 / (x + i);
    return x;
}

__attribute__((noinline)) static unsigned kernel_hash(int n)
{
    unsigned h = 2166136261u;
    for (int i = 0; i < n; i++)
        h = (h ^ (unsigned)i) * 16777619u;
    return h;
}

__attribute__((noinline)) static void stage(int depth)
{
    if (depth > 0) {
        stage(depth - 1);
        sink += depth;
        return;
    }
    sink += kernel_mul(40000);
    sink += kernel_hash(120000);
}

static long units_per_thread;
static long long wall_until;

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *worker(void *p)
{
    (void)p;
    if (wall_until) {
        while (mono_ns() < wall_until)
            stage(8);
        return NULL;
    }
    for (long u = 0; u < units_per_thread; u++)
        stage(8);
    return NULL;
}

int main(int argc, char **argv)
{
    long units = argc > 1 ? atol(argv[1]) : 20000;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
    units_per_thread = units / threads;
    double wall_s = argc > 3 ? atof(argv[3]) : 0;
    if (wall_s > 0)
        wall_until = mono_ns() + (long long)(wall_s * 1e9);
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    pthread_t t[64];
    for (int i = 1; i < threads; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    worker(NULL);
    for (int i = 1; i < threads; i++)
        pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long long cpu = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
                    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
    long long wall = (w1.tv_sec - w0.tv_sec) * 1000000000LL + (w1.tv_nsec - w0.tv_nsec);
    printf("{\"main_cpu_ns\": %lld, \"work_wall_ns\": %lld}\n", cpu, wall);
    fflush(stdout);
    return 0;
}
