/* libdlplugin.c — a shared library the symbols test program dlopen's after
 * start (so the shim must learn about it late). */
static volatile double sink;

__attribute__((noinline)) void plugin_spin(long iters)
{
    double x = 3;
    for (long i = 0; i < iters; i++)
        x = x * 0.999999 + 3.0 / (x + (double)i);
    sink = x;
}
