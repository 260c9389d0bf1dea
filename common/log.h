/* common/log.h — the shim's own log: stderr, one "ddshim:" prefix, level from
 * DD_SHIM_LOG_LEVEL. Nothing is ever written to stdout.
 *
 * log_msg() formats with vsnprintf into a stack buffer and issues one write(2):
 * usable from any ordinary thread, NOT from signal context (vsnprintf is not
 * async-signal-safe). Signal context uses log_raw(), which only copies bytes. */
#ifndef DDSHIM_LOG_H
#define DDSHIM_LOG_H

enum log_level { LOG_OFF = 0, LOG_ERROR = 1, LOG_WARN = 2, LOG_INFO = 3, LOG_DEBUG = 4 };

/* Current threshold; messages above it are not written. Default LOG_WARN. */
extern int log_threshold;

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Async-signal-safe: writes "ddshim: " + s + "\n" with write(2), keeps errno. */
void log_raw(const char *s);
/* Parse "off|error|warn|info|debug" (case-insensitive); -1 when unknown. */
int log_level_parse(const char *s);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
