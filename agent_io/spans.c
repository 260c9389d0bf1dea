/* agent_io/spans.c — see spans.h. Runs only in the shim's uploader thread
 * (libddshim-agent.so); never on host threads, never in signal context. */
#include "agent_io/spans.h"

#include "agent_io/spool.h"
#include "agent_io/traces.h"
#include "common/log.h"
#include "common/span_rec.h"
#include "http/span_rules.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stddef.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define MAX_ENDPOINTS 1000
#define MAX_HEADER_TAGS 8

struct header_tag {
    char header[64]; /* lowercase */
    char tag[128];   /* the span tag it becomes (request side) */
    char resp_tag[128];
};

/* The strings of a record, where they sit in it (not NUL-terminated), and
 * their lengths. A record's string ends at its first NUL byte, if it has one,
 * as it always did for consumers that read it with strlen. The trace-context
 * headers, which http/context.c reads as C strings, get NUL-terminated copies
 * in ctx_arena when there is a context to extract. */
struct rec_view {
    const char *str[SS_COUNT]; /* NULL: absent */
    uint32_t len[SS_COUNT];
    char ctx_arena[SPAN_REC_MAX + SS_COUNT];
    /* The record's fixed fields, copied: in the span buffer each record
     * follows its 4-byte length, so it is not aligned for them. */
    struct span_rec r;
};

/* The longest strings one span formats (snprintf's bounds before: a longer
 * value is cut there, as it was). */
enum {
    HOST_CAP = 256,      /* the host of an absolute-form target */
    ENDPOINT_CAP = 1024, /* http.endpoint */
    RESOURCE_CAP = 1100, /* "METHOD endpoint" */
    QRED_CAP = 2200,     /* the redacted query */
    URL_CAP = 4096,      /* http.url */
    /* status, port and the two lengths (24 each), error.message, the
     * client's ip */
    NUMBERS_CAP = 4 * 24 + 64 + 48,
    BUILD_CAP = HOST_CAP + ENDPOINT_CAP + RESOURCE_CAP + URL_CAP +
                (int)sizeof(((struct trace_ctx *)0)->propagated_tags) + NUMBERS_CAP,
};

#define BUILD_META 48
#define BUILD_METRICS 12

/* Storage for one span_out's key/values and the strings formatted for it.
 * Keys are constants or the configuration's, values point into the record
 * (with their lengths: not NUL-terminated) or into buf: nothing is copied
 * that already sits somewhere stable for as long as the span is encoded. */
struct span_build {
    struct span_kv meta[BUILD_META], metrics[BUILD_METRICS];
    size_t nmeta, nmetrics;
    size_t kv_bytes; /* klen + slen of the entries, for span_known */
    int finite;      /* every metric value is finite */
    char buf[BUILD_CAP];
    size_t used;
};

struct spans_state {
    const struct shim_config *cfg;
    char runtime_id[40];
    size_t runtime_id_len, service_len;
    char container_id[80];
    int64_t pid;
    obf_rule *obf;
    int styles[4], nstyles;
    double agent_rate; /* from rate_by_service; 1 until the Agent says otherwise */
    struct header_tag htags[MAX_HEADER_TAGS];
    int nhtags;
    size_t env_len, version_len;
    json_t *endpoints; /* resource -> count */
    size_t nendpoints;
    char last_path[256];      /* the last path whose endpoint was worked out */
    size_t last_path_len;     /* its length + 1; 0: none */
    char last_endpoint[256];
    size_t last_endpoint_len;
    uint64_t last_tid_hi; /* the last _dd.p.tid worked out, and its text */
    char last_tid[17];
    json_t *last_count; /* the count of the last span's resource (in endpoints), or NULL */
    char last_resource[1100];
    size_t last_resource_len;
    uint64_t rng;
    /* The uploader's working storage, kept from one delivery to the next. */
    struct rec_view *view;    /* one record's strings */
    struct span_build *build; /* one span's storage */
    traces_body body;         /* one batch, encoded */
    aio_conn *conn;           /* the kept connection to the Agent */
};

/* ---- helpers -------------------------------------------------------------- */

static void rng_seed(struct spans_state *s)
{
    if (!s->rng) {
        if (getrandom(&s->rng, sizeof s->rng, GRND_NONBLOCK) != (ssize_t)sizeof s->rng)
            s->rng = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull;
        s->rng |= 1;
    }
}

