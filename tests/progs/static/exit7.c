/* exit7.c — linked with -static by tests/e2e/test_safety_process.py (not by the
 * Makefile's generic rule): a static image exec'd from a shimmed process must
 * run and exit 7, not be killed by a signal. With an argument, it first prints
 * the signal mask and ignored set it inherited (from /proc/self/status), which
 * must be what the exec'ing program had, not something the shim left behind. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (strncmp(line, "SigBlk:", 7) == 0 || strncmp(line, "SigIgn:", 7) == 0 ||
                strncmp(line, "SigPnd:", 7) == 0 || strncmp(line, "ShdPnd:", 7) == 0)
                fputs(line, stdout);
        if (f)
            fclose(f);
    }
    return 7;
}
