/* tests/unit/test_stacks.c — agent_io/stacks.c: aggregation by (thread, span,
 * stack), weights, bounds (entries and frames) with counted drops, thread
 * names, reset. */
#include "agent_io/stacks.h"

#include <stdio.h>
#include <string.h>

static int n, failed;
static void ok(int cond, const char *desc)
{
    n++;
    if (!cond)
        failed++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n, desc);
}

static struct sample_rec rec(int tid, int nf, uint64_t base, uint32_t weight)
{
    struct sample_rec r;
    memset(&r, 0, sizeof r);
    r.magic = REC_MAGIC;
    r.tid = tid;
    r.nframes = (uint16_t)nf;
    r.weight = weight;
    for (int i = 0; i < nf; i++)
        r.pc[i] = base + (uint64_t)i;
    return r;
}

static const struct stack_entry *find(const struct stack_table *t, int tid, uint64_t base)
{
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].hash && t->slots[i].tid == tid && t->slots[i].pcs[0] == base)
            return &t->slots[i];
    return NULL;
}

int main(void)
{
    struct stack_table t;
    ok(stacks_init(&t, 4, 20) == 0, "init");
    struct sample_rec a = rec(1, 5, 0x1000, 1), b = rec(2, 5, 0x1000, 3), c = rec(1, 5, 0x2000, 1);
    stacks_add(&t, &a);
    stacks_add(&t, &a);
    stacks_add(&t, &b);
    stacks_add(&t, &b);
    stacks_add(&t, &c);
    const struct stack_entry *ea = find(&t, 1, 0x1000), *eb = find(&t, 2, 0x1000);
    ok(t.len == 3, "same stack on another thread is another entry");
    ok(ea && ea->samples == 2 && ea->periods == 2, "identical samples aggregate");
    ok(eb && eb->samples == 2 && eb->periods == 6, "weights (1 + overrun) are summed as periods");
    struct sample_rec s = a;
    s.span_id = 77;
    stacks_add(&t, &s);
    ok(t.len == 4, "a different span id is a different entry");
    struct sample_rec d = rec(3, 2, 0x3000, 2);
    ok(stacks_add(&t, &d) == -1 && t.dropped_samples == 1 && t.dropped_periods == 2,
       "beyond max entries: dropped and counted");
    stacks_add(&t, &a);
    ok(find(&t, 1, 0x1000)->samples == 3, "existing entries still aggregate when full");
    stacks_reset(&t);
    ok(t.len == 0 && t.dropped_samples == 0 && !find(&t, 1, 0x1000), "reset empties the table");
    struct sample_rec big = rec(1, 21, 0x5000, 1);
    ok(stacks_add(&t, &big) == -1 && t.dropped_samples == 1, "beyond the frame budget: dropped and counted");
    struct sample_rec z = rec(4, 0, 0, 1);
    ok(stacks_add(&t, &z) == 0, "an empty stack is accepted");
    stacks_set_thread(&t, 7, "worker-with-a-very-long-name");
    stacks_set_thread(&t, 7, "other");
    ok(stacks_thread_name(&t, 7) && strcmp(stacks_thread_name(&t, 7), "worker-with-a-v") == 0,
       "thread names kept (first wins, 15 chars)");
    ok(stacks_thread_name(&t, 8) == NULL && !stacks_has_thread(&t, 8), "unknown thread: no name");
    ok(stacks_memory(&t) > 0, "memory accounted");
    stacks_free(&t);

    /* Many distinct stacks: every one found again, counts exact. */
    ok(stacks_init(&t, 4096, 4096 * 8) == 0, "init large");
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 4096; i++) {
            struct sample_rec r = rec(i % 7, 8, 0x100000 + (uint64_t)i * 64, 1);
            stacks_add(&t, &r);
        }
    int good = 1;
    for (int i = 0; i < 4096; i++) {
        const struct stack_entry *e = find(&t, i % 7, 0x100000 + (uint64_t)i * 64);
        good &= e && e->samples == 3;
    }
    ok(good && t.len == 4096 && t.dropped_samples == 0, "4096 distinct stacks x 3 rounds: exact counts");
    stacks_free(&t);
    printf("1..%d\n", n);
    return failed ? 1 : 0;
}
