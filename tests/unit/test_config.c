/* tests/unit/test_config.c — preload/config.c: defaults, every variable, bad
 * values (one line each, that part off), OTEL fallbacks, URL grammar. */
#include "common/log.h"
#include "preload/config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int n, failed;
static void ok(int cond, const char *desc)
{
    n++;
    if (!cond)
        failed++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n, desc);
}

static const char *vars[64][2];
static int nvars;
static const char *fake_getenv(const char *name)
{
    for (int i = 0; i < nvars; i++)
        if (strcmp(vars[i][0], name) == 0)
            return vars[i][1];
    return NULL;
}
static void setv(const char *k, const char *v)
{
    vars[nvars][0] = k;
    vars[nvars][1] = v;
    nvars++;
}

/* Run config_load with stderr captured; returns the bad count, fills err. */
static int load(struct shim_config *c, char *err, size_t errlen)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    int saved = dup(2);
    dup2(pipefd[1], 2);
    int bad = config_load(c, fake_getenv, "/usr/bin/myprog");
    dup2(saved, 2);
    close(saved);
    close(pipefd[1]);
    ssize_t r = read(pipefd[0], err, errlen - 1);
    err[r > 0 ? r : 0] = '\0';
    close(pipefd[0]);
    return bad;
}

static int count_lines(const char *s)
{
    int k = 0;
    for (; *s; s++)
        k += *s == '\n';
    return k;
}

