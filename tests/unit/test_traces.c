/* tests/unit/test_traces.c — agent_io/traces.c on its own (with transport.c,
 * whose handle settings it shares): the /v0.4/traces msgpack body read back
 * by msgpack-c's unpacker and by Python's msgpack plus a byte-level walk of
 * every key's msgpack type (WIRE.md section 2), grouping at scale, live
 * uploads to tests/intake.py over TCP and a Unix socket (headers, body,
 * rate_by_service, a 500, an intake that never answers), the hand encoder
 * against msgpack-c's packer byte for byte, the kept connection (reuse,
 * close-on-exec, fork, failures), the rate lookup and the JSON-lines file.
 * TAP on stdout.
 * The repository is $DDSHIM_ROOT or the current directory. */
#include "agent_io/traces.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <msgpack.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int n_run, n_failed;

static void ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s %d - ", cond ? "ok" : "not ok", ++n_run);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!cond)
        n_failed++;
}

static void skip(const char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void skip(const char *why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("ok %d - ", ++n_run);
    vprintf(fmt, ap);
    printf(" # SKIP %s\n", why);
    va_end(ap);
    fflush(stdout);
}

static char g_tmp[256]; /* short: paths are built from it */
static char g_root[PATH_MAX];
static char g_py[PATH_MAX + 32];
static int g_have_py;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static char *read_file(const char *p, size_t *len)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0, r;
    char *b = malloc(cap + 1);
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(b, cap * 2 + 1);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b)
        b[n] = '\0';
    if (len)
        *len = n;
    return b;
}

static int write_file(const char *p, const void *data, size_t len)
{
    FILE *f = fopen(p, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

/* ---- a growable string for the expected dumps ------------------------------ */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np)
            exit(2);
        b->p = np;
        b->cap = cap;
    }
}

/* ---- the fixture: 5 spans of 3 traces, interleaved as spans finish --------- */

#define T1 0x1111111111111111ull
#define T2 42ull
#define T3 UINT64_MAX /* above INT64_MAX: must stay unsigned everywhere */
#define START 1795341600000000000LL

static const struct span_kv M1[] = {
    {"span.kind", "server", 0},       {"component", "ddshim", 0},
    {"http.method", "GET", 0},        {"http.status_code", "200", 0},
    {"http.url", "http://h/u?x=<redacted>", 0}, {"_dd.p.dm", "-0", 0},
};
static const struct span_kv X1[] = {
    {"_dd.top_level", NULL, 1},  {"_sampling_priority_v1", NULL, 1},
    {"_dd.measured", NULL, 1},   {"process_id", NULL, 4242},
};
static const struct span_kv M2[] = {
    {"span.kind", "server", 0},
    {"error.message", "503: Service Unavailable", 0},
    {"quote\"and\\back", "line\nbreak\ttab", 0},
};
/* 0.1 and 1e300 do not survive a float32 */
static const struct span_kv X2[] = {{"ratio", NULL, 0.1}, {"tiny", NULL, -2.5e-7}};
static const struct span_kv X3[] = {{"big", NULL, 1e300}};
static const struct span_kv M4[] = {{"unicode", "caf\xc3\xa9 \xe2\x9c\x93", 0}, {"empty", "", 0}};

static const struct span_out FIX[] = {
    {T1, 101, 0, "http.request", "web", "GET /users/{param:int}", "web", START, 1500000, 0, M1, 6,
     X1, 4},
    {T2, 201, 0, "http.request", "web", "POST /login", "web", START + 10, 900, 1, M2, 3, X2, 2},
    {T1, 102, 101, "db.query", "web-db", "SELECT ?", "sql", START + 5, 1000, 0, NULL, 0, X3, 1},
    {T3, UINT64_MAX - 1, 0x8000000000000000ull, "worker", "jobs", "run", "worker", START + 20,
     123456789, 0, M4, 2, NULL, 0},
    {T2, 202, 201, "http.request", "web", "POST /login", "web", START + 11, 0, 0, M1, 6, X2, 2},
};
#define NFIX (sizeof FIX / sizeof FIX[0])
/* trace by trace, in order of first appearance; spans in input order */
static const int FIX_ORDER[] = {0, 2, 1, 4, 3};
static const int FIX_GROUP[] = {0, 0, 1, 1, 2};

/* One line a span, as the Python helper prints them. */
static void dump_span(sbuf *b, const char *group, const struct span_out *s)
{
    sb_printf(b, "SPAN %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %s|%s|%s|%s %" PRId64 " %" PRId64
                 " %d meta=",
              group, s->trace_id, s->span_id, s->parent_id, s->name, s->service, s->resource,
              s->type, s->start, s->duration, (int)s->error);
    for (size_t i = 0; i < s->nmeta; i++)
        sb_printf(b, "%s%s=%s", i ? "," : "", s->meta[i].key, s->meta[i].str);
    sb_printf(b, " metrics=");
    for (size_t i = 0; i < s->nmetrics; i++)
        sb_printf(b, "%s%s=%.17g", i ? "," : "", s->metrics[i].key, s->metrics[i].num);
    sb_printf(b, "\n");
}

static char *expected_msgpack_dump(void)
{
    sbuf b = {0};
    sb_printf(&b, "TYPES ok\n");
    for (size_t i = 0; i < NFIX; i++) {
        char g[16];
        snprintf(g, sizeof g, "%d", FIX_GROUP[i]);
        dump_span(&b, g, &FIX[FIX_ORDER[i]]);
    }
    sb_printf(&b, "TRACES 3\n");
    return b.p;
}

static char *expected_jsonl_dump(const struct span_out *spans, size_t n, int times)
{
    sbuf b = {0};
    sb_printf(&b, "TYPES ok\n");
    for (int t = 0; t < times; t++)
        for (size_t i = 0; i < n; i++)
            dump_span(&b, "L", &spans[i]);
    return b.p;
}

/* ---- the Python side -------------------------------------------------------------- */

/* Walks the msgpack bytes itself, so it sees the format byte of every value
 * (a float32 and a float64 both decode to a Python float), then decodes with
 * the msgpack package and prints one line a span. "jsonl" mode does the same
 * for a JSON-lines file. */
