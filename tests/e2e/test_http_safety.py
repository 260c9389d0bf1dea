"""HTTP tracking never hurts the host and never invents data:
- a response delimited by close makes one span; a request that never gets a
  response is reported as such (no status, error, error.type
  ddshim.no_response), never with an invented status;
- MSG_PEEK reads are not counted twice;
- non-HTTP traffic (redis-server under redis-benchmark) makes no spans and is
  not disturbed; binary bytes on an HTTP port make no span;
- hostile bytes (garbage, slowloris partial headers, a 1 MB header line,
  pipelined bursts) never crash or hang the server, which keeps answering."""
import os
import shutil
import socket
import subprocess
import time

from ddtest import PROGS, Intake, Tap, run, shim_env, tmpdir
from httptest import Server, free_port, intake_spans, raw_request, wait_port, wait_spans

t = Tap()

ik = Intake()
port = free_port()
env = shim_env(agent=ik.url, extra={"DD_SERVICE": "demo", "DD_PROFILING_ENABLED": "false"})
srv = Server([os.path.join(PROGS, "http_server"), str(port)], env, port=port)
base = "http://127.0.0.1:%d" % port


def alive():
    r = run(["curl", "-s", "-m", "5", base + "/"], shim_env(preload=False))
    return r.returncode == 0 and r.out == "hello\n"


c = run(["curl", "-s", base + "/stream"], shim_env(preload=False))
t.ok(c.out == "streamed until close\n", "a response delimited by close is delivered")
raw_request(port, b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n", read_until_close=True)
# MSG_PEEK: python's socket peeks are the server's business; here the client peeks, the
# server reads normally — covered by the example server; the server-side peek is below.
# garbage and binary on the HTTP port
for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200),
             b"*1\r\n$4\r\nPING\r\n", os.urandom(4096), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
    try:
        raw_request(port, junk, read_until_close=True, timeout=2)
    except OSError:
        pass
t.ok(alive(), "garbage, TLS, redis and HTTP/2 bytes on the port: the server still answers")
# slowloris: a head sent one byte at a time, slowly, then completed
s = socket.create_connection(("127.0.0.1", port))
head = b"GET /users/77 HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 50 + b"\r\n\r\n"
for i in range(len(head)):
    s.send(head[i:i + 1])
    if i % 20 == 0:
        time.sleep(0.01)
s.settimeout(5)
resp = s.recv(65536)
s.close()
t.ok(resp.startswith(b"HTTP/1.1 200"), "slowloris: a head sent byte by byte is answered")
# a 1 MB header line (the server gives up on it; the shim must not hurt it)
try:
    raw_request(port, b"GET / HTTP/1.1\r\nX-Big: " + b"b" * (1 << 20) + b"\r\n\r\n", read_until_close=True, timeout=5)
except OSError:
    pass
