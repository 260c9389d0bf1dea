/* symbolize/sym_maps.c — owns the /proc/self/maps snapshot parser and the
 * reading of GNU build ids from images in memory. Called only by sym.c, i.e.
 * from the shim's uploader thread; nothing here runs in signal context.
 *
 * Build ids come from the loaded image's PT_NOTE segments (dl_iterate_phdr)
 * rather than from the file on disk: that is what actually runs, it costs no
 * file I/O, and it still works when the library file has been deleted or
 * replaced since it was loaded. */
#include "symbolize/sym_maps.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int read_all(const char *path, sym_maps *m)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    m->len = 0;
    for (;;) {
        if (m->cap - m->len < 4096 + 1) {
            size_t ncap = m->cap ? m->cap * 2 : 16384;
            char *p = realloc(m->text, ncap);
            if (p == NULL) {
                close(fd);
                return -ENOMEM;
            }
            m->text = p;
            m->cap = ncap;
        }
        ssize_t r = read(fd, m->text + m->len, m->cap - m->len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = -errno;
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        m->len += (size_t)r;
    }
    close(fd);
    m->text[m->len] = '\0';
    return 0;
}

/* Hex field ending at a delimiter; advances *pp past it. -1 when malformed. */
static int hex_field(const char **pp, const char *end, char delim, uint64_t *out)
{
    const char *p = *pp;
    uint64_t v = 0;
    int digits = 0;
    while (p < end && *p != delim) {
        char c = *p++;
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return -1;
        if (++digits > 16)
            return -1;
        v = v << 4 | d;
    }
    if (p >= end || digits == 0)
        return -1;
    *pp = p + 1;
    *out = v;
    return 0;
}

static int dec_field(const char **pp, const char *end, uint64_t *out)
{
    const char *p = *pp;
    uint64_t v = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p++ - '0');
        digits++;
    }
    if (digits == 0 || digits > 20)
        return -1;
    *pp = p;
    *out = v;
    return 0;
}

/* "start-end perms offset major:minor inode   path" */
static int parse_line(const char *p, const char *end, sym_maps_line *l)
{
    uint64_t maj, min;
    if (hex_field(&p, end, '-', &l->start) < 0 || hex_field(&p, end, ' ', &l->limit) < 0)
        return -1;
    if (end - p < 5 || p[4] != ' ')
        return -1;
    l->exec = p[2] == 'x';
    p += 5;
    if (hex_field(&p, end, ' ', &l->offset) < 0 || hex_field(&p, end, ':', &maj) < 0 ||
        hex_field(&p, end, ' ', &min) < 0 || dec_field(&p, end, &l->inode) < 0)
        return -1;
    while (p < end && *p == ' ')
        p++;
    l->dev_major = (unsigned)maj;
    l->dev_minor = (unsigned)min;
    l->path = p;
    l->path_len = (size_t)(end - p);
    return l->limit > l->start ? 0 : -1;
}

int sym_maps_read(sym_maps *m)
{
    int rc = read_all("/proc/self/maps", m);
    return rc < 0 ? rc : sym_maps_parse(m);
}

int sym_maps_parse(sym_maps *m)
{
    m->n = 0;
    if (m->text == NULL)
        return 0;
    const char *p = m->text, *stop = m->text + m->len;
    while (p < stop) {
        const char *nl = memchr(p, '\n', (size_t)(stop - p));
        const char *end = nl ? nl : stop;
        if (m->n == m->cap_lines) {
            int ncap = m->cap_lines ? m->cap_lines * 2 : 256;
            sym_maps_line *nl2 = realloc(m->lines, (size_t)ncap * sizeof *nl2);
            if (nl2 == NULL)
                return -ENOMEM;
            m->lines = nl2;
            m->cap_lines = ncap;
        }
        if (parse_line(p, end, &m->lines[m->n]) == 0)
            m->n++;
        p = end + 1;
    }
    return 0;
}

void sym_maps_release(sym_maps *m)
{
    free(m->text);
    free(m->lines);
    memset(m, 0, sizeof *m);
}

/* ---- build ids from memory ---------------------------------------------- */