static const char PY_CHECK[] =
    "import json, struct, sys\n"
    "import msgpack\n"
    "KEYS = ['trace_id', 'span_id', 'parent_id', 'name', 'service', 'resource', 'type',\n"
    "        'start', 'duration', 'error', 'meta', 'metrics']\n"
    "errs = []\n"
    "def dump(group, sp):\n"
    "    print('SPAN %s %d %d %d %s|%s|%s|%s %d %d %d meta=%s metrics=%s' % (group,\n"
    "        sp['trace_id'], sp['span_id'], sp['parent_id'], sp['name'], sp['service'],\n"
    "        sp['resource'], sp['type'], sp['start'], sp['duration'], sp['error'],\n"
    "        ','.join('%s=%s' % kv for kv in sp['meta'].items()),\n"
    "        ','.join('%s=%.17g' % kv for kv in sp['metrics'].items())))\n"
    "def msgpack_mode(b):\n"
    "    pos = 0\n"
    "    def take(n):\n"
    "        nonlocal pos\n"
    "        if pos + n > len(b):\n"
    "            raise ValueError('truncated at %d' % pos)\n"
    "        r = b[pos:pos + n]\n"
    "        pos += n\n"
    "        return r\n"
    "    def be(n):\n"
    "        return int.from_bytes(take(n), 'big')\n"
    "    def item():\n"
    "        c = take(1)[0]\n"
    "        if c <= 0x7f: return ('uint', c)\n"
    "        if c >= 0xe0: return ('int', c - 0x100)\n"
    "        if c <= 0x8f: return ('map', [(item(), item()) for _ in range(c & 15)])\n"
    "        if c <= 0x9f: return ('array', [item() for _ in range(c & 15)])\n"
    "        if c <= 0xbf: return ('str', take(c & 31).decode())\n"
    "        if 0xcc <= c <= 0xcf: return ('uint', be(1 << (c - 0xcc)))\n"
    "        if 0xd0 <= c <= 0xd3:\n"
    "            return ('int', int.from_bytes(take(1 << (c - 0xd0)), 'big', signed=True))\n"
    "        if c == 0xca: return ('f32', struct.unpack('>f', take(4))[0])\n"
    "        if c == 0xcb: return ('f64', struct.unpack('>d', take(8))[0])\n"
    "        if 0xd9 <= c <= 0xdb: return ('str', take(be(1 << (c - 0xd9))).decode())\n"
    "        if c in (0xdc, 0xdd):\n"
    "            return ('array', [item() for _ in range(be(2 if c == 0xdc else 4))])\n"
    "        if c in (0xde, 0xdf):\n"
    "            return ('map', [(item(), item()) for _ in range(be(2 if c == 0xde else 4))])\n"
    "        raise ValueError('format byte 0x%02x at %d' % (c, pos - 1))\n"
    "    root = item()\n"
    "    if pos != len(b): errs.append('%d trailing bytes' % (len(b) - pos))\n"
    "    if root[0] != 'array': errs.append('top level is a %s' % root[0])\n"
    "    for tr in root[1]:\n"
    "        if tr[0] != 'array': errs.append('a trace is a %s' % tr[0]); continue\n"
    "        if not tr[1]: errs.append('empty trace')\n"
    "        ids = set()\n"
    "        for sp in tr[1]:\n"
    "            if sp[0] != 'map': errs.append('a span is a %s' % sp[0]); continue\n"
    "            if any(k[0] != 'str' for k, v in sp[1]): errs.append('non-str key')\n"
    "            d = {k[1]: v for k, v in sp[1]}\n"
    "            if len(sp[1]) != 12 or sorted(d) != sorted(KEYS):\n"
    "                errs.append('keys %r' % [k[1] for k, v in sp[1]]); continue\n"
    "            for k in ('trace_id', 'span_id', 'parent_id'):\n"
    "                if d[k][0] != 'uint': errs.append('%s is %s, not uint' % (k, d[k][0]))\n"
    "            for k in ('name', 'service', 'resource', 'type'):\n"
    "                if d[k][0] != 'str': errs.append('%s is %s, not str' % (k, d[k][0]))\n"
    "            for k in ('start', 'duration', 'error'):\n"
    "                if d[k][0] not in ('uint', 'int'): errs.append('%s is %s' % (k, d[k][0]))\n"
    "            if not -2**31 <= d['error'][1] < 2**31: errs.append('error beyond int32')\n"
    "            if d['trace_id'][1] == 0 or d['span_id'][1] == 0: errs.append('zero id')\n"
    "            ids.add(d['trace_id'][1])\n"
    "            if d['meta'][0] != 'map': errs.append('meta is %s' % d['meta'][0])\n"
    "            elif any(k[0] != 'str' or v[0] != 'str' for k, v in d['meta'][1]):\n"
    "                errs.append('meta not str->str: %r' % d['meta'][1])\n"
    "            if d['metrics'][0] != 'map': errs.append('metrics is %s' % d['metrics'][0])\n"
    "            elif any(k[0] != 'str' or v[0] != 'f64' for k, v in d['metrics'][1]):\n"
    "                errs.append('metrics not str->float64: %r' % d['metrics'][1])\n"
    "        if len(ids) > 1: errs.append('one trace, several trace_ids')\n"
    "    print('TYPES ' + ('ok' if not errs else '; '.join(errs[:4])))\n"
    "    doc = msgpack.unpackb(b, raw=False)\n"
    "    for i, tr in enumerate(doc):\n"
    "        for sp in tr: dump(str(i), sp)\n"
    "    print('TRACES %d' % len(doc))\n"
    "def jsonl_mode(b):\n"
    "    lines = b.decode('utf-8').split('\\n')\n"
    "    if lines[-1] != '': errs.append('no final newline')\n"
    "    spans = []\n"
    "    for ln in lines[:-1]:\n"
    "        sp = json.loads(ln)\n"
    "        if list(sp)[:3] != KEYS[:3] or sorted(sp) != sorted(KEYS):\n"
    "            errs.append('keys %r' % list(sp))\n"
    "        for k in ('trace_id', 'span_id', 'parent_id', 'start', 'duration', 'error'):\n"
    "            if type(sp[k]) is not int: errs.append('%s is not an integer' % k)\n"
    "        for k in ('trace_id', 'span_id', 'parent_id'):\n"
    "            if sp[k] < 0: errs.append('%s negative' % k)\n"
    "        if not all(type(v) is str for v in sp['meta'].values()): errs.append('meta')\n"
    "        if not all(type(v) is float for v in sp['metrics'].values()): errs.append('metrics')\n"
    "        spans.append(sp)\n"
    "    print('TYPES ' + ('ok' if not errs else '; '.join(errs[:4])))\n"
    "    for sp in spans: dump('L', sp)\n"
    "data = open(sys.argv[2], 'rb').read()\n"
    "try:\n"
    "    msgpack_mode(data) if sys.argv[1] == 'msgpack' else jsonl_mode(data)\n"
    "except Exception as e:\n"
    "    print('TYPES exception %s: %s' % (type(e).__name__, e))\n";

/* Runs the helper on a file; its stdout (malloc'd) or NULL. */
static char *py_check(const char *mode, const char *path)
{
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' %s '%s' 2>&1", g_py, mode, path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    sbuf b = {0};
    char chunk[4096];
    size_t n;
    sb_printf(&b, "%s", "");
    while ((n = fread(chunk, 1, sizeof chunk, p)) > 0)
        sb_printf(&b, "%.*s", (int)n, chunk);
    pclose(p);
    return b.p;
}

static void print_diff(const char *want, const char *got)
{
    printf("# want:\n");
    for (const char *l = want; l && *l;) {
        const char *e = strchr(l, '\n');
        printf("#   %.*s\n", (int)(e ? e - l : (long)strlen(l)), l);
        l = e ? e + 1 : NULL;
    }
    printf("# got:\n");
    for (const char *l = got; l && *l;) {
        const char *e = strchr(l, '\n');
        printf("#   %.*s\n", (int)(e ? e - l : (long)strlen(l)), l);
        l = e ? e + 1 : NULL;
    }
}

/* The msgpack bytes in path decode in Python to exactly the fixture. */
static void check_py_msgpack(const char *what, const char *path)
{
    if (!g_have_py) {
        skip("/usr/bin/python3 with msgpack missing", "%s: Python msgpack check", what);
        return;
    }
    char *want = expected_msgpack_dump();
    char *got = py_check("msgpack", path);
    int same = got && want && strcmp(got, want) == 0;
    ok(same, "%s: Python (msgpack + byte walk): every key's type as WIRE.md says (uint ids, "
             "str strings, int times, float64 0xcb metrics), 3 traces grouped in order",
       what);
    if (!same)
        print_diff(want, got);
    free(want);
    free(got);
}

