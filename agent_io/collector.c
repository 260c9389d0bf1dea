/* agent_io/collector.c — the collector and uploader threads (see collector.h).
 *
 * Threads: collector_thread and uploader_thread run here with all signals
 * blocked; collector_final_flush runs on the host thread that exits (atexit),
 * execs or takes a terminating signal, and only waits on a condition variable
 * with a deadline. Nothing here runs in signal context.
 *
 * Samples arrive through the lock-free ring of preload/ring.h, which the
 * collector drains every 10 ms (no descriptor, no wake-up per sample).
 *
 * Start-up is lazy, because the shim is in every process and most processes
 * are short (a shell's fork+exec of /bin/true): the constructor and a fork
 * child start the collector only; the uploader is started the first time
 * there is something to deliver (a sample or span collected, a loss counted,
 * a flush asked for), by the collector or by the host thread that flushes at
 * exit or exec. A process that has collected nothing neither starts the
 * uploader nor waits for it at exit. The sample tables are allocated on the
 * first drain that finds a record. The uploader dlopen's libddshim-agent.so
 * (RTLD_LOCAL) on its first delivery, so processes that never produce a
 * profile never load libcurl or libdw. */
#include "agent_io/collector.h"

#include "agent_io/agent_api.h"
#include "common/pages.h"
#include "agent_io/stacks.h"
#include "common/span_rec.h"
#include "http/conn.h"
#include "common/log.h"
#include "common/record.h"
#include "preload/hooks.h"
#include "preload/sampler.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_STACKS 4096
#define MAX_FRAMES_TOTAL (128 * 1024)
#define RING_BYTES (512 * 1024)
#define COLLECT_INTERVAL_MS 10
#define SPAN_BUF_BYTES (8u << 20)
/* A busy server sends traces before the second is up: this much buffered. */
#define SPAN_FLUSH_BYTES (1u << 20)
#define TRACE_FLUSH_MS 1000

/* One of the two threads. running: it loops (cleared by the thread itself
 * when it ends for collector_pause); joinable: it was created and not joined
 * yet. Both under C.lock. */
struct shim_thread {
    pthread_t th;
    int running, joinable;
};

static struct {
    const struct shim_config *cfg;
    pthread_mutex_t lock; /* tables[cur], the control flags, the thread slots */
    pthread_cond_t wake, done;
    struct stack_table tables[2];
    int cur;
    struct span_buf spans[2]; /* span records: the collector fills spans[span_cur] */
    int span_cur;
    int traces_now;           /* the span buffer is full enough: send now */
    uint64_t spans_dropped;   /* did not fit the span buffer */
    int64_t traces_due_ns;
    uint64_t flush_req, flush_done; /* flush generations */
    long flush_timeout_ms;
    int tables_ready;        /* tables[] allocated (on the first record) */
    int pausing;             /* collector_pause: the threads are to end */
    int upload_busy;         /* the uploader is delivering (not waiting) */
    struct shim_thread collect, upload;
    int term_flush_pending; /* a terminating-signal handler waits for the flush */
    int64_t period_start_ns;
    uint64_t seq;
    uint64_t lost_seen; /* sampler loss counters already reported */
    uint64_t samples_seen, handler_ns_seen;
    void *agent_lib;
    const struct ddshim_agent_ops *ops;
    void *agent_ctx;
    char runtime_id[37];     /* made with the agent context: per process */
    char hostname[256];
} C;

