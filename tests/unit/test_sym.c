/* tests/unit/test_sym.c — unit test of symbolize/ against this very binary
 * (built -O2 -g), a library dlopen'd after the context was made, libc, the
 * vdso and libstdc++. Prints TAP; exits non-zero if any check failed.
 * Timings are printed as "# perf:" comments, never asserted. */
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "symbolize/sym.h"
#include "symbolize/sym_maps.h" /* internal: the maps parser, fed odd input */

/* ---- TAP ------------------------------------------------------------------ */

static int ntests, nfailed;

__attribute__((format(printf, 2, 3))) static int check(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%sok %d - ", cond ? "" : "not ", ++ntests);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!cond)
        nfailed++;
    fflush(stdout);
    return cond;
}

__attribute__((format(printf, 1, 2))) static void skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("ok %d - ", ++ntests);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void show(const char *what, const sym_frame *f, int n)
{
    for (int i = 0; i < n; i++)
        printf("#   %s[%d] %s (%s) %s:%d\n", what, i, f[i].name, f[i].system_name, f[i].file,
               f[i].line);
}

/* ---- zlib's inflate, counted -------------------------------------------------
 *
 * libdw inflates compressed DWARF through libelf's elf_compress, which calls
 * zlib's inflate. This binary defines (and exports, see the Makefile) its own
 * inflate, so the loader binds libelf's calls here: the count says whether
 * symbolization inflated anything. */

static long n_inflate;

int inflate(z_streamp strm, int flush)
{
    static int (*real)(z_streamp, int);
    if (real == NULL)
        real = (int (*)(z_streamp, int))dlsym(RTLD_NEXT, "inflate");
    n_inflate++;
    return real != NULL ? real(strm, flush) : Z_STREAM_ERROR;
}

/* ---- code the checks look at -------------------------------------------------- */

volatile int sink;
static int inline_line, caller_line, ret_line;
static uint64_t ret_ra;

__attribute__((noipa)) int plain_function(int x)
{
    return x * 3 + sink;
}

__attribute__((noipa)) static int static_function(int x)
{
    return x * 5 + sink;
}

__attribute__((noipa)) static uint64_t capture_ra(void)
{
    return (uint64_t)(uintptr_t)__builtin_extract_return_addr(__builtin_return_address(0));
}

/* The call and the __LINE__ capture share one line; sink++ afterwards keeps
 * the call from becoming a tail call. */
static inline __attribute__((always_inline)) uint64_t inlined_function(void)
{
    inline_line = __LINE__; uint64_t ra = capture_ra();
    sink++;
    return ra;
}

__attribute__((noipa)) static uint64_t inline_caller(void)
{
    caller_line = __LINE__; uint64_t ra = inlined_function();
    sink++;
    return ra;
}

__attribute__((noipa)) static void capture_ra_into(void)
{
    ret_ra = (uint64_t)(uintptr_t)__builtin_extract_return_addr(__builtin_return_address(0));
}

/* The instruction after the call (the return address) belongs to the next
 * line, so only a pc - 1 lookup lands on ret_line. */
__attribute__((noipa)) static void ret_caller(void)
{
    ret_line = __LINE__; capture_ra_into();
    sink = 42;
}

/* ---- reading ELF files independently of the code under test ----------------------- */

static int read_phdrs(int fd, Elf64_Ehdr *eh, Elf64_Phdr *ph, int max)
{
    if (pread(fd, eh, sizeof *eh, 0) != (ssize_t)sizeof *eh ||
        memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum > max)
        return -1;
    for (int i = 0; i < eh->e_phnum; i++)
        if (pread(fd, &ph[i], sizeof ph[i], (off_t)(eh->e_phoff + (uint64_t)i * sizeof ph[i])) !=
            (ssize_t)sizeof ph[i])
            return -1;
    return eh->e_phnum;
}

/* GNU build id from the file's PT_NOTE segments, as `readelf -n` shows it. */
static int file_build_id(const char *path, char *out, size_t outsz)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    Elf64_Ehdr eh;
    Elf64_Phdr ph[64];
    int n = read_phdrs(fd, &eh, ph, 64), rc = -1;
    for (int i = 0; i < n && rc != 0; i++) {
        if (ph[i].p_type != PT_NOTE || ph[i].p_filesz > 65536)
            continue;
        unsigned char buf[65536];
        size_t sz = ph[i].p_filesz, align = ph[i].p_align == 8 ? 8 : 4, off = 0;
        if (pread(fd, buf, sz, (off_t)ph[i].p_offset) != (ssize_t)sz)
            continue;
        while (off + sizeof(Elf64_Nhdr) <= sz) {
            Elf64_Nhdr nh;
            memcpy(&nh, buf + off, sizeof nh);
            size_t name = off + sizeof nh;
            size_t desc = name + ((nh.n_namesz + align - 1) & ~(align - 1));
            size_t next = desc + ((nh.n_descsz + align - 1) & ~(align - 1));
            if (next > sz)
                break;
            if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
                memcmp(buf + name, "GNU", 4) == 0 && 2 * nh.n_descsz < outsz) {
                for (size_t k = 0; k < nh.n_descsz; k++)
                    snprintf(out + 2 * k, 3, "%02x", buf[desc + k]);
                rc = 0;
                break;
            }
            off = next;
        }
    }
    close(fd);
    return rc;
}

