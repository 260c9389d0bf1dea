/* owndeflate.c — a host that happens to define and export a function of its
 * own called deflate(), unrelated to zlib's (linked with -rdynamic by
 * tests/e2e/test_safety_process.py; the Makefile's generic rule would not
 * export it), as plugin hosts and programs with a compression module can.
 * Burns ~0.5 s of CPU in own_work(), prints "done". The shim's libraries must
 * keep using their own zlib: its profile must still be written, valid. */
#include <stdio.h>
#include <time.h>

int deflate(void *strm, int flush)
{
    (void)strm;
    (void)flush;
    return -2; /* "Z_STREAM_ERROR" to whoever calls it by mistake */
}

static volatile double sink;

__attribute__((noinline)) void own_work(void)
{
    double x = 1;
    clock_t end = clock() + CLOCKS_PER_SEC / 2;
    while (clock() < end)
        for (int i = 0; i < 1000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

int main(void)
{
    own_work();
    printf("done\n");
    return 0;
}
