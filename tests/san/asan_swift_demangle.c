/* tests/san/asan_swift_demangle.c — preloaded right after the ASan runtime by
 * `make test SANITIZER=address` (tests/run.sh); never part of the shim.
 *
 * GCC 12's ASan runtime, when a preloaded copy is first initialized from inside
 * glibc's newlocale() — libp11-kit's constructor does that before the runtime's
 * own constructor has run, in every program linking gnutls, curl among them —
 * looks up swift_demangle with dlsym and clears the failure with dlerror(), whose
 * gettext takes the setlocale lock newlocale() holds. The lock is corrupted and
 * the program later hangs in setlocale(). That happens with the ASan runtime
 * alone, without the shim. With this symbol defined the lookup succeeds, no
 * error string is formatted, and the lock is left alone. ASan calls it only to
 * demangle Swift names in its reports: "not Swift" (NULL) makes it fall back to
 * the C++ demangler. */
#include <stddef.h>

char *swift_demangle(const char *name, size_t len, char *out, size_t *out_len, unsigned flags);

char *swift_demangle(const char *name, size_t len, char *out, size_t *out_len, unsigned flags)
{
    (void)name; (void)len; (void)out; (void)out_len; (void)flags;
    return NULL;
}
