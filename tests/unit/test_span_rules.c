/* tests/unit/test_span_rules.c — http/obfuscate.c, http/endpoint.c and
 * http/context.c: query redaction against the tracers' own test cases and
 * regex semantics, linear time on hostile input (timings printed, not
 * asserted), http.endpoint inference, trace-context extraction. */
#include "http/span_rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int n, failed;
static void ok(int cond, const char *desc)
{
    n++;
    if (!cond)
        failed++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n, desc);
}

static char out[1 << 22];

static const char *redact(const obf_rule *r, const char *in)
{
    obf_apply(r, in, strlen(in), out, sizeof out);
    return out;
}

static void t_redact(const obf_rule *r, const char *in, const char *want, const char *desc)
{
    const char *got = redact(r, in);
    int good = !strcmp(got, want);
    if (!good)
        printf("# in:   %s\n# want: %s\n# got:  %s\n", in, want, got);
    ok(good, desc);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void t_refused(const char *pat, const char *needle, const char *desc)
{
    char err[200] = "";
    obf_rule *r = obf_compile(pat, err, sizeof err);
    int good = !r && strstr(err, needle);
    if (!good)
        printf("# pattern %s: rule %p, err \"%s\"\n", pat, (void *)r, err);
    obf_free(r);
    ok(good, desc);
}

static void obfuscation(void)
{
    char err[200] = "";
    obf_rule *d = obf_compile(NULL, err, sizeof err);
    ok(d != NULL, "default pattern compiles");
    if (!d) {
        printf("# %s\n", err);
        return;
    }
    printf("# default program: %d instructions\n", obf_prog_size(d));

    /* The key is part of the match, so it is redacted with its value. */
    t_redact(d, "password=hunter2&user=bob", "<redacted>&user=bob", "password=...: key and value redacted");
    t_redact(d, "?password=hunter2&user=bob", "?<redacted>&user=bob", "with a leading ?");
    /* dd-trace-dotnet QueryStringObfuscatorTests, dd-trace-java QueryObfuscatorTest */
    t_redact(d, "key1=val1&token=a0b21ce2-006f-4cc6-95d5-d7b550698482&key2=val2",
             "key1=val1&<redacted>&key2=val2", "token=uuid between other keys (dotnet/java tests)");
    t_redact(d, "app_key=1111&application_key=2222", "<redacted>&<redacted>", "app_key, application_key (java test)");
    t_redact(d, "email=foo@bar.com", "email=foo@bar.com", "email is left alone (java test)");
    /* dd-trace-php root_span_url_with_query_params_obfuscation.phpt */
    t_redact(d, "key1=val1&token=a0b21ce2-006f-4cc6-95d5-d7b550698482&key2=val2&password=something",
             "key1=val1&<redacted>&key2=val2&<redacted>", "two keys (php test)");
    t_redact(d, "api_key=abc", "<redacted>", "api_key=abc");
    t_redact(d, "a=1&access_key_id=AKIA123&b=2", "a=1&<redacted>&b=2", "access_key_id");
    t_redact(d, "PASSWORD=x&Api_Key=y&SECRET%3Dz", "<redacted>&<redacted>&<redacted>", "uppercase keys, %3D ((?i))");
    t_redact(d, "old_pwd=a&new-password2=b&pass-phrase=c&consumer_secret=d",
             "<redacted>&<redacted>&<redacted>&<redacted>", "old_/new- password, pass-phrase, consumer_secret");
    t_redact(d, "signature=abc&auth=def&authorization=ghi", "<redacted>&<redacted>&<redacted>",
             "signature, auth, authorization");
    t_redact(d, "password%20%20=%20x&y=1", "<redacted>&y=1", "spaces (%20) before =");
    t_redact(d, "q=bearer%20abc.def-ghi_jkl&x=1", "q=<redacted>&x=1", "bearer <token> (%20)");
    t_redact(d, "q=Bearer  abc123", "q=<redacted>", "Bearer with spaces");
    t_redact(d, "x=token:abcdefghijklm0", "x=<redacted>0", "token:<13 alnum>");
    t_redact(d, "x=token%3Aabcdefghijklm", "x=<redacted>", "token%3A<13 alnum>");
    t_redact(d, "jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc_DEF-123&x=1", "jwt=<redacted>&x=1", "JWT");
    t_redact(d, "jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0&x=1", "jwt=<redacted>&x=1", "JWT without signature");
    t_redact(d, "t=ghp_0123456789abcdefghijABCDEFGHIJ012345&u=1", "t=<redacted>&u=1", "GitHub token ghp_ + 36");
    t_redact(d, "t=gho_0123456789abcdefghijABCDEFGHIJ01234", "t=gho_0123456789abcdefghijABCDEFGHIJ01234",
             "gho_ + 35 is not a token");
    t_redact(d, "k=-----BEGIN RSA PRIVATE KEY-----MIIEow+abc/def=-----END RSA PRIVATE KEY-----&z=1",
             "k=<redacted>&z=1", "PEM private key");
    t_redact(d, "k=-----BEGIN%20EC%20PRIVATE%20KEY-----abc-----END%20EC%20PRIVATE%20KEY-----",
             "k=<redacted>", "PEM private key, %20");
    char ssh[400];
    snprintf(ssh, sizeof ssh, "k=ssh-rsa%%20%s%s&z=1",
             "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7vbqajDhA/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
             "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb+ccccccc%2Fdddd== user.host");
    t_redact(d, ssh, "k=<redacted>&z=1", "ssh-rsa key of 100+ characters, with comment");
    ssh[strlen(ssh) - 9] = '@';
    /* The comment part is [a-z0-9._-]+: the tracers stop at '@' too. */
    t_redact(d, ssh, "k=<redacted>@host&z=1", "ssh-rsa comment ends at '@' (as in the tracers)");
    t_redact(d, "k=ssh-rsa%20AAAAB3NzaC1yc2E", "k=ssh-rsa%20AAAAB3NzaC1yc2E", "short ssh-rsa is left alone");
    t_redact(d, "data=%7B%22password%22%3A%20%22s3cr%25t%22%7D", "data=%7B<redacted>%7D",
             "JSON-ish %22password%22:%22...%22 (leading quote included)");
    t_redact(d, "data={\"api_key\" : \"abc\",\"x\":1}", "data={<redacted>,\"x\":1}", "JSON-ish \"api_key\" : \"...\"");
    t_redact(d, "user=bob&page=2&sort=asc", "user=bob&page=2&sort=asc", "nothing sensitive: unchanged");
    t_redact(d, "", "", "empty query");
    /* Leftmost-first over the whole alternation, restarted after each match. */
    t_redact(d, "eyJghp_0123456789abcdefghijABCDEFGHIJ012345ghp_0123456789abcdefghijABCDEFGHIJ012345",
             "eyJ<redacted><redacted>", "a failing JWT prefix does not hide the tokens after it");

    obf_rule *v1 = obf_compile(OBF_PATTERN_V1, err, sizeof err);
    ok(v1 != NULL, "earlier default (OBF_PATTERN_V1) compiles");
    if (v1) {
        t_redact(v1, "password=hunter2&user=bob", "<redacted>&user=bob", "v1: password");
        t_redact(v1, "data={\"api_key\":\"abc\"}", "data={\"<redacted>}", "v1: leading quote is kept");
        t_redact(v1, "app_key=1", "app_key=1", "v1: app_key is not covered");
    }
    obf_free(v1);

    /* User patterns. */
    obf_rule *r = obf_compile("ssn=[0-9-]+", err, sizeof err);
    ok(r != NULL, "custom pattern compiles");
    if (r)
        t_redact(r, "a=1&ssn=123-45-6789&b=2&password=x", "a=1&<redacted>&b=2&password=x",
                 "custom pattern replaces the default");
    obf_free(r);
    /* dd-trace-dotnet ObfuscateWithCustomPattern */
    r = obf_compile("(?i)(?:p(?:ass)?w(?:or)?d|pass(?:_?phrase)?|secret|(?:api_?|private_?|public_?|access_?"
                    "|secret_?)key(?:_?id)?|authentic\\d*)(?:\\s*=[^&]+|\"\\s*:\\s*\"[^\"]+\")"
                    "|[a-z0-9\\._\\-]{100,}",
                    err, sizeof err);
    ok(r != NULL, "dotnet's custom test pattern compiles");
    if (r)
        t_redact(r,
                 "?authentic1=val1&token=a0b21ce2-006f-4cc6-95d5-d7b550698482&key2=val2&authentic3=val2"
                 "&authentic55=v",
                 "?<redacted>&token=a0b21ce2-006f-4cc6-95d5-d7b550698482&key2=val2&<redacted>&<redacted>",
                 "dotnet's custom pattern test");
    obf_free(r);

    r = obf_compile("", err, sizeof err);
    ok(r != NULL && obf_prog_size(r) == 0, "\"\" compiles to no redaction");
    if (r)
        t_redact(r, "password=x", "password=x", "\"\": query unchanged");
    obf_free(r);

    t_refused("(a)\\1", "backreferences", "backreference refused");
    t_refused("(?=x)a", "lookaround", "lookahead refused");
    t_refused("(?<!x)a", "lookaround", "lookbehind refused");
    t_refused("(?>a)", "atomic", "atomic group refused");
    t_refused("a++", "possessive", "possessive quantifier refused");
    t_refused("a**", "repetition", "repeated quantifier refused");
    t_refused("*a", "missing argument", "quantifier without operand refused");
    t_refused("a{1001}", "above 1000", "count above 1000 refused");
    t_refused("(?:a{1000}){30}", "too large", "program above 20000 instructions refused");
    t_refused("[a-", "missing ]", "unterminated class refused");
    t_refused("(ab", "missing )", "unterminated group refused");
    t_refused("ab)", "unexpected )", "unbalanced ) refused");
    t_refused("\\p{L}", "Unicode", "\\p refused");
    t_refused("[z-a]", "range", "reversed range refused");

    /* Engine semantics (leftmost-first, as RE2/PCRE). */
    static const struct {
        const char *pat, *in, *want, *desc;
    } sem[] = {
        {"a|ab", "ab", "<redacted>b", "alternation: first branch wins"},
        {"ab|a", "ab", "<redacted>", "alternation: order matters"},
        {"a+", "aaa-aa", "<redacted>-<redacted>", "greedy +"},
        {"a+?", "aaa", "<redacted><redacted><redacted>", "lazy +?"},
        {"a{2,3}", "aaaaa", "<redacted><redacted>", "{2,3} greedy"},
        {"a{2,3}?", "aaaaa", "<redacted><redacted>a", "{2,3}? lazy"},
        {"a{2}", "aaaaa", "<redacted><redacted>a", "{2}"},
        {"x{2,}", "xxxxx-x", "<redacted>-x", "{2,}"},
        {"(?:ab){2}c", "ababcabc", "<redacted>abc", "repeated group"},
        {"^a", "aaa", "<redacted>aa", "^ anchors at the start"},
        {"a$", "aaa", "aa<redacted>", "$ anchors at the end"},
        {"(?m)^b", "b\nb", "<redacted>\n<redacted>", "(?m)^ at line starts"},
        {"\\bfoo\\b", "foo food foo", "<redacted> food <redacted>", "\\b word boundaries"},
        {"(?i:a)b", "AB Ab ab", "AB <redacted> <redacted>", "(?i:...) is scoped"},
        {"(a(?i)b)c|d", "aBc aBC D d", "<redacted> aBC D <redacted>", "(?i) lasts to the group's end"},
        {"(?x) a  b  # comment\n c", "abc", "<redacted>", "(?x) ignores space and comments"},
        {"[^a-c]+", "abxyzc", "ab<redacted>c", "negated range"},
        {"(?i)[^a]", "aAb", "aA<redacted>", "(?i) folds before negation"},
        {"[\\d-]+", "a1-2b", "a<redacted>b", "\\d and - in a class"},
        {"[[:digit:]x]+", "a12xb", "a<redacted>b", "POSIX class"},
        {"\\x41\\.", "A.AB", "<redacted>AB", "\\x escape and \\."},
        {"a.c", "abc a\nc", "<redacted> a\nc", ". does not match newline"},
        {"(?s)a.c", "a\nc", "<redacted>", "(?s) . matches newline"},
        {"a*", "baab", "b<redacted>b", "empty matches are ignored"},
        {"(|a)*\\w", "aa", "<redacted><redacted>", "nullable loop body: Perl/RE2/Go priority"},
        {"(?P<k>key)=(?<v>\\w+)", "key=v1&x", "<redacted>&x", "named groups"},
        {"a{,2}", "a{,2}", "<redacted>", "{,2} is a literal (RE2)"},
    };
    for (size_t i = 0; i < sizeof sem / sizeof sem[0]; i++) {
        obf_rule *s = obf_compile(sem[i].pat, err, sizeof err);
        if (!s) {
            printf("# %s: %s\n", sem[i].pat, err);
            ok(0, sem[i].desc);
            continue;
        }
        t_redact(s, sem[i].in, sem[i].want, sem[i].desc);
        obf_free(s);
    }

    /* Output bounds. */
    char small[16];
    size_t got = obf_apply(d, "password=x&user=bob", 19, small, sizeof small);
    ok(got == strlen(small) && !strcmp(small, "<redacted>&user"), "truncated output is NUL-terminated");
    got = obf_apply(d, "ab&password=x", 13, small, 8);
    ok(got == 3 && !strcmp(small, "ab&"), "a marker that does not fit is left out whole");
    got = obf_apply(d, "abc", 3, small, 1);
    ok(got == 0 && small[0] == 0, "cap 1: empty string");
    got = obf_apply(NULL, "user=bob", 8, small, sizeof small);
    ok(!strcmp(small, "<redacted>"), "no rule (did not compile): fails closed");

    /* Hostile input: 1 MB each, timings reported, not asserted. */
    size_t big = 1 << 20;
    char *in = malloc(big + 4096);
    struct {
        const char *desc, *head, *unit;
    } hostile[] = {
        {"\"password=\" repeated", "", "password="},
        {"\"a\" repeated", "", "a"},
        {"\"%\" repeated", "", "%"},
        {"\"%22\" repeated", "", "%22"},
        {"\"-\" repeated", "", "-"},
        {"JWT prefix then GitHub tokens, no '.'", "",
         "eyJghp_0123456789abcdefghijABCDEFGHIJ012345"},
        {"GitHub tokens behind one open JWT", "eyJ", "ghp_0123456789abcdefghijABCDEFGHIJ012345"},
        {"open JSON value, tokens inside", "%22password%22%3A%22",
         "token:abcdefghijklmtoken%3Aabcdefghijklm"},
        {"open PEM block", "-----BEGIN RSA PRIVATE KEY-----", "abcdefghij"},
        {"ssh-rsa then a 1 MB key", "ssh-rsa ", "AAAAB3NzaC"},
        {"\"ssh-rsa \" repeated", "", "ssh-rsa "},
        {"\"bearer \" repeated", "", "bearer "},
        {"\"token:\" repeated", "", "token:"},
        {"\"pass\" repeated", "", "pass"},
    };
    for (size_t h = 0; h < sizeof hostile / sizeof hostile[0]; h++) {
        size_t hl = strlen(hostile[h].head), ul = strlen(hostile[h].unit), len = hl;
        memcpy(in, hostile[h].head, hl);
        while (len + ul <= big) {
            memcpy(in + len, hostile[h].unit, ul);
            len += ul;
        }
        double t0 = now_ms();
        size_t o = obf_apply(d, in, len, out, sizeof out);
        double t1 = now_ms();
        printf("# hostile %-40s %7zu bytes -> %7zu bytes in %8.1f ms\n", hostile[h].desc, len, o, t1 - t0);
    }
    /* Results on large input: same as restarting after each match. */
    size_t len = 0;
    while (len + 9 <= big) {
        memcpy(in + len, "password=", 9);
        len += 9;
    }
    obf_apply(d, in, len, out, sizeof out);
    ok(!strcmp(out, "<redacted>"), "1 MB of password=...: one match to the end");
    memcpy(in, "eyJ", 3);
    len = 3;
    int tokens = 0;
    while (len + 40 <= big) {
        memcpy(in + len, "ghp_0123456789abcdefghijABCDEFGHIJ012345", 40);
        len += 40;
        tokens++;
    }
    size_t o = obf_apply(d, in, len, out, sizeof out);
    int good = o == 3 + (size_t)tokens * 10 && !memcmp(out, "eyJ<redacted>", 13) &&
               !strstr(out, "ghp_");
    ok(good, "26000 tokens behind an open JWT: each redacted");
    free(in);

    obf_free(d);
}

static void t_endpoint(const char *path, const char *want)
{
    char buf[256], desc[300];
    endpoint_of(path, strlen(path), buf, sizeof buf);
    snprintf(desc, sizeof desc, "endpoint %s -> %s", path[0] ? path : "\"\"", want);
    if (strcmp(buf, want))
        printf("# got %s\n", buf);
    ok(!strcmp(buf, want), desc);
}

static void endpoints(void)
{
    /* dd-trace-py tests/tracer/test_resource_renaming.py and dd-trace-cpp
     * test_endpoint_inferral.cpp (except its trailing '/'). */
    t_endpoint("", "/");
    t_endpoint("/", "/");
    t_endpoint("////", "/");
    t_endpoint("/users", "/users");
    t_endpoint("/users/123", "/users/{param:int}");
    t_endpoint("/users/5", "/users/5");
    t_endpoint("/x/09", "/x/09");
    t_endpoint("/users/0123", "/users/{param:int_id}");
    t_endpoint("/items/123-456", "/items/{param:int_id}");
    t_endpoint("/v1/0-1_2.3", "/v1/{param:int_id}");
    t_endpoint("/x/0-", "/x/0-");
    t_endpoint("/x/0__", "/x/{param:int_id}");
    t_endpoint("/commits/abc123", "/commits/{param:hex}");
    t_endpoint("/v1/orders/abc123def/items", "/v1/orders/{param:hex}/items");
    t_endpoint("/sessions/deadbeef", "/sessions/deadbeef");
    t_endpoint("/x/abcd9", "/x/abcd9");
    t_endpoint("/items/abc123-def", "/items/{param:hex_id}");
    t_endpoint("/x/ab_c9", "/x/ab_c9");
    t_endpoint("/x/ab_cd9", "/x/{param:hex_id}");
    t_endpoint("/x/abc-def", "/x/abc-def");
    t_endpoint("/files/verylongfilename12345", "/files/{param:str}");
    t_endpoint("/x/aaaaaaaaaaaaaaaaaaa", "/x/aaaaaaaaaaaaaaaaaaa");
    t_endpoint("/x/aaaaaaaaaaaaaaaaaaaa", "/x/{param:str}");
    t_endpoint("/users/user@example", "/users/{param:str}");
    t_endpoint("/x/a(b", "/x/{param:str}");
    t_endpoint("/x/file.with.dots", "/x/file.with.dots");
    t_endpoint("/a/b/c/d/e/f/g/h/i/j/k", "/a/b/c/d/e/f/g/h");
    t_endpoint("/1/2/3/4/5/6/7/8/9", "/1/2/3/4/5/6/7/8");
    t_endpoint("/api//v1///users//123", "/api/v1/users/{param:int}");
    t_endpoint("/a/b/", "/a/b");
    t_endpoint("/api/v2/users/123/posts/abc123/comments/hello%20world",
               "/api/v2/users/{param:int}/posts/{param:hex}/comments/{param:str}");
    t_endpoint("/12/123-456/abc123/abc-def-123/longstringthathastoomanycharacters",
               "/{param:int}/{param:int_id}/{param:hex}/{param:hex_id}/{param:str}");
    t_endpoint("/users/123?id=5#top", "/users/{param:int}");
    t_endpoint("users/123", "/users/{param:int}");
    /* 10 two-byte characters are 10 characters, not 20. */
    t_endpoint("/x/\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
               "/x/\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    char buf[16];
    size_t l = endpoint_of("/users/123", 10, buf, 10);
    ok(l == 6 && !strcmp(buf, "/users"), "endpoint: only whole segments when out is small");
    l = endpoint_of("/users/123", 4, buf, sizeof buf);
    ok(l == 4 && !strcmp(buf, "/use"), "endpoint: len bounds the path");
    l = endpoint_of(NULL, 0, buf, sizeof buf);
    ok(l == 1 && !strcmp(buf, "/"), "endpoint: NULL path");
}

static const int both[] = {CTX_STYLE_DATADOG, CTX_STYLE_TRACECONTEXT};
static const int w3c_first[] = {CTX_STYLE_TRACECONTEXT, CTX_STYLE_DATADOG};
static const int dd_only[] = {CTX_STYLE_DATADOG};

static struct trace_ctx ex(const int *st, int ns, struct ctx_headers h)
{
    struct trace_ctx c;
    memset(&c, 0x5a, sizeof c);
    ctx_extract(st, ns, &h, &c);
    return c;
}

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void contexts(void)
{
    struct trace_ctx c;
    c = ex(both, 2, (struct ctx_headers){.dd_trace_id = "123", .dd_parent_id = "456",
                                         .dd_sampling_priority = "2", .dd_origin = "synthetics",
                                         .dd_tags = "_dd.p.dm=-4,_dd.p.tid=640cfd8d00000000,foo=bar,"
                                                    "_dd.p.usr.id=baz64=="});
    ok(c.found && c.trace_id_lo == 123 && c.parent_id == 456 && c.has_priority &&
           c.sampling_priority == 2 && !strcmp(c.origin, "synthetics"),
       "datadog: ids, priority, origin");
    ok(c.trace_id_hi == 0x640cfd8d00000000ull, "datadog: _dd.p.tid gives the high 64 bits");
    ok(!strcmp(c.propagated_tags, "_dd.p.dm=-4,_dd.p.usr.id=baz64=="),
       "datadog: only _dd.p.* kept, tid not repeated, '=' allowed in values");
    c = ex(both, 2, (struct ctx_headers){.dd_trace_id = "18446744073709551615", .dd_parent_id = " 1 "});
    ok(c.found && c.trace_id_lo == UINT64_MAX && c.parent_id == 1 && !c.has_priority && !c.origin[0] &&
           !c.propagated_tags[0] && !c.trace_id_hi,
       "datadog: max id, trimmed, optional headers absent");
    static const struct {
        const char *tid, *pid, *desc;
    } bad[] = {
        {"0", "1", "trace id 0"},
        {"1", "0", "parent id 0"},
        {"1", NULL, "parent id missing"},
        {NULL, "1", "trace id missing"},
        {"abc", "1", "trace id not a number"},
        {"-5", "1", "negative trace id"},
        {"0x10", "1", "hex trace id"},
        {"18446744073709551616", "1", "trace id overflow"},
        {"12 3", "1", "inner space"},
        {"", "1", "empty trace id"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char desc[100];
        snprintf(desc, sizeof desc, "datadog invalid: %s", bad[i].desc);
        c = ex(dd_only, 1, (struct ctx_headers){.dd_trace_id = bad[i].tid, .dd_parent_id = bad[i].pid});
        ok(!c.found && !c.trace_id_lo && !c.parent_id, desc);
    }
    c = ex(dd_only, 1, (struct ctx_headers){.dd_trace_id = "5", .dd_parent_id = "6", .dd_sampling_priority = "x"});
    ok(c.found && !c.has_priority, "datadog: a bad priority is ignored, the context kept");
    c = ex(dd_only, 1, (struct ctx_headers){.dd_trace_id = "5", .dd_parent_id = "6", .dd_sampling_priority = "-1"});
    ok(c.found && c.has_priority && c.sampling_priority == -1, "datadog: priority -1");
    char tags[700] = "_dd.p.dm=-4";
    for (size_t tl = strlen(tags); tl <= 512; tl += 28)
        memcpy(tags + tl, ",_dd.p.xxxxxxxxxx=yyyyyyyyyy", 29);
    c = ex(dd_only, 1, (struct ctx_headers){.dd_trace_id = "5", .dd_parent_id = "6", .dd_tags = tags});
    ok(c.found && !c.propagated_tags[0], "datadog: x-datadog-tags over 512 bytes rejected whole");
    c = ex(dd_only, 1, (struct ctx_headers){.dd_trace_id = "5", .dd_parent_id = "6", .dd_tags = "_dd.p.dm=-4,broken"});
    ok(c.found && !c.propagated_tags[0], "datadog: a malformed pair voids x-datadog-tags");
    c = ex(dd_only, 1, (struct ctx_headers){.dd_trace_id = "5", .dd_parent_id = "6",
                                            .dd_tags = "_dd.p.dm=-4,_dd.p.tid=640CFD8D00000000"});
    ok(c.found && !c.trace_id_hi && !strcmp(c.propagated_tags, "_dd.p.dm=-4"),
       "datadog: uppercase tid ignored, other tags kept");
    c = ex(dd_only, 1, (struct ctx_headers){.dd_trace_id = "5", .dd_parent_id = "6", .dd_tags = "_dd.p.tid=640cfd8d"});
    ok(c.found && !c.trace_id_hi, "datadog: short tid ignored");
    c = ex(dd_only, 1, (struct ctx_headers){.dd_trace_id = "5", .dd_parent_id = "6", .dd_tags = "_dd.p.a b=1"});
    ok(c.found && !c.propagated_tags[0], "datadog: a space in a tag key voids the header");
    c = ex(dd_only, 1, (struct ctx_headers){.dd_trace_id = "5", .dd_parent_id = "6", .dd_origin = "bad\x01"});
    ok(c.found && !c.origin[0], "datadog: origin with a control byte dropped");

    c = ex(both, 2, (struct ctx_headers){.traceparent = TP});
    ok(c.found && c.trace_id_hi == 0x4bf92f3577b34da6ull && c.trace_id_lo == 0xa3ce929d0e0e4736ull &&
           c.parent_id == 0x00f067aa0ba902b7ull && c.has_priority && c.sampling_priority == 1,
       "traceparent: 128-bit id, parent, sampled flag -> priority 1");
    c = ex(both, 2, (struct ctx_headers){.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"});
    ok(c.found && c.sampling_priority == 0, "traceparent: flag 00 -> priority 0");
    c = ex(both, 2, (struct ctx_headers){.traceparent = "  " TP "\t"});
    ok(c.found, "traceparent: surrounding whitespace trimmed");
    static const struct {
        const char *tp, *desc;
    } badtp[] = {
        {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "uppercase hex"},
        {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "all-zero trace id"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "all-zero parent id"},
        {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "version 00 with more fields"},
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", "future version, no '-' after flags"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "short flags"},
        {"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "short trace id"},
        {"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", "wrong separators"},
        {"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "non-hex version"},
        {"", "empty"},
    };
    for (size_t i = 0; i < sizeof badtp / sizeof badtp[0]; i++) {
        char desc[100];
        snprintf(desc, sizeof desc, "traceparent invalid: %s", badtp[i].desc);
        c = ex(both, 2, (struct ctx_headers){.traceparent = badtp[i].tp});
        ok(!c.found, desc);
    }
    c = ex(both, 2, (struct ctx_headers){.traceparent = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future"});
    ok(c.found && c.sampling_priority == 1, "traceparent: a future version with more fields is accepted");
    c = ex(both, 2, (struct ctx_headers){.traceparent = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09"});
    ok(c.found && c.sampling_priority == 1, "traceparent: future version, other flag bits ignored");

    c = ex(both, 2, (struct ctx_headers){.traceparent = TP,
                                         .tracestate = "dd=s:2;o:rum;p:00f067aa0ba902b7;t.dm:-4;t.usr.id:baz64~~,"
                                                       "congo=t61rcWkgMzE"});
    ok(c.found && c.sampling_priority == 2 && !strcmp(c.origin, "rum") &&
           !strcmp(c.propagated_tags, "_dd.p.dm=-4,_dd.p.usr.id=baz64=="),
       "tracestate: s, o, t.* (with ~ -> =)");
    c = ex(both, 2, (struct ctx_headers){.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                                         .tracestate = "dd=s:2"});
    ok(c.sampling_priority == 0, "tracestate: s:2 against flag 00 -> 0 (the flag wins)");
    c = ex(both, 2, (struct ctx_headers){.traceparent = TP, .tracestate = "dd=s:-1"});
    ok(c.sampling_priority == 1, "tracestate: s:-1 against flag 01 -> 1");
    c = ex(both, 2, (struct ctx_headers){.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                                         .tracestate = "dd=s:-1"});
    ok(c.sampling_priority == -1, "tracestate: s:-1 with flag 00 -> -1");
    c = ex(both, 2, (struct ctx_headers){.traceparent = TP, .tracestate = "foo=bar , dd=o:synthetics~x;t.tid:ffff;junk"});
    ok(c.found && c.sampling_priority == 1 && !strcmp(c.origin, "synthetics=x") && !c.propagated_tags[0] &&
           c.trace_id_hi == 0x4bf92f3577b34da6ull,
       "tracestate: dd after another member, origin ~ -> =, t.tid ignored, no s: keeps the flag");
    c = ex(both, 2, (struct ctx_headers){.tracestate = "dd=s:1"});
    ok(!c.found, "tracestate alone is not a context");

    /* Both styles. */
    struct ctx_headers two = {.dd_trace_id = "1", .dd_parent_id = "2", .dd_sampling_priority = "1",
                              .traceparent = TP};
    c = ex(both, 2, two);
    ok(c.found && c.trace_id_lo == 1 && c.parent_id == 2, "datadog,tracecontext: datadog wins");
    c = ex(w3c_first, 2, two);
    ok(c.found && c.trace_id_lo == 0xa3ce929d0e0e4736ull && c.parent_id == 0x00f067aa0ba902b7ull,
       "tracecontext,datadog: W3C wins");
    two.dd_trace_id = "x";
    c = ex(both, 2, two);
    ok(c.found && c.trace_id_lo == 0xa3ce929d0e0e4736ull, "invalid datadog falls through to W3C");
    c = ex(dd_only, 1, two);
    ok(!c.found, "only datadog listed: W3C not consulted");
    struct ctx_headers same = {.dd_trace_id = "11803532876627986230", /* 0xa3ce929d0e0e4736 */
                               .dd_parent_id = "99", .dd_tags = "_dd.p.tid=4bf92f3577b34da6",
                               .traceparent = TP};
    c = ex(both, 2, same);
    ok(c.found && c.trace_id_hi == 0x4bf92f3577b34da6ull && c.trace_id_lo == 0xa3ce929d0e0e4736ull &&
           c.parent_id == 0x00f067aa0ba902b7ull,
       "same 128-bit trace in both: datadog context with the W3C parent");
    same.dd_tags = NULL;
    c = ex(both, 2, same);
    ok(c.found && c.parent_id == 99 && !c.trace_id_hi, "datadog without tid is another trace: no merge");
    same.dd_tags = "_dd.p.tid=4bf92f3577b34da6";
    c = ex(dd_only, 1, same);
    ok(c.found && c.parent_id == 99, "tracecontext not listed: no merge");
    c = ex(NULL, 0, two);
    ok(!c.found && !c.trace_id_lo && !c.propagated_tags[0], "no styles: nothing");

    int st[4], k;
    k = ctx_parse_styles("datadog,tracecontext", st);
    ok(k == 2 && st[0] == CTX_STYLE_DATADOG && st[1] == CTX_STYLE_TRACECONTEXT, "styles: datadog,tracecontext");
    k = ctx_parse_styles(" TraceContext  Datadog ", st);
    ok(k == 2 && st[0] == CTX_STYLE_TRACECONTEXT && st[1] == CTX_STYLE_DATADOG, "styles: spaces, case");
    k = ctx_parse_styles("none", st);
    ok(k == 0, "styles: none");
    k = ctx_parse_styles("datadog,tracecontext,baggage", st);
    ok(k == 2, "styles: baggage (Datadog's default list) skipped");
    k = ctx_parse_styles("b3 single header,datadog,datadog", st);
    ok(k == 1 && st[0] == CTX_STYLE_DATADOG, "styles: legacy b3 name skipped, duplicates once");
    k = ctx_parse_styles("datadog,jaeger", st);
    ok(k == -1, "styles: unknown name -> -1");
    k = ctx_parse_styles("", st);
    ok(k == 0, "styles: empty");
}

int main(void)
{
    obfuscation();
    endpoints();
    contexts();
    printf("1..%d\n", n);
    return failed ? 1 : 0;
}
