/* http/parser.c — owns the incremental HTTP/1.x request and response parsers
 * of http/parser.h: one byte-driven state machine shared by both directions
 * (start line, header lines, Content-Length / chunked / close-delimited
 * bodies, trailers), a line-at-a-time path in front of it for the common case
 * (fast(): heads that arrive whole, see "the common case in one pass"), and
 * the copies of the header values spans need.
 *
 * Called on host threads inside the read/write/send/recv hooks, possibly from
 * a host's signal handler that does I/O, so everything here is
 * async-signal-safe: no allocation, no locks, no libc calls (the compiler may
 * emit memset/memcpy for the small loops, both async-signal-safe; SSE2
 * intrinsics are plain instructions), no recursion, no TLS. All state lives
 * in the caller's struct; every loop is bounded by the bytes given, so
 * hostile input costs O(bytes) and can only end in HTTP_P_ERROR.
 *
 * Why one state machine and no lookahead: the hooks see whatever split the
 * host's read() returned, down to a single byte. Every state consumes a byte
 * or hands it, unconsumed, to a state that will, so feeding any split of a
 * stream gives the same result as feeding it whole (tests/unit and the fuzzer
 * check this). fast() looks ahead only within one input, applies a line only
 * once it has seen all of it, and hands over to the state machine at a line
 * start, in the state the machine itself would be in there.
 *
 * Decisions a reader may want to know:
 * - A CR must be followed by LF; a bare LF ends a line as well (RFC 9112 §2.2).
 * - At most 8 bytes of CR/LF before a start line (RFC 9112 §2.2 tolerance),
 *   so a stream of newlines is not HTTP either.
 * - The request line is rejected as soon as it cannot be one: a method of at
 *   most 15 token bytes, one SP, a visible target byte, then "HTTP/1." and a
 *   digit. So other protocols fail within their first 16 bytes: TLS at byte
 *   1, redis RESP at its first CR, SSH once its banner passes 15 token bytes,
 *   HTTP/2's "PRI * HTTP/2.0" at the '2'. The response side wants "HTTP/1."
 *   from its first byte.
 * - Captured header values are trimmed of OWS; a repeated captured header is
 *   appended as ", value" (RFC 9110 §5.3 combination, which tracestate
 *   needs); values longer than 511 bytes are cut with truncated=1. A
 *   field's len and NUL move at the end of each of its lines: while a line
 *   is being read, v[len] may already hold the new bytes (fields are read
 *   after HTTP_P_HEADERS, when every line has ended).
 * - Authorization, Cookie, Set-Cookie and Proxy-Authorization are never copied
 *   anywhere, whatever extra_names says.
 * - Header names longer than 64 bytes match nothing (the longest name captured
 *   by default is 27 bytes; longer extra_names never match).
 * - Content-Length accepts a list of identical values ("5, 5"); different
 *   values (in one header or several) or anything but digits is an error. With
 *   chunked framing content_length is reported as -1: the length is ignored.
 * - A request whose Transfer-Encoding does not end in chunked is an error
 *   (RFC 9112 §6.3: the server must reject it); such a response is read until
 *   close.
 * - HTTP_P_ERROR comes with the events reached before it in the same call (a
 *   head that completed before a broken chunk is still HTTP_P_HEADERS).
 * - Trailer lines are checked like header lines but nothing is captured, so a
 *   trailer can never change a value the head reported.
 * - *used is len except on HTTP_P_DONE. Feeding a parser that already
 *   returned HTTP_P_DONE, without a reset, returns HTTP_P_DONE with *used = 0.
 * - http_resp_skip_body in chunked mode counts the bytes against the current
 *   chunk's data (what a server does when it writes the chunk-size line, then
 *   sendfile()s the data, then writes CRLF). Bytes that run past the current
 *   chunk, or that arrive while the parser is not inside body data, contain
 *   framing the parser never saw: the stream becomes HTTP_P_ERROR. */
#include "http/parser.h"
#include "common/copy.h"

/* ---- private state layout (st[] of http_req / http_resp) ---------------- */
enum {
    ST_STATE = 0,   /* P_* below */
    ST_AUX,         /* per-state counter: leading CR/LF, version index, digits */
    ST_KIND,        /* K_* of the header line being read */
    ST_MASK,        /* bit set of fields that capture the current value */
    ST_SUB,         /* Content-Length / token-list sub-parser state */
    ST_FLAGS,       /* F_* collected from the head */
    ST_RET,         /* state that receives the LF after a CR */
    ST_VPOS,        /* bytes of the current value (after leading OWS) */
    ST_VTRIM,       /* value length without trailing OWS */
};

enum {
    /* start line: P_START..P_VAL are the head, bounded by HTTP_MAX_HEAD */
    P_START = 0,
    P_METHOD,
    P_TARGET0,
    P_TARGET,
    P_RVER,
    P_SVER,
    P_CODE,
    P_CODE_END,
    P_REASON,
    /* header and trailer lines */
    P_LINE_START,
    P_NAME,
    P_VAL_OWS,
    P_VAL,
    /* chunk-size line: P_CSIZE..P_CEXT, bounded by CHUNK_LINE_MAX */
    P_CSIZE,
    P_CSIZE_WS,
    P_CEXT,
    /* a CR was read: the next byte must be LF, handed to st[ST_RET] */
    P_CR,
    P_BODY_LEN,
    P_BODY_CLOSE,
    P_CDATA,
    P_CDATA_END,
    P_DONE,
    P_ERROR,
};

enum { K_IGNORE = 0, K_CL, K_TE, K_CONN, K_EXPECT };

enum {
    F_TE = 1u << 0,          /* a non-empty Transfer-Encoding was seen */
    F_TE_CHUNKED = 1u << 1,  /* ... and its last coding is chunked */
    F_CLOSE = 1u << 2,
    F_KEEPALIVE = 1u << 3,
    F_EXPECT = 1u << 4,
    F_TRAILER = 1u << 5,     /* header lines are trailers: nothing captured */
};

#define LEAD_MAX 8u           /* CR/LF bytes tolerated before a start line */
#define CHUNK_LINE_MAX 4096u  /* chunk-size line with extensions */
#define CL_MAX (1ull << 62)   /* beyond this a Content-Length is nonsense */
#define FIELD_CAP ((uint32_t)sizeof(((http_field *)0)->v) - 1u)
#define TARGET_CAP ((uint32_t)sizeof(((http_req *)0)->target) - 1u)
#define METHOD_CAP ((uint32_t)sizeof(((http_req *)0)->method) - 1u)
#define SCRATCH_CAP ((uint16_t)sizeof(((http_req *)0)->scratch))

/* ---- byte classes -------------------------------------------------------- */
enum { C_TCHAR = 1, C_TARGET = 2, C_VALUE = 4 };

#define TCV (C_TCHAR | C_TARGET | C_VALUE)
#define TV (C_TARGET | C_VALUE)
static const uint8_t cls[256] = {
    ['\t'] = C_VALUE,
    [' '] = C_VALUE,
    ['!'] = TCV, ['"'] = TV, ['#'] = TCV, ['$'] = TCV, ['%'] = TCV, ['&'] = TCV,
    ['\''] = TCV, ['('] = TV, [')'] = TV, ['*'] = TCV, ['+'] = TCV, [','] = TV,
    ['-'] = TCV, ['.'] = TCV, ['/'] = TV,
    ['0' ... '9'] = TCV,
    [':'] = TV, [';'] = TV, ['<'] = TV, ['='] = TV, ['>'] = TV, ['?'] = TV, ['@'] = TV,
    ['A' ... 'Z'] = TCV,
    ['['] = TV, ['\\'] = TV, [']'] = TV, ['^'] = TCV, ['_'] = TCV, ['`'] = TCV,
    ['a' ... 'z'] = TCV,
    ['{'] = TV, ['|'] = TCV, ['}'] = TV, ['~'] = TCV,
    /* obs-text: raw UTF-8 in paths and values is common in the wild */
    [0x80 ... 0xff] = TV,
};
#undef TCV
#undef TV

