#!/usr/bin/python3
"""tests/intake.py — a capture intake standing in for the Datadog Agent.

Stdlib only. Started by the unit and end-to-end tests:

    tests/intake.py --port 0 --port-file F --out DIR [--mode MODE]
    tests/intake.py --unix PATH --port-file F --out DIR [--mode MODE]
    ... [--rates JSON]   the rate_by_service object trace uploads get back

Serves GET /info, POST /profiling/v1/input, PUT/POST /v0.4/traces. Every
profile upload is checked against docs/WIRE.md section 1 and recorded as
DIR/upload-<n>.json ({"ok", "errors", "headers", "event", "pprof_path"}) with
the attachment in DIR/upload-<n>.pprof.gz (n counts from 1; the .json is
renamed into place last, so its presence means the upload is complete).
Traces go to DIR/traces-<n>.msgpack with DIR/traces-<n>.json (headers).
Both .json records carry "status": what the intake answered (500 in mode 500).
Every request is appended to DIR/requests.log as "METHOD PATH STATUS".

Modes (for fault tests):
  ok          answer normally
  500         answer 500 to profile and trace uploads (still recorded); /info is 200
  refuse      bind but never listen: every connect is refused (ECONNREFUSED)
  slow:SECS   sleep SECS before answering any request
  hang        read the request, never answer
SIGUSR1 switches any mode to ok: the Agent comes back (a refusing intake
starts listening on the same port; a request held by hang is then dropped
unanswered, as a restarted Agent drops its connections).

The port-file (for --unix: the socket path) is written once the server is
listening, atomically, so a test may poll for it.
"""
import argparse
import calendar
import datetime
import gzip
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time

PROFILE_PATH = "/profiling/v1/input"
TRACES_PATH = "/v0.4/traces"
ENDPOINTS = ["/v0.4/traces", "/v0.5/traces", "/profiling/v1/input", "/telemetry/proxy/",
             "/v0.7/config"]

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$")
TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
EVENT_KEYS = {"attachments", "tags_profiler", "start", "end", "family", "version",
              "endpoint_counts", "internal", "info"}
REQUIRED_EVENT_KEYS = EVENT_KEYS - {"endpoint_counts"}


class State:
    def __init__(self, out, mode, rates=None):
        self.out = os.path.abspath(out)
        self.mode = mode
        self.rates = rates if rates is not None else {}
        self.lock = threading.Lock()
        self.uploads = 0
        self.traces = 0

    def next_upload(self):
        with self.lock:
            self.uploads += 1
            return self.uploads

    def next_traces(self):
        with self.lock:
            self.traces += 1
            return self.traces

    def log_request(self, method, path, status):
        with self.lock:
            with open(os.path.join(self.out, "requests.log"), "a") as f:
                f.write("%s %s %s\n" % (method, path, status))


def write_atomic(path, data):
    tmp = path + ".tmp"
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode) as f:
        f.write(data)
    os.replace(tmp, path)


# ---- validation ------------------------------------------------------------


def parse_params(value):
    """Split 'a; k=v; k2="v2"' into ('a', {k: v}); None when malformed."""
    parts = []
    cur, q, i = "", False, 0
    while i < len(value):
        c = value[i]
        if q:
            if c == "\\" and i + 1 < len(value):
                cur += value[i + 1]
                i += 2
                continue
            if c == '"':
                q = False
            cur += c
        elif c == '"':
            q = True
            cur += c
        elif c == ";":
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    if q:
        return None
    parts.append(cur)
    head = parts[0].strip()
    params = {}
    for p in parts[1:]:
        p = p.strip()
        if "=" not in p:
            return None
        k, v = p.split("=", 1)
        k = k.strip().lower()
        v = v.strip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = v[1:-1]
        elif not TOKEN_RE.match(v):
            return None
        if k in params:
            return None
        params[k] = v
    return head, params


