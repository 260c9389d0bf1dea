/* examples/http_server.c — a small HTTP/1.1 server on plain read()/write(),
 * one thread per connection, keep-alive, to run under the shim:
 *
 *   make build/progs/http_server
 *   build/ddrun --service demo -- build/progs/http_server 8080
 *   curl localhost:8080/users/42
 *
 * Endpoints:
 *   GET  /                     "hello"
 *   GET  /users/<id>           a JSON user
 *   GET  /slow?ms=N            answers after N ms (sleeping, then burning CPU for N/4 ms)
 *   GET  /burn?ms=N            burns N ms of CPU in burn_cpu() (for CPU-by-endpoint)
 *   GET  /chunked              a chunked response in three writes
 *   GET  /error                503
 *   POST /echo                 echoes the body (Content-Length bodies; Expect: 100-continue honoured)
 *   GET  /stream               a body delimited by closing the connection (no length)
 *   GET  /drop                 closes the connection without answering
 *   GET  /cut                  a 200 head promising 100 bytes, 10 of them, then closes
 *   HEAD any of the above      headers only
 * usage: http_server PORT [--port-file FILE] */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile double sink;

static long long cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

__attribute__((noinline)) void burn_cpu(long ms)
{
    long long end = cpu_ns() + ms * 1000000LL;
    double x = 1;
    while (cpu_ns() < end)
        for (int i = 0; i < 10000; i++)
            x = x * 1.000001 + 1.0 / (x + i);
    sink = x;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int respond(int fd, int head_only, int status, const char *reason, const char *ctype,
                   const char *body, int keep_alive)
{
    char hdr[512];
    size_t blen = strlen(body);
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                     reason, ctype, blen, keep_alive ? "" : "Connection: close\r\n");
    if (write_all(fd, hdr, (size_t)n) < 0)
        return -1;
    return head_only ? 0 : write_all(fd, body, blen);
}

struct conn_buf {
    char data[65536];
    size_t len;
};

/* Read until the buffer holds a complete head; returns its length or -1. */
static long read_head(int fd, struct conn_buf *b)
{
    for (;;) {
        char *end = memmem(b->data, b->len, "\r\n\r\n", 4);
        if (end)
            return end + 4 - b->data;
        if (b->len == sizeof b->data)
            return -1;
        ssize_t r = read(fd, b->data + b->len, sizeof b->data - b->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        b->len += (size_t)r;
    }
}

static const char *header(const char *head, size_t hlen, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = head; p < head + hlen;) {
        const char *eol = memmem(p, (size_t)(head + hlen - p), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl + 1 && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        p = eol + 2;
    }
    return NULL;
}

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct conn_buf *b = malloc(sizeof *b);
    if (!b) {
        close(fd);
        return NULL;
    }
    b->len = 0;
    for (;;) {
        long hl = read_head(fd, b);
        if (hl < 0)
            break;
        char method[16] = "", target[2048] = "", version[16] = "";
        if (sscanf(b->data, "%15s %2047s %15s", method, target, version) != 3)
            break;
        char v[256];
        int keep = strcmp(version, "HTTP/1.1") == 0;
        if (header(b->data, (size_t)hl, "Connection", v, sizeof v))
            keep = strcasecmp(v, "close") != 0 && (keep || strcasecmp(v, "keep-alive") == 0);
        long clen = header(b->data, (size_t)hl, "Content-Length", v, sizeof v) ? atol(v) : 0;
        int expect = header(b->data, (size_t)hl, "Expect", v, sizeof v) && strcasecmp(v, "100-continue") == 0;
        int head_only = strcmp(method, "HEAD") == 0;
        /* Body: what is already buffered, then the rest. */
        if (expect && clen > 0 && write_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
            break;
        char *body = malloc((size_t)clen + 1);
        if (!body)
            break;
        size_t have = b->len - (size_t)hl < (size_t)clen ? b->len - (size_t)hl : (size_t)clen;
        memcpy(body, b->data + hl, have);
        while ((long)have < clen) {
            ssize_t r = read(fd, body + have, (size_t)clen - have);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            have += (size_t)r;
        }
        body[have] = '\0';
        size_t consumed = (size_t)hl + ((size_t)clen < b->len - (size_t)hl ? (size_t)clen : b->len - (size_t)hl);
        memmove(b->data, b->data + consumed, b->len - consumed);
        b->len -= consumed;

        int rc = 0;
        char out[512];
        const char *q = strchr(target, '?');
        long ms = q && strstr(q, "ms=") ? atol(strstr(q, "ms=") + 3) : 0;
        if (strcmp(target, "/") == 0) {
            rc = respond(fd, head_only, 200, "OK", "text/plain", "hello\n", keep);
        } else if (strncmp(target, "/users/", 7) == 0) {
            snprintf(out, sizeof out, "{\"id\": \"%.64s\", \"name\": \"user\"}\n", target + 7);
            rc = respond(fd, head_only, 200, "OK", "application/json", out, keep);
        } else if (strncmp(target, "/slow", 5) == 0) {
            struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
            nanosleep(&d, NULL);
            burn_cpu(ms / 4);
            rc = respond(fd, head_only, 200, "OK", "text/plain", "slow\n", keep);
        } else if (strncmp(target, "/burn", 5) == 0) {
            burn_cpu(ms);
            rc = respond(fd, head_only, 200, "OK", "text/plain", "burnt\n", keep);
        } else if (strcmp(target, "/chunked") == 0) {
            const char *h = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
            rc = write_all(fd, h, strlen(h));
            if (!head_only && rc == 0) {
                rc |= write_all(fd, "5\r\nhello\r\n", 10);
                rc |= write_all(fd, "6\r\n world\r\n", 11);
                rc |= write_all(fd, "0\r\n\r\n", 5);
            }
        } else if (strcmp(target, "/stream") == 0) {
            const char *h = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
            rc = write_all(fd, h, strlen(h));
            if (!head_only && rc == 0)
                rc = write_all(fd, "streamed until close\n", 21);
            free(body);
            break;
        } else if (strcmp(target, "/cut") == 0) {
            const char *h = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n";
            if (write_all(fd, h, strlen(h)) == 0 && !head_only)
                write_all(fd, "only ten\r\n", 10);
            free(body);
            break;
        } else if (strcmp(target, "/drop") == 0) {
            free(body);
            break;
        } else if (strcmp(target, "/error") == 0) {
            rc = respond(fd, head_only, 503, "Service Unavailable", "text/plain", "down\n", keep);
        } else if (strcmp(target, "/echo") == 0 && strcmp(method, "POST") == 0) {
            rc = respond(fd, head_only, 200, "OK", "application/octet-stream", body, keep);
        } else {
            rc = respond(fd, head_only, 404, "Not Found", "text/plain", "not found\n", keep);
        }
        free(body);
        if (rc < 0 || !keep)
            break;
    }
    free(b);
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    const char *port_file = argc > 3 && strcmp(argv[2], "--port-file") == 0 ? argv[3] : NULL;
    signal(SIGPIPE, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 128) != 0) {
        perror("http_server: bind/listen");
        return 1;
    }
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &al);
    if (port_file) {
        FILE *f = fopen(port_file, "w");
        if (f) {
            fprintf(f, "%d\n", ntohs(a.sin_port));
            fclose(f);
        }
    }
    fprintf(stderr, "http_server: listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &at, serve, (void *)(intptr_t)c) != 0)
            close(c);
        pthread_attr_destroy(&at);
    }
    return 0;
}
