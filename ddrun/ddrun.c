/* ddrun/ddrun.c — the ddrun launcher (`ddrun [options] [--] command [args...]`):
 * reads its options and --env-file files, sets LD_PRELOAD (keeping the user's
 * own entries) and the DD_* variables, then execs the command, so that its pid,
 * exit status and signals are its own. `ddrun --help` is the user's reference.
 *
 * A plain single-threaded program with no signal handlers; it runs before the
 * command exists, so it changes nothing the command sees besides the variables
 * it documents (LD_PRELOAD, DD_SHIM_ANNOUNCE_PID and the DD_* / OTEL_* it was
 * told to set), and writes to stdout only for --help and --print-config. It
 * replaced a bash script (QUALITY.md's start-up budget: `ddrun true` at most
 * 5 ms slower than `true`, and bash alone took ~4.5 ms); the script's
 * behaviour, messages and exit statuses are kept, including bash's own rules
 * where the script relied on them (how PWD is taken, how LD_PRELOAD is split,
 * how a command is searched for in PATH, what %q quoting prints). Nothing here
 * has a fixed size: values, env-file lines and paths may be of any length. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>
#include <wctype.h>

extern char **environ;

#define PROG "ddrun"

/* ---- errors and memory ------------------------------------------------------ */

/* One message, one write(2): "ddrun: MESSAGE\n" (+ the --help hint). */
static void vmessage(const char *hint, const char *fmt, va_list ap)
{
    char *msg = NULL, *line = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    int n = asprintf(&line, "%s: %s\n%s", PROG, msg ? msg : "(out of memory formatting a message)",
                     hint ? hint : "");
    if (n > 0) {
        for (size_t off = 0; off < (size_t)n;) {
            ssize_t w = write(STDERR_FILENO, line + off, (size_t)n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    }
    free(line);
    free(msg);
}

static void message(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void message(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(NULL, fmt, ap);
    va_end(ap);
}

/* fail STATUS MESSAGE: the script's `fail`. */
static void fail(int status, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(NULL, fmt, ap);
    va_end(ap);
    exit(status);
}

/* A bad command line: exit 2 with a pointer to --help. */
static void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("Try '" PROG " --help' for more information.\n", fmt, ap);
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        fail(2, "out of memory");
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = xrealloc(NULL, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    char *s;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        fail(2, "out of memory");
    return s;
}

/* A growable string. */
struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_adds(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }
static void buf_addc(struct buf *b, char c) { buf_add(b, &c, 1); }

/* A growable array of strings. */
struct strv {
    char **v;
    size_t n, cap;
};

static void strv_push(struct strv *a, char *s)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = s;
}

static int starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* ---- characters, as bash saw them in the user's locale ----------------------- */

/* The script matched [[:space:]] (trimming, validation) and counted characters in
 * the user's LC_CTYPE. ASCII needs no locale; the locale is loaded only when a
 * byte >= 0x80 is met, so the common path never pays for it. */
static void need_locale(void)
{
    static int done;
    if (!done) {
        setlocale(LC_CTYPE, "");
        done = 1;
    }
}

/* The length of the character at s (n > 0 bytes left; an invalid byte counts as
 * one character, as in bash) and whether it is a [[:space:]]. */
static size_t char_at(const char *s, size_t n, int *space)
{
    unsigned char c = (unsigned char)*s;
    if (c < 0x80) {
        *space = c == ' ' || (c >= '\t' && c <= '\r');
        return 1;
    }
    need_locale();
    mbstate_t st;
    memset(&st, 0, sizeof st);
    wchar_t wc;
    size_t k = mbrtowc(&wc, s, n, &st);
    if (k == (size_t)-1 || k == (size_t)-2 || k == 0) {
        *space = 0;
        return 1;
    }
    *space = iswspace((wint_t)wc) != 0;
    return k;
}

/* Trim [[:space:]] from both ends of [*s, *e). */
static void trim(const char **s, const char **e)
{
    const char *p = *s, *last = *s;
    int sp;
    while (p < *e) {
        size_t k = char_at(p, (size_t)(*e - p), &sp);
        if (!sp)
            break;
        p += k;
    }
    *s = p;
    for (last = p; p < *e;) {
        size_t k = char_at(p, (size_t)(*e - p), &sp);
        p += k;
        if (!sp)
            last = p;
    }
    *e = last;
}

static const char *ltrim(const char *s)
{
    const char *e = s + strlen(s), *b = s;
    int sp;
    while (b < e) {
        size_t k = char_at(b, (size_t)(e - b), &sp);
        if (!sp)
            break;
        b += k;
    }
    return b;
}

static int has_space(const char *s, size_t n)
{
    int sp;
    for (size_t i = 0; i < n;) {
        i += char_at(s + i, n - i, &sp);
        if (sp)
            return 1;
    }
    return 0;
}

/* Characters in s, as bash's ${#s}. */
static size_t nchars(const char *s)
{
    size_t n = strlen(s), count = 0;
    int sp;
    for (size_t i = 0; i < n; count++)
        i += char_at(s + i, n - i, &sp);
    return count;
}

/* ---- value checks (the shim's preload/config.c grammar) ---------------------- */

#define WHY_HZ "an integer from 1 to 10000 (CPU samples per second per thread; default 99)"
#define WHY_URL "an Agent URL: http://HOST[:PORT] or unix:///path/to/apm.socket"
#define WHY_HTTPS WHY_URL " (https is not supported: the Agent listens on plain HTTP)"

/* NULL when v is a sample rate the shim accepts, else what it should be. */
static const char *check_hz(const char *v)
{
    const char *s = v, *e = v + strlen(v);
    trim(&s, &e);
    if (s < e && *s == '+')
        s++;
    if (s == e)
        return WHY_HZ;
    for (const char *p = s; p < e; p++)
        if (*p < '0' || *p > '9')
            return WHY_HZ;
    while (s < e && *s == '0')
        s++;
    if (s == e || e - s > 5)
        return WHY_HZ;
    long n = 0;
    for (const char *p = s; p < e; p++)
        n = n * 10 + (*p - '0');
    return n <= 10000 ? NULL : WHY_HZ;
}

/* NULL when u is an Agent URL the shim accepts, else what it should be. */
static const char *check_agent_url(const char *u)
{
    if (starts(u, "https://"))
        return WHY_HTTPS;
    if (starts(u, "unix://"))
        return starts(u, "unix:///") && u[8] ? NULL : WHY_URL;
    if (starts(u, "unix:/") && u[6])
        return NULL;
    if (!starts(u, "http://"))
        return WHY_URL;
    const char *hp = u + 7, *end = hp + strcspn(hp, "/");
    const char *host_end = end, *port = NULL;
    if (*hp == '[') {
        const char *rb = memchr(hp, ']', (size_t)(end - hp));
        if (!rb)
            return WHY_URL;
        if (rb + 1 < end && rb[1] == ':') {
            host_end = rb + 1;
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(hp, ':', (size_t)(end - hp));
        if (colon) {
            host_end = colon;
            port = colon + 1;
        }
    }
    if (host_end == hp || has_space(hp, (size_t)(host_end - hp)))
        return WHY_URL;
    for (const char *p = hp; p < host_end; p++)
        if (*p == '@' || *p == '?' || *p == '#')
            return WHY_URL;
    if (!port)
        return NULL;
    if (end - port < 1 || end - port > 5)
        return WHY_URL;
    long n = 0;
    for (const char *p = port; p < end; p++) {
        if (*p < '0' || *p > '9')
            return WHY_URL;
        n = n * 10 + (*p - '0');
    }
    return n >= 1 && n <= 65535 ? NULL : WHY_URL;
}

/* A value that looks secret is not echoed by --print-config or --debug. */
static const char *shown_value(const char *name, const char *value)
{
    static const char *const secret[] = {"API_KEY", "APP_KEY", "SECRET", "TOKEN", "PASSWORD"};
    for (size_t i = 0; i < sizeof secret / sizeof *secret; i++)
        if (strstr(name, secret[i]))
            return "(set, hidden)";
    return value;
}

/* ---- where each variable ddrun set came from --------------------------------- */

/* Every variable ddrun set, in order (a name may repeat; the last entry for a
 * name is its source): for --print-config's source column and --debug. */
static struct strv set_names, set_srcs;

static void set_var(const char *name, const char *value, char *src)
{
    if (setenv(name, value, 1) != 0)
        fail(2, "cannot set %s: %s", name, strerror(errno));
    strv_push(&set_names, xstrdup(name));
    strv_push(&set_srcs, src);
}

static const char *origin(const char *name)
{
    for (size_t i = set_names.n; i-- > 0;)
        if (strcmp(set_names.v[i], name) == 0)
            return set_srcs.v[i];
    return "environment";
}

/* ---- the current directory, as bash's $PWD ------------------------------------ */

/* bash keeps an inherited PWD that is absolute and names the current directory
 * (symlinks and all); otherwise it asks getcwd. */
static const char *pwd(void)
{
    static char *cached;
    if (cached)
        return cached;
    const char *env = getenv("PWD");
    struct stat a, b;
    if (env && env[0] == '/' && stat(env, &a) == 0 && stat(".", &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino) {
        cached = xstrdup(env);
    } else {
        cached = getcwd(NULL, 0);
        if (!cached)
            fail(2, "cannot get the current directory: %s", strerror(errno));
    }
    return cached;
}

/* A relative path made absolute as the script did: ${PWD%/}/${p#./}. */
static char *absolute(const char *p)
{
    if (p[0] == '/')
        return xstrdup(p);
    const char *d = pwd();
    size_t dl = strlen(d);
    if (dl > 0 && d[dl - 1] == '/')
        dl--;
    if (starts(p, "./"))
        p += 2;
    return xasprintf("%.*s/%s", (int)dl, d, p);
}

/* ---- env-files (parsed, never executed) --------------------------------------- */

static int valid_name(const char *s, size_t n)
{
    if (n == 0 || !(s[0] == '_' || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
        return 0;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

static void load_env_file(const char *file)
{
    struct stat st;
    if (stat(file, &st) != 0)
        fail(2, "--env-file %s: no such file", file);
    if (!S_ISREG(st.st_mode) || faccessat(AT_FDCWD, file, R_OK, AT_EACCESS) != 0)
        fail(2, "--env-file %s: not a readable file", file);
    FILE *f = fopen(file, "re");
    if (!f)
        fail(2, "--env-file %s: %s", file, strerror(errno));

    char *raw = NULL;
    size_t rawcap = 0;
    ssize_t got;
    unsigned long lineno = 0;
    while ((got = getline(&raw, &rawcap, f)) > 0) {
        lineno++;
        /* bash's `read` drops NUL bytes; lines are otherwise of any length. */
        size_t n = 0;
        for (ssize_t i = 0; i < got; i++)
            if (raw[i] != '\0')
                raw[n++] = raw[i];
        if (n > 0 && raw[n - 1] == '\n')
            n--;
        if (n > 0 && raw[n - 1] == '\r')
            n--;
        raw[n] = '\0';
        const char *line = ltrim(raw);
        if (!*line || *line == '#')
            continue;
        if (starts(line, "export") && line[6] && ltrim(line + 6) != line + 6)
            line = ltrim(line + 6);
        const char *eq = strchr(line, '=');
        if (!eq)
            fail(2, "%s:%lu: expected KEY=VALUE, got: %s", file, lineno, line);
        const char *ks = line, *ke = eq; /* (no leading blanks left) */
        const char *vs = eq + 1, *ve = eq + 1 + strlen(eq + 1);
        trim(&ks, &ke);
        trim(&vs, &ve);
        char *key = xstrndup(ks, (size_t)(ke - ks));
        char *val = xstrndup(vs, (size_t)(ve - vs));
        if (!valid_name(key, strlen(key)))
            fail(2, "%s:%lu: '%s' is not a variable name (expected KEY=VALUE)", file, lineno, key);
        if (!starts(key, "DD_") && !starts(key, "OTEL_"))
            fail(2, "%s:%lu: %s is not accepted: only DD_* and OTEL_* variables may be set from an env-file",
                 file, lineno, key);
        if (val[0] == '"' || val[0] == '\'') {
            char q = val[0];
            size_t vl = strlen(val);
            if (vl < 2 || val[vl - 1] != q)
                fail(2, "%s:%lu: %s: the value opens a %c quote that does not close at the end of the line",
                     file, lineno, key, q);
            memmove(val, val + 1, vl - 2);
            val[vl - 2] = '\0';
            if (strchr(val, q))
                fail(2,
                     "%s:%lu: %s: text after the closing %c quote (a quoted value cannot contain its own quote; "
                     "leave such a value unquoted)",
                     file, lineno, key, q);
        }
        const char *why = NULL;
        if (strcmp(key, "DD_SHIM_SAMPLE_HZ") == 0)
            why = check_hz(val);
        else if (strcmp(key, "DD_TRACE_AGENT_URL") == 0)
            why = check_agent_url(val);
        if (why)
            fail(2, "%s:%lu: %s='%s': expected %s", file, lineno, key, val, why);
        set_var(key, val, xasprintf("env-file %s:%lu", file, lineno));
        free(key);
        free(val);
    }
    if (ferror(f))
        fail(2, "--env-file %s: %s", file, strerror(errno));
    free(raw);
    fclose(f);
}

/* ---- LD_PRELOAD ---------------------------------------------------------------- */

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* A sanitizer runtime (lib?(h)[atlm]san.so*, libclang_rt.*san*.so*) must stay
 * first of all in LD_PRELOAD. */
static int is_sanitizer_runtime(const char *name)
{
    if (starts(name, "libclang_rt.")) {
        const char *san = strstr(name + 12, "san");
        return san && strstr(san + 3, ".so");
    }
    if (!starts(name, "lib"))
        return 0;
    const char *p = name + 3;
    for (int h = 0; h < 2; h++, p++) {
        if (p[0] && strchr("atlm", p[0]) && starts(p + 1, "san.so"))
            return 1;
        if (*p != 'h')
            return 0;
    }
    return 0;
}

/* Ours goes first, except that a sanitizer runtime must stay first of all. The
 * user's entries keep their order; an entry that is our library is dropped.
 * Entries are split as bash split the unquoted ${LD_PRELOAD} with IFS=' \t\n:':
 * blanks run together, each ':' ends a field (so "a::b" holds an empty one). */
static char *compose_preload(const char *lib, int *user)
{
    const char *p = getenv("LD_PRELOAD");
    struct buf front = {0}, back = {0}, out = {0};
    *user = 0;
    if (!p)
        p = "";
#define IFS_BLANK(c) ((c) == ' ' || (c) == '\t' || (c) == '\n')
    while (*p && IFS_BLANK(*p))
        p++;
    while (*p) {
        const char *s = p;
        while (*p && !IFS_BLANK(*p) && *p != ':')
            p++;
        char *e = xstrndup(s, (size_t)(p - s));
        if (strcmp(e, lib) != 0 && !same_file(e, lib)) {
            *user = 1;
            const char *slash = strrchr(e, '/');
            struct buf *to = is_sanitizer_runtime(slash ? slash + 1 : e) ? &front : &back;
            buf_adds(to, e);
            buf_addc(to, ':');
        }
        free(e);
        while (*p && IFS_BLANK(*p))
            p++;
        if (*p == ':') {
            p++;
            while (*p && IFS_BLANK(*p))
                p++;
        }
    }
#undef IFS_BLANK
    if (front.p)
        buf_adds(&out, front.p);
    buf_adds(&out, lib);
    buf_addc(&out, ':');
    if (back.p)
        buf_adds(&out, back.p);
    out.p[--out.len] = '\0';
    free(front.p);
    free(back.p);
    return out.p;
}

/* libddshim.so next to ddrun's real file (symlinks resolved): build/libddshim.so
 * for build/ddrun, wherever ddrun is called from or linked to. */
static char *default_lib(void)
{
    char *self = NULL;
    for (size_t cap = 256;; cap *= 2) {
        self = xrealloc(self, cap);
        ssize_t n = readlink("/proc/self/exe", self, cap);
        if (n < 0) {
            free(self);
            self = NULL;
            break;
        }
        if ((size_t)n < cap) {
            self[n] = '\0';
            break;
        }
    }
    if (!self) { /* no /proc: the path we were executed by */
        const char *fn = (const char *)getauxval(AT_EXECFN);
        if (!fn || !(self = realpath(fn, NULL)))
            fail(2, "cannot find ddrun's own file to locate libddshim.so next to it; point --lib or DDSHIM_LIB at it");
    }
    char *slash = strrchr(self, '/');
    char *lib = xasprintf("%.*s/libddshim.so", slash ? (int)(slash - self) : 0, self);
    free(self);
    return lib;
}

/* ---- --print-config ------------------------------------------------------------ */

/* The settings table (DESIGN.md "Configuration"), in print order. */
static const char *const settings[] = {
    "DD_SERVICE", "DD_ENV", "DD_VERSION", "DD_TAGS", "DD_TRACE_AGENT_URL", "DD_AGENT_HOST",
    "DD_TRACE_AGENT_PORT", "DD_PROFILING_ENABLED", "DD_TRACE_ENABLED", "DD_PROFILING_UPLOAD_PERIOD",
    "DD_TRACE_SAMPLE_RATE", "DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP", "DD_TRACE_HEADER_TAGS",
    "DD_TRACE_PROPAGATION_STYLE", "DD_DOGSTATSD_URL", "DD_DOGSTATSD_PORT", "DD_SHIM_SAMPLE_HZ",
    "DD_SHIM_OUTPUT_DIR", "DD_SHIM_SPOOL_DIR", "DD_SHIM_SPOOL_MAX_BYTES", "DD_SHIM_DWARF_MAX_BYTES",
    "DD_SHIM_LOG_LEVEL", "DD_SHIM_ENABLED",
};
#define NSETTINGS (sizeof settings / sizeof *settings)

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

/* ATTR's value in OTEL_RESOURCE_ATTRIBUTES (k=v,k=v), as config.c reads it. */
static char *otel_attr(const char *attr)
{
    const char *p = getenv("OTEL_RESOURCE_ATTRIBUTES");
    size_t al = strlen(attr);
    while (p && *p) {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        if (eq && (size_t)(eq - p) == al && memcmp(p, attr, al) == 0)
            return xstrndup(eq + 1, n - al - 1);
        p += n;
        if (*p == ',')
            p++;
    }
    return NULL;
}

/* The shim's default for NAME: sets *v and *s. */
static void default_of(const char *name, const char *cmd0, char **v, char **s)
{
    *s = xstrdup("default");
    if (!strcmp(name, "DD_SERVICE") || !strcmp(name, "DD_ENV") || !strcmp(name, "DD_VERSION")) {
        const char *otel = getenv("OTEL_SERVICE_NAME");
        if (!strcmp(name, "DD_SERVICE") && otel && *otel) {
            *v = xstrdup(otel);
            *s = xasprintf("%s (OTEL_SERVICE_NAME)", origin("OTEL_SERVICE_NAME"));
            return;
        }
        const char *a = !strcmp(name, "DD_SERVICE") ? "service.name"
                        : !strcmp(name, "DD_ENV")   ? "deployment.environment"
                                                    : "service.version";
        char *attr = otel_attr(a);
        if (attr) {
            *v = attr;
            *s = xasprintf("%s (OTEL_RESOURCE_ATTRIBUTES %s)", origin("OTEL_RESOURCE_ATTRIBUTES"), a);
            return;
        }
        if (strcmp(name, "DD_SERVICE") != 0) {
            *v = xstrdup("(unset)");
        } else if (cmd0) { /* ${cmd0%%+(/)}, then its last component */
            size_t n = strlen(cmd0);
            while (n > 0 && cmd0[n - 1] == '/')
                n--;
            size_t b = n;
            while (b > 0 && cmd0[b - 1] != '/')
                b--;
            *v = xstrndup(cmd0 + b, n - b);
        } else {
            *v = xstrdup("(the program's name)");
        }
        return;
    }
    if (!strcmp(name, "DD_TRACE_AGENT_URL")) {
        const char *host = env_or("DD_AGENT_HOST", "localhost");
        const char *port = env_or("DD_TRACE_AGENT_PORT", NULL);
        struct stat st;
        if (!env_or("DD_AGENT_HOST", NULL) && !port && stat("/var/run/datadog/apm.socket", &st) == 0 &&
            S_ISSOCK(st.st_mode))
            *v = xstrdup("unix:///var/run/datadog/apm.socket");
        else if (strchr(host, ':') && host[0] != '[')
            *v = xasprintf("http://[%s]:%s", host, port ? port : "8126");
        else
            *v = xasprintf("http://%s:%s", host, port ? port : "8126");
        return;
    }
    static const char *const fixed[][2] = {
        {"DD_AGENT_HOST", "localhost"},
        {"DD_TRACE_AGENT_PORT", "8126"},
        {"DD_PROFILING_ENABLED", "true"},
        {"DD_TRACE_ENABLED", "true"},
        {"DD_SHIM_ENABLED", "true"},
        {"DD_PROFILING_UPLOAD_PERIOD", "60"},
        {"DD_TRACE_SAMPLE_RATE", "1.0"},
        {"DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP", "(Datadog's default)"},
        {"DD_TRACE_PROPAGATION_STYLE", "datadog,tracecontext"},
        {"DD_DOGSTATSD_PORT", "8125"},
        {"DD_SHIM_SAMPLE_HZ", "99"},
        {"DD_SHIM_OUTPUT_DIR", "unset (used only when no Agent answers: ./ddshim-out)"},
        {"DD_SHIM_SPOOL_MAX_BYTES", "32M"},
        {"DD_SHIM_DWARF_MAX_BYTES", "4M"},
        {"DD_SHIM_LOG_LEVEL", "warn"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        if (!strcmp(name, fixed[i][0])) {
            *v = xstrdup(fixed[i][1]);
            return;
        }
    }
    if (!strcmp(name, "DD_DOGSTATSD_URL"))
        *v = xasprintf("udp://%s:%s", env_or("DD_AGENT_HOST", "localhost"), env_or("DD_DOGSTATSD_PORT", "8125"));
    else if (!strcmp(name, "DD_SHIM_SPOOL_DIR"))
        *v = xasprintf("/var/tmp/ddshim-%lu", (unsigned long)geteuid());
    else
        *v = xstrdup("(unset)");
}

/* NAME's effective value and where it comes from; an empty value counts as
 * unset, as in the shim. */
static void effective(const char *name, const char *cmd0, char **v, char **s)
{
    const char *cur = getenv(name);
    if (cur && *cur) {
        *v = xstrdup(cur);
        *s = xstrdup(origin(name));
        return;
    }
    default_of(name, cmd0, v, s);
    if (cur) {
        char *t = xasprintf("%s; the empty %s from %s counts as unset", *s, name, origin(name));
        free(*s);
        *s = t;
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int is_setting(const char *name)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (!strcmp(settings[i], name))
            return 1;
    return 0;
}

static void out_write(const char *p, size_t n)
{
    if (n && fwrite(p, 1, n, stdout) != n)
        fail(1, "write error: %s", strerror(errno));
}

/* Flush stdout and say so if any of it was lost (a full disk, a closed pipe). */
static void out_done(void)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        fail(1, "write error: %s", strerror(errno ? errno : EIO));
}

static void print_config(const char *cmd0, const char *lib, const char *lib_src, const char *preload,
                         int preload_user)
{
    struct strv names = {0}, vals = {0}, srcs = {0};
    for (size_t i = 0; i < NSETTINGS; i++) {
        char *v, *s;
        effective(settings[i], cmd0, &v, &s);
        strv_push(&names, xstrdup(settings[i]));
        strv_push(&vals, v);
        strv_push(&srcs, s);
    }
    struct stat st;
    int lib_ok = stat(lib, &st) == 0 && S_ISREG(st.st_mode);
    strv_push(&names, xstrdup("LD_PRELOAD"));
    strv_push(&vals, lib_ok ? xstrdup(preload) : xasprintf("%s  (library MISSING: run make)", preload));
    strv_push(&srcs, xasprintf("%s%s", lib_src, preload_user ? " + environment LD_PRELOAD" : ""));

    /* Anything else DD_* / OTEL_* that is set: what the shim also reads, or a
     * typo. Names bash would have seen as variables, sorted as ${!DD_@}. */
    struct strv extra = {0};
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !(starts(*e, "DD_") || starts(*e, "OTEL_")) || !valid_name(*e, (size_t)(eq - *e)))
            continue;
        char *name = xstrndup(*e, (size_t)(eq - *e));
        int dup = is_setting(name);
        for (size_t i = 0; i < extra.n && !dup; i++)
            dup = !strcmp(extra.v[i], name);
        if (dup)
            free(name);
        else
            strv_push(&extra, name);
    }
    if (extra.n)
        qsort(extra.v, extra.n, sizeof *extra.v, cmp_str);
    for (size_t i = 0; i < extra.n; i++) {
        const char *name = extra.v[i];
        int otel_read = !strcmp(name, "OTEL_SERVICE_NAME") || !strcmp(name, "OTEL_RESOURCE_ATTRIBUTES");
        strv_push(&names, xstrdup(name));
        strv_push(&vals, xstrdup(shown_value(name, getenv(name))));
        strv_push(&srcs, xasprintf("%s%s", origin(name), otel_read ? "" : "; not read by libddshim"));
    }

    /* The script's widths: ${#value} counts characters (capped at 56), while
     * printf '%-*s' pads by bytes, so a non-ASCII value gets fewer blanks. */
    size_t wn = 0, wv = 0;
    for (size_t i = 0; i < names.n; i++) {
        size_t a = strlen(names.v[i]), b = nchars(vals.v[i]);
        wn = a > wn ? a : wn;
        wv = b > wv ? b : wv;
    }
    if (wv > 56)
        wv = 56;
    struct buf out = {0};
    for (size_t i = 0; i < names.n; i++) {
        size_t a = strlen(names.v[i]), b = strlen(vals.v[i]);
        /* printf '%-*s  %-*s  %s\n' */
        buf_adds(&out, names.v[i]);
        for (; a < wn; a++)
            buf_addc(&out, ' ');
        buf_adds(&out, "  ");
        buf_adds(&out, vals.v[i]);
        for (; b < wv; b++)
            buf_addc(&out, ' ');
        buf_adds(&out, "  ");
        buf_adds(&out, srcs.v[i]);
        buf_addc(&out, '\n');
    }
    out_write(out.p, out.len);
    out_done();
}

/* ---- --debug: the command line, quoted as bash's printf %q ------------------- */

/* Characters %q protects with a backslash (bash's lib/sh/shquote.c bstab). */
static int needs_backslash(unsigned char c) { return c && strchr(" !\"$&'()*,;<>?[\\]^`{|}", c) != NULL; }

static void shell_quote(struct buf *b, const char *s)
{
    if (!*s) {
        buf_adds(b, "''");
        return;
    }
    size_t n = strlen(s);
    int ansi = 0; /* any character the locale cannot print: $'...' */
    for (size_t i = 0; i < n && !ansi;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            ansi = !(c >= 0x20 && c < 0x7f);
            i++;
            continue;
        }
        need_locale();
        mbstate_t st;
        memset(&st, 0, sizeof st);
        wchar_t wc;
        size_t k = mbrtowc(&wc, s + i, n - i, &st);
        if (k == (size_t)-1 || k == (size_t)-2 || k == 0 || !iswprint((wint_t)wc))
            ansi = 1;
        else
            i += k;
    }
    if (!ansi) {
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (needs_backslash(c) || (c == '#' && i == 0) ||
                (c == '~' && (i == 0 || s[i - 1] == ':' || s[i - 1] == '=')))
                buf_addc(b, '\\');
            buf_addc(b, (char)c);
        }
        return;
    }
    buf_adds(b, "$'");
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        switch (c) {
        case 033: esc = "\\E"; break;
        case '\a': esc = "\\a"; break;
        case '\v': esc = "\\v"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\\': esc = "\\\\"; break;
        case '\'': esc = "\\'"; break;
        }
        if (esc) {
            buf_adds(b, esc);
            i++;
            continue;
        }
        size_t k = 1;
        int printable = c >= 0x20 && c < 0x7f;
        if (c >= 0x80) {
            mbstate_t st;
            memset(&st, 0, sizeof st);
            wchar_t wc;
            k = mbrtowc(&wc, s + i, n - i, &st);
            printable = !(k == (size_t)-1 || k == (size_t)-2 || k == 0) && iswprint((wint_t)wc);
            if (!printable)
                k = 1;
        }
        if (printable) {
            buf_add(b, s + i, k);
        } else {
            char oct[5] = {'\\', (char)('0' + ((c >> 6) & 7)), (char)('0' + ((c >> 3) & 7)), (char)('0' + (c & 7)), 0};
            buf_adds(b, oct);
        }
        i += k;
    }
    buf_addc(b, '\'');
}

static void print_debug(char **argv)
{
    message("LD_PRELOAD=%s", getenv("LD_PRELOAD"));
    for (size_t i = 0; i < set_names.n; i++) {
        const char *name = set_names.v[i];
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = !strcmp(set_names.v[j], name);
        if (!seen)
            message("%s=%s (%s)", name, shown_value(name, getenv(name)), origin(name));
    }
    struct buf line = {0};
    buf_adds(&line, "exec");
    for (char **a = argv; *a; a++) {
        buf_addc(&line, ' ');
        shell_quote(&line, *a);
    }
    message("%s", line.p);
    free(line.p);
}

/* ---- the command --------------------------------------------------------------- */

static int executable(const char *path) { return faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) == 0; }

/* COMMAND (no slash) in PATH, as bash finds it: the first executable file that
 * is not a directory; failing that, the first existing file, which then fails
 * with "Permission denied" (unless that first one was a directory). An empty
 * element is the current directory, a leading ~ is $HOME, and an unset PATH is
 * bash's default. NULL when there is nothing. */
static char *path_search(const char *cmd)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin:.";
    char *lose = NULL;
    int lose_is_dir = 0;
    for (const char *p = path;;) {
        size_t n = strcspn(p, ":");
        char *dir = xstrndup(p, n);
        if (dir[0] == '~' && (dir[1] == '\0' || dir[1] == '/') && getenv("HOME")) {
            char *t = xasprintf("%s%s", getenv("HOME"), dir + 1);
            free(dir);
            dir = t;
        }
        char *full = *dir ? xasprintf("%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", cmd)
                          : xasprintf("./%s", cmd);
        free(dir);
        struct stat st;
        if (stat(full, &st) == 0) {
            int isdir = S_ISDIR(st.st_mode);
            if (!isdir && executable(full)) {
                free(lose);
                return full;
            }
            if (!lose) {
                lose = full;
                lose_is_dir = isdir;
                full = NULL;
            }
        }
        free(full);
        p += n;
        if (!*p)
            break;
        p++;
    }
    if (lose && lose_is_dir) {
        free(lose);
        lose = NULL;
    }
    return lose;
}

/* bash's test for "cannot execute binary file": an ELF header, or a NUL in the
 * first line (the first two after #!) of the first 80 bytes. */
static int binary_file(const char *path, char *sample, size_t *len)
{
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, sample, 80);
    close(fd);
    if (n <= 0)
        return 0;
    *len = (size_t)n;
    if (n >= 4 && !memcmp(sample, "\177ELF", 4))
        return 1;
    int lines = (n >= 2 && sample[0] == '#' && sample[1] == '!') ? 2 : 1;
    for (ssize_t i = 0; i < n; i++) {
        if (sample[i] == '\n' && --lines == 0)
            return 0;
        if (sample[i] == '\0')
            return 1;
    }
    return 0;
}

