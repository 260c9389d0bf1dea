/* symbolize/sym_dwfl.h — internal to symbolize/: the elfutils (libdwfl/libdw)
 * back-end that turns one address into raw frames. Uploader thread only. */
#ifndef DDSHIM_SYM_DWFL_H
#define DDSHIM_SYM_DWFL_H

#include <stddef.h>
#include <stdint.h>

#include "symbolize/sym.h"
#include "symbolize/sym_maps.h"

/* Most frames (inline levels) reported for one address. */
#define SYM_MAX_FRAMES 64

/* Strings point into libdw's data: valid only until the next
 * sym_dwfl_report() or sym_dwfl_free(); the caller copies them. */
typedef struct sym_raw_frame {
    const char *name; /* linkage (mangled) name if known, else plain name; NULL if none */
    const char *file; /* NULL if unknown */
    int line;
} sym_raw_frame;

typedef struct sym_dwfl sym_dwfl;

sym_dwfl *sym_dwfl_new(void);
void sym_dwfl_free(sym_dwfl *d);

/* Tell libdwfl which ELF objects are mapped, from a maps snapshot. Modules
 * whose name and range did not change keep their loaded ELF/DWARF data.
 * 0 or a negative errno. */
int sym_dwfl_report(sym_dwfl *d, const sym_maps *m);

/* Frames for addr, innermost first. Returns how many (>= 1) when an ELF
 * module covers addr, 0 when none does. */
int sym_dwfl_frames(sym_dwfl *d, uint64_t addr, sym_raw_frame *out, int max);

/* Load a module's DWARF only when its debug sections (uncompressed, its dwz
 * file included) add up to at most max_bytes; 0: never. Decided per module
 * at its first lookup after this call. Default SYM_DWARF_MAX_DEFAULT. */
void sym_dwfl_set_dwarf_limit(sym_dwfl *d, uint64_t max_bytes);

/* i-th module (0..) named from its symbol tables only because of that limit:
 * its file, the file holding its DWARF, and the DWARF's size. Strings valid
 * until sym_dwfl_free. 0, or -1 past the end. */
int sym_dwfl_dwarf_skipped(const sym_dwfl *d, int i, const char **path, const char **dwarf,
                           uint64_t *bytes);

/* Bytes held by our per-module indexes (not libdw's own data). */
size_t sym_dwfl_memory(sym_dwfl *d);

/* Build id (lowercase hex) of the module containing addr, read from its file.
 * 0 on success, -1 if unknown. */
int sym_dwfl_build_id(sym_dwfl *d, uint64_t addr, char *out, size_t outsz);

#endif