def parse_multipart(body, boundary, errors):
    """Strict RFC 2046 parse: CRLF everywhere, body opens with the delimiter,
    ends with the close delimiter. Returns [(headers dict lower-case, data)]."""
    delim = b"--" + boundary.encode("latin-1")
    if not body.startswith(delim + b"\r\n"):
        errors.append("multipart body does not start with '--boundary' CRLF")
        return None
    close = b"\r\n" + delim + b"--"
    end = body.rfind(close)
    if end < 0:
        errors.append("multipart body has no closing boundary")
        return None
    tail = body[end + len(close):]
    if tail not in (b"", b"\r\n"):
        errors.append("bytes after the closing boundary: %r" % tail[:40])
    inner = body[len(delim) + 2:end]
    chunks = inner.split(b"\r\n" + delim + b"\r\n")
    parts = []
    for n, chunk in enumerate(chunks):
        if (b"\r\n" + delim) in chunk:
            errors.append("part %d: boundary inside a part not followed by CRLF" % n)
            return None
        sep = chunk.find(b"\r\n\r\n")
        if sep < 0:
            errors.append("part %d: no blank line after the part headers" % n)
            return None
        raw_headers, data = chunk[:sep], chunk[sep + 4:]
        headers = {}
        for line in raw_headers.split(b"\r\n"):
            if b"\n" in line or b"\r" in line:
                errors.append("part %d: bare CR or LF in headers" % n)
                return None
            if b":" not in line:
                errors.append("part %d: malformed header line %r" % (n, line[:60]))
                return None
            k, v = line.split(b":", 1)
            k = k.decode("latin-1").strip().lower()
            if k in headers:
                errors.append("part %d: duplicate header %s" % (n, k))
            headers[k] = v.decode("latin-1").strip()
        parts.append((headers, data))
    return parts


def check_rfc3339(name, value, errors):
    if not isinstance(value, str):
        errors.append("event.%s is not a string" % name)
        return None
    m = RFC3339_RE.match(value)
    if not m:
        errors.append("event.%s=%r is not RFC 3339 UTC with Z" % (name, value))
        return None
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    try:
        datetime.datetime(y, mo, d, h, mi, s)
        secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    except ValueError as e:
        errors.append("event.%s=%r: %s" % (name, value, e))
        return None
    frac = (m.group(7) or "").ljust(9, "0")
    return secs * 10**9 + int(frac or "0")


def check_tags(tags, errors):
    if not isinstance(tags, str):
        errors.append("tags_profiler is not a string")
        return
    items = tags.split(",")
    seen = {}
    for it in items:
        if it == "" or it != it.strip():
            errors.append("tags_profiler has an empty or padded item: %r" % it)
            continue
        k, _, v = it.partition(":")
        if not k:
            errors.append("tags_profiler item without a key: %r" % it)
        seen.setdefault(k, []).append(v)
    required = ["service", "language", "profiler_version", "runtime-id", "profile_seq", "host",
                "process_id"]
    for k in required + ["env", "version"]:
        if len(seen.get(k, [])) > 1:
            errors.append("tags_profiler has %s: %d times" % (k, len(seen[k])))
    for k in required:
        if k not in seen or seen[k][0] == "":
            errors.append("tags_profiler lacks %s:" % k)
    if seen.get("language", ["native"])[0] != "native":
        errors.append("tags_profiler language is %r, not native" % seen["language"][0])
    if "runtime-id" in seen and not UUID_RE.match(seen["runtime-id"][0]):
        errors.append("runtime-id %r is not a lower-case uuid" % seen["runtime-id"][0])
    for k in ("profile_seq", "process_id"):
        if k in seen and not re.match(r"^\d+$", seen[k][0]):
            errors.append("%s %r is not an integer" % (k, seen[k][0]))


def check_event(ev, errors):
    if not isinstance(ev, dict):
        errors.append("event.json is not an object")
        return
    for k in sorted(REQUIRED_EVENT_KEYS - set(ev)):
        errors.append("event.json lacks %s" % k)
    for k in sorted(set(ev) - EVENT_KEYS):
        errors.append("event.json has an unknown key %s" % k)
    if "attachments" in ev and ev["attachments"] != ["profile.pprof"]:
        errors.append("attachments is %r, not [\"profile.pprof\"]" % (ev["attachments"],))
    if "family" in ev and ev["family"] != "native":
        errors.append("family is %r, not \"native\"" % (ev["family"],))
    if "version" in ev and ev["version"] != "4":
        errors.append("version is %r, not the string \"4\"" % (ev["version"],))
    if "tags_profiler" in ev:
        check_tags(ev["tags_profiler"], errors)
    s = check_rfc3339("start", ev["start"], errors) if "start" in ev else None
    e = check_rfc3339("end", ev["end"], errors) if "end" in ev else None
    if s is not None and e is not None and not s < e:
        errors.append("start %s is not before end %s" % (ev["start"], ev["end"]))
    if "endpoint_counts" in ev and ev["endpoint_counts"] is not None:
        ec = ev["endpoint_counts"]
        if not isinstance(ec, dict):
            errors.append("endpoint_counts is neither null nor an object")
        else:
            for k, v in ec.items():
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    errors.append("endpoint_counts[%r]=%r is not a count" % (k, v))
    for k in ("internal", "info"):
        if k in ev and not isinstance(ev[k], dict):
            errors.append("%s is not an object" % k)