/* Link-time address of a file offset inside an executable PT_LOAD, or 0. */
static uint64_t file_offset_to_vaddr(const char *path, uint64_t off)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    Elf64_Ehdr eh;
    Elf64_Phdr ph[64];
    int n = read_phdrs(fd, &eh, ph, 64);
    close(fd);
    for (int i = 0; i < n; i++)
        if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_X) && off >= ph[i].p_offset &&
            off < ph[i].p_offset + ph[i].p_filesz)
            return off - ph[i].p_offset + ph[i].p_vaddr;
    return 0;
}

/* Uncompressed size of a file's .debug_* sections, read here independently
 * of the code under test (section headers, and each SHF_COMPRESSED section's
 * Elf64_Chdr); *compressed counts the sections stored compressed. -1 on error. */
static long long file_debug_bytes(const char *path, int *compressed)
{
    *compressed = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    Elf64_Ehdr eh;
    long long total = -1;
    if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum == 0 ||
        eh.e_shnum > 4096 || eh.e_shstrndx >= eh.e_shnum)
        goto out;
    static Elf64_Shdr sh[4096];
    if (pread(fd, sh, eh.e_shnum * sizeof *sh, (off_t)eh.e_shoff) != (ssize_t)(eh.e_shnum * sizeof *sh))
        goto out;
    total = 0;
    for (int i = 0; i < eh.e_shnum; i++) {
        char name[32] = "";
        if (pread(fd, name, sizeof name - 1, (off_t)(sh[eh.e_shstrndx].sh_offset + sh[i].sh_name)) < 0 ||
            strncmp(name, ".debug_", 7) != 0 || sh[i].sh_type == SHT_NOBITS)
            continue;
        if (sh[i].sh_flags & SHF_COMPRESSED) {
            Elf64_Chdr ch;
            if (pread(fd, &ch, sizeof ch, (off_t)sh[i].sh_offset) != (ssize_t)sizeof ch) {
                total = -1;
                goto out;
            }
            total += (long long)ch.ch_size;
            (*compressed)++;
        } else {
            total += (long long)sh[i].sh_size;
        }
    }
out:
    close(fd);
    return total;
}

/* Address of a dynamic symbol of the vdso, read from its image in memory
 * (the whole ELF file is mapped there, section headers included). */
static uint64_t vdso_symbol(uint64_t base, uint64_t limit, const char *want)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)(uintptr_t)base;
    if (limit - base < sizeof *eh || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
        eh->e_shentsize != sizeof(Elf64_Shdr) ||
        eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > limit - base)
        return 0;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(uintptr_t)(base + eh->e_shoff);
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(uintptr_t)(base + eh->e_phoff);
    uint64_t bias = base;
    for (int i = 0; i < eh->e_phnum; i++)
        if (ph[i].p_type == PT_LOAD) {
            bias = base - ph[i].p_vaddr;
            break;
        }
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNSYM || sh[i].sh_link >= eh->e_shnum)
            continue;
        const Elf64_Sym *sym = (const Elf64_Sym *)(uintptr_t)(base + sh[i].sh_offset);
        const char *str = (const char *)(uintptr_t)(base + sh[sh[i].sh_link].sh_offset);
        for (size_t k = 0; k < sh[i].sh_size / sizeof *sym; k++)
            if (sym[k].st_value != 0 && strcmp(str + sym[k].st_name, want) == 0)
                return bias + sym[k].st_value;
    }
    return 0;
}

static int copy_file(const char *from, int to_fd)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -1;
    char buf[65536];
    ssize_t r;
    while ((r = read(in, buf, sizeof buf)) > 0)
        if (write(to_fd, buf, (size_t)r) != r) {
            r = -1;
            break;
        }
    close(in);
    return r < 0 ? -1 : 0;
}

/* Open descriptors as a bitmap over 0..1023. */
static void open_fds(unsigned char *set)
{
    memset(set, 0, 1024);
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd != dirfd(d) && fd >= 0 && fd < 1024)
            set[fd] = 1;
    }
    closedir(d);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- addr2line cross-check ------------------------------------------------------- */

/* Compare our frames with binutils' `addr2line -a -i -f -C` for many pcs of
 * this binary's text. Returns mismatches, or -1 when addr2line is missing. */
