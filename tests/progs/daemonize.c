/* daemonize.c — the classic daemon start: fork, setsid, fork again, chdir("/"),
 * stdin/stdout/stderr to /dev/null; the grandchild (the daemon) burns ~600 ms
 * of CPU in daemon_main_work(), then writes "<pid> done\n" to the file argv[1]
 * (written to a temporary name and renamed, so a reader sees it whole) and
 * exits 0. The parent and the first child exit 0 at once.
 * usage: daemonize STATUS_FILE */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile double sink;

static long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void daemon_main_work(long ms)
{
    long long end = thread_cpu_ns() + ms * 1000000LL;
    double x = 1;
    while (thread_cpu_ns() < end)
        for (int i = 0; i < 1000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    char status_file[4096], tmp[4200];
    if (!realpath(argv[1], status_file))
        snprintf(status_file, sizeof status_file, "%s", argv[1]);
    snprintf(tmp, sizeof tmp, "%s.tmp", status_file);

    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid > 0) {
        int st;
        waitpid(pid, &st, 0); /* the first child exits at once */
        return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    }
    if (setsid() < 0)
        _exit(1);
    pid = fork();
    if (pid < 0)
        _exit(1);
    if (pid > 0)
        _exit(0);
    /* the daemon */
    if (chdir("/") != 0)
        _exit(1);
    umask(022);
    int fd = open("/dev/null", O_RDWR);
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2)
        close(fd);
    daemon_main_work(600);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return 1;
    fprintf(f, "%d done\n", (int)getpid());
    fclose(f);
    rename(tmp, status_file);
    return 0;
}
