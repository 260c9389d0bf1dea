"""bench/lib.py — process running, environments, profile reading and
statistics shared by bench/bench.py (python3 stdlib, plus python3-msgpack for
counting spans). Nothing here knows about budgets."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.path.join(ROOT, "build")
LIB = os.path.join(B, "libddshim.so")
PROGS = os.path.join(B, "progs")
BB = os.path.join(B, "bench")
DDRUN = os.path.join(B, "ddrun")                        # what users run (ddrun/ddrun.c)
DDRUN_SCRIPT = os.path.join(ROOT, "scripts", "ddrun")   # the checkout's forwarder to it
INTAKE = os.path.join(ROOT, "tests", "intake.py")
PY = "/usr/bin/python3"


def find_libprofiler():
    for p in ("/usr/lib/x86_64-linux-gnu/libprofiler.so.0", "/usr/lib/x86_64-linux-gnu/libprofiler.so",
              "/usr/lib/libprofiler.so.0"):
        if os.path.exists(p):
            return p
    return None


LIBPROFILER = find_libprofiler()
NCPU = os.cpu_count() or 1
# The measured program runs on the last CPU, load generators and intakes on CPU 0.
PIN = str(NCPU - 1) if NCPU > 1 else None
GEN = "0" if NCPU > 1 else None

# One private temporary root for the whole run (0700: the shim refuses
# world-writable output directories it does not own).
T = tempfile.mkdtemp(prefix="ddshim-bench-")


def tmp(name):
    d = tempfile.mkdtemp(prefix=name + "-", dir=T)
    return d


def cleanup():
    shutil.rmtree(T, ignore_errors=True)


# ---- environments ------------------------------------------------------------

BASE = {k: v for k, v in os.environ.items()
        if not (k.startswith("DD_") or k.startswith("OTEL_") or k.startswith("CPUPROFILE")
                or k in ("LD_PRELOAD", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"))}


class Env:
    """An environment plus the variables it adds, for printing the command."""

    def __init__(self, delta=None):
        self.delta = dict(delta or {})
        self.env = dict(BASE)
        self.env.update(self.delta)


def plain():
    return Env()


def shim(out=None, agent=None, **kw):
    """The shim's environment: with an Agent (an intake's URL), as in
    production (no output directory: DD_SHIM_OUTPUT_DIR would *also* write
    every span as JSON); without one, nothing listens at the Agent URL and
    profiles and spans go to OUT."""
    d = {"LD_PRELOAD": LIB, "DD_SHIM_LOG_LEVEL": "error"}
    if agent:
        d["DD_TRACE_AGENT_URL"] = agent
    else:
        d["DD_TRACE_AGENT_URL"] = "http://127.0.0.1:1"
        d["DD_SHIM_OUTPUT_DIR"] = out or tmp("out")
    d.update({k: str(v) for k, v in kw.items()})
    return Env(d)


def gperf(prof, hz):
    return Env({"LD_PRELOAD": LIBPROFILER, "CPUPROFILE": prof, "CPUPROFILE_FREQUENCY": str(hz)})


def short(s):
    s = str(s)
    s = s.replace(T, "$T")
    s = s.replace(ROOT + "/", "")
    return s


def sh_quote(s):
    s = short(s)
    if re.match(r"^[A-Za-z0-9_./:$=,@%+-]+$", s):
        return s
    return "'" + s.replace("'", "'\\''") + "'"


def cmdline(argv, env=None, pin=None):
    parts = []
    if env is not None:
        for k, v in env.delta.items():
            parts.append("%s=%s" % (k, sh_quote(v)))
    if pin is not None:
        parts += ["taskset", "-c", pin]
    parts += [sh_quote(a) for a in argv]
    return " ".join(parts)


def pinned(argv, pin):
    return (["taskset", "-c", pin] + argv) if pin is not None else argv


def pin_to(pin):
    """A preexec_fn that pins the child to CPU list PIN ("1" or "0-1") before
    it execs, so that no taskset process runs under the profiler being
    measured: an LD_PRELOAD'ed profiler would start in taskset too, and
    gperftools' ITIMER_PROF, which survives exec, killed ~1 run in 3 at 999 Hz
    with SIGPROF before libprofiler was loaded in the new image."""
    if pin is None:
        return None
    cpus = set()
    for part in str(pin).split(","):
        a, _, b = part.partition("-")
        cpus.update(range(int(a), int(b or a) + 1))
    return lambda: os.sched_setaffinity(0, cpus)


# ---- running -----------------------------------------------------------------


class Result:
    pass


def run(argv, env=None, pin=None, timeout=900, during=None):
    """Run to completion; CPU from wait4's rusage (the process and every
    descendant it waited for), wall from CLOCK_MONOTONIC. `during(pid)` is
    called in a thread while it runs (for /proc sampling)."""
    env = env or plain()
    out = tempfile.TemporaryFile(dir=T)
    err = tempfile.TemporaryFile(dir=T)
    t0 = time.monotonic_ns()
    p = subprocess.Popen(argv, env=env.env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                         cwd=T, preexec_fn=pin_to(pin))
    killer = threading.Timer(timeout, lambda: _kill(p.pid))
    killer.start()
    th = None
    r = Result()
    r.during = None
    if during:
        def _d():
            try:
                r.during = during(p.pid)
            except Exception as e:  # the process may be gone
                r.during = e
        th = threading.Thread(target=_d)
        th.start()
    _, st, ru = os.wait4(p.pid, 0)
    t1 = time.monotonic_ns()
    killer.cancel()
    p.returncode = os.waitstatus_to_exitcode(st)
    if th:
        th.join()
    out.seek(0)
    err.seek(0)
    r.rc = p.returncode
    r.out = out.read().decode(errors="replace")
    r.err = err.read().decode(errors="replace")
    r.wall = (t1 - t0) / 1e9
    r.end_ns = t1
    r.cpu = ru.ru_utime + ru.ru_stime
    r.maxrss_kb = ru.ru_maxrss
    r.cmd = cmdline(argv, env, pin)
    return r


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") or line.startswith("["):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


# ---- /proc ---------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_ticks(pid):
    """utime+stime of the whole process (all threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu_sched(pid):
    """Sum of the live threads' on-CPU ns (/proc/PID/task/*/schedstat), in seconds."""
    tot = 0
    for f in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(f) as fh:
                tot += int(fh.read().split()[0])
        except (OSError, ValueError):
            pass
    return tot / 1e9


def proc_status(pid):
    d = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads", "RssAnon", "RssFile", "RssShmem"):
                d[k] = int(v.split()[0])
    return d


def threads_cpu(pid):
    """{tid: (name, on-CPU seconds)} of a process's live threads (schedstat, ns)."""
    d = {}
    for t in glob.glob("/proc/%d/task/*" % pid):
        try:
            with open(t + "/comm") as f:
                name = f.read().strip()
            with open(t + "/schedstat") as f:
                ns = int(f.read().split()[0])
            d[int(os.path.basename(t))] = (name, ns / 1e9)
        except (OSError, ValueError):
            pass
    return d


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cpu_busy_snapshot():
    """(busy, total, steal) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    steal = v[7] if len(v) > 7 else 0
    return sum(v) - idle, sum(v), steal


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


# ---- profiles ------------------------------------------------------------------

_GOENV = None


def go_env():
    global _GOENV
    if _GOENV is None:
        home = tmp("gohome")
        _GOENV = dict(BASE, HOME=home, GOCACHE=os.path.join(home, "cache"), GOPATH=os.path.join(home, "gopath"),
                      GOFLAGS="", GOTOOLCHAIN="local", PPROF_TMPDIR=home)
    return _GOENV


def pprof(args, files, symbolize_none=True):
    cmd = ["go", "tool", "pprof"] + (["-symbolize=none"] if symbolize_none else []) + args + files
    p = subprocess.run(cmd, env=go_env(), capture_output=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("go tool pprof failed: %s" % p.stderr.decode(errors="replace")[-2000:])
    return p.stdout.decode(errors="replace")


def profiles(d):
    return sorted(glob.glob(os.path.join(d, "*.pprof.gz")))


COMMENT_RE = re.compile(r"ddshim: (\d+) samples, signal handler (\d+) ns per sample \(mean\)")


def shim_comments(files):
    """[(samples, handler_ns_mean)] over the shim's profile files, and the
    sample-weighted mean handler ns."""
    rows = []
    for f in files:
        raw = pprof(["-raw"], [f])
        for m in COMMENT_RE.finditer(raw):
            rows.append((int(m.group(1)), int(m.group(2))))
    n = sum(r[0] for r in rows)
    mean = sum(r[0] * r[1] for r in rows) / n if n else None
    return n, mean, rows


def comment_lines(files):
    out = []
    for f in files:
        for line in pprof(["-raw"], [f]).splitlines():
            if line.startswith("Comment:"):
                out.append(line[len("Comment:"):].strip())
    return out


def top_shares(text):
    """{function: flat%} from `go tool pprof -top` output."""
    shares = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1].endswith("%") and parts[4].endswith("%"):
            try:
                pct = float(parts[1].rstrip("%"))
            except ValueError:
                continue
            name = " ".join(parts[5:])
            shares[name] = shares.get(name, 0.0) + pct
    return shares


def perf_shares(text):
    """{symbol: self%} from `perf report --no-children --sort sym --stdio -g none`."""
    shares = {}
    for line in text.splitlines():
        m = re.match(r"^\s+([0-9.]+)%\s+\[[.k]\]\s+(.+?)\s*$", line)
        if m:
            shares[m.group(2)] = shares.get(m.group(2), 0.0) + float(m.group(1))
    return shares


def distinct_stacks(files):
    """Distinct location lists among the samples of pprof files (labels ignored)."""
    stacks = set()
    for f in files:
        raw = pprof(["-raw"], [f])
        in_samples = False
        for line in raw.splitlines():
            if line.startswith("Samples:"):
                in_samples = True
                continue
            if line.startswith("Locations"):
                in_samples = False
            if in_samples:
                m = re.match(r"^\s+\d+\s+\d+:\s+([0-9 ]+)$", line.rstrip() + " ")
                if m:
                    stacks.add(tuple(m.group(1).split()))
    return len(stacks)


# ---- servers -------------------------------------------------------------------


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Intake:
    """tests/intake.py (a capture Agent) in a subprocess, pinned to the load CPU."""

    def __init__(self, mode="ok"):
        self.dir = tmp("intake")
        portfile = os.path.join(self.dir, "port")
        cmd = pinned([PY, INTAKE, "--port", "0", "--port-file", portfile, "--out", self.dir, "--mode", mode], GEN)
        self.proc = subprocess.Popen(cmd, env=dict(BASE), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = None
        deadline = time.time() + 15
        while time.time() < deadline:
            if os.path.exists(portfile):
                p = open(portfile).read().strip()
                if p:
                    self.url = "http://127.0.0.1:%s" % p
                    break
            time.sleep(0.05)
        if not self.url:
            self.stop()
            raise RuntimeError("intake did not start")

    def trace_files(self):
        return sorted(glob.glob(os.path.join(self.dir, "traces-*.msgpack")))

    def trace_bytes(self):
        return sum(os.path.getsize(f) for f in self.trace_files())

    def uploads(self):
        out = []
        for f in glob.glob(os.path.join(self.dir, "upload-*.json")):
            with open(f) as fh:
                out.append(json.load(fh))
        return out

    def count_spans(self):
        try:
            import msgpack
        except ImportError:
            return None
        n = 0
        for f in self.trace_files():
            with open(f, "rb") as fh:
                traces = msgpack.unpackb(fh.read(), raw=False, strict_map_key=False)
            for tr in traces:
                n += len(tr)
        return n

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- statistics -------------------------------------------------------------------


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    """(min, max) of a list, for the noise column."""
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)