static uint64_t rnd64(struct spans_state *s)
{
    rng_seed(s);
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Datadog's header-tag naming: DD_TRACE_HEADER_TAGS "header[:tag],...";
 * without a tag, http.request.headers.<header> / http.response.headers.<header>
 * with characters outside [a-z0-9_\-/] turned into '_'. The header order is
 * config_header_names', which the request parser captured by. */
static void parse_header_tags(struct spans_state *s, const char *spec)
{
    char names[MAX_HEADER_TAGS][64];
    int n = config_header_names(spec, names, MAX_HEADER_TAGS);
    for (int i = 0; i < n; i++) {
        struct header_tag *h = &s->htags[s->nhtags++];
        memcpy(h->header, names[i], sizeof h->header);
        h->header[sizeof h->header - 1] = '\0';
        /* Find this header's ":tag" in the spec, if any. */
        const char *tag = NULL;
        size_t taglen = 0;
        for (const char *p = spec; p && *p;) {
            while (*p == ',' || *p == ' ')
                p++;
            size_t len = strcspn(p, ", ");
            size_t nl = strcspn(p, ":, ");
            if (nl < len && nl == strlen(names[i]) && strncasecmp(p, names[i], nl) == 0) {
                tag = p + nl + 1;
                taglen = len - nl - 1;
                break;
            }
            p += len;
        }
        if (tag && taglen) {
            snprintf(h->tag, sizeof h->tag, "%.*s", (int)taglen, tag);
            snprintf(h->resp_tag, sizeof h->resp_tag, "%.*s", (int)taglen, tag);
        } else {
            char norm[64];
            size_t k = 0;
            for (const char *q = h->header; *q && k < sizeof norm - 1; q++)
                norm[k++] = (isalnum((unsigned char)*q) || *q == '-' || *q == '/') ? *q : '_';
            norm[k] = '\0';
            snprintf(h->tag, sizeof h->tag, "http.request.headers.%s", norm);
            snprintf(h->resp_tag, sizeof h->resp_tag, "http.response.headers.%s", norm);
        }
    }
}

struct spans_state *spans_new(const struct shim_config *cfg, const char *runtime_id, int64_t pid,
                              const char *container_id)
{
    struct spans_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cfg = cfg;
    snprintf(s->runtime_id, sizeof s->runtime_id, "%s", runtime_id);
    snprintf(s->container_id, sizeof s->container_id, "%s", container_id ? container_id : "");
    s->pid = pid;
    s->agent_rate = 1.0;
    char err[256] = "";
    const char *pat = getenv("DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP");
    s->obf = obf_compile(pat, err, sizeof err);
    if (!s->obf) {
        log_error("DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP is not usable (%s); query strings are "
                  "left out of http.url",
                  err);
    }
    const char *st = getenv("DD_TRACE_PROPAGATION_STYLE_EXTRACT");
    if (!st || !*st)
        st = getenv("DD_TRACE_PROPAGATION_STYLE");
    s->nstyles = st && *st ? ctx_parse_styles(st, s->styles) : -1;
    if (s->nstyles < 0) {
        if (st && *st)
            log_error("DD_TRACE_PROPAGATION_STYLE=\"%.64s\" is not valid (accepts datadog, "
                      "tracecontext or none, comma separated); using datadog,tracecontext",
                      st);
        s->styles[0] = CTX_STYLE_DATADOG;
        s->styles[1] = CTX_STYLE_TRACECONTEXT;
        s->nstyles = 2;
    }
    parse_header_tags(s, cfg->header_tags);
    s->runtime_id_len = strlen(s->runtime_id);
    s->service_len = strlen(cfg->service);
    s->env_len = strlen(cfg->env);
    s->version_len = strlen(cfg->version);
    s->endpoints = json_object();
    traces_body_init(&s->body);
    s->view = malloc(sizeof *s->view);
    s->build = malloc(sizeof *s->build);
    s->conn = aio_conn_new();
    if (!s->endpoints || !s->view || !s->build || !s->conn) {
        spans_free(s);
        return NULL;
    }
    return s;
}

void spans_free(struct spans_state *s)
{
    if (!s)
        return;
    obf_free(s->obf);
    json_decref(s->endpoints);
    traces_body_free(&s->body);
    aio_conn_free(s->conn);
    free(s->view);
    free(s->build);
    free(s);
}

char *spans_take_endpoint_counts(struct spans_state *s)
{
    if (!s || s->nendpoints == 0)
        return NULL;
    char *out = json_dumps(s->endpoints, JSON_COMPACT);
    json_object_clear(s->endpoints);
    s->nendpoints = 0;
    s->last_count = NULL;
    return out;
}

/* ---- one span ---------------------------------------------------------------- */

static int view_of(const uint8_t *p, uint32_t len, struct rec_view *v)
{
    if (len < sizeof(struct span_rec))
        return -1;
    memcpy(&v->r, p, sizeof(struct span_rec));
    const struct span_rec *r = &v->r;
    if (r->magic != SPAN_MAGIC)
        return -1;
    size_t total = 0;
    for (int i = 0; i < SS_COUNT; i++)
        total += r->len[i];
    if (total > len - offsetof(struct span_rec, strings))
        return -1;
    const char *strings = (const char *)p + offsetof(struct span_rec, strings), *d = strings;
    for (int i = 0; i < SS_COUNT; i++) {
        v->str[i] = d;
        v->len[i] = r->len[i];
        d += r->len[i];
    }
    /* An empty string is an absent header, but for the request line's. */
    for (int i = SS_TARGET + 1; i < SS_COUNT; i++)
        if (!r->len[i])
            v->str[i] = NULL;
    /* NUL bytes are rare: one look over all the strings first. */
    if (total && memchr(strings, '\0', total))
        for (int i = 0; i < SS_COUNT; i++) {
            const char *nul = v->len[i] ? memchr(v->str[i], '\0', v->len[i]) : NULL;
            if (nul)
                v->len[i] = (uint32_t)(nul - v->str[i]);
        }
    return 0;
}

/* String i as a C string (in the arena at *a), or NULL when absent. */
static const char *view_cstr(struct rec_view *v, int i, size_t *a)
{
    if (!v->str[i])
        return NULL;
    char *d = v->ctx_arena + *a;
    memcpy(d, v->str[i], v->len[i]);
    d[v->len[i]] = '\0';
    *a += v->len[i] + 1;
    return d;
}

/* Where the first c1 or c2 is in s[0..n), or n. */
static size_t span_until(const char *s, size_t n, char c1, char c2)
{
    const char *a = memchr(s, c1, n);
    size_t m = a ? (size_t)(a - s) : n;
    const char *b = c2 != c1 ? memchr(s, c2, m) : NULL;
    return b ? (size_t)(b - s) : m;
}

/* cap bytes of buf for a string of at most cap - 1 bytes and its NUL. The
 * caps above add up to buf's size, each taken at most once per span. */
static char *room(struct span_build *b, size_t cap)
{
    char *p = b->buf + b->used;
    b->used += cap;
    return p;
}

/* Give back what the string just written at p (n bytes, NUL after) did not use. */
static void fit(struct span_build *b, const char *p, size_t n)
{
    b->used = (size_t)(p - b->buf) + n + 1;
}

static void meta_n(struct span_build *b, const char *k, size_t kl, const char *v, size_t vl)
{
    if (v && b->nmeta < BUILD_META) {
        b->meta[b->nmeta++] = (struct span_kv){k, v, 0, (uint32_t)kl, (uint32_t)vl, 1};
        b->kv_bytes += kl + vl;
    }
}

/* A key that is a string literal. */
#define META(b, k, v, vl) meta_n((b), (k), sizeof(k) - 1, (v), (vl))
#define META_LIT(b, k, v) meta_n((b), (k), sizeof(k) - 1, (v), sizeof(v) - 1)

static void metric_n(struct span_build *b, const char *k, size_t kl, double v)
{
    if (b->nmetrics < BUILD_METRICS) {
        b->metrics[b->nmetrics++] = (struct span_kv){k, NULL, v, (uint32_t)kl, 0, 1};
        b->kv_bytes += kl;
        b->finite &= isfinite(v) != 0;
    }
}

#define METRIC(b, k, v) metric_n((b), (k), sizeof(k) - 1, (v))

/* Bounded appends with snprintf's truncation: at most cap - 1 bytes, NUL kept. */
struct wr {
    char *p;
    size_t len, cap;
};

static void wr_put(struct wr *w, const char *s, size_t n)
{
    size_t left = w->cap - 1 - w->len;
    if (n > left)
        n = left;
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = '\0';
}

/* Integers as printf's %llu / %lld / %016llx write them: the digits counted
 * first, then written from the end, two a step. */
static const char d2[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static size_t fmt_u64(char *p, uint64_t v)
{
    size_t n = 1;
    for (uint64_t x = v; x >= 10; x /= 10)
        n++;
    char *e = p + n;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        *--e = d2[2 * r + 1];
        *--e = d2[2 * r];
    }
    if (v >= 10) {
        *--e = d2[2 * v + 1];
        *--e = d2[2 * v];
    } else {
        *--e = (char)('0' + v);
    }
    return n;
}

static size_t fmt_i64(char *p, int64_t v)
{
    if (v >= 0)
        return fmt_u64(p, (uint64_t)v);
    p[0] = '-';
    return 1 + fmt_u64(p + 1, -(uint64_t)v);
}

static size_t fmt_hex16(char *p, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i += 2) {
        unsigned byte = (unsigned)(v >> (56 - 4 * i)) & 0xff;
        p[i] = hex[byte >> 4];
        p[i + 1] = hex[byte & 15];
    }
    return 16;
}

