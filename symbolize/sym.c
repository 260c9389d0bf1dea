/* symbolize/sym.c — owns the symbolization context: the table of executable
 * mappings, the per-pc result cache and the interned strings every result
 * points to. Called only from the shim's uploader thread (one sym_ctx per
 * thread, not thread-safe); nothing here runs in signal context. The elfutils
 * work is in sym_dwfl.c, maps parsing and in-memory build ids in sym_maps.c,
 * demangling in sym_demangle.c.
 *
 * Lifetimes. Every string handed out (names, files, paths, build ids) is
 * copied into an append-only arena owned by the ctx, so a refresh, which may
 * make libdwfl drop a module and its data, never invalidates them; they live
 * until sym_free. Mappings are never freed either: a mapping that disappears
 * (dlclose) is marked dead and keeps its index, so callers' tables indexed by
 * sym_mapping.index and the sym_mapping pointers they hold stay valid;
 * sym_mapping_count() therefore counts every mapping seen by this ctx, and
 * lookups only consider the live ones. A library mapped again gets a new
 * mapping (and index).
 *
 * Cache. Results are cached per looked-up address (pc, or pc - 1 for return
 * addresses) in an open-addressing table holding at most max_entries
 * addresses and 4 * max_entries frames; when either bound is hit the whole
 * cache is dropped (cheaper and simpler than LRU bookkeeping on a path whose
 * misses cost microseconds, and a profile's hot pcs come back at once).
 * An entry is valid while its mapping is live; a hit does not re-check the
 * process (that would cost a syscall or the loader lock per pc), so a caller
 * that symbolizes in batches calls sym_refresh() before each batch: cheap
 * when nothing changed, and it retires mappings that went away. Misses do
 * check the loader's add/remove counter and refresh when it moved. Addresses in no mapping are
 * cached too ("negative" entries), so garbage pcs from a bad unwind do not
 * re-read /proc/self/maps every time: such an entry holds while the live set
 * is unchanged, the loader has not added or removed an object since (a cheap
 * counter check, so a dlopen is seen at once) and for at most NEG_TTL_MS
 * (for executable regions mapped without the loader, e.g. JIT code). */
#include "symbolize/sym.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "symbolize/sym_demangle.h"
#include "symbolize/sym_dwfl.h"
#include "symbolize/sym_maps.h"

#define DEFAULT_MAX_ENTRIES 32768u
#define NEG_TTL_MS 1000u
#define CHUNK_SIZE 16384u

struct map_int {
    sym_mapping pub; /* first: callers get &pub */
    uint64_t inode;
    unsigned dev_major, dev_minor;
    int live;
};

struct cache_ent {
    uint64_t key;  /* looked-up address */
    int32_t map;   /* mapping index; -1: in no mapping */
    uint32_t aux;  /* first frame in pool; for map == -1, now_ms() when recorded */
    uint32_t gen;  /* for map == -1: ctx->gen when recorded */
    uint16_t n;    /* frames */
    uint16_t used; /* slot occupied */
};

struct str_ent {
    const char *s;
    const char *demangled; /* NULL until asked; == s when nothing to demangle */
    uint32_t hash, len;
};

struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
};

struct sym_ctx {
    sym_dwfl *dw;
    sym_maps snap; /* scratch buffers for /proc/self/maps, reused */

    struct map_int **maps; /* every mapping ever seen; maps[i]->pub.index == i */
    int nmaps, cap_maps;
    struct map_int **live; /* live ones, sorted by start */
    int nlive, cap_live;
    int last_hit;
    uint32_t gen; /* bumped whenever the live set or the loader's set changes */
    uint64_t loader_gen; /* sym_loader_generation() when last looked at */

    struct cache_ent *tab;
    uint32_t tab_size, tab_used, max_entries;
    sym_frame *pool;
    uint32_t pool_len, pool_cap, pool_max;

    struct str_ent *strs;
    uint32_t str_size, str_used;
    struct chunk *chunks;
    size_t chunk_bytes;

    struct timespec t0;
};

