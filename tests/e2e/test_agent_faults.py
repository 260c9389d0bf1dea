"""The Agent misbehaving (issue 4, item 5), against the example C server under
the shim, with tests/intake.py as the Agent:

- fault modes: absent (nothing on the port), refusing (bound, not listening),
  answering 500, answering after 10 s, accepting and never answering; each
  time the Agent then comes back (intake.py's SIGUSR1, or started late);
- during the outage the server answers every request promptly; what the
  Agent did not take waits in the spool (0600 files in a 0700 directory);
- once the Agent is back, every span of every request arrives exactly once
  (counted against the requests made, span ids unique) and the profiles
  carry the CPU the server burned (read by go tool pprof); the spool ends
  empty; memory high-water stays within a bound of a run with a healthy Agent;
- a process that ends during an outage (SIGTERM while the Agent hangs) exits
  promptly and its last data is spooled; a later process delivers it;
- a small spool bound: the oldest payloads are dropped first, the drop is
  counted in the next profile's comments, and nothing the bound kept is lost.
Figures are printed as TAP comments for the README and the closing note."""
import glob
import gzip
import os
import signal
import stat
import subprocess
import time
import urllib.request

from ddtest import PROGS, SANITIZER, Intake, Tap, have_go, pprof_top, shim_env, tmpdir
from httptest import Server, free_port, intake_spans

t = Tap()
SERVER = os.path.join(PROGS, "http_server")


def get(port, path):
    t0 = time.monotonic()
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        r.read()
        return r.status, time.monotonic() - t0


def good_spans(ik):
    """Spans the intake answered 200 to (a 500'd payload is recorded but was refused)."""
    import json
    import msgpack
    spans = []
    for f in sorted(glob.glob(os.path.join(ik.dir, "traces-*.json"))):
        rec = json.load(open(f))
        if rec.get("status", 200) != 200:
            continue
        for trace in msgpack.unpackb(open(rec["body_path"], "rb").read(), raw=False, strict_map_key=False):
            spans.extend(trace)
    return spans


def good_uploads(ik):
    return [u for u in ik.uploads() if u.get("status", 200) == 200]


def vm_hwm_kb(pid):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    try:
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return None


def spool_files(d):
    return [f for f in os.listdir(d) if not f.startswith(".")] if os.path.isdir(d) else []


