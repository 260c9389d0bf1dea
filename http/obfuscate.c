/* http/obfuscate.c — query-string obfuscation (obf_*): a small regex compiler
 * and a Pike VM that replaces every match with "<redacted>". Runs in the
 * uploader thread only (span building); never on host threads, never in
 * signal context. A compiled obf_rule is immutable and obf_apply allocates its
 * own scratch, so a rule may be shared.
 *
 * DESIGN. A pattern is parsed into a small tree; code generation expands
 * bounded repetitions (capped at OBF_MAX_PROG instructions) into a program run
 * by a Pike VM over bytes. Threads are kept in priority order and at most one
 * per instruction, which yields the leftmost-first matches of RE2 and PCRE
 * (what the tracers use) with no backtracking.
 *
 * Replacing every match the way the tracers do (search, replace, search again
 * from the end of the match) can re-read the same bytes once per match: a
 * higher-priority thread that runs far and then fails (a JWT prefix "eyJ"
 * followed by thousands of GitHub tokens and no ".") keeps each search open
 * until it dies, and the next search starts back behind it. So instead the
 * search that would start at the end of the current best match starts right
 * away, in the same pass, and is thrown away if that match changes. Searches
 * form a chain, all threads sit in one list ordered by (search, priority), and
 * a thread of a later search that lands on an instruction an earlier search
 * already holds is dropped: whatever it could do, the earlier thread does at
 * the same moment, and an earlier search reaching a match discards every later
 * search. Each byte is read once and costs at most one step per instruction:
 * O(len x program size) in all cases, with the restart loop's results.
 *
 * Differences from the tracers' engines: bytes, not UTF-8 runes (\w, \s, ".",
 * [^x] see one byte; ASCII-only case folding); empty matches are ignored (a
 * pattern that can match "" only redacts its non-empty matches); \s is RE2's
 * [\t\n\f\r ]; "$" without (?m) matches only at the very end (RE2). */
#include "http/span_rules.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OBF_MAX_PROG 20000     /* instructions, after expanding repetitions */
#define OBF_MAX_REPEAT 1000    /* largest n in {n} / {n,m}, as in RE2 */
#define OBF_MAX_DEPTH 200      /* group nesting: the parser recurses */
#define OBF_MAX_SEARCHES (1u << 20)
#define OBF_MAX_INPUT ((size_t)1 << 30) /* keeps the generation counters in 32 bits */

static const char REDACTED[] = "<redacted>";
#define REDACTED_LEN (sizeof REDACTED - 1)

/* The default of DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP in current
 * dd-trace-java (QueryObfuscator), dd-trace-py (the same pattern written with
 * (?ix)) and dd-trace-dotnet, and in Datadog's configuration docs. */
const char OBF_DEFAULT_PATTERN[] =
    "(?i)(?:(?:\"|%22)?)"
    "(?:(?:old[-_]?|new[-_]?)?p(?:ass)?w(?:or)?d(?:1|2)?|pass(?:[-_]?phrase)?|secret"
    "|(?:api[-_]?|private[-_]?|public[-_]?|access[-_]?|secret[-_]?|app(?:lication)?[-_]?)"
    "key(?:[-_]?id)?|token|consumer[-_]?(?:id|key|secret)|sign(?:ed|ature)?"
    "|auth(?:entication|orization)?)"
    "(?:(?:\\s|%20)*(?:=|%3D)[^&]+"
    "|(?:\"|%22)(?:\\s|%20)*(?::|%3A)(?:\\s|%20)*(?:\"|%22)(?:%2[^2]|%[^2]|[^\"%])+(?:\"|%22))"
    "|(?:bearer(?:\\s|%20)+[a-z0-9._\\-]+"
    "|token(?::|%3A)[a-z0-9]{13}"
    "|gh[opsu]_[0-9a-zA-Z]{36}"
    "|ey[I-L](?:[\\w=-]|%3D)+\\.ey[I-L](?:[\\w=-]|%3D)+(?:\\.(?:[\\w.+/=-]|%3D|%2F|%2B)+)?"
    "|-{5}BEGIN(?:[a-z\\s]|%20)+PRIVATE(?:\\s|%20)KEY-{5}[^\\-]+-{5}END(?:[a-z\\s]|%20)+"
    "PRIVATE(?:\\s|%20)KEY(?:-{5})?(?:\\n|%0A)?"
    "|(?:ssh-(?:rsa|dss)|ecdsa-[a-z0-9]+-[a-z0-9]+)(?:\\s|%20|%09)+(?:[a-z0-9/.+]|%2F|%5C|%2B){100,}"
    "(?:=|%3D)*(?:(?:\\s|%20|%09)+[a-z0-9._-]+)?)";

/* The earlier default, still dd-trace-js's (applied there with flags "gi"). */
const char OBF_PATTERN_V1[] =
    "(?i)(?:p(?:ass)?w(?:or)?d|pass(?:_?phrase)?|secret|(?:api_?|private_?|public_?|access_?"
    "|secret_?)key(?:_?id)?|token|consumer_?(?:id|key|secret)|sign(?:ed|ature)?"
    "|auth(?:entication|orization)?)"
    "(?:(?:\\s|%20)*(?:=|%3D)[^&]+|(?:\"|%22)(?:\\s|%20)*(?::|%3A)(?:\\s|%20)*(?:\"|%22)"
    "(?:%2[^2]|%[^2]|[^\"%])+(?:\"|%22))"
    "|bearer(?:\\s|%20)+[a-z0-9\\._\\-]+|token(?::|%3A)[a-z0-9]{13}|gh[opsu]_[0-9a-zA-Z]{36}"
    "|ey[I-L](?:[\\w=-]|%3D)+\\.ey[I-L](?:[\\w=-]|%3D)+(?:\\.(?:[\\w.+\\/=-]|%3D|%2F|%2B)+)?"
    "|[\\-]{5}BEGIN(?:[a-z\\s]|%20)+PRIVATE(?:\\s|%20)KEY[\\-]{5}[^\\-]+[\\-]{5}END"
    "(?:[a-z\\s]|%20)+PRIVATE(?:\\s|%20)KEY"
    "|ssh-rsa(?:\\s|%20)*(?:[a-z0-9\\/\\.+]|%2F|%5C|%2B){100,}";

