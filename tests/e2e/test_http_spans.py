"""HTTP server spans from unchanged programs, checked against the servers' own
request logs and decoded with python3-msgpack:
- nginx (master + worker, epoll, sendfile) and python3 -m http.server under
  the shim, driven by curl (single, keep-alive, pipelined) and wrk: exactly
  one span per request the server logged, with its method, status, resource;
- the example C server: a slow endpoint's span within 90-100 % of the
  latency curl measured; HEAD, 204-less 100-continue, chunked, 503;
- Datadog and W3C context continued; ?password=hunter2 never reaches the Agent;
- WIRE.md section 2 keys and msgpack types, and the trace upload headers."""
import json
import os
import re
import shutil
import socket
import subprocess
import time

from ddtest import PROGS, ROOT, Intake, Tap, run, shim_env, tmpdir
from httptest import (Server, free_port, intake_spans, intake_trace_headers, nginx_conf,
                      raw_request, wait_port, wait_spans)

t = Tap()

KEY_TYPES = {"trace_id": int, "span_id": int, "parent_id": int, "name": str, "service": str,
             "resource": str, "type": str, "start": int, "duration": int, "error": int,
             "meta": dict, "metrics": dict}


def wire_ok(spans):
    bad = []
    for s in spans:
        if set(s) != set(KEY_TYPES):
            bad.append(("keys", sorted(s)))
            continue
        for k, ty in KEY_TYPES.items():
            if not isinstance(s[k], ty):
                bad.append((k, type(s[k]).__name__))
        if s["trace_id"] == 0 or s["span_id"] == 0:
            bad.append(("zero id", s["trace_id"], s["span_id"]))
        if not all(isinstance(v, str) for v in s["meta"].values()):
            bad.append(("meta not str", s["meta"]))
        if not all(isinstance(v, float) for v in s["metrics"].values()):
            bad.append(("metrics not float", s["metrics"]))
        for m in ("span.kind", "component", "http.method", "http.url", "http.endpoint", "runtime-id",
                  "language", "http.version"):
            if m not in s["meta"]:
                bad.append(("missing meta", m))
        for m in ("_sampling_priority_v1", "_dd.top_level", "_dd.measured", "process_id"):
            if m not in s["metrics"]:
                bad.append(("missing metric", m))
        if s["name"] != "http.request" or s["type"] != "web":
            bad.append(("name/type", s["name"], s["type"]))
    return bad


