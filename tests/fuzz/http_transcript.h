/* tests/fuzz/http_transcript.h — test-only helper shared by the libFuzzer
 * target and tests/unit/test_http_parser.c: feeds a byte stream to the
 * request or response parser cut into given pieces, resets and continues on
 * HTTP_P_DONE (pipelining), and records a transcript (per message: events,
 * stream offset where it ended, a digest of every result field at
 * HTTP_P_HEADERS and at HTTP_P_DONE) while checking the invariants of
 * http/parser.h after every call. Two transcripts of the same stream must be
 * identical whatever the cuts: that is the "resumable at any split" property.
 *
 * Header-only with static functions so each test binary links only the
 * parser object. */
#ifndef DDSHIM_TEST_HTTP_TRANSCRIPT_H
#define DDSHIM_TEST_HTTP_TRANSCRIPT_H

#include "http/parser.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HX_MAXMSG 64

typedef struct hx_msg {
    int ev;              /* events of the message, OR'd over the calls */
    uint64_t end;        /* stream offset right after the message (DONE) */
    uint64_t h_head;     /* digest of the results at HTTP_P_HEADERS */
    uint64_t h_end;      /* digest at DONE / at the end of the stream */
    int status;
} hx_msg;

typedef struct hx_tr {
    unsigned n;                 /* messages (the last may be incomplete) */
    hx_msg m[HX_MAXMSG];
    int error;                  /* the stream ended in HTTP_P_ERROR */
    int overflow;               /* more than HX_MAXMSG messages: stopped */
    unsigned bad;               /* invariant violations */
    const char *why;            /* the first one */
    uint64_t calls;
} hx_tr;

static inline uint64_t hx_mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = (const uint8_t *)p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define HX_MIXV(h, v) ((h) = hx_mix((h), &(v), sizeof(v)))

static inline uint64_t hx_field(uint64_t h, const http_field *f)
{
    uint16_t len = f->len > 511 ? 511 : f->len;
    HX_MIXV(h, f->len);
    HX_MIXV(h, f->present);
    HX_MIXV(h, f->truncated);
    return hx_mix(h, f->v, len);
}

static inline uint64_t hx_req_digest(const http_req *p)
{
    uint64_t h = 0xcbf29ce484222325ull;
    HX_MIXV(h, p->method_len);
    h = hx_mix(h, p->method, p->method_len < 16 ? p->method_len : 15);
    HX_MIXV(h, p->version_minor);
    HX_MIXV(h, p->target_len);
    h = hx_mix(h, p->target, p->target_len < 2048 ? p->target_len : 2047);
    HX_MIXV(h, p->target_truncated);
    HX_MIXV(h, p->content_length);
    HX_MIXV(h, p->chunked);
    HX_MIXV(h, p->expect_continue);
    HX_MIXV(h, p->conn_close);
    const http_field *fs[] = { &p->host, &p->user_agent, &p->dd_trace_id, &p->dd_parent_id,
                               &p->dd_sampling_priority, &p->dd_origin, &p->dd_tags,
                               &p->traceparent, &p->tracestate };
    for (unsigned i = 0; i < sizeof fs / sizeof fs[0]; i++)
        h = hx_field(h, fs[i]);
    for (unsigned i = 0; i < HTTP_MAX_EXTRA; i++)
        h = hx_field(h, &p->extra[i]);
    return h;
}

static inline uint64_t hx_resp_digest(const http_resp *p)
{
    uint64_t h = 0xcbf29ce484222325ull;
    HX_MIXV(h, p->status);
    HX_MIXV(h, p->version_minor);
    HX_MIXV(h, p->content_length);
    HX_MIXV(h, p->chunked);
    HX_MIXV(h, p->conn_close);
    HX_MIXV(h, p->body_until_close);
    for (unsigned i = 0; i < HTTP_MAX_EXTRA; i++)
        h = hx_field(h, &p->extra[i]);
    return h;
}

/* The private state too, at the end of a stream that did not fail: a split
 * must leave the parser in exactly the state the whole input leaves it. */
static inline uint64_t hx_state_digest(uint64_t h, const uint32_t *st, uint64_t remaining,
                                       uint16_t scratch_len, uint32_t head_bytes)
{
    h = hx_mix(h, st, 16 * sizeof(uint32_t));
    HX_MIXV(h, remaining);
    HX_MIXV(h, scratch_len);
    HX_MIXV(h, head_bytes);
    return h;
}

static inline void hx_bad(hx_tr *t, const char *why)
{
    if (!t->bad++)
        t->why = why;
}

static inline int hx_secret(const char *name)
{
    static const char *const s[] = { "authorization", "cookie", "set-cookie",
                                     "proxy-authorization" };
    for (unsigned i = 0; i < 4; i++) {
        const char *a = s[i], *b = name;
        while (*a && (*b | 0x20) == *a)
            a++, b++;
        if (!*a && !*b)
            return 1;
    }
    return 0;
}

