/* agent_io/traces.c — APM spans leaving the process: the /v0.4/traces msgpack
 * body (encoded here, span by span), its PUT to the Agent with the
 * rate_by_service reply (libcurl through transport.c's handle settings, on a
 * kept keep-alive connection for the uploader; jansson), the lookup of a
 * service's rate in that reply, and, with no Agent, the JSON-lines file in the
 * output directory.
 *
 * Threads: only the shim's uploader thread (libddshim-agent.so) calls in.
 * Nothing here is async-signal-safe or meant for host threads: it allocates,
 * blocks on the network up to the caller's timeout and writes files.
 *
 * libcurl is driven only through CURLOPT_POSTFIELDS with a body we built:
 * nothing here may reach curl's mime API or anything else that draws from
 * OpenSSL's RAND, because the last upload runs at exit, possibly after the
 * host's OpenSSL has cleaned up (see transport.c). */
#include "agent_io/traces.h"

#include "common/copy.h"
#include "common/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TRACES_PATH "/v0.4/traces"
/* The Agent's reply is a small JSON object; anything bigger is not one we can
 * use, and must not grow our memory without bound. */
#define TRACES_REPLY_MAX (64 * 1024)
#define TRACES_NONE UINT32_MAX

/* The Agent drops a trace whose trace_id is 0 and cannot link a span whose
 * span_id is 0: such a span is a bug upstream that nobody downstream can use,
 * so both writers leave it out instead of failing the whole batch. */
static int span_ok(const struct span_out *s)
{
    return s->trace_id != 0 && s->span_id != 0;
}

static int meta_ok(const struct span_kv *kv)
{
    return kv->key && kv->str;
}

/* msgpack has no NaN-safe meaning for a metric and JSON has no NaN at all:
 * a non-finite metric is dropped from both outputs alike. */
static int metric_ok(const struct span_kv *kv)
{
    return kv->key && isfinite(kv->num);
}

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

/* ---- grouping by trace_id --------------------------------------------------- */

/* Spans arrive in finish order, a trace's spans interleaved with others'. One
 * pass through an open-addressed table keyed by trace_id (never 0, so 0 marks
 * an empty slot) gives each span its trace's number in order of first
 * appearance; a counting sort then lists each trace's spans in input order
 * (only needed when some trace has several spans: the shim's server spans are
 * mostly one per trace). O(n) for the tens of thousands of spans a busy flush
 * carries. */
typedef struct traces_groups {
    uint32_t ntraces;
    uint32_t *count;  /* spans per trace (NULL when every trace has one span) */
    uint32_t *order;  /* span indices, trace by trace (idem) */
} traces_groups;

typedef struct traces_slot {
    uint64_t trace_id;
    uint32_t trace;
} traces_slot;

static uint64_t traces_mix(uint64_t x)
{
    /* splitmix64's finalizer: ids from a counter must not cluster either */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static void groups_free(traces_groups *g)
{
    free(g->count);
    free(g->order);
    memset(g, 0, sizeof *g);
}

/* ids: the trace_id of each of n spans, none 0. */
static int groups_build(const uint64_t *ids, size_t n, traces_groups *g)
{
    memset(g, 0, sizeof *g);
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    traces_slot *tab = calloc(cap, sizeof *tab);
    uint32_t *of = malloc((n ? n : 1) * sizeof *of);
    uint32_t *next = NULL;
    int rc = -1;
    if (!tab || !of)
        goto out;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = ids[i];
        size_t h = (size_t)traces_mix(id) & (cap - 1);
        while (tab[h].trace_id != 0 && tab[h].trace_id != id)
            h = (h + 1) & (cap - 1);
        if (tab[h].trace_id == 0) {
            tab[h].trace_id = id;
            tab[h].trace = g->ntraces++;
        }
        of[i] = tab[h].trace;
    }
    if (g->ntraces == n) {
        rc = 0;
        goto out;
    }
    g->count = calloc(g->ntraces, sizeof *g->count);
    g->order = malloc(n * sizeof *g->order);
    next = malloc(g->ntraces * sizeof *next);
    if (!g->count || !g->order || !next)
        goto out;
    for (size_t i = 0; i < n; i++)
        g->count[of[i]]++;
    uint32_t pos = 0;
    for (uint32_t t = 0; t < g->ntraces; t++) {
        next[t] = pos;
        pos += g->count[t];
    }
    for (size_t i = 0; i < n; i++)
        g->order[next[of[i]]++] = (uint32_t)i;
    rc = 0;
out:
    free(tab);
    free(of);
    free(next);
    if (rc < 0)
        groups_free(g);
    return rc;
}