# ------------------------------------------------------------------ nginx ----
if shutil.which("nginx") and shutil.which("curl") and shutil.which("wrk"):
    ik = Intake()
    d = tmpdir()
    root = os.path.join(d, "www")
    logs = os.path.join(d, "logs")
    os.makedirs(root)
    os.makedirs(logs)
    os.chmod(d, 0o755)  # the worker runs as nobody
    os.chmod(root, 0o755)
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write("<h1>hello</h1>\n" * 100)
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(os.urandom(300000))
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_conf(root, port, logs))
    env = shim_env(agent=ik.url, extra={"DD_SERVICE": "nginx-test", "DD_PROFILING_ENABLED": "false"})
    p = run(["nginx", "-c", conf, "-p", d], env)
    import atexit  # a daemon outlives this script unless told to quit, even if a check raises
    atexit.register(lambda: subprocess.run(["nginx", "-c", conf, "-p", d, "-s", "quit"],
                                           env=shim_env(preload=False), capture_output=True))
    ok = p.returncode == 0 and wait_port(port)
    t.ok(ok, "nginx (master + worker, daemonized) starts under the shim", p.err)
    if ok:
        base = "http://127.0.0.1:%d" % port
        n0 = 0
        # single
        run(["curl", "-s", "-o", "/dev/null", base + "/index.html"], shim_env(preload=False))
        # keep-alive: one connection, four requests (one HEAD, one 404, one 503, one sendfile'd big file)
        run(["curl", "-s", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
             base + "/index.html", base + "/missing", base + "/error", base + "/big.bin"], shim_env(preload=False))
        run(["curl", "-s", "-I", base + "/index.html"], shim_env(preload=False))
        # pipelined: three requests in one write
        raw_request(port, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET /users/123/orders HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET /index.html?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    read_until_close=True)
        # wrk: concurrent keep-alive load
        w = run(["wrk", "-t2", "-c8", "-d2s", base + "/index.html"], shim_env(preload=False), timeout=60)
        time.sleep(0.5)
        access = open(os.path.join(logs, "access.log")).read().splitlines()
        spans = wait_spans(ik, len(access), timeout=15)
        t.ok(len(access) > 50, "nginx served the load (%d requests logged)" % len(access), w.out)
        t.ok(len(spans) == len(access),
             "nginx: exactly one span per request in its access log (%d spans, %d requests)" % (len(spans), len(access)))
        # compare method/status per request, as multisets
        # nginx logs 499 for a request whose client left before the answer, and
        # its status (often 200) with 0 bytes sent for one whose client left
        # (wrk stopping) before a byte of the answer was written: no response
        # left the server, and the span says so (no status: "none").
        def logged(l):
            m, st, sent = re.search(r'"(\S+) (\S+) [^"]*" (\d+) .* (\d+)$', l).group(1, 3, 4)
            return m, "none" if st == "499" or sent == "0" else st
        want = sorted(logged(l) for l in access)
        got = sorted((s["meta"].get("http.method", ""), s["meta"].get("http.status_code", "none")) for s in spans)
        t.ok(want == got, "nginx: every span has its request's method and status",
             ([g for g in got if g not in want][:10], len(want), len(got)))
        res = {s["resource"] for s in spans}
        t.ok({"GET /index.html", "HEAD /index.html", "GET /missing", "GET /error", "GET /big.bin",
              "GET /users/{param:int}/orders"} <= res, "nginx: resources are METHOD endpoint", sorted(res))
        err = [s for s in spans if s["meta"].get("http.status_code") == "503"]
        t.ok(err and all(s["error"] == 1 and s["meta"].get("error.message") == "503: Service Unavailable" for s in err),
             "nginx: a 503 is an error span with error.message", err[:1])
        big = [s for s in spans if s["resource"] == "GET /big.bin"]
        t.ok(big and big[0]["meta"].get("http.response.content_length") == "300000",
             "nginx: the sendfile'd response is measured (http.response.content_length)", big[:1])
        t.ok(not wire_ok(spans), "nginx: every span has the WIRE.md keys and msgpack types", wire_ok(spans)[:5])
        hdrs = intake_trace_headers(ik)
        h = hdrs[0]["headers"] if hdrs else {}
        t.ok(h.get("datadog-meta-lang") == "cpp" and h.get("content-type") == "application/msgpack"
             and "x-datadog-trace-count" in h and h.get("datadog-client-computed-top-level") == "yes",
             "trace uploads carry the WIRE.md headers", h)
        subprocess.run(["nginx", "-c", conf, "-p", d, "-s", "quit"], env=shim_env(preload=False))
        time.sleep(0.5)
    ik.stop()
else:
    t.skip("nginx spans", "nginx-light, curl or wrk not installed")

# ------------------------------------------------------- python3 http.server ----
ik = Intake()
d = tmpdir()
with open(os.path.join(d, "hello.txt"), "w") as f:
    f.write("hello\n")