def check_protobuf(buf, errors, depth=0):
    """Walk protobuf wire format: every key valid, every length in range."""
    i, n = 0, len(buf)

    def varint():
        nonlocal i
        shift, val = 0, 0
        while True:
            if i >= n or shift > 63:
                raise ValueError("truncated varint at %d" % i)
            b = buf[i]
            i += 1
            val |= (b & 0x7F) << shift
            if not b & 0x80:
                return val
            shift += 7

    try:
        while i < n:
            key = varint()
            field, wt = key >> 3, key & 7
            if field == 0:
                raise ValueError("field number 0 at %d" % i)
            if wt == 0:
                varint()
            elif wt == 1:
                i += 8
            elif wt == 5:
                i += 4
            elif wt == 2:
                ln = varint()
                i += ln
            else:
                raise ValueError("wire type %d at %d" % (wt, i))
            if i > n:
                raise ValueError("field %d runs past the end" % field)
    except ValueError as e:
        errors.append("attachment is not a protobuf message: %s" % e)


def validate_upload(method, path, headers, body, errors):
    """Returns (event or None, attachment bytes or None)."""
    if method != "POST":
        errors.append("method is %s, not POST" % method)
    if path != PROFILE_PATH:
        errors.append("path is %s" % path)
    if headers.get("dd-evp-origin") != "ddshim":
        errors.append("DD-EVP-ORIGIN is %r, not 'ddshim'" % headers.get("dd-evp-origin"))
    if not headers.get("dd-evp-origin-version"):
        errors.append("DD-EVP-ORIGIN-VERSION missing")
    cid = headers.get("datadog-container-id")
    if cid is not None and not re.match(r"^[0-9a-f-]+$", cid):
        errors.append("Datadog-Container-ID %r does not look like an id" % cid)
    ct = headers.get("content-type", "")
    pp = parse_params(ct)
    if pp is None or pp[0].lower() != "multipart/form-data" or not pp[1].get("boundary"):
        errors.append("Content-Type %r is not multipart/form-data with a boundary" % ct)
        return None, None
    parts = parse_multipart(body, pp[1]["boundary"], errors)
    if parts is None:
        return None, None
    event, attachment = None, None
    expected = {"event": ("event.json", "application/json"),
                "profile.pprof": ("profile.pprof", None)}
    seen = set()
    for n, (ph, data) in enumerate(parts):
        cd = parse_params(ph.get("content-disposition", ""))
        if cd is None or cd[0].lower() != "form-data":
            errors.append("part %d: Content-Disposition %r is not form-data" %
                          (n, ph.get("content-disposition")))
            continue
        name, fname = cd[1].get("name"), cd[1].get("filename")
        if name not in expected:
            errors.append("unexpected part %r" % name)
            continue
        if name in seen:
            errors.append("part %r appears twice" % name)
            continue
        seen.add(name)
        want_fname, want_ct = expected[name]
        if fname != want_fname:
            errors.append("part %r: filename %r, not %r" % (name, fname, want_fname))
        pct = ph.get("content-type")
        if want_ct and (pct is None or pct.split(";")[0].strip().lower() != want_ct):
            errors.append("part %r: Content-Type %r, not %s" % (name, pct, want_ct))
        if name == "event":
            try:
                event = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                errors.append("event.json does not parse: %s" % e)
        else:
            attachment = data
    for name in expected:
        if name not in seen:
            errors.append("part %r missing" % name)
    if event is not None:
        check_event(event, errors)
    if attachment is not None:
        if attachment[:2] != b"\x1f\x8b":
            errors.append("profile.pprof does not start with the gzip magic 1f 8b")
        else:
            try:
                raw = gzip.decompress(attachment)
                check_protobuf(raw, errors)
            except (OSError, EOFError, ValueError) as e:
                errors.append("profile.pprof does not gunzip: %s" % e)
    return event, attachment


