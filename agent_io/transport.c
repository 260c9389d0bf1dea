/* agent_io/transport.c — everything that leaves the process: parsing
 * DD_TRACE_AGENT_URL, building event.json, the multipart profile upload and the
 * /info probe (libcurl easy interface, over TCP or a Unix socket), the
 * container id, and the write of a profile into the local output directory.
 * traces.c reuses its libcurl handle settings and output-directory checks
 * through the aio_ helpers at the end of transport.h.
 *
 * Threads: only the shim's uploader thread calls in (it runs with every signal
 * blocked). Nothing here is async-signal-safe and nothing here may be called
 * from signal context or from a host thread: it allocates, takes libcurl's
 * locks and blocks on the network for up to the caller's timeout.
 *
 * We run inside someone else's process, which shapes the libcurl settings:
 * CURLOPT_NOSIGNAL so libcurl never touches SIGPIPE/SIGALRM dispositions,
 * sockets opened close-on-exec so a host fork+exec does not inherit them, no
 * proxy from the environment (the Agent is local; a host's http_proxy is for
 * the host), plain http only, no redirects, and a hard total timeout. */
#include "agent_io/transport.h"

#include "common/log.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define AIO_PROFILE_PATH "/profiling/v1/input"
#define AIO_INFO_PATH "/info"

/* ---- growable string (for tags_profiler) --------------------------------- */

typedef struct aio_sbuf {
    char *p;
    size_t len, cap;
    int oom;
} aio_sbuf;

