/* agent_io/transport.h — talking to the Datadog Agent (libcurl, TCP or Unix
 * socket) and writing the embedded-default output directory.
 * Called only from the shim's uploader thread; never from host threads or
 * signal context. Every call is bounded by the timeout it is given. */
#ifndef DDSHIM_TRANSPORT_H
#define DDSHIM_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

enum aio_url_kind { AIO_URL_HTTP = 1, AIO_URL_UNIX = 2 };

/* A parsed DD_TRACE_AGENT_URL. */
typedef struct aio_target {
    int kind;             /* AIO_URL_HTTP or AIO_URL_UNIX */
    char base[512];       /* "http://host:port" (no trailing slash); for unix: "http://localhost" */
    char socket_path[256];/* unix only: filesystem path of the socket */
} aio_target;

/* Parse "http://host[:port][/]" or "unix:///path/to.sock" (also "unix:/path").
 * https is refused (the Agent speaks plain HTTP locally). Returns 0, or -1 when
 * the URL is not one of these (nothing in *out is then meaningful). */
int aio_url_parse(const char *url, aio_target *out);

/* Everything event.json and the headers need for one profile upload. */
typedef struct aio_profile_meta {
    const char *service, *env, *version; /* env/version may be NULL */
    const char *host;                    /* hostname */
    const char *runtime_id;              /* uuid v4 string */
    const char *tags;                    /* DD_TAGS raw ("k:v,k:v" or space separated), may be NULL */
    const char *container_id;            /* may be NULL */
    const char *profiler_version;        /* "0.1.0" */
    int64_t pid;
    uint64_t seq;                        /* profile_seq, 0-based per process */
    int64_t start_ns, end_ns;            /* CLOCK_REALTIME ns since epoch */
    const char *endpoint_counts_json;    /* JSON object text, or NULL (omitted) */
} aio_profile_meta;

/* Build the event.json text for meta (malloc'd, caller frees); NULL on OOM.
 * tags_profiler = service,env,version,language:native,profiler_version,
 * runtime-id,profile_seq,host,process_id, then each DD_TAGS tag. */
char *aio_event_json(const aio_profile_meta *meta);

/* GET <agent>/info; 0 when the Agent answered 200, else -1. */
int aio_agent_probe(const aio_target *t, long timeout_ms);
/* Whether anything listens at the Agent's address, by a plain connect (no
 * libcurl, no HTTP) bounded by timeout_ms: 1 a connection was accepted, 0
 * none was (refused, no such socket, timed out), -1 cannot tell without a
 * name lookup (a host name other than localhost). agent.c asks it before
 * every /info probe, so a process with no Agent never loads libcurl
 * (curl_lazy.c). */
int aio_agent_reachable(const aio_target *t, long timeout_ms);

/* POST <agent>/profiling/v1/input as multipart/form-data with parts "event"
 * (event.json) and "profile.pprof" (pprof_gz). Headers per WIRE.md §1.
 * *http_status gets the status (0 when no answer). Returns 0 on a 2xx answer,
 * -1 otherwise. */
int aio_upload_profile(const aio_target *t, const aio_profile_meta *meta, const uint8_t *pprof_gz,
                       size_t len, long timeout_ms, long *http_status);

/* The same upload with event.json already built (a spooled profile sent
 * again): event is its text, container_id may be NULL. */
int aio_upload_profile_event(const aio_target *t, const char *event, const char *container_id,
                             const char *profiler_version, const uint8_t *pprof_gz, size_t len,
                             long timeout_ms, long *http_status);

/* Write pprof_gz to <dir>/<service>.<pid>.<seq>.pprof.gz (created 0600, via a
 * temporary name and rename, O_NOFOLLOW; dir created 0700 if missing) and the
 * event.json beside it as <service>.<pid>.<seq>.event.json. The service name is
 * sanitized for use in a file name. path_out (if not NULL) receives the pprof
 * path. Returns 0 or -1. */
int aio_write_profile_file(const char *dir, const aio_profile_meta *meta, const uint8_t *pprof_gz,
                           size_t len, char *path_out, size_t path_out_len);

/* The container id from /proc/self/cgroup ("" when not in a container); the
 * buffer must hold 65 bytes. */
void aio_container_id(char *out, size_t out_len);

/* One HTTP/1.1 request without libcurl (method, path, "Name: value" header
 * lines, NULL-terminated), for when the program's OpenSSL has shut down at
 * exit. Returns the status (0: no answer); the response body, truncated, goes
 * to resp_body when given. */