/* ---- interned strings -------------------------------------------------------- */

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static char *arena_alloc(sym_ctx *ctx, size_t n)
{
    struct chunk *c = ctx->chunks;
    if (c == NULL || c->cap - c->used < n) {
        /* Big strings get a chunk of their own so they do not waste the
         * rest of a fresh shared chunk. */
        size_t cap = n > CHUNK_SIZE / 4 ? n : CHUNK_SIZE;
        struct chunk *nc = malloc(sizeof *nc + cap);
        if (nc == NULL)
            return NULL;
        nc->used = 0;
        nc->cap = cap;
        if (c != NULL && n > CHUNK_SIZE / 4) {
            /* keep filling the current shared chunk */
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            ctx->chunks = nc;
        }
        ctx->chunk_bytes += sizeof *nc + cap;
        c = nc;
    }
    char *p = c->data + c->used;
    c->used += n;
    return p;
}

static struct str_ent *str_slot(sym_ctx *ctx, const char *s, size_t n, uint32_t h)
{
    uint32_t mask = ctx->str_size - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        struct str_ent *e = &ctx->strs[i];
        if (e->s == NULL || (e->hash == h && e->len == n && memcmp(e->s, s, n) == 0))
            return e;
    }
}

static int str_reserve(sym_ctx *ctx)
{
    if ((ctx->str_used + 1) * 2 <= ctx->str_size)
        return 0;
    uint32_t nsize = ctx->str_size ? ctx->str_size * 2 : 1024;
    struct str_ent *old = ctx->strs, *nt = calloc(nsize, sizeof *nt);
    if (nt == NULL)
        return -ENOMEM;
    uint32_t osize = ctx->str_size;
    ctx->strs = nt;
    ctx->str_size = nsize;
    for (uint32_t i = 0; i < osize; i++)
        if (old[i].s != NULL)
            *str_slot(ctx, old[i].s, old[i].len, old[i].hash) = old[i];
    free(old);
    return 0;
}

/* The stored entry for s[0..n), inserting it; NULL only when out of memory. */
static struct str_ent *intern_ent(sym_ctx *ctx, const char *s, size_t n)
{
    if (n >= UINT32_MAX || str_reserve(ctx) != 0)
        return NULL;
    uint32_t h = hash_bytes(s, n);
    struct str_ent *e = str_slot(ctx, s, n, h);
    if (e->s != NULL)
        return e;
    char *copy = arena_alloc(ctx, n + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, s, n);
    copy[n] = '\0';
    e->s = copy;
    e->demangled = NULL;
    e->hash = h;
    e->len = (uint32_t)n;
    ctx->str_used++;
    return e;
}

static const char *intern_n(sym_ctx *ctx, const char *s, size_t n)
{
    if (s == NULL || n == 0)
        return "";
    struct str_ent *e = intern_ent(ctx, s, n);
    return e != NULL ? e->s : "";
}

static const char *intern(sym_ctx *ctx, const char *s)
{
    return s != NULL ? intern_n(ctx, s, strlen(s)) : "";
}

/* Interned demangled name of raw; *system gets the interned raw name. The
 * demangled form is remembered on the raw name's entry, so each distinct
 * function is demangled once per ctx. */
static const char *intern_name(sym_ctx *ctx, const char *raw, const char **system)
{
    *system = "";
    if (raw == NULL || raw[0] == '\0')
        return "";
    size_t n = strlen(raw);
    struct str_ent *e = intern_ent(ctx, raw, n);
    if (e == NULL)
        return "";
    const char *s = e->s;
    *system = s;
    if (e->demangled != NULL)
        return e->demangled;
    const char *dem = s;
    char *d = sym_demangle_alloc(s);
    if (d != NULL) {
        dem = intern(ctx, d);
        free(d);
        if (dem[0] == '\0')
            dem = s;
        /* interning d may have grown the table: find s's entry again */
        e = str_slot(ctx, s, n, hash_bytes(s, n));
    }
    e->demangled = dem;
    return dem;
}

/* ---- per-pc cache ------------------------------------------------------------- */