/* ---- byte sets ------------------------------------------------------------ */

typedef struct {
    uint8_t b[32];
} bset;

static inline int bs_has(const bset *s, unsigned c) { return s->b[c >> 3] >> (c & 7) & 1; }
static inline void bs_add(bset *s, unsigned c) { s->b[c >> 3] |= (uint8_t)(1u << (c & 7)); }
static void bs_range(bset *s, unsigned lo, unsigned hi)
{
    for (unsigned c = lo; c <= hi; c++)
        bs_add(s, c);
}
static void bs_or(bset *d, const bset *s)
{
    for (int i = 0; i < 32; i++)
        d->b[i] |= s->b[i];
}
static void bs_not(bset *s)
{
    for (int i = 0; i < 32; i++)
        s->b[i] = (uint8_t)~s->b[i];
}
static void bs_fold(bset *s)
{
    for (unsigned c = 'a'; c <= 'z'; c++)
        if (bs_has(s, c) || bs_has(s, c - 32)) {
            bs_add(s, c);
            bs_add(s, c - 32);
        }
}

static void perl_class(bset *s, char k)
{
    bset t;
    memset(&t, 0, sizeof t);
    switch (k | 0x20) {
    case 'd':
        bs_range(&t, '0', '9');
        break;
    case 'w':
        bs_range(&t, '0', '9');
        bs_range(&t, 'a', 'z');
        bs_range(&t, 'A', 'Z');
        bs_add(&t, '_');
        break;
    case 's':
        bs_add(&t, ' ');
        bs_add(&t, '\t');
        bs_add(&t, '\n');
        bs_add(&t, '\f');
        bs_add(&t, '\r');
        break;
    }
    if (k >= 'A' && k <= 'Z')
        bs_not(&t);
    bs_or(s, &t);
}

/* ---- program ---------------------------------------------------------------- */

enum { OP_BYTE, OP_SPLIT, OP_JMP, OP_ASSERT, OP_MATCH };
enum { AS_BOT, AS_EOT, AS_BOL, AS_EOL, AS_WORD, AS_NWORD };

struct inst {
    uint8_t op, arg; /* arg: AS_* for OP_ASSERT */
    int32_t x, y;    /* OP_BYTE: x = byte set; OP_SPLIT: x preferred, y other; OP_JMP: x */
};

struct obf_rule {
    int noop; /* the "" pattern */
    int ninst;
    struct inst *prog;
    bset *cls;
    int ncls;
    uint8_t first[256]; /* bytes that can begin a (non-empty) match */
    /* The threads a new search starts with, per first byte, in priority order;
     * only when no assertion is reachable before the first byte (start_assert
     * == 0), since an assertion's outcome depends on more than that byte. */
    int start_assert;
    uint32_t start_off[257];
    int32_t *start_pcs;
};

/* ---- parser ----------------------------------------------------------------- */

enum { N_EMPTY, N_CLASS, N_CAT, N_ALT, N_REP, N_ASSERT };
enum { F_I = 1, F_M = 2, F_S = 4, F_X = 8, F_U = 16 };

struct node {
    uint8_t kind, greedy, arg;
    int32_t child, next; /* CAT/ALT: first child, siblings by next; REP: operand */
    int32_t cls;
    int32_t min, max; /* REP; max < 0: unbounded */
};

struct parser {
    const char *pat, *p, *end;
    int flags, depth;
    struct node *nodes;
    int nn, capn;
    bset *cls;
    int nc, capc;
    char *err;
    size_t errlen;
    int failed;
};

__attribute__((format(printf, 2, 3))) static int fail(struct parser *ps, const char *fmt, ...)
{
    if (!ps->failed && ps->err && ps->errlen) {
        char msg[160];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(ps->err, ps->errlen, "%s at offset %d", msg, (int)(ps->p - ps->pat));
    }
    ps->failed = 1;
    return -1;
}

static int new_node(struct parser *ps, int kind)
{
    if (ps->nn == ps->capn) {
        int cap = ps->capn ? ps->capn * 2 : 64;
        struct node *n = realloc(ps->nodes, (size_t)cap * sizeof *n);
        if (!n)
            return fail(ps, "out of memory");
        ps->nodes = n;
        ps->capn = cap;
    }
    struct node *n = &ps->nodes[ps->nn];
    memset(n, 0, sizeof *n);
    n->kind = (uint8_t)kind;
    n->child = n->next = n->cls = -1;
    return ps->nn++;
}

static int class_node(struct parser *ps, const bset *s)
{
    if (ps->nc == ps->capc) {
        int cap = ps->capc ? ps->capc * 2 : 32;
        bset *c = realloc(ps->cls, (size_t)cap * sizeof *c);
        if (!c)
            return fail(ps, "out of memory");
        ps->cls = c;
        ps->capc = cap;
    }
    int n = new_node(ps, N_CLASS);
    if (n < 0)
        return -1;
    ps->cls[ps->nc] = *s;
    ps->nodes[n].cls = ps->nc++;
    return n;
}

static int literal_node(struct parser *ps, unsigned c)
{
    bset s;
    memset(&s, 0, sizeof s);
    bs_add(&s, c);
    if (ps->flags & F_I)
        bs_fold(&s);
    return class_node(ps, &s);
}

static int assert_node(struct parser *ps, int kind)
{
    int n = new_node(ps, N_ASSERT);
    if (n >= 0)
        ps->nodes[n].arg = (uint8_t)kind;
    return n;
}

