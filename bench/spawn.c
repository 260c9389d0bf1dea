/* bench/spawn.c — start-up timer: runs a command N times (posix_spawnp +
 * waitpid, one after another) and prints the wall time of each run in ns as a
 * JSON list. Variables given as NAME=VALUE before "--" are added to the
 * child's environment only, so this timer itself is never preloaded.
 * usage: spawn N [NAME=VALUE...] -- command [args...] */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    printf("[");
    for (int r = 0; r < n; r++) {
        long long t0 = mono_ns();
        pid_t pid;
        if (posix_spawnp(&pid, cmd[0], NULL, NULL, cmd, envp) != 0) {
            perror("posix_spawnp");
            return 1;
        }
        int st;
        waitpid(pid, &st, 0);
        long long t1 = mono_ns();
        printf("%s%lld", r ? ", " : "", t1 - t0);
    }
    printf("]\n");
    return 0;
}
