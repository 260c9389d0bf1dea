/* preload/hooks.c — every libc name the shim interposes, and nothing else
 * exported (preload/exports.map lists them; a test checks `nm -D`).
 *
 * One shape for every hook: resolve the real function lazily (a hook can run
 * before the constructor, e.g. from another preloaded library), pass straight
 * through when the shim is off, and leave the return value and errno exactly
 * as the real call left them. Called on host threads; dl_iterate_phdr can also
 * be called from signal context (libunwind inside the sampling handler) and is
 * async-signal-safe here.
 *
 *  threads  pthread_create (arms the new thread's CPU timer), pthread_exit
 *  exec     execve, execv, execvp, execvpe, execl, execlp, execle, fexecve,
 *           execveat: flush, disarm, drop our pending signal, then exec
 *  loader   dlopen, dlclose, dl_iterate_phdr: mark "inside the loader" so the
 *           handler does not unwind through half-updated loader lists
 *  signals  sigaction, signal: the host sees its own view of the sampling
 *           signal; when it installs a real handler, sampling moves away
 *  http     accept, accept4, read, readv, recv, recvfrom, recvmsg (and the
 *           _chk forms), write, writev, send, sendto, sendmsg, sendfile(64),
 *           shutdown, dup: bytes of accepted sockets go to http/conn.c; every
 *           other descriptor costs one branch
 *  ns       unshare, setns: new user (or mount) namespaces need a
 *           single-threaded process; the shim's two threads step aside
 *  creds    capset, prctl(PR_SET_KEEPCAPS/PR_SET_SECUREBITS): per-thread
 *           credentials; the shim's threads are started again from the
 *           calling thread so they carry the same ones (glibc's setuid
 *           broadcast aborts the process when threads' results differ)
 *  fds      close, close_range, closefrom, dup2, dup3, pipe2: the shim's and
 *           libunwind's descriptors (preload/fdguard.c) survive a host that
 *           closes everything; pipe2 and close are async-signal-safe here */
#include "preload/hooks.h"

#include "agent_io/collector.h"
#include "http/conn.h"
#include "preload/fdguard.h"
#include "preload/sampler.h"
#include "preload/shim.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

