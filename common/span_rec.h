/* common/span_rec.h — what an HTTP server span looks like on its way from the
 * I/O hooks (http/conn.c, host threads) through the span ring to the uploader
 * (agent_io/spans.c): fixed fields plus the captured strings, raw. Everything
 * that costs more than a copy (context extraction, query obfuscation, the
 * endpoint, sampling) happens in the uploader, off the host's threads; raw
 * values never leave the process unredacted. */
#ifndef DDSHIM_SPAN_REC_H
#define DDSHIM_SPAN_REC_H

#include <stdint.h>

#define SPAN_MAGIC 0xdd5b0001u

enum span_str {
    SS_METHOD, SS_TARGET, SS_HOST, SS_USER_AGENT,
    SS_DD_TRACE_ID, SS_DD_PARENT_ID, SS_DD_PRIORITY, SS_DD_ORIGIN, SS_DD_TAGS,
    SS_TRACEPARENT, SS_TRACESTATE,
    SS_REQ_EXTRA0,                       /* + i: DD_TRACE_HEADER_TAGS request values */
    SS_RESP_EXTRA0 = SS_REQ_EXTRA0 + 8,  /* + i: response values */
    SS_COUNT = SS_RESP_EXTRA0 + 8
};

#define SPAN_F_NO_RESPONSE 1u      /* the connection ended before a response */
#define SPAN_F_TARGET_TRUNCATED 2u
#define SPAN_F_RESP_UNTIL_CLOSE 4u /* body delimited by close: ended at close */
#define SPAN_F_HTTP10 8u

struct span_rec {
    uint32_t magic;
    uint32_t flags;
    uint64_t span_id;           /* chosen when the request's first byte was read */
    int64_t start_ns;           /* CLOCK_REALTIME at the first byte read */
    int64_t duration_ns;        /* to the last byte of the response written */
    int32_t status;             /* 0 when no response */
    int32_t tid;                /* thread that read the request */
    int64_t req_content_length; /* -1 unknown */
    int64_t resp_content_length;/* -1 unknown; body bytes counted otherwise */
    uint16_t peer_port;
    uint8_t peer_family;        /* 4, 6, or 0 (unix/unknown) */
    uint8_t version_minor;
    uint8_t peer_addr[16];
    uint16_t len[SS_COUNT];     /* each string's length; strings follow, in order, no NULs */
    char strings[];
};

#define SPAN_REC_MAX 16384         /* a record never exceeds this */

#endif
