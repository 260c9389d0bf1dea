/* spawner.c — starts many children while sampling signals are in flight:
 *   spawner MODE [N]     MODE = posix_spawn | system | vfork, N children (default 100)
 * A second thread burns CPU the whole time and the spawning thread burns a
 * little between children, so both have ticks pending around each spawn. Each
 * child exits with status 3 (posix_spawn/vfork run "spawner child 3"; system()
 * runs "exit 3" in /bin/sh). Prints how many children ended with status 3,
 * how many otherwise (the first odd wait status is printed), and exits 0 when
 * all were right. "spawner child K" just exits K. */
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static volatile int stop;
static volatile double sink;

static long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void spawner_burn(long us)
{
    long long end = thread_cpu_ns() + us * 1000LL;
    double x = 1;
    while (thread_cpu_ns() < end)
        for (int i = 0; i < 1000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

static void *burner(void *arg)
{
    (void)arg;
    while (!stop)
        spawner_burn(1000);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "child") == 0)
        return atoi(argv[2]);
    if (argc < 2) {
        fprintf(stderr, "usage: spawner posix_spawn|system|vfork [N]\n");
        return 2;
    }
    const char *mode = argv[1];
    int n = argc > 2 ? atoi(argv[2]) : 100;
    pthread_t th;
    pthread_create(&th, NULL, burner, NULL);
    spawner_burn(20000);

    int good = 0, bad = 0, first_bad = -1;
    for (int i = 0; i < n; i++) {
        int status = -1;
        pid_t pid = -1;
        char *cargv[] = {argv[0], "child", "3", NULL};
        spawner_burn(2000);
        if (strcmp(mode, "posix_spawn") == 0) {
            int e = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, cargv, environ);
            if (e != 0) {
                fprintf(stderr, "posix_spawn: %s\n", strerror(e));
                bad++;
                continue;
            }
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        } else if (strcmp(mode, "system") == 0) {
            status = system("exit 3");
        } else if (strcmp(mode, "vfork") == 0) {
            pid = vfork();
            if (pid == 0) {
                execve("/proc/self/exe", cargv, environ);
                _exit(127);
            }
            if (pid < 0) {
                perror("vfork");
                bad++;
                continue;
            }
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        } else {
            fprintf(stderr, "unknown mode %s\n", mode);
            return 2;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
            good++;
        } else {
            bad++;
            if (first_bad == -1)
                first_bad = status;
        }
    }
    stop = 1;
    pthread_join(th, NULL);
    printf("%s: %d children exited 3, %d otherwise", mode, good, bad);
    if (bad)
        printf(" (first wait status 0x%x)", first_bad);
    printf("\n");
    return bad ? 1 : 0;
}
