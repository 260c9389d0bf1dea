"""Safety, real programs (QUALITY.md "Safety", issue 4 item 1): each program
runs twice from the same directory path, once without and once with the shim
(sampling at 999 Hz to stress it, no Agent, profiles in a private directory),
and must give the same exit status, byte-identical stdout and byte-identical
stderr — "ddshim:" lines are not ignored: a short program must not hear from
the shim at all — and leave the same files behind (nothing of the shim's in the
working directory):
python3 (threads, subprocess, json; one that uses OpenSSL; a short one), git
(init, commit, log --format, diff, status), make -j4 on a generated Makefile,
gcc (warning, error, the binary it builds), sort of a 1 MB file (external
merge, 2 threads) and of 1 MB on stdin, perl one-liners (fork, system,
backticks, die), curl against a python3 http.server started without the shim
(plus 30 short curl runs, whose exit path shares libcurl/OpenSSL with the
shim), sqlite3, setpriv/runuser/su dropping privileges (root only), and a bash loop of
1,000 fork+exec (its wall time with and
without is printed for information, never asserted). The CPU time of each run
is printed; programs under 100 ms of CPU that still got a ddshim: line are
listed at the end.
Environment knob (for proving the checks can fail): DDSHIM_SAFETY_BREAK=1
gives every program's shim run a different argument (or, for sh/bash, an
extra line on stdout and stderr), so every comparison must fail; with
DDSHIM_LIB pointing at an empty library every check must pass."""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from ddtest import Tap, profiles_in, shim_env, tmpdir

t = Tap()
CREATED = []


def tmp(prefix):
    d = tmpdir(prefix)
    CREATED.append(d)
    return d


HZ = "999"
BREAK = os.environ.get("DDSHIM_SAFETY_BREAK") == "1"
WORK = tmp("ddshim-safety-programs-")
HOME = os.path.join(WORK, "home")
TMP = os.path.join(WORK, "tmp")
os.makedirs(HOME)
os.makedirs(TMP)
COMMON = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C", "LANG": "C", "TZ": "UTC", "HOME": HOME, "TMPDIR": TMP,
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Safety Test", "GIT_AUTHOR_EMAIL": "safety@example.com",
    "GIT_COMMITTER_NAME": "Safety Test", "GIT_COMMITTER_EMAIL": "safety@example.com",
    "GIT_AUTHOR_DATE": "2020-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2020-01-02T03:04:05Z",
    "PYTHONDONTWRITEBYTECODE": "1",
}
for k in ("PYENV_VERSION", "PYENV_ROOT", "PYTHONPATH", "PYTHONHOME", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
    COMMON[k] = None


class Result:
    pass


def xrun(argv, env, cwd=None, input=None, timeout=120):
    """Runs argv; returns exit status (as subprocess gives it: -N for a
    signal), stdout, stderr, wall time and the CPU time of the whole process
    tree (wait4's rusage includes the children it waited for)."""
    env = {k: v for k, v in env.items() if v is not None}
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    bufs = {}

    def pump(name, f):
        bufs[name] = f.read()

    ths = [threading.Thread(target=pump, args=("out", p.stdout)), threading.Thread(target=pump, args=("err", p.stderr))]
    for th in ths:
        th.start()
    if input is not None:
        def feed():
            try:
                p.stdin.write(input)
                p.stdin.close()
            except OSError:
                pass
        threading.Thread(target=feed).start()
    t0 = time.monotonic()
    r = Result()
    r.timed_out = False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > timeout:
            r.timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.002)
    r.elapsed = time.monotonic() - t0
    p.returncode = r.rc = os.waitstatus_to_exitcode(status)
    r.cpu = ru.ru_utime + ru.ru_stime
    for th in ths:
        th.join(30)
    r.out = bufs.get("out", b"")
    r.err = bufs.get("err", b"")
    return r


def tree(d):
    names = []
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            names.append(os.path.relpath(os.path.join(root, n), d))
    return sorted(names)


def first_diff(a, b, what):
    al, bl = a.splitlines(), b.splitlines()
    for i in range(max(len(al), len(bl))):
        x = al[i] if i < len(al) else b"<end>"
        y = bl[i] if i < len(bl) else b"<end>"
        if x != y:
            return "%s line %d:\n  without: %r\n  with:    %r\n  (%d vs %d bytes)" % (what, i + 1, x[:300], y[:300], len(a), len(b))
    return "%s: same lines, %d vs %d bytes" % (what, len(a), len(b))


summary = []


