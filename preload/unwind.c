/* preload/unwind.c — the sampling handler's stack walker (see unwind.h).
 *
 * Runs in signal context, on any host thread (unwind_walk and everything it
 * calls: async-signal-safe, no locks, no allocation; `make check-sigsafe`
 * checks this object: it calls nothing but _dl_find_object).
 * Its memory and the threads' stack bounds come from preload/sampler.c.
 *
 * Rules. For each lookup address (the interrupted pc, or a return address - 1,
 * as libunwind looks them up) a rule says how to find the caller: CFA = rsp or
 * rbp + offset, return address at CFA - 8, rbp unchanged or saved at CFA +
 * offset — exactly the frames libunwind's fast trace (x86_64/Gtrace.c,
 * "standard" frames) handles, derived from the same .eh_frame CFI with the same
 * semantics (dwarf/Gparser.c run_cfi_program, x86_64/Gstash_frame.c); or "last
 * frame" (return address or rbp undefined: _start, clone3); or "unsupported":
 * everything libunwind treats otherwise (signal trampolines, CFA expressions,
 * frames without CFI, registers it rejects). A sample that meets an
 * unsupported frame is walked by libunwind instead, whole.
 *
 * Where rules come from: _dl_find_object (glibc >= 2.35, documented
 * AS-Safe, lock-free) gives the object's PT_GNU_EH_FRAME; its binary-search
 * table gives the FDE; its CFI program is run to the address. Rules are kept
 * in one process-wide open-addressing table (slots claimed with a CAS, never
 * freed), like libunwind's own caches never flushed on dlclose.
 *
 * Why it is fast: between two samples of a thread every cache line is cold
 * (bench/findings.md), and libunwind's per-frame lookups in a 256 KB hash
 * table cost a dependent miss each. Here the previous walk of the thread (its
 * lookup addresses, stack depths and rules, contiguous in TLS) is prefetched
 * at entry together with the stack it covered, and a frame found at the same
 * depth with the same address reuses its rule; the others (mostly the leaf,
 * whose pc moves) look in the thread's recent CFI row ranges, then in the
 * table. The values are always read from the current stack: a hint only
 * saves the lookup of a rule, which depends on the address alone. */
#include "preload/unwind.h"

#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

struct unwind_counters unwind_counters;

/* ---- rules -------------------------------------------------------------- */

/* A rule in 32 bits: kind (2), CFA from rbp (1), rbp saved (1), rbp's save
 * offset from the CFA / 8 (int8), CFA offset (int20). A standard frame that
 * does not fit (over 512 KB of locals) is left to libunwind. 0 is "no rule". */
enum { K_EMPTY = 0, K_STD = 1, K_LAST = 2, K_UNSUP = 3 };
#define R_KIND 3u
#define R_CFA_RBP 4u
#define R_RBP_SAVED 8u
#define CFA_OFF_LIMIT (1 << 19)

static uint32_t rule_make(int kind, int cfa_rbp, int64_t cfa_off, int rbp_saved, int64_t rbp_off)
{
    if (kind == K_STD && (cfa_off < -CFA_OFF_LIMIT || cfa_off >= CFA_OFF_LIMIT ||
                          (rbp_saved && (rbp_off % 8 != 0 || rbp_off < -1024 || rbp_off > 1016))))
        kind = K_UNSUP;
    if (kind != K_STD)
        return (uint32_t)kind;
    return (uint32_t)kind | (cfa_rbp ? R_CFA_RBP : 0) | (rbp_saved ? R_RBP_SAVED : 0) |
           ((uint32_t)(uint8_t)(int8_t)(rbp_off / 8) << 4) | ((uint32_t)cfa_off << 12);
}
static inline int64_t rule_cfa_off(uint32_t r)
{
    return (int32_t)r >> 12; /* arithmetic shift: sign-extends the int20 */
}
static inline int64_t rule_rbp_off(uint32_t r)
{
    return (int64_t)(int8_t)(uint8_t)(r >> 4) * 8;
}

/* ---- the process-wide rule table ---------------------------------------- */