static void sb_putn(aio_sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(aio_sbuf *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

/* A tag value goes into a comma-separated list: a comma or a control byte in
 * it would split or corrupt the list, so those become '_'. */
static void sb_put_tagval(aio_sbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char o = (c == ',' || c < 0x20 || c == 0x7f) ? '_' : (char)c;
        sb_putn(b, &o, 1);
    }
}

static void sb_tag(aio_sbuf *b, const char *key, const char *val)
{
    if (b->len)
        sb_putn(b, ",", 1);
    sb_puts(b, key);
    sb_putn(b, ":", 1);
    sb_put_tagval(b, val, strlen(val));
}

static void sb_tag_i64(aio_sbuf *b, const char *key, int64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%" PRId64, v);
    sb_tag(b, key, num);
}

static void sb_tag_u64(aio_sbuf *b, const char *key, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%" PRIu64, v);
    sb_tag(b, key, num);
}

/* ---- URL ------------------------------------------------------------------ */

/* ASCII only: <ctype.h> follows the host's setlocale(), which is not ours. */
static int a_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int a_alnum(char c)
{
    return a_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int a_xdigit(char c)
{
    return a_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int host_char(char c)
{
    return a_alnum(c) || c == '.' || c == '-' || c == '_';
}

static int ipv6_char(char c)
{
    return a_xdigit(c) || c == ':' || c == '.' || c == '%';
}

/* Printable, no spaces: anything else in a URL is a typo or an injection. */
static int url_tail_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return 0;
    return 1;
}

static int parse_unix(const char *p, aio_target *out)
{
    /* "unix:///abs" and "unix:/abs"; "unix://rel" would read as a host. */
    if (p[0] == '/' && p[1] == '/')
        p += 2;
    if (p[0] != '/')
        return -1;
    size_t n = strlen(p);
    /* connect(2) takes the path in sun_path: a longer one can never work. */
    if (n < 2 || n >= sizeof(((struct sockaddr_un *)0)->sun_path) || n >= sizeof out->socket_path)
        return -1;
    if (p[n - 1] == '/' || !url_tail_ok(p))
        return -1;
    memcpy(out->socket_path, p, n + 1);
    snprintf(out->base, sizeof out->base, "http://localhost");
    out->kind = AIO_URL_UNIX;
    return 0;
}

static int parse_http(const char *p, aio_target *out)
{
    const char *h = p, *he;
    if (*p == '[') {
        p++;
        while (ipv6_char(*p))
            p++;
        if (*p != ']' || p == h + 1)
            return -1;
        p++;
        he = p;
    } else {
        while (host_char(*p))
            p++;
        he = p;
        if (he == h)
            return -1;
    }
    size_t hlen = (size_t)(he - h);
    if (hlen > 253)
        return -1;
    unsigned long port = 80; /* URL semantics; DD_TRACE_AGENT_URL users give the port */
    if (*p == ':') {
        p++;
        const char *ds = p;
        port = 0;
        while (a_digit(*p) && p - ds < 6)
            port = port * 10 + (unsigned long)(*p++ - '0');
        if (p == ds || a_digit(*p) || port == 0 || port > 65535)
            return -1;
    }
    if (*p != '\0' && *p != '/')
        return -1;
    if (!url_tail_ok(p))
        return -1;
    int n = snprintf(out->base, sizeof out->base, "http://%.*s:%lu", (int)hlen, h, port);
    if (n < 0 || (size_t)n >= sizeof out->base)
        return -1;
    out->kind = AIO_URL_HTTP;
    return 0;
}

int aio_url_parse(const char *url, aio_target *out)
{
    if (!url || !out)
        return -1;
    memset(out, 0, sizeof *out);
    int rc = -1;
    if (strncasecmp(url, "unix:", 5) == 0)
        rc = parse_unix(url + 5, out);
    else if (strncasecmp(url, "http://", 7) == 0)
        rc = parse_http(url + 7, out);
    /* https and everything else: the Agent listens in plain HTTP locally. */
    if (rc < 0)
        memset(out, 0, sizeof *out);
    return rc;
}

/* ---- event.json ------------------------------------------------------------ */

static void fmt_rfc3339(int64_t ns, char *out, size_t out_len)
{
    int64_t sec = ns / 1000000000, frac = ns % 1000000000;
    if (frac < 0) {
        frac += 1000000000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    size_t n = 0;
    if (gmtime_r(&t, &tm))
        n = strftime(out, out_len, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0) {
        snprintf(out, out_len, "1970-01-01T00:00:00.000000000Z");
        return;
    }
    snprintf(out + n, out_len - n, ".%09" PRId64 "Z", frac);
}

/* Keys tags_profiler already carries from meta: a DD_TAGS duplicate would give
 * the profile two services (or two hosts...) at the intake. */
static int reserved_key(const aio_profile_meta *m, const char *tag, size_t n)
{
    static const char *const always[] = {"service",     "language", "profiler_version",
                                         "runtime-id",  "profile_seq", "host",
                                         "process_id"};
    const char *colon = memchr(tag, ':', n);
    size_t klen = colon ? (size_t)(colon - tag) : n;
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++)
        if (strlen(always[i]) == klen && memcmp(always[i], tag, klen) == 0)
            return 1;
    if (m->env && *m->env && klen == 3 && memcmp(tag, "env", 3) == 0)
        return 1;
    if (m->version && *m->version && klen == 7 && memcmp(tag, "version", 7) == 0)
        return 1;
    return 0;
}

static int dd_tags_sep(char c)
{
    return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void append_dd_tags(aio_sbuf *b, const aio_profile_meta *m)
{
    const char *s = m->tags;
    if (!s)
        return;
    while (*s) {
        while (*s && dd_tags_sep(*s))
            s++;
        const char *t = s;
        while (*s && !dd_tags_sep(*s))
            s++;
        size_t n = (size_t)(s - t);
        if (n == 0 || t[0] == ':' || reserved_key(m, t, n))
            continue;
        sb_putn(b, ",", 1);
        sb_put_tagval(b, t, n);
    }
}

static char *build_tags(const aio_profile_meta *m)
{
    aio_sbuf b = {0};
    sb_tag(&b, "service", m->service && *m->service ? m->service : "unnamed-native-app");
    if (m->env && *m->env)
        sb_tag(&b, "env", m->env);
    if (m->version && *m->version)
        sb_tag(&b, "version", m->version);
    sb_tag(&b, "language", "native");
    sb_tag(&b, "profiler_version", m->profiler_version ? m->profiler_version : "unknown");
    if (m->runtime_id && *m->runtime_id)
        sb_tag(&b, "runtime-id", m->runtime_id);
    sb_tag_u64(&b, "profile_seq", m->seq);
    if (m->host && *m->host)
        sb_tag(&b, "host", m->host);
    sb_tag_i64(&b, "process_id", m->pid);
    append_dd_tags(&b, m);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* json_string() refuses invalid UTF-8 (a service name from argv[0] may be
 * anything): fall back to replacing the non-ASCII bytes. */
json_t *aio_json_str_lossy(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *c = strdup(s);
    if (!c)
        return NULL;
    for (char *p = c; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '_';
    j = json_string(c);
    free(c);
    return j;
}

/* The counts come from our own aggregation, but a value that is not a count
 * would make the intake drop the whole profile: keep only integers >= 0. */
static json_t *endpoint_counts(const char *text)
{
    json_error_t err;
    json_t *in = json_loads(text, 0, &err);
    if (!in || !json_is_object(in)) {
        log_warn("endpoint counts are not a JSON object (%s); left out of the profile",
                 in ? "wrong type" : err.text);
        json_decref(in);
        return NULL;
    }
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(in, tmp, k, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            json_object_del(in, k);
    }
    return in;
}

char *aio_event_json(const aio_profile_meta *meta)
{
    if (!meta)
        return NULL;
    char *tags = build_tags(meta);
    if (!tags)
        return NULL;
    char start[48], end[48];
    fmt_rfc3339(meta->start_ns, start, sizeof start);
    fmt_rfc3339(meta->end_ns, end, sizeof end);

    json_t *root = json_object();
    json_t *att = json_array();
    int bad = !root || !att;
    bad |= json_array_append_new(att, json_string("profile.pprof")) != 0;
    /* set_new steals the reference even on failure, so no leak on the error path */
    bad |= json_object_set_new(root, "attachments", att) != 0;
    bad |= json_object_set_new(root, "tags_profiler", aio_json_str_lossy(tags)) != 0;
    bad |= json_object_set_new(root, "start", json_string(start)) != 0;
    bad |= json_object_set_new(root, "end", json_string(end)) != 0;
    bad |= json_object_set_new(root, "family", json_string("native")) != 0;
    bad |= json_object_set_new(root, "version", json_string("4")) != 0;
    if (meta->endpoint_counts_json) {
        json_t *ec = endpoint_counts(meta->endpoint_counts_json);
        if (ec)
            bad |= json_object_set_new(root, "endpoint_counts", ec) != 0;
    }
    bad |= json_object_set_new(root, "internal", json_object()) != 0;
    bad |= json_object_set_new(root, "info", json_object()) != 0;
    free(tags);

    char *out = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}

/* ---- libcurl ---------------------------------------------------------------- */

static pthread_once_t aio_curl_once = PTHREAD_ONCE_INIT;
static int aio_curl_rc = -1;

/* OpenSSL (libcurl's TLS and random backend) registers an atexit cleanup on
 * its first initialisation. Registered after the shim's own exit flush, it
 * would run first and leave the final upload touching freed OpenSSL state.
 * Initialising it first with OPENSSL_INIT_NO_ATEXIT keeps it from doing so. */
/* libcrypto's OPENSSL_init_crypto, when the process has libcrypto loaded. */
static int (*crypto_init(void))(uint64_t, const void *)
{
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_NOLOAD);
    if (!h)
        return NULL;
    int (*init)(uint64_t, const void *) = (int (*)(uint64_t, const void *))dlsym(h, "OPENSSL_init_crypto");
    dlclose(h); /* RTLD_NOLOAD: only drops the reference just taken */
    return init;
}

/* True once the process's OpenSSL has run its cleanup (a host's OpenSSL
 * registers it with atexit; at the host's exit it runs before the shim's final
 * delivery). libcurl must not be initialised or used then: it would re-enter
 * freed OpenSSL state. OPENSSL_INIT_BASE_ONLY answers without touching
 * anything when OpenSSL is stopped. */
static int openssl_stopped(void)
{
    int (*init)(uint64_t, const void *) = crypto_init();
    return init && init(0x00040000ull /* OPENSSL_INIT_BASE_ONLY */, NULL) == 0;
}

/* OpenSSL (libcurl's TLS and random backend) registers an atexit cleanup on
 * its first initialisation. Registered after the shim's own exit flush, it
 * would run first. Initialising it first with OPENSSL_INIT_NO_ATEXIT keeps it
 * from registering one. */
static void openssl_no_atexit(void)
{
    int (*init)(uint64_t, const void *) = crypto_init();
    if (init)
        init(0x00080000ull /* OPENSSL_INIT_NO_ATEXIT */, NULL);
}

/* curl_lazy.c's loader, in the agent library (weak: unit tests link libcurl). */
__attribute__((weak)) int aio_curl_load(void);

static void curl_init_once(void)
{
    /* libcurl (and with it libcrypto) loaded first, so that the OpenSSL calls
     * below find the libcrypto libcurl will use. */
    if (aio_curl_load && aio_curl_load() != 0) {
        aio_curl_rc = -1;
        return;
    }
    if (openssl_stopped()) {
        log_info("the program's OpenSSL has shut down (exit in progress): no uploads to the Agent");
        aio_curl_rc = -1;
        return;
    }
    openssl_no_atexit();
    aio_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
    if (aio_curl_rc < 0)
        log_error("libcurl initialisation failed: no uploads to the Agent");
}

int aio_global_init(void)
{
    pthread_once(&aio_curl_once, curl_init_once);
    /* Also after a successful init: the host's OpenSSL may stop later. */
    if (aio_curl_rc == 0 && openssl_stopped())
        return -1;
    return aio_curl_rc;
}

static size_t discard_body(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* libcurl does not open its sockets close-on-exec: without this a host that
 * forks and execs mid-upload would hand our connection to its child. */
static curl_socket_t open_socket_cloexec(void *clientp, curlsocktype purpose,
                                         struct curl_sockaddr *a)
{
    (void)clientp;
    (void)purpose;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

CURL *aio_easy_new(const aio_target *t, const char *path, long timeout_ms, char *errbuf)
{
    if (!t || (t->kind != AIO_URL_HTTP && t->kind != AIO_URL_UNIX) || aio_global_init() < 0)
        return NULL;
    char url[sizeof t->base + 64];
    int n = snprintf(url, sizeof url, "%s%s", t->base, path);
    if (n < 0 || (size_t)n >= sizeof url)
        return NULL;
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    /* 0 means "no timeout" to libcurl: never let a caller's zero mean forever. */
    if (timeout_ms <= 0)
        timeout_ms = 1;
    errbuf[0] = '\0';
    int bad = 0;
    bad |= curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_NOPROXY, "*") != CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500
    bad |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http") != CURLE_OK;
#else
    bad |= curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTP) != CURLE_OK;
#endif
    bad |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket_cloexec) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_USERAGENT, "ddshim") != CURLE_OK;
    if (t->kind == AIO_URL_UNIX)
        bad |= curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, t->socket_path) != CURLE_OK;
    if (bad) {
        curl_easy_cleanup(c);
        return NULL;
    }
    return c;
}

static const char *target_name(const aio_target *t)
{
    return t->kind == AIO_URL_UNIX ? t->socket_path : t->base;
}

/* Runs the transfer; returns the HTTP status, 0 when nothing came back. */
long aio_easy_run(CURL *c, const aio_target *t, const char *what, const char *errbuf)
{
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    if (rc != CURLE_OK) {
        log_debug("%s to %s failed: %s", what, target_name(t),
                  errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return 0;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299)
        log_debug("%s to %s: HTTP %ld", what, target_name(t), status);
    return status;
}

/* ---- a kept connection (trace uploads) -------------------------------------
 * Traces go out every second, and sooner when spans pile up on a busy server:
 * a handle per request meant a TCP connection per request (connect, the
 * Agent's accept, a new socket each time). One easy handle kept across
 * requests keeps one keep-alive connection in its connection cache. On reuse
 * only what belongs to one request is set again (timeouts, then the caller's
 * body, headers and reply sink); everything aio_easy_new set stays, the
 * close-on-exec socket callback included (curl_easy_reset would drop it).
 * Anything but a 2xx answer discards the handle: a connection that timed out
 * or failed mid-request is never reused.
 *
 * Fork: the handle belongs to the process that made it (the agent context,
 * which owns it, is made again in a fork child, and aio_conn_easy also checks
 * the pid). The child still inherits the socket: the pthread_atfork child
 * handler below closes the child's copy, so children that never use it do not
 * hold the Agent's connection open (nor an fd) for their whole life. It finds
 * the sockets in aio_kept, filled by the kept handle's open/close callbacks;
 * it runs in the child of a multithreaded parent and uses only
 * async-signal-safe calls. */

struct aio_conn {
    CURL *c;
    pid_t pid;      /* the process that made c */
    long upload_buf; /* the CURLOPT_UPLOAD_BUFFERSIZE set on c (0: libcurl's default) */
    int kind;
    char url[sizeof ((aio_target *)0)->base + 64];
    char socket_path[sizeof ((aio_target *)0)->socket_path];
    char errbuf[CURL_ERROR_SIZE];
};

#define AIO_KEPT_MAX 8
/* fd: -1 free, -2 being filled; written last, cleared first. A socket that
 * finds no free slot is simply not closed in fork children. */
static struct aio_kept_sock {
    int fd;
    pid_t pid;
    dev_t dev;
    ino_t ino;
} aio_kept[AIO_KEPT_MAX] = {[0 ... AIO_KEPT_MAX - 1] = {.fd = -1}};
static pthread_once_t aio_kept_once = PTHREAD_ONCE_INIT;

/* In the fork child, before it returns from fork: close the parent's kept
 * sockets. The inode check makes sure the fd is still that socket (the parent
 * may have closed it and reused the number just before the fork). */
static void kept_atfork_child(void)
{
    pid_t self = getpid();
    for (int i = 0; i < AIO_KEPT_MAX; i++) {
        struct aio_kept_sock *s = &aio_kept[i];
        int fd = __atomic_load_n(&s->fd, __ATOMIC_ACQUIRE);
        if (fd < 0 || s->pid == self)
            continue;
        struct stat st;
        /* the raw syscall: this is the shim's descriptor, not a close of the
         * host's for the shim's hooks to see */
        if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == s->dev && st.st_ino == s->ino)
            syscall(SYS_close, fd);
        __atomic_store_n(&s->fd, -1, __ATOMIC_RELEASE);
    }
}

static void kept_register_atfork(void)
{
    pthread_atfork(NULL, NULL, kept_atfork_child);
}

static void kept_add(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return;
    for (int i = 0; i < AIO_KEPT_MAX; i++) {
        int expect = -1;
        if (__atomic_compare_exchange_n(&aio_kept[i].fd, &expect, -2, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
            aio_kept[i].pid = getpid();
            aio_kept[i].dev = st.st_dev;
            aio_kept[i].ino = st.st_ino;
            __atomic_store_n(&aio_kept[i].fd, fd, __ATOMIC_RELEASE);
            return;
        }
    }
}

static void kept_remove(int fd)
{
    pid_t self = getpid();
    for (int i = 0; i < AIO_KEPT_MAX; i++)
        if (__atomic_load_n(&aio_kept[i].fd, __ATOMIC_ACQUIRE) == fd && aio_kept[i].pid == self) {
            __atomic_store_n(&aio_kept[i].fd, -1, __ATOMIC_RELEASE);
            return;
        }
}

static curl_socket_t open_socket_kept(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    curl_socket_t fd = open_socket_cloexec(clientp, purpose, a);
    if (fd != CURL_SOCKET_BAD)
        kept_add(fd);
    return fd;
}

static int close_socket_kept(void *clientp, curl_socket_t fd)
{
    (void)clientp;
    kept_remove(fd);
    return close(fd);
}

aio_conn *aio_conn_new(void)
{
    pthread_once(&aio_kept_once, kept_register_atfork);
    return calloc(1, sizeof(aio_conn));
}

void aio_conn_reset(aio_conn *k)
{
    if (!k || !k->c)
        return;
    /* Another process's handle (a fork child's copy) is left alone: its
     * socket is not ours to close, the atfork handler closed our copy. After
     * the host's OpenSSL cleanup libcurl is not called at all. */
    if (k->pid == getpid() && !openssl_stopped())
        curl_easy_cleanup(k->c);
    k->c = NULL;
}

void aio_conn_free(aio_conn *k)
{
    if (!k)
        return;
    aio_conn_reset(k);
    free(k);
}

/* libcurl copies a POSTFIELDS body through its upload buffer (64 KB unless
 * told otherwise) and sends it a buffer at a time: a megabyte of spans went
 * out in 17 sends and 38 polls. Up to 256 KB (where the uploader's CPU per
 * span stopped improving: 64 KB cost ~10 % more), the buffer follows the
 * bodies; it shrinks (libcurl frees it when the size changes) only once they
 * have become much smaller, so a quiet process keeps no busy one's buffer. */
static int conn_upload_buffer(aio_conn *k, size_t len)
{
    const long lo = 64 * 1024, hi = 256 * 1024;
    long want = len >= (size_t)hi ? hi : (long)((len + (size_t)lo - 1) / (size_t)lo) * lo;
    if (want < lo)
        want = lo;
    long cur = k->upload_buf ? k->upload_buf : lo;
    if (want <= cur && want > cur / 4)
        return 0;
    if (curl_easy_setopt(k->c, CURLOPT_UPLOAD_BUFFERSIZE, want) != CURLE_OK)
        return -1;
    k->upload_buf = want;
    return 0;
}

void *aio_conn_easy(aio_conn *k, const aio_target *t, const char *path, long timeout_ms,
                    size_t upload_len)
{
    if (!k || !t)
        return NULL;
    char url[sizeof k->url];
    int n = snprintf(url, sizeof url, "%s%s", t->base, path);
    if (n < 0 || (size_t)n >= sizeof url)
        return NULL;
    if (k->c && (k->pid != getpid() || k->kind != t->kind || strcmp(k->url, url) != 0 ||
                 (t->kind == AIO_URL_UNIX && strcmp(k->socket_path, t->socket_path) != 0)))
        aio_conn_reset(k);
    if (k->c) {
        if (aio_global_init() < 0)
            return NULL;
        if (timeout_ms <= 0)
            timeout_ms = 1;
        k->errbuf[0] = '\0';
        int bad = 0;
        bad |= curl_easy_setopt(k->c, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK;
        bad |= curl_easy_setopt(k->c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) != CURLE_OK;
        bad |= conn_upload_buffer(k, upload_len) != 0;
        if (!bad)
            return k->c;
        aio_conn_reset(k);
    }
    CURL *c = aio_easy_new(t, path, timeout_ms, k->errbuf);
    if (!c)
        return NULL;
    if (curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket_kept) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_CLOSESOCKETFUNCTION, close_socket_kept) != CURLE_OK) {
        curl_easy_cleanup(c);
        return NULL;
    }
    k->c = c;
    k->pid = getpid();
    k->upload_buf = 0;
    k->kind = t->kind;
    memcpy(k->url, url, (size_t)n + 1);
    snprintf(k->socket_path, sizeof k->socket_path, "%s", t->socket_path);
    if (conn_upload_buffer(k, upload_len) != 0) {
        aio_conn_reset(k);
        return NULL;
    }
    return c;
}

long aio_conn_run(aio_conn *k, const aio_target *t, const char *what)
{
    if (!k || !k->c)
        return 0;
    long status = aio_easy_run(k->c, t, what, k->errbuf);
    /* Nothing of this request's may be reached through the handle later. */
    curl_easy_setopt(k->c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(k->c, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(k->c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
    curl_easy_setopt(k->c, CURLOPT_WRITEFUNCTION, discard_body);
    curl_easy_setopt(k->c, CURLOPT_WRITEDATA, NULL);
    if (status < 200 || status > 299)
        aio_conn_reset(k);
    return status;
}


/* ---- a minimal HTTP/1.1 client for the exit path ---------------------------
 * Once the program's OpenSSL has shut down (its atexit cleanup runs before the
 * shim's final flush), libcurl cannot be used. The final profile and traces
 * still reach the Agent through this: one request on a fresh connection,
 * Content-Length framing, bounded by the timeout. */

static long ms_left(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

/* base is "http://host:port" (aio_url_parse); [v6] brackets allowed. */
static void split_host(const aio_target *t, char host[256], char port[8])
{
    const char *h = t->base + 7;
    const char *colon = h[0] == '[' ? strchr(h, ']') : strrchr(h, ':');
    size_t hl = strlen(h);
    snprintf(port, 8, "80");
    if (h[0] == '[' && colon) {
        snprintf(host, 256, "%.*s", (int)(colon - h - 1), h + 1);
        if (colon[1] == ':')
            snprintf(port, 8, "%s", colon + 2);
    } else if (colon) {
        snprintf(host, 256, "%.*s", (int)(colon - h), h);
        snprintf(port, 8, "%s", colon + 1);
    } else {
        snprintf(host, 256, "%.*s", (int)hl, h);
    }
}

/* *d = now + ms on CLOCK_MONOTONIC (what ms_left counts against). */
static void deadline_in(struct timespec *d, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, d);
    d->tv_sec += ms / 1000;
    d->tv_nsec += (ms % 1000) * 1000000L;
    if (d->tv_nsec >= 1000000000L) {
        d->tv_sec++;
        d->tv_nsec -= 1000000000L;
    }
}

static int raw_connect(const aio_target *t, const struct timespec *deadline)
{
    int fd = -1;
    if (t->kind == AIO_URL_UNIX) {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        size_t pl = strnlen(t->socket_path, sizeof t->socket_path);
        if (pl >= sizeof a.sun_path)
            return -1;
        memcpy(a.sun_path, t->socket_path, pl);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            close(fd);
            return -1;
        }
        return fd;
    }
    char host[256], port[8];
    split_host(t, host, port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
        return -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            close(fd);
            fd = -1;
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof err;
        long left = ms_left(deadline);
        if (left <= 0 || poll(&p, 1, (int)left) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 ||
            err != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

static int raw_send_all(int fd, const void *p, size_t n, const struct timespec *deadline)
{
    const char *c = p;
    while (n > 0) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        long left = ms_left(deadline);
        if (left <= 0 || poll(&pf, 1, (int)left) != 1)
            return -1;
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

long aio_raw_request(const aio_target *t, const char *method, const char *path,
                     const char *const *headers, const void *body, size_t len, long timeout_ms,
                     char *resp_body, size_t resp_cap)
{
    struct timespec deadline;
    deadline_in(&deadline, timeout_ms);
    if (resp_body && resp_cap)
        resp_body[0] = '\0';
    int fd = raw_connect(t, &deadline);
    if (fd < 0)
        return 0;
    char head[2048];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n", method, path, len);
    for (size_t i = 0; headers && headers[i] && n > 0 && (size_t)n < sizeof head; i++)
        n += snprintf(head + n, sizeof head - (size_t)n, "%s\r\n", headers[i]);
    if (n <= 0 || (size_t)n + 3 > sizeof head) {
        close(fd);
        return 0;
    }
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    long status = 0;
    if (raw_send_all(fd, head, (size_t)n, &deadline) == 0 && raw_send_all(fd, body, len, &deadline) == 0) {
        char buf[16384];
        size_t got = 0;
        for (;;) {
            struct pollfd pf = {.fd = fd, .events = POLLIN};
            long left = ms_left(&deadline);
            if (left <= 0 || poll(&pf, 1, (int)left) != 1)
                break;
            ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, MSG_DONTWAIT);
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
            buf[got] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            if (end) {
                const char *cl = strcasestr(buf, "\r\ncontent-length:");
                size_t want = cl && cl < end ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
                if ((size_t)(buf + got - (end + 4)) >= want || got + 1 >= sizeof buf)
                    break;
            }
            if (got + 1 >= sizeof buf)
                break;
        }
        buf[got] = '\0';
        if (got > 12 && strncmp(buf, "HTTP/1.", 7) == 0)
            status = strtol(buf + 9, NULL, 10);
        char *end = strstr(buf, "\r\n\r\n");
        if (resp_body && resp_cap && end)
            snprintf(resp_body, resp_cap, "%s", end + 4);
    }
    close(fd);
    return status;
}

int aio_openssl_stopped(void)
{
    return openssl_stopped();
}

int aio_agent_reachable(const aio_target *t, long timeout_ms)
{
    if (t->kind == AIO_URL_HTTP) {
        char host[256], port[8];
        split_host(t, host, port);
        struct in6_addr a;
        if (strcmp(host, "localhost") != 0 && inet_pton(AF_INET, host, &a) != 1 &&
            inet_pton(AF_INET6, host, &a) != 1)
            return -1;
    } else if (t->kind != AIO_URL_UNIX) {
        return -1;
    }
    struct timespec deadline;
    deadline_in(&deadline, timeout_ms);
    int fd = raw_connect(t, &deadline);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

int aio_agent_probe(const aio_target *t, long timeout_ms)
{
    if (openssl_stopped())
        return aio_raw_request(t, "GET", AIO_INFO_PATH, NULL, "", 0, timeout_ms, NULL, 0) == 200 ? 0 : -1;
    char errbuf[CURL_ERROR_SIZE];
    CURL *c = aio_easy_new(t, AIO_INFO_PATH, timeout_ms, errbuf);
    if (!c)
        return -1;
    long status = aio_easy_run(c, t, "GET " AIO_INFO_PATH, errbuf);
    curl_easy_cleanup(c);
    return status == 200 ? 0 : -1;
}

/* A CR or LF in a header value would let it forge further headers. */
static int header_value_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return 0;
    return 1;
}

struct curl_slist *aio_add_header(struct curl_slist *l, int *bad, const char *name,
                                  const char *value)
{
    if (*bad)
        return l;
    char line[512];
    int n = snprintf(line, sizeof line, "%s: %s", name, value);
    if (n < 0 || (size_t)n >= sizeof line || !header_value_ok(value)) {
        log_debug("header %s left out: value unusable", name);
        return l;
    }
    struct curl_slist *nl = curl_slist_append(l, line);
    if (!nl)
        *bad = 1;
    return nl ? nl : l;
}

/* multipart/form-data (RFC 7578) with the two parts of WIRE.md section 1. */
static char *multipart_body(const char *event, const uint8_t *pprof, size_t len, char *boundary,
                            size_t bcap, size_t *out_len)
{
    unsigned char rnd[12];
    if (getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
        uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20) ^ (uint64_t)(uintptr_t)&rnd;
        for (size_t i = 0; i < sizeof rnd; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            rnd[i] = (unsigned char)(x >> 56);
        }
    }
    int n = snprintf(boundary, bcap, "------------------------ddshim");
    for (size_t i = 0; i < sizeof rnd && (size_t)n + 2 < bcap; i++)
        n += snprintf(boundary + n, bcap - (size_t)n, "%02x", rnd[i]);
    char head1[256], head2[256], tail[96];
    int h1 = snprintf(head1, sizeof head1,
                      "--%s\r\nContent-Disposition: form-data; name=\"event\"; filename=\"event.json\"\r\n"
                      "Content-Type: application/json\r\n\r\n",
                      boundary);
    int h2 = snprintf(head2, sizeof head2,
                      "\r\n--%s\r\nContent-Disposition: form-data; name=\"profile.pprof\"; "
                      "filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                      boundary);
    int tl = snprintf(tail, sizeof tail, "\r\n--%s--\r\n", boundary);
    size_t ev = strlen(event);
    size_t total = (size_t)h1 + ev + (size_t)h2 + len + (size_t)tl;
    char *b = malloc(total);
    if (!b)
        return NULL;
    char *p = b;
    memcpy(p, head1, (size_t)h1), p += h1;
    memcpy(p, event, ev), p += ev;
    memcpy(p, head2, (size_t)h2), p += h2;
    if (len)
        memcpy(p, pprof, len), p += len;
    memcpy(p, tail, (size_t)tl);
    *out_len = total;
    return b;
}

int aio_upload_profile(const aio_target *t, const aio_profile_meta *meta, const uint8_t *pprof_gz,
                       size_t len, long timeout_ms, long *http_status)
{
    if (http_status)
        *http_status = 0;
    if (!t || !meta || (!pprof_gz && len))
        return -1;
    char *event = aio_event_json(meta);
    if (!event)
        return -1;
    int rc = aio_upload_profile_event(t, event, meta->container_id, meta->profiler_version, pprof_gz, len,
                                      timeout_ms, http_status);
    free(event);
    return rc;
}

int aio_upload_profile_event(const aio_target *t, const char *event, const char *container_id,
                             const char *profiler_version, const uint8_t *pprof_gz, size_t len,
                             long timeout_ms, long *http_status)
{
    if (http_status)
        *http_status = 0;
    if (!t || !event || (!pprof_gz && len))
        return -1;
    char errbuf[CURL_ERROR_SIZE];
    if (openssl_stopped()) {
        size_t blen = 0;
        char bnd[48];
        char *body = multipart_body(event, pprof_gz, len, bnd, sizeof bnd, &blen);
        long st = 0;
        if (body) {
            char ct[96], ver[96], cid[128];
            snprintf(ct, sizeof ct, "Content-Type: multipart/form-data; boundary=%s", bnd);
            snprintf(ver, sizeof ver, "DD-EVP-ORIGIN-VERSION: %.64s",
                     profiler_version ? profiler_version : "unknown");
            snprintf(cid, sizeof cid, "Datadog-Container-ID: %.96s", container_id ? container_id : "");
            const char *hs[] = {ct, "DD-EVP-ORIGIN: ddshim", ver,
                                container_id && container_id[0] ? cid : NULL, NULL};
            st = aio_raw_request(t, "POST", AIO_PROFILE_PATH, hs, body, blen, timeout_ms, NULL, 0);
            free(body);
        }
        if (http_status)
            *http_status = st;
        return st >= 200 && st <= 299 ? 0 : -1;
    }
    CURL *c = aio_easy_new(t, AIO_PROFILE_PATH, timeout_ms, errbuf);
    struct curl_slist *hdrs = NULL;
    int bad = !c;
    /* The multipart body is built here, not with curl_mime_*: libcurl draws
     * the mime boundary from OpenSSL's RAND, which is unsafe once a host's
     * OpenSSL has run its atexit cleanup (the final upload runs at exit). */
    size_t body_len = 0;
    char boundary[48];
    char *body = bad ? NULL : multipart_body(event, pprof_gz, len, boundary, sizeof boundary, &body_len);
    bad |= !body;
    char ctype[96];
    snprintf(ctype, sizeof ctype, "multipart/form-data; boundary=%s", boundary);
    hdrs = aio_add_header(hdrs, &bad, "Content-Type", ctype);
    hdrs = aio_add_header(hdrs, &bad, "DD-EVP-ORIGIN", "ddshim");
    hdrs = aio_add_header(hdrs, &bad, "DD-EVP-ORIGIN-VERSION",
                          profiler_version ? profiler_version : "unknown");
    if (container_id && container_id[0])
        hdrs = aio_add_header(hdrs, &bad, "Datadog-Container-ID", container_id);
    /* curl waits up to a second for "100 Continue" on big bodies; the Agent
     * never needs the handshake, and the wait eats into our timeout. */
    if (!bad) {
        struct curl_slist *nl = curl_slist_append(hdrs, "Expect:");
        bad = !nl;
        hdrs = nl ? nl : hdrs;
    }
    if (!bad) {
        bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len) != CURLE_OK;
        bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDS, body) != CURLE_OK;
        bad |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK;
    }
    long status = 0;
    if (!bad)
        status = aio_easy_run(c, t, "profile upload", errbuf);
    else
        log_debug("profile upload not attempted: out of memory or libcurl refused an option");
    if (c)
        curl_easy_cleanup(c);
    free(body); /* after the handle: it may still reference it */
    curl_slist_free_all(hdrs);
    if (http_status)
        *http_status = status;
    return status >= 200 && status <= 299 ? 0 : -1;
}

/* ---- local output directory -------------------------------------------------- */

/* mkdir -p; the directories we create are 0700 because profiles reveal code
 * and hostnames. Existing components are left as they are. */
static int mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i < n; i++) {
        if (buf[i] != '/' || buf[i - 1] == '/')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0700) < 0 && errno != EEXIST)
            return -1;
        buf[i] = '/';
    }
    if (mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* The service name comes from DD_SERVICE or argv[0]: keep it to a safe file
 * name alphabet, never hidden, never "." or "..". */
void aio_sanitize_service(const char *s, char *out, size_t out_len)
{
    size_t o = 0;
    if (!s || !*s)
        s = "unnamed-native-app";
    for (; *s && o + 1 < out_len; s++) {
        char c = *s;
        int okc = a_alnum(c) || c == '.' || c == '_' || c == '-';
        out[o++] = okc ? c : '_';
    }
    out[o] = '\0';
    if (out[0] == '.')
        out[0] = '_';
}

int aio_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Write through a private temporary name and rename, so a reader never sees a
 * half-written file and nobody can aim us at another file: O_EXCL|O_NOFOLLOW
 * on the temporary, and anything but a regular file at the final name is
 * refused rather than replaced. */
static int write_file_atomic(int dfd, const char *dir, const char *name, const void *data,
                             size_t len)
{
    static unsigned aio_tmp_counter;
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode)) {
        log_warn("%s/%s exists and is not a regular file: profile not written", dir, name);
        return -1;
    }
    char tmp[NAME_MAX + 1];
    int fd = -1;
    for (int tries = 0; tries < 16 && fd < 0; tries++) {
        int n = snprintf(tmp, sizeof tmp, ".tmp.%ld.%u.%.200s", (long)getpid(), aio_tmp_counter++,
                         name);
        if (n < 0 || (size_t)n >= sizeof tmp)
            return -1;
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        log_warn("cannot create a file in %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = aio_write_all(fd, data, len);
    int err = errno;
    if (close(fd) < 0 && rc == 0) {
        rc = -1;
        err = errno;
    }
    if (rc == 0 && renameat(dfd, tmp, dfd, name) < 0) {
        rc = -1;
        err = errno;
    }
    if (rc < 0) {
        unlinkat(dfd, tmp, 0);
        log_warn("cannot write %s/%s: %s", dir, name, strerror(err));
    }
    return rc;
}

/* Every flush comes back here: a directory we cannot use is said once on the
 * host's stderr, then only at debug level. One the process may not enter
 * (EACCES: typically a child that dropped privileges, `runuser`, a server's
 * worker, inheriting its parent's setting) is said on stderr only where
 * someone looks (aio_announce); a refused or broken one always is. */
int aio_announce = 1;
static unsigned aio_outdir_said;
#define outdir_warn(...) log_msg(aio_outdir_said++ ? LOG_DEBUG : LOG_WARN, __VA_ARGS__)
#define outdir_denied(...)                                                                        \
    log_msg(aio_outdir_said++ ? LOG_DEBUG : aio_announce ? LOG_WARN : LOG_INFO, __VA_ARGS__)

int aio_open_output_dir(const char *dir)
{
    if (!dir || !*dir)
        return -1;
    if (mkdir_p(dir) < 0) {
        if (errno == EACCES || errno == EPERM)
            outdir_denied("cannot create output directory %s: %s", dir, strerror(errno));
        else
            outdir_warn("cannot create output directory %s: %s", dir, strerror(errno));
        return -1;
    }
    /* Without its trailing slashes, so that O_NOFOLLOW applies to the
     * directory's own name ("link/" would resolve the link first). */
    char path[PATH_MAX];
    size_t n = strlen(dir);
    if (n >= sizeof path) {
        outdir_warn("cannot open output directory %s: %s", dir, strerror(ENAMETOOLONG));
        return -1;
    }
    memcpy(path, dir, n + 1);
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';
    /* Callers write through this fd, so the directory we checked is the
     * directory they write into, whatever happens to the path meanwhile.
     * O_NOFOLLOW: whoever can plant a symlink at that name (another user, in
     * a directory they share with us) must not choose where we write. */
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        int err = errno;
        struct stat lst;
        if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode))
            outdir_warn("output directory %s is a symbolic link: refusing to follow it (give "
                        "the directory's own path)",
                        dir);
        else if (err == EACCES || err == EPERM)
            outdir_denied("cannot open output directory %s: %s", dir, strerror(err));
        else
            outdir_warn("cannot open output directory %s: %s", dir, strerror(err));
        return -1;
    }
    /* A directory others can write into is one where they can plant names,
     * swap files and read what we leave: refused when it is someone else's,
     * and when it is shared by design (sticky, like /tmp), even if ours. */
    struct stat st;
    if (fstat(dfd, &st) < 0) {
        outdir_warn("cannot open output directory %s: %s", dir, strerror(errno));
        close(dfd);
        return -1;
    }
    if ((st.st_mode & S_IWOTH) && (st.st_uid != geteuid() || (st.st_mode & S_ISVTX))) {
        outdir_warn("output directory %s is world-writable and %s: refusing to write there (use "
                    "a private directory)",
                    dir, st.st_uid != geteuid() ? "not ours" : "shared (sticky, like /tmp)");
        close(dfd);
        return -1;
    }
    return dfd;
}

