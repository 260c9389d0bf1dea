/* http/context.c — trace-context extraction (ctx_*) from Datadog headers
 * (x-datadog-*) and W3C Trace Context (traceparent, tracestate "dd=" member).
 * Runs in the uploader thread only; no allocation, no state.
 *
 * Follows dd-trace-cpp (extraction_util.cpp, w3c_propagation.cpp,
 * tag_propagation.cpp) except where WIRE.md asks for more: the Datadog parent
 * id is required and must be nonzero, and a sampling priority that is not an
 * integer is ignored rather than failing the whole extraction (dd-trace-py).
 * The first style in the list that yields a context wins; when Datadog wins
 * and W3C carries the same 128-bit trace id with another parent, the W3C
 * parent is used (as dd-trace-cpp's merge and dd-trace-py do: the W3C parent
 * is the closer span when a proxy in between only speaks W3C). */
#include "http/span_rules.h"

#include <string.h>

#define CTX_TAGS_MAX 512 /* x-datadog-tags longer than this are rejected whole */

struct str {
    const char *p;
    size_t n;
};

static int ows(char c) { return c == ' ' || c == '\t'; }

static struct str trim(const char *p, size_t n)
{
    while (n && ows(*p)) {
        p++;
        n--;
    }
    while (n && ows(p[n - 1]))
        n--;
    return (struct str){p, n};
}

static int eq_ci(struct str s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.n != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s.p[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != lit[i])
            return 0;
    }
    return 1;
}

static int has_prefix(struct str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n >= n && !memcmp(s.p, lit, n);
}

