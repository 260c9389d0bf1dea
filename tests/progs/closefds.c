/* closefds.c — a daemon-like host: after start it closes every descriptor
 * above 2 (the shim's too) and opens pipes and a socketpair, which get the
 * freed numbers. Nothing the shim sends may land in them, and the shim must
 * keep profiling. Prints "clean" when its own descriptors received nothing. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile double sink;

__attribute__((noinline)) void daemon_work(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    long long end = ts.tv_sec * 1000000000LL + ts.tv_nsec + ms * 1000000LL;
    double x = 1;
    for (;;) {
        for (int i = 0; i < 10000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        if (ts.tv_sec * 1000000000LL + ts.tv_nsec >= end)
            break;
    }
    sink = x;
}

int main(void)
{
    daemon_work(200);
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    int p1[2], p2[2], sv[2];
    if (pipe(p1) || pipe(p2) || socketpair(AF_UNIX, SOCK_DGRAM, 0, sv))
        return 2;
    for (int i = 0; i < 2; i++) {
        fcntl(p1[i], F_SETFL, O_NONBLOCK);
        fcntl(p2[i], F_SETFL, O_NONBLOCK);
        fcntl(sv[i], F_SETFL, O_NONBLOCK);
    }
    daemon_work(1000);
    char buf[4096];
    int dirty = 0;
    int fds[] = {p1[0], p2[0], sv[0], sv[1]};
    for (unsigned i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (read(fds[i], buf, sizeof buf) > 0) {
            dirty = 1;
            fprintf(stderr, "closefds: data on fd %d: %.8s\n", fds[i], buf);
        }
    printf("%s fds=%d,%d,%d,%d,%d,%d\n", dirty ? "DIRTY" : "clean", p1[0], p1[1], p2[0], p2[1], sv[0], sv[1]);
    return 0;
}