/* ---- msgpack-c side ---------------------------------------------------------------- */

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static int str_is(const msgpack_object *o, const char *s)
{
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static int uint_is(const msgpack_object *o, uint64_t v)
{
    return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 == v;
}

static int int_is(const msgpack_object *o, int64_t v)
{
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return v >= 0 && o->via.u64 == (uint64_t)v;
    return o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 == v;
}

/* Why a decoded span differs from s, or NULL. */
static const char *span_differs(const msgpack_object *o, const struct span_out *s)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return "not a map";
    if (o->via.map.size != 12)
        return "not exactly 12 keys";
    if (!uint_is(map_get(o, "trace_id"), s->trace_id))
        return "trace_id";
    if (!uint_is(map_get(o, "span_id"), s->span_id))
        return "span_id";
    if (!uint_is(map_get(o, "parent_id"), s->parent_id))
        return "parent_id";
    if (!str_is(map_get(o, "name"), s->name ? s->name : "") ||
        !str_is(map_get(o, "service"), s->service ? s->service : "") ||
        !str_is(map_get(o, "resource"), s->resource ? s->resource : "") ||
        !str_is(map_get(o, "type"), s->type ? s->type : ""))
        return "name/service/resource/type";
    if (!int_is(map_get(o, "start"), s->start) || !int_is(map_get(o, "duration"), s->duration))
        return "start/duration";
    if (!int_is(map_get(o, "error"), s->error))
        return "error";
    const msgpack_object *meta = map_get(o, "meta"), *metrics = map_get(o, "metrics");
    if (!meta || meta->type != MSGPACK_OBJECT_MAP || meta->via.map.size != s->nmeta)
        return "meta size";
    for (size_t i = 0; i < s->nmeta; i++)
        if (!str_is(&meta->via.map.ptr[i].key, s->meta[i].key) ||
            !str_is(&meta->via.map.ptr[i].val, s->meta[i].str))
            return "meta entry";
    if (!metrics || metrics->type != MSGPACK_OBJECT_MAP || metrics->via.map.size != s->nmetrics)
        return "metrics size";
    for (size_t i = 0; i < s->nmetrics; i++) {
        const msgpack_object *v = &metrics->via.map.ptr[i].val;
        if (!str_is(&metrics->via.map.ptr[i].key, s->metrics[i].key))
            return "metric key";
        if (v->type != MSGPACK_OBJECT_FLOAT64)
            return "metric not float64";
        if (v->via.f64 != s->metrics[i].num)
            return "metric value";
    }
    return NULL;
}

/* Unpacks buf whole (nothing may trail); 0 on success. */
static int unpack_all(msgpack_unpacked *u, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    msgpack_unpacked_init(u);
    msgpack_unpack_return r = msgpack_unpack_next(u, (const char *)buf, len, &off);
    return r == MSGPACK_UNPACK_SUCCESS && off == len ? 0 : -1;
}

static void check_c_fixture(const char *what, const uint8_t *buf, size_t len)
{
    msgpack_unpacked u;
    int rc = unpack_all(&u, buf, len);
    const msgpack_object *root = &u.data;
    ok(rc == 0 && root->type == MSGPACK_OBJECT_ARRAY && root->via.array.size == 3,
       "%s: msgpack-c unpacks the whole body: an array of 3 traces", what);
    const char *why = rc == 0 && root->type == MSGPACK_OBJECT_ARRAY ? NULL : "no array";
    size_t k = 0;
    for (uint32_t t = 0; !why && t < root->via.array.size; t++) {
        const msgpack_object *tr = &root->via.array.ptr[t];
        if (tr->type != MSGPACK_OBJECT_ARRAY) {
            why = "a trace is not an array";
            break;
        }
        for (uint32_t i = 0; !why && i < tr->via.array.size; i++, k++) {
            if (k >= NFIX || FIX_GROUP[k] != (int)t) {
                why = "grouping";
                break;
            }
            why = span_differs(&tr->via.array.ptr[i], &FIX[FIX_ORDER[k]]);
        }
    }
    if (!why && k != NFIX)
        why = "span count";
    ok(!why, "%s: msgpack-c: spans grouped by trace_id in order of first appearance, every "
             "key with its value and type (%s)",
       what, why ? why : "all equal");
    msgpack_unpacked_destroy(&u);
}

/* ---- encode ---------------------------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void test_encode(void)
{
    uint8_t *buf = NULL;
    size_t len = 0, nt = 99;
    int rc = traces_encode(FIX, NFIX, &buf, &len, &nt);
    ok(rc == 0 && buf && len > 0 && nt == 3, "encode 5 spans: 0, 3 traces, %zu bytes", len);
    check_c_fixture("fixture", buf, len);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/fixture.msgpack", g_tmp);
    write_file(path, buf, len);
    check_py_msgpack("fixture", path);
    free(buf);

    /* nothing to send is still a valid body */
    buf = NULL;
    nt = 99;
    rc = traces_encode(NULL, 0, &buf, &len, &nt);
    ok(rc == 0 && len == 1 && buf && buf[0] == 0x90 && nt == 0, "no spans: an empty array (0x90)");
    free(buf);
    ok(traces_encode(NULL, 3, &buf, &len, &nt) == -1, "spans NULL with n > 0: -1");
    ok(traces_encode(FIX, NFIX, NULL, &len, &nt) == -1, "out NULL: -1");
    buf = NULL;
    ok(traces_encode(FIX, NFIX, &buf, &len, NULL) == 0 && buf, "ntraces may be NULL");
    free(buf);

    /* spans the Agent would drop, NULL strings, non-finite metrics, bad kv */
    static const struct span_kv bad_meta[] = {{"k", "v", 0}, {NULL, "x", 0}, {"nullval", NULL, 0}};
    static const struct span_kv bad_metrics[] = {
        {"a", NULL, 1.5}, {"nan", NULL, NAN}, {"inf", NULL, INFINITY}, {NULL, NULL, 2}};
    const struct span_out odd[] = {
        {0, 5, 0, "x", "s", "r", "t", 1, 1, 0, NULL, 0, NULL, 0},
        {7, 0, 0, "x", "s", "r", "t", 1, 1, 0, NULL, 0, NULL, 0},
        {7, 8, 0, NULL, NULL, NULL, NULL, -5, 2, 0, bad_meta, 3, bad_metrics, 4},
    };
    buf = NULL;
    rc = traces_encode(odd, 3, &buf, &len, &nt);
    msgpack_unpacked u;
    int urc = rc == 0 ? unpack_all(&u, buf, len) : -1;
    const msgpack_object *root = &u.data;
    int good = urc == 0 && nt == 1 && root->type == MSGPACK_OBJECT_ARRAY &&
               root->via.array.size == 1 && root->via.array.ptr[0].via.array.size == 1;
    ok(good, "zero trace_id / span_id spans left out (1 trace of 1 span left)");
    if (good) {
        const msgpack_object *sp = &root->via.array.ptr[0].via.array.ptr[0];
        const msgpack_object *meta = map_get(sp, "meta"), *metrics = map_get(sp, "metrics");
        ok(sp->via.map.size == 12 && str_is(map_get(sp, "name"), "") &&
               str_is(map_get(sp, "type"), "") && int_is(map_get(sp, "start"), -5),
           "NULL strings go as \"\", a negative start stays a signed int");
        ok(meta && meta->via.map.size == 1 && str_is(&meta->via.map.ptr[0].val, "v"),
           "meta entries with a NULL key or value left out");
        ok(metrics && metrics->via.map.size == 1 &&
               metrics->via.map.ptr[0].val.type == MSGPACK_OBJECT_FLOAT64 &&
               metrics->via.map.ptr[0].val.via.f64 == 1.5,
           "NaN, Inf and NULL-key metrics left out");
    }
    if (urc == 0)
        msgpack_unpacked_destroy(&u);
    free(buf);

    /* a busy flush: 50000 spans of 5000 traces, each trace's spans 5000 apart */
    const size_t N = 50000, NT = 5000;
    struct span_out *big = calloc(N, sizeof *big);
    static const struct span_kv bm[] = {{"span.kind", "server", 0}, {"http.method", "GET", 0}};
    static const struct span_kv bx[] = {{"_dd.top_level", NULL, 1}, {"process_id", NULL, 77}};
    for (size_t i = 0; i < N; i++) {
        big[i] = (struct span_out){mix(i % NT) | 1, i + 1, 0, "http.request", "web", "GET /",
                                   "web", START + (int64_t)i, 1000, 0, bm, 2, bx, 2};
    }
    buf = NULL;
    double t0 = now_ms();
    rc = traces_encode(big, N, &buf, &len, &nt);
    double el = now_ms() - t0;
    ok(rc == 0 && nt == NT, "50000 spans / 5000 traces encoded in %.1f ms (%zu bytes)", el, len);
    ok(el < 1000, "encoding 50000 spans takes under a second (%.1f ms): no quadratic grouping",
       el);
    urc = rc == 0 ? unpack_all(&u, buf, len) : -1;
    const char *why = urc == 0 && u.data.type == MSGPACK_OBJECT_ARRAY &&
                              u.data.via.array.size == NT
                          ? NULL
                          : "top level";
    for (size_t t = 0; !why && t < NT; t++) {
        const msgpack_object *tr = &u.data.via.array.ptr[t];
        if (tr->type != MSGPACK_OBJECT_ARRAY || tr->via.array.size != N / NT) {
            why = "trace size";
            break;
        }
        for (size_t k = 0; k < tr->via.array.size; k++) {
            const msgpack_object *sp = &tr->via.array.ptr[k];
            if (!uint_is(map_get(sp, "trace_id"), mix(t % NT) | 1) ||
                !uint_is(map_get(sp, "span_id"), t + k * NT + 1)) {
                why = "span placement";
                break;
            }
        }
    }
    ok(!why, "50000 spans: every trace holds its 10 spans, in input order, traces in order of "
             "first appearance (%s)",
       why ? why : "all placed");
    if (urc == 0)
        msgpack_unpacked_destroy(&u);
    free(buf);
    free(big);
}

