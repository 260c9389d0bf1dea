/* symbolize/sym_dwfl.c — owns the elfutils side of symbolization: one Dwfl
 * session for this process, fed from sym.c's /proc/self/maps snapshot, and
 * the translation of an address into (inlined) frames from .symtab/.dynsym
 * and DWARF, and the per-module decision whether libdw may load that DWARF
 * at all (its size against the limit, read before anything is inflated).
 * Called only by sym.c, i.e. from the shim's uploader thread; nothing here
 * runs in signal context.
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

/* A module named from its symbol tables only: its DWARF is over the limit. */
struct dw_skip {
    char *path;  /* the module's file */
    char *dwarf; /* the file its DWARF is in (the module's, or a debug file) */
    uint64_t bytes;
};

struct sym_dwfl {
    Dwfl *dwfl;
    uint64_t dwarf_max; /* bytes of DWARF (uncompressed) read per module at most */
    struct dw_skip *skips;
    int nskips, capskips;
};

/* ---- file descriptors ------------------------------------------------------ */

/* libdwfl keeps each module's ELF (and debug file) open for the Dwfl's
 * lifetime and opens them without O_CLOEXEC; they must not leak into
 * programs the host execs. (A host fork+exec racing the open can still
 * inherit one; the window is a few instructions wide.) */
static void set_cloexec(int fd)
{
    if (fd < 0)
        return;
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0 && !(fl & FD_CLOEXEC))
        fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

static int find_elf_cloexec(Dwfl_Module *mod, void **userdata, const char *modname,
                            Dwarf_Addr base, char **file_name, Elf **elfp)
{
    int fd = dwfl_linux_proc_find_elf(mod, userdata, modname, base, file_name, elfp);
    set_cloexec(fd);
    return fd;
}

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

/* The .gnu_debuglink candidates, in gdb's order: next to the file, in
 * .debug/ there, under /usr/lib/debug. An open descriptor of the first that
 * belongs to mod (path copied into path), or -1. */
static int open_debuglink(Dwfl_Module *mod, const char *file_name, const char *debuglink_file,
                          GElf_Word debuglink_crc, char *path, size_t pathsz)
{
    if (debuglink_file == NULL || file_name == NULL || file_name[0] != '/')
        return -1;
    const char *slash = strrchr(file_name, '/');
    int dirlen = (int)(slash - file_name);
    struct stat main_st;
    if (stat(file_name, &main_st) != 0)
        memset(&main_st, 0, sizeof main_st);
    for (int i = 0; i < 3; i++) {
        int n;
        if (i == 0)
            n = snprintf(path, pathsz, "%.*s/%s", dirlen, file_name, debuglink_file);
        else if (i == 1)
            n = snprintf(path, pathsz, "%.*s/.debug/%s", dirlen, file_name, debuglink_file);
        else
            n = snprintf(path, pathsz, "/usr/lib/debug%.*s/%s", dirlen, file_name,
                         debuglink_file);
        if (n < 0 || (size_t)n >= pathsz)
            continue;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
            !(st.st_ino == main_st.st_ino && st.st_dev == main_st.st_dev) &&
            debug_candidate_ok(mod, fd, debuglink_crc))
            return fd;
        close(fd);
    }
    return -1;
}

static int find_debuginfo_local(Dwfl_Module *mod, void **userdata, const char *modname,
                                GElf_Addr base, const char *file_name,
                                const char *debuglink_file, GElf_Word debuglink_crc,
                                char **debuginfo_file_name)
{
    int fd = dwfl_build_id_find_debuginfo(mod, userdata, modname, base, file_name,
                                          debuglink_file, debuglink_crc, debuginfo_file_name);
    if (fd >= 0) {
        set_cloexec(fd);
        return fd;
    }
    char path[PATH_MAX];
    fd = open_debuglink(mod, file_name, debuglink_file, debuglink_crc, path, sizeof path);
    if (fd >= 0) {
        *debuginfo_file_name = strdup(path);
        return fd;
    }
    errno = 0;
    return -1;
}

static const Dwfl_Callbacks callbacks = {
    .find_elf = find_elf_cloexec,
    .find_debuginfo = find_debuginfo_local,
    .debuginfo_path = NULL, /* libdwfl's default ":.debug:/usr/lib/debug" */
};

/* ---- how much DWARF libdw would read for a module ---------------------------
 *
 * dwarf_begin_elf inflates every compressed .debug_* section of the file it
 * opens, at once, into memory kept until the Dwfl ends: libc6-dbg's 3.6 MB of
 * zlib streams become 9.5 MB of DWARF, ~12 MB of anonymous memory and ~40 ms
 * of CPU, paid again for every profile (the symbolizer is rebuilt each period
 * to give that memory back). So before the first DWARF call for a module
 * (dwfl_module_addrdie) we size the DWARF it would bring in, from section
 * headers and compression headers only, in the file libdwfl would use
 * (the module's own file if it carries DWARF, else the separate debug file our
 * find_debuginfo callback would hand it) plus its dwz file; above the limit we
 * never make that call, and the symbol tables (.symtab of the file or of its
 * debug file, which libdwfl reads without touching .debug_*, then .dynsym)
 * name the functions. The lookup below follows find_debuginfo_local. */