port = free_port()
env = shim_env(agent=ik.url, extra={"DD_SERVICE": "pyhttp", "DD_PROFILING_ENABLED": "false"})
srv = Server(["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)], env, cwd=d, port=port)
base = "http://127.0.0.1:%d" % port
run(["curl", "-s", "-o", "/dev/null", base + "/hello.txt"], shim_env(preload=False))
run(["curl", "-s", "-o", "/dev/null", "-o", "/dev/null", base + "/hello.txt", base + "/nope"], shim_env(preload=False))
run(["curl", "-s", "-o", "/dev/null", base + "/hello.txt?password=hunter2&user=bob"], shim_env(preload=False))
ab = run(["ab", "-q", "-n", "200", "-c", "4", base + "/hello.txt"], shim_env(preload=False), timeout=60) \
    if shutil.which("ab") else None
time.sleep(0.5)
log_lines = [l for l in srv.stderr().splitlines() if '"' in l and "HTTP/1." in l]
spans = wait_spans(ik, len(log_lines), timeout=15)
srv.stop()
t.ok(len(log_lines) >= 204, "python3 http.server served every request (%d logged)" % len(log_lines))
t.ok(len(spans) == len(log_lines),
     "python3 http.server: exactly one span per request it logged (%d spans, %d requests)" % (len(spans), len(log_lines)))
want = sorted(re.search(r'"(\S+) \S+ [^"]*" (\d+)', l).group(1, 2) for l in log_lines)
got = sorted((s["meta"].get("http.method", ""), s["meta"].get("http.status_code", "none")) for s in spans)
t.ok(want == got, "python3 http.server: methods and statuses match its log", (want[:5], got[:5]))
_, raw = intake_spans(ik)
t.ok(b"hunter2" not in raw, "?password=hunter2 never reaches the Agent")
pw = [s for s in spans if "user=bob" in s["meta"].get("http.url", "")]
t.ok(pw and "<redacted>" in pw[0]["meta"]["http.url"], "the query is kept, its secret redacted",
     [s["meta"].get("http.url") for s in pw])
ik.stop()

# ----------------------------------------------------- example C server ----
ik = Intake()
port = free_port()
env = shim_env(agent=ik.url, extra={"DD_SERVICE": "demo", "DD_ENV": "test", "DD_VERSION": "7.7",
                                    "DD_TRACE_HEADER_TAGS": "x-request-id:req.id,content-type"})
srv = Server([os.path.join(PROGS, "http_server"), str(port)], env, port=port)
base = "http://127.0.0.1:%d" % port
c = run(["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", base + "/slow?ms=400"], shim_env(preload=False))
client_latency = float(c.out.strip() or 0)
run(["curl", "-s", "-o", "/dev/null", "-H", "x-datadog-trace-id: 1234567890123", "-H",
     "x-datadog-parent-id: 987654321", "-H", "x-datadog-sampling-priority: 2", "-H", "X-Request-Id: abc-1",
     "-H", "Authorization: Bearer sekrit", "-H", "Cookie: session=sekrit2", base + "/users/42"],
    shim_env(preload=False))
run(["curl", "-s", "-o", "/dev/null", "-H",
     "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", base + "/users/43"],
    shim_env(preload=False))
run(["curl", "-s", "-o", "/dev/null", base + "/chunked"], shim_env(preload=False))
run(["curl", "-s", "-o", "/dev/null", "-H", "Expect: 100-continue", "--data-binary", "@-", base + "/echo"],
    shim_env(preload=False), input=b"x" * 5000)
run(["curl", "-s", "-I", base + "/users/44"], shim_env(preload=False))
run(["curl", "-s", "-o", "/dev/null", base + "/error"], shim_env(preload=False))
run(["curl", "-s", "-o", "/dev/null", base + "/cut"], shim_env(preload=False))
spans = wait_spans(ik, 8, timeout=15)
srv.stop()
t.ok(len(spans) == 8, "C server: 8 requests, 8 spans (%d)" % len(spans), [s["resource"] for s in spans])
by = {}
for s in spans:
    by.setdefault(s["resource"], []).append(s)
slow = by.get("GET /slow", [None])[0]
if slow and client_latency > 0:
    ratio = slow["duration"] / 1e9 / client_latency
    t.ok(0.9 <= ratio <= 1.0, "slow endpoint: span duration %.1f%% of the client's latency (%.3f s)"
         % (ratio * 100, client_latency))
else:
    t.ok(False, "slow endpoint span present", sorted(by))
u42 = [s for s in spans if s["meta"].get("http.url", "").endswith("/users/42")]
t.ok(u42 and u42[0]["trace_id"] == 1234567890123 and u42[0]["parent_id"] == 987654321
     and u42[0]["metrics"].get("_sampling_priority_v1") == 2.0,
     "x-datadog-trace-id/parent-id/sampling-priority continue the upstream trace", u42[:1])
u43 = [s for s in spans if s["meta"].get("http.url", "").endswith("/users/43")]
t.ok(u43 and u43[0]["trace_id"] == 0x8448eb211c80319c and u43[0]["parent_id"] == 0xb7ad6b7169203331
     and u43[0]["meta"].get("_dd.p.tid") == "0af7651916cd43dd",
     "traceparent continues the upstream W3C trace (128-bit id: _dd.p.tid)", u43[:1])
t.ok(u42 and u42[0]["meta"].get("req.id") == "abc-1", "DD_TRACE_HEADER_TAGS copies a request header", u42[:1])
_, raw = intake_spans(ik)
t.ok(b"sekrit" not in raw, "Authorization and Cookie values are never copied")
roots = [s for s in spans if s["parent_id"] == 0]
t.ok(roots and all(re.match(r"^[0-9a-f]{16}$", s["meta"].get("_dd.p.tid", "")) for s in roots),
     "new traces are 128-bit (_dd.p.tid)", roots[:1])
t.ok(all(s["meta"].get("env") == "test" and s["meta"].get("version") == "7.7" and s["service"] == "demo"
         for s in spans), "service, env and version on every span")
ch = by.get("GET /chunked", [None])[0]
t.ok(ch is not None and ch["meta"].get("http.status_code") == "200", "chunked response: one span, 200")
echo = by.get("POST /echo", [None])[0]
t.ok(echo is not None and echo["meta"].get("http.status_code") == "200"
     and echo["meta"].get("http.request.content_length") == "5000",
     "Expect: 100-continue: the span has the final status, not 100", echo)
head = by.get("HEAD /users/{param:int}", [None])[0]
t.ok(head is not None and head["meta"].get("http.status_code") == "200", "HEAD: a span, no body expected", sorted(by))
cut = by.get("GET /cut", [None])[0]
t.ok(cut is not None and cut["meta"].get("http.status_code") == "200",
     "a body cut short by the server's close: the span has the status that was sent", cut)
t.ok(not wire_ok(spans), "C server: WIRE.md keys and types", wire_ok(spans)[:5])
ik.stop()

# ------------------------------- profiles meet spans: CPU by endpoint ----
from ddtest import have_go, pprof
ik = Intake()
port = free_port()
env = shim_env(agent=ik.url, extra={"DD_SERVICE": "demo", "DD_SHIM_SAMPLE_HZ": "999"})
srv = Server([os.path.join(PROGS, "http_server"), str(port)], env, port=port)
for i in range(3):
    run(["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:%d/burn?ms=300" % port], shim_env(preload=False))
run(["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:%d/users/12" % port], shim_env(preload=False))
spans = wait_spans(ik, 4, timeout=10)
rc = srv.stop()
time.sleep(0.3)
ups = ik.uploads()
t.ok(rc == -15 and len(ups) >= 1, "SIGTERM'd server: its final profile arrives (rc %s, %d uploads)" % (rc, len(ups)))
ec = {}
for u in ups:
    for k, v in (u.get("event", {}).get("endpoint_counts") or {}).items():
        ec[k] = ec.get(k, 0) + v
t.ok(ec.get("GET /burn") == 3 and ec.get("GET /users/{param:int}") == 1,
     "event.json endpoint_counts counts requests per endpoint", ec)
burn_ids = {s["span_id"] for s in spans if s["resource"] == "GET /burn"}
if have_go() and ups:
    rc2, rawp, err = pprof(["-raw"], [u["pprof_path"] for u in ups])
    # samples whose stack has burn_cpu, and their span id labels
    labelled = set()
    for block in rawp.split("\n\n"):
        pass
    ids = set(int(x) for x in re.findall(r"span id:\[(\d+)\]", rawp))
    roots = set(int(x) for x in re.findall(r"local root span id:\[(\d+)\]", rawp))
    t.ok(burn_ids and burn_ids <= ids and burn_ids <= roots,
         "CPU samples taken while serving /burn carry its span id and local root span id", (burn_ids, ids))
else:
    t.skip("span id labels", "go not installed")
ik.stop()

# -------------------------------------------- no Agent: JSON lines locally ----
out = tmpdir()
port = free_port()
srv = Server([os.path.join(PROGS, "http_server"), str(port)], shim_env(out, extra={"DD_SERVICE": "demo"}), port=port)
for i in range(5):
    run(["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:%d/users/%d" % (port, i + 10)], shim_env(preload=False))
time.sleep(1.5)
srv.stop()
files = [f for f in os.listdir(out) if f.endswith(".traces.jsonl")]
lines = []
for f in files:
    lines += [json.loads(l) for l in open(os.path.join(out, f)) if l.strip()]
t.ok(len(lines) == 5 and all(l["resource"] == "GET /users/{param:int}" for l in lines),
     "without an Agent, spans land in the output directory as JSON lines, one a line (%d)" % len(lines), files)
t.done()