#define TABLE_BITS 14 /* 16,384 slots: UNWIND_TABLE_BYTES, touched as used */
#define TABLE_PROBE 8
#define KEY_BUSY (1ull << 63) /* slot claimed, rule being written */

struct slot {
    uint64_t key;
    uint32_t rule;
    uint32_t pad;
};
static struct slot *table;

static inline uint64_t slot_of(uint64_t key)
{
    return (key * 0x9e3779b97f4a7c15ull) >> (64 - TABLE_BITS);
}

/* Async-signal-safe. The rule for key, or 0 (K_EMPTY) when not known. */
static uint32_t table_get(const struct slot *tab, uint64_t key)
{
    uint64_t i = slot_of(key);
    for (int j = 0; j < TABLE_PROBE; j++) {
        const struct slot *s = &tab[(i + (uint64_t)j) & ((1u << TABLE_BITS) - 1)];
        uint64_t k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
        if (k == key)
            return __atomic_load_n(&s->rule, __ATOMIC_RELAXED);
        if (k == 0)
            return 0;
    }
    return 0;
}

/* Async-signal-safe. Publish a rule: the rule is written before the key is
 * released, so a reader that sees the key sees the rule. A full probe window
 * keeps the rule out (it is computed again next time). */
static void table_put(struct slot *tab, uint64_t key, uint32_t rule)
{
    uint64_t i = slot_of(key);
    for (int j = 0; j < TABLE_PROBE; j++) {
        struct slot *s = &tab[(i + (uint64_t)j) & ((1u << TABLE_BITS) - 1)];
        uint64_t k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
        if (k == key)
            return;
        if (k != 0)
            continue;
        uint64_t zero = 0;
        if (!__atomic_compare_exchange_n(&s->key, &zero, key | KEY_BUSY, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            continue; /* taken meanwhile (by this key or another): look further */
        __atomic_store_n(&s->rule, rule, __ATOMIC_RELAXED);
        __atomic_store_n(&s->key, key, __ATOMIC_RELEASE);
        return;
    }
}

/* ---- reading CFI (async-signal-safe; every read bounds-checked) ---------- */

/* A cursor over an object's mapped image [lo, hi). */
struct rd {
    uintptr_t p, lo, hi;
    int bad;
};

static int rd_ok(struct rd *r, uintptr_t n)
{
    if (r->bad || r->p < r->lo || r->p > r->hi || n > r->hi - r->p) {
        r->bad = 1;
        return 0;
    }
    return 1;
}

#define RD_FIXED(name, type)                                                                       \
    static type name(struct rd *r)                                                                 \
    {                                                                                              \
        type v = 0;                                                                                \
        if (rd_ok(r, sizeof v))                                                                    \
            memcpy(&v, (const void *)r->p, sizeof v);                                              \
        r->p += sizeof v;                                                                          \
        return v;                                                                                  \
    }
RD_FIXED(rd_u8, uint8_t)
RD_FIXED(rd_u16, uint16_t)
RD_FIXED(rd_u32, uint32_t)
RD_FIXED(rd_u64, uint64_t)

static uint64_t rd_uleb(struct rd *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        uint8_t b = rd_u8(r);
        if (r->bad)
            return 0;
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return v;
    }
    r->bad = 1;
    return 0;
}

static int64_t rd_sleb(struct rd *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        uint8_t b = rd_u8(r);
        if (r->bad)
            return 0;
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            if (shift + 7 < 64 && (b & 0x40))
                v |= ~0ull << (shift + 7);
            return (int64_t)v;
        }
    }
    r->bad = 1;
    return 0;
}

/* DW_EH_PE_* pointer encodings: absolute, pc-relative or relative to base
 * (datarel: the .eh_frame_hdr); indirect and the other bases are not used in
 * .eh_frame on x86-64 and make the entry unsupported. */
