/* http/conn.h — per-socket HTTP/1.x server state, driven by the I/O hooks of
 * preload/hooks.c on host threads: a request's first byte read starts a span,
 * the last byte of its response written ends it, and the finished span goes
 * into the span ring for the uploader. Sockets that do not start with an
 * HTTP/1.x request line are dropped after their first bytes and cost one
 * branch per call from then on.
 *
 * Never allocates after conn_init (state lives in mmap'd tables), never
 * blocks (a per-socket try-lock: a socket used by two threads at once, or
 * re-entered from a host's signal handler, stops being tracked rather than
 * wait), keeps errno. */
#ifndef DDSHIM_HTTP_CONN_H
#define DDSHIM_HTTP_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "preload/ring.h"

#define CONN_MAX_FD 65536

enum { CONN_NONE = 0, CONN_CANDIDATE = 1, CONN_HTTP = 2, CONN_IGNORED = 3 };

/* State byte per fd, NULL until the first accepted socket: the hooks' one branch. */
extern uint8_t *volatile conn_state;
extern struct ring conn_span_ring;

struct conn_counters {
    uint64_t spans;            /* spans put in the ring (no atomic RMW on the hot path:
                                  approximate when threads race) */
    uint64_t dropped_ring;     /* ring full */
    uint64_t dropped_pool;     /* too many requests in flight at once */
    uint64_t dropped_contended;/* socket used by two threads at once: tracking stopped */
    uint64_t dropped_handoff;  /* requests left to another process after fork */
    uint64_t not_http;         /* sockets dropped after their first bytes */
    uint64_t dropped_depth;    /* connections pipelining deeper than followed */
};
extern struct conn_counters conn_counters;

/* Set up (constructor). extra_req/extra_resp: lowercase header names of
 * DD_TRACE_HEADER_TAGS (NULL-terminated, at most 8 each; the strings must
 * live for the process). 0 or -1 (tracing off). */
int conn_init(const char *const *extra_req, const char *const *extra_resp);
/* A fork child: nothing to drop (records half-written by other threads are
 * the ring's concern: it is reset); counts a fork generation. */
void conn_after_fork(int child);

static inline int conn_tracked(int fd)
{
    uint8_t *s = conn_state;
    return s && fd >= 0 && fd < CONN_MAX_FD && (s[fd] == CONN_CANDIDATE || s[fd] == CONN_HTTP);
}

void conn_on_accept(int fd, const struct sockaddr *addr, socklen_t len);
void conn_on_read(int fd, const void *buf, size_t n);
void conn_on_readv(int fd, const struct iovec *iov, int iovcnt, size_t n);
void conn_on_write(int fd, const void *buf, size_t n);
void conn_on_writev(int fd, const struct iovec *iov, int iovcnt, size_t n);
void conn_on_sendfile(int fd, size_t n);
/* The fd is closed (or shut down for writing): a body delimited by close ends
 * here; requests without a response are reported as such. */
void conn_on_close(int fd);
/* newfd now refers to oldfd's socket (dup*): newfd is not tracked (the
 * original keeps the state), any old state of newfd ends. */
void conn_on_dup(int oldfd, int newfd);

#endif
