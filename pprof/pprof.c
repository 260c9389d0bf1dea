/* pprof/pprof.c — owns one perftools.profiles.Profile under construction: its
 * string table, functions, locations, mappings, samples and the label sets they
 * share, plus the gzip'd encoding of it. Called only by the uploader thread;
 * never in signal context. Each builder is independent (no global state), so a
 * builder may be filled while the previous one is still being sent.
 *
 * DESIGN. Samples and locations, by far the most numerous objects, are kept
 * as compact records (struct sample_rec, struct loc_rec) and become protobuf-c
 * messages one at a time while serializing; the few mappings, functions,
 * label sets and value types are protobuf-c messages from the start, hung on
 * a Profile message that also holds the string table. All of it (records,
 * messages, string bytes) is carved from a per-builder bump arena: thousands
 * of tiny mallocs would cost more in headers and time than the data itself,
 * and pprof_free is a walk over a few chunks. Only the top-level pointer
 * arrays and the deduplication tables (open addressing over 32-bit indices)
 * are realloc'd.
 *
 * Serialization does not materialize the packed Profile: the top-level fields
 * are framed here and each submessage is packed by protobuf-c into a 64 KiB
 * staging buffer that feeds deflate. Peak memory is then that buffer, zlib's
 * state and the compressed output, not a second copy of the whole profile. It
 * also avoids protobuf_c_message_pack_to_buffer, whose internal buffer growth
 * cannot report allocation failure. The framing follows protobuf-c's own field
 * order, so the bytes equal protobuf_c_message_pack's (the unit test checks). */
#define ZLIB_CONST
#include "pprof/pprof.h"

#include <errno.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <dlfcn.h>
#include <pthread.h>

/* zlib through pointers taken from libz.so.1 itself: a plain call would bind
 * to the first "deflate" in the process's global scope, which may be a
 * program's own (statically linked, exported) and not zlib at all. */
static int (*z_deflateInit2_)(z_streamp, int, int, int, int, int, const char *, int);
static int (*z_deflate)(z_streamp, int);
static int (*z_deflateEnd)(z_streamp);
static pthread_once_t z_once = PTHREAD_ONCE_INIT;

static void z_resolve(void)
{
    void *h = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h) {
        z_deflateInit2_ = (int (*)(z_streamp, int, int, int, int, int, const char *, int))dlsym(h, "deflateInit2_");
        z_deflate = (int (*)(z_streamp, int))dlsym(h, "deflate");
        z_deflateEnd = (int (*)(z_streamp))dlsym(h, "deflateEnd");
    }
}

#include "profile.pb-c.h"

typedef Perftools__Profiles__Profile pb_profile;
typedef Perftools__Profiles__ValueType pb_value_type;
typedef Perftools__Profiles__Sample pb_sample;
typedef Perftools__Profiles__Label pb_label;
typedef Perftools__Profiles__Mapping pb_mapping;
typedef Perftools__Profiles__Location pb_location;
typedef Perftools__Profiles__Line pb_line;
typedef Perftools__Profiles__Function pb_function;

/* Bounds the on-stack key used to look a label set up before it is stored;
 * Datadog's profiles carry about half a dozen labels. */
#define PPROF_MAX_LABELS 64

/* ---- arena ------------------------------------------------------------- */

#define ARENA_CHUNK (32 * 1024)

struct arena_chunk {
    struct arena_chunk *next;
    size_t cap, used;
    alignas(max_align_t) unsigned char data[];
};

struct arena {
    struct arena_chunk *head; /* the chunk being filled */
    size_t bytes;             /* total malloc'd, for pprof_memory */
};

static void *arena_alloc(struct arena *a, size_t n)
{
    /* Everything stored is at most 8-byte aligned (pointers, 64-bit ints). */
    n = (n + 7) & ~(size_t)7;
    if (n == 0)
        n = 8;
    struct arena_chunk *c = a->head;
    if (c && c->cap - c->used >= n) {
        void *p = c->data + c->used;
        c->used += n;
        return p;
    }
    /* A large request gets its own chunk behind the current one, so the
     * free space left in the current chunk is not abandoned. */
    int dedicated = n > ARENA_CHUNK / 4;
    size_t cap = dedicated ? n : ARENA_CHUNK;
    if (cap > SIZE_MAX - sizeof(struct arena_chunk))
        return NULL;
    struct arena_chunk *nc = malloc(sizeof(*nc) + cap);
    if (!nc)
        return NULL;
    nc->cap = cap;
    nc->used = n;
    a->bytes += sizeof(*nc) + cap;
    if (dedicated && c) {
        nc->next = c->next;
        c->next = nc;
    } else {
        nc->next = c;
        a->head = nc;
    }
    return nc->data;
}

