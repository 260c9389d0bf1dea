/* split.c — truth program for CPU attribution: two threads of unequal load,
 * thread A runs alpha_work() for ~A ms of its CPU time, thread B beta_work()
 * for ~B ms. Each thread measures the CPU time of every call with
 * CLOCK_THREAD_CPUTIME_ID (iteration counts are not truth when threads share
 * cores). Prints the measured truth and the process's rusage CPU as JSON.
 * usage: split [alpha_ms beta_ms] (default 3000 2000) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static long long cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static volatile double sink;

__attribute__((noinline)) void alpha_work(void)
{
    double x = 1.0;
    for (int i = 0; i < 200000; i++)
        x = x * 1.0000001 + 0.5 / (x + i);
    sink += x;
}

__attribute__((noinline)) void beta_work(void)
{
    double x = 2.0;
    for (int i = 0; i < 200000; i++)
        x = x * 0.9999999 + 0.25 / (x + i);
    sink += x;
}

struct job {
    void (*fn)(void);
    long long target_ns, measured_ns;
};

static void *run(void *p)
{
    struct job *j = p;
    long long start = cpu_now();
    while (cpu_now() - start < j->target_ns) {
        long long t0 = cpu_now();
        j->fn();
        j->measured_ns += cpu_now() - t0;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long a_ms = argc > 2 ? atol(argv[1]) : 3000, b_ms = argc > 2 ? atol(argv[2]) : 2000;
    struct job a = {alpha_work, a_ms * 1000000LL, 0}, b = {beta_work, b_ms * 1000000LL, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, run, &a);
    pthread_create(&tb, NULL, run, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long long cpu = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
                    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
    printf("{\"alpha_ns\": %lld, \"beta_ns\": %lld, \"rusage_cpu_ns\": %lld}\n", a.measured_ns,
           b.measured_ns, cpu);
    return 0;
}