static int64_t now_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void make_runtime_id(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, GRND_NONBLOCK) != (ssize_t)sizeof b) {
        uint64_t x = (uint64_t)now_ns(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32);
        for (int i = 0; i < 16; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            b[i] = (unsigned char)(x >> 56);
        }
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

/* Everything but the rings, the tables and the counters' baselines: fresh
 * (constructor, fork child). Single-threaded. */
static void init_state(void)
{
    pthread_mutex_init(&C.lock, NULL);
    pthread_cond_init(&C.wake, NULL);
    pthread_cond_init(&C.done, NULL);
    C.cur = 0;
    C.flush_req = C.flush_done = 0;
    C.traces_now = 0;
    C.pausing = 0;
    C.upload_busy = 0;
    memset(&C.collect, 0, sizeof C.collect);
    memset(&C.upload, 0, sizeof C.upload);
    C.seq = 0;
    C.agent_ctx = NULL;
    C.runtime_id[0] = '\0';
    C.hostname[0] = '\0';
    C.period_start_ns = now_ns(CLOCK_REALTIME);
    C.term_flush_pending = 0;
}

int collector_init(const struct shim_config *cfg)
{
    C.cfg = cfg;
    init_state();
    return ring_init(&sampler_ring, RING_BYTES);
}

/* Allocate the two sample tables (the first time a record is drained).
 * Caller holds C.lock. Fresh mappings (common/pages.h), untouched until used. */
static void ensure_tables_locked(void)
{
    if (C.tables_ready)
        return;
    C.tables_ready = 1;
    /* On failure stacks_add counts every sample as dropped. */
    if (stacks_init(&C.tables[0], MAX_STACKS, MAX_FRAMES_TOTAL) != 0 ||
        stacks_init(&C.tables[1], MAX_STACKS, MAX_FRAMES_TOTAL) != 0)
        log_warn("no memory for the sample tables; CPU samples are dropped (counted)");
}

static void thread_name_of(int tid, char out[16])
{
    char path[64];
    out[0] = '\0';
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, out, 15);
    close(fd);
    if (n <= 0)
        n = 0;
    out[n] = '\0';
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = '\0';
}

static void take_record(const void *data, uint32_t len, void *arg)
{
    (void)arg;
    static struct sample_rec rec; /* only ever used under C.lock */
    if (len < REC_HEADER_SIZE || len > sizeof rec)
        return;
    memcpy(&rec, data, len);
    if (len == REC_HEADER_SIZE && rec.magic == REC_MAGIC_FLUSH) {
        C.term_flush_pending = 1;
        C.flush_timeout_ms = 850;
        C.flush_req++;
        pthread_cond_broadcast(&C.wake);
        return;
    }
    if (rec.magic != REC_MAGIC || rec.nframes > REC_MAX_FRAMES || len != REC_SIZE(rec.nframes))
        return;
    struct stack_table *t = &C.tables[C.cur];
    if (!stacks_has_thread(t, rec.tid)) {
        char name[16];
        thread_name_of(rec.tid, name);
        stacks_set_thread(t, rec.tid, name);
    }
    stacks_add(t, &rec);
}

static void take_span(const void *data, uint32_t len, void *arg)
{
    (void)arg;
    struct span_buf *b = &C.spans[C.span_cur];
    if (len < sizeof(struct span_rec) || ((const struct span_rec *)data)->magic != SPAN_MAGIC)
        return;
    size_t need = sizeof(uint32_t) + len;
    if (b->len + need > SPAN_BUF_BYTES) {
        C.spans_dropped++;
        return;
    }
    if (b->len + need > b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 64 * 1024;
        while (ncap < b->len + need)
            ncap *= 2;
        if (ncap > SPAN_BUF_BYTES)
            ncap = SPAN_BUF_BYTES;
        uint8_t *n = pages_grow(b->data, b->cap, ncap); /* common/pages.h says why */
        if (!n) {
            C.spans_dropped++;
            return;
        }
        b->data = n;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, &len, sizeof len);
    memcpy(b->data + b->len + sizeof len, data, len);
    b->len += need;
    b->count++;
    if (b->len >= SPAN_FLUSH_BYTES && !C.traces_now) {
        C.traces_now = 1;
        pthread_cond_broadcast(&C.wake);
    }
}

static int ring_pending(const struct ring *r)
{
    return r->buf && __atomic_load_n(&r->head, __ATOMIC_ACQUIRE) !=
                         __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
}

/* Drain every pending record into the current table. Caller holds C.lock.
 * Host threads (exit, exec) and the uploader come here; the collector drains
 * even empty rings, which also keeps their pages ahead of the producers
 * resident (preload/ring.c). */
static void drain_locked(void)
{
    if (ring_pending(&sampler_ring)) {
        ensure_tables_locked();
        ring_drain(&sampler_ring, take_record, NULL);
    }
    if (ring_pending(&conn_span_ring))
        ring_drain(&conn_span_ring, take_span, NULL);
}

static uint64_t sampler_losses(void);
static int start_thread_locked(struct shim_thread *s, void *(*fn)(void *));
static void *uploader_thread(void *arg);

