/* tests/unit/symtest_dl.c — a small library test_sym dlopens only after it
 * has made its sym_ctx, to check that symbolization picks up libraries loaded
 * later (the implicit refresh). Built -O2 -g by the Makefile. */

/* The line the function's entry address maps to: its definition's line. */
const int symtest_dl_function_line = __LINE__ + 2;

__attribute__((noinline, visibility("default"))) int symtest_dl_function(int x)
{
    int acc = 0;
    for (int i = 0; i < x; i++)
        acc = acc * 31 + i;
    return acc;
}
