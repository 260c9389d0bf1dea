/* symbolize/sym_dwfl.c — owns the elfutils side of symbolization: one Dwfl
 * session for this process, fed from sym.c's /proc/self/maps snapshot, and
 * the translation of an address into (inlined) frames from .symtab/.dynsym
 * and DWARF. Called only by sym.c, i.e. from the shim's uploader thread;
 * nothing here runs in signal context.
 *
 * Why not dwfl_standard_find_debuginfo: when its local search fails it falls
 * back to debuginfod, which dlopens libdebuginfod (and libcurl, with its
 * global init) inside the host and, if DEBUGINFOD_URLS is set, downloads
 * files over the network from the host process. We do the same local search
 * (build-id tree, then .gnu_debuglink next to the file, in .debug/ and under
 * /usr/lib/debug) and stop there.
 *
 * Why we report modules ourselves rather than dwfl_linux_proc_report: the
 * modules then come from the very snapshot sym.c's mapping table was built
 * from (one read of /proc/self/maps, one consistent view), only files with
 * an executable mapping are reported, and an odd maps line cannot make the
 * whole report fail. */
#include "symbolize/sym_dwfl.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <elfutils/libdwfl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

struct sym_dwfl {
    Dwfl *dwfl;
};

/* ---- separate debuginfo, local only --------------------------------------- */

static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n)
{
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    crc = ~crc;
    while (n--)
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static int file_crc_matches(int fd, uint32_t want)
{
    unsigned char buf[65536];
    uint32_t crc = 0;
    off_t off = 0;
    for (;;) {
        ssize_t r = pread(fd, buf, sizeof buf, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return 0;
        if (r == 0)
            break;
        crc = crc32_update(crc, buf, (size_t)r);
        off += r;
    }
    return crc == want;
}

/* A debuglink candidate is only used if it provably belongs to the module:
 * same build id when the module has one, else the debuglink CRC. */
static int debug_candidate_ok(Dwfl_Module *mod, int fd, GElf_Word crc)
{
    const unsigned char *bits = NULL;
    GElf_Addr vaddr;
    int n = dwfl_module_build_id(mod, &bits, &vaddr);
    if (n > 0) {
        Elf *e = elf_begin(fd, ELF_C_READ_MMAP, NULL);
        const void *id = NULL;
        ssize_t len = e != NULL ? dwelf_elf_gnu_build_id(e, &id) : -1;
        int ok = len == n && memcmp(id, bits, (size_t)n) == 0;
        elf_end(e);
        return ok;
    }
    return crc == 0 || file_crc_matches(fd, crc);
}

static int find_debuginfo_local(Dwfl_Module *mod, void **userdata, const char *modname,
                                GElf_Addr base, const char *file_name,
                                const char *debuglink_file, GElf_Word debuglink_crc,
                                char **debuginfo_file_name)
{
    int fd = dwfl_build_id_find_debuginfo(mod, userdata, modname, base, file_name,
                                          debuglink_file, debuglink_crc, debuginfo_file_name);
    if (fd >= 0)
        return fd;
    if (debuglink_file == NULL || file_name == NULL || file_name[0] != '/')
        return -1;
    const char *slash = strrchr(file_name, '/');
    int dirlen = (int)(slash - file_name);
    struct stat main_st;
    if (stat(file_name, &main_st) != 0)
        memset(&main_st, 0, sizeof main_st);
    for (int i = 0; i < 3; i++) {
        char path[PATH_MAX];
        int n;
        if (i == 0)
            n = snprintf(path, sizeof path, "%.*s/%s", dirlen, file_name, debuglink_file);
        else if (i == 1)
            n = snprintf(path, sizeof path, "%.*s/.debug/%s", dirlen, file_name, debuglink_file);
        else
            n = snprintf(path, sizeof path, "/usr/lib/debug%.*s/%s", dirlen, file_name,
                         debuglink_file);
        if (n < 0 || (size_t)n >= sizeof path)
            continue;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
            !(st.st_ino == main_st.st_ino && st.st_dev == main_st.st_dev) &&
            debug_candidate_ok(mod, fd, debuglink_crc)) {
            *debuginfo_file_name = strdup(path);
            return fd;
        }
        close(fd);
    }
    errno = 0;
    return -1;
}

static const Dwfl_Callbacks callbacks = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = find_debuginfo_local,
    .debuginfo_path = NULL, /* libdwfl's default ":.debug:/usr/lib/debug" */
};

