/* common/pages.h — memory for the shim's own background threads straight
 * from the kernel (mmap/mremap), never from the host's allocator.
 *
 * Why: a thread of ours inside malloc at the moment a host thread forks
 * leaves the child an allocator whose lock is held by a thread that does not
 * exist there. glibc's malloc takes its locks around fork, so it is safe;
 * allocators without fork handlers are not (GCC 12's AddressSanitizer runtime
 * hung `make -j4` that way: the fork child of sh waited forever for a lock the
 * parent's collector held while it allocated its tables). The collector
 * thread, busy at any moment a host may fork, therefore allocates only here.
 * Pages are zero-filled and cost nothing until written. Any thread. */
#ifndef DDSHIM_PAGES_H
#define DDSHIM_PAGES_H

#include <stddef.h>
#include <sys/mman.h>

static inline void *pages_alloc(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Grow (or make, when p is NULL) a block of old bytes to n bytes, contents
 * kept; NULL on failure, p then untouched. */
static inline void *pages_grow(void *p, size_t old, size_t n)
{
    if (!p)
        return pages_alloc(n);
    void *q = mremap(p, old ? old : 1, n, MREMAP_MAYMOVE);
    return q == MAP_FAILED ? NULL : q;
}

static inline void pages_free(void *p, size_t n)
{
    if (p)
        munmap(p, n ? n : 1);
}

#endif