int aio_write_profile_file(const char *dir, const aio_profile_meta *meta, const uint8_t *pprof_gz,
                           size_t len, char *path_out, size_t path_out_len)
{
    if (path_out && path_out_len)
        path_out[0] = '\0';
    if (!dir || !*dir || !meta || (!pprof_gz && len))
        return -1;
    int dfd = aio_open_output_dir(dir);
    if (dfd < 0)
        return -1;

    char svc[101];
    aio_sanitize_service(meta->service, svc, sizeof svc);
    char pprof_name[NAME_MAX + 1], json_name[NAME_MAX + 1];
    int n1 = snprintf(pprof_name, sizeof pprof_name, "%s.%" PRId64 ".%" PRIu64 ".pprof.gz", svc,
                      meta->pid, meta->seq);
    int n2 = snprintf(json_name, sizeof json_name, "%s.%" PRId64 ".%" PRIu64 ".event.json", svc,
                      meta->pid, meta->seq);
    int rc = -1;
    char *event = NULL;
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof pprof_name || (size_t)n2 >= sizeof json_name)
        goto out;
    if (path_out && path_out_len) {
        size_t dl = strlen(dir);
        while (dl > 1 && dir[dl - 1] == '/')
            dl--;
        int n = snprintf(path_out, path_out_len, "%.*s/%s", (int)dl, dir, pprof_name);
        if (n < 0 || (size_t)n >= path_out_len) {
            path_out[0] = '\0';
            goto out;
        }
    }
    event = aio_event_json(meta);
    if (!event)
        goto out;
    /* The pprof first: whoever treats event.json as the "complete" marker
     * then always finds its profile beside it. */
    if (write_file_atomic(dfd, dir, pprof_name, len ? (const void *)pprof_gz : "", len) < 0 ||
        write_file_atomic(dfd, dir, json_name, event, strlen(event)) < 0)
        goto out;
    rc = 0;