struct collect {
    sym_image *v;
    int n, cap;
    int oom;
};

static void hex_encode(const unsigned char *p, size_t n, char *out, size_t outsz)
{
    static const char digits[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n && o + 2 < outsz; i++) {
        out[o++] = digits[p[i] >> 4];
        out[o++] = digits[p[i] & 15];
    }
    out[o] = '\0';
}

/* Walk one PT_NOTE segment already known to lie inside a readable PT_LOAD. */
static int find_build_id_note(const unsigned char *p, size_t size, size_t align, char *out,
                              size_t outsz)
{
    size_t off = 0;
    while (size - off >= sizeof(ElfW(Nhdr))) {
        ElfW(Nhdr) nh;
        memcpy(&nh, p + off, sizeof nh);
        size_t name_off = off + sizeof nh;
        size_t namesz = ((size_t)nh.n_namesz + align - 1) & ~(align - 1);
        size_t descsz = ((size_t)nh.n_descsz + align - 1) & ~(align - 1);
        if (namesz > size - name_off || descsz > size - name_off - namesz)
            return -1;
        if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
            memcmp(p + name_off, "GNU", 4) == 0 && nh.n_descsz > 0 && nh.n_descsz <= 64) {
            hex_encode(p + name_off + namesz, nh.n_descsz, out, outsz);
            return 0;
        }
        off = name_off + namesz + descsz;
    }
    return -1;
}

static int collect_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct collect *c = arg;
    (void)size;
    if (c->n == c->cap) {
        int ncap = c->cap ? c->cap * 2 : 64;
        sym_image *nv = realloc(c->v, (size_t)ncap * sizeof *nv);
        if (nv == NULL) {
            c->oom = 1;
            return 1;
        }
        c->v = nv;
        c->cap = ncap;
    }
    sym_image *img = &c->v[c->n];
    img->lo = UINT64_MAX;
    img->hi = 0;
    img->build_id[0] = '\0';
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uint64_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (lo < img->lo)
            img->lo = lo;
        if (hi > img->hi)
            img->hi = hi;
    }
    if (img->lo >= img->hi)
        return 0;
    img->lo &= ~(uint64_t)4095;
    for (int i = 0; i < info->dlpi_phnum && img->build_id[0] == '\0'; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        /* Only read notes that a readable PT_LOAD covers: a crafted or odd
         * object could point PT_NOTE at unmapped memory. */
        int covered = 0;
        for (int j = 0; j < info->dlpi_phnum; j++) {
            const ElfW(Phdr) *ld = &info->dlpi_phdr[j];
            if (ld->p_type == PT_LOAD && (ld->p_flags & PF_R) && ph->p_vaddr >= ld->p_vaddr &&
                ph->p_vaddr + ph->p_memsz <= ld->p_vaddr + ld->p_filesz)
                covered = 1;
        }
        if (!covered)
            continue;
        size_t align = ph->p_align == 8 ? 8 : 4;
        find_build_id_note((const unsigned char *)(info->dlpi_addr + ph->p_vaddr), ph->p_memsz,
                           align, img->build_id, sizeof img->build_id);
    }
    c->n++;
    return 0;
}

int sym_images_collect(sym_image **out)
{
    struct collect c = {0};
    dl_iterate_phdr(collect_cb, &c);
    if (c.oom) {
        free(c.v);
        *out = NULL;
        return -ENOMEM;
    }
    *out = c.v;
    return c.n;
}

static int generation_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    uint64_t *g = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
        *g = (uint64_t)info->dlpi_adds + (uint64_t)info->dlpi_subs;
    return 1; /* the counters are the same in every entry: stop at the first */
}

uint64_t sym_loader_generation(void)
{
    uint64_t g = 0;
    dl_iterate_phdr(generation_cb, &g);
    return g;
}

const char *sym_images_build_id(const sym_image *imgs, int n, uint64_t addr)
{
    for (int i = 0; i < n; i++)
        if (addr >= imgs[i].lo && addr < imgs[i].hi)
            return imgs[i].build_id;
    return NULL;
}
