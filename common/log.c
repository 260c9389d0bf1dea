/* common/log.c — see log.h. Called from the constructor, the collector and
 * uploader threads and hook wrappers (never from the sampling handler, which
 * uses log_raw only). */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int log_threshold = LOG_WARN;

static const char *const level_names[] = {"off", "error", "warn", "info", "debug"};

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

void log_msg(int level, const char *fmt, ...)
{
    if (level > log_threshold || level <= LOG_OFF)
        return;
    int saved = errno;
    char buf[1024];
    int off = snprintf(buf, sizeof buf, "ddshim: ");
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + off, sizeof buf - (size_t)off - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    size_t len = (size_t)off + (size_t)n;
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;
    buf[len++] = '\n';
    write_all(buf, len);
    errno = saved;
}

void log_raw(const char *s)
{
    int saved = errno;
    char buf[256];
    size_t n = 0;
    const char *pre = "ddshim: ";
    while (*pre && n < sizeof buf - 1)
        buf[n++] = *pre++;
    while (*s && n < sizeof buf - 1)
        buf[n++] = *s++;
    buf[n++] = '\n';
    write_all(buf, n);
    errno = saved;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < (int)(sizeof level_names / sizeof level_names[0]); i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_WARN;
    return -1;
}
