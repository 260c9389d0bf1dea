"""Symbols, read back with `go tool pprof`: a C++ method in a namespace
(demangled), an always-inlined function (its own frame, with its file:line,
as `addr2line -i` gives it), a function in a linked shared library, and one in
a library dlopen'd after start. Also: mappings carry build ids."""
import os
import re
import subprocess

from ddtest import PROGS, Tap, have_go, pprof, pprof_raw, pprof_top, profiles_in, run, shim_env, tmpdir

t = Tap()
if not have_go():
    t.skip("symbols", "go not installed")
    t.done()

out = tmpdir()
p = run([os.path.join(PROGS, "symbols"), os.path.join(PROGS, "libdlplugin.so")],
        shim_env(out, extra={"DD_SHIM_SAMPLE_HZ": "999"}))
t.ok(p.returncode == 0, "symbols program runs under the shim", p.err)
files = profiles_in(out)
funcs, total, text = pprof_top(files)
names = set(funcs)


def has(pred):
    return any(pred(n) for n in names)


t.ok(has(lambda n: n.startswith("geometry::Shape::area_sum")), "C++ method in a namespace, demangled", text)
t.ok("inlined_kernel" in " ".join(names), "the inlined function appears as its own frame", text)
t.ok(has(lambda n: n.startswith("outer_caller")), "the inlined function's caller appears too", text)
t.ok("symlib_spin" in names, "a function of a linked shared library", text)
t.ok("plugin_spin" in names, "a function of a library dlopen'd after start", text)

# file:line of the inlined frame, as addr2line -i gives it
src = open(os.path.join(os.environ.get("DDSHIM_ROOT", "."), "tests", "progs", "symbols.cc")).read().splitlines()
want_line = next(i + 1 for i, l in enumerate(src) if "INLINED_LINE" in l)
rc, lines_out, err = pprof(["-lines", "-top", "-nodecount=100000", "-sample_index=cpu-time"], files)
m = re.findall(r"inlined_kernel[^\n]*symbols\.cc:(\d+)", lines_out)
t.ok(str(want_line) in m or str(want_line - 1) in m,
     "the inlined frame carries its source line (symbols.cc:%d; seen %s)" % (want_line, sorted(set(m))[:8]),
     lines_out[:3000])

raw = pprof_raw(files)
exe_bid = subprocess.run(["readelf", "-n", os.path.join(PROGS, "symbols")], capture_output=True, text=True).stdout
bid = re.search(r"Build ID: ([0-9a-f]+)", exe_bid)
t.ok(bid is not None and bid.group(1) in raw, "the executable's mapping carries its build id", raw[-3000:])
t.ok(re.search(r"libsymlib\.so \S*[0-9a-f]{40}", raw) is not None or "libsymlib.so" in raw,
     "the shared library has its own mapping", raw[-3000:])
t.done()
