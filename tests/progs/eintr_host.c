/* eintr_host.c — a host that never retries on EINTR, and counts how often a
 * call fails with it, while another thread burns CPU (so sampling signals are
 * in flight):
 *   - reader:  poll() then read() of one byte on a pipe, blocking each time;
 *   - writer:  usleep(2 ms) then write() of one byte to that pipe;
 *   - sleeper: nanosleep(1 ms) and usleep(1 ms) in turn;
 *   - mixed:   burns ~2 ms of its own CPU, then nanosleep(1 ms) (a thread
 *              with its own CPU timer running, so an expiry can land during
 *              the call: reported separately, for information).
 * usage: eintr_host [ms]   (default 2000) — prints one line of counts. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;
static volatile double sink;
static int pfd[2];
static long reads, read_eintr, poll_eintr, write_eintr, writer_sleep_eintr;
static long sleeps, nanosleep_eintr, usleep_eintr;
static long mixed, mixed_eintr;

static long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void eintr_burn(long us)
{
    long long end = thread_cpu_ns() + us * 1000LL;
    double x = 1;
    while (thread_cpu_ns() < end)
        for (int i = 0; i < 200; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

static void *burner(void *arg)
{
    (void)arg;
    while (!stop)
        eintr_burn(1000);
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                poll_eintr++;
            continue;
        }
        char c;
        ssize_t n = read(pfd[0], &c, 1);
        if (n < 0 && errno == EINTR) {
            read_eintr++;
            continue;
        }
        if (n <= 0 || c == 'q')
            break;
        reads++;
    }
    return NULL;
}

static void *writer(void *arg)
{
    (void)arg;
    while (!stop) {
        if (usleep(2000) < 0 && errno == EINTR)
            writer_sleep_eintr++;
        if (write(pfd[1], "x", 1) < 0 && errno == EINTR)
            write_eintr++;
    }
    while (write(pfd[1], "q", 1) < 0 && errno == EINTR)
        write_eintr++;
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    while (!stop) {
        struct timespec ts = {0, 1000000};
        if (nanosleep(&ts, NULL) < 0 && errno == EINTR)
            nanosleep_eintr++;
        if (usleep(1000) < 0 && errno == EINTR)
            usleep_eintr++;
        sleeps += 2;
    }
    return NULL;
}

static void *mixer(void *arg)
{
    (void)arg;
    while (!stop) {
        eintr_burn(2000);
        struct timespec ts = {0, 1000000};
        if (nanosleep(&ts, NULL) < 0 && errno == EINTR)
            mixed_eintr++;
        mixed++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long ms = argc > 1 ? atol(argv[1]) : 2000;
    if (pipe(pfd) != 0)
        return 1;
    pthread_t b, r, w, s, m;
    pthread_create(&b, NULL, burner, NULL);
    pthread_create(&r, NULL, reader, NULL);
    pthread_create(&w, NULL, writer, NULL);
    pthread_create(&s, NULL, sleeper, NULL);
    pthread_create(&m, NULL, mixer, NULL);
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += ms / 1000;
    end.tv_nsec += (ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    long main_eintr = 0;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &end, NULL) == EINTR)
        main_eintr++;
    stop = 1;
    pthread_join(b, NULL);
    pthread_join(w, NULL);
    pthread_join(r, NULL);
    pthread_join(s, NULL);
    pthread_join(m, NULL);
    printf("blocking: reads=%ld read_eintr=%ld poll_eintr=%ld write_eintr=%ld writer_usleep_eintr=%ld "
           "sleeps=%ld nanosleep_eintr=%ld usleep_eintr=%ld main_clock_nanosleep_eintr=%ld; "
           "after-burn: nanosleeps=%ld nanosleep_eintr=%ld\n",
           reads, read_eintr, poll_eintr, write_eintr, writer_sleep_eintr, sleeps, nanosleep_eintr,
           usleep_eintr, main_eintr, mixed, mixed_eintr);
    return 0;
}