/* Anything the uploader would deliver (a sample, a loss, a span, a drop),
 * or a delivery under way that an exit must not cut short? Caller holds
 * C.lock, after a drain. */
static int pending_locked(void)
{
    const struct stack_table *t = &C.tables[C.cur];
    return t->len > 0 || t->dropped_samples > 0 || sampler_losses() != C.lost_seen ||
           C.spans[C.span_cur].count > 0 || C.spans_dropped > 0 ||
           C.flush_req != C.flush_done || C.upload_busy;
}

/* The uploader is started the first time there is something for it.
 * Caller holds C.lock; runs on the collector thread or on a host thread that
 * flushes (signals blocked around the creation: the thread inherits the mask). */
static void want_uploader_locked(void)
{
    if (C.upload.running || C.pausing || !pending_locked())
        return;
    if (start_thread_locked(&C.upload, uploader_thread) != 0)
        log_info("cannot start the uploader thread; retrying on the next collection");
}

static void name_self(const char *name)
{
    /* The calling thread names itself: one prctl, no /proc file. */
    pthread_setname_np(pthread_self(), name);
}

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* ASan builds only. The shim's threads are made with libc's pthread_create
 * (hooks_real_pthread_create), which ASan's runtime does not see, so it never
 * clears the shadow of their stacks. glibc reuses thread stacks, and in a fork
 * child it hands the new collector the stack of the parent's, whose frames
 * were live (their scopes poisoned) at the fork: an uninstrumented library
 * writing there (libunwind's sigprocmask in unw_prepare) was reported as
 * stack-use-after-scope. Everything below this frame is unused: unpoison it. */
static void asan_fresh_stack(void)
{
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) != 0)
        return;
    void *lo;
    size_t size;
    char *here = __builtin_frame_address(0);
    if (pthread_attr_getstack(&a, &lo, &size) == 0 && here > (char *)lo && here <= (char *)lo + size)
        __asan_unpoison_memory_region(lo, (size_t)(here - (char *)lo));
    pthread_attr_destroy(&a);
}
#else
static void asan_fresh_stack(void)
{
}
#endif

static void *collector_thread(void *arg)
{
    (void)arg;
    asan_fresh_stack();
    sampler_tls.shim_thread = 1;
    name_self("ddshim-collect");
    const int64_t period_ns = (int64_t)C.cfg->upload_period_s * 1000000000LL;
    for (;;) {
        /* The ring holds ~1 s of samples of dozens of busy threads; looking
         * every 10 ms keeps it far from full at a few wake-ups a second's cost. */
        struct timespec d = {0, COLLECT_INTERVAL_MS * 1000000L};
        nanosleep(&d, NULL);
        pthread_mutex_lock(&C.lock);
        sampler_unw_prepare();
        if (ring_pending(&sampler_ring))
            ensure_tables_locked();
        ring_drain(&sampler_ring, take_record, NULL);
        ring_drain(&conn_span_ring, take_span, NULL);
        int stop = C.pausing;
        if (stop) {
            C.collect.running = 0;
        } else if (!C.upload.running) {
            want_uploader_locked();
            /* No uploader to close the profile periods: an empty one starts
             * again, as the uploader's deliver() would have it. */
            int64_t now = now_ns(CLOCK_REALTIME);
            if (!C.upload.running && now - C.period_start_ns >= period_ns)
                C.period_start_ns = now;
        }
        pthread_mutex_unlock(&C.lock);
        if (stop)
            return NULL;
    }
    return NULL;
}

static int load_agent(void)
{
    if (C.ops)
        return 0;
    Dl_info di;
    if (!dladdr((void *)&collector_start, &di) || !di.dli_fname) {
        log_warn("cannot find where libddshim.so is; profiles are not delivered");
        return -1;
    }
    char path[1024];
    const char *slash = strrchr(di.dli_fname, '/');
    int dirlen = slash ? (int)(slash - di.dli_fname) : 1;
    snprintf(path, sizeof path, "%.*s/libddshim-agent.so", dirlen, slash ? di.dli_fname : ".");
    C.agent_lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!C.agent_lib) {
        log_warn("cannot load %s (%s); profiles are not delivered", path, dlerror());
        return -1;
    }
    const struct ddshim_agent_ops *ops = dlsym(C.agent_lib, DDSHIM_AGENT_SYMBOL);
    if (!ops || ops->abi != DDSHIM_AGENT_ABI) {
        log_warn("%s is not the agent library of this shim version", path);
        return -1;
    }
    C.ops = ops;
    return 0;
}

