/* preload/fdguard.c — see fdguard.h. Called from the constructor, the
 * collector thread, hook wrappers on host threads, and (through the pipe2 and
 * close hooks, on libunwind's behalf) the sampling signal handler: lock-free,
 * async-signal-safe. */
#include "preload/fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_GUARDED 16
static int guarded[MAX_GUARDED] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                   -1, -1, -1, -1, -1, -1, -1, -1};

static int high_base(void)
{
    struct rlimit rl;
    long lim = 1024;
    if (syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        lim = (long)rl.rlim_cur;
    if (lim > 1024)
        lim = 1024;
    long base = lim - 24;
    return base < 3 ? 3 : (int)base;
}

static void guard(int fd)
{
    for (int i = 0; i < MAX_GUARDED; i++) {
        int expected = -1;
        if (__atomic_compare_exchange_n(&guarded[i], &expected, fd, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            return;
    }
}

int fdguard_take(int fd)
{
    if (fd < 0)
        return fd;
    int saved = errno;
    int nfd = (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, high_base());
    if (nfd >= 0 && nfd > fd) {
        syscall(SYS_close, fd);
        fd = nfd;
    } else if (nfd >= 0) {
        syscall(SYS_close, nfd);
    }
    guard(fd);
    errno = saved;
    return fd;
}

void fdguard_release(int fd)
{
    for (int i = 0; i < MAX_GUARDED; i++) {
        int expected = fd;
        if (fd >= 0 && __atomic_compare_exchange_n(&guarded[i], &expected, -1, 0, __ATOMIC_SEQ_CST,
                                                   __ATOMIC_SEQ_CST))
            return;
    }
}

int fdguard_is(int fd)
{
    if (fd < 0)
        return 0;
    for (int i = 0; i < MAX_GUARDED; i++)
        if (__atomic_load_n(&guarded[i], __ATOMIC_RELAXED) == fd)
            return 1;
    return 0;
}

int fdguard_in_range(unsigned first, unsigned last)
{
    int n = 0;
    for (int i = 0; i < MAX_GUARDED; i++) {
        int g = __atomic_load_n(&guarded[i], __ATOMIC_RELAXED);
        if (g >= 0 && (unsigned)g >= first && (unsigned)g <= last)
            n++;
    }
    return n;
}
