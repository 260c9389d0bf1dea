#!/usr/bin/python3
"""bench/nginx_ab.py — where nginx's added CPU per request goes: nginx
instances side by side on one CPU (section 3a's configuration and file),
wrk -t1 -c1 against each in a rotated order, per round; per request, the
worker's own thread and the worker's threads in all (schedstat), against the
no-shim instance of the same round. Not part of `make bench` (bench/findings.md,
nginx section, quotes it).

Instances: none (no shim); hooks-only (the shim, tracing and profiling off);
spans (tracing on, profiling off, spans to a capture intake as to an Agent);
and one per NAME=PATH argument: the same as spans with LD_PRELOAD=PATH (another
build of libddshim.so, e.g. an older commit's, or one with a part disabled).

usage: /usr/bin/python3 bench/nginx_ab.py [ROUNDS [SECONDS [NAME=PATH ...]]]
       (after `make bench` or `make all`; defaults 6 rounds of 3 s)"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import lib  # noqa: E402
from lib import Intake, median, plain, shim, tmp  # noqa: E402


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    secs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    extra = [a.split("=", 1) for a in sys.argv[3:]]
    if any(len(e) != 2 or not os.path.exists(e[1]) for e in extra):
        sys.exit("nginx_ab: each extra instance is NAME=PATH to an existing libddshim.so")
    os.chdir(lib.ROOT)
    root = tmp("www")
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write(bench.INDEX_HTML)
    ik = Intake()
    spans_env = dict(agent=ik.url, DD_PROFILING_ENABLED="false")
    servers = []
    try:
        servers = [bench.Nginx("none", plain(), root),
                   bench.Nginx("hooks-only", shim(DD_TRACE_ENABLED="false", DD_SHIM_SPOOL_DIR=tmp("spool"),
                                                  **spans_env), root),
                   bench.Nginx("spans", shim(DD_SHIM_SPOOL_DIR=tmp("spool"), **spans_env), root)]
        for name, path in extra:
            e = shim(DD_SHIM_SPOOL_DIR=tmp("spool"), **spans_env)
            e.env["LD_PRELOAD"] = os.path.abspath(path)
            servers.append(bench.Nginx(name, e, root))
        res = {s.name: [] for s in servers}
        for s in servers:  # warm-up: first requests, the shim's lazy paths
            bench.wrk(s.url(), 1, 4, 1)
        for rd in range(rounds):
            for s in servers[rd % len(servers):] + servers[:rd % len(servers)]:
                th0 = lib.threads_cpu(s.worker)
                n, rps, _ = bench.wrk(s.url(), 1, 1, secs)
                th1 = lib.threads_cpu(s.worker)
                d = {tid: v[1] - th0.get(tid, (None, 0.0))[1] for tid, v in th1.items()}
                up = sum(x for tid, x in d.items() if th1[tid][0] == "ddshim-upload")
                res[s.name].append((d.get(s.worker, 0.0) / n * 1e6, sum(d.values()) / n * 1e6, up / n * 1e6, rps))
            sys.stderr.write("round %d/%d\n" % (rd + 1, rounds))
    finally:
        for s in servers:
            s.stop()
        ik.stop()
        lib.cleanup()
    base = [r[1] for r in res["none"]]
    print("| instance | nginx's thread, µs/request (vs none) | worker, all threads (vs none) | uploader µs/span | requests/s |")
    print("|---|---|---|---|---|")
    for name, rs in res.items():
        main_rel = median([(r[0] / b - 1) * 100 for r, b in zip(rs, base)])
        tot_rel = median([(r[1] / b - 1) * 100 for r, b in zip(rs, base)])
        print("| %s | %.2f (%+.1f %%) | %.2f (%+.1f %%) | %.2f | %.0f |" % (
            name, median([r[0] for r in rs]), main_rel, median([r[1] for r in rs]), tot_rel,
            median([r[2] for r in rs]), median([r[3] for r in rs])))


if __name__ == "__main__":
    main()
