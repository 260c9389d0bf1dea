/* preload/ring.c — the consumer side and set-up of the sample ring (see
 * ring.h). ring_drain runs in the collector or uploader thread (serialized by
 * the collector's lock) and keeps the pages ahead of the producers resident;
 * ring_init in the constructor; ring_reset in a fork
 * child. Nothing here runs in signal context. */
#include "preload/ring.h"

#include <sys/mman.h>

/* Keep this much of the ring ahead of the producers resident. */
#define RING_PREFAULT (64 * 1024)

/* Make the ring's pages resident, in order, ahead of the producers' first pass
 * over them: a page first written by a signal handler would cost that handler
 * a page fault (1-2 us, a tenth of the samples while the ring fills for the
 * first time). Each page is touched with an atomic add of zero, which cannot
 * disturb a record a producer writes into it at the same moment. Consumer
 * side (collector thread, constructor). */
static void prefault(struct ring *r, uint64_t head)
{
    while (r->faulted < r->cap && r->faulted < head + RING_PREFAULT) {
        __atomic_fetch_add((uint64_t *)(r->buf + r->faulted), 0, __ATOMIC_RELAXED);
        r->faulted += 4096;
    }
}

int ring_init(struct ring *r, uint64_t cap)
{
    void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    r->cap = cap;
    r->head = r->tail = 0;
    /* Not prefaulted here: most processes are short and never write a
     * record; the collector's first drain (10 ms on) makes the pages ahead
     * of the producers resident. */
    r->faulted = 0;
    __atomic_store_n(&r->buf, (uint8_t *)p, __ATOMIC_RELEASE);
    return 0;
}

void ring_reset(struct ring *r)
{
    if (!r->buf)
        return;
    /* A fork child: give the pages back rather than write 512 KB-2 MB (a copy
     * of each page the parent had touched, a fresh page for the others) in a
     * child that may exec at once; they read as zeros again and are made
     * resident ahead of the producers as in a new ring. */
    if (madvise(r->buf, r->cap, MADV_DONTNEED) != 0) {
        memset(r->buf, 0, r->cap);
        r->faulted = r->cap;
    } else {
        r->faulted = 0;
    }
    r->head = r->tail = 0;
}

int ring_drain(struct ring *r, void (*fn)(const void *, uint32_t, void *), void *arg)
{
    uint8_t *buf = r->buf;
    if (!buf)
        return 0;
    int n = 0;
    uint64_t tail = r->tail;
    for (;;) {
        uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
        if (tail == head)
            break;
        uint64_t off = tail & (r->cap - 1);
        struct ring_hdr *h = (struct ring_hdr *)(buf + off);
        uint32_t word = __atomic_load_n(&h->word, __ATOMIC_ACQUIRE);
        if (!(word & RING_COMMIT))
            break; /* a producer is still writing this one */
        uint32_t size = word & RING_LEN_MASK;
        if (size < RING_HDR || size > r->cap - off)
            size = (uint32_t)(r->cap - off); /* cannot happen; never loop on it */
        if (!(word & RING_PAD)) {
            fn(buf + off + RING_HDR, h->len, arg);
            n++;
        }
        /* Zero what was consumed: a later header may land anywhere in it. */
        memset(buf + off, 0, size);
        tail += size;
        __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
    }
    prefault(r, __atomic_load_n(&r->head, __ATOMIC_ACQUIRE));
    return n;
}