/* ---- the hand encoder against msgpack-c's packer ------------------------------- */

/* What msgpack-c's packer wrote for a span before traces.c encoded by hand:
 * the reference the encoder must match byte for byte. */
static void ref_str(msgpack_packer *pk, const char *s)
{
    s = s ? s : "";
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void ref_span(msgpack_packer *pk, const struct span_out *s)
{
    size_t nmeta = 0, nmetrics = 0;
    for (size_t i = 0; s->meta && i < s->nmeta; i++)
        nmeta += s->meta[i].key && s->meta[i].str;
    for (size_t i = 0; s->metrics && i < s->nmetrics; i++)
        nmetrics += s->metrics[i].key && isfinite(s->metrics[i].num);
    msgpack_pack_map(pk, 12);
    ref_str(pk, "trace_id");
    msgpack_pack_uint64(pk, s->trace_id);
    ref_str(pk, "span_id");
    msgpack_pack_uint64(pk, s->span_id);
    ref_str(pk, "parent_id");
    msgpack_pack_uint64(pk, s->parent_id);
    ref_str(pk, "name");
    ref_str(pk, s->name);
    ref_str(pk, "service");
    ref_str(pk, s->service);
    ref_str(pk, "resource");
    ref_str(pk, s->resource);
    ref_str(pk, "type");
    ref_str(pk, s->type);
    ref_str(pk, "start");
    msgpack_pack_int64(pk, s->start);
    ref_str(pk, "duration");
    msgpack_pack_int64(pk, s->duration);
    ref_str(pk, "error");
    msgpack_pack_int32(pk, s->error);
    ref_str(pk, "meta");
    msgpack_pack_map(pk, nmeta);
    for (size_t i = 0; s->meta && i < s->nmeta; i++)
        if (s->meta[i].key && s->meta[i].str) {
            ref_str(pk, s->meta[i].key);
            ref_str(pk, s->meta[i].str);
        }
    ref_str(pk, "metrics");
    msgpack_pack_map(pk, nmetrics);
    for (size_t i = 0; s->metrics && i < s->nmetrics; i++)
        if (s->metrics[i].key && isfinite(s->metrics[i].num)) {
            ref_str(pk, s->metrics[i].key);
            msgpack_pack_double(pk, s->metrics[i].num);
        }
}

/* The whole body: traces in order of first appearance (quadratic: test sizes). */
static void ref_encode(const struct span_out *s, size_t n, msgpack_sbuffer *sb)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    uint64_t *ids = calloc(n + 1, sizeof *ids);
    size_t nt = 0;
    for (size_t i = 0; i < n; i++) {
        if (!s[i].trace_id || !s[i].span_id)
            continue;
        size_t t = 0;
        while (t < nt && ids[t] != s[i].trace_id)
            t++;
        if (t == nt)
            ids[nt++] = s[i].trace_id;
    }
    msgpack_pack_array(&pk, nt);
    for (size_t t = 0; t < nt; t++) {
        size_t c = 0;
        for (size_t i = 0; i < n; i++)
            c += s[i].span_id && s[i].trace_id == ids[t];
        msgpack_pack_array(&pk, c);
        for (size_t i = 0; i < n; i++)
            if (s[i].span_id && s[i].trace_id == ids[t])
                ref_span(&pk, &s[i]);
    }
    free(ids);
}

/* traces_encode(s) against msgpack-c's packer on ref (the same spans with
 * NUL-terminated strings). */
static int same_as_ref(const struct span_out *s, const struct span_out *ref, size_t n,
                       const char *what)
{
    msgpack_sbuffer sb;
    ref_encode(ref, n, &sb);
    uint8_t *buf = NULL;
    size_t len = 0, nt = 0;
    int rc = traces_encode(s, n, &buf, &len, &nt);
    int same = rc == 0 && len == sb.size && memcmp(buf, sb.data, len) == 0;
    if (!same) {
        size_t k = 0;
        while (rc == 0 && k < len && k < sb.size && buf[k] == (uint8_t)sb.data[k])
            k++;
        printf("# %s: %zu bytes vs msgpack-c's %zu, first difference at %zu\n", what, len, sb.size, k);
    }
    free(buf);
    msgpack_sbuffer_destroy(&sb);
    return same;
}