static int (*real_pthread_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static void (*real_pthread_exit)(void *);
static int (*real_execve)(const char *, char *const[], char *const[]);
static int (*real_execv)(const char *, char *const[]);
static int (*real_execvp)(const char *, char *const[]);
static int (*real_execvpe)(const char *, char *const[], char *const[]);
static int (*real_fexecve)(int, char *const[], char *const[]);
static int (*real_execveat)(int, const char *, char *const[], char *const[], int);
static void *(*real_dlopen)(const char *, int);
static int (*real_dlclose)(void *);
static int (*real_dl_iterate_phdr)(int (*)(struct dl_phdr_info *, size_t, void *), void *);
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);
static sighandler_t (*real_signal)(int, sighandler_t);
static int (*real_close)(int);
static int (*real_close_range)(unsigned, unsigned, int);
static void (*real_closefrom)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_pipe2)(int[2], int);
static int (*real_socketpair)(int, int, int, int[2]);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real___read_chk)(int, void *, size_t, size_t);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_recv)(int, void *, size_t, int);
static ssize_t (*real___recv_chk)(int, void *, size_t, size_t, int);
static ssize_t (*real_recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
static ssize_t (*real___recvfrom_chk)(int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static ssize_t (*real_sendfile)(int, int, off_t *, size_t);
static ssize_t (*real_sendfile64)(int, int, off64_t *, size_t);
static int (*real_shutdown)(int, int);
static int (*real_dup)(int);
static int (*real_unshare)(int);
static int (*real_capset)(void *, const void *);
static int (*real_prctl)(int, unsigned long, unsigned long, unsigned long, unsigned long);
static int (*real_setns)(int, int);

#define RESOLVE(name)                                                                              \
    do {                                                                                           \
        if (!real_##name)                                                                          \
            real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name);                        \
    } while (0)

void hooks_resolve(void)
{
    RESOLVE(pthread_create);
    RESOLVE(pthread_exit);
    RESOLVE(execve);
    RESOLVE(execv);
    RESOLVE(execvp);
    RESOLVE(execvpe);
    RESOLVE(fexecve);
    RESOLVE(execveat);
    RESOLVE(dlopen);
    RESOLVE(dlclose);
    RESOLVE(dl_iterate_phdr);
    RESOLVE(sigaction);
    RESOLVE(signal);
    RESOLVE(close);
    RESOLVE(close_range);
    RESOLVE(closefrom);
    RESOLVE(dup2);
    RESOLVE(dup3);
    RESOLVE(pipe2);
    RESOLVE(accept);
    RESOLVE(accept4);
    RESOLVE(read);
    RESOLVE(__read_chk);
    RESOLVE(readv);
    RESOLVE(recv);
    RESOLVE(__recv_chk);
    RESOLVE(recvfrom);
    RESOLVE(__recvfrom_chk);
    RESOLVE(recvmsg);
    RESOLVE(write);
    RESOLVE(writev);
    RESOLVE(send);
    RESOLVE(sendto);
    RESOLVE(sendmsg);
    RESOLVE(sendfile);
    RESOLVE(sendfile64);
    RESOLVE(shutdown);
    RESOLVE(dup);
    RESOLVE(unshare);
    RESOLVE(setns);
    RESOLVE(capset);
    RESOLVE(prctl);
}

/* ---- signals ------------------------------------------------------------ */

/* Signals the shim holds a handler for while the host believes they have
 * another disposition (SIG_DFL or SIG_IGN): the sampling signal, and
 * SIGTERM/SIGINT (final profile on a default-disposition termination). */
#define NVIEWS 3
static struct {
    int sig; /* 0: free slot */
    struct sigaction act;
} views[NVIEWS];

void hooks_set_signal_view(int sig, const struct sigaction *v)
{
    for (int i = 0; i < NVIEWS; i++) {
        if (views[i].sig == 0 || views[i].sig == sig) {
            views[i].act = *v;
            views[i].sig = sig;
            return;
        }
    }
}

static int view_of(int sig)
{
    if (sig <= 0)
        return -1;
    for (int i = 0; i < NVIEWS; i++)
        if (views[i].sig == sig)
            return i;
    return -1;
}

int hooks_real_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (!real_sigaction)
        return (int)syscall(SYS_rt_sigaction, sig, act, old, 8); /* not reached after init */
    return real_sigaction(sig, act, old);
}

int hooks_real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    RESOLVE(pthread_create);
    if (!real_pthread_create)
        return EAGAIN;
    return real_pthread_create(t, a, fn, arg);
}

static int is_plain(const struct sigaction *a)
{
    return !(a->sa_flags & SA_SIGINFO) && (a->sa_handler == SIG_DFL || a->sa_handler == SIG_IGN);
}

EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    RESOLVE(sigaction);
    if (!real_sigaction) {
        errno = ENOSYS;
        return -1;
    }
    int v = view_of(sig);
    if (v < 0)
        return real_sigaction(sig, act, old);
    struct sigaction prev = views[v].act;
    if (act) {
        if (is_plain(act) && (act->sa_handler == SIG_DFL || sig == sampler_signo)) {
            views[v].act = *act;
            if (sig == sampler_signo)
                sampler_host_ignores = act->sa_handler == SIG_IGN;
        } else {
            /* The host takes the signal for itself: it gets it. */
            if (sig == sampler_signo)
                sampler_yield_signal();
            views[v].sig = 0;
            int rc = real_sigaction(sig, act, NULL);
            if (rc != 0)
                return rc;
        }
    }
    if (old)
        *old = prev;
    return 0;
}

EXPORT sighandler_t signal(int sig, sighandler_t handler)
{
    RESOLVE(signal);
    if (view_of(sig) < 0) {
        if (!real_signal) {
            errno = ENOSYS;
            return SIG_ERR;
        }
        return real_signal(sig, handler);
    }
    /* signal() has BSD semantics in glibc: SA_RESTART, handler stays. */
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    sigaddset(&act.sa_mask, sig);
    if (sigaction(sig, &act, &old) != 0)
        return SIG_ERR;
    return old.sa_handler;
}

/* ---- threads ------------------------------------------------------------ */

struct tramp {
    void *(*fn)(void *);
    void *arg;
};

static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

/* Host threads started through pthread_create and still running, and whether
 * main has left with pthread_exit. glibc ends such a process with exit(0)
 * when its last thread ends; the shim's own threads never end, so the
 * shim does it for glibc when the last host thread does. */
