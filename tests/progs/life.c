/* life.c — process and thread life cycles under sampling:
 *   life threads N        N joinable short threads, then N detached ones; waits
 *                         until they are all gone, then prints how many ran and
 *                         how many POSIX timers the process holds beyond those it
 *                         held at start (/proc/self/timers): a leak shows here.
 *   life main_exit        main starts 2 workers and calls pthread_exit(); the
 *                         last worker prints (buffered) and returns: the process
 *                         must then exit 0 with the output flushed.
 *   life thread_exit      100 threads leave by pthread_exit() from deep inside
 *                         a call chain, with a cleanup handler; main checks the
 *                         values they return.
 *   life exit_thread      a thread calls exit(5) while 2 other threads spin and
 *                         main waits in pthread_join: exit status 5, output
 *                         flushed.
 *   life _exit            prints without flushing, spins, calls _exit(4) while a
 *                         thread spins: nothing printed, status 4.
 * exit_thread, _exit and abort print "T <CLOCK_MONOTONIC ns>" on stderr just
 * before leaving, so the caller can measure how long the exit itself takes.
 *   life abort            a thread spins; main burns, prints "T <CLOCK_MONOTONIC
 *                         ns>" on stderr and calls abort().
 * Every mode burns CPU so that sampling signals are in flight. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile double sink;
static volatile int stop;

static long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void life_burn(long us)
{
    long long end = thread_cpu_ns() + us * 1000LL;
    double x = 1;
    while (thread_cpu_ns() < end)
        for (int i = 0; i < 200; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

static void *spin_forever(void *arg)
{
    (void)arg;
    for (;;)
        life_burn(1000);
    return NULL;
}

static void *spin_until_stop(void *arg)
{
    (void)arg;
    while (!stop)
        life_burn(1000);
    return NULL;
}

static int count_timers(void)
{
    FILE *f = fopen("/proc/self/timers", "r");
    if (!f)
        return -1;
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "ID:", 3) == 0)
            n++;
    fclose(f);
    return n;
}

static int count_tasks(void)
{
    char path[64];
    int n = 0;
    snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* ---- threads ---- */
static int ran_joinable, ran_detached;