static void test_forms(void)
{
    /* every boundary of every msgpack form a span uses */
    static const uint64_t U[] = {1, 127, 128, 255, 256, 65535, 65536, 4294967295ull, 4294967296ull,
                                 INT64_MAX, (uint64_t)INT64_MAX + 1, UINT64_MAX};
    static const int64_t I[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295ll,
                                4294967296ll, INT64_MAX, -1, -32, -33, -128, -129, -32768,
                                -32769, INT32_MIN, (int64_t)INT32_MIN - 1, INT64_MIN};
    static const int32_t E[] = {0, 1, 127, 128, 255, 256, 65535, 65536, INT32_MAX, -1, -32,
                                -33, -128, -129, -32768, -32769, INT32_MIN};
    static const size_t L[] = {0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 255, 256, 65535, 65536};
    const size_t NL = sizeof L / sizeof L[0];
    char *text = malloc(70000);
    for (size_t i = 0; i < 70000; i++)
        text[i] = (char)('a' + i % 26);
    /* NUL-terminated strings of each length, and the same bytes unterminated
     * (lens set) as the uploader's span builder gives them */
    char **str = calloc(NL, sizeof *str);
    for (size_t i = 0; i < NL; i++) {
        str[i] = malloc(L[i] + 1);
        memcpy(str[i], text + i, L[i]);
        str[i][L[i]] = '\0';
    }
    enum { NMETA = 40, NSPANS = 60 };
    struct span_kv *meta = calloc(NMETA, sizeof *meta), *meta_l = calloc(NMETA, sizeof *meta_l);
    for (size_t i = 0; i < NMETA; i++) {
        size_t k = i % NL, v = (i * 7 + 3) % NL;
        if (L[k] > 300)
            k = i % 14;
        meta[i] = (struct span_kv){str[k], str[v], 0};
        meta_l[i] = (struct span_kv){text + k, text + v, 0, (uint32_t)L[k], (uint32_t)L[v], 1};
    }
    static const struct span_kv metrics[] = {{"a", NULL, 0.5},  {"b", NULL, -1e300},
                                             {"nan", NULL, NAN}, {"c", NULL, 4242},
                                             {"d", NULL, 0},     {"e", NULL, -0.0}};
    struct span_out *sp = calloc(NSPANS, sizeof *sp), *sp_l = calloc(NSPANS, sizeof *sp_l);
    for (size_t i = 0; i < NSPANS; i++) {
        size_t nm = (size_t[]){0, 1, 15, 16, 17, NMETA}[i % 6];
        size_t off = i % 3 ? 0 : NMETA - nm;
        sp[i] = (struct span_out){U[i % 12], U[(i + 5) % 12], i % 4 ? U[(i + 7) % 12] : 0,
                                  str[i % NL], i % 5 ? "web" : NULL, str[(i + 3) % NL], "web",
                                  I[i % 21], I[(i + 9) % 21], E[i % 17], meta + off, nm,
                                  metrics, (size_t)(i % 7)};
        sp_l[i] = sp[i];
        sp_l[i].meta = meta_l + off;
    }
    ok(same_as_ref(sp, sp, NSPANS, "boundaries"),
       "encoder: every integer, string, map and array form at each boundary is msgpack-c's, "
       "byte for byte");
    ok(same_as_ref(sp_l, sp, NSPANS, "lengths given"),
       "encoder: key/value lengths given (strings not NUL-terminated) encode the same bytes");
    /* one span per trace (the uploader's usual body) and traces of 16+ spans */
    for (size_t i = 0; i < NSPANS; i++)
        sp[i].trace_id = mix(i) | 1;
    ok(same_as_ref(sp, sp, NSPANS, "one span per trace"), "encoder: one span per trace: msgpack-c's bytes");
    for (size_t i = 0; i < NSPANS; i++)
        sp[i].trace_id = i % 3 + 1;
    ok(same_as_ref(sp, sp, NSPANS, "three traces of 20 spans"),
       "encoder: three interleaved traces of 20 spans (array16 forms): msgpack-c's bytes");

    /* the body built span by span, reset and reused, is traces_encode's body */
    traces_body b;
    traces_body_init(&b);
    int good = 1;
    for (int round = 0; round < 3; round++) {
        traces_body_reset(&b);
        size_t from = (size_t)round * 7, n = round == 2 ? 0 : NSPANS - from;
        for (size_t i = from; i < from + n; i++)
            good &= traces_body_add(&b, &sp_l[i]) == 0;
        const uint8_t *out;
        size_t len, nt, rlen, rnt;
        uint8_t *ref = NULL;
        good &= traces_body_finish(&b, &out, &len, &nt) == 0;
        good &= traces_encode(sp_l + from, n, &ref, &rlen, &rnt) == 0;
        good &= len == rlen && nt == rnt && memcmp(out, ref, len) == 0;
        free(ref);
    }
    traces_body_free(&b);
    ok(good, "traces_body: built span by span, reset and reused (and empty), the same bytes as "
             "traces_encode");

    free(sp);
    free(sp_l);
    free(meta);
    free(meta_l);
    for (size_t i = 0; i < NL; i++)
        free(str[i]);
    free(str);
    free(text);
}

/* ---- live uploads against tests/intake.py ------------------------------------------ */

typedef struct intake {
    pid_t pid;
    char out[PATH_MAX];
    char url[PATH_MAX + 16];
} intake;

static int intake_start(intake *in, const char *name, const char *mode, int use_unix,
                        const char *rates)
{
    char script[PATH_MAX + 32], pf[PATH_MAX + 32], sock[PATH_MAX + 32];
    snprintf(script, sizeof script, "%s/tests/intake.py", g_root);
    snprintf(in->out, sizeof in->out, "%s/%s", g_tmp, name);
    snprintf(pf, sizeof pf, "%s/%s.port", g_tmp, name);
    snprintf(sock, sizeof sock, "%s/%s.sock", g_tmp, name);
    const char *argv[16];
    int a = 0;
    argv[a++] = "python3";
    argv[a++] = script;
    if (use_unix) {
        argv[a++] = "--unix";
        argv[a++] = sock;
    } else {
        argv[a++] = "--port";
        argv[a++] = "0";
    }
    argv[a++] = "--port-file";
    argv[a++] = pf;
    argv[a++] = "--out";
    argv[a++] = in->out;
    argv[a++] = "--mode";
    argv[a++] = mode;
    if (rates) {
        argv[a++] = "--rates";
        argv[a++] = rates;
    }
    argv[a] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* the intake must die with us, and must not write on our TAP stdout */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        execv("/usr/bin/python3", (char *const *)argv);
        _exit(127);
    }
    in->pid = pid;
    for (int i = 0; i < 500; i++) {
        char *c = read_file(pf, NULL);
        if (c && c[0]) {
            c[strcspn(c, "\n")] = '\0';
            if (use_unix)
                snprintf(in->url, sizeof in->url, "unix://%s", c);
            else
                snprintf(in->url, sizeof in->url, "http://127.0.0.1:%s", c);
            free(c);
            return 0;
        }
        free(c);
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            in->pid = 0;
            return -1;
        }
        usleep(20000);
    }
    return -1;
}

static void intake_stop(intake *in)
{
    if (in->pid > 0) {
        kill(in->pid, SIGKILL);
        waitpid(in->pid, NULL, 0);
        in->pid = 0;
    }
}

static json_t *traces_record(const intake *in, int n)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/traces-%d.json", in->out, n);
    json_error_t e;
    return json_load_file(p, 0, &e);
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

#define CID "3f4b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b"
#define RATES "{\"service:web,env:prod\": 0.5, \"service:,env:\": 1}"