/* ---- msgpack ------------------------------------------------------------------
 * Written by hand into one buffer reserved per span: the uploader encodes every
 * span it sends, and msgpack-c's packer (a capacity check and a memcpy call for
 * each header and each string body, a strlen for each string) was a quarter of
 * its CPU. The forms are the ones msgpack-c's packer chooses: the smallest for
 * each integer (a non-negative signed one as unsigned), fixstr/str8/str16/str32,
 * fixmap/map16/map32 and fixarray/array16/array32, float64 for every metric; so
 * the bytes are those msgpack-c wrote before (tests/unit/test_traces.c decodes
 * them with msgpack-c and with Python's msgpack). */

#define MP_FIXED_BOUND 192 /* a span map's keys, numbers and headers: 169 bytes at most */
#define TRACES_BODY_HEAD 5 /* the outer array header, at most */

static inline uint8_t *mp_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static inline uint8_t *mp_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

static inline uint8_t *mp_be64(uint8_t *p, uint64_t v)
{
    mp_be32(p, (uint32_t)(v >> 32));
    return mp_be32(p + 4, (uint32_t)v);
}

/* fix: 0x90 (array) or 0x80 (map); the 16- and 32-bit forms follow in c16, c16 + 1. */
static inline uint8_t *mp_count(uint8_t *p, size_t n, uint8_t fix, uint8_t c16)
{
    if (n < 16) {
        *p++ = (uint8_t)(fix | n);
    } else if (n < 65536) {
        *p++ = c16;
        p = mp_be16(p, (uint16_t)n);
    } else {
        *p++ = (uint8_t)(c16 + 1);
        p = mp_be32(p, (uint32_t)n);
    }
    return p;
}

static inline size_t mp_count_len(size_t n)
{
    return n < 16 ? 1 : n < 65536 ? 3 : 5;
}

static inline uint8_t *mp_str(uint8_t *p, const char *s, size_t n)
{
    if (n < 32) {
        *p++ = (uint8_t)(0xa0 | n);
    } else if (n < 256) {
        *p++ = 0xd9;
        *p++ = (uint8_t)n;
    } else if (n < 65536) {
        *p++ = 0xda;
        p = mp_be16(p, (uint16_t)n);
    } else {
        *p++ = 0xdb;
        p = mp_be32(p, (uint32_t)n);
    }
    copy_bytes(p, s, n);
    return p + n;
}

/* A key known at compile time (under 32 bytes): constant-size moves. */
#define MP_KEY(p, lit) \
    (*(p) = (uint8_t)(0xa0 | (sizeof(lit) - 1)), memcpy((p) + 1, (lit), sizeof(lit) - 1), (p) + sizeof(lit))

static inline uint8_t *mp_uint(uint8_t *p, uint64_t d)
{
    if (d < (1ull << 7)) {
        *p++ = (uint8_t)d;
    } else if (d < (1ull << 8)) {
        *p++ = 0xcc;
        *p++ = (uint8_t)d;
    } else if (d < (1ull << 16)) {
        *p++ = 0xcd;
        p = mp_be16(p, (uint16_t)d);
    } else if (d < (1ull << 32)) {
        *p++ = 0xce;
        p = mp_be32(p, (uint32_t)d);
    } else {
        *p++ = 0xcf;
        p = mp_be64(p, d);
    }
    return p;
}

/* msgpack-c's pack_int64 (and pack_int32, the same forms on its range). */
static inline uint8_t *mp_int(uint8_t *p, int64_t d)
{
    if (d >= 0)
        return mp_uint(p, (uint64_t)d);
    if (d >= -(1ll << 5)) {
        *p++ = (uint8_t)d; /* negative fixint */
    } else if (d >= -(1ll << 7)) {
        *p++ = 0xd0;
        *p++ = (uint8_t)d;
    } else if (d >= -(1ll << 15)) {
        *p++ = 0xd1;
        p = mp_be16(p, (uint16_t)d);
    } else if (d >= -(1ll << 31)) {
        *p++ = 0xd2;
        p = mp_be32(p, (uint32_t)d);
    } else {
        *p++ = 0xd3;
        p = mp_be64(p, (uint64_t)d);
    }
    return p;
}

