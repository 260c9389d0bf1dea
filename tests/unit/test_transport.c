/* tests/unit/test_transport.c — agent_io/transport.c on its own: URL parsing,
 * event.json (read back with jansson), the output-directory writer, container
 * id parsing, and live uploads to tests/intake.py (the Python capture intake,
 * started here) over TCP and a Unix socket, including a refused connection,
 * a 500 and an intake that never answers. TAP on stdout.
 * The repository is $DDSHIM_ROOT or the current directory. */
#include "agent_io/transport.h"

#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Not in transport.h: transport.c exposes them for this test only. */
int aio_container_id_from_cgroup(const char *text, char *out, size_t out_len);
int aio_container_id_from_mountinfo(const char *text, char *out, size_t out_len);

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

static char g_tmp[PATH_MAX];
static char g_root[PATH_MAX];

static void path_join(char *out, size_t n, const char *a, const char *b)
{
    int w = snprintf(out, n, "%s/%s", a, b);
    if (w < 0 || (size_t)w >= n) {
        printf("Bail out! path too long: %s/%s\n", a, b);
        exit(1);
    }
}

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

/* ---- a real (if tiny) gzip'd pprof, without zlib -------------------------- */

static uint32_t crc32_buf(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

/* gzip with stored deflate blocks: valid for any gunzip, no zlib needed. */
static uint8_t *gzip_stored(const uint8_t *raw, size_t n, size_t *out_len)
{
    size_t blocks = n / 65535 + 1;
    uint8_t *o = malloc(10 + n + blocks * 5 + 8);
    if (!o)
        return NULL;
    size_t w = 0;
    static const uint8_t hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    memcpy(o, hdr, 10);
    w = 10;
    size_t off = 0;
    do {
        size_t len = n - off > 65535 ? 65535 : n - off;
        int final = off + len == n;
        o[w++] = (uint8_t)final;
        o[w++] = len & 0xff;
        o[w++] = (len >> 8) & 0xff;
        o[w++] = ~len & 0xff;
        o[w++] = (~len >> 8) & 0xff;
        memcpy(o + w, raw + off, len);
        w += len;
        off += len;
    } while (off < n);
    uint32_t crc = crc32_buf(raw, n), isz = (uint32_t)n;
    for (int i = 0; i < 4; i++)
        o[w++] = (crc >> (8 * i)) & 0xff;
    for (int i = 0; i < 4; i++)
        o[w++] = (isz >> (8 * i)) & 0xff;
    *out_len = w;
    return o;
}

/* A Profile message: string_table entries (field 6) of `each` bytes, count of
 * them, then period (field 12) = 1. */
static uint8_t *fake_pprof(size_t count, size_t each, size_t *len)
{
    size_t cap = count * (each + 8) + 16, w = 0;
    uint8_t *p = malloc(cap);
    if (!p)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        p[w++] = 0x32;
        size_t v = each;
        do {
            p[w++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
            v >>= 7;
        } while (v);
        memset(p + w, 'a' + (int)(i % 26), each);
        w += each;
    }
    p[w++] = 0x60;
    p[w++] = 0x01;
    *len = w;
    return p;
}

/* ---- URL ------------------------------------------------------------------- */

static void test_urls(void)
{
    static const struct {
        const char *url;
        int kind;
        const char *base, *sock;
    } good[] = {
        {"http://localhost:8126", AIO_URL_HTTP, "http://localhost:8126", ""},
        {"http://127.0.0.1:8126/", AIO_URL_HTTP, "http://127.0.0.1:8126", ""},
        {"http://agent.internal:9000/ignored/path?x=1", AIO_URL_HTTP, "http://agent.internal:9000",
         ""},
        {"http://dd_agent", AIO_URL_HTTP, "http://dd_agent:80", ""},
        {"http://[::1]:8126", AIO_URL_HTTP, "http://[::1]:8126", ""},
        {"HTTP://localhost:1", AIO_URL_HTTP, "http://localhost:1", ""},
        {"http://h:65535", AIO_URL_HTTP, "http://h:65535", ""},
        {"unix:///var/run/datadog/apm.socket", AIO_URL_UNIX, "http://localhost",
         "/var/run/datadog/apm.socket"},
        {"unix:/tmp/apm.sock", AIO_URL_UNIX, "http://localhost", "/tmp/apm.sock"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        aio_target t;
        memset(&t, 0x55, sizeof t);
        int rc = aio_url_parse(good[i].url, &t);
        ok(rc == 0 && t.kind == good[i].kind && strcmp(t.base, good[i].base) == 0 &&
               strcmp(t.socket_path, good[i].sock) == 0,
           "url %s -> kind %d base %s sock '%s' (got rc %d kind %d base %.40s sock '%.40s')",
           good[i].url, good[i].kind, good[i].base, good[i].sock, rc, t.kind,
           rc == 0 ? t.base : "-", rc == 0 ? t.socket_path : "-");
    }
    char longpath[200];
    memset(longpath, 'a', sizeof longpath);
    memcpy(longpath, "unix:///", 8);
    longpath[sizeof longpath - 1] = '\0';
    const char *bad[] = {
        "https://localhost:8126", "http://", "http://:8126", "http://host:", "http://host:0",
        "http://host:65536", "http://host:99999999999", "http://host:80a", "http://host:-1",
        "http://host:+80", "ftp://host", "localhost:8126", "", "unix://", "unix:", "unix://rel/sock",
        "unix:rel.sock", "unix:///", "unix:///tmp/dir/", "http://user@host:1",
        "http://host:8126 junk", "http://ho st", "http://host?x", "http://[::1", "http://[]:80",
        "http://host:8126/path with space", longpath, " http://localhost:8126",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        aio_target t;
        ok(aio_url_parse(bad[i], &t) == -1, "url '%.40s' is refused", bad[i]);
    }
    aio_target t;
    ok(aio_url_parse(NULL, &t) == -1, "url NULL is refused");
}

/* ---- event.json ------------------------------------------------------------- */

#define UUID "0c7e5a3b-9f1d-4c2e-8a6b-1d2e3f4a5b6c"
#define CID "3f4b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b"
#define T0 1795341600LL /* 2026-11-22T10:00:00Z */

static aio_profile_meta base_meta(void)
{
    aio_profile_meta m = {
        .service = "web",
        .env = "prod",
        .version = "1.2",
        .host = "myhost",
        .runtime_id = UUID,
        .tags = " team:core, owner:me  region:eu,,service:evil,\tenv:other ",
        .container_id = NULL,
        .profiler_version = "0.1.0",
        .pid = 4242,
        .seq = 3,
        .start_ns = T0 * 1000000000LL + 5,
        .end_ns = (T0 + 60) * 1000000000LL,
        .endpoint_counts_json = "{\"GET /users/{param:int}\": 12, \"junk\": \"x\", \"neg\": -1}",
    };
    return m;
}

static json_t *event_of(const aio_profile_meta *m)
{
    char *s = aio_event_json(m);
    if (!s)
        return NULL;
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    free(s);
    return j;
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void test_event_json(void)
{
    aio_profile_meta m = base_meta();
    json_t *j = event_of(&m);
    ok(j && json_is_object(j), "event.json parses back as an object");
    if (!j)
        return;
    static const char *order[] = {"attachments", "tags_profiler", "start",    "end", "family",
                                  "version",     "endpoint_counts", "internal", "info"};
    size_t i = 0;
    int order_ok = json_object_size(j) == 9;
    for (void *it = json_object_iter(j); it && i < 9; it = json_object_iter_next(j, it), i++)
        order_ok &= strcmp(json_object_iter_key(it), order[i]) == 0;
    ok(order_ok, "event.json has exactly the WIRE.md keys, in its order");
    json_t *att = json_object_get(j, "attachments");
    ok(json_is_array(att) && json_array_size(att) == 1 &&
           strcmp(json_string_value(json_array_get(att, 0)) ?: "", "profile.pprof") == 0,
       "attachments == [\"profile.pprof\"]");
    const char *want = "service:web,env:prod,version:1.2,language:native,profiler_version:0.1.0,"
                       "runtime-id:" UUID ",profile_seq:3,host:myhost,process_id:4242,"
                       "team:core,owner:me,region:eu";
    const char *tags = jstr(j, "tags_profiler");
    ok(tags && strcmp(tags, want) == 0,
       "tags_profiler in order, DD_TAGS split on commas/spaces, duplicates of our keys dropped "
       "(got %s)",
       tags ? tags : "(null)");
    ok(strcmp(jstr(j, "start") ?: "", "2026-11-22T10:00:00.000000005Z") == 0,
       "start is RFC 3339 UTC with 9 digits (%s)", jstr(j, "start"));
    ok(strcmp(jstr(j, "end") ?: "", "2026-11-22T10:01:00.000000000Z") == 0, "end (%s)",
       jstr(j, "end"));
    ok(strcmp(jstr(j, "family") ?: "", "native") == 0, "family native");
    ok(json_is_string(json_object_get(j, "version")) && strcmp(jstr(j, "version"), "4") == 0,
       "version is the string \"4\"");
    json_t *ec = json_object_get(j, "endpoint_counts");
    ok(json_is_object(ec) && json_object_size(ec) == 1 &&
           json_integer_value(json_object_get(ec, "GET /users/{param:int}")) == 12,
       "endpoint_counts kept the integer count, dropped the non-integer");
    ok(json_is_object(json_object_get(j, "internal")) &&
           json_object_size(json_object_get(j, "internal")) == 0 &&
           json_is_object(json_object_get(j, "info")) &&
           json_object_size(json_object_get(j, "info")) == 0,
       "internal and info are empty objects");
    json_decref(j);

    m.env = NULL;
    m.version = NULL;
    m.tags = "a:1 b:2\tc:3 env:staging";
    m.endpoint_counts_json = NULL;
    m.seq = 0;
    j = event_of(&m);
    tags = j ? jstr(j, "tags_profiler") : NULL;
    ok(tags && strcmp(tags, "service:web,language:native,profiler_version:0.1.0,runtime-id:" UUID
                            ",profile_seq:0,host:myhost,process_id:4242,a:1,b:2,c:3,env:staging") ==
                   0,
       "no env/version tags when unset; space-separated DD_TAGS; env from DD_TAGS kept (%s)",
       tags ? tags : "(null)");
    ok(j && !json_object_get(j, "endpoint_counts"), "endpoint_counts omitted when NULL");
    json_decref(j);

    m.service = "a,b\nc";
    m.tags = NULL;
    m.endpoint_counts_json = "{not json";
    j = event_of(&m);
    tags = j ? jstr(j, "tags_profiler") : NULL;
    ok(tags && strncmp(tags, "service:a_b_c,language:native,", 30) == 0,
       "a comma or control byte in a value cannot split the tag list (%s)", tags ? tags : "-");
    ok(j && !json_object_get(j, "endpoint_counts"), "unparsable endpoint_counts left out");
    json_decref(j);

    m.service = "caf\xff";
    j = event_of(&m);
    ok(j && jstr(j, "tags_profiler"), "invalid UTF-8 in the service still gives valid JSON");
    json_decref(j);

    m = base_meta();
    m.start_ns = -1; /* before the epoch: the fraction must not go negative */
    j = event_of(&m);
    ok(j && strcmp(jstr(j, "start") ?: "", "1969-12-31T23:59:59.999999999Z") == 0,
       "negative time formats correctly (%s)", j ? jstr(j, "start") : "-");
    json_decref(j);
}

/* ---- output directory ----------------------------------------------------------- */

static int file_mode(const char *p, int follow)
{
    struct stat st;
    if ((follow ? stat(p, &st) : lstat(p, &st)) < 0)
        return -1;
    return (int)(st.st_mode & 07777);
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

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static void test_write_file(void)
{
    char top[PATH_MAX], dir[PATH_MAX], p[PATH_MAX + 64], got[PATH_MAX + 64];
    path_join(top, sizeof top, g_tmp, "out");
    path_join(dir, sizeof dir, top, "nested");
    const uint8_t data[] = {0x1f, 0x8b, 1, 2, 3, 4};
    aio_profile_meta m = base_meta();
    mode_t old = umask(022);
    int rc = aio_write_profile_file(dir, &m, data, sizeof data, got, sizeof got);
    umask(old);
    ok(rc == 0, "aio_write_profile_file into a new nested directory");
    ok(file_mode(top, 0) == 0700 && file_mode(dir, 0) == 0700,
       "directories it created are 0700 (%o, %o)", file_mode(top, 0), file_mode(dir, 0));
    snprintf(p, sizeof p, "%s/web.4242.3.pprof.gz", dir);
    ok(strcmp(got, p) == 0, "path_out is <dir>/<service>.<pid>.<seq>.pprof.gz (%s)", got);
    size_t len = 0;
    char *c = read_file(p, &len);
    ok(c && len == sizeof data && memcmp(c, data, len) == 0, "the pprof bytes are written as given");
    free(c);
    ok(file_mode(p, 0) == 0600, "the pprof file is 0600 (%o)", file_mode(p, 0));
    snprintf(p, sizeof p, "%s/web.4242.3.event.json", dir);
    json_error_t e;
    json_t *j = json_load_file(p, 0, &e);
    ok(j && strcmp(jstr(j, "family") ?: "", "native") == 0, "event.json is written beside it");
    json_decref(j);
    ok(file_mode(p, 0) == 0600, "the event.json file is 0600 (%o)", file_mode(p, 0));
    ok(count_entries(dir) == 2, "no temporary files are left behind (%d entries)",
       count_entries(dir));

    ok(aio_write_profile_file(dir, &m, data, sizeof data, NULL, 0) == 0,
       "writing the same profile again replaces the regular files");

    m.service = ".my svc/../x";
    m.seq = 7;
    rc = aio_write_profile_file(dir, &m, data, sizeof data, got, sizeof got);
    snprintf(p, sizeof p, "%s/_my_svc_.._x.4242.7.pprof.gz", dir);
    ok(rc == 0 && strcmp(got, p) == 0 && file_mode(p, 0) == 0600,
       "the service name is sanitized into a plain, visible file name (%s)", got);

    /* a symlink planted at the target name must not redirect the write */
    char victim[PATH_MAX];
    path_join(victim, sizeof victim, g_tmp, "victim");
    FILE *f = fopen(victim, "w");
    if (f) {
        fputs("original", f);
        fclose(f);
    }
    m = base_meta();
    m.seq = 4;
    snprintf(p, sizeof p, "%s/web.4242.4.pprof.gz", dir);
    int sl = symlink(victim, p);
    rc = aio_write_profile_file(dir, &m, data, sizeof data, got, sizeof got);
    c = read_file(victim, NULL);
    struct stat st;
    ok(sl == 0 && rc == -1 && c && strcmp(c, "original") == 0 && lstat(p, &st) == 0 &&
           S_ISLNK(st.st_mode) && got[0] == '\0',
       "a symlink at the target name is refused and its target untouched");
    free(c);

    ok(aio_write_profile_file(dir, &m, data, sizeof data, got, 8) == -1,
       "a path_out buffer too small is an error");

    char ww[PATH_MAX];
    path_join(ww, sizeof ww, g_tmp, "ww");
    mkdir(ww, 0700);
    chmod(ww, 0777);
    m.seq = 5;
    ok(aio_write_profile_file(ww, &m, data, sizeof data, NULL, 0) == 0,
       "a world-writable directory of our own is accepted");
    if (geteuid() == 0) {
        char ww2[PATH_MAX];
        path_join(ww2, sizeof ww2, g_tmp, "ww-other");
        mkdir(ww2, 0777);
        chmod(ww2, 01777);
        int ch = chown(ww2, 65534, 65534);
        ok(ch == 0 && aio_write_profile_file(ww2, &m, data, sizeof data, NULL, 0) == -1 &&
               count_entries(ww2) == 0,
           "a world-writable directory owned by someone else is refused");
    } else {
        skip("needs root to chown", "a world-writable directory owned by someone else is refused");
    }
    path_join(p, sizeof p, g_tmp, "victim/sub");
    ok(aio_write_profile_file(p, &m, data, sizeof data, NULL, 0) == -1,
       "a directory path through a regular file fails cleanly");
}

/* ---- container id ----------------------------------------------------------------- */

static void test_container_id(void)
{
    static const struct {
        const char *text, *want;
    } cg[] = {
        {"12:memory:/docker/" CID "\n11:cpu:/docker/" CID "\n", CID},
        {"0::/system.slice/docker-" CID ".scope\n", CID},
        {"1:name=systemd:/kubepods.slice/kubepods-burstable.slice/"
         "kubepods-burstable-pod2e3c1d0f_7a6b_4c5d_8e9f_0a1b2c3d4e5f.slice/cri-containerd-" CID
         ".scope",
         CID},
        {"0::/kubepods/besteffort/pod2e3c1d0f-7a6b-4c5d-8e9f-0a1b2c3d4e5f/crio-" CID ".scope\n",
         CID},
        {"3:cpu:/ecs/34dc0b5e626f2c5c4c5170e34b10e765-1234567890\n",
         "34dc0b5e626f2c5c4c5170e34b10e765-1234567890"},
        {"1:name=systemd:/uuid/34dc0b5e-626f-2c5c-4c51-70e34b10e765\n",
         "34dc0b5e-626f-2c5c-4c51-70e34b10e765"},
        {"9:name=systemd:/\n4:memory:/process_api/f43958e0ebe2371d409c2ae3967f0293\n0::/\n", ""},
        {"0::/user.slice/user-1000.slice/session-2.scope\n", ""},
        {"garbage without colons\n::\n", ""},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cg / sizeof cg[0]; i++) {
        char out[65] = "x";
        aio_container_id_from_cgroup(cg[i].text, out, sizeof out);
        ok(strcmp(out, cg[i].want) == 0, "cgroup case %zu -> '%s' (got '%s')", i, cg[i].want, out);
    }
    char small[10] = "x";
    aio_container_id_from_cgroup("0::/docker/" CID "\n", small, sizeof small);
    ok(small[0] == '\0', "an id that does not fit the buffer gives \"\"");

    static const struct {
        const char *text, *want;
    } mi[] = {
        {"640 631 254:1 /var/lib/docker/containers/" CID
         "/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n",
         CID},
        {"1 2 0:3 /var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/" CID
         "/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n",
         ""},
        {"1 2 0:3 / / rw - overlay overlay rw,upperdir=/var/lib/docker/overlay2/" CID "/diff\n", ""},
    };
    for (size_t i = 0; i < sizeof mi / sizeof mi[0]; i++) {
        char out[65] = "x";
        aio_container_id_from_mountinfo(mi[i].text, out, sizeof out);
        ok(strcmp(out, mi[i].want) == 0, "mountinfo case %zu -> '%s' (got '%s')", i, mi[i].want,
           out);
    }
    char live[65];
    memset(live, 'x', sizeof live);
    aio_container_id(live, sizeof live);
    size_t n = strnlen(live, sizeof live);
    ok(n < sizeof live && (n == 0 || n >= 32), "aio_container_id on this machine: '%s'", live);
}

/* ---- live uploads against tests/intake.py --------------------------------------------- */

typedef struct intake {
    pid_t pid;
    char out[PATH_MAX];
    char url[PATH_MAX + 16];
} intake;

static int intake_start(intake *in, const char *name, const char *mode, int use_unix)
{
    char script[PATH_MAX + 32], pf[PATH_MAX + 32], sock[PATH_MAX + 32];
    snprintf(script, sizeof script, "%s/tests/intake.py", g_root);
    path_join(in->out, sizeof in->out, g_tmp, name);
    snprintf(pf, sizeof pf, "%s/%s.port", g_tmp, name);
    snprintf(sock, sizeof sock, "%s/%s.sock", g_tmp, name);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* the intake must die with us, and must not write on our TAP stdout */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        if (use_unix)
            execl("/usr/bin/python3", "python3", script, "--unix", sock, "--port-file", pf,
                  "--out", in->out, "--mode", mode, (char *)NULL);
        else
            execl("/usr/bin/python3", "python3", script, "--port", "0", "--port-file", pf, "--out",
                  in->out, "--mode", mode, (char *)NULL);
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

static json_t *upload_record(const intake *in, int n)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/upload-%d.json", in->out, n);
    json_error_t e;
    return json_load_file(p, 0, &e);
}

static int record_ok(json_t *rec)
{
    return rec && json_is_true(json_object_get(rec, "ok"));
}

static void print_errors(json_t *rec)
{
    json_t *errs = json_object_get(rec, "errors");
    for (size_t i = 0; i < json_array_size(errs); i++)
        printf("# intake: %s\n", json_string_value(json_array_get(errs, i)));
}

static void test_live(void)
{
    char script[PATH_MAX + 32];
    snprintf(script, sizeof script, "%s/tests/intake.py", g_root);
    if (access(script, R_OK) != 0 || access("/usr/bin/python3", X_OK) != 0) {
        skip("tests/intake.py or /usr/bin/python3 missing (set DDSHIM_ROOT)", "live uploads");
        return;
    }
    ok(aio_global_init() == 0 && aio_global_init() == 0, "aio_global_init, twice");

    size_t raw_len, gz_len;
    uint8_t *raw = fake_pprof(3, 10, &raw_len);
    uint8_t *gz = gzip_stored(raw, raw_len, &gz_len);
    aio_profile_meta m = base_meta();
    m.container_id = CID;

    for (int use_unix = 0; use_unix < 2; use_unix++) {
        const char *kind = use_unix ? "unix" : "http";
        intake in = {0};
        aio_target t;
        if (intake_start(&in, use_unix ? "ok-unix" : "ok-http", "ok", use_unix) < 0 ||
            aio_url_parse(in.url, &t) < 0) {
            ok(0, "%s: intake started (%s)", kind, in.url);
            intake_stop(&in);
            continue;
        }
        ok(aio_agent_probe(&t, 3000) == 0, "%s: GET /info answers 200 (%s)", kind, in.url);
        long status = -1;
        int rc = aio_upload_profile(&t, &m, gz, gz_len, 5000, &status);
        ok(rc == 0 && status == 200, "%s: upload returns 0 with HTTP 200 (rc %d, status %ld)", kind,
           rc, status);
        json_t *rec = upload_record(&in, 1);
        ok(record_ok(rec), "%s: the intake validated the upload against WIRE.md", kind);
        if (rec && !record_ok(rec))
            print_errors(rec);
        json_t *h = json_object_get(rec, "headers");
        ok(strcmp(jstr(h, "dd-evp-origin") ?: "", "ddshim") == 0 &&
               strcmp(jstr(h, "dd-evp-origin-version") ?: "", "0.1.0") == 0 &&
               strcmp(jstr(h, "datadog-container-id") ?: "", CID) == 0 &&
               !json_object_get(h, "expect"),
           "%s: origin, version and container id headers; no Expect", kind);
        size_t got_len = 0;
        char *got = read_file(jstr(rec, "pprof_path") ?: "/nonexistent", &got_len);
        ok(got && got_len == gz_len && memcmp(got, gz, gz_len) == 0,
           "%s: the intake received the attachment byte for byte", kind);
        free(got);
        json_decref(rec);

        if (!use_unix) {
            /* big enough that curl would otherwise send Expect: 100-continue */
            size_t braw_len, bgz_len;
            uint8_t *braw = fake_pprof(2200, 1000, &braw_len);
            uint8_t *bgz = gzip_stored(braw, braw_len, &bgz_len);
            rc = aio_upload_profile(&t, &m, bgz, bgz_len, 10000, &status);
            rec = upload_record(&in, 2);
            ok(rc == 0 && record_ok(rec) && !json_object_get(json_object_get(rec, "headers"), "expect"),
               "http: a %zu-byte profile goes up whole, without Expect", bgz_len);
            json_decref(rec);
            free(braw);
            free(bgz);
        }
        intake_stop(&in);
    }

    /* nobody listening: a bound, never-listening socket refuses every connect */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(s, (struct sockaddr *)&sa, &sl) == 0) {
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(sa.sin_port));
        aio_target t;
        aio_url_parse(url, &t);
        long status = -1;
        double t0 = now_ms();
        int rc = aio_upload_profile(&t, &m, gz, gz_len, 2000, &status);
        double el = now_ms() - t0;
        ok(rc == -1 && status == 0 && el < 2000, "refused connection: -1, status 0, in %.0f ms",
           el);
        ok(aio_agent_probe(&t, 2000) == -1, "refused connection: probe says no Agent");
    } else {
        ok(0, "refused connection: could not set up a bound socket");
    }
    if (s >= 0)
        close(s);
    {
        aio_target t;
        char url[PATH_MAX + 32];
        snprintf(url, sizeof url, "unix://%s/no-such.sock", g_tmp);
        aio_url_parse(url, &t);
        long status = -1;
        ok(aio_upload_profile(&t, &m, gz, gz_len, 2000, &status) == -1 && status == 0,
           "missing unix socket: -1, status 0");
    }

    intake in = {0};
    aio_target t;
    if (intake_start(&in, "e500", "500", 0) == 0 && aio_url_parse(in.url, &t) == 0) {
        long status = -1;
        int rc = aio_upload_profile(&t, &m, gz, gz_len, 5000, &status);
        ok(rc == -1 && status == 500, "intake answering 500: -1 with status 500 (%d, %ld)", rc,
           status);
    } else {
        ok(0, "500 intake started");
    }
    intake_stop(&in);

    if (intake_start(&in, "slow", "slow:0.3", 0) == 0 && aio_url_parse(in.url, &t) == 0) {
        long status = -1;
        int rc = aio_upload_profile(&t, &m, gz, gz_len, 5000, &status);
        ok(rc == 0 && status == 200, "slow intake within the timeout: 0 with 200");
    } else {
        ok(0, "slow intake started");
    }
    intake_stop(&in);

    if (intake_start(&in, "hang", "hang", 0) == 0 && aio_url_parse(in.url, &t) == 0) {
        const long timeout = 700;
        long status = -1;
        double t0 = now_ms();
        int rc = aio_upload_profile(&t, &m, gz, gz_len, timeout, &status);
        double el = now_ms() - t0;
        ok(rc == -1 && status == 0 && el >= timeout - 50 && el < timeout + 1500,
           "hanging intake: upload gives up after the %ld ms timeout (%.0f ms)", timeout, el);
        t0 = now_ms();
        rc = aio_agent_probe(&t, timeout);
        el = now_ms() - t0;
        ok(rc == -1 && el < timeout + 1500, "hanging intake: probe gives up in time (%.0f ms)",
           el);
    } else {
        ok(0, "hanging intake started");
    }
    intake_stop(&in);
    free(raw);
    free(gz);
}

int main(void)
{
    const char *r = getenv("DDSHIM_ROOT");
    if (r && *r)
        snprintf(g_root, sizeof g_root, "%s", r);
    else if (!getcwd(g_root, sizeof g_root))
        snprintf(g_root, sizeof g_root, ".");
    snprintf(g_tmp, sizeof g_tmp, "/tmp/ddshim-test-transport-XXXXXX");
    if (!mkdtemp(g_tmp)) {
        printf("not ok 1 - mkdtemp: %s\n1..1\n", strerror(errno));
        return 1;
    }
    /* refusals log a warning by design; keep the test output to TAP */
    log_threshold = LOG_OFF;

    test_urls();
    test_event_json();
    test_write_file();
    test_container_id();
    test_live();

    nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    printf("1..%d\n", n_run);
    return n_failed ? 1 : 0;
}
