// symbols.cc — the symbolization truth program: CPU spent in a C++ method in
// a namespace, in an always-inlined function (must appear as its own frame),
// in a function of a linked shared library (libsymlib.so), and in one of a
// library dlopen'd after start (libdlplugin.so, path in argv[1]), for argv[2]
// ms of CPU (default 2000).
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

extern "C" void symlib_spin(long iters);

static volatile double sink;

static long long cpu_now()
{
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

namespace geometry {
class Shape {
  public:
    __attribute__((noinline)) double area_sum(long n);
};

double Shape::area_sum(long n)
{
    double x = 0;
    for (long i = 0; i < n; i++)
        x += (double)i * 1.0000001 / (x + 1.0);
    return x;
}
} // namespace geometry

static inline __attribute__((always_inline)) double inlined_kernel(long n)
{
    double x = 1;
    for (long i = 0; i < n; i++)
        x = x * 0.9999999 + 1.0 / (x + (double)i); // INLINED_LINE
    return x;
}

__attribute__((noinline)) double outer_caller(long n)
{
    return inlined_kernel(n) + 1.0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 3;
    }
    void (*plugin_spin)(long) = (void (*)(long))dlsym(h, "plugin_spin");
    geometry::Shape s;
    long long ms = argc > 2 ? atoll(argv[2]) : 2000;
    long long end = cpu_now() + ms * 1000000LL;
    while (cpu_now() < end) {
        sink += s.area_sum(200000);
        sink += outer_caller(200000);
        symlib_spin(200000);
        plugin_spin(200000);
    }
    printf("done\n");
    return 0;
}