static inline uint8_t *mp_f64(uint8_t *p, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    *p++ = 0xcb;
    return mp_be64(p, bits);
}

static inline size_t kv_klen(const struct span_kv *kv)
{
    return kv->lens ? kv->klen : strlen(kv->key);
}

static inline size_t kv_slen(const struct span_kv *kv)
{
    return kv->lens ? kv->slen : strlen(kv->str);
}

/* What encoding a span needs worked out first: its strings' lengths and
 * how many meta and metrics entries go out. */
struct span_lens {
    size_t name, service, resource, type;
    size_t nmeta, nmetrics;
};

/* The bytes a span map takes at most. */
static size_t span_bound(const struct span_out *s, struct span_lens *l)
{
    if (s->known.set) {
        l->name = s->known.name;
        l->service = s->known.service;
        l->resource = s->known.resource;
        l->type = s->known.type;
        l->nmeta = s->meta ? s->nmeta : 0;
        l->nmetrics = s->metrics ? s->nmetrics : 0;
        return MP_FIXED_BOUND + l->name + l->service + l->resource + l->type + s->known.kv_bytes +
               10 * l->nmeta + 14 * l->nmetrics;
    }
    l->name = strlen(str_or_empty(s->name));
    l->service = strlen(str_or_empty(s->service));
    l->resource = strlen(str_or_empty(s->resource));
    l->type = strlen(str_or_empty(s->type));
    size_t b = MP_FIXED_BOUND + l->name + l->service + l->resource + l->type;
    size_t nm = 0, nx = 0;
    for (size_t i = 0; s->meta && i < s->nmeta; i++)
        if (meta_ok(&s->meta[i])) {
            nm++;
            b += 10 + kv_klen(&s->meta[i]) + kv_slen(&s->meta[i]);
        }
    for (size_t i = 0; s->metrics && i < s->nmetrics; i++)
        if (metric_ok(&s->metrics[i])) {
            nx++;
            b += 14 + kv_klen(&s->metrics[i]);
        }
    l->nmeta = nm;
    l->nmetrics = nx;
    return b;
}

/* One span map with exactly the keys of WIRE.md section 2, in its types:
 * ids as msgpack uint, start/duration/error as msgpack int, metrics as
 * float64 (the Agent rejects float32). p has span_bound() bytes. */
static uint8_t *pack_span(uint8_t *p, const struct span_out *s, const struct span_lens *l)
{
    p = mp_count(p, 12, 0x80, 0xde);
    p = MP_KEY(p, "trace_id");
    p = mp_uint(p, s->trace_id);
    p = MP_KEY(p, "span_id");
    p = mp_uint(p, s->span_id);
    p = MP_KEY(p, "parent_id");
    p = mp_uint(p, s->parent_id);
    p = MP_KEY(p, "name");
    p = mp_str(p, str_or_empty(s->name), l->name);
    p = MP_KEY(p, "service");
    p = mp_str(p, str_or_empty(s->service), l->service);
    p = MP_KEY(p, "resource");
    p = mp_str(p, str_or_empty(s->resource), l->resource);
    p = MP_KEY(p, "type");
    p = mp_str(p, str_or_empty(s->type), l->type);
    p = MP_KEY(p, "start");
    p = mp_int(p, s->start);
    p = MP_KEY(p, "duration");
    p = mp_int(p, s->duration);
    p = MP_KEY(p, "error");
    p = mp_int(p, s->error);
    p = MP_KEY(p, "meta");
    p = mp_count(p, l->nmeta, 0x80, 0xde);
    if (s->known.set) {
        for (size_t i = 0; i < l->nmeta; i++) {
            p = mp_str(p, s->meta[i].key, s->meta[i].klen);
            p = mp_str(p, s->meta[i].str, s->meta[i].slen);
        }
    } else {
        for (size_t i = 0; s->meta && i < s->nmeta; i++) {
            const struct span_kv *kv = &s->meta[i];
            if (meta_ok(kv)) {
                p = mp_str(p, kv->key, kv_klen(kv));
                p = mp_str(p, kv->str, kv_slen(kv));
            }
        }
    }
    p = MP_KEY(p, "metrics");
    p = mp_count(p, l->nmetrics, 0x80, 0xde);
    if (s->known.set) {
        for (size_t i = 0; i < l->nmetrics; i++) {
            p = mp_str(p, s->metrics[i].key, s->metrics[i].klen);
            p = mp_f64(p, s->metrics[i].num);
        }
    } else {
        for (size_t i = 0; s->metrics && i < s->nmetrics; i++) {
            const struct span_kv *kv = &s->metrics[i];
            if (metric_ok(kv)) {
                p = mp_str(p, kv->key, kv_klen(kv));
                p = mp_f64(p, kv->num);
            }
        }
    }
    return p;
}

