/* agent_io/stacks.h — the aggregation table of CPU samples: one entry per
 * distinct (thread, span, stack), with the number of samples and the timer
 * periods they stand for. Bounded in entries and frame bytes; what does not fit
 * is counted as dropped. Owned by the collector (adds) and uploader (reads a
 * swapped-out table) threads; the caller serializes access. */
#ifndef DDSHIM_STACKS_H
#define DDSHIM_STACKS_H

#include <stddef.h>
#include <stdint.h>

#include "common/record.h"

struct stack_entry {
    uint64_t hash;
    int32_t tid;
    uint16_t nframes;
    uint16_t flags;
    uint64_t samples;       /* records aggregated */
    uint64_t periods;       /* sum of weights: CPU time = periods * period_ns */
    uint64_t span_id, root_span_id;
    const uint64_t *pcs;    /* nframes pcs, leaf first; in the table's arena */
};

struct thread_info {
    int32_t tid;
    char name[16];
};

struct stack_table {
    struct stack_entry *slots; /* open addressing; hash == 0 marks a free slot */
    size_t cap, len, max_entries;
    uint64_t *arena;           /* pcs storage, bump-allocated */
    size_t arena_used, arena_cap; /* in uint64_t */
    struct thread_info *threads;
    size_t nthreads, threads_cap;
    uint64_t dropped_samples, dropped_periods; /* did not fit */
};

/* max_entries distinct stacks, max_frames_total pcs over all of them. */
int stacks_init(struct stack_table *t, size_t max_entries, size_t max_frames_total);
/* Add one record; 0, or -1 when it did not fit (counted in dropped_*). */
int stacks_add(struct stack_table *t, const struct sample_rec *r);
/* Remember a thread's name (first one wins within a table). */
void stacks_set_thread(struct stack_table *t, int32_t tid, const char *name);
const char *stacks_thread_name(const struct stack_table *t, int32_t tid);
int stacks_has_thread(const struct stack_table *t, int32_t tid);
/* Empty the table, keeping its memory. */
void stacks_reset(struct stack_table *t);
void stacks_free(struct stack_table *t);
size_t stacks_memory(const struct stack_table *t);

/* Span records (common/span_rec.h), each preceded by its uint32 length. */
struct span_buf {
    uint8_t *data;
    size_t len, cap, count;
};

#endif