static inline uint8_t lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : c;
}

static inline int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Long runs (user agents, cookies, paths) are scanned 8 bytes at a time: a
 * word with no byte below `lo` and no DEL is all valid (bytes >= 0x80 are
 * obs-text, valid too). In a flagged word the lowest flagged byte is a true
 * one (a borrow only runs upwards from a byte that is itself flagged), so on
 * little-endian machines the bytes below it are skipped at once; that byte
 * goes through the table (HT is valid in a value) and the word scan resumes.
 * Loads stay below lim: never a byte past the caller's input. */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline uint64_t word_flags(uint64_t x, uint8_t lo)
{
    uint64_t del = x ^ (ONES * 0x7f);
    return ((x - ONES * lo) & ~x & HIGHS) | ((del - ONES) & ~del & HIGHS);
}

/* With SSE2 (every x86-64), sixteen bytes at a time: a compare or two per
 * class and a bit mask of the bytes that stop the run, whose lowest bit is
 * the answer. The same classes as cls[], exactly; only used while 16 bytes
 * remain below lim. HTTP_PARSER_NO_SIMD builds the portable code alone (the
 * tests run both). */
#if defined(__SSE2__) && !defined(HTTP_PARSER_NO_SIMD)
#include <emmintrin.h>
#define HAVE_SIMD 1

static inline __m128i ld128(const uint8_t *p)
{
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

/* Bit k: p[k] is not in C_VALUE (a control byte other than HT, or DEL), or,
 * target != 0, not in C_TARGET (also SP and HT). */
static inline unsigned stop16(const uint8_t *p, int target)
{
    __m128i x = ld128(p);
    __m128i lo = _mm_set1_epi8(target ? 0x20 : 0x1f);
    __m128i ctl = _mm_cmpeq_epi8(_mm_max_epu8(x, lo), lo); /* x <= lo, unsigned */
    if (!target)
        ctl = _mm_andnot_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\t')), ctl);
    __m128i del = _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(ctl, del));
}

/* Bit k: p[k] is not a letter, a digit or '-' (signed compares: bytes >=
 * 0x80 are negative and match none). Other token bytes go through cls[]. */
static inline unsigned name_stop16(const uint8_t *p)
{
    __m128i x = ld128(p);
    __m128i l = _mm_or_si128(x, _mm_set1_epi8(0x20));
    __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(l, _mm_set1_epi8('a' - 1)),
                                   _mm_cmpgt_epi8(_mm_set1_epi8('z' + 1), l));
    __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('0' - 1)),
                                  _mm_cmpgt_epi8(_mm_set1_epi8('9' + 1), x));
    __m128i ok = _mm_or_si128(_mm_or_si128(letter, digit), _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));
    return (unsigned)_mm_movemask_epi8(ok) ^ 0xffffu;
}
#endif

/* The first byte at or after i (below lim) not in class cl: cl is C_VALUE
 * (lo 0x20) or C_TARGET (lo 0x21). */
__attribute__((noinline)) static size_t scan(const uint8_t *d, size_t i, size_t lim, uint8_t lo, uint8_t cl)
{
#ifdef HAVE_SIMD
    while (lim - i >= 16) {
        unsigned m = stop16(d + i, cl == C_TARGET);
        if (m)
            return i + (size_t)__builtin_ctz(m);
        i += 16;
    }
#endif
    for (;;) {
        while (lim - i >= 8) {
            uint64_t x;
            __builtin_memcpy(&x, d + i, 8); /* one unaligned load */
            uint64_t f = word_flags(x, lo);
            if (f) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                i += (size_t)__builtin_ctzll(f) >> 3;
#endif
                break;
            }
            i += 8;
        }
        if (i < lim && (cls[d[i]] & cl)) {
            i++;
            continue;
        }
        return i;
    }
}

/* ---- names ---------------------------------------------------------------- */
typedef struct name_ent {
    const char *s;
    uint8_t len;
} name_ent;
#define NE(lit) { lit, (uint8_t)(sizeof(lit) - 1) }

/* Request fields captured by default, in capture-bit order (see http_req_field_off). */
#define REQ_KNOWN 9u

/* Every name with a meaning here. A header line's name is looked up by its
 * length and first byte (known_find), then compared once, eight bytes at a
 * time: no per-byte work beyond finding where the name ends. */
enum { N_SECRET = 1, N_REQ_ONLY = 2 };
typedef struct known_ent {
    name_ent n;
    uint8_t kind;   /* K_* */
    int8_t bit;     /* request capture bit, -1 none */
    uint8_t flags;  /* N_* */
} known_ent;

enum {
    KN_HOST, KN_USER_AGENT, KN_DD_TRACE_ID, KN_DD_PARENT_ID, KN_DD_PRIORITY, KN_DD_ORIGIN,
    KN_DD_TAGS, KN_TRACEPARENT, KN_TRACESTATE, KN_CL, KN_TE, KN_CONN, KN_EXPECT,
    KN_AUTHORIZATION, KN_COOKIE, KN_SET_COOKIE, KN_PROXY_AUTHORIZATION, KN_COUNT
};

/* Names are lowercase letters and '-' only: known_eq relies on it. */
static const known_ent known[KN_COUNT] = {
    [KN_HOST] = { NE("host"), K_IGNORE, 0, 0 },
    [KN_USER_AGENT] = { NE("user-agent"), K_IGNORE, 1, 0 },
    [KN_DD_TRACE_ID] = { NE("x-datadog-trace-id"), K_IGNORE, 2, 0 },
    [KN_DD_PARENT_ID] = { NE("x-datadog-parent-id"), K_IGNORE, 3, 0 },
    [KN_DD_PRIORITY] = { NE("x-datadog-sampling-priority"), K_IGNORE, 4, 0 },
    [KN_DD_ORIGIN] = { NE("x-datadog-origin"), K_IGNORE, 5, 0 },
    [KN_DD_TAGS] = { NE("x-datadog-tags"), K_IGNORE, 6, 0 },
    [KN_TRACEPARENT] = { NE("traceparent"), K_IGNORE, 7, 0 },
    [KN_TRACESTATE] = { NE("tracestate"), K_IGNORE, 8, 0 },
    [KN_CL] = { NE("content-length"), K_CL, -1, 0 },
    [KN_TE] = { NE("transfer-encoding"), K_TE, -1, 0 },
    [KN_CONN] = { NE("connection"), K_CONN, -1, 0 },
    [KN_EXPECT] = { NE("expect"), K_EXPECT, -1, N_REQ_ONLY },
    /* values never copied (WIRE.md §2), even when extra_names asks */
    [KN_AUTHORIZATION] = { NE("authorization"), K_IGNORE, -1, N_SECRET },
    [KN_COOKIE] = { NE("cookie"), K_IGNORE, -1, N_SECRET },
    [KN_SET_COOKIE] = { NE("set-cookie"), K_IGNORE, -1, N_SECRET },
    [KN_PROXY_AUTHORIZATION] = { NE("proxy-authorization"), K_IGNORE, -1, N_SECRET },
};

static inline uint64_t ld64(const void *p)
{
    uint64_t x;
    __builtin_memcpy(&x, p, 8);
    return x;
}

static inline uint32_t ld32(const void *p)
{
    uint32_t x;
    __builtin_memcpy(&x, p, 4);
    return x;
}

/* s[0..n) (token bytes, any case) equals lit (lowercase letters and '-', n
 * bytes, n >= 4), case-insensitively. OR-ing 0x20 into a token byte gives a
 * lowercase letter only for that letter in either case, and '-' only for '-'
 * (the other byte that does, CR, is not a token byte), so one OR per word is
 * an exact case-insensitive compare here. Loads stay inside s[0..n). */
