"""CPU profiles end to end, read back with `go tool pprof` (not our code):
- attribution: split.c's two threads (60/40, unequal loads) at 1999 Hz, each
  function's share within 1.5 points of the truth the program measured itself;
- total: the profile's cpu-time within 5 % of the process's rusage CPU;
- a 2-second program loses nothing: its final profile arrives at exit
  (return from main, exit(), default-disposition SIGTERM);
- file naming and one stderr line saying where the data went;
- CPU spent inside a signal handler, whose samples the shim's walker hands to
  libunwind (made ready by the collector on the first such sample): its
  stacks arrive whole, through the signal frame, on every thread."""
import os
import re
import signal

from ddtest import B, LIB, PROGS, SAN_PRELOAD, Tap, have_go, pprof, pprof_raw, pprof_top, profiles_in, run, shim_env, tmpdir
import json

t = Tap()
if not have_go():
    t.skip("CPU profile tests", "go (golang-go) not installed")
    t.done()

# ---- attribution and total: at least 10,000 samples ----
# The kernel checks CPU-time timers on its tick (CONFIG_HZ=250 here), so a
# thread is sampled at most HZ times per second of its CPU whatever
# DD_SHIM_SAMPLE_HZ asks; each sample carries 1 + overrun periods. 10,000
# samples therefore take ~40 s of CPU (~22 s on two cores).
# On a loaded machine a thread is running at fewer ticks (each sample then
# carries more periods), so the run repeats until 10,000 samples are in; the
# truth is the sum of what each run measured.
files, truth, runs = [], {"alpha_ns": 0, "beta_ns": 0, "rusage_cpu_ns": 0}, 0
nsamples = 0
while nsamples < 10000 and runs < 4:
    out = tmpdir()
    p = run([os.path.join(PROGS, "split"), "26000", "17500"],
            shim_env(out, extra={"DD_SHIM_SAMPLE_HZ": "1999"}))
    runs += 1
    t.ok(p.returncode == 0, "split run %d under the shim (exit 0)" % runs, p.err)
    one = json.loads(p.out.strip().splitlines()[-1])
    for k in truth:
        truth[k] += one[k]
    new = profiles_in(out)
    t.ok(len(new) >= 1, "run %d: a profile file is written to DD_SHIM_OUTPUT_DIR" % runs, os.listdir(out))
    files += new
    samples, _, _ = pprof_top(files, sample_index="cpu-samples")
    nsamples = sum(v[0] for v in samples.values())
funcs, total, text = pprof_top(files)
t.ok(nsamples >= 10000, "at least 10,000 samples taken (%d in %d run(s))" % (nsamples, runs))
a_true = truth["alpha_ns"] / (truth["alpha_ns"] + truth["beta_ns"]) * 100
a = funcs.get("alpha_work", (0, 0))[1]
b = funcs.get("beta_work", (0, 0))[1]
prof_total = total or 0
a_share = a / prof_total * 100 if prof_total else 0
b_share = b / prof_total * 100 if prof_total else 0
print("# truth alpha %.2f%% beta %.2f%%; profile alpha %.2f%% beta %.2f%% (%d samples)" %
      (a_true, 100 - a_true, a_share, b_share, nsamples))
t.ok(abs(a_share - a_true) <= 1.5, "alpha_work share within 1.5 points of truth (%.2f vs %.2f)" % (a_share, a_true), text)
t.ok(abs(b_share - (100 - a_true)) <= 1.5,
     "beta_work share within 1.5 points of truth (%.2f vs %.2f)" % (b_share, 100 - a_true), text)
ru = truth["rusage_cpu_ns"] / 1e9
err = abs(prof_total - ru) / ru * 100
print("# profile cpu-time %.3f s, rusage %.3f s: %.2f %% off" % (prof_total, ru, err))
t.ok(err <= 5.0, "total cpu-time within 5%% of rusage CPU (%.2f%% off)" % err)

raw = pprof_raw(files)
t.ok(re.search(r"thread id:\[\d+\]", raw) is not None, "samples carry a numeric 'thread id' label", raw[:2000])
t.ok("thread name:[split]" in raw, "samples carry the 'thread name' label", raw[:2000])
t.ok(re.search(r"process_id:\[%s\]" % "\\d+", raw) is not None, "samples carry 'process_id'")
t.ok(re.search(r"Period: 500250\b", raw) is not None, "period is 1e9/Hz ns (500250 at 1999 Hz)",
     raw[:600])
t.ok(all(re.match(r"split\.\d+\.\d+\.pprof\.gz$", os.path.basename(f)) for f in files),
     "files are named <service>.<pid>.<seq>.pprof.gz", files)