out:
    if (rc < 0 && path_out && path_out_len)
        path_out[0] = '\0';
    free(event);
    close(dfd);
    return rc;
}

/* ---- container id ------------------------------------------------------------ */

static int is_lhex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int all_lhex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_lhex(s[i]))
            return 0;
    return 1;
}

/* uuid with '-' or '_' separators (systemd escapes '-' in slice names). */
static int is_uuid(const char *s)
{
    static const int seg[] = {8, 4, 4, 4, 12};
    for (int i = 0; i < 5; i++) {
        if (!all_lhex(s, (size_t)seg[i]))
            return 0;
        s += seg[i];
        if (i < 4 && *s != '-' && *s != '_')
            return 0;
        s++;
    }
    return 1;
}

static int copy_id(const char *s, size_t n, char *out, size_t out_len)
{
    if (n + 1 > out_len)
        return 0;
    memcpy(out, s, n);
    out[n] = '\0';
    return 1;
}

/* The same three shapes Datadog's tracers look for at the end of a cgroup
 * path (an optional ".scope" after it): a 64-hex container id (docker,
 * containerd, cri-o; "docker-<id>.scope" under systemd), a uuid (some
 * runtimes, ECS), or an ECS Fargate task id "<32 hex>-<digits>". */
static int id_from_cgroup_path(const char *path, size_t n, char *out, size_t out_len)
{
    const char *slash = NULL;
    for (size_t i = 0; i < n; i++)
        if (path[i] == '/')
            slash = path + i;
    const char *c = slash ? slash + 1 : path;
    size_t cl = (size_t)(path + n - c);
    if (cl >= 6 && memcmp(c + cl - 6, ".scope", 6) == 0)
        cl -= 6;
    if (cl >= 36 && is_uuid(c + cl - 36) && (cl == 36 || !is_lhex(c[cl - 37])))
        return copy_id(c + cl - 36, 36, out, out_len);
    if (cl >= 64 && all_lhex(c + cl - 64, 64))
        return copy_id(c + cl - 64, 64, out, out_len);
    size_t d = cl;
    while (d > 0 && a_digit(c[d - 1]))
        d--;
    if (d < cl && d >= 33 && c[d - 1] == '-' && all_lhex(c + d - 33, 32))
        return copy_id(c + d - 33, cl - (d - 33), out, out_len);
    return 0;
}

