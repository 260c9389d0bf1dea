/* preload/config.c — reads DD_* / DD_SHIM_* / OTEL_* settings into a
 * struct shim_config. Called once by the constructor, on the thread that loads
 * the shim; never in signal context. A bad value never stops the host: it
 * prints one "ddshim:" line (naming the variable and what it accepts) and turns
 * off only the part it configures. */
#include "preload/config.h"

#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

int config_parse_bool(const char *s)
{
    static const char *const yes[] = {"true", "1", "yes", "on", "y", "t"};
    static const char *const no[] = {"false", "0", "no", "off", "n", "f"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return 1;
        if (strcasecmp(s, no[i]) == 0)
            return 0;
    }
    return -1;
}

/* Whole-string decimal integer in [lo, hi]; -1 on anything else. */
/* "123", "64K", "32M", "1G" (powers of 1024), up to 1 TiB. */
static int parse_bytes(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return -1;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p++ - '0');
        if (v > (1ull << 40))
            return -1;
    }
    int shift = 0;
    if (*p == 'k' || *p == 'K')
        shift = 10;
    else if (*p == 'm' || *p == 'M')
        shift = 20;
    else if (*p == 'g' || *p == 'G')
        shift = 30;
    if (shift) {
        p++;
        if (*p == 'i' || *p == 'I')
            p++;
        if (*p == 'b' || *p == 'B')
            p++;
    }
    if (*p || (v << shift) > (1ull << 40))
        return -1;
    *out = v << shift;
    return 0;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0')
        return -1;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Same URL grammar as agent_io/transport.c's aio_url_parse (which does the
 * real parse in the uploader); here only to report a bad value at start. */
static int url_ok(const char *u)
{
    if (strncmp(u, "unix://", 7) == 0)
        return u[7] == '/' && u[8] != '\0' ? 0 : -1;
    if (strncmp(u, "unix:/", 6) == 0)
        return u[6] != '\0' ? 0 : -1;
    if (strncmp(u, "http://", 7) != 0)
        return -1;
    const char *h = u + 7;
    const char *end = h + strcspn(h, "/");
    const char *colon = NULL;
    if (*h == '[') { /* [v6]:port */
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            return -1;
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
    }
    const char *host_end = colon ? colon : end;
    if (host_end == h)
        return -1;
    for (const char *p = h; p < host_end; p++)
        if (isspace((unsigned char)*p) || *p == '@' || *p == '?' || *p == '#')
            return -1;
    if (colon) {
        if (colon + 1 == end || end - colon > 6)
            return -1;
        long port = 0;
        for (const char *p = colon + 1; p < end; p++) {
            if (!isdigit((unsigned char)*p))
                return -1;
            port = port * 10 + (*p - '0');
        }
        if (port < 1 || port > 65535)
            return -1;
    }
    return 0;
}

static const char *get(const char *(*g)(const char *), const char *name)
{
    const char *v = g(name);
    return v && *v ? v : NULL;
}

static void bad(const char *var, const char *val, const char *accepts, const char *effect)
{
    /* A URL may carry user:password@ or ?key=value: never echo those. */
    char shown[96];
    const char *s = strstr(val, "://");
    const char *auth = s ? s + 3 : val;
    size_t alen = strcspn(auth, "/?#");
    const char *at = memrchr(auth, '@', alen);
    if (at)
        snprintf(shown, sizeof shown, "%.*s***@%.*s", (int)(auth - val), val,
                 (int)strcspn(at + 1, "?#"), at + 1);
    else
        snprintf(shown, sizeof shown, "%.*s", (int)strcspn(val, "?#"), val);
    log_error("%s=\"%.64s\" is not valid (accepts %s); %s", var, shown, accepts, effect);
}

/* A size setting (parse_bytes): its value, dflt when unset, 0 when bad
 * (said on stderr with what 0 means here, counted in *nbad). */
static uint64_t bytes_setting(const char *(*g)(const char *), const char *name, uint64_t dflt,
                              const char *effect_when_bad, int *nbad)
{
    const char *v = get(g, name);
    if (!v)
        return dflt;
    uint64_t b;
    if (parse_bytes(v, &b) < 0) {
        (*nbad)++;
        bad(name, v, "a size in bytes (suffix K, M or G allowed), 0 for none", effect_when_bad);
        return 0;
    }
    return b;
}

static void append_tag(char *tags, size_t cap, const char *k, size_t klen, const char *v,
                       size_t vlen)
{
    size_t n = strlen(tags);
    int w = snprintf(tags + n, cap - n, "%s%.*s:%.*s", n ? "," : "", (int)klen, k, (int)vlen, v);
    if (w < 0 || (size_t)w >= cap - n)
        tags[n] = '\0';
}

/* OTEL_RESOURCE_ATTRIBUTES "k=v,k=v": service.name, deployment.environment and
 * service.version fill the unified tags when the DD_ names are unset; the
 * rest become tags. */