/* Replace ddrun with the command; returns only to report why it could not,
 * with bash's statuses: 127 when a file is missing, 126 otherwise. */
static void exec_command(const char *path, char **argv)
{
    execv(path, argv);
    int err = errno;
    char sample[81];
    size_t len;
    if (err == ENOEXEC) {
        if (binary_file(path, sample, &len))
            fail(126, "%s: cannot execute binary file: %s", path, strerror(err));
        /* A script without #!: the shell runs it, as execvp(3) does. */
        size_t argc = 0;
        while (argv[argc])
            argc++;
        char **shv = xrealloc(NULL, (argc + 2) * sizeof *shv);
        shv[0] = (char *)"/bin/sh";
        shv[1] = (char *)path;
        memcpy(shv + 2, argv + 1, argc * sizeof *shv); /* argv[1..argc-1] and the NULL */
        execv("/bin/sh", shv);
        err = errno;
        fail(err == ENOENT ? 127 : 126, "/bin/sh: cannot execute: %s", strerror(err));
    }
    if (err == EACCES && !executable(path))
        fail(126, "%s: Permission denied", path);
    if (err == ENOENT)
        fail(127, "%s: cannot execute: required file not found", path);
    if (err != E2BIG && err != ENOMEM && binary_file(path, sample, &len) == 0 && len > 2 && sample[0] == '#' &&
        sample[1] == '!') {
        sample[len] = '\0';
        const char *ip = sample + 2;
        ip += strspn(ip, " \t");
        size_t il = strcspn(ip, " \t\n");
        fail(126, "%s: %.*s: bad interpreter: %s", path, (int)il, ip, strerror(err));
    }
    fail(126, "%s: %s", path, strerror(err));
}