static inline int known_eq(const uint8_t *s, const char *lit, unsigned n)
{
    if (n < 8)
        return (ld32(s) | 0x20202020u) == ld32(lit) &&
               (ld32(s + n - 4) | 0x20202020u) == ld32(lit + n - 4);
    unsigned i = 0;
    for (; i + 8 < n; i += 8)
        if ((ld64(s + i) | ONES * 0x20) != ld64(lit + i))
            return 0;
    return (ld64(s + n - 8) | ONES * 0x20) == ld64(lit + n - 8);
}

/* The known[] entry named s[0..n) (token bytes, any case, n <= SCRATCH_CAP),
 * or -1. At most one candidate per (length, first byte). */
static inline int known_find(const uint8_t *s, unsigned n)
{
    uint8_t c = (uint8_t)(s[0] | 0x20);
    int k;
    switch (n) {
    case 4: k = KN_HOST; break;
    case 6: k = c == 'e' ? KN_EXPECT : KN_COOKIE; break;
    case 10:
        k = c == 'u' ? KN_USER_AGENT : c == 'c' ? KN_CONN : c == 's' ? KN_SET_COOKIE : KN_TRACESTATE;
        break;
    case 11: k = KN_TRACEPARENT; break;
    case 13: k = KN_AUTHORIZATION; break;
    case 14: k = c == 'x' ? KN_DD_TAGS : KN_CL; break;
    case 16: k = KN_DD_ORIGIN; break;
    case 17: k = KN_TE; break;
    case 18: k = KN_DD_TRACE_ID; break;
    case 19: k = c == 'x' ? KN_DD_PARENT_ID : KN_PROXY_AUTHORIZATION; break;
    case 27: k = KN_DD_PRIORITY; break;
    default: return -1;
    }
    return known_eq(s, known[k].n.s, n) ? k : -1;
}

/* Configured names are untrusted in case only: compare case-insensitively and
 * read at most len + 1 bytes of them (never past their NUL). */
static int name_eq_cfg(const uint8_t *s, uint32_t len, const char *cfg)
{
    for (uint32_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)cfg[i];
        if (c == 0 || lower(c) != lower(s[i]))
            return 0;
    }
    return cfg[len] == 0;
}

/* Token-list words (Transfer-Encoding, Connection, Expect). */
static const name_ent w_chunked = NE("chunked");
static const name_ent w_conn[2] = { NE("close"), NE("keep-alive") };
static const name_ent w_expect = NE("100-continue");

/* ---- one view over either parser ------------------------------------------ */
typedef struct hp {
    http_msg *m;     /* what both have (http/parser.h) */
    http_req *req;   /* exactly one of req / resp */
    http_resp *resp;
    char *base;      /* the parser struct, for field_of */
    const uint16_t *field_off;
} hp;

/* Capture bit b -> the field's offset in its parser: request bits
 * 0..REQ_KNOWN-1 are the default fields (known[].bit), the next HTTP_MAX_EXTRA
 * bits the extras; responses only have extras, from bit 0. */
#define OFF(t, m) ((uint16_t)__builtin_offsetof(t, m))
const uint16_t http_req_field_off[REQ_KNOWN + HTTP_MAX_EXTRA] = {
    OFF(http_req, host), OFF(http_req, user_agent), OFF(http_req, dd_trace_id),
    OFF(http_req, dd_parent_id), OFF(http_req, dd_sampling_priority), OFF(http_req, dd_origin),
    OFF(http_req, dd_tags), OFF(http_req, traceparent), OFF(http_req, tracestate),
    OFF(http_req, extra[0]), OFF(http_req, extra[1]), OFF(http_req, extra[2]),
    OFF(http_req, extra[3]), OFF(http_req, extra[4]), OFF(http_req, extra[5]),
    OFF(http_req, extra[6]), OFF(http_req, extra[7]),
};
static const uint16_t resp_field_off[HTTP_MAX_EXTRA] = {
    OFF(http_resp, extra[0]), OFF(http_resp, extra[1]), OFF(http_resp, extra[2]),
    OFF(http_resp, extra[3]), OFF(http_resp, extra[4]), OFF(http_resp, extra[5]),
    OFF(http_resp, extra[6]), OFF(http_resp, extra[7]),
};
#undef OFF
_Static_assert(sizeof(http_req) < 65536, "field offsets are 16-bit");
_Static_assert(REQ_KNOWN + HTTP_MAX_EXTRA == HTTP_REQ_FIELDS, "http_req_field_off's size");
/* The union's two views of the common part are one layout (same members). */
#define SAME(t, m) _Static_assert(__builtin_offsetof(t, m) == __builtin_offsetof(t, msg.m), #t "." #m)
SAME(http_req, content_length); SAME(http_req, present_mask); SAME(http_req, st);
SAME(http_req, remaining); SAME(http_req, extra_names);
SAME(http_resp, content_length); SAME(http_resp, present_mask); SAME(http_resp, st);
SAME(http_resp, remaining); SAME(http_resp, extra_names);
#undef SAME

static inline http_field *field_of(const hp *h, unsigned b)
{
    return (http_field *)(h->base + h->field_off[b]);
}

static void field_clear(http_field *f)
{
    f->v[0] = 0;
    f->len = 0;
    f->present = 0;
    f->truncated = 0;
}

/* ---- header lines ----------------------------------------------------------- */

/* header_classify for a name that may mean something: k is its known[] entry
 * or -1 (then extra names are configured). */
__attribute__((noinline)) static void header_match(hp *h, const uint8_t *s, uint32_t n, int k)
{
    uint32_t kind = K_IGNORE, mask = 0;

    if (k >= 0) {
        const known_ent *e = &known[k];
        if (e->flags & N_SECRET)
            return;
        if (!(e->flags & N_REQ_ONLY) || h->req)
            kind = e->kind;
        if (e->bit >= 0 && h->req)
            mask = 1u << e->bit;
    }
    if (h->m->extra_names[0]) {
        unsigned base = h->req ? REQ_KNOWN : 0;
        for (unsigned i = 0; i < HTTP_MAX_EXTRA && h->m->extra_names[i]; i++)
            if (name_eq_cfg(s, n, h->m->extra_names[i]))
                mask |= 1u << (base + i);
    }
    for (uint32_t m = mask; m; m &= m - 1)
        field_of(h, (unsigned)__builtin_ctz(m))->present = 1;
    h->m->present_mask |= mask;
    h->m->st[ST_KIND] = kind;
    h->m->st[ST_MASK] = mask;
}

/* At the colon: what the header named s[0..n) means for framing, and which
 * fields keep its value. n is at most SCRATCH_CAP + 1 (too long to match).
 * Most names mean nothing here: a length and a first byte say so. */
static inline void header_classify(hp *h, const uint8_t *s, uint32_t n)
{
    uint32_t *st = h->m->st;

    st[ST_SUB] = 0;
    st[ST_VPOS] = 0;
    st[ST_VTRIM] = 0;
    st[ST_KIND] = K_IGNORE;
    st[ST_MASK] = 0;
    if ((st[ST_FLAGS] & F_TRAILER) || n > SCRATCH_CAP)
        return;
    int k = known_find(s, n);
    if (k >= 0 || h->m->extra_names[0])
        header_match(h, s, n, k);
}

/* A name cut by the end of the input: keep its first SCRATCH_CAP bytes for
 * header_classify (n0 of them are there already). */
static void name_save(hp *h, uint32_t n0, const uint8_t *d, size_t k)
{
    if (n0 >= SCRATCH_CAP)
        return;
    if (k > SCRATCH_CAP - n0)
        k = SCRATCH_CAP - n0;
    __builtin_memcpy(h->m->scratch + n0, d, k);
}

/* Token-list matcher packed in st[ST_SUB]: bits 0-7 position in the element,
 * 8-9 candidates still matching (inverted: set = ruled out), bit 12 element
 * non-empty, bit 13 whitespace after the element's first word. */
#define TM_POS(x) ((x) & 0xffu)
#define TM_DEAD 0x300u
#define TM_NONEMPTY (1u << 12)
#define TM_ENDED (1u << 13)