/* A number as a meta value, in buf. */
static void meta_i64(struct span_build *b, const char *k, size_t kl, int64_t v)
{
    char *p = room(b, 24);
    size_t n = fmt_i64(p, v);
    p[n] = '\0';
    fit(b, p, n);
    meta_n(b, k, kl, p, n);
}

#define META_I64(b, k, v) meta_i64((b), (k), sizeof(k) - 1, (v))

/* inet_ntop's text: dotted decimal for IPv4, inet_ntop itself for IPv6. */
static size_t fmt_ip(char *p, size_t cap, int family, const uint8_t *a)
{
    if (family == 4) {
        size_t n = 0;
        for (int i = 0; i < 4; i++) {
            unsigned o = a[i];
            if (o >= 100) {
                p[n++] = (char)('0' + o / 100);
                o %= 100;
                p[n++] = d2[2 * o];
                p[n++] = d2[2 * o + 1];
            } else if (o >= 10) {
                p[n++] = d2[2 * o];
                p[n++] = d2[2 * o + 1];
            } else {
                p[n++] = (char)('0' + o);
            }
            p[n++] = i < 3 ? '.' : '\0';
        }
        return n - 1;
    }
    return inet_ntop(AF_INET6, a, p, (socklen_t)cap) ? strlen(p) : 0;
}