int main(void)
{
    struct shim_config c;
    char err[4096];

    nvars = 0;
    int bad = load(&c, err, sizeof err);
    ok(bad == 0 && err[0] == '\0', "no variables: no complaints");
    ok(c.enabled && c.profiling_enabled && c.trace_enabled && c.agent_enabled, "everything on by default");
    ok(strcmp(c.service, "myprog") == 0, "service defaults to the program's base name");
    ok(c.sample_hz == 99 && c.upload_period_s == 60, "99 Hz and 60 s by default");
    ok(strcmp(c.agent_url, "http://localhost:8126") == 0 || strcmp(c.agent_url, "unix:///var/run/datadog/apm.socket") == 0,
       "default Agent URL");
    ok(!c.output_dir_set && strstr(c.output_dir, "/ddshim-out") && c.output_dir[0] == '/',
       "default output dir is ./ddshim-out made absolute");

    nvars = 0;
    setv("DD_SERVICE", "web");
    setv("DD_ENV", "prod");
    setv("DD_VERSION", "1.2");
    setv("DD_TAGS", "a:b,c:d");
    setv("DD_SHIM_SAMPLE_HZ", " 1999 ");
    setv("DD_PROFILING_UPLOAD_PERIOD", "10");
    setv("DD_TRACE_AGENT_URL", "unix:///tmp/x.sock");
    setv("DD_SHIM_OUTPUT_DIR", "/var/tmp/prof");
    setv("DD_PROFILING_ENABLED", "TRUE");
    setv("DD_TRACE_ENABLED", "0");
    setv("DD_TRACE_SAMPLE_RATE", "0.25");
    bad = load(&c, err, sizeof err);
    ok(bad == 0, "all good values accepted");
    ok(strcmp(c.service, "web") == 0 && strcmp(c.env, "prod") == 0 && strcmp(c.version, "1.2") == 0 &&
           strcmp(c.tags, "a:b,c:d") == 0,
       "unified service tags and DD_TAGS read");
    ok(c.sample_hz == 1999 && c.upload_period_s == 10, "Hz (with spaces) and period read");
    ok(strcmp(c.agent_url, "unix:///tmp/x.sock") == 0 && c.agent_enabled, "unix:// URL accepted");
    ok(c.output_dir_set && strcmp(c.output_dir, "/var/tmp/prof") == 0, "output dir read");
    ok(c.profiling_enabled == 1 && c.trace_enabled == 0 && c.sample_rate == 0.25, "booleans and sample rate");

    nvars = 0;
    load(&c, err, sizeof err);
    char want[64];
    snprintf(want, sizeof want, "/var/tmp/ddshim-%u", (unsigned)geteuid());
    ok(strcmp(c.spool_dir, want) == 0 && c.spool_max_bytes == 32ull << 20,
       "spool: /var/tmp/ddshim-<euid>, 32 MiB by default");
    const struct {
        const char *v;
        unsigned long long bytes;
        int good;
    } sizes[] = {{"0", 0, 1},        {"1000", 1000, 1},   {"64K", 65536, 1}, {"8m", 8 << 20, 1},
                 {"1GiB", 1ull << 30, 1}, {"2MB", 2 << 20, 1}, {"-1", 0, 0},    {"1.5M", 0, 0},
                 {"lots", 0, 0},     {"2T", 0, 0},        {"10 M", 0, 0},    {"", 32ull << 20, 1} /* empty = unset */};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        nvars = 0;
        setv("DD_SHIM_SPOOL_MAX_BYTES", sizes[i].v);
        err[0] = '\0';
        int nb = load(&c, err, sizeof err);
        char d[160];
        snprintf(d, sizeof d, "DD_SHIM_SPOOL_MAX_BYTES=\"%s\" %s", sizes[i].v,
                 sizes[i].good ? "read" : "refused with a line naming it, spooling off");
        ok(sizes[i].good ? nb == 0 && c.spool_max_bytes == sizes[i].bytes
                         : nb == 1 && c.spool_max_bytes == 0 && strstr(err, "DD_SHIM_SPOOL_MAX_BYTES") != NULL,
           d);
    }
    nvars = 0;
    load(&c, err, sizeof err);
    ok(c.dwarf_max_bytes == 4ull << 20, "DWARF read up to 4 MiB per object by default");
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        nvars = 0;
        setv("DD_SHIM_DWARF_MAX_BYTES", sizes[i].v);
        err[0] = '\0';
        int nb = load(&c, err, sizeof err);
        unsigned long long want_b = sizes[i].v[0] == '\0' ? 4ull << 20 : sizes[i].bytes;
        char d[160];
        snprintf(d, sizeof d, "DD_SHIM_DWARF_MAX_BYTES=\"%s\" %s", sizes[i].v,
                 sizes[i].good ? "read" : "refused with a line naming it, no DWARF read");
        ok(sizes[i].good ? nb == 0 && c.dwarf_max_bytes == want_b && c.profiling_enabled
                         : nb == 1 && c.dwarf_max_bytes == 0 && c.profiling_enabled &&
                               count_lines(err) == 1 && strstr(err, "DD_SHIM_DWARF_MAX_BYTES") != NULL,
           d);
    }

    nvars = 0;
    setv("DD_SHIM_SPOOL_DIR", "rel/spool");
    load(&c, err, sizeof err);
    ok(c.spool_dir[0] == '/' && strstr(c.spool_dir, "/rel/spool"), "a relative DD_SHIM_SPOOL_DIR is made absolute");

    nvars = 0;
    setv("DD_AGENT_HOST", "10.1.2.3");
    setv("DD_TRACE_AGENT_PORT", "9126");
    load(&c, err, sizeof err);
    ok(strcmp(c.agent_url, "http://10.1.2.3:9126") == 0, "URL built from DD_AGENT_HOST and DD_TRACE_AGENT_PORT");
    nvars = 0;
    setv("DD_AGENT_HOST", "::1");
    load(&c, err, sizeof err);
    ok(strcmp(c.agent_url, "http://[::1]:8126") == 0, "IPv6 agent host bracketed");

    struct {
        const char *var, *val, *effect_field;
    } bads[] = {
        {"DD_SHIM_SAMPLE_HZ", "fast", "profiling"},  {"DD_SHIM_SAMPLE_HZ", "0", "profiling"},
        {"DD_SHIM_SAMPLE_HZ", "10001", "profiling"}, {"DD_SHIM_SAMPLE_HZ", "99x", "profiling"},
        {"DD_PROFILING_UPLOAD_PERIOD", "0", "profiling"}, {"DD_PROFILING_ENABLED", "maybe", "profiling"},
        {"DD_TRACE_ENABLED", "nah", "trace"},        {"DD_TRACE_SAMPLE_RATE", "2", "trace"},
        {"DD_TRACE_AGENT_URL", "https://x:8126", "agent"}, {"DD_TRACE_AGENT_URL", "http://:8126", "agent"},
        {"DD_TRACE_AGENT_URL", "http://h:99999", "agent"}, {"DD_TRACE_AGENT_URL", "localhost:8126", "agent"},
        {"DD_SHIM_ENABLED", "perhaps", "enabled"},  {"DD_SHIM_LOG_LEVEL", "loud", "none"},
    };
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        nvars = 0;
        setv(bads[i].var, bads[i].val);
        bad = load(&c, err, sizeof err);
        char d[256];
        snprintf(d, sizeof d, "%s=%s: one ddshim: line naming it and what it accepts", bads[i].var, bads[i].val);
        ok(bad == 1 && count_lines(err) == 1 && strncmp(err, "ddshim: ", 8) == 0 &&
               strstr(err, bads[i].var) && strstr(err, "accepts"),
           d);
        const char *f = bads[i].effect_field;
        int off = strcmp(f, "profiling") == 0 ? !c.profiling_enabled
                  : strcmp(f, "trace") == 0   ? !c.trace_enabled
                  : strcmp(f, "agent") == 0   ? !c.agent_enabled
                  : strcmp(f, "enabled") == 0 ? !c.enabled
                                              : c.log_level == LOG_WARN;
        snprintf(d, sizeof d, "%s=%s: only that part turns off", bads[i].var, bads[i].val);
        int others_on = strcmp(f, "profiling") == 0 ? c.trace_enabled && c.agent_enabled
                        : strcmp(f, "trace") == 0   ? c.profiling_enabled
                        : strcmp(f, "agent") == 0   ? c.profiling_enabled && c.trace_enabled
                                                    : 1;
        ok(off && others_on, d);
    }

    nvars = 0;
    setv("OTEL_SERVICE_NAME", "otel-svc");
    setv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=qa,service.version=9,team=core");
    load(&c, err, sizeof err);
    ok(strcmp(c.service, "otel-svc") == 0 && strcmp(c.env, "qa") == 0 && strcmp(c.version, "9") == 0 &&
           strcmp(c.tags, "team:core") == 0,
       "OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES used when DD_ names are unset");
    setv("DD_SERVICE", "dd-wins");
    setv("DD_ENV", "dd-env");
    load(&c, err, sizeof err);
    ok(strcmp(c.service, "dd-wins") == 0 && strcmp(c.env, "dd-env") == 0, "DD_ names win over OTEL");

    ok(config_parse_bool("yes") == 1 && config_parse_bool("Off") == 0 && config_parse_bool("2") == -1,
       "boolean grammar");
    printf("1..%d\n", n);
    return failed ? 1 : 0;
}
