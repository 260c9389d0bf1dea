/* pprof/pprof.h — build a perftools.profiles.Profile (Debian's profile.proto,
 * compiled by protoc-c at build time) and serialize it gzip'd.
 * Used only by the uploader thread. Not thread-safe; never signal context.
 *
 * Strings, functions and locations are interned/deduplicated by the builder. */
#ifndef DDSHIM_PPROF_H
#define DDSHIM_PPROF_H

#include <stddef.h>
#include <stdint.h>

typedef struct pprof_builder pprof_builder;

typedef struct pprof_value_type {
    const char *type; /* "cpu-time" */
    const char *unit; /* "nanoseconds" */
} pprof_value_type;

/* One line of a location (inlined frames: several lines, innermost first, like
 * sym_frame). */
typedef struct pprof_line {
    const char *name;        /* function name (demangled) */
    const char *system_name; /* mangled / raw symbol name */
    const char *file;        /* source file or "" */
    int64_t line;            /* 0 if unknown */
} pprof_line;

/* A label: string (str != NULL) or numeric (str == NULL, num, num_unit may be NULL). */
typedef struct pprof_label {
    const char *key;
    const char *str;
    int64_t num;
    const char *num_unit;
} pprof_label;

/* sample_types: ntypes value types; period_type and period as in profile.proto. */
pprof_builder *pprof_new(const pprof_value_type *sample_types, size_t ntypes,
                         pprof_value_type period_type, int64_t period);

void pprof_set_time(pprof_builder *b, int64_t time_nanos, int64_t duration_nanos);

/* Add a mapping; returns its id (>= 1), 0 on allocation failure. build_id may be
 * NULL or "". The first mapping added should be the main executable. */
uint64_t pprof_add_mapping(pprof_builder *b, uint64_t start, uint64_t limit, uint64_t offset,
                           const char *filename, const char *build_id, int has_functions,
                           int has_filenames, int has_line_numbers, int has_inline_frames);

/* Add (or find) the location for (mapping_id, address) and return its id
 * (>= 1), 0 on failure. lines/nlines describe it (innermost first); the
 * builder reverses nothing: it stores lines in pprof order (profile.proto says
 * line[0] is the innermost inlined call, the last is the caller). If the
 * location (mapping_id, address) exists, returns the existing id and ignores
 * lines. mapping_id may be 0 (unknown mapping). */
uint64_t pprof_add_location(pprof_builder *b, uint64_t mapping_id, uint64_t address,
                            const pprof_line *lines, size_t nlines);

/* Add a sample: location ids leaf first, values[ntypes], labels. Returns 0 or
 * a negative code. */
int pprof_add_sample(pprof_builder *b, const uint64_t *location_ids, size_t nlocs,
                     const int64_t *values, const pprof_label *labels, size_t nlabels);

/* Add a free-text comment (profile.comment). */
int pprof_add_comment(pprof_builder *b, const char *text);

/* Serialize and gzip (RFC 1952 gzip member, zlib). *out is malloc'd; caller
 * frees. Returns 0 or a negative code. */
int pprof_serialize_gzip(pprof_builder *b, uint8_t **out, size_t *out_len);

/* Bytes the builder holds now (arena, arrays, tables), for memory bounds. */
size_t pprof_memory(const pprof_builder *b);

void pprof_free(pprof_builder *b);

#endif