static uint32_t hash_pc(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static struct cache_ent *cache_find(sym_ctx *ctx, uint64_t key)
{
    if (ctx->tab == NULL)
        return NULL;
    uint32_t mask = ctx->tab_size - 1;
    for (uint32_t i = hash_pc(key) & mask; ctx->tab[i].used; i = (i + 1) & mask)
        if (ctx->tab[i].key == key)
            return &ctx->tab[i];
    return NULL;
}

static void cache_clear(sym_ctx *ctx)
{
    if (ctx->tab != NULL)
        memset(ctx->tab, 0, (size_t)ctx->tab_size * sizeof *ctx->tab);
    ctx->tab_used = 0;
    ctx->pool_len = 0;
}

static int cache_reserve(sym_ctx *ctx)
{
    if ((ctx->tab_used + 1) * 2 <= ctx->tab_size)
        return 0;
    uint32_t nsize = ctx->tab_size ? ctx->tab_size * 2 : 256;
    struct cache_ent *old = ctx->tab, *nt = calloc(nsize, sizeof *nt);
    if (nt == NULL)
        return -ENOMEM;
    uint32_t osize = ctx->tab_size, mask = nsize - 1;
    for (uint32_t i = 0; i < osize; i++) {
        if (!old[i].used)
            continue;
        uint32_t j = hash_pc(old[i].key) & mask;
        while (nt[j].used)
            j = (j + 1) & mask;
        nt[j] = old[i];
    }
    free(old);
    ctx->tab = nt;
    ctx->tab_size = nsize;
    return 0;
}

/* Milliseconds since the ctx was made; wraps after 49 days, harmlessly
 * (unsigned differences stay right across one wrap). */
static uint32_t now_ms(const sym_ctx *ctx)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((ts.tv_sec - ctx->t0.tv_sec) * 1000 +
                      (ts.tv_nsec - ctx->t0.tv_nsec) / 1000000);
}

/* Remember a result. Failing to (out of memory) only costs a later miss. */
static void cache_put(sym_ctx *ctx, uint64_t key, int32_t map, const sym_frame *f, int n)
{
    /* Room for the frames first, so a failure leaves no half-made entry. */
    if (ctx->pool_len + (uint32_t)n > ctx->pool_max)
        cache_clear(ctx);
    if (ctx->pool_cap - ctx->pool_len < (uint32_t)n) {
        uint32_t ncap = ctx->pool_cap ? ctx->pool_cap : 256;
        while (ncap - ctx->pool_len < (uint32_t)n)
            ncap *= 2;
        if (ncap > ctx->pool_max)
            ncap = ctx->pool_max;
        sym_frame *np = realloc(ctx->pool, (size_t)ncap * sizeof *np);
        if (np == NULL)
            return;
        ctx->pool = np;
        ctx->pool_cap = ncap;
    }
    struct cache_ent *e = cache_find(ctx, key);
    if (e == NULL) {
        if (ctx->tab_used >= ctx->max_entries)
            cache_clear(ctx);
        if (cache_reserve(ctx) != 0)
            return;
        uint32_t mask = ctx->tab_size - 1, i = hash_pc(key) & mask;
        while (ctx->tab[i].used)
            i = (i + 1) & mask;
        e = &ctx->tab[i];
        e->used = 1;
        e->key = key;
        ctx->tab_used++;
    }
    e->map = map;
    e->n = (uint16_t)n;
    if (map >= 0) {
        /* a stale entry's old frames stay in the pool until the next clear */
        e->aux = ctx->pool_len;
        memcpy(ctx->pool + ctx->pool_len, f, (size_t)n * sizeof *f);
        ctx->pool_len += (uint32_t)n;
    } else {
        e->aux = now_ms(ctx);
        e->gen = ctx->gen;
    }
}

/* ---- mappings ------------------------------------------------------------------ */

