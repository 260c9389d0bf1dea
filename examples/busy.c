/* examples/busy.c — a small CPU-bound program for `make run` and the tests:
 * spends ~N ms of its own CPU (default 2000; its thread's CPU time, so a
 * profiler's own threads do not shorten the run) in a few named functions, then returns
 * from main (or exits the way argv[2] says: return, exit, sigterm, sigint;
 * "maps" also prints the shim's lines of /proc/self/maps). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile double sink;

static long long cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void compute_primes(void)
{
    int count = 0;
    for (int n = 2; n < 20000; n++) {
        int p = 1;
        for (int d = 2; d * d <= n; d++)
            if (n % d == 0) {
                p = 0;
                break;
            }
        count += p;
    }
    sink += count;
}

__attribute__((noinline)) void hash_strings(void)
{
    unsigned h = 2166136261u;
    for (int i = 0; i < 300000; i++)
        h = (h ^ (unsigned)i) * 16777619u;
    sink += h;
}

__attribute__((noinline)) void do_work(long long until)
{
    while (cpu_now() < until) {
        compute_primes();
        hash_strings();
        hash_strings();
    }
}

int main(int argc, char **argv)
{
    long ms = argc > 1 ? atol(argv[1]) : 2000;
    const char *how = argc > 2 ? argv[2] : "return";
    do_work(cpu_now() + ms * 1000000LL);
    printf("busy: done pid=%d\n", (int)getpid());
    if (strcmp(how, "maps") == 0) { /* show whether the shim is mapped */
        FILE *f = fopen("/proc/self/maps", "r");
        char line[512];
        while (f && fgets(line, sizeof line, f))
            if (strstr(line, "ddshim"))
                fputs(line, stdout);
        if (f)
            fclose(f);
    }
    fflush(stdout);
    if (strcmp(how, "exit") == 0)
        exit(3);
    if (strcmp(how, "sigterm") == 0)
        raise(SIGTERM);
    if (strcmp(how, "sigint") == 0)
        raise(SIGINT);
    return 0;
}
