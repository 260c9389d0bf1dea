/* agent_io/agent_api.h — the boundary between libddshim.so (hooks, sampler,
 * collector; libc only) and libddshim-agent.so (symbolize, pprof, libcurl,
 * jansson), which the uploader thread dlopen's RTLD_LOCAL the first time it
 * has something to deliver. Keeping the heavy libraries out of the preloaded
 * object keeps the host's start-up cost and symbol namespace untouched. */
#ifndef DDSHIM_AGENT_API_H
#define DDSHIM_AGENT_API_H

#include <stdint.h>

#include "agent_io/stacks.h"
#include "preload/config.h"

#define DDSHIM_AGENT_ABI 4 /* 4: shim_config.dwarf_max_bytes */

struct agent_settings {
    const struct shim_config *cfg;
    const char *runtime_id;  /* uuid v4 */
    const char *hostname;
    int64_t pid;
};

struct agent_profile {
    const struct stack_table *stacks;
    int64_t start_ns, end_ns;   /* CLOCK_REALTIME */
    int64_t period_ns;          /* CPU time one timer period stands for */
    uint64_t lost_periods;      /* periods lost before the table (handler/socket) */
    uint64_t samples_taken;     /* records the handler wrote this period */
    uint64_t handler_ns;        /* time the handler spent on them */
    uint64_t seq;               /* profile_seq */
    int final;                  /* the process is exiting */
};

struct ddshim_agent_ops {
    int abi;
    void *(*create)(const struct agent_settings *s);
    /* Symbolize, build, send or write. 0 when delivered somewhere. */
    int (*deliver_profile)(void *ctx, const struct agent_profile *p, long timeout_ms);
    /* Turn span records (each preceded by its uint32 length) into traces and
     * send or write them; dropped = spans that did not fit before this. */
    int (*deliver_traces)(void *ctx, const uint8_t *recs, size_t len, size_t count,
                          uint64_t dropped, long timeout_ms);
    /* A period with nothing to deliver: send what the spool holds if the
     * Agent is back. */
    void (*idle)(void *ctx, long timeout_ms);
    void (*destroy)(void *ctx);
};

/* The one symbol libddshim-agent.so exports. */
#define DDSHIM_AGENT_SYMBOL "ddshim_agent_ops_v1"

#endif