static uint64_t sampler_losses(void)
{
    return __atomic_load_n(&sampler_counters.lost_loader, __ATOMIC_RELAXED) +
           __atomic_load_n(&sampler_counters.lost_busy, __ATOMIC_RELAXED) +
           __atomic_load_n(&sampler_counters.lost_write, __ATOMIC_RELAXED);
}

static int ensure_agent(void)
{
    if (load_agent() != 0)
        return -1;
    if (!C.agent_ctx) {
        if (!C.runtime_id[0])
            make_runtime_id(C.runtime_id);
        if (gethostname(C.hostname, sizeof C.hostname) != 0)
            C.hostname[0] = '\0';
        C.hostname[sizeof C.hostname - 1] = '\0';
        struct agent_settings s = {.cfg = C.cfg, .runtime_id = C.runtime_id,
                                   .hostname = C.hostname, .pid = getpid()};
        C.agent_ctx = C.ops->create(&s);
    }
    return C.agent_ctx ? 0 : -1;
}

/* Swap the span buffer out and deliver it. Uploader thread only. */
static void deliver_traces(long timeout_ms)
{
    pthread_mutex_lock(&C.lock);
    drain_locked();
    int i = C.span_cur;
    C.span_cur ^= 1; /* only this thread flips it: spans[i] is ours until then */
    uint64_t dropped = C.spans_dropped;
    C.spans_dropped = 0;
    pthread_mutex_unlock(&C.lock);
    struct span_buf *b = &C.spans[i];
    if ((b->count || dropped) && ensure_agent() == 0)
        C.ops->deliver_traces(C.agent_ctx, b->data, b->len, b->count, dropped, timeout_ms);
    b->len = b->count = 0;
}

/* Swap the table out and deliver it. Uploader thread only. */
static void deliver(int final, long timeout_ms)
{
    pthread_mutex_lock(&C.lock);
    drain_locked();
    struct stack_table *t = &C.tables[C.cur];
    C.cur ^= 1;
    int64_t start = C.period_start_ns, end = now_ns(CLOCK_REALTIME);
    C.period_start_ns = end;
    pthread_mutex_unlock(&C.lock);

    uint64_t lost_total = sampler_losses();
    uint64_t lost = lost_total - C.lost_seen;
    C.lost_seen = lost_total;
    uint64_t samples_total = __atomic_load_n(&sampler_counters.samples, __ATOMIC_RELAXED);
    uint64_t hns_total = __atomic_load_n(&sampler_counters.handler_ns, __ATOMIC_RELAXED);
    uint64_t samples = samples_total - C.samples_seen, hns = hns_total - C.handler_ns_seen;
    C.samples_seen = samples_total;
    C.handler_ns_seen = hns_total;
    if (t->len == 0 && lost == 0 && t->dropped_samples == 0) {
        stacks_reset(t);
        if (!final && C.agent_ctx)
            C.ops->idle(C.agent_ctx, timeout_ms);
        return; /* no CPU samples in this period: nothing worth a profile */
    }
    /* Say it once on stderr when it matters (over 1 % of the period's
     * samples) and someone is looking (config's announce rule); otherwise
     * only at info level. Always in the profile. */
    static int warned;
    int level = LOG_INFO;
    if (!warned && C.cfg->announce && lost + t->dropped_periods >= 10 &&
        (lost + t->dropped_periods) * 100 > (samples + lost + 1)) {
        warned = 1;
        level = LOG_WARN;
    }
    if (lost || t->dropped_samples)
        log_msg(level, "profile %llu: %llu timer periods lost in the handler, %llu samples did not fit",
                 (unsigned long long)C.seq, (unsigned long long)lost,
                 (unsigned long long)t->dropped_samples);
    if (ensure_agent() == 0) {
        {
            struct agent_profile p = {.stacks = t, .start_ns = start, .end_ns = end,
                                      .period_ns = sampler_period_ns(), .lost_periods = lost,
                                      .samples_taken = samples, .handler_ns = hns,
                                      .seq = C.seq, .final = final};
            C.ops->deliver_profile(C.agent_ctx, &p, timeout_ms);
            C.seq++;
        }
    }
    stacks_reset(t);
}