/* ---- session ---------------------------------------------------------------- */

sym_dwfl *sym_dwfl_new(void)
{
    sym_dwfl *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->dwfl = dwfl_begin(&callbacks);
    if (d->dwfl == NULL) {
        log_debug("symbolize: dwfl_begin: %s", dwfl_errmsg(-1));
        free(d);
        return NULL;
    }
    return d;
}

void sym_dwfl_free(sym_dwfl *d)
{
    if (d == NULL)
        return;
    dwfl_end(d->dwfl);
    free(d);
}

static int same_file(const sym_maps_line *a, const sym_maps_line *b)
{
    return a->inode == b->inode && a->dev_major == b->dev_major && a->dev_minor == b->dev_minor &&
           a->path_len == b->path_len && memcmp(a->path, b->path, a->path_len) == 0;
}

static void report_one(Dwfl *dwfl, const char *path, size_t len, uint64_t lo, uint64_t hi)
{
    char name[PATH_MAX + 32];
    if (len >= sizeof name)
        return;
    memcpy(name, path, len);
    name[len] = '\0';
    if (dwfl_report_module(dwfl, name, lo, hi) == NULL)
        log_debug("symbolize: dwfl_report_module %s: %s", name, dwfl_errmsg(-1));
}

int sym_dwfl_report(sym_dwfl *d, const sym_maps *m)
{
    dwfl_report_begin(d->dwfl);
    for (int i = 0; i < m->n;) {
        const sym_maps_line *l = &m->lines[i];
        if (l->path_len == 6 && memcmp(l->path, "[vdso]", 6) == 0) {
            /* dwfl_linux_proc_find_elf reads this name's image from
             * /proc/PID/mem (no ptrace: we never attach). */
            char name[48];
            int n = snprintf(name, sizeof name, "[vdso: %d]", (int)getpid());
            report_one(d->dwfl, name, (size_t)n, l->start, l->limit);
            i++;
            continue;
        }
        if (l->path_len == 0 || l->path[0] != '/' || l->inode == 0) {
            i++;
            continue;
        }
        /* One module per run of consecutive mappings of the same file, the
         * way dwfl_linux_proc_report groups them; only files that have an
         * executable mapping (no locale archives, fonts, data files). */
        int j = i, exec = 0;
        while (j < m->n && same_file(&m->lines[j], l)) {
            exec |= m->lines[j].exec;
            j++;
        }
        if (exec)
            report_one(d->dwfl, l->path, l->path_len, l->start, m->lines[j - 1].limit);
        i = j;
    }
    if (dwfl_report_end(d->dwfl, NULL, NULL) != 0) {
        log_debug("symbolize: dwfl_report_end: %s", dwfl_errmsg(-1));
        return -EIO;
    }
    return 0;
}

/* ---- frames ----------------------------------------------------------------- */

/* The name addr2line prints: the linkage (mangled) name when there is one,
 * following DW_AT_abstract_origin/DW_AT_specification, else DW_AT_name. */
static const char *die_name(Dwarf_Die *die)
{
    Dwarf_Attribute attr;
    const char *name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_linkage_name, &attr));
    if (name == NULL)
        name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &attr));
    if (name == NULL)
        name = dwarf_diename(die);
    return name;
}

/* Walk the physical nesting of the innermost scope containing a: each
 * DW_TAG_inlined_subroutine is one frame whose caller's position is its
 * DW_AT_call_file/DW_AT_call_line; the enclosing subprogram ends the list.
 * (dwarf_getscopes alone would continue into the abstract origin's scopes,
 * not into the caller, hence the second walk with dwarf_getscopes_die.) */
