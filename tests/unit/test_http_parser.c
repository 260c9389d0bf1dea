/* tests/unit/test_http_parser.c — http/parser.c: request and response
 * parsing, every split of the input giving the one-shot result, pipelining,
 * Content-Length / chunked / close-delimited bodies, 1xx/204/304/HEAD,
 * early rejection of non-HTTP bytes, bounds (1 MB header line, truncation),
 * secrets never captured, sendfile accounting, and no read past the input
 * (inputs ending at a PROT_NONE page), and the hook path's byte copy
 * (http/copy.h) at every length. TAP output. */
#include "http/parser.h"
#include "common/copy.h"
#include "tests/fuzz/http_transcript.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int n, failed;
static void ok(int cond, const char *desc)
{
    n++;
    if (!cond)
        failed++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n, desc);
}

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

static const char *no_extra[1] = { NULL };

static void req_init(http_req *p, const char *const *extra)
{
    memset(p, 0xa5, sizeof *p); /* reset must not depend on a zeroed struct */
    for (unsigned i = 0; i < HTTP_MAX_EXTRA; i++)
        p->extra_names[i] = NULL;
    for (unsigned i = 0; extra && extra[i] && i < HTTP_MAX_EXTRA; i++)
        p->extra_names[i] = extra[i];
    http_req_reset(p);
}

static void resp_init(http_resp *p, const char *const *extra, int is_head)
{
    memset(p, 0xa5, sizeof *p);
    for (unsigned i = 0; i < HTTP_MAX_EXTRA; i++)
        p->extra_names[i] = NULL;
    for (unsigned i = 0; extra && extra[i] && i < HTTP_MAX_EXTRA; i++)
        p->extra_names[i] = extra[i];
    http_resp_reset(p, is_head);
}

static int fstr(const http_field *f, const char *s)
{
    size_t l = strlen(s);
    return f->present && f->len == l && memcmp(f->v, s, l) == 0 && f->v[l] == 0;
}

static int feed_req(http_req *p, const uint8_t *d, size_t len, size_t *used)
{
    size_t u = 0;
    int ev = http_req_feed(p, d, len, &u);
    if (used)
        *used = u;
    return ev;
}

static int feed_resp(http_resp *p, const uint8_t *d, size_t len, size_t *used)
{
    size_t u = 0;
    int ev = http_resp_feed(p, d, len, &u);
    if (used)
        *used = u;
    return ev;
}

/* ---- split equivalence ----------------------------------------------------- */
static http_req rq;
static http_resp rs;
static hx_tr t_ref, t_cut;

/* One-shot against byte-by-byte, every 2-way split, and pseudo-random 3..8
 * way splits; all transcripts must be identical and free of violations. */
static int splits_agree(int is_resp, const uint8_t *d, size_t len, const char *const *extra,
                        uint32_t head_bits, const char **why)
{
    static size_t cuts[1 << 16];
    *why = "";
    if (is_resp) {
        resp_init(&rs, extra, 0);
        hx_run_resp(&rs, d, len, NULL, 0, head_bits, &t_ref);
    } else {
        req_init(&rq, extra);
        hx_run_req(&rq, d, len, NULL, 0, &t_ref);
    }
    if (t_ref.bad) {
        *why = t_ref.why;
        return 0;
    }
    size_t nb = len - (len ? 1 : 0);
    for (size_t k = 0; k < nb && k < (1 << 16); k++)
        cuts[k] = k + 1;
    /* byte by byte, then every single cut, then random multi-cuts */
    for (size_t mode = 0; mode < 2 + len + 200; mode++) {
        unsigned nc;
        if (mode == 0) {
            nc = (unsigned)nb;
            for (size_t k = 0; k < nb; k++)
                cuts[k] = k + 1;
        } else if (mode <= len + 1) {
            nc = 1;
            cuts[0] = mode - 1;
        } else {
            uint64_t x = mode * 0x9e3779b97f4a7c15ull;
            nc = 2 + (unsigned)(x % 7);
            size_t prev = 0;
            for (unsigned k = 0; k < nc; k++) {
                x ^= x >> 29;
                x *= 0xbf58476d1ce4e5b9ull;
                size_t left = len - prev;
                cuts[k] = prev + (left ? (size_t)(x % (left + 1)) : 0);
                prev = cuts[k];
            }
        }
        if (is_resp) {
            resp_init(&rs, extra, 0);
            hx_run_resp(&rs, d, len, cuts, nc, head_bits, &t_cut);
        } else {
            req_init(&rq, extra);
            hx_run_req(&rq, d, len, cuts, nc, &t_cut);
        }
        const char *w = t_cut.bad ? t_cut.why : hx_diff(&t_ref, &t_cut);
        if (w) {
            static char buf[160];
            snprintf(buf, sizeof buf, "%s (split mode %zu)", w, mode);
            *why = buf;
            return 0;
        }
    }
    return 1;
}

static void check_splits(int is_resp, const char *s, const char *const *extra,
                         uint32_t head_bits, const char *desc)
{
    const char *why;
    int r = splits_agree(is_resp, (const uint8_t *)s, strlen(s), extra, head_bits, &why);
    if (!r)
        printf("# %s: %s\n", desc, why);
    ok(r, desc);
}