struct dwarf_size {
    uint64_t bytes; /* uncompressed .debug_* / .zdebug_* sections */
    int usable;     /* has a section dwarf_begin_elf starts from (info, line or frame) */
    unsigned char alt_id[64];
    size_t alt_len;     /* .gnu_debugaltlink build id (dwz file); 0: none */
    char alt_name[256]; /* and its file name as written there */
};

static uint64_t read_uint(const unsigned char *p, int n, int big_endian)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[big_endian ? i : n - 1 - i] << (8 * (n - 1 - i));
    return v;
}

/* Section bytes without copying when the file is mapped (libdwfl and we open
 * them ELF_C_READ_MMAP); only the few bytes asked for are touched. */
static const unsigned char *raw_bytes(Elf *elf, uint64_t off, size_t len)
{
    Elf_Data *d = elf_getdata_rawchunk(elf, (int64_t)off, len, ELF_T_BYTE);
    return d != NULL && d->d_buf != NULL && d->d_size >= len ? d->d_buf : NULL;
}

static void elf_dwarf_size(Elf *elf, struct dwarf_size *ds)
{
    memset(ds, 0, sizeof *ds);
    size_t shstrndx;
    const char *ident = elf_getident(elf, NULL);
    if (ident == NULL || elf_getshdrstrndx(elf, &shstrndx) != 0)
        return;
    int is64 = ident[EI_CLASS] == ELFCLASS64, be = ident[EI_DATA] == ELFDATA2MSB;
    Elf_Scn *scn = NULL;
    while ((scn = elf_nextscn(elf, scn)) != NULL) {
        GElf_Shdr sh;
        /* libdw skips these too */
        if (gelf_getshdr(scn, &sh) == NULL || sh.sh_type == SHT_NOBITS ||
            (sh.sh_flags & SHF_GROUP))
            continue;
        const char *name = elf_strptr(elf, shstrndx, sh.sh_name);
        if (name == NULL)
            continue;
        if (strcmp(name, ".gnu_debugaltlink") == 0) {
            /* file name, NUL, build id */
            size_t len = sh.sh_size < 512 ? (size_t)sh.sh_size : 0;
            const unsigned char *p = len ? raw_bytes(elf, sh.sh_offset, len) : NULL;
            const unsigned char *nul = p ? memchr(p, 0, len) : NULL;
            size_t nlen = nul ? (size_t)(nul - p) : 0, idlen = nul ? len - nlen - 1 : 0;
            if (nul && nlen < sizeof ds->alt_name && idlen > 0 && idlen <= sizeof ds->alt_id) {
                memcpy(ds->alt_name, p, nlen + 1);
                memcpy(ds->alt_id, nul + 1, idlen);
                ds->alt_len = idlen;
            }
            continue;
        }
        int gnu_z = strncmp(name, ".zdebug_", 8) == 0;
        if (!gnu_z && strncmp(name, ".debug_", 7) != 0)
            continue;
        const char *kind = name + (gnu_z ? 8 : 7);
        if (strcmp(kind, "info") == 0 || strcmp(kind, "line") == 0 || strcmp(kind, "frame") == 0)
            ds->usable = 1;
        uint64_t size = sh.sh_size;
        if (sh.sh_flags & SHF_COMPRESSED) {
            /* Elf64_Chdr: type, reserved, size; Elf32_Chdr: type, size */
            const unsigned char *p = raw_bytes(elf, sh.sh_offset, is64 ? 16 : 8);
            if (p != NULL)
                size = read_uint(p + (is64 ? 8 : 4), is64 ? 8 : 4, be);
        } else if (gnu_z) {
            /* "ZLIB", then the size as 8 big-endian bytes */
            const unsigned char *p = raw_bytes(elf, sh.sh_offset, 12);
            if (p != NULL && memcmp(p, "ZLIB", 4) == 0)
                size = read_uint(p + 4, 8, 1);
        }
        ds->bytes = size > UINT64_MAX - ds->bytes ? UINT64_MAX : ds->bytes + size;
    }
}

static int fd_dwarf_size(int fd, struct dwarf_size *ds)
{
    Elf *e = elf_begin(fd, ELF_C_READ_MMAP, NULL);
    if (e == NULL || elf_kind(e) != ELF_K_ELF) {
        elf_end(e);
        return -1;
    }
    elf_dwarf_size(e, ds);
    elf_end(e);
    return 0;
}

/* /usr/lib/debug/.build-id/xx/yyyy.debug, the one place libdwfl looks up a
 * build id with the default debuginfo_path. -1 or an open descriptor. */
