/* sigprof_host.c — a host with its own profiler: installs a SIGPROF handler
 * and a process-wide ITIMER_PROF at 100 Hz, burns ~1 s of CPU in host_work(),
 * and prints how many ticks its handler saw. Without any shim it sees ~100.
 * The shim must leave it its handler and its ticks (and keep sampling on
 * another signal). With argv[1] = "late", installs the handler after 300 ms of
 * work (the shim has taken SIGPROF by then and must hand it over). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static volatile sig_atomic_t ticks;
static volatile double sink;

static void on_prof(int sig)
{
    (void)sig;
    ticks++;
}

static long long cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void host_work(long ms)
{
    long long end = cpu_now() + ms * 1000000LL;
    double x = 1;
    while (cpu_now() < end)
        for (int i = 0; i < 10000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_prof;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval it = {{0, 10000}, {0, 10000}};
    setitimer(ITIMER_PROF, &it, NULL);
}

int main(int argc, char **argv)
{
    int late = argc > 1 && strcmp(argv[1], "late") == 0;
    if (!late)
        install();
    else
        host_work(300);
    host_work(1000);
    if (late)
        install(), host_work(1000);
    struct sigaction cur;
    sigaction(SIGPROF, NULL, &cur);
    printf("ticks=%d handler_is_mine=%d\n", (int)ticks, cur.sa_handler == on_prof);
    return 0;
}
