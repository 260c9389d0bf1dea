/* bench/stacks.c — a program with many distinct stacks, for the memory bench.
 * 100 functions f00..f99; each unit of work walks a call path of 3 of them
 * (f_a -> f_b -> f_c, chosen by a per-thread pseudo-random path number) and
 * spins ~1 ms at the bottom, so nearly every CPU sample sees a stack not seen
 * before (10^6 possible paths). usage: stacks SECONDS [THREADS] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile double sink;
static long long until;

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

typedef void (*fn_t)(int level, unsigned long path);
static fn_t table[100];

__attribute__((noinline)) static void spin(void)
{
    double x = 1.0;
    for (int i = 0; i < 250000; i++)
        x = x * 1.0000001 + 0.5 / (x + i);
    sink += x;
}

#define F(n)                                                                                   \
    __attribute__((noinline)) void f##n(int level, unsigned long path)                          \
    {                                                                                          \
        if (level == 0)                                                                        \
            spin();                                                                            \
        else                                                                                   \
            table[path % 100](level - 1, path / 100);                                          \
        sink += n;                                                                             \
    }
#define F10(d) F(d##0) F(d##1) F(d##2) F(d##3) F(d##4) F(d##5) F(d##6) F(d##7) F(d##8) F(d##9)
F10() F10(1) F10(2) F10(3) F10(4) F10(5) F10(6) F10(7) F10(8) F10(9)
#define T(n) table[n] = f##n;
#define T10(d) T(d##0) T(d##1) T(d##2) T(d##3) T(d##4) T(d##5) T(d##6) T(d##7) T(d##8) T(d##9)

static void *worker(void *p)
{
    unsigned long x = (unsigned long)p * 2654435761u + 12345;
    long n = 0;
    while (mono_ns() < until) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned long path = x % 1000000;
        table[path % 100](2, path / 100);
        n++;
    }
    return (void *)n;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 20;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    if (threads < 1 || threads > 16)
        threads = 2;
    T10() T10(1) T10(2) T10(3) T10(4) T10(5) T10(6) T10(7) T10(8) T10(9)
    until = mono_ns() + (long long)(secs * 1e9);
    pthread_t t[16];
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, (void *)(long)(i + 1));
    long total = 0;
    for (int i = 0; i < threads; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (long)r;
    }
    printf("{\"paths\": %ld}\n", total);
    return 0;
}