t.ok(alive(), "a 1 MB header line: the server still answers")
# pipelined burst: 200 requests in one write
burst = b"".join(b"GET /users/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (1000 + i) for i in range(199)) + \
    b"GET /users/2000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
out = raw_request(port, burst, read_until_close=True, timeout=10)
t.ok(out.count(b"HTTP/1.1 200") == 200, "a burst of 200 pipelined requests is answered in full (%d)" % out.count(b"HTTP/1.1 200"))
t.ok(alive(), "after the burst the server still answers")
expected = 1 + 1 + 1 + 3  # stream, drop, slowloris, three alive() probes
spans = wait_spans(ik, expected, timeout=8)
rc = srv.stop()
by = {}
for sp in spans:
    by.setdefault(sp["resource"], []).append(sp)
def user_no(sp):
    tail = sp["meta"].get("http.url", "").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else -1


burst_spans = [sp for sp in spans if 1000 <= user_no(sp) <= 2000]
# 200 requests pipelined in one write are deeper than the 32 a connection may
# hold: that connection stops being traced (counted), never partially.
t.ok(len(burst_spans) == 0, "a pipelined burst deeper than followed is dropped whole, not in part (%d)" % len(burst_spans))
t.ok(len(spans) - len(burst_spans) == expected,
     "exactly one span per other request, none for garbage (%d, want %d)" % (len(spans) - len(burst_spans), expected),
     sorted((k, len(v)) for k, v in by.items()))
st = by.get("GET /stream", [{}])[0]
t.ok(st.get("meta", {}).get("http.status_code") == "200", "the close-delimited response is one 200 span", st)
dr = by.get("GET /drop", [{}])[0]
m = dr.get("meta", {})
t.ok(dr and "http.status_code" not in m and dr.get("error") == 1 and m.get("error.type") == "ddshim.no_response",
     "an unanswered request: no invented status, error=1, error.type ddshim.no_response", dr)
t.ok(len([sp for sp in spans if sp["meta"]["http.url"].endswith("/users/77")]) == 1, "the slowloris request has its span")
# a burst within the depth followed: every request has its span
ik2 = Intake()
port2 = free_port()
srv2 = Server([os.path.join(PROGS, "http_server"), str(port2)],
              shim_env(agent=ik2.url, extra={"DD_PROFILING_ENABLED": "false"}), port=port2)
burst = b"".join(b"GET /users/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (100 + i) for i in range(29)) + \
    b"GET /users/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
out = raw_request(port2, burst, read_until_close=True, timeout=10)
spans2 = wait_spans(ik2, 30, timeout=10)
srv2.stop()
ik2.stop()
t.ok(out.count(b"HTTP/1.1 200") == 30 and len(spans2) == 30 and
     sorted(int(sp["meta"]["http.url"].rsplit("/", 1)[1]) for sp in spans2) == list(range(100, 129)) + [200],
     "30 pipelined requests in one write: 30 spans, each with its own URL (%d)" % len(spans2))
t.ok(rc == -15, "the server exits by its SIGTERM as usual")
ik.stop()

# ---- MSG_PEEK: a server that peeks before reading sees no double count ----
PEEK_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept()
    if not c.recv(16, socket.MSG_PEEK):   # look first, as protocol sniffers do
        c.close(); continue
    data = b""
    while b"\r\n\r\n" not in data:
        b = c.recv(4096)
        if not b: break
        data += b
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    c.close()
"""
ik = Intake()
port = free_port()
srv = Server(["/usr/bin/python3", "-c", PEEK_SERVER, str(port)], shim_env(agent=ik.url, extra={"DD_PROFILING_ENABLED": "false"}),
             port=port)
for path in ("/peek/a", "/peek/bb", "/peek/ccc"):
    run(["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:%d%s" % (port, path)], shim_env(preload=False))
spans = wait_spans(ik, 3, timeout=10)
srv.stop()
urls = sorted(sp["meta"].get("http.url", "").split("/", 3)[-1] for sp in spans)
t.ok(urls == ["peek/a", "peek/bb", "peek/ccc"], "MSG_PEEK reads are not counted: one span per request, URLs intact (%s)" % urls)
ik.stop()

# ---- redis: non-HTTP traffic makes no spans and is not disturbed ----
if shutil.which("redis-server") and shutil.which("redis-benchmark"):
    ik = Intake()
    port = free_port()
    d = tmpdir()
    srv = Server(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", d], shim_env(agent=ik.url, extra={"DD_PROFILING_ENABLED": "false"}), port=port)
    b = run(["redis-benchmark", "-p", str(port), "-q", "-n", "20000", "-c", "20", "-t", "set,get,lpush,lpop"],
            shim_env(preload=False), timeout=120)
    cli = run(["redis-cli", "-p", str(port), "set", "k", "v"], shim_env(preload=False))
    cli2 = run(["redis-cli", "-p", str(port), "get", "k"], shim_env(preload=False))
    time.sleep(1.5)
    spans, _ = intake_spans(ik)
    srv.stop()
    t.ok(b.returncode == 0 and b.out.count("requests per second") == 4, "redis-benchmark runs to the end", b.out + b.err)
    t.ok(cli2.out.strip() == "v", "redis answers correctly under the shim")
    t.ok(len(spans) == 0, "redis traffic makes no span (%d)" % len(spans))
    ik.stop()
else:
    t.skip("redis", "redis-server/redis-benchmark not installed")
t.done()