static uint64_t rd_enc(struct rd *r, uint8_t enc, uint64_t datarel_base)
{
    uintptr_t at = r->p;
    uint64_t v;
    if (enc == 0xff) {
        r->bad = 1;
        return 0;
    }
    switch (enc & 0x0f) {
    case 0x00: v = rd_u64(r); break;
    case 0x01: v = rd_uleb(r); break;
    case 0x02: v = rd_u16(r); break;
    case 0x03: v = rd_u32(r); break;
    case 0x04: v = rd_u64(r); break;
    case 0x09: v = (uint64_t)rd_sleb(r); break;
    case 0x0a: v = (uint64_t)(int64_t)(int16_t)rd_u16(r); break;
    case 0x0b: v = (uint64_t)(int64_t)(int32_t)rd_u32(r); break;
    case 0x0c: v = rd_u64(r); break;
    default: r->bad = 1; return 0;
    }
    switch (enc & 0x70) {
    case 0x00: break;
    case 0x10: v += at; break;
    case 0x30: v += datarel_base; break;
    default: r->bad = 1; return 0;
    }
    if (enc & 0x80)
        r->bad = 1;
    return v;
}

/* ---- running a CFI program ---------------------------------------------- */

/* The registers the fast trace looks at (DWARF numbers 6, 7, 16). */
enum { T_RBP, T_RSP, T_RA, T_N };
enum { W_SAME, W_UNDEF, W_CFAREL, W_OTHER };
#define NUM_PRESERVED 17 /* libunwind rejects register numbers from here on */
#define STATE_STACK 8

struct cfi_state {
    int64_t cfa_reg; /* -1: not defined */
    int64_t cfa_off;
    int cfa_expr;
    int where[T_N];
    int64_t off[T_N];
};

/* Factored offsets, computed without signed overflow whatever the bytes say. */
static int64_t factor(int64_t v, int64_t f)
{
    return (int64_t)((uint64_t)v * (uint64_t)f);
}

static int tracked(uint64_t reg)
{
    return reg == 6 ? T_RBP : reg == 7 ? T_RSP : reg == 16 ? T_RA : -1;
}

struct cie {
    uint64_t code_align;
    int64_t data_align;
    uint8_t fde_enc;
    int has_z;
    uintptr_t instr, instr_end;
};

/* Set register reg's rule (when tracked); registers libunwind rejects fail. */
static int set_where(struct cfi_state *s, uint64_t reg, int where, int64_t off)
{
    if (reg >= NUM_PRESERVED)
        return -1;
    int t = tracked(reg);
    if (t >= 0) {
        s->where[t] = where;
        s->off[t] = off;
    }
    return 0;
}

/* Run instructions [r->p, end) from location *loc while *loc <= target (all
 * of them for a CIE: target ~0). 0, or -1 when something libunwind would not
 * run the same way is met. */
