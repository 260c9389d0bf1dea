/* tests/unit/test_spool.c — agent_io/spool.c: payloads written and read back
 * byte for byte, oldest first; the byte bound drops the oldest and counts;
 * "not now" keeps a payload, "refused" drops it; payloads for another Agent
 * are left alone; a claim by a dead process is taken over, by a live one
 * respected; temporaries of dead writers removed; corrupt files removed;
 * files 0600, directory 0700; a symlinked, foreign or group-writable
 * directory refused. */
#include "agent_io/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int n, failed;
static void ok(int cond, const char *desc)
{
    n++;
    if (!cond)
        failed++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n, desc);
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define MAXGOT 64
struct got {
    int n;
    int kind[MAXGOT];
    char body[MAXGOT][64];
    char event[MAXGOT][64];
    char container[MAXGOT][64];
    unsigned long long count[MAXGOT];
    int answer_after; /* answer 1 ("not now") from this call on; -1 never */
    int refuse_index; /* answer -1 for this call */
};

static int record(void *arg, const struct spool_entry *e, long timeout_ms)
{
    struct got *g = arg;
    if (g->answer_after >= 0 && g->n >= g->answer_after)
        return 1;
    int i = g->n++;
    if (i >= MAXGOT)
        return 1;
    g->kind[i] = e->kind;
    snprintf(g->body[i], sizeof g->body[i], "%.*s", (int)e->body_len, (const char *)e->body);
    snprintf(g->event[i], sizeof g->event[i], "%.*s", (int)e->event_len, (const char *)e->event);
    snprintf(g->container[i], sizeof g->container[i], "%s", e->container_id);
    g->count[i] = (unsigned long long)e->count;
    return i == g->refuse_index ? -1 : 0;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    int c = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.' && (!suffix || strstr(de->d_name, suffix)))
            c++;
    if (d)
        closedir(d);
    return c;
}

static int all_0600(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int good = 1, seen = 0;
    char p[1200];
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (lstat(p, &st) < 0 || (st.st_mode & 0777) != 0600)
            good = 0;
        seen++;
    }
    if (d)
        closedir(d);
    return good && seen;
}