/* (?x): whitespace and #-comments between tokens are not part of the pattern. */
static void skip_x(struct parser *ps)
{
    if (!(ps->flags & F_X))
        return;
    while (ps->p < ps->end) {
        char c = *ps->p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            ps->p++;
        } else if (c == '#') {
            while (ps->p < ps->end && *ps->p != '\n')
                ps->p++;
        } else {
            break;
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

static int is_alnum(char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* After a backslash. Returns 1 with a byte in *lit, 2 with a set OR'ed into
 * *set, 3 with an assertion in *as (outside classes only), -1 on error. */
static int parse_escape(struct parser *ps, int in_class, unsigned *lit, bset *set, int *as)
{
    if (ps->p >= ps->end)
        return fail(ps, "trailing backslash");
    char c = *ps->p++;
    switch (c) {
    case 'd': case 'D': case 'w': case 'W': case 's': case 'S':
        perl_class(set, c);
        return 2;
    case 'b': case 'B': case 'A': case 'z': case 'Z':
        if (in_class)
            return fail(ps, "\\%c is not allowed in a character class", c);
        *as = c == 'b' ? AS_WORD : c == 'B' ? AS_NWORD : c == 'A' ? AS_BOT : AS_EOT;
        return 3;
    case 'n': *lit = '\n'; return 1;
    case 'r': *lit = '\r'; return 1;
    case 't': *lit = '\t'; return 1;
    case 'f': *lit = '\f'; return 1;
    case 'v': *lit = '\v'; return 1;
    case 'a': *lit = 7; return 1;
    case 'e': *lit = 27; return 1;
    case '0': *lit = 0; return 1;
    case 'x': {
        unsigned v = 0;
        if (ps->p < ps->end && *ps->p == '{') {
            const char *q = ps->p + 1;
            int nd = 0;
            while (q < ps->end && hexval(*q) >= 0 && nd < 8) {
                v = v * 16 + (unsigned)hexval(*q++);
                nd++;
            }
            if (!nd || q >= ps->end || *q != '}')
                return fail(ps, "bad \\x{...} escape");
            if (v > 0xff)
                return fail(ps, "\\x{%x}: only single bytes (up to \\x{ff}) are supported", v);
            ps->p = q + 1;
        } else {
            if (ps->end - ps->p < 2 || hexval(ps->p[0]) < 0 || hexval(ps->p[1]) < 0)
                return fail(ps, "bad \\x escape");
            v = (unsigned)(hexval(ps->p[0]) * 16 + hexval(ps->p[1]));
            ps->p += 2;
        }
        *lit = v;
        return 1;
    }
    case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9':
    case 'k': case 'g':
        return fail(ps, "backreferences are not supported");
    case 'p': case 'P':
        return fail(ps, "Unicode classes (\\p, \\P) are not supported");
    default:
        if (is_alnum(c) || (unsigned char)c >= 0x80)
            return fail(ps, "unsupported escape \\%c", c);
        *lit = (unsigned char)c;
        return 1;
    }
}

static const struct {
    const char *name;
    const char *ranges; /* pairs lo,hi */
} posix_classes[] = {
    {"alnum", "09AZaz"},   {"alpha", "AZaz"},     {"ascii", "\x01\x7f"}, {"blank", "\t\t  "},
    {"cntrl", "\x01\x1f\x7f\x7f"}, {"digit", "09"}, {"graph", "!~"},     {"lower", "az"},
    {"print", " ~"},       {"punct", "!/:@[`{~"}, {"space", "\t\r  "},   {"upper", "AZ"},
    {"word", "09AZaz__"},  {"xdigit", "09AFaf"},
};

static int parse_posix(struct parser *ps, bset *s)
{
    const char *q = ps->p + 2; /* after "[:" */
    int neg = q < ps->end && *q == '^';
    if (neg)
        q++;
    const char *nm = q;
    while (q + 1 < ps->end && !(q[0] == ':' && q[1] == ']'))
        q++;
    if (q + 1 >= ps->end)
        return fail(ps, "bad POSIX class");
    for (size_t i = 0; i < sizeof posix_classes / sizeof posix_classes[0]; i++) {
        const char *n = posix_classes[i].name;
        if (strlen(n) == (size_t)(q - nm) && !memcmp(n, nm, (size_t)(q - nm))) {
            bset t;
            memset(&t, 0, sizeof t);
            for (const char *r = posix_classes[i].ranges; r[0]; r += 2)
                bs_range(&t, (unsigned char)r[0], (unsigned char)r[1]);
            if (!strcmp(n, "ascii"))
                bs_add(&t, 0);
            if (!strcmp(n, "cntrl"))
                bs_add(&t, 0);
            if (neg)
                bs_not(&t);
            bs_or(s, &t);
            ps->p = q + 2;
            return 0;
        }
    }
    return fail(ps, "unknown POSIX class [:%.*s:]", (int)(q - nm), nm);
}

static int parse_class(struct parser *ps)
{
    ps->p++; /* '[' */
    bset s;
    memset(&s, 0, sizeof s);
    int neg = 0, first = 1;
    if (ps->p < ps->end && *ps->p == '^') {
        neg = 1;
        ps->p++;
    }
    for (;;) {
        if (ps->p >= ps->end)
            return fail(ps, "missing ] in character class");
        char c = *ps->p;
        if (c == ']' && !first) {
            ps->p++;
            break;
        }
        first = 0;
        if (c == '[' && ps->p + 1 < ps->end && ps->p[1] == ':') {
            if (parse_posix(ps, &s) < 0)
                return -1;
            continue;
        }
        unsigned lo;
        if (c == '\\') {
            ps->p++;
            int as;
            int k = parse_escape(ps, 1, &lo, &s, &as);
            if (k < 0)
                return -1;
            if (k == 2)
                continue; /* \d etc.; a following '-' is then a literal */
        } else {
            lo = (unsigned char)c;
            ps->p++;
        }
        if (ps->end - ps->p >= 2 && ps->p[0] == '-' && ps->p[1] != ']') {
            ps->p++;
            unsigned hi;
            if (*ps->p == '\\') {
                ps->p++;
                bset junk;
                int as;
                memset(&junk, 0, sizeof junk);
                if (parse_escape(ps, 1, &hi, &junk, &as) != 1)
                    return ps->failed ? -1 : fail(ps, "bad character class range");
            } else {
                hi = (unsigned char)*ps->p++;
            }
            if (hi < lo)
                return fail(ps, "bad character class range %c-%c", (int)lo, (int)hi);
            bs_range(&s, lo, hi);
        } else {
            bs_add(&s, lo);
        }
    }
    if (ps->flags & F_I)
        bs_fold(&s);
    if (neg)
        bs_not(&s);
    return class_node(ps, &s);
}

/* "{n}", "{n,}", "{n,m}": 1 with the counts, 0 when the text is not a
 * repetition (then '{' is a literal, as in RE2), -1 on error. */
static int parse_braces(struct parser *ps, int *min, int *max)
{
    const char *q = ps->p + 1;
    long a = 0, b;
    int nd = 0;
    while (q < ps->end && *q >= '0' && *q <= '9') {
        if (a <= 100000)
            a = a * 10 + (*q - '0');
        q++;
        nd++;
    }
    if (!nd || q >= ps->end)
        return 0;
    if (*q == '}') {
        b = a;
    } else if (*q == ',') {
        q++;
        if (q < ps->end && *q == '}') {
            b = -1;
        } else {
            b = 0;
            nd = 0;
            while (q < ps->end && *q >= '0' && *q <= '9') {
                if (b <= 100000)
                    b = b * 10 + (*q - '0');
                q++;
                nd++;
            }
            if (!nd || q >= ps->end || *q != '}')
                return 0;
        }
    } else {
        return 0;
    }
    if (a > OBF_MAX_REPEAT || b > OBF_MAX_REPEAT)
        return fail(ps, "repetition count above %d", OBF_MAX_REPEAT);
    if (b >= 0 && b < a)
        return fail(ps, "bad repetition {%ld,%ld}", a, b);
    ps->p = q + 1;
    *min = (int)a;
    *max = (int)b;
    return 1;
}

static int parse_alt(struct parser *ps);

static int parse_group(struct parser *ps)
{
    ps->p++; /* '(' */
    int saved = ps->flags;
    if (ps->p < ps->end && *ps->p == '?') {
        ps->p++;
        char c = ps->p < ps->end ? *ps->p : 0;
        if (c == ':') {
            ps->p++;
        } else if (c == '=' || c == '!' ||
                   (c == '<' && ps->p + 1 < ps->end && (ps->p[1] == '=' || ps->p[1] == '!'))) {
            return fail(ps, "lookaround assertions are not supported");
        } else if (c == '>') {
            return fail(ps, "atomic groups are not supported");
        } else if (c == '#') {
            while (ps->p < ps->end && *ps->p != ')')
                ps->p++;
            if (ps->p >= ps->end)
                return fail(ps, "missing ) after comment");
            ps->p++;
            return new_node(ps, N_EMPTY);
        } else if (c == '<' || c == '\'' || (c == 'P' && ps->p + 1 < ps->end && ps->p[1] == '<')) {
            /* A named group: captures are not used, so it is just a group. */
            char close = c == '\'' ? '\'' : '>';
            ps->p += c == 'P' ? 2 : 1;
            const char *nm = ps->p;
            while (ps->p < ps->end && (is_alnum(*ps->p) || *ps->p == '_'))
                ps->p++;
            if (ps->p == nm || ps->p >= ps->end || *ps->p != close)
                return fail(ps, "bad group name");
            ps->p++;
        } else if (c == 'P') {
            return fail(ps, "backreferences and recursion are not supported");
        } else {
            int on = 1, f = ps->flags, any = 0;
            for (;;) {
                if (ps->p >= ps->end)
                    return fail(ps, "missing ) after group flags");
                c = *ps->p;
                int bit = c == 'i' ? F_I : c == 'm' ? F_M : c == 's' ? F_S : c == 'x' ? F_X
                        : c == 'U' ? F_U : 0;
                if (bit) {
                    f = on ? f | bit : f & ~bit;
                    any = 1;
                } else if (c == '-' && on) {
                    on = 0;
                } else {
                    break;
                }
                ps->p++;
            }
            if (!any || (c != ')' && c != ':'))
                return fail(ps, "unsupported group syntax (?%c", c);
            ps->p++;
            ps->flags = f;
            if (c == ')')
                return new_node(ps, N_EMPTY); /* lasts to the end of the enclosing group */
        }
    }
    if (ps->depth >= OBF_MAX_DEPTH)
        return fail(ps, "groups nested too deeply");
    ps->depth++;
    int n = parse_alt(ps);
    ps->depth--;
    if (n < 0)
        return -1;
    if (ps->p >= ps->end || *ps->p != ')')
        return fail(ps, "missing )");
    ps->p++;
    ps->flags = saved;
    return n;
}

static int parse_atom(struct parser *ps)
{
    char c = *ps->p;
    switch (c) {
    case '(':
        return parse_group(ps);
    case '[':
        return parse_class(ps);
    case '.': {
        ps->p++;
        bset s;
        memset(&s, 0xff, sizeof s);
        if (!(ps->flags & F_S))
            s.b['\n' >> 3] &= (uint8_t)~(1u << ('\n' & 7));
        return class_node(ps, &s);
    }
    case '^':
        ps->p++;
        return assert_node(ps, ps->flags & F_M ? AS_BOL : AS_BOT);
    case '$':
        ps->p++;
        return assert_node(ps, ps->flags & F_M ? AS_EOL : AS_EOT);
    case '\\': {
        ps->p++;
        unsigned lit = 0;
        int as = 0;
        bset s;
        memset(&s, 0, sizeof s);
        int k = parse_escape(ps, 0, &lit, &s, &as);
        if (k < 0)
            return -1;
        if (k == 1)
            return literal_node(ps, lit);
        if (k == 3)
            return assert_node(ps, as);
        return class_node(ps, &s); /* \w and friends: no case folding needed */
    }
    case '*': case '+': case '?':
        return fail(ps, "missing argument to repetition operator %c", c);
    case '{': {
        int a, b, k = parse_braces(ps, &a, &b);
        if (k < 0)
            return -1;
        if (k > 0)
            return fail(ps, "missing argument to repetition operator");
        ps->p++;
        return literal_node(ps, '{');
    }
    default:
        ps->p++;
        return literal_node(ps, (unsigned char)c);
    }
}

static int parse_repeat(struct parser *ps)
{
    int a = parse_atom(ps);
    if (a < 0)
        return -1;
    int repeated = 0;
    for (;;) {
        skip_x(ps);
        if (ps->p >= ps->end)
            break;
        char c = *ps->p;
        int min, max;
        if (c == '*' || c == '+' || c == '?') {
            min = c == '+';
            max = c == '?' ? 1 : -1;
            ps->p++;
        } else if (c == '{') {
            int k = parse_braces(ps, &min, &max);
            if (k < 0)
                return -1;
            if (k == 0)
                break;
        } else {
            break;
        }
        if (repeated)
            return fail(ps, "bad repetition operator (repeated quantifier)");
        repeated = 1;
        int greedy = 1;
        if (ps->p < ps->end && *ps->p == '?') {
            greedy = 0;
            ps->p++;
        } else if (ps->p < ps->end && *ps->p == '+') {
            return fail(ps, "possessive quantifiers are not supported");
        }
        if (ps->flags & F_U)
            greedy = !greedy;
        int r = new_node(ps, N_REP);
        if (r < 0)
            return -1;
        ps->nodes[r].child = a;
        ps->nodes[r].min = min;
        ps->nodes[r].max = max;
        ps->nodes[r].greedy = (uint8_t)greedy;
        a = r;
    }
    return a;
}

static int parse_cat(struct parser *ps)
{
    int first = -1, last = -1, count = 0;
    for (;;) {
        skip_x(ps);
        if (ps->p >= ps->end || *ps->p == '|' || *ps->p == ')')
            break;
        int a = parse_repeat(ps);
        if (a < 0)
            return -1;
        if (last >= 0)
            ps->nodes[last].next = a;
        else
            first = a;
        last = a;
        count++;
    }
    if (count == 0)
        return new_node(ps, N_EMPTY);
    if (count == 1)
        return first;
    int n = new_node(ps, N_CAT);
    if (n >= 0)
        ps->nodes[n].child = first;
    return n;
}

static int parse_alt(struct parser *ps)
{
    int first = parse_cat(ps);
    if (first < 0 || ps->p >= ps->end || *ps->p != '|')
        return first;
    int last = first;
    while (ps->p < ps->end && *ps->p == '|') {
        ps->p++;
        int c = parse_cat(ps);
        if (c < 0)
            return -1;
        ps->nodes[last].next = c;
        last = c;
    }
    int n = new_node(ps, N_ALT);
    if (n >= 0)
        ps->nodes[n].child = first;
    return n;
}

/* ---- code generation ------------------------------------------------------- */

/* Instruction count of a node, saturating just above the limit so that nested
 * repetitions cannot overflow. */
static long node_size(const struct node *nodes, int n)
{
    const struct node *nd = &nodes[n];
    long s = 0, k = 0;
    switch (nd->kind) {
    case N_EMPTY:
        return 0;
    case N_CLASS:
    case N_ASSERT:
        return 1;
    case N_CAT:
    case N_ALT:
        for (int c = nd->child; c >= 0; c = nodes[c].next, k++)
            s += node_size(nodes, c);
        if (nd->kind == N_ALT)
            s += 2 * (k - 1);
        break;
    case N_REP: {
        long x = node_size(nodes, nd->child);
        if (nd->max < 0)
            s = nd->min == 0 ? x + 2 : nd->min * x + 1;
        else
            s = nd->min * x + (long)(nd->max - nd->min) * (x + 1);
        break;
    }
    }
    return s > OBF_MAX_PROG ? OBF_MAX_PROG + 1 : s;
}

/* Whether a node can match the empty string. */
static int nullable(const struct node *nodes, int n)
{
    const struct node *nd = &nodes[n];
    switch (nd->kind) {
    case N_CLASS:
        return 0;
    case N_CAT:
        for (int c = nd->child; c >= 0; c = nodes[c].next)
            if (!nullable(nodes, c))
                return 0;
        return 1;
    case N_ALT:
        for (int c = nd->child; c >= 0; c = nodes[c].next)
            if (nullable(nodes, c))
                return 1;
        return 0;
    case N_REP:
        return nd->min == 0 || nullable(nodes, nd->child);
    default: /* N_EMPTY, N_ASSERT */
        return 1;
    }
}

struct gen {
    struct inst *prog;
    int n;
    const struct node *nodes;
};

static int emit(struct gen *g, int op, int x, int y)
{
    struct inst *ip = &g->prog[g->n];
    ip->op = (uint8_t)op;
    ip->arg = 0;
    ip->x = x;
    ip->y = y;
    return g->n++;
}

static void split_to(struct gen *g, int at, int greedy, int body, int out)
{
    g->prog[at].x = greedy ? body : out;
    g->prog[at].y = greedy ? out : body;
}

static void gen_node(struct gen *g, int n)
{
    const struct node *nd = &g->nodes[n];
    switch (nd->kind) {
    case N_EMPTY:
        break;
    case N_CLASS:
        emit(g, OP_BYTE, nd->cls, 0);
        break;
    case N_ASSERT:
        g->prog[emit(g, OP_ASSERT, 0, 0)].arg = nd->arg;
        break;
    case N_CAT:
        for (int c = nd->child; c >= 0; c = g->nodes[c].next)
            gen_node(g, c);
        break;
    case N_ALT: {
        /* Each branch but the last: SPLIT(branch, next), branch, JMP(end).
         * The JMPs are chained through x until the end is known. */
        int jmps = -1;
        for (int c = nd->child; c >= 0; c = g->nodes[c].next) {
            if (g->nodes[c].next < 0) {
                gen_node(g, c);
                break;
            }
            int sp = emit(g, OP_SPLIT, 0, 0);
            g->prog[sp].x = sp + 1;
            gen_node(g, c);
            jmps = emit(g, OP_JMP, jmps, 0);
            g->prog[sp].y = g->n;
        }
        while (jmps >= 0) {
            int prev = g->prog[jmps].x;
            g->prog[jmps].x = g->n;
            jmps = prev;
        }
        break;
    }
    case N_REP: {
        int greedy = nd->greedy, x = nd->child;
        if (nd->max < 0 && nd->min == 0 && nullable(g->nodes, x)) {
            /* x* as (x+)? when x can match "", as RE2 and Go do: with the
             * plain loop an empty pass through x would outrank leaving the
             * loop, unlike Perl (golang.org/issue/46123). */
            int sp = emit(g, OP_SPLIT, 0, 0);
            int top = g->n;
            gen_node(g, x);
            int sp2 = emit(g, OP_SPLIT, 0, 0);
            split_to(g, sp2, greedy, top, sp2 + 1);
            split_to(g, sp, greedy, top, g->n);
        } else if (nd->max < 0 && nd->min == 0) { /* x* */
            int sp = emit(g, OP_SPLIT, 0, 0);
            gen_node(g, x);
            emit(g, OP_JMP, sp, 0);
            split_to(g, sp, greedy, sp + 1, g->n);
        } else if (nd->max < 0) { /* x{n,} = x^(n-1) x+ */
            for (int i = 0; i < nd->min - 1; i++)
                gen_node(g, x);
            int top = g->n;
            gen_node(g, x);
            int sp = emit(g, OP_SPLIT, 0, 0);
            split_to(g, sp, greedy, top, sp + 1);
        } else { /* x{n,m} = x^n (x(x(...)?)?)? */
            for (int i = 0; i < nd->min; i++)
                gen_node(g, x);
            int splits = -1;
            for (int i = nd->min; i < nd->max; i++) {
                int sp = emit(g, OP_SPLIT, splits, 0);
                splits = sp;
                gen_node(g, x);
            }
            while (splits >= 0) {
                int prev = g->prog[splits].x;
                split_to(g, splits, greedy, splits + 1, g->n);
                splits = prev;
            }
        }
        break;
    }
    }
}

/* Leaves (OP_BYTE/OP_MATCH) reachable from pc without consuming a byte, in
 * priority order, with assertions taken as true. Returns the count written to
 * leaves; *assert_seen tells whether an assertion was on the way. */
static int closure_leaves(const struct obf_rule *r, int pc, int32_t *leaves, int *assert_seen)
{
    int n = 0, sp = 0;
    int32_t *stk = malloc((size_t)(2 * r->ninst + 2) * sizeof *stk);
    uint8_t *seen = calloc((size_t)r->ninst, 1);
    if (!stk || !seen) {
        free(stk);
        free(seen);
        return -1;
    }
    stk[sp++] = pc;
    while (sp) {
        int p = stk[--sp];
        if (seen[p])
            continue;
        seen[p] = 1;
        const struct inst *ip = &r->prog[p];
        switch (ip->op) {
        case OP_JMP:
            stk[sp++] = ip->x;
            break;
        case OP_SPLIT:
            stk[sp++] = ip->y;
            stk[sp++] = ip->x;
            break;
        case OP_ASSERT:
            *assert_seen = 1;
            stk[sp++] = p + 1;
            break;
        default:
            leaves[n++] = p;
        }
    }
    free(stk);
    free(seen);
    return n;
}

static int prepare_start(struct obf_rule *r)
{
    int32_t *leaves = malloc((size_t)r->ninst * sizeof *leaves);
    if (!leaves)
        return -1;
    int nl = closure_leaves(r, 0, leaves, &r->start_assert);
    if (nl < 0) {
        free(leaves);
        return -1;
    }
    size_t total = 0;
    for (unsigned c = 0; c < 256; c++)
        for (int i = 0; i < nl; i++)
            if (r->prog[leaves[i]].op == OP_BYTE && bs_has(&r->cls[r->prog[leaves[i]].x], c)) {
                r->first[c] = 1;
                total++;
            }
    r->start_pcs = malloc((total ? total : 1) * sizeof *r->start_pcs);
    if (!r->start_pcs) {
        free(leaves);
        return -1;
    }
    uint32_t k = 0;
    for (unsigned c = 0; c < 256; c++) {
        r->start_off[c] = k;
        for (int i = 0; i < nl; i++)
            if (r->prog[leaves[i]].op == OP_BYTE && bs_has(&r->cls[r->prog[leaves[i]].x], c))
                r->start_pcs[k++] = leaves[i];
    }
    r->start_off[256] = k;
    free(leaves);
    return 0;
}

obf_rule *obf_compile(const char *pattern, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    if (!pattern)
        pattern = OBF_DEFAULT_PATTERN;
    obf_rule *r = calloc(1, sizeof *r);
    if (!r) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!*pattern) {
        r->noop = 1;
        return r;
    }
    struct parser ps = {.pat = pattern, .p = pattern, .end = pattern + strlen(pattern),
                        .err = err, .errlen = errlen};
    int root = parse_alt(&ps);
    if (root >= 0 && ps.p < ps.end)
        root = fail(&ps, "unexpected )");
    long size = root >= 0 ? node_size(ps.nodes, root) + 1 : 0;
    if (root >= 0 && size > OBF_MAX_PROG) {
        if (err && errlen)
            snprintf(err, errlen, "pattern too large: more than %d instructions once repetitions "
                     "are expanded", OBF_MAX_PROG);
        root = -1;
    }
    if (root >= 0) {
        r->prog = calloc((size_t)size, sizeof *r->prog);
        if (r->prog) {
            struct gen g = {r->prog, 0, ps.nodes};
            gen_node(&g, root);
            emit(&g, OP_MATCH, 0, 0);
            r->ninst = g.n;
            r->cls = ps.cls;
            r->ncls = ps.nc;
            ps.cls = NULL;
        }
        if (!r->prog || prepare_start(r) < 0) {
            if (err && errlen)
                snprintf(err, errlen, "out of memory");
            root = -1;
        }
    }
    free(ps.nodes);
    free(ps.cls);
    if (root < 0) {
        obf_free(r);
        return NULL;
    }
    return r;
}

void obf_free(obf_rule *r)
{
    if (!r)
        return;
    free(r->prog);
    free(r->cls);
    free(r->start_pcs);
    free(r);
}

int obf_prog_size(const obf_rule *r) { return r ? r->ninst : 0; }

/* ---- matching --------------------------------------------------------------- */

struct thr {
    uint32_t pc, sid, sgen;
    size_t start;
};

/* One search of the chain: its best match so far (cs, ce) and the next search,
 * which started at ce. */
struct srch {
    size_t cs, ce;
    uint32_t gen;
    int32_t next;
    int has;
};

struct vm {
    const struct obf_rule *r;
    const uint8_t *in;
    size_t len;
    struct thr *cl, *nl;
    uint32_t ncl, nnl;
    uint32_t *mc, *mn; /* per instruction: the generation of the list holding it */
    uint32_t gc, gn, gcount;
    int32_t *stk;
    struct srch *s;
    uint32_t ns, caps;
    int32_t freel, head, tail;
    char *out;
    size_t cap, olen, copied;
    int full, oom;
};

static void put(struct vm *v, const void *src, size_t n)
{
    if (v->full)
        return;
    size_t room = v->cap - 1 - v->olen;
    if (n > room) {
        n = room;
        v->full = 1;
    }
    memcpy(v->out + v->olen, src, n);
    v->olen += n;
}

/* A marker is written whole or not at all, and nothing follows a cut. */
static void put_redacted(struct vm *v)
{
    if (v->full)
        return;
    if (v->cap - 1 - v->olen < REDACTED_LEN) {
        v->full = 1;
        return;
    }
    put(v, REDACTED, REDACTED_LEN);
}

static void deliver(struct vm *v, size_t cs, size_t ce)
{
    put(v, v->in + v->copied, cs - v->copied);
    put_redacted(v);
    v->copied = ce;
}

static int32_t srch_new(struct vm *v)
{
    int32_t i;
    if (v->freel >= 0) {
        i = v->freel;
        v->freel = v->s[i].next;
    } else {
        if (v->ns == v->caps) {
            uint32_t cap = v->caps * 2;
            struct srch *s = cap <= OBF_MAX_SEARCHES ? realloc(v->s, cap * sizeof *s) : NULL;
            if (!s) {
                v->oom = 1;
                return -1;
            }
            v->s = s;
            v->caps = cap;
        }
        i = (int32_t)v->ns++;
        v->s[i].gen = 1;
    }
    v->s[i].has = 0;
    v->s[i].next = -1;
    return i;
}

static void srch_free(struct vm *v, int32_t i)
{
    v->s[i].gen++;
    v->s[i].next = v->freel;
    v->freel = i;
}

static int is_word(int c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c == '_';
}

static int assert_ok(const struct vm *v, int kind, size_t pos)
{
    int prev = pos > 0 ? v->in[pos - 1] : -1, cur = pos < v->len ? v->in[pos] : -1;
    switch (kind) {
    case AS_BOT:
        return pos == 0;
    case AS_EOT:
        return pos == v->len;
    case AS_BOL:
        return pos == 0 || prev == '\n';
    case AS_EOL:
        return pos == v->len || cur == '\n';
    default: {
        int a = prev >= 0 && is_word(prev), b = cur >= 0 && is_word(cur);
        return kind == AS_WORD ? a != b : a == b;
    }
    }
}

/* Adds the leaves reachable from pc to a list at input position pos. A byte
 * instruction is only added when the byte at pos fits (so list members never
 * need testing again), and is marked either way: a later path would reach the
 * same verdict. */
static void addthread(struct vm *v, struct thr *list, uint32_t *n, uint32_t *mark, uint32_t gen,
                      uint32_t pc, size_t start, uint32_t sid, size_t pos)
{
    const struct obf_rule *r = v->r;
    int sp = 0;
    v->stk[sp++] = (int32_t)pc;
    while (sp) {
        uint32_t p = (uint32_t)v->stk[--sp];
        if (mark[p] == gen)
            continue;
        mark[p] = gen;
        const struct inst *ip = &r->prog[p];
        switch (ip->op) {
        case OP_JMP:
            v->stk[sp++] = ip->x;
            break;
        case OP_SPLIT:
            v->stk[sp++] = ip->y;
            v->stk[sp++] = ip->x;
            break;
        case OP_ASSERT:
            if (assert_ok(v, ip->arg, pos))
                v->stk[sp++] = (int32_t)p + 1;
            break;
        case OP_BYTE:
            if (pos >= v->len || !bs_has(&r->cls[ip->x], v->in[pos]))
                break;
            /* fall through */
        default:
            list[(*n)++] = (struct thr){p, sid, v->s[sid].gen, start};
        }
    }
}

/* The threads of a search starting at pos, appended to the current list. Only
 * leaves are marked when the cached start is used; that gives the same list,
 * since everything below an instruction some earlier path marked was itself
 * marked (added or rejected by the same byte). */
static void add_start(struct vm *v, size_t pos, uint32_t sid)
{
    const struct obf_rule *r = v->r;
    if (pos >= v->len || !r->first[v->in[pos]])
        return;
    if (r->start_assert) {
        addthread(v, v->cl, &v->ncl, v->mc, v->gc, 0, pos, sid, pos);
        return;
    }
    unsigned c = v->in[pos];
    for (uint32_t k = r->start_off[c]; k < r->start_off[c + 1]; k++) {
        uint32_t p = (uint32_t)r->start_pcs[k];
        if (v->mc[p] != v->gc) {
            v->mc[p] = v->gc;
            v->cl[v->ncl++] = (struct thr){p, sid, v->s[sid].gen, pos};
        }
    }
}

/* Thread k of the current list, of search sid, matched [start, pos). Every
 * thread after it is either of lower priority in the same search or of a later
 * search, which this match discards; the search that follows restarts at pos. */
static void on_match(struct vm *v, uint32_t k, size_t start, size_t pos)
{
    uint32_t sid = v->cl[k].sid;
    v->s[sid].has = 1;
    v->s[sid].cs = start;
    v->s[sid].ce = pos;
    for (int32_t j = v->s[sid].next; j >= 0;) {
        int32_t nx = v->s[j].next;
        srch_free(v, j);
        j = nx;
    }
    v->s[sid].next = -1;
    /* Drop the rest of the list and re-mark what stays under a fresh
     * generation, so instructions only the dropped threads held (leaves and
     * the paths to them) are free again. */
    v->ncl = k + 1;
    v->gc = ++v->gcount;
    for (uint32_t q = 0; q <= k; q++)
        v->mc[v->cl[q].pc] = v->gc;
    int32_t nx = srch_new(v);
    if (nx < 0)
        return;
    v->s[sid].next = nx;
    v->tail = nx;
    add_start(v, pos, (uint32_t)nx);
}

/* Delivers the searches at the head of the chain whose match can no longer
 * change: they have one and no live thread (a search's threads come first in
 * the list). */
static void commit(struct vm *v)
{
    for (;;) {
        int32_t h = v->head;
        if (h < 0 || !v->s[h].has)
            return;
        if (v->ncl && v->cl[0].sid == (uint32_t)h)
            return;
        deliver(v, v->s[h].cs, v->s[h].ce);
        v->head = v->s[h].next;
        srch_free(v, h);
    }
}

static void run(struct vm *v)
{
    const struct obf_rule *r = v->r;
    size_t len = v->len, i = 0;
    v->head = v->tail = srch_new(v);
    v->gc = ++v->gcount;
    for (;;) {
        if (v->ncl == 0) {
            /* Nothing alive: the chain is one search with no match yet, so
             * skip to the next byte that can begin one. */
            while (i < len && !r->first[v->in[i]])
                i++;
            if (i >= len)
                break;
            /* The empty list's marks (rejected leaves) were for another byte. */
            v->gc = ++v->gcount;
        }
        if (!v->s[v->tail].has)
            add_start(v, i, (uint32_t)v->tail);
        v->gn = ++v->gcount;
        v->nnl = 0;
        for (uint32_t k = 0; k < v->ncl; k++) {
            struct thr t = v->cl[k];
            if (r->prog[t.pc].op == OP_BYTE)
                addthread(v, v->nl, &v->nnl, v->mn, v->gn, t.pc + 1, t.start, t.sid, i + 1);
            else if (t.start != i) /* OP_MATCH; empty matches are ignored */
                on_match(v, k, t.start, i);
            if (v->oom)
                return;
        }
        if (i >= len) {
            v->ncl = 0;
            break;
        }
        struct thr *tl = v->cl;
        v->cl = v->nl;
        v->nl = tl;
        uint32_t *tm = v->mc;
        v->mc = v->mn;
        v->mn = tm;
        v->ncl = v->nnl;
        v->gc = v->gn;
        i++;
        commit(v);
        if (v->full)
            return;
    }
    for (int32_t h = v->head; h >= 0 && v->s[h].has; h = v->s[h].next)
        deliver(v, v->s[h].cs, v->s[h].ce);
    put(v, v->in + v->copied, len - v->copied);
}

size_t obf_apply(const obf_rule *r, const char *in, size_t len, char *out, size_t cap)
{
    if (!out || cap == 0)
        return 0;
    out[0] = 0;
    struct vm v = {.r = r, .in = (const uint8_t *)in, .len = len, .out = out, .cap = cap,
                   .freel = -1};
    if (r && r->noop) {
        put(&v, in, len);
        out[v.olen] = 0;
        return v.olen;
    }
    if (len == 0)
        return 0;
    /* No rule (it did not compile) or no memory: fail closed. */
    int ok = r && len <= OBF_MAX_INPUT;
    if (ok) {
        size_t ni = (size_t)r->ninst;
        v.cl = malloc(ni * sizeof *v.cl);
        v.nl = malloc(ni * sizeof *v.nl);
        v.mc = calloc(ni, sizeof *v.mc);
        v.mn = calloc(ni, sizeof *v.mn);
        v.stk = malloc((2 * ni + 2) * sizeof *v.stk);
        v.caps = 16;
        v.s = malloc(v.caps * sizeof *v.s);
        ok = v.cl && v.nl && v.mc && v.mn && v.stk && v.s;
        if (ok) {
            run(&v);
            if (v.oom) {
                /* Whatever was not delivered yet is withheld. */
                put_redacted(&v);
            }
        }
        free(v.cl);
        free(v.nl);
        free(v.mc);
        free(v.mn);
        free(v.stk);
        free(v.s);
    }
    if (!ok) {
        v.olen = 0;
        v.full = 0;
        put_redacted(&v);
    }
    out[v.olen] = 0;
    return v.olen;
}
