/* symbolize/sym_demangle.h — internal to symbolize/: C++ name demangling
 * through libstdc++'s __cxa_demangle, found at run time. Uploader thread only. */
#ifndef DDSHIM_SYM_DEMANGLE_H
#define DDSHIM_SYM_DEMANGLE_H

/* Demangled form of an Itanium-ABI name ("_Z..."), malloc'd; NULL when the
 * name is not mangled, does not demangle, or no demangler is available. */
char *sym_demangle_alloc(const char *mangled);

#endif
