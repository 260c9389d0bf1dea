/* agent_io/agent.c — libddshim-agent.so's entry point: turns an aggregated
 * stack table into a pprof (symbolize/ + pprof/) and delivers it to the Agent
 * or the output directory (agent_io/transport.c). Runs only in the shim's
 * uploader thread; never on host threads, never in signal context. The one
 * exported symbol is ddshim_agent_ops_v1 (agent_io/agent.map). */
#include "agent_io/agent_api.h"
#include "agent_io/spans.h"
#include "agent_io/spool.h"
#include "agent_io/traces.h"
#include "agent_io/transport.h"
#include "common/log.h"
#include "pprof/pprof.h"
#include "symbolize/sym.h"

#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_INLINE 16

struct agent_ctx {
    const struct shim_config *cfg;
    char runtime_id[40];
    char hostname[256];
    char container_id[80];
    int64_t pid;
    aio_target target;
    int target_ok;
    int agent_state;       /* 0 unknown, 1 up, -1 down */
    int agent_seen;        /* the Agent answered once: an outage, not "no Agent" */
    int64_t next_probe_ns; /* when down: when to ask /info again */
    struct spool *spool;   /* payloads the Agent did not take (NULL: spooling off) */
    uint64_t drops_said;   /* spool drops already logged */
    int said_where, said_traces;
    sym_ctx *sym;
    struct spans_state *spans;
    uint32_t dwarf_said[64]; /* objects whose skipped DWARF the log already named */
    int ndwarf_said;
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *agent_create(const struct agent_settings *s)
{
    struct agent_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cfg = s->cfg;
    log_threshold = s->cfg->log_level;
    snprintf(c->runtime_id, sizeof c->runtime_id, "%s", s->runtime_id);
    snprintf(c->hostname, sizeof c->hostname, "%s", s->hostname);
    c->pid = s->pid;
    aio_announce = s->cfg->announce;
    aio_container_id(c->container_id, sizeof c->container_id);
    if (c->cfg->agent_enabled && aio_url_parse(c->cfg->agent_url, &c->target) == 0) {
        c->target_ok = 1;
        c->spool = spool_new(c->cfg->spool_dir, c->cfg->spool_max_bytes, c->cfg->agent_url, c->pid,
                             c->cfg->announce);
    }
    return c;
}

static void agent_destroy(void *p)
{
    struct agent_ctx *c = p;
    if (!c)
        return;
    if (c->sym)
        sym_free(c->sym);
    spans_free(c->spans);
    spool_free(c->spool);
    free(c);
}

/* pc -> pprof location id, for one profile. */
struct loc_map {
    uint64_t *keys, *vals;
    size_t cap, len;
};

static uint64_t *loc_slot(struct loc_map *m, uint64_t key)
{
    if (m->len * 2 >= m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 1024;
        uint64_t *nk = calloc(ncap, sizeof *nk), *nv = calloc(ncap, sizeof *nv);
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return NULL;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i])
                continue;
            size_t j = (m->keys[i] * 0x9e3779b97f4a7c15ull) >> 20 & (ncap - 1);
            while (nk[j])
                j = (j + 1) & (ncap - 1);
            nk[j] = m->keys[i];
            nv[j] = m->vals[i];
        }
        free(m->keys);
        free(m->vals);
        m->keys = nk;
        m->vals = nv;
        m->cap = ncap;
    }
    size_t j = (key * 0x9e3779b97f4a7c15ull) >> 20 & (m->cap - 1);
    while (m->keys[j] && m->keys[j] != key)
        j = (j + 1) & (m->cap - 1);
    if (!m->keys[j]) {
        m->keys[j] = key;
        m->vals[j] = 0;
        m->len++;
    }
    return &m->vals[j];
}

struct build {
    struct agent_ctx *c;
    pprof_builder *b;
    struct loc_map locs;
    uint64_t *map_ids; /* sym_mapping index -> pprof mapping id */
    size_t nmap_ids;
};

static uint64_t mapping_id(struct build *bd, const sym_mapping *m)
{
    if (!m)
        return 0;
    if ((size_t)m->index >= bd->nmap_ids) {
        size_t n = (size_t)m->index + 64;
        uint64_t *nm = realloc(bd->map_ids, n * sizeof *nm);
        if (!nm)
            return 0;
        memset(nm + bd->nmap_ids, 0, (n - bd->nmap_ids) * sizeof *nm);
        bd->map_ids = nm;
        bd->nmap_ids = n;
    }
    if (!bd->map_ids[m->index])
        bd->map_ids[m->index] = pprof_add_mapping(bd->b, m->start, m->limit, m->offset, m->path,
                                                  m->build_id, 1, 1, 1, 1);
    return bd->map_ids[m->index];
}

