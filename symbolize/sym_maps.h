/* symbolize/sym_maps.h — internal to symbolize/: a parsed snapshot of
 * /proc/self/maps and the GNU build ids of the images the loader has mapped.
 * Uploader thread only. */
#ifndef DDSHIM_SYM_MAPS_H
#define DDSHIM_SYM_MAPS_H

#include <stddef.h>
#include <stdint.h>

/* One line of /proc/self/maps. path points into the snapshot's text (not
 * NUL-terminated there; use path_len) and is "" for anonymous regions. */
typedef struct sym_maps_line {
    uint64_t start, limit, offset, inode;
    unsigned dev_major, dev_minor;
    int exec;
    const char *path;
    size_t path_len;
} sym_maps_line;

typedef struct sym_maps {
    char *text; /* raw file content, NUL-terminated */
    size_t len, cap;
    sym_maps_line *lines;
    int n, cap_lines;
} sym_maps;

/* Read and parse /proc/self/maps into m (reusing its buffers). Lines that do
 * not parse are skipped. 0 or a negative errno. */
int sym_maps_read(sym_maps *m);
/* Parse m->text[0..m->len) (the part of sym_maps_read after reading; exposed
 * for tests). 0 or -ENOMEM. */
int sym_maps_parse(sym_maps *m);
void sym_maps_release(sym_maps *m);

/* Address range of one loaded ELF image (all its PT_LOAD segments) and its
 * build id as lowercase hex ("" when it has none). */
typedef struct sym_image {
    uint64_t lo, hi;
    char build_id[2 * 64 + 1];
} sym_image;

/* Snapshot the loader's images via dl_iterate_phdr. *out is malloc'd (free it);
 * returns the count, or a negative errno. */
int sym_images_collect(sym_image **out);

/* The loader's count of objects added plus removed so far (dl_phdr_info's
 * dlpi_adds + dlpi_subs): changes whenever dlopen/dlclose changed the set of
 * loaded objects. Cheap (one dl_iterate_phdr step). */
uint64_t sym_loader_generation(void);

/* Build id of the image containing addr, or NULL. */
const char *sym_images_build_id(const sym_image *imgs, int n, uint64_t addr);

#endif