/* Decimal, digits only, no overflow. */
static int parse_u64(struct str s, uint64_t *out)
{
    if (s.n == 0 || s.n > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return -1;
        unsigned d = (unsigned)(s.p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_int(struct str s, int *out)
{
    int neg = 0;
    if (s.n && (s.p[0] == '-' || s.p[0] == '+')) {
        neg = s.p[0] == '-';
        s.p++;
        s.n--;
    }
    uint64_t v;
    if (parse_u64(s, &v) < 0 || v > (uint64_t)INT32_MAX + (uint64_t)neg)
        return -1;
    *out = neg ? (int)-(int64_t)v : (int)v;
    return 0;
}

/* Lowercase hex only (W3C and _dd.p.tid); n digits, n <= 16. */
static int parse_hex(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* Tag grammar of x-datadog-tags (also applied to tracestate t.* members):
 * key = printable ASCII without space, ',' and '='; value = printable ASCII
 * (space included) without ','. */
static int tag_key_ok(struct str k)
{
    if (!k.n)
        return 0;
    for (size_t i = 0; i < k.n; i++)
        if (k.p[i] <= ' ' || k.p[i] > '~' || k.p[i] == ',' || k.p[i] == '=')
            return 0;
    return 1;
}

static int tag_value_ok(struct str v)
{
    if (!v.n)
        return 0;
    for (size_t i = 0; i < v.n; i++)
        if (v.p[i] < ' ' || v.p[i] > '~' || v.p[i] == ',')
            return 0;
    return 1;
}

/* Appends "key=value" (or "prefix" + key) to the tags list, whole or not at
 * all; with tilde set, '~' in the value becomes '=' (tracestate encoding). */
static void add_tag(struct trace_ctx *c, const char *prefix, struct str k, struct str v, int tilde)
{
    size_t used = strlen(c->propagated_tags), pl = strlen(prefix);
    size_t need = (used ? 1 : 0) + pl + k.n + 1 + v.n;
    if (used + need + 1 > sizeof c->propagated_tags)
        return;
    char *o = c->propagated_tags + used;
    if (used)
        *o++ = ',';
    memcpy(o, prefix, pl);
    o += pl;
    memcpy(o, k.p, k.n);
    o += k.n;
    *o++ = '=';
    for (size_t i = 0; i < v.n; i++)
        *o++ = tilde && v.p[i] == '~' ? '=' : v.p[i];
    *o = 0;
}

static void set_origin(struct trace_ctx *c, struct str o, int tilde)
{
    if (!o.n || o.n >= sizeof c->origin)
        return;
    for (size_t i = 0; i < o.n; i++)
        if (o.p[i] < ' ' || o.p[i] > '~')
            return;
    for (size_t i = 0; i < o.n; i++)
        c->origin[i] = tilde && o.p[i] == '~' ? '=' : o.p[i];
    c->origin[o.n] = 0;
}

/* x-datadog-tags: comma-separated key=value pairs. One malformed pair voids
 * the header (dd-trace-cpp: "decoding_error"); of the rest only _dd.p.* is
 * kept. _dd.p.tid becomes trace_id_hi rather than a tag: the span writer
 * emits it from there. */
static void dd_tags(struct trace_ctx *c, const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > CTX_TAGS_MAX)
        return;
    for (int pass = 0; pass < 2; pass++) {
        const char *p = h, *end = h + n;
        while (p < end) {
            const char *e = memchr(p, ',', (size_t)(end - p));
            if (!e)
                e = end;
            const char *eq = memchr(p, '=', (size_t)(e - p));
            if (!eq)
                return;
            struct str k = {p, (size_t)(eq - p)}, v = {eq + 1, (size_t)(e - eq - 1)};
            if (!tag_key_ok(k) || !tag_value_ok(v))
                return;
            if (pass == 1 && has_prefix(k, "_dd.p.") && k.n > 6) {
                if (k.n == 9 && !memcmp(k.p, "_dd.p.tid", 9)) {
                    uint64_t hi;
                    if (v.n == 16 && parse_hex(v.p, 16, &hi) == 0)
                        c->trace_id_hi = hi;
                } else {
                    add_tag(c, "", k, v, 0);
                }
            }
            p = e + 1;
        }
    }
}

static int extract_datadog(const struct ctx_headers *h, struct trace_ctx *c)
{
    if (!h->dd_trace_id || !h->dd_parent_id)
        return 0;
    uint64_t tid, pid;
    if (parse_u64(trim(h->dd_trace_id, strlen(h->dd_trace_id)), &tid) < 0 || tid == 0)
        return 0;
    if (parse_u64(trim(h->dd_parent_id, strlen(h->dd_parent_id)), &pid) < 0 || pid == 0)
        return 0;
    c->trace_id_lo = tid;
    c->parent_id = pid;
    int prio;
    if (h->dd_sampling_priority &&
        parse_int(trim(h->dd_sampling_priority, strlen(h->dd_sampling_priority)), &prio) == 0) {
        c->has_priority = 1;
        c->sampling_priority = prio;
    }
    if (h->dd_origin)
        set_origin(c, trim(h->dd_origin, strlen(h->dd_origin)), 0);
    if (h->dd_tags)
        dd_tags(c, h->dd_tags);
    c->found = 1;
    return 1;
}

/* The "dd" member of tracestate: s:<priority>;o:<origin>;p:<parent>;t.<k>:<v>. */
static void tracestate_dd(struct trace_ctx *c, struct str dd)
{
    const char *p = dd.p, *end = dd.p + dd.n;
    while (p < end) {
        const char *e = memchr(p, ';', (size_t)(end - p));
        if (!e)
            e = end;
        const char *colon = memchr(p, ':', (size_t)(e - p));
        if (colon) {
            struct str k = {p, (size_t)(colon - p)}, v = {colon + 1, (size_t)(e - colon - 1)};
            int prio;
            if (k.n == 1 && k.p[0] == 's') {
                /* Trust the traceparent flag when the two disagree on
                 * keep/drop; otherwise the finer tracestate value. */
                if (parse_int(v, &prio) == 0 && (prio > 0) == (c->sampling_priority > 0))
                    c->sampling_priority = prio;
            } else if (k.n == 1 && k.p[0] == 'o') {
                set_origin(c, v, 1);
            } else if (has_prefix(k, "t.") && k.n > 2) {
                struct str tk = {k.p + 2, k.n - 2};
                /* The high trace id bits come from traceparent, not from t.tid. */
                if (!(tk.n == 3 && !memcmp(tk.p, "tid", 3)) && tag_key_ok(tk) && tag_value_ok(v))
                    add_tag(c, "_dd.p.", tk, v, 1);
            }
            /* p:<16 hex> is the last Datadog parent (_dd.parent_id): not needed. */
        }
        p = e + 1;
    }
}

static int extract_w3c(const struct ctx_headers *h, struct trace_ctx *c)
{
    if (!h->traceparent)
        return 0;
    struct str tp = trim(h->traceparent, strlen(h->traceparent));
    const char *s = tp.p;
    /* version "-" trace-id "-" parent-id "-" flags, then for versions after
     * 00 optionally "-" and more fields. */
    if (tp.n < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-')
        return 0;
    uint64_t ver, hi, lo, pid, flags;
    if (parse_hex(s, 2, &ver) < 0 || parse_hex(s + 3, 16, &hi) < 0 ||
        parse_hex(s + 19, 16, &lo) < 0 || parse_hex(s + 36, 16, &pid) < 0 ||
        parse_hex(s + 53, 2, &flags) < 0)
        return 0;
    if (ver == 0xff || (ver == 0 && tp.n != 55) || (tp.n > 55 && s[55] != '-'))
        return 0;
    if ((hi == 0 && lo == 0) || pid == 0)
        return 0;
    /* A 128-bit id with a zero low half cannot be carried in the 64-bit
     * trace_id field the Agent needs nonzero. */
    if (lo == 0)
        return 0;
    c->trace_id_hi = hi;
    c->trace_id_lo = lo;
    c->parent_id = pid;
    c->has_priority = 1;
    c->sampling_priority = (int)(flags & 1);
    c->found = 1;
    if (!h->tracestate)
        return 1;
    const char *p = h->tracestate, *end = p + strlen(p);
    while (p < end) {
        const char *e = memchr(p, ',', (size_t)(end - p));
        if (!e)
            e = end;
        struct str m = trim(p, (size_t)(e - p));
        if (m.n > 3 && !memcmp(m.p, "dd=", 3)) {
            tracestate_dd(c, (struct str){m.p + 3, m.n - 3});
            break;
        }
        p = e + 1;
    }
    return 1;
}

int ctx_parse_styles(const char *s, int styles[4])
{
    int n = 0;
    if (!s)
        return 0;
    const char *p = s;
    while (*p) {
        while (*p == ',' || ows(*p))
            p++;
        if (!*p)
            break;
        const char *b = p;
        while (*p && *p != ',' && !ows(*p))
            p++;
        struct str t = {b, (size_t)(p - b)};
        int st = 0;
        if (eq_ci(t, "datadog")) {
            st = CTX_STYLE_DATADOG;
        } else if (eq_ci(t, "tracecontext")) {
            st = CTX_STYLE_TRACECONTEXT;
        } else if (eq_ci(t, "none") || eq_ci(t, "b3") || eq_ci(t, "b3multi") ||
                   eq_ci(t, "baggage")) {
            /* Valid Datadog style names this extractor does not implement
             * (the default list ends with "baggage"): skipped, not an error. */
        } else if (eq_ci(t, "single") || eq_ci(t, "header")) {
            /* the tail of the legacy name "b3 single header" */
        } else {
            return -1;
        }
        int dup = 0;
        for (int i = 0; i < n; i++)
            dup |= styles[i] == st;
        if (st && !dup && n < 4)
            styles[n++] = st;
    }
    return n;
}

void ctx_extract(const int *styles, int nstyles, const struct ctx_headers *h, struct trace_ctx *out)
{
    memset(out, 0, sizeof *out);
    if (!h || !styles)
        return;
    int w3c_listed = 0;
    for (int i = 0; i < nstyles; i++)
        w3c_listed |= styles[i] == CTX_STYLE_TRACECONTEXT;
    for (int i = 0; i < nstyles && !out->found; i++) {
        memset(out, 0, sizeof *out);
        if (styles[i] == CTX_STYLE_DATADOG)
            extract_datadog(h, out);
        else if (styles[i] == CTX_STYLE_TRACECONTEXT)
            extract_w3c(h, out);
        if (out->found && styles[i] == CTX_STYLE_DATADOG && w3c_listed) {
            struct trace_ctx w;
            memset(&w, 0, sizeof w);
            if (extract_w3c(h, &w) && w.trace_id_lo == out->trace_id_lo &&
                w.trace_id_hi == out->trace_id_hi && w.parent_id != out->parent_id)
                out->parent_id = w.parent_id;
        }
    }
    if (!out->found)
        memset(out, 0, sizeof *out);
}