static int run_cfi(struct rd *r, uintptr_t end, uint64_t *loc, uint64_t target, const struct cie *c,
                   struct cfi_state *s, const struct cfi_state *initial, uint64_t *row_lo, int *set_loc)
{
    struct cfi_state stack[STATE_STACK];
    int depth = 0;
    while (*loc <= target && r->p < end && !r->bad) {
        *row_lo = *loc; /* the row in force at target starts at the last location <= target */
        uint8_t op = rd_u8(r);
        uint64_t reg, v;
        int64_t sv;
        switch (op & 0xc0) {
        case 0x40: /* DW_CFA_advance_loc */
            *loc += (uint64_t)(op & 0x3f) * c->code_align;
            continue;
        case 0x80: /* DW_CFA_offset */
            v = rd_uleb(r);
            if (set_where(s, op & 0x3f, W_CFAREL, factor((int64_t)v, c->data_align)) < 0)
                return -1;
            continue;
        case 0xc0: /* DW_CFA_restore */
            reg = op & 0x3f;
            if (reg >= NUM_PRESERVED || !initial)
                return -1;
            if (tracked(reg) >= 0) {
                s->where[tracked(reg)] = initial->where[tracked(reg)];
                s->off[tracked(reg)] = initial->off[tracked(reg)];
            }
            continue;
        }
        switch (op) {
        case 0x00: /* nop */
            break;
        case 0x01: /* set_loc */
            *loc = rd_enc(r, c->fde_enc, 0);
            *set_loc = 1;
            break;
        case 0x02: *loc += rd_u8(r) * c->code_align; break;
        case 0x03: *loc += rd_u16(r) * c->code_align; break;
        case 0x04: *loc += rd_u32(r) * c->code_align; break;
        case 0x05: /* offset_extended */
            reg = rd_uleb(r);
            v = rd_uleb(r);
            if (set_where(s, reg, W_CFAREL, factor((int64_t)v, c->data_align)) < 0)
                return -1;
            break;
        case 0x06: /* restore_extended */
            reg = rd_uleb(r);
            if (reg >= NUM_PRESERVED || !initial)
                return -1;
            if (tracked(reg) >= 0) {
                s->where[tracked(reg)] = initial->where[tracked(reg)];
                s->off[tracked(reg)] = initial->off[tracked(reg)];
            }
            break;
        case 0x07: /* undefined */
            if (set_where(s, rd_uleb(r), W_UNDEF, 0) < 0)
                return -1;
            break;
        case 0x08: /* same_value */
            if (set_where(s, rd_uleb(r), W_SAME, 0) < 0)
                return -1;
            break;
        case 0x09: /* register */
            reg = rd_uleb(r);
            (void)rd_uleb(r);
            if (set_where(s, reg, W_OTHER, 0) < 0)
                return -1;
            break;
        case 0x0a: /* remember_state */
            if (depth == STATE_STACK)
                return -1;
            stack[depth++] = *s;
            break;
        case 0x0b: /* restore_state */
            if (depth == 0)
                return -1;
            *s = stack[--depth];
            break;
        case 0x0c: /* def_cfa */
            reg = rd_uleb(r);
            v = rd_uleb(r);
            if (reg >= NUM_PRESERVED)
                return -1;
            s->cfa_reg = (int64_t)reg;
            s->cfa_off = (int64_t)v;
            s->cfa_expr = 0;
            break;
        case 0x0d: /* def_cfa_register */
            reg = rd_uleb(r);
            if (reg >= NUM_PRESERVED)
                return -1;
            s->cfa_reg = (int64_t)reg;
            s->cfa_expr = 0;
            break;
        case 0x0e: /* def_cfa_offset */
            s->cfa_off = (int64_t)rd_uleb(r);
            break;
        case 0x0f: /* def_cfa_expression */
            s->cfa_expr = 1;
            v = rd_uleb(r);
            r->p += v;
            break;
        case 0x10: /* expression */
        case 0x16: /* val_expression */
            reg = rd_uleb(r);
            v = rd_uleb(r);
            r->p += v;
            if (set_where(s, reg, W_OTHER, 0) < 0)
                return -1;
            break;
        case 0x11: /* offset_extended_sf */
            reg = rd_uleb(r);
            sv = rd_sleb(r);
            if (set_where(s, reg, W_CFAREL, factor(sv, c->data_align)) < 0)
                return -1;
            break;
        case 0x12: /* def_cfa_sf */
            reg = rd_uleb(r);
            sv = rd_sleb(r);
            if (reg >= NUM_PRESERVED)
                return -1;
            s->cfa_reg = (int64_t)reg;
            s->cfa_off = factor(sv, c->data_align);
            s->cfa_expr = 0;
            break;
        case 0x13: /* def_cfa_offset_sf */
            s->cfa_off = factor(rd_sleb(r), c->data_align);
            break;
        case 0x2e: /* GNU_args_size */
            (void)rd_uleb(r);
            break;
        case 0x2f: /* GNU_negative_offset_extended */
            reg = rd_uleb(r);
            v = rd_uleb(r);
            if (set_where(s, reg, W_CFAREL, factor((int64_t)(0 - v), c->data_align)) < 0)
                return -1;
            break;
        default: /* val_offset and the rest: libunwind 1.6 does not run them */
            return -1;
        }
    }
    return r->bad ? -1 : 0;
}