static int open_build_id_debug(const unsigned char *id, size_t len, char *path, size_t pathsz)
{
    static const char hex[] = "0123456789abcdef";
    if (len < 3 || len > 64 || pathsz < sizeof "/usr/lib/debug/.build-id/xx/.debug" + 2 * len)
        return -1;
    size_t n = (size_t)snprintf(path, pathsz, "/usr/lib/debug/.build-id/%c%c/", hex[id[0] >> 4],
                                hex[id[0] & 15]);
    for (size_t i = 1; i < len; i++) {
        path[n++] = hex[id[i] >> 4];
        path[n++] = hex[id[i] & 15];
    }
    memcpy(path + n, ".debug", sizeof ".debug");
    return open(path, O_RDONLY | O_CLOEXEC);
}

/* The dwz file a DWARF file points to: by build id, else by the name it
 * gives (absolute, or relative to the DWARF file's directory). Adds its
 * DWARF to ds->bytes; nothing when it is not there (libdw will not find it
 * either, and reads the file without it). */
static void add_alt_size(struct dwarf_size *ds, const char *dwarf_path)
{
    if (ds->alt_len == 0)
        return;
    char path[PATH_MAX];
    int fd = open_build_id_debug(ds->alt_id, ds->alt_len, path, sizeof path);
    if (fd < 0 && ds->alt_name[0] != '\0') {
        const char *slash = dwarf_path != NULL ? strrchr(dwarf_path, '/') : NULL;
        int n = ds->alt_name[0] == '/' || slash == NULL
                    ? snprintf(path, sizeof path, "%s", ds->alt_name)
                    : snprintf(path, sizeof path, "%.*s/%s", (int)(slash - dwarf_path), dwarf_path,
                               ds->alt_name);
        if (n > 0 && (size_t)n < sizeof path)
            fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0)
        return;
    struct dwarf_size alt;
    if (fd_dwarf_size(fd, &alt) == 0)
        ds->bytes = alt.bytes > UINT64_MAX - ds->bytes ? UINT64_MAX : ds->bytes + alt.bytes;
    close(fd);
}

/* Size the DWARF libdwfl would load for mod. Returns 0 with *ds filled and
 * where (the file it is in) set, or -1 when there is none to load (no DWARF
 * in the module's file and no separate debug file for it). */
static int module_dwarf_size(Dwfl_Module *mod, struct dwarf_size *ds, char *where, size_t wheresz)
{
    Dwarf_Addr bias;
    Elf *main_elf = dwfl_module_getelf(mod, &bias);
    if (main_elf == NULL)
        return -1;
    const char *main_name = NULL;
    dwfl_module_info(mod, NULL, NULL, NULL, NULL, NULL, &main_name, NULL);
    elf_dwarf_size(main_elf, ds);
    if (ds->usable) {
        /* find_dw: the module's own file first */
        snprintf(where, wheresz, "%s", main_name != NULL ? main_name : "");
        add_alt_size(ds, main_name);
        return 0;
    }
    /* the separate file, found as find_debuginfo_local finds it */
    const unsigned char *bits = NULL;
    GElf_Addr vaddr;
    int n = dwfl_module_build_id(mod, &bits, &vaddr);
    int fd = -1;
    if (n > 0) {
        fd = open_build_id_debug(bits, (size_t)n, where, wheresz);
        if (fd >= 0 && !debug_candidate_ok(mod, fd, 0)) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0) {
        GElf_Word crc = 0;
        const char *link = dwelf_elf_gnu_debuglink(main_elf, &crc);
        fd = open_debuglink(mod, main_name, link, crc, where, wheresz);
    }
    if (fd < 0)
        return -1;
    int rc = fd_dwarf_size(fd, ds);
    close(fd);
    if (rc != 0 || !ds->usable)
        return -1;
    add_alt_size(ds, where);
    return 0;
}

/* ---- per-module indexes ------------------------------------------------------
 *
 * libdwfl's own lookups are linear: dwfl_module_addrinfo scans the whole
 * symbol table, dwarf_getscopes walks the CU's DIE tree from its root (and
 * dwarf_getscopes_die walks it again). Tens of microseconds per address in a
 * small binary, far more in a big one. So each module gets, lazily, a sorted
 * symbol array and, per CU touched, a sorted array of its functions' address
 * ranges; a lookup is then two binary searches plus a walk down the one
 * function's scopes. The indexes hang off the module's userdata slot and are
 * freed when libdwfl drops the module (dwfl_report_end's callback). */

struct sym_ent {
    uint64_t addr;    /* module address */
    const char *name; /* libdw's string table or mod_data.vnames: lives as long as the module */
    uint32_t sec;     /* index into mod_data.sec_end */
    uint32_t file;    /* index into mod_data.files; 0: none */
};

struct fn_range {
    uint64_t lo, hi; /* DWARF addresses (before bias) */
    Dwarf_Die die;
    Dwarf_Off off; /* DIE order, for ties */
};