static void apply_otel_attrs(struct shim_config *c, const char *attrs, int have_service,
                             int have_env, int have_version)
{
    const char *p = attrs;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (eq && eq > p) {
            const char *k = p;
            size_t klen = (size_t)(eq - p);
            const char *v = eq + 1;
            size_t vlen = len - klen - 1;
            char val[256];
            snprintf(val, sizeof val, "%.*s", (int)vlen, v);
            if (klen == 12 && memcmp(k, "service.name", 12) == 0) {
                if (!have_service)
                    copy_str(c->service, sizeof c->service, val);
            } else if (klen == 22 && memcmp(k, "deployment.environment", 22) == 0) {
                if (!have_env)
                    copy_str(c->env, sizeof c->env, val);
            } else if (klen == 15 && memcmp(k, "service.version", 15) == 0) {
                if (!have_version)
                    copy_str(c->version, sizeof c->version, val);
            } else {
                append_tag(c->tags, sizeof c->tags, k, klen, v, vlen);
            }
        }
        p += len;
        if (*p == ',')
            p++;
    }
}

int config_header_names(const char *spec, char names[][64], int max)
{
    int n = 0;
    const char *p = spec;
    while (p && *p && n < max) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        if (len == 0)
            break;
        size_t name_len = strcspn(p, ":, ");
        if (name_len > len)
            name_len = len;
        char *d = names[n];
        size_t k = 0;
        for (size_t i = 0; i < name_len && k < 63; i++)
            d[k++] = (char)tolower((unsigned char)p[i]);
        d[k] = '\0';
        p += len;
        if (!k || !strcmp(d, "authorization") || !strcmp(d, "cookie") || !strcmp(d, "set-cookie") ||
            !strcmp(d, "proxy-authorization"))
            continue;
        n++;
    }
    return n;
}

