"""tests/e2e/ddtest.py — shared helpers for the end-to-end tests: TAP output,
running programs under the shim, the capture intake, and reading profiles with
`go tool pprof` (a reader the project did not write)."""
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.environ.get("DDSHIM_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
B = os.path.join(ROOT, os.environ.get("B", "build"))
LIB = os.environ.get("DDSHIM_LIB") or os.path.join(B, "libddshim.so")
PROGS = os.path.join(B, "progs")
# `make test SANITIZER=address`: libddshim.so needs the ASan runtime, which must be
# the first object in LD_PRELOAD (tests/run.sh sets this; empty otherwise).
SAN_PRELOAD = os.environ.get("DDSHIM_SAN_PRELOAD", "")
SANITIZER = os.environ.get("SANITIZER", "")  # "address", "undefined" or ""


def preload_of(lib):
    """The LD_PRELOAD value that loads lib (and the sanitizer runtime it needs)."""
    return SAN_PRELOAD + ":" + lib if SAN_PRELOAD else lib


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, desc, detail=None):
        self.n += 1
        if cond:
            print("ok %d - %s" % (self.n, desc))
        else:
            self.failed += 1
            print("not ok %d - %s" % (self.n, desc))
            if detail is not None:
                for line in str(detail).splitlines()[:40]:
                    print("#   " + line)
        sys.stdout.flush()
        return cond

    def skip(self, desc, why):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, desc, why))

    def done(self):
        print("1..%d" % self.n)
        sys.exit(1 if self.failed else 0)


def tmpdir(prefix="ddshim-test-"):
    return tempfile.mkdtemp(prefix=prefix)


_SPOOL = None


def _spool_dir():
    global _SPOOL
    if _SPOOL is None:
        _SPOOL = os.path.join(tempfile.mkdtemp(prefix="ddshim-spool-"), "spool")
    return _SPOOL


def shim_env(out_dir=None, agent=None, extra=None, preload=True):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("DD_") or k.startswith("OTEL_"):
            del env[k]
    if preload:
        env["LD_PRELOAD"] = preload_of(LIB)
    if out_dir:
        env["DD_SHIM_OUTPUT_DIR"] = out_dir
    # Nothing listens on port 1: "no Agent" unless a test starts an intake.
    env["DD_TRACE_AGENT_URL"] = agent or "http://127.0.0.1:1"
    # Each test file spools into its own directory, not the machine's /var/tmp.
    env["DD_SHIM_SPOOL_DIR"] = _spool_dir()
    if extra:
        env.update(extra)
    return env


def run(argv, env, timeout=120, **kw):
    t0 = time.monotonic()
    p = subprocess.run(argv, env=env, capture_output=True, timeout=timeout, **kw)
    p.elapsed = time.monotonic() - t0
    p.out = p.stdout.decode(errors="replace")
    p.err = p.stderr.decode(errors="replace")
    return p


def profiles_in(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".pprof.gz")) if os.path.isdir(d) else []


_GO_ENV = None


def go_env():
    global _GO_ENV
    if _GO_ENV is None:
        home = tempfile.mkdtemp(prefix="ddshim-go-")
        _GO_ENV = dict(os.environ, HOME=home, GOCACHE=os.path.join(home, "cache"),
                       GOPATH=os.path.join(home, "gopath"), GOFLAGS="", GOTOOLCHAIN="local",
                       PPROF_TMPDIR=home)
        _GO_ENV.pop("LD_PRELOAD", None)
    return _GO_ENV


def have_go():
    return shutil.which("go") is not None


def pprof(args, files):
    p = subprocess.run(["go", "tool", "pprof", "-symbolize=none"] + args + files, env=go_env(),
                       capture_output=True, timeout=300)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "mins": 60.0, "hrs": 3600.0}


def parse_value(tok):
    m = re.match(r"^([0-9.]+)([a-zµ]*)$", tok)
    if not m:
        return None
    v = float(m.group(1))
    u = m.group(2)
    return v * _UNITS.get(u, 1.0) if u else v


def pprof_top(files, sample_index="cpu-time", extra=None):
    """{function: (flat_seconds, cum_seconds)} and total, read by go tool pprof -top."""
    rc, out, err = pprof(["-top", "-nodecount=100000", "-nodefraction=0", "-edgefraction=0", "-sample_index=" + sample_index] + (extra or []), files)
    if rc != 0:
        raise RuntimeError("go tool pprof failed: " + err)
    funcs = {}
    total = None
    for line in out.splitlines():
        m = re.search(r"of ([0-9.]+[a-zµ]*) total", line)
        if m and total is None:
            total = parse_value(m.group(1))
        parts = line.split()
        if len(parts) >= 6 and parts[1].endswith("%") and parts[4].endswith("%"):
            flat, cum = parse_value(parts[0]), parse_value(parts[3])
            if flat is None or cum is None:
                continue
            name = " ".join(parts[5:])
            f0, c0 = funcs.get(name, (0.0, 0.0))
            funcs[name] = (f0 + flat, c0 + cum)
    return funcs, total, out


def pprof_raw(files):
    rc, out, err = pprof(["-raw"], files)
    if rc != 0:
        raise RuntimeError("go tool pprof -raw failed: " + err)
    return out


class Intake:
    """tests/intake.py in a subprocess: a capture Agent."""

    def __init__(self, mode="ok", unix=None, port=0):
        self.dir = tmpdir("ddshim-intake-")
        portfile = os.path.join(self.dir, "port")
        cmd = ["/usr/bin/python3", os.path.join(ROOT, "tests", "intake.py"), "--out", self.dir,
               "--mode", mode]
        if unix:
            cmd += ["--unix", unix, "--port-file", portfile]
        else:
            cmd += ["--port", str(port), "--port-file", portfile]
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        self.url = None
        while time.time() < deadline:
            if unix and os.path.exists(portfile):
                self.url = "unix://" + unix
                break
            if not unix and os.path.exists(portfile) and open(portfile).read().strip():
                self.url = "http://127.0.0.1:%s" % open(portfile).read().strip()
                break
            time.sleep(0.05)
        if not self.url:
            self.stop()
            raise RuntimeError("intake did not start")

    def uploads(self):
        out = []
        for f in sorted(os.listdir(self.dir)):
            if re.match(r"upload-\d+\.json$", f):
                with open(os.path.join(self.dir, f)) as fh:
                    out.append(json.load(fh))
        out.sort(key=lambda u: u.get("n", 0))
        return out

    def come_back(self):
        """Any fault mode becomes ok (intake.py's SIGUSR1)."""
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