static const char *reason_of(int status)
{
    switch (status) {
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Server Error";
    }
}

/* Knuth multiplicative hashing of the trace id, as Datadog's samplers do, so
 * every service keeps or drops the same traces for a given rate. */
static int sampled(uint64_t trace_id, double rate)
{
    if (rate >= 1.0)
        return 1;
    if (rate <= 0.0)
        return 0;
    return trace_id * 1111111111111111111ull < (uint64_t)(rate * 18446744073709551615.0);
}

/* Requests per endpoint, for the profile's event.json. Consecutive spans
 * mostly share their resource: its counter stays at hand. */
static void count_endpoint(struct spans_state *s, const char *resource, size_t len)
{
    if (s->last_count && len == s->last_resource_len && memcmp(resource, s->last_resource, len) == 0) {
        json_integer_set(s->last_count, json_integer_value(s->last_count) + 1);
        return;
    }
    s->last_count = NULL;
    json_t *n = json_object_get(s->endpoints, resource);
    if (n) {
        json_integer_set(n, json_integer_value(n) + 1);
    } else if (s->nendpoints < MAX_ENDPOINTS) {
        n = json_integer(1);
        /* set, not set_new: n stays ours to look at; the object keeps the
         * only reference once ours is dropped */
        int added = n && json_object_set(s->endpoints, resource, n) == 0;
        json_decref(n);
        if (added)
            s->nendpoints++;
        else
            n = NULL;
    }
    if (n && len < sizeof s->last_resource) {
        memcpy(s->last_resource, resource, len);
        s->last_resource_len = len;
        s->last_count = n;
    }
}

/* The span of one record: what it says (WIRE.md section 2) is decided here;
 * traces.c encodes it. count: add it to the endpoint counts (not when the
 * same records are built again for the output directory). */
static void build_span(struct spans_state *s, struct rec_view *v, struct span_build *b,
                       struct span_out *o, int count)
{
    const struct span_rec *r = &v->r;
    const struct shim_config *cfg = s->cfg;
    memset(o, 0, sizeof *o);
    b->nmeta = b->nmetrics = 0;
    b->kv_bytes = 0;
    b->finite = 1;
    b->used = 0;

    /* Trace context. Nothing to extract without a trace id header of either
     * style: spare the parse. */
    struct trace_ctx ctx;
    ctx.found = 0;
    if (v->str[SS_DD_TRACE_ID] || v->str[SS_TRACEPARENT]) {
        size_t a = 0;
        struct ctx_headers h;
        h.dd_trace_id = view_cstr(v, SS_DD_TRACE_ID, &a);
        h.dd_parent_id = view_cstr(v, SS_DD_PARENT_ID, &a);
        h.dd_sampling_priority = view_cstr(v, SS_DD_PRIORITY, &a);
        h.dd_origin = view_cstr(v, SS_DD_ORIGIN, &a);
        h.dd_tags = view_cstr(v, SS_DD_TAGS, &a);
        h.traceparent = view_cstr(v, SS_TRACEPARENT, &a);
        h.tracestate = view_cstr(v, SS_TRACESTATE, &a);
        ctx_extract(s->styles, s->nstyles, &h, &ctx);
    }
    uint64_t tid_hi;
    if (ctx.found) {
        o->trace_id = ctx.trace_id_lo;
        o->parent_id = ctx.parent_id;
        tid_hi = ctx.trace_id_hi;
    } else {
        o->trace_id = rnd64(s);
        if (!o->trace_id)
            o->trace_id = 1;
        /* 128-bit ids as Datadog makes them: 32 bits of seconds, 32 zero bits. */
        tid_hi = (uint64_t)(r->start_ns / 1000000000LL) << 32;
    }
    o->span_id = r->span_id;