static int cross_check_addr2line(sym_ctx *ctx, const char *exe, const sym_mapping *m,
                                 int *compared)
{
    if (access("/usr/bin/addr2line", X_OK) != 0)
        return -1;
    enum { N = 400 };
    static uint64_t pcs[N], vaddrs[N];
    int n = 0;
    uint64_t step = (m->limit - m->start) / N;
    if (step < 1)
        step = 1;
    char cmd[65536];
    size_t len = (size_t)snprintf(cmd, sizeof cmd, "/usr/bin/addr2line -a -i -f -C -e '%s'", exe);
    for (uint64_t pc = m->start + step / 2; pc < m->limit && n < N; pc += step) {
        uint64_t va = file_offset_to_vaddr(exe, pc - m->start + m->offset);
        if (va == 0)
            continue;
        pcs[n] = pc;
        vaddrs[n] = va;
        len += (size_t)snprintf(cmd + len, sizeof cmd - len, " 0x%llx", (unsigned long long)va);
        n++;
    }
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    char line[4096];
    int idx = -1, depth = 0, bad = 0, skip_this = 0;
    sym_frame f[64];
    int nf = 0;
    char fn[4096] = "";
    *compared = 0;
    while (fgets(line, sizeof line, p) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "0x", 2) == 0) {
            if (idx >= 0 && !skip_this && depth != nf) {
                printf("# addr2line: pc 0x%llx: %d frames there, %d here\n",
                       (unsigned long long)vaddrs[idx], depth, nf);
                show("ours", f, nf);
                bad++;
            }
            idx++;
            depth = 0;
            skip_this = 0;
            if (idx >= n)
                break;
            nf = sym_resolve(ctx, pcs[idx], 0, f, 64, NULL);
            continue;
        }
        if (idx < 0 || idx >= n)
            continue;
        if (fn[0] == '\0') {
            snprintf(fn, sizeof fn, "%s", line);
            continue;
        }
        /* line is "file:line" or "file:line (discriminator N)" */
        char *disc = strstr(line, " (discriminator");
        if (disc)
            *disc = '\0';
        char *colon = strrchr(line, ':');
        int ln = colon && colon[1] != '?' ? atoi(colon + 1) : 0;
        if (colon)
            *colon = '\0';
        if (strcmp(fn, "??") == 0 && depth == 0)
            skip_this = 1; /* no DWARF function there: addr2line has nothing to say */
        if (!skip_this) {
            (*compared)++;
            const char *want_file = strcmp(line, "??") == 0 ? "" : base_name(line);
            if (depth >= nf || strcmp(f[depth].name, fn) != 0 || f[depth].line != ln ||
                strcmp(base_name(f[depth].file), want_file) != 0) {
                printf("# addr2line: pc 0x%llx frame %d: %s %s:%d there, %s %s:%d here\n",
                       (unsigned long long)vaddrs[idx], depth, fn, want_file, ln,
                       depth < nf ? f[depth].name : "-", depth < nf ? f[depth].file : "-",
                       depth < nf ? f[depth].line : -1);
                bad++;
                skip_this = 1;
            }
        }
        depth++;
        fn[0] = '\0';
    }
    if (idx >= 0 && idx < n && !skip_this && depth != nf)
        bad++;
    pclose(p);
    return bad;
}

/* ---- the checks --------------------------------------------------------------------- */

static void check_maps_parser(void)
{
    static const char text[] =
        "00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon\n"
        "7f0000000000-7f0000001000 r-xp 00001000 fd:01 42 /dir with spaces/lib x.so (deleted)\n"
        "7f0000002000-7f0000003000 rwxp 00000000 00:00 0 \n"
        "garbage line\n"
        "\n"
        "7f0000005000-7f0000004000 r-xp 00000000 00:00 0\n"
        "12345678901234567-7f0000009000 r-xp 00000000 00:00 0 /too/long/hex\n"
        "7f000000a000-7f000000b000 r-x\n"
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"
        "7f0000006000-7f0000007000 r--p 0000a000 08:02 173521 /no/newline/at/end";
    sym_maps m = {0};
    m.text = malloc(sizeof text);
    memcpy(m.text, text, sizeof text);
    m.len = m.cap = sizeof text - 1;
    int rc = sym_maps_parse(&m);
    int ok = rc == 0 && m.n == 5;
    static const struct {
        uint64_t start, offset;
        int exec;
        const char *path;
    } want[5] = {
        {0x400000, 0, 1, "/usr/bin/dbus-daemon"},
        {0x7f0000000000, 0x1000, 1, "/dir with spaces/lib x.so (deleted)"},
        {0x7f0000002000, 0, 1, ""},
        {0xffffffffff600000, 0, 1, "[vsyscall]"},
        {0x7f0000006000, 0xa000, 0, "/no/newline/at/end"},
    };
    for (int i = 0; ok && i < 5; i++)
        ok = m.lines[i].start == want[i].start && m.lines[i].offset == want[i].offset &&
             m.lines[i].exec == want[i].exec && m.lines[i].path_len == strlen(want[i].path) &&
             memcmp(m.lines[i].path, want[i].path, m.lines[i].path_len) == 0;
    check(ok && m.lines[0].inode == 173521 && m.lines[1].dev_major == 0xfd,
          "maps parser: odd paths kept, malformed lines skipped (%d lines)", m.n);
    sym_maps_release(&m);
}

