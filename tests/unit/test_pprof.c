/* tests/unit/test_pprof.c — pprof builder: what we write must read back right
 * with protobuf-c and with `go tool pprof` (a reader we did not write), stay
 * consistent through allocation failures, and be fast enough. TAP on stdout. */
#define ZLIB_CONST
#include "pprof/pprof.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "profile.pb-c.h"

static int test_no, failures;

static void check(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%sok %d - ", cond ? "" : "not ", ++test_no);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!cond)
        failures++;
    fflush(stdout);
}

static void skip(const char *desc, const char *why)
{
    printf("ok %d - %s # SKIP %s\n", ++test_no, desc, why);
}

/* ---- allocation failure injection ------------------------------------- */
/* The test binary's malloc/calloc/realloc take precedence over libc's for the
 * builder, zlib and protobuf-c alike. Not under ASan, whose allocator must
 * see every allocation. */
#ifndef __SANITIZE_ADDRESS__
#define FAIL_INJECTION 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static long fail_countdown = -1; /* fail the allocation this many from now; -1 off */
static long allocs_seen;
static int fail_fired;

static int should_fail(void)
{
    if (fail_countdown < 0)
        return 0;
    allocs_seen++;
    if (fail_countdown-- > 0)
        return 0;
    fail_fired = 1; /* fail once, then behave: the retry must then succeed */
    return 1;
}

void *malloc(size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_calloc(a, n);
}

void *realloc(void *p, size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, n);
}
#endif

/* ---- the reference profile -------------------------------------------- */

static const pprof_value_type cpu_types[] = {{"cpu-time", "nanoseconds"},
                                             {"cpu-samples", "count"}};
static const pprof_value_type cpu_period_type = {"cpu-time", "nanoseconds"};
#define PERIOD 10101010
#define T0 1700000000123456789LL
#define DURATION 60000000000LL
#define BUILD_ID_EXE "4f1e2a3b5c6d7e8f90a1b2c3d4e5f60718293a4b"
#define BUILD_ID_LIB "deadbeefcafef00d0123456789abcdef01234567"
#define COMMENT "ddshim unit test profile"

struct ids {
    uint64_t map_exe, map_lib, loc_main, loc_inl, loc_lib, loc_worker, loc_again;
};

/* With retry != 0, a failed call is made once more: after an injected
 * allocation failure the builder must be left as if the call never happened,
 * so the retried build must give the very same bytes. Returns NULL when a call
 * failed (twice, with retry). */
#define CALL(ok_expr)                                                                              \
    do {                                                                                           \
        if (!(ok_expr) && !(retry && (ok_expr)))                                                   \
            goto fail;                                                                             \
    } while (0)

