/* preload/ring.h — the sample channel between signal handlers (producers, any
 * host thread) and the collector thread (the one consumer): a lock-free
 * multi-producer ring of variable-length records in private anonymous memory.
 *
 * Why not a socketpair: a send() per sample cost ~18 us here (the syscall
 * plus waking the reader), ten times the unwind itself, and a descriptor can be
 * closed and reused by a host that closes every fd. The ring costs a memcpy;
 * the collector looks at it every few milliseconds.
 *
 * ring_reserve/ring_commit/ring_put are async-signal-safe and inlined into
 * preload/sighandler.c (the signal-context object checked by
 * `make check-sigsafe`); a handler writes its record in place between
 * ring_reserve and ring_commit. */
#ifndef DDSHIM_RING_H
#define DDSHIM_RING_H

#include <stdint.h>
#include <string.h>

#define RING_COMMIT 0x80000000u
#define RING_PAD 0x40000000u
#define RING_LEN_MASK 0x00ffffffu
#define RING_HDR 8u

struct ring {
    uint64_t head; /* bytes reserved by producers (monotonic) */
    uint64_t tail; /* bytes consumed (monotonic) */
    uint64_t cap;  /* power of two */
    uint8_t *buf;
    uint64_t faulted; /* consumer side: bytes of buf made resident so far */
};

/* Header of each record: word = RING_COMMIT | [RING_PAD] | size (header
 * included, multiple of 8); len = payload bytes. */
struct ring_hdr {
    uint32_t word;
    uint32_t len;
};

/* Async-signal-safe. Reserve room for a record of len bytes: returns where
 * to write them, or NULL when the ring is full (or not set up). The record is
 * invisible to the consumer (which stops there) until ring_commit(*hdr). Never
 * blocks, never allocates. */
static inline void *ring_reserve(struct ring *r, uint32_t len, struct ring_hdr **hdr)
{
    uint8_t *buf = __atomic_load_n(&r->buf, __ATOMIC_ACQUIRE);
    if (!buf)
        return NULL;
    uint64_t cap = r->cap;
    uint64_t need = ((uint64_t)len + RING_HDR + 7u) & ~(uint64_t)7u;
    if (need > cap / 4)
        return NULL;
    uint64_t head = __atomic_load_n(&r->head, __ATOMIC_RELAXED), pad;
    for (;;) {
        uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
        uint64_t off = head & (cap - 1);
        pad = off + need > cap ? cap - off : 0;
        if (head + pad + need - tail > cap)
            return NULL;
        if (__atomic_compare_exchange_n(&r->head, &head, head + pad + need, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            break;
    }
    if (pad) {
        struct ring_hdr *ph = (struct ring_hdr *)(buf + (head & (cap - 1)));
        ph->len = 0;
        __atomic_store_n(&ph->word, RING_COMMIT | RING_PAD | (uint32_t)pad, __ATOMIC_RELEASE);
    }
    uint64_t off = (head + pad) & (cap - 1);
    struct ring_hdr *h = (struct ring_hdr *)(buf + off);
    h->len = len;
    *hdr = h;
    return buf + off + RING_HDR;
}

/* Async-signal-safe. Publish the record reserved with ring_reserve. */
static inline void ring_commit(struct ring_hdr *h)
{
    uint32_t need = (h->len + RING_HDR + 7u) & ~7u;
    __atomic_store_n(&h->word, RING_COMMIT | need, __ATOMIC_RELEASE);
}

/* Async-signal-safe. Copy len bytes in; 0, or -1 when the ring is full (or
 * not set up). */
static inline int ring_put(struct ring *r, const void *data, uint32_t len)
{
    struct ring_hdr *h;
    void *dst = ring_reserve(r, len, &h);
    if (!dst)
        return -1;
    /* memcpy is async-signal-safe (POSIX.1-2017 lists it). */
    memcpy(dst, data, len);
    ring_commit(h);
    return 0;
}

/* Map a ring of cap bytes (power of two). 0 or -1. Not signal context. */
int ring_init(struct ring *r, uint64_t cap);
/* Forget everything in it (a fork child: records half-written by threads that
 * do not exist there would block the consumer forever). */
void ring_reset(struct ring *r);
/* Consumer: call fn for every committed record in order, stopping at the first
 * one still being written. Returns the number of records consumed. */
int ring_drain(struct ring *r, void (*fn)(const void *data, uint32_t len, void *arg), void *arg);

#endif