/* Location for a pc; key distinguishes leaf (exact pc) from return address. */
static uint64_t location_for(struct build *bd, uint64_t pc, int is_return)
{
    uint64_t key = (pc << 1 | (uint64_t)is_return) | 1ull << 63;
    uint64_t *slot = loc_slot(&bd->locs, key);
    if (slot && *slot)
        return *slot;
    sym_frame fr[MAX_INLINE];
    const sym_mapping *m = NULL;
    int n = sym_resolve(bd->c->sym, pc, is_return, fr, MAX_INLINE, &m);
    pprof_line lines[MAX_INLINE];
    char unknown[32];
    if (n <= 0) {
        snprintf(unknown, sizeof unknown, "0x%llx", (unsigned long long)pc);
        lines[0] = (pprof_line){unknown, unknown, "", 0};
        n = 1;
    } else {
        for (int i = 0; i < n; i++) {
            const char *name = fr[i].name && fr[i].name[0] ? fr[i].name : NULL;
            if (!name) {
                snprintf(unknown, sizeof unknown, "0x%llx", (unsigned long long)pc);
                name = unknown;
            }
            lines[i] = (pprof_line){name, fr[i].system_name && fr[i].system_name[0] ? fr[i].system_name : name,
                                    fr[i].file ? fr[i].file : "", fr[i].line};
        }
    }
    /* Return addresses point after the call: pprof convention is to keep
     * the address as walked; symbolization above already used pc - 1. */
    uint64_t id = pprof_add_location(bd->b, mapping_id(bd, m), pc, lines, (size_t)n);
    if (slot)
        *slot = id;
    return id;
}

static uint64_t pseudo_location(struct build *bd, const char *name, uint64_t fake_pc)
{
    uint64_t *slot = loc_slot(&bd->locs, fake_pc);
    if (slot && *slot)
        return *slot;
    pprof_line l = {name, name, "", 0};
    uint64_t id = pprof_add_location(bd->b, 0, 0, &l, 1);
    if (slot)
        *slot = id;
    return id;
}

static void add_main_mapping_first(struct build *bd)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    int count = sym_mapping_count(bd->c->sym);
    for (int i = 0; i < count; i++) {
        const sym_mapping *m = sym_mapping_get(bd->c->sym, i);
        if (m && m->path && strcmp(m->path, exe) == 0) {
            mapping_id(bd, m);
            return;
        }
    }
}

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

/* The objects this profile named from their symbol tables only because their
 * DWARF is over DD_SHIM_DWARF_MAX_BYTES: one comment each in the profile, and
 * one info line per object for the process's life (the log is for people;
 * the comments travel with every profile). */
static void say_dwarf_skipped(struct agent_ctx *c, pprof_builder *b)
{
    if (!c->sym)
        return;
    uint64_t max = c->cfg->dwarf_max_bytes;
    char limit[64];
    if (max == 0)
        snprintf(limit, sizeof limit, "DD_SHIM_DWARF_MAX_BYTES=0");
    else
        snprintf(limit, sizeof limit, "over DD_SHIM_DWARF_MAX_BYTES (%.1f MB)", (double)max / (1 << 20));
    sym_dwarf_skip k;
    for (int i = 0; sym_dwarf_skipped(c->sym, i, &k) == 0; i++) {
        char text[1024], size[32];
        if (k.bytes < (1 << 20))
            snprintf(size, sizeof size, "%.1f KB", (double)k.bytes / 1024);
        else
            snprintf(size, sizeof size, "%.1f MB", (double)k.bytes / (1 << 20));
        snprintf(text, sizeof text,
                 "ddshim: %s named from its symbol table only, no file:line or inlined frames: "
                 "its DWARF (%s in %s) is %s",
                 k.path, size, k.dwarf, limit);
        if (i < 32)
            pprof_add_comment(b, text);
        uint32_t h = hash_str(k.path);
        int said = 0;
        for (int j = 0; j < c->ndwarf_said && !said; j++)
            said = c->dwarf_said[j] == h;
        if (said || c->ndwarf_said == (int)(sizeof c->dwarf_said / sizeof c->dwarf_said[0]))
            continue;
        c->dwarf_said[c->ndwarf_said++] = h;
        log_info("symbolize: %s", text + strlen("ddshim: "));
    }
}

