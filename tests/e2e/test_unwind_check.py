"""The shim's stack walker (preload/unwind.c) gives the same stacks as libunwind.

Each program runs under the shim with DDSHIM_UNWIND_CHECK=1: every sample the
walker takes is also walked by libunwind's unw_backtrace on the same stopped
stack, frame by frame (same pcs, same number of frames, same truncation), and
the shim logs at exit "unwind check: N walks compared with libunwind, M
differ" (and the first difference). Programs: deep recursion without and with
frame pointers (at 32 frames and beyond the 128 kept), two threads, C++ with a
shared library and a dlopen'd one, the loader busy in a loop, Python, perl,
gzip and bzip2 from Debian (code the project did not build)."""
import os
import re
import shutil
import subprocess

from ddtest import PROGS, ROOT, Tap, run, shim_env, tmpdir

t = Tap()
CHECK_RE = re.compile(r"unwind check: (\d+) walks compared with libunwind, (\d+) differ")
STATS_RE = re.compile(r"signal handler: (\d+) samples.*walker: (\d+) fallbacks to libunwind")

work = tmpdir()
deep_fp = os.path.join(work, "deep-fp")
cc = subprocess.run(["gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-o", deep_fp,
                     os.path.join(ROOT, "tests", "progs", "deep.c")], capture_output=True)
if cc.returncode != 0:
    deep_fp = None

plugin = os.path.join(PROGS, "libdlplugin.so")
cases = [
    ("deep, 32 frames, no frame pointers", [os.path.join(PROGS, "deep"), "32", "1500"], 100),
    ("deep, 200 frames (beyond the 128 kept)", [os.path.join(PROGS, "deep"), "200", "1000"], 50),
    ("split, two threads", [os.path.join(PROGS, "split"), "900", "600"], 100),
    ("symbols (C++, a shared library, a dlopen'd one)", [os.path.join(PROGS, "symbols"), plugin], 20),
    ("dlloop (dlopen/dlclose in a loop while sampled)", [os.path.join(PROGS, "dlloop"), plugin, "3"], 50),
    ("python3", ["/usr/bin/python3", "-c",
                 "import json, re, time\n"
                 "t = time.process_time()\n"
                 "while time.process_time() - t < 1.5:\n"
                 "    json.loads(json.dumps({'a': [1, 2, {'b': 'c' * 50}] * 20})); re.findall(r'(a|b)+c', 'ab' * 40)\n"],
     50),
    # (coreutils close stderr before exit: the check's line would be lost)
    ("perl (Debian's)", ["/usr/bin/perl", "-e",
                         "my %h; for my $i (1..1500000) { $h{$i % 5000} .= chr(65 + $i % 26); } "
                         "my $s = join('', sort values %h); print length($s), qq(\\n);"], 10),
    ("bzip2 (Debian's)", ["sh", "-c", "head -c 4000000 /dev/urandom | bzip2 -9 | wc -c"], 10),
    ("gzip (Debian's)", ["sh", "-c", "head -c 20000000 /dev/zero | gzip -9 | wc -c"], 10),
]
if deep_fp:
    cases.insert(1, ("deep, 32 frames, frame pointers", [deep_fp, "32", "1500"], 100))
else:
    t.skip("deep built with frame pointers", "gcc failed: " + cc.stderr.decode(errors="replace")[:200])

for name, argv, min_walks in cases:
    if not os.path.exists(argv[0]) and not shutil.which(argv[0]):
        t.skip(name, "%s not built" % argv[0])
        continue
    out = tmpdir()
    env = shim_env(out, extra={"DDSHIM_UNWIND_CHECK": "1", "DD_SHIM_LOG_LEVEL": "info",
                               "DD_SHIM_SAMPLE_HZ": "999", "DD_TRACE_ENABLED": "false"})
    p = run(argv, env, timeout=120)
    t.ok(p.returncode == 0, "%s: runs under the shim in check mode (exit 0)" % name, p.err[-2000:])
    checks = [(int(a), int(b)) for a, b in CHECK_RE.findall(p.err)]
    compared = sum(c[0] for c in checks)
    differ = sum(c[1] for c in checks)
    stats = STATS_RE.findall(p.err)
    samples = sum(int(s[0]) for s in stats)
    fallbacks = sum(int(s[1]) for s in stats)
    print("# %s: %d walks compared, %d differ; %d samples, %d walked by libunwind (fallback)" %
          (name, compared, differ, samples, fallbacks))
    diff_lines = [line for line in p.err.splitlines() if "first difference" in line]
    t.ok(differ == 0, "%s: every walk equals libunwind's (%d compared)" % (name, compared), "\n".join(diff_lines))
    t.ok(compared >= min_walks, "%s: at least %d walks compared (%d)" % (name, min_walks, compared), p.err[-2000:])
    shutil.rmtree(out, ignore_errors=True)

shutil.rmtree(work, ignore_errors=True)
t.done()