/* ---- the body ------------------------------------------------------------------ */

void traces_body_init(traces_body *b)
{
    memset(b, 0, sizeof *b);
}

void traces_body_reset(traces_body *b)
{
    free(b->grouped);
    b->grouped = NULL;
    b->len = b->n = b->left_out = 0;
    b->oom = 0;
}

void traces_body_free(traces_body *b)
{
    free(b->p);
    free(b->ids);
    free(b->off);
    free(b->grouped);
    memset(b, 0, sizeof *b);
}

size_t traces_body_size(const traces_body *b)
{
    return b->len;
}

static int body_reserve(traces_body *b, size_t need)
{
    if (need <= b->cap - b->len)
        return 0;
    size_t cap = b->cap ? b->cap : 64 * 1024;
    while (cap - b->len < need) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    uint8_t *np = realloc(b->p, cap);
    if (!np)
        return -1;
    b->p = np;
    b->cap = cap;
    return 0;
}

int traces_body_add(traces_body *b, const struct span_out *s)
{
    if (b->oom || !s)
        return -1;
    if (!span_ok(s)) {
        b->left_out++;
        return 0;
    }
    /* the group indices are 32-bit; no flush comes near that */
    if (b->n >= TRACES_NONE - 1)
        goto oom;
    if (b->n == b->ncap) {
        size_t nc = b->ncap ? b->ncap * 2 : 256;
        uint64_t *ni = realloc(b->ids, nc * sizeof *ni);
        if (ni)
            b->ids = ni;
        size_t *no = realloc(b->off, nc * sizeof *no);
        if (no)
            b->off = no;
        if (!ni || !no)
            goto oom;
        b->ncap = nc;
    }
    struct span_lens l;
    size_t need = span_bound(s, &l) + 1 + (b->len ? 0 : TRACES_BODY_HEAD);
    if (body_reserve(b, need) < 0)
        goto oom;
    if (b->len == 0)
        b->len = TRACES_BODY_HEAD;
    b->ids[b->n] = s->trace_id;
    b->off[b->n] = b->len;
    b->n++;
    /* Every trace is first taken to have this one span: array(1), the map.
     * traces_body_finish regroups when that turns out wrong. */
    uint8_t *p = b->p + b->len;
    *p++ = 0x91;
    p = pack_span(p, s, &l);
    b->len = (size_t)(p - b->p);
    return 0;
oom:
    b->oom = 1;
    return -1;
}

