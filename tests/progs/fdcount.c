/* fdcount.c — for a host run with a tiny RLIMIT_NOFILE: counts how many
 * descriptors it can still open (/dev/null until EMFILE) at start and again
 * after ~800 ms of CPU on two threads, closes them, and prints both counts.
 * Descriptors the shim takes below the limit show as a lower count. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static volatile double sink;

static long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void fdcount_work(long ms)
{
    long long end = thread_cpu_ns() + ms * 1000000LL;
    double x = 1;
    while (thread_cpu_ns() < end)
        for (int i = 0; i < 1000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

static void *worker(void *arg)
{
    (void)arg;
    fdcount_work(400);
    return NULL;
}

static int count_free(int *err)
{
    int fds[65536], n = 0;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0) {
            *err = errno;
            break;
        }
        fds[n++] = fd;
        if (n == 65536)
            break;
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    return n;
}

int main(void)
{
    int e1 = 0, e2 = 0;
    int before = count_free(&e1);
    pthread_t th;
    int rc = pthread_create(&th, NULL, worker, NULL);
    fdcount_work(400);
    if (rc == 0)
        pthread_join(th, NULL);
    int after = count_free(&e2);
    printf("free descriptors: %d at start (%s), %d after work (%s)\n", before,
           e1 == EMFILE ? "EMFILE" : "other", after, e2 == EMFILE ? "EMFILE" : "other");
    return 0;
}