static void tm_words(uint32_t kind, const name_ent **w, unsigned *nw)
{
    if (kind == K_TE) {
        *w = &w_chunked;
        *nw = 1;
    } else if (kind == K_CONN) {
        *w = w_conn;
        *nw = 2;
    } else {
        *w = &w_expect;
        *nw = 1;
    }
}

/* A non-empty list element of a kind's header ended; bit k of matched: it
 * was word k. */
static void tm_apply(uint32_t *st, uint32_t kind, unsigned matched)
{
    if (kind == K_TE) {
        st[ST_FLAGS] |= F_TE;
        if (matched)
            st[ST_FLAGS] |= F_TE_CHUNKED;
        else
            st[ST_FLAGS] &= ~(uint32_t)F_TE_CHUNKED;
    } else if (kind == K_CONN) {
        if (matched & 1)
            st[ST_FLAGS] |= F_CLOSE;
        if (matched & 2)
            st[ST_FLAGS] |= F_KEEPALIVE;
    } else if (matched) {
        st[ST_FLAGS] |= F_EXPECT;
    }
}

static void tm_finish(hp *h)
{
    uint32_t *st = h->m->st, sub = st[ST_SUB], kind = st[ST_KIND];
    const name_ent *w;
    unsigned nw, matched = 0;

    st[ST_SUB] = 0;
    if (!(sub & TM_NONEMPTY))
        return; /* empty list elements are ignored (RFC 9110 §5.6.1) */
    tm_words(kind, &w, &nw);
    for (unsigned k = 0; k < nw; k++)
        if (!(sub & (0x100u << k)) && TM_POS(sub) == w[k].len)
            matched |= 1u << k;
    tm_apply(st, kind, matched);
}

__attribute__((noinline)) static void tm_byte(hp *h, uint8_t c)
{
    uint32_t sub = h->m->st[ST_SUB];
    if (c == ',') {
        tm_finish(h);
        return;
    }
    if (c == ' ' || c == '\t') {
        if (sub & TM_NONEMPTY)
            h->m->st[ST_SUB] = sub | TM_ENDED;
        return;
    }
    if (sub & TM_ENDED) { /* "clo se", "chunked ;x": not one of our words */
        h->m->st[ST_SUB] = sub | TM_DEAD;
        return;
    }
    const name_ent *w;
    unsigned nw;
    uint32_t pos = TM_POS(sub);
    tm_words(h->m->st[ST_KIND], &w, &nw);
    c = lower(c);
    for (unsigned k = 0; k < nw; k++)
        if (pos >= w[k].len || (uint8_t)w[k].s[pos] != c)
            sub |= 0x100u << k;
    if (pos < 0xff)
        pos++;
    h->m->st[ST_SUB] = (sub & ~0xffu) | pos | TM_NONEMPTY;
}

/* Content-Length sub-parser in st[ST_SUB]: 0 before digits, 1 in digits, 2
 * after digits (OWS); the number accumulates in *remaining, unused until the
 * body starts. */
static int cl_commit(hp *h)
{
    int64_t v = (int64_t)h->m->remaining;
    if (h->m->content_length >= 0 && h->m->content_length != v)
        return -1; /* conflicting lengths: the classic smuggling vector */
    h->m->content_length = v;
    return 0;
}

static int cl_byte(hp *h, uint8_t c)
{
    uint32_t *sub = &h->m->st[ST_SUB];
    if (c >= '0' && c <= '9') {
        if (*sub == 2)
            return -1;
        if (*sub == 0)
            h->m->remaining = 0;
        h->m->remaining = h->m->remaining * 10 + (uint64_t)(c - '0');
        if (h->m->remaining > CL_MAX)
            return -1;
        *sub = 1;
        return 0;
    }
    if (c == ' ' || c == '\t') {
        if (*sub == 1)
            *sub = 2;
        return 0;
    }
    if (c == ',' && *sub != 0) {
        *sub = 0;
        return cl_commit(h);
    }
    return -1;
}

/* Copy a run of value bytes (positions vpos.. of this value) into every
 * capturing field. A field's len is only updated at the end of the line, so
 * the committed part and the separator position stay known meanwhile. */
static void capture_run(hp *h, const uint8_t *d, uint32_t n, uint32_t vpos)
{
    for (uint32_t m = h->m->st[ST_MASK]; m; m &= m - 1) {
        http_field *f = field_of(h, (unsigned)__builtin_ctz(m));
        uint32_t base = f->len, sep = base ? 2u : 0u;
        if (vpos == 0 && sep) {
            if (base < FIELD_CAP)
                f->v[base] = ',';
            if (base + 1 < FIELD_CAP)
                f->v[base + 1] = ' ';
        }
        uint32_t at = base + sep + vpos;
        if (at < FIELD_CAP)
            __builtin_memcpy(f->v + at, d, n < FIELD_CAP - at ? n : FIELD_CAP - at);
    }
}

/* Value bytes d[a..i) (one run: no line end inside) of a header that
 * matters (st[ST_KIND] != K_IGNORE or st[ST_MASK]): copy them into the
 * capturing fields and parse them for framing. -1: not valid HTTP. */
__attribute__((noinline)) static int value_run(hp *h, const uint8_t *d, size_t a, size_t i)
{
    uint32_t *st = h->m->st;
    /* trailing OWS of this run is only kept if more value follows */
    size_t j = i;
    while (j > a && (d[j - 1] == ' ' || d[j - 1] == '\t'))
        j--;
    uint32_t vpos = st[ST_VPOS] + (uint32_t)(i - a), vtrim = st[ST_VTRIM];
    if (j > a)
        vtrim = st[ST_VPOS] + (uint32_t)(j - a);
    if (st[ST_MASK])
        capture_run(h, d + a, (uint32_t)(i - a), st[ST_VPOS]);
    switch (st[ST_KIND]) {
    case K_CL:
        for (size_t k = a; k < i; k++)
            if (cl_byte(h, d[k]) < 0)
                return -1;
        break;
    case K_TE:
    case K_CONN:
    case K_EXPECT:
        for (size_t k = a; k < i; k++)
            tm_byte(h, d[k]);
        break;
    }
    st[ST_VPOS] = vpos;
    st[ST_VTRIM] = vtrim;
    return 0;
}

__attribute__((noinline)) static int header_end(hp *h)
{
    uint32_t *st = h->m->st, vtrim = st[ST_VTRIM];
    for (uint32_t m = st[ST_MASK]; m; m &= m - 1) {
        http_field *f = field_of(h, (unsigned)__builtin_ctz(m));
        if (vtrim) {
            uint32_t n = f->len + (f->len ? 2u : 0u) + vtrim;
            if (n > FIELD_CAP) {
                n = FIELD_CAP;
                f->truncated = 1;
            }
            f->len = (uint16_t)n;
        }
        f->v[f->len] = 0;
    }
    switch (st[ST_KIND]) {
    case K_CL:
        if (st[ST_SUB] == 0 || cl_commit(h) < 0)
            return -1; /* empty value or trailing comma */
        break;
    case K_TE:
    case K_CONN:
    case K_EXPECT:
        tm_finish(h);
        break;
    }
    st[ST_KIND] = K_IGNORE;
    st[ST_MASK] = 0;
    st[ST_SUB] = 0;
    return 0;
}

