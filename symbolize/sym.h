/* symbolize/sym.h — turn addresses of this process into mappings, function
 * names, file:line and inlined frames. Runs only in the shim's uploader thread
 * (never in signal context, never on a host thread). One sym_ctx is used by one
 * thread at a time; it is not thread-safe.
 *
 * Backed by elfutils: ELF .symtab/.dynsym for names (executable, every shared
 * library, and libraries dlopen'd later, picked up by sym_refresh), DWARF via
 * libdw for file:line and inlined frames when present (including separate
 * debuginfo found by build id) and within sym_set_dwarf_limit, C++ names
 * demangled. */
#ifndef DDSHIM_SYM_H
#define DDSHIM_SYM_H

#include <stddef.h>
#include <stdint.h>

typedef struct sym_ctx sym_ctx;

/* One executable mapping of the process (a text segment of an ELF object).
 * Strings are owned by the sym_ctx and live until sym_free. */
typedef struct sym_mapping {
    uint64_t start, limit; /* [start, limit) in the process's address space */
    uint64_t offset;       /* file offset of start */
    const char *path;      /* file name as in /proc/self/maps, or "[vdso]" ... */
    const char *build_id;  /* lowercase hex GNU build id, "" when none */
    int index;             /* stable small integer, 0.. per ctx (for callers' tables) */
} sym_mapping;

/* One frame of a resolved address. Several of these describe one address when
 * functions were inlined: index 0 is the innermost (inlined) function, the
 * last one is the real (outermost) function the address lies in.
 * Strings are owned by the sym_ctx and live until sym_free. */
typedef struct sym_frame {
    const char *name;        /* demangled ("ns::Cls::method(int)"), never NULL; "" if unknown */
    const char *system_name; /* raw symbol ("_ZN2ns3Cls6methodEi"); == name for C */
    const char *file;        /* source file or "" */
    int line;                /* 0 when unknown */
} sym_frame;

/* Create a context; reads /proc/self/maps. NULL on failure. */
sym_ctx *sym_new(void);

/* Re-read /proc/self/maps (after dlopen/dlclose). Cached results for mappings
 * that did not change stay valid. Returns 0 or a negative errno-style code.
 * Cheap when nothing changed: callers symbolizing in batches (one profile)
 * call it before each batch, since cache hits do not re-check the process. */
int sym_refresh(sym_ctx *ctx);

/* Resolve pc. is_return_address != 0 means pc is a return address from a stack
 * walk (lookup uses pc - 1 so the call site, not the next line, is found).
 * Fills up to max frames (innermost first), sets *map (may be NULL when pc is
 * in no known mapping). Returns the number of frames written: at least 1 when
 * the pc lies in a known mapping (name "" if no symbol covers it), 0 when not.
 * If pc lies in no mapping, calls sym_refresh once internally and retries. */
int sym_resolve(sym_ctx *ctx, uint64_t pc, int is_return_address, sym_frame *frames, int max,
                const sym_mapping **map);

/* Number of mappings known now, and the i-th one (0 <= i < count). Mappings
 * that have since been unmapped stay (index and strings valid until
 * sym_free); sym_resolve only returns current ones. */
int sym_mapping_count(const sym_ctx *ctx);
const sym_mapping *sym_mapping_get(const sym_ctx *ctx, int i);

/* Approximate bytes held by caches (for memory bounds). */
size_t sym_memory(const sym_ctx *ctx);

void sym_free(sym_ctx *ctx);

/* Bound the per-pc cache to max_entries addresses (default 32768; frames are
 * bounded at 4 per entry on average). When either bound is reached the whole
 * cache is dropped and refilled on demand; interned strings stay. Clears the
 * cache now. 0 or -EINVAL. */
int sym_set_cache_limit(sym_ctx *ctx, size_t max_entries);

/* An object's DWARF (file:line, inlined frames) is read only when its debug
 * sections, uncompressed, add up to at most max_bytes (its separate debug
 * file and dwz file counted, sized from section headers: nothing is inflated
 * to decide). Above it, or with 0, the object's functions are named from its
 * symbol tables (.symtab of the file or of its debug file, else .dynsym):
 * true names, no file:line (a local symbol keeps its STT_FILE name), no
 * inlined frames. libdw inflates compressed DWARF whole and keeps it: this
 * bounds the memory and CPU that costs. Applies to objects first looked up
 * after the call. */
#define SYM_DWARF_MAX_DEFAULT (4u << 20)
void sym_set_dwarf_limit(sym_ctx *ctx, uint64_t max_bytes);

/* Objects named from their symbol tables only because of that limit, in the
 * order met: the i-th (0..), or -1 past the end. Strings live until sym_free. */
typedef struct sym_dwarf_skip {
    const char *path;  /* the object, as mapped */
    const char *dwarf; /* the file its DWARF is in (itself, or a debug file) */
    uint64_t bytes;    /* that DWARF's uncompressed size */
} sym_dwarf_skip;
int sym_dwarf_skipped(const sym_ctx *ctx, int i, sym_dwarf_skip *out);

/* Demangle an Itanium C++ ABI name ("_ZN2ns3Cls6methodEi") into buf
 * ("ns::Cls::method(int)"), truncating to len - 1 bytes. Returns 1 when
 * demangled, 0 when buf holds the name unchanged (not mangled, invalid, or no
 * demangler in reach: libstdc++ is looked up at run time, never linked), -1 on
 * bad arguments. */
int sym_demangle(const char *mangled, char *buf, size_t len);

#endif