# ---- a 2-second program loses nothing, whichever way it exits ----
for how, want_rc in (("return", 0), ("exit", 3), ("sigterm", -signal.SIGTERM)):
    out = tmpdir()
    p = run([os.path.join(PROGS, "busy"), "2000", how], shim_env(out))
    t.ok(p.returncode == want_rc, "busy (%s) keeps its exit status %d" % (how, want_rc), p.err)
    files = profiles_in(out)
    ok = len(files) == 1
    total = 0
    if ok:
        funcs, total, _ = pprof_top(files)
        total = total or 0
    t.ok(ok and 1.8 <= total <= 2.2,
         "busy (%s): the final profile arrives at exit with ~2 s of CPU (%.2f s)" % (how, total),
         (files, p.err))
    if how == "return":
        lines = [l for l in p.err.splitlines() if l.startswith("ddshim:")]
        t.ok(len(lines) == 0, "run by hand (stderr not a terminal): nothing on the host's stderr", p.err)
        t.ok("busy: done" in p.out, "host stdout untouched")
        out2 = tmpdir()
        env = shim_env(out2)
        env.pop("LD_PRELOAD")
        if SAN_PRELOAD:  # SANITIZER=address: the runtime the library needs; ddrun keeps it first
            env["LD_PRELOAD"] = SAN_PRELOAD
        q = run([os.path.join(B, "ddrun"), "--lib", LIB, "--", os.path.join(PROGS, "busy"), "300"], env)
        lines = [l for l in q.err.splitlines() if l.startswith("ddshim:")]
        t.ok(q.returncode == 0 and len(lines) == 1 and out2 in lines[0],
             "under ddrun, one stderr line says where profiles go", q.err)

# ---- samples only libunwind walks: CPU inside a signal handler ----
# sigspin: main and 2 threads each spend 600 ms in main_work(), then 600 ms in
# handler_work() inside a SIGUSR1 handler (3.6 s in all, half of it under a
# signal frame, which the walker hands to libunwind).
out = tmpdir()
p = run([os.path.join(PROGS, "sigspin"), "600", "2"],
        shim_env(out, extra={"DD_SHIM_LOG_LEVEL": "info", "DD_TRACE_ENABLED": "false"}))
t.ok(p.returncode == 0 and "sigspin: done" in p.out, "sigspin runs under the shim", p.err[-2000:])
files = profiles_in(out)
funcs, total, top = pprof_top(files) if files else ({}, 0, "")
total = total or 0
hw = funcs.get("handler_work", (0, 0))[1]
mw = funcs.get("main_work", (0, 0))[1]
t.ok(3.0 <= total <= 4.0, "sigspin: the profile has its 3.6 s of CPU (%.2f s)" % total, top[:3000])
t.ok(total > 0 and 0.4 <= hw / total <= 0.6 and 0.4 <= mw / total <= 0.6,
     "sigspin: half in handler_work (%.2f s), half in main_work (%.2f s)" % (hw, mw), top[:3000])
m = re.search(r"walker: (\d+) fallbacks to libunwind", p.err)
t.ok(m is not None and int(m.group(1)) > 0, "sigspin: those samples were walked by libunwind", p.err[-2000:])
# Each handler_work stack goes on through the signal frame to the code it
# interrupted: raise() in main, pthread_kill() in the threads.
rc, traces, err = pprof(["-traces"], files) if files else (1, "", "")
blocks = [b for b in traces.split("-----------+-------------------------------------------------------") if "handler_work" in b]
whole = [b for b in blocks if ("raise" in b or "pthread_kill" in b) and ("main" in b.split("handler_work", 1)[1])]
t.ok(blocks and len(whole) == len(blocks),
     "sigspin: every handler_work stack continues through the signal frame (%d of %d)" % (len(whole), len(blocks)),
     traces[:3000])

# The same after the program made 40 pthread keys before its first such sample:
# libunwind's key (made then, by the collector) must still be in glibc's first
# block of 32, or its samples could not be walked in a handler at all.
out = tmpdir()
p = run([os.path.join(PROGS, "sigspin"), "500", "1", "40"],
        shim_env(out, extra={"DD_SHIM_LOG_LEVEL": "info", "DD_TRACE_ENABLED": "false"}))
files = profiles_in(out)
funcs, total, top = pprof_top(files) if files else ({}, 0, "")
total = total or 0
hw = funcs.get("handler_work", (0, 0))[1]
t.ok(p.returncode == 0 and total > 0 and 0.4 <= hw / total <= 0.6,
     "sigspin after 40 pthread keys: half in handler_work still (%.2f s of %.2f)" % (hw, total), p.err[-2000:] + top[:2000])
t.done()
