/* zhost.c — a host that carries its own copy of zlib: linked by
 * tests/e2e/test_safety_process.py with
 *   -Wl,-Bstatic -lz -Wl,-Bdynamic -rdynamic
 * so deflate, inflate, crc32... are defined in the executable and exported from
 * it, exactly the names the shim's agent library (and libcurl) take from
 * libz.so.1. Compresses and decompresses ~argv[1] MB (default 16) of generated
 * text while sampled, checks the round trip, prints sizes and checksums. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static unsigned char *gen(size_t n)
{
    unsigned char *p = malloc(n);
    unsigned int s = 12345;
    static const char *words[] = {"alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta ", "theta\n"};
    size_t i = 0;
    while (i < n) {
        s = s * 1103515245u + 12345u;
        const char *w = words[(s >> 16) & 7];
        size_t l = strlen(w);
        for (size_t k = 0; k < l && i < n; k++)
            p[i++] = (unsigned char)w[k];
        if (((s >> 8) & 31) == 0 && i < n)
            p[i++] = (unsigned char)('0' + ((s >> 4) & 7));
    }
    return p;
}

__attribute__((noinline)) static size_t zhost_compress(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    size_t off = 0;
    while (off < n) {
        size_t chunk = n - off < 65536 ? n - off : 65536;
        z.next_in = (unsigned char *)in + off;
        z.avail_in = (uInt)chunk;
        off += chunk;
        if (deflate(&z, off == n ? Z_FINISH : Z_NO_FLUSH) == Z_STREAM_ERROR)
            return 0;
    }
    size_t len = z.total_out;
    deflateEnd(&z);
    return len;
}

__attribute__((noinline)) static size_t zhost_decompress(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return 0;
    z.next_in = (unsigned char *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = inflate(&z, Z_FINISH);
    size_t len = z.total_out;
    inflateEnd(&z);
    return rc == Z_STREAM_END ? len : 0;
}

int main(int argc, char **argv)
{
    size_t mb = argc > 1 ? (size_t)atol(argv[1]) : 16;
    size_t n = mb << 20;
    unsigned char *in = gen(n);
    size_t cap = compressBound((uLong)n) + 64;
    unsigned char *z = malloc(cap), *back = malloc(n);
    int bad = 0;
    unsigned long crc_z = 0;
    size_t zlen = 0;
    for (int round = 0; round < 2; round++) {
        zlen = zhost_compress(in, n, z, cap);
        size_t blen = zhost_decompress(z, zlen, back, n);
        if (zlen == 0 || blen != n || memcmp(in, back, n) != 0)
            bad++;
        crc_z = crc32(0L, z, (uInt)zlen);
    }
    printf("zlib %s: %zu bytes -> %zu gzip bytes, crc32(in)=%08lx adler32(in)=%08lx crc32(gz)=%08lx, round trips bad: %d\n",
           zlibVersion(), n, zlen, crc32(0L, in, (uInt)n), adler32(1L, in, (uInt)n), crc_z, bad);
    free(in);
    free(z);
    free(back);
    return bad ? 1 : 0;
}