int main(void)
{
    char base[] = "/tmp/test_spool.XXXXXX";
    if (!mkdtemp(base))
        return 1;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/spool", base);
    umask(0); /* the spool's modes must not depend on the host's umask */

    ok(spool_new(dir, 0, "http://a:1", 100, 1) == NULL, "a bound of 0 bytes means no spool");
    struct spool *s = spool_new(dir, 1 << 20, "http://a:1", getpid(), 1);
    ok(s != NULL, "spool_new");
    struct stat st;
    ok(stat(dir, &st) < 0, "nothing is created before the first payload");
    ok(spool_drain(s, mono_ns() + 1000000000LL, record, &(struct got){.answer_after = -1}) == 0,
       "draining a spool that does not exist yet delivers nothing");

    ok(spool_put(s, SPOOL_TRACES, "cid1", NULL, 0, "traces-0", 8, 3) == 0, "put traces");
    ok(spool_put(s, SPOOL_PROFILE, "", "{\"e\":1}", 7, "pprof-1", 7, 0) == 0, "put a profile");
    ok(spool_put(s, SPOOL_TRACES, NULL, NULL, 0, "traces-2", 8, 1) == 0, "put traces again");
    ok(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700,
       "the directory is created 0700 (umask 0)");
    ok(all_0600(dir), "every payload file is 0600 (umask 0)");
    ok(spool_pending(s) == 3, "three payloads pending");

    struct got g = {.answer_after = 2, .refuse_index = -1};
    int sent = spool_drain(s, mono_ns() + 1000000000LL, record, &g);
    ok(sent == 2 && g.n == 2, "the Agent takes two, then says not now: draining stops");
    ok(g.kind[0] == SPOOL_TRACES && strcmp(g.body[0], "traces-0") == 0 && g.count[0] == 3 &&
           strcmp(g.container[0], "cid1") == 0,
       "oldest first: the first traces payload, its count and container id intact");
    ok(g.kind[1] == SPOOL_PROFILE && strcmp(g.body[1], "pprof-1") == 0 && strcmp(g.event[1], "{\"e\":1}") == 0 &&
           g.container[1][0] == '\0',
       "then the profile, its event.json intact, no container id");
    ok(spool_pending(s) == 1 && count_files(dir, ".t") == 1, "the one the Agent did not take stays, unclaimed");
    g = (struct got){.answer_after = -1, .refuse_index = -1};
    ok(spool_drain(s, mono_ns() + 1000000000LL, record, &g) == 1 && strcmp(g.body[0], "traces-2") == 0 &&
           g.count[0] == 1,
       "later it is delivered");
    ok(spool_pending(s) == 0 && count_files(dir, NULL) == 0, "and the spool is empty");
    ok(spool_stats(s)->sent == 3 && spool_stats(s)->put == 3, "stats: 3 put, 3 sent");

    /* Refused for good: dropped and counted. */
    spool_put(s, SPOOL_TRACES, NULL, NULL, 0, "bad", 3, 1);
    spool_put(s, SPOOL_TRACES, NULL, NULL, 0, "good", 4, 1);
    g = (struct got){.answer_after = -1, .refuse_index = 0};
    ok(spool_drain(s, mono_ns() + 1000000000LL, record, &g) == 1 && g.n == 2 && spool_pending(s) == 0 &&
           spool_stats(s)->rejected == 1,
       "a payload the Agent refuses (4xx) is dropped and counted; the next one still goes");

    /* The bound: each file is ~100 bytes of header + 1000 of body. */
    struct spool *small = spool_new(dir, 5000, "http://a:1", getpid(), 1);
    char body[1000];
    for (int i = 0; i < 10; i++) {
        memset(body, 'a' + i, sizeof body);
        spool_put(small, SPOOL_TRACES, NULL, NULL, 0, body, sizeof body, 1);
    }
    const struct spool_stats *ss = spool_stats(small);
    int left = spool_pending(small);
    ok(left == 4 && ss->evicted == 6 && ss->put == 10, "bound 5000 bytes, 10 payloads of ~1.1 KB: 4 kept, 6 dropped and counted");
    g = (struct got){.answer_after = -1, .refuse_index = -1};
    spool_drain(small, mono_ns() + 1000000000LL, record, &g);
    ok(g.n == 4 && g.body[0][0] == 'g' && g.body[3][0] == 'j', "the oldest were dropped; the newest 4 delivered in order");
    char big[6000];
    memset(big, 'z', sizeof big);
    ok(spool_put(small, SPOOL_PROFILE, NULL, "{}", 2, big, sizeof big, 0) == -1 && ss->evicted == 7 &&
           spool_pending(small) == 0,
       "a payload larger than the bound is dropped and counted, nothing else evicted");
    spool_free(small);

    /* Another Agent's payloads are left for its processes. */
    struct spool *other = spool_new(dir, 1 << 20, "http://b:2", getpid(), 1);
    spool_put(other, SPOOL_TRACES, NULL, NULL, 0, "for-b", 5, 1);
    g = (struct got){.answer_after = -1, .refuse_index = -1};
    ok(spool_drain(s, mono_ns() + 1000000000LL, record, &g) == 0 && g.n == 0 && count_files(dir, ".t") == 1,
       "a payload for another Agent URL is not delivered, and stays");
    ok(spool_pending(s) == 0 && spool_pending(other) == 1,
       "another Agent's payload is told apart by its name (not pending for this one)");
    {
        /* A name without the Agent tag (an earlier version's): read to find out. */
        DIR *d = opendir(dir);
        struct dirent *de;
        char from[600] = "", to[600] = "";
        while (d && (de = readdir(d))) {
            char *dot = strrchr(de->d_name, '.');
            if (dot && strcmp(dot, ".t") == 0 && dot - de->d_name > 9) {
                snprintf(from, sizeof from, "%s/%s", dir, de->d_name);
                snprintf(to, sizeof to, "%s/%.*s.t", dir, (int)(dot - de->d_name - 9), de->d_name);
            }
        }
        if (d)
            closedir(d);
        ok(from[0] && rename(from, to) == 0 && spool_pending(s) == 1, "an untagged name counts as pending");
        g = (struct got){.answer_after = -1, .refuse_index = -1};
        ok(spool_drain(s, mono_ns() + 1000000000LL, record, &g) == 0 && g.n == 0 && access(to, F_OK) == 0,
           "an untagged payload for another Agent is read, not delivered, and stays");
    }
    g = (struct got){.answer_after = -1, .refuse_index = -1};
    ok(spool_drain(other, mono_ns() + 1000000000LL, record, &g) == 1 && strcmp(g.body[0], "for-b") == 0,
       "its own Agent's process delivers it");
    spool_free(other);

    /* Claims and temporaries of other processes. */
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    waitpid(child, NULL, 0); /* a pid that is certainly dead */
    char p[600], q[600];
    spool_put(s, SPOOL_TRACES, NULL, NULL, 0, "orphan", 6, 1);
    spool_put(s, SPOOL_TRACES, NULL, NULL, 0, "busy", 4, 1);
    DIR *d = opendir(dir);
    struct dirent *de;
    char names[2][300] = {"", ""};
    int k = 0;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.' && k < 2)
            snprintf(names[k++], sizeof names[0], "%s", de->d_name);
    closedir(d);
    if (strcmp(names[0], names[1]) > 0) {
        char t[300];
        memcpy(t, names[0], sizeof t);
        memcpy(names[0], names[1], sizeof t);
        memcpy(names[1], t, sizeof t);
    }
    /* names[0] = orphan (older): claimed by the dead child; names[1] = busy:
     * claimed by a live process (pid 1). */
    snprintf(p, sizeof p, "%s/%s", dir, names[0]);
    snprintf(q, sizeof q, "%s/%s.c%d", dir, names[0], (int)child);
    rename(p, q);
    snprintf(p, sizeof p, "%s/%s", dir, names[1]);
    snprintf(q, sizeof q, "%s/%s.c1", dir, names[1]);
    rename(p, q);
    snprintf(p, sizeof p, "%s/.tmp-%d-0", dir, (int)child);
    int fd = open(p, O_WRONLY | O_CREAT, 0600);
    if (fd >= 0)
        close(fd);
    g = (struct got){.answer_after = -1, .refuse_index = -1};
    ok(spool_drain(s, mono_ns() + 1000000000LL, record, &g) == 1 && strcmp(g.body[0], "orphan") == 0,
       "a payload claimed by a process that died is taken over and delivered");
    ok(access(q, F_OK) == 0, "one claimed by a live process is left to it");
    ok(access(p, F_OK) < 0, "a temporary left by a dead writer is removed");
    unlink(q);

    /* Corrupt and foreign files. */
    snprintf(p, sizeof p, "%s/00000000000000ff-1-1.t", dir);
    fd = open(p, O_WRONLY | O_CREAT, 0600);
    if (fd >= 0) {
        static const char trunc[] =
            "ddshim-spool 1\nkind t\nagent http://a:1\ncount 1\ncontainer -\nevent 0\nbody 99\n\nshort";
        if (write(fd, trunc, sizeof trunc - 1) < 0)
            perror("write");
        close(fd);
    }
    snprintf(q, sizeof q, "%s/notes.txt", dir);
    fd = open(q, O_WRONLY | O_CREAT, 0600);
    if (fd >= 0)
        close(fd);
    g = (struct got){.answer_after = -1, .refuse_index = -1};
    ok(spool_drain(s, mono_ns() + 1000000000LL, record, &g) == 0 && g.n == 0 && access(p, F_OK) < 0,
       "a truncated payload file is removed, never sent");
    ok(access(q, F_OK) == 0, "a file that is not a spool name is not touched");
    unlink(q);

    /* A deadline already passed delivers nothing. */
    spool_put(s, SPOOL_TRACES, NULL, NULL, 0, "late", 4, 1);
    g = (struct got){.answer_after = -1, .refuse_index = -1};
    ok(spool_drain(s, mono_ns(), record, &g) == 0 && spool_pending(s) == 1, "no time left: nothing sent, nothing lost");
    spool_free(s);

    /* Directories that are not private. */
    char link[300], target[300];
    snprintf(target, sizeof target, "%s/elsewhere", base);
    snprintf(link, sizeof link, "%s/link", base);
    mkdir(target, 0700);
    if (symlink(target, link) < 0)
        perror("symlink");
    struct spool *sl = spool_new(link, 1 << 20, "http://a:1", getpid(), 1);
    ok(spool_put(sl, SPOOL_TRACES, NULL, NULL, 0, "x", 1, 1) == -1 && count_files(target, NULL) == 0 &&
           spool_stats(sl)->failed == 1,
       "a symlink in place of the directory is not followed (counted as not written)");
    spool_free(sl);
    char gw[300];
    snprintf(gw, sizeof gw, "%s/groupw", base);
    mkdir(gw, 0770);
    chmod(gw, 0770);
    struct spool *sg = spool_new(gw, 1 << 20, "http://a:1", getpid(), 1);
    ok(spool_put(sg, SPOOL_TRACES, NULL, NULL, 0, "x", 1, 1) == -1 && count_files(gw, NULL) == 0,
       "a group-writable directory is refused");
    spool_free(sg);
    if (geteuid() == 0) {
        char foreign[300];
        snprintf(foreign, sizeof foreign, "%s/foreign", base);
        mkdir(foreign, 0700);
        if (chown(foreign, 65534, 65534) < 0)
            perror("chown");
        struct spool *sf = spool_new(foreign, 1 << 20, "http://a:1", getpid(), 1);
        ok(spool_put(sf, SPOOL_TRACES, NULL, NULL, 0, "x", 1, 1) == -1 && count_files(foreign, NULL) == 0,
           "a directory owned by another user is refused");
        spool_free(sf);
    } else {
        printf("ok %d - a directory owned by another user is refused # SKIP needs root to chown\n", ++n);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    if (system(cmd) != 0)
        perror("rm");
    printf("1..%d\n", n);
    return failed ? 1 : 0;
}
