/* bench/hookpath.c — microbenchmark of one HTTP request's hook path.
 * One thread, one TCP connection on loopback: the server side is an accept()ed
 * socket (what the shim tracks), the client side a connect()ed one (not
 * tracked). Each iteration: the client write()s a request, the server read()s
 * it and write()s a complete response, the client read()s it back. Under the
 * shim the server's read and write run the hooks, the HTTP parser and the span
 * record (one span per iteration). With "raw", the bytes are a redis PING
 * instead: the connection is classified non-HTTP on its first read and every
 * later call should cost one branch.
 * usage: hookpath ITERATIONS [http|raw]
 * Prints JSON: thread CPU and wall ns per iteration. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 100000;
    int raw = argc > 2 && strcmp(argv[2], "raw") == 0;
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
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1))
        die("bind/listen");
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof a))
        die("connect");
    struct sockaddr_in peer;
    socklen_t pl = sizeof peer;
    int s = accept(ls, (struct sockaddr *)&peer, &pl);
    if (s < 0)
        die("accept");
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    char buf[512];
    long warm = iters / 10 + 100;
    long long c0 = 0, w0 = 0;
    for (long i = -warm; i < iters; i++) {
        if (i == 0) {
            c0 = now(CLOCK_THREAD_CPUTIME_ID);
            w0 = now(CLOCK_MONOTONIC);
        }
        full_write(c, req, reql);
        full_read(s, buf, reql);
        full_write(s, resp, respl);
        full_read(c, buf, respl);
    }
    long long c1 = now(CLOCK_THREAD_CPUTIME_ID), w1 = now(CLOCK_MONOTONIC);
    printf("{\"cpu_ns_per_iter\": %.1f, \"wall_ns_per_iter\": %.1f, \"iters\": %ld}\n",
           (double)(c1 - c0) / iters, (double)(w1 - w0) / iters, iters);
    close(c);
    close(s);
    close(ls);
    return 0;
}
