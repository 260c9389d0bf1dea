/* http/span_rules.h — the pure functions that turn a captured request into
 * span fields the way Datadog's tracers do: query-string obfuscation, the
 * http.endpoint of a path, and trace-context extraction from Datadog and W3C
 * headers. Run in the uploader thread (never on host threads, never in signal
 * context). No global state except what obf_compile returns. Every function
 * is linear in its input: untrusted bytes can never make them slow. */
#ifndef DDSHIM_SPAN_RULES_H
#define DDSHIM_SPAN_RULES_H

#include <stddef.h>
#include <stdint.h>

/* ---- query-string obfuscation ---------------------------------------------
 * Datadog's default DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP (dd-trace-*):
 * redacts values of password/pwd/pass/passphrase, secret, api_key/private_key/
 * access_key(_id), token, consumer_id/key/secret, sign/signed/signature,
 * auth/authentication/authorization keys, "bearer <token>", GitHub tokens
 * gh[opsu]_..., JWTs eyJ..., PEM private keys and long ssh-rsa keys; each
 * match becomes "<redacted>". A user pattern (the variable set) is compiled by
 * a linear-time engine (no backtracking). */
typedef struct obf_rule obf_rule;

/* pattern NULL: Datadog's default. pattern "": no redaction. Returns NULL and
 * writes a message into err (errlen bytes) when the pattern is not supported
 * or invalid. */
obf_rule *obf_compile(const char *pattern, char *err, size_t errlen);
/* Redact in[0..len) into out (cap bytes, NUL-terminated, truncated safely).
 * Returns the length written. */
size_t obf_apply(const obf_rule *r, const char *in, size_t len, char *out, size_t cap);
void obf_free(obf_rule *r);
/* Additions (http/obfuscate.c):
 * - OBF_DEFAULT_PATTERN is what obf_compile(NULL) uses: the default of current
 *   dd-trace-java/-py/-dotnet and Datadog's docs. OBF_PATTERN_V1 is the earlier
 *   default (still dd-trace-js's).
 * - Supported syntax: literals, escapes (\d \w \s and negations, \b \B \A \z,
 *   \n \t \xHH, escaped punctuation), classes with ranges, negation and
 *   [:posix:], groups (capturing ones act as (?:)), named groups, (?#...), |,
 *   * + ? {n} {n,} {n,m} (also lazy), ^ $, flags i m s x U as (?flags) or
 *   (?flags:...). Backreferences, lookaround, atomic groups, possessive
 *   quantifiers and \p classes are refused; programs are capped at 20000
 *   instructions and counts at 1000.
 * - obf_apply with r == NULL (a pattern that did not compile) fails closed: the
 *   whole input becomes "<redacted>". An internal allocation failure withholds
 *   what was not yet written the same way. Empty matches are ignored.
 * - Linear: O(len x program size) time, no backtracking, even over all matches. */
extern const char OBF_DEFAULT_PATTERN[];
extern const char OBF_PATTERN_V1[];
/* Instructions in the compiled program (0 for NULL or the "" pattern). */
int obf_prog_size(const obf_rule *r);

/* ---- http.endpoint ----------------------------------------------------------
 * The path (no query) with id-like segments replaced as Datadog's endpoint
 * inference does: {param:int}, {param:int_id}, {param:hex}, {param:hex_id},
 * {param:str}; at most 8 segments kept; "" path -> "/". Returns length. */
size_t endpoint_of(const char *path, size_t len, char *out, size_t cap);
/* Addition: stops at '?' or '#'; whole segments only when out is too small;
 * segment length for {param:str} counts UTF-8 characters (as Python/Java). */

/* ---- trace context ---------------------------------------------------------- */
enum { CTX_STYLE_DATADOG = 1, CTX_STYLE_TRACECONTEXT = 2 };

struct trace_ctx {
    int found;                  /* 0: nothing usable; start a new trace */
    uint64_t trace_id_lo;       /* never 0 when found */
    uint64_t trace_id_hi;       /* upper 64 bits (_dd.p.tid / W3C), 0 if unknown */
    uint64_t parent_id;         /* upstream span id (never 0 when found) */
    int has_priority;
    int sampling_priority;      /* -1, 0, 1, 2 */
    char origin[64];
    char propagated_tags[512];  /* "_dd.p.k=v,_dd.p.k2=v2" (only _dd.p.*, validated) */
};

/* The raw header values (NULL when absent). */
struct ctx_headers {
    const char *dd_trace_id, *dd_parent_id, *dd_sampling_priority, *dd_origin, *dd_tags;
    const char *traceparent, *tracestate;
};

/* Parse DD_TRACE_PROPAGATION_STYLE(_EXTRACT) ("datadog,tracecontext",
 * case-insensitive, comma/space separated; "none" -> 0). Returns a list of
 * styles in order in styles[0..n) and n, or -1 on an unknown name. */
int ctx_parse_styles(const char *s, int styles[4]);

/* Extract: the first style (in order) that yields a valid context wins, as in
 * dd-trace (when both Datadog and W3C give the same trace id, the W3C parent
 * id is kept as _dd.parent_id is not needed here). */
void ctx_extract(const int *styles, int nstyles, const struct ctx_headers *h, struct trace_ctx *out);
/* Additions (http/context.c): ctx_parse_styles also accepts, and skips, the
 * Datadog names it does not implement (b3, b3multi, "b3 single header",
 * baggage). _dd.p.tid is returned in trace_id_hi, not in propagated_tags. A
 * W3C id whose low 64 bits are zero is refused (trace_id_lo must be nonzero). */

#endif