/* Parse the CIE at cie_at into c. 0 or -1. */
static int parse_cie(struct rd *r, uintptr_t cie_at, struct cie *c)
{
    r->p = cie_at;
    uint32_t len = rd_u32(r);
    if (len == 0 || len == 0xffffffffu)
        return -1;
    uintptr_t end = r->p + len;
    if (rd_u32(r) != 0) /* CIE id */
        return -1;
    uint8_t version = rd_u8(r);
    if (version != 1 && version != 3)
        return -1;
    char aug[8];
    int na = 0;
    for (;;) {
        uint8_t ch = rd_u8(r);
        if (r->bad || na == (int)sizeof aug)
            return -1;
        aug[na++] = (char)ch;
        if (!ch)
            break;
    }
    c->code_align = rd_uleb(r);
    c->data_align = rd_sleb(r);
    uint64_t ra = version == 1 ? rd_u8(r) : rd_uleb(r);
    if (ra != 16)
        return -1;
    c->fde_enc = 0;
    c->has_z = aug[0] == 'z';
    if (c->has_z) {
        uint64_t alen = rd_uleb(r);
        uintptr_t adata = r->p;
        for (int i = 1; aug[i]; i++) {
            switch (aug[i]) {
            case 'R': c->fde_enc = rd_u8(r); break;
            case 'L': (void)rd_u8(r); break;
            case 'P': {
                uint8_t penc = rd_u8(r);
                (void)rd_enc(r, penc & 0x7f, 0);
                break;
            }
            default: return -1; /* 'S' (signal frame) and anything unknown */
            }
        }
        r->p = adata + alen;
    } else if (aug[0]) {
        return -1;
    }
    c->instr = r->p;
    c->instr_end = end;
    return r->bad || end > r->hi ? -1 : 0;
}

/* The rule for lookup address key, computed from the CFI of its object, and
 * the addresses [*lo, *hi) that have the same rule (the CFI row; key alone
 * when that is not known). */
