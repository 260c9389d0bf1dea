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

struct spans_state {
    const struct shim_config *cfg;
    char runtime_id[40];
    char container_id[80];
    int64_t pid;
    obf_rule *obf;
    int styles[4], nstyles;
    double agent_rate; /* from rate_by_service; 1 until the Agent says otherwise */
    struct header_tag htags[MAX_HEADER_TAGS];
    int nhtags;
    json_t *endpoints; /* resource -> count */
    size_t nendpoints;
    uint64_t rng;
};

/* ---- helpers -------------------------------------------------------------- */

static uint64_t rnd64(struct spans_state *s)
{
    if (!s->rng) {
        if (getrandom(&s->rng, sizeof s->rng, GRND_NONBLOCK) != (ssize_t)sizeof s->rng)
            s->rng = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull;
        s->rng |= 1;
    }
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
    s->endpoints = json_object();
    return s;
}

void spans_free(struct spans_state *s)
{
    if (!s)
        return;
    obf_free(s->obf);
    json_decref(s->endpoints);
    free(s);
}

char *spans_take_endpoint_counts(struct spans_state *s)
{
    if (!s || s->nendpoints == 0)
        return NULL;
    char *out = json_dumps(s->endpoints, JSON_COMPACT);
    json_object_clear(s->endpoints);
    s->nendpoints = 0;
    return out;
}

/* ---- one span ---------------------------------------------------------------- */

/* Strings of a record, NUL-terminated copies in one arena. */
struct rec_view {
    const struct span_rec *r;
    const char *str[SS_COUNT];
    char arena[SPAN_REC_MAX + SS_COUNT];
};

static int view_of(const uint8_t *p, uint32_t len, struct rec_view *v)
{
    if (len < sizeof(struct span_rec))
        return -1;
    const struct span_rec *r = (const struct span_rec *)p;
    if (r->magic != SPAN_MAGIC)
        return -1;
    v->r = r;
    size_t off = 0, a = 0, avail = len - offsetof(struct span_rec, strings);
    for (int i = 0; i < SS_COUNT; i++) {
        size_t n = r->len[i];
        if (off + n > avail)
            return -1;
        if (n == 0 && i != SS_METHOD && i != SS_TARGET) {
            v->str[i] = NULL;
            continue;
        }
        memcpy(v->arena + a, r->strings + off, n);
        v->arena[a + n] = '\0';
        v->str[i] = v->arena + a;
        a += n + 1;
        off += n;
    }
    return 0;
}

/* Storage for one span_out's strings and key/values. */
struct span_build {
    struct span_kv meta[48], metrics[12];
    size_t nmeta, nmetrics;
    char buf[8192];
    size_t used;
};

static const char *keep(struct span_build *b, const char *s)
{
    size_t n = strlen(s) + 1;
    if (b->used + n > sizeof b->buf)
        return "";
    char *d = b->buf + b->used;
    memcpy(d, s, n);
    b->used += n;
    return d;
}

static void meta(struct span_build *b, const char *k, const char *v)
{
    if (v && b->nmeta < sizeof b->meta / sizeof b->meta[0])
        b->meta[b->nmeta++] = (struct span_kv){keep(b, k), keep(b, v), 0};
}

