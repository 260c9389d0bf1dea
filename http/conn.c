/* http/conn.c — per-socket HTTP/1.x server tracking (see conn.h).
 *
 * Threads: any host thread, inside the read/write/accept/close hooks of
 * preload/hooks.c, possibly re-entered from a host's signal handler (a
 * per-socket try-lock turns that into "stop tracking this socket", never a
 * wait). Nothing here allocates after conn_init: per-fd state is a table in
 * anonymous memory, requests in flight take a slot of a fixed pool (a lock-free
 * bitmap), finished spans are copied into a lock-free ring.
 *
 * A connection's life: accept -> CANDIDATE; its first bytes read either parse
 * as an HTTP/1.x request line (-> HTTP) or not (-> IGNORED, one branch per
 * call from then on). Each request takes a pool slot when its first byte is
 * read (the span's start), joins the connection's FIFO of requests awaiting a
 * response once its head is complete (the server may answer before reading
 * the body: 100-continue, early errors), and leaves it when the last byte of
 * its response is written (the span's end). Pipelined requests are parsed one
 * after another from the same read; pipelined responses from the same write.
 * A close (or shutdown for writing) ends a response delimited by close, and
 * reports requests that never got a response, unless the connection was last
 * used before a fork (the other process may be serving it). */
#include "http/conn.h"

#include "common/span_rec.h"
#include "http/parser.h"
#include "common/copy.h"
#include "preload/sampler.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define POOL_SLOTS 512
/* Requests read ahead of their responses that one connection may hold: a
 * client pipelining deeper stops being traced (counted), never slows the host. */
#define CONN_MAXQ 32
#define SPAN_RING_BYTES (2u << 20)

struct conn {
    uint32_t lock;
    uint32_t fork_gen;     /* fork generation at the last activity */
    int16_t cur;           /* slot whose request is being read, -1 */
    uint8_t nq;            /* requests with a complete head awaiting a response */
    uint8_t resp_started;  /* q[0]'s response has begun */
    int16_t q[CONN_MAXQ];
    uint16_t peer_port;
    uint8_t peer_family;
    uint8_t seen_request;  /* a valid request was seen: later errors stop tracking only */
    uint8_t peer_addr[16];
};

struct slot {
    http_req req;
    http_resp resp;
    uint64_t span_id;
    int64_t start_wall, start_mono, last_write_mono;
    int64_t resp_body_bytes;
    int32_t tid;
    uint8_t head_done;
    uint8_t resp_head_done; /* the final response's head is all written */
};

uint8_t *volatile conn_state;
struct ring conn_span_ring;
struct conn_counters conn_counters;

static struct conn *conns;
static struct slot *pool;
static uint64_t pool_bits[POOL_SLOTS / 64];
static uint32_t fork_gen;
static const char *extra_req_names[HTTP_MAX_EXTRA + 1];
static const char *extra_resp_names[HTTP_MAX_EXTRA + 1];