static pprof_builder *build_profile(struct agent_ctx *c, const struct agent_profile *p)
{
    const pprof_value_type types[2] = {{"cpu-time", "nanoseconds"}, {"cpu-samples", "count"}};
    struct build bd = {.c = c};
    bd.b = pprof_new(types, 2, types[0], p->period_ns);
    if (!bd.b)
        return NULL;
    pprof_set_time(bd.b, p->start_ns, p->end_ns - p->start_ns);
    if (!c->sym && (c->sym = sym_new()) != NULL)
        sym_set_dwarf_limit(c->sym, c->cfg->dwarf_max_bytes);
    if (c->sym)
        add_main_mapping_first(&bd);

    const struct stack_table *t = p->stacks;
    uint64_t locs[REC_MAX_FRAMES + 1];
    for (size_t i = 0; i < t->cap; i++) {
        const struct stack_entry *e = &t->slots[i];
        if (!e->hash)
            continue;
        size_t nl = 0;
        for (unsigned f = 0; f < e->nframes; f++) {
            uint64_t id = c->sym ? location_for(&bd, e->pcs[f], f > 0) : 0;
            if (id)
                locs[nl++] = id;
        }
        if (e->flags & REC_F_TRUNCATED)
            locs[nl++] = pseudo_location(&bd, "[ddshim] truncated stack", 2);
        int64_t values[2] = {(int64_t)e->periods * p->period_ns, (int64_t)e->samples};
        pprof_label labels[6];
        size_t nlab = 0;
        labels[nlab++] = (pprof_label){"thread id", NULL, e->tid, NULL};
        const char *tn = stacks_thread_name(t, e->tid);
        if (tn && *tn)
            labels[nlab++] = (pprof_label){"thread name", tn, 0, NULL};
        labels[nlab++] = (pprof_label){"process_id", NULL, c->pid, NULL};
        if (e->span_id)
            labels[nlab++] = (pprof_label){"span id", NULL, (int64_t)e->span_id, NULL};
        if (e->root_span_id)
            labels[nlab++] = (pprof_label){"local root span id", NULL, (int64_t)e->root_span_id, NULL};
        pprof_add_sample(bd.b, locs, nl, values, labels, nlab);
    }
    say_dwarf_skipped(c, bd.b);
    if (p->samples_taken) {
        char text[128];
        snprintf(text, sizeof text, "ddshim: %llu samples, signal handler %llu ns per sample (mean)",
                 (unsigned long long)p->samples_taken,
                 (unsigned long long)(p->handler_ns / p->samples_taken));
        pprof_add_comment(bd.b, text);
    }
    uint64_t lost = p->lost_periods + t->dropped_periods;
    if (lost) {
        uint64_t l = pseudo_location(&bd, "[ddshim] lost samples", 4);
        int64_t values[2] = {(int64_t)lost * p->period_ns, (int64_t)lost};
        pprof_label lab = {"process_id", NULL, c->pid, NULL};
        pprof_add_sample(bd.b, &l, 1, values, &lab, 1);
        char text[160];
        snprintf(text, sizeof text,
                 "ddshim: %llu sampling periods lost (handler skipped or channel full), "
                 "%llu samples did not fit the stack table",
                 (unsigned long long)p->lost_periods, (unsigned long long)t->dropped_samples);
        pprof_add_comment(bd.b, text);
    }
    if (c->spool) {
        const struct spool_stats *st = spool_stats(c->spool);
        if (st->evicted || st->rejected || st->failed) {
            char text[256];
            snprintf(text, sizeof text,
                     "ddshim: spool (since start): %llu payloads kept for the Agent, %llu delivered later, "
                     "%llu dropped over the byte bound (%llu bytes), %llu refused by the Agent, %llu not written",
                     (unsigned long long)st->put, (unsigned long long)st->sent,
                     (unsigned long long)st->evicted, (unsigned long long)st->evicted_bytes,
                     (unsigned long long)st->rejected, (unsigned long long)st->failed);
            pprof_add_comment(bd.b, text);
        }
    }
    free(bd.locs.keys);
    free(bd.locs.vals);
    free(bd.map_ids);
    return bd.b;
}

/* Not answering: ask /info again in a second, not sooner (a flush at exit
 * sends traces then the profile; one wait for a hanging Agent is enough). */
static void agent_down(struct agent_ctx *c)
{
    c->agent_state = -1;
    c->next_probe_ns = mono_ns() + 1000000000LL;
}

