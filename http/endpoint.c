/* http/endpoint.c — http.endpoint inference (endpoint_of): a request path with
 * its id-like segments replaced by {param:*}, as Datadog's tracers compute it
 * when a span has no route ("resource renaming"). Runs in the uploader thread
 * only; no allocation, no state.
 *
 * The rules, tried in this order on each non-empty segment (first match wins),
 * are dd-trace-py's SimplifiedEndpointComputer and dd-trace-java's
 * HttpEndpointTagging:
 *   {param:int}     ^[1-9][0-9]+$
 *   {param:int_id}  ^(?=.*[0-9].*)[0-9._-]{3,}$
 *   {param:hex}     ^(?=.*[0-9].*)[A-Fa-f0-9]{6,}$
 *   {param:hex_id}  ^(?=.*[0-9].*)[A-Fa-f0-9._-]{6,}$
 *   {param:str}     ^(.{20,}|.*[%&'()*+,:=@].*)$
 * Empty segments are dropped, at most 8 are kept, and no segment gives "/".
 * Character classes alone decide, so one pass per segment does (as in
 * dd-trace-cpp's endpoint_inferral.cpp). Length for {param:str} counts
 * characters, as Python and Java do, so a UTF-8 sequence counts once. */
#include "http/span_rules.h"

#include <string.h>

#define ENDPOINT_MAX_SEGMENTS 8

static const char *classify(const char *s, size_t n)
{
    int digit = 0, only_digits = 1, only_int_id = 1, only_hex = 1, only_hex_id = 1, special = 0;
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int d = c >= '0' && c <= '9';
        int hx = (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        int delim = c == '.' || c == '_' || c == '-';
        digit |= d;
        only_digits &= d;
        only_int_id &= d || delim;
        only_hex &= d || hx;
        only_hex_id &= d || hx || delim;
        special |= c != 0 && strchr("%&'()*+,:=@", c) != NULL;
        chars += (c & 0xc0) != 0x80;
    }
    if (n >= 2 && s[0] != '0' && only_digits)
        return "{param:int}";
    if (n >= 3 && digit && only_int_id)
        return "{param:int_id}";
    if (n >= 6 && digit && only_hex)
        return "{param:hex}";
    if (n >= 6 && digit && only_hex_id)
        return "{param:hex_id}";
    if (chars >= 20 || special)
        return "{param:str}";
    return NULL;
}

size_t endpoint_of(const char *path, size_t len, char *out, size_t cap)
{
    if (!out || cap == 0)
        return 0;
    size_t o = 0;
    int nseg = 0;
    const char *p = path ? path : "", *end = p + (path ? len : 0);
    /* The caller passes the path alone; a query or fragment is still never
     * part of an endpoint. */
    for (const char *q = p; q < end; q++)
        if (*q == '?' || *q == '#') {
            end = q;
            break;
        }
    while (p < end && nseg < ENDPOINT_MAX_SEGMENTS) {
        while (p < end && *p == '/')
            p++;
        if (p >= end)
            break;
        const char *seg = p;
        while (p < end && *p != '/')
            p++;
        size_t sl = (size_t)(p - seg);
        const char *rep = classify(seg, sl);
        const char *w = rep ? rep : seg;
        size_t wl = rep ? strlen(rep) : sl;
        /* Whole segments only: a cut one would be a different endpoint. */
        if (o + 1 + wl + 1 > cap)
            break;
        out[o++] = '/';
        memcpy(out + o, w, wl);
        o += wl;
        nseg++;
    }
    if (o == 0 && cap >= 2)
        out[o++] = '/';
    out[o] = 0;
    return o;
}
