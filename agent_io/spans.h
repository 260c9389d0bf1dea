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

struct spans_state;

struct spans_state *spans_new(const struct shim_config *cfg, const char *runtime_id, int64_t pid,
                              const char *container_id);
void spans_free(struct spans_state *s);

/* Deliver count records (recs: each preceded by its uint32 length). With
 * agent != NULL, PUT them to the Agent; when that fails (or agent is NULL),
 * or the output directory is set, append them to <dir>/<service>.<pid>.traces.jsonl.
 * *to_agent / *to_file say where they went. 0 when delivered somewhere. */
int spans_deliver(struct spans_state *s, const aio_target *agent, const uint8_t *recs, size_t len,
                  size_t count, uint64_t dropped, long timeout_ms, int *to_agent, int *to_file);

/* The requests counted per endpoint ("GET /users/{param:int}") since the last
 * call, as a JSON object text (malloc'd), or NULL when there were none. */
char *spans_take_endpoint_counts(struct spans_state *s);

#endif
