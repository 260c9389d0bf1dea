/* bench/hookpath.c — microbenchmark of one HTTP request's hook path.
 * One thread, one TCP connection on loopback: the server side is an accept()ed
 * socket (what the shim tracks), the client side a connect()ed one (not
 * tracked). Each iteration: the client write()s a request, the server read()s
 * it and write()s a complete response, the client read()s it back. Under the
 * shim the server's read and write run the hooks, the HTTP parser and the span
 * record (one span per iteration). With "raw", the bytes are a redis PING
 * instead: the connection is classified non-HTTP on its first read and every
 * later call should cost one branch.
 *
 * "ab" measures the same thing inside one process, which is far less noisy on
 * a shared machine than comparing separate runs with and without the shim:
 * two identical loopback connections, one accept()ed through the shim's hook
 * (tracked) and one accepted with a raw accept4 system call the shim never
 * sees (not tracked: its reads and writes cost the wrappers' one branch).
 * Batches of ITERATIONS/ROUNDS requests alternate between the two, in
 * alternating order; the figure is the median over rounds of (tracked -
 * untracked) thread CPU per request: hooks + parse + span, plus what the
 * system calls after them lose to the cache lines they used (the system
 * calls and glibc's own cost cancel out). Without the shim it is an A/A
 * control (the noise floor).
 * usage: hookpath ITERATIONS [http|raw|ab [ROUNDS [CPU]]]
 *   CPU: pin only the measuring thread there (the shim's threads keep the
 *   process's CPUs, as on a server with more cores than workers).
 * Prints JSON: thread CPU and wall ns per iteration (ab: per request, tracked,
 * untracked and the added median with its quartiles).
 *
 * Built with -DHOOKPATH_DIRECT and linked with http/conn.c, http/parser.c and
 * preload/ring.c (no LD_PRELOAD; bench/run.sh builds build/bench/hookpath-direct),
 * the same exchange calls the shim's per-request code itself right after each
 * of the server's system calls, as the read()/write() hooks do, and times only
 * those calls (CLOCK_MONOTONIC, the timer's own cost subtracted): the hook
 * path's cost with the caches as the kernel leaves them, without the system
 * calls' noise. A thread on another CPU drains the span ring every 10 ms as
 * the shim's collector does.
 * usage: hookpath-direct ITERATIONS [CPU [DRAIN_CPU [nginx]]]
 *   nginx: section 3a's exchange instead (wrk's GET with a Host header;
 *   nginx's 9-line response head by write, its 613-byte file by sendfile)
 * Prints JSON: median, quartiles and 90th percentile of the hook path per
 * request (read hook + write hook), and of each hook. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *m)
{
    perror(m);
    exit(1);
}

static void full_read(int fd, char *buf, size_t want)
{
    size_t got = 0;
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r <= 0)
            die("read");
        got += (size_t)r;
    }
}

static void full_write(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            die("write");
        p += w;
        n -= (size_t)w;
    }
}

/* One request/response on (client c, server s). */
__attribute__((unused)) static void one(int c, int s, const char *req, size_t reql, const char *resp,
                                        size_t respl, char *buf)
{
    full_write(c, req, reql);
    full_read(s, buf, reql);
    full_write(s, resp, respl);
    full_read(c, buf, respl);
}

/* A loopback connection to listener ls (bound at a): *c the client, *s the
 * server side; raw: accepted without going through accept()'s hook. */
__attribute__((unused)) static void pair(int ls, struct sockaddr_in *a, int raw, int *c, int *s)
{
    *c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(*c, (struct sockaddr *)a, sizeof *a))
        die("connect");
    struct sockaddr_in peer;
    socklen_t pl = sizeof peer;
    *s = raw ? (int)syscall(SYS_accept4, ls, (struct sockaddr *)&peer, &pl, 0)
             : accept(ls, (struct sockaddr *)&peer, &pl);
    if (*s < 0)
        die("accept");
    int one = 1;
    setsockopt(*c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(*s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

#ifdef HOOKPATH_DIRECT
#include "http/conn.h"
#include "preload/sampler.h"

#include <pthread.h>

__thread struct sampler_thread sampler_tls TLS_IE;

/* The response head nginx 1.22 writes for a static file (section 3a's). */
#define NGINX_HEAD                                                                                 \
    "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 10:22:00 GMT\r\n"             \
    "Content-Type: text/html\r\nContent-Length: 613\r\n"                                           \
    "Last-Modified: Mon, 07 Dec 2026 10:20:00 GMT\r\nConnection: keep-alive\r\n"                   \
    "ETag: \"6754a1b0-265\"\r\nAccept-Ranges: bytes\r\n\r\n"

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set); /* best effort */
}

