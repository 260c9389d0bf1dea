/* agent_io/spool.c — the on-disk spool of payloads waiting for the Agent
 * (see spool.h for what it promises).
 *
 * Layout of the directory (0700, owned by us, opened O_NOFOLLOW; every
 * operation goes through that descriptor, so a path swapped meanwhile is not
 * followed):
 *   <16 hex: CLOCK_REALTIME ns>-<pid>-<n>-<8 hex: agent>.p|.t   a waiting payload
 *   <that name>.c<pid>                                  claimed by <pid> (being sent)
 *   .tmp-<pid>-<n>                                      being written
 * <agent> is a hash of the Agent URL the payload is for: a directory shared by
 * processes of several Agents is skipped through by name, without a rename or
 * a read per foreign payload (the header's URL stays the authority).
 * Names sort by creation time, so "oldest first" is name order. A file is
 * written under its temporary name (0600, O_EXCL, O_NOFOLLOW) and renamed into
 * place complete. Claims and temporaries left by a process that died are taken
 * over (claims) or removed (temporaries) by the next scan.
 *
 * File format: a text header, then the bytes.
 *   ddshim-spool 1\n kind p|t\n agent <url>\n count <n>\n container <id|->\n
 *   event <len>\n body <len>\n \n <event bytes><body bytes>
 *
 * Threads: the uploader thread only. Allocates; blocks on the disk. */
#include "agent_io/spool.h"

#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SPOOL_MAGIC "ddshim-spool 1\n"
#define MAX_ENTRY_BYTES (256u << 20)

struct spool {
    char dir[1024];
    char agent_url[512];
    char agent_tag[9];    /* 8 hex digits: FNV-1a of agent_url */
    uint64_t max_bytes;
    int64_t pid;
    uint64_t n;
    int dir_warned;
    int warn_level;       /* LOG_WARN where someone looks (config's announce rule), else LOG_INFO */
    uint64_t known_total; /* bytes in the directory at the last scan, plus our puts since */
    unsigned puts_since_scan;
    int scanned;
    struct spool_stats st;
};

struct spool *spool_new(const char *dir, uint64_t max_bytes, const char *agent_url, int64_t pid,
                        int announce)
{
    if (!max_bytes || !dir || !*dir)
        return NULL;
    struct spool *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    /* "link/" would resolve the link before O_NOFOLLOW could refuse it */
    for (size_t n = strlen(s->dir); n > 1 && s->dir[n - 1] == '/';)
        s->dir[--n] = '\0';
    snprintf(s->agent_url, sizeof s->agent_url, "%s", agent_url ? agent_url : "");
    uint32_t h = 2166136261u;
    for (const unsigned char *u = (const unsigned char *)s->agent_url; *u; u++)
        h = (h ^ *u) * 16777619u;
    snprintf(s->agent_tag, sizeof s->agent_tag, "%08" PRIx32, h);
    s->max_bytes = max_bytes;
    s->pid = pid;
    s->warn_level = announce ? LOG_WARN : LOG_INFO;
    return s;
}

void spool_free(struct spool *s)
{
    free(s);
}

const struct spool_stats *spool_stats(const struct spool *s)
{
    return &s->st;
}

/* Create the directory if missing (0700; the parent must exist) and open it.
 * Refused unless it is a real directory (not a symlink) owned by us that
 * nobody else can write to: payloads reveal code and hostnames, and a
 * directory others can write is one where they can plant names. */