static void count(uint64_t *c)
{
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

static int64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A span's wall-clock start is its monotonic start plus CLOCK_REALTIME -
 * CLOCK_MONOTONIC, measured again once a second: one clock read per request
 * instead of two (each ~25 ns here, a tenth of the hook path's budget). The
 * two clocks run at the same rate (NTP slews both), so the difference only
 * moves when the wall clock is stepped, and a span starts at most a second
 * after such a step with the old offset. Racing refreshes store equally good
 * values; each word is read and written whole. */
static int64_t wall_off, wall_off_at;

static int64_t wall_of(int64_t mono)
{
    int64_t at = __atomic_load_n(&wall_off_at, __ATOMIC_RELAXED);
    if (at == 0 || mono - at > 1000000000LL) {
        int64_t m0 = clock_ns(CLOCK_MONOTONIC), w = clock_ns(CLOCK_REALTIME), m1 = clock_ns(CLOCK_MONOTONIC);
        __atomic_store_n(&wall_off, w - (m0 + (m1 - m0) / 2), __ATOMIC_RELAXED);
        __atomic_store_n(&wall_off_at, m1, __ATOMIC_RELAXED);
    }
    return mono + __atomic_load_n(&wall_off, __ATOMIC_RELAXED);
}

int conn_init(const char *const *extra_req, const char *const *extra_resp)
{
    for (int i = 0; extra_req && extra_req[i] && i < HTTP_MAX_EXTRA; i++)
        extra_req_names[i] = extra_req[i];
    for (int i = 0; extra_resp && extra_resp[i] && i < HTTP_MAX_EXTRA; i++)
        extra_resp_names[i] = extra_resp[i];
    /* Reserved, not resident: pages are touched only for the fds and slots in use. */
    void *st = mmap(NULL, CONN_MAX_FD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *cs = mmap(NULL, sizeof(struct conn) * CONN_MAX_FD, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *pl = mmap(NULL, sizeof(struct slot) * POOL_SLOTS, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (st == MAP_FAILED || cs == MAP_FAILED || pl == MAP_FAILED)
        return -1;
    if (ring_init(&conn_span_ring, SPAN_RING_BYTES) != 0)
        return -1;
    conns = cs;
    pool = pl;
    __atomic_store_n(&conn_state, (uint8_t *)st, __ATOMIC_RELEASE);
    return 0;
}

void conn_after_fork(int child)
{
    __atomic_fetch_add(&fork_gen, 1, __ATOMIC_RELAXED);
    if (child)
        ring_reset(&conn_span_ring);
}

/* ---- pool ------------------------------------------------------------- */

static int slot_get(void)
{
    for (int w = 0; w < POOL_SLOTS / 64; w++) {
        uint64_t v = __atomic_load_n(&pool_bits[w], __ATOMIC_RELAXED);
        while (~v) {
            int b = __builtin_ctzll(~v);
            if (__atomic_compare_exchange_n(&pool_bits[w], &v, v | (1ull << b), 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return w * 64 + b;
        }
    }
    return -1;
}

static void slot_put(int i)
{
    if (i >= 0)
        __atomic_fetch_and(&pool_bits[i / 64], ~(1ull << (i % 64)), __ATOMIC_RELEASE);
}

/* ---- ids ---------------------------------------------------------------- */

static __thread uint64_t rng_state TLS_IE;

static uint64_t random_id(void)
{
    if (!rng_state) {
        uint64_t seed = 0;
        if (syscall(SYS_getrandom, &seed, sizeof seed, 1 /* GRND_NONBLOCK */) != (long)sizeof seed)
            seed = (uint64_t)clock_ns(CLOCK_MONOTONIC) ^ ((uint64_t)syscall(SYS_gettid) << 32);
        rng_state = seed | 1;
    }
    /* xorshift64*: fast, and ids only need to be unique, not secret. */
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    /* 63 bits, as Datadog's tracers make them: the id also goes into pprof's
     * signed numeric labels ("span id"). */
    uint64_t id = (x * 0x2545F4914F6CDD1Dull) >> 1;
    return id ? id : 1;
}

/* ---- locking ------------------------------------------------------------ */

static struct conn *lock_conn(int fd)
{
    struct conn *c = &conns[fd];
    if (__atomic_exchange_n(&c->lock, 1, __ATOMIC_ACQUIRE) != 0) {
        /* Two threads on one socket, or a signal handler re-entering: parse
         * state would interleave. Stop tracking this socket. */
        conn_state[fd] = CONN_IGNORED;
        count(&conn_counters.dropped_contended);
        return NULL;
    }
    return c;
}

static void unlock_conn(struct conn *c)
{
    __atomic_store_n(&c->lock, 0, __ATOMIC_RELEASE);
}

/* ---- spans -------------------------------------------------------------- */

static void put_str(struct span_rec *r, char **p, char *end, int idx, const char *s, size_t n)
{
    if (!s)
        n = 0;
    if (n > (size_t)(end - *p))
        n = (size_t)(end - *p);
    if (n > 0xffff)
        n = 0xffff;
    copy_bytes(*p, s, n);
    r->len[idx] = (uint16_t)n;
    *p += n;
}

_Static_assert(SS_TRACESTATE == SS_HOST + 8 && SS_REQ_EXTRA0 == SS_HOST + 9,
               "request capture bit b is string SS_HOST + b");

static inline void put_field(struct span_rec *r, char **p, char *end, int idx, const http_field *f)
{
    put_str(r, p, end, idx, f->v, f->len);
}

/* The record is written in place in the ring (reserved at its exact size,
 * then committed): no staging copy. */
static void emit_span(struct conn *c, struct slot *s, int status, uint32_t flags, int64_t end_mono)
{
    const http_req *q = &s->req;
    size_t n = sizeof(struct span_rec) + q->method_len + q->target_len;
    for (uint32_t m = q->present_mask; m; m &= m - 1)
        n += http_req_field(q, (unsigned)__builtin_ctz(m))->len;
    for (uint32_t m = status ? s->resp.present_mask : 0; m; m &= m - 1)
        n += s->resp.extra[__builtin_ctz(m)].len;
    if (n > SPAN_REC_MAX)
        n = SPAN_REC_MAX; /* cannot happen (the fields' caps add up to less); put_str cuts */
    struct ring_hdr *h;
    struct span_rec *r = ring_reserve(&conn_span_ring, (uint32_t)n, &h);
    if (!r) {
        count(&conn_counters.dropped_ring);
        goto out;
    }
    /* Every field is set below but the string lengths: zero those alone (a
     * memset of the whole header is a rep stos, ~30 cycles to start). */
    memset(r->len, 0, sizeof r->len);
    r->magic = SPAN_MAGIC;
    r->flags = flags | (q->target_truncated ? SPAN_F_TARGET_TRUNCATED : 0) |
               (q->version_minor == 0 ? SPAN_F_HTTP10 : 0);
    r->span_id = s->span_id;
    r->start_ns = s->start_wall;
    r->duration_ns = end_mono - s->start_mono;
    if (r->duration_ns < 0)
        r->duration_ns = 0;
    r->status = status;
    r->tid = s->tid;
    r->req_content_length = q->content_length;
    int64_t counted = s->resp_body_bytes - (int64_t)s->resp.head_bytes;
    r->resp_content_length = !status ? -1 : s->resp.content_length >= 0 ? s->resp.content_length
                                                                          : (counted > 0 ? counted : 0);
    r->peer_port = c->peer_port;
    r->peer_family = c->peer_family;
    r->version_minor = q->version_minor;
    memcpy(r->peer_addr, c->peer_addr, sizeof r->peer_addr);
    char *p = r->strings, *end = (char *)r + n;
    put_str(r, &p, end, SS_METHOD, q->method, q->method_len);
    put_str(r, &p, end, SS_TARGET, q->target, q->target_len);
    /* Only the fields that are present (an absent one keeps the 0 length of
     * the memset), in the order of their strings: the request's default
     * fields and extras (capture bit b is string SS_HOST + b), then the
     * response's extras. */
    for (uint32_t m = q->present_mask; m; m &= m - 1) {
        unsigned b = (unsigned)__builtin_ctz(m);
        put_field(r, &p, end, SS_HOST + (int)b, http_req_field(q, b));
    }
    for (uint32_t m = status ? s->resp.present_mask : 0; m; m &= m - 1) {
        unsigned b = (unsigned)__builtin_ctz(m);
        put_field(r, &p, end, SS_RESP_EXTRA0 + (int)b, &s->resp.extra[b]);
    }
    ring_commit(h);
    __atomic_store_n(&conn_counters.spans, __atomic_load_n(&conn_counters.spans, __ATOMIC_RELAXED) + 1,
                     __ATOMIC_RELAXED);
out:
    /* CPU samples of this thread no longer belong to this request. */
    if (sampler_tls.span_id == s->span_id)
        sampler_tls.span_id = sampler_tls.root_span_id = 0;
}

/* Drop every request of c (the connection stops being tracked or ends). */
static void release_all(struct conn *c)
{
    if (c->cur >= 0 && !pool[c->cur].head_done)
        slot_put(c->cur); /* otherwise it is in the queue too */
    for (int i = 0; i < c->nq; i++)
        slot_put(c->q[i]);
    c->cur = -1;
    c->nq = 0;
    c->resp_started = 0;
}

static void stop_tracking(int fd, struct conn *c)
{
    release_all(c);
    conn_state[fd] = CONN_IGNORED;
    count(&conn_counters.not_http);
}

static void pop_front(struct conn *c)
{
    int s = c->q[0];
    for (int i = 1; i < c->nq; i++)
        c->q[i - 1] = c->q[i];
    c->nq--;
    c->resp_started = 0;
    if (c->cur == s)
        c->cur = -1; /* answered before its body was read: the rest is not parsed */
    slot_put(s);
}

/* ---- input: requests ---------------------------------------------------- */

static void feed_in(int fd, struct conn *c, const uint8_t *data, size_t n)
{
    while (n > 0) {
        if (c->cur < 0) {
            if (c->nq >= CONN_MAXQ) {
                /* A client pipelining deeper than we follow: give up on it. */
                count(&conn_counters.dropped_depth);
                stop_tracking(fd, c);
                return;
            }
            int i = slot_get();
            if (i < 0) {
                count(&conn_counters.dropped_pool);
                stop_tracking(fd, c);
                return;
            }
            struct slot *s = &pool[i];
            if (extra_req_names[0] || s->req.extra_names[0]) /* unchanged otherwise: all NULL */
                memcpy(s->req.extra_names, extra_req_names, sizeof s->req.extra_names);
            http_req_reuse(&s->req); /* pool memory starts zeroed: a valid reset state */
            s->span_id = random_id();
            s->start_mono = clock_ns(CLOCK_MONOTONIC);
            s->start_wall = wall_of(s->start_mono);
            s->last_write_mono = 0;
            s->resp_body_bytes = 0;
            s->tid = sampler_tls.tid;
            s->head_done = 0;
            c->cur = (int16_t)i;
        }
        struct slot *s = &pool[c->cur];
        size_t used = 0;
        int ev = http_req_feed(&s->req, data, n, &used);
        if (ev & HTTP_P_ERROR) {
            stop_tracking(fd, c);
            return;
        }
        if ((ev & HTTP_P_HEADERS) && !s->head_done) {
            s->head_done = 1;
            c->seen_request = 1;
            conn_state[fd] = CONN_HTTP;
            c->q[c->nq++] = c->cur;
            /* This thread now works for this request: its CPU samples say so. */
            sampler_tls.span_id = sampler_tls.root_span_id = s->span_id;
        }
        if (ev & HTTP_P_DONE) {
            c->cur = -1; /* stays in the queue until its response is written */
        }
        if (used > n)
            used = n;
        data += used;
        n -= used;
        if (!(ev & HTTP_P_DONE))
            break;
    }
}

void conn_on_accept(int fd, const struct sockaddr *addr, socklen_t len)
{
    if (!conn_state || fd < 0 || fd >= CONN_MAX_FD)
        return;
    struct conn *c = &conns[fd];
    /* A new socket on this number: whatever was here is gone (its close was
     * not seen, e.g. a raw syscall). */
    if (__atomic_exchange_n(&c->lock, 1, __ATOMIC_ACQUIRE) != 0)
        return;
    release_all(c);
    c->fork_gen = fork_gen;
    c->seen_request = 0;
    c->peer_family = 0;
    c->peer_port = 0;
    memset(c->peer_addr, 0, sizeof c->peer_addr);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (!addr || len == 0) {
        int saved = errno;
        if (syscall(SYS_getpeername, fd, &ss, &sl) == 0) {
            addr = (const struct sockaddr *)&ss;
            len = sl;
        }
        errno = saved;
    }
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        c->peer_family = 4;
        c->peer_port = ntohs(a->sin_port);
        memcpy(c->peer_addr, &a->sin_addr, 4);
    } else if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        c->peer_family = 6;
        c->peer_port = ntohs(a->sin6_port);
        memcpy(c->peer_addr, &a->sin6_addr, 16);
    }
    conn_state[fd] = CONN_CANDIDATE;
    unlock_conn(c);
}

/* Feed the bytes one call moved (n of them, spread over iov) to the input or
 * output side, under the socket's lock, errno kept. Inlined into each caller:
 * read and write get a direct call and no loop. */
static inline __attribute__((always_inline)) void
on_bytes(int fd, const struct iovec *iov, int iovcnt, size_t n,
         void (*feed)(int, struct conn *, const uint8_t *, size_t))
{
    struct conn *c = lock_conn(fd);
    if (!c)
        return;
    int saved = errno;
    c->fork_gen = fork_gen;
    for (int i = 0; i < iovcnt && n > 0 && conn_state[fd] != CONN_IGNORED; i++) {
        size_t k = iov[i].iov_len < n ? iov[i].iov_len : n;
        feed(fd, c, iov[i].iov_base, k);
        n -= k;
    }
    errno = saved;
    unlock_conn(c);
}

void conn_on_read(int fd, const void *buf, size_t n)
{
    struct iovec v = {(void *)buf, n};
    on_bytes(fd, &v, 1, n, feed_in);
}

void conn_on_readv(int fd, const struct iovec *iov, int iovcnt, size_t n)
{
    on_bytes(fd, iov, iovcnt, n, feed_in);
}

/* ---- output: responses -------------------------------------------------- */

static void feed_out(int fd, struct conn *c, const uint8_t *data, size_t n)
{
    int64_t now = 0; /* read once, and only when a response ends or may end at close */
    while (n > 0) {
        if (c->nq == 0) {
            /* Bytes out with no request waiting: a server that speaks first
             * (SMTP, MySQL...) or an answer we cannot pair. */
            if (!c->seen_request)
                stop_tracking(fd, c);
            return;
        }
        struct slot *s = &pool[c->q[0]];
        if (!c->resp_started) {
            s->resp_body_bytes = 0;
            if (extra_resp_names[0] || s->resp.extra_names[0])
                memcpy(s->resp.extra_names, extra_resp_names, sizeof s->resp.extra_names);
            http_resp_reuse(&s->resp, s->req.method_len == 4 && memcmp(s->req.method, "HEAD", 4) == 0);
            s->resp_head_done = 0;
            c->resp_started = 1;
        }
        size_t used = 0;
        int ev = http_resp_feed(&s->resp, data, n, &used);
        if (ev & HTTP_P_ERROR) {
            stop_tracking(fd, c);
            return;
        }
        if (used > n)
            used = n;
        if ((ev & HTTP_P_HEADERS) && s->resp.status >= 200)
            s->resp_head_done = 1;
        s->resp_body_bytes += (int64_t)used; /* head included; subtracted at the end */
        if ((ev & HTTP_P_DONE) || s->resp.body_until_close) {
            if (!now)
                now = clock_ns(CLOCK_MONOTONIC);
            s->last_write_mono = now; /* conn_on_close ends a close-delimited body here */
        }
        data += used;
        n -= used;
        if (ev & HTTP_P_DONE) {
            if (s->resp.status < 200) {
                c->resp_started = 0; /* 100 Continue & co: the final answer follows */
                continue;
            }
            emit_span(c, s, s->resp.status, 0, now);
            pop_front(c);
            continue;
        }
        break;
    }
}

void conn_on_write(int fd, const void *buf, size_t n)
{
    struct iovec v = {(void *)buf, n};
    on_bytes(fd, &v, 1, n, feed_out);
}

void conn_on_writev(int fd, const struct iovec *iov, int iovcnt, size_t n)
{
    on_bytes(fd, iov, iovcnt, n, feed_out);
}

void conn_on_sendfile(int fd, size_t n)
{
    struct conn *c = lock_conn(fd);
    if (!c)
        return;
    int saved = errno;
    c->fork_gen = fork_gen;
    if (c->nq > 0 && c->resp_started) {
        struct slot *s = &pool[c->q[0]];
        int64_t now = clock_ns(CLOCK_MONOTONIC);
        s->last_write_mono = now;
        int ev = http_resp_skip_body(&s->resp, n);
        if ((ev & HTTP_P_DONE) && s->resp.status >= 200) {
            emit_span(c, s, s->resp.status, 0, now);
            pop_front(c);
        }
    }
    errno = saved;
    unlock_conn(c);
}

/* ---- end of a connection ------------------------------------------------ */

void conn_on_close(int fd)
{
    uint8_t *st = conn_state;
    if (!st || fd < 0 || fd >= CONN_MAX_FD || st[fd] == CONN_NONE)
        return;
    struct conn *c = &conns[fd];
    if (__atomic_exchange_n(&c->lock, 1, __ATOMIC_ACQUIRE) != 0) {
        st[fd] = CONN_NONE;
        return;
    }
    int saved = errno;
    if (st[fd] == CONN_HTTP) {
        if (c->fork_gen != fork_gen) {
            /* Last used before a fork: the other process may be answering. */
            if (c->nq)
                count(&conn_counters.dropped_handoff);
        } else {
            int64_t now = clock_ns(CLOCK_MONOTONIC);
            for (int k = 0; k < c->nq; k++) {
                struct slot *s = &pool[c->q[k]];
                /* A body delimited by close ends here; a body cut short (the
                 * client left, the server gave up) still had its status sent. */
                if (k == 0 && c->resp_started && s->resp.status >= 200 &&
                    (s->resp.body_until_close || s->resp_head_done))
                    emit_span(c, s, s->resp.status, s->resp.body_until_close ? SPAN_F_RESP_UNTIL_CLOSE : 0,
                              s->last_write_mono ? s->last_write_mono : now);
                else
                    emit_span(c, s, 0, SPAN_F_NO_RESPONSE, now);
            }
        }
    }
    release_all(c);
    st[fd] = CONN_NONE;
    errno = saved;
    unlock_conn(c);
}

void conn_on_dup(int oldfd, int newfd)
{
    (void)oldfd;
    conn_on_close(newfd);
}
