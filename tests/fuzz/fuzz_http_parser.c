/* tests/fuzz/fuzz_http_parser.c — libFuzzer target for http/parser.c.
 *
 * Input: byte 0 picks the cuts and which responses answer a HEAD request;
 * the rest is one stream fed to the request parser and to the response
 * parser, continuing after every HTTP_P_DONE as pipelined messages are.
 * Each stream is fed whole, cut in two at a position derived from byte 0,
 * cut in several pseudo-random places, and (up to 4 KB) byte by byte: every
 * transcript (events, message boundaries, digests of all result fields and
 * of the private state) must be identical, and http/parser.h's invariants
 * (used <= len, bounds, NUL terminations, secrets never captured) must hold
 * after every call. The response side also replays the first body through
 * http_resp_skip_body (sendfile) and checks that ERROR and DONE are sticky.
 * A difference aborts, which libFuzzer reports as a crash.
 *
 * Build and run: sh tests/fuzz/run-fuzz.sh [seconds]  (or make fuzz). */
#include "http/parser.h"
#include "tests/fuzz/http_transcript.h"

#include <stdio.h>
#include <stdlib.h>

/* Covers a default name listed again, a framing header, the secrets (which
 * must never be captured) and one slot left empty. */
static const char *const extra_names[HTTP_MAX_EXTRA] = {
    "x-request-id", "content-type", "authorization", "host",
    "content-length", "set-cookie", "cookie", NULL,
};

static http_req req;
static http_resp resp;
static hx_tr ref, got;
static size_t cuts[4096 + 16];

static void die(const char *side, const char *what, const char *why)
{
    fprintf(stderr, "fuzz_http_parser: %s parser, %s: %s\n", side, what, why);
    abort();
}

static void set_names(void)
{
    for (unsigned i = 0; i < HTTP_MAX_EXTRA; i++) {
        req.extra_names[i] = extra_names[i];
        resp.extra_names[i] = extra_names[i];
    }
}

static void one(int is_resp, const uint8_t *d, size_t len, const size_t *c, unsigned nc,
                uint32_t head_bits, hx_tr *t)
{
    if (is_resp)
        hx_run_resp(&resp, d, len, c, nc, head_bits, t);
    else
        hx_run_req(&req, d, len, c, nc, t);
}

static void compare(int is_resp, const uint8_t *d, size_t len, const size_t *c, unsigned nc,
                    uint32_t head_bits, const char *what)
{
    const char *side = is_resp ? "response" : "request";
    one(is_resp, d, len, c, nc, head_bits, &got);
    if (got.bad)
        die(side, what, got.why);
    const char *w = hx_diff(&ref, &got);
    if (w)
        die(side, what, w);
}

/* sendfile: the body bytes of the first response, or k of them, bypass feed
 * through http_resp_skip_body. With a Content-Length body the message must
 * end at the same stream offset as when every byte is fed (ref); skipping
 * more than the body is an error. Also: ERROR and DONE are sticky. */
static void check_skip_body(const uint8_t *d, size_t len, uint32_t head_bits, uint8_t mode)
{
    size_t used, h = 0;
    int ev = 0;
    http_resp_reset(&resp, head_bits & 1);
    while (h < len && !(ev & (HTTP_P_HEADERS | HTTP_P_ERROR)))
        ev = http_resp_feed(&resp, d + h++, 1, &used); /* h: just past the head */
    if (ev & HTTP_P_ERROR) {
        ev = http_resp_feed(&resp, d, len, &used);
        if (ev != HTTP_P_ERROR || used != len)
            die("response", "sticky error", "feed after ERROR");
        return;
    }
    if (!(ev & HTTP_P_HEADERS))
        return;
    if (ev & HTTP_P_DONE) {
        if (http_resp_feed(&resp, d, len, &used) != HTTP_P_DONE || used != 0)
            die("response", "sticky done", "feed after DONE");
        return;
    }
    if (resp.chunked || resp.body_until_close || resp.content_length <= 0 || ref.n == 0)
        return;
    uint64_t cl = (uint64_t)resp.content_length;
    uint64_t k = mode & 1 ? cl : (uint64_t)(mode * 7u) % (cl + 2);
    if (k > len - h && k <= cl)
        k = len - h;
    ev = http_resp_skip_body(&resp, k);
    if (k > cl) {
        if (ev != HTTP_P_ERROR)
            die("response", "skip_body", "skipping past the body is not an error");
        return;
    }
    if ((ev == HTTP_P_DONE) != (k == cl) || (ev & ~HTTP_P_DONE))
        die("response", "skip_body", "DONE exactly when the body is complete");
    if (ev == HTTP_P_DONE) {
        if (!(ref.m[0].ev & HTTP_P_DONE) || ref.m[0].end != h + k)
            die("response", "skip_body", "ends elsewhere than when fed");
        return;
    }
    size_t off = h + (size_t)k;
    ev = off < len ? http_resp_feed(&resp, d + off, len - off, &used) : 0;
    if ((ev & HTTP_P_DONE) != (ref.m[0].ev & HTTP_P_DONE) ||
        ((ev & HTTP_P_DONE) && ref.m[0].end != off + used))
        die("response", "skip_body", "message end differs from feeding every byte");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const uint8_t *d = data + 1;
    size_t len = size - 1;
    /* a HEAD pattern over the pipelined responses, from the same byte */
    uint32_t head_bits = (mode & 0x80) ? ((mode & 0x40) ? 0xaaaaaaaau : 0u) | ((mode >> 4) & 3u) : 0;

    set_names();
    for (int is_resp = 0; is_resp < 2; is_resp++) {
        const char *side = is_resp ? "response" : "request";
        one(is_resp, d, len, NULL, 0, head_bits, &ref);
        if (ref.bad)
            die(side, "one-shot", ref.why);

        /* two pieces, cut where byte 0 says */
        size_t cut = len ? ((size_t)mode * 2654435761u) % (len + 1) : 0;
        cuts[0] = cut;
        compare(is_resp, d, len, cuts, 1, head_bits, "2-way split");

        /* several pseudo-random cuts, seeded by byte 0 and the length */
        uint64_t x = (uint64_t)mode * 0x9e3779b97f4a7c15ull + len;
        unsigned nc = 2 + (unsigned)(x % 13);
        size_t prev = 0;
        for (unsigned k = 0; k < nc; k++) {
            x ^= x >> 31;
            x *= 0xbf58476d1ce4e5b9ull;
            x ^= x >> 27;
            size_t left = len - prev;
            /* favour short pieces: that is where splits go wrong */
            size_t step = left ? (size_t)(x % ((left < 16 ? left : 16) + 1)) : 0;
            if (x & 0x100000)
                step = left ? (size_t)(x % (left + 1)) : 0;
            cuts[k] = prev + step;
            prev = cuts[k];
        }
        compare(is_resp, d, len, cuts, nc, head_bits, "multi-way split");

        /* byte by byte */
        if (len >= 2 && len <= 4096) {
            for (size_t k = 0; k + 1 < len; k++)
                cuts[k] = k + 1;
            compare(is_resp, d, len, cuts, (unsigned)(len - 1), head_bits, "byte by byte");
        }
        if (is_resp)
            check_skip_body(d, len, head_bits, mode); /* ref: the response one-shot */
    }
    return 0;
}