static int open_dir(struct spool *s)
{
    if (mkdir(s->dir, 0700) < 0 && errno != EEXIST) {
        if (!s->dir_warned++)
            log_msg(s->warn_level, "cannot create spool directory %s: %s; payloads the Agent does not take are dropped",
                    s->dir, strerror(errno));
        return -1;
    }
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (dfd < 0 || fstat(dfd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        if (!s->dir_warned++)
            log_msg(s->warn_level, "spool directory %s is %s; payloads the Agent does not take are dropped",
                    s->dir, dfd < 0 ? "a symlink or cannot be opened" : "not a private directory of ours");
        if (dfd >= 0)
            close(dfd);
        return -1;
    }
    return dfd;
}

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- scanning ---------------------------------------------------------------- */

enum { F_ENTRY, F_CLAIM, F_TMP };

struct file {
    char name[96];
    uint64_t size;
    int type;
    int64_t owner; /* pid of a claim or temporary */
};

struct listing {
    struct file *f;
    size_t n, cap;
    uint64_t total;
};

static int pid_dead(int64_t pid)
{
    return pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static int classify(const char *name, struct file *f)
{
    size_t len = strlen(name);
    if (len >= sizeof f->name)
        return -1;
    if (strncmp(name, ".tmp-", 5) == 0) {
        f->type = F_TMP;
        f->owner = strtoll(name + 5, NULL, 10);
        return 0;
    }
    /* 16 hex, '-', pid, '-', n, '.', kind [ ".c" pid ] */
    if (len < 22 || name[16] != '-')
        return -1;
    for (int i = 0; i < 16; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return -1;
    const char *dot = strchr(name + 17, '.');
    if (!dot || (dot[1] != 'p' && dot[1] != 't'))
        return -1;
    if (dot[2] == '\0') {
        f->type = F_ENTRY;
        f->owner = 0;
        return 0;
    }
    if (dot[2] == '.' && dot[3] == 'c' && dot[4] >= '0' && dot[4] <= '9') {
        f->type = F_CLAIM;
        f->owner = strtoll(dot + 4, NULL, 10);
        return 0;
    }
    return -1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct file *)a)->name, ((const struct file *)b)->name);
}

/* Every spool file in dfd, oldest first; stale temporaries removed. */
static int scan(struct spool *s, int dfd, struct listing *l)
{
    memset(l, 0, sizeof *l);
    int d2 = dup(dfd);
    if (d2 < 0)
        return -1;
    fcntl(d2, F_SETFD, FD_CLOEXEC);
    DIR *d = fdopendir(d2);
    if (!d) {
        close(d2);
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        struct file f;
        if (classify(de->d_name, &f) < 0)
            continue;
        struct stat st;
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (f.type == F_TMP && f.owner != s->pid && pid_dead(f.owner)) {
            unlinkat(dfd, de->d_name, 0);
            continue;
        }
        snprintf(f.name, sizeof f.name, "%s", de->d_name);
        f.size = (uint64_t)st.st_size;
        if (l->n == l->cap) {
            size_t nc = l->cap ? l->cap * 2 : 64;
            struct file *nf = realloc(l->f, nc * sizeof *nf);
            if (!nf)
                break;
            l->f = nf;
            l->cap = nc;
        }
        l->f[l->n++] = f;
        l->total += f.size;
    }
    closedir(d);
    if (l->n)
        qsort(l->f, l->n, sizeof *l->f, by_name);
    return 0;
}

/* Drop the oldest waiting payloads until the directory fits the bound. */
static void enforce_bound(struct spool *s, int dfd)
{
    /* A scan is a readdir and a stat per file: done when our own count says
     * the bound is reached, and every 16 puts for what other processes add. */
    if (s->scanned && s->known_total <= s->max_bytes && ++s->puts_since_scan < 16)
        return;
    s->scanned = 1;
    s->puts_since_scan = 0;
    struct listing l;
    if (scan(s, dfd, &l) < 0)
        return;
    for (size_t i = 0; i < l.n && l.total > s->max_bytes; i++) {
        if (l.f[i].type != F_ENTRY)
            continue;
        if (unlinkat(dfd, l.f[i].name, 0) == 0) {
            s->st.evicted++;
            s->st.evicted_bytes += l.f[i].size;
            l.total -= l.f[i].size;
        }
    }
    s->known_total = l.total;
    free(l.f);
}

/* ---- writing --------------------------------------------------------------- */

