/* dlloop.c — the loader under sampling: for argv[2] seconds (default 20), two
 * threads dlopen() the library argv[1] (e.g. build/progs/libdlplugin.so),
 * call its plugin_spin() for a little CPU and dlclose() it, in a loop; a third
 * thread walks dl_iterate_phdr() in a loop and a fourth only burns CPU (it is
 * sampled while the others hold the loader's locks). Prints the number of
 * failures (dlopen/dlsym returning NULL, dlclose failing) and exits 0 when
 * there were none; the number of loops goes to stderr. */
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const char *lib;
static volatile int stop;
static volatile double sink;
static long loops[2], failures, phdr_walks;

static long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void dlloop_burn(long us)
{
    long long end = thread_cpu_ns() + us * 1000LL;
    double x = 1;
    while (thread_cpu_ns() < end)
        for (int i = 0; i < 200; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

static void *opener(void *arg)
{
    long id = (long)arg;
    while (!stop) {
        void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
            fprintf(stderr, "dlopen: %s\n", dlerror());
            dlloop_burn(1000);
            continue;
        }
        void (*spin)(long) = (void (*)(long))dlsym(h, "plugin_spin");
        if (spin)
            spin(20000);
        else
            __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
        if (dlclose(h) != 0)
            __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
        loops[id]++;
    }
    return NULL;
}

static int on_phdr(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(long *)data += info->dlpi_phnum;
    return 0;
}

static void *walker(void *arg)
{
    (void)arg;
    long sum = 0;
    while (!stop) {
        dl_iterate_phdr(on_phdr, &sum);
        phdr_walks++;
        dlloop_burn(100);
    }
    sink = (double)sum;
    return NULL;
}

static void *burner(void *arg)
{
    (void)arg;
    while (!stop)
        dlloop_burn(1000);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    lib = argv[1];
    int secs = argc > 2 ? atoi(argv[2]) : 20;
    pthread_t o1, o2, w, b;
    pthread_create(&o1, NULL, opener, (void *)0L);
    pthread_create(&o2, NULL, opener, (void *)1L);
    pthread_create(&w, NULL, walker, NULL);
    pthread_create(&b, NULL, burner, NULL);
    struct timespec ts = {secs, 0};
    while (nanosleep(&ts, &ts) != 0)
        ;
    stop = 1;
    pthread_join(o1, NULL);
    pthread_join(o2, NULL);
    pthread_join(w, NULL);
    pthread_join(b, NULL);
    fprintf(stderr, "dlopen/dlclose loops: %ld + %ld, dl_iterate_phdr walks: %ld\n", loops[0], loops[1], phdr_walks);
    printf("dlopen/dlsym/dlclose failures: %ld\n", failures);
    return failures ? 1 : 0;
}