static struct map_int *live_find(sym_ctx *ctx, uint64_t addr)
{
    if (ctx->nlive == 0)
        return NULL;
    struct map_int *m = ctx->live[ctx->last_hit];
    if (addr >= m->pub.start && addr < m->pub.limit)
        return m;
    int lo = 0, hi = ctx->nlive - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        m = ctx->live[mid];
        if (addr < m->pub.start)
            hi = mid - 1;
        else if (addr >= m->pub.limit)
            lo = mid + 1;
        else {
            ctx->last_hit = mid;
            return m;
        }
    }
    return NULL;
}

static int same_mapping(const struct map_int *m, const sym_maps_line *l)
{
    return m->pub.start == l->start && m->pub.limit == l->limit && m->pub.offset == l->offset &&
           m->inode == l->inode && m->dev_major == l->dev_major &&
           m->dev_minor == l->dev_minor && strlen(m->pub.path) == l->path_len &&
           memcmp(m->pub.path, l->path, l->path_len) == 0;
}

static int exec_set_unchanged(const sym_ctx *ctx)
{
    int k = 0;
    for (int i = 0; i < ctx->snap.n; i++) {
        if (!ctx->snap.lines[i].exec)
            continue;
        if (k >= ctx->nlive || !same_mapping(ctx->live[k], &ctx->snap.lines[i]))
            return 0;
        k++;
    }
    return k == ctx->nlive;
}

static struct map_int *new_mapping(sym_ctx *ctx, const sym_maps_line *l, sym_image **imgs,
                                   int *nimg)
{
    if (ctx->nmaps == ctx->cap_maps) {
        int ncap = ctx->cap_maps ? ctx->cap_maps * 2 : 64;
        struct map_int **nm = realloc(ctx->maps, (size_t)ncap * sizeof *nm);
        if (nm == NULL)
            return NULL;
        ctx->maps = nm;
        ctx->cap_maps = ncap;
    }
    struct map_int *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->pub.start = l->start;
    m->pub.limit = l->limit;
    m->pub.offset = l->offset;
    m->pub.path = intern_n(ctx, l->path, l->path_len);
    m->pub.build_id = "";
    m->inode = l->inode;
    m->dev_major = l->dev_major;
    m->dev_minor = l->dev_minor;
    if (l->path_len > 0) {
        if (*nimg < 0) {
            *nimg = sym_images_collect(imgs);
            if (*nimg < 0)
                *nimg = 0;
        }
        const char *bid = sym_images_build_id(*imgs, *nimg, l->start);
        char buf[2 * 64 + 1];
        if ((bid == NULL || bid[0] == '\0') && l->path[0] == '/' &&
            sym_dwfl_build_id(ctx->dw, l->start, buf, sizeof buf) == 0)
            bid = buf;
        m->pub.build_id = intern(ctx, bid);
    }
    m->pub.index = ctx->nmaps;
    ctx->maps[ctx->nmaps++] = m;
    return m;
}

/* Rebuild the live set from ctx->snap. Unchanged mappings keep their struct
 * (and index); new ones are appended; vanished ones are marked dead. */
static int apply_snapshot(sym_ctx *ctx)
{
    int nexec = 0;
    for (int i = 0; i < ctx->snap.n; i++)
        nexec += ctx->snap.lines[i].exec;
    struct map_int **nl = malloc((size_t)(nexec ? nexec : 1) * sizeof *nl);
    if (nl == NULL)
        return -ENOMEM;
    int rc = sym_dwfl_report(ctx->dw, &ctx->snap);
    if (rc < 0)
        log_debug("symbolize: module report failed (%d); names may be missing", rc);
    sym_image *imgs = NULL;
    int nimg = -1, k = 0, j = 0;
    for (int i = 0; i < ctx->snap.n; i++) {
        const sym_maps_line *l = &ctx->snap.lines[i];
        if (!l->exec)
            continue;
        while (j < ctx->nlive && ctx->live[j]->pub.start < l->start)
            j++;
        struct map_int *m = NULL;
        if (j < ctx->nlive && same_mapping(ctx->live[j], l))
            m = ctx->live[j];
        else
            m = new_mapping(ctx, l, &imgs, &nimg);
        if (m != NULL)
            nl[k++] = m;
    }
    free(imgs);
    for (int i = 0; i < ctx->nlive; i++)
        ctx->live[i]->live = 0;
    for (int i = 0; i < k; i++)
        nl[i]->live = 1;
    free(ctx->live);
    ctx->live = nl;
    ctx->nlive = k;
    ctx->cap_live = nexec;
    ctx->last_hit = 0;
    ctx->gen++;
    return 0;
}

