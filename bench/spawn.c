/* bench/spawn.c — start-up timer: runs a command N times (posix_spawnp +
 * wait4, one after another) and prints JSON: the wall time of each run in ns,
 * and each run's CPU (ns) and peak RSS (KB) from wait4's rusage. Being small,
 * it also keeps ru_maxrss meaningful: the kernel records the spawning
 * process's own peak RSS into the child's at exec, so a child spawned by a
 * 12 MB python3 would report at least 12 MB. Variables given as NAME=VALUE before "--" are added to the
 * child's environment only, so this timer itself is never preloaded.
 * usage: spawn N [NAME=VALUE...] -- command [args...] */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    int n = atoi(argv[1]);
    int i = 2;
    int nenv = 0;
    while (environ[nenv])
        nenv++;
    char **envp = calloc((size_t)nenv + (size_t)argc + 1, sizeof *envp);
    int k = 0;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++)
        envp[k++] = argv[i];
    for (int e = 0; e < nenv; e++) {
        int dup = 0;
        for (int j = 0; j < k && !dup; j++) {
            size_t l = strcspn(envp[j], "=");
            dup = strncmp(envp[j], environ[e], l + 1) == 0;
        }
        if (!dup)
            envp[k++] = environ[e];
    }
    if (i >= argc - 1)
        return 2;
    char **cmd = argv + i + 1;
    long long *wall = calloc((size_t)n + 1, sizeof *wall), *cpu = calloc((size_t)n + 1, sizeof *cpu);
    long *rss = calloc((size_t)n + 1, sizeof *rss);
    for (int r = 0; r < n; r++) {
        long long t0 = mono_ns();
        pid_t pid;
        if (posix_spawnp(&pid, cmd[0], NULL, NULL, cmd, envp) != 0) {
            perror("posix_spawnp");
            return 1;
        }
        int st;
        struct rusage ru;
        wait4(pid, &st, 0, &ru);
        long long t1 = mono_ns();
        wall[r] = t1 - t0;
        cpu[r] = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
                 (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
        rss[r] = ru.ru_maxrss;
    }
    printf("{\"wall_ns\": [");
    for (int r = 0; r < n; r++)
        printf("%s%lld", r ? ", " : "", wall[r]);
    printf("], \"cpu_ns\": [");
    for (int r = 0; r < n; r++)
        printf("%s%lld", r ? ", " : "", cpu[r]);
    printf("], \"maxrss_kb\": [");
    for (int r = 0; r < n; r++)
        printf("%s%ld", r ? ", " : "", rss[r]);
    printf("]}\n");
    return 0;
}