static int agent_up(struct agent_ctx *c, long timeout_ms)
{
    if (!c->target_ok)
        return 0;
    int64_t now = mono_ns();
    if (c->agent_state == 0 || (c->agent_state < 0 && now >= c->next_probe_ns)) {
        long t = timeout_ms < 500 ? timeout_ms : 500;
        /* Nothing listening: no /info request (libcurl stays unloaded). */
        c->agent_state = aio_agent_reachable(&c->target, t) != 0 && aio_agent_probe(&c->target, t) == 0 ? 1 : -1;
        if (c->agent_state < 0)
            agent_down(c);
        else
            c->agent_seen = 1;
    }
    return c->agent_state > 0;
}

static const char *agent_where(const struct agent_ctx *c)
{
    return c->target.kind == AIO_URL_UNIX ? c->target.socket_path : c->target.base;
}

/* Send one spooled payload again (spool_drain's callback). */
static int resend(void *p, const struct spool_entry *e, long timeout_ms)
{
    struct agent_ctx *c = p;
    long status = 0;
    int rc;
    if (e->kind == SPOOL_PROFILE) {
        char *event = strndup((const char *)e->event, e->event_len);
        if (!event)
            return 1;
        rc = aio_upload_profile_event(&c->target, event, e->container_id, DDSHIM_VERSION, e->body,
                                      e->body_len, timeout_ms, &status);
        free(event);
    } else {
        struct traces_meta m = {.lang_version = "", .tracer_version = DDSHIM_VERSION,
                                .container_id = e->container_id[0] ? e->container_id : NULL};
        rc = traces_upload(&c->target, &m, e->body, e->body_len, (size_t)e->count, timeout_ms, &status, NULL);
    }
    if (rc == 0)
        return 0;
    if (spool_retryable(status)) {
        agent_down(c);
        return 1;
    }
    log_info("the Agent refused a spooled payload (HTTP status %ld); dropped", status);
    return -1;
}

/* The Agent took a payload: deliver what waits in the spool, within the
 * time this delivery has left. */
static void drain_spool(struct agent_ctx *c, int64_t deadline_ns)
{
    if (!c->spool || c->agent_state <= 0)
        return;
    int n = spool_drain(c->spool, deadline_ns, resend, c);
    if (n)
        log_info("delivered %d spooled payloads to the Agent", n);
}

/* Say once (warn when someone looks) that the spool's bound dropped data;
 * every drop is also in the next profile's comments. */
static void say_spool_drops(struct agent_ctx *c)
{
    if (!c->spool)
        return;
    const struct spool_stats *st = spool_stats(c->spool);
    uint64_t d = st->evicted + st->rejected + st->failed;
    if (d == c->drops_said)
        return;
    log_msg(c->drops_said == 0 && c->cfg->announce ? LOG_WARN : LOG_INFO,
            "spool %s: %llu payloads dropped so far (%llu over DD_SHIM_SPOOL_MAX_BYTES=%llu, %llu refused, "
            "%llu not written)",
            c->cfg->spool_dir, (unsigned long long)d, (unsigned long long)st->evicted,
            (unsigned long long)c->cfg->spool_max_bytes, (unsigned long long)st->rejected,
            (unsigned long long)st->failed);
    c->drops_said = d;
}

