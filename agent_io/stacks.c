/* agent_io/stacks.c — see stacks.h. Runs in the collector thread (adds) and
 * the uploader thread (reads and resets a table no one else holds). Never in
 * signal context; allocates only in stacks_init and for thread names, from
 * common/pages.h (the collector thread never enters the host's allocator). */
#include "agent_io/stacks.h"

#include "common/pages.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdull;
}

static uint64_t rec_hash(const struct sample_rec *r)
{
    uint64_t h = mix(0x84222325cbf29ce4ull, (uint64_t)(uint32_t)r->tid);
    h = mix(h, r->span_id);
    h = mix(h, r->root_span_id);
    for (unsigned i = 0; i < r->nframes; i++)
        h = mix(h, r->pc[i]);
    return h ? h : 1;
}

int stacks_init(struct stack_table *t, size_t max_entries, size_t max_frames_total)
{
    memset(t, 0, sizeof *t);
    size_t cap = 64;
    while (cap < max_entries * 2)
        cap *= 2;
    t->slots = pages_alloc(cap * sizeof *t->slots);
    t->arena = pages_alloc(max_frames_total * sizeof *t->arena);
    if (!t->slots || !t->arena) {
        pages_free(t->slots, cap * sizeof *t->slots);
        pages_free(t->arena, max_frames_total * sizeof *t->arena);
        memset(t, 0, sizeof *t);
        return -1;
    }
    t->cap = cap;
    t->max_entries = max_entries;
    t->arena_cap = max_frames_total;
    return 0;
}

int stacks_add(struct stack_table *t, const struct sample_rec *r)
{
    if (!t->slots)
        goto drop;
    uint64_t h = rec_hash(r);
    size_t mask = t->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct stack_entry *e = &t->slots[i];
        if (e->hash == 0) {
            if (t->len >= t->max_entries || t->arena_used + r->nframes > t->arena_cap)
                goto drop;
            uint64_t *pcs = t->arena + t->arena_used;
            memcpy(pcs, r->pc, (size_t)r->nframes * sizeof *pcs);
            t->arena_used += r->nframes;
            *e = (struct stack_entry){.hash = h, .tid = r->tid, .nframes = r->nframes,
                                      .flags = r->flags, .samples = 1, .periods = r->weight,
                                      .span_id = r->span_id, .root_span_id = r->root_span_id,
                                      .pcs = pcs};
            t->len++;
            return 0;
        }
        if (e->hash == h && e->tid == r->tid && e->nframes == r->nframes &&
            e->span_id == r->span_id && e->root_span_id == r->root_span_id &&
            memcmp(e->pcs, r->pc, (size_t)r->nframes * sizeof *e->pcs) == 0) {
            e->samples++;
            e->periods += r->weight;
            return 0;
        }
    }
drop:
    t->dropped_samples++;
    t->dropped_periods += r->weight;
    return -1;
}

void stacks_set_thread(struct stack_table *t, int32_t tid, const char *name)
{
    if (stacks_has_thread(t, tid))
        return;
    if (t->nthreads == t->threads_cap) {
        if (t->threads_cap >= 65536)
            return;
        size_t ncap = t->threads_cap ? t->threads_cap * 2 : 16;
        struct thread_info *n = pages_grow(t->threads, t->threads_cap * sizeof *n, ncap * sizeof *n);
        if (!n)
            return;
        t->threads = n;
        t->threads_cap = ncap;
    }
    struct thread_info *ti = &t->threads[t->nthreads++];
    ti->tid = tid;
    size_t len = strnlen(name, sizeof ti->name - 1);
    memcpy(ti->name, name, len);
    ti->name[len] = '\0';
}

int stacks_has_thread(const struct stack_table *t, int32_t tid)
{
    for (size_t i = 0; i < t->nthreads; i++)
        if (t->threads[i].tid == tid)
            return 1;
    return 0;
}

const char *stacks_thread_name(const struct stack_table *t, int32_t tid)
{
    for (size_t i = 0; i < t->nthreads; i++)
        if (t->threads[i].tid == tid)
            return t->threads[i].name;
    return NULL;
}

void stacks_reset(struct stack_table *t)
{
    if (t->slots && t->len)
        memset(t->slots, 0, t->cap * sizeof *t->slots);
    t->len = 0;
    t->arena_used = 0;
    t->nthreads = 0;
    t->dropped_samples = t->dropped_periods = 0;
}

void stacks_free(struct stack_table *t)
{
    pages_free(t->slots, t->cap * sizeof *t->slots);
    pages_free(t->arena, t->arena_cap * sizeof *t->arena);
    pages_free(t->threads, t->threads_cap * sizeof *t->threads);
    memset(t, 0, sizeof *t);
}

size_t stacks_memory(const struct stack_table *t)
{
    return t->cap * sizeof *t->slots + t->arena_cap * sizeof *t->arena +
           t->threads_cap * sizeof *t->threads;
}