int config_load(struct shim_config *c, const char *(*g)(const char *), const char *program_name)
{
    int nbad = 0;
    const char *v;
    long n;
    memset(c, 0, sizeof *c);
    c->enabled = c->profiling_enabled = c->trace_enabled = c->agent_enabled = 1;
    c->sample_hz = 99;
    c->upload_period_s = 60;
    c->log_level = LOG_WARN;
    c->sample_rate = -1;

    if ((v = get(g, "DD_SHIM_LOG_LEVEL"))) {
        int l = log_level_parse(v);
        if (l < 0) {
            nbad++;
            bad("DD_SHIM_LOG_LEVEL", v, "off, error, warn, info or debug", "using warn");
        } else {
            c->log_level = l;
        }
    }
    log_threshold = c->log_level;

    if ((v = get(g, "DD_SHIM_ENABLED"))) {
        int b = config_parse_bool(v);
        if (b < 0) {
            nbad++;
            bad("DD_SHIM_ENABLED", v, "true or false", "the shim is off");
            c->enabled = 0;
        } else {
            c->enabled = b;
        }
    }
    if ((v = get(g, "DD_PROFILING_ENABLED"))) {
        int b = config_parse_bool(v);
        if (b < 0) {
            nbad++;
            bad("DD_PROFILING_ENABLED", v, "true or false", "profiling is off");
            c->profiling_enabled = 0;
        } else {
            c->profiling_enabled = b;
        }
    }
    if ((v = get(g, "DD_TRACE_ENABLED"))) {
        int b = config_parse_bool(v);
        if (b < 0) {
            nbad++;
            bad("DD_TRACE_ENABLED", v, "true or false", "tracing is off");
            c->trace_enabled = 0;
        } else {
            c->trace_enabled = b;
        }
    }
    if ((v = get(g, "DD_SHIM_SAMPLE_HZ"))) {
        if (parse_int(v, 1, 10000, &n) < 0) {
            nbad++;
            bad("DD_SHIM_SAMPLE_HZ", v, "an integer from 1 to 10000", "CPU profiling is off");
            c->profiling_enabled = 0;
        } else {
            c->sample_hz = (int)n;
        }
    }
    if ((v = get(g, "DD_PROFILING_UPLOAD_PERIOD"))) {
        if (parse_int(v, 1, 3600, &n) < 0) {
            nbad++;
            bad("DD_PROFILING_UPLOAD_PERIOD", v, "whole seconds from 1 to 3600",
                "CPU profiling is off");
            c->profiling_enabled = 0;
        } else {
            c->upload_period_s = (int)n;
        }
    }
    if ((v = get(g, "DD_TRACE_SAMPLE_RATE"))) {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (errno || *end || end == v || !(d >= 0.0 && d <= 1.0)) {
            nbad++;
            bad("DD_TRACE_SAMPLE_RATE", v, "a number from 0.0 to 1.0", "tracing is off");
            c->trace_enabled = 0;
        } else {
            c->sample_rate = d;
        }
    }

    /* Unified service tags; OTEL names when the DD ones are unset. */
    const char *svc = get(g, "DD_SERVICE");
    const char *env = get(g, "DD_ENV");
    const char *ver = get(g, "DD_VERSION");
    if (svc)
        copy_str(c->service, sizeof c->service, svc);
    else if ((v = get(g, "OTEL_SERVICE_NAME")))
        copy_str(c->service, sizeof c->service, v);
    if (env)
        copy_str(c->env, sizeof c->env, env);
    if (ver)
        copy_str(c->version, sizeof c->version, ver);
    if ((v = get(g, "DD_TAGS")))
        copy_str(c->tags, sizeof c->tags, v);
    if ((v = get(g, "DD_TRACE_HEADER_TAGS")))
        copy_str(c->header_tags, sizeof c->header_tags, v);
    if ((v = get(g, "OTEL_RESOURCE_ATTRIBUTES")))
        apply_otel_attrs(c, v, svc || get(g, "OTEL_SERVICE_NAME"), env != NULL, ver != NULL);
    if (c->service[0] == '\0') {
        const char *base = program_name && *program_name ? program_name : "unnamed-native-app";
        const char *slash = strrchr(base, '/');
        copy_str(c->service, sizeof c->service, slash ? slash + 1 : base);
    }

    /* Where the Agent is. */
    if ((v = get(g, "DD_TRACE_AGENT_URL"))) {
        if (url_ok(v) < 0) {
            nbad++;
            bad("DD_TRACE_AGENT_URL", v, "http://host[:port] or unix:///path/to/socket",
                "nothing is sent to an Agent; profiles go to the output directory");
            c->agent_enabled = 0;
        }
        copy_str(c->agent_url, sizeof c->agent_url, v);
    } else {
        const char *host = get(g, "DD_AGENT_HOST");
        const char *port = get(g, "DD_TRACE_AGENT_PORT");
        struct stat st;
        if (!host && !port && stat("/var/run/datadog/apm.socket", &st) == 0 && S_ISSOCK(st.st_mode)) {
            copy_str(c->agent_url, sizeof c->agent_url, "unix:///var/run/datadog/apm.socket");
        } else {
            if (port && parse_int(port, 1, 65535, &n) < 0) {
                nbad++;
                bad("DD_TRACE_AGENT_PORT", port, "a port number from 1 to 65535", "using 8126");
                port = NULL;
            }
            int ipv6 = host && strchr(host, ':') && host[0] != '[';
            snprintf(c->agent_url, sizeof c->agent_url, "http://%s%s%s:%s", ipv6 ? "[" : "",
                     host ? host : "localhost", ipv6 ? "]" : "", port ? port : "8126");
            if (url_ok(c->agent_url) < 0) {
                nbad++;
                bad("DD_AGENT_HOST", host ? host : "", "a host name or IP address",
                    "nothing is sent to an Agent; profiles go to the output directory");
                c->agent_enabled = 0;
            }
        }
    }

    /* One line on stderr says where the data goes, but only where a person
     * looks: a terminal, or the process ddrun started (it sets
     * DD_SHIM_ANNOUNCE_PID to its own pid, which the command inherits by
     * exec). Other processes (a build's compilers, a script's children) keep
     * their stderr byte for byte. */
    c->announce = isatty(STDERR_FILENO);
    if ((v = get(g, "DD_SHIM_ANNOUNCE_PID")) && parse_int(v, 1, 1L << 30, &n) == 0 && n == (long)getpid())
        c->announce = 1;

    /* The spool: payloads the Agent did not take wait there for it. */
    c->spool_max_bytes = bytes_setting(g, "DD_SHIM_SPOOL_MAX_BYTES", 32ull << 20, "nothing is spooled", &nbad);
    /* Symbolization: above this much DWARF (uncompressed) an object is named
     * from its symbol tables only. 4 MB keeps a typical program's own DWARF
     * and leaves out libc6-dbg's (9.5 MB, inflated whole by libdw: ~12 MB of
     * memory and ~40 ms of CPU a profile). Same default as symbolize/'s
     * SYM_DWARF_MAX_DEFAULT. */
    c->dwarf_max_bytes = bytes_setting(g, "DD_SHIM_DWARF_MAX_BYTES", 4ull << 20,
                                       "no DWARF is read: function names only, no file:line", &nbad);

    if ((v = get(g, "DD_SHIM_SPOOL_DIR")) && *v) {
        if (v[0] != '/') {
            char cwd[768];
            if (getcwd(cwd, sizeof cwd))
                snprintf(c->spool_dir, sizeof c->spool_dir, "%s/%s", strcmp(cwd, "/") ? cwd : "", v);
            else
                copy_str(c->spool_dir, sizeof c->spool_dir, v);
        } else {
            copy_str(c->spool_dir, sizeof c->spool_dir, v);
        }
    } else {
        snprintf(c->spool_dir, sizeof c->spool_dir, "/var/tmp/ddshim-%u", (unsigned)geteuid());
    }

    /* Output directory, made absolute now: daemons chdir("/") later. */
    const char *dir = get(g, "DD_SHIM_OUTPUT_DIR");
    c->output_dir_set = dir != NULL;
    if (!dir)
        dir = "ddshim-out";
    if (dir[0] == '/') {
        copy_str(c->output_dir, sizeof c->output_dir, dir);
    } else {
        char cwd[768];
        if (getcwd(cwd, sizeof cwd))
            snprintf(c->output_dir, sizeof c->output_dir, "%s/%s", strcmp(cwd, "/") ? cwd : "", dir);
        else
            copy_str(c->output_dir, sizeof c->output_dir, dir);
    }
    return nbad;
}
