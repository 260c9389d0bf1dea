#!/bin/sh
# tests/run.sh — run every unit test binary and every end-to-end test script,
# count their TAP lines ("ok N - ...", "not ok N - ...", "ok N - ... # SKIP why")
# and end with "N passed, N failed" (", N skipped" when a check's tool is missing).
# A test that exits non-zero without printing any "not ok" counts as one failure.
# Run by `make test`; B is the build directory.
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

run_one() {
    name=$1; shift
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
    run_one "$t" "$t"
done
for t in tests/e2e/test_*.sh; do
    [ -f "$t" ] || continue
    run_one "$t" sh "$t"
done
for t in tests/e2e/test_*.py; do
    [ -f "$t" ] || continue
    run_one "$t" /usr/bin/python3 "$t"
done

if [ "$skip" -gt 0 ]; then
    echo "$pass passed, $fail failed, $skip skipped"
else
    echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