__attribute__((no_sanitize_address, noinline, cold)) static uint32_t resolve(uint64_t key, uint64_t *lo,
                                                                             uint64_t *hi)
{
    *lo = key;
    *hi = key + 1;
    const uint32_t unsup = K_UNSUP;
    struct dl_find_object fo;
    if (_dl_find_object((void *)(uintptr_t)key, &fo) != 0 || fo.dlfo_eh_frame == NULL)
        return unsup;
    struct rd r = {(uintptr_t)fo.dlfo_eh_frame, (uintptr_t)fo.dlfo_map_start, (uintptr_t)fo.dlfo_map_end, 0};
    uintptr_t hdr = r.p;
    /* .eh_frame_hdr: version, eh_frame_ptr encoding, count encoding, table
     * encoding (datarel sdata4 pairs: initial location, FDE address). */
    uint8_t version = rd_u8(&r), ptr_enc = rd_u8(&r), cnt_enc = rd_u8(&r), tab_enc = rd_u8(&r);
    if (r.bad || version != 1 || tab_enc != 0x3b)
        return unsup;
    (void)rd_enc(&r, ptr_enc, hdr);
    uint64_t count = rd_enc(&r, cnt_enc, hdr);
    uintptr_t tab = r.p;
    if (r.bad || count == 0 || !rd_ok(&r, count * 8))
        return unsup;
    uint64_t b = 0, e = count; /* the last entry whose initial location <= key */
    while (e - b > 1) {
        uint64_t mid = b + (e - b) / 2;
        int32_t init;
        memcpy(&init, (const void *)(tab + mid * 8), 4);
        if (hdr + (uint64_t)(int64_t)init <= key)
            b = mid;
        else
            e = mid;
    }
    int32_t init0, fde_rel;
    memcpy(&init0, (const void *)(tab + b * 8), 4);
    memcpy(&fde_rel, (const void *)(tab + b * 8 + 4), 4);
    if (hdr + (uint64_t)(int64_t)init0 > key)
        return unsup;

    /* The FDE and its CIE. */
    r.p = hdr + (uint64_t)(int64_t)fde_rel;
    uint32_t flen = rd_u32(&r);
    if (r.bad || flen == 0 || flen == 0xffffffffu)
        return unsup;
    uintptr_t fde_end = r.p + flen;
    uintptr_t cie_ptr_at = r.p;
    uint32_t cie_off = rd_u32(&r);
    if (r.bad || cie_off == 0 || cie_off > cie_ptr_at)
        return unsup;
    uintptr_t fde_body = r.p;
    struct cie c;
    if (parse_cie(&r, cie_ptr_at - cie_off, &c) != 0)
        return unsup;
    r.p = fde_body;
    uint64_t start = rd_enc(&r, c.fde_enc, 0);
    uint64_t range = rd_enc(&r, c.fde_enc & 0x0f, 0);
    if (c.has_z)
        r.p += rd_uleb(&r);
    if (r.bad || fde_end > r.hi || key < start || key - start >= range)
        return unsup;

    struct cfi_state init = {.cfa_reg = -1}, s;
    struct rd ci = r;
    ci.p = c.instr;
    uint64_t loc = 0, row_lo = 0;
    int set_loc = 0;
    if (run_cfi(&ci, c.instr_end, &loc, ~0ull, &c, &init, NULL, &row_lo, &set_loc) != 0)
        return unsup;
    s = init;
    loc = row_lo = start;
    set_loc = 0;
    if (run_cfi(&r, fde_end, &loc, key, &c, &s, &init, &row_lo, &set_loc) != 0)
        return unsup;
    /* Every address of [row_lo, row_hi) runs exactly the same instructions
     * (locations only grow without set_loc, which GCC does not emit). */
    if (!set_loc && row_lo <= key) {
        *lo = row_lo;
        *hi = loc > key ? loc : start + range;
    }

    /* What libunwind's fast trace makes of this row (x86_64/Gstash_frame.c). */
    if (s.cfa_expr || (s.cfa_reg != 6 && s.cfa_reg != 7) || s.cfa_off <= -(1 << 28) ||
        s.cfa_off >= (1 << 28))
        return unsup;
    for (int t = 0; t < T_N; t++)
        if (s.where[t] == W_OTHER)
            return unsup;
    for (int t = T_RBP; t <= T_RSP; t++)
        if (s.where[t] == W_CFAREL && (s.off[t] <= -(1 << 14) || s.off[t] >= (1 << 14) || s.off[t] == -1))
            return unsup;
    /* Undefined return address or rbp: the outermost frame (x86_64/Gstep.c). */
    if (s.where[T_RA] == W_UNDEF || s.where[T_RBP] == W_UNDEF)
        return rule_make(K_LAST, 0, 0, 0, 0);
    if (s.where[T_RA] != W_CFAREL || s.off[T_RA] != -8)
        return unsup;
    return rule_make(K_STD, s.cfa_reg == 6, s.cfa_off, s.where[T_RBP] == W_CFAREL, s.off[T_RBP]);
}

/* ---- set-up ------------------------------------------------------------ */

void unwind_use_table(void *mem)
{
    __atomic_store_n(&table, (struct slot *)mem, __ATOMIC_RELEASE);
}

void unwind_thread_reset(struct unwind_thread *u, uintptr_t stack_lo, uintptr_t stack_hi)
{
    memset(u, 0, sizeof *u); /* also makes its pages resident before any sample */
    u->stack_lo = stack_lo;
    u->stack_hi = stack_hi;
    u->table = __atomic_load_n(&table, __ATOMIC_ACQUIRE);
}

/* ---- the walk (async-signal-safe) ---------------------------------------- */

#define PREFETCH_STACK_MAX 4096

