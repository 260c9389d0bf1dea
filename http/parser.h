/* http/parser.h — incremental HTTP/1.x parsers for the byte streams a server
 * reads (requests) and writes (responses). Run on host threads inside the
 * read/write hooks: they never allocate, never block, never call libc beyond
 * memcpy/memcmp-like helpers, are safe to call from a host's signal handler
 * (async-signal-safe), resume on any split of the input (one byte at a time
 * included), and cost O(bytes). Hostile input can only make them return
 * HTTP_P_ERROR; it cannot make them slow, loop, or write outside their state.
 *
 * Values are copied (truncated to the field size, with a flag) into the
 * parser's own fixed-size fields, so the caller's buffers need not persist. */
#ifndef DDSHIM_HTTP_PARSER_H
#define DDSHIM_HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>

/* Events returned by the feed functions (bit set; several may be set at once
 * when one chunk of input completes several steps). */
enum {
    HTTP_P_NEED_MORE = 0,     /* consumed everything given, message not done */
    HTTP_P_HEADERS = 1,       /* the head (start line + headers) is complete: fields valid */
    HTTP_P_DONE = 2,          /* the whole message (head + body) is complete */
    HTTP_P_ERROR = 4,         /* not HTTP/1.x (or broken): stop parsing this stream */
};

/* Header values the request parser captures. Names are matched
 * case-insensitively. Extra names (DD_TRACE_HEADER_TAGS) go in `extra`. */
#define HTTP_MAX_EXTRA 8

typedef struct http_field {
    uint16_t len;
    uint8_t present, truncated;
    char v[512];                /* len bytes and a NUL */
} http_field;

/* What both parsers have, first in each and in the same order, so that one
 * pointer (http_msg) reaches it in either (through the union below: the
 * members keep their plain names, rq.content_length, rs.chunked).
 * Layout: what one message touches comes first (scalars, then the parser's
 * own state), the large buffers after, so that the hooks touch a few cache
 * lines per message, not one per field. */
#define HTTP_MSG_FIELDS                                                                            \
    /* ---- results, valid after HTTP_P_HEADERS ---- */                                            \
    int64_t content_length;     /* -1 when absent */                                               \
    uint8_t version_minor;      /* HTTP/1.0 -> 0, HTTP/1.1 -> 1 */                                 \
    uint8_t chunked;            /* Transfer-Encoding ends with chunked */                          \
    uint8_t conn_close;         /* Connection: close (or HTTP/1.0 without keep-alive) */           \
    uint16_t scratch_len;       /* (private) */                                                    \
    /* fields that are present, by capture bit: see http_req and http_resp */                     \
    uint32_t present_mask;                                                                         \
    /* ---- private state ---- */                                                                  \
    uint32_t head_bytes;        /* bytes of head so far (bounded: HTTP_MAX_HEAD) */                \
    uint32_t st[16];                                                                               \
    uint64_t remaining;         /* body bytes / chunk bytes left */                                \
    char scratch[64];           /* start of a header name cut by the end of a read */              \
    /* ---- configuration, set before the first feed (kept by reset) ---- */                       \
    const char *extra_names[HTTP_MAX_EXTRA]; /* lowercase names, NULL-terminated or full */

typedef struct http_msg {
    HTTP_MSG_FIELDS
} http_msg;

typedef struct http_req {
    union {
        http_msg msg;
        struct {
            HTTP_MSG_FIELDS
        };
    };
    /* present_mask, by capture bit: bit 0..8 host, user_agent, dd_trace_id,
     * dd_parent_id, dd_sampling_priority, dd_origin, dd_tags, traceparent,
     * tracestate (the order of span_rec's strings), bit 9 + i extra[i] (see
     * http_req_field) */
    char method[16];
    uint8_t method_len;
    uint8_t target_truncated;
    uint8_t expect_continue;    /* Expect: 100-continue */
    uint16_t target_len;
    /* ---- results: the large buffers ---- */
    char target[2048];          /* request-target as sent ("/path?query", or absolute-form) */
    http_field host, user_agent;
    http_field dd_trace_id, dd_parent_id, dd_sampling_priority, dd_origin, dd_tags;
    http_field traceparent, tracestate;
    http_field extra[HTTP_MAX_EXTRA];  /* values of the configured extra header names */
} http_req;

/* Longest request/response head accepted; longer is HTTP_P_ERROR. */
#define HTTP_MAX_HEAD (64 * 1024)

/* Start (or restart, for the next request on a keep-alive connection) a
 * request parser. Keeps extra_names. */
void http_req_reset(http_req *p);
/* The same for a parser that is all zeros or was reset before (and since
 * changed only by feed): clears only the fields present_mask names, so it
 * touches a few cache lines instead of every field. */
void http_req_reuse(http_req *p);
/* The field of capture bit b (see present_mask), b < HTTP_REQ_FIELDS. */
#define HTTP_REQ_FIELDS (9 + HTTP_MAX_EXTRA)
extern const uint16_t http_req_field_off[HTTP_REQ_FIELDS];
static inline const http_field *http_req_field(const http_req *p, unsigned b)
{
    return (const http_field *)((const char *)p + http_req_field_off[b]);
}

/* Feed bytes read from the socket. Returns the events of this call; *used
 * receives the bytes consumed: on HTTP_P_DONE it stops right after the end of
 * the message (the rest belongs to the next, pipelined, request: reset and
 * feed it again); otherwise it is len. After HTTP_P_ERROR the parser stays in
 * error until reset. A request line must start the stream: anything that is
 * not "TOKEN SP target SP HTTP/1.x CRLF" (a leading CRLF or two tolerated) is
 * an error after at most 32 bytes of its start, so binary protocols are
 * rejected early. */
int http_req_feed(http_req *p, const uint8_t *data, size_t len, size_t *used);

typedef struct http_resp {
    union {
        http_msg msg;           /* present_mask: bit i, extra[i] is present */
        struct {
            HTTP_MSG_FIELDS
        };
    };
    int status;                 /* 100..599 */
    uint8_t body_until_close;   /* no length, not chunked, body allowed: ends at close */
    uint8_t no_body;            /* (private) set by http_resp_reset: HEAD request */
    http_field extra[HTTP_MAX_EXTRA];
} http_resp;

/* Start a response parser for the response to a request whose method was
 * HEAD (is_head != 0: no body whatever the headers say). 1xx, 204 and 304
 * never have a body. A 1xx response is reported as HTTP_P_HEADERS|HTTP_P_DONE
 * with status < 200: the caller resets and waits for the final response. */
void http_resp_reset(http_resp *p, int is_head);
/* As http_req_reuse. */
void http_resp_reuse(http_resp *p, int is_head);

/* Feed bytes written to the socket; same contract as http_req_feed. For a body
 * delimited by close, HTTP_P_DONE never comes: the caller ends it at close. */
int http_resp_feed(http_resp *p, const uint8_t *data, size_t len, size_t *used);

/* Bytes of body that went out without passing through feed (sendfile): counts
 * them against Content-Length. Returns the events (HTTP_P_DONE when complete). */
int http_resp_skip_body(http_resp *p, uint64_t n);

#endif