int traces_body_finish(traces_body *b, const uint8_t **out, size_t *out_len, size_t *ntraces)
{
    *out = NULL;
    *out_len = 0;
    if (ntraces)
        *ntraces = 0;
    if (b->oom)
        return -1;
    if (b->left_out)
        log_debug("traces: %zu span(s) with a zero trace or span id left out", b->left_out);
    if (b->n == 0) {
        if (body_reserve(b, TRACES_BODY_HEAD) < 0)
            return -1;
        b->p[0] = 0x90;
        *out = b->p;
        *out_len = 1;
        return 0;
    }
    traces_groups g;
    if (groups_build(b->ids, b->n, &g) < 0)
        return -1;
    if (!g.order) {
        /* One span per trace: the body as encoded, behind the outer header. */
        size_t h = mp_count_len(b->n);
        uint8_t *start = b->p + TRACES_BODY_HEAD - h;
        mp_count(start, b->n, 0x90, 0xdc);
        *out = start;
        *out_len = b->len - (TRACES_BODY_HEAD - h);
    } else {
        /* Each trace's spans together: the maps copied without their 0x91. */
        size_t cap = 5 + (b->len - TRACES_BODY_HEAD - b->n) + 5 * (size_t)g.ntraces;
        free(b->grouped);
        b->grouped = malloc(cap);
        if (!b->grouped) {
            groups_free(&g);
            return -1;
        }
        uint8_t *p = mp_count(b->grouped, g.ntraces, 0x90, 0xdc);
        const uint32_t *o = g.order;
        for (uint32_t t = 0; t < g.ntraces; t++) {
            p = mp_count(p, g.count[t], 0x90, 0xdc);
            for (uint32_t k = 0; k < g.count[t]; k++, o++) {
                size_t from = b->off[*o] + 1, to = *o + 1 < b->n ? b->off[*o + 1] : b->len;
                memcpy(p, b->p + from, to - from);
                p += to - from;
            }
        }
        *out = b->grouped;
        *out_len = (size_t)(p - b->grouped);
    }
    if (ntraces)
        *ntraces = g.ntraces;
    groups_free(&g);
    return 0;
}

int traces_encode(const struct span_out *spans, size_t n, uint8_t **out, size_t *out_len,
                  size_t *ntraces)
{
    if (ntraces)
        *ntraces = 0;
    if (!out || !out_len)
        return -1;
    *out = NULL;
    *out_len = 0;
    /* the group indices are 32-bit; no flush comes near that */
    if ((!spans && n) || n >= TRACES_NONE)
        return -1;
    traces_body b;
    traces_body_init(&b);
    for (size_t i = 0; i < n; i++)
        if (traces_body_add(&b, &spans[i]) < 0) {
            traces_body_free(&b);
            return -1;
        }
    const uint8_t *body;
    size_t len, nt;
    if (traces_body_finish(&b, &body, &len, &nt) < 0) {
        traces_body_free(&b);
        return -1;
    }
    /* Hand the caller a buffer of its own to free: the body's, moved to its
     * start, or the regrouped copy. */
    if (body == b.grouped) {
        *out = b.grouped;
        b.grouped = NULL;
    } else {
        memmove(b.p, body, len);
        *out = b.p;
        b.p = NULL;
    }
    *out_len = len;
    if (ntraces)
        *ntraces = nt;
    traces_body_free(&b);
    return 0;
}

/* ---- upload ------------------------------------------------------------------ */

typedef struct traces_reply {
    char *p;
    size_t len;
    int overflow;
} traces_reply;

static size_t keep_reply(char *p, size_t size, size_t n, void *ud)
{
    traces_reply *r = ud;
    size_t add = size * n;
    /* Past the bound we keep reading (so a 200 stays a 200) but give up on
     * the rates: a truncated object would not parse anyway. */
    if (r->overflow || add > TRACES_REPLY_MAX - r->len) {
        r->overflow = 1;
        return add;
    }
    if (!r->p) {
        r->p = malloc(TRACES_REPLY_MAX);
        if (!r->p) {
            r->overflow = 1;
            return add;
        }
    }
    memcpy(r->p + r->len, p, add);
    r->len += add;
    return add;
}

/* The rate_by_service object as compact JSON text in memory from malloc, not
 * from jansson's allocator (which a host using jansson may have replaced), so
 * the caller can free() it. NULL when the reply has none. */
static char *rates_from_reply(const char *p, size_t len)
{
    json_error_t err;
    json_t *root = p ? json_loadb(p, len, 0, &err) : NULL;
    json_t *rbs = json_object_get(root, "rate_by_service");
    char *text = NULL;
    if (json_is_object(rbs)) {
        size_t need = json_dumpb(rbs, NULL, 0, JSON_COMPACT);
        text = need ? malloc(need + 1) : NULL;
        if (text && json_dumpb(rbs, text, need, JSON_COMPACT) == need) {
            text[need] = '\0';
        } else {
            free(text);
            text = NULL;
        }
    }
    json_decref(root);
    return text;
}