/* The empty line after the head: decide the framing. Returns the events. */
__attribute__((noinline)) static int head_end(hp *h)
{
    uint32_t *st = h->m->st, fl = st[ST_FLAGS];
    int close = (fl & F_CLOSE) || (h->m->version_minor == 0 && !(fl & F_KEEPALIVE));
    int chunked = (fl & F_TE) && (fl & F_TE_CHUNKED);

    h->m->conn_close = (uint8_t)close;
    h->m->chunked = (uint8_t)chunked;
    if (fl & F_TE)
        h->m->content_length = -1; /* Transfer-Encoding overrides Content-Length */
    if (h->req) {
        h->req->expect_continue = (fl & F_EXPECT) ? 1 : 0;
        if ((fl & F_TE) && !chunked)
            return HTTP_P_ERROR;
        if (chunked)
            goto chunks;
        if (h->m->content_length > 0)
            goto length;
        st[ST_STATE] = P_DONE;
        return HTTP_P_HEADERS | HTTP_P_DONE;
    }
    http_resp *r = h->resp;
    if (r->status < 200 || r->status == 204 || r->status == 304 || r->no_body) {
        st[ST_STATE] = P_DONE;
        return HTTP_P_HEADERS | HTTP_P_DONE;
    }
    if (chunked)
        goto chunks;
    if (!(fl & F_TE) && h->m->content_length >= 0) {
        if (h->m->content_length == 0) {
            st[ST_STATE] = P_DONE;
            return HTTP_P_HEADERS | HTTP_P_DONE;
        }
        goto length;
    }
    r->body_until_close = 1;
    h->m->conn_close = 1;
    st[ST_STATE] = P_BODY_CLOSE;
    return HTTP_P_HEADERS;
length:
    h->m->remaining = (uint64_t)h->m->content_length;
    st[ST_STATE] = P_BODY_LEN;
    return HTTP_P_HEADERS;
chunks:
    h->m->remaining = 0;
    st[ST_AUX] = 0;
    st[ST_STATE] = P_CSIZE;
    return HTTP_P_HEADERS;
}

/* ---- the machine ------------------------------------------------------------ */

/* Region-bounded states: the head and trailers share HTTP_MAX_HEAD, each
 * chunk-size line CHUNK_LINE_MAX; *head_bytes counts the current region. */
static uint32_t region_cap(uint32_t s)
{
    if (s <= P_VAL)
        return HTTP_MAX_HEAD;
    if (s >= P_CSIZE && s <= P_CEXT)
        return CHUNK_LINE_MAX;
    return 0;
}