/* ---- guard page ------------------------------------------------------------ */
static uint8_t *guard_lo;
static size_t guard_room;

static int guard_setup(void)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t room = 32 * pg;
    uint8_t *m = mmap(NULL, room + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    if (mprotect(m + room, pg, PROT_NONE) != 0)
        return -1;
    guard_lo = m;
    guard_room = room;
    return 0;
}

/* A copy of src[0..len) that ends exactly where the PROT_NONE page starts:
 * one byte of over-read is a SIGSEGV. */
static const uint8_t *at_guard(const uint8_t *src, size_t len)
{
    uint8_t *dst = guard_lo + guard_room - len;
    memcpy(dst, src, len);
    return dst;
}

/* Feed a stream, each piece (split at k) placed against the guard page;
 * continues after DONE. Returns the number of completed messages, -1 on error. */
static int guard_stream(int is_resp, const uint8_t *d, size_t len, size_t k)
{
    int msgs = 0;
    size_t piece[2][2] = { { 0, k }, { k, len } };
    if (is_resp)
        resp_init(&rs, no_extra, 0);
    else
        req_init(&rq, no_extra);
    for (int j = 0; j < 2; j++) {
        size_t a = piece[j][0], b = piece[j][1];
        while (a < b) {
            const uint8_t *q = at_guard(d + a, b - a);
            size_t used;
            int ev = is_resp ? feed_resp(&rs, q, b - a, &used) : feed_req(&rq, q, b - a, &used);
            if (ev & HTTP_P_ERROR)
                return -1;
            a += used;
            if (ev & HTTP_P_DONE) {
                msgs++;
                if (is_resp)
                    http_resp_reset(&rs, 0);
                else
                    http_req_reset(&rq);
            }
        }
    }
    return msgs;
}

/* ---- streams used by several checks ------------------------------------------ */
static const char REQ_PIPE[] =
    "GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88\r\n\r\n"
    "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Datadog-Trace-Id: 123\r\n"
    "x-datadog-parent-id:456\r\n\r\nhello"
    "PUT /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\ntraceparent: "
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
    "5;name=val\r\nhello\r\n6 ; a=\"b c\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    "HEAD /d HTTP/1.0\nConnection: keep-alive\n\n"
    "\r\nDELETE /e HTTP/1.1\r\nConnection: close\r\nTracestate: dd=s:1\r\n"
    "tracestate: rojo=00f067aa0ba902b7\r\n\r\n";

static const char RESP_PIPE[] =
    "HTTP/1.1 100 Continue\r\n\r\n"
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: r1\r\n\r\nok"
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    "3\r\nabc\r\n10;x=y\r\n0123456789abcdef\r\n0\r\nServer-Timing: a\r\n\r\n"
    "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"
    "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"
    "HTTP/1.1 404\nContent-Length: 3\n\nnop"
    "HTTP/1.0 200 OK\r\n\r\nuntil the connection closes";