int traces_upload(const aio_target *t, const struct traces_meta *m, const uint8_t *body,
                  size_t len, size_t ntraces, long timeout_ms, long *http_status,
                  char **rates_json)
{
    return traces_upload_conn(NULL, t, m, body, len, ntraces, timeout_ms, http_status, rates_json);
}

int traces_upload_conn(aio_conn *conn, const aio_target *t, const struct traces_meta *m,
                       const uint8_t *body, size_t len, size_t ntraces, long timeout_ms,
                       long *http_status, char **rates_json)
{
    if (http_status)
        *http_status = 0;
    if (rates_json)
        *rates_json = NULL;
    if (!t || !body || len == 0)
        return -1;
    if (aio_openssl_stopped()) {
        /* At exit, after the program's OpenSSL cleanup: no libcurl. */
        char count[48], lv[128], tv[128], cid[128];
        snprintf(count, sizeof count, "X-Datadog-Trace-Count: %zu", ntraces);
        snprintf(lv, sizeof lv, "Datadog-Meta-Lang-Version: %.96s",
                 m && m->lang_version && *m->lang_version ? m->lang_version : "unknown");
        snprintf(tv, sizeof tv, "Datadog-Meta-Tracer-Version: %.96s",
                 m && m->tracer_version && *m->tracer_version ? m->tracer_version : "unknown");
        snprintf(cid, sizeof cid, "Datadog-Container-ID: %.96s", m && m->container_id ? m->container_id : "");
        const char *hs[] = {"Content-Type: application/msgpack", count, "Datadog-Meta-Lang: cpp", lv, tv,
                            "Datadog-Client-Computed-Top-Level: yes",
                            m && m->container_id && m->container_id[0] ? cid : NULL, NULL};
        char resp[8192];
        long st = aio_raw_request(t, "PUT", TRACES_PATH, hs, body, len, timeout_ms, resp, sizeof resp);
        if (http_status)
            *http_status = st;
        if (st >= 200 && st <= 299 && rates_json)
            *rates_json = rates_from_reply(resp, strlen(resp));
        return st >= 200 && st <= 299 ? 0 : -1;
    }
    char errbuf[CURL_ERROR_SIZE];
    /* A kept handle comes back with this request's timeouts set and nothing
     * of the previous request's; everything below is set for every request. */
    CURL *c = conn ? aio_conn_easy(conn, t, TRACES_PATH, timeout_ms, len)
                   : aio_easy_new(t, TRACES_PATH, timeout_ms, errbuf);
    int bad = !c;
    traces_reply reply = {0};
    struct curl_slist *hdrs = NULL;
    char count[24];
    snprintf(count, sizeof count, "%zu", ntraces);
    const char *lang_v = m && m->lang_version && *m->lang_version ? m->lang_version : "unknown";
    const char *tracer_v =
        m && m->tracer_version && *m->tracer_version ? m->tracer_version : "unknown";
    hdrs = aio_add_header(hdrs, &bad, "Content-Type", "application/msgpack");
    hdrs = aio_add_header(hdrs, &bad, "X-Datadog-Trace-Count", count);
    hdrs = aio_add_header(hdrs, &bad, "Datadog-Meta-Lang", "cpp");
    hdrs = aio_add_header(hdrs, &bad, "Datadog-Meta-Lang-Version", lang_v);
    hdrs = aio_add_header(hdrs, &bad, "Datadog-Meta-Tracer-Version", tracer_v);
    /* our spans carry _dd.top_level themselves: the Agent must not recompute it */
    hdrs = aio_add_header(hdrs, &bad, "Datadog-Client-Computed-Top-Level", "yes");
    if (m && m->container_id && m->container_id[0])
        hdrs = aio_add_header(hdrs, &bad, "Datadog-Container-ID", m->container_id);
    /* curl waits up to a second for "100 Continue" on bodies over 1 MB; the
     * Agent never needs the handshake, and the wait eats into our timeout. */
    if (!bad) {
        struct curl_slist *nl = curl_slist_append(hdrs, "Expect:");
        bad = !nl;
        hdrs = nl ? nl : hdrs;
    }
    if (!bad) {
        /* PUT with a body given as POSTFIELDS: Content-Length from the size,
         * no read callback, and the same code path as the profile upload. */
        bad |= curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT") != CURLE_OK;
        bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) != CURLE_OK;
        bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDS, body) != CURLE_OK;
        bad |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK;
        bad |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_reply) != CURLE_OK;
        bad |= curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply) != CURLE_OK;
    }
    long status = 0;
    if (!bad)
        status = conn ? aio_conn_run(conn, t, "trace upload") : aio_easy_run(c, t, "trace upload", errbuf);
    else
        log_debug("trace upload not attempted: out of memory or libcurl refused an option");
    if (c && !conn)
        curl_easy_cleanup(c);
    else if (c && bad)
        aio_conn_reset(conn); /* it may hold some of this request's options */
    curl_slist_free_all(hdrs);
    int ok = status >= 200 && status <= 299;
    if (ok && rates_json && !reply.overflow)
        *rates_json = rates_from_reply(reply.p, reply.len);
    free(reply.p);
    if (http_status)
        *http_status = status;
    return ok ? 0 : -1;
}