static pprof_builder *build_reference(struct ids *id, int retry)
{
    pprof_builder *b = NULL;
    CALL((b = pprof_new(cpu_types, 2, cpu_period_type, PERIOD)) != NULL);
    pprof_set_time(b, T0, DURATION);
    CALL((id->map_exe = pprof_add_mapping(b, 0x400000, 0x480000, 0, "/usr/bin/testprog", BUILD_ID_EXE,
                                          1, 1, 1, 1)) != 0);
    CALL((id->map_lib = pprof_add_mapping(b, 0x7f0000000000, 0x7f0000100000, 0x1000,
                                          "/usr/lib/libtest.so.1", BUILD_ID_LIB, 1, 0, 0, 0)) != 0);

    static const pprof_line main_line[] = {{"main", "main", "testprog.c", 30}};
    /* square() inlined into worker(): innermost first. */
    static const pprof_line inl_lines[] = {{"square", "square", "calc.h", 7},
                                           {"worker", "worker", "testprog.c", 21}};
    static const pprof_line worker_line[] = {{"worker", "worker", "testprog.c", 24}};
    static const pprof_line lib_line[] = {
        {"ns::Hasher::hash(int)", "_ZN2ns6Hasher4hashEi", "", 0}};
    CALL((id->loc_main = pprof_add_location(b, id->map_exe, 0x401234, main_line, 1)) != 0);
    CALL((id->loc_inl = pprof_add_location(b, id->map_exe, 0x402000, inl_lines, 2)) != 0);
    CALL((id->loc_worker = pprof_add_location(b, id->map_exe, 0x402100, worker_line, 1)) != 0);
    CALL((id->loc_lib = pprof_add_location(b, id->map_lib, 0x7f0000001230, lib_line, 1)) != 0);
    /* Same (mapping, address): must be the existing location, lines ignored. */
    CALL((id->loc_again = pprof_add_location(b, id->map_exe, 0x402000, main_line, 1)) != 0);

    const pprof_label l1[] = {{"thread id", NULL, 101, NULL},
                              {"thread name", "worker-1", 0, NULL},
                              {"process_id", NULL, 4242, NULL}};
    const pprof_label l2[] = {{"thread id", NULL, 102, NULL},
                              {"thread name", "worker-2", 0, NULL},
                              {"process_id", NULL, 4242, NULL}};
    const pprof_label l0[] = {{"thread id", NULL, 100, NULL},
                              {"thread name", "main", 0, NULL},
                              {"process_id", NULL, 4242, NULL},
                              {"alloc size", NULL, 64, "bytes"}};
    const uint64_t s1[] = {id->loc_inl, id->loc_main};
    const uint64_t s2[] = {id->loc_lib, id->loc_worker, id->loc_main};
    const uint64_t s3[] = {id->loc_main};
    const int64_t v1[] = {3 * (int64_t)PERIOD, 3}, v2[] = {2 * (int64_t)PERIOD, 2},
                  v3[] = {(int64_t)PERIOD, 1};
    CALL(pprof_add_sample(b, s1, 2, v1, l1, 3) == 0);
    CALL(pprof_add_sample(b, s2, 3, v2, l2, 3) == 0);
    CALL(pprof_add_sample(b, s3, 1, v3, l0, 4) == 0);
    CALL(pprof_add_sample(b, s1, 2, v3, l1, 3) == 0); /* shares l1's stored labels */
    CALL(pprof_add_comment(b, COMMENT) == 0);
    return b;
fail:
    pprof_free(b);
    return NULL;
}

/* ---- helpers ----------------------------------------------------------- */

static int gunzip(const uint8_t *in, size_t n, uint8_t **out, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, 15 + 16) != Z_OK)
        return -1;
    size_t cap = 4 * n + 1024, len = 0;
    uint8_t *buf = malloc(cap);
    zs.next_in = in;
    zs.avail_in = (uInt)n;
    int rc = Z_OK;
    while (buf && rc == Z_OK) {
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        zs.next_out = buf + len;
        zs.avail_out = (uInt)(cap - len);
        rc = inflate(&zs, Z_NO_FLUSH);
        len = cap - zs.avail_out;
    }
    inflateEnd(&zs);
    if (rc != Z_STREAM_END) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

static const char *str_at(const Perftools__Profiles__Profile *p, int64_t i)
{
    return i >= 0 && (size_t)i < p->n_string_table ? p->string_table[i] : "<bad index>";
}

static const Perftools__Profiles__Function *func_by_id(const Perftools__Profiles__Profile *p,
                                                        uint64_t id)
{
    for (size_t i = 0; i < p->n_function; i++)
        if (p->function[i]->id == id)
            return p->function[i];
    return NULL;
}

static const Perftools__Profiles__Location *loc_by_id(const Perftools__Profiles__Profile *p,
                                                       uint64_t id)
{
    for (size_t i = 0; i < p->n_location; i++)
        if (p->location[i]->id == id)
            return p->location[i];
    return NULL;
}

static const char *label_str(const Perftools__Profiles__Profile *p,
                             const Perftools__Profiles__Sample *s, const char *key)
{
    for (size_t i = 0; i < s->n_label; i++)
        if (!strcmp(str_at(p, s->label[i]->key), key) && s->label[i]->str)
            return str_at(p, s->label[i]->str);
    return NULL;
}

static int64_t label_num(const Perftools__Profiles__Profile *p,
                         const Perftools__Profiles__Sample *s, const char *key)
{
    for (size_t i = 0; i < s->n_label; i++)
        if (!strcmp(str_at(p, s->label[i]->key), key) && !s->label[i]->str)
            return s->label[i]->num;
    return -1;
}