static void test_live(void)
{
    char script[PATH_MAX + 32];
    snprintf(script, sizeof script, "%s/tests/intake.py", g_root);
    if (access(script, R_OK) != 0 || access("/usr/bin/python3", X_OK) != 0) {
        skip("tests/intake.py or /usr/bin/python3 missing (set DDSHIM_ROOT)", "live uploads");
        return;
    }
    uint8_t *body = NULL;
    size_t len = 0, nt = 0;
    if (traces_encode(FIX, NFIX, &body, &len, &nt) < 0) {
        ok(0, "live: fixture encodes");
        return;
    }
    struct traces_meta m = {.lang_version = "gnu11", .tracer_version = "0.1.0",
                            .container_id = CID};

    for (int use_unix = 0; use_unix < 2; use_unix++) {
        const char *kind = use_unix ? "unix" : "http";
        intake in = {0};
        aio_target t;
        if (intake_start(&in, use_unix ? "ok-unix" : "ok-http", "ok", use_unix, RATES) < 0 ||
            aio_url_parse(in.url, &t) < 0) {
            ok(0, "%s: intake started (%s)", kind, in.url);
            intake_stop(&in);
            continue;
        }
        long status = -1;
        char *rates = (char *)"junk";
        int rc = traces_upload(&t, &m, body, len, nt, 5000, &status, &rates);
        ok(rc == 0 && status == 200, "%s: PUT /v0.4/traces returns 0 with HTTP 200 (rc %d, %ld)",
           kind, rc, status);
        ok(rates && traces_rate_for(rates, "web", "prod") == 0.5 &&
               traces_rate_for(rates, "db", "prod") == 1,
           "%s: the reply's rate_by_service comes back (%s)", kind, rates ? rates : "NULL");
        free(rates);
        json_t *rec = traces_record(&in, 1);
        json_t *h = json_object_get(rec, "headers");
        char clen[24];
        snprintf(clen, sizeof clen, "%zu", len);
        ok(rec && strcmp(jstr(rec, "method") ?: "", "PUT") == 0,
           "%s: the intake recorded a PUT", kind);
        ok(strcmp(jstr(h, "content-type") ?: "", "application/msgpack") == 0 &&
               strcmp(jstr(h, "x-datadog-trace-count") ?: "", "3") == 0 &&
               strcmp(jstr(h, "datadog-meta-lang") ?: "", "cpp") == 0 &&
               strcmp(jstr(h, "datadog-meta-lang-version") ?: "", "gnu11") == 0 &&
               strcmp(jstr(h, "datadog-meta-tracer-version") ?: "", "0.1.0") == 0 &&
               strcmp(jstr(h, "datadog-client-computed-top-level") ?: "", "yes") == 0 &&
               strcmp(jstr(h, "datadog-container-id") ?: "", CID) == 0 &&
               strcmp(jstr(h, "content-length") ?: "", clen) == 0,
           "%s: Content-Type application/msgpack, X-Datadog-Trace-Count 3, Datadog-Meta-Lang "
           "cpp, lang and tracer versions, Computed-Top-Level yes, container id, "
           "Content-Length",
           kind);
        ok(h && !json_object_get(h, "expect") && !json_object_get(h, "transfer-encoding"),
           "%s: no Expect, no chunked encoding", kind);
        size_t got_len = 0;
        char *got = read_file(jstr(rec, "body_path") ?: "/nonexistent", &got_len);
        ok(got && got_len == len && memcmp(got, body, len) == 0,
           "%s: the intake stored the body byte for byte", kind);
        free(got);
        check_py_msgpack(use_unix ? "unix: stored body" : "http: stored body",
                         jstr(rec, "body_path") ?: "/nonexistent");
        json_decref(rec);

        if (!use_unix) {
            /* no container id, no versions, and a body big enough that curl
             * would otherwise send Expect: 100-continue */
            const size_t N = 20000;
            struct span_out *many = calloc(N, sizeof *many);
            for (size_t i = 0; i < N; i++)
                many[i] = (struct span_out){mix(i % 900) | 1, i + 1, 0, "http.request", "web",
                                            "GET /a/long/enough/resource/name", "web",
                                            START, 1, 0, M1, 6, X1, 4};
            uint8_t *bb = NULL;
            size_t bl = 0, bn = 0;
            traces_encode(many, N, &bb, &bl, &bn);
            struct traces_meta m0 = {0};
            rates = NULL;
            rc = traces_upload(&t, &m0, bb, bl, bn, 10000, &status, &rates);
            rec = traces_record(&in, 2);
            h = json_object_get(rec, "headers");
            got = read_file(jstr(rec, "body_path") ?: "/nonexistent", &got_len);
            ok(rc == 0 && bl > 1024 * 1024 && got && got_len == bl && memcmp(got, bb, bl) == 0 &&
                   !json_object_get(h, "expect") && !json_object_get(h, "datadog-container-id") &&
                   strcmp(jstr(h, "x-datadog-trace-count") ?: "", "900") == 0,
               "http: a %zu-byte body of 900 traces goes up whole, without Expect or container "
               "id",
               bl);
            ok(strcmp(jstr(h, "datadog-meta-lang-version") ?: "", "unknown") == 0 &&
                   strcmp(jstr(h, "datadog-meta-tracer-version") ?: "", "unknown") == 0,
               "http: missing versions are sent as \"unknown\"");
            free(got);
            free(rates);
            json_decref(rec);
            free(bb);
            free(many);
        }
        intake_stop(&in);
    }

    intake in = {0};
    aio_target t;
    if (intake_start(&in, "empty-rates", "ok", 0, NULL) == 0 && aio_url_parse(in.url, &t) == 0) {
        long status = -1;
        char *rates = NULL;
        int rc = traces_upload(&t, &m, body, len, nt, 5000, &status, &rates);
        ok(rc == 0 && rates && strcmp(rates, "{}") == 0 &&
               traces_rate_for(rates, "web", "prod") == -1,
           "an empty rate_by_service: \"{}\" and no rate (%s)", rates ? rates : "NULL");
        free(rates);
        ok(traces_upload(&t, &m, body, len, nt, 5000, &status, NULL) == 0,
           "rates_json may be NULL");
    } else {
        ok(0, "intake without rates started");
    }
    intake_stop(&in);

    if (intake_start(&in, "e500", "500", 0, RATES) == 0 && aio_url_parse(in.url, &t) == 0) {
        long status = -1;
        char *rates = (char *)"junk";
        int rc = traces_upload(&t, &m, body, len, nt, 5000, &status, &rates);
        ok(rc == -1 && status == 500 && rates == NULL,
           "intake answering 500: -1 with status 500, no rates (%d, %ld)", rc, status);
    } else {
        ok(0, "500 intake started");
    }
    intake_stop(&in);

    if (intake_start(&in, "hang", "hang", 0, NULL) == 0 && aio_url_parse(in.url, &t) == 0) {
        const long timeout = 700;
        long status = -1;
        char *rates = (char *)"junk";
        double t0 = now_ms();
        int rc = traces_upload(&t, &m, body, len, nt, timeout, &status, &rates);
        double el = now_ms() - t0;
        ok(rc == -1 && status == 0 && rates == NULL && el >= timeout - 50 &&
               el < timeout + 1500,
           "hanging intake: upload gives up after the %ld ms timeout (%.0f ms)", timeout, el);
    } else {
        ok(0, "hanging intake started");
    }
    intake_stop(&in);

    {
        char url[PATH_MAX + 32];
        snprintf(url, sizeof url, "unix://%s/no-such.sock", g_tmp);
        aio_url_parse(url, &t);
        long status = -1;
        ok(traces_upload(&t, &m, body, len, nt, 2000, &status, NULL) == -1 && status == 0,
           "missing unix socket: -1, status 0");
        ok(traces_upload(NULL, &m, body, len, nt, 2000, &status, NULL) == -1 &&
               traces_upload(&t, &m, NULL, 0, 0, 2000, &status, NULL) == -1,
           "no target or no body: -1");
    }
    free(body);
}

/* ---- the kept connection ------------------------------------------------------------ */

/* Our sockets connected to the intake (TCP port, or Unix socket path): how
 * many, and the last one's fd and local port (0 for unix) in *fd, *lport. */
static int socks_to(int port, const char *path, int *fd, unsigned *lport)
{
    int n = 0;
    for (int f = 0; f < 1024; f++) {
        struct stat st;
        if (fstat(f, &st) != 0 || !S_ISSOCK(st.st_mode))
            continue;
        struct sockaddr_storage a;
        socklen_t al = sizeof a;
        if (getpeername(f, (struct sockaddr *)&a, &al) != 0)
            continue;
        if (port && a.ss_family == AF_INET && ntohs(((struct sockaddr_in *)&a)->sin_port) == port) {
            struct sockaddr_in l;
            socklen_t ll = sizeof l;
            getsockname(f, (struct sockaddr *)&l, &ll);
            if (lport)
                *lport = ntohs(l.sin_port);
        } else if (path && a.ss_family == AF_UNIX &&
                   strcmp(((struct sockaddr_un *)&a)->sun_path, path) == 0) {
            if (lport)
                *lport = (unsigned)st.st_ino;
        } else {
            continue;
        }
        n++;
        if (fd)
            *fd = f;
    }
    return n;
}

static int port_of(const char *url)
{
    const char *c = strrchr(url, ':');
    return c && strncmp(url, "http://", 7) == 0 ? atoi(c + 1) : 0;
}