def compare(name, argv, setup=None, input=None, timeout=120, extra_env=None):
    """Runs argv in a fresh directory WORK/run/<name> (the same path both
    times, so paths in output match) without and with the shim. Two checks:
    exit status + stdout + files left behind; stderr."""
    runs = []
    for with_shim in (False, True):
        d = os.path.join(WORK, "run", re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-"))
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        if setup:
            setup(d)
        out = tmp("ddshim-safety-out-")
        env = shim_env(out, extra=dict(COMMON, DD_SHIM_SAMPLE_HZ=HZ, **(extra_env or {})), preload=with_shim)
        a = list(argv)
        if with_shim and BREAK:
            a = a + ["--ddshim-safety-break"] if a[0] not in ("sh", "bash") else [a[0], "-c", "echo broken; echo broken >&2; " + a[-1]]
        r = xrun(a, env, cwd=d, input=input, timeout=timeout)
        r.files = tree(d)
        r.profiles = len(profiles_in(out))
        r.outdir_files = sorted(os.listdir(out))
        runs.append(r)
    b, s = runs
    hung = b.timed_out or s.timed_out
    same_out = b.rc == s.rc and b.out == s.out and b.files == s.files
    detail = []
    if hung:
        detail.append("timed out after %ds (without: %s, with: %s)" % (timeout, b.timed_out, s.timed_out))
    if b.rc != s.rc:
        detail.append("exit status %d without the shim, %d with it" % (b.rc, s.rc))
    if b.out != s.out:
        detail.append(first_diff(b.out, s.out, "stdout"))
    if b.files != s.files:
        detail.append("files without: %s\nfiles with: %s" % (sorted(set(b.files) - set(s.files)), sorted(set(s.files) - set(b.files))))
    t.ok(same_out and not hung, "%s: same exit status (%d), byte-identical stdout (%d bytes) and files" % (name, b.rc, len(b.out)),
         "\n".join(detail))
    shim_lines = [l for l in s.err.splitlines() if l.startswith(b"ddshim:")]
    t.ok(b.err == s.err and not hung, "%s: byte-identical stderr (%d bytes), no ddshim: line" % (name, len(b.err)),
         first_diff(b.err, s.err, "stderr") + ("\nddshim lines (%d):\n" % len(shim_lines)) +
         "\n".join(l.decode(errors="replace") for l in shim_lines[:10]))
    print("# %s: CPU %.0f ms without, %.0f ms with the shim (whole process tree); wall %.2f s / %.2f s; "
          "%d profile(s) written to the private output directory" % (name, b.cpu * 1000, s.cpu * 1000, b.elapsed, s.elapsed, s.profiles))
    summary.append((name, b, s))
    return b, s


def write(path, text, mode=None):
    with open(path, "w" if isinstance(text, str) else "wb") as f:
        f.write(text)
    if mode:
        os.chmod(path, mode)


# ---------------------------------------------------------------- python3
PY_SCRIPT = r'''
import hashlib, json, subprocess, sys, threading
results = [None] * 8
def work(i):
    h = hashlib.sha256()
    for k in range(20000):
        h.update(str(i * k).encode())
    results[i] = h.hexdigest()[:16]
ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for th in ts:
    th.start()
for th in ts:
    th.join()
child = subprocess.run([sys.executable, "-c",
                        "import json, sys; d = json.load(sys.stdin); print(json.dumps(sorted(d.items())))"],
                       input=json.dumps({"b": 2, "a": [1, 2.5, None]}), capture_output=True, text=True)
echo = subprocess.run(["/bin/echo", "from", "echo"], capture_output=True, text=True)
doc = {"threads": results, "child": child.stdout.strip(), "child_rc": child.returncode,
       "echo": echo.stdout, "argv": sys.argv[1:]}
print(json.dumps(doc, indent=1, sort_keys=True))
sys.stderr.write("python says goodbye on stderr\n")
sys.exit(3)
'''
compare("python3 script (threads, subprocess, json)", ["/usr/bin/python3", "script.py"],
        setup=lambda d: write(os.path.join(d, "script.py"), PY_SCRIPT))
# A program that uses OpenSSL itself (every HTTPS client does): libcrypto's own
# exit handler runs before the shim's final delivery.
compare("python3 with OpenSSL (ssl.create_default_context, 0.2 s of CPU)",
        ["/usr/bin/python3", "-c", "import ssl, sys, hashlib\nctx = ssl.create_default_context()\n"
         "s = sum(i * i for i in range(1000000))\nprint(ctx.protocol, s, hashlib.sha256(b'x').hexdigest()[:8])\n"
         "sys.stderr.write('%d arguments\\n' % len(sys.argv))"])
compare("python3 -c print (short)", ["/usr/bin/python3", "-c", "import sys; print(sys.argv); print('x' * 10)"])

# ---------------------------------------------------------------- git
GIT_SCRIPT = r'''
git init -q -b main .
printf 'alpha\nbeta\ngamma\n' > f.txt
git add f.txt
git commit -q -m first
printf 'alpha\nBETA\ngamma\ndelta\n' > f.txt
git diff
git commit -q -am second
git log --format='%H %an <%ae> %ad %s' --date=iso-strict
git diff HEAD~1 --stat
git status --porcelain
git cat-file -p HEAD
git show --no-patch --format=%T HEAD~1
git rev-parse nosuchref; echo "rev-parse exit $?"
'''
if shutil.which("git"):
    compare("git (init, commit, log --format, diff)", ["sh", "-c", GIT_SCRIPT])
else:
    t.skip("git", "git not installed")

# ---------------------------------------------------------------- make -j4
MAKEFILE = r'''
N := $(shell seq 1 24)
all: $(addprefix out/t,$(N))
	@cat $^ | sort -n -k2 | tail -3; cat $^ | wc -l
out/t%: | out
	@seq 1 $$(( $* * 2000 )) | awk '{ s += $$1 } END { print "$*", s }' > $@
out:
	@mkdir -p out
fail:
	@echo "about to fail"; exit 3
.PHONY: all fail
'''
compare("make -j4 (generated Makefile, then a failing target)",
        ["sh", "-c", "make -j4 -s; echo \"make exit $?\"; make -s fail; echo \"make exit $?\""],
        setup=lambda d: write(os.path.join(d, "Makefile"), MAKEFILE))

# ---------------------------------------------------------------- gcc
GCC_PROG = r'''
#include <stdio.h>
static int square(int x) { return x * x; }
int main(void)
{
    int unused;
    long s = 0;
    for (int i = 0; i < 1000; i++)
        s += square(i);
    printf("sum of squares %ld\n", s);
    return 0;
}
'''
GCC_BAD = "int main(void) { return undeclared_thing; }\n"


def gcc_setup(d):
    write(os.path.join(d, "prog.c"), GCC_PROG)
    write(os.path.join(d, "bad.c"), GCC_BAD)


compare("gcc (warning, the program it builds, an error)",
        ["sh", "-c", "gcc -Wall -O2 -o prog prog.c && ./prog && sha256sum prog; gcc -c bad.c; echo \"gcc exit $?\""],
        setup=gcc_setup)

# ---------------------------------------------------------------- sort
def sort_setup(d):
    import random
    rnd = random.Random(4)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    lines = []
    size = 0
    while size < (1 << 20):
        l = "%s%d %d %s\n" % (rnd.choice(words), rnd.randrange(1000), rnd.randrange(10 ** 6), rnd.choice(words))
        lines.append(l)
        size += len(l)
    write(os.path.join(d, "data.txt"), "".join(lines))


compare("sort of a 1 MB file (-S 100K --parallel=2: temp files, threads)",
        ["sort", "-S", "100K", "--parallel=2", "-k2,2n", "-k1,1", "data.txt"], setup=sort_setup)
compare("sort -u of 1 MB on stdin", ["sort", "-u", "-r"],
        input=b"".join(b"line %d %d\n" % (i % 7919, (i * 7) % 1000) for i in range(60000)))

# ---------------------------------------------------------------- perl
PERL_SCRIPT = r'''
perl -e 'print join(",", map { $_ * $_ } 1..20), "\n"'
perl -e 'my %h; $h{$_ % 7}++ for 1..200000; print map { "$_=$h{$_}\n" } sort keys %h'
perl -e '$pid = fork; if (!$pid) { print "child\n"; exit 3 } waitpid($pid, 0); print "child status ", $? >> 8, "\n"'
perl -e 'system("/bin/echo", "via", "system"); print "system rc $?\n"; print `echo backticks`'
perl -ne 'print if /^a/ .. /^b/' f.txt
perl -e 'warn "a warning\n"; die "dying\n"'; echo "perl exit $?"
'''
compare("perl one-liners (fork, system, backticks, warn, die)", ["sh", "-c", PERL_SCRIPT],
        setup=lambda d: write(os.path.join(d, "f.txt"), "x\nalpha\ny\nbeta\nz\n"))

# ---------------------------------------------------------------- curl against python3 http.server (no shim)
srv = None
if shutil.which("curl"):
    site = os.path.join(WORK, "site")
    os.makedirs(site)
    write(os.path.join(site, "hello.txt"), "hello from http.server\n")
    write(os.path.join(site, "data.bin"), bytes((i * 131 + (i >> 8)) & 0xff for i in range(1 << 20)))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    senv = dict(os.environ)
    senv.pop("LD_PRELOAD", None)
    srv = subprocess.Popen(["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)], cwd=site,
                           env=senv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    base = "http://127.0.0.1:%d" % port
    CURL_SCRIPT = r'''
curl -s %(b)s/hello.txt
curl -s %(b)s/data.bin | sha256sum
curl -s -o /dev/null -w '%%{http_code} %%{size_download}\n' %(b)s/missing
curl -s -o /dev/null -w '%%{http_code}\n' -X POST -d 'x=1' %(b)s/
curl -s -r 0-9 %(b)s/hello.txt; echo
curl -s http://127.0.0.1:1/; echo "refused: curl exit $?"
''' % {"b": base}
    compare("curl against python3 http.server", ["sh", "-c", CURL_SCRIPT])
    compare("curl -s (direct) 1 MB body", ["curl", "-s", base + "/data.bin"])
    # curl (libcurl + OpenSSL) shares those libraries with the shim's agent library;
    # its exit path runs many times here so an exit-time fault cannot hide by chance.
    bad = []
    for url in [base + "/missing", "file://" + os.path.join(site, "data.bin")] * 15:
        argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\n", url]
        if BREAK:
            argv = ["sh", "-c", "kill -SEGV $$"]
        r = xrun(argv, shim_env(tmp("ddshim-safety-out-"), extra=dict(COMMON, DD_SHIM_SAMPLE_HZ=HZ)), cwd=WORK, timeout=30)
        if r.rc != 0 or r.timed_out:
            bad.append("%s -> exit status %d%s, stderr %r" % (url, r.rc, " (timed out)" if r.timed_out else "",
                                                              r.err[-200:]))
    t.ok(not bad, "curl x30 (404 over HTTP, file://): every run exits 0 under the shim (%d did not)" % len(bad),
         "\n".join(bad))
else:
    t.skip("curl", "curl not installed")

# ---------------------------------------------------------------- sqlite3
if not shutil.which("sqlite3"):
    subprocess.run(["apt-get", "install", "-y", "-q", "sqlite3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=300)
if shutil.which("sqlite3"):
    SQL = r'''
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000)
  INSERT INTO t SELECT x, 'name' || (x % 97), x * 0.5 FROM c;
CREATE INDEX t_name ON t(name);
SELECT count(*), sum(v), min(name), max(name) FROM t;
SELECT name, count(*) FROM t GROUP BY name ORDER BY 2 DESC, 1 LIMIT 5;
.mode csv
SELECT * FROM t WHERE id % 10000 = 0;
'''
    compare("sqlite3 (50,000 rows, index, group by; then an error)",
            ["sh", "-c", "sqlite3 db.sqlite < q.sql; echo \"sqlite3 exit $?\"; "
                         "sqlite3 -bail db.sqlite 'SELECT * FROM nosuch;'; echo \"sqlite3 exit $?\"; "
                         "sqlite3 db.sqlite 'PRAGMA integrity_check;'"],
            setup=lambda d: write(os.path.join(d, "q.sql"), SQL))
else:
    t.skip("sqlite3", "sqlite3 not installed and apt-get install sqlite3 failed")

# ---------------------------------------------------------------- privilege drops
# setpriv keeps its capabilities across setresuid (prctl PR_SET_KEEPCAPS,
# capset on its own thread), then setresgid: glibc applies both to every
# thread and aborts if the shim's threads answer differently. su and runuser
# drop privileges through PAM. Root only (they need it to change users).
if os.geteuid() == 0:
    for name, argv in [
            ("setpriv (keep-caps, capset, setresuid, setresgid, clear groups)",
             ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", "id; echo ok > f; cat f"]),
            ("setpriv --inh-caps=-all --bounding-set=-all",
             ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
              "--bounding-set=-all", "id"]),
            ("runuser -u nobody", ["runuser", "-u", "nobody", "--", "id"]),
            ("su nobody -s /bin/sh", ["su", "nobody", "-s", "/bin/sh", "-c", "id"])]:
        if shutil.which(argv[0]):
            compare(name, argv, setup=lambda d: os.chmod(d, 0o777))
        else:
            t.skip(name, "%s not installed" % argv[0])
else:
    t.skip("setpriv / runuser / su", "needs root")

# ---------------------------------------------------------------- bash: 1,000 fork+exec
b, s = compare("bash loop of 1,000 fork+exec of /bin/true",
               ["bash", "-c", "for i in $(seq 1000); do /bin/true; done; echo done"], timeout=180)
print("# bash loop of 1,000 fork+exec: %.2f s without the shim, %.2f s with it (x%.1f) — information only"
      % (b.elapsed, s.elapsed, s.elapsed / b.elapsed if b.elapsed else 0))

if srv:
    srv.terminate()
    try:
        srv.wait(5)
    except subprocess.TimeoutExpired:
        srv.kill()

# Which programs heard from the shim although they were short (< 100 ms of CPU)?
short_noisy = [n for n, b, s in summary if b.cpu < 0.1 and any(l.startswith(b"ddshim:") for l in s.err.splitlines())]
if short_noisy:
    print("# programs under 100 ms of CPU that got ddshim: lines on stderr: " + "; ".join(short_noisy))
shutil.rmtree(WORK, ignore_errors=True)
for d in CREATED:
    shutil.rmtree(d, ignore_errors=True)
t.done()
