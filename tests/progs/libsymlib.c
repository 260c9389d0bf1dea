/* libsymlib.c — a shared library linked into the symbols test program. */
static volatile double sink;

__attribute__((noinline)) void symlib_spin(long iters)
{
    double x = 1;
    for (long i = 0; i < iters; i++)
        x = x * 1.000001 + 1.0 / (x + (double)i);
    sink = x;
}
