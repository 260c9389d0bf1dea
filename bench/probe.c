/* bench/probe.c — the machine's speed right now, for bench.py's noise table:
 * an ALU loop (registers only) and a dependent pointer chase through 4 MB
 * (past this CPU's L2, inside its L3: what the hook path and the signal
 * handler miss into). A neighbour on the host that thrashes the shared cache
 * or memory slows the second and not the first; neither shows in any load or
 * steal counter of this guest. usage: probe
 * Prints JSON: ns per ALU step and per chase step (best of 3 passes). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(void)
{
    enum { N = (4 << 20) / sizeof(uint32_t), STEPS = 1 << 20, ALU = 1 << 24 };
    uint32_t *next = malloc(N * sizeof *next);
    if (!next)
        return 1;
    /* one random cycle through every slot (Sattolo's shuffle), 16 slots
     * apart at least in cache lines on average: each step a fresh line */
    for (uint32_t i = 0; i < N; i++)
        next[i] = i;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint32_t i = N - 1; i > 0; i--) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t j = (uint32_t)(x % i), t = next[i];
        next[i] = next[j];
        next[j] = t;
    }
    double best_alu = 1e30, best_mem = 1e30;
    volatile uint32_t sink;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = now_ns();
        uint32_t h = 2166136261u;
        for (uint32_t i = 0; i < ALU; i++)
            h = (h ^ i) * 16777619u;
        sink = h;
        double t1 = now_ns();
        uint32_t p = 0;
        for (uint32_t i = 0; i < STEPS; i++)
            p = next[p];
        sink = p;
        double t2 = now_ns();
        if ((t1 - t0) / ALU < best_alu)
            best_alu = (t1 - t0) / ALU;
        if ((t2 - t1) / STEPS < best_mem)
            best_mem = (t2 - t1) / STEPS;
    }
    (void)sink;
    printf("{\"alu_ns\": %.3f, \"chase_ns\": %.2f}\n", best_alu, best_mem);
    free(next);
    return 0;
}