static void *uploader_thread(void *arg)
{
    (void)arg;
    asan_fresh_stack();
    sampler_tls.shim_thread = 1;
    name_self("ddshim-upload");
    long period_ms = (long)C.cfg->upload_period_s * 1000;
    C.traces_due_ns = now_ns(CLOCK_REALTIME) + TRACE_FLUSH_MS * 1000000LL;
    for (;;) {
        /* Wake for whichever comes first: traces (every second, when tracing),
         * the profile period, or a flush request (exit, exec, signal). */
        int64_t due = C.period_start_ns + (int64_t)period_ms * 1000000LL;
        if (conn_state && C.traces_due_ns < due)
            due = C.traces_due_ns;
        struct timespec dl = {due / 1000000000LL, due % 1000000000LL};
        pthread_mutex_lock(&C.lock);
        C.upload_busy = 0;
        int r = 0;
        while (C.flush_req == C.flush_done && !C.pausing && !C.traces_now && r != ETIMEDOUT)
            r = pthread_cond_timedwait(&C.wake, &C.lock, &dl);
        /* From here to the next wait: a periodic delivery may be in flight. */
        C.upload_busy = 1;
        int traces_now = C.traces_now;
        C.traces_now = 0;
        uint64_t req = C.flush_req;
        long flush_timeout = C.flush_timeout_ms;
        int stop = C.pausing;
        if (stop) {
            C.upload.running = 0;
            pthread_cond_broadcast(&C.done); /* a final flush waits no more */
        }
        pthread_mutex_unlock(&C.lock);
        if (stop)
            return NULL;
        if (req != C.flush_done) {
            int64_t t0 = now_ns(CLOCK_MONOTONIC);
            deliver_traces(flush_timeout / 2);
            long left = flush_timeout - (long)((now_ns(CLOCK_MONOTONIC) - t0) / 1000000);
            deliver(1, left > 50 ? left : 50);
            pthread_mutex_lock(&C.lock);
            C.flush_done = req;
            pthread_cond_broadcast(&C.done);
            int term = C.term_flush_pending;
            C.term_flush_pending = 0;
            pthread_mutex_unlock(&C.lock);
            if (term) {
                __atomic_fetch_add(&sampler_term_gen, 1, __ATOMIC_RELEASE);
                syscall(SYS_futex, &sampler_term_gen, FUTEX_WAKE_PRIVATE, 1 << 30, NULL, NULL, 0);
            }
            continue;
        }
        int64_t now = now_ns(CLOCK_REALTIME);
        if (conn_state && (traces_now || now >= C.traces_due_ns)) {
            C.traces_due_ns = now + TRACE_FLUSH_MS * 1000000LL;
            deliver_traces(2000);
        }
        /* A periodic upload may take the whole period when the Agent hangs. */
        if (now >= C.period_start_ns + (int64_t)period_ms * 1000000LL)
            deliver(0, period_ms > 10000 ? 10000 : period_ms);
    }
    return NULL;
}

/* Create one of the threads with every signal blocked (threads inherit the
 * creator's mask). Caller holds C.lock. 0 or an errno. */