__attribute__((noinline)) static int run(hp *h, const uint8_t *d, size_t len, size_t *used)
{
    uint32_t *st = h->m->st;
    uint32_t s = st[ST_STATE];
    uint32_t hb = h->m->head_bytes; /* a local: stored once per call */
    size_t i = 0;
    uint32_t n0; /* P_NAME: bytes of the name before this input */
    int ev = 0;

    if (s == P_ERROR) {
        *used = len;
        return HTTP_P_ERROR;
    }
    if (s == P_DONE) {
        *used = 0;
        return HTTP_P_DONE;
    }
    while (i < len && s != P_DONE) {
        uint32_t cap = region_cap(s == P_CR ? st[ST_RET] : s);
        size_t lim = len, i0 = i;
        int newregion = 0;
        if (cap) {
            uint32_t room = cap - hb;
            if (room == 0)
                goto fail;
            if (len - i > room)
                lim = i + room;
        }
        uint8_t c = d[i];
        switch (s) {
        /* The head's states fall through into each other while input lasts
         * (they share one region, so lim holds for all of them). */
        case P_START:
            if (c == '\r' || c == '\n') {
                if (++st[ST_AUX] > LEAD_MAX)
                    goto fail;
                i++;
                if (c == '\r') {
                    st[ST_RET] = P_START;
                    s = P_CR;
                }
                break;
            }
            st[ST_AUX] = 0;
            if (!h->req) {
                s = P_SVER;
                goto version;
            }
            if (!(cls[c] & C_TCHAR))
                goto fail;
            s = P_METHOD;
            __attribute__((fallthrough));

        case P_METHOD: {
            http_req *r = h->req;
            int bad = 0;
            while (i < lim) {
                c = d[i];
                if (cls[c] & C_TCHAR) {
                    if (r->method_len >= METHOD_CAP) {
                        bad = 1;
                        break;
                    }
                    r->method[r->method_len++] = (char)c;
                    i++;
                    continue;
                }
                /* method_len > 0 here: P_START saw a token byte */
                if (c != ' ') {
                    bad = 1;
                    break;
                }
                i++;
                s = P_TARGET0;
                break;
            }
            r->method[r->method_len] = 0; /* terminated even on error */
            if (bad)
                goto fail;
            if (s != P_TARGET0 || i >= lim)
                break;
            c = d[i];
        }
            __attribute__((fallthrough));

        case P_TARGET0:
            if (!(cls[c] & C_TARGET))
                goto fail;
            s = P_TARGET;
            __attribute__((fallthrough));

        case P_TARGET: {
            http_req *r = h->req;
            size_t a = i;
            i = scan(d, i, lim, 0x21, C_TARGET);
            size_t k = i - a, room = TARGET_CAP - r->target_len;
            if (k > room) {
                k = room;
                r->target_truncated = 1; /* keep parsing: the span still counts */
            }
            __builtin_memcpy(r->target + r->target_len, d + a, k);
            r->target_len = (uint16_t)(r->target_len + k);
            r->target[r->target_len] = 0;
            if (i >= lim)
                break;
            if (d[i] != ' ')
                goto fail;
            i++;
            st[ST_AUX] = 0;
            s = P_RVER;
            if (i >= lim)
                break;
        }
            __attribute__((fallthrough));

        case P_RVER:
        case P_SVER:
        version:
            while (i < lim) {
                uint32_t k = st[ST_AUX];
                c = d[i];
                if (k < 7) {
                    if (c != (uint8_t)"HTTP/1."[k])
                        goto fail;
                } else if (k == 7) {
                    if (c < '0' || c > '9')
                        goto fail;
                    h->m->version_minor = (uint8_t)(c - '0');
                } else if (s == P_SVER) {
                    if (c != ' ')
                        goto fail;
                    i++;
                    st[ST_AUX] = 0;
                    h->resp->status = 0;
                    s = P_CODE;
                    break;
                } else {
                    if (c == '\r' && lim - i >= 2 && d[i + 1] == '\n') {
                        i++;
                        s = P_LINE_START;
                    } else if (c == '\r') {
                        st[ST_RET] = P_RVER;
                        s = P_CR;
                    } else if (c == '\n') {
                        s = P_LINE_START;
                    } else {
                        goto fail;
                    }
                    i++;
                    break;
                }
                st[ST_AUX] = k + 1;
                i++;
            }
            if (s == P_LINE_START)
                goto next_line;
            if (s != P_CODE)
                break;
            __attribute__((fallthrough));

        case P_CODE:
            while (i < lim) {
                c = d[i];
                if (c < (st[ST_AUX] == 0 ? '1' : '0') || c > (st[ST_AUX] == 0 ? '5' : '9'))
                    goto fail;
                h->resp->status = h->resp->status * 10 + (c - '0');
                i++;
                if (++st[ST_AUX] == 3) {
                    s = P_CODE_END;
                    break;
                }
            }
            if (s != P_CODE_END || i >= lim)
                break;
            c = d[i];
            __attribute__((fallthrough));

        case P_CODE_END:
            /* "HTTP/1.1 200\r\n" without a reason phrase is common enough */
            if (c == ' ') {
                i++;
            } else if (c != '\r' && c != '\n') {
                goto fail;
            }
            s = P_REASON;
            if (i >= lim)
                break;
            __attribute__((fallthrough));

        case P_REASON:
            i = scan(d, i, lim, 0x20, C_VALUE);
            if (i < lim) {
                c = d[i++];
                if (c == '\r' && i < lim && d[i] == '\n') {
                    i++;
                    s = P_LINE_START;
                } else if (c == '\r') {
                    st[ST_RET] = P_REASON;
                    s = P_CR;
                } else if (c == '\n') {
                    s = P_LINE_START;
                } else {
                    goto fail;
                }
            }
            if (s != P_LINE_START)
                break;
        next_line:
            if (i >= lim)
                break;
            c = d[i];
            __attribute__((fallthrough));

        case P_LINE_START:
        line_start:
            if (c == '\r') {
                i++;
                if (i < lim && d[i] == '\n')
                    goto head_lf; /* the common CRLF without a round trip */
                st[ST_RET] = P_LINE_START;
                s = P_CR;
                break;
            }
            if (c == '\n') {
            head_lf:
                i++;
                if (st[ST_FLAGS] & F_TRAILER) {
                    s = P_DONE;
                    ev |= HTTP_P_DONE;
                    break;
                }
                st[ST_STATE] = s; /* head_end sets the next state */
                int e = head_end(h);
                if (e & HTTP_P_ERROR)
                    goto fail;
                ev |= e;
                s = st[ST_STATE];
                newregion = 1;
                break;
            }
            /* SP/HT here is obsolete line folding (or space before the first
             * header): refused, as RFC 9112 §5.2 allows. */
            if (!(cls[c] & C_TCHAR))
                goto fail;
            s = P_NAME;
            n0 = 0;
            goto name;

        case P_NAME:
            n0 = h->m->scratch_len;
        name: {
            /* Find the colon (four table lookups per step: names are short
             * runs of letters), then look the name up where it lies; only a
             * name cut by the end of the input is kept in scratch. */
            size_t a = i;
            while (lim - i >= 4 &&
                   (cls[d[i]] & cls[d[i + 1]] & cls[d[i + 2]] & cls[d[i + 3]] & C_TCHAR))
                i += 4;
            while (i < lim && (cls[d[i]] & C_TCHAR))
                i++;
            size_t k = i - a;
            /* SCRATCH_CAP + 1 marks "too long to match" */
            uint32_t n = k > SCRATCH_CAP + 1u - n0 ? SCRATCH_CAP + 1u : n0 + (uint32_t)k;
            if (i >= lim) {
                name_save(h, n0, d + a, k);
                h->m->scratch_len = (uint16_t)n;
                break;
            }
            if (d[i] != ':')
                goto fail; /* includes SP before the colon (RFC 9112 §5.1) */
            i++;
            const uint8_t *nm = d + a;
            if (n0) {
                name_save(h, n0, d + a, k);
                nm = (const uint8_t *)h->m->scratch;
            }
            h->m->scratch_len = (uint16_t)n;
            header_classify(h, nm, n);
            s = P_VAL_OWS;
        }
            __attribute__((fallthrough));

        case P_VAL_OWS:
            while (i < lim && (d[i] == ' ' || d[i] == '\t'))
                i++;
            if (i >= lim)
                break;
            s = P_VAL;
            __attribute__((fallthrough));

        case P_VAL: {
            size_t a = i;
            i = scan(d, i, lim, 0x20, C_VALUE);
            /* most headers are only validated: nothing kept, nothing parsed */
            if (i > a && (st[ST_KIND] != K_IGNORE || st[ST_MASK]) && value_run(h, d, a, i) < 0)
                goto fail;
            if (i >= lim)
                break;
            c = d[i++];
            if (c == '\r') {
                if (i >= lim || d[i] != '\n') {
                    st[ST_RET] = P_VAL;
                    s = P_CR;
                    break;
                }
                i++;
            } else if (c != '\n') {
                goto fail; /* NUL, bare control bytes */
            }
            /* an ignored header leaves nothing to finish (st[ST_SUB] is 0) */
            if ((st[ST_KIND] != K_IGNORE || st[ST_MASK]) && header_end(h) < 0)
                goto fail;
            s = P_LINE_START;
            if (i >= lim)
                break;
            c = d[i];
            goto line_start; /* next header line, same region: no round trip */
        }

        case P_CR:
            if (c != '\n')
                goto fail;
            s = st[ST_RET]; /* that state consumes the LF as a line end */
            st[ST_RET] = 0; /* same state whether or not a split fell here */
            break;

        case P_CSIZE:
            while (i < lim) {
                int v = hexval(d[i]);
                if (v < 0)
                    break;
                if (h->m->remaining >> 60)
                    goto fail; /* more than 64 bits of chunk */
                h->m->remaining = (h->m->remaining << 4) | (uint64_t)v;
                st[ST_AUX] = 1;
                i++;
            }
            if (i < lim) {
                c = d[i];
                if (!st[ST_AUX])
                    goto fail;
                if (c == ' ' || c == '\t') {
                    i++;
                    s = P_CSIZE_WS;
                } else if (c == ';') {
                    i++;
                    s = P_CEXT;
                } else if (c == '\r' || c == '\n') {
                    s = P_CEXT;
                } else {
                    goto fail;
                }
            }
            break;

        case P_CSIZE_WS:
            while (i < lim && (d[i] == ' ' || d[i] == '\t'))
                i++;
            if (i < lim) {
                c = d[i];
                if (c == ';')
                    i++;
                else if (c != '\r' && c != '\n')
                    goto fail;
                s = P_CEXT;
            }
            break;

        case P_CEXT:
            i = scan(d, i, lim, 0x20, C_VALUE);
            if (i < lim) {
                c = d[i++];
                if (c == '\r') {
                    st[ST_RET] = P_CEXT;
                    s = P_CR;
                } else if (c == '\n') {
                    newregion = 1;
                    if (h->m->remaining == 0) {
                        st[ST_FLAGS] |= F_TRAILER;
                        s = P_LINE_START;
                    } else {
                        s = P_CDATA;
                    }
                } else {
                    goto fail;
                }
            }
            break;

        case P_BODY_LEN:
        case P_CDATA: {
            uint64_t n = len - i;
            if (n > h->m->remaining)
                n = h->m->remaining;
            i += (size_t)n;
            h->m->remaining -= n;
            if (h->m->remaining == 0) {
                if (s == P_BODY_LEN) {
                    s = P_DONE;
                    ev |= HTTP_P_DONE;
                } else {
                    s = P_CDATA_END;
                }
            }
            break;
        }

        case P_BODY_CLOSE:
            i = len;
            break;

        case P_CDATA_END:
            i++;
            if (c == '\r') {
                st[ST_RET] = P_CDATA_END;
                s = P_CR;
            } else if (c == '\n') {
                h->m->remaining = 0;
                st[ST_AUX] = 0;
                s = P_CSIZE;
                newregion = 1;
            } else {
                goto fail;
            }
            break;

        default:
            goto fail;
        }
        if (cap)
            hb += (uint32_t)(i - i0);
        if (newregion)
            hb = 0;
    }
    st[ST_STATE] = s;
    h->m->head_bytes = hb;
    *used = (s == P_DONE) ? i : len;
    return ev;
fail:
    /* Keep the events already reached (a head can complete before a broken
     * body), so every split of a stream reports the same events. */
    st[ST_STATE] = P_ERROR;
    *used = len;
    return ev | HTTP_P_ERROR;
}

/* ---- the common case in one pass ------------------------------------------
 * A head that arrives whole in one read (nearly every request and response)
 * is parsed here, line by line, by short straight-line code. The hooks run
 * right after a system call, with cold caches: the instruction-cache lines a
 * request touches cost more than its instructions, and run() spreads one
 * head over most of its 8 KB. Each line is first checked complete and
 * ordinary, then applied with the helpers run() uses (header_classify,
 * value_run, header_end, head_end), so fast() only ever stops at the start of
 * a line, in exactly the state run() reaches after the same bytes; run()
 * takes over there for everything else (a line cut by the end of the input,
 * leading CR/LF, trailers, chunked bodies, anything invalid, the
 * HTTP_MAX_HEAD bound). The split-equivalence tests compare the two: a
 * one-shot feed goes through here, a byte-by-byte feed never does. */

/* Just past the line end (CRLF or LF) at d[i], or 0 when there is none
 * complete below lim. */
static inline size_t line_end(const uint8_t *d, size_t i, size_t lim)
{
    uint16_t x, crlf;
    __builtin_memcpy(&crlf, "\r\n", 2); /* a constant: one 16-bit compare */
    if (lim - i >= 2 && (__builtin_memcpy(&x, d + i, 2), x == crlf))
        return i + 2;
    if (i < lim && d[i] == '\n')
        return i + 1;
    return 0;
}