    /* Resource, endpoint, url. */
    const char *method = v->str[SS_METHOD] ? v->str[SS_METHOD] : "";
    size_t mlen = v->str[SS_METHOD] ? v->len[SS_METHOD] : 0;
    const char *target = v->str[SS_TARGET] ? v->str[SS_TARGET] : "";
    size_t tlen = v->str[SS_TARGET] ? v->len[SS_TARGET] : 0;
    const char *path = target, *host = v->str[SS_HOST];
    size_t hostlen = host ? v->len[SS_HOST] : 0;
    if ((tlen >= 7 && memcmp(target, "http://", 7) == 0) ||
        (tlen >= 8 && memcmp(target, "https://", 8) == 0)) {
        const char *hs = target + (target[4] == 's' ? 8 : 7);
        size_t hl = span_until(hs, (size_t)(target + tlen - hs), '/', '?');
        if (!host) {
            struct wr w = {room(b, HOST_CAP), 0, HOST_CAP};
            wr_put(&w, hs, hl);
            fit(b, w.p, w.len);
            host = w.p;
            hostlen = w.len;
        }
        path = hs + hl;
    }
    /* userinfo (user:password@) of an absolute-form target, or of a Host
     * header that carries one, is a credential: never part of the span. */
    if (host) {
        const char *at = memrchr(host, '@', hostlen);
        if (at) {
            hostlen -= (size_t)(at + 1 - host);
            host = at + 1;
        }
    }
    const char *tend = target + tlen;
    size_t plen = span_until(path, (size_t)(tend - path), '?', '#');
    const char *query = path + plen < tend && path[plen] == '?' ? path + plen + 1 : NULL;
    size_t qlen = query ? span_until(query, (size_t)(tend - query), '#', '#') : 0;
    /* http.endpoint: a pure function of the path, and busy servers serve the
     * same paths over and over: the last one is remembered. */
    char *endpoint = room(b, ENDPOINT_CAP);
    size_t elen;
    if (s->last_path_len == plen + 1 && memcmp(s->last_path, path, plen) == 0) {
        elen = s->last_endpoint_len;
        memcpy(endpoint, s->last_endpoint, elen + 1);
    } else {
        elen = endpoint_of(path, plen, endpoint, ENDPOINT_CAP);
        s->last_path_len = 0;
        if (plen < sizeof s->last_path && elen < sizeof s->last_endpoint) {
            memcpy(s->last_path, path, plen);
            memcpy(s->last_endpoint, endpoint, elen + 1);
            s->last_endpoint_len = elen;
            s->last_path_len = plen + 1;
        }
    }
    fit(b, endpoint, elen);
    struct wr res = {room(b, RESOURCE_CAP), 0, RESOURCE_CAP};
    res.p[0] = '\0';
    wr_put(&res, method, mlen);
    wr_put(&res, " ", 1);
    wr_put(&res, endpoint, elen);
    fit(b, res.p, res.len);
    struct wr url = {room(b, URL_CAP), 0, URL_CAP};
    url.p[0] = '\0';
    wr_put(&url, "http://", 7);
    if (host)
        wr_put(&url, host, hostlen);
    else
        wr_put(&url, "localhost", 9);
    /* "%.*s" of plen bytes: nothing at all when the path is empty */
    wr_put(&url, path, plen);
    if (query && s->obf) {
        char qred[QRED_CAP];
        qred[0] = '\0';
        obf_apply(s->obf, query, qlen, qred, sizeof qred);
        wr_put(&url, "?", 1);
        wr_put(&url, qred, strlen(qred));
    }
    fit(b, url.p, url.len);

    o->name = "http.request";
    o->service = cfg->service;
    o->resource = res.p;
    o->type = "web";
    o->start = r->start_ns;
    o->duration = r->duration_ns;