static int dwarf_frames(Dwarf_Die *cudie, Dwarf_Addr a, const char *file, int line,
                        sym_raw_frame *out, int max)
{
    Dwarf_Die *scopes = NULL;
    int ns = dwarf_getscopes(cudie, a, &scopes);
    if (ns <= 0) {
        free(scopes);
        return 0;
    }
    Dwarf_Die inner = scopes[0];
    free(scopes);
    Dwarf_Die *chain = NULL;
    int nc = dwarf_getscopes_die(&inner, &chain);
    int n = 0;
    for (int i = 0; i < nc && n < max; i++) {
        int tag = dwarf_tag(&chain[i]);
        if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_subprogram &&
            tag != DW_TAG_entry_point)
            continue;
        out[n].name = die_name(&chain[i]);
        out[n].file = file;
        out[n].line = line;
        n++;
        if (tag != DW_TAG_inlined_subroutine)
            break;
        Dwarf_Attribute attr;
        Dwarf_Word v;
        Dwarf_Die cu;
        Dwarf_Files *files;
        size_t nfiles;
        file = NULL;
        line = 0;
        if (dwarf_formudata(dwarf_attr(&chain[i], DW_AT_call_file, &attr), &v) == 0 &&
            dwarf_diecu(&chain[i], &cu, NULL, NULL) != NULL &&
            dwarf_getsrcfiles(&cu, &files, &nfiles) == 0 && v < nfiles)
            file = dwarf_filesrc(files, v, NULL, NULL);
        if (dwarf_formudata(dwarf_attr(&chain[i], DW_AT_call_line, &attr), &v) == 0 &&
            v <= INT_MAX)
            line = (int)v;
    }
    free(chain);
    return n;
}

int sym_dwfl_frames(sym_dwfl *d, uint64_t addr, sym_raw_frame *out, int max)
{
    if (max <= 0)
        return 0;
    Dwfl_Module *mod = dwfl_addrmodule(d->dwfl, addr);
    if (mod == NULL)
        return 0;
    const char *file = NULL;
    int line = 0, n = 0;
    Dwarf_Addr bias = 0;
    Dwarf_Die *cudie = dwfl_module_addrdie(mod, addr, &bias);
    if (cudie != NULL) {
        Dwarf_Line *l = dwarf_getsrc_die(cudie, addr - bias);
        if (l != NULL) {
            file = dwarf_linesrc(l, NULL, NULL);
            if (dwarf_lineno(l, &line) != 0)
                line = 0;
        }
        n = dwarf_frames(cudie, addr - bias, file, line, out, max);
    }
    if (n == 0 || out[n - 1].name == NULL) {
        /* No DWARF here (stripped, or separate debuginfo not installed), or
         * a nameless subprogram: the ELF symbol table still names it. */
        GElf_Off off;
        GElf_Sym sym;
        const char *name = dwfl_module_addrinfo(mod, addr, &off, &sym, NULL, NULL, NULL);
        if (n == 0) {
            out[0].file = file;
            out[0].line = line;
            n = 1;
        }
        out[n - 1].name = name;
    }
    return n;
}

int sym_dwfl_build_id(sym_dwfl *d, uint64_t addr, char *out, size_t outsz)
{
    static const char digits[] = "0123456789abcdef";
    Dwfl_Module *mod = dwfl_addrmodule(d->dwfl, addr);
    if (mod == NULL)
        return -1;
    Dwarf_Addr bias;
    if (dwfl_module_getelf(mod, &bias) == NULL)
        return -1;
    const unsigned char *bits = NULL;
    GElf_Addr vaddr;
    int n = dwfl_module_build_id(mod, &bits, &vaddr);
    if (n <= 0 || outsz < 2 * (size_t)n + 1)
        return -1;
    for (int i = 0; i < n; i++) {
        out[2 * i] = digits[bits[i] >> 4];
        out[2 * i + 1] = digits[bits[i] & 15];
    }
    out[2 * n] = '\0';
    return 0;
}
