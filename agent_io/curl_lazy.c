/* agent_io/curl_lazy.c — libcurl, loaded when the Agent is first spoken to.
 *
 * libddshim-agent.so is not linked against libcurl: the libcurl functions the
 * agent library calls (transport.c, traces.c) are defined here and forward to
 * libcurl.so.4, dlopen'd RTLD_LOCAL on the first call. Debian's libcurl brings
 * its whole TLS, LDAP, Kerberos and SSH closure (libcrypto, libgnutls,
 * libp11-kit, libkrb5, ...), whose constructors and relocations leave ~7 MB of
 * resident pages and take ~2 ms to load; a process with no Agent to talk to
 * (the embedded default: profiles and spans go to the output directory) never
 * loads any of it, since agent.c asks aio_agent_reachable before any request.
 *
 * Unit tests link transport.o and traces.o against libcurl directly; this file
 * is only in the agent library. Called from the uploader thread only (the
 * load itself is once, under pthread_once). */
#define CURL_DISABLE_TYPECHECK /* the wrappers below define the real functions */
#include <curl/curl.h>

#include "agent_io/transport.h"
#include "common/log.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>

static struct {
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_perform)(CURL *);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    void (*easy_cleanup)(CURL *);
    void (*easy_reset)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
} L;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int loaded; /* 1 when every function was found */

static void load(void)
{
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        log_error("cannot load libcurl.so.4 (%s): no uploads to the Agent", dlerror());
        return;
    }
#define SYM(field, name)                                                                           \
    if (!(*(void **)&L.field = dlsym(h, name))) {                                                  \
        log_error("libcurl.so.4 lacks %s: no uploads to the Agent", name);                         \
        return;                                                                                    \
    }
    SYM(global_init, "curl_global_init");
    SYM(easy_init, "curl_easy_init");
    SYM(easy_setopt, "curl_easy_setopt");
    SYM(easy_perform, "curl_easy_perform");
    SYM(easy_getinfo, "curl_easy_getinfo");
    SYM(easy_cleanup, "curl_easy_cleanup");
    SYM(easy_reset, "curl_easy_reset");
    SYM(easy_strerror, "curl_easy_strerror");
    SYM(slist_append, "curl_slist_append");
    SYM(slist_free_all, "curl_slist_free_all");
#undef SYM
    loaded = 1;
}

static int ready(void)
{
    pthread_once(&load_once, load);
    return loaded;
}

/* transport.c's libcurl initialisation starts here: 0 when libcurl is loaded. */
int aio_curl_load(void)
{
    return ready() ? 0 : -1;
}

CURLcode curl_global_init(long flags)
{
    return ready() ? L.global_init(flags) : CURLE_FAILED_INIT;
}

CURL *curl_easy_init(void)
{
    return ready() ? L.easy_init() : NULL;
}

/* One argument follows the option; its type is given by the option's range
 * (curl.h: CURLOPTTYPE_LONG, _OBJECTPOINT, _FUNCTIONPOINT, _OFF_T, _BLOB). */
CURLcode curl_easy_setopt(CURL *c, CURLoption opt, ...)
{
    if (!ready())
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, opt);
    CURLcode rc;
    if (opt < CURLOPTTYPE_OBJECTPOINT) {
        long v = va_arg(ap, long);
        rc = L.easy_setopt(c, opt, v);
    } else if (opt < CURLOPTTYPE_FUNCTIONPOINT) {
        void *v = va_arg(ap, void *);
        rc = L.easy_setopt(c, opt, v);
    } else if (opt < CURLOPTTYPE_OFF_T) {
        void (*v)(void) = va_arg(ap, void (*)(void));
        rc = L.easy_setopt(c, opt, v);
    } else if (opt < CURLOPTTYPE_BLOB) {
        curl_off_t v = va_arg(ap, curl_off_t);
        rc = L.easy_setopt(c, opt, v);
    } else {
        void *v = va_arg(ap, void *);
        rc = L.easy_setopt(c, opt, v);
    }
    va_end(ap);
    return rc;
}

CURLcode curl_easy_perform(CURL *c)
{
    return ready() ? L.easy_perform(c) : CURLE_FAILED_INIT;
}

/* Every CURLINFO takes one pointer. */
CURLcode curl_easy_getinfo(CURL *c, CURLINFO info, ...)
{
    if (!ready())
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, info);
    void *p = va_arg(ap, void *);
    va_end(ap);
    return L.easy_getinfo(c, info, p);
}

void curl_easy_cleanup(CURL *c)
{
    if (ready())
        L.easy_cleanup(c);
}

void curl_easy_reset(CURL *c)
{
    if (ready())
        L.easy_reset(c);
}

const char *curl_easy_strerror(CURLcode rc)
{
    return ready() ? L.easy_strerror(rc) : "libcurl is not loaded";
}

struct curl_slist *curl_slist_append(struct curl_slist *l, const char *s)
{
    return ready() ? L.slist_append(l, s) : NULL;
}

void curl_slist_free_all(struct curl_slist *l)
{
    if (ready())
        L.slist_free_all(l);
}