static void drop(const void *p, uint32_t n, void *arg)
{
    (void)p;
    *(uint64_t *)arg += n;
}

static void *drainer(void *arg)
{
    uint64_t bytes = 0;
    pin((int)(intptr_t)arg);
    for (;;) {
        ring_drain(&conn_span_ring, drop, &bytes);
        usleep(10000);
    }
    return NULL;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 100000;
    int cpu = argc > 2 ? atoi(argv[2]) : -1, dcpu = argc > 3 ? atoi(argv[3]) : 0;
    int ngx = argc > 4 && strcmp(argv[4], "nginx") == 0;
    const char *req = ngx ? "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:56409\r\n\r\n"
                          : "GET /users/42 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hookpath\r\n"
                            "Accept: */*\r\n\r\n";
    const char *resp = ngx ? NGINX_HEAD : "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
                                          "hello";
    size_t reql = strlen(req), respl = strlen(resp);
    static char body[613];
    memset(body, 'x', sizeof body);
    if (conn_init(NULL, NULL) != 0)
        die("conn_init");
    pthread_t t;
    pthread_create(&t, NULL, drainer, (void *)(intptr_t)dcpu);
    if (cpu >= 0)
        pin(cpu);

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a, peer;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a, pl = sizeof peer;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1))
        die("bind/listen");
    getsockname(ls, (struct sockaddr *)&a, &al);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof a))
        die("connect");
    int s = accept(ls, (struct sockaddr *)&peer, &pl);
    if (s < 0)
        die("accept");
    conn_on_accept(s, (struct sockaddr *)&peer, pl);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    /* the timer's own cost: a CLOCK_MONOTONIC read, back to back */
    long long *tr = malloc(sizeof *tr * (size_t)iters), *tw = malloc(sizeof *tw * (size_t)iters),
              *tt = malloc(sizeof *tt * (size_t)iters);
    if (!tr || !tw || !tt)
        die("malloc");
    for (long i = 0; i < iters; i++) {
        long long a0 = now(CLOCK_MONOTONIC);
        tt[i] = now(CLOCK_MONOTONIC) - a0;
    }
    qsort(tt, (size_t)iters, sizeof *tt, cmp_ll);
    long long timer = tt[iters / 2];

    char buf[1024];
    long warm = iters / 10 + 100;
    for (long i = -warm; i < iters; i++) {
        full_write(c, req, reql);
        ssize_t r = read(s, buf, sizeof buf);
        if (r != (ssize_t)reql)
            die("read (one request per read expected)");
        long long t0 = now(CLOCK_MONOTONIC); /* the timer's code is cold too: */
        long long t1 = now(CLOCK_MONOTONIC); /* time the hook after a warm read */
        conn_on_read(s, buf, (size_t)r);
        long long t2 = now(CLOCK_MONOTONIC);
        full_write(s, resp, respl);
        if (ngx) /* nginx: the head by writev, the file by sendfile */
            full_write(s, body, sizeof body);
        long long t3 = now(CLOCK_MONOTONIC);
        long long t4 = now(CLOCK_MONOTONIC);
        conn_on_write(s, resp, respl);
        if (ngx)
            conn_on_sendfile(s, sizeof body);
        long long t5 = now(CLOCK_MONOTONIC);
        full_read(c, buf, respl);
        if (ngx)
            full_read(c, buf, sizeof body);
        (void)t0;
        (void)t3;
        if (i >= 0) {
            tr[i] = t2 - t1 - timer;
            tw[i] = t5 - t4 - timer;
            tt[i] = tr[i] + tw[i];
        }
    }
    qsort(tt, (size_t)iters, sizeof *tt, cmp_ll);
    qsort(tr, (size_t)iters, sizeof *tr, cmp_ll);
    qsort(tw, (size_t)iters, sizeof *tw, cmp_ll);
    printf("{\"hook_ns_median\": %lld, \"hook_ns_q1\": %lld, \"hook_ns_q3\": %lld, \"hook_ns_p90\": %lld, "
           "\"read_hook_ns_median\": %lld, \"write_hook_ns_median\": %lld, \"timer_ns\": %lld, "
           "\"iters\": %ld}\n",
           tt[iters / 2], tt[iters / 4], tt[iters * 3 / 4], tt[iters * 9 / 10], tr[iters / 2], tw[iters / 2],
           timer, iters);
    free(tr);
    free(tw);
    free(tt);
    return 0;
}
#else
static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 100000;
    int raw = argc > 2 && strcmp(argv[2], "raw") == 0;
    int ab = argc > 2 && strcmp(argv[2], "ab") == 0;
    const char *req = raw ? "*1\r\n$4\r\nPING\r\n"
                          : "GET /users/42 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hookpath\r\n"
                            "Accept: */*\r\n\r\n";
    const char *resp = raw ? "+PONG\r\n"
                           : "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
                             "hello";
    size_t reql = strlen(req), respl = strlen(resp);

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 2))
        die("bind/listen");
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    int c, s;
    pair(ls, &a, 0, &c, &s);
    char buf[512];

    if (ab) {
        long rounds = argc > 3 ? atol(argv[3]) : 200;
        if (argc > 4) { /* this thread only: the shim's threads keep the process's CPUs */
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(atoi(argv[4]), &set);
            if (sched_setaffinity(0, sizeof set, &set))
                die("sched_setaffinity");
        }
        if (rounds < 1)
            rounds = 1;
        long batch = iters / rounds > 0 ? iters / rounds : 1;
        int c2, s2;
        pair(ls, &a, 1, &c2, &s2);
        long long *d = malloc(sizeof *d * (size_t)rounds), *t = malloc(sizeof *t * (size_t)rounds),
                  *u = malloc(sizeof *u * (size_t)rounds);
        if (!d || !t || !u)
            die("malloc");
        for (long i = 0; i < iters / 10 + 100; i++) { /* warm-up: both paths */
            one(c, s, req, reql, resp, respl, buf);
            one(c2, s2, req, reql, resp, respl, buf);
        }
        for (long r = 0; r < rounds; r++) {
            long long ns[2];
            for (int k = 0; k < 2; k++) {
                int tracked = (int)((r + k) & 1); /* alternate which goes first */
                int cc = tracked ? c : c2, ss = tracked ? s : s2;
                long long t0 = now(CLOCK_THREAD_CPUTIME_ID);
                for (long i = 0; i < batch; i++)
                    one(cc, ss, req, reql, resp, respl, buf);
                ns[tracked] = now(CLOCK_THREAD_CPUTIME_ID) - t0;
            }
            t[r] = ns[1] * 10 / batch; /* tenths of ns per request */
            u[r] = ns[0] * 10 / batch;
            d[r] = t[r] - u[r];
        }
        qsort(d, (size_t)rounds, sizeof *d, cmp_ll);
        qsort(t, (size_t)rounds, sizeof *t, cmp_ll);
        qsort(u, (size_t)rounds, sizeof *u, cmp_ll);
        printf("{\"added_ns_median\": %.1f, \"added_ns_q1\": %.1f, \"added_ns_q3\": %.1f, "
               "\"tracked_ns_median\": %.1f, \"untracked_ns_median\": %.1f, \"rounds\": %ld, "
               "\"batch\": %ld}\n",
               d[rounds / 2] / 10.0, d[rounds / 4] / 10.0, d[rounds * 3 / 4] / 10.0, t[rounds / 2] / 10.0,
               u[rounds / 2] / 10.0, rounds, batch);
        free(d);
        free(t);
        free(u);
        return 0;
    }

    long warm = iters / 10 + 100;
    long long c0 = 0, w0 = 0;
    for (long i = -warm; i < iters; i++) {
        if (i == 0) {
            c0 = now(CLOCK_THREAD_CPUTIME_ID);
            w0 = now(CLOCK_MONOTONIC);
        }
        one(c, s, req, reql, resp, respl, buf);
    }
    long long c1 = now(CLOCK_THREAD_CPUTIME_ID), w1 = now(CLOCK_MONOTONIC);
    printf("{\"cpu_ns_per_iter\": %.1f, \"wall_ns_per_iter\": %.1f, \"iters\": %ld}\n",
           (double)(c1 - c0) / iters, (double)(w1 - w0) / iters, iters);
    close(c);
    close(s);
    close(ls);
    return 0;
}
#endif