struct cu_fns {
    Dwarf_Off cu_off;
    struct fn_range *v;
    size_t n;
};

enum { DW_UNDECIDED, DW_READ, DW_SKIP };

struct mod_data {
    int dw_state; /* DW_*: whether libdw may load this module's DWARF */
    int syms_done;
    struct sym_ent *syms;
    size_t nsyms;
    uint64_t *sec_end; /* end address of each executable section seen */
    size_t nsec;
    char *vnames; /* versioned symbol names, trimmed at '@' */
    size_t nvbytes;
    const char **files; /* STT_FILE names; [0] = NULL */
    size_t nfiles;
    struct cu_fns *cus; /* sorted by cu_off */
    size_t ncus, capcus;
};

static void mod_data_free(struct mod_data *md)
{
    if (md == NULL)
        return;
    free(md->syms);
    free(md->vnames);
    free(md->sec_end);
    free(md->files);
    for (size_t i = 0; i < md->ncus; i++)
        free(md->cus[i].v);
    free(md->cus);
    free(md);
}

static struct mod_data *mod_data_get(Dwfl_Module *mod)
{
    void **ud = NULL;
    if (dwfl_module_info(mod, &ud, NULL, NULL, NULL, NULL, NULL, NULL) == NULL || ud == NULL)
        return NULL;
    if (*ud == NULL)
        *ud = calloc(1, sizeof(struct mod_data));
    return *ud;
}

static void note_skip(sym_dwfl *d, const char *path, const char *dwarf, uint64_t bytes)
{
    for (int i = 0; i < d->nskips; i++)
        if (strcmp(d->skips[i].path, path) == 0)
            return;
    if (d->nskips == d->capskips) {
        int ncap = d->capskips ? d->capskips * 2 : 8;
        struct dw_skip *ns = realloc(d->skips, (size_t)ncap * sizeof *ns);
        if (ns == NULL)
            return;
        d->skips = ns;
        d->capskips = ncap;
    }
    struct dw_skip *k = &d->skips[d->nskips];
    k->path = strdup(path);
    k->dwarf = strdup(dwarf);
    k->bytes = bytes;
    if (k->path == NULL || k->dwarf == NULL) {
        free(k->path);
        free(k->dwarf);
        return;
    }
    d->nskips++;
}

/* Whether libdw may load mod's DWARF: decided once per module, before the
 * first DWARF call (see "how much DWARF" above). Without our per-module data
 * (out of memory) the answer is no: names still come from the symbols. */