int spool_put(struct spool *s, int kind, const char *container_id, const void *event,
              size_t event_len, const void *body, size_t body_len, uint64_t count)
{
    if (!s)
        return -1;
    char hdr[1024];
    int hl = snprintf(hdr, sizeof hdr,
                      SPOOL_MAGIC "kind %c\nagent %s\ncount %" PRIu64 "\ncontainer %s\nevent %zu\nbody %zu\n\n",
                      kind == SPOOL_PROFILE ? 'p' : 't', s->agent_url, count,
                      container_id && *container_id ? container_id : "-", event ? event_len : 0, body_len);
    if (hl < 0 || (size_t)hl >= sizeof hdr)
        return s->st.failed++, -1;
    uint64_t size = (uint64_t)hl + (event ? event_len : 0) + body_len;
    if (size > s->max_bytes || size > MAX_ENTRY_BYTES) {
        s->st.evicted++;
        s->st.evicted_bytes += size;
        return -1;
    }
    int dfd = open_dir(s);
    if (dfd < 0)
        return s->st.failed++, -1;
    uint64_t n = s->n++;
    char tmp[64], name[64];
    snprintf(tmp, sizeof tmp, ".tmp-%" PRId64 "-%" PRIu64, s->pid, n);
    snprintf(name, sizeof name, "%016" PRIx64 "-%" PRId64 "-%" PRIu64 "-%s.%c", (uint64_t)realtime_ns(),
             s->pid, n, s->agent_tag, kind == SPOOL_PROFILE ? 'p' : 't');
    int rc = -1;
    int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
        int ok = write_all(fd, hdr, (size_t)hl) == 0 && (!event || write_all(fd, event, event_len) == 0) &&
                 write_all(fd, body, body_len) == 0;
        ok = close(fd) == 0 && ok;
        if (ok && renameat(dfd, tmp, dfd, name) == 0)
            rc = 0;
        else
            unlinkat(dfd, tmp, 0);
    }
    if (rc == 0) {
        s->st.put++;
        s->st.put_bytes += size;
        s->known_total += size;
        enforce_bound(s, dfd);
    } else {
        s->st.failed++;
        log_info("cannot write to spool directory %s: %s", s->dir, strerror(errno));
    }
    close(dfd);
    return rc;
}

/* ---- reading back ---------------------------------------------------------- */

static const char *hdr_line(const char **p, const char *end, const char *key)
{
    size_t kl = strlen(key);
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (!nl || (size_t)(nl - *p) < kl + 1 || memcmp(*p, key, kl) != 0 || (*p)[kl] != ' ')
        return NULL;
    const char *v = *p + kl + 1;
    *p = nl + 1;
    return v;
}

/* Parse a file's bytes; the strings of e point into buf (NULs written). */
static int parse_entry(char *buf, size_t len, struct spool_entry *e, const char **agent)
{
    const char *end = buf + len, *p = buf;
    if (len < sizeof SPOOL_MAGIC - 1 || memcmp(buf, SPOOL_MAGIC, sizeof SPOOL_MAGIC - 1) != 0)
        return -1;
    p += sizeof SPOOL_MAGIC - 1;
    const char *kind = hdr_line(&p, end, "kind");
    const char *ag = hdr_line(&p, end, "agent");
    const char *cnt = hdr_line(&p, end, "count");
    const char *cont = hdr_line(&p, end, "container");
    const char *ev = hdr_line(&p, end, "event");
    const char *bd = hdr_line(&p, end, "body");
    if (!kind || !ag || !cnt || !cont || !ev || !bd || p >= end || *p != '\n')
        return -1;
    p++;
    if ((kind[0] != 'p' && kind[0] != 't') || kind[1] != '\n')
        return -1;
    char *x;
    e->kind = kind[0];
    e->count = strtoull(cnt, &x, 10);
    e->event_len = strtoull(ev, &x, 10);
    if (*x != '\n')
        return -1;
    e->body_len = strtoull(bd, &x, 10);
    if (*x != '\n' || e->event_len > (size_t)(end - p) || e->body_len != (size_t)(end - p) - e->event_len)
        return -1;
    /* NUL-terminate the header strings in place (their '\n'). */
    *(char *)memchr(ag, '\n', (size_t)(end - ag)) = '\0';
    *(char *)memchr(cont, '\n', (size_t)(end - cont)) = '\0';
    *agent = ag;
    e->container_id = strcmp(cont, "-") == 0 ? "" : cont;
    e->event = (const uint8_t *)p;
    e->body = (const uint8_t *)p + e->event_len;
    return 0;
}