int sym_refresh(sym_ctx *ctx)
{
    if (ctx == NULL)
        return -EINVAL;
    /* Counter first: an object loaded after it is read is then either in
     * the snapshot or makes the counter differ next time. */
    uint64_t lg = sym_loader_generation();
    int rc = sym_maps_read(&ctx->snap);
    if (rc < 0)
        return rc;
    ctx->loader_gen = lg;
    if (ctx->nlive > 0 && exec_set_unchanged(ctx))
        return 0;
    return apply_snapshot(ctx);
}

/* ---- public API -------------------------------------------------------------- */

sym_ctx *sym_new(void)
{
    sym_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL)
        return NULL;
    clock_gettime(CLOCK_MONOTONIC, &ctx->t0);
    ctx->max_entries = DEFAULT_MAX_ENTRIES;
    ctx->pool_max = 4 * DEFAULT_MAX_ENTRIES;
    ctx->dw = sym_dwfl_new();
    if (ctx->dw == NULL) {
        free(ctx);
        return NULL;
    }
    int rc = sym_refresh(ctx);
    if (rc < 0) {
        log_warn("symbolize: cannot read /proc/self/maps (%s)", strerror(-rc));
        sym_free(ctx);
        return NULL;
    }
    return ctx;
}

static int copy_out(const sym_ctx *ctx, const struct map_int *m, const sym_frame *src, int n,
                    sym_frame *frames, int max, const sym_mapping **map)
{
    (void)ctx;
    if (map != NULL)
        *map = &m->pub;
    if (frames == NULL || max <= 0)
        return 0;
    if (n > max)
        n = max;
    memcpy(frames, src, (size_t)n * sizeof *frames);
    return n;
}

int sym_resolve(sym_ctx *ctx, uint64_t pc, int is_return_address, sym_frame *frames, int max,
                const sym_mapping **map)
{
    if (map != NULL)
        *map = NULL;
    if (ctx == NULL)
        return 0;
    /* A return address points after the call; pc - 1 is inside it, so the
     * call's line (and the right function, when the call was the last
     * instruction of a noreturn path) is found. */
    uint64_t addr = is_return_address && pc > 0 ? pc - 1 : pc;

    struct cache_ent *e = cache_find(ctx, addr);
    if (e != NULL) {
        if (e->map >= 0) {
            const struct map_int *m = ctx->maps[e->map];
            if (m->live)
                return copy_out(ctx, m, ctx->pool + e->aux, e->n, frames, max, map);
        } else if (e->gen == ctx->gen && now_ms(ctx) - e->aux < NEG_TTL_MS) {
            uint64_t lg = sym_loader_generation();
            if (lg == ctx->loader_gen)
                return 0;
            ctx->loader_gen = lg;
            ctx->gen++;
        }
    }

    /* A dlclose + dlopen can put another library where a mapping we still
     * think live was; the loader's counter says so for the price of one
     * dl_iterate_phdr step, small next to a lookup. */
    int refreshed = 0;
    if (sym_loader_generation() != ctx->loader_gen) {
        sym_refresh(ctx);
        refreshed = 1;
    }
    struct map_int *m = live_find(ctx, addr);
    if (m == NULL) {
        /* Maybe a library dlopen'd since the last refresh. */
        if (!refreshed && sym_refresh(ctx) == 0)
            m = live_find(ctx, addr);
        if (m == NULL) {
            cache_put(ctx, addr, -1, NULL, 0);
            return 0;
        }
    }

    sym_raw_frame raw[SYM_MAX_FRAMES];
    sym_frame out[SYM_MAX_FRAMES];
    int n = m->pub.path[0] != '\0' || m->pub.build_id[0] != '\0'
                ? sym_dwfl_frames(ctx->dw, addr, raw, SYM_MAX_FRAMES)
                : 0;
    if (n <= 0) {
        n = 1;
        raw[0].name = NULL;
        raw[0].file = NULL;
        raw[0].line = 0;
    }
    /* The vDSO's own helpers (clock_gettime's do_hres...) have no symbol in
     * its table: the kernel's code, said as such rather than as an address. */
    if (raw[0].name == NULL && strcmp(m->pub.path, "[vdso]") == 0)
        raw[0].name = "[vdso]";
    for (int i = 0; i < n; i++) {
        out[i].name = intern_name(ctx, raw[i].name, &out[i].system_name);
        out[i].file = intern(ctx, raw[i].file);
        out[i].line = raw[i].line > 0 ? raw[i].line : 0;
    }
    cache_put(ctx, addr, m->pub.index, out, n);
    return copy_out(ctx, m, out, n, frames, max, map);
}