static int start_thread_locked(struct shim_thread *s, void *(*fn)(void *))
{
    if (s->joinable) {
        /* Ended for an earlier collector_pause that did not wait for it. */
        pthread_join(s->th, NULL);
        s->joinable = 0;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t a;
    pthread_attr_init(&a);
    /* Joinable: collector_pause must know they are gone. */
    pthread_attr_setstacksize(&a, 256 * 1024);
    int rc = hooks_real_pthread_create(&s->th, &a, fn, NULL);
    pthread_attr_destroy(&a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0)
        s->running = s->joinable = 1;
    return rc;
}

int collector_start(void)
{
    pthread_mutex_lock(&C.lock);
    C.pausing = 0;
    int rc = C.collect.running ? 0 : start_thread_locked(&C.collect, collector_thread);
    /* Something may be waiting already (after a pause, or a fork child's
     * inherited flush): the collector starts the uploader on its first tick. */
    pthread_mutex_unlock(&C.lock);
    if (rc != 0) {
        log_warn("cannot start the collector thread (%s); the shim is off", strerror(rc));
        return -1;
    }
    return 0;
}

/* Join s until the deadline; 0 when it is gone. Without C.lock. */
static int join_until(struct shim_thread *s, int was_joinable, const struct timespec *dl)
{
    if (!was_joinable)
        return 0;
    if (pthread_timedjoin_np(s->th, NULL, dl) != 0)
        return -1;
    pthread_mutex_lock(&C.lock);
    s->joinable = s->running = 0;
    pthread_mutex_unlock(&C.lock);
    return 0;
}

int collector_pause(long timeout_ms)
{
    pthread_mutex_lock(&C.lock);
    int jc = C.collect.joinable, ju = C.upload.joinable;
    if (!jc && !ju) {
        pthread_mutex_unlock(&C.lock);
        return 0;
    }
    C.pausing = 1;
    pthread_cond_broadcast(&C.wake);
    pthread_mutex_unlock(&C.lock);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    int a = join_until(&C.collect, jc, &dl);
    int b = join_until(&C.upload, ju, &dl);
    if (a != 0 || b != 0) {
        /* The uploader is stuck in a delivery: it ends when that does (and is
         * joined by the next start), or goes on if resumed before. */
        log_info("the shim's threads did not stop in time for the program's unshare/setns");
        return -1;
    }
    return 1;
}

void collector_resume(void)
{
    collector_start();
}

/* glibc's malloc takes its own locks around fork, but allocators without
 * fork handlers (GCC 12's AddressSanitizer runtime hung make -j4 that way)
 * hand the child a lock held by a thread that does not exist there; the
 * collector allocates only under C.lock (creating the uploader). Timed: an
 * allocator whose own prepare handler ran before this one and holds its locks
 * must not leave us waiting on a collector blocked in it. */
static int fork_held;

void collector_fork_prepare(void)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += 20 * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    fork_held = pthread_mutex_timedlock(&C.lock, &dl) == 0;
}

void collector_fork_parent(void)
{
    if (fork_held) {
        fork_held = 0;
        pthread_mutex_unlock(&C.lock);
    }
}

int collector_threads_hold(void)
{
    pthread_mutex_lock(&C.lock);
    return C.collect.joinable + C.upload.joinable;
}

void collector_threads_release(void)
{
    pthread_mutex_unlock(&C.lock);
}

void collector_final_flush(long timeout_ms)
{
    if (timeout_ms <= 0)
        return;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&C.lock);
    /* Collect what is in the rings now, on this thread: a process that has
     * nothing to deliver does not wait for anyone. */
    drain_locked();
    if (!pending_locked()) {
        pthread_mutex_unlock(&C.lock);
        return;
    }
    /* The uploader reads this as its time budget: leave it a margin. */
    C.flush_timeout_ms = timeout_ms > 100 ? timeout_ms - 50 : timeout_ms;
    uint64_t want = ++C.flush_req;
    want_uploader_locked();
    if (!C.upload.running) {
        C.flush_req--; /* nobody to do it (paused, or no thread could start) */
        pthread_mutex_unlock(&C.lock);
        log_info("the final profile was not delivered: the uploader is not running");
        return;
    }
    pthread_cond_broadcast(&C.wake);
    int r = 0;
    while (C.flush_done < want && C.upload.running && r != ETIMEDOUT)
        r = pthread_cond_timedwait(&C.done, &C.lock, &dl);
    int ok = C.flush_done >= want;
    pthread_mutex_unlock(&C.lock);
    if (!ok)
        log_info("the final profile was not delivered within %ld ms", timeout_ms);
}

int collector_after_fork_child(void)
{
    /* The parent's threads do not exist here; their locks and tables are
     * abandoned as they were (copies of the parent's memory, shared with it
     * until written: never touched here). Nothing is allocated and no thread
     * is started but the collector: a child that execs at once pays for
     * little more than that. */
    C.agent_ctx = NULL;
    fork_held = 0; /* C.lock is made anew by init_state below */
    ring_reset(&sampler_ring);
    memset(C.spans, 0, sizeof C.spans); /* the parent's buffers are abandoned with its threads */
    C.span_cur = 0;
    C.spans_dropped = 0;
    memset(C.tables, 0, sizeof C.tables);
    C.tables_ready = 0;
    init_state();
    C.lost_seen = sampler_losses();
    C.samples_seen = sampler_counters.samples;
    C.handler_ns_seen = sampler_counters.handler_ns;
    return 0;
}