static void *short_joinable(void *arg)
{
    (void)arg;
    life_burn(200);
    __atomic_add_fetch(&ran_joinable, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void *short_detached(void *arg)
{
    (void)arg;
    life_burn(200);
    __atomic_add_fetch(&ran_detached, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static int mode_threads(int n)
{
    life_burn(20000);
    int timers0 = count_timers();
    int tasks0 = count_tasks();
    pthread_t spinner;
    pthread_create(&spinner, NULL, spin_until_stop, NULL);
    int create_failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_t th;
        if (pthread_create(&th, NULL, short_joinable, NULL) != 0) {
            create_failed++;
            continue;
        }
        pthread_join(th, NULL);
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < n; i++) {
        pthread_t th;
        int tries = 0;
        /* a detached burst may briefly exhaust resources: retry like a careful host */
        while (pthread_create(&th, &attr, short_detached, NULL) != 0 && ++tries < 1000)
            usleep(1000);
        if (tries >= 1000)
            create_failed++;
        if (i % 50 == 0)
            life_burn(500);
    }
    stop = 1;
    pthread_join(spinner, NULL);
    /* wait until every detached thread has really gone */
    for (int i = 0; i < 5000 && (count_tasks() > tasks0 ||
                                  __atomic_load_n(&ran_detached, __ATOMIC_SEQ_CST) < n - create_failed); i++)
        usleep(1000);
    printf("joinable ran %d, detached ran %d, create failures %d\n", ran_joinable, ran_detached, create_failed);
    printf("threads back to start: %s\n", count_tasks() == tasks0 ? "yes" : "no");
    printf("timers leaked: %d\n", count_timers() - timers0);
    return 0;
}

/* ---- pthread_exit from main ---- */
static int workers_done;

static void *main_exit_worker(void *arg)
{
    (void)arg;
    life_burn(300000);
    if (__atomic_add_fetch(&workers_done, 1, __ATOMIC_SEQ_CST) == 2)
        printf("last worker done after main's pthread_exit\n"); /* buffered: exit must flush */
    return NULL;
}

static int mode_main_exit(void)
{
    pthread_t a, b;
    pthread_create(&a, NULL, main_exit_worker, NULL);
    pthread_create(&b, NULL, main_exit_worker, NULL);
    life_burn(100000);
    printf("main calls pthread_exit\n");
    pthread_exit(NULL);
}

/* ---- pthread_exit from threads, deep inside ---- */
static int cleanups;

static void cleanup(void *arg)
{
    (void)arg;
    __atomic_add_fetch(&cleanups, 1, __ATOMIC_SEQ_CST);
}

__attribute__((noinline)) static void leave_from_depth(int depth, long value)
{
    if (depth > 0) {
        leave_from_depth(depth - 1, value);
        sink += depth; /* not a tail call */
        return;
    }
    life_burn(2000);
    pthread_exit((void *)value);
}

static void *exiting_thread(void *arg)
{
    long i = (long)arg;
    pthread_cleanup_push(cleanup, NULL);
    leave_from_depth((int)(i % 20), i * 3 + 1);
    pthread_cleanup_pop(0);
    return NULL; /* never reached */
}

static int mode_thread_exit(void)
{
    enum { N = 100 };
    pthread_t th[N];
    for (long i = 0; i < N; i++)
        pthread_create(&th[i], NULL, exiting_thread, (void *)i);
    int good = 0;
    for (long i = 0; i < N; i++) {
        void *ret = NULL;
        pthread_join(th[i], &ret);
        if ((long)ret == i * 3 + 1)
            good++;
    }
    printf("pthread_exit values right: %d of %d, cleanup handlers run: %d\n", good, N, cleanups);
    return good == N && cleanups == N ? 0 : 1;
}

/* ---- exit() from a thread ---- */
static void *exiting_worker(void *arg)
{
    (void)arg;
    life_burn(300000);
    printf("thread calls exit(5)\n"); /* buffered: exit flushes */
    fprintf(stderr, "T %lld\n", mono_ns());
    exit(5);
}

static int mode_exit_thread(void)
{
    pthread_t s1, s2, e;
    pthread_create(&s1, NULL, spin_forever, NULL);
    pthread_create(&s2, NULL, spin_forever, NULL);
    pthread_create(&e, NULL, exiting_worker, NULL);
    pthread_join(s1, NULL); /* never returns */
    return 0;
}

/* ---- _exit ---- */
static int mode__exit(void)
{
    pthread_t s;
    pthread_create(&s, NULL, spin_forever, NULL);
    printf("this line is never flushed\n");
    life_burn(300000);
    fprintf(stderr, "T %lld\n", mono_ns());
    _exit(4);
}

/* ---- abort ---- */
static int mode_abort(void)
{
    pthread_t s;
    pthread_create(&s, NULL, spin_forever, NULL);
    life_burn(300000);
    fprintf(stderr, "T %lld\n", mono_ns());
    abort();
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "threads") == 0)
        return mode_threads(argc > 2 ? atoi(argv[2]) : 1000);
    if (strcmp(mode, "main_exit") == 0)
        return mode_main_exit();
    if (strcmp(mode, "thread_exit") == 0)
        return mode_thread_exit();
    if (strcmp(mode, "exit_thread") == 0)
        return mode_exit_thread();
    if (strcmp(mode, "_exit") == 0)
        return mode__exit();
    if (strcmp(mode, "abort") == 0)
        return mode_abort();
    fprintf(stderr, "usage: life threads|main_exit|thread_exit|exit_thread|_exit|abort\n");
    return 2;
}