static char *read_file_at(int dfd, const char *name, size_t *len)
{
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && st.st_size <= MAX_ENTRY_BYTES &&
        (buf = malloc((size_t)st.st_size + 1))) {
        size_t got = 0;
        while (got < (size_t)st.st_size) {
            ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        if (got != (size_t)st.st_size) {
            free(buf);
            buf = NULL;
        } else {
            buf[got] = '\0';
            *len = got;
        }
    }
    close(fd);
    return buf;
}

/* A payload named for another Agent (by its name's tag; names without one,
 * written by an earlier version, are read to find out). */
static int foreign(const struct spool *s, const char *name)
{
    const char *dot = strchr(name + 17, '.');
    if (!dot || dot - name < 17 + 9 || dot[-9] != '-')
        return 0;
    int dashes = 0;
    for (const char *c = name + 17; c < dot; c++)
        dashes += *c == '-';
    return dashes == 2 && memcmp(dot - 8, s->agent_tag, 8) != 0;
}

/* "<entry>" from "<entry>.c<pid>" (in place). */
static void strip_claim(char *name)
{
    char *c = strrchr(name, '.');
    if (c && c[1] == 'c')
        *c = '\0';
}

int spool_drain(struct spool *s, int64_t deadline_ns, spool_send_fn send, void *arg)
{
    if (!s)
        return 0;
    int dfd = open_dir(s);
    if (dfd < 0)
        return 0;
    struct listing l;
    if (scan(s, dfd, &l) < 0) {
        close(dfd);
        return 0;
    }
    int sent = 0;
    for (size_t i = 0; i < l.n; i++) {
        struct file *f = &l.f[i];
        if (f->type == F_TMP || (f->type == F_CLAIM && (f->owner == s->pid || !pid_dead(f->owner))) ||
            foreign(s, f->name))
            continue;
        int64_t left_ms = (deadline_ns - mono_ns()) / 1000000;
        if (left_ms < 20)
            break;
        char orig[96], mine[112];
        snprintf(orig, sizeof orig, "%s", f->name);
        if (f->type == F_CLAIM)
            strip_claim(orig); /* its claimer died mid-send: take it over */
        snprintf(mine, sizeof mine, "%s.c%" PRId64, orig, s->pid);
        if (renameat(dfd, f->name, dfd, mine) < 0)
            continue; /* another process took it */
        size_t len = 0;
        char *buf = read_file_at(dfd, mine, &len);
        struct spool_entry e;
        const char *agent = NULL;
        if (!buf || parse_entry(buf, len, &e, &agent) < 0) {
            log_info("spool: %s is not a payload of ours; removed", orig);
            unlinkat(dfd, mine, 0);
            s->st.rejected++;
            free(buf);
            continue;
        }
        if (strcmp(agent, s->agent_url) != 0) {
            renameat(dfd, mine, dfd, orig); /* for another Agent's processes */
            free(buf);
            continue;
        }
        e.created_ns = (int64_t)strtoull(orig, NULL, 16);
        int r = send(arg, &e, (long)left_ms);
        free(buf);
        if (r == 0) {
            unlinkat(dfd, mine, 0);
            s->st.sent++;
            sent++;
        } else if (r < 0) {
            unlinkat(dfd, mine, 0);
            s->st.rejected++;
        } else {
            renameat(dfd, mine, dfd, orig);
            break;
        }
    }
    free(l.f);
    close(dfd);
    return sent;
}

int spool_pending(struct spool *s)
{
    if (!s)
        return 0;
    int dfd = open_dir(s);
    if (dfd < 0)
        return 0;
    struct listing l;
    int n = 0;
    if (scan(s, dfd, &l) == 0) {
        for (size_t i = 0; i < l.n; i++)
            n += l.f[i].type == F_ENTRY && !foreign(s, l.f[i].name);
        free(l.f);
    }
    close(dfd);
    return n;
}