static void test_kept(void)
{
    char script[PATH_MAX + 32];
    snprintf(script, sizeof script, "%s/tests/intake.py", g_root);
    if (access(script, R_OK) != 0 || access("/usr/bin/python3", X_OK) != 0) {
        skip("tests/intake.py or /usr/bin/python3 missing (set DDSHIM_ROOT)", "kept connection");
        return;
    }
    uint8_t *body = NULL;
    size_t len = 0, nt = 0;
    traces_encode(FIX, NFIX, &body, &len, &nt);
    struct traces_meta m = {.lang_version = "gnu11", .tracer_version = "0.1.0"};
    aio_conn *k = aio_conn_new();
    ok(k != NULL, "kept: aio_conn_new");
    if (!k) {
        free(body);
        return;
    }

    for (int use_unix = 0; use_unix < 2; use_unix++) {
        const char *kind = use_unix ? "unix" : "http";
        intake in = {0};
        aio_target t;
        if (intake_start(&in, use_unix ? "kept-unix" : "kept-http", "ok", use_unix, RATES) < 0 ||
            aio_url_parse(in.url, &t) < 0) {
            ok(0, "kept %s: intake started", kind);
            intake_stop(&in);
            continue;
        }
        int port = use_unix ? 0 : port_of(in.url);
        const char *path = use_unix ? t.socket_path : NULL;
        int good = 1, fd = -1;
        unsigned first = 0, local = 0;
        for (int i = 0; i < 4; i++) {
            long status = 0;
            char *rates = NULL;
            good &= traces_upload_conn(k, &t, &m, body, len, nt, 5000, &status, &rates) == 0 &&
                    status == 200 && rates && traces_rate_for(rates, "web", "prod") == 0.5;
            free(rates);
            good &= socks_to(port, path, &fd, &local) == 1;
            if (i == 0)
                first = local;
            good &= local == first;
        }
        ok(good, "kept %s: four uploads, each 200 with its rates, over one connection", kind);
        int all = 1;
        for (int i = 1; i <= 4; i++) {
            json_t *rec = traces_record(&in, i);
            size_t got_len = 0;
            char *got = read_file(jstr(rec, "body_path") ?: "/nonexistent", &got_len);
            json_t *h = json_object_get(rec, "headers");
            all &= got && got_len == len && memcmp(got, body, len) == 0 &&
                   strcmp(jstr(h, "x-datadog-trace-count") ?: "", "3") == 0 &&
                   strcmp(jstr(rec, "method") ?: "", "PUT") == 0 && !json_object_get(h, "expect");
            free(got);
            json_decref(rec);
        }
        ok(all, "kept %s: the intake got each PUT whole, with its headers", kind);
        ok(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC), "kept %s: the connection is close-on-exec",
           kind);

        /* fork without exec: the child does not hold (or use) the parent's connection */
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0)
            _exit(socks_to(port, path, NULL, NULL) == 0 && fcntl(fd, F_GETFD) == -1 ? 0 : 1);
        int st = -1;
        waitpid(pid, &st, 0);
        ok(pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "kept %s: a fork child has no copy of the connection's socket", kind);
        long status = 0;
        good = traces_upload_conn(k, &t, &m, body, len, nt, 5000, &status, NULL) == 0 &&
               socks_to(port, path, NULL, &local) == 1 && local == first;
        ok(good, "kept %s: the parent's connection outlives the child's copy", kind);
        intake_stop(&in);
        /* the intake is gone: the next upload fails, and no connection is kept */
        status = -1;
        int rc = traces_upload_conn(k, &t, &m, body, len, nt, 2000, &status, NULL);
        ok(rc == -1 && status == 0 && socks_to(port, path, NULL, NULL) == 0,
           "kept %s: an upload to an intake that went away fails and drops the connection (%d, %ld)",
           kind, rc, status);
    }

    intake ok1 = {0}, bad = {0};
    aio_target t1, tb;
    if (intake_start(&ok1, "kept-ok1", "ok", 0, NULL) == 0 && aio_url_parse(ok1.url, &t1) == 0 &&
        intake_start(&bad, "kept-hang", "hang", 0, NULL) == 0 && aio_url_parse(bad.url, &tb) == 0) {
        long status = 0;
        int p1 = port_of(ok1.url), pb = port_of(bad.url);
        unsigned l1 = 0, l2 = 0;
        traces_upload_conn(k, &t1, &m, body, len, nt, 5000, &status, NULL);
        socks_to(p1, NULL, NULL, &l1);
        double t0 = now_ms();
        int rc = traces_upload_conn(k, &tb, &m, body, len, nt, 600, &status, NULL);
        double el = now_ms() - t0;
        ok(rc == -1 && status == 0 && el < 2000 && socks_to(p1, NULL, NULL, NULL) == 0 &&
               socks_to(pb, NULL, NULL, NULL) == 0,
           "kept: another target drops the old connection; a timeout (%.0f ms) drops the new one",
           el);
        rc = traces_upload_conn(k, &t1, &m, body, len, nt, 5000, &status, NULL);
        ok(rc == 0 && socks_to(p1, NULL, NULL, &l2) == 1 && l2 != l1,
           "kept: after a failure the next upload starts on a new connection");
    } else {
        ok(0, "kept: intakes started");
    }
    intake_stop(&ok1);
    intake_stop(&bad);
    if (intake_start(&bad, "kept-500", "500", 0, NULL) == 0 && aio_url_parse(bad.url, &tb) == 0) {
        long status = 0;
        int rc = traces_upload_conn(k, &tb, &m, body, len, nt, 5000, &status, NULL);
        ok(rc == -1 && status == 500 && socks_to(port_of(bad.url), NULL, NULL, NULL) == 0,
           "kept: an error status drops the connection too (%d, %ld)", rc, status);
    } else {
        ok(0, "kept: 500 intake started");
    }
    intake_stop(&bad);
    aio_conn_free(k);
    aio_conn_free(NULL);
    free(body);
}

/* ---- rate lookup ------------------------------------------------------------------ */

static void test_rates(void)
{
    const char *r = "{\"service:web,env:prod\": 0.5, \"service:web,env:\": 0.25, "
                    "\"service:db,env:prod\": \"high\", \"service:q,env:prod\": 1.5, "
                    "\"service:one,env:prod\": 1, \"service:,env:\": 0.75}";
    ok(traces_rate_for(r, "web", "prod") == 0.5, "exact service/env key");
    ok(traces_rate_for(r, "web", "staging") == 0.75, "unknown env: the default key");
    ok(traces_rate_for(r, "web", NULL) == 0.25 && traces_rate_for(r, "web", "") == 0.25,
       "NULL or empty env: \"env:\"");
    ok(traces_rate_for(r, "db", "prod") == 0.75, "a non-number rate: the default key");
    ok(traces_rate_for(r, "q", "prod") == 0.75, "a rate above 1: the default key");
    ok(traces_rate_for(r, "one", "prod") == 1.0, "an integer rate 1");
    ok(traces_rate_for(r, NULL, NULL) == 0.75, "NULL service and env: the default key");
    ok(traces_rate_for("{\"service:web,env:prod\": 0}", "web", "prod") == 0, "a rate of 0");
    ok(traces_rate_for("{\"service:web,env:prod\": 0.5}", "api", "prod") == -1,
       "neither key: -1");
    ok(traces_rate_for("{}", "web", "prod") == -1, "empty object: -1");
    ok(traces_rate_for(NULL, "web", "prod") == -1, "NULL JSON: -1");
    ok(traces_rate_for("{\"service:web", "web", "prod") == -1, "broken JSON: -1");
    ok(traces_rate_for("[0.5]", "web", "prod") == -1, "not an object: -1");
    ok(traces_rate_for("{\"service:,env:\": -0.5}", "web", "prod") == -1, "a negative rate: -1");
    char longsvc[3000];
    memset(longsvc, 's', sizeof longsvc - 1);
    longsvc[sizeof longsvc - 1] = '\0';
    ok(traces_rate_for(r, longsvc, "prod") == 0.75, "a 3000-byte service name: the default key");
}

/* ---- JSON lines -------------------------------------------------------------------- */

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