/* ---- sampling rates ------------------------------------------------------------ */

/* A rate is a probability: anything else in the reply is treated as absent. */
static double rate_value(const json_t *v)
{
    if (!json_is_number(v))
        return -1;
    double d = json_number_value(v);
    return d >= 0 && d <= 1 ? d : -1;
}

double traces_rate_for(const char *rates_json, const char *service, const char *env)
{
    if (!rates_json)
        return -1;
    json_error_t err;
    json_t *r = json_loads(rates_json, 0, &err);
    if (!json_is_object(r)) {
        json_decref(r);
        return -1;
    }
    service = str_or_empty(service);
    env = str_or_empty(env);
    /* the Agent's key shape, as every Datadog tracer looks it up */
    size_t klen = strlen("service:,env:") + strlen(service) + strlen(env) + 1;
    char *key = malloc(klen);
    double rate = -1;
    if (key) {
        snprintf(key, klen, "service:%s,env:%s", service, env);
        rate = rate_value(json_object_get(r, key));
        free(key);
    }
    if (rate < 0)
        rate = rate_value(json_object_get(r, "service:,env:"));
    json_decref(r);
    return rate;
}

/* ---- JSON lines ------------------------------------------------------------------ */

typedef struct traces_buf {
    char *p;
    size_t len, cap;
    int oom;
} traces_buf;