    META_LIT(b, "span.kind", "server");
    META_LIT(b, "component", "ddshim");
    META_LIT(b, "language", "cpp");
    META(b, "runtime-id", s->runtime_id, s->runtime_id_len);
    if (cfg->env[0])
        META(b, "env", cfg->env, s->env_len);
    if (cfg->version[0])
        META(b, "version", cfg->version, s->version_len);
    META(b, "http.method", method, mlen);
    META(b, "http.url", url.p, url.len);
    META(b, "http.endpoint", endpoint, elen);
    if (r->version_minor)
        META_LIT(b, "http.version", "1.1");
    else
        META_LIT(b, "http.version", "1.0");
    if (v->str[SS_USER_AGENT])
        META(b, "http.useragent", v->str[SS_USER_AGENT], v->len[SS_USER_AGENT]);
    if (r->status)
        META_I64(b, "http.status_code", r->status);
    if (r->peer_family == 4 || r->peer_family == 6) {
        char *ip = room(b, 48);
        size_t iplen = fmt_ip(ip, 48, r->peer_family, r->peer_addr);
        if (iplen) {
            fit(b, ip, iplen);
            META(b, "network.client.ip", ip, iplen);
            META_I64(b, "network.client.port", r->peer_port);
        }
    }
    if (r->req_content_length >= 0)
        META_I64(b, "http.request.content_length", r->req_content_length);
    if (r->resp_content_length >= 0)
        META_I64(b, "http.response.content_length", r->resp_content_length);
    if (r->status >= 500) {
        o->error = 1;
        /* "%d: %s", cut at 63 bytes as snprintf into 64 cut it */
        struct wr w = {room(b, 64), 0, 64};
        char num[24];
        wr_put(&w, num, fmt_i64(num, r->status));
        wr_put(&w, ": ", 2);
        const char *why = reason_of(r->status);
        wr_put(&w, why, strlen(why));
        fit(b, w.p, w.len);
        META(b, "error.message", w.p, w.len);
    } else if (r->flags & SPAN_F_NO_RESPONSE) {
        o->error = 1;
        META_LIT(b, "error.type", "ddshim.no_response");
        META_LIT(b, "error.message", "no response: the connection ended before a response was written");
    }
    for (int i = 0; i < s->nhtags; i++) {
        /* The parser captured header i of the configured list into extra[i]. */
        if (v->str[SS_REQ_EXTRA0 + i])
            meta_n(b, s->htags[i].tag, strlen(s->htags[i].tag), v->str[SS_REQ_EXTRA0 + i],
                   v->len[SS_REQ_EXTRA0 + i]);
        if (v->str[SS_RESP_EXTRA0 + i])
            meta_n(b, s->htags[i].resp_tag, strlen(s->htags[i].resp_tag), v->str[SS_RESP_EXTRA0 + i],
                   v->len[SS_RESP_EXTRA0 + i]);
    }