/* Parses /proc/self/cgroup text (v1 "N:ctrl:/path" lines or v2 "0::/path").
 * Not in transport.h on purpose: exposed for the unit test only. */
int aio_container_id_from_cgroup(const char *text, char *out, size_t out_len)
{
    if (!out || !out_len)
        return 0;
    out[0] = '\0';
    for (const char *l = text; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        const char *c1 = memchr(l, ':', n);
        const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - l)) : NULL;
        if (c2) {
            const char *p = c2 + 1;
            size_t pn = n - (size_t)(p - l);
            if (id_from_cgroup_path(p, pn, out, out_len))
                return 1;
        }
        l = e ? e + 1 : NULL;
    }
    out[0] = '\0';
    return 0;
}

/* cgroup v2 with a private cgroup namespace shows "0::/": the id then only
 * appears in the bind mounts the runtime makes for /etc/hostname and friends
 * (".../containers/<64 hex>/hostname"). "sandboxes/<id>" is the pod sandbox,
 * not us. Exposed for the unit test only. */
int aio_container_id_from_mountinfo(const char *text, char *out, size_t out_len)
{
    if (!out || !out_len)
        return 0;
    out[0] = '\0';
    for (const char *l = text; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        for (size_t i = 0; i + 66 <= n; i++) {
            const char *p = l + i;
            if (p[0] != '/' || p[65] != '/' || !all_lhex(p + 1, 64))
                continue;
            if (i > 0 && is_lhex(p[-1]))
                continue;
            /* the component before the id, and something "hostname" after it */
            const char *q = p;
            while (q > l && q[-1] != '/')
                q--;
            if ((size_t)(p - q) == 9 && memcmp(q, "sandboxes", 9) == 0)
                continue;
            const char *rest = p + 66;
            size_t rl = n - (size_t)(rest - l);
            int host_after = 0;
            for (size_t k = 0; k + 8 <= rl && rest[k] != ' '; k++)
                if (memcmp(rest + k, "hostname", 8) == 0)
                    host_after = 1;
            if (host_after)
                return copy_id(p + 1, 64, out, out_len);
        }
        l = e ? e + 1 : NULL;
    }
    out[0] = '\0';
    return 0;
}

static char *slurp_proc(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    aio_sbuf b = {0};
    char chunk[4096];
    size_t n;
    /* /proc files can be long (mountinfo); cap what we read to stay bounded */
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len < (1u << 20))
        sb_putn(&b, chunk, n);
    fclose(f);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

void aio_container_id(char *out, size_t out_len)
{
    if (!out || !out_len)
        return;
    out[0] = '\0';
    char *t = slurp_proc("/proc/self/cgroup");
    int found = t && aio_container_id_from_cgroup(t, out, out_len);
    free(t);
    if (found)
        return;
    t = slurp_proc("/proc/self/mountinfo");
    if (t)
        aio_container_id_from_mountinfo(t, out, out_len);
    free(t);
}
