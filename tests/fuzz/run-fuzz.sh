#!/bin/sh
# tests/fuzz/run-fuzz.sh [seconds] — build the libFuzzer target for the HTTP
# parsers (clang, ASan + UBSan) into $B/fuzz/ and run it for the given number
# of seconds (default 20) on a working copy of tests/fuzz/corpus/http_parser/
# ($B/fuzz/corpus-http_parser/, which keeps growing across runs; the seeds in
# the source tree are never written).
#
# Exit 0: no crash. Exit 1: a crash, a sanitizer report, an invariant or
# split mismatch (the input is left as $B/fuzz/crash-*; replay it with
# $B/fuzz/fuzz_http_parser FILE), or the target did not build. Exit 3: no
# clang or no libFuzzer runtime here (callers report a skip).
# Run from the repository root; `make fuzz` runs it with FUZZ_SECONDS.
set -u
secs=${1:-20}
B=${B:-build}
out="$B/fuzz"
CLANG=${CLANG:-clang}

if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "run-fuzz: $CLANG not found (apt-get install clang libclang-rt-14-dev)" >&2
    exit 3
fi
mkdir -p "$out" || exit 1
# Per-run names: `make test` and `make fuzz` may run at the same time.
tag=$$
probe="$out/probe.$tag"
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ return 0; }\n' >"$probe.c"
if ! "$CLANG" -fsanitize=fuzzer,address,undefined -o "$probe" "$probe.c" >/dev/null 2>&1; then
    rm -f "$probe" "$probe.c"
    echo "run-fuzz: $CLANG cannot link a libFuzzer target (apt-get install libclang-rt-14-dev)" >&2
    exit 3
fi
rm -f "$probe" "$probe.c"

bin="$out/fuzz_http_parser.$tag"
if ! "$CLANG" -g -O1 -std=gnu11 -D_GNU_SOURCE -I. -Wall -Wextra -Wno-unused-parameter \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -o "$bin" tests/fuzz/fuzz_http_parser.c http/parser.c; then
    echo "run-fuzz: build of the fuzz target failed" >&2
    exit 1
fi

corpus="$out/corpus-http_parser"
mkdir -p "$corpus" && cp tests/fuzz/corpus/http_parser/* "$corpus/" || exit 1

log="$out/fuzz_http_parser.$tag.log"
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
ASAN_OPTIONS=detect_leaks=1 \
"$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/" "$corpus" >"$log" 2>&1
rc=$?
# the figures: executions, coverage (cov: edges, ft: features), corpus, speed
grep -aE '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log"
[ $rc -ne 0 ] && grep -aE 'ERROR|fuzz_http_parser:|SUMMARY|artifact' "$log" | head -n 20 >&2
mv -f "$bin" "$out/fuzz_http_parser"
mv -f "$log" "$out/fuzz_http_parser.log"
if [ $rc -ne 0 ]; then
    echo "run-fuzz: fuzzer exited with status $rc; log: $out/fuzz_http_parser.log" >&2
    exit 1
fi
echo "run-fuzz: no crash in ${secs}s; log: $out/fuzz_http_parser.log"
