/* agent_io/traces.h — APM traces to the Agent (/v0.4/traces, msgpack) or, with
 * no Agent, to the output directory as JSON lines (one span a line). Used
 * only by the uploader thread (libddshim-agent.so). */
#ifndef DDSHIM_TRACES_H
#define DDSHIM_TRACES_H

#include <stddef.h>
#include <stdint.h>

#include "agent_io/transport.h"

struct span_kv {
    const char *key;
    const char *str;   /* meta value (NULL for a metric) */
    double num;        /* metric value */
    /* Optional, for the msgpack encoder (traces_encode, traces_body_add):
     * when lens is set, key is klen bytes and str slen bytes, NUL-terminated
     * or not (the uploader's span builder points into its records); otherwise
     * strlen is used. traces_write_jsonl always reads NUL-terminated strings. */
    uint32_t klen, slen;
    int lens;
};

/* Optional facts about a span_out that spare the msgpack encoder its checks
 * and strlen calls (the uploader's span builder knows them; anyone else
 * leaves them zero). set: every meta entry has a key and a value, every
 * metric a key and a finite value, all with lens set; the lengths are those
 * of name, service, resource and type (NULL counting as ""); kv_bytes is the
 * sum of klen + slen over meta and metrics. */
struct span_known {
    int set;
    uint32_t name, service, resource, type;
    size_t kv_bytes;
};

/* One finished span, as WIRE.md section 2 describes it. */
struct span_out {
    uint64_t trace_id;      /* low 64 bits, never 0 */
    uint64_t span_id;       /* never 0 */
    uint64_t parent_id;     /* 0 for a root */
    const char *name, *service, *resource, *type;
    int64_t start;          /* ns since the epoch */
    int64_t duration;       /* ns */
    int32_t error;
    const struct span_kv *meta;    size_t nmeta;
    const struct span_kv *metrics; size_t nmetrics;
    struct span_known known;       /* optional */
};

/* Encode spans as a /v0.4/traces body: an array of traces, each an array of
 * the spans sharing one trace_id (order of first appearance); msgpack in the
 * forms msgpack-c's packer chooses. *out is malloc'd. *ntraces gets the
 * number of traces. 0 or -1.
 * Left out (here and in traces_write_jsonl): spans whose trace_id or span_id
 * is 0, meta entries with a NULL key or value, metrics with a NULL key or a
 * non-finite value. NULL name/service/resource/type are sent as "". */
int traces_encode(const struct span_out *spans, size_t n, uint8_t **out, size_t *out_len,
                  size_t *ntraces);

/* The same body built one span at a time, for the uploader: each span is
 * encoded as soon as it is built, so no array of every span (and of the
 * storage behind their strings) is held. Byte for byte what traces_encode
 * gives for the same spans. Memory is kept across traces_body_reset. */
typedef struct traces_body {
    uint8_t *p;       /* room for the outer array header, then [0x91, span map] per span */
    size_t len, cap;
    uint64_t *ids;    /* trace_id of each span kept */
    size_t *off;      /* where each kept span starts in p */
    size_t n, ncap;
    size_t left_out;  /* spans with a zero trace_id or span_id */
    uint8_t *grouped; /* the body regrouped, when some trace has several spans */
    int oom;
} traces_body;

void traces_body_init(traces_body *b);
/* Append one span (left out as in traces_encode). 0, or -1 on OOM (the body
 * is then unusable until traces_body_reset). */
int traces_body_add(traces_body *b, const struct span_out *s);
/* Bytes encoded so far (about the body's size). */
size_t traces_body_size(const traces_body *b);
/* The finished body (*out points into b, valid until the next reset or free)
 * and its number of traces. 0 or -1. */
int traces_body_finish(traces_body *b, const uint8_t **out, size_t *out_len, size_t *ntraces);
void traces_body_reset(traces_body *b);
void traces_body_free(traces_body *b);

/* Everything the trace upload headers need. */
struct traces_meta {
    const char *lang_version;     /* Datadog-Meta-Lang-Version */
    const char *tracer_version;   /* Datadog-Meta-Tracer-Version */
    const char *container_id;     /* may be NULL */
};

/* PUT <agent>/v0.4/traces with Content-Type application/msgpack,
 * X-Datadog-Trace-Count, Datadog-Meta-Lang: cpp, Datadog-Meta-Lang-Version,
 * Datadog-Meta-Tracer-Version, Datadog-Client-Computed-Top-Level: yes,
 * Datadog-Container-ID when known. On a 2xx answer, the reply's
 * rate_by_service object (JSON text, malloc'd) goes to *rates_json (NULL if
 * none). Returns 0 on 2xx, -1 otherwise; *http_status as in aio_upload_profile. */
int traces_upload(const aio_target *t, const struct traces_meta *m, const uint8_t *body,
                  size_t len, size_t ntraces, long timeout_ms, long *http_status,
                  char **rates_json);

/* traces_upload on a kept connection (transport.h's aio_conn): one
 * keep-alive connection to the Agent across uploads; a failed upload
 * discards it. conn NULL: a connection for this upload alone. After the
 * host's OpenSSL has stopped (exit), both go through aio_raw_request. */
int traces_upload_conn(aio_conn *conn, const aio_target *t, const struct traces_meta *m,
                       const uint8_t *body, size_t len, size_t ntraces, long timeout_ms,
                       long *http_status, char **rates_json);

/* Look up the sampling rate for service/env in a rate_by_service JSON object
 * ({"service:web,env:prod": 0.5, "service:,env:": 1}). Returns the rate, or
 * -1 when neither the exact key nor the default key is present. A value that
 * is not a number in [0, 1] counts as absent. NULL service/env mean "". */
double traces_rate_for(const char *rates_json, const char *service, const char *env);

/* Append spans to <dir>/<service>.<pid>.traces.jsonl (created 0600, O_APPEND,
 * O_NOFOLLOW, dir 0700 as aio_write_profile_file does), one JSON object per
 * line with the fields of span_out (ids as unsigned decimal numbers; meta and
 * metrics as objects). Returns 0 or -1. The batch goes in one write; nothing
 * is created when no span is left to write. Strings that are not UTF-8 get
 * their non-ASCII bytes replaced by '_'; anything at the name but a regular
 * file of ours with a single link (another user's file, a hard link) is
 * refused. */
int traces_write_jsonl(const char *dir, const char *service, int64_t pid,
                       const struct span_out *spans, size_t n);

#endif