static int host_threads;
static volatile int main_left;

static pid_t tid_now(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* Threads of the process besides the caller and the shim's (none, one or
 * two: they start when needed), counted in /proc (threads made before the
 * shim started, or with raw clone, are not in host_threads). */
static int other_threads(void)
{
    int shim = collector_threads_hold(); /* no shim thread starts meanwhile */
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    char buf[4096];
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    collector_threads_release();
    if (n <= 0)
        return 1; /* unknown: assume others, keep glibc's behaviour */
    buf[n] = '\0';
    const char *p = strstr(buf, "\nThreads:");
    if (!p)
        return 1;
    return atoi(p + 9) - 1 - shim;
}

static void host_thread_gone(void)
{
    if (__atomic_sub_fetch(&host_threads, 1, __ATOMIC_ACQ_REL) == 0 &&
        __atomic_load_n(&main_left, __ATOMIC_ACQUIRE))
        exit(0);
}

/* Runs at thread exit however it happens (return, pthread_exit, cancel). */
static void thread_exit_destructor(void *p)
{
    (void)p;
    sampler_thread_end();
    host_thread_gone();
}

static void make_exit_key(void)
{
    pthread_key_create(&exit_key, thread_exit_destructor);
}

static void *tramp_start(void *p)
{
    struct tramp t = *(struct tramp *)p;
    free(p);
    pthread_setspecific(exit_key, (void *)1);
    if (shim_profiling_on)
        sampler_thread_begin();
    void *r = t.fn(t.arg);
    /* The key's destructor ends the timer and counts the thread out. */
    return r;
}

EXPORT int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    RESOLVE(pthread_create);
    if (!real_pthread_create)
        return EAGAIN;
    if (!shim_active || sampler_tls.shim_thread)
        return real_pthread_create(th, attr, fn, arg);
    pthread_once(&exit_key_once, make_exit_key);
    struct tramp *t = malloc(sizeof *t);
    if (!t)
        return real_pthread_create(th, attr, fn, arg);
    t->fn = fn;
    t->arg = arg;
    int saved = errno;
    __atomic_add_fetch(&host_threads, 1, __ATOMIC_ACQ_REL);
    int rc = real_pthread_create(th, attr, tramp_start, t);
    if (rc != 0) {
        __atomic_sub_fetch(&host_threads, 1, __ATOMIC_ACQ_REL);
        free(t);
    }
    errno = saved;
    return rc;
}

EXPORT void pthread_exit(void *ret)
{
    RESOLVE(pthread_exit);
    if (shim_active && tid_now() == getpid()) {
        /* main leaves: the process lives on while its other threads do. */
        sampler_thread_end();
        __atomic_store_n(&main_left, 1, __ATOMIC_RELEASE);
        if (__atomic_load_n(&host_threads, __ATOMIC_ACQUIRE) == 0 && other_threads() <= 0)
            exit(0);
    } else if (shim_profiling_on) {
        sampler_thread_end();
    }
    real_pthread_exit(ret);
    __builtin_unreachable();
}

/* ---- exec --------------------------------------------------------------- */

struct exec_guard {
    int armed; /* this thread had a timer we removed */
};

/* Before the image is replaced: deliver what is pending, remove this thread's
 * timer and any tick of ours already pending, so the new image (which has no
 * handler for it yet, or no shim at all) is never killed by it. */
static void exec_begin(struct exec_guard *g)
{
    g->armed = 0;
    int signo = sampler_signo;
    if (!shim_profiling_on || !signo || sampler_tls.tid != tid_now())
        return; /* off, or a vfork child running on its parent's TLS */
    shim_before_exec();
    g->armed = sampler_tls.timer_id >= 0;
    sampler_thread_end();
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, signo);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) == signo)
        ;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void exec_failed(struct exec_guard *g)
{
    if (g->armed)
        sampler_thread_begin();
}

#define EXEC_WRAP(call)                                                                            \
    do {                                                                                           \
        struct exec_guard g;                                                                       \
        exec_begin(&g);                                                                            \
        int rc = (call);                                                                           \
        int e = errno;                                                                             \
        exec_failed(&g);                                                                           \
        errno = e;                                                                                 \
        return rc;                                                                                 \
    } while (0)

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    RESOLVE(execve);
    if (!real_execve) {
        errno = ENOSYS;
        return -1;
    }
    EXEC_WRAP(real_execve(path, argv, envp));
}

