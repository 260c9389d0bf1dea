/* agent_io/spool.h — payloads the Agent did not take (absent, refusing,
 * answering 5xx, too slow), kept on disk until it takes them.
 *
 * One directory (DD_SHIM_SPOOL_DIR, default /var/tmp/ddshim-<euid>), shared by
 * every process of the user that talks to the same Agent: a process that
 * finds the Agent back delivers what is there, its own payloads and those of
 * processes that ended during the outage. The directory is bounded in bytes
 * (DD_SHIM_SPOOL_MAX_BYTES): the oldest payloads are dropped first, and the
 * drops are counted. Each payload is one file holding the exact bytes the
 * upload would have sent; a process claims a file by renaming it, so two
 * processes never deliver the same payload.
 *
 * Threads: only the uploader thread (libddshim-agent.so) calls in. */
#ifndef DDSHIM_SPOOL_H
#define DDSHIM_SPOOL_H

#include <stddef.h>
#include <stdint.h>

enum spool_kind { SPOOL_PROFILE = 'p', SPOOL_TRACES = 't' };

/* One payload, as read back. Pointers are valid during the send callback. */
struct spool_entry {
    int kind;                  /* SPOOL_PROFILE or SPOOL_TRACES */
    const char *container_id;  /* "" when none */
    const uint8_t *event;      /* profile: event.json text (not NUL-terminated) */
    size_t event_len;
    const uint8_t *body;       /* profile: gzip'd pprof; traces: msgpack /v0.4 body */
    size_t body_len;
    uint64_t count;            /* traces: X-Datadog-Trace-Count */
    int64_t created_ns;        /* CLOCK_REALTIME when spooled */
};

struct spool_stats {
    uint64_t put, put_bytes;        /* payloads written */
    uint64_t sent;                  /* delivered from the spool */
    uint64_t evicted, evicted_bytes;/* dropped by the byte bound (oldest first) */
    uint64_t rejected;              /* the Agent answered 4xx: dropped */
    uint64_t failed;                /* could not be written (disk full, bad dir) */
};

struct spool;

/* An upload that failed this way may succeed later: no answer (0), 408,
 * 429, or 5xx. Any other answer refuses the payload for good. */
static inline int spool_retryable(long http_status)
{
    return http_status == 0 || http_status == 408 || http_status == 429 || http_status >= 500;
}

/* NULL when max_bytes is 0 (spooling off) or on OOM. Nothing touches the
 * disk until the first put or drain. agent_url tags each payload: a drain
 * only delivers payloads meant for the same Agent. announce: an unusable
 * directory is said on stderr (warn) rather than at info level. */
struct spool *spool_new(const char *dir, uint64_t max_bytes, const char *agent_url, int64_t pid,
                        int announce);
void spool_free(struct spool *s);

/* Write one payload (event may be NULL for traces), then drop the oldest
 * payloads until the directory holds at most max_bytes. 0, or -1 when it
 * could not be kept (counted as failed, or as evicted when larger than the
 * bound). */
int spool_put(struct spool *s, int kind, const char *container_id, const void *event,
              size_t event_len, const void *body, size_t body_len, uint64_t count);

/* The send callback: 0 delivered, 1 the Agent is not taking payloads now
 * (the payload stays, draining stops), -1 the Agent refused this payload for
 * good (4xx: it is dropped and counted). */
typedef int (*spool_send_fn)(void *arg, const struct spool_entry *e, long timeout_ms);

/* Deliver waiting payloads, oldest first, until the spool is empty, send
 * says 1, or deadline_ns (CLOCK_MONOTONIC) passes. Returns how many were
 * delivered. */
int spool_drain(struct spool *s, int64_t deadline_ns, spool_send_fn send, void *arg);

/* Payloads waiting for this spool's Agent (a directory scan). */
int spool_pending(struct spool *s);

const struct spool_stats *spool_stats(const struct spool *s);

#endif