/* ---- --help -------------------------------------------------------------------- */

static const char help[] =
    "Usage: ddrun [options] [--] command [args...]\n"
    "\n"
    "Run COMMAND with libddshim preloaded, so that it reports CPU profiles and HTTP\n"
    "spans to a Datadog Agent without any change to its code. ddrun sets LD_PRELOAD\n"
    "and the DD_* variables below, then replaces itself with COMMAND (exec): the exit\n"
    "status, signals, stdin/stdout/stderr and process id are the command's own.\n"
    "\n"
    "Options (each maps onto one environment variable the shim reads):\n"
    "  --service S      DD_SERVICE: service name (default: the program's name)\n"
    "                     ddrun --service checkout ./server\n"
    "  --env E          DD_ENV: environment tag\n"
    "                     ddrun --env staging ./server\n"
    "  --version V      DD_VERSION: application version (not ddrun's version)\n"
    "                     ddrun --version 1.4.2 ./server\n"
    "  --tags T         DD_TAGS: extra tags, k:v separated by commas or spaces\n"
    "                     ddrun --tags team:payments,region:eu ./server\n"
    "  --agent URL      DD_TRACE_AGENT_URL: http://HOST[:PORT] or unix:///path.sock\n"
    "                     ddrun --agent http://10.0.0.5:8126 ./server\n"
    "                     ddrun --agent unix:///var/run/datadog/apm.socket ./server\n"
    "  --output DIR     DD_SHIM_OUTPUT_DIR: write profiles and traces to DIR as\n"
    "                   well as to the Agent (only to DIR when no Agent answers); a\n"
    "                   relative DIR is made absolute against the current directory\n"
    "                     ddrun --output /tmp/prof ./server\n"
    "  --hz N           DD_SHIM_SAMPLE_HZ: CPU samples per second of each thread's\n"
    "                   CPU time, an integer from 1 to 10000 (default 99)\n"
    "                     ddrun --hz 999 ./cpu-heavy\n"
    "  --env-file FILE  read DD_* / OTEL_* settings from FILE (format below); may be\n"
    "                   repeated, a later file wins over an earlier one\n"
    "                     ddrun --env-file common.env --env-file production.env ./app\n"
    "  --print-config   print every setting with its effective value and where it\n"
    "                   comes from (flag, env-file FILE:LINE, environment, default),\n"
    "                   then exit 0 without running anything; COMMAND is optional\n"
    "                     ddrun --env-file staging.env --print-config ./server\n"
    "  --debug          DD_SHIM_LOG_LEVEL=debug, and print the LD_PRELOAD, the\n"
    "                   variables ddrun set and the command line on stderr\n"
    "                     ddrun --debug ./server\n"
    "  --lib PATH       the libddshim.so to preload (default: $DDSHIM_LIB, else\n"
    "                   libddshim.so in the directory of ddrun's real file, symlinks\n"
    "                   resolved: build/libddshim.so beside build/ddrun)\n"
    "                     ddrun --lib /opt/ddshim/libddshim.so ./server\n"
    "  -h, --help       show this help and exit\n"
    "  --               end of options: everything after it is the command\n"
    "Options may also be written --option=VALUE. Options end at the first argument\n"
    "that is not an option: `ddrun ./app --service x` passes --service to ./app.\n"
    "\n"
    "Precedence (highest first):\n"
    "  1. flags on the command line\n"
    "  2. --env-file files (a later file wins; within a file, a later line wins)\n"
    "  3. the inherited environment\n"
    "  4. the shim's defaults\n"
    "OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (service.name,\n"
    "deployment.environment, service.version) are used when the DD_ name is unset.\n"
    "\n"
    "Env-file format (the file is parsed, never executed by a shell):\n"
    "  # a comment: a line whose first non-blank character is #\n"
    "  DD_SERVICE=checkout\n"
    "  # an \"export \" prefix is allowed\n"
    "  export DD_ENV=staging\n"
    "  # quotes around the whole value are removed: \"...\" or '...'\n"
    "  DD_TAGS=\"team:payments region:eu\"\n"
    "  # spaces around = and around an unquoted value are trimmed\n"
    "  DD_SHIM_SAMPLE_HZ = 199\n"
    "  - One KEY=VALUE per line; blank lines are ignored; CRLF line ends are fine.\n"
    "  - Only DD_* and OTEL_* keys are accepted.\n"
    "  - VALUE is literal: no $variable expansion, no escapes, and a # inside it is\n"
    "    part of it (put comments on their own line).\n"
    "  - An empty value (DD_ENV=) counts as unset, as it does in the shim: it\n"
    "    hides an inherited value.\n"
    "  - Any other key, a malformed line (no =, a bad name, an unclosed quote, text\n"
    "    after the closing quote) or a value that --hz/--agent would refuse (for\n"
    "    DD_SHIM_SAMPLE_HZ, DD_TRACE_AGENT_URL) is an error naming FILE:LINE: ddrun\n"
    "    exits 2 and the command is not run.\n"
    "\n"
    "Where the data goes:\n"
    "  To the Datadog Agent at DD_TRACE_AGENT_URL; when that is unset, at\n"
    "  unix:///var/run/datadog/apm.socket if that socket exists and neither\n"
    "  DD_AGENT_HOST nor DD_TRACE_AGENT_PORT is set, else at\n"
    "  http://DD_AGENT_HOST:DD_TRACE_AGENT_PORT (http://localhost:8126). When no Agent answers, profiles (pprof) and "
    "traces\n"
    "  are written to DD_SHIM_OUTPUT_DIR, or ./ddshim-out in the command's working\n"
    "  directory when that is unset; with --output they are written there as well.\n"
    "  What the Agent does not take (absent, refusing, 5xx, too slow) also waits in\n"
    "  DD_SHIM_SPOOL_DIR (/var/tmp/ddshim-<uid>; at most DD_SHIM_SPOOL_MAX_BYTES,\n"
    "  32M, oldest dropped first; 0 turns it off) and is delivered, by this process\n"
    "  or a later one, once the Agent answers again.\n"
    "\n"
    "Exit status:\n"
    "  the command's own; 2 for a ddrun usage or configuration error (bad option,\n"
    "  bad env-file, missing library); 126 if the command cannot be executed; 127\n"
    "  if it is not found.\n"
    "\n"
    "Examples:\n"
    "  ddrun --service web --env staging -- ./server --port 8080\n"
    "  ddrun --env-file production.env ./app\n"
    "  ddrun --agent http://dd-agent:8126 --tags team:core -- python3 app.py\n"
    "  ddrun --output ./prof --hz 499 ./batch-job input.csv\n"
    "  ddrun --print-config --env-file staging.env ./server\n";