int sym_mapping_count(const sym_ctx *ctx)
{
    return ctx != NULL ? ctx->nmaps : 0;
}

const sym_mapping *sym_mapping_get(const sym_ctx *ctx, int i)
{
    if (ctx == NULL || i < 0 || i >= ctx->nmaps)
        return NULL;
    return &ctx->maps[i]->pub;
}

/* libdw's own data (parsed DWARF, line tables, mmapped files) is not
 * counted: it is not ours to measure, and it is bounded by the code the
 * process has actually run through. */
size_t sym_memory(const sym_ctx *ctx)
{
    if (ctx == NULL)
        return 0;
    return sizeof *ctx + sym_dwfl_memory(ctx->dw) + ctx->snap.cap +
           (size_t)ctx->snap.cap_lines * sizeof(sym_maps_line) +
           (size_t)ctx->cap_maps * sizeof(struct map_int *) +
           (size_t)ctx->nmaps * sizeof(struct map_int) +
           (size_t)ctx->cap_live * sizeof(struct map_int *) +
           (size_t)ctx->tab_size * sizeof(struct cache_ent) +
           (size_t)ctx->pool_cap * sizeof(sym_frame) +
           (size_t)ctx->str_size * sizeof(struct str_ent) + ctx->chunk_bytes;
}

int sym_set_cache_limit(sym_ctx *ctx, size_t max_entries)
{
    if (ctx == NULL || max_entries == 0 || max_entries > (1u << 24))
        return -EINVAL;
    free(ctx->tab);
    free(ctx->pool);
    ctx->tab = NULL;
    ctx->pool = NULL;
    ctx->tab_size = ctx->tab_used = 0;
    ctx->pool_len = ctx->pool_cap = 0;
    ctx->max_entries = (uint32_t)max_entries;
    ctx->pool_max = 4 * (uint32_t)max_entries;
    if (ctx->pool_max < SYM_MAX_FRAMES)
        ctx->pool_max = SYM_MAX_FRAMES;
    return 0;
}

void sym_set_dwarf_limit(sym_ctx *ctx, uint64_t max_bytes)
{
    if (ctx != NULL)
        sym_dwfl_set_dwarf_limit(ctx->dw, max_bytes);
}

int sym_dwarf_skipped(const sym_ctx *ctx, int i, sym_dwarf_skip *out)
{
    if (ctx == NULL || out == NULL)
        return -1;
    return sym_dwfl_dwarf_skipped(ctx->dw, i, &out->path, &out->dwarf, &out->bytes);
}

void sym_free(sym_ctx *ctx)
{
    if (ctx == NULL)
        return;
    sym_dwfl_free(ctx->dw);
    sym_maps_release(&ctx->snap);
    for (int i = 0; i < ctx->nmaps; i++)
        free(ctx->maps[i]);
    free(ctx->maps);
    free(ctx->live);
    free(ctx->tab);
    free(ctx->pool);
    free(ctx->strs);
    for (struct chunk *c = ctx->chunks, *next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(ctx);
}
