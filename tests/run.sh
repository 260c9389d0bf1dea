#!/bin/sh
# tests/run.sh — run every unit test binary and every end-to-end test script,
# count their TAP lines ("ok N - ...", "not ok N - ...", "ok N - ... # SKIP why")
# and end with "N passed, N failed" (", N skipped" when a check's tool is missing).
# A test that exits non-zero without printing any "not ok" counts as one failure.
# Run by `make test`; B is the build directory, SANITIZER address|undefined|empty,
# TESTS (optional) the names of the only tests to run (e.g. "test_upload.py").
B=${B:-build}
export B
export DDSHIM_LIB="$(cd "$B" && pwd)/libddshim.so"
export DDSHIM_ROOT="$(pwd)"
# The spool (what an absent Agent did not take) of tests that do not set their
# own: in the build directory, not the machine's /var/tmp/ddshim-<uid>.
export DD_SHIM_SPOOL_DIR="$(pwd)/$B/test-spool"
rm -rf "$DD_SHIM_SPOOL_DIR"
pass=0; fail=0; skip=0; failed_names=""
log_dir="$B/test-logs"
rm -rf "$log_dir"; mkdir -p "$log_dir"

# Sanitizer builds. Every sanitizer report is written to $log_dir/<test>.san.<pid>
# (log_path, set per test below) and a test that leaves one FAILS, whatever its
# exit status: the report may come from a daemon's worker or a child no test waits
# for. Options, for the host programs the e2e tests run under the shim:
#  - detect_leaks=0: LeakSanitizer would report the hosts' own leaks at exit (bash,
#    nginx, gcc keep memory until exit by design). The unit tests, which run the
#    shim's modules as whole programs of ours, keep leak detection on.
#  - handle_segv/sigbus/sigfpe=0: a host that crashes or is killed on purpose must
#    die by its own signal as without the shim (tests compare wait statuses); a
#    crash in the shim still fails its test through that wait status.
#  - halt_on_error/-fno-sanitize-recover: the first error ends the process.
# The ASan runtime must come first in LD_PRELOAD: ddtest.py puts
# DDSHIM_SAN_PRELOAD before the shim (ddrun keeps it first by itself).
san_host=""; san_unit=""
case ${SANITIZER:-} in
address)
    # (+ a stub that keeps GCC 12's runtime off a glibc lock: tests/san/*.c)
    DDSHIM_SAN_PRELOAD=$(readlink -f "$(gcc -print-file-name=libasan.so)"):$(pwd)/$B/tests/libasan_swift_demangle.so
    export DDSHIM_SAN_PRELOAD
    san_host="detect_leaks=0:handle_segv=0:handle_sigbus=0:handle_sigfpe=0:halt_on_error=1"
    san_unit="detect_leaks=1:halt_on_error=1" ;;
undefined)
    san_host="print_stacktrace=1:halt_on_error=1:handle_segv=0:handle_sigbus=0:handle_sigfpe=0"
    san_unit="print_stacktrace=1:halt_on_error=1" ;;
"") ;;
*) echo "tests/run.sh: SANITIZER must be address or undefined" >&2; exit 2 ;;
esac
export SANITIZER
san_env() { # host|unit test-name: export the sanitizer options for one test
    [ -n "$san_host" ] || return 0
    eval "o=\$san_$1"
    o="$o:log_path=$(pwd)/$log_dir/$2.san"
    export ASAN_OPTIONS="$o" UBSAN_OPTIONS="$o"
}

run_one() {
    name=$1; shift
    if [ -n "${TESTS:-}" ]; then
        case " $TESTS " in *" $(basename "$name") "*) ;; *) return 0 ;; esac
    fi
    out="$log_dir/$(basename "$name").log"
    "$@" >"$out" 2>&1
    rc=$?
    p=$(grep -c '^ok ' "$out" | tr -d ' ')
    s=$(grep '^ok ' "$out" | grep -c '# SKIP' | tr -d ' ')
    f=$(grep -c '^not ok ' "$out" | tr -d ' ')
    p=$((p - s))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "not ok - $name exited with status $rc" >>"$out"
    fi
    for r in "$log_dir/$(basename "$name").san".*; do
        [ -f "$r" ] || continue
        f=$((f + 1))
        echo "not ok - sanitizer report $r" >>"$out"
        sed 's/^/#   /' "$r" >>"$out"
    done
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
    if [ "$f" -gt 0 ]; then
        echo "FAIL $name ($p passed, $f failed) — log: $out"
        grep '^not ok ' "$out" | sed 's/^/    /'
        failed_names="$failed_names $name"
    else
        echo "ok   $name ($p passed${s:+, $s skipped})" | sed 's/, 0 skipped//'
    fi
    grep '# SKIP' "$out" | sed 's/^/    /'
}

for t in "$B"/tests/test_*; do
    [ -x "$t" ] || continue
    case $t in *.so) continue ;; esac
    san_env unit "$(basename "$t")"
    run_one "$t" "$t"
done
for t in tests/e2e/test_*.sh; do
    [ -f "$t" ] || continue
    san_env host "$(basename "$t")"
    run_one "$t" sh "$t"
done
for t in tests/e2e/test_*.py; do
    [ -f "$t" ] || continue
    san_env host "$(basename "$t")"
    run_one "$t" /usr/bin/python3 "$t"
done

if [ "$skip" -gt 0 ]; then
    echo "$pass passed, $fail failed, $skip skipped"
else
    echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
