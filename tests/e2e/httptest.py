"""tests/e2e/httptest.py — helpers for the HTTP span tests: start real servers
(nginx, python3 http.server, the example C server, redis) under the shim
against the capture intake, drive them with real clients, and read the spans
back with python3-msgpack (a decoder the project did not write)."""
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import msgpack

from ddtest import LIB, PROGS, ROOT, Intake, shim_env, tmpdir


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def intake_spans(ik):
    """Every span the intake received, decoded by python3-msgpack, with the raw bytes."""
    spans, raw = [], b""
    for f in sorted(glob.glob(os.path.join(ik.dir, "traces-*.msgpack"))):
        data = open(f, "rb").read()
        raw += data
        for trace in msgpack.unpackb(data, raw=False, strict_map_key=False):
            spans.extend(trace)
    return spans, raw


def intake_trace_headers(ik):
    out = []
    for f in sorted(glob.glob(os.path.join(ik.dir, "traces-*.json"))):
        with open(f) as fh:
            out.append(json.load(fh))
    return out


def wait_spans(ik, n, timeout=10.0):
    end = time.time() + timeout
    spans = []
    while time.time() < end:
        spans, _ = intake_spans(ik)
        if len(spans) >= n:
            break
        time.sleep(0.2)
    time.sleep(1.3)  # one more flush: nothing extra may arrive
    spans, _ = intake_spans(ik)
    return spans


class Server:
    """A server process under the shim; stop() ends it with SIGTERM."""

    def __init__(self, argv, env, cwd=None, port=None, wait=True):
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.out, stderr=self.err)
        self.port = port
        if wait and port and not wait_port(port):
            self.stop()
            raise RuntimeError("server did not start: %s" % self.stderr())

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def stop(self, sig=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def nginx_conf(root, port, logdir):
    return """
daemon on;
master_process on;
worker_processes 1;
pid %(log)s/nginx.pid;
error_log %(log)s/error.log warn;
events { worker_connections 256; use epoll; }
http {
    # combined, then $bytes_sent: 0 when not a byte of the response left
    log_format withsent '$remote_addr - $remote_user [$time_local] "$request" '
                        '$status $body_bytes_sent "$http_referer" "$http_user_agent" $bytes_sent';
    access_log %(log)s/access.log withsent;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path %(log)s/body;
    proxy_temp_path %(log)s/proxy;
    fastcgi_temp_path %(log)s/fastcgi;
    uwsgi_temp_path %(log)s/uwsgi;
    scgi_temp_path %(log)s/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        root %(root)s;
        location /error { return 503; }
        location /redirect { return 302 /index.html; }
    }
}
""" % {"log": logdir, "port": port, "root": root}


def raw_request(port, data, read_until_close=False, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    chunks = []
    if read_until_close:
        s.shutdown(socket.SHUT_WR)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
            if not read_until_close and len(b"".join(chunks)) > 0:
                # read a little more for pipelined answers
                s.settimeout(0.5)
    except socket.timeout:
        pass
    s.close()
    return b"".join(chunks)