static inline int is_digit(uint8_t c)
{
    return (uint8_t)(c - '0') <= 9;
}

/* The end of the header name at d[i..lim): the first byte that is not a
 * token byte. Without SIMD, four table lookups per step (names are short
 * runs of letters; eight-byte SWAR tests cost as much: x86 has no 64-bit
 * immediates, and a name is one or two words). */
static inline size_t name_end(const uint8_t *d, size_t i, size_t lim)
{
#ifdef HAVE_SIMD
    while (lim - i >= 16) {
        unsigned m = name_stop16(d + i);
        if (!m) {
            i += 16;
            continue;
        }
        i += (size_t)__builtin_ctz(m);
        if (!(cls[d[i]] & C_TCHAR))
            return i; /* usually the colon */
        i++;          /* '_', '.', ... */
    }
#endif
    while (lim - i >= 4 && (cls[d[i]] & cls[d[i + 1]] & cls[d[i + 2]] & cls[d[i + 3]] & C_TCHAR))
        i += 4;
    while (i < lim && (cls[d[i]] & C_TCHAR))
        i++;
    return i;
}

/* The request line at d[0..lim), applied; its end, or 0 (nothing done). */
static size_t fast_request_line(hp *h, const uint8_t *d, size_t lim)
{
    http_req *r = h->req;
    size_t m = 0;
    while (m < lim && m <= METHOD_CAP && (cls[d[m]] & C_TCHAR))
        m++;
    if (m == 0 || m > METHOD_CAP || m >= lim || d[m] != ' ')
        return 0;
    size_t t = m + 1;
    if (t >= lim || !(cls[d[t]] & C_TARGET))
        return 0;
    size_t te = scan(d, t, lim, 0x21, C_TARGET), v = te + 1, e;
    if (te >= lim || d[te] != ' ' || lim - v < 9 || __builtin_memcmp(d + v, "HTTP/1.", 7) != 0 ||
        !is_digit(d[v + 7]) || !(e = line_end(d, v + 8, lim)))
        return 0;
    copy_bytes(r->method, d, m);
    r->method[m] = 0;
    r->method_len = (uint8_t)m;
    size_t k = te - t;
    if (k > TARGET_CAP) {
        k = TARGET_CAP;
        r->target_truncated = 1;
    }
    copy_bytes(r->target, d + t, k);
    r->target[k] = 0;
    r->target_len = (uint16_t)k;
    r->version_minor = (uint8_t)(d[v + 7] - '0');
    h->m->st[ST_AUX] = 8; /* as P_RVER leaves it */
    return e;
}

/* The status line at d[0..lim), applied; its end, or 0 (nothing done). */
static size_t fast_status_line(hp *h, const uint8_t *d, size_t lim)
{
    size_t p = 12, e;
    if (lim < 13 || __builtin_memcmp(d, "HTTP/1.", 7) != 0 || !is_digit(d[7]) || d[8] != ' ' ||
        d[9] < '1' || d[9] > '5' || !is_digit(d[10]) || !is_digit(d[11]))
        return 0;
    if (d[p] == ' ')
        p++;
    else if (d[p] != '\r' && d[p] != '\n')
        return 0;
    if (!(e = line_end(d, scan(d, p, lim, 0x20, C_VALUE), lim)))
        return 0;
    h->resp->version_minor = (uint8_t)(d[7] - '0');
    h->resp->status = (d[9] - '0') * 100 + (d[10] - '0') * 10 + (d[11] - '0');
    h->m->st[ST_AUX] = 3; /* as P_CODE leaves it */
    return e;
}

/* A complete header line whose name (s[0..n), known[] entry k or -1) may
 * matter, value d[v..ve) (after the OWS): what header_classify + value_run +
 * header_end do, with the commonest cases in short: the first value of a
 * captured request field, and a plain Content-Length. st[ST_SUB, VPOS, VTRIM,
 * KIND, MASK] are 0 on entry. -1: not valid HTTP. */
static int fast_value(hp *h, const uint8_t *s, uint32_t n, int k, const uint8_t *d, size_t v, size_t ve)
{
    uint32_t *st = h->m->st;
    if (k >= 0 && !h->m->extra_names[0]) {
        const known_ent *e = &known[k];
        int bit = h->req ? e->bit : -1;
        uint32_t kind = (e->flags & N_REQ_ONLY) && !h->req ? (uint32_t)K_IGNORE : e->kind;
        if ((e->flags & N_SECRET) || (bit < 0 && kind == K_IGNORE))
            return 0; /* nothing to keep */
        if (bit >= 0) {
            http_field *f = field_of(h, (unsigned)bit);
            if (!f->present) { /* then f->len is 0: nothing to append to */
                f->present = 1;
                h->m->present_mask |= 1u << bit;
                uint32_t vpos = 0, vtrim = 0;
                if (ve > v) {
                    size_t j = ve;
                    while (j > v && (d[j - 1] == ' ' || d[j - 1] == '\t'))
                        j--;
                    vpos = (uint32_t)(ve - v);
                    vtrim = (uint32_t)(j - v);
                    copy_bytes(f->v, d + v, vpos < FIELD_CAP ? vpos : FIELD_CAP);
                }
                if (vtrim > FIELD_CAP) {
                    f->len = FIELD_CAP;
                    f->truncated = 1;
                } else {
                    f->len = (uint16_t)vtrim;
                }
                f->v[f->len] = 0;
                st[ST_VPOS] = vpos;
                st[ST_VTRIM] = vtrim;
                return 0;
            }
        } else if (kind == K_CONN || kind == K_TE || kind == K_EXPECT) {
            /* One list element ("keep-alive", "chunked"): what tm_byte over
             * its bytes and tm_finish do. Inner whitespace needs no care: no
             * word has any, so such a value matches none either way. */
            size_t j = ve;
            while (j > v && (d[j - 1] == ' ' || d[j - 1] == '\t'))
                j--;
            size_t len = j - v;
            const name_ent *w;
            unsigned nw, matched = 0;
            tm_words(kind, &w, &nw);
            /* known_eq is exact on value bytes too: the words are lowercase
             * letters, digits and '-', which OR 0x20 only makes of the byte
             * itself, its capital, or a control byte (never in a value). */
            for (unsigned q = 0; q < nw; q++)
                matched |= (unsigned)(w[q].len == len && known_eq(d + v, w[q].s, w[q].len)) << q;
            size_t p = v;
            while (!matched && p < j && d[p] != ',') /* a word has no comma */
                p++;
            if (len > 0 && (matched || p == j)) {
                tm_apply(st, kind, matched);
                st[ST_VPOS] = (uint32_t)(ve - v);
                st[ST_VTRIM] = (uint32_t)len;
                return 0;
            }
        } else if (kind == K_CL && h->m->content_length < 0 && ve > v && ve - v <= 18) {
            uint64_t x = 0; /* 18 digits stay below CL_MAX */
            size_t p = v;
            for (; p < ve && is_digit(d[p]); p++)
                x = x * 10 + (uint64_t)(d[p] - '0');
            if (p == ve) {
                h->m->remaining = x;
                h->m->content_length = (int64_t)x;
                st[ST_VPOS] = st[ST_VTRIM] = (uint32_t)(ve - v);
                return 0;
            }
        }
    }
    header_match(h, s, n, k);
    if (st[ST_KIND] != K_IGNORE || st[ST_MASK])
        if ((ve > v && value_run(h, d, v, ve) < 0) || header_end(h) < 0)
            return -1;
    return 0;
}

/* Called in P_START or P_LINE_START. Returns the events; *ip: the bytes
 * consumed (len after an error, as run() reports it). */
