/* agent_io/spans.h — span records (common/span_rec.h, captured raw on host
 * threads) to Datadog spans (WIRE.md section 2): trace context from upstream
 * headers, query obfuscation, http.endpoint and resource, sampling (the
 * Agent's rate_by_service, or DD_TRACE_SAMPLE_RATE), header tags; then
 * delivery to /v0.4/traces or to the output directory as JSON lines. Also
 * counts requests per endpoint for the profile's event.json. Uploader thread
 * only (libddshim-agent.so). */
#ifndef DDSHIM_SPANS_H
#define DDSHIM_SPANS_H

#include <stddef.h>
#include <stdint.h>

#include "agent_io/transport.h"
#include "preload/config.h"

struct spool;

struct spans_state;

struct spans_state *spans_new(const struct shim_config *cfg, const char *runtime_id, int64_t pid,
                              const char *container_id);
void spans_free(struct spans_state *s);

/* Where one delivery's spans may go. */
struct spans_dest {
    const aio_target *agent;  /* the Agent, NULL when it is down */
    struct spool *spool;      /* where payloads it does not take wait, NULL for none */
    int files;                /* write JSON lines when not delivered (no Agent seen yet) */
};

/* Deliver count records (recs: each preceded by its uint32 length) in
 * batches (4096 spans or about 1 MB of msgpack): PUT each to the Agent, all
 * on one kept keep-alive connection of s's; a batch it did not take (no
 * answer, 5xx, 408, 429, or no Agent) goes to the spool. JSON lines go to
 * <dir>/<service>.<pid>.traces.jsonl when the output directory is set, and
 * for a batch neither the Agent nor the spool took when d->files is set or
 * the spool could not keep it. *to_agent / *to_file / *spooled say where
 * they went. 0 when all were delivered somewhere. */
int spans_deliver(struct spans_state *s, const struct spans_dest *d, const uint8_t *recs, size_t len,
                  size_t count, uint64_t dropped, long timeout_ms, int *to_agent, int *to_file,
                  int *spooled);

/* The requests counted per endpoint ("GET /users/{param:int}") since the last
 * call, as a JSON object text (malloc'd), or NULL when there were none. */
char *spans_take_endpoint_counts(struct spans_state *s);

#endif
