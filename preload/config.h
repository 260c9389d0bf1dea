/* preload/config.h — the shim's configuration, read once from the environment
 * by the constructor (and again in nothing else: a forked child keeps it). */
#ifndef DDSHIM_CONFIG_H
#define DDSHIM_CONFIG_H

#include <stdint.h>

struct shim_config {
    int enabled;            /* DD_SHIM_ENABLED: the kill switch */
    int profiling_enabled;  /* DD_PROFILING_ENABLED, and off when a profiling setting is bad */
    int trace_enabled;      /* DD_TRACE_ENABLED */
    int agent_enabled;      /* off when DD_TRACE_AGENT_URL is unparsable */
    char service[256];      /* DD_SERVICE / OTEL_SERVICE_NAME / program name */
    char env[128];          /* DD_ENV, "" when unset */
    char version[128];      /* DD_VERSION, "" when unset */
    char tags[2048];        /* DD_TAGS (+ OTEL_RESOURCE_ATTRIBUTES leftovers), raw */
    char agent_url[512];    /* effective URL */
    int sample_hz;          /* DD_SHIM_SAMPLE_HZ, 1..10000 */
    int upload_period_s;    /* DD_PROFILING_UPLOAD_PERIOD, 1..3600 */
    char output_dir[1024];  /* DD_SHIM_OUTPUT_DIR or the default "ddshim-out" (absolute) */
    int output_dir_set;     /* DD_SHIM_OUTPUT_DIR given: always write files */
    int log_level;
    double sample_rate;     /* DD_TRACE_SAMPLE_RATE, -1 when unset */
    char header_tags[1024]; /* DD_TRACE_HEADER_TAGS, raw */
    int announce;           /* say where data goes on stderr: a terminal, or the process ddrun started */
    char spool_dir[1024];   /* DD_SHIM_SPOOL_DIR or /var/tmp/ddshim-<euid> (absolute) */
    uint64_t spool_max_bytes; /* DD_SHIM_SPOOL_MAX_BYTES, 0 = no spooling */
    uint64_t dwarf_max_bytes; /* DD_SHIM_DWARF_MAX_BYTES: an object's DWARF is read only up to this
                                 size (uncompressed); 0 = never, names from symbol tables */
};

/* Read the configuration. getenv_fn is getenv in the shim, a fake in tests.
 * Bad values print one "ddshim:" line naming the variable and what it accepts,
 * and turn that part off. Returns the number of bad values. */
int config_load(struct shim_config *c, const char *(*getenv_fn)(const char *name),
                const char *program_name);

/* Parse a boolean as Datadog's clients do: true/false/1/0/yes/no/on/off
 * (case-insensitive). Returns 1, 0, or -1 when it is none of them. */
int config_parse_bool(const char *s);

/* The header names of DD_TRACE_HEADER_TAGS ("header[:tag],..."), lowercase,
 * in order, credentials (authorization, cookie, set-cookie,
 * proxy-authorization) left out: at most max names of up to 63 chars.
 * agent_io/spans.c reads the tags in the same order. Returns the count. */
int config_header_names(const char *spec, char names[][64], int max);

#endif