static int agent_deliver(void *p, const struct agent_profile *prof, long timeout_ms)
{
    struct agent_ctx *c = p;
    int64_t t0 = mono_ns();
    pprof_builder *b = build_profile(c, prof);
    if (!b)
        return -1;
    uint8_t *gz = NULL;
    size_t len = 0;
    int rc = pprof_serialize_gzip(b, &gz, &len);
    pprof_free(b);
    /* Let go of the symbolizer between profiles: libdw keeps every DWARF
     * section it inflated (12 MB for libc's compressed debug info) and a
     * descriptor per module. Rebuilding it once a period costs tens of ms of
     * this thread's CPU a minute; keeping it would cost the host's memory. */
    if (c->sym) {
        sym_free(c->sym);
        c->sym = NULL;
        malloc_trim(0); /* freed heap goes back to the kernel, not just the arena */
    }
    if (rc != 0)
        return -1;
    long left = timeout_ms - (long)((mono_ns() - t0) / 1000000);
    if (left < 50)
        left = 50;

    const struct shim_config *cfg = c->cfg;
    aio_profile_meta meta = {
        .service = cfg->service, .env = cfg->env[0] ? cfg->env : NULL,
        .version = cfg->version[0] ? cfg->version : NULL, .host = c->hostname,
        .runtime_id = c->runtime_id, .tags = cfg->tags[0] ? cfg->tags : NULL,
        .container_id = c->container_id[0] ? c->container_id : NULL,
        .profiler_version = DDSHIM_VERSION, .pid = c->pid, .seq = prof->seq,
        .start_ns = prof->start_ns, .end_ns = prof->end_ns, .endpoint_counts_json = NULL};
    char *endpoints = c->spans ? spans_take_endpoint_counts(c->spans) : NULL;
    meta.endpoint_counts_json = endpoints;

    int delivered = 0, to_agent = 0, spooled = 0;
    long status = 0;
    if (agent_up(c, left)) {
        if (aio_upload_profile(&c->target, &meta, gz, len, left, &status) == 0) {
            delivered = to_agent = 1;
        } else {
            log_info("profile upload to %s failed (HTTP status %ld)", agent_where(c), status);
            if (spool_retryable(status))
                agent_down(c);
        }
    }
    if (!to_agent && c->spool && spool_retryable(status)) {
        char *event = aio_event_json(&meta);
        if (event && spool_put(c->spool, SPOOL_PROFILE, c->container_id, event, strlen(event), gz, len, 0) == 0)
            delivered = spooled = 1;
        free(event);
    }
    /* Readable files: when asked for, when no Agent ever answered (the
     * embedded default), and for whatever neither the Agent nor the spool
     * took. An outage of an Agent that answered before goes to the spool only. */
    char path[1200] = "";
    if (cfg->output_dir_set || (!to_agent && (!c->agent_seen || !spooled))) {
        if (aio_write_profile_file(cfg->output_dir, &meta, gz, len, path, sizeof path) == 0)
            delivered = 1;
    }
    if (to_agent)
        drain_spool(c, t0 + (int64_t)timeout_ms * 1000000LL);
    say_spool_drops(c);
    if (!c->said_where && delivered) {
        c->said_where = 1;
        if (to_agent && path[0])
            log_info("profiles go to the Agent at %s and to %s", agent_where(c), cfg->output_dir);
        else if (to_agent)
            log_info("profiles go to the Agent at %s", agent_where(c));
        else if (cfg->output_dir_set)
            log_msg(cfg->announce ? LOG_WARN : LOG_INFO, "profiles are written to %s", cfg->output_dir);
        else
            log_msg(cfg->announce ? LOG_WARN : LOG_INFO,
                    "no Datadog Agent at %s; profiles are written to %s", agent_where(c),
                    cfg->output_dir);
    }
    free(gz);
    free(endpoints);
    return delivered ? 0 : -1;
}

static int agent_deliver_traces(void *p, const uint8_t *recs, size_t len, size_t count,
                                uint64_t dropped, long timeout_ms)
{
    struct agent_ctx *c = p;
    if (!c->spans)
        c->spans = spans_new(c->cfg, c->runtime_id, c->pid, c->container_id);
    if (!c->spans)
        return -1;
    int64_t t0 = mono_ns();
    int up = agent_up(c, timeout_ms);
    int to_agent = 0, to_file = 0, spooled = 0;
    struct spans_dest d = {.agent = up ? &c->target : NULL, .spool = c->spool, .files = !c->agent_seen};
    int rc = spans_deliver(c->spans, &d, recs, len, count, dropped, timeout_ms, &to_agent, &to_file, &spooled);
    if (up && !to_agent)
        agent_down(c);
    if (to_agent && !spooled)
        drain_spool(c, t0 + (int64_t)timeout_ms * 1000000LL);
    say_spool_drops(c);
    if (!c->said_traces && (to_agent || to_file)) {
        c->said_traces = 1;
        if (to_agent)
            log_info("traces go to the Agent at %s", agent_where(c));
        else
            log_msg(c->cfg->announce ? LOG_WARN : LOG_INFO, "%straces are written to %s/%s.%lld.traces.jsonl",
                     c->cfg->output_dir_set ? "" : "no Datadog Agent answers; ", c->cfg->output_dir,
                     c->cfg->service, (long long)c->pid);
    }
    return rc;
}

/* A period with nothing to deliver: still hand the Agent what waits. */
static void agent_idle(void *p, long timeout_ms)
{
    struct agent_ctx *c = p;
    if (!c->spool || !spool_pending(c->spool))
        return;
    int64_t t0 = mono_ns();
    if (agent_up(c, timeout_ms))
        drain_spool(c, t0 + (int64_t)timeout_ms * 1000000LL);
}

__attribute__((visibility("default"))) const struct ddshim_agent_ops ddshim_agent_ops_v1 = {
    .abi = DDSHIM_AGENT_ABI,
    .create = agent_create,
    .deliver_profile = agent_deliver,
    .deliver_traces = agent_deliver_traces,
    .idle = agent_idle,
    .destroy = agent_destroy,
};