static int dwarf_allowed(sym_dwfl *d, Dwfl_Module *mod, struct mod_data *md)
{
    if (md == NULL)
        return 0;
    if (md->dw_state != DW_UNDECIDED)
        return md->dw_state == DW_READ;
    const char *name = dwfl_module_info(mod, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    struct dwarf_size ds;
    char where[PATH_MAX];
    if (module_dwarf_size(mod, &ds, where, sizeof where) != 0) {
        md->dw_state = DW_SKIP; /* nothing to read: libdwfl would find nothing either */
        return 0;
    }
    md->dw_state = ds.bytes <= d->dwarf_max ? DW_READ : DW_SKIP;
    log_debug("symbolize: %s: %.1f MB of DWARF in %s: %s", name ? name : "?",
              (double)ds.bytes / (1 << 20), where,
              md->dw_state == DW_READ ? "read" : "over the limit, symbol table only");
    if (md->dw_state == DW_SKIP)
        note_skip(d, name ? name : "", where, ds.bytes);
    return md->dw_state == DW_READ;
}

/* Preference among symbols at one address: global, then weak, then local;
 * functions before untyped labels; then the fewest leading underscores and
 * the shortest name (getpid over __getpid when both are global). */
static int sym_rank(const GElf_Sym *s)
{
    int b = GELF_ST_BIND(s->st_info);
    int r = b == STB_GLOBAL || b == STB_GNU_UNIQUE ? 0 : b == STB_WEAK ? 1 : 2;
    return r * 2 + (GELF_ST_TYPE(s->st_info) == STT_NOTYPE);
}

struct sym_tmp {
    struct sym_ent e;
    int rank;
};

static int cmp_sym_tmp(const void *a, const void *b)
{
    const struct sym_tmp *x = a, *y = b;
    if (x->e.addr != y->e.addr)
        return x->e.addr < y->e.addr ? -1 : 1;
    if (x->rank != y->rank)
        return x->rank - y->rank;
    size_t ux = strspn(x->e.name, "_"), uy = strspn(y->e.name, "_");
    if (ux != uy)
        return ux < uy ? -1 : 1;
    size_t lx = strlen(x->e.name), ly = strlen(y->e.name);
    if (lx != ly)
        return lx < ly ? -1 : 1;
    return strcmp(x->e.name, y->e.name);
}

/* Small append-only tables next to the symbols; index or 0 on failure
 * (for files, 0 means "no file", which is the harmless answer). */
static uint32_t add_file(struct mod_data *md, const char *name)
{
    if (md->nfiles >= UINT32_MAX)
        return 0;
    const char **nf = realloc(md->files, (md->nfiles + 1) * sizeof *nf);
    if (nf == NULL)
        return 0;
    md->files = nf;
    md->files[md->nfiles] = name;
    return (uint32_t)md->nfiles++;
}

static int sec_index(struct mod_data *md, uint64_t end, uint32_t *out)
{
    for (size_t i = md->nsec; i > 0; i--)
        if (md->sec_end[i - 1] == end) {
            *out = (uint32_t)(i - 1);
            return 0;
        }
    uint64_t *ns = realloc(md->sec_end, (md->nsec + 1) * sizeof *ns);
    if (ns == NULL)
        return -1;
    md->sec_end = ns;
    md->sec_end[md->nsec] = end;
    *out = (uint32_t)md->nsec++;
    return 0;
}

static void build_syms(Dwfl_Module *mod, struct mod_data *md)
{
    md->syms_done = 1;
    int n = dwfl_module_getsymtab(mod);
    if (n <= 0)
        return;
    add_file(md, NULL); /* files[0]: "no file" */
    if (md->files == NULL)
        return;
    struct sym_tmp *t = malloc((size_t)n * sizeof *t);
    if (t == NULL)
        return;
    size_t k = 0;
    uint32_t cur_file = 0;
    for (int i = 1; i < n; i++) {
        GElf_Sym sym;
        GElf_Addr addr;
        GElf_Word shndx;
        Elf *elf = NULL;
        Dwarf_Addr bias = 0;
        const char *name = dwfl_module_getsym_info(mod, i, &sym, &addr, &shndx, &elf, &bias);
        int type = GELF_ST_TYPE(sym.st_info);
        if (name != NULL && type == STT_FILE) {
            /* .symtab lists each object's STT_FILE before its local
             * symbols; addr2line shows that file for them when there is
             * no line information. */
            cur_file = name[0] != '\0' ? add_file(md, name) : 0;
            continue;
        }
        if (name == NULL || name[0] == '\0' || name[0] == '$' || elf == NULL ||
            (type != STT_FUNC && type != STT_GNU_IFUNC && type != STT_NOTYPE) ||
            shndx == SHN_UNDEF || shndx >= SHN_LORESERVE)
            continue;
        GElf_Shdr sh;
        Elf_Scn *scn = elf_getscn(elf, shndx);
        if (scn == NULL || gelf_getshdr(scn, &sh) == NULL || !(sh.sh_flags & SHF_EXECINSTR))
            continue;
        uint64_t sec_lo = sh.sh_addr + bias, sec_hi = sec_lo + sh.sh_size;
        if (addr < sec_lo || addr >= sec_hi || sec_index(md, sec_hi, &t[k].e.sec) != 0)
            continue;
        t[k].e.addr = addr;
        t[k].e.name = name;
        t[k].e.file = GELF_ST_BIND(sym.st_info) == STB_LOCAL ? cur_file : 0;
        t[k].rank = sym_rank(&sym);
        k++;
    }
    /* A .symtab made by GNU tools spells a versioned definition
     * "name@@VERSION" or "name@VERSION" (libc6-dbg's has ~2,000 of them);
     * the function's name is the part before '@', as .dynsym gives it.
     * Trimmed copies live in one block next to the symbols. */
    size_t vbytes = 0;
    for (size_t i = 0; i < k; i++) {
        const char *at = strchr(t[i].e.name, '@');
        if (at != NULL && at != t[i].e.name)
            vbytes += (size_t)(at - t[i].e.name) + 1;
    }
    if (vbytes > 0 && (md->vnames = malloc(vbytes)) != NULL) {
        char *p = md->vnames;
        for (size_t i = 0; i < k; i++) {
            const char *at = strchr(t[i].e.name, '@');
            if (at == NULL || at == t[i].e.name)
                continue;
            size_t len = (size_t)(at - t[i].e.name);
            memcpy(p, t[i].e.name, len);
            p[len] = '\0';
            t[i].e.name = p;
            p += len + 1;
        }
        md->nvbytes = vbytes;
    }
    qsort(t, k, sizeof *t, cmp_sym_tmp);
    md->syms = malloc((k ? k : 1) * sizeof *md->syms);
    if (md->syms != NULL) {
        for (size_t i = 0; i < k; i++)
            if (md->nsyms == 0 || md->syms[md->nsyms - 1].addr != t[i].e.addr)
                md->syms[md->nsyms++] = t[i].e;
    }
    free(t);
}

/* Like addr2line: the nearest symbol at or below addr in the same section,
 * so padding after a function still carries its name but a PLT slot does
 * not borrow the name of whatever precedes .plt. *file gets the symbol's
 * STT_FILE name when it is a local symbol (else NULL). */
static const char *sym_lookup(Dwfl_Module *mod, struct mod_data *md, uint64_t addr,
                              const char **file)
{
    *file = NULL;
    if (md == NULL) {
        GElf_Off off;
        GElf_Sym sym;
        return dwfl_module_addrinfo(mod, addr, &off, &sym, NULL, NULL, NULL);
    }
    if (!md->syms_done)
        build_syms(mod, md);
    size_t lo = 0, hi = md->nsyms;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (md->syms[mid].addr <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0 || addr >= md->sec_end[md->syms[lo - 1].sec])
        return NULL;
    *file = md->files[md->syms[lo - 1].file];
    return md->syms[lo - 1].name;
}

struct fn_vec {
    struct fn_range *v;
    size_t n, cap;
    int oom;
};

static void fn_push(struct fn_vec *fv, Dwarf_Die *die)
{
    Dwarf_Addr base, start, end;
    ptrdiff_t off = 0;
    while ((off = dwarf_ranges(die, off, &base, &start, &end)) > 0) {
        if (start >= end)
            continue;
        if (fv->n == fv->cap) {
            size_t ncap = fv->cap ? fv->cap * 2 : 64;
            struct fn_range *nv = realloc(fv->v, ncap * sizeof *nv);
            if (nv == NULL) {
                fv->oom = 1;
                return;
            }
            fv->v = nv;
            fv->cap = ncap;
        }
        fv->v[fv->n].lo = start;
        fv->v[fv->n].hi = end;
        fv->v[fv->n].die = *die;
        fv->v[fv->n].off = dwarf_dieoffset(die);
        fv->n++;
    }
}

/* Functions with code directly under the CU, or inside namespaces and
 * classes (C++ definitions may sit there), or in imported (dwz) units. */
static void index_children(Dwarf_Die *parent, struct fn_vec *fv, int depth)
{
    Dwarf_Die child;
    if (depth > 32 || dwarf_child(parent, &child) != 0)
        return;
    do {
        switch (dwarf_tag(&child)) {
        case DW_TAG_subprogram:
        case DW_TAG_entry_point:
            fn_push(fv, &child);
            break;
        case DW_TAG_namespace:
        case DW_TAG_class_type:
        case DW_TAG_structure_type:
        case DW_TAG_union_type:
        case DW_TAG_module:
            index_children(&child, fv, depth + 1);
            break;
        case DW_TAG_imported_unit: {
            Dwarf_Attribute attr;
            Dwarf_Die unit;
            if (dwarf_formref_die(dwarf_attr(&child, DW_AT_import, &attr), &unit) != NULL)
                index_children(&unit, fv, depth + 1);
            break;
        }
        default:
            break;
        }
    } while (dwarf_siblingof(&child, &child) == 0);
}

/* By start; for one start, the smallest range last and, among equal
 * ranges, the last DIE last: fn_find takes the last candidate, which is
 * addr2line's pick (assembler CUs have one subprogram per alias). */
static int cmp_fn(const void *a, const void *b)
{
    const struct fn_range *x = a, *y = b;
    if (x->lo != y->lo)
        return x->lo < y->lo ? -1 : 1;
    if (x->hi != y->hi)
        return x->hi > y->hi ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

static struct cu_fns *cu_index(struct mod_data *md, Dwarf_Die *cudie)
{
    Dwarf_Off off = dwarf_dieoffset(cudie);
    size_t lo = 0, hi = md->ncus;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (md->cus[mid].cu_off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < md->ncus && md->cus[lo].cu_off == off)
        return &md->cus[lo];
    if (md->ncus == md->capcus) {
        size_t ncap = md->capcus ? md->capcus * 2 : 16;
        struct cu_fns *nc = realloc(md->cus, ncap * sizeof *nc);
        if (nc == NULL)
            return NULL;
        md->cus = nc;
        md->capcus = ncap;
    }
    struct fn_vec fv = {0};
    index_children(cudie, &fv, 0);
    if (fv.oom) {
        free(fv.v);
        return NULL;
    }
    qsort(fv.v, fv.n, sizeof *fv.v, cmp_fn);
    memmove(&md->cus[lo + 1], &md->cus[lo], (md->ncus - lo) * sizeof *md->cus);
    md->cus[lo].cu_off = off;
    md->cus[lo].v = fv.v;
    md->cus[lo].n = fv.n;
    md->ncus++;
    return &md->cus[lo];
}

static const struct fn_range *fn_find(const struct cu_fns *c, Dwarf_Addr a)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->v[mid].lo <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Top-level functions do not overlap in sane DWARF; look back a little
     * in case some do (aliases, odd producers). */
    for (size_t i = lo, k = 0; i > 0 && k < 16; i--, k++)
        if (a >= c->v[i - 1].lo && a < c->v[i - 1].hi)
            return &c->v[i - 1];
    return NULL;
}

/* ---- session ---------------------------------------------------------------- */

sym_dwfl *sym_dwfl_new(void)
{
    sym_dwfl *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->dwarf_max = SYM_DWARF_MAX_DEFAULT;
    d->dwfl = dwfl_begin(&callbacks);
    if (d->dwfl == NULL) {
        log_debug("symbolize: dwfl_begin: %s", dwfl_errmsg(-1));
        free(d);
        return NULL;
    }
    return d;
}

static int free_mod_data_cb(Dwfl_Module *mod, void **userdata, const char *name,
                            Dwarf_Addr start, void *arg)
{
    mod_data_free(*userdata);
    *userdata = NULL;
    return DWARF_CB_OK;
}

void sym_dwfl_free(sym_dwfl *d)
{
    if (d == NULL)
        return;
    dwfl_getmodules(d->dwfl, free_mod_data_cb, NULL, 0);
    dwfl_end(d->dwfl);
    for (int i = 0; i < d->nskips; i++) {
        free(d->skips[i].path);
        free(d->skips[i].dwarf);
    }
    free(d->skips);
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

/* Despite its void * type, the second argument is the module's userdata
 * slot (void **), as libdwfl passes MODCB_ARGS. */
static int removed_cb(Dwfl_Module *mod, void *userdata, const char *name, Dwarf_Addr base,
                      void *arg)
{
    void **slot = userdata;
    mod_data_free(*slot);
    *slot = NULL;
    return DWARF_CB_OK;
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
    if (dwfl_report_end(d->dwfl, removed_cb, NULL) != 0) {
        log_debug("symbolize: dwfl_report_end: %s", dwfl_errmsg(-1));
        return -EIO;
    }
    return 0;
}

/* ---- frames ----------------------------------------------------------------- */

/* The linkage (mangled) name, following DW_AT_abstract_origin and
 * DW_AT_specification; NULL when the producer gave none. */
static const char *die_linkage_name(Dwarf_Die *die)
{
    Dwarf_Attribute attr;
    const char *name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_linkage_name, &attr));
    if (name == NULL)
        name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &attr));
    return name;
}