static inline void hx_check_field(hx_tr *t, const http_field *f, int head_done)
{
    if (f->len > 511)
        hx_bad(t, "field len > 511");
    if (f->truncated && f->len != 511)
        hx_bad(t, "truncated field not full");
    if (head_done && f->v[f->len > 511 ? 511 : f->len] != 0)
        hx_bad(t, "field not NUL-terminated");
    if (!f->present && f->len)
        hx_bad(t, "absent field with a value");
}

static inline void hx_check_req(hx_tr *t, const http_req *p, int head_done)
{
    if (p->method_len > 15 || p->method[p->method_len > 15 ? 15 : p->method_len] != 0)
        hx_bad(t, "method bounds/NUL");
    if (p->target_len > 2047 || p->target[p->target_len > 2047 ? 2047 : p->target_len] != 0)
        hx_bad(t, "target bounds/NUL");
    if (p->target_truncated && p->target_len != 2047)
        hx_bad(t, "target truncated but not full");
    const http_field *fs[] = { &p->host, &p->user_agent, &p->dd_trace_id, &p->dd_parent_id,
                               &p->dd_sampling_priority, &p->dd_origin, &p->dd_tags,
                               &p->traceparent, &p->tracestate };
    for (unsigned i = 0; i < sizeof fs / sizeof fs[0]; i++)
        hx_check_field(t, fs[i], head_done);
    for (unsigned i = 0; i < HTTP_MAX_EXTRA; i++) {
        hx_check_field(t, &p->extra[i], head_done);
        if (p->extra_names[i] && hx_secret(p->extra_names[i]) &&
            (p->extra[i].present || p->extra[i].len))
            hx_bad(t, "a secret header was captured");
    }
    if (head_done) {
        if (p->method_len == 0 || p->target_len == 0)
            hx_bad(t, "head without method/target");
        if (p->version_minor > 9)
            hx_bad(t, "version");
        if (p->chunked && p->content_length != -1)
            hx_bad(t, "chunked with a content length");
        if (p->content_length < -1)
            hx_bad(t, "content length < -1");
    }
}

static inline void hx_check_resp(hx_tr *t, const http_resp *p, int head_done)
{
    for (unsigned i = 0; i < HTTP_MAX_EXTRA; i++) {
        hx_check_field(t, &p->extra[i], head_done);
        if (p->extra_names[i] && hx_secret(p->extra_names[i]) &&
            (p->extra[i].present || p->extra[i].len))
            hx_bad(t, "a secret header was captured");
    }
    if (head_done) {
        if (p->status < 100 || p->status > 599)
            hx_bad(t, "status out of range");
        if (p->body_until_close && (p->chunked || p->no_body || p->status < 200 ||
                                    p->status == 204 || p->status == 304 || !p->conn_close))
            hx_bad(t, "close-delimited body where none is allowed");
        if (p->content_length < -1)
            hx_bad(t, "content length < -1");
    }
}

/* One stream through the request parser, cut at cuts[0..ncuts) (increasing
 * offsets). p->extra_names must be set; the parser is reset here. */
static inline void hx_run_req(http_req *p, const uint8_t *d, size_t len, const size_t *cuts,
                              unsigned ncuts, hx_tr *t)
{
    memset(t, 0, sizeof *t);
    http_req_reset(p);
    int ev_msg = 0;
    uint64_t hh = 0;
    size_t start = 0;
    for (unsigned c = 0; c <= ncuts && !t->error && !t->overflow; c++) {
        size_t end = c < ncuts ? cuts[c] : len;
        if (end < start || end > len) {
            hx_bad(t, "bad cuts");
            return;
        }
        const uint8_t *q = d + start;
        size_t n = end - start;
        uint64_t off = start;
        start = end;
        /* at most one extra round per message: bounded by n + HX_MAXMSG */
        while (n > 0) {
            size_t used = (size_t)-1;
            int ev = http_req_feed(p, q, n, &used);
            t->calls++;
            if (used > n) {
                hx_bad(t, "used > len");
                return;
            }
            if (!(ev & HTTP_P_DONE) && used != n)
                hx_bad(t, "used != len without DONE");
            if ((ev & HTTP_P_DONE) && used == 0)
                hx_bad(t, "DONE without consuming anything");
            if (ev & ~(HTTP_P_HEADERS | HTTP_P_DONE | HTTP_P_ERROR))
                hx_bad(t, "unknown event bits");
            if ((ev & HTTP_P_HEADERS) && (ev_msg & HTTP_P_HEADERS))
                hx_bad(t, "HEADERS twice");
            if ((ev & HTTP_P_DONE) && !((ev | ev_msg) & HTTP_P_HEADERS))
                hx_bad(t, "DONE before HEADERS");
            ev_msg |= ev;
            hx_check_req(t, p, (ev_msg & HTTP_P_HEADERS) != 0);
            if (ev & HTTP_P_HEADERS)
                hh = hx_req_digest(p);
            off += used;
            q += used;
            n -= used;
            if (ev & HTTP_P_ERROR) {
                t->error = 1;
                break;
            }
            if (ev & HTTP_P_DONE) {
                uint64_t hd = hx_req_digest(p);
                if (hd != hh)
                    hx_bad(t, "results changed between HEADERS and DONE");
                if (t->n == HX_MAXMSG) {
                    t->overflow = 1;
                    break;
                }
                t->m[t->n++] = (hx_msg){ ev_msg, off, hh, hd, 0 };
                ev_msg = 0;
                hh = 0;
                http_req_reset(p);
            }
        }
    }
    if (t->n < HX_MAXMSG && !t->overflow) {
        uint64_t hd = 0;
        if (!t->error)
            hd = hx_state_digest(hx_req_digest(p), p->st, p->remaining, p->scratch_len,
                                 p->head_bytes);
        t->m[t->n++] = (hx_msg){ ev_msg, 0, hh, hd, 0 };
    }
}