long aio_raw_request(const aio_target *t, const char *method, const char *path,
                     const char *const *headers, const void *body, size_t len, long timeout_ms,
                     char *resp_body, size_t resp_cap);
/* True once the program's OpenSSL has run its exit cleanup. */
int aio_openssl_stopped(void);

/* libcurl loaded and initialised, once per process, on the first request to
 * an Agent found listening (aio_agent_reachable). */
int aio_global_init(void);
/* Load libcurl (agent library only, curl_lazy.c): 0 when it is there. */
int aio_curl_load(void);

/* ---- shared with the other agent_io uploaders (traces.c) -------------------
 * So every request to the Agent gets the same libcurl settings and every file
 * in the output directory the same checks. Same threads as above. */
struct curl_slist;
struct json_t;

/* A libcurl easy handle (a CURL *; void * here to keep curl.h out of this
 * header) for <t->base><path>: NOSIGNAL, total and connect timeout (a
 * timeout_ms <= 0 becomes 1 ms, never "forever"), no proxy, http only, no
 * redirects, close-on-exec sockets, the Unix socket for unix targets, and the
 * response body discarded until the caller sets CURLOPT_WRITEFUNCTION.
 * errbuf (CURL_ERROR_SIZE bytes) must outlive the handle. NULL on failure
 * (also when aio_global_init fails). */
void *aio_easy_new(const aio_target *t, const char *path, long timeout_ms, char *errbuf);

/* curl_easy_perform on such a handle; the HTTP status, 0 when no answer came
 * (logged at debug level with `what`). */
long aio_easy_run(void *curl, const aio_target *t, const char *what, const char *errbuf);

/* One kept connection to the Agent: a libcurl easy handle (aio_easy_new's
 * settings) reused across requests, so that requests share one keep-alive
 * connection instead of connecting each time. Owned by one thread at a time
 * and by the process that made it: in a fork child it is never used again
 * (its socket, close-on-exec like every other, is closed in the child at
 * fork). aio_conn_new returns NULL on OOM. */
typedef struct aio_conn aio_conn;
aio_conn *aio_conn_new(void);
void aio_conn_free(aio_conn *k);

/* The handle for one request to <t->base><path>, reused when the previous
 * request went to the same place and succeeded. Per-request settings are set
 * afresh (timeouts as aio_easy_new's; the response body discarded; an upload
 * buffer fit for a body of upload_len bytes); the caller then sets its body,
 * headers and reply sink and calls aio_conn_run. NULL on failure. */
void *aio_conn_easy(aio_conn *k, const aio_target *t, const char *path, long timeout_ms,
                    size_t upload_len);

/* Perform the request prepared on aio_conn_easy's handle; the HTTP status as
 * aio_easy_run. The handle forgets the caller's body, headers and reply sink
 * afterwards. Anything but a 2xx answer (a failure, a timeout, an error
 * status) discards the handle and its connection: the next request starts on
 * a new one. */
long aio_conn_run(aio_conn *k, const aio_target *t, const char *what);

/* Discard the handle (and its connection) now, e.g. when a request could not
 * be prepared on it. */
void aio_conn_reset(aio_conn *k);

/* Append "name: value" to l. A value that would forge further headers (CR,
 * LF, control bytes) or is too long is left out; *bad set on OOM, and a set
 * *bad makes this a no-op. Returns the list (never loses it). */
struct curl_slist *aio_add_header(struct curl_slist *l, int *bad, const char *name,
                                  const char *value);

/* mkdir -p dir (0700 for what we create), then open it O_DIRECTORY and
 * O_NOFOLLOW (a symlink at the directory's own name is refused); refused
 * (-1, logged) when it is world-writable and not ours, or world-writable and
 * sticky (a shared directory like /tmp, even ours). The fd, or -1. */
int aio_open_output_dir(const char *dir);
/* Whether a person reads the host's stderr (config's announce rule): an
 * output directory the process may not enter is then said there; else at info. */
extern int aio_announce;

/* The service name reduced to a safe file name ([A-Za-z0-9._-], never
 * hidden); "unnamed-native-app" when s is NULL or empty. */
void aio_sanitize_service(const char *s, char *out, size_t out_len);

/* write(2) all of data, retrying on EINTR and short writes. 0 or -1. */
int aio_write_all(int fd, const void *data, size_t len);

/* json_string(s), or when s is not valid UTF-8 a copy with the non-ASCII
 * bytes replaced by '_' (a json_t *). NULL on OOM. */
struct json_t *aio_json_str_lossy(const char *s);

#endif