def wait_until(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def scenario(mode):
    """One outage then recovery. Returns a dict of figures."""
    port = free_port()
    work = tmpdir("ddshim-faults-")
    spool = os.path.join(work, "spool")
    ik = None
    if mode not in ("absent", "ok"):
        ik = Intake(mode=mode)
    elif mode == "ok":
        ik = Intake()
    agent_port = int(ik.url.rsplit(":", 1)[1]) if ik else free_port()
    env = shim_env(agent="http://127.0.0.1:%d" % agent_port,
                   extra={"DD_SHIM_SPOOL_DIR": spool, "DD_PROFILING_UPLOAD_PERIOD": "2",
                          "DD_SERVICE": "faults"})
    env.pop("DD_SHIM_OUTPUT_DIR", None)
    srv = Server([SERVER, str(port)], env, cwd=work, port=port)
    fig = {"mode": mode}
    made = 0
    slowest = 0.0
    bad = 0
    # the outage: requests with CPU in them, then long enough for two
    # profile periods and several trace flushes to fail
    for i in range(10):
        st, dt = get(port, "/burn?ms=100")
        made += 1
        bad += st != 200
        slowest = max(slowest, dt - 0.1)
        st, dt = get(port, "/users/%d" % i)
        made += 1
        bad += st != 200
        slowest = max(slowest, dt)
    time.sleep(3.5)
    fig["outage_requests"] = made
    fig["slowest_extra_s"] = slowest
    files = spool_files(spool)
    fig["spooled_files"] = len(files)
    modes_ok = os.path.isdir(spool) and stat.S_IMODE(os.stat(spool).st_mode) == 0o700 and all(
        stat.S_IMODE(os.stat(os.path.join(spool, f)).st_mode) == 0o600 for f in files)
    fig["spool_private"] = modes_ok
    fig["readable_files"] = len(glob.glob(os.path.join(work, "ddshim-out", "*")))
    # the Agent comes back
    if mode == "absent":
        ik = Intake(port=agent_port)
    elif mode != "ok":
        ik.come_back()
    for i in range(5):
        st, dt = get(port, "/burn?ms=100")
        bad += st != 200
        st, dt = get(port, "/users/%d" % (100 + i))
        bad += st != 200
        made += 2
    fig["requests"] = made
    fig["bad_answers"] = bad
    wait_until(lambda: len(good_spans(ik)) >= made and not spool_files(spool), 20)
    fig["hwm_kb"] = vm_hwm_kb(srv.proc.pid)
    fig["cpu_s"] = cpu_seconds(srv.proc.pid)
    t0 = time.monotonic()
    srv.stop()
    fig["exit_s"] = time.monotonic() - t0
    time.sleep(0.5)
    spans = good_spans(ik)
    ids = [s["span_id"] for s in spans]
    fig["spans"] = len(spans)
    fig["unique_spans"] = len(set(ids))
    ups = good_uploads(ik)
    fig["uploads_ok"] = all(u["ok"] for u in ups)
    keys = [(u["event"]["tags_profiler"], ) for u in ups]
    fig["duplicate_profiles"] = len(keys) - len(set(keys))
    fig["profiles"] = len(ups)
    fig["profile_cpu_s"] = None
    if have_go() and ups:
        _, total, _ = pprof_top([u["pprof_path"] for u in ups])
        fig["profile_cpu_s"] = total
    fig["spool_left"] = len(spool_files(spool))
    ik.stop()
    return fig


results = {}
# DDSHIM_FAULT_MODES (space separated) runs a subset while developing
for mode in os.environ.get("DDSHIM_FAULT_MODES", "ok absent refuse 500 slow:10 hang").split():
    f = scenario(mode)
    results[mode] = f
    print("# %s" % f)
    name = "Agent %s" % ("healthy" if mode == "ok" else {"absent": "absent", "refuse": "refusing",
                                                         "500": "answering 500", "slow:10": "answering after 10 s",
                                                         "hang": "accepting and never answering"}[mode])
    t.ok(f["bad_answers"] == 0 and f["slowest_extra_s"] < 1.0,
         "%s: the server answers all %d requests, none delayed by the shim (slowest +%.3f s)"
         % (name, f["requests"], f["slowest_extra_s"]))
    if mode != "ok":
        t.ok(f["spooled_files"] > 0 and f["spool_private"],
             "%s: during the outage payloads wait in the spool (%d files, 0600 in a 0700 directory)"
             % (name, f["spooled_files"]))
    t.ok(f["spans"] == f["requests"] and f["unique_spans"] == f["spans"],
         "%s%s: every request's span delivered exactly once (%d requests, %d spans, %d unique)"
         % (name, "" if mode == "ok" else ", then back", f["requests"], f["spans"], f["unique_spans"]))
    if have_go():
        t.ok(f["uploads_ok"] and f["duplicate_profiles"] == 0 and f["profile_cpu_s"] is not None
             and f["profile_cpu_s"] >= 1.5 * 0.9 and f["profile_cpu_s"] <= (f["cpu_s"] or 0) * 1.1 + 0.1,
             "%s: profiles pass the intake's checks, none twice, and hold the CPU burned "
             "(%.2f s in profiles, 1.50 s burned, %.2f s process CPU)"
             % (name, f["profiles"] and (f["profile_cpu_s"] or 0), f["cpu_s"] or 0))
    else:
        t.skip("%s: profiles hold the CPU burned" % name, "go tool pprof not installed")
    t.ok(f["spool_left"] == 0, "%s: the spool ends empty" % name)
    if mode == "500":
        t.ok(f["readable_files"] == 0,
             "%s: an outage of an Agent that answered before goes to the spool only, no ./ddshim-out" % name)
    base = results.get("ok", {}).get("hwm_kb") or 0
    if mode != "ok" and not base:
        t.skip("%s: memory high-water" % name, "no run with a healthy Agent to compare with")
    elif mode != "ok" and SANITIZER == "address":
        # ASan's quarantine keeps up to 256 MB of freed memory: the high-water mark
        # follows what was freed, not what is live (two runs differ by 30+ MB).
        t.skip("%s: memory high-water" % name, "not under ASan (quarantine)")
    elif mode != "ok":
        t.ok(f["hwm_kb"] is not None and f["hwm_kb"] <= base + 16 * 1024,
             "%s: memory high-water %.1f MB vs %.1f MB with a healthy Agent (bound +16 MB)"
             % (name, (f["hwm_kb"] or 0) / 1024.0, base / 1024.0))

# ---- a process that ends while the Agent hangs; a later one delivers its data ----
work = tmpdir("ddshim-faults-")
spool = os.path.join(work, "spool")
ik = Intake(mode="hang")
port = free_port()
env = shim_env(agent=ik.url, extra={"DD_SHIM_SPOOL_DIR": spool, "DD_SERVICE": "faults-exit"})
srv = Server([SERVER, str(port)], env, cwd=work, port=port)
for i in range(20):
    get(port, "/burn?ms=50")
first_pid = srv.proc.pid
t0 = time.monotonic()
srv.stop()
exit_s = time.monotonic() - t0
print("# exit with a hanging Agent: %.3f s" % exit_s)
t.ok(srv.proc.returncode == -signal.SIGTERM and exit_s < 1.5,
     "SIGTERM while the Agent hangs: the server exits in %.3f s (its own exit path, final flush bounded)" % exit_s)
left = spool_files(spool)
t.ok(any(f.endswith(".t") for f in left) and any(f.endswith(".p") for f in left),
     "its final traces and profile are in the spool (%d files)" % len(left))
ik.come_back()
r = subprocess.run([os.path.join(PROGS, "split"), "300", "200"], env=shim_env(agent=ik.url, extra={
    "DD_SHIM_SPOOL_DIR": spool, "DD_SERVICE": "faults-later"}), capture_output=True, timeout=60)
wait_until(lambda: not spool_files(spool), 10)
spans = good_spans(ik)
ups = good_uploads(ik)
pids = sorted({u["event"]["tags_profiler"].split("process_id:")[1].split(",")[0] for u in ups
               if "process_id:" in u["event"]["tags_profiler"]})
t.ok(r.returncode == 0 and len(spans) == 20 and str(first_pid) in pids and not spool_files(spool),
     "a later process (another program) delivers them once the Agent is back: 20/20 spans, "
     "the ended server's profile (process ids %s)" % pids)
ik.stop()

# ---- a small bound: oldest dropped first, drops counted ----
work = tmpdir("ddshim-faults-")
spool = os.path.join(work, "spool")
agent_port = free_port()
port = free_port()
env = shim_env(agent="http://127.0.0.1:%d" % agent_port,
               extra={"DD_SHIM_SPOOL_DIR": spool, "DD_SHIM_SPOOL_MAX_BYTES": "48K",
                      "DD_PROFILING_UPLOAD_PERIOD": "1", "DD_SERVICE": "faults-bound"})
srv = Server([SERVER, str(port)], env, cwd=work, port=port)
biggest = 0
for i in range(8):
    for j in range(40):
        get(port, "/users/%d" % (i * 40 + j))
    get(port, "/burn?ms=30")
    time.sleep(1.1)
    biggest = max(biggest, sum(os.path.getsize(os.path.join(spool, f)) for f in os.listdir(spool))
                  if os.path.isdir(spool) else 0)
made = 8 * 41


def spooled_span_ids(d):
    """Span ids in the spool's trace payloads (header lines, blank line, then the msgpack body)."""
    import msgpack
    ids = set()
    for f in spool_files(d):
        if not f.endswith(".t"):
            continue
        data = open(os.path.join(d, f), "rb").read()
        head, _, rest = data.partition(b"\n\n")
        ev = int([l for l in head.split(b"\n") if l.startswith(b"event ")][0].split()[1])
        for trace in msgpack.unpackb(rest[ev:], raw=False, strict_map_key=False):
            ids.update(sp["span_id"] for sp in trace)
    return ids


kept = spooled_span_ids(spool)
ik = Intake(port=agent_port)
for i in range(3):
    get(port, "/burn?ms=200")
    time.sleep(1.0)
wait_until(lambda: not spool_files(spool), 10)
srv.stop()
time.sleep(0.3)
spans = good_spans(ik)
users = sorted(int(s["meta"]["http.url"].rsplit("/", 1)[1]) for s in spans
               if "/users/" in s.get("meta", {}).get("http.url", ""))
print("# bound 48K: biggest spool %d bytes; %d/%d outage requests delivered; user ids %s..%s"
      % (biggest, len([s for s in spans if "burn?ms=200" not in s.get("meta", {}).get("http.url", "")]),
         made, users[:1], users[-1:]))
t.ok(0 < biggest <= 48 * 1024, "a 48 KB bound holds: the spool never held more (%d bytes at most)" % biggest)
ids = [s["span_id"] for s in spans]
outage = [u for u in users if u >= 0]
t.ok(kept and kept <= set(ids),
     "nothing the bound kept is lost: all %d spans in the spool when the Agent came back were delivered" % len(kept))
t.ok(len(ids) == len(set(ids)) and 0 < len(outage) < 320 and outage == list(range(outage[0], 320)),
     "the oldest payloads were dropped first: the delivered outage spans are the newest %d of 320, none twice"
     % len(outage))
comments = ""
if have_go():
    ups = good_uploads(ik)
    for u in ups:
        try:
            comments += subprocess.run(["go", "tool", "pprof", "-raw", u["pprof_path"]], capture_output=True,
                                       timeout=120, env=__import__("ddtest").go_env()).stdout.decode(errors="replace")
        except subprocess.TimeoutExpired:
            pass
    t.ok("dropped over the byte bound" in comments,
         "the drops are counted in a delivered profile's comments",
         [l for l in comments.splitlines() if "ddshim" in l][:5])
else:
    t.skip("the drops are counted in a delivered profile's comments", "go tool pprof not installed")
ik.stop()
t.done()