static int write_file(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* Output of a shell command (stdout and stderr), NUL-terminated, malloc'd. */
static char *run(const char *cmd, int *status)
{
    FILE *f = popen(cmd, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (cap - len - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    if (buf)
        buf[len] = 0;
    *status = pclose(f);
    return buf;
}

/* The line of text containing all of the given needles, or NULL. */
static const char *line_with(const char *text, const char *a, const char *b2)
{
    for (const char *l = text; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        char buf[1024];
        if (n >= sizeof(buf))
            n = sizeof(buf) - 1;
        memcpy(buf, l, n);
        buf[n] = 0;
        if (strstr(buf, a) && (!b2 || strstr(buf, b2)))
            return l;
        l = e ? e + 1 : NULL;
    }
    return NULL;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- tests ------------------------------------------------------------- */

static void check_decoded(const Perftools__Profiles__Profile *p, const struct ids *id)
{
    check(p->n_string_table > 0 && !strcmp(p->string_table[0], ""), "string_table[0] is \"\"");
    int dup = 0;
    for (size_t i = 0; i < p->n_string_table; i++)
        for (size_t j = i + 1; j < p->n_string_table; j++)
            dup |= !strcmp(p->string_table[i], p->string_table[j]);
    check(!dup, "string table has no duplicates (%zu strings)", p->n_string_table);

    check(p->n_sample_type == 2 && !strcmp(str_at(p, p->sample_type[0]->type), "cpu-time") &&
              !strcmp(str_at(p, p->sample_type[0]->unit), "nanoseconds") &&
              !strcmp(str_at(p, p->sample_type[1]->type), "cpu-samples") &&
              !strcmp(str_at(p, p->sample_type[1]->unit), "count"),
          "sample types cpu-time/nanoseconds, cpu-samples/count");
    check(p->period_type && !strcmp(str_at(p, p->period_type->type), "cpu-time") &&
              !strcmp(str_at(p, p->period_type->unit), "nanoseconds") && p->period == PERIOD,
          "period_type cpu-time/nanoseconds, period %d", PERIOD);
    check(p->time_nanos == T0 && p->duration_nanos == DURATION, "time_nanos and duration_nanos");
    check(p->n_comment == 1 && !strcmp(str_at(p, p->comment[0]), COMMENT), "comment");
    check(p->default_sample_type == 0 && p->drop_frames == 0 && p->keep_frames == 0,
          "default_sample_type, drop_frames, keep_frames unset");

    check(p->n_mapping == 2 && p->mapping[0]->id == 1 && p->mapping[1]->id == 2 &&
              id->map_exe == 1 && id->map_lib == 2,
          "mapping ids 1 and 2");
    const Perftools__Profiles__Mapping *m0 = p->n_mapping ? p->mapping[0] : NULL;
    const Perftools__Profiles__Mapping *m1 = p->n_mapping > 1 ? p->mapping[1] : NULL;
    check(m0 && m0->memory_start == 0x400000 && m0->memory_limit == 0x480000 &&
              m0->file_offset == 0 && !strcmp(str_at(p, m0->filename), "/usr/bin/testprog") &&
              !strcmp(str_at(p, m0->build_id), BUILD_ID_EXE) && m0->has_functions &&
              m0->has_inline_frames,
          "executable mapping: range, file, build id, flags");
    check(m1 && m1->file_offset == 0x1000 && !strcmp(str_at(p, m1->build_id), BUILD_ID_LIB) &&
              m1->has_functions && !m1->has_filenames && !m1->has_line_numbers,
          "library mapping: offset, build id, flags");

    check(p->n_location == 4 && id->loc_again == id->loc_inl,
          "locations deduplicated by (mapping, address): 4 locations");
    int ids_ok = 1;
    for (size_t i = 0; i < p->n_location; i++)
        ids_ok &= p->location[i]->id == i + 1;
    for (size_t i = 0; i < p->n_function; i++)
        ids_ok &= p->function[i]->id == i + 1;
    check(ids_ok, "location and function ids are 1..n");
    check(p->n_function == 4, "functions deduplicated: 4 (worker shared by two locations)");

    const Perftools__Profiles__Location *inl = loc_by_id(p, id->loc_inl);
    const Perftools__Profiles__Function *f0 =
        inl && inl->n_line == 2 ? func_by_id(p, inl->line[0]->function_id) : NULL;
    const Perftools__Profiles__Function *f1 =
        inl && inl->n_line == 2 ? func_by_id(p, inl->line[1]->function_id) : NULL;
    check(inl && inl->mapping_id == 1 && inl->address == 0x402000 && f0 && f1 &&
              !strcmp(str_at(p, f0->name), "square") && inl->line[0]->line == 7 &&
              !strcmp(str_at(p, f0->filename), "calc.h") &&
              !strcmp(str_at(p, f1->name), "worker") && inl->line[1]->line == 21,
          "inlined location: line[0] square calc.h:7, line[1] worker testprog.c:21");
    const Perftools__Profiles__Location *lib = loc_by_id(p, id->loc_lib);
    const Perftools__Profiles__Function *fl =
        lib && lib->n_line == 1 ? func_by_id(p, lib->line[0]->function_id) : NULL;
    check(lib && lib->mapping_id == 2 && fl && !strcmp(str_at(p, fl->name), "ns::Hasher::hash(int)") &&
              !strcmp(str_at(p, fl->system_name), "_ZN2ns6Hasher4hashEi") && fl->filename == 0,
          "library function: name, system_name, empty file");

    check(p->n_sample == 4, "4 samples");
    if (p->n_sample == 4) {
        const Perftools__Profiles__Sample *s = p->sample[0], *s2 = p->sample[1],
                                          *s3 = p->sample[2], *s4 = p->sample[3];
        check(s->n_location_id == 2 && s->location_id[0] == id->loc_inl &&
                  s->location_id[1] == id->loc_main && s->n_value == 2 &&
                  s->value[0] == 3 * (int64_t)PERIOD && s->value[1] == 3,
              "sample 1: locations leaf first, values");
        check(label_num(p, s, "thread id") == 101 &&
                  label_str(p, s, "thread name") && !strcmp(label_str(p, s, "thread name"), "worker-1") &&
                  label_num(p, s, "process_id") == 4242,
              "sample 1 labels: thread id 101, thread name worker-1, process_id 4242");
        check(s2->n_location_id == 3 && label_num(p, s2, "thread id") == 102 &&
                  s3->n_label == 4 && label_num(p, s3, "alloc size") == 64 &&
                  !strcmp(str_at(p, s3->label[3]->num_unit), "bytes"),
              "samples 2, 3: stack and labels, num_unit");
        check(s4->n_label == 3 && label_num(p, s4, "thread id") == 101 && s4->value[0] == PERIOD,
              "sample 4 has sample 1's labels");
    }
}

static void test_protobuf_c(const uint8_t *gz, size_t gz_len, const struct ids *id)
{
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    check(gz_len > 18 && gz[0] == 0x1f && gz[1] == 0x8b && gz[2] == 8, "output is a gzip member");
    int rc = gunzip(gz, gz_len, &raw, &raw_len);
    check(rc == 0, "gunzip with zlib (%zu -> %zu bytes)", gz_len, raw_len);
    Perftools__Profiles__Profile *p =
        raw ? perftools__profiles__profile__unpack(NULL, raw_len, raw) : NULL;
    check(p != NULL, "protobuf-c unpacks it as perftools.profiles.Profile");
    if (p) {
        check_decoded(p, id);
        /* Our own framing of the top level must be protobuf-c's byte for byte. */
        size_t n = perftools__profiles__profile__get_packed_size(p);
        uint8_t *again = malloc(n ? n : 1);
        check(again && perftools__profiles__profile__pack(p, again) == raw_len && n == raw_len &&
                  !memcmp(again, raw, raw_len),
              "bytes equal protobuf-c's own packing of the decoded profile");
        free(again);
        perftools__profiles__profile__free_unpacked(p, NULL);
    }
    free(raw);
}

static int have_go(void)
{
    return system("command -v go >/dev/null 2>&1") == 0;
}

static void test_go_pprof(const char *dir)
{
    static const char *const descs[] = {
        "go tool pprof -raw reads the profile",
        "go pprof -raw: sample types and period",
        "go pprof -raw: sample values (samples 1 and 4 merged: 40404040, 4)",
        "go pprof -raw: inlined frame square calc.h:7 in worker's location",
        "go pprof -raw: labels thread name, thread id, process_id",
        "go pprof -raw: build ids and file names of both mappings",
        "go pprof -raw: comment",
        "go tool pprof -top -sample_index=cpu-time reads the profile",
        "go pprof -top: total 70.71ms",
        "go pprof -top: flat per function (main 10.10ms, square 40.40ms, hash 20.20ms)",
        "go pprof -top: cum worker 60.61ms (inlined square 40.40 + hash 20.20)",
    };
    if (!have_go()) {
        for (size_t i = 0; i < sizeof(descs) / sizeof(*descs); i++)
            skip(descs[i], "go not installed");
        return;
    }
    char cmd[2048];
    int st;
    /* go wants a writable HOME/GOCACHE; -symbolize=none keeps pprof from
     * looking for binaries or a symbol server. */
    const char *env = "HOME='%s' GOCACHE='%s/gocache' GOPATH='%s/gopath' PPROF_TMPDIR='%s' "
                      "GOFLAGS= GOPROXY=off";
    char envs[1024];
    snprintf(envs, sizeof(envs), env, dir, dir, dir, dir);

    snprintf(cmd, sizeof(cmd), "cd '%s' && %s go tool pprof -raw -symbolize=none cpu.pb.gz 2>&1",
             dir, envs);
    char *raw = run(cmd, &st);
    check(raw && st == 0 && strstr(raw, "Samples:"), "%s", descs[0]);
    if (!raw || st != 0)
        printf("# %s\n# output: %s\n", cmd, raw ? raw : "(none)");
    raw = raw ? raw : strdup("");
    check(strstr(raw, "cpu-time/nanoseconds") && strstr(raw, "cpu-samples/count") &&
              strstr(raw, "PeriodType: cpu-time nanoseconds") && strstr(raw, "Period: 10101010"),
          "%s", descs[1]);
    /* pprof merges samples 1 and 4 (same stack and labels). */
    check(line_with(raw, "40404040", " 4: ") && line_with(raw, "20202020", " 2: ") &&
              line_with(raw, "10101010", " 1: "),
          "%s", descs[2]);
    /* Location lines: "     2: 0x402000 M=1 square calc.h:7 s=0" then the caller
     * "             worker testprog.c:21 s=0". */
    const char *l = line_with(raw, "0x402000", "square");
    const char *next = l ? strchr(l, '\n') : NULL;
    check(l && line_with(l, "calc.h:7", NULL) == l && next &&
              line_with(next + 1, "worker testprog.c:21", NULL) == next + 1,
          "%s", descs[3]);
    check(strstr(raw, "thread name:[worker-1]") && strstr(raw, "thread name:[worker-2]") &&
              strstr(raw, "thread id:[101]") && strstr(raw, "process_id:[4242]"),
          "%s", descs[4]);
    check(line_with(raw, "/usr/bin/testprog", BUILD_ID_EXE) &&
              line_with(raw, "/usr/lib/libtest.so.1", BUILD_ID_LIB),
          "%s", descs[5]);
    check(strstr(raw, COMMENT) != NULL, "%s", descs[6]);
    free(raw);

    snprintf(cmd, sizeof(cmd),
             "cd '%s' && %s go tool pprof -top -sample_index=cpu-time -symbolize=none cpu.pb.gz 2>&1",
             dir, envs);
    char *top = run(cmd, &st);
    check(top && st == 0 && strstr(top, "flat%"), "%s", descs[7]);
    if (!top || st != 0)
        printf("# %s\n# output: %s\n", cmd, top ? top : "(none)");
    top = top ? top : strdup("");
    check(strstr(top, "70.71ms total") != NULL, "%s", descs[8]);
    check(line_with(top, "10.10ms", "main") && line_with(top, "40.40ms", "square") &&
              line_with(top, "20.20ms", "ns::Hasher::hash(int)"),
          "%s", descs[9]);
    /* worker: flat 0, cum 60.61ms, since square's samples count for it too. */
    const char *w = line_with(top, " worker", NULL);
    check(w && line_with(w, "60.61ms", NULL) == w, "%s", descs[10]);
    if (failures)
        printf("# top output:\n%s", top);
    free(top);
}

static void test_bad_input(void)
{
    check(pprof_new(NULL, 0, cpu_period_type, 1) == NULL && pprof_new(cpu_types, 0, cpu_period_type, 1) == NULL,
          "pprof_new refuses no sample types");
    pprof_builder *b = pprof_new(cpu_types, 2, cpu_period_type, PERIOD);
    static const pprof_line ln = {"f", "f", "f.c", 1};
    uint64_t m = pprof_add_mapping(b, 0x1000, 0x2000, 0, "x", NULL, 1, 1, 1, 1);
    uint64_t loc = pprof_add_location(b, m, 0x1100, &ln, 1);
    uint64_t bad0 = 0, bad9 = 9;
    int64_t v[2] = {1, 1};
    check(pprof_add_location(b, 7, 0x1100, &ln, 1) == 0, "location in an unknown mapping is refused");
    check(pprof_add_location(b, 0, 0x5, NULL, 0) == 2, "location without mapping or lines is accepted");
    check(pprof_add_sample(b, &bad0, 1, v, NULL, 0) == -EINVAL &&
              pprof_add_sample(b, &bad9, 1, v, NULL, 0) == -EINVAL,
          "sample with an unknown location id is refused (-EINVAL)");
    check(pprof_add_sample(b, &loc, 1, NULL, NULL, 0) == -EINVAL, "sample without values is refused");
    pprof_label nokey = {NULL, "x", 0, NULL};
    check(pprof_add_sample(b, &loc, 1, v, &nokey, 1) == -EINVAL, "label without key is refused");
    check(pprof_add_sample(b, &loc, 1, v, NULL, 0) == 0, "builder still usable after refusals");
    check(pprof_add_sample(NULL, &loc, 1, v, NULL, 0) < 0 && pprof_add_location(NULL, 0, 0, NULL, 0) == 0 &&
              pprof_add_mapping(NULL, 0, 0, 0, "", "", 0, 0, 0, 0) == 0 && pprof_add_comment(NULL, "") < 0,
          "NULL builder is refused, not dereferenced");
    pprof_set_time(NULL, 0, 0);
    pprof_free(NULL);
    pprof_free(b);
}

static int serialize_equal(pprof_builder *b, const uint8_t *ref, size_t ref_len)
{
    uint8_t *out = NULL;
    size_t n = 0;
    int ok = pprof_serialize_gzip(b, &out, &n) == 0 && n == ref_len && !memcmp(out, ref, n);
    free(out);
    return ok;
}

static void test_independent(const uint8_t *ref, size_t ref_len)
{
    /* Two builders filled alternately, call by call, must not see each other. */
    struct ids a, c;
    pprof_builder *x = build_reference(&a, 0);
    pprof_builder *y = pprof_new(cpu_types, 2, cpu_period_type, PERIOD);
    pprof_add_mapping(y, 1, 2, 0, "other", "ffff", 0, 0, 0, 0);
    pprof_builder *z = build_reference(&c, 0);
    check(x && z && serialize_equal(x, ref, ref_len) && serialize_equal(z, ref, ref_len),
          "builders are independent: interleaved builders give identical bytes");
    check(x && serialize_equal(x, ref, ref_len), "serializing twice gives the same bytes");
    pprof_free(x);
    pprof_free(y);
    pprof_free(z);
}

static void test_alloc_failures(const uint8_t *ref, size_t ref_len)
{
#ifdef FAIL_INJECTION
    long runs = 0, mismatches = 0, fired_in_serialize = 0;
    for (long n = 0;; n++) {
        struct ids id;
        fail_fired = 0;
        allocs_seen = 0;
        fail_countdown = n;
        pprof_builder *b = build_reference(&id, 1);
        uint8_t *out = NULL;
        size_t len = 0;
        int rc = -1;
        if (b) {
            int fired_before = fail_fired;
            rc = pprof_serialize_gzip(b, &out, &len);
            if (rc != 0) {
                if (rc < 0 && !fired_before)
                    fired_in_serialize++;
                rc = pprof_serialize_gzip(b, &out, &len);
            }
        }
        fail_countdown = -1;
        if (n == 0 && allocs_seen == 0) {
            /* Someone else's allocator answers (valgrind's, by default). */
            pprof_free(b);
            free(out);
            skip("allocation failure injection",
                 "malloc replaced (valgrind: add --soname-synonyms=somalloc=nouserintercepts)");
            skip("allocation failures inside serialization", "malloc replaced");
            return;
        }
        runs++;
        if (!b || rc != 0 || len != ref_len || memcmp(out, ref, len))
            mismatches++;
        free(out);
        pprof_free(b);
        if (!fail_fired)
            break; /* n exceeded the allocations made: every one was failed once */
    }
    check(mismatches == 0 && runs > 10,
          "each of %ld allocations failed once: call returns an error, retry gives identical bytes",
          runs - 1);
    check(fired_in_serialize > 0, "failures inside serialization (zlib, output) are reported (%ld)",
          fired_in_serialize);
#else
    skip("allocation failure injection", "not under ASan");
    skip("allocation failures inside serialization", "not under ASan");
#endif
}

/* 10,000 samples x 30 frames, two shapes of stack:
 *  "call graph": walks over a static call graph of 400 functions with 3 call
 *    sites each (the first taken most often), leaf PCs spread over 8
 *    instructions per function: a few thousand locations, as in real code;
 *  "all distinct": nearly every stack distinct and ~39,000 locations, the
 *    worst case for the tables and for gzip (the output barely compresses). */
enum { NSAMPLES = 10000, NFRAMES = 30, NFUNCS = 600, ROUNDS = 5 };
static char fnames[NFUNCS][32], ffiles[16][32];

static uint32_t lcg(uint32_t *r)
{
    *r = *r * 1103515245u + 12345u;
    return *r >> 16;
}

/* One stack, leaf first, into locs; 0 on success. */
static int make_stack(pprof_builder *b, const uint64_t *maps, int shape, uint32_t *rng,
                      uint64_t *locs)
{
    uint64_t path = 0, fn = 0; /* fn: the current function, main = 0 */
    for (int f = NFRAMES - 1; f >= 0; f--) { /* root first */
        uint64_t addr;
        int m = 0;
        if (shape == 0) {
            uint32_t r = lcg(rng) % 10;
            uint32_t site = f == 0 ? lcg(rng) % 8 : r < 7 ? 0 : r < 9 ? 1 : 2;
            addr = 0x400000 + fn * 0x100 + site * 8;
            m = fn >= 350; /* the last functions live in the library */
            if (m)
                addr += 0x7f0000000000 - 0x400000;
            uint64_t callee = (fn * 7 + site * 13 + 1 + (uint64_t)f) % 400;
            pprof_line lines[2] = {{fnames[fn], fnames[fn], ffiles[fn % 16], (int64_t)(site + 10)},
                                   {fnames[fn + 1], fnames[fn + 1], ffiles[(fn + 1) % 16], 99}};
            locs[f] = pprof_add_location(b, maps[m], addr, lines, fn % 5 == 0 ? 2 : 1);
            fn = callee;
        } else {
            uint32_t branch = lcg(rng) % (f < 10 ? 8 : 2);
            path = path * 31 + branch + 1;
            fn = path % (NFUNCS - 1);
            addr = 0x400000 + (path % 4000) * 16 + (uint64_t)f;
            m = f < 3;
            if (m)
                addr += 0x7f0000000000 - 0x400000;
            pprof_line lines[2] = {
                {fnames[fn], fnames[fn], ffiles[fn % 16], (int64_t)(path % 900) + 1},
                {fnames[fn + 1], fnames[fn + 1], ffiles[(fn + 1) % 16], (int64_t)(path % 700) + 1}};
            locs[f] = pprof_add_location(b, maps[m], addr, lines, (path & 3) == 0 ? 2 : 1);
        }
        if (!locs[f])
            return -1;
    }
    return 0;
}

static void perf_shape(const char *dir, int shape, const char *shape_name)
{
    const char *tnames[] = {"main", "worker-1", "worker-2", "io"};
    double build_ms[ROUNDS], ser_ms[ROUNDS], total_ms[ROUNDS];
    size_t gz_len = 0, mem = 0;
    int ok = 1;
    uint8_t *keep = NULL;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ms();
        pprof_builder *b = pprof_new(cpu_types, 2, cpu_period_type, PERIOD);
        uint64_t maps[2] = {
            pprof_add_mapping(b, 0x400000, 0x800000, 0, "/usr/bin/app", BUILD_ID_EXE, 1, 1, 1, 1),
            pprof_add_mapping(b, 0x7f0000000000, 0x7f0001000000, 0, "/usr/lib/libapp.so",
                              BUILD_ID_LIB, 1, 1, 1, 1)};
        uint32_t rng = 12345;
        for (int s = 0; s < NSAMPLES && ok; s++) {
            uint64_t locs[NFRAMES];
            int t = s % 4;
            pprof_label labels[3] = {{"thread id", NULL, 1000 + t, NULL},
                                     {"thread name", tnames[t], 0, NULL},
                                     {"process_id", NULL, 4242, NULL}};
            int64_t v[2] = {PERIOD, 1};
            ok &= make_stack(b, maps, shape, &rng, locs) == 0 &&
                  pprof_add_sample(b, locs, NFRAMES, v, labels, 3) == 0;
        }
        double t1 = now_ms();
        uint8_t *out = NULL;
        size_t n = 0;
        ok &= pprof_serialize_gzip(b, &out, &n) == 0;
        double t2 = now_ms();
        build_ms[r] = t1 - t0;
        ser_ms[r] = t2 - t1;
        total_ms[r] = t2 - t0;
        gz_len = n;
        mem = pprof_memory(b);
        free(keep);
        keep = out;
        pprof_free(b);
    }
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    Perftools__Profiles__Profile *p = NULL;
    if (keep && gunzip(keep, gz_len, &raw, &raw_len) == 0)
        p = perftools__profiles__profile__unpack(NULL, raw_len, raw);
    check(ok && p && p->n_sample == NSAMPLES && p->sample[NSAMPLES - 1]->n_location_id == NFRAMES,
          "%s: 10,000 samples x 30 frames build, serialize and decode", shape_name);
    qsort(build_ms, ROUNDS, sizeof(double), cmp_double);
    qsort(ser_ms, ROUNDS, sizeof(double), cmp_double);
    qsort(total_ms, ROUNDS, sizeof(double), cmp_double);
    printf("# perf %s: %d samples x %d frames: %zu locations, %zu functions, %zu strings\n",
           shape_name, NSAMPLES, NFRAMES, p ? p->n_location : 0, p ? p->n_function : 0,
           p ? p->n_string_table : 0);
    printf("# perf %s: build+serialize median %.1f ms (min %.1f) = build %.1f + serialize/gzip "
           "%.1f (medians of %d)\n",
           shape_name, total_ms[ROUNDS / 2], total_ms[0], build_ms[ROUNDS / 2], ser_ms[ROUNDS / 2],
           ROUNDS);
    printf("# perf %s: packed %zu bytes, gzip'd %zu bytes; builder holds %zu bytes\n", shape_name,
           raw_len, gz_len, mem);
    if (p)
        perftools__profiles__profile__free_unpacked(p, NULL);
    free(raw);

    char path[600], desc[128];
    snprintf(path, sizeof(path), "%s/big%d.pb.gz", dir, shape);
    snprintf(desc, sizeof(desc), "%s: go tool pprof -top reads it, 101.01s total", shape_name);
    if (!have_go()) {
        skip(desc, "go not installed");
    } else if (keep && write_file(path, keep, gz_len) == 0) {
        char cmd[1400];
        int st;
        snprintf(cmd, sizeof(cmd),
                 "cd '%s' && HOME='%s' GOCACHE='%s/gocache' go tool pprof -top "
                 "-sample_index=cpu-time -symbolize=none big%d.pb.gz 2>&1",
                 dir, dir, dir, shape);
        char *out = run(cmd, &st);
        int good = out && st == 0 && strstr(out, "101.01s total");
        check(good, "%s", desc);
        if (!good)
            printf("# %.400s\n", out ? out : "(no output)");
        free(out);
        unlink(path);
    } else {
        check(0, "%s (could not write %s)", desc, path);
    }
    free(keep);
}

static void test_perf(const char *dir)
{
    for (int i = 0; i < NFUNCS; i++)
        snprintf(fnames[i], sizeof(fnames[i]), "module%d::function_%d", i % 17, i);
    for (int i = 0; i < 16; i++)
        snprintf(ffiles[i], sizeof(ffiles[i]), "/src/project/file%d.c", i);
    perf_shape(dir, 0, "call graph");
    perf_shape(dir, 1, "all distinct");
}

int main(void)
{
    char tmpl[512];
    const char *tmp = getenv("TMPDIR");
    snprintf(tmpl, sizeof(tmpl), "%s/test_pprof.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    char *dir = mkdtemp(tmpl);
    if (!dir) {
        printf("not ok 1 - mkdtemp\n1..1\n");
        return 1;
    }

    struct ids id;
    pprof_builder *b = build_reference(&id, 0);
    check(b != NULL, "reference profile built");
    uint8_t *gz = NULL;
    size_t gz_len = 0;
    int rc = b ? pprof_serialize_gzip(b, &gz, &gz_len) : -1;
    check(rc == 0 && gz, "serialized and gzip'd (%zu bytes)", gz_len);
    pprof_free(b);

    char path[600];
    snprintf(path, sizeof(path), "%s/cpu.pb.gz", dir);
    check(gz && write_file(path, gz, gz_len) == 0, "written to %s", path);

    if (gz) {
        test_protobuf_c(gz, gz_len, &id);
        test_go_pprof(dir);
        test_independent(gz, gz_len);
        test_alloc_failures(gz, gz_len);
    }
    test_bad_input();
    test_perf(dir);

    free(gz);
    if (failures == 0) {
        /* Kept on failure, for a look with go tool pprof. */
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            printf("# could not remove %s\n", dir);
    } else {
        printf("# profile kept in %s\n", dir);
    }
    printf("1..%d\n", test_no);
    return failures ? 1 : 0;
}
