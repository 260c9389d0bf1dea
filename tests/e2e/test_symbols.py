"""Symbols, read back with `go tool pprof`: a C++ method in a namespace
(demangled), an always-inlined function (its own frame, with its file:line,
as `addr2line -i` gives it), a function in a linked shared library, and one in
a library dlopen'd after start. Also: mappings carry build ids.

DD_SHIM_DWARF_MAX_BYTES: an object whose DWARF is over it keeps its function
names (from its symbol table) but loses file:line and inlined frames, and the
profile's comments name it; objects under it keep their lines; 0 reads no
DWARF at all. With the default (4 MB), libc's frames keep their names whether
or not libc6-dbg's larger DWARF is installed.

The vDSO: clock_gettime's helpers inside it have no symbol; their frames are
named "[vdso]", never left as bare addresses."""
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

# default limit: libc named from its symbol table when libc6-dbg's DWARF is there
t.ok("__libc_start_call_main" in names and not has(lambda n: "@" in n or n.startswith("0x")),
     "libc's frames keep their names, without @VERSION", text)
libc = next((l.split()[-1] for l in open("/proc/self/maps") if "/libc.so" in l), None)
libc_bid = re.search(r"Build ID: ([0-9a-f]+)", subprocess.run(["readelf", "-n", libc], capture_output=True, text=True).stdout) if libc else None
dbg = "/usr/lib/debug/.build-id/%s/%s.debug" % (libc_bid.group(1)[:2], libc_bid.group(1)[2:]) if libc_bid else None
comments = [l for l in raw.splitlines() if l.startswith("Comment:")]
if dbg and os.path.exists(dbg) and os.path.getsize(dbg) > (1 << 20):
    t.ok(any("libc.so" in c and "symbol table only" in c and dbg in c for c in comments),
         "the profile's comments say libc was named from its symbol table (%s)" % dbg, "\n".join(comments))
else:
    t.skip("comment naming libc", "libc6-dbg not installed")
t.ok(not any("symbols named from" in c or "libsymlib" in c for c in comments),
     "objects under the limit are not in those comments", "\n".join(comments))
exe_bid = subprocess.run(["readelf", "-n", os.path.join(PROGS, "symbols")], capture_output=True, text=True).stdout
bid = re.search(r"Build ID: ([0-9a-f]+)", exe_bid)
t.ok(bid is not None and bid.group(1) in raw, "the executable's mapping carries its build id", raw[-3000:])
t.ok(re.search(r"libsymlib\.so \S*[0-9a-f]{40}", raw) is not None or "libsymlib.so" in raw,
     "the shared library has its own mapping", raw[-3000:])


def limited(limit):
    """symbols under DD_SHIM_DWARF_MAX_BYTES=limit for 1.5 s (the libraries'
    functions take a few % of it; at 250 samples/s that is enough to see them): its top names,
    the file:line pairs of the -lines view, its comments."""
    o = tmpdir()
    q = run([os.path.join(PROGS, "symbols"), os.path.join(PROGS, "libdlplugin.so"), "1500"],
            shim_env(o, extra={"DD_SHIM_SAMPLE_HZ": "999", "DD_SHIM_DWARF_MAX_BYTES": limit,
                               "DD_SHIM_LOG_LEVEL": "info", "DD_PROFILING_UPLOAD_PERIOD": "1"}))
    fs = profiles_in(o)
    fn, _, txt = pprof_top(fs) if fs else ({}, None, "")
    _, lines_txt, _ = pprof(["-lines", "-top", "-nodecount=100000", "-sample_index=cpu-time"], fs) if fs else (0, "", "")
    cm = [l for l in pprof_raw(fs).splitlines() if l.startswith("Comment:")] if fs else []
    return q, set(fn), txt, lines_txt, cm, q.err, len(fs)


# 2K: symbols' own DWARF (~5 KB) is over it, libsymlib's and the plugin's (<1 KB) are not
q, nm, txt, lt, cm, err, nprof = limited("2K")
t.ok(q.returncode == 0, "symbols runs with DD_SHIM_DWARF_MAX_BYTES=2K", err)
t.ok(any(n.startswith("geometry::Shape::area_sum") for n in nm) and any(n.startswith("outer_caller") for n in nm)
     and "symlib_spin" in nm and "plugin_spin" in nm,
     "2K: every function still named (C++ demangled, from .symtab)", txt)
t.ok(not any("inlined_kernel" in n for n in nm), "2K: no inlined frame for the program over the limit", txt)
t.ok(re.search(r"symbols\.cc:\d+", lt) is None, "2K: no file:line for the program over the limit", lt[:3000])
t.ok(re.search(r"symlib_spin \S*libsymlib\.c:\d+", lt) is not None and re.search(r"plugin_spin \S*libdlplugin\.c:\d+", lt) is not None,
     "2K: the libraries under the limit keep their lines", lt[:3000])
t.ok(any("/symbols named from its symbol table only" in c for c in cm) and not any("libsymlib" in c for c in cm),
     "2K: the comments name the program, not the libraries under the limit", "\n".join(cm))
t.ok(nprof >= 2 and err.count("/symbols named from its symbol table only") == 1,
     "2K: the log says it once (info) over %d profiles" % nprof, err)

q, nm, txt, lt, cm, err, nprof = limited("0")
t.ok(q.returncode == 0 and any(n.startswith("geometry::Shape::area_sum") for n in nm) and "symlib_spin" in nm
     and "plugin_spin" in nm and any(n.startswith("outer_caller") for n in nm),
     "0: every function still named", txt)
t.ok(not any("inlined_kernel" in n for n in nm) and re.search(r"\.(cc|c):\d+", lt) is None,
     "0: no DWARF read anywhere: no inlined frame, no file:line", lt[:3000])
t.ok(all(any(x + " named from its symbol table only" in c and "DD_SHIM_DWARF_MAX_BYTES=0" in c for c in cm)
         for x in ("/symbols", "/libsymlib.so", "/libdlplugin.so")),
     "0: the comments name each object that has DWARF", "\n".join(cm))

# ---- the vDSO: a loop of clock_gettime(CLOCK_MONOTONIC), which never leaves it ----
work = tmpdir()
src = os.path.join(work, "clk.c")
with open(src, "w") as f:
    f.write("#include <stdio.h>\n#include <time.h>\nint main(void) { struct timespec t; long long s = 0;\n"
            "for (long i = 0; i < 15000000; i++) { clock_gettime(CLOCK_MONOTONIC, &t); s += t.tv_nsec; }\n"
            "printf(\"%lld\\n\", s & 1); return 0; }\n")
clk = os.path.join(work, "clk")
cc = subprocess.run(["gcc", "-O2", "-o", clk, src], capture_output=True)
if cc.returncode != 0:
    t.skip("vDSO frames", "gcc failed: " + cc.stderr.decode(errors="replace")[:200])
else:
    out = tmpdir()
    p = run([clk], shim_env(out, extra={"DD_SHIM_SAMPLE_HZ": "999"}))
    files = profiles_in(out)
    vf, vtotal, vtext = pprof_top(files) if files else ({}, 0, "")
    bare = {n: v for n, v in vf.items() if re.match(r"0x[0-9a-f]+$", n)}
    t.ok(p.returncode == 0 and vf.get("[vdso]", (0, 0))[0] > 0 and "__vdso_clock_gettime" in vf,
         "vDSO: samples inside clock_gettime's helpers are named [vdso], under __vdso_clock_gettime", vtext[:2000])
    t.ok(not bare, "vDSO: no frame is left as a bare address (%s)" % sorted(bare)[:5], vtext[:2000])
t.done()