/* One stream through the response parser; message k answers a HEAD request
 * when bit k%32 of head_bits is set (the same for every cut). */
static inline void hx_run_resp(http_resp *p, const uint8_t *d, size_t len, const size_t *cuts,
                               unsigned ncuts, uint32_t head_bits, hx_tr *t)
{
    memset(t, 0, sizeof *t);
    http_resp_reset(p, head_bits & 1);
    int ev_msg = 0;
    uint64_t hh = 0;
    size_t start = 0;
    for (unsigned c = 0; c <= ncuts && !t->error && !t->overflow; c++) {
        size_t end = c < ncuts ? cuts[c] : len;
        if (end < start || end > len) {
            hx_bad(t, "bad cuts");
            return;
        }
        const uint8_t *q = d + start;
        size_t n = end - start;
        uint64_t off = start;
        start = end;
        while (n > 0) {
            size_t used = (size_t)-1;
            int ev = http_resp_feed(p, q, n, &used);
            t->calls++;
            if (used > n) {
                hx_bad(t, "used > len");
                return;
            }
            if (!(ev & HTTP_P_DONE) && used != n)
                hx_bad(t, "used != len without DONE");
            if ((ev & HTTP_P_DONE) && used == 0)
                hx_bad(t, "DONE without consuming anything");
            if (ev & ~(HTTP_P_HEADERS | HTTP_P_DONE | HTTP_P_ERROR))
                hx_bad(t, "unknown event bits");
            if ((ev & HTTP_P_HEADERS) && (ev_msg & HTTP_P_HEADERS))
                hx_bad(t, "HEADERS twice");
            if ((ev & HTTP_P_DONE) && !((ev | ev_msg) & HTTP_P_HEADERS))
                hx_bad(t, "DONE before HEADERS");
            ev_msg |= ev;
            hx_check_resp(t, p, (ev_msg & HTTP_P_HEADERS) != 0);
            if (ev & HTTP_P_HEADERS)
                hh = hx_resp_digest(p);
            off += used;
            q += used;
            n -= used;
            if (ev & HTTP_P_ERROR) {
                t->error = 1;
                break;
            }
            if (ev & HTTP_P_DONE) {
                uint64_t hd = hx_resp_digest(p);
                if (hd != hh)
                    hx_bad(t, "results changed between HEADERS and DONE");
                if (t->n == HX_MAXMSG) {
                    t->overflow = 1;
                    break;
                }
                t->m[t->n++] = (hx_msg){ ev_msg, off, hh, hd, p->status };
                ev_msg = 0;
                hh = 0;
                http_resp_reset(p, (head_bits >> (t->n % 32)) & 1);
            }
        }
    }
    if (t->n < HX_MAXMSG && !t->overflow) {
        uint64_t hd = 0;
        if (!t->error)
            hd = hx_state_digest(hx_resp_digest(p), p->st, p->remaining, p->scratch_len,
                                 p->head_bytes);
        t->m[t->n++] = (hx_msg){ ev_msg, 0, hh, hd, p->status };
    }
}

/* 0 when equal; otherwise a short reason. */
static inline const char *hx_diff(const hx_tr *a, const hx_tr *b)
{
    if (a->error != b->error)
        return "error differs";
    if (a->overflow != b->overflow)
        return "overflow differs";
    if (a->n != b->n)
        return "message count differs";
    for (unsigned i = 0; i < a->n; i++) {
        if (a->m[i].ev != b->m[i].ev)
            return "events differ";
        if (a->m[i].end != b->m[i].end)
            return "message end offset differs";
        if (a->m[i].h_head != b->m[i].h_head)
            return "results at HEADERS differ";
        if (a->m[i].h_end != b->m[i].h_end)
            return "results/state at end differ";
    }
    return 0;
}

#endif