static void metric(struct span_build *b, const char *k, double v)
{
    if (b->nmetrics < sizeof b->metrics / sizeof b->metrics[0])
        b->metrics[b->nmetrics++] = (struct span_kv){keep(b, k), NULL, v};
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

static void build_span(struct spans_state *s, const struct rec_view *v, struct span_build *b,
                       struct span_out *o)
{
    const struct span_rec *r = v->r;
    const struct shim_config *cfg = s->cfg;
    memset(o, 0, sizeof *o);
    b->nmeta = b->nmetrics = 0;
    b->used = 0;

    /* Trace context. */
    struct ctx_headers h = {v->str[SS_DD_TRACE_ID], v->str[SS_DD_PARENT_ID], v->str[SS_DD_PRIORITY],
                            v->str[SS_DD_ORIGIN], v->str[SS_DD_TAGS], v->str[SS_TRACEPARENT],
                            v->str[SS_TRACESTATE]};
    struct trace_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx_extract(s->styles, s->nstyles, &h, &ctx);
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
    const char *target = v->str[SS_TARGET] ? v->str[SS_TARGET] : "";
    const char *path = target, *host = v->str[SS_HOST];
    char hostbuf[256];
    if (strncmp(target, "http://", 7) == 0 || strncmp(target, "https://", 8) == 0) {
        const char *hs = strstr(target, "://") + 3;
        size_t hl = strcspn(hs, "/?");
        snprintf(hostbuf, sizeof hostbuf, "%.*s", (int)hl, hs);
        if (!host)
            host = hostbuf;
        path = hs + hl;
    }
    size_t plen = strcspn(path, "?#");
    const char *query = path[plen] == '?' ? path + plen + 1 : NULL;
    size_t qlen = query ? strcspn(query, "#") : 0;
    char endpoint[1024];
    endpoint_of(path, plen, endpoint, sizeof endpoint);
    char resource[1100];
    snprintf(resource, sizeof resource, "%s %s", method, endpoint);
    char qred[2200] = "";
    if (query && s->obf)
        obf_apply(s->obf, query, qlen, qred, sizeof qred);
    char url[4096];
    snprintf(url, sizeof url, "http://%s%.*s%s%s", host ? host : "localhost", (int)plen,
             plen ? path : "/", (query && s->obf) ? "?" : "", (query && s->obf) ? qred : "");

    o->name = "http.request";
    o->service = cfg->service;
    o->resource = keep(b, resource);
    o->type = "web";
    o->start = r->start_ns;
    o->duration = r->duration_ns;

    meta(b, "span.kind", "server");
    meta(b, "component", "ddshim");
    meta(b, "language", "cpp");
    meta(b, "runtime-id", s->runtime_id);
    if (cfg->env[0])
        meta(b, "env", cfg->env);
    if (cfg->version[0])
        meta(b, "version", cfg->version);
    meta(b, "http.method", method);
    meta(b, "http.url", url);
    meta(b, "http.endpoint", endpoint);
    meta(b, "http.version", r->version_minor ? "1.1" : "1.0");
    if (v->str[SS_USER_AGENT])
        meta(b, "http.useragent", v->str[SS_USER_AGENT]);
    char num[64];
    if (r->status) {
        snprintf(num, sizeof num, "%d", r->status);
        meta(b, "http.status_code", num);
    }
    if (r->peer_family == 4 || r->peer_family == 6) {
        char ip[INET6_ADDRSTRLEN];
        if (inet_ntop(r->peer_family == 4 ? AF_INET : AF_INET6, r->peer_addr, ip, sizeof ip)) {
            meta(b, "network.client.ip", ip);
            snprintf(num, sizeof num, "%u", r->peer_port);
            meta(b, "network.client.port", num);
        }
    }
    if (r->req_content_length >= 0) {
        snprintf(num, sizeof num, "%lld", (long long)r->req_content_length);
        meta(b, "http.request.content_length", num);
    }
    if (r->resp_content_length >= 0) {
        snprintf(num, sizeof num, "%lld", (long long)r->resp_content_length);
        meta(b, "http.response.content_length", num);
    }
    if (r->status >= 500) {
        o->error = 1;
        snprintf(num, sizeof num, "%d: %s", r->status, reason_of(r->status));
        meta(b, "error.message", num);
    } else if (r->flags & SPAN_F_NO_RESPONSE) {
        o->error = 1;
        meta(b, "error.type", "ddshim.no_response");
        meta(b, "error.message", "no response: the connection ended before a response was written");
    }
    for (int i = 0; i < s->nhtags; i++) {
        /* The parser captured header i of the configured list into extra[i]. */
        if (v->str[SS_REQ_EXTRA0 + i])
            meta(b, s->htags[i].tag, v->str[SS_REQ_EXTRA0 + i]);
        if (v->str[SS_RESP_EXTRA0 + i])
            meta(b, s->htags[i].resp_tag, v->str[SS_RESP_EXTRA0 + i]);
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
        metric(b, "_dd.rule_psr", cfg->sample_rate);
    } else {
        priority = sampled(o->trace_id, s->agent_rate) ? 1 : 0;
        dm = "-0";
        metric(b, "_dd.agent_psr", s->agent_rate);
    }
    /* Propagated _dd.p.* tags from upstream, then ours. */
    int have_dm = 0;
    if (ctx.found && ctx.propagated_tags[0]) {
        char tags[sizeof ctx.propagated_tags];
        snprintf(tags, sizeof tags, "%s", ctx.propagated_tags);
        for (char *save = NULL, *kv = strtok_r(tags, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
            char *eq = strchr(kv, '=');
            if (!eq)
                continue;
            *eq = '\0';
            if (!strcmp(kv, "_dd.p.tid"))
                continue; /* ours below, from the context */
            if (!strcmp(kv, "_dd.p.dm"))
                have_dm = 1;
            meta(b, kv, eq + 1);
        }
    }
    if (!have_dm && dm && priority > 0)
        meta(b, "_dd.p.dm", dm);
    if (tid_hi) {
        snprintf(num, sizeof num, "%016llx", (unsigned long long)tid_hi);
        meta(b, "_dd.p.tid", num);
    }
    if (ctx.found && ctx.origin[0])
        meta(b, "_dd.origin", ctx.origin);

    metric(b, "_sampling_priority_v1", priority);
    metric(b, "_dd.top_level", 1);
    metric(b, "_dd.measured", 1);
    metric(b, "process_id", (double)s->pid);

    o->meta = b->meta;
    o->nmeta = b->nmeta;
    o->metrics = b->metrics;
    o->nmetrics = b->nmetrics;

    /* Requests per endpoint, for the profile's event.json. */
    json_t *n = json_object_get(s->endpoints, resource);
    if (n)
        json_integer_set(n, json_integer_value(n) + 1);
    else if (s->nendpoints < MAX_ENDPOINTS && json_object_set_new(s->endpoints, resource, json_integer(1)) == 0)
        s->nendpoints++;
}

/* ---- delivery ------------------------------------------------------------------ */

/* Spans are built and sent in batches: each request is a local root, so a
 * trace never spans two batches' payloads in a way the Agent minds, and the
 * memory held at once stays small. */
#define BATCH 256

static int deliver_batch(struct spans_state *s, struct spans_dest *d, struct span_out *out,
                         size_t n, long timeout_ms, int *to_agent, int *to_file, int *spooled)
{
    int ok = 0, sent = 0, kept = 0;
    uint8_t *body = NULL;
    size_t blen = 0, ntraces = 0;
    long status = 0;
    if ((d->agent || d->spool) && traces_encode(out, n, &body, &blen, &ntraces) < 0)
        body = NULL;
    if (d->agent && body) {
        struct traces_meta m = {.lang_version = "", .tracer_version = DDSHIM_VERSION,
                                .container_id = s->container_id[0] ? s->container_id : NULL};
        char *rates = NULL;
        if (traces_upload(d->agent, &m, body, blen, ntraces, timeout_ms, &status, &rates) == 0) {
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
    free(body);
    if (s->cfg->output_dir_set || (!sent && (d->files || !kept))) {
        if (traces_write_jsonl(s->cfg->output_dir, s->cfg->service, s->pid, out, n) == 0)
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
    size_t cap = count < BATCH ? (count ? count : 1) : BATCH;
    struct span_out *out = calloc(cap, sizeof *out);
    /* malloc, not calloc: build_span sets what it uses; zeroing 8 KB a span cost ~1 us each */
    struct span_build *builds = malloc(cap * sizeof *builds);
    struct rec_view *v = malloc(sizeof *v);
    int rc = 0;
    if (!out || !builds || !v) {
        free(out);
        free(builds);
        free(v);
        return -1;
    }
    size_t n = 0, off = 0, seen = 0;
    while (off + sizeof(uint32_t) <= len && seen < count) {
        uint32_t rl;
        memcpy(&rl, recs + off, sizeof rl);
        off += sizeof rl;
        if (off + rl > len)
            break;
        seen++;
        if (view_of(recs + off, rl, v) == 0) {
            build_span(s, v, &builds[n], &out[n]);
            n++;
        }
        off += rl;
        if (n == cap) {
            rc |= deliver_batch(s, &dd, out, n, timeout_ms, to_agent, to_file, spooled);
            n = 0;
        }
    }
    if (n)
        rc |= deliver_batch(s, &dd, out, n, timeout_ms, to_agent, to_file, spooled);
    log_debug("spans: %zu records, %zu read, to_agent=%d to_file=%d", count, seen, *to_agent, *to_file);
    free(out);
    free(builds);
    free(v);
    return rc;
}