    /* Sampling: upstream decision first, then DD_TRACE_SAMPLE_RATE (a rule),
     * then the Agent's rate for this service. */
    int priority;
    const char *dm = NULL;
    if (ctx.found && ctx.has_priority) {
        priority = ctx.sampling_priority;
    } else if (cfg->sample_rate >= 0) {
        priority = sampled(o->trace_id, cfg->sample_rate) ? 2 : -1;
        dm = "-3";
        METRIC(b, "_dd.rule_psr", cfg->sample_rate);
    } else {
        priority = sampled(o->trace_id, s->agent_rate) ? 1 : 0;
        dm = "-0";
        METRIC(b, "_dd.agent_psr", s->agent_rate);
    }
    /* Propagated _dd.p.* tags from upstream, then ours. */
    int have_dm = 0;
    if (ctx.found && ctx.propagated_tags[0]) {
        char *tags = room(b, sizeof ctx.propagated_tags);
        snprintf(tags, sizeof ctx.propagated_tags, "%s", ctx.propagated_tags);
        for (char *save = NULL, *kv = strtok_r(tags, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
            char *eq = strchr(kv, '=');
            if (!eq)
                continue;
            *eq = '\0';
            if (!strcmp(kv, "_dd.p.tid"))
                continue; /* ours below, from the context */
            if (!strcmp(kv, "_dd.p.dm"))
                have_dm = 1;
            meta_n(b, kv, (size_t)(eq - kv), eq + 1, strlen(eq + 1));
        }
    }
    if (!have_dm && dm && priority > 0)
        META(b, "_dd.p.dm", dm, 2);
    if (tid_hi) {
        /* the same for every new trace of a second */
        if (tid_hi != s->last_tid_hi) {
            fmt_hex16(s->last_tid, tid_hi);
            s->last_tid[16] = '\0';
            s->last_tid_hi = tid_hi;
        }
        META(b, "_dd.p.tid", s->last_tid, 16);
    }
    if (ctx.found && ctx.origin[0])
        META(b, "_dd.origin", ctx.origin, strlen(ctx.origin));

    METRIC(b, "_sampling_priority_v1", priority);
    METRIC(b, "_dd.top_level", 1);
    METRIC(b, "_dd.measured", 1);
    METRIC(b, "process_id", (double)s->pid);

    o->meta = b->meta;
    o->nmeta = b->nmeta;
    o->metrics = b->metrics;
    o->nmetrics = b->nmetrics;
    o->known = (struct span_known){b->finite, sizeof "http.request" - 1, (uint32_t)s->service_len,
                                   (uint32_t)res.len, sizeof "web" - 1, b->kv_bytes};

    if (count)
        count_endpoint(s, res.p, res.len);
}

/* ---- delivery ------------------------------------------------------------------ */

/* Spans are built and encoded one at a time into a batch's body, one PUT per
 * batch on the kept connection. Each request is a local root (or continues an
 * upstream trace whose other spans travel apart anyway), so where a batch
 * ends does not matter to the Agent. A batch ends at BATCH_SPANS spans or
 * BATCH_BYTES of msgpack: fewer, larger requests cost the uploader (and the
 * Agent) less per span, and the bound keeps the memory held (the body, ~630
 * bytes a span of a plain GET) near 1 MB whatever the traffic. */
#define BATCH_SPANS 4096
#define BATCH_BYTES (1u << 20)
/* The JSON lines of a batch (output directory) are built again from its
 * records, this many spans per write. */
#define FILE_CHUNK 256
/* After a delivery smaller than this, the body's memory goes back. */
#define BODY_KEEP_MIN 256

/* A batch's records and what its spans were built with: enough to build the
 * very same spans again (trace ids, sampling) for the JSON lines. */
struct batch {
    const uint8_t *recs;
    size_t from, to; /* its byte range in recs */
    size_t spans;
    uint64_t rng;
    double rate;
};

/* The record at *off in recs[0..len) (each preceded by its uint32 length),
 * *off moved past it; NULL when no whole record is left. */
static const uint8_t *next_rec(const uint8_t *recs, size_t len, size_t *off, uint32_t *rl)
{
    if (*off + sizeof *rl > len)
        return NULL;
    memcpy(rl, recs + *off, sizeof *rl);
    if (*rl > len - *off - sizeof *rl)
        return NULL;
    const uint8_t *p = recs + *off + sizeof *rl;
    *off += sizeof *rl + *rl;
    return p;
}

/* A copy of a built span owning its strings, NUL-terminated as
 * traces_write_jsonl reads them (one malloc in *mem), so that a chunk of
 * spans can wait for its one write. */
static int freeze(const struct span_out *o, struct span_out *d, void **mem)
{
    size_t nkv = o->nmeta + o->nmetrics, rlen = strlen(o->resource);
    size_t need = nkv * sizeof(struct span_kv) + rlen + 1;
    for (size_t i = 0; i < o->nmeta; i++)
        need += o->meta[i].klen + o->meta[i].slen + 2;
    for (size_t i = 0; i < o->nmetrics; i++)
        need += o->metrics[i].klen + 1;
    char *m = malloc(need);
    if (!m)
        return -1;
    struct span_kv *kv = (struct span_kv *)(void *)m;
    char *p = m + nkv * sizeof *kv;
    *d = *o;
    memcpy(p, o->resource, rlen + 1);
    d->resource = p;
    p += rlen + 1;
    for (size_t i = 0; i < nkv; i++) {
        const struct span_kv *f = i < o->nmeta ? &o->meta[i] : &o->metrics[i - o->nmeta];
        kv[i] = *f;
        memcpy(p, f->key, f->klen);
        p[f->klen] = '\0';
        kv[i].key = p;
        p += f->klen + 1;
        if (f->str) {
            memcpy(p, f->str, f->slen);
            p[f->slen] = '\0';
            kv[i].str = p;
            p += f->slen + 1;
        }
    }
    d->meta = kv;
    d->metrics = kv + o->nmeta;
    *mem = m;
    return 0;
}

static int write_chunk(struct spans_state *s, struct span_out *out, void **mem, size_t n)
{
    int rc = traces_write_jsonl(s->cfg->output_dir, s->cfg->service, s->pid, out, n);
    for (size_t i = 0; i < n; i++)
        free(mem[i]);
    return rc;
}

/* The batch's spans as JSON lines, built again from its records exactly as
 * they were for the body. *written when some were written. 0 or -1. */
static int write_files(struct spans_state *s, const struct batch *bt, int *written)
{
    *written = 0;
    struct span_out *out = malloc(FILE_CHUNK * sizeof *out);
    void **mem = malloc(FILE_CHUNK * sizeof *mem);
    if (!out || !mem) {
        free(out);
        free(mem);
        return -1;
    }
    uint64_t rng = s->rng;
    double rate = s->agent_rate;
    s->rng = bt->rng;
    s->agent_rate = bt->rate;
    int rc = 0;
    size_t off = bt->from, n = 0;
    uint32_t rl;
    const uint8_t *p;
    while ((p = next_rec(bt->recs, bt->to, &off, &rl))) {
        if (view_of(p, rl, s->view) != 0)
            continue;
        struct span_out o;
        build_span(s, s->view, s->build, &o, 0);
        if (freeze(&o, &out[n], &mem[n]) < 0) {
            rc = -1;
            continue;
        }
        if (++n == FILE_CHUNK) {
            if (write_chunk(s, out, mem, n) == 0)
                *written = 1;
            else
                rc = -1;
            n = 0;
        }
    }
    if (n) {
        if (write_chunk(s, out, mem, n) == 0)
            *written = 1;
        else
            rc = -1;
    }
    s->rng = rng;
    s->agent_rate = rate;
    free(out);
    free(mem);
    return rc;
}

static int deliver_batch(struct spans_state *s, struct spans_dest *d, const struct batch *bt,
                         int encoded, long timeout_ms, int *to_agent, int *to_file, int *spooled)
{
    int ok = 0, sent = 0, kept = 0;
    const uint8_t *body = NULL;
    size_t blen = 0, ntraces = 0;
    long status = 0;
    if (encoded && traces_body_finish(&s->body, &body, &blen, &ntraces) < 0)
        body = NULL;
    if (d->agent && body) {
        struct traces_meta m = {.lang_version = "", .tracer_version = DDSHIM_VERSION,
                                .container_id = s->container_id[0] ? s->container_id : NULL};
        char *rates = NULL;
        if (traces_upload_conn(s->conn, d->agent, &m, body, blen, ntraces, timeout_ms, &status,
                               &rates) == 0) {
            *to_agent = sent = ok = 1;
            if (rates) {
                double r = traces_rate_for(rates, s->cfg->service, s->cfg->env);
                if (r >= 0)
                    s->agent_rate = r;
            }
        } else {
            log_info("trace upload failed (HTTP status %ld)", status);
            if (spool_retryable(status))
                d->agent = NULL; /* the next batches go straight to the spool */
        }
        free(rates);
    }
    if (!sent && body && d->spool && spool_retryable(status) &&
        spool_put(d->spool, SPOOL_TRACES, s->container_id, NULL, 0, body, blen, ntraces) == 0)
        *spooled = kept = ok = 1;
    if (s->cfg->output_dir_set || (!sent && (d->files || !kept))) {
        int written = 0;
        write_files(s, bt, &written);
        if (written)
            *to_file = ok = 1;
    }
    return ok ? 0 : -1;
}

int spans_deliver(struct spans_state *s, const struct spans_dest *d, const uint8_t *recs, size_t len,
                  size_t count, uint64_t dropped, long timeout_ms, int *to_agent, int *to_file,
                  int *spooled)
{
    *to_agent = *to_file = *spooled = 0;
    struct spans_dest dd = *d;
    if (dropped)
        log_info("%llu spans did not fit the span buffer and were dropped", (unsigned long long)dropped);
    rng_seed(s); /* a batch's spans are built again from its seed */
    int rc = 0, end = 0;
    size_t off = 0, seen = 0, built = 0;
    while (!end) {
        struct batch bt = {.recs = recs, .from = off, .rng = s->rng, .rate = s->agent_rate};
        int encode = dd.agent || dd.spool;
        traces_body_reset(&s->body);
        while (bt.spans < BATCH_SPANS && traces_body_size(&s->body) < BATCH_BYTES) {
            uint32_t rl;
            const uint8_t *p = seen < count ? next_rec(recs, len, &off, &rl) : NULL;
            if (!p) {
                end = 1;
                break;
            }
            seen++;
            if (view_of(p, rl, s->view) != 0)
                continue;
            struct span_out o;
            build_span(s, s->view, s->build, &o, 1);
            if (encode)
                traces_body_add(&s->body, &o); /* on OOM the body fails as a whole */
            bt.spans++;
        }
        bt.to = off;
        built += bt.spans;
        if (bt.spans)
            rc |= deliver_batch(s, &dd, &bt, encode, timeout_ms, to_agent, to_file, spooled);
    }
    if (built < BODY_KEEP_MIN)
        traces_body_free(&s->body);
    log_debug("spans: %zu records, %zu read, to_agent=%d to_file=%d", count, seen, *to_agent, *to_file);
    return rc;
}