static int buf_reserve(traces_buf *b, size_t n)
{
    if (b->oom)
        return -1;
    if (n <= b->cap - b->len)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    char *np = realloc(b->p, cap);
    if (!np) {
        b->oom = 1;
        return -1;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

static void buf_put(traces_buf *b, const void *s, size_t n)
{
    if (buf_reserve(b, n) == 0) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

static int dump_cb(const char *s, size_t n, void *ud)
{
    traces_buf *b = ud;
    buf_put(b, s, n);
    return b->oom ? -1 : 0;
}

/* json_object_set_new refuses a key that is not UTF-8 (tags can hold any
 * bytes): such a key gets the same '_' repair as values. Steals v. */
static int set_lossy(json_t *obj, const char *key, json_t *v)
{
    if (!v)
        return -1;
    json_incref(v);
    if (json_object_set_new(obj, key, v) == 0) {
        json_decref(v);
        return 0;
    }
    json_t *k = aio_json_str_lossy(key);
    int rc = k ? json_object_set_new(obj, json_string_value(k), v) : -1;
    if (!k)
        json_decref(v);
    json_decref(k);
    return rc;
}

static json_t *lossy_str(const char *s)
{
    return aio_json_str_lossy(str_or_empty(s));
}

/* Everything of a span but its ids, which jansson cannot hold: json_int_t is
 * signed and half of all random 64-bit ids are above INT64_MAX. */
static json_t *span_json_rest(const struct span_out *s)
{
    json_t *o = json_object(), *meta = json_object(), *metrics = json_object();
    int bad = !o || !meta || !metrics;
    for (size_t i = 0; !bad && s->meta && i < s->nmeta; i++)
        if (meta_ok(&s->meta[i]))
            bad |= set_lossy(meta, s->meta[i].key, lossy_str(s->meta[i].str)) != 0;
    for (size_t i = 0; !bad && s->metrics && i < s->nmetrics; i++)
        if (metric_ok(&s->metrics[i]))
            bad |= set_lossy(metrics, s->metrics[i].key, json_real(s->metrics[i].num)) != 0;
    if (bad) {
        json_decref(o);
        json_decref(meta);
        json_decref(metrics);
        return NULL;
    }
    /* set_new steals the reference even on failure: no leak on the error path */
    bad |= json_object_set_new(o, "name", lossy_str(s->name)) != 0;
    bad |= json_object_set_new(o, "service", lossy_str(s->service)) != 0;
    bad |= json_object_set_new(o, "resource", lossy_str(s->resource)) != 0;
    bad |= json_object_set_new(o, "type", lossy_str(s->type)) != 0;
    bad |= json_object_set_new(o, "start", json_integer(s->start)) != 0;
    bad |= json_object_set_new(o, "duration", json_integer(s->duration)) != 0;
    bad |= json_object_set_new(o, "error", json_integer(s->error)) != 0;
    bad |= json_object_set_new(o, "meta", meta) != 0;
    bad |= json_object_set_new(o, "metrics", metrics) != 0;
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* One line: the ids written as unsigned decimals by hand, then the rest
 * dumped by jansson with its opening '{' turned into the ',' that joins the
 * two. JSON_COMPACT escapes any newline inside strings, so a span is exactly
 * one line. */
static int span_line(traces_buf *b, const struct span_out *s)
{
    json_t *rest = span_json_rest(s);
    if (!rest)
        return -1;
    char ids[96];
    int n = snprintf(ids, sizeof ids, "{\"trace_id\":%" PRIu64 ",\"span_id\":%" PRIu64
                     ",\"parent_id\":%" PRIu64, s->trace_id, s->span_id, s->parent_id);
    size_t mark = 0;
    int rc = -1;
    if (n > 0 && (size_t)n < sizeof ids) {
        buf_put(b, ids, (size_t)n);
        mark = b->len;
        rc = json_dump_callback(rest, dump_cb, b, JSON_COMPACT);
    }
    json_decref(rest);
    if (rc != 0 || b->oom || b->len <= mark || b->p[mark] != '{')
        return -1;
    b->p[mark] = ',';
    buf_put(b, "\n", 1);
    return b->oom ? -1 : 0;
}

int traces_write_jsonl(const char *dir, const char *service, int64_t pid,
                       const struct span_out *spans, size_t n)
{
    if (!dir || !*dir || (!spans && n))
        return -1;
    /* the whole batch is built first: a span we cannot encode must not leave
     * a half-written file behind, and one write keeps batches whole */
    traces_buf b = {0};
    for (size_t i = 0; i < n; i++)
        if (span_ok(&spans[i]) && span_line(&b, &spans[i]) < 0) {
            free(b.p);
            return -1;
        }
    if (b.len == 0) {
        free(b.p);
        return 0;
    }
    int dfd = aio_open_output_dir(dir);
    if (dfd < 0) {
        free(b.p);
        return -1;
    }
    char svc[101], name[NAME_MAX + 1];
    aio_sanitize_service(service, svc, sizeof svc);
    int nn = snprintf(name, sizeof name, "%s.%" PRId64 ".traces.jsonl", svc, pid);
    int rc = -1, fd = -1;
    if (nn < 0 || (size_t)nn >= sizeof name)
        goto out;
    /* O_NONBLOCK only so that a FIFO planted at this name cannot hang the
     * open; it changes nothing for the regular file we then insist on. */
    fd = openat(dfd, name, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK,
                0600);
    if (fd < 0) {
        log_warn("cannot open %s/%s: %s", dir, name, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        log_warn("%s/%s is not a regular file: traces not written", dir, name);
        goto out;
    }
    /* We append to what is there: it must be the file we created. Another
     * user's file at this name would hand them our spans (a directory of
     * theirs that we may write into), and a second link to a file of ours
     * (planted beside it) would have us append to that other file. */
    if (st.st_uid != geteuid() || st.st_nlink != 1) {
        log_warn("%s/%s is not a file of ours (owner %ld, %ld links): traces not written", dir,
                 name, (long)st.st_uid, (long)st.st_nlink);
        goto out;
    }
    if (aio_write_all(fd, b.p, b.len) < 0) {
        log_warn("cannot write %s/%s: %s", dir, name, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    close(dfd);
    free(b.p);
    return rc;
}