static void count(uint64_t *c)
{
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

/* A rule from the thread's recent ranges, the process-wide table, or computed
 * and published (the cold path). */
__attribute__((noinline)) static uint32_t lookup(struct unwind_thread *u, struct slot *tab, uint64_t key)
{
    for (int i = 0; i < UNWIND_RANGES; i++)
        if (key - u->ranges[i].lo < u->ranges[i].hi - u->ranges[i].lo)
            return (uint32_t)u->ranges[i].rule;
    uint64_t lo = key, hi = key + 1;
    uint32_t rule = table_get(tab, key);
    if (rule == 0) {
        rule = resolve(key, &lo, &hi);
        count(&unwind_counters.resolved);
        if ((rule & R_KIND) == K_UNSUP)
            count(&unwind_counters.unsupported);
        table_put(tab, key, rule);
    }
    struct unwind_range *e = &u->ranges[u->range_next++ % UNWIND_RANGES];
    e->lo = lo;
    e->hi = hi;
    e->rule = rule;
    return rule;
}

/* no_sanitize_address: it reads the host's stack, which is none of ASan's. */
__attribute__((no_sanitize_address)) int unwind_walk(struct unwind_thread *u, const ucontext_t *uc, int max,
                                                     int *truncated)
{
    *truncated = 0;
    uintptr_t lo = u->stack_lo, hi = u->stack_hi;
    struct slot *tab = u->table;
    uint64_t pc = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
    uint64_t sp = (uint64_t)uc->uc_mcontext.gregs[REG_RSP];
    uint64_t bp = (uint64_t)uc->uc_mcontext.gregs[REG_RBP];
    if (max > UNWIND_MAX)
        max = UNWIND_MAX;
    if (!tab || sp < lo || sp >= hi || max < 1)
        return -1;
    struct unwind_memo *memo = u->memo;
    const uint32_t oc = u->cur, nc = oc ^ 1;
    uint32_t on = u->prev_n, m = 0;

    /* Start at once every cold line the walk will probably need, instead of
     * meeting them one dependent miss per frame: the recent ranges (the
     * leaf's pc changes from sample to sample), the previous walk's frames (hints,
     * and where this walk's frames go) and the stack it covered. */
    const char *o = (const char *)u->ranges, *oe = (const char *)(u->ranges + UNWIND_RANGES);
    for (; o < oe; o += 64)
        __builtin_prefetch(o);
    o = (const char *)memo;
    oe = (const char *)(memo + (on < UNWIND_MAX ? on + 1 : on));
    for (; o < oe; o += 64)
        __builtin_prefetch(o, 1);
    uint64_t span = u->prev_span < PREFETCH_STACK_MAX ? u->prev_span : PREFETCH_STACK_MAX;
    for (uint64_t a = sp & ~(uint64_t)63; a <= sp + span && a < hi; a += 64)
        __builtin_prefetch((const void *)a);

    int n = 0;
    uint64_t use_prev = 0, sp0 = sp;
    for (;;) {
        if (n == max) {
            *truncated = 1;
            break;
        }
        uint64_t key = pc - use_prev;
        uint32_t depth = (uint32_t)(hi - sp); /* sp as a distance from the stack's top */
        while (m < on && memo[m].f[oc].depth > depth)
            m++;
        uint32_t rule = m < on && memo[m].f[oc].key == key ? memo[m].f[oc].rule : lookup(u, tab, key);
        if ((rule & R_KIND) == K_UNSUP)
            goto fallback;
        memo[n].f[nc].key = key;
        memo[n].f[nc].rule = rule;
        memo[n].f[nc].depth = depth;
        n++;
        if ((rule & R_KIND) == K_LAST)
            break;
        uint64_t cfa = ((rule & R_CFA_RBP) ? bp : sp) + (uint64_t)rule_cfa_off(rule);
        if (cfa < lo + 8 || cfa > hi)
            goto fallback;
        uint64_t ra;
        memcpy(&ra, (const void *)(uintptr_t)(cfa - 8), 8);
        if (rule & R_RBP_SAVED) {
            uint64_t at = cfa + (uint64_t)rule_rbp_off(rule);
            if (at < lo || at > hi - 8)
                goto fallback;
            memcpy(&bp, (const void *)(uintptr_t)at, 8);
        }
        sp = cfa;
        pc = ra;
        use_prev = 1;
        if (pc < 0x4000) /* libunwind's "ended up somewhere bogus" */
            break;
    }
    u->prev_n = (uint32_t)n;
    u->prev_span = sp - sp0;
    u->cur = nc;
    return n;
fallback:
    return -1;
}
