/* tests/unit/symtest_dl.c — a small library test_sym dlopens only after it
 * has made its sym_ctx, to check that symbolization picks up libraries loaded
 * later (the implicit refresh). Built -O2 -g by the Makefile. */

int symtest_dl_call_line;
volatile int symtest_dl_sink;

__attribute__((noinline, visibility("default"))) int symtest_dl_function(int x)
{
    int acc = 0;
    for (int i = 0; i < x; i++)
        acc = acc * 31 + i;
    return acc;
}

/* Calls cb, which records its return address: a pc in this library whose
 * call line is known. The store after the call keeps it from being a tail
 * call. */
__attribute__((noinline, visibility("default"))) void symtest_dl_call(void (*cb)(void))
{
    symtest_dl_call_line = __LINE__; cb();
    symtest_dl_sink++;
}
