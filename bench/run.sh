#!/bin/sh
# bench/run.sh — `make bench`: measure every budget of docs/QUALITY.md
# (issue 5) side by side with the peers and write bench/RESULTS.md.
# Runs in about 10 minutes on 2 cores (under 15 from a fresh build).
#   BENCH_ONLY=sampling,accuracy,handler,http,hook,redis,footprint   a subset
#   BENCH_ONLY=startup            only start-up and the fork+exec loop (4b)
#   BENCH_QUICK=1                                                    a smoke run (not a measurement)
set -eu
cd "$(dirname "$0")/.."

# Peers and tools: gperftools (libprofiler.so), perf, and the servers and
# clients the tests already install (scripts/deps.txt).
missing=""
for p in google-perftools libgoogle-perftools-dev linux-perf python3-msgpack golang-go \
         nginx-light wrk redis-server redis-tools libunwind-dev; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = "installed" ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "bench: installing$missing" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

# The shim and the test programs (make bench depends on them already; this
# keeps `sh bench/run.sh` usable on its own).
make -s all build/progs/split build/progs/deep build/progs/busy >/dev/null

# The benchmark's own programs, built like the test programs (-O2, DWARF, no
# frame pointers) except deep-fp / unwindcost-fp.
mkdir -p build/bench
CC=${CC:-gcc}
F="-O2 -g -pthread -D_GNU_SOURCE"
for p in work hookpath stacks exitprobe spawn threads probe; do
    $CC $F -fomit-frame-pointer -o build/bench/$p bench/$p.c
done
# The hook path without LD_PRELOAD: bench/hookpath.c calls the shim's
# per-request code itself and times it (section 3b).
$CC $F -std=gnu11 -fPIC -fomit-frame-pointer -DHOOKPATH_DIRECT -I. -o build/bench/hookpath-direct \
    bench/hookpath.c http/conn.c http/parser.c preload/ring.c
$CC $F -fno-omit-frame-pointer -o build/bench/deep-fp tests/progs/deep.c
# unwindcost links the shim's stack walker (preload/unwind.c) to time it alone.
$CC $F -I. -fomit-frame-pointer -o build/bench/unwindcost bench/unwindcost.c preload/unwind.c -lunwind
$CC $F -I. -fno-omit-frame-pointer -DFP_BUILD -o build/bench/unwindcost-fp bench/unwindcost.c preload/unwind.c -lunwind

exec /usr/bin/python3 bench/bench.py