/* ---- main ---------------------------------------------------------------------- */

/* The variables flags set, in the order they are applied (after the env-files). */
enum { F_SERVICE, F_ENV, F_VERSION, F_TAGS, F_AGENT, F_OUTPUT, F_HZ, F_LOG, NFLAGS };
static const char *const flag_vars[NFLAGS] = {"DD_SERVICE",         "DD_ENV",
                                              "DD_VERSION",         "DD_TAGS",
                                              "DD_TRACE_AGENT_URL", "DD_SHIM_OUTPUT_DIR",
                                              "DD_SHIM_SAMPLE_HZ",  "DD_SHIM_LOG_LEVEL"};

/* Options that take a value (--opt VALUE or --opt=VALUE), and options that take none. */
static const char *const value_opts[] = {"--service", "--env",  "--version",  "--tags", "--agent",
                                         "--output",  "--hz",   "--env-file", "--lib"};
static const char *const bare_opts[] = {"--print-config", "--debug", "--help"};

static const char *find_opt(const char *const *list, size_t n, const char *arg, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == len && strncmp(arg, list[i], len) == 0)
            return list[i];
    return NULL;
}

int main(int argc, char **argv)
{
    (void)argc;
    char *flag_val[NFLAGS] = {0};
    const char *flag_src[NFLAGS] = {0};
    struct strv env_files = {0};
    int print_cfg = 0, debug = 0;
    char *lib = NULL;
    const char *lib_src = "";

    char **a = argv + 1;
    while (*a) {
        const char *arg = *a, *opt = NULL;
        char *val = NULL;
        if (!strcmp(arg, "--")) {
            a++;
            break;
        }
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            out_write(help, sizeof help - 1);
            out_done();
            return 0;
        }
        if (!strcmp(arg, "--print-config")) {
            print_cfg = 1;
            a++;
            continue;
        }
        if (!strcmp(arg, "--debug")) {
            debug = 1;
            a++;
            continue;
        }
        size_t namelen = strcspn(arg, "=");
        opt = find_opt(value_opts, sizeof value_opts / sizeof *value_opts, arg, namelen);
        if (!opt) {
            if (arg[namelen] == '=' && find_opt(bare_opts, sizeof bare_opts / sizeof *bare_opts, arg, namelen))
                usage_error("option %.*s takes no value", (int)namelen, arg);
            if (arg[0] == '-' && arg[1])
                usage_error("unknown option '%s'", arg);
            break; /* the command */
        }
        if (arg[namelen] == '=') {
            val = xstrdup(arg + namelen + 1);
            a++;
        } else {
            if (!a[1]) {
                if (!strcmp(opt, "--version"))
                    usage_error("option --version needs a value: the application's version (DD_VERSION); "
                                "ddrun has no version of its own to print");
                usage_error("option %s needs a value", opt);
            }
            val = xstrdup(a[1]);
            a += 2;
        }
        /* (--hz and --agent say what they accept, also about an empty value) */
        if (!*val && strcmp(opt, "--hz") != 0 && strcmp(opt, "--agent") != 0)
            usage_error("option %s needs a non-empty value", opt);
        int f;
        const char *why;
        if (!strcmp(opt, "--service")) {
            f = F_SERVICE;
        } else if (!strcmp(opt, "--env")) {
            f = F_ENV;
        } else if (!strcmp(opt, "--version")) {
            f = F_VERSION;
        } else if (!strcmp(opt, "--tags")) {
            f = F_TAGS;
        } else if (!strcmp(opt, "--agent")) {
            if ((why = check_agent_url(val)))
                usage_error("--agent '%s': expected %s", val, why);
            f = F_AGENT;
        } else if (!strcmp(opt, "--output")) {
            char *abs = absolute(val);
            free(val);
            val = abs;
            f = F_OUTPUT;
        } else if (!strcmp(opt, "--hz")) {
            if ((why = check_hz(val)))
                usage_error("--hz '%s': expected %s", val, why);
            f = F_HZ;
        } else if (!strcmp(opt, "--env-file")) {
            strv_push(&env_files, val);
            continue;
        } else { /* --lib */
            free(lib);
            lib = val;
            lib_src = "flag --lib";
            continue;
        }
        free(flag_val[f]);
        flag_val[f] = val;
        flag_src[f] = opt;
    }
    if (debug) {
        free(flag_val[F_LOG]);
        flag_val[F_LOG] = xstrdup("debug");
        flag_src[F_LOG] = "--debug";
    }
    char **cmd = a;
    if (!*cmd && !print_cfg)
        usage_error("no command given (usage: ddrun [options] [--] command [args...])");

    /* environment < env-files (in order) < flags */
    for (size_t i = 0; i < env_files.n; i++)
        load_env_file(env_files.v[i]);
    for (int f = 0; f < NFLAGS; f++)
        if (flag_val[f])
            set_var(flag_vars[f], flag_val[f], xasprintf("flag %s", flag_src[f]));

    /* the library and LD_PRELOAD */
    if (!lib) {
        const char *env_lib = getenv("DDSHIM_LIB");
        if (env_lib && *env_lib) {
            lib = xstrdup(env_lib);
            lib_src = "environment DDSHIM_LIB";
        } else {
            lib = default_lib();
            lib_src = "default";
        }
    }
    char *abs_lib = absolute(lib);
    free(lib);
    lib = abs_lib;
    int preload_user;
    char *preload = compose_preload(lib, &preload_user);

    if (print_cfg) {
        print_config(*cmd, lib, lib_src, preload, preload_user);
        return 0;
    }

    /* checks, then exec */
    struct stat st;
    if (stat(lib, &st) != 0) {
        size_t ll = strlen(lib), sl = strlen("/build/libddshim.so");
        if (!strcmp(lib_src, "default") && ll >= sl && !strcmp(lib + ll - sl, "/build/libddshim.so"))
            fail(2, "libddshim not found at %s (build it with 'make' in %.*s, or point --lib or DDSHIM_LIB at it)",
                 lib, (int)(ll - sl), lib);
        if (!strcmp(lib_src, "default"))
            fail(2, "libddshim not found at %s (install it next to ddrun, or point --lib or DDSHIM_LIB at it)", lib);
        fail(2, "libddshim not found at %s (check the path given by %s, or build the library with 'make')", lib,
             lib_src);
    }
    if (!S_ISREG(st.st_mode) || faccessat(AT_FDCWD, lib, R_OK, AT_EACCESS) != 0)
        fail(2, "libddshim at %s is not a readable file", lib);
    if (strchr(lib, ':') || has_space(lib, strlen(lib)))
        fail(2, "the library path '%s' contains a space or colon, which LD_PRELOAD cannot express; move or symlink it",
             lib);

    char *path;
    if (strchr(cmd[0], '/')) {
        if (stat(cmd[0], &st) != 0)
            fail(127, "%s: No such file or directory", cmd[0]);
        if (S_ISDIR(st.st_mode))
            fail(126, "%s: Is a directory", cmd[0]);
        if (!executable(cmd[0]))
            fail(126, "%s: Permission denied", cmd[0]);
        path = cmd[0];
    } else if (!(path = path_search(cmd[0]))) {
        fail(127, "%s: command not found", cmd[0]);
    }

    if (setenv("LD_PRELOAD", preload, 1) != 0)
        fail(2, "cannot set LD_PRELOAD: %s", strerror(errno));
    /* exec keeps this pid: the shim in the command (not in its children) says
     * on stderr where the data goes. */
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    if (setenv("DD_SHIM_ANNOUNCE_PID", pid, 1) != 0)
        fail(2, "cannot set DD_SHIM_ANNOUNCE_PID: %s", strerror(errno));
    if (debug)
        print_debug(cmd);
    exec_command(path, cmd);
    return 126; /* not reached */
}

#ifdef __SANITIZE_ADDRESS__
/* SANITIZER=address builds: the user's LD_PRELOAD may name libraries before
 * the ASan runtime this program links; ddrun only execs, so that order is
 * harmless here (tests/run.sh). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "verify_asan_link_order=0"; }
#endif