static int is_cxx(Dwarf_Die *cudie)
{
    switch (dwarf_srclang(cudie)) {
    case DW_LANG_C_plus_plus:
    case DW_LANG_C_plus_plus_03:
    case DW_LANG_C_plus_plus_11:
    case DW_LANG_C_plus_plus_14:
        return 1;
    default:
        return 0;
    }
}

static int is_function(int tag)
{
    return tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine ||
           tag == DW_TAG_entry_point;
}

/* Turn a physical scope chain, innermost first, into frames: each
 * DW_TAG_inlined_subroutine is one frame whose caller's position is its
 * DW_AT_call_file/DW_AT_call_line; the first real subprogram ends the list
 * (as in addr2line -i). */
static int chain_frames(Dwarf_Die *chain, int nc, const char *file, int line, sym_raw_frame *out,
                        int max, int *outer_linkage)
{
    int n = 0;
    *outer_linkage = 0;
    for (int i = 0; i < nc && n < max; i++) {
        int tag = dwarf_tag(&chain[i]);
        if (!is_function(tag))
            continue;
        const char *linkage = die_linkage_name(&chain[i]);
        out[n].name = linkage != NULL ? linkage : dwarf_diename(&chain[i]);
        out[n].file = file;
        out[n].line = line;
        n++;
        if (tag != DW_TAG_inlined_subroutine) {
            *outer_linkage = linkage != NULL;
            break;
        }
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
    return n;
}

static int is_scope(int tag)
{
    switch (tag) {
    case DW_TAG_subprogram:
    case DW_TAG_inlined_subroutine:
    case DW_TAG_entry_point:
    case DW_TAG_lexical_block:
    case DW_TAG_try_block:
    case DW_TAG_catch_block:
    case DW_TAG_with_stmt:
        return 1;
    default:
        return 0;
    }
}

/* Scopes from fn down to the innermost one containing a, stored innermost
 * first in out[0..return). Only fn's own subtree is visited. */
static int descend(const Dwarf_Die *fn, Dwarf_Addr a, Dwarf_Die *out, int max)
{
    Dwarf_Die path[SYM_MAX_FRAMES * 2];
    int np = 0;
    path[np++] = *fn;
    for (;;) {
        Dwarf_Die child;
        int found = 0;
        if (np < (int)(sizeof path / sizeof path[0]) && dwarf_child(&path[np - 1], &child) == 0) {
            do {
                if (is_scope(dwarf_tag(&child)) && dwarf_haspc(&child, a) == 1) {
                    path[np++] = child;
                    found = 1;
                    break;
                }
            } while (dwarf_siblingof(&child, &child) == 0);
        }
        if (!found)
            break;
    }
    int n = np < max ? np : max;
    for (int i = 0; i < n; i++)
        out[i] = path[np - 1 - i];
    return n;
}

/* Slow path for DWARF the index does not cover: libdw's own scope search. */
static int getscopes_frames(Dwarf_Die *cudie, Dwarf_Addr a, const char *file, int line,
                            sym_raw_frame *out, int max, int *outer_linkage)
{
    *outer_linkage = 0;
    Dwarf_Die *scopes = NULL;
    int ns = dwarf_getscopes(cudie, a, &scopes);
    if (ns <= 0) {
        free(scopes);
        return 0;
    }
    /* dwarf_getscopes continues into the abstract origin's scopes past an
     * inlined instance; the caller chain is the physical nesting. */
    Dwarf_Die inner = scopes[0];
    free(scopes);
    Dwarf_Die *chain = NULL;
    int nc = dwarf_getscopes_die(&inner, &chain);
    int n = nc > 0 ? chain_frames(chain, nc, file, line, out, max, outer_linkage) : 0;
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
    struct mod_data *md = mod_data_get(mod);
    const char *file = NULL;
    int line = 0, n = 0, outer_linkage = 0, cxx = 0;
    Dwarf_Addr bias = 0;
    Dwarf_Die *cudie = dwarf_allowed(d, mod, md) ? dwfl_module_addrdie(mod, addr, &bias) : NULL;
    /* libdwfl also answers with the CU before an address that no CU covers
     * (padding, _start, crt files): only take a CU that has the address. */
    if (cudie != NULL && dwarf_haspc(cudie, addr - bias) != 1)
        cudie = NULL;
    if (cudie != NULL) {
        Dwarf_Addr a = addr - bias;
        Dwarf_Line *l = dwarf_getsrc_die(cudie, a);
        if (l != NULL) {
            file = dwarf_linesrc(l, NULL, NULL);
            if (dwarf_lineno(l, &line) != 0)
                line = 0;
        } else {
            /* addr2line's answer when a CU covers the address but its line
             * table does not: the CU's file, line 0. */
            file = dwarf_diename(cudie);
        }
        struct cu_fns *c = md != NULL ? cu_index(md, cudie) : NULL;
        const struct fn_range *fr = c != NULL ? fn_find(c, a) : NULL;
        if (fr != NULL) {
            Dwarf_Die chain[SYM_MAX_FRAMES * 2];
            int nc = descend(&fr->die, a, chain, (int)(sizeof chain / sizeof chain[0]));
            n = chain_frames(chain, nc, file, line, out, max, &outer_linkage);
        } else {
            n = getscopes_frames(cudie, a, file, line, out, max, &outer_linkage);
        }
        cxx = n > 0 && !outer_linkage && is_cxx(cudie);
    }
    if (n == 0 || out[n - 1].name == NULL || cxx) {
        /* No DWARF here (stripped, or separate debuginfo not installed), or
         * a nameless subprogram: the ELF symbol table still names it.
         * And when GCC gave a C++ function no linkage name (templates over
         * local types, lambdas, clones), its DW_AT_name lacks scope and
         * parameters; the mangled symbol has them, and addr2line uses it. */
        const char *sym_file;
        const char *name = sym_lookup(mod, md, addr, &sym_file);
        if (n == 0) {
            out[0].file = file != NULL ? file : sym_file;
            out[0].line = line;
            out[0].name = name;
            n = 1;
        } else if (out[n - 1].name == NULL || (name != NULL && name[0] == '_' && name[1] == 'Z')) {
            out[n - 1].name = name;
        }
    }
    return n;
}

static int memory_cb(Dwfl_Module *mod, void **userdata, const char *name, Dwarf_Addr start,
                     void *arg)
{
    const struct mod_data *md = *userdata;
    size_t *total = arg;
    if (md != NULL) {
        *total += sizeof *md + md->nsyms * sizeof *md->syms + md->nvbytes +
                  md->nsec * sizeof *md->sec_end +
                  md->nfiles * sizeof *md->files + md->capcus * sizeof *md->cus;
        for (size_t i = 0; i < md->ncus; i++)
            *total += md->cus[i].n * sizeof *md->cus[i].v;
    }
    return DWARF_CB_OK;
}

void sym_dwfl_set_dwarf_limit(sym_dwfl *d, uint64_t max_bytes)
{
    d->dwarf_max = max_bytes;
}

int sym_dwfl_dwarf_skipped(const sym_dwfl *d, int i, const char **path, const char **dwarf,
                           uint64_t *bytes)
{
    if (i < 0 || i >= d->nskips)
        return -1;
    *path = d->skips[i].path;
    *dwarf = d->skips[i].dwarf;
    *bytes = d->skips[i].bytes;
    return 0;
}

size_t sym_dwfl_memory(sym_dwfl *d)
{
    size_t total = sizeof *d + (size_t)d->capskips * sizeof *d->skips;
    for (int i = 0; i < d->nskips; i++)
        total += strlen(d->skips[i].path) + strlen(d->skips[i].dwarf) + 2;
    dwfl_getmodules(d->dwfl, memory_cb, &total, 0);
    return total;
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