# ---- server ------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ddshim-intake"
    state = None  # set in main

    def log_message(self, fmt, *args):
        pass  # the tests read requests.log; stderr stays quiet

    def address_string(self):
        ca = self.client_address
        return ca[0] if isinstance(ca, tuple) and ca else "unix"

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if te == "chunked":
            out = b""
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline(8)
        n = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(n) if n > 0 else b""

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.state.log_request(self.command, self.path, status)

    def fault_delay(self):
        mode = self.state.mode
        if mode == "hang":
            self.state.log_request(self.command, self.path, "hang")
            while self.state.mode == "hang":
                time.sleep(0.05)
            self.close_connection = True
            raise ConnectionAbortedError("dropped on coming back")
        if mode.startswith("slow:"):
            time.sleep(float(mode[5:]))

    def do_GET(self):
        self.fault_delay()
        if self.path.split("?")[0] == "/info":
            self.reply(200, {"version": "7.99.0-ddshim-intake", "endpoints": ENDPOINTS,
                             "client_drop_p0s": True, "config": {}})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        body = self.read_body()
        self.fault_delay()
        path = self.path.split("?")[0]
        if path == PROFILE_PATH:
            self.profile(body)
        elif path == TRACES_PATH:
            self.traces(body)
        else:
            self.reply(404, {"error": "not found"})

    def do_PUT(self):
        body = self.read_body()
        self.fault_delay()
        if self.path.split("?")[0] == TRACES_PATH:
            self.traces(body)
        else:
            self.reply(404, {"error": "not found"})

    def upload_status(self):
        return 500 if self.state.mode == "500" else 200

    def profile(self, body):
        st = self.state
        n = st.next_upload()
        headers = {k.lower(): v for k, v in self.headers.items()}
        errors = []
        for k in ("dd-evp-origin", "dd-evp-origin-version", "datadog-container-id",
                  "content-type"):
            if len(self.headers.get_all(k) or []) > 1:
                errors.append("header %s sent more than once" % k)
        event, attachment = validate_upload(self.command, self.path, headers, body, errors)
        pprof_path = os.path.join(st.out, "upload-%d.pprof.gz" % n)
        write_atomic(pprof_path, attachment if attachment is not None else b"")
        rec = {"ok": not errors, "errors": errors, "headers": headers, "event": event,
               "pprof_path": pprof_path, "size": len(body), "status": self.upload_status()}
        write_atomic(os.path.join(st.out, "upload-%d.json" % n), json.dumps(rec, indent=1))
        self.reply(self.upload_status(), {})

    def traces(self, body):
        st = self.state
        n = st.next_traces()
        headers = {k.lower(): v for k, v in self.headers.items()}
        write_atomic(os.path.join(st.out, "traces-%d.msgpack" % n), body)
        write_atomic(os.path.join(st.out, "traces-%d.json" % n),
                     json.dumps({"method": self.command, "headers": headers,
                                 "body_path": os.path.join(st.out, "traces-%d.msgpack" % n),
                                 "status": self.upload_status()},
                                indent=1))
        self.reply(self.upload_status(), {"rate_by_service": st.rates})


class QuietErrors:
    def handle_error(self, request, client_address):
        # a client that gives up (the shim's timeout) is expected, not news
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class TCPServer(QuietErrors, http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class UnixServer(QuietErrors, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="TCP port (0: any free one)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--unix", help="listen on this Unix socket path instead of TCP")
    ap.add_argument("--port-file", required=True,
                    help="written with the port (or the socket path) once listening")
    ap.add_argument("--out", required=True, help="directory for the captured requests")
    ap.add_argument("--mode", default="ok", help="ok|500|refuse|slow:SECONDS|hang")
    ap.add_argument("--rates", default="{}",
                    help="JSON object answered as rate_by_service to trace uploads")
    a = ap.parse_args()
    try:
        rates = json.loads(a.rates)
    except ValueError:
        rates = None
    if not isinstance(rates, dict):
        ap.error("--rates %r is not a JSON object" % a.rates)
    if not re.match(r"^(ok|500|refuse|hang|slow:\d+(\.\d+)?)$", a.mode):
        ap.error("bad --mode %r" % a.mode)
    os.makedirs(a.out, exist_ok=True)
    # a parent test may die without reaping us: a terminal SIGHUP/SIGTERM ends us
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    st = State(a.out, a.mode, rates)
    Handler.state = st
    back = threading.Event()

    def come_back(*_):
        st.mode = "ok"
        back.set()
    signal.signal(signal.SIGUSR1, come_back)

    if a.unix:
        try:
            os.unlink(a.unix)
        except FileNotFoundError:
            pass
    if a.mode == "refuse":
        # bound but not listening: connect(2) gets ECONNREFUSED, like a dead Agent
        if a.unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(a.unix)
            write_atomic(a.port_file, a.unix + "\n")
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((a.host, a.port))
            write_atomic(a.port_file, "%d\n" % s.getsockname()[1])
            a.port = s.getsockname()[1]
        while not back.is_set():
            signal.pause()
        s.close()
        if a.unix:
            os.unlink(a.unix)

    if a.unix:
        srv = UnixServer(a.unix, Handler)
        if not back.is_set():
            write_atomic(a.port_file, a.unix + "\n")
    else:
        srv = TCPServer((a.host, a.port), Handler)
        write_atomic(a.port_file, "%d\n" % srv.server_address[1])
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
