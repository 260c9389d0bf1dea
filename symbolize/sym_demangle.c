/* symbolize/sym_demangle.c — owns the lookup of a C++ demangler. Called from
 * the shim's uploader thread only (through sym.c and sym_demangle()); never in
 * signal context.
 *
 * The shim is preloaded into C programs too, so libstdc++ must not be a
 * link-time dependency: __cxa_demangle is taken from the process if some
 * object already provides it, else libstdc++.so.6 is dlopen'd once, lazily,
 * the first time a mangled name shows up (a pure C process never pays).
 * It is opened RTLD_LOCAL so it cannot capture the host's symbols, and
 * RTLD_NODELETE because nothing is gained by unloading it. */
#include "symbolize/sym_demangle.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "symbolize/sym.h"

typedef char *(*cxa_demangle_fn)(const char *mangled, char *buf, size_t *len, int *status);

static cxa_demangle_fn demangler(void)
{
    static int tried;
    static cxa_demangle_fn fn;
    if (tried)
        return fn;
    tried = 1;
    fn = (cxa_demangle_fn)dlsym(RTLD_DEFAULT, "__cxa_demangle");
    if (fn == NULL) {
        void *h = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_LOCAL | RTLD_NODELETE);
        if (h != NULL)
            fn = (cxa_demangle_fn)dlsym(h, "__cxa_demangle");
    }
    return fn;
}

char *sym_demangle_alloc(const char *mangled)
{
    if (mangled == NULL || mangled[0] != '_' || mangled[1] != 'Z')
        return NULL;
    cxa_demangle_fn fn = demangler();
    if (fn == NULL)
        return NULL;
    int status = -1;
    char *out = fn(mangled, NULL, NULL, &status);
    if (status != 0) {
        free(out);
        return NULL;
    }
    return out;
}

int sym_demangle(const char *mangled, char *buf, size_t len)
{
    if (mangled == NULL || buf == NULL || len == 0)
        return -1;
    char *d = sym_demangle_alloc(mangled);
    const char *src = d != NULL ? d : mangled;
    size_t n = strlen(src);
    if (n >= len)
        n = len - 1;
    memcpy(buf, src, n);
    buf[n] = '\0';
    int demangled = d != NULL;
    free(d);
    return demangled;
}