EXPORT int execv(const char *path, char *const argv[])
{
    RESOLVE(execv);
    if (!real_execv) {
        errno = ENOSYS;
        return -1;
    }
    EXEC_WRAP(real_execv(path, argv));
}

EXPORT int execvp(const char *file, char *const argv[])
{
    RESOLVE(execvp);
    if (!real_execvp) {
        errno = ENOSYS;
        return -1;
    }
    EXEC_WRAP(real_execvp(file, argv));
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    RESOLVE(execvpe);
    if (!real_execvpe) {
        errno = ENOSYS;
        return -1;
    }
    EXEC_WRAP(real_execvpe(file, argv, envp));
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    RESOLVE(fexecve);
    if (!real_fexecve) {
        errno = ENOSYS;
        return -1;
    }
    EXEC_WRAP(real_fexecve(fd, argv, envp));
}

EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
    RESOLVE(execveat);
    if (!real_execveat) {
        errno = ENOSYS;
        return -1;
    }
    EXEC_WRAP(real_execveat(dirfd, path, argv, envp, flags));
}

/* execl, execlp, execle: collect the variadic list, then the array forms. */
#define COLLECT_ARGS(arg0, ap, argv, envp_out)                                                     \
    size_t n_ = 1;                                                                                 \
    va_list c_;                                                                                    \
    va_copy(c_, ap);                                                                               \
    while (va_arg(c_, char *) != NULL)                                                             \
        n_++;                                                                                      \
    va_end(c_);                                                                                    \
    char *argv[n_ + 1];                                                                            \
    argv[0] = (char *)(arg0);                                                                      \
    for (size_t i_ = 1; i_ <= n_; i_++)                                                            \
        argv[i_] = va_arg(ap, char *);                                                             \
    (void)(envp_out)

EXPORT int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv, 0);
    va_end(ap);
    return execv(path, argv);
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv, 0);
    va_end(ap);
    return execvp(file, argv);
}

EXPORT int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    COLLECT_ARGS(arg, ap, argv, 0);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

/* ---- loader ------------------------------------------------------------- */

EXPORT void *dlopen(const char *file, int mode)
{
    RESOLVE(dlopen);
    if (!real_dlopen)
        return NULL;
    sampler_tls.in_loader++;
    void *h = real_dlopen(file, mode);
    sampler_tls.in_loader--;
    return h;
}

EXPORT int dlclose(void *h)
{
    RESOLVE(dlclose);
    if (!real_dlclose)
        return -1;
    sampler_tls.in_loader++;
    int rc = real_dlclose(h);
    sampler_tls.in_loader--;
    return rc;
}

/* Async-signal-safe once resolved (the constructor resolves it). */
EXPORT int dl_iterate_phdr(int (*cb)(struct dl_phdr_info *, size_t, void *), void *data)
{
    RESOLVE(dl_iterate_phdr);
    if (!real_dl_iterate_phdr)
        return 0;
    sampler_tls.in_loader++;
    int rc = real_dl_iterate_phdr(cb, data);
    sampler_tls.in_loader--;
    return rc;
}

/* ---- descriptors -------------------------------------------------------- */

static int internal_caller(void)
{
    return sampler_tls.in_unwinder || sampler_tls.shim_thread;
}

/* Async-signal-safe (libunwind closes its pipe from the sampling handler). */
EXPORT int close(int fd)
{
    RESOLVE(close);
    if (fdguard_is(fd)) {
        if (!internal_caller())
            return 0; /* the host closes what it never opened: keep it, say done */
        fdguard_release(fd);
    }
    conn_on_close(fd);
    if (!real_close)
        return (int)syscall(SYS_close, fd);
    return real_close(fd);
}

static int close_range_real(unsigned first, unsigned last, int flags)
{
    if (real_close_range)
        return real_close_range(first, last, flags);
    return (int)syscall(SYS_close_range, first, last, flags);
}