static void arena_free(struct arena *a)
{
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->bytes = 0;
}

/* ---- growable arrays --------------------------------------------------- */

/* arr itself when it has room for need elements, else a larger copy; NULL
 * (arr untouched) on failure. Use through GROW. */
static void *grow_raw(void *arr, size_t *cap, size_t need, size_t elsize)
{
    if (need <= *cap)
        return arr;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return NULL;
        ncap *= 2;
    }
    if (ncap > SIZE_MAX / elsize)
        return NULL;
    void *n = realloc(arr, ncap * elsize);
    if (n)
        *cap = ncap;
    return n;
}

/* 0 or -ENOMEM; arr is replaced only on success. */
#define GROW(arr, cap, need)                                                   \
    __extension__({                                                            \
        void *np_ = grow_raw((arr), &(cap), (need), sizeof(*(arr)));           \
        np_ ? ((arr) = np_, 0) : -ENOMEM;                                      \
    })

/* ---- index hash tables ------------------------------------------------- */

/* A slot holds index+1 of an item stored elsewhere (0 = empty) and the item's
 * hash, so growing never has to look at the items. */
struct hslot {
    uint32_t idx1;
    uint32_t hash;
};

struct htab {
    struct hslot *slots;
    size_t cap; /* power of two */
    size_t count;
};

typedef int (*heq_fn)(const void *ctx, uint32_t idx, const void *key);

/* Called before every lookup that may insert, so the slot a lookup returns
 * stays valid until the caller fills it. */
static int htab_reserve(struct htab *t)
{
    if (t->count >= UINT32_MAX - 1)
        return -ENOMEM;
    if ((t->count + 1) * 10 <= t->cap * 7)
        return 0;
    size_t ncap = t->cap ? t->cap * 2 : 64;
    struct hslot *ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return -ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        struct hslot s = t->slots[i];
        if (!s.idx1)
            continue;
        size_t j = s.hash & (ncap - 1);
        while (ns[j].idx1)
            j = (j + 1) & (ncap - 1);
        ns[j] = s;
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

/* The matching slot, or the empty slot where the key belongs. */
static struct hslot *htab_find(const struct htab *t, uint32_t hash, heq_fn eq, const void *ctx,
                               const void *key)
{
    size_t mask = t->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        struct hslot *s = &t->slots[i];
        if (!s->idx1 || (s->hash == hash && eq(ctx, s->idx1 - 1, key)))
            return s;
    }
}

static void htab_set(struct htab *t, struct hslot *s, uint32_t hash, size_t idx)
{
    s->idx1 = (uint32_t)idx + 1;
    s->hash = hash;
    t->count++;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_combine(uint64_t h, uint64_t v)
{
    return mix64(h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2)));
}

static uint32_t fold32(uint64_t h)
{
    return (uint32_t)(h ^ (h >> 32));
}

static uint64_t hash_str(const char *s, size_t *len)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        h ^= *p++;
        h *= 0x100000001b3ULL;
    }
    *len = (size_t)(p - (const unsigned char *)s);
    return h;
}

/* The hottest lookup (every frame of every sample) keeps its key in the slot,
 * so a hit costs one cache line and no visit to the location itself. */
struct loc_slot {
    uint64_t address;
    uint32_t mapping_id; /* mappings are counted in a size_t, but a process has far fewer */
    uint32_t idx1;       /* location index + 1, 0 = empty */
};

struct loc_tab {
    struct loc_slot *slots;
    size_t cap; /* power of two */
    size_t count;
};

static uint32_t loc_hash(uint64_t mapping_id, uint64_t address)
{
    return fold32(mix64(address ^ (mapping_id << 48) ^ (mapping_id >> 16)));
}

