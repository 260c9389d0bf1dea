/* secprobe.c — the host program of tests/e2e/test_security.py.
 *
 *   secprobe info MS        burn MS ms of CPU, then print what a secure
 *                           process must show: at_secure=, shim_mapped=
 *                           (libddshim in /proc/self/maps), threads=
 *                           (/proc/self/status), uid/euid
 *   secprobe list           print every open descriptor ("fd N TARGET"),
 *                           leaving out the one used to list them
 *   secprobe spawn HOW WAIT_MS
 *                           open /dev/null WITHOUT close-on-exec (the one
 *                           descriptor it means its children to get), burn
 *                           CPU until a connected socket it never opened, held 10 ms,
 *                           appears among its descriptors (the shim's
 *                           connection to the Agent; at most WAIT_MS ms), print its descriptors then
 *                           ("host fd N TARGET"), start "secprobe list" with
 *                           HOW = posix_spawn or fork (fork + execve) in an
 *                           environment without LD_PRELOAD, and print whether
 *                           the shim's socket was still open once the child
 *                           had listed its own ("socket still open: yes|no").
 *                           The child's lines go to the same stdout. */
#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static volatile double sink;

static long long now_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) static void secprobe_burn(long ms)
{
    long long end = now_ns(CLOCK_PROCESS_CPUTIME_ID) + ms * 1000000LL;
    double x = 1;
    while (now_ns(CLOCK_PROCESS_CPUTIME_ID) < end)
        for (int i = 0; i < 1000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

/* Calls fn(fd, target) for every open descriptor but the directory's own. */
static int each_fd(void (*fn)(int, const char *, void *), void *arg)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d))
            continue;
        char path[64], target[512];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n < 0)
            continue;
        target[n] = '\0';
        fn(fd, target, arg);
    }
    closedir(d);
    return 0;
}

static void print_fd(int fd, const char *target, void *prefix)
{
    int cloexec = fcntl(fd, F_GETFD) & FD_CLOEXEC;
    printf("%sfd %d %s%s\n", (const char *)prefix, fd, target, cloexec ? " cloexec" : "");
}

struct find {
    char want[512]; /* "" : any connected socket */
    int found;
    char target[512];
};

/* A socket connected to a named peer (a TCP address or a Unix socket path):
 * a connection, not an unnamed socketpair. */
static int has_named_peer(int fd)
{
    struct sockaddr_storage a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    if (getpeername(fd, (struct sockaddr *)&a, &len) != 0)
        return 0;
    if (a.ss_family == AF_INET || a.ss_family == AF_INET6)
        return 1;
    return a.ss_family == AF_UNIX && len > sizeof(sa_family_t) && ((struct sockaddr_un *)&a)->sun_path[0];
}

static void find_socket(int fd, const char *target, void *arg)
{
    struct find *f = arg;
    if (strncmp(target, "socket:", 7) != 0 || f->found)
        return;
    if (f->want[0] ? strcmp(f->want, target) != 0 : !has_named_peer(fd))
        return;
    f->found = 1;
    snprintf(f->target, sizeof f->target, "%s", target);
}

static int info(long ms)
{
    secprobe_burn(ms);
    int mapped = 0, threads = -1;
    char line[1024];
    FILE *f = fopen("/proc/self/maps", "re");
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "libddshim"))
            mapped = 1;
    if (f)
        fclose(f);
    f = fopen("/proc/self/status", "re");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0)
            threads = atoi(line + 8);
    if (f)
        fclose(f);
    printf("at_secure=%lu shim_mapped=%d threads=%d uid=%d euid=%d\n", getauxval(AT_SECURE), mapped,
           threads, (int)getuid(), (int)geteuid());
    return 0;
}

static int spawn(const char *how, long wait_ms)
{
    int passed = open("/dev/null", O_RDONLY); /* no O_CLOEXEC: the child is meant to get it */
    printf("passed fd %d\n", passed);
    struct find f = {.want = "", .found = 0};
    long long end = now_ns(CLOCK_MONOTONIC) + wait_ms * 1000000LL;
    while (!f.found && now_ns(CLOCK_MONOTONIC) < end) {
        secprobe_burn(1);
        each_fd(find_socket, &f);
        if (!f.found)
            continue;
        /* A connection held, not a passing one (the shim's plain connect
         * that asks whether anything listens is closed at once). */
        secprobe_burn(10);
        struct find still = {.found = 0};
        snprintf(still.want, sizeof still.want, "%s", f.target);
        each_fd(find_socket, &still);
        f.found = still.found;
    }
    if (!f.found) {
        printf("no connection of the shim's seen in %ld ms\n", wait_ms);
        return 2;
    }
    each_fd(print_fd, "host ");
    fflush(stdout);

    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        return 3;
    self[n] = '\0';
    char *argv[] = {self, "list", NULL};
    char *envp[] = {"PATH=/usr/bin:/bin", NULL};
    pid_t pid;
    if (strcmp(how, "posix_spawn") == 0) {
        if (posix_spawn(&pid, self, NULL, NULL, argv, envp) != 0)
            return 4;
    } else {
        pid = fork();
        if (pid == 0) {
            execve(self, argv, envp);
            _exit(127);
        }
        if (pid < 0)
            return 4;
    }
    int st;
    waitpid(pid, &st, 0);
    struct find again = {.found = 0};
    snprintf(again.want, sizeof again.want, "%s", f.target);
    each_fd(find_socket, &again);
    printf("child exit %d; socket still open: %s\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
           again.found ? "yes" : "no");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "info") == 0)
        return info(argc > 2 ? atol(argv[2]) : 300);
    if (argc > 1 && strcmp(argv[1], "list") == 0)
        return each_fd(print_fd, "child ") == 0 ? 0 : 1;
    if (argc > 3 && strcmp(argv[1], "spawn") == 0)
        return spawn(argv[2], atol(argv[3]));
    fprintf(stderr, "usage: secprobe info MS | list | spawn posix_spawn|fork WAIT_MS\n");
    return 2;
}
