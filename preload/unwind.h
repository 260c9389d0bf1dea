/* preload/unwind.h — the sampling handler's stack walker: DWARF CFI rules
 * (the same ones libunwind's fast trace applies) cached per code address in a
 * process-wide table, plus, per thread, the previous sample's frames as hints,
 * so that a walk touches few cold cache lines. Anything the walker does not
 * handle exactly as libunwind would (signal frames, CFA expressions, frames
 * without CFI, a stack outside the thread's own) makes it give up, and the
 * handler falls back to libunwind's unw_backtrace for that sample.
 *
 * Why (bench/findings.md): libunwind's per-thread trace cache is a 256 KB
 * hash table probed at a pseudo-random slot per frame; between two samples of
 * a thread every one of those lines is evicted, so each frame costs a cache
 * and TLB miss in a chain of dependent loads (~100-200 ns each here): 3-9 us
 * at 32 frames for ~3,500 instructions that take 0.3-0.5 us when warm.
 *
 * Everything here is async-signal-safe (unwind_walk runs in
 * preload/sighandler.c's handler; `make check-sigsafe` checks this object
 * too). preload/sampler.c provides the table's memory and each thread's stack
 * bounds from outside signal context. */
#ifndef DDSHIM_UNWIND_H
#define DDSHIM_UNWIND_H

#include <stdint.h>
#include <ucontext.h>

#include "common/record.h"

#define UNWIND_MAX REC_MAX_FRAMES
#define UNWIND_RANGES 16

/* One frame of a walk: its lookup address (pc, or return address - 1, as
 * libunwind looks them up), the rule that unwound it, and its stack pointer
 * as a distance below the top of the thread's stack. */
struct unwind_frame {
    uint64_t key;
    uint32_t rule;
    uint32_t depth;
};

/* Frame i of the last two walks: f[cur] of the last, f[cur ^ 1] of the one
 * before. Side by side so that a walk writes its frames into the lines it
 * reads the previous walk's hints from. */
struct unwind_memo {
    struct unwind_frame f[2];
};

/* Per thread (inside the sampler's initial-exec TLS). The first line holds
 * all the walk needs to start its prefetches. */
struct unwind_thread {
    uintptr_t stack_lo, stack_hi; /* the thread's stack; 0/0: unknown, always fall back */
    void *table;                  /* the rule table (a copy of the global pointer) */
    uint32_t cur;                 /* which copy holds the last walk */
    uint32_t prev_n;              /* its frames */
    uint64_t prev_span;           /* bytes of stack it covered */
    /* Rules of recently met frames that were not hints (mostly leaves: the
     * interrupted pc moves between samples), each for the whole address
     * range its CFI row covers: a leaf anywhere in a hot loop finds its rule
     * here instead of in the process-wide table (or in the CFI). */
    uint32_t range_next;          /* the entry to replace next */
    struct unwind_range {
        uint64_t lo, hi; /* [lo, hi) */
        uint64_t rule;
    } ranges[UNWIND_RANGES];
    struct unwind_memo memo[UNWIND_MAX];
};

/* Counters (relaxed atomics), read for the exit log line. */
struct unwind_counters {
    uint64_t fallbacks; /* samples handed to libunwind (counted by the handler) */
    uint64_t resolved;  /* rules computed from CFI (table misses) */
    uint64_t unsupported; /* of which: a frame libunwind must handle */
};
extern struct unwind_counters unwind_counters;

/* Bytes of zeroed memory the rule table needs (16,384 slots of 16 bytes;
 * pages are touched as rules arrive). */
#define UNWIND_TABLE_BYTES ((size_t)16 << 14)
/* Hand the table to the walker (once, at start-up); until then every walk
 * falls back to libunwind. */
void unwind_use_table(void *mem);
/* A thread's stack [stack_lo, stack_hi) (0, 0: unknown, always fall back);
 * forgets its previous walk. After unwind_use_table. */
void unwind_thread_reset(struct unwind_thread *u, uintptr_t stack_lo, uintptr_t stack_hi);

/* Async-signal-safe. Walk the stack interrupted at uc. Returns the number of
 * frames (1..max; read them with unwind_pc), *truncated = 1 when the stack goes
 * on beyond max; or -1 when a frame needs libunwind (nothing is kept of that
 * walk). */
int unwind_walk(struct unwind_thread *u, const ucontext_t *uc, int max, int *truncated);

/* Async-signal-safe. Frame i of the last walk: the interrupted pc (i = 0),
 * then return addresses, as libunwind's unw_backtrace reports them from the
 * interrupted frame on. */
static inline uint64_t unwind_pc(const struct unwind_thread *u, int i)
{
    return u->memo[i].f[u->cur].key + (i > 0); /* keys of callers are return address - 1 */
}

#endif
