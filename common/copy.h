/* common/copy.h — the short-string copy of the hook path (http/parser.c's
 * captures, http/conn.c's span record) and of the uploader's msgpack encoder
 * (agent_io/traces.c): header values, targets and methods are mostly
 * 3 to 100 bytes, where the compiler's inline expansion of a variable-length
 * memcpy (rep movs) or a call to glibc's costs more than the copy itself:
 * rep movs takes ~30 cycles to start on current x86 cores, a fifth of a
 * request's whole parse. Overlapping word and 16-byte moves instead, no loop
 * below 33 bytes, no libc call at all (so async-signal-safe like the rest of
 * the hook path). Any thread, any context. */
#ifndef DDSHIM_COMMON_COPY_H
#define DDSHIM_COMMON_COPY_H

#include <stddef.h>
#include <stdint.h>

#if defined(__SSE2__)
#include <emmintrin.h>
static inline __attribute__((always_inline)) void copy16(uint8_t *d, const uint8_t *s)
{
    _mm_storeu_si128((__m128i *)(void *)d, _mm_loadu_si128((const __m128i *)(const void *)s));
}
#else
static inline __attribute__((always_inline)) void copy16(uint8_t *d, const uint8_t *s)
{
    uint64_t a, b;
    __builtin_memcpy(&a, s, 8);
    __builtin_memcpy(&b, s + 8, 8);
    __builtin_memcpy(d, &a, 8);
    __builtin_memcpy(d + 8, &b, 8);
}
#endif

/* dst and src do not overlap. Reads and writes only [0, n) of each. */
static inline __attribute__((always_inline)) void copy_bytes(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    if (n >= 16) {
        if (n > 32) {
            for (size_t i = 0; i < n - 16; i += 16)
                copy16(d + i, s + i);
        } else {
            copy16(d, s);
        }
        copy16(d + n - 16, s + n - 16); /* the tail, overlapping what is done */
    } else if (n >= 8) {
        uint64_t a, b;
        __builtin_memcpy(&a, s, 8);
        __builtin_memcpy(&b, s + n - 8, 8);
        __builtin_memcpy(d, &a, 8);
        __builtin_memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        __builtin_memcpy(&a, s, 4);
        __builtin_memcpy(&b, s + n - 4, 4);
        __builtin_memcpy(d, &a, 4);
        __builtin_memcpy(d + n - 4, &b, 4);
    } else if (n) {
        d[0] = s[0];
        d[n / 2] = s[n / 2];
        d[n - 1] = s[n - 1];
    }
}

#endif