static int fast(hp *h, const uint8_t *d, size_t len, size_t *ip)
{
    uint32_t *st = h->m->st;
    uint32_t s = st[ST_STATE], hb = h->m->head_bytes;
    size_t i = 0, lim = len, e;
    int ev = 0;

    if (len > HTTP_MAX_HEAD - hb)
        lim = HTTP_MAX_HEAD - hb;
    if (s == P_START) {
        i = h->req ? fast_request_line(h, d, lim) : fast_status_line(h, d, lim);
        if (!i)
            goto out;
        s = P_LINE_START;
    }
    if (st[ST_FLAGS] & F_TRAILER)
        goto out;
    for (;;) {
        if (i >= lim)
            goto out;
        uint8_t c = d[i];
        if (c == '\r' || c == '\n') {
            if (!(e = line_end(d, i, lim)))
                goto out;
            i = e;
            st[ST_STATE] = P_LINE_START; /* head_end sets the next state */
            int x = head_end(h);
            if (x & HTTP_P_ERROR)
                goto fail;
            ev |= x;
            s = st[ST_STATE];
            hb = 0; /* the head's region is over */
            if (s == P_BODY_LEN) {
                uint64_t n = len - i;
                if (n > h->m->remaining)
                    n = h->m->remaining;
                i += (size_t)n;
                h->m->remaining -= n;
                if (h->m->remaining == 0) {
                    s = P_DONE;
                    ev |= HTTP_P_DONE;
                }
            }
            st[ST_STATE] = s;
            h->m->head_bytes = 0;
            *ip = i;
            return ev;
        }
        /* name, ':', OWS, value, line end: all here, or run() does it */
        size_t a = i, ne = name_end(d, i, lim);
        if (ne == a || ne >= lim || d[ne] != ':')
            goto out;
        size_t v = ne + 1;
        if (v < lim && d[v] == ' ')
            v++; /* the usual single space */
        while (v < lim && (d[v] == ' ' || d[v] == '\t'))
            v++;
        size_t ve;
#ifdef HAVE_SIMD
        unsigned vm;
        if (lim - v >= 16) /* most values end within 16 bytes: scan's first step, here */
            ve = (vm = stop16(d + v, 0)) ? v + (size_t)__builtin_ctz(vm) : scan(d, v + 16, lim, 0x20, C_VALUE);
        else
#endif
            ve = scan(d, v, lim, 0x20, C_VALUE);
        if (!(e = line_end(d, ve, lim)))
            goto out;
        uint32_t n = ne - a > SCRATCH_CAP ? SCRATCH_CAP + 1u : (uint32_t)(ne - a);
        h->m->scratch_len = (uint16_t)n;
        /* as header_classify: nothing from an earlier line carries over */
        st[ST_SUB] = 0;
        st[ST_VPOS] = 0;
        st[ST_VTRIM] = 0;
        st[ST_KIND] = K_IGNORE;
        st[ST_MASK] = 0;
        if (n <= SCRATCH_CAP) { /* longer names match nothing */
            int k = known_find(d + a, n);
            if ((k >= 0 || h->m->extra_names[0]) && fast_value(h, d + a, n, k, d, v, ve) < 0)
                goto fail;
        }
        i = e;
    }
out:
    if (i) { /* every byte taken so far is head */
        st[ST_STATE] = s;
        h->m->head_bytes = hb + (uint32_t)i;
    }
    *ip = i;
    return ev;
fail:
    st[ST_STATE] = P_ERROR;
    *ip = len;
    return ev | HTTP_P_ERROR;
}

/* fast() for what it takes, run() for the rest. */
static int feed(hp *h, const uint8_t *d, size_t len, size_t *used)
{
    uint32_t s = h->m->st[ST_STATE];
    size_t i = 0, u = 0;
    int ev = 0;
    if (s == P_START || s == P_LINE_START) {
        ev = fast(h, d, len, &i);
        s = h->m->st[ST_STATE];
        if (i == len || s == P_DONE || s == P_ERROR) {
            *used = (s == P_DONE) ? i : len;
            return ev;
        }
    }
    ev |= run(h, d + i, len - i, &u);
    *used = i + u;
    return ev;
}

/* ---- public ------------------------------------------------------------------ */

static void view_req(hp *h, http_req *p)
{
    h->m = &p->msg;
    h->req = p;
    h->resp = 0;
    h->base = (char *)p;
    h->field_off = http_req_field_off;
}

static void view_resp(hp *h, http_resp *p)
{
    h->m = &p->msg;
    h->req = 0;
    h->resp = p;
    h->base = (char *)p;
    h->field_off = resp_field_off;
}

static void state_clear(uint32_t *st)
{
    for (unsigned i = 0; i < 16; i++)
        st[i] = 0;
}

static void req_scalars_reset(http_req *p)
{
    p->method[0] = 0;
    p->method_len = 0;
    p->version_minor = 0;
    p->target[0] = 0;
    p->target_len = 0;
    p->target_truncated = 0;
    p->content_length = -1;
    p->chunked = 0;
    p->expect_continue = 0;
    p->conn_close = 0;
    p->present_mask = 0;
    state_clear(p->st);
    p->remaining = 0;
    p->scratch_len = 0;
    p->head_bytes = 0;
}

/* Field by field rather than one memset of ~11 KB. */
void http_req_reset(http_req *p)
{
    for (unsigned i = 0; i < REQ_KNOWN + HTTP_MAX_EXTRA; i++)
        field_clear((http_field *)((char *)p + http_req_field_off[i]));
    req_scalars_reset(p);
}

/* Once per request on the host's I/O path: only what the last request set. A
 * field is only ever written after its bit joined present_mask. */
void http_req_reuse(http_req *p)
{
    for (uint32_t m = p->present_mask; m; m &= m - 1)
        field_clear((http_field *)((char *)p + http_req_field_off[__builtin_ctz(m)]));
    req_scalars_reset(p);
}

static void resp_scalars_reset(http_resp *p, int is_head)
{
    p->status = 0;
    p->version_minor = 0;
    p->content_length = -1;
    p->chunked = 0;
    p->conn_close = 0;
    p->body_until_close = 0;
    p->present_mask = 0;
    state_clear(p->st);
    p->remaining = 0;
    p->scratch_len = 0;
    p->head_bytes = 0;
    p->no_body = is_head ? 1 : 0;
}

void http_resp_reset(http_resp *p, int is_head)
{
    for (unsigned i = 0; i < HTTP_MAX_EXTRA; i++)
        field_clear(&p->extra[i]);
    resp_scalars_reset(p, is_head);
}

void http_resp_reuse(http_resp *p, int is_head)
{
    for (uint32_t m = p->present_mask; m; m &= m - 1)
        field_clear(&p->extra[__builtin_ctz(m)]);
    resp_scalars_reset(p, is_head);
}

int http_req_feed(http_req *p, const uint8_t *data, size_t len, size_t *used)
{
    hp h;
    view_req(&h, p);
    return feed(&h, data, len, used);
}

int http_resp_feed(http_resp *p, const uint8_t *data, size_t len, size_t *used)
{
    hp h;
    view_resp(&h, p);
    return feed(&h, data, len, used);
}

int http_resp_skip_body(http_resp *p, uint64_t n)
{
    uint32_t *st = p->st;
    if (n == 0)
        return st[ST_STATE] == P_ERROR ? HTTP_P_ERROR : HTTP_P_NEED_MORE;
    switch (st[ST_STATE]) {
    case P_BODY_CLOSE:
        return HTTP_P_NEED_MORE;
    case P_BODY_LEN:
        if (n > p->remaining)
            break; /* more than the body: framing we never saw */
        p->remaining -= n;
        if (p->remaining)
            return HTTP_P_NEED_MORE;
        st[ST_STATE] = P_DONE;
        return HTTP_P_DONE;
    case P_CDATA:
        if (n > p->remaining)
            break;
        p->remaining -= n;
        if (p->remaining == 0)
            st[ST_STATE] = P_CDATA_END;
        return HTTP_P_NEED_MORE;
    }
    st[ST_STATE] = P_ERROR;
    return HTTP_P_ERROR;
}
