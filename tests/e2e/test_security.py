"""Security (issue 4 item 6), end to end, with real programs under the shim:
- files the shim creates are 0600 and the directories it creates 0700, even
  under umask 000 (pprof.gz, event.json, traces.jsonl, the spool's payloads;
  a nested DD_SHIM_OUTPUT_DIR, the default ./ddshim-out, DD_SHIM_SPOOL_DIR);
- a symlink planted where the shim will write — the profile's final name, its
  temporary names, traces.jsonl, the output directory and the spool directory
  themselves (with and without a trailing slash) — is never followed: its
  target stays untouched;
- a traces.jsonl name taken by another user's file, or by a hard link to one
  of ours, is never appended to;
- an output directory that is world-writable and someone else's, or a shared
  sticky one like /tmp (even our own), is refused with one clear ddshim: line
  naming it, nothing is written, and the host's output and status are those
  it has without the shim;
- setuid and file-capability (AT_SECURE) programs: the shim is mapped but
  leaves no file, starts no thread and writes no stderr line. Injection both
  through /etc/ld.so.preload and through LD_PRELOAD (a library name in the
  trusted directory, set-user-ID as the loader demands): each case runs in a
  private mount namespace (`unshare --mount`) where /etc and the library
  directory are overlays, so nothing outside the test ever sees the injection.
  The privilege change is real: `setpriv` (run with the shim switched off)
  makes the user nobody, who then executes a set-user-ID-root copy or a
  cap_net_bind_service+ep copy of build/progs/secprobe; and root executes a
  set-user-ID-nobody copy. Two control runs (the same injection, no privilege
  change) must show the shim at work, so these checks can fail;
- close-on-exec: while the shim holds its connection to the Agent (the
  intake in "hang" mode, over TCP and a Unix socket) and libunwind's pipe, the
  host starts a child with posix_spawn and with fork+execve: the child has
  exactly the descriptors the host meant it to have (0, 1, 2 and one
  /dev/null opened without O_CLOEXEC);
- no secret reaches any output: Authorization, Cookie, Proxy-Authorization
  and Set-Cookie (even listed in DD_TRACE_HEADER_TAGS), query values such as
  token=, password=, api_key=, a user:password@ in an absolute-form request
  target, and credentials in DD_TRACE_AGENT_URL never appear in the spans the
  Agent gets, in traces.jsonl, in event.json or the profiles (uploaded or
  written), or in the shim's stderr at DD_SHIM_LOG_LEVEL=debug.
Needs root (chown, setcap, unshare); cases that cannot run say why (SKIP)."""
import atexit
import glob
import gzip
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

from ddtest import B, LIB, PROGS, ROOT, Intake, Tap, shim_env, tmpdir
import httptest
from httptest import intake_spans

t = Tap()
CREATED = []
NOBODY = 65534
ROOT_USER = os.geteuid() == 0
T0 = time.monotonic()


def tmp(prefix="ddshim-security-"):
    d = tmpdir(prefix)
    CREATED.append(d)
    return d


@atexit.register
def _cleanup():  # also when a check raises
    for d in CREATED:
        shutil.rmtree(d, ignore_errors=True)


def intake(**kw):
    ik = Intake(**kw)
    CREATED.append(ik.dir)
    return ik