int main(void)
{
    size_t used;
    int ev;
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the TAP lines if a guard page faults */

    /* ---- simple GET ---- */
    req_init(&rq, no_extra);
    static const char get[] = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n"
                              "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
    ev = feed_req(&rq, S(get), &used);
    ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && used == sizeof get - 1,
       "simple GET: HEADERS|DONE in one call, all bytes used");
    ok(rq.method_len == 3 && strcmp(rq.method, "GET") == 0 && rq.version_minor == 1 &&
           strcmp(rq.target, "/index.html?q=1") == 0 && rq.target_len == 15 &&
           !rq.target_truncated,
       "simple GET: method, target, version");
    ok(fstr(&rq.host, "example.com") && fstr(&rq.user_agent, "curl/7.88.1") &&
           rq.content_length == -1 && !rq.chunked && !rq.conn_close && !rq.expect_continue &&
           !rq.dd_trace_id.present && !rq.traceparent.present,
       "simple GET: host, user-agent, no body, keep-alive");
    ev = feed_req(&rq, S("GET / HTTP/1.1\r\n"), &used);
    ok(ev == HTTP_P_DONE && used == 0, "fed again after DONE without reset: DONE, nothing used");

    /* ---- trace context headers ---- */
    {
        static const char tc[] =
            "GET /t HTTP/1.1\r\nX-Datadog-Trace-Id: 1234567890\r\nx-datadog-parent-id: 987\r\n"
            "X-DATADOG-SAMPLING-PRIORITY: 2\r\nx-datadog-origin: synthetics\r\n"
            "x-datadog-tags: _dd.p.dm=-4,_dd.p.tid=640cfd8d00000000\r\n"
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
            "tracestate: dd=s:2;o:rum\r\n\r\n";
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S(tc), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && fstr(&rq.dd_trace_id, "1234567890") &&
               fstr(&rq.dd_parent_id, "987") && fstr(&rq.dd_sampling_priority, "2") &&
               fstr(&rq.dd_origin, "synthetics") &&
               fstr(&rq.dd_tags, "_dd.p.dm=-4,_dd.p.tid=640cfd8d00000000") &&
               fstr(&rq.traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") &&
               fstr(&rq.tracestate, "dd=s:2;o:rum") && !rq.host.present,
           "Datadog and W3C trace-context headers captured, names case-insensitive");
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 200 OK\r\nExpect: 100-continue\r\nHost: x\r\n"
                              "Content-Length: 0\r\n\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE), "response parser ignores request-only headers");
    }

    /* ---- header names: every known one in any case, near misses (same
     * length and first letter), token bytes beyond letters and '-' ---- */
    {
        static const char nm[] =
            "GET / HTTP/1.1\r\nhOST: h1\r\nuSER-aGENT: ua\r\nX-DATADOG-TRACE-ID: 1\r\n"
            "x-datadog-Parent-Id: 2\r\nX-Datadog-Sampling-Priority: 1\r\nx-datadog-origin: o\r\n"
            "X-datadog-tags: t\r\nTRACEPARENT: tp\r\ntraceState: ts\r\nContent-length: 0\r\n"
            "Transfer-encodinG: gzip, chunked\r\nCONNECTION: close\r\nexpecT: 100-continue\r\n"
            "Hosx: no\r\nUser-Agenx: no\r\nX-Datadog-Trace-Ix: no\r\nTraceparenx: no\r\n"
            "tracestatE_: no\r\nX_9.~!#$%&'*+^`|: no\r\nContent-Lengtx: x\r\n"
            "Authorization: s\r\nCookie: s\r\nProxy-Authorization: s\r\n\r\n0\r\n\r\n";
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S(nm), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && used == sizeof nm - 1 && fstr(&rq.host, "h1") &&
               fstr(&rq.user_agent, "ua") && fstr(&rq.dd_trace_id, "1") &&
               fstr(&rq.dd_parent_id, "2") && fstr(&rq.dd_sampling_priority, "1") &&
               fstr(&rq.dd_origin, "o") && fstr(&rq.dd_tags, "t") && fstr(&rq.traceparent, "tp") &&
               fstr(&rq.tracestate, "ts") && rq.chunked && rq.content_length == -1 &&
               rq.conn_close && rq.expect_continue && rq.present_mask == 0x1ff,
           "every known header name in any case; near misses and other token bytes ignored");
        check_splits(0, nm, no_extra, 0, "known header names: every split matches one-shot");
    }

    /* ---- connection semantics ---- */
    req_init(&rq, no_extra);
    ev = feed_req(&rq, S("GET / HTTP/1.0\r\n\r\n"), &used);
    ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rq.version_minor == 0 && rq.conn_close,
       "HTTP/1.0 defaults to close");
    req_init(&rq, no_extra);
    ev = feed_req(&rq, S("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), &used);
    ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && !rq.conn_close, "HTTP/1.0 with keep-alive");
    req_init(&rq, no_extra);
    ev = feed_req(&rq, S("GET / HTTP/1.1\r\nconnection: Upgrade ,  CLOSE \r\n\r\n"), &used);
    ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rq.conn_close,
       "Connection token list, case-insensitive close");
    req_init(&rq, no_extra);
    ev = feed_req(&rq, S("GET / HTTP/1.1\r\nConnection: closed, clo se\r\n\r\n"), &used);
    ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && !rq.conn_close, "'closed', 'clo se' are not close");

    /* ---- splits ---- */
    check_splits(0, get, no_extra, 0, "simple GET: every split matches one-shot");
    static const char *const ex1[] = { "x-trailer", "x-request-id", "content-length", NULL };
    check_splits(0, REQ_PIPE, ex1, 0,
                 "pipelined requests (CL, chunked+ext+trailers, LF-only, CRLF lead): "
                 "byte-by-byte and every 2-way split match one-shot");
    check_splits(1, RESP_PIPE, ex1, 0,
                 "pipelined responses (100, CL, chunked, 204, 304, no reason, close): "
                 "every split matches one-shot");
    check_splits(1, RESP_PIPE, ex1, 0x4,
                 "pipelined responses with a HEAD in the middle: every split matches one-shot");
    check_splits(0, "GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", no_extra, 0,
                 "a stream ending in an error: every split matches one-shot");
    check_splits(0, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1z\r\n", no_extra, 0,
                 "an error after the head: HEADERS then ERROR on every split");

    /* ---- pipelined requests: boundaries and fields ---- */
    {
        req_init(&rq, ex1);
        hx_run_req(&rq, S(REQ_PIPE), NULL, 0, &t_ref);
        int good = t_ref.n == 6 && !t_ref.error && t_ref.bad == 0;
        for (unsigned i = 0; good && i < 5; i++)
            good = t_ref.m[i].ev == (HTTP_P_HEADERS | HTTP_P_DONE);
        ok(good && t_ref.m[5].ev == 0 && t_ref.m[4].end == sizeof REQ_PIPE - 1,
           "five pipelined requests, each HEADERS|DONE, the last ends at the buffer's end");

        const uint8_t *d = (const uint8_t *)REQ_PIPE;
        size_t len = sizeof REQ_PIPE - 1, off = 0;
        int i = 0, seen = 0;
        req_init(&rq, ex1);
        while (off < len && i < 8) {
            ev = feed_req(&rq, d + off, len - off, &used);
            if (!(ev & HTTP_P_DONE) || (ev & HTTP_P_ERROR))
                break;
            off += used;
            switch (i++) {
            case 0:
                seen += strcmp(rq.target, "/a?x=1") == 0 && fstr(&rq.host, "example.com");
                break;
            case 1:
                seen += strcmp(rq.method, "POST") == 0 && rq.content_length == 5 &&
                        fstr(&rq.dd_trace_id, "123") && fstr(&rq.dd_parent_id, "456") &&
                        fstr(&rq.extra[2], "5");
                seen += d[off] == 'P' && d[off + 1] == 'U'; /* used stopped after "hello" */
                break;
            case 2:
                seen += rq.chunked && rq.content_length == -1 &&
                        fstr(&rq.traceparent,
                             "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") &&
                        !rq.extra[0].present;
                break;
            case 3:
                seen += strcmp(rq.method, "HEAD") == 0 && rq.version_minor == 0 && !rq.conn_close;
                break;
            case 4:
                seen += strcmp(rq.method, "DELETE") == 0 && rq.conn_close &&
                        fstr(&rq.tracestate, "dd=s:1, rojo=00f067aa0ba902b7");
                break;
            }
            http_req_reset(&rq);
        }
        ok(seen == 6 && off == len,
           "pipelined: used stops at each message end; fields of each request right "
           "(repeated tracestate combined with \", \")");
    }

    /* ---- POST with a Content-Length body ---- */
    req_init(&rq, no_extra);
    ev = feed_req(&rq, S("POST /p HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello"), &used);
    int ev2 = feed_req(&rq, S(" world"), &used);
    ok(ev == HTTP_P_HEADERS && ev2 == HTTP_P_DONE && used == 6 && rq.content_length == 11,
       "POST body: HEADERS first, DONE when the 11th body byte arrives");
    req_init(&rq, no_extra);
    ev = feed_req(&rq, S("POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET"), &used);
    ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && used == sizeof "POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" - 1,
       "POST body followed by the next request: used stops after the body");
    req_init(&rq, no_extra);
    ev = feed_req(&rq, S("POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), &used);
    ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rq.content_length == 0, "Content-Length: 0");

    /* ---- Content-Length validation ---- */
    {
        static const char *const bad[] = {
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5,\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        };
        int all = 1;
        for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            req_init(&rq, no_extra);
            ev = feed_req(&rq, (const uint8_t *)bad[i], strlen(bad[i]), &used);
            if (ev != HTTP_P_ERROR || used != strlen(bad[i])) {
                printf("# accepted: %s\n", bad[i]);
                all = 0;
            }
        }
        ok(all, "conflicting, negative, empty, non-numeric, overflowing Content-Length: ERROR");
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length:  2 , 2 \r\n\r\nab"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rq.content_length == 2,
           "repeated identical Content-Length values accepted");
        ev = feed_req(&rq, S("x"), &used);
        ok(ev == HTTP_P_DONE && used == 0, "DONE is sticky until reset");
        req_init(&rq, no_extra);
        feed_req(&rq, S("GET / HTTP/1.1\r\nX: \x01\r\n"), &used);
        ev = feed_req(&rq, S("GET / HTTP/1.1\r\n\r\n"), &used);
        ok(ev == HTTP_P_ERROR && used == sizeof "GET / HTTP/1.1\r\n\r\n" - 1,
           "ERROR is sticky until reset, all bytes used");
    }

    /* ---- chunked request body ---- */
    {
        static const char *const ex[] = { "x-trailer", "content-length", NULL };
        static const char ch[] = "POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 99\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n"
                                 "5;foo=bar\r\nhello\r\n"
                                 "A ; ext=\"quoted ; value\"\r\n0123456789\r\n"
                                 "000\r\nX-Trailer: late\r\nContent-Length: 7\r\n\r\n";
        req_init(&rq, ex);
        ev = feed_req(&rq, S(ch), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && used == sizeof ch - 1 && rq.chunked &&
               rq.content_length == -1,
           "chunked request with extensions and trailers: DONE, Content-Length ignored");
        ok(!rq.extra[0].present && fstr(&rq.extra[1], "99"),
           "trailers are not captured and do not change header values");
        check_splits(0, ch, ex, 0, "chunked request: every split matches one-shot");
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nab\r\n"), &used);
        ok(ev == HTTP_P_HEADERS && rq.chunked, "chunked: not DONE before the last chunk");
        ev = feed_req(&rq, S("0\r\n\r\nGET"), &used);
        ok(ev == HTTP_P_DONE && used == 5, "chunked: DONE after last-chunk and empty trailer");
        static const char *const badc[] = {
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\rab\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        };
        int all = 1;
        for (unsigned i = 0; i < sizeof badc / sizeof badc[0]; i++) {
            req_init(&rq, no_extra);
            ev = feed_req(&rq, (const uint8_t *)badc[i], strlen(badc[i]), &used);
            if (!(ev & HTTP_P_ERROR)) {
                printf("# accepted: %s\n", badc[i]);
                all = 0;
            }
        }
        ok(all, "bad chunk sizes, bad chunk ends, 65-bit sizes, request TE not ending in "
                "chunked: ERROR");
    }

    /* ---- Expect: 100-continue, 100 response, final response ---- */
    {
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n"
                             "Content-Length: 5\r\n\r\n"), &used);
        ok(ev == HTTP_P_HEADERS && rq.expect_continue, "Expect: 100-continue request: HEADERS");
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rs.status == 100 &&
               used == sizeof "HTTP/1.1 100 Continue\r\n\r\n" - 1,
           "100 Continue: HEADERS|DONE, status 100, stops before the final response");
        ev = feed_req(&rq, S("hello"), &used);
        ok(ev == HTTP_P_DONE, "request body after 100: DONE");
        http_resp_reset(&rs, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rs.status == 201 && rs.content_length == 2,
           "final response after reset: 201 HEADERS|DONE");
    }

    /* ---- HEAD, 204, 304, 1xx ---- */
    {
        static const char hr[] = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
        resp_init(&rs, no_extra, 1);
        ev = feed_resp(&rs, S(hr), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rs.content_length == 1234 &&
               !rs.body_until_close && used == sizeof hr - 1,
           "response to HEAD: Content-Length reported, no body expected");
        resp_init(&rs, no_extra, 1);
        ev = feed_resp(&rs, S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE), "response to HEAD with chunked: no body");
        resp_init(&rs, no_extra, 1);
        ev = feed_resp(&rs, S("HTTP/1.0 200 OK\r\n\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && !rs.body_until_close,
           "response to HEAD without length: not close-delimited");
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rs.status == 204, "204: no body");
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rs.status == 304, "304: no body");
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rs.status == 101, "101: HEADERS|DONE, status < 200");
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rs.status == 200,
           "status line without a reason phrase");
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                              "Content-Length: 3\r\n\r\nerr"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rs.status == 503 && rs.conn_close &&
               !rs.body_until_close,
           "503 with Connection: close and a length");
    }

    /* ---- close-delimited responses ---- */
    {
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.0 200 OK\r\nServer: x\r\n\r\nsome body"), &used);
        int ev_more = feed_resp(&rs, S("more body, forever"), &used);
        ok(ev == HTTP_P_HEADERS && rs.body_until_close && rs.conn_close && ev_more == 0 &&
               used == sizeof "more body, forever" - 1,
           "no length, not chunked: body_until_close, never DONE, all bytes used");
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
                              "Content-Length: 4\r\n\r\nabcd"), &used);
        ok(ev == HTTP_P_HEADERS && rs.body_until_close && rs.content_length == -1,
           "response TE not ending in chunked: read until close, length ignored");
        ok(http_resp_skip_body(&rs, 100) == 0, "sendfile during a close-delimited body: nothing");
    }

    /* ---- sendfile ---- */
    {
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n0123"), &used);
        int a = http_resp_skip_body(&rs, 4000);
        int b = http_resp_skip_body(&rs, 5996);
        ok(ev == HTTP_P_HEADERS && a == 0 && b == HTTP_P_DONE,
           "skip_body counts sendfile bytes against Content-Length; DONE at the end");
        resp_init(&rs, no_extra, 0);
        feed_resp(&rs, S("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"), &used);
        ok(http_resp_skip_body(&rs, 11) == HTTP_P_ERROR, "skip_body past Content-Length: ERROR");
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n"), &used);
        a = http_resp_skip_body(&rs, 4000);
        b = http_resp_skip_body(&rs, 96);
        int c = feed_resp(&rs, S("\r\n0\r\n\r\n"), &used);
        ok(ev == HTTP_P_HEADERS && a == 0 && b == 0 && c == HTTP_P_DONE,
           "chunked: skip_body counts against the current chunk's data");
        resp_init(&rs, no_extra, 0);
        feed_resp(&rs, S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n"), &used);
        ok(http_resp_skip_body(&rs, 17) == HTTP_P_ERROR,
           "chunked: skip_body past the chunk (framing never seen): ERROR");
        resp_init(&rs, no_extra, 0);
        feed_resp(&rs, S("HTTP/1.1 200 OK\r\n"), &used);
        ok(http_resp_skip_body(&rs, 1) == HTTP_P_ERROR, "skip_body inside the head: ERROR");
    }

    /* ---- leading empty lines, LF-only lines ---- */
    {
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("\r\n\r\nGET / HTTP/1.1\r\n\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE), "leading CRLFs tolerated");
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("\n\nGET / HTTP/1.1\nHost: lf\n\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && fstr(&rq.host, "lf"), "LF-only lines");
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"), &used);
        ok(ev == HTTP_P_ERROR, "more than 8 bytes of leading CR/LF: ERROR");
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 200 OK\nContent-Length: 1\n\nx"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE), "response with LF-only lines");
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), &used);
        ok(ev == HTTP_P_ERROR, "bare CR inside a line: ERROR");
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("GET / HTTP/1.1\r\nHost: a\r\n  folded\r\n\r\n"), &used);
        ok(ev == HTTP_P_ERROR, "obsolete line folding: ERROR");
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), &used);
        ok(ev == HTTP_P_ERROR, "space before the colon: ERROR");
    }

    /* ---- early rejection of other protocols ---- */
    {
        static const struct {
            const char *s;
            size_t len;
            int resp;
        } junk[] = {
            { "*1\r\n$4\r\nPING\r\n", 14, 0 },
            { "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", 33, 0 },
            { "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x9a\x8b\x11\x22\x33\x44\x55"
              "\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00\x11\x22\x33\x44\x55\x66\x77", 38, 0 },
            { "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24, 0 },
            { "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", 32, 0 },
            { "\x00\x00\x00\x08\x04\xd2\x16\x2f", 8, 0 },
            { "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 43, 0 },
            { "GET\t/ HTTP/1.1\r\n\r\n", 18, 0 },
            { "GET  / HTTP/1.1\r\n\r\n", 19, 0 },
            { "get foo\r\n", 9, 0 },
            { "GET / HTTP/1.1 \r\n\r\n", 19, 0 },
            { "GET / http/1.1\r\n\r\n", 18, 0 },
            { "{\"jsonrpc\":\"2.0\",\"method\":\"x\"}", 30, 0 },
            { "\x16\x03\x03\x00\x5d\x02\x00\x00\x59\x03\x03", 11, 1 },
            { "-ERR unknown command 'GET'\r\n", 28, 1 },
            { "HTTP/2 200\r\n\r\n", 14, 1 },
            { "HTTP/1.1 600 Weird\r\n\r\n", 22, 1 },
            { "HTTP/1.1 20\r\n\r\n", 15, 1 },
            { "+PONG\r\n", 7, 1 },
        };
        int all = 1;
        for (unsigned i = 0; i < sizeof junk / sizeof junk[0]; i++) {
            size_t at = (size_t)-1;
            if (junk[i].resp)
                resp_init(&rs, no_extra, 0);
            else
                req_init(&rq, no_extra);
            for (size_t k = 0; k < junk[i].len; k++) {
                const uint8_t *b = (const uint8_t *)junk[i].s + k;
                ev = junk[i].resp ? feed_resp(&rs, b, 1, &used) : feed_req(&rq, b, 1, &used);
                if (ev & HTTP_P_ERROR) {
                    at = k;
                    break;
                }
            }
            if (at >= 32) {
                printf("# case %u not rejected within 32 bytes (at %zu)\n", i, at);
                all = 0;
            }
        }
        ok(all, "redis RESP, TLS, HTTP/2 preface, SSH, binary, long tokens, malformed "
                "request/status lines: ERROR within 32 bytes");
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("ABCDEFGHIJKLMNO / HTTP/1.1\r\n\r\n"), &used);
        int e15 = ev;
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("ABCDEFGHIJKLMNOP / HTTP/1.1\r\n\r\n"), &used);
        ok(e15 == (HTTP_P_HEADERS | HTTP_P_DONE) && ev == HTTP_P_ERROR,
           "15-byte method accepted, 16-byte method rejected");
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("OPTIONS * HTTP/1.1\r\n\r\n"), &used);
        int e1 = ev;
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("CONNECT example.com:443 HTTP/1.1\r\n\r\n"), &used);
        ok(e1 == (HTTP_P_HEADERS | HTTP_P_DONE) && ev == (HTTP_P_HEADERS | HTTP_P_DONE) &&
               strcmp(rq.target, "example.com:443") == 0,
           "asterisk-form and authority-form targets");
    }

    /* ---- bounds ---- */
    {
        size_t big = 1 << 20;
        uint8_t *b = malloc(big + 64);
        memcpy(b, "GET / HTTP/1.1\r\nX-Big: ", 23);
        memset(b + 23, 'a', big - 23);
        static const char *const ex[] = { "x-big", NULL };
        req_init(&rq, ex);
        size_t off = 0, err_at = 0;
        int errs = 0;
        while (off < big) {
            size_t k = big - off < 4096 ? big - off : 4096;
            ev = feed_req(&rq, b + off, k, &used);
            if ((ev & HTTP_P_ERROR) && !errs++)
                err_at = off + k;
            off += k;
        }
        ok(errs && err_at <= HTTP_MAX_HEAD + 4096 && rq.extra[0].len <= 511 &&
               rq.head_bytes <= HTTP_MAX_HEAD,
           "1 MB header line: ERROR once past HTTP_MAX_HEAD, nothing overflows");
        resp_init(&rs, ex, 0);
        memcpy(b, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
        ev = feed_resp(&rs, b, big, &used);
        ok(ev == HTTP_P_ERROR && used == big && rs.extra[0].len <= 511,
           "1 MB response header line: ERROR, all bytes used");

        /* a head of exactly HTTP_MAX_HEAD bytes passes, one more byte fails */
        size_t hl = HTTP_MAX_HEAD;
        memcpy(b, "GET / HTTP/1.1\r\nX-Pad: ", 23);
        memset(b + 23, 'p', hl - 23 - 4);
        memcpy(b + hl - 4, "\r\n\r\n", 4);
        req_init(&rq, ex);
        ev = feed_req(&rq, b, hl, &used);
        int at_max = ev;
        memcpy(b, "GET / HTTP/1.1\r\nX-Pad:  ", 24);
        memset(b + 24, 'p', hl - 24 - 3);
        memcpy(b + hl - 3, "\r\n\r\n", 4);
        req_init(&rq, ex);
        ev = feed_req(&rq, b, hl + 1, &used);
        ok(at_max == (HTTP_P_HEADERS | HTTP_P_DONE) && ev == HTTP_P_ERROR,
           "a head of HTTP_MAX_HEAD bytes is accepted, HTTP_MAX_HEAD + 1 is not");

        /* 3000-byte target */
        memcpy(b, "GET /", 5);
        memset(b + 5, 't', 2995);
        memcpy(b + 3000, " HTTP/1.1\r\n\r\n", 13);
        req_init(&rq, no_extra);
        ev = feed_req(&rq, b, 3013, &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rq.target_len == 2047 &&
               rq.target_truncated && rq.target[2047] == 0 && rq.target[2046] == 't',
           "long target truncated to 2047 bytes with a flag, parsing goes on");
        free(b);
    }

    /* ---- value truncation, trimming, extra headers ---- */
    {
        static char r[2048];
        char ua[700];
        memset(ua, 'u', sizeof ua);
        memcpy(ua, "Mozilla", 7);
        size_t l = (size_t)snprintf(r, sizeof r,
                                    "GET / HTTP/1.1\r\nUser-Agent: %.*s  \r\nX-Request-Id: \t abc def \t\r\n"
                                    "content-type: text/plain\r\nX-EMPTY:\r\n\r\n",
                                    600, ua);
        static const char *const ex[] = { "x-request-id", "Content-Type", "x-empty", "x-absent", NULL };
        req_init(&rq, ex);
        ev = feed_req(&rq, (const uint8_t *)r, l, &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rq.user_agent.len == 511 &&
               rq.user_agent.truncated && rq.user_agent.v[511] == 0 &&
               memcmp(rq.user_agent.v, "Mozillauuu", 10) == 0 && rq.user_agent.v[510] == 'u',
           "600-byte value: truncated to 511 bytes, flag set, NUL-terminated");
        ok(fstr(&rq.extra[0], "abc def") && !rq.extra[0].truncated,
           "extra header captured, leading/trailing OWS trimmed, inner space kept");
        ok(fstr(&rq.extra[1], "text/plain") && rq.extra[2].present && rq.extra[2].len == 0 &&
               rq.extra[2].v[0] == 0 && !rq.extra[3].present,
           "extra names match case-insensitively; empty value present; absent one not");
        check_splits(0, r, ex, 0, "truncation and trimming: every split matches one-shot");

        resp_init(&rs, ex, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 200 OK\r\nX-Request-ID: r-42\r\nContent-Type: a/b\r\n"
                              "Content-Length: 0\r\n\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && fstr(&rs.extra[0], "r-42") &&
               fstr(&rs.extra[1], "a/b"),
           "response extra headers captured");
    }

    /* ---- secrets ---- */
    {
        static const char *const ex[] = { "authorization", "Cookie", "proxy-authorization",
                                          "set-cookie", "x-ok", NULL };
        static const char sr[] = "GET / HTTP/1.1\r\nAuthorization: Bearer SECRETVALUE1\r\n"
                                 "Cookie: sid=SECRETVALUE2\r\nProxy-Authorization: Basic SECRETVALUE3\r\n"
                                 "X-OK: fine\r\n\r\n";
        req_init(&rq, ex);
        memset(&rq.scratch, 0, sizeof rq.scratch);
        ev = feed_req(&rq, S(sr), &used);
        int leak = memmem(&rq, sizeof rq, "SECRETVALUE", 11) != NULL;
        int flags = 0;
        for (int i = 0; i < 4; i++)
            flags |= rq.extra[i].present | rq.extra[i].len;
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && !leak && !flags && fstr(&rq.extra[4], "fine"),
           "Authorization/Cookie/Proxy-Authorization never stored, even listed in extra_names");
        req_init(&rq, ex);
        for (size_t k = 0; k < sizeof sr - 1; k++)
            feed_req(&rq, (const uint8_t *)sr + k, 1, &used);
        ok(memmem(&rq, sizeof rq, "SECRETVALUE", 11) == NULL,
           "secrets never stored when fed byte by byte");
        resp_init(&rs, ex, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 200 OK\r\nSet-Cookie: a=SECRETVALUE4\r\nX-OK: y\r\n"
                              "Content-Length: 0\r\n\r\n"), &used);
        ok(ev == (HTTP_P_HEADERS | HTTP_P_DONE) && memmem(&rs, sizeof rs, "SECRETVALUE", 11) == NULL &&
               !rs.extra[3].present && fstr(&rs.extra[4], "y"),
           "Set-Cookie never stored by the response parser");
    }

    /* ---- no read past the input: PROT_NONE guard page ---- */
    {
        int good = guard_setup() == 0;
        if (good) {
            const uint8_t *d = (const uint8_t *)REQ_PIPE;
            size_t len = sizeof REQ_PIPE - 1;
            for (size_t k = 0; k <= len && good; k++)
                good = guard_stream(0, d, len, k) == 5;
        }
        ok(good, "request parser: input ending at a PROT_NONE page, every split point");
        good = guard_lo != NULL;
        if (good) {
            const uint8_t *d = (const uint8_t *)RESP_PIPE;
            size_t len = sizeof RESP_PIPE - 1;
            for (size_t k = 0; k <= len && good; k++)
                good = guard_stream(1, d, len, k) == 6;
        }
        ok(good, "response parser: input ending at a PROT_NONE page, every split point");
        /* every prefix of a message, as the last bytes before the guard */
        good = guard_lo != NULL;
        static const char pre[] = "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "4;e=1\r\nabcd\r\n0\r\nT: v\r\n\r\n";
        for (size_t k = 1; k <= sizeof pre - 1 && good; k++) {
            req_init(&rq, no_extra);
            ev = feed_req(&rq, at_guard((const uint8_t *)pre, k), k, &used);
            good = !(ev & HTTP_P_ERROR) && used == k;
            resp_init(&rs, no_extra, 0);
            ev = feed_resp(&rs, at_guard((const uint8_t *)"HTTP/1.1 200 OK\r\n", k < 17 ? k : 17),
                           k < 17 ? k : 17, &used);
            good = good && !(ev & HTTP_P_ERROR);
        }
        ok(good, "every truncated prefix ending at the guard page: no fault, no error");
    }

    /* ---- one-word token values (Connection, Transfer-Encoding, Expect),
     * which the one-pass path decides itself: the same as byte by byte ---- */
    {
        static const char *const names[] = { "Connection", "Transfer-Encoding", "Expect" };
        static const char *const vals[] = {
            "keep-alive", "Keep-Alive", "KEEP-ALIVE  ", "close", "Close\t", "closed", "clos",
            "keep-alive,close", "close ,keep-alive", "upgrade", "chunked", "Chunked", "gzip",
            "chunkedx", "chunke", "100-continue", "100-Continue", "100-continuex", "x", "a b",
        };
        int good = 1;
        const char *why = "";
        char msg[256];
        for (unsigned i = 0; i < 3 && good; i++)
            for (unsigned j = 0; j < sizeof vals / sizeof vals[0] && good; j++)
                for (unsigned form = 0; form < 3 && good; form++) {
                    int k = form == 2 ? snprintf(msg, sizeof msg, "HTTP/1.%d 200 OK\r\n%s: %s\r\n"
                                                 "Content-Length: 2\r\n\r\nok", (int)(j & 1),
                                                 names[i], vals[j])
                                      : snprintf(msg, sizeof msg, "POST / HTTP/1.%u\r\n%s: %s\r\n"
                                                 "Content-Length: 3\r\n\r\nabc", form, names[i], vals[j]);
                    good = splits_agree(form == 2, (const uint8_t *)msg, (size_t)k, no_extra, 0, &why);
                    if (!good)
                        printf("# %s: %s\n", msg, why);
                }
        ok(good, "one-word Connection/Transfer-Encoding/Expect values: every split matches one-shot");
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("GET / HTTP/1.0\r\nConnection: KEEP-alive \r\n\r\n"), &used);
        int a = ev == (HTTP_P_HEADERS | HTTP_P_DONE) && !rq.conn_close;
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("GET / HTTP/1.1\r\nConnection: Close\r\nExpect: 100-Continue\r\n\r\n"), &used);
        a = a && ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rq.conn_close && rq.expect_continue;
        req_init(&rq, no_extra);
        ev = feed_req(&rq, S("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"), &used);
        a = a && ev == (HTTP_P_HEADERS | HTTP_P_DONE) && rq.chunked;
        resp_init(&rs, no_extra, 0);
        ev = feed_resp(&rs, S("HTTP/1.1 200 OK\r\nConnection: closed\r\nContent-Length: 0\r\n\r\n"), &used);
        a = a && ev == (HTTP_P_HEADERS | HTTP_P_DONE) && !rs.conn_close;
        ok(a, "one-word values in one pass: keep-alive on 1.0, close, 100-continue, chunked; 'closed' is not close");
    }

    /* ---- http/copy.h: every length through each of its branches, exact,
     * nothing written outside [0, n), from an unaligned source to an
     * unaligned destination; and a capture of each length through the parser */
    {
        static uint8_t src[400], dst[420];
        for (size_t i = 0; i < sizeof src; i++)
            src[i] = (uint8_t)(i * 7 + 3);
        int good = 1;
        for (size_t len = 0; len <= 300 && good; len++)
            for (size_t off = 0; off < 3 && good; off++) {
                memset(dst, 0xee, sizeof dst);
                copy_bytes(dst + 8 + off, src + 1 + off, len);
                good = memcmp(dst + 8 + off, src + 1 + off, len) == 0;
                for (size_t j = 0; j < sizeof dst && good; j++)
                    if (j < 8 + off || j >= 8 + off + len)
                        good = dst[j] == 0xee;
            }
        ok(good, "copy_bytes: lengths 0..300, exact, nothing written around the copy");
        good = 1;
        char req[700], val[300];
        for (size_t len = 1; len <= 280 && good; len++) {
            for (size_t j = 0; j < len; j++)
                val[j] = (char)('a' + (j * 5 + len) % 26);
            val[len] = 0;
            int k = snprintf(req, sizeof req, "GET /%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %.*s\r\n\r\n",
                             val, val, (int)(len % 17), val);
            req_init(&rq, no_extra);
            ev = feed_req(&rq, (const uint8_t *)req, (size_t)k, &used);
            char tgt[302];
            snprintf(tgt, sizeof tgt, "/%s", val);
            good = ev == (HTTP_P_HEADERS | HTTP_P_DONE) && strcmp(rq.target, tgt) == 0 &&
                   rq.target_len == len + 1 && fstr(&rq.host, val) &&
                   rq.user_agent.len == len % 17 && memcmp(rq.user_agent.v, val, len % 17) == 0;
        }
        ok(good, "targets and header values of 1..280 bytes captured exactly in one pass");
    }

    printf("1..%d\n", n);
    return failed ? 1 : 0;
}
