"""Process life under the shim, from the start: a forking program's child
reports its own pid and profile; an exec'd program is profiled as itself and
never killed by a pending sampling signal; a host with its own SIGPROF handler
(installed before or after the shim took SIGPROF) keeps its handler and its
ticks; bad configuration gives one clear line and the host runs on; an
AT_SECURE process is left alone."""
import json
import os
import re
import shutil
import subprocess

from ddtest import LIB, PROGS, SAN_PRELOAD, Tap, have_go, pprof_raw, pprof_top, profiles_in, run, shim_env, tmpdir

t = Tap()
go = have_go()


def pids_of(files):
    return sorted({int(re.search(r"\.(\d+)\.\d+\.pprof\.gz$", f).group(1)) for f in files})


# ---- fork without exec ----
out = tmpdir()
p = run([os.path.join(PROGS, "forker")], shim_env(out, extra={"DD_SHIM_SAMPLE_HZ": "499"}))
t.ok(p.returncode == 0, "forker exits 0", p.err)
m_parent = re.search(r"parent (\d+)", p.out)
m_child = re.search(r"child (\d+)", p.out)
files = profiles_in(out)
pids = pids_of(files)
want = sorted(int(m.group(1)) for m in (m_parent, m_child) if m)
t.ok(pids == want, "parent and child each write their own profile (pids %s, want %s)" % (pids, want))
if go and m_child and m_parent:
    child_files = [f for f in files if ".%s." % m_child.group(1) in f]
    parent_files = [f for f in files if ".%s." % m_parent.group(1) in f]
    cf, ctotal, ctext = pprof_top(child_files)
    pf, ptotal, _ = pprof_top(parent_files)
    t.ok("child_work" in cf and "parent_work" not in {k for k, v in cf.items() if v[0] > 0.05},
         "the child's profile has child_work, not the parent's samples", ctext)
    raw = pprof_raw(child_files)
    t.ok("process_id:[%s]" % m_child.group(1) in raw, "the child's samples carry its own process_id")
    ev = [f for f in os.listdir(out) if f.endswith(".event.json") and ".%s." % m_child.group(1) in f]
    tags = json.load(open(os.path.join(out, ev[0])))["tags_profiler"] if ev else ""
    pev = [f for f in os.listdir(out) if f.endswith(".event.json") and ".%s." % m_parent.group(1) in f]
    ptags = json.load(open(os.path.join(out, pev[0])))["tags_profiler"] if pev else ""
    rid = lambda s: (re.search(r"runtime-id:([0-9a-f-]+)", s) or [None, None])[1]
    t.ok("process_id:%s" % m_child.group(1) in tags and rid(tags) and rid(tags) != rid(ptags),
         "the child's event.json has its pid and a runtime-id of its own", (tags, ptags))
    t.ok(0.6 <= (ptotal or 0) <= 1.3 and 0.6 <= (ctotal or 0) <= 1.0,
         "parent ~1.1 s and child ~0.8 s of CPU, not double counted (%.2f, %.2f)" % (ptotal or 0, ctotal or 0))
else:
    t.skip("fork profile contents", "go not installed")

# ---- exec: never killed by a pending tick; profiled as itself ----
out = tmpdir()
killed = 0
for i in range(20):
    p = run([os.path.join(PROGS, "execer"), os.path.join(PROGS, "busy"), "50"],
            shim_env(out, extra={"DD_SHIM_SAMPLE_HZ": "10000"}))
    if p.returncode != 0:
        killed += 1
t.ok(killed == 0, "20 exec's at 10000 Hz: no exec'd image killed by a pending signal (%d failed)" % killed)
out = tmpdir()
p = run([os.path.join(PROGS, "execer"), os.path.join(PROGS, "busy"), "1000"], shim_env(out))
t.ok(p.returncode == 0 and "busy: done" in p.out, "execer -> busy completes", p.err)
files = profiles_in(out)
names = sorted(os.path.basename(f).split(".")[0] for f in files)
t.ok(names == ["busy", "execer"] or names == ["busy"],
     "the exec'd image writes its own profile under its own service name (%s)" % names)