/* Close [first, last] except the guarded descriptors. */
static int close_range_guarded(unsigned first, unsigned last, int flags)
{
    if ((flags & CLOSE_RANGE_CLOEXEC) || !fdguard_in_range(first, last) || internal_caller())
        return close_range_real(first, last, flags);
    unsigned cur = first;
    int rc = 0;
    for (;;) {
        /* lowest guarded fd >= cur within range */
        unsigned next = last;
        int found = 0;
        for (unsigned fd = cur; fd <= last && !found; fd++) {
            if (fdguard_is((int)fd)) {
                next = fd;
                found = 1;
            }
            if (fd == last || fd - cur > 65536)
                break;
        }
        if (!found) {
            if (cur <= last)
                rc |= close_range_real(cur, last, flags);
            return rc;
        }
        if (next > cur)
            rc |= close_range_real(cur, next - 1, flags);
        if (next == last)
            return rc;
        cur = next + 1;
    }
}

EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    RESOLVE(close_range);
    return close_range_guarded(first, last, flags);
}

EXPORT void closefrom(int lowfd)
{
    RESOLVE(closefrom);
    if (!fdguard_in_range(lowfd < 0 ? 0 : (unsigned)lowfd, ~0u) && real_closefrom) {
        real_closefrom(lowfd);
        return;
    }
    int saved = errno;
    close_range_guarded(lowfd < 0 ? 0 : (unsigned)lowfd, ~0u, 0);
    errno = saved;
}

/* The host wants this very number: it gets it; the shim's channel notices
 * (inode check) and makes a new one. */
EXPORT int dup2(int oldfd, int newfd)
{
    RESOLVE(dup2);
    if (fdguard_is(newfd) && oldfd != newfd && !internal_caller())
        fdguard_release(newfd);
    int rc = real_dup2(oldfd, newfd);
    if (rc >= 0 && oldfd != newfd)
        conn_on_dup(oldfd, rc);
    return rc;
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
    RESOLVE(dup3);
    if (fdguard_is(newfd) && oldfd != newfd && !internal_caller())
        fdguard_release(newfd);
    int rc = real_dup3(oldfd, newfd, flags);
    if (rc >= 0)
        conn_on_dup(oldfd, rc);
    return rc;
}

EXPORT int dup(int oldfd)
{
    RESOLVE(dup);
    int rc = real_dup(oldfd);
    if (rc >= 0)
        conn_on_dup(oldfd, rc);
    return rc;
}

/* The shim's own threads never hand a descriptor to a program the host
 * execs: libcurl opens a socketpair (its multi handle's wake-up pair) per
 * transfer without SOCK_CLOEXEC. */
EXPORT int socketpair(int domain, int type, int protocol, int sv[2])
{
    RESOLVE(socketpair);
    if (sampler_tls.shim_thread)
        type |= SOCK_CLOEXEC;
    if (!real_socketpair)
        return (int)syscall(SYS_socketpair, domain, type, protocol, sv);
    return real_socketpair(domain, type, protocol, sv);
}

/* Async-signal-safe. libunwind (re)creates its validation pipe with pipe2. */
EXPORT int pipe2(int fds[2], int flags)
{
    RESOLVE(pipe2);
    int rc = real_pipe2 ? real_pipe2(fds, flags) : (int)syscall(SYS_pipe2, fds, flags);
    if (rc == 0 && sampler_tls.in_unwinder) {
        fds[0] = fdguard_take(fds[0]);
        fds[1] = fdguard_take(fds[1]);
    }
    return rc;
}

/* ---- HTTP server sockets -------------------------------------------------
 * One shape: the real call first, untouched; then, only for a descriptor
 * http/conn.c tracks and only for the bytes actually transferred, a look at
 * them. errno is kept by conn_on_*. MSG_PEEK reads are not consumed, so they
 * are not seen. */

#define MISSING(name, ret)                                                                         \
    do {                                                                                           \
        if (!real_##name) {                                                                        \
            errno = ENOSYS;                                                                        \
            return ret;                                                                            \
        }                                                                                          \
    } while (0)

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    RESOLVE(accept);
    MISSING(accept, -1);
    int rc = real_accept(fd, addr, len);
    if (rc >= 0 && conn_state)
        conn_on_accept(rc, addr, addr && len ? *len : 0);
    return rc;
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    RESOLVE(accept4);
    MISSING(accept4, -1);
    int rc = real_accept4(fd, addr, len, flags);
    if (rc >= 0 && conn_state)
        conn_on_accept(rc, addr, addr && len ? *len : 0);
    return rc;
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    RESOLVE(read);
    MISSING(read, -1);
    ssize_t r = real_read(fd, buf, n);
    if (r > 0 && conn_tracked(fd))
        conn_on_read(fd, buf, (size_t)r);
    return r;
}

EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    RESOLVE(__read_chk);
    MISSING(__read_chk, -1);
    ssize_t r = real___read_chk(fd, buf, n, buflen);
    if (r > 0 && conn_tracked(fd))
        conn_on_read(fd, buf, (size_t)r);
    return r;
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    RESOLVE(readv);
    MISSING(readv, -1);
    ssize_t r = real_readv(fd, iov, iovcnt);
    if (r > 0 && conn_tracked(fd))
        conn_on_readv(fd, iov, iovcnt, (size_t)r);
    return r;
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    RESOLVE(recv);
    MISSING(recv, -1);
    ssize_t r = real_recv(fd, buf, n, flags);
    if (r > 0 && !(flags & MSG_PEEK) && conn_tracked(fd))
        conn_on_read(fd, buf, (size_t)r);
    return r;
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
    RESOLVE(__recv_chk);
    MISSING(__recv_chk, -1);
    ssize_t r = real___recv_chk(fd, buf, n, buflen, flags);
    if (r > 0 && !(flags & MSG_PEEK) && conn_tracked(fd))
        conn_on_read(fd, buf, (size_t)r);
    return r;
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *len)
{
    RESOLVE(recvfrom);
    MISSING(recvfrom, -1);
    ssize_t r = real_recvfrom(fd, buf, n, flags, addr, len);
    if (r > 0 && !(flags & MSG_PEEK) && conn_tracked(fd))
        conn_on_read(fd, buf, (size_t)r);
    return r;
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                              struct sockaddr *addr, socklen_t *len)
{
    RESOLVE(__recvfrom_chk);
    MISSING(__recvfrom_chk, -1);
    ssize_t r = real___recvfrom_chk(fd, buf, n, buflen, flags, addr, len);
    if (r > 0 && !(flags & MSG_PEEK) && conn_tracked(fd))
        conn_on_read(fd, buf, (size_t)r);
    return r;
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    RESOLVE(recvmsg);
    MISSING(recvmsg, -1);
    ssize_t r = real_recvmsg(fd, msg, flags);
    if (r > 0 && !(flags & MSG_PEEK) && conn_tracked(fd))
        conn_on_readv(fd, msg->msg_iov, (int)msg->msg_iovlen, (size_t)r);
    return r;
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    RESOLVE(write);
    MISSING(write, -1);
    ssize_t r = real_write(fd, buf, n);
    if (r > 0 && conn_tracked(fd))
        conn_on_write(fd, buf, (size_t)r);
    return r;
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    RESOLVE(writev);
    MISSING(writev, -1);
    ssize_t r = real_writev(fd, iov, iovcnt);
    if (r > 0 && conn_tracked(fd))
        conn_on_writev(fd, iov, iovcnt, (size_t)r);
    return r;
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    RESOLVE(send);
    MISSING(send, -1);
    ssize_t r = real_send(fd, buf, n, flags);
    if (r > 0 && conn_tracked(fd))
        conn_on_write(fd, buf, (size_t)r);
    return r;
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
                      socklen_t len)
{
    RESOLVE(sendto);
    MISSING(sendto, -1);
    ssize_t r = real_sendto(fd, buf, n, flags, addr, len);
    if (r > 0 && conn_tracked(fd))
        conn_on_write(fd, buf, (size_t)r);
    return r;
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    RESOLVE(sendmsg);
    MISSING(sendmsg, -1);
    ssize_t r = real_sendmsg(fd, msg, flags);
    if (r > 0 && conn_tracked(fd))
        conn_on_writev(fd, msg->msg_iov, (int)msg->msg_iovlen, (size_t)r);
    return r;
}

EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
    RESOLVE(sendfile);
    MISSING(sendfile, -1);
    ssize_t r = real_sendfile(out, in, off, n);
    if (r > 0 && conn_tracked(out))
        conn_on_sendfile(out, (size_t)r);
    return r;
}