def ensure(name):
    path = os.path.join(PROGS, name)
    subprocess.run(["make", "-s", "B=" + os.path.relpath(B, ROOT), os.path.relpath(path, ROOT)], cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


SECPROBE = ensure("secprobe")
BUSY = ensure("busy")
HTTP_SERVER = ensure("http_server")


def mode_of(p):
    return stat.S_IMODE(os.lstat(p).st_mode)


def read(p, binary=False):
    with open(p, "rb" if binary else "r") as f:
        return f.read()


def write(p, data, mode=None):
    with open(p, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    if mode is not None:
        os.chmod(p, mode)


def shim_lines(err):
    return [l for l in err.splitlines() if l.startswith("ddshim:")]


def run(argv, env, cwd=None, preexec_fn=None, timeout=60):
    p = subprocess.run(argv, env=env, cwd=cwd, preexec_fn=preexec_fn, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    p.out = p.stdout.decode(errors="replace")
    p.err = p.stderr.decode(errors="replace")
    return p


def nopid(s):
    return re.sub(r"pid=\d+", "pid=N", s)


class HttpServer(httptest.Server):
    """examples/http_server under the shim on a free port (from its port file);
    stop() and stderr() are httptest.Server's."""

    def __init__(self, env, cwd=None, preexec_fn=None):
        self.dir = tmp("ddshim-security-srv-")
        pf = os.path.join(self.dir, "port")
        self.out = open(os.devnull, "w+b")
        self.err = open(os.path.join(self.dir, "stderr"), "w+b")
        self.proc = subprocess.Popen([HTTP_SERVER, "0", "--port-file", pf], env=env, cwd=cwd, preexec_fn=preexec_fn,
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err)
        self.port = None
        end = time.time() + 10
        while time.time() < end and self.proc.poll() is None:
            if os.path.exists(pf) and read(pf).strip():
                self.port = int(read(pf))
                break
            time.sleep(0.02)
        if not self.port:
            self.stop()
            raise RuntimeError("http_server did not start: " + self.stderr())

    def get(self, path):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        return data


def serve_a_little(env, cwd=None, preexec_fn=None):
    """http_server under the shim: 3 requests (one burns 150 ms of CPU), a
    traces flush, then SIGTERM (the final profile). Returns (rc, stderr, pid)."""
    srv = HttpServer(env, cwd=cwd, preexec_fn=preexec_fn)
    srv.get("/")
    srv.get("/burn?ms=150")
    srv.get("/users/7")
    time.sleep(1.4)  # traces are flushed every second
    rc = srv.stop()
    return rc, srv.stderr(), srv.proc.pid


def umask0():
    os.umask(0)


_last = [time.monotonic(), None]


def section(name):
    """Prints how long the previous section took (information only)."""
    now = time.monotonic()
    if _last[1]:
        print("# %s: %.1f s" % (_last[1], now - _last[0]))
    _last[0], _last[1] = now, name


# ===================================================================== file modes
section('file modes')
out_root = tmp()
outdir = os.path.join(out_root, "new", "a", "b")
spool = os.path.join(out_root, "spool")  # the Agent is absent: payloads are also spooled for it
rc, err, pid = serve_a_little(shim_env(outdir, extra={"DD_SERVICE": "modes", "DD_SHIM_SPOOL_DIR": spool}),
                              preexec_fn=umask0)
files = sorted(os.listdir(outdir)) if os.path.isdir(outdir) else []
kinds = {k: [f for f in files if f.endswith(k)] for k in (".pprof.gz", ".event.json", ".traces.jsonl")}
modes = {f: oct(mode_of(os.path.join(outdir, f))) for f in files}
dirs = [os.path.join(out_root, "new"), os.path.join(out_root, "new", "a"), outdir]
dmodes = [oct(mode_of(d)) if os.path.exists(d) else None for d in dirs]
t.ok(all(kinds.values()) and all(m == "0o600" for m in modes.values()),
     "umask 000: every file the shim writes (pprof.gz, event.json, traces.jsonl) is 0600",
     "files and modes: %s\nstderr: %s" % (modes, err))
t.ok(dmodes == ["0o700"] * 3, "umask 000: the directories it creates for DD_SHIM_OUTPUT_DIR (3 levels) are 0700 (%s)" % dmodes)
t.ok(not [f for f in files if f.startswith(".")], "no temporary file is left behind", files)
sfiles = sorted(os.listdir(spool)) if os.path.isdir(spool) else []
t.ok(os.path.isdir(spool) and mode_of(spool) == 0o700 and sfiles and
     all(mode_of(os.path.join(spool, f)) == 0o600 for f in sfiles),
     "umask 000: the spool directory (DD_SHIM_SPOOL_DIR) is created 0700, the %d payload(s) in it 0600" % len(sfiles),
     "dir %s, files %s" % (oct(mode_of(spool)) if os.path.isdir(spool) else "missing",
                           [(f, oct(mode_of(os.path.join(spool, f)))) for f in sfiles]))

cwd = tmp()
p = run([BUSY, "300"], shim_env(None, extra={"DD_SERVICE": "defdir"}), cwd=cwd, preexec_fn=umask0)
dd = os.path.join(cwd, "ddshim-out")
dfiles = sorted(os.listdir(dd)) if os.path.isdir(dd) else []
t.ok(p.returncode == 0 and os.path.isdir(dd) and mode_of(dd) == 0o700 and dfiles and
     all(mode_of(os.path.join(dd, f)) == 0o600 for f in dfiles),
     "umask 000, no Agent, no DD_SHIM_OUTPUT_DIR: ./ddshim-out is created 0700, its files 0600",
     "dir %s, files %s\nstderr: %s" % (oct(mode_of(dd)) if os.path.isdir(dd) else "missing",
                                       [(f, oct(mode_of(os.path.join(dd, f)))) for f in dfiles], p.err))

# ===================================================================== planted symlinks
section('planted symlinks')
VICTIM_TEXT = b"the victim's own bytes\n"


def victim(name):
    d = tmp("ddshim-security-victim-")
    v = os.path.join(d, name)
    write(v, VICTIM_TEXT)
    return v


def untouched(v):
    return os.path.isfile(v) and read(v, True) == VICTIM_TEXT


# -- the profile's final names (pprof.gz and event.json)
out = tmp()
v1, v2 = victim("v1"), victim("v2")


def plant_final():
    pid = os.getpid()
    os.symlink(v1, os.path.join(out, "sym.%d.0.pprof.gz" % pid))
    os.symlink(v2, os.path.join(out, "sym.%d.0.event.json" % pid))


base = run([BUSY, "300"], shim_env(None, preload=False))
p = run([BUSY, "300"], shim_env(out, extra={"DD_SERVICE": "sym"}), preexec_fn=plant_final)
links = [f for f in os.listdir(out) if os.path.islink(os.path.join(out, f))]
t.ok(untouched(v1) and untouched(v2) and len(links) == 2,
     "symlinks planted at the profile's final names (pprof.gz, event.json): never followed, targets untouched",
     "v1: %r\nv2: %r\ndir: %s\nstderr: %s" % (read(v1, True)[:100], read(v2, True)[:100], os.listdir(out), p.err))
t.ok(p.returncode == 0 and nopid(p.out) == nopid(base.out) and
     any("not a regular file" in l for l in shim_lines(p.err)),
     "... the host runs as without the shim, and a ddshim: line says the profile was not written",
     "rc %d\nstdout %r\nstderr %r" % (p.returncode, p.out, p.err))

# -- the temporary names (.tmp.<pid>.<n>.<final name>, n counting from 0 in the
#    process: agent_io/transport.c's write_file_atomic): all the first ones taken
out = tmp()
tv = victim("tmpvictim")


def plant_tmp():
    pid = os.getpid()
    for n in range(8):
        os.symlink(tv, os.path.join(out, ".tmp.%d.%d.sym.%d.0.pprof.gz" % (pid, n, pid)))
    for n in range(24):
        os.symlink(tv, os.path.join(out, ".tmp.%d.%d.sym.%d.0.event.json" % (pid, n, pid)))


p = run([BUSY, "300"], shim_env(out, extra={"DD_SERVICE": "sym"}), preexec_fn=plant_tmp)
regular = [f for f in os.listdir(out) if os.path.isfile(os.path.join(out, f)) and not os.path.islink(os.path.join(out, f))]
t.ok(untouched(tv) and p.returncode == 0 and sorted(f.split(".")[-2] + "." + f.split(".")[-1] for f in regular)
     == ["event.json", "pprof.gz"] and all(mode_of(os.path.join(out, f)) == 0o600 for f in regular),
     "symlinks planted at the temporary names: never followed (target untouched), the profile still written 0600 "
     "under a free temporary name", "target: %r\nregular files: %s\nstderr: %s" % (read(tv, True)[:100], regular, p.err))

# -- traces.jsonl
out = tmp()
jv = victim("jsonlvictim")


def plant_jsonl():
    os.symlink(jv, os.path.join(out, "sym.%d.traces.jsonl" % os.getpid()))


rc, err, pid = serve_a_little(shim_env(out, extra={"DD_SERVICE": "sym"}), preexec_fn=plant_jsonl)
t.ok(untouched(jv) and os.path.islink(os.path.join(out, "sym.%d.traces.jsonl" % pid)) and rc == -15,
     "a symlink planted at <service>.<pid>.traces.jsonl: never followed, its target untouched; the server ends "
     "by its SIGTERM as usual", "target: %r\nstderr: %s" % (read(jv, True)[:200], err))

# -- the output directory itself (and with a trailing slash)
for trailing in ("", "/"):
    parent = tmp()
    vdir, vspool = tmp("ddshim-security-victimdir-"), tmp("ddshim-security-victimdir-")
    link, slink = os.path.join(parent, "out"), os.path.join(parent, "spool")
    os.symlink(vdir, link)
    os.symlink(vspool, slink)
    rc, err, pid = serve_a_little(shim_env(link + trailing, extra={"DD_SERVICE": "sym", "DD_SHIM_SPOOL_DIR": slink + trailing}))
    lines = shim_lines(err)
    t.ok(os.listdir(vdir) == [] and os.path.islink(link) and rc == -15 and
         [l for l in lines if link in l],
         "DD_SHIM_OUTPUT_DIR=<a symlink>%s: never followed (the directory it points to stays empty), a ddshim: line "
         "names it, the server ends as usual" % trailing,
         "pointed-to dir: %s\nrc %s\nstderr: %s" % (os.listdir(vdir), rc, err))
    t.ok(os.listdir(vspool) == [] and os.path.islink(slink),
         "DD_SHIM_SPOOL_DIR=<a symlink>%s: never followed (the directory it points to stays empty)" % trailing,
         "pointed-to dir: %s\nstderr: %s" % (os.listdir(vspool), err))

# ===================================================================== names taken by others
section('names taken by others')
if ROOT_USER:
    # an output directory of another user's that we (root) may write into: a
    # file of theirs, or a hard link to a file of ours, sits at the traces name
    theirs = tmp()
    os.chown(theirs, NOBODY, NOBODY)
    os.chmod(theirs, 0o755)

    def plant_theirs():
        f = os.path.join(theirs, "sym.%d.traces.jsonl" % os.getpid())
        write(f, VICTIM_TEXT, 0o644)
        os.chown(f, NOBODY, NOBODY)

    rc, err, pid = serve_a_little(shim_env(theirs, extra={"DD_SERVICE": "sym"}), preexec_fn=plant_theirs)
    tf = os.path.join(theirs, "sym.%d.traces.jsonl" % pid)
    t.ok(untouched(tf), "a traces.jsonl name already taken by another user's file: spans never appended to it",
         "%s now holds %d bytes\nstderr: %s" % (tf, os.path.getsize(tf), err))

    hv = victim("hardlinkvictim")
    out = tmp()

    def plant_hardlink():
        os.link(hv, os.path.join(out, "sym.%d.traces.jsonl" % os.getpid()))

    rc, err, pid = serve_a_little(shim_env(out, extra={"DD_SERVICE": "sym"}), preexec_fn=plant_hardlink)
    t.ok(untouched(hv), "a hard link planted at the traces.jsonl name: the linked file is never appended to",
         "victim now: %r\nstderr: %s" % (read(hv, True)[:300], err))
else:
    t.skip("names taken by another user", "needs root")

# ===================================================================== refused directories
section('refused directories')
if ROOT_USER:
    cases = []
    d = tmp()
    os.chown(d, NOBODY, NOBODY)
    os.chmod(d, 0o777)
    cases.append(("world-writable (0777) and owned by nobody", d))
    d = tmp()
    os.chmod(d, 0o1777)
    cases.append(("shared sticky (1777, like /tmp) even though it is ours", d))
    d = tmp()
    os.chown(d, NOBODY, NOBODY)
    os.chmod(d, 0o1777)
    cases.append(("sticky world-writable (1777) owned by nobody", d))
    base = run([BUSY, "300"], shim_env(None, preload=False))
    for what, d in cases:
        p = run([BUSY, "300"], shim_env(d, extra={"DD_SERVICE": "refuse"}))
        lines = shim_lines(p.err)
        t.ok(os.listdir(d) == [] and p.returncode == base.returncode == 0 and nopid(p.out) == nopid(base.out) and
             lines and all(d in l and "world-writable" in l for l in lines) and
             p.err.count("\n") == len(lines),
             "output directory %s: refused with a ddshim: line naming it (%d line(s)), nothing written, the host's "
             "stdout and status as without the shim" % (what, len(lines)),
             "dir: %s\nrc %d\nstdout %r\nstderr %r" % (os.listdir(d), p.returncode, p.out, p.err))
else:
    t.skip("refused output directories", "needs root to chown")

# ===================================================================== AT_SECURE
section('AT_SECURE')
LIBDIR = "/usr/lib/x86_64-linux-gnu"
have_tools = all(shutil.which(x) for x in ("unshare", "setpriv", "mount"))
if ROOT_USER and have_tools and os.path.isdir(LIBDIR):
    # `make test SANITIZER=...`: the sanitizer runtime must be preloaded before the shim
    SAN_LIBS = [x for x in os.environ.get("DDSHIM_SAN_PRELOAD", "").split(":") if x]
    PRELOAD_NAMES = [os.path.basename(x) for x in SAN_LIBS] + ["libddshim-sectest.so"]
    W = tmp("ddshim-security-secure-")
    os.chmod(W, 0o755)
    bindir = os.path.join(W, "bin")
    os.makedirs(bindir)
    os.chmod(bindir, 0o755)

    def overlay_dirs():
        """Fresh upper and work directories for one namespace's overlays of
        /etc and the library directory (an upper directory keeps what was
        written into it: /etc/ld.so.preload must not outlive its run)."""
        r = tempfile.mkdtemp(dir=W)
        os.chmod(r, 0o755)
        for sub, like in (("etc-up", "/etc"), ("lib-up", LIBDIR), ("etc-work", None), ("lib-work", None)):
            os.makedirs(os.path.join(r, sub))
            os.chmod(os.path.join(r, sub), stat.S_IMODE(os.stat(like).st_mode) if like else 0o700)
        lib = os.path.join(r, "lib-up", "libddshim-sectest.so")
        shutil.copy(LIB, lib)
        # the loader preloads into AT_SECURE programs only libraries that carry the set-user-ID bit
        os.chmod(lib, 0o4755)
        agent = os.path.join(r, "lib-up", "libddshim-agent.so")
        shutil.copy(os.path.join(os.path.dirname(LIB), "libddshim-agent.so"), agent)
        os.chmod(agent, 0o644)
        for san in SAN_LIBS:  # a sanitizer build: its runtime is preloaded first, the same way
            shutil.copy(san, os.path.join(r, "lib-up", os.path.basename(san)))
            os.chmod(os.path.join(r, "lib-up", os.path.basename(san)), 0o4755)
        return r

    def copy_prog(name, owner, mode):
        p = os.path.join(bindir, name)
        shutil.copy(SECPROBE, p)
        os.chown(p, owner, owner)
        os.chmod(p, mode)
        return p

    plain = copy_prog("plain", 0, 0o755)
    suid_root = copy_prog("suid-root", 0, 0o4755)
    suid_nobody = copy_prog("suid-nobody", NOBODY, 0o4755)
    fcap = copy_prog("fcap", 0, 0o755)
    have_fcap = shutil.which("setcap") and subprocess.run(["setcap", "cap_net_bind_service+ep", fcap],
                                                         capture_output=True).returncode == 0

    SCRIPT = r'''
mount -t overlay overlay -o "lowerdir=$LIBDIR,upperdir=$R/lib-up,workdir=$R/lib-work" "$LIBDIR"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$R/etc-up,workdir=$R/etc-work" /etc
[ "$INJECT" = global ] && for l in $PRELOAD_NAMES; do echo "$LIBDIR/$l"; done > /etc/ld.so.preload
cd "$CWD"
if [ "$AS" = nobody ]; then
    # setpriv itself runs with the shim switched off; env -u gives the program the plain environment
    set -- setpriv --reuid=65534 --regid=65534 --clear-groups env -u DD_SHIM_ENABLED "$PROG" info 300
    [ "$INJECT" = preload ] && set -- setpriv --reuid=65534 --regid=65534 --clear-groups env -u DD_SHIM_ENABLED \
        LD_PRELOAD="$PRELOAD" "$PROG" info 300
    DD_SHIM_ENABLED=false exec "$@"
fi
[ "$INJECT" = preload ] && export LD_PRELOAD="$PRELOAD"
exec "$PROG" info 300
'''

    def secure_run(prog, inject, as_user):
        outd, cwdd = tmp(), tmp()
        for d in (outd, cwdd):
            os.chown(d, NOBODY, NOBODY)
            os.chmod(d, 0o700)
        env = shim_env(outd, preload=False, extra={"DD_SHIM_LOG_LEVEL": "debug", "DD_SHIM_SAMPLE_HZ": "999",
                                                   "DD_PROFILING_UPLOAD_PERIOD": "1"})
        env.pop("LD_PRELOAD", None)
        env.update(R=overlay_dirs(), LIBDIR=LIBDIR, PRELOAD=":".join(PRELOAD_NAMES),
                   PRELOAD_NAMES=" ".join(PRELOAD_NAMES), INJECT=inject, AS=as_user, CWD=cwdd, PROG=prog)
        p = run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-ec", SCRIPT], env)
        m = re.search(r"at_secure=(\d+) shim_mapped=(\d) threads=(\d+) uid=(\d+) euid=(\d+)", p.out)
        r = dict(rc=p.returncode, out=p.out, err=p.err, files=sorted(os.listdir(outd)) + sorted(os.listdir(cwdd)))
        if m:
            r.update(secure=int(m.group(1)), mapped=int(m.group(2)), threads=int(m.group(3)), uid=int(m.group(4)),
                     euid=int(m.group(5)))
        return r

    def describe(r):
        return "rc %s\nstdout %r\nstderr %r\nfiles %s" % (r["rc"], r["out"], r["err"][-1500:], r["files"])

    # controls: the same injection without a privilege change must show the shim at work
    for inject, as_user in (("global", "root"), ("preload", "nobody")):
        r = secure_run(plain, inject, as_user)
        t.ok(r.get("secure") == 0 and r.get("mapped") == 1 and r.get("threads", 0) >= 3 and r["files"],
             "control (%s, %s, no privilege change): the shim is loaded and at work (%s threads, %d file(s))"
             % ("/etc/ld.so.preload" if inject == "global" else "LD_PRELOAD", as_user, r.get("threads"),
                len(r["files"])), describe(r))

    cases = [("set-user-ID-root program run by nobody (setpriv)", suid_root, "nobody", 0)]
    if SAN_LIBS:
        # The ASan runtime reads its options from /proc/self/environ, which a process whose euid
        # is nobody may not read once it is set-user-ID (not dumpable): LeakSanitizer then runs at
        # exit and fails in the sanitizer runtime, not in the shim. A set-group-ID program is
        # AT_SECURE too and keeps euid root.
        sgid_nobody = copy_prog("sgid-nobody", 0, 0o755)
        os.chown(sgid_nobody, 0, NOBODY)
        os.chmod(sgid_nobody, 0o2755)
        cases.append(("set-group-ID-nobody program run by root (a sanitizer build: see the comment)",
                      sgid_nobody, "root", 0))
    else:
        cases.append(("set-user-ID-nobody program run by root", suid_nobody, "root", NOBODY))
    if have_fcap:
        cases.append(("cap_net_bind_service+ep program run by nobody (setpriv)", fcap, "nobody", NOBODY))
    else:
        t.skip("file-capability program", "setcap missing or refused")
    for what, prog, as_user, euid in cases:
        for inject in ("global", "preload"):
            r = secure_run(prog, inject, as_user)
            t.ok(r["rc"] == 0 and r.get("secure") == 1 and r.get("mapped") == 1 and r.get("threads") == 1 and
                 r.get("euid") == euid and r["err"] == "" and not r["files"],
                 "AT_SECURE, %s, injected by %s: shim mapped, yet no thread (%s), no file, no stderr line"
                 % (what, "/etc/ld.so.preload" if inject == "global" else "LD_PRELOAD", r.get("threads")),
                 describe(r))
else:
    t.skip("AT_SECURE programs", "needs root, unshare, setpriv and mount")

# ===================================================================== close-on-exec
section('close-on-exec')
for transport in ("tcp", "unix"):
    sockdir = tmp()
    for how in ("posix_spawn", "fork"):
        ik = intake(mode="hang", unix=os.path.join(sockdir, "apm-%s.socket" % how) if transport == "unix" else None)
        try:
            out = tmp()
            env = shim_env(out, agent=ik.url, extra={"DD_PROFILING_UPLOAD_PERIOD": "1", "DD_SHIM_SAMPLE_HZ": "199"})
            p = None
            for attempt in range(3):  # the shim's connection must still be open when the child lists its fds
                p = run([SECPROBE, "spawn", how, "8000"], env, timeout=60)
                if "socket still open: yes" in p.out:
                    break
        finally:
            ik.stop()
        m = re.search(r"passed fd (\d+)", p.out)
        passed = int(m.group(1)) if m else -1
        child = sorted(int(x) for x in re.findall(r"^child fd (\d+) ", p.out, re.M))
        host_sockets = re.findall(r"^host fd (\d+) socket:", p.out, re.M)
        host_pipes = [int(x) for x in re.findall(r"^host fd (\d+) pipe:", p.out, re.M) if int(x) > 2]
        t.ok(p.returncode == 0 and "socket still open: yes" in p.out and host_sockets and host_pipes and
             child == [0, 1, 2, passed],
             "close-on-exec, %s while the shim holds its connection to the Agent (%s; %d socket(s) in all) and "
             "libunwind's pipe: the child gets only 0, 1, 2 and the host's /dev/null (got %s)"
             % (how, transport, len(host_sockets), child),
             "rc %d\n%s\nstderr %s" % (p.returncode, p.out, p.err[-500:]))

# ===================================================================== secrets
section('secrets')
SECRET_SERVER = r"""
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
        self.send_response(200)
        self.send_header("Set-Cookie", "session=hunter2-setcookie; HttpOnly")
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1] + ".tmp", "w").write(str(s.server_address[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
s.serve_forever()
"""
REQUESTS = [
    b"GET /login?token=hunter2-token&user=bob HTTP/1.1\r\nHost: example.com\r\n"
    b"Authorization: Bearer hunter2-auth\r\nCookie: sid=hunter2-cookie\r\n"
    b"Proxy-Authorization: Basic aHVudGVyMjpodW50ZXIy-hunter2-proxy\r\nX-Ok: visible\r\n\r\n",
    b"GET /account?password=hunter2-password&lang=en HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /keys?api_key=hunter2-apikey&secret=hunter2-secret&page=2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET http://bob:hunter2-userinfo@example.com/absolute?user=bob HTTP/1.0\r\n\r\n",
    b"GET http://bob:hunter2-userinfo2@example.com/absolute2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
]


def find_secret(blob, where):
    if isinstance(blob, str):
        blob = blob.encode(errors="replace")
    i = blob.find(b"hunter2")
    if i < 0:
        return None
    return "%s: ...%r..." % (where, blob[max(0, i - 120):i + 60])


def secret_run(agent):
    d = tmp()
    portfile = os.path.join(d, "port")
    out = os.path.join(d, "out")
    errf = open(os.path.join(d, "stderr"), "w+b")
    env = shim_env(out, agent=agent, extra={
        "DD_SERVICE": "secrets", "DD_SHIM_LOG_LEVEL": "debug", "DD_PROFILING_UPLOAD_PERIOD": "1",
        "DD_SHIM_SAMPLE_HZ": "999",
        "DD_TRACE_HEADER_TAGS": "authorization,cookie,set-cookie,proxy-authorization,x-ok:x.ok"})
    srv = subprocess.Popen(["/usr/bin/python3", "-c", SECRET_SERVER, portfile], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=errf)
    end = time.time() + 15
    while time.time() < end and not os.path.exists(portfile):
        time.sleep(0.02)
    port = int(read(portfile)) if os.path.exists(portfile) else 0
    for req in REQUESTS:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(req)
            while s.recv(65536):
                pass
            s.close()
        except OSError:
            pass
    time.sleep(2.2)  # a traces flush and a profile period
    srv.send_signal(signal.SIGTERM)
    try:
        srv.wait(10)
    except subprocess.TimeoutExpired:
        srv.kill()
        srv.wait()
    errf.seek(0)
    return out, errf.read().decode(errors="replace")


# -- with an Agent
ik = intake()
try:
    out, err = secret_run(ik.url)
    time.sleep(0.3)
    spans, raw = intake_spans(ik)
    found = [find_secret(raw, "traces sent to the Agent")]
    for f in sorted(glob.glob(os.path.join(ik.dir, "traces-*.json")) + glob.glob(os.path.join(ik.dir, "upload-*.json"))):
        found.append(find_secret(read(f, True), os.path.basename(f)))
    for f in sorted(glob.glob(os.path.join(ik.dir, "upload-*.pprof.gz"))):
        try:
            found.append(find_secret(gzip.decompress(read(f, True)), os.path.basename(f)))
        except (OSError, EOFError):
            pass
    uploads = len(glob.glob(os.path.join(ik.dir, "upload-*.json")))
finally:
    ik.stop()
found = [x for x in found if x]
t.ok(len(spans) == len(REQUESTS) and any(s["meta"].get("x.ok") == "visible" for s in spans) and uploads >= 1,
     "secrets, with an Agent: %d spans for %d requests (a listed harmless header is copied), %d profile upload(s)"
     % (len(spans), len(REQUESTS), uploads), [(s["resource"], s["meta"].get("http.url")) for s in spans])
t.ok(not found, "no credential, cookie or secret query value in the spans, trace headers, event.json or profiles "
     "the Agent gets", "\n".join(found) + "\nurls: %s" % [s["meta"].get("http.url") for s in spans])
lines = shim_lines(err)
t.ok(lines and not find_secret("\n".join(lines), "stderr"),
     "... nor in the shim's own stderr at DD_SHIM_LOG_LEVEL=debug (%d ddshim: lines)" % len(lines),
     find_secret("\n".join(lines), "stderr"))

# -- without an Agent: traces.jsonl, pprof.gz, event.json
out, err = secret_run(None)
files = sorted(os.listdir(out)) if os.path.isdir(out) else []
found = []
nspans = 0
for f in files:
    data = read(os.path.join(out, f), True)
    if f.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            pass
    if f.endswith(".traces.jsonl"):
        nspans += data.count(b"\n")
    found.append(find_secret(data, f))
found = [x for x in found if x]
t.ok(nspans == len(REQUESTS) and any(f.endswith(".event.json") for f in files),
     "secrets, no Agent: traces.jsonl has %d spans for %d requests, event.json written" % (nspans, len(REQUESTS)), files)
t.ok(not found, "no credential, cookie or secret query value in traces.jsonl, event.json or the pprof files",
     "\n".join(found))
lines = shim_lines(err)
t.ok(not find_secret("\n".join(lines), "stderr"),
     "... nor in the shim's own stderr at DD_SHIM_LOG_LEVEL=debug (%d ddshim: lines)" % len(lines),
     find_secret("\n".join(lines), "stderr"))

# -- credentials in DD_TRACE_AGENT_URL are never echoed back: a user:password@
#    (refused, so the bad-value line names the variable) and a query value of a
#    URL that works (the Agent answers; the line saying where profiles go)
ik = intake()
try:
    for url in ("http://user:hunter2-agenturl@127.0.0.1:1", ik.url + "/?api_key=hunter2-agenturl"):
        p = run([BUSY, "200"], shim_env(tmp(), agent=url, extra={"DD_SHIM_LOG_LEVEL": "debug"}))
        lines = shim_lines(p.err)
        t.ok(p.returncode == 0 and lines and not find_secret(p.err, "stderr"),
             "DD_TRACE_AGENT_URL=%s: the secret is never printed (%d ddshim: lines)"
             % (url.replace("hunter2-agenturl", "***"), len(lines)), "\n".join(lines))
finally:
    ik.stop()

section(None)
print("# test_security.py ran in %.1f s" % (time.monotonic() - T0))
t.done()