if go:
    busy_files = [f for f in files if os.path.basename(f).startswith("busy.")]
    bf, btotal, btext = pprof_top(busy_files)
    t.ok("compute_primes" in bf and "before_exec_work" not in bf,
         "the exec'd program is profiled as itself", btext)
    pre = [f for f in files if os.path.basename(f).startswith("execer.")]
    if pre:
        ef, _, etext = pprof_top(pre)
        t.ok("before_exec_work" in ef, "the pre-exec image's samples are delivered before exec", etext)
    else:
        t.ok(False, "the pre-exec image's samples are delivered before exec", files)

# ---- a host with its own SIGPROF handler and ITIMER_PROF ----
for mode in ("early", "late"):
    base = run([os.path.join(PROGS, "sigprof_host"), mode], shim_env(preload=False))
    out = tmpdir()
    p = run([os.path.join(PROGS, "sigprof_host"), mode], shim_env(out))
    mb = re.search(r"ticks=(\d+) handler_is_mine=(\d)", base.out)
    ms = re.search(r"ticks=(\d+) handler_is_mine=(\d)", p.out)
    ok = p.returncode == 0 and mb and ms and ms.group(2) == "1"
    ticks_b, ticks_s = (int(mb.group(1)) if mb else 0), (int(ms.group(1)) if ms else 0)
    t.ok(ok and ticks_s >= 0.8 * ticks_b and ticks_s > 50,
         "sigprof host (%s): keeps its handler and its ticks (%d with shim, %d without)" % (mode, ticks_s, ticks_b),
         p.out + p.err)
    files = profiles_in(out)
    if go and files:
        f, total, text = pprof_top(files)
        t.ok("host_work" in f and (total or 0) > 0.5,
             "sigprof host (%s): still profiled on another signal (%.2f s)" % (mode, total or 0), text)
    else:
        t.ok(False, "sigprof host (%s): still profiled on another signal" % mode, (files, p.err))

# ---- a host that closes every fd and reuses the numbers ----
out = tmpdir()
p = run([os.path.join(PROGS, "closefds")], shim_env(out, extra={"DD_SHIM_SAMPLE_HZ": "999"}))
t.ok(p.returncode == 0 and p.out.startswith("clean"),
     "a host that closes every fd: nothing of the shim lands in its reused descriptors", p.out + p.err)
files = profiles_in(out)
if go and files:
    f, total, text = pprof_top(files)
    t.ok("daemon_work" in f and (total or 0) >= 0.8,
         "... and it is still profiled after its fds were closed (%.2f s of 1.2)" % (total or 0), text)
else:
    t.ok(False, "... and it is still profiled after its fds were closed", (files, p.err))

# ---- a single-threaded program that needs to stay single-threaded ----
import shutil as _sh
if _sh.which("unshare"):
    base = run(["unshare", "-Ur", "id", "-u"], shim_env(preload=False))
    if base.returncode == 0:
        p = run(["unshare", "-Ur", "id", "-u"], shim_env(tmpdir()))
        t.ok(p.returncode == 0 and p.out == base.out,
             "unshare(CLONE_NEWUSER) works under the shim (its threads step aside)", p.err)
    else:
        t.skip("unshare(CLONE_NEWUSER)", "user namespaces not available here")
else:
    t.skip("unshare(CLONE_NEWUSER)", "unshare(1) not installed")

