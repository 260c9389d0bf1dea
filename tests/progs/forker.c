/* forker.c — forks a child (no exec) that burns CPU in child_work() while the
 * parent burns CPU in parent_work(); prints both pids; exits with the child's
 * status. Profiles must come from both, each with its own pid. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile double sink;

static long long cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void parent_work(long ms)
{
    long long end = cpu_now() + ms * 1000000LL;
    double x = 1;
    while (cpu_now() < end)
        for (int i = 0; i < 10000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

__attribute__((noinline)) void child_work(long ms)
{
    long long end = cpu_now() + ms * 1000000LL;
    double x = 2;
    while (cpu_now() < end)
        for (int i = 0; i < 10000; i++)
            x = x * 0.999999 + 2.0 / (x + i);
    sink = x;
}

int main(void)
{
    parent_work(300);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        child_work(800);
        printf("child %d\n", (int)getpid());
        return 0;
    }
    parent_work(800);
    int st = 0;
    waitpid(pid, &st, 0);
    printf("parent %d\n", (int)getpid());
    return WIFEXITED(st) ? WEXITSTATUS(st) : 99;
}
