/* common/record.h — the sample record a sampled thread's signal handler writes
 * (one datagram on the shim's socketpair) and the collector thread reads.
 * Fixed header + nframes program counters, leaf first. pc[0] is the
 * interrupted instruction; pc[1..] are return addresses. */
#ifndef DDSHIM_RECORD_H
#define DDSHIM_RECORD_H

#include <stdint.h>

#define REC_MAGIC 0xdd5a0001u
/* A control record (header only): "deliver now, the process is being
 * terminated"; sent by the terminating-signal handler. */
#define REC_MAGIC_FLUSH 0xdd5a00f1u
#define REC_MAX_FRAMES 128

struct sample_rec {
    uint32_t magic;
    uint16_t nframes;
    uint16_t flags;          /* REC_F_* */
    int32_t tid;
    uint32_t weight;         /* 1 + timer overrun: periods of CPU time this sample stands for */
    uint64_t span_id;        /* span running on the thread, 0 if none (HTTP spans, later) */
    uint64_t root_span_id;
    uint64_t pc[REC_MAX_FRAMES];
};

#define REC_F_TRUNCATED 1u   /* the stack was deeper than REC_MAX_FRAMES */

#define REC_HEADER_SIZE ((uint32_t)__builtin_offsetof(struct sample_rec, pc))
#define REC_SIZE(n) (REC_HEADER_SIZE + (uint32_t)(n) * 8u)

#endif