# ---- bad configuration: one clear line, that part off, host unaffected ----
cases = [
    ({"DD_SHIM_SAMPLE_HZ": "fast"}, "DD_SHIM_SAMPLE_HZ", False),
    ({"DD_SHIM_SAMPLE_HZ": "0"}, "DD_SHIM_SAMPLE_HZ", False),
    ({"DD_PROFILING_ENABLED": "maybe"}, "DD_PROFILING_ENABLED", False),
    ({"DD_TRACE_AGENT_URL": "htp:/nowhere"}, "DD_TRACE_AGENT_URL", True),
    ({"DD_PROFILING_UPLOAD_PERIOD": "-5"}, "DD_PROFILING_UPLOAD_PERIOD", False),
    ({"DD_SHIM_ENABLED": "perhaps"}, "DD_SHIM_ENABLED", False),
]
for extra, var, still_profiles in cases:
    out = tmpdir()
    env = shim_env(out)
    env.update(extra)
    p = run([os.path.join(PROGS, "busy"), "300"], env)
    lines = [l for l in p.err.splitlines() if l.startswith("ddshim:")]
    bad = [l for l in lines if var in l]
    t.ok(p.returncode == 0 and "busy: done" in p.out, "%s=%s: the host runs unaffected" % (var, list(extra.values())[0]), p.err)
    t.ok(len(bad) == 1 and "accepts" in bad[0], "%s bad value: one ddshim: line naming it and what it accepts" % var, p.err)
    files = profiles_in(out)
    t.ok(bool(files) == still_profiles,
         "%s bad value: %s" % (var, "profiles still written locally" if still_profiles else "profiling is off"), files)

# ---- AT_SECURE: a setuid program is left alone ----
sec = tmpdir()
os.chmod(sec, 0o755)
prog = os.path.join(sec, "busy-setuid")
shutil.copy(os.path.join(PROGS, "busy"), prog)
try:
    import pwd
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(prog, nobody, -1)
    os.chmod(prog, 0o4755)
    out = tmpdir()
    os.chmod(out, 0o777)
    # The loader drops LD_PRELOAD paths with slashes for AT_SECURE programs,
    # so load the shim the way /etc/ld.so.preload would: a trusted path.
    libdir = "/usr/lib/x86_64-linux-gnu"
    link = os.path.join(libdir, "libddshim-test-secure.so")
    shutil.copy(LIB, link)
    shutil.copy(os.path.join(os.path.dirname(LIB), "libddshim-agent.so"), os.path.join(libdir, "libddshim-agent.so"))
    os.chmod(link, 0o4755)  # preloading into setuid programs needs the set-user-ID bit on the library
    env = shim_env(out, extra={"DD_SHIM_LOG_LEVEL": "debug"})
    env["LD_PRELOAD"] = "libddshim-test-secure.so"
    if SAN_PRELOAD:
        # SANITIZER=address: the ASan runtime the library needs must come first,
        # and is subject to the same rule (a set-user-ID copy in a trusted path;
        # its soname, libasan.so.8, also satisfies the library's dependency; ASan
        # checks that the first object's name has "libasan.so" in it). And the
        # program is set-group-ID instead, AT_SECURE as well: with euid nobody
        # the runtime could neither read its options from /proc/self/environ
        # nor run LeakSanitizer (ptrace) at exit; with euid root it can.
        san = os.path.join(libdir, "libasan.so.ddshim-test")
        shutil.copy(SAN_PRELOAD.split(":")[0], san)
        os.chmod(san, 0o4755)
        env["LD_PRELOAD"] = "libasan.so.ddshim-test:libddshim-test-secure.so"
        os.chown(prog, 0, pwd.getpwnam("nobody").pw_gid)
        os.chmod(prog, 0o2755)
    # Run by root, a set-user-ID-nobody program has euid != uid: AT_SECURE.
    p = run([prog, "300", "maps"], env)
    maps_ok = p.returncode == 0 and "busy: done" in p.out and "libddshim-test-secure.so" in p.out
    t.ok(maps_ok and not profiles_in(out) and "ddshim:" not in p.err,
         "a setuid (AT_SECURE) process: shim loaded but does nothing (no profile, no log)", p.err)
    os.unlink(link)
    os.unlink(os.path.join(libdir, "libddshim-agent.so"))
    if SAN_PRELOAD:
        os.unlink(san)
except (KeyError, PermissionError, FileNotFoundError) as e:
    t.skip("AT_SECURE process left alone", "needs root: %s" % e)

t.done()