static int loc_reserve(struct loc_tab *t)
{
    if (t->count >= UINT32_MAX - 1)
        return -ENOMEM;
    if ((t->count + 1) * 10 <= t->cap * 7)
        return 0;
    size_t ncap = t->cap ? t->cap * 2 : 256;
    struct loc_slot *ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return -ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        struct loc_slot s = t->slots[i];
        if (!s.idx1)
            continue;
        size_t j = loc_hash(s.mapping_id, s.address) & (ncap - 1);
        while (ns[j].idx1)
            j = (j + 1) & (ncap - 1);
        ns[j] = s;
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

static struct loc_slot *loc_find(const struct loc_tab *t, uint32_t mapping_id, uint64_t address)
{
    size_t mask = t->cap - 1;
    for (size_t i = loc_hash(mapping_id, address) & mask;; i = (i + 1) & mask) {
        struct loc_slot *s = &t->slots[i];
        if (!s->idx1 || (s->address == address && s->mapping_id == mapping_id))
            return s;
    }
}

/* ---- builder ----------------------------------------------------------- */

struct label_set {
    pb_label **labels;
    size_t n;
};

/* Samples and locations are by far the most numerous objects, so they are
 * stored compactly and turned into protobuf-c messages one at a time while
 * serializing: a one-line location takes 32 bytes here against about 130 as
 * Location + Line messages, a 30-frame sample 144 bytes against 330. */
struct loc_rec {
    uint64_t address;
    uint32_t mapping_id;
    uint32_t nlines;
    struct line_rec {
        uint64_t function_id;
        int64_t line;
    } lines[]; /* innermost first, as given */
};

struct sample_rec {
    uint32_t nlocs;
    uint32_t lset1;   /* label set index + 1, 0 = no labels */
    int64_t values[]; /* ntypes values, then nlocs uint32_t location ids */
};

struct pprof_builder {
    /* Holds everything but samples and locations; arrays are its own and
     * their counts live in prof.n_*. */
    pb_profile prof;
    size_t cap_mapping, cap_function, cap_string, cap_comment;
    size_t ntypes;
    struct loc_rec **locs;
    size_t n_locs, cap_locs, max_nlines;
    struct sample_rec **samples;
    size_t n_samples, cap_samples, max_nlocs;
    struct arena arena;
    struct htab strings, functions, lsets_tab;
    struct loc_tab locations;
    struct label_set *lsets;
    size_t n_lsets, cap_lsets;
};

static int str_eq(const void *ctx, uint32_t idx, const void *key)
{
    const pprof_builder *b = ctx;
    return strcmp(b->prof.string_table[idx], key) == 0;
}

/* Index of s in the string table (NULL and "" are index 0), -ENOMEM. */
static int64_t intern(pprof_builder *b, const char *s)
{
    if (!s || !*s)
        return 0;
    size_t len;
    uint32_t h = fold32(hash_str(s, &len));
    if (htab_reserve(&b->strings) ||
        GROW(b->prof.string_table, b->cap_string, b->prof.n_string_table + 1))
        return -ENOMEM;
    struct hslot *slot = htab_find(&b->strings, h, str_eq, b, s);
    if (slot->idx1)
        return slot->idx1 - 1;
    char *copy = arena_alloc(&b->arena, len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, s, len + 1);
    size_t idx = b->prof.n_string_table++;
    b->prof.string_table[idx] = copy;
    htab_set(&b->strings, slot, h, idx);
    return (int64_t)idx;
}

static pb_value_type *new_value_type(pprof_builder *b, pprof_value_type vt)
{
    int64_t t = intern(b, vt.type), u = intern(b, vt.unit);
    pb_value_type *v = arena_alloc(&b->arena, sizeof(*v));
    if (t < 0 || u < 0 || !v)
        return NULL;
    perftools__profiles__value_type__init(v);
    v->type = t;
    v->unit = u;
    return v;
}

pprof_builder *pprof_new(const pprof_value_type *sample_types, size_t ntypes,
                         pprof_value_type period_type, int64_t period)
{
    if (!sample_types || ntypes == 0)
        return NULL;
    pprof_builder *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    perftools__profiles__profile__init(&b->prof);
    b->ntypes = ntypes;
    /* profile.proto requires string_table[0] == "". */
    if (GROW(b->prof.string_table, b->cap_string, 1))
        goto fail;
    b->prof.string_table[0] = "";
    b->prof.n_string_table = 1;

    b->prof.sample_type = calloc(ntypes, sizeof(pb_value_type *));
    if (!b->prof.sample_type)
        goto fail;
    b->prof.n_sample_type = ntypes;
    for (size_t i = 0; i < ntypes; i++)
        if (!(b->prof.sample_type[i] = new_value_type(b, sample_types[i])))
            goto fail;
    if (!(b->prof.period_type = new_value_type(b, period_type)))
        goto fail;
    b->prof.period = period;
    return b;
fail:
    pprof_free(b);
    return NULL;
}

void pprof_set_time(pprof_builder *b, int64_t time_nanos, int64_t duration_nanos)
{
    if (!b)
        return;
    b->prof.time_nanos = time_nanos;
    b->prof.duration_nanos = duration_nanos;
}

uint64_t pprof_add_mapping(pprof_builder *b, uint64_t start, uint64_t limit, uint64_t offset,
                           const char *filename, const char *build_id, int has_functions,
                           int has_filenames, int has_line_numbers, int has_inline_frames)
{
    if (!b)
        return 0;
    int64_t fn = intern(b, filename), bid = intern(b, build_id);
    if (fn < 0 || bid < 0 ||
        GROW(b->prof.mapping, b->cap_mapping, b->prof.n_mapping + 1))
        return 0;
    pb_mapping *m = arena_alloc(&b->arena, sizeof(*m));
    if (!m)
        return 0;
    perftools__profiles__mapping__init(m);
    m->id = b->prof.n_mapping + 1;
    m->memory_start = start;
    m->memory_limit = limit;
    m->file_offset = offset;
    m->filename = fn;
    m->build_id = bid;
    m->has_functions = !!has_functions;
    m->has_filenames = !!has_filenames;
    m->has_line_numbers = !!has_line_numbers;
    m->has_inline_frames = !!has_inline_frames;
    b->prof.mapping[b->prof.n_mapping++] = m;
    return m->id;
}

struct func_key {
    int64_t name, system_name, filename;
};

static int func_eq(const void *ctx, uint32_t idx, const void *key)
{
    const pb_function *f = ((const pprof_builder *)ctx)->prof.function[idx];
    const struct func_key *k = key;
    return f->name == k->name && f->system_name == k->system_name && f->filename == k->filename;
}

/* Function id for the line's (name, system_name, file), 0 on failure. */
static uint64_t function_id(pprof_builder *b, const pprof_line *l)
{
    struct func_key k;
    k.name = intern(b, l->name);
    k.system_name = intern(b, l->system_name);
    k.filename = intern(b, l->file);
    if (k.name < 0 || k.system_name < 0 || k.filename < 0)
        return 0;
    uint32_t h = fold32(hash_combine(hash_combine(mix64((uint64_t)k.name), (uint64_t)k.system_name),
                                     (uint64_t)k.filename));
    if (htab_reserve(&b->functions) ||
        GROW(b->prof.function, b->cap_function, b->prof.n_function + 1))
        return 0;
    struct hslot *slot = htab_find(&b->functions, h, func_eq, b, &k);
    if (slot->idx1)
        return slot->idx1; /* ids are index + 1 */
    pb_function *f = arena_alloc(&b->arena, sizeof(*f));
    if (!f)
        return 0;
    perftools__profiles__function__init(f);
    size_t idx = b->prof.n_function++;
    f->id = idx + 1;
    f->name = k.name;
    f->system_name = k.system_name;
    f->filename = k.filename;
    b->prof.function[idx] = f;
    htab_set(&b->functions, slot, h, idx);
    return f->id;
}

uint64_t pprof_add_location(pprof_builder *b, uint64_t mapping_id, uint64_t address,
                            const pprof_line *lines, size_t nlines)
{
    if (!b || mapping_id > b->prof.n_mapping || mapping_id > UINT32_MAX || (nlines && !lines) ||
        nlines > UINT32_MAX)
        return 0;
    if (loc_reserve(&b->locations) || GROW(b->locs, b->cap_locs, b->n_locs + 1))
        return 0;
    /* Interning the lines below touches only the string and function tables,
     * so this slot stays valid until it is filled. */
    struct loc_slot *slot = loc_find(&b->locations, (uint32_t)mapping_id, address);
    if (slot->idx1)
        return slot->idx1; /* ids are index + 1 */
    if (nlines > (SIZE_MAX - sizeof(struct loc_rec)) / sizeof(struct line_rec))
        return 0;
    struct loc_rec *loc = arena_alloc(&b->arena, sizeof(*loc) + nlines * sizeof(struct line_rec));
    if (!loc)
        return 0;
    for (size_t i = 0; i < nlines; i++) {
        if (!(loc->lines[i].function_id = function_id(b, &lines[i])))
            return 0; /* the arena block is reclaimed by pprof_free */
        loc->lines[i].line = lines[i].line;
    }
    loc->address = address;
    loc->mapping_id = (uint32_t)mapping_id;
    loc->nlines = (uint32_t)nlines;
    size_t idx = b->n_locs++;
    b->locs[idx] = loc;
    if (nlines > b->max_nlines)
        b->max_nlines = nlines;
    slot->address = address;
    slot->mapping_id = (uint32_t)mapping_id;
    slot->idx1 = (uint32_t)idx + 1;
    b->locations.count++;
    return idx + 1;
}

struct lset_key {
    const pb_label *v;
    size_t n;
};

static int lset_eq(const void *ctx, uint32_t idx, const void *key)
{
    const struct label_set *s = &((const pprof_builder *)ctx)->lsets[idx];
    const struct lset_key *k = key;
    if (s->n != k->n)
        return 0;
    for (size_t i = 0; i < k->n; i++) {
        const pb_label *a = s->labels[i], *c = &k->v[i];
        if (a->key != c->key || a->str != c->str || a->num != c->num || a->num_unit != c->num_unit)
            return 0;
    }
    return 1;
}

/* Samples of one thread carry the same labels, so they share one stored
 * label array instead of each holding a copy. */
static int label_set(pprof_builder *b, const pprof_label *labels, size_t n, uint32_t *lset1)
{
    pb_label tmp[PPROF_MAX_LABELS];
    uint64_t hv = mix64(n);
    for (size_t i = 0; i < n; i++) {
        const pprof_label *l = &labels[i];
        if (!l->key)
            return -EINVAL;
        perftools__profiles__label__init(&tmp[i]);
        int64_t key = intern(b, l->key);
        int64_t str = l->str ? intern(b, l->str) : 0;
        int64_t unit = l->str ? 0 : intern(b, l->num_unit);
        if (key < 0 || str < 0 || unit < 0)
            return -ENOMEM;
        tmp[i].key = key;
        tmp[i].str = str;
        tmp[i].num = l->str ? 0 : l->num;
        tmp[i].num_unit = unit;
        hv = hash_combine(hash_combine(hash_combine(hash_combine(hv, (uint64_t)key), (uint64_t)str),
                                       (uint64_t)tmp[i].num),
                          (uint64_t)unit);
    }
    uint32_t h = fold32(hv);
    struct lset_key k = {tmp, n};
    if (htab_reserve(&b->lsets_tab) ||
        GROW(b->lsets, b->cap_lsets, b->n_lsets + 1))
        return -ENOMEM;
    struct hslot *slot = htab_find(&b->lsets_tab, h, lset_eq, b, &k);
    if (slot->idx1) {
        *lset1 = slot->idx1;
        return 0;
    }
    pb_label **lp = arena_alloc(&b->arena, n * (sizeof(pb_label *) + sizeof(pb_label)));
    if (!lp)
        return -ENOMEM;
    pb_label *lv = (pb_label *)(lp + n);
    for (size_t i = 0; i < n; i++) {
        lv[i] = tmp[i];
        lp[i] = &lv[i];
    }
    size_t idx = b->n_lsets++;
    b->lsets[idx].labels = lp;
    b->lsets[idx].n = n;
    htab_set(&b->lsets_tab, slot, h, idx);
    *lset1 = (uint32_t)idx + 1;
    return 0;
}

int pprof_add_sample(pprof_builder *b, const uint64_t *location_ids, size_t nlocs,
                     const int64_t *values, const pprof_label *labels, size_t nlabels)
{
    if (!b || !values || (nlocs && !location_ids) || (nlabels && !labels) ||
        nlabels > PPROF_MAX_LABELS || nlocs > UINT32_MAX)
        return -EINVAL;
    /* A dangling id would make the whole profile unreadable to pprof. */
    for (size_t i = 0; i < nlocs; i++)
        if (location_ids[i] == 0 || location_ids[i] > b->n_locs)
            return -EINVAL;
    uint32_t lset1 = 0;
    int rc;
    if (nlabels && (rc = label_set(b, labels, nlabels, &lset1)))
        return rc;
    if (GROW(b->samples, b->cap_samples, b->n_samples + 1))
        return -ENOMEM;
    struct sample_rec *s = arena_alloc(&b->arena, sizeof(*s) + b->ntypes * sizeof(int64_t) +
                                                      nlocs * sizeof(uint32_t));
    if (!s)
        return -ENOMEM;
    s->nlocs = (uint32_t)nlocs;
    s->lset1 = lset1;
    memcpy(s->values, values, b->ntypes * sizeof(int64_t));
    uint32_t *ids = (uint32_t *)(s->values + b->ntypes);
    for (size_t i = 0; i < nlocs; i++)
        ids[i] = (uint32_t)location_ids[i];
    b->samples[b->n_samples++] = s;
    if (nlocs > b->max_nlocs)
        b->max_nlocs = nlocs;
    return 0;
}

int pprof_add_comment(pprof_builder *b, const char *text)
{
    if (!b || !text)
        return -EINVAL;
    int64_t idx = intern(b, text);
    if (idx < 0 || GROW(b->prof.comment, b->cap_comment, b->prof.n_comment + 1))
        return -ENOMEM;
    b->prof.comment[b->prof.n_comment++] = idx;
    return 0;
}

size_t pprof_memory(const pprof_builder *b)
{
    if (!b)
        return 0;
    return sizeof(*b) + b->arena.bytes + b->cap_samples * sizeof(struct sample_rec *) +
           b->cap_mapping * sizeof(pb_mapping *) + b->cap_locs * sizeof(struct loc_rec *) +
           b->cap_function * sizeof(pb_function *) + b->cap_string * sizeof(char *) +
           b->cap_comment * sizeof(int64_t) + b->prof.n_sample_type * sizeof(pb_value_type *) +
           b->cap_lsets * sizeof(struct label_set) +
           (b->strings.cap + b->functions.cap + b->lsets_tab.cap) * sizeof(struct hslot) +
           b->locations.cap * sizeof(struct loc_slot);
}

void pprof_free(pprof_builder *b)
{
    if (!b)
        return;
    arena_free(&b->arena);
    free(b->prof.sample_type);
    free(b->samples);
    free(b->prof.mapping);
    free(b->locs);
    free(b->prof.function);
    free(b->prof.string_table);
    free(b->prof.comment);
    free(b->strings.slots);
    free(b->functions.slots);
    free(b->locations.slots);
    free(b->lsets_tab.slots);
    free(b->lsets);
    free(b);
}

/* ---- serialization ----------------------------------------------------- */

#ifndef PPROF_GZIP_LEVEL
#define PPROF_GZIP_LEVEL Z_BEST_SPEED
#endif
#define STAGE_SIZE (64 * 1024)
#define OUT_INITIAL (16 * 1024)
/* deflate's counters are 32-bit: feed and drain it in pieces no larger. */
#define Z_PIECE (1u << 30)

enum { WT_VARINT = 0, WT_LEN = 2 };

struct gz {
    z_stream zs;
    int err;
    uint8_t *out;
    size_t out_cap;
    uint8_t *scratch; /* for submessages larger than the stage */
    size_t scratch_cap;
    /* Room to turn the largest sample_rec and loc_rec into messages. */
    uint64_t *ids;
    pb_line *lines;
    pb_line **linep;
    size_t stage_len;
    uint8_t stage[STAGE_SIZE];
};

static int out_grow(struct gz *g)
{
    size_t used = (size_t)(g->zs.next_out - g->out);
    size_t ncap = g->out_cap ? g->out_cap * 2 : OUT_INITIAL;
    if (ncap < g->out_cap)
        return -ENOMEM;
    uint8_t *n = realloc(g->out, ncap);
    if (!n)
        return -ENOMEM;
    g->out = n;
    g->out_cap = ncap;
    g->zs.next_out = n + used;
    size_t room = ncap - used;
    g->zs.avail_out = room > Z_PIECE ? Z_PIECE : (uInt)room;
    return 0;
}

static int gz_deflate(struct gz *g, const uint8_t *p, size_t n, int flush)
{
    do {
        size_t piece = n > Z_PIECE ? Z_PIECE : n;
        int f = piece == n ? flush : Z_NO_FLUSH;
        g->zs.next_in = p;
        g->zs.avail_in = (uInt)piece;
        for (;;) {
            if (g->zs.avail_out == 0 && out_grow(g))
                return -ENOMEM;
            int rc = z_deflate(&g->zs, f);
            if (rc == Z_STREAM_END)
                break;
            if (rc != Z_OK && rc != Z_BUF_ERROR)
                return -EIO;
            /* Z_FINISH is done only at Z_STREAM_END; otherwise done once all
             * input is taken and deflate stopped with room to spare. */
            if (f != Z_FINISH && g->zs.avail_in == 0 && g->zs.avail_out != 0)
                break;
            if (rc == Z_BUF_ERROR && g->zs.avail_out != 0)
                return -EIO; /* no progress possible: never spin */
        }
        p += piece;
        n -= piece;
    } while (n);
    return 0;
}

static void gz_flush_stage(struct gz *g)
{
    if (g->err || !g->stage_len)
        return;
    g->err = gz_deflate(g, g->stage, g->stage_len, Z_NO_FLUSH);
    g->stage_len = 0;
}

static void put(struct gz *g, const void *p, size_t n)
{
    if (g->err)
        return;
    if (n > STAGE_SIZE - g->stage_len)
        gz_flush_stage(g);
    if (n > STAGE_SIZE) {
        if (!g->err)
            g->err = gz_deflate(g, p, n, Z_NO_FLUSH);
        return;
    }
    if (!g->err) {
        memcpy(g->stage + g->stage_len, p, n);
        g->stage_len += n;
    }
}

static size_t varint(uint8_t *buf, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        buf[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    buf[n++] = (uint8_t)v;
    return n;
}

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t tag_len(uint8_t *buf, unsigned field, int wt, size_t len)
{
    size_t n = varint(buf, (uint64_t)field << 3 | (uint64_t)wt);
    if (wt == WT_LEN)
        n += varint(buf + n, len);
    return n;
}

/* proto3 leaves zero scalars out, as protobuf-c does. */
static void put_varint_field(struct gz *g, unsigned field, uint64_t v)
{
    uint8_t buf[24];
    if (!v)
        return;
    size_t n = tag_len(buf, field, WT_VARINT, 0);
    n += varint(buf + n, v);
    put(g, buf, n);
}

static void put_bytes_field(struct gz *g, unsigned field, const void *p, size_t len)
{
    uint8_t hdr[24];
    put(g, hdr, tag_len(hdr, field, WT_LEN, len));
    put(g, p, len);
}

static void put_msg(struct gz *g, unsigned field, const ProtobufCMessage *m)
{
    uint8_t hdr[24];
    if (g->err)
        return;
    size_t len = protobuf_c_message_get_packed_size(m);
    size_t hl = tag_len(hdr, field, WT_LEN, len);
    if (hl + len > STAGE_SIZE - g->stage_len)
        gz_flush_stage(g);
    if (g->err)
        return;
    if (hl + len <= STAGE_SIZE - g->stage_len) {
        /* Common case: pack in place, no copy. */
        memcpy(g->stage + g->stage_len, hdr, hl);
        protobuf_c_message_pack(m, g->stage + g->stage_len + hl);
        g->stage_len += hl + len;
        return;
    }
    if (GROW(g->scratch, g->scratch_cap, len)) {
        g->err = -ENOMEM;
        return;
    }
    protobuf_c_message_pack(m, g->scratch);
    put(g, hdr, hl);
    put(g, g->scratch, len); /* larger than the stage: deflated directly */
}

static void put_sample(struct gz *g, const pprof_builder *b, const struct sample_rec *r)
{
    pb_sample m;
    perftools__profiles__sample__init(&m);
    const uint32_t *ids = (const uint32_t *)(r->values + b->ntypes);
    for (size_t i = 0; i < r->nlocs; i++)
        g->ids[i] = ids[i];
    m.n_location_id = r->nlocs;
    m.location_id = g->ids;
    m.n_value = b->ntypes;
    m.value = (int64_t *)r->values;
    if (r->lset1) {
        m.n_label = b->lsets[r->lset1 - 1].n;
        m.label = b->lsets[r->lset1 - 1].labels;
    }
    put_msg(g, 2, &m.base);
}

static void put_location(struct gz *g, uint64_t id, const struct loc_rec *r)
{
    pb_location m;
    perftools__profiles__location__init(&m);
    m.id = id;
    m.mapping_id = r->mapping_id;
    m.address = r->address;
    for (size_t i = 0; i < r->nlines; i++) {
        perftools__profiles__line__init(&g->lines[i]);
        g->lines[i].function_id = r->lines[i].function_id;
        g->lines[i].line = r->lines[i].line;
        g->linep[i] = &g->lines[i];
    }
    m.n_line = r->nlines;
    m.line = g->linep;
    put_msg(g, 4, &m.base);
}

static void put_profile(struct gz *g, const pprof_builder *b)
{
    const pb_profile *p = &b->prof;
    /* Field order as protobuf-c packs: by field number. */
    for (size_t i = 0; i < p->n_sample_type; i++)
        put_msg(g, 1, &p->sample_type[i]->base);
    for (size_t i = 0; i < b->n_samples; i++)
        put_sample(g, b, b->samples[i]);
    for (size_t i = 0; i < p->n_mapping; i++)
        put_msg(g, 3, &p->mapping[i]->base);
    for (size_t i = 0; i < b->n_locs; i++)
        put_location(g, i + 1, b->locs[i]);
    for (size_t i = 0; i < p->n_function; i++)
        put_msg(g, 5, &p->function[i]->base);
    for (size_t i = 0; i < p->n_string_table; i++)
        put_bytes_field(g, 6, p->string_table[i], strlen(p->string_table[i]));
    put_varint_field(g, 7, (uint64_t)p->drop_frames);
    put_varint_field(g, 8, (uint64_t)p->keep_frames);
    put_varint_field(g, 9, (uint64_t)p->time_nanos);
    put_varint_field(g, 10, (uint64_t)p->duration_nanos);
    if (p->period_type)
        put_msg(g, 11, &p->period_type->base);
    put_varint_field(g, 12, (uint64_t)p->period);
    if (p->n_comment) {
        size_t len = 0;
        for (size_t i = 0; i < p->n_comment; i++)
            len += varint_size((uint64_t)p->comment[i]);
        uint8_t hdr[24];
        put(g, hdr, tag_len(hdr, 13, WT_LEN, len));
        for (size_t i = 0; i < p->n_comment; i++)
            put(g, hdr, varint(hdr, (uint64_t)p->comment[i]));
    }
    put_varint_field(g, 14, (uint64_t)p->default_sample_type);
}

int pprof_serialize_gzip(pprof_builder *b, uint8_t **out, size_t *out_len)
{
    if (!b || !out || !out_len)
        return -EINVAL;
    *out = NULL;
    *out_len = 0;
    /* On the heap: the uploader thread's stack is not ours to size. */
    struct gz *g = malloc(sizeof(*g));
    if (!g)
        return -ENOMEM;
    memset(g, 0, offsetof(struct gz, stage));
    /* One block: max_nlocs ids, then max_nlines Line messages and pointers. */
    g->ids = malloc(b->max_nlocs * sizeof(uint64_t) +
                    b->max_nlines * (sizeof(pb_line) + sizeof(pb_line *)) + 1);
    if (!g->ids) {
        free(g);
        return -ENOMEM;
    }
    g->lines = (pb_line *)(g->ids + b->max_nlocs);
    g->linep = (pb_line **)(g->lines + b->max_nlines);
    /* windowBits 15 + 16: a gzip (RFC 1952) header and trailer, not zlib's. */
    pthread_once(&z_once, z_resolve);
    if (!z_deflateInit2_ || !z_deflate || !z_deflateEnd) {
        free(g->ids);
        free(g);
        return -ENOSYS;
    }
    int zrc = z_deflateInit2_(&g->zs, PPROF_GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY,
                              ZLIB_VERSION, (int)sizeof(z_stream));
    if (zrc != Z_OK) {
        free(g->ids);
        free(g);
        return zrc == Z_MEM_ERROR ? -ENOMEM : -EIO;
    }
    g->zs.next_out = NULL;
    g->zs.avail_out = 0;
    put_profile(g, b);
    gz_flush_stage(g);
    if (!g->err)
        g->err = gz_deflate(g, NULL, 0, Z_FINISH);
    size_t len = g->out ? (size_t)(g->zs.next_out - g->out) : 0;
    z_deflateEnd(&g->zs);
    free(g->scratch);
    free(g->ids);
    int rc = g->err;
    if (rc) {
        free(g->out);
    } else {
        /* The doubling left up to half the buffer unused; give it back. */
        uint8_t *shrunk = realloc(g->out, len ? len : 1);
        *out = shrunk ? shrunk : g->out;
        *out_len = len;
    }
    free(g);
    return rc;
}