EXPORT ssize_t sendfile64(int out, int in, off64_t *off, size_t n)
{
    RESOLVE(sendfile64);
    MISSING(sendfile64, -1);
    ssize_t r = real_sendfile64(out, in, off, n);
    if (r > 0 && conn_tracked(out))
        conn_on_sendfile(out, (size_t)r);
    return r;
}

EXPORT int shutdown(int fd, int how)
{
    RESOLVE(shutdown);
    MISSING(shutdown, -1);
    int rc = real_shutdown(fd, how);
    /* Nothing more can be written: a response delimited by close ends here. */
    if (rc == 0 && how != SHUT_RD && conn_tracked(fd))
        conn_on_close(fd);
    return rc;
}

/* ---- namespaces ----------------------------------------------------------
 * The kernel refuses a new user namespace (and setns into a user or mount
 * namespace) to a multi-threaded process: the shim's collector and uploader
 * threads are stopped for the call and started again after it, so a
 * single-threaded program keeps getting what it would without the shim. */

static int pause_threads(void)
{
    return shim_active && !sampler_tls.shim_thread ? collector_pause(2000) : 0;
}

static void resume_threads(int paused)
{
    if (paused)
        collector_resume();
}

EXPORT int unshare(int flags)
{
    RESOLVE(unshare);
    MISSING(unshare, -1);
    int needs_single = flags & (CLONE_NEWUSER | CLONE_THREAD | CLONE_SIGHAND | CLONE_VM);
    int paused = needs_single ? pause_threads() : 0;
    int rc = real_unshare(flags);
    /* A thread that was just joined may still count for a moment. */
    for (int i = 0; rc != 0 && errno == EINVAL && paused == 1 && i < 20; i++) {
        usleep(1000);
        rc = real_unshare(flags);
    }
    int e = errno;
    resume_threads(paused);
    errno = e;
    return rc;
}

EXPORT int setns(int fd, int nstype)
{
    RESOLVE(setns);
    MISSING(setns, -1);
    int needs_single = nstype == 0 || (nstype & (CLONE_NEWUSER | CLONE_NEWNS));
    int paused = needs_single ? pause_threads() : 0;
    int rc = real_setns(fd, nstype);
    for (int i = 0; rc != 0 && errno == EINVAL && paused == 1 && i < 20; i++) {
        usleep(1000);
        rc = real_setns(fd, nstype);
    }
    int e = errno;
    resume_threads(paused);
    errno = e;
    return rc;
}

/* ---- per-thread credentials -----------------------------------------------
 * Capabilities and the keep-caps/securebits flags belong to one thread, but
 * glibc's setuid()/setgid() family applies the change to every thread of the
 * process and abort()s when the threads' results differ. A program that
 * raises its own capabilities or sets keep-caps before dropping privileges
 * (setpriv, su-like daemons) would then die because the shim's threads still
 * have the old ones. So the shim's threads stop for the call and are created
 * again by the calling thread, inheriting its credentials. */

#ifndef PR_SET_KEEPCAPS
#define PR_SET_KEEPCAPS 8
#endif
#ifndef PR_SET_SECUREBITS
#define PR_SET_SECUREBITS 28
#endif

struct ddshim_cap_header {
    uint32_t version;
    int pid;
};

EXPORT int capset(void *hdrp, const void *datap)
{
    RESOLVE(capset);
    MISSING(capset, -1);
    const struct ddshim_cap_header *h = hdrp;
    /* Only a change of this thread's own capabilities (pid 0 or its tid). */
    int self = h && datap && (h->pid == 0 || h->pid == (int)syscall(SYS_gettid));
    int paused = self ? pause_threads() : 0;
    int rc = real_capset(hdrp, datap);
    int e = errno;
    resume_threads(paused);
    errno = e;
    return rc;
}

EXPORT int prctl(int option, ...)
{
    va_list ap;
    va_start(ap, option);
    unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
    unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
    va_end(ap);
    RESOLVE(prctl);
    MISSING(prctl, -1);
    int creds = option == PR_SET_KEEPCAPS || option == PR_SET_SECUREBITS;
    int paused = creds ? pause_threads() : 0;
    int rc = real_prctl(option, a2, a3, a4, a5);
    int e = errno;
    resume_threads(paused);
    errno = e;
    return rc;
}