static void test_jsonl(void)
{
    char dir[PATH_MAX], path[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/out/nested", g_tmp);
    snprintf(path, sizeof path, "%s/web.4242.traces.jsonl", dir);
    int rc = traces_write_jsonl(dir, "web", 4242, FIX, NFIX);
    struct stat st = {0}, dst = {0};
    int srd = stat(path, &st);
    ok(rc == 0 && srd == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0600,
       "jsonl: <dir>/web.4242.traces.jsonl created 0600 (rc %d, mode %o)", rc,
       (unsigned)(st.st_mode & 0777));
    ok(stat(dir, &dst) == 0 && (dst.st_mode & 0777) == 0700,
       "jsonl: missing directory created 0700");
    char *text = read_file(path, NULL);
    ok(text && count_lines(text) == NFIX && text[strlen(text) - 1] == '\n',
       "jsonl: one line a span, newline-terminated (%zu lines)", count_lines(text));

    /* jansson reads every line whose ids fit its signed integers */
    int jgood = 1;
    const char *l = text;
    for (size_t i = 0; text && i < NFIX; i++) {
        const char *e = strchr(l, '\n');
        if (!e) {
            jgood = 0;
            break;
        }
        if (FIX[i].trace_id <= INT64_MAX && FIX[i].span_id <= INT64_MAX &&
            FIX[i].parent_id <= INT64_MAX) {
            json_error_t err;
            json_t *o = json_loadb(l, (size_t)(e - l), 0, &err);
            json_t *meta = json_object_get(o, "meta"), *metrics = json_object_get(o, "metrics");
            json_int_t tid = json_integer_value(json_object_get(o, "trace_id"));
            json_int_t sid = json_integer_value(json_object_get(o, "span_id"));
            jgood &= json_is_object(o) && json_object_size(o) == 12 &&
                     tid == (json_int_t)FIX[i].trace_id && sid == (json_int_t)FIX[i].span_id &&
                     strcmp(jstr(o, "resource") ?: "", FIX[i].resource) == 0 &&
                     json_integer_value(json_object_get(o, "start")) == FIX[i].start &&
                     json_is_object(meta) && json_object_size(meta) == FIX[i].nmeta &&
                     json_is_object(metrics) && json_object_size(metrics) == FIX[i].nmetrics;
            for (size_t k = 0; jgood && k < FIX[i].nmetrics; k++)
                jgood &= json_is_real(json_object_get(metrics, FIX[i].metrics[k].key)) &&
                         json_real_value(json_object_get(metrics, FIX[i].metrics[k].key)) ==
                             FIX[i].metrics[k].num;
            json_decref(o);
        }
        l = e + 1;
    }
    ok(text && jgood, "jsonl: lines parse with jansson: 12 keys, ids, meta and metrics objects, "
                      "metrics as reals");
    ok(text && strstr(text, "{\"trace_id\":18446744073709551615,\"span_id\":18446744073709551614,"
                            "\"parent_id\":9223372036854775808,"),
       "jsonl: ids above INT64_MAX written as unsigned decimals");
    free(text);

    if (g_have_py) {
        char *want = expected_jsonl_dump(FIX, NFIX, 1);
        char *got = py_check("jsonl", path);
        int same = want && got && strcmp(want, got) == 0;
        ok(same, "jsonl: Python's json reads every line back to the fixture, ids exact");
        if (!same)
            print_diff(want, got);
        free(want);
        free(got);
    } else {
        skip("/usr/bin/python3 missing", "jsonl: Python check");
    }

    /* appends, never truncates */
    rc = traces_write_jsonl(dir, "web", 4242, FIX, 2);
    text = read_file(path, NULL);
    ok(rc == 0 && text && count_lines(text) == NFIX + 2,
       "jsonl: a second batch is appended (%zu lines)", count_lines(text));
    free(text);
    if (g_have_py) {
        sbuf b = {0};
        char *w1 = expected_jsonl_dump(FIX, NFIX, 1), *w2 = expected_jsonl_dump(FIX, 2, 1);
        sb_printf(&b, "%s%s", w1, w2 + strlen("TYPES ok\n"));
        char *got = py_check("jsonl", path);
        ok(got && strcmp(got, b.p) == 0, "jsonl: the first batch is intact after the append");
        free(w1);
        free(w2);
        free(b.p);
        free(got);
    }

    /* zero-id spans are left out; nothing to write creates nothing */
    const struct span_out zero[] = {{0, 1, 0, "n", "s", "r", "t", 0, 0, 0, NULL, 0, NULL, 0}};
    char p2[PATH_MAX + 64];
    snprintf(p2, sizeof p2, "%s/zero.1.traces.jsonl", dir);
    ok(traces_write_jsonl(dir, "zero", 1, zero, 1) == 0 && access(p2, F_OK) != 0,
       "jsonl: a batch with nothing to write creates no file");

    /* bytes that are not UTF-8, a service name that is not a file name */
    static const struct span_kv bad_utf8[] = {{"k\xff", "v\xfe\xc3", 0}};
    const struct span_out odd[] = {{9, 9, 0, "na\xffme", NULL, "r", "t", 0, 0, 0, bad_utf8, 1,
                                    NULL, 0}};
    snprintf(p2, sizeof p2, "%s/_._we_b.7.traces.jsonl", dir);
    rc = traces_write_jsonl(dir, "../we/b", 7, odd, 1);
    text = read_file(p2, NULL);
    json_error_t err;
    json_t *o = text ? json_loads(text, 0, &err) : NULL;
    ok(rc == 0 && o && strcmp(jstr(o, "name") ?: "", "na_me") == 0 &&
           strcmp(jstr(o, "service") ?: "x", "") == 0 &&
           strcmp(jstr(json_object_get(o, "meta"), "k_") ?: "", "v__") == 0,
       "jsonl: non-UTF-8 bytes become '_', service \"../we/b\" gives the file "
       "\"_._we_b.7.traces.jsonl\", "
       "NULL service \"\"");
    json_decref(o);
    free(text);

    /* what sits at the name must be our regular file */
    char target[PATH_MAX + 32], link[PATH_MAX + 64];
    snprintf(target, sizeof target, "%s/target", g_tmp);
    snprintf(link, sizeof link, "%s/sym.1.traces.jsonl", dir);
    write_file(target, "keep\n", 5);
    if (symlink(target, link) == 0) {
        rc = traces_write_jsonl(dir, "sym", 1, FIX, 1);
        text = read_file(target, NULL);
        ok(rc == -1 && text && strcmp(text, "keep\n") == 0,
           "jsonl: a symlink at the name is refused, its target untouched");
        free(text);
    } else {
        ok(0, "symlink: %s", strerror(errno));
    }
    char fifo[PATH_MAX + 64];
    snprintf(fifo, sizeof fifo, "%s/fifo.1.traces.jsonl", dir);
    if (mkfifo(fifo, 0600) == 0) {
        double t0 = now_ms();
        rc = traces_write_jsonl(dir, "fifo", 1, FIX, 1);
        ok(rc == -1 && now_ms() - t0 < 1000,
           "jsonl: a FIFO at the name is refused, without hanging");
    } else {
        ok(0, "mkfifo: %s", strerror(errno));
    }
    ok(traces_write_jsonl(NULL, "web", 1, FIX, 1) == -1 &&
           traces_write_jsonl("", "web", 1, FIX, 1) == -1 &&
           traces_write_jsonl(dir, "web", 1, NULL, 1) == -1,
       "jsonl: no directory or NULL spans: -1");
    snprintf(p2, sizeof p2, "%s/file", g_tmp);
    write_file(p2, "x", 1);
    ok(traces_write_jsonl(p2, "web", 1, FIX, 1) == -1, "jsonl: a directory that is a file: -1");
}

int main(void)
{
    const char *r = getenv("DDSHIM_ROOT");
    if (r && *r)
        snprintf(g_root, sizeof g_root, "%s", r);
    else if (!getcwd(g_root, sizeof g_root))
        snprintf(g_root, sizeof g_root, ".");
    snprintf(g_tmp, sizeof g_tmp, "/tmp/ddshim-test-traces-XXXXXX");
    if (!mkdtemp(g_tmp)) {
        printf("not ok 1 - mkdtemp: %s\n1..1\n", strerror(errno));
        return 1;
    }
    /* refusals log a warning by design; keep the test output to TAP */
    log_threshold = LOG_OFF;
    /* the helper prints the fixture's UTF-8 whatever the caller's locale */
    setenv("PYTHONIOENCODING", "utf-8", 1);
    snprintf(g_py, sizeof g_py, "%s/check.py", g_tmp);
    g_have_py = write_file(g_py, PY_CHECK, sizeof PY_CHECK - 1) == 0 &&
                system("/usr/bin/python3 -c 'import msgpack' >/dev/null 2>&1") == 0;

    test_encode();
    test_forms();
    test_rates();
    test_jsonl();
    test_live();
    test_kept();

    nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    printf("1..%d\n", n_run);
    return n_failed ? 1 : 0;
}