int main(void)
{
    sym_frame f[16];
    const sym_mapping *m = NULL;
    char exe[PATH_MAX];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (el <= 0) {
        printf("Bail out! readlink /proc/self/exe: %s\n", strerror(errno));
        return 1;
    }
    exe[el] = '\0';

    static unsigned char fds_before[1024], fds_after[1024];
    open_fds(fds_before);
    check_maps_parser();

    uint64_t t0 = now_ns();
    sym_ctx *ctx = sym_new();
    uint64_t t_new = now_ns() - t0;
    if (!check(ctx != NULL, "sym_new"))
        return 1;
    printf("# perf: sym_new %.1f us, %d mappings\n", t_new / 1e3, sym_mapping_count(ctx));

    /* plain function */
    t0 = now_ns();
    int n = sym_resolve(ctx, (uint64_t)(uintptr_t)&plain_function, 0, f, 16, &m);
    printf("# perf: first resolve (loads DWARF of this binary) %.1f us\n", (now_ns() - t0) / 1e3);
    show("plain", f, n);
    check(n == 1 && strcmp(f[0].name, "plain_function") == 0, "plain function name");
    check(n >= 1 && f[0].name == f[0].system_name, "C name: name == system_name");
    check(n >= 1 && strcmp(base_name(f[0].file), "test_sym.c") == 0 && f[0].line > 0,
          "plain function file:line (%s:%d)", n >= 1 ? f[0].file : "", n >= 1 ? f[0].line : 0);
    check(m != NULL && strcmp(m->path, exe) == 0, "mapping path is the executable (%s)",
          m ? m->path : "NULL");
    const char *kept_name = n >= 1 ? f[0].name : "";
    const sym_mapping *exe_map = m;
    if (exe_map == NULL) {
        printf("Bail out! no mapping for this executable's own text\n");
        return 1;
    }

    /* mapping offset: pc - start + offset is the file offset of pc */
    {
        Dl_info di;
        uint64_t pc = (uint64_t)(uintptr_t)&plain_function;
        uint64_t va = m ? file_offset_to_vaddr(exe, pc - m->start + m->offset) : 0;
        int ok = m && dladdr((void *)(uintptr_t)pc, &di) && va != 0 &&
                 pc - (uint64_t)(uintptr_t)di.dli_fbase == va;
        check(ok, "mapping offset maps pc to its link-time address");
        check(m && sym_mapping_get(ctx, m->index) == m, "mapping index is stable");
    }

    /* build id of the executable, read from the file's note */
    {
        char want[200] = "";
        int rc = file_build_id(exe, want, sizeof want);
        check(rc == 0 && m && strcmp(m->build_id, want) == 0, "executable build id %s == %s",
              m ? m->build_id : "NULL", want);
    }

    /* static function */
    n = sym_resolve(ctx, (uint64_t)(uintptr_t)&static_function, 0, f, 16, NULL);
    check(n == 1 && strcmp(f[0].name, "static_function") == 0, "static function name (%s)",
          n ? f[0].name : "");

    /* inlined function: own frame, then its caller at the call line */
    {
        uint64_t ra = inline_caller();
        n = sym_resolve(ctx, ra, 1, f, 16, &m);
        show("inline", f, n);
        check(n == 2, "inlined pc gives 2 frames (%d)", n);
        check(n >= 1 && strcmp(f[0].name, "inlined_function") == 0 &&
                  strcmp(base_name(f[0].file), "test_sym.c") == 0 && f[0].line == inline_line,
              "frame 0 is inlined_function at test_sym.c:%d", inline_line);
        check(n >= 2 && strcmp(f[1].name, "inline_caller") == 0 &&
                  strcmp(base_name(f[1].file), "test_sym.c") == 0 && f[1].line == caller_line,
              "frame 1 is inline_caller at test_sym.c:%d (call site)", caller_line);
        sym_frame g[1];
        int n1 = sym_resolve(ctx, ra, 1, g, 1, NULL);
        check(n1 == 1 && g[0].name == f[0].name, "max = 1 gives the innermost frame only");
        sym_frame h[16];
        int n2 = sym_resolve(ctx, ra, 1, h, 16, NULL);
        int same = n2 == n;
        for (int i = 0; same && i < n; i++)
            same = h[i].name == f[i].name && h[i].system_name == f[i].system_name &&
                   h[i].file == f[i].file && h[i].line == f[i].line;
        check(same, "cached result is identical (same pointers)");
    }

    /* return address: pc - 1 finds the call's line */
    {
        ret_caller();
        n = sym_resolve(ctx, ret_ra, 1, f, 16, NULL);
        show("ret", f, n);
        check(n == 1 && strcmp(f[0].name, "ret_caller") == 0 && f[0].line == ret_line,
              "return address resolves to the call line %d (got %d)", ret_line,
              n ? f[0].line : 0);
        n = sym_resolve(ctx, ret_ra, 0, f, 16, NULL);
        check(n == 1 && f[0].line != ret_line,
              "premise: the return address itself is on another line (%d)", n ? f[0].line : 0);
    }

    /* unknown addresses */
    n = sym_resolve(ctx, 16, 0, f, 16, &m);
    check(n == 0 && m == NULL, "unknown address gives 0 frames and no mapping");
    n = sym_resolve(ctx, 16, 0, f, 16, &m);
    check(n == 0 && m == NULL, "unknown address again (negative cache) gives 0");
    check(sym_resolve(ctx, 0, 1, f, 16, &m) == 0, "return address 0 gives 0");
    check(sym_resolve(NULL, 16, 0, f, 16, &m) == 0 && sym_resolve(ctx, 16, 0, NULL, 0, NULL) == 0,
          "NULL ctx / NULL frames are harmless");

    /* libc: stripped of .symtab, named from .dynsym */
    n = sym_resolve(ctx, (uint64_t)(uintptr_t)&getpid, 0, f, 16, &m);
    check(n >= 1 && f[0].name[0] != '\0' && m && strstr(m->path, "libc.so") != NULL &&
              m->build_id[0] != '\0',
          "libc function: %s in %s", n ? f[0].name : "", m ? m->path : "NULL");

    /* library dlopen'd after sym_new */
    {
        char lib[PATH_MAX];
        snprintf(lib, sizeof lib, "%.*s/libsymtest_dl.so", (int)(strrchr(exe, '/') - exe), exe);
        int before = sym_mapping_count(ctx);
        void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
        if (!check(h != NULL, "dlopen %s", lib)) {
            printf("# %s\n", dlerror());
        } else {
            uint64_t pc = (uint64_t)(uintptr_t)dlsym(h, "symtest_dl_function");
            void (*call)(void (*)(void)) = (void (*)(void (*)(void)))dlsym(h, "symtest_dl_call");
            const int *want_line = dlsym(h, "symtest_dl_call_line");
            n = sym_resolve(ctx, pc, 0, f, 16, &m);
            show("dl", f, n);
            check(n == 1 && strcmp(f[0].name, "symtest_dl_function") == 0,
                  "function of a library dlopen'd after sym_new");
            if (call && want_line) {
                call(capture_ra_into);
                n = sym_resolve(ctx, ret_ra, 1, f, 16, NULL);
                show("dl call", f, n);
            }
            check(call && want_line && n == 1 && strcmp(f[0].name, "symtest_dl_call") == 0 &&
                      strcmp(base_name(f[0].file), "symtest_dl.c") == 0 && f[0].line == *want_line,
                  "a call site in it: symtest_dl_call at symtest_dl.c:%d",
                  want_line ? *want_line : 0);
            char want[200] = "";
            file_build_id(lib, want, sizeof want);
            check(m && ends_with(m->path, "/libsymtest_dl.so") && strcmp(m->build_id, want) == 0,
                  "its mapping %s, build id %s", m ? m->path : "NULL", m ? m->build_id : "");
            check(sym_mapping_count(ctx) > before, "mapping count grew (%d -> %d)", before,
                  sym_mapping_count(ctx));
            check(strcmp(kept_name, "plain_function") == 0 && strcmp(exe_map->path, exe) == 0,
                  "strings handed out before the refresh are intact");
            const sym_mapping *dlm = m;
            dlclose(h);
            int rc = sym_refresh(ctx);
            n = sym_resolve(ctx, pc, 0, f, 16, &m);
            check(rc == 0 && n == 0 && m == NULL, "after dlclose + refresh its pc is unknown");
            check(dlm && ends_with(dlm->path, "/libsymtest_dl.so") &&
                      sym_mapping_get(ctx, dlm->index) == dlm,
                  "the dead mapping keeps its index and strings");
        }

        /* a deleted library: no file to read, must not crash; build id from memory */
        char tmp[] = "/tmp/symtest_deleted_XXXXXX.so";
        int fd = mkstemps(tmp, 3);
        if (fd >= 0 && copy_file(lib, fd) == 0) {
            close(fd);
            h = dlopen(tmp, RTLD_NOW | RTLD_LOCAL);
            unlink(tmp);
            if (h != NULL) {
                uint64_t pc = (uint64_t)(uintptr_t)dlsym(h, "symtest_dl_function");
                n = sym_resolve(ctx, pc, 0, f, 16, &m);
                show("deleted", f, n);
                char want[200] = "";
                file_build_id(lib, want, sizeof want);
                check(n >= 1 && m && ends_with(m->path, " (deleted)") &&
                          strcmp(m->build_id, want) == 0,
                      "deleted library: %d frame(s), path '%s', build id from memory",
                      n, m ? m->path : "NULL");
                dlclose(h);
            } else {
                check(0, "dlopen copy %s: %s", tmp, dlerror());
            }
        } else {
            if (fd >= 0) {
                close(fd);
                unlink(tmp);
            }
            skip("deleted library # SKIP cannot write %s", tmp);
        }
    }

    /* a stripped library: named from .dynsym, no file:line */
    {
        char lib[PATH_MAX], tmp[] = "/tmp/symtest_stripped_XXXXXX.so", cmd[2 * PATH_MAX + 64];
        snprintf(lib, sizeof lib, "%.*s/libsymtest_dl.so", (int)(strrchr(exe, '/') - exe), exe);
        int fd = access("/usr/bin/strip", X_OK) == 0 ? mkstemps(tmp, 3) : -1;
        if (fd < 0) {
            skip("stripped library # SKIP no strip(1) or no /tmp");
        } else {
            close(fd);
            snprintf(cmd, sizeof cmd, "/usr/bin/strip --strip-all -o '%s' '%s'", tmp, lib);
            void *h = system(cmd) == 0 ? dlopen(tmp, RTLD_NOW | RTLD_LOCAL) : NULL;
            uint64_t pc = h ? (uint64_t)(uintptr_t)dlsym(h, "symtest_dl_function") : 0;
            n = pc ? sym_resolve(ctx, pc + 1, 0, f, 16, &m) : 0;
            unlink(tmp);
            show("stripped", f, n);
            check(n == 1 && strcmp(f[0].name, "symtest_dl_function") == 0 && f[0].file[0] == '\0' &&
                      f[0].line == 0,
                  "stripped library: %s from .dynsym, no line", n ? f[0].name : "");
            if (h)
                dlclose(h);
        }
    }

    /* vdso */
    {
        uint64_t vdso = getauxval(AT_SYSINFO_EHDR);
        if (vdso == 0) {
            skip("vdso # SKIP no vdso in this process (valgrind?)");
        } else {
            n = sym_resolve(ctx, vdso, 0, f, 16, &m);
            check(n >= 1 && m && strcmp(m->path, "[vdso]") == 0, "vdso pc is in mapping [vdso]");
            uint64_t fn = m ? vdso_symbol(vdso, m->limit, "__vdso_clock_gettime") : 0;
            n = fn ? sym_resolve(ctx, fn, 0, f, 16, &m) : 0;
            show("vdso", f, n);
            check(n >= 1 && strstr(f[0].name, "clock_gettime") != NULL,
                  "vdso symbol name (%s)", n ? f[0].name : "");
        }
    }

    /* C++ demangling, with libstdc++ found at run time */
    {
        int had = dlsym(RTLD_DEFAULT, "__cxa_demangle") != NULL;
        char buf[256];
        int rc = sym_demangle("_ZN2ns3Cls6methodEi", buf, sizeof buf);
        void *cxx = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD);
        if (rc == 0 && cxx == NULL) {
            skip("demangle # SKIP libstdc++.so.6 not installed");
        } else {
            check(rc == 1 && strcmp(buf, "ns::Cls::method(int)") == 0,
                  "demangle _ZN2ns3Cls6methodEi -> %s (demangler %s)", buf,
                  had ? "already in process" : "dlopen'd libstdc++");
            check(sym_demangle("plain_function", buf, sizeof buf) == 0 &&
                      strcmp(buf, "plain_function") == 0,
                  "a C name is left alone");
            check(sym_demangle("_ZN2ns3Cls6methodEi", buf, 8) == 1 && strcmp(buf, "ns::Cls") == 0,
                  "demangle truncates to the buffer");
            /* a C++ function in a library loaded after sym_new, named from .dynsym */
            void *dtor = cxx ? dlsym(cxx, "_ZNSt9exceptionD2Ev") : NULL;
            n = dtor ? sym_resolve(ctx, (uint64_t)(uintptr_t)dtor, 0, f, 16, &m) : 0;
            show("cxx", f, n);
            check(n >= 1 && strcmp(f[0].name, "std::exception::~exception()") == 0 &&
                      strncmp(f[0].system_name, "_ZNSt9exceptionD", 16) == 0,
                  "C++ symbol demangled: %s (%s)", n ? f[0].name : "", n ? f[0].system_name : "");
        }
        if (cxx)
            dlclose(cxx);
    }

    /* every pc of our own text resolves, and matches addr2line */
    {
        m = exe_map;
        int bad = 0, total = 0;
        for (uint64_t pc = m->start; pc < m->limit; pc += 4) {
            n = sym_resolve(ctx, pc, 0, f, 16, NULL);
            bad += n < 1;
            total++;
        }
        check(bad == 0, "all %d pcs of the text mapping give >= 1 frame", total);
        int compared = 0;
        int mism = cross_check_addr2line(ctx, exe, exe_map, &compared);
        if (mism < 0)
            skip("frames match addr2line -i # SKIP addr2line not available");
        else
            check(mism == 0 && compared > 0, "frames match addr2line -i -f -C (%d frames compared)",
                  compared);
    }

    /* libdw keeps files open: they must not leak into programs the host execs */
    {
        open_fds(fds_after);
        int held = 0, leaky = 0;
        for (int fd = 0; fd < 1024; fd++)
            if (fds_after[fd] && !fds_before[fd]) {
                held++;
                leaky += !(fcntl(fd, F_GETFD) & FD_CLOEXEC);
            }
        check(leaky == 0, "descriptors held by symbolization are close-on-exec (%d held)", held);
    }

    /* bounded cache: tiny limit, same answers */
    {
        enum { NPC = 200 };
        static uint64_t pcs[NPC];
        static const char *names[NPC];
        static int lines[NPC];
        m = exe_map;
        uint64_t step = (m->limit - m->start) / NPC;
        for (int i = 0; i < NPC; i++) {
            pcs[i] = m->start + (uint64_t)i * step;
            n = sym_resolve(ctx, pcs[i], 0, f, 16, NULL);
            names[i] = n ? f[0].name : NULL;
            lines[i] = n ? f[0].line : -1;
        }
        size_t mem_big = sym_memory(ctx);
        check(sym_set_cache_limit(ctx, 8) == 0, "sym_set_cache_limit 8");
        int same = 1;
        for (int round = 0; round < 3; round++)
            for (int i = 0; i < NPC; i++) {
                n = sym_resolve(ctx, pcs[i], 0, f, 16, NULL);
                if (n < 1 || f[0].name != names[i] || f[0].line != lines[i])
                    same = 0;
            }
        size_t mem_small = sym_memory(ctx);
        check(same, "with an 8-entry cache, results are unchanged");
        check(mem_small < mem_big, "memory shrinks with the cache (%zu -> %zu bytes)", mem_big,
              mem_small);
        sym_set_cache_limit(ctx, 32768);
    }

    /* rough timings */
    {
        enum { NPC = 2000 };
        static uint64_t pcs[NPC];
        const sym_mapping *libc = NULL;
        sym_resolve(ctx, (uint64_t)(uintptr_t)&getpid, 0, f, 16, &libc);
        const sym_mapping *maps[2] = {exe_map, libc};
        const char *what[2] = {"this binary", "libc"};
        for (int k = 0; k < 2; k++) {
            if (maps[k] == NULL)
                continue;
            uint64_t step = (maps[k]->limit - maps[k]->start) / NPC;
            for (int i = 0; i < NPC; i++)
                pcs[i] = maps[k]->start + (uint64_t)i * step + 1;
            uint64_t t[4];
            t[0] = now_ns();
            for (int i = 0; i < NPC; i++)
                sym_resolve(ctx, pcs[i], 0, f, 16, NULL);
            t[1] = now_ns();
            sym_set_cache_limit(ctx, 32768); /* drops the cache, keeps libdw's data */
            for (int i = 0; i < NPC; i++)
                sym_resolve(ctx, pcs[i], 0, f, 16, NULL);
            t[2] = now_ns();
            for (int r = 0; r < 10; r++)
                for (int i = 0; i < NPC; i++)
                    sym_resolve(ctx, pcs[i], 0, f, 16, NULL);
            t[3] = now_ns();
            printf("# perf: %s, %d pcs: first touch %.0f ns/lookup, uncached %.0f ns/lookup, "
                   "cached %.0f ns/lookup\n",
                   what[k], NPC, (double)(t[1] - t[0]) / NPC, (double)(t[2] - t[1]) / NPC,
                   (double)(t[3] - t[2]) / (10.0 * NPC));
        }
        printf("# perf: sym_memory %zu bytes\n", sym_memory(ctx));
    }

    /* DWARF limit, default: libc's detached DWARF (libc6-dbg, ~10 MB
     * uncompressed) is over it, so nothing above inflated it */
    {
        const sym_mapping *libc = NULL;
        n = sym_resolve(ctx, (uint64_t)(uintptr_t)&getpid, 0, f, 16, &libc);
        char dbg[PATH_MAX] = "";
        if (libc != NULL && libc->build_id[0] != '\0')
            snprintf(dbg, sizeof dbg, "/usr/lib/debug/.build-id/%.2s/%s.debug", libc->build_id,
                     libc->build_id + 2);
        int compressed = 0;
        long long want = dbg[0] ? file_debug_bytes(dbg, &compressed) : -1;
        if (want <= (long long)SYM_DWARF_MAX_DEFAULT) {
            skip("default limit skips libc's DWARF # SKIP no libc6-dbg over %u bytes (%s)",
                 SYM_DWARF_MAX_DEFAULT, dbg[0] ? dbg : "libc has no build id");
        } else {
            sym_dwarf_skip k = {0};
            int found = 0;
            for (int i = 0; sym_dwarf_skipped(ctx, i, &k) == 0; i++)
                if (strstr(k.path, "libc.so") != NULL) {
                    found = 1;
                    break;
                }
            check(found && (long long)k.bytes == want && strcmp(k.dwarf, dbg) == 0,
                  "libc listed as named from its symbol table: %lld bytes of DWARF in %s (%s, %llu)",
                  want, dbg, found ? k.dwarf : "not listed", (unsigned long long)k.bytes);
            check(n >= 1 && f[0].name[0] != '\0' && f[0].line == 0 && strchr(f[0].name, '@') == NULL,
                  "libc function still named, without a line: %s", n ? f[0].name : "");
            /* libc6-dbg's .symtab spells it "__libc_start_main@@GLIBC_2.34" */
            void *lsm = dlsym(RTLD_DEFAULT, "__libc_start_main");
            n = lsm ? sym_resolve(ctx, (uint64_t)(uintptr_t)lsm, 0, f, 16, NULL) : 0;
            check(n >= 1 && strcmp(f[0].name, "__libc_start_main") == 0,
                  "a versioned .symtab name loses its @VERSION: %s", n ? f[0].name : "");
            if (compressed > 0)
                check(n_inflate == 0,
                      "nothing inflated: libc6-dbg's %d compressed sections left alone (%ld inflate calls)",
                      compressed, n_inflate);
            else
                skip("nothing inflated # SKIP libc6-dbg's DWARF is not compressed here");
            /* control: with room for it, the same lookup reads (and inflates) it */
            sym_ctx *big = sym_new();
            long before = n_inflate;
            sym_set_dwarf_limit(big, 1ull << 30);
            n = big ? sym_resolve(big, (uint64_t)(uintptr_t)&getpid, 0, f, 16, NULL) : 0;
            show("libc with DWARF", f, n);
            check(n >= 1 && f[0].line > 0 && (compressed == 0 || n_inflate > before),
                  "control: a 1 GB limit reads libc's DWARF (line %d, %ld inflate calls)",
                  n ? f[0].line : 0, n_inflate - before);
            sym_dwarf_skip none;
            check(big && sym_dwarf_skipped(big, 0, &none) == -1, "and lists nothing as skipped");
            sym_free(big);
        }
    }

    /* DWARF limit below this binary's own DWARF: names from .symtab, no
     * lines, no inlined frames; at exactly its size, DWARF again */
    {
        int compressed;
        long long own = file_debug_bytes(exe, &compressed);
        uint64_t limits[3] = {own > 1 ? (uint64_t)own - 1 : 0, 0, own > 0 ? (uint64_t)own : 0};
        for (int li = 0; li < 3; li++) {
            int over = li < 2;
            sym_ctx *c = sym_new();
            if (!check(c != NULL && own > 0, "sym_new for limit %llu (this binary's DWARF: %lld bytes)",
                       (unsigned long long)limits[li], own))
                continue;
            sym_set_dwarf_limit(c, limits[li]);
            n = sym_resolve(c, (uint64_t)(uintptr_t)&plain_function, 0, f, 16, NULL);
            show("limited plain", f, n);
            if (over)
                check(n == 1 && strcmp(f[0].name, "plain_function") == 0 && f[0].line == 0 &&
                          f[0].file[0] == '\0',
                      "limit %llu: plain_function named, no file:line", (unsigned long long)limits[li]);
            else
                check(n == 1 && strcmp(f[0].name, "plain_function") == 0 && f[0].line > 0,
                      "limit %llu (== its DWARF): plain_function with its line %d",
                      (unsigned long long)limits[li], n ? f[0].line : 0);
            n = sym_resolve(c, (uint64_t)(uintptr_t)&static_function, 0, f, 16, NULL);
            if (over)
                check(n == 1 && strcmp(f[0].name, "static_function") == 0 && f[0].line == 0 &&
                          strcmp(base_name(f[0].file), "test_sym.c") == 0,
                      "limit %llu: static_function named, its STT_FILE, no line (%s:%d)",
                      (unsigned long long)limits[li], n ? f[0].file : "", n ? f[0].line : -1);
            uint64_t ra = inline_caller();
            n = sym_resolve(c, ra, 1, f, 16, NULL);
            show("limited inline", f, n);
            if (over)
                check(n == 1 && strcmp(f[0].name, "inline_caller") == 0,
                      "limit %llu: the inlined pc is one frame, the real function inline_caller",
                      (unsigned long long)limits[li]);
            else
                check(n == 2 && strcmp(f[0].name, "inlined_function") == 0,
                      "limit %llu: the inlined frame is back", (unsigned long long)limits[li]);
            sym_dwarf_skip k = {0};
            int listed = 0;
            for (int i = 0; sym_dwarf_skipped(c, i, &k) == 0; i++)
                if (strcmp(k.path, exe) == 0) {
                    listed = 1;
                    break;
                }
            if (over)
                check(listed && strcmp(k.dwarf, exe) == 0 && (long long)k.bytes == own,
                      "limit %llu: this binary listed, %llu bytes of DWARF in itself",
                      (unsigned long long)limits[li], (unsigned long long)k.bytes);
            else
                check(!listed, "limit %llu: this binary not listed", (unsigned long long)limits[li]);
            sym_free(c);
        }
    }

    sym_free(ctx);
    printf("1..%d\n", ntests);
    return nfailed ? 1 : 0;
}
